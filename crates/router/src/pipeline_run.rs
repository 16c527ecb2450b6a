//! One run of a pipeline from plan to outcome, the same whoever drives it — `quorum run` and
//! `quorum demo` on a maintainer's machine, or the router DVM with nobody at a keyboard:
//!
//! 1. the CI progress event (NIP-C1 39842) saying the run has started, republished as jobs
//!    start and finish and renewed every ten minutes (it expires after thirty);
//! 2. the jobs, in dependency order (approvals, quorums, chains included: [`crate::resume`]);
//! 3. copies of the released files on more Blossom servers (BUD-04 mirror), when asked;
//! 4. the release: NIP-94 per file, the release binding (a quorum's own, or this run's key's),
//!    NIP-82, and the verification bundle on Blossom;
//! 5. the CI status that concludes the run (9841 per job, 9842).
//!
//! Steps 1, 3 and 5 are for display and their failures are reported, not fatal. A release that
//! could not be published fails the run when the run knows its repository (it was meant to
//! exist); without the repository's identity nothing can name a release, which is said.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_blossom::ClientError;
use quorum_blossom::client::BlossomClient;
use quorum_dvm::client::JobClient;
use quorum_pipeline::{Plan, PlannedJob};
use quorum_proto::nostr::{EventId, PublicKey, Timestamp};
use quorum_proto::step::ArtifactRef;
use serde::Serialize;
use url::Url;

use crate::release::{Release, ReleaseOptions};
use crate::status::{CiRun, CiSource};
use crate::{EngineConfig, JobRecord, Recovered, RunContext, RunOutcome, RunReporter, run_id};

/// A run about to start: what runs, where, and what to do with what it releases.
pub struct PipelineRun<'a> {
    client: &'a JobClient,
    plan: &'a Plan,
    context: &'a RunContext,
    config: &'a EngineConfig,
    release: ReleaseOptions,
    mirrors: Option<(BlossomClient, Vec<Url>)>,
    ci: CiSource,
}

/// How a run ended, everything it published included.
pub struct RunEnd {
    /// The run id (`run_id` of repository URL, commit and plan).
    pub run: String,
    pub outcome: RunOutcome,
    /// Whether the run succeeded: every job did, and its release (if it has one and knows its
    /// repository) was published.
    pub succeeded: bool,
    /// The concluding CI status (9842), `None` without a repository identity.
    pub ci_status: Result<Option<EventId>, String>,
    /// One report per (server, released file) copy asked for.
    pub mirrors: Vec<MirrorReport>,
    /// The release, `None` when the pipeline releases nothing or the run failed.
    pub release: Result<Option<Release>, String>,
    /// The relays the repository's announcement lists that the run was not connected to, and
    /// whether they took a copy of what the run published for display (status, release).
    pub repository_relays: Vec<(String, Result<(), String>)>,
}

