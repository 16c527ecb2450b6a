//! The public description of a quorum: roster, quorum Nostr key, frost `PublicKeyPackage`.
//!
//! A [`QuorumGroup`] is what every member (and anyone verifying the quorum's events) holds in
//! common. It is public: it may be published or sent in clear. Its invariants are checked on
//! construction and on deserialization:
//!
//! - `quorum` is the x-only form of `public_key_package.verifying_key()`;
//! - the package's verifying shares are exactly the roster's identifiers;
//! - the package's `min_signers` is the roster's threshold.

use std::fmt;

use nostr::{Event, PublicKey};
use serde::{Deserialize, Serialize};

use crate::frost::keys::PublicKeyPackage;
use crate::hexser;
use crate::roster::{Roster, RosterError, identifier};

/// A quorum's public data. See the module docs for its invariants.
#[derive(Clone, PartialEq, Eq)]
pub struct QuorumGroup {
    roster: Roster,
    quorum: PublicKey,
    public_key_package: PublicKeyPackage,
}

/// Why a group is inconsistent, or why an event is not the quorum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The package's group key could not be encoded (the identity point).
    #[error("the public key package has no usable group key")]
    NoGroupKey,
    /// `quorum` does not match the package's group key.
    #[error("quorum key {stated} does not match the public key package's group key {actual}")]
    QuorumMismatch {
        /// The quorum key stated alongside the package.
        stated: PublicKey,
        /// The x-only group key of the package.
        actual: PublicKey,
    },
    /// A roster member has no verifying share in the package.
    #[error("member {member} (index {index}) has no verifying share in the public key package")]
    MissingVerifyingShare {
        /// The member.
        member: PublicKey,
        /// Its index.
        index: u16,
    },
    /// The package has verifying shares for participants outside the roster.
    #[error(
        "the public key package has {shares} verifying shares for a roster of {members} members"
    )]
    ExtraVerifyingShares {
        /// Verifying shares in the package.
        shares: usize,
        /// Roster members.
        members: usize,
    },
    /// Threshold of the package and of the roster differ.
    #[error("the public key package's threshold {package:?} differs from the roster's {roster}")]
    ThresholdMismatch {
        /// `min_signers` of the package (`None` for pre-3.0 packages).
        package: Option<u16>,
        /// The roster's threshold.
        roster: u16,
    },
    /// The roster change was refused.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// An event is signed by another key than the quorum's.
    #[error("event {id} is by {got}, not by the quorum key {expected}")]
    WrongAuthor {
        /// The event id.
        id: nostr::EventId,
        /// The quorum key.
        expected: PublicKey,
        /// The event's pubkey.
        got: PublicKey,
    },
    /// The event's id or signature does not verify.
    #[error("event {id}: {reason}")]
    InvalidEvent {
        /// The event id as stated.
        id: nostr::EventId,
        /// What `nostr` reported.
        reason: String,
    },
}

/// The x-only quorum key of a package: its verifying key's SEC1 encoding without the first byte.
pub(crate) fn quorum_key(pkp: &PublicKeyPackage) -> Result<PublicKey, GroupError> {
    let sec1 = pkp
        .verifying_key()
        .serialize()
        .map_err(|_| GroupError::NoGroupKey)?;
    PublicKey::from_slice(&sec1[1..]).map_err(|_| GroupError::NoGroupKey)
}

impl QuorumGroup {
    /// Checks the invariants (module docs) and builds the group; the quorum key is derived.
    pub fn new(roster: Roster, public_key_package: PublicKeyPackage) -> Result<Self, GroupError> {
        let quorum = quorum_key(&public_key_package)?;
        Self::with_quorum(roster, quorum, public_key_package)
    }

    fn with_quorum(
        roster: Roster,
        quorum: PublicKey,
        public_key_package: PublicKeyPackage,
    ) -> Result<Self, GroupError> {
        let actual = quorum_key(&public_key_package)?;
        if actual != quorum {
            return Err(GroupError::QuorumMismatch {
                stated: quorum,
                actual,
            });
        }
        if public_key_package.min_signers() != Some(roster.threshold()) {
            return Err(GroupError::ThresholdMismatch {
                package: public_key_package.min_signers(),
                roster: roster.threshold(),
            });
        }
        let shares = public_key_package.verifying_shares();
        for m in roster.members() {
            if !shares.contains_key(&identifier(m.index)) {
                return Err(GroupError::MissingVerifyingShare {
                    member: m.pubkey,
                    index: m.index,
                });
            }
        }
        if shares.len() != roster.len() {
            return Err(GroupError::ExtraVerifyingShares {
                shares: shares.len(),
                members: roster.len(),
            });
        }
        Ok(QuorumGroup {
            roster,
            quorum,
            public_key_package,
        })
    }

    /// The roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The quorum's Nostr public key: every event it signs has this `pubkey`.
    pub fn quorum(&self) -> PublicKey {
        self.quorum
    }

    /// Signatures need this many members.
    pub fn threshold(&self) -> u16 {
        self.roster.threshold()
    }

    /// frost's public key package (group key and every member's verifying share).
    pub fn public_key_package(&self) -> &PublicKeyPackage {
        &self.public_key_package
    }

    /// Checks that `event` is the quorum's: its pubkey is the quorum key, and its id and
    /// signature verify.
    pub fn verify_event(&self, event: &Event) -> Result<(), GroupError> {
        if event.pubkey != self.quorum {
            return Err(GroupError::WrongAuthor {
                id: event.id,
                expected: self.quorum,
                got: event.pubkey,
            });
        }
        event.verify().map_err(|e| GroupError::InvalidEvent {
            id: event.id,
            reason: e.to_string(),
        })
    }

    /// The same group after `joining` took over `leaving`'s index ([`crate::repair`]): the
    /// package is unchanged, only the roster changes.
    pub fn replace_member(
        &self,
        leaving: &PublicKey,
        joining: &PublicKey,
    ) -> Result<QuorumGroup, GroupError> {
        let roster = self.roster.replace(leaving, joining)?;
        Ok(QuorumGroup {
            roster,
            quorum: self.quorum,
            public_key_package: self.public_key_package.clone(),
        })
    }

    /// The same roster with a new package for the same quorum key (after a refresh).
    pub(crate) fn with_package(
        &self,
        public_key_package: PublicKeyPackage,
    ) -> Result<QuorumGroup, GroupError> {
        Self::with_quorum(self.roster.clone(), self.quorum, public_key_package)
    }
}

impl fmt::Debug for QuorumGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuorumGroup")
            .field("quorum", &self.quorum.to_hex())
            .field("threshold", &self.roster.threshold())
            .field("members", &self.roster.members())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRepr {
    roster: Roster,
    quorum: PublicKey,
    public_key_package: PackageHex,
}

struct PackageHex(PublicKeyPackage);
hexser::public_hex_serde!(PackageHex, PublicKeyPackage, "public_key_package");

/// Serialized as `{"roster": .., "quorum": "<x-only hex>", "public_key_package": "<hex of
/// frost's serialize()>"}`; deserialization re-checks every invariant.
impl Serialize for QuorumGroup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        GroupRepr {
            roster: self.roster.clone(),
            quorum: self.quorum,
            public_key_package: PackageHex(self.public_key_package.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for QuorumGroup {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = GroupRepr::deserialize(d)?;
        QuorumGroup::with_quorum(r.roster, r.quorum, r.public_key_package.0)
            .map_err(serde::de::Error::custom)
    }
}
