//! Quorum jobs through the engine, end to end on loopback: three runner DVMs with bubblewrap
//! hold shares of one quorum key; a `mode: quorum` build goes to all of them as one request,
//! and the job succeeds only on an attestation (and release binding) signed by the quorum key.
//!
//! Members derive every job from the maintainer's code (protocol §16): each test commits its
//! pipeline to the repository, and the owner publishes the announcement (with the `file://`
//! URL the engine uses) and a state naming the commit, which the engine names as the source.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::Dvm;
use quorum_router::quorum::QuorumContext;
use quorum_router::{EngineConfig, JobState, QuietRun, RunContext, execute};
use quorum_testkit::git::{commit_file, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::{DealtQuorum, QuorumSpec};

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

/// Three runners, a 2-of-3 key dealt to them (shares saved as the runners keep them), and a
/// mandate for it signed by the repository's owner and published.
struct Fleet {
    runners: Vec<Dvm>,
    dealt: DealtQuorum,
    relay: RelayUrl,
}

async fn fleet(network: &Network, dir: &Path, allow: &[u16]) -> Fleet {
    fleet_with(network, dir, allow, &[]).await
}

/// Appends to the build's output: what a backdoored build agent does.
fn backdoor(work: &Path) {
    tamper(work, "backdoor\n");
}

/// Another, independent backdoor.
fn other_backdoor(work: &Path) {
    tamper(work, "miner\n");
}

fn tamper(work: &Path, extra: &str) {
    let file = work.join("out/hello.txt");
    let mut bytes = std::fs::read(&file).expect("the build wrote out/hello.txt");
    bytes.extend_from_slice(extra.as_bytes());
    std::fs::write(&file, bytes).unwrap();
}

/// [`fleet`] where runner `i` tampers with `tampers[i]`, if given.
async fn fleet_with(network: &Network, dir: &Path, allow: &[u16], tampers: &[fn(&Path)]) -> Fleet {
    let share_dir = |n: usize| dir.join(format!("runner{n}")).join("shares");
    let dealt = quorum_testnet::quorum::deal(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build", "package"],
            allow,
        },
        share_dir,
    )
    .await;
    let mut runners = Vec::new();
    for (n, k) in dealt.members.iter().enumerate() {
        let data = dir.join(format!("runner{n}"));
        runners.push(match tampers.get(n) {
            Some(tamper) => {
                network
                    .tampering_quorum_runner(&data, k.clone(), &share_dir(n), fast(), *tamper)
                    .await
            }
            None => {
                network
                    .quorum_runner(&data, k.clone(), &share_dir(n), fast())
                    .await
            }
        });
    }
    Fleet {
        runners,
        dealt,
        relay: network.relay.clone(),
    }
}

impl Fleet {
    fn quorum(&self) -> PublicKey {
        self.dealt.quorum
    }

    fn mandate(&self) -> &Event {
        &self.dealt.mandate
    }

    /// Commits `pipeline` as the repository's `.quorum/pipeline.yml`, has the owner publish the
    /// repository's announcement and a state naming that commit, and returns the run of it
    /// under this fleet's mandate, named as the owner's repository, with its source looked up
    /// as the engine does.
    async fn run_context(
        &self,
        client: &quorum_dvm::client::JobClient,
        repo: &Path,
        pipeline: &str,
    ) -> RunContext {
        let commit = commit_file(repo, ".quorum/pipeline.yml", pipeline, "pipeline");
        let url = format!("file://{}", repo.display());
        self.dealt
            .publish_repository(&self.relay, &url, "refs/heads/main", &commit)
            .await;
        let quorum = QuorumContext::new(self.mandate().clone())
            .unwrap()
            .with_source(client, &url, &commit)
            .await;
        assert!(quorum.source.is_ok(), "{:?}", quorum.source);
        RunContext {
            repo: url,
            commit,
            repo_id: Some(self.dealt.repo()),
            quorum: Some(quorum),
            ..RunContext::default()
        }
    }

    /// Nothing under the quorum key exists on the relay.
    async fn assert_nothing_signed(&self, client: &quorum_dvm::client::JobClient) {
        let signed = client
            .fetch(Filter::new().author(self.quorum()), Duration::from_secs(3))
            .await
            .unwrap();
        assert!(signed.is_empty(), "the quorum key signed: {signed:?}");
    }

    async fn stop(self, client: quorum_dvm::client::JobClient) {
        client.shutdown().await;
        for runner in self.runners {
            runner.shutdown().await;
        }
    }
}

