//! Making a quorum key over Nostr (design §6.2, `docs/protocol.md` §15.1 and §15.6).
//!
//! Two ways, chosen by the mandate's `keygen` tag (a third value, `refresh`, renews the shares of
//! an existing key):
//!
//! - **DKG** (the default: nobody ever holds the key). A maintainer publishes a mandate
//!   *proposal*, an 8704 without `quorum` ([`propose_dkg`]). Every member runs [`run_dkg`] with
//!   the proposal's id as session: round 1 (8710, its public package sealed to each other
//!   member), round 2 (8711, a secret package per recipient), and done (8712, the group key it
//!   derived, in clear in the `quorum` tag and, with a digest of the whole public group, in the
//!   sealed payload). A member keeps its share only when all `N` members announced the same key
//!   and group as it derived. The maintainer watches the 8712 announcements
//!   ([`await_group_key`]) and, once all `N` agree, signs the mandate again with `quorum` set.
//! - **Dealer**. The dealer (the maintainer, or the key the mandate names) holds the whole key
//!   once: it deals the shares, publishes the mandate naming the key and sends each member its
//!   share (8709, one recipient each) with [`deal_over_relays`] ([`deal_and_publish`] does all of
//!   it). A member accepts a delivery only from the mandate's dealer ([`receive_dealt_share`]).
//! - **Refresh** of an existing key (same key, new shares). A maintainer publishes a mandate
//!   naming the key with `keygen refresh` ([`propose_refresh`]); the current holders run the
//!   threshold crate's refresh over the same three rounds, session = that mandate's id
//!   ([`run_refresh`]), and replace their share files only once all `N` announced the same key
//!   and group. Old and new shares do not combine.
//!
//! [`serve`] is the member side as a long-running task of a DVM daemon: it answers the mandates
//! that name its key and stores each share in `SHARE_DIR/<quorum hex>.json` (mode 0600), with
//! the repository it made the key for in `SHARE_DIR/<quorum hex>.repo`; [`load_shares`] reads
//! the shares back ([`crate::job::load_share`] reads one). It starts a session only for a
//! mandate signed by a maintainer of the repository the mandate names (looked up on the relays:
//! the owner's NIP-34 announcement), refreshes a key only for the repository it made it for, and
//! limits sessions per repository; everything else is refused with a logged reason.
//!
//! Every round has a deadline ([`KeygenConfig`]), counted from when this member enters it. Of
//! each sender, the earliest message of a round (by `created_at`, then id) counts; a second,
//! different one is an equivocation and ends the session naming the sender. Errors name the
//! member that was silent, invalid or disagreeing; no error, log line or `Debug` output holds
//! secret material (round-2 packages and shares are wiped from memory once used).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::mandate::{self, Keygen, Mandate, MandateError};
use quorum_proto::nip34::{RepoCoordinate, maintainer_set};
use quorum_proto::quorum_msg::{self, MessageKind, Opened, QuorumMessage, SessionId};
use quorum_threshold::dkg::{self, DkgError, Round1Broadcast, Round2Message};
use quorum_threshold::refresh;
use quorum_threshold::store::{self, StoreError};
use quorum_threshold::{KeyShare, Roster, ShareError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::channel::{Channel, ChannelError};
use crate::job::share_path;

/// Deadlines of key generation.
#[derive(Debug, Clone)]
pub struct KeygenConfig {
    /// How long each DKG round (8710, 8711, 8712) may take, counted from when this member
    /// enters it.
    pub round_timeout: Duration,
    /// How long a member waits for its dealer's share delivery (8709).
    pub delivery_timeout: Duration,
    /// How long the messages stay on relays (NIP-40 `expiration`).
    pub message_lifetime: Duration,
}

impl Default for KeygenConfig {
    fn default() -> Self {
        KeygenConfig {
            round_timeout: Duration::from_secs(120),
            delivery_timeout: Duration::from_secs(600),
            message_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Why a key was not made, or a share not accepted. Names the member at fault where there is
/// one; never holds secret material.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("event {0}: invalid id or signature")]
    InvalidEvent(EventId),
    #[error("mandate {id}: {source}")]
    Mandate {
        id: EventId,
        #[source]
        source: MandateError,
    },
    #[error("the mandate is invalid: {0}")]
    Unsigned(#[source] MandateError),
    #[error("mandate {id}: {reason}")]
    NotApplicable { id: EventId, reason: String },
    #[error("no members to wait for")]
    NoMembers,
    #[error("{me} is not a member of mandate {id}")]
    NotAMember { id: EventId, me: PublicKey },
    #[error("{kind} ({}): no message in time from {}", kind_number(*.kind), list(.members))]
    Silent {
        kind: MessageKind,
        members: Vec<PublicKey>,
    },
    #[error("{kind} ({}): invalid message from {member}: {reason}", kind_number(*.kind))]
    Invalid {
        kind: MessageKind,
        member: PublicKey,
        reason: String,
    },
    #[error("{kind} ({}): {member} sent two different messages in one session", kind_number(*.kind))]
    Equivocated {
        kind: MessageKind,
        member: PublicKey,
    },
    #[error("{member} announced quorum key {theirs}, this member derived {mine}")]
    Disagreement {
        member: PublicKey,
        theirs: PublicKey,
        mine: PublicKey,
    },
    #[error(
        "{member} announced quorum key {quorum} with other verifying shares than this member \
         derived (a member sent different round-1 packages to different members)"
    )]
    GroupMismatch {
        member: PublicKey,
        quorum: PublicKey,
    },
    #[error("the members announced different quorum keys: {}", pairs(.announced))]
    Split {
        announced: BTreeMap<PublicKey, PublicKey>,
    },
    #[error(transparent)]
    Dkg(#[from] DkgError),
    #[error("share delivery {id} from {sender}, who is not the dealer {dealer}: refused")]
    NotFromDealer {
        id: EventId,
        sender: PublicKey,
        dealer: PublicKey,
    },
    #[error("no share delivery from dealer {dealer} for mandate {mandate} in time")]
    NoDelivery { dealer: PublicKey, mandate: EventId },
    #[error("the share delivered by {dealer} is invalid: {source}")]
    InvalidShare {
        dealer: PublicKey,
        #[source]
        source: Box<ShareError>,
    },
    #[error("the share delivered by {dealer} is for member {got}, not for {expected}")]
    WrongMember {
        dealer: PublicKey,
        got: PublicKey,
        expected: PublicKey,
    },
    #[error("the share is for quorum {got}, the mandate names {expected}")]
    WrongQuorum { got: PublicKey, expected: PublicKey },
    #[error("the share's members or threshold differ from the mandate's")]
    WrongRoster,
    #[error(
        "this member holds no share of quorum {quorum} in {}: it cannot take part in \
         refreshing that key (only current holders can)",
        dir.display()
    )]
    NoShare { quorum: PublicKey, dir: PathBuf },
    #[error("the current share is {member}'s, not this member's ({me})")]
    NotMyShare { member: PublicKey, me: PublicKey },
    #[error("the shares do not cover the mandate's members: {0}")]
    Shares(String),
    #[error("dealing: {0}")]
    Deal(String),
    #[error("signing the mandate: {0}")]
    Sign(String),
    #[error("sealing a {kind} message: {reason}")]
    Seal { kind: MessageKind, reason: String },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: {reason}", path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn kind_number(kind: MessageKind) -> u16 {
    kind.kind().as_u16()
}

fn list(members: &[PublicKey]) -> String {
    members
        .iter()
        .map(PublicKey::to_hex)
        .collect::<Vec<_>>()
        .join(", ")
}

fn pairs(announced: &BTreeMap<PublicKey, PublicKey>) -> String {
    announced
        .iter()
        .map(|(member, key)| format!("{member} → {key}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plaintext of a DKG done message (8712): the group key and the SHA-256 (hex) of the
/// whole public group (roster and frost public key package, as the threshold crate's JSON), so
/// that members also agree on every verifying share, not only on the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Done {
    quorum: PublicKey,
    group: String,
}

impl Done {
    fn of(share: &KeyShare) -> Result<Done, KeygenError> {
        let json = serde_json::to_vec(share.group()).map_err(|e| KeygenError::Seal {
            kind: MessageKind::DkgDone,
            reason: e.to_string(),
        })?;
        Ok(Done {
            quorum: share.quorum(),
            group: hex::encode(Sha256::digest(&json)),
        })
    }
}

/// Checks an 8704's id and signature and parses it.
fn read_mandate(event: &Event) -> Result<Mandate, KeygenError> {
    event
        .verify()
        .map_err(|_| KeygenError::InvalidEvent(event.id))?;
    Mandate::from_event(event).map_err(|source| KeygenError::Mandate {
        id: event.id,
        source,
    })
}

/// The FROST roster a mandate describes (its indices are kept, not recomputed).
fn roster_of(id: EventId, mandate: &Mandate) -> Result<Roster, KeygenError> {
    roster(mandate).map_err(|e| KeygenError::NotApplicable {
        id,
        reason: e.to_string(),
    })
}

fn roster(mandate: &Mandate) -> Result<Roster, quorum_threshold::RosterError> {
    let members = mandate
        .members
        .iter()
        .map(|m| quorum_threshold::Member {
            index: m.index,
            pubkey: m.pubkey,
        })
        .collect();
    Roster::from_members(mandate.threshold, members)
}

/// The members of a new quorum with their FROST indices by the creation rule (ascending x-only
/// key), ready for [`Mandate::members`]. Duplicates are dropped.
pub fn new_members(pubkeys: &[PublicKey]) -> Vec<mandate::Member> {
    let unique: BTreeSet<PublicKey> = pubkeys.iter().copied().collect();
    let unique: Vec<PublicKey> = unique.into_iter().collect();
    unique
        .iter()
        .filter_map(|pk| {
            quorum_threshold::member_index(&unique, pk).map(|i| mandate::Member::new(*pk, i))
        })
        .collect()
}

/// The key whose deliveries members of a dealer mandate accept.
fn dealer_of(event: &Event, mandate: &Mandate) -> Option<PublicKey> {
    match mandate.keygen {
        Keygen::Dealer { dealer } => Some(dealer.unwrap_or(event.pubkey)),
        Keygen::Dkg | Keygen::Refresh => None,
    }
}

fn expiration(config: &KeygenConfig) -> Timestamp {
    Timestamp::now() + config.message_lifetime.as_secs().max(1)
}

fn seal_error(kind: MessageKind) -> impl FnOnce(quorum_msg::QuorumMsgError) -> KeygenError {
    move |e| KeygenError::Seal {
        kind,
        reason: e.to_string(),
    }
}

/// The first readable message of `kind` in `session` from each of `from`, ordered by
/// `created_at` then id; a sender with two readable messages of different plaintext is an
/// equivocation. Messages that cannot be opened are kept as the reason, in case nothing better
/// comes from that sender.
struct Collected {
    opened: BTreeMap<PublicKey, Opened>,
    unreadable: BTreeMap<PublicKey, String>,
}

fn collect(
    events: &[Event],
    keys: &Keys,
    kind: MessageKind,
    session: SessionId,
    from: &BTreeSet<PublicKey>,
) -> Result<Collected, KeygenError> {
    let mut candidates: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == kind.kind() && from.contains(&e.pubkey))
        .collect();
    candidates.sort_by_key(|e| (e.created_at, e.id));
    let mut collected = Collected {
        opened: BTreeMap::new(),
        unreadable: BTreeMap::new(),
    };
    for event in candidates {
        let Ok(envelope) = QuorumMessage::from_event(event) else {
            collected
                .unreadable
                .entry(event.pubkey)
                .or_insert_with(|| format!("malformed envelope {}", event.id));
            continue;
        };
        if envelope.session != session {
            continue;
        }
        match QuorumMessage::open(event, keys) {
            Ok(opened) => match collected.opened.get(&event.pubkey) {
                Some(first) if first.plaintext != opened.plaintext => {
                    return Err(KeygenError::Equivocated {
                        kind,
                        member: event.pubkey,
                    });
                }
                Some(_) => {}
                None => {
                    collected.opened.insert(event.pubkey, opened);
                }
            },
            Err(e) => {
                collected
                    .unreadable
                    .entry(event.pubkey)
                    .or_insert_with(|| format!("message {}: {e}", event.id));
            }
        }
    }
    Ok(collected)
}

/// Waits until every member of `from` sent a readable message of `kind` in `session`, or the
/// round's deadline passes (then the error names who was silent, or why its message was
/// refused).
async fn round(
    channel: &Channel,
    kind: MessageKind,
    session: SessionId,
    from: &BTreeSet<PublicKey>,
    timeout: Duration,
) -> Result<BTreeMap<PublicKey, Opened>, KeygenError> {
    let deadline = Instant::now() + timeout;
    let keys = channel.keys().clone();
    let done = channel
        .wait_for(deadline, |events| {
            match collect(events, &keys, kind, session, from) {
                Err(e) => Some(Err(e)),
                Ok(c) if c.opened.len() == from.len() => Some(Ok(c.opened)),
                Ok(_) => None,
            }
        })
        .await;
    if let Some(done) = done {
        return done;
    }
    let c = collect(&channel.events(), &keys, kind, session, from)?;
    let missing: Vec<PublicKey> = from
        .iter()
        .filter(|pk| !c.opened.contains_key(pk))
        .copied()
        .collect();
    if let [member] = missing[..]
        && let Some(reason) = c.unreadable.get(&member)
    {
        return Err(KeygenError::Invalid {
            kind,
            member,
            reason: reason.clone(),
        });
    }
    Err(KeygenError::Silent {
        kind,
        members: missing,
    })
}

/// The member side of a DKG that a mandate `proposal` asks for (an 8704 with `keygen dkg` and
/// no `quorum`): rounds 8710 → 8711 → 8712 with the other members, session = the proposal's id.
/// Returns this member's share only when every other member announced (8712) the same quorum
/// key and public group that this member derived.
pub async fn run_dkg(
    relays: &[RelayUrl],
    keys: &Keys,
    proposal: &Event,
    config: &KeygenConfig,
) -> Result<KeyShare, KeygenError> {
    run_dkg_with(relays, keys, proposal, config, |_| Ok(())).await
}

/// [`run_dkg`], calling `derived` with the share once it is derived and *before* this member
/// announces it (8712), e.g. to store it, so that whoever saw all `N` announcements knows every
/// member holds its share. An error from `derived` ends the session before the announcement.
/// The share is still returned only if all members agree: a caller that stored it must discard
/// it when this fails.
pub async fn run_dkg_with(
    relays: &[RelayUrl],
    keys: &Keys,
    proposal: &Event,
    config: &KeygenConfig,
    derived: impl FnOnce(&KeyShare) -> Result<(), KeygenError>,
) -> Result<KeyShare, KeygenError> {
    let mandate = read_mandate(proposal)?;
    if mandate.quorum.is_some() || mandate.keygen != Keygen::Dkg {
        return Err(KeygenError::NotApplicable {
            id: proposal.id,
            reason: "not a DKG proposal (it names a quorum key or asks for a dealer)".into(),
        });
    }
    let me = keys.public_key();
    if mandate.member_index(&me).is_none() {
        return Err(KeygenError::NotAMember {
            id: proposal.id,
            me,
        });
    }
    let roster = roster_of(proposal.id, &mandate)?;
    let session = SessionId::from_event_id(&proposal.id);
    let others: BTreeSet<PublicKey> = roster.pubkeys().filter(|pk| *pk != me).collect();
    let channel = rounds_channel(relays, keys, proposal, &others).await?;
    let result = dkg_rounds(&channel, &roster, me, session, &others, config, derived).await;
    channel.close().await;
    result
}

/// A channel that receives the other members' 8710/8711/8712 addressed to this member, from
/// shortly before `mandate` on.
async fn rounds_channel(
    relays: &[RelayUrl],
    keys: &Keys,
    mandate: &Event,
    others: &BTreeSet<PublicKey>,
) -> Result<Channel, KeygenError> {
    let filter = Filter::new()
        .kinds([
            quorum_msg::DKG_ROUND1,
            quorum_msg::DKG_ROUND2,
            quorum_msg::DKG_DONE,
        ])
        .pubkey(keys.public_key())
        .authors(others.iter().copied())
        .since(mandate.created_at - 600u64);
    Ok(Channel::open(relays, keys.clone(), vec![filter]).await?)
}

async fn dkg_rounds(
    channel: &Channel,
    roster: &Roster,
    me: PublicKey,
    session: SessionId,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
    derived: impl FnOnce(&KeyShare) -> Result<(), KeygenError>,
) -> Result<KeyShare, KeygenError> {
    let (secret1, broadcast) = dkg::start(roster, me, &mut rand::rngs::OsRng)?;
    let broadcasts = round1_exchange(channel, session, None, &broadcast, others, config).await?;
    let (secret2, outgoing) = secret1.receive(&broadcasts)?;
    let incoming = round2_exchange(channel, session, None, outgoing, others, config).await?;
    let share = secret2.finish(&broadcasts, incoming)?;
    derived(&share)?;
    confirm(channel, session, others, config, share).await
}

/// The member side of a refresh that a mandate asks for (an 8704 with `keygen refresh` naming
/// the quorum key of `current`, with the same members, indices and threshold): rounds 8710 →
/// 8711 → 8712 with the other members, session = the mandate's id, the messages naming the key.
/// Returns this member's new share of the same key only when every other member announced
/// (8712) the same key and public group. `derived` is called with the new share before the
/// announcement (e.g. to store it aside); a caller that stored it must discard it when this
/// fails. Refuses, before sending anything, a mandate that is not a refresh of `current`.
pub async fn run_refresh_with(
    relays: &[RelayUrl],
    keys: &Keys,
    mandate: &Event,
    current: &KeyShare,
    config: &KeygenConfig,
    derived: impl FnOnce(&KeyShare) -> Result<(), KeygenError>,
) -> Result<KeyShare, KeygenError> {
    let (parsed, quorum) = refresh_mandate(mandate)?;
    let me = keys.public_key();
    if parsed.member_index(&me).is_none() {
        return Err(KeygenError::NotAMember { id: mandate.id, me });
    }
    if current.member() != me {
        return Err(KeygenError::NotMyShare {
            member: current.member(),
            me,
        });
    }
    if current.quorum() != quorum {
        return Err(KeygenError::WrongQuorum {
            got: current.quorum(),
            expected: quorum,
        });
    }
    let roster = roster_of(mandate.id, &parsed)?;
    if *current.group().roster() != roster {
        return Err(KeygenError::WrongRoster);
    }
    let session = SessionId::from_event_id(&mandate.id);
    let others: BTreeSet<PublicKey> = roster.pubkeys().filter(|pk| *pk != me).collect();
    let channel = rounds_channel(relays, keys, mandate, &others).await?;
    let result = refresh_rounds(&channel, current, session, &others, config, derived).await;
    channel.close().await;
    result
}

/// A signed refresh mandate and the quorum key it names.
fn refresh_mandate(event: &Event) -> Result<(Mandate, PublicKey), KeygenError> {
    let parsed = read_mandate(event)?;
    match (parsed.keygen, parsed.quorum) {
        (Keygen::Refresh, Some(quorum)) => Ok((parsed, quorum)),
        _ => Err(KeygenError::NotApplicable {
            id: event.id,
            reason: "not a refresh mandate (`keygen refresh` naming the quorum key)".into(),
        }),
    }
}

async fn refresh_rounds(
    channel: &Channel,
    current: &KeyShare,
    session: SessionId,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
    derived: impl FnOnce(&KeyShare) -> Result<(), KeygenError>,
) -> Result<KeyShare, KeygenError> {
    let quorum = Some(current.quorum());
    let (secret1, broadcast) = refresh::start(current, &mut rand::rngs::OsRng)?;
    let broadcasts = round1_exchange(channel, session, quorum, &broadcast, others, config).await?;
    let (secret2, outgoing) = secret1.receive(&broadcasts)?;
    let incoming = round2_exchange(channel, session, quorum, outgoing, others, config).await?;
    let share = secret2.finish(&broadcasts, incoming)?;
    if share.quorum() != current.quorum() {
        return Err(KeygenError::WrongQuorum {
            got: share.quorum(),
            expected: current.quorum(),
        });
    }
    derived(&share)?;
    confirm(channel, session, others, config, share).await
}

/// [`run_refresh_with`] on the share stored in `share_dir/<quorum hex>.json`: the new share is
/// first saved aside in `share_dir/refresh/<mandate id>.json` (mode 0600) before this member
/// announces it, and moved over the old share file (an atomic rename) only once all `N` members
/// announced the same key and group; if the session fails, it is removed and the old share
/// stays. A member without a share of the mandate's key refuses ([`KeygenError::NoShare`]).
pub async fn run_refresh(
    relays: &[RelayUrl],
    keys: &Keys,
    mandate: &Event,
    share_dir: &Path,
    config: &KeygenConfig,
) -> Result<KeyShare, KeygenError> {
    let (_, quorum) = refresh_mandate(mandate)?;
    let path = share_path(share_dir, &quorum);
    if !path.exists() {
        return Err(KeygenError::NoShare {
            quorum,
            dir: share_dir.to_path_buf(),
        });
    }
    let current = store::load(&path)?;
    let pending = pending_path(share_dir, &mandate.id);
    let result = run_refresh_with(relays, keys, mandate, &current, config, |share| {
        store::save(&pending, share)?;
        Ok(())
    })
    .await;
    drop(current);
    let result = result.and_then(|share| replace_file(&pending, &path).map(|()| share));
    if result.is_err() {
        let _ = std::fs::remove_file(&pending);
    }
    result
}

/// Where a refreshed share waits until all members confirmed it.
fn pending_path(share_dir: &Path, session: &EventId) -> PathBuf {
    share_dir
        .join("refresh")
        .join(format!("{}.json", session.to_hex()))
}

/// Renames `from` over `to` and syncs the target's directory: a crash leaves one whole file.
fn replace_file(from: &Path, to: &Path) -> Result<(), KeygenError> {
    std::fs::rename(from, to).map_err(|source| KeygenError::Io {
        op: "renaming the refreshed share onto",
        path: to.to_path_buf(),
        source,
    })?;
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeygenError::Io {
            op: "syncing",
            path: dir.to_path_buf(),
            source,
        })
}

/// Round 1 (8710) of a DKG or a refresh: sends this member's public package, the same for
/// everyone and sealed to each, and returns every other member's.
async fn round1_exchange(
    channel: &Channel,
    session: SessionId,
    quorum: Option<PublicKey>,
    broadcast: &Round1Broadcast,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
) -> Result<BTreeMap<PublicKey, Round1Broadcast>, KeygenError> {
    let plaintext = serde_json::to_string(broadcast).map_err(|e| KeygenError::Seal {
        kind: MessageKind::DkgRound1,
        reason: e.to_string(),
    })?;
    let payloads = others.iter().map(|pk| (*pk, plaintext.clone())).collect();
    let opened = exchange(
        channel,
        MessageKind::DkgRound1,
        session,
        quorum,
        payloads,
        others,
        config,
    )
    .await?;
    let mut broadcasts: BTreeMap<PublicKey, Round1Broadcast> = BTreeMap::new();
    for (sender, message) in opened {
        let package =
            serde_json::from_str(&message.plaintext).map_err(|e| KeygenError::Invalid {
                kind: MessageKind::DkgRound1,
                member: sender,
                reason: format!("not a round-1 package: {e}"),
            })?;
        broadcasts.insert(sender, package);
    }
    Ok(broadcasts)
}

/// Round 2 (8711) of a DKG or a refresh: sends each other member its secret package, sealed to
/// it alone (the plaintexts are wiped once sealed), and returns the packages sent to this
/// member.
async fn round2_exchange(
    channel: &Channel,
    session: SessionId,
    quorum: Option<PublicKey>,
    outgoing: BTreeMap<PublicKey, Round2Message>,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
) -> Result<BTreeMap<PublicKey, Round2Message>, KeygenError> {
    let mut payloads: BTreeMap<PublicKey, String> = BTreeMap::new();
    for (recipient, message) in &outgoing {
        let json = message.to_json()?;
        payloads.insert(*recipient, String::clone(&json));
    }
    drop(outgoing);
    let opened = exchange(
        channel,
        MessageKind::DkgRound2,
        session,
        quorum,
        payloads,
        others,
        config,
    )
    .await?;
    let mut incoming: BTreeMap<PublicKey, Round2Message> = BTreeMap::new();
    for (sender, mut message) in opened {
        let parsed = Round2Message::from_json(&message.plaintext);
        message.plaintext.zeroize();
        let parsed = parsed.map_err(|_| KeygenError::Invalid {
            kind: MessageKind::DkgRound2,
            member: sender,
            reason: "not a round-2 package".into(),
        })?;
        incoming.insert(sender, parsed);
    }
    Ok(incoming)
}

/// Done (8712) of a DKG or a refresh: announces the key (in clear) and the group digest, and
/// returns `share` only once every other member announced the same.
async fn confirm(
    channel: &Channel,
    session: SessionId,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
    share: KeyShare,
) -> Result<KeyShare, KeygenError> {
    let recipients: Vec<PublicKey> = others.iter().copied().collect();
    let keys = channel.keys().clone();
    // Done: announce the key (in clear) and the group digest; keep the share only if all agree.
    let mine = Done::of(&share)?;
    let plaintext = serde_json::to_string(&mine).map_err(|e| KeygenError::Seal {
        kind: MessageKind::DkgDone,
        reason: e.to_string(),
    })?;
    let event = QuorumMessage::seal_broadcast(
        &keys,
        MessageKind::DkgDone,
        session,
        Some(share.quorum()),
        &recipients,
        &plaintext,
        expiration(config),
    )
    .map_err(seal_error(MessageKind::DkgDone))?;
    channel.publish_signed(&event).await?;
    tracing::debug!(%session, quorum = %share.quorum(), "DKG done announced");
    let deadline = Instant::now() + config.round_timeout;
    let verdict = channel
        .wait_for(deadline, |events| {
            match check_done(events, &keys, session, others, &mine) {
                Ok(agreed) if agreed == others.len() => Some(Ok(())),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .await;
    match verdict {
        Some(Ok(())) => Ok(share),
        Some(Err(e)) => Err(e),
        None => {
            // One last look: name who did not announce (or why its announcement was refused).
            round(
                channel,
                MessageKind::DkgDone,
                session,
                others,
                Duration::ZERO,
            )
            .await?;
            check_done(&channel.events(), &keys, session, others, &mine)?;
            Ok(share)
        }
    }
}

/// Sends a DKG round (one plaintext per other member, each sealed to it alone), wipes the
/// plaintexts, and waits for every other member's message of the same round.
async fn exchange(
    channel: &Channel,
    kind: MessageKind,
    session: SessionId,
    quorum: Option<PublicKey>,
    mut payloads: BTreeMap<PublicKey, String>,
    others: &BTreeSet<PublicKey>,
    config: &KeygenConfig,
) -> Result<BTreeMap<PublicKey, Opened>, KeygenError> {
    let sealed = QuorumMessage::seal(
        channel.keys(),
        kind,
        session,
        quorum,
        &payloads,
        expiration(config),
    );
    payloads.values_mut().for_each(Zeroize::zeroize);
    channel
        .publish_signed(&sealed.map_err(seal_error(kind))?)
        .await?;
    tracing::debug!(%session, "{kind} sent");
    round(channel, kind, session, others, config.round_timeout).await
}

/// How many other members announced exactly `mine`; an error names the first that announced
/// something else.
fn check_done(
    events: &[Event],
    keys: &Keys,
    session: SessionId,
    others: &BTreeSet<PublicKey>,
    mine: &Done,
) -> Result<usize, KeygenError> {
    let c = collect(events, keys, MessageKind::DkgDone, session, others)?;
    for (sender, message) in &c.opened {
        let theirs: Done =
            serde_json::from_str(&message.plaintext).map_err(|e| KeygenError::Invalid {
                kind: MessageKind::DkgDone,
                member: *sender,
                reason: format!("not a DKG result: {e}"),
            })?;
        if message.quorum != Some(theirs.quorum) {
            return Err(KeygenError::Invalid {
                kind: MessageKind::DkgDone,
                member: *sender,
                reason: "the `quorum` tag differs from the sealed key".into(),
            });
        }
        if theirs.quorum != mine.quorum {
            return Err(KeygenError::Disagreement {
                member: *sender,
                theirs: theirs.quorum,
                mine: mine.quorum,
            });
        }
        if theirs.group != mine.group {
            return Err(KeygenError::GroupMismatch {
                member: *sender,
                quorum: mine.quorum,
            });
        }
    }
    Ok(c.opened.len())
}

/// How long the organiser waits for every member to show it took part at all (any 8710/8711/
/// 8712 of the session) before it gives up on the silent ones: a member that is online and
/// serves key generation answers within seconds; waiting the whole timeout for one that is
/// offline helps nobody.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(30);

/// The organiser's side of a DKG: watches the members' 8712 announcements for `proposal_id`
/// (their `quorum` tag is in clear) and returns the key once all of `members` announced the
/// same one. Errors name the members that were silent, or the keys each announced; members
/// that sent nothing at all for the session within [`ANSWER_WINDOW`] fail it at once.
pub async fn await_group_key(
    relays: &[RelayUrl],
    proposal_id: EventId,
    members: &[PublicKey],
    timeout: Duration,
) -> Result<PublicKey, KeygenError> {
    await_group_key_within(relays, proposal_id, members, timeout, ANSWER_WINDOW).await
}

/// [`await_group_key`] with the window in which every member must have answered.
pub async fn await_group_key_within(
    relays: &[RelayUrl],
    proposal_id: EventId,
    members: &[PublicKey],
    timeout: Duration,
    answer_window: Duration,
) -> Result<PublicKey, KeygenError> {
    let members: BTreeSet<PublicKey> = members.iter().copied().collect();
    if members.is_empty() {
        return Err(KeygenError::NoMembers);
    }
    let filter = Filter::new()
        .kinds([
            quorum_msg::DKG_ROUND1,
            quorum_msg::DKG_ROUND2,
            quorum_msg::DKG_DONE,
        ])
        .authors(members.iter().copied());
    let channel = Channel::open(relays, Keys::generate(), vec![filter]).await?;
    let session = SessionId::from_event_id(&proposal_id);
    let started = Instant::now();
    let deadline = started + timeout;
    let outcome = channel
        .wait_for(deadline, |events| {
            let announced = match announcements(events, session, &members) {
                Ok(announced) => announced,
                Err(e) => return Some(Err(e)),
            };
            let keys: BTreeSet<PublicKey> = announced.values().copied().collect();
            if keys.len() > 1 {
                return Some(Err(KeygenError::Split { announced }));
            }
            if let Some(agreed) = keys.into_iter().next()
                && announced.len() == members.len()
            {
                return Some(Ok(agreed));
            }
            if started.elapsed() >= answer_window {
                let silent = silent_members(events, session, &members);
                if !silent.is_empty() {
                    return Some(Err(KeygenError::Silent {
                        kind: MessageKind::DkgRound1,
                        members: silent,
                    }));
                }
            }
            None
        })
        .await;
    let events = channel.events();
    channel.close().await;
    match outcome {
        Some(result) => result,
        None => {
            let announced = announcements(&events, session, &members)?;
            Err(KeygenError::Silent {
                kind: MessageKind::DkgDone,
                members: members
                    .iter()
                    .filter(|pk| !announced.contains_key(pk))
                    .copied()
                    .collect(),
            })
        }
    }
}

/// The members that sent no message of `session` at all.
fn silent_members(
    events: &[Event],
    session: SessionId,
    members: &BTreeSet<PublicKey>,
) -> Vec<PublicKey> {
    let answered: BTreeSet<PublicKey> = events
        .iter()
        .filter(|e| quorum_msg::QuorumMessage::from_event(e).is_ok_and(|m| m.session == session))
        .map(|e| e.pubkey)
        .collect();
    members
        .iter()
        .filter(|pk| !answered.contains(pk))
        .copied()
        .collect()
}

/// The quorum key each member announced in clear for `session` (its earliest announcement);
/// two different keys from one member is an equivocation.
fn announcements(
    events: &[Event],
    session: SessionId,
    members: &BTreeSet<PublicKey>,
) -> Result<BTreeMap<PublicKey, PublicKey>, KeygenError> {
    let mut sorted: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == quorum_msg::DKG_DONE && members.contains(&e.pubkey))
        .collect();
    sorted.sort_by_key(|e| (e.created_at, e.id));
    let mut announced = BTreeMap::new();
    for event in sorted {
        let Ok(message) = QuorumMessage::from_event(event) else {
            continue;
        };
        let Some(quorum) = message.quorum.filter(|_| message.session == session) else {
            continue;
        };
        match announced.get(&event.pubkey) {
            Some(first) if *first != quorum => {
                return Err(KeygenError::Equivocated {
                    kind: MessageKind::DkgDone,
                    member: event.pubkey,
                });
            }
            Some(_) => {}
            None => {
                announced.insert(event.pubkey, quorum);
            }
        }
    }
    Ok(announced)
}

/// Signs `mandate` with the maintainer's key and publishes it.
pub async fn publish_mandate(
    relays: &[RelayUrl],
    maintainer: &Keys,
    mandate: &Mandate,
) -> Result<Event, KeygenError> {
    let event = mandate
        .to_event_builder()
        .map_err(KeygenError::Unsigned)?
        .sign_with_keys(maintainer)
        .map_err(|e| KeygenError::Sign(e.to_string()))?;
    let channel = Channel::open(relays, maintainer.clone(), Vec::new()).await?;
    let published = channel.publish_signed(&event).await;
    channel.close().await;
    published?;
    Ok(event)
}

/// Publishes a DKG proposal: `mandate` without `quorum`, `keygen dkg`. Its id is the session
/// the members run the DKG in.
pub async fn propose_dkg(
    relays: &[RelayUrl],
    maintainer: &Keys,
    mut mandate: Mandate,
) -> Result<Event, KeygenError> {
    mandate.quorum = None;
    mandate.keygen = Keygen::Dkg;
    publish_mandate(relays, maintainer, &mandate).await
}

/// Publishes a refresh mandate: `mandate` (naming the existing quorum key, with its members,
/// indices and threshold) with `keygen refresh`. Its id is the session the members refresh
/// their shares in; [`await_group_key`] with that id returns the key once all `N` members
/// announced it, which must be the same key. The mandate is a mandate like any other: as the
/// newest, it is the one consumers use, so it carries the same pipeline, jobs and `allow`.
pub async fn propose_refresh(
    relays: &[RelayUrl],
    maintainer: &Keys,
    mut mandate: Mandate,
) -> Result<Event, KeygenError> {
    if mandate.quorum.is_none() {
        return Err(KeygenError::Unsigned(MandateError::MissingTag("quorum")));
    }
    mandate.keygen = Keygen::Refresh;
    publish_mandate(relays, maintainer, &mandate).await
}

/// The dealer's side: sends each member its share (8709, exactly one recipient each, session =
/// the mandate's id). `mandate` must be a signed dealer mandate naming the shares' quorum key,
/// whose dealer is `dealer_keys`; `shares` must be exactly one per member, of that roster.
pub async fn deal_over_relays(
    relays: &[RelayUrl],
    dealer_keys: &Keys,
    mandate: &Event,
    shares: &[KeyShare],
    config: &KeygenConfig,
) -> Result<(), KeygenError> {
    let parsed = read_mandate(mandate)?;
    let dealer = dealer_of(mandate, &parsed).ok_or_else(|| KeygenError::NotApplicable {
        id: mandate.id,
        reason: "not a dealer mandate".into(),
    })?;
    if dealer != dealer_keys.public_key() {
        return Err(KeygenError::NotApplicable {
            id: mandate.id,
            reason: format!(
                "its dealer is {dealer}, not this key {}",
                dealer_keys.public_key()
            ),
        });
    }
    let quorum = parsed.quorum.ok_or_else(|| KeygenError::NotApplicable {
        id: mandate.id,
        reason: "a dealer mandate must name the quorum key".into(),
    })?;
    let roster = roster_of(mandate.id, &parsed)?;
    let mut covered = BTreeSet::new();
    for share in shares {
        if share.quorum() != quorum {
            return Err(KeygenError::WrongQuorum {
                got: share.quorum(),
                expected: quorum,
            });
        }
        if *share.group().roster() != roster {
            return Err(KeygenError::WrongRoster);
        }
        if !covered.insert(share.member()) {
            return Err(KeygenError::Shares(format!(
                "two shares for {}",
                share.member()
            )));
        }
    }
    if covered.len() != roster.len() {
        return Err(KeygenError::Shares(format!(
            "{} shares for {} members",
            covered.len(),
            roster.len()
        )));
    }
    let session = SessionId::from_event_id(&mandate.id);
    let channel = Channel::open(relays, dealer_keys.clone(), Vec::new()).await?;
    let mut result = Ok(());
    for share in shares {
        let sealed = share
            .to_json()
            .map_err(|e| KeygenError::Deal(e.to_string()))
            .and_then(|json| {
                let mut payloads = BTreeMap::from([(share.member(), String::clone(&json))]);
                let sealed = QuorumMessage::seal(
                    dealer_keys,
                    MessageKind::DealerShare,
                    session,
                    Some(quorum),
                    &payloads,
                    expiration(config),
                );
                payloads.values_mut().for_each(Zeroize::zeroize);
                sealed.map_err(seal_error(MessageKind::DealerShare))
            });
        result = match sealed {
            Ok(event) => channel.publish_signed(&event).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        if result.is_err() {
            break;
        }
        tracing::debug!(member = %share.member(), %quorum, "share delivered");
    }
    channel.close().await;
    result
}

/// The whole dealer mode for a maintainer that deals itself: makes a fresh key for
/// `mandate`'s members and threshold, publishes the mandate naming it (`keygen dealer`, this
/// key as dealer), delivers the shares, and drops them (wiping them from memory). Returns the
/// published mandate. **The maintainer held the whole key** while this ran.
pub async fn deal_and_publish(
    relays: &[RelayUrl],
    maintainer: &Keys,
    mut mandate: Mandate,
    config: &KeygenConfig,
) -> Result<Event, KeygenError> {
    mandate.validate().map_err(KeygenError::Unsigned)?;
    let roster = roster(&mandate).map_err(|e| KeygenError::Deal(e.to_string()))?;
    let (group, shares) = quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng)
        .map_err(|e| KeygenError::Deal(e.to_string()))?;
    mandate.quorum = Some(group.quorum());
    mandate.keygen = Keygen::Dealer { dealer: None };
    let event = publish_mandate(relays, maintainer, &mandate).await?;
    let delivered = deal_over_relays(relays, maintainer, &event, &shares, config).await;
    drop(shares);
    delivered.map(|()| event)
}

/// The member side of dealer mode: waits for this member's share of `mandate` (a signed dealer
/// mandate naming its quorum key) and accepts it only from the mandate's dealer (the mandate's
/// signer when it names none), for this member, of the mandate's quorum key and roster.
/// Deliveries from anyone else are refused; if only such came, the error names the sender.
pub async fn receive_dealt_share(
    relays: &[RelayUrl],
    keys: &Keys,
    mandate: &Event,
    config: &KeygenConfig,
) -> Result<KeyShare, KeygenError> {
    let parsed = read_mandate(mandate)?;
    let dealer = dealer_of(mandate, &parsed).ok_or_else(|| KeygenError::NotApplicable {
        id: mandate.id,
        reason: "not a dealer mandate".into(),
    })?;
    let quorum = parsed.quorum.ok_or_else(|| KeygenError::NotApplicable {
        id: mandate.id,
        reason: "a dealer mandate must name the quorum key".into(),
    })?;
    let me = keys.public_key();
    if parsed.member_index(&me).is_none() {
        return Err(KeygenError::NotAMember { id: mandate.id, me });
    }
    let roster = roster_of(mandate.id, &parsed)?;
    let session = SessionId::from_event_id(&mandate.id);
    let filter = Filter::new()
        .kind(quorum_msg::DEALER_SHARE)
        .pubkey(me)
        .since(mandate.created_at - 600u64);
    let channel = Channel::open(relays, keys.clone(), vec![filter]).await?;
    let deadline = Instant::now() + config.delivery_timeout;
    let delivery = channel
        .wait_for(deadline, |events| {
            events
                .iter()
                .filter(|e| e.kind == quorum_msg::DEALER_SHARE && e.pubkey == dealer)
                .find_map(|e| {
                    QuorumMessage::open(e, keys)
                        .ok()
                        .filter(|o| o.session == session)
                })
        })
        .await;
    let refused = refused_delivery(&channel.events(), session, dealer);
    channel.close().await;
    let Some(mut delivery) = delivery else {
        return Err(refused.unwrap_or(KeygenError::NoDelivery {
            dealer,
            mandate: mandate.id,
        }));
    };
    if let Some(refused) = refused {
        tracing::warn!(mandate = %mandate.id, "{refused}");
    }
    let share = KeyShare::from_json(&delivery.plaintext);
    delivery.plaintext.zeroize();
    let share = share.map_err(|source| KeygenError::InvalidShare {
        dealer,
        source: Box::new(source),
    })?;
    if share.member() != me {
        return Err(KeygenError::WrongMember {
            dealer,
            got: share.member(),
            expected: me,
        });
    }
    if share.quorum() != quorum || delivery.quorum != Some(quorum) {
        return Err(KeygenError::WrongQuorum {
            got: share.quorum(),
            expected: quorum,
        });
    }
    if *share.group().roster() != roster {
        return Err(KeygenError::WrongRoster);
    }
    Ok(share)
}

/// A delivery for `session` from someone other than `dealer`, as the refusal error.
fn refused_delivery(
    events: &[Event],
    session: SessionId,
    dealer: PublicKey,
) -> Option<KeygenError> {
    events
        .iter()
        .filter(|e| e.kind == quorum_msg::DEALER_SHARE && e.pubkey != dealer)
        .find(|e| QuorumMessage::from_event(e).is_ok_and(|m| m.session == session))
        .map(|e| KeygenError::NotFromDealer {
            id: e.id,
            sender: e.pubkey,
            dealer,
        })
}

/// Settings of the member service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub keygen: KeygenConfig,
    /// Mandates older than this when the service starts are not answered (they are done, or
    /// their rounds are over).
    pub max_proposal_age: Duration,
    /// How long to wait for the relays when looking up a repository's maintainers (its owner's
    /// NIP-34 announcement) before answering a mandate.
    pub lookup_timeout: Duration,
    /// Most key sessions (DKG, dealer delivery, refresh) running at once for one repository;
    /// a mandate beyond it is refused.
    pub max_sessions_in_flight: usize,
    /// Most key sessions started for one repository within any hour; a mandate beyond it is
    /// refused.
    pub max_sessions_per_hour: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            keygen: KeygenConfig::default(),
            max_proposal_age: Duration::from_secs(3600),
            lookup_timeout: Duration::from_secs(10),
            max_sessions_in_flight: 2,
            max_sessions_per_hour: 6,
        }
    }
}

