//! NIP-01/09/45 behaviour seen through nostr-sdk (an independent client) and raw sockets:
//! live and stored delivery, replaceable events, deletions, COUNT, persistence, shutdown.

mod common;

use std::time::Duration;

use common::{STEP, TestRelay, note, sdk_client, signed};
use nostr::prelude::*;
use nostr_sdk::RelayPoolNotification;
use quorum_relay::{Relay, RelayConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_publish_and_receive_live_and_stored() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let author = Keys::generate();
    let reader = Keys::generate();

    // Stored before anyone subscribes.
    let publisher = sdk_client(&author, &relay.url).await;
    let early = note(&author, "stored before the subscription");
    let out = publisher.send_event(&early).await.expect("send");
    assert!(out.failed.is_empty(), "{:?}", out.failed);

    let subscriber = sdk_client(&reader, &relay.url).await;
    let mut notifications = subscriber.notifications();
    subscriber
        .subscribe(
            Filter::new()
                .author(author.public_key())
                .kind(Kind::TextNote),
            None,
        )
        .await
        .expect("subscribe");

    let late = note(&author, "published after the subscription");
    let out = publisher.send_event(&late).await.expect("send");
    assert!(out.failed.is_empty(), "{:?}", out.failed);

    let mut seen = Vec::new();
    tokio::time::timeout(STEP, async {
        while seen.len() < 2 {
            if let Ok(RelayPoolNotification::Event { event, .. }) = notifications.recv().await {
                seen.push(event.id);
            }
        }
    })
    .await
    .expect("stored and live events delivered");
    assert!(
        seen.contains(&early.id) && seen.contains(&late.id),
        "{seen:?}"
    );

    // Stored query through the SDK returns both, verified by the SDK.
    let fetched = subscriber
        .fetch_events(Filter::new().author(author.public_key()), STEP)
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 2);

    // Publishing the same event again is a success ("duplicate:").
    let mut raw = relay.raw().await;
    let (ok, msg) = raw.publish(&early).await;
    assert!(ok && msg.starts_with("duplicate:"), "{msg}");

    publisher.shutdown().await;
    subscriber.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaceable_and_addressable_events_are_replaced() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let keys = Keys::generate();
    let client = sdk_client(&keys, &relay.url).await;
    let now = Timestamp::now().as_secs();

    let old = signed(
        &keys,
        EventBuilder::metadata(&Metadata::new().name("old"))
            .custom_created_at(Timestamp::from(now - 10)),
    );
    let new = signed(
        &keys,
        EventBuilder::metadata(&Metadata::new().name("new"))
            .custom_created_at(Timestamp::from(now - 5)),
    );
    client.send_event(&old).await.expect("old");
    client.send_event(&new).await.expect("new");
    let stored = relay
        .stored(Filter::new().author(keys.public_key()).kind(Kind::Metadata))
        .await;
    assert_eq!(
        stored.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![new.id]
    );

    // An older version arriving late does not replace the newer one.
    let older = signed(
        &keys,
        EventBuilder::metadata(&Metadata::new().name("older"))
            .custom_created_at(Timestamp::from(now - 20)),
    );
    let mut raw = relay.raw().await;
    let (ok, msg) = raw.publish(&older).await;
    assert!(!ok && msg.contains("newer version"), "{msg}");

    // Addressable (kind 30000+): one per d tag.
    let addr = |d: &str, content: &str, at: u64| {
        signed(
            &keys,
            EventBuilder::new(Kind::Custom(30078), content)
                .tag(Tag::identifier(d))
                .custom_created_at(Timestamp::from(at)),
        )
    };
    for e in [
        addr("a", "a1", now - 3),
        addr("a", "a2", now - 2),
        addr("b", "b1", now - 3),
    ] {
        client.send_event(&e).await.expect("addressable");
    }
    let fetched = client
        .fetch_events(
            Filter::new()
                .author(keys.public_key())
                .kind(Kind::Custom(30078)),
            STEP,
        )
        .await
        .expect("fetch");
    let mut contents: Vec<String> = fetched.into_iter().map(|e| e.content).collect();
    contents.sort();
    assert_eq!(contents, vec!["a2".to_owned(), "b1".to_owned()]);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip09_deletion_removes_only_own_events() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let alice = Keys::generate();
    let mallory = Keys::generate();
    let client = sdk_client(&alice, &relay.url).await;

    let doomed = note(&alice, "to be deleted");
    let kept = note(&alice, "kept");
    client.send_event(&doomed).await.expect("doomed");
    client.send_event(&kept).await.expect("kept");

    // Someone else's deletion request is refused and changes nothing.
    let mut raw = relay.raw().await;
    let forged = signed(
        &mallory,
        EventBuilder::delete(EventDeletionRequest::new().id(kept.id)),
    );
    let (ok, msg) = raw.publish(&forged).await;
    assert!(!ok && msg.starts_with("invalid:"), "{msg}");
    assert_eq!(relay.stored(Filter::new().id(kept.id)).await.len(), 1);

    let deletion = signed(
        &alice,
        EventBuilder::delete(EventDeletionRequest::new().id(doomed.id).reason("oops")),
    );
    let out = client.send_event(&deletion).await.expect("deletion");
    assert!(out.failed.is_empty(), "{:?}", out.failed);

    let remaining = raw
        .req(
            "after",
            vec![json!({"authors": [alice.public_key().to_hex()], "kinds": [1]})],
        )
        .await
        .expect("REQ");
    assert_eq!(
        remaining.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![kept.id]
    );
    // The deleted event cannot come back.
    let (ok, msg) = raw.publish(&doomed).await;
    assert!(!ok && msg.starts_with("blocked:"), "{msg}");
    // The deletion request itself is stored (so other clients learn of it).
    assert_eq!(relay.stored(Filter::new().id(deletion.id)).await.len(), 1);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_ephemeral_and_close() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    for i in 0..3 {
        assert!(raw.publish(&note(&keys, &format!("n{i}"))).await.0);
    }
    raw.send(json!(["COUNT", "c", {"authors": [keys.public_key().to_hex()]}]))
        .await;
    let v = raw.recv_kind("COUNT").await;
    assert_eq!(v, json!(["COUNT", "c", {"count": 3}]));
    // Several filters: distinct events.
    raw.send(json!(["COUNT", "c2", {"authors": [keys.public_key().to_hex()]}, {"kinds": [1]}]))
        .await;
    let v = raw.recv_kind("COUNT").await;
    assert_eq!(v[2]["count"], 3);

    // Ephemeral events are forwarded live but never stored.
    let mut listener = relay.raw().await;
    listener
        .req("eph", vec![json!({"kinds": [20001]})])
        .await
        .expect("REQ");
    let ephemeral = signed(&keys, EventBuilder::new(Kind::Custom(20001), "ping"));
    let (ok, msg) = raw.publish(&ephemeral).await;
    assert!(ok, "{msg}");
    let v = listener.recv_kind("EVENT").await;
    assert_eq!(v[2]["id"], ephemeral.id.to_hex());
    assert!(
        relay
            .stored(Filter::new().id(ephemeral.id))
            .await
            .is_empty()
    );

    // After CLOSE, nothing more arrives on that subscription.
    listener.send(json!(["CLOSE", "eph"])).await;
    // A round trip on the same connection guarantees the CLOSE was processed.
    listener
        .send(json!(["COUNT", "sync", {"kinds": [1]}]))
        .await;
    listener.recv_kind("COUNT").await;
    let again = signed(&keys, EventBuilder::new(Kind::Custom(20001), "ping 2"));
    assert!(raw.publish(&again).await.0);
    assert!(
        listener
            .try_recv(Duration::from_millis(300))
            .await
            .is_none(),
        "event delivered after CLOSE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::generate();
    let event = note(&keys, "durable");
    {
        let relay = Relay::open(RelayConfig::default(), dir.path())
            .await
            .expect("open");
        let mut served = TestRelay::serve(relay).await;
        let mut raw = served.raw().await;
        let (ok, msg) = raw.publish(&event).await;
        assert!(ok, "{msg}");
        served.shutdown().await;
    }
    let relay = Relay::open(RelayConfig::default(), dir.path())
        .await
        .expect("reopen");
    let served = TestRelay::serve(relay).await;
    let mut raw = served.raw().await;
    let events = raw
        .req("p", vec![json!({"ids": [event.id.to_hex()]})])
        .await
        .expect("REQ");
    assert_eq!(events, vec![event]);
    assert!(dir.path().join("lmdb").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_a_close_frame() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let mut relay = TestRelay::start(RelayConfig::default()).await;
    let raw = relay.raw().await;
    let mut ws = raw.into_inner();
    tokio::time::timeout(STEP, async {
        while relay.relay.connections() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("session registered");
    relay.shutdown().await;
    let frame = tokio::time::timeout(STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("close frame in time");
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(1001));
    assert_eq!(relay.relay.connections(), 0);
}
