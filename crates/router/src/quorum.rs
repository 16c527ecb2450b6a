//! Quorum jobs (`mode: quorum`): one request to every member of the run's mandate, each
//! builds on its own, and the job succeeds only when the quorum key signed an attestation of
//! what `t` of them built byte for byte (and, for a release job, the release binding).
//!
//! The engine trusts no member's word: it reads the attestation (8708) and binding (8700)
//! from the relays and checks that the quorum key signed them for this request and mandate.
//! The member reports only say where to look and, when there is no agreement, why.

use std::collections::BTreeSet;
use std::time::Duration;

use quorum_dvm::client::{JobClient, JobOutcome};
use quorum_pipeline::PlannedJob;
use quorum_proto::agreement::{QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::chain::{ChainStep, PARAM_CHAIN, PARAM_UPSTREAM_RESULT, encode};
use quorum_proto::mandate::Mandate;
use quorum_proto::nip34::maintainer_set;
use quorum_proto::nip90::{JobParam, JobRequest};
use quorum_proto::nostr::{Event, EventId, Filter, PublicKey};
use quorum_proto::quorum_job::{QuorumJobParams, QuorumReport, ReleaseParams, SourceRef, hex_list};
use quorum_proto::release::{RELEASE_BINDING, ReleaseBinding};
use quorum_proto::source;
use quorum_proto::step::StepReport;
use serde::Serialize;

use crate::{
    Engine, Forward, JobRecord, JobState, PARAM_JOB, Upstream, finish_with_result, lock, prepare,
};

/// The quorum a run uses: the mandate event and what it says, and the maintainer-signed
/// evidence of the run's source that every quorum request names.
#[derive(Debug, Clone)]
pub struct QuorumContext {
    pub mandate_event: Event,
    pub mandate: Mandate,
    /// The announcement and state that tie the run's repository URL and commit to the
    /// maintainers ([`QuorumContext::with_source`]; members refuse a request without it), or
    /// why there is none: the run's quorum jobs fail with that reason, its other jobs run.
    pub source: Result<SourceRef, String>,
}

impl QuorumContext {
    /// The mandate of `event`, which must name a quorum key (not a DKG proposal).
    pub fn new(event: Event) -> Result<Self, String> {
        let mandate = Mandate::from_event(&event).map_err(|e| format!("mandate: {e}"))?;
        if mandate.quorum.is_none() {
            return Err("the mandate is a DKG proposal: it names no quorum key yet".into());
        }
        Ok(QuorumContext {
            mandate_event: event,
            mandate,
            source: Err("the run's source was not looked up".into()),
        })
    }

    /// The same quorum, with the evidence of building `commit` of the mandate's repository from
    /// `url`, selected from what the relays hold (`quorum_proto::source::select`): the owner's
    /// newest announcement, which must list `url`, and the newest maintainer-signed state,
    /// whose refs must point at `commit` (under the mandate's `ancestor` rule, reach it).
    /// Without them, [`QuorumContext::source`] says what is missing (e.g. a state the
    /// maintainer has not published yet).
    pub async fn with_source(mut self, client: &JobClient, url: &str, commit: &str) -> Self {
        self.source = self.select_source(client, url, commit).await;
        self
    }

    async fn select_source(
        &self,
        client: &JobClient,
        url: &str,
        commit: &str,
    ) -> Result<SourceRef, String> {
        let repo = &self.mandate.repo;
        let lookup = Duration::from_secs(5);
        let announcements = client
            .fetch(quorum_proto::nip34::announcements_of(repo), lookup)
            .await
            .map_err(|e| format!("cannot look up repository {repo}: {e}"))?;
        let maintainers = maintainer_set(&repo.owner, &repo.identifier, &announcements);
        let states = client
            .fetch(quorum_proto::nip34::states_of(repo, maintainers), lookup)
            .await
            .map_err(|e| format!("cannot look up the state of {repo}: {e}"))?;
        let events: Vec<Event> = announcements.into_iter().chain(states).collect();
        let source = source::select(repo, url, commit, self.mandate.rules.source, &events)
            .map_err(|e| format!("source: {e}"))?;
        let (announcement, state) = source.ids();
        Ok(SourceRef {
            announcement,
            state,
            url: url.to_string(),
        })
    }

    pub fn quorum(&self) -> PublicKey {
        self.mandate.quorum.expect("checked in new")
    }

    pub fn members(&self) -> Vec<PublicKey> {
        self.mandate.members.iter().map(|m| m.pubkey).collect()
    }
}

/// How a quorum job went, as a run's record and JSON show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuorumRecord {
    /// The quorum key (hex) that signed.
    pub pubkey: String,
    pub threshold: u16,
    /// Every member of the mandate (hex).
    pub members: Vec<String>,
    /// The mandate's event id.
    pub mandate: String,
    /// The quorum attestation (8708), when the quorum signed one.
    pub attestation: Option<String>,
    /// The release binding (8700) the quorum signed, for a release job.
    pub release: Option<String>,
    /// Members the attestation names as having built the agreed files.
    pub agreed: Vec<String>,
    /// Members that answered with something else, or failed.
    pub disagreed: Vec<String>,
    /// Members that did not answer in time.
    pub silent: Vec<String>,
}