async fn run(
    client: &quorum_dvm::client::JobClient,
    plan: &quorum_pipeline::Plan,
    context: &RunContext,
) -> quorum_router::RunOutcome {
    execute(
        client,
        plan,
        context,
        &EngineConfig::default(),
        Vec::new(),
        &mut QuietRun,
    )
    .await
}

const PIPELINE: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_runners_signs_the_release_of_what_they_all_built() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    let quorum = fleet.quorum();
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, PIPELINE).await;
    let commit = context.commit.clone();
    let outcome = run(&client, &plan, &context).await;
    let build = &outcome.jobs[0];
    assert!(outcome.succeeded, "{:?}", build.state);
    let record = build.quorum.as_ref().expect("a quorum record");
    assert_eq!(record.pubkey, quorum.to_hex());
    assert_eq!(record.threshold, 2);
    assert_eq!(record.members.len(), 3);
    assert_eq!(record.mandate, fleet.mandate().id.to_hex());
    assert!(record.agreed.len() >= 2, "{record:?}");
    assert!(record.disagreed.is_empty(), "{record:?}");
    let provider = build.provider.as_ref().unwrap();
    assert!(
        record.agreed.contains(provider),
        "the chosen result is an agreeing member's"
    );

    // The attestation and binding are plain BIP-340 events under the quorum key.
    let attestation = EventId::from_hex(record.attestation.as_ref().unwrap()).unwrap();
    let binding = EventId::from_hex(record.release.as_ref().unwrap()).unwrap();
    let events = client
        .fetch(
            Filter::new().ids([attestation, binding]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.pubkey, quorum);
        event.verify().unwrap();
    }
    let binding_event = events.iter().find(|e| e.id == binding).unwrap();
    let parsed = quorum_proto::release::ReleaseBinding::from_event(binding_event).unwrap();
    assert_eq!(parsed.commit, commit);
    let sha = &build.report.as_ref().unwrap().artifacts[0].blob.sha256;
    assert_eq!(parsed.artifacts[0].name, "build/out/hello.txt");
    assert_eq!(parsed.artifacts[0].sha256.to_string(), *sha);

    // The run's release is the quorum's binding.
    let release = quorum_router::release::publish_release(&client, &plan, &context, &outcome)
        .await
        .unwrap()
        .expect("a release");
    assert_eq!(release.binding, binding);
    assert_eq!(release.signer, quorum);
    assert_eq!(release.files.len(), 1);

    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_that_all_differ_sign_nothing_and_the_job_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    // Every runner writes different bytes: nanoseconds of its own clock.
    let pipeline = "on: [push]\njobs:\n  build:\n    run: mkdir -p out && date +%s%N > out/t\n    artifacts: [out/t]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n";
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", pipeline).unwrap();
    let client = network.client().await;
    let context = RunContext {
        repo_id: None,
        ..fleet.run_context(&client, &repo, pipeline).await
    };
    let outcome = execute(
        &client,
        &plan,
        &context,
        &EngineConfig::default(),
        Vec::new(),
        &mut QuietRun,
    )
    .await;
    assert!(!outcome.succeeded);
    let build = &outcome.jobs[0];
    let JobState::Failed { reason } = &build.state else {
        panic!("{:?}", build.state)
    };
    assert!(
        reason.contains("the quorum signed no attestation"),
        "{reason}"
    );
    assert!(reason.contains("no agreement"), "{reason}");
    let record = build.quorum.as_ref().unwrap();
    assert!(record.attestation.is_none());
    assert!(record.agreed.is_empty());
    fleet.assert_nothing_signed(&client).await;
    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_job_without_a_fitting_mandate_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    let mut context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let run = |context: RunContext| {
        let client = &client;
        let plan = &plan;
        async move {
            execute(
                client,
                plan,
                &context,
                &EngineConfig::default(),
                Vec::new(),
                &mut QuietRun,
            )
            .await
        }
    };
    let outcome = run(context.clone()).await;
    let JobState::Failed { reason } = &outcome.jobs[0].state else {
        panic!()
    };
    assert!(reason.contains("the run has no mandate"), "{reason}");

    // A mandate for 2 of 3 does not serve a job that asks for 3 of 5 (its source is in order).
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    context = fleet.run_context(&client, &repo, PIPELINE).await;
    let five = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        &PIPELINE
            .replace("replicas: 3", "replicas: 5")
            .replace("threshold: 2", "threshold: 3"),
    )
    .unwrap();
    let outcome = execute(
        &client,
        &five,
        &context,
        &EngineConfig::default(),
        Vec::new(),
        &mut QuietRun,
    )
    .await;
    let JobState::Failed { reason } = &outcome.jobs[0].state else {
        panic!()
    };
    assert!(reason.contains("asks for 3 of 5 replicas"), "{reason}");
    assert!(reason.contains("is for 2 of 3"), "{reason}");
    assert!(outcome.jobs[0].request.is_none(), "nothing was sent");
    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_refuse_a_mandate_that_does_not_allow_release_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    // The maintainer allowed attestations only.
    let fleet = fleet(&network, dir.path(), &[8708]).await;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, PIPELINE).await;
    let outcome = run(&client, &plan, &context).await;
    let JobState::Failed { reason } = &outcome.jobs[0].state else {
        panic!("{:?}", outcome.jobs[0].state)
    };
    assert!(
        reason.contains("does not allow the quorum to sign kind 8700"),
        "{reason}"
    );
    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backdoored_builder_of_three_is_outvoted_and_named_and_the_release_has_the_honest_bytes()
 {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet_with(&network, dir.path(), &[8708, 8700], &[backdoor]).await;
    let liar = fleet.runners[0].public_key().to_hex();
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, PIPELINE).await;
    let outcome = run(&client, &plan, &context).await;
    let build = &outcome.jobs[0];
    assert!(outcome.succeeded, "{:?}", build.state);
    let record = build.quorum.as_ref().unwrap();
    assert_eq!(record.agreed.len(), 2, "{record:?}");
    assert!(!record.agreed.contains(&liar));
    assert_eq!(record.disagreed, vec![liar.clone()], "the liar is named");
    // The release binding, signed by the quorum, carries the honest hash.
    let honest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"hello from quorum\n",
    ));
    let binding = EventId::from_hex(record.release.as_ref().unwrap()).unwrap();
    let events = client
        .fetch(Filter::new().id(binding), Duration::from_secs(5))
        .await
        .unwrap();
    let parsed = quorum_proto::release::ReleaseBinding::from_event(&events[0]).unwrap();
    assert_eq!(parsed.artifacts[0].sha256.to_string(), honest);
    assert_eq!(events[0].pubkey, fleet.quorum());
    assert_eq!(
        build.report.as_ref().unwrap().artifacts[0].blob.sha256,
        honest,
        "the job's outputs are an agreeing member's"
    );
    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_independently_backdoored_builders_of_three_get_nothing_signed() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet_with(
        &network,
        dir.path(),
        &[8708, 8700],
        &[backdoor, other_backdoor],
    )
    .await;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, PIPELINE).await;
    let outcome = run(&client, &plan, &context).await;
    assert!(!outcome.succeeded);
    let build = &outcome.jobs[0];
    let JobState::Failed { reason } = &build.state else {
        panic!("{:?}", build.state)
    };
    assert!(
        reason.contains("the quorum signed no attestation"),
        "{reason}"
    );
    // No release: publishing refuses a failed run, and the quorum key signed nothing at all.
    assert!(
        quorum_router::release::publish_release(&client, &plan, &context, &outcome)
            .await
            .unwrap()
            .is_none()
    );
    fleet.assert_nothing_signed(&client).await;
    fleet.stop(client).await;
}

