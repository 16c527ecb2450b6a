//! Our client and raw HTTP against our server on 127.0.0.1: the happy paths, every refusal
//! with its status and `X-Reason` (and nothing stored afterwards), concurrency, ranges,
//! mirroring, list/delete ownership and persistence across a reopen.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use quorum_blossom::client::ServerOutcome;
use quorum_blossom::error::Refusal;
use quorum_blossom::{BlossomClient, BlossomConfig, ClientError};
use quorum_proto::blossom::{AuthBuilder, BlobDescriptor, Sha256Hex, Verb, encode_header};
use quorum_proto::nostr::{JsonUtil, Keys, Timestamp};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn reason(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-reason")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Asserts that nothing was stored and no temp file is left.
async fn assert_nothing_stored(s: &TestServer) {
    // The server may still be unwinding a request whose response we already have.
    for _ in 0..100 {
        if s.server.store().is_empty() && s.temp_files() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "left behind: {} blobs, {} temp files",
        s.server.store().len(),
        s.temp_files()
    );
}

async fn put_upload(
    s: &TestServer,
    body: Vec<u8>,
    sha_header: Option<Sha256Hex>,
    auth_header: Option<String>,
) -> reqwest::Response {
    let mut req = http().put(s.join("/upload")).body(body);
    if let Some(h) = sha_header {
        req = req.header("x-sha-256", h.to_hex());
    }
    if let Some(a) = auth_header {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_get_head_download_roundtrip() {
    init_tracing();
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let keys = Keys::generate();
        let client = BlossomClient::new(keys.clone());
        let dir = tempfile::tempdir().unwrap();
        let data = blob(1, 3 * 1024 * 1024 + 17);
        let path = write_file(dir.path(), "artifact.tar.gz", &data);
        let h = sha(&data);

        let up = client.upload_file(&s.url, &path).await.unwrap();
        assert!(up.created);
        assert_eq!(up.descriptor.sha256, h);
        assert_eq!(up.descriptor.size, data.len() as u64);
        assert_eq!(up.descriptor.mime_type, "application/gzip");
        assert_eq!(up.descriptor.url, format!("{}{h}.gz", s.url));
        assert!(up.descriptor.uploaded > 0);

        // Again: 200, same descriptor.
        let again = client.upload_file(&s.url, &path).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.descriptor, up.descriptor);

        let r = http().get(&up.descriptor.url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/gzip");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

        let r = http().head(s.join(&format!("/{h}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-length"],
            data.len().to_string().as_str()
        );
        assert_eq!(r.headers()["content-type"], "application/gzip");
        assert_eq!(r.headers()["accept-ranges"], "bytes");

        assert!(client.has(&s.url, h).await.unwrap());
        assert!(!client.has(&s.url, sha(b"nope")).await.unwrap());

        let dest = dir.path().join("out/copy.bin");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let n = client.download(&s.url, h, &dest).await.unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), data);

        // 404 and 400 on GET.
        let r = http()
            .get(s.join(&format!("/{}", sha(b"x"))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let r = http().get(s.join("/not-a-hash")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(!reason(&r).is_empty());
        assert_eq!(s.temp_files(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_with_wrong_hash_leaves_nothing() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let keys = Keys::generate();
        let client = BlossomClient::new(keys);
        let dir = tempfile::tempdir().unwrap();
        let data = blob(2, 100_000);
        let path = write_file(dir.path(), "a.bin", &data);
        let up = client.upload_file(&s.url, &path).await.unwrap();

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("x");
        let url = url::Url::parse(&up.descriptor.url).unwrap();
        let wrong = sha(b"something else");
        match client.download_url(&url, wrong, &dest).await {
            Err(ClientError::HashMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha(&data));
            }
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        // 404 is reported with its status.
        let err = client.download(&s.url, wrong, &dest).await.unwrap_err();
        assert_eq!(err.status(), Some(404));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_and_preflight_options() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let keys = Keys::generate();
        let data = blob(3, 10_000);
        let h = sha(&data);
        let r = put_upload(
            &s,
            data.clone(),
            Some(h),
            Some(auth(&keys, Verb::Upload, &[h], None)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let url = s.join(&format!("/{h}.bin"));

        let get = |range: &'static str| http().get(url.clone()).header("range", range).send();
        let r = get("bytes=0-9").await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"], "bytes 0-9/10000");
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..10]);

        let r = get("bytes=-5").await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["content-range"], "bytes 9995-9999/10000");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[9995..]);

        let r = get("bytes=9000-").await.unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[9000..]);

        let r = get("bytes=10000-").await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()["content-range"], "bytes */10000");
        assert!(!reason(&r).is_empty());

        let r = http()
            .request(reqwest::Method::OPTIONS, s.join("/upload"))
            .header("origin", "https://example.org")
            .header("access-control-request-method", "PUT")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let headers = r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(headers.contains("Authorization") && headers.contains('*'));
        let methods = r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        for m in ["GET", "HEAD", "PUT", "DELETE"] {
            assert!(methods.contains(m));
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_name_the_problem_and_store_nothing() {
    init_tracing();
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            max_blob_bytes: 1024,
            ..config()
        })
        .await;
        let host = s.host();
        let keys = Keys::generate();
        let data = blob(4, 800);
        let h = sha(&data);
        let other = sha(b"other");

        let cases: Vec<Case> = vec![
            (
                "wrong hash",
                Some(other),
                Some(auth(&keys, Verb::Upload, &[other], Some(&host))),
                data.clone(),
                409,
                "does not match",
            ),
            (
                "missing auth",
                Some(h),
                None,
                data.clone(),
                401,
                "authorization required",
            ),
            (
                "expired",
                Some(h),
                Some(encode_header(
                    &AuthBuilder::new(Verb::Upload, Timestamp::now() - 10)
                        .created_at(Timestamp::now() - 100)
                        .hash(h)
                        .into_event_builder()
                        .sign_with_keys(&keys)
                        .unwrap(),
                )),
                data.clone(),
                401,
                "expired",
            ),
            (
                "wrong verb",
                Some(h),
                Some(auth(&keys, Verb::Delete, &[h], Some(&host))),
                data.clone(),
                403,
                "not for this action",
            ),
            (
                "other server",
                Some(h),
                Some(auth(&keys, Verb::Upload, &[h], Some("cdn.example.com"))),
                data.clone(),
                403,
                "another server",
            ),
            (
                "x does not match",
                Some(h),
                Some(auth(&keys, Verb::Upload, &[other], Some(&host))),
                data.clone(),
                403,
                "does not authorise this blob",
            ),
            (
                "x does not match the body (no X-SHA-256)",
                None,
                Some(auth(&keys, Verb::Upload, &[other], Some(&host))),
                data.clone(),
                403,
                "does not authorise this blob",
            ),
            (
                "too large by Content-Length",
                Some(sha(&blob(5, 2048))),
                Some(auth(&keys, Verb::Upload, &[sha(&blob(5, 2048))], None)),
                blob(5, 2048),
                413,
                "too large",
            ),
            (
                "bad base64",
                Some(h),
                Some("Nostr !!!not-base64!!!".into()),
                data.clone(),
                401,
                "base64",
            ),
            (
                "not nostr",
                Some(h),
                Some("Bearer abc".into()),
                data.clone(),
                401,
                "scheme",
            ),
            (
                "not json",
                Some(h),
                Some("Nostr aGVsbG8".into()),
                data.clone(),
                401,
                "not a Nostr event",
            ),
            (
                "bad signature",
                Some(h),
                Some({
                    let good = AuthBuilder::new(Verb::Upload, Timestamp::now() + 60)
                        .hash(h)
                        .into_event_builder()
                        .sign_with_keys(&keys)
                        .unwrap();
                    let forged = AuthBuilder::new(Verb::Upload, Timestamp::now() + 60)
                        .hash(other)
                        .into_event_builder()
                        .sign_with_keys(&keys)
                        .unwrap();
                    let mut json: serde_json::Value =
                        serde_json::from_str(&good.as_json()).unwrap();
                    json["sig"] = forged.sig.to_string().into();
                    format!("Nostr {}", base64_url(json.to_string().as_bytes()))
                }),
                data.clone(),
                401,
                "signature",
            ),
            (
                "malformed X-SHA-256",
                None,
                Some(auth(&keys, Verb::Upload, &[h], None)),
                data.clone(),
                400,
                "X-SHA-256",
            ),
        ];
        for (name, sha_header, auth_header, body, status, why) in cases {
            let mut req = http().put(s.join("/upload")).body(body);
            if name == "malformed X-SHA-256" {
                req = req.header("x-sha-256", "ABC");
            } else if let Some(h) = sha_header {
                req = req.header("x-sha-256", h.to_hex());
            }
            if let Some(a) = auth_header {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{name}: {}", reason(&r));
            assert!(
                reason(&r).contains(why),
                "{name}: X-Reason {:?} does not mention {why:?}",
                reason(&r)
            );
            assert_eq!(r.headers()["access-control-allow-origin"], "*", "{name}");
            assert_nothing_stored(&s).await;
        }

        // 411: no Content-Length (a chunked body).
        let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from(
            data.clone(),
        ))]);
        let r = http()
            .put(s.join("/upload"))
            .header("x-sha-256", h.to_hex())
            .header("authorization", auth(&keys, Verb::Upload, &[h], None))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::LENGTH_REQUIRED, "{}", reason(&r));
        assert_nothing_stored(&s).await;

        // And a good upload still works afterwards.
        let r = put_upload(
            &s,
            data.clone(),
            Some(h),
            Some(auth(&keys, Verb::Upload, &[h], Some(&host))),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    })
    .await
    .unwrap();
}

