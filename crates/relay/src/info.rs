//! The NIP-11 relay information document, built once from the configuration.
//!
//! The `limitation` object states exactly the limits the relay enforces, so that clients can
//! size their messages instead of discovering limits by rejection.

use serde::Serialize;

use crate::config::{AuthMode, RelayConfig};

/// NIPs this relay implements (advertised in `supported_nips`).
pub const SUPPORTED_NIPS: [u16; 6] = [1, 9, 11, 40, 42, 45];

/// The NIP-11 document as served.
#[derive(Debug, Clone, Serialize)]
pub struct InformationDocument {
    /// Relay name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Administrator key (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
    /// Administrator contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Icon URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Implemented NIPs.
    pub supported_nips: Vec<u16>,
    /// Software URL.
    pub software: String,
    /// Software version.
    pub version: String,
    /// Enforced limits.
    pub limitation: Limitation,
}

/// NIP-11 `limitation`.
#[derive(Debug, Clone, Serialize)]
pub struct Limitation {
    /// Largest client message, bytes.
    pub max_message_length: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most filters per `REQ` (not in NIP-11, but common among relays).
    pub max_filters: usize,
    /// Largest filter `limit` (larger ones are clamped).
    pub max_limit: usize,
    /// Longest subscription id.
    pub max_subid_length: usize,
    /// Most tags per event.
    pub max_event_tags: usize,
    /// Largest event (serialised), bytes.
    pub max_content_length: usize,
    /// Whether authentication is needed before anything else.
    pub auth_required: bool,
    /// Whether payment is needed (never, here).
    pub payment_required: bool,
    /// Whether writes are restricted (authentication or write policies).
    pub restricted_writes: bool,
    /// Largest accepted `created_at - now`, seconds.
    pub created_at_upper_limit: u64,
    /// `limit` applied when a filter has none.
    pub default_limit: usize,
}

impl InformationDocument {
    /// Builds the document; `restricted_writes` also reflects installed write policies.
    pub(crate) fn new(config: &RelayConfig, has_write_policies: bool) -> Self {
        let limits = &config.limits;
        InformationDocument {
            name: config.info.name.clone(),
            description: config.info.description.clone(),
            pubkey: config.info.pubkey.clone(),
            contact: config.info.contact.clone(),
            icon: config.info.icon.clone(),
            supported_nips: SUPPORTED_NIPS.to_vec(),
            software: env!("CARGO_PKG_REPOSITORY").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            limitation: Limitation {
                max_message_length: limits.max_message_bytes,
                max_subscriptions: limits.max_subscriptions,
                max_filters: limits.max_filters,
                max_limit: limits.max_filter_limit,
                max_subid_length: limits.max_subid_length,
                max_event_tags: limits.max_event_tags,
                max_content_length: limits.max_event_bytes,
                auth_required: config.auth == AuthMode::RequiredForRead,
                payment_required: false,
                restricted_writes: has_write_policies || config.auth_required_for_write(),
                created_at_upper_limit: limits.max_future_secs,
                default_limit: limits.default_filter_limit,
            },
        }
    }
}
