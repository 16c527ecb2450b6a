//! The seam between the runtime and a DVM role: what a job handler receives and returns.
//!
//! Every role (runner, watcher, router, quorum member, publisher, deployer) implements
//! [`JobHandler`]; the runtime does intake, validation, journaling, feedback and publishing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::{Event, Kind, Tag};
use quorum_proto::nip89::Offer;
use quorum_proto::nip90::JobRequest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A validated job: the raw request event and its parsed (and, if it was encrypted, decrypted)
/// form.
#[derive(Debug, Clone)]
pub struct Job {
    pub event: Event,
    pub request: JobRequest,
}

/// What a successful job returns: the result content (the runtime encrypts it if the request
/// was encrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    pub content: String,
}

/// Why a job failed, as told to the customer in `error` feedback. It is public: it must name
/// the problem and never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    /// Optional content for the feedback (e.g. the tail of a failed build's log).
    pub content: String,
    /// The job failed before its work began (an invalid request, a source that cannot be
    /// fetched): a paid job gets its whole payment back (docs/protocol.md §17.4).
    pub before_start: bool,
}

impl JobFailure {
    pub fn new(message: impl Into<String>) -> Self {
        JobFailure {
            message: message.into(),
            content: String::new(),
            before_start: false,
        }
    }

    /// Marks a failure that happened before any work began.
    pub fn before_start(mut self) -> Self {
        self.before_start = true;
        self
    }

    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }
}

/// Progress a handler reports while it works.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    /// A `partial` feedback with this content (a log tail).
    Partial(String),
}

/// Given to a handler for the duration of one job.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: mpsc::Sender<Progress>,
    /// Tags the handler asked for on its result (see [`JobContext::add_result_tags`]).
    pub(crate) result_tags: Arc<Mutex<Vec<Tag>>>,
    /// The DVM's relays and key, for the events a role publishes besides its result.
    pub(crate) relays: Relays,
    /// What the request paid, when the DVM takes payment ([`JobContext::payment`]).
    pub(crate) payment: Option<Receipt>,
    /// What the handler said it earned ([`JobContext::charge`]); `None`: the gate's own price.
    pub(crate) charged: Arc<Mutex<Option<u64>>>,
}

impl JobContext {
    /// Reports partial output (a log tail). The runtime rate-limits and caps what it
    /// publishes, so calling this often is fine.
    pub fn partial(&self, content: impl Into<String>) {
        // A full channel means feedback is already queued; dropping one tail loses nothing
        // the next one will not carry.
        let _ = self.progress.try_send(Progress::Partial(content.into()));
    }

    /// Resolves when the customer cancelled the job (NIP-09) or the DVM shuts down.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Asks for extra tags on this job's result event (e.g. a wrapper's `quorum` and
    /// attestation tags, protocol §15.8). They are appended after the NIP-90 envelope's own
    /// tags, so the first `e` and `p` still name the request and the customer; tags that would
    /// change the envelope (`request`, `encrypted`, `amount`) are dropped. They are public even
    /// when the result content is encrypted. Used only if the job succeeds.
    pub fn add_result_tags(&self, tags: impl IntoIterator<Item = Tag>) {
        self.result_tags
            .lock()
            .expect("result tags lock")
            .extend(tags);
    }

    /// Signs `builder` with the DVM's key and publishes it on the DVM's relays: what a role
    /// publishes besides its result and feedback (a runner's NIP-C1 job result).
    pub async fn publish(
        &self,
        builder: nostr_sdk::prelude::EventBuilder,
    ) -> Result<Event, RelayError> {
        self.relays.publish(builder).await
    }

    /// The DVM's public key, which signs what [`JobContext::publish`] publishes.
    pub fn public_key(&self) -> nostr_sdk::prelude::PublicKey {
        self.relays.keys.public_key()
    }

    /// Stored events matching `filter` on the DVM's relays, waiting up to `timeout`.
    pub async fn fetch(
        &self,
        filter: nostr_sdk::prelude::Filter,
        timeout: Duration,
    ) -> Result<Vec<Event>, RelayError> {
        self.relays.fetch(filter, timeout).await
    }

    /// A token to hand to lower layers (e.g. a sandbox) that must stop on cancellation.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// What the request paid (already redeemed into the DVM's wallet), when this DVM takes
    /// payment; `None` for a DVM without a [`PaymentGate`].
    pub fn payment(&self) -> Option<&Receipt> {
        self.payment.as_ref()
    }

    /// Sets what this job earned, in millisats, instead of the gate's own price: a DVM whose
    /// cost is only known at the end (a router, which pays the runners it hires from the
    /// payment) charges what it spent. When the job is over the gate gives back the rest of
    /// the payment as change. Ignored for a job that fails before it started (it is refunded
    /// in full); the last call counts.
    pub fn charge(&self, msats: u64) {
        *self.charged.lock().expect("charge lock") = Some(msats);
    }
}

/// The DVM's relays and key, as a handler uses them through its [`JobContext`].
#[derive(Clone)]
pub(crate) struct Relays {
    pub client: nostr_sdk::Client,
    pub keys: nostr_sdk::prelude::Keys,
    pub retry: crate::publish::RetryPolicy,
}

