//! FROST signing over Nostr among the members that agreed (design §6.4).
//!
//! One *session* signs a fixed list of unsigned events that every signer derived itself from
//! agreed data. It runs in numbered *attempts*; attempt `a` is coordinated by the `a`-th signer
//! in roster order (wrapping, skipping excluded ones):
//!
//! 1. every signer publishes fresh nonce commitments for attempt `a` (round 1, kind 8713);
//! 2. the coordinator picks the first `t` signers in roster order whose commitments it has and
//!    publishes the signing request (kind 8715): the events and that subset's commitments;
//! 3. each chosen signer checks that the events are exactly the ones it derived and that its own
//!    commitments are the ones it made, then signs, which consumes its nonces (round 2, 8714);
//! 4. anyone holding the request and all `t` shares aggregates, and publishes the signed events.
//!
//! An attempt that does not finish by its deadline excludes the signers that failed it (the
//! coordinator if no request came, chosen signers whose shares did not), and an invalid share
//! excludes its culprit, named by FROST's cheater detection; the next attempt starts with fresh
//! nonces. Nonces live only in memory, for one attempt, and are consumed by signing, so none is
//! ever used twice. Fewer than `t` responsive signers end the session with an error that says
//! who was excluded and why: no path signs with fewer than `t`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::quorum_msg::{self, MessageKind, QuorumMessage, SessionId};
use quorum_threshold::KeyShare;
use quorum_threshold::sign::{
    self, NonceCommitment, SignatureShare, SigningNonces, SigningRequest,
};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::channel::{Channel, ChannelError};

/// How long each part of a session may take.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// How long one attempt may take before its silent signers are excluded.
    pub attempt_timeout: Duration,
    /// How long the round messages stay on relays (NIP-40).
    pub message_lifetime: Duration,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            attempt_timeout: Duration::from_secs(10),
            message_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Why a session produced no signature.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("I am not one of the signers of this session")]
    NotASigner,
    #[error("nothing to sign")]
    Nothing,
    #[error("only {responsive} signers still responsive, {threshold} needed; excluded: {excluded}")]
    TooFew {
        responsive: usize,
        threshold: usize,
        excluded: String,
    },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("sealing a round message: {0}")]
    Seal(String),
    #[error("FROST: {0}")]
    Frost(String),
}

/// A finished session.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The events, signed by the quorum key, in the order they were given.
    pub events: Vec<Event>,
    /// The `t` signers whose shares made the signature.
    pub signers: Vec<PublicKey>,
    /// Attempts it took (1 when nobody failed).
    pub attempts: u32,
    /// Signers excluded on the way, each with the reason.
    pub excluded: BTreeMap<PublicKey, String>,
}

/// The plaintext of a round message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Round {
    /// Round 1: one nonce commitment per event, for one attempt.
    Commit {
        attempt: u32,
        commitments: Vec<NonceCommitment>,
    },
    /// The coordinator's choice for one attempt.
    Request {
        attempt: u32,
        events: Vec<UnsignedEvent>,
        subset: Vec<PublicKey>,
        commitments: BTreeMap<PublicKey, Vec<NonceCommitment>>,
    },
    /// Round 2: one signature share per event.
    Share {
        attempt: u32,
        shares: Vec<SignatureShare>,
    },
}

impl Round {
    fn attempt(&self) -> u32 {
        match self {
            Round::Commit { attempt, .. }
            | Round::Request { attempt, .. }
            | Round::Share { attempt, .. } => *attempt,
        }
    }

    fn kind(&self) -> MessageKind {
        match self {
            Round::Commit { .. } => MessageKind::SigningRound1,
            Round::Request { .. } => MessageKind::SigningRequest,
            Round::Share { .. } => MessageKind::SigningRound2,
        }
    }
}

/// The subscription a member needs for a signing session: round messages addressed to it.
pub fn filter(me: &PublicKey, since: Timestamp) -> Filter {
    Filter::new()
        .kinds([
            quorum_msg::SIGNING_ROUND1,
            quorum_msg::SIGNING_ROUND2,
            quorum_msg::SIGNING_REQUEST,
        ])
        .pubkey(*me)
        .since(since)
}

