//! The DVM runtime end to end over a real relay on loopback: a customer (nostr-sdk client)
//! publishes requests and reads feedback and results; a test handler does the "work".

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::{Dvm, DvmConfig, Job, JobContext, JobFailure, JobHandler, JobOutput};
use quorum_proto::nip89::{Capabilities, JobLimits, Offer, Price};
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobInput, JobRequest, JobResult};
use tokio::sync::oneshot;

const KIND: u16 = 5702;
const WAIT: Duration = Duration::from_secs(15);

/// Upper-cases its text input. Params: `sleep_ms` (wait, cancellable), `fail` (fail with that
/// message), `partial` (report a log tail first).
#[derive(Clone, Default)]
struct Echo {
    runs: Arc<AtomicUsize>,
}

impl JobHandler for Echo {
    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::from_u16(KIND)]
    }

    fn offer(&self) -> Offer {
        Offer {
            capabilities: Capabilities {
                arch: std::env::consts::ARCH.into(),
                os: "linux".into(),
                sandbox: "none".into(),
                toolchains: vec![],
                network: false,
                images: false,
                require_image: false,
            },
            price: Price::default(),
            limits: JobLimits {
                concurrency: 2,
                max_timeout_secs: 30,
                max_request_bytes: 4096,
            },
        }
    }

    async fn run(&self, job: Job, ctx: JobContext) -> Result<JobOutput, JobFailure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(text) = job.request.param_value("partial") {
            ctx.partial(text);
        }
        if let Some(ms) = job.request.param_value("sleep_ms") {
            let ms: u64 = ms.parse().map_err(|_| JobFailure::new("bad sleep_ms"))?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                () = ctx.cancelled() => return Err(JobFailure::new("interrupted")),
            }
        }
        if let Some(message) = job.request.param_value("fail") {
            return Err(JobFailure::new(message).with_content("last log line"));
        }
        let text = job
            .request
            .inputs
            .iter()
            .find(|i| i.input_type == quorum_proto::nip90::InputType::Text)
            .map(|i| i.data.to_uppercase())
            .unwrap_or_default();
        Ok(JobOutput { content: text })
    }
}

