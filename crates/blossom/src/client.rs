//! A streaming Blossom client: upload a file, download into a file with re-hashing, check,
//! mirror, delete, list, BUD-06 preflight, and upload to several servers with a per-server
//! outcome.
//!
//! Every request that needs it carries a fresh BUD-11 token built with
//! [`quorum_proto::blossom::AuthBuilder`], scoped to the server's host and the blob's hash and
//! valid for [`BlossomClient::with_auth_ttl`] (two minutes by default). Uploads hash the file
//! first (the token must name the hash), then stream it with `Content-Length` and
//! `X-SHA-256`; downloads are written to a temp file beside the destination, re-hashed while
//! they arrive and renamed into place only if the hash is right.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quorum_proto::blossom::{AuthBuilder, BlobDescriptor, Sha256Hex, Verb, encode_header};
use quorum_proto::nostr::signer::IntoNostrSigner;
use quorum_proto::nostr::{NostrSigner, PublicKey, Tag, TagKind, Timestamp};
use reqwest::header;
use reqwest::{Method, StatusCode};
use url::Url;

use crate::error::{ClientError, Refusal, sanitize_reason};
use crate::sink::{HashingWriter, SinkError, TempFile, file_stream, sha256_file};

/// How tokens are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthProfile {
    /// BUD-11 as written: `t`, `expiration`, `x`, and `server` = the bare lowercase host.
    #[default]
    Bud11,
    /// For servers that bind tokens to one HTTP request (blossom-rs 0.6): one `server` tag
    /// holding the server's origin URL (scheme, host, port) instead of the bare host, plus
    /// `u` (request URL) and `method` tags. Not BUD-11; BUD-11 servers reject the URL-shaped
    /// `server` tag unless they are liberal about it (ours is).
    RequestBound,
}

/// A successful upload or mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The server's descriptor (its hash and size were checked against what we sent).
    pub descriptor: BlobDescriptor,
    /// `201 Created` (new on that server) rather than `200 OK` (already there).
    pub created: bool,
}

/// What happened on one server in [`BlossomClient::upload_to_many`]. Nothing is swallowed:
/// every failure keeps its status, reason or transport detail.
#[derive(Debug)]
pub enum ServerOutcome {
    /// Stored (or already there), with a descriptor naming our hash and size.
    Stored {
        /// The server.
        server: Url,
        /// The result.
        uploaded: Uploaded,
    },
    /// The server answered with an error status (401, 402, 403, 409, 413, 415, 429, 5xx…).
    Refused {
        /// The server.
        server: Url,
        /// The status code.
        status: u16,
        /// Its class.
        refusal: Refusal,
        /// `X-Reason`, sanitised.
        reason: Option<String>,
    },
    /// No HTTP answer: DNS, TCP, TLS, timeout, or a broken connection.
    Unreachable {
        /// The server.
        server: Url,
        /// The error chain.
        detail: String,
    },
    /// The server accepted the upload but its descriptor names another hash or size.
    DescriptorMismatch {
        /// The server.
        server: Url,
        /// The details.
        error: ClientError,
    },
    /// Anything else (local I/O, signer, unparseable answer).
    Failed {
        /// The server.
        server: Url,
        /// The error.
        error: ClientError,
    },
}

impl ServerOutcome {
    fn new(server: Url, result: Result<Uploaded, ClientError>) -> Self {
        match result {
            Ok(uploaded) => ServerOutcome::Stored { server, uploaded },
            Err(ClientError::Status {
                status,
                refusal,
                reason,
                ..
            }) => ServerOutcome::Refused {
                server,
                status,
                refusal,
                reason,
            },
            Err(ClientError::Transport { detail, .. }) => {
                ServerOutcome::Unreachable { server, detail }
            }
            Err(error @ ClientError::DescriptorMismatch { .. }) => {
                ServerOutcome::DescriptorMismatch { server, error }
            }
            Err(error) => ServerOutcome::Failed { server, error },
        }
    }

    /// The server this outcome is about.
    pub fn server(&self) -> &Url {
        match self {
            ServerOutcome::Stored { server, .. }
            | ServerOutcome::Refused { server, .. }
            | ServerOutcome::Unreachable { server, .. }
            | ServerOutcome::DescriptorMismatch { server, .. }
            | ServerOutcome::Failed { server, .. } => server,
        }
    }

    /// Whether the blob is on this server now.
    pub fn is_stored(&self) -> bool {
        matches!(self, ServerOutcome::Stored { .. })
    }
}

/// A Blossom client signing with one Nostr identity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlossomClient {
    http: reqwest::Client,
    signer: Arc<dyn NostrSigner>,
    profile: AuthProfile,
    auth_ttl: Duration,
    fsync: bool,
    max_download: u64,
}

