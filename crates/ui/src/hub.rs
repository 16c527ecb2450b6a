//! What the dashboard knows of the runs on its relays, kept up to date in memory (nothing is
//! stored: a restart reads the relays again).
//!
//! Runs are run-pipeline requests (kind 5700). Each one found is followed with the very code
//! `quorum follow` uses ([`quorum_router::follow::follow_run`]), so the dashboard believes the
//! same keys the terminal does; the requests the follower reports are then read for what the
//! follow events do not carry: the job's needs (NIP-90 `job` inputs, protocol §9) and its mode.
//! Every change bumps a version that the live streams of the pages wait on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_dvm::client::JobClient;
use quorum_proto::approval::ApprovalRequest;
use quorum_proto::kinds::JobKind;
use quorum_proto::nip90::{InputType, JobRequest};
use quorum_proto::nipc1::{
    CI_WORKFLOW_PROGRESS, CI_WORKFLOW_RESULT, CiContext, CiWorkflowProgress, CiWorkflowResult,
    Conclusion, Quote,
};
use quorum_proto::nostr::{Event, EventId, Filter, PublicKey, Timestamp};
use quorum_proto::run::{RunReport, RunRequest};
use quorum_proto::step::StepReport;
use quorum_router::follow::{FollowEvent, follow_run};
use tokio::sync::{mpsc, watch};

/// How often the relays are asked for new runs.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// How far back the first look goes.
const HISTORY_SECS: u64 = 24 * 3600;
/// The most runs kept (the newest).
const MAX_RUNS: usize = 200;
/// The most log lines kept per job (a live tail, not the full log: that is on Blossom).
const MAX_LOG_LINES: usize = 2000;
const FETCH: Duration = Duration::from_secs(5);

/// How a job is run, as its request (or its absence) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Not known yet (no request read).
    Unknown,
    /// A step the router dispatched to one runner at a time.
    Router,
    /// A step of a naive chain, handed on by the DVM before it.
    Naive,
    /// Built by every member of a mandate, agreed by commit-reveal.
    Quorum,
    /// An approval gate: maintainers sign.
    Approval,
    /// Any other NIP-90 DVM, of this request kind.
    Dvm(u16),
}

impl Mode {
    pub fn label(&self) -> String {
        match self {
            Mode::Unknown => "…".into(),
            Mode::Router => "router".into(),
            Mode::Naive => "naive".into(),
            Mode::Quorum => "quorum".into(),
            Mode::Approval => "approval".into(),
            Mode::Dvm(kind) => format!("DVM {kind}"),
        }
    }