struct TestRelay {
    url: RelayUrl,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_relay(dir: &Path) -> TestRelay {
    start_relay_at(dir, "127.0.0.1:0").await
}

async fn start_relay_at(dir: &Path, addr: &str) -> TestRelay {
    start_relay_on(dir, addr, quorum_relay::RelayConfig::default()).await
}

async fn start_relay_with(dir: &Path, config: quorum_relay::RelayConfig) -> TestRelay {
    start_relay_on(dir, "127.0.0.1:0", config).await
}

async fn start_relay_on(dir: &Path, addr: &str, config: quorum_relay::RelayConfig) -> TestRelay {
    let relay = quorum_relay::Relay::open(config, dir)
        .await
        .expect("relay opens");
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(relay.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestRelay {
        url,
        stop: Some(stop),
    }
}

fn config(relay: &TestRelay, data: &Path) -> DvmConfig {
    let mut config = DvmConfig::new(vec![relay.url.clone()], data.to_path_buf(), "echo");
    config.max_request_bytes = 4096;
    config.partial_interval = Duration::from_millis(50);
    config
}

/// A customer connected to the relay, subscribed to everything addressed to it.
struct Customer {
    keys: Keys,
    client: Client,
    notifications: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    /// Events received while waiting for something else, so that no answer is lost.
    backlog: Vec<Event>,
}

impl Customer {
    async fn connect(relay: &TestRelay) -> Customer {
        let keys = Keys::generate();
        let client = Client::new(keys.clone());
        client.add_relay(relay.url.clone()).await.unwrap();
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;
        let notifications = client.notifications();
        client
            .subscribe(Filter::new().pubkey(keys.public_key()), None)
            .await
            .unwrap();
        Customer {
            keys,
            client,
            notifications,
            backlog: Vec::new(),
        }
    }

    async fn send(&self, builder: EventBuilder) -> Event {
        let event = builder.sign_with_keys(&self.keys).unwrap();
        let output = self.client.send_event(&event).await.unwrap();
        assert!(output.failed.is_empty(), "{:?}", output.failed);
        event
    }

    /// The next event about `request` matching `pred`, or panic after WAIT.
    async fn next(&mut self, request: EventId, pred: impl Fn(&Event) -> bool) -> Event {
        let about = |e: &Event| e.tags.event_ids().any(|id| *id == request) && pred(e);
        if let Some(i) = self.backlog.iter().position(about) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notification = tokio::time::timeout_at(deadline, self.notifications.recv())
                .await
                .expect("timed out waiting for the DVM")
                .expect("notifications");
            if let RelayPoolNotification::Event { event, .. } = notification {
                if about(&event) {
                    return *event;
                }
                self.backlog.push(*event);
            }
        }
    }

    /// The next feedback of `status`; for `processing`, the one that says the job *started*
    /// (not the `queued` acknowledgement).
    async fn feedback(&mut self, request: EventId, status: FeedbackStatus) -> JobFeedback {
        let event = self
            .next(request, |e| {
                e.kind.as_u16() == 7000
                    && JobFeedback::from_event(e)
                        .is_ok_and(|f| f.status == status && f.extra.as_deref() != Some("queued"))
            })
            .await;
        JobFeedback::from_event(&event).unwrap()
    }

    async fn result(&mut self, request: EventId) -> (Event, JobResult) {
        let event = self.next(request, |e| e.kind.as_u16() == KIND + 1000).await;
        let result = JobResult::from_event(&event).expect("valid result");
        (event, result)
    }

    /// Drops everything received so far: what arrives later is new.
    fn forget(&mut self) {
        self.backlog.clear();
    }

    /// Asserts that nothing about `request` arrived since the last `forget` nor arrives within
    /// `quiet`.
    async fn silence(&mut self, request: EventId, quiet: Duration) {
        assert!(
            !self
                .backlog
                .iter()
                .any(|e| e.tags.event_ids().any(|id| *id == request)),
            "unexpected answer already received"
        );
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Ok(notification)) =
            tokio::time::timeout_at(deadline, self.notifications.recv()).await
        {
            if let RelayPoolNotification::Event { event, .. } = notification {
                assert!(
                    !event.tags.event_ids().any(|id| *id == request),
                    "unexpected answer: {}",
                    event.as_json()
                );
                self.backlog.push(*event);
            }
        }
    }
}

