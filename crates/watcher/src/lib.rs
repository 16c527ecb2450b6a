//! The git watcher: sees new commits on a repository's refs and starts one pipeline run each.
//!
//! It learns where the refs are either from the maintainers' signed NIP-34 repository state
//! (kind 30618, from the maintainer set of the owner's 30617 announcement; anyone else's state
//! is ignored) or, for repositories without NIP-34, by polling the git server (`git
//! ls-remote`). For every ref that moved, it fetches the new commit (which proves the server
//! really serves it), reads the pipeline committed there, and,
//! if a push to that ref triggers it, asks a router DVM to run it (kind 5700, the plan hash
//! pinned). A run is started at most once per repository, commit and plan hash: the watcher
//! remembers what it started, and before starting one it looks on the relays for a request of
//! its own for the same commit and plan, so a crash between publishing and remembering does not
//! start a run twice. The first poll only records where the refs are: history is not replayed.
//!
//! In quorum mode ([`WatcherQuorum`], protocol §15.10) the watcher holds a share of a quorum key
//! and does not sign the run request itself: every watcher of the quorum derives the same
//! unsigned request (authored by the quorum key, dated with the maintainer-signed state that
//! moved the ref — a time every watcher reads alike, and a current one, so that routers take it
//! however old the commit is), they agree on the commit and plan hash by commit-reveal, and the
//! quorum signs the attestation and that request together. The router then sees a run request
//! that `t` watchers vouched for. A watcher following NIP-34 state needs no flag for this: at
//! each poll it looks for the watcher mandate of its repository in force that lists it, and
//! signs its requests itself only while there is none.

pub mod maintainer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_consensus::job::{QuorumJobError, QuorumMember, Sourced};
use quorum_consensus::member::MemberConfig;
use quorum_dvm::client::JobClient;
use quorum_pipeline::TriggerEvent;
use quorum_proto::agreement::{BuildResult, QUORUM_ATTESTATION};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::kinds::JobKind;
use quorum_proto::mandate::{MANDATE, Mandate};
use quorum_proto::nip34::ProposedCommit;
use quorum_proto::nip90::JobRequest;
use quorum_proto::nostr::{EventId, Filter, Keys, PublicKey, RelayUrl, Timestamp};
use quorum_proto::quorum_job::QuorumJobParams;
use quorum_proto::run::RunRequest;
use quorum_runner::GitPolicy;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Git(#[from] quorum_runner::git::GitError),
    #[error("cannot read or write the watcher state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot publish the run request: {0}")]
    Publish(#[from] quorum_dvm::client::ClientError),
    #[error("the quorum keys are for {quorum}, the watcher's client signs as {client}")]
    QuorumKeys {
        quorum: PublicKey,
        client: PublicKey,
    },
    #[error("mandate {mandate}: {reason}")]
    Mandate { mandate: EventId, reason: String },
    #[error("the plan hash {0:?} is not a sha256")]
    PlanHash(String),
    #[error(transparent)]
    Quorum(#[from] QuorumJobError),
    #[error("the quorum signed no run request: {0}")]
    NotSigned(String),
    #[error("pull request {id}: {reason}")]
    Proposal { id: EventId, reason: String },
}

/// Where the watcher learns the refs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `git ls-remote` of the repository URL.
    Poll,
    /// The newest 30618 state signed by a maintainer of the owner's 30617 announcement `d`.
    Nip34 {
        owner: PublicKey,
        identifier: String,
    },
}

/// What to watch and whom to ask.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The repository, as the runners will fetch it.
    pub repo: String,
    pub source: Source,
    /// The router DVM that runs the pipelines.
    pub router: PublicKey,
    /// Where the watcher keeps its state and scratch checkouts.
    pub data: PathBuf,
    pub git: GitPolicy,
    /// When set, the watcher may be one member of a quorum of watchers whose key signs the
    /// run requests (§15.10): under the mandate it names, or, when it names none, under the
    /// watcher mandate in force that lists this watcher (none: the watcher signs them).
    pub quorum: Option<WatcherQuorum>,
}

