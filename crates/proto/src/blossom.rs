//! Blossom wire types: BUD-11 authorization tokens (kind 24242) and the BUD-02 blob descriptor.
//!
//! <https://github.com/hzrd149/blossom/blob/master/buds/11.md>
//!
//! A Blossom client proves who it is with a signed kind-24242 event sent as
//! `Authorization: Nostr <base64url(event JSON)>`. The event names one [`Verb`] (`t` tag), must
//! carry a NIP-40 `expiration`, and may be scoped to servers (`server` tags, bare lowercase
//! domains) and to blob hashes (`x` tags). This module builds such events ([`AuthBuilder`]),
//! encodes and decodes the header ([`encode_header`], [`decode_header`]) and validates a token
//! against what an endpoint expects ([`validate`], [`Expectation`]), in the order BUD-11 §
//! "server validation" gives. It does no I/O: the server and client live in `quorum-blossom`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use nostr::{Event, EventBuilder, EventId, JsonUtil, Kind, PublicKey, Tag, TagKind, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Kind of a Blossom authorization event (BUD-11).
pub const AUTH_KIND: Kind = Kind::BlossomAuth;

/// The `Authorization` scheme word.
pub const AUTH_SCHEME: &str = "Nostr";

/// MIME type used when a blob's type is unknown (BUD-02).
pub const DEFAULT_MIME: &str = "application/octet-stream";

/// Upper bound on the size of an `Authorization` header we are willing to decode. A kind-24242
/// event with a handful of tags is well under 2 KiB; anything this big is garbage or an attack.
pub const MAX_AUTH_HEADER_BYTES: usize = 16 * 1024;

/// How far in the future a token's `created_at` may lie before it is refused. BUD-11 says
/// "in the past"; a few seconds of tolerance keeps honest clients with a slightly fast clock
/// working without widening the replay window (expiration still bounds it).
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;

// ---------------------------------------------------------------------------------------------
// Verb
// ---------------------------------------------------------------------------------------------

/// The action a token authorises (`t` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET`/`HEAD /<sha256>` (BUD-01).
    Get,
    /// `PUT`/`HEAD /upload` (BUD-02, BUD-06) and `PUT /mirror` (BUD-04).
    Upload,
    /// `GET /list/<pubkey>` (BUD-12).
    List,
    /// `DELETE /<sha256>` (BUD-12).
    Delete,
    /// `PUT`/`HEAD /media` (BUD-05).
    Media,
}

impl Verb {
    /// All verbs, in spec order.
    pub const ALL: [Verb; 5] = [
        Verb::Get,
        Verb::Upload,
        Verb::List,
        Verb::Delete,
        Verb::Media,
    ];

    /// The tag value.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Upload => "upload",
            Verb::List => "list",
            Verb::Delete => "delete",
            Verb::Media => "media",
        }
    }

    /// Parses a tag value (exact, lowercase, as BUD-11 spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether an endpoint of this verb needs an `x` tag naming the implied hash (BUD-11 table).
    pub const fn requires_hash(&self) -> bool {
        matches!(self, Verb::Upload | Verb::Delete | Verb::Media)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = UnknownVerb;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or(UnknownVerb)
    }
}

/// A `t` value that is not a BUD-11 verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Blossom verb (expected get, upload, list, delete or media)")]
pub struct UnknownVerb;

// ---------------------------------------------------------------------------------------------
// Sha256Hex
// ---------------------------------------------------------------------------------------------

/// A SHA-256 digest, the identity of a blob. Displays and serialises as 64 lowercase hex chars.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex([u8; 32]);

/// Text that is not 64 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a sha256: expected 64 lowercase hex characters")]
pub struct InvalidSha256;

impl Sha256Hex {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses exactly 64 lowercase hex characters. Uppercase is refused: Blossom URLs and tags
    /// are lowercase, and accepting both would give one blob two spellings.
    pub fn parse(s: &str) -> Result<Self, InvalidSha256> {
        let b = s.as_bytes();
        if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidSha256);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| InvalidSha256)?;
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The last run of exactly 64 hex characters in a URL path (BUD-03 "hash from URL").
    pub fn from_url_path(path: &str) -> Option<Self> {
        let b = path.as_bytes();
        let mut end = b.len();
        while end > 0 {
            // Find the end of a hex run, then its start.
            while end > 0 && !b[end - 1].is_ascii_hexdigit() {
                end -= 1;
            }
            let mut start = end;
            while start > 0 && b[start - 1].is_ascii_hexdigit() {
                start -= 1;
            }
            if end - start == 64 {
                return Self::parse(&path[start..end].to_ascii_lowercase()).ok();
            }
            end = start;
        }
        None
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        // Infallible: the buffer is exactly twice the input length.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hex({self})")
    }
}

