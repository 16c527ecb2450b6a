//! The maintainer offline, as processes: `quorum up` (relay, Blossom, three runners, a router)
//! and a `quorum dvm watcher` run as an operator would run them; the maintainer announces the
//! repository, mandates a 2-of-3 quorum of the runners, pushes, and is gone. From then on only
//! daemons act: the watcher sees the signed state, the router takes the repository's mandate,
//! the quorum builds and signs, and the router publishes the release and the CI status. The
//! released file downloads from a URL the events give and `quorum verify --repo` passes. A
//! second push, of a commit dated two hours earlier, builds too. Then gitworkshop's Retry
//! button: the maintainer's 9840 re-runs the commit, a stranger's starts nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_testkit::daemon::{Daemon, run};
use quorum_testkit::git::git;
use serde_json::Value;

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

fn quorum_json(args: &[&str]) -> Value {
    let out = run(QUORUM, args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quorum {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

fn key_file(path: &Path) -> String {
    std::fs::write(path, Keys::generate().secret_key().to_secret_hex()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

/// Waits for the router's result (6700) for the run of `commit` and returns its report.
async fn report_of(client: &Client, router: &PublicKey, commit: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results = client
            .fetch_events(
                Filter::new().kind(Kind::Custom(6700)).author(*router),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        if let Some(report) = results
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.content).ok())
            .find(|r| r["commit"] == commit)
        {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no run of {commit} finished on the router"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for the router's workflow result (9842) that quotes manual trigger `trigger`.
async fn manual_attempt(client: &Client, router: &PublicKey, trigger: &EventId) -> Event {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let results = client
            .fetch_events(
                Filter::new().kind(Kind::Custom(9842)).author(*router),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        let quoting = results.into_iter().find(|e| {
            e.tags.iter().any(|t| {
                let t = t.as_slice();
                t[0] == "q"
                    && t.get(1) == Some(&trigger.to_hex())
                    && t.get(4).map(String::as_str) == Some("manual-trigger")
            })
        });
        if let Some(event) = quoting {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no re-run answered manual trigger {trigger}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_maintainer_gone_daemons_take_a_signed_push_to_a_verified_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let up = Daemon::spawn(
        QUORUM,
        &[
            "up",
            "--data",
            root.join("net").to_str().unwrap(),
            "--relay-listen",
            "127.0.0.1:0",
            "--blossom-listen",
            "127.0.0.1:0",
        ],
    );
    let relay = up.value_of("relay");
    let router = up.value_of("router");
    // Another relay, which the repository's announcement lists but no daemon is connected to:
    // where the repository's followers look.
    let followers_relay = Daemon::spawn(
        QUORUM,
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--data",
            root.join("followers-relay").to_str().unwrap(),
        ],
    );
    let followers = followers_relay.value_of("relay");
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(up.value_of("endpoints")).unwrap()).unwrap();
    let runners: Vec<String> = endpoints["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();

    // The maintainer's repository: a bare remote, a clone with a quorum release pipeline.
    let remote = root.join("remote.git");
    git(
        root,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            remote.to_str().unwrap(),
        ],
    );
    let work = root.join("app");
    std::fs::create_dir_all(work.join(".quorum")).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    git(&work, &["config", "user.name", "Maintainer"]);
    git(&work, &["config", "user.email", "m@example.invalid"]);
    git(
        &work,
        &[
            "remote",
            "add",
            "origin",
            &format!("file://{}", remote.display()),
        ],
    );
    std::fs::write(
        work.join("build.sh"),
        "set -eu\nmkdir -p out\necho \"hello $(cat msg)\" > out/hello.txt\n",
    )
    .unwrap();
    std::fs::write(work.join("msg"), "quorum\n").unwrap();
    std::fs::write(
        work.join(".quorum/pipeline.yml"),
        "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: sh build.sh\n    \
         artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    \
         release: true\n",
    )
    .unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "first"]);
    let key = key_file(&root.join("maintainer.nsec"));
    let work_arg = work.to_str().unwrap();

    // An operator's watcher, following the repository the maintainer is about to announce.
    let announced = quorum_json(&[
        "repo",
        "announce",
        work_arg,
        "--relay",
        &relay,
        "--key",
        &key,
        "--repo-relay",
        &relay,
        "--repo-relay",
        &followers,
        "--json",
    ]);
    let repository = announced["repository"].as_str().unwrap().to_string();
    let owner = repository.split(':').nth(1).unwrap().to_string();
    let watcher = Daemon::spawn(
        QUORUM,
        &[
            "dvm",
            "watcher",
            "--relay",
            &relay,
            "--repo",
            announced["clone"][0].as_str().unwrap(),
            "--router",
            &router,
            "--owner",
            &owner,
            "--identifier",
            "app",
            "--key",
            &key_file(&root.join("watcher.nsec")),
            "--data",
            root.join("watcher").to_str().unwrap(),
            "--allow-local-repos",
            "--interval",
            "1",
        ],
    );
    let _ = watcher.value_of("watcher");

    // The maintainer: a 2-of-3 quorum of the runners, by DKG; then the push. Then gone.
    let mut mandate_args = vec![
        "mandate",
        "create",
        "--relay",
        &relay,
        "--key",
        &key,
        "--repo",
        &repository,
        "--threshold",
        "2",
        // What the quorum may sign comes from the pipeline: 8708, and 8700 as it releases.
        "--dir",
        work_arg,
        "--allow-same-operator",
        "--wait",
        "60",
        "--json",
    ];
    for runner in &runners {
        mandate_args.extend(["--member", runner.as_str()]);
    }
    let mandate = quorum_json(&mandate_args);
    let quorum = mandate["quorum"].as_str().unwrap().to_string();
    let pushed = quorum_json(&[
        "repo", "push", "--dir", work_arg, "--relay", &relay, "--key", &key, "--json",
    ]);
    let first = pushed["refs"]["refs/heads/main"]
        .as_str()
        .unwrap()
        .to_string();

    let client = Client::new(Keys::generate());
    client.add_relay(relay.as_str()).await.unwrap();
    client.connect().await;
    let router_key = PublicKey::from_hex(&router).unwrap();
    let report = report_of(&client, &router_key, &first).await;
    assert_eq!(report["status"], "success", "{report}");
    let published = &report["published"];
    assert!(published["problems"].is_null(), "{report}");
    for field in ["release", "software_release", "ci_status"] {
        assert!(published[field].is_string(), "{field}: {report}");
    }

    // The release's events: the quorum's binding, the router's NIP-94 with the URL the file
    // downloads from, and the CI status of the run.
    let events = client
        .fetch_events(
            Filter::new().kinds([Kind::Custom(8700), Kind::Custom(1063), Kind::Custom(9842)]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let binding = events
        .iter()
        .find(|e| e.kind == Kind::Custom(8700))
        .unwrap();
    assert_eq!(binding.pubkey.to_hex(), quorum);
    let file = events
        .iter()
        .find(|e| e.kind == Kind::Custom(1063))
        .unwrap();
    assert_eq!(file.pubkey, router_key);
    assert!(events.iter().any(|e| e.kind == Kind::Custom(9842)));
    let url = file
        .tags
        .iter()
        .find(|t| t.kind() == TagKind::Url)
        .and_then(|t| t.content())
        .expect("the NIP-94 event names a URL")
        .to_string();
    let bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    let released = root.join("hello.txt");
    std::fs::write(&released, &bytes).unwrap();
    let verified = run(
        QUORUM,
        &[
            "verify",
            released.to_str().unwrap(),
            "--repo",
            &repository,
            "--relay",
            &relay,
            "--json",
        ],
        Duration::from_secs(60),
    );
    let verdict: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified.status.code(), Some(0), "{verdict}");
    assert_eq!(verdict["ok"], true);
    assert!(
        verdict["urls"].as_array().is_some_and(|u| !u.is_empty()),
        "verify finds the URLs: {verdict}"
    );

    // The release and the CI status reached the relay the announcement lists too.
    let followers_client = Client::new(Keys::generate());
    followers_client
        .add_relay(followers.as_str())
        .await
        .unwrap();
    followers_client.connect().await;
    let copied = followers_client
        .fetch_events(
            Filter::new().kinds([Kind::Custom(8700), Kind::Custom(1063), Kind::Custom(9842)]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    for kind in [8700, 1063, 9842] {
        assert!(
            copied.iter().any(|e| e.kind == Kind::Custom(kind)),
            "kind {kind} on the repository's relay"
        );
    }
    followers_client.shutdown().await;

    // A commit dated two hours ago, pushed now, builds too: its time is the state's.
    std::fs::write(work.join("msg"), "again\n").unwrap();
    git(&work, &["add", "."]);
    let two_hours_ago = format!("@{} +0000", Timestamp::now().as_secs() - 7200);
    let status = std::process::Command::new("git")
        .args(["commit", "--quiet", "-m", "old"])
        .env("GIT_AUTHOR_DATE", &two_hours_ago)
        .env("GIT_COMMITTER_DATE", &two_hours_ago)
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(status.success());
    let pushed = quorum_json(&[
        "repo", "push", "--dir", work_arg, "--relay", &relay, "--key", &key, "--json",
    ]);
    let second = pushed["refs"]["refs/heads/main"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, first);
    let report = report_of(&client, &router_key, &second).await;
    assert_eq!(report["status"], "success", "{report}");

    // gitworkshop's Retry: a 9840 to the router that signed the run's 9842, as any NIP-C1
    // client writes it. A stranger's is ignored; the maintainer's re-runs the commit, and the
    // new attempt's CI status says `manual` and quotes the trigger.
    let pipeline_file = std::fs::read(work.join(".quorum/pipeline.yml")).unwrap();
    let workflow_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&pipeline_file));
    let retry_of = |author: &Keys, workflow_hash: &str| {
        EventBuilder::new(Kind::Custom(9840), "")
            .tags([
                Tag::public_key(router_key),
                Tag::parse(["a", repository.as_str()]).unwrap(),
                Tag::parse(["c", second.as_str()]).unwrap(),
                Tag::parse(["w", ".quorum/pipeline.yml", workflow_hash]).unwrap(),
                Tag::parse(["r", "refs/heads/main"]).unwrap(),
            ])
            .sign_with_keys(author)
            .unwrap()
    };
    let retry = |author: &Keys| retry_of(author, &workflow_hash);
    let stranger = retry(&Keys::generate());
    let maintainer = Keys::parse(std::fs::read_to_string(&key).unwrap().trim()).unwrap();
    client.send_event(&stranger).await.unwrap();
    let trigger = retry(&maintainer);
    client.send_event(&trigger).await.unwrap();
    let replayed = manual_attempt(&client, &router_key, &trigger.id).await;
    assert_eq!(
        replayed
            .tags
            .iter()
            .find(|t| t.as_slice()[0] == "o")
            .map(|t| t.as_slice()[1].clone()),
        Some("manual".to_string())
    );
    assert!(
        replayed
            .tags
            .iter()
            .any(|t| t.as_slice()[0] == "c" && t.as_slice()[1] == second)
    );
    let conclusion = replayed
        .tags
        .iter()
        .find(|t| t.as_slice()[0] == "conclusion")
        .map(|t| t.as_slice()[1].clone());
    assert_eq!(conclusion.as_deref(), Some("success"), "{replayed:?}");
    let requests = client
        .fetch_events(
            Filter::new()
                .kind(Kind::Custom(5700))
                .author(router_key)
                .event(stranger.id),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(requests.is_empty(), "a stranger's trigger starts nothing");

    // A maintainer's retry of a workflow file other than the one at the commit (its `w`
    // hash differs) builds nothing, and its CI status says why.
    let mismatched = retry_of(&maintainer, &"ab".repeat(32));
    client.send_event(&mismatched).await.unwrap();
    let refused = manual_attempt(&client, &router_key, &mismatched.id).await;
    let refused = quorum_proto::nipc1::CiWorkflowResult::from_event(&refused).unwrap();
    assert_eq!(
        refused.conclusion,
        quorum_proto::nipc1::Conclusion::StartupFailure
    );
    assert!(
        refused.content.contains("names workflow sha256"),
        "the failure names the mismatch: {}",
        refused.content
    );

    client.shutdown().await;
    watcher.terminate();
    assert!(up.terminate().success());
    assert!(followers_relay.terminate().success());
}
