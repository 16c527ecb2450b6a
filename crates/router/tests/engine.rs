//! The engine runs pipelines end to end on loopback: a real relay and Blossom server, runner
//! DVMs with bubblewrap, a generic NIP-90 DVM, and a git repository made by the test.

use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::client::JobClient;
use quorum_dvm::{Dvm, DvmConfig, Job, JobContext, JobFailure, JobHandler, JobOutput};
use quorum_proto::nip89::{Capabilities, JobLimits, Offer, Price};
use quorum_router::{EngineConfig, JobRecord, JobState, RunContext, RunReporter, execute};
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;

/// A malware scanner as any NIP-90 DVM would be (kind 5500): it reads a `url` input, fetches
/// nothing of Quorum CI, and answers `CLEAN` with what it was given.
struct Scanner;

impl JobHandler for Scanner {
    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::from_u16(5500)]
    }

    fn offer(&self) -> Offer {
        Offer {
            capabilities: Capabilities {
                arch: "any".into(),
                os: "any".into(),
                sandbox: "none".into(),
                toolchains: vec![],
                network: true,
                images: false,
                require_image: false,
            },
            price: Price::default(),
            limits: JobLimits {
                concurrency: 1,
                max_timeout_secs: 60,
                max_request_bytes: 65536,
            },
        }
    }

    async fn run(&self, job: Job, _ctx: JobContext) -> Result<JobOutput, JobFailure> {
        let url = job
            .request
            .inputs
            .iter()
            .find(|i| i.input_type == quorum_proto::nip90::InputType::Url)
            .ok_or_else(|| JobFailure::new("no url input"))?;
        Ok(JobOutput {
            content: format!("CLEAN {}", url.data),
        })
    }
}

#[derive(Default)]
struct Recorder {
    started: Vec<String>,
    finished: Vec<String>,
    lines: usize,
}

impl RunReporter for Recorder {
    fn job_started(&mut self, job: &quorum_pipeline::PlannedJob) {
        self.started.push(job.id.clone());
    }
    fn job_progress(&mut self, _job: &str, _provider: &PublicKey, _line: &str) {
        self.lines += 1;
    }
    fn job_finished(&mut self, record: &JobRecord) {
        self.finished.push(record.id.clone());
    }
}

const PIPELINE: &str = r#"
name: ci
on: [push]
jobs:
  test:
    run: test "$(cat message.txt)" = quorum && echo tests passed
  build:
    needs: test
    run: sh build.sh
    artifacts: [out/hello.txt, out/dist]
  scan:
    needs: build
    uses: dvm
    kind: 5500
    inputs:
      - { type: url, value: "${{ jobs.build.artifacts['out/hello.txt'].url }}" }
  lint:
    run: exit 3
  docs:
    needs: lint
    run: echo never
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_in_order_fails_over_and_skips_dependants_of_failures() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    // The first runner refuses local repositories, so every job must fail over to the second.
    let refuses = network.runner(&dir.path().join("r1"), false).await;
    let works = network.runner(&dir.path().join("r2"), true).await;
    let scanner = Dvm::start(
        DvmConfig::new(
            vec![network.relay.clone()],
            dir.path().join("scan"),
            "scanner",
        ),
        Keys::generate(),
        Scanner,
    )
    .await
    .unwrap();

    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).expect("valid pipeline");
    let client = JobClient::connect(std::slice::from_ref(&network.relay), Keys::generate())
        .await
        .unwrap();
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit: commit.clone(),
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![refuses.public_key(), works.public_key()],
        ..EngineConfig::default()
    };
    let mut recorder = Recorder::default();
    let outcome = execute(&client, &plan, &context, &config, Vec::new(), &mut recorder).await;

    let by_id = |id: &str| outcome.jobs.iter().find(|j| j.id == id).unwrap().clone();
    assert!(!outcome.succeeded, "lint fails, so the run fails");
    for id in ["test", "build", "scan"] {
        assert_eq!(by_id(id).state, JobState::Succeeded, "{:?}", by_id(id));
    }
    // Jobs start on different runners; whichever started on the refusing one failed over.
    let refusing = refuses.public_key().to_hex();
    let working = works.public_key().to_hex();
    for id in ["test", "build", "lint"] {
        let job = by_id(id);
        assert_eq!(job.provider.as_ref(), Some(&working), "{job:?}");
        let expected_tries = if job.tried[0] == refusing { 2 } else { 1 };
        assert_eq!(job.tried.len(), expected_tries, "{job:?}");
    }
    assert!(
        ["test", "build", "lint"]
            .iter()
            .any(|id| by_id(id).tried.len() == 2),
        "three jobs over two runners: at least one started on the refusing runner"
    );
    let build = by_id("build");
    let report = build.report.unwrap();
    let hello = report
        .artifacts
        .iter()
        .find(|a| a.name == "out/hello.txt")
        .unwrap();
    // The generic DVM got the artifact URL through the expression.
    assert_eq!(
        by_id("scan").content.as_deref(),
        Some(format!("CLEAN {}", hello.blob.urls[0]).as_str())
    );
    assert_eq!(
        by_id("lint").state,
        JobState::Failed {
            reason: "the step exited with code 3".into()
        }
    );
    assert!(matches!(by_id("docs").state, JobState::Skipped { .. }));
    // Dependencies ran first.
    let position = |id: &str| recorder.finished.iter().position(|f| f == id).unwrap();
    assert!(position("test") < position("build") && position("build") < position("scan"));
    assert!(!recorder.started.contains(&"docs".to_string()));
    assert!(recorder.lines > 0, "feedback reached the reporter");

    // Another commit of the same repository runs through the same engine.
    std::fs::write(repo.join("message.txt"), "changed").unwrap();
    git(&repo, &["commit", "--quiet", "-am", "change"]);
    let changed = RunContext {
        commit: git(&repo, &["rev-parse", "HEAD"]),
        ..context
    };
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  test:\n    run: test \"$(cat message.txt)\" = quorum\n",
    )
    .unwrap();
    let outcome = execute(
        &client,
        &plan,
        &changed,
        &config,
        Vec::new(),
        &mut Recorder::default(),
    )
    .await;
    assert!(!outcome.succeeded, "the test sees the new commit");

    client.shutdown().await;
    for dvm in [refuses, works, scanner] {
        dvm.shutdown().await;
    }
}

