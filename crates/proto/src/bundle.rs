//! The verification bundle: every signed event a release's verification needs, in one JSON
//! file stored on Blossom next to the release, so that a release still verifies years later,
//! offline, after relays dropped its expired mandate or replaced the state it was built from
//! (docs/protocol.md §11, "Verification bundles").
//!
//! ```json
//! {"format": "quorum-ci/verification-bundle/v1",
//!  "artifacts": ["<sha256 of each released file>", …],
//!  "events": [<binding 8700>, <attestation 8708>, <mandate 8704>, <announcement 30617>,
//!             <state 30618>, <job request>, <commitments 8705>, <reveals 8706>, …]}
//! ```
//!
//! The bundle vouches for nothing by itself: each event carries its own signature, and a
//! verifier treats the bundle as one more relay. Whoever uploads it (the run's engine) cannot
//! forge what is in it, only leave things out. Release events point at it with a
//! `["bundle", SHA256, URL, …]` tag (NIP-94 1063, NIP-82 3063).

use nostr::Event;
use serde::{Deserialize, Serialize};

use crate::blossom::Sha256Hex;

/// The format string of version 1.
pub const BUNDLE_FORMAT: &str = "quorum-ci/verification-bundle/v1";
/// The tag naming a bundle in release events: `["bundle", SHA256, URL, URL…]`.
pub const TAG_BUNDLE: &str = "bundle";
/// The largest bundle a verifier reads.
pub const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// Why bytes are not a bundle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a verification bundle: {0}")]
    Json(String),
    #[error("unknown bundle format {0:?} (this verifier reads {BUNDLE_FORMAT:?})")]
    Format(String),
    #[error("event {0} in the bundle has an invalid id or signature")]
    InvalidEvent(String),
}

/// A verification bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationBundle {
    pub format: String,
    /// The released files it is for (sha256 hex).
    pub artifacts: Vec<String>,
    pub events: Vec<Event>,
}

impl VerificationBundle {
    /// A bundle of `events` for `artifacts`; events are deduplicated and sorted by id, so the
    /// same events give the same bytes.
    pub fn new(artifacts: impl IntoIterator<Item = Sha256Hex>, events: Vec<Event>) -> Self {
        let mut artifacts: Vec<String> = artifacts.into_iter().map(|a| a.to_hex()).collect();
        artifacts.sort();
        artifacts.dedup();
        let mut events = events;
        events.sort_by_key(|e| e.id);
        events.dedup_by_key(|e| e.id);
        VerificationBundle {
            format: BUNDLE_FORMAT.into(),
            artifacts,
            events,
        }
    }

    /// The bundle's JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a bundle serialises")
    }

    /// Parses a bundle; every event must verify (a forged event is an error, not ignored: the
    /// bundle was tampered with).
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: VerificationBundle =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(bundle.format));
        }
        if let Some(bad) = bundle.events.iter().find(|e| e.verify().is_err()) {
            return Err(BundleError::InvalidEvent(bad.id.to_hex()));
        }
        Ok(bundle)
    }

    /// Whether the bundle says it is for the file with this hash.
    pub fn covers(&self, sha256: &Sha256Hex) -> bool {
        self.artifacts.contains(&sha256.to_hex())
    }
}

/// A `["bundle", SHA256, URL…]` tag's values: the bundle's hash and where to fetch it.
pub fn bundle_tag(sha256: &Sha256Hex, urls: &[String]) -> nostr::Tag {
    crate::tags::custom_tag(
        TAG_BUNDLE,
        std::iter::once(sha256.to_hex()).chain(urls.iter().cloned()),
    )
}

/// Every bundle an event names: `(sha256, urls)` from its `bundle` tags (malformed ones are
/// skipped: a pointer, not a claim).
pub fn bundles_named(event: &Event) -> Vec<(Sha256Hex, Vec<String>)> {
    crate::tags::tags_named(event, TAG_BUNDLE)
        .filter_map(|values| {
            let sha = Sha256Hex::parse(values.get(1)?).ok()?;
            let urls: Vec<String> = values[2..].to_vec();
            (!urls.is_empty()).then_some((sha, urls))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys};

    use super::*;

    #[test]
    fn round_trips_deduplicated_and_refuses_forgeries() {
        let keys = Keys::generate();
        let a = EventBuilder::text_note("a").sign_with_keys(&keys).unwrap();
        let b = EventBuilder::text_note("b").sign_with_keys(&keys).unwrap();
        let sha = Sha256Hex::from_bytes([7; 32]);
        let bundle = VerificationBundle::new([sha], vec![b.clone(), a.clone(), b.clone()]);
        assert_eq!(bundle.events.len(), 2);
        let again = VerificationBundle::new([sha], vec![a.clone(), b.clone()]);
        assert_eq!(bundle.to_json(), again.to_json(), "one spelling");
        let parsed = VerificationBundle::from_json(&bundle.to_json()).unwrap();
        assert_eq!(parsed, bundle);
        assert!(parsed.covers(&sha));

        let mut forged: serde_json::Value = serde_json::from_slice(&bundle.to_json()).unwrap();
        forged["events"][0]["content"] = "tampered".into();
        let err = VerificationBundle::from_json(&serde_json::to_vec(&forged).unwrap());
        assert!(matches!(err, Err(BundleError::InvalidEvent(_))), "{err:?}");
        let mut other: serde_json::Value = serde_json::from_slice(&bundle.to_json()).unwrap();
        other["format"] = "v9".into();
        assert!(matches!(
            VerificationBundle::from_json(&serde_json::to_vec(&other).unwrap()),
            Err(BundleError::Format(_))
        ));
        assert!(VerificationBundle::from_json(b"[]").is_err());
    }

    #[test]
    fn release_events_point_at_bundles() {
        let keys = Keys::generate();
        let sha = Sha256Hex::from_bytes([9; 32]);
        let event = EventBuilder::new(nostr::Kind::Custom(1063), "")
            .tag(bundle_tag(&sha, &["http://a/x.json".into()]))
            .tag(crate::tags::custom_tag(TAG_BUNDLE, ["nothex", "http://b"]))
            .tag(crate::tags::custom_tag(TAG_BUNDLE, [sha.to_hex()]))
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            bundles_named(&event),
            vec![(sha, vec!["http://a/x.json".to_string()])]
        );
    }
}
