//! The daemons as a user runs them: the `quorum` binary in a child process, on loopback,
//! killed with SIGKILL or stopped with SIGTERM, and restarted on the same data directory.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_testkit::daemon::Daemon;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

/// Starts `quorum ARGS…` as a child process.
fn quorum(args: &[&str]) -> Daemon {
    Daemon::spawn(QUORUM, args)
}

fn run_quorum(args: &[&str]) -> std::process::Output {
    quorum_testkit::daemon::run(QUORUM, args, Duration::from_secs(60))
}

async fn connect(url: &str) -> Client {
    let client = Client::new(Keys::generate());
    client.add_relay(url).await.expect("relay URL");
    client.connect().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_keeps_acknowledged_events_across_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap();
    let relay = quorum(&["relay", "--listen", "127.0.0.1:0", "--data", data_arg]);
    let url = relay.value_of("relay");

    let keys = Keys::generate();
    let client = connect(&url).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let event = EventBuilder::text_note(format!("survives kill -9 #{i}"))
            .sign_with_keys(&keys)
            .unwrap();
        let output = client.send_event(&event).await.expect("publish");
        assert!(
            output.failed.is_empty(),
            "relay refused: {:?}",
            output.failed
        );
        ids.push(event.id);
    }
    client.shutdown().await;
    // No graceful shutdown: whatever was acknowledged must already be on disk.
    relay.kill_hard();

    let relay = quorum(&["relay", "--listen", "127.0.0.1:0", "--data", data_arg]);
    let url = relay.value_of("relay");
    let client = connect(&url).await;
    let stored = client
        .fetch_events(Filter::new().ids(ids.clone()), Duration::from_secs(10))
        .await
        .expect("query after restart");
    assert_eq!(stored.len(), ids.len(), "events lost across kill -9");
    client.shutdown().await;
    assert!(relay.terminate().success(), "relay exits 0 on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blossom_keeps_uploaded_blobs_across_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap();
    let args = [
        "blossom",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data_arg,
        "--anonymous-uploads",
    ];
    let server = quorum(&args);
    let base = server.value_of("blossom");

    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(Sha256::digest(&blob));
    let http = reqwest::Client::new();
    let response = http
        .put(format!("{}/upload", base.trim_end_matches('/')))
        .header("X-SHA-256", &sha)
        .header("Content-Type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status().as_u16(), 201, "upload status");
    server.kill_hard();

    let server = quorum(&args);
    let base = server.value_of("blossom");
    let fetched = http
        .get(format!("{}/{sha}", base.trim_end_matches('/')))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert_eq!(hex::encode(Sha256::digest(&fetched)), sha, "blob changed");
    // Nothing half-written may be left behind by the killed process.
    assert_no_temp_files(data.path());
    assert!(server.terminate().success(), "blossom exits 0 on SIGTERM");
}

fn assert_no_temp_files(dir: &Path) {
    let tmp = dir.join("tmp");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        let left: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "temporary files left behind: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_writes_endpoints_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap();
    let up = quorum(&[
        "up",
        "--data",
        data_arg,
        "--relay-listen",
        "127.0.0.1:0",
        "--blossom-listen",
        "127.0.0.1:0",
        "--ui",
        "127.0.0.1:0",
    ]);
    let endpoints_path = up.value_of("endpoints");
    let ui = up.value_of("ui");
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&endpoints_path).expect("endpoints.json")).unwrap();
    let relay = endpoints["relay"].as_str().expect("relay URL");
    let blossom = endpoints["blossom"].as_str().expect("blossom URL");
    assert!(relay.starts_with("ws://127.0.0.1:"), "{relay}");
    assert!(blossom.starts_with("http://127.0.0.1:"), "{blossom}");
    // The embedded fleet: three runners (enough for a 2-of-3 quorum) with distinct keys.
    let runners = endpoints["runners"].as_array().expect("runners");
    assert_eq!(runners.len(), 3, "{endpoints}");
    let distinct: std::collections::BTreeSet<&str> =
        runners.iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(distinct.len(), 3, "{endpoints}");
    let router = endpoints["router"].as_str().expect("a router DVM");

    // The embedded router runs a repository's committed pipeline on the embedded runners.
    let (repo, commit) = quorum_testkit::git::sample_repo(data.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(
        repo.join(".quorum/pipeline.yml"),
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n",
    )
    .unwrap();
    quorum_testkit::git::git(&repo, &["add", "."]);
    quorum_testkit::git::git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit_with_pipeline = quorum_testkit::git::git(&repo, &["rev-parse", "HEAD"]);
    assert_ne!(commit, commit_with_pipeline);
    let out = run_quorum(&[
        "job",
        "submit",
        "--relay",
        relay,
        "--kind",
        "5700",
        "--input",
        &format!("url#repo:file://{}", repo.display()),
        "--param",
        &format!("commit={commit_with_pipeline}"),
        "--provider",
        router,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(answer["content"].as_str().unwrap()).unwrap();
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(report["jobs"][0]["artifacts"][0]["name"], "out/hello.txt");

    // Both servers answer: the relay's NIP-11 document and a Blossom 404 for an absent blob.
    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(relay.replace("ws://", "http://"))
        .header("Accept", "application/nostr+json")
        .send()
        .await
        .expect("NIP-11")
        .json()
        .await
        .expect("NIP-11 JSON");
    assert!(info["supported_nips"].as_array().is_some(), "{info}");
    let absent = http
        .head(format!("{blossom}/{}", "0".repeat(64)))
        .send()
        .await
        .expect("HEAD blob");
    assert_eq!(absent.status().as_u16(), 404);

    // The dashboard (`--ui`) lists the routed run, and its outcome, from the relay.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = http.get(&ui).send().await.expect("the dashboard answers");
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap();
        if page.contains("data-run=") && page.contains("succeeded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run is not listed: {page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    assert!(up.terminate().success(), "quorum up exits 0 on SIGTERM");
    assert!(
        !Path::new(&endpoints_path).exists(),
        "endpoints.json must not outlive the servers it names"
    );
}

#[test]
fn every_command_has_help() {
    let commands: [&[&str]; 24] = [
        &["demo", "--help"],
        &["ui", "--help"],
        &["init", "--help"],
        &["lint", "--help"],
        &["repo", "announce", "--help"],
        &["repo", "push", "--help"],
        &["completions", "--help"],
        &["mandate", "create", "--help"],
        &["doctor", "--help"],
        &["verify", "--help"],
        &["approve", "--help"],
        &["reject", "--help"],
        &["--help"],
        &["relay", "--help"],
        &["blossom", "--help"],
        &["up", "--help"],
        &["run", "--help"],
        &["dvm", "--help"],
        &["dvm", "runner", "--help"],
        &["dvm", "router", "--help"],
        &["dvm", "watcher", "--help"],
        &["job", "--help"],
        &["job", "build", "--help"],
        &["job", "submit", "--help"],
    ];
    for command in commands {
        let out = run_quorum(command);
        assert!(out.status.success(), "{command:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: quorum"), "{command:?}: {text}");
    }
}

#[test]
fn bad_arguments_name_the_problem() {
    let data = tempfile::tempdir().unwrap();
    let out = run_quorum(&[
        "blossom",
        "--data",
        data.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--allow-uploader",
        "not-a-key",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-a-key"), "{stderr}");

    // A data directory that cannot be created: a file stands where the directory should be.
    let file = data.path().join("occupied");
    std::fs::write(&file, b"x").unwrap();
    let out = run_quorum(&[
        "relay",
        "--data",
        file.join("sub").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the relay store"), "{stderr}");

    let out = run_quorum(&["ui", "--relay", "nope", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--relay \"nope\" is not a ws:// or wss:// URL"),
        "{stderr}"
    );
}
