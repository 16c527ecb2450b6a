//! Following a routed run from the relays alone (`quorum follow`, protocol §9 "Following a
//! run"): nothing here talks to the router, the runners or git, so any machine that can read
//! the relays can watch a run that a watcher started on another one.
//!
//! A run is its run-pipeline request (5700). Everything else is found from it:
//!
//! | what | from |
//! |---|---|
//! | job started, on whom | each sub-request naming the run (`e`) and its `job` param, its `p` tags; or the router's `▶ JOB` line |
//! | log lines | `partial` feedback of those providers on their sub-request (clear requests only) |
//! | job finished, by whom | the router's `partial` feedback on the run: [`crate::progress`] lines |
//! | a failed step's log | the provider's result (step report) on its sub-request |
//! | approval asked | an approval request (8701) by the router naming the run's commit (and run id) |
//! | release | a release binding (8700) of the run signed by the router or the mandate's quorum key |
//! | outcome | the router's result (6700, the run report) or its `error` feedback |
//!
//! Only the router, the mandate's quorum key and the providers the run's own requests name are
//! believed: a stranger cannot add a job or a log line to someone else's run. The follower
//! polls the relays (with overlapping time windows, each event handled once) instead of
//! holding subscriptions, so that requests appearing mid-run widen what it reads at once.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient};
use quorum_proto::approval::{APPROVAL, APPROVAL_REQUEST, ApprovalRequest, REJECTION, Verdict};
use quorum_proto::kinds::{JOB_FEEDBACK, JobKind};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobRequest, JobResult};
use quorum_proto::nostr::{
    Alphabet, Event, EventId, Filter, PublicKey, SingleLetterTag, Timestamp,
};
use quorum_proto::release::{RELEASE_BINDING, ReleaseBinding};
use quorum_proto::run::{JobSummary, RunReport, RunRequest};
use quorum_proto::step::StepReport;
use serde::Serialize;

use crate::progress::{self, Transition};
use crate::{JobRecord, JobState, PARAM_JOB};

/// Events this far older than the newest one seen are asked for again: relays order by
/// `created_at`, which is the signer's clock, and quorum-signed events carry an agreed time.
const OVERLAP_SECS: u64 = 60;
/// How long a stored fetch may wait for the relays.
const FETCH: Duration = Duration::from_secs(5);
/// A stored run-pipeline request counts as still running when its router spoke this recently
/// (routers say `processing` every 30 s while they work; clients give up after 150 s).
const ROUTER_SILENCE_SECS: u64 = 150;
/// ... or when it is this young and its router has not answered yet (clients wait 60 s for a
/// DVM to take a job).
const UNTAKEN_SECS: u64 = 60;
/// How far back `REPO` looks for a run already in progress: routers ignore older requests.
const REPLAY_WINDOW_SECS: u64 = 3600;

/// Why a run cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(
        "{0:?} is neither a run (its run-pipeline request's event id: 64 hex, note1… or \
         nevent1…) nor a repository (30617:<owner hex>:<d> or naddr1…)"
    )]
    BadTarget(String),
    #[error("cannot read the relays: {0}")]
    Relays(#[from] ClientError),
    #[error(
        "event {0} is not on the relays: give the run-pipeline request's id (the watcher logs \
         it as `run started … request=…`), not the run id of its report"
    )]
    NotFound(EventId),
    #[error("event {id} is a kind {kind} event, not a run-pipeline request (5700)")]
    NotARun { id: EventId, kind: u16 },
    #[error("run {id} cannot be read: {reason}")]
    Unreadable { id: EventId, reason: String },
    #[error("no run of {repo} started within {waited:?}")]
    NoRun {
        repo: RepoCoordinate,
        waited: Duration,
    },
}

/// What to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A run, by its run-pipeline request's event id.
    Run(EventId),
    /// The next run of a repository (or the one in progress).
    Repository(RepoCoordinate),
}

