//! The OCI Distribution API at `/v2/` with real clients on loopback: `skopeo` pushes an image
//! and pulls it back byte-identical (by tag and by digest), and the very manifest is the
//! Blossom blob `GET /<sha256>` serves; chunked uploads and cross-repository mounts work over
//! plain HTTP; a corrupted blob, a wrong digest, a manifest naming a missing blob and an
//! unauthenticated push are refused with the spec's error codes.

mod common;

use std::path::{Path, PathBuf};

use common::{TestServer, config};
use quorum_blossom::oci::OciCredentials;
use quorum_testkit::third_party::skopeo;
use serde_json::Value;
use sha2::Digest;

const USER: &str = "ci";
const PASSWORD: &str = "s3cret-push";

async fn server() -> TestServer {
    TestServer::start(quorum_blossom::BlossomConfig {
        oci_credentials: OciCredentials::parse(&format!("{USER}:{PASSWORD}")),
        ..config()
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    ::hex::encode(sha2::Sha256::digest(bytes))
}

/// An OCI image layout of a tiny root filesystem, made with quorum-oci.
fn layout(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=pushed\n").unwrap();
    let blobs = dir.join("built");
    let image = quorum_oci::build::build(&root, &blobs).unwrap();
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for blob in &image.blobs {
        std::fs::copy(
            &blob.path,
            layout.join("blobs/sha256").join(blob.digest.hex()),
        )
        .unwrap();
    }
    let manifest = image.blobs.last().unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest.digest.to_string(),
                "size": manifest.size,
            }]
        })
        .to_string(),
    )
    .unwrap();
    (layout, image.manifest.to_string())
}

/// Every file under `dir` with its bytes, by relative path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_back_byte_identical_images() {
    let s = server().await;
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = layout(dir.path());
    let host = format!("{}:{}", s.url.host_str().unwrap(), s.url.port().unwrap());
    let src = format!("oci:{}", layout.display());
    let dest = format!("docker://{host}/test/pushed:v1");
    let creds = format!("{USER}:{PASSWORD}");

    // Without credentials: refused.
    let out = skopeo(&["copy", "--dest-tls-verify=false", &src, &dest]);
    assert!(
        !out.status.success(),
        "an unauthenticated push went through"
    );
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "ci:wrong",
        &src,
        &dest,
    ]);
    assert!(
        !out.status.success(),
        "a push with a wrong password went through"
    );

    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src,
        &dest,
    ]);
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Tag list, and the manifest by tag is the one pushed.
    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/test/pushed"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));
    let out = skopeo(&["inspect", "--raw", "--tls-verify=false", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(format!("sha256:{}", hex(&out.stdout)), digest);

    // Pulled back by tag and by digest (anonymously): the same blobs, byte for byte.
    let original = files(&layout);
    for (n, reference) in [
        dest.clone(),
        format!("docker://{host}/test/pushed@{digest}"),
    ]
    .iter()
    .enumerate()
    {
        let back = dir.path().join(format!("back{n}"));
        let out = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            reference,
            &format!("oci:{}", back.display()),
        ]);
        assert!(
            out.status.success(),
            "pull: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(files(&back), original, "pulled from {reference}");
    }

    // The manifest is the Blossom blob of that sha256.
    let hex_digest = digest.trim_start_matches("sha256:");
    let blossom = reqwest::get(s.join(hex_digest)).await.unwrap();
    assert_eq!(blossom.status(), 200);
    let bytes = blossom.bytes().await.unwrap();
    assert_eq!(hex(&bytes), hex_digest);
    s.stop().await;
}

fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    )
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn chunked_uploads_mounts_and_refusals_with_the_right_codes() {
    let s = server().await;
    let http = reqwest::Client::new();
    let v2 = |path: &str| s.join(&format!("v2/{path}"));
    let data = common::blob(7, 300_000);
    let digest = format!("sha256:{}", hex(&data));

    // Unauthenticated push: 401 UNAUTHORIZED with a Basic challenge.
    let r = http.post(v2("test/a/blobs/uploads/")).send().await.unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(code(r).await, (401, "UNAUTHORIZED".into()));
    let r = http
        .post(v2("test/a/blobs/uploads/"))
        .header("authorization", "Basic Y2k6d3Jvbmc=")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, "UNAUTHORIZED".into()));

    // Chunked: POST, two PATCHes with Content-Range, PUT with the digest.
    let r = http
        .post(v2("test/a/blobs/uploads/"))
        .header("authorization", basic())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut at = r.headers()["location"].to_str().unwrap().to_owned();
    let (first, second) = data.split_at(100_000);
    for (start, chunk) in [(0usize, first), (100_000, second)] {
        let r = http
            .patch(s.join(&at))
            .header("authorization", basic())
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .header("content-type", "application/octet-stream")
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.headers()["range"],
            format!("0-{}", start + chunk.len() - 1).as_str()
        );
        at = r.headers()["location"].to_str().unwrap().to_owned();
    }
    // A chunk out of order is refused.
    let r = http
        .patch(s.join(&at))
        .header("authorization", basic())
        .header("content-range", "5-9")
        .body(vec![0u8; 5])
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (416, "BLOB_UPLOAD_INVALID".into()));
    let mut put = s.join(&at);
    put.query_pairs_mut().append_pair("digest", &digest);
    let r = http
        .put(put)
        .header("authorization", basic())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let got = http
        .get(v2(&format!("other/name/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), data);
    // The same bytes are the Blossom blob.
    let got = http
        .get(s.join(digest.trim_start_matches("sha256:")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);

    // Cross-repository mount of a blob the server has: 201 at once.
    let mut mount = v2("test/b/blobs/uploads/");
    mount
        .query_pairs_mut()
        .append_pair("mount", &digest)
        .append_pair("from", "test/a");
    let r = http
        .post(mount)
        .header("authorization", basic())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/test/b/blobs/{digest}").as_str()
    );

    // A corrupted blob (bytes that do not hash to the digest): DIGEST_INVALID, nothing kept.
    let mut corrupt = data.clone();
    corrupt[10] ^= 1;
    let mut post = v2("test/a/blobs/uploads/");
    let other = format!("sha256:{}", hex(b"something else"));
    post.query_pairs_mut().append_pair("digest", &other);
    let r = http
        .post(post)
        .header("authorization", basic())
        .body(corrupt.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, "DIGEST_INVALID".into()));
    let r = http.head(s.join(&hex(&corrupt))).send().await.unwrap();
    assert_eq!(r.status(), 404, "the corrupted upload was not stored");
    assert_eq!(s.temp_files(), 0);

    // Manifests: a wrong digest, a missing blob, an unknown reference.
    let config = b"{}".to_vec();
    let mut post = v2("test/a/blobs/uploads/");
    let config_digest = format!("sha256:{}", hex(&config));
    post.query_pairs_mut().append_pair("digest", &config_digest);
    let r = http
        .post(post)
        .header("authorization", basic())
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = |layer: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 300000}]
        })
        .to_string()
    };
    let good = manifest(&digest);
    let put_manifest = |reference: &str, body: String| {
        http.put(v2(&format!("test/a/manifests/{reference}")))
            .header("authorization", basic())
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
            .send()
    };
    let r = put_manifest(&other, good.clone()).await.unwrap();
    assert_eq!(code(r).await, (400, "DIGEST_INVALID".into()));
    let missing = manifest(&format!("sha256:{}", "1".repeat(64)));
    let r = put_manifest("v2", missing).await.unwrap();
    assert_eq!(code(r).await, (400, "MANIFEST_BLOB_UNKNOWN".into()));
    let good_digest = format!("sha256:{}", hex(good.as_bytes()));
    let r = put_manifest(&good_digest, good.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(v2(&format!("test/a/manifests/{good_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(r.text().await.unwrap(), good);
    let r = http.get(v2("test/a/manifests/nope")).send().await.unwrap();
    assert_eq!(code(r).await, (404, "MANIFEST_UNKNOWN".into()));
    let r = http
        .get(v2(&format!("test/a/blobs/sha256:{}", "2".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(v2("Bad_Name/tags/list")).send().await.unwrap();
    assert_eq!(code(r).await, (400, "NAME_INVALID".into()));
    // Unauthenticated manifest push: refused.
    let r = http
        .put(v2("test/a/manifests/v3"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(good)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, "UNAUTHORIZED".into()));
    s.stop().await;
}
