//! One WebSocket connection: reading client messages, answering them, and delivering live
//! events to its subscriptions.
//!
//! Rules this module keeps:
//! - Bad input never closes the connection and never reaches the store. Undecodable messages
//!   get `NOTICE`, refused events `OK false "<prefix>: ..."`, refused subscriptions
//!   `CLOSED "<prefix>: ..."`.
//! - `OK true` is sent only after the store's `save_event` returned (for LMDB: after the write
//!   transaction committed), so an acknowledged event survives a crash. Live subscribers get
//!   the event after that, too.
//! - Saves of one connection are pipelined (up to [`MAX_IN_FLIGHT`]) so that a single client
//!   does not pay one disk sync per event: nostr-lmdb batches whatever is queued into one
//!   transaction. `OK`s may therefore come in a different order than the `EVENT`s; NIP-01
//!   pairs them by event id. A NIP-09 deletion waits for the connection's earlier saves, so it
//!   always applies after the events it may target.
//! - Live delivery comes from one `broadcast` receiver per connection (held while it has
//!   subscriptions). A connection that falls more than `live_buffer` events behind would
//!   silently miss events, so instead all its subscriptions are ended with
//!   `CLOSED "error: subscriber too slow, re-subscribe"`: the client learns it must
//!   re-subscribe (with `since`) and loses nothing silently.
//! - A socket that does not accept a message within `send_timeout` ends the session, so a
//!   client that stopped reading holds nothing; other connections never wait on it.
//! - A client that sends no frame for `read_timeout` (it is pinged halfway) is closed (1008),
//!   and so is one with no subscription and nothing in flight that sends no Nostr message for
//!   `idle_timeout` (1000): a connection slot is held only by a client that uses it.
//! - A `REQ`'s stored events are streamed batch by batch from the store, never gathered whole,
//!   and stop at `max_req_bytes` with a `CLOSED` that says where to continue.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{FutureExt, SinkExt, StreamExt};
use nostr::filter::MatchEventOptions;
use nostr::message::MachineReadablePrefix;
use nostr::nips::nip19::ToBech32;
use nostr::{Event, EventId, Filter, JsonUtil, Kind, RelayMessage, SubscriptionId, Timestamp};
use nostr_database::{DatabaseError, DatabaseEventStatus, NostrDatabase, RejectedReason};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Inner;
use crate::limits::RateLimiter;
use crate::policy::{BoxFuture, ConnectionInfo};

/// Most saves one connection may have waiting for the store; beyond it the connection's
/// messages are not read until a save completes (back-pressure on that client only).
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// NIP-42: how far an AUTH event's `created_at` may be from now.
const AUTH_MAX_SKEW_SECS: u64 = 600;

/// How long a closing session waits for its in-flight saves, so accepted events still reach
/// live subscribers after their publisher left.
const DRAIN_ON_CLOSE: Duration = Duration::from_secs(10);

/// How long a session may spend answering its in-flight saves at shutdown.
const DRAIN_ON_SHUTDOWN: Duration = Duration::from_secs(2);

/// How long the close frame may take at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest fragment of client input echoed back in a `NOTICE`.
const ECHO_MAX: usize = 64;

/// Why a session ends (only for logs).
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the socket error is read through Debug, in the close log"
)]
enum End {
    ClientClosed,
    Shutdown,
    SendTimeout,
    /// No frame from the client for `read_timeout`, though it was pinged.
    ReadTimeout,
    /// No subscription, nothing in flight and no Nostr message for `idle_timeout`.
    Idle,
    Socket(axum::Error),
}

type Step = Result<(), End>;

/// The outcome of one pipelined save.
struct Saved {
    event: Event,
    result: Result<Stored, DatabaseError>,
}

enum Stored {
    New,
    Duplicate,
    Deleted,
    Rejected(RejectedReason),
}

type Pending = FuturesUnordered<BoxFuture<'static, Saved>>;

/// The socket's write half, with a deadline on every write. A write blocked on a client that
/// stopped reading also gives up when the relay shuts down.
struct Out {
    sink: SplitSink<WebSocket, Message>,
    timeout: Duration,
    cancel: CancellationToken,
}

impl Out {
    async fn send(&mut self, text: String) -> Step {
        self.with_deadline(|sink| sink.send(Message::Text(text.into())))
            .await
    }

    /// Queues without flushing (for bursts of stored events), flushing as buffers fill.
    async fn feed(&mut self, text: String) -> Step {
        self.with_deadline(|sink| sink.feed(Message::Text(text.into())))
            .await
    }

    async fn flush(&mut self) -> Step {
        self.with_deadline(|sink| sink.flush()).await
    }

