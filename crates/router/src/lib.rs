//! The pipeline engine: runs the jobs of a [`Plan`] on DVMs in dependency order.
//!
//! Jobs whose needs are met run concurrently. A script job goes to a runner DVM as a run-step
//! request (kind 5702), a `uses: dvm` job to whatever DVM serves its kind, with expressions
//! (`${{ jobs.build.artifacts['out/app'].url }}`) filled in from the jobs it needs. A runner
//! that errors or does not answer is replaced by the next one (fail-over); a step that ran and
//! failed is not retried, because it would fail again. When a job fails, its dependants are
//! skipped and the run fails.
//!
//! This is the engine the router DVM ([`dvm::Router`], kind 5700) wraps and that `quorum run`
//! drives directly. A naive chain goes out as one request that its DVMs hand on
//! ([`chain`]); a quorum job goes to every member of the run's mandate and succeeds only on an
//! attestation signed by the quorum key ([`quorum`]).

mod approval;
mod chain;
pub use chain::Resume;
pub mod dvm;
pub mod follow;
pub mod pipeline_run;
pub mod progress;
pub mod quorum;
pub mod release;
mod select;
pub mod status;
pub mod trigger;
pub mod verify;

use approval::Gate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use quorum_dvm::client::{JobClient, JobOutcome, JobReporter};
use quorum_pipeline::dispatch::Dispatch;
use quorum_pipeline::expr::{ArtifactField, Reference};
use quorum_pipeline::{JobSpec, Mode, Plan, PlannedJob};
use quorum_proto::nip90::{JobFeedback, JobInput, JobParam, JobRequest, JobResult};
use quorum_proto::nostr::{Event, EventId, PublicKey};
use quorum_proto::step::StepReport;
use serde::Serialize;

/// What the run is about.
#[derive(Clone, Default)]
pub struct RunContext {
    /// Git URL the runners fetch from.
    pub repo: String,
    /// The commit every job builds.
    pub commit: String,
    /// Values of manual trigger inputs (`${{ inputs.NAME }}`).
    pub inputs: BTreeMap<String, String>,
    /// Secret values by name; a job gets only those it lists.
    pub secrets: BTreeMap<String, String>,
    /// The repository's NIP-34 identity, which approval requests name.
    pub repo_id: Option<quorum_proto::nip34::RepoCoordinate>,
    /// The maintainers asked by approval gates that list nobody in `from`.
    pub maintainers: Vec<PublicKey>,
    /// The mandate that quorum jobs (`mode: quorum`) run under.
    pub quorum: Option<quorum::QuorumContext>,
}

impl std::fmt::Debug for RunContext {
    /// Secret values never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("inputs", &self.inputs)
            .field("secrets", &quorum_proto::RedactedSecrets(&self.secrets))
            .field("repo_id", &self.repo_id)
            .field("maintainers", &self.maintainers)
            .field("quorum", &self.quorum.as_ref().map(|q| q.mandate_event.id))
            .finish()
    }
}

/// How the engine dispatches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Runner DVMs to use, in order of preference.
    pub runners: Vec<PublicKey>,
    /// How many runners to try for one job before giving up.
    pub attempts: usize,
    /// How long to wait for a runner beyond the step's own timeout (fetch, upload, queue).
    pub grace: Duration,
    /// Step timeout when the pipeline gives none.
    pub default_timeout: Duration,
    /// How long to wait for a generic DVM's result when the pipeline gives no timeout.
    pub dvm_timeout: Duration,
    /// How long an approval gate waits for its maintainers.
    pub approval_wait: Duration,
    /// The request this run serves (a router's run-pipeline job): every sub-request carries it
    /// as an `e` tag, with the job id as a `job` param, so [`recover`] can find them again.
    pub parent: Option<EventId>,
    /// The selection policy for jobs whose pipeline gives none (a router DVM's, for runs
    /// that leave runners open); `None`: such jobs take `runners` as they are.
    pub select: Option<quorum_pipeline::select::SelectPolicy>,
    /// Pays priced DVMs (Cashu tokens locked to each); `None`: priced DVMs are passed over.
    pub payer: Option<std::sync::Arc<dyn quorum_dvm::handler::Payer>>,
    /// The most the run may pay in all, in millisats; `None`: no cap.
    pub budget_msats: Option<u64>,
    /// Where the run keeps what it spent (tokens handed over less change received, in
    /// millisats), shared with the caller, who can read it even when the run is stopped
    /// half-way (a router settling a cancelled run); `None`: the run keeps its own.
    pub spent: Option<std::sync::Arc<Mutex<u64>>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            runners: Vec::new(),
            attempts: 3,
            grace: Duration::from_secs(300),
            default_timeout: Duration::from_secs(3600),
            dvm_timeout: Duration::from_secs(600),
            approval_wait: Duration::from_secs(24 * 3600),
            parent: None,
            select: None,
            payer: None,
            budget_msats: None,
            spent: None,
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobState {
    Succeeded,
    Failed { reason: String },
    Skipped { reason: String },
}

