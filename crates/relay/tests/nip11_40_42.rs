//! NIP-11 (information document over HTTP), NIP-40 (expiration) and NIP-42 (authentication).

mod common;

use std::time::Duration;

use common::{STEP, TestRelay, note, sdk_client, signed};
use nostr::prelude::*;
use quorum_relay::{AuthMode, Limits, RelayConfig, RelayInfo};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_document_with_cors() {
    let relay = TestRelay::start(RelayConfig {
        info: RelayInfo {
            name: "test relay".into(),
            description: "for tests".into(),
            pubkey: Some(Keys::generate().public_key().to_hex()),
            contact: Some("mailto:ops@example.invalid".into()),
            icon: None,
        },
        auth: AuthMode::RequiredForWrite,
        ..RelayConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let response = http
        .get(&relay.http_url)
        .header("Accept", "application/nostr+json")
        .timeout(STEP)
        .send()
        .await
        .expect("GET");
    assert!(response.status().is_success());
    let headers = response.headers().clone();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers.contains_key("access-control-allow-headers"));
    assert_eq!(headers["content-type"], "application/nostr+json");
    let doc: Value = response.json().await.expect("JSON");
    assert_eq!(doc["name"], "test relay");
    assert_eq!(doc["description"], "for tests");
    assert_eq!(doc["contact"], "mailto:ops@example.invalid");
    assert_eq!(doc["supported_nips"], json!([1, 9, 11, 40, 42, 45]));
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    let limits = Limits::default();
    let l = &doc["limitation"];
    assert_eq!(l["max_message_length"], limits.max_message_bytes);
    assert_eq!(l["max_content_length"], limits.max_event_bytes);
    assert_eq!(l["max_subscriptions"], limits.max_subscriptions);
    assert_eq!(l["max_limit"], limits.max_filter_limit);
    assert_eq!(l["default_limit"], limits.default_filter_limit);
    assert_eq!(l["max_subid_length"], limits.max_subid_length);
    assert_eq!(l["created_at_upper_limit"], limits.max_future_secs);
    assert_eq!(l["auth_required"], false);
    assert_eq!(l["restricted_writes"], true);

    // CORS preflight.
    let preflight = http
        .request(reqwest::Method::OPTIONS, &relay.http_url)
        .timeout(STEP)
        .send()
        .await
        .expect("OPTIONS");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    // Without the Accept header: a short text page.
    let page = http
        .get(&relay.http_url)
        .timeout(STEP)
        .send()
        .await
        .expect("GET");
    assert!(page.status().is_success());
    let text = page.text().await.expect("text");
    assert!(
        text.contains("Nostr relay") && text.contains("test relay"),
        "{text}"
    );
}

fn expiring(keys: &Keys, content: &str, at: u64) -> Event {
    signed(
        keys,
        EventBuilder::text_note(content).tag(Tag::expiration(Timestamp::from(at))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip40_expired_events_are_refused_and_never_served() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    let now = Timestamp::now().as_secs();

    let expired = expiring(&keys, "already expired", now - 1);
    let (ok, msg) = raw.publish(&expired).await;
    assert!(!ok);
    assert_eq!(msg, "invalid: event has expired");
    assert!(relay.stored(Filter::new().id(expired.id)).await.is_empty());

    // Stored with a 2 s expiry (and a later created_at, so it sorts first), plus a permanent one.
    let soon = signed(
        &keys,
        EventBuilder::text_note("expires soon")
            .tag(Tag::expiration(Timestamp::from(now + 2)))
            .custom_created_at(Timestamp::from(now + 1)),
    );
    let permanent = note(&keys, "permanent");
    assert!(raw.publish(&soon).await.0);
    assert!(raw.publish(&permanent).await.0);
    let mine = || json!({"authors": [keys.public_key().to_hex()]});
    let before = raw.req("before", vec![mine()]).await.expect("REQ");
    assert_eq!(before.len(), 2);

    tokio::time::sleep(Duration::from_millis(3_100)).await;
    // limit 1 counts live events only: the expired newest one does not eat the limit.
    let limited = raw
        .req(
            "limited",
            vec![json!({"authors": [keys.public_key().to_hex()], "limit": 1})],
        )
        .await
        .expect("REQ");
    assert_eq!(
        limited.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![permanent.id]
    );
    let after = raw.req("after", vec![mine()]).await.expect("REQ");
    assert_eq!(
        after.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![permanent.id]
    );
    let by_id = raw
        .req("by-id", vec![json!({"ids": [soon.id.to_hex()]})])
        .await
        .expect("REQ");
    assert!(by_id.is_empty(), "expired event served by id");
    // COUNT agrees (the relay removed the expired event).
    raw.send(json!(["COUNT", "n", {"authors": [keys.public_key().to_hex()]}]))
        .await;
    let v = raw.recv_kind("COUNT").await;
    assert_eq!(v[2]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip42_required_for_write() {
    let relay = TestRelay::start(RelayConfig {
        auth: AuthMode::RequiredForWrite,
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();

    // An unauthenticated raw socket: challenge on connect, auth-required on EVENT.
    let mut raw = relay.raw().await;
    let first = raw.recv().await;
    assert_eq!(first[0], "AUTH");
    let challenge = first[1].as_str().expect("challenge").to_owned();
    let event = note(&keys, "needs auth");
    let (ok, msg) = raw.publish(&event).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");
    assert!(relay.stored(Filter::new().id(event.id)).await.is_empty());
    // Reading is allowed.
    raw.req("r", vec![json!({"kinds": [1]})])
        .await
        .expect("read without auth");

    // Wrong challenge, wrong relay host: refused.
    let url = RelayUrl::parse(&relay.url).expect("url");
    let bad = signed(&keys, EventBuilder::auth("not-the-challenge", url.clone()));
    raw.send(json!(["AUTH", bad])).await;
    let (ok, msg) = raw.ok_for(&bad.id.to_hex()).await;
    assert!(!ok && msg.contains("challenge"), "{msg}");
    let elsewhere = signed(
        &keys,
        EventBuilder::auth(
            challenge.clone(),
            RelayUrl::parse("wss://relay.example.com").expect("url"),
        ),
    );
    raw.send(json!(["AUTH", elsewhere])).await;
    let (ok, msg) = raw.ok_for(&elsewhere.id.to_hex()).await;
    assert!(!ok && msg.contains("relay.example.com"), "{msg}");

    // Correct AUTH, then the same event is accepted.
    let good = signed(&keys, EventBuilder::auth(challenge, url));
    raw.send(json!(["AUTH", good])).await;
    let (ok, msg) = raw.ok_for(&good.id.to_hex()).await;
    assert!(ok, "{msg}");
    let (ok, msg) = raw.publish(&event).await;
    assert!(ok, "{msg}");
    // AUTH events are never stored.
    assert!(
        relay
            .stored(Filter::new().kind(Kind::Authentication))
            .await
            .is_empty()
    );

    // nostr-sdk with automatic authentication (its default) publishes without ceremony.
    let sdk_keys = Keys::generate();
    let client = sdk_client(&sdk_keys, &relay.url).await;
    client.automatic_authentication(true);
    let sdk_event = note(&sdk_keys, "published by an auto-authenticating client");
    let out = client.send_event(&sdk_event).await.expect("send");
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(relay.stored(Filter::new().id(sdk_event.id)).await.len(), 1);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip42_required_for_read_and_protected_events() {
    let relay = TestRelay::start(RelayConfig {
        auth: AuthMode::RequiredForRead,
        ..RelayConfig::default()
    })
    .await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    let challenge = raw.recv_kind("AUTH").await[1]
        .as_str()
        .expect("challenge")
        .to_owned();
    let err = raw
        .req("r", vec![json!({})])
        .await
        .expect_err("read needs auth");
    assert!(err.starts_with("auth-required:"), "{err}");
    raw.send(json!(["COUNT", "c", {}])).await;
    let v = raw.recv_kind("CLOSED").await;
    assert!(
        v[2].as_str().expect("msg").starts_with("auth-required:"),
        "{v}"
    );

    let url = RelayUrl::parse(&relay.url).expect("url");
    let good = signed(&keys, EventBuilder::auth(challenge, url));
    raw.send(json!(["AUTH", good])).await;
    assert!(raw.ok_for(&good.id.to_hex()).await.0);
    raw.req("r", vec![json!({})])
        .await
        .expect("read after auth");

    // NIP-70: a protected event is accepted from its authenticated author only.
    let mine = signed(
        &keys,
        EventBuilder::text_note("protected").tag(Tag::protected()),
    );
    assert!(raw.publish(&mine).await.0);
    let someone = Keys::generate();
    let theirs = signed(
        &someone,
        EventBuilder::text_note("protected").tag(Tag::protected()),
    );
    let (ok, msg) = raw.publish(&theirs).await;
    assert!(!ok && msg.starts_with("restricted:"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_available_sends_a_challenge_and_requires_nothing() {
    let relay = TestRelay::start(RelayConfig {
        auth: AuthMode::Available,
        ..RelayConfig::default()
    })
    .await;
    let mut raw = relay.raw().await;
    assert_eq!(raw.recv().await[0], "AUTH");
    assert!(
        raw.publish(&note(&Keys::generate(), "no auth needed"))
            .await
            .0
    );

    // With auth off, no challenge is sent.
    let off = TestRelay::start(RelayConfig::default()).await;
    let mut raw = off.raw().await;
    assert!(raw.try_recv(Duration::from_millis(200)).await.is_none());
}

/// AUTH on a connection to `relay` whose WebSocket request carried `host` as its Host header
/// (a relay in the middle forwarding a user's AUTH sends whatever Host it likes), with the
/// given `relay` tag. Returns the OK (accepted, message).
async fn auth_with_host(relay: &TestRelay, host: &str, keys: &Keys, tag: &str) -> (bool, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = relay.url.as_str().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("host", host.parse().expect("header value"));
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut raw = common::Raw::from_inner(ws);
    let challenge = raw.recv_kind("AUTH").await[1]
        .as_str()
        .expect("challenge")
        .to_owned();
    let auth = signed(
        keys,
        EventBuilder::auth(challenge, RelayUrl::parse(tag).expect("url")),
    );
    raw.send(json!(["AUTH", auth])).await;
    raw.ok_for(&auth.id.to_hex()).await
}

/// Security review L2: with a public URL, the `relay` tag must name it, whatever Host header
/// the connection came with; without one, the Host header decides (which a forwarder
/// controls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip42_public_url_decides_the_relay_tag() {
    let keys = Keys::generate();
    let public = TestRelay::start(RelayConfig {
        auth: AuthMode::RequiredForWrite,
        public_url: Some("wss://relay.example.org/".parse().expect("url")),
        ..RelayConfig::default()
    })
    .await;
    // The real name is accepted, also on a connection whose Host says otherwise.
    let (ok, msg) = auth_with_host(&public, "127.0.0.1", &keys, "wss://relay.example.org").await;
    assert!(ok, "{msg}");
    // A forwarder's name is refused even when it sets Host to match its own tag.
    let (ok, msg) = auth_with_host(&public, "evil.example", &keys, "wss://evil.example").await;
    assert!(!ok);
    assert_eq!(
        msg,
        "invalid: relay tag names evil.example, this relay is relay.example.org"
    );
    // So is the address the client actually connected to.
    let (ok, msg) = auth_with_host(&public, "127.0.0.1", &keys, &public.url).await;
    assert!(!ok && msg.contains("relay tag names 127.0.0.1"), "{msg}");

    // Without a public URL the Host header is all the relay knows: the forwarder gets in.
    let fallback = TestRelay::start(RelayConfig {
        auth: AuthMode::RequiredForWrite,
        ..RelayConfig::default()
    })
    .await;
    let (ok, msg) = auth_with_host(&fallback, "evil.example", &keys, "wss://evil.example").await;
    assert!(ok, "Host fallback: {msg}");
}

/// Security review L2: `allowed_writers` admits only connections authenticated as a listed
/// key; the event's own author does not matter (a listed member may publish a quorum-signed
/// event). Reading stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip42_allowed_writers_admit_only_listed_keys() {
    let (alice, bob, quorum) = (Keys::generate(), Keys::generate(), Keys::generate());
    let relay = TestRelay::start(RelayConfig {
        auth: AuthMode::RequiredForWrite,
        allowed_writers: Some([alice.public_key()].into_iter().collect()),
        ..RelayConfig::default()
    })
    .await;
    assert!(
        relay
            .relay
            .information_document()
            .limitation
            .restricted_writes
    );
    let url = RelayUrl::parse(&relay.url).expect("url");
    let authenticated = |keys: Keys| {
        let relay_url = relay.url.clone();
        let url = url.clone();
        async move {
            let mut raw = common::Raw::connect(&relay_url).await;
            let challenge = raw.recv_kind("AUTH").await[1]
                .as_str()
                .expect("challenge")
                .to_owned();
            let auth = signed(&keys, EventBuilder::auth(challenge, url));
            raw.send(json!(["AUTH", auth])).await;
            let (ok, msg) = raw.ok_for(&auth.id.to_hex()).await;
            assert!(ok, "AUTH itself succeeds for any key: {msg}");
            raw
        }
    };

    // Unauthenticated: asked to authenticate.
    let mut anonymous = relay.raw().await;
    let (ok, msg) = anonymous.publish(&note(&bob, "anonymous")).await;
    assert!(!ok && msg.starts_with("auth-required:"), "{msg}");

    // Authenticated as an unlisted key: refused, naming the key.
    let mut as_bob = authenticated(bob.clone()).await;
    let refused = note(&bob, "bob is not listed");
    let (ok, msg) = as_bob.publish(&refused).await;
    assert!(!ok);
    assert_eq!(
        msg,
        format!(
            "restricted: {} may not publish to this relay (it admits listed writers only)",
            bob.public_key().to_bech32().expect("npub")
        )
    );
    assert!(relay.stored(Filter::new().id(refused.id)).await.is_empty());
    // Reading is not restricted.
    as_bob
        .req("read", vec![json!({"kinds": [1]})])
        .await
        .expect("read");

    // Authenticated as the listed key: its own event and one signed by another key.
    let mut as_alice = authenticated(alice.clone()).await;
    for event in [
        note(&alice, "listed"),
        note(&quorum, "signed by the quorum key"),
    ] {
        let (ok, msg) = as_alice.publish(&event).await;
        assert!(ok, "{msg}");
        assert_eq!(relay.stored(Filter::new().id(event.id)).await.len(), 1);
    }
}