    /// The mode a request's shape says.
    pub fn of_request(request: &JobRequest) -> Mode {
        if request.param_value("mandate").is_some() {
            Mode::Quorum
        } else if request.param_value("chain").is_some()
            || request.param_value("upstream_result").is_some()
        {
            Mode::Naive
        } else if request.kind == JobKind::RunStep.request_kind() {
            Mode::Router
        } else {
            Mode::Dvm(request.kind.as_u16())
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Waiting,
    Success,
    Failure,
    Skipped,
}

impl Status {
    pub fn class(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Skipped => "skipped",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting for approval",
            Status::Success => "succeeded",
            Status::Failure => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// An approval gate's request as the follower reported it.
#[derive(Debug, Clone)]
pub struct Gate {
    pub request: EventId,
    pub required: u32,
    pub maintainers: Vec<String>,
    /// (maintainer, approved)
    pub verdicts: Vec<(String, bool)>,
}

/// One job of a run.
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: String,
    pub status: Status,
    pub mode: Mode,
    pub providers: Vec<String>,
    /// Its requests, first the one that started it, then fail-overs.
    pub requests: Vec<EventId>,
    /// The requests it needs (NIP-90 `job` inputs), resolved to jobs when drawn.
    pub needs: Vec<EventId>,
    /// Jobs it needs, known otherwise: an approval gate shows their artifacts (`JOB/PATH`).
    pub need_jobs: Vec<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// How the router told its end.
    pub line: Option<String>,
    /// Log lines: (provider, line).
    pub log: VecDeque<(String, String)>,
    pub report: Option<StepReport>,
    pub gate: Option<Gate>,
}

impl JobView {
    fn new(id: &str) -> Self {
        JobView {
            id: id.to_string(),
            status: Status::Running,
            mode: Mode::Unknown,
            providers: Vec::new(),
            requests: Vec::new(),
            needs: Vec::new(),
            need_jobs: Vec::new(),
            started_at: None,
            finished_at: None,
            line: None,
            log: VecDeque::new(),
            report: None,
            gate: None,
        }
    }

    /// How long it ran: the runner's own measure of its step when one runner ran it, else the
    /// time from its request to its end (a quorum's agreement and signing included).
    pub fn duration_ms(&self) -> Option<u64> {
        if let Some(report) = &self.report
            && self.mode != Mode::Quorum
        {
            return Some(report.duration_ms);
        }
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or_else(Timestamp::now);
        Some(end.as_secs().saturating_sub(start.as_secs()) * 1000)
    }
}

/// A release binding the follower attributed to the run.
#[derive(Debug, Clone)]
pub struct RunRelease {
    pub binding: String,
    pub signer: String,
    pub quorum: bool,
}

/// A run: its request and what the follower has seen of it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub request: Event,
    pub run: RunRequest,
    pub router: Option<String>,
    pub run_id: Option<String>,
    pub taken: bool,
    pub jobs: Vec<JobView>,
    pub releases: Vec<RunRelease>,
    /// `Some(succeeded)` once over.
    pub outcome: Option<bool>,
    pub reason: Option<String>,
    pub report: Option<RunReport>,
    pub finished_at: Option<Timestamp>,
    /// Why the run cannot be followed.
    pub error: Option<String>,
    /// An approval request not yet placed on a job: the follower may report it before the
    /// router's line that the gate started.
    pub pending_gate: Option<Gate>,
}

impl RunView {
    /// What the run cost, when its router was paid and its report says so.
    pub fn cost(&self) -> Option<String> {
        let payment = self.report.as_ref()?.payment.as_ref()?;
        Some(quorum_router::progress::cost_line(payment))
    }

    pub fn status_class(&self) -> &'static str {
        match self.outcome {
            Some(true) => "success",
            Some(false) => "failure",
            None if self.error.is_some() => "failure",
            None if self.jobs.iter().any(|j| j.status == Status::Waiting) => "waiting",
            None => "running",
        }
    }

    pub fn status_label(&self) -> &'static str {
        match self.status_class() {
            "success" => "succeeded",
            "failure" => "failed",
            "waiting" => "waiting for approval",
            _ => "running",
        }
    }

    /// The branch or tag the run is for, from its pushed ref.
    pub fn branch(&self) -> Option<&str> {
        let git_ref = self.run.git_ref.as_deref()?;
        Some(
            git_ref
                .strip_prefix("refs/heads/")
                .or_else(|| git_ref.strip_prefix("refs/tags/"))
                .unwrap_or(git_ref),
        )
    }

    /// The repository in few words: its NIP-34 identifier and owner, else its URL.
    pub fn repository_label(&self) -> String {
        match &self.run.repo_id {
            Some(repo) => format!("{} (owner {}…)", repo.identifier, &repo.owner.to_hex()[..8]),
            None => self.run.repo.clone(),
        }
    }

