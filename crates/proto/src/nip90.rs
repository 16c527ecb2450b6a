//! NIP-90 Data Vending Machines: the job request, result and feedback envelope.
//!
//! rust-nostr 0.45 dropped its NIP-90 types, so ours live here. Parsing is strict: every error
//! names the tag that is wrong and why, so a DVM can answer a bad request with `error` feedback
//! that a person can act on. Tags this module does not know are ignored, as NIP-90 allows.
//!
//! Encrypted requests use NIP-44 v2 (never NIP-04): the `i` and `param` tags travel as a
//! NIP-44 ciphertext of their JSON array in `content`, and the public tags are only `p` and
//! `encrypted`. Results and feedback for an encrypted request are encrypted the same way.

use std::fmt;
use std::str::FromStr;

use nostr::nips::nip44;
use nostr::{
    Event, EventBuilder, EventId, JsonUtil, Kind, PublicKey, RelayUrl, SecretKey, Tag, TagKind,
    Timestamp,
};

use crate::kinds::{self, JOB_FEEDBACK};
use crate::tags::{custom_tag, first_tag};

const TAG_INPUT: &str = "i";
const TAG_PARAM: &str = "param";
const TAG_OUTPUT: &str = "output";
const TAG_BID: &str = "bid";
const TAG_RELAYS: &str = "relays";
const TAG_ENCRYPTED: &str = "encrypted";
const TAG_REQUEST: &str = "request";
const TAG_AMOUNT: &str = "amount";
const TAG_STATUS: &str = "status";

/// Why an event is not a valid NIP-90 job event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Nip90Error {
    #[error("kind {found} is not a NIP-90 {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("unknown input type {0:?} in `i` tag (expected text, url, event or job)")]
    UnknownInputType(String),
    #[error(
        "unknown feedback status {0:?} (expected payment-required, processing, error, success or partial)"
    )]
    UnknownStatus(String),
    #[error("the request is encrypted (NIP-44); decrypt it with the provider's key")]
    Encrypted,
    #[error("an encrypted request must name exactly one provider in a `p` tag")]
    EncryptedNeedsOneProvider,
    #[error("cannot decrypt the NIP-44 content: {0}")]
    Decrypt(String),
    #[error("cannot encrypt with NIP-44: {0}")]
    Encrypt(String),
    #[error("decrypted content is not a JSON array of tags: {0}")]
    EncryptedPayload(String),
    #[error("result kind {result} does not answer request kind {request} (expected {expected})")]
    ResultKindMismatch {
        result: u16,
        request: u16,
        expected: u16,
    },
    #[error("embedded request event is invalid: {0}")]
    InvalidEmbeddedRequest(String),
    #[error("`{tag}` tag names {found}, but the embedded request says {expected}")]
    Inconsistent {
        tag: &'static str,
        found: String,
        expected: String,
    },
}

type Result<T> = std::result::Result<T, Nip90Error>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> Nip90Error {
    Nip90Error::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

/// The type of a job input (`i` tag, element 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    /// The literal value.
    Text,
    /// A URL to fetch.
    Url,
    /// A Nostr event id.
    Event,
    /// The output of the job request with this id.
    Job,
}

impl InputType {
    pub const fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Url => "url",
            InputType::Event => "event",
            InputType::Job => "job",
        }
    }
}

impl fmt::Display for InputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InputType {
    type Err = Nip90Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(InputType::Text),
            "url" => Ok(InputType::Url),
            "event" => Ok(InputType::Event),
            "job" => Ok(InputType::Job),
            other => Err(Nip90Error::UnknownInputType(other.to_string())),
        }
    }
}

/// One job input: `["i", data, type, relay?, marker?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInput {
    pub data: String,
    pub input_type: InputType,
    pub relay: Option<RelayUrl>,
    pub marker: Option<String>,
}

impl JobInput {
    pub fn text(value: impl Into<String>) -> Self {
        JobInput {
            data: value.into(),
            input_type: InputType::Text,
            relay: None,
            marker: None,
        }
    }

    pub fn url(url: impl Into<String>) -> Self {
        JobInput {
            data: url.into(),
            input_type: InputType::Url,
            relay: None,
            marker: None,
        }
    }

    pub fn event(id: EventId, relay: Option<RelayUrl>) -> Self {
        JobInput {
            data: id.to_hex(),
            input_type: InputType::Event,
            relay,
            marker: None,
        }
    }

    /// The output of an earlier job: `id` is the earlier job's *request* id.
    pub fn job(request_id: EventId, relay: Option<RelayUrl>) -> Self {
        JobInput {
            data: request_id.to_hex(),
            input_type: InputType::Job,
            relay,
            marker: None,
        }
    }

    pub fn with_marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = Some(marker.into());
        self
    }

    /// The event id this input points at, for `event` and `job` inputs.
    pub fn event_id(&self) -> Option<EventId> {
        match self.input_type {
            InputType::Event | InputType::Job => EventId::from_hex(&self.data).ok(),
            InputType::Text | InputType::Url => None,
        }
    }

    pub fn to_tag(&self) -> Tag {
        let mut values = vec![self.data.clone(), self.input_type.as_str().to_string()];
        if self.relay.is_some() || self.marker.is_some() {
            values.push(
                self.relay
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            );
        }
        if let Some(marker) = &self.marker {
            values.push(marker.clone());
        }
        custom_tag(TAG_INPUT, values)
    }

    /// Parses the values after the tag name.
    fn parse(values: &[String]) -> Result<Self> {
        let data = values
            .first()
            .ok_or_else(|| malformed("i", "no data"))?
            .clone();
        let input_type: InputType = values
            .get(1)
            .ok_or_else(|| malformed("i", "no input type"))?
            .parse()?;
        let relay = match values.get(2).map(String::as_str) {
            None | Some("") => None,
            Some(url) => Some(
                RelayUrl::parse(url).map_err(|e| malformed("i", format!("relay {url:?}: {e}")))?,
            ),
        };
        let marker = values.get(3).filter(|m| !m.is_empty()).cloned();
        match input_type {
            InputType::Event | InputType::Job => {
                EventId::from_hex(&data).map_err(|_| {
                    malformed(
                        "i",
                        format!("{input_type} input {data:?} is not a 64-hex event id"),
                    )
                })?;
            }
            InputType::Url => {
                url::Url::parse(&data)
                    .map_err(|e| malformed("i", format!("url input {data:?}: {e}")))?;
            }
            InputType::Text => {}
        }
        Ok(JobInput {
            data,
            input_type,
            relay,
            marker,
        })
    }
}

