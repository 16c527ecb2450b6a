//! The wrapper DVM role: a quorum member whose work is done by an ordinary, unmodified NIP-90
//! DVM on the open market (protocol §15.8).
//!
//! For each request of the kind it serves, a [`Wrapper`] forwards the job to an inner DVM of
//! kind `K` ([`forward::inner_request`]: the same inputs and params minus the quorum params,
//! signed with the wrapper's own key, addressed to each configured inner provider in turn or
//! open to the market), waits for its result with a [`JobClient`], and answers the customer
//! with that content unchanged. A request that names a quorum mandate is also one the wrapper
//! takes part in: it commits to [`canonical::canonical_result`] of the inner content with its
//! share ([`QuorumMember`]) and adds the outcome to its result as tags (`quorum`, the
//! attestation's `e`, `quorum-report`). If the inner DVM answers `error` or does not answer,
//! the wrapper answers `error` with the inner reason and commits to nothing.
//!
//! A quorum request is held to the trust chain like a runner's (protocol §16): the wrapper
//! admits it (mandate, requester, source evidence), fetches the commit and derives the DVM job
//! from the pipeline there (`quorum_runner::derive`), and forwards the plan's job, never the
//! request's word, to the one inner DVM the mandate names for it (`inner` tags: each wrapper of
//! a quorum a different one; never the open market). Files an inner result claims are fetched
//! and hashed before the wrapper commits to them, and the attestation says wrappers built them.

pub mod canonical;
pub mod fetch;
pub mod forward;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::{Keys, Kind, PublicKey, RelayUrl, Tag};
use quorum_consensus::job::{Admission, Sourced, kinds_to_sign};
use quorum_dvm::client::{ClientError, JobClient, JobOutcome, JobReporter, Patience};
use quorum_dvm::{Job, JobContext, JobFailure, JobHandler, JobOutput};
use quorum_pipeline::dispatch::Checked;
use quorum_proto::agreement::BuildResult;
use quorum_proto::nip89::{Capabilities, JobLimits, Offer, Price};
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobRequest};
use quorum_proto::quorum_job::{QuorumJobParams, QuorumReport};
use quorum_runner::GitPolicy;

use canonical::Canonical;
pub use fetch::DownloadPolicy;

pub use quorum_consensus::job::QuorumMember;
pub use quorum_consensus::member::MemberConfig;

pub use quorum_proto::quorum_job::{MARKER_ATTESTATION, TAG_QUORUM, TAG_QUORUM_REPORT};

/// Why a wrapper cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    #[error("kind {0} is not a NIP-90 job request kind (5000-5999)")]
    NotAJobKind(u16),
    #[error(
        "a wrapper that serves kind {0} and forwards kind {0} to the open market would take its \
         own forwarded requests (and those of other such wrappers) in a loop: name the inner \
         DVM (--inner-provider) or serve another kind (--kind)"
    )]
    OpenLoop(u16),
    #[error("cannot connect the wrapper's job client: {0}")]
    Client(#[from] ClientError),
}

/// How a wrapper is set up by its operator.
#[derive(Debug, Clone)]
pub struct WrapperConfig {
    /// The request kind the wrapper serves (often the same as `inner_kind`).
    pub kind: Kind,
    /// The kind of the ordinary DVMs it delegates to.
    pub inner_kind: Kind,
    /// Inner DVMs to ask, in order of preference (the next one on error or timeout); empty =
    /// the open market.
    pub inner_providers: Vec<PublicKey>,
    /// Longest wait for one inner DVM's answer.
    pub timeout: Duration,
    /// How long an inner DVM may take to acknowledge the job, or stay silent while on it.
    pub patience: Patience,
    /// The relays the wrapper works on; inner DVMs are asked to answer there.
    pub relays: Vec<RelayUrl>,
    /// Jobs at once (announced; the runtime enforces it).
    pub concurrency: u32,
    pub max_request_bytes: u64,
    pub price_msats: u64,
    /// Where quorum jobs' commits are fetched to read the pipeline (one dir per job, removed
    /// afterwards).
    pub work_root: PathBuf,
    /// Which repositories may be fetched for that.
    pub git: GitPolicy,
    /// Where and how much of the files an inner DVM's result claims may be fetched to hash
    /// them ([`fetch`]).
    pub downloads: DownloadPolicy,
}