    /// The repository as people name it: its NIP-34 coordinate, else its URL.
    pub fn repository(&self) -> String {
        self.run
            .repo_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| self.run.repo.clone())
    }

    pub fn job(&self, id: &str) -> Option<&JobView> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn job_mut(&mut self, id: &str) -> &mut JobView {
        if let Some(i) = self.jobs.iter().position(|j| j.id == id) {
            return &mut self.jobs[i];
        }
        self.jobs.push(JobView::new(id));
        self.jobs.last_mut().expect("just pushed")
    }

    /// The job a request belongs to.
    pub fn job_of_request(&self, request: &EventId) -> Option<&str> {
        self.jobs
            .iter()
            .find(|j| j.requests.contains(request))
            .map(|j| j.id.as_str())
    }

    fn apply(&mut self, event: FollowEvent) -> Option<(String, EventId)> {
        let now = Timestamp::now();
        match event {
            FollowEvent::Run { router, run, .. } => {
                self.router = router;
                self.run_id = run;
            }
            FollowEvent::RunId { run } => self.run_id = Some(run),
            FollowEvent::Taken { router } => {
                self.taken = true;
                self.router.get_or_insert(router);
            }
            FollowEvent::JobStarted {
                job,
                providers,
                request,
            } => {
                let gate = if request.is_none() {
                    self.pending_gate.take()
                } else {
                    None
                };
                let view = self.job_mut(&job);
                view.providers = providers;
                view.started_at.get_or_insert(now);
                if let Some(gate) = gate {
                    let id = gate.request;
                    view.mode = Mode::Approval;
                    view.status = Status::Waiting;
                    view.gate = Some(gate);
                    return Some((job, id));
                }
                let id = request.and_then(|r| EventId::from_hex(&r).ok());
                if let Some(id) = id {
                    view.requests.push(id);
                    return Some((job, id));
                }
            }
            FollowEvent::JobSent {
                job,
                providers,
                request,
            } => {
                let view = self.job_mut(&job);
                for provider in providers {
                    if !view.providers.contains(&provider) {
                        view.providers.push(provider);
                    }
                }
                if let Ok(id) = EventId::from_hex(&request)
                    && !view.requests.contains(&id)
                {
                    view.requests.push(id);
                    return Some((job, id));
                }
            }
            FollowEvent::JobLog {
                job,
                provider,
                line,
            } => {
                let view = self.job_mut(&job);
                view.log.push_back((provider, line));
                while view.log.len() > MAX_LOG_LINES {
                    view.log.pop_front();
                }
            }
            FollowEvent::ApprovalRequested {
                job,
                request,
                required,
                maintainers,
            } => {
                let Ok(id) = EventId::from_hex(&request) else {
                    return None;
                };
                let gate = Gate {
                    request: id,
                    required,
                    maintainers,
                    verdicts: Vec::new(),
                };
                // The request names no job: the gate is the one job that started without a
                // request, which the router may not have said yet.
                let Some(job) = job.or_else(|| {
                    let waiting: Vec<&JobView> = self
                        .jobs
                        .iter()
                        .filter(|j| j.requests.is_empty() && j.status == Status::Running)
                        .collect();
                    match waiting.as_slice() {
                        [one] => Some(one.id.clone()),
                        _ => None,
                    }
                }) else {
                    self.pending_gate = Some(gate);
                    return None;
                };
                let view = self.job_mut(&job);
                view.mode = Mode::Approval;
                view.status = Status::Waiting;
                view.started_at.get_or_insert(now);
                view.gate = Some(gate);
                return Some((job, id));
            }
            FollowEvent::Verdict {
                request,
                maintainer,
                approved,
            } => {
                if let Some(gate) = &mut self.pending_gate
                    && gate.request.to_hex() == request
                {
                    gate.verdicts.push((maintainer.clone(), approved));
                }
                for job in &mut self.jobs {
                    if let Some(gate) = &mut job.gate
                        && gate.request.to_hex() == request
                    {
                        gate.verdicts.push((maintainer.clone(), approved));
                    }
                }
            }
            FollowEvent::JobFinished {
                job,
                status,
                line,
                report,
            } => {
                let view = self.job_mut(&job);
                view.status = match status.as_str() {
                    "success" => Status::Success,
                    "skipped" => Status::Skipped,
                    _ => Status::Failure,
                };
                if view.status == Status::Skipped && view.mode == Mode::Unknown {
                    // A skipped job never sent a request: its mode is unknowable from here.
                    view.started_at = None;
                }
                view.finished_at = Some(now);
                view.line = Some(line);
                if let Some(report) = report {
                    view.report = Some(*report);
                }
            }
            FollowEvent::Release {
                binding,
                signer,
                quorum,
            } => self.releases.push(RunRelease {
                binding,
                signer,
                quorum,
            }),
            FollowEvent::Finished {
                status,
                reason,
                report,
            } => {
                self.outcome = Some(status == "success");
                self.reason = reason;
                self.finished_at = Some(now);
                if let Some(report) = &report {
                    self.run_id.get_or_insert_with(|| report.run.clone());
                    for job in &report.jobs {
                        let view = self.job_mut(&job.id);
                        if view.providers.is_empty() {
                            view.providers.extend(job.provider.iter().cloned());
                        }
                    }
                }
                self.report = report.map(|report| *report);
                for job in &mut self.jobs {
                    if matches!(job.status, Status::Running | Status::Waiting) {
                        job.status = Status::Failure;
                    }
                }
            }
        }
        None
    }
}

