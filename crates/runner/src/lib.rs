//! The runner DVM: serves run-step jobs (kind 5702).
//!
//! For each job it fetches exactly the requested commit (outside the sandbox), runs the step in
//! the configured [`Sandbox`] with `SOURCE_DATE_EPOCH` set to the commit time, streams the log
//! tail as `partial` feedback, packs the declared artifacts deterministically, uploads the full
//! log and every artifact to each configured Blossom server, and answers with a
//! [`StepReport`]. An `oci:PATH` artifact is an OCI image layout the step wrote: every blob of
//! its one image manifest is re-hashed and uploaded, and the manifest is what the report names
//! (its digest is what quorum members agree on). A step that ran and failed is still a result (its exit code says so); a job
//! that could not run (bad request, unreachable repository, no Blossom server took the
//! artifacts) is `error` feedback.
//!
//! The blobs of an encrypted job are uploaded under a throwaway key made for that job, so
//! that no Blossom list (BUD-12 `GET /list/<pubkey>`, public on most servers) links them to
//! this runner or to each other. Their bytes stay in the clear on the servers: whoever learns
//! a hash (it travels only in the encrypted result) can fetch the blob.
//!
//! A request that names a quorum mandate (`QuorumJobParams`) is one that several runners build
//! independently. Before building, this runner admits it ([`QuorumMember::admit`]: the mandate,
//! the requester, the maintainer-signed evidence of the source), fetches the commit from the
//! clone URL that evidence names, and derives the step from the pipeline at the commit
//! ([`derive`]), running the plan's step, never the request's word; a request that fails a
//! check gets `error` feedback naming it, and nothing is built or signed.
//! After a successful build it takes part in the agreement and signing with its share, and its
//! report says how that went (`StepReport::quorum`).

pub mod derive;
pub mod doctor;
pub mod git;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::Kind;
use quorum_blossom::client::{BlossomClient, ServerOutcome};
use quorum_consensus::job::{Admission, QuorumMember, Sourced, kinds_to_sign};
use quorum_consensus::release_gate::{Gate, PendingRelease};
use quorum_dvm::{Job, JobContext, JobFailure, JobHandler, JobOutput};
use quorum_oci::{ImageCache, ImageLease};
use quorum_pipeline::dispatch::Checked;
use quorum_proto::nip89::{Capabilities, JobLimits, Offer, Price};
use quorum_proto::nip90::JobRequest;
use quorum_proto::quorum_job::{QuorumJobParams, QuorumReport};
use quorum_proto::step::{ArtifactRef, ArtifactSpec, BlobRef, SandboxRef, StepJob, StepReport};
use quorum_sandbox::{LogLine, LogSink, ResourceLimits, Sandbox, SecretString, StepSpec};
use url::Url;

pub use git::GitPolicy;

/// How a runner is set up by its operator.
#[derive(Clone)]
pub struct RunnerConfig {
    /// Where job work dirs live (one per job, removed afterwards).
    pub work_root: PathBuf,
    /// Blossom servers that receive logs and artifacts.
    pub blossom: Vec<Url>,
    pub git: GitPolicy,
    /// Longest timeout a job may ask for; also the default.
    pub max_timeout: Duration,
    /// Limits for every step; a job may ask for less memory or fewer processes, never more.
    pub limits: ResourceLimits,
    /// Whether steps may ask for network access (a namespace of their own with outbound access
    /// only; see `quorum_sandbox::bwrap`). Off unless the operator enables it.
    pub allow_network: bool,
    /// Jobs at once (announced; the runtime enforces it).
    pub concurrency: u32,
    pub max_request_bytes: u64,
    /// Toolchains to announce (what is inside the sandbox).
    pub toolchains: Vec<String>,
    pub price_msats: u64,
    /// Price per second a job runs, in millisats, on top of `price_msats` (prepaid for
    /// `max_timeout`; the change goes back with the result).
    pub msats_per_second: u64,
    /// How long a quorum member waits for the approval gates a release depends on before it
    /// gives up signing the binding (the engine's approval requests expire after 24 h).
    pub approval_wait: Duration,
    /// Cashu mints whose tokens pay for jobs (announced with the price).
    pub mints: Vec<String>,
    /// Where build images are fetched to and kept; `None`: steps naming an image are refused.
    pub images: Option<Arc<ImageCache>>,
    /// Refuse steps that name no image (they would build on this host's own toolchain), and
    /// announce it (`--require-image`).
    pub require_image: bool,
}

