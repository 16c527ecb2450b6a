//! Baselines that benchmarks measure in their own run, so that what they report is a ratio
//! to something measured on the same machine at the same time.

use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;

/// `samples` relay round trips in milliseconds: a text note published by one client until
/// another client's subscription receives it — the floor of any DVM answer.
pub async fn relay_round_trips(url: &RelayUrl, samples: usize) -> Vec<f64> {
    let publisher = Client::new(Keys::generate());
    let subscriber = Client::new(Keys::generate());
    for client in [&publisher, &subscriber] {
        client.add_relay(url.clone()).await.expect("relay URL");
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;
    }
    let keys = Keys::generate();
    let mut notifications = subscriber.notifications();
    subscriber
        .subscribe(
            Filter::new().author(keys.public_key()).kind(Kind::TextNote),
            None,
        )
        .await
        .expect("subscribe");
    // The subscription is in place on the relay before the first note.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut round_trips = Vec::with_capacity(samples);
    for i in 0..samples {
        let event = EventBuilder::text_note(format!("ping {i}"))
            .sign_with_keys(&keys)
            .expect("sign");
        let start = Instant::now();
        publisher.send_event(&event).await.expect("publish");
        loop {
            if let RelayPoolNotification::Event { event: got, .. } =
                notifications.recv().await.expect("notifications")
                && got.id == event.id
            {
                break;
            }
        }
        round_trips.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    publisher.shutdown().await;
    subscriber.shutdown().await;
    round_trips
}

/// The median of `samples` (the upper one of an even count).
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}