/// Extra time a member may spend agreeing and signing after its build.
const AGREEMENT_ALLOWANCE: Duration = Duration::from_secs(120);

/// A quorum job's request, ready to go out (or to ride in a chain).
struct QuorumStep {
    request: JobRequest,
    timeout: Duration,
    runner_job: bool,
}

/// Checks a quorum job against the run's mandate and builds its request: every member
/// `p`-tagged, the quorum params, the job id.
fn quorum_step(
    job: &PlannedJob,
    engine: &Engine<'_, '_>,
    upstream: &Upstream,
    (replicas, threshold): (u32, u32),
) -> Result<QuorumStep, String> {
    let Engine {
        context,
        config,
        run,
        release_gates,
        ..
    } = *engine;
    let Some(quorum) = &context.quorum else {
        return Err(format!(
            "job {} runs in quorum mode ({threshold} of {replicas}), but the run has no \
             mandate; create one with `quorum mandate create` and pass it to the run",
            job.id
        ));
    };
    let mandate = &quorum.mandate;
    if mandate.n() != replicas as usize || u32::from(mandate.threshold) != threshold {
        return Err(format!(
            "job {} asks for {threshold} of {replicas} replicas, but mandate {} is for {} of {}",
            job.id,
            quorum.mandate_event.id,
            mandate.threshold,
            mandate.n()
        ));
    }
    let prepared = prepare(job, context, config, upstream)?;
    if prepared.encrypt {
        return Err(
            "a quorum job cannot take secrets: NIP-90 encrypts a request to one provider, and \
             a quorum request goes to every member"
                .into(),
        );
    }
    let release = if job.release {
        let repo = context.repo_id.clone().ok_or_else(|| {
            "a release names the repository by its NIP-34 identity; give the run its owner \
             and identifier"
                .to_string()
        })?;
        Some(ReleaseParams {
            repo,
            run: run.to_string(),
            job: job.id.clone(),
            gates: release_gates.to_vec(),
        })
    } else {
        None
    };
    let source = quorum.source.clone().map_err(|reason| {
        format!(
            "job {} runs in quorum mode, but the quorum's members would refuse it: {reason}",
            job.id
        )
    })?;
    let mut request = prepared.request;
    request.providers = quorum.members();
    request.parent = config.parent;
    request.params.push(quorum_proto::nip90::JobParam::new(
        PARAM_JOB,
        job.id.clone(),
    ));
    // The values the job's expressions take: members render the job from the plan with them.
    request.params.extend(
        quorum_pipeline::dispatch::bindings(job, |reference| {
            upstream.values.get(reference).cloned()
        })
        .map_err(|e| e.to_string())?,
    );
    QuorumJobParams {
        mandate: quorum.mandate_event.id,
        commit: context.commit.clone(),
        release,
        source: Some(source),
    }
    .apply(&mut request);
    Ok(QuorumStep {
        request,
        timeout: prepared.timeout + AGREEMENT_ALLOWANCE,
        runner_job: prepared.runner_job,
    })
}

/// Enough answers: `t` results that name a signed attestation.
fn enough(needed: usize, runner_job: bool) -> impl Fn(&[JobOutcome]) -> bool {
    move |answers| {
        answers
            .iter()
            .filter(|a| named_attestation(a, runner_job).is_some())
            .count()
            >= needed
    }
}