impl RunnerConfig {
    pub fn new(work_root: PathBuf, blossom: Vec<Url>) -> Self {
        RunnerConfig {
            work_root,
            blossom,
            git: GitPolicy::default(),
            max_timeout: Duration::from_secs(3600),
            limits: ResourceLimits::default(),
            allow_network: false,
            concurrency: 2,
            approval_wait: Duration::from_secs(24 * 3600),
            max_request_bytes: 64 * 1024,
            toolchains: vec!["sh".into(), "git".into()],
            price_msats: 0,
            msats_per_second: 0,
            mints: Vec::new(),
            images: None,
            require_image: false,
        }
    }
}

/// The runner role.
pub struct Runner {
    config: RunnerConfig,
    sandbox: Arc<dyn Sandbox>,
    blossom: BlossomClient,
    /// This runner as a quorum member: set when it may hold key shares.
    quorum: Option<QuorumMember>,
}

impl Runner {
    /// A runner; a relative `work_root` is taken relative to the current directory now, because
    /// the sandbox binds work dirs by absolute path.
    pub fn new(
        mut config: RunnerConfig,
        sandbox: Arc<dyn Sandbox>,
        blossom: BlossomClient,
    ) -> Self {
        if let Ok(absolute) = std::path::absolute(&config.work_root) {
            config.work_root = absolute;
        }
        Runner {
            config,
            sandbox,
            blossom,
            quorum: None,
        }
    }

    /// Lets the runner serve quorum jobs with the shares `member` finds.
    pub fn with_quorum(mut self, member: QuorumMember) -> Self {
        self.quorum = Some(member);
        self
    }

    /// Before anything is fetched or built: the checks a quorum member makes of a request
    /// (mandate, requester, source evidence).
    async fn admit(&self, job: &Job, params: &QuorumJobParams) -> Result<Admission, JobFailure> {
        let Some(member) = &self.quorum else {
            return Err(JobFailure::new(
                "refused: this runner holds no quorum shares, so it takes no quorum jobs",
            ));
        };
        let needed = kinds_to_sign(&job.event, params);
        member
            .admit(
                &job.event.pubkey,
                params,
                job.request.param_value(quorum_pipeline::dispatch::PARAM_JOB),
                &needed,
                Sourced::FromRepository,
            )
            .await
            .map_err(|err| {
                tracing::warn!(request = %job.event.id, author = %job.event.pubkey, "refused: {err}");
                JobFailure::new(format!("refused: {err}"))
            })
    }

