//! Bad input over a raw WebSocket: every mistake gets its answer, the connection survives,
//! and nothing invalid reaches the store.

mod common;

use std::time::Duration;

use common::{Raw, TestRelay, note};
use nostr::prelude::*;
use quorum_relay::{Limits, RelayConfig};
use serde_json::{Value, json};

fn strict_config() -> RelayConfig {
    RelayConfig {
        limits: Limits {
            max_event_bytes: 4096,
            max_message_bytes: 16 * 1024,
            max_filters: 3,
            max_filter_limit: 3,
            max_subid_length: 64,
            ..Limits::default()
        },
        ..RelayConfig::default()
    }
}

/// After a bad message, the same connection still accepts a valid event.
async fn still_works(raw: &mut Raw, keys: &Keys, accepted: &mut Vec<EventId>, label: &str) {
    let event = note(keys, &format!("valid after {label}"));
    let (ok, msg) = raw.publish(&event).await;
    assert!(ok, "after {label}: valid event refused: {msg}");
    accepted.push(event.id);
}

async fn expect_notice(raw: &mut Raw, contains: &str) -> String {
    let v = raw.recv().await;
    assert_eq!(
        v[0], "NOTICE",
        "expected a NOTICE containing {contains:?}, got {v}"
    );
    let text = v[1].as_str().expect("notice text").to_owned();
    assert!(
        text.contains(contains),
        "NOTICE {text:?} lacks {contains:?}"
    );
    text
}

