//! Quorum mode over Nostr: how `n` member DVMs that each built the same job agree on its output
//! and sign the result with their shared quorum key.
//!
//! - [`channel`]: one relay subscription per session, an event store, and waiting on it.
//! - [`agreement`]: commit-reveal among the members (design §6.3).
//! - [`job`]: the member side of a quorum job request (mandate lookup and checks, share
//!   lookup), for runner and wrapper DVMs.
//! - [`keygen`]: making the quorum key over relays (DKG rounds 8710–8712, dealer deliveries
//!   8709), the member service that stores shares, and the maintainer's side of a DKG.
//! - [`member`]: a member's whole part in one job: mandate check, agreement, signing.
//! - [`release_gate`]: a release binding signed only after the approval gates it depends on
//!   passed.
//! - [`signing`]: FROST round 1 and round 2 over Nostr with a rotating coordinator, so that a
//!   member that goes silent is replaced by another t-subset instead of stalling (ROAST-style).
//!
//! The cryptography lives in `quorum-threshold` and the event shapes in `quorum-proto`; this
//! crate owns the order of the steps, the deadlines and who is trusted for what.

pub mod agreement;
pub mod channel;
pub mod job;
pub mod keygen;
pub mod member;
pub mod release_gate;
pub mod signing;
