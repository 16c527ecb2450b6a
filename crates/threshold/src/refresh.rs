//! Proactive refresh: every member's share changes, the quorum key does not.
//!
//! This is frost's DKG-style refresh (`keys::refresh::refresh_dkg_part1/part2/shares`): every
//! member deals a sharing of *zero* to the others, and adds what it receives to its share. No
//! one learns anything about the key, and no dealer is needed. It runs like [`crate::dkg`],
//! with the same public [`Round1Broadcast`] and secret [`Round2Message`] messages and the
//! same transport requirements:
//!
//! ```text
//! start(&old_share)           -> Round1Secret (keep) + Round1Broadcast (publish to all)
//! Round1Secret::receive(all round-1 broadcasts)
//!                             -> Round2Secret (keep) + one Round2Message per other member
//! Round2Secret::finish(the same round-1 broadcasts, the round-2 messages sent to me)
//!                             -> new KeyShare (same quorum key, same roster, new shares)
//! ```
//!
//! Every member of the roster takes part (frost's refresh can also drop members; this crate
//! keeps the roster). After a refresh, old shares do not combine with new ones: an attacker
//! must steal `t` shares *of the same epoch*. Members replace their stored share with the new
//! one and drop the old one. A refresh is also the second half of replacing a member
//! ([`crate::repair`]): it makes the leaving member's old share useless.
//!
//! A round-2 message that does not match its sender's round-1 commitment is reported as
//! [`DkgError::InvalidRound2`] naming the sender (this crate checks each message before
//! handing them to frost, whose refresh does not name culprits).

use std::collections::BTreeMap;
use std::fmt;

use nostr::PublicKey;
use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

pub use crate::dkg::{DkgError, Round1Broadcast, Round2Message};
use crate::dkg::{
    check_same_round1, check_start, collect_round1, collect_round2, frost_error, round2_error,
    to_recipients,
};
use crate::frost::Identifier;
use crate::frost::keys::dkg::{round1, round2};
use crate::frost::keys::refresh;
use crate::frost::keys::{SecretShare, SigningShare};
use crate::frost::{Field, Secp256K1ScalarField};
use crate::share::KeyShare;

/// Round-1 refresh state of one member (secret; holds a copy of the old share).
pub struct Round1Secret {
    old: KeyShare,
    secret: round1::SecretPackage,
    mine: Round1Broadcast,
}

/// Round-2 refresh state of one member (secret).
pub struct Round2Secret {
    old: KeyShare,
    secret: round2::SecretPackage,
    round1: BTreeMap<Identifier, round1::Package>,
}

impl fmt::Debug for Round1Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("refresh::Round1Secret")
            .field("share", &self.old)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Round2Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("refresh::Round2Secret")
            .field("share", &self.old)
            .finish_non_exhaustive()
    }
}

/// Starts a refresh of `share` (every member of its roster must take part).
pub fn start<R: RngCore + CryptoRng>(
    share: &KeyShare,
    rng: &mut R,
) -> Result<(Round1Secret, Round1Broadcast), DkgError> {
    let roster = share.group().roster();
    let id = check_start(roster, &share.member())?;
    let (secret, package) =
        refresh::refresh_dkg_part1(id, roster.len() as u16, roster.threshold(), rng)
            .map_err(|e| frost_error("refresh part1", e))?;
    let mine = Round1Broadcast::new(package);
    Ok((
        Round1Secret {
            old: share.clone(),
            secret,
            mine: mine.clone(),
        },
        mine,
    ))
}

