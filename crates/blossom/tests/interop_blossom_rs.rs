//! Our client against a third-party server: `blossom-rs` 0.6.1 (an embeddable axum Blossom
//! server by MonumentalSystems) on 127.0.0.1, with auth required.
//!
//! blossom-rs binds tokens to one HTTP request in ways BUD-11 does not: exactly one `server`
//! tag equal to its base URL (`http://127.0.0.1:PORT`, where BUD-11 wants the bare domain),
//! plus `u` (request URL) and `method` tags, exactly one `x`, `created_at` at most 60 s old and
//! `expiration` at most `created_at + 120`. A per-spec BUD-11 token is therefore refused (401),
//! which this test pins down, and our client's `AuthProfile::RequestBound` is accepted.

mod common;

use common::*;
use quorum_blossom::BlossomClient;
use quorum_blossom::client::{AuthProfile, ServerOutcome};
use quorum_proto::nostr::Keys;
use tokio::time::timeout;

struct ThirdParty {
    url: url::Url,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ThirdParty {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_blossom_rs() -> ThirdParty {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let backend = blossom_rs::FilesystemBackend::new(dir.path().to_str().unwrap()).unwrap();
    let server = blossom_rs::BlobServer::new_with_auth(backend, &base);
    let router = server.router();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    ThirdParty {
        url: url::Url::parse(&format!("{base}/")).unwrap(),
        _dir: dir,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_blossom_rs() {
    init_tracing();
    timeout(TEST_TIMEOUT, async {
        let third = start_blossom_rs().await;
        let keys = Keys::generate();
        let dir = tempfile::tempdir().unwrap();
        let data = blob(77, 1_234_567);
        let h = sha(&data);
        let path = write_file(dir.path(), "artifact.bin", &data);

        // Per-spec BUD-11 token (server = bare host): blossom-rs refuses it. (A small body:
        // blossom-rs answers 401 before reading it and closes, and a big body still being
        // sent would turn that answer into a connection reset on our side.)
        let standard = BlossomClient::new(keys.clone());
        let small = write_file(dir.path(), "small.bin", b"small");
        let err = standard.upload_file(&third.url, &small).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");

        // Request-bound profile: accepted.
        let client = BlossomClient::new(keys.clone()).with_auth_profile(AuthProfile::RequestBound);
        let up = client.upload_file(&third.url, &path).await.unwrap();
        assert_eq!(up.descriptor.sha256, h);
        assert_eq!(up.descriptor.size, data.len() as u64);
        // blossom-rs answers 200 even for a new blob (BUD-02 says 201).
        assert!(!up.created);

        assert!(client.has(&third.url, h).await.unwrap());
        let out = dir.path().join("back.bin");
        client.download(&third.url, h, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);

        // Multi-server upload: ours (BUD-11) and blossom-rs, each with its own outcome.
        let ours = TestServer::start(config()).await;
        let outcomes = client
            .upload_to_many(&[ours.url.clone(), third.url.clone()], &path)
            .await
            .unwrap();
        assert!(
            outcomes.iter().all(ServerOutcome::is_stored),
            "{outcomes:?}"
        );
        // (Our server accepts the URL-shaped server tag too: liberal on input.)

        // BUD-06 is not implemented there: the refusal is reported, not hidden.
        let err = client
            .preflight(&third.url, h, data.len() as u64, None)
            .await
            .unwrap_err();
        assert!(err.status().is_some(), "{err}");

        client.delete(&third.url, h).await.unwrap();
        assert!(!client.has(&third.url, h).await.unwrap());
    })
    .await
    .unwrap();
}