/// The same quorum job through the router DVM: the run-pipeline request names the mandate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_runs_a_quorum_job_under_the_mandate_its_request_names() {
    router_runs_a_quorum_job(true).await;
}

/// A request that names no mandate (as a watcher's does) but names the repository: the router
/// takes the maintainers' mandate in force for the pipeline's quorum jobs, and the quorum key
/// of that mandate signs the attestation. The router publishes what `quorum run` publishes —
/// the release (NIP-94 with download URLs, the quorum's binding, NIP-82) and the CI status —
/// and `quorum verify`'s code accepts the released bytes for the repository, with URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_takes_the_repositorys_mandate_when_the_request_names_none() {
    router_runs_a_quorum_job(false).await;
}

async fn router_runs_a_quorum_job(name_the_mandate: bool) {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    // The mandate-naming variant builds without releasing; the other releases.
    let pipeline = if name_the_mandate {
        PIPELINE.replace("    release: true\n", "")
    } else {
        PIPELINE.to_string()
    };
    let commit = commit_file(&repo, ".quorum/pipeline.yml", &pipeline, "pipeline");
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    // The router names the maintainer-signed evidence the owner published for this URL.
    let url = format!("file://{}", repo.display());
    fleet
        .dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &commit)
        .await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let mut run = quorum_proto::run::RunRequest::new(url, &commit);
    if name_the_mandate {
        run.mandate = Some(fleet.mandate().id);
    } else {
        run.repo_id = Some(quorum_proto::nip34::RepoCoordinate::new(
            fleet.dealt.owner.public_key(),
            "sample",
        ));
    }
    run.runners = fleet.runners.iter().map(Dvm::public_key).collect();
    let client = network.client().await;
    let outcome = client
        .run(
            &run.to_request().provider(router_keys.public_key()),
            false,
            Duration::from_secs(120),
            &mut quorum_dvm::client::Quiet,
        )
        .await
        .unwrap();
    let quorum_dvm::client::JobOutcome::Result { content, .. } = outcome else {
        panic!("{outcome:?}")
    };
    let report: quorum_proto::run::RunReport = serde_json::from_str(&content).unwrap();
    assert!(report.succeeded(), "{report:?}");
    // The quorum key signed the attestation of the router's sub-request.
    let attestations = client
        .fetch(
            Filter::new()
                .kind(quorum_proto::agreement::QUORUM_ATTESTATION)
                .author(fleet.quorum()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(attestations.len(), 1);
    let request = EventId::from_hex(report.jobs[0].request.as_ref().unwrap()).unwrap();
    let attestation =
        quorum_proto::agreement::QuorumAttestation::from_event(&attestations[0]).unwrap();
    assert_eq!(attestation.job, request);
    assert_eq!(attestation.mandate, fleet.mandate().id);
    if !name_the_mandate {
        let published = &report.published;
        assert!(published.problems.is_empty(), "{published:?}");
        let binding = published.release.as_deref().expect("a release binding");
        assert!(published.software_release.is_some(), "{published:?}");
        assert!(published.ci_status.is_some(), "{published:?}");
        let events = client
            .fetch(
                Filter::new().kinds([
                    quorum_proto::release::FILE_METADATA,
                    quorum_proto::release::RELEASE_BINDING,
                    quorum_proto::nipc1::CI_WORKFLOW_RESULT,
                ]),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let signed_by = |kind: Kind| {
            events
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.pubkey)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            signed_by(quorum_proto::release::RELEASE_BINDING),
            vec![fleet.quorum()],
            "the quorum signs the binding"
        );
        assert_eq!(
            signed_by(quorum_proto::release::FILE_METADATA),
            vec![router_keys.public_key()],
            "the router signs the file metadata"
        );
        assert_eq!(
            signed_by(quorum_proto::nipc1::CI_WORKFLOW_RESULT),
            vec![router_keys.public_key()]
        );
        assert!(events.iter().any(|e| e.id.to_hex() == binding));

        // The released bytes, fetched from a URL the run reported, verify for the repository.
        let artifact = &report.jobs[0].artifacts[0];
        let bytes = reqwest::get(&artifact.blob.urls[0])
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let file = dir.path().join("hello.txt");
        std::fs::write(&file, &bytes).unwrap();
        let expect = quorum_router::verify::Expectation {
            repo: run.repo_id.clone(),
            ..Default::default()
        };
        let verification = quorum_router::verify::verify_file(Some(&client), &file, None, &expect)
            .await
            .unwrap();
        assert!(verification.ok, "{:?}", verification.problems);
        assert!(
            !verification.urls.is_empty(),
            "verify finds the download URLs"
        );
    }
    client.shutdown().await;
    router.shutdown().await;
    for runner in fleet.runners {
        runner.shutdown().await;
    }
}

/// A quorum chain: `package` needs only `build`, both quorum jobs of one mandate. The engine
/// sends one request; the quorum key, not a runner and not the engine, signs the request for
/// `package`, pinned to `build`'s attestation.
const CHAIN: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n  package:\n    needs: build\n    run: sh build.sh\n    artifacts: [out/dist]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_chain_stops_where_the_mandate_does_not_let_the_quorum_hand_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    // No 5702 in `allow`: the quorum may not sign the next step's request.
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", CHAIN).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, CHAIN).await;
    let outcome = run(&client, &plan, &context).await;
    assert!(!outcome.succeeded);
    let JobState::Failed { reason } = &outcome.jobs[0].state else {
        panic!("{:?}", outcome.jobs[0].state)
    };
    assert!(
        reason.contains("does not allow the quorum to sign kind 5702"),
        "{reason}"
    );
    let JobState::Skipped { reason } = &outcome.jobs[1].state else {
        panic!("{:?}", outcome.jobs[1].state)
    };
    assert!(
        reason.contains("the quorum chain stopped at build"),
        "{reason}"
    );
    fleet.stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_quorum_chain_the_quorum_key_signs_the_next_steps_request() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet(&network, dir.path(), &[8708, 8700, 5702]).await;
    let quorum = fleet.quorum();
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", CHAIN).unwrap();
    let client = network.client().await;
    let context = fleet.run_context(&client, &repo, CHAIN).await;
    let outcome = run(&client, &plan, &context).await;
    assert!(
        outcome.succeeded,
        "{:?}",
        outcome.jobs.iter().map(|j| &j.state).collect::<Vec<_>>()
    );
    let build = outcome.jobs[0].quorum.as_ref().unwrap();
    let package = &outcome.jobs[1];
    let package_quorum = package.quorum.as_ref().unwrap();
    assert!(
        package_quorum.release.is_some(),
        "the last step is released"
    );

    // The request for `package` is signed by the quorum key and pinned to build's attestation.
    let request_id = EventId::from_hex(package.request.as_ref().unwrap()).unwrap();
    let found = client
        .fetch(Filter::new().id(request_id), Duration::from_secs(5))
        .await
        .unwrap();
    let request = &found[0];
    assert_eq!(request.pubkey, quorum);
    request.verify().unwrap();
    let parsed = quorum_proto::nip90::JobRequest::from_event(request).unwrap();
    assert_eq!(
        parsed.param_value(quorum_proto::chain::PARAM_UPSTREAM_RESULT),
        build.attestation.as_deref()
    );
    assert_eq!(parsed.param_value("job"), Some("package"));
    // Nobody else handed the chain on: no runner signed a request for `package`.
    let others = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(5702))
                .authors(fleet.runners.iter().map(Dvm::public_key)),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(others.is_empty(), "{others:?}");
    fleet.stop(client).await;
}

