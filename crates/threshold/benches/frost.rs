//! FROST cost benchmark (not a test): `cargo bench -p quorum-threshold --bench frost`.
//!
//! For n = 3, 5, 7 members with t = majority (n/2 + 1), measures in one process:
//! - a whole DKG (every member's start, receive and finish; no serialization, no network);
//! - one signing round of a Nostr event by t members: commit, sign, aggregate (aggregate
//!   includes frost's verification of the aggregate and nostr's id + signature check);
//! - baseline: `nostr` signing the same unsigned event with a single key
//!   (`UnsignedEvent::sign_with_keys`, which computes the id and signs, without verifying).
//!
//! Prints a table (median and mean per operation, and the signing round's ratio to the
//! baseline) and writes `target/bench/frost.json`. Set `FROST_BENCH_ROUNDS` to change the
//! number of signing rounds per size (default 200; DKG runs a tenth as many, at least 10).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use nostr::{EventBuilder, Keys, PublicKey, UnsignedEvent};
use quorum_threshold::dkg::{self, Round2Message};
use quorum_threshold::sign::{self, SigningRequest};
use quorum_threshold::{KeyShare, Roster};
use rand::rngs::OsRng;
use serde_json::json;

struct Stats {
    median_ms: f64,
    mean_ms: f64,
    runs: usize,
}

fn measure(runs: usize, mut f: impl FnMut()) -> Stats {
    f(); // warm-up
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median_ms: times[runs / 2],
        mean_ms: times.iter().sum::<f64>() / runs as f64,
        runs,
    }
}

fn run_dkg(roster: &Roster) -> Vec<KeyShare> {
    let mut round1 = BTreeMap::new();
    let mut secrets = Vec::new();
    for me in roster.pubkeys() {
        let (s, b) = dkg::start(roster, me, &mut OsRng).expect("dkg start");
        round1.insert(me, b);
        secrets.push((me, s));
    }
    let mut inbox: BTreeMap<PublicKey, BTreeMap<PublicKey, Round2Message>> = BTreeMap::new();
    let mut r2 = Vec::new();
    for (me, s) in secrets {
        let (s2, out) = s.receive(&round1).expect("dkg receive");
        for (to, msg) in out {
            inbox.entry(to).or_default().insert(me, msg);
        }
        r2.push((me, s2));
    }
    r2.into_iter()
        .map(|(me, s)| {
            s.finish(&round1, inbox.remove(&me).unwrap_or_default())
                .expect("dkg finish")
        })
        .collect()
}

fn signing_round(shares: &[KeyShare], t: usize, event: &UnsignedEvent) {
    let group = shares[0].group();
    let signers = &shares[..t];
    let mut nonces = Vec::with_capacity(t);
    let mut commitments = BTreeMap::new();
    for s in signers {
        let (n, c) = sign::commit(s, &mut OsRng);
        commitments.insert(s.member(), c);
        nonces.push(n);
    }
    let request = SigningRequest::new(event.clone(), commitments);
    let sig_shares: BTreeMap<_, _> = signers
        .iter()
        .zip(nonces)
        .map(|(s, n)| (s.member(), sign::sign(s, n, &request).expect("sign")))
        .collect();
    let signed = sign::aggregate(group, &request, &sig_shares).expect("aggregate");
    std::hint::black_box(signed);
}

fn main() {
    let rounds: usize = std::env::var("FROST_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dkg_runs = (rounds / 10).max(10);

    let keys = Keys::generate();
    let baseline_event = EventBuilder::text_note("benchmark event").build(keys.public_key());
    let baseline = measure(rounds * 5, || {
        let e = baseline_event
            .clone()
            .sign_with_keys(&keys)
            .expect("nostr sign");
        std::hint::black_box(e);
    });

    println!(
        "{:<6} {:>3} {:>16} {:>16} {:>18} {:>18} {:>10}",
        "n",
        "t",
        "dkg median ms",
        "dkg mean ms",
        "sign round med ms",
        "sign round mean ms",
        "÷nostr"
    );
    let mut rows = Vec::new();
    for n in [3usize, 5, 7] {
        let t = n / 2 + 1;
        let pks: Vec<PublicKey> = (0..n).map(|_| Keys::generate().public_key()).collect();
        let roster = Roster::new(t as u16, pks).expect("roster");
        let dkg_stats = measure(dkg_runs, || {
            std::hint::black_box(run_dkg(&roster));
        });
        let shares = run_dkg(&roster);
        let event = EventBuilder::text_note("benchmark event").build(shares[0].quorum());
        let sign_stats = measure(rounds, || signing_round(&shares, t, &event));
        let ratio = sign_stats.median_ms / baseline.median_ms;
        println!(
            "{n:<6} {t:>3} {:>16.3} {:>16.3} {:>18.3} {:>18.3} {:>10.1}",
            dkg_stats.median_ms, dkg_stats.mean_ms, sign_stats.median_ms, sign_stats.mean_ms, ratio
        );
        rows.push(json!({
            "n": n,
            "t": t,
            "dkg": {"runs": dkg_stats.runs, "median_ms": dkg_stats.median_ms, "mean_ms": dkg_stats.mean_ms},
            "signing_round": {
                "runs": sign_stats.runs,
                "median_ms": sign_stats.median_ms,
                "mean_ms": sign_stats.mean_ms,
                "ratio_to_nostr_sign": ratio,
            },
        }));
    }
    println!(
        "baseline: nostr single-key sign_with_keys median {:.4} ms, mean {:.4} ms ({} runs)",
        baseline.median_ms, baseline.mean_ms, baseline.runs
    );

    let doc = json!({
        "benchmark": "quorum-threshold frost",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "baseline_nostr_sign": {
            "runs": baseline.runs,
            "median_ms": baseline.median_ms,
            "mean_ms": baseline.mean_ms,
        },
        "rows": rows,
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("frost.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
    )
    .expect("write frost.json");
    println!("\nwritten: {}", path.display());
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}
