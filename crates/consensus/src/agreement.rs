//! Commit-reveal among the members of a quorum job (design §6.3).
//!
//! Each member publishes a commitment to its per-file sha256 set, bound to its own pubkey, the
//! job and a random salt (kind 8705), and reveals (8706) only once `t` members have committed
//! or the commit deadline passed. A member that copies another's commitment cannot open it
//! under its own pubkey; a member that waits for a reveal and then commits to a copy is *late*:
//!
//! Each reveal lists the commitments its author had seen when it revealed. A member is late when
//! more than half of the other members that revealed omit every commitment of it from their
//! first reveal's `seen` list: most of them had revealed before it committed. Late members are
//! treated as silent. The `seen` lists are self-reported, so no member's word alone makes another
//! late: a liar that lists nothing is one voice against each of the others, and evicts none of
//! them unless more than half of the other revealing members omit that member too. The rule
//! ([`late_members`]) is one pass over the events alone, with each member's first reveal chosen
//! by `created_at` then id, so every member that saw the same events reaches the same set,
//! whatever order they came in.
//!
//! Two different commitments from one member for one job are an equivocation: the first member
//! to see them publishes the proof (8707), and the equivocator's result does not count. So that a
//! member restarted mid-job does not equivocate against itself, it keeps what it committed to
//! per job on disk ([`records`]) and, on a later call, opens the same commitment again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::agreement::{
    self, BuildResult, Commitment, Reveal, Roster, Salt, SignedCommitment, SignedReveal, Tally,
    TallyOutcome, commitment_digest,
};
use quorum_proto::blossom::Sha256Hex;
use tokio::time::Instant;

use crate::channel::{Channel, ChannelError};

pub mod records;

use records::{Created, Record, RecordError};

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
    /// How long commitments and reveals stay on relays (NIP-40), and commitment records on
    /// disk.
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
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A record of an earlier call for this job (before a restart) names a commitment to another
    /// result than the one this call was given. Committing again would be an equivocation, and
    /// opening the old commitment would vouch for a result this member no longer produced.
    #[error(
        "job {job}: my rebuilt result differs from the commitment I made before a restart; \
         not committing again"
    )]
    ResultChanged { job: EventId },
}