impl FromStr for Sha256Hex {
    type Err = InvalidSha256;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<[u8; 32]> for Sha256Hex {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Blob descriptor (BUD-02)
// ---------------------------------------------------------------------------------------------

/// What a server says about a stored blob (upload, mirror and list responses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDescriptor {
    /// Where the blob can be fetched; BUD-02 says it includes a file extension.
    pub url: String,
    /// The blob's hash.
    pub sha256: Sha256Hex,
    /// Size in bytes.
    pub size: u64,
    /// MIME type; `application/octet-stream` when unknown (also when a server sends `null`).
    #[serde(
        rename = "type",
        default = "default_mime",
        deserialize_with = "mime_or_default"
    )]
    pub mime_type: String,
    /// Unix seconds of the (first) upload.
    pub uploaded: u64,
}

fn default_mime() -> String {
    DEFAULT_MIME.to_owned()
}

fn mime_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .unwrap_or_else(default_mime))
}

// ---------------------------------------------------------------------------------------------
// Building tokens
// ---------------------------------------------------------------------------------------------

/// Builds a kind-24242 authorization event.
///
/// ```
/// # use quorum_proto::blossom::{AuthBuilder, Verb, Sha256Hex};
/// # use quorum_proto::nostr::{Keys, Timestamp};
/// let hash = Sha256Hex::from_bytes([7; 32]);
/// let event = AuthBuilder::new(Verb::Upload, Timestamp::now() + 120)
///     .content("Upload build-artifact.tar.gz")
///     .hash(hash)
///     .server("cdn.example.com")
///     .into_event_builder()
///     .sign_with_keys(&Keys::generate())
///     .unwrap();
/// let header = quorum_proto::blossom::encode_header(&event);
/// assert!(header.starts_with("Nostr "));
/// ```
#[derive(Debug, Clone)]
pub struct AuthBuilder {
    verb: Verb,
    content: Option<String>,
    expiration: Timestamp,
    created_at: Option<Timestamp>,
    hashes: Vec<Sha256Hex>,
    servers: Vec<String>,
    extra: Vec<Tag>,
}