pub(crate) async fn run_quorum_job(
    engine: &Engine<'_, '_>,
    job: &PlannedJob,
    upstream: Upstream,
    size: (u32, u32),
) -> JobRecord {
    let Engine {
        client,
        context,
        reporter,
        ..
    } = *engine;
    let mut record = JobRecord::new(job);
    let mut step = match quorum_step(job, engine, &upstream, size) {
        Ok(step) => step,
        Err(reason) => {
            record.state = JobState::Failed { reason };
            return record;
        }
    };
    let quorum = context.quorum.as_ref().expect("quorum_step checked it");
    pay_members(engine, job, &mut step, &mut record).await;
    record.tried = step
        .request
        .providers
        .iter()
        .map(PublicKey::to_hex)
        .collect();
    let mut forward = Forward {
        job: &job.id,
        reporter,
        last_tail: String::new(),
    };
    let needed = usize::from(quorum.mandate.threshold);
    let collected = client
        .run_many(
            &step.request,
            step.timeout,
            &mut forward,
            enough(needed, step.runner_job),
        )
        .await;
    match collected {
        Ok((event, answers)) => {
            for answer in &answers {
                crate::take_change(engine, &mut record, answer).await;
            }
            evaluate(
                engine,
                quorum,
                job,
                record,
                &event,
                &answers,
                step.runner_job,
            )
            .await
            .0
        }
        Err(err) => {
            record.state = JobState::Failed {
                reason: format!("no member answered: {err}"),
            };
            record
        }
    }
}

/// Pays every priced member of a quorum job (docs/protocol.md §17.4): the request is clear (it
/// has several providers), so each member's token goes in a `cashu-sealed` param NIP-44
/// encrypted to that member. A member the run cannot pay (no wallet, over budget) is asked
/// anyway and answers `payment-required`; the others may still reach the threshold.
async fn pay_members(
    engine: &Engine<'_, '_>,
    job: &PlannedJob,
    step: &mut QuorumStep,
    record: &mut JobRecord,
) {
    let members = step.request.providers.clone();
    for member in members {
        let token = match crate::pay(engine, job, &member, step.timeout).await {
            Ok(None) => continue,
            Ok(Some(paid)) => paid,
            Err(reason) => {
                tracing::info!(job = %job.id, "{reason}; the member is asked unpaid");
                continue;
            }
        };
        let (token, msats) = token;
        let payer = engine.config.payer.as_ref().expect("paid with the payer");
        match payer.seal(&member, &token) {
            Ok(param) => {
                step.request.params.push(param);
                record.paid(&member, msats);
            }
            Err(why) => {
                // Not handed over, but out of the wallet until its locktime: still spent.
                tracing::warn!(job = %job.id, member = %short(&member), "cannot seal a payment: {why}");
            }
        }
    }
}

/// Runs a quorum chain (`Plan::quorum_chain_from`): the quorum key signs each next step's
/// request once its members agree on the step before, so nobody else, not this engine either,
/// can hand the chain on. One record per member, in order.
pub(crate) async fn run_quorum_chain(
    engine: &Engine<'_, '_>,
    members: &[&PlannedJob],
    upstream: Upstream,
    size: (u32, u32),
) -> Vec<JobRecord> {
    let Engine {
        client,
        context,
        config,
        reporter,
        ..
    } = *engine;
    let mut records: Vec<JobRecord> = members.iter().map(|job| JobRecord::new(job)).collect();
    let mut steps = Vec::with_capacity(members.len());
    for job in members {
        match quorum_step(job, engine, &upstream, size) {
            Ok(step) => steps.push(step),
            Err(reason) => {
                for record in &mut records {
                    record.state = JobState::Failed {
                        reason: reason.clone(),
                    };
                }
                return records;
            }
        }
    }
    let quorum = context.quorum.as_ref().expect("quorum_step checked it");
    let needed = usize::from(quorum.mandate.threshold);
    let rest: Vec<ChainStep> = steps[1..]
        .iter()
        .map(|s| ChainStep::of(&s.request))
        .collect();
    let mut head = steps[0].request.clone();
    head.params.push(JobParam::new(PARAM_CHAIN, encode(&rest)));

    let mut root = config.parent;
    let mut upstream_attestation: Option<EventId> = None;
    for (index, job) in members.iter().enumerate() {
        lock(reporter).job_started(job);
        let step = &steps[index];
        let mut forward = Forward {
            job: &job.id,
            reporter,
            last_tail: String::new(),
        };
        records[index].tried = step
            .request
            .providers
            .iter()
            .map(PublicKey::to_hex)
            .collect();
        let collected = if index == 0 {
            client
                .run_many(
                    &head,
                    step.timeout,
                    &mut forward,
                    enough(needed, step.runner_job),
                )
                .await
        } else {
            match next_request(client, quorum, root, job, step, upstream_attestation).await {
                Ok(event) => client
                    .follow_many(
                        &event,
                        step.timeout,
                        &mut forward,
                        enough(needed, step.runner_job),
                    )
                    .await
                    .map(|answers| (event, answers)),
                Err(reason) => {
                    records[index].state = JobState::Failed { reason };
                    skip_rest(&mut records, members, index);
                    break;
                }
            }
        };
        let (event, answers) = match collected {
            Ok(collected) => collected,
            Err(err) => {
                records[index].state = JobState::Failed {
                    reason: format!("no member answered: {err}"),
                };
                skip_rest(&mut records, members, index);
                break;
            }
        };
        root = root.or(Some(event.id));
        let (record, attestation) = evaluate(
            engine,
            quorum,
            job,
            records[index].clone(),
            &event,
            &answers,
            step.runner_job,
        )
        .await;
        records[index] = record;
        upstream_attestation = attestation;
        if !records[index].succeeded() {
            skip_rest(&mut records, members, index);
            break;
        }
    }
    records
}