/// Runs a signing session to its end.
///
/// `signers` are the members allowed to sign (those that agreed), `events` what to sign; both
/// must be the same at every signer, which is why they are derived from agreed data only.
pub async fn sign_together(
    channel: &Channel,
    share: &KeyShare,
    signers: &[PublicKey],
    session: SessionId,
    events: Vec<UnsignedEvent>,
    config: &SigningConfig,
) -> Result<Signed, SigningError> {
    let me = share.member();
    let signers: Vec<PublicKey> = {
        let set: BTreeSet<PublicKey> = signers.iter().copied().collect();
        let mut v: Vec<PublicKey> = set.into_iter().collect();
        // Roster order: the order every member computes the same way.
        v.sort_by_key(|pk| share.group().roster().index_of(pk).unwrap_or(u16::MAX));
        v
    };
    if !signers.contains(&me) {
        return Err(SigningError::NotASigner);
    }
    if events.is_empty() {
        return Err(SigningError::Nothing);
    }
    let threshold = usize::from(share.group().threshold());
    let others: Vec<PublicKey> = signers.iter().copied().filter(|pk| *pk != me).collect();
    let mut excluded: BTreeMap<PublicKey, String> = BTreeMap::new();
    let mut rng = rand::rngs::OsRng;

    for attempt in 0u32.. {
        let live: Vec<PublicKey> = signers
            .iter()
            .copied()
            .filter(|pk| !excluded.contains_key(pk))
            .collect();
        if live.len() < threshold || !live.contains(&me) {
            return Err(SigningError::TooFew {
                responsive: live.len(),
                threshold,
                excluded: describe(&excluded),
            });
        }
        let deadline = Instant::now() + config.attempt_timeout;
        let coordinator = live[attempt as usize % live.len()];

        // Round 1: fresh nonces for this attempt only.
        let mut nonces: Vec<SigningNonces> = Vec::with_capacity(events.len());
        let mut mine: Vec<NonceCommitment> = Vec::with_capacity(events.len());
        for _ in &events {
            let (secret, public) = sign::commit(share, &mut rng);
            nonces.push(secret);
            mine.push(public);
        }
        send(
            channel,
            share.quorum(),
            &others,
            session,
            &Round::Commit {
                attempt,
                commitments: mine.clone(),
            },
            config,
        )
        .await?;

        // The coordinator chooses the subset. It cannot open its own request (sealed to the
        // others), so it keeps what it sent.
        let mut sent_request = None;
        if coordinator == me {
            let chosen = channel
                .wait_for(deadline, |seen| {
                    let mut have: BTreeMap<PublicKey, Vec<NonceCommitment>> = BTreeMap::new();
                    have.insert(me, mine.clone());
                    for (sender, round) in rounds(seen, channel, session, &signers) {
                        if let Round::Commit {
                            attempt: a,
                            commitments,
                        } = round
                            && a == attempt
                            && live.contains(&sender)
                            && commitments.len() == events.len()
                        {
                            have.entry(sender).or_insert(commitments);
                        }
                    }
                    let subset: Vec<PublicKey> = live
                        .iter()
                        .copied()
                        .filter(|pk| have.contains_key(pk))
                        .take(threshold)
                        .collect();
                    (subset.len() == threshold).then(|| {
                        let commitments: BTreeMap<PublicKey, Vec<NonceCommitment>> =
                            subset.iter().map(|pk| (*pk, have[pk].clone())).collect();
                        (subset, commitments)
                    })
                })
                .await;
            if let Some((subset, commitments)) = chosen {
                send(
                    channel,
                    share.quorum(),
                    &others,
                    session,
                    &Round::Request {
                        attempt,
                        events: events.clone(),
                        subset: subset.clone(),
                        commitments: commitments.clone(),
                    },
                    config,
                )
                .await?;
                sent_request = Some((events.clone(), subset, commitments));
            }
        }

        // Everyone else: the request of this attempt, from its coordinator. A request whose
        // payload for me does not hash to its public digest means the coordinator sent the
        // members different requests (to split their views): it is excluded at once.
        let request = match sent_request {
            Some(request) => Some(Ok(request)),
            None => {
                channel
                    .wait_for(deadline, |seen| {
                        if split_request(seen, channel, session, &coordinator) {
                            return Some(Err(()));
                        }
                        rounds(seen, channel, session, &signers)
                            .into_iter()
                            .find_map(|(sender, round)| match round {
                                Round::Request {
                                    attempt: a,
                                    events: proposed,
                                    subset,
                                    commitments,
                                } if a == attempt && sender == coordinator => {
                                    Some(Ok((proposed, subset, commitments)))
                                }
                                _ => None,
                            })
                    })
                    .await
            }
        };
        if let Some(Err(())) = request {
            excluded.insert(
                coordinator,
                format!(
                    "sent the members different signing requests in attempt {attempt} (its \
                     payload for me does not match the request's public digest)"
                ),
            );
            continue;
        }
        let Some(Ok((proposed, subset, commitments))) = request else {
            excluded.insert(
                coordinator,
                format!("coordinated attempt {attempt} but sent no signing request in time"),
            );
            continue;
        };
        if let Err(why) = check_request(&events, &proposed, &subset, &commitments, &live, threshold)
        {
            excluded.insert(
                coordinator,
                format!("sent an invalid signing request in attempt {attempt}: {why}"),
            );
            continue;
        }
        let requests: Vec<SigningRequest> = events
            .iter()
            .enumerate()
            .map(|(slot, event)| SigningRequest {
                event: event.clone(),
                commitments: commitments
                    .iter()
                    .map(|(pk, list)| (*pk, list[slot]))
                    .collect(),
            })
            .collect();

        // Round 2, if chosen: only for exactly the commitments I made in this attempt.
        let mut my_shares: Option<Vec<SignatureShare>> = None;
        if subset.contains(&me) {
            if commitments.get(&me) != Some(&mine) {
                excluded.insert(
                    coordinator,
                    format!("put commitments in my name that I did not make (attempt {attempt})"),
                );
                continue;
            }
            let mut shares = Vec::with_capacity(requests.len());
            for (request, nonce) in requests.iter().zip(nonces) {
                shares.push(
                    sign::sign(share, nonce, request)
                        .map_err(|e| SigningError::Frost(e.to_string()))?,
                );
            }
            send(
                channel,
                share.quorum(),
                &others,
                session,
                &Round::Share {
                    attempt,
                    shares: shares.clone(),
                },
                config,
            )
            .await?;
            my_shares = Some(shares);
        } else {
            // Not chosen: these nonces are never used; dropping them zeroizes them.
            drop(nonces);
        }

        // Everyone: all t shares of this attempt.
        let collected = channel
            .wait_for(deadline, |seen| {
                let mut have: BTreeMap<PublicKey, Vec<SignatureShare>> = BTreeMap::new();
                if let Some(shares) = &my_shares {
                    have.insert(me, shares.clone());
                }
                for (sender, round) in rounds(seen, channel, session, &signers) {
                    if let Round::Share { attempt: a, shares } = round
                        && a == attempt
                        && subset.contains(&sender)
                        && shares.len() == events.len()
                    {
                        have.entry(sender).or_insert(shares);
                    }
                }
                (have.len() == subset.len()).then_some(have)
            })
            .await;
        let Some(collected) = collected else {
            let answered: BTreeSet<PublicKey> = rounds(
                &channel.events(),
                channel,
                session,
                &signers,
            )
            .into_iter()
            .filter(|(_, round)| matches!(round, Round::Share { attempt: a, .. } if *a == attempt))
            .map(|(sender, _)| sender)
            .chain(my_shares.as_ref().map(|_| me))
            .collect();
            for pk in subset.iter().filter(|pk| !answered.contains(pk)) {
                excluded.insert(
                    *pk,
                    format!("was chosen in attempt {attempt} but sent no signature share in time"),
                );
            }
            continue;
        };

        let mut signed = Vec::with_capacity(requests.len());
        let mut culprits = BTreeSet::new();
        for (slot, request) in requests.iter().enumerate() {
            let shares: BTreeMap<PublicKey, SignatureShare> = collected
                .iter()
                .map(|(pk, list)| (*pk, list[slot]))
                .collect();
            match sign::aggregate(share.group(), request, &shares) {
                Ok(event) => signed.push(event),
                Err(sign::SignError::InvalidShare { culprits: named }) => culprits.extend(named),
                Err(e) => return Err(SigningError::Frost(e.to_string())),
            }
        }
        if !culprits.is_empty() {
            for pk in culprits {
                excluded.insert(
                    pk,
                    format!("sent an invalid signature share in attempt {attempt}"),
                );
            }
            continue;
        }
        for event in &signed {
            channel.publish_signed(event).await?;
        }
        return Ok(Signed {
            events: signed,
            signers: subset.to_vec(),
            attempts: attempt + 1,
            excluded,
        });
    }
    unreachable!("the attempt loop returns")
}

