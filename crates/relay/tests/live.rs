//! Live delivery under pressure: a subscriber that stops reading is told to re-subscribe
//! (never silently loses events), and it does not slow down anyone else.

mod common;

use std::time::Duration;

use common::{Raw, STEP, TestRelay};
use nostr::prelude::*;
use quorum_relay::{Limits, RelayConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_closed_and_others_are_not_held_up() {
    const EVENTS: usize = 150;
    let relay = TestRelay::start(RelayConfig {
        limits: Limits {
            live_buffer: 16,
            max_event_bytes: 300_000,
            events_per_minute: 0,
            ..Limits::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();

    let mut slow = Raw::connect_small_buffer(&relay.url).await;
    slow.req("slow", vec![json!({"kinds": [1]})])
        .await
        .expect("slow REQ");
    let mut fast = relay.raw().await;
    fast.req("fast", vec![json!({"kinds": [1]})])
        .await
        .expect("fast REQ");

    // ~15 MB of events: far more than the socket buffers between the relay and `slow`.
    let body = "x".repeat(100_000);
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| common::note(&keys, &format!("{i} {body}")))
        .collect();
    let mut publisher = relay.raw().await;
    let fast_reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < EVENTS {
            let v = fast.recv().await;
            if v[0] == "EVENT" {
                seen += 1;
            }
        }
        fast
    });
    // One at a time (each waits for its OK), so live delivery sees a steady stream rather
    // than bursts bigger than the tiny live buffer.
    for event in &events {
        let (ok, msg) = publisher.publish(event).await;
        assert!(ok, "{msg}");
    }
    // The fast subscriber got everything while `slow` was not reading.
    tokio::time::timeout(Duration::from_secs(30), fast_reader)
        .await
        .expect("fast subscriber received every event in time")
        .expect("reader task");

    // Now `slow` reads: some events, then CLOSED telling it to re-subscribe.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut delivered = 0;
        loop {
            let v = slow.recv().await;
            match v[0].as_str() {
                Some("EVENT") => delivered += 1,
                Some("CLOSED") => return (delivered, v),
                _ => {}
            }
        }
    })
    .await
    .expect("CLOSED for the slow subscriber");
    assert!(
        closed.0 < EVENTS,
        "slow subscriber got all events: no lag happened"
    );
    assert_eq!(
        closed.1,
        json!(["CLOSED", "slow", "error: subscriber too slow, re-subscribe"])
    );

    // The connection survives and can re-subscribe, catching up from the store.
    let caught_up = slow
        .req("again", vec![json!({"kinds": [1], "limit": EVENTS})])
        .await
        .expect("re-subscribe");
    assert_eq!(caught_up.len(), EVENTS);
    let _ = STEP;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_the_connection_limit() {
    let relay = TestRelay::start(RelayConfig {
        limits: Limits {
            max_connections: 3,
            ..Limits::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let mut open: Vec<Raw> = Vec::new();
    for _ in 0..3 {
        open.push(relay.raw().await);
    }
    let refused = tokio_tungstenite::connect_async(relay.url.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("fourth connection should get 503, got {other:?}"),
    }
    // Closing one frees a slot.
    open.pop().expect("one").close().await;
    tokio::time::timeout(STEP, async {
        while relay.relay.connections() > 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("slot freed");
    let mut again = relay.raw().await;
    again
        .req("ok", vec![json!({"kinds": [1]})])
        .await
        .expect("REQ on the new connection");
}
