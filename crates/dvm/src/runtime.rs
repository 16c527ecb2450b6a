//! The DVM runtime: intake, validation, queue, execution, feedback and results.
//!
//! It connects to any list of relays (nostr-sdk reconnects by itself), subscribes to the
//! handler's kinds and to cancellations, and for each request: validates it (signature, size,
//! NIP-40 expiry, age, addressee), deduplicates it against the journal, journals it *before*
//! acting, queues it (bounded), runs it under a concurrency limit, streams `partial` feedback,
//! and publishes the result or `error` feedback to every relay with per-relay tracking. A DVM
//! stopped mid-job resumes the job on restart unless a result of its own is already out.
//!
//! Replays: a request is taken only while its `created_at` lies in the replay window (at most
//! `max_request_age` old, at most `max_request_future` ahead), and the journal remembers a
//! finished request for `max_request_age + max_request_future` after it finished, which is
//! longer than any request it finished can stay inside the window.
//!
//! An encrypted request's failure is as private as its result: its `error` feedback says only
//! [`SEALED_ERROR`] in the clear and carries the reason with the log tail in the NIP-44
//! encrypted `content` (see [`seal_error`]; our client opens it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::nip89::Announcement;
use quorum_proto::nip90::{self, FeedbackStatus, JobFeedback, JobRequest, JobResult};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::{Job, JobContext, JobFailure, JobHandler, Progress};
use crate::journal::{Journal, JournalError, Outcome};
use crate::publish::{self, PublishReport, RetryPolicy};

/// How a DVM runs.
#[derive(Debug, Clone)]
pub struct DvmConfig {
    pub relays: Vec<RelayUrl>,
    /// Where the job journal lives.
    pub data_dir: PathBuf,
    /// Display name and description for the NIP-89 announcement.
    pub name: String,
    pub about: String,
    /// The announcement's `d` tag (stable per role, so restarts replace it).
    pub identifier: String,
    /// Who runs this DVM, named in the announcement (`quorum.operator`); the operator confirms
    /// it with its own list (`quorum_proto::operator`).
    pub operator: Option<PublicKey>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// Jobs waiting for a slot; beyond this, requests get `error` feedback ("busy").
    pub queue_capacity: usize,
    /// Largest request event (serialised JSON) accepted.
    pub max_request_bytes: usize,
    /// Requests created longer ago than this are ignored: replay protection, and the bound on
    /// how much history the journal must remember.
    pub max_request_age: Duration,
    /// Requests dated further ahead than this are ignored (clock skew allowance): a request
    /// from the far future would stay in the replay window after the journal forgot it.
    pub max_request_future: Duration,
    /// Least time between two `partial` feedbacks of one job.
    pub partial_interval: Duration,
    /// Most bytes of a `partial` feedback's content (the tail is kept).
    pub partial_max_bytes: usize,
    /// While a job runs, `processing` feedback is repeated this often when nothing else was
    /// said, so that customers can tell a busy DVM from a dead one.
    pub heartbeat: Duration,
    pub retry: RetryPolicy,
    /// Takes payment before any work (a priced DVM); `None`: every job is free.
    pub payments: Option<Arc<dyn crate::handler::PaymentGate>>,
}

impl std::fmt::Debug for dyn crate::handler::PaymentGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentGate")
    }
}