/// Every round message of this session from a signer, decrypted, in arrival order; the first
/// message of each kind per sender and attempt wins, so a replay changes nothing.
/// Whether `coordinator` published a signing request in `session` whose payload for this
/// member does not hash to its public digest: proof that it sealed different requests for
/// different members.
fn split_request(
    seen: &[Event],
    channel: &Channel,
    session: SessionId,
    coordinator: &PublicKey,
) -> bool {
    seen.iter()
        .filter(|e| e.kind == quorum_msg::SIGNING_REQUEST && e.pubkey == *coordinator)
        .filter(|e| QuorumMessage::from_event(e).is_ok_and(|m| m.session == session))
        .any(|e| {
            matches!(
                QuorumMessage::open(e, channel.keys()),
                Err(quorum_msg::QuorumMsgError::DigestMismatch(_))
            )
        })
}

fn rounds(
    seen: &[Event],
    channel: &Channel,
    session: SessionId,
    signers: &[PublicKey],
) -> Vec<(PublicKey, Round)> {
    let mut out = Vec::new();
    let mut taken = BTreeSet::new();
    for event in seen {
        let signing = [
            quorum_msg::SIGNING_ROUND1,
            quorum_msg::SIGNING_ROUND2,
            quorum_msg::SIGNING_REQUEST,
        ];
        if !signing.contains(&event.kind) || !signers.contains(&event.pubkey) {
            continue;
        }
        let Ok(opened) = QuorumMessage::open(event, channel.keys()) else {
            continue;
        };
        if opened.session != session {
            continue;
        }
        let Ok(round) = serde_json::from_str::<Round>(&opened.plaintext) else {
            tracing::warn!(sender = %event.pubkey, "unreadable round message {}", event.id);
            continue;
        };
        if round.kind() != opened.kind {
            continue;
        }
        if taken.insert((event.pubkey, round.kind(), round.attempt())) {
            out.push((event.pubkey, round));
        }
    }
    out
}

