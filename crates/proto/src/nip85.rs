//! NIP-85 trusted assertions as the market uses them (docs/protocol.md §17): a provider's
//! assertion about a key (kind 30382, `d` = the key), read for its `rank` and, when a record
//! keeper (`quorum dvm recorder`) wrote it, for the DVM's observed figures; and a user's
//! declaration of the providers it trusts (kind 10040, `["30382:rank", PROVIDER, RELAY?]`).
//!
//! A record keeper's assertion carries, besides NIP-85's `rank`:
//!
//! ```text
//! ["d", <DVM hex>]            the subject
//! ["k", "5702"]               each request kind the keeper watched (one tag per kind)
//! ["jobs", "20"]              requests addressed to the DVM in the window
//! ["success", "95"]           percent of them it answered with a result
//! ["uptime", "100"]           percent it answered at all (result or feedback) in time
//! ["agreement", "100"]        percent of its attested quorum jobs in which it agreed
//! ["agreement_jobs", "4"]     how many attested quorum jobs that percentage is over
//! ["median_secs", "12"]       median seconds from request to result
//! ```
//!
//! Every figure is optional on parse (a plain NIP-85 rank provider writes only `rank`), and
//! a figure that is present must be a whole number in range, or the assertion is refused:
//! selection trusts nothing it cannot parse.

use std::collections::BTreeMap;

use nostr::{Alphabet, Event, EventBuilder, Filter, Kind, PublicKey, SingleLetterTag, Tag};

use crate::operator::parse_hex_pubkey;
use crate::tags::{SingleValueError, custom_tag, single_value};

/// Trusted assertion about a user (here: a DVM key).
pub const USER_ASSERTION: Kind = Kind::Custom(30382);
/// A user's trusted service providers.
pub const PROVIDER_LIST: Kind = Kind::Custom(10040);
/// The result type of a rank, as 10040 names it.
pub const RANK_RESULT: &str = "30382:rank";

/// Why an event is not a valid assertion.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("kind {0} is not a NIP-85 user assertion (30382)")]
    WrongKind(u16),
    #[error("`d` tag: {0}")]
    Subject(String),
    #[error("`{tag}` tag: {problem}")]
    Figure { tag: &'static str, problem: String },
}

/// A DVM's observed figures over the last jobs a record keeper looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Requests addressed to the DVM in the window.
    pub jobs: u32,
    /// Percent answered with a result.
    pub success: u32,
    /// Percent answered at all (result or feedback) within the timeout.
    pub uptime: u32,
    /// Percent of its attested quorum jobs in which it was among those who agreed; `None`
    /// when it took part in none.
    pub agreement: Option<u32>,
    /// The attested quorum jobs `agreement` is over.
    pub agreement_jobs: u32,
    /// Median seconds from request to result; `None` without a result.
    pub median_secs: Option<u64>,
}

/// One provider's assertion about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub subject: PublicKey,
    /// NIP-85 `rank`, 0–100.
    pub rank: Option<u32>,
    /// The request kinds a record keeper watched.
    pub kinds: Vec<u16>,
    /// The record keeper's figures, when the assertion has `jobs`.
    pub figures: Option<Figures>,
}

const PERCENT_TAGS: [&str; 4] = ["rank", "success", "uptime", "agreement"];

fn figure(event: &Event, tag: &'static str) -> Result<Option<u64>, AssertionError> {
    let value = single_value(event, tag).map_err(|e| AssertionError::Figure {
        tag,
        problem: match e {
            SingleValueError::Duplicate(_) => "appears more than once".into(),
            SingleValueError::Empty(_) => "has no value".into(),
        },
    })?;
    let Some(value) = value else { return Ok(None) };
    let number: u64 = value.parse().map_err(|_| AssertionError::Figure {
        tag,
        problem: format!("{value:?} is not a whole number"),
    })?;
    if PERCENT_TAGS.contains(&tag) && number > 100 {
        return Err(AssertionError::Figure {
            tag,
            problem: format!("{number} is more than 100"),
        });
    }
    if number > u64::from(u32::MAX) && tag != "median_secs" {
        return Err(AssertionError::Figure {
            tag,
            problem: format!("{number} is too large"),
        });
    }
    Ok(Some(number))
}

