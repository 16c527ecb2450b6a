//! What one uploader and the disk can take: per-uploader quotas (413), the free-space reserve
//! (507, on a real tmpfs of known size), both leaving nothing half-written; mirror ownership
//! only for callers whose URL serves the bytes; private listing.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use quorum_blossom::{BlossomClient, BlossomConfig, ClientError, Quota};
use quorum_proto::blossom::{BlobDescriptor, Sha256Hex, Verb};
use quorum_proto::nostr::Keys;
use quorum_testkit::daemon::Daemon;
use reqwest::StatusCode;
use tokio::time::timeout;
use tower::ServiceExt;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn reason(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-reason")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn upload(s: &TestServer, keys: &Keys, data: &[u8]) -> reqwest::Response {
    let h = sha(data);
    http()
        .put(s.join("/upload"))
        .header("x-sha-256", h.to_hex())
        .header("authorization", auth(keys, Verb::Upload, &[h], None))
        .body(data.to_vec())
        .send()
        .await
        .unwrap()
}

/// Waits until no upload is in progress (a refused request may still be unwinding).
async fn no_temp_files(s: &TestServer) {
    for _ in 0..100 {
        if s.temp_files() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} temp files left", s.temp_files());
}

/// A streamed upload through the router whose body the test feeds chunk by chunk.
struct Streamed {
    chunks: tokio::sync::mpsc::Sender<bytes::Bytes>,
    response: tokio::task::JoinHandle<axum::response::Response>,
}

fn streamed_upload(s: &TestServer, keys: &Keys, data: &[u8]) -> Streamed {
    let (chunks, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    }));
    let h = sha(data);
    let request = axum::http::Request::put("/upload")
        .header("host", s.url.authority())
        .header("content-length", data.len().to_string())
        .header("x-sha-256", h.to_hex())
        .header("authorization", auth(keys, Verb::Upload, &[h], None))
        .body(body)
        .unwrap();
    let router = s.server.router();
    let response = tokio::spawn(async move { router.oneshot(request).await.unwrap() });
    Streamed { chunks, response }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploader_over_its_quota_gets_413_and_nothing_is_kept() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            quota: Quota {
                max_bytes: Some(10_000),
                max_blobs: Some(3),
            },
            ..config()
        })
        .await;
        let alice = Keys::generate();
        let bob = Keys::generate();
        let (a1, a2, a3, a4, a5) = (
            blob(1, 6000),
            blob(2, 5000),
            blob(3, 3000),
            blob(4, 1000),
            blob(5, 10),
        );
        assert_eq!(upload(&s, &alice, &a1).await.status(), StatusCode::CREATED);
        // 6000 + 5000 bytes > 10 000.
        let r = upload(&s, &alice, &a2).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let why = reason(&r);
        assert!(why.contains("quota") && why.contains("10000"), "{why}");
        no_temp_files(&s).await;
        assert!(!s.server.store().contains(&sha(&a2)));
        // Another uploader has an allowance of its own.
        assert_eq!(upload(&s, &bob, &a2).await.status(), StatusCode::CREATED);
        // What Alice already has costs nothing again; the bytes count once per owner.
        assert_eq!(upload(&s, &alice, &a1).await.status(), StatusCode::OK);
        assert_eq!(upload(&s, &alice, &a3).await.status(), StatusCode::CREATED);
        assert_eq!(upload(&s, &alice, &a4).await.status(), StatusCode::CREATED);
        // Exactly 10 000 bytes in 3 blobs: the blob count is what stops a fourth.
        let r = upload(&s, &alice, &a5).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(reason(&r).contains("3 blobs"), "{}", reason(&r));
        // BUD-06 says so up front.
        let h5 = sha(&a5);
        let r = http()
            .head(s.join("/upload"))
            .header("x-sha-256", h5.to_hex())
            .header("x-content-length", "10")
            .header("authorization", auth(&alice, Verb::Upload, &[h5], None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Deleting frees the allowance.
        let h3 = sha(&a3);
        let r = http()
            .delete(s.join(&format!("/{h3}")))
            .header("authorization", auth(&alice, Verb::Delete, &[h3], None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(upload(&s, &alice, &a5).await.status(), StatusCode::CREATED);
        assert_eq!(s.server.store().usage(Some(&alice.public_key())).blobs, 3);
        no_temp_files(&s).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_cannot_pass_a_quota_together() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            quota: Quota {
                max_bytes: Some(10_000),
                max_blobs: None,
            },
            ..config()
        })
        .await;
        let alice = Keys::generate();
        let first = blob(10, 6000);
        let second = blob(11, 6000);
        let upload_1 = streamed_upload(&s, &alice, &first);
        upload_1
            .chunks
            .send(bytes::Bytes::copy_from_slice(&first[..1000]))
            .await
            .unwrap();
        // The first is admitted and receiving (its temp file exists) ...
        for _ in 0..200 {
            if s.temp_files() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.temp_files(), 1);
        // ... so its 6000 bytes are spoken for: the second does not fit beside them.
        let r = upload(&s, &alice, &second).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{}", reason(&r));
        upload_1
            .chunks
            .send(bytes::Bytes::copy_from_slice(&first[1000..]))
            .await
            .unwrap();
        drop(upload_1.chunks);
        let response = upload_1.response.await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(s.server.store().len(), 1);
        no_temp_files(&s).await;
    })
    .await
    .unwrap();
}