impl Target {
    /// A run-pipeline request id (hex, `note1…`, `nevent1…`) or a repository coordinate
    /// (`30617:<owner hex>:<d>`, `naddr1…`).
    pub fn parse(text: &str) -> Result<Target, FollowError> {
        let text = text.trim();
        if text.starts_with("30617:") || text.starts_with("naddr1") {
            return RepoCoordinate::parse_user(text)
                .map(Target::Repository)
                .map_err(|_| FollowError::BadTarget(text.to_string()));
        }
        EventId::parse(text)
            .map(Target::Run)
            .map_err(|_| FollowError::BadTarget(text.to_string()))
    }
}

/// One thing that happened in the run, in the order the follower learned it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FollowEvent {
    /// The run being followed (first).
    Run {
        /// The run-pipeline request's id (hex).
        request: String,
        /// The router it is addressed to, if any.
        router: Option<String>,
        repo: String,
        commit: String,
        repo_id: Option<String>,
        /// The run id (§9), when the request pins the plan hash.
        run: Option<String>,
    },
    /// The run id, learned after [`FollowEvent::Run`] when the request did not pin the plan
    /// hash: the router's first step names its run (`ci-run`).
    RunId { run: String },
    /// The router took the run.
    Taken { router: String },
    /// A job started; `providers` are the DVMs its request went to (none yet known, or an
    /// approval gate), `request` that request's id when the start was read from it (not from
    /// the router's `▶ JOB` line): what a viewer fetches to draw the job's needs and mode.
    JobStarted {
        job: String,
        providers: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// Another request for a started job: a fail-over to another DVM.
    JobSent {
        job: String,
        providers: Vec<String>,
        request: String,
    },
    /// A line of a job's feedback: a log line, or `[status] extra`.
    JobLog {
        job: String,
        provider: String,
        line: String,
    },
    /// An approval gate asked the maintainers (`quorum approve REQUEST`). `job` is the gate,
    /// when exactly one started job could be it (the request does not name its job).
    ApprovalRequested {
        job: Option<String>,
        request: String,
        required: u32,
        maintainers: Vec<String>,
    },
    /// A maintainer approved or rejected.
    Verdict {
        request: String,
        maintainer: String,
        approved: bool,
    },
    /// A job ended; `line` is how the router told it ([`crate::progress::finished_line`]).
    JobFinished {
        job: String,
        /// `success`, `failure` or `skipped`.
        status: String,
        line: String,
        /// The step report of the job's last answer, when one was read.
        #[serde(skip_serializing_if = "Option::is_none")]
        report: Option<Box<StepReport>>,
    },
    /// The run's release binding.
    Release {
        binding: String,
        signer: String,
        /// Signed by the mandate's quorum key (else by the router).
        quorum: bool,
    },
    /// The run ended (last).
    Finished {
        /// `success` or `failure`.
        status: String,
        /// Why it failed, when the router said so without a report (e.g. no pipeline).
        reason: Option<String>,
        report: Option<Box<RunReport>>,
    },
}

/// How the followed run ended.
#[derive(Debug, Clone)]
pub struct FollowOutcome {
    pub request: EventId,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub report: Option<RunReport>,
}

/// The run-pipeline request `target` names: the request itself, or for a repository the
/// newest run of it still in progress, else the next one to appear within `wait`.
///
/// A repository's runs are the run-pipeline requests whose `repo-id` param names it (watchers
/// following NIP-34 always send one); encrypted requests cannot be read and are not found.
pub async fn find_run(
    client: &JobClient,
    target: &Target,
    wait: Duration,
) -> Result<Event, FollowError> {
    match target {
        Target::Run(id) => {
            let found = client.fetch(Filter::new().id(*id), FETCH).await?;
            let event = found
                .into_iter()
                .find(|e| e.id == *id)
                .ok_or(FollowError::NotFound(*id))?;
            if event.kind != JobKind::RunPipeline.request_kind() {
                return Err(FollowError::NotARun {
                    id: *id,
                    kind: event.kind.as_u16(),
                });
            }
            Ok(event)
        }
        Target::Repository(repo) => {
            let filter = Filter::new()
                .kind(JobKind::RunPipeline.request_kind())
                .since(Timestamp::now() - REPLAY_WINDOW_SECS);
            let stored = client.fetch(filter.clone(), FETCH).await?;
            let mut candidates: Vec<&Event> =
                stored.iter().filter(|e| names_repo(e, repo)).collect();
            candidates.sort_by_key(|e| Reverse((e.created_at, e.id)));
            for event in candidates {
                if in_progress(client, event).await? {
                    return Ok(event.clone());
                }
            }
            // Anything stored before now that is not running is over; the next run is one the
            // relays did not have at the first look (a watcher quorum dates its request with
            // the maintainer's state, so it may well be dated before now).
            let known: HashSet<EventId> = stored.iter().map(|e| e.id).collect();
            client
                .await_request(
                    filter,
                    |e| !known.contains(&e.id) && names_repo(e, repo),
                    wait,
                )
                .await
                .map_err(|_| FollowError::NoRun {
                    repo: repo.clone(),
                    waited: wait,
                })
        }
    }
}