/// Everything known about one job of the run.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub state: JobState,
    /// The DVM whose answer counted.
    pub provider: Option<String>,
    pub request: Option<String>,
    pub result: Option<String>,
    /// For script jobs: the runner's report.
    pub report: Option<StepReport>,
    /// For DVM jobs: the result content.
    pub content: Option<String>,
    /// Providers tried, in order (every member, for a quorum job).
    pub tried: Vec<String>,
    /// For quorum jobs: the quorum, its attestation and who agreed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum: Option<quorum::QuorumRecord>,
    /// Millisats this job cost: Cashu tokens handed over to DVMs (redeemed or not), less the
    /// change they gave back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paid_msats: u64,
    /// What each DVM was paid for this job (every member, for a quorum job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<PaymentRecord>,
}

/// What a run paid one DVM for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRecord {
    /// The DVM (hex).
    pub dvm: String,
    /// Handed over, in millisats.
    pub paid_msats: u64,
    /// Given back as change (received into the run's wallet), in millisats.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub change_msats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobRecord {
    fn new(job: &PlannedJob) -> Self {
        JobRecord {
            id: job.id.clone(),
            name: job.name.clone(),
            state: JobState::Skipped {
                reason: "not started".into(),
            },
            provider: None,
            request: None,
            result: None,
            report: None,
            content: None,
            tried: Vec::new(),
            quorum: None,
            paid_msats: 0,
            payments: Vec::new(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.state == JobState::Succeeded
    }
}

/// The end of a run: one record per job, in plan order.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub succeeded: bool,
    pub jobs: Vec<JobRecord>,
}

impl RunOutcome {
    /// What the run's jobs cost in all, in millisats (change deducted).
    pub fn paid_msats(&self) -> u64 {
        self.jobs.iter().map(|j| j.paid_msats).sum()
    }
}

/// Progress of a run, for a terminal or a log.
pub trait RunReporter: Send {
    fn job_started(&mut self, job: &PlannedJob);
    /// A line of feedback about a job (status changes, new log lines).
    fn job_progress(&mut self, job: &str, provider: &PublicKey, line: &str);
    fn job_finished(&mut self, record: &JobRecord);
    /// A released file was copied to another Blossom server, or could not be.
    fn mirrored(&mut self, _report: &pipeline_run::MirrorReport) {}
}

/// Ignores a run's progress (tests, benchmarks, callers that only want the outcome).
pub struct QuietRun;

impl RunReporter for QuietRun {
    fn job_started(&mut self, _: &PlannedJob) {}
    fn job_progress(&mut self, _: &str, _: &PublicKey, _: &str) {}
    fn job_finished(&mut self, _: &JobRecord) {}
}

/// Runs every job of `plan` that can run, and reports how each ended. Jobs in `prior` that
/// succeeded are taken as done, not run again.
pub async fn execute(
    client: &JobClient,
    plan: &Plan,
    context: &RunContext,
    config: &EngineConfig,
    prior: Vec<JobRecord>,
    reporter: &mut dyn RunReporter,
) -> RunOutcome {
    let recovered = Recovered {
        done: prior,
        resume: HashMap::new(),
    };
    resume(client, plan, context, config, recovered, reporter).await
}

