//! Git watchers as a quorum (protocol §15.10), on loopback: three watchers hold shares of a
//! dealt 2-of-3 key and poll the same repository; the quorum key, not any one watcher, signs the
//! run-pipeline request once two of them agreed on the commit and plan hash.
//!
//! A polling quorum dates its request with the commit's time; one that follows the
//! maintainers' signed NIP-34 state dates it with that state, so that a router takes it however
//! old the commit is (the sample commits are dated 2026-01-02).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::client::JobClient;
use quorum_proto::agreement::QuorumAttestation;
use quorum_proto::nip90::JobRequest;
use quorum_proto::run::RunRequest;
use quorum_runner::GitPolicy;
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::{DealtQuorum, QuorumSpec};
use quorum_watcher::{Source, StartedRun, WatchConfig, Watcher, WatcherQuorum};

const PIPELINE: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n";

fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(15),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(15),
            ..AgreementConfig::default()
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SigningConfig::default()
        },
    }
}

/// A repository whose `main` has a pipeline triggered by pushes to main.
fn repo_with_pipeline(dir: &Path) -> PathBuf {
    let (repo, _) = sample_repo(dir);
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), PIPELINE).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    repo
}

fn commit_change(repo: &Path, text: &str) -> String {
    std::fs::write(repo.join("message.txt"), text).unwrap();
    git(repo, &["commit", "--quiet", "-am", text]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Three watcher keys, a 2-of-3 key dealt to them (shares saved where each watcher keeps
/// them), and a mandate for it allowing `allow`, signed by the repository's owner and
/// published.
struct Quorum {
    keys: Vec<Keys>,
    quorum: PublicKey,
    mandate: EventId,
    dealt: DealtQuorum,
}

async fn quorum(network: &Network, dir: &Path, allow: &[u16]) -> Quorum {
    quorum_of(network, dir, allow, Keys::generate()).await
}

/// [`quorum`] for the repository of `owner`.
async fn quorum_of(network: &Network, dir: &Path, allow: &[u16], owner: Keys) -> Quorum {
    let dealt = quorum_testnet::quorum::deal_for(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build"],
            allow,
        },
        |n| share_dir(dir, n),
        owner,
    )
    .await;
    Quorum {
        keys: dealt.members.clone(),
        quorum: dealt.quorum,
        mandate: dealt.mandate.id,
        dealt,
    }
}

fn share_dir(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("watcher{n}/shares"))
}

/// Watcher `n` of `q`, polling `repo`.
async fn watcher(
    network: &Network,
    dir: &Path,
    q: &Quorum,
    n: usize,
    repo: &Path,
    router: PublicKey,
) -> Watcher {
    watcher_of(network, dir, q, n, repo, router, Source::Poll).await
}

/// Watcher `n` of `q`, learning where `repo`'s refs are from `source`.
async fn watcher_of(
    network: &Network,
    dir: &Path,
    q: &Quorum,
    n: usize,
    repo: &Path,
    router: PublicKey,
    source: Source,
) -> Watcher {
    let keys = q.keys[n].clone();
    let relays = vec![network.relay.clone()];
    let pinned = matches!(source, Source::Poll).then_some(q.mandate);
    let config = WatchConfig {
        repo: format!("file://{}", repo.display()),
        source,
        router,
        data: dir.join(format!("watcher{n}")),
        git: GitPolicy {
            allow_local: true,
            timeout: Some(Duration::from_secs(30)),
            ..GitPolicy::default()
        },
        quorum: Some(WatcherQuorum {
            // A polling watcher has no repository to look mandates up in and is told its
            // mandate; one following NIP-34 state finds the watcher mandate that lists it.
            mandate: pinned,
            share_dir: share_dir(dir, n),
            member: fast(),
            relays: relays.clone(),
            keys: keys.clone(),
        }),
    };
    let client = JobClient::connect(&relays, keys).await.unwrap();
    let mut watcher = Watcher::new(config, client).unwrap();
    assert!(
        watcher.poll().await.unwrap().is_empty(),
        "the first look replays nothing"
    );
    watcher
}

/// Every watcher polls once, all at the same time; each one's runs, in order.
async fn poll_all(watchers: Vec<Watcher>) -> Vec<(Watcher, Vec<StartedRun>)> {
    let tasks: Vec<_> = watchers
        .into_iter()
        .map(|mut w| {
            tokio::spawn(async move {
                let started = tokio::time::timeout(Duration::from_secs(90), w.poll())
                    .await
                    .expect("a poll ends")
                    .unwrap();
                (w, started)
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// The run-pipeline requests signed by `author` on the relay.
async fn run_requests(network: &Network, author: PublicKey) -> Vec<Event> {
    let client = network.client().await;
    let events = client
        .fetch(
            Filter::new().author(author).kind(Kind::from_u16(5700)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    events.into_iter().collect()
}

async fn attestation_for(network: &Network, quorum: PublicKey, request: EventId) -> Event {
    let client = network.client().await;
    let events = client
        .fetch(
            Filter::new()
                .author(quorum)
                .kind(Kind::from_u16(8708))
                .event(request),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    assert_eq!(events.len(), 1, "{events:?}");
    events.into_iter().next().unwrap()
}

/// Checks the one quorum-signed run request for `commit` and returns it with its attestation.
async fn the_signed_request(
    network: &Network,
    q: &Quorum,
    repo: &Path,
    commit: &str,
    router: PublicKey,
) -> (Event, QuorumAttestation) {
    the_signed_request_for(network, q, repo, commit, router, PIPELINE).await
}

/// [`the_signed_request`] of a repository whose pipeline is `pipeline`.
async fn the_signed_request_for(
    network: &Network,
    q: &Quorum,
    repo: &Path,
    commit: &str,
    router: PublicKey,
    pipeline: &str,
) -> (Event, QuorumAttestation) {
    let requests = run_requests(network, q.quorum).await;
    assert_eq!(requests.len(), 1, "exactly one run request: {requests:?}");
    let request = requests.into_iter().next().unwrap();
    request.verify().unwrap();
    let parsed = JobRequest::from_event(&request).unwrap();
    assert_eq!(parsed.providers, vec![router]);
    let run = RunRequest::from_request(&parsed, false).unwrap();
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", pipeline).unwrap();
    assert_eq!(run.repo, format!("file://{}", repo.display()));
    assert_eq!(run.commit, commit);
    assert_eq!(run.plan_hash, Some(plan.plan_hash()));
    assert_eq!(run.mandate, Some(q.mandate));
    assert!(run.runners.is_empty());

    // A second implementation (nostr-tools) verifies it too, as the relay serves it.
    let filter = serde_json::json!({ "ids": [request.id.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[network.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["count"], 1, "{out}");
    assert_eq!(report["valid"], 1, "{out}");

    let attestation = attestation_for(network, q.quorum, request.id).await;
    attestation.verify().unwrap();
    let parsed = QuorumAttestation::from_event(&attestation).unwrap();
    assert_eq!(parsed.job, request.id);
    assert_eq!(parsed.mandate, q.mandate);
    assert_eq!(parsed.commit, commit);
    (request, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_watchers_get_one_run_request_signed_by_the_quorum_key() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with_pipeline(dir.path());
    let q = quorum(&network, dir.path(), &[8708, 5700]).await;
    let router = Keys::generate().public_key();
    let mut watchers = Vec::new();
    for n in 0..3 {
        watchers.push(watcher(&network, dir.path(), &q, n, &repo, router).await);
    }

    let head = commit_change(&repo, "second");
    let commit_time: u64 = git(&repo, &["show", "-s", "--format=%ct", "HEAD"])
        .parse()
        .unwrap();
    let polled = poll_all(watchers).await;

    let (request, attestation) = the_signed_request(&network, &q, &repo, &head, router).await;
    assert_eq!(request.pubkey, q.quorum);
    assert_eq!(
        request.created_at.as_secs(),
        commit_time,
        "stamped with the commit's time, not a clock"
    );
    assert!(attestation.agreed.len() >= 2, "{attestation:?}");
    let members: Vec<PublicKey> = q.keys.iter().map(|k| k.public_key()).collect();
    assert!(attestation.agreed.iter().all(|a| members.contains(a)));
    // Every watcher the attestation names reports the run as started under that request.
    for (n, (watcher, started)) in polled.iter().enumerate() {
        if attestation.agreed.contains(&members[n]) {
            assert_eq!(started.len(), 1, "watcher {n}: {:?}", watcher.not_started());
            assert_eq!(started[0].request, request.id.to_hex());
            assert_eq!(started[0].commit, head);
        }
    }
    // No watcher signed a run request under its own key.
    for member in &members {
        assert!(run_requests(&network, *member).await.is_empty());
    }

    // Polling again starts nothing: the quorum's request is on the relays.
    let again = poll_all(polled.into_iter().map(|(w, _)| w).collect()).await;
    assert!(again.iter().all(|(_, started)| started.is_empty()));
    assert_eq!(run_requests(&network, q.quorum).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_sees_another_commit_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with_pipeline(dir.path());
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
    git(&clone, &["config", "user.name", "Someone else"]);
    git(&clone, &["config", "user.email", "else@example.invalid"]);
    let q = quorum(&network, dir.path(), &[8708, 5700]).await;
    let router = Keys::generate().public_key();
    let mut watchers = Vec::new();
    for n in 0..2 {
        watchers.push(watcher(&network, dir.path(), &q, n, &repo, router).await);
    }
    // The odd one out is pointed at a server where another commit is on main.
    watchers.push(watcher(&network, dir.path(), &q, 2, &clone, router).await);

    let head = commit_change(&repo, "honest");
    let other = commit_change(&clone, "odd");
    assert_ne!(head, other);
    let polled = poll_all(watchers).await;

    let (_, attestation) = the_signed_request(&network, &q, &repo, &head, router).await;
    let honest: Vec<PublicKey> = q.keys[..2].iter().map(|k| k.public_key()).collect();
    assert_eq!(
        attestation.agreed.iter().copied().collect::<Vec<_>>(),
        {
            let mut honest = honest.clone();
            honest.sort();
            honest
        },
        "the two honest watchers, and not the odd one out"
    );
    assert!(polled[0].1.len() == 1 && polled[1].1.len() == 1);
    let (odd, started) = &polled[2];
    assert!(started.is_empty());
    let refused = odd.not_started();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].commit, other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mandate_that_does_not_allow_run_requests_gets_none_signed() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with_pipeline(dir.path());
    let q = quorum(&network, dir.path(), &[8708]).await;
    let router = Keys::generate().public_key();
    let mut watchers = Vec::new();
    for n in 0..3 {
        watchers.push(watcher(&network, dir.path(), &q, n, &repo, router).await);
    }

    let head = commit_change(&repo, "second");
    let polled = poll_all(watchers).await;
    for (n, (watcher, started)) in polled.iter().enumerate() {
        assert!(started.is_empty(), "watcher {n}: {started:?}");
        let refused = watcher.not_started();
        assert_eq!(refused.len(), 1, "watcher {n}: {refused:?}");
        assert_eq!(refused[0].commit, head);
        assert!(
            refused[0]
                .reason
                .contains("does not allow the quorum to sign kind 5700"),
            "{}",
            refused[0].reason
        );
    }
    assert!(run_requests(&network, q.quorum).await.is_empty());
    for k in &q.keys {
        assert!(run_requests(&network, k.public_key()).await.is_empty());
    }

    // The owner signs a newer mandate for the same key that allows run requests: the running
    // watchers act under it at their next poll (they retry the commit), without a restart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut newer = quorum_proto::mandate::Mandate::from_event(&q.dealt.mandate).unwrap();
    newer.allow = [8708, 5700].into_iter().collect();
    let newer = newer
        .to_event_builder()
        .unwrap()
        .sign_with_keys(&q.dealt.owner)
        .unwrap();
    let client = network.client().await;
    client.publish_signed(&newer).await.unwrap();
    client.shutdown().await;
    let polled = poll_all(polled.into_iter().map(|(w, _)| w).collect()).await;
    assert!(
        polled.iter().any(|(_, started)| started.len() == 1),
        "{:?}",
        polled
            .iter()
            .map(|(w, _)| w.not_started().to_vec())
            .collect::<Vec<_>>()
    );
    let requests = run_requests(&network, q.quorum).await;
    assert_eq!(requests.len(), 1);
    let request = quorum_proto::run::RunRequest::from_request(
        &quorum_proto::nip90::JobRequest::from_event(&requests[0]).unwrap(),
        false,
    )
    .unwrap();
    assert_eq!(
        request.mandate,
        Some(newer.id),
        "the request names the mandate in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_quorum_following_the_signed_state_starts_a_run_the_router_takes_for_an_old_commit()
 {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let repo = repo_with_pipeline(dir.path());
    let url = format!("file://{}", repo.display());
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let q = quorum(&network, dir.path(), &[8708, 5700]).await;
    q.dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &first)
        .await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let source = Source::Nip34 {
        owner: q.dealt.owner.public_key(),
        identifier: "sample".into(),
    };
    let mut watchers = Vec::new();
    for n in 0..3 {
        watchers.push(
            watcher_of(
                &network,
                dir.path(),
                &q,
                n,
                &repo,
                router_keys.public_key(),
                source.clone(),
            )
            .await,
        );
    }

    // The maintainer pushes a commit dated long before a router's replay window (1 h) and
    // signs a state naming it.
    let head = commit_change(&repo, "second");
    let commit_time: u64 = git(&repo, &["show", "-s", "--format=%ct", "HEAD"])
        .parse()
        .unwrap();
    assert!(
        commit_time + 3600 < Timestamp::now().as_secs(),
        "the sample commit is older than the router's replay window"
    );
    let state = q
        .dealt
        .publish_state(&network.relay, &[("refs/heads/main", &head)])
        .await;
    let polled = poll_all(watchers).await;
    assert!(
        polled.iter().any(|(_, started)| started.len() == 1),
        "{:?}",
        polled
            .iter()
            .map(|(w, _)| w.not_started().to_vec())
            .collect::<Vec<_>>()
    );

    let (request, attestation) =
        the_signed_request(&network, &q, &repo, &head, router_keys.public_key()).await;
    assert_eq!(request.pubkey, q.quorum);
    assert_eq!(
        request.created_at, state.created_at,
        "dated with the signed state that moved the ref, not the commit"
    );
    assert!(attestation.agreed.len() >= 2, "{attestation:?}");

    // The router takes the quorum's request and runs the pipeline at that commit.
    let report = network
        .run_report(request.id, Duration::from_secs(120))
        .await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.commit, head);
    router.shutdown().await;
    runner.shutdown().await;
}

/// The whole offline path with a quorum at both ends. Three watchers, which no flag tells
/// about any mandate, find the owner's watcher mandate that lists them and have its key sign
/// the run request; the router takes the repository's *build* mandate (another quorum, of
/// runners that are not watchers) for the `mode: quorum` release job; the runners check the
/// source evidence, build, and their key signs the attestation and the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_quorum_starts_a_quorum_build_under_the_build_mandate() {
    const QUORUM_PIPELINE: &str = "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), QUORUM_PIPELINE).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let url = format!("file://{}", repo.display());
    let first = git(&repo, &["rev-parse", "HEAD"]);

    let builder_shares = |n: usize| dir.path().join(format!("builder{n}/shares"));
    let builders = quorum_testnet::quorum::deal(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build"],
            allow: &[8708, 8700],
        },
        builder_shares,
    )
    .await;
    quorum_testnet::quorum::next_second().await;
    let q = quorum_of(&network, dir.path(), &[8708, 5700], builders.owner.clone()).await;
    builders
        .publish_repository(&network.relay, &url, "refs/heads/main", &first)
        .await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let mut runners = Vec::new();
    for (n, keys) in builders.members.iter().enumerate() {
        runners.push(
            network
                .quorum_runner(
                    &dir.path().join(format!("builder{n}")),
                    keys.clone(),
                    &builder_shares(n),
                    fast(),
                )
                .await,
        );
    }
    let source = Source::Nip34 {
        owner: builders.owner.public_key(),
        identifier: "sample".into(),
    };
    let mut watchers = Vec::new();
    for n in 0..3 {
        watchers.push(
            watcher_of(
                &network,
                dir.path(),
                &q,
                n,
                &repo,
                router_keys.public_key(),
                source.clone(),
            )
            .await,
        );
    }

    let head = commit_change(&repo, "second");
    builders
        .publish_state(&network.relay, &[("refs/heads/main", &head)])
        .await;
    let polled = poll_all(watchers).await;
    assert!(
        polled.iter().any(|(_, started)| started.len() == 1),
        "{:?}",
        polled
            .iter()
            .map(|(w, _)| w.not_started().to_vec())
            .collect::<Vec<_>>()
    );
    let (request, _) = the_signed_request_for(
        &network,
        &q,
        &repo,
        &head,
        router_keys.public_key(),
        QUORUM_PIPELINE,
    )
    .await;

    let report = network
        .run_report(request.id, Duration::from_secs(120))
        .await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.commit, head);
    let release = report
        .published
        .release
        .as_deref()
        .expect("the quorum released the build");
    let client = network.client().await;
    let bindings = client
        .fetch(
            Filter::new()
                .author(builders.quorum)
                .kind(Kind::from_u16(8700)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    assert_eq!(
        bindings.iter().map(|e| e.id.to_hex()).collect::<Vec<_>>(),
        vec![release.to_string()],
        "the build quorum's key, not the watchers' or the router's, signed the release"
    );
    router.shutdown().await;
    for runner in runners {
        runner.shutdown().await;
    }
}
