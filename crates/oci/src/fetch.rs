//! Fetching image blobs by digest: Blossom servers first, then the registry the reference names.
//!
//! A Blossom server is asked `GET /<hex>` (the blob's sha256 is its Blossom address); the
//! registry is asked through the OCI Distribution API (`/v2/<repo>/manifests/<digest>`,
//! `/v2/<repo>/blobs/<digest>`), anonymously, following a `WWW-Authenticate: Bearer` challenge
//! for an anonymous pull token as Docker Hub and GHCR want. A registry is reached over HTTPS,
//! or plain HTTP when it is on loopback or the operator listed it as insecure.
//!
//! Every byte is hashed as it arrives; a blob whose sha256 is not the one asked for is
//! deleted and refused, naming where it came from. A blob larger than the size its descriptor
//! declares is cut off and refused.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use quorum_proto::image::{Digest, ImageRef};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::OciError;

/// What a registry is asked for when fetching a manifest by digest: image manifests and
/// indexes, OCI and Docker spellings.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest, index or config accepted (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Where blobs come from, in order.
#[derive(Debug)]
pub struct Fetcher {
    http: reqwest::Client,
    blossom: Vec<Url>,
    insecure: Vec<String>,
    /// Anonymous pull tokens per `registry/repository`.
    tokens: Mutex<HashMap<String, String>>,
}

/// Where [`Fetcher::fetch_tee`] sends a blob's bytes as they arrive.
pub type Tee = tokio::sync::mpsc::Sender<bytes::Bytes>;

/// What kind of object a digest names, for the registry path it lives under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Manifest,
    Blob,
}

/// A verified blob on disk.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub size: u64,
    /// Where it came from (a URL), for logs.
    pub source: String,
}