/// Waits for the router's `partial` feedback on `request` to contain `needle`.
async fn wait_for_progress(
    notifications: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    request: EventId,
    needle: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let notification = tokio::time::timeout_at(deadline, notifications.recv())
            .await
            .unwrap_or_else(|_| panic!("no progress {needle:?} within 60 s"))
            .unwrap();
        if let RelayPoolNotification::Event { event, .. } = notification
            && event.tags.event_ids().any(|id| *id == request)
            && event.content.contains(needle)
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_runs_a_pipeline_and_resumes_after_a_restart_without_repeating_steps() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(
        repo.join(".quorum/pipeline.yml"),
        "on: [push]\njobs:\n  first:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n  second:\n    needs: first\n    run: sleep 3; echo second done\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let router_data = dir.path().join("router");
    let router = network.router(&router_data, &router_keys).await;

    let customer = Keys::generate();
    let client = Client::new(customer.clone());
    client.add_relay(network.relay.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let mut notifications = client.notifications();
    client
        .subscribe(Filter::new().pubkey(customer.public_key()), None)
        .await
        .unwrap();
    let request = quorum_proto::run::RunRequest::new(format!("file://{}", repo.display()), &commit)
        .to_request()
        .provider(router_keys.public_key())
        .to_event_builder()
        .sign_with_keys(&customer)
        .unwrap();
    client.send_event(&request).await.unwrap();

    // Kill the router while `second` runs; a new router process with the same key and data
    // resumes the run from its journal and the relays.
    wait_for_progress(&mut notifications, request.id, "▶ second").await;
    router.shutdown().await;
    let router = network.router(&router_data, &router_keys).await;

    let report = run_report(&mut notifications, request.id).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.commit, commit);
    assert_eq!(report.jobs[0].artifacts[0].name, "out/hello.txt");

    // `first` was dispatched once in all: the restarted router found its result.
    let steps = client
        .fetch_events(
            Filter::new()
                .author(router_keys.public_key())
                .event(request.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let dispatched_first = steps
        .iter()
        .filter_map(|e| quorum_proto::nip90::JobRequest::from_event(e).ok())
        .filter(|r| r.param_value("job") == Some("first"))
        .count();
    assert_eq!(
        dispatched_first, 1,
        "a finished step ran again after the restart"
    );

    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_can_be_any_nip90_dvm_written_with_another_library() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let runner = network.runner(&dir.path().join("runner"), true).await;
    // nostr-tools in Node: a scanner that has never heard of Quorum CI.
    let interop = quorum_testkit::node::ensure_installed();
    let scanner = quorum_testkit::daemon::Daemon::spawn(
        "node",
        &[
            interop.join("dvm-scanner.mjs").to_str().unwrap(),
            network.relay.as_str(),
        ],
    );
    let scanner_key = scanner.value_of("dvm");

    let pipeline = format!(
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n  scan:\n    needs: build\n    uses: dvm\n    kind: 5500\n    provider: {scanner_key}\n    inputs:\n      - {{ type: url, value: \"${{{{ jobs.build.artifacts['out/hello.txt'].url }}}}\" }}\n"
    );
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", &pipeline).expect("valid pipeline");
    let client = JobClient::connect(std::slice::from_ref(&network.relay), Keys::generate())
        .await
        .unwrap();
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![runner.public_key()],
        ..EngineConfig::default()
    };
    let outcome = execute(
        &client,
        &plan,
        &context,
        &config,
        Vec::new(),
        &mut Recorder::default(),
    )
    .await;
    assert!(outcome.succeeded, "{:?}", outcome.jobs);
    let build = &outcome.jobs[0];
    let hello = &build.report.as_ref().unwrap().artifacts[0];
    let scan = &outcome.jobs[1];
    assert_eq!(scan.provider.as_deref(), Some(scanner_key.as_str()));
    assert_eq!(
        scan.content.as_deref(),
        Some(
            format!(
                "CLEAN sha256={} bytes={}",
                hello.blob.sha256, hello.blob.size
            )
            .as_str()
        ),
        "the scanner fetched exactly the artifact the runner built"
    );
    client.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_dies_mid_job_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let doomed = network.runner(&dir.path().join("doomed"), true).await;
    let survivor = network.runner(&dir.path().join("survivor"), true).await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  slow:\n    run: sleep 7; echo finished\n",
    )
    .unwrap();
    // The step is silent for 7 s, longer than the 4 s patience below: only the runners'
    // heartbeats keep the survivor from being taken for dead too. The job starts on the
    // doomed runner.
    let mut runners = vec![doomed.public_key(), survivor.public_key()];
    let start = quorum_router::first_runner("slow", 2);
    runners.rotate_right(start);
    assert_eq!(runners[start], doomed.public_key());

    let watcher = Client::new(Keys::generate());
    watcher.add_relay(network.relay.clone()).await.unwrap();
    watcher.connect().await;
    watcher.wait_for_connection(Duration::from_secs(5)).await;
    let mut notifications = watcher.notifications();
    watcher
        .subscribe(
            Filter::new()
                .kind(Kind::from_u16(7000))
                .author(doomed.public_key()),
            None,
        )
        .await
        .unwrap();

    let client = network
        .client()
        .await
        .with_patience(quorum_dvm::client::Patience {
            until_taken: Duration::from_secs(10),
            silence: Duration::from_secs(4),
        });
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners,
        ..EngineConfig::default()
    };
    let mut recorder = Recorder::default();
    let run = execute(&client, &plan, &context, &config, Vec::new(), &mut recorder);
    let kill = async {
        // Once the doomed runner has started the step, it dies.
        loop {
            if let Ok(RelayPoolNotification::Event { event, .. }) = notifications.recv().await
                && quorum_proto::nip90::JobFeedback::from_event(&event)
                    .is_ok_and(|f| f.extra.as_deref() != Some("queued"))
            {
                break;
            }
        }
        doomed.shutdown().await;
    };
    let (outcome, ()) = tokio::join!(run, kill);
    let slow = &outcome.jobs[0];
    assert_eq!(slow.state, JobState::Succeeded, "{slow:?}");
    assert_eq!(slow.provider, Some(survivor.public_key().to_hex()));
    assert_eq!(slow.tried.len(), 2, "{slow:?}");
    client.shutdown().await;
    watcher.shutdown().await;
    survivor.shutdown().await;
}

/// Signs a verdict on the first approval request that appears for `run`, as `maintainer`.
async fn decide(
    relay: &RelayUrl,
    keys: &Keys,
    decision: quorum_proto::approval::Decision,
) -> Event {
    use quorum_proto::approval::{APPROVAL_REQUEST, ApprovalRequest, Verdict};
    let client = Client::new(keys.clone());
    client.add_relay(relay.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let request = loop {
        let found = client
            .fetch_events(Filter::new().kind(APPROVAL_REQUEST), Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(event) = found.first() {
            break event.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no approval request"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let parsed = ApprovalRequest::from_event(&request).unwrap();
    let verdict = Verdict::on(decision, &request, &parsed, Timestamp::now() + 600)
        .to_event_builder()
        .unwrap()
        .sign_with_keys(keys)
        .unwrap();
    client.send_event(&verdict).await.unwrap();
    client.shutdown().await;
    request
}

const GATED: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n  approve:\n    needs: build\n    approval:\n      required: 1\n      from: [MAINTAINER]\n  publish:\n    needs: approve\n    run: echo publishing\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_waits_for_a_maintainer_and_refuses_others() {
    use quorum_proto::approval::Decision;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let maintainer = Keys::generate();
    let stranger = Keys::generate();
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        &GATED.replace("MAINTAINER", &maintainer.public_key().to_hex()),
    )
    .unwrap();
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        repo_id: Some(quorum_proto::nip34::RepoCoordinate::new(
            maintainer.public_key(),
            "sample",
        )),
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![runner.public_key()],
        ..EngineConfig::default()
    };

    // A stranger's approval does not open the gate; the maintainer's does.
    let client = network.client().await;
    let mut recorder = Recorder::default();
    let run = execute(&client, &plan, &context, &config, Vec::new(), &mut recorder);
    let approvals = async {
        decide(&network.relay, &stranger, Decision::Approve).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        decide(&network.relay, &maintainer, Decision::Approve).await
    };
    let (outcome, request) = tokio::join!(run, approvals);
    assert!(outcome.succeeded, "{:?}", outcome.jobs);
    let gate = &outcome.jobs[1];
    assert_eq!(gate.request, Some(request.id.to_hex()));
    let expected = format!("approved by {}", &maintainer.public_key().to_hex()[..12]);
    assert_eq!(gate.content.as_deref(), Some(expected.as_str()));
    // What was shown: the build's artifact, by hash, and who built it.
    let shown = quorum_proto::approval::ApprovalRequest::from_event(&request).unwrap();
    let build = &outcome.jobs[0].report.as_ref().unwrap().artifacts[0];
    assert_eq!(shown.artifacts[0].name, "build/out/hello.txt");
    assert_eq!(shown.artifacts[0].sha256.to_hex(), build.blob.sha256);
    assert_eq!(shown.builders, vec![runner.public_key()]);
    client.shutdown().await;

    // A rejection fails the gate and skips what needs it.
    let network2 = Network::start(&dir.path().join("second")).await;
    let runner2 = network2.runner(&dir.path().join("runner2"), true).await;
    let client = network2.client().await;
    let config = EngineConfig {
        runners: vec![runner2.public_key()],
        ..EngineConfig::default()
    };
    let mut recorder = Recorder::default();
    let run = execute(&client, &plan, &context, &config, Vec::new(), &mut recorder);
    let (outcome, _) = tokio::join!(run, decide(&network2.relay, &maintainer, Decision::Reject));
    assert!(!outcome.succeeded);
    assert!(
        matches!(&outcome.jobs[1].state, JobState::Failed { reason } if reason.starts_with("rejected by")),
        "{:?}",
        outcome.jobs[1]
    );
    assert!(matches!(outcome.jobs[2].state, JobState::Skipped { .. }));

    // M6: the pipeline file is written by whoever wrote the commit, so a gate that names a
    // stranger in `from` asks nobody but maintainers, and with none left it fails at once,
    // saying so; the stranger never gets to approve.
    let smuggled = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        &GATED.replace("MAINTAINER", &stranger.public_key().to_hex()),
    )
    .unwrap();
    let mut recorder = Recorder::default();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        execute(
            &client,
            &smuggled,
            &context,
            &config,
            Vec::new(),
            &mut recorder,
        ),
    )
    .await
    .expect("the gate fails at once, it does not wait for anyone");
    assert!(!outcome.succeeded);
    match &outcome.jobs[1].state {
        JobState::Failed { reason } => {
            assert!(reason.contains("maintainers of"), "{reason}");
            assert!(reason.contains(&stranger.public_key().to_hex()), "{reason}");
        }
        other => panic!("the gate should fail, not {other:?}"),
    }
    assert!(matches!(outcome.jobs[2].state, JobState::Skipped { .. }));
    client.shutdown().await;
    runner.shutdown().await;
    runner2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_artifact_verifies_and_a_tampered_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    release: true\n",
    )
    .unwrap();
    let owner = Keys::generate();
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit: commit.clone(),
        repo_id: Some(quorum_proto::nip34::RepoCoordinate::new(
            owner.public_key(),
            "sample",
        )),
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![runner.public_key()],
        ..EngineConfig::default()
    };
    let client = network.client().await;
    let started_at = Timestamp::now();
    let outcome = execute(
        &client,
        &plan,
        &context,
        &config,
        Vec::new(),
        &mut Recorder::default(),
    )
    .await;
    assert!(outcome.succeeded);

    // gitworkshop's view of the run: a job result per job, a workflow result quoting them.
    let run = quorum_router::run_id(&context.repo, &context.commit, &plan);
    let workflow_id =
        quorum_router::status::publish_ci_status(&client, &context, &run, &outcome, started_at)
            .await
            .unwrap()
            .expect("a run with a NIP-34 identity reports its status");
    let events = client
        .fetch(Filter::new().id(workflow_id), Duration::from_secs(5))
        .await
        .unwrap();
    let workflow = quorum_proto::nipc1::CiWorkflowResult::from_event(&events[0]).unwrap();
    assert_eq!(
        workflow.conclusion,
        quorum_proto::nipc1::Conclusion::Success
    );
    assert_eq!(workflow.context.commit, commit);
    assert_eq!(workflow.jobs.len(), 1);
    let job_events = client
        .fetch(
            Filter::new().id(workflow.jobs[0].id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let job = quorum_proto::nipc1::CiJobResult::from_event(&job_events[0]).unwrap();
    // The run's progress event (addressable, d = run id) ends concluded.
    let progress = client
        .fetch(
            Filter::new()
                .kind(quorum_proto::nipc1::CI_WORKFLOW_PROGRESS)
                .identifier(run.clone()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let progress = quorum_proto::nipc1::CiWorkflowProgress::from_event(&progress[0]).unwrap();
    assert_eq!(
        progress.status,
        quorum_proto::nipc1::ProgressStatus::Concluded
    );
    assert_eq!(
        progress.conclusion,
        Some(quorum_proto::nipc1::Conclusion::Success)
    );
    assert_eq!(job.job, "build");
    assert_eq!(job.exit_code, Some(0));
    assert!(job.logs.starts_with("http://127.0.0.1:"), "{job:?}");

    let release = quorum_router::release::publish_release(&client, &plan, &context, &outcome)
        .await
        .unwrap()
        .expect("a release job makes a release");
    assert_eq!(release.files.len(), 1);

    // The NIP-82 view of the release: an asset per artifact, a release listing them, and the
    // application naming the repository; all parse and point at the binding's artifacts.
    use quorum_proto::release::{
        ReleaseBinding, SoftwareApplication, SoftwareAsset, SoftwareRelease,
    };
    let fetch_one = |id: EventId| {
        let client = &client;
        async move {
            let found = client
                .fetch(Filter::new().id(id), Duration::from_secs(5))
                .await
                .unwrap();
            found.into_iter().next().expect("published event")
        }
    };
    let binding = ReleaseBinding::from_event(&fetch_one(release.binding).await).unwrap();
    let version = format!("0.0.0-g{}", &commit[..12]);
    assert_eq!(release.version, version, "an untagged commit's version");
    assert_eq!(release.assets.len(), 1);
    let asset = SoftwareAsset::from_event(&fetch_one(release.assets[0]).await).unwrap();
    assert_eq!(asset.app, "sample");
    assert_eq!(asset.version, version);
    assert!(binding.contains(&asset.sha256), "{asset:?} vs {binding:?}");
    assert_eq!(asset.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(asset.filename.as_deref(), Some("hello.txt"));
    assert_eq!(asset.mime, "application/octet-stream");
    assert_eq!(
        asset.platforms,
        vec![
            quorum_proto::release::zapstore_platform(std::env::consts::OS, std::env::consts::ARCH)
                .unwrap()
                .to_string()
        ],
        "zapstore's spelling of the runner's announced platform"
    );
    assert_eq!(release.nip82_error, None);
    assert_eq!(release.nip82_signer, Some(client.public_key()));
    assert_eq!(
        asset.urls,
        outcome.jobs[0].report.as_ref().unwrap().artifacts[0]
            .blob
            .urls
    );
    let software = SoftwareRelease::from_event(
        &fetch_one(release.software_release.expect("a 30063 release")).await,
    )
    .unwrap();
    assert_eq!(software.identifier(), format!("sample@{version}"));
    assert_eq!(
        software.channel.as_deref(),
        Some("beta"),
        "an untagged commit's version is a pre-release"
    );
    assert_eq!(
        software.assets.iter().map(|a| a.id).collect::<Vec<_>>(),
        release.assets
    );
    let app = SoftwareApplication::from_event(
        &fetch_one(release.application.expect("a 32267 application")).await,
    )
    .unwrap();
    assert_eq!(app.identifier, software.app);
    assert_eq!(app.repo.as_ref(), context.repo_id.as_ref());
    assert_eq!(app.platforms, asset.platforms);

    // Download the artifact as a user would, and verify it.
    let url = &outcome.jobs[0].report.as_ref().unwrap().artifacts[0]
        .blob
        .urls[0];
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, &bytes).unwrap();
    let verifier = network.client().await;
    let single = quorum_router::verify::Expectation {
        repo: context.repo_id.clone(),
        allow_single_builder: true,
        ..Default::default()
    };
    let verified = quorum_router::verify::verify_file(Some(&verifier), &file, None, &single)
        .await
        .unwrap();
    assert!(verified.ok, "{verified:?}");
    // By default a single builder's word is not enough, and saying so is the verdict.
    let strict = quorum_router::verify::Expectation {
        repo: context.repo_id.clone(),
        ..Default::default()
    };
    let refused = quorum_router::verify::verify_file(Some(&verifier), &file, None, &strict)
        .await
        .unwrap();
    assert!(!refused.ok);
    assert!(
        refused.problems[0].contains("not by a quorum"),
        "{:?}",
        refused.problems
    );
    assert_eq!(verified.release, Some(release.binding.to_hex()));
    assert_eq!(verified.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(verified.attested_by, vec![runner.public_key().to_hex()]);
    assert_eq!(verified.urls, vec![url.clone()]);
    assert_eq!(verified.name.as_deref(), Some("build/out/hello.txt"));

    // One byte changed: no release lists it.
    let mut tampered = bytes.to_vec();
    tampered[0] ^= 1;
    std::fs::write(&file, &tampered).unwrap();
    let refused = quorum_router::verify::verify_file(Some(&verifier), &file, None, &single)
        .await
        .unwrap();
    assert!(!refused.ok);
    assert!(refused.release.is_none());
    client.shutdown().await;
    verifier.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_chain_is_handed_on_by_the_runners_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let first = network.runner(&dir.path().join("r1"), true).await;
    let second = network.runner(&dir.path().join("r2"), true).await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  lint:\n    mode: naive\n    run: test -f build.sh\n  test:\n    mode: naive\n    needs: lint\n    run: grep -q quorum message.txt\n  build:\n    mode: naive\n    needs: test\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n",
    )
    .unwrap();
    let client = network.client().await;
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![first.public_key(), second.public_key()],
        ..EngineConfig::default()
    };
    let mut recorder = Recorder::default();
    let outcome = execute(&client, &plan, &context, &config, Vec::new(), &mut recorder).await;
    assert!(outcome.succeeded, "{:?}", outcome.jobs);

    // Only the first request is ours; each later one was signed by the runner before it and
    // pins that runner's exact result.
    let requests: Vec<Event> = {
        let mut found = Vec::new();
        for job in &outcome.jobs {
            let id = EventId::from_hex(job.request.as_ref().unwrap()).unwrap();
            let events = client
                .fetch(Filter::new().id(id), Duration::from_secs(5))
                .await
                .unwrap();
            found.push(events[0].clone());
        }
        found
    };
    assert_eq!(requests[0].pubkey, client.public_key());
    for step in 1..3 {
        let previous = &outcome.jobs[step - 1];
        assert_eq!(
            requests[step].pubkey.to_hex(),
            *previous.provider.as_ref().unwrap(),
            "step {step} was requested by the runner before it"
        );
        let parsed = quorum_proto::nip90::JobRequest::from_event(&requests[step]).unwrap();
        assert_eq!(
            parsed.param_value(quorum_proto::chain::PARAM_UPSTREAM_RESULT),
            previous.result.as_deref()
        );
        assert_eq!(parsed.parent, Some(requests[0].id));
    }
    assert_eq!(
        outcome.jobs[2].report.as_ref().unwrap().artifacts[0].name,
        "out/hello.txt"
    );
    client.shutdown().await;
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_request_names_the_requests_of_the_jobs_it_needs_as_nip90_job_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n  test:\n    needs: build\n    run: echo tested\n",
    )
    .unwrap();
    let client = network.client().await;
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![runner.public_key()],
        ..EngineConfig::default()
    };
    let outcome = execute(
        &client,
        &plan,
        &context,
        &config,
        Vec::new(),
        &mut Recorder::default(),
    )
    .await;
    // The runner took the request with the extra input and still found its repository.
    assert!(outcome.succeeded, "{:?}", outcome.jobs);
    let request_of = |job: usize| EventId::from_hex(outcome.jobs[job].request.as_ref().unwrap());
    let events = client
        .fetch(
            Filter::new().id(request_of(1).unwrap()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let second = quorum_proto::nip90::JobRequest::from_event(&events[0]).unwrap();
    let needs: Vec<_> = second
        .inputs
        .iter()
        .filter(|i| i.input_type == quorum_proto::nip90::InputType::Job)
        .collect();
    assert_eq!(needs.len(), 1, "{second:?}");
    assert_eq!(needs[0].event_id(), Some(request_of(0).unwrap()));
    assert_eq!(
        needs[0].marker.as_deref(),
        Some(quorum_router::MARKER_NEEDS)
    );
    // What any NIP-90 client sees: `["i", ID, "job", "", "needs"]`.
    assert!(
        events[0]
            .tags
            .iter()
            .any(|t| t.as_slice() == ["i", &request_of(0).unwrap().to_hex(), "job", "", "needs"])
    );
    // The first job needs nothing and names nothing.
    let events = client
        .fetch(
            Filter::new().id(request_of(0).unwrap()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let first = quorum_proto::nip90::JobRequest::from_event(&events[0]).unwrap();
    assert!(
        first
            .inputs
            .iter()
            .all(|i| i.input_type != quorum_proto::nip90::InputType::Job)
    );
    client.shutdown().await;
    runner.shutdown().await;
}

/// Waits for the run-pipeline result answering `request` and returns its report.
async fn run_report(
    notifications: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    request: EventId,
) -> quorum_proto::run::RunReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let notification = tokio::time::timeout_at(deadline, notifications.recv())
            .await
            .expect("no run result within 120 s")
            .unwrap();
        if let RelayPoolNotification::Event { event, .. } = notification
            && event.kind.as_u16() == 6700
            && event.tags.event_ids().any(|id| *id == request)
        {
            let result = quorum_proto::nip90::JobResult::from_event(&event).unwrap();
            return serde_json::from_str(&result.content).unwrap();
        }
    }
}

/// A customer connected to the test relay, listening for what is addressed to it.
async fn customer(
    network: &Network,
) -> (
    Client,
    Keys,
    tokio::sync::broadcast::Receiver<RelayPoolNotification>,
) {
    let keys = Keys::generate();
    let client = Client::new(keys.clone());
    client.add_relay(network.relay.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let notifications = client.notifications();
    client
        .subscribe(Filter::new().pubkey(keys.public_key()), None)
        .await
        .unwrap();
    (client, keys, notifications)
}

/// Commits `pipeline` as the sample repository's `.quorum/pipeline.yml`; returns the repository
/// URL and the commit.
fn committed_pipeline(dir: &std::path::Path, pipeline: &str) -> (String, String) {
    let (repo, _) = sample_repo(dir);
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (format!("file://{}", repo.display()), commit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_opens_an_approval_gate_for_the_maintainers_the_request_names() {
    use quorum_proto::approval::Decision;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    // No `from`: the gate asks the run's maintainers, which the request gives.
    let (repo, commit) = committed_pipeline(
        dir.path(),
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n  approve:\n    needs: build\n    approval:\n      required: 1\n  publish:\n    needs: approve\n    run: echo publishing\n",
    );
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let (client, keys, mut notifications) = customer(&network).await;
    // With no announcement on the relays, the owner alone maintains the repository.
    let maintainer = Keys::generate();
    let mut run = quorum_proto::run::RunRequest::new(repo, &commit);
    run.repo_id = Some(quorum_proto::nip34::RepoCoordinate::new(
        maintainer.public_key(),
        "sample",
    ));
    run.maintainers = vec![maintainer.public_key()];
    let sign = |run: &quorum_proto::run::RunRequest| {
        run.to_request()
            .provider(router_keys.public_key())
            .to_event_builder()
            .sign_with_keys(&keys)
            .unwrap()
    };
    let request = sign(&run);
    client.send_event(&request).await.unwrap();

    let asked = decide(&network.relay, &maintainer, Decision::Approve).await;
    let report = run_report(&mut notifications, request.id).await;
    assert!(report.succeeded(), "{report:?}");
    let gate = quorum_proto::approval::ApprovalRequest::from_event(&asked).unwrap();
    assert_eq!(gate.repo, run.repo_id.clone().unwrap());
    assert_eq!(gate.maintainers, vec![maintainer.public_key()]);
    assert_eq!(report.jobs[1].request, Some(asked.id.to_hex()));

    // A requester cannot make itself a maintainer by naming itself.
    run.maintainers = vec![keys.public_key()];
    let request = sign(&run);
    client.send_event(&request).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let notification = tokio::time::timeout_at(deadline, notifications.recv())
            .await
            .expect("no refusal within 60 s")
            .unwrap();
        if let RelayPoolNotification::Event { event, .. } = notification
            && let Ok(feedback) = quorum_proto::nip90::JobFeedback::from_event(&event)
            && feedback.request_id == request.id
            && feedback.status == quorum_proto::nip90::FeedbackStatus::Error
        {
            let reason = feedback.extra.unwrap_or_default();
            assert!(reason.contains("is not a maintainer of"), "{reason}");
            break;
        }
    }
    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_naive_chain_interrupted_by_a_router_restart_goes_on_from_its_unfinished_step() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = committed_pipeline(
        dir.path(),
        "on: [push]\njobs:\n  first:\n    mode: naive\n    run: test -f build.sh\n  second:\n    mode: naive\n    needs: first\n    run: sleep 4; echo second done\n  third:\n    mode: naive\n    needs: second\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n",
    );
    let r1 = network.runner(&dir.path().join("r1"), true).await;
    let r2 = network.runner(&dir.path().join("r2"), true).await;
    let router_keys = Keys::generate();
    let router_data = dir.path().join("router");
    let router = network.router(&router_data, &router_keys).await;
    let (client, keys, mut notifications) = customer(&network).await;
    let mut run = quorum_proto::run::RunRequest::new(repo, &commit);
    run.runners = vec![r1.public_key(), r2.public_key()];
    let request = run
        .to_request()
        .provider(router_keys.public_key())
        .to_event_builder()
        .sign_with_keys(&keys)
        .unwrap();
    client.send_event(&request).await.unwrap();

    // Kill the router while `second` runs (handed on by a runner, not by the router).
    wait_for_progress(&mut notifications, request.id, "▶ second").await;
    router.shutdown().await;
    let router = network.router(&router_data, &router_keys).await;

    let report = run_report(&mut notifications, request.id).await;
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.jobs[2].artifacts[0].name, "out/hello.txt");

    // Every step of the chain was requested once, by whoever requested it first.
    let requests = client
        .fetch_events(Filter::new().event(request.id), Duration::from_secs(5))
        .await
        .unwrap();
    let requested = |job: &str| {
        requests
            .iter()
            .filter_map(|e| quorum_proto::nip90::JobRequest::from_event(e).ok())
            .filter(|r| r.kind.as_u16() == 5702 && r.param_value("job") == Some(job))
            .count()
    };
    for job in ["first", "second", "third"] {
        assert_eq!(
            requested(job),
            1,
            "{job} was requested again after the restart"
        );
    }
    let second = report.jobs[1].request.as_deref().unwrap();
    let second = requests.iter().find(|e| e.id.to_hex() == second).unwrap();
    assert_ne!(
        second.pubkey,
        router_keys.public_key(),
        "the runner handed the second step on"
    );

    client.shutdown().await;
    router.shutdown().await;
    r1.shutdown().await;
    r2.shutdown().await;
}

/// Parity of the two ways a pipeline runs: the engine on a maintainer's machine (what `quorum
/// run --relay` drives) and the router DVM (what a watcher's request starts) drive the same run
/// object, so they publish the same kinds of events — CI progress and status, the release's
/// NIP-94, binding and NIP-82 events, the run-step requests — each signed by the key that ran
/// the pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_publishes_the_same_kinds_of_events_from_the_engine_and_from_the_router_dvm() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = committed_pipeline(
        dir.path(),
        "on: [push]\njobs:\n  test:\n    run: test -f build.sh\n  build:\n    needs: test\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    release: true\n",
    );
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let owner = Keys::generate();
    let repo_id = quorum_proto::nip34::RepoCoordinate::new(owner.public_key(), "sample");

    // Kinds of the events `key` signed.
    let kinds_by = |events: &Events, key: PublicKey| {
        events
            .iter()
            .filter(|e| e.pubkey == key)
            .map(|e| e.kind.as_u16())
            .collect::<std::collections::BTreeSet<u16>>()
    };
    let (client, customer_keys, mut notifications) = customer(&network).await;

    // 1. The engine, as `quorum run --relay` runs it.
    let engine_keys = Keys::generate();
    let engine = JobClient::connect(std::slice::from_ref(&network.relay), engine_keys.clone())
        .await
        .unwrap();
    let plan = quorum_pipeline::parse(
        quorum_pipeline::PIPELINE_PATH,
        &std::fs::read_to_string(
            dir.path()
                .join("sample")
                .join(quorum_pipeline::PIPELINE_PATH),
        )
        .unwrap(),
    )
    .unwrap();
    let context = RunContext {
        repo: repo.clone(),
        commit: commit.clone(),
        repo_id: Some(repo_id.clone()),
        maintainers: vec![owner.public_key()],
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: vec![runner.public_key()],
        ..EngineConfig::default()
    };
    let end = quorum_router::pipeline_run::PipelineRun::new(&engine, &plan, &context, &config)
        .with_release(quorum_router::release::ReleaseOptions {
            bundle_uploader: Some(quorum_blossom::client::BlossomClient::new(
                engine_keys.clone(),
            )),
            ..Default::default()
        })
        .run(
            quorum_router::Recovered::default(),
            &mut Recorder::default(),
        )
        .await;
    assert!(end.succeeded, "{:?}", end.release);
    engine.shutdown().await;

    // 2. The router DVM, as a watcher's request starts it.
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let mut run = quorum_proto::run::RunRequest::new(repo, &commit);
    run.repo_id = Some(repo_id);
    run.runners = vec![runner.public_key()];
    let request = run
        .to_request()
        .provider(router_keys.public_key())
        .to_event_builder()
        .sign_with_keys(&customer_keys)
        .unwrap();
    client.send_event(&request).await.unwrap();
    let report = run_report(&mut notifications, request.id).await;
    assert!(report.succeeded(), "{report:?}");

    let events = client
        .fetch_events(Filter::new(), Duration::from_secs(5))
        .await
        .unwrap();
    let from_engine = kinds_by(&events, engine_keys.public_key());
    let from_router: std::collections::BTreeSet<u16> = kinds_by(&events, router_keys.public_key())
        .into_iter()
        // What only a DVM publishes: its NIP-89 offer, its feedback and result on the request.
        .filter(|kind| ![31990, 7000, 6700].contains(kind))
        .collect();
    assert_eq!(
        from_engine, from_router,
        "engine {from_engine:?}, router {from_router:?}"
    );
    for kind in [5702, 39842, 9842, 1063, 8700, 30063, 3063, 32267] {
        assert!(
            from_router.contains(&kind),
            "the router publishes {kind}: {from_router:?}"
        );
    }
    // Both runs' job results are the runner's own, not the engine's or the router's.
    let job_results: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == Kind::Custom(9841))
        .collect();
    assert!(job_results.len() >= 2, "{job_results:#?}");
    assert!(job_results.iter().all(|e| e.pubkey == runner.public_key()));
    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}

/// A fake runner's NIP-89 announcement of the platform it builds on.
async fn announce_platform(network: &Network, runner: &Keys, os: &str, arch: &str) {
    let announcement = quorum_proto::nip89::Announcement {
        identifier: "runner".into(),
        name: "runner".into(),
        about: String::new(),
        kinds: vec![quorum_proto::step::StepJob::kind()],
        offer: Offer {
            capabilities: Capabilities {
                arch: arch.into(),
                os: os.into(),
                sandbox: "none".into(),
                toolchains: vec![],
                network: false,
                images: false,
                require_image: false,
            },
            price: Price::default(),
            limits: JobLimits {
                concurrency: 1,
                max_timeout_secs: 60,
                max_request_bytes: 65536,
            },
        },
        operator: None,
    };
    let client = JobClient::connect(std::slice::from_ref(&network.relay), runner.clone())
        .await
        .unwrap();
    client
        .publish_event(announcement.to_event_builder())
        .await
        .unwrap();
    client.shutdown().await;
}

/// A successful release job's record, as a runner's result would leave it.
fn released_job(id: &str, runner: &Keys, byte: u8) -> JobRecord {
    use quorum_proto::step::{ArtifactRef, BlobRef, SandboxRef, StepReport};
    let sha = quorum_proto::blossom::Sha256Hex::from_bytes([byte; 32]).to_hex();
    JobRecord {
        id: id.into(),
        name: id.into(),
        state: JobState::Succeeded,
        provider: Some(runner.public_key().to_hex()),
        request: None,
        result: Some(EventId::from_slice(&[byte; 32]).unwrap().to_hex()),
        report: Some(StepReport {
            commit: "ab".repeat(20),
            exit_code: Some(0),
            timed_out: false,
            duration_ms: 1,
            source_date_epoch: 0,
            artifacts: vec![ArtifactRef {
                name: format!("out/{id}.tar"),
                blob: BlobRef {
                    urls: vec![format!("https://cdn.example/{sha}.tar")],
                    sha256: sha,
                    size: 10,
                },
            }],
            log: BlobRef {
                sha256: "00".repeat(32),
                size: 0,
                urls: vec![],
            },
            log_tail: String::new(),
            sandbox: SandboxRef {
                name: "none".into(),
                isolated: false,
                image: None,
            },
            quorum: None,
            ci_job_result: None,
        }),
        content: None,
        tried: vec![runner.public_key().to_hex()],
        quorum: None,
        paid_msats: 0,
        payments: Vec::new(),
    }
}

/// zapstore accepts the NIP-82 events (issue 10, item 7): a maintainer's key signs them when
/// the release says so, the 30063 carries a channel, `f` is spelled zapstore's way (a macOS
/// runner's `macos-aarch64` is `darwin-arm64`), and a file whose runner has no platform zapstore
/// knows gets no 3063, while its 1063 and the binding are still published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip82_events_are_signed_by_the_maintainer_with_zapstore_channel_and_platforms() {
    use quorum_proto::release::{
        FileMetadata, ReleaseBinding, SoftwareApplication, SoftwareAsset, SoftwareRelease,
    };
    use quorum_router::release::{ReleaseOptions, publish_release_with};
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mac = Keys::generate();
    let plan9 = Keys::generate();
    let silent = Keys::generate();
    announce_platform(&network, &mac, "macos", "aarch64").await;
    announce_platform(&network, &plan9, "plan9", "mips").await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  mac:\n    run: make\n    artifacts: [out/mac.tar]\n    release: true\n  plan9:\n    run: make\n    artifacts: [out/plan9.tar]\n    release: true\n  silent:\n    run: make\n    artifacts: [out/silent.tar]\n    release: true\n",
    )
    .unwrap();
    let outcome = quorum_router::RunOutcome {
        succeeded: true,
        jobs: vec![
            released_job("mac", &mac, 1),
            released_job("plan9", &plan9, 2),
            released_job("silent", &silent, 3),
        ],
    };
    let context = RunContext {
        repo: "https://git.example/app.git".into(),
        commit: "ab".repeat(20),
        repo_id: Some(quorum_proto::nip34::RepoCoordinate::new(
            Keys::generate().public_key(),
            "app",
        )),
        ..RunContext::default()
    };
    let client = network.client().await;
    let maintainer = Keys::generate();
    let options = ReleaseOptions {
        version: Some("v1.0.0".into()),
        nip82_signer: Some(std::sync::Arc::new(maintainer.clone())),
        ..ReleaseOptions::default()
    };
    let release = publish_release_with(&client, &plan, &context, &outcome, &options)
        .await
        .unwrap()
        .expect("release jobs make a release");
    let fetch_one = |id: EventId| {
        let client = &client;
        async move {
            let found = client
                .fetch(Filter::new().id(id), Duration::from_secs(5))
                .await
                .unwrap();
            found.into_iter().next().expect("published event")
        }
    };

    // The 1063s and the binding: every file, signed by the key that ran the pipeline.
    assert_eq!(release.files.len(), 3);
    for id in &release.files {
        let event = fetch_one(*id).await;
        assert_eq!(event.pubkey, client.public_key());
        FileMetadata::from_event(&event).unwrap();
    }
    let binding_event = fetch_one(release.binding).await;
    assert_eq!(binding_event.pubkey, client.public_key());
    assert_eq!(
        ReleaseBinding::from_event(&binding_event)
            .unwrap()
            .artifacts
            .len(),
        3
    );

    // One 3063, for the macOS build only, and the 30063 and 32267: all the maintainer's.
    assert_eq!(release.nip82_signer, Some(maintainer.public_key()));
    assert_eq!(release.channel, "main");
    assert_eq!(release.assets.len(), 1, "{release:?}");
    let asset_event = fetch_one(release.assets[0]).await;
    assert_eq!(asset_event.pubkey, maintainer.public_key());
    let asset = SoftwareAsset::from_event(&asset_event).unwrap();
    assert_eq!(asset.platforms, vec!["darwin-arm64".to_string()]);
    assert_eq!(asset.filename.as_deref(), Some("mac.tar"));
    let release_event = fetch_one(release.software_release.expect("a 30063")).await;
    assert_eq!(release_event.pubkey, maintainer.public_key());
    let software = SoftwareRelease::from_event(&release_event).unwrap();
    assert_eq!(software.channel.as_deref(), Some("main"));
    assert_eq!(software.platforms, vec!["darwin-arm64".to_string()]);
    assert_eq!(software.assets.len(), 1);
    assert_eq!(software.assets[0].id, release.assets[0]);
    let app_event = fetch_one(release.application.expect("a 32267")).await;
    assert_eq!(app_event.pubkey, maintainer.public_key());
    assert_eq!(
        SoftwareApplication::from_event(&app_event)
            .unwrap()
            .platforms,
        vec!["darwin-arm64".to_string()]
    );

    // Why the other two got no 3063, by file.
    let error = release.nip82_error.expect("the skipped files are named");
    assert!(error.contains("plan9/out/plan9.tar"), "{error}");
    assert!(error.contains("plan9-mips"), "{error}");
    assert!(error.contains("silent/out/silent.tar"), "{error}");
    assert!(error.contains("announced no platform"), "{error}");
    assert!(!error.contains("mac/out/mac.tar"), "{error}");

    // Nothing at all with a known platform: no 3063, 30063 or 32267, still the 1063s.
    let only_plan9 = quorum_router::RunOutcome {
        succeeded: true,
        jobs: vec![released_job("plan9", &plan9, 4)],
    };
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  plan9:\n    run: make\n    artifacts: [out/plan9.tar]\n    release: true\n",
    )
    .unwrap();
    let release = publish_release_with(&client, &plan, &context, &only_plan9, &options)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(release.files.len(), 1);
    assert!(release.assets.is_empty());
    assert_eq!(release.software_release, None);
    assert_eq!(release.application, None);
    assert_eq!(release.nip82_signer, None);
    assert!(release.nip82_error.unwrap().contains("plan9-mips"));
    client.shutdown().await;
}