impl Assertion {
    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![Tag::identifier(self.subject.to_hex())];
        if let Some(rank) = self.rank {
            tags.push(custom_tag("rank", [rank.to_string()]));
        }
        tags.extend(self.kinds.iter().map(|k| custom_tag("k", [k.to_string()])));
        if let Some(f) = &self.figures {
            tags.push(custom_tag("jobs", [f.jobs.to_string()]));
            tags.push(custom_tag("success", [f.success.to_string()]));
            tags.push(custom_tag("uptime", [f.uptime.to_string()]));
            if let Some(agreement) = f.agreement {
                tags.push(custom_tag("agreement", [agreement.to_string()]));
            }
            tags.push(custom_tag("agreement_jobs", [f.agreement_jobs.to_string()]));
            if let Some(median) = f.median_secs {
                tags.push(custom_tag("median_secs", [median.to_string()]));
            }
        }
        EventBuilder::new(USER_ASSERTION, "").tags(tags)
    }

    /// Parses strictly (the signature is the caller's to check, see [`newest_assertions`]).
    pub fn from_event(event: &Event) -> Result<Self, AssertionError> {
        if event.kind != USER_ASSERTION {
            return Err(AssertionError::WrongKind(event.kind.as_u16()));
        }
        let subject = single_value(event, "d")
            .map_err(|_| AssertionError::Subject("missing, empty or repeated".into()))?
            .ok_or_else(|| AssertionError::Subject("missing".into()))?;
        let subject = parse_hex_pubkey(&subject).ok_or_else(|| {
            AssertionError::Subject(format!("{subject:?} is not a 64-hex lowercase public key"))
        })?;
        let mut kinds = Vec::new();
        for tag in crate::tags::tags_named(event, "k") {
            let value = tag.get(1).cloned().unwrap_or_default();
            kinds.push(value.parse().map_err(|_| AssertionError::Figure {
                tag: "k",
                problem: format!("{value:?} is not a kind number"),
            })?);
        }
        let small = |n: Option<u64>| n.map(|n| n as u32);
        let rank = small(figure(event, "rank")?);
        let figures = match figure(event, "jobs")? {
            None => None,
            Some(jobs) => Some(Figures {
                jobs: jobs as u32,
                success: small(figure(event, "success")?).unwrap_or(0),
                uptime: small(figure(event, "uptime")?).unwrap_or(0),
                agreement: small(figure(event, "agreement")?),
                agreement_jobs: small(figure(event, "agreement_jobs")?).unwrap_or(0),
                median_secs: figure(event, "median_secs")?,
            }),
        };
        Ok(Assertion {
            subject,
            rank,
            kinds,
            figures,
        })
    }
}

/// `provider`'s newest valid assertion about each subject in `events` (signature verified;
/// an addressable event: newest `created_at`, then lowest id, per `d`). A newest assertion
/// that does not parse hides older ones rather than bringing them back.
pub fn newest_assertions(provider: &PublicKey, events: &[Event]) -> BTreeMap<PublicKey, Assertion> {
    let mut newest: BTreeMap<String, &Event> = BTreeMap::new();
    for event in events {
        if event.kind != USER_ASSERTION || event.pubkey != *provider {
            continue;
        }
        let Some(d) = crate::tags::first_tag(event, "d").and_then(|t| t.get(1)) else {
            continue;
        };
        let replaces = newest.get(d).is_none_or(|current| {
            (event.created_at, std::cmp::Reverse(event.id))
                > (current.created_at, std::cmp::Reverse(current.id))
        });
        if replaces && event.verify().is_ok() {
            newest.insert(d.clone(), event);
        }
    }
    newest
        .into_values()
        .filter_map(|e| Assertion::from_event(e).ok())
        .map(|a| (a.subject, a))
        .collect()
}

/// The query for `providers`' assertions about `subjects`.
pub fn assertion_filter(
    providers: impl IntoIterator<Item = PublicKey>,
    subjects: impl IntoIterator<Item = PublicKey>,
) -> Filter {
    Filter::new()
        .kind(USER_ASSERTION)
        .authors(providers)
        .custom_tags(
            SingleLetterTag::lowercase(Alphabet::D),
            subjects.into_iter().map(|s| s.to_hex()),
        )
}

