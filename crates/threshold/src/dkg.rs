//! Distributed key generation: each member runs this state machine; no one ever holds the key.
//!
//! ```text
//! start(roster, me)          -> Round1Secret (keep)  + Round1Broadcast (publish to all)
//! Round1Secret::receive(all round-1 broadcasts, keyed by sender)
//!                            -> Round2Secret (keep)  + one Round2Message per other member
//!                                                      (SECRET: send NIP-44 encrypted to it)
//! Round2Secret::finish(the same round-1 broadcasts, the round-2 messages sent to me)
//!                            -> KeyShare
//! ```
//!
//! Secrets are consumed by value, so a round cannot be run twice with one secret. The secret
//! states are neither `Clone` nor serializable: a member that restarts mid-DKG starts over.
//!
//! What the transport must guarantee (this crate cannot): messages are bound to one DKG session
//! (e.g. by the id of the request event they answer), a message keyed by a member really comes
//! from it (its Nostr event signature), every member sees the *same* round-1 broadcasts (a
//! member equivocating would otherwise split the group; compare the resulting
//! [`QuorumGroup`]s, e.g. by publishing the quorum key, before using it), and round-2 messages
//! are encrypted to their recipient.
//!
//! Errors name the member whose message is missing or invalid; frost's culprit identifiers are
//! mapped back to pubkeys. The resulting key carries frost's BIP-341 taproot tweak (applied by
//! frost in `part3`); signatures made with [`crate::sign`] verify under the tweaked quorum key
//! with no further step.

use std::collections::BTreeMap;
use std::fmt;

use nostr::PublicKey;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::frost::Identifier;
use crate::frost::keys::dkg::{self, round1, round2};
use crate::group::{GroupError, QuorumGroup};
use crate::hexser::{self, SecretHex};
use crate::roster::Roster;
use crate::share::{KeyShare, ShareError};

/// Why a DKG (or refresh) step failed. Names the member at fault where there is one; never
/// contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkgError {
    /// FROST needs at least two signers.
    #[error("FROST needs a threshold of at least 2, the roster has {threshold}")]
    ThresholdTooLow {
        /// The roster's threshold.
        threshold: u16,
    },
    /// The member running this state machine is not in the roster.
    #[error("{member} is not a member of the roster")]
    NotInRoster {
        /// The local member.
        member: PublicKey,
    },
    /// A message keyed by a pubkey that is not another member.
    #[error("message from {member}, who is not another member of the roster")]
    UnexpectedSender {
        /// The sender.
        member: PublicKey,
    },
    /// A member's round-1 broadcast is missing.
    #[error("no round-1 broadcast from {member}")]
    MissingRound1 {
        /// The member.
        member: PublicKey,
    },
    /// A member's round-1 broadcast is invalid.
    #[error("invalid round-1 broadcast from {member}: {reason}")]
    InvalidRound1 {
        /// The member.
        member: PublicKey,
        /// What is wrong.
        reason: String,
    },
    /// The broadcast attributed to the local member is not the one it made.
    #[error("the round-1 broadcast attributed to {member} (this member) is not the one it sent")]
    OwnRound1Altered {
        /// The local member.
        member: PublicKey,
    },
    /// The round-1 broadcasts given to `finish` differ from those given to `receive`.
    #[error("the round-1 broadcast of {member} changed between round 1 and round 2")]
    Round1Changed {
        /// The member.
        member: PublicKey,
    },
    /// A member's round-2 message is missing.
    #[error("no round-2 message from {member}")]
    MissingRound2 {
        /// The member.
        member: PublicKey,
    },
    /// A member's round-2 message does not match its round-1 commitment.
    #[error("invalid round-2 message from {member}: {reason}")]
    InvalidRound2 {
        /// The member.
        member: PublicKey,
        /// What is wrong.
        reason: String,
    },
    /// frost refused for a reason not attributable to one member.
    #[error("frost {step} failed: {reason}")]
    Frost {
        /// The protocol step.
        step: &'static str,
        /// frost's message.
        reason: String,
    },
    /// The resulting group is inconsistent.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The resulting share is inconsistent.
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// A member's round-1 message: commitments to its polynomial and a proof of knowledge. Public;
/// broadcast to every member. Serialized as `{"package": "<hex of frost's serialize()>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Round1Broadcast {
    package: Round1Hex,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Round1Hex(round1::Package);
hexser::public_hex_serde!(Round1Hex, round1::Package, "round-1 package");

impl Round1Broadcast {
    pub(crate) fn new(package: round1::Package) -> Self {
        Round1Broadcast {
            package: Round1Hex(package),
        }
    }

    pub(crate) fn package(&self) -> &round1::Package {
        &self.package.0
    }
}

/// A member's round-2 message to one other member: that member's share of the sender's
/// polynomial. **Secret**: send it encrypted (NIP-44) to its recipient only. `Debug` prints
/// nothing secret; the frost package zeroizes on drop; [`Round2Message::to_json`] returns a
/// wiped-on-drop buffer. Serialized as `{"package": "<hex>"}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Round2Message {
    package: round2::Package,
}

