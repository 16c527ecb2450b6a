//! The OCI Distribution API (distribution-spec v1.1) at `/v2/`, over the same content-addressed
//! store as Blossom: a layer or manifest pushed with `skopeo` or `podman` is the very blob
//! `GET /<sha256>` serves, and a blob uploaded with BUD-02 can be pulled as an image blob.
//!
//! | route | what |
//! |---|---|
//! | `GET /v2/` | version check (401 with a `Basic` challenge to a client without credentials, so pushers learn to send them; pulls need none) |
//! | `GET`/`HEAD /v2/<name>/blobs/<digest>` | a blob; the name is not checked (digests are the interface) |
//! | `POST /v2/<name>/blobs/uploads/` | start an upload; `?digest=` uploads in one request; `?mount=<digest>&from=<repo>` mounts a blob the server has (201) |
//! | `PATCH /v2/<name>/blobs/uploads/<id>` | a chunk (`Content-Range` checked when given) |
//! | `PUT /v2/<name>/blobs/uploads/<id>?digest=` | last chunk; the whole upload must hash to the digest |
//! | `GET`/`DELETE /v2/<name>/blobs/uploads/<id>` | upload status / cancel |
//! | `PUT /v2/<name>/manifests/<tag or digest>` | a manifest or index, every blob it references already here |
//! | `GET`/`HEAD /v2/<name>/manifests/<tag or digest>` | a manifest, with its media type and `Docker-Content-Digest` |
//! | `GET /v2/<name>/tags/list` | tags (`n`, `last` paging) |
//!
//! Pulls are anonymous. Pushes need HTTP basic credentials (`BlossomConfig::oci_credentials`,
//! `quorum blossom --oci-credentials`) or a BUD-11 `upload` token (`Authorization: Nostr …`, by
//! an allowed uploader); without either they are refused with `UNAUTHORIZED`. Errors are the
//! spec's JSON (`{"errors":[{"code","message"}]}`) with its codes: `DIGEST_INVALID` for bytes
//! that do not hash to the digest, `MANIFEST_BLOB_UNKNOWN`, `BLOB_UPLOAD_UNKNOWN`, ...
//!
//! Tags are this server's conveniences, kept in `oci-tags.json` beside the store; digests are
//! what pipelines pin. Upload sessions live in memory: a restart forgets them (their temp files
//! are removed when the store opens), and at most [`MAX_SESSIONS`] run at once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;
use quorum_proto::blossom::{Sha256Hex, Verb};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::BlossomError;
use crate::server::BlossomServer;
use crate::store::Ingest;

/// Upload sessions open at once; more are refused with 429 until some finish.
pub const MAX_SESSIONS: usize = 64;
/// Largest manifest accepted (the spec's suggested limit).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Credentials that may push over `/v2/` with HTTP basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct OciCredentials {
    pub user: String,
    pub password: String,
}

impl OciCredentials {
    /// Parses `USER:PASSWORD`.
    pub fn parse(s: &str) -> Option<Self> {
        let (user, password) = s.split_once(':')?;
        (!user.is_empty() && !password.is_empty()).then(|| OciCredentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl std::fmt::Debug for OciCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OciCredentials({}:***)", self.user)
    }
}

/// The registry's own state: tags and open upload sessions.
#[derive(Debug)]
pub(crate) struct Registry {
    tags_path: PathBuf,
    tags: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    sessions: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<Session>>>>>,
}

struct Session {
    ingest: Ingest,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({} bytes)", self.ingest.len())
    }
}

impl Registry {
    pub(crate) fn open(data_dir: &std::path::Path) -> Self {
        let tags_path = data_dir.join("oci-tags.json");
        let tags = std::fs::read(&tags_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Registry {
            tags_path,
            tags: Mutex::new(tags),
            sessions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Mutex<Option<Session>>>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A distribution-spec error.
#[derive(Debug)]
pub(crate) struct OciError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn oci(status: StatusCode, code: &'static str, message: impl Into<String>) -> OciError {
    OciError {
        status,
        code,
        message: message.into(),
    }
}

impl From<BlossomError> for OciError {
    fn from(e: BlossomError) -> Self {
        let status = e.status();
        let code = match &e {
            BlossomError::TooLarge { .. } | BlossomError::QuotaExceeded(_) => "SIZE_INVALID",
            BlossomError::Auth(_) => "UNAUTHORIZED",
            BlossomError::Forbidden(_) => "DENIED",
            BlossomError::HashMismatch { .. } => "DIGEST_INVALID",
            BlossomError::NotFound => "BLOB_UNKNOWN",
            _ => "UNSUPPORTED",
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "oci request failed");
        }
        OciError {
            status,
            code,
            message: e.reason(),
        }
    }
}

impl IntoResponse for OciError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message }]
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"quorum-blossom\""),
            );
        }
        r
    }
}

