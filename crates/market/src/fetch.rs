//! Gathering what [`crate::select::Judge`] reads from the relays: a handful of queries whose
//! answers go into one event list ([`Snapshot`]). The only I/O of the crate.

use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient};
use quorum_pipeline::select::SelectPolicy;
use quorum_proto::agreement::{QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::kinds::{JOB_FEEDBACK, result_kind_for};
use quorum_proto::mandate::MANDATE;
use quorum_proto::nip85::{PROVIDER_LIST, assertion_filter, rank_providers};
use quorum_proto::nip89::HANDLER_INFORMATION;
use quorum_proto::nostr::{Alphabet, Event, EventId, Filter, Kind, PublicKey, SingleLetterTag};
use quorum_proto::operator::{announcement_filter, claimed_operators, list_filter};
use quorum_proto::trust::{FOLLOW_LIST, follows, trust_list_filter};

/// Most keys asked for in one follow-graph hop: beyond this the graph says little about trust
/// and the query would be refused by many relays.
const MAX_FOLLOW_FRONTIER: usize = 500;

/// Why the market could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read the market from the relays: {0}")]
    Relay(#[from] ClientError),
}

/// Everything fetched for one judgement, verified (the client drops events whose id or
/// signature do not verify).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub events: Vec<Event>,
    /// The DVMs considered: the candidates given, or every DVM announcing the kind.
    pub candidates: Vec<PublicKey>,
}

/// What to gather.
pub struct Query<'a> {
    /// The request kind the DVMs serve (for discovery, and for the record).
    pub kind: Kind,
    /// The DVMs to consider; `None`: every DVM announcing `kind`.
    pub candidates: Option<&'a [PublicKey]>,
    pub policy: &'a SelectPolicy,
    /// Whose trust counts when the policy names no `trusted.by`.
    pub maintainer: Option<PublicKey>,
    /// Fetch the job record even if the policy has no `record` rule (for `quorum market`).
    pub with_record: bool,
    pub timeout: Duration,
}

/// Reads the market for `query` from `client`'s relays.
pub async fn gather(client: &JobClient, query: &Query<'_>) -> Result<Snapshot, FetchError> {
    let timeout = query.timeout;
    let mut events = match query.candidates {
        Some(dvms) => {
            client
                .fetch(announcement_filter(dvms.iter().copied()), timeout)
                .await?
        }
        None => {
            let filter = Filter::new().kind(HANDLER_INFORMATION).custom_tag(
                SingleLetterTag::lowercase(Alphabet::K),
                query.kind.as_u16().to_string(),
            );
            client.fetch(filter, timeout).await?
        }
    };
    let candidates: Vec<PublicKey> = match query.candidates {
        Some(dvms) => dvms.to_vec(),
        None => {
            let mut found: Vec<PublicKey> = events.iter().map(|e| e.pubkey).collect();
            found.sort();
            found.dedup();
            found
        }
    };
    let operators = claimed_operators(&candidates, &events);
    if !operators.is_empty() {
        let lists = client
            .fetch(list_filter(operators.iter().copied()), timeout)
            .await?;
        events.extend(lists);
    }
    let policy = query.policy;
    if let Some(rule) = &policy.trusted {
        let by = rule
            .by
            .as_deref()
            .and_then(|hex| PublicKey::from_hex(hex).ok())
            .or(query.maintainer);
        if let Some(by) = by {
            if let Some(list) = &rule.list {
                events.extend(client.fetch(trust_list_filter(by, list), timeout).await?);
            }
            // The follow graph, hop by hop.
            let mut frontier = vec![by];
            let mut seen = std::collections::BTreeSet::from([by]);
            for _ in 0..rule.follows.unwrap_or(0) {
                if frontier.is_empty() {
                    break;
                }
                frontier.truncate(MAX_FOLLOW_FRONTIER);
                let lists = client
                    .fetch(
                        Filter::new().kind(FOLLOW_LIST).authors(frontier.clone()),
                        timeout,
                    )
                    .await?;
                let mut next = Vec::new();
                for key in &frontier {
                    for followed in follows(key, &lists) {
                        if seen.insert(followed) {
                            next.push(followed);
                        }
                    }
                }
                events.extend(lists);
                frontier = next;
            }
            if rule.rank.is_some() {
                let declared = client
                    .fetch(Filter::new().kind(PROVIDER_LIST).author(by), timeout)
                    .await?;
                let providers = rank_providers(&by, &declared);
                events.extend(declared);
                if !providers.is_empty() {
                    let subjects = candidates.iter().chain(operators.iter()).copied();
                    events.extend(
                        client
                            .fetch(assertion_filter(providers, subjects), timeout)
                            .await?,
                    );
                }
            }
        }
    }
    let recorder = policy
        .record
        .as_ref()
        .and_then(|r| r.recorder.as_deref())
        .and_then(|hex| PublicKey::from_hex(hex).ok());
    if let Some(recorder) = recorder {
        events.extend(
            client
                .fetch(
                    assertion_filter([recorder], candidates.iter().copied()),
                    timeout,
                )
                .await?,
        );
    } else if (policy.record.is_some() || query.with_record) && !candidates.is_empty() {
        let window = policy
            .record
            .as_ref()
            .map(|r| r.jobs)
            .unwrap_or(quorum_pipeline::select::DEFAULT_RECORD_JOBS);
        events.extend(record(client, query.kind, &candidates, window, timeout).await?);
    }
    Ok(Snapshot { events, candidates })
}

/// The job record of `dvms` for request kind `kind`: their last requests (about `window` each),
/// their feedback and results for them, and the attestations and mandates of those that were
/// quorum jobs.
pub async fn record(
    client: &JobClient,
    kind: Kind,
    dvms: &[PublicKey],
    window: u32,
    timeout: Duration,
) -> Result<Vec<Event>, FetchError> {
    let p = SingleLetterTag::lowercase(Alphabet::P);
    let mut events = Vec::new();
    let mut ids: Vec<EventId> = Vec::new();
    for dvm in dvms {
        // One query per DVM so that a busy DVM does not push the others out of the limit.
        let requests = client
            .fetch(
                Filter::new()
                    .kind(kind)
                    .custom_tag(p, dvm.to_hex())
                    .limit(window as usize * 2),
                timeout,
            )
            .await?;
        ids.extend(requests.iter().map(|e| e.id));
        events.extend(requests);
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(events);
    }
    let mut answer_kinds = vec![JOB_FEEDBACK];
    answer_kinds.extend(result_kind_for(kind));
    let answers = client
        .fetch(
            Filter::new()
                .kinds(answer_kinds)
                .authors(dvms.iter().copied())
                .events(ids.clone()),
            timeout,
        )
        .await?;
    events.extend(answers);
    let attestations = client
        .fetch(Filter::new().kind(QUORUM_ATTESTATION).events(ids), timeout)
        .await?;
    let mandates: Vec<EventId> = attestations
        .iter()
        .filter_map(|e| QuorumAttestation::from_event(e).ok())
        .map(|a| a.mandate)
        .collect();
    events.extend(attestations);
    if !mandates.is_empty() {
        events.extend(
            client
                .fetch(Filter::new().kind(MANDATE).ids(mandates), timeout)
                .await?,
        );
    }
    Ok(events)
}
