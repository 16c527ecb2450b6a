//! The Blossom HTTP server: an axum router over a [`BlobStore`].
//!
//! Endpoints (all at the domain root):
//!
//! | route | BUD | auth (BUD-11 verb) |
//! |---|---|---|
//! | `GET`/`HEAD /<sha256>[.ext]` (ranges) | 01 | `get`, only with `require_auth_for_get` |
//! | `PUT /upload` (streamed) | 02 | `upload` with `x`, unless anonymous uploads are allowed |
//! | `HEAD /upload` | 06 | as `PUT /upload` |
//! | `PUT /mirror` | 04 | as `PUT /upload`; the mirrored bytes must hash to an `x` |
//! | `GET /list/<pubkey>` | 12 | `list` by that pubkey, only with `require_auth_for_list` |
//! | `DELETE /<sha256>` | 12 | `delete` with `x`, by an owner |
//!
//! Uploads and mirrors are bounded three ways: per blob (`max_blob_bytes`, 413), per uploader
//! (`quota`: bytes and blobs one key may own, 413; anonymous uploads share one allowance), and
//! per disk (`min_free_bytes`: refused with 507 before the data directory's filesystem gets
//! that full, checked before and while receiving). A refused upload leaves nothing behind.
//!
//! Every response carries `Access-Control-Allow-Origin: *`; `OPTIONS` answers the preflight.
//! Errors answer with the status the BUDs assign and a human-readable `X-Reason` built from our
//! own text only (see [`BlossomError`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::serve::ListenerExt as _;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use quorum_proto::blossom::{
    self, AuthError, Authorized, BlobDescriptor, DEFAULT_MIME, Expectation, Sha256Hex, Verb,
};
use quorum_proto::nostr::{PublicKey, Timestamp};
use serde::Deserialize;
use url::Url;

pub use crate::address::is_public;
use crate::address::{AddressError, resolve_checked};
use crate::error::BlossomError;
use crate::sink::file_stream;
use crate::store::{BlobMeta, BlobStore, Quota, RemoveOutcome, Staged, Usage};

/// Server policy. `Default` is a private-by-default server: authenticated uploads, public reads.
#[derive(Debug, Clone)]
pub struct BlossomConfig {
    /// The URL clients reach this server at; descriptor URLs and the BUD-11 `server` check use
    /// it. `None` derives it from each request's `Host` header (fine on loopback; set it in
    /// production, since the Host header is client-controlled).
    pub public_url: Option<Url>,
    /// Largest accepted blob.
    pub max_blob_bytes: u64,
    /// Who may upload/mirror; `None` = anyone with a valid token.
    pub allowed_uploaders: Option<HashSet<PublicKey>>,
    /// Uploads and mirrors need a BUD-11 token (an invalid token is refused even when this is
    /// off; it never falls back to anonymous).
    pub require_auth_for_upload: bool,
    /// `GET`/`HEAD` of blobs need a `get` token.
    pub require_auth_for_get: bool,
    /// `GET /list/<pubkey>` needs a `list` token signed by that pubkey (private listing: who
    /// uploaded what is then nobody else's business).
    pub require_auth_for_list: bool,
    /// What one uploader may own here (bytes and blobs); unlimited by default, since keys cost
    /// nothing to make: against a stranger with many keys, `allowed_uploaders` and
    /// `min_free_bytes` are what protect the disk.
    pub quota: Quota,
    /// Free space the data directory's filesystem keeps: an upload or mirror that would leave
    /// less is refused with 507, before and while its bytes arrive. 0 = no reserve.
    pub min_free_bytes: u64,
    /// Let `PUT /mirror` fetch from loopback, private, link-local and other non-public
    /// addresses. Off by default: a mirror request must not become a probe of our network.
    pub allow_private_mirror_targets: bool,
    /// Overall time limit for fetching one mirrored blob.
    pub mirror_timeout: Duration,
    /// fsync blobs, sidecars and directories before acknowledging (durability; costs time).
    pub fsync: bool,
    /// HTTP basic credentials that may push images over `/v2/` (see [`crate::oci`]); a BUD-11
    /// upload token works too. `None`: only tokens.
    pub oci_credentials: Option<crate::oci::OciCredentials>,
}