/// The CI events of repository `repo_id` on `relay`, fetched as gitworkshop fetches them (`#a`).
async fn ci_events(relay: &RelayUrl, repo_id: &quorum_proto::nip34::RepoCoordinate) -> Vec<Event> {
    let client = Client::default();
    client.add_relay(relay.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    let events = client
        .fetch_events(
            Filter::new()
                .kinds([Kind::Custom(9841), Kind::Custom(9842), Kind::Custom(39842)])
                .custom_tag(SingleLetterTag::lowercase(Alphabet::A), repo_id.to_string()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    events.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_push_run_publishes_ci_events_that_gitworkshop_and_the_spec_accept() {
    use quorum_proto::nipc1::{self, CiWorkflowProgress, CiWorkflowResult, ProgressStatus};
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let pipeline = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt, out/dist]\n  second:\n    needs: build\n    run: sleep 2; echo second done\n";
    let (repo, commit) = committed_pipeline(dir.path(), pipeline);
    let runner = network.runner(&dir.path().join("runner"), true).await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let (client, keys, mut notifications) = customer(&network).await;
    // Every version of the progress event, as a live gitworkshop page would see them.
    client
        .subscribe(
            Filter::new()
                .kind(nipc1::CI_WORKFLOW_PROGRESS)
                .author(router_keys.public_key()),
            None,
        )
        .await
        .unwrap();
    let repo_id = quorum_proto::nip34::RepoCoordinate::new(Keys::generate().public_key(), "sample");
    let mut run = quorum_proto::run::RunRequest::new(repo, &commit);
    run.repo_id = Some(repo_id.clone());
    run.git_ref = Some("refs/heads/main".into());
    let request = run
        .to_request()
        .provider(router_keys.public_key())
        .to_event_builder()
        .sign_with_keys(&keys)
        .unwrap();
    client.send_event(&request).await.unwrap();

    let mut progress_versions = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let report = loop {
        let notification = tokio::time::timeout_at(deadline, notifications.recv())
            .await
            .expect("no run result within 120 s")
            .unwrap();
        let RelayPoolNotification::Event { event, .. } = notification else {
            continue;
        };
        if event.kind == nipc1::CI_WORKFLOW_PROGRESS {
            progress_versions.push((*event).clone());
        } else if event.kind.as_u16() == 6700 && event.tags.event_ids().any(|id| *id == request.id)
        {
            let result = quorum_proto::nip90::JobResult::from_event(&event).unwrap();
            break serde_json::from_str::<quorum_proto::run::RunReport>(&result.content).unwrap();
        }
    };
    assert!(report.succeeded(), "{report:?}");

    let events = ci_events(&network.relay, &repo_id).await;
    let problems = nipc1::check_gitworkshop_conformance(&events);
    assert!(problems.is_empty(), "{problems:#?}\n{events:#?}");
    // The runner that ran each job signed its job result, and the workflow result quotes
    // each under the runner's key; the router signed none of them.
    let job_results: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == nipc1::CI_JOB_RESULT)
        .collect();
    assert_eq!(job_results.len(), 2, "{job_results:#?}");
    assert!(
        job_results.iter().all(|e| e.pubkey == runner.public_key()),
        "{job_results:#?}"
    );
    let workflow = events
        .iter()
        .find(|e| e.kind == nipc1::CI_WORKFLOW_RESULT)
        .unwrap();
    let quoted = CiWorkflowResult::from_event(workflow).unwrap().jobs;
    assert_eq!(quoted.len(), 2);
    assert!(quoted.iter().all(|q| q.author == Some(runner.public_key())));
    // Each live version, on its own, conforms too (with the run's job results to quote).
    let job_results: Vec<Event> = events
        .iter()
        .filter(|e| e.kind == nipc1::CI_JOB_RESULT)
        .cloned()
        .collect();
    assert!(
        progress_versions.len() >= 3,
        "started, a job started or ended, concluded: {progress_versions:#?}"
    );
    for version in &progress_versions {
        let mut one = job_results.clone();
        one.push(version.clone());
        let problems: Vec<String> = nipc1::check_gitworkshop_conformance(&one)
            .into_iter()
            // A live version quotes no job results yet: those are published at the end.
            .filter(|p| !p.contains("no 9842 or 39842 quotes it"))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}\n{version:#?}");
    }
    // While `second` ran, the progress event named it, not a count.
    assert!(
        progress_versions.iter().any(|e| {
            let p = CiWorkflowProgress::from_event(e).unwrap();
            p.status == ProgressStatus::InProgress && p.in_progress == ["second"]
        }),
        "{progress_versions:#?}"
    );

    let workflow = events
        .iter()
        .find(|e| e.kind == nipc1::CI_WORKFLOW_RESULT)
        .unwrap();
    let workflow = CiWorkflowResult::from_event(workflow).unwrap();
    let file_hash = quorum_proto::blossom::Sha256Hex::from_bytes(
        <sha2::Sha256 as sha2::Digest>::digest(pipeline.as_bytes()).into(),
    );
    let w = workflow.context.workflow.clone().unwrap();
    assert_eq!(w.path, ".quorum/pipeline.yml");
    assert_eq!(w.sha256, Some(file_hash), "`w` hashes the file's bytes");
    assert_eq!(workflow.context.trigger, Some(nipc1::Trigger::Push));
    assert_eq!(workflow.context.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(workflow.run_id.as_deref(), Some(report.run.as_str()));
    let markers: Vec<_> = workflow.jobs.iter().filter_map(|q| q.job.clone()).collect();
    assert_eq!(markers, ["build", "second"]);
    let build = events
        .iter()
        .filter_map(|e| nipc1::CiJobResult::from_event(e).ok())
        .find(|j| j.job == "build")
        .unwrap();
    let mut files: Vec<_> = build
        .artifacts
        .iter()
        .filter_map(|a| a.filename.clone())
        .collect();
    files.sort();
    assert_eq!(files, ["out/dist.tar", "out/hello.txt"]);

    // A stranger replays the router's `build` step under its own key, naming the router's
    // run (`ci-run`) and a job of its choosing: the runner does the work it was asked for,
    // but speaks only about its requester's runs, so no job result appears in the router's
    // run and the router's CI status stays as it was.
    let step = client
        .fetch_events(
            Filter::new()
                .kind(Kind::from(5702))
                .author(router_keys.public_key()),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .into_iter()
        .find(|e| {
            quorum_proto::nip90::JobRequest::from_event(e)
                .is_ok_and(|r| r.param_value("job") == Some("build"))
        })
        .expect("the router's build step is on the relay");
    let mut forged = quorum_proto::nip90::JobRequest::from_event(&step).unwrap();
    assert!(
        forged.param_value(nipc1::PARAM_CI_RUN).is_some(),
        "the router's step names its run"
    );
    for param in &mut forged.params {
        if param.key == "job" {
            param.values = vec!["forged".into()];
        }
    }
    let stranger = Keys::generate();
    let forged = forged.to_event_builder().sign_with_keys(&stranger).unwrap();
    client.send_event(&forged).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answers = client
            .fetch_events(
                Filter::new().kind(Kind::from(6702)).event(forged.id),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        if let Some(answer) = answers.first() {
            let result = quorum_proto::nip90::JobResult::from_event(answer).unwrap();
            let report: quorum_proto::step::StepReport =
                serde_json::from_str(&result.content).unwrap();
            assert!(report.succeeded(), "the work itself is done: {report:?}");
            assert_eq!(report.ci_job_result, None, "{report:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner did not answer the stranger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = ci_events(&network.relay, &repo_id).await;
    let job_results: Vec<String> = after
        .iter()
        .filter_map(|e| nipc1::CiJobResult::from_event(e).ok())
        .map(|j| j.job)
        .collect();
    assert_eq!(job_results.len(), 2, "{job_results:?}");
    assert!(
        !job_results.iter().any(|j| j == "forged"),
        "{job_results:?}"
    );

    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_start_says_why_in_its_ci_status() {
    use quorum_proto::nipc1::{self, CiWorkflowProgress, CiWorkflowResult, Conclusion};
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;
    let (client, keys, mut notifications) = customer(&network).await;
    // A commit without a pipeline, and one whose pipeline does not lint.
    let (bare, bare_commit) = sample_repo(&dir.path().join("bare"));
    let (broken, broken_commit) = committed_pipeline(
        dir.path(),
        "on: [push]\njobs:\n  build:\n    needs: nobody\n    run: true\n",
    );
    let cases = [
        (
            format!("file://{}", bare.display()),
            bare_commit,
            "has no .quorum/pipeline.yml",
        ),
        (broken, broken_commit, "the pipeline does not lint"),
    ];
    for (repo, commit, reason) in cases {
        let repo_id =
            quorum_proto::nip34::RepoCoordinate::new(Keys::generate().public_key(), "sample");
        let mut run = quorum_proto::run::RunRequest::new(repo, &commit);
        run.repo_id = Some(repo_id.clone());
        let request = run
            .to_request()
            .provider(router_keys.public_key())
            .to_event_builder()
            .sign_with_keys(&keys)
            .unwrap();
        client.send_event(&request).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notification = tokio::time::timeout_at(deadline, notifications.recv())
                .await
                .expect("no refusal within 60 s")
                .unwrap();
            if let RelayPoolNotification::Event { event, .. } = notification
                && let Ok(feedback) = quorum_proto::nip90::JobFeedback::from_event(&event)
                && feedback.request_id == request.id
                && feedback.status == quorum_proto::nip90::FeedbackStatus::Error
            {
                break;
            }
        }
        let events = ci_events(&network.relay, &repo_id).await;
        let workflow = events
            .iter()
            .find(|e| e.kind == nipc1::CI_WORKFLOW_RESULT)
            .expect("a workflow result for a run that did not start");
        let workflow = CiWorkflowResult::from_event(workflow).unwrap();
        assert_eq!(workflow.conclusion, Conclusion::StartupFailure);
        assert!(workflow.content.contains(reason), "{}", workflow.content);
        assert_eq!(workflow.context.commit, commit);
        assert_eq!(workflow.context.trigger, Some(nipc1::Trigger::Manual));
        let progress = events
            .iter()
            .find(|e| e.kind == nipc1::CI_WORKFLOW_PROGRESS)
            .unwrap();
        let progress = CiWorkflowProgress::from_event(progress).unwrap();
        assert_eq!(progress.conclusion, Some(Conclusion::StartupFailure));
        assert_eq!(workflow.run_id, Some(progress.identifier));
        let problems = nipc1::check_gitworkshop_conformance(&events);
        // No file, no hash to put in `w`: the one thing the spec wants that cannot be had.
        let expected_missing_hash = usize::from(reason.starts_with("has no")) * 2;
        assert_eq!(
            problems.iter().filter(|p| p.contains("`w`")).count(),
            expected_missing_hash,
            "{problems:#?}"
        );
        assert_eq!(problems.len(), expected_missing_hash, "{problems:#?}");
    }
    client.shutdown().await;
    router.shutdown().await;
}