/// [`execute`] after a restart, with what [`recover`] found: the jobs that succeeded are
/// taken as done, and an interrupted naive chain is picked up where it stopped (its in-flight
/// step followed, not sent again).
pub async fn resume(
    client: &JobClient,
    plan: &Plan,
    context: &RunContext,
    config: &EngineConfig,
    recovered: Recovered,
    reporter: &mut dyn RunReporter,
) -> RunOutcome {
    let Recovered {
        done: prior,
        resume: mut interrupted,
    } = recovered;
    // Selection happens before anything runs: a job the market cannot staff stops the run.
    let selected = match select::preselect(client, plan, context, config).await {
        Ok(selected) => selected,
        Err(refused) => return refused_outcome(plan, refused, reporter),
    };
    let reporter = Mutex::new(reporter);
    let run = run_id(&context.repo, &context.commit, plan);
    let gates: Vec<String> = plan.release_gates().iter().map(|g| g.id.clone()).collect();
    let own = Mutex::new(0u64);
    let spent = config.spent.as_deref().unwrap_or(&own);
    let engine = Engine {
        client,
        context,
        config,
        reporter: &reporter,
        run: &run,
        release_gates: &gates,
        selected: &selected,
        spent,
    };
    let engine = &engine;
    let mut records: HashMap<String, JobRecord> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut started: HashSet<String> = HashSet::new();
    for record in prior.into_iter().filter(JobRecord::succeeded) {
        if plan.job(&record.id).is_some() {
            lock(&reporter).job_finished(&record);
            started.insert(record.id.clone());
            finished.insert(record.id.clone());
            records.insert(record.id.clone(), record);
        }
    }
    // Each entry finishes one job, or several for a naive chain.
    let mut running: FuturesUnordered<
        std::pin::Pin<Box<dyn std::future::Future<Output = Vec<JobRecord>> + Send + '_>>,
    > = FuturesUnordered::new();
    loop {
        // Skip what can no longer run; start what is ready.
        for job in &plan.jobs {
            if started.contains(&job.id) {
                continue;
            }
            let failed_need = job.needs.iter().find(|need| {
                finished.contains(*need) && !records.get(*need).is_some_and(JobRecord::succeeded)
            });
            if let Some(need) = failed_need {
                let mut record = JobRecord::new(job);
                record.state = JobState::Skipped {
                    reason: format!("needs {need}, which did not succeed"),
                };
                lock(&reporter).job_finished(&record);
                started.insert(job.id.clone());
                finished.insert(job.id.clone());
                records.insert(job.id.clone(), record);
                continue;
            }
            if job.needs.iter().all(|need| finished.contains(need))
                && matches!(job.mode, Mode::Naive)
            {
                // A naive chain goes out as one request; its DVMs hand it on themselves.
                let members = chain::members(plan, job);
                for member in &members {
                    started.insert(member.id.clone());
                }
                let done: Vec<&JobRecord> =
                    job.needs.iter().filter_map(|n| records.get(n)).collect();
                let upstream = Upstream::new(&done, context);
                let resume = interrupted.remove(&job.id);
                running.push(Box::pin(async move {
                    chain::run_chain(engine, &members, upstream, resume).await
                }));
                continue;
            }
            if job.needs.iter().all(|need| finished.contains(need))
                && let Some(size) = job.quorum_size()
                && let members = plan.quorum_chain_from(job)
                && members.len() > 1
            {
                // A quorum chain goes out as one request; the quorum hands it on.
                for member in &members {
                    started.insert(member.id.clone());
                }
                let done: Vec<&JobRecord> =
                    job.needs.iter().filter_map(|n| records.get(n)).collect();
                let upstream = Upstream::new(&done, context);
                running.push(Box::pin(async move {
                    quorum::run_quorum_chain(engine, &members, upstream, size).await
                }));
                continue;
            }
            if job.needs.iter().all(|need| finished.contains(need)) {
                started.insert(job.id.clone());
                lock(&reporter).job_started(job);
                let done: Vec<&JobRecord> =
                    job.needs.iter().filter_map(|n| records.get(n)).collect();
                let upstream = Upstream::new(&done, context);
                // A gate shows what the jobs before it produced.
                let finished_records: Vec<JobRecord> = match job.spec {
                    JobSpec::Approval { .. } => records.values().cloned().collect(),
                    _ => Vec::new(),
                };
                running.push(Box::pin(async move {
                    vec![match &job.spec {
                        JobSpec::Approval {
                            required,
                            from,
                            show,
                        } => {
                            let gate = Gate {
                                required: *required,
                                from,
                                show,
                            };
                            approval::run_gate(engine, job, gate, &finished_records).await
                        }
                        _ => match job.quorum_size() {
                            Some(size) => quorum::run_quorum_job(engine, job, upstream, size).await,
                            None => run_job(engine, job, upstream).await,
                        },
                    }]
                }));
            }
        }
        match running.next().await {
            Some(done) => {
                for record in done {
                    lock(&reporter).job_finished(&record);
                    finished.insert(record.id.clone());
                    records.insert(record.id.clone(), record);
                }
            }
            None => break,
        }
    }
    let jobs: Vec<JobRecord> = plan
        .jobs
        .iter()
        .map(|job| {
            records
                .remove(&job.id)
                .unwrap_or_else(|| JobRecord::new(job))
        })
        .collect();
    RunOutcome {
        succeeded: jobs.iter().all(JobRecord::succeeded),
        jobs,
    }
}

