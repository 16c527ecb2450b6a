//! NIP-89 handler announcements (kind 31990): how a DVM tells the market what it offers.
//!
//! NIP-89 fixes the `d` and `k` tags and leaves `content` as free-form, kind-0-style JSON. We put
//! the usual `name`/`about` there plus one `quorum` object with the capabilities, price and limits
//! that selection needs (docs/protocol.md §6). Parsing validates that object strictly, because
//! announcements come from anyone and selection trusts nothing it cannot parse.

use nostr::{Event, EventBuilder, Kind, Tag, TagKind};
use serde::{Deserialize, Serialize};

/// NIP-89 handler information.
pub const HANDLER_INFORMATION: Kind = Kind::Custom(31990);

/// Why an event is not a valid announcement.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnouncementError {
    #[error("kind {0} is not a NIP-89 handler announcement (31990)")]
    WrongKind(u16),
    #[error("missing `d` tag")]
    MissingIdentifier,
    #[error("no `k` tag: the announcement names no job kind")]
    NoKinds,
    #[error("malformed `k` tag: {0:?} is not a kind number")]
    MalformedKind(String),
    #[error("content is not a Quorum CI announcement: {0}")]
    Content(String),
}

/// What a DVM can do and on what terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// CPU architecture of the build machine (`std::env::consts::ARCH`, e.g. `x86_64`).
    pub arch: String,
    /// Operating system (`linux`).
    pub os: String,
    /// How steps are isolated: `bubblewrap`, or `none` for development DVMs.
    pub sandbox: String,
    /// Toolchains available inside the sandbox, e.g. `["sh", "git", "cargo 1.95.0"]`.
    #[serde(default)]
    pub toolchains: Vec<String>,
    /// Whether steps may ask for network access.
    pub network: bool,
}

/// Price per job, in millisats (0 = free).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Price {
    pub msats_per_job: u64,
}

/// Limits the DVM enforces on each job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// Jobs run at the same time.
    pub concurrency: u32,
    /// Longest a step may run, in seconds.
    pub max_timeout_secs: u64,
    /// Largest request event accepted, in bytes.
    pub max_request_bytes: u64,
}

/// The `quorum` object of the announcement content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub capabilities: Capabilities,
    pub price: Price,
    pub limits: JobLimits,
}

#[derive(Serialize, Deserialize)]
struct Content {
    name: String,
    #[serde(default)]
    about: String,
    quorum: Offer,
}

/// A DVM's announcement of the job kinds it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The `d` tag: stable per DVM role, so a new announcement replaces the old one.
    pub identifier: String,
    pub name: String,
    pub about: String,
    pub kinds: Vec<Kind>,
    pub offer: Offer,
}

impl Announcement {
    pub fn to_event_builder(&self) -> EventBuilder {
        let content = Content {
            name: self.name.clone(),
            about: self.about.clone(),
            quorum: self.offer.clone(),
        };
        // Serialising plain structs of strings and numbers cannot fail.
        let json = serde_json::to_string(&content).expect("announcement content serialises");
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        tags.extend(
            self.kinds
                .iter()
                .map(|k| Tag::custom(TagKind::k(), [k.as_u16().to_string()])),
        );
        EventBuilder::new(HANDLER_INFORMATION, json).tags(tags)
    }

    pub fn from_event(event: &Event) -> Result<Self, AnnouncementError> {
        if event.kind != HANDLER_INFORMATION {
            return Err(AnnouncementError::WrongKind(event.kind.as_u16()));
        }
        let identifier = event
            .tags
            .identifier()
            .ok_or(AnnouncementError::MissingIdentifier)?
            .to_string();
        let mut kinds = Vec::new();
        for tag in event.tags.iter().map(Tag::as_slice) {
            if tag[0] == "k" {
                let value = tag.get(1).cloned().unwrap_or_default();
                let number: u16 = value
                    .parse()
                    .map_err(|_| AnnouncementError::MalformedKind(value.clone()))?;
                kinds.push(Kind::from_u16(number));
            }
        }
        if kinds.is_empty() {
            return Err(AnnouncementError::NoKinds);
        }
        let content: Content = serde_json::from_str(&event.content)
            .map_err(|e| AnnouncementError::Content(e.to_string()))?;
        Ok(Announcement {
            identifier,
            name: content.name,
            about: content.about,
            kinds,
            offer: content.quorum,
        })
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    fn sample() -> Announcement {
        Announcement {
            identifier: "runner".into(),
            name: "runner-1".into(),
            about: "builds things".into(),
            kinds: vec![Kind::from_u16(5702)],
            offer: Offer {
                capabilities: Capabilities {
                    arch: "x86_64".into(),
                    os: "linux".into(),
                    sandbox: "bubblewrap".into(),
                    toolchains: vec!["sh".into(), "git".into()],
                    network: false,
                },
                price: Price { msats_per_job: 0 },
                limits: JobLimits {
                    concurrency: 2,
                    max_timeout_secs: 3600,
                    max_request_bytes: 65536,
                },
            },
        }
    }

    #[test]
    fn round_trips() {
        let keys = Keys::generate();
        let event = sample().to_event_builder().sign_with_keys(&keys).unwrap();
        assert_eq!(Announcement::from_event(&event).unwrap(), sample());
    }

    #[test]
    fn rejects_what_selection_cannot_trust() {
        let keys = Keys::generate();
        let sign = |builder: EventBuilder| builder.sign_with_keys(&keys).unwrap();
        let no_kinds = sign(EventBuilder::new(HANDLER_INFORMATION, "{}").tag(Tag::identifier("x")));
        assert_eq!(
            Announcement::from_event(&no_kinds),
            Err(AnnouncementError::NoKinds)
        );
        let bad_kind = sign(
            EventBuilder::new(HANDLER_INFORMATION, "{}")
                .tag(Tag::identifier("x"))
                .tag(Tag::custom(TagKind::k(), ["build"])),
        );
        assert_eq!(
            Announcement::from_event(&bad_kind),
            Err(AnnouncementError::MalformedKind("build".into()))
        );
        let foreign = sign(
            EventBuilder::new(HANDLER_INFORMATION, r#"{"name":"other dvm"}"#)
                .tag(Tag::identifier("x"))
                .tag(Tag::custom(TagKind::k(), ["5702"])),
        );
        assert!(matches!(
            Announcement::from_event(&foreign),
            Err(AnnouncementError::Content(_))
        ));
        let no_d = sign(EventBuilder::new(HANDLER_INFORMATION, "{}"));
        assert_eq!(
            Announcement::from_event(&no_d),
            Err(AnnouncementError::MissingIdentifier)
        );
    }
}
