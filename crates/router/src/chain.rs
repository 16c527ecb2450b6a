//! Naive chains (`mode: naive`): a run of script jobs, each needing only the one before, sent
//! as one request that carries the rest (`quorum_proto::chain`). Each runner, when done,
//! publishes the next step's request itself, pinning its own result; the engine only watches.
//! Every runner in the chain is trusted, so chains carry no secrets and do not fail over.

use std::sync::Mutex;
use std::time::Duration;

use quorum_dvm::client::{JobClient, JobOutcome};
use quorum_pipeline::{JobSpec, Mode, Plan, PlannedJob};
use quorum_proto::chain::{ChainStep, PARAM_CHAIN, encode};
use quorum_proto::nip90::{JobParam, JobRequest};
use quorum_proto::nostr::{Filter, PublicKey};

use crate::{
    EngineConfig, Forward, JobRecord, JobState, PARAM_JOB, RunContext, RunReporter, Upstream,
    finish_with_result, first_runner, lock, prepare,
};

/// The chain that starts at `head`: followed while the next job is a naive script job that
/// needs exactly the previous one and is its only dependant.
pub(crate) fn members<'a>(plan: &'a Plan, head: &'a PlannedJob) -> Vec<&'a PlannedJob> {
    follow(plan, head, |next| {
        matches!(next.mode, Mode::Naive) && matches!(next.spec, JobSpec::Run { .. })
    })
}

/// The jobs from `head` on while the next one `fits`, needs only the one before, and is the
/// only job that needs it.
pub(crate) fn follow<'a>(
    plan: &'a Plan,
    head: &'a PlannedJob,
    fits: impl Fn(&PlannedJob) -> bool,
) -> Vec<&'a PlannedJob> {
    let mut chain = vec![head];
    loop {
        let last = chain[chain.len() - 1];
        let dependants: Vec<&PlannedJob> = plan
            .jobs
            .iter()
            .filter(|j| j.needs.contains(&last.id))
            .collect();
        match dependants.as_slice() {
            [next] if next.needs.len() == 1 && fits(next) => chain.push(next),
            _ => return chain,
        }
    }
}

pub(crate) async fn run_chain(
    client: &JobClient,
    members: &[&PlannedJob],
    context: &RunContext,
    config: &EngineConfig,
    upstream: Upstream,
    reporter: &Mutex<&mut dyn RunReporter>,
) -> Vec<JobRecord> {
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
        let outcome = if index == 0 {
            client.run(&head, false, head_timeout, &mut forward).await
        } else {
            let previous: PublicKey = requests[index - 1].0.providers[0];
            let Some(root_id) = root else {
                break;
            };
            let wanted = job.id.clone();
            let found = client
                .await_request(
                    Filter::new()
                        .kind(requests[index].0.kind)
                        .author(previous)
                        .event(root_id),
                    |event| {
                        JobRequest::from_event(event)
                            .is_ok_and(|r| r.param_value(PARAM_JOB) == Some(wanted.as_str()))
                    },
                    Duration::from_secs(120),
                )
                .await;
            match found {
                Ok(event) => client.follow(&event, requests[index].1, &mut forward).await,
                Err(err) => Err(err),
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