    async fn ping(&mut self) -> Step {
        self.with_deadline(|sink| sink.send(Message::Ping(Default::default())))
            .await
    }

    async fn msg(&mut self, msg: RelayMessage<'_>) -> Step {
        self.send(msg.as_json()).await
    }

    async fn notice(&mut self, text: impl Into<String>) -> Step {
        self.msg(RelayMessage::Notice(Cow::Owned(text.into())))
            .await
    }

    async fn ok(&mut self, id: EventId, accepted: bool, message: impl Into<String>) -> Step {
        self.msg(RelayMessage::Ok {
            event_id: id,
            status: accepted,
            message: Cow::Owned(message.into()),
        })
        .await
    }

    async fn closed(&mut self, sub: &SubscriptionId, message: impl Into<String>) -> Step {
        self.msg(RelayMessage::Closed {
            subscription_id: Cow::Borrowed(sub),
            message: Cow::Owned(message.into()),
        })
        .await
    }

    /// Best effort: a peer that does not take the close frame within a second is dropped.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(CLOSE_GRACE, self.sink.send(frame)).await;
    }

    async fn with_deadline<'a, F, Fut>(&'a mut self, f: F) -> Step
    where
        F: FnOnce(&'a mut SplitSink<WebSocket, Message>) -> Fut,
        Fut: std::future::Future<Output = Result<(), axum::Error>> + 'a,
    {
        let cancel = self.cancel.clone();
        tokio::select! {
            written = tokio::time::timeout(self.timeout, f(&mut self.sink)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(End::Socket(e)),
                Err(_) => Err(End::SendTimeout),
            },
            _ = cancel.cancelled() => Err(End::Shutdown),
        }
    }
}

/// When the client was last heard from, for the read and idle timeouts.
struct Clock {
    /// Last frame from the client, or the end of the relay's own work on its behalf (time
    /// spent answering a message, or not reading because of back-pressure, is not silence).
    heard: Instant,
    /// Last Nostr message (text or binary frame; pings and pongs do not count).
    spoke: Instant,
    /// Whether a ping went out since `heard`.
    pinged: bool,
    read_timeout: Duration,
    idle_timeout: Duration,
}

/// What the clock says to do now.
enum Due {
    Nothing,
    Ping,
    ReadTimeout,
    Idle,
}

