//! Connection limits against a real relay on 127.0.0.1 (security review M3): one address
//! cannot take every connection, and idle, silent or half-open connections are closed.
//! Other clients come from 127.0.0.2, another address on the same loopback interface.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{Raw, STEP, TestRelay, note, raise_fd_limit, tcp_from};
use futures_util::SinkExt;
use futures_util::stream::{self, StreamExt};
use nostr::prelude::*;
use quorum_relay::{Limits, RelayConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const ATTACKER: &str = "127.0.0.1";
const OTHER: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn config(limits: Limits) -> RelayConfig {
    RelayConfig {
        limits,
        ..RelayConfig::default()
    }
}

/// Waits until the relay has exactly `n` WebSocket sessions.
async fn sessions(relay: &TestRelay, n: usize) {
    tokio::time::timeout(STEP, async {
        while relay.relay.connections() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "expected {n} sessions, the relay has {}",
            relay.relay.connections()
        )
    });
}

/// A client on another address publishes and reads back, promptly.
async fn another_client_is_served(relay: &TestRelay, label: &str) {
    let mut raw = Raw::connect_from(&relay.url, ip(OTHER)).await;
    let keys = Keys::generate();
    let event = note(&keys, label);
    let (ok, msg) = raw.publish(&event).await;
    assert!(ok, "{label}: {msg}");
    let got = raw
        .req("mine", vec![json!({"ids": [event.id.to_hex()]})])
        .await
        .expect("REQ");
    assert_eq!(got.len(), 1, "{label}");
}

/// Security review M3: 1,000 idle WebSockets from one address take only that address's share
/// (the default cap, 256); the rest are refused with a 503 that says why, the relay is not
/// full, and a client elsewhere connects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_do_not_lock_out_a_new_client() {
    raise_fd_limit(4096);
    let relay = TestRelay::start(RelayConfig::default()).await;
    let cap = Limits::default().max_connections_per_ip;
    assert!(cap < 1000 && cap < Limits::default().max_connections);

    let attempts = stream::iter(0..1000)
        .map(|_| Raw::handshake_from(&relay.url, ip(ATTACKER)))
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(Duration::from_secs(60), attempts)
        .await
        .expect("1000 handshakes in time");
    let mut idle = Vec::new();
    let (mut refused, mut dropped) = (0, 0);
    let mut refusal = String::new();
    for result in results {
        match result {
            Ok((ws, _)) => idle.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                refused += 1;
                refusal = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
            }
            // Far over the cap a connection is closed without an answer.
            Err(_) => dropped += 1,
        }
    }
    assert_eq!(idle.len(), cap, "the address gets its cap, no more");
    assert_eq!(idle.len() + refused + dropped, 1000);
    assert!(refused > 0, "refusals are answered while they are few");
    assert!(
        refusal.contains(&format!(
            "too many connections from {ATTACKER} (limit {cap}"
        )),
        "{refusal}"
    );
    sessions(&relay, cap).await;

    // Someone else is served at once; the same address is still refused.
    let started = Instant::now();
    another_client_is_served(&relay, "while 1000 sockets were tried from one address").await;
    assert!(started.elapsed() < STEP);
    match Raw::handshake_from(&relay.url, ip(ATTACKER)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("the capped address must be refused, got {other:?}"),
    }

    // The idle sockets are real sessions: closing them gives the address its share back.
    for mut ws in idle {
        let _ = ws.close(None).await;
    }
    sessions(&relay, 0).await;
    let mut back = Raw::connect_from(&relay.url, ip(ATTACKER)).await;
    back.req("after", vec![json!({"limit": 1})])
        .await
        .expect("served again");
}

/// A connection that never completes its handshake is dropped after `handshake_timeout`,
/// whether it says nothing or sends half a request, and its place is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_never_completes_is_dropped() {
    raise_fd_limit(4096);
    // The deadline is long enough that connecting every stalled socket takes a small part of
    // it even on a loaded two-core CI machine: the cap check below needs them all still open
    // (with 0.8 s and 150 sockets, the first were already dropped there, freeing places).
    let timeout = Duration::from_secs(3);
    const STALLED: usize = 40;
    let relay = TestRelay::start(config(Limits {
        handshake_timeout: timeout,
        max_connections_per_ip: STALLED + 1,
        ..Limits::default()
    }))
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..STALLED {
        silent.push(tcp_from(&relay.url, ip(ATTACKER)).await.expect("connect"));
    }
    let mut partial = tcp_from(&relay.url, ip(ATTACKER)).await.expect("connect");
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .await
        .expect("half a request");
    assert!(
        started.elapsed() < timeout / 2,
        "connecting {STALLED} sockets took {:?}: the machine is too slow for this deadline",
        started.elapsed()
    );
    // Meanwhile the address is full (every stalled socket holds its place until the
    // deadline), and everyone else is served.
    match Raw::handshake_from(&relay.url, ip(ATTACKER)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        Err(_) => {} // far over the cap: closed without an answer
        Ok(_) => panic!("the address is at its cap"),
    }
    another_client_is_served(&relay, "during stalled handshakes").await;

    // Every stalled socket is closed by the relay: reading gives end-of-file (or a reset).
    silent.push(partial);
    for mut socket in silent {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(STEP, socket.read(&mut buf))
            .await
            .expect("the relay closes a stalled handshake");
        if let Ok(n) = read {
            assert_eq!(n, 0, "nothing but the close: {:?}", &buf[..n]);
        }
    }
    let waited = started.elapsed();
    assert!(waited >= timeout, "not before the deadline ({waited:?})");
    // And the address may connect again.
    let mut raw = Raw::connect_from(&relay.url, ip(ATTACKER)).await;
    raw.req("again", vec![json!({"limit": 1})])
        .await
        .expect("served again");
}

