//! Heavy reads (security review M4): `COUNT` never builds events, `REQ` streams stored events
//! and stops at `max_req_bytes` saying where to continue, and concurrent heavy queries over a
//! ~100 MB store keep the relay's memory bounded.
//!
//! The memory test runs the relay in a child process (this test binary, started again with
//! [`CHILD_ENV`] set, running [`relay_child`]) so that `/proc/PID/status` describes the relay
//! alone.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{STEP, TestRelay};
use futures_util::{SinkExt, StreamExt};
use nostr::prelude::*;
use nostr_database::NostrDatabase;
use quorum_relay::{Limits, Relay, RelayConfig};
use serde_json::{Value, json};
use std::io::Read;
use tokio_tungstenite::tungstenite::Message;

/// Set (to the data directory) in the child process that serves the relay.
const CHILD_ENV: &str = "QUORUM_RELAY_HEAVY_READS_CHILD";

/// Big events in the store: 400 × ~250 KB = ~100 MB.
const BIG_EVENTS: usize = 400;
const BIG_CONTENT: usize = 250_000;
/// Small events (reactions), so that filters also match many events.
const SMALL_EVENTS: usize = 4_000;

/// Clients sending two-filter COUNTs that match ~100 MB, each several times.
const COUNT_CLIENTS: usize = 16;
const COUNTS_EACH: usize = 2;
/// Clients sending a two-filter REQ that streams ~50 MB.
const REQ_CLIENTS: usize = 4;

/// The relay's memory under that load may not exceed these (MiB). Anonymous memory is the
/// relay's own (heap, stacks); VmHWM also counts the pages of the LMDB file the relay mapped
/// and read, which is the store's size at most. Before streaming and id-only counting, one
/// two-filter COUNT held every matching event (~100 MB here) and a REQ all of its results.
const MAX_PEAK_ANON_MIB: u64 = 64;
const MAX_HWM_OVER_STORE_MIB: u64 = 96;

fn mib(kib: u64) -> u64 {
    kib / 1024
}

/// `name: N kB` from /proc/PID/status, in KiB.
fn status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .expect("read_dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

/// The child: serves a relay on the data directory in [`CHILD_ENV`] until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the relay process of heavy_reads_keep_the_relay_memory_bounded, started by it"]
async fn relay_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        eprintln!("{CHILD_ENV} is not set: nothing to serve");
        return;
    };
    let config = RelayConfig {
        limits: Limits {
            // Each REQ streams the whole ~100 MB it matches.
            max_req_bytes: 512 * 1024 * 1024,
            ..Limits::default()
        },
        ..RelayConfig::default()
    };
    let relay = Relay::open(config, Path::new(&dir)).await.expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // The parent waits for this file (libtest owns stdout).
    let addr = listener.local_addr().expect("address").to_string();
    let tmp = Path::new(&dir).join("addr.tmp");
    std::fs::write(&tmp, addr).expect("write address");
    std::fs::rename(&tmp, Path::new(&dir).join("addr")).expect("publish address");
    relay
        .serve(listener, async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut buf = [0u8; 16];
                while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
            })
            .await;
        })
        .await
        .expect("serve");
}

/// The relay process; killed if the test ends early.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Seeded {
    /// Four authors; each wrote every fourth event.
    authors: Vec<PublicKey>,
    /// Events that `COUNT_FILTERS` match (`{"kinds":[1]}` or authors 0 and 1).
    counted: usize,
    /// Events that `REQ_FILTERS` match (kind 1 by author 0, or anything by author 1), and the
    /// size of their contents.
    requested: usize,
    requested_bytes: usize,
}

impl Seeded {
    fn count_filters(&self) -> [Value; 2] {
        [
            json!({"kinds": [1]}),
            json!({"authors": [self.authors[0].to_hex(), self.authors[1].to_hex()]}),
        ]
    }

    fn req_filters(&self) -> [Value; 2] {
        [
            json!({"kinds": [1], "authors": [self.authors[0].to_hex()], "limit": 5000}),
            json!({"authors": [self.authors[1].to_hex()], "limit": 5000}),
        ]
    }
}

/// An event as stored, without computing its id or signing it: the store checks neither, and
/// hashing and signing ~100 MB in a debug build would take most of a minute. The id is unique
/// (`n`), the signature a placeholder; nothing in this test verifies them.
fn stored_event(
    n: u64,
    author: &Keys,
    kind: Kind,
    tags: Vec<Tag>,
    content: String,
    at: u64,
) -> Event {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0x51;
    Event::new(
        EventId::from_byte_array(id),
        author.public_key(),
        Timestamp::from(at),
        kind,
        tags,
        content,
        Signature::from_slice(&[7u8; 64]).expect("64 bytes"),
    )
}