impl Round1Secret {
    /// Takes every member's refresh broadcast (keyed by sender), returns the round-2 state and
    /// one secret message per other member (keyed by recipient).
    #[allow(clippy::type_complexity)]
    pub fn receive(
        self,
        broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
    ) -> Result<(Round2Secret, BTreeMap<PublicKey, Round2Message>), DkgError> {
        let Round1Secret { old, secret, mine } = self;
        let roster = old.group().roster();
        // A sharing of zero commits to t-1 coefficients (the constant term is implicit).
        let round1 = collect_round1(
            roster,
            &old.member(),
            &mine,
            broadcasts,
            roster.threshold() - 1,
        )?;
        let (secret, out) = refresh::refresh_dkg_part2(secret, &round1)
            .map_err(|e| frost_error("refresh part2", e))?;
        let messages = to_recipients(roster, out)?;
        Ok((
            Round2Secret {
                old,
                secret,
                round1,
            },
            messages,
        ))
    }
}

impl Round2Secret {
    /// Takes the same broadcasts as [`Round1Secret::receive`] and the messages sent to this
    /// member (keyed by sender); returns the refreshed share.
    pub fn finish(
        self,
        broadcasts: &BTreeMap<PublicKey, Round1Broadcast>,
        messages: BTreeMap<PublicKey, Round2Message>,
    ) -> Result<KeyShare, DkgError> {
        let roster = self.old.group().roster();
        let me = self.old.member();
        check_same_round1(roster, &me, &self.round1, broadcasts)?;
        let round2 = collect_round2(roster, &me, messages)?;
        for (id, package) in &round2 {
            let commitment = self.round1[id].commitment();
            if !zero_share_is_consistent(self.old.index(), package, commitment)? {
                let member = roster.pubkey_of(id).expect("collected from the roster");
                return Err(DkgError::InvalidRound2 {
                    member,
                    reason: "the share does not match the sender's round-1 commitment".into(),
                });
            }
        }
        let (key_package, pkp) = refresh::refresh_dkg_shares(
            &self.secret,
            &self.round1,
            &round2,
            self.old.group().public_key_package().clone(),
            self.old.key_package().clone(),
        )
        .map_err(|e| round2_error(roster, "refresh shares", e))?;
        let group = self.old.group().with_package(pkp)?;
        Ok(KeyShare::new(group, me, key_package)?)
    }
}

/// Checks a received share `f(i)` of a zero polynomial against the sender's commitments
/// `φ_1..φ_{t-1}` (the constant term `φ_0` is the identity, left out by frost):
/// `f(i)·G = Σ_{k≥1} i^k·φ_k = i · Σ_{k≥0} i^k·φ_{k+1}`. frost's `SecretShare::verify` checks
/// `s·G = Σ_{k≥0} i^k·C_k`, so the check is `verify` of `s = f(i)/i` against `C = φ_1..`.
fn zero_share_is_consistent(
    index: u16,
    package: &round2::Package,
    commitment: &crate::frost::keys::VerifiableSecretSharingCommitment,
) -> Result<bool, DkgError> {
    let mut be = [0u8; 32];
    be[30..].copy_from_slice(&index.to_be_bytes());
    let i = Secp256K1ScalarField::deserialize(&be).map_err(|e| DkgError::Frost {
        step: "refresh check",
        reason: e.to_string(),
    })?;
    let i_inv = Secp256K1ScalarField::invert(&i).map_err(|e| DkgError::Frost {
        step: "refresh check",
        reason: e.to_string(),
    })?;
    let f_bytes = Zeroizing::new(package.signing_share().serialize());
    let f_arr: Zeroizing<[u8; 32]> =
        Zeroizing::new(f_bytes[..].try_into().map_err(|_| DkgError::Frost {
            step: "refresh check",
            reason: "a signing share is not 32 bytes".into(),
        })?);
    let f = Secp256K1ScalarField::deserialize(&f_arr).map_err(|e| DkgError::Frost {
        step: "refresh check",
        reason: e.to_string(),
    })?;
    let scaled = Zeroizing::new(Secp256K1ScalarField::serialize(&(f * i_inv)));
    let scaled = SigningShare::deserialize(&scaled[..]).map_err(|e| DkgError::Frost {
        step: "refresh check",
        reason: e.to_string(),
    })?;
    let id = crate::roster::identifier(index);
    let check = SecretShare::new(id, scaled, commitment.clone());
    Ok(check.verify().is_ok())
}
