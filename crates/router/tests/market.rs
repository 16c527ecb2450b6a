//! Choosing DVMs on the open market (`select:`), on loopback with the real relay and real
//! runner DVMs: trust lists, follow distance and a price cap pick exactly the expected
//! runners; a quorum of one operator's DVMs is refused for `diversity` before anything runs;
//! a runner with a poor public record is left out, from the record computed by the engine and
//! from a record keeper's NIP-85 assertions (which nostr-tools re-verifies).

use std::collections::BTreeSet;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::Dvm;
use quorum_dvm::client::JobClient;
use quorum_market::Query;
use quorum_pipeline::select::SelectPolicy;
use quorum_proto::mandate::{Keygen, Mandate, MandateRules, Member};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::operator::OperatorList;
use quorum_proto::step::StepJob;
use quorum_proto::trust::{DEFAULT_TRUST_LIST, TrustList, follow_list};
use quorum_router::quorum::QuorumContext;
use quorum_router::{EngineConfig, JobState, QuietRun, RunContext, execute};
use quorum_testkit::git::sample_repo;
use quorum_testnet::{Network, Terms};

async fn publish(client: &JobClient, events: &[Event]) {
    for event in events {
        client.publish_signed(event).await.expect("published");
    }
}

fn signed(builder: EventBuilder, keys: &Keys) -> Event {
    builder.sign_with_keys(keys).expect("signed")
}

