//! Relay throughput benchmark (not a test): `cargo bench -p quorum-relay --bench throughput`.
//!
//! Measures, on LMDB in a temp dir with rate limits off:
//! - events/s accepted (EVENT sent → `OK true` received) and delivered to one live subscriber,
//!   with 1 and with 10 publishing connections (raw WebSockets sending pre-signed events, each
//!   keeping a window of unacknowledged events in flight, so the relay is measured, not a
//!   client library);
//! - the same with 1 publisher waiting for each `OK` before the next `EVENT` (latency-bound);
//! - baselines in the same run: signature + id verification alone, and `save_event` straight
//!   into a fresh `NostrLMDB` (one at a time, and with many saves in flight as the relay does).
//!
//! Relay scenarios run three times each on a fresh store (median reported). Prints a table and
//! writes `target/bench/relay.json`. Set `RELAY_BENCH_EVENTS` to change the
//! event count (default 20 000).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use nostr::prelude::*;
use nostr_database::NostrDatabase;
use quorum_relay::{Limits, Relay, RelayConfig};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Unacknowledged events one publisher keeps in flight.
const WINDOW: usize = 200;
/// Events in the one-at-a-time scenario (it is bound by one disk sync per event).
const SEQUENTIAL_EVENTS: usize = 1_000;
const KIND: u16 = 1;
/// Each relay scenario runs this many times on a fresh store; the median (by accepted rate) is
/// reported, because shared build machines are noisy.
const RUNS: usize = 3;

fn main() {
    let n: usize = std::env::var("RELAY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(n));
}

struct Row {
    name: String,
    events: usize,
    seconds: f64,
    delivered_seconds: Option<f64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    fn delivered_rate(&self) -> Option<f64> {
        self.delivered_seconds.map(|s| self.events as f64 / s)
    }
}

async fn run(n: usize) {
    eprintln!("signing {n} events...");
    let events = Arc::new(make_events(n));

    let mut rows = Vec::new();

    // Baseline: verification alone (what the relay must do per event anyway).
    let t = Instant::now();
    for e in events.iter() {
        assert!(e.verify_id() && e.verify_signature());
    }
    rows.push(Row {
        name: "verify id + signature (1 thread)".into(),
        events: n,
        seconds: t.elapsed().as_secs_f64(),
        delivered_seconds: None,
    });

    // Baseline: LMDB save_event, one at a time.
    let seq_events = &events[..SEQUENTIAL_EVENTS.min(n)];
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = nostr_lmdb::NostrLMDB::open(dir.path()).expect("lmdb");
        let t = Instant::now();
        for e in seq_events {
            assert!(db.save_event(e).await.expect("save").is_success());
        }
        rows.push(Row {
            name: "LMDB save_event, one at a time".into(),
            events: seq_events.len(),
            seconds: t.elapsed().as_secs_f64(),
            delivered_seconds: None,
        });
    }

    // Baseline: LMDB save_event with WINDOW saves in flight (nostr-lmdb batches them).
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let db: Arc<dyn NostrDatabase> =
            Arc::new(nostr_lmdb::NostrLMDB::open(dir.path()).expect("lmdb"));
        let t = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        for e in events.iter() {
            if in_flight.len() >= WINDOW {
                let r: Result<_, _> = in_flight.next().await.expect("pending save");
                assert!(nostr_database::SaveEventStatus::is_success(
                    &r.expect("save")
                ));
            }
            let db = Arc::clone(&db);
            let e = e.clone();
            in_flight.push(async move { db.save_event(&e).await });
        }
        while let Some(r) = in_flight.next().await {
            assert!(r.expect("save").is_success());
        }
        rows.push(Row {
            name: format!("LMDB save_event, {WINDOW} in flight"),
            events: n,
            seconds: t.elapsed().as_secs_f64(),
            delivered_seconds: None,
        });
    }

    let seq = seq_events.to_vec();
    rows.push(
        median_of(RUNS, || {
            relay_scenario("relay, 1 publisher, one at a time", seq.clone(), 1, 1)
        })
        .await,
    );
    rows.push(
        median_of(RUNS, || {
            relay_scenario("relay, 1 publisher", events.to_vec(), 1, WINDOW)
        })
        .await,
    );
    rows.push(
        median_of(RUNS, || {
            relay_scenario("relay, 10 publishers", events.to_vec(), 10, WINDOW)
        })
        .await,
    );

    report(n, &rows);
}

