//! Commit-reveal among the members of a quorum job (design §6.3).
//!
//! Each member publishes a commitment to its per-file sha256 set, bound to its own pubkey, the
//! job and a random salt (kind 8705), and reveals (8706) only once `t` members have committed
//! or the commit deadline passed. A member that copies another's commitment cannot open it
//! under its own pubkey; a member that waits for a reveal and then commits to a copy is *late*:
//!
//! Each reveal lists the commitments its author had seen when it revealed. A member's result
//! counts only if every other counted member's reveal lists its commitment, i.e. nobody whose
//! result counts had revealed before that commitment existed. Members that fail this are
//! reported as `late` and treated as silent. The rule is computed from the events alone, so
//! every member that saw the same events reaches the same set.
//!
//! Two different commitments from one member for one job are an equivocation: the first member
//! to see them publishes the proof (8707), and the equivocator's result does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::agreement::{
    self, BuildResult, Commitment, Reveal, Roster, Salt, SignedCommitment, SignedReveal, Tally,
    TallyOutcome,
};
use quorum_proto::blossom::Sha256Hex;
use tokio::time::Instant;

use crate::channel::{Channel, ChannelError};

/// Deadlines of the two phases.
#[derive(Debug, Clone)]
pub struct AgreementConfig {
    /// How long to wait for `t` commitments before revealing anyway.
    pub commit_wait: Duration,
    /// Once `t` members have committed, how much longer to wait for the others before
    /// revealing: a member that commits after a reveal is out is late and does not count, so
    /// an honest member a little slower than the rest should not be shut out.
    pub straggler_wait: Duration,
    /// How long to wait for the reveals of everyone who committed.
    pub reveal_wait: Duration,
    /// How long commitments and reveals stay on relays (NIP-40).
    pub lifetime: Duration,
}