impl Fetcher {
    /// A fetcher asking `blossom` servers first, then registries. `insecure` lists registries
    /// (`host[:port]`) that may be reached over plain HTTP although they are not on loopback.
    pub fn new(blossom: Vec<Url>, insecure: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("quorum-ci/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Fetcher {
            http,
            blossom,
            insecure,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The Blossom servers asked first.
    pub fn blossom(&self) -> &[Url] {
        &self.blossom
    }

    /// Fetches `digest` into `dest` (created or replaced), re-hashing it; at most `max` bytes.
    /// Each source is tried in turn; a source that serves other bytes is refused and named,
    /// and if no source serves the right bytes that refusal is the error.
    pub async fn fetch(
        &self,
        image: &ImageRef,
        digest: &Digest,
        kind: BlobKind,
        max: u64,
        dest: &Path,
    ) -> Result<Fetched, OciError> {
        self.fetch_tee(image, digest, kind, max, dest, None)
            .await
            .map(|(fetched, _)| fetched)
    }

    /// [`Fetcher::fetch`], also sending the bytes of the first source tried to `tee` as they
    /// arrive (to unpack while downloading). The flag says whether `tee` got exactly the bytes
    /// that verified; if not (that source failed, or the receiver went away), what it got must
    /// be thrown away. `tee` is dropped before this returns. Bytes sent to `tee` are not
    /// written to `dest`: with the flag set, `dest` does not exist; without it, `dest` holds
    /// the blob if a later source served it, else fetch it again.
    pub async fn fetch_tee(
        &self,
        image: &ImageRef,
        digest: &Digest,
        kind: BlobKind,
        max: u64,
        dest: &Path,
        tee: Option<Tee>,
    ) -> Result<(Fetched, bool), OciError> {
        let mut tee = tee;
        let mut tried = Vec::new();
        let mut refused: Option<OciError> = None;
        for server in &self.blossom {
            let Ok(url) = server.join(digest.hex()) else {
                continue;
            };
            let attempt = self
                .download_any(url.clone(), None, Some(digest), max, dest, &mut tee)
                .await;
            match attempt {
                Ok(Some((size, _))) => {
                    let complete = tee.take().is_some();
                    return Ok((
                        Fetched {
                            size,
                            source: url.to_string(),
                        },
                        complete,
                    ));
                }
                Ok(None) => tried.push(format!("{url}: not found")),
                Err(e @ (OciError::DigestMismatch { .. } | OciError::TooLarge { .. })) => {
                    tracing::warn!("{e}");
                    tried.push(e.to_string());
                    refused.get_or_insert(e);
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        match self
            .fetch_from_registry(image, digest, kind, max, dest, &mut tee)
            .await
        {
            Ok(Some(fetched)) => {
                let complete = tee.take().is_some();
                return Ok((fetched, complete));
            }
            Ok(None) => tried.push(format!("registry {}: not found", image.registry)),
            Err(e @ (OciError::DigestMismatch { .. } | OciError::TooLarge { .. })) => {
                refused.get_or_insert(e);
            }
            Err(e) => tried.push(e.to_string()),
        }
        Err(refused.unwrap_or_else(|| OciError::NotFound {
            digest: digest.to_string(),
            tried: tried.join("; "),
        }))
    }

    /// The digest a tag names now, from the registry (never from Blossom, which has no tags
    /// to trust): the sha256 of the manifest bytes it serves, which is then fetched by digest
    /// like any pinned image. `scratch` is where the manifest is written meanwhile.
    pub async fn resolve_tag(&self, image: &ImageRef, scratch: &Path) -> Result<Digest, OciError> {
        let tag = image.tag.as_deref().unwrap_or("latest");
        let url = self
            .registry_base(image)?
            .join(&format!("manifests/{tag}"))
            .map_err(|e| OciError::Image(image.to_string(), e.to_string()))?;
        let key = format!("{}/{}", image.registry, image.repository);
        let saved = self
            .download_with_token(
                url.clone(),
                Some(MANIFEST_ACCEPT),
                &key,
                None,
                MAX_MANIFEST_BYTES,
                scratch,
                &mut None,
            )
            .await?;
        let _ = tokio::fs::remove_file(scratch).await;
        let (_, hex) = saved.ok_or_else(|| OciError::NotFound {
            digest: format!("tag {tag}"),
            tried: url.to_string(),
        })?;
        Ok(Digest::from_hex(&hex).expect("sha256 hex"))
    }

    fn registry_base(&self, image: &ImageRef) -> Result<Url, OciError> {
        let host = if image.registry == quorum_proto::image::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            image.registry.as_str()
        };
        let scheme = if image.registry_is_loopback() || self.insecure.contains(&image.registry) {
            "http"
        } else {
            "https"
        };
        Url::parse(&format!("{scheme}://{host}/v2/{}/", image.repository)).map_err(|e| {
            OciError::Image(image.to_string(), format!("no registry URL from it: {e}"))
        })
    }

    async fn fetch_from_registry(
        &self,
        image: &ImageRef,
        digest: &Digest,
        kind: BlobKind,
        max: u64,
        dest: &Path,
        tee: &mut Option<Tee>,
    ) -> Result<Option<Fetched>, OciError> {
        let base = self.registry_base(image)?;
        let path = match kind {
            BlobKind::Manifest => format!("manifests/{digest}"),
            BlobKind::Blob => format!("blobs/{digest}"),
        };
        let url = base
            .join(&path)
            .map_err(|e| OciError::Image(image.to_string(), e.to_string()))?;
        let accept = (kind == BlobKind::Manifest).then_some(MANIFEST_ACCEPT);
        let key = format!("{}/{}", image.registry, image.repository);
        let size = self
            .download_with_token(url.clone(), accept, &key, Some(digest), max, dest, tee)
            .await?;
        Ok(size.map(|(size, _)| Fetched {
            size,
            source: url.to_string(),
        }))
    }

    #[allow(clippy::too_many_arguments)] // private; one call per source kind
    async fn download_with_token(
        &self,
        url: Url,
        accept: Option<&str>,
        key: &str,
        digest: Option<&Digest>,
        max: u64,
        dest: &Path,
        tee: &mut Option<Tee>,
    ) -> Result<Option<(u64, String)>, OciError> {
        let token = self.tokens.lock().expect("not poisoned").get(key).cloned();
        let mut request = self.http.get(url.clone());
        if let Some(a) = accept {
            request = request.header(ACCEPT, a);
        }
        if let Some(t) = &token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let transport = |e: reqwest::Error| OciError::Transport {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        };
        let response = request.send().await.map_err(transport)?;
        if response.status() == StatusCode::UNAUTHORIZED && token.is_none() {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Some(token) = self.anonymous_token(&url, &challenge).await? else {
                return Err(OciError::Transport {
                    url: url.to_string(),
                    reason: "401: the registry wants credentials; only anonymous pull is supported"
                        .into(),
                });
            };
            self.tokens
                .lock()
                .expect("not poisoned")
                .insert(key.to_owned(), token.clone());
            let mut request = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, format!("Bearer {token}"));
            if let Some(a) = accept {
                request = request.header(ACCEPT, a);
            }
            let response = request.send().await.map_err(transport)?;
            return self.save(response, &url, digest, max, dest, tee).await;
        }
        self.save(response, &url, digest, max, dest, tee).await
    }

    /// An anonymous token from a `Bearer realm=…,service=…,scope=…` challenge.
    async fn anonymous_token(
        &self,
        url: &Url,
        challenge: &str,
    ) -> Result<Option<String>, OciError> {
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let mut realm = None;
        let mut query = Vec::new();
        for part in split_challenge(params) {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim() {
                "realm" => realm = Some(v),
                "service" | "scope" => query.push((k.trim().to_owned(), v)),
                _ => {}
            }
        }
        let Some(realm) = realm.and_then(|r| Url::parse(&r).ok()) else {
            return Ok(None);
        };
        // A token from a plain-HTTP realm of a remote registry could be swapped in transit;
        // that only matters for what it unlocks, and every blob is re-hashed anyway.
        let response = self
            .http
            .get(realm.clone())
            .query(&query)
            .send()
            .await
            .map_err(|e| OciError::Transport {
                url: url.to_string(),
                reason: format!("token from {realm}: {}", e.without_url()),
            })?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let body: serde_json::Value = response.json().await.map_err(|e| OciError::Transport {
            url: realm.to_string(),
            reason: format!("token response: {}", e.without_url()),
        })?;
        Ok(body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_owned))
    }

    async fn download_any(
        &self,
        url: Url,
        accept: Option<&str>,
        digest: Option<&Digest>,
        max: u64,
        dest: &Path,
        tee: &mut Option<Tee>,
    ) -> Result<Option<(u64, String)>, OciError> {
        let mut request = self.http.get(url.clone());
        if let Some(a) = accept {
            request = request.header(ACCEPT, a);
        }
        let response = request.send().await.map_err(|e| OciError::Transport {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        })?;
        self.save(response, &url, digest, max, dest, tee).await
    }

    /// Streams a response into `dest`, hashing, and checks the hash against `digest` when
    /// given; `None` on 404, else the size and the sha256 hex.
    async fn save(
        &self,
        mut response: reqwest::Response,
        url: &Url,
        digest: Option<&Digest>,
        max: u64,
        dest: &Path,
        tee: &mut Option<Tee>,
    ) -> Result<Option<(u64, String)>, OciError> {
        let shown = digest.map_or_else(|| url.path().to_owned(), |d| d.to_string());
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            other => {
                return Err(OciError::Transport {
                    url: url.to_string(),
                    reason: format!("HTTP {other}"),
                });
            }
        }
        let too_large = || OciError::TooLarge {
            digest: shown.clone(),
            limit: max,
            source_url: url.to_string(),
        };
        if response.content_length().is_some_and(|l| l > max) {
            return Err(too_large());
        }
        // Bytes that go to a tee are not written to `dest` as well: the receiver unpacks them
        // as they come, and writing a second copy only to delete it once the layer verified
        // cost a third of a first fetch. Buffered: tokio's File hands every write to a
        // blocking thread, and HTTP chunks are small.
        let mut file = match tee {
            Some(_) => None,
            None => Some(tokio::io::BufWriter::with_capacity(
                1 << 20,
                tokio::fs::File::create(dest)
                    .await
                    .map_err(|e| OciError::io("creating", dest, e))?,
            )),
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let result: Result<String, OciError> = async {
            while let Some(chunk) = response.chunk().await.map_err(|e| OciError::Transport {
                url: url.to_string(),
                reason: e.without_url().to_string(),
            })? {
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large());
                }
                // Sent before it is hashed, so that the unpacker works on this chunk while
                // this thread hashes it (the two take about the same time; hashing first made
                // them take turns).
                if let Some(t) = tee.as_ref()
                    && t.send(chunk.clone()).await.is_err()
                {
                    // The unpacker stopped reading: it has what it needs, or failed.
                    *tee = None;
                }
                hasher.update(&chunk);
                if let Some(file) = file.as_mut() {
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| OciError::io("writing", dest, e))?;
                }
            }
            if let Some(file) = file.as_mut() {
                file.flush()
                    .await
                    .map_err(|e| OciError::io("writing", dest, e))?;
            }
            let actual = hex::encode(hasher.finalize());
            if let Some(digest) = digest
                && actual != digest.hex()
            {
                return Err(OciError::DigestMismatch {
                    digest: digest.to_string(),
                    actual,
                    source_url: url.to_string(),
                });
            }
            Ok(actual)
        }
        .await;
        match result {
            Ok(actual) => Ok(Some((size, actual))),
            Err(e) => {
                // Whatever the tee got is not the blob.
                *tee = None;
                if let Some(file) = file {
                    drop(file);
                    let _ = tokio::fs::remove_file(dest).await;
                }
                Err(e)
            }
        }
    }
}