/// name, X-SHA-256, Authorization, body, expected status, word expected in X-Reason.
type Case = (
    &'static str,
    Option<Sha256Hex>,
    Option<String>,
    Vec<u8>,
    u16,
    &'static str,
);

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A body that lies about its length, streamed past the limit, reaching the router directly
/// (hyper would enforce the framing on a real connection; the limit must hold regardless).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_streamed_body_is_cut_off_at_the_limit() {
    use tower::ServiceExt;
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            max_blob_bytes: 1024,
            ..config()
        })
        .await;
        let keys = Keys::generate();
        let chunks = (0..4).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(blob(i, 2048))));
        let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
        let h = sha(b"whatever");
        let request = axum::http::Request::put("/upload")
            .header("host", s.url.authority())
            .header("content-length", "100")
            .header("x-sha-256", h.to_hex())
            .header("authorization", auth(&keys, Verb::Upload, &[h], None))
            .body(body)
            .unwrap();
        let response = s.server.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            response.headers()["x-reason"]
                .to_str()
                .unwrap()
                .contains("too large")
        );
        assert_nothing_stored(&s).await;

        // Longer than declared but under the limit: 400.
        let body =
            axum::body::Body::from_stream(futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(bytes::Bytes::from(blob(9, 300))),
            ]));
        let request = axum::http::Request::put("/upload")
            .header("host", s.url.authority())
            .header("content-length", "100")
            .header("x-sha-256", h.to_hex())
            .header("authorization", auth(&keys, Verb::Upload, &[h], None))
            .body(body)
            .unwrap();
        let response = s.server.router().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_nothing_stored(&s).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upload_leaves_nothing() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let keys = Keys::generate();
        let data = blob(6, 4 * 1024 * 1024);
        let h = sha(&data);
        let mut conn = tokio::net::TcpStream::connect(s.url.socket_addrs(|| None).unwrap()[0])
            .await
            .unwrap();
        let head = format!(
            "PUT /upload HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nX-SHA-256: {h}\r\nAuthorization: {}\r\n\r\n",
            s.url.authority(),
            data.len(),
            auth(&keys, Verb::Upload, &[h], None)
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&data[..data.len() / 2]).await.unwrap();
        conn.flush().await.unwrap();
        // Let the server start writing the temp file, then vanish.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(conn);
        assert_nothing_stored(&s).await;

        // The server keeps serving.
        let r = put_upload(&s, data.clone(), Some(h), Some(auth(&keys, Verb::Upload, &[h], None))).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_one_blob() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let dir = tempfile::tempdir().unwrap();
        let data = blob(7, 2 * 1024 * 1024 + 5);
        let path = write_file(dir.path(), "same.bin", &data);
        let keys: Vec<Keys> = (0..8).map(|_| Keys::generate()).collect();
        let uploads = keys.iter().map(|k| {
            let client = BlossomClient::new(k.clone());
            let url = s.url.clone();
            let path = path.clone();
            tokio::spawn(async move { client.upload_file(&url, &path).await })
        });
        let results: Vec<_> = futures_util::future::join_all(uploads).await;
        let results: Vec<_> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(results.iter().filter(|u| u.created).count(), 1);
        let first = &results[0].descriptor;
        assert!(results.iter().all(|u| &u.descriptor == first));
        let meta = s.server.store().get(&sha(&data)).unwrap();
        assert_eq!(meta.owners.len(), 8);
        assert_eq!(s.server.store().len(), 1);
        assert_eq!(s.temp_files(), 0);
        let on_disk = std::fs::read(s.server.store().blob_path(&sha(&data))).unwrap();
        assert_eq!(on_disk, data);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_between_two_servers() {
    timeout(TEST_TIMEOUT, async {
        let a = TestServer::start(config()).await;
        let b = TestServer::start(config()).await;
        let keys = Keys::generate();
        let client = BlossomClient::new(keys.clone());
        let dir = tempfile::tempdir().unwrap();
        let data = blob(8, 1_500_000);
        let path = write_file(dir.path(), "m.txt", &data);
        let h = sha(&data);
        let up = client.upload_file(&a.url, &path).await.unwrap();
        let source = url::Url::parse(&up.descriptor.url).unwrap();

        let m = client.mirror(&b.url, &source, h).await.unwrap();
        assert!(m.created);
        assert_eq!(m.descriptor.sha256, h);
        assert_eq!(m.descriptor.size, data.len() as u64);
        assert_eq!(m.descriptor.mime_type, "text/plain");
        assert!(m.descriptor.url.starts_with(b.url.as_str()));
        assert!(
            b.server
                .store()
                .get(&h)
                .unwrap()
                .is_owner(&keys.public_key())
        );
        // Mirroring again: already there, 200.
        assert!(!client.mirror(&b.url, &source, h).await.unwrap().created);

        // A token for another hash: 409 after fetching (a URL without the hash in it, so
        // the server cannot short-cut).
        let c = TestServer::start(config()).await;
        let other = sha(b"not it");
        let r = http()
            .put(c.join("/mirror"))
            .header("authorization", auth(&keys, Verb::Upload, &[other], None))
            .json(&serde_json::json!({ "url": a.join(&format!("/{h}")).as_str() }))
            .send()
            .await
            .unwrap();
        // The URL names `h`, which the token does not cover: fetched, hashed, refused.
        assert_eq!(r.status(), StatusCode::CONFLICT, "{}", reason(&r));
        assert_nothing_stored(&c).await;

        // Origin 404: 502.
        let missing = sha(b"missing");
        let err = client
            .mirror(&c.url, &a.join(&format!("/{missing}")), missing)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(502), "{err}");
        // Garbage body: 400.
        let r = http()
            .put(c.join("/mirror"))
            .header("authorization", auth(&keys, Verb::Upload, &[h], None))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_nothing_stored(&c).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_refuses_loopback_by_default() {
    timeout(TEST_TIMEOUT, async {
        let a = TestServer::start(config()).await;
        let strict = TestServer::start(BlossomConfig {
            allow_private_mirror_targets: false,
            ..config()
        })
        .await;
        let keys = Keys::generate();
        let client = BlossomClient::new(keys.clone());
        let dir = tempfile::tempdir().unwrap();
        let data = blob(9, 1000);
        let path = write_file(dir.path(), "x.bin", &data);
        let up = client.upload_file(&a.url, &path).await.unwrap();
        for source in [
            up.descriptor.url.clone(),
            up.descriptor.url.replace("127.0.0.1", "localhost"),
        ] {
            let err = client
                .mirror(&strict.url, &url::Url::parse(&source).unwrap(), sha(&data))
                .await
                .unwrap_err();
            match &err {
                ClientError::Status {
                    status: 403,
                    reason: Some(r),
                    ..
                } => {
                    assert!(r.contains("loopback"), "{r}")
                }
                other => panic!("expected 403, got {other:?}"),
            }
        }
        // Unsupported scheme.
        let err = client
            .mirror(
                &strict.url,
                &url::Url::parse("file:///etc/passwd").unwrap(),
                sha(&data),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400));
        assert_nothing_stored(&strict).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_delete_respect_owners() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(config()).await;
        let alice = Keys::generate();
        let bob = Keys::generate();
        let ca = BlossomClient::new(alice.clone());
        let cb = BlossomClient::new(bob.clone());
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = Vec::new();
        for i in 0..3u64 {
            let data = blob(100 + i, 1000 + i as usize);
            let p = write_file(dir.path(), &format!("{i}.bin"), &data);
            hashes.push(ca.upload_file(&s.url, &p).await.unwrap().descriptor.sha256);
        }
        let shared = write_file(dir.path(), "shared.bin", &blob(200, 500));
        let shared_hash = ca
            .upload_file(&s.url, &shared)
            .await
            .unwrap()
            .descriptor
            .sha256;
        cb.upload_file(&s.url, &shared).await.unwrap();

        let list = ca.list(&s.url, &alice.public_key()).await.unwrap();
        assert_eq!(list.len(), 4);
        let listed: HashSet<_> = list.iter().map(|d| d.sha256).collect();
        assert!(hashes.iter().all(|h| listed.contains(h)));
        assert!(list.windows(2).all(|w| w[0].uploaded >= w[1].uploaded));
        assert_eq!(cb.list(&s.url, &bob.public_key()).await.unwrap().len(), 1);

        // Paging with limit + cursor covers everything once.
        let page1: Vec<BlobDescriptor> = http()
            .get(s.join(&format!("/list/{}?limit=3", alice.public_key().to_hex())))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page1.len(), 3);
        let page2: Vec<BlobDescriptor> = http()
            .get(s.join(&format!(
                "/list/{}?limit=3&cursor={}",
                alice.public_key().to_hex(),
                page1[2].sha256
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page2.len(), 1);
        assert!(!page1.iter().any(|d| d.sha256 == page2[0].sha256));
        let future = Timestamp::now().as_secs() + 3600;
        let none: Vec<BlobDescriptor> = http()
            .get(s.join(&format!(
                "/list/{}?since={future}",
                alice.public_key().to_hex()
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(none.is_empty());
        let r = http().get(s.join("/list/not-a-key")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // Bob cannot delete Alice's blob, even with a valid delete token.
        let err = cb.delete(&s.url, hashes[0]).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Status { status: 403, .. }),
            "{err}"
        );
        assert!(ca.has(&s.url, hashes[0]).await.unwrap());
        // Missing token: 401.
        let r = http()
            .delete(s.join(&format!("/{}", hashes[0])))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // A delete token for another hash: 403.
        let r = http()
            .delete(s.join(&format!("/{}", hashes[0])))
            .header(
                "authorization",
                auth(&alice, Verb::Delete, &[hashes[1]], None),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        ca.delete(&s.url, hashes[0]).await.unwrap();
        assert!(!ca.has(&s.url, hashes[0]).await.unwrap());
        assert!(!s.server.store().blob_path(&hashes[0]).exists());
        assert_eq!(
            ca.delete(&s.url, hashes[0]).await.unwrap_err().status(),
            Some(404)
        );

        // Shared blob: Alice's delete keeps it for Bob.
        ca.delete(&s.url, shared_hash).await.unwrap();
        assert!(ca.has(&s.url, shared_hash).await.unwrap());
        cb.delete(&s.url, shared_hash).await.unwrap();
        assert!(!ca.has(&s.url, shared_hash).await.unwrap());
        assert_eq!(ca.list(&s.url, &alice.public_key()).await.unwrap().len(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_across_reopen() {
    timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let durable = BlossomConfig {
            fsync: true,
            ..config()
        };
        let keys = Keys::generate();
        let client = BlossomClient::new(keys.clone());
        let files = tempfile::tempdir().unwrap();
        let data = blob(10, 50_000);
        let path = write_file(files.path(), "p.json", &data);

        let s = TestServer::start_in(durable.clone(), dir.path()).await;
        let up = client.upload_file(&s.url, &path).await.unwrap();
        s.stop().await;

        // Leftovers of a crashed upload and an orphan sidecar are cleaned at open.
        std::fs::write(dir.path().join("tmp/upload-crashed.part"), b"junk").unwrap();
        let orphan = sha(b"orphan");
        let shard = dir.path().join("blobs").join(&orphan.to_hex()[..2]);
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::write(shard.join(format!("{orphan}.json")), b"{}").unwrap();

        let s = TestServer::start_in(durable, dir.path()).await;
        assert_eq!(s.temp_files(), 0);
        assert_eq!(s.server.store().len(), 1);
        assert!(!shard.join(format!("{orphan}.json")).exists());
        let meta = s.server.store().get(&up.descriptor.sha256).unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.mime_type, "application/json");
        assert_eq!(meta.uploaded, up.descriptor.uploaded);
        assert!(meta.is_owner(&keys.public_key()));
        let list = client.list(&s.url, &keys.public_key()).await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].sha256, up.descriptor.sha256);
        let out = files.path().join("back");
        client
            .download(&s.url, up.descriptor.sha256, &out)
            .await
            .unwrap();
        assert_eq!(std::fs::read(out).unwrap(), data);
        s.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bud06_upload_requirements() {
    timeout(TEST_TIMEOUT, async {
        let allowed = Keys::generate();
        let stranger = Keys::generate();
        let s = TestServer::start(BlossomConfig {
            max_blob_bytes: 1000,
            allowed_uploaders: Some([allowed.public_key()].into_iter().collect()),
            ..config()
        })
        .await;
        let h = sha(b"x");
        let ok = BlossomClient::new(allowed.clone());
        ok.preflight(&s.url, h, 1000, Some("application/pdf"))
            .await
            .unwrap();

        let err = ok.preflight(&s.url, h, 1001, None).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Status {
                    status: 413,
                    refusal: Refusal::TooLarge,
                    reason: Some(_),
                    ..
                }
            ),
            "{err}"
        );
        let err = BlossomClient::new(stranger.clone())
            .preflight(&s.url, h, 10, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Status {
                    status: 403,
                    refusal: Refusal::Forbidden,
                    ..
                }
            ),
            "{err}"
        );

        let head = |headers: Vec<(&'static str, String)>| {
            let mut r = http().head(s.join("/upload"));
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.send()
        };
        let r = head(vec![
            ("x-sha-256", h.to_hex()),
            ("x-content-length", "10".into()),
        ])
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!reason(&r).is_empty());
        let r = head(vec![("x-sha-256", h.to_hex())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::LENGTH_REQUIRED);
        let r = head(vec![("x-content-length", "10".into())]).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = head(vec![
            ("x-sha-256", h.to_hex()),
            ("x-content-length", "ten".into()),
        ])
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = head(vec![
            ("x-sha-256", h.to_hex()),
            ("x-content-length", "10".into()),
            (
                "authorization",
                auth(&allowed, Verb::Upload, &[sha(b"y")], None),
            ),
        ])
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        // The allow-list applies to PUT too.
        let data = b"hello".to_vec();
        let r = put_upload(
            &s,
            data.clone(),
            Some(sha(&data)),
            Some(auth(&stranger, Verb::Upload, &[sha(&data)], None)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_nothing_stored(&s).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_to_many_reports_each_server() {
    timeout(TEST_TIMEOUT, async {
        let a = TestServer::start(config()).await;
        let b = TestServer::start(config()).await;
        let small = TestServer::start(BlossomConfig {
            max_blob_bytes: 10,
            ..config()
        })
        .await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let u = url::Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
            drop(l);
            u
        };
        let client = BlossomClient::new(Keys::generate());
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "many.bin", &blob(11, 5000));
        let servers = vec![
            a.url.clone(),
            b.url.clone(),
            closed.clone(),
            small.url.clone(),
        ];
        let out = client.upload_to_many(&servers, &path).await.unwrap();
        assert_eq!(out.len(), 4);
        assert!(out[0].is_stored() && out[1].is_stored());
        assert!(
            matches!(&out[2], ServerOutcome::Unreachable { server, .. } if *server == closed),
            "{:?}",
            out[2]
        );
        match &out[3] {
            ServerOutcome::Refused {
                status: 413,
                refusal: Refusal::TooLarge,
                reason: Some(r),
                ..
            } => {
                assert!(r.contains("too large"))
            }
            other => panic!("expected 413, got {other:?}"),
        }
        let err = client
            .upload_to_many(&servers, &dir.path().join("missing"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Io { .. }));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_auth_and_anonymous_upload_policies() {
    timeout(TEST_TIMEOUT, async {
        let s = TestServer::start(BlossomConfig {
            require_auth_for_get: true,
            require_auth_for_upload: false,
            ..config()
        })
        .await;
        let keys = Keys::generate();
        let data = b"anonymous bytes".to_vec();
        let h = sha(&data);
        // Anonymous upload allowed...
        let r = put_upload(&s, data.clone(), Some(h), None).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        // ...but a bad token is never silently downgraded to anonymous.
        let r = put_upload(&s, data.clone(), Some(h), Some("Nostr e30".into())).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

        let url = s.join(&format!("/{h}"));
        let r = http().get(url.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = http()
            .get(url.clone())
            .header(
                "authorization",
                auth(&keys, Verb::Get, &[], Some(&s.host())),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);
        let r = http()
            .get(url.clone())
            .header(
                "authorization",
                auth(&keys, Verb::Get, &[sha(b"other")], None),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        // Claiming an anonymous blob (same bytes with a token) and deleting it removes the
        // claim, not the anonymous upload.
        let r = put_upload(
            &s,
            data.clone(),
            Some(h),
            Some(auth(&keys, Verb::Upload, &[h], None)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = http()
            .delete(s.join(&format!("/{h}")))
            .header("authorization", auth(&keys, Verb::Delete, &[h], None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(s.server.store().contains(&h));

        // Our client retries with a `get` token when it meets a 401.
        let client = BlossomClient::new(keys.clone());
        assert!(client.has(&s.url, h).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        client
            .download(&s.url, h, &dir.path().join("d"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), data);
        // Standard base64 with padding (pre-2026 BUD-11) is accepted too.
        let event = AuthBuilder::new(Verb::Get, Timestamp::now() + 60)
            .into_event_builder()
            .sign_with_keys(&keys)
            .unwrap();
        use base64::Engine;
        let padded = format!(
            "Nostr {}",
            base64::engine::general_purpose::STANDARD.encode(event.as_json())
        );
        let r = http()
            .get(url)
            .header("authorization", padded)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    })
    .await
    .unwrap();
}