/// What every job of one run is run with: the client that signs its requests, the run's
/// context, the engine's settings, where progress goes, and the run id — one bundle, not the
/// same five parameters on every job runner.
#[derive(Clone, Copy)]
pub(crate) struct Engine<'a, 'r> {
    pub client: &'a JobClient,
    pub context: &'a RunContext,
    pub config: &'a EngineConfig,
    pub reporter: &'a Mutex<&'r mut dyn RunReporter>,
    pub run: &'a str,
    /// The approval gates a release of the run depends on (`Plan::release_gates`): a quorum
    /// signs a release binding only after they passed.
    pub release_gates: &'a [String],
    /// The DVMs each job with a selection policy may be given to, in order of preference.
    pub selected: &'a select::Selected,
    /// Millisats paid so far in this run, against `config.budget_msats`.
    pub spent: &'a Mutex<u64>,
}

/// The outcome of a run that selection stopped before it started: the refused jobs failed
/// with the selection's report, every other job skipped.
fn refused_outcome(
    plan: &Plan,
    refused: Vec<(String, String)>,
    reporter: &mut dyn RunReporter,
) -> RunOutcome {
    let names: Vec<&str> = refused.iter().map(|(id, _)| id.as_str()).collect();
    let jobs: Vec<JobRecord> = plan
        .jobs
        .iter()
        .map(|job| {
            let mut record = JobRecord::new(job);
            record.state = match refused.iter().find(|(id, _)| *id == job.id) {
                Some((_, reason)) => JobState::Failed {
                    reason: format!("before the run started: {reason}"),
                },
                None => JobState::Skipped {
                    reason: format!(
                        "the run did not start: the selection policy of {} leaves too few DVMs",
                        names.join(", ")
                    ),
                },
            };
            reporter.job_finished(&record);
            record
        })
        .collect();
    RunOutcome {
        succeeded: false,
        jobs,
    }
}

