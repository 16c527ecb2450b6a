//! Test-only helpers shared by the integration tests of every Quorum CI crate.
//!
//! This crate is a dev-dependency only. It owns the bridge to implementations that nobody on
//! the project wrote (the npm packages under `interop/`), so that tests can ask them for a
//! second opinion on what our servers serve, and the harness for running our daemons as child
//! processes.

pub mod bunker;
pub mod daemon;
pub mod git;
pub mod node;
pub mod oci;
pub mod third_party;
