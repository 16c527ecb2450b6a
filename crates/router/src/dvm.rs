//! The router DVM: serves run-pipeline jobs (kind 5700) with the engine.
//!
//! It fetches the requested commit, reads the pipeline the maintainer committed there, and runs
//! it on runner DVMs, signing every sub-request with its own key. Because each sub-request
//! names the run request (`e`) and its job (`job` param), a router restarted mid-run (the DVM
//! runtime resumes the run job from its journal) recovers the finished steps from the relays
//! and only runs what is left.
//!
//! A paid router (docs/protocol.md §17.4) is paid its fee and a budget in one token, which the
//! runtime's payment gate redeems into its wallet; the run hires priced runners from that
//! wallet within the budget, and the router charges the fee and what the run spent
//! ([`JobContext::charge`]), so that the rest goes back to the requester as change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_dvm::client::JobClient;
use quorum_dvm::{Job, JobContext, JobFailure, JobHandler, JobOutput};
use quorum_pipeline::PlannedJob;
use quorum_proto::kinds::JobKind;
use quorum_proto::nip34::{self, RepoCoordinate};
use quorum_proto::nip89::{Capabilities, JobLimits, Offer, Price};
use quorum_proto::nip90::JobRequest;
use quorum_proto::nipc1::Trigger;
use quorum_proto::nostr::{EventId, Filter, Kind, PublicKey};
use quorum_proto::run::{JobSummary, Published, RunPayment, RunReport, RunRequest, StepPayment};
use quorum_proto::step::StepJob;
use quorum_runner::GitPolicy;

use crate::pipeline_run::PipelineRun;
use crate::quorum::QuorumContext;
use crate::release::ReleaseOptions;
use crate::status::CiSource;
use crate::{EngineConfig, JobRecord, JobState, RunContext, RunReporter, recover};

/// How a router is set up by its operator.
#[derive(Clone)]
pub struct RouterConfig {
    /// Where checkouts of requested commits go (one per run, removed afterwards).
    pub work_root: PathBuf,
    pub git: GitPolicy,
    /// Runners to use when a request names none; empty: whoever announces kind 5702.
    pub runners: Vec<PublicKey>,
    /// The selection policy for runs whose request names no runners, applied to jobs whose
    /// pipeline gives none (docs/pipeline.md "Choosing DVMs"); `None`: every runner found.
    pub select: Option<quorum_pipeline::select::SelectPolicy>,
    /// Longest a whole run may take.
    pub max_run: Duration,
    /// Stores the verification bundle of each release on the Blossom servers that hold its
    /// files, signing with the router's key; `None`: releases get no bundle.
    pub bundle_store: Option<quorum_blossom::client::BlossomClient>,
    /// What the router announces (NIP-89): `msats_per_job` is its fee per run, `mints` where
    /// it takes payment. The DVM runtime's payment gate collects it (docs/protocol.md §17.4);
    /// default: free.
    pub price: Price,
    /// Pays the DVMs a paid run hires, from the wallet requesters' payments are redeemed
    /// into, at most what the requester paid beyond the fee; `None`: runs hire free DVMs only.
    pub payer: Option<Arc<dyn quorum_dvm::handler::Payer>>,
}

impl RouterConfig {
    /// The fee per run in millisats, in whole sats as tokens hold them (rounded up).
    fn fee_msats(&self) -> u64 {
        self.price.msats_per_job.div_ceil(1000) * 1000
    }
}

/// The router role. Its job client must sign with the router DVM's own key, so that the
/// sub-requests it finds on restart are its own.
pub struct Router {
    config: RouterConfig,
    client: Arc<JobClient>,
}

impl Router {
    pub fn new(mut config: RouterConfig, client: Arc<JobClient>) -> Self {
        if let Ok(absolute) = std::path::absolute(&config.work_root) {
            config.work_root = absolute;
        }
        Router { config, client }
    }