async fn median_of<F, Fut>(runs: usize, mut scenario: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Row>,
{
    let mut rows = Vec::with_capacity(runs);
    for _ in 0..runs {
        rows.push(scenario().await);
    }
    rows.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    rows.swap_remove(runs / 2)
}

fn make_events(n: usize) -> Vec<Event> {
    let keys: Vec<Keys> = (0..16).map(|_| Keys::generate()).collect();
    let start = Timestamp::now().as_secs() - n as u64;
    (0..n)
        .map(|i| {
            EventBuilder::new(
                Kind::Custom(KIND),
                format!(
                    "bench event {i}: a short CI status line, the typical size of a job update"
                ),
            )
            .tag(Tag::parse(["t", "bench"]).expect("tag"))
            .custom_created_at(Timestamp::from(start + i as u64))
            .sign_with_keys(&keys[i % keys.len()])
            .expect("sign")
        })
        .collect()
}

/// A fresh relay; `publishers` connections share `events`; one subscriber counts deliveries.
async fn relay_scenario(name: &str, events: Vec<Event>, publishers: usize, window: usize) -> Row {
    eprintln!("running: {name}...");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RelayConfig {
        limits: Limits {
            events_per_minute: 0,
            ..Limits::default()
        },
        ..RelayConfig::default()
    };
    let relay = Relay::open(config, dir.path()).await.expect("relay");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(relay.serve(listener, async move {
        let _ = stopped.await;
    }));

    let total = events.len();
    // Subscriber: live only (limit 0), counts distinct events until it has them all.
    let (mut sub_ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("subscriber");
    sub_ws
        .send(Message::Text(
            json!(["REQ", "bench", {"kinds": [KIND], "limit": 0}])
                .to_string()
                .into(),
        ))
        .await
        .expect("REQ");
    loop {
        let msg = sub_ws.next().await.expect("EOSE").expect("socket");
        if let Message::Text(t) = msg
            && t.as_str().starts_with("[\"EOSE\"")
        {
            break;
        }
    }

    let mut chunks: Vec<Vec<Event>> = vec![Vec::new(); publishers];
    for (i, e) in events.into_iter().enumerate() {
        chunks[i % publishers].push(e);
    }
    let mut conns = Vec::new();
    for _ in 0..publishers {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("publisher");
        conns.push(ws);
    }

    let start = Instant::now();
    let subscriber = tokio::spawn(async move {
        let mut seen = HashSet::with_capacity(total);
        while seen.len() < total {
            match tokio::time::timeout(Duration::from_secs(60), sub_ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                    if v[0] == "EVENT" {
                        seen.insert(v[2]["id"].as_str().expect("id").to_owned());
                    } else if v[0] == "CLOSED" {
                        panic!("subscriber closed: {v}");
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("subscriber stopped early: {other:?}"),
            }
        }
        start.elapsed()
    });
    let mut tasks = Vec::new();
    for (ws, chunk) in conns.into_iter().zip(chunks) {
        tasks.push(tokio::spawn(publish_all(ws, chunk, window)));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let accepted = start.elapsed();
    let delivered = subscriber.await.expect("subscriber task");
    let _ = stop.send(());
    server.await.expect("server task").expect("serve");

    Row {
        name: name.into(),
        events: total,
        seconds: accepted.as_secs_f64(),
        delivered_seconds: Some(delivered.as_secs_f64()),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends `events` keeping at most `window` without an `OK`; returns when all are OK'd.
async fn publish_all(ws: Ws, events: Vec<Event>, window: usize) {
    let (mut tx, mut rx) = ws.split();
    let permits = Arc::new(Semaphore::new(window));
    let expected = events.len();
    let reader_permits = Arc::clone(&permits);
    let reader = tokio::spawn(async move {
        let mut oks = 0;
        while oks < expected {
            let msg = tokio::time::timeout(Duration::from_secs(60), rx.next())
                .await
                .expect("OK in time")
                .expect("open")
                .expect("socket");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v[0] == "OK" {
                    assert_eq!(v[2], true, "refused: {v}");
                    oks += 1;
                    reader_permits.add_permits(1);
                }
            }
        }
    });
    for e in events {
        permits.acquire().await.expect("semaphore").forget();
        let text = ClientMessage::event(e).as_json();
        tx.send(Message::Text(text.into())).await.expect("send");
    }
    reader.await.expect("reader");
}

fn report(n: usize, rows: &[Row]) {
    let verify = rows[0].rate();
    let lmdb_batched = rows[2].rate();
    println!();
    println!(
        "{:<40} {:>8} {:>11} {:>12} {:>9} {:>9}",
        "scenario", "events", "accepted/s", "delivered/s", "÷verify", "÷lmdb"
    );
    let mut json_rows = Vec::new();
    for row in rows {
        let rate = row.rate();
        let delivered = row
            .delivered_rate()
            .map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<40} {:>8} {:>11.0} {:>12} {:>9.3} {:>9.3}",
            row.name,
            row.events,
            rate,
            delivered,
            rate / verify,
            rate / lmdb_batched
        );
        json_rows.push(json!({
            "scenario": row.name,
            "events": row.events,
            "seconds": row.seconds,
            "accepted_per_sec": rate,
            "delivered_per_sec": row.delivered_rate(),
            "ratio_to_verify": rate / verify,
            "ratio_to_lmdb_batched_save": rate / lmdb_batched,
        }));
    }
    let doc = json!({
        "benchmark": "quorum-relay throughput",
        "events": n,
        "window": WINDOW,
        "runs_per_relay_scenario": RUNS,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rows": json_rows,
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let path = dir.join("relay.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).expect("JSON") + "\n",
    )
    .expect("write relay.json");
    println!("\nwritten: {}", path.display());
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}
