//! A Blossom server that stalls (accepts connections, then neither reads nor answers) must not
//! hold a build up: uploads and downloads give up after the idle timeout, and an upload to
//! several servers returns once one of them stored the blob (issue 15, review "partitions").

mod common;

use std::time::{Duration, Instant};

use common::*;
use quorum_blossom::BlossomClient;
use quorum_blossom::client::ServerOutcome;
use quorum_proto::nostr::Keys;
use tokio::time::timeout;

/// A server that accepts every connection and then does nothing with it, like a process paused
/// with SIGSTOP (whose kernel still completes handshakes into the listen backlog). The sockets
/// are kept open until the test ends.
async fn stalled_server() -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

const IDLE: Duration = Duration::from_secs(2);

fn client() -> BlossomClient {
    BlossomClient::new(Keys::generate())
        .with_idle_timeout(IDLE)
        .with_straggler_wait(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_returns_once_one_server_stored_the_blob_though_another_stalls() {
    timeout(TEST_TIMEOUT, async {
        let good = TestServer::start(config()).await;
        let stalled = stalled_server().await;
        let dir = tempfile::tempdir().unwrap();
        // Larger than the socket buffers, so that the stalled server also stops the body.
        let data = blob(7, 24 << 20);
        let path = write_file(dir.path(), "big.bin", &data);
        let started = Instant::now();
        let out = client()
            .upload_to_many(&[stalled.clone(), good.url.clone()], &path)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(out[1].is_stored(), "{:?}", out[1]);
        assert!(
            matches!(&out[0], ServerOutcome::Unreachable { server, .. } if *server == stalled),
            "{:?}",
            out[0]
        );
        assert!(
            took < IDLE + Duration::from_secs(3),
            "the upload waited {took:?} for the stalled server"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_fails_an_upload_or_download_after_the_idle_timeout() {
    timeout(TEST_TIMEOUT, async {
        let stalled = stalled_server().await;
        let dir = tempfile::tempdir().unwrap();
        for size in [100, 24 << 20] {
            let path = write_file(dir.path(), "f.bin", &blob(size as u64, size));
            let started = Instant::now();
            let err = client().upload_file(&stalled, &path).await.unwrap_err();
            let took = started.elapsed();
            assert!(
                err.to_string().contains("stalled") || err.to_string().contains("timed out"),
                "{err}"
            );
            assert!(
                took >= IDLE && took < IDLE + Duration::from_secs(3),
                "{size} bytes: gave up after {took:?}"
            );
        }
        let started = Instant::now();
        let sha = sha(b"anything");
        let dest = dir.path().join("out.bin");
        let err = client().download(&stalled, sha, &dest).await.unwrap_err();
        assert!(started.elapsed() < IDLE + Duration::from_secs(3), "{err}");
        assert!(!dest.exists());
    })
    .await
    .unwrap();
}