impl Default for BlossomConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            max_blob_bytes: 2 << 30,
            allowed_uploaders: None,
            require_auth_for_upload: true,
            require_auth_for_get: false,
            require_auth_for_list: false,
            quota: Quota::default(),
            min_free_bytes: 1 << 30,
            allow_private_mirror_targets: false,
            mirror_timeout: Duration::from_secs(600),
            fsync: true,
            oci_credentials: None,
        }
    }
}

/// A running Blossom service: configuration plus store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlossomServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BlossomConfig,
    store: BlobStore,
    /// Bytes and blobs each uploader (`None`: anonymous) is sending right now, by declared
    /// length, so that concurrent uploads of one key cannot pass its quota together.
    in_flight: std::sync::Mutex<HashMap<Option<PublicKey>, Usage>>,
    /// `/v2/` tags and upload sessions.
    registry: crate::oci::Registry,
}

/// An upload's share of its uploader's quota while its bytes arrive; returned on drop.
struct Reservation {
    server: BlossomServer,
    owner: Option<PublicKey>,
    usage: Usage,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.usage == Usage::default() {
            return;
        }
        let mut in_flight = self.server.in_flight();
        if let Some(held) = in_flight.get_mut(&self.owner) {
            held.bytes = held.bytes.saturating_sub(self.usage.bytes);
            held.blobs = held.blobs.saturating_sub(self.usage.blobs);
            if *held == Usage::default() {
                in_flight.remove(&self.owner);
            }
        }
    }
}

/// How often (in received bytes) a running upload re-checks the free disk space (one
/// `statvfs` per MiB costs nothing next to writing the MiB).
const DISK_CHECK_EVERY: u64 = 1 << 20;
/// Largest JSON body accepted by `PUT /mirror`.
const MIRROR_BODY_LIMIT: usize = 16 * 1024;
/// Redirects followed when mirroring (each hop is re-checked against the address policy).
const MIRROR_MAX_REDIRECTS: usize = 5;
/// Page size of `GET /list` when the client does not ask for one, and the ceiling.
const LIST_DEFAULT_LIMIT: usize = 100;
const LIST_MAX_LIMIT: usize = 1000;

