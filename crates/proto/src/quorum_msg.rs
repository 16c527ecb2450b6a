//! Quorum transport (kinds 8709–8715): one envelope for every message members exchange to make
//! and use the quorum key — dealer share delivery, DKG rounds, FROST signing rounds.
//!
//! The event is signed by the sender's DVM key. Tags: `session` (64 hex: the DKG session, the
//! signing attempt…), `quorum` (the group key; absent only in DKG rounds, before the key
//! exists), one `p` per recipient and a NIP-40 `expiration` (required; short: the round's
//! deadline plus a margin). The content is a JSON object mapping each recipient's public key
//! (hex) to a NIP-44 v2 ciphertext from the sender to that recipient: the payload is sealed
//! separately for every recipient, so the message is "encrypted to the quorum" and each
//! recipient can only read its own entry. The plaintexts are the threshold crate's JSON; this
//! module never looks inside them.
//!
//! These kinds are regular, not ephemeral (design §5): a member that reconnects late must find
//! the round's messages on the relays and catch up before the deadline.
//!
//! `docs/protocol.md` §15.6 has an example of each kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nostr::nips::nip44;
use nostr::{Event, EventBuilder, EventId, Keys, Kind, PublicKey, Tag, Timestamp};

use crate::tags::{custom_tag, tags_named};

/// Dealer → one member: its key share.
pub const DEALER_SHARE: Kind = Kind::Custom(8709);
/// DKG round 1: a member's broadcast package, the same plaintext for every recipient.
pub const DKG_ROUND1: Kind = Kind::Custom(8710);
/// DKG round 2: a member's per-recipient packages (each recipient's plaintext differs).
pub const DKG_ROUND2: Kind = Kind::Custom(8711);
/// DKG done: a member announces the group key it derived (also in the clear `quorum` tag).
pub const DKG_DONE: Kind = Kind::Custom(8712);
/// FROST signing round 1: a signer's nonce commitment for a session.
pub const SIGNING_ROUND1: Kind = Kind::Custom(8713);
/// FROST signing round 2: a signer's signature share.
pub const SIGNING_ROUND2: Kind = Kind::Custom(8714);
/// Signing request: the unsigned event and the chosen signer subset, from whichever member
/// coordinates an attempt.
pub const SIGNING_REQUEST: Kind = Kind::Custom(8715);

const TAG_SESSION: &str = "session";
const TAG_QUORUM: &str = "quorum";
const TAG_RECIPIENT: &str = "p";
const TAG_EXPIRATION: &str = "expiration";
const TAG_DIGEST: &str = "digest";

/// Why a quorum message cannot be built, parsed or opened. No variant ever holds plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuorumMsgError {
    #[error("kind {found} is not a quorum message (8709-8715)")]
    WrongKind { found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
    #[error("malformed content: {0}")]
    MalformedContent(String),
    #[error("invalid id or signature on event {0}")]
    InvalidSignature(EventId),
    #[error("the message expired at {}", .0.as_secs())]
    Expired(Timestamp),
    #[error("{} is not a recipient of this message", .0.to_hex())]
    NotARecipient(PublicKey),
    #[error("cannot decrypt the NIP-44 payload for this recipient: {0}")]
    Decrypt(String),
    #[error("cannot encrypt with NIP-44 for {}: {reason}", .recipient.to_hex())]
    Encrypt {
        recipient: PublicKey,
        reason: String,
    },
    #[error("cannot sign the message: {0}")]
    Sign(String),
    #[error(
        "the payload sealed for this recipient does not hash to the message's `digest`: {} sent \
         different recipients different plaintexts",
        .0.to_hex()
    )]
    DigestMismatch(PublicKey),
}

type Result<T> = std::result::Result<T, QuorumMsgError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> QuorumMsgError {
    QuorumMsgError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_pubkey(tag: &'static str, text: &str) -> Result<PublicKey> {
    if !is_hex64(text) {
        return Err(malformed(
            tag,
            format!("{text:?} is not a 64-hex lowercase public key"),
        ));
    }
    let key = PublicKey::from_hex(text)
        .map_err(|_| malformed(tag, format!("{text:?} is not a public key")))?;
    key.xonly()
        .map_err(|_| malformed(tag, format!("{text:?} is not a valid public key")))?;
    Ok(key)
}

fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => QuorumMsgError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn required_value(event: &Event, name: &'static str) -> Result<String> {
    optional_value(event, name)?.ok_or(QuorumMsgError::MissingTag(name))
}

/// The seven message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    DealerShare,
    DkgRound1,
    DkgRound2,
    DkgDone,
    SigningRound1,
    SigningRound2,
    SigningRequest,
}

