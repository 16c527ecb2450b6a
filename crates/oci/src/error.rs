//! [`OciError`]: everything fetching, checking, unpacking and caching an image can refuse.

use std::path::{Path, PathBuf};

/// Why an image could not be made ready. Every variant names the blob, layer or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} from {source_url}: got sha256:{actual}; refused")]
    DigestMismatch {
        digest: String,
        actual: String,
        source_url: String,
    },
    #[error("blob {digest} from {source_url}: larger than {limit} bytes; refused")]
    TooLarge {
        digest: String,
        limit: u64,
        source_url: String,
    },
    #[error("blob {digest}: found on no source ({tried})")]
    NotFound { digest: String, tried: String },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("manifest {digest}: {reason}")]
    BadManifest { digest: String, reason: String },
    #[error("layer {layer}: entry {path:?}: {reason}")]
    BadLayer {
        layer: String,
        path: String,
        reason: String,
    },
    #[error(
        "registry {registry} is reached over plain HTTP only on loopback; the operator must \
         allow it (--image-insecure-registry {registry})"
    )]
    InsecureRegistry { registry: String },
    #[error("image {0}: {1}")]
    Image(String, String),
}

impl OciError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        OciError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
