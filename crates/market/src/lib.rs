//! The open market of DVMs (docs/pipeline.md "Choosing DVMs", docs/protocol.md §17): which
//! DVMs a job may be given to, judged by the maintainer's trust (NIP-51 list, follow distance,
//! NIP-85 rank), their public record (success, uptime, agreement), their price, and — for a
//! quorum — how many distinct operators run them.
//!
//! - [`select`]: pure judging of candidates against a policy, from a list of events;
//! - [`record`]: a DVM's figures, computed from the record or read from a record keeper;
//! - [`fetch`]: the queries that gather those events from relays;
//! - [`recorder`]: the record keeper, publishing figures as NIP-85 assertions;
//! - [`choose`]: the three together, what the engine and `quorum market` call.

pub mod fetch;
pub mod record;
pub mod recorder;
pub mod select;

use quorum_dvm::client::JobClient;
use quorum_proto::nostr::{PublicKey, Timestamp};

pub use fetch::{FetchError, Query, Snapshot};
pub use select::{Judge, Judgement, Selection, TooFew};

/// Gathers what `query` needs from `client`'s relays and judges the candidates.
pub async fn choose(client: &JobClient, query: &Query<'_>) -> Result<Selection, FetchError> {
    let snapshot = fetch::gather(client, query).await?;
    Ok(judge_snapshot(query, &snapshot, Timestamp::now()))
}

/// Judges `snapshot` (from [`fetch::gather`] with the same `query`) as of `now`.
pub fn judge_snapshot(query: &Query<'_>, snapshot: &Snapshot, now: Timestamp) -> Selection {
    let recorder = query
        .policy
        .record
        .as_ref()
        .and_then(|r| r.recorder.as_deref())
        .and_then(|hex| PublicKey::from_hex(hex).ok());
    let recorded;
    let observed;
    let source: Option<&dyn record::RecordSource> = match recorder {
        Some(recorder) => {
            recorded = record::Recorded::new(recorder, &snapshot.events);
            Some(&recorded)
        }
        None if query.policy.record.is_some() || query.with_record => {
            observed = record::Observed::new(&snapshot.events, &[query.kind], now);
            Some(&observed)
        }
        None => None,
    };
    Judge {
        policy: query.policy,
        maintainer: query.maintainer,
        events: &snapshot.events,
        record: source,
    }
    .judge(&snapshot.candidates)
}
