//! Naive chains (`mode: naive`): a run of script jobs, each needing only the one before, sent
//! as one request that carries the rest (`quorum_proto::chain`). Each runner, when done,
//! publishes the next step's request itself, pinning its own result; the engine only watches.
//! Every runner in the chain is trusted, so chains carry no secrets and do not fail over.

use std::collections::HashMap;
use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient, JobOutcome};
use quorum_pipeline::{JobSpec, Mode, Plan, PlannedJob};
use quorum_proto::chain::{ChainStep, PARAM_CHAIN, encode};
use quorum_proto::nip90::{JobParam, JobRequest};
use quorum_proto::nostr::{Event, EventId, Filter, Kind, PublicKey};

use crate::{
    Engine, Forward, JobRecord, JobState, PARAM_JOB, Upstream, finish_with_result, first_runner,
    lock, prepare,
};

/// The chain that starts at `head`: followed while the next job is a naive script job that
/// needs exactly the previous one and is its only dependant.
pub(crate) fn members<'a>(plan: &'a Plan, head: &'a PlannedJob) -> Vec<&'a PlannedJob> {
    plan.chain_from(head, |next| {
        matches!(next.mode, Mode::Naive) && matches!(next.spec, JobSpec::Run { .. })
    })
}

/// Where an interrupted naive chain picks up after a router restart ([`crate::recover`]).
#[derive(Debug, Clone)]
pub enum Resume {
    /// The step's request is on the relays: follow it to its answer instead of sending it again.
    Follow(Event),
    /// The step before finished: its runner hands this one on; wait for that request.
    AwaitFrom(PublicKey),
}

/// A naive chain as the head request we signed recorded it: each step's job id and runner,
/// head first.
pub(crate) struct Recorded {
    steps: Vec<(String, PublicKey)>,
}

impl Recorded {
    /// The chain `request` (ours, `event`) carries; `None` for a request without one.
    pub(crate) fn of(event: &Event, request: JobRequest) -> Option<Self> {
        let chain: Vec<ChainStep> = serde_json::from_str(request.param_value(PARAM_CHAIN)?)
            .inspect_err(|e| tracing::warn!(request = %event.id, "unreadable chain: {e}"))
            .ok()?;
        let mut steps = vec![(
            request.param_value(PARAM_JOB)?.to_string(),
            *request.providers.first()?,
        )];
        for step in chain {
            let job = step
                .params
                .iter()
                .find(|p| p.first().map(String::as_str) == Some(PARAM_JOB))?
                .get(1)?
                .clone();
            let runner = PublicKey::from_hex(step.provider.as_deref()?).ok()?;
            steps.push((job, runner));
        }
        Some(Recorded { steps })
    }

    /// The runner of step `job`, if `author` is the runner of the step before it (the only one
    /// who may hand it on).
    pub(crate) fn runner_after(&self, job: &str, author: &PublicKey) -> Option<PublicKey> {
        self.steps
            .windows(2)
            .find(|pair| pair[1].0 == job && pair[0].1 == *author)
            .map(|pair| pair[1].1)
    }

    /// The first step that did not succeed, and how to pick it up: follow its request if it
    /// is on the relays, else wait for the runner before it to hand it on.
    pub(crate) fn resume(
        &self,
        done: &HashMap<String, JobRecord>,
        requested: &HashMap<String, &Event>,
    ) -> Option<(String, Resume)> {
        let index = self
            .steps
            .iter()
            .position(|(job, _)| !done.contains_key(job))?;
        let job = self.steps[index].0.clone();
        match requested.get(&job) {
            Some(event) => Some((job, Resume::Follow((*event).clone()))),
            None if index > 0 => Some((job, Resume::AwaitFrom(self.steps[index - 1].1))),
            None => None,
        }
    }
}

/// Waits for the request of chain step `job`, handed on by `previous` under `root`.
async fn handed_on(
    client: &JobClient,
    kind: Kind,
    previous: PublicKey,
    root: EventId,
    job: &str,
) -> Result<Event, ClientError> {
    client
        .await_request(
            Filter::new().kind(kind).author(previous).event(root),
            |event| {
                JobRequest::from_event(event).is_ok_and(|r| r.param_value(PARAM_JOB) == Some(job))
            },
            Duration::from_secs(120),
        )
        .await
}