impl Default for AgreementConfig {
    fn default() -> Self {
        AgreementConfig {
            commit_wait: Duration::from_secs(600),
            straggler_wait: Duration::from_secs(5),
            reveal_wait: Duration::from_secs(60),
            lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("building the {what} event: {reason}")]
    Build { what: &'static str, reason: String },
}

/// What the members agreed on, as far as this member saw.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// The tally over the members whose results count.
    pub tally: TallyOutcome,
    /// Members whose commitment came after a counted member had revealed (treated as silent).
    pub late: BTreeSet<PublicKey>,
    /// This member's own reveal.
    pub my_reveal: EventId,
}

/// The subscription a member needs for one job's agreement.
pub fn filter(job: &EventId) -> Filter {
    Filter::new()
        .kinds([
            agreement::COMMITMENT,
            agreement::REVEAL,
            agreement::EQUIVOCATION_PROOF,
        ])
        .event(*job)
}

/// Commits to `result`, reveals it at the right time (naming `plan`, the plan hash this member
/// built from, if any) and tallies what everyone revealed; with a plan, only members that
/// revealed the same plan count.
pub async fn commit_and_reveal(
    channel: &Channel,
    roster: &Roster,
    job: EventId,
    result: &BuildResult,
    plan: Option<Sha256Hex>,
    config: &AgreementConfig,
) -> Result<Agreement, AgreementError> {
    let me = channel.public_key();
    let expiration = Timestamp::now() + config.lifetime.as_secs();
    let tally = Tally::new(roster.clone(), job);

    let salt = Salt::random();
    let commitment = Commitment::new(&me, job, roster.quorum(), &salt, result, expiration);
    let my_commitment = channel.publish(commitment.to_event_builder()).await?;
    let my_commitment =
        SignedCommitment::from_event(&my_commitment).map_err(|e| AgreementError::Build {
            what: "commitment",
            reason: e.to_string(),
        })?;

    // Phase 1: t commitments, or the deadline.
    let deadline = Instant::now() + config.commit_wait;
    channel
        .wait_for(deadline, |seen| {
            tally.ready_to_reveal(&commitments(seen)).then_some(())
        })
        .await;
    let stragglers = (Instant::now() + config.straggler_wait).min(deadline);
    channel
        .wait_for(stragglers, |seen| {
            let committed: BTreeSet<PublicKey> = commitments(seen)
                .iter()
                .map(|c| c.member())
                .filter(|m| roster.contains(m))
                .collect();
            (committed.len() == roster.members().len()).then_some(())
        })
        .await;

    // Phase 2: reveal, naming the commitments seen so far.
    let mut reveal = Reveal::new(&my_commitment, salt, result.clone(), expiration).with_plan(plan);
    reveal.seen = commitments(&channel.events())
        .iter()
        .filter(|c| c.member() != me)
        .map(|c| c.id())
        .collect();
    let builder = reveal
        .to_event_builder()
        .map_err(|e| AgreementError::Build {
            what: "reveal",
            reason: e.to_string(),
        })?;
    let my_reveal = channel.publish(builder).await?;

    // Wait for the reveals of everyone who committed (or the deadline).
    let deadline = Instant::now() + config.reveal_wait;
    channel
        .wait_for(deadline, |seen| {
            let committed: BTreeSet<PublicKey> = commitments(seen)
                .iter()
                .map(|c| c.member())
                .filter(|m| roster.contains(m))
                .collect();
            let revealed: BTreeSet<PublicKey> = reveals(seen).iter().map(|r| r.member()).collect();
            committed.is_subset(&revealed).then_some(())
        })
        .await;

    let agreement = tally_events(&channel.events(), roster, job, plan, my_reveal.id);
    for (member, proof) in &agreement.tally.equivocated {
        match proof.to_event_builder() {
            Ok(builder) => match channel.publish(builder).await {
                Ok(event) => {
                    tracing::warn!(%member, proof = %event.id, "member equivocated; proof published")
                }
                Err(e) => tracing::warn!(%member, "cannot publish an equivocation proof: {e}"),
            },
            Err(e) => tracing::warn!(%member, "cannot build an equivocation proof: {e}"),
        }
    }
    Ok(agreement)
}

/// The tally of a set of events, after dropping late members: pure, so every member that saw
/// the same events gets the same.
pub fn tally_events(
    seen: &[Event],
    roster: &Roster,
    job: EventId,
    plan: Option<Sha256Hex>,
    my_reveal: EventId,
) -> Agreement {
    let commitments = commitments(seen);
    let reveals = reveals(seen);
    // First reveal per roster member.
    let mut first: BTreeMap<PublicKey, &SignedReveal> = BTreeMap::new();
    for r in &reveals {
        if roster.contains(&r.member()) && r.reveal().job == job {
            first.entry(r.member()).or_insert(r);
        }
    }
    let committed_ids = |member: &PublicKey| -> BTreeSet<EventId> {
        commitments
            .iter()
            .filter(|c| c.member() == *member)
            .map(|c| c.id())
            .collect()
    };
    // Who counts: listed as seen by every other counted member's reveal. Removing a member
    // only removes a constraint on the others, so remove in key order until stable.
    let mut counted: BTreeSet<PublicKey> = first.keys().copied().collect();
    let mut late = BTreeSet::new();
    while let Some(x) = counted.iter().copied().find(|x| {
        let mine = committed_ids(x);
        counted
            .iter()
            .filter(|y| *y != x)
            .any(|y| mine.is_disjoint(&first[y].reveal().seen))
    }) {
        counted.remove(&x);
        late.insert(x);
    }
    let kept_commitments: Vec<SignedCommitment> = commitments
        .into_iter()
        .filter(|c| !late.contains(&c.member()))
        .collect();
    let kept_reveals: Vec<SignedReveal> = reveals
        .into_iter()
        .filter(|r| !late.contains(&r.member()))
        .collect();
    let tally = Tally::new(roster.clone(), job)
        .expecting_plan(plan)
        .evaluate(&kept_commitments, &kept_reveals);
    Agreement {
        tally,
        late,
        my_reveal,
    }
}

fn commitments(seen: &[Event]) -> Vec<SignedCommitment> {
    seen.iter()
        .filter(|e| e.kind == agreement::COMMITMENT)
        .filter_map(|e| SignedCommitment::from_event(e).ok())
        .collect()
}

fn reveals(seen: &[Event]) -> Vec<SignedReveal> {
    seen.iter()
        .filter(|e| e.kind == agreement::REVEAL)
        .filter_map(|e| SignedReveal::from_event(e).ok())
        .collect()
}
