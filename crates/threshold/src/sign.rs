//! Threshold signing of Nostr events: commit, sign, aggregate into a verified [`Event`].
//!
//! ```text
//! each signer:  commit(&share)               -> SigningNonces (keep, secret, single use)
//!                                               + NonceCommitment (public, to the coordinator)
//! coordinator:  SigningRequest { unsigned event (pubkey = quorum key), >= t commitments }
//! each signer:  sign(&share, nonces, &request) -> SignatureShare (public, to the coordinator)
//! coordinator:  aggregate(&group, &request, shares) -> nostr::Event (verified)
//! ```
//!
//! - Every signer recomputes the event id from the full unsigned event: nothing here signs a
//!   bare digest, and an event whose `pubkey` is not the quorum key is refused (as is a stated
//!   `id` that does not match the content).
//! - [`SigningNonces`] are neither `Clone` nor serializable and are consumed by [`sign`]: one
//!   commitment, one signature. A signer that restarts between commit and sign must commit
//!   again. frost zeroizes the nonces on drop.
//! - The signing set is the set of members whose commitments are in the request. [`aggregate`]
//!   needs a share from exactly those members, checks every share against its member's
//!   verifying share when the aggregate does not verify (frost's cheater detection, all
//!   cheaters), and reports [`SignError::InvalidShare`] naming them.
//! - Fewer than `t` commitments or shares is an error naming how many were given and needed;
//!   a commitment or share keyed by a non-member is an error naming that pubkey.

use std::collections::BTreeMap;
use std::fmt;

use nostr::secp256k1::schnorr;
use nostr::{Event, EventId, PublicKey, UnsignedEvent};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::frost::round1::{self, SigningCommitments};
use crate::frost::round2;
use crate::frost::{Identifier, SigningPackage};
use crate::group::QuorumGroup;
use crate::hexser;
use crate::share::KeyShare;

/// Why a signing step failed. Names the member at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The unsigned event's pubkey is not the quorum key.
    #[error("the event's pubkey {got} is not the quorum key {expected}")]
    WrongEventAuthor {
        /// The quorum key.
        expected: PublicKey,
        /// The event's pubkey.
        got: PublicKey,
    },
    /// The unsigned event states an id that is not the hash of its content.
    #[error("the event states id {stated} but its content hashes to {computed}")]
    EventIdMismatch {
        /// The stated id.
        stated: EventId,
        /// The recomputed id.
        computed: EventId,
    },
    /// A commitment or share keyed by a non-member.
    #[error("{member} is not a member of the quorum")]
    NotAMember {
        /// The pubkey.
        member: PublicKey,
    },
    /// Fewer commitments than the threshold.
    #[error("{given} nonce commitments given, the threshold needs {needed}")]
    TooFewCommitments {
        /// Commitments in the request.
        given: usize,
        /// The threshold.
        needed: u16,
    },
    /// Fewer signature shares than the threshold.
    #[error("{given} signature shares given, the threshold needs {needed}")]
    TooFewShares {
        /// Shares given.
        given: usize,
        /// The threshold.
        needed: u16,
    },
    /// The signer's own commitment is not in the request.
    #[error("the request has no commitment from the signer {member}")]
    MissingOwnCommitment {
        /// The signer.
        member: PublicKey,
    },
    /// The request carries another commitment for the signer than its nonces'.
    #[error("the request's commitment for {member} is not the one of the nonces given")]
    CommitmentMismatch {
        /// The signer.
        member: PublicKey,
    },
    /// The nonces were made by another share.
    #[error(
        "the nonces were committed by {nonces_member} of quorum {nonces_quorum}, not this share"
    )]
    NoncesFromAnotherShare {
        /// Who committed the nonces.
        nonces_member: PublicKey,
        /// For which quorum.
        nonces_quorum: PublicKey,
    },
    /// A member that committed sent no share.
    #[error("no signature share from {member}, who committed to this signing")]
    MissingShare {
        /// The member.
        member: PublicKey,
    },
    /// A share from a member that did not commit to this signing.
    #[error("signature share from {member}, who did not commit to this signing")]
    ShareWithoutCommitment {
        /// The member.
        member: PublicKey,
    },
    /// Signature shares that do not verify against their members' verifying shares.
    #[error("invalid signature shares from {}", list(culprits))]
    InvalidShare {
        /// The members whose shares are invalid.
        culprits: Vec<PublicKey>,
    },
    /// The aggregate signature did not verify (should not happen once shares are checked).
    #[error("the aggregate signature does not verify: {reason}")]
    InvalidSignature {
        /// What failed.
        reason: String,
    },
    /// frost refused for another reason.
    #[error("frost {step} failed: {reason}")]
    Frost {
        /// The step.
        step: &'static str,
        /// frost's message.
        reason: String,
    },
}