/// Waits for the close frame of an otherwise silent socket and returns its code and when it
/// came.
async fn close_code(ws: &mut Raw) -> (CloseCode, Instant) {
    loop {
        match tokio::time::timeout(STEP, ws.ws_mut().next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code, Instant::now()),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(Message::Text(t))) => panic!("unexpected message {t}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error before the close frame: {e}"),
        }
    }
}

/// A connection with no subscription that says nothing is closed after `idle_timeout`
/// (code 1000); one with a subscription, or one that keeps talking, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_stay() {
    let idle_timeout = Duration::from_millis(1_000);
    let relay = TestRelay::start(config(Limits {
        idle_timeout,
        ..Limits::default()
    }))
    .await;
    let opened = Instant::now();
    let mut idle = relay.raw().await;
    let mut subscribed = relay.raw().await;
    subscribed
        .req("live", vec![json!({"kinds": [1]})])
        .await
        .expect("REQ");
    let mut talking = relay.raw().await;

    // `talking` sends a COUNT every 250 ms (no subscription) while `idle` is closed.
    let chatter = async {
        for i in 0..10 {
            talking
                .send(json!(["COUNT", format!("c{i}"), {"kinds": [1]}]))
                .await;
            assert_eq!(talking.recv_kind("COUNT").await[1], format!("c{i}"));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let ((code, at), ()) = tokio::join!(close_code(&mut idle), chatter);
    assert_eq!(code, CloseCode::Normal);
    let after = at - opened;
    assert!(
        after >= idle_timeout && after < idle_timeout * 3,
        "closed after {after:?}"
    );
    // 2.5 s in: the subscribed and the talking connections are still served.
    subscribed.send(json!(["COUNT", "still", {}])).await;
    assert_eq!(subscribed.recv_kind("COUNT").await[1], "still");
    sessions(&relay, 2).await;

    // Once its subscription is closed, a connection is idle like any other.
    subscribed.send(json!(["CLOSE", "live"])).await;
    let closed_sub = Instant::now();
    let (code, at) = close_code(&mut subscribed).await;
    assert_eq!(code, CloseCode::Normal);
    assert!(at - closed_sub >= idle_timeout - Duration::from_millis(50));
}

/// A client that stops answering (no frame at all, not even the pong to the relay's ping) is
/// closed after `read_timeout` (code 1008) even with a subscription, and so is one that sends
/// a frame a byte at a time; a client that answers pings stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dripping_clients_hit_the_read_timeout() {
    // Long enough that the answering client is surely read within half of it, on a busy CI
    // machine running this file's other tests at the same time.
    let read_timeout = Duration::from_millis(2_000);
    let relay = TestRelay::start(config(Limits {
        read_timeout,
        idle_timeout: Duration::ZERO,
        ..Limits::default()
    }))
    .await;

    // Answers pings: its socket is read all along.
    let mut alive = relay.raw().await;
    alive
        .req("a", vec![json!({"kinds": [1]})])
        .await
        .expect("REQ");
    let mut alive = alive.into_inner();
    let pings = async {
        let mut pings = 0;
        let until = Instant::now() + read_timeout * 2;
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, alive.next()).await {
            if let Message::Ping(_) = msg.expect("socket") {
                pings += 1;
            }
        }
        pings
    };

    // Subscribed, then never reads again: no pong.
    let mut deaf = relay.raw().await;
    deaf.req("d", vec![json!({"kinds": [1]})])
        .await
        .expect("REQ");

    // Sends a 1000-byte text frame one byte every 100 ms.
    let (mut drip, _) = Raw::handshake_from(&relay.url, ip(ATTACKER))
        .await
        .expect("handshake");
    let started = Instant::now();
    let dripping = async {
        let tcp = match drip.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
            _ => unreachable!("plain TCP"),
        };
        // FIN + text, masked, 16-bit length 1000, zero mask (so the payload is as sent).
        let header = [0x81u8, 0xFE, 0x03, 0xE8, 0, 0, 0, 0];
        tcp.write_all(&header).await.expect("frame header");
        for _ in 0..60 {
            if tcp.write_all(b"x").await.is_err() {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the relay still took bytes of one frame after 6 s");
    };
    let early = async {
        // Before the timeout, all three are still there.
        tokio::time::sleep(read_timeout * 8 / 10).await;
        relay.relay.connections()
    };
    let (pings, cut, early) = tokio::join!(pings, dripping, early);
    assert_eq!(early, 3, "nobody is closed before read_timeout");
    assert!(pings >= 2, "the relay pings a quiet client ({pings} pings)");
    // The dripping client was cut off mid-frame, after read_timeout (a write fails only once
    // the relay's close has come back as a reset, hence the margin), and the deaf one is gone.
    let cut = cut - started;
    assert!(
        cut >= read_timeout && cut < read_timeout * 2,
        "cut after {cut:?}"
    );
    sessions(&relay, 1).await;
    let (code, _) = close_code(&mut deaf).await;
    assert_eq!(code, CloseCode::Policy);

    // The one that answered pings is still served.
    alive
        .send(Message::Text(
            json!(["COUNT", "still", {}]).to_string().into(),
        ))
        .await
        .expect("send");
    let mut alive = Raw::from_inner(alive);
    assert_eq!(alive.recv_kind("COUNT").await[1], "still");
}