/// A job parameter: `["param", key, value, more values…]`.
#[derive(Clone, PartialEq, Eq)]
pub struct JobParam {
    pub key: String,
    pub values: Vec<String>,
}

/// Params named `secret` (our run-step and run-pipeline secrets, which only travel encrypted)
/// show their name but not their value, so `{:?}` of a request never leaks one.
impl fmt::Debug for JobParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("JobParam");
        debug.field("key", &self.key);
        if self.key == "secret" {
            // `["param", "secret", NAME, VALUE]`: the name may show, nothing after it may.
            let shown: Vec<&str> = match self.values.as_slice() {
                [name, _, ..] => vec![name.as_str(), "***"],
                _ => vec!["***"],
            };
            debug.field("values", &shown)
        } else if self.key == crate::payment::PARAM_CASHU {
            // A Cashu token is money: it never reaches a log.
            debug.field("values", &["***"])
        } else {
            debug.field("values", &self.values)
        }
        .finish()
    }
}

impl JobParam {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        JobParam {
            key: key.into(),
            values: vec![value.into()],
        }
    }

    /// The first value (most params have exactly one).
    pub fn value(&self) -> &str {
        self.values.first().map(String::as_str).unwrap_or_default()
    }

    pub fn to_tag(&self) -> Tag {
        custom_tag(
            TAG_PARAM,
            std::iter::once(self.key.clone()).chain(self.values.iter().cloned()),
        )
    }

    fn parse(values: &[String]) -> Result<Self> {
        let key = values
            .first()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| malformed("param", "no key"))?
            .clone();
        if values.len() < 2 {
            return Err(malformed("param", format!("param {key:?} has no value")));
        }
        Ok(JobParam {
            key,
            values: values[1..].to_vec(),
        })
    }
}

/// A payment request: `["amount", msats, bolt11?]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub msats: u64,
    pub invoice: Option<String>,
}

impl Amount {
    fn to_tag(&self) -> Tag {
        let mut values = vec![self.msats.to_string()];
        values.extend(self.invoice.clone());
        custom_tag(TAG_AMOUNT, values)
    }

    fn parse(values: &[String]) -> Result<Self> {
        let msats = values
            .first()
            .ok_or_else(|| malformed("amount", "no value"))?;
        let msats = msats
            .parse()
            .map_err(|_| malformed("amount", format!("{msats:?} is not a number of millisats")))?;
        Ok(Amount {
            msats,
            invoice: values.get(1).filter(|s| !s.is_empty()).cloned(),
        })
    }
}

/// A job request (kind 5000–5999).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub kind: Kind,
    pub inputs: Vec<JobInput>,
    pub params: Vec<JobParam>,
    /// Expected output MIME type.
    pub output: Option<String>,
    /// Most the customer will pay, in millisats.
    pub bid_msats: Option<u64>,
    /// Where providers should publish feedback and results.
    pub relays: Vec<RelayUrl>,
    /// Preferred providers; others may still answer unless the request is encrypted.
    pub providers: Vec<PublicKey>,
    /// NIP-40: providers must not start the job after this time.
    pub expiration: Option<Timestamp>,
    /// Our extension: the request this one is a step of (`["e", ID]`), so that the requester
    /// can find every sub-request of a run on the relays after a restart.
    pub parent: Option<EventId>,
    /// Free-form content of a clear request.
    pub content: String,
}

impl JobRequest {
    /// An empty request of `kind`; fails unless `kind` is in 5000–5999.
    pub fn new(kind: Kind) -> Result<Self> {
        if !kinds::is_job_request(kind) {
            return Err(Nip90Error::WrongKind {
                expected: "job request (5000-5999)",
                found: kind.as_u16(),
            });
        }
        Ok(JobRequest {
            kind,
            inputs: Vec::new(),
            params: Vec::new(),
            output: None,
            bid_msats: None,
            relays: Vec::new(),
            providers: Vec::new(),
            expiration: None,
            parent: None,
            content: String::new(),
        })
    }

