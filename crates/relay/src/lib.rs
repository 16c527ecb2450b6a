//! Quorum CI's embedded Nostr relay.
//!
//! One axum server answers, on the same port, WebSocket upgrades (the Nostr protocol: NIP-01,
//! NIP-09 deletions, NIP-40 expiration, NIP-42 authentication, NIP-45 `COUNT`) and NIP-11
//! information requests. Events are stored through the `nostr_database::NostrDatabase` trait,
//! by default in LMDB ([`nostr_lmdb::NostrLMDB`]); parsing, serialisation, id and signature
//! checks and filter matching are rust-nostr's. What is ours is the session loop: every
//! malformed or refused client message gets an answer (`NOTICE`, `OK false`, `CLOSED`) and
//! never costs the client its connection, limits are enforced and advertised, and an event is
//! acknowledged with `OK true` only after the store committed it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorum_relay::RelayError> {
//! use quorum_relay::{Relay, RelayConfig};
//! let relay = Relay::open(RelayConfig::default(), std::path::Path::new("/var/lib/quorum/relay")).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7777").await.expect("bind");
//! relay.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`config`] (limits, NIP-11 identity, auth mode), [`info`] (the NIP-11 document),
//! [`policy`] (the seam for Quorum CI's own admission rules), `accept` (TCP connections:
//! per-address caps and the handshake deadline), `http` (routing), `session` (one WebSocket
//! connection), `store` (bounded reads and NIP-40 on top of the store), `limits`
//! (per-connection rate limiting), [`error`].

mod accept;
pub mod config;
pub mod error;
mod http;
pub mod info;
mod limits;
pub mod policy;
mod session;
mod store;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nostr_database::NostrDatabase;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use crate::config::{AuthMode, Limits, RelayConfig, RelayInfo};
pub use crate::error::RelayError;
pub use crate::info::{InformationDocument, SUPPORTED_NIPS};
pub use crate::policy::{Admission, BoxFuture, ConnectionInfo, QueryPolicy, WritePolicy};
pub use nostr;
pub use nostr_database;

/// How long [`Relay::serve`] waits for sessions to say goodbye after the shutdown signal.
const SESSION_DRAIN: Duration = Duration::from_secs(5);

/// A Nostr relay. Cheap to clone: clones share the store, the live feed and the policies.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.inner.config)
            .field("db", &self.inner.store.db().backend())
            .finish_non_exhaustive()
    }
}

/// State shared by every connection of one relay.
pub(crate) struct Inner {
    pub(crate) config: RelayConfig,
    pub(crate) store: store::Store,
    /// Every accepted event, for live subscriptions. Bounded: a receiver that falls
    /// `live_buffer` events behind gets `Lagged` and its subscriptions are closed.
    pub(crate) live: broadcast::Sender<Arc<session::LiveEvent>>,
    pub(crate) write_policies: RwLock<Vec<Arc<dyn WritePolicy>>>,
    pub(crate) query_policies: RwLock<Vec<Arc<dyn QueryPolicy>>>,
    /// Number of open WebSocket sessions (the connection limit, and shutdown's drain).
    pub(crate) active: watch::Sender<usize>,
    /// Cancelled when [`Relay::serve`]'s shutdown future completes: sessions close.
    pub(crate) shutdown: CancellationToken,
    /// Open TCP connections per address (see [`Limits::max_connections_per_ip`]).
    pub(crate) per_ip: Arc<accept::PerIp>,
    pub(crate) next_conn_id: AtomicU64,
}

