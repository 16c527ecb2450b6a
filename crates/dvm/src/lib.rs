//! The Quorum CI DVM runtime: everything a NIP-90 Data Vending Machine does that is not its job.
//!
//! A DVM role implements [`JobHandler`]; [`Dvm::start`] connects it to any relays, announces it
//! (NIP-89), and takes care of intake, validation, deduplication across restarts (the
//! [`journal`]), the bounded queue and concurrency limit, `processing`/`partial`/`error`
//! feedback, results, cancellation (NIP-09), and publishing with per-relay tracking.

pub mod client;
pub mod handler;
pub mod journal;
pub mod keyfile;
pub mod publish;
pub mod runtime;

pub use handler::{Job, JobContext, JobFailure, JobHandler, JobOutput, RelayError};
pub use runtime::{Dvm, DvmConfig, DvmError};