/// How many maintainer look-ups the service runs at once: a flood of mandates from strangers
/// queues here instead of opening one relay query each.
const CONCURRENT_LOOKUPS: usize = 4;

/// How many times a maintainer look-up is tried (2 s apart) before the mandate is refused.
const LOOKUP_ATTEMPTS: u32 = 3;

/// [`serve_with`] with the default settings.
pub async fn serve(
    relays: &[RelayUrl],
    keys: &Keys,
    share_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KeygenError> {
    serve_with(relays, keys, share_dir, ServeConfig::default(), shutdown).await
}

/// The member service a DVM daemon runs until `shutdown`: it answers the mandates (8704) that
/// name its key — a DKG proposal with [`run_dkg`], a dealer mandate with
/// [`receive_dealt_share`], a refresh mandate with [`run_refresh`] (only if it holds a share of
/// that key) — and saves each share to `share_dir/<quorum hex>.json` (mode 0600).
///
/// Only a repository's maintainers start sessions: a mandate is answered only if its signer is
/// in the maintainer set of the repository it names ([`maintainer_set`] over the owner's kind
/// 30617 announcement, looked up on the relays), and a refresh only for the repository this
/// member made the key for ([`repository_of`]). Sessions are limited per repository
/// ([`ServeConfig`]: in flight and per hour, counted only for mandates that passed those checks,
/// so nobody else can use up a repository's budget). A refused mandate is logged with the
/// reason and changes nothing.
///
/// Each session runs in its own task; one that fails is logged and changes nothing else.
/// `share_dir/sessions/<mandate id>` records each DKG or refresh session taken part in
/// (`started`, `done <quorum>` or `failed: …`), so that a restarted service does not join a
/// session twice. Errors only if it cannot start.
pub async fn serve_with(
    relays: &[RelayUrl],
    keys: &Keys,
    share_dir: PathBuf,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), KeygenError> {
    private_dir(&share_dir)?;
    private_dir(&share_dir.join("sessions"))?;
    let me = keys.public_key();
    let since = Timestamp::now() - config.max_proposal_age.as_secs();
    let filter = Filter::new().kind(mandate::MANDATE).pubkey(me).since(since);
    let channel = Channel::open(relays, keys.clone(), vec![filter]).await?;
    let lookup = Lookup::connect(relays, config.lookup_timeout).await?;
    let limits = Arc::new(Mutex::new(SessionLimits::new(
        config.max_sessions_in_flight,
        config.max_sessions_per_hour,
    )));
    tracing::info!(member = %me, dir = %share_dir.display(), "answering quorum key mandates");
    let mut handled: HashSet<EventId> = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let fresh = tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = tasks.join_next() => {
                if let Err(e) = joined && e.is_panic() {
                    tracing::error!("a key generation task panicked: {e}");
                }
                continue;
            }
            fresh = channel.wait_for(Instant::now() + Duration::from_secs(3600), |events| {
                let fresh: Vec<Event> = events
                    .iter()
                    .filter(|e| e.kind == mandate::MANDATE && !handled.contains(&e.id))
                    .cloned()
                    .collect();
                (!fresh.is_empty()).then_some(fresh)
            }) => fresh.unwrap_or_default(),
        };
        for event in fresh {
            handled.insert(event.id);
            match plan(&event, &me, &share_dir) {
                Ok(Some((job, mandate))) => {
                    let relays = relays.to_vec();
                    let keys = keys.clone();
                    let share_dir = share_dir.clone();
                    let config = config.keygen.clone();
                    let lookup = lookup.clone();
                    let limits = limits.clone();
                    // The look-up runs in the task, so that the maintainer's mandate is not held
                    // up behind others' look-ups in this loop.
                    tasks.spawn(async move {
                        let refused = |reason: String| {
                            tracing::warn!(
                                mandate = %event.id,
                                author = %event.pubkey,
                                repo = %mandate.repo,
                                "refused: {reason}"
                            );
                        };
                        if let Err(reason) = admit(&lookup, &event, &mandate, job, &share_dir).await
                        {
                            return refused(reason);
                        }
                        let repo = mandate.repo.to_string();
                        let slot =
                            match SessionSlot::start(&limits, &repo, std::time::Instant::now()) {
                                Ok(slot) => slot,
                                Err(reason) => return refused(reason),
                            };
                        answer(&relays, &keys, &event, &mandate, job, &share_dir, &config).await;
                        drop(slot);
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(mandate = %event.id, "ignored: {e}"),
            }
        }
    }
    tasks.abort_all();
    lookup.client.shutdown().await;
    channel.close().await;
    tracing::info!("quorum key service stopped");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Dkg,
    Dealer,
    Refresh,
}

/// What to do about a mandate naming this member (`None`: nothing, e.g. already done), before
/// asking who signed it ([`admit`]).
fn plan(
    event: &Event,
    me: &PublicKey,
    share_dir: &Path,
) -> Result<Option<(Job, Mandate)>, KeygenError> {
    let mandate = read_mandate(event)?;
    let job = plan_job(event, &mandate, me, share_dir)?;
    Ok(job.map(|job| (job, mandate)))
}

fn plan_job(
    event: &Event,
    mandate: &Mandate,
    me: &PublicKey,
    share_dir: &Path,
) -> Result<Option<Job>, KeygenError> {
    if mandate.member_index(me).is_none() {
        return Ok(None);
    }
    if mandate.expiration <= Timestamp::now() {
        return Ok(None);
    }
    match (mandate.keygen, mandate.quorum) {
        (Keygen::Dkg, None) => {
            let marker = session_marker(share_dir, &event.id);
            if marker.exists() {
                tracing::debug!(proposal = %event.id, "DKG session already taken part in");
                return Ok(None);
            }
            Ok(Some(Job::Dkg))
        }
        // The final mandate of a DKG: the key already exists.
        (Keygen::Dkg, Some(_)) => Ok(None),
        (Keygen::Dealer { .. }, Some(quorum)) => {
            if share_path(share_dir, &quorum).exists() {
                return Ok(None);
            }
            Ok(Some(Job::Dealer))
        }
        (Keygen::Dealer { .. }, None) => Ok(None),
        (Keygen::Refresh, Some(quorum)) => {
            if session_marker(share_dir, &event.id).exists() {
                tracing::debug!(mandate = %event.id, "refresh already taken part in");
                return Ok(None);
            }
            if !share_path(share_dir, &quorum).exists() {
                return Err(KeygenError::NoShare {
                    quorum,
                    dir: share_dir.to_path_buf(),
                });
            }
            Ok(Some(Job::Refresh))
        }
        (Keygen::Refresh, None) => Ok(None),
    }
}

/// Looks up repositories' maintainer sets on the relays, a few at a time.
#[derive(Clone)]
struct Lookup {
    client: Client,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

impl Lookup {
    async fn connect(relays: &[RelayUrl], timeout: Duration) -> Result<Lookup, KeygenError> {
        let client = crate::channel::connect(relays, None).await?;
        Ok(Lookup {
            client,
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LOOKUPS)),
            timeout,
        })
    }

    /// The maintainer set of `repo` (its owner, and the maintainers its owner's newest
    /// announcement lists). A relay error is an error, never an empty answer.
    async fn maintainers(&self, repo: &RepoCoordinate) -> Result<BTreeSet<PublicKey>, String> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the service is stopping".to_string())?;
        let filter = quorum_proto::nip34::announcements_of(repo);
        // A relay that is briefly away should not cost the maintainer its session: the mandate
        // is not looked at again once refused.
        let mut attempt = 1;
        let announcements = loop {
            match self.client.fetch_events(filter.clone(), self.timeout).await {
                Ok(events) => break events,
                Err(e) if attempt >= LOOKUP_ATTEMPTS => {
                    return Err(format!("cannot look up the maintainers of {repo}: {e}"));
                }
                Err(e) => {
                    tracing::debug!(%repo, attempt, "maintainer look-up failed, retrying: {e}");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        Ok(maintainer_set(
            &repo.owner,
            &repo.identifier,
            &announcements.to_vec(),
        ))
    }
}

/// Whether the mandate's signer may start this session: a maintainer of the repository the
/// mandate names, and, for a refresh, of the repository this member made the key for.
async fn admit(
    lookup: &Lookup,
    event: &Event,
    mandate: &Mandate,
    job: Job,
    share_dir: &Path,
) -> Result<(), String> {
    if let (Job::Refresh, Some(quorum)) = (job, mandate.quorum) {
        // Checked first (no relay needed): anyone owns repositories of their own, so the
        // maintainer check alone would let a stranger refresh any key under a mandate for
        // one of theirs.
        match repository_of(share_dir, &quorum) {
            Ok(Some(repo)) if repo == mandate.repo => {}
            Ok(Some(repo)) => {
                return Err(format!(
                    "it asks to refresh quorum key {quorum} for {}, but this member holds that \
                     key for {repo}",
                    mandate.repo
                ));
            }
            Ok(None) => {
                return Err(format!(
                    "it asks to refresh quorum key {quorum}, but this member has no record of the \
                     repository it holds that key for ({})",
                    repository_path(share_dir, &quorum).display()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let maintainers = lookup.maintainers(&mandate.repo).await?;
    if !maintainers.contains(&event.pubkey) {
        return Err(format!(
            "it is signed by {}, who is not a maintainer of {} (its owner's NIP-34 announcement \
             lists {} maintainer(s))",
            event.pubkey,
            mandate.repo,
            maintainers.len()
        ));
    }
    Ok(())
}

/// Key sessions per repository: how many run now and when the recent ones started.
#[derive(Debug)]
struct SessionLimits {
    max_in_flight: usize,
    max_per_hour: usize,
    repos: HashMap<String, RepoSessions>,
}

#[derive(Debug, Default)]
struct RepoSessions {
    in_flight: usize,
    started: VecDeque<std::time::Instant>,
}

impl SessionLimits {
    const WINDOW: Duration = Duration::from_secs(3600);

    fn new(max_in_flight: usize, max_per_hour: usize) -> Self {
        SessionLimits {
            max_in_flight,
            max_per_hour,
            repos: HashMap::new(),
        }
    }

    /// Counts a session for `repo` starting at `now`, or says which limit it would exceed.
    fn try_start(&mut self, repo: &str, now: std::time::Instant) -> Result<(), String> {
        // Forget what is over an hour old, and repositories with nothing left to remember.
        self.repos.retain(|_, s| {
            while s
                .started
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
            {
                s.started.pop_front();
            }
            s.in_flight > 0 || !s.started.is_empty()
        });
        let sessions = self.repos.entry(repo.to_string()).or_default();
        if sessions.in_flight >= self.max_in_flight {
            return Err(format!(
                "{} key session(s) for {repo} are running already (at most {})",
                sessions.in_flight, self.max_in_flight
            ));
        }
        if sessions.started.len() >= self.max_per_hour {
            return Err(format!(
                "{} key session(s) for {repo} started in the last hour (at most {})",
                sessions.started.len(),
                self.max_per_hour
            ));
        }
        sessions.in_flight += 1;
        sessions.started.push_back(now);
        Ok(())
    }

    fn finish(&mut self, repo: &str) {
        if let Some(sessions) = self.repos.get_mut(repo) {
            sessions.in_flight = sessions.in_flight.saturating_sub(1);
        }
    }
}

/// A running session's place in [`SessionLimits`], given back when dropped (also when the task
/// is aborted).
struct SessionSlot {
    limits: Arc<Mutex<SessionLimits>>,
    repo: String,
}

impl SessionSlot {
    fn start(
        limits: &Arc<Mutex<SessionLimits>>,
        repo: &str,
        now: std::time::Instant,
    ) -> Result<SessionSlot, String> {
        limits
            .lock()
            .expect("session limits lock")
            .try_start(repo, now)?;
        Ok(SessionSlot {
            limits: limits.clone(),
            repo: repo.to_string(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Ok(mut limits) = self.limits.lock() {
            limits.finish(&self.repo);
        }
    }
}

/// Where the member service records the repository it made a key for:
/// `share_dir/<quorum hex>.repo`, the repository's coordinate (`30617:<owner hex>:<id>`).
pub fn repository_path(share_dir: &Path, quorum: &PublicKey) -> PathBuf {
    share_dir.join(format!("{}.repo", quorum.to_hex()))
}

/// The repository this member made `quorum`'s key for, as recorded by the member service when
/// it saved the share (`None`: no record, e.g. a share placed by hand).
pub fn repository_of(
    share_dir: &Path,
    quorum: &PublicKey,
) -> Result<Option<RepoCoordinate>, KeygenError> {
    let path = repository_path(share_dir, quorum);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeygenError::Io {
                op: "reading",
                path,
                source,
            });
        }
    };
    text.trim()
        .parse::<RepoCoordinate>()
        .map(Some)
        .map_err(|e| KeygenError::BadRecord {
            path,
            reason: format!("not a repository coordinate: {e}"),
        })
}

/// Records that this member holds `quorum`'s key for `repo` ([`repository_of`]): written to a
/// temporary file, fsynced and renamed, so a crash leaves the old record or the new one.
pub fn record_repository(
    share_dir: &Path,
    quorum: &PublicKey,
    repo: &RepoCoordinate,
) -> Result<(), KeygenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    private_dir(share_dir)?;
    let path = repository_path(share_dir, quorum);
    let tmp = share_dir.join(format!(".{}.repo.tmp", quorum.to_hex()));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| KeygenError::Io { op, path, source }
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    let written = file
        .write_all(format!("{repo}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("writing", &tmp))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(io("renaming a record onto", &path)))
        .and_then(|()| {
            std::fs::File::open(share_dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", share_dir))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn session_marker(share_dir: &Path, session: &EventId) -> PathBuf {
    share_dir.join("sessions").join(session.to_hex())
}

/// Runs one job to its end and records the outcome; never fails (it logs).
async fn answer(
    relays: &[RelayUrl],
    keys: &Keys,
    event: &Event,
    mandate: &Mandate,
    job: Job,
    share_dir: &Path,
    config: &KeygenConfig,
) {
    let marker = session_marker(share_dir, &event.id);
    let outcome = match job {
        Job::Dkg => {
            tracing::info!(proposal = %event.id, author = %event.pubkey, "taking part in a DKG");
            if let Err(e) = write_marker(&marker, "started\n") {
                tracing::warn!("not taking part in DKG {}: {e}", event.id);
                return;
            }
            // Saved before the announcement, so that a maintainer who saw all N announcements
            // knows every member holds its share; removed again if the members disagree.
            let mut saved = Vec::new();
            let result = run_dkg_with(relays, keys, event, config, |share| {
                // The repository first: a share without it could never be refreshed.
                record_repository(share_dir, &share.quorum(), &mandate.repo)?;
                saved.push(repository_path(share_dir, &share.quorum()));
                let path = share_path(share_dir, &share.quorum());
                store::save(&path, share)?;
                saved.push(path);
                Ok(())
            })
            .await;
            match result {
                Ok(share) => {
                    let path = share_path(share_dir, &share.quorum());
                    Ok((share, path))
                }
                Err(e) => {
                    for path in saved {
                        let _ = std::fs::remove_file(path);
                    }
                    Err(e)
                }
            }
        }
        Job::Refresh => {
            tracing::info!(mandate = %event.id, author = %event.pubkey, "refreshing a share");
            if let Err(e) = write_marker(&marker, "started\n") {
                tracing::warn!("not taking part in refresh {}: {e}", event.id);
                return;
            }
            run_refresh(relays, keys, event, share_dir, config)
                .await
                .map(|share| {
                    let path = share_path(share_dir, &share.quorum());
                    (share, path)
                })
        }
        Job::Dealer => {
            tracing::info!(mandate = %event.id, "waiting for the dealer's share delivery");
            receive_dealt_share(relays, keys, event, config)
                .await
                .and_then(|share| {
                    let path = share_path(share_dir, &share.quorum());
                    // Another session may have stored a share of this key meanwhile; a delivery
                    // never replaces one (nor the repository it is held for).
                    if path.exists() {
                        return Err(KeygenError::NotApplicable {
                            id: event.id,
                            reason: format!(
                                "a share of quorum {} is stored already; a delivery does not \
                                 replace it",
                                share.quorum()
                            ),
                        });
                    }
                    record_repository(share_dir, &share.quorum(), &mandate.repo)?;
                    store::save(&path, &share)?;
                    Ok((share, path))
                })
        }
    };
    match outcome {
        Ok((share, path)) => {
            tracing::info!(
                mandate = %event.id,
                quorum = %share.quorum(),
                index = share.index(),
                threshold = share.group().threshold(),
                path = %path.display(),
                "quorum key share saved"
            );
            if matches!(job, Job::Dkg | Job::Refresh) {
                let _ = write_marker(&marker, &format!("done {}\n", share.quorum()));
            }
        }
        Err(e) => {
            tracing::warn!(mandate = %event.id, "no quorum key share: {e}");
            if matches!(job, Job::Dkg | Job::Refresh) {
                let _ = write_marker(&marker, &format!("failed: {e}\n"));
            }
        }
    }
}

fn write_marker(path: &Path, text: &str) -> Result<(), KeygenError> {
    std::fs::write(path, text).map_err(|source| KeygenError::Io {
        op: "writing",
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` (and its parents) readable by its owner only, if it does not exist.
fn private_dir(dir: &Path) -> Result<(), KeygenError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeygenError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source,
        })
}

/// The shares a member holds, by quorum key: what runner and wrapper DVMs look up for a
/// mandate's quorum.
#[derive(Debug, Default)]
pub struct ShareBook {
    shares: BTreeMap<PublicKey, KeyShare>,
    skipped: Vec<(PathBuf, String)>,
}

impl ShareBook {
    /// This member's share of `quorum`.
    pub fn get(&self, quorum: &PublicKey) -> Option<&KeyShare> {
        self.shares.get(quorum)
    }

    /// The quorum keys it holds shares of.
    pub fn quorums(&self) -> impl Iterator<Item = &PublicKey> {
        self.shares.keys()
    }

    pub fn len(&self) -> usize {
        self.shares.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Files that were not loaded, with the reason (never their content).
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }
}

impl fmt::Display for ShareBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} share(s)", self.shares.len())
    }
}

/// Loads every `<quorum hex>.json` share in `share_dir` ([`store::load`]: mode 0600 only). A
/// missing directory is an empty book; a file that does not load, or whose name is not its
/// quorum key, is skipped with a warning.
pub fn load_shares(share_dir: &Path) -> ShareBook {
    let mut book = ShareBook::default();
    let entries = match std::fs::read_dir(share_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return book,
        Err(e) => {
            tracing::warn!(dir = %share_dir.display(), "cannot read the share directory: {e}");
            book.skipped.push((share_dir.to_path_buf(), e.to_string()));
            return book;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match store::load(&path) {
            Ok(share) if share.quorum().to_hex() == name => {
                book.shares.insert(share.quorum(), share);
            }
            Ok(share) => {
                let reason = format!("holds a share of quorum {}", share.quorum());
                tracing::warn!(path = %path.display(), "skipped: {reason}");
                book.skipped.push((path, reason));
            }
            Err(e) => {
                tracing::warn!("skipped share file: {e}");
                book.skipped.push((path, e.to_string()));
            }
        }
    }
    book
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_limited_per_repository_in_flight_and_per_hour() {
        let limits = Arc::new(Mutex::new(SessionLimits::new(2, 3)));
        let t0 = std::time::Instant::now();
        let (a, b) = ("30617:aa:app", "30617:bb:app");
        let first = SessionSlot::start(&limits, a, t0).unwrap();
        let second = SessionSlot::start(&limits, a, t0).unwrap();
        let err = SessionSlot::start(&limits, a, t0)
            .err()
            .expect("a third at once");
        assert!(err.contains("running already (at most 2)"), "{err}");
        // Another repository has its own budget.
        let other = SessionSlot::start(&limits, b, t0).unwrap();
        // A finished session (or an aborted task) gives its place back...
        drop(first);
        let third = SessionSlot::start(&limits, a, t0).unwrap();
        drop((second, third));
        // ...but not its place in the hour.
        let err = SessionSlot::start(&limits, a, t0 + Duration::from_secs(60))
            .err()
            .expect("a fourth within the hour");
        assert!(err.contains("in the last hour (at most 3)"), "{err}");
        // An hour after the first ones, there is room again.
        let later = t0 + Duration::from_secs(3600);
        let _again = SessionSlot::start(&limits, a, later).unwrap();
        drop(other);
        // Repositories with nothing running and nothing recent are forgotten.
        let _ = SessionSlot::start(&limits, a, later).unwrap();
        assert_eq!(limits.lock().unwrap().repos.len(), 1);
    }

    #[test]
    fn the_repository_record_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let share_dir = dir.path().join("shares");
        let quorum = Keys::generate().public_key();
        assert!(repository_of(&share_dir, &quorum).unwrap().is_none());
        let repo = RepoCoordinate::new(Keys::generate().public_key(), "app");
        record_repository(&share_dir, &quorum, &repo).unwrap();
        assert_eq!(repository_of(&share_dir, &quorum).unwrap(), Some(repo));
        let path = repository_path(&share_dir, &quorum);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "not a coordinate").unwrap();
        let err = repository_of(&share_dir, &quorum).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a repository coordinate"), "{err}");
    }
}