fn lock<'a, 'b>(
    reporter: &'a Mutex<&'b mut dyn RunReporter>,
) -> std::sync::MutexGuard<'a, &'b mut dyn RunReporter> {
    // A reporter that panicked has printed all it will; keep going with the run.
    reporter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the jobs a job needs produced, for filling in expressions and for the NIP-90 `job`
/// inputs that show the DAG on the relays.
pub(crate) struct Upstream {
    values: HashMap<Reference, String>,
    /// The request of each job that produced a result, by job id.
    requests: Vec<(String, EventId)>,
}

impl Upstream {
    fn new(done: &[&JobRecord], context: &RunContext) -> Self {
        let mut values = HashMap::new();
        let mut requests = Vec::new();
        for record in done {
            if record.result.is_some()
                && let Some(request) = record.request.as_deref()
                && let Ok(request) = EventId::from_hex(request)
            {
                requests.push((record.id.clone(), request));
            }
            if let Some(result) = &record.result {
                values.insert(
                    Reference::JobResult {
                        job: record.id.clone(),
                    },
                    result.clone(),
                );
            }
            for artifact in record.report.iter().flat_map(|r| &r.artifacts) {
                // A directory artifact `dist` is uploaded as `dist.tar`; both names resolve.
                let paths = [
                    artifact.name.clone(),
                    artifact.name.trim_end_matches(".tar").to_string(),
                ];
                for path in paths {
                    if let Some(url) = artifact.blob.urls.first() {
                        values.insert(
                            Reference::Artifact {
                                job: record.id.clone(),
                                path: path.clone(),
                                field: ArtifactField::Url,
                            },
                            url.clone(),
                        );
                    }
                    values.insert(
                        Reference::Artifact {
                            job: record.id.clone(),
                            path,
                            field: ArtifactField::Sha256,
                        },
                        artifact.blob.sha256.clone(),
                    );
                }
            }
        }
        for (name, value) in &context.inputs {
            values.insert(Reference::Input { name: name.clone() }, value.clone());
        }
        Upstream { values, requests }
    }

    /// `["i", REQUEST, "job", "", "needs"]` for each job `job` needs that produced a result
    /// (NIP-90: the output of an earlier job). Only `job`'s own needs: the later steps of a
    /// chain get theirs from the DVM that hands them on.
    pub(crate) fn needs_inputs(&self, job: &PlannedJob) -> Vec<JobInput> {
        self.requests
            .iter()
            .filter(|(id, _)| job.needs.contains(id))
            .map(|(_, request)| JobInput::job(*request, None).with_marker(MARKER_NEEDS))
            .collect()
    }
}

async fn run_job(engine: &Engine<'_, '_>, job: &PlannedJob, upstream: Upstream) -> JobRecord {
    let Engine {
        client,
        context,
        config,
        reporter,
        run,
        ..
    } = *engine;
    let mut record = JobRecord::new(job);
    if let Err(reason) = supported(job) {
        record.state = JobState::Failed { reason };
        return record;
    }
    let prepared = match prepare(job, context, config, &upstream) {
        Ok(prepared) => prepared,
        Err(reason) => {
            record.state = JobState::Failed { reason };
            return record;
        }
    };
    let mut forward = Forward {
        job: &job.id,
        reporter,
        last_tail: String::new(),
    };
    let candidates: Vec<Option<PublicKey>> = match prepared.provider {
        Some(provider) => vec![Some(provider)],
        // The selection policy's choice: in its order of preference when it has one (the
        // order is the point of `prefer`), else spread by job id like the engine's runners.
        None if engine.selected.contains_key(&job.id) => {
            let mut admitted: Vec<Option<PublicKey>> = engine.selected[&job.id]
                .iter()
                .map(|(dvm, _)| Some(*dvm))
                .collect();
            let prefer = job
                .select
                .as_ref()
                .or(config.select.as_ref())
                .and_then(|p| p.prefer);
            if prefer.is_none() {
                let len = admitted.len();
                admitted.rotate_left(first_runner(&job.id, len));
            }
            admitted
        }
        None if prepared.runner_job && !config.runners.is_empty() => {
            let mut runners = config.runners.clone();
            let len = runners.len();
            runners.rotate_left(first_runner(&job.id, len));
            runners.into_iter().map(Some).collect()
        }
        // No known provider: an open request that any DVM of the kind may take.
        None => vec![None],
    };
    let mut last_failure = String::from("no DVM to ask");
    for provider in candidates.into_iter().cycle().take(config.attempts.max(1)) {
        let mut request = prepared.request.clone();
        request.providers = provider.into_iter().collect();
        request.parent = config.parent;
        request
            .params
            .push(JobParam::new(PARAM_JOB, job.id.clone()));
        // A run with a NIP-34 identity publishes CI status: the runner signs the job's
        // result (9841) itself, in the context of the run's progress event.
        if context.repo_id.is_some() && prepared.runner_job {
            let address = quorum_proto::nipc1::RunAddress {
                coordinator: client.public_key(),
                run: run.to_string(),
            };
            request.params.push(JobParam::new(
                quorum_proto::nipc1::PARAM_CI_RUN,
                address.to_string(),
            ));
        }
        let mut encrypt = prepared.encrypt && provider.is_some();
        if let Some(dvm) = provider {
            match pay(engine, job, &dvm, prepared.timeout).await {
                Ok(None) => {}
                Ok(Some((token, msats))) => {
                    request
                        .params
                        .push(JobParam::new(quorum_proto::payment::PARAM_CASHU, token));
                    // The token travels NIP-44 encrypted to the DVM, never in a clear tag.
                    encrypt = true;
                    record.paid(&dvm, msats);
                }
                Err(reason) => {
                    last_failure = reason;
                    tracing::info!(job = %job.id, "{last_failure}; trying another DVM");
                    record.tried.push(dvm.to_hex());
                    continue;
                }
            }
        }
        if prepared.encrypt && provider.is_none() {
            record.state = JobState::Failed {
                reason: "the job has secrets, which need a known runner to be encrypted to".into(),
            };
            return record;
        }
        record
            .tried
            .push(provider.map(|p| p.to_hex()).unwrap_or_else(|| "any".into()));
        let outcome = client
            .run(&request, encrypt, prepared.timeout, &mut forward)
            .await;
        if let Ok(answer) = &outcome {
            take_change(engine, &mut record, answer).await;
        }
        match outcome {
            Ok(JobOutcome::Result {
                request,
                event,
                provider,
                content,
            }) => {
                record.request = Some(request.id.to_hex());
                record.result = Some(event.id.to_hex());
                record.provider = Some(provider.to_hex());
                return finish_with_result(record, prepared.runner_job, content);
            }
            Ok(JobOutcome::Error {
                request,
                provider,
                feedback,
            }) => {
                record.request = Some(request.id.to_hex());
                last_failure = format!(
                    "{} answered error: {}",
                    short(&provider),
                    feedback.extra.as_deref().unwrap_or("no reason given")
                );
                tracing::info!(job = %job.id, "{last_failure}; trying another DVM");
            }
            Err(err) => {
                last_failure = format!("no answer: {err}");
                tracing::info!(job = %job.id, "{last_failure}; trying another DVM");
            }
        }
    }
    record.state = JobState::Failed {
        reason: last_failure,
    };
    record
}

/// The payment for `dvm`'s work on `job`, when the selection found it priced: a token locked
/// to `dvm` of the most the job may cost there, refundable after the job's timeout and an
/// hour, within the run's budget, and the millisats it holds. `Ok(None)`: free. `Err`: why this
/// DVM is passed over (no wallet, over budget, the wallet could not pay).
pub(crate) async fn pay(
    engine: &Engine<'_, '_>,
    job: &PlannedJob,
    dvm: &PublicKey,
    timeout: Duration,
) -> Result<Option<(String, u64)>, String> {
    let msats = engine
        .selected
        .get(&job.id)
        .and_then(|dvms| dvms.iter().find(|(k, _)| k == dvm))
        .map(|(_, price)| *price)
        .unwrap_or(0);
    if msats == 0 {
        return Ok(None);
    }
    let Some(payer) = &engine.config.payer else {
        return Err(format!(
            "{} charges {msats} msats and this run has no wallet to pay with",
            short(dvm)
        ));
    };
    let sats = msats.div_ceil(1000);
    {
        let mut spent = lock_spent(engine.spent);
        if let Some(budget) = engine.config.budget_msats
            && *spent + sats * 1000 > budget
        {
            return Err(format!(
                "{} charges {msats} msats, over the run's budget ({} of {budget} msats spent)",
                short(dvm),
                *spent
            ));
        }
        // Reserved before paying, so parallel jobs cannot overspend together.
        *spent += sats * 1000;
    }
    let locktime = quorum_proto::nostr::Timestamp::now().as_secs() + timeout.as_secs() + 3600;
    match payer.pay(dvm, sats, locktime).await {
        Ok(token) => Ok(Some((token, sats * 1000))),
        Err(why) => {
            *lock_spent(engine.spent) -= sats * 1000;
            Err(format!("cannot pay {}: {why}", short(dvm)))
        }
    }
}

impl JobRecord {
    /// Notes `msats` handed over to `dvm`.
    pub(crate) fn paid(&mut self, dvm: &PublicKey, msats: u64) {
        self.paid_msats += msats;
        let dvm = dvm.to_hex();
        match self.payments.iter_mut().find(|p| p.dvm == dvm) {
            Some(payment) => payment.paid_msats += msats,
            None => self.payments.push(PaymentRecord {
                dvm,
                paid_msats: msats,
                change_msats: 0,
            }),
        }
    }
}

/// Takes the change a DVM's answer carries (a per-second price's unused part, or the whole
/// payment of a job that failed before it started) into the run's wallet, and gives it back to
/// the run's budget and the job's cost. Change that cannot be taken stays locked to the payer's
/// key; the run goes on.
pub(crate) async fn take_change(
    engine: &Engine<'_, '_>,
    record: &mut JobRecord,
    answer: &JobOutcome,
) {
    let (dvm, sealed) = (answer.provider(), answer.sealed_change());
    let (Some(sealed), Some(payer)) = (sealed, &engine.config.payer) else {
        return;
    };
    let hex = dvm.to_hex();
    let Some(payment) = record.payments.iter_mut().find(|p| p.dvm == hex) else {
        // Change from a DVM this run did not pay: not ours to count.
        return;
    };
    match payer.receive_change(dvm, sealed).await {
        Ok(sats) => {
            // Never more back than was paid: the budget and the cost only go down by what
            // this DVM was given.
            let msats = (sats * 1000).min(payment.paid_msats - payment.change_msats);
            payment.change_msats += msats;
            record.paid_msats -= msats;
            let mut spent = lock_spent(engine.spent);
            *spent = spent.saturating_sub(msats);
            tracing::info!(job = %record.id, dvm = %short(dvm), msats, "change received");
        }
        Err(why) => {
            tracing::warn!(job = %record.id, dvm = %short(dvm), "change not received: {why}")
        }
    }
}

fn lock_spent(spent: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    spent
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where in the runner list a job starts: spread by job id, so that parallel jobs go to
/// different runners, and stable, so that a run (and a test) is repeatable. The others follow
/// in order for fail-over.
pub fn first_runner(job_id: &str, runners: usize) -> usize {
    let spread = job_id.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(b as usize)
    });
    spread % runners.max(1)
}