/// Whether a clear run-pipeline request names `repo` as its NIP-34 identity.
fn names_repo(event: &Event, repo: &RepoCoordinate) -> bool {
    JobRequest::from_event(event)
        .ok()
        .and_then(|request| RunRequest::from_request(&request, false).ok())
        .is_some_and(|run| run.repo_id.as_ref() == Some(repo))
}

/// A stored request is still running if its router has not answered it for good and spoke
/// recently, or if it is young enough that its router may not have taken it yet.
async fn in_progress(client: &JobClient, request: &Event) -> Result<bool, FollowError> {
    let router = request.tags.public_keys().next().copied();
    let answers = client
        .fetch(
            Filter::new()
                .event(request.id)
                .kinds([JOB_FEEDBACK, JobKind::RunPipeline.result_kind()]),
            FETCH,
        )
        .await?;
    let from_router: Vec<&Event> = answers
        .iter()
        .filter(|e| router.is_none_or(|r| e.pubkey == r))
        .collect();
    let over = from_router.iter().any(|e| {
        e.kind == JobKind::RunPipeline.result_kind()
            || JobFeedback::from_event(e).is_ok_and(|f| f.status == FeedbackStatus::Error)
    });
    let now = Timestamp::now();
    let spoke = from_router
        .iter()
        .any(|e| e.created_at + ROUTER_SILENCE_SECS >= now);
    let young = from_router.is_empty() && request.created_at + UNTAKEN_SECS >= now;
    Ok(!over && (spoke || young))
}

/// Follows the run of `request` until its router answers it for good, telling `sink` what
/// happens; `poll` is how often the relays are read.
pub async fn follow_run(
    client: &JobClient,
    request: Event,
    poll: Duration,
    sink: &mut (dyn FnMut(FollowEvent) + Send),
) -> Result<FollowOutcome, FollowError> {
    let mut run = RunState::new(client, request).await?;
    sink(run.describe());
    loop {
        if let Some(outcome) = run.poll(client, sink).await? {
            return Ok(outcome);
        }
        tokio::time::sleep(poll).await;
    }
}

/// A job's sub-request, as the follower knows it.
struct SubRequest {
    job: String,
    providers: Vec<PublicKey>,
}

/// What the follower knows of the run so far.
struct RunState {
    request: Event,
    run: RunRequest,
    router: Option<PublicKey>,
    run_id: Option<String>,
    quorum_key: Option<PublicKey>,
    subrequests: HashMap<EventId, SubRequest>,
    /// Keys whose requests naming the run count: the router, the quorum key, and the
    /// providers of earlier sub-requests (a naive chain's runner hands the next step on).
    trusted: HashSet<PublicKey>,
    /// Approval requests of the run and the maintainers each asked.
    approvals: HashMap<EventId, Vec<PublicKey>>,
    seen: HashSet<EventId>,
    newest: Timestamp,
    /// The last log tail of each (sub-request, provider), to print each line once.
    tails: HashMap<(EventId, PublicKey), String>,
    /// The router's transition lines already handled.
    lines: HashSet<String>,
    started: HashSet<String>,
    finished: HashSet<String>,
    /// Jobs with a sub-request (an approval gate has none).
    dispatched: HashSet<String>,
    reports: HashMap<String, StepReport>,
    taken: bool,
}