impl WrapperConfig {
    /// A wrapper serving and forwarding `inner_kind` on `relays`, open to the market, with a
    /// 10-minute timeout per inner DVM; quorum jobs' checkouts under `work_root`.
    pub fn new(inner_kind: Kind, relays: Vec<RelayUrl>, work_root: PathBuf) -> Self {
        WrapperConfig {
            kind: inner_kind,
            inner_kind,
            inner_providers: Vec::new(),
            timeout: Duration::from_secs(600),
            patience: Patience {
                until_taken: Duration::from_secs(30),
                silence: Duration::from_secs(150),
            },
            relays,
            concurrency: 4,
            max_request_bytes: 64 * 1024,
            price_msats: 0,
            work_root,
            git: GitPolicy::default(),
            downloads: DownloadPolicy::default(),
        }
    }

    fn check(&self) -> Result<(), WrapperError> {
        for kind in [self.kind, self.inner_kind] {
            if !quorum_proto::kinds::is_job_request(kind) {
                return Err(WrapperError::NotAJobKind(kind.as_u16()));
            }
        }
        if self.kind == self.inner_kind && self.inner_providers.is_empty() {
            return Err(WrapperError::OpenLoop(self.kind.as_u16()));
        }
        Ok(())
    }
}

/// The wrapper role.
pub struct Wrapper {
    config: WrapperConfig,
    client: Arc<JobClient>,
    /// This wrapper as a quorum member: set when it may hold key shares.
    quorum: Option<QuorumMember>,
}

/// What the inner DVM answered.
#[derive(Debug, Clone)]
pub struct InnerResult {
    pub provider: PublicKey,
    pub content: String,
}

impl Wrapper {
    /// A wrapper whose inner requests `client` signs (use the wrapper's DVM key, so inner DVMs
    /// see who asks); the client gets the configured patience.
    pub fn new(config: WrapperConfig, client: JobClient) -> Result<Self, WrapperError> {
        config.check()?;
        let client = client.with_patience(config.patience);
        Ok(Wrapper {
            config,
            client: Arc::new(client),
            quorum: None,
        })
    }

    /// Connects a job client with `keys` to the configured relays and makes a wrapper.
    pub async fn connect(config: WrapperConfig, keys: Keys) -> Result<Self, WrapperError> {
        config.check()?;
        let client = JobClient::connect(&config.relays, keys).await?;
        Wrapper::new(config, client)
    }
    /// Lets the wrapper serve quorum jobs with the shares `member` finds.
    pub fn with_quorum(mut self, member: QuorumMember) -> Self {
        self.quorum = Some(member);
        self
    }

    pub fn config(&self) -> &WrapperConfig {
        &self.config
    }

    /// Asks the inner DVMs, in order, until one answers with a result.
    pub async fn delegate(
        &self,
        job: &Job,
        reporter: &mut dyn JobReporter,
    ) -> Result<InnerResult, JobFailure> {
        let encrypted = JobRequest::is_encrypted(&job.event);
        let providers: Vec<Option<PublicKey>> = if self.config.inner_providers.is_empty() {
            if encrypted {
                return Err(JobFailure::new(
                    "this wrapper forwards to the open market, where an encrypted request \
                     cannot go: send it in the clear or to another DVM",
                ));
            }
            vec![None]
        } else {
            self.config
                .inner_providers
                .iter()
                .copied()
                .map(Some)
                .collect()
        };
        self.forward(job, &job.request, encrypted, providers, reporter)
            .await
    }

    /// Forwards `outer` (the job's request, or the plan's rendering of it) to `providers` in
    /// turn until one answers with a result.
    async fn forward(
        &self,
        job: &Job,
        outer: &JobRequest,
        encrypted: bool,
        providers: Vec<Option<PublicKey>>,
        reporter: &mut dyn JobReporter,
    ) -> Result<InnerResult, JobFailure> {
        let mut failures = Vec::new();
        for provider in providers {
            let inner = forward::inner_request(
                outer,
                job.event.id,
                self.config.inner_kind,
                provider,
                &self.config.relays,
            )
            .map_err(|e| JobFailure::new(format!("cannot build the inner request: {e}")))?;
            let who = provider.map_or_else(
                || "the open market".to_string(),
                |p| format!("inner DVM {}", p.to_hex()),
            );
            match self
                .client
                .run(&inner, encrypted, self.config.timeout, reporter)
                .await
            {
                Ok(JobOutcome::Result {
                    provider, content, ..
                }) => return Ok(InnerResult { provider, content }),
                Ok(JobOutcome::Error {
                    provider, feedback, ..
                }) => {
                    let reason = feedback.extra.unwrap_or_else(|| "no reason given".into());
                    tracing::info!(request = %job.event.id, inner = %provider, "inner DVM failed: {reason}");
                    failures.push(format!(
                        "inner DVM {} answered error: {reason}",
                        provider.to_hex()
                    ));
                }
                Err(err) => {
                    tracing::info!(request = %job.event.id, inner = %who, "no inner result: {err}");
                    failures.push(format!("{who}: {err}"));
                }
            }
        }
        Err(JobFailure::new(failures.join("; ")))
    }