impl AuthBuilder {
    /// A token for `verb`, valid until `expiration` (NIP-40, mandatory in BUD-11).
    pub fn new(verb: Verb, expiration: Timestamp) -> Self {
        Self {
            verb,
            content: None,
            expiration,
            created_at: None,
            hashes: Vec::new(),
            servers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The human-readable purpose (BUD-11 requires one; a default naming the verb is used
    /// otherwise).
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// Limits the token to a blob hash (`x` tag; repeatable).
    pub fn hash(mut self, sha256: Sha256Hex) -> Self {
        if !self.hashes.contains(&sha256) {
            self.hashes.push(sha256);
        }
        self
    }

    /// Limits the token to a server (`server` tag; repeatable). Accepts a bare domain or a URL
    /// and writes what BUD-11 wants: the lowercase host, no scheme, port or path.
    pub fn server(mut self, server: &str) -> Self {
        let host = server_host(server);
        if !host.is_empty() && !self.servers.contains(&host) {
            self.servers.push(host);
        }
        self
    }

    /// Sets `created_at` (defaults to now when the event is built).
    pub fn created_at(mut self, created_at: Timestamp) -> Self {
        self.created_at = Some(created_at);
        self
    }

    /// Adds a tag BUD-11 does not define (servers ignore unknown tags). Used for servers that
    /// bind tokens to a request with `u`/`method` tags.
    pub fn extra_tag(mut self, tag: Tag) -> Self {
        self.extra.push(tag);
        self
    }

    /// Adds a raw `server` tag without normalisation. BUD-11 wants a bare domain (see
    /// [`AuthBuilder::server`]); this exists only for servers that demand something else.
    pub fn raw_server_tag(mut self, value: impl Into<String>) -> Self {
        self.extra
            .push(Tag::custom(TagKind::Server, [value.into()]));
        self
    }

    /// The unsigned event, ready for `sign`/`sign_with_keys`.
    pub fn into_event_builder(self) -> EventBuilder {
        let content = self
            .content
            .unwrap_or_else(|| format!("Blossom {} authorization", self.verb));
        let mut tags = Vec::with_capacity(2 + self.hashes.len() + self.servers.len());
        tags.push(Tag::custom(TagKind::t(), [self.verb.as_str()]));
        tags.push(Tag::expiration(self.expiration));
        tags.extend(
            self.hashes
                .iter()
                .map(|h| Tag::custom(TagKind::x(), [h.to_hex()])),
        );
        tags.extend(
            self.servers
                .into_iter()
                .map(|s| Tag::custom(TagKind::Server, [s])),
        );
        tags.extend(self.extra);
        let builder = EventBuilder::new(AUTH_KIND, content).tags(tags);
        match self.created_at {
            Some(t) => builder.custom_created_at(t),
            None => builder,
        }
    }
}

/// The lowercase host of a server reference (`https://Cdn.Example.com:443/x` → `cdn.example.com`,
/// `cdn.example.com` → itself). IPv6 hosts keep their brackets, as `Url::host_str` gives them.
pub fn server_host(server: &str) -> String {
    let s = server.trim();
    if let Ok(url) = url::Url::parse(s)
        && let Some(host) = url.host_str()
        && url.has_authority()
    {
        return host.to_ascii_lowercase();
    }
    // A bare `host[:port][/path]`.
    let s = s.split('/').next().unwrap_or_default();
    let host = if s.starts_with('[') {
        s.split_inclusive(']').next().unwrap_or(s)
    } else {
        s.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(s, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Header encoding
// ---------------------------------------------------------------------------------------------

const INDIFFERENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);
const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);

/// `Nostr <token>` with the event JSON as base64url without padding (BUD-11 since 2026-02).
pub fn encode_header(event: &Event) -> String {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(event.as_json());
    format!("{AUTH_SCHEME} {token}")
}

/// Decodes an `Authorization` header value into an event, without validating it.
///
/// Liberal in what it accepts, because BUD-11 said only "base64" before 2026-02: base64url and
/// standard base64, each with or without padding; the scheme word is case-insensitive.
pub fn decode_header(value: &str) -> Result<Event, AuthError> {
    if value.len() > MAX_AUTH_HEADER_BYTES {
        return Err(AuthError::BadEncoding);
    }
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotNostrScheme)?;
    if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
        return Err(AuthError::NotNostrScheme);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::BadEncoding);
    }
    let engine = if token.bytes().any(|b| b == b'-' || b == b'_') {
        &URL_SAFE_ANY
    } else {
        &STANDARD_ANY
    };
    let json = engine.decode(token).map_err(|_| AuthError::BadEncoding)?;
    Event::from_json(json).map_err(|_| AuthError::BadJson)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// What an endpoint expects of a token.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    /// The endpoint's verb.
    pub verb: Verb,
    /// The implied hash (from the URL, `X-SHA-256`, or the mirrored blob), when known. When the
    /// verb [requires a hash](Verb::requires_hash) and this is `None`, validation only checks
    /// that the token names some hash; the caller checks [`Authorized::allows`] once it knows.
    pub sha256: Option<Sha256Hex>,
    /// This server's host (lowercase, no port), compared with `server` tags.
    pub server_host: &'a str,
    /// The current time.
    pub now: Timestamp,
    /// Tolerance for a `created_at` slightly in the future.
    pub clock_skew_secs: u64,
}

impl<'a> Expectation<'a> {
    /// An expectation with the default clock skew.
    pub fn new(verb: Verb, server_host: &'a str, now: Timestamp) -> Self {
        Self {
            verb,
            sha256: None,
            server_host,
            now,
            clock_skew_secs: DEFAULT_CLOCK_SKEW_SECS,
        }
    }

    /// Sets the implied hash.
    pub fn with_sha256(mut self, sha256: Option<Sha256Hex>) -> Self {
        self.sha256 = sha256;
        self
    }
}

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// Who signed it.
    pub pubkey: PublicKey,
    /// The token's event id (servers may use it to refuse replays).
    pub event_id: EventId,
    /// The verb it authorises.
    pub verb: Verb,
    /// Its expiration.
    pub expiration: Timestamp,
    /// Hashes it is limited to (`x` tags); empty = not limited.
    pub hashes: Vec<Sha256Hex>,
}