fn event_json(event: &Event) -> Value {
    serde_json::to_value(event).expect("event JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mistake_is_answered_and_nothing_invalid_is_stored() {
    let relay = TestRelay::start(strict_config()).await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    let mut accepted: Vec<EventId> = Vec::new();
    let mut refused: Vec<String> = Vec::new();

    // Malformed JSON.
    raw.send_text(r#"["EVENT", {"id": "#).await;
    expect_notice(&mut raw, "invalid: malformed JSON").await;
    still_works(&mut raw, &keys, &mut accepted, "malformed JSON").await;

    // Unknown message type.
    raw.send(json!(["FOO"])).await;
    let text = expect_notice(&mut raw, "unsupported: unknown message type").await;
    assert!(text.contains("FOO"), "{text}");
    still_works(&mut raw, &keys, &mut accepted, "unknown type").await;

    // Not an array; an array without a type string.
    raw.send(json!({"EVENT": 1})).await;
    expect_notice(&mut raw, "invalid: a message must be a JSON array").await;
    raw.send(json!([42])).await;
    expect_notice(&mut raw, "invalid: a message must start with its type").await;
    still_works(&mut raw, &keys, &mut accepted, "not an array").await;

    // Binary frame.
    raw.send_binary(b"[\"REQ\",\"x\",{}]".to_vec()).await;
    expect_notice(&mut raw, "invalid: binary frames are not supported").await;
    still_works(&mut raw, &keys, &mut accepted, "binary frame").await;

    // Bad signature: a valid event carrying another event's signature.
    let victim = note(&keys, "bad signature");
    let other = note(&keys, "signature donor");
    let mut forged = event_json(&victim);
    forged["sig"] = json!(other.sig.to_string());
    raw.send(json!(["EVENT", forged])).await;
    let (ok, msg) = raw.ok_for(&victim.id.to_hex()).await;
    assert!(
        !ok && msg.starts_with("invalid:") && msg.contains("signature"),
        "{msg}"
    );
    refused.push(victim.id.to_hex());
    still_works(&mut raw, &keys, &mut accepted, "bad signature").await;

    // Bad id: content changed after signing.
    let signed = note(&keys, "original content");
    let mut tampered = event_json(&signed);
    tampered["content"] = json!("tampered content");
    raw.send(json!(["EVENT", tampered])).await;
    let (ok, msg) = raw.ok_for(&signed.id.to_hex()).await;
    assert!(
        !ok && msg.starts_with("invalid:") && msg.contains("id"),
        "{msg}"
    );
    refused.push(signed.id.to_hex());
    still_works(&mut raw, &keys, &mut accepted, "bad id").await;

    // Malformed event (no signature field): OK false with the id the client sent.
    let mut unsigned = event_json(&note(&keys, "no sig"));
    let unsigned_id = unsigned["id"].as_str().expect("id").to_owned();
    unsigned.as_object_mut().expect("object").remove("sig");
    raw.send(json!(["EVENT", unsigned])).await;
    let (ok, msg) = raw.ok_for(&unsigned_id).await;
    assert!(!ok && msg.starts_with("invalid: malformed event"), "{msg}");
    refused.push(unsigned_id);
    still_works(&mut raw, &keys, &mut accepted, "malformed event").await;

    // EVENT with two events.
    let a = note(&keys, "pair a");
    raw.send(json!(["EVENT", a, a])).await;
    let (ok, msg) = raw.ok_for(&a.id.to_hex()).await;
    assert!(!ok && msg.contains("exactly one event"), "{msg}");
    refused.push(a.id.to_hex());

    // Oversized event (within the message limit).
    let big = note(&keys, &"x".repeat(5000));
    let (ok, msg) = raw.publish(&big).await;
    assert!(!ok, "oversized event accepted");
    assert!(
        msg.starts_with("invalid: event is") && msg.contains("limit is 4096"),
        "{msg}"
    );
    refused.push(big.id.to_hex());
    still_works(&mut raw, &keys, &mut accepted, "oversized event").await;

    // Oversized message: an EVENT gets OK false and a NOTICE naming both sizes.
    let huge = note(&keys, &"y".repeat(20_000));
    let huge_msg = json!(["EVENT", huge]).to_string();
    let size = huge_msg.len();
    raw.send_text(huge_msg).await;
    let (ok, msg) = raw.ok_for(&huge.id.to_hex()).await;
    assert!(!ok, "oversized message accepted");
    assert_eq!(
        msg,
        format!("invalid: message is {size} bytes, limit is 16384")
    );
    expect_notice(
        &mut raw,
        &format!("message is {size} bytes, limit is 16384"),
    )
    .await;
    refused.push(huge.id.to_hex());
    // ... and any other oversized message a NOTICE.
    let padding = "z".repeat(17_000);
    raw.send(json!(["REQ", "big", {"#t": [padding]}])).await;
    expect_notice(&mut raw, "invalid: message is").await;
    still_works(&mut raw, &keys, &mut accepted, "oversized message").await;

    // created_at too far ahead.
    let future = common::signed(
        &keys,
        EventBuilder::text_note("from the future")
            .custom_created_at(Timestamp::from(Timestamp::now().as_secs() + 3600)),
    );
    let (ok, msg) = raw.publish(&future).await;
    assert!(!ok && msg.starts_with("invalid: created_at is"), "{msg}");
    refused.push(future.id.to_hex());

    // AUTH events are not published with EVENT.
    let auth = common::signed(
        &keys,
        EventBuilder::auth("challenge", RelayUrl::parse(&relay.url).expect("url")),
    );
    let (ok, msg) = raw.publish(&auth).await;
    assert!(
        !ok && msg.starts_with("invalid:") && msg.contains("22242"),
        "{msg}"
    );
    refused.push(auth.id.to_hex());
    still_works(&mut raw, &keys, &mut accepted, "future event").await;

    // Too many filters.
    let err = raw
        .req("many", vec![json!({}), json!({}), json!({}), json!({})])
        .await
        .expect_err("4 filters refused");
    assert!(
        err.starts_with("invalid:") && err.contains("4 filters") && err.contains("1 to 3"),
        "{err}"
    );
    // No filter at all.
    let err = raw
        .req("none", vec![])
        .await
        .expect_err("0 filters refused");
    assert!(err.starts_with("invalid:"), "{err}");
    still_works(&mut raw, &keys, &mut accepted, "too many filters").await;

    // Subscription id too long.
    let long_id = "s".repeat(65);
    let err = raw
        .req(&long_id, vec![json!({})])
        .await
        .expect_err("long subid refused");
    assert!(
        err.starts_with("invalid: subscription id is 65 characters"),
        "{err}"
    );
    still_works(&mut raw, &keys, &mut accepted, "long subscription id").await;

    // Bad filter.
    let err = raw
        .req("badfilter", vec![json!({"ids": ["not-hex"]})])
        .await
        .expect_err("bad filter refused");
    assert!(err.starts_with("invalid: filter 0"), "{err}");
    // Subscription id of the wrong type.
    raw.send(json!(["REQ", 7, {}])).await;
    expect_notice(&mut raw, "subscription id must be a string").await;
    // CLOSE without id.
    raw.send(json!(["CLOSE"])).await;
    expect_notice(&mut raw, "CLOSE needs a subscription id").await;
    still_works(&mut raw, &keys, &mut accepted, "bad filter").await;

    // A too-large limit is clamped to max_filter_limit (3), not refused.
    let events = raw
        .req(
            "clamped",
            vec![json!({"authors": [keys.public_key().to_hex()], "limit": 1000})],
        )
        .await
        .expect("clamped REQ accepted");
    assert_eq!(events.len(), 3, "limit clamped to 3");
    // Newest first.
    assert!(
        events
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at)
    );

    // Nothing invalid is stored: the store holds exactly the accepted events.
    let stored = relay.stored(Filter::new().author(keys.public_key())).await;
    let mut stored_ids: Vec<EventId> = stored.iter().map(|e| e.id).collect();
    stored_ids.sort();
    accepted.sort();
    assert_eq!(
        stored_ids, accepted,
        "store holds exactly the accepted events"
    );
    for id in &refused {
        assert!(
            !stored.iter().any(|e| e.id.to_hex() == *id),
            "refused event {id} was stored"
        );
    }
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_rate_limited() {
    let relay = TestRelay::start(RelayConfig {
        limits: Limits {
            events_per_minute: 5,
            ..Limits::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    for i in 0..5 {
        let (ok, msg) = raw.publish(&note(&keys, &format!("burst {i}"))).await;
        assert!(ok, "event {i} within the burst refused: {msg}");
    }
    let extra = note(&keys, "one too many");
    let (ok, msg) = raw.publish(&extra).await;
    assert!(!ok && msg.starts_with("rate-limited:"), "{msg}");
    // A second connection has its own bucket.
    let mut other = relay.raw().await;
    let (ok, msg) = other.publish(&note(&keys, "other connection")).await;
    assert!(ok, "{msg}");
    assert!(relay.stored(Filter::new().id(extra.id)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_cap_and_replacement() {
    let relay = TestRelay::start(RelayConfig {
        limits: Limits {
            max_subscriptions: 2,
            ..Limits::default()
        },
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    raw.req("a", vec![json!({"kinds": [1]})]).await.expect("a");
    raw.req("b", vec![json!({"kinds": [1]})]).await.expect("b");
    let err = raw
        .req("c", vec![json!({"kinds": [1]})])
        .await
        .expect_err("c over cap");
    assert!(
        err.starts_with("rate-limited:") && err.contains("at most 2"),
        "{err}"
    );
    // Re-using an id replaces the subscription (not a new one): allowed at the cap.
    raw.req("b", vec![json!({"kinds": [7]})])
        .await
        .expect("b replaced");
    // After CLOSE there is room again.
    raw.send(json!(["CLOSE", "a"])).await;
    raw.req("c", vec![json!({"kinds": [1]})])
        .await
        .expect("c after CLOSE");

    // Live: "c" (kind 1) gets the note; "b" now wants kind 7 only.
    let event = note(&keys, "live");
    raw.send(json!(["EVENT", event])).await;
    let mut got_ok = false;
    let mut subs_seen = Vec::new();
    while !got_ok || subs_seen.is_empty() {
        let v = raw.recv().await;
        match v[0].as_str() {
            Some("OK") => got_ok = true,
            Some("EVENT") => subs_seen.push(v[1].as_str().expect("sub").to_owned()),
            _ => {}
        }
    }
    // Nothing else arrives for "b".
    while let Some(v) = raw.try_recv(Duration::from_millis(300)).await {
        if v[0] == "EVENT" {
            subs_seen.push(v[1].as_str().expect("sub").to_owned());
        }
    }
    assert_eq!(subs_seen, vec!["c".to_owned()]);
}
