//! CI status for gitworkshop (NIP-C1 as ngit-ci specifies it): a workflow progress event
//! (39842, addressable, expiring within 30 minutes and renewed) while the run goes, then one job
//! result (9841) per job and one workflow result (9842) quoting them, so that clients that show
//! CI for a NIP-34 repository show our runs. A run that cannot start publishes a concluded
//! progress event and a `startup_failure` workflow result saying why. Published only when the
//! run knows its repository's NIP-34 identity, which every such event names.

use std::sync::Mutex;

use quorum_dvm::client::JobClient;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nipc1::{
    CiArtifact, CiContext, CiJobResult, CiWorkflowProgress, CiWorkflowResult, Conclusion,
    PROGRESS_MAX_LIFETIME_SECS, ProgressStatus, PullRequestContext, Quote, RunAddress, Trigger,
    Workflow,
};
use quorum_proto::nostr::{EventBuilder, EventId, Timestamp};
use sha2::{Digest, Sha256};

use crate::{JobState, RunContext, RunOutcome};

/// How often a running run's progress event is renewed: well inside its 30-minute lifetime,
/// so one lost publication does not make the run look dead.
pub const PROGRESS_RENEW_SECS: u64 = 10 * 60;

/// Where a run came from, as NIP-C1's common tags say it beyond [`RunContext`]: the workflow
/// file's hash (`w`), the trigger (`o`) and the pushed ref (`r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiSource {
    /// The sha256 of the pipeline file's bytes at the commit. NIP-C1's `w` hashes the file
    /// content, not our canonical plan (`plan_hash`): a 9840 retry names this hash and a
    /// coordinator compares it with the file it finds.
    pub workflow_sha256: Option<Sha256Hex>,
    pub trigger: Trigger,
    /// The pushed ref, `refs/heads/…` or `refs/tags/…`.
    pub git_ref: Option<String>,
    /// The maintainer's 9840 a re-run answers, quoted (`manual-trigger`) on its 39842 and 9842.
    pub manual_trigger: Option<Quote>,
    /// The pull request a PR run builds: its NIP-22 context goes on every event, so that
    /// gitworkshop shows the run on the pull request's page.
    pub pull_request: Option<PullRequestContext>,
}

impl Default for CiSource {
    /// A run somebody asked for, of a file whose bytes we were not given.
    fn default() -> Self {
        CiSource {
            workflow_sha256: None,
            trigger: Trigger::Manual,
            git_ref: None,
            manual_trigger: None,
            pull_request: None,
        }
    }
}

impl CiSource {
    /// The source of a run of the pipeline file `text`: a push of `git_ref` when one is known
    /// (only a watcher that saw the push knows it), else a run somebody asked for.
    pub fn of_pipeline(text: &str, git_ref: Option<String>) -> Self {
        CiSource {
            workflow_sha256: Some(sha256_of(text.as_bytes())),
            trigger: if git_ref.is_some() {
                Trigger::Push
            } else {
                Trigger::Manual
            },
            git_ref,
            manual_trigger: None,
            pull_request: None,
        }
    }

    /// The same source, as a run of pull request `pr`: `o` is `pull_request`, the events carry
    /// its context and no pushed ref.
    pub fn for_pull_request(mut self, pr: PullRequestContext) -> Self {
        self.trigger = Trigger::PullRequest;
        self.git_ref = None;
        self.pull_request = Some(pr);
        self
    }

    /// The same source, as the replay a maintainer's manual trigger asked for: `o` is
    /// `manual` and the events quote the trigger.
    pub fn replayed_by(mut self, trigger: Quote) -> Self {
        self.trigger = Trigger::Manual;
        self.manual_trigger = Some(trigger);
        self
    }

    /// The common tags of a run of `context`; `None` without a NIP-34 identity.
    pub fn ci_context(&self, context: &RunContext) -> Option<CiContext> {
        let mut ci = CiContext::new(context.repo_id.clone()?, context.commit.clone());
        ci.workflow = Some(Workflow {
            path: quorum_pipeline::PIPELINE_PATH.to_string(),
            sha256: self.workflow_sha256,
        });
        ci.trigger = Some(self.trigger);
        ci.git_ref = self.git_ref.clone();
        ci.pull_request = self.pull_request.clone();
        Some(ci)
    }
}

