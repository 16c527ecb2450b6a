//! `quorum demo`, the README's main command: the whole flow on a fresh embedded network.

use std::time::Duration;

use quorum_testkit::daemon::run;
use serde_json::Value;

/// Runs one of the commands the demo prints for checking the file later (`quorum verify …`,
/// paths without spaces) with this build's binary; returns its exit code and output.
fn run_printed(command: &str) -> (Option<i32>, String) {
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[..2], ["quorum", "verify"], "{command}");
    assert!(
        words.contains(&"--repo"),
        "the command names the repository: {command}"
    );
    let out = run(
        env!("CARGO_BIN_EXE_quorum"),
        &words[1..],
        Duration::from_secs(60),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn the_demo_runs_approves_releases_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = run(
        env!("CARGO_BIN_EXE_quorum"),
        &["demo", "--data", data.to_str().unwrap(), "--json"],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "success");
    let jobs: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["success", "success", "success"], "{report}");
    assert_eq!(report["release"].as_str().unwrap().len(), 64);
    assert_eq!(report["verified"]["ok"], true, "{report}");
    // A 2-of-3 quorum of runners built it, and the release is signed by the quorum key.
    let quorum = report["quorum"]["pubkey"].as_str().unwrap();
    assert_eq!(report["quorum"]["threshold"], 2);
    assert_eq!(report["quorum"]["members"].as_array().unwrap().len(), 3);
    assert_eq!(report["mandate"].as_str().unwrap().len(), 64);
    // All three are run by the embedded network's one local operator, and it is said.
    let operators = &report["quorum"]["operators"];
    assert_eq!(
        operators["distinct"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    assert_eq!(operators["fewest_signing"], 1, "{report}");
    assert!(
        operators["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["confirmed"] == true && m["operator"] == operators["distinct"][0]),
        "{report}"
    );
    assert_eq!(report["verified"]["signer"], quorum, "{report}");
    let sha = report["artifacts"][0]["sha256"].as_str().unwrap();
    assert_eq!(report["verified"]["sha256"], sha);
    // The released file was fetched from Blossom and kept for `quorum verify`, with the
    // release's verification bundle beside it.
    assert!(data.join("hello.txt").exists());
    assert_eq!(
        report["bundle"]["sha256"].as_str().map(str::len),
        Some(64),
        "{report}"
    );
    assert_eq!(report["verified_offline"], true, "{report}");
    // The embedded network is gone: the printed offline check works with nothing running.
    let later = &report["check_later"];
    assert!(
        later["relay"][1].as_str().unwrap().contains("--repo"),
        "{later}"
    );
    let offline = later["offline"].as_str().expect("an offline command");
    assert!(offline.contains("--bundle"), "{offline}");
    let (code, text) = run_printed(offline);
    assert_eq!(code, Some(0), "{offline}:\n{text}");
    assert!(
        text.contains("verified: these bytes are a release"),
        "{text}"
    );
}

#[test]
fn the_demo_runs_on_an_existing_network() {
    let dir = tempfile::tempdir().unwrap();
    let up = quorum_testkit::daemon::Daemon::spawn(
        env!("CARGO_BIN_EXE_quorum"),
        &[
            "up",
            "--data",
            dir.path().join("net").to_str().unwrap(),
            "--relay-listen",
            "127.0.0.1:0",
            "--blossom-listen",
            "127.0.0.1:0",
        ],
    );
    let relay = up.value_of("relay");
    let operator = up.value_of("operator");
    let _ = up.value_of("endpoints");
    let out = run(
        env!("CARGO_BIN_EXE_quorum"),
        &[
            "demo",
            "--relay",
            &relay,
            "--data",
            dir.path().join("demo").to_str().unwrap(),
            "--json",
        ],
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "success");
    assert_eq!(report["verified"]["ok"], true, "{report}");
    // The runners `quorum up` started are its local operator's, confirmed on the relay.
    assert_eq!(
        report["quorum"]["operators"]["distinct"],
        serde_json::json!([operator]),
        "{report}"
    );
    // The printed check, against the network that is still up.
    let command = report["check_later"]["relay"][0].as_str().unwrap();
    assert!(command.contains(&relay), "{command}");
    let (code, text) = run_printed(command);
    assert_eq!(code, Some(0), "{command}:\n{text}");

    // Again on the same relays with the same maintainer: the relays hold the first run's
    // approval request, and the demo answers only its own run's.
    let again = run(
        env!("CARGO_BIN_EXE_quorum"),
        &[
            "demo",
            "--relay",
            &relay,
            "--data",
            dir.path().join("demo").to_str().unwrap(),
            "--json",
        ],
        Duration::from_secs(300),
    );
    assert!(
        again.status.success(),
        "the second demo on the same relays: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(up.terminate().success());
}