/// A tmpfs of `size` bytes mounted in a mount namespace of its own (nothing to clean up on the
/// host: it goes with the process), reached from here through `/proc/PID/root`.
struct Tmpfs {
    path: PathBuf,
    _holder: Daemon,
    _dir: tempfile::TempDir,
}

fn tmpfs(size: u64) -> Tmpfs {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().to_str().unwrap().to_owned();
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs '{mountpoint}' && echo 'tmpfs: ready' && exec sleep 600"
    );
    // Root (as in CI) mounts in a plain mount namespace; anyone else needs a user namespace.
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let mut args = vec!["--mount", "--propagation", "private"];
    if !root {
        args.push("--map-root-user");
    }
    args.extend(["sh", "-c", &script]);
    let holder = Daemon::spawn("unshare", &args);
    assert_eq!(holder.value_of("tmpfs"), "ready");
    let path = Path::new(&format!("/proc/{}/root", holder.pid())).join(&mountpoint[1..]);
    Tmpfs {
        path,
        _holder: holder,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_past_the_reserve_gets_507_and_nothing_is_kept() {
    timeout(TEST_TIMEOUT, async {
        const MIB: u64 = 1 << 20;
        const KIB: usize = 1 << 10;
        let disk = tmpfs(8 * MIB);
        let s = TestServer::start_in(
            BlossomConfig {
                min_free_bytes: 2 * MIB,
                ..config()
            },
            &disk.path.join("data"),
        )
        .await;
        let free = || s.server.store().free_space().unwrap();
        assert!(free() <= 8 * MIB && free() > 7 * MIB, "{}", free());
        let keys = Keys::generate();

        // 7 MiB would leave less than 2 MiB: refused before a byte is read.
        let too_much = blob(20, 7 * MIB as usize);
        let refused = streamed_upload(&s, &keys, &too_much);
        let response = refused.response.await.unwrap();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        let why = response.headers()["x-reason"].to_str().unwrap();
        assert!(why.contains("disk space"), "{why}");
        drop(refused.chunks);
        no_temp_files(&s).await;
        assert!(s.server.store().is_empty());
        let client = BlossomClient::new(keys.clone());
        let preflight = client
            .preflight(&s.url, sha(&too_much), too_much.len() as u64, None)
            .await
            .unwrap_err();
        assert_eq!(preflight.status(), Some(507), "{preflight}");

        // Two 3.5 MiB uploads fit one at a time but not together: the one that falls behind is
        // stopped while its bytes arrive (free space is re-checked every MiB), and its temp
        // file goes.
        let (a, b) = (blob(21, 3584 * KIB), blob(22, 3584 * KIB));
        let slow = streamed_upload(&s, &keys, &a);
        slow.chunks
            .send(bytes::Bytes::copy_from_slice(&a[..128 * KIB]))
            .await
            .unwrap();
        for _ in 0..200 {
            if s.temp_files() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(upload(&s, &keys, &b).await.status(), StatusCode::CREATED);
        let mut sent = 128 * KIB;
        let mut refused = false;
        while sent < a.len() {
            let end = (sent + 128 * KIB).min(a.len());
            if slow
                .chunks
                .send(bytes::Bytes::copy_from_slice(&a[sent..end]))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            sent = end;
        }
        drop(slow.chunks);
        let response = slow.response.await.unwrap();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(refused || sent == a.len());
        no_temp_files(&s).await;
        assert_eq!(s.server.store().len(), 1);
        assert!(free() >= 2 * MIB, "{}", free());

        // Mirrors are held to the same reserve.
        let origin = TestServer::start(config()).await;
        let c = blob(23, 3 * MIB as usize);
        assert_eq!(
            upload(&origin, &keys, &c).await.status(),
            StatusCode::CREATED
        );
        let err = client
            .mirror(&s.url, &origin.join(&format!("/{}", sha(&c))), sha(&c))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(507), "{err}");
        no_temp_files(&s).await;
        // Small uploads still fit.
        assert_eq!(
            upload(&s, &keys, &blob(24, 1000)).await.status(),
            StatusCode::CREATED
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_a_stored_blob_makes_an_owner_only_of_who_serves_it() {
    timeout(TEST_TIMEOUT, async {
        let a = TestServer::start(config()).await;
        let b = TestServer::start(config()).await;
        let alice = Keys::generate();
        let mallory = Keys::generate();
        let data = blob(30, 4000);
        let h = sha(&data);
        assert_eq!(
            upload(&a, &alice, &data).await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            upload(&b, &alice, &data).await.status(),
            StatusCode::CREATED
        );

        // Mallory names the hash with a URL that does not serve it: no claim on B's copy.
        let nowhere = a.join(&format!("/missing/{h}"));
        let r = http()
            .put(b.join("/mirror"))
            .header("authorization", auth(&mallory, Verb::Upload, &[h], None))
            .json(&serde_json::json!({ "url": nowhere.as_str() }))
            .send()
            .await
            .unwrap();
        assert!(!r.status().is_success(), "{}", r.status());
        let meta = b.server.store().get(&h).unwrap();
        assert!(!meta.is_owner(&mallory.public_key()));
        let listed: Vec<BlobDescriptor> = http()
            .get(b.join(&format!("/list/{}", mallory.public_key().to_hex())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(listed.is_empty());

        // A URL that really serves the bytes: fetched, hashed, and then Mallory is an owner
        // like any mirror of a new blob would make her.
        let client = BlossomClient::new(mallory.clone());
        let mirrored = client
            .mirror(&b.url, &a.join(&format!("/{h}")), h)
            .await
            .unwrap();
        assert!(!mirrored.created);
        assert!(
            b.server
                .store()
                .get(&h)
                .unwrap()
                .is_owner(&mallory.public_key())
        );
        assert_eq!(b.server.store().len(), 1);
        no_temp_files(&b).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_list_is_only_for_its_owner() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            require_auth_for_list: true,
            ..config()
        })
        .await;
        let alice = Keys::generate();
        let eve = Keys::generate();
        let data = blob(40, 100);
        assert_eq!(
            upload(&s, &alice, &data).await.status(),
            StatusCode::CREATED
        );
        let path = format!("/list/{}", alice.public_key().to_hex());

        let r = http().get(s.join(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", reason(&r));
        let r = http()
            .get(s.join(&path))
            .header("authorization", auth(&eve, Verb::List, &[], None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", reason(&r));
        // Alice's own token for another verb does not open it either.
        let r = http()
            .get(s.join(&path))
            .header("authorization", auth(&alice, Verb::Get, &[], None))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        // Our client signs a `list` token by its own key.
        let mine = BlossomClient::new(alice.clone())
            .list(&s.url, &alice.public_key())
            .await
            .unwrap();
        assert_eq!(
            mine.iter().map(|d| d.sha256).collect::<Vec<Sha256Hex>>(),
            vec![sha(&data)]
        );
        let err = BlossomClient::new(eve.clone())
            .list(&s.url, &alice.public_key())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 403, .. }),
            "{err}"
        );
    })
    .await
    .unwrap();
}
