//! NIP-89 handler announcements (kind 31990): how a DVM tells the market what it offers.
//!
//! NIP-89 fixes the `d` and `k` tags and leaves `content` as free-form, kind-0-style JSON. We put
//! the usual `name`/`about` there plus one `quorum` object with the capabilities, price and limits
//! that selection needs (docs/protocol.md §6), and the key of the operator who runs the DVM
//! (confirmed only by the operator's own list, [`crate::operator`]). Parsing validates that
//! object strictly, because announcements come from anyone and selection trusts nothing it
//! cannot parse.

use nostr::{Event, EventBuilder, Kind, PublicKey, Tag, TagKind};
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
    #[error("`quorum.operator` {0:?} is not a 64-hex lowercase public key")]
    MalformedOperator(String),
    #[error("`p` tag marked `operator`: {0}")]
    OperatorTag(String),
}

/// The marker (element 3) of the `p` tag that repeats the operator for `#p` queries.
pub const OPERATOR_MARKER: &str = "operator";

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
    /// Whether steps may name a build image (`image:`, docs/protocol.md "Build images").
    #[serde(default, skip_serializing_if = "is_false")]
    pub images: bool,
    /// Whether this DVM refuses steps that name no image (`--require-image`): it never builds
    /// on its host's own toolchain. Also announced as a `["t", "require-image"]` tag.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_image: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `t` tag value of an announcement whose DVM runs steps only in pinned build images.
pub const TAG_REQUIRE_IMAGE: &str = "require-image";
/// The `t` tag value of an announcement whose DVM can run steps in build images.
pub const TAG_IMAGES: &str = "images";

/// What a job costs, in millisats (0 = free), and which Cashu mints the DVM takes payment
/// from. A per-second price is charged on top of the per-job price for the seconds the job
/// runs, up to the DVM's `max_timeout_secs`; both absent from older announcements read as 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Price {
    pub msats_per_job: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub msats_per_second: u64,
    /// Mint URLs (normalised: no trailing slash) whose tokens the DVM accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mints: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Price {
    /// Whether the DVM asks for payment at all.
    pub fn is_free(&self) -> bool {
        self.msats_per_job == 0 && self.msats_per_second == 0
    }

    /// The most a job may cost: the per-job price plus `max_secs` seconds at the per-second
    /// price (saturating: an absurd announcement is simply too expensive).
    pub fn max_msats(&self, max_secs: u64) -> u64 {
        self.msats_per_job
            .saturating_add(self.msats_per_second.saturating_mul(max_secs))
    }
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
    quorum: QuorumObject,
}

/// The `quorum` object on the wire: the offer, and who runs the DVM.
#[derive(Serialize, Deserialize)]
struct QuorumObject {
    #[serde(flatten)]
    offer: Offer,
    /// Hex, lowercase; absent when the DVM names no operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operator: Option<String>,
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
    /// Who runs this DVM, as the DVM claims it. A claim only: the operator confirms it by
    /// listing the DVM ([`crate::operator::OperatorList`]); see
    /// [`crate::operator::confirmed_operators`].
    pub operator: Option<PublicKey>,
}

impl Announcement {
    pub fn to_event_builder(&self) -> EventBuilder {
        let content = Content {
            name: self.name.clone(),
            about: self.about.clone(),
            quorum: QuorumObject {
                offer: self.offer.clone(),
                operator: self.operator.map(|key| key.to_hex()),
            },
        };
        // Serialising plain structs of strings and numbers cannot fail.
        let json = serde_json::to_string(&content).expect("announcement content serialises");
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        tags.extend(
            self.kinds
                .iter()
                .map(|k| Tag::custom(TagKind::k(), [k.as_u16().to_string()])),
        );
        // So that `{"kinds": [31990], "#t": ["require-image"]}` finds hermetic runners.
        let caps = &self.offer.capabilities;
        for (on, value) in [
            (caps.images, TAG_IMAGES),
            (caps.require_image, TAG_REQUIRE_IMAGE),
        ] {
            if on {
                tags.push(Tag::custom(TagKind::t(), [value]));
            }
        }
        // So that `{"kinds": [31990], "#p": [OPERATOR]}` finds the DVMs claiming an operator.
        if let Some(operator) = self.operator {
            tags.push(Tag::custom(
                TagKind::p(),
                [operator.to_hex(), String::new(), OPERATOR_MARKER.into()],
            ));
        }
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
        let operator = match &content.quorum.operator {
            Some(hex) => Some(
                crate::operator::parse_hex_pubkey(hex)
                    .ok_or_else(|| AnnouncementError::MalformedOperator(hex.clone()))?,
            ),
            None => None,
        };
        check_operator_tag(event, operator)?;
        Ok(Announcement {
            identifier,
            name: content.name,
            about: content.about,
            kinds,
            offer: content.quorum.offer,
            operator,
        })
    }
}

