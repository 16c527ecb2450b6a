//! Replacing a member: a new DVM takes over a leaving member's index and share.
//!
//! Uses frost's repairable threshold scheme (`keys::repairable`, eprint 2017/1155): `t` helpers
//! (current members other than the leaving one) jointly compute the share at the leaving
//! member's index *for the joining member*, without anyone learning the key or any helper's
//! share, and without the leaving member taking part. The joining member inherits the leaving
//! member's FROST index (see the index rule in [`crate::roster`]); the quorum key and the
//! public key package are unchanged, only the roster entry changes.
//!
//! ```text
//! all agree on a Replacement { leaving, joining, helpers }          (public)
//! each helper:   deltas(&share, &replacement)  -> one RepairDelta per helper (incl. itself)
//!                                                 SECRET: send encrypted to that helper
//! each helper:   sigma(&share, &replacement, deltas received from every helper)
//!                                              -> RepairSigma, SECRET: send encrypted to joining
//! joining:       recover(&group, &replacement, sigmas from every helper) -> its KeyShare
//! every other member: update_share(share, &replacement)              -> share with new roster
//! then:          a [`crate::refresh`] among the new roster
//! ```
//!
//! **Run a refresh right after.** Repair alone does not revoke anything: the leaving member
//! still holds a valid share at its old index (now the joining member's). Only a refresh among
//! the new roster makes that old share useless (old and new shares do not combine).
//!
//! The joining member must make sure the [`QuorumGroup`] it recovers against is the real one
//! (e.g. that its quorum key is the one it was told to join); the recovered share is checked
//! against that group's verifying share for the index. RTS does not identify a helper that
//! sends a wrong value: a mismatch is reported naming all helpers of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use nostr::PublicKey;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::frost::keys::repairable::{self, Delta, Sigma};
use crate::frost::{Identifier, Secp256K1Sha256TR};
use crate::group::{GroupError, QuorumGroup};
use crate::hexser::{self, SecretHex};
use crate::roster::RosterError;
use crate::share::{KeyShare, ShareError};

/// Why a repair step failed. Never contains secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    /// Leaving is not a member, or joining already is.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// A helper is not a member.
    #[error("helper {helper} is not a member of the quorum")]
    HelperNotAMember {
        /// The helper.
        helper: PublicKey,
    },
    /// The leaving member was listed as a helper.
    #[error("the leaving member {member} cannot be a helper")]
    LeavingMemberAsHelper {
        /// The leaving member.
        member: PublicKey,
    },
    /// Fewer helpers than the threshold.
    #[error("{given} helpers given, the threshold needs {needed}")]
    TooFewHelpers {
        /// Distinct helpers given.
        given: usize,
        /// The threshold.
        needed: u16,
    },
    /// The local member is asked to help but is not a helper of this replacement.
    #[error("{member} is not a helper of this replacement")]
    NotAHelper {
        /// The local member.
        member: PublicKey,
    },
    /// The leaving member cannot update its share to the new roster.
    #[error("{member} is the leaving member")]
    IsLeaving {
        /// The leaving member.
        member: PublicKey,
    },
    /// A helper's message is missing.
    #[error("no {what} from helper {helper}")]
    Missing {
        /// "delta" or "sigma".
        what: &'static str,
        /// The helper.
        helper: PublicKey,
    },
    /// A message from someone who is not a helper.
    #[error("{what} from {sender}, who is not a helper of this replacement")]
    UnexpectedSender {
        /// "delta" or "sigma".
        what: &'static str,
        /// The sender.
        sender: PublicKey,
    },
    /// The recovered share does not match the group's verifying share for the index.
    #[error(
        "the recovered share does not match the quorum's verifying share for index {index}; \
         one of the helpers {helpers:?} sent a wrong value"
    )]
    RecoveredShareMismatch {
        /// The inherited index.
        index: u16,
        /// The helpers of this run.
        helpers: Vec<PublicKey>,
    },
    /// frost refused.
    #[error("frost {step} failed: {reason}")]
    Frost {
        /// The step.
        step: &'static str,
        /// frost's message.
        reason: String,
    },
    /// The new group is inconsistent.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A share is inconsistent.
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// What the members agreed on: who leaves, who joins in its place, who helps. Public.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The member whose index is taken over.
    pub leaving: PublicKey,
    /// The new member.
    pub joining: PublicKey,
    /// At least `t` current members, not the leaving one (sorted, distinct).
    pub helpers: Vec<PublicKey>,
}

