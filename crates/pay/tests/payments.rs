//! Cashu payments with a real mint (cdk's, in process on loopback, its Lightning backend cdk's
//! fake wallet) and a real runner DVM on our relay: an unpaid job gets `payment-required` and
//! no work; a paid job runs and the runner's balance grows by the price while the payer's
//! shrinks by the price and the mint's fees; double-spent, replayed, under-paid, wrongly
//! locked and foreign tokens are refused before any work; an unredeemed payment is refunded
//! to the payer after its locktime. A paid router hires a priced runner with the requester's
//! money, keeps its fee and returns the rest as change.

use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_pay::fake_mint::FakeMint;
use quorum_pay::{Collector, PayWallet};
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobParam, JobRequest};
use quorum_proto::payment::PARAM_CASHU;
use quorum_proto::step::StepJob;
use quorum_testkit::git::sample_repo;
use quorum_testnet::{Network, Terms};

const WAIT: Duration = Duration::from_secs(20);

async fn wallet(dir: &std::path::Path, mint: &str) -> PayWallet {
    PayWallet::open(dir, mint, quorum_pay::random_seed())
        .await
        .expect("the wallet opens")
}

fn now() -> u64 {
    Timestamp::now().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_tokens_go_only_to_their_dvm_once_and_refund_after_the_locktime() {
    let dir = tempfile::tempdir().unwrap();
    let mint = FakeMint::start().await.unwrap();
    let other_mint = FakeMint::start().await.unwrap();
    let payer_keys = Keys::generate();
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    assert_eq!(payer.mint(100, WAIT).await.unwrap(), 100);
    let dvm = Keys::generate();
    let collector = Collector::per_job(wallet(&dir.path().join("dvm"), &mint.url).await, 10_000);

    // Wrongly locked: to another key.
    let stranger = Keys::generate();
    let to_stranger = payer
        .pay_locked(
            10,
            &stranger.public_key(),
            &payer_keys.public_key(),
            now() + 3600,
        )
        .await
        .unwrap();
    let refused = collector.redeem(&to_stranger, &dvm).await.unwrap_err();
    assert!(refused.contains("not P2PK-locked to this DVM"), "{refused}");
    // A bearer token, readable by anyone who saw it, is not taken either.
    let bearer = payer.send(10).await.unwrap();
    let refused = collector.redeem(&bearer, &dvm).await.unwrap_err();
    assert!(refused.contains("not P2PK-locked"), "{refused}");
    // Under-paid.
    let short = payer
        .pay_locked(5, &dvm.public_key(), &payer_keys.public_key(), now() + 3600)
        .await
        .unwrap();
    let refused = collector.redeem(&short, &dvm).await.unwrap_err();
    assert!(
        refused.contains("under-paid: the token holds 5 sats; the price is 10"),
        "{refused}"
    );
    // From a mint the DVM does not take.
    let foreign_wallet = wallet(&dir.path().join("foreign"), &other_mint.url).await;
    foreign_wallet.mint(20, WAIT).await.unwrap();
    let foreign = foreign_wallet
        .pay_locked(
            10,
            &dvm.public_key(),
            &payer_keys.public_key(),
            now() + 3600,
        )
        .await
        .unwrap();
    let refused = collector.redeem(&foreign, &dvm).await.unwrap_err();
    assert!(refused.contains("this DVM takes"), "{refused}");
    assert_eq!(
        collector.wallet.balance().await.unwrap(),
        0,
        "nothing was taken so far"
    );

    // The right token, once.
    let before = payer.balance().await.unwrap();
    let paid = payer
        .pay_locked(
            10,
            &dvm.public_key(),
            &payer_keys.public_key(),
            now() + 3600,
        )
        .await
        .unwrap();
    assert_eq!(
        collector.redeem(&paid, &dvm).await.unwrap(),
        (10_000, Some(payer_keys.public_key())),
        "received, and the change would go to the payer's refund key"
    );
    assert_eq!(collector.wallet.balance().await.unwrap(), 10);
    let after = payer.balance().await.unwrap();
    assert!(
        before - after >= 10,
        "the payer paid the price: {before} → {after}"
    );
    // Replayed (or double-spent): the mint refuses it.
    let refused = collector.redeem(&paid, &dvm).await.unwrap_err();
    assert!(refused.contains("already spent"), "{refused}");
    assert_eq!(collector.wallet.balance().await.unwrap(), 10);

    // A payment the DVM never took comes back to the payer after the locktime, not before.
    let unredeemed = payer
        .pay_locked(10, &dvm.public_key(), &payer_keys.public_key(), now() + 2)
        .await
        .unwrap();
    let early = payer.refund(&unredeemed, payer_keys.secret_key()).await;
    assert!(early.is_err(), "refunded before the locktime: {early:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let balance = payer.balance().await.unwrap();
    let refunded = payer
        .refund(&unredeemed, payer_keys.secret_key())
        .await
        .unwrap();
    assert!(refunded > 0 && refunded <= 10, "{refunded}");
    assert_eq!(payer.balance().await.unwrap(), balance + refunded);
}

/// A requester's key and its client on `network`'s relay.
async fn customer(network: &Network) -> (Keys, quorum_dvm::client::JobClient) {
    let customer = Keys::generate();
    let client = quorum_dvm::client::JobClient::connect(
        std::slice::from_ref(&network.relay),
        customer.clone(),
    )
    .await
    .unwrap();
    (customer, client)
}

/// The feedback and results `dvm` published for `request`.
async fn answers(
    client: &quorum_dvm::client::JobClient,
    request: &Event,
    dvm: &PublicKey,
) -> Vec<Event> {
    client
        .fetch(
            Filter::new().event(request.id).author(*dvm),
            Duration::from_secs(2),
        )
        .await
        .unwrap()
}

/// Waits until `dvm` answered `request` with a result or a terminal feedback.
async fn settled(
    client: &quorum_dvm::client::JobClient,
    request: &Event,
    dvm: &PublicKey,
) -> Vec<Event> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let found = answers(client, request, dvm).await;
        let terminal = found.iter().any(|e| {
            e.kind != Kind::JobFeedback
                || JobFeedback::from_event(e).is_ok_and(|f| {
                    matches!(
                        f.status,
                        FeedbackStatus::Error | FeedbackStatus::PaymentRequired
                    )
                })
        });
        if terminal {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "no answer: {found:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn statuses(events: &[Event]) -> Vec<FeedbackStatus> {
    events
        .iter()
        .filter_map(|e| JobFeedback::from_event(e).ok())
        .map(|f| f.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_runner_asks_for_payment_works_when_paid_and_refuses_a_spent_token() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mint = FakeMint::start().await.unwrap();
    let (repo, commit) = sample_repo(dir.path());
    let runner_keys = Keys::generate();
    let runner_wallet = wallet(&dir.path().join("runner-wallet"), &mint.url).await;
    let terms = Terms {
        price_msats: 3_000,
        payments: Some(Arc::new(Collector::per_job(runner_wallet.clone(), 3_000))),
        mints: vec![mint.url.clone()],
        ..Terms::default()
    };
    let runner = network
        .priced_runner(&dir.path().join("runner"), runner_keys.clone(), &terms)
        .await;
    let dvm = runner.public_key();
    let (customer, client) = customer(&network).await;
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    payer.mint(50, WAIT).await.unwrap();

    // The announcement says what it costs and where to pay.
    let offers = client
        .discover(StepJob::kind(), Duration::from_secs(5))
        .await
        .unwrap();
    let (_, offer) = offers.iter().find(|(k, _)| *k == dvm).expect("announced");
    assert_eq!(offer.offer.price.msats_per_job, 3_000);
    assert_eq!(offer.offer.price.mints, vec![mint.url.clone()]);

    let step = |marker: &str| {
        let mut job = StepJob::new(
            format!("file://{}", repo.display()),
            commit.clone(),
            format!("echo {marker} > proof.txt"),
        );
        job.artifacts = vec!["proof.txt".into()];
        let mut request = job.to_request();
        request.providers = vec![dvm];
        request
    };
    let with_token = |mut request: JobRequest, token: &str| {
        request.params.push(JobParam::new(PARAM_CASHU, token));
        request
    };

    // Unpaid: payment-required with the amount, and no work.
    let unpaid = client.submit(&step("unpaid"), true).await.unwrap();
    let found = settled(&client, &unpaid, &dvm).await;
    // Taken into the queue ("queued"), then asked to pay; never started.
    let feedback: Vec<JobFeedback> = found
        .iter()
        .filter_map(|e| JobFeedback::from_event(e).ok())
        .collect();
    assert!(
        feedback
            .iter()
            .all(|f| f.status == FeedbackStatus::PaymentRequired
                || f.extra.as_deref() == Some("queued")),
        "{found:?}"
    );
    let asked = feedback
        .iter()
        .find(|f| f.status == FeedbackStatus::PaymentRequired)
        .expect("payment-required");
    assert_eq!(asked.amount.as_ref().map(|a| a.msats), Some(3_000));
    assert!(
        found.iter().all(|e| e.kind == Kind::JobFeedback),
        "no result: {found:?}"
    );

    // Paid: the job runs; the runner holds the price, the payer paid it and the fees.
    let before = payer.balance().await.unwrap();
    let token = payer
        .pay_locked(3, &dvm, &customer.public_key(), now() + 3600)
        .await
        .unwrap();
    let paid = client
        .submit(&with_token(step("paid"), &token), true)
        .await
        .unwrap();
    assert!(
        !paid.content.contains("cashu"),
        "the token travels NIP-44 encrypted"
    );
    assert!(
        paid.tags
            .iter()
            .all(|t| !t.as_slice().iter().any(|v| v.starts_with("cashu")))
    );
    let found = settled(&client, &paid, &dvm).await;
    assert!(
        found
            .iter()
            .any(|e| e.kind.as_u16() == StepJob::kind().as_u16() + 1000),
        "a result: {:?}",
        statuses(&found)
    );
    assert_eq!(runner_wallet.balance().await.unwrap(), 3);
    let after = payer.balance().await.unwrap();
    assert!(before - after >= 3, "{before} → {after}");

    // The same token again (a replay in a new request, or a double spend): refused, no work.
    let replayed = client
        .submit(&with_token(step("replayed"), &token), true)
        .await
        .unwrap();
    let found = settled(&client, &replayed, &dvm).await;
    let refusal = found
        .iter()
        .filter_map(|e| client_open_error(&customer, e))
        .next()
        .expect("an error feedback");
    assert!(
        refusal.contains("payment refused: the token is already spent"),
        "{refusal}"
    );
    assert!(
        found.iter().all(|e| e.kind == Kind::JobFeedback),
        "no result: {found:?}"
    );
    assert_eq!(runner_wallet.balance().await.unwrap(), 3);
    client.shutdown().await;
    runner.shutdown().await;
}

/// The clear reason of an (encrypted) error feedback.
fn client_open_error(customer: &Keys, event: &Event) -> Option<String> {
    let feedback = JobFeedback::from_event(event).ok()?;
    if feedback.status != FeedbackStatus::Error {
        return None;
    }
    let content = feedback
        .decrypt(customer.secret_key(), &event.pubkey)
        .ok()?;
    Some(format!("{} {content}", feedback.extra.unwrap_or_default()))
}

struct Quiet;

impl quorum_router::RunReporter for Quiet {
    fn job_started(&mut self, _job: &quorum_pipeline::PlannedJob) {}
    fn job_progress(&mut self, _job: &str, _provider: &PublicKey, _line: &str) {}
    fn job_finished(&mut self, _record: &quorum_router::JobRecord) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_pays_a_priced_runner_within_the_runs_budget() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mint = FakeMint::start().await.unwrap();
    let (repo, commit) = sample_repo(dir.path());
    let runner_wallet = wallet(&dir.path().join("runner-wallet"), &mint.url).await;
    let terms = Terms {
        price_msats: 3_000,
        payments: Some(Arc::new(Collector::per_job(runner_wallet.clone(), 3_000))),
        mints: vec![mint.url.clone()],
        ..Terms::default()
    };
    let runner = network
        .priced_runner(&dir.path().join("runner"), Keys::generate(), &terms)
        .await;
    let (customer, client) = customer(&network).await;
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    payer.mint(20, WAIT).await.unwrap();
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: push\njobs:\n  one:\n    run: echo one\n  two:\n    needs: one\n    run: echo two\n",
    )
    .unwrap();
    let context = quorum_router::RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..Default::default()
    };
    // Wait for the announcement, which is where the engine learns the price.
    announced(&client, &runner.public_key()).await;

    // Without a wallet the run does not know the price: the runner asks for payment, does no
    // work, and the job ends at once with its answer.
    let unpaid = quorum_router::EngineConfig {
        runners: vec![runner.public_key()],
        attempts: 1,
        ..Default::default()
    };
    let outcome =
        quorum_router::execute(&client, &plan, &context, &unpaid, Vec::new(), &mut Quiet).await;
    let first = &outcome.jobs[0];
    assert!(
        matches!(&first.state, quorum_router::JobState::Failed { reason } if reason.contains("charges 3000 msats per job")),
        "{first:?}"
    );
    assert!(first.result.is_none(), "no work: {first:?}");

    // With a budget for one job: the first is paid and runs, the second would exceed it.
    let before = payer.balance().await.unwrap();
    let budgeted = quorum_router::EngineConfig {
        runners: vec![runner.public_key()],
        attempts: 1,
        payer: Some(Arc::new(quorum_pay::WalletPayer {
            wallet: payer.clone(),
            keys: customer.clone(),
        })),
        budget_msats: Some(5_000),
        ..Default::default()
    };
    let outcome =
        quorum_router::execute(&client, &plan, &context, &budgeted, Vec::new(), &mut Quiet).await;
    let (one, two) = (&outcome.jobs[0], &outcome.jobs[1]);
    assert_eq!(one.state, quorum_router::JobState::Succeeded, "{one:?}");
    assert_eq!(one.paid_msats, 3_000);
    assert!(
        matches!(&two.state, quorum_router::JobState::Failed { reason } if reason.contains("over the run's budget")),
        "{two:?}"
    );
    assert_eq!(two.paid_msats, 0);
    assert_eq!(
        runner_wallet.balance().await.unwrap(),
        3,
        "the runner got the price"
    );
    let spent = before - payer.balance().await.unwrap();
    assert!(
        (3..6).contains(&spent),
        "the payer paid the price and fees only: {spent}"
    );
    client.shutdown().await;
    runner.shutdown().await;
}

/// Waits until `dvm` announced a runner offer on the relay: the engine learns prices there.
async fn announced(client: &quorum_dvm::client::JobClient, dvm: &PublicKey) {
    announced_kind(client, StepJob::kind(), dvm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_second_price_is_prepaid_and_the_change_comes_back_to_the_payer() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mint = FakeMint::start().await.unwrap();
    let (repo, commit) = sample_repo(dir.path());
    let runner_wallet = wallet(&dir.path().join("runner-wallet"), &mint.url).await;
    // 1 sat per job and 1 sat per second for at most 30 s: 31 sats up front.
    let terms = Terms {
        price_msats: 1_000,
        msats_per_second: 1_000,
        max_timeout: Some(Duration::from_secs(30)),
        payments: Some(Arc::new(Collector {
            wallet: runner_wallet.clone(),
            price_msats: 1_000,
            msats_per_second: 1_000,
            max_secs: 30,
        })),
        mints: vec![mint.url.clone()],
        ..Terms::default()
    };
    let runner = network
        .priced_runner(&dir.path().join("runner"), Keys::generate(), &terms)
        .await;
    let dvm = runner.public_key();
    let (customer, client) = customer(&network).await;
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    payer.mint(100, WAIT).await.unwrap();
    // The wallet's key, not the requester's: payments refund to it and change is locked and
    // sealed to it.
    let payer_keys = Keys::generate();
    announced(&client, &dvm).await;
    let plan = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: push\njobs:\n  slow:\n    run: sleep 2 && echo done\n",
    )
    .unwrap();
    let config = quorum_router::EngineConfig {
        runners: vec![dvm],
        attempts: 1,
        payer: Some(Arc::new(quorum_pay::WalletPayer {
            wallet: payer.clone(),
            keys: payer_keys.clone(),
        })),
        budget_msats: Some(40_000),
        ..Default::default()
    };
    let context = quorum_router::RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..Default::default()
    };

    let before = payer.balance().await.unwrap();
    let outcome =
        quorum_router::execute(&client, &plan, &context, &config, Vec::new(), &mut Quiet).await;
    let job = &outcome.jobs[0];
    assert_eq!(job.state, quorum_router::JobState::Succeeded, "{job:?}");
    let charged = runner_wallet.balance().await.unwrap();
    assert!(
        (3..31).contains(&charged),
        "1 sat and at least 2 s of work, less than the longest run: {charged}"
    );
    assert_eq!(
        job.payments,
        vec![quorum_router::PaymentRecord {
            dvm: dvm.to_hex(),
            paid_msats: 31_000,
            change_msats: (31 - charged) * 1000,
        }]
    );
    assert_eq!(job.paid_msats, charged * 1000);
    assert_eq!(outcome.paid_msats(), charged * 1000);
    assert_eq!(
        before - payer.balance().await.unwrap(),
        charged,
        "the payer is out exactly what the runner kept"
    );
    // The change travelled sealed to the payer's key: not a token in the clear, and not
    // readable by whoever else sees the result (the requester's key included).
    let result = client
        .fetch(
            Filter::new().id(EventId::from_hex(job.result.as_deref().unwrap()).unwrap()),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let sealed = quorum_proto::payment::change_of(&result[0]).expect("a change tag");
    assert!(!sealed.contains("cashu"), "{sealed}");
    assert!(quorum_proto::payment::open_change(sealed, customer.secret_key(), &dvm).is_err());
    let token = quorum_proto::payment::open_change(sealed, payer_keys.secret_key(), &dvm).unwrap();
    // Locked to the payer: the runner cannot take it back, and it is spent already anyway.
    assert!(runner_wallet.receive(&token, None).await.is_err());

    // A job that fails before it starts (its commit does not exist): the whole payment comes
    // back, and the budget with it.
    let kept = runner_wallet.balance().await.unwrap();
    let before = payer.balance().await.unwrap();
    let missing = quorum_router::RunContext {
        commit: "0".repeat(40),
        ..context.clone()
    };
    let outcome =
        quorum_router::execute(&client, &plan, &missing, &config, Vec::new(), &mut Quiet).await;
    let job = &outcome.jobs[0];
    assert!(
        matches!(job.state, quorum_router::JobState::Failed { .. }),
        "{job:?}"
    );
    assert_eq!(job.payments[0].paid_msats, 31_000);
    assert_eq!(job.payments[0].change_msats, 31_000, "{job:?}");
    assert_eq!(job.paid_msats, 0);
    assert_eq!(runner_wallet.balance().await.unwrap(), kept);
    assert_eq!(payer.balance().await.unwrap(), before);
    client.shutdown().await;
    runner.shutdown().await;
}

fn fast() -> quorum_consensus::member::MemberConfig {
    quorum_consensus::member::MemberConfig {
        agreement: quorum_consensus::agreement::AgreementConfig {
            commit_wait: Duration::from_secs(60),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(20),
            ..Default::default()
        },
        signing: quorum_consensus::signing::SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_of_three_quorum_job_pays_each_of_its_three_members() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mint = FakeMint::start().await.unwrap();
    let (repo, _) = sample_repo(dir.path());
    let share_dir = |n: usize| dir.path().join(format!("runner{n}")).join("shares");
    let dealt = quorum_testnet::quorum::deal(
        &network.relay,
        quorum_testnet::quorum::QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build"],
            allow: &[8708],
        },
        share_dir,
    )
    .await;
    let mut runners = Vec::new();
    let mut wallets = Vec::new();
    for (n, keys) in dealt.members.iter().enumerate() {
        let member_wallet = wallet(&dir.path().join(format!("wallet{n}")), &mint.url).await;
        let terms = Terms {
            price_msats: 2_000,
            payments: Some(Arc::new(Collector::per_job(member_wallet.clone(), 2_000))),
            mints: vec![mint.url.clone()],
            ..Terms::default()
        };
        runners.push(
            network
                .priced_quorum_runner(
                    &dir.path().join(format!("runner{n}")),
                    keys.clone(),
                    &share_dir(n),
                    fast(),
                    &terms,
                )
                .await,
        );
        wallets.push(member_wallet);
    }
    let client = network.client().await;
    const PIPELINE: &str = "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n";
    let commit =
        quorum_testkit::git::commit_file(&repo, ".quorum/pipeline.yml", PIPELINE, "pipeline");
    let url = format!("file://{}", repo.display());
    dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &commit)
        .await;
    let quorum = quorum_router::quorum::QuorumContext::new(dealt.mandate.clone())
        .unwrap()
        .with_source(&client, &url, &commit)
        .await;
    let context = quorum_router::RunContext {
        repo: url,
        commit,
        repo_id: Some(dealt.repo()),
        quorum: Some(quorum),
        ..Default::default()
    };
    for runner in &runners {
        announced(&client, &runner.public_key()).await;
    }
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    payer.mint(20, WAIT).await.unwrap();
    let config = quorum_router::EngineConfig {
        payer: Some(Arc::new(quorum_pay::WalletPayer {
            wallet: payer.clone(),
            keys: Keys::generate(),
        })),
        // Exactly the three members' price: the budget counts every member.
        budget_msats: Some(6_000),
        ..Default::default()
    };
    let before = payer.balance().await.unwrap();
    let outcome =
        quorum_router::execute(&client, &plan, &context, &config, Vec::new(), &mut Quiet).await;
    let job = &outcome.jobs[0];
    assert_eq!(job.state, quorum_router::JobState::Succeeded, "{job:?}");
    let mut paid: Vec<String> = job.payments.iter().map(|p| p.dvm.clone()).collect();
    paid.sort();
    let mut members: Vec<String> = dealt
        .members
        .iter()
        .map(|k| k.public_key().to_hex())
        .collect();
    members.sort();
    assert_eq!(paid, members, "every member was paid");
    assert!(
        job.payments
            .iter()
            .all(|p| p.paid_msats == 2_000 && p.change_msats == 0)
    );
    assert_eq!(job.paid_msats, 6_000);
    assert_eq!(before - payer.balance().await.unwrap(), 6);
    // The third member may still be redeeming when two answers end the job.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut balances = Vec::new();
        for member_wallet in &wallets {
            balances.push(member_wallet.balance().await.unwrap());
        }
        if balances == [2, 2, 2] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "each member holds the price: {balances:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    client.shutdown().await;
    for runner in runners {
        runner.shutdown().await;
    }
}

