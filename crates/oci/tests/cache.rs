//! The image cache against a real Blossom server on loopback: fetch once for two jobs, refuse
//! and name a corrupted blob, evict over the cap (never an image in use), and survive a fetch
//! killed half-way without ever showing a half image.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quorum_blossom::client::BlossomClient;
use quorum_blossom::{BlossomConfig, BlossomServer};
use quorum_oci::build::{BuiltImage, build, build_with, push};
use quorum_oci::unpack::Compression;
use quorum_oci::{Fetcher, ImageCache, ImageRef, OciError};
use quorum_proto::nostr::Keys;
use quorum_testkit::third_party::skopeo_ok;
use tokio::sync::oneshot;

struct Blossom {
    url: url::Url,
    _stop: oneshot::Sender<()>,
}

async fn blossom(dir: &Path) -> Blossom {
    blossom_with(dir, None).await
}

async fn blossom_with(dir: &Path, oci: Option<&str>) -> Blossom {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let server = BlossomServer::open(
        BlossomConfig {
            public_url: Some(url.clone()),
            oci_credentials: oci.and_then(quorum_blossom::oci::OciCredentials::parse),
            ..BlossomConfig::default()
        },
        &dir.join("blossom"),
    )
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Blossom { url, _stop: stop }
}

/// A root filesystem with an os-release naming `id`, and `extra` bytes of incompressible
/// data spread over files (to make unpacking take a while).
fn rootfs(dir: &Path, id: &str, extra: usize) -> PathBuf {
    let root = dir.join(format!("rootfs-{id}"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::write(root.join("etc/os-release"), format!("ID={id}\n")).unwrap();
    std::fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    if extra > 0 {
        std::fs::create_dir_all(root.join("data")).unwrap();
        let mut state = 0x9e3779b97f4a7c15u64;
        let chunk = 1 << 20;
        for i in 0..extra.div_ceil(chunk) {
            let bytes: Vec<u8> = (0..chunk)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            std::fs::write(root.join(format!("data/{i:04}")), bytes).unwrap();
        }
    }
    root
}

async fn pushed(dir: &Path, server: &url::Url, id: &str, extra: usize) -> (BuiltImage, ImageRef) {
    let root = rootfs(dir, id, extra);
    let out = dir.join(format!("blobs-{id}"));
    let image = tokio::task::spawn_blocking(move || build(&root, &out))
        .await
        .unwrap()
        .unwrap();
    push(
        &image,
        &BlossomClient::new(Keys::generate()),
        std::slice::from_ref(server),
    )
    .await
    .unwrap();
    // A registry that does not exist: the blobs must come from Blossom.
    let reference = image.reference(&format!("127.0.0.1:9/test/{id}")).unwrap();
    (image, reference)
}

/// A Blossom-like server on loopback serving `blobs` (sha256 hex, file) by `GET /<hex>`, with
/// the last byte of blob `bad` flipped.
async fn hostile_server(blobs: Vec<(String, PathBuf)>, bad: String) -> url::Url {
    use axum::extract::Path as UrlPath;
    let blobs = Arc::new(blobs);
    let app = axum::Router::new().route(
        "/{hash}",
        axum::routing::get(move |UrlPath(hash): UrlPath<String>| {
            let (blobs, bad) = (blobs.clone(), bad.clone());
            async move {
                let Some((_, path)) = blobs.iter().find(|(h, _)| *h == hash) else {
                    return Err(axum::http::StatusCode::NOT_FOUND);
                };
                let mut bytes = std::fs::read(path).unwrap();
                if hash == bad {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 1;
                }
                Ok(bytes)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn cache(dir: &Path, server: &url::Url, cap: u64) -> ImageCache {
    ImageCache::open(dir, cap, Fetcher::new(vec![server.clone()], Vec::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_on_one_image_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (_, reference) = pushed(dir.path(), &server.url, "alpha", 0).await;
    let cache = Arc::new(cache(&dir.path().join("cache"), &server.url, 1 << 30));
    let (a, b) = tokio::join!(cache.get(&reference), cache.get(&reference));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.fetched(), b.fetched()].iter().filter(|f| **f).count(),
        1,
        "exactly one of two concurrent jobs fetched"
    );
    assert_eq!(a.root(), b.root());
    assert_eq!(
        std::fs::read_to_string(a.root().join("etc/os-release")).unwrap(),
        "ID=alpha\n"
    );
    assert_eq!(
        std::fs::read_link(a.root().join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(a.env().iter().any(|(k, _)| k == "PATH"));
    drop((a, b));
    // A third job, later: from the cache.
    let c = cache.get(&reference).await.unwrap();
    assert!(!c.fetched());
    assert_eq!(cache.list().len(), 1);
}

/// `quorum image push --compression`: each kind of layer is deterministic (the same tree
/// twice, the same digest), says what it is in the manifest, carries the same diff id, and
/// unpacks to the same tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_compression_is_deterministic_and_unpacks_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let root = rootfs(dir.path(), "kinds", 3 << 20);
    std::fs::write(root.join("etc/motd"), "compressible ".repeat(10_000)).unwrap();
    let mut diff_ids = Vec::new();
    let mut manifests = Vec::new();
    for (compression, media) in [
        (
            Compression::Zstd,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (Compression::None, "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let made = |n: &str| {
            let (root, out) = (
                root.clone(),
                dir.path().join(format!("{compression:?}-{n}")),
            );
            tokio::task::spawn_blocking(move || build_with(&root, &out, compression))
        };
        let image = made("a").await.unwrap().unwrap();
        let again = made("b").await.unwrap().unwrap();
        assert_eq!(
            image.manifest, again.manifest,
            "{compression:?} is deterministic"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&image.blobs.last().unwrap().path).unwrap())
                .unwrap();
        assert_eq!(manifest["layers"][0]["mediaType"], media);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&image.blobs[0].path).unwrap()).unwrap();
        diff_ids.push(config["rootfs"]["diff_ids"][0].clone());
        manifests.push(image.manifest.clone());
        push(
            &image,
            &BlossomClient::new(Keys::generate()),
            std::slice::from_ref(&server.url),
        )
        .await
        .unwrap();
        let reference = image.reference("127.0.0.1:9/test/kinds").unwrap();
        let cache = cache(
            &dir.path().join(format!("cache-{compression:?}")),
            &server.url,
            1 << 30,
        );
        let lease = cache.get(&reference).await.unwrap();
        assert!(lease.fetched());
        for file in [
            "etc/os-release",
            "etc/motd",
            "usr/bin/tool",
            "data/0000",
            "data/0002",
        ] {
            assert!(
                std::fs::read(lease.root().join(file)).unwrap()
                    == std::fs::read(root.join(file)).unwrap(),
                "{compression:?}: {file} differs"
            );
        }
    }
    assert!(diff_ids.iter().all(|d| *d == diff_ids[0]), "{diff_ids:?}");
    manifests.dedup();
    assert_eq!(manifests.len(), 3, "three kinds of layer, three images");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (image, reference) = pushed(dir.path(), &server.url, "beta", 0).await;
    // A hostile server that has every blob, with one byte changed in the layer.
    let blobs = image
        .blobs
        .iter()
        .map(|b| (b.digest.hex().to_owned(), b.path.clone()))
        .collect();
    let hostile = hostile_server(blobs, image.blobs[1].digest.hex().to_owned()).await;

    let cache = cache(&dir.path().join("cache"), &hostile, 1 << 30);
    let err = cache.get(&reference).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{text}");
    assert!(
        text.contains(&image.blobs[1].digest.to_string()),
        "names the blob: {text}"
    );
    assert!(text.contains(hostile.as_str()), "names the server: {text}");
    assert!(cache.list().is_empty(), "nothing was cached");
    let leftovers = std::fs::read_dir(cache.dir().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "the failed fetch left nothing behind");

    // With an honest server after the hostile one, the image is fetched from it.
    let both = ImageCache::open(
        dir.path().join("cache2"),
        1 << 30,
        Fetcher::new(vec![hostile.clone(), server.url.clone()], Vec::new()),
    )
    .unwrap();
    let lease = both.get(&reference).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(lease.root().join("etc/os-release")).unwrap(),
        "ID=beta\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_over_its_cap_evicts_the_least_recently_used_image_not_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let mut refs = Vec::new();
    for id in ["one", "two", "three"] {
        refs.push(pushed(dir.path(), &server.url, id, 2 << 20).await.1);
    }
    // Room for two images of ~2 MiB.
    let cache = cache(&dir.path().join("cache"), &server.url, 5 << 20);
    let one = cache.get(&refs[0]).await.unwrap();
    drop(cache.get(&refs[1]).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // `one` is in use: fetching a third evicts `two` although `one` is older.
    let three = cache.get(&refs[2]).await.unwrap();
    let held: Vec<String> = cache.list().iter().map(|c| c.digest.to_string()).collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.contains(&refs[0].digest().to_string()), "in use, kept");
    assert!(
        held.contains(&refs[2].digest().to_string()),
        "just fetched, kept"
    );
    assert!(
        one.root().join("etc/os-release").exists(),
        "a lease's root stays"
    );
    drop((one, three));
    // Now `one` is least recently used and not in use: fetching `two` again evicts it.
    let two = cache.get(&refs[1]).await.unwrap();
    assert!(two.fetched(), "it had been evicted");
    let held: Vec<String> = cache.list().iter().map(|c| c.digest.to_string()).collect();
    assert!(!held.contains(&refs[0].digest().to_string()), "{held:?}");
    let total: u64 = cache.list().iter().map(|c| c.size).sum();
    assert!(total <= 5 << 20, "{total}");
}

/// The child half of the next test: fetch the image named in the environment, then stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_fetch() {
    let (Ok(dir), Ok(server), Ok(reference)) = (
        std::env::var("QUORUM_OCI_CHILD_CACHE"),
        std::env::var("QUORUM_OCI_CHILD_SERVER"),
        std::env::var("QUORUM_OCI_CHILD_IMAGE"),
    ) else {
        return; // not started as the child
    };
    let cache = cache(Path::new(&dir), &url::Url::parse(&server).unwrap(), 1 << 34);
    let _ = cache.get(&ImageRef::parse(&reference).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_killed_half_way_leaves_no_image_that_a_later_job_uses() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (_, reference) = pushed(dir.path(), &server.url, "big", 48 << 20).await;
    let cache_dir = dir.path().join("cache");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_fetch", "--nocapture", "--test-threads=1"])
        .env("QUORUM_OCI_CHILD_CACHE", &cache_dir)
        .env("QUORUM_OCI_CHILD_SERVER", server.url.as_str())
        .env("QUORUM_OCI_CHILD_IMAGE", reference.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child is unpacking (files appear under tmp/<hex>.*/rootfs/data), then
    // kill it there.
    let tmp = cache_dir.join("tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let unpacking = loop {
        let found = std::fs::read_dir(&tmp).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("rootfs/data"))
                .find(|p| p.is_dir() && std::fs::read_dir(p).is_ok_and(|d| d.count() > 2))
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never started unpacking"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        unpacking.exists(),
        "the half-unpacked root is there, under tmp/"
    );
    let image_dir = cache_dir.join("images").join(reference.digest().hex());
    assert!(!image_dir.exists(), "no image was published half-way");

    let cache = cache(&cache_dir, &server.url, 1 << 34);
    assert!(cache.list().is_empty(), "the cache lists no image");
    let lease = cache.get(&reference).await.unwrap();
    assert!(lease.fetched(), "a later job fetches the whole image again");
    assert_eq!(
        std::fs::read_dir(lease.root().join("data"))
            .unwrap()
            .count(),
        48
    );
    assert!(!unpacking.exists(), "the leftover was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_blossom_servers_the_image_comes_from_the_registry_in_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (_, pushed) = pushed(dir.path(), &server.url, "gamma", 0).await;
    // The same digest, named at the Blossom server's own OCI registry API (`/v2/`).
    let host = format!(
        "{}:{}",
        server.url.host_str().unwrap(),
        server.url.port().unwrap()
    );
    let mut reference = ImageRef::parse(&format!("{host}/test/gamma@{}", pushed.digest())).unwrap();
    let cache = ImageCache::open(
        dir.path().join("cache"),
        1 << 30,
        Fetcher::new(Vec::new(), Vec::new()),
    )
    .unwrap();
    let lease = cache.get(&reference).await.unwrap();
    assert!(lease.fetched());
    assert_eq!(
        std::fs::read_to_string(lease.root().join("etc/os-release")).unwrap(),
        "ID=gamma\n"
    );
    drop(lease);
    // A digest the registry does not have: an error that names it and where it looked.
    reference.digest = Some(quorum_oci::Digest::from_hex(&"3".repeat(64)).unwrap());
    let err = cache.get(&reference).await.unwrap_err().to_string();
    assert!(
        err.contains(&"3".repeat(64)) && err.contains(&host),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_named_by_tag_is_resolved_through_the_registry_then_fetched_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom_with(dir.path(), Some("ci:pw")).await;
    let (image, pinned) = pushed(dir.path(), &server.url, "delta", 0).await;
    // Tag the manifest at the server's registry API.
    let manifest = std::fs::read(&image.blobs.last().unwrap().path).unwrap();
    let put = reqwest::Client::new()
        .put(server.url.join("v2/test/delta/manifests/stable").unwrap())
        .basic_auth("ci", Some("pw"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let host = format!(
        "{}:{}",
        server.url.host_str().unwrap(),
        server.url.port().unwrap()
    );
    let tagged = ImageRef::parse_unpinned(&format!("{host}/test/delta:stable")).unwrap();
    assert!(tagged.digest.is_none());
    let cache = cache(&dir.path().join("cache"), &server.url, 1 << 30);
    let lease = cache.get(&tagged).await.unwrap();
    assert_eq!(
        lease.digest(),
        pinned.digest(),
        "the tag resolved to the pushed manifest"
    );
    assert_eq!(
        std::fs::read_to_string(lease.root().join("etc/os-release")).unwrap(),
        "ID=delta\n"
    );
}

/// Two layers; a server that serves the first right and the second corrupted, then an honest
/// one. The first layer was unpacked as it streamed (and never written to disk); when the
/// second turns out wrong, the root is rebuilt from both layers fetched again, and the image is
/// exactly lower + upper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_later_layer_rebuilds_the_root_from_every_layer_fetched_again() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (lower, _) = pushed(dir.path(), &server.url, "lower", 1 << 20).await;
    let (upper, _) = pushed(dir.path(), &server.url, "upper", 0).await;
    let (config, lower_layer, upper_layer) = (&lower.blobs[0], &lower.blobs[1], &upper.blobs[1]);
    let descriptor = |media: &str, blob: &quorum_oci::build::BlobFile| {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            blob.digest, blob.size
        )
    };
    // The layers' media type as `build` wrote it.
    let built: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lower.blobs[2].path).unwrap()).unwrap();
    let media = built["layers"][0]["mediaType"].as_str().unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{},{}]}}"#,
        descriptor("application/vnd.oci.image.config.v1+json", config),
        descriptor(media, lower_layer),
        descriptor(media, upper_layer),
    );
    let manifest_hex = hex::encode(sha2::Sha256::digest(manifest.as_bytes()));
    let manifest_path = dir.path().join(&manifest_hex);
    std::fs::write(&manifest_path, &manifest).unwrap();
    BlossomClient::new(Keys::generate())
        .upload_file(&server.url, &manifest_path)
        .await
        .unwrap();
    let reference =
        ImageRef::parse(&format!("127.0.0.1:9/test/two@sha256:{manifest_hex}")).unwrap();

    let mut blobs: Vec<(String, PathBuf)> = [config, lower_layer, upper_layer]
        .iter()
        .map(|b| (b.digest.hex().to_owned(), b.path.clone()))
        .collect();
    blobs.push((manifest_hex.clone(), manifest_path.clone()));
    let hostile = hostile_server(blobs, upper_layer.digest.hex().to_owned()).await;

    let cache = ImageCache::open(
        dir.path().join("cache"),
        1 << 30,
        Fetcher::new(vec![hostile, server.url.clone()], Vec::new()),
    )
    .unwrap();
    let lease = cache.get(&reference).await.unwrap();
    let root = lease.root();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
        "ID=upper\n",
        "the upper layer is applied last"
    );
    assert_eq!(
        std::fs::metadata(root.join("data/0000")).unwrap().len(),
        1 << 20,
        "the lower layer's files are there, whole"
    );
    assert_eq!(lease.meta().layers.len(), 2);
}

/// `quorum run --out` for an `oci:` artifact: the image whose manifest is a Blossom blob is
/// saved as an OCI image layout that skopeo reads; a server serving a corrupted layer leaves
/// no directory behind, and the error names the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_image_is_saved_as_a_layout_that_skopeo_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = blossom(dir.path()).await;
    let (image, _) = pushed(dir.path(), &server.url, "saved", 1 << 20).await;
    let manifest_url = server.url.join(image.manifest.hex()).unwrap();
    let out = dir.path().join("out/image");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let saved = quorum_oci::layout::save_blossom_layout(
        std::slice::from_ref(&manifest_url),
        &image.manifest,
        &out,
    )
    .await
    .unwrap();
    assert_eq!(saved.manifest, image.manifest);
    assert_eq!(saved.blobs.len(), image.blobs.len());
    assert!(
        saved
            .blobs
            .iter()
            .all(|b| b.path.starts_with(&out) && b.path.is_file()),
        "{:?}",
        saved.blobs
    );
    assert_eq!(
        skopeo_ok(&["inspect", "--raw", &format!("oci:{}", out.display())]),
        std::fs::read(&image.blobs.last().unwrap().path).unwrap()
    );
    // Saving over an existing directory is refused.
    assert!(
        quorum_oci::layout::save_blossom_layout(
            std::slice::from_ref(&manifest_url),
            &image.manifest,
            &out,
        )
        .await
        .is_err()
    );

    let layer = &image.blobs[1];
    let blobs: Vec<(String, PathBuf)> = image
        .blobs
        .iter()
        .map(|b| (b.digest.hex().to_owned(), b.path.clone()))
        .collect();
    let hostile = hostile_server(blobs, layer.digest.hex().to_owned()).await;
    let bad = dir.path().join("out/bad");
    let err = quorum_oci::layout::save_blossom_layout(
        &[hostile.join(image.manifest.hex()).unwrap()],
        &image.manifest,
        &bad,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(layer.digest.hex()), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("image")],
        "nothing half-written"
    );
}
