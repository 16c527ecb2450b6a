//! The Quorum CI wire model: every event kind, tag and content schema that crosses the network.
//!
//! This crate does no I/O and knows nothing of tokio. It is the only crate that spells tag
//! strings; the rest of the workspace reaches `nostr` types through the [`nostr`] re-export, so
//! that upstream churn (the 0.45 line dropped NIP-90, for example) stays in one place.
//! `docs/protocol.md` is the human-readable description of what is defined here.

pub mod agreement;
pub mod approval;
pub mod blossom;
pub mod bundle;
pub mod chain;
pub mod image;
pub mod kinds;
pub mod mandate;
pub mod nip34;
pub mod nip85;
pub mod nip89;
pub mod nip90;
pub mod nipc1;
pub mod operator;
pub mod payment;
pub mod quorum_job;
pub mod quorum_msg;
pub mod release;
pub mod run;
pub mod source;
pub mod step;
mod tags;
pub mod trust;

pub use nostr;

/// Secret values as `Debug` shows them: the names, never the values.
pub struct RedactedSecrets<'a>(pub &'a std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for RedactedSecrets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "***")))
            .finish()
    }
}