fn echo_request(text: &str) -> JobRequest {
    JobRequest::new(Kind::from_u16(KIND))
        .unwrap()
        .input(JobInput::text(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gets_processing_partial_and_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        Echo::default(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let request = customer
        .send(
            echo_request("hello")
                .param("partial", "compiling…")
                .param("sleep_ms", "300")
                .provider(dvm.public_key())
                .to_event_builder(),
        )
        .await;
    customer
        .feedback(request.id, FeedbackStatus::Processing)
        .await;
    let partial = customer.feedback(request.id, FeedbackStatus::Partial).await;
    assert_eq!(partial.content, "compiling…");
    let (event, result) = customer.result(request.id).await;
    assert_eq!(event.pubkey, dvm.public_key());
    assert_eq!(result.content, "HELLO");
    assert_eq!(result.request, request);

    // The DVM announced itself (NIP-89) with our kind.
    let announcements = customer
        .client
        .fetch_events(
            Filter::new()
                .kind(Kind::from_u16(31990))
                .author(dvm.public_key()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let announcement =
        quorum_proto::nip89::Announcement::from_event(announcements.first().unwrap()).unwrap();
    assert_eq!(announcement.kinds, vec![Kind::from_u16(KIND)]);
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_bad_requests_get_error_feedback_that_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let handler = Echo::default();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        handler.clone(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;

    let failing = customer
        .send(
            echo_request("x")
                .param("fail", "tests failed: 3")
                .to_event_builder(),
        )
        .await;
    let error = customer.feedback(failing.id, FeedbackStatus::Error).await;
    assert_eq!(error.extra.as_deref(), Some("tests failed: 3"));
    assert_eq!(error.content, "last log line");

    let malformed = customer
        .send(
            EventBuilder::new(Kind::from_u16(KIND), "")
                .tag(Tag::parse(["i", "x", "carrier-pigeon"]).unwrap()),
        )
        .await;
    let error = customer.feedback(malformed.id, FeedbackStatus::Error).await;
    assert!(
        error.extra.as_deref().unwrap().contains("carrier-pigeon"),
        "{error:?}"
    );

    let oversized = customer
        .send(echo_request(&"a".repeat(8000)).to_event_builder())
        .await;
    let error = customer.feedback(oversized.id, FeedbackStatus::Error).await;
    assert!(
        error.extra.as_deref().unwrap().contains("at most 4096"),
        "{error:?}"
    );

    // Requests for someone else are ignored, and none of the above ran.
    let elsewhere = customer
        .send(
            echo_request("not for you")
                .provider(Keys::generate().public_key())
                .to_event_builder(),
        )
        .await;
    customer
        .silence(elsewhere.id, Duration::from_millis(1000))
        .await;
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        1,
        "only the failing job ran"
    );
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_in_the_queue_is_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let mut config = config(&relay, &dir.path().join("dvm"));
    config.concurrency = 1;
    let handler = Echo::default();
    let dvm = Dvm::start(config, Keys::generate(), handler.clone())
        .await
        .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let blocker = customer
        .send(
            echo_request("first")
                .param("sleep_ms", "2500")
                .to_event_builder(),
        )
        .await;
    customer
        .feedback(blocker.id, FeedbackStatus::Processing)
        .await;
    let mut hurried = echo_request("expires while waiting");
    hurried.expiration = Some(Timestamp::now() + 1);
    let hurried = customer.send(hurried.to_event_builder()).await;
    let error = customer.feedback(hurried.id, FeedbackStatus::Error).await;
    assert!(
        error.extra.as_deref().unwrap().contains("expired"),
        "{error:?}"
    );
    customer.result(blocker.id).await;
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        1,
        "the expired job ran"
    );
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_requests_get_encrypted_results() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let dvm_keys = Keys::generate();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        dvm_keys.clone(),
        Echo::default(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let builder = echo_request("top secret")
        .provider(dvm.public_key())
        .to_encrypted_event_builder(customer.keys.secret_key())
        .unwrap();
    let request = customer.send(builder).await;
    assert!(!request.content.contains("top secret"));
    let (event, result) = customer.result(request.id).await;
    assert!(!event.content.contains("TOP SECRET"));
    let clear = result
        .decrypt(customer.keys.secret_key(), &dvm_keys.public_key())
        .unwrap();
    assert_eq!(clear, "TOP SECRET");
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_can_cancel_a_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        Echo::default(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let request = customer
        .send(
            echo_request("slow")
                .param("sleep_ms", "20000")
                .to_event_builder(),
        )
        .await;
    customer
        .feedback(request.id, FeedbackStatus::Processing)
        .await;
    // A stranger cannot cancel it…
    let stranger = Keys::generate();
    let forged = quorum_proto::nip90::cancellation(&request, "")
        .sign_with_keys(&stranger)
        .unwrap();
    customer.client.send_event(&forged).await.unwrap();
    // …the customer can.
    customer
        .send(quorum_proto::nip90::cancellation(&request, "wrong commit"))
        .await;
    let error = customer.feedback(request.id, FeedbackStatus::Error).await;
    assert_eq!(error.extra.as_deref(), Some("cancelled by the customer"));
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_repeats_a_finished_job_nor_drops_an_accepted_one() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let keys = Keys::generate();
    let data = dir.path().join("dvm");
    let handler = Echo::default();
    let dvm = Dvm::start(config(&relay, &data), keys.clone(), handler.clone())
        .await
        .unwrap();
    let mut customer = Customer::connect(&relay).await;

    let finished = customer.send(echo_request("once").to_event_builder()).await;
    customer.result(finished.id).await;
    let interrupted = customer
        .send(
            echo_request("resume me")
                .param("sleep_ms", "1500")
                .to_event_builder(),
        )
        .await;
    customer
        .feedback(interrupted.id, FeedbackStatus::Processing)
        .await;
    dvm.shutdown().await;
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    customer.forget();

    // The restarted DVM sees both requests again on the relay (they are inside its window).
    let dvm = Dvm::start(config(&relay, &data), keys.clone(), handler.clone())
        .await
        .unwrap();
    let (_, result) = customer.result(interrupted.id).await;
    assert_eq!(result.content, "RESUME ME");
    customer
        .silence(finished.id, Duration::from_millis(1000))
        .await;
    assert_eq!(
        handler.runs.load(Ordering::SeqCst),
        3,
        "the finished job ran again, or the interrupted one did not resume"
    );
    dvm.shutdown().await;

    // A third start finds nothing left to do.
    customer.forget();
    let dvm = Dvm::start(config(&relay, &data), keys, handler.clone())
        .await
        .unwrap();
    customer
        .silence(interrupted.id, Duration::from_millis(1000))
        .await;
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let mut config = config(&relay, &dir.path().join("dvm"));
    config.concurrency = 1;
    config.queue_capacity = 1;
    let dvm = Dvm::start(config, Keys::generate(), Echo::default())
        .await
        .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let mut requests = Vec::new();
    for i in 0..4 {
        requests.push(
            customer
                .send(
                    echo_request(&format!("{i}"))
                        .param("sleep_ms", "1000")
                        .to_event_builder(),
                )
                .await,
        );
    }
    // Which request finds the queue full depends on timing; that some do, and that every
    // other one is served, does not.
    let mut busy = 0;
    for request in &requests {
        let answer = customer
            .next(request.id, |e| {
                e.kind.as_u16() == KIND + 1000
                    || JobFeedback::from_event(e).is_ok_and(|f| f.status == FeedbackStatus::Error)
            })
            .await;
        if answer.kind.as_u16() == 7000 {
            let error = JobFeedback::from_event(&answer).unwrap();
            assert!(
                error.extra.as_deref().unwrap().starts_with("busy"),
                "{error:?}"
            );
            busy += 1;
        }
    }
    assert!(
        busy >= 1,
        "4 jobs for 1 slot and a queue of 1: some must be refused"
    );
    assert!(
        busy <= 2,
        "at least the running and the queued job are served"
    );
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dvm_reconnects_when_its_relay_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay-1")).await;
    let addr = relay
        .url
        .as_str()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_string();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        Echo::default(),
    )
    .await
    .unwrap();
    drop(relay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same address, a new relay process (and store): the DVM must find its way back.
    let relay = start_relay_at(&dir.path().join("relay-2"), &addr).await;
    let mut customer = Customer::connect(&relay).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = customer
            .send(echo_request("again").to_event_builder())
            .await;
        let answered =
            tokio::time::timeout(Duration::from_secs(5), customer.result(request.id)).await;
        if let Ok((_, result)) = answered {
            assert_eq!(result.content, "AGAIN");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the DVM did not come back within 60 s"
        );
    }
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_client_can_send_the_same_request_twice_in_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let handler = Echo::default();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        handler.clone(),
    )
    .await
    .unwrap();
    let client =
        quorum_dvm::client::JobClient::connect(std::slice::from_ref(&relay.url), Keys::generate())
            .await
            .unwrap();
    let request = echo_request("twice").provider(dvm.public_key());
    for _ in 0..2 {
        let outcome = client
            .run(&request, false, WAIT, &mut quorum_dvm::client::Quiet)
            .await
            .expect("an answer");
        match outcome {
            quorum_dvm::client::JobOutcome::Result { content, .. } => assert_eq!(content, "TWICE"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(handler.runs.load(Ordering::SeqCst), 2, "both requests ran");
    client.shutdown().await;
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dated_far_in_the_future_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // A relay that stores anything, however far ahead it is dated.
    let relay = start_relay_with(
        &dir.path().join("relay"),
        quorum_relay::RelayConfig {
            limits: quorum_relay::config::Limits {
                max_future_secs: 30 * 86_400,
                ..quorum_relay::config::Limits::default()
            },
            ..quorum_relay::RelayConfig::default()
        },
    )
    .await;
    let handler = Echo::default();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        Keys::generate(),
        handler.clone(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;
    // A day ahead: it would still be inside the replay window long after the journal forgot
    // it, so it is never taken.
    let far = customer
        .send(
            echo_request("from the future")
                .to_event_builder()
                .custom_created_at(Timestamp::now() + 86_400),
        )
        .await;
    customer.silence(far.id, Duration::from_millis(1500)).await;
    assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
    // A little clock skew is fine.
    let skewed = customer
        .send(
            echo_request("a bit early")
                .to_event_builder()
                .custom_created_at(Timestamp::now() + 60),
        )
        .await;
    let (_, result) = customer.result(skewed.id).await;
    assert_eq!(result.content, "A BIT EARLY");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_jobs_failure_is_not_readable_in_the_clear() {
    use quorum_dvm::client::{JobClient, JobOutcome, Quiet};
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let dvm_keys = Keys::generate();
    let dvm = Dvm::start(
        config(&relay, &dir.path().join("dvm")),
        dvm_keys.clone(),
        Echo::default(),
    )
    .await
    .unwrap();
    let mut customer = Customer::connect(&relay).await;
    let secret = "cannot fetch https://git.internal/secret-project.git";
    let request = customer
        .send(
            echo_request("x")
                .param("fail", secret)
                .provider(dvm.public_key())
                .to_encrypted_event_builder(customer.keys.secret_key())
                .unwrap(),
        )
        .await;
    let event = customer
        .next(request.id, |e| {
            e.kind.as_u16() == 7000
                && JobFeedback::from_event(e).is_ok_and(|f| f.status == FeedbackStatus::Error)
        })
        .await;
    // Nothing of the reason or the log in the clear, anywhere in the event.
    let raw = event.as_json();
    assert!(!raw.contains("secret-project"), "{raw}");
    assert!(!raw.contains("last log line"), "{raw}");
    let feedback = JobFeedback::from_event(&event).unwrap();
    assert_eq!(
        feedback.extra.as_deref(),
        Some(quorum_dvm::runtime::SEALED_ERROR)
    );
    assert!(feedback.encrypted);
    // The customer's key opens it.
    let clear = feedback
        .decrypt(customer.keys.secret_key(), &dvm_keys.public_key())
        .unwrap();
    let sealed: serde_json::Value = serde_json::from_str(&clear).unwrap();
    assert_eq!(sealed["reason"], secret);
    assert_eq!(sealed["log_tail"], "last log line");

    // Our job client reads it back as an ordinary failure; refusals are sealed the same way.
    let client = JobClient::connect(std::slice::from_ref(&relay.url), Keys::generate())
        .await
        .unwrap();
    for (request, reason, log) in [
        (
            echo_request("y").param("fail", secret),
            secret.to_string(),
            "last log line",
        ),
        (
            echo_request(&"z".repeat(5000)),
            "this DVM accepts at most 4096".to_string(),
            "",
        ),
    ] {
        let request = request.provider(dvm.public_key());
        match client.run(&request, true, WAIT, &mut Quiet).await.unwrap() {
            JobOutcome::Error { feedback, .. } => {
                let extra = feedback.extra.unwrap_or_default();
                assert!(extra.contains(&reason), "{extra}");
                assert_eq!(feedback.content, log);
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    client.shutdown().await;
    dvm.shutdown().await;
}
