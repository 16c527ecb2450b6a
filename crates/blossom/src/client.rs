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
//!
//! No server may hold a build up: connections that do not open in [`CONNECT_TIMEOUT`] and
//! transfers that make no progress for [`IDLE_TIMEOUT`] fail, and an upload to several servers
//! ([`BlossomClient::upload_to_many`]) returns once one stored the blob and the others had
//! [`STRAGGLER_WAIT`] more; those go on in the background.

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
    idle_timeout: Duration,
    straggler_wait: Duration,
}

/// How long a connection may take to open: a server that does not accept in this time is
/// down, and another copy will do.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a transfer may go without progress (a byte sent or received) before it is given
/// up: a stalled server (one that accepts and then answers nothing) must not block a build.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// In [`BlossomClient::upload_to_many`], how long the other servers get once one stored the
/// blob, before their uploads go on in the background.
pub const STRAGGLER_WAIT: Duration = Duration::from_secs(2);

impl BlossomClient {
    /// A client signing with `signer` (`Keys`, a NIP-46 bunker, …).
    pub fn new(signer: impl IntoNostrSigner) -> Self {
        Self {
            http: http_client(IDLE_TIMEOUT),
            signer: signer.into_nostr_signer(),
            profile: AuthProfile::Bud11,
            auth_ttl: Duration::from_secs(120),
            fsync: true,
            max_download: u64::MAX,
            idle_timeout: IDLE_TIMEOUT,
            straggler_wait: STRAGGLER_WAIT,
        }
    }

    /// How long a transfer may go without progress (default [`IDLE_TIMEOUT`]); the connect
    /// timeout stays [`CONNECT_TIMEOUT`].
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self.http = http_client(idle);
        self
    }

    /// How long [`BlossomClient::upload_to_many`] waits for the other servers once one stored
    /// the blob (default [`STRAGGLER_WAIT`]).
    pub fn with_straggler_wait(mut self, wait: Duration) -> Self {
        self.straggler_wait = wait;
        self
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
        // Progress is a chunk taken by the connection: a server that stops reading stops it.
        let progress = Progress::new();
        let touched = progress.clone();
        let stream =
            futures_util::StreamExt::inspect(file_stream(file, 0, size), move |_| touched.touch());
        let body = reqwest::Body::wrap_stream(stream);
        let request = self
            .http
            .put(url.clone())
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_LENGTH, size)
            .header(header::CONTENT_TYPE, mime)
            .header("x-sha-256", sha256.to_hex())
            .body(body);
        let upload = async {
            let response = self.send(request, &url).await?;
            progress.touch();
            descriptor_from(response, &url, sha256, size).await
        };
        progress.within(self.idle_timeout, &url, upload).await
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
        let mut running: futures_util::stream::FuturesUnordered<_> = servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let (client, server, path) = (self.clone(), server.clone(), path.to_path_buf());
                async move {
                    let result = client
                        .upload_file_with_hash(&server, &path, sha, size)
                        .await;
                    (index, ServerOutcome::new(server, result))
                }
            })
            .collect();
        let mut outcomes: Vec<Option<ServerOutcome>> = servers.iter().map(|_| None).collect();
        // Once one server holds the blob, the build goes on: the others get a moment, then
        // finish (or time out) in the background.
        let mut stored_by = None;
        loop {
            let next = match stored_by {
                None => futures_util::StreamExt::next(&mut running).await,
                Some(deadline) => {
                    match tokio::time::timeout_at(
                        deadline,
                        futures_util::StreamExt::next(&mut running),
                    )
                    .await
                    {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            let Some((index, outcome)) = next else { break };
            if outcome.is_stored() && stored_by.is_none() {
                stored_by = Some(tokio::time::Instant::now() + self.straggler_wait);
            }
            outcomes[index] = Some(outcome);
        }
        if !running.is_empty() {
            tokio::spawn(async move {
                while let Some((_, outcome)) = futures_util::StreamExt::next(&mut running).await {
                    match &outcome {
                        ServerOutcome::Stored { server, .. } => {
                            tracing::debug!(%server, %sha, "stored in the background")
                        }
                        other => tracing::warn!(
                            server = %other.server(),
                            %sha,
                            "background upload failed: {other:?}"
                        ),
                    }
                }
            });
        }
        let wait = self.straggler_wait;
        Ok(outcomes
            .into_iter()
            .zip(servers)
            .map(|(outcome, server)| {
                outcome.unwrap_or_else(|| ServerOutcome::Unreachable {
                    server: server.clone(),
                    detail: format!(
                        "not stored within {wait:?} after another server stored the blob; \
                         still uploading in the background"
                    ),
                })
            })
            .collect())
    }
}

/// The HTTP client: connect timeout [`CONNECT_TIMEOUT`], and reads that give up after `idle`
/// without a byte (a stalled server answering nothing).
fn http_client(idle: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(idle)
        .build()
        .unwrap_or_default()
}

/// When a transfer last made progress, to give up on one that stalls.
#[derive(Clone)]
struct Progress(Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Progress {
    fn new() -> Self {
        Progress(Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().expect("progress lock") = tokio::time::Instant::now();
    }

    fn last(&self) -> tokio::time::Instant {
        *self.0.lock().expect("progress lock")
    }

    /// Runs `work` until it ends, or until it has made no progress for `idle`.
    async fn within<T>(
        &self,
        idle: Duration,
        url: &Url,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::pin!(work);
        loop {
            let deadline = self.last() + idle;
            tokio::select! {
                result = &mut work => return result,
                () = tokio::time::sleep_until(deadline) => {
                    if self.last() + idle <= tokio::time::Instant::now() {
                        return Err(ClientError::Transport {
                            url: url.to_string(),
                            detail: format!("no progress for {idle:?}: the server stalled"),
                            connect: false,
                            timeout: true,
                        });
                    }
                }
            }
        }
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