fn list(pks: &[PublicKey]) -> String {
    pks.iter()
        .map(|p| p.to_hex())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A signer's secret nonces for one signing. Not `Clone`, not serializable; consumed by
/// [`sign`]; zeroized on drop (by frost).
pub struct SigningNonces {
    member: PublicKey,
    quorum: PublicKey,
    commitments: SigningCommitments,
    nonces: round1::SigningNonces,
}

impl fmt::Debug for SigningNonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningNonces")
            .field("member", &self.member.to_hex())
            .field("quorum", &self.quorum.to_hex())
            .finish_non_exhaustive()
    }
}

impl SigningNonces {
    /// The public commitment to these nonces.
    pub fn commitment(&self) -> NonceCommitment {
        NonceCommitment(self.commitments)
    }
}

/// A signer's public commitment to its nonces (serialized as the hex of frost's encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceCommitment(SigningCommitments);
hexser::public_hex_serde!(NonceCommitment, SigningCommitments, "nonce commitment");

/// A signer's public signature share (serialized as the hex of frost's encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureShare(round2::SignatureShare);
hexser::public_hex_serde!(SignatureShare, round2::SignatureShare, "signature share");

/// What the coordinator sends every signer: the full unsigned event and the commitments of the
/// signing set, keyed by member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningRequest {
    /// The event to sign; its `pubkey` must be the quorum key.
    pub event: UnsignedEvent,
    /// One commitment per signer, at least `t`.
    pub commitments: BTreeMap<PublicKey, NonceCommitment>,
}

impl SigningRequest {
    /// A request for `event` with the signing set's commitments.
    pub fn new(event: UnsignedEvent, commitments: BTreeMap<PublicKey, NonceCommitment>) -> Self {
        SigningRequest { event, commitments }
    }

    /// The event id recomputed from the full event (a stated id must match it).
    pub fn event_id(&self) -> Result<EventId, SignError> {
        let e = &self.event;
        let computed = EventId::new(&e.pubkey, &e.created_at, &e.kind, &e.tags, &e.content);
        match e.id {
            Some(stated) if stated != computed => {
                Err(SignError::EventIdMismatch { stated, computed })
            }
            _ => Ok(computed),
        }
    }

    /// Checks the event and the commitments against `group`; returns frost's signing package.
    fn signing_package(&self, group: &QuorumGroup) -> Result<SigningPackage, SignError> {
        if self.event.pubkey != group.quorum() {
            return Err(SignError::WrongEventAuthor {
                expected: group.quorum(),
                got: self.event.pubkey,
            });
        }
        let id = self.event_id()?;
        let commitments = self.commitments_by_id(group)?;
        Ok(SigningPackage::new(commitments, id.as_bytes()))
    }

    fn commitments_by_id(
        &self,
        group: &QuorumGroup,
    ) -> Result<BTreeMap<Identifier, SigningCommitments>, SignError> {
        let roster = group.roster();
        let mut out = BTreeMap::new();
        for (member, c) in &self.commitments {
            let id = roster
                .identifier_of(member)
                .ok_or(SignError::NotAMember { member: *member })?;
            out.insert(id, c.0);
        }
        if out.len() < usize::from(roster.threshold()) {
            return Err(SignError::TooFewCommitments {
                given: out.len(),
                needed: roster.threshold(),
            });
        }
        Ok(out)
    }
}