impl Authorized {
    /// Whether the token covers `sha256`: it names it, or names no hash and the verb does not
    /// require one.
    pub fn allows(&self, sha256: &Sha256Hex) -> bool {
        if self.hashes.is_empty() {
            !self.verb.requires_hash()
        } else {
            self.hashes.contains(sha256)
        }
    }
}

/// Why a token was refused. The messages are safe to send as `X-Reason`: they never contain
/// text taken from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header where one is needed.
    #[error("authorization required: send a BUD-11 token (Authorization: Nostr <base64url event>)")]
    MissingHeader,
    /// The header is not text, or its scheme is not `Nostr`.
    #[error("authorization scheme must be Nostr")]
    NotNostrScheme,
    /// The token is not base64/base64url, or is too long.
    #[error("authorization token is not valid base64url")]
    BadEncoding,
    /// The token decodes, but not to a Nostr event.
    #[error("authorization token is not a Nostr event in JSON")]
    BadJson,
    /// The event is not kind 24242.
    #[error("authorization event must be kind 24242")]
    WrongKind,
    /// `created_at` is in the future.
    #[error("authorization event is created in the future")]
    CreatedInFuture,
    /// No `expiration` tag.
    #[error("authorization event has no expiration tag")]
    MissingExpiration,
    /// An `expiration` tag that is not one Unix timestamp, or several of them.
    #[error("authorization event has a malformed expiration tag")]
    MalformedExpiration,
    /// The expiration is not in the future.
    #[error("authorization event has expired")]
    Expired,
    /// No `t` tag.
    #[error("authorization event has no t (verb) tag")]
    MissingVerb,
    /// A `t` tag that is not the endpoint's verb.
    #[error("authorization event is not for this action (expected t={expected})")]
    WrongVerb {
        /// The verb the endpoint needs.
        expected: Verb,
    },
    /// `server` tags that do not name this server.
    #[error("authorization event is for another server")]
    OtherServer,
    /// The endpoint needs an `x` tag and the token has none.
    #[error("authorization event has no x (blob hash) tag")]
    MissingHash,
    /// The token's `x` tags do not include the implied hash.
    #[error("authorization event does not authorise this blob hash")]
    HashNotAuthorised,
    /// The event id is not the hash of its content.
    #[error("authorization event id is invalid")]
    BadId,
    /// The signature does not verify.
    #[error("authorization event signature is invalid")]
    BadSignature,
}

impl AuthError {
    /// The HTTP status a server answers with: 401 when the token is missing or not a valid,
    /// current credential (re-signing helps); 403 when it is valid but scoped to something else
    /// (another verb, server or blob).
    pub const fn status(&self) -> u16 {
        match self {
            AuthError::WrongVerb { .. }
            | AuthError::OtherServer
            | AuthError::MissingHash
            | AuthError::HashNotAuthorised => 403,
            _ => 401,
        }
    }
}

/// Decodes and validates an `Authorization` header value. `None` = no header.
pub fn validate_header(
    value: Option<&str>,
    expect: &Expectation<'_>,
) -> Result<Authorized, AuthError> {
    let event = decode_header(value.ok_or(AuthError::MissingHeader)?)?;
    validate(&event, expect)
}