impl RunState {
    async fn new(client: &JobClient, request: Event) -> Result<RunState, FollowError> {
        let unreadable = |reason: String| FollowError::Unreadable {
            id: request.id,
            reason,
        };
        if JobRequest::is_encrypted(&request) {
            return Err(unreadable(
                "it is encrypted to its router, so only the router can read it".into(),
            ));
        }
        let parsed = JobRequest::from_event(&request).map_err(|e| unreadable(e.to_string()))?;
        let run =
            RunRequest::from_request(&parsed, false).map_err(|e| unreadable(e.to_string()))?;
        let router = parsed.providers.first().copied();
        let run_id = run
            .plan_hash
            .as_deref()
            .map(|plan| quorum_pipeline::run_id(&run.repo, &run.commit, plan));
        // The quorum key only decides whose release binding counts: without the mandate on
        // the relays, a quorum release is simply not shown.
        let quorum_key = match run.mandate {
            Some(id) => client
                .fetch(Filter::new().id(id), FETCH)
                .await?
                .iter()
                .find(|e| e.id == id)
                .and_then(|e| quorum_proto::mandate::Mandate::from_event(e).ok())
                .and_then(|m| m.quorum),
            None => None,
        };
        let trusted = router.iter().chain(quorum_key.iter()).copied().collect();
        Ok(RunState {
            newest: request.created_at,
            request,
            run,
            router,
            run_id,
            quorum_key,
            subrequests: HashMap::new(),
            trusted,
            approvals: HashMap::new(),
            seen: HashSet::new(),
            tails: HashMap::new(),
            lines: HashSet::new(),
            started: HashSet::new(),
            finished: HashSet::new(),
            dispatched: HashSet::new(),
            reports: HashMap::new(),
            taken: false,
        })
    }

    fn describe(&self) -> FollowEvent {
        FollowEvent::Run {
            request: self.request.id.to_hex(),
            router: self.router.map(|r| r.to_hex()),
            repo: self.run.repo.clone(),
            commit: self.run.commit.clone(),
            repo_id: self.run.repo_id.as_ref().map(ToString::to_string),
            run: self.run_id.clone(),
        }
    }