fn skip_rest(records: &mut [JobRecord], members: &[&PlannedJob], index: usize) {
    let stopped = members[index].id.clone();
    for later in records.iter_mut().skip(index + 1) {
        later.state = JobState::Skipped {
            reason: format!("the quorum chain stopped at {stopped}"),
        };
    }
}

/// The next request of a quorum chain: signed by the quorum key, for `job`, under the chain's
/// root, and pinned to the attestation of the step before.
async fn next_request(
    client: &JobClient,
    quorum: &QuorumContext,
    root: Option<EventId>,
    job: &PlannedJob,
    step: &QuorumStep,
    upstream: Option<EventId>,
) -> Result<Event, String> {
    let (Some(root), Some(upstream)) = (root, upstream) else {
        return Err("the chain has no earlier step to follow".into());
    };
    let wanted = job.id.clone();
    let pinned = upstream.to_hex();
    client
        .await_request(
            Filter::new()
                .kind(step.request.kind)
                .author(quorum.quorum())
                .event(root),
            |event| {
                JobRequest::from_event(event).is_ok_and(|r| {
                    r.param_value(PARAM_JOB) == Some(wanted.as_str())
                        && r.param_value(PARAM_UPSTREAM_RESULT) == Some(pinned.as_str())
                })
            },
            CHAIN_HANDOVER,
        )
        .await
        .map_err(|err| {
            format!(
                "the quorum did not hand the chain on to {} (signed no request for it): {err}",
                job.id
            )
        })
}

/// How long the quorum of a step may take to publish the next step's request after the engine
/// saw the step's attestation.
const CHAIN_HANDOVER: Duration = Duration::from_secs(60);