/// Validates a token in BUD-11's order: kind, `created_at`, `expiration`, `t`, `server`, `x`,
/// then id and signature.
pub fn validate(event: &Event, expect: &Expectation<'_>) -> Result<Authorized, AuthError> {
    if event.kind != AUTH_KIND {
        return Err(AuthError::WrongKind);
    }
    if event.created_at.as_secs() > expect.now.as_secs().saturating_add(expect.clock_skew_secs) {
        return Err(AuthError::CreatedInFuture);
    }

    let mut expiration = None;
    let mut verbs = Vec::new();
    let mut servers = Vec::new();
    let mut hashes = Vec::new();
    for tag in event.tags.iter() {
        let values = tag.as_slice();
        let value = values.get(1).map(String::as_str);
        match values.first().map(String::as_str) {
            Some("expiration") => {
                let parsed = value
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(AuthError::MalformedExpiration)?;
                if expiration.replace(parsed).is_some() {
                    return Err(AuthError::MalformedExpiration);
                }
            }
            Some("t") => verbs.push(value.and_then(Verb::parse)),
            Some("server") => servers.extend(value),
            // A malformed x value cannot match any real hash; skipping it is the same as
            // refusing it, and keeps tokens with extra junk usable for their valid hashes.
            Some("x") => hashes.extend(value.and_then(|v| Sha256Hex::parse(v).ok())),
            _ => {}
        }
    }

    let expiration = expiration.ok_or(AuthError::MissingExpiration)?;
    if expiration <= expect.now.as_secs() {
        return Err(AuthError::Expired);
    }
    if verbs.is_empty() {
        return Err(AuthError::MissingVerb);
    }
    // Every `t` must be the expected verb: a token naming two verbs is ambiguous.
    if verbs.iter().any(|v| *v != Some(expect.verb)) {
        return Err(AuthError::WrongVerb {
            expected: expect.verb,
        });
    }
    if !servers.is_empty() {
        let ours = expect.server_host.to_ascii_lowercase();
        // BUD-11 wants a bare domain; a URL naming our host is accepted too (liberal input).
        if !servers.iter().any(|s| server_host(s) == ours) {
            return Err(AuthError::OtherServer);
        }
    }
    if expect.verb.requires_hash() {
        if hashes.is_empty() {
            return Err(AuthError::MissingHash);
        }
        if let Some(h) = &expect.sha256
            && !hashes.contains(h)
        {
            return Err(AuthError::HashNotAuthorised);
        }
    } else if let Some(h) = &expect.sha256
        && !hashes.is_empty()
        && !hashes.contains(h)
    {
        // x is optional for get, but when present it limits the token.
        return Err(AuthError::HashNotAuthorised);
    }

    if !event.verify_id() {
        return Err(AuthError::BadId);
    }
    if !event.verify_signature() {
        return Err(AuthError::BadSignature);
    }

    Ok(Authorized {
        pubkey: event.pubkey,
        event_id: event.id,
        verb: expect.verb,
        expiration: Timestamp::from_secs(expiration),
        hashes,
    })
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const HOST: &str = "cdn.example.com";

    fn hash(b: u8) -> Sha256Hex {
        Sha256Hex::from_bytes([b; 32])
    }

    fn now() -> Timestamp {
        Timestamp::from_secs(1_800_000_000)
    }

    fn token(keys: &Keys, b: AuthBuilder) -> Event {
        b.created_at(now() - 5)
            .into_event_builder()
            .sign_with_keys(keys)
            .unwrap()
    }

    fn upload(h: Sha256Hex) -> AuthBuilder {
        AuthBuilder::new(Verb::Upload, now() + 60)
            .hash(h)
            .server(HOST)
    }

    fn expect(verb: Verb, h: Option<Sha256Hex>) -> Expectation<'static> {
        Expectation::new(verb, HOST, now()).with_sha256(h)
    }

    #[test]
    fn verb_round_trip() {
        for v in Verb::ALL {
            assert_eq!(Verb::parse(v.as_str()), Some(v));
            assert_eq!(v.to_string().parse::<Verb>(), Ok(v));
        }
        assert_eq!(Verb::parse("UPLOAD"), None);
        assert_eq!(Verb::parse(""), None);
    }

    #[test]
    fn sha256_hex_parsing() {
        let h = hash(0xab);
        assert_eq!(Sha256Hex::parse(&h.to_hex()), Ok(h));
        assert_eq!(h.to_string(), "ab".repeat(32));
        assert!(Sha256Hex::parse(&"AB".repeat(32)).is_err());
        assert!(Sha256Hex::parse(&"ab".repeat(31)).is_err());
        assert!(Sha256Hex::parse(&"zz".repeat(32)).is_err());
        assert!(Sha256Hex::parse("").is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<Sha256Hex>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Sha256Hex>("\"00\"").is_err());
    }

    #[test]
    fn sha256_from_url_takes_last_run() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let url = format!("/{a}/x/{b}.pdf");
        assert_eq!(Sha256Hex::from_url_path(&url).unwrap().to_hex(), b);
        assert!(Sha256Hex::from_url_path(&format!("/{}", "a".repeat(65))).is_none());
        assert!(Sha256Hex::from_url_path("/nothing").is_none());
    }

    #[test]
    fn descriptor_serde() {
        let d = BlobDescriptor {
            url: "https://cdn.example.com/x.bin".into(),
            sha256: hash(1),
            size: 5,
            mime_type: DEFAULT_MIME.into(),
            uploaded: 7,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["type"], DEFAULT_MIME);
        assert_eq!(serde_json::from_value::<BlobDescriptor>(v).unwrap(), d);
        let null_type = format!(
            r#"{{"url":"u","sha256":"{}","size":1,"type":null,"uploaded":2,"nip94":[]}}"#,
            hash(1)
        );
        let parsed: BlobDescriptor = serde_json::from_str(&null_type).unwrap();
        assert_eq!(parsed.mime_type, DEFAULT_MIME);
        assert!(serde_json::from_str::<BlobDescriptor>(r#"{"url":"u"}"#).is_err());
    }

    #[test]
    fn server_host_normalises() {
        assert_eq!(server_host("https://CDN.example.com:8443/path"), HOST);
        assert_eq!(server_host("cdn.example.com"), HOST);
        assert_eq!(server_host("Cdn.Example.com:80"), HOST);
        assert_eq!(server_host("http://127.0.0.1:3000/"), "127.0.0.1");
        assert_eq!(server_host("http://[::1]:3000/"), "[::1]");
    }

    #[test]
    fn built_event_has_bud11_tags() {
        let keys = Keys::generate();
        let e = token(&keys, upload(hash(1)).server("https://cdn.example.com/"));
        let tags: Vec<Vec<String>> = e.tags.iter().map(|t| t.as_slice().to_vec()).collect();
        assert!(tags.contains(&vec!["t".into(), "upload".into()]));
        assert!(tags.contains(&vec!["x".into(), hash(1).to_hex()]));
        assert!(tags.contains(&vec!["expiration".into(), (now() + 60).to_string()]));
        // One server tag, bare domain.
        let servers: Vec<_> = tags.iter().filter(|t| t[0] == "server").collect();
        assert_eq!(servers, vec![&vec!["server".to_string(), HOST.to_string()]]);
        assert!(!e.content.is_empty());
        assert_eq!(e.kind, AUTH_KIND);
    }

    #[test]
    fn header_round_trip_and_encodings() {
        let keys = Keys::generate();
        let e = token(&keys, upload(hash(1)));
        let header = encode_header(&e);
        let token_part = header.strip_prefix("Nostr ").unwrap();
        assert!(!token_part.contains(['=', '+', '/']));
        assert_eq!(decode_header(&header).unwrap(), e);

        let json = e.as_json();
        use base64::engine::general_purpose as gp;
        for enc in [
            gp::STANDARD.encode(&json),
            gp::STANDARD_NO_PAD.encode(&json),
            gp::URL_SAFE.encode(&json),
            gp::URL_SAFE_NO_PAD.encode(&json),
        ] {
            assert_eq!(decode_header(&format!("Nostr {enc}")).unwrap(), e, "{enc}");
            assert_eq!(decode_header(&format!("nostr  {enc} ")).unwrap(), e);
        }
    }

    #[test]
    fn header_malformed() {
        assert_eq!(decode_header(""), Err(AuthError::NotNostrScheme));
        assert_eq!(decode_header("Bearer abc"), Err(AuthError::NotNostrScheme));
        assert_eq!(decode_header("Nostr"), Err(AuthError::NotNostrScheme));
        assert_eq!(decode_header("Nostr    "), Err(AuthError::NotNostrScheme));
        assert_eq!(decode_header("Nostr !!!!"), Err(AuthError::BadEncoding));
        assert_eq!(decode_header("Nostr e30"), Err(AuthError::BadJson)); // "{}"
        let huge = format!("Nostr {}", "A".repeat(MAX_AUTH_HEADER_BYTES));
        assert_eq!(decode_header(&huge), Err(AuthError::BadEncoding));
        assert_eq!(
            validate_header(None, &expect(Verb::Get, None)),
            Err(AuthError::MissingHeader)
        );
    }

    #[test]
    fn valid_token_passes() {
        let keys = Keys::generate();
        let e = token(&keys, upload(hash(1)));
        let ok = validate_header(
            Some(&encode_header(&e)),
            &expect(Verb::Upload, Some(hash(1))),
        )
        .unwrap();
        assert_eq!(ok.pubkey, keys.public_key());
        assert!(ok.allows(&hash(1)));
        assert!(!ok.allows(&hash(2)));
        // Without a known hash: passes, the caller checks `allows` later.
        assert!(validate(&e, &expect(Verb::Upload, None)).is_ok());
    }

    #[test]
    fn each_failure_is_named() {
        let keys = Keys::generate();
        let check = |b: AuthBuilder, ex: Expectation<'_>| validate(&token(&keys, b), &ex);

        let wrong_kind = EventBuilder::new(Kind::TextNote, "x")
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            validate(&wrong_kind, &expect(Verb::Get, None)),
            Err(AuthError::WrongKind)
        );

        let future = upload(hash(1))
            .into_event_builder()
            .custom_created_at(now() + 3600)
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            validate(&future, &expect(Verb::Upload, Some(hash(1)))),
            Err(AuthError::CreatedInFuture)
        );

        let expired = AuthBuilder::new(Verb::Upload, now() - 1).hash(hash(1));
        assert_eq!(
            check(expired, expect(Verb::Upload, Some(hash(1)))),
            Err(AuthError::Expired)
        );

        let no_exp = EventBuilder::new(AUTH_KIND, "x")
            .tags([Tag::custom(TagKind::t(), ["get"])])
            .custom_created_at(now())
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            validate(&no_exp, &expect(Verb::Get, None)),
            Err(AuthError::MissingExpiration)
        );

        let bad_exp = EventBuilder::new(AUTH_KIND, "x")
            .tags([
                Tag::custom(TagKind::t(), ["get"]),
                Tag::custom(TagKind::Expiration, ["soon"]),
            ])
            .custom_created_at(now())
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            validate(&bad_exp, &expect(Verb::Get, None)),
            Err(AuthError::MalformedExpiration)
        );

        let no_t = EventBuilder::new(AUTH_KIND, "x")
            .tags([Tag::expiration(now() + 60)])
            .custom_created_at(now())
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            validate(&no_t, &expect(Verb::Get, None)),
            Err(AuthError::MissingVerb)
        );

        assert_eq!(
            check(upload(hash(1)), expect(Verb::Delete, Some(hash(1)))),
            Err(AuthError::WrongVerb {
                expected: Verb::Delete
            })
        );
        let other = AuthBuilder::new(Verb::Upload, now() + 60)
            .hash(hash(1))
            .server("other.example.org");
        assert_eq!(
            check(other, expect(Verb::Upload, Some(hash(1)))),
            Err(AuthError::OtherServer)
        );
        let no_x = AuthBuilder::new(Verb::Upload, now() + 60);
        assert_eq!(
            check(no_x, expect(Verb::Upload, Some(hash(1)))),
            Err(AuthError::MissingHash)
        );
        assert_eq!(
            check(upload(hash(2)), expect(Verb::Upload, Some(hash(1)))),
            Err(AuthError::HashNotAuthorised)
        );
        // get: x optional, but limiting when present.
        let get_any = AuthBuilder::new(Verb::Get, now() + 60);
        assert!(check(get_any, expect(Verb::Get, Some(hash(3)))).is_ok());
        let get_one = AuthBuilder::new(Verb::Get, now() + 60).hash(hash(1));
        assert_eq!(
            check(get_one, expect(Verb::Get, Some(hash(3)))),
            Err(AuthError::HashNotAuthorised)
        );
        // No server tags: valid anywhere.
        let anywhere = AuthBuilder::new(Verb::List, now() + 60);
        assert!(check(anywhere, expect(Verb::List, None)).is_ok());
    }

    #[test]
    fn tampered_events_fail_id_or_signature() {
        let keys = Keys::generate();
        let e = token(&keys, upload(hash(1)));
        let ex = expect(Verb::Upload, Some(hash(1)));

        let mut json: serde_json::Value = serde_json::from_str(&e.as_json()).unwrap();
        json["content"] = "changed".into();
        let tampered = Event::from_json(json.to_string()).unwrap();
        assert_eq!(validate(&tampered, &ex), Err(AuthError::BadId));

        let other = token(&Keys::generate(), upload(hash(1)));
        let mut json: serde_json::Value = serde_json::from_str(&e.as_json()).unwrap();
        json["sig"] = other.sig.to_string().into();
        let forged = Event::from_json(json.to_string()).unwrap();
        assert_eq!(validate(&forged, &ex), Err(AuthError::BadSignature));
    }

    #[test]
    fn statuses() {
        assert_eq!(AuthError::MissingHeader.status(), 401);
        assert_eq!(AuthError::Expired.status(), 401);
        assert_eq!(AuthError::BadSignature.status(), 401);
        assert_eq!(AuthError::OtherServer.status(), 403);
        assert_eq!(AuthError::HashNotAuthorised.status(), 403);
    }
}