impl BlossomServer {
    /// Opens the store under `data_dir` and prepares the service.
    pub async fn open(config: BlossomConfig, data_dir: &Path) -> Result<Self, BlossomError> {
        let store = BlobStore::open(data_dir, config.fsync).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                in_flight: std::sync::Mutex::new(HashMap::new()),
                registry: crate::oci::Registry::open(data_dir),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlossomConfig {
        &self.inner.config
    }

    /// The store (for tests and for embedding: e.g. checking what is held).
    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    /// The axum router serving every endpoint.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(root).head(root))
            .route("/upload", put(upload).head(upload_requirements))
            .route("/mirror", put(mirror))
            .route("/list/{pubkey}", get(list))
            .route("/v2", get(crate::oci::version))
            .route("/v2/", get(crate::oci::version))
            .route("/v2/{*rest}", axum::routing::any(crate::oci::dispatch))
            .route("/{name}", get(get_blob).head(head_blob).delete(delete_blob))
            .fallback(not_found)
            .layer(middleware::from_fn(cors))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BlossomError> {
        if let Ok(addr) = listener.local_addr() {
            tracing::debug!(%addr, "blossom server listening");
        }
        // Without TCP_NODELAY, a small blob's body waits behind its headers for the client's
        // delayed ACK: about 40 ms for every manifest, config or log fetched.
        let listener = listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {err}");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(BlossomError::io("serving HTTP"))
    }

    /// Base URL (no trailing slash) and host (for `server` tags) of this request.
    fn origin(&self, headers: &HeaderMap) -> Result<(String, String), BlossomError> {
        if let Some(url) = &self.inner.config.public_url {
            let base = url.as_str().trim_end_matches('/').to_owned();
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            return Ok((base, host));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
            .ok_or(BlossomError::BadRequest("missing or malformed Host header"))?;
        Ok((format!("http://{host}"), blossom::server_host(host)))
    }

    fn descriptor(&self, base: &str, sha: &Sha256Hex, meta: &BlobMeta) -> BlobDescriptor {
        BlobDescriptor {
            url: format!("{base}/{sha}.{}", extension_for(&meta.mime_type)),
            sha256: *sha,
            size: meta.size,
            mime_type: meta.mime_type.clone(),
            uploaded: meta.uploaded,
        }
    }

    /// Validates the request's token for `verb`. `required` = a missing token is an error;
    /// otherwise a missing token yields `None` (but an invalid one is still refused).
    fn authorize(
        &self,
        headers: &HeaderMap,
        host: &str,
        verb: Verb,
        sha256: Option<Sha256Hex>,
        required: bool,
    ) -> Result<Option<Authorized>, BlossomError> {
        let value = match headers.get(header::AUTHORIZATION) {
            None if !required => return Ok(None),
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| AuthError::NotNostrScheme)?),
        };
        let expect = Expectation::new(verb, host, Timestamp::now()).with_sha256(sha256);
        Ok(Some(blossom::validate_header(value, &expect)?))
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Option<PublicKey>, Usage>> {
        // Plain counters: a panic elsewhere cannot leave them half-updated.
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// 507 when receiving `incoming` more bytes would leave less than `min_free_bytes` free.
    fn check_disk(&self, incoming: u64) -> Result<(), BlossomError> {
        let reserve = self.inner.config.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let free = self.inner.store.free_space()?;
        if free < reserve.saturating_add(incoming) {
            tracing::warn!(
                free,
                reserve,
                incoming,
                "refusing an upload: disk reserve reached"
            );
            return Err(BlossomError::InsufficientStorage);
        }
        Ok(())
    }

    /// Admits an upload of `size` bytes (0 when unknown) by `owner` before any byte is
    /// received: disk reserve and quota (counting the owner's other uploads in flight). A blob
    /// the owner already has costs no quota. The final quota check happens at publish.
    fn admit(
        &self,
        owner: Option<PublicKey>,
        sha: Option<Sha256Hex>,
        size: u64,
    ) -> Result<Reservation, BlossomError> {
        self.check_disk(size)?;
        let quota = &self.inner.config.quota;
        let free_of_charge = *quota == Quota::default()
            || sha.is_some_and(|sha| self.inner.store.owned_by(&sha, owner.as_ref()));
        let usage = if free_of_charge {
            Usage::default()
        } else {
            Usage {
                bytes: size,
                blobs: 1,
            }
        };
        if !free_of_charge {
            let stored = self.inner.store.usage(owner.as_ref());
            let mut in_flight = self.in_flight();
            let sending = in_flight.get(&owner).copied().unwrap_or_default();
            quota.admits(
                Usage {
                    bytes: stored.bytes.saturating_add(sending.bytes),
                    blobs: stored.blobs.saturating_add(sending.blobs),
                },
                size,
            )?;
            let held = in_flight.entry(owner).or_default();
            held.bytes = held.bytes.saturating_add(usage.bytes);
            held.blobs = held.blobs.saturating_add(usage.blobs);
        }
        Ok(Reservation {
            server: self.clone(),
            owner,
            usage,
        })
    }

    pub(crate) fn registry(&self) -> &crate::oci::Registry {
        &self.inner.registry
    }

    pub(crate) fn origin_of(&self, headers: &HeaderMap) -> Result<(String, String), BlossomError> {
        self.origin(headers)
    }

    /// A required BUD-11 token for `verb` (no `x` tag checked).
    pub(crate) fn authorize_verb(
        &self,
        headers: &HeaderMap,
        host: &str,
        verb: Verb,
    ) -> Result<Authorized, BlossomError> {
        self.authorize(headers, host, verb, None, true)?
            .ok_or(BlossomError::Auth(AuthError::MissingHeader))
    }

    /// An upload into the store of at most `limit` bytes (0: the server's blob limit), after
    /// the disk reserve check.
    pub(crate) fn begin_ingest(&self, limit: u64) -> Result<crate::store::Ingest, BlossomError> {
        self.check_disk(0)?;
        let max = self.inner.config.max_blob_bytes;
        self.inner
            .store
            .begin(if limit == 0 { max } else { limit.min(max) })
    }

    /// Publishes a received upload under the server's quota.
    pub(crate) async fn publish_staged(
        &self,
        staged: Staged,
        mime: String,
        owner: Option<PublicKey>,
    ) -> Result<(), BlossomError> {
        self.inner
            .store
            .publish(staged, mime, owner, &self.inner.config.quota)
            .await
            .map(|_| ())
    }

    pub(crate) fn check_uploader(&self, auth: Option<&Authorized>) -> Result<(), BlossomError> {
        if let Some(allowed) = &self.inner.config.allowed_uploaders {
            match auth {
                Some(a) if allowed.contains(&a.pubkey) => {}
                // Anonymous uploads cannot satisfy an allow-list.
                _ => return Err(BlossomError::Forbidden("this pubkey may not upload here")),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// CORS and small routes
// ---------------------------------------------------------------------------------------------

async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("Authorization, *"),
        );
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, HEAD, PUT, DELETE"),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("86400"));
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    // Let browser clients read X-Reason, Content-Range and friends.
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("*"),
    );
    response
}

async fn root() -> &'static str {
    "Quorum CI Blossom server (BUD-01, 02, 04, 06, 11, 12)\n"
}

async fn not_found() -> BlossomError {
    BlossomError::NotFound
}

// ---------------------------------------------------------------------------------------------
// BUD-01: GET / HEAD
// ---------------------------------------------------------------------------------------------

/// `<sha256>` or `<sha256>.<ext>`; the extension is checked for shape but otherwise ignored.
fn parse_blob_name(name: &str) -> Result<Sha256Hex, BlossomError> {
    let (hash, ext) = match name.split_once('.') {
        Some((h, e)) => (h, Some(e)),
        None => (name, None),
    };
    let sha = Sha256Hex::parse(hash)
        .map_err(|_| BlossomError::BadRequest("path is not a lowercase sha256"))?;
    if let Some(ext) = ext
        && (ext.is_empty() || ext.len() > 32 || !ext.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(BlossomError::BadRequest("malformed file extension"));
    }
    Ok(sha)
}

/// A single byte range resolved against a blob size (inclusive end).
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Full,
    Part(u64, u64),
}

/// Parses an RFC 7233 `Range` header. Multiple ranges and non-byte units are ignored (the whole
/// blob is sent, which RFC 7233 allows); a malformed or unsatisfiable byte range is a 416.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<RangeSpec, BlossomError> {
    let Some(value) = value else {
        return Ok(RangeSpec::Full);
    };
    let unsatisfiable = BlossomError::RangeNotSatisfiable { size };
    let text = value
        .to_str()
        .map_err(|_| BlossomError::RangeNotSatisfiable { size })?;
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(RangeSpec::Full);
    };
    if spec.contains(',') {
        return Ok(RangeSpec::Full);
    }
    let (start, end) = spec.trim().split_once('-').ok_or(unsatisfiable)?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| BlossomError::RangeNotSatisfiable { size })
    };
    let (start, end) = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, true) => return Err(BlossomError::RangeNotSatisfiable { size }),
        // Suffix: the last N bytes.
        (true, false) => {
            let n = parse(end)?;
            if n == 0 || size == 0 {
                return Err(BlossomError::RangeNotSatisfiable { size });
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (parse(start)?, size.saturating_sub(1)),
        (false, false) => (parse(start)?, parse(end)?.min(size.saturating_sub(1))),
    };
    if start >= size || start > end {
        return Err(BlossomError::RangeNotSatisfiable { size });
    }
    Ok(RangeSpec::Part(start, end))
}

