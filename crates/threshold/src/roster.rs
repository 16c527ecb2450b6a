//! Who is in a quorum: the members' Nostr public keys, their fixed FROST indices, the threshold.
//!
//! # The index rule
//!
//! A FROST share is a point of a polynomial at `x = identifier`, so a member's identifier can
//! never change while its share is in use. The rule is:
//!
//! 1. At creation ([`Roster::new`]) members are sorted by ascending x-only pubkey hex
//!    (duplicates dropped) and numbered `1..=n` in that order; [`member_index`] computes the same
//!    number from a plain list of pubkeys.
//! 2. From then on the roster stores explicit `(index, pubkey)` pairs ([`Member`]) and never
//!    renumbers. A member that replaces another ([`Roster::replace`], used by
//!    [`crate::repair`]) takes over the leaving member's index, so after a replacement the
//!    members are no longer necessarily in pubkey order: always ask the roster
//!    ([`Roster::index_of`]), not [`member_index`], once a roster exists.
//!
//! Limits: `1 <= threshold <= n` and `n <= 255`. FROST key generation further needs
//! `threshold >= 2` (a 1-of-n "quorum" is just n copies of one key); see [`crate::dealer`] and
//! [`crate::dkg`].

use std::collections::BTreeSet;

use nostr::PublicKey;
use serde::{Deserialize, Serialize};

use crate::frost::Identifier;

/// Most members a quorum may have.
pub const MAX_MEMBERS: usize = 255;

/// The 1-based FROST index of `member` in a *new* quorum of `members`: its position when the
/// distinct members are sorted by ascending x-only pubkey hex. `None` if it is not a member.
///
/// This is the creation-time rule only; once a roster exists (and in particular after a member
/// was replaced) use [`Roster::index_of`].
pub fn member_index(members: &[PublicKey], member: &PublicKey) -> Option<u16> {
    let sorted: BTreeSet<[u8; 32]> = members.iter().map(|pk| pk.to_bytes()).collect();
    let target = member.to_bytes();
    sorted
        .iter()
        .position(|b| *b == target)
        .and_then(|pos| u16::try_from(pos + 1).ok())
}

/// One member of a roster: its fixed FROST index and its DVM's Nostr public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// FROST identifier (1-based, never 0, never reused for another member of the quorum).
    pub index: u16,
    /// The member DVM's Nostr public key.
    pub pubkey: PublicKey,
}

/// A validated roster: threshold plus members with fixed indices, kept sorted by index.
///
/// Serialized as `{"threshold": t, "members": [{"index": i, "pubkey": "<hex>"}, ...]}`;
/// deserialization re-validates everything.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RosterRepr", into = "RosterRepr")]
pub struct Roster {
    threshold: u16,
    members: Vec<Member>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterRepr {
    threshold: u16,
    members: Vec<Member>,
}

impl TryFrom<RosterRepr> for Roster {
    type Error = RosterError;
    fn try_from(r: RosterRepr) -> Result<Self, RosterError> {
        Roster::from_members(r.threshold, r.members)
    }
}

impl From<Roster> for RosterRepr {
    fn from(r: Roster) -> Self {
        RosterRepr {
            threshold: r.threshold,
            members: r.members,
        }
    }
}

/// Why a roster is invalid, or why a roster operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// No members at all.
    #[error("a quorum needs at least one member")]
    NoMembers,
    /// More than [`MAX_MEMBERS`].
    #[error("a quorum has at most {MAX_MEMBERS} members, {members} given")]
    TooManyMembers {
        /// Distinct members given.
        members: usize,
    },
    /// Threshold 0.
    #[error("threshold must be at least 1")]
    ZeroThreshold,
    /// Threshold above the number of members.
    #[error("threshold {threshold} is larger than the {members} members")]
    ThresholdAboveMembers {
        /// The threshold given.
        threshold: u16,
        /// Distinct members.
        members: usize,
    },
    /// A member with index 0 (FROST identifiers are non-zero).
    #[error("member {pubkey} has index 0; indices start at 1")]
    ZeroIndex {
        /// The member.
        pubkey: PublicKey,
    },
    /// Two members with one index.
    #[error("index {index} is given to both {first} and {second}")]
    DuplicateIndex {
        /// The index.
        index: u16,
        /// One member holding it.
        first: PublicKey,
        /// The other.
        second: PublicKey,
    },
    /// One pubkey listed twice with explicit indices.
    #[error("member {pubkey} is listed twice")]
    DuplicateMember {
        /// The member.
        pubkey: PublicKey,
    },
    /// The pubkey is not a member.
    #[error("{pubkey} is not a member of the quorum")]
    NotAMember {
        /// The pubkey.
        pubkey: PublicKey,
    },
    /// The pubkey is already a member (so it cannot join in someone else's place).
    #[error("{pubkey} is already a member of the quorum")]
    AlreadyAMember {
        /// The pubkey.
        pubkey: PublicKey,
    },
}