    /// After a build: this runner's part in the quorum the request names. A release that
    /// depends on approval gates gets its binding later, from a task that waits for them
    /// ([`Runner::release_after_approval`]).
    async fn take_part(
        &self,
        job: &Job,
        admission: &Admission,
        derived: derive::Derived,
        report: &StepReport,
    ) -> QuorumReport {
        let evidence = derived.evidence.clone();
        let unserved = |failure: String| QuorumReport {
            mandate: admission.params.mandate.to_hex(),
            failure: Some(failure),
            ..QuorumReport::default()
        };
        let Some(member) = &self.quorum else {
            return unserved("this runner holds no quorum shares".into());
        };
        if !report.succeeded() {
            // A failed build has nothing to commit to; the others count this runner as silent.
            return unserved("the step failed; nothing to commit to".into());
        }
        let files = report
            .artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.blob.sha256.as_str()));
        let result = match quorum_proto::quorum_job::build_result(files) {
            Ok(result) if !result.is_empty() => result,
            Ok(_) => return unserved("the step declared no artifacts to agree on".into()),
            Err(err) => return unserved(err.to_string()),
        };
        match member
            .serve(admission, &job.event, Some(evidence), None, result)
            .await
        {
            Ok((report, outcome)) => {
                if let Some(failure) = &outcome.failure {
                    tracing::warn!(request = %job.event.id, "quorum: {failure}");
                }
                if let Some(member) = &self.quorum {
                    release_after_approval(
                        member,
                        &job.event,
                        admission,
                        &derived,
                        &outcome,
                        self.config.approval_wait,
                    );
                }
                report
            }
            Err(err) => {
                tracing::warn!(request = %job.event.id, "quorum: {err}");
                unserved(err.to_string())
            }
        }
    }

    /// Fetches the commit, derives the step of a quorum request from the pipeline at it (or
    /// takes an ordinary request's step as asked), runs it and uploads what it made.
    async fn run_step(
        &self,
        job: &Job,
        ctx: &JobContext,
        dir: &Path,
        admission: Option<&Admission>,
    ) -> Result<(StepReport, Option<derive::Derived>), JobFailure> {
        let encrypted = JobRequest::is_encrypted(&job.event);
        let asked = StepJob::from_request(&job.request, encrypted).map_err(|e| {
            JobFailure::new(format!("invalid run-step request: {e}")).before_start()
        })?;
        let uploader = if encrypted {
            self.blossom.with_signer(nostr_sdk::Keys::generate())
        } else {
            self.blossom.clone()
        };
        let src = dir.join("src");
        // A quorum member fetches from the clone URL the owner announced (admitted above), never
        // from a URL only the request names: a request whose step fetches elsewhere is refused
        // by `derive`, without this runner contacting what a stranger points it at.
        let (fetch_url, fetch_commit) = match admission.and_then(|a| {
            a.params
                .source
                .as_ref()
                .map(|source| (source.url.as_str(), a.params.commit.as_str()))
        }) {
            Some(admitted) => admitted,
            None => (asked.repo.as_str(), asked.commit.as_str()),
        };
        // Nothing ran yet when the source cannot be had: a paid job gets its payment back.
        let source_date_epoch = git::fetch_commit(fetch_url, fetch_commit, &src, &self.config.git)
            .await
            .map_err(|e| JobFailure::new(e.to_string()).before_start())?;
        let (step, derived) = match admission {
            None => (asked, None),
            Some(admission) => {
                let derived =
                    derive::derive(admission, &job.event, &job.request, &src, &self.config.git)
                        .await
                        .map_err(|err| {
                            tracing::warn!(request = %job.event.id, "refused: {err}");
                            JobFailure::new(format!("refused: {err}"))
                        })?;
                let Checked::Step(step) = derived.checked.clone() else {
                    return Err(JobFailure::new(format!(
                        "refused: job {} is not a script job",
                        derived.job.id
                    )));
                };
                (step, Some(derived))
            }
        };
        if step.network && !self.config.allow_network {
            return Err(
                JobFailure::new("this runner does not give steps network access").before_start(),
            );
        }
        let timeout = step
            .timeout
            .unwrap_or(self.config.max_timeout)
            .min(self.config.max_timeout);
        // Held until the step is over, so that the image cannot be evicted under it.
        let image = self.image(&step, ctx).await?;

        let mut spec = StepSpec::new(step.script.clone(), src.clone());
        if let Some(lease) = &image {
            spec.rootfs = Some(lease.root().to_path_buf());
            // The image's own environment (PATH above all) first; the job's `env` wins.
            spec.env = lease
                .env()
                .into_iter()
                .filter(|(k, _)| {
                    // The sandbox's own (and names the sandbox would refuse) stay out.
                    let valid = k.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
                        && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
                    valid && !matches!(k.as_str(), "HOME" | "PWD" | "SOURCE_DATE_EPOCH")
                })
                .collect();
        }
        spec.env.extend(step.env.clone());
        spec.secrets = step
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), SecretString::new(v.clone())))
            .collect();
        spec.network = step.network;
        spec.timeout = timeout;
        spec.source_date_epoch = source_date_epoch;
        spec.limits = self.config.limits.clone();
        if let Some(memory) = step.memory_bytes {
            spec.limits.max_memory_bytes = spec.limits.max_memory_bytes.min(memory);
        }
        if let Some(processes) = step.max_processes {
            spec.limits.max_processes = spec.limits.max_processes.min(processes);
        }

        let log_path = dir.join("step.log");
        let mut sink = LogFile::create(&log_path, ctx.clone())
            .map_err(|e| JobFailure::new(format!("cannot write the step log: {e}")))?;
        let outcome = tokio::select! {
            outcome = self.sandbox.run(&spec, &mut sink) => outcome,
            // Dropping the run future kills the step.
            () = ctx.cancelled() => return Err(JobFailure::new("cancelled")),
        };
        let outcome = outcome.map_err(|e| JobFailure::new(format!("sandbox failed: {e}")))?;
        let tail = sink.finish();

        let artifacts = if outcome.success() {
            let out_dir = dir.join("out");
            std::fs::create_dir_all(&out_dir)
                .map_err(|e| JobFailure::new(format!("cannot create the output dir: {e}")))?;
            let (layouts, paths): (Vec<&String>, Vec<&String>) = step
                .artifacts
                .iter()
                .partition(|a| matches!(ArtifactSpec::of(a), ArtifactSpec::OciLayout(_)));
            let packed =
                quorum_sandbox::pack::collect_artifacts(&src, &paths, source_date_epoch, &out_dir)
                    .map_err(|e| {
                        JobFailure::new(format!("artifacts: {e}")).with_content(tail.clone())
                    })?;
            let mut refs = Vec::with_capacity(packed.len() + layouts.len());
            for entry in layouts {
                let image = self
                    .upload_layout(&uploader, &src, entry)
                    .await
                    .map_err(|e| e.with_content(tail.clone()))?;
                refs.push(image);
            }
            for artifact in packed {
                let blob = self.upload(&uploader, &artifact.path).await?;
                if blob.sha256 != artifact.sha256 {
                    return Err(JobFailure::new(format!(
                        "artifact {} changed while uploading",
                        artifact.name
                    )));
                }
                refs.push(ArtifactRef {
                    name: artifact.name,
                    blob,
                });
            }
            refs
        } else {
            Vec::new()
        };
        let log = self.upload(&uploader, &log_path).await?;
        let info = self.sandbox.describe();
        let report = StepReport {
            commit: step.commit,
            exit_code: outcome.exit_code,
            timed_out: outcome.timed_out,
            duration_ms: outcome.duration.as_millis() as u64,
            source_date_epoch,
            artifacts,
            log,
            log_tail: tail,
            sandbox: SandboxRef {
                name: info.name,
                isolated: info.isolated,
                image: image.as_ref().map(|lease| {
                    let named = step.image.as_ref().expect("a lease comes from an image");
                    let mut pinned = named.clone();
                    pinned.tag = None;
                    pinned.digest = Some(lease.digest().clone());
                    pinned.to_string()
                }),
            },
            quorum: None,
            ci_job_result: None,
        };
        Ok((report, derived))
    }

    /// The step's build image, fetched into the cache if need be; `None` for a step without
    /// one (refused when the operator requires images).
    async fn image(
        &self,
        step: &StepJob,
        ctx: &JobContext,
    ) -> Result<Option<ImageLease>, JobFailure> {
        let Some(image) = &step.image else {
            if self.config.require_image {
                return Err(JobFailure::new(
                    "refused: this runner builds only in pinned images (--require-image); give \
                     the job `image: NAME@sha256:…`",
                ));
            }
            return Ok(None);
        };
        let Some(cache) = &self.config.images else {
            return Err(JobFailure::new(format!(
                "refused: this runner has no image cache, so it cannot run {image}"
            )));
        };
        ctx.partial(format!("fetching image {image}"));
        let lease = cache
            .get(image)
            .await
            .map_err(|e| JobFailure::new(format!("image {image}: {e}")))?;
        if lease.fetched() {
            tracing::info!(%image, size = lease.meta().size, "fetched build image");
        }
        Ok(Some(lease))
    }

    /// Uploads every blob of the OCI image layout `entry` (`oci:PATH`) names in the work dir
    /// `src`, config and layers before the manifest (so a server that has the manifest has the
    /// whole image), and reports the manifest: its digest is what builders agree on.
    async fn upload_layout(
        &self,
        uploader: &BlossomClient,
        src: &Path,
        entry: &str,
    ) -> Result<ArtifactRef, JobFailure> {
        let path = ArtifactSpec::of(entry).path();
        let fail = |reason: String| JobFailure::new(format!("artifact {entry}: {reason}"));
        let root = src
            .canonicalize()
            .map_err(|e| fail(format!("cannot open the work dir: {e}")))?;
        let dir = root
            .join(path)
            .canonicalize()
            .map_err(|_| fail("does not exist".into()))?;
        // The job controlled the work dir: the layout must not lead outside it.
        if !dir.starts_with(&root) {
            return Err(fail(format!(
                "resolves to {}, outside the work dir",
                dir.display()
            )));
        }
        let image = tokio::task::spawn_blocking(move || quorum_oci::build::read_layout(&dir))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let mut manifest = None;
        for blob in &image.blobs {
            let stored = self.upload(uploader, &blob.path).await?;
            if stored.sha256 != blob.digest.hex() {
                return Err(fail(format!(
                    "blob {} changed while uploading",
                    blob.digest
                )));
            }
            if blob.digest == image.manifest {
                manifest = Some(stored);
            }
        }
        let blob = manifest.expect("the manifest is one of the image's blobs");
        tracing::info!(artifact = entry, digest = %image.manifest, "uploaded OCI image");
        Ok(ArtifactRef {
            name: entry.to_string(),
            blob,
        })
    }

    /// Uploads one file to every configured server; succeeds if at least one stored it.
    async fn upload(&self, uploader: &BlossomClient, path: &Path) -> Result<BlobRef, JobFailure> {
        let outcomes = uploader
            .upload_to_many(&self.config.blossom, path)
            .await
            .map_err(|e| JobFailure::new(format!("cannot read {}: {e}", path.display())))?;
        let mut urls = Vec::new();
        let mut stored = None;
        let mut refusals = Vec::new();
        for outcome in outcomes {
            match outcome {
                ServerOutcome::Stored { uploaded, .. } => {
                    urls.push(uploaded.descriptor.url.clone());
                    stored = Some(uploaded.descriptor);
                }
                other => {
                    let reason = describe_failure(&other);
                    tracing::warn!("upload to {} failed: {reason}", other.server());
                    refusals.push(format!("{}: {reason}", other.server()));
                }
            }
        }
        let descriptor = stored.ok_or_else(|| {
            JobFailure::new(format!(
                "no Blossom server stored the upload: {}",
                refusals.join("; ")
            ))
        })?;
        Ok(BlobRef {
            sha256: descriptor.sha256.to_string(),
            size: descriptor.size,
            urls,
        })
    }
}

