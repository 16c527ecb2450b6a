//! `quorum follow` against the daemon path: a watcher following the maintainer's signed NIP-34
//! state starts runs through a router DVM on runner DVMs (all real, on loopback), and the
//! `quorum` binary, started before the push, follows each run from the relay alone.

use std::process::Output;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::nip34::{RepoCoordinate, RepositoryAnnouncement, RepositoryState};
use quorum_runner::GitPolicy;
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::{next_second, publish};
use quorum_watcher::{Source, WatchConfig, Watcher};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

const PASSING: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: echo building\n  test:\n    needs: build\n    run: echo testing\n";
const FAILING: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: echo building\n  lint:\n    run: echo lint broke; exit 3\n  ship:\n    needs: [build, lint]\n    run: echo shipping\n";

/// `quorum follow ARGS…` on a thread, so the test can push while it waits.
fn follow(args: Vec<String>) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || {
        let mut all = vec!["follow".to_string()];
        all.extend(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        quorum_testkit::daemon::run(QUORUM, &all, Duration::from_secs(150))
    })
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_a_watcher_started_run_to_its_end_and_exits_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let relay = network.relay.to_string();
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), PASSING).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);

    let owner = Keys::generate();
    let coordinate = RepoCoordinate::new(owner.public_key(), "sample").to_string();
    let state = |commit: &str| {
        RepositoryState::new("sample")
            .with_ref("refs/heads/main", commit)
            .unwrap()
            .to_event_builder()
            .sign_with_keys(&owner)
            .unwrap()
    };
    let announcement = RepositoryAnnouncement::new("sample")
        .to_event_builder()
        .sign_with_keys(&owner)
        .unwrap();
    let first = git(&repo, &["rev-parse", "HEAD"]);
    publish(&network.relay, &[&announcement, &state(&first)]).await;

    let _runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let _router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let config = WatchConfig {
        repo: format!("file://{}", repo.display()),
        source: Source::Nip34 {
            owner: owner.public_key(),
            identifier: "sample".into(),
        },
        router: router_keys.public_key(),
        data: dir.path().join("watcher"),
        git: GitPolicy {
            allow_local: true,
            timeout: Some(Duration::from_secs(30)),
            ..GitPolicy::default()
        },
        quorum: None,
    };
    let mut watcher = Watcher::new(config, network.client().await).unwrap();
    assert!(watcher.poll().await.unwrap().is_empty(), "first look");

    // The maintainer pushes and signs the new state; the follower is already waiting.
    let push = |message: &str, pipeline: &str| {
        std::fs::write(repo.join("message.txt"), message).unwrap();
        std::fs::write(repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
        git(&repo, &["commit", "--quiet", "-am", message]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let waiting = follow(vec![
        coordinate.clone(),
        "--relay".into(),
        relay.clone(),
        "--timeout".into(),
        "120s".into(),
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = push("second", PASSING);
    next_second().await;
    publish(&network.relay, &[&state(&second)]).await;
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    let output = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let runner_short = &_runner.public_key().to_hex()[..12];
    for expected in [
        format!("run {} of {coordinate}", started[0].request),
        format!("▶ build on {runner_short}"),
        format!("✔ build on {runner_short}"),
        format!("✔ test on {runner_short}"),
    ] {
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(stdout.contains("✔ run succeeded"), "{stdout}");

    // A failing pipeline: the follower names the failed job, shows its log, exits 1.
    let waiting = follow(vec![
        coordinate.clone(),
        "--relay".into(),
        relay.clone(),
        "--timeout".into(),
        "120s".into(),
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let third = push("third", FAILING);
    next_second().await;
    publish(&network.relay, &[&state(&third)]).await;
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    let output = tokio::task::spawn_blocking(move || waiting.join().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    for expected in [
        format!("✘ lint on {runner_short}: the step exited with code 3"),
        "  lint | lint broke".to_string(),
        "– ship skipped: needs lint, which did not succeed".to_string(),
    ] {
        assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    }
    assert!(stdout.contains("✘ run failed: lint"), "{stdout}");

    // The finished run, by its request id (note1…), as JSON lines: the outcome at once.
    let note = EventId::from_hex(&started[0].request)
        .unwrap()
        .to_bech32()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        follow(vec![note, "--relay".into(), relay, "--json".into()])
            .join()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "run", "{stdout}");
    assert_eq!(events[0]["commit"], third.as_str());
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished", "{stdout}");
    assert_eq!(last["status"], "failure");
    assert!(
        events.iter().any(|e| e["event"] == "job_finished"
            && e["job"] == "lint"
            && e["status"] == "failure"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_up_with_exit_code_2_when_no_run_comes() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let coordinate = RepoCoordinate::new(Keys::generate().public_key(), "quiet").to_string();
    let relay = network.relay.to_string();
    let output = tokio::task::spawn_blocking(move || {
        follow(vec![
            coordinate,
            "--relay".into(),
            relay,
            "--timeout".into(),
            "2s".into(),
        ])
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("gave up after 2 s"), "{stderr}");
}