    pub fn input(mut self, input: JobInput) -> Self {
        self.inputs.push(input);
        self
    }

    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(JobParam::new(key, value));
        self
    }

    pub fn provider(mut self, provider: PublicKey) -> Self {
        self.providers.push(provider);
        self
    }

    /// The values of the first param named `key`.
    pub fn param_values(&self, key: &str) -> Option<&[String]> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.values.as_slice())
    }

    /// The first value of the first param named `key`.
    pub fn param_value(&self, key: &str) -> Option<&str> {
        self.param_values(key)
            .and_then(|values| values.first())
            .map(String::as_str)
    }

    /// Whether `provider` may take this job: open requests are for anyone, otherwise the
    /// provider must be named in a `p` tag.
    pub fn is_for(&self, provider: &PublicKey) -> bool {
        self.providers.is_empty() || self.providers.contains(provider)
    }

    fn secret_tags(&self) -> Vec<Tag> {
        self.inputs
            .iter()
            .map(JobInput::to_tag)
            .chain(self.params.iter().map(JobParam::to_tag))
            .collect()
    }

    fn public_tags(&self) -> Vec<Tag> {
        let mut tags = Vec::new();
        if let Some(output) = &self.output {
            tags.push(custom_tag(TAG_OUTPUT, [output.clone()]));
        }
        if let Some(bid) = self.bid_msats {
            tags.push(custom_tag(TAG_BID, [bid.to_string()]));
        }
        if !self.relays.is_empty() {
            tags.push(Tag::relays(self.relays.iter().cloned()));
        }
        tags.extend(self.providers.iter().copied().map(Tag::public_key));
        if let Some(expiration) = self.expiration {
            tags.push(Tag::expiration(expiration));
        }
        if let Some(parent) = self.parent {
            tags.push(Tag::event(parent));
        }
        tags
    }

    /// A clear request, ready to sign. (Self-tagging is allowed throughout: an operator may well
    /// run a job on its own DVM, and rust-nostr would otherwise drop that `p` tag.)
    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = self.secret_tags();
        tags.extend(self.public_tags());
        EventBuilder::new(self.kind, self.content.clone())
            .tags(tags)
            .allow_self_tagging()
    }

    /// A request whose inputs and params are NIP-44 encrypted to its single provider.
    pub fn to_encrypted_event_builder(&self, customer: &SecretKey) -> Result<EventBuilder> {
        let (provider, plaintext) = self.secret_payload()?;
        let ciphertext = nip44::encrypt(customer, &provider, plaintext, nip44::Version::V2)
            .map_err(|e| Nip90Error::Encrypt(e.to_string()))?;
        Ok(self.to_event_builder_with_ciphertext(ciphertext))
    }

    /// What an encrypted request hides, and from whom: its single provider and the clear JSON
    /// of its inputs and params. For a signer that encrypts elsewhere (a NIP-46 bunker), which
    /// then gives the ciphertext to [`JobRequest::to_event_builder_with_ciphertext`].
    pub fn secret_payload(&self) -> Result<(PublicKey, String)> {
        let [provider] = self.providers.as_slice() else {
            return Err(Nip90Error::EncryptedNeedsOneProvider);
        };
        let payload: Vec<Vec<String>> = self.secret_tags().into_iter().map(Tag::to_vec).collect();
        let json =
            serde_json::to_string(&payload).map_err(|e| Nip90Error::Encrypt(e.to_string()))?;
        Ok((*provider, json))
    }

    /// The encrypted request whose content is `ciphertext`, the NIP-44 encryption of
    /// [`JobRequest::secret_payload`] from the customer to the provider.
    pub fn to_event_builder_with_ciphertext(&self, ciphertext: String) -> EventBuilder {
        let mut tags = self.public_tags();
        tags.push(custom_tag(TAG_ENCRYPTED, Vec::<String>::new()));
        EventBuilder::new(self.kind, ciphertext)
            .tags(tags)
            .allow_self_tagging()
    }

    /// Whether the event carries the `encrypted` tag.
    pub fn is_encrypted(event: &Event) -> bool {
        event
            .tags
            .iter()
            .any(|t| t.kind() == TagKind::custom(TAG_ENCRYPTED))
    }

    /// Parses a clear request. An encrypted one is [`Nip90Error::Encrypted`].
    pub fn from_event(event: &Event) -> Result<Self> {
        if Self::is_encrypted(event) {
            return Err(Nip90Error::Encrypted);
        }
        let mut request = Self::parse_public(event)?;
        request.content = event.content.clone();
        for tag in event.tags.iter() {
            request.parse_secret_tag(tag.as_slice())?;
        }
        Ok(request)
    }

    /// Parses a request that may be encrypted to `provider`.
    pub fn from_event_for(event: &Event, provider: &SecretKey) -> Result<Self> {
        if !Self::is_encrypted(event) {
            return Self::from_event(event);
        }
        let request = Self::parse_public(event)?;
        Self::decrypt_into(request, event, provider, &event.pubkey)
    }

    /// Parses an encrypted request with its *author's* key (to read back what one sent).
    pub fn from_event_for_author(event: &Event, author: &SecretKey) -> Result<Self> {
        if !Self::is_encrypted(event) {
            return Self::from_event(event);
        }
        let provider = Self::encrypted_to(event)?;
        let request = Self::parse_public(event)?;
        Self::decrypt_into(request, event, author, &provider)
    }

    /// The provider an encrypted request is encrypted to (its one `p`): the other side of the
    /// NIP-44 conversation when its author reads it back.
    pub fn encrypted_to(event: &Event) -> Result<PublicKey> {
        let request = Self::parse_public(event)?;
        let [provider] = request.providers.as_slice() else {
            return Err(Nip90Error::EncryptedNeedsOneProvider);
        };
        Ok(*provider)
    }

    /// Parses an encrypted request whose content someone already decrypted (e.g. a NIP-46
    /// bunker holding the author's key): `plaintext` is the clear JSON of its inputs and params.
    pub fn from_event_with_plaintext(event: &Event, plaintext: &str) -> Result<Self> {
        if !Self::is_encrypted(event) {
            return Self::from_event(event);
        }
        Self::with_secret_payload(Self::parse_public(event)?, plaintext)
    }

    fn decrypt_into(
        request: JobRequest,
        event: &Event,
        secret: &SecretKey,
        other: &PublicKey,
    ) -> Result<Self> {
        let plaintext = nip44::decrypt(secret, other, &event.content)
            .map_err(|e| Nip90Error::Decrypt(e.to_string()))?;
        Self::with_secret_payload(request, &plaintext)
    }

    fn with_secret_payload(mut request: JobRequest, plaintext: &str) -> Result<Self> {
        let tags: Vec<Vec<String>> = serde_json::from_str(plaintext)
            .map_err(|e| Nip90Error::EncryptedPayload(e.to_string()))?;
        for tag in &tags {
            match tag.first().map(String::as_str) {
                Some(TAG_INPUT | TAG_PARAM) => request.parse_secret_tag(tag)?,
                other => {
                    return Err(Nip90Error::EncryptedPayload(format!(
                        "unexpected tag {other:?} (only `i` and `param` are encrypted)"
                    )));
                }
            }
        }
        Ok(request)
    }

    fn parse_secret_tag(&mut self, tag: &[String]) -> Result<()> {
        match tag.first().map(String::as_str) {
            Some(TAG_INPUT) => self.inputs.push(JobInput::parse(&tag[1..])?),
            Some(TAG_PARAM) => self.params.push(JobParam::parse(&tag[1..])?),
            _ => {}
        }
        Ok(())
    }

    fn parse_public(event: &Event) -> Result<Self> {
        let mut request = JobRequest::new(event.kind)?;
        for tag in event.tags.iter() {
            let values = tag.as_slice();
            let rest = &values[1..];
            match values[0].as_str() {
                TAG_OUTPUT => {
                    let mime = rest
                        .first()
                        .ok_or_else(|| malformed("output", "no MIME type"))?;
                    request.output = Some(mime.clone());
                }
                TAG_BID => {
                    let bid = rest.first().ok_or_else(|| malformed("bid", "no value"))?;
                    request.bid_msats = Some(bid.parse().map_err(|_| {
                        malformed("bid", format!("{bid:?} is not a number of millisats"))
                    })?);
                }
                TAG_RELAYS => {
                    for url in rest {
                        request.relays.push(
                            RelayUrl::parse(url)
                                .map_err(|e| malformed("relays", format!("{url:?}: {e}")))?,
                        );
                    }
                }
                "p" => {
                    let hex = rest
                        .first()
                        .ok_or_else(|| malformed("p", "no public key"))?;
                    request
                        .providers
                        .push(PublicKey::from_hex(hex).map_err(|_| {
                            malformed("p", format!("{hex:?} is not a 64-hex public key"))
                        })?);
                }
                "e" => {
                    let hex = rest.first().ok_or_else(|| malformed("e", "no event id"))?;
                    request.parent = Some(EventId::from_hex(hex).map_err(|_| {
                        malformed("e", format!("{hex:?} is not a 64-hex event id"))
                    })?);
                }
                "expiration" => {
                    let at = rest
                        .first()
                        .ok_or_else(|| malformed("expiration", "no value"))?;
                    request.expiration = Some(Timestamp::from_str(at).map_err(|_| {
                        malformed("expiration", format!("{at:?} is not a Unix timestamp"))
                    })?);
                }
                _ => {}
            }
        }
        Ok(request)
    }
}