type OciResult = Result<Response, OciError>;

/// `sha256:<hex>` as the store's address.
fn parse_digest(d: &str) -> Result<Sha256Hex, OciError> {
    d.strip_prefix("sha256:")
        .and_then(|h| Sha256Hex::parse(h).ok())
        .ok_or_else(|| {
            oci(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("{d:?} is not a sha256 digest"),
            )
        })
}

/// A repository name per the spec: lowercase path components of `[a-z0-9]+([._-][a-z0-9]+)*`.
fn check_name(name: &str) -> Result<(), OciError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(oci(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}"),
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), OciError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(oci(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            format!("invalid tag {tag:?}"),
        ))
    }
}

/// Who may push: basic credentials or a BUD-11 upload token. Returns the owner for the store.
fn authorize_push(
    server: &BlossomServer,
    headers: &HeaderMap,
) -> Result<Option<quorum_proto::nostr::PublicKey>, OciError> {
    let unauthorized = |m: &str| oci(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("authentication required to push"))?;
    if let Some(basic) = value.strip_prefix("Basic ") {
        let Some(expected) = &server.config().oci_credentials else {
            return Err(unauthorized(
                "this server takes no basic credentials; use a BUD-11 token",
            ));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| OciCredentials::parse(&s));
        // Compared in full either way, so the time taken says nothing about where they differ.
        let matches = decoded.is_some_and(|given| {
            let a = format!("{}:{}", given.user, given.password);
            let b = format!("{}:{}", expected.user, expected.password);
            a.len() == b.len()
                && a.bytes()
                    .zip(b.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        });
        if !matches {
            return Err(unauthorized("wrong credentials"));
        }
        return Ok(None);
    }
    let (_, host) = server.origin_of(headers).map_err(OciError::from)?;
    let auth = server
        .authorize_verb(headers, &host, Verb::Upload)
        .map_err(|e| unauthorized(&e.reason()))?;
    server.check_uploader(Some(&auth)).map_err(OciError::from)?;
    Ok(Some(auth.pubkey))
}

fn location(name: &str, what: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("/v2/{name}/{what}")).expect("a clean path")
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct V2Query {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
    n: Option<usize>,
    last: Option<String>,
}

/// `GET /v2/`.
pub(crate) async fn version(State(server): State<BlossomServer>, headers: HeaderMap) -> Response {
    let mut r = if headers.contains_key(header::AUTHORIZATION)
        || server.config().oci_credentials.is_none()
    {
        (StatusCode::OK, axum::Json(serde_json::json!({}))).into_response()
    } else {
        // So that a pushing client sends its credentials; pulling works without them.
        oci(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send credentials to push; pulls need none",
        )
        .into_response()
    };
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

/// Everything under `/v2/<name>/…`, dispatched on the tail of the path.
pub(crate) async fn dispatch(
    State(server): State<BlossomServer>,
    method: Method,
    UrlPath(rest): UrlPath<String>,
    Query(query): Query<V2Query>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = route(&server, &method, &rest, query, &headers, body).await;
    let mut r = result.unwrap_or_else(|e| e.into_response());
    r.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

async fn route(
    server: &BlossomServer,
    method: &Method,
    rest: &str,
    query: V2Query,
    headers: &HeaderMap,
    body: Body,
) -> OciResult {
    let unknown = || oci(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint");
    if let Some(name) = rest.strip_suffix("/tags/list") {
        check_name(name)?;
        return tags_list(server, name, query).await;
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        check_name(name)?;
        return match *method {
            Method::POST => start_upload(server, name, query, headers, body).await,
            _ => Err(oci(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "use POST",
            )),
        };
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        check_name(name)?;
        return match *method {
            Method::PATCH => patch_upload(server, name, id, headers, body).await,
            Method::PUT => finish_upload(server, name, id, query, headers, body).await,
            Method::GET => upload_status(server, name, id).await,
            Method::DELETE => cancel_upload(server, id, headers).await,
            _ => Err(oci(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "not for uploads",
            )),
        };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        check_name(name)?;
        return match *method {
            Method::GET | Method::HEAD => get_blob(server, digest, *method == Method::GET).await,
            _ => Err(oci(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "blobs are immutable here",
            )),
        };
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        check_name(name)?;
        return match *method {
            Method::GET | Method::HEAD => {
                get_manifest(server, name, reference, *method == Method::GET).await
            }
            Method::PUT => put_manifest(server, name, reference, headers, body).await,
            _ => Err(oci(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "deletes are not supported",
            )),
        };
    }
    Err(unknown())
}

async fn get_blob(server: &BlossomServer, digest: &str, with_body: bool) -> OciResult {
    let sha = parse_digest(digest)?;
    let Some((file, meta)) = server.store().open_blob(&sha).await? else {
        return Err(oci(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("no blob {digest}"),
        ));
    };
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, meta.size)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", format!("sha256:{sha}"));
    builder = builder.header(header::ETAG, format!("\"sha256:{sha}\""));
    let body = if with_body {
        Body::from_stream(crate::sink::file_stream(file, 0, meta.size))
    } else {
        Body::empty()
    };
    builder
        .body(body)
        .map_err(|e| BlossomError::Internal(e.to_string()).into())
}

async fn start_upload(
    server: &BlossomServer,
    name: &str,
    query: V2Query,
    headers: &HeaderMap,
    body: Body,
) -> OciResult {
    let owner = authorize_push(server, headers)?;
    if let (Some(mount), Some(_from)) = (&query.mount, &query.from) {
        let sha = parse_digest(mount)?;
        // Every blob here is every repository's: a mount of one the server has is immediate.
        if server.store().contains(&sha) {
            return Ok((
                StatusCode::CREATED,
                [
                    (
                        header::LOCATION,
                        location(name, &format!("blobs/sha256:{sha}")),
                    ),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        HeaderValue::from_str(&format!("sha256:{sha}")).expect("hex"),
                    ),
                ],
            )
                .into_response());
        }
    }
    if let Some(digest) = &query.digest {
        // Monolithic: the whole blob in this request.
        let expected = parse_digest(digest)?;
        let mut ingest = server.begin_ingest(0)?;
        receive(&mut ingest, body).await?;
        return publish(server, name, ingest, expected, owner).await;
    }
    let ingest = server.begin_ingest(0)?;
    let id = new_id();
    {
        let mut sessions = server.registry().sessions();
        if sessions.len() >= MAX_SESSIONS {
            return Err(oci(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                "too many uploads in progress",
            ));
        }
        sessions.insert(id.clone(), Arc::new(Mutex::new(Some(Session { ingest }))));
    }
    Ok((
        StatusCode::ACCEPTED,
        [
            (
                header::LOCATION,
                location(name, &format!("blobs/uploads/{id}")),
            ),
            (header::RANGE, HeaderValue::from_static("0-0")),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                HeaderValue::from_str(&id).expect("hex id"),
            ),
        ],
    )
        .into_response())
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // The id names a session to its client; it must not be guessable by others.
    getrandom(&mut bytes);
    hex::encode(bytes)
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

fn session(server: &BlossomServer, id: &str) -> Result<Arc<Mutex<Option<Session>>>, OciError> {
    server
        .registry()
        .sessions()
        .get(id)
        .cloned()
        .ok_or_else(|| {
            oci(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                format!("no upload {id}"),
            )
        })
}

async fn receive(ingest: &mut Ingest, body: Body) -> Result<(), OciError> {
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            oci(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                "the body broke off",
            )
        })?;
        ingest.write_bytes(chunk).await?;
    }
    Ok(())
}

