//! What a maintainer publishes about whom it trusts, as selection reads it (docs/protocol.md
//! §17): a NIP-51 set of trusted DVM or operator keys (kind 30000, `d` chosen by the maintainer,
//! `quorum-ci-trusted` unless told otherwise), its NIP-02 follow list (kind 3), and its NIP-85
//! provider declarations (kind 10040, [`crate::nip85`]).
//!
//! Pure: callers fetch the events and pass them in. Every reader takes an author's *newest*
//! event that verifies (replaceable and addressable events: newest `created_at`, then lowest
//! id), so a list the author replaced never counts again.

use std::collections::{BTreeMap, BTreeSet};

use nostr::{Alphabet, Event, EventBuilder, Filter, Kind, PublicKey, SingleLetterTag, Tag};

use crate::operator::parse_hex_pubkey;

/// NIP-51 follow set (the same kind as an operator's list of DVMs, another `d`).
pub const TRUST_LIST: Kind = Kind::Custom(30000);
/// NIP-02 follow list.
pub const FOLLOW_LIST: Kind = Kind::Custom(3);
/// The `d` of a maintainer's set of trusted DVM or operator keys when the policy names none.
pub const DEFAULT_TRUST_LIST: &str = "quorum-ci-trusted";

/// Which sorts first among events of one author: newest `created_at`, then lowest id.
fn newer(a: &Event, b: &Event) -> bool {
    (a.created_at, std::cmp::Reverse(a.id)) > (b.created_at, std::cmp::Reverse(b.id))
}

/// `author`'s newest event of `kind` in `events` that verifies and passes `keep`.
pub(crate) fn newest_of<'a>(
    author: &PublicKey,
    kind: Kind,
    events: &'a [Event],
    keep: impl Fn(&Event) -> bool,
) -> Option<&'a Event> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.pubkey == *author && keep(e))
        .filter(|e| e.verify().is_ok())
        .fold(None, |best: Option<&Event>, e| match best {
            Some(b) if !newer(e, b) => Some(b),
            _ => Some(e),
        })
}

/// The keys of the `p` tags of `event` that are well-formed (64 lowercase hex on the curve).
/// Malformed entries are skipped, not fatal: a follow list is written by many clients, and one
/// bad entry should not hide the rest.
fn p_keys(event: &Event) -> BTreeSet<PublicKey> {
    crate::tags::tags_named(event, "p")
        .filter_map(|tag| tag.get(1).and_then(|hex| parse_hex_pubkey(hex)))
        .collect()
}

/// A maintainer's set of trusted DVM or operator keys (NIP-51 kind 30000).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustList {
    pub identifier: String,
    pub keys: BTreeSet<PublicKey>,
}

impl TrustList {
    pub fn new(identifier: impl Into<String>, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        TrustList {
            identifier: identifier.into(),
            keys: keys.into_iter().collect(),
        }
    }

    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        tags.extend(self.keys.iter().map(|key| Tag::public_key(*key)));
        EventBuilder::new(TRUST_LIST, "").tags(tags)
    }

    /// `author`'s newest list with `d` = `identifier` in `events`; `None` when there is none.
    pub fn newest(author: &PublicKey, identifier: &str, events: &[Event]) -> Option<TrustList> {
        let event = newest_of(author, TRUST_LIST, events, |e| {
            crate::tags::tags_named(e, "d")
                .any(|d| d.get(1).map(String::as_str) == Some(identifier))
        })?;
        Some(TrustList {
            identifier: identifier.to_string(),
            keys: p_keys(event),
        })
    }
}

/// The query for `author`'s trust list `identifier`.
pub fn trust_list_filter(author: PublicKey, identifier: &str) -> Filter {
    Filter::new()
        .kind(TRUST_LIST)
        .author(author)
        .custom_tag(SingleLetterTag::lowercase(Alphabet::D), identifier)
}

