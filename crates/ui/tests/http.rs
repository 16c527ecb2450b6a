//! The dashboard's HTTP side without a browser (`tower::ServiceExt::oneshot`, no socket), over
//! a real relay: pages, errors that name the bad input, headers, the verdict endpoint refusing
//! what is not a maintainer's verdict, and markup from a relay arriving as text.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use quorum_proto::nostr::{EventBuilder, JsonUtil, Keys, Kind};
use quorum_testnet::Network;
use tower::ServiceExt;

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn post(app: &axum::Router, uri: &str, body: String) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::post(uri).body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_errors_and_relay_markup_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let dashboard = quorum_ui::Dashboard::connect(quorum_ui::UiConfig {
        relays: vec![network.relay.clone()],
        blossom: vec![network.blossom.clone()],
    })
    .await
    .unwrap();
    let app = quorum_ui::router(dashboard);

    let (status, headers, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(body.contains("No run on these relays yet"), "{body}");
    assert!(body.contains("data-live=\"/live/runs\""), "{body}");

    let (status, headers, body) = get(&app, "/assets/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript");
    assert!(body.contains("EventSource"));

    let (status, _, body) = get(&app, "/run/not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("&quot;not-an-id&quot; is not a run id"),
        "{body}"
    );
    let (status, _, _) = get(&app, &format!("/run/{}", "ab".repeat(32))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&app, "/releases?repo=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("is not a repository"), "{body}");
    let (status, _, _) = get(&app, "/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Only a signed approval or rejection is passed on to the relays.
    let (status, body) = post(&app, "/verdict", "{}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let note = EventBuilder::new(Kind::TextNote, "hi")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let (status, body) = post(&app, "/verdict", note.as_json()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not an approval"), "{body}");
    let mut forged: serde_json::Value = serde_json::from_str(&note.as_json()).unwrap();
    forged["content"] = "changed".into();
    let (status, body) = post(&app, "/verdict", forged.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("does not verify"), "{body}");

    // A run whose repository URL carries markup: shown as text, everywhere.
    let hostile = "https://evil.example/\"><script>alert(1)</script><img src=x onerror=alert(2)>";
    let run = quorum_proto::run::RunRequest::new(hostile, "ab".repeat(20));
    let client = network.client().await;
    let request = client.submit(&run.to_request(), false).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (status, _, body) = get(&app, &format!("/run/{}", request.id.to_hex())).await;
        if status == StatusCode::OK {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the run never appeared: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        page.contains("https://evil.example/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<script>alert") && !page.contains("<img"),
        "{page}"
    );
    let (_, _, list) = get(&app, "/").await;
    assert!(list.contains(&request.id.to_hex()), "{list}");
    assert!(!list.contains("<script>alert"), "{list}");
    client.shutdown().await;
}