impl Replacement {
    /// Validates a replacement against `group` (sorting and de-duplicating the helpers).
    pub fn new(
        group: &QuorumGroup,
        leaving: PublicKey,
        joining: PublicKey,
        helpers: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Self, RepairError> {
        let helpers: BTreeSet<PublicKey> = helpers.into_iter().collect();
        let r = Replacement {
            leaving,
            joining,
            helpers: helpers.into_iter().collect(),
        };
        r.validate(group)?;
        Ok(r)
    }

    fn validate(&self, group: &QuorumGroup) -> Result<Vec<Identifier>, RepairError> {
        let roster = group.roster();
        // Checks leaving is a member and joining is not.
        roster.replace(&self.leaving, &self.joining)?;
        let mut ids = Vec::with_capacity(self.helpers.len());
        let distinct: BTreeSet<&PublicKey> = self.helpers.iter().collect();
        for h in &distinct {
            if **h == self.leaving {
                return Err(RepairError::LeavingMemberAsHelper { member: **h });
            }
            ids.push(
                roster
                    .identifier_of(h)
                    .ok_or(RepairError::HelperNotAMember { helper: **h })?,
            );
        }
        if distinct.len() < usize::from(roster.threshold()) {
            return Err(RepairError::TooFewHelpers {
                given: distinct.len(),
                needed: roster.threshold(),
            });
        }
        Ok(ids)
    }

    fn leaving_identifier(&self, group: &QuorumGroup) -> Identifier {
        group
            .roster()
            .identifier_of(&self.leaving)
            .expect("validated")
    }
}

macro_rules! secret_scalar_message {
    ($name:ident, $inner:ty, $field:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name($inner);

        impl $name {
            /// JSON for encryption to the recipient, in a buffer wiped on drop.
            pub fn to_json(&self) -> Zeroizing<String> {
                hexser::secret_json(self).expect("a scalar always serializes")
            }

            /// Parses [`Self::to_json`] output (after decryption).
            pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
                serde_json::from_str(json)
            }
        }

        /// frost's value is `Copy` and not zeroizing; this wrapper wipes its own copy on drop.
        impl Drop for $name {
            fn drop(&mut self) {
                let zero = <$inner>::deserialize(&[0u8; 32]).expect("zero is a valid scalar");
                // SAFETY: `self.0` is a valid, aligned, initialized place of this type.
                unsafe { std::ptr::write_volatile(&mut self.0, zero) };
                std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<secret>)"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let bytes = Zeroizing::new(self.0.serialize());
                let mut st = s.serialize_struct(stringify!($name), 1)?;
                st.serialize_field($field, &SecretHex(&bytes))?;
                st.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Repr {
                    #[serde(rename = $field, deserialize_with = "hexser::de_secret")]
                    value: Zeroizing<Vec<u8>>,
                }
                let r = Repr::deserialize(d)?;
                <$inner>::deserialize(&r.value).map($name).map_err(|_| {
                    <D::Error as serde::de::Error>::custom(concat!($field, ": not a valid scalar"))
                })
            }
        }
    };
}

secret_scalar_message!(
    RepairDelta,
    Delta,
    "delta",
    "A helper's message to another helper (or itself). **Secret**: send it encrypted. \
     Serialized as `{\"delta\": \"<hex>\"}`."
);
secret_scalar_message!(
    RepairSigma,
    Sigma,
    "sigma",
    "A helper's message to the joining member. **Secret**: send it encrypted. \
     Serialized as `{\"sigma\": \"<hex>\"}`."
);

fn frost_error(step: &'static str, e: crate::frost::Error) -> RepairError {
    RepairError::Frost {
        step,
        reason: e.to_string(),
    }
}

fn require_helper(share: &KeyShare, replacement: &Replacement) -> Result<(), RepairError> {
    if !replacement.helpers.contains(&share.member()) {
        return Err(RepairError::NotAHelper {
            member: share.member(),
        });
    }
    Ok(())
}