impl Roster {
    /// A new quorum's roster: members sorted by ascending x-only pubkey hex, duplicates dropped,
    /// indices `1..=n` in that order.
    pub fn new(
        threshold: u16,
        members: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Self, RosterError> {
        let sorted: BTreeSet<[u8; 32]> = members.into_iter().map(|pk| pk.to_bytes()).collect();
        if sorted.len() > MAX_MEMBERS {
            return Err(RosterError::TooManyMembers {
                members: sorted.len(),
            });
        }
        let members = sorted
            .into_iter()
            .enumerate()
            .map(|(pos, bytes)| Member {
                index: pos as u16 + 1,
                pubkey: PublicKey::from_byte_array(bytes),
            })
            .collect();
        Self::from_members(threshold, members)
    }

    /// A roster with explicit indices (as stored, or after replacements). Validates that indices
    /// are non-zero and distinct, pubkeys distinct, `1 <= threshold <= n <= 255`.
    pub fn from_members(threshold: u16, mut members: Vec<Member>) -> Result<Self, RosterError> {
        members.sort();
        for pair in members.windows(2) {
            if pair[0].index == pair[1].index {
                return Err(RosterError::DuplicateIndex {
                    index: pair[0].index,
                    first: pair[0].pubkey,
                    second: pair[1].pubkey,
                });
            }
        }
        let mut seen = BTreeSet::new();
        for m in &members {
            if m.index == 0 {
                return Err(RosterError::ZeroIndex { pubkey: m.pubkey });
            }
            if !seen.insert(m.pubkey.to_bytes()) {
                return Err(RosterError::DuplicateMember { pubkey: m.pubkey });
            }
        }
        if members.is_empty() {
            return Err(RosterError::NoMembers);
        }
        if members.len() > MAX_MEMBERS {
            return Err(RosterError::TooManyMembers {
                members: members.len(),
            });
        }
        if threshold == 0 {
            return Err(RosterError::ZeroThreshold);
        }
        if usize::from(threshold) > members.len() {
            return Err(RosterError::ThresholdAboveMembers {
                threshold,
                members: members.len(),
            });
        }
        Ok(Roster { threshold, members })
    }

    /// Signatures need this many members.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Number of members (`n`).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a roster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members, sorted by index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The members' pubkeys, in index order.
    pub fn pubkeys(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.members.iter().map(|m| m.pubkey)
    }

    /// Whether `pubkey` is a member.
    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.index_of(pubkey).is_some()
    }

    /// The fixed FROST index of `pubkey`, if it is a member.
    pub fn index_of(&self, pubkey: &PublicKey) -> Option<u16> {
        self.members
            .iter()
            .find(|m| m.pubkey == *pubkey)
            .map(|m| m.index)
    }

    /// The member holding `index`.
    pub fn pubkey_at(&self, index: u16) -> Option<PublicKey> {
        self.members
            .iter()
            .find(|m| m.index == index)
            .map(|m| m.pubkey)
    }

    /// The FROST identifier of `pubkey`, if it is a member.
    pub fn identifier_of(&self, pubkey: &PublicKey) -> Option<Identifier> {
        self.index_of(pubkey).map(identifier)
    }

    /// The member whose FROST identifier is `id` (used to name culprits frost reports).
    pub fn pubkey_of(&self, id: &Identifier) -> Option<PublicKey> {
        self.members
            .iter()
            .find(|m| identifier(m.index) == *id)
            .map(|m| m.pubkey)
    }