impl MessageKind {
    pub const ALL: [MessageKind; 7] = [
        MessageKind::DealerShare,
        MessageKind::DkgRound1,
        MessageKind::DkgRound2,
        MessageKind::DkgDone,
        MessageKind::SigningRound1,
        MessageKind::SigningRound2,
        MessageKind::SigningRequest,
    ];

    pub fn kind(self) -> Kind {
        match self {
            MessageKind::DealerShare => DEALER_SHARE,
            MessageKind::DkgRound1 => DKG_ROUND1,
            MessageKind::DkgRound2 => DKG_ROUND2,
            MessageKind::DkgDone => DKG_DONE,
            MessageKind::SigningRound1 => SIGNING_ROUND1,
            MessageKind::SigningRound2 => SIGNING_ROUND2,
            MessageKind::SigningRequest => SIGNING_REQUEST,
        }
    }

    pub fn from_kind(kind: Kind) -> Option<Self> {
        MessageKind::ALL.into_iter().find(|m| m.kind() == kind)
    }

    /// The name used in docs and logs.
    pub const fn name(self) -> &'static str {
        match self {
            MessageKind::DealerShare => "dealer-share",
            MessageKind::DkgRound1 => "dkg-round1",
            MessageKind::DkgRound2 => "dkg-round2",
            MessageKind::DkgDone => "dkg-done",
            MessageKind::SigningRound1 => "signing-round1",
            MessageKind::SigningRound2 => "signing-round2",
            MessageKind::SigningRequest => "signing-request",
        }
    }

    /// Whether the `quorum` tag is required. Only the DKG rounds (8710, 8711) may go without:
    /// the key does not exist yet (a refresh among existing holders may still name it).
    pub const fn needs_quorum(self) -> bool {
        !matches!(self, MessageKind::DkgRound1 | MessageKind::DkgRound2)
    }

    /// Whether the message has exactly one recipient (a dealer's share delivery).
    pub const fn single_recipient(self) -> bool {
        matches!(self, MessageKind::DealerShare)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A session id, 32 bytes as 64 lowercase hex: for a DKG, the id of the mandate (proposal)
/// that asked for it; for signing, one id per attempt (chosen by the coordinator).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; 32]);

impl SessionId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionId(bytes)
    }

    /// The session named after an event (e.g. the mandate that asks for a DKG).
    pub fn from_event_id(id: &EventId) -> Self {
        SessionId(id.to_bytes())
    }

    /// 32 bytes from the operating system's CSPRNG.
    pub fn random() -> Self {
        use nostr::secp256k1::rand::RngCore;
        let mut bytes = [0u8; 32];
        nostr::secp256k1::rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionId(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        (is_hex64(text) && hex::decode_to_slice(text, &mut bytes).is_ok())
            .then_some(SessionId(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = QuorumMsgError;

    fn from_str(s: &str) -> Result<Self> {
        SessionId::parse(s)
            .ok_or_else(|| malformed("session", format!("{s:?} is not 64 lowercase hex")))
    }
}

/// A quorum message's public envelope (everything but the plaintexts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumMessage {
    pub id: EventId,
    /// The sender's DVM key (the event's author).
    pub sender: PublicKey,
    pub kind: MessageKind,
    pub session: SessionId,
    /// The group key (`None` only in DKG rounds).
    pub quorum: Option<PublicKey>,
    /// One per `p` tag, sorted; each has exactly one ciphertext in the content.
    pub recipients: BTreeSet<PublicKey>,
    pub created_at: Timestamp,
    pub expiration: Timestamp,
    /// For a broadcast (one plaintext for everyone, sealed for each): the sha256 of that
    /// plaintext, in the clear, so that every recipient can tell it got what the others got.
    pub digest: Option<[u8; 32]>,
    /// Recipient → NIP-44 v2 ciphertext.
    ciphertexts: BTreeMap<PublicKey, String>,
}

/// What a recipient reads from a message. `Debug` does not show the plaintext (it may be a key
/// share).
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub id: EventId,
    pub sender: PublicKey,
    pub kind: MessageKind,
    pub session: SessionId,
    pub quorum: Option<PublicKey>,
    pub created_at: Timestamp,
    /// The threshold crate's JSON payload for this recipient.
    pub plaintext: String,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("id", &self.id)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("session", &self.session)
            .field("quorum", &self.quorum)
            .field("created_at", &self.created_at)
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .finish()
    }
}

