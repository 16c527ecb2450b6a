//! Relay configuration: limits, the operator's NIP-11 identity and the NIP-42 mode.
//!
//! Everything here is plain data with defaults sized for CI pipelines (large events such as
//! build logs and attestations, bursts of many events from few clients), not for chat.

use std::time::Duration;

/// Everything a [`crate::Relay`] needs to know besides where its events are stored.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Resource limits; see [`Limits`].
    pub limits: Limits,
    /// Operator-provided NIP-11 fields.
    pub info: RelayInfo,
    /// NIP-42 authentication mode.
    pub auth: AuthMode,
    /// The URL clients use to reach this relay (`wss://relay.example.org`), when it is behind a
    /// proxy. NIP-42 `relay` tags are checked against its host. When `None`, the host of the
    /// WebSocket request's `Host` header is used, which is right for direct connections.
    pub public_url: Option<String>,
}

/// Per-relay and per-connection limits. Every limit is enforced with an explicit answer to the
/// client (`NOTICE`, `OK false` or `CLOSED`), never by dropping the connection.
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