/// One BUD-04 copy of a released file onto another Blossom server.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorReport {
    /// The server asked to copy.
    pub server: String,
    /// `job/path` of the artifact.
    pub name: String,
    pub sha256: String,
    /// `stored`, `refused` (an HTTP error status), `unreachable`, `mismatch` (the server
    /// named other bytes) or `failed`.
    pub status: &'static str,
    /// The server's HTTP status, for a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why it did not work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the server now serves the blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl<'a> PipelineRun<'a> {
    pub fn new(
        client: &'a JobClient,
        plan: &'a Plan,
        context: &'a RunContext,
        config: &'a EngineConfig,
    ) -> Self {
        PipelineRun {
            client,
            plan,
            context,
            config,
            release: ReleaseOptions::default(),
            mirrors: None,
            ci: CiSource::default(),
        }
    }

    /// What the CI events say about the run's origin: the pipeline file's hash, the trigger
    /// and the pushed ref. Without it they say "manual" and carry no file hash.
    pub fn with_ci_source(mut self, source: CiSource) -> Self {
        self.ci = source;
        self
    }

    /// The version, extra URLs and bundle store of the release.
    pub fn with_release(mut self, options: ReleaseOptions) -> Self {
        self.release = options;
        self
    }

    /// Has `servers` copy every released file (BUD-04) before the release is published, so
    /// that its events list the copies; `blossom` signs the requests.
    pub fn with_mirrors(mut self, blossom: BlossomClient, servers: Vec<Url>) -> Self {
        if !servers.is_empty() {
            self.mirrors = Some((blossom, servers));
        }
        self
    }

    /// The run id this run has.
    pub fn id(&self) -> String {
        run_id(&self.context.repo, &self.context.commit, self.plan)
    }

    /// Runs the pipeline (resuming `recovered`: what a restarted router found done) and
    /// publishes what the run publishes; progress goes to `reporter`.
    pub async fn run(&self, recovered: Recovered, reporter: &mut dyn RunReporter) -> RunEnd {
        let run = self.id();
        let started_at = Timestamp::now();
        let ci = CiRun::new(self.client, self.context, &self.ci, &run, started_at);
        let running = Running::default();
        let mut tracking = Tracking {
            inner: reporter,
            running: running.clone(),
        };
        let jobs = crate::resume(
            self.client,
            self.plan,
            self.context,
            self.config,
            recovered,
            &mut tracking,
        );
        let outcome = match &ci {
            None => jobs.await,
            Some(ci) => {
                ci.publish_progress(Vec::new()).await;
                // The progress event lives 30 minutes: renew it while the jobs run, and
                // replace it whenever a job starts or ends so its `in-progress` stays true.
                tokio::pin!(jobs);
                let every = Duration::from_secs(crate::status::PROGRESS_RENEW_SECS);
                let mut renew =
                    tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        outcome = &mut jobs => break outcome,
                        _ = renew.tick() => ci.publish_progress(running.ids()).await,
                        () = running.changed.notified() => ci.publish_progress(running.ids()).await,
                    }
                }
            }
        };
        let reporter = tracking.inner;
        let ci_status = match &ci {
            Some(ci) => ci.publish_ci_status(&outcome).await.map(Some),
            None => Ok(None),
        };
        let mut mirrors = Vec::new();
        if let Some((blossom, servers)) = &self.mirrors {
            let released = crate::release::released_artifacts(self.plan, &outcome);
            for server in servers {
                for (job, artifact) in &released {
                    let report = mirror(blossom, server, job, artifact).await;
                    reporter.mirrored(&report);
                    mirrors.push(report);
                }
            }
        }
        let mut options = self.release.clone();
        for report in &mirrors {
            if let Some(url) = &report.url {
                options
                    .mirrors
                    .entry(report.sha256.clone())
                    .or_default()
                    .push(url.clone());
            }
        }
        let release = crate::release::publish_release_with(
            self.client,
            self.plan,
            self.context,
            &outcome,
            &options,
        )
        .await;
        let succeeded = outcome.succeeded && (release.is_ok() || self.context.repo_id.is_none());
        let repository_relays = self.copy_to_repository_relays(started_at, &release).await;
        RunEnd {
            run,
            outcome,
            succeeded,
            ci_status,
            mirrors,
            release,
            repository_relays,
        }
    }

    /// Copies what the run published for people to see — CI progress and status, the
    /// release's NIP-94 and NIP-82 events and its bindings — to the relays the repository's
    /// announcement lists, where clients following the repository look, when this run was not
    /// connected to them. Bounded (10 s); failures are reported, not fatal.
    async fn copy_to_repository_relays(
        &self,
        started_at: Timestamp,
        release: &Result<Option<Release>, String>,
    ) -> Vec<(String, Result<(), String>)> {
        use quorum_proto::nostr::Filter;
        let Some(repo) = &self.context.repo_id else {
            return Vec::new();
        };
        let timeout = std::time::Duration::from_secs(5);
        let announcements = self
            .client
            .fetch(quorum_proto::nip34::announcements_of(repo), timeout)
            .await
            .unwrap_or_default();
        let Some((_, announcement)) =
            quorum_proto::nip34::newest_announcement(repo, &announcements)
        else {
            return Vec::new();
        };
        let connected = self.client.relays().await;
        let extra: Vec<_> = announcement
            .relays
            .into_iter()
            .filter(|url| !connected.contains(url))
            .collect();
        if extra.is_empty() {
            return Vec::new();
        }
        let display = [
            quorum_proto::nipc1::CI_WORKFLOW_PROGRESS,
            quorum_proto::nipc1::CI_JOB_RESULT,
            quorum_proto::nipc1::CI_WORKFLOW_RESULT,
            quorum_proto::release::FILE_METADATA,
            quorum_proto::release::SOFTWARE_APPLICATION,
            quorum_proto::release::SOFTWARE_RELEASE,
            quorum_proto::release::SOFTWARE_ASSET,
            quorum_proto::release::RELEASE_BINDING,
        ];
        // The run's key signed them, or a maintainer signed the NIP-82 ones (`nip82_signer`).
        let mut authors = vec![self.client.public_key()];
        if let Ok(Some(Release {
            nip82_signer: Some(maintainer),
            ..
        })) = release
        {
            authors.push(*maintainer);
        }
        let mut events = self
            .client
            .fetch(
                Filter::new()
                    .authors(authors)
                    .kinds(display.to_vec())
                    .since(started_at),
                timeout,
            )
            .await
            .unwrap_or_default();
        if let Ok(Some(release)) = release {
            let quorum_bindings: Vec<_> = release
                .bindings
                .iter()
                .filter(|(_, signer)| *signer != self.client.public_key())
                .map(|(id, _)| *id)
                .collect();
            if !quorum_bindings.is_empty() {
                events.extend(
                    self.client
                        .fetch(Filter::new().ids(quorum_bindings), timeout)
                        .await
                        .unwrap_or_default(),
                );
            }
        }
        let failures =
            JobClient::copy_to(&events, &extra, std::time::Duration::from_secs(10)).await;
        extra
            .into_iter()
            .map(|url| {
                let outcome = match failures.iter().find(|(failed, _)| *failed == url) {
                    Some((_, reason)) => Err(reason.clone()),
                    None => Ok(()),
                };
                (url.to_string(), outcome)
            })
            .collect()
    }
}