/// A job result (kind 6000–6999) answering one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub kind: Kind,
    /// The request this result answers, embedded whole (NIP-90 `request` tag).
    pub request: Event,
    /// Where the request can be found.
    pub request_relay: Option<RelayUrl>,
    /// The payload (encrypted if the request was).
    pub content: String,
    pub amount: Option<Amount>,
    pub encrypted: bool,
}

impl JobResult {
    /// A result for `request` with `content`; the kind is the request's + 1000.
    pub fn for_request(request: &Event, content: impl Into<String>) -> Result<Self> {
        let kind = kinds::result_kind_for(request.kind).ok_or(Nip90Error::WrongKind {
            expected: "job request (5000-5999)",
            found: request.kind.as_u16(),
        })?;
        Ok(JobResult {
            kind,
            request: request.clone(),
            request_relay: None,
            content: content.into(),
            amount: None,
            encrypted: JobRequest::is_encrypted(request),
        })
    }

    pub fn request_id(&self) -> EventId {
        self.request.id
    }

    pub fn customer(&self) -> PublicKey {
        self.request.pubkey
    }

    /// The result, ready to sign. For an encrypted request, `content` is NIP-44 encrypted to
    /// the customer with `provider`'s key and the clear inputs are not echoed.
    pub fn to_event_builder(&self, provider: &SecretKey) -> Result<EventBuilder> {
        let mut tags = vec![
            custom_tag(TAG_REQUEST, [self.request.as_json()]),
            Tag::parse([
                "e".to_string(),
                self.request.id.to_hex(),
                self.request_relay
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ])
            .map_err(|e| malformed("e", e.to_string()))?,
            Tag::public_key(self.request.pubkey),
        ];
        tags.extend(self.amount.as_ref().map(Amount::to_tag));
        let content = if self.encrypted {
            tags.push(custom_tag(TAG_ENCRYPTED, Vec::<String>::new()));
            nip44::encrypt(
                provider,
                &self.request.pubkey,
                &self.content,
                nip44::Version::V2,
            )
            .map_err(|e| Nip90Error::Encrypt(e.to_string()))?
        } else {
            let request = JobRequest::from_event(&self.request)?;
            tags.extend(request.inputs.iter().map(JobInput::to_tag));
            self.content.clone()
        };
        Ok(EventBuilder::new(self.kind, content)
            .tags(tags)
            .allow_self_tagging())
    }