    /// A quorum request, before anything is forwarded: admitted (mandate, requester, source),
    /// the DVM job derived from the pipeline at the commit, and the inner DVM the mandate names
    /// for this wrapper.
    async fn prepare_quorum_job(
        &self,
        job: &Job,
        params: &QuorumJobParams,
    ) -> Result<
        (
            Admission,
            quorum_runner::derive::Derived,
            JobRequest,
            PublicKey,
        ),
        JobFailure,
    > {
        let refuse = |reason: String| {
            tracing::warn!(request = %job.event.id, author = %job.event.pubkey, "refused: {reason}");
            JobFailure::new(format!("refused: {reason}"))
        };
        let Some(member) = &self.quorum else {
            return Err(refuse(
                "this wrapper holds no quorum shares, so it takes no quorum jobs".into(),
            ));
        };
        let needed = kinds_to_sign(&job.event, params);
        let admission = member
            .admit(
                &job.event.pubkey,
                params,
                job.request
                    .param_value(quorum_pipeline::dispatch::PARAM_JOB),
                &needed,
                Sourced::FromRepository,
            )
            .await
            .map_err(|e| refuse(e.to_string()))?;
        let me = member.public_key();
        let inner = *admission.mandate.rules.inner.get(&me).ok_or_else(|| {
            refuse(format!(
                "inner: mandate {} names no inner DVM for this wrapper (an `inner` tag): a \
                 quorum's wrappers each forward to a different DVM the maintainer chose, never \
                 to the open market",
                admission.mandate_event.id
            ))
        })?;
        if !self.config.inner_providers.is_empty() && !self.config.inner_providers.contains(&inner)
        {
            return Err(refuse(format!(
                "inner: mandate {} says this wrapper forwards to {}, which its operator did not \
                 configure (--inner-provider)",
                admission.mandate_event.id,
                inner.to_hex()
            )));
        }
        let source = params.source.as_ref().expect("admission requires a source");
        let dir = self.config.work_root.join(job.event.id.to_hex());
        let _ = std::fs::remove_dir_all(&dir);
        let derived = async {
            quorum_runner::git::fetch_commit(&source.url, &params.commit, &dir, &self.config.git)
                .await
                .map_err(|e| e.to_string())?;
            quorum_runner::derive::derive(
                &admission,
                &job.event,
                &job.request,
                &dir,
                &self.config.git,
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await;
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove checkout {}: {err}", dir.display());
        }
        let derived = derived.map_err(refuse)?;
        let Checked::Dvm(rendered) = derived.checked.clone() else {
            return Err(refuse(format!(
                "job {} is a script job: runners build it, not wrappers",
                derived.job.id
            )));
        };
        Ok((admission, derived, rendered, inner))
    }

    /// The result to commit to for an inner DVM's `content`: its bytes' hash, or the files it
    /// claims once each was fetched ([`fetch`], under the operator's [`DownloadPolicy`]) and
    /// its bytes hashed to the claimed sha256.
    async fn committed_result(&self, content: &str) -> Result<BuildResult, String> {
        let canonical = canonical::canonical_result(content);
        if let Canonical::Claimed(files) = &canonical {
            let policy = &self.config.downloads;
            let deadline = tokio::time::Instant::now() + policy.timeout;
            let mut budget = policy.max_bytes;
            for file in files {
                let mut failures = Vec::new();
                let mut fetched = false;
                for url in &file.urls {
                    let Ok(parsed) = url::Url::parse(url) else {
                        failures.push(format!("{url}: not a URL"));
                        continue;
                    };
                    match fetch::sha256_of(&parsed, policy, budget, deadline).await {
                        Ok(got) if got.sha256 == file.sha256 => {
                            budget -= got.size;
                            fetched = true;
                            break;
                        }
                        Ok(got) => failures.push(format!(
                            "{url}: its bytes hash to {}, not the claimed {}",
                            got.sha256, file.sha256
                        )),
                        Err(err) => failures.push(format!("{url}: {err}")),
                    }
                }
                if !fetched {
                    return Err(format!(
                        "the inner DVM claims files whose bytes do not check out: {}: {}",
                        file.name,
                        failures.join("; ")
                    ));
                }
            }
        }
        Ok(canonical.result())
    }

    /// This wrapper's part in the quorum, with the inner DVM's content.
    async fn take_part(
        &self,
        job: &Job,
        admission: &Admission,
        derived: &quorum_runner::derive::Derived,
        content: &str,
    ) -> QuorumReport {
        let evidence = derived.evidence.clone();
        let unserved = |failure: String| QuorumReport {
            quorum: admission.quorum.to_hex(),
            mandate: admission.params.mandate.to_hex(),
            failure: Some(failure),
            ..QuorumReport::default()
        };
        let Some(member) = &self.quorum else {
            return unserved("this wrapper holds no quorum shares".into());
        };
        let result = match self.committed_result(content).await {
            Ok(result) => result,
            Err(failure) => {
                tracing::warn!(request = %job.event.id, "quorum: {failure}");
                return unserved(failure);
            }
        };
        let wrapped = Some(self.config.inner_kind.as_u16());
        match member
            .serve(admission, &job.event, Some(evidence), wrapped, result)
            .await
        {
            Ok((report, outcome)) => {
                if let Some(failure) = &outcome.failure {
                    tracing::warn!(request = %job.event.id, "quorum: {failure}");
                }
                // The approval requests of a run expire after a day; so does the wait.
                quorum_runner::release_after_approval(
                    member,
                    &job.event,
                    admission,
                    derived,
                    &outcome,
                    std::time::Duration::from_secs(24 * 3600),
                );
                report
            }
            Err(err) => {
                tracing::warn!(request = %job.event.id, "quorum: {err}");
                unserved(err.to_string())
            }
        }
    }
}

/// The result tags for a member's report (`QuorumReport::to_result_tags`).
pub fn report_tags(report: &QuorumReport) -> Vec<Tag> {
    report.to_result_tags()
}

/// A wrapper's report from its result event's `quorum-report` tag.
pub fn report_of(result: &nostr_sdk::prelude::Event) -> Option<QuorumReport> {
    QuorumReport::from_result_tags(result)
}

/// Passes the inner DVM's log tails on as the wrapper's own `partial` feedback.
struct Relay<'a>(&'a JobContext);