pub use quorum_pipeline::dispatch::MARKER_NEEDS;
pub(crate) use quorum_pipeline::dispatch::PARAM_JOB;

/// What a restarted router finds of a run on the relays ([`recover`]).
#[derive(Debug, Default)]
pub struct Recovered {
    /// The jobs that succeeded: taken as done, not run again.
    pub done: Vec<JobRecord>,
    /// Where an interrupted naive chain picks up, by the job id of its first unfinished step.
    pub resume: HashMap<String, chain::Resume>,
}

/// Finds what the run under `parent` already did: the sub-requests this client signed with
/// `parent` as their `e` tag, the later steps of its naive chains (signed by the runner each
/// chain step named, with the same `e` tag), and the results answering them. This is how a
/// router restarted mid-run rebuilds its state from the relays instead of repeating work.
pub async fn recover(
    client: &JobClient,
    plan: &Plan,
    parent: EventId,
    timeout: Duration,
) -> Recovered {
    use quorum_proto::nostr::Filter;
    let mut events = match client.fetch(Filter::new().event(parent), timeout).await {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!("cannot look up earlier steps of the run: {err}");
            return Recovered::default();
        }
    };
    events.retain(|e| (5000..6000).contains(&e.kind.as_u16()));
    events.sort_by_key(|e| (e.created_at, e.id));
    let (ours, others): (Vec<Event>, Vec<Event>) = events
        .into_iter()
        .partition(|e| e.pubkey == client.public_key());
    // Our own requests, opened once (through a bunker, each opening is a round trip).
    let mut opened_requests: HashMap<EventId, JobRequest> = HashMap::new();
    for event in &ours {
        if let Some(request) = client.open_request(event).await {
            opened_requests.insert(event.id, request);
        }
    }
    let chains: Vec<chain::Recorded> = ours
        .iter()
        .filter_map(|event| chain::Recorded::of(event, opened_requests.get(&event.id)?.clone()))
        .collect();
    // A later chain step counts only if the runner of the step before it signed it.
    let steps: Vec<(Event, String, PublicKey)> = others
        .into_iter()
        .filter_map(|event| {
            let job = JobRequest::from_event(&event)
                .ok()?
                .param_value(PARAM_JOB)?
                .to_string();
            let runner = chains
                .iter()
                .find_map(|c| c.runner_after(&job, &event.pubkey))?;
            Some((event, job, runner))
        })
        .collect();
    let request_ids: Vec<EventId> = ours
        .iter()
        .chain(steps.iter().map(|(event, ..)| event))
        .map(|e| e.id)
        .collect();
    if request_ids.is_empty() {
        return Recovered::default();
    }
    let answers = client
        .fetch(Filter::new().events(request_ids), timeout)
        .await
        .unwrap_or_default();
    let mut records: HashMap<String, JobRecord> = HashMap::new();
    for answer in &answers {
        let opened = match client.open_result(answer).await {
            // The job id travels in the (possibly encrypted) request: read it from the
            // result's embedded copy, decrypting with our own key when needed.
            Some((result, content)) => opened_requests
                .get(&result.request.id)
                .and_then(|r| r.param_value(PARAM_JOB).map(str::to_string))
                .map(|job| (job, result, content)),
            // A chain step a runner handed on: clear, and answered by the runner it names.
            None => JobResult::from_event(answer).ok().and_then(|result| {
                let (_, job, runner) = steps.iter().find(|(e, ..)| e.id == result.request.id)?;
                (answer.pubkey == *runner && !result.encrypted)
                    .then(|| (job.clone(), result.clone(), result.content))
            }),
        };
        let Some((job_id, result, content)) = opened else {
            continue;
        };
        let Some(job) = plan.job(&job_id) else {
            continue;
        };
        if job.quorum_size().is_some() {
            // One member's result proves nothing about a quorum job: it runs again, and only
            // an attestation signed by the quorum key makes it done.
            continue;
        }
        let mut record = JobRecord::new(job);
        record.request = Some(result.request.id.to_hex());
        record.result = Some(answer.id.to_hex());
        record.provider = Some(answer.pubkey.to_hex());
        record.tried.push(answer.pubkey.to_hex());
        let record = finish_with_result(record, matches!(job.spec, JobSpec::Run { .. }), content);
        if record.succeeded() {
            records.insert(job_id, record);
        }
    }
    // Each interrupted chain goes on from its first unfinished step; the newest chain wins.
    let mut requested: HashMap<String, &Event> = HashMap::new();
    for event in &ours {
        if let Some(job) = opened_requests
            .get(&event.id)
            .and_then(|r| r.param_value(PARAM_JOB).map(str::to_string))
        {
            requested.insert(job, event);
        }
    }
    for (event, job, _) in &steps {
        requested.insert(job.clone(), event);
    }
    let mut resume = HashMap::new();
    for recorded in &chains {
        if let Some((job, point)) = recorded.resume(&records, &requested) {
            resume.insert(job, point);
        }
    }
    Recovered {
        done: records.into_values().collect(),
        resume,
    }
}

