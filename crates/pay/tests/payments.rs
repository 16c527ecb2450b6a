//! Cashu payments with a real mint (cdk's, in process on loopback, its Lightning backend cdk's
//! fake wallet) and a real runner DVM on our relay: an unpaid job gets `payment-required` and
//! no work; a paid job runs and the runner's balance grows by the price while the payer's
//! shrinks by the price and the mint's fees; double-spent, replayed, under-paid, wrongly
//! locked and foreign tokens are refused before any work; an unredeemed payment is refunded
//! to the payer after its locktime.

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
    let collector = Collector {
        wallet: wallet(&dir.path().join("dvm"), &mint.url).await,
        price_msats: 10_000,
    };

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
    assert_eq!(collector.redeem(&paid, &dvm).await.unwrap(), 10_000);
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
        payments: Some(Arc::new(Collector {
            wallet: runner_wallet.clone(),
            price_msats: 3_000,
        })),
        mints: vec![mint.url.clone()],
        ..Terms::default()
    };
    let runner = network
        .priced_runner(&dir.path().join("runner"), runner_keys.clone(), &terms)
        .await;
    let dvm = runner.public_key();
    let customer = Keys::generate();
    let client = quorum_dvm::client::JobClient::connect(
        std::slice::from_ref(&network.relay),
        customer.clone(),
    )
    .await
    .unwrap();
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
        payments: Some(Arc::new(Collector {
            wallet: runner_wallet.clone(),
            price_msats: 3_000,
        })),
        mints: vec![mint.url.clone()],
        ..Terms::default()
    };
    let runner = network
        .priced_runner(&dir.path().join("runner"), Keys::generate(), &terms)
        .await;
    let customer = Keys::generate();
    let client = quorum_dvm::client::JobClient::connect(
        std::slice::from_ref(&network.relay),
        customer.clone(),
    )
    .await
    .unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !client
        .discover(StepJob::kind(), Duration::from_secs(1))
        .await
        .unwrap()
        .iter()
        .any(|(k, _)| *k == runner.public_key())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the runner did not announce"
        );
    }

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
            refund_to: customer.public_key(),
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
