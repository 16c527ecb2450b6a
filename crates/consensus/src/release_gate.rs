//! Approval before release: a quorum that was asked for a release binding (8700) of a job
//! whose release depends on approval gates signs the binding only after every gate passed
//! (docs/protocol.md §12, §15.9).
//!
//! The attestation (8708) is signed as soon as the members agree; the binding waits. Each
//! agreeing member then looks, on its own, for each gate's approval request (8701) from the
//! job's requester for this run, commit and gate, checks that it shows the agreed files (when
//! the gate shows this job) and asks for at least the gate's `required`, and tallies the
//! maintainers' verdicts (8702/8703) over the repository's maintainer set
//! (`quorum_proto::approval::ApprovalTally`). Only when every gate is approved does it derive
//! the binding, naming those requests, and sign it with the other agreeing members in a second
//! FROST session. A rejected or expired gate ends the wait: nothing is signed.

use std::collections::BTreeSet;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::agreement::BuildResult;
use quorum_proto::approval::{
    APPROVAL, APPROVAL_REQUEST, ApprovalRequest, ApprovalTally, GateStatus, REJECTION,
};
use quorum_proto::nip34::maintainer_set;
use quorum_proto::quorum_job::{ReleaseParams, release_binding_after};
use quorum_threshold::KeyShare;

use crate::channel::{self, Channel, ChannelError};
use crate::signing::{self, SigningConfig, SigningError};

/// One approval gate of the pipeline, as the member read it from the plan at the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The approval job's id.
    pub job: String,
    /// How many maintainers must approve.
    pub required: u32,
    /// The keys the pipeline asks (`from`); empty: every maintainer.
    pub from: Vec<PublicKey>,
    /// The jobs whose artifacts the gate shows.
    pub show: Vec<String>,
}

/// A release binding waiting for its gates: what the member agreed on and signed already.
#[derive(Debug, Clone)]
pub struct PendingRelease {
    /// The quorum job request (its author is the one whose approval requests count).
    pub request: Event,
    pub release: ReleaseParams,
    pub commit: String,
    /// The agreed files.
    pub files: BuildResult,
    /// The quorum attestation, signed.
    pub attestation: Event,
    /// The members that agreed (who may sign).
    pub signers: Vec<PublicKey>,
    /// The repository's announcement the member admitted (its maintainer set counts).
    pub announcement: Event,
    /// Every gate the release depends on; their ids must be `release.gates`.
    pub gates: Vec<Gate>,
}

/// Why no binding was signed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseGateError {
    #[error("the plan's approval gates ({plan}) are not the ones the request names ({request})")]
    GatesDiffer { plan: String, request: String },
    #[error("approval gate {gate}: {reason}")]
    Refused { gate: String, reason: String },
    #[error("approval gate {gate}: no decision within {waited:?}")]
    TimedOut { gate: String, waited: Duration },
    #[error("signing the release binding failed: {0}")]
    Signing(String),
    #[error("release binding: {0}")]
    Binding(String),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// How often a waiting member looks for verdicts: soon at first (a maintainer at the screen
/// answers in seconds), then less often (one who is away may take hours).
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(5);

/// Waits (at most `wait`) until every gate of `pending` passed, then signs the binding with
/// the other agreeing members over `relays`; returns the signed binding.
pub async fn sign_after_approval(
    relays: &[RelayUrl],
    keys: &Keys,
    share: &KeyShare,
    pending: &PendingRelease,
    signing: &SigningConfig,
    wait: Duration,
) -> Result<Event, ReleaseGateError> {
    let mut plan: Vec<&str> = pending.gates.iter().map(|g| g.job.as_str()).collect();
    plan.sort_unstable();
    if plan != pending.release.gates {
        return Err(ReleaseGateError::GatesDiffer {
            plan: plan.join(", "),
            request: pending.release.gates.join(", "),
        });
    }
    let client = channel::connect(relays, None).await?;
    let approved = wait_for_gates(&client, pending, wait).await;
    client.shutdown().await;
    let approvals = approved?;
    let refs: Vec<&Event> = approvals.iter().collect();
    let attestation = UnsignedEvent::new(
        pending.attestation.pubkey,
        pending.attestation.created_at,
        pending.attestation.kind,
        pending.attestation.tags.clone(),
        pending.attestation.content.clone(),
    );
    let binding = release_binding_after(
        &pending.release,
        &pending.commit,
        &pending.files,
        &attestation,
        &refs,
    )
    .map_err(|e| ReleaseGateError::Binding(e.to_string()))?;
    let me = keys.public_key();
    let since = Timestamp::now() - 600u64;
    let channel = Channel::open(relays, keys.clone(), vec![signing::filter(&me, since)]).await?;
    let events = vec![binding];
    let session = crate::member::session_id(&pending.request.id, &events);
    let signed =
        signing::sign_together(&channel, share, &pending.signers, session, events, signing).await;
    channel.close().await;
    match signed {
        Ok(mut signed) => Ok(signed.events.remove(0)),
        Err(SigningError::Channel(e)) => Err(e.into()),
        Err(e) => Err(ReleaseGateError::Signing(e.to_string())),
    }
}

