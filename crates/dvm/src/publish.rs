//! Publishing to several relays with per-relay acknowledgement tracking and retries.
//!
//! A relay that refuses or does not answer is retried with backoff; the report says which
//! relays hold the event and why the others do not, so a withholding or failing relay is
//! visible instead of silently dropping feedback or results.

use std::collections::BTreeMap;
use std::time::Duration;

use nostr_sdk::prelude::{Client, Event, RelayUrl};

/// Which relays acknowledged an event and why the others did not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    pub accepted: Vec<RelayUrl>,
    pub failed: BTreeMap<RelayUrl, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no relay accepted event {id}: {reasons}")]
    NoRelayAccepted { id: String, reasons: String },
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// Sends `event` to every relay of `client`, retrying the relays that failed. Succeeds when at
/// least one relay accepted it; the report lists the rest.
pub async fn publish(
    client: &Client,
    event: &Event,
    policy: RetryPolicy,
) -> Result<PublishReport, PublishError> {
    let mut report = PublishReport::default();
    let mut send_error: Option<String> = None;
    let mut backoff = policy.first_backoff;
    let attempts = policy.attempts.max(1);
    for attempt in 1..=attempts {
        // Retry only the relays that failed; until one answered at all, try every relay.
        let output = if report.failed.is_empty() {
            client.send_event(event).await
        } else {
            let retry: Vec<RelayUrl> = report.failed.keys().cloned().collect();
            client.send_event_to(retry, event).await
        };
        match output {
            Ok(output) => {
                send_error = None;
                for url in output.success {
                    report.failed.remove(&url);
                    report.accepted.push(url);
                }
                report.failed.extend(output.failed);
            }
            // The client could not send at all (no relay connected yet).
            Err(err) => send_error = Some(err.to_string()),
        }
        if !report.accepted.is_empty() && report.failed.is_empty() {
            break;
        }
        if attempt < attempts {
            tracing::debug!(attempt, "retrying {} in {backoff:?}", event.id);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    report.accepted.sort();
    report.accepted.dedup();
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
        return Err(PublishError::NoRelayAccepted {
            id: event.id.to_hex(),
            reasons: reasons.join("; "),
        });
    }
    for (url, reason) in &report.failed {
        tracing::warn!(relay = %url, "relay did not accept {}: {reason}", event.id);
    }
    Ok(report)
}