impl QuorumMessage {
    /// Seals one plaintext per recipient (NIP-44 v2, from `keys` to each recipient) into a
    /// message of `kind`, signed by `keys`, dated now. Refuses: no recipient, more than one
    /// for a dealer share, a missing `quorum` where the kind needs it, an `expiration` not in
    /// the future.
    pub fn seal(
        keys: &Keys,
        kind: MessageKind,
        session: SessionId,
        quorum: Option<PublicKey>,
        payloads: &BTreeMap<PublicKey, String>,
        expiration: Timestamp,
    ) -> Result<Event> {
        Self::seal_at(
            keys,
            kind,
            session,
            quorum,
            payloads,
            expiration,
            Timestamp::now(),
        )
    }

    /// [`QuorumMessage::seal`] with the same plaintext for every recipient (DKG round 1,
    /// signing round 1 and 2, signing request, DKG done), still sealed separately for each, and
    /// its sha256 in a clear `digest` tag: a sender cannot give different recipients different
    /// plaintexts without each of them but one noticing ([`QuorumMsgError::DigestMismatch`]).
    pub fn seal_broadcast(
        keys: &Keys,
        kind: MessageKind,
        session: SessionId,
        quorum: Option<PublicKey>,
        recipients: &[PublicKey],
        plaintext: &str,
        expiration: Timestamp,
    ) -> Result<Event> {
        let payloads = recipients
            .iter()
            .map(|r| (*r, plaintext.to_string()))
            .collect();
        Self::seal_with(
            keys,
            kind,
            session,
            quorum,
            &payloads,
            expiration,
            Timestamp::now(),
            Some(sha256(plaintext)),
        )
    }

    /// [`QuorumMessage::seal`] dated `created_at`.
    pub fn seal_at(
        keys: &Keys,
        kind: MessageKind,
        session: SessionId,
        quorum: Option<PublicKey>,
        payloads: &BTreeMap<PublicKey, String>,
        expiration: Timestamp,
        created_at: Timestamp,
    ) -> Result<Event> {
        Self::seal_with(
            keys, kind, session, quorum, payloads, expiration, created_at, None,
        )
    }

    /// The sealing itself; `digest` is the broadcast's plaintext hash, if any.
    #[allow(clippy::too_many_arguments)]
    fn seal_with(
        keys: &Keys,
        kind: MessageKind,
        session: SessionId,
        quorum: Option<PublicKey>,
        payloads: &BTreeMap<PublicKey, String>,
        expiration: Timestamp,
        created_at: Timestamp,
        digest: Option<[u8; 32]>,
    ) -> Result<Event> {
        if payloads.is_empty() {
            return Err(QuorumMsgError::MissingTag("p"));
        }
        if kind.single_recipient() && payloads.len() != 1 {
            return Err(malformed(
                "p",
                format!("a {kind} message has exactly one recipient"),
            ));
        }
        if kind.needs_quorum() && quorum.is_none() {
            return Err(QuorumMsgError::MissingTag("quorum"));
        }
        if expiration <= created_at {
            return Err(malformed(
                "expiration",
                "the message would be expired when sent",
            ));
        }
        let mut content = serde_json::Map::new();
        for (recipient, plaintext) in payloads {
            let ciphertext =
                nip44::encrypt(keys.secret_key(), recipient, plaintext, nip44::Version::V2)
                    .map_err(|e| QuorumMsgError::Encrypt {
                        recipient: *recipient,
                        reason: e.to_string(),
                    })?;
            content.insert(recipient.to_hex(), ciphertext.into());
        }
        let content = serde_json::Value::Object(content).to_string();
        let mut tags = vec![custom_tag(TAG_SESSION, [session.to_hex()])];
        if let Some(quorum) = quorum {
            tags.push(custom_tag(TAG_QUORUM, [quorum.to_hex()]));
        }
        tags.extend(payloads.keys().map(|r| Tag::public_key(*r)));
        if let Some(digest) = digest {
            tags.push(custom_tag(TAG_DIGEST, [hex::encode(digest)]));
        }
        tags.push(Tag::expiration(expiration));
        EventBuilder::new(kind.kind(), content)
            .tags(tags)
            .custom_created_at(created_at)
            .allow_self_tagging()
            .sign_with_keys(keys)
            .map_err(|e| QuorumMsgError::Sign(e.to_string()))
    }

