//! Publishing to several relays: sent when enough relays accepted, the rest caught up later.
//!
//! An event counts as published as soon as [`RetryPolicy::needed`] relays (one by default)
//! acknowledged it: the caller never waits for the slowest relay. Every relay that did not
//! accept it in the caller's path (it refused, was down, stalled, or was still answering) gets
//! the event through the process-wide [`outbox`]: one worker per relay, on a connection of its
//! own, that re-sends what the relay missed with backoff, and replays it when the relay comes
//! back after an outage (bounded: [`OUTBOX_EVENTS`] events per relay, none older than
//! [`OUTBOX_AGE`]). Every relay is asked at once, so a dead or stalled one costs a publish
//! nothing while another works. Reads ([`fetch`]) ask each relay on their own and end shortly
//! after the first answered in full; a relay that did not answer a read, or an outbox delivery,
//! in time is [`failing`] for a few seconds and left out of reads: a dead relay is paid for
//! once per process, not per event, client or session. The report says which relays hold the
//! event and why the others did not yet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use nostr_sdk::prelude::{Client, Event, EventId, RelayStatus, RelayUrl};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Which relays acknowledged an event and why the others did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    pub accepted: Vec<RelayUrl>,
    /// Relays that refused or failed in the caller's path, with why; the outbox retries them.
    pub failed: BTreeMap<RelayUrl, String>,
    /// Relays the caller did not wait for (a backlog, or still answering when enough had
    /// accepted): the outbox delivers to them.
    pub deferred: Vec<RelayUrl>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no relay accepted event {id}: {reasons}")]
    NoRelayAccepted { id: String, reasons: String },
}

/// How long to wait, and for how many relays.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Rounds in the caller's path while fewer than `needed` relays accepted.
    pub attempts: u32,
    pub first_backoff: Duration,
    /// How many relays must accept before the caller goes on (at least 1, at most all).
    pub needed: usize,
    /// How long one round waits for relays' answers.
    pub round_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            needed: 1,
            round_timeout: Duration::from_secs(10),
        }
    }
}

/// Sends `event` to the relays of `client` and returns once `policy.needed` accepted it (or
/// all that were asked answered); the others get it through the [`outbox`]. Fails when no
/// relay accepted it after `policy.attempts` rounds.
pub async fn publish(
    client: &Client,
    event: &Event,
    policy: RetryPolicy,
) -> Result<PublishReport, PublishError> {
    let relays: Vec<RelayUrl> = client.relays().await.into_keys().collect();
    let mut report = PublishReport::default();
    let mut send_error: Option<String> = None;
    // Every relay is asked at once and the first acknowledgements end the wait, so a relay
    // that is down or stalled costs nothing here while another one works.
    let mut ask = relays.clone();
    let mut deferred: Vec<RelayUrl> = Vec::new();
    let needed = policy.needed.clamp(1, relays.len().max(1));
    let mut backoff = policy.first_backoff;
    let attempts = policy.attempts.max(1);
    for attempt in 1..=attempts {
        let mut sends: FuturesUnordered<_> = ask
            .iter()
            .map(|url| {
                let url = url.clone();
                async move {
                    let result = client.send_event_to([url.clone()], event).await;
                    (url, result)
                }
            })
            .collect();
        let deadline = Instant::now() + policy.round_timeout;
        let mut answered = Vec::new();
        while report.accepted.len() < needed {
            let next = match tokio::time::timeout_at(deadline, sends.next()).await {
                Ok(Some(next)) => next,
                Ok(None) | Err(_) => break,
            };
            let (url, result) = next;
            answered.push(url.clone());
            match result {
                Ok(output) if output.success.contains(&url) => {
                    report.failed.remove(&url);
                    report.accepted.push(url);
                }
                Ok(output) => {
                    let reason = output
                        .failed
                        .get(&url)
                        .cloned()
                        .unwrap_or_else(|| "no answer".into());
                    report.failed.insert(url, reason);
                }
                // The client could not send at all (the relay is not connected).
                Err(err) => {
                    send_error = Some(err.to_string());
                    report.failed.insert(url, err.to_string());
                }
            }
        }
        // Whoever was still answering is not waited for.
        for url in &ask {
            if !answered.contains(url) && !deferred.contains(url) {
                deferred.push(url.clone());
            }
        }
        if !report.accepted.is_empty() {
            break;
        }
        if attempt < attempts {
            tracing::debug!(attempt, "retrying {} in {backoff:?}", event.id);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            ask = relays.clone();
            deferred.clear();
        }
    }
    report.accepted.sort();
    report.accepted.dedup();
    deferred.retain(|url| !report.accepted.contains(url) && !report.failed.contains_key(url));
    report.deferred = deferred;
    if report.accepted.is_empty() {
        let mut reasons: Vec<String> = report
            .failed
            .iter()
            .map(|(url, reason)| format!("{url}: {reason}"))
            .collect();
        reasons.extend(send_error);
        if reasons.is_empty() {
            reasons.push("no relay connected".into());
        }
        // Still worth delivering when the relays come back.
        for url in &relays {
            outbox().push(url, event);
        }
        return Err(PublishError::NoRelayAccepted {
            id: event.id.to_hex(),
            reasons: reasons.join("; "),
        });
    }
    for url in report.failed.keys().chain(&report.deferred) {
        outbox().push(url, event);
    }
    for (url, reason) in &report.failed {
        tracing::debug!(relay = %url, "relay did not accept {} yet: {reason}", event.id);
    }
    Ok(report)
}