/// Why a handler's own publication or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot sign the event: {0}")]
    Sign(String),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error("cannot fetch from the relays: {0}")]
    Fetch(String),
}

impl Relays {
    async fn publish(
        &self,
        builder: nostr_sdk::prelude::EventBuilder,
    ) -> Result<Event, RelayError> {
        let event = builder
            .sign_with_keys(&self.keys)
            .map_err(|e| RelayError::Sign(e.to_string()))?;
        crate::publish::publish(&self.client, &event, self.retry).await?;
        Ok(event)
    }

    async fn fetch(
        &self,
        filter: nostr_sdk::prelude::Filter,
        timeout: Duration,
    ) -> Result<Vec<Event>, RelayError> {
        // Not waiting for relays known to be failing: they would hold the job up.
        crate::publish::fetch(&self.client, filter, timeout)
            .await
            .map_err(|e| RelayError::Fetch(e.to_string()))
    }
}

/// A DVM role.
pub trait JobHandler: Send + Sync + 'static {
    /// The request kinds this handler serves (5000–5999).
    fn kinds(&self) -> Vec<Kind>;

    /// What it offers, for the NIP-89 announcement.
    fn offer(&self) -> Offer;

    /// The longest a job may take before the runtime gives up on it.
    fn max_duration(&self) -> Duration {
        Duration::from_secs(self.offer().limits.max_timeout_secs.max(1) + 60)
    }

    /// Runs one job.
    fn run(
        &self,
        job: Job,
        ctx: JobContext,
    ) -> impl Future<Output = Result<JobOutput, JobFailure>> + Send;
}

/// What a priced DVM does with the payment a request carries (docs/protocol.md §17.4),
/// checked after the request is accepted and before any work: [`Payment::Paid`] lets the job
/// run; [`Payment::Required`] answers `payment-required` with the amount and does no work;
/// [`Payment::Refused`] answers `error` with the reason (a spent, short, wrongly locked or
/// foreign token) and does no work. When the job is over, [`PaymentGate::settle`] gives back
/// what was paid and not earned. Implemented by the payments crate with a Cashu wallet.
pub trait PaymentGate: Send + Sync + 'static {
    fn collect<'a>(
        &'a self,
        request: &'a JobRequest,
        dvm: &'a nostr_sdk::prelude::Keys,
    ) -> std::pin::Pin<Box<dyn Future<Output = Payment> + Send + 'a>>;

    /// The change for a paid job that is over: what `earned` leaves of the payment. `None`:
    /// nothing to give back (or it could not be made, which the gate logs).
    fn settle<'a>(
        &'a self,
        _paid: &'a Receipt,
        _dvm: &'a nostr_sdk::prelude::Keys,
        _earned: Earned,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Change>> + Send + 'a>> {
        Box::pin(async { None })
    }
}

/// What a paid job that is over earned, for [`PaymentGate::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earned {
    /// Nothing: it failed before it started, and the whole payment goes back.
    Nothing,
    /// It ran this long: the gate's own price for that (per job, per second).
    Worked(Duration),
    /// The handler said what it earned ([`JobContext::charge`]), in millisats.
    Charged(u64),
}

/// The verdict of a [`PaymentGate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// Received this (or the DVM is free).
    Paid(Receipt),
    /// Nothing was paid: this is the price asked up front (per job, or per second for the
    /// longest a job may run), and these are the mints taken.
    Required { msats: u64, mints: Vec<String> },
    /// A payment was offered and refused, for this public reason.
    Refused(String),
}

/// What a DVM received for a job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    pub msats: u64,
    /// Whom change goes to: the payment's refund key (the payer's); `None`: no change.
    pub refund_to: Option<nostr_sdk::prelude::PublicKey>,
}

/// Change a DVM gives back: a token locked to `to` (the payer's key), worth `msats`.
pub struct Change {
    pub msats: u64,
    pub to: nostr_sdk::prelude::PublicKey,
    pub token: String,
}

/// A token is money: it never reaches a log.
impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("msats", &self.msats)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// A requester's side of paying DVMs (docs/protocol.md §17.4). Implemented by the payments
/// crate with a Cashu wallet and the payer's key.
pub trait Payer: Send + Sync + 'static {
    /// A token of `sats` that only `dvm`'s key can redeem, refundable to the payer after
    /// `locktime` (unix seconds). The engine puts it, NIP-44 encrypted, in the request to that
    /// DVM.
    fn pay<'a>(
        &'a self,
        dvm: &'a nostr_sdk::prelude::PublicKey,
        sats: u64,
        locktime: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

    /// `token` for `dvm` as a `cashu-sealed` param, for a clear request to several DVMs (a
    /// quorum job): NIP-44 encrypted from the payer's key to `dvm`'s.
    fn seal(
        &self,
        dvm: &nostr_sdk::prelude::PublicKey,
        token: &str,
    ) -> Result<quorum_proto::nip90::JobParam, String>;

    /// Takes change `dvm` sealed to the payer (a result's or feedback's `change` tag) into the
    /// wallet. Returns the sats received.
    fn receive_change<'a>(
        &'a self,
        dvm: &'a nostr_sdk::prelude::PublicKey,
        sealed: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;
}

impl std::fmt::Debug for dyn Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Payer")
    }
}