fn sha256_of(bytes: &[u8]) -> Sha256Hex {
    Sha256Hex::from_bytes(Sha256::digest(bytes).into())
}

/// The CI events of one run attempt: its progress (renewed while it goes) and its conclusion.
pub struct CiRun<'a> {
    client: &'a JobClient,
    run: String,
    context: CiContext,
    manual_trigger: Option<Quote>,
    started_at: Timestamp,
    /// The `created_at` of the last progress event, so that each replacement is strictly
    /// newer (two of the same second would be a tie a relay may settle either way).
    last: Mutex<Option<Timestamp>>,
}

impl<'a> CiRun<'a> {
    /// `None` when `context` has no NIP-34 identity: there is nothing to name.
    pub fn new(
        client: &'a JobClient,
        context: &RunContext,
        source: &CiSource,
        run: &str,
        started_at: Timestamp,
    ) -> Option<Self> {
        Some(CiRun {
            client,
            run: run.to_string(),
            context: source.ci_context(context)?,
            manual_trigger: source.manual_trigger.clone(),
            started_at,
            last: Mutex::new(None),
        })
    }

    fn next_created_at(&self) -> Timestamp {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let at = match *last {
            Some(previous) => Timestamp::now().max(previous + 1u64),
            None => Timestamp::now().max(self.started_at),
        };
        *last = Some(at);
        at
    }

    fn progress(&self, in_progress: Vec<String>, created_at: Timestamp) -> CiWorkflowProgress {
        CiWorkflowProgress {
            identifier: self.run.clone(),
            context: self.context.clone(),
            status: ProgressStatus::InProgress,
            conclusion: None,
            queued_at: Some(self.started_at),
            started_at: Some(self.started_at),
            jobs: Vec::new(),
            manual_trigger: self.manual_trigger.clone(),
            // The spec: `queue` is for queued runs, left out once a job started.
            queue: None,
            in_progress,
            expiration: created_at + PROGRESS_MAX_LIFETIME_SECS,
            content: String::new(),
        }
    }