/// Waits until at least one relay of `client` is connected, or `timeout`: a session needs one
/// relay to start, not all of them (a dead one would cost the whole timeout every time).
pub async fn wait_for_any(client: &Client, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let relays = client.relays().await;
        if relays
            .values()
            .any(|r| r.status() == RelayStatus::Connected)
            || relays.is_empty()
        {
            return;
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The relays of `client` worth waiting for: connected, and not [`failing`] (a relay that
/// does not take our events is not answering reads either). All of them when none qualifies.
pub async fn responsive_relays(client: &Client) -> Vec<RelayUrl> {
    let relays = client.relays().await;
    let good: Vec<RelayUrl> = relays
        .iter()
        .filter(|(url, relay)| relay.status() == RelayStatus::Connected && !failing(url))
        .map(|(url, _)| url.clone())
        .collect();
    if good.is_empty() {
        relays.into_keys().collect()
    } else {
        good
    }
}

/// Stored events matching `filter` from the [`responsive_relays`] of `client`, verified and
/// without duplicates. Each relay is asked on its own: the read ends [`READ_GRACE`] after the
/// first relay finished (or when all did, or at `timeout`), and a relay that had not finished
/// by then is marked slow ([`mark_slow`]), so that the next reads do not wait for it either.
pub async fn fetch(
    client: &Client,
    filter: nostr_sdk::prelude::Filter,
    timeout: Duration,
) -> Result<Vec<Event>, nostr_sdk::client::Error> {
    let relays = responsive_relays(client).await;
    let started = Instant::now();
    let mut reads: FuturesUnordered<_> = relays
        .iter()
        .map(|url| {
            let (url, filter) = (url.clone(), filter.clone());
            async move {
                let result = client
                    .fetch_events_from([url.clone()], filter, timeout)
                    .await;
                (url, result)
            }
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut events = Vec::new();
    let mut answered = Vec::new();
    let mut last_error = None;
    let mut first_done: Option<Instant> = None;
    loop {
        let next = match first_done {
            None => reads.next().await,
            // The others get a grace of their own: twice what the first took, at least
            // READ_GRACE, so that a busy but working relay is not taken for a stalled one.
            Some(at) => {
                match tokio::time::timeout_at(at + READ_GRACE.max((at - started) * 2), reads.next())
                    .await
                {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
        };
        let Some((url, result)) = next else { break };
        answered.push(url.clone());
        match result {
            Ok(found) => {
                first_done.get_or_insert_with(Instant::now);
                for event in found {
                    if seen.insert(event.id) && event.verify().is_ok() {
                        events.push(event);
                    }
                }
            }
            Err(err) => {
                mark_slow(&url);
                last_error = Some(err);
            }
        }
    }
    for url in relays.iter().filter(|url| !answered.contains(url)) {
        mark_slow(url);
    }
    match (first_done, last_error) {
        (None, Some(err)) => Err(err),
        _ => Ok(events),
    }
}

/// How long a read waits for the other relays once one has answered in full.
pub const READ_GRACE: Duration = Duration::from_millis(500);
/// How long a relay that did not answer a read is left out of reads and publishes.
const SLOW_FOR: Duration = Duration::from_secs(5);

/// Relays that recently failed to answer a read in time, until when.
fn slow() -> &'static Mutex<HashMap<RelayUrl, Instant>> {
    static SLOW: LazyLock<Mutex<HashMap<RelayUrl, Instant>>> = LazyLock::new(Default::default);
    &SLOW
}

/// Leaves `relay` out of reads and publishes for a while (it did not answer in time).
pub fn mark_slow(relay: &RelayUrl) {
    slow()
        .lock()
        .expect("health lock")
        .insert(relay.clone(), Instant::now() + SLOW_FOR);
}

/// Whether `relay` is known to be failing: it did not answer a read, or the [`outbox`]'s
/// last attempt to deliver to it, in time (for the last few seconds).
pub fn failing(relay: &RelayUrl) -> bool {
    slow()
        .lock()
        .expect("health lock")
        .get(relay)
        .is_some_and(|until| Instant::now() < *until)
}

/// The most events kept for one relay; the oldest go first.
pub const OUTBOX_EVENTS: usize = 4096;
/// Events older than this are not re-sent.
pub const OUTBOX_AGE: Duration = Duration::from_secs(3600);
/// The longest pause between a worker's attempts on a failing relay.
const OUTBOX_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// How long a worker waits for one relay's answer.
const OUTBOX_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The process-wide outbox.
pub fn outbox() -> &'static Outbox {
    static OUTBOX: LazyLock<Outbox> = LazyLock::new(Outbox::default);
    &OUTBOX
}

/// Per relay, what it has not acknowledged yet, and a worker that delivers it.
#[derive(Default)]
pub struct Outbox {
    relays: Mutex<HashMap<RelayUrl, Arc<Queue>>>,
}

#[derive(Default)]
struct Queue {
    events: Mutex<VecDeque<(Instant, Event)>>,
    wake: Notify,
}

impl Outbox {
    /// Whether `relay` has events waiting (it failed recently and has not caught up).
    pub fn backed_up(&self, relay: &RelayUrl) -> bool {
        self.relays
            .lock()
            .expect("outbox lock")
            .get(relay)
            .is_some_and(|q| !q.events.lock().expect("queue lock").is_empty())
    }

    /// How many events wait for `relay`.
    pub fn pending(&self, relay: &RelayUrl) -> usize {
        self.relays
            .lock()
            .expect("outbox lock")
            .get(relay)
            .map_or(0, |q| q.events.lock().expect("queue lock").len())
    }

    /// Waits up to `wait` (or until no relay took anything for a second) for every relay to
    /// take what it missed; returns the relays that still
    /// have events waiting, with how many (for a short-lived process to say what it leaves
    /// undelivered when it exits).
    pub async fn flush(&self, wait: Duration) -> Vec<(RelayUrl, usize)> {
        let deadline = Instant::now() + wait;
        let mut last_total = usize::MAX;
        let mut progress_at = Instant::now();
        loop {
            let waiting: Vec<(RelayUrl, usize)> = self
                .relays
                .lock()
                .expect("outbox lock")
                .iter()
                .map(|(url, q)| (url.clone(), q.events.lock().expect("queue lock").len()))
                .filter(|(_, n)| *n > 0)
                .collect();
            // A relay that takes nothing for a second is down: waiting longer would only
            // delay the exit.
            let total: usize = waiting.iter().map(|(_, n)| n).sum();
            if total < last_total {
                last_total = total;
                progress_at = Instant::now();
            }
            if waiting.is_empty()
                || Instant::now() >= deadline
                || progress_at.elapsed() >= Duration::from_secs(1)
            {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Queues `event` for `relay` and makes sure a worker delivers it.
    pub fn push(&self, relay: &RelayUrl, event: &Event) {
        let queue = {
            let mut relays = self.relays.lock().expect("outbox lock");
            match relays.get(relay) {
                Some(queue) => queue.clone(),
                None => {
                    let queue = Arc::new(Queue::default());
                    relays.insert(relay.clone(), queue.clone());
                    if tokio::runtime::Handle::try_current().is_ok() {
                        tokio::spawn(deliver(relay.clone(), queue.clone()));
                    }
                    queue
                }
            }
        };
        {
            let mut events = queue.events.lock().expect("queue lock");
            if events.iter().any(|(_, e)| e.id == event.id) {
                return;
            }
            if events.len() >= OUTBOX_EVENTS {
                events.pop_front();
            }
            events.push_back((Instant::now(), event.clone()));
        }
        queue.wake.notify_one();
    }
}

/// One relay's worker: its own connection (reconnected by nostr-sdk), sending the queue in
/// order whenever the relay is connected, backing off while it fails.
async fn deliver(url: RelayUrl, queue: Arc<Queue>) {
    let client = Client::default();
    if client.add_relay(url.clone()).await.is_err() {
        return;
    }
    client.connect().await;
    let mut backoff = Duration::from_millis(250);
    loop {
        let next = {
            let mut events = queue.events.lock().expect("queue lock");
            while events
                .front()
                .is_some_and(|(queued, _)| queued.elapsed() > OUTBOX_AGE)
            {
                events.pop_front();
            }
            events.front().map(|(_, e)| e.clone())
        };
        let Some(event) = next else {
            queue.wake.notified().await;
            continue;
        };
        let sent = tokio::time::timeout(
            OUTBOX_SEND_TIMEOUT,
            client.send_event_to([url.clone()], &event),
        )
        .await;
        let accepted = matches!(&sent, Ok(Ok(output)) if output.success.contains(&url));
        // A relay that answers "duplicate" or refuses the event for good has seen it: only a
        // relay that does not answer, or is not connected, is retried.
        let refused = matches!(&sent, Ok(Ok(output))
            if output.failed.get(&url).is_some_and(|reason| final_refusal(reason)));
        if accepted || refused {
            if refused {
                tracing::debug!(relay = %url, "relay refused {}", event.id);
            }
            remove(&queue, event.id);
            slow().lock().expect("health lock").remove(&url);
            backoff = Duration::from_millis(250);
            continue;
        }
        mark_slow(&url);
        tracing::debug!(relay = %url, pending = queue.events.lock().expect("queue lock").len(),
            "relay unreachable; retrying in {backoff:?}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(OUTBOX_MAX_BACKOFF);
    }
}

/// Whether a relay's `OK false` message is final (NIP-01's machine-readable prefixes): the
/// relay has the event already or will never take it. "rate-limited", "error", a timeout or
/// "relay not connected" are worth another try.
fn final_refusal(reason: &str) -> bool {
    ["duplicate", "blocked", "invalid", "pow", "restricted"]
        .iter()
        .any(|prefix| reason.starts_with(prefix))
}

fn remove(queue: &Queue, id: EventId) {
    queue
        .events
        .lock()
        .expect("queue lock")
        .retain(|(_, e)| e.id != id);
}