/// Judges a quorum step from its members' answers: the attestation signed by the quorum key,
/// an agreeing member's result for the outputs, the release binding for a release job.
/// Returns the record and the attestation's id, when there is one.
async fn evaluate(
    engine: &Engine<'_, '_>,
    quorum: &QuorumContext,
    job: &PlannedJob,
    mut record: JobRecord,
    request_event: &Event,
    answers: &[JobOutcome],
    runner_job: bool,
) -> (JobRecord, Option<EventId>) {
    let (client, config) = (engine.client, engine.config);
    let fail = |mut record: JobRecord, reason: String| {
        record.state = JobState::Failed { reason };
        (record, None)
    };
    let mandate = &quorum.mandate;
    let needed = usize::from(mandate.threshold);
    record.request = Some(request_event.id.to_hex());
    let lookup = config.grace.min(Duration::from_secs(10));
    let attestation =
        find_attestation(client, quorum, request_event, answers, runner_job, lookup).await;
    let members: BTreeSet<PublicKey> = quorum.members().into_iter().collect();
    let answered: BTreeSet<PublicKey> = answers.iter().map(provider).collect();
    let agreed: BTreeSet<PublicKey> = attestation
        .as_ref()
        .map(|(_, a)| a.agreed.clone())
        .unwrap_or_default();
    let mut summary = QuorumRecord {
        pubkey: quorum.quorum().to_hex(),
        threshold: mandate.threshold,
        members: hex_list(&members),
        mandate: quorum.mandate_event.id.to_hex(),
        attestation: attestation.as_ref().map(|(e, _)| e.id.to_hex()),
        release: None,
        agreed: hex_list(&agreed),
        disagreed: hex_list(answered.difference(&agreed)),
        // The run goes on once `t` results name the attestation: a member the attestation
        // names whose own result is still on its way agreed; it was not silent.
        silent: hex_list(
            members
                .iter()
                .filter(|m| !answered.contains(m) && !agreed.contains(m)),
        ),
    };
    let Some((attestation_event, attested)) = attestation else {
        let reasons: Vec<String> = answers
            .iter()
            .map(|a| format!("{}: {}", short(&provider(a)), member_failure(a, runner_job)))
            .collect();
        // Members that agreed on the bytes but could not sign (a round timed out, typically
        // because they could not reach each other) did not disagree: say so.
        let agreed_but_unsigned: BTreeSet<PublicKey> = answers
            .iter()
            .filter_map(|a| member_report(a, runner_job))
            .map(|r| {
                r.agreed
                    .iter()
                    .filter_map(|k| PublicKey::parse(k).ok())
                    .filter(|k| members.contains(k))
                    .collect::<BTreeSet<PublicKey>>()
            })
            .max_by_key(BTreeSet::len)
            .unwrap_or_default();
        if agreed_but_unsigned.len() >= needed {
            summary.agreed = hex_list(&agreed_but_unsigned);
            summary.disagreed = hex_list(answered.difference(&agreed_but_unsigned));
            record.quorum = Some(summary);
            return fail(
                record,
                format!(
                    "the quorum agreed ({} of {} members built the same bytes, {needed} needed) \
                     but signed no attestation ({})",
                    agreed_but_unsigned.len(),
                    members.len(),
                    reasons.join("; ")
                ),
            );
        }
        record.quorum = Some(summary);
        return fail(
            record,
            format!(
                "the quorum signed no attestation: {} of {} members answered, {needed} must \
                 agree ({})",
                answered.len(),
                members.len(),
                if reasons.is_empty() {
                    "nobody answered".to_string()
                } else {
                    reasons.join("; ")
                }
            ),
        );
    };
    // The job's outputs come from an agreeing member's result: its files are the agreed ones.
    // An agreeing member may still have answered `error` afterwards: only results count. A
    // runner's report must list exactly the attested files, since later jobs fetch those.
    let attested = attested.files;
    let chosen = answers.iter().find_map(|a| match a {
        JobOutcome::Result { event, content, .. }
            if agreed.contains(&event.pubkey)
                && (!runner_job || reports_files(content, &attested)) =>
        {
            Some((event, content))
        }
        _ => None,
    });
    let Some((event, content)) = chosen else {
        record.quorum = Some(summary);
        return fail(
            record,
            "the quorum signed an attestation, but no agreeing member's result arrived".into(),
        );
    };
    // A release that depends on approval gates gets its binding after they passed
    // (`crate::release` waits for it); the quorum must not have signed one before.
    if job.release && engine.release_gates.is_empty() {
        match find_binding(
            client,
            quorum,
            &attestation_event,
            answers,
            runner_job,
            lookup,
        )
        .await
        {
            Some(binding) => summary.release = Some(binding.id.to_hex()),
            None => {
                record.quorum = Some(summary);
                return fail(
                    record,
                    "the quorum agreed but signed no release binding for this release job".into(),
                );
            }
        }
    }
    record.result = Some(event.id.to_hex());
    record.provider = Some(event.pubkey.to_hex());
    let mut record = finish_with_result(record, runner_job, content.clone());
    record.quorum = Some(summary);
    (record, Some(attestation_event.id))
}

/// Whether a runner's step report lists exactly `files` (name and sha256).
fn reports_files(content: &str, files: &quorum_proto::agreement::BuildResult) -> bool {
    let Ok(report) = serde_json::from_str::<StepReport>(content) else {
        return false;
    };
    let listed = report
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.blob.sha256.as_str()));
    quorum_proto::quorum_job::build_result(listed).is_ok_and(|listed| listed == *files)
}

fn provider(outcome: &JobOutcome) -> PublicKey {
    match outcome {
        JobOutcome::Result { provider, .. } | JobOutcome::Error { provider, .. } => *provider,
    }
}

/// The member's quorum report: a runner's step report carries it, a wrapper's result its
/// `quorum-report` tag.
fn member_report(outcome: &JobOutcome, runner_job: bool) -> Option<QuorumReport> {
    let JobOutcome::Result { content, event, .. } = outcome else {
        return None;
    };
    if !runner_job {
        return QuorumReport::from_result_tags(event);
    }
    serde_json::from_str::<StepReport>(content).ok()?.quorum
}