/// The rank providers `user`'s newest provider list (10040) declares, in the order given.
/// Only public tags count (encrypted entries are the user's own business).
pub fn rank_providers(user: &PublicKey, events: &[Event]) -> Vec<PublicKey> {
    let Some(event) = crate::trust::newest_of(user, PROVIDER_LIST, events, |_| true) else {
        return Vec::new();
    };
    let mut providers = Vec::new();
    for tag in crate::tags::tags_named(event, RANK_RESULT) {
        if let Some(key) = tag.get(1).and_then(|hex| parse_hex_pubkey(hex))
            && !providers.contains(&key)
        {
            providers.push(key);
        }
    }
    providers
}

/// A provider list declaring `providers` for ranks.
pub fn provider_list(providers: impl IntoIterator<Item = PublicKey>) -> EventBuilder {
    EventBuilder::new(PROVIDER_LIST, "").tags(
        providers
            .into_iter()
            .map(|p| custom_tag(RANK_RESULT, [p.to_hex()])),
    )
}

/// The median of `values` (the lower middle of an even count); `None` when empty.
pub fn median<T: Ord + Copy>(values: &mut [T]) -> Option<T> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[(values.len() - 1) / 2])
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Timestamp};

    use super::*;

    fn figures() -> Figures {
        Figures {
            jobs: 20,
            success: 95,
            uptime: 100,
            agreement: Some(75),
            agreement_jobs: 4,
            median_secs: Some(12),
        }
    }

    #[test]
    fn round_trips_with_and_without_figures() {
        let keys = Keys::generate();
        let subject = Keys::generate().public_key();
        for assertion in [
            Assertion {
                subject,
                rank: Some(80),
                kinds: vec![5702],
                figures: Some(figures()),
            },
            Assertion {
                subject,
                rank: Some(3),
                kinds: vec![],
                figures: None,
            },
        ] {
            let event = assertion.to_event_builder().sign_with_keys(&keys).unwrap();
            assert_eq!(Assertion::from_event(&event).unwrap(), assertion);
        }
    }

    #[test]
    fn refuses_figures_out_of_range_or_repeated() {
        let keys = Keys::generate();
        let subject = Keys::generate().public_key();
        let event = |tags: Vec<Tag>| {
            EventBuilder::new(USER_ASSERTION, "")
                .tag(Tag::identifier(subject.to_hex()))
                .tags(tags)
                .sign_with_keys(&keys)
                .unwrap()
        };
        let rank = |v: &str| custom_tag("rank", [v]);
        assert!(matches!(
            Assertion::from_event(&event(vec![rank("101")])),
            Err(AssertionError::Figure { tag: "rank", .. })
        ));
        assert!(matches!(
            Assertion::from_event(&event(vec![rank("-1")])),
            Err(AssertionError::Figure { tag: "rank", .. })
        ));
        assert!(matches!(
            Assertion::from_event(&event(vec![rank("5"), rank("6")])),
            Err(AssertionError::Figure { tag: "rank", .. })
        ));
        let bad_subject = EventBuilder::new(USER_ASSERTION, "")
            .tag(Tag::identifier("npub1xyz"))
            .sign_with_keys(&keys)
            .unwrap();
        assert!(matches!(
            Assertion::from_event(&bad_subject),
            Err(AssertionError::Subject(_))
        ));
    }

    #[test]
    fn only_the_providers_newest_assertion_counts() {
        let provider = Keys::generate();
        let subject = Keys::generate().public_key();
        let at = |rank: u32, secs: u64, keys: &Keys| {
            Assertion {
                subject,
                rank: Some(rank),
                kinds: vec![],
                figures: None,
            }
            .to_event_builder()
            .custom_created_at(Timestamp::from(secs))
            .sign_with_keys(keys)
            .unwrap()
        };
        let events = [
            at(90, 10, &provider),
            at(20, 20, &provider),
            at(99, 30, &Keys::generate()),
        ];
        let newest = newest_assertions(&provider.public_key(), &events);
        assert_eq!(newest[&subject].rank, Some(20));
    }

    #[test]
    fn provider_lists_name_rank_providers_once_each() {
        let user = Keys::generate();
        let [a, b] = [Keys::generate().public_key(), Keys::generate().public_key()];
        let event = provider_list([a, b, a]).sign_with_keys(&user).unwrap();
        assert_eq!(rank_providers(&user.public_key(), &[event]), vec![a, b]);
        assert_eq!(median(&mut [5, 1, 9]), Some(5));
        assert_eq!(median(&mut [4, 1, 9, 7]), Some(4));
        assert_eq!(median::<u32>(&mut []), None);
    }
}