/// Runs the chain `members` (or, after a restart, picks it up at `resume`).
pub(crate) async fn run_chain(
    engine: &Engine<'_, '_>,
    members: &[&PlannedJob],
    upstream: Upstream,
    mut resume: Option<Resume>,
) -> Vec<JobRecord> {
    let Engine {
        client,
        context,
        config,
        reporter,
        ..
    } = *engine;
    let mut records: Vec<JobRecord> = members.iter().map(|job| JobRecord::new(job)).collect();
    let fail_all = |records: &mut Vec<JobRecord>, reason: String| {
        for record in records.iter_mut() {
            record.state = JobState::Failed {
                reason: reason.clone(),
            };
        }
    };
    if config.runners.is_empty() {
        fail_all(&mut records, "a naive chain needs known runners".into());
        return records;
    }
    // Every step's request, addressed to its runner, with its job id.
    let mut requests = Vec::with_capacity(members.len());
    for job in members {
        if !matches!(job.spec, JobSpec::Run { .. }) {
            fail_all(
                &mut records,
                format!("naive chains run scripts; {} is not one", job.id),
            );
            return records;
        }
        let prepared = match prepare(job, context, config, &upstream) {
            Ok(prepared) if prepared.encrypt => {
                fail_all(&mut records, "naive chains cannot carry secrets".into());
                return records;
            }
            Ok(prepared) => prepared,
            Err(reason) => {
                fail_all(&mut records, reason);
                return records;
            }
        };
        let runner = config.runners[first_runner(&job.id, config.runners.len())];
        let mut request = prepared.request;
        request.providers = vec![runner];
        request
            .params
            .push(JobParam::new(PARAM_JOB, job.id.clone()));
        requests.push((request, prepared.timeout));
    }
    let steps: Vec<ChainStep> = requests[1..]
        .iter()
        .map(|(r, _)| ChainStep::of(r))
        .collect();
    let (mut head, head_timeout) = requests[0].clone();
    if !steps.is_empty() {
        head.params.push(JobParam::new(PARAM_CHAIN, encode(&steps)));
    }
    head.parent = config.parent;

    // The head goes out from us; every later step comes from the runner before it.
    let mut root = config.parent;
    for (index, job) in members.iter().enumerate() {
        lock(reporter).job_started(job);
        let mut forward = Forward {
            job: &job.id,
            reporter,
            last_tail: String::new(),
        };
        let kind = requests[index].0.kind;
        let outcome = match (index, resume.take()) {
            (0, Some(Resume::Follow(event))) => {
                client.follow(&event, head_timeout, &mut forward).await
            }
            (0, Some(Resume::AwaitFrom(previous))) => match root {
                Some(root) => match handed_on(client, kind, previous, root, &job.id).await {
                    Ok(event) => client.follow(&event, head_timeout, &mut forward).await,
                    Err(err) => Err(err),
                },
                None => break,
            },
            (0, None) => client.run(&head, false, head_timeout, &mut forward).await,
            _ => {
                // The runner that answered the step before hands this one on.
                let previous = records[index - 1]
                    .provider
                    .as_deref()
                    .and_then(|p| PublicKey::from_hex(p).ok())
                    .unwrap_or(requests[index - 1].0.providers[0]);
                let Some(root_id) = root else {
                    break;
                };
                match handed_on(client, kind, previous, root_id, &job.id).await {
                    Ok(event) => client.follow(&event, requests[index].1, &mut forward).await,
                    Err(err) => Err(err),
                }
            }
        };
        let record = &mut records[index];
        record.tried.push(requests[index].0.providers[0].to_hex());
        match outcome {
            Ok(JobOutcome::Result {
                request,
                event,
                provider,
                content,
            }) => {
                root = root.or(Some(request.id));
                record.request = Some(request.id.to_hex());
                record.result = Some(event.id.to_hex());
                record.provider = Some(provider.to_hex());
                let done = finish_with_result(record.clone(), true, content);
                *record = done;
            }
            Ok(JobOutcome::Error { feedback, .. }) => {
                record.state = JobState::Failed {
                    reason: feedback.extra.unwrap_or_else(|| "no reason given".into()),
                };
            }
            Err(err) => {
                record.state = JobState::Failed {
                    reason: format!("the chain broke here: {err}"),
                };
            }
        }
        if !records[index].succeeded() {
            let stopped = members[index].id.clone();
            for later in records.iter_mut().skip(index + 1) {
                later.state = JobState::Skipped {
                    reason: format!("the naive chain stopped at {stopped}"),
                };
            }
            break;
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use quorum_proto::nostr::Keys;

    use super::*;

    fn done(job: &str) -> (String, JobRecord) {
        let plan = quorum_pipeline::parse(
            ".quorum/pipeline.yml",
            &format!("on: [push]\njobs:\n  {job}:\n    run: true\n"),
        )
        .unwrap();
        let mut record = JobRecord::new(&plan.jobs[0]);
        record.state = JobState::Succeeded;
        (job.to_string(), record)
    }

    #[test]
    fn a_recorded_chain_resumes_at_its_first_unfinished_step() {
        let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
        let step = |job: &str, runner: &Keys| {
            JobRequest::new(Kind::from_u16(5702))
                .unwrap()
                .param(PARAM_JOB, job)
                .provider(runner.public_key())
        };
        let head = step("first", &a).param(
            PARAM_CHAIN,
            encode(&[
                ChainStep::of(&step("second", &b)),
                ChainStep::of(&step("third", &c)),
            ]),
        );
        let head_event = head.to_event_builder().sign_with_keys(&a).unwrap();
        let chain = Recorded::of(&head_event, head).unwrap();

        // Only the runner of the step before may hand a step on.
        assert_eq!(
            chain.runner_after("second", &a.public_key()),
            Some(b.public_key())
        );
        assert_eq!(chain.runner_after("second", &c.public_key()), None);
        assert_eq!(chain.runner_after("first", &a.public_key()), None);

        // In flight: follow the request that is there.
        let second_event = step("second", &b).to_event_builder().sign_with_keys(&a);
        let second_event = second_event.unwrap();
        let finished: HashMap<String, JobRecord> = HashMap::from([done("first")]);
        let requested = HashMap::from([("second".to_string(), &second_event)]);
        assert!(matches!(
            chain.resume(&finished, &requested),
            Some((job, Resume::Follow(event))) if job == "second" && event.id == second_event.id
        ));
        // Finished but not yet handed on: wait for the runner before.
        let finished = HashMap::from([done("first"), done("second")]);
        assert!(matches!(
            chain.resume(&finished, &requested),
            Some((job, Resume::AwaitFrom(runner))) if job == "third" && runner == b.public_key()
        ));
        // All done: nothing to pick up.
        let finished = HashMap::from([done("first"), done("second"), done("third")]);
        assert!(chain.resume(&finished, &requested).is_none());
    }
}