async fn serve_blob(
    server: &BlossomServer,
    headers: &HeaderMap,
    name: &str,
    with_body: bool,
) -> Result<Response, BlossomError> {
    let sha = parse_blob_name(name)?;
    let (_, host) = server.origin(headers)?;
    server.authorize(
        headers,
        &host,
        Verb::Get,
        Some(sha),
        server.inner.config.require_auth_for_get,
    )?;
    let Some((file, meta)) = server.inner.store.open_blob(&sha).await? else {
        return Err(BlossomError::NotFound);
    };
    let range = if with_body {
        parse_range(headers.get(header::RANGE), meta.size)?
    } else {
        RangeSpec::Full
    };
    let (status, start, len) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, meta.size),
        RangeSpec::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
    };
    let body = if with_body && len > 0 {
        Body::from_stream(file_stream(file, start, len))
    } else {
        Body::empty()
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    let mime =
        HeaderValue::from_str(&meta.mime_type).unwrap_or(HeaderValue::from_static(DEFAULT_MIME));
    h.insert(header::CONTENT_TYPE, mime);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content-addressed: the bytes behind this URL can never change.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, etag);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{}", start + len - 1, meta.size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

async fn get_blob(
    State(server): State<BlossomServer>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, BlossomError> {
    serve_blob(&server, &headers, &name, true).await
}

async fn head_blob(
    State(server): State<BlossomServer>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, BlossomError> {
    serve_blob(&server, &headers, &name, false).await
}

// ---------------------------------------------------------------------------------------------
// BUD-02: PUT /upload, BUD-06: HEAD /upload
// ---------------------------------------------------------------------------------------------

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_sha_header(headers: &HeaderMap) -> Result<Option<Sha256Hex>, BlossomError> {
    match headers.get("x-sha-256") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Sha256Hex::parse(s.trim()).ok())
            .map(Some)
            .ok_or(BlossomError::BadRequest(
                "X-SHA-256 must be 64 lowercase hex characters",
            )),
    }
}