/// A run known only from its CI status events (NIP-C1 39842 progress, 9842 result): one that
/// `quorum run` drove on its own machine, or any other coordinator's. Its jobs' requests do not
/// name it, so it has no graph here: what is shown is what the status events say.
#[derive(Debug, Clone)]
pub struct CiRun {
    pub coordinator: PublicKey,
    /// The run id (the 39842's `d`, the 9842's run-id `r`).
    pub run: String,
    pub context: CiContext,
    /// `None` while in progress.
    pub conclusion: Option<Conclusion>,
    /// Jobs running now (the newest 39842's `in-progress`).
    pub in_progress: Vec<String>,
    /// The job results (9841) the newest concluded event quotes.
    pub jobs: Vec<Quote>,
    /// Why a run could not start (a 9842 `startup_failure` carries it).
    pub content: String,
    pub started_at: Timestamp,
    /// `created_at` of the newest event read.
    pub updated: Timestamp,
}

impl CiRun {
    pub fn status_class(&self) -> &'static str {
        match self.conclusion {
            None => "running",
            Some(Conclusion::Success | Conclusion::Neutral | Conclusion::Skipped) => "success",
            Some(_) => "failure",
        }
    }

    pub fn status_label(&self) -> String {
        match self.conclusion {
            None => "running".into(),
            Some(Conclusion::Success) => "succeeded".into(),
            Some(conclusion) => conclusion.as_str().replace('_', " "),
        }
    }

    pub fn repository(&self) -> String {
        self.context
            .repos
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    pub fn repository_label(&self) -> String {
        match self.context.repos.first() {
            Some(repo) => format!("{} (owner {}…)", repo.identifier, &repo.owner.to_hex()[..8]),
            None => String::new(),
        }
    }

    pub fn branch(&self) -> Option<&str> {
        let git_ref = self.context.git_ref.as_deref()?;
        Some(
            git_ref
                .strip_prefix("refs/heads/")
                .or_else(|| git_ref.strip_prefix("refs/tags/"))
                .unwrap_or(git_ref),
        )
    }

    /// Folds in a newer progress or result event of the same run.
    fn update(&mut self, event: &Event) {
        if event.created_at < self.updated {
            return;
        }
        self.updated = event.created_at;
        if let Ok(progress) = CiWorkflowProgress::from_event(event) {
            self.conclusion = progress.conclusion;
            self.in_progress = progress.in_progress;
            if !progress.jobs.is_empty() {
                self.jobs = progress.jobs;
            }
            self.content = progress.content;
        } else if let Ok(result) = CiWorkflowResult::from_event(event) {
            self.conclusion = Some(result.conclusion);
            self.in_progress.clear();
            self.jobs = result.jobs;
            self.content = result.content;
        }
    }

    fn from_event(event: &Event) -> Option<CiRun> {
        let (run, context, started) = if let Ok(progress) = CiWorkflowProgress::from_event(event) {
            (progress.identifier, progress.context, progress.started_at)
        } else {
            let result = CiWorkflowResult::from_event(event).ok()?;
            (result.run_id?, result.context, result.started_at)
        };
        let mut view = CiRun {
            coordinator: event.pubkey,
            run,
            context,
            conclusion: None,
            in_progress: Vec::new(),
            jobs: Vec::new(),
            content: String::new(),
            started_at: started.unwrap_or(event.created_at),
            updated: Timestamp::from(0),
        };
        view.update(event);
        Some(view)
    }
}