/// Fills `dir/lmdb` (where `Relay::open(dir)` looks) with ~100 MB of events.
async fn seed(dir: &Path) -> Seeded {
    let authors: Vec<Keys> = (0..4).map(|_| Keys::generate()).collect();
    let now = Timestamp::now().as_secs();
    let mut events = Vec::with_capacity(BIG_EVENTS + SMALL_EVENTS);
    for i in 0..BIG_EVENTS {
        let filler = char::from(b'a' + (i % 26) as u8);
        let content = format!("{i} {}", filler.to_string().repeat(BIG_CONTENT));
        let at = now - 10_000 + i as u64;
        events.push(stored_event(
            i as u64,
            &authors[i % 4],
            Kind::TextNote,
            Vec::new(),
            content,
            at,
        ));
    }
    for i in 0..SMALL_EVENTS {
        let tags = vec![Tag::event(events[i % BIG_EVENTS].id)];
        let at = now - 20_000 + i as u64;
        let n = (BIG_EVENTS + i) as u64;
        events.push(stored_event(
            n,
            &authors[i % 4],
            Kind::Reaction,
            tags,
            "+".repeat(1_000),
            at,
        ));
    }
    let authors: Vec<PublicKey> = authors.iter().map(|k| k.public_key()).collect();
    let counted = events
        .iter()
        .filter(|e| e.kind == Kind::TextNote || authors[..2].contains(&e.pubkey))
        .count();
    let requested: Vec<&Event> = events
        .iter()
        .filter(|e| (e.kind == Kind::TextNote && e.pubkey == authors[0]) || e.pubkey == authors[1])
        .collect();
    let requested_bytes = requested.iter().map(|e| e.content.len()).sum();
    let requested = requested.len();

    let db = nostr_lmdb::NostrLMDB::open(dir.join("lmdb")).expect("open store");
    // Saved together, so that nostr-lmdb commits them in a few transactions.
    for chunk in events.chunks(500) {
        let saves = chunk.iter().map(|e| db.save_event(e));
        for saved in futures_util::future::join_all(saves).await {
            assert!(saved.expect("save").is_success());
        }
    }
    drop(db);
    Seeded {
        authors,
        counted,
        requested,
        requested_bytes,
    }
}

async fn connect(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect")
        .0
}

/// Security review M4: 16 clients sending two-filter COUNTs and 4 clients streaming ~100 MB
/// REQs each, all at once, over a ~100 MB store. Every answer is complete and right, and the
/// relay's peak anonymous memory and its VmHWM stay under the bounds above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_reads_keep_the_relay_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeding = std::time::Instant::now();
    let seeded = seed(dir.path()).await;
    eprintln!("seeded in {:.1} s", seeding.elapsed().as_secs_f64());
    let store_mib = dir_bytes(&dir.path().join("lmdb")) / (1024 * 1024);
    assert!(store_mib >= 100, "the store holds {store_mib} MiB");

    let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["relay_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the relay process");
    let mut child = Child(child);
    let pid = child.0.id();
    let addr = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(addr) = std::fs::read_to_string(dir.path().join("addr")) {
                return addr;
            }
            assert!(
                matches!(child.0.try_wait(), Ok(None)),
                "the relay process exited before listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("relay process up in time");
    let url = format!("ws://{addr}");
    let idle_rss = status_kib(pid, "VmRSS");

    // Samples the relay's anonymous memory while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "RssAnon"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };

    let mut load = tokio::task::JoinSet::new();
    for c in 0..COUNT_CLIENTS {
        let url = url.clone();
        let [first, second] = seeded.count_filters();
        let expected = seeded.counted;
        load.spawn(async move {
            let mut ws = connect(&url).await;
            for n in 0..COUNTS_EACH {
                let id = format!("count-{c}-{n}");
                let msg = json!(["COUNT", id, first, second]).to_string();
                ws.send(Message::Text(msg.into())).await.expect("send");
                let answer = loop {
                    match ws.next().await.expect("open").expect("socket") {
                        Message::Text(text) => break text,
                        _ => continue,
                    }
                };
                let v: Value = serde_json::from_str(answer.as_str()).expect("JSON");
                assert_eq!(v[0], "COUNT", "{v}");
                assert_eq!(v[2]["count"], expected, "distinct matches of both filters");
            }
        });
    }
    for c in 0..REQ_CLIENTS {
        let url = url.clone();
        let [first, second] = seeded.req_filters();
        let (expected, expected_bytes) = (seeded.requested, seeded.requested_bytes);
        load.spawn(async move {
            let mut ws = connect(&url).await;
            let sub = format!("req-{c}");
            let msg = json!(["REQ", sub, first, second]).to_string();
            ws.send(Message::Text(msg.into())).await.expect("send");
            let (mut events, mut bytes) = (0, 0);
            let mut ids = HashSet::new();
            loop {
                let text = match ws.next().await.expect("open").expect("socket") {
                    Message::Text(text) => text,
                    _ => continue,
                };
                let text = text.as_str();
                if text.starts_with("[\"EOSE\"") {
                    break;
                }
                assert!(
                    text.starts_with("[\"EVENT\""),
                    "{}",
                    &text[..text.len().min(200)]
                );
                // The id is the first field of the event: no need to parse 250 KB of JSON.
                let at = text.find("\"id\":\"").expect("event id") + 6;
                ids.insert(text[at..at + 64].to_owned());
                events += 1;
                bytes += text.len();
            }
            assert_eq!(events, expected, "every matching event once");
            assert_eq!(ids.len(), expected, "no duplicates");
            assert!(bytes > expected_bytes, "whole events were streamed");
        });
    }
    let started = std::time::Instant::now();
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = load.join_next().await {
            result.expect("client");
        }
    })
    .await;
    done.store(true, Ordering::Relaxed);
    finished.expect("the load finished in time");
    let elapsed = started.elapsed();
    let peak_anon = sampler.await.expect("sampler");
    let hwm = status_kib(pid, "VmHWM");
    let rss_file = status_kib(pid, "RssFile");

    // Closing its stdin stops the relay; Child's drop makes sure of it.
    drop(child.0.stdin.take());

    eprintln!(
        "heavy reads: store {store_mib} MiB ({BIG_EVENTS} events of ~250 KB, {SMALL_EVENTS} of ~1 KB); \
         {COUNT_CLIENTS} clients x {COUNTS_EACH} two-filter COUNTs of {} events and {REQ_CLIENTS} \
         two-filter REQs of {} events ({} MiB each), concurrently, in {:.1} s; relay RSS idle {} MiB, \
         peak RssAnon {} MiB, VmHWM {} MiB, RssFile at the end {} MiB",
        seeded.counted,
        seeded.requested,
        seeded.requested_bytes / (1024 * 1024),
        elapsed.as_secs_f64(),
        mib(idle_rss),
        mib(peak_anon),
        mib(hwm),
        mib(rss_file),
    );
    assert!(
        mib(peak_anon) <= MAX_PEAK_ANON_MIB,
        "peak anonymous memory {} MiB > {MAX_PEAK_ANON_MIB} MiB",
        mib(peak_anon)
    );
    assert!(
        mib(hwm) <= store_mib + MAX_HWM_OVER_STORE_MIB,
        "VmHWM {} MiB > store {store_mib} MiB + {MAX_HWM_OVER_STORE_MIB} MiB",
        mib(hwm)
    );
}

