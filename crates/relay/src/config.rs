//! Relay configuration: limits, the operator's NIP-11 identity and the NIP-42 mode.
//!
//! Everything here is plain data with defaults sized for CI pipelines (large events such as
//! build logs and attestations, bursts of many events from few clients), not for chat, and for
//! a relay that faces the open internet: no client can hold connections, memory or the store
//! without bound.

use std::collections::HashSet;
use std::time::Duration;

use nostr::PublicKey;

/// Everything a [`crate::Relay`] needs to know besides where its events are stored.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Resource limits; see [`Limits`].
    pub limits: Limits,
    /// Operator-provided NIP-11 fields.
    pub info: RelayInfo,
    /// NIP-42 authentication mode.
    pub auth: AuthMode,
    /// The URL clients use to reach this relay (`wss://relay.example.org`). NIP-42 `relay` tags
    /// are checked against its host. When `None`, the host of the WebSocket request's `Host`
    /// header is used; that header is chosen by the client, so a relay that authenticates
    /// clients should set this (otherwise a relay in the middle can forward a user's `AUTH`).
    pub public_url: Option<url::Url>,
    /// When set, only connections authenticated (NIP-42) as one of these keys may publish;
    /// others get `OK false "restricted: ..."`. The check is on the authenticated key, not on
    /// the event's author, so an allowed client may still publish events signed by other keys
    /// (a quorum key, a gift wrap). Setting it makes authentication required for writing
    /// whatever [`RelayConfig::auth`] says.
    pub allowed_writers: Option<HashSet<PublicKey>>,
}

impl RelayConfig {
    /// Whether publishing needs a NIP-42 authenticated connection.
    pub(crate) fn auth_required_for_write(&self) -> bool {
        self.auth.required_for_write() || self.allowed_writers.is_some()
    }
}