fn parse_length(value: Option<&str>, what: &'static str) -> Result<Option<u64>, BlossomError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| BlossomError::BadRequest(what)),
    }
}

/// A MIME type from a client header, normalised (`type/subtype`, lowercase, no parameters), or
/// `None` if it does not look like one: it ends up in our responses, so it must be clean.
fn clean_mime(value: Option<&str>) -> Option<String> {
    let v = value?.split(';').next()?.trim().to_ascii_lowercase();
    let (t, s) = v.split_once('/')?;
    let token = |x: &str| {
        !x.is_empty()
            && x.len() <= 64
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    (token(t) && token(s)).then_some(v)
}

/// A file extension for a MIME type (BUD-02 wants one in every descriptor URL).
fn extension_for(mime: &str) -> &'static str {
    match mime {
        DEFAULT_MIME => "bin",
        "text/plain" => "txt",
        "application/gzip" | "application/x-gzip" => "gz",
        "application/x-tar" => "tar",
        "application/json" => "json",
        _ => mime_guess::get_mime_extensions_str(mime)
            .and_then(|exts| exts.first().copied())
            .unwrap_or("bin"),
    }
}

async fn upload(
    State(server): State<BlossomServer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BlossomError> {
    let config = &server.inner.config;
    let announced = parse_sha_header(&headers)?;
    let (base, host) = server.origin(&headers)?;
    let auth = server.authorize(
        &headers,
        &host,
        Verb::Upload,
        announced,
        config.require_auth_for_upload,
    )?;
    server.check_uploader(auth.as_ref())?;
    let declared = parse_length(
        header_str(&headers, "content-length"),
        "malformed Content-Length",
    )?
    .ok_or(BlossomError::LengthRequired("Content-Length is required"))?;
    if declared > config.max_blob_bytes {
        return Err(BlossomError::TooLarge {
            max: config.max_blob_bytes,
        });
    }
    let mime =
        clean_mime(header_str(&headers, "content-type")).unwrap_or_else(|| DEFAULT_MIME.to_owned());
    let owner = auth.as_ref().map(|a| a.pubkey);
    let _reservation = server.admit(owner, announced, declared)?;

    // The stream is bounded by the limit and by the declared length: a body that lies about
    // its length is cut off, not stored. (hyper enforces Content-Length framing on real
    // connections; this also holds for bodies that reach the router by other means.)
    let mut ingest = server.inner.store.begin(config.max_blob_bytes)?;
    let mut stream = body.into_data_stream();
    let mut next_disk_check = DISK_CHECK_EVERY;
    while let Some(chunk) = stream.next().await {
        // A body error is a client that went away or broke framing: the temp file goes with
        // `ingest`.
        let chunk = chunk.map_err(|_| BlossomError::Truncated)?;
        let total = ingest.len() + chunk.len() as u64;
        if total > config.max_blob_bytes {
            return Err(BlossomError::TooLarge {
                max: config.max_blob_bytes,
            });
        }
        if total > declared {
            return Err(BlossomError::BadRequest(
                "body is longer than Content-Length",
            ));
        }
        ingest.write_bytes(chunk).await?;
        // Other uploads share the disk: re-check the reserve as the bytes arrive.
        if ingest.len() >= next_disk_check {
            server.check_disk(declared - ingest.len())?;
            next_disk_check = ingest.len() + DISK_CHECK_EVERY;
        }
    }
    if ingest.len() != declared {
        return Err(BlossomError::Truncated);
    }
    let staged = ingest.finish().await?;
    check_hash(&staged, announced, auth.as_ref())?;
    let sha = staged.sha256;
    let (meta, created) = server
        .inner
        .store
        .publish(staged, mime, owner, &config.quota)
        .await?;
    Ok(descriptor_response(&server, &base, sha, meta, created))
}

/// 409 when the bytes are not what `X-SHA-256` announced; 403 when the token's `x` tags do not
/// cover them (only reachable without `X-SHA-256`, which was checked against `x` up front).
fn check_hash(
    staged: &Staged,
    announced: Option<Sha256Hex>,
    auth: Option<&Authorized>,
) -> Result<(), BlossomError> {
    if let Some(expected) = announced
        && expected != staged.sha256
    {
        return Err(BlossomError::HashMismatch {
            expected,
            actual: staged.sha256,
        });
    }
    if let Some(a) = auth
        && !a.allows(&staged.sha256)
    {
        return Err(AuthError::HashNotAuthorised.into());
    }
    Ok(())
}

fn descriptor_response(
    server: &BlossomServer,
    base: &str,
    sha: Sha256Hex,
    meta: BlobMeta,
    created: bool,
) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(server.descriptor(base, &sha, &meta))).into_response()
}