impl BlossomClient {
    /// A client signing with `signer` (`Keys`, a NIP-46 bunker, …).
    pub fn new(signer: impl IntoNostrSigner) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self {
            http,
            signer: signer.into_nostr_signer(),
            profile: AuthProfile::Bud11,
            auth_ttl: Duration::from_secs(120),
            fsync: true,
            max_download: u64::MAX,
        }
    }

    /// The same client (HTTP settings, token shape) signing as someone else: e.g. a throwaway
    /// key, so that what it uploads is not listed under the main key (BUD-12).
    pub fn with_signer(&self, signer: impl IntoNostrSigner) -> Self {
        Self {
            signer: signer.into_nostr_signer(),
            ..self.clone()
        }
    }

    /// Uses this HTTP client (timeouts, proxies, TLS roots).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Shapes tokens for a server with non-standard requirements.
    pub fn with_auth_profile(mut self, profile: AuthProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Token lifetime (default two minutes: CI tokens should expire quickly).
    pub fn with_auth_ttl(mut self, ttl: Duration) -> Self {
        self.auth_ttl = ttl;
        self
    }

    /// Whether downloads are fsynced before the rename (default true).
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Refuse downloads larger than this.
    pub fn with_max_download(mut self, bytes: u64) -> Self {
        self.max_download = bytes;
        self
    }

    /// The signer's public key.
    pub async fn public_key(&self) -> Result<PublicKey, ClientError> {
        self.signer
            .get_public_key()
            .await
            .map_err(|e| ClientError::Signer(e.to_string()))
    }

    /// A signed `Authorization` header value for one request.
    pub async fn authorization(
        &self,
        verb: Verb,
        server: &Url,
        hashes: &[Sha256Hex],
        method: &Method,
        request_url: &Url,
    ) -> Result<String, ClientError> {
        let now = Timestamp::now();
        let mut builder = AuthBuilder::new(verb, now + self.auth_ttl)
            .created_at(now)
            .content(match verb {
                Verb::Upload => "Upload blob",
                Verb::Get => "Get blob",
                Verb::List => "List blobs",
                Verb::Delete => "Delete blob",
                Verb::Media => "Upload media",
            });
        for h in hashes {
            builder = builder.hash(*h);
        }
        builder = match self.profile {
            AuthProfile::Bud11 => builder.server(server.as_str()),
            AuthProfile::RequestBound => builder
                .raw_server_tag(server.origin().ascii_serialization())
                .extra_tag(Tag::custom(TagKind::u(), [request_url.as_str()]))
                .extra_tag(Tag::custom(
                    TagKind::Custom("method".into()),
                    [method.as_str()],
                ))
                // Such servers also refuse a replayed event id, and two tokens for the same
                // request within one second would otherwise be byte-identical.
                .extra_tag(Tag::custom(TagKind::Custom("nonce".into()), [nonce()])),
        };
        let event = builder
            .into_event_builder()
            .sign(&self.signer)
            .await
            .map_err(|e| ClientError::Signer(e.to_string()))?;
        Ok(encode_header(&event))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, ClientError> {
        request
            .send()
            .await
            .map_err(|e| ClientError::transport(url.as_str(), &e))
    }

    /// Uploads a file: hashes it, then streams it (BUD-02).
    pub async fn upload_file(&self, server: &Url, path: &Path) -> Result<Uploaded, ClientError> {
        let (sha, size) = sha256_file(path)
            .await
            .map_err(|e| ClientError::io("hashing", path, e))?;
        self.upload_file_with_hash(server, path, sha, size).await
    }

    /// Uploads a file whose hash and size the caller already knows (a build DVM hashed its
    /// artifacts anyway). The server re-hashes and answers 409 if they are wrong.
    pub async fn upload_file_with_hash(
        &self,
        server: &Url,
        path: &Path,
        sha256: Sha256Hex,
        size: u64,
    ) -> Result<Uploaded, ClientError> {
        let url = endpoint(server, "/upload")?;
        let auth = self
            .authorization(Verb::Upload, server, &[sha256], &Method::PUT, &url)
            .await?;
        let file = open_file(path).await?;
        let mime = mime_guess::from_path(path)
            .first_raw()
            .unwrap_or(quorum_proto::blossom::DEFAULT_MIME);
        let body = reqwest::Body::wrap_stream(file_stream(file, 0, size));
        let request = self
            .http
            .put(url.clone())
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_LENGTH, size)
            .header(header::CONTENT_TYPE, mime)
            .header("x-sha-256", sha256.to_hex())
            .body(body);
        let response = self.send(request, &url).await?;
        descriptor_from(response, &url, sha256, size).await
    }

    /// Asks a server to fetch `source_url` itself (BUD-04), authorising exactly `sha256`.
    pub async fn mirror(
        &self,
        target: &Url,
        source_url: &Url,
        sha256: Sha256Hex,
    ) -> Result<Uploaded, ClientError> {
        let url = endpoint(target, "/mirror")?;
        let auth = self
            .authorization(Verb::Upload, target, &[sha256], &Method::PUT, &url)
            .await?;
        let body = serde_json::json!({ "url": source_url.as_str() }).to_string();
        let request = self
            .http
            .put(url.clone())
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.send(request, &url).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(&url, &response));
        }
        let descriptor: BlobDescriptor = parse_json(response, &url).await?;
        if descriptor.sha256 != sha256 {
            return Err(ClientError::DescriptorMismatch {
                sha256,
                size: descriptor.size,
                got_sha256: descriptor.sha256,
                got_size: descriptor.size,
            });
        }
        Ok(Uploaded {
            descriptor,
            created: status == StatusCode::CREATED,
        })
    }

    /// BUD-06: would the server accept this upload? `Ok(())` on 200; the refusal otherwise.
    pub async fn preflight(
        &self,
        server: &Url,
        sha256: Sha256Hex,
        size: u64,
        mime_type: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = endpoint(server, "/upload")?;
        let auth = self
            .authorization(Verb::Upload, server, &[sha256], &Method::HEAD, &url)
            .await?;
        let mut request = self
            .http
            .head(url.clone())
            .header(header::AUTHORIZATION, auth)
            .header("x-sha-256", sha256.to_hex())
            .header("x-content-length", size);
        if let Some(m) = mime_type {
            request = request.header("x-content-type", m);
        }
        let response = self.send(request, &url).await?;
        if response.status() == StatusCode::OK {
            Ok(())
        } else {
            Err(status_error(&url, &response))
        }
    }

    /// `GET`/`HEAD` without a token first (most servers serve blobs publicly, and a remote
    /// signer may cost a round trip); on 401, once more with a `get` token for this blob.
    async fn fetch_blob(
        &self,
        method: Method,
        url: &Url,
        sha256: Sha256Hex,
    ) -> Result<reqwest::Response, ClientError> {
        let response = self
            .send(self.http.request(method.clone(), url.clone()), url)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let auth = self
            .authorization(Verb::Get, url, &[sha256], &method, url)
            .await?;
        self.send(
            self.http
                .request(method, url.clone())
                .header(header::AUTHORIZATION, auth),
            url,
        )
        .await
    }

    /// Whether a server holds a blob (`HEAD /<sha256>`).
    pub async fn has(&self, server: &Url, sha256: Sha256Hex) -> Result<bool, ClientError> {
        let url = endpoint(server, &format!("/{sha256}"))?;
        let response = self.fetch_blob(Method::HEAD, &url, sha256).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&url, &response)),
        }
    }

    /// Downloads `sha256` from a server into `dest` (see [`BlossomClient::download_url`]).
    pub async fn download(
        &self,
        server: &Url,
        sha256: Sha256Hex,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        let url = endpoint(server, &format!("/{sha256}"))?;
        self.download_url(&url, sha256, dest).await
    }

    /// Downloads a blob URL into `dest`, re-hashing the bytes as they arrive. The bytes go to a
    /// temp file beside `dest`, which is renamed into place only if they hash to `sha256`;
    /// on any failure nothing is left behind. Returns the size.
    pub async fn download_url(
        &self,
        url: &Url,
        sha256: Sha256Hex,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        self.download_url_with_progress(url, sha256, dest, &|_, _| {})
            .await
    }

    /// [`BlossomClient::download_url`], calling `progress(bytes so far, total if the server
    /// said)` as the bytes arrive, for a progress bar.
    pub async fn download_url_with_progress(
        &self,
        url: &Url,
        sha256: Sha256Hex,
        dest: &Path,
        progress: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<u64, ClientError> {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let response = self.fetch_blob(Method::GET, url, sha256).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(url, &response));
        }
        if response
            .content_length()
            .is_some_and(|l| l > self.max_download)
        {
            return Err(ClientError::TooLarge {
                limit: self.max_download,
            });
        }
        let (temp, file) = TempFile::create_in(&parent, ".blossom-download-")
            .map_err(|e| ClientError::io("creating a temp file in", &parent, e))?;
        let mut writer = HashingWriter::new(file, self.max_download, self.fsync);
        let mut response = response;
        let total = response.content_length();
        let mut received = 0u64;
        progress(0, total);
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| ClientError::transport(url.as_str(), &e))?;
            let Some(chunk) = chunk else { break };
            received += chunk.len() as u64;
            progress(received, total);
            writer.write_bytes(chunk).await.map_err(|e| match e {
                SinkError::TooLarge { limit } => ClientError::TooLarge { limit },
                SinkError::Io(e) => ClientError::io("writing", temp.path(), e),
            })?;
        }
        let written = writer.finish().await.map_err(|e| match e {
            SinkError::TooLarge { limit } => ClientError::TooLarge { limit },
            SinkError::Io(e) => ClientError::io("writing", temp.path(), e),
        })?;
        if written.sha256 != sha256 {
            return Err(ClientError::HashMismatch {
                expected: sha256,
                actual: written.sha256,
            });
        }
        let dest_owned = dest.to_path_buf();
        let fsync = self.fsync;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            temp.persist(&dest_owned)?;
            if fsync {
                std::fs::File::open(&parent)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ClientError::io("renaming to", dest, std::io::Error::other(e)))?
        .map_err(|e| ClientError::io("renaming to", dest, e))?;
        Ok(written.size)
    }

    /// Deletes our ownership of a blob (BUD-12).
    pub async fn delete(&self, server: &Url, sha256: Sha256Hex) -> Result<(), ClientError> {
        let url = endpoint(server, &format!("/{sha256}"))?;
        let auth = self
            .authorization(Verb::Delete, server, &[sha256], &Method::DELETE, &url)
            .await?;
        let response = self
            .send(
                self.http
                    .delete(url.clone())
                    .header(header::AUTHORIZATION, auth),
                &url,
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&url, &response))
        }
    }

    /// Lists a pubkey's blobs (BUD-12; optional and unrecommended, so servers may 404).
    pub async fn list(
        &self,
        server: &Url,
        pubkey: &PublicKey,
    ) -> Result<Vec<BlobDescriptor>, ClientError> {
        let url = endpoint(server, &format!("/list/{}", pubkey.to_hex()))?;
        let auth = self
            .authorization(Verb::List, server, &[], &Method::GET, &url)
            .await?;
        let response = self
            .send(
                self.http
                    .get(url.clone())
                    .header(header::AUTHORIZATION, auth),
                &url,
            )
            .await?;
        if !response.status().is_success() {
            return Err(status_error(&url, &response));
        }
        parse_json(response, &url).await
    }

    /// Uploads one file to several servers at once (hashing it once). The error is only for
    /// the local file; each server's fate is in its [`ServerOutcome`], in `servers` order.
    pub async fn upload_to_many(
        &self,
        servers: &[Url],
        path: &Path,
    ) -> Result<Vec<ServerOutcome>, ClientError> {
        let (sha, size) = sha256_file(path)
            .await
            .map_err(|e| ClientError::io("hashing", path, e))?;
        let uploads = servers.iter().map(|server| async move {
            let result = self.upload_file_with_hash(server, path, sha, size).await;
            ServerOutcome::new(server.clone(), result)
        });
        Ok(futures_util::future::join_all(uploads).await)
    }
}