/// What a watcher needs to act as a member of a watcher quorum.
#[derive(Debug, Clone)]
pub struct WatcherQuorum {
    /// The mandate (8704) the quorum acts under; it must allow kinds 8708 and 5700. `None`:
    /// the watcher looks at each poll for a watcher mandate of its repository (NIP-34 source
    /// only) that names it, and signs its requests itself while there is none.
    pub mandate: Option<EventId>,
    /// Where the watcher keeps its shares (`<quorum hex>.json`).
    pub share_dir: PathBuf,
    pub member: MemberConfig,
    /// The relays and keys of the watcher's client: the member talks to the other members
    /// there, under the same key the mandate names.
    pub relays: Vec<RelayUrl>,
    pub keys: Keys,
}

/// A moved ref that started no run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStarted {
    pub ref_name: String,
    pub commit: String,
    pub reason: String,
}

/// A run the watcher started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRun {
    pub ref_name: String,
    pub commit: String,
    pub plan_hash: String,
    /// The run-pipeline request's event id (hex).
    pub request: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Where each ref was at the last poll; `None` before the first poll.
    refs: Option<BTreeMap<String, String>>,
    /// `commit:plan_hash` of every run started.
    started: BTreeSet<String>,
    /// Refs whose new commit started no run because of an error, by ref name: tried again at
    /// every poll while the ref stays there, up to [`MAX_ATTEMPTS`].
    #[serde(default)]
    retry: BTreeMap<String, Retry>,
    /// The pull requests and updates (event ids, hex) decided on: run, not for this pipeline,
    /// or given up on; `None` before the first look, which replays none.
    #[serde(default)]
    proposals: Option<BTreeSet<String>>,
    /// Proposals whose run could not start yet, with the attempts so far.
    #[serde(default)]
    proposal_retry: BTreeMap<String, u32>,
}

/// A commit whose run did not start yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Retry {
    commit: String,
    attempts: u32,
}

/// How often a commit whose run could not start is tried (once per poll) before the watcher
/// gives up on it until its ref moves again.
pub const MAX_ATTEMPTS: u32 = 20;

/// Who signs the run requests of a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// The watcher, with its own key.
    Own,
    /// The watcher quorum's key, under `mandate`.
    Quorum { key: PublicKey, mandate: EventId },
}

/// A watcher of one repository.
pub struct Watcher {
    config: WatchConfig,
    client: JobClient,
    state: State,
    /// The quorum key of the mandate, once looked up (quorum mode only).
    quorum_key: Option<PublicKey>,
    /// The repository that mandate is for, whose newer mandates for the key replace it.
    quorum_repo: Option<quorum_proto::nip34::RepoCoordinate>,
    /// Who signed at the last poll, when no mandate is pinned (to log changes once).
    discovered: Option<Signing>,
    /// The moved refs of the last poll that started nothing because of an error.
    not_started: Vec<NotStarted>,
}

impl Watcher {
    pub fn new(config: WatchConfig, client: JobClient) -> Result<Self, WatchError> {
        if let Some(quorum) = &config.quorum
            && quorum.keys.public_key() != client.public_key()
        {
            return Err(WatchError::QuorumKeys {
                quorum: quorum.keys.public_key(),
                client: client.public_key(),
            });
        }
        let state = load_state(&state_path(&config.data))?;
        Ok(Watcher {
            config,
            client,
            state,
            quorum_key: None,
            quorum_repo: None,
            discovered: None,
            not_started: Vec::new(),
        })
    }

    /// The moved refs of the last [`Watcher::poll`] that started no run because of an error
    /// (a commit the server does not serve, a mandate that does not allow the request, a quorum
    /// that did not agree), with the reason. Each is tried again at the next polls while its
    /// ref stays there, up to [`MAX_ATTEMPTS`] times.
    pub fn not_started(&self) -> &[NotStarted] {
        &self.not_started
    }

