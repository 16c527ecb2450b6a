//! Build images from the command line, as processes: `quorum image push` turns a root
//! filesystem into an image on a `quorum blossom` started with `--oci-credentials`, prints
//! `NAME@sha256:…`, and skopeo pulls exactly that manifest through `/v2/`; `quorum lint` warns
//! about an image named by tag and refuses one in a quorum job, at its line and column.

use std::time::Duration;

use quorum_testkit::daemon::{Daemon, run};
use quorum_testkit::third_party::skopeo_ok;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

#[test]
fn image_push_prints_a_reference_that_skopeo_pulls_from_blossom() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("blossom");
    let server = Daemon::spawn(
        QUORUM,
        &[
            "blossom",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
            "--oci-credentials",
            "ci:pw",
        ],
    );
    let base = server.value_of("blossom");
    let url = url::Url::parse(&base).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=cli\n").unwrap();

    let name = format!("{host}/toolchains/cli:v1");
    // `quorum image push ROOT NAME --blossom BASE EXTRA…`: the reference it prints.
    let push = |extra: &[&str]| {
        let mut args = vec![
            "image",
            "push",
            root.to_str().unwrap(),
            &name,
            "--blossom",
            &base,
        ];
        args.extend_from_slice(extra);
        let out = run(QUORUM, &args, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let reference = push(&[]);
    let digest = reference
        .strip_prefix(&format!("{name}@sha256:"))
        .unwrap_or_else(|| panic!("{reference}"));
    assert_eq!(digest.len(), 64);
    // The same input gives the same image (deterministic packing).
    assert_eq!(push(&[]), reference);

    // skopeo pulls that manifest by digest over /v2/, anonymously.
    let raw_manifest = |digest: &str| {
        let image = format!("docker://{host}/toolchains/cli@sha256:{digest}");
        let manifest = skopeo_ok(&["inspect", "--raw", "--tls-verify=false", &image]);
        assert_eq!(hex::encode(Sha256::digest(&manifest)), digest);
        manifest
    };
    let manifest = raw_manifest(digest);
    let layer_media = |manifest: &[u8]| {
        let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        manifest["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        layer_media(&manifest),
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "a directory is packed as zstd by default"
    );

    // --compression gzip: another image of the same tree, for older clients.
    let gzip = push(&["--compression", "gzip"]);
    let gzip_digest = gzip.rsplit_once("@sha256:").unwrap().1.to_owned();
    assert_ne!(gzip_digest, digest);
    assert_eq!(
        layer_media(&raw_manifest(&gzip_digest)),
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // A bad input is a clear error.
    let out = run(
        QUORUM,
        &[
            "image",
            "push",
            "/nonexistent/rootfs",
            &name,
            "--blossom",
            &base,
        ],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rootfs"));
    assert!(server.terminate().success());
}

#[test]
fn lint_warns_about_a_tag_and_refuses_it_in_a_quorum_job() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yml");
    std::fs::write(
        &file,
        "on: push\njobs:\n  build:\n    image: debian:bookworm\n    run: make\n",
    )
    .unwrap();
    let out = run(
        QUORUM,
        &["lint", file.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is not an error: {stderr}");
    assert!(
        stderr.contains(":4:12: warning: job \"build\" names image"),
        "{stderr}"
    );

    std::fs::write(
        &file,
        "on: push\njobs:\n  build:\n    image: debian:bookworm\n    run: make\n    \
         artifacts: [out]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n",
    )
    .unwrap();
    let out = run(
        QUORUM,
        &["lint", file.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":4:12: error: job \"build\" is a quorum job"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pin it by digest"), "{stderr}");
}