impl DvmConfig {
    pub fn new(relays: Vec<RelayUrl>, data_dir: PathBuf, name: impl Into<String>) -> Self {
        let name = name.into();
        DvmConfig {
            relays,
            data_dir,
            about: String::new(),
            identifier: name.clone(),
            name,
            operator: None,
            concurrency: 2,
            queue_capacity: 64,
            max_request_bytes: 64 * 1024,
            max_request_age: Duration::from_secs(3600),
            // What relays commonly accept (our relay's own bound).
            max_request_future: Duration::from_secs(900),
            partial_interval: Duration::from_millis(500),
            partial_max_bytes: 4096,
            heartbeat: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            payments: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DvmError {
    #[error("no relay given: a DVM needs at least one relay")]
    NoRelays,
    #[error("cannot add relay {url}: {reason}")]
    Relay { url: String, reason: String },
    #[error("cannot subscribe to job requests: {0}")]
    Subscribe(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the handler serves kind {0}, which is not a NIP-90 job request kind")]
    NotAJobKind(u16),
}

/// A running DVM. Dropping it does not stop it; call [`Dvm::shutdown`].
pub struct Dvm {
    public_key: PublicKey,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    client: Client,
}

impl Dvm {
    /// Connects, announces, resumes unfinished jobs and starts serving.
    pub async fn start<H: JobHandler>(
        config: DvmConfig,
        keys: Keys,
        handler: H,
    ) -> Result<Dvm, DvmError> {
        if config.relays.is_empty() {
            return Err(DvmError::NoRelays);
        }
        let kinds: HashSet<Kind> = handler.kinds().into_iter().collect();
        if let Some(bad) = kinds
            .iter()
            .find(|k| !quorum_proto::kinds::is_job_request(**k))
        {
            return Err(DvmError::NotAJobKind(bad.as_u16()));
        }
        let mut journal = Journal::open(&config.data_dir.join("jobs.jsonl"))?;
        if let Err(err) = journal.compact(journal_retention(&config)) {
            // A journal that could not be rewritten is still whole: serve, and try again later.
            tracing::warn!("cannot compact the job journal: {err}");
        }

        let client = Client::builder()
            .signer(keys.clone())
            .opts(ClientOptions::new().automatic_authentication(true))
            .build();
        for url in &config.relays {
            client
                .add_relay(url.clone())
                .await
                .map_err(|e| DvmError::Relay {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        }
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;

        let shutdown = CancellationToken::new();
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_capacity.max(1));
        let shared = Arc::new(Shared {
            handler,
            keys: keys.clone(),
            client: client.clone(),
            kinds,
            journal: Mutex::new(journal),
            running: Mutex::new(HashMap::new()),
            queue: queue_tx,
            shutdown: shutdown.clone(),
            config,
        });

        // Notifications must be taken before subscribing, or early events are missed.
        let notifications = client.notifications();
        let since = Timestamp::now() - shared.config.max_request_age.as_secs();
        client
            .subscribe(shared.job_filter(since), None)
            .await
            .map_err(|e| DvmError::Subscribe(e.to_string()))?;
        client
            .subscribe(
                Filter::new()
                    .kind(Kind::EventDeletion)
                    .since(Timestamp::now()),
                None,
            )
            .await
            .map_err(|e| DvmError::Subscribe(e.to_string()))?;

        let task = tokio::spawn(run(shared, notifications, queue_rx));
        Ok(Dvm {
            public_key: keys.public_key(),
            shutdown,
            task,
            client,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Stops taking jobs and interrupts running ones; they stay unfinished in the journal and
    /// resume on the next start.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.client.shutdown().await;
    }
}

struct Shared<H> {
    handler: H,
    keys: Keys,
    client: Client,
    kinds: HashSet<Kind>,
    config: DvmConfig,
    journal: Mutex<Journal>,
    /// Running or queued jobs and the token that cancels each.
    running: Mutex<HashMap<EventId, CancellationToken>>,
    queue: mpsc::Sender<Event>,
    shutdown: CancellationToken,
}

async fn run<H: JobHandler>(
    shared: Arc<Shared<H>>,
    mut notifications: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    queue_rx: mpsc::Receiver<Event>,
) {
    let workers = tokio::spawn(work(shared.clone(), queue_rx));
    // Start-up publishing must not hold up a shutdown that comes early.
    tokio::select! {
        () = shared.shutdown.cancelled() => {}
        () = async {
            shared.announce().await;
            shared.resume().await;
        } => {}
    }
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            notification = notifications.recv() => match notification {
                Ok(RelayPoolNotification::Event { event, .. }) => shared.intake(*event).await,
                Ok(RelayPoolNotification::Shutdown) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind the relays; catching up");
                    shared.catch_up().await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    let _ = workers.await;
}

/// Takes queued jobs and runs each under the concurrency limit.
async fn work<H: JobHandler>(shared: Arc<Shared<H>>, mut queue: mpsc::Receiver<Event>) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            event = queue.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let permit = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            shared.execute(event).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Running jobs see the shutdown through their tokens; wait for them to wind down.
    while tasks.join_next().await.is_some() {}
}

/// How long the journal remembers a finished request: a request it finished was dated at
/// most `max_request_future` after it arrived, so `max_request_age` after that it is out of
/// the replay window for good.
fn journal_retention(config: &DvmConfig) -> u64 {
    config
        .max_request_age
        .as_secs()
        .saturating_add(config.max_request_future.as_secs())
}

/// The clear `status` extra of `error` feedback on an encrypted request.
pub const SEALED_ERROR: &str = "the job failed; the reason is in the encrypted content";

/// The encrypted content of `error` feedback on an encrypted request.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedError {
    reason: String,
    #[serde(default)]
    log_tail: String,
}

/// `error` feedback on `request` with a reason and a log tail (possibly empty). For a clear
/// request they go in the `status` extra and the content; for an encrypted one, both go
/// NIP-44 encrypted in the content as `{"reason": …, "log_tail": …}` and the extra says only
/// [`SEALED_ERROR`]: a failure reason (a repository URL, a path, a test name) is a detail of
/// the job.
pub fn seal_error(request: &Event, reason: impl Into<String>, log_tail: String) -> JobFeedback {
    let feedback = JobFeedback::new(FeedbackStatus::Error, request);
    if !feedback.encrypted {
        return feedback.with_extra(reason).with_content(log_tail);
    }
    let sealed = SealedError {
        reason: reason.into(),
        log_tail,
    };
    let content = serde_json::to_string(&sealed).expect("two strings serialise");
    feedback.with_extra(SEALED_ERROR).with_content(content)
}

/// Puts the decrypted content `clear` of `error` feedback on an encrypted request back in
/// place: the reason in `extra`, the log tail in `content` (content that is not our sealed
/// form, from another DVM, becomes the content as is).
pub(crate) fn open_error(feedback: &mut JobFeedback, clear: String) {
    match serde_json::from_str::<SealedError>(&clear) {
        Ok(sealed) => {
            feedback.extra = Some(sealed.reason);
            feedback.content = sealed.log_tail;
        }
        Err(_) => feedback.content = clear,
    }
    feedback.encrypted = false;
}

/// Why a request is not taken, for the log. Only [`Refusal::Answer`] is told to the customer.
enum Refusal {
    Ignore(&'static str),
    Answer(String),
}

impl<H: JobHandler> Shared<H> {
    fn job_filter(&self, since: Timestamp) -> Filter {
        Filter::new().kinds(self.kinds.iter().copied()).since(since)
    }

    async fn announce(&self) {
        let announcement = Announcement {
            identifier: self.config.identifier.clone(),
            name: self.config.name.clone(),
            about: self.config.about.clone(),
            kinds: {
                let mut kinds: Vec<Kind> = self.kinds.iter().copied().collect();
                kinds.sort();
                kinds
            },
            offer: self.handler.offer(),
            operator: self.config.operator,
        };
        match announcement.to_event_builder().sign_with_keys(&self.keys) {
            Ok(event) => {
                if let Err(err) = publish::publish(&self.client, &event, self.config.retry).await {
                    tracing::warn!("cannot publish the NIP-89 announcement: {err}");
                }
            }
            Err(err) => tracing::warn!("cannot sign the NIP-89 announcement: {err}"),
        }
    }

    /// Re-queues jobs accepted before a restart, unless a result of ours is already out.
    async fn resume(&self) {
        let unfinished = self.journal.lock().expect("journal lock").unfinished();
        for event in unfinished {
            if self.result_already_published(&event).await {
                tracing::info!(request = %event.id, "result was already published before the restart");
                self.record(event.id, Outcome::Success);
                continue;
            }
            if event.is_expired() {
                self.refuse(
                    &event,
                    "the request expired before the job could resume".into(),
                )
                .await;
                continue;
            }
            tracing::info!(request = %event.id, "resuming job accepted before the restart");
            self.enqueue(event).await;
        }
    }

    async fn result_already_published(&self, request: &Event) -> bool {
        let Some(kind) = quorum_proto::kinds::result_kind_for(request.kind) else {
            return false;
        };
        let filter = Filter::new()
            .kind(kind)
            .author(self.keys.public_key())
            .event(request.id);
        match publish::fetch(&self.client, filter, Duration::from_secs(3)).await {
            Ok(events) => !events.is_empty(),
            Err(err) => {
                tracing::debug!("cannot look for an earlier result: {err}");
                false
            }
        }
    }

    async fn catch_up(&self) {
        let since = Timestamp::now() - self.config.max_request_age.as_secs();
        match publish::fetch(
            &self.client,
            self.job_filter(since),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(events) => {
                for event in events {
                    self.intake(event).await;
                }
            }
            Err(err) => tracing::warn!("catching up on missed requests failed: {err}"),
        }
    }

    async fn intake(&self, event: Event) {
        if event.kind == Kind::EventDeletion {
            self.cancellation(&event).await;
            return;
        }
        if !self.kinds.contains(&event.kind) {
            return;
        }
        match self.validate(&event) {
            Ok(()) => {
                let accepted = self.journal.lock().expect("journal lock").accept(&event);
                match accepted {
                    Ok(()) => self.enqueue(event).await,
                    Err(err) => {
                        tracing::error!("cannot journal request {}: {err}", event.id);
                        // Without a durable record we cannot promise to run it exactly once.
                        self.send_feedback(seal_error(
                            &event,
                            "the DVM cannot record jobs right now; try another",
                            String::new(),
                        ))
                        .await;
                    }
                }
            }
            Err(Refusal::Ignore(why)) => tracing::debug!(request = %event.id, "ignored: {why}"),
            Err(Refusal::Answer(why)) => self.refuse(&event, why).await,
        }
    }

    fn validate(&self, event: &Event) -> Result<(), Refusal> {
        let addressed_elsewhere = {
            let mut providers = event.tags.public_keys().peekable();
            providers.peek().is_some()
                && !event
                    .tags
                    .public_keys()
                    .any(|p| *p == self.keys.public_key())
        };
        if addressed_elsewhere {
            return Err(Refusal::Ignore("addressed to other providers"));
        }
        if event.verify().is_err() {
            // The author cannot be trusted, so there is nobody to answer.
            return Err(Refusal::Ignore("invalid id or signature"));
        }
        if self.journal.lock().expect("journal lock").knows(&event.id) {
            return Err(Refusal::Ignore("already accepted (duplicate or replay)"));
        }
        if event.is_expired() {
            return Err(Refusal::Ignore("expired (NIP-40)"));
        }
        let now = Timestamp::now().as_secs();
        if event.created_at.as_secs() + self.config.max_request_age.as_secs() < now {
            return Err(Refusal::Ignore("older than the replay window"));
        }
        if event.created_at.as_secs() > now.saturating_add(self.config.max_request_future.as_secs())
        {
            return Err(Refusal::Ignore("dated too far in the future"));
        }
        let size = event.as_json().len();
        if size > self.config.max_request_bytes {
            return Err(Refusal::Answer(format!(
                "request is {size} bytes; this DVM accepts at most {}",
                self.config.max_request_bytes
            )));
        }
        JobRequest::from_event_for(event, self.keys.secret_key())
            .map(|_| ())
            .map_err(|err| Refusal::Answer(format!("invalid request: {err}")))
    }

    /// Answers a request with `error` feedback and remembers it, so it is answered once. The
    /// feedback is published in the background: a slow or failing relay must not hold up the
    /// intake of the requests behind this one.
    async fn refuse(&self, event: &Event, why: String) {
        tracing::info!(request = %event.id, "refused: {why}");
        {
            let mut journal = self.journal.lock().expect("journal lock");
            if !journal.knows(&event.id) {
                let _ = journal.accept(event);
            }
        }
        self.record(event.id, Outcome::Error);
        self.send_feedback_detached(seal_error(event, why, String::new()));
    }

    /// Publishes feedback in the background, for the intake path that must not wait on relays.
    fn send_feedback_detached(&self, feedback: JobFeedback) {
        if let Some(signed) = self.sign_feedback(&feedback) {
            let client = self.client.clone();
            let retry = self.config.retry;
            tokio::spawn(async move {
                if let Err(err) = publish::publish(&client, &signed, retry).await {
                    tracing::warn!("feedback for {} not published: {err}", feedback.request_id);
                }
            });
        }
    }

    async fn enqueue(&self, event: Event) {
        let token = self.shutdown.child_token();
        self.running
            .lock()
            .expect("running lock")
            .insert(event.id, token);
        let queued = JobFeedback::new(FeedbackStatus::Processing, &event).with_extra("queued");
        if let Err(err) = self.queue.try_send(event) {
            let event = err.into_inner();
            self.running.lock().expect("running lock").remove(&event.id);
            let waiting = self.config.queue_capacity;
            self.refuse(
                &event,
                format!("busy: {waiting} jobs are already waiting; try another DVM"),
            )
            .await;
            return;
        }
        // Taken: say so at once, so that the customer does not give up on a queued job.
        self.send_feedback_detached(queued);
    }

    async fn cancellation(&self, deletion: &Event) {
        if deletion.verify().is_err() {
            return;
        }
        let targets: Vec<(EventId, CancellationToken)> = {
            let running = self.running.lock().expect("running lock");
            deletion
                .tags
                .event_ids()
                .filter_map(|id| running.get(id).map(|t| (*id, t.clone())))
                .collect()
        };
        for (id, token) in targets {
            // Only the requester may cancel: check against the journaled request.
            let request = self.journal.lock().expect("journal lock").running(&id);
            if let Some(request) = request
                && nip90::is_cancellation_of(deletion, &request)
            {
                tracing::info!(request = %id, "cancelled by the customer");
                token.cancel();
            }
        }
    }

    async fn execute(&self, event: Event) {
        let Some(token) = self
            .running
            .lock()
            .expect("running lock")
            .get(&event.id)
            .cloned()
        else {
            return;
        };
        if token.is_cancelled() {
            self.finish_cancelled(&event, None).await;
            return;
        }
        if event.is_expired() {
            // NIP-40: it may have expired while it waited in the queue.
            self.refuse(&event, "the request expired before it could start".into())
                .await;
            return;
        }
        let request = match JobRequest::from_event_for(&event, self.keys.secret_key()) {
            Ok(request) => request,
            Err(err) => {
                self.refuse(&event, format!("invalid request: {err}")).await;
                return;
            }
        };
        let mut receipt = None;
        if let Some(gate) = &self.config.payments {
            match gate.collect(&request, &self.keys).await {
                crate::handler::Payment::Paid(paid) => {
                    tracing::info!(request = %event.id, msats = paid.msats, "paid");
                    receipt = Some(paid);
                }
                crate::handler::Payment::Required { msats, mints } => {
                    tracing::info!(request = %event.id, msats, "payment required");
                    self.record(event.id, Outcome::Error);
                    let feedback = JobFeedback::new(FeedbackStatus::PaymentRequired, &event)
                        .with_extra(format!(
                            "this DVM charges {msats} msats per job, paid up front (a per-second \
                             price for the longest run, the change returned), in Cashu tokens \
                             P2PK-locked to its key from one of: {}",
                            mints.join(", ")
                        ))
                        .with_amount(msats);
                    self.send_feedback(feedback).await;
                    return;
                }
                crate::handler::Payment::Refused(why) => {
                    self.refuse(&event, format!("payment refused: {why}")).await;
                    return;
                }
            }
        }
        self.send_feedback(JobFeedback::new(FeedbackStatus::Processing, &event))
            .await;

        let (progress_tx, progress_rx) = mpsc::channel(16);
        let result_tags = Arc::new(Mutex::new(Vec::new()));
        let charged = Arc::new(Mutex::new(None));
        let ctx = JobContext {
            payment: receipt.clone(),
            charged: charged.clone(),
            cancel: token.clone(),
            progress: progress_tx,
            result_tags: result_tags.clone(),
            relays: crate::handler::Relays {
                client: self.client.clone(),
                keys: self.keys.clone(),
                retry: self.config.retry,
            },
        };
        let job_done = CancellationToken::new();
        let forwarder = self.forward_progress(&event, progress_rx, job_done.clone());
        let job = Job {
            event: event.clone(),
            request,
        };
        let limit = self.handler.max_duration();
        let started = tokio::time::Instant::now();
        let outcome = async {
            let outcome = tokio::select! {
                outcome = self.handler.run(job, ctx) => Some(outcome),
                () = tokio::time::sleep(limit) => None,
            };
            job_done.cancel();
            outcome
        };
        let (outcome, ()) = tokio::join!(outcome, forwarder);
        let worked = started.elapsed();
        let cancelled_by_customer = token.is_cancelled() && !self.shutdown.is_cancelled();
        // Whatever the handler left behind must stop now.
        token.cancel();
        if self.shutdown.is_cancelled() {
            // Interrupted by our own shutdown: leave it unfinished so the next start resumes it.
            self.running.lock().expect("running lock").remove(&event.id);
            return;
        }
        let before_start = matches!(&outcome, Some(Err(failure)) if failure.before_start);
        // What the handler said it earned wins over the gate's price for the time worked; a
        // job that failed before it started earned nothing either way.
        let earned = match *charged.lock().expect("charge lock") {
            _ if before_start => crate::handler::Earned::Nothing,
            Some(msats) => crate::handler::Earned::Charged(msats),
            None => crate::handler::Earned::Worked(worked),
        };
        let change = match &receipt {
            Some(paid) => self.change(paid, earned).await,
            None => None,
        };
        match outcome {
            Some(Ok(output)) => {
                let mut extra = std::mem::take(&mut *result_tags.lock().expect("result tags lock"));
                extra.extend(change.and_then(|sealed| {
                    Tag::parse([quorum_proto::payment::TAG_CHANGE.to_string(), sealed]).ok()
                }));
                self.finish_success(&event, output.content, extra).await
            }
            Some(Err(_)) if cancelled_by_customer => self.finish_cancelled(&event, change).await,
            Some(Err(failure)) => self.finish_failure(&event, failure, change).await,
            None => {
                self.finish_failure(
                    &event,
                    JobFailure::new(format!("the job ran longer than {}s", limit.as_secs())),
                    change,
                )
                .await
            }
        }
    }

    /// The change of a paid job, sealed to the payer: what the job did not earn of the
    /// payment.
    async fn change(
        &self,
        paid: &crate::handler::Receipt,
        earned: crate::handler::Earned,
    ) -> Option<String> {
        let gate = self.config.payments.as_ref()?;
        let change = gate.settle(paid, &self.keys, earned).await?;
        match quorum_proto::payment::change_tag(self.keys.secret_key(), &change.to, &change.token) {
            Ok(tag) => {
                tracing::info!(msats = change.msats, "change returned to the payer");
                tag.as_slice().get(1).cloned()
            }
            Err(err) => {
                tracing::warn!("cannot seal the change: {err}");
                None
            }
        }
    }

    /// Publishes the latest reported log tail at most once per `partial_interval`, and a
    /// `processing` heartbeat after `heartbeat` of silence, until the job is done.
    async fn forward_progress(
        &self,
        request: &Event,
        mut progress: mpsc::Receiver<Progress>,
        job_done: CancellationToken,
    ) {
        let mut last_sent = tokio::time::Instant::now();
        let mut sent_partial = false;
        let mut pending: Option<String> = None;
        loop {
            let now = tokio::time::Instant::now();
            let (wait, heartbeat) = match &pending {
                Some(_) if !sent_partial => (Duration::ZERO, false),
                Some(_) => (
                    (last_sent + self.config.partial_interval).saturating_duration_since(now),
                    false,
                ),
                None => (
                    (last_sent + self.config.heartbeat).saturating_duration_since(now),
                    true,
                ),
            };
            tokio::select! {
                () = job_done.cancelled() => break,
                message = progress.recv() => match message {
                    Some(Progress::Partial(text)) => pending = Some(text),
                    None => break,
                },
                () = tokio::time::sleep(wait) => {
                    let feedback = if heartbeat {
                        JobFeedback::new(FeedbackStatus::Processing, request)
                    } else {
                        let text = pending.take().expect("pending when not a heartbeat");
                        sent_partial = true;
                        JobFeedback::new(FeedbackStatus::Partial, request)
                            .with_content(tail(&text, self.config.partial_max_bytes))
                    };
                    self.send_feedback(feedback).await;
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
    }

    async fn finish_success(&self, request: &Event, content: String, extra: Vec<Tag>) {
        // The envelope's own tags come first and these cannot replace them.
        let extra = extra
            .into_iter()
            .filter(|tag| !matches!(tag.kind().as_str(), "request" | "encrypted" | "amount"));
        let result = JobResult::for_request(request, content)
            .and_then(|result| result.to_event_builder(self.keys.secret_key()))
            .map(|builder| builder.tags(extra));
        let event = match result.map(|b| b.sign_with_keys(&self.keys)) {
            Ok(Ok(event)) => event,
            Ok(Err(err)) => {
                tracing::error!("cannot sign the result of {}: {err}", request.id);
                return;
            }
            Err(err) => {
                tracing::error!("cannot build the result of {}: {err}", request.id);
                return;
            }
        };
        match publish::publish(&self.client, &event, self.config.retry).await {
            Ok(report) => {
                log_report(&report, "result", request.id);
                self.record(request.id, Outcome::Success);
                self.continue_chain(request, &event).await;
            }
            // Not recorded as finished: a restart retries, and finds the result if it did land.
            Err(err) => tracing::error!("result of {} not published: {err}", request.id),
        }
    }

    /// Naive chains: if the request carries the rest of its chain, this DVM publishes the next
    /// step's request, pinning the result it just published.
    async fn continue_chain(&self, request: &Event, result: &Event) {
        let Ok(parsed) = JobRequest::from_event_for(request, self.keys.secret_key()) else {
            return;
        };
        if parsed
            .param_value(quorum_proto::quorum_job::PARAM_MANDATE)
            .is_some()
        {
            // A quorum chain: the quorum key signs the next step once its members agree; one
            // member alone must not hand the chain on.
            return;
        }
        let next = match quorum_proto::chain::next_request(request, &parsed, result.id) {
            None => return,
            Some(Ok(next)) => next,
            Some(Err(err)) => {
                tracing::warn!(request = %request.id, "the chain stops here: {err}");
                return;
            }
        };
        match next.to_event_builder().sign_with_keys(&self.keys) {
            Ok(event) => match publish::publish(&self.client, &event, self.config.retry).await {
                Ok(_) => {
                    tracing::info!(request = %request.id, next = %event.id, "chain continued");
                    // Our client is not notified of events it published itself: a step addressed to
                    // this DVM is taken here (the journal keeps it to once either way).
                    if next.providers.contains(&self.keys.public_key()) {
                        Box::pin(self.intake(event)).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(request = %request.id, "next chain step not published: {err}")
                }
            },
            Err(err) => {
                tracing::warn!(request = %request.id, "cannot sign the next chain step: {err}")
            }
        }
    }

    async fn finish_failure(&self, request: &Event, failure: JobFailure, change: Option<String>) {
        tracing::info!(request = %request.id, "job failed: {}", failure.message);
        let mut feedback = seal_error(
            request,
            failure.message,
            tail(&failure.content, self.config.partial_max_bytes),
        );
        feedback.change = change;
        self.send_feedback(feedback).await;
        self.record(request.id, Outcome::Error);
    }

    async fn finish_cancelled(&self, request: &Event, change: Option<String>) {
        let mut feedback = seal_error(request, "cancelled by the customer", String::new());
        feedback.change = change;
        self.send_feedback(feedback).await;
        self.record(request.id, Outcome::Cancelled);
    }

    fn record(&self, id: EventId, outcome: Outcome) {
        self.running.lock().expect("running lock").remove(&id);
        let mut journal = self.journal.lock().expect("journal lock");
        if let Err(err) = journal.finish(id, outcome) {
            tracing::error!("cannot record the end of job {id}: {err}");
        }
        // Forget what can no longer be replayed, so the journal does not grow for ever.
        if let Err(err) = journal.compact(journal_retention(&self.config)) {
            tracing::warn!("cannot compact the job journal: {err}");
        }
    }

    fn sign_feedback(&self, feedback: &JobFeedback) -> Option<Event> {
        let request = feedback.request_id;
        match feedback
            .to_event_builder(self.keys.secret_key())
            .map(|b| b.sign_with_keys(&self.keys))
        {
            Ok(Ok(event)) => Some(event),
            Ok(Err(err)) => {
                tracing::error!("cannot sign feedback for {request}: {err}");
                None
            }
            Err(err) => {
                tracing::error!("cannot build feedback for {request}: {err}");
                None
            }
        }
    }

    async fn send_feedback(&self, feedback: JobFeedback) {
        let Some(event) = self.sign_feedback(&feedback) else {
            return;
        };
        if let Err(err) = publish::publish(&self.client, &event, self.config.retry).await {
            tracing::warn!("feedback for {} not published: {err}", feedback.request_id);
        }
    }
}

fn log_report(report: &PublishReport, what: &str, request: EventId) {
    tracing::debug!(
        request = %request,
        accepted = report.accepted.len(),
        failed = report.failed.len(),
        deferred = report.deferred.len(),
        "{what} published"
    );
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}
