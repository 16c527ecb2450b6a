//! HTTP routing: one handler for every path, because Nostr clients put whatever path the user
//! typed into the relay URL. It dispatches a request to a WebSocket session, the NIP-11
//! document, a CORS preflight answer or a short text page; and it enforces the connection
//! limit before upgrading, so that a full relay says 503 instead of accepting and dropping.
//! The same handler serves [`crate::Relay::router`] and the accept loop of
//! [`crate::Relay::serve`] (`accept`), which also answers connections over their address's
//! cap here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::Inner;
use crate::policy::ConnectionInfo;
use crate::session;

const NIP11_MIME: &str = "application/nostr+json";

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(root).with_state(inner)
}

async fn root(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    respond(inner, remote, request).await
}

/// Answers one HTTP request from `remote`.
pub(crate) async fn respond(
    inner: Arc<Inner>,
    remote: Option<SocketAddr>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    match parts.method {
        Method::OPTIONS => return cors(StatusCode::NO_CONTENT.into_response()),
        Method::GET | Method::HEAD => {}
        _ => return (StatusCode::METHOD_NOT_ALLOWED, "use GET\n").into_response(),
    }
    if is_websocket(&parts.headers) {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        let host = request_host(&parts.headers);
        return upgrade_session(inner, upgrade, remote, host);
    }
    if accepts_nip11(&parts.headers) {
        return nip11(&inner);
    }
    let info = &inner.config.info;
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "{}\n{}\n\nThis is a Nostr relay: connect with a Nostr client over WebSocket.\n\
             Relay information (NIP-11): send `Accept: {NIP11_MIME}`.\n",
            info.name, info.description
        ),
    )
        .into_response()
}

fn upgrade_session(
    inner: Arc<Inner>,
    upgrade: WebSocketUpgrade,
    remote: Option<SocketAddr>,
    host: Option<String>,
) -> Response {
    if inner.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "relay is shutting down\n").into_response();
    }
    let max = inner.config.limits.max_connections;
    let admitted = inner.active.send_if_modified(|n| {
        if max == 0 || *n < max {
            *n += 1;
            true
        } else {
            false
        }
    });
    if !admitted {
        tracing::debug!(?remote, max, "connection refused: relay full");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many connections (limit {max})\n"),
        )
            .into_response();
    }
    // Dropped when the session ends or the upgrade never completes.
    let slot = Slot(Arc::clone(&inner));
    let conn = ConnectionInfo {
        id: inner.next_conn_id.fetch_add(1, Ordering::Relaxed),
        remote,
        authenticated: Vec::new(),
    };
    // Accept frames bigger than the limit so an oversized message gets a NOTICE naming the
    // limit instead of a protocol error; only beyond this hard cap does the socket close.
    let hard_cap = inner
        .config
        .limits
        .max_message_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    upgrade
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session::run(inner, socket, conn, host).await;
        })
}

/// The answer to a connection over its address's cap (`Limits::max_connections_per_ip`).
pub(crate) fn refuse_per_ip(inner: &Inner, remote: SocketAddr) -> Response {
    let cap = inner.config.limits.max_connections_per_ip;
    tracing::debug!(%remote, cap, "connection refused: per-address cap");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "too many connections from {} (limit {cap} per address)\n",
            remote.ip()
        ),
    )
        .into_response()
}

/// Holds one of the `max_connections` slots.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn accepts_nip11(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NIP11_MIME))
}

/// The host name the client used (`Host` header without port), for NIP-42 `relay` tags.
fn request_host(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?;
    let url = url::Url::parse(&format!("http://{raw}/")).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

fn nip11(inner: &Inner) -> Response {
    let doc = inner.information_document();
    match serde_json::to_vec(&doc) {
        Ok(body) => cors(([(header::CONTENT_TYPE, NIP11_MIME)], body).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialise the NIP-11 document");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// NIP-11: the document must be readable from web clients on other origins.
fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    response
}
