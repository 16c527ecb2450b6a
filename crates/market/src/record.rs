//! A DVM's observed figures from the public record (docs/protocol.md §17.2): the job requests
//! addressed to it (`p`), its feedback (7000) and results (request kind + 1000), and the
//! quorum attestations (8708) of the quorum jobs it was a member of.
//!
//! The figures come from a [`RecordSource`]: either computed here from the events
//! ([`Observed`]), or read from a record keeper's NIP-85 assertions ([`Recorded`]), which is
//! what routers and UIs that do not want to fetch every job use.
//!
//! What counts, over the DVM's last `window` requests (newest first by `created_at`):
//! - a request younger than [`ANSWER_WITHIN`] that has no answer yet is not counted: it may
//!   still be answered;
//! - *uptime*: the DVM answered (any feedback or a result) within [`ANSWER_WITHIN`];
//! - *success*: the DVM published a result for it;
//! - *agreement*: among the counted requests that a quorum attested (an 8708 signed by the
//!   quorum key of the mandate it names, which lists the DVM as a member), those whose
//!   attestation lists the DVM as agreed;
//! - *median duration*: from request to result, over the results.
//!
//! Anyone can publish requests addressed to a DVM, so a stranger can lower its uptime with
//! requests it has every reason to ignore (expired, malformed). Policies should say how much
//! of a record they need, and a record keeper is only as good as the requests it counts.

use std::collections::{BTreeMap, BTreeSet};

use quorum_proto::agreement::{QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::kinds::{JOB_FEEDBACK, is_job_request, result_kind_for};
use quorum_proto::mandate::{MANDATE, Mandate};
use quorum_proto::nip85::{Assertion, Figures, median, newest_assertions};
use quorum_proto::nostr::{Event, EventId, Kind, PublicKey, Timestamp};

/// How long a DVM has to answer a request (with anything, even `processing`) for it to count
/// as up.
pub const ANSWER_WITHIN: u64 = 300;

/// Where a DVM's figures come from.
pub trait RecordSource {
    /// `dvm`'s figures over its last `window` jobs; `None` when the source knows nothing of it.
    fn figures(&self, dvm: &PublicKey, window: u32) -> Option<Figures>;
    /// Says where the figures come from, for reports ("the relays", "recorder npub…").
    fn describe(&self) -> String;
}

/// Figures computed from the events themselves.
pub struct Observed<'a> {
    events: &'a [Event],
    kinds: BTreeSet<u16>,
    now: Timestamp,
}

impl<'a> Observed<'a> {
    /// Over the requests of `kinds` in `events` (all request kinds when empty), as of `now`.
    pub fn new(events: &'a [Event], kinds: &[Kind], now: Timestamp) -> Self {
        Observed {
            events,
            kinds: kinds.iter().map(|k| k.as_u16()).collect(),
            now,
        }
    }

    fn is_counted_kind(&self, kind: Kind) -> bool {
        is_job_request(kind) && (self.kinds.is_empty() || self.kinds.contains(&kind.as_u16()))
    }
}

fn tagged<'e>(event: &'e Event, name: &'e str) -> impl Iterator<Item = &'e str> + 'e {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(move |t| t[0] == name)
        .filter_map(|t| t.get(1).map(String::as_str))
}

fn names(event: &Event, name: &str, value: &str) -> bool {
    tagged(event, name).any(|v| v == value)
}

impl RecordSource for Observed<'_> {
    fn figures(&self, dvm: &PublicKey, window: u32) -> Option<Figures> {
        let dvm_hex = dvm.to_hex();
        let mut requests: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| self.is_counted_kind(e.kind) && names(e, "p", &dvm_hex))
            .collect();
        requests.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
        requests.dedup_by_key(|e| e.id);
        // The DVM's answers, by the request they answer.
        let mut first_answer: BTreeMap<EventId, Timestamp> = BTreeMap::new();
        let mut result_at: BTreeMap<EventId, Timestamp> = BTreeMap::new();
        for event in self.events.iter().filter(|e| e.pubkey == *dvm) {
            let is_result = quorum_proto::kinds::is_job_result(event.kind);
            if event.kind != JOB_FEEDBACK && !is_result {
                continue;
            }
            for id in tagged(event, "e").filter_map(|hex| EventId::from_hex(hex).ok()) {
                let slot = first_answer.entry(id).or_insert(event.created_at);
                *slot = (*slot).min(event.created_at);
                if is_result {
                    let slot = result_at.entry(id).or_insert(event.created_at);
                    *slot = (*slot).min(event.created_at);
                }
            }
        }
        let attested = self.attested_for(dvm);
        let mut figures = Figures::default();
        let (mut up, mut succeeded, mut agreed) = (0u32, 0u32, 0u32);
        let mut durations = Vec::new();
        for request in requests {
            if figures.jobs >= window {
                break;
            }
            let answered = first_answer.get(&request.id);
            let age = self
                .now
                .as_secs()
                .saturating_sub(request.created_at.as_secs());
            if answered.is_none() && age < ANSWER_WITHIN {
                continue;
            }
            // A result must answer the request's own kind.
            let result = result_at
                .get(&request.id)
                .filter(|_| result_kind_for(request.kind).is_some());
            figures.jobs += 1;
            if answered.is_some_and(|at| {
                at.as_secs().saturating_sub(request.created_at.as_secs()) <= ANSWER_WITHIN
            }) {
                up += 1;
            }
            if let Some(at) = result {
                succeeded += 1;
                durations.push(at.as_secs().saturating_sub(request.created_at.as_secs()));
            }
            if let Some(agreeing) = attested.get(&request.id) {
                figures.agreement_jobs += 1;
                if *agreeing {
                    agreed += 1;
                }
            }
        }
        if figures.jobs == 0 {
            return None;
        }
        let percent = |n: u32, of: u32| (u64::from(n) * 100 / u64::from(of.max(1))) as u32;
        figures.uptime = percent(up, figures.jobs);
        figures.success = percent(succeeded, figures.jobs);
        figures.agreement =
            (figures.agreement_jobs > 0).then(|| percent(agreed, figures.agreement_jobs));
        figures.median_secs = median(&mut durations);
        Some(figures)
    }

    fn describe(&self) -> String {
        "the public record on the relays".into()
    }
}