fn describe_failure(outcome: &ServerOutcome) -> String {
    match outcome {
        ServerOutcome::Stored { .. } => "stored".into(),
        ServerOutcome::Refused { status, reason, .. } => match reason {
            Some(reason) => format!("HTTP {status}: {reason}"),
            None => format!("HTTP {status}"),
        },
        ServerOutcome::Unreachable { detail, .. } => format!("unreachable: {detail}"),
        ServerOutcome::DescriptorMismatch { error, .. } => error.to_string(),
        ServerOutcome::Failed { error, .. } => error.to_string(),
    }
}

impl JobHandler for Runner {
    fn kinds(&self) -> Vec<Kind> {
        vec![StepJob::kind()]
    }

    fn offer(&self) -> Offer {
        let info = self.sandbox.describe();
        Offer {
            capabilities: Capabilities {
                arch: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
                sandbox: if info.isolated {
                    info.name
                } else {
                    "none".into()
                },
                toolchains: self.config.toolchains.clone(),
                network: self.config.allow_network && info.network,
                images: self.config.images.is_some() && info.isolated,
                require_image: self.config.require_image,
            },
            price: Price {
                msats_per_job: self.config.price_msats,
                msats_per_second: self.config.msats_per_second,
                mints: self.config.mints.clone(),
            },
            limits: JobLimits {
                concurrency: self.config.concurrency,
                max_timeout_secs: self.config.max_timeout.as_secs(),
                max_request_bytes: self.config.max_request_bytes,
            },
        }
    }

