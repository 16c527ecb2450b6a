//! Trusted-dealer key generation: one party makes (or already has) the whole key and splits it.
//!
//! **The dealer holds the whole quorum key** while it deals: whoever runs [`deal`] or [`split`]
//! can sign alone as the quorum until it has erased its memory, and must be trusted not to have
//! kept a copy. Use it for tests, for a quorum whose members all trust one operator, or to
//! turn an existing single Nostr key into a quorum key ([`split`]). Otherwise use [`crate::dkg`],
//! where no one ever holds the key.
//!
//! Dealer keys carry no taproot tweak: the quorum key is `secret·G` itself (for [`split`], the
//! Nostr pubkey of the given secret key). Each [`KeyShare`] is then sent to its member
//! encrypted (NIP-44 of [`KeyShare::to_json`]); every share is checked against the group's
//! verifying shares before it is returned, and again by the member when it parses it.

use nostr::SecretKey;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::frost::keys::{self, IdentifierList, KeyPackage, PublicKeyPackage, SecretShare};
use crate::frost::{Identifier, SigningKey};
use crate::group::{GroupError, QuorumGroup};
use crate::roster::{Roster, identifier};
use crate::share::{KeyShare, ShareError};

/// Why dealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DealerError {
    /// FROST needs at least two signers.
    #[error("FROST needs a threshold of at least 2, the roster has {threshold}")]
    ThresholdTooLow {
        /// The roster's threshold.
        threshold: u16,
    },
    /// The Nostr secret key could not be used as a FROST signing key.
    #[error("the secret key is not a valid FROST signing key")]
    InvalidSecret,
    /// The split key's group key is not the secret key's Nostr pubkey (a bug).
    #[error("split produced quorum key {got}, expected the secret key's pubkey {expected}")]
    SplitKeyMismatch {
        /// The secret key's Nostr pubkey.
        expected: nostr::PublicKey,
        /// What the split produced.
        got: nostr::PublicKey,
    },
    /// frost refused.
    #[error("frost key generation failed: {0}")]
    Frost(String),
    /// The generated group is inconsistent (a bug).
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A generated share is inconsistent (a bug).
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// Generates a fresh quorum key and deals one share per roster member (in roster order).
pub fn deal<R: RngCore + CryptoRng>(
    roster: &Roster,
    rng: &mut R,
) -> Result<(QuorumGroup, Vec<KeyShare>), DealerError> {
    check_threshold(roster)?;
    let ids = identifiers(roster);
    let (shares, pkp) = keys::generate_with_dealer(
        roster.len() as u16,
        roster.threshold(),
        IdentifierList::Custom(&ids),
        rng,
    )
    .map_err(|e| DealerError::Frost(e.to_string()))?;
    finish(roster, shares, pkp)
}

/// Splits an existing Nostr secret key into shares for the roster (in roster order); the
/// quorum key is that secret key's pubkey.
pub fn split<R: RngCore + CryptoRng>(
    secret: &SecretKey,
    roster: &Roster,
    rng: &mut R,
) -> Result<(QuorumGroup, Vec<KeyShare>), DealerError> {
    check_threshold(roster)?;
    let bytes = Zeroizing::new(secret.to_secret_bytes());
    let signing_key =
        SigningKey::deserialize(&bytes[..]).map_err(|_| DealerError::InvalidSecret)?;
    let ids = identifiers(roster);
    let (shares, pkp) = keys::split(
        &signing_key,
        roster.len() as u16,
        roster.threshold(),
        IdentifierList::Custom(&ids),
        rng,
    )
    .map_err(|e| DealerError::Frost(e.to_string()))?;
    let expected = nostr::Keys::new(secret.clone()).public_key();
    let (group, shares) = finish(roster, shares, pkp)?;
    if group.quorum() != expected {
        return Err(DealerError::SplitKeyMismatch {
            expected,
            got: group.quorum(),
        });
    }
    Ok((group, shares))
}

fn check_threshold(roster: &Roster) -> Result<(), DealerError> {
    if roster.threshold() < 2 {
        return Err(DealerError::ThresholdTooLow {
            threshold: roster.threshold(),
        });
    }
    Ok(())
}

fn identifiers(roster: &Roster) -> Vec<Identifier> {
    roster
        .members()
        .iter()
        .map(|m| identifier(m.index))
        .collect()
}

fn finish(
    roster: &Roster,
    mut shares: std::collections::BTreeMap<Identifier, SecretShare>,
    pkp: PublicKeyPackage,
) -> Result<(QuorumGroup, Vec<KeyShare>), DealerError> {
    let group = QuorumGroup::new(roster.clone(), pkp)?;
    let mut out = Vec::with_capacity(roster.len());
    for m in roster.members() {
        let secret_share = shares
            .remove(&identifier(m.index))
            .ok_or_else(|| DealerError::Frost(format!("no share dealt for index {}", m.index)))?;
        let key_package =
            KeyPackage::try_from(secret_share).map_err(|e| DealerError::Frost(e.to_string()))?;
        out.push(KeyShare::new(group.clone(), m.pubkey, key_package)?);
    }
    Ok((group, out))
}