/// A value that differs between calls (uniqueness, not secrecy, is what is needed).
fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `server` + an absolute path (Blossom endpoints live at the domain root).
fn endpoint(server: &Url, path: &str) -> Result<Url, ClientError> {
    server
        .join(path)
        .map_err(|_| ClientError::InvalidUrl(format!("{server} + {path}")))
}

async fn open_file(path: &Path) -> Result<std::fs::File, ClientError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(p))
        .await
        .map_err(|e| ClientError::io("opening", path, std::io::Error::other(e)))?
        .map_err(|e| ClientError::io("opening", path, e))
}

fn status_error(url: &Url, response: &reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let reason = response
        .headers()
        .get("x-reason")
        .map(|v| sanitize_reason(&String::from_utf8_lossy(v.as_bytes())));
    ClientError::Status {
        url: url.to_string(),
        status,
        refusal: Refusal::from_status(status),
        reason,
    }
}

async fn parse_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    url: &Url,
) -> Result<T, ClientError> {
    // Descriptors and lists are small; a server that sends megabytes here is broken.
    const LIMIT: usize = 16 << 20;
    if response.content_length().is_some_and(|l| l > LIMIT as u64) {
        return Err(ClientError::InvalidResponse {
            url: url.to_string(),
            detail: "response too large".into(),
        });
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::transport(url.as_str(), &e))?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidResponse {
        url: url.to_string(),
        detail: e.to_string(),
    })
}

async fn descriptor_from(
    response: reqwest::Response,
    url: &Url,
    sha256: Sha256Hex,
    size: u64,
) -> Result<Uploaded, ClientError> {
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(url, &response));
    }
    let descriptor: BlobDescriptor = parse_json(response, url).await?;
    if descriptor.sha256 != sha256 || descriptor.size != size {
        return Err(ClientError::DescriptorMismatch {
            sha256,
            size,
            got_sha256: descriptor.sha256,
            got_size: descriptor.size,
        });
    }
    Ok(Uploaded {
        descriptor,
        created: status == StatusCode::CREATED,
    })
}