impl Clock {
    fn new(limits: &crate::Limits) -> Clock {
        let now = Instant::now();
        Clock {
            heard: now,
            spoke: now,
            pinged: false,
            read_timeout: limits.read_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    fn heard(&mut self) {
        self.heard = Instant::now();
        self.pinged = false;
    }

    fn spoke(&mut self) {
        self.heard();
        self.spoke = self.heard;
    }

    /// The next instant something is due: a ping, the read timeout (only while the session
    /// reads), the idle timeout (only while `idle`).
    fn next(&self, reading: bool, idle: bool) -> Option<Instant> {
        let read = (reading && !self.read_timeout.is_zero()).then(|| {
            if self.pinged {
                self.heard + self.read_timeout
            } else {
                self.heard + self.read_timeout / 2
            }
        });
        let idle = (idle && !self.idle_timeout.is_zero()).then(|| self.spoke + self.idle_timeout);
        match (read, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn due(&self, reading: bool, idle: bool) -> Due {
        let now = Instant::now();
        if idle && !self.idle_timeout.is_zero() && now >= self.spoke + self.idle_timeout {
            return Due::Idle;
        }
        if reading && !self.read_timeout.is_zero() {
            if self.pinged && now >= self.heard + self.read_timeout {
                return Due::ReadTimeout;
            }
            if !self.pinged && now >= self.heard + self.read_timeout / 2 {
                return Due::Ping;
            }
        }
        Due::Nothing
    }
}

/// Per-connection protocol state.
struct Session {
    inner: Arc<Inner>,
    conn: ConnectionInfo,
    /// Host the client reached us at, for the NIP-42 `relay` tag check.
    expected_host: Option<String>,
    /// NIP-42 challenge, one per connection.
    challenge: String,
    subs: HashMap<SubscriptionId, Vec<Filter>>,
    /// Held only while `subs` is non-empty, so idle connections cost the live feed nothing.
    live: Option<broadcast::Receiver<Arc<LiveEvent>>>,
    rate: RateLimiter,
}

/// An accepted event on its way to live subscriptions. Its JSON is serialised once, by the
/// first subscriber that needs it, however many subscriptions match.
#[derive(Debug)]
pub(crate) struct LiveEvent {
    pub(crate) event: Event,
    json: OnceLock<String>,
}

impl LiveEvent {
    fn new(event: Event) -> Self {
        LiveEvent {
            event,
            json: OnceLock::new(),
        }
    }

    fn json(&self) -> &str {
        self.json.get_or_init(|| self.event.as_json())
    }
}

/// `["EVENT", <sub>, <event>]` from an already serialised event.
fn event_message(sub: &SubscriptionId, event_json: &str) -> String {
    let sub = serde_json::to_string(sub.as_str()).unwrap_or_else(|_| "\"\"".to_owned());
    format!("[\"EVENT\",{sub},{event_json}]")
}

/// Runs one connection to completion.
pub(crate) async fn run(
    inner: Arc<Inner>,
    socket: WebSocket,
    conn: ConnectionInfo,
    host: Option<String>,
) {
    let (sink, mut stream) = socket.split();
    let mut out = Out {
        sink,
        timeout: inner.config.limits.send_timeout,
        cancel: inner.shutdown.clone(),
    };
    let expected_host = inner
        .config
        .public_url
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .or(host);
    let mut session = Session {
        rate: RateLimiter::new(inner.config.limits.events_per_minute),
        challenge: SubscriptionId::generate().to_string(),
        inner,
        conn,
        expected_host,
        subs: HashMap::new(),
        live: None,
    };
    let mut pending: Pending = FuturesUnordered::new();
    let id = session.conn.id;
    tracing::debug!(conn = id, remote = ?session.conn.remote, "session opened");

    let cancel = session.inner.shutdown.clone();
    let mut clock = Clock::new(&session.inner.config.limits);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let end: End = 'session: {
        if session.inner.config.auth.challenges_on_connect()
            && let Err(end) = session.send_challenge(&mut out).await
        {
            break 'session end;
        }
        loop {
            let reading = pending.len() < MAX_IN_FLIGHT;
            let idle = session.subs.is_empty() && pending.is_empty();
            let due = clock.next(reading, idle);
            if let Some(at) = due
                && timer.deadline() != at
            {
                timer.as_mut().reset(at);
            }
            // Unbiased: a client flooding messages must not starve its own live delivery, nor
            // a busy live feed the client's messages.
            let step = tokio::select! {
                _ = cancel.cancelled() => Err(End::Shutdown),
                Some(saved) = pending.next(), if !pending.is_empty() => {
                    let step = session.finish_save(saved, &mut out).await;
                    if !reading {
                        // The relay was not reading: that silence was its own.
                        clock.heard();
                    }
                    step
                }
                msg = stream.next(), if reading => {
                    session.on_frame(msg, &mut out, &mut pending, &mut clock).await
                }
                received = recv_live(&mut session.live), if session.live.is_some() => {
                    let had_subs = !session.subs.is_empty();
                    let step = session.on_live(received, &mut out).await;
                    if had_subs && session.subs.is_empty() {
                        // The relay ended the subscriptions (too slow): idle counts from now.
                        clock.spoke();
                    }
                    step
                }
                () = &mut timer, if due.is_some() => match clock.due(reading, idle) {
                    Due::Nothing => Ok(()),
                    Due::Ping => {
                        clock.pinged = true;
                        out.ping().await
                    }
                    // A frame may have arrived while the relay was busy writing: it counts.
                    Due::ReadTimeout => match stream.next().now_or_never() {
                        Some(msg) => session.on_frame(msg, &mut out, &mut pending, &mut clock).await,
                        None => Err(End::ReadTimeout),
                    },
                    Due::Idle => Err(End::Idle),
                },
            };
            if let Err(end) = step {
                break 'session end;
            }
        }
    };

    match end {
        End::Shutdown => {
            // Answer the saves under way, so their publishers learn they are stored, then say
            // goodbye. Writes now have a short deadline and no longer watch the shutdown.
            out.cancel = CancellationToken::new();
            out.timeout = CLOSE_GRACE;
            let answer = async {
                while let Some(saved) = pending.next().await {
                    if session.finish_save(saved, &mut out).await.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_ON_SHUTDOWN, answer).await;
            out.close(1001, "relay shutting down").await;
        }
        // Sends tungstenite's queued reply to the client's close frame.
        End::ClientClosed => {
            let _ = out.flush().await;
        }
        End::ReadTimeout => {
            out.close(
                1008,
                "read timeout: no frame from the client, not even a pong",
            )
            .await;
        }
        End::Idle => {
            out.close(1000, "idle: no subscription and no message")
                .await;
        }
        End::SendTimeout | End::Socket(_) => {}
    }
    // Accepted events whose save is under way must still reach live subscribers.
    let drain = async {
        while let Some(saved) = pending.next().await {
            if let Ok(Stored::New) = saved.result {
                session.inner.store.expiry.track(&saved.event);
                session.publish(saved.event);
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_ON_CLOSE, drain).await;
    tracing::debug!(conn = id, reason = ?end, "session closed");
}

async fn recv_live(
    live: &mut Option<broadcast::Receiver<Arc<LiveEvent>>>,
) -> Result<Arc<LiveEvent>, RecvError> {
    match live {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `id` string of a (possibly malformed) event, to address an `OK` to it.
fn raw_event_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(raw.get()).ok().map(|e| e.id)
}

/// Shortens client input for echoing in a message.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(ECHO_MAX).collect();
        format!("{head}...")
    }
}

fn prefixed(prefix: MachineReadablePrefix, text: impl std::fmt::Display) -> String {
    format!("{prefix}: {text}")
}

impl Session {
    fn limits(&self) -> &crate::Limits {
        &self.inner.config.limits
    }

    async fn send_challenge(&self, out: &mut Out) -> Step {
        out.msg(RelayMessage::Auth {
            challenge: Cow::Borrowed(&self.challenge),
        })
        .await
    }

    /// One read from the socket: a message to answer, or the end of the connection.
    async fn on_frame(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
        out: &mut Out,
        pending: &mut Pending,
        clock: &mut Clock,
    ) -> Step {
        match msg {
            None => Err(End::ClientClosed),
            Some(Err(e)) => Err(End::Socket(e)),
            Some(Ok(msg)) => {
                let nostr = matches!(msg, Message::Text(_) | Message::Binary(_));
                let step = self.on_message(msg, out, pending).await;
                // After the answer: time spent answering is not the client's silence.
                if nostr {
                    clock.spoke();
                } else {
                    clock.heard();
                }
                step
            }
        }
    }

    async fn on_message(&mut self, msg: Message, out: &mut Out, pending: &mut Pending) -> Step {
        match msg {
            Message::Text(text) => self.on_text(text.as_str(), out, pending).await,
            Message::Binary(bytes) => {
                out.notice(format!(
                    "invalid: binary frames are not supported ({} bytes ignored); send JSON as text frames",
                    bytes.len()
                ))
                .await
            }
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(End::ClientClosed),
        }
    }

    async fn on_text(&mut self, text: &str, out: &mut Out, pending: &mut Pending) -> Step {
        let max = self.limits().max_message_bytes;
        if text.len() > max {
            let message = format!("invalid: message is {} bytes, limit is {max}", text.len());
            // An oversized EVENT still deserves an OK, or its publisher waits for a timeout.
            if text.trim_start().starts_with("[\"EVENT\"")
                && let Some(id) = serde_json::from_str::<Vec<&RawValue>>(text)
                    .ok()
                    .and_then(|items| raw_event_id(items.get(1)?))
            {
                self.ok_raw(out, Some(id), false, message.clone()).await?;
            }
            return out.notice(message).await;
        }
        // Split the envelope without building a JSON tree: each argument stays raw text and is
        // parsed straight into its rust-nostr type (and an event's size is its text's length).
        let items: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(items) => items,
            Err(e) => {
                let notice = if serde_json::from_str::<IgnoredAny>(text).is_ok() {
                    "invalid: a message must be a JSON array such as [\"REQ\", ...]".to_owned()
                } else {
                    format!("invalid: malformed JSON: {e}")
                };
                return out.notice(notice).await;
            }
        };
        let mut items = items.into_iter();
        let Some(kind) = items
            .next()
            .and_then(|k| serde_json::from_str::<String>(k.get()).ok())
        else {
            return out
                .notice("invalid: a message must start with its type as a string")
                .await;
        };
        let args: Vec<&RawValue> = items.collect();
        match kind.as_str() {
            "EVENT" => self.on_event(args, out, pending).await,
            "REQ" => self.on_req(args, out).await,
            "COUNT" => self.on_count(args, out).await,
            "CLOSE" => self.on_close(args, out).await,
            "AUTH" => self.on_auth(args, out).await,
            other => {
                out.notice(format!(
                    "unsupported: unknown message type \"{}\"",
                    echo(other)
                ))
                .await
            }
        }
    }

    /// `OK` for an event that may not even have a valid id: echoes the client's id string.
    async fn ok_raw(&self, out: &mut Out, id: Option<String>, accepted: bool, msg: String) -> Step {
        match id {
            Some(id) => {
                out.send(serde_json::json!(["OK", id, accepted, msg]).to_string())
                    .await
            }
            None => out.notice(msg).await,
        }
    }

    // ---- EVENT ---------------------------------------------------------------------------

    async fn on_event(
        &mut self,
        args: Vec<&RawValue>,
        out: &mut Out,
        pending: &mut Pending,
    ) -> Step {
        // The client's id string is only looked for on the error paths (it costs a parse).
        let [raw] = args.as_slice() else {
            let raw_id = args.first().and_then(|raw| raw_event_id(raw));
            let msg = format!(
                "invalid: EVENT takes exactly one event, got {} arguments",
                args.len()
            );
            return self.ok_raw(out, raw_id, false, msg).await;
        };
        let event: Event = match serde_json::from_str(raw.get()) {
            Ok(event) => event,
            Err(e) => {
                let msg = format!("invalid: malformed event: {e}");
                return self.ok_raw(out, raw_event_id(raw), false, msg).await;
            }
        };
        let size = raw.get().len();
        let max = self.limits().max_event_bytes;
        if size > max {
            let msg = prefixed(
                MachineReadablePrefix::Invalid,
                format!("event is {size} bytes, limit is {max}"),
            );
            return out.ok(event.id, false, msg).await;
        }
        match self.check_event(&event, out).await? {
            Some(reason) => out.ok(event.id, false, reason).await,
            None => self.store_event(event, out, pending).await,
        }
    }

    /// Every check before storage; `Some(message)` refuses the event.
    async fn check_event(&mut self, event: &Event, out: &mut Out) -> Result<Option<String>, End> {
        use MachineReadablePrefix::{AuthRequired, Invalid, RateLimited, Restricted};
        let limits = self.limits().clone();
        if !self.rate.allow() {
            return Ok(Some(prefixed(
                RateLimited,
                format!(
                    "more than {} events per minute from this connection",
                    self.rate.per_minute()
                ),
            )));
        }
        if event.tags.len() > limits.max_event_tags {
            return Ok(Some(prefixed(
                Invalid,
                format!(
                    "event has {} tags, limit is {}",
                    event.tags.len(),
                    limits.max_event_tags
                ),
            )));
        }
        if !event.verify_id() {
            return Ok(Some(prefixed(
                Invalid,
                "event id does not match the event's content",
            )));
        }
        if !event.verify_signature() {
            return Ok(Some(prefixed(Invalid, "bad signature")));
        }
        let now = Timestamp::now();
        let ahead = event.created_at.as_secs().saturating_sub(now.as_secs());
        if ahead > limits.max_future_secs {
            return Ok(Some(prefixed(
                Invalid,
                format!(
                    "created_at is {ahead} s in the future, limit is {} s",
                    limits.max_future_secs
                ),
            )));
        }
        if event.is_expired_at(&now) {
            return Ok(Some(prefixed(Invalid, "event has expired")));
        }
        if event.kind == Kind::Authentication {
            return Ok(Some(prefixed(
                Invalid,
                "kind 22242 events are sent with AUTH, not EVENT",
            )));
        }
        if self.inner.config.auth_required_for_write() && self.conn.authenticated.is_empty() {
            self.send_challenge(out).await?;
            return Ok(Some(prefixed(
                AuthRequired,
                "authenticate (NIP-42) to publish to this relay",
            )));
        }
        if let Some(allowed) = &self.inner.config.allowed_writers
            && !self.conn.authenticated.iter().any(|k| allowed.contains(k))
        {
            let keys: Vec<String> = self
                .conn
                .authenticated
                .iter()
                .map(|k| k.to_bech32().unwrap_or_else(|_| k.to_hex()))
                .collect();
            return Ok(Some(prefixed(
                Restricted,
                format!(
                    "{} may not publish to this relay (it admits listed writers only)",
                    keys.join(", ")
                ),
            )));
        }
        // NIP-70: a protected event may only be published by its authenticated author.
        if event.is_protected() && !self.conn.is_authenticated_as(&event.pubkey) {
            if self.conn.authenticated.is_empty() {
                self.send_challenge(out).await?;
                return Ok(Some(prefixed(
                    AuthRequired,
                    "this event is protected (NIP-70): authenticate as its author",
                )));
            }
            return Ok(Some(prefixed(
                Restricted,
                "this event is protected (NIP-70): only its author may publish it",
            )));
        }
        if event.kind == Kind::EventDeletion
            && event
                .tags
                .coordinates()
                .any(|c| c.public_key != event.pubkey)
        {
            // nostr-lmdb would refuse it too, but only after applying the coordinates listed
            // before the foreign one: refuse it whole, before the store sees it.
            return Ok(Some(prefixed(
                Invalid,
                "a deletion request may only target the author's own events",
            )));
        }
        for policy in self.inner.write_policies() {
            if let Some(message) = policy.admit(event, &self.conn).await.message() {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    async fn store_event(&mut self, event: Event, out: &mut Out, pending: &mut Pending) -> Step {
        if event.kind.is_ephemeral() {
            // Forwarded, never stored (NIP-01).
            let id = event.id;
            self.publish(event);
            return out.ok(id, true, "").await;
        }
        if event.kind == Kind::EventDeletion {
            // The deletion must apply after the events this connection sent before it.
            while let Some(saved) = pending.next().await {
                self.finish_save(saved, out).await?;
            }
        }
        let db = Arc::clone(self.inner.store.db());
        pending.push(Box::pin(persist(db, event)));
        Ok(())
    }

    async fn finish_save(&mut self, saved: Saved, out: &mut Out) -> Step {
        use MachineReadablePrefix::{Blocked, Duplicate, Error, Invalid};
        let id = saved.event.id;
        match saved.result {
            Ok(Stored::New) => {
                // Stored: others get it even if its publisher is gone by now.
                let answered = out.ok(id, true, "").await;
                self.inner.store.expiry.track(&saved.event);
                self.publish(saved.event);
                answered
            }
            Ok(Stored::Duplicate) => {
                out.ok(id, true, prefixed(Duplicate, "already have this event"))
                    .await
            }
            Ok(Stored::Deleted) => {
                out.ok(
                    id,
                    false,
                    prefixed(Blocked, "this event was deleted by its author (NIP-09)"),
                )
                .await
            }
            Ok(Stored::Rejected(reason)) => {
                let message = match reason {
                    RejectedReason::Replaced => prefixed(
                        Blocked,
                        "a newer version of this replaceable event is already stored",
                    ),
                    RejectedReason::InvalidDelete => prefixed(
                        Invalid,
                        "a deletion request may only target the author's own events",
                    ),
                    RejectedReason::Expired => prefixed(Invalid, "event has expired"),
                    other => prefixed(Error, format!("the store refused it ({other:?})")),
                };
                out.ok(id, false, message).await
            }
            Err(e) => {
                tracing::warn!(conn = self.conn.id, event = %id, error = %e, "cannot store event");
                out.ok(id, false, prefixed(Error, "could not store the event"))
                    .await
            }
        }
    }

    /// Hands an accepted event to every live subscription (this connection's included).
    fn publish(&self, event: Event) {
        // An error only means nobody is subscribed right now.
        let _ = self.inner.live.send(Arc::new(LiveEvent::new(event)));
    }

    // ---- REQ / COUNT / CLOSE ---------------------------------------------------------------

    /// Validates the subscription id and filters shared by REQ and COUNT. `Ok(None)` means the
    /// client was already answered. With `replaces`, an existing subscription of that id ends
    /// (a REQ reusing an id replaces it, whether or not the new one is accepted).
    async fn parse_sub(
        &mut self,
        verb: &str,
        args: Vec<&RawValue>,
        out: &mut Out,
        replaces: bool,
    ) -> Result<Option<(SubscriptionId, Vec<Filter>)>, End> {
        use MachineReadablePrefix::{AuthRequired, Invalid};
        let mut args = args.into_iter();
        let sub = match args
            .next()
            .map(|raw| serde_json::from_str::<String>(raw.get()))
        {
            Some(Ok(s)) => s,
            Some(Err(_)) => {
                out.notice(format!("invalid: {verb} subscription id must be a string"))
                    .await?;
                return Ok(None);
            }
            None => {
                out.notice(format!(
                    "invalid: {verb} needs a subscription id and at least one filter"
                ))
                .await?;
                return Ok(None);
            }
        };
        let max_id = self.limits().max_subid_length;
        let sub_len = sub.chars().count();
        let sub = SubscriptionId::new(sub);
        if replaces {
            self.subs.remove(&sub);
            self.drop_live_if_idle();
        }
        if sub_len == 0 || sub_len > max_id {
            let msg = format!(
                "invalid: subscription id is {sub_len} characters, it must have 1 to {max_id}"
            );
            out.closed(&sub, msg).await?;
            return Ok(None);
        }
        let filters: Vec<&RawValue> = args.collect();
        let max_filters = self.limits().max_filters;
        if filters.is_empty() || filters.len() > max_filters {
            let msg = format!(
                "invalid: {verb} has {} filters, it must have 1 to {max_filters}",
                filters.len()
            );
            out.closed(&sub, msg).await?;
            return Ok(None);
        }
        if self.inner.config.auth.required_for_read() && self.conn.authenticated.is_empty() {
            self.send_challenge(out).await?;
            out.closed(
                &sub,
                prefixed(
                    AuthRequired,
                    "authenticate (NIP-42) to read from this relay",
                ),
            )
            .await?;
            return Ok(None);
        }
        let mut parsed = Vec::with_capacity(filters.len());
        for (i, raw) in filters.into_iter().enumerate() {
            match serde_json::from_str::<Filter>(raw.get()) {
                Ok(filter) => parsed.push(self.clamp(filter)),
                Err(e) => {
                    out.closed(&sub, prefixed(Invalid, format!("filter {i}: {e}")))
                        .await?;
                    return Ok(None);
                }
            }
        }
        for policy in self.inner.query_policies() {
            if let Some(message) = policy.admit(&parsed, &self.conn).await.message() {
                out.closed(&sub, message).await?;
                return Ok(None);
            }
        }
        Ok(Some((sub, parsed)))
    }

    /// Applies `max_filter_limit` and `default_filter_limit`.
    fn clamp(&self, mut filter: Filter) -> Filter {
        let limits = self.limits();
        let limit = match (filter.limit, &filter.ids) {
            (Some(limit), _) => limit,
            (None, Some(ids)) => ids.len(),
            (None, None) => limits.default_filter_limit,
        };
        filter.limit = Some(limit.min(limits.max_filter_limit));
        filter
    }

    async fn on_req(&mut self, args: Vec<&RawValue>, out: &mut Out) -> Step {
        use MachineReadablePrefix::{Error, RateLimited};
        let Some((sub, filters)) = self.parse_sub("REQ", args, out, true).await? else {
            return Ok(());
        };
        let max_subs = self.limits().max_subscriptions;
        if self.subs.len() >= max_subs {
            let msg = prefixed(
                RateLimited,
                format!("at most {max_subs} subscriptions per connection; CLOSE one first"),
            );
            return out.closed(&sub, msg).await;
        }
        // Subscribe to the live feed before querying, so nothing saved in between is missed
        // (an event may then arrive twice: stored and live; clients de-duplicate by id).
        if self.live.is_none() {
            self.live = Some(self.inner.live.subscribe());
        }
        let wanted: Vec<Filter> = filters
            .iter()
            .filter(|f| f.limit != Some(0))
            .cloned()
            .collect();
        let cap = self.limits().max_req_bytes;
        let (mut sent, mut bytes) = (0usize, 0usize);
        // The created_at of the first stored event that did not fit under the cap.
        let mut cut_at: Option<Timestamp> = None;
        if !wanted.is_empty() {
            let inner = Arc::clone(&self.inner);
            let mut stored = inner.store.stored_events(wanted);
            'stream: loop {
                let batch = match stored.next_batch().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(conn = self.conn.id, error = %e, "query failed");
                        self.drop_live_if_idle();
                        return out
                            .closed(&sub, prefixed(Error, "could not query the store"))
                            .await;
                    }
                };
                for event in batch {
                    let msg = event_message(&sub, &event.json);
                    if cap > 0 && bytes + msg.len() > cap {
                        cut_at = Some(event.created_at);
                        break 'stream;
                    }
                    bytes += msg.len();
                    sent += 1;
                    out.feed(msg).await?;
                }
                // Each batch reaches the client before the next is read from the store.
                out.flush().await?;
            }
        }
        tracing::debug!(conn = self.conn.id, sub = %sub, stored = sent, bytes, "REQ");
        if let Some(until) = cut_at {
            out.flush().await?;
            self.drop_live_if_idle();
            let msg = prefixed(
                Error,
                format!(
                    "the stored events for this REQ exceed {cap} bytes, the relay's limit per \
                     REQ; {sent} sent, newest first: REQ again with until={} for the older ones",
                    until.as_secs()
                ),
            );
            return out.closed(&sub, msg).await;
        }
        out.feed(RelayMessage::EndOfStoredEvents(Cow::Borrowed(&sub)).as_json())
            .await?;
        out.flush().await?;
        self.subs.insert(sub, filters);
        Ok(())
    }

    async fn on_count(&mut self, args: Vec<&RawValue>, out: &mut Out) -> Step {
        use MachineReadablePrefix::Error;
        let Some((sub, filters)) = self.parse_sub("COUNT", args, out, false).await? else {
            return Ok(());
        };
        // COUNT ignores `limit` (NIP-45): count everything that matches.
        let filters: Vec<Filter> = filters
            .into_iter()
            .map(|mut f| {
                f.limit = None;
                f
            })
            .collect();
        match self.inner.store.count(filters).await {
            Ok(count) => {
                out.msg(RelayMessage::Count {
                    subscription_id: Cow::Owned(sub),
                    count,
                })
                .await
            }
            Err(e) => {
                tracing::warn!(conn = self.conn.id, error = %e, "count failed");
                out.closed(&sub, prefixed(Error, "could not count")).await
            }
        }
    }

    async fn on_close(&mut self, args: Vec<&RawValue>, out: &mut Out) -> Step {
        match args
            .first()
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        {
            Some(sub) => {
                self.subs.remove(&SubscriptionId::new(sub.as_str()));
                self.drop_live_if_idle();
                Ok(())
            }
            _ => {
                out.notice("invalid: CLOSE needs a subscription id string")
                    .await
            }
        }
    }

    fn drop_live_if_idle(&mut self) {
        if self.subs.is_empty() {
            self.live = None;
        }
    }

    // ---- live delivery ---------------------------------------------------------------------

    async fn on_live(
        &mut self,
        received: Result<Arc<LiveEvent>, RecvError>,
        out: &mut Out,
    ) -> Step {
        match received {
            Ok(live) => {
                if live.event.is_expired() {
                    return Ok(());
                }
                let mut sent = false;
                for (sub, filters) in &self.subs {
                    if filters
                        .iter()
                        .any(|f| f.match_event(&live.event, MatchEventOptions::new()))
                    {
                        out.feed(event_message(sub, live.json())).await?;
                        sent = true;
                    }
                }
                if sent {
                    out.flush().await?;
                }
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    conn = self.conn.id,
                    missed,
                    "live subscriber too slow; closing its subscriptions"
                );
                let subs: Vec<SubscriptionId> = self.subs.drain().map(|(id, _)| id).collect();
                self.live = None;
                for sub in subs {
                    out.closed(&sub, "error: subscriber too slow, re-subscribe")
                        .await?;
                }
                Ok(())
            }
            // The relay itself is going away; shutdown handles it.
            Err(RecvError::Closed) => {
                self.live = None;
                Ok(())
            }
        }
    }

    // ---- AUTH ------------------------------------------------------------------------------

    async fn on_auth(&mut self, args: Vec<&RawValue>, out: &mut Out) -> Step {
        let Some(raw) = args.first() else {
            return out
                .notice("invalid: AUTH needs a signed kind-22242 event")
                .await;
        };
        let event: Event = match serde_json::from_str(raw.get()) {
            Ok(event) => event,
            Err(e) => {
                let msg = format!("invalid: malformed AUTH event: {e}");
                return self.ok_raw(out, raw_event_id(raw), false, msg).await;
            }
        };
        match self.check_auth(&event) {
            Ok(()) => {
                tracing::debug!(conn = self.conn.id, pubkey = %event.pubkey, "authenticated");
                if !self.conn.authenticated.contains(&event.pubkey) {
                    self.conn.authenticated.push(event.pubkey);
                }
                out.ok(event.id, true, "").await
            }
            Err(reason) => out.ok(event.id, false, format!("invalid: {reason}")).await,
        }
    }

    fn check_auth(&self, event: &Event) -> Result<(), String> {
        if event.kind != Kind::Authentication {
            return Err(format!("AUTH event must be kind 22242, not {}", event.kind));
        }
        if !event.verify_id() {
            return Err("event id does not match the event's content".into());
        }
        if !event.verify_signature() {
            return Err("bad signature".into());
        }
        let skew = event
            .created_at
            .as_secs()
            .abs_diff(Timestamp::now().as_secs());
        if skew > AUTH_MAX_SKEW_SECS {
            return Err(format!(
                "created_at is {skew} s from now, limit is {AUTH_MAX_SKEW_SECS} s"
            ));
        }
        let tag = |name: &str| {
            event.tags.iter().find_map(|t| match t.as_slice() {
                [n, value, ..] if n == name => Some(value.as_str()),
                _ => None,
            })
        };
        if tag("challenge") != Some(self.challenge.as_str()) {
            return Err("challenge does not match this connection's".into());
        }
        let relay = tag("relay").ok_or("missing relay tag")?;
        let host = url::Url::parse(relay)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .ok_or_else(|| format!("relay tag \"{}\" is not a URL", echo(relay)))?;
        match &self.expected_host {
            Some(expected) if *expected != host => {
                Err(format!("relay tag names {host}, this relay is {expected}"))
            }
            _ => Ok(()),
        }
    }
}

/// Stores one event; runs outside the session loop so saves can be pipelined.
async fn persist(db: Arc<dyn NostrDatabase>, event: Event) -> Saved {
    let result = async {
        // Cheap read first: duplicates and deleted ids never take the writer's lock.
        match db.check_id(&event.id).await? {
            DatabaseEventStatus::Saved => return Ok(Stored::Duplicate),
            DatabaseEventStatus::Deleted => return Ok(Stored::Deleted),
            DatabaseEventStatus::NotExistent => {}
        }
        Ok(match db.save_event(&event).await? {
            nostr_database::SaveEventStatus::Success => Stored::New,
            nostr_database::SaveEventStatus::Rejected(RejectedReason::Duplicate) => {
                Stored::Duplicate
            }
            nostr_database::SaveEventStatus::Rejected(RejectedReason::Deleted) => Stored::Deleted,
            nostr_database::SaveEventStatus::Rejected(reason) => Stored::Rejected(reason),
        })
    }
    .await;
    Saved { event, result }
}
