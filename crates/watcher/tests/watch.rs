//! The watcher against a real repository, relay, router and runner on loopback.

use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::nip90::JobResult;
use quorum_proto::run::RunReport;
use quorum_runner::GitPolicy;
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;
use quorum_watcher::{Source, WatchConfig, Watcher};

const PIPELINE: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_on_a_triggered_branch_starts_exactly_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), PIPELINE).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;

    let config = WatchConfig {
        repo: format!("file://{}", repo.display()),
        source: Source::Poll,
        router: router_keys.public_key(),
        data: dir.path().join("watcher"),
        git: GitPolicy {
            allow_local: true,
            timeout: Some(Duration::from_secs(30)),
            ..GitPolicy::default()
        },
        quorum: None,
    };
    let watcher_keys = Keys::generate();
    let watcher_client = || async {
        quorum_dvm::client::JobClient::connect(
            std::slice::from_ref(&network.relay),
            watcher_keys.clone(),
        )
        .await
        .unwrap()
    };
    let mut watcher = Watcher::new(config.clone(), watcher_client().await).unwrap();
    assert!(
        watcher.poll().await.unwrap().is_empty(),
        "the first look replays nothing"
    );

    // A push to main starts a run; the router runs the committed pipeline.
    std::fs::write(repo.join("message.txt"), "second").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "change"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let state_file = dir.path().join("watcher/watch-state.json");
    let state_before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].commit, head);
    assert_eq!(started[0].ref_name, "refs/heads/main");

    // A branch the pipeline does not trigger on starts nothing; polling again starts nothing.
    git(&repo, &["branch", "feature"]);
    git(&repo, &["checkout", "--quiet", "feature"]);
    std::fs::write(repo.join("message.txt"), "feature").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "feature"]);
    assert!(watcher.poll().await.unwrap().is_empty());
    assert!(watcher.poll().await.unwrap().is_empty());

    // A watcher that crashed after starting the run but before remembering it (its state as
    // it was before the push) does not start it again: its own request is on the relays.
    drop(watcher);
    std::fs::write(&state_file, serde_json::to_vec(&state_before).unwrap()).unwrap();
    let mut amnesiac = Watcher::new(config, watcher_client().await).unwrap();
    assert!(
        amnesiac.poll().await.unwrap().is_empty(),
        "the same commit and plan started a second run"
    );

    // The run's result arrives from the router.
    let client = Client::new(Keys::generate());
    client.add_relay(network.relay.clone()).await.unwrap();
    client.connect().await;
    let request = EventId::from_hex(&started[0].request).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let results = client
            .fetch_events(
                Filter::new().kind(Kind::from_u16(6700)).event(request),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        if let Some(event) = results.first() {
            let result = JobResult::from_event(event).unwrap();
            break serde_json::from_str::<RunReport>(&result.content).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no run result");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.commit, head);
    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_state_signed_by_a_maintainer_starts_a_run() {
    use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), PIPELINE).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);

    let owner = Keys::generate();
    let co_maintainer = Keys::generate();
    let stranger = Keys::generate();
    let publisher = Client::new(owner.clone());
    publisher.add_relay(network.relay.clone()).await.unwrap();
    publisher.connect().await;
    publisher.wait_for_connection(Duration::from_secs(5)).await;
    let publish = |builder: EventBuilder, keys: &Keys| {
        let event = builder.sign_with_keys(keys).unwrap();
        let publisher = publisher.clone();
        async move {
            let output = publisher.send_event(&event).await.unwrap();
            assert!(output.failed.is_empty(), "{:?}", output.failed);
        }
    };
    let mut announcement = RepositoryAnnouncement::new("sample");
    announcement.maintainers = vec![co_maintainer.public_key()];
    publish(announcement.to_event_builder(), &owner).await;
    let state = |commit: &str| {
        RepositoryState::new("sample")
            .with_ref("refs/heads/main", commit)
            .unwrap()
            .to_event_builder()
    };
    publish(state(&first), &owner).await;

    let router_keys = Keys::generate();
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router = network
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
    assert!(
        watcher.poll().await.unwrap().is_empty(),
        "the first look replays nothing"
    );

    // A stranger's state naming a new commit is ignored, even a newer one.
    std::fs::write(repo.join("message.txt"), "pushed").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "push"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(state(&second), &stranger).await;
    assert!(watcher.poll().await.unwrap().is_empty());

    // The co-maintainer's signed state starts the run.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(state(&second), &co_maintainer).await;
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].commit, second);

    // A maintainer naming a commit the git server does not serve starts nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(state(&"e".repeat(40)), &owner).await;
    assert!(watcher.poll().await.unwrap().is_empty());
    assert_eq!(watcher.not_started().len(), 1);

    // A state published before its commit reached the server (another tool's order of
    // events): nothing starts at first, and the watcher tries again until the server has it.
    let clone = dir.path().join("clone");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            repo.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    git(&clone, &["config", "user.name", "Maintainer"]);
    git(&clone, &["config", "user.email", "m@example.invalid"]);
    std::fs::write(clone.join("message.txt"), "late").unwrap();
    git(&clone, &["commit", "--quiet", "-am", "late"]);
    let late = git(&clone, &["rev-parse", "HEAD"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(state(&late), &owner).await;
    assert!(watcher.poll().await.unwrap().is_empty());
    assert_eq!(watcher.not_started()[0].commit, late);
    git(
        &clone,
        &["push", "--quiet", "origin", "HEAD:refs/heads/incoming"],
    );
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "the late commit is retried: {started:?}");
    assert_eq!(started[0].commit, late);
    assert!(watcher.poll().await.unwrap().is_empty(), "and started once");

    publisher.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}