impl Round2Message {
    /// JSON for encryption to the recipient, in a buffer wiped on drop.
    pub fn to_json(&self) -> Result<Zeroizing<String>, DkgError> {
        hexser::secret_json(self).map_err(|reason| DkgError::Frost {
            step: "round-2 encoding",
            reason,
        })
    }

    /// Parses [`Round2Message::to_json`] output (after decryption).
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub(crate) fn package(&self) -> &round2::Package {
        &self.package
    }
}

impl fmt::Debug for Round2Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Round2Message(<secret>)")
    }
}

impl Serialize for Round2Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let bytes = Zeroizing::new(self.package.serialize().map_err(|e| {
            <S::Error as serde::ser::Error>::custom(format_args!("round-2 package: {e}"))
        })?);
        let mut st = s.serialize_struct("Round2Message", 1)?;
        st.serialize_field("package", &SecretHex(&bytes))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Round2Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repr {
            #[serde(deserialize_with = "hexser::de_secret")]
            package: Zeroizing<Vec<u8>>,
        }
        let r = Repr::deserialize(d)?;
        let package = round2::Package::deserialize(&r.package).map_err(|_| {
            <D::Error as serde::de::Error>::custom("round-2 package: not a valid encoding")
        })?;
        Ok(Round2Message { package })
    }
}

/// Round-1 state of one member. Secret (frost's polynomial); consumed by
/// [`Round1Secret::receive`].
pub struct Round1Secret {
    roster: Roster,
    me: PublicKey,
    secret: round1::SecretPackage,
    mine: Round1Broadcast,
}

impl fmt::Debug for Round1Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Round1Secret")
            .field("me", &self.me.to_hex())
            .finish_non_exhaustive()
    }
}

/// Round-2 state of one member. Secret; consumed by [`Round2Secret::finish`].
pub struct Round2Secret {
    roster: Roster,
    me: PublicKey,
    secret: round2::SecretPackage,
    round1: BTreeMap<Identifier, round1::Package>,
}

impl fmt::Debug for Round2Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Round2Secret")
            .field("me", &self.me.to_hex())
            .finish_non_exhaustive()
    }
}

/// Starts the DKG for member `me` of `roster`.
pub fn start<R: RngCore + CryptoRng>(
    roster: &Roster,
    me: PublicKey,
    rng: &mut R,
) -> Result<(Round1Secret, Round1Broadcast), DkgError> {
    let id = check_start(roster, &me)?;
    let (secret, package) = dkg::part1(id, roster.len() as u16, roster.threshold(), rng)
        .map_err(|e| frost_error("part1", e))?;
    let mine = Round1Broadcast::new(package);
    Ok((
        Round1Secret {
            roster: roster.clone(),
            me,
            secret,
            mine: mine.clone(),
        },
        mine,
    ))
}

impl Round1Secret {
    /// Takes every member's round-1 broadcast (keyed by sender; this member's own may be
    /// included or not), verifies them, and returns the round-2 state plus one secret
    /// message per other member (keyed by recipient).
    #[allow(clippy::type_complexity)]
    pub fn receive(
        self,
        broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
    ) -> Result<(Round2Secret, BTreeMap<PublicKey, Round2Message>), DkgError> {
        let Round1Secret {
            roster,
            me,
            secret,
            mine,
        } = self;
        let round1 = collect_round1(&roster, &me, &mine, broadcasts, roster.threshold())?;
        let (secret, out) = dkg::part2(secret, &round1).map_err(|e| round1_error(&roster, e))?;
        let messages = to_recipients(&roster, out)?;
        Ok((
            Round2Secret {
                roster,
                me,
                secret,
                round1,
            },
            messages,
        ))
    }
}

impl Round2Secret {
    /// Takes the same round-1 broadcasts as [`Round1Secret::receive`] and the round-2 messages
    /// sent to this member (keyed by sender), verifies them and returns this member's share.
    pub fn finish(
        self,
        broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
        messages: BTreeMap<PublicKey, Round2Message>,
    ) -> Result<KeyShare, DkgError> {
        check_same_round1(&self.roster, &self.me, &self.round1, broadcasts)?;
        let round2 = collect_round2(&self.roster, &self.me, messages)?;
        let (key_package, pkp) = dkg::part3(&self.secret, &self.round1, &round2)
            .map_err(|e| round2_error(&self.roster, "part3", e))?;
        let group = QuorumGroup::new(self.roster.clone(), pkp)?;
        Ok(KeyShare::new(group, self.me, key_package)?)
    }
}

/// Checks threshold and membership; returns `me`'s identifier.
pub(crate) fn check_start(roster: &Roster, me: &PublicKey) -> Result<Identifier, DkgError> {
    if roster.threshold() < 2 {
        return Err(DkgError::ThresholdTooLow {
            threshold: roster.threshold(),
        });
    }
    roster
        .identifier_of(me)
        .ok_or(DkgError::NotInRoster { member: *me })
}

