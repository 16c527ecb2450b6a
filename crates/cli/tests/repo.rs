//! `quorum repo announce` and `quorum repo push` as a maintainer runs them, against a real
//! relay and a real git remote: what they sign is what the protocol's readers accept, the state
//! is what the remote really holds, and a watcher DVM (the real `quorum dvm watcher`) follows
//! the pushed state and starts a run for the new commit.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
use quorum_testkit::daemon::{Daemon, run};
use quorum_testkit::git::git;
use serde_json::Value;

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

fn key_file(dir: &Path, name: &str, keys: &Keys) -> String {
    let path = dir.join(name);
    std::fs::write(&path, keys.secret_key().to_secret_hex()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

fn quorum_json(args: &[&str]) -> Value {
    let out = run(QUORUM, args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quorum {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_announces_and_pushes_and_a_watcher_starts_a_run_for_the_pushed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Daemon::spawn(
        QUORUM,
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--data",
            dir.path().join("relay").to_str().unwrap(),
        ],
    );
    let relay_url = relay.value_of("relay");

    // A bare remote and the maintainer's clone of it, with a pipeline and a tag.
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            remote.to_str().unwrap(),
        ],
    );
    let work = dir.path().join("app");
    std::fs::create_dir_all(work.join(".quorum")).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    git(&work, &["config", "user.name", "Maintainer"]);
    git(&work, &["config", "user.email", "m@example.invalid"]);
    let remote_url = format!("file://{}", remote.display());
    git(&work, &["remote", "add", "origin", &remote_url]);
    std::fs::write(
        work.join(".quorum/pipeline.yml"),
        "on:\n  push:\n    branches: [main]\njobs:\n  test:\n    run: echo ok\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    git(&work, &["tag", "-a", "v1.0.0", "-m", "release"]);
    let first = git(&work, &["rev-parse", "HEAD"]);

    let maintainer = Keys::generate();
    let key = key_file(dir.path(), "maintainer.nsec", &maintainer);
    let work_arg = work.to_str().unwrap();

    let announced = quorum_json(&[
        "repo", "announce", work_arg, "--relay", &relay_url, "--key", &key, "--json",
    ]);
    assert_eq!(
        announced["repository"],
        format!("30617:{}:app", maintainer.public_key().to_hex())
    );
    assert_eq!(announced["clone"], serde_json::json!([remote_url]));
    assert_eq!(announced["earliest_unique_commit"], first.as_str());

    let pushed = quorum_json(&[
        "repo", "push", "--dir", work_arg, "--relay", &relay_url, "--key", &key, "--json", "main",
        "v1.0.0",
    ]);
    assert_eq!(pushed["announced"], true, "{pushed}");
    assert_eq!(pushed["refs"]["refs/heads/main"], first.as_str());
    assert_eq!(
        pushed["refs"]["refs/tags/v1.0.0"],
        first.as_str(),
        "a tag is published as the commit it peels to"
    );
    assert_eq!(pushed["head"], "refs/heads/main");

    // What the relay holds parses with the protocol's own readers, signed by the maintainer.
    let client = Client::new(Keys::generate());
    client.add_relay(relay_url.as_str()).await.unwrap();
    client.connect().await;
    let events = client
        .fetch_events(
            Filter::new()
                .author(maintainer.public_key())
                .kinds([Kind::Custom(30617), Kind::Custom(30618)]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let announcement = events
        .iter()
        .find(|e| e.kind == Kind::Custom(30617))
        .map(|e| RepositoryAnnouncement::from_event(e).unwrap())
        .expect("the announcement is on the relay");
    assert_eq!(announcement.clone, vec![remote_url.clone()]);
    assert_eq!(announcement.relays.len(), 1);
    let state = events
        .iter()
        .find(|e| e.kind == Kind::Custom(30618))
        .map(|e| RepositoryState::from_event(e).unwrap())
        .expect("the state is on the relay");
    assert_eq!(state.commit_of("HEAD"), Some(first.as_str()));

    // A watcher follows the maintainer's state; the next push starts a run on the router.
    let router = Keys::generate();
    let watcher_key = key_file(dir.path(), "watcher.nsec", &Keys::generate());
    let watcher = Daemon::spawn(
        QUORUM,
        &[
            "dvm",
            "watcher",
            "--relay",
            &relay_url,
            "--repo",
            &remote_url,
            "--router",
            &router.public_key().to_hex(),
            "--owner",
            &maintainer.public_key().to_hex(),
            "--identifier",
            "app",
            "--key",
            &watcher_key,
            "--data",
            dir.path().join("watcher").to_str().unwrap(),
            "--allow-local-repos",
            "--interval",
            "1",
        ],
    );
    let _ = watcher.value_of("watcher");
    // Its first look records where the refs are (no history is replayed).
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(work.join("CHANGES"), "second\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let pushed = quorum_json(&[
        "repo", "push", "--dir", work_arg, "--relay", &relay_url, "--key", &key, "--json",
    ]);
    assert_eq!(pushed["refs"]["refs/heads/main"], second.as_str());
    assert_eq!(
        pushed["refs"]["refs/tags/v1.0.0"],
        first.as_str(),
        "the state lists every ref the remote holds, not only those pushed"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let request = loop {
        let found = client
            .fetch_events(
                Filter::new()
                    .kind(Kind::Custom(5700))
                    .pubkey(router.public_key()),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        if let Some(event) = found.into_iter().find(|e| e.as_json().contains(&second)) {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher started no run for the pushed commit {second}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        !request.as_json().contains(&first),
        "only the new commit is built"
    );
    client.shutdown().await;
    watcher.terminate();
    assert!(relay.terminate().success());
}

#[test]
fn a_repository_without_a_remote_or_a_commit_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "k.nsec", &Keys::generate());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    git(&empty, &["init", "--quiet"]);
    let out = run(
        QUORUM,
        &[
            "repo",
            "announce",
            empty.to_str().unwrap(),
            "--relay",
            "ws://127.0.0.1:9",
            "--key",
            &key,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a git repository with a commit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(
        &empty,
        &[
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "x",
        ],
    );
    let out = run(
        QUORUM,
        &[
            "repo",
            "announce",
            empty.to_str().unwrap(),
            "--relay",
            "ws://127.0.0.1:9",
            "--key",
            &key,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("git remote add"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