impl JobReporter for Relay<'_> {
    fn feedback(&mut self, _: &PublicKey, feedback: &JobFeedback, content: &str) {
        if feedback.status == FeedbackStatus::Partial && !content.is_empty() {
            self.0.partial(content);
        }
    }
}

impl JobHandler for Wrapper {
    fn kinds(&self) -> Vec<Kind> {
        vec![self.config.kind]
    }

    fn offer(&self) -> Offer {
        Offer {
            capabilities: Capabilities {
                arch: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
                // It runs nothing itself: the inner DVM does the work.
                sandbox: "none".into(),
                toolchains: Vec::new(),
                network: false,
                images: false,
                require_image: false,
            },
            price: Price {
                msats_per_job: self.config.price_msats,
                ..Price::default()
            },
            limits: JobLimits {
                concurrency: self.config.concurrency,
                max_timeout_secs: self.config.timeout.as_secs(),
                max_request_bytes: self.config.max_request_bytes,
            },
        }
    }

    fn max_duration(&self) -> Duration {
        let attempts = self.config.inner_providers.len().max(1) as u32;
        // The agreement and signing come after the inner job; their own deadlines end them.
        self.config.timeout * attempts + Duration::from_secs(1200)
    }

    async fn run(&self, job: Job, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let quorum = QuorumJobParams::from_request(&job.request)
            .map_err(|e| JobFailure::new(format!("invalid quorum request: {e}")))?;
        let mut relay = Relay(&ctx);
        let Some(params) = quorum else {
            let inner = tokio::select! {
                inner = self.delegate(&job, &mut relay) => inner?,
                () = ctx.cancelled() => return Err(JobFailure::new("cancelled")),
            };
            tracing::info!(request = %job.event.id, inner = %inner.provider, "inner DVM answered");
            return Ok(JobOutput {
                content: inner.content,
            });
        };
        let (admission, derived, rendered, provider) =
            self.prepare_quorum_job(&job, &params).await?;
        let inner = tokio::select! {
            inner = self.forward(&job, &rendered, false, vec![Some(provider)], &mut relay) => inner?,
            () = ctx.cancelled() => return Err(JobFailure::new("cancelled")),
        };
        tracing::info!(request = %job.event.id, inner = %inner.provider, "inner DVM answered");
        let report = self
            .take_part(&job, &admission, &derived, &inner.content)
            .await;
        ctx.add_result_tags(report_tags(&report));
        Ok(JobOutput {
            content: inner.content,
        })
    }
}