    /// Says (again) that the run is in progress with the jobs `in_progress` running; the event
    /// expires in 30 minutes unless renewed. A failure is logged: status is for display.
    pub async fn publish_progress(&self, in_progress: Vec<String>) {
        let created_at = self.next_created_at();
        let published = match self.progress(in_progress, created_at).to_event_builder() {
            Ok(builder) => publish(self.client, builder.custom_created_at(created_at)).await,
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = published {
            tracing::warn!(run = %self.run, "CI progress not published: {err}");
        }
    }

    /// Publishes a 9841 per job and the 9842 quoting them, and concludes the progress event.
    /// Returns the workflow result's id.
    pub async fn publish_ci_status(&self, outcome: &RunOutcome) -> Result<EventId, String> {
        let coordinator = self.client.public_key();
        let mut quotes = Vec::new();
        let mut conclusions = Vec::new();
        for job in &outcome.jobs {
            let conclusion = match &job.state {
                JobState::Succeeded => Conclusion::Success,
                JobState::Skipped { .. } => Conclusion::Skipped,
                JobState::Failed { .. } if job.report.as_ref().is_some_and(|r| r.timed_out) => {
                    Conclusion::TimedOut
                }
                JobState::Failed { .. } => Conclusion::Failure,
            };
            conclusions.push(conclusion);
            let report = job.report.as_ref();
            let log_omitted = report.and_then(|r| {
                let omitted = r.log.size.saturating_sub(r.log_tail.len() as u64);
                (omitted > 0).then_some(omitted)
            });
            let result = CiJobResult {
                context: self.context.clone(),
                job: job.id.clone(),
                conclusion,
                // gitworkshop links the full log; a job without a runner log has none to link.
                logs: report
                    .and_then(|r| r.log.urls.first().cloned())
                    .unwrap_or_default(),
                name: Some(job.name.clone()),
                // One tag per file the job produced. A directory artifact is one `.tar` file
                // to us, so it is listed as that file.
                artifacts: report
                    .map(|r| {
                        r.artifacts
                            .iter()
                            .filter_map(|a| {
                                Some(CiArtifact {
                                    url: a.blob.urls.first()?.clone(),
                                    filename: Some(a.name.clone()),
                                    name: Some(a.name.clone()),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                workflow_run: Some(RunAddress {
                    coordinator,
                    run: self.run.clone(),
                }),
                queued_at: Some(self.started_at),
                started_at: Some(self.started_at),
                exit_code: report.and_then(|r| r.exit_code),
                runs_on: job.provider.iter().cloned().collect(),
                log_tail: report.map(|r| r.log_tail.clone()).unwrap_or_default(),
                log_omitted,
            };
            let builder = match result.to_event_builder() {
                Ok(builder) => builder,
                Err(err) => {
                    tracing::debug!(job = %job.id, "no CI job result: {err}");
                    continue;
                }
            };
            let event = self
                .client
                .publish_event(builder)
                .await
                .map_err(|e| format!("cannot publish CI status: {e}"))?;
            quotes.push(Quote::job_result(&event, job.id.clone()));
        }
        let conclusion = Conclusion::roll_up(conclusions).unwrap_or(Conclusion::Neutral);
        self.conclude(conclusion, quotes, String::new()).await
    }

    /// Replaces the progress event with a concluded one and publishes the workflow result.
    async fn conclude(
        &self,
        conclusion: Conclusion,
        jobs: Vec<Quote>,
        content: String,
    ) -> Result<EventId, String> {
        let created_at = self.next_created_at();
        let concluded = CiWorkflowProgress {
            status: ProgressStatus::Concluded,
            conclusion: Some(conclusion),
            jobs: jobs.clone(),
            ..self.progress(Vec::new(), created_at)
        };
        publish(
            self.client,
            concluded
                .to_event_builder()
                .map_err(|e| e.to_string())?
                .custom_created_at(created_at),
        )
        .await
        .map_err(|e| format!("cannot publish CI progress: {e}"))?;
        let workflow = CiWorkflowResult {
            context: self.context.clone(),
            run_id: Some(self.run.clone()),
            conclusion,
            queued_at: Some(self.started_at),
            started_at: Some(self.started_at),
            jobs,
            manual_trigger: self.manual_trigger.clone(),
            content,
        };
        let builder = workflow.to_event_builder().map_err(|e| e.to_string())?;
        self.client
            .publish_event(builder)
            .await
            .map(|event| event.id)
            .map_err(|e| format!("cannot publish CI status: {e}"))
    }
}

async fn publish(client: &JobClient, builder: EventBuilder) -> Result<(), String> {
    client
        .publish_event(builder)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Publishes the CI status of a finished run (see [`CiRun::publish_ci_status`]); `None` when
/// the run has no NIP-34 identity to name. Its `w` carries no hash: callers that have the
/// pipeline file use [`CiRun`] with a [`CiSource`].
pub async fn publish_ci_status(
    client: &JobClient,
    context: &RunContext,
    run: &str,
    outcome: &RunOutcome,
    started_at: Timestamp,
) -> Result<Option<EventId>, String> {
    match CiRun::new(client, context, &CiSource::default(), run, started_at) {
        Some(ci) => ci.publish_ci_status(outcome).await.map(Some),
        None => Ok(None),
    }
}

/// Says that run `run` of `context` could not start, and why: a concluded 39842 and a 9842
/// `startup_failure` (NIP-C1's conclusion for a run that never ran a job) whose content is
/// `reason`, which gitworkshop shows as the run's summary. The spec wants 9842 content empty;
/// a run with no job has no job result to carry the reason, so this is where it goes.
/// `None` without a NIP-34 identity.
pub async fn publish_not_started(
    client: &JobClient,
    context: &RunContext,
    source: &CiSource,
    run: &str,
    reason: &str,
) -> Result<Option<EventId>, String> {
    let Some(ci) = CiRun::new(client, context, source, run, Timestamp::now()) else {
        return Ok(None);
    };
    ci.conclude(Conclusion::StartupFailure, Vec::new(), reason.to_string())
        .await
        .map(Some)
}