async fn upload_requirements(
    State(server): State<BlossomServer>,
    headers: HeaderMap,
) -> Result<StatusCode, BlossomError> {
    let config = &server.inner.config;
    let sha =
        parse_sha_header(&headers)?.ok_or(BlossomError::BadRequest("X-SHA-256 is required"))?;
    let len = parse_length(
        header_str(&headers, "x-content-length"),
        "malformed X-Content-Length",
    )?
    .ok_or(BlossomError::LengthRequired("X-Content-Length is required"))?;
    if headers.contains_key("x-content-type")
        && clean_mime(header_str(&headers, "x-content-type")).is_none()
    {
        return Err(BlossomError::BadRequest("malformed X-Content-Type"));
    }
    if len > config.max_blob_bytes {
        return Err(BlossomError::TooLarge {
            max: config.max_blob_bytes,
        });
    }
    let (_, host) = server.origin(&headers)?;
    let auth = server.authorize(
        &headers,
        &host,
        Verb::Upload,
        Some(sha),
        config.require_auth_for_upload,
    )?;
    server.check_uploader(auth.as_ref())?;
    server.admit(auth.map(|a| a.pubkey), Some(sha), len)?;
    Ok(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// BUD-04: PUT /mirror
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MirrorRequest {
    url: String,
}

async fn mirror(
    State(server): State<BlossomServer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BlossomError> {
    let config = &server.inner.config;
    let (base, host) = server.origin(&headers)?;
    // Auth before reading anything else: refused requests cost nothing.
    let auth = server.authorize(
        &headers,
        &host,
        Verb::Upload,
        None,
        config.require_auth_for_upload,
    )?;
    server.check_uploader(auth.as_ref())?;

    let bytes = http_body_util::Limited::new(body, MIRROR_BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| BlossomError::BadRequest("mirror request body is too large or broken"))?
        .to_bytes();
    let request: MirrorRequest = serde_json::from_slice(&bytes)
        .map_err(|_| BlossomError::BadRequest("body must be JSON {\"url\": \"...\"}"))?;
    let source = Url::parse(&request.url)
        .map_err(|_| BlossomError::BadRequest("mirror url is not a URL"))?;
    let url_hash = Sha256Hex::from_url_path(source.path());
    let owner = auth.as_ref().map(|a| a.pubkey);

    // Already here *for this caller*: nothing to fetch, nothing changes. A blob that is here
    // but not theirs is fetched like a new one: ownership (a place in their list, the right to
    // delete, a share of their quota) goes only to a caller whose URL really serves the bytes,
    // never to one who merely names a hash it saw somewhere.
    if let Some(h) = url_hash
        && auth.as_ref().is_none_or(|a| a.allows(&h))
        && server.inner.store.owned_by(&h, owner.as_ref())
        && let Some(meta) = server.inner.store.get(&h)
    {
        return Ok(descriptor_response(&server, &base, h, meta, false));
    }

    let (response, final_url) = fetch_origin(config, source).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(BlossomError::Origin(format!("{final_url}: HTTP {status}")));
    }
    if response
        .content_length()
        .is_some_and(|l| l > config.max_blob_bytes)
    {
        return Err(BlossomError::TooLarge {
            max: config.max_blob_bytes,
        });
    }
    let mime = clean_mime(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or_else(|| DEFAULT_MIME.to_owned());
    let expected = response.content_length().unwrap_or(0);
    let _reservation = server.admit(owner, None, expected)?;

    let mut ingest = server.inner.store.begin(config.max_blob_bytes)?;
    let mut stream = response.bytes_stream();
    let mut next_disk_check = DISK_CHECK_EVERY;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BlossomError::Origin(format!("{final_url}: {e}")))?;
        ingest.write_bytes(chunk).await?;
        if ingest.len() >= next_disk_check {
            server.check_disk(expected.saturating_sub(ingest.len()))?;
            next_disk_check = ingest.len() + DISK_CHECK_EVERY;
        }
    }
    let staged = ingest.finish().await?;
    // BUD-04: the bytes must hash to what the token authorised (or, anonymously, to the hash
    // the URL names).
    let authorised = match (&auth, url_hash) {
        (Some(a), _) => a.allows(&staged.sha256),
        (None, Some(h)) => h == staged.sha256,
        (None, None) => true,
    };
    if !authorised {
        let expected = auth
            .as_ref()
            .and_then(|a| a.hashes.first().copied())
            .or(url_hash)
            .unwrap_or(staged.sha256);
        return Err(BlossomError::HashMismatch {
            expected,
            actual: staged.sha256,
        });
    }
    let sha = staged.sha256;
    let (meta, created) = server
        .inner
        .store
        .publish(staged, mime, owner, &config.quota)
        .await?;
    Ok(descriptor_response(&server, &base, sha, meta, created))
}

/// GETs `url`, following redirects by hand so that every hop's addresses are checked and the
/// connection is pinned to the addresses we checked (no DNS rebinding between check and use).
async fn fetch_origin(
    config: &BlossomConfig,
    mut url: Url,
) -> Result<(reqwest::Response, Url), BlossomError> {
    let deadline = tokio::time::Instant::now() + config.mirror_timeout;
    for _ in 0..=MIRROR_MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BlossomError::BadRequest("mirror url must be http or https"));
        }
        let host = url
            .host_str()
            .ok_or(BlossomError::BadRequest("mirror url has no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or(BlossomError::BadRequest("mirror url has no port"))?;
        let lookup_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs = resolve_checked(
            &host,
            port,
            config.allow_private_mirror_targets,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| match e {
            AddressError::NotPublic { .. } => BlossomError::Forbidden(
                "mirror url resolves to a loopback, private or link-local address",
            ),
            other => BlossomError::Origin(other.to_string()),
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&lookup_host, &addrs)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| BlossomError::Internal(format!("http client: {e}")))?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let response = tokio::time::timeout(left, client.get(url.clone()).send())
            .await
            .map_err(|_| BlossomError::Origin(format!("{url}: timeout")))?
            .map_err(|e| BlossomError::Origin(format!("{url}: {e}")))?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| BlossomError::Origin(format!("{url}: redirect without Location")))?;
            url = url
                .join(location)
                .map_err(|_| BlossomError::Origin(format!("{url}: bad redirect")))?;
            continue;
        }
        return Ok((response, url));
    }
    Err(BlossomError::Origin("too many redirects".into()))
}