    /// One look at the repository; returns the runs it started.
    pub async fn poll(&mut self) -> Result<Vec<StartedRun>, WatchError> {
        let (refs, moved_at) = match &self.config.source {
            Source::Poll => (
                quorum_runner::git::ls_remote(&self.config.repo, &self.config.git).await?,
                None,
            ),
            Source::Nip34 { owner, identifier } => self.signed_refs(owner, identifier).await?,
        };
        let mut started = Vec::new();
        self.not_started.clear();
        if let Source::Nip34 { owner, identifier } = &self.config.source {
            let repo = quorum_proto::nip34::RepoCoordinate::new(*owner, identifier);
            started.extend(self.poll_proposals(&repo).await?);
        }
        let Some(previous) = self.state.refs.replace(refs.clone()) else {
            tracing::info!(
                refs = refs.len(),
                "first look at {}: nothing is replayed",
                self.config.repo
            );
            self.save()?;
            return Ok(started);
        };
        // A retry is for the commit its ref still names; a ref that moved on drops it.
        self.state
            .retry
            .retain(|ref_name, retry| refs.get(ref_name) == Some(&retry.commit));
        for (ref_name, commit) in &refs {
            let retrying = self.state.retry.get(ref_name).map(|r| r.attempts);
            if previous.get(ref_name) == Some(commit) && retrying.is_none() {
                continue;
            }
            match self.consider(ref_name, commit, moved_at).await {
                Ok(run) => {
                    self.state.retry.remove(ref_name);
                    started.extend(run);
                }
                // One bad commit must not stop the others; it is tried again next poll (the
                // server may not serve it yet, a relay may be back), a bounded number of times.
                Err(err) => {
                    let attempts = retrying.unwrap_or(0) + 1;
                    if attempts >= MAX_ATTEMPTS {
                        tracing::warn!(
                            ref_name,
                            commit,
                            attempts,
                            "not started, giving up until the ref moves: {err}"
                        );
                        self.state.retry.remove(ref_name);
                    } else {
                        tracing::warn!(
                            ref_name,
                            commit,
                            attempts,
                            "not started, will retry: {err}"
                        );
                        self.state.retry.insert(
                            ref_name.clone(),
                            Retry {
                                commit: commit.clone(),
                                attempts,
                            },
                        );
                    }
                    self.not_started.push(NotStarted {
                        ref_name: ref_name.clone(),
                        commit: commit.clone(),
                        reason: err.to_string(),
                    });
                }
            }
        }
        self.save()?;
        Ok(started)
    }

    /// The pull requests (1618) and updates (1619) proposed to `repo` that the watcher has not
    /// decided on: each whose pipeline runs on `pull_request` starts one run, signed by the
    /// watcher itself (a contributor's commit is no maintainer-signed state a watcher quorum
    /// could vouch for), with the pull request's context; the router narrows it, gives it no
    /// secrets and, for a contributor who is no maintainer, waits for a maintainer's approval.
    /// The first look only records what is there.
    async fn poll_proposals(
        &mut self,
        repo: &quorum_proto::nip34::RepoCoordinate,
    ) -> Result<Vec<StartedRun>, WatchError> {
        let mut events = self
            .client
            .fetch(
                quorum_proto::nip34::proposals_to(repo),
                Duration::from_secs(5),
            )
            .await?;
        events.sort_by_key(|e| (e.created_at, e.id));
        let Some(mut decided) = self.state.proposals.take() else {
            self.state.proposals = Some(events.iter().map(|e| e.id.to_hex()).collect());
            return Ok(Vec::new());
        };
        let mut started = Vec::new();
        for event in &events {
            let id = event.id.to_hex();
            if decided.contains(&id) {
                continue;
            }
            match self.consider_proposal(repo, event).await {
                Ok(run) => {
                    decided.insert(id.clone());
                    self.state.proposal_retry.remove(&id);
                    started.extend(run);
                }
                Err(err) => {
                    let attempts = self.state.proposal_retry.get(&id).copied().unwrap_or(0) + 1;
                    tracing::warn!(proposal = %id, attempts, "pull-request run not started: {err}");
                    if attempts >= MAX_ATTEMPTS {
                        decided.insert(id.clone());
                        self.state.proposal_retry.remove(&id);
                    } else {
                        self.state.proposal_retry.insert(id.clone(), attempts);
                    }
                    self.not_started.push(NotStarted {
                        ref_name: format!("pull request {id}"),
                        commit: ProposedCommit::from_event(event)
                            .map(|p| p.commit)
                            .unwrap_or_default(),
                        reason: err.to_string(),
                    });
                }
            }
        }
        self.state.proposals = Some(decided);
        self.save()?;
        Ok(started)
    }

