//! Publishing to several relays (`quorum_dvm::publish`) against real relays on loopback: a
//! stalled relay (accepts, then answers nothing, like a process paused with SIGSTOP) costs a
//! publish or a read nothing while another relay works, and a relay that was down gets what it
//! missed from the outbox once it is back on the same address.

use std::path::Path;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_dvm::publish::{self, RetryPolicy};
use tokio::sync::oneshot;

struct TestRelay {
    url: RelayUrl,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_relay(dir: &Path, addr: &str) -> TestRelay {
    let relay = quorum_relay::Relay::open(quorum_relay::RelayConfig::default(), dir)
        .await
        .expect("relay opens");
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(relay.serve(listener, async move {
        let _ = stopped.await;
    }));
    TestRelay {
        url,
        stop: Some(stop),
    }
}

/// A WebSocket server that completes the handshake and then reads and answers nothing.
async fn stalled_relay() -> RelayUrl {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(socket).await {
                held.push(ws);
            }
        }
    });
    url
}

async fn client(relays: &[&RelayUrl]) -> Client {
    let client = Client::default();
    for url in relays {
        client.add_relay((*url).clone()).await.unwrap();
    }
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client
}

fn note(text: &str) -> Event {
    EventBuilder::text_note(text)
        .sign_with_keys(&Keys::generate())
        .unwrap()
}

async fn held_by(url: &RelayUrl, id: EventId) -> bool {
    let reader = client(&[url]).await;
    let found = reader
        .fetch_events(Filter::new().id(id), Duration::from_secs(2))
        .await
        .map(|events| !events.is_empty())
        .unwrap_or(false);
    reader.shutdown().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_relay_costs_a_publish_or_a_read_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = start_relay(dir.path(), "127.0.0.1:0").await;
    let stalled = stalled_relay().await;
    let client = client(&[&good.url, &stalled]).await;
    for n in 0..3 {
        let event = note(&format!("note {n}"));
        let started = Instant::now();
        let report = publish::publish(&client, &event, RetryPolicy::default())
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "publish {n} waited {:?} for the stalled relay",
            started.elapsed()
        );
        assert_eq!(report.accepted, vec![good.url.clone()]);
        assert!(
            report.deferred.contains(&stalled) || report.failed.contains_key(&stalled),
            "{report:?}"
        );
    }
    assert!(publish::outbox().pending(&stalled) >= 1);
    // The first read waits for the stalled relay a little (the good one's time, twice, at
    // least 0.5 s), then leaves it out.
    for n in 0..3 {
        let started = Instant::now();
        let found = publish::fetch(
            &client,
            Filter::new().kind(Kind::TextNote),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(found.len(), 3);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "read {n} waited {:?} for the stalled relay",
            started.elapsed()
        );
    }
    assert!(publish::failing(&stalled));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_back_after_an_outage_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let up = start_relay(other.path(), "127.0.0.1:0").await;
    let flaky = start_relay(dir.path(), "127.0.0.1:0").await;
    let addr = flaky
        .url
        .as_str()
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_string();
    let flaky_url = flaky.url.clone();
    let client = client(&[&up.url, &flaky_url]).await;
    drop(flaky);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let missed: Vec<Event> = (0..5).map(|n| note(&format!("missed {n}"))).collect();
    for event in &missed {
        let report = publish::publish(&client, event, RetryPolicy::default())
            .await
            .unwrap();
        assert_eq!(report.accepted, vec![up.url.clone()]);
    }
    assert_eq!(publish::outbox().pending(&flaky_url), 5);
    // Back on the same address and data, with nothing republished by the caller.
    let _back = start_relay(dir.path(), &addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while publish::outbox().pending(&flaky_url) > 0 {
        assert!(
            Instant::now() < deadline,
            "the outbox still holds {} events for the relay",
            publish::outbox().pending(&flaky_url)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for event in &missed {
        assert!(held_by(&flaky_url, event.id).await, "{} missing", event.id);
    }
    client.shutdown().await;
}