    /// Parses the envelope (no signature check, no decryption): kind 8709–8715; one `session`;
    /// `quorum` once where the kind needs it, at most once otherwise; at least one `p`, no
    /// key twice, exactly one for a dealer share; `expiration`; content a JSON object whose
    /// keys are exactly the `p` keys and whose values are strings.
    pub fn from_event(event: &Event) -> Result<Self> {
        let kind = MessageKind::from_kind(event.kind).ok_or(QuorumMsgError::WrongKind {
            found: event.kind.as_u16(),
        })?;
        let session = required_value(event, TAG_SESSION)?;
        let session = SessionId::parse(&session)
            .ok_or_else(|| malformed("session", format!("{session:?} is not 64 lowercase hex")))?;
        let quorum = optional_value(event, TAG_QUORUM)?
            .map(|q| parse_pubkey("quorum", &q))
            .transpose()?;
        if kind.needs_quorum() && quorum.is_none() {
            return Err(QuorumMsgError::MissingTag("quorum"));
        }
        let mut recipients = BTreeSet::new();
        for values in tags_named(event, TAG_RECIPIENT) {
            let key = parse_pubkey("p", values.get(1).map(String::as_str).unwrap_or_default())?;
            if !recipients.insert(key) {
                return Err(malformed("p", format!("{} is listed twice", key.to_hex())));
            }
        }
        if recipients.is_empty() {
            return Err(QuorumMsgError::MissingTag("p"));
        }
        if kind.single_recipient() && recipients.len() != 1 {
            return Err(malformed(
                "p",
                format!("a {kind} message has exactly one recipient"),
            ));
        }
        let expiration = required_value(event, TAG_EXPIRATION)?;
        let expiration = Timestamp::from_str(&expiration).map_err(|_| {
            malformed(
                "expiration",
                format!("{expiration:?} is not a Unix timestamp"),
            )
        })?;
        let digest = optional_value(event, TAG_DIGEST)?
            .map(|hex| {
                let mut out = [0u8; 32];
                if !is_hex64(&hex) || hex::decode_to_slice(&hex, &mut out).is_err() {
                    return Err(malformed("digest", format!("{hex:?} is not a sha256")));
                }
                Ok(out)
            })
            .transpose()?;
        let map: BTreeMap<String, String> = serde_json::from_str(&event.content).map_err(|e| {
            QuorumMsgError::MalformedContent(format!(
                "expected a JSON object of recipient hex → NIP-44 ciphertext: {e}"
            ))
        })?;
        let mut ciphertexts = BTreeMap::new();
        for (hex, ciphertext) in map {
            let key = PublicKey::from_hex(&hex)
                .ok()
                .filter(|k| recipients.contains(k) && is_hex64(&hex))
                .ok_or_else(|| {
                    QuorumMsgError::MalformedContent(format!(
                        "entry {hex:?} is not one of the `p` recipients"
                    ))
                })?;
            ciphertexts.insert(key, ciphertext);
        }
        if let Some(missing) = recipients.iter().find(|r| !ciphertexts.contains_key(r)) {
            return Err(QuorumMsgError::MalformedContent(format!(
                "no entry for recipient {}",
                missing.to_hex()
            )));
        }
        Ok(QuorumMessage {
            id: event.id,
            sender: event.pubkey,
            kind,
            session,
            quorum,
            recipients,
            created_at: event.created_at,
            expiration,
            digest,
            ciphertexts,
        })
    }

    /// Opens `event` for `me` now (the system clock): [`QuorumMessage::open_at`].
    pub fn open(event: &Event, me: &Keys) -> Result<Opened> {
        Self::open_at(event, me, Timestamp::now())
    }