/// Per-relay and per-connection limits. Every limit on what a client asks for is enforced with
/// an explicit answer (`NOTICE`, `OK false`, `CLOSED`, HTTP 503); only the connection limits
/// (idle, read and handshake timeouts) end a connection, with a WebSocket close frame where
/// there is a WebSocket.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest client message (one WebSocket text message), in bytes.
    pub max_message_bytes: usize,
    /// Largest event, measured as its canonical JSON serialisation, in bytes. Also published
    /// as NIP-11 `max_content_length`.
    pub max_event_bytes: usize,
    /// Most tags one event may carry.
    pub max_event_tags: usize,
    /// Most open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most filters in one `REQ` or `COUNT`.
    pub max_filters: usize,
    /// Largest `limit` a filter may ask for; larger values are clamped, not refused.
    pub max_filter_limit: usize,
    /// `limit` applied to a filter that has none (filters with `ids` get `ids.len()`).
    pub default_filter_limit: usize,
    /// Longest subscription id, in characters.
    pub max_subid_length: usize,
    /// Events one connection may publish per minute (token bucket, bursts up to this many);
    /// 0 = unlimited.
    pub events_per_minute: u32,
    /// Most simultaneous WebSocket connections; 0 = unlimited. Further upgrades get HTTP 503.
    pub max_connections: usize,
    /// Most simultaneous TCP connections (WebSocket sessions and handshakes under way) from one
    /// address (IPv4) or one /64 network (IPv6); 0 = unlimited. Further connections get HTTP
    /// 503 while the address has fewer than twice as many, and are closed at once beyond that.
    /// Enforced by [`crate::Relay::serve`]. Behind a reverse proxy every client shares the
    /// proxy's address: raise it or set it to 0 there.
    pub max_connections_per_ip: usize,
    /// Time a new TCP connection has to send a complete HTTP request (a WebSocket upgrade, a
    /// NIP-11 request); then it is closed. Zero = no limit. Enforced by [`crate::Relay::serve`].
    pub handshake_timeout: Duration,
    /// Longest wait for the next WebSocket frame from a client. The relay pings a client it has
    /// not heard from for half of this, so any live client answers in time; a dead peer, or
    /// one that sends a frame a byte at a time, is closed (code 1008). Zero = no limit.
    pub read_timeout: Duration,
    /// A connection with no subscription and no unanswered `EVENT` that sends no Nostr message
    /// (pings do not count) for this long is closed (code 1000). Zero = never.
    pub idle_timeout: Duration,
    /// Most bytes of stored events (as sent: whole `EVENT` messages) one `REQ` returns. Stored
    /// events are streamed, so this bounds the work one `REQ` causes, not the relay's memory; a
    /// `REQ` that reaches it gets `CLOSED "error: ..."` naming the `until` to continue from,
    /// instead of `EOSE`. 0 = unlimited.
    pub max_req_bytes: usize,
    /// Most store reads (`REQ` planning, batches of stored events, `COUNT`) running at once,
    /// relay-wide; more wait their turn. Bounds the memory heavy concurrent queries take.
    /// 0 = unlimited.
    pub max_concurrent_queries: usize,
    /// How far in the future an event's `created_at` may be, in seconds (clock skew between
    /// build machines, not time travel).
    pub max_future_secs: u64,
    /// Events buffered for live delivery per connection before a slow subscriber is cut off
    /// (its subscriptions get `CLOSED "error: subscriber too slow, re-subscribe"`).
    pub live_buffer: usize,
    /// A connection whose socket does not accept a message within this time is dropped, so
    /// a client that stopped reading cannot hold resources forever.
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1024 * 1024,
            max_event_bytes: 256 * 1024,
            max_event_tags: 2_000,
            max_subscriptions: 64,
            max_filters: 20,
            max_filter_limit: 5_000,
            default_filter_limit: 500,
            max_subid_length: 64,
            events_per_minute: 12_000,
            max_connections: 1_024,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            max_req_bytes: 32 * 1024 * 1024,
            max_concurrent_queries: 8,
            max_future_secs: 900,
            live_buffer: 16_384,
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Operator-provided fields of the NIP-11 relay information document. Limits, supported NIPs,
/// software and version are added by the relay itself.
#[derive(Debug, Clone)]
pub struct RelayInfo {
    /// Relay name.
    pub name: String,
    /// Free-text description.
    pub description: String,
    /// Administrator's public key (hex).
    pub pubkey: Option<String>,
    /// Administrator contact URI (`mailto:`, `https://`, ...).
    pub contact: Option<String>,
    /// Icon URL.
    pub icon: Option<String>,
}

impl Default for RelayInfo {
    fn default() -> Self {
        RelayInfo {
            name: "Quorum CI relay".to_owned(),
            description: "Nostr relay embedded in Quorum CI".to_owned(),
            pubkey: None,
            contact: None,
            icon: None,
        }
    }
}

/// NIP-42 authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No `AUTH` challenge is sent; `AUTH` messages are still answered (and verified).
    #[default]
    Off,
    /// An `AUTH` challenge is sent on connect; nothing requires it. Write policies can use the
    /// authenticated keys (see [`crate::ConnectionInfo`]).
    Available,
    /// Publishing (`EVENT`) requires authentication; reading does not.
    RequiredForWrite,
    /// Everything requires authentication: `REQ`, `COUNT` and `EVENT` (reading is the stricter
    /// mode, so it implies writing).
    RequiredForRead,
}

impl AuthMode {
    /// Whether an `AUTH` challenge is sent as soon as a client connects.
    pub(crate) fn challenges_on_connect(self) -> bool {
        !matches!(self, AuthMode::Off)
    }

    pub(crate) fn required_for_write(self) -> bool {
        matches!(self, AuthMode::RequiredForWrite | AuthMode::RequiredForRead)
    }

    pub(crate) fn required_for_read(self) -> bool {
        matches!(self, AuthMode::RequiredForRead)
    }
}