/// The `p` tag marked `operator` is a copy for queries: at most one, and it must name the same
/// key as `quorum.operator`, so that a query by it never finds a DVM claiming someone else.
fn check_operator_tag(event: &Event, operator: Option<PublicKey>) -> Result<(), AnnouncementError> {
    let mut marked = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|tag| tag[0] == "p" && tag.get(3).map(String::as_str) == Some(OPERATOR_MARKER));
    let first = marked.next();
    if marked.next().is_some() {
        return Err(AnnouncementError::OperatorTag(
            "appears more than once".into(),
        ));
    }
    match (first, operator) {
        (None, _) => Ok(()),
        (Some(tag), Some(operator)) if tag[1] == operator.to_hex() => Ok(()),
        (Some(tag), Some(_)) => Err(AnnouncementError::OperatorTag(format!(
            "{:?} is not the content's `quorum.operator`",
            tag[1]
        ))),
        (Some(tag), None) => Err(AnnouncementError::OperatorTag(format!(
            "{:?} is given but the content names no `quorum.operator`",
            tag[1]
        ))),
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
                    images: false,
                    require_image: false,
                },
                price: Price::default(),
                limits: JobLimits {
                    concurrency: 2,
                    max_timeout_secs: 3600,
                    max_request_bytes: 65536,
                },
            },
            operator: None,
        }
    }

    #[test]
    fn round_trips() {
        let keys = Keys::generate();
        let event = sample().to_event_builder().sign_with_keys(&keys).unwrap();
        assert_eq!(Announcement::from_event(&event).unwrap(), sample());
    }

    #[test]
    fn names_its_operator_in_the_content_and_a_marked_p_tag() {
        let keys = Keys::generate();
        let operator = Keys::generate().public_key();
        let mut announcement = sample();
        announcement.operator = Some(operator);
        let event = announcement
            .to_event_builder()
            .sign_with_keys(&keys)
            .unwrap();
        assert!(
            event
                .content
                .contains(&format!("\"operator\":\"{}\"", operator.to_hex()))
        );
        let p_tags: Vec<Vec<String>> = event
            .tags
            .iter()
            .map(|t| t.clone().to_vec())
            .filter(|t| t[0] == "p")
            .collect();
        let expected = ["p", &operator.to_hex(), "", "operator"].map(String::from);
        assert_eq!(p_tags, [expected]);
        assert_eq!(Announcement::from_event(&event).unwrap(), announcement);
        // Without an operator, neither the field nor the tag.
        let plain = sample().to_event_builder().sign_with_keys(&keys).unwrap();
        assert!(!plain.content.contains("operator"));
        assert!(plain.tags.iter().all(|t| t.as_slice()[0] != "p"));
    }

    #[test]
    fn rejects_a_malformed_or_contradicted_operator() {
        let keys = Keys::generate();
        let operator = Keys::generate().public_key();
        let other = Keys::generate().public_key();
        let mut announcement = sample();
        announcement.operator = Some(operator);
        let good = announcement
            .to_event_builder()
            .sign_with_keys(&keys)
            .unwrap();
        let with = |content: String, tags: Vec<Tag>| {
            EventBuilder::new(HANDLER_INFORMATION, content)
                .tags(tags)
                .sign_with_keys(&keys)
                .unwrap()
        };
        let base_tags = || -> Vec<Tag> {
            good.tags
                .iter()
                .filter(|t| t.as_slice()[0] != "p")
                .cloned()
                .collect()
        };
        let marked = |key: &PublicKey| {
            Tag::custom(
                TagKind::p(),
                [key.to_hex(), String::new(), "operator".into()],
            )
        };
        let upper = good
            .content
            .replace(&operator.to_hex(), &operator.to_hex().to_uppercase());
        assert_eq!(
            Announcement::from_event(&with(upper, base_tags())),
            Err(AnnouncementError::MalformedOperator(
                operator.to_hex().to_uppercase()
            ))
        );
        let npub = good.content.replace(
            &operator.to_hex(),
            &nostr::ToBech32::to_bech32(&operator).unwrap(),
        );
        assert!(matches!(
            Announcement::from_event(&with(npub, base_tags())),
            Err(AnnouncementError::MalformedOperator(_))
        ));
        // The marked `p` tag must repeat the content's operator, once.
        let mut contradicted = base_tags();
        contradicted.push(marked(&other));
        assert!(matches!(
            Announcement::from_event(&with(good.content.clone(), contradicted)),
            Err(AnnouncementError::OperatorTag(_))
        ));
        let mut twice = base_tags();
        twice.extend([marked(&operator), marked(&operator)]);
        assert!(matches!(
            Announcement::from_event(&with(good.content.clone(), twice)),
            Err(AnnouncementError::OperatorTag(_))
        ));
        let unclaimed = sample().to_event_builder().sign_with_keys(&keys).unwrap();
        let mut tags: Vec<Tag> = unclaimed.tags.iter().cloned().collect();
        tags.push(marked(&operator));
        assert!(matches!(
            Announcement::from_event(&with(unclaimed.content.clone(), tags)),
            Err(AnnouncementError::OperatorTag(_))
        ));
        // An ordinary `p` tag (no marker) is not the operator's and is ignored.
        let mut plain_p = base_tags();
        plain_p.push(marked(&operator));
        plain_p.push(Tag::public_key(other));
        assert_eq!(
            Announcement::from_event(&with(good.content.clone(), plain_p))
                .unwrap()
                .operator,
            Some(operator)
        );
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
