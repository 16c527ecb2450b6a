//! Who runs a DVM (docs/protocol.md §6.1): the operator's signed list of its DVMs, a NIP-51
//! follow set (kind 30000, `d` = `quorum-ci-dvms`, one `p` tag per DVM key), and the rule that
//! a DVM belongs to an operator only when both say so: the DVM's newest valid announcement
//! (kind 31990, [`crate::nip89`]) names the operator, and the operator's newest valid list
//! names the DVM. Either side alone proves nothing: a DVM can name anyone, and anyone can list
//! any DVM.
//!
//! Everything here is pure: callers fetch the events (from relays, or from a bundle) and pass
//! one mixed list. Two queries find everything [`confirmed_operators`] needs:
//!
//! 1. [`announcement_filter`]`(dvms)`: the DVMs' announcements;
//! 2. [`list_filter`]`(`[`claimed_operators`]`(dvms, &announcements))`: the lists of the
//!    operators they claim, by author. Not by `#p`: a relay that still holds an operator's
//!    older list (or one relay of several that missed the newer) would then answer with the
//!    stale list naming the DVM and hide the newer one that no longer does.
//!
//! Operator keys are claims of identity, not proof of independence: one person can make many.
//! What the rule buys is that every member's operator is named, signed for by the operator and
//! shown, so that a maintainer or verifier can tell three keys of one operator from three
//! operators, and judge the operators they see.

use std::collections::{BTreeMap, BTreeSet};

use nostr::{Alphabet, Event, EventBuilder, Filter, Kind, PublicKey, SingleLetterTag, Tag};

use crate::nip89::{Announcement, HANDLER_INFORMATION};

/// NIP-51 follow set.
pub const OPERATOR_LIST: Kind = Kind::Custom(30000);

/// The `d` tag of an operator's list of its Quorum CI DVMs.
pub const LIST_IDENTIFIER: &str = "quorum-ci-dvms";

/// The `title` tag we write (NIP-51 sets may carry one); ignored on parse.
const LIST_TITLE: &str = "Quorum CI DVMs I run";

/// Why an event is not a valid operator list.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OperatorListError {
    #[error("kind {0} is not a NIP-51 follow set (30000)")]
    WrongKind(u16),
    #[error("`d` tag: {0}")]
    Identifier(String),
    #[error("`p` tag: {0}")]
    Dvm(String),
}

/// An operator's list of the DVMs it runs. Only the public `p` tags count: NIP-51 private
/// items (encrypted `content`) cannot confirm anything to anyone else, so they are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorList {
    pub dvms: BTreeSet<PublicKey>,
}

impl OperatorList {
    pub fn new(dvms: impl IntoIterator<Item = PublicKey>) -> Self {
        OperatorList {
            dvms: dvms.into_iter().collect(),
        }
    }

    /// The unsigned list; the operator's key signs it. Publishing replaces the previous one
    /// (addressable: kind, author, `d`).
    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![
            Tag::identifier(LIST_IDENTIFIER),
            crate::tags::custom_tag("title", [LIST_TITLE]),
        ];
        tags.extend(self.dvms.iter().map(|dvm| Tag::public_key(*dvm)));
        EventBuilder::new(OPERATOR_LIST, "").tags(tags)
    }

    /// Parses strictly: one `d` = `quorum-ci-dvms`, every `p` a 64-hex lowercase key, none
    /// twice. Other tags (`title`, `description`, `image`, …) are ignored.
    pub fn from_event(event: &Event) -> Result<Self, OperatorListError> {
        if event.kind != OPERATOR_LIST {
            return Err(OperatorListError::WrongKind(event.kind.as_u16()));
        }
        let mut identifiers = crate::tags::tags_named(event, "d");
        match (identifiers.next(), identifiers.next()) {
            (Some(d), None) if d.get(1).map(String::as_str) == Some(LIST_IDENTIFIER) => {}
            (None, _) => return Err(OperatorListError::Identifier("missing".into())),
            (Some(_), Some(_)) => {
                return Err(OperatorListError::Identifier(
                    "appears more than once".into(),
                ));
            }
            (Some(d), None) => {
                return Err(OperatorListError::Identifier(format!(
                    "{:?} is not {LIST_IDENTIFIER:?}",
                    d.get(1).cloned().unwrap_or_default()
                )));
            }
        }
        let mut dvms = BTreeSet::new();
        for tag in crate::tags::tags_named(event, "p") {
            let hex = tag
                .get(1)
                .ok_or_else(|| OperatorListError::Dvm("no value".into()))?;
            let dvm = parse_hex_pubkey(hex).ok_or_else(|| {
                OperatorListError::Dvm(format!("{hex:?} is not a 64-hex lowercase public key"))
            })?;
            if !dvms.insert(dvm) {
                return Err(OperatorListError::Dvm(format!("{hex} appears twice")));
            }
        }
        Ok(OperatorList { dvms })
    }
}

