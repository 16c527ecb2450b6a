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

/// The sample repository with `pipeline` committed as its pipeline file.
fn repo_with(dir: &std::path::Path, pipeline: &str) -> std::path::PathBuf {
    let (repo, _) = sample_repo(dir);
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    repo
}

/// A clone of `repo` at `at`, committing as `who`.
fn clone_of(repo: &std::path::Path, at: &std::path::Path, who: &str) -> std::path::PathBuf {
    git(
        repo,
        &[
            "clone",
            "--quiet",
            repo.to_str().unwrap(),
            at.to_str().unwrap(),
        ],
    );
    git(at, &["config", "user.name", who]);
    git(at, &["config", "user.email", "someone@example.invalid"]);
    at.to_path_buf()
}

/// A watcher of `repo` (fetched over file://) that learns its refs from `source` and asks
/// `router`, keeping its state under `dir`.
fn watch_config(
    repo: &std::path::Path,
    source: Source,
    router: PublicKey,
    dir: &std::path::Path,
) -> WatchConfig {
    WatchConfig {
        repo: format!("file://{}", repo.display()),
        source,
        router,
        data: dir.join("watcher"),
        git: GitPolicy {
            allow_local: true,
            timeout: Some(Duration::from_secs(30)),
            ..GitPolicy::default()
        },
        quorum: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_on_a_triggered_branch_starts_exactly_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with(dir.path(), PIPELINE);
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;

    let config = watch_config(&repo, Source::Poll, router_keys.public_key(), dir.path());
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
    let repo = repo_with(dir.path(), PIPELINE);
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
    let source = Source::Nip34 {
        owner: owner.public_key(),
        identifier: "sample".into(),
    };
    let config = watch_config(&repo, source, router_keys.public_key(), dir.path());
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
    let clone = clone_of(&repo, &dir.path().join("clone"), "Maintainer");
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

/// Pull requests (NIP-34 1618): a contributor's waits for a maintainer's approval of its
/// commit and pipeline file, runs without its release job, and its CI status carries the pull
/// request's context (gitworkshop's PR page); a maintainer's own pull request runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contributors_pull_request_runs_only_after_a_maintainer_approves() {
    use quorum_proto::approval::{ApprovalRequest, Decision, Verdict};
    use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
    const WITH_PULL_REQUESTS: &str = "on:\n  push:\n    branches: [main]\n  pull_request:\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n  release:\n    needs: [build]\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    release: true\n";
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with(dir.path(), WITH_PULL_REQUESTS);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());

    let owner = Keys::generate();
    let contributor = Keys::generate();
    let publisher = network.client().await;
    let publish = |builder: EventBuilder, keys: &Keys| {
        let event = builder.sign_with_keys(keys).unwrap();
        let publisher = &publisher;
        async move {
            publisher.publish_signed(&event).await.unwrap();
            event
        }
    };
    let mut announcement = RepositoryAnnouncement::new("sample");
    announcement.clone = vec![url.clone()];
    publish(announcement.to_event_builder(), &owner).await;
    let state = RepositoryState::new("sample")
        .with_ref("refs/heads/main", &first)
        .unwrap()
        .to_event_builder();
    publish(state, &owner).await;
    let repository = format!("30617:{}:sample", owner.public_key().to_hex());

    let router_keys = Keys::generate();
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let source = Source::Nip34 {
        owner: owner.public_key(),
        identifier: "sample".into(),
    };
    let config = watch_config(&repo, source, router_keys.public_key(), dir.path());
    let mut watcher = Watcher::new(config, network.client().await).unwrap();
    assert!(watcher.poll().await.unwrap().is_empty());

    // The contributor's fork, with a change, proposed as a pull request.
    let fork = clone_of(&repo, &dir.path().join("fork"), "Contributor");
    std::fs::write(fork.join("message.txt"), "proposed").unwrap();
    git(&fork, &["commit", "--quiet", "-am", "proposal"]);
    let proposed = git(&fork, &["rev-parse", "HEAD"]);
    let pull_request = |commit: &str, clone: &std::path::Path| {
        EventBuilder::new(Kind::from_u16(1618), "Please take this").tags([
            Tag::parse(["a", repository.as_str()]).unwrap(),
            Tag::parse(["c", commit]).unwrap(),
            Tag::parse(["clone", &format!("file://{}", clone.display())]).unwrap(),
            Tag::parse(["subject", "A change"]).unwrap(),
        ])
    };
    let pr = publish(pull_request(&proposed, &fork), &contributor).await;
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{:?}", watcher.not_started());
    assert_eq!(started[0].commit, proposed);

    // The router asks the maintainers first: the commit and the pipeline file at it.
    let client = network.client().await;
    let ask = loop {
        let asked = client
            .fetch(
                Filter::new()
                    .kind(Kind::from_u16(8701))
                    .author(router_keys.public_key()),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        if let Some(event) = asked.into_iter().next() {
            break event;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let request = ApprovalRequest::from_event(&ask).unwrap();
    assert_eq!(request.commit, proposed);
    assert_eq!(request.maintainers, vec![owner.public_key()]);
    assert_eq!(request.artifacts.len(), 1);
    assert_eq!(
        request.artifacts[0].name,
        "pull-request/.quorum/pipeline.yml"
    );
    let nothing_yet = client
        .fetch(
            Filter::new().kind(Kind::from_u16(5702)),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(nothing_yet.is_empty(), "nothing runs before the approval");
    // The contributor approving its own pull request counts for nothing.
    let verdict = |keys: &Keys| {
        Verdict::on(
            Decision::Approve,
            &ask,
            &request,
            Timestamp::now() + 3600u64,
        )
        .to_event_builder()
        .unwrap()
        .sign_with_keys(keys)
        .unwrap()
    };
    client.publish_signed(&verdict(&contributor)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still_nothing = client
        .fetch(
            Filter::new().kind(Kind::from_u16(5702)),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(still_nothing.is_empty(), "a contributor cannot approve");
    client.publish_signed(&verdict(&owner)).await.unwrap();

    let request = EventId::from_hex(&started[0].request).unwrap();
    let report = network.run_report(request, Duration::from_secs(60)).await;
    assert!(report.succeeded(), "{report:?}");
    let jobs: Vec<&str> = report.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        jobs,
        ["build"],
        "the release job is left out of a pull-request run"
    );
    assert!(report.published.release.is_none());
    let status = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(9842))
                .author(router_keys.public_key()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let status = status.first().expect("the run's CI status");
    let tag = |name: &str| {
        status
            .tags
            .iter()
            .find(|t| t.as_slice()[0] == name)
            .map(|t| t.as_slice()[1].clone())
    };
    assert_eq!(tag("o").as_deref(), Some("pull_request"));
    assert_eq!(tag("E"), Some(pr.id.to_hex()));
    assert_eq!(tag("K").as_deref(), Some("1618"));
    assert_eq!(tag("P"), Some(contributor.public_key().to_hex()));
    assert_eq!(tag("c"), Some(proposed.clone()));

    // The maintainer's own pull request runs without asking anyone.
    std::fs::write(fork.join("message.txt"), "by the maintainer").unwrap();
    git(
        &fork,
        &["commit", "--quiet", "-am", "maintainer's proposal"],
    );
    let own = git(&fork, &["rev-parse", "HEAD"]);
    publish(pull_request(&own, &fork), &owner).await;
    let started = watcher.poll().await.unwrap();
    assert_eq!(started.len(), 1, "{:?}", watcher.not_started());
    let request = EventId::from_hex(&started[0].request).unwrap();
    let report = network.run_report(request, Duration::from_secs(60)).await;
    assert!(report.succeeded(), "{report:?}");
    let asked = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(8701))
                .author(router_keys.public_key()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(
        asked.len(),
        1,
        "no approval asked for a maintainer's pull request"
    );

    client.shutdown().await;
    publisher.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}