    /// The roster after `joining` takes over `leaving`'s index (same threshold, same indices).
    pub fn replace(&self, leaving: &PublicKey, joining: &PublicKey) -> Result<Roster, RosterError> {
        if !self.contains(leaving) {
            return Err(RosterError::NotAMember { pubkey: *leaving });
        }
        if self.contains(joining) {
            return Err(RosterError::AlreadyAMember { pubkey: *joining });
        }
        let members = self
            .members
            .iter()
            .map(|m| Member {
                index: m.index,
                pubkey: if m.pubkey == *leaving {
                    *joining
                } else {
                    m.pubkey
                },
            })
            .collect();
        Roster::from_members(self.threshold, members)
    }
}

/// The FROST identifier of a non-zero index.
pub(crate) fn identifier(index: u16) -> Identifier {
    Identifier::try_from(index).expect("roster indices are non-zero")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::Keys;

    fn keys(n: usize) -> Vec<PublicKey> {
        (0..n).map(|_| Keys::generate().public_key()).collect()
    }

    #[test]
    fn new_sorts_by_hex_and_numbers_from_one() {
        let pks = keys(7);
        let roster = Roster::new(4, pks.iter().rev().copied()).unwrap();
        let mut hexes: Vec<String> = pks.iter().map(|p| p.to_hex()).collect();
        hexes.sort();
        for (i, m) in roster.members().iter().enumerate() {
            assert_eq!(m.index as usize, i + 1);
            assert_eq!(m.pubkey.to_hex(), hexes[i]);
            assert_eq!(member_index(&pks, &m.pubkey), Some(m.index));
        }
        assert_eq!(member_index(&pks, &Keys::generate().public_key()), None);
    }

    #[test]
    fn new_drops_duplicates() {
        let pks = keys(3);
        let roster = Roster::new(2, [pks[0], pks[1], pks[0], pks[2]]).unwrap();
        assert_eq!(roster.len(), 3);
    }

    #[test]
    fn validation_names_the_problem() {
        let pks = keys(3);
        assert_eq!(Roster::new(0, pks.clone()), Err(RosterError::ZeroThreshold));
        assert_eq!(
            Roster::new(4, pks.clone()),
            Err(RosterError::ThresholdAboveMembers {
                threshold: 4,
                members: 3
            })
        );
        assert_eq!(Roster::new(1, []), Err(RosterError::NoMembers));
        assert_eq!(
            Roster::new(2, keys(256)),
            Err(RosterError::TooManyMembers { members: 256 })
        );
        assert!(Roster::new(2, keys(255)).is_ok());
        let dup_index = vec![
            Member {
                index: 1,
                pubkey: pks[0],
            },
            Member {
                index: 1,
                pubkey: pks[1],
            },
        ];
        assert!(matches!(
            Roster::from_members(1, dup_index),
            Err(RosterError::DuplicateIndex { index: 1, .. })
        ));
        let zero = vec![Member {
            index: 0,
            pubkey: pks[0],
        }];
        assert_eq!(
            Roster::from_members(1, zero),
            Err(RosterError::ZeroIndex { pubkey: pks[0] })
        );
        let dup_member = vec![
            Member {
                index: 1,
                pubkey: pks[0],
            },
            Member {
                index: 2,
                pubkey: pks[0],
            },
        ];
        assert_eq!(
            Roster::from_members(1, dup_member),
            Err(RosterError::DuplicateMember { pubkey: pks[0] })
        );
    }

    #[test]
    fn replace_keeps_the_index() {
        let pks = keys(3);
        let roster = Roster::new(2, pks.clone()).unwrap();
        let leaving = roster.members()[1];
        let joining = Keys::generate().public_key();
        let replaced = roster.replace(&leaving.pubkey, &joining).unwrap();
        assert_eq!(replaced.index_of(&joining), Some(leaving.index));
        assert_eq!(replaced.index_of(&leaving.pubkey), None);
        assert_eq!(replaced.threshold(), 2);
        assert_eq!(
            roster.replace(&joining, &pks[0]),
            Err(RosterError::NotAMember { pubkey: joining })
        );
        assert_eq!(
            roster.replace(&pks[0], &pks[1]),
            Err(RosterError::AlreadyAMember { pubkey: pks[1] })
        );
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let roster = Roster::new(2, keys(3)).unwrap();
        let json = serde_json::to_string(&roster).unwrap();
        let back: Roster = serde_json::from_str(&json).unwrap();
        assert_eq!(back, roster);
        let bad = json.replace("\"threshold\":2", "\"threshold\":9");
        let err = serde_json::from_str::<Roster>(&bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("threshold 9 is larger than the 3 members"),
            "{err}"
        );
    }
}