/// A strictly written public key: 64 lowercase hex characters that name a curve point.
pub(crate) fn parse_hex_pubkey(text: &str) -> Option<PublicKey> {
    let lowercase_hex =
        text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lowercase_hex {
        return None;
    }
    let key = PublicKey::from_hex(text).ok()?;
    // Only a point on the curve can ever sign anything.
    key.xonly().ok()?;
    Some(key)
}

/// Who runs a DVM, as far as the events show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorClaim {
    /// The DVM names this operator and the operator lists the DVM.
    Confirmed(PublicKey),
    /// Not confirmed: whom the DVM claims, if anyone, and what is missing.
    Unconfirmed {
        claimed: Option<PublicKey>,
        reason: UnconfirmedReason,
    },
}

impl OperatorClaim {
    /// The operator, if confirmed.
    pub fn confirmed(&self) -> Option<PublicKey> {
        match self {
            OperatorClaim::Confirmed(operator) => Some(*operator),
            OperatorClaim::Unconfirmed { .. } => None,
        }
    }

    /// Whom the DVM's announcement names, confirmed or not.
    pub fn claimed(&self) -> Option<PublicKey> {
        match self {
            OperatorClaim::Confirmed(operator) => Some(*operator),
            OperatorClaim::Unconfirmed { claimed, .. } => *claimed,
        }
    }
}

/// Why a DVM's operator is not confirmed. The messages complete "its operator is not
/// confirmed: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnconfirmedReason {
    #[error("the DVM has no valid announcement (kind 31990)")]
    NoAnnouncement,
    #[error("the DVM's newest announcement names no operator")]
    NoOperatorNamed,
    #[error("the operator has no list of its DVMs (kind 30000, d {LIST_IDENTIFIER:?})")]
    NoList,
    #[error("the operator's newest list (created_at {listed_at}) does not name the DVM")]
    NotListed { listed_at: u64 },
    #[error("the operator's newest list is invalid: {0}")]
    MalformedList(OperatorListError),
}

/// Query 1: the announcements of `dvms` (kind 31990, by author).
pub fn announcement_filter(dvms: impl IntoIterator<Item = PublicKey>) -> Filter {
    Filter::new().kind(HANDLER_INFORMATION).authors(dvms)
}

/// Query 2: the lists of `operators` (kind 30000, `d` = `quorum-ci-dvms`, by author).
pub fn list_filter(operators: impl IntoIterator<Item = PublicKey>) -> Filter {
    Filter::new()
        .kind(OPERATOR_LIST)
        .authors(operators)
        .custom_tag(SingleLetterTag::lowercase(Alphabet::D), LIST_IDENTIFIER)
}

/// Which sorts first among events of one author: newest `created_at`, then lowest id (NIP-01's
/// rule for replaceable events).
fn newer(a: &Event, b: &Event) -> bool {
    (a.created_at, std::cmp::Reverse(a.id)) > (b.created_at, std::cmp::Reverse(b.id))
}