    /// The mandate a run-pipeline request names, from the relays. The members check it again
    /// (maintainer, expiry, supersession) before they sign anything under it.
    async fn mandate(&self, id: EventId) -> Result<QuorumContext, JobFailure> {
        let found = self
            .client
            .fetch(
                Filter::new().id(id).kind(quorum_proto::mandate::MANDATE),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| JobFailure::new(format!("cannot look up mandate {id}: {e}")))?;
        let event = found
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| JobFailure::new(format!("mandate {id} is not on the relays")))?;
        QuorumContext::new(event).map_err(|e| JobFailure::new(format!("mandate {id}: {e}")))
    }

    /// The mandate in force for the plan's quorum jobs when the request names none (a watcher
    /// names none): the newest by a maintainer of `repo_id` that covers every quorum job and
    /// allows attestations (and release bindings when a quorum job releases) — the rule
    /// `quorum verify` applies. `None` when the plan has no quorum job.
    async fn current_mandate(
        &self,
        repo_id: Option<&RepoCoordinate>,
        plan: &quorum_pipeline::Plan,
    ) -> Result<Option<QuorumContext>, JobFailure> {
        use quorum_proto::mandate::current_mandate_for;
        let quorum_jobs: Vec<&PlannedJob> = plan
            .jobs
            .iter()
            .filter(|job| job.quorum_size().is_some())
            .collect();
        if quorum_jobs.is_empty() {
            return Ok(None);
        }
        let names: Vec<&str> = quorum_jobs.iter().map(|job| job.id.as_str()).collect();
        let Some(repo_id) = repo_id else {
            return Err(JobFailure::new(format!(
                "the pipeline has quorum jobs ({}) but the request names neither a mandate nor                  the repository (`repo-id`) whose mandate to take",
                names.join(", ")
            )));
        };
        let mut kinds = vec![quorum_proto::agreement::QUORUM_ATTESTATION];
        if quorum_jobs.iter().any(|job| job.release) {
            kinds.push(quorum_proto::release::RELEASE_BINDING);
        }
        let lookup = |e: quorum_dvm::client::ClientError| {
            JobFailure::new(format!("cannot look up the mandates of {repo_id}: {e}"))
        };
        let announcements = self
            .client
            .fetch(
                quorum_proto::nip34::announcements_of(repo_id),
                Duration::from_secs(5),
            )
            .await
            .map_err(lookup)?;
        let maintainers =
            nip34::maintainer_set(&repo_id.owner, &repo_id.identifier, &announcements);
        let mandates = self
            .client
            .fetch(
                quorum_proto::mandate::mandates_of(repo_id).authors(maintainers.iter().copied()),
                Duration::from_secs(5),
            )
            .await
            .map_err(lookup)?;
        let Some((event, _)) = current_mandate_for(
            &mandates,
            repo_id,
            &maintainers,
            quorum_proto::nostr::Timestamp::now(),
            quorum_pipeline::PIPELINE_PATH,
            &names,
            &kinds,
        ) else {
            return Err(JobFailure::new(format!(
                "the pipeline has quorum jobs ({}) and no maintainer of {repo_id} has a mandate in                  force that covers them and allows kinds {}: make one with `quorum mandate create                  --repo {repo_id} …`",
                names.join(", "),
                kinds
                    .iter()
                    .map(|k| k.as_u16().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        };
        tracing::info!(repository = %repo_id, mandate = %event.id, "took the repository's mandate in force");
        QuorumContext::new(event.clone())
            .map(Some)
            .map_err(|e| JobFailure::new(format!("mandate {}: {e}", event.id)))
    }

    /// The manual trigger (9840) a request replays, checked as the trigger inbox checks it:
    /// anyone may name a trigger in a request, so its author, repository and commit are
    /// checked here again, and they must be the request's.
    async fn manual_trigger(
        &self,
        id: EventId,
        run: &RunRequest,
    ) -> Result<crate::trigger::AcceptedTrigger, JobFailure> {
        let found = self
            .client
            .fetch(
                Filter::new()
                    .id(id)
                    .kind(quorum_proto::nipc1::CI_MANUAL_TRIGGER),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| JobFailure::new(format!("cannot look up manual trigger {id}: {e}")))?;
        let event = found
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| JobFailure::new(format!("manual trigger {id} is not on the relays")))?;
        let accepted = crate::trigger::check(&self.client, &event, &self.client.public_key())
            .await
            .map_err(|reason| JobFailure::new(format!("manual trigger {id}: {reason}")))?;
        if accepted.trigger.context.commit != run.commit
            || run
                .repo_id
                .as_ref()
                .is_some_and(|repo| *repo != accepted.repo)
        {
            return Err(JobFailure::new(format!(
                "manual trigger {id} is for {} at {}, not this request's repository and commit",
                accepted.repo, accepted.trigger.context.commit
            )));
        }
        Ok(accepted)
    }

    /// Lets a pull-request run go on: at once when a maintainer proposed the commit, else
    /// once a maintainer approved this commit and pipeline file (the run waits, and says how
    /// to approve in its partial feedback).
    async fn approve_pull_request(
        &self,
        ctx: &JobContext,
        run: &RunRequest,
        pr: &quorum_proto::nipc1::PullRequestContext,
        repo_id: Option<&RepoCoordinate>,
        plan_hash: &str,
        source: &CiSource,
    ) -> Result<(), JobFailure> {
        let repo_id = repo_id.ok_or_else(|| {
            JobFailure::new("a pull-request run names the repository it proposes to (`repo-id`)")
        })?;
        let maintainers = self.maintainers(repo_id, &[]).await?;
        if maintainers.contains(&pr.trigger_author) {
            return Ok(());
        }
        let pipeline_sha256 = source
            .workflow_sha256
            .ok_or_else(|| JobFailure::new("the pull request's pipeline file was not read"))?;
        let gate = crate::approval::PullRequestGate {
            repo: repo_id.clone(),
            run: quorum_pipeline::run_id(&run.repo, &run.commit, plan_hash),
            commit: run.commit.clone(),
            pipeline_sha256,
            maintainers,
            wait: EngineConfig::default().approval_wait,
        };
        tracing::info!(commit = %run.commit, contributor = %pr.trigger_author, "a pull request by a contributor waits for a maintainer's approval");
        match gate
            .ask(&self.client, |line| ctx.partial(line.to_string()))
            .await
        {
            Ok((_, Ok(approved))) => {
                tracing::info!(commit = %run.commit, "pull-request run {approved}");
                Ok(())
            }
            Ok((request, Err(reason))) => Err(JobFailure::new(format!(
                "the pull-request run was not approved ({reason}; request {request})"
            ))),
            Err(reason) => Err(JobFailure::new(reason)),
        }
    }

    /// The maintainers approval gates ask: those the request names, each checked against the
    /// repository's maintainer set (the owner and whom the owner's 30617 announcement lists,
    /// §10), or that whole set when the request names nobody. A requester cannot make itself
    /// a maintainer by naming itself.
    async fn maintainers(
        &self,
        repo_id: &RepoCoordinate,
        named: &[PublicKey],
    ) -> Result<Vec<PublicKey>, JobFailure> {
        let announcements = self
            .client
            .fetch(
                quorum_proto::nip34::announcements_of(repo_id),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| JobFailure::new(format!("cannot look up repository {repo_id}: {e}")))?;
        let set = nip34::maintainer_set(&repo_id.owner, &repo_id.identifier, &announcements);
        if named.is_empty() {
            return Ok(set.into_iter().collect());
        }
        match named.iter().find(|key| !set.contains(key)) {
            Some(stranger) => Err(JobFailure::new(format!(
                "`maintainer` {} is not a maintainer of {repo_id}",
                stranger.to_hex()
            ))),
            None => Ok(named.to_vec()),
        }
    }

    /// Starts serving: the DVM runtime for run-pipeline requests, and the inbox that turns
    /// maintainers' manual triggers (9840) addressed to this router into such requests.
    pub async fn start(
        self,
        config: quorum_dvm::DvmConfig,
        keys: quorum_proto::nostr::Keys,
    ) -> Result<RunningRouter, quorum_dvm::DvmError> {
        let inbox = crate::trigger::TriggerInbox::new(self.client.clone());
        let dvm = quorum_dvm::Dvm::start(config, keys, self).await?;
        let inbox = tokio::spawn(inbox.serve(std::future::pending()));
        Ok(RunningRouter { dvm, inbox })
    }

    async fn run_pipeline(&self, job: &Job, ctx: &JobContext) -> Result<RunReport, JobFailure> {
        // A run that fails before it starts hired nobody: a paid request is refunded in full.
        let run = RunRequest::from_request(&job.request, JobRequest::is_encrypted(&job.event))
            .map_err(|e| {
                JobFailure::new(format!("invalid run-pipeline request: {e}")).before_start()
            })?;
        let mut source = CiSource {
            git_ref: run.git_ref.clone(),
            trigger: if run.git_ref.is_some() {
                Trigger::Push
            } else {
                Trigger::Manual
            },
            workflow_sha256: None,
            manual_trigger: None,
            pull_request: None,
        };
        if let Some(pr) = &run.pull_request {
            source = source.for_pull_request(pr.clone());
        }
        let prepared = match self.prepare(job, ctx, &run, &mut source).await {
            Ok(prepared) => prepared,
            Err(failure) => {
                self.report_not_started(job, &run, &source, &failure).await;
                return Err(failure.before_start());
            }
        };
        self.execute(job, ctx, run, source, prepared).await
    }

    /// Says in the repository's CI status why a run could not start, so that a maintainer
    /// who looks at gitworkshop sees it and not nothing. Only when the request names the
    /// repository: the events must name it. The run id is the request's id, as there may be
    /// no plan to derive one from.
    async fn report_not_started(
        &self,
        job: &Job,
        run: &RunRequest,
        source: &CiSource,
        failure: &JobFailure,
    ) {
        let Some(repo_id) = &run.repo_id else {
            return;
        };
        let context = RunContext {
            repo: run.repo.clone(),
            commit: run.commit.clone(),
            repo_id: Some(repo_id.clone()),
            ..RunContext::default()
        };
        let mut reason = failure.message.clone();
        if !failure.content.is_empty() {
            reason = format!("{reason}\n{}", failure.content);
        }
        let published = crate::status::publish_not_started(
            &self.client,
            &context,
            source,
            &job.event.id.to_hex(),
            &reason,
        )
        .await;
        if let Err(err) = published {
            tracing::warn!(request = %job.event.id, "no CI status for a run that did not start: {err}");
        }
    }

    /// Everything before the run: the pipeline at the commit, its plan, runners, mandate,
    /// repository and maintainers. Fills in `source` as it learns the pipeline file.
    async fn prepare(
        &self,
        job: &Job,
        ctx: &JobContext,
        run: &RunRequest,
        source: &mut CiSource,
    ) -> Result<Prepared, JobFailure> {
        if run.pull_request.is_some() && !run.secrets.is_empty() {
            return Err(JobFailure::new(
                "a pull-request run gets no secrets: its pipeline file and commit are a \
                 contributor's",
            ));
        }
        let replay = match run.manual_trigger {
            Some(id) => Some(self.manual_trigger(id, run).await?),
            None => None,
        };
        let checkout = self.config.work_root.join(job.event.id.to_hex());
        let _ = std::fs::remove_dir_all(&checkout);
        let fetched =
            quorum_runner::git::fetch_commit(&run.repo, &run.commit, &checkout, &self.config.git)
                .await;
        let text = fetched
            .map_err(|e| JobFailure::new(e.to_string()))
            .and_then(|_| {
                std::fs::read_to_string(checkout.join(quorum_pipeline::PIPELINE_PATH)).map_err(
                    |_| {
                        JobFailure::new(format!(
                            "commit {} has no {}",
                            run.commit,
                            quorum_pipeline::PIPELINE_PATH
                        ))
                    },
                )
            });
        let _ = std::fs::remove_dir_all(&checkout);
        let text = text?;
        *source = CiSource::of_pipeline(&text, run.git_ref.clone());
        if let Some(pr) = &run.pull_request {
            *source = source.clone().for_pull_request(pr.clone());
        }
        if let Some(accepted) = replay {
            *source = source.clone().replayed_by(accepted.quote());
            let named = accepted.trigger.context.workflow.and_then(|w| w.sha256);
            if named != source.workflow_sha256 {
                return Err(JobFailure::new(format!(
                    "the manual trigger names workflow sha256 {}, but {} at {} has {}",
                    named.map(|h| h.to_hex()).unwrap_or_default(),
                    quorum_pipeline::PIPELINE_PATH,
                    run.commit,
                    source
                        .workflow_sha256
                        .map(|h| h.to_hex())
                        .unwrap_or_default()
                )));
            }
        }
        let plan = quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, &text).map_err(|d| {
            JobFailure::new("the pipeline does not lint").with_content(d.to_string())
        })?;
        let plan_hash = plan.plan_hash();
        if let Some(pinned) = &run.plan_hash
            && *pinned != plan_hash
        {
            return Err(JobFailure::new(format!(
                "the pipeline at {} has plan hash {plan_hash}, not the requested {pinned}",
                run.commit
            )));
        }
        let plan = match &run.pull_request {
            None => plan,
            Some(_) => {
                if !plan.triggered_by(&quorum_pipeline::TriggerEvent::PullRequest) {
                    return Err(JobFailure::new(format!(
                        "the pipeline at {} does not run on pull requests (`on.pull_request`)",
                        run.commit
                    )));
                }
                let (narrow, left_out) = plan.for_pull_request();
                for (id, reason) in &left_out {
                    tracing::info!(request = %job.event.id, job = %id, "left out of the pull-request run: {reason}");
                }
                if narrow.jobs.is_empty() {
                    return Err(JobFailure::new(format!(
                        "a pull-request run leaves out every job: {}",
                        left_out
                            .iter()
                            .map(|(id, reason)| format!("{id} ({reason})"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                narrow
            }
        };
        // The router's own policy applies only when the request leaves the runners open.
        let select = if run.runners.is_empty() {
            self.config.select.clone()
        } else {
            None
        };
        let runners = if !run.runners.is_empty() {
            run.runners.clone()
        } else if !self.config.runners.is_empty() {
            self.config.runners.clone()
        } else {
            self.client
                .discover(StepJob::kind(), Duration::from_secs(5))
                .await
                .map_err(|e| JobFailure::new(format!("cannot find runners: {e}")))?
                .into_iter()
                .map(|(key, _)| key)
                .collect()
        };
        if runners.is_empty() {
            return Err(JobFailure::new("no runner DVM is known or announced"));
        }
        let quorum = match run.mandate {
            // A pull-request run has no quorum job left to run under a mandate.
            Some(id) if run.pull_request.is_none() => Some(self.mandate(id).await?),
            _ => None,
        };
        // A watcher quorum's request names the watchers' own mandate, under which builds never
        // run (its members are watchers, not builders): the run's quorum jobs take the
        // repository's build mandate, as for a request that names none.
        let quorum = match quorum {
            Some(named) if !named.mandate.is_for_watchers() => Some(named),
            _ => self.current_mandate(run.repo_id.as_ref(), &plan).await?,
        };
        let quorum = match quorum {
            Some(quorum) => Some(
                quorum
                    .with_source(&self.client, &run.repo, &run.commit)
                    .await,
            ),
            None => None,
        };
        // The repository's NIP-34 identity, which releases and approval gates need: from the
        // `repo-id` param or the mandate, which must then agree; without one, such gates fail
        // with that reason.
        let repo_id = match (&run.repo_id, quorum.as_ref().map(|q| &q.mandate.repo)) {
            (Some(named), Some(mandated)) if named != mandated => {
                return Err(JobFailure::new(format!(
                    "the request names repository {named}, but its mandate is for {mandated}"
                )));
            }
            (named, mandated) => named.clone().or_else(|| mandated.cloned()),
        };
        let maintainers = match &repo_id {
            Some(repo_id) => self.maintainers(repo_id, &run.maintainers).await?,
            None if run.maintainers.is_empty() => Vec::new(),
            None => {
                return Err(JobFailure::new(
                    "`maintainer` params need the repository they maintain: add `repo-id`",
                ));
            }
        };
        if let Some(pr) = &run.pull_request {
            self.approve_pull_request(ctx, run, pr, repo_id.as_ref(), &plan_hash, source)
                .await?;
        }
        let context = RunContext {
            repo: run.repo.clone(),
            commit: run.commit.clone(),
            inputs: run.inputs.clone(),
            secrets: run.secrets.clone(),
            repo_id,
            maintainers,
            quorum,
        };
        // A paid run hires with the router's wallet, the requester's payment in it, for at
        // most what was paid beyond the fee: the router never spends its own money on a run.
        let (payer, budget_msats) = match (ctx.payment(), &self.config.payer) {
            (Some(paid), Some(payer)) => (
                Some(payer.clone()),
                Some(paid.msats.saturating_sub(self.config.fee_msats())),
            ),
            _ => (None, None),
        };
        let config = EngineConfig {
            runners,
            parent: Some(job.event.id),
            select,
            payer,
            budget_msats,
            spent: Some(Arc::new(Mutex::new(0))),
            ..EngineConfig::default()
        };
        Ok(Prepared {
            plan,
            plan_hash,
            context,
            config,
        })
    }

    /// Runs a prepared run and reports what it did and published.
    async fn execute(
        &self,
        job: &Job,
        ctx: &JobContext,
        run: RunRequest,
        source: CiSource,
        prepared: Prepared,
    ) -> Result<RunReport, JobFailure> {
        let Prepared {
            plan,
            plan_hash,
            context,
            config,
        } = prepared;
        // Until the run ends and says what it spent it earns all it was paid: a run stopped at
        // the router's time limit cannot say, and its runners may have been paid.
        if let Some(paid) = ctx.payment() {
            ctx.charge(paid.msats);
        }
        let prior = recover(&self.client, &plan, job.event.id, Duration::from_secs(5)).await;
        if !prior.done.is_empty() || !prior.resume.is_empty() {
            tracing::info!(
                run = %job.event.id,
                done = prior.done.len(),
                chains = prior.resume.len(),
                "resuming a run"
            );
        }
        let mut reporter = Partial {
            ctx: ctx.clone(),
            lines: Arc::new(Mutex::new(Vec::new())),
        };
        // The same run object `quorum run` drives: progress, jobs, release and CI status,
        // all signed by the router's key (the quorum signs its own binding).
        let pipeline_run = PipelineRun::new(&self.client, &plan, &context, &config)
            .with_release(ReleaseOptions {
                bundle_uploader: self.config.bundle_store.clone(),
                ..ReleaseOptions::default()
            })
            .with_ci_source(source);
        let end = tokio::select! {
            end = pipeline_run.run(prior, &mut reporter) => end,
            () = ctx.cancelled() => {
                self.charge(ctx, &config);
                return Err(JobFailure::new("cancelled"));
            }
        };
        let payment = self.charge(ctx, &config);
        let mut published = Published::default();
        match &end.release {
            Ok(Some(release)) => {
                published.release = Some(release.binding.to_hex());
                published.files = release.files.iter().map(|id| id.to_hex()).collect();
                published.software_release = release.software_release.map(|id| id.to_hex());
                if let Some(reason) = &release.nip82_error {
                    published.problems.push(format!("NIP-82: {reason}"));
                }
            }
            Ok(None) => {}
            Err(reason) => published.problems.push(format!("no release: {reason}")),
        }
        match &end.ci_status {
            Ok(id) => published.ci_status = id.map(|id| id.to_hex()),
            Err(reason) => published.problems.push(format!("no CI status: {reason}")),
        }
        for (relay, copied) in &end.repository_relays {
            if let Err(reason) = copied {
                published.problems.push(format!(
                    "not copied to the repository's relay {relay}: {reason}"
                ));
            }
        }
        Ok(RunReport {
            run: end.run,
            repo: run.repo,
            commit: run.commit,
            plan_hash,
            status: if end.succeeded { "success" } else { "failure" }.into(),
            jobs: end.outcome.jobs.iter().map(summary).collect(),
            published,
            payment,
        })
    }

    /// Tells the DVM runtime what a paid run earned: the fee and what the run spent on the
    /// DVMs it hired (handed over, less their change). The runtime gives the rest back to the
    /// requester as change. `None` for an unpaid run.
    fn charge(&self, ctx: &JobContext, config: &EngineConfig) -> Option<RunPayment> {
        let paid = ctx.payment()?.msats;
        if paid == 0 {
            return None;
        }
        let fee = self.config.fee_msats().min(paid);
        let spent = config
            .spent
            .as_ref()
            .map_or(0, |spent| *spent.lock().unwrap_or_else(|e| e.into_inner()));
        let runners = spent.min(paid - fee);
        ctx.charge(fee + runners);
        Some(RunPayment {
            paid_msats: paid,
            fee_msats: fee,
            runners_msats: runners,
            change_msats: paid - fee - runners,
        })
    }
}

/// A router serving: its DVM and its manual-trigger inbox.
pub struct RunningRouter {
    dvm: quorum_dvm::Dvm,
    inbox: tokio::task::JoinHandle<()>,
}

impl RunningRouter {
    pub fn public_key(&self) -> PublicKey {
        self.dvm.public_key()
    }

    /// Stops both; runs in progress stay in the journal and resume at the next start.
    pub async fn shutdown(self) {
        // The inbox keeps nothing of its own: a trigger it had not turned into a request yet
        // is found again by the next start's first look.
        self.inbox.abort();
        self.dvm.shutdown().await;
    }
}

/// A run ready to go: what [`Router::prepare`] found.
struct Prepared {
    plan: quorum_pipeline::Plan,
    plan_hash: String,
    context: RunContext,
    config: EngineConfig,
}

fn summary(record: &JobRecord) -> JobSummary {
    let (status, reason) = match &record.state {
        JobState::Succeeded => ("success", None),
        JobState::Failed { reason } => ("failure", Some(reason.clone())),
        JobState::Skipped { reason } => ("skipped", Some(reason.clone())),
    };
    JobSummary {
        id: record.id.clone(),
        name: record.name.clone(),
        status: status.into(),
        reason,
        provider: record.provider.clone(),
        request: record.request.clone(),
        result: record.result.clone(),
        artifacts: record
            .report
            .as_ref()
            .map(|r| r.artifacts.clone())
            .unwrap_or_default(),
        paid_msats: record.paid_msats,
        payments: record
            .payments
            .iter()
            .map(|p| StepPayment {
                dvm: p.dvm.clone(),
                paid_msats: p.paid_msats,
                change_msats: p.change_msats,
            })
            .collect(),
    }
}

impl JobHandler for Router {
    fn kinds(&self) -> Vec<Kind> {
        vec![JobKind::RunPipeline.request_kind()]
    }

    fn offer(&self) -> Offer {
        Offer {
            capabilities: Capabilities {
                arch: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
                // A router runs nothing itself: steps go to runners and their sandboxes.
                sandbox: "none".into(),
                toolchains: vec!["git".into()],
                network: true,
                images: false,
                require_image: false,
            },
            price: self.config.price.clone(),
            limits: JobLimits {
                concurrency: 4,
                max_timeout_secs: self.config.max_run.as_secs(),
                max_request_bytes: 64 * 1024,
            },
        }
    }

    fn max_duration(&self) -> Duration {
        self.config.max_run
    }

    async fn run(&self, job: Job, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let report = self.run_pipeline(&job, &ctx).await?;
        let content = serde_json::to_string(&report)
            .map_err(|e| JobFailure::new(format!("cannot encode the report: {e}")))?;
        Ok(JobOutput { content })
    }
}

/// Reports run progress as `partial` feedback: one line per job transition
/// ([`crate::progress`]), the latest 40 lines.
struct Partial {
    ctx: JobContext,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Partial {
    fn push(&self, line: String) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        lines.push(line);
        let keep = lines.len().saturating_sub(40);
        lines.drain(..keep);
        self.ctx.partial(lines.join("\n"));
    }
}

impl RunReporter for Partial {
    fn job_started(&mut self, job: &PlannedJob) {
        self.push(crate::progress::started_line(&job.id));
    }

    fn job_progress(&mut self, _job: &str, _provider: &PublicKey, _line: &str) {
        // Step logs stay with the runners' own feedback; the run reports job transitions.
    }

    fn job_finished(&mut self, record: &JobRecord) {
        // The lines `quorum run` prints, so that `quorum follow` (which reads them back) shows
        // a routed run as `quorum run` shows a local one: who ran each job, and for a quorum
        // job how many members agreed.
        self.push(crate::progress::finished_line(record));
    }
}
