//! Quorum step latency (not a test): `cargo bench -p quorum-consensus --bench quorum`.
//!
//! For n = 3, 5, 7 members (t = majority) on our relay on loopback, all members live and
//! starting together: the time from the first commitment to the tally (agreement), and from the
//! tally to the signed attestation (signing), the slowest member counted. The baseline in the
//! same run is one relay round trip: a signed event published by one client and received by
//! another's live subscription.
//!
//! Then DKG over the same relay for the same n (t = n/2 + 1): n member services
//! ([`keygen::serve_with`], as runner daemons run them) are up and subscribed; the time from a
//! maintainer publishing the DKG proposal to [`keygen::await_group_key`] returning the key all n
//! announced (rounds 8710 → 8711 → 8712, shares saved to disk). Median and p90 of `DKG_RUNS`
//! sessions per n, under the key `dkg`.
//!
//! Crypto alone (DKG, one signing round) is measured by
//! `cargo bench -p quorum-threshold --bench frost`. Writes `target/bench/quorum.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::{self, AgreementConfig};
use quorum_consensus::channel::Channel;
use quorum_consensus::keygen::{self, ServeConfig};
use quorum_consensus::member;
use quorum_consensus::signing::{self, SigningConfig};
use quorum_proto::agreement::{AttestationBasis, BuildResult, QuorumAttestation};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{Keygen, Mandate};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::quorum_msg::SessionId;
use quorum_threshold::Roster;
use serde_json::json;

const RUNS: usize = 5;
const DKG_RUNS: usize = 10;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let relay = quorum_relay::Relay::open(quorum_relay::RelayConfig::default(), dir.path())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(relay.serve(listener, std::future::pending()));

        let mut trips = Vec::new();
        let a = Client::new(Keys::generate());
        let b = Client::new(Keys::generate());
        for c in [&a, &b] {
            c.add_relay(url.clone()).await.unwrap();
            c.connect().await;
            c.wait_for_connection(Duration::from_secs(5)).await;
        }
        let author = Keys::generate();
        b.subscribe(Filter::new().author(author.public_key()), None)
            .await
            .unwrap();
        let mut notes = b.notifications();
        for i in 0..20 {
            let event = EventBuilder::text_note(format!("ping {i}"))
                .sign_with_keys(&author)
                .unwrap();
            let started = Instant::now();
            a.send_event(&event).await.unwrap();
            loop {
                if let Ok(RelayPoolNotification::Event { event: got, .. }) = notes.recv().await
                    && got.id == event.id
                {
                    break;
                }
            }
            trips.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let round_trip = median(trips);
        println!("baseline relay round trip: {round_trip:.2} ms");

        let mut rows = Vec::new();
        for (n, t) in [(3usize, 2u16), (5, 3), (7, 4)] {
            let mut agreements = Vec::new();
            let mut signings = Vec::new();
            for run in 0..RUNS {
                let (a, s) = one_step(&url, n, t, run as u8).await;
                agreements.push(a);
                signings.push(s);
            }
            let (a, s) = (median(agreements), median(signings));
            println!(
                "n={n} t={t}: agreement {a:.1} ms ({:.1}× round trip), signing {s:.1} ms ({:.1}× round trip)",
                a / round_trip,
                s / round_trip
            );
            rows.push(json!({"n": n, "t": t, "agreement_ms": a, "signing_ms": s,
                "agreement_round_trips": a / round_trip, "signing_round_trips": s / round_trip}));
        }

        let mut dkg = Vec::new();
        for n in [3usize, 5, 7] {
            let t = (n / 2 + 1) as u16;
            let mut samples = dkg_sessions(&url, &a, n, t, DKG_RUNS).await;
            samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let (p50, p90) = (median(samples.clone()), p90(&samples));
            println!(
                "n={n} t={t}: DKG {p50:.1} ms median ({:.1}× round trip), p90 {p90:.1} ms ({:.1}× round trip), {DKG_RUNS} sessions",
                p50 / round_trip,
                p90 / round_trip
            );
            dkg.push(json!({"n": n, "t": t, "runs": DKG_RUNS, "median_ms": p50, "p90_ms": p90,
                "median_round_trips": p50 / round_trip, "p90_round_trips": p90 / round_trip,
                "samples_ms": samples}));
        }
        let out = json!({"relay_round_trip_ms": round_trip, "runs": RUNS, "steps": rows,
            "dkg": dkg});
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("quorum.json"), serde_json::to_string_pretty(&out).unwrap())
            .unwrap();
    });
}