    /// Opens `event` for `me` at `now`. Refuses, in this order: a malformed envelope; a bad id
    /// or signature; an expired message (`now` ≥ `expiration`); a message `me` is not a
    /// recipient of; a payload that does not decrypt (NIP-44 MAC, padding…). Errors never
    /// contain plaintext.
    pub fn open_at(event: &Event, me: &Keys, now: Timestamp) -> Result<Opened> {
        let message = Self::from_event(event)?;
        event
            .verify()
            .map_err(|_| QuorumMsgError::InvalidSignature(event.id))?;
        if now >= message.expiration {
            return Err(QuorumMsgError::Expired(message.expiration));
        }
        let my_key = me.public_key();
        let ciphertext = message
            .ciphertexts
            .get(&my_key)
            .ok_or(QuorumMsgError::NotARecipient(my_key))?;
        let plaintext = nip44::decrypt(me.secret_key(), &message.sender, ciphertext)
            .map_err(|e| QuorumMsgError::Decrypt(e.to_string()))?;
        if message
            .digest
            .is_some_and(|digest| digest != sha256(&plaintext))
        {
            return Err(QuorumMsgError::DigestMismatch(message.sender));
        }
        Ok(Opened {
            id: message.id,
            sender: message.sender,
            kind: message.kind,
            session: message.session,
            quorum: message.quorum,
            created_at: message.created_at,
            plaintext,
        })
    }
}