/// Splits `a="x,y",b=z` on the commas outside quotes.
fn split_challenge(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_for_loopback_or_registries_the_operator_lists() {
        let d = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let fetcher = Fetcher::new(Vec::new(), vec!["10.0.0.5:5000".into()]);
        let base = |r: &str| {
            let image = ImageRef::parse(&format!("{r}{d}")).unwrap();
            fetcher.registry_base(&image).unwrap().to_string()
        };
        assert_eq!(base("127.0.0.1:5000/a/b"), "http://127.0.0.1:5000/v2/a/b/");
        assert_eq!(base("localhost:5000/a"), "http://localhost:5000/v2/a/");
        assert_eq!(base("10.0.0.5:5000/a"), "http://10.0.0.5:5000/v2/a/");
        assert_eq!(base("10.0.0.6:5000/a"), "https://10.0.0.6:5000/v2/a/");
        assert_eq!(base("ghcr.io/org/img"), "https://ghcr.io/v2/org/img/");
        assert_eq!(
            base("debian"),
            "https://registry-1.docker.io/v2/library/debian/"
        );
    }

    #[test]
    fn challenge_splits_outside_quotes() {
        let parts = super::split_challenge(
            r#"realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parts.len(), 3);
        assert!(parts[2].ends_with("pull,push\""));
    }
}