impl Observed<'_> {
    /// For each request a valid quorum attestation answers and `dvm` was a member of: whether
    /// `dvm` is among those who agreed. An attestation counts only when the quorum key of the
    /// mandate it names signed it and that mandate names `dvm` as a member.
    fn attested_for(&self, dvm: &PublicKey) -> BTreeMap<EventId, bool> {
        let mandates: BTreeMap<EventId, Mandate> = self
            .events
            .iter()
            .filter(|e| e.kind == MANDATE)
            .filter_map(|e| Mandate::from_event(e).ok().map(|m| (e.id, m)))
            .collect();
        let mut attested = BTreeMap::new();
        for event in self.events.iter().filter(|e| e.kind == QUORUM_ATTESTATION) {
            let Ok(attestation) = QuorumAttestation::from_event(event) else {
                continue;
            };
            let Some(mandate) = mandates.get(&attestation.mandate) else {
                continue;
            };
            let member = mandate.members.iter().any(|m| m.pubkey == *dvm);
            if mandate.quorum == Some(event.pubkey) && member {
                let agreed = attestation.agreed.contains(dvm);
                // Two attestations of one job (should not happen): the DVM agreed if in either.
                let slot = attested.entry(attestation.job).or_insert(false);
                *slot |= agreed;
            }
        }
        attested
    }
}

/// Figures read from a record keeper's assertions.
pub struct Recorded {
    recorder: PublicKey,
    assertions: BTreeMap<PublicKey, Assertion>,
}

impl Recorded {
    /// `recorder`'s newest valid assertions in `events`.
    pub fn new(recorder: PublicKey, events: &[Event]) -> Self {
        Recorded {
            recorder,
            assertions: newest_assertions(&recorder, events),
        }
    }
}

impl RecordSource for Recorded {
    /// The keeper's figures as it published them: its window, not ours (an assertion says
    /// over how many jobs it is, in `jobs`).
    fn figures(&self, dvm: &PublicKey, _window: u32) -> Option<Figures> {
        self.assertions.get(dvm)?.figures.clone()
    }

    fn describe(&self) -> String {
        format!("the assertions of record keeper {}", self.recorder.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobRequest, JobResult};
    use quorum_proto::nostr::{EventBuilder, Keys};

    use super::*;

    const T0: u64 = 1_800_000_000;

    fn request(customer: &Keys, dvm: &PublicKey, at: u64) -> Event {
        let mut request = JobRequest::new(Kind::from_u16(5702)).unwrap();
        request.providers = vec![*dvm];
        request
            .to_event_builder()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(customer)
            .unwrap()
    }

    fn answer(dvm: &Keys, builder: EventBuilder, at: u64) -> Event {
        builder
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(dvm)
            .unwrap()
    }

    #[test]
    fn figures_count_results_answers_and_durations_over_the_window() {
        let customer = Keys::generate();
        let dvm = Keys::generate();
        let key = dvm.public_key();
        let ok1 = request(&customer, &key, T0);
        let ok2 = request(&customer, &key, T0 + 100);
        let failed = request(&customer, &key, T0 + 200);
        let silent = request(&customer, &key, T0 + 300);
        let pending = request(&customer, &key, T0 + 10_000);
        let other = request(&customer, &Keys::generate().public_key(), T0);
        let result = |req: &Event| {
            JobResult::for_request(req, "ok")
                .unwrap()
                .to_event_builder(dvm.secret_key())
                .unwrap()
        };
        let events = vec![
            answer(&dvm, result(&ok1), T0 + 10),
            answer(&dvm, result(&ok2), T0 + 130),
            answer(
                &dvm,
                JobFeedback::new(FeedbackStatus::Error, &failed)
                    .to_event_builder(dvm.secret_key())
                    .unwrap(),
                T0 + 201,
            ),
            ok1,
            ok2,
            failed,
            silent,
            pending,
            other,
        ];
        let now = Timestamp::from(T0 + 10_010);
        let observed = Observed::new(&events, &[Kind::from_u16(5702)], now);
        let figures = observed.figures(&key, 20).unwrap();
        // The pending request (10 s old, unanswered) is not counted yet.
        assert_eq!(figures.jobs, 4);
        assert_eq!(figures.success, 50);
        assert_eq!(figures.uptime, 75);
        assert_eq!(figures.median_secs, Some(10));
        assert_eq!(figures.agreement, None);
        // The window keeps the newest.
        let last_two = observed.figures(&key, 2).unwrap();
        assert_eq!((last_two.jobs, last_two.success), (2, 0));
        assert!(
            observed
                .figures(&Keys::generate().public_key(), 20)
                .is_none()
        );
    }
}