/// Round 1: fresh nonces for one signing with `share`, and their public commitment.
pub fn commit<R: RngCore + CryptoRng>(
    share: &KeyShare,
    rng: &mut R,
) -> (SigningNonces, NonceCommitment) {
    let (nonces, commitments) = round1::commit(share.key_package().signing_share(), rng);
    (
        SigningNonces {
            member: share.member(),
            quorum: share.quorum(),
            commitments,
            nonces,
        },
        NonceCommitment(commitments),
    )
}

/// Round 2: this member's signature share of the request's event. Consumes the nonces.
pub fn sign(
    share: &KeyShare,
    nonces: SigningNonces,
    request: &SigningRequest,
) -> Result<SignatureShare, SignError> {
    if nonces.member != share.member() || nonces.quorum != share.quorum() {
        return Err(SignError::NoncesFromAnotherShare {
            nonces_member: nonces.member,
            nonces_quorum: nonces.quorum,
        });
    }
    let package = request.signing_package(share.group())?;
    match request.commitments.get(&share.member()) {
        None => {
            return Err(SignError::MissingOwnCommitment {
                member: share.member(),
            });
        }
        Some(c) if c.0 != nonces.commitments => {
            return Err(SignError::CommitmentMismatch {
                member: share.member(),
            });
        }
        Some(_) => {}
    }
    let s = round2::sign(&package, &nonces.nonces, share.key_package()).map_err(|e| {
        SignError::Frost {
            step: "round2::sign",
            reason: e.to_string(),
        }
    })?;
    Ok(SignatureShare(s))
}

/// Combines the signing set's shares (keyed by member) into the signed event, which is
/// verified before it is returned.
pub fn aggregate(
    group: &QuorumGroup,
    request: &SigningRequest,
    shares: &BTreeMap<PublicKey, SignatureShare>,
) -> Result<Event, SignError> {
    let roster = group.roster();
    let mut by_id = BTreeMap::new();
    for (member, s) in shares {
        let id = roster
            .identifier_of(member)
            .ok_or(SignError::NotAMember { member: *member })?;
        by_id.insert(id, s.0);
    }
    let package = request.signing_package(group)?;
    if shares.len() < usize::from(roster.threshold()) {
        return Err(SignError::TooFewShares {
            given: shares.len(),
            needed: roster.threshold(),
        });
    }
    for member in shares.keys() {
        if !request.commitments.contains_key(member) {
            return Err(SignError::ShareWithoutCommitment { member: *member });
        }
    }
    for member in request.commitments.keys() {
        if !shares.contains_key(member) {
            return Err(SignError::MissingShare { member: *member });
        }
    }
    let signature = frost_core::aggregate_custom(
        &package,
        &by_id,
        group.public_key_package(),
        frost_core::CheaterDetection::AllCheaters,
    )
    .map_err(|e| match e {
        frost_core::Error::InvalidSignatureShare { culprits } => SignError::InvalidShare {
            culprits: culprits
                .iter()
                .filter_map(|id| roster.pubkey_of(id))
                .collect(),
        },
        e => SignError::Frost {
            step: "aggregate",
            reason: e.to_string(),
        },
    })?;
    let bytes = signature.serialize().map_err(|e| SignError::Frost {
        step: "signature encoding",
        reason: e.to_string(),
    })?;
    let sig = schnorr::Signature::from_slice(&bytes).map_err(|e| SignError::InvalidSignature {
        reason: e.to_string(),
    })?;
    let mut unsigned = request.event.clone();
    unsigned.id = Some(request.event_id()?);
    // `add_signature` verifies the id (set above) and the signature, as relays will.
    unsigned
        .add_signature(sig)
        .map_err(|e| SignError::InvalidSignature {
            reason: e.to_string(),
        })
}
