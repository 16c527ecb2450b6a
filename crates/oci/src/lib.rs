//! Hermetic build images for Quorum CI: OCI images pinned by digest, fetched as Blossom blobs.
//!
//! A step that names `image: NAME@sha256:…` runs with that image's root filesystem as its `/`,
//! so runners on different distributions build with the same compiler and libraries. This crate
//! owns everything between the reference and a directory the sandbox can bind:
//!
//! - [`fetch`]: blobs by digest, from the runner's Blossom servers (`GET /<sha256>`) first, then
//!   from the registry in the reference (OCI Distribution API, anonymous pull), every byte
//!   re-hashed and a mismatch refused and named;
//! - [`unpack`]: layers applied with OCI semantics (whiteouts, opaque directories, hard links),
//!   nothing written, linked or deleted outside the root;
//! - [`cache`]: unpacked roots keyed by manifest digest, shared by jobs and processes, capped
//!   with LRU eviction, never half-visible;
//! - [`build`]: making an image from a root filesystem tarball or an OCI layout and uploading
//!   it to Blossom (`quorum image push`), and reading the layout a job wrote as an `oci:`
//!   artifact ([`build::read_layout`]: one image manifest, no symlinks, every blob re-hashed);
//! - [`layout`]: an image fetched by digest saved as an OCI image layout (`quorum run --out`).
//!
//! References themselves ([`ImageRef`], [`Digest`]) are protocol types and live in
//! `quorum_proto::image`, so that the pipeline crate can lint and hash them without I/O.

pub mod build;
pub mod cache;
mod error;
pub mod fetch;
pub mod layout;
pub mod unpack;

pub use cache::{ImageCache, ImageLease, ImageMeta};
pub use error::OciError;
pub use fetch::Fetcher;
pub use quorum_proto::image::{Digest, ImageRef, ImageRefError};