/// Each of `dvms`' newest valid announcement in `events`: signed by the DVM (id and signature
/// verify) and parsing as a Quorum CI announcement. Other kinds, authors, foreign 31990s and
/// forgeries are skipped.
pub fn newest_announcements<'a>(
    dvms: &[PublicKey],
    events: &'a [Event],
) -> BTreeMap<PublicKey, (&'a Event, Announcement)> {
    let wanted: BTreeSet<&PublicKey> = dvms.iter().collect();
    let mut newest: BTreeMap<PublicKey, (&Event, Announcement)> = BTreeMap::new();
    for event in events {
        if event.kind != HANDLER_INFORMATION || !wanted.contains(&event.pubkey) {
            continue;
        }
        if newest
            .get(&event.pubkey)
            .is_some_and(|(current, _)| !newer(event, current))
        {
            continue;
        }
        if event.verify().is_err() {
            continue;
        }
        if let Ok(announcement) = Announcement::from_event(event) {
            newest.insert(event.pubkey, (event, announcement));
        }
    }
    newest
}

/// The operators `dvms`' newest announcements name: the authors for [`list_filter`].
pub fn claimed_operators(dvms: &[PublicKey], events: &[Event]) -> BTreeSet<PublicKey> {
    newest_announcements(dvms, events)
        .into_values()
        .filter_map(|(_, announcement)| announcement.operator)
        .collect()
}

/// An operator's newest list event, and what parsing it gave.
pub type NewestList<'a> = (&'a Event, Result<OperatorList, OperatorListError>);

/// `operator`'s newest list in `events`, among the kind 30000 events with `d` =
/// `quorum-ci-dvms` whose id and signature verify, and whether it parses. A newest list that
/// does not parse is not skipped for an older one: that would bring back a list the operator
/// replaced.
pub fn newest_list<'a>(operator: &PublicKey, events: &'a [Event]) -> Option<NewestList<'a>> {
    events
        .iter()
        .filter(|e| e.kind == OPERATOR_LIST && e.pubkey == *operator)
        .filter(|e| {
            crate::tags::tags_named(e, "d")
                .any(|d| d.get(1).map(String::as_str) == Some(LIST_IDENTIFIER))
        })
        .filter(|e| e.verify().is_ok())
        .fold(None, |best: Option<&Event>, e| match best {
            Some(b) if !newer(e, b) => Some(b),
            _ => Some(e),
        })
        .map(|e| (e, OperatorList::from_event(e)))
}

/// Each DVM's operator, confirmed only when the DVM's newest valid announcement names it and
/// its newest valid list names the DVM. `events` may mix anything (announcements, lists, other
/// kinds, other authors, forgeries): only what verifies and parses counts, and a list counts
/// only for its author. Every DVM of `dvms` gets an entry.
pub fn confirmed_operators(
    dvms: &[PublicKey],
    events: &[Event],
) -> BTreeMap<PublicKey, OperatorClaim> {
    let announcements = newest_announcements(dvms, events);
    let mut lists: BTreeMap<PublicKey, Option<NewestList>> = BTreeMap::new();
    dvms.iter()
        .map(|dvm| {
            let claim = match announcements.get(dvm) {
                None => OperatorClaim::Unconfirmed {
                    claimed: None,
                    reason: UnconfirmedReason::NoAnnouncement,
                },
                Some((_, Announcement { operator: None, .. })) => OperatorClaim::Unconfirmed {
                    claimed: None,
                    reason: UnconfirmedReason::NoOperatorNamed,
                },
                Some((
                    _,
                    Announcement {
                        operator: Some(operator),
                        ..
                    },
                )) => {
                    let list = lists
                        .entry(*operator)
                        .or_insert_with(|| newest_list(operator, events));
                    let unconfirmed = |reason| OperatorClaim::Unconfirmed {
                        claimed: Some(*operator),
                        reason,
                    };
                    match list {
                        None => unconfirmed(UnconfirmedReason::NoList),
                        Some((_, Err(err))) => {
                            unconfirmed(UnconfirmedReason::MalformedList(err.clone()))
                        }
                        Some((_, Ok(list))) if list.dvms.contains(dvm) => {
                            OperatorClaim::Confirmed(*operator)
                        }
                        Some((event, Ok(_))) => unconfirmed(UnconfirmedReason::NotListed {
                            listed_at: event.created_at.as_secs(),
                        }),
                    }
                }
            };
            (*dvm, claim)
        })
        .collect()
}

