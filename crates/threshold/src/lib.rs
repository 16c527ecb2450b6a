//! Threshold Nostr keys for Quorum CI: FROST (`frost-secp256k1-tr` 3.0) without any transport.
//!
//! A *quorum* is `n` member DVMs that hold shares of one Nostr key (the quorum key); any `t` of
//! them produce a plain BIP-340 Schnorr signature of a Nostr event id, which every Nostr
//! implementation verifies as if one key had signed. This crate owns the cryptography and the
//! typed protocol steps; carrying the messages (as Nostr events, NIP-44 encrypted where they are
//! secret) is the DVM runtime's job. The only I/O here is the share file store ([`store`]).
//!
//! # Conventions other crates rely on
//!
//! - A member is identified by its DVM's Nostr public key.
//! - When a quorum is created, its members are ordered by ascending x-only public key hex, and
//!   the FROST identifier of a member is its 1-based position in that order
//!   ([`member_index`], [`Roster::new`]). The index is then *fixed* for the life of the quorum:
//!   the [`Roster`] stores explicit `(index, pubkey)` pairs, and a member that replaces another
//!   ([`repair`]) inherits the leaving member's index, wherever its pubkey sorts.
//! - The quorum public key is `PublicKeyPackage::verifying_key()` in x-only form (the SEC1
//!   encoding without its first byte), as a [`nostr::PublicKey`].
//! - Keys made by a DKG carry frost's BIP-341 taproot tweak (applied inside frost); keys made
//!   by a dealer do not. Either way, signing uses plain `round2::sign` and `aggregate`: this
//!   crate never calls frost's `*_with_tweak` functions.
//! - Signers sign only events: every signer recomputes the event id from the full
//!   [`nostr::UnsignedEvent`] ([`sign::SigningRequest`]); no API signs a bare digest.
//!
//! # Modules
//!
//! - [`roster`]: who the members are, their fixed indices, the threshold.
//! - [`group`]: the public description of a quorum ([`QuorumGroup`]) and event verification.
//! - [`share`]: one member's secret [`KeyShare`].
//! - [`dealer`]: trusted-dealer key generation (the dealer holds the whole key).
//! - [`dkg`]: distributed key generation, a per-member state machine over serde messages.
//! - [`refresh`]: proactive refresh of all shares, same quorum key (DKG-style, per member).
//! - [`repair`]: a new member takes over a leaving member's index (repairable threshold scheme).
//! - [`sign`]: commit, sign, aggregate into a verified [`nostr::Event`].
//! - [`store`]: saving and loading a share file (atomic, mode 0600).
//!
//! # Secrets
//!
//! Secret values (signing shares, nonces, DKG and refresh polynomials, DKG round-2 messages)
//! live in frost types that zeroize on drop; repair deltas and sigmas are `Copy` scalars in
//! frost, and this crate's wrappers wipe their own copy on drop. Every secret type has a
//! `Debug` that prints no secret, signing nonces are neither `Clone` nor serializable, and
//! secrets are serialized only into `zeroize::Zeroizing` buffers. Zeroization is best effort:
//! frost's internal temporaries (e.g. its `serialize()` buffers) are out of this crate's reach.
//! Error messages never contain secret material.

#![warn(missing_docs)]

pub mod dealer;
pub mod dkg;
pub mod group;
mod hexser;
pub mod refresh;
pub mod repair;
pub mod roster;
pub mod share;
pub mod sign;
pub mod store;

pub use frost_secp256k1_tr as frost;

pub use group::{GroupError, QuorumGroup};
pub use roster::{Member, Roster, RosterError, member_index};
pub use share::{KeyShare, ShareError};
pub use sign::{NonceCommitment, SignError, SignatureShare, SigningNonces, SigningRequest};

/// Every error of this crate, for callers that do not need to tell the steps apart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A roster was invalid.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// A quorum group was invalid or an event did not verify.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// A key share was invalid.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// Trusted-dealer key generation failed.
    #[error(transparent)]
    Dealer(#[from] dealer::DealerError),
    /// A DKG or refresh step failed.
    #[error(transparent)]
    Dkg(#[from] dkg::DkgError),
    /// A repair step failed.
    #[error(transparent)]
    Repair(#[from] repair::RepairError),
    /// A signing step failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Saving or loading a share file failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}
