//! Policy seams: where Quorum CI's own rules (which kinds a relay accepts, who may publish
//! them, who may read what) plug into the relay without touching its protocol code.
//!
//! A [`WritePolicy`] runs for every `EVENT` after the protocol checks (size, id, signature,
//! timestamps, NIP-40, NIP-42) and before the event is stored or broadcast. A [`QueryPolicy`]
//! runs for every `REQ` and `COUNT` after the protocol checks and before the store is queried.
//! Policies run in the order they were added; the first rejection wins.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use nostr::message::MachineReadablePrefix;
use nostr::{Event, Filter, PublicKey};

/// A boxed `Send` future, so that policies are object safe (`Arc<dyn WritePolicy>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the relay knows about the connection a message came from.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Process-unique connection number (appears in the relay's debug logs).
    pub id: u64,
    /// The peer's address, when the server was started with connect info (as
    /// [`crate::Relay::serve`] does).
    pub remote: Option<SocketAddr>,
    /// Keys that completed NIP-42 authentication on this connection (several are allowed).
    pub authenticated: Vec<PublicKey>,
}

impl ConnectionInfo {
    /// Whether `key` authenticated on this connection.
    pub fn is_authenticated_as(&self, key: &PublicKey) -> bool {
        self.authenticated.contains(key)
    }
}

/// A policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Let it through (later policies may still reject).
    Accept,
    /// Refuse it. The client sees `"<prefix>: <reason>"` in its `OK false` or `CLOSED`.
    Reject {
        /// NIP-01/NIP-42 machine-readable prefix (`blocked`, `restricted`, `invalid`, ...).
        prefix: MachineReadablePrefix,
        /// Human-readable reason.
        reason: String,
    },
}

impl Admission {
    /// Reject with an explicit prefix.
    pub fn reject(prefix: MachineReadablePrefix, reason: impl Into<String>) -> Self {
        Admission::Reject {
            prefix,
            reason: reason.into(),
        }
    }

    /// Reject with `blocked:` (the relay does not accept this, whoever sends it).
    pub fn blocked(reason: impl Into<String>) -> Self {
        Self::reject(MachineReadablePrefix::Blocked, reason)
    }

    /// Reject with `restricted:` (this authenticated client may not do this).
    pub fn restricted(reason: impl Into<String>) -> Self {
        Self::reject(MachineReadablePrefix::Restricted, reason)
    }

    /// The client-facing message of a rejection, `None` for [`Admission::Accept`].
    pub(crate) fn message(&self) -> Option<String> {
        match self {
            Admission::Accept => None,
            Admission::Reject { prefix, reason } => Some(format!("{prefix}: {reason}")),
        }
    }
}

/// Decides whether an event may be stored and broadcast.
///
/// Implement [`WritePolicy::admit`] by boxing an async block:
/// `Box::pin(async move { Admission::Accept })`.
pub trait WritePolicy: Send + Sync + 'static {
    /// Judge one verified event from `conn`.
    fn admit<'a>(&'a self, event: &'a Event, conn: &'a ConnectionInfo) -> BoxFuture<'a, Admission>;
}

/// Decides whether a `REQ` or `COUNT` may run.
pub trait QueryPolicy: Send + Sync + 'static {
    /// Judge the filters of one `REQ`/`COUNT` from `conn` (limits already clamped).
    fn admit<'a>(
        &'a self,
        filters: &'a [Filter],
        conn: &'a ConnectionInfo,
    ) -> BoxFuture<'a, Admission>;
}
