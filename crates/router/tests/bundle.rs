//! The verification bundle end to end, through the real path: three runner DVMs (bubblewrap)
//! hold shares of a dealt 2-of-3 key; the repository's owner publishes its announcement and
//! state; the engine runs the pipeline's `mode: quorum` release job on them; the release
//! (`release::publish_release_with` with a bundle uploader) stores the bundle on Blossom and
//! names it in its 1063 and 3063 events; a user downloads the bundle and the artifact and
//! verifies the artifact from the bundle alone, with no relay.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_blossom::client::BlossomClient;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::bundle::{VerificationBundle, bundles_named};
use quorum_router::quorum::QuorumContext;
use quorum_router::release::{ReleaseOptions, publish_release_with};
use quorum_router::verify::{Expectation, verify_file};
use quorum_router::{EngineConfig, QuietRun, RunContext, execute};
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::QuorumSpec;

const PIPELINE: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";

/// Agreement and signing waits short enough for a test, long enough for three builds.
fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(60),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(20),
            ..AgreementConfig::default()
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SigningConfig::default()
        },
    }
}

/// The sample project with the pipeline committed: members read it at the commit.
fn project(dir: &Path) -> (std::path::PathBuf, String) {
    let (repo, _) = sample_repo(dir);
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), PIPELINE).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_release_stores_a_bundle_that_verifies_the_artifact_offline() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = project(dir.path());
    let url = format!("file://{}", repo.display());
    let share_dir = |n: usize| dir.path().join(format!("runner{n}")).join("shares");
    let dealt = quorum_testnet::quorum::deal(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build"],
            allow: &[8708, 8700],
        },
        share_dir,
    )
    .await;
    dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &commit)
        .await;
    let mut runners = Vec::new();
    for (n, keys) in dealt.members.iter().enumerate() {
        let data = dir.path().join(format!("runner{n}"));
        runners.push(
            network
                .quorum_runner(&data, keys.clone(), &share_dir(n), fast())
                .await,
        );
    }
    let client = network.client().await;
    let quorum = QuorumContext::new(dealt.mandate.clone())
        .unwrap()
        .with_source(&client, &url, &commit)
        .await;
    assert!(quorum.source.is_ok(), "{:?}", quorum.source);
    let context = RunContext {
        repo: url.clone(),
        commit: commit.clone(),
        repo_id: Some(dealt.repo()),
        quorum: Some(quorum),
        ..RunContext::default()
    };
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let outcome = execute(
        &client,
        &plan,
        &context,
        &EngineConfig::default(),
        Vec::new(),
        &mut QuietRun,
    )
    .await;
    assert!(outcome.succeeded, "{:?}", outcome.jobs[0].state);

    let release = publish_release_with(
        &client,
        &plan,
        &context,
        &outcome,
        &ReleaseOptions {
            bundle_uploader: Some(BlossomClient::new(Keys::generate())),
            ..ReleaseOptions::default()
        },
    )
    .await
    .unwrap()
    .expect("a release");
    assert_eq!(release.signer, dealt.quorum);
    assert_eq!(release.bundle_error, None);
    let (bundle_sha, bundle_urls) = release.bundle.clone().expect("a bundle was stored");
    assert_eq!(bundle_urls.len(), 1, "{bundle_urls:?}");
    assert!(
        bundle_urls[0].starts_with(network.blossom.as_str()),
        "{bundle_urls:?}"
    );

    // The 1063 and the 3063 of the artifact both name the bundle.
    let named: Vec<EventId> = release
        .files
        .iter()
        .chain(&release.assets)
        .copied()
        .collect();
    assert_eq!(named.len(), 2);
    let events = client
        .fetch(Filter::new().ids(named.clone()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(
            bundles_named(event),
            vec![(bundle_sha, bundle_urls.clone())],
            "kind {}",
            event.kind
        );
    }

    // A user downloads the artifact and the bundle (re-hashed on the way) ...
    let artifact = &outcome.jobs[0].report.as_ref().unwrap().artifacts[0];
    let artifact_sha = Sha256Hex::parse(&artifact.blob.sha256).unwrap();
    let downloader = BlossomClient::new(Keys::generate());
    let file = dir.path().join("hello.txt");
    downloader
        .download_url(
            &url::Url::parse(&artifact.blob.urls[0]).unwrap(),
            artifact_sha,
            &file,
        )
        .await
        .unwrap();
    let bundle_file = dir.path().join("bundle.json");
    downloader
        .download_url(
            &url::Url::parse(&bundle_urls[0]).unwrap(),
            bundle_sha,
            &bundle_file,
        )
        .await
        .unwrap();
    let bundle = VerificationBundle::from_json(&std::fs::read(&bundle_file).unwrap()).unwrap();
    assert!(bundle.covers(&artifact_sha));
    let record = outcome.jobs[0].quorum.as_ref().unwrap();
    for id in [
        &dealt.mandate.id.to_hex(),
        record.attestation.as_ref().unwrap(),
        record.release.as_ref().unwrap(),
    ] {
        assert!(
            bundle.events.iter().any(|e| e.id.to_hex() == *id),
            "the bundle lacks {id}"
        );
    }

    // ... and verifies the artifact from the bundle alone: no relay at all.
    let expect = Expectation {
        repo: Some(dealt.repo()),
        ..Expectation::default()
    };
    let verified = verify_file(None, &file, Some(&bundle_file), &expect)
        .await
        .unwrap();
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.release, Some(release.binding.to_hex()));
    assert_eq!(verified.quorum, Some(dealt.quorum.to_hex()));
    assert_eq!(verified.commit, Some(commit.clone()));
    assert_eq!(verified.mandate, Some(dealt.mandate.id.to_hex()));
    assert_eq!(
        verified.source.as_ref().map(|s| s.url.as_str()),
        Some(url.as_str())
    );
    assert_eq!(verified.job.as_deref(), Some("build"));
    assert_eq!(verified.plan_hash, Some(plan.plan_hash()));
    assert_eq!(verified.bundles, vec![bundle_sha.to_hex()]);
    assert!(verified.agreed.len() >= 2, "{verified:#?}");
    // The relay's verifier finds the same bundle through the release events.
    let online = quorum_testnet::Network::client(&network).await;
    let verified = verify_file(Some(&online), &file, None, &expect)
        .await
        .unwrap();
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.bundles, vec![bundle_sha.to_hex()]);
    online.shutdown().await;

    // nostr-tools re-verifies what the quorum key signed: the attestation and the binding.
    let filter = serde_json::json!({ "authors": [dealt.quorum.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[network.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["count"], 2, "{out}");
    assert_eq!(report["valid"], 2, "{out}");

    client.shutdown().await;
    for runner in runners {
        runner.shutdown().await;
    }
}
