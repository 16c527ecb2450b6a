//! Error types: [`BlossomError`] for the store and server (one `IntoResponse`, mapping each
//! case to the status BUD-01/02/04/06/12 assign and a sanitised `X-Reason`), and
//! [`ClientError`] for the client, which keeps the server's status and reason.
//!
//! Internal causes (I/O errors, origin failures) are logged with their detail and answered
//! with a generic reason: paths and upstream error text are not the caller's business.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quorum_proto::blossom::{AuthError, Sha256Hex};

/// Everything the store and the server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BlossomError {
    /// The BUD-11 token is missing, invalid, or does not cover this request.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is authenticated but refused by policy.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Malformed request.
    #[error("{0}")]
    BadRequest(&'static str),
    /// No such blob (or no such route).
    #[error("blob not found")]
    NotFound,
    /// `PUT /upload` without `Content-Length`, or `HEAD /upload` without `X-Content-Length`.
    #[error("{0}")]
    LengthRequired(&'static str),
    /// The blob is larger than the server accepts.
    #[error("blob too large: the maximum is {max} bytes")]
    TooLarge {
        /// The configured maximum.
        max: u64,
    },
    /// The uploader would own more than its quota allows (bytes or blobs).
    #[error("{0}")]
    QuotaExceeded(String),
    /// Storing this would leave less free disk space than the server keeps in reserve.
    #[error("the server is short of disk space; try another server")]
    InsufficientStorage,
    /// The body's hash is not the announced one (`X-SHA-256`, or the mirror token's `x`).
    #[error("body hash {actual} does not match the announced {expected}")]
    HashMismatch {
        /// What the client announced.
        expected: Sha256Hex,
        /// What the bytes hash to.
        actual: Sha256Hex,
    },
    /// The body ended before `Content-Length` bytes.
    #[error("body is shorter than Content-Length")]
    Truncated,
    /// The requested range lies outside the blob.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// Blob size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// Fetching a blob to mirror failed.
    #[error("mirror origin failed: {0}")]
    Origin(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BlossomError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            BlossomError::Auth(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            BlossomError::Forbidden(_) => StatusCode::FORBIDDEN,
            BlossomError::BadRequest(_) | BlossomError::Truncated => StatusCode::BAD_REQUEST,
            BlossomError::NotFound => StatusCode::NOT_FOUND,
            BlossomError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            BlossomError::TooLarge { .. } | BlossomError::QuotaExceeded(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BlossomError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            BlossomError::HashMismatch { .. } => StatusCode::CONFLICT,
            BlossomError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            BlossomError::Origin(_) => StatusCode::BAD_GATEWAY,
            BlossomError::Io { .. } | BlossomError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The human-readable `X-Reason`: the error's text except for internal causes.
    pub fn reason(&self) -> String {
        match self {
            BlossomError::Io { .. } | BlossomError::Internal(_) => "internal server error".into(),
            BlossomError::Origin(_) => "could not fetch the blob from the mirror origin".into(),
            other => other.to_string(),
        }
    }
}

/// Makes text safe for a header: printable ASCII only, bounded length.
pub fn sanitize_reason(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

impl IntoResponse for BlossomError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "blossom request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "blossom request refused");
        }
        let reason = sanitize_reason(&self.reason());
        let mut response = (status, reason.clone()).into_response();
        if let Ok(v) = HeaderValue::from_str(&reason) {
            response.headers_mut().insert("x-reason", v);
        }
        if let BlossomError::RangeNotSatisfiable { size } = self
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        response
    }
}

/// Why a server refused a request, by status (BUD-02/06/07, and WebDAV's 507).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400.
    BadRequest,
    /// 401: auth missing or invalid.
    Unauthorized,
    /// 402: payment required (BUD-07).
    PaymentRequired,
    /// 403: policy.
    Forbidden,
    /// 404.
    NotFound,
    /// 409: hash mismatch.
    Conflict,
    /// 411: length required.
    LengthRequired,
    /// 413: too large.
    TooLarge,
    /// 415: type refused.
    UnsupportedType,
    /// 429: rate limited.
    RateLimited,
    /// 502: the server could not reach its origin (mirror).
    BadGateway,
    /// 507: the server is short of disk space.
    InsufficientStorage,
    /// Anything else.
    Other,
}

impl Refusal {
    /// Classifies a status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Refusal::BadRequest,
            401 => Refusal::Unauthorized,
            402 => Refusal::PaymentRequired,
            403 => Refusal::Forbidden,
            404 => Refusal::NotFound,
            409 => Refusal::Conflict,
            411 => Refusal::LengthRequired,
            413 => Refusal::TooLarge,
            415 => Refusal::UnsupportedType,
            429 => Refusal::RateLimited,
            502 => Refusal::BadGateway,
            507 => Refusal::InsufficientStorage,
            _ => Refusal::Other,
        }
    }
}

/// Everything the client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Status {
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
        /// Its class.
        refusal: Refusal,
        /// The server's `X-Reason`, sanitised (for humans; do not branch on it).
        reason: Option<String>,
    },
    /// TLS, connection, timeout or protocol failure talking to the server.
    #[error("{url}: {detail}")]
    Transport {
        /// The request URL.
        url: String,
        /// The error chain, flattened.
        detail: String,
        /// Whether it failed while connecting (DNS, TCP, TLS handshake).
        connect: bool,
        /// Whether it timed out.
        timeout: bool,
    },
    /// The downloaded bytes do not hash to what was asked for; nothing was kept.
    #[error("downloaded bytes hash to {actual}, expected {expected}")]
    HashMismatch {
        /// The hash asked for.
        expected: Sha256Hex,
        /// What arrived.
        actual: Sha256Hex,
    },
    /// The server's descriptor names another hash or size than what we sent.
    #[error(
        "server descriptor says {got_sha256} ({got_size} bytes), we sent {sha256} ({size} bytes)"
    )]
    DescriptorMismatch {
        /// What we sent.
        sha256: Sha256Hex,
        /// Its size.
        size: u64,
        /// What the server claims.
        got_sha256: Sha256Hex,
        /// Its size.
        got_size: u64,
    },
    /// The server's answer is not what the BUD says (unparseable descriptor, …).
    #[error("{url}: invalid response: {detail}")]
    InvalidResponse {
        /// The request URL.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// A URL could not be built or is unusable.
    #[error("invalid URL {0}")]
    InvalidUrl(String),
    /// The blob is larger than allowed for this download.
    #[error("blob larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The signer could not sign the authorization event.
    #[error("signing the authorization: {0}")]
    Signer(String),
    /// Local file I/O.
    #[error("{context} {path}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// Which file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn transport(url: &str, e: &reqwest::Error) -> Self {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            source = s.source();
        }
        ClientError::Transport {
            url: url.to_owned(),
            detail,
            connect: e.is_connect(),
            timeout: e.is_timeout(),
        }
    }

    pub(crate) fn io(
        context: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        ClientError::Io {
            context,
            path: path.display().to_string(),
            source,
        }
    }
}