/// The attestation a member's result points to: a runner's report, or the `e` tag marked
/// `attestation` that wrappers add.
fn named_attestation(outcome: &JobOutcome, runner_job: bool) -> Option<EventId> {
    if let Some(id) = member_report(outcome, runner_job)
        .and_then(|r| r.attestation)
        .and_then(|id| EventId::from_hex(&id).ok())
    {
        return Some(id);
    }
    let JobOutcome::Result { event, .. } = outcome else {
        return None;
    };
    marked_event(event, "attestation")
}

fn marked_event(event: &Event, marker: &str) -> Option<EventId> {
    event.tags.iter().find_map(|tag| match tag.as_slice() {
        [name, id, _, m, ..] if name == "e" && m == marker => EventId::from_hex(id).ok(),
        _ => None,
    })
}

fn member_failure(outcome: &JobOutcome, runner_job: bool) -> String {
    match outcome {
        JobOutcome::Error { feedback, .. } => format!(
            "error: {}",
            feedback.extra.as_deref().unwrap_or("no reason given")
        ),
        JobOutcome::Result { content, .. } => {
            if let Some(report) = member_report(outcome, runner_job) {
                return report
                    .failure
                    .unwrap_or_else(|| "took part, signed nothing".into());
            }
            if runner_job {
                match serde_json::from_str::<StepReport>(content) {
                    Ok(report) if !report.succeeded() => "the step failed".into(),
                    Ok(_) => "no quorum report".into(),
                    Err(_) => "not a step report".into(),
                }
            } else {
                "no attestation named".into()
            }
        }
    }
}

/// The quorum's attestation of `request`, checked: signed by the quorum key, about this
/// request and mandate.
async fn find_attestation(
    client: &JobClient,
    quorum: &QuorumContext,
    request: &Event,
    answers: &[JobOutcome],
    runner_job: bool,
    timeout: Duration,
) -> Option<(Event, QuorumAttestation)> {
    let named: Vec<EventId> = answers
        .iter()
        .filter_map(|a| named_attestation(a, runner_job))
        .collect();
    let filter = Filter::new()
        .kind(QUORUM_ATTESTATION)
        .author(quorum.quorum())
        .event(request.id);
    let mut found = client.fetch(filter, timeout).await.unwrap_or_default();
    if !named.is_empty() && !found.iter().any(|e| named.contains(&e.id)) {
        let by_id = Filter::new().ids(named).kind(QUORUM_ATTESTATION);
        found.extend(client.fetch(by_id, timeout).await.unwrap_or_default());
    }
    found.into_iter().find_map(|event| {
        if event.pubkey != quorum.quorum() || event.verify().is_err() {
            return None;
        }
        let attestation = QuorumAttestation::from_event(&event).ok()?;
        (attestation.job == request.id && attestation.mandate == quorum.mandate_event.id)
            .then_some((event, attestation))
    })
}

/// The release binding the quorum signed next to `attestation`, checked.
async fn find_binding(
    client: &JobClient,
    quorum: &QuorumContext,
    attestation: &Event,
    answers: &[JobOutcome],
    runner_job: bool,
    timeout: Duration,
) -> Option<Event> {
    let named: Vec<EventId> = answers
        .iter()
        .filter_map(|a| member_report(a, runner_job))
        .filter_map(|r| r.release)
        .filter_map(|id| EventId::from_hex(&id).ok())
        .chain(answers.iter().filter_map(|a| match a {
            JobOutcome::Result { event, .. } => marked_event(event, "release"),
            JobOutcome::Error { .. } => None,
        }))
        .collect();
    let filter = Filter::new()
        .kind(RELEASE_BINDING)
        .author(quorum.quorum())
        .event(attestation.id);
    let mut found = client.fetch(filter, timeout).await.unwrap_or_default();
    if !named.is_empty() && !found.iter().any(|e| named.contains(&e.id)) {
        let by_id = Filter::new().ids(named).kind(RELEASE_BINDING);
        found.extend(client.fetch(by_id, timeout).await.unwrap_or_default());
    }
    found.into_iter().find(|event| {
        event.pubkey == quorum.quorum()
            && event.verify().is_ok()
            && ReleaseBinding::from_event(event).is_ok_and(|b| {
                b.attestations
                    .iter()
                    .any(|a| a.result == attestation.id && a.builder == quorum.quorum())
            })
    })
}

fn short(key: &PublicKey) -> String {
    key.to_hex()[..12].to_string()
}