    fn max_duration(&self) -> Duration {
        // The sandbox enforces the step timeout; this covers fetching and uploading too.
        self.config.max_timeout + Duration::from_secs(600)
    }

    async fn run(&self, job: Job, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let quorum = QuorumJobParams::from_request(&job.request)
            .map_err(|e| JobFailure::new(format!("invalid quorum request: {e}")))?;
        let admission = match &quorum {
            Some(params) => Some(self.admit(&job, params).await?),
            None => None,
        };
        let dir = self.config.work_root.join(job.event.id.to_hex());
        // A resumed job starts from scratch: whatever an interrupted run left is not trusted.
        let _ = std::fs::remove_dir_all(&dir);
        let outcome = self.run_step(&job, &ctx, &dir, admission.as_ref()).await;
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove job dir {}: {err}", dir.display());
        }
        let (mut report, derived) = outcome?;
        if let (Some(admission), Some(derived)) = (&admission, derived) {
            report.quorum = Some(self.take_part(&job, admission, derived, &report).await);
        }
        report.ci_job_result = publish_job_result(&job, &ctx, &report).await;
        let content = serde_json::to_string(&report)
            .map_err(|e| JobFailure::new(format!("cannot encode the report: {e}")))?;
        Ok(JobOutput { content })
    }
}