/// Waits until `dvm` announced an offer of `kind` on the relay.
async fn announced_kind(client: &quorum_dvm::client::JobClient, kind: Kind, dvm: &PublicKey) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !client
        .discover(kind, Duration::from_secs(1))
        .await
        .unwrap()
        .iter()
        .any(|(k, _)| k == dvm)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{dvm} did not announce kind {kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_router_pays_its_runner_from_the_requesters_money_and_returns_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mint = FakeMint::start().await.unwrap();
    let (repo, _) = sample_repo(dir.path());
    let commit = quorum_testkit::git::commit_file(
        &repo,
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  build:\n    run: echo paid for\n",
        "pipeline",
    );
    // A runner at 3 sats a job.
    let runner_wallet = wallet(&dir.path().join("runner-wallet"), &mint.url).await;
    let runner = network
        .priced_runner(
            &dir.path().join("runner"),
            Keys::generate(),
            &Terms {
                price_msats: 3_000,
                payments: Some(Arc::new(Collector::per_job(runner_wallet.clone(), 3_000))),
                mints: vec![mint.url.clone()],
                ..Terms::default()
            },
        )
        .await;
    // A router with a fee of 2 sats a run, paying its runners from the wallet it is paid into.
    let router_keys = Keys::generate();
    let router_wallet = wallet(&dir.path().join("router-wallet"), &mint.url).await;
    let router = network
        .paid_router(
            &dir.path().join("router"),
            &router_keys,
            &quorum_testnet::RouterTerms {
                fee_msats: 2_000,
                mints: vec![mint.url.clone()],
                payments: Arc::new(Collector::per_job(router_wallet.clone(), 2_000)),
                payer: Arc::new(quorum_pay::WalletPayer {
                    wallet: router_wallet.clone(),
                    keys: router_keys.clone(),
                }),
            },
        )
        .await;
    let routed = router.public_key();
    let (customer, client) = customer(&network).await;
    let payer = wallet(&dir.path().join("payer"), &mint.url).await;
    payer.mint(20, WAIT).await.unwrap();
    announced(&client, &runner.public_key()).await;
    let run_kind = quorum_proto::kinds::JobKind::RunPipeline.request_kind();
    announced_kind(&client, run_kind, &routed).await;
    let offers = client
        .discover(run_kind, Duration::from_secs(5))
        .await
        .unwrap();
    let (_, offer) = offers
        .iter()
        .find(|(k, _)| *k == routed)
        .expect("announced");
    assert_eq!(offer.offer.price.msats_per_job, 2_000);
    assert_eq!(offer.offer.price.mints, vec![mint.url.clone()]);
    let run = quorum_proto::run::RunRequest::new(format!("file://{}", repo.display()), &commit)
        .to_request()
        .provider(routed);

    // Unpaid: payment-required with the fee, and the router hires nobody.
    let unpaid = client.submit(&run, false).await.unwrap();
    let found = settled(&client, &unpaid, &routed).await;
    let asked = found
        .iter()
        .filter_map(|e| JobFeedback::from_event(e).ok())
        .find(|f| f.status == FeedbackStatus::PaymentRequired)
        .expect("payment-required");
    assert_eq!(asked.amount.as_ref().map(|a| a.msats), Some(2_000));
    assert!(
        found.iter().all(|e| e.kind == Kind::JobFeedback),
        "no sub-request and no result: {found:?}"
    );
    assert_eq!(runner_wallet.balance().await.unwrap(), 0);

    // Paid 10 sats: the fee (2) and a budget of 8 for the runner (3); 5 come back.
    let before = payer.balance().await.unwrap();
    let paying = quorum_pay::WalletPayer {
        wallet: payer.clone(),
        keys: customer.clone(),
    };
    let paid = quorum_pay::job::PaidJob {
        payer: &paying,
        budget_msats: 10_000,
    }
    .run(
        &client,
        &run,
        true,
        Duration::from_secs(120),
        &mut quorum_dvm::client::Quiet,
    )
    .await
    .expect("the paid run is answered");
    let quorum_dvm::client::JobOutcome::Result { content, .. } = &paid.outcome else {
        panic!("no result: {:?}", paid.outcome);
    };
    let report: quorum_proto::run::RunReport = serde_json::from_str(content).unwrap();
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(
        runner_wallet.balance().await.unwrap(),
        3,
        "the runner's price"
    );
    assert_eq!(
        router_wallet.balance().await.unwrap(),
        2,
        "the router's fee"
    );
    assert_eq!((paid.paid_msats, paid.change_msats), (10_000, 5_000));
    assert_eq!(
        before - payer.balance().await.unwrap(),
        5,
        "the requester is out the fee and the runner's price, no more"
    );
    assert_eq!(
        report.payment,
        Some(quorum_proto::run::RunPayment {
            paid_msats: 10_000,
            fee_msats: 2_000,
            runners_msats: 3_000,
            change_msats: 5_000,
        })
    );
    let job = &report.jobs[0];
    assert_eq!(job.paid_msats, 3_000);
    assert_eq!(
        job.payments,
        vec![quorum_proto::run::StepPayment {
            dvm: runner.public_key().to_hex(),
            paid_msats: 3_000,
            change_msats: 0,
        }]
    );

    // A run that cannot start (no such commit) hired nobody: all of it comes back.
    let before = payer.balance().await.unwrap();
    let missing =
        quorum_proto::run::RunRequest::new(format!("file://{}", repo.display()), "0".repeat(40))
            .to_request()
            .provider(routed);
    let refunded = quorum_pay::job::PaidJob {
        payer: &paying,
        budget_msats: 10_000,
    }
    .run(
        &client,
        &missing,
        true,
        Duration::from_secs(120),
        &mut quorum_dvm::client::Quiet,
    )
    .await
    .expect("the paid run is answered");
    assert!(
        matches!(
            refunded.outcome,
            quorum_dvm::client::JobOutcome::Error { .. }
        ),
        "{:?}",
        refunded.outcome
    );
    assert_eq!(
        (refunded.paid_msats, refunded.change_msats),
        (10_000, 10_000)
    );
    assert_eq!(payer.balance().await.unwrap(), before);
    assert_eq!(router_wallet.balance().await.unwrap(), 2, "no second fee");
    client.shutdown().await;
    router.shutdown().await;
    runner.shutdown().await;
}