/// The distinct confirmed operators among `claims` (pass the claims of the members that
/// count, e.g. those that agreed); unconfirmed members add none.
pub fn distinct_confirmed<'a>(
    claims: impl IntoIterator<Item = &'a OperatorClaim>,
) -> BTreeSet<PublicKey> {
    claims
        .into_iter()
        .filter_map(OperatorClaim::confirmed)
        .collect()
}

/// The fewest operators that together run `threshold` of the members whose claims are given:
/// how many parties must collude to sign. It assumes the worst of unconfirmed members, that
/// they are all run by the operator who runs the most members (they may be anyone's). So it is
/// `threshold` only when every `threshold` members are run by that many distinct confirmed
/// operators; a quorum's promise of `t` unrelated operators needs it to be at least `t`. When
/// the members are fewer than `threshold`, it is the number of parties there are.
pub fn fewest_signing_operators<'a>(
    claims: impl IntoIterator<Item = &'a OperatorClaim>,
    threshold: usize,
) -> usize {
    let mut per_operator: BTreeMap<PublicKey, usize> = BTreeMap::new();
    let mut unconfirmed = 0;
    for claim in claims {
        match claim.confirmed() {
            Some(operator) => *per_operator.entry(operator).or_default() += 1,
            None => unconfirmed += 1,
        }
    }
    let mut sizes: Vec<usize> = per_operator.into_values().collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    match sizes.first_mut() {
        Some(largest) => *largest += unconfirmed,
        None if unconfirmed > 0 => sizes.push(unconfirmed),
        None => {}
    }
    let mut held = 0;
    for (parties, size) in sizes.iter().enumerate() {
        if held >= threshold {
            return parties;
        }
        held += size;
    }
    sizes.len()
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, TagKind, Timestamp};

    use super::*;
    use crate::nip89::{Capabilities, JobLimits, Offer, Price};

    const T0: u64 = 1_800_000_000;

    fn announce(dvm: &Keys, operator: Option<&Keys>, at: u64) -> Event {
        Announcement {
            identifier: "quorum-runner".into(),
            name: "runner".into(),
            about: String::new(),
            kinds: vec![Kind::from_u16(5702)],
            offer: Offer {
                capabilities: Capabilities {
                    arch: "x86_64".into(),
                    os: "linux".into(),
                    sandbox: "bubblewrap".into(),
                    toolchains: vec![],
                    network: false,
                    images: false,
                    require_image: false,
                },
                price: Price::default(),
                limits: JobLimits {
                    concurrency: 1,
                    max_timeout_secs: 60,
                    max_request_bytes: 1024,
                },
            },
            operator: operator.map(Keys::public_key),
        }
        .to_event_builder()
        .custom_created_at(Timestamp::from(T0 + at))
        .sign_with_keys(dvm)
        .unwrap()
    }

    fn list(operator: &Keys, dvms: &[&Keys], at: u64) -> Event {
        OperatorList::new(dvms.iter().map(|k| k.public_key()))
            .to_event_builder()
            .custom_created_at(Timestamp::from(T0 + at))
            .sign_with_keys(operator)
            .unwrap()
    }

    fn keys(n: usize) -> Vec<Keys> {
        (0..n).map(|_| Keys::generate()).collect()
    }

    /// `event` with its content changed after signing: the id no longer matches.
    fn tampered(event: &Event) -> Event {
        let mut json = serde_json::to_value(event).unwrap();
        json["created_at"] = (event.created_at.as_secs() + 100).into();
        serde_json::from_value(json).unwrap()
    }

    /// `event`'s content signed by `forger` but claiming `author`'s key.
    fn forged(event: &Event, author: &PublicKey) -> Event {
        let mut json = serde_json::to_value(event).unwrap();
        json["pubkey"] = author.to_hex().into();
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn list_round_trips_and_parses_strictly() {
        let operator = Keys::generate();
        let dvms = keys(3);
        let event = list(&operator, &dvms.iter().collect::<Vec<_>>(), 0);
        let parsed = OperatorList::from_event(&event).unwrap();
        assert_eq!(parsed, OperatorList::new(dvms.iter().map(Keys::public_key)));
        assert_eq!(event.kind.as_u16(), 30000);
        assert_eq!(event.tags.identifier(), Some(LIST_IDENTIFIER));

        let with_tags = |tags: Vec<Vec<String>>| {
            EventBuilder::new(OPERATOR_LIST, "")
                .tags(tags.into_iter().map(|t| Tag::parse(t).unwrap()))
                .sign_with_keys(&operator)
                .unwrap()
        };
        let d = || vec!["d".to_string(), LIST_IDENTIFIER.into()];
        let p = |v: &str| vec!["p".to_string(), v.into()];
        let hex = dvms[0].public_key().to_hex();
        let err = |tags| OperatorList::from_event(&with_tags(tags)).unwrap_err();
        assert!(matches!(err(vec![p(&hex)]), OperatorListError::Identifier(m) if m == "missing"));
        assert!(matches!(
            err(vec![vec!["d".into(), "follows".into()], p(&hex)]),
            OperatorListError::Identifier(m) if m.contains("follows")
        ));
        assert!(matches!(
            err(vec![d(), d()]),
            OperatorListError::Identifier(_)
        ));
        assert!(matches!(
            err(vec![d(), p(&hex.to_uppercase())]),
            OperatorListError::Dvm(m) if m.contains("lowercase")
        ));
        assert!(matches!(
            err(vec![d(), p("abc")]),
            OperatorListError::Dvm(_)
        ));
        assert!(matches!(
            err(vec![d(), p(&hex), p(&hex)]),
            OperatorListError::Dvm(m) if m.contains("twice")
        ));
        let wrong_kind = EventBuilder::new(Kind::from_u16(3), "")
            .sign_with_keys(&operator)
            .unwrap();
        assert_eq!(
            OperatorList::from_event(&wrong_kind),
            Err(OperatorListError::WrongKind(3))
        );
        // An empty list is valid: the operator runs no DVM (any more).
        assert_eq!(
            OperatorList::from_event(&with_tags(vec![d()])).unwrap(),
            OperatorList::default()
        );
        // Other tags are ignored; a relay hint and petname on `p` are fine.
        let mut hinted = p(&hex);
        hinted.extend(["wss://relay.example".into(), "runner-1".into()]);
        let parsed = OperatorList::from_event(&with_tags(vec![
            d(),
            hinted,
            vec!["description".into(), "my build farm".into()],
        ]))
        .unwrap();
        assert_eq!(parsed.dvms.len(), 1);
    }

    #[test]
    fn a_dvm_is_its_operators_only_when_both_say_so() {
        let dvms = keys(4);
        let (alice, bob) = (Keys::generate(), Keys::generate());
        let members: Vec<PublicKey> = dvms.iter().map(Keys::public_key).collect();
        let events = vec![
            // Both agree.
            announce(&dvms[0], Some(&alice), 0),
            // The DVM claims Alice, who does not list it.
            announce(&dvms[1], Some(&alice), 0),
            // Bob lists a DVM that names nobody.
            announce(&dvms[2], None, 0),
            // dvms[3] never announced; Bob lists it.
            list(&alice, &[&dvms[0]], 0),
            list(&bob, &[&dvms[2], &dvms[3]], 0),
        ];
        let claims = confirmed_operators(&members, &events);
        assert_eq!(claims.len(), 4);
        assert_eq!(
            claims[&members[0]],
            OperatorClaim::Confirmed(alice.public_key())
        );
        assert_eq!(
            claims[&members[1]],
            OperatorClaim::Unconfirmed {
                claimed: Some(alice.public_key()),
                reason: UnconfirmedReason::NotListed { listed_at: T0 },
            }
        );
        assert_eq!(
            claims[&members[2]],
            OperatorClaim::Unconfirmed {
                claimed: None,
                reason: UnconfirmedReason::NoOperatorNamed,
            }
        );
        assert_eq!(
            claims[&members[3]],
            OperatorClaim::Unconfirmed {
                claimed: None,
                reason: UnconfirmedReason::NoAnnouncement,
            }
        );
        assert_eq!(
            distinct_confirmed(claims.values()),
            [alice.public_key()].into()
        );
        assert_eq!(
            claimed_operators(&members, &events),
            [alice.public_key()].into()
        );
    }

    #[test]
    fn one_operator_of_three_dvms_is_one_operator() {
        let dvms = keys(3);
        let operator = Keys::generate();
        let members: Vec<PublicKey> = dvms.iter().map(Keys::public_key).collect();
        let mut events: Vec<Event> = dvms
            .iter()
            .map(|dvm| announce(dvm, Some(&operator), 0))
            .collect();
        events.push(list(&operator, &dvms.iter().collect::<Vec<_>>(), 0));
        let claims = confirmed_operators(&members, &events);
        assert!(
            claims
                .values()
                .all(|c| c.confirmed() == Some(operator.public_key()))
        );
        assert_eq!(distinct_confirmed(claims.values()).len(), 1);

        // Three operators, each confirming its own DVM: three.
        let operators = keys(3);
        let mut events = Vec::new();
        for (dvm, operator) in dvms.iter().zip(&operators) {
            events.push(announce(dvm, Some(operator), 0));
            events.push(list(operator, &[dvm], 0));
        }
        let claims = confirmed_operators(&members, &events);
        assert_eq!(distinct_confirmed(claims.values()).len(), 3);
        // Counting only some members (those that agreed, say).
        assert_eq!(
            distinct_confirmed(members[..2].iter().map(|m| &claims[m])).len(),
            2
        );
    }

    #[test]
    fn a_strangers_list_confirms_nothing() {
        let dvm = Keys::generate();
        let (operator, stranger) = (Keys::generate(), Keys::generate());
        let members = [dvm.public_key()];
        // The DVM names its operator, who never listed it; a stranger's list names the DVM.
        let events = vec![
            announce(&dvm, Some(&operator), 0),
            list(&stranger, &[&dvm], 5),
        ];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: Some(operator.public_key()),
                reason: UnconfirmedReason::NoList,
            }
        );
        // Nor when the DVM names no one: the stranger does not become its operator.
        let events = vec![announce(&dvm, None, 0), list(&stranger, &[&dvm], 5)];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()].confirmed(),
            None
        );
        // A list under another `d` (an ordinary follow set) is not the operator's DVM list.
        let other_set = EventBuilder::new(OPERATOR_LIST, "")
            .tags([
                Tag::identifier("friends"),
                Tag::public_key(dvm.public_key()),
            ])
            .sign_with_keys(&operator)
            .unwrap();
        let events = vec![announce(&dvm, Some(&operator), 0), other_set];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: Some(operator.public_key()),
                reason: UnconfirmedReason::NoList,
            }
        );
    }

    #[test]
    fn only_the_newest_list_and_announcement_count() {
        let dvm = Keys::generate();
        let (operator, other) = (Keys::generate(), Keys::generate());
        let members = [dvm.public_key()];
        // A stale list named the DVM; the operator's newer one no longer does.
        let events = vec![
            announce(&dvm, Some(&operator), 0),
            list(&operator, &[&dvm], 10),
            list(&operator, &[], 20),
        ];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: Some(operator.public_key()),
                reason: UnconfirmedReason::NotListed { listed_at: T0 + 20 },
            }
        );
        // The order of the events does not matter.
        let reversed: Vec<Event> = events.iter().rev().cloned().collect();
        assert_eq!(
            confirmed_operators(&members, &reversed),
            confirmed_operators(&members, &events)
        );
        // The DVM moved to another operator: its old announcement no longer counts.
        let events = vec![
            announce(&dvm, Some(&operator), 0),
            announce(&dvm, Some(&other), 30),
            list(&operator, &[&dvm], 10),
        ];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: Some(other.public_key()),
                reason: UnconfirmedReason::NoList,
            }
        );
        // A newest list that does not parse is not skipped for the older one.
        let broken = EventBuilder::new(OPERATOR_LIST, "")
            .tags([
                Tag::identifier(LIST_IDENTIFIER),
                Tag::custom(TagKind::p(), ["not-a-key"]),
            ])
            .custom_created_at(Timestamp::from(T0 + 40))
            .sign_with_keys(&operator)
            .unwrap();
        let events = vec![
            announce(&dvm, Some(&operator), 0),
            list(&operator, &[&dvm], 10),
            broken,
        ];
        assert!(matches!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                reason: UnconfirmedReason::MalformedList(OperatorListError::Dvm(_)),
                ..
            }
        ));
    }

    #[test]
    fn forged_events_count_for_nobody() {
        let dvm = Keys::generate();
        let (operator, forger) = (Keys::generate(), Keys::generate());
        let members = [dvm.public_key()];
        let genuine = [
            announce(&dvm, Some(&operator), 0),
            list(&operator, &[&dvm], 0),
        ];
        assert_eq!(
            confirmed_operators(&members, &genuine)[&dvm.public_key()].confirmed(),
            Some(operator.public_key())
        );
        // The operator's list signed by someone else: no list.
        let forged_list = forged(&list(&forger, &[&dvm], 0), &operator.public_key());
        let events = [genuine[0].clone(), forged_list];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: Some(operator.public_key()),
                reason: UnconfirmedReason::NoList,
            }
        );
        // The DVM's announcement signed by someone else: no announcement.
        let forged_announcement = forged(&announce(&forger, Some(&operator), 0), &dvm.public_key());
        let events = [forged_announcement, genuine[1].clone()];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()],
            OperatorClaim::Unconfirmed {
                claimed: None,
                reason: UnconfirmedReason::NoAnnouncement,
            }
        );
        // A newer copy of a genuine event with its id broken: ignored, the genuine one counts;
        // a forged newer list does not hide the genuine one.
        let events = [
            genuine[0].clone(),
            genuine[1].clone(),
            tampered(&list(&operator, &[], 0)),
            forged(&list(&forger, &[], 50), &operator.public_key()),
        ];
        assert_eq!(
            confirmed_operators(&members, &events)[&dvm.public_key()].confirmed(),
            Some(operator.public_key())
        );
    }

    #[test]
    fn fewest_signing_operators_assumes_the_worst_of_the_unconfirmed() {
        let [a, b, c, d, e] = [1u8, 2, 3, 4, 5].map(|n| {
            OperatorClaim::Confirmed(
                Keys::parse(&format!("{n:02x}").repeat(32))
                    .unwrap()
                    .public_key(),
            )
        });
        let unknown = OperatorClaim::Unconfirmed {
            claimed: None,
            reason: UnconfirmedReason::NoAnnouncement,
        };
        let fewest =
            |claims: &[&OperatorClaim], t| fewest_signing_operators(claims.iter().copied(), t);
        // Three operators for three members: any two members are two operators.
        assert_eq!(fewest(&[&a, &b, &c], 2), 2);
        // One operator runs all three.
        assert_eq!(fewest(&[&a, &a, &a], 2), 1);
        // Three distinct operators among five members, but A runs three: A signs alone.
        assert_eq!(fewest(&[&a, &a, &a, &b, &c], 3), 1);
        // Four operators among five members, A runs two: A and one other sign 3 of 5.
        assert_eq!(fewest(&[&a, &a, &b, &c, &d], 3), 2);
        assert_eq!(fewest(&[&a, &b, &c, &d, &e], 3), 3);
        // An unconfirmed member may be A's.
        assert_eq!(fewest(&[&a, &b, &unknown], 2), 1);
        assert_eq!(fewest(&[&unknown, &unknown, &unknown], 2), 1);
        assert_eq!(fewest(&[&a, &b, &c, &unknown], 2), 1);
        assert_eq!(fewest(&[&a, &b, &c, &unknown], 3), 2);
        // Too few members to sign at all: all the parties there are.
        assert_eq!(fewest(&[&a, &b], 3), 2);
        assert_eq!(fewest(&[], 1), 0);
        assert_eq!(fewest(&[&a], 0), 0);
    }

    #[test]
    fn filters_ask_for_what_confirmation_reads() {
        let (dvm, operator) = (Keys::generate(), Keys::generate());
        let announcement = announce(&dvm, Some(&operator), 0);
        let listed = list(&operator, &[&dvm], 0);
        let first = announcement_filter([dvm.public_key()]);
        let second = list_filter([operator.public_key()]);
        assert!(first.match_event(&announcement, Default::default()));
        assert!(!first.match_event(&listed, Default::default()));
        assert!(second.match_event(&listed, Default::default()));
        assert!(!second.match_event(&announcement, Default::default()));
    }
}