/// A REQ whose stored events exceed `max_req_bytes` gets the newest that fit, then
/// `CLOSED "error: ..."` naming the `until` to continue from; continuing gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_stops_at_its_byte_cap_and_says_where_to_continue() {
    const CAP: usize = 1_000_000;
    let relay = TestRelay::start(RelayConfig {
        limits: Limits {
            max_req_bytes: CAP,
            ..Limits::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();
    let now = Timestamp::now().as_secs();
    let mut events: Vec<Event> = (0..10u64)
        .map(|i| {
            EventBuilder::text_note(format!("{i} {}", "z".repeat(150_000)))
                .custom_created_at(Timestamp::from(now - 100 + i))
                .sign_with_keys(&keys)
                .expect("sign")
        })
        .collect();
    let mut raw = relay.raw().await;
    for e in &events {
        assert!(raw.publish(e).await.0);
    }
    events.reverse(); // newest first, as served
    let message_len = |e: &Event| format!("[\"EVENT\",\"s\",{}]", e.as_json()).len();
    let mut fit = 0;
    let mut total = 0;
    for e in &events {
        if total + message_len(e) > CAP {
            break;
        }
        total += message_len(e);
        fit += 1;
    }
    assert!(fit > 0 && fit < events.len());

    let filter = json!({"authors": [keys.public_key().to_hex()]});
    raw.send(json!(["REQ", "s", filter])).await;
    let mut got = Vec::new();
    let closed = loop {
        let v = raw.recv().await;
        match v[0].as_str() {
            Some("EVENT") => {
                got.push(serde_json::from_value::<Event>(v[2].clone()).expect("event"))
            }
            Some("CLOSED") => break v[2].as_str().expect("message").to_owned(),
            other => panic!("expected EVENT or CLOSED, got {other:?}: {v}"),
        }
    };
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        events[..fit].iter().map(|e| e.id).collect::<Vec<_>>(),
        "the newest events that fit, in order"
    );
    let until = events[fit].created_at.as_secs();
    assert_eq!(
        closed,
        format!(
            "error: the stored events for this REQ exceed {CAP} bytes, the relay's limit per \
             REQ; {fit} sent, newest first: REQ again with until={until} for the older ones"
        )
    );
    // The subscription ended: continuing with `until` gets the rest, then EOSE.
    let rest = raw
        .req(
            "s2",
            vec![json!({"authors": [keys.public_key().to_hex()], "until": until})],
        )
        .await
        .expect("the rest fits");
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        events[fit..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}