fn range(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", len.saturating_sub(1))).expect("digits")
}

async fn patch_upload(
    server: &BlossomServer,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult {
    authorize_push(server, headers)?;
    let slot = session(server, id)?;
    let mut guard = slot.lock().await;
    let s = guard.as_mut().ok_or_else(|| {
        oci(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload finished",
        )
    })?;
    if let Some(cr) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        let start = cr
            .trim()
            .trim_start_matches("bytes ")
            .split('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if start != Some(s.ingest.len()) {
            return Err(oci(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!("chunk starts at {cr}, the upload is at {}", s.ingest.len()),
            ));
        }
    }
    if let Err(e) = receive(&mut s.ingest, body).await {
        guard.take();
        server.registry().sessions().remove(id);
        return Err(e);
    }
    let len = s.ingest.len();
    Ok((
        StatusCode::ACCEPTED,
        [
            (
                header::LOCATION,
                location(name, &format!("blobs/uploads/{id}")),
            ),
            (header::RANGE, range(len)),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                HeaderValue::from_str(id)
                    .map_err(|_| oci(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", "bad id"))?,
            ),
        ],
    )
        .into_response())
}

async fn finish_upload(
    server: &BlossomServer,
    name: &str,
    id: &str,
    query: V2Query,
    headers: &HeaderMap,
    body: Body,
) -> OciResult {
    let owner = authorize_push(server, headers)?;
    let Some(digest) = &query.digest else {
        return Err(oci(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "the final PUT needs ?digest=",
        ));
    };
    let expected = parse_digest(digest)?;
    let slot = session(server, id)?;
    let taken = slot.lock().await.take();
    server.registry().sessions().remove(id);
    let Some(mut s) = taken else {
        return Err(oci(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload finished",
        ));
    };
    receive(&mut s.ingest, body).await?;
    publish(server, name, s.ingest, expected, owner).await
}

/// Finishes an upload: the bytes must hash to `expected`, else nothing is kept.
async fn publish(
    server: &BlossomServer,
    name: &str,
    ingest: Ingest,
    expected: Sha256Hex,
    owner: Option<quorum_proto::nostr::PublicKey>,
) -> OciResult {
    let staged = ingest.finish().await?;
    if staged.sha256 != expected {
        return Err(oci(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!(
                "the upload hashes to sha256:{}, not sha256:{expected}",
                staged.sha256
            ),
        ));
    }
    server
        .publish_staged(staged, "application/octet-stream".into(), owner)
        .await?;
    Ok((
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                location(name, &format!("blobs/sha256:{expected}")),
            ),
            (
                header::HeaderName::from_static("docker-content-digest"),
                HeaderValue::from_str(&format!("sha256:{expected}")).expect("hex"),
            ),
        ],
    )
        .into_response())
}