fn sha256(text: &str) -> [u8; 32] {
    use nostr::hashes::{Hash, sha256};
    sha256::Hash::hash(text.as_bytes()).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key(byte: u8) -> Keys {
        Keys::parse(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    fn session() -> SessionId {
        SessionId::from_bytes([0x5e; 32])
    }

    fn seal(
        from: &Keys,
        kind: MessageKind,
        quorum: Option<PublicKey>,
        payloads: &[(&Keys, &str)],
    ) -> Result<Event> {
        let payloads = payloads
            .iter()
            .map(|(k, p)| (k.public_key(), p.to_string()))
            .collect();
        QuorumMessage::seal_at(
            from,
            kind,
            session(),
            quorum,
            &payloads,
            Timestamp::from(NOW + 300),
            Timestamp::from(NOW),
        )
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from(secs)
    }

    #[test]
    fn every_kind_round_trips() {
        let sender = key(1);
        let (a, b) = (key(2), key(3));
        let quorum = Some(key(9).public_key());
        for kind in MessageKind::ALL {
            let recipients: Vec<(&Keys, &str)> = if kind.single_recipient() {
                vec![(&a, r#"{"share":"a"}"#)]
            } else {
                vec![(&a, r#"{"to":"a"}"#), (&b, r#"{"to":"b"}"#)]
            };
            let q = if kind.needs_quorum() { quorum } else { None };
            let event = seal(&sender, kind, q, &recipients).unwrap();
            assert_eq!(event.kind, kind.kind());
            assert_eq!(MessageKind::from_kind(event.kind), Some(kind));
            // Nothing readable in the clear.
            assert!(!event.content.contains("share") && !event.content.contains("\"to\""));
            let header = QuorumMessage::from_event(&event).unwrap();
            assert_eq!(header.sender, sender.public_key());
            assert_eq!(header.session, session());
            assert_eq!(header.quorum, q);
            assert_eq!(header.expiration, at(NOW + 300));
            assert_eq!(header.recipients.len(), recipients.len());
            for (keys, plaintext) in &recipients {
                let opened = QuorumMessage::open_at(&event, keys, at(NOW + 1)).unwrap();
                assert_eq!(opened.plaintext, *plaintext);
                assert_eq!(opened.kind, kind);
                assert_eq!(opened.sender, sender.public_key());
                assert_eq!(opened.session, session());
                assert_eq!(opened.quorum, q);
                assert!(!format!("{opened:?}").contains(plaintext));
            }
        }
        // A DKG round may still name a key (refresh among existing holders).
        let refresh = seal(&sender, MessageKind::DkgRound1, quorum, &[(&a, "{}")]).unwrap();
        assert_eq!(QuorumMessage::from_event(&refresh).unwrap().quorum, quorum);
    }

    #[test]
    fn broadcast_seals_separately_for_each_recipient() {
        let sender = key(1);
        let members = [
            key(2).public_key(),
            key(3).public_key(),
            key(4).public_key(),
        ];
        let event = QuorumMessage::seal_broadcast(
            &sender,
            MessageKind::SigningRound1,
            session(),
            Some(key(9).public_key()),
            &members,
            r#"{"commitments":"…"}"#,
            Timestamp::now() + 60,
        )
        .unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(&event.content).unwrap();
        assert_eq!(map.len(), 3);
        let distinct: BTreeSet<&String> = map.values().collect();
        assert_eq!(distinct.len(), 3);
        for k in [key(2), key(3), key(4)] {
            let opened = QuorumMessage::open(&event, &k).unwrap();
            assert_eq!(opened.plaintext, r#"{"commitments":"…"}"#);
        }
    }

    #[test]
    fn open_refuses_with_a_reason_and_no_plaintext() {
        let sender = key(1);
        let (a, b, outsider) = (key(2), key(3), key(4));
        let secret = "SECRET-SHARE-0123";
        let event = seal(
            &sender,
            MessageKind::DkgRound2,
            None,
            &[(&a, secret), (&b, secret)],
        )
        .unwrap();

        let expired = QuorumMessage::open_at(&event, &a, at(NOW + 300)).unwrap_err();
        assert_eq!(expired, QuorumMsgError::Expired(at(NOW + 300)));
        let stranger = QuorumMessage::open_at(&event, &outsider, at(NOW)).unwrap_err();
        assert_eq!(
            stranger,
            QuorumMsgError::NotARecipient(outsider.public_key())
        );

        // Swap a's ciphertext for one sealed by someone else: the MAC fails for this sender.
        let other = seal(
            &key(5),
            MessageKind::DkgRound2,
            None,
            &[(&a, secret), (&b, secret)],
        )
        .unwrap();
        let other_map: BTreeMap<String, String> = serde_json::from_str(&other.content).unwrap();
        let mut map: BTreeMap<String, String> = serde_json::from_str(&event.content).unwrap();
        map.insert(
            a.public_key().to_hex(),
            other_map[&a.public_key().to_hex()].clone(),
        );
        let swapped = EventBuilder::new(DKG_ROUND2, serde_json::to_string(&map).unwrap())
            .tags(event.tags.iter().cloned())
            .allow_self_tagging()
            .sign_with_keys(&sender)
            .unwrap();
        let err = QuorumMessage::open_at(&swapped, &a, at(NOW)).unwrap_err();
        assert!(matches!(err, QuorumMsgError::Decrypt(_)), "{err}");
        assert!(!err.to_string().contains(secret));
        // b's entry still opens.
        assert_eq!(
            QuorumMessage::open_at(&swapped, &b, at(NOW))
                .unwrap()
                .plaintext,
            secret
        );

        // A forged event.
        let mut forged: serde_json::Value = serde_json::to_value(&event).unwrap();
        forged["created_at"] = 5.into();
        let forged: Event = serde_json::from_value(forged).unwrap();
        assert_eq!(
            QuorumMessage::open_at(&forged, &a, at(NOW)).unwrap_err(),
            QuorumMsgError::InvalidSignature(forged.id)
        );
    }

    #[test]
    fn seal_refuses_bad_envelopes() {
        let sender = key(1);
        let (a, b) = (key(2), key(3));
        let quorum = Some(key(9).public_key());
        assert_eq!(
            seal(&sender, MessageKind::SigningRound2, None, &[(&a, "{}")]).unwrap_err(),
            QuorumMsgError::MissingTag("quorum")
        );
        assert_eq!(
            seal(&sender, MessageKind::SigningRound2, quorum, &[]).unwrap_err(),
            QuorumMsgError::MissingTag("p")
        );
        let err = seal(
            &sender,
            MessageKind::DealerShare,
            quorum,
            &[(&a, "1"), (&b, "2")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("`p`"), "{err}");
        let payloads = BTreeMap::from([(a.public_key(), "{}".to_string())]);
        let err = QuorumMessage::seal_at(
            &sender,
            MessageKind::SigningRequest,
            session(),
            quorum,
            &payloads,
            at(NOW),
            at(NOW),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`expiration`"), "{err}");
    }

    #[test]
    fn malformed_envelopes_name_the_tag() {
        let sender = key(1);
        let (a, b) = (key(2), key(3));
        let quorum = Some(key(9).public_key());
        let good = seal(
            &sender,
            MessageKind::SigningRound1,
            quorum,
            &[(&a, "1"), (&b, "2")],
        )
        .unwrap();
        let edits = crate::tags::TagEdits::of(&good);
        let base = edits.base.clone();
        let replace = |name: &str, value: &[&str]| edits.replace(name, value);
        let drop = |name: &str| edits.drop(name);
        let with = |extra: &[&str]| edits.with(extra);
        let a_hex = a.public_key().to_hex();
        let c_hex = key(4).public_key().to_hex();
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (drop("session"), "missing `session`"),
            (replace("session", &["session", "abc"]), "`session`"),
            (
                with(&["session", &"00".repeat(32)]),
                "`session` tag given twice",
            ),
            (drop("quorum"), "missing `quorum`"),
            (replace("quorum", &["quorum", "nope"]), "`quorum`"),
            (drop("p"), "`p`"),
            (with(&["p", &a_hex]), "`p`"),
            (replace("p", &["p", "zz"]), "`p`"),
            (with(&["p", &c_hex]), "no entry for recipient"),
            (drop("expiration"), "missing `expiration`"),
            (
                replace("expiration", &["expiration", "tomorrow"]),
                "`expiration`",
            ),
        ];
        for (tags, needle) in cases {
            let event = EventBuilder::new(SIGNING_ROUND1, good.content.clone())
                .tags(tags.iter().map(|t| custom_tag(&t[0], t[1..].to_vec())))
                .allow_self_tagging()
                .sign_with_keys(&sender)
                .unwrap();
            match QuorumMessage::from_event(&event) {
                Ok(_) => assert!(needle.is_empty(), "{tags:?} parsed"),
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{needle}: {err}"
                ),
            }
        }
        for content in ["not json", "[]", r#"{"x":"y"}"#, "{}"] {
            let event = EventBuilder::new(SIGNING_ROUND1, content)
                .tags(good.tags.iter().cloned())
                .allow_self_tagging()
                .sign_with_keys(&sender)
                .unwrap();
            assert!(
                matches!(
                    QuorumMessage::from_event(&event),
                    Err(QuorumMsgError::MalformedContent(_))
                ),
                "{content}"
            );
        }
        let note = EventBuilder::text_note("hi")
            .sign_with_keys(&sender)
            .unwrap();
        assert_eq!(
            QuorumMessage::from_event(&note).unwrap_err(),
            QuorumMsgError::WrongKind { found: 1 }
        );
    }

    #[test]
    fn session_ids() {
        let id = EventId::from_byte_array([7; 32]);
        let s = SessionId::from_event_id(&id);
        assert_eq!(s.to_hex(), id.to_hex());
        assert_eq!(SessionId::parse(&s.to_hex()), Some(s));
        assert!("zz".parse::<SessionId>().is_err());
        assert_ne!(SessionId::random(), SessionId::random());
    }

    #[test]
    fn a_broadcast_carries_its_digest_and_a_split_is_caught() {
        let sender = key(1);
        let (a, b) = (key(2), key(3));
        let quorum = Some(key(9).public_key());
        let plaintext = r#"{"type":"request","attempt":0}"#;
        let event = QuorumMessage::seal_broadcast(
            &sender,
            MessageKind::SigningRequest,
            session(),
            quorum,
            &[a.public_key(), b.public_key()],
            plaintext,
            Timestamp::now() + 300u64,
        )
        .unwrap();
        assert!(QuorumMessage::from_event(&event).unwrap().digest.is_some());
        for me in [&a, &b] {
            assert_eq!(
                QuorumMessage::open(&event, me).unwrap().plaintext,
                plaintext
            );
        }
        // A coordinator that seals another plaintext for `b` under the same digest: the
        // envelope is its own signed event, so `b` sees the mismatch and who caused it.
        let mut payloads = BTreeMap::new();
        payloads.insert(a.public_key(), plaintext.to_string());
        payloads.insert(
            b.public_key(),
            r#"{"type":"request","attempt":9}"#.to_string(),
        );
        let split = QuorumMessage::seal_with(
            &sender,
            MessageKind::SigningRequest,
            session(),
            quorum,
            &payloads,
            Timestamp::now() + 300u64,
            Timestamp::now(),
            Some(sha256(plaintext)),
        )
        .unwrap();
        assert!(QuorumMessage::open(&split, &a).is_ok());
        let err = QuorumMessage::open(&split, &b).unwrap_err();
        assert_eq!(err, QuorumMsgError::DigestMismatch(sender.public_key()));
        assert!(
            !err.to_string().contains("attempt"),
            "no plaintext in errors"
        );
    }
}