/// The shared state and the version that changes with it.
#[derive(Clone)]
pub struct Hub {
    pub client: Arc<JobClient>,
    runs: Arc<Mutex<BTreeMap<EventId, RunView>>>,
    ci_runs: Arc<Mutex<BTreeMap<(PublicKey, String), CiRun>>>,
    /// Requests read for their needs and mode (and for the quorum view).
    requests: Arc<Mutex<HashMap<EventId, Event>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Hub {
    pub fn new(client: Arc<JobClient>) -> Hub {
        Hub {
            client,
            runs: Arc::default(),
            ci_runs: Arc::default(),
            requests: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }

    /// Something changed: wake the live pages.
    pub fn touch(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Vec<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<RunView> = runs.values().cloned().collect();
        list.sort_by_key(|r| std::cmp::Reverse((r.request.created_at, r.request.id)));
        list
    }

    /// Runs known only from CI status events, newest first, without those a followed run's
    /// router published (the same run, shown with more).
    pub fn ci_runs(&self) -> Vec<CiRun> {
        let routed: std::collections::HashSet<(String, String)> = {
            let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            runs.values()
                .filter_map(|r| Some((r.router.clone()?, r.run.commit.clone())))
                .collect()
        };
        let ci = self.ci_runs.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<CiRun> = ci
            .values()
            .filter(|c| !routed.contains(&(c.coordinator.to_hex(), c.context.commit.clone())))
            .cloned()
            .collect();
        list.sort_by_key(|c| std::cmp::Reverse((c.started_at, c.run.clone())));
        list
    }

    pub fn ci_run(&self, coordinator: &PublicKey, run: &str) -> Option<CiRun> {
        let ci = self.ci_runs.lock().unwrap_or_else(|e| e.into_inner());
        ci.get(&(*coordinator, run.to_string())).cloned()
    }

    pub fn run(&self, id: &EventId) -> Option<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(id).cloned()
    }

    /// A job request read earlier.
    pub fn request(&self, id: &EventId) -> Option<Event> {
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests.get(id).cloned()
    }

    /// Finds runs on the relays and follows each, until the process ends.
    pub fn spawn(&self) {
        let hub = self.clone();
        tokio::spawn(async move { hub.discover().await });
    }

    async fn discover(self) {
        let mut since = Timestamp::now() - HISTORY_SECS;
        let mut ci_since = since;
        loop {
            let filter = Filter::new()
                .kinds([CI_WORKFLOW_PROGRESS, CI_WORKFLOW_RESULT])
                .since(ci_since)
                .limit(MAX_RUNS * 4);
            match self.client.fetch(filter, FETCH).await {
                Ok(found) => {
                    for event in found {
                        ci_since = ci_since.max(event.created_at - 60u64);
                        self.add_ci_event(&event);
                    }
                }
                Err(err) => tracing::warn!("cannot read CI status from the relays: {err}"),
            }
            let filter = Filter::new()
                .kind(JobKind::RunPipeline.request_kind())
                .since(since)
                .limit(MAX_RUNS);
            match self.client.fetch(filter, FETCH).await {
                Ok(found) => {
                    for event in found {
                        since = since.max(event.created_at - 60u64);
                        self.add_run(event);
                    }
                }
                Err(err) => tracing::warn!("cannot read runs from the relays: {err}"),
            }
            tokio::time::sleep(DISCOVER_EVERY).await;
        }
    }

    fn add_ci_event(&self, event: &Event) {
        let Some(view) = CiRun::from_event(event) else {
            return;
        };
        let changed = {
            let mut ci = self.ci_runs.lock().unwrap_or_else(|e| e.into_inner());
            let key = (view.coordinator, view.run.clone());
            match ci.get_mut(&key) {
                Some(known) if known.updated >= event.created_at => false,
                Some(known) => {
                    known.update(event);
                    true
                }
                None => {
                    ci.insert(key, view);
                    while ci.len() > MAX_RUNS {
                        let oldest = ci
                            .iter()
                            .min_by_key(|(_, c)| c.updated)
                            .map(|(k, _)| k.clone());
                        match oldest {
                            Some(key) => ci.remove(&key),
                            None => break,
                        };
                    }
                    true
                }
            }
        };
        if changed {
            self.touch();
        }
    }

    fn add_run(&self, event: Event) {
        if JobRequest::is_encrypted(&event) {
            return;
        }
        let Ok(run) = JobRequest::from_event(&event)
            .map_err(|e| e.to_string())
            .and_then(|r| RunRequest::from_request(&r, false).map_err(|e| e.to_string()))
        else {
            return;
        };
        {
            let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            if runs.contains_key(&event.id) {
                return;
            }
            runs.insert(
                event.id,
                RunView {
                    request: event.clone(),
                    run,
                    router: None,
                    run_id: None,
                    taken: false,
                    jobs: Vec::new(),
                    releases: Vec::new(),
                    outcome: None,
                    reason: None,
                    report: None,
                    finished_at: None,
                    error: None,
                    pending_gate: None,
                },
            );
            while runs.len() > MAX_RUNS {
                let oldest = runs
                    .values()
                    .min_by_key(|r| (r.request.created_at, r.request.id))
                    .map(|r| r.request.id);
                match oldest {
                    Some(id) if id != event.id => {
                        runs.remove(&id);
                    }
                    _ => break,
                }
            }
        }
        self.touch();
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().read_requests(event.id, requests_rx));
        let hub = self.clone();
        tokio::spawn(async move {
            // Old runs whose router died are still followed, but not every second.
            let young = event.created_at + 3600u64 >= Timestamp::now();
            let poll = Duration::from_secs(if young { 1 } else { 15 });
            let id = event.id;
            let mut sink = |update: FollowEvent| {
                let started = {
                    let mut runs = hub.runs.lock().unwrap_or_else(|e| e.into_inner());
                    runs.get_mut(&id).and_then(|run| run.apply(update))
                };
                if let Some(started) = started {
                    let _ = requests_tx.send(started);
                }
                hub.touch();
            };
            let tracked = || {
                let runs = hub.runs.lock().unwrap_or_else(|e| e.into_inner());
                runs.contains_key(&id)
            };
            let follow = follow_run(&hub.client, event, poll, &mut sink);
            tokio::pin!(follow);
            // A run dropped from the list (newer ones pushed it out) is not followed further.
            let outcome = loop {
                tokio::select! {
                    outcome = &mut follow => break Some(outcome),
                    () = tokio::time::sleep(Duration::from_secs(60)) => {
                        if !tracked() {
                            break None;
                        }
                    }
                }
            };
            if let Some(Err(err)) = outcome {
                let mut runs = hub.runs.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(run) = runs.get_mut(&id) {
                    run.error = Some(err.to_string());
                }
                drop(runs);
                hub.touch();
            }
        });
    }