/// The approved request of each gate, in gate order, once all passed.
async fn wait_for_gates(
    client: &Client,
    pending: &PendingRelease,
    wait: Duration,
) -> Result<Vec<Event>, ReleaseGateError> {
    let repo = &pending.release.repo;
    let maintainers = maintainer_set(
        &repo.owner,
        &repo.identifier,
        std::slice::from_ref(&pending.announcement),
    );
    let started = tokio::time::Instant::now();
    let mut poll = POLL_FIRST;
    let requests_filter = Filter::new()
        .kind(APPROVAL_REQUEST)
        .author(pending.request.pubkey)
        .custom_tag(SingleLetterTag::lowercase(Alphabet::A), repo.to_string());
    loop {
        let requests =
            crate::channel::fetch(client, requests_filter.clone(), Duration::from_secs(5))
                .await
                .map(|events| events.to_vec())
                .unwrap_or_default();
        let mut approved = Vec::new();
        let mut pending_gate = None;
        for gate in &pending.gates {
            let candidates: Vec<&Event> = requests
                .iter()
                .filter(|event| asks_for(event, pending, gate))
                .collect();
            let verdicts = if candidates.is_empty() {
                Vec::new()
            } else {
                crate::channel::fetch(
                    client,
                    Filter::new()
                        .kinds([APPROVAL, REJECTION])
                        .events(candidates.iter().map(|e| e.id)),
                    Duration::from_secs(5),
                )
                .await
                .map(|events| events.to_vec())
                .unwrap_or_default()
            };
            let electorate: Vec<PublicKey> = maintainers
                .iter()
                .copied()
                .filter(|key| gate.from.is_empty() || gate.from.contains(key))
                .collect();
            let mut outcome = Outcome::Missing;
            let mut ordered = candidates.clone();
            ordered.sort_by_key(|e| (e.created_at, e.id));
            for candidate in ordered {
                let mine: Vec<Event> = verdicts
                    .iter()
                    .filter(|v| v.tags.event_ids().any(|id| *id == candidate.id))
                    .cloned()
                    .collect();
                let Ok(tally) =
                    ApprovalTally::evaluate(candidate, &mine, &electorate, Timestamp::now())
                else {
                    continue;
                };
                match tally.status() {
                    GateStatus::Approved => {
                        outcome = Outcome::Approved(candidate.clone());
                        break;
                    }
                    GateStatus::Pending => outcome = Outcome::Pending,
                    GateStatus::Rejected if outcome == Outcome::Missing => {
                        outcome = Outcome::Closed("rejected".into())
                    }
                    GateStatus::Expired if outcome == Outcome::Missing => {
                        outcome = Outcome::Closed("expired".into())
                    }
                    _ => {}
                }
            }
            match outcome {
                Outcome::Approved(request) => approved.push(request),
                Outcome::Closed(reason) => {
                    return Err(ReleaseGateError::Refused {
                        gate: gate.job.clone(),
                        reason: format!("the maintainers' decision: {reason}; not signing"),
                    });
                }
                Outcome::Missing | Outcome::Pending => {
                    pending_gate.get_or_insert(gate.job.clone());
                }
            }
        }
        match pending_gate {
            None => return Ok(approved),
            Some(gate) if started.elapsed() >= wait => {
                return Err(ReleaseGateError::TimedOut { gate, waited: wait });
            }
            Some(_) => {
                tokio::time::sleep(poll).await;
                poll = (poll * 3 / 2).min(POLL_MAX);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Missing,
    Pending,
    Approved(Event),
    Closed(String),
}

/// Whether `event` is the requester's approval request for `gate` of this run, showing the
/// agreed files when the gate shows this job, and asking for at least the gate's `required`.
fn asks_for(event: &Event, pending: &PendingRelease, gate: &Gate) -> bool {
    if event.pubkey != pending.request.pubkey || event.verify().is_err() {
        return false;
    }
    let Ok(request) = ApprovalRequest::from_event(event) else {
        return false;
    };
    if request.repo != pending.release.repo
        || request.run != pending.release.run
        || request.commit != pending.commit
        || request.job.as_deref() != Some(gate.job.as_str())
        || request.required < gate.required
    {
        return false;
    }
    if gate.show.contains(&pending.release.job) {
        let shown: BTreeSet<(String, String)> = request
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.sha256.to_hex()))
            .collect();
        return pending.files.files.iter().all(|(name, sha)| {
            shown.contains(&(format!("{}/{name}", pending.release.job), sha.to_hex()))
        });
    }
    true
}