    /// Parses a result and checks that it is consistent with the request it embeds: the
    /// request is validly signed, the kinds match, and `e`/`p` name that request and its
    /// author. The content stays as sent (see [`JobResult::decrypt`]).
    pub fn from_event(event: &Event) -> Result<Self> {
        if !kinds::is_job_result(event.kind) {
            return Err(Nip90Error::WrongKind {
                expected: "job result (6000-6999)",
                found: event.kind.as_u16(),
            });
        }
        let request_json = first_tag(event, TAG_REQUEST)
            .ok_or(Nip90Error::MissingTag("request"))?
            .get(1)
            .ok_or_else(|| malformed("request", "no event JSON"))?;
        let request = Event::from_json(request_json)
            .map_err(|e| Nip90Error::InvalidEmbeddedRequest(e.to_string()))?;
        request
            .verify()
            .map_err(|e| Nip90Error::InvalidEmbeddedRequest(e.to_string()))?;
        let expected = kinds::result_kind_for(request.kind).ok_or_else(|| {
            Nip90Error::InvalidEmbeddedRequest(format!(
                "kind {} is not a job request",
                request.kind.as_u16()
            ))
        })?;
        if expected != event.kind {
            return Err(Nip90Error::ResultKindMismatch {
                result: event.kind.as_u16(),
                request: request.kind.as_u16(),
                expected: expected.as_u16(),
            });
        }
        let (request_id, request_relay) = parse_e_tag(event)?;
        if request_id != request.id {
            return Err(Nip90Error::Inconsistent {
                tag: "e",
                found: request_id.to_hex(),
                expected: request.id.to_hex(),
            });
        }
        let customer = parse_p_tag(event)?;
        if customer != request.pubkey {
            return Err(Nip90Error::Inconsistent {
                tag: "p",
                found: customer.to_hex(),
                expected: request.pubkey.to_hex(),
            });
        }
        Ok(JobResult {
            kind: event.kind,
            request,
            request_relay,
            content: event.content.clone(),
            amount: first_tag(event, TAG_AMOUNT)
                .map(|t| Amount::parse(&t[1..]))
                .transpose()?,
            encrypted: first_tag(event, TAG_ENCRYPTED).is_some(),
        })
    }

    /// The clear content: decrypted with the customer's key if the result is encrypted.
    pub fn decrypt(&self, customer: &SecretKey, provider: &PublicKey) -> Result<String> {
        if !self.encrypted {
            return Ok(self.content.clone());
        }
        nip44::decrypt(customer, provider, &self.content)
            .map_err(|e| Nip90Error::Decrypt(e.to_string()))
    }
}

/// The status of a job, as reported in feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackStatus {
    PaymentRequired,
    Processing,
    Error,
    Success,
    Partial,
}

impl FeedbackStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::PaymentRequired => "payment-required",
            FeedbackStatus::Processing => "processing",
            FeedbackStatus::Error => "error",
            FeedbackStatus::Success => "success",
            FeedbackStatus::Partial => "partial",
        }
    }
}

impl fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedbackStatus {
    type Err = Nip90Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "payment-required" => Ok(FeedbackStatus::PaymentRequired),
            "processing" => Ok(FeedbackStatus::Processing),
            "error" => Ok(FeedbackStatus::Error),
            "success" => Ok(FeedbackStatus::Success),
            "partial" => Ok(FeedbackStatus::Partial),
            other => Err(Nip90Error::UnknownStatus(other.to_string())),
        }
    }
}

/// Job feedback (kind 7000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFeedback {
    pub status: FeedbackStatus,
    /// Human-readable extra information (third element of the `status` tag).
    pub extra: Option<String>,
    pub request_id: EventId,
    pub request_relay: Option<RelayUrl>,
    pub customer: PublicKey,
    /// Partial output (for `partial`, a log tail), or empty.
    pub content: String,
    pub amount: Option<Amount>,
    /// Whether `content` is (to be) NIP-44 encrypted, as it must be for an encrypted request.
    pub encrypted: bool,
    /// Change sealed to the payer (`["change", …]`, [`crate::payment`]): the payment of a job
    /// that failed before it started, or what a per-second price did not use.
    pub change: Option<String>,
}

impl JobFeedback {
    pub fn new(status: FeedbackStatus, request: &Event) -> Self {
        JobFeedback {
            status,
            extra: None,
            request_id: request.id,
            request_relay: None,
            customer: request.pubkey,
            content: String::new(),
            amount: None,
            encrypted: JobRequest::is_encrypted(request),
            change: None,
        }
    }

    pub fn with_extra(mut self, extra: impl Into<String>) -> Self {
        self.extra = Some(extra.into());
        self
    }

