//! The record keeper (`quorum dvm recorder`, docs/protocol.md §17.2): reads the public record
//! of the DVMs announcing some request kinds and publishes each one's observed figures as a
//! NIP-85 assertion (30382, `d` = the DVM) under its own key, replacing the previous round's.
//! Routers and UIs then read one assertion per DVM (`record.recorder` in a policy) instead of
//! every job.

use std::collections::BTreeMap;
use std::time::Duration;

use quorum_dvm::client::JobClient;
use quorum_proto::nip85::Assertion;
use quorum_proto::nostr::{Event, Kind, PublicKey, Timestamp};

use crate::fetch::{FetchError, record};
use crate::record::{Observed, RecordSource};

/// What one round looks at.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The request kinds whose DVMs are recorded.
    pub kinds: Vec<Kind>,
    /// How many of each DVM's latest jobs count.
    pub window: u32,
    /// How long to wait for the relays' answers.
    pub timeout: Duration,
}

/// One round: the assertion published for each DVM with a record, by DVM. A DVM serving
/// several of the kinds gets one assertion over all of them (one `d` per DVM and keeper).
pub async fn round(
    client: &JobClient,
    config: &RecorderConfig,
) -> Result<Vec<(PublicKey, Event)>, FetchError> {
    let mut served: BTreeMap<PublicKey, Vec<u16>> = BTreeMap::new();
    let mut events = Vec::new();
    for kind in &config.kinds {
        let dvms: Vec<PublicKey> = client
            .discover(*kind, config.timeout)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if dvms.is_empty() {
            continue;
        }
        for dvm in &dvms {
            served.entry(*dvm).or_default().push(kind.as_u16());
        }
        events.extend(record(client, *kind, &dvms, config.window, config.timeout).await?);
    }
    let observed = Observed::new(&events, &config.kinds, Timestamp::now());
    let mut published = Vec::new();
    for (dvm, kinds) in served {
        let Some(figures) = observed.figures(&dvm, config.window) else {
            continue;
        };
        let assertion = Assertion {
            subject: dvm,
            rank: None,
            kinds,
            figures: Some(figures),
        };
        let event = client.publish_event(assertion.to_event_builder()).await?;
        tracing::info!(dvm = %dvm.to_hex(), "recorded");
        published.push((dvm, event));
    }
    Ok(published)
}