/// Waits until every DVM in `dvms` has announced kind 5702 on the relay.
async fn announced(client: &JobClient, dvms: &[PublicKey]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found: BTreeSet<PublicKey> = client
            .discover(StepJob::kind(), Duration::from_secs(2))
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if dvms.iter().all(|d| found.contains(d)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runners did not announce"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_a_follow_distance_and_a_price_cap_pick_exactly_the_expected_runners() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let [maintainer, friend, far, operator] = [(); 4].map(|_| Keys::generate());
    let keys: Vec<Keys> = (0..6).map(|_| Keys::generate()).collect();
    // a: on the maintainer's list, free. b: run by a listed operator (confirmed), 0.5 sat.
    // c: two follow hops away, free. d: three hops away. e: listed, 5 sats. f: claims the
    // listed operator, who does not list it.
    let terms = [
        (0, None),
        (500, Some(operator.public_key())),
        (0, None),
        (0, None),
        (5_000, None),
        (0, Some(operator.public_key())),
    ];
    let mut runners: Vec<Dvm> = Vec::new();
    for (i, (price_msats, operator)) in terms.into_iter().enumerate() {
        let terms = Terms {
            price_msats,
            operator,
            ..Terms::default()
        };
        runners.push(
            network
                .priced_runner(&dir.path().join(format!("r{i}")), keys[i].clone(), &terms)
                .await,
        );
    }
    let key = |i: usize| keys[i].public_key();
    let client = network.client().await;
    publish(
        &client,
        &[
            signed(OperatorList::new([key(1)]).to_event_builder(), &operator),
            signed(
                TrustList::new(DEFAULT_TRUST_LIST, [key(0), operator.public_key(), key(4)])
                    .to_event_builder(),
                &maintainer,
            ),
            signed(follow_list([friend.public_key()]), &maintainer),
            signed(follow_list([key(2), far.public_key()]), &friend),
            signed(follow_list([key(3)]), &far),
        ],
    )
    .await;
    announced(&client, &(0..6).map(key).collect::<Vec<_>>()).await;

    let pipeline = r#"
on: push
select:
  trusted: { list: quorum-ci-trusted, follows: 2 }
  price: { per_job: 1 }
  prefer: cheapest
jobs:
  one:
    run: echo one
  two:
    needs: one
    run: echo two
"#;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", pipeline).expect("lints");
    // The market as the engine sees it: exactly a, b and c, the free ones first.
    let policy = plan.jobs[0].select.clone().expect("the file's policy");
    let selection = quorum_market::choose(
        &client,
        &Query {
            kind: StepJob::kind(),
            candidates: None,
            policy: &policy,
            maintainer: Some(maintainer.public_key()),
            with_record: false,
            timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    let admitted = selection.admitted();
    assert_eq!(
        admitted.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([key(0), key(1), key(2)]),
        "{}",
        selection.report()
    );
    assert_eq!(admitted[2], key(1), "the 0.5 sat runner comes last");
    assert_eq!(
        selection.judged.len(),
        6,
        "every announced runner was considered"
    );

    // The engine runs the jobs on the first admitted runner, with no other runner given.
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        repo_id: Some(RepoCoordinate::new(maintainer.public_key(), "app")),
        ..RunContext::default()
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
    assert!(outcome.succeeded, "{:#?}", outcome.jobs);
    for job in &outcome.jobs {
        assert_eq!(job.tried, vec![admitted[0].to_hex()], "{job:?}");
    }
    for runner in runners {
        runner.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diversity_refuses_a_quorum_of_one_operator_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let [owner, operator] = [(); 2].map(|_| Keys::generate());
    let members: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let mut runners = Vec::new();
    for (i, keys) in members.iter().enumerate() {
        let terms = Terms {
            operator: Some(operator.public_key()),
            ..Terms::default()
        };
        runners.push(
            network
                .priced_runner(&dir.path().join(format!("m{i}")), keys.clone(), &terms)
                .await,
        );
    }
    let client = network.client().await;
    let repo_id = RepoCoordinate::new(owner.public_key(), "app");
    let mandate = Mandate {
        repo: repo_id.clone(),
        pipeline: ".quorum/pipeline.yml".into(),
        jobs: vec!["build".into()],
        quorum: Some(Keys::generate().public_key()),
        members: members
            .iter()
            .enumerate()
            .map(|(i, k)| Member::new(k.public_key(), i as u16 + 1))
            .collect(),
        threshold: 2,
        keygen: Keygen::Dealer { dealer: None },
        allow: [8708u16].into_iter().collect(),
        expiration: Timestamp::now() + 3600u64,
        rules: MandateRules::default(),
        content: String::new(),
    };
    let mandate = signed(mandate.to_event_builder().unwrap(), &owner);
    publish(
        &client,
        &[
            mandate.clone(),
            signed(
                OperatorList::new(members.iter().map(Keys::public_key)).to_event_builder(),
                &operator,
            ),
        ],
    )
    .await;
    announced(
        &client,
        &members.iter().map(Keys::public_key).collect::<Vec<_>>(),
    )
    .await;

    let pipeline = r#"
on: push
jobs:
  test:
    run: echo test
  build:
    mode: quorum
    replicas: 3
    threshold: 2
    run: echo build
    select:
      diversity: 3
"#;
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", pipeline).expect("lints");
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        repo_id: Some(repo_id),
        quorum: Some(QuorumContext::new(mandate).unwrap()),
        ..RunContext::default()
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
    let job = |id: &str| outcome.jobs.iter().find(|j| j.id == id).unwrap();
    let JobState::Failed { reason } = &job("build").state else {
        panic!("the quorum job fails: {:?}", job("build"));
    };
    assert!(
        reason.starts_with("before the run started: diversity"),
        "{reason}"
    );
    assert!(
        reason.contains("1 distinct confirmed operator(s); 3 needed"),
        "{reason}"
    );
    assert!(
        reason.contains(&quorum_market::select::short(&operator.public_key())),
        "{reason}"
    );
    for member in &members {
        assert!(
            reason.contains(&quorum_market::select::short(&member.public_key())),
            "{reason}"
        );
    }
    assert!(
        matches!(&job("test").state, JobState::Skipped { reason } if reason.contains("did not start")),
        "{:?}",
        job("test")
    );
    // Nothing ran: no request went out.
    let requests = client
        .fetch(
            Filter::new()
                .kind(StepJob::kind())
                .author(client.public_key()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(requests.is_empty(), "{requests:?}");
    for runner in runners {
        runner.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_with_a_poor_record_is_excluded_and_a_record_keeper_says_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    // The poor runner refuses file:// repositories, so every job it is given fails.
    let poor = network.runner(&dir.path().join("poor"), false).await;
    let good = network.runner(&dir.path().join("good"), true).await;
    let client = network.client().await;
    announced(&client, &[poor.public_key(), good.public_key()]).await;
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let three_jobs =
        "on: push\njobs:\n  a:\n    run: echo a\n  b:\n    run: echo b\n  c:\n    run: echo c\n";
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", three_jobs).unwrap();
    // The record: three jobs each, failed on one, done on the other.
    for (runner, succeeds) in [(&poor, false), (&good, true)] {
        let config = EngineConfig {
            runners: vec![runner.public_key()],
            attempts: 1,
            ..EngineConfig::default()
        };
        let outcome = execute(&client, &plan, &context, &config, Vec::new(), &mut QuietRun).await;
        assert_eq!(outcome.succeeded, succeeds, "{:#?}", outcome.jobs);
    }

    // The engine computes the record and leaves the poor runner out.
    let with_record = |record: &str| {
        format!(
            "on: push\nselect:\n  record: {record}\njobs:\n  a:\n    run: echo a\n  b:\n    run: echo b\n"
        )
    };
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        &with_record("{ jobs: 3, success: 50 }"),
    )
    .unwrap();
    let both = EngineConfig {
        runners: vec![poor.public_key(), good.public_key()],
        ..EngineConfig::default()
    };
    let outcome = execute(&client, &plan, &context, &both, Vec::new(), &mut QuietRun).await;
    assert!(outcome.succeeded, "{:#?}", outcome.jobs);
    for job in &outcome.jobs {
        assert_eq!(job.tried, vec![good.public_key().to_hex()], "{job:?}");
    }

    // A record keeper publishes the same figures as NIP-85 assertions under its own key.
    let recorder = JobClient::connect(std::slice::from_ref(&network.relay), Keys::generate())
        .await
        .unwrap();
    let published = quorum_market::recorder::round(
        &recorder,
        &quorum_market::recorder::RecorderConfig {
            kinds: vec![StepJob::kind()],
            window: 3,
            timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    let figures = |dvm: &PublicKey| {
        let (_, event) = published.iter().find(|(k, _)| k == dvm).expect("recorded");
        quorum_proto::nip85::Assertion::from_event(event)
            .unwrap()
            .figures
            .unwrap()
    };
    let poor_figures = figures(&poor.public_key());
    assert_eq!(
        (poor_figures.jobs, poor_figures.success, poor_figures.uptime),
        (3, 0, 100)
    );
    let good_figures = figures(&good.public_key());
    assert_eq!((good_figures.jobs, good_figures.success), (3, 100));
    assert!(good_figures.median_secs.is_some());
    // The tallies match what the engine computes from the record itself.
    let events = quorum_market::fetch::record(
        &client,
        StepJob::kind(),
        &[poor.public_key(), good.public_key()],
        3,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let observed =
        quorum_market::record::Observed::new(&events, &[StepJob::kind()], Timestamp::now());
    use quorum_market::record::RecordSource;
    assert_eq!(observed.figures(&poor.public_key(), 3), Some(poor_figures));
    assert_eq!(observed.figures(&good.public_key(), 3), Some(good_figures));
    // nostr-tools re-verifies the assertions' ids and signatures.
    let filter = serde_json::json!({"kinds": [30382], "authors": [recorder.public_key().to_hex()]});
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[network.relay.as_str(), &filter.to_string()],
        Duration::from_secs(60),
    );
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["count"], 2, "{report}");
    assert_eq!(report["valid"], 2, "{report}");

    // A policy that takes the keeper's figures leaves the poor runner out too.
    let policy: SelectPolicy = quorum_pipeline::parse_policy(
        "policy.yml",
        &format!(
            "record: {{ recorder: {}, success: 50 }}\n",
            recorder.public_key().to_hex()
        ),
    )
    .unwrap();
    let selection = quorum_market::choose(
        &client,
        &Query {
            kind: StepJob::kind(),
            candidates: Some(&[poor.public_key(), good.public_key()]),
            policy: &policy,
            maintainer: None,
            with_record: false,
            timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        selection.admitted(),
        vec![good.public_key()],
        "{}",
        selection.report()
    );
    assert!(
        selection
            .report()
            .contains("record: success 0% over 3 jobs is below 50%"),
        "{}",
        selection.report()
    );
    recorder.shutdown().await;
    poor.shutdown().await;
    good.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_dvm_applies_its_policy_when_a_run_request_leaves_runners_open() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(
        repo.join(".quorum/pipeline.yml"),
        "on: [push]\njobs:\n  a:\n    run: echo a\n  b:\n    run: echo b\n  c:\n    run: echo c\n",
    )
    .unwrap();
    quorum_testkit::git::git(&repo, &["add", "."]);
    quorum_testkit::git::git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit = quorum_testkit::git::git(&repo, &["rev-parse", "HEAD"]);
    // Two runners on the market; the router's policy caps the price at 1 sat per job.
    let cheap = network
        .priced_runner(
            &dir.path().join("cheap"),
            Keys::generate(),
            &Terms::default(),
        )
        .await;
    let dear = network
        .priced_runner(
            &dir.path().join("dear"),
            Keys::generate(),
            &Terms {
                price_msats: 50_000,
                ..Terms::default()
            },
        )
        .await;
    let client = network.client().await;
    announced(&client, &[cheap.public_key(), dear.public_key()]).await;
    let policy =
        quorum_pipeline::parse_policy("router-policy.yml", "price: { per_job: 1 }\n").unwrap();
    let router_keys = Keys::generate();
    let router = network
        .router_with_policy(&dir.path().join("router"), &router_keys, Some(policy))
        .await;

    let request = quorum_proto::run::RunRequest::new(format!("file://{}", repo.display()), &commit)
        .to_request()
        .provider(router_keys.public_key());
    let outcome = client
        .run(
            &request,
            false,
            Duration::from_secs(120),
            &mut quorum_dvm::client::Quiet,
        )
        .await
        .unwrap();
    let quorum_dvm::client::JobOutcome::Result { content, .. } = outcome else {
        panic!("the run failed: {outcome:?}");
    };
    let report: quorum_proto::run::RunReport = serde_json::from_str(&content).unwrap();
    assert!(report.succeeded(), "{report:?}");
    // Without the policy some of the three jobs would start on the dear runner (it was checked
    // by running this test with the policy removed).
    for job in &report.jobs {
        assert_eq!(
            job.provider.as_deref(),
            Some(cheap.public_key().to_hex().as_str()),
            "{job:?}"
        );
    }
    router.shutdown().await;
    cheap.shutdown().await;
    dear.shutdown().await;
}