pub(crate) fn finish_with_result(
    mut record: JobRecord,
    runner_job: bool,
    content: String,
) -> JobRecord {
    if !runner_job {
        record.content = Some(content);
        record.state = JobState::Succeeded;
        return record;
    }
    match serde_json::from_str::<StepReport>(&content) {
        Ok(report) => {
            record.state = if report.succeeded() {
                JobState::Succeeded
            } else if report.timed_out {
                JobState::Failed {
                    reason: "the step timed out".into(),
                }
            } else {
                JobState::Failed {
                    reason: match report.exit_code {
                        Some(code) => format!("the step exited with code {code}"),
                        None => "the step was killed".into(),
                    },
                }
            };
            record.report = Some(report);
        }
        Err(err) => {
            record.state = JobState::Failed {
                reason: format!("the runner's result is not a step report: {err}"),
            };
        }
    }
    record
}

/// What this engine can run today.
fn supported(job: &PlannedJob) -> Result<(), String> {
    match (&job.mode, &job.spec) {
        (_, JobSpec::Approval { .. }) => Ok(()),
        // Quorum jobs go to `quorum::run_quorum_job`, never here.
        (Mode::Quorum { .. }, _) => {
            Err("internal: a quorum job reached the single-DVM path".into())
        }
        (Mode::Naive, _) | (Mode::Router, _) => Ok(()),
    }
}