// ---------------------------------------------------------------------------------------------
// BUD-12: list and delete
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

async fn list(
    State(server): State<BlossomServer>,
    UrlPath(pubkey): UrlPath<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, BlossomError> {
    let pubkey = PublicKey::parse(&pubkey)
        .map_err(|_| BlossomError::BadRequest("not a public key (hex or npub)"))?;
    let (base, host) = server.origin(&headers)?;
    let auth = server.authorize(
        &headers,
        &host,
        Verb::List,
        None,
        server.inner.config.require_auth_for_list,
    )?;
    if server.inner.config.require_auth_for_list && auth.is_none_or(|a| a.pubkey != pubkey) {
        return Err(BlossomError::Forbidden(
            "only the owner may list these blobs",
        ));
    }
    let number = |v: &Option<String>, what: &'static str| -> Result<Option<u64>, BlossomError> {
        v.as_deref()
            .map(|s| s.parse::<u64>().map_err(|_| BlossomError::BadRequest(what)))
            .transpose()
    };
    let since = number(&query.since, "since must be a Unix timestamp")?;
    let until = number(&query.until, "until must be a Unix timestamp")?;
    let limit = number(&query.limit, "limit must be a number")?
        .map_or(LIST_DEFAULT_LIMIT, |l| (l as usize).min(LIST_MAX_LIMIT));
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            Sha256Hex::parse(c).map_err(|_| BlossomError::BadRequest("cursor must be a sha256"))
        })
        .transpose()?;

    let blobs: Vec<_> = server
        .inner
        .store
        .list(&pubkey)
        .into_iter()
        .filter(|(_, _, t)| since.is_none_or(|s| *t >= s) && until.is_none_or(|u| *t <= u))
        .collect();
    let start = match cursor {
        None => 0,
        Some(c) => {
            blobs
                .iter()
                .position(|(sha, _, _)| *sha == c)
                .ok_or(BlossomError::BadRequest("cursor is not one of these blobs"))?
                + 1
        }
    };
    let page: Vec<BlobDescriptor> = blobs
        .iter()
        .skip(start)
        .take(limit)
        .map(|(sha, meta, owned_since)| {
            // This pubkey's own upload time: the order BUD-12 asks for is by it.
            let mut d = server.descriptor(&base, sha, meta);
            d.uploaded = *owned_since;
            d
        })
        .collect();
    Ok(axum::Json(page).into_response())
}