/// Signs the job's NIP-C1 job result (9841) with the runner's own key, as the spec wants of
/// the provider that ran a job, when the request names the run's progress event (`ci-run`)
/// and the job (`job`). The result takes its context (repository, commit, workflow, trigger)
/// from that progress event, which must be the requester's own: a runner speaks only about
/// runs of whoever asked it. Returns the result's id; `None` (with a log line) when there is
/// nothing to sign or it could not be published, and the coordinator then signs one for it.
async fn publish_job_result(job: &Job, ctx: &JobContext, report: &StepReport) -> Option<String> {
    use quorum_proto::nipc1::{
        CI_WORKFLOW_PROGRESS, CiJobResult, CiWorkflowProgress, PARAM_CI_RUN, RunAddress,
    };
    let address = job.request.param_value(PARAM_CI_RUN)?;
    let job_id = job
        .request
        .param_value(quorum_pipeline::dispatch::PARAM_JOB)?;
    let address = match RunAddress::parse(address) {
        Ok(address) if address.coordinator == job.event.pubkey => address,
        Ok(_) => {
            tracing::warn!(request = %job.event.id, "`ci-run` names another requester's run: no job result signed");
            return None;
        }
        Err(err) => {
            tracing::warn!(request = %job.event.id, "no job result signed: {err}");
            return None;
        }
    };
    let filter = quorum_proto::nostr::Filter::new()
        .kind(CI_WORKFLOW_PROGRESS)
        .author(address.coordinator)
        .identifier(address.run.clone());
    let found = match ctx.fetch(filter, Duration::from_secs(5)).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(request = %job.event.id, "no job result signed: {err}");
            return None;
        }
    };
    let progress = found
        .iter()
        .filter(|e| e.verify().is_ok())
        .max_by_key(|e| e.created_at)
        .and_then(|e| CiWorkflowProgress::from_event(e).ok());
    let Some(progress) = progress else {
        tracing::warn!(request = %job.event.id, run = %address, "the run's progress event is not on the relays: no job result signed");
        return None;
    };
    let encrypted = JobRequest::is_encrypted(&job.event);
    let name = StepJob::from_request(&job.request, encrypted)
        .ok()
        .and_then(|step| step.name);
    let result = CiJobResult::of_step(
        progress.context,
        job_id,
        name,
        report,
        address,
        vec![ctx.public_key().to_hex()],
    );
    let published = match result.to_event_builder() {
        Ok(builder) => ctx.publish(builder).await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match published {
        Ok(event) => Some(event.id.to_hex()),
        Err(err) => {
            tracing::warn!(request = %job.event.id, "job result not published: {err}");
            None
        }
    }
}

