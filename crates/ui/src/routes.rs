//! The HTTP side: pages, their live streams (SSE), the embedded assets, and the one write —
//! a maintainer's verdict signed in the browser (NIP-07), checked and passed on to the relays.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use quorum_proto::approval::{APPROVAL, REJECTION, Verdict};
use quorum_proto::nostr::{Event, JsonUtil};

use crate::html::{esc, page};
use crate::views::{View, render};
use crate::{Dashboard, UiError, assets};

/// How often a live page is rendered again even when no run changed (releases' verdicts and
/// the market read the relays themselves).
const RERENDER: Duration = Duration::from_secs(5);
/// Changes that come together are sent as one.
const SETTLE: Duration = Duration::from_millis(150);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = match &self {
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Relays(err) => {
                tracing::warn!("{err}");
                StatusCode::BAD_GATEWAY
            }
        };
        let text = match &self {
            UiError::Relays(_) => "the relays cannot be read right now".to_string(),
            other => other.to_string(),
        };
        let body = page(
            "Error",
            crate::html::Section::Runs,
            "",
            &format!(
                "<h1>{}</h1><p><a href=\"/\">Back to the runs</a></p>",
                esc(&text)
            ),
        );
        (status, Html(body)).into_response()
    }
}

/// The dashboard's routes: `/`, `/run/ID`, `/run/ID/job/JOB`, `/releases?repo=`, `/market`,
/// each page's stream under `/live/…`, `/assets/…`, and `POST /verdict`.
pub fn router(dashboard: Dashboard) -> Router {
    Router::new()
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css", assets::CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", assets::JS) }),
        )
        .route("/live/{*path}", get(live))
        .route("/live/", get(live_root))
        .route(
            "/verdict",
            post(verdict).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .fallback(get(page_handler))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dashboard)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn asset(mime: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
}

async fn page_handler(
    State(dashboard): State<Dashboard>,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let view = View::parse(uri.path(), &query)?;
    let main = render(&dashboard, &view).await?;
    let live = match uri.query() {
        Some(q) => format!("/live{}?{q}", live_path(uri.path())),
        None => format!("/live{}", live_path(uri.path())),
    };
    Ok(Html(page(&view.title(), view.section(), &live, &main)))
}

/// The stream path of a page path (`/` is `/runs`).
fn live_path(path: &str) -> &str {
    if path == "/" { "/runs" } else { path }
}

async fn live_root(
    state: State<Dashboard>,
    query: Query<BTreeMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    stream(state.0, View::parse("/", &query.0)?)
}

async fn live(
    State(dashboard): State<Dashboard>,
    axum::extract::Path(path): axum::extract::Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    let view = View::parse(&path, &query)?;
    stream(dashboard, view)
}

/// The page's `main`, sent whenever it changes: after a change of what the hub follows, or
/// every few seconds for what pages read themselves. Ends when the server stops.
fn stream(
    dashboard: Dashboard,
    view: View,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, UiError> {
    let changes = dashboard.hub.subscribe();
    let closing = dashboard.closing();
    let state = (dashboard, view, changes, closing, None::<String>);
    let events = futures_util::stream::unfold(
        state,
        |(dashboard, view, mut changes, mut closing, mut last)| async move {
            loop {
                if last.is_some() {
                    tokio::select! {
                        _ = changes.changed() => tokio::time::sleep(SETTLE).await,
                        _ = tokio::time::sleep(RERENDER) => {}
                        _ = async { let _ = closing.wait_for(|c| *c).await; } => return None,
                    }
                    changes.borrow_and_update();
                }
                let html = match render(&dashboard, &view).await {
                    Ok(html) => html,
                    Err(err) => format!(
                        "<p class=\"alert\" role=\"alert\">{}</p>",
                        esc(&err.to_string())
                    ),
                };
                if last.as_ref() != Some(&html) {
                    last = Some(html.clone());
                    let event = SseEvent::default().data(html);
                    return Some((Ok(event), (dashboard, view, changes, closing, last)));
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A maintainer's approval or rejection, signed in the browser with a NIP-07 signer: checked
/// (id, signature, shape) and published to the relays. Whether it counts is the gate's
/// business (the engine counts only the maintainers it asked), not the dashboard's.
async fn verdict(State(dashboard): State<Dashboard>, body: String) -> Response {
    let event = match Event::from_json(&body) {
        Ok(event) => event,
        Err(err) => {
            return (StatusCode::BAD_REQUEST, format!("not a Nostr event: {err}")).into_response();
        }
    };
    if event.verify().is_err() {
        return (
            StatusCode::BAD_REQUEST,
            "the event's id or signature does not verify",
        )
            .into_response();
    }
    if event.kind != APPROVAL && event.kind != REJECTION {
        return (
            StatusCode::BAD_REQUEST,
            "not an approval (8702) or rejection (8703)",
        )
            .into_response();
    }
    if let Err(err) = Verdict::from_event(&event) {
        return (
            StatusCode::BAD_REQUEST,
            format!("not a valid verdict: {err}"),
        )
            .into_response();
    }
    match dashboard.hub.client.publish_signed(&event).await {
        Ok(()) => {
            dashboard.hub.touch();
            (StatusCode::OK, format!("published {}", event.id.to_hex())).into_response()
        }
        Err(err) => {
            tracing::warn!("cannot publish a verdict: {err}");
            (StatusCode::BAD_GATEWAY, "the relays did not take it").into_response()
        }
    }
}