    /// Reads each job request the follower names, for the job's mode and needs.
    async fn read_requests(
        self,
        run: EventId,
        mut ids: mpsc::UnboundedReceiver<(String, EventId)>,
    ) {
        while let Some((job, id)) = ids.recv().await {
            let event = match self.client.fetch(Filter::new().id(id), FETCH).await {
                Ok(found) => found.into_iter().find(|e| e.id == id),
                Err(err) => {
                    tracing::debug!("cannot read request {id}: {err}");
                    None
                }
            };
            let Some(event) = event else { continue };
            let parsed = JobRequest::from_event(&event).ok();
            {
                let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(view) = runs.get_mut(&run) {
                    let job = view.job_mut(&job);
                    if job.requests.first() == Some(&id) {
                        job.started_at = Some(event.created_at);
                    }
                    if let Ok(ask) = ApprovalRequest::from_event(&event) {
                        for artifact in &ask.artifacts {
                            if let Some((need, _)) = artifact.name.split_once('/')
                                && !job.need_jobs.iter().any(|n| n == need)
                            {
                                job.need_jobs.push(need.to_string());
                            }
                        }
                    }
                    if let Some(request) = &parsed {
                        if job.mode == Mode::Unknown {
                            job.mode = Mode::of_request(request);
                        }
                        for input in &request.inputs {
                            let upstream =
                                matches!(input.marker.as_deref(), Some("needs" | "upstream"));
                            if input.input_type == InputType::Job
                                && upstream
                                && let Some(need) = input.event_id()
                                && !job.needs.contains(&need)
                            {
                                job.needs.push(need);
                            }
                        }
                    }
                }
            }
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, event);
            self.touch();
        }
    }
}