/// A job turned into a request.
pub(crate) struct Prepared {
    pub(crate) request: JobRequest,
    pub(crate) provider: Option<PublicKey>,
    pub(crate) encrypt: bool,
    pub(crate) runner_job: bool,
    pub(crate) timeout: Duration,
}

pub(crate) fn prepare(
    job: &PlannedJob,
    context: &RunContext,
    config: &EngineConfig,
    upstream: &Upstream,
) -> Result<Prepared, String> {
    let dispatched = quorum_pipeline::dispatch::dispatch(
        job,
        &context.repo,
        &context.commit,
        config.default_timeout,
        |reference| upstream.values.get(reference).cloned(),
    )
    .map_err(|e| e.to_string())?;
    match (dispatched, &job.spec) {
        (Dispatch::Step(mut step), JobSpec::Run { secrets, .. }) => {
            for name in secrets {
                let value = context
                    .secrets
                    .get(name)
                    .ok_or_else(|| format!("secret {name} was not provided to the run"))?;
                step.secrets.insert(name.clone(), value.clone());
            }
            let timeout = step.timeout.unwrap_or(config.default_timeout);
            let mut request = step.to_request();
            request.inputs.extend(upstream.needs_inputs(job));
            Ok(Prepared {
                encrypt: !step.secrets.is_empty(),
                request,
                provider: None,
                runner_job: true,
                timeout: timeout + config.grace,
            })
        }
        (
            Dispatch::Dvm {
                mut request,
                provider,
            },
            JobSpec::Dvm { timeout_secs, .. },
        ) => {
            request.inputs.extend(upstream.needs_inputs(job));
            Ok(Prepared {
                request,
                provider,
                encrypt: false,
                runner_job: false,
                timeout: timeout_secs
                    .map(Duration::from_secs)
                    .unwrap_or(config.dvm_timeout),
            })
        }
        _ => Err(format!(
            "job {}: it runs nothing a DVM could be asked",
            job.id
        )),
    }
}

fn short(key: &PublicKey) -> String {
    key.to_hex()[..12].to_string()
}

/// Passes one job's DVM feedback on to the run's reporter as lines.
pub(crate) struct Forward<'a, 'b> {
    pub(crate) job: &'a str,
    pub(crate) reporter: &'a Mutex<&'b mut dyn RunReporter>,
    pub(crate) last_tail: String,
}

impl JobReporter for Forward<'_, '_> {
    fn feedback(&mut self, provider: &PublicKey, feedback: &JobFeedback, content: &str) {
        use quorum_proto::nip90::FeedbackStatus;
        let mut reporter = lock(self.reporter);
        match feedback.status {
            FeedbackStatus::Partial => {
                for line in quorum_dvm::client::new_lines(&self.last_tail, content) {
                    reporter.job_progress(self.job, provider, line);
                }
                self.last_tail = content.to_string();
            }
            status => {
                let line = match feedback.extra.as_deref() {
                    Some(extra) if !extra.is_empty() => format!("[{status}] {extra}"),
                    _ => format!("[{status}]"),
                };
                reporter.job_progress(self.job, provider, &line);
            }
        }
    }
}

/// The id of a run: the sha256 of the repository URL, the commit and the plan hash
/// ([`quorum_pipeline::run_id`]), so that the same pipeline on the same commit is recognisably
/// the same run (deduplication).
pub fn run_id(repo: &str, commit: &str, plan: &Plan) -> String {
    quorum_pipeline::run_id(repo, commit, &plan.plan_hash())
}