    /// NIP-90's `amount` (millisats) on the feedback: what a `payment-required` asks for.
    pub fn with_amount(mut self, msats: u64) -> Self {
        self.amount = Some(Amount {
            msats,
            invoice: None,
        });
        self
    }

    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }

    /// The feedback, ready to sign by `provider`; non-empty content of feedback on an encrypted
    /// request is NIP-44 encrypted to the customer.
    pub fn to_event_builder(&self, provider: &SecretKey) -> Result<EventBuilder> {
        let mut status = vec![self.status.as_str().to_string()];
        status.extend(self.extra.clone());
        let mut tags = vec![
            custom_tag(TAG_STATUS, status),
            Tag::parse([
                "e".to_string(),
                self.request_id.to_hex(),
                self.request_relay
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ])
            .map_err(|e| malformed("e", e.to_string()))?,
            Tag::public_key(self.customer),
        ];
        tags.extend(self.amount.as_ref().map(Amount::to_tag));
        tags.extend(
            self.change
                .as_ref()
                .map(|sealed| custom_tag(crate::payment::TAG_CHANGE, [sealed.as_str()])),
        );
        let content = if self.encrypted && !self.content.is_empty() {
            tags.push(custom_tag(TAG_ENCRYPTED, Vec::<String>::new()));
            nip44::encrypt(provider, &self.customer, &self.content, nip44::Version::V2)
                .map_err(|e| Nip90Error::Encrypt(e.to_string()))?
        } else {
            self.content.clone()
        };
        Ok(EventBuilder::new(JOB_FEEDBACK, content)
            .tags(tags)
            .allow_self_tagging())
    }

    /// The clear content: decrypted with the customer's key if it is encrypted.
    pub fn decrypt(&self, customer: &SecretKey, provider: &PublicKey) -> Result<String> {
        if !self.encrypted || self.content.is_empty() {
            return Ok(self.content.clone());
        }
        nip44::decrypt(customer, provider, &self.content)
            .map_err(|e| Nip90Error::Decrypt(e.to_string()))
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        if event.kind != JOB_FEEDBACK {
            return Err(Nip90Error::WrongKind {
                expected: "job feedback (7000)",
                found: event.kind.as_u16(),
            });
        }
        let status_tag = first_tag(event, TAG_STATUS).ok_or(Nip90Error::MissingTag("status"))?;
        let status: FeedbackStatus = status_tag
            .get(1)
            .ok_or_else(|| malformed("status", "no status"))?
            .parse()?;
        let (request_id, request_relay) = parse_e_tag(event)?;
        Ok(JobFeedback {
            status,
            extra: status_tag.get(2).filter(|s| !s.is_empty()).cloned(),
            request_id,
            request_relay,
            customer: parse_p_tag(event)?,
            content: event.content.clone(),
            amount: first_tag(event, TAG_AMOUNT)
                .map(|t| Amount::parse(&t[1..]))
                .transpose()?,
            encrypted: first_tag(event, TAG_ENCRYPTED).is_some(),
            change: crate::payment::change_of(event).map(str::to_string),
        })
    }
}

/// A NIP-09 deletion that cancels `request` (kind 5 with `e` and `k` tags).
pub fn cancellation(request: &Event, reason: &str) -> EventBuilder {
    EventBuilder::new(Kind::EventDeletion, reason)
        .tags([
            Tag::event(request.id),
            custom_tag("k", [request.kind.as_u16().to_string()]),
        ])
        .allow_self_tagging()
}

/// Whether `deletion` is a valid cancellation of `request`: kind 5, by the request's author,
/// naming its id.
pub fn is_cancellation_of(deletion: &Event, request: &Event) -> bool {
    deletion.kind == Kind::EventDeletion
        && deletion.pubkey == request.pubkey
        && deletion.tags.event_ids().any(|id| *id == request.id)
}

fn parse_e_tag(event: &Event) -> Result<(EventId, Option<RelayUrl>)> {
    let tag = first_tag(event, "e").ok_or(Nip90Error::MissingTag("e"))?;
    let hex = tag.get(1).ok_or_else(|| malformed("e", "no event id"))?;
    let id = EventId::from_hex(hex)
        .map_err(|_| malformed("e", format!("{hex:?} is not a 64-hex event id")))?;
    let relay = match tag.get(2).map(String::as_str) {
        None | Some("") => None,
        Some(url) => {
            Some(RelayUrl::parse(url).map_err(|e| malformed("e", format!("relay {url:?}: {e}")))?)
        }
    };
    Ok((id, relay))
}