    /// Starts the run of one proposal, or decides it needs none (not for `repo`, no pipeline,
    /// a pipeline that does not run on pull requests).
    async fn consider_proposal(
        &mut self,
        repo: &quorum_proto::nip34::RepoCoordinate,
        event: &quorum_proto::nostr::Event,
    ) -> Result<Option<StartedRun>, WatchError> {
        let refuse = |reason: String| WatchError::Proposal {
            id: event.id,
            reason,
        };
        event
            .verify()
            .map_err(|_| refuse("its signature does not verify".into()))?;
        let proposed = ProposedCommit::from_event(event).map_err(|e| refuse(e.to_string()))?;
        if !proposed.repos.contains(repo) {
            return Ok(None);
        }
        let checkout = self.config.data.join("checkout");
        let mut fetched = None;
        let mut errors = Vec::new();
        for url in &proposed.clone {
            let _ = std::fs::remove_dir_all(&checkout);
            match quorum_runner::git::fetch_commit(
                url,
                &proposed.commit,
                &checkout,
                &self.config.git,
            )
            .await
            {
                Ok(_) => {
                    fetched = Some(url.clone());
                    break;
                }
                Err(err) => errors.push(format!("{url}: {err}")),
            }
        }
        let text = std::fs::read_to_string(checkout.join(quorum_pipeline::PIPELINE_PATH));
        let _ = std::fs::remove_dir_all(&checkout);
        let Some(url) = fetched else {
            return Err(refuse(format!(
                "commit {} cannot be fetched: {}",
                proposed.commit,
                errors.join("; ")
            )));
        };
        let Ok(text) = text else {
            tracing::debug!(proposal = %event.id, "no pipeline in the proposed commit");
            return Ok(None);
        };
        let plan = match quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, &text) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                tracing::warn!(proposal = %event.id, "the proposed pipeline does not lint:\n{diagnostics}");
                return Ok(None);
            }
        };
        if !plan.triggered_by(&TriggerEvent::PullRequest) {
            return Ok(None);
        }
        let plan_hash = plan.plan_hash();
        let key = format!("pull-request:{}:{plan_hash}", event.id.to_hex());
        if self.state.started.contains(&key) {
            return Ok(None);
        }
        let mut run = RunRequest::new(url, proposed.commit.clone());
        run.plan_hash = Some(plan_hash.clone());
        run.repo_id = Some(repo.clone());
        run.maintainers = self
            .maintainers(&repo.owner, &repo.identifier)
            .await?
            .into_iter()
            .collect();
        run.pull_request = Some(proposed.context.clone());
        let request = run.to_request().provider(self.config.router);
        let request = self.client.submit(&request, false).await?.id;
        self.state.started.insert(key);
        self.save()?;
        tracing::info!(proposal = %event.id, commit = %proposed.commit, %request, "pull-request run started");
        Ok(Some(StartedRun {
            ref_name: format!("pull request {}", proposed.context.root.to_hex()),
            commit: proposed.commit,
            plan_hash,
            request: request.to_hex(),
        }))
    }

    /// Polls every `interval` until `stop` resolves.
    pub async fn run(mut self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(err) = self.poll().await {
                tracing::warn!("polling {} failed: {err}", self.config.repo);
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        self.client.shutdown().await;
    }

    /// `moved_at`: when the maintainer-signed state that moved the ref was signed (NIP-34
    /// mode), which dates a watcher quorum's request.
    async fn consider(
        &mut self,
        ref_name: &str,
        commit: &str,
        moved_at: Option<Timestamp>,
    ) -> Result<Option<StartedRun>, WatchError> {
        let checkout = self.config.data.join("checkout");
        let _ = std::fs::remove_dir_all(&checkout);
        // Fetching proves the server really serves the commit the listing named.
        let fetched = quorum_runner::git::fetch_commit(
            &self.config.repo,
            commit,
            &checkout,
            &self.config.git,
        )
        .await;
        let text = std::fs::read_to_string(checkout.join(quorum_pipeline::PIPELINE_PATH));
        let _ = std::fs::remove_dir_all(&checkout);
        let commit_time = fetched?;
        let Ok(text) = text else {
            tracing::debug!(ref_name, commit, "no pipeline in this commit");
            return Ok(None);
        };
        let plan = match quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, &text) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                tracing::warn!(
                    ref_name,
                    commit,
                    "the pipeline does not lint:\n{diagnostics}"
                );
                return Ok(None);
            }
        };
        let push = TriggerEvent::Push {
            ref_name: ref_name.to_string(),
        };
        if !plan.triggered_by(&push) {
            return Ok(None);
        }
        let plan_hash = plan.plan_hash();
        let key = format!("{commit}:{plan_hash}");
        let signing = self.signing().await?;
        let mut authors = vec![self.client.public_key()];
        if let Signing::Quorum { key, .. } = signing {
            authors.push(key);
        }
        if self.state.started.contains(&key)
            || self.already_requested(&authors, commit, &plan_hash).await
        {
            self.state.started.insert(key);
            return Ok(None);
        }
        let mut run = RunRequest::new(self.config.repo.clone(), commit);
        run.plan_hash = Some(plan_hash.clone());
        // The router's CI status names the pushed ref (NIP-C1 `r`, `o` = push).
        run.git_ref = Some(ref_name.to_string());
        if let Source::Nip34 { owner, identifier } = &self.config.source {
            // The router's approval gates name the repository and ask its maintainers.
            run.repo_id = Some(quorum_proto::nip34::RepoCoordinate::new(*owner, identifier));
            run.maintainers = self
                .maintainers(owner, identifier)
                .await?
                .into_iter()
                .collect();
        }
        let request = match (signing, &self.config.quorum) {
            (Signing::Quorum { key, mandate }, Some(quorum)) => {
                let quorum = quorum.clone();
                // Nothing local or clock-dependent (§15.5): the state that moved the ref dates
                // the request. Polling has no such event; the commit's own time is all the
                // watchers share, and routers refuse requests older than their replay window.
                let created_at = moved_at.unwrap_or_else(|| {
                    let at = Timestamp::from(u64::try_from(commit_time).unwrap_or(0));
                    if at + ROUTER_REPLAY_WINDOW.as_secs() < Timestamp::now() {
                        tracing::warn!(
                            ref_name,
                            commit,
                            "the commit is older than a router's replay window ({} s) and a \
                             polling watcher quorum can only date its request with the commit's \
                             time: the router will ignore it; follow the maintainers' NIP-34 \
                             state (--owner) instead",
                            ROUTER_REPLAY_WINDOW.as_secs()
                        );
                    }
                    at
                });
                self.quorum_request(&quorum, key, mandate, run, created_at)
                    .await?
            }
            _ => {
                let request = run.to_request().provider(self.config.router);
                self.client.submit(&request, false).await?.id
            }
        };
        self.state.started.insert(key);
        self.save()?;
        tracing::info!(ref_name, commit, %request, "run started");
        Ok(Some(StartedRun {
            ref_name: ref_name.to_string(),
            commit: commit.to_string(),
            plan_hash,
            request: request.to_hex(),
        }))
    }

    /// Has the quorum sign `run` (§15.10): every watcher derives the same unsigned request,
    /// whose id anchors the agreement on the commit and plan hash; the quorum signs the
    /// attestation and the request, and every signer publishes them.
    async fn quorum_request(
        &mut self,
        quorum: &WatcherQuorum,
        quorum_key: PublicKey,
        mandate: EventId,
        mut run: RunRequest,
        created_at: Timestamp,
    ) -> Result<EventId, WatchError> {
        let plan_hash = run.plan_hash.clone().unwrap_or_default();
        let plan = Sha256Hex::parse(&plan_hash).map_err(|_| WatchError::PlanHash(plan_hash))?;
        run.mandate = Some(mandate);
        let mut unsigned = run
            .to_request()
            .provider(self.config.router)
            .to_event_builder()
            .custom_created_at(created_at)
            .build(quorum_key);
        let anchor = unsigned.id();
        let result = agreed_files(&run.commit, plan);
        let params = QuorumJobParams {
            mandate,
            commit: run.commit.clone(),
            release: None,
            source: None,
        };
        let member = QuorumMember::new(
            quorum.relays.clone(),
            quorum.keys.clone(),
            quorum.share_dir.clone(),
        )
        .with_config(quorum.member.clone());
        let needed = [QUORUM_ATTESTATION, unsigned.kind];
        let admission = member
            .admit(
                &quorum.keys.public_key(),
                &params,
                None,
                &needed,
                Sourced::Anchor,
            )
            .await?;
        let (report, outcome) = member
            .serve_anchor(&admission, anchor, created_at, result, vec![unsigned])
            .await?;
        let signed = outcome
            .signed
            .as_ref()
            .and_then(|signed| signed.events.iter().find(|e| e.id == anchor));
        match signed {
            Some(request) => {
                tracing::info!(
                    request = %request.id,
                    agreed = ?report.agreed,
                    "the watcher quorum signed the run request"
                );
                Ok(request.id)
            }
            None => Err(WatchError::NotSigned(outcome.failure.unwrap_or_else(
                || "the request was not among the signed events".into(),
            ))),
        }
    }

    /// Who signs this poll's run requests: the quorum of the pinned mandate (as a newer
    /// mandate for its key replaces it), else the watcher quorum a maintainer put this watcher
    /// in ([`quorum_proto::mandate::watcher_mandate_for`]), else the watcher itself. Looked up
    /// at each poll, so a new mandate takes effect without a restart; a lookup that fails is
    /// an error (the commit is tried again), never a silent fall back to the watcher's key.
    async fn signing(&mut self) -> Result<Signing, WatchError> {
        let Some(quorum) = &self.config.quorum else {
            return Ok(Signing::Own);
        };
        if let Some(pinned) = quorum.mandate {
            let key = self.quorum_key(pinned).await?;
            let mandate = self.current_mandate(pinned, key).await?;
            return Ok(Signing::Quorum { key, mandate });
        }
        let Source::Nip34 { owner, identifier } = &self.config.source else {
            return Ok(Signing::Own);
        };
        let repo = quorum_proto::nip34::RepoCoordinate::new(*owner, identifier);
        let (maintainers, mandates) = self.mandates(&repo).await?;
        let found = quorum_proto::mandate::watcher_mandate_for(
            &mandates,
            &repo,
            &maintainers,
            Timestamp::now(),
            &self.client.public_key(),
        );
        let signing = match found {
            Some((event, mandate)) => Signing::Quorum {
                key: mandate.quorum.expect("a selected mandate names its key"),
                mandate: event.id,
            },
            None => Signing::Own,
        };
        if self.discovered != Some(signing) {
            match signing {
                Signing::Quorum { key, mandate } => tracing::info!(
                    %mandate, quorum = %key,
                    "a member of the repository's watcher quorum: its key signs the run requests"
                ),
                Signing::Own => tracing::info!(
                    "no watcher mandate of the repository names this watcher: it signs its own \
                     run requests"
                ),
            }
            self.discovered = Some(signing);
        }
        Ok(signing)
    }

    /// The mandate in force for the watcher quorum's key now: the newest a maintainer of its
    /// repository signed for that key (a refresh, or a new allow list, replaces the one the
    /// watcher was started with — no restart needed). Falls back to the configured mandate;
    /// the members check whichever it is fully before they commit to anything.
    async fn current_mandate(
        &mut self,
        configured: EventId,
        quorum_key: PublicKey,
    ) -> Result<EventId, WatchError> {
        let Some(repo) = self.quorum_repo.clone() else {
            return Ok(configured);
        };
        let (maintainers, mandates) = self.mandates(&repo).await?;
        let current = quorum_proto::mandate::select_mandate(
            &mandates,
            &repo,
            &quorum_key,
            &maintainers,
            Timestamp::now(),
        )
        .map(|(event, _)| event.id)
        .unwrap_or(configured);
        if current != configured {
            tracing::info!(%configured, %current, "the watcher quorum acts under a newer mandate");
        }
        Ok(current)
    }

    /// The quorum key the mandate names (looked up once; the member checks the mandate fully
    /// before it commits to anything).
    async fn quorum_key(&mut self, id: EventId) -> Result<PublicKey, WatchError> {
        if let Some(key) = self.quorum_key {
            return Ok(key);
        }
        let refuse = |reason: String| WatchError::Mandate {
            mandate: id,
            reason,
        };
        let events = self
            .client
            .fetch(Filter::new().id(id).kind(MANDATE), Duration::from_secs(5))
            .await?;
        let event = events
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| refuse("is not on the relays".into()))?;
        let mandate = Mandate::from_event(event).map_err(|e| refuse(e.to_string()))?;
        let key = mandate
            .quorum
            .ok_or_else(|| refuse("is a DKG proposal, which authorises nothing".into()))?;
        self.quorum_key = Some(key);
        self.quorum_repo = Some(mandate.repo.clone());
        Ok(key)
    }

    /// The repository's maintainer set: the owner and whom the owner's announcement lists.
    async fn maintainers(
        &self,
        owner: &PublicKey,
        identifier: &str,
    ) -> Result<std::collections::BTreeSet<PublicKey>, WatchError> {
        use quorum_proto::nip34::{RepoCoordinate, announcements_of, maintainer_set};
        let repo = RepoCoordinate::new(*owner, identifier);
        let announcements = self
            .client
            .fetch(announcements_of(&repo), Duration::from_secs(5))
            .await?;
        Ok(maintainer_set(owner, identifier, &announcements))
    }

    /// The repository's maintainer set and the mandates they signed for it.
    async fn mandates(
        &self,
        repo: &quorum_proto::nip34::RepoCoordinate,
    ) -> Result<(BTreeSet<PublicKey>, Vec<quorum_proto::nostr::Event>), WatchError> {
        let maintainers = self.maintainers(&repo.owner, &repo.identifier).await?;
        let mandates = self
            .client
            .fetch(
                quorum_proto::mandate::mandates_of(repo).authors(maintainers.iter().copied()),
                Duration::from_secs(5),
            )
            .await?;
        Ok((maintainers, mandates))
    }

    /// The refs of the newest repository state signed by one of the repository's maintainers,
    /// and when that state was signed.
    async fn signed_refs(
        &self,
        owner: &PublicKey,
        identifier: &str,
    ) -> Result<(BTreeMap<String, String>, Option<Timestamp>), WatchError> {
        use quorum_proto::nip34::{RepoCoordinate, newest_state, states_of};
        let maintainers = self.maintainers(owner, identifier).await?;
        let repo = RepoCoordinate::new(*owner, identifier);
        let states = self
            .client
            .fetch(
                states_of(&repo, maintainers.iter().copied()),
                Duration::from_secs(5),
            )
            .await?;
        Ok(match newest_state(&repo, &maintainers, &states) {
            Some((event, state)) => (state.refs, Some(event.created_at)),
            None => (BTreeMap::new(), None),
        })
    }

    /// Whether the relays already hold a run request by one of `authors` (this watcher, and in
    /// quorum mode the quorum key) for this commit and plan.
    async fn already_requested(
        &self,
        authors: &[PublicKey],
        commit: &str,
        plan_hash: &str,
    ) -> bool {
        let filter = Filter::new()
            .authors(authors.iter().copied())
            .kind(JobKind::RunPipeline.request_kind());
        let Ok(events) = self.client.fetch(filter, Duration::from_secs(5)).await else {
            return false;
        };
        events.iter().any(|event| {
            JobRequest::from_event(event)
                .ok()
                .and_then(|r| RunRequest::from_request(&r, false).ok())
                .is_some_and(|r| {
                    r.repo == self.config.repo
                        && r.commit == commit
                        && r.plan_hash.as_deref() == Some(plan_hash)
                })
        })
    }

    fn save(&self) -> Result<(), WatchError> {
        let path = state_path(&self.config.data);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.config.data)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| WatchError::State {
            path: path.clone(),
            source,
        })
    }
}

/// What the watchers of a quorum commit to: the commit (sha256 of its id's ASCII) and the plan
/// hash, so the agreed result means the same commit and the same plan.
fn agreed_files(commit: &str, plan: Sha256Hex) -> BuildResult {
    use sha2::{Digest, Sha256};
    let commit_digest = Sha256Hex::from_bytes(Sha256::digest(commit.as_bytes()).into());
    BuildResult::new()
        .with_file("commit", commit_digest)
        .with_file("plan", plan)
}

/// How far back a router DVM takes requests (the DVM runtime's replay window, protocol §7).
const ROUTER_REPLAY_WINDOW: Duration = Duration::from_secs(3600);

fn state_path(data: &Path) -> PathBuf {
    data.join("watch-state.json")
}

fn load_state(path: &Path) -> Result<State, WatchError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WatchError::State {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(source) => Err(WatchError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}