/// One quorum step with n honest members; returns (agreement ms, signing ms) of the slowest.
async fn one_step(url: &RelayUrl, n: usize, t: u16, salt: u8) -> (f64, f64) {
    let keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
    let roster = Roster::new(t, keys.iter().map(|k| k.public_key())).unwrap();
    let (_, shares) = quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng).unwrap();
    let job = EventId::from_byte_array([salt.wrapping_add(n as u8); 32]);
    let result = BuildResult::new().with_file(
        "out/app",
        Sha256Hex::parse(&hex::encode([salt; 32])).unwrap(),
    );
    let config = AgreementConfig {
        commit_wait: Duration::from_secs(30),
        straggler_wait: Duration::from_secs(5),
        reveal_wait: Duration::from_secs(30),
        lifetime: Duration::from_secs(3600),
    };
    let mut channels = Vec::new();
    for k in &keys {
        let since = Timestamp::now() - 60u64;
        channels.push(
            Channel::open(
                std::slice::from_ref(url),
                k.clone(),
                vec![
                    agreement::filter(&job),
                    signing::filter(&k.public_key(), since),
                ],
            )
            .await
            .unwrap(),
        );
    }
    let members = keys.iter().zip(&channels).map(|(k, channel)| {
        let share = shares
            .iter()
            .find(|s| s.member() == k.public_key())
            .unwrap();
        let result = result.clone();
        let config = config.clone();
        async move {
            let started = Instant::now();
            let roster = member::roster_of(share);
            let agreement =
                agreement::commit_and_reveal(channel, &roster, job, &result, None, &config, None)
                    .await
                    .unwrap();
            let agreed_at = started.elapsed();
            let (attestation, created_at) = QuorumAttestation::from_tally(
                &agreement.tally,
                &AttestationBasis {
                    mandate: EventId::all_zeros(),
                    commit: "a".repeat(40),
                    evidence: None,
                    wrapped: None,
                    not_before: Timestamp::from(0),
                },
            )
            .unwrap();
            let event = attestation.unsigned(share.quorum(), created_at).unwrap();
            let signers: Vec<PublicKey> = agreement.tally.agreed.iter().copied().collect();
            let mut id = event.clone();
            let session = SessionId::from_event_id(&id.id());
            signing::sign_together(
                channel,
                share,
                &signers,
                session,
                vec![event],
                &SigningConfig::default(),
            )
            .await
            .unwrap();
            (agreed_at, started.elapsed() - agreed_at)
        }
    });
    let times = futures_util::future::join_all(members).await;
    for channel in channels {
        channel.close().await;
    }
    let agreement = times
        .iter()
        .map(|(a, _)| a.as_secs_f64())
        .fold(0.0, f64::max)
        * 1000.0;
    let signing = times
        .iter()
        .map(|(_, s)| s.as_secs_f64())
        .fold(0.0, f64::max)
        * 1000.0;
    (agreement, signing)
}

/// `runs` DKG sessions among n member services started for them (then stopped): for each, the
/// ms from publishing the proposal (on `publisher`, already connected) to the group key.
async fn dkg_sessions(
    url: &RelayUrl,
    publisher: &Client,
    n: usize,
    t: u16,
    runs: usize,
) -> Vec<f64> {
    let relays = vec![url.clone()];
    let keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut stops = Vec::new();
    let mut services = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let (relays, k) = (relays.clone(), k.clone());
        let share_dir = dir.path().join(format!("member{i}"));
        services.push(tokio::spawn(async move {
            keygen::serve_with(&relays, &k, share_dir, ServeConfig::default(), async {
                let _ = stopped.await;
            })
            .await
        }));
    }
    // Let every service subscribe before the first proposal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let maintainer = Keys::generate();
    let mut samples = Vec::new();
    for run in 0..runs {
        // The note makes every proposal, and so every session, a new event; a repository per
        // run keeps the services' per-repository session limit out of the measurement.
        let proposal = Mandate {
            repo: RepoCoordinate::new(maintainer.public_key(), format!("sample-{run}")),
            pipeline: ".quorum/pipeline.yml".into(),
            jobs: vec!["build".into()],
            quorum: None,
            members: keygen::new_members(&members),
            threshold: t,
            keygen: Keygen::Dkg,
            allow: [8708u16].into_iter().collect(),
            expiration: Timestamp::now() + 3600u64,
            rules: Default::default(),
            content: format!("bench DKG {run} among {n}"),
        }
        .to_event_builder()
        .unwrap()
        .sign_with_keys(&maintainer)
        .unwrap();
        // The watcher subscribes while the DKG runs; its connection is not on the clock.
        let watch = tokio::spawn({
            let (relays, members, id) = (relays.clone(), members.clone(), proposal.id);
            async move { keygen::await_group_key(&relays, id, &members, Duration::from_secs(60)).await }
        });
        let started = Instant::now();
        publisher.send_event(&proposal).await.unwrap();
        watch.await.unwrap().expect("all members announce one key");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    for stop in stops {
        let _ = stop.send(());
    }
    for service in services {
        service.await.unwrap().unwrap();
    }
    samples
}

/// Nearest-rank 90th percentile of sorted samples.
fn p90(sorted: &[f64]) -> f64 {
    let rank = (sorted.len() * 9).div_ceil(10).max(1);
    sorted[rank - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
