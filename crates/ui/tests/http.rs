//! The dashboard's HTTP side without a browser (`tower::ServiceExt::oneshot`, no socket), over
//! a real relay: pages, errors that name the bad input, headers, the verdict endpoint refusing
//! what is not a maintainer's verdict, and markup from a relay arriving as text.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nipc1::{
    CiContext, CiJobResult, CiWorkflowProgress, Conclusion, ProgressStatus, Quote,
};
use quorum_proto::nostr::{EventBuilder, JsonUtil, Keys, Kind, Timestamp};
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

    // A run `quorum run` drove itself is known from its CI status (NIP-C1), as gitworkshop
    // knows it: listed while it runs, its jobs' results (and their log tails, as text) once
    // it concluded.
    let coordinator = Keys::generate();
    let owner = Keys::generate();
    let context = {
        let mut context = CiContext::new(
            RepoCoordinate::new(owner.public_key(), "app"),
            "cd".repeat(20),
        );
        context.git_ref = Some("refs/heads/main".into());
        context
    };
    let run_id = "ef".repeat(32);
    let progress = |status: ProgressStatus,
                    conclusion: Option<Conclusion>,
                    jobs: Vec<Quote>,
                    running: Vec<String>| CiWorkflowProgress {
        identifier: run_id.clone(),
        context: context.clone(),
        status,
        conclusion,
        queued_at: Some(Timestamp::now()),
        started_at: Some(Timestamp::now()),
        jobs,
        manual_trigger: None,
        queue: None,
        in_progress: running,
        expiration: Timestamp::now() + 1800u64,
        content: String::new(),
    };
    let running = progress(
        ProgressStatus::InProgress,
        None,
        Vec::new(),
        vec!["lint".into()],
    )
    .to_event_builder()
    .unwrap()
    .sign_with_keys(&coordinator)
    .unwrap();
    quorum_testnet::quorum::publish(&network.relay, &[&running]).await;
    let href = format!("/ci/{}/{run_id}", coordinator.public_key().to_hex());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, list) = get(&app, "/").await;
        if list.contains(&href) {
            assert!(list.contains("app (owner"), "{list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CI run never appeared: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, page) = get(&app, &href).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Running now: lint"), "{page}");

    let job = CiJobResult {
        context: context.clone(),
        job: "lint".into(),
        conclusion: Conclusion::Failure,
        logs: String::new(),
        name: None,
        artifacts: Vec::new(),
        workflow_run: None,
        queued_at: None,
        started_at: None,
        exit_code: Some(3),
        runs_on: vec![Keys::generate().public_key().to_hex()],
        log_tail: "\u{1b}[31m<b>lint broke</b>\u{1b}[0m\n".into(),
        log_omitted: None,
    }
    .to_event_builder()
    .unwrap()
    .sign_with_keys(&coordinator)
    .unwrap();
    quorum_testnet::quorum::next_second().await;
    let concluded = progress(
        ProgressStatus::Concluded,
        Some(Conclusion::Failure),
        vec![Quote::job_result(&job, "lint".to_string())],
        Vec::new(),
    )
    .to_event_builder()
    .unwrap()
    .sign_with_keys(&coordinator)
    .unwrap();
    quorum_testnet::quorum::publish(&network.relay, &[&job, &concluded]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, _, page) = get(&app, &href).await;
        if page.contains("data-job=\"lint\"") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the job result never appeared: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        page.contains("<span class=\"c1\">&lt;b&gt;lint broke&lt;/b&gt;</span>"),
        "{page}"
    );
    assert!(page.contains(">failure<"), "{page}");
    client.shutdown().await;
}