fn check_request(
    mine: &[UnsignedEvent],
    proposed: &[UnsignedEvent],
    subset: &[PublicKey],
    commitments: &BTreeMap<PublicKey, Vec<NonceCommitment>>,
    live: &[PublicKey],
    threshold: usize,
) -> Result<(), String> {
    if proposed.len() != mine.len() {
        return Err(format!(
            "{} events proposed, I derived {}",
            proposed.len(),
            mine.len()
        ));
    }
    for (slot, (a, b)) in mine.iter().zip(proposed).enumerate() {
        let (mut a, mut b) = (a.clone(), b.clone());
        if a.id() != b.id() {
            return Err(format!(
                "event {slot} differs from the one I derived from the agreed data"
            ));
        }
    }
    if subset.len() != threshold {
        return Err(format!(
            "{} signers chosen, {threshold} needed",
            subset.len()
        ));
    }
    let distinct: BTreeSet<&PublicKey> = subset.iter().collect();
    if distinct.len() != subset.len() || subset.iter().any(|pk| !live.contains(pk)) {
        return Err("the subset repeats a signer or names an excluded one".into());
    }
    if commitments.len() != subset.len()
        || subset
            .iter()
            .any(|pk| commitments.get(pk).is_none_or(|c| c.len() != mine.len()))
    {
        return Err("commitments do not match the subset".into());
    }
    Ok(())
}

async fn send(
    channel: &Channel,
    quorum: PublicKey,
    recipients: &[PublicKey],
    session: SessionId,
    round: &Round,
    config: &SigningConfig,
) -> Result<(), SigningError> {
    let plaintext = serde_json::to_string(round).map_err(|e| SigningError::Seal(e.to_string()))?;
    let expiration = Timestamp::now() + config.message_lifetime.as_secs();
    let event = QuorumMessage::seal_broadcast(
        channel.keys(),
        round.kind(),
        session,
        Some(quorum),
        recipients,
        &plaintext,
        expiration,
    )
    .map_err(|e| SigningError::Seal(e.to_string()))?;
    channel.publish_signed(&event).await?;
    Ok(())
}

fn describe(excluded: &BTreeMap<PublicKey, String>) -> String {
    if excluded.is_empty() {
        return "nobody".into();
    }
    excluded
        .iter()
        .map(|(pk, why)| format!("{} {why}", &pk.to_hex()[..12]))
        .collect::<Vec<_>>()
        .join("; ")
}