async fn upload_status(server: &BlossomServer, name: &str, id: &str) -> OciResult {
    let slot = session(server, id)?;
    let guard = slot.lock().await;
    let s = guard.as_ref().ok_or_else(|| {
        oci(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload finished",
        )
    })?;
    Ok((
        StatusCode::NO_CONTENT,
        [
            (
                header::LOCATION,
                location(name, &format!("blobs/uploads/{id}")),
            ),
            (header::RANGE, range(s.ingest.len())),
        ],
    )
        .into_response())
}

async fn cancel_upload(server: &BlossomServer, id: &str, headers: &HeaderMap) -> OciResult {
    authorize_push(server, headers)?;
    let slot = session(server, id)?;
    slot.lock().await.take();
    server.registry().sessions().remove(id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The digest a manifest reference names: a digest as is, a tag through the tag list.
async fn resolve(
    server: &BlossomServer,
    name: &str,
    reference: &str,
) -> Result<Sha256Hex, OciError> {
    if reference.starts_with("sha256:") {
        return parse_digest(reference);
    }
    check_tag(reference)?;
    let tags = server.registry().tags.lock().await;
    tags.get(name)
        .and_then(|t| t.get(reference))
        .and_then(|h| Sha256Hex::parse(h).ok())
        .ok_or_else(|| {
            oci(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                format!("no tag {name}:{reference}"),
            )
        })
}

async fn read_blob(
    server: &BlossomServer,
    sha: &Sha256Hex,
    max: u64,
) -> Result<Option<Vec<u8>>, OciError> {
    let Some(meta) = server.store().get(sha) else {
        return Ok(None);
    };
    if meta.size > max {
        return Ok(None);
    }
    let path = server.store().blob_path(sha);
    match tokio::fs::read(&path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BlossomError::Io {
            context: "reading a manifest",
            source: e,
        }
        .into()),
    }
}

async fn get_manifest(
    server: &BlossomServer,
    name: &str,
    reference: &str,
    with_body: bool,
) -> OciResult {
    let sha = resolve(server, name, reference).await?;
    let unknown = || {
        oci(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("no manifest {reference}"),
        )
    };
    let bytes = read_blob(server, &sha, MAX_MANIFEST_BYTES as u64)
        .await?
        .ok_or_else(unknown)?;
    // A manifest is served with the media type it declares (a blob uploaded over BUD-02 has
    // none of ours); a blob that is no manifest is not one.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| unknown())?;
    let media = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| value.get("manifests").map(|_| MANIFEST_TYPES[1].to_owned()))
        .or_else(|| value.get("layers").map(|_| MANIFEST_TYPES[0].to_owned()))
        .filter(|m| MANIFEST_TYPES.contains(&m.as_str()))
        .ok_or_else(unknown)?;
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("docker-content-digest", format!("sha256:{sha}"))
        .header(header::ETAG, format!("\"sha256:{sha}\""));
    builder
        .body(if with_body {
            Body::from(bytes)
        } else {
            Body::empty()
        })
        .map_err(|e| BlossomError::Internal(e.to_string()).into())
}

