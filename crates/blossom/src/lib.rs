//! Quorum CI's Blossom implementation: a content-addressed blob server, its on-disk store, and a
//! streaming client.
//!
//! Build artifacts and logs are addressed by their SHA-256 (BUD-01); this crate is where those
//! bytes are stored, served and fetched. The wire types (BUD-11 authorization tokens, the blob
//! descriptor) live in [`quorum_proto::blossom`] so that other crates can read them without
//! pulling in an HTTP stack.
//!
//! - [`address`]: the SSRF guard (which hosts a server may reach for a stranger), shared
//!   with the runners' git fetches.
//! - [`store`]: the blob store on disk (atomic publish, metadata sidecars, owners).
//! - [`server`]: the axum router (BUD-01/02/04/06/11/12) around a store.
//! - [`oci`]: the OCI Distribution API (`/v2/`) over the same store, for image pushes and pulls.
//! - [`client`]: uploads, downloads with re-hashing, mirror, preflight, multi-server upload.
//! - [`error`]: the server's error type (one `IntoResponse`) and the client's.
//!
//! Blobs never sit whole in memory: uploads, mirrors and downloads stream through a hashing
//! writer ([`sink`]) whose hashing and disk writes run on their own threads.

pub mod address;
pub mod client;
pub mod error;
pub mod oci;
pub mod server;
pub mod sink;
pub mod store;

pub use client::{BlossomClient, ServerOutcome, Uploaded};
pub use error::{BlossomError, ClientError};
pub use server::{BlossomConfig, BlossomServer};
pub use store::{BlobMeta, BlobStore, Quota, Usage};
