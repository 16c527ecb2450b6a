//! The relay side of one quorum session: a subscription whose events land in a store that the
//! protocol steps wait on.
//!
//! Every step of commit-reveal and signing is "wait until the events seen so far satisfy a
//! condition, or a deadline passes". The channel keeps every valid event it has seen (stored ones
//! from before it subscribed included, so a member that joins late catches up), and re-evaluates
//! a condition whenever a new one arrives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::*;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Errors of the relay side.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("no relay to talk to")]
    NoRelays,
    #[error("relay {url}: {reason}")]
    Relay { url: String, reason: String },
    #[error("subscribing: {0}")]
    Subscribe(String),
    #[error("no relay accepted event {id} (kind {kind}): {reason}")]
    Publish {
        id: EventId,
        kind: u16,
        reason: String,
    },
}

/// A client connected to `relays` (signing with `keys`, if given), waited for briefly: the
/// one way this crate opens relays, for sessions and for lookups alike.
pub async fn connect(relays: &[RelayUrl], keys: Option<&Keys>) -> Result<Client, ChannelError> {
    if relays.is_empty() {
        return Err(ChannelError::NoRelays);
    }
    let client = match keys {
        Some(keys) => Client::builder().signer(keys.clone()).build(),
        None => Client::builder().build(),
    };
    for url in relays {
        client
            .add_relay(url.clone())
            .await
            .map_err(|e| ChannelError::Relay {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
    }
    client.connect().await;
    // One relay is enough to start; the others join when they connect.
    quorum_dvm::publish::wait_for_any(&client, Duration::from_secs(5)).await;
    Ok(client)
}

/// Stored events matching `filter`, from the relays of `client` that answer (a relay known to
/// be failing would hold every read up to `timeout`; `quorum_dvm::publish::responsive_relays`).
pub async fn fetch(
    client: &Client,
    filter: Filter,
    timeout: Duration,
) -> Result<Vec<Event>, nostr_sdk::client::Error> {
    quorum_dvm::publish::fetch(client, filter, timeout).await
}

/// A connection to the session's relays with the events seen so far.
pub struct Channel {
    client: Client,
    keys: Keys,
    seen: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
    pump: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Store {
    ids: HashSet<EventId>,
    events: Vec<Event>,
}

impl Channel {
    /// Connects with `keys` (the member's DVM key, which authenticates what it publishes) and
    /// subscribes to `filters`.
    pub async fn open(
        relays: &[RelayUrl],
        keys: Keys,
        filters: Vec<Filter>,
    ) -> Result<Channel, ChannelError> {
        let client = connect(relays, Some(&keys)).await?;
        let seen = Arc::new(Mutex::new(Store::default()));
        let changed = Arc::new(Notify::new());
        // Subscribe before anything is published, so nothing slips past.
        let mut notifications = client.notifications();
        let pump = {
            let seen = seen.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                loop {
                    match notifications.recv().await {
                        Ok(RelayPoolNotification::Event { event, .. }) => {
                            if event.verify().is_ok() && remember(&seen, *event) {
                                changed.notify_waiters();
                            }
                        }
                        Ok(RelayPoolNotification::Shutdown) => break,
                        Ok(_) => {}
                        // Lagging loses notifications, not events: the store is refilled
                        // from the relays below whenever a wait times out a slice.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        for filter in filters {
            client
                .subscribe(filter, None)
                .await
                .map_err(|e| ChannelError::Subscribe(e.to_string()))?;
        }
        Ok(Channel {
            client,
            keys,
            seen,
            changed,
            pump,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// Signs with the member's key and publishes; the event is also put in the store (relays
    /// do not echo our own events back to us). Sent as [`Channel::publish_signed`] sends.
    pub async fn publish(&self, builder: EventBuilder) -> Result<Event, ChannelError> {
        let event = builder
            .sign_with_keys(&self.keys)
            .map_err(|e| ChannelError::Publish {
                id: EventId::all_zeros(),
                kind: 0,
                reason: e.to_string(),
            })?;
        self.publish_signed(&event).await?;
        Ok(event)
    }

    /// Publishes an event someone else signed (a quorum-signed one, a proof).
    ///
    /// Sent once one relay accepted it: the other members read it there. The relays that did
    /// not (yet) get it from the process's outbox, never in the session's path, so a stalled
    /// relay does not stretch every round (`quorum_dvm::publish`).
    pub async fn publish_signed(&self, event: &Event) -> Result<(), ChannelError> {
        quorum_dvm::publish::publish(
            &self.client,
            event,
            quorum_dvm::publish::RetryPolicy::default(),
        )
        .await
        .map_err(|e| ChannelError::Publish {
            id: event.id,
            kind: event.kind.as_u16(),
            reason: e.to_string(),
        })?;
        if remember(&self.seen, event.clone()) {
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// The session's relays that are not working for us (not connected, or not taking our
    /// events: a backlog in the outbox), to name the fault when a round times out.
    pub async fn unresponsive_relays(&self) -> Vec<String> {
        let outbox = quorum_dvm::publish::outbox();
        self.client
            .relays()
            .await
            .into_iter()
            .filter(|(url, relay)| {
                relay.status() != RelayStatus::Connected
                    || outbox.backed_up(url)
                    || quorum_dvm::publish::failing(url)
            })
            .map(|(url, _)| url.to_string())
            .collect()
    }

    /// A copy of every event seen so far, in arrival order.
    pub fn events(&self) -> Vec<Event> {
        self.seen.lock().expect("store lock").events.clone()
    }

    /// Waits until `check` finds what it looks for in the events seen so far, or `deadline`
    /// passes (then `None`).
    pub async fn wait_for<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&[Event]) -> Option<T>,
    ) -> Option<T> {
        loop {
            // Register interest before looking, so an event arriving in between wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let store = self.seen.lock().expect("store lock");
                if let Some(found) = check(&store.events) {
                    return Some(found);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Wake at least every second to look again: cheap, and robust against a lost
            // notification.
            let slice = (Instant::now() + Duration::from_secs(1)).min(deadline);
            let _ = tokio::time::timeout_at(slice, changed).await;
        }
    }

    /// Disconnects.
    pub async fn close(self) {
        self.pump.abort();
        self.client.shutdown().await;
    }
}

fn remember(store: &Mutex<Store>, event: Event) -> bool {
    let mut store = store.lock().expect("store lock");
    if store.ids.insert(event.id) {
        store.events.push(event);
        true
    } else {
        false
    }
}