impl Relay {
    /// Opens (creating if needed) an LMDB store in `data_dir/lmdb` and builds a relay on it.
    pub async fn open(config: RelayConfig, data_dir: &Path) -> Result<Relay, RelayError> {
        let path = data_dir.join("lmdb");
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|source| RelayError::CreateDir {
                path: path.clone(),
                source,
            })?;
        let open_path = path.clone();
        // Opening maps the file and spawns nostr-lmdb's writer thread: blocking work.
        let db = tokio::task::spawn_blocking(move || nostr_lmdb::NostrLMDB::open(open_path))
            .await
            .map_err(|join| RelayError::OpenStore {
                path: path.clone(),
                source: nostr_database::DatabaseError::backend(join),
            })?
            .map_err(|source| RelayError::OpenStore { path, source })?;
        Ok(Relay::with_database(config, Arc::new(db)))
    }

    /// Builds a relay on any store (tests use `nostr_database::MemoryDatabase`).
    pub fn with_database(config: RelayConfig, db: Arc<dyn NostrDatabase>) -> Relay {
        let (live, _) = broadcast::channel(config.limits.live_buffer.max(1));
        let (active, _) = watch::channel(0);
        let store = store::Store::new(db, config.limits.max_concurrent_queries);
        Relay {
            inner: Arc::new(Inner {
                config,
                store,
                live,
                write_policies: RwLock::new(Vec::new()),
                query_policies: RwLock::new(Vec::new()),
                active,
                shutdown: CancellationToken::new(),
                per_ip: Arc::default(),
                next_conn_id: AtomicU64::new(1),
            }),
        }
    }

    /// Adds a write policy (runs after the ones added before). Applies to new events at once,
    /// on every clone of this relay.
    pub fn add_write_policy(&self, policy: impl WritePolicy) {
        if let Ok(mut policies) = self.inner.write_policies.write() {
            policies.push(Arc::new(policy));
        }
    }

    /// Builder form of [`Relay::add_write_policy`].
    pub fn with_write_policy(self, policy: impl WritePolicy) -> Self {
        self.add_write_policy(policy);
        self
    }

    /// Adds a query policy for `REQ` and `COUNT` (runs after the ones added before).
    pub fn add_query_policy(&self, policy: impl QueryPolicy) {
        if let Ok(mut policies) = self.inner.query_policies.write() {
            policies.push(Arc::new(policy));
        }
    }

    /// Builder form of [`Relay::add_query_policy`].
    pub fn with_query_policy(self, policy: impl QueryPolicy) -> Self {
        self.add_query_policy(policy);
        self
    }

    /// The relay's configuration.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    /// The store (for tools that read it directly, such as the CLI's export).
    pub fn database(&self) -> &Arc<dyn NostrDatabase> {
        self.inner.store.db()
    }

    /// The NIP-11 document as currently served.
    pub fn information_document(&self) -> InformationDocument {
        self.inner.information_document()
    }

    /// Number of open WebSocket sessions.
    pub fn connections(&self) -> usize {
        *self.inner.active.borrow()
    }

    /// The HTTP router: `GET` on any path is a WebSocket upgrade, the NIP-11 document (with
    /// `Accept: application/nostr+json`), or a short text page. Serve it with connect info
    /// (`into_make_service_with_connect_info::<SocketAddr>()`) to give policies the peer
    /// address. [`Relay::serve`] does not use it: it serves the same handler behind its own
    /// connection limits (per-address cap, handshake deadline), which a router alone lacks.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.inner))
    }

    /// Serves the relay on `listener` until `shutdown` completes, then stops accepting,
    /// closes every session with a WebSocket close frame (1001, going away), waits up to a
    /// few seconds for them to finish, and returns. Events already acknowledged are durable.
    ///
    /// Each TCP connection counts against [`Limits::max_connections_per_ip`] for as long as it
    /// is open, and must complete its HTTP request within [`Limits::handshake_timeout`].
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        let addr = listener.local_addr().map_err(RelayError::ListenerAddress)?;
        tracing::debug!(%addr, "relay listening");
        let token = self.inner.shutdown.clone();
        let sweeper = tokio::spawn(sweep_expired(Arc::clone(&self.inner)));
        let stop = token.clone();
        let signal = tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
        let served = accept::serve(Arc::clone(&self.inner), listener).await;
        signal.abort();
        // The accept loop may also have stopped on its own (an error): close sessions either way.
        token.cancel();
        let mut active = self.inner.active.subscribe();
        if tokio::time::timeout(SESSION_DRAIN, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                open = *active.borrow(),
                "sessions still open after shutdown drain"
            );
        }
        sweeper.abort();
        tracing::debug!(%addr, "relay stopped");
        served.map_err(|source| RelayError::Serve { addr, source })
    }
}

impl Inner {
    pub(crate) fn information_document(&self) -> InformationDocument {
        let has_write_policies = self
            .write_policies
            .read()
            .map(|p| !p.is_empty())
            .unwrap_or(false);
        InformationDocument::new(&self.config, has_write_policies)
    }

    pub(crate) fn write_policies(&self) -> Vec<Arc<dyn WritePolicy>> {
        self.write_policies
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    pub(crate) fn query_policies(&self) -> Vec<Arc<dyn QueryPolicy>> {
        self.query_policies
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// Deletes events whose NIP-40 expiration passed, for as long as the relay serves.
async fn sweep_expired(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => inner.store.sweep().await,
        }
    }
}