/// What the members agreed on, as far as this member saw.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// The tally over the members whose results count.
    pub tally: TallyOutcome,
    /// Members that most of the other revealing members had not seen commit when they revealed
    /// (treated as silent).
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
///
/// With `records` (a directory, created with mode 0700), the salt, the result and the signed
/// commitment are written to `records/<job hex>.json` before the commitment is published, and a
/// later call for the same job (after a restart) publishes that same commitment again and
/// reveals with that salt instead of committing anew. If the result it is given then differs
/// from the recorded one, it publishes nothing and fails with
/// [`AgreementError::ResultChanged`]. Records older than `config.lifetime` are removed.
pub async fn commit_and_reveal(
    channel: &Channel,
    roster: &Roster,
    job: EventId,
    result: &BuildResult,
    plan: Option<Sha256Hex>,
    config: &AgreementConfig,
    records: Option<&Path>,
) -> Result<Agreement, AgreementError> {
    let me = channel.public_key();
    let tally = Tally::new(roster.clone(), job);

    let (salt, my_commitment) = match records {
        Some(dir) => recorded_commitment(channel, dir, roster, job, result, config).await?,
        None => {
            let salt = Salt::random();
            let event = commitment_event(channel, roster, job, &salt, result, config)?;
            channel.publish_signed(&event).await?;
            (salt, signed_commitment(&event)?)
        }
    };
    let expiration = my_commitment.commitment().expiration;

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

/// A new commitment to `result`, signed by this member, valid for `config.lifetime`.
fn commitment_event(
    channel: &Channel,
    roster: &Roster,
    job: EventId,
    salt: &Salt,
    result: &BuildResult,
    config: &AgreementConfig,
) -> Result<Event, AgreementError> {
    let expiration = Timestamp::now() + config.lifetime.as_secs();
    Commitment::new(
        &channel.public_key(),
        job,
        roster.quorum(),
        salt,
        result,
        expiration,
    )
    .to_event_builder()
    .sign_with_keys(channel.keys())
    .map_err(|e| AgreementError::Build {
        what: "commitment",
        reason: e.to_string(),
    })
}

fn signed_commitment(event: &Event) -> Result<SignedCommitment, AgreementError> {
    SignedCommitment::from_event(event).map_err(|e| AgreementError::Build {
        what: "commitment",
        reason: e.to_string(),
    })
}

/// This member's commitment for `job` through the record directory `dir`: the recorded one
/// (published again) if an earlier call made one, else a new one, recorded before it is
/// published.
async fn recorded_commitment(
    channel: &Channel,
    dir: &Path,
    roster: &Roster,
    job: EventId,
    result: &BuildResult,
    config: &AgreementConfig,
) -> Result<(Salt, SignedCommitment), AgreementError> {
    records::private_dir(dir)?;
    let swept = records::sweep(dir, config.lifetime);
    if swept > 0 {
        tracing::debug!(dir = %dir.display(), swept, "old commitment records removed");
    }
    let record = match records::load(dir, &job)? {
        Some(record) => record,
        None => {
            let salt = Salt::random();
            let event = commitment_event(channel, roster, job, &salt, result, config)?;
            let record = Record {
                salt,
                result: result.canonical_bytes(),
                commitment: event,
            };
            match records::create(dir, &job, &record)? {
                Created::New => {
                    channel.publish_signed(&record.commitment).await?;
                    let signed = signed_commitment(&record.commitment)?;
                    return Ok((salt, signed));
                }
                // Another call for this job got there first: use its commitment.
                Created::Existing(existing) => *existing,
            }
        }
    };
    let path = records::path(dir, &job);
    let signed = check_record(&record, &path, channel.public_key(), roster, job)?;
    if record.result != result.canonical_bytes() {
        tracing::warn!(
            %job,
            commitment = %signed.id(),
            "my rebuilt result differs from the commitment I made before a restart; not committing again"
        );
        return Err(AgreementError::ResultChanged { job });
    }
    let digest = commitment_digest(&channel.public_key(), &job, &record.salt, result);
    if digest != signed.commitment().digest {
        return Err(RecordError::Invalid {
            path,
            reason: "its salt and result do not open its commitment".into(),
        }
        .into());
    }
    tracing::info!(%job, commitment = %signed.id(), "resuming: publishing my recorded commitment again");
    channel.publish_signed(&record.commitment).await?;
    Ok((record.salt, signed))
}

/// The record's commitment, if it is a valid commitment of this member for this job and quorum.
fn check_record(
    record: &Record,
    path: &Path,
    me: PublicKey,
    roster: &Roster,
    job: EventId,
) -> Result<SignedCommitment, AgreementError> {
    let invalid = |reason: String| RecordError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let signed = SignedCommitment::from_event(&record.commitment)
        .map_err(|e| invalid(format!("its commitment event: {e}")))?;
    if signed.member() != me {
        return Err(invalid(format!("its commitment is by {}", signed.member())).into());
    }
    if signed.commitment().job != job {
        return Err(invalid(format!(
            "its commitment is for job {}",
            signed.commitment().job
        ))
        .into());
    }
    if signed.commitment().quorum != roster.quorum() {
        return Err(invalid(format!(
            "its commitment is for quorum {}",
            signed.commitment().quorum
        ))
        .into());
    }
    Ok(signed)
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
    let late = late_members(&commitments, &reveals, roster, job);
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

/// The members whose commitments came too late to count: `x` is late when more than half of
/// the other roster members with a reveal for `job` list none of `x`'s commitments (for this job
/// and quorum) as `seen` in their first reveal (earliest `created_at`, then lowest id). One pass
/// over the first reveals: whether `x` is late depends on the others' reveals only, never on
/// who else is late or on the order the events came in.
///
/// The `seen` lists are self-reported, so the rule takes a majority of them: a member that
/// lists nothing (or lies) is one voice against each other member, and evicts nobody unless more
/// than half of the other revealing members agree with it. A member that committed after most of
/// the others had revealed (a copycat that waited for their results) is late.
pub fn late_members(
    commitments: &[SignedCommitment],
    reveals: &[SignedReveal],
    roster: &Roster,
    job: EventId,
) -> BTreeSet<PublicKey> {
    let mut first: BTreeMap<PublicKey, &SignedReveal> = BTreeMap::new();
    for r in reveals {
        if !roster.contains(&r.member()) || r.reveal().job != job {
            continue;
        }
        let key = |r: &SignedReveal| (r.event().created_at, r.id());
        first
            .entry(r.member())
            .and_modify(|kept| {
                if key(r) < key(kept) {
                    *kept = r;
                }
            })
            .or_insert(r);
    }
    let mut committed: BTreeMap<PublicKey, BTreeSet<EventId>> = BTreeMap::new();
    for c in commitments {
        if c.commitment().job == job && c.commitment().quorum == roster.quorum() {
            committed.entry(c.member()).or_default().insert(c.id());
        }
    }
    let none = BTreeSet::new();
    first
        .keys()
        .filter(|x| {
            let mine = committed.get(x).unwrap_or(&none);
            let others = first.iter().filter(|(y, _)| y != x);
            let (voters, omitted) = others.fold((0usize, 0usize), |(voters, omitted), (_, r)| {
                let missed = mine.is_disjoint(&r.reveal().seen);
                (voters + 1, omitted + usize::from(missed))
            });
            2 * omitted > voters
        })
        .copied()
        .collect()
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

#[cfg(test)]
mod tests {
    //! The late rule and the tally over hand-made, signed events.

    use super::*;
    use quorum_proto::blossom::Sha256Hex;

    const JOB: EventId = EventId::from_byte_array([5; 32]);

    fn result(byte: u8) -> BuildResult {
        BuildResult::new().with_file(
            "out/app",
            Sha256Hex::parse(&hex::encode([byte; 32])).unwrap(),
        )
    }

    /// `n` members (sorted by key, so tests can rely on nothing but their indices) and a roster.
    fn members(n: usize, t: u16) -> (Vec<Keys>, Roster) {
        let keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
        let quorum = Keys::generate().public_key();
        let roster = Roster::new(quorum, keys.iter().map(Keys::public_key), t).unwrap();
        (keys, roster)
    }

    struct Committed {
        event: Event,
        salt: Salt,
        result: BuildResult,
    }

    fn commit(keys: &Keys, roster: &Roster, result: BuildResult, at: u64) -> Committed {
        let salt = Salt::random();
        let event = Commitment::new(
            &keys.public_key(),
            JOB,
            roster.quorum(),
            &salt,
            &result,
            Timestamp::from(at + 3600),
        )
        .to_event_builder()
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap();
        Committed {
            event,
            salt,
            result,
        }
    }

    fn reveal(keys: &Keys, mine: &Committed, seen: &[&Committed], at: u64) -> Event {
        let signed = SignedCommitment::from_event(&mine.event).unwrap();
        Reveal::new(
            &signed,
            mine.salt,
            mine.result.clone(),
            Timestamp::from(at + 3600),
        )
        .with_seen(seen.iter().map(|c| c.event.id))
        .to_event_builder()
        .unwrap()
        .custom_created_at(Timestamp::from(at))
        .sign_with_keys(keys)
        .unwrap()
    }

    fn tally(events: &[Event], roster: &Roster) -> Agreement {
        tally_events(events, roster, JOB, None, EventId::all_zeros())
    }

    fn keys_of(keys: &[Keys], idx: &[usize]) -> BTreeSet<PublicKey> {
        idx.iter().map(|i| keys[*i].public_key()).collect()
    }

    /// Every rotation and the reverse of `events` give the same late set and tally.
    fn assert_order_independent(events: &[Event], roster: &Roster) -> Agreement {
        let expected = tally(events, roster);
        let mut orders: Vec<Vec<Event>> = (0..events.len())
            .map(|k| {
                let mut v = events.to_vec();
                v.rotate_left(k);
                v
            })
            .collect();
        orders.push(events.iter().rev().cloned().collect());
        for order in orders {
            let got = tally(&order, roster);
            assert_eq!(got.late, expected.late);
            assert_eq!(got.tally, expected.tally);
        }
        expected
    }

    #[test]
    fn a_member_that_lists_nothing_evicts_nobody() {
        let (k, roster) = members(3, 2);
        let (a, b, liar) = (
            commit(&k[0], &roster, result(1), 100),
            commit(&k[1], &roster, result(1), 100),
            commit(&k[2], &roster, result(9), 100),
        );
        let events = vec![
            a.event.clone(),
            b.event.clone(),
            liar.event.clone(),
            reveal(&k[0], &a, &[&b, &liar], 110),
            reveal(&k[1], &b, &[&a, &liar], 110),
            // Lists none of the others' commitments.
            reveal(&k[2], &liar, &[], 110),
        ];
        let agreement = assert_order_independent(&events, &roster);
        assert!(agreement.late.is_empty(), "{:?}", agreement.late);
        assert_eq!(agreement.tally.agreed, keys_of(&k, &[0, 1]));
        assert!(agreement.tally.is_attestable());
        // Its own differing result is counted, and disagrees.
        assert!(agreement.tally.disagreed.contains_key(&k[2].public_key()));
        // The same liar agreeing with them is simply agreed.
        let same = commit(&k[2], &roster, result(1), 100);
        let events = vec![
            a.event.clone(),
            b.event.clone(),
            same.event.clone(),
            reveal(&k[0], &a, &[&b, &same], 110),
            reveal(&k[1], &b, &[&a, &same], 110),
            reveal(&k[2], &same, &[], 110),
        ];
        let agreement = assert_order_independent(&events, &roster);
        assert!(agreement.late.is_empty());
        assert_eq!(agreement.tally.agreed, keys_of(&k, &[0, 1, 2]));
    }

    #[test]
    fn a_copycat_that_committed_after_the_reveals_is_late() {
        let (k, roster) = members(3, 2);
        let (a, b) = (
            commit(&k[0], &roster, result(1), 100),
            commit(&k[1], &roster, result(1), 100),
        );
        // Commits to the revealed result after both reveals, and lists both.
        let copy = commit(&k[2], &roster, result(1), 120);
        let events = vec![
            a.event.clone(),
            b.event.clone(),
            reveal(&k[0], &a, &[&b], 110),
            reveal(&k[1], &b, &[&a], 110),
            copy.event.clone(),
            reveal(&k[2], &copy, &[&a, &b], 121),
        ];
        let agreement = assert_order_independent(&events, &roster);
        assert_eq!(agreement.late, keys_of(&k, &[2]));
        assert_eq!(agreement.tally.agreed, keys_of(&k, &[0, 1]));
        assert!(agreement.tally.silent.contains(&k[2].public_key()));
    }

    #[test]
    fn late_takes_more_than_half_of_the_other_revealing_members() {
        // Five members: x (index 0) is judged by four others; two omissions are half, not more.
        let (k, roster) = members(5, 3);
        let c: Vec<Committed> = k
            .iter()
            .map(|keys| commit(keys, &roster, result(1), 100))
            .collect();
        let with_omissions = |omitting: usize| -> Vec<Event> {
            let mut events: Vec<Event> = c.iter().map(|c| c.event.clone()).collect();
            for i in 0..5 {
                let seen: Vec<&Committed> = (0..5)
                    .filter(|j| *j != i && !(*j == 0 && (1..=omitting).contains(&i)))
                    .map(|j| &c[j])
                    .collect();
                events.push(reveal(&k[i], &c[i], &seen, 110));
            }
            events
        };
        for (omitting, late) in [(0, false), (1, false), (2, false), (3, true), (4, true)] {
            let agreement = assert_order_independent(&with_omissions(omitting), &roster);
            let expected = if late {
                keys_of(&k, &[0])
            } else {
                BTreeSet::new()
            };
            assert_eq!(agreement.late, expected, "{omitting} of 4 omit x");
            assert_eq!(agreement.tally.agreed.len(), if late { 4 } else { 5 });
        }
    }

    #[test]
    fn only_the_first_reveal_of_each_member_votes_whatever_the_arrival_order() {
        let (k, roster) = members(3, 2);
        let c: Vec<Committed> = k
            .iter()
            .map(|keys| commit(keys, &roster, result(1), 100))
            .collect();
        let mut events: Vec<Event> = c.iter().map(|c| c.event.clone()).collect();
        events.push(reveal(&k[0], &c[0], &[&c[1], &c[2]], 110));
        // Member 1's first reveal omits member 2; a later one (arriving first) lists it.
        let later = reveal(&k[1], &c[1], &[&c[0], &c[2]], 115);
        let first = reveal(&k[1], &c[1], &[&c[0]], 110);
        events.push(later);
        events.push(first);
        // Member 2 is omitted by one of two: not late.
        events.push(reveal(&k[2], &c[2], &[&c[0], &c[1]], 110));
        let agreement = assert_order_independent(&events, &roster);
        assert!(agreement.late.is_empty());
        // Member 0's first reveal omits member 2 too: now two of two do.
        events[3] = reveal(&k[0], &c[0], &[&c[1]], 110);
        let agreement = assert_order_independent(&events, &roster);
        assert_eq!(agreement.late, keys_of(&k, &[2]));
    }

    #[test]
    fn outsiders_and_other_jobs_have_no_vote() {
        let (k, roster) = members(3, 2);
        let c: Vec<Committed> = k
            .iter()
            .map(|keys| commit(keys, &roster, result(1), 100))
            .collect();
        let outsider = Keys::generate();
        let theirs = commit(&outsider, &roster, result(1), 100);
        let mut events: Vec<Event> = c.iter().map(|c| c.event.clone()).collect();
        events.push(reveal(&k[0], &c[0], &[&c[1], &c[2]], 110));
        events.push(reveal(&k[1], &c[1], &[&c[0]], 110));
        events.push(reveal(&k[2], &c[2], &[&c[0], &c[1]], 110));
        // An outsider omitting member 2 would make it two of three.
        events.push(theirs.event.clone());
        events.push(reveal(&outsider, &theirs, &[&c[0], &c[1]], 110));
        let agreement = assert_order_independent(&events, &roster);
        assert!(agreement.late.is_empty(), "{:?}", agreement.late);
        assert!(agreement.tally.outsiders.contains(&outsider.public_key()));
        assert_eq!(agreement.tally.agreed.len(), 3);
    }
}