/// The keys `author`'s newest follow list (kind 3) follows; empty without one.
pub fn follows(author: &PublicKey, events: &[Event]) -> BTreeSet<PublicKey> {
    newest_of(author, FOLLOW_LIST, events, |_| true)
        .map(p_keys)
        .unwrap_or_default()
}

/// A follow list naming `keys` (for tests and tools; clients publish their own).
pub fn follow_list(keys: impl IntoIterator<Item = PublicKey>) -> EventBuilder {
    EventBuilder::new(FOLLOW_LIST, "").tags(keys.into_iter().map(Tag::public_key))
}

/// How many follow hops from `root` reach each key, up to `max_hops`, through the follow lists
/// in `events` (the root itself is at distance 0). The callers fetch hop by hop: the follows of
/// every key at distance `d` before asking for distance `d + 1`.
pub fn follow_distances(
    root: &PublicKey,
    max_hops: u32,
    events: &[Event],
) -> BTreeMap<PublicKey, u32> {
    let mut distance = BTreeMap::from([(*root, 0u32)]);
    let mut frontier = vec![*root];
    for hop in 1..=max_hops {
        let mut next = Vec::new();
        for key in &frontier {
            for followed in follows(key, events) {
                if let std::collections::btree_map::Entry::Vacant(slot) = distance.entry(followed) {
                    slot.insert(hop);
                    next.push(followed);
                }
            }
        }
        frontier = next;
    }
    distance
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Timestamp};

    use super::*;

    fn at(builder: EventBuilder, keys: &Keys, secs: u64) -> Event {
        builder
            .custom_created_at(Timestamp::from(secs))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn the_newest_trust_list_counts_and_others_are_ignored() {
        let maintainer = Keys::generate();
        let [a, b] = [Keys::generate().public_key(), Keys::generate().public_key()];
        let old = at(
            TrustList::new("quorum-ci-trusted", [a]).to_event_builder(),
            &maintainer,
            10,
        );
        let new = at(
            TrustList::new("quorum-ci-trusted", [b]).to_event_builder(),
            &maintainer,
            20,
        );
        let other_d = at(
            TrustList::new("friends", [a]).to_event_builder(),
            &maintainer,
            30,
        );
        // A stranger's list under the maintainer's `d` does not count for the maintainer.
        let stranger = at(
            TrustList::new("quorum-ci-trusted", [a]).to_event_builder(),
            &Keys::generate(),
            40,
        );
        let events = [old, new, other_d, stranger];
        let list =
            TrustList::newest(&maintainer.public_key(), DEFAULT_TRUST_LIST, &events).unwrap();
        assert_eq!(list.keys, BTreeSet::from([b]));
        assert!(TrustList::newest(&maintainer.public_key(), "absent", &events).is_none());
    }

    #[test]
    fn follow_distance_is_the_fewest_hops_and_stops_at_the_limit() {
        let [root, one, two, three] = [(); 4].map(|_| Keys::generate());
        let events = [
            at(follow_list([one.public_key()]), &root, 1),
            at(follow_list([two.public_key(), root.public_key()]), &one, 1),
            at(follow_list([three.public_key()]), &two, 1),
        ];
        let distances = follow_distances(&root.public_key(), 2, &events);
        assert_eq!(distances.get(&root.public_key()), Some(&0));
        assert_eq!(distances.get(&one.public_key()), Some(&1));
        assert_eq!(distances.get(&two.public_key()), Some(&2));
        assert_eq!(distances.get(&three.public_key()), None);
        assert_eq!(
            follow_distances(&root.public_key(), 3, &events).get(&three.public_key()),
            Some(&3)
        );
    }

    #[test]
    fn a_replaced_follow_list_no_longer_counts() {
        let [root, gone, kept] = [(); 3].map(|_| Keys::generate());
        let events = [
            at(follow_list([gone.public_key()]), &root, 1),
            at(follow_list([kept.public_key()]), &root, 2),
        ];
        assert_eq!(
            follows(&root.public_key(), &events),
            BTreeSet::from([kept.public_key()])
        );
    }
}
