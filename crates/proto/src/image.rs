//! Build image references: `NAME@sha256:<manifest digest>` as pipelines and run-step requests
//! spell them (`docs/protocol.md`, "Build images").
//!
//! The digest is the identity of an image: what a plan hashes and quorum members agree on. The
//! name only says where a runner may look for the blobs when its Blossom servers lack them
//! (`HOST[:PORT]/path`, Docker Hub when there is no host); a tag after the name is kept for
//! people (`debian:bookworm@sha256:…`) and ignored for fetching.

use std::fmt;

/// Registry assumed when a reference names no host, as Docker and skopeo do.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("image reference is empty")]
    Empty,
    #[error(
        "image {0:?} has no digest: pin it as NAME@sha256:<64 hex> (`skopeo inspect --format \
         '{{{{.Digest}}}}' docker://NAME:TAG` prints it, `quorum image push` prints the whole reference)"
    )]
    NoDigest(String),
    #[error("image {reference:?}: digest {digest:?} is not sha256:<64 lowercase hex>")]
    BadDigest { reference: String, digest: String },
    #[error("image {reference:?}: {reason}")]
    BadName { reference: String, reason: String },
}

/// A sha256 digest of an OCI blob, kept as its 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        Self::from_hex(hex)
    }

    /// From 64 lowercase hex characters (a Blossom hash).
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Digest(hex.to_owned()))
    }

    /// The 64 hex characters, which are also the blob's Blossom address.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// A parsed image reference. Build one with [`ImageRef::parse`] (a digest is required) or
/// [`ImageRef::parse_unpinned`] (for lint, which must also understand `NAME:TAG`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host, with port when given (`ghcr.io`, `127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Repository path inside the registry (`library/debian`, `org/toolchain`).
    pub repository: String,
    /// Tag as written, if any; informational only once there is a digest.
    pub tag: Option<String>,
    /// The manifest (or image index) digest; `None` only from [`ImageRef::parse_unpinned`].
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `NAME[:TAG]@sha256:<hex>`; a reference without a digest is an error whose message
    /// says how to get one.
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        let r = Self::parse_unpinned(s)?;
        if r.digest.is_none() {
            return Err(ImageRefError::NoDigest(s.to_owned()));
        }
        Ok(r)
    }

    /// Parses `NAME[:TAG][@sha256:<hex>]`.
    pub fn parse_unpinned(s: &str) -> Result<Self, ImageRefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let bad_name = |reason: &str| ImageRefError::BadName {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).ok_or_else(|| ImageRefError::BadDigest {
                    reference: s.to_owned(),
                    digest: d.to_owned(),
                })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/' (a port is before it).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(name_tag[at + 1..].to_owned()))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = &tag {
            let ok = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad_name(
                    "the tag may hold only [A-Za-z0-9_.-], at most 128",
                ));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        if path.is_empty() {
            return Err(bad_name("no repository name"));
        }
        for component in path.split('/') {
            let ok = !component.is_empty()
                && component.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && component
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(bad_name(
                    "each path component must be lowercase [a-z0-9._-] starting with a letter or digit",
                ));
            }
        }
        if registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        {
            return Err(bad_name("the registry host is not a host name"));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The pinned digest. Panics only for a reference from [`ImageRef::parse_unpinned`] without
    /// one, which callers check first.
    pub fn digest(&self) -> &Digest {
        self.digest.as_ref().expect("a pinned image reference")
    }

    /// Whether the registry is on this machine (plain HTTP is allowed for it).
    pub fn registry_is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for ImageRef {
    /// The canonical spelling: `registry/repository[:tag][@sha256:hex]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_hosts_ports_tags_and_digests() {
        let r = ImageRef::parse(&format!("debian@{D}")).unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.digest().to_string(), D);

        let r = ImageRef::parse(&format!("127.0.0.1:5000/tools/cc:v1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "tools/cc");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.registry_is_loopback());
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/tools/cc:v1@{D}"));

        let r = ImageRef::parse(&format!("ghcr.io/org/img@{D}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("ghcr.io", "org/img")
        );
        assert!(!r.registry_is_loopback());
    }

    #[test]
    fn refuses_missing_or_bad_digests_and_names() {
        let e = ImageRef::parse("debian:bookworm").unwrap_err();
        assert!(matches!(e, ImageRefError::NoDigest(_)));
        assert!(e.to_string().contains("skopeo inspect"), "{e}");
        assert!(
            ImageRef::parse_unpinned("debian:bookworm")
                .unwrap()
                .digest
                .is_none()
        );
        assert!(matches!(
            ImageRef::parse("debian@sha256:abc"),
            Err(ImageRefError::BadDigest { .. })
        ));
        assert!(matches!(
            ImageRef::parse(&format!("Debian@{D}")),
            Err(ImageRefError::BadName { .. })
        ));
        assert!(matches!(
            ImageRef::parse(&format!("host.io/../x@{D}")),
            Err(ImageRefError::BadName { .. })
        ));
        assert_eq!(ImageRef::parse(" "), Err(ImageRefError::Empty));
    }
}