/// Helper step 1: this helper's deltas, keyed by recipient helper (including itself).
pub fn deltas<R: RngCore + CryptoRng>(
    share: &KeyShare,
    replacement: &Replacement,
    rng: &mut R,
) -> Result<BTreeMap<PublicKey, RepairDelta>, RepairError> {
    let group = share.group();
    let ids = replacement.validate(group)?;
    require_helper(share, replacement)?;
    let out = repairable::repair_share_part1::<Secp256K1Sha256TR, _>(
        &ids,
        share.key_package(),
        rng,
        replacement.leaving_identifier(group),
    )
    .map_err(|e| frost_error("repair part1", e))?;
    out.into_iter()
        .map(|(id, delta)| {
            group
                .roster()
                .pubkey_of(&id)
                .map(|pk| (pk, RepairDelta(delta)))
                .ok_or(RepairError::Frost {
                    step: "repair part1",
                    reason: "a delta for an unknown identifier".into(),
                })
        })
        .collect()
}

/// Helper step 2: combines the deltas this helper received from every helper (keyed by
/// sender, its own included) into its sigma for the joining member.
pub fn sigma(
    share: &KeyShare,
    replacement: &Replacement,
    deltas: BTreeMap<PublicKey, RepairDelta>,
) -> Result<RepairSigma, RepairError> {
    replacement.validate(share.group())?;
    require_helper(share, replacement)?;
    let values = collect(replacement, "delta", deltas)?;
    let values: Vec<Delta> = values.iter().map(|d| d.0).collect();
    Ok(RepairSigma(repairable::repair_share_part2(&values)))
}

/// Joining member: recovers its share from every helper's sigma (keyed by sender). `group` is
/// the quorum's group *before* the replacement; the returned share's group has `joining` in
/// `leaving`'s place.
pub fn recover(
    group: &QuorumGroup,
    replacement: &Replacement,
    sigmas: BTreeMap<PublicKey, RepairSigma>,
) -> Result<KeyShare, RepairError> {
    replacement.validate(group)?;
    let index = group
        .roster()
        .index_of(&replacement.leaving)
        .expect("validated");
    let values = collect(replacement, "sigma", sigmas)?;
    let values: Vec<Sigma> = values.iter().map(|s| s.0).collect();
    let key_package = repairable::repair_share_part3(
        &values,
        replacement.leaving_identifier(group),
        group.public_key_package(),
    )
    .map_err(|e| frost_error("repair part3", e))?;
    let new_group = group.replace_member(&replacement.leaving, &replacement.joining)?;
    match KeyShare::new(new_group, replacement.joining, key_package) {
        Ok(share) => Ok(share),
        Err(ShareError::WrongVerifyingShare { .. } | ShareError::SecretMismatch { .. }) => {
            Err(RepairError::RecoveredShareMismatch {
                index,
                helpers: replacement.helpers.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Every member that stays (helper or not): the same share under the new roster.
pub fn update_share(share: KeyShare, replacement: &Replacement) -> Result<KeyShare, RepairError> {
    replacement.validate(share.group())?;
    if share.member() == replacement.leaving {
        return Err(RepairError::IsLeaving {
            member: share.member(),
        });
    }
    let group = share
        .group()
        .replace_member(&replacement.leaving, &replacement.joining)?;
    Ok(KeyShare::new(
        group,
        share.member(),
        share.key_package().clone(),
    )?)
}

/// Values from exactly the helpers, in helper order.
fn collect<T>(
    replacement: &Replacement,
    what: &'static str,
    mut received: BTreeMap<PublicKey, T>,
) -> Result<Vec<T>, RepairError> {
    for sender in received.keys() {
        if !replacement.helpers.contains(sender) {
            return Err(RepairError::UnexpectedSender {
                what,
                sender: *sender,
            });
        }
    }
    let distinct: BTreeSet<&PublicKey> = replacement.helpers.iter().collect();
    distinct
        .into_iter()
        .map(|h| {
            received
                .remove(h)
                .ok_or(RepairError::Missing { what, helper: *h })
        })
        .collect()
}