fn parse_p_tag(event: &Event) -> Result<PublicKey> {
    let tag = first_tag(event, "p").ok_or(Nip90Error::MissingTag("p"))?;
    let hex = tag.get(1).ok_or_else(|| malformed("p", "no public key"))?;
    PublicKey::from_hex(hex)
        .map_err(|_| malformed("p", format!("{hex:?} is not a 64-hex public key")))
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    fn relay() -> RelayUrl {
        RelayUrl::parse("ws://127.0.0.1:7777").unwrap()
    }

    fn sample_request(provider: PublicKey) -> JobRequest {
        let upstream = EventId::all_zeros();
        let mut request = JobRequest::new(Kind::from_u16(5702))
            .unwrap()
            .input(JobInput::url("https://git.example/repo.git").with_marker("repo"))
            .input(JobInput::job(upstream, Some(relay())).with_marker("upstream"))
            .input(JobInput::text("cargo build"))
            .param("commit", "0123456789abcdef0123456789abcdef01234567")
            .provider(provider);
        request.params.push(JobParam {
            key: "limits".into(),
            values: vec!["cpu=2".into(), "mem=1G".into()],
        });
        request.output = Some("application/json".into());
        request.bid_msats = Some(21_000);
        request.relays = vec![relay()];
        request.expiration = Some(Timestamp::from(1_900_000_000));
        request.parent = Some(EventId::from_hex(&"ab".repeat(32)).unwrap());
        request
    }

    fn sign(builder: EventBuilder, keys: &Keys) -> Event {
        builder.sign_with_keys(keys).unwrap()
    }

    #[test]
    fn clear_request_round_trips() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sample_request(provider.public_key());
        let event = sign(request.to_event_builder(), &customer);
        let parsed = JobRequest::from_event(&event).unwrap();
        assert_eq!(parsed, request);
        assert_eq!(parsed.param_value("commit"), request.param_value("commit"));
        assert!(parsed.is_for(&provider.public_key()));
        assert!(!parsed.is_for(&customer.public_key()));
    }

    /// A customer, a provider and a request to it carrying a secret.
    fn request_with_a_secret() -> (Keys, Keys, JobRequest) {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let mut request = sample_request(provider.public_key());
        request
            .params
            .push(JobParam::new("secret", "TOKEN=hunter2"));
        (customer, provider, request)
    }

    #[test]
    fn encrypted_request_hides_inputs_and_round_trips() {
        let (customer, provider, request) = request_with_a_secret();
        let event = sign(
            request
                .to_encrypted_event_builder(customer.secret_key())
                .unwrap(),
            &customer,
        );
        assert!(!event.as_json().contains("hunter2"));
        assert!(!event.as_json().contains("cargo build"));
        assert!(!format!("{request:?}").contains("hunter2"));
        assert_eq!(JobRequest::from_event(&event), Err(Nip90Error::Encrypted));
        let parsed = JobRequest::from_event_for(&event, provider.secret_key()).unwrap();
        assert_eq!(parsed.inputs, request.inputs);
        assert_eq!(parsed.params, request.params);
        // Its author can read it back too (a router recovering its own steps).
        let own = JobRequest::from_event_for_author(&event, customer.secret_key()).unwrap();
        assert_eq!(own.params, request.params);
        // Somebody else cannot read it.
        let other = Keys::generate();
        assert!(matches!(
            JobRequest::from_event_for(&event, other.secret_key()),
            Err(Nip90Error::Decrypt(_))
        ));
    }

    /// The steps a remote signer (NIP-46 bunker) takes one by one: the payload to encrypt
    /// elsewhere, the event around its ciphertext, and reading it back from a plaintext
    /// decrypted elsewhere, agree with the one-step local-key functions.
    #[test]
    fn a_request_encrypted_by_a_remote_signer_reads_as_a_local_one() {
        let (customer, provider, request) = request_with_a_secret();
        let (to, plaintext) = request.secret_payload().unwrap();
        assert_eq!(to, provider.public_key());
        let ciphertext =
            nip44::encrypt(customer.secret_key(), &to, &plaintext, nip44::Version::V2).unwrap();
        let event = sign(
            request.to_event_builder_with_ciphertext(ciphertext),
            &customer,
        );
        assert!(JobRequest::is_encrypted(&event));
        assert!(!event.as_json().contains("hunter2"));
        // The provider reads it as any encrypted request.
        let parsed = JobRequest::from_event_for(&event, provider.secret_key()).unwrap();
        assert_eq!(parsed.params, request.params);
        // The author, through its signer: the other side is the one provider.
        assert_eq!(
            JobRequest::encrypted_to(&event).unwrap(),
            provider.public_key()
        );
        let clear = nip44::decrypt(
            customer.secret_key(),
            &provider.public_key(),
            &event.content,
        )
        .unwrap();
        let own = JobRequest::from_event_with_plaintext(&event, &clear).unwrap();
        assert_eq!(own.inputs, request.inputs);
        assert_eq!(own.params, request.params);
        // A plaintext that is not our payload is refused, not half read.
        assert!(matches!(
            JobRequest::from_event_with_plaintext(&event, "[[\"p\", \"x\"]]"),
            Err(Nip90Error::EncryptedPayload(_))
        ));
    }

    #[test]
    fn encryption_needs_exactly_one_provider() {
        let customer = Keys::generate();
        let request = JobRequest::new(Kind::from_u16(5702)).unwrap();
        assert_eq!(
            request
                .to_encrypted_event_builder(customer.secret_key())
                .unwrap_err(),
            Nip90Error::EncryptedNeedsOneProvider
        );
    }

    fn event_with_tags(kind: u16, tags: Vec<Vec<&str>>, keys: &Keys) -> Event {
        let tags = tags
            .into_iter()
            .map(|t| Tag::parse(t).unwrap())
            .collect::<Vec<_>>();
        sign(
            EventBuilder::new(Kind::from_u16(kind), "")
                .tags(tags)
                .allow_self_tagging(),
            keys,
        )
    }

    #[test]
    fn malformed_requests_name_the_tag() {
        let keys = Keys::generate();
        let cases: Vec<(Vec<Vec<&str>>, &str)> = vec![
            (vec![vec!["i", "x", "carrier-pigeon"]], "unknown input type"),
            (vec![vec!["i", "not-hex", "job"]], "`i`"),
            (vec![vec!["i", "::", "url"]], "`i`"),
            (vec![vec!["i", "x", "text", "not a url"]], "`i`"),
            (vec![vec!["i"]], "`i`"),
            (vec![vec!["param", "commit"]], "`param`"),
            (vec![vec!["param", ""]], "`param`"),
            (vec![vec!["bid", "lots"]], "`bid`"),
            (vec![vec!["p", "bob"]], "`p`"),
            (vec![vec!["relays", "nope"]], "`relays`"),
            (vec![vec!["expiration", "tomorrow"]], "`expiration`"),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(5702, tags.clone(), &keys);
            let err = JobRequest::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{tags:?}: {err}");
        }
        let event = event_with_tags(1, vec![], &keys);
        assert!(matches!(
            JobRequest::from_event(&event),
            Err(Nip90Error::WrongKind { found: 1, .. })
        ));
    }

    #[test]
    fn clear_result_round_trips_and_echoes_inputs() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sign(
            sample_request(provider.public_key()).to_event_builder(),
            &customer,
        );
        let mut result = JobResult::for_request(&request, "{\"ok\":true}").unwrap();
        result.request_relay = Some(relay());
        result.amount = Some(Amount {
            msats: 1000,
            invoice: None,
        });
        let event = sign(
            result.to_event_builder(provider.secret_key()).unwrap(),
            &provider,
        );
        assert_eq!(event.kind.as_u16(), 6702);
        assert_eq!(
            event.tags.iter().filter(|t| t.as_slice()[0] == "i").count(),
            3
        );
        let parsed = JobResult::from_event(&event).unwrap();
        assert_eq!(parsed, result);
        assert_eq!(
            parsed
                .decrypt(customer.secret_key(), &provider.public_key())
                .unwrap(),
            "{\"ok\":true}"
        );
    }

    #[test]
    fn encrypted_result_round_trips() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sign(
            sample_request(provider.public_key())
                .to_encrypted_event_builder(customer.secret_key())
                .unwrap(),
            &customer,
        );
        let result = JobResult::for_request(&request, "secret output").unwrap();
        let event = sign(
            result.to_event_builder(provider.secret_key()).unwrap(),
            &provider,
        );
        assert!(!event.content.contains("secret output"));
        assert!(event.tags.iter().all(|t| t.as_slice()[0] != "i"));
        let parsed = JobResult::from_event(&event).unwrap();
        assert!(parsed.encrypted);
        assert_eq!(
            parsed
                .decrypt(customer.secret_key(), &provider.public_key())
                .unwrap(),
            "secret output"
        );
    }

    #[test]
    fn results_that_lie_about_their_request_are_rejected() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sign(
            sample_request(provider.public_key()).to_event_builder(),
            &customer,
        );
        let good = sign(
            JobResult::for_request(&request, "")
                .unwrap()
                .to_event_builder(provider.secret_key())
                .unwrap(),
            &provider,
        );
        let retag = |name: &str, value: String, kind: Option<u16>| {
            let tags = good.tags.iter().map(|t| {
                if t.as_slice()[0] == name {
                    let mut v = t.clone().to_vec();
                    v[1] = value.clone();
                    Tag::parse(v).unwrap()
                } else {
                    t.clone()
                }
            });
            let kind = Kind::from_u16(kind.unwrap_or(good.kind.as_u16()));
            sign(
                EventBuilder::new(kind, "").tags(tags).allow_self_tagging(),
                &provider,
            )
        };
        let other = EventId::all_zeros().to_hex();
        assert!(matches!(
            JobResult::from_event(&retag("e", other, None)),
            Err(Nip90Error::Inconsistent { tag: "e", .. })
        ));
        assert!(matches!(
            JobResult::from_event(&retag("p", provider.public_key().to_hex(), None)),
            Err(Nip90Error::Inconsistent { tag: "p", .. })
        ));
        assert!(matches!(
            JobResult::from_event(&retag("e", request.id.to_hex(), Some(6500))),
            Err(Nip90Error::ResultKindMismatch { .. })
        ));
        // A tampered embedded request no longer verifies.
        let tampered = request.as_json().replace("cargo build", "rm -rf /");
        assert!(matches!(
            JobResult::from_event(&retag("request", tampered, None)),
            Err(Nip90Error::InvalidEmbeddedRequest(_))
        ));
        assert!(matches!(
            JobResult::from_event(&retag("request", "{".into(), None)),
            Err(Nip90Error::InvalidEmbeddedRequest(_))
        ));
    }

    #[test]
    fn feedback_round_trips_every_status() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sign(
            sample_request(provider.public_key()).to_event_builder(),
            &customer,
        );
        for status in [
            FeedbackStatus::PaymentRequired,
            FeedbackStatus::Processing,
            FeedbackStatus::Error,
            FeedbackStatus::Success,
            FeedbackStatus::Partial,
        ] {
            let feedback = JobFeedback::new(status, &request)
                .with_extra("step 2/3")
                .with_content("log tail");
            let event = sign(
                feedback.to_event_builder(provider.secret_key()).unwrap(),
                &provider,
            );
            assert_eq!(JobFeedback::from_event(&event).unwrap(), feedback);
        }
    }

    #[test]
    fn feedback_on_an_encrypted_request_is_encrypted() {
        let customer = Keys::generate();
        let provider = Keys::generate();
        let request = sign(
            sample_request(provider.public_key())
                .to_encrypted_event_builder(customer.secret_key())
                .unwrap(),
            &customer,
        );
        let feedback =
            JobFeedback::new(FeedbackStatus::Partial, &request).with_content("secret log line");
        let event = sign(
            feedback.to_event_builder(provider.secret_key()).unwrap(),
            &provider,
        );
        assert!(!event.content.contains("secret log line"));
        let parsed = JobFeedback::from_event(&event).unwrap();
        assert_eq!(
            parsed
                .decrypt(customer.secret_key(), &provider.public_key())
                .unwrap(),
            "secret log line"
        );
    }

    #[test]
    fn malformed_feedback_names_the_problem() {
        let keys = Keys::generate();
        let id = EventId::all_zeros().to_hex();
        let pk = keys.public_key().to_hex();
        let cases: Vec<(Vec<Vec<&str>>, &str)> = vec![
            (vec![vec!["e", &id], vec!["p", &pk]], "missing `status`"),
            (
                vec![vec!["status", "done"], vec!["e", &id], vec!["p", &pk]],
                "unknown feedback status",
            ),
            (
                vec![vec!["status", "success"], vec!["p", &pk]],
                "missing `e`",
            ),
            (
                vec![vec!["status", "success"], vec!["e", &id]],
                "missing `p`",
            ),
            (
                vec![vec!["status", "success"], vec!["e", "zz"], vec!["p", &pk]],
                "`e`",
            ),
            (
                vec![
                    vec!["status", "success"],
                    vec!["e", &id],
                    vec!["p", &pk],
                    vec!["amount", "free"],
                ],
                "`amount`",
            ),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(7000, tags.clone(), &keys);
            let err = JobFeedback::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{tags:?}: {err}");
        }
    }

    #[test]
    fn cancellation_only_by_the_requester() {
        let customer = Keys::generate();
        let stranger = Keys::generate();
        let request = sign(
            JobRequest::new(Kind::from_u16(5702))
                .unwrap()
                .to_event_builder(),
            &customer,
        );
        let cancel = sign(cancellation(&request, "changed my mind"), &customer);
        assert!(is_cancellation_of(&cancel, &request));
        let forged = sign(cancellation(&request, ""), &stranger);
        assert!(!is_cancellation_of(&forged, &request));
    }
}