/// When the quorum signed the attestation of a release job whose release depends on approval
/// gates: starts a task that waits for them and then signs the binding with the other agreeing
/// members (the engine waits for it before publishing the release). For runners and wrappers.
pub fn release_after_approval(
    member: &QuorumMember,
    request: &nostr_sdk::Event,
    admission: &Admission,
    derived: &derive::Derived,
    outcome: &quorum_consensus::member::MemberOutcome,
    wait: Duration,
) {
    let (Some(release), Some(attestation), Some(source)) = (
        admission.params.release.clone(),
        outcome.attestation().cloned(),
        admission.source.as_ref(),
    ) else {
        return;
    };
    if release.gates.is_empty() {
        return;
    }
    let gates = derived
        .plan
        .release_gates()
        .into_iter()
        .filter_map(|gate| match &gate.spec {
            quorum_pipeline::JobSpec::Approval {
                required,
                from,
                show,
            } => Some(Gate {
                job: gate.id.clone(),
                required: *required,
                from: from
                    .iter()
                    .filter_map(|k| nostr_sdk::PublicKey::parse(k).ok())
                    .collect(),
                show: show.clone(),
            }),
            _ => None,
        })
        .collect();
    let pending = PendingRelease {
        request: request.clone(),
        release,
        commit: admission.params.commit.clone(),
        files: outcome.agreement.tally.agreed_result(),
        attestation,
        signers: outcome.agreement.tally.agreed.iter().copied().collect(),
        announcement: source.announcement.clone(),
        gates,
    };
    let member = member.clone();
    let admission = admission.clone();
    tokio::spawn(async move {
        let request = pending.request.id;
        match member.sign_release(&admission, &pending, wait).await {
            Ok(binding) => {
                tracing::debug!(%request, binding = %binding.id, "release binding signed after approval")
            }
            Err(err) => tracing::warn!(%request, "no release binding: {err}"),
        }
    });
}

/// The step's log: every (already redacted) line to a file for upload, and the recent tail to
/// the job's `partial` feedback.
struct LogFile {
    file: std::io::BufWriter<std::fs::File>,
    tail: Arc<Mutex<String>>,
    ctx: JobContext,
    last_partial: Instant,
}

const TAIL_BYTES: usize = 4096;
const PARTIAL_EVERY: Duration = Duration::from_millis(250);

impl LogFile {
    fn create(path: &Path, ctx: JobContext) -> std::io::Result<Self> {
        Ok(LogFile {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
            tail: Arc::new(Mutex::new(String::new())),
            ctx,
            last_partial: Instant::now(),
        })
    }

    /// Flushes the file and returns the final tail (at most [`TAIL_BYTES`]).
    fn finish(&mut self) -> String {
        use std::io::Write;
        if let Err(err) = self.file.flush() {
            tracing::warn!("cannot flush the step log: {err}");
        }
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        let mut cut = tail.len().saturating_sub(TAIL_BYTES);
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail[cut..].to_string()
    }
}

impl LogSink for LogFile {
    fn line(&mut self, line: LogLine) {
        use std::io::Write;
        // A log that cannot be written loses lines, not the job.
        let _ = writeln!(self.file, "{}", line.text);
        let Ok(mut tail) = self.tail.lock() else {
            return;
        };
        tail.push_str(&line.text);
        tail.push('\n');
        if tail.len() > 2 * TAIL_BYTES {
            let mut cut = tail.len() - TAIL_BYTES;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
        if self.last_partial.elapsed() >= PARTIAL_EVERY {
            self.ctx.partial(tail.clone());
            self.last_partial = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(config: RunnerConfig) -> Runner {
        Runner::new(
            config,
            Arc::new(quorum_sandbox::Unsandboxed::new()),
            BlossomClient::new(nostr_sdk::Keys::generate()),
        )
    }

    #[test]
    fn steps_get_no_network_unless_the_operator_allows_it_and_the_offer_says_which() {
        let config = RunnerConfig::new("/tmp/w".into(), Vec::new());
        assert!(!config.allow_network, "network is off by default");
        assert!(!runner(config.clone()).offer().capabilities.network);
        let mut open = config;
        open.allow_network = true;
        assert!(runner(open).offer().capabilities.network);
    }
}