    /// Reads what is new on the relays and handles it; the outcome once the run is over.
    async fn poll(
        &mut self,
        client: &JobClient,
        sink: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> Result<Option<FollowOutcome>, FollowError> {
        let since = Timestamp::from(self.newest.as_secs().saturating_sub(OVERLAP_SECS));
        let mut ids: HashSet<EventId> = HashSet::from([self.request.id]);
        ids.extend(self.subrequests.keys().copied());
        ids.extend(self.approvals.keys().copied());
        // Requests of the run found in this read are read for at once too, so that a job's
        // result is at hand when the router's line about the job (in the same read) is handled.
        let mut events: Vec<Event> = Vec::new();
        for _ in 0..3 {
            let found = client
                .fetch(Filter::new().events(ids.clone()).since(since), FETCH)
                .await?;
            let before = ids.len();
            ids.extend(
                found
                    .iter()
                    .filter(|e| (5000..6000).contains(&e.kind.as_u16()))
                    .map(|e| e.id),
            );
            events.extend(found);
            if ids.len() == before {
                break;
            }
        }
        events.extend(
            client
                .fetch(
                    Filter::new()
                        .kinds([APPROVAL_REQUEST, RELEASE_BINDING])
                        .custom_tag(
                            SingleLetterTag::lowercase(Alphabet::C),
                            self.run.commit.clone(),
                        )
                        .since(self.request.created_at - OVERLAP_SECS),
                    FETCH,
                )
                .await?,
        );
        events.retain(|e| self.seen.insert(e.id));
        // Causes before effects: the run's requests first (a client stamps its requests at
        // least a second apart, so a request can be dated after the router's line about its
        // job), then by time, and within one second a runner's answers before the router's
        // line about them and the router's verdict last.
        events.sort_by_key(|e| {
            let request = (5000..6000).contains(&e.kind.as_u16());
            (!request, e.created_at, self.rank(e), e.id)
        });
        for event in events {
            self.newest = self.newest.max(event.created_at);
            if let Some(outcome) = self.handle(&event, sink) {
                return Ok(Some(outcome));
            }
        }
        Ok(None)
    }

    fn rank(&self, event: &Event) -> u8 {
        let kind = event.kind.as_u16();
        let on_run = event.tags.event_ids().any(|id| *id == self.request.id)
            && self.is_router(&event.pubkey);
        match kind {
            5000..=5999 => 0,
            _ if kind == APPROVAL_REQUEST.as_u16() => 1,
            _ if on_run && kind == JOB_FEEDBACK.as_u16() => 5,
            _ if on_run => 6,
            6000..=6999 => 2,
            _ if kind == JOB_FEEDBACK.as_u16() => 3,
            _ => 4,
        }
    }

    fn is_router(&self, key: &PublicKey) -> bool {
        self.router.is_none_or(|router| router == *key)
    }

    fn handle(
        &mut self,
        event: &Event,
        sink: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> Option<FollowOutcome> {
        let kind = event.kind.as_u16();
        let answers_run = event.tags.event_ids().any(|id| *id == self.request.id);
        if kind == APPROVAL_REQUEST.as_u16() {
            self.approval_request(event, sink);
        } else if kind == RELEASE_BINDING.as_u16() {
            self.release(event, sink);
        } else if kind == APPROVAL.as_u16() || kind == REJECTION.as_u16() {
            self.verdict(event, sink);
        } else if (5000..6000).contains(&kind) && answers_run {
            self.subrequest(event, sink);
        } else if answers_run && self.is_router(&event.pubkey) {
            // An open request's router is whoever answers it first.
            self.router.get_or_insert(event.pubkey);
            self.trusted.insert(event.pubkey);
            return self.router_answer(event, sink);
        } else {
            self.provider_answer(event, sink);
        }
        None
    }

    fn subrequest(&mut self, event: &Event, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        if !self.trusted.contains(&event.pubkey) {
            return;
        }
        // An encrypted sub-request (a job with secrets) hides its job: nothing to show.
        let Ok(request) = JobRequest::from_event(event) else {
            return;
        };
        let Some(job) = request.param_value(PARAM_JOB).map(str::to_string) else {
            return;
        };
        // A run request without a plan hash names no run id; the router's first step for it
        // does (`ci-run`, the run's NIP-C1 address under the router's key), long before the
        // run's result would.
        if self.run_id.is_none()
            && let Some(address) = request
                .param_value(quorum_proto::nipc1::PARAM_CI_RUN)
                .and_then(|a| quorum_proto::nipc1::RunAddress::parse(a).ok())
            && address.coordinator == event.pubkey
        {
            self.run_id = Some(address.run.clone());
            sink(FollowEvent::RunId { run: address.run });
        }
        let providers: Vec<String> = request.providers.iter().map(|p| p.to_hex()).collect();
        self.trusted.extend(request.providers.iter().copied());
        self.subrequests.insert(
            event.id,
            SubRequest {
                job: job.clone(),
                providers: request.providers.clone(),
            },
        );
        self.dispatched.insert(job.clone());
        if self.started.insert(job.clone()) {
            sink(FollowEvent::JobStarted {
                job,
                providers,
                request: Some(event.id.to_hex()),
            });
        } else if !self.finished.contains(&job) {
            sink(FollowEvent::JobSent {
                job,
                providers,
                request: event.id.to_hex(),
            });
        }
    }

    fn provider_answer(&mut self, event: &Event, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        let Some((sub_id, sub)) = event
            .tags
            .event_ids()
            .find_map(|id| self.subrequests.get(id).map(|sub| (*id, sub)))
        else {
            return;
        };
        if !sub.providers.is_empty() && !sub.providers.contains(&event.pubkey) {
            return;
        }
        let job = sub.job.clone();
        let provider = event.pubkey.to_hex();
        if event.kind == JOB_FEEDBACK {
            let Ok(feedback) = JobFeedback::from_event(event) else {
                return;
            };
            if feedback.encrypted {
                return;
            }
            match feedback.status {
                FeedbackStatus::Partial => {
                    let tail = self.tails.entry((sub_id, event.pubkey)).or_default();
                    for line in quorum_dvm::client::new_lines(tail, &feedback.content) {
                        sink(FollowEvent::JobLog {
                            job: job.clone(),
                            provider: provider.clone(),
                            line: line.to_string(),
                        });
                    }
                    *tail = feedback.content;
                }
                // Signs of life say nothing a reader needs.
                FeedbackStatus::Processing | FeedbackStatus::Success => {}
                status => sink(FollowEvent::JobLog {
                    job,
                    provider,
                    line: match feedback.extra.as_deref() {
                        Some(extra) if !extra.is_empty() => format!("[{status}] {extra}"),
                        _ => format!("[{status}]"),
                    },
                }),
            }
            return;
        }
        if let Ok(result) = JobResult::from_event(event)
            && !result.encrypted
            && let Ok(report) = serde_json::from_str::<StepReport>(&result.content)
        {
            self.reports.insert(job, report);
        }
    }

    fn router_answer(
        &mut self,
        event: &Event,
        sink: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> Option<FollowOutcome> {
        if event.kind == JOB_FEEDBACK {
            let feedback = JobFeedback::from_event(event).ok()?;
            match feedback.status {
                FeedbackStatus::Error => {
                    let reason = feedback
                        .extra
                        .clone()
                        .unwrap_or_else(|| "the router gave no reason".into());
                    let reason = if feedback.content.is_empty() || feedback.encrypted {
                        reason
                    } else {
                        format!("{reason}\n{}", feedback.content)
                    };
                    return Some(self.finish(false, Some(reason), None, sink));
                }
                FeedbackStatus::Partial if !feedback.encrypted => {
                    for line in feedback.content.lines() {
                        if self.lines.insert(line.to_string()) {
                            self.transition(line, sink);
                        }
                    }
                }
                _ => {}
            }
            if !self.taken {
                self.taken = true;
                sink(FollowEvent::Taken {
                    router: event.pubkey.to_hex(),
                });
            }
            return None;
        }
        let result = JobResult::from_event(event).ok()?;
        if result.request.id != self.request.id {
            return None;
        }
        let report = match serde_json::from_str::<RunReport>(&result.content) {
            Ok(report) => report,
            Err(err) => {
                let reason = format!("the router's result is not a run report: {err}");
                return Some(self.finish(false, Some(reason), None, sink));
            }
        };
        // Lines the router had no time to send (a job's last transition races the result).
        for job in &report.jobs {
            if !self.finished.contains(&job.id) {
                let record = record_of(job);
                self.finished.insert(job.id.clone());
                sink(FollowEvent::JobFinished {
                    job: job.id.clone(),
                    status: job.status.clone(),
                    line: progress::finished_line(&record),
                    report: self.reports.get(&job.id).cloned().map(Box::new),
                });
            }
        }
        let succeeded = report.succeeded();
        Some(self.finish(succeeded, None, Some(report), sink))
    }

    fn transition(&mut self, line: &str, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        let Some(transition) = Transition::parse(line) else {
            return;
        };
        let job = transition.job().to_string();
        let status = match transition {
            Transition::Started { .. } => {
                if self.started.insert(job.clone()) {
                    sink(FollowEvent::JobStarted {
                        job,
                        providers: Vec::new(),
                        request: None,
                    });
                }
                return;
            }
            Transition::Succeeded { .. } => "success",
            Transition::Failed { .. } => "failure",
            Transition::Skipped { .. } => "skipped",
        };
        if self.finished.insert(job.clone()) {
            sink(FollowEvent::JobFinished {
                report: self.reports.get(&job).cloned().map(Box::new),
                job,
                status: status.into(),
                line: line.to_string(),
            });
        }
    }

    fn approval_request(&mut self, event: &Event, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        let Ok(request) = ApprovalRequest::from_event(event) else {
            return;
        };
        let ours = self.router.is_some_and(|r| r == event.pubkey)
            && request.commit == self.run.commit
            && self.run_id.as_ref().is_none_or(|run| *run == request.run);
        if !ours {
            return;
        }
        // The request names no job: the gate is the one started job that sent no request.
        let waiting: Vec<&String> = self
            .started
            .iter()
            .filter(|job| !self.finished.contains(*job) && !self.dispatched.contains(*job))
            .collect();
        let job = match waiting.as_slice() {
            [job] => Some((*job).clone()),
            _ => None,
        };
        self.approvals.insert(event.id, request.maintainers.clone());
        sink(FollowEvent::ApprovalRequested {
            job,
            request: event.id.to_hex(),
            required: request.required,
            maintainers: request.maintainers.iter().map(|m| m.to_hex()).collect(),
        });
    }

    fn verdict(&mut self, event: &Event, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        let Ok(verdict) = Verdict::from_event(event) else {
            return;
        };
        // Only the maintainers asked; the router's tally decides, this only tells.
        let asked = self
            .approvals
            .get(&verdict.request)
            .is_some_and(|keys| keys.contains(&event.pubkey));
        if asked {
            sink(FollowEvent::Verdict {
                request: verdict.request.to_hex(),
                maintainer: event.pubkey.to_hex(),
                approved: event.kind == APPROVAL,
            });
        }
    }

    fn release(&mut self, event: &Event, sink: &mut (dyn FnMut(FollowEvent) + Send)) {
        let Ok(binding) = ReleaseBinding::from_event(event) else {
            return;
        };
        let quorum = self.quorum_key.is_some_and(|q| q == event.pubkey);
        let ours = (quorum || self.router.is_some_and(|r| r == event.pubkey))
            && binding.commit == self.run.commit
            && self.run_id.as_ref().is_some_and(|run| *run == binding.run);
        if ours {
            sink(FollowEvent::Release {
                binding: event.id.to_hex(),
                signer: event.pubkey.to_hex(),
                quorum,
            });
        }
    }

    fn finish(
        &mut self,
        succeeded: bool,
        reason: Option<String>,
        report: Option<RunReport>,
        sink: &mut (dyn FnMut(FollowEvent) + Send),
    ) -> FollowOutcome {
        sink(FollowEvent::Finished {
            status: if succeeded { "success" } else { "failure" }.into(),
            reason: reason.clone(),
            report: report.clone().map(Box::new),
        });
        FollowOutcome {
            request: self.request.id,
            succeeded,
            reason,
            report,
        }
    }
}

/// A job of a run report as the engine's record, for [`progress::finished_line`].
fn record_of(job: &JobSummary) -> JobRecord {
    let reason = || job.reason.clone().unwrap_or_default();
    JobRecord {
        id: job.id.clone(),
        name: job.name.clone(),
        state: match job.status.as_str() {
            "success" => JobState::Succeeded,
            "skipped" => JobState::Skipped { reason: reason() },
            _ => JobState::Failed { reason: reason() },
        },
        provider: job.provider.clone(),
        request: job.request.clone(),
        result: job.result.clone(),
        report: None,
        content: None,
        tried: Vec::new(),
        quorum: None,
        paid_msats: 0,
        payments: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_a_request_id_or_a_repository() {
        let id = "ab".repeat(32);
        let event = EventId::from_hex(&id).unwrap();
        assert_eq!(Target::parse(&id).unwrap(), Target::Run(event));
        use quorum_proto::nostr::ToBech32;
        assert_eq!(
            Target::parse(&event.to_bech32().unwrap()).unwrap(),
            Target::Run(event)
        );
        let owner = quorum_proto::nostr::Keys::generate().public_key();
        let repo = RepoCoordinate::new(owner, "app");
        assert_eq!(
            Target::parse(&repo.to_string()).unwrap(),
            Target::Repository(repo.clone())
        );
        assert_eq!(
            Target::parse(&repo.to_naddr()).unwrap(),
            Target::Repository(repo)
        );
        for bad in ["", "abc", "30617:nobody:app", "npub1xyz"] {
            assert!(
                matches!(Target::parse(bad), Err(FollowError::BadTarget(_))),
                "{bad}"
            );
        }
    }
}