async fn put_manifest(
    server: &BlossomServer,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult {
    let owner = authorize_push(server, headers)?;
    let invalid = |m: String| oci(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", m);
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|_| invalid(format!("a manifest is at most {MAX_MANIFEST_BYTES} bytes")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
    let media = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or(declared)
        .unwrap_or_default();
    if !MANIFEST_TYPES.contains(&media.as_str()) {
        return Err(invalid(format!(
            "media type {media:?} is not a manifest or index"
        )));
    }
    // Every blob a manifest names must be here already; an index's manifests too.
    let mut referenced = Vec::new();
    if let Some(config) = value.get("config") {
        referenced.push(config.clone());
    }
    for key in ["layers", "manifests"] {
        if let Some(list) = value.get(key).and_then(|l| l.as_array()) {
            referenced.extend(list.iter().cloned());
        }
    }
    for descriptor in referenced {
        let digest = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        let sha = parse_digest(digest)?;
        if !server.store().contains(&sha) {
            return Err(oci(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                format!("blob {digest} is not on this server; push it first"),
            ));
        }
    }
    let mut ingest = server.begin_ingest(MAX_MANIFEST_BYTES as u64)?;
    ingest.write_bytes(bytes.clone()).await?;
    let staged = ingest.finish().await?;
    let sha = staged.sha256;
    if reference.starts_with("sha256:") {
        let named = parse_digest(reference)?;
        if named != sha {
            return Err(oci(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("the manifest hashes to sha256:{sha}, not {reference}"),
            ));
        }
    } else {
        check_tag(reference)?;
    }
    server.publish_staged(staged, media, owner).await?;
    if !reference.starts_with("sha256:") {
        let registry = server.registry();
        let mut tags = registry.tags.lock().await;
        tags.entry(name.to_owned())
            .or_default()
            .insert(reference.to_owned(), sha.to_string());
        let json = serde_json::to_vec_pretty(&*tags).expect("serialisable");
        let tmp = registry.tags_path.with_extension("json.tmp");
        let written = tokio::fs::write(&tmp, json)
            .await
            .and(tokio::fs::rename(&tmp, &registry.tags_path).await);
        written.map_err(|e| {
            OciError::from(BlossomError::Io {
                context: "saving tags",
                source: e,
            })
        })?;
    }
    Ok((
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                location(name, &format!("manifests/sha256:{sha}")),
            ),
            (
                header::HeaderName::from_static("docker-content-digest"),
                HeaderValue::from_str(&format!("sha256:{sha}")).expect("hex"),
            ),
        ],
    )
        .into_response())
}

async fn tags_list(server: &BlossomServer, name: &str, query: V2Query) -> OciResult {
    let tags = server.registry().tags.lock().await;
    let Some(list) = tags.get(name) else {
        return Err(oci(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no repository {name}"),
        ));
    };
    let n = query.n.unwrap_or(usize::MAX).min(10_000);
    let names: Vec<&String> = list
        .keys()
        .filter(|t| query.last.as_ref().is_none_or(|last| *t > last))
        .take(n)
        .collect();
    Ok(axum::Json(serde_json::json!({ "name": name, "tags": names })).into_response())
}