/// A release job followed by an approval gate that shows it (docs/protocol.md §12).
const GATED: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n  approve:\n    needs: build\n    approval:\n      required: 1\n      show: [build]\n";

/// Approval before release: the quorum signs the attestation, but no release binding while
/// the gate is open, and none at all when the maintainer rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_release_binding_is_signed_before_the_approval_and_none_when_it_is_refused() {
    use quorum_proto::approval::{APPROVAL_REQUEST, ApprovalRequest, Decision, Verdict};
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let fleet = fleet(&network, dir.path(), &[8708, 8700]).await;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", GATED).unwrap();
    let client = network.client().await;
    let mut context = fleet.run_context(&client, &repo, GATED).await;
    context.maintainers = vec![fleet.dealt.owner.public_key()];
    let owner = fleet.dealt.owner.clone();
    let quorum = fleet.quorum();
    let watcher = network.client().await;
    // The maintainer: waits for the gate's request, checks that the quorum has signed its
    // attestation but no binding yet, and rejects.
    let maintainer = tokio::spawn(async move {
        let request = loop {
            let found = watcher
                .fetch(Filter::new().kind(APPROVAL_REQUEST), Duration::from_secs(2))
                .await
                .unwrap();
            if let Some(request) = found.into_iter().next() {
                break request;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let parsed = ApprovalRequest::from_event(&request).unwrap();
        assert_eq!(parsed.job.as_deref(), Some("approve"));
        let signed = watcher
            .fetch(Filter::new().author(quorum), Duration::from_secs(2))
            .await
            .unwrap();
        let kinds: Vec<u16> = signed.iter().map(|e| e.kind.as_u16()).collect();
        assert_eq!(
            kinds,
            [8708],
            "before the approval only the attestation is signed"
        );
        let verdict = Verdict::on(Decision::Reject, &request, &parsed, Timestamp::now() + 600);
        let rejection = verdict
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&owner)
            .unwrap();
        watcher.publish_signed(&rejection).await.unwrap();
        watcher.shutdown().await;
    });
    let outcome = run(&client, &plan, &context).await;
    maintainer.await.unwrap();
    assert!(!outcome.succeeded);
    assert!(outcome.jobs[0].succeeded(), "{:?}", outcome.jobs[0].state);
    assert!(
        matches!(&outcome.jobs[1].state, JobState::Failed { reason } if reason.contains("rejected")),
        "{:?}",
        outcome.jobs[1].state
    );
    // The members saw the rejection: they never sign the binding.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let signed = client
        .fetch(
            Filter::new().author(quorum).kind(Kind::Custom(8700)),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(signed.is_empty(), "a binding was signed: {signed:?}");
    let release = quorum_router::release::publish_release(&client, &plan, &context, &outcome)
        .await
        .unwrap();
    assert!(release.is_none(), "a failed run releases nothing");
    fleet.stop(client).await;
}