/// Validates the round-1 broadcasts and keys them by identifier, without this member's.
/// `commitments` is the number of coefficient commitments each must carry.
pub(crate) fn collect_round1(
    roster: &Roster,
    me: &PublicKey,
    mine: &Round1Broadcast,
    broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
    commitments: u16,
) -> Result<BTreeMap<Identifier, round1::Package>, DkgError> {
    for sender in broadcasts.keys() {
        if !roster.contains(sender) {
            return Err(DkgError::UnexpectedSender { member: *sender });
        }
    }
    if let Some(own) = broadcasts.get(me)
        && own != mine
    {
        return Err(DkgError::OwnRound1Altered { member: *me });
    }
    let mut out = BTreeMap::new();
    for m in roster.members().iter().filter(|m| m.pubkey != *me) {
        let Some(b) = broadcasts.get(&m.pubkey) else {
            return Err(DkgError::MissingRound1 { member: m.pubkey });
        };
        let got = b
            .package()
            .commitment()
            .serialize()
            .map_err(|e| DkgError::InvalidRound1 {
                member: m.pubkey,
                reason: e.to_string(),
            })?
            .len();
        if got != usize::from(commitments) {
            return Err(DkgError::InvalidRound1 {
                member: m.pubkey,
                reason: format!(
                    "{got} coefficient commitments, threshold {} needs {commitments}",
                    roster.threshold()
                ),
            });
        }
        out.insert(crate::roster::identifier(m.index), b.package().clone());
    }
    Ok(out)
}

/// Checks that `finish` got the same round-1 broadcasts as `receive`.
pub(crate) fn check_same_round1(
    roster: &Roster,
    me: &PublicKey,
    received: &BTreeMap<Identifier, round1::Package>,
    broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
) -> Result<(), DkgError> {
    for m in roster.members().iter().filter(|m| m.pubkey != *me) {
        let id = crate::roster::identifier(m.index);
        match broadcasts.get(&m.pubkey) {
            None => return Err(DkgError::MissingRound1 { member: m.pubkey }),
            Some(b) if received.get(&id) != Some(b.package()) => {
                return Err(DkgError::Round1Changed { member: m.pubkey });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Keys the round-2 messages sent to `me` by identifier; every other member must have sent one.
pub(crate) fn collect_round2(
    roster: &Roster,
    me: &PublicKey,
    mut messages: BTreeMap<PublicKey, Round2Message>,
) -> Result<BTreeMap<Identifier, round2::Package>, DkgError> {
    for sender in messages.keys() {
        if sender == me || !roster.contains(sender) {
            return Err(DkgError::UnexpectedSender { member: *sender });
        }
    }
    let mut out = BTreeMap::new();
    for m in roster.members().iter().filter(|m| m.pubkey != *me) {
        let Some(msg) = messages.remove(&m.pubkey) else {
            return Err(DkgError::MissingRound2 { member: m.pubkey });
        };
        out.insert(crate::roster::identifier(m.index), msg.package().clone());
    }
    Ok(out)
}

/// Maps frost's per-recipient round-2 packages to pubkeys.
pub(crate) fn to_recipients(
    roster: &Roster,
    packages: BTreeMap<Identifier, round2::Package>,
) -> Result<BTreeMap<PublicKey, Round2Message>, DkgError> {
    packages
        .into_iter()
        .map(|(id, package)| {
            roster
                .pubkey_of(&id)
                .map(|pk| (pk, Round2Message { package }))
                .ok_or(DkgError::Frost {
                    step: "part2",
                    reason: "a round-2 package for an unknown identifier".into(),
                })
        })
        .collect()
}

pub(crate) fn frost_error(step: &'static str, e: crate::frost::Error) -> DkgError {
    DkgError::Frost {
        step,
        reason: e.to_string(),
    }
}

/// Maps a frost part-2 error, naming the culprit where frost reports one.
pub(crate) fn round1_error(roster: &Roster, e: crate::frost::Error) -> DkgError {
    match &e {
        crate::frost::Error::InvalidProofOfKnowledge { culprit } => match roster.pubkey_of(culprit)
        {
            Some(member) => DkgError::InvalidRound1 {
                member,
                reason: "invalid proof of knowledge".into(),
            },
            None => frost_error("part2", e),
        },
        _ => frost_error("part2", e),
    }
}

/// Maps a frost part-3 error, naming the culprit where frost reports one.
pub(crate) fn round2_error(
    roster: &Roster,
    step: &'static str,
    e: crate::frost::Error,
) -> DkgError {
    match &e {
        crate::frost::Error::InvalidSecretShare {
            culprit: Some(culprit),
        } => match roster.pubkey_of(culprit) {
            Some(member) => DkgError::InvalidRound2 {
                member,
                reason: "the share does not match the sender's round-1 commitment".into(),
            },
            None => frost_error(step, e),
        },
        _ => frost_error(step, e),
    }
}
