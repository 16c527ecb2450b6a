//! Payment overhead per job on loopback, next to the relay round trip measured in the same
//! run: paying (a P2PK-locked token from the payer's wallet: a swap at the mint) plus redeeming
//! it (the DVM's checks and its swap at the mint), against publishing an event and seeing it
//! come back from our relay; and, for a per-second price, returning the change (the DVM makes a
//! token locked to the payer, the payer opens and redeems it: two more swaps). The mint is cdk's, in process, with its fake Lightning backend.
//!
//! `cargo bench -p quorum-pay --bench payment` writes `target/bench/payment.json`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_dvm::handler::{Earned, Payer, PaymentGate, Receipt};
use quorum_pay::fake_mint::FakeMint;
use quorum_pay::{Collector, PayWallet, WalletPayer};
use quorum_testnet::bench::{median, relay_round_trips};

fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let network = quorum_testnet::Network::start(dir.path()).await;
    let rtt = median(relay_round_trips(&network.relay, 30).await);
    let mint = FakeMint::start().await.unwrap();
    let payer = PayWallet::open(
        &dir.path().join("payer"),
        &mint.url,
        quorum_pay::random_seed(),
    )
    .await
    .unwrap();
    payer.mint(10_000, Duration::from_secs(20)).await.unwrap();
    let payer_keys = Keys::generate();
    let refund = payer_keys.public_key();
    let dvm = Keys::generate();
    // 1 sat per job and 1 sat per second for at most 20 s: 21 sats up front.
    let collector = Collector {
        wallet: PayWallet::open(
            &dir.path().join("dvm"),
            &mint.url,
            quorum_pay::random_seed(),
        )
        .await
        .unwrap(),
        price_msats: 1_000,
        msats_per_second: 1_000,
        max_secs: 20,
    };
    let wallet_payer = WalletPayer {
        wallet: payer.clone(),
        keys: payer_keys.clone(),
    };
    let locktime = Timestamp::now().as_secs() + 3600;
    let (mut pays, mut redeems, mut changes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let start = Instant::now();
        let token = payer
            .pay_locked(21, &dvm.public_key(), &refund, locktime)
            .await
            .unwrap();
        pays.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = Instant::now();
        let (msats, refund_to) = collector.redeem(&token, &dvm).await.unwrap();
        redeems.push(start.elapsed().as_secs_f64() * 1000.0);
        // A 1 s job: 2 sats charged, 19 back.
        let start = Instant::now();
        let change = collector
            .settle(
                &Receipt { msats, refund_to },
                &dvm,
                Earned::Worked(Duration::from_secs(1)),
            )
            .await
            .expect("change");
        let sealed =
            quorum_proto::payment::change_tag(dvm.secret_key(), &change.to, &change.token).unwrap();
        let back = wallet_payer
            .receive_change(&dvm.public_key(), &sealed.as_slice()[1])
            .await
            .unwrap();
        assert_eq!(back, 19);
        changes.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (pay, redeem, change) = (median(pays), median(redeems), median(changes));
    let total = pay + redeem;
    println!(
        "payment per job: pay {pay:.1} ms + redeem {redeem:.1} ms = {total:.1} ms; relay round trip {rtt:.1} ms; ratio {:.1}x; change (make + receive) {change:.1} ms",
        total / rtt
    );
    let figures = serde_json::json!({
        "pay_p50_ms": pay,
        "redeem_p50_ms": redeem,
        "payment_p50_ms": total,
        "relay_round_trip_p50_ms": rtt,
        "payment_over_round_trip": total / rtt,
        "change_p50_ms": change,
        "samples": 30,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    let out = bench_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("payment.json"),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
}