/// The ids of the jobs running now, shared between the reporter that sees them start and end
/// and the loop that republishes the progress event.
#[derive(Clone, Default)]
struct Running {
    ids: Arc<Mutex<BTreeSet<String>>>,
    /// Signalled on every change; a change while nobody waits is kept as one permit.
    changed: Arc<tokio::sync::Notify>,
}

impl Running {
    fn ids(&self) -> Vec<String> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter().cloned().collect()
    }

    fn update(&self, change: impl FnOnce(&mut BTreeSet<String>)) {
        change(&mut self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_one();
    }
}

/// Passes every report on, noting which jobs run.
struct Tracking<'r> {
    inner: &'r mut dyn RunReporter,
    running: Running,
}

impl RunReporter for Tracking<'_> {
    fn job_started(&mut self, job: &PlannedJob) {
        self.running.update(|ids| {
            ids.insert(job.id.clone());
        });
        self.inner.job_started(job);
    }

    fn job_progress(&mut self, job: &str, provider: &PublicKey, line: &str) {
        self.inner.job_progress(job, provider, line);
    }

    fn job_finished(&mut self, record: &JobRecord) {
        self.running.update(|ids| {
            ids.remove(&record.id);
        });
        self.inner.job_finished(record);
    }

    fn mirrored(&mut self, report: &MirrorReport) {
        self.inner.mirrored(report);
    }
}

/// Asks `server` to copy `artifact` from its first URL (BUD-04).
async fn mirror(
    blossom: &BlossomClient,
    server: &Url,
    job: &JobRecord,
    artifact: &ArtifactRef,
) -> MirrorReport {
    let mut report = MirrorReport {
        server: server.to_string(),
        name: format!("{}/{}", job.id, artifact.name),
        sha256: artifact.blob.sha256.clone(),
        status: "failed",
        http_status: None,
        reason: None,
        url: None,
    };
    let source = artifact
        .blob
        .urls
        .first()
        .and_then(|url| Url::parse(url).ok());
    let sha = quorum_proto::blossom::Sha256Hex::parse(&artifact.blob.sha256).ok();
    let (Some(source), Some(sha)) = (source, sha) else {
        report.reason = Some("the artifact has no Blossom URL or sha256".into());
        return report;
    };
    match blossom.mirror(server, &source, sha).await {
        Ok(uploaded) => {
            report.status = "stored";
            report.url = Some(uploaded.descriptor.url);
        }
        Err(ClientError::Status { status, reason, .. }) => {
            report.status = "refused";
            report.http_status = Some(status);
            report.reason = reason;
        }
        Err(error @ ClientError::Transport { .. }) => {
            report.status = "unreachable";
            report.reason = Some(error.to_string());
        }
        Err(error @ ClientError::DescriptorMismatch { .. }) => {
            report.status = "mismatch";
            report.reason = Some(error.to_string());
        }
        Err(error) => report.reason = Some(error.to_string()),
    }
    report
}