async fn delete_blob(
    State(server): State<BlossomServer>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, BlossomError> {
    let sha = parse_blob_name(&name)?;
    let (_, host) = server.origin(&headers)?;
    let auth = server
        .authorize(&headers, &host, Verb::Delete, Some(sha), true)?
        .ok_or(AuthError::MissingHeader)?;
    match server.inner.store.remove_owner(&sha, &auth.pubkey).await? {
        RemoveOutcome::NotFound => Err(BlossomError::NotFound),
        RemoveOutcome::NotOwner => Err(BlossomError::Forbidden(
            "only an uploader of this blob may delete it",
        )),
        RemoveOutcome::Removed { .. } => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(parse_range(None, 10).unwrap(), RangeSpec::Full);
        assert_eq!(
            parse_range(Some(&hv("bytes=0-3")), 10).unwrap(),
            RangeSpec::Part(0, 3)
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=5-")), 10).unwrap(),
            RangeSpec::Part(5, 9)
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=-4")), 10).unwrap(),
            RangeSpec::Part(6, 9)
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=-40")), 10).unwrap(),
            RangeSpec::Part(0, 9)
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=8-100")), 10).unwrap(),
            RangeSpec::Part(8, 9)
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=0-1,3-4")), 10).unwrap(),
            RangeSpec::Full
        );
        assert_eq!(
            parse_range(Some(&hv("items=0-1")), 10).unwrap(),
            RangeSpec::Full
        );
        for bad in [
            "bytes=10-",
            "bytes=5-2",
            "bytes=x-1",
            "bytes=-0",
            "bytes=-",
            "bytes=3",
        ] {
            assert!(parse_range(Some(&hv(bad)), 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn blob_names() {
        let h = "a".repeat(64);
        assert!(parse_blob_name(&h).is_ok());
        assert!(parse_blob_name(&format!("{h}.pdf")).is_ok());
        assert!(parse_blob_name(&format!("{h}.")).is_err());
        assert!(parse_blob_name(&format!("{h}.p/df")).is_err());
        assert!(parse_blob_name(&"A".repeat(64)).is_err());
        assert!(parse_blob_name("upload2").is_err());
    }

    #[test]
    fn mimes_and_extensions() {
        assert_eq!(
            clean_mime(Some("Text/Plain; charset=utf-8")).as_deref(),
            Some("text/plain")
        );
        assert_eq!(clean_mime(Some("nonsense")), None);
        assert_eq!(clean_mime(Some("a/b\r\nx: y")), None);
        assert_eq!(extension_for(DEFAULT_MIME), "bin");
        assert_eq!(extension_for("application/pdf"), "pdf");
        assert_eq!(extension_for("x-unknown/thing"), "bin");
    }
}
