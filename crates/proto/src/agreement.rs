//! Agreement among quorum members (design §6.3): commit-reveal of per-file sha256 results, the
//! tally, equivocation proofs and the quorum attestation.
//!
//! Each member builds on its own and first publishes a *commitment* (kind 8705), a SHA-256 over
//! a domain tag, **its own public key**, the job request id, a random salt and the canonical
//! encoding of its result ([`commitment_digest`]). Only when `t` members have committed (or the
//! deadline passed) does it publish the *reveal* (8706): salt and per-file hashes. Because the
//! digest binds the member's key, a copycat that republishes another member's digest cannot open
//! it later (it would have to open it for its own key); a copycat that commits to another
//! member's *result* must have seen that result before the reveals, which the engine prevents by
//! revealing only after the commitments are in. Two commitments of one member to different
//! digests for the same job are a self-contained *equivocation proof* (8707) anyone may publish.
//!
//! [`Tally`] counts reveals per file: a file is agreed when at least `t` members revealed the
//! same hash for it. What the quorum agreed on is signed by the quorum key as a
//! [`QuorumAttestation`] (8708), every field of which is derived from agreed data.
//!
//! Nothing here reads a clock: deadlines are the engine's. `docs/protocol.md` §15 has examples.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nostr::hashes::{Hash, HashEngine, sha256};
use nostr::{Event, EventBuilder, EventId, Kind, PublicKey, Tag, Timestamp};

use crate::approval::ArtifactDigest;
use crate::blossom::Sha256Hex;
use crate::nip34::is_object_id;
use crate::tags::{custom_tag, tags_named};

/// A member's commitment to its result (regular), signed by the member's DVM key.
pub const COMMITMENT: Kind = Kind::Custom(8705);
/// A member's reveal of the result it committed to (regular).
pub const REVEAL: Kind = Kind::Custom(8706);
/// Proof that a member committed to two different results for one job (regular, by anyone).
pub const EQUIVOCATION_PROOF: Kind = Kind::Custom(8707);
/// What the quorum agreed on, signed by the quorum key (regular).
pub const QUORUM_ATTESTATION: Kind = Kind::Custom(8708);

/// The domain tag that starts every commitment preimage (23 ASCII bytes, no terminator).
pub const COMMITMENT_DOMAIN: &[u8] = b"quorum-ci/commitment/v1";

const TAG_EVENT: &str = "e";
const TAG_QUORUM: &str = "quorum";
const TAG_COMMITMENT: &str = "commitment";
const TAG_SALT: &str = "salt";
const TAG_FILE: &str = "x";
const TAG_EXPIRATION: &str = "expiration";
const TAG_COMMIT: &str = "c";
const TAG_MEMBER: &str = "p";
const TAG_PLAN: &str = "plan";
const TAG_PIPELINE: &str = "pipeline";
const TAG_JOB: &str = "job";
const TAG_WRAPPER: &str = "wrapper";
/// `e` marker of a reveal's commitment reference.
const MARKER_COMMITMENT: &str = "commitment";
/// `e` marker of the other members' commitments a reveal's author had seen.
const MARKER_SEEN: &str = "seen";
/// `e` marker of an attestation's mandate reference.
const MARKER_MANDATE: &str = "mandate";
/// `p` marker of an attestation's agreeing members.
const MARKER_AGREED: &str = "agreed";
/// The marker of the attestation's `e` tag naming the repository announcement (30617).
const MARKER_ANNOUNCEMENT: &str = "announcement";
/// The marker of the attestation's `e` tag naming the maintainer-signed state (30618).
const MARKER_STATE: &str = "state";
/// The pseudo-file under which a tally reports a member that revealed another plan.
pub const PLAN_ENTRY: &str = "(plan)";

/// Why an event or a set of events is not valid agreement material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgreementError {
    #[error("kind {found} is not a {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
    #[error("invalid id or signature on event {0}")]
    InvalidSignature(EventId),
    #[error("the reveal does not open the commitment: {0}")]
    DoesNotOpen(OpenFailure),
    #[error("not an equivocation: {0}")]
    NotAnEquivocation(String),
    #[error("malformed content: {0}")]
    MalformedContent(String),
    #[error("invalid roster: {0}")]
    InvalidRoster(String),
    #[error("nothing to attest: {0}")]
    NotAttestable(String),
}

type Result<T> = std::result::Result<T, AgreementError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> AgreementError {
    AgreementError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

fn check_kind(event: &Event, kind: Kind, expected: &'static str) -> Result<()> {
    if event.kind == kind {
        Ok(())
    } else {
        Err(AgreementError::WrongKind {
            expected,
            found: event.kind.as_u16(),
        })
    }
}

fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => AgreementError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn required_value(event: &Event, name: &'static str) -> Result<String> {
    optional_value(event, name)?.ok_or(AgreementError::MissingTag(name))
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse_hex32(tag: &'static str, text: &str, what: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if !is_hex64(text) || hex::decode_to_slice(text, &mut out).is_err() {
        return Err(malformed(
            tag,
            format!("{text:?} is not a 64-hex lowercase {what}"),
        ));
    }
    Ok(out)
}

fn parse_pubkey(tag: &'static str, text: &str) -> Result<PublicKey> {
    let key = PublicKey::from_byte_array(parse_hex32(tag, text, "public key")?);
    // Only a point on the curve can ever verify a signature.
    key.xonly()
        .map_err(|_| malformed(tag, format!("{text:?} is not a valid public key")))?;
    Ok(key)
}

fn parse_event_id(tag: &'static str, text: &str) -> Result<EventId> {
    Ok(EventId::from_byte_array(parse_hex32(
        tag, text, "event id",
    )?))
}

fn parse_expiration(event: &Event) -> Result<Timestamp> {
    let at = required_value(event, TAG_EXPIRATION)?;
    Timestamp::from_str(&at)
        .map_err(|_| malformed("expiration", format!("{at:?} is not a Unix timestamp")))
}

/// The `e` tags of `event` by marker (element 3; `""` = unmarked). Each marker in `single` may
/// appear once; the `repeated` marker any number of times (collected as a set). Any other
/// marker is an error when `strict` (quorum-signed events have one spelling), else ignored.
fn marked_event_ids(
    event: &Event,
    single: &[&str],
    repeated: Option<&str>,
    strict: bool,
) -> Result<(BTreeMap<String, EventId>, BTreeSet<EventId>)> {
    let mut found = BTreeMap::new();
    let mut many = BTreeSet::new();
    for values in tags_named(event, TAG_EVENT) {
        let marker = values.get(3).cloned().unwrap_or_default();
        let is_single = single.contains(&marker.as_str());
        let is_repeated = repeated == Some(marker.as_str());
        if !is_single && !is_repeated {
            if strict {
                return Err(malformed("e", format!("unexpected marker {marker:?}")));
            }
            continue;
        }
        let id = parse_event_id("e", values.get(1).map(String::as_str).unwrap_or_default())?;
        if is_repeated {
            many.insert(id);
        } else if found.insert(marker.clone(), id).is_some() {
            let what = if marker.is_empty() {
                "unmarked (job)".to_string()
            } else {
                format!("{marker:?}")
            };
            return Err(malformed("e", format!("two {what} `e` tags")));
        }
    }
    Ok((found, many))
}

fn marked_e_tag(id: EventId, marker: &str) -> Tag {
    custom_tag(TAG_EVENT, [id.to_hex(), String::new(), marker.to_string()])
}

// ---------------------------------------------------------------------------------------------
// Results, salts, digests
// ---------------------------------------------------------------------------------------------

/// What a member built: each artifact name with the sha256 of its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BuildResult {
    pub files: BTreeMap<String, Sha256Hex>,
}

impl BuildResult {
    pub fn new() -> Self {
        BuildResult::default()
    }

    pub fn with_file(mut self, name: impl Into<String>, sha256: Sha256Hex) -> Self {
        self.files.insert(name.into(), sha256);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The canonical byte encoding the commitment digest covers:
    ///
    /// ```text
    /// u64 big-endian: number of files
    /// for each file, sorted by name (bytewise, as UTF-8):
    ///     u64 big-endian: byte length of the name ‖ the name, UTF-8 ‖ the 32-byte sha256
    /// ```
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.files.len() * 72);
        out.extend_from_slice(&(self.files.len() as u64).to_be_bytes());
        // BTreeMap<String> iterates in bytewise order of the UTF-8 names.
        for (name, sha256) in &self.files {
            out.extend_from_slice(&(name.len() as u64).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(sha256.as_bytes());
        }
        out
    }

    /// The `x` tags, sorted by name: `["x", SHA256, NAME]`.
    pub fn to_tags(&self) -> Vec<Tag> {
        self.files
            .iter()
            .map(|(name, sha256)| ArtifactDigest::new(name.clone(), *sha256).to_tag())
            .collect()
    }

    fn check(&self) -> Result<()> {
        if self.files.is_empty() {
            return Err(AgreementError::MissingTag("x"));
        }
        if self.files.contains_key("") {
            return Err(malformed("x", "an artifact has an empty name"));
        }
        Ok(())
    }

    /// Parses the `x` tags of `event`: at least one, names unique. With `sorted`, they must
    /// also be in canonical order (one spelling, for quorum-signed events).
    fn from_tags(event: &Event, sorted: bool) -> Result<Self> {
        let mut files = BTreeMap::new();
        let mut previous: Option<String> = None;
        for values in tags_named(event, TAG_FILE) {
            let file = ArtifactDigest::parse(&values[1..]).map_err(|e| malformed("x", e))?;
            if sorted && previous.as_ref().is_some_and(|p| *p >= file.name) {
                return Err(malformed(
                    "x",
                    format!(
                        "artifact {:?} is listed twice or out of order (sorted by name)",
                        file.name
                    ),
                ));
            }
            previous = Some(file.name.clone());
            if files.insert(file.name.clone(), file.sha256).is_some() {
                return Err(malformed(
                    "x",
                    format!("artifact {:?} is listed twice", file.name),
                ));
            }
        }
        let result = BuildResult { files };
        result.check()?;
        Ok(result)
    }
}

/// A commitment's random salt: it hides the result until the reveal (a guessable result, such
/// as a small test verdict, could otherwise be read off the digest). Generate a fresh one per
/// commitment and keep it until the reveal; `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Salt([u8; 32]);

impl Salt {
    /// 32 bytes from the operating system's CSPRNG.
    pub fn random() -> Self {
        use nostr::secp256k1::rand::RngCore;
        let mut bytes = [0u8; 32];
        nostr::secp256k1::rand::rngs::OsRng.fill_bytes(&mut bytes);
        Salt(bytes)
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Salt(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as the reveal's `salt` tag carries it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex characters.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        (is_hex64(text) && hex::decode_to_slice(text, &mut bytes).is_ok()).then_some(Salt(bytes))
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(***)")
    }
}

/// The commitment digest:
///
/// ```text
/// SHA-256( "quorum-ci/commitment/v1"        23 ASCII bytes
///        ‖ member public key                 32 bytes, BIP-340 x-only
///        ‖ job request event id              32 bytes
///        ‖ salt                              32 bytes
///        ‖ result.canonical_bytes() )        see BuildResult::canonical_bytes
/// ```
///
/// Binding the member's key is what makes copying useless: the same result committed by two
/// members gives two different digests, and a digest copied from another member opens only
/// for that member's key, never for the copier's. Binding the job id stops a commitment (or
/// reveal) from being replayed into another job.
pub fn commitment_digest(
    member: &PublicKey,
    job: &EventId,
    salt: &Salt,
    result: &BuildResult,
) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(COMMITMENT_DOMAIN);
    engine.input(member.as_bytes());
    engine.input(job.as_bytes());
    engine.input(salt.as_bytes());
    engine.input(&result.canonical_bytes());
    sha256::Hash::from_engine(engine).to_byte_array()
}

// ---------------------------------------------------------------------------------------------
// Commitment (8705)
// ---------------------------------------------------------------------------------------------

/// A member's commitment (kind 8705): `e` job, `quorum`, `commitment` digest, `expiration`;
/// content empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    /// The job request id.
    pub job: EventId,
    /// The quorum the member answers as.
    pub quorum: PublicKey,
    /// [`commitment_digest`] for the member's own key.
    pub digest: [u8; 32],
    /// NIP-40, required.
    pub expiration: Timestamp,
}

impl Commitment {
    /// The commitment `member` (the key that will sign it) makes to `result`.
    pub fn new(
        member: &PublicKey,
        job: EventId,
        quorum: PublicKey,
        salt: &Salt,
        result: &BuildResult,
        expiration: Timestamp,
    ) -> Self {
        Commitment {
            job,
            quorum,
            digest: commitment_digest(member, &job, salt, result),
            expiration,
        }
    }

    pub fn to_event_builder(&self) -> EventBuilder {
        EventBuilder::new(COMMITMENT, "")
            .tags([
                Tag::event(self.job),
                custom_tag(TAG_QUORUM, [self.quorum.to_hex()]),
                custom_tag(TAG_COMMITMENT, [hex::encode(self.digest)]),
                Tag::expiration(self.expiration),
            ])
            .allow_self_tagging()
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, COMMITMENT, "commitment (8705)")?;
        let (ids, _) = marked_event_ids(event, &[""], None, false)?;
        let job = *ids.get("").ok_or(AgreementError::MissingTag("e"))?;
        let quorum = parse_pubkey("quorum", &required_value(event, TAG_QUORUM)?)?;
        let digest = parse_hex32(
            "commitment",
            &required_value(event, TAG_COMMITMENT)?,
            "sha256",
        )?;
        Ok(Commitment {
            job,
            quorum,
            digest,
            expiration: parse_expiration(event)?,
        })
    }
}

/// A commitment event whose id and signature were checked, with its parsed content. The member
/// is the event's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommitment {
    event: Event,
    commitment: Commitment,
}

impl SignedCommitment {
    /// Checks the id and signature, then parses.
    pub fn from_event(event: &Event) -> Result<Self> {
        event
            .verify()
            .map_err(|_| AgreementError::InvalidSignature(event.id))?;
        Ok(SignedCommitment {
            commitment: Commitment::from_event(event)?,
            event: event.clone(),
        })
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn commitment(&self) -> &Commitment {
        &self.commitment
    }

    /// The committing member (the event's author).
    pub fn member(&self) -> PublicKey {
        self.event.pubkey
    }

    pub fn id(&self) -> EventId {
        self.event.id
    }
}

// ---------------------------------------------------------------------------------------------
// Reveal (8706)
// ---------------------------------------------------------------------------------------------

/// Why a reveal does not open a commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFailure {
    /// The reveal and the commitment have different authors.
    OtherAuthor,
    /// The reveal names another commitment event.
    OtherCommitment(EventId),
    /// The reveal is for another job.
    OtherJob(EventId),
    /// The salt and result do not hash to the committed digest for this member.
    DigestMismatch,
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenFailure::OtherAuthor => f.write_str("reveal and commitment have different authors"),
            OpenFailure::OtherCommitment(id) => {
                write!(f, "the reveal names another commitment ({})", id.to_hex())
            }
            OpenFailure::OtherJob(id) => {
                write!(f, "the reveal is for another job ({})", id.to_hex())
            }
            OpenFailure::DigestMismatch => f.write_str(
                "salt and files do not hash to the committed digest for the author's key",
            ),
        }
    }
}

/// A member's reveal (kind 8706): `e` job, `e` commitment (marker `commitment`), `salt`, one
/// `x` per file, `expiration`; content empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    /// The job request id.
    pub job: EventId,
    /// The id of the commitment event this reveal opens.
    pub commitment: EventId,
    pub salt: Salt,
    pub result: BuildResult,
    /// Optional: the commitment events of other members its author had seen when it revealed
    /// (`["e", ID, "", "seen"]`, sorted). The engine may use it to tell a commitment made
    /// after a reveal was out (a copycat's) from one made before; the tally does not.
    pub seen: BTreeSet<EventId>,
    /// Optional: the plan hash of the job as its author derived it from the pipeline at the
    /// commit (`["plan", HASH]`). A tally that expects a plan counts only reveals naming it.
    pub plan: Option<Sha256Hex>,
    /// NIP-40, required.
    pub expiration: Timestamp,
}

impl Reveal {
    /// The reveal opening `commitment` (the member's own commitment event).
    pub fn new(
        commitment: &SignedCommitment,
        salt: Salt,
        result: BuildResult,
        expiration: Timestamp,
    ) -> Self {
        Reveal {
            job: commitment.commitment.job,
            commitment: commitment.id(),
            salt,
            result,
            seen: BTreeSet::new(),
            plan: None,
            expiration,
        }
    }

    /// The same reveal, naming the plan hash its author built from.
    pub fn with_plan(mut self, plan: Option<Sha256Hex>) -> Self {
        self.plan = plan;
        self
    }

    /// The same reveal, listing the commitments its author had seen.
    pub fn with_seen(mut self, seen: impl IntoIterator<Item = EventId>) -> Self {
        self.seen = seen.into_iter().collect();
        self
    }

    /// The reveal, ready to sign; files are written sorted by name. Fails without files.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        self.result.check()?;
        let mut tags = vec![
            Tag::event(self.job),
            marked_e_tag(self.commitment, MARKER_COMMITMENT),
            custom_tag(TAG_SALT, [self.salt.to_hex()]),
        ];
        tags.extend(self.result.to_tags());
        tags.extend(self.seen.iter().map(|id| marked_e_tag(*id, MARKER_SEEN)));
        if let Some(plan) = &self.plan {
            tags.push(custom_tag(TAG_PLAN, [plan.to_hex()]));
        }
        tags.push(Tag::expiration(self.expiration));
        Ok(EventBuilder::new(REVEAL, "")
            .tags(tags)
            .allow_self_tagging())
    }

    /// Parses a reveal: exactly one unmarked `e` (the job) and one marked `commitment`, any
    /// number marked `seen`, a `salt`, at least one `x` (names unique; any order), an
    /// `expiration`. `e` tags with other markers are ignored.
    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, REVEAL, "reveal (8706)")?;
        let (ids, seen) =
            marked_event_ids(event, &["", MARKER_COMMITMENT], Some(MARKER_SEEN), false)?;
        let job = *ids
            .get("")
            .ok_or_else(|| malformed("e", "no unmarked `e` tag naming the job"))?;
        let commitment = *ids
            .get(MARKER_COMMITMENT)
            .ok_or_else(|| malformed("e", "no `e` tag with marker `commitment`"))?;
        let salt = required_value(event, TAG_SALT)?;
        let salt = Salt::parse(&salt)
            .ok_or_else(|| malformed("salt", "not 64 lowercase hex characters"))?;
        let plan = optional_value(event, TAG_PLAN)?
            .map(|plan| {
                Sha256Hex::parse(&plan)
                    .map_err(|_| malformed("plan", format!("{plan:?} is not a sha256")))
            })
            .transpose()?;
        Ok(Reveal {
            job,
            commitment,
            salt,
            result: BuildResult::from_tags(event, false)?,
            seen,
            plan,
            expiration: parse_expiration(event)?,
        })
    }

    /// Whether this reveal, by `member`, opens `commitment`: same job, and salt + files hash to
    /// the committed digest *for `member`'s key*.
    pub fn opens(&self, member: &PublicKey, commitment: &Commitment) -> Result<()> {
        if self.job != commitment.job {
            return Err(AgreementError::DoesNotOpen(OpenFailure::OtherJob(self.job)));
        }
        if commitment_digest(member, &self.job, &self.salt, &self.result) != commitment.digest {
            return Err(AgreementError::DoesNotOpen(OpenFailure::DigestMismatch));
        }
        Ok(())
    }
}

/// A reveal event whose id and signature were checked, with its parsed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReveal {
    event: Event,
    reveal: Reveal,
}

impl SignedReveal {
    /// Checks the id and signature, then parses.
    pub fn from_event(event: &Event) -> Result<Self> {
        event
            .verify()
            .map_err(|_| AgreementError::InvalidSignature(event.id))?;
        Ok(SignedReveal {
            reveal: Reveal::from_event(event)?,
            event: event.clone(),
        })
    }

    pub fn event(&self) -> &Event {
        &self.event
    }

    pub fn reveal(&self) -> &Reveal {
        &self.reveal
    }

    /// The revealing member (the event's author).
    pub fn member(&self) -> PublicKey {
        self.event.pubkey
    }

    pub fn id(&self) -> EventId {
        self.event.id
    }

    /// Whether this reveal opens `commitment`: same author, names that commitment event, same
    /// job, and the digest matches for the author's key.
    pub fn opens(&self, commitment: &SignedCommitment) -> Result<()> {
        if self.member() != commitment.member() {
            return Err(AgreementError::DoesNotOpen(OpenFailure::OtherAuthor));
        }
        if self.reveal.commitment != commitment.id() {
            return Err(AgreementError::DoesNotOpen(OpenFailure::OtherCommitment(
                self.reveal.commitment,
            )));
        }
        self.reveal.opens(&self.member(), &commitment.commitment)
    }
}

// ---------------------------------------------------------------------------------------------
// Equivocation proof (8707)
// ---------------------------------------------------------------------------------------------

/// What an equivocation proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub member: PublicKey,
    pub job: EventId,
    pub quorum: PublicKey,
    /// The two committed digests (in the order of the proof's events).
    pub digests: [[u8; 32]; 2],
}

/// Two signed commitments by one member, for one job and quorum, to different digests (kind
/// 8707). Content: the JSON array of the two commitment events, ordered by id; tags `p` (the
/// member), `e` (the job), `quorum`. Anyone may publish one; it proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationProof {
    events: [Event; 2],
}

impl EquivocationProof {
    /// The proof made of two commitments; fails unless they equivocate.
    pub fn new(a: &SignedCommitment, b: &SignedCommitment) -> Result<Self> {
        Self::from_events(a.event.clone(), b.event.clone())
    }

    /// The proof made of two commitment events (checked by [`EquivocationProof::verify`]).
    pub fn from_events(a: Event, b: Event) -> Result<Self> {
        let events = if a.id <= b.id { [a, b] } else { [b, a] };
        let proof = EquivocationProof { events };
        proof.verify()?;
        Ok(proof)
    }

    /// The two commitment events, ordered by id.
    pub fn events(&self) -> &[Event; 2] {
        &self.events
    }

    /// Checks both events are validly signed 8705 commitments by the same member, for the same
    /// job and quorum, with different digests.
    pub fn verify(&self) -> Result<Equivocation> {
        let [a, b] = &self.events;
        let a = SignedCommitment::from_event(a)?;
        let b = SignedCommitment::from_event(b)?;
        if a.member() != b.member() {
            return Err(AgreementError::NotAnEquivocation(
                "the commitments have different authors".into(),
            ));
        }
        if a.commitment.job != b.commitment.job {
            return Err(AgreementError::NotAnEquivocation(
                "the commitments are for different jobs".into(),
            ));
        }
        if a.commitment.quorum != b.commitment.quorum {
            return Err(AgreementError::NotAnEquivocation(
                "the commitments are for different quorums".into(),
            ));
        }
        if a.commitment.digest == b.commitment.digest {
            return Err(AgreementError::NotAnEquivocation(
                "both commitments have the same digest".into(),
            ));
        }
        Ok(Equivocation {
            member: a.member(),
            job: a.commitment.job,
            quorum: a.commitment.quorum,
            digests: [a.commitment.digest, b.commitment.digest],
        })
    }

    /// The proof event, ready for anyone to sign.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let what = self.verify()?;
        let content = serde_json::to_string(&self.events)
            .map_err(|e| AgreementError::MalformedContent(e.to_string()))?;
        Ok(EventBuilder::new(EQUIVOCATION_PROOF, content)
            .tags([
                Tag::public_key(what.member),
                Tag::event(what.job),
                custom_tag(TAG_QUORUM, [what.quorum.to_hex()]),
            ])
            .allow_self_tagging())
    }

    /// Parses and verifies a proof event; its `p`, `e` and `quorum` tags must match what the
    /// embedded commitments show. (The proof event's own author does not matter.)
    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, EQUIVOCATION_PROOF, "equivocation proof (8707)")?;
        let events: Vec<Event> = serde_json::from_str(&event.content).map_err(|e| {
            AgreementError::MalformedContent(format!(
                "expected a JSON array of two commitment events: {e}"
            ))
        })?;
        let [a, b]: [Event; 2] = events.try_into().map_err(|events: Vec<Event>| {
            AgreementError::MalformedContent(format!(
                "expected two commitment events, found {}",
                events.len()
            ))
        })?;
        let proof = Self::from_events(a, b)?;
        let what = proof.verify()?;
        let member = parse_pubkey("p", &required_value(event, TAG_MEMBER)?)?;
        if member != what.member {
            return Err(malformed(
                "p",
                "names another member than the commitments' author",
            ));
        }
        let job = parse_event_id("e", &required_value(event, TAG_EVENT)?)?;
        if job != what.job {
            return Err(malformed("e", "names another job than the commitments"));
        }
        let quorum = parse_pubkey("quorum", &required_value(event, TAG_QUORUM)?)?;
        if quorum != what.quorum {
            return Err(malformed(
                "quorum",
                "names another quorum than the commitments",
            ));
        }
        Ok(proof)
    }
}

// ---------------------------------------------------------------------------------------------
// Roster and tally
// ---------------------------------------------------------------------------------------------

/// Who counts: the quorum key, its members and the threshold (normally from the mandate,
/// [`crate::mandate::Mandate::roster`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    quorum: PublicKey,
    members: BTreeSet<PublicKey>,
    threshold: u16,
}

impl Roster {
    /// Fails unless `1 ≤ threshold ≤ n` with `n` distinct members. (The majority rule is the
    /// mandate's: see [`crate::mandate::ThresholdRule`].)
    pub fn new(
        quorum: PublicKey,
        members: impl IntoIterator<Item = PublicKey>,
        threshold: u16,
    ) -> Result<Self> {
        let mut set = BTreeSet::new();
        for member in members {
            if !set.insert(member) {
                return Err(AgreementError::InvalidRoster(format!(
                    "{} is listed twice",
                    member.to_hex()
                )));
            }
        }
        if threshold == 0 || usize::from(threshold) > set.len() {
            return Err(AgreementError::InvalidRoster(format!(
                "threshold {threshold} is not in 1..={}",
                set.len()
            )));
        }
        Ok(Roster {
            quorum,
            members: set,
            threshold,
        })
    }

    pub fn quorum(&self) -> PublicKey {
        self.quorum
    }

    pub fn members(&self) -> &BTreeSet<PublicKey> {
        &self.members
    }

    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    pub fn contains(&self, pubkey: &PublicKey) -> bool {
        self.members.contains(pubkey)
    }
}

/// A member's counted reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revealed {
    pub reveal: EventId,
    pub created_at: Timestamp,
    pub result: BuildResult,
    /// The plan hash the reveal names, if any.
    pub plan: Option<Sha256Hex>,
}

/// The votes on one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileVotes {
    /// The hash at least `t` members revealed, if exactly one hash got there.
    pub agreed: Option<Sha256Hex>,
    /// Every hash revealed for the file, with who revealed it.
    pub votes: BTreeMap<Sha256Hex, BTreeSet<PublicKey>>,
}

/// The commit-reveal tally of one job for one quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    roster: Roster,
    job: EventId,
    plan: Option<Sha256Hex>,
}

impl Tally {
    pub fn new(roster: Roster, job: EventId) -> Self {
        Tally {
            roster,
            job,
            plan: None,
        }
    }

    /// The same tally, counting only reveals that name `plan`: a member that derived another
    /// plan from the pipeline at the commit built another job, whatever its bytes. It is
    /// reported as disagreeing, with [`PLAN_ENTRY`] naming the plan it revealed.
    pub fn expecting_plan(mut self, plan: Option<Sha256Hex>) -> Self {
        self.plan = plan;
        self
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn job(&self) -> EventId {
        self.job
    }

    /// Whether `t` distinct roster members (equivocators excluded) have committed for this job
    /// and quorum: a member reveals then, or at the deadline, whichever comes first.
    pub fn ready_to_reveal(&self, commitments: &[SignedCommitment]) -> bool {
        let by_member =
            self.commitments_by_member(commitments, &mut Vec::new(), &mut BTreeSet::new());
        let honest = by_member
            .values()
            .filter(|list| equivocation_pair(list).is_none())
            .count();
        honest >= usize::from(self.roster.threshold)
    }

    fn commitments_by_member<'a>(
        &self,
        commitments: &'a [SignedCommitment],
        ignored: &mut Vec<(EventId, String)>,
        outsiders: &mut BTreeSet<PublicKey>,
    ) -> BTreeMap<PublicKey, Vec<&'a SignedCommitment>> {
        let mut by_member: BTreeMap<PublicKey, Vec<&SignedCommitment>> = BTreeMap::new();
        for c in commitments {
            if c.commitment.job != self.job {
                ignored.push((
                    c.id(),
                    format!("commitment for another job ({})", c.commitment.job),
                ));
            } else if c.commitment.quorum != self.roster.quorum {
                ignored.push((
                    c.id(),
                    format!(
                        "commitment for another quorum ({})",
                        c.commitment.quorum.to_hex()
                    ),
                ));
            } else if !self.roster.contains(&c.member()) {
                outsiders.insert(c.member());
            } else {
                by_member.entry(c.member()).or_default().push(c);
            }
        }
        for list in by_member.values_mut() {
            list.sort_by_key(|c| (c.event.created_at, c.id()));
            list.dedup_by_key(|c| c.id());
        }
        by_member
    }

    /// Counts the commitments and reveals seen (already signature-checked). Rules:
    ///
    /// 1. Events for another job or quorum are `ignored` (with a reason); authors outside the
    ///    roster are `outsiders` and count for nothing.
    /// 2. A member with two commitments to different digests `equivocated`: the proof is kept
    ///    and nothing of theirs counts.
    /// 3. A member's reveal counts if it opens one of their commitments
    ///    ([`SignedReveal::opens`]). A member whose reveals all fail is `invalid` (with the
    ///    reason); one with no reveal is `silent`.
    /// 4. Per file: the hash revealed by at least `t` counted members is the file's agreed
    ///    hash. If no hash — or, with `t ≤ n/2`, more than one — gets there, the file has none.
    /// 5. When at least one file is agreed: a counted member is `agreed` if it reported every
    ///    agreed file with the agreed hash, else `disagreed`, with each agreed file it reported
    ///    otherwise (`None` = missing). Files it reported that are not agreed (split, or extra)
    ///    do not count against it: they are not released. When no file is agreed, nobody is
    ///    agreed or disagreed; `files` shows the split.
    pub fn evaluate(
        &self,
        commitments: &[SignedCommitment],
        reveals: &[SignedReveal],
    ) -> TallyOutcome {
        let mut ignored = Vec::new();
        let mut outsiders = BTreeSet::new();
        let by_member = self.commitments_by_member(commitments, &mut ignored, &mut outsiders);

        let mut equivocated = BTreeMap::new();
        for (member, list) in &by_member {
            if let Some((a, b)) = equivocation_pair(list) {
                // Both are verified, same member/job/quorum, different digests: cannot fail.
                if let Ok(proof) = EquivocationProof::new(a, b) {
                    equivocated.insert(*member, proof);
                }
            }
        }

        let mut reveals_by_member: BTreeMap<PublicKey, Vec<&SignedReveal>> = BTreeMap::new();
        for r in reveals {
            if r.reveal.job != self.job {
                ignored.push((r.id(), format!("reveal for another job ({})", r.reveal.job)));
            } else if !self.roster.contains(&r.member()) {
                outsiders.insert(r.member());
            } else {
                reveals_by_member.entry(r.member()).or_default().push(r);
            }
        }

        let mut revealed = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        let mut silent = BTreeSet::new();
        for member in &self.roster.members {
            if equivocated.contains_key(member) {
                continue;
            }
            let mut list = reveals_by_member.remove(member).unwrap_or_default();
            list.sort_by_key(|r| (r.event.created_at, r.id()));
            let commits = by_member.get(member).map(Vec::as_slice).unwrap_or_default();
            let mut first_error = None;
            let mut counted = None;
            for r in list {
                let outcome = match commits.iter().find(|c| c.id() == r.reveal.commitment) {
                    None => Err(format!(
                        "reveal {} names commitment {}, which is not among this job's commitments",
                        r.id(),
                        r.reveal.commitment
                    )),
                    Some(c) => r.opens(c).map_err(|e| format!("reveal {}: {e}", r.id())),
                };
                match outcome {
                    Ok(()) => {
                        counted = Some(r);
                        break;
                    }
                    Err(reason) => {
                        first_error.get_or_insert(reason);
                    }
                }
            }
            match (counted, first_error) {
                (Some(r), _) => {
                    revealed.insert(
                        *member,
                        Revealed {
                            reveal: r.id(),
                            created_at: r.event.created_at,
                            result: r.reveal.result.clone(),
                            plan: r.reveal.plan,
                        },
                    );
                }
                (None, Some(reason)) => {
                    invalid.insert(*member, reason);
                }
                (None, None) => {
                    silent.insert(*member);
                }
            }
        }

        let t = usize::from(self.roster.threshold);
        // A member that built another plan votes on nothing.
        let mut disagreed = BTreeMap::new();
        if let Some(expected) = self.plan {
            for (member, r) in &revealed {
                if r.plan != Some(expected) {
                    disagreed.insert(*member, BTreeMap::from([(PLAN_ENTRY.to_string(), r.plan)]));
                }
            }
        }
        let other_plan: BTreeSet<PublicKey> = disagreed.keys().copied().collect();
        let voters = || revealed.iter().filter(|(m, _)| !other_plan.contains(*m));
        let mut files: BTreeMap<String, FileVotes> = BTreeMap::new();
        for (member, r) in voters() {
            for (name, sha256) in &r.result.files {
                files
                    .entry(name.clone())
                    .or_default()
                    .votes
                    .entry(*sha256)
                    .or_default()
                    .insert(*member);
            }
        }
        for votes in files.values_mut() {
            let mut winners = votes.votes.iter().filter(|(_, who)| who.len() >= t);
            votes.agreed = match (winners.next(), winners.next()) {
                (Some((sha256, _)), None) => Some(*sha256),
                _ => None,
            };
        }

        let agreed_files: BTreeMap<&String, Sha256Hex> = files
            .iter()
            .filter_map(|(name, v)| v.agreed.map(|sha| (name, sha)))
            .collect();
        let mut agreed = BTreeSet::new();
        if !agreed_files.is_empty() {
            for (member, r) in voters() {
                let differs: BTreeMap<String, Option<Sha256Hex>> = agreed_files
                    .iter()
                    .filter(|(name, sha)| r.result.files.get(name.as_str()) != Some(sha))
                    .map(|(name, _)| ((*name).clone(), r.result.files.get(name.as_str()).copied()))
                    .collect();
                if differs.is_empty() {
                    agreed.insert(*member);
                } else {
                    disagreed.insert(*member, differs);
                }
            }
        }

        TallyOutcome {
            job: self.job,
            quorum: self.roster.quorum,
            threshold: self.roster.threshold,
            files,
            revealed,
            agreed,
            disagreed,
            invalid,
            silent,
            equivocated,
            outsiders,
            ignored,
        }
    }
}

/// The first commitment and the first later one with another digest, if any.
fn equivocation_pair<'a>(
    list: &[&'a SignedCommitment],
) -> Option<(&'a SignedCommitment, &'a SignedCommitment)> {
    let first = *list.first()?;
    list.iter()
        .find(|c| c.commitment.digest != first.commitment.digest)
        .map(|c| (first, *c))
}

/// Who said what, for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyOutcome {
    pub job: EventId,
    pub quorum: PublicKey,
    pub threshold: u16,
    /// Every file a counted member reported, with the votes and the agreed hash.
    pub files: BTreeMap<String, FileVotes>,
    /// The counted reveal of every member whose reveal opened its commitment.
    pub revealed: BTreeMap<PublicKey, Revealed>,
    /// Members who reported every agreed file with the agreed hash.
    pub agreed: BTreeSet<PublicKey>,
    /// Members who reported some agreed file otherwise: file → their hash (`None` = missing).
    pub disagreed: BTreeMap<PublicKey, BTreeMap<String, Option<Sha256Hex>>>,
    /// Members whose reveals did not open a commitment of theirs, with the reason.
    pub invalid: BTreeMap<PublicKey, String>,
    /// Members with no reveal.
    pub silent: BTreeSet<PublicKey>,
    /// Members who committed to two digests, with the proof to publish.
    pub equivocated: BTreeMap<PublicKey, EquivocationProof>,
    /// Authors outside the roster (ignored).
    pub outsiders: BTreeSet<PublicKey>,
    /// Events for another job or quorum, with why.
    pub ignored: Vec<(EventId, String)>,
}

impl TallyOutcome {
    /// The agreed files with their agreed hashes.
    pub fn agreed_result(&self) -> BuildResult {
        BuildResult {
            files: self
                .files
                .iter()
                .filter_map(|(name, v)| v.agreed.map(|sha| (name.clone(), sha)))
                .collect(),
        }
    }

    /// Files some member reported but no hash of which reached `t` (not released).
    pub fn unagreed_files(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter(|(_, v)| v.agreed.is_none())
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Whether the quorum can attest: at least one agreed file, and at least `t` members who
    /// back every agreed file (so that `t` of them can sign).
    pub fn is_attestable(&self) -> bool {
        !self.agreed.is_empty()
            && self.agreed.len() >= usize::from(self.threshold)
            && self.files.values().any(|v| v.agreed.is_some())
    }

    /// The attestation's `created_at`: the latest `created_at` of the counted reveals of
    /// `members` (`None` if one of them has no counted reveal).
    pub fn attestation_time(&self, members: &BTreeSet<PublicKey>) -> Option<Timestamp> {
        members
            .iter()
            .map(|m| self.revealed.get(m).map(|r| r.created_at))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// Whether a member with this view of the job may sign `attestation` dated `created_at`
    /// (e.g. one proposed by another member in a signing request): same job; the files are
    /// exactly the agreed result; at least `t` members listed, each of them agreed in this
    /// view; `created_at` is [`TallyOutcome::attestation_time`] of the listed members. The
    /// mandate and commit are the caller's to check. The error says what differs.
    pub fn supports(
        &self,
        attestation: &QuorumAttestation,
        created_at: Timestamp,
        not_before: Timestamp,
    ) -> std::result::Result<(), String> {
        if attestation.job != self.job {
            return Err(format!("it is for another job ({})", attestation.job));
        }
        if attestation.files != self.agreed_result() {
            return Err("its files are not the agreed result".into());
        }
        if attestation.agreed.len() < usize::from(self.threshold) {
            return Err(format!(
                "it lists {} agreeing members; {} are needed",
                attestation.agreed.len(),
                self.threshold
            ));
        }
        if let Some(m) = attestation.agreed.iter().find(|m| !self.agreed.contains(m)) {
            return Err(format!("{} is not an agreeing member here", m.to_hex()));
        }
        match self
            .attestation_time(&attestation.agreed)
            .map(|at| at.max(not_before))
        {
            Some(at) if at == created_at => Ok(()),
            Some(at) => Err(format!(
                "created_at is {}, but the listed members' latest reveal is at {}",
                created_at.as_secs(),
                at.as_secs()
            )),
            None => Err("a listed member has no counted reveal".into()),
        }
    }
}

impl fmt::Display for TallyOutcome {
    /// A plain-text report of who said what (no secrets: salts are not shown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every roster member is in exactly one of these.
        let n =
            self.revealed.len() + self.invalid.len() + self.silent.len() + self.equivocated.len();
        writeln!(
            f,
            "job {}: {} of {n} members must agree",
            self.job, self.threshold
        )?;
        for (name, votes) in &self.files {
            match votes.agreed {
                Some(sha) => writeln!(f, "  {name}: agreed {sha}")?,
                None => writeln!(f, "  {name}: no agreement")?,
            }
            for (sha, who) in &votes.votes {
                let who: Vec<String> = who.iter().map(PublicKey::to_hex).collect();
                writeln!(f, "    {sha}: {}", who.join(", "))?;
            }
        }
        for (member, files) in &self.disagreed {
            let files: Vec<String> = files
                .iter()
                .map(|(name, sha)| match sha {
                    Some(sha) => format!("{name} = {sha}"),
                    None => format!("{name} missing"),
                })
                .collect();
            writeln!(f, "  disagreed {}: {}", member.to_hex(), files.join(", "))?;
        }
        for (member, reason) in &self.invalid {
            writeln!(f, "  invalid {}: {reason}", member.to_hex())?;
        }
        for member in self.equivocated.keys() {
            writeln!(f, "  equivocated {}", member.to_hex())?;
        }
        for member in &self.silent {
            writeln!(f, "  silent {}", member.to_hex())?;
        }
        for member in &self.outsiders {
            writeln!(f, "  outsider (ignored) {}", member.to_hex())?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Quorum attestation (8708)
// ---------------------------------------------------------------------------------------------

/// What the quorum agreed on (kind 8708), signed by the quorum key through FROST: `e` job,
/// `e` mandate (marker `mandate`), `c` commit, one `x` per agreed file sorted by name, one
/// `["p", MEMBER, "", "agreed"]` per agreeing member sorted by key; content empty. Every field
/// is derived from agreed data and `created_at` is passed in, so members building it from the
/// same data get the same event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumAttestation {
    /// The job request id.
    pub job: EventId,
    /// The mandate event that authorises the quorum.
    pub mandate: EventId,
    /// The commit built (40 or 64 lowercase hex).
    pub commit: String,
    /// The agreed files.
    pub files: BuildResult,
    /// The members who back every file.
    pub agreed: BTreeSet<PublicKey>,
    /// Where the job came from, as every member checked it (protocol §16): `None` only for
    /// sessions that build nothing from a pipeline (a watcher quorum agreeing on a commit).
    pub evidence: Option<JobEvidence>,
    /// `Some(kind)` when the members are wrapper DVMs whose work ordinary DVMs of that kind did
    /// (`["wrapper", KIND]`): the files are what those DVMs answered, fetched and hashed by
    /// the wrappers, not builds of the members' own.
    pub wrapped: Option<u16>,
}

/// The source of an attested job (protocol §16): the maintainer-signed NIP-34 evidence the
/// members checked, and the pipeline job they derived from the commit.
///
/// ```text
/// ["e", <30617 id>, "", "announcement"]   the owner's announcement (clone URLs, maintainers)
/// ["e", <30618 id>, "", "state"]          the maintainer-signed state naming the commit
/// ["pipeline", <path>, <plan hash>]       the pipeline file at the commit and its plan hash
/// ["job", <job id>]                       the job of that plan
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvidence {
    pub announcement: EventId,
    pub state: EventId,
    /// The pipeline file's path (the mandate's `pipeline`).
    pub pipeline: String,
    pub plan_hash: Sha256Hex,
    pub job: String,
}

/// What the members add to a tally to make their attestation: the mandate, the commit, the
/// job's evidence and the earliest time it may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationBasis {
    pub mandate: EventId,
    pub commit: String,
    pub evidence: Option<JobEvidence>,
    pub wrapped: Option<u16>,
    /// The attestation is dated no earlier than this: the latest `created_at` of the events it
    /// relies on (the request, the mandate, the state), so that it can never be back-dated
    /// before its own evidence.
    pub not_before: Timestamp,
}

impl QuorumAttestation {
    /// The attestation of `outcome` and its `created_at`: the later of
    /// [`TallyOutcome::attestation_time`] of all agreeing members and `basis.not_before`.
    /// Fails unless the outcome is attestable.
    pub fn from_tally(
        outcome: &TallyOutcome,
        basis: &AttestationBasis,
    ) -> Result<(Self, Timestamp)> {
        if !outcome.is_attestable() {
            return Err(AgreementError::NotAttestable(format!(
                "{} members back every agreed file; {} are needed",
                outcome.agreed.len(),
                outcome.threshold
            )));
        }
        let created_at = outcome.attestation_time(&outcome.agreed).ok_or_else(|| {
            AgreementError::NotAttestable("an agreeing member has no reveal".into())
        })?;
        let attestation = QuorumAttestation {
            job: outcome.job,
            mandate: basis.mandate,
            commit: basis.commit.clone(),
            files: outcome.agreed_result(),
            agreed: outcome.agreed.clone(),
            evidence: basis.evidence.clone(),
            wrapped: basis.wrapped,
        };
        attestation.validate()?;
        Ok((attestation, created_at.max(basis.not_before)))
    }

    /// At least one file and one member, names non-empty, a full commit id.
    pub fn validate(&self) -> Result<()> {
        if !is_object_id(&self.commit) {
            return Err(malformed(
                "c",
                format!(
                    "{:?} is not a full 40- or 64-hex lowercase commit id",
                    self.commit
                ),
            ));
        }
        self.files.check()?;
        if self.agreed.is_empty() {
            return Err(AgreementError::MissingTag("p"));
        }
        if let Some(evidence) = &self.evidence {
            if evidence.pipeline.is_empty() {
                return Err(malformed("pipeline", "empty path"));
            }
            if evidence.job.is_empty() {
                return Err(malformed("job", "empty job id"));
            }
        }
        Ok(())
    }

    /// The attestation, ready to sign, dated `created_at`.
    pub fn to_event_builder(&self, created_at: Timestamp) -> Result<EventBuilder> {
        self.validate()?;
        let mut tags = vec![
            Tag::event(self.job),
            marked_e_tag(self.mandate, MARKER_MANDATE),
            custom_tag(TAG_COMMIT, [self.commit.clone()]),
        ];
        if let Some(evidence) = &self.evidence {
            tags.push(marked_e_tag(evidence.announcement, MARKER_ANNOUNCEMENT));
            tags.push(marked_e_tag(evidence.state, MARKER_STATE));
            tags.push(custom_tag(
                TAG_PIPELINE,
                [evidence.pipeline.clone(), evidence.plan_hash.to_hex()],
            ));
            tags.push(custom_tag(TAG_JOB, [evidence.job.clone()]));
        }
        if let Some(kind) = self.wrapped {
            tags.push(custom_tag(TAG_WRAPPER, [kind.to_string()]));
        }
        tags.extend(self.files.to_tags());
        // BTreeSet<PublicKey> iterates in byte order, which is lowercase-hex order.
        tags.extend(self.agreed.iter().map(|m| {
            custom_tag(
                TAG_MEMBER,
                [m.to_hex(), String::new(), MARKER_AGREED.to_string()],
            )
        }));
        Ok(EventBuilder::new(QUORUM_ATTESTATION, "")
            .tags(tags)
            .custom_created_at(created_at)
            .allow_self_tagging())
    }

    /// The unsigned event the quorum signs: the same for every member given the same data.
    pub fn unsigned(
        &self,
        quorum: PublicKey,
        created_at: Timestamp,
    ) -> Result<nostr::UnsignedEvent> {
        let mut unsigned = self.to_event_builder(created_at)?.build(quorum);
        unsigned.ensure_id();
        Ok(unsigned)
    }

    /// Parses an attestation; `x` and `p` tags must be in canonical order (one spelling).
    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, QUORUM_ATTESTATION, "quorum attestation (8708)")?;
        let (ids, _) = marked_event_ids(
            event,
            &["", MARKER_MANDATE, MARKER_ANNOUNCEMENT, MARKER_STATE],
            None,
            true,
        )?;
        let job = *ids
            .get("")
            .ok_or_else(|| malformed("e", "no unmarked `e` tag naming the job"))?;
        let mandate = *ids
            .get(MARKER_MANDATE)
            .ok_or_else(|| malformed("e", "no `e` tag with marker `mandate`"))?;
        let mut agreed = BTreeSet::new();
        let mut previous: Option<PublicKey> = None;
        for values in tags_named(event, TAG_MEMBER) {
            let member = parse_pubkey("p", values.get(1).map(String::as_str).unwrap_or_default())?;
            if values.get(3).map(String::as_str) != Some(MARKER_AGREED) {
                return Err(malformed(
                    "p",
                    format!("{} lacks the `agreed` marker (element 3)", member.to_hex()),
                ));
            }
            if previous.is_some_and(|p| p >= member) {
                return Err(malformed(
                    "p",
                    format!(
                        "{} is listed twice or out of order (sorted by key)",
                        member.to_hex()
                    ),
                ));
            }
            previous = Some(member);
            agreed.insert(member);
        }
        let pipeline = match tags_named(event, TAG_PIPELINE)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => None,
            [tag] => match &tag[1..] {
                [path, plan] => Some((
                    path.clone(),
                    Sha256Hex::parse(plan).map_err(|_| {
                        malformed("pipeline", format!("plan hash {plan:?} is not a sha256"))
                    })?,
                )),
                _ => {
                    return Err(malformed(
                        "pipeline",
                        "expected [\"pipeline\", PATH, PLAN_HASH]",
                    ));
                }
            },
            _ => return Err(AgreementError::Duplicate("pipeline")),
        };
        let evidence = match (
            ids.get(MARKER_ANNOUNCEMENT),
            ids.get(MARKER_STATE),
            pipeline,
            optional_value(event, TAG_JOB)?,
        ) {
            (None, None, None, None) => None,
            (Some(announcement), Some(state), Some((pipeline, plan_hash)), Some(job)) => {
                Some(JobEvidence {
                    announcement: *announcement,
                    state: *state,
                    pipeline,
                    plan_hash,
                    job,
                })
            }
            _ => {
                return Err(malformed(
                    "e",
                    "the job's evidence needs all four: `e` announcement, `e` state, `pipeline` \
                     and `job`",
                ));
            }
        };
        let wrapped = optional_value(event, TAG_WRAPPER)?
            .map(|kind| {
                kind.parse::<u16>()
                    .map_err(|_| malformed("wrapper", format!("{kind:?} is not an event kind")))
            })
            .transpose()?;
        let attestation = QuorumAttestation {
            job,
            mandate,
            commit: required_value(event, TAG_COMMIT)?,
            files: BuildResult::from_tags(event, true)?,
            agreed,
            evidence,
            wrapped,
        };
        attestation.validate()?;
        Ok(attestation)
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const NOW: u64 = 1_800_000_000;

    fn sha(byte: u8) -> Sha256Hex {
        Sha256Hex::from_bytes([byte; 32])
    }

    fn job() -> EventId {
        EventId::from_byte_array([0x1b; 32])
    }

    fn key(byte: u8) -> Keys {
        Keys::parse(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    fn quorum() -> PublicKey {
        key(0x99).public_key()
    }

    fn basis(mandate: EventId) -> AttestationBasis {
        AttestationBasis {
            mandate,
            commit: COMMIT.into(),
            evidence: None,
            wrapped: None,
            not_before: Timestamp::from(0),
        }
    }

    fn result(files: &[(&str, u8)]) -> BuildResult {
        files.iter().fold(BuildResult::new(), |r, (name, b)| {
            r.with_file(*name, sha(*b))
        })
    }

    /// A member that commits to and reveals `result` (with its own fresh salt).
    struct Member {
        keys: Keys,
        salt: Salt,
        result: BuildResult,
        commitment: SignedCommitment,
    }

    impl Member {
        fn new(keys: Keys, result: BuildResult, at: u64) -> Self {
            let salt = Salt::random();
            let commitment = Commitment::new(
                &keys.public_key(),
                job(),
                quorum(),
                &salt,
                &result,
                Timestamp::from(NOW + 3600),
            );
            let commitment = commit_event(&commitment, &keys, at);
            Member {
                keys,
                salt,
                result,
                commitment,
            }
        }

        fn pubkey(&self) -> PublicKey {
            self.keys.public_key()
        }

        fn reveal(&self, at: u64) -> SignedReveal {
            let reveal = Reveal::new(
                &self.commitment,
                self.salt,
                self.result.clone(),
                Timestamp::from(NOW + 3600),
            );
            reveal_event(&reveal, &self.keys, at)
        }
    }

    fn commit_event(commitment: &Commitment, keys: &Keys, at: u64) -> SignedCommitment {
        let event = commitment
            .to_event_builder()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap();
        SignedCommitment::from_event(&event).unwrap()
    }

    fn reveal_event(reveal: &Reveal, keys: &Keys, at: u64) -> SignedReveal {
        let event = reveal
            .to_event_builder()
            .unwrap()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap();
        SignedReveal::from_event(&event).unwrap()
    }

    fn roster(members: &[&Member], t: u16) -> Roster {
        Roster::new(quorum(), members.iter().map(|m| m.pubkey()), t).unwrap()
    }

    fn tally(members: &[&Member], t: u16) -> TallyOutcome {
        let commitments: Vec<_> = members.iter().map(|m| m.commitment.clone()).collect();
        let reveals: Vec<_> = members.iter().map(|m| m.reveal(NOW + 10)).collect();
        Tally::new(roster(members, t), job()).evaluate(&commitments, &reveals)
    }

    fn event_with_tags(kind: Kind, tags: &[Vec<String>], content: &str, keys: &Keys) -> Event {
        EventBuilder::new(kind, content)
            .tags(tags.iter().map(|t| custom_tag(&t[0], t[1..].to_vec())))
            .allow_self_tagging()
            .sign_with_keys(keys)
            .unwrap()
    }

    fn tags_of(event: &Event) -> Vec<Vec<String>> {
        event.tags.iter().map(|t| t.clone().to_vec()).collect()
    }

    fn replace(tags: &[Vec<String>], name: &str, value: &[&str]) -> Vec<Vec<String>> {
        let mut done = false;
        tags.iter()
            .map(|t| {
                if t[0] == name && !done {
                    done = true;
                    value.iter().map(|s| s.to_string()).collect()
                } else {
                    t.clone()
                }
            })
            .collect()
    }

    fn drop(tags: &[Vec<String>], name: &str) -> Vec<Vec<String>> {
        tags.iter().filter(|t| t[0] != name).cloned().collect()
    }

    #[test]
    fn canonical_encoding_and_digest_are_exact() {
        let r = result(&[("b", 2), ("a", 1)]);
        let mut expected = Vec::new();
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.push(b'a');
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.push(b'b');
        expected.extend_from_slice(&[2; 32]);
        assert_eq!(r.canonical_bytes(), expected);

        let member = key(1).public_key();
        let salt = Salt::from_bytes([7; 32]);
        let mut preimage = b"quorum-ci/commitment/v1".to_vec();
        assert_eq!(preimage.len(), 23);
        preimage.extend_from_slice(&member.to_bytes());
        preimage.extend_from_slice(job().as_bytes());
        preimage.extend_from_slice(&[7; 32]);
        preimage.extend_from_slice(&expected);
        let digest = sha256::Hash::hash(&preimage).to_byte_array();
        assert_eq!(commitment_digest(&member, &job(), &salt, &r), digest);
        // Another member, job, salt or result: another digest.
        let other = key(2).public_key();
        assert_ne!(commitment_digest(&other, &job(), &salt, &r), digest);
        assert_ne!(
            commitment_digest(&member, &EventId::all_zeros(), &salt, &r),
            digest
        );
        assert_ne!(
            commitment_digest(&member, &job(), &Salt::from_bytes([8; 32]), &r),
            digest
        );
        assert_ne!(
            commitment_digest(&member, &job(), &salt, &result(&[("a", 1)])),
            digest
        );
        // Salts are random and never shown.
        assert_ne!(Salt::random(), Salt::random());
        assert_eq!(format!("{salt:?}"), "Salt(***)");
        assert_eq!(Salt::parse(&salt.to_hex()), Some(salt));
        assert_eq!(Salt::parse("AB"), None);
    }

    #[test]
    fn commitment_and_reveal_round_trip_and_open() {
        let m = Member::new(key(1), result(&[("out/app", 1), ("out/app.sig", 2)]), NOW);
        let parsed = Commitment::from_event(m.commitment.event()).unwrap();
        assert_eq!(&parsed, m.commitment.commitment());
        assert_eq!(m.commitment.event().content, "");
        let r = m.reveal(NOW + 5);
        assert_eq!(Reveal::from_event(r.event()).unwrap(), *r.reveal());
        assert_eq!(r.reveal().result, m.result);
        assert_eq!(r.opens(&m.commitment), Ok(()));
        assert_eq!(
            r.reveal().opens(&m.pubkey(), m.commitment.commitment()),
            Ok(())
        );
        // x tags are written sorted.
        let names: Vec<&str> = tags_named(r.event(), "x").map(|t| t[2].as_str()).collect();
        assert_eq!(names, ["out/app", "out/app.sig"]);
        // The optional `seen` list round-trips and does not change what the reveal opens.
        let other = Member::new(key(2), m.result.clone(), NOW);
        let reveal = Reveal::new(
            &m.commitment,
            m.salt,
            m.result.clone(),
            Timestamp::from(NOW + 1),
        )
        .with_seen([other.commitment.id()]);
        let signed = reveal_event(&reveal, &m.keys, NOW + 5);
        assert_eq!(
            signed.reveal().seen,
            [other.commitment.id()].into_iter().collect()
        );
        assert_eq!(signed.opens(&m.commitment), Ok(()));
        // `e` tags with markers a reveal does not know are ignored.
        let mut tags = tags_of(signed.event());
        tags.push(vec![
            "e".into(),
            EventId::all_zeros().to_hex(),
            "".into(),
            "later".into(),
        ]);
        let extended = event_with_tags(REVEAL, &tags, "", &m.keys);
        assert_eq!(Reveal::from_event(&extended).unwrap(), reveal);
    }

    #[test]
    fn a_reveal_that_does_not_open_is_refused() {
        let m = Member::new(key(1), result(&[("a", 1)]), NOW);
        // Other bytes than committed.
        let lie = Reveal::new(
            &m.commitment,
            m.salt,
            result(&[("a", 9)]),
            Timestamp::from(NOW + 3600),
        );
        let lie = reveal_event(&lie, &m.keys, NOW + 5);
        assert_eq!(
            lie.opens(&m.commitment),
            Err(AgreementError::DoesNotOpen(OpenFailure::DigestMismatch))
        );
        // Another salt.
        let salted = Reveal::new(
            &m.commitment,
            Salt::from_bytes([3; 32]),
            m.result.clone(),
            Timestamp::from(NOW + 3600),
        );
        assert!(
            reveal_event(&salted, &m.keys, NOW + 5)
                .opens(&m.commitment)
                .is_err()
        );
        // Someone else's reveal of the same data.
        let other = Member::new(key(2), m.result.clone(), NOW);
        let stolen = Reveal::new(
            &m.commitment,
            m.salt,
            m.result.clone(),
            Timestamp::from(NOW + 1),
        );
        let stolen = reveal_event(&stolen, &other.keys, NOW + 5);
        assert_eq!(
            stolen.opens(&m.commitment),
            Err(AgreementError::DoesNotOpen(OpenFailure::OtherAuthor))
        );
        // A reveal naming another commitment.
        assert!(matches!(
            m.reveal(NOW)
                .opens(&Member::new(key(1), m.result.clone(), NOW + 1).commitment),
            Err(AgreementError::DoesNotOpen(OpenFailure::OtherCommitment(_)))
        ));
        // Another job.
        let mut elsewhere = m.reveal(NOW).reveal().clone();
        elsewhere.job = EventId::all_zeros();
        assert_eq!(
            elsewhere.opens(&m.pubkey(), m.commitment.commitment()),
            Err(AgreementError::DoesNotOpen(OpenFailure::OtherJob(
                EventId::all_zeros()
            )))
        );
    }

    #[test]
    fn malformed_commitments_and_reveals_name_the_tag() {
        let keys = key(1);
        let m = Member::new(keys.clone(), result(&[("a", 1)]), NOW);
        let base = tags_of(m.commitment.event());
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (drop(&base, "e"), "missing `e`"),
            (replace(&base, "e", &["e", "nope"]), "`e`"),
            (drop(&base, "quorum"), "missing `quorum`"),
            (replace(&base, "quorum", &["quorum", "12"]), "`quorum`"),
            (drop(&base, "commitment"), "missing `commitment`"),
            (
                replace(&base, "commitment", &["commitment", "xyz"]),
                "`commitment`",
            ),
            (drop(&base, "expiration"), "missing `expiration`"),
            (
                replace(&base, "expiration", &["expiration", "later"]),
                "`expiration`",
            ),
        ];
        for (tags, needle) in cases {
            match Commitment::from_event(&event_with_tags(COMMITMENT, &tags, "", &keys)) {
                Ok(_) => assert!(needle.is_empty(), "{tags:?} parsed"),
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{needle}: {err}"
                ),
            }
        }

        let base = tags_of(m.reveal(NOW).event());
        let job_hex = job().to_hex();
        let x = sha(1).to_hex();
        let mut twice = base.clone();
        twice.push(vec!["x".into(), sha(2).to_hex(), "a".into()]);
        let mut second_job = base.clone();
        second_job.push(vec!["e".into(), job_hex.clone()]);
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (drop(&base, "e"), "`e`"),
            (replace(&base, "e", &["e", &job_hex, "", "other"]), "`e`"),
            (second_job, "`e`"),
            (drop(&base, "salt"), "missing `salt`"),
            (replace(&base, "salt", &["salt", "00"]), "`salt`"),
            (drop(&base, "x"), "missing `x`"),
            (replace(&base, "x", &["x", &x]), "`x`"),
            (replace(&base, "x", &["x", "A1", "a"]), "`x`"),
            (twice, "`x`"),
            (drop(&base, "expiration"), "missing `expiration`"),
        ];
        for (tags, needle) in cases {
            match Reveal::from_event(&event_with_tags(REVEAL, &tags, "", &keys)) {
                Ok(_) => assert!(needle.is_empty(), "{tags:?} parsed"),
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{needle}: {err}"
                ),
            }
        }
        assert!(matches!(
            Reveal::from_event(m.commitment.event()),
            Err(AgreementError::WrongKind { found: 8705, .. })
        ));
        // A forged event is refused before parsing.
        let mut forged: serde_json::Value = serde_json::to_value(m.commitment.event()).unwrap();
        forged["created_at"] = 1.into();
        let forged: Event = serde_json::from_value(forged).unwrap();
        assert!(matches!(
            SignedCommitment::from_event(&forged),
            Err(AgreementError::InvalidSignature(_))
        ));
    }

    #[test]
    fn three_honest_members_agree() {
        let r = result(&[("out/app", 1)]);
        let ms: Vec<Member> = (1..=3)
            .map(|i| Member::new(key(i), r.clone(), NOW))
            .collect();
        let refs: Vec<&Member> = ms.iter().collect();
        let outcome = tally(&refs, 2);
        assert_eq!(outcome.agreed_result(), r);
        assert_eq!(outcome.agreed.len(), 3);
        assert!(outcome.disagreed.is_empty() && outcome.invalid.is_empty());
        assert!(outcome.silent.is_empty() && outcome.equivocated.is_empty());
        assert!(outcome.is_attestable());
        assert!(outcome.unagreed_files().is_empty());
    }

    #[test]
    fn one_liar_of_three_is_named() {
        let honest = result(&[("out/app", 1)]);
        let a = Member::new(key(1), honest.clone(), NOW);
        let b = Member::new(key(2), honest.clone(), NOW);
        let liar = Member::new(key(3), result(&[("out/app", 6)]), NOW);
        let outcome = tally(&[&a, &b, &liar], 2);
        assert_eq!(outcome.files["out/app"].agreed, Some(sha(1)));
        assert_eq!(
            outcome.agreed,
            [a.pubkey(), b.pubkey()].into_iter().collect()
        );
        assert_eq!(
            outcome.disagreed[&liar.pubkey()],
            BTreeMap::from([("out/app".to_string(), Some(sha(6)))])
        );
        assert!(outcome.is_attestable());
        let report = outcome.to_string();
        assert!(
            report.contains(&format!("disagreed {}", liar.pubkey().to_hex())),
            "{report}"
        );
    }

    #[test]
    fn two_liars_with_different_values_prevent_agreement() {
        let a = Member::new(key(1), result(&[("out/app", 1)]), NOW);
        let b = Member::new(key(2), result(&[("out/app", 6)]), NOW);
        let c = Member::new(key(3), result(&[("out/app", 7)]), NOW);
        let outcome = tally(&[&a, &b, &c], 2);
        assert_eq!(outcome.files["out/app"].agreed, None);
        assert_eq!(outcome.files["out/app"].votes.len(), 3);
        assert!(outcome.agreed.is_empty() && outcome.disagreed.is_empty());
        assert!(!outcome.is_attestable());
        assert_eq!(outcome.unagreed_files(), ["out/app"]);
        assert!(QuorumAttestation::from_tally(&outcome, &basis(EventId::all_zeros())).is_err());
    }

    #[test]
    fn t_colluders_win_that_is_the_threat_model() {
        // Two of three lie identically with t = 2: their result is "agreed" and the honest
        // member is named. Fewer than t colluders can never do this (design §10).
        let honest = Member::new(key(1), result(&[("out/app", 1)]), NOW);
        let evil = result(&[("out/app", 6)]);
        let x = Member::new(key(2), evil.clone(), NOW);
        let y = Member::new(key(3), evil.clone(), NOW);
        let outcome = tally(&[&honest, &x, &y], 2);
        assert_eq!(outcome.agreed_result(), evil);
        assert!(outcome.disagreed.contains_key(&honest.pubkey()));
        assert!(outcome.is_attestable());
        // With t = 3 the same collusion gets nowhere.
        let outcome = tally(&[&honest, &x, &y], 3);
        assert!(!outcome.is_attestable());
    }

    #[test]
    fn copying_a_result_is_fine_copying_a_digest_is_not() {
        let r = result(&[("out/app", 1)]);
        let a = Member::new(key(1), r.clone(), NOW);
        let b = Member::new(key(2), r.clone(), NOW);
        // The copycat commits to the same result with its own salt: that is an ordinary vote
        // (the engine makes sure it had to commit before any reveal).
        let copycat = Member::new(key(3), r.clone(), NOW);
        let outcome = tally(&[&a, &b, &copycat], 2);
        assert!(outcome.agreed.contains(&copycat.pubkey()));

        // A copycat that republishes a's digest cannot open it for its own key, even with a's
        // salt and result once they are revealed.
        let thief = key(4);
        let stolen = commit_event(a.commitment.commitment(), &thief, NOW + 1);
        let replay = Reveal::new(&stolen, a.salt, r.clone(), Timestamp::from(NOW + 3600));
        let replay = reveal_event(&replay, &thief, NOW + 20);
        let members = [a.pubkey(), b.pubkey(), thief.public_key()];
        let outcome = Tally::new(Roster::new(quorum(), members, 2).unwrap(), job()).evaluate(
            &[a.commitment.clone(), b.commitment.clone(), stolen],
            &[a.reveal(NOW + 10), b.reveal(NOW + 10), replay],
        );
        let reason = &outcome.invalid[&thief.public_key()];
        assert!(reason.contains("do not hash"), "{reason}");
        assert!(!outcome.agreed.contains(&thief.public_key()));
        assert_eq!(outcome.agreed.len(), 2);
    }

    #[test]
    fn equivocation_is_detected_and_the_proof_verifies() {
        let a = Member::new(key(1), result(&[("out/app", 1)]), NOW);
        let b = Member::new(key(2), result(&[("out/app", 1)]), NOW);
        let two_faced = Member::new(key(3), result(&[("out/app", 1)]), NOW);
        let other = Commitment::new(
            &two_faced.pubkey(),
            job(),
            quorum(),
            &Salt::random(),
            &result(&[("out/app", 6)]),
            Timestamp::from(NOW + 3600),
        );
        let second = commit_event(&other, &two_faced.keys, NOW + 2);
        // The same commitment seen twice is not an equivocation.
        let roster = roster(&[&a, &b, &two_faced], 2);
        let tally = Tally::new(roster, job());
        let commitments = vec![
            a.commitment.clone(),
            b.commitment.clone(),
            two_faced.commitment.clone(),
            two_faced.commitment.clone(),
            second.clone(),
        ];
        assert!(tally.ready_to_reveal(&commitments));
        assert!(!tally.ready_to_reveal(&commitments[2..]));
        let outcome = tally.evaluate(
            &commitments,
            &[
                a.reveal(NOW + 10),
                b.reveal(NOW + 10),
                two_faced.reveal(NOW + 10),
            ],
        );
        let proof = &outcome.equivocated[&two_faced.pubkey()];
        let what = proof.verify().unwrap();
        assert_eq!(what.member, two_faced.pubkey());
        assert_eq!(what.job, job());
        assert!(!outcome.agreed.contains(&two_faced.pubkey()));
        assert!(!outcome.revealed.contains_key(&two_faced.pubkey()));
        assert_eq!(outcome.agreed.len(), 2);

        // The proof travels as an event signed by anyone, and parses back.
        let publisher = key(0x40);
        let event = proof
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&publisher)
            .unwrap();
        assert_eq!(EquivocationProof::from_event(&event).unwrap(), *proof);
        // Argument order does not matter: one spelling.
        assert_eq!(
            EquivocationProof::new(&second, &two_faced.commitment).unwrap(),
            *proof
        );

        // Not proofs: same digest, different members, a forged event, wrong tags.
        assert!(matches!(
            EquivocationProof::new(&two_faced.commitment, &two_faced.commitment),
            Err(AgreementError::NotAnEquivocation(_))
        ));
        assert!(matches!(
            EquivocationProof::new(&a.commitment, &second),
            Err(AgreementError::NotAnEquivocation(_))
        ));
        let mut forged: serde_json::Value = serde_json::to_value(second.event()).unwrap();
        forged["content"] = "x".into();
        let forged: Event = serde_json::from_value(forged).unwrap();
        assert!(matches!(
            EquivocationProof::from_events(two_faced.commitment.event().clone(), forged),
            Err(AgreementError::InvalidSignature(_))
        ));
        let base = tags_of(&event);
        let wrong_p = replace(&base, "p", &["p", &a.pubkey().to_hex()]);
        let err = EquivocationProof::from_event(&event_with_tags(
            EQUIVOCATION_PROOF,
            &wrong_p,
            &event.content,
            &publisher,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("`p`"), "{err}");
        let err = EquivocationProof::from_event(&event_with_tags(
            EQUIVOCATION_PROOF,
            &drop(&base, "quorum"),
            &event.content,
            &publisher,
        ))
        .unwrap_err();
        assert_eq!(err, AgreementError::MissingTag("quorum"));
        let one = serde_json::to_string(&[second.event()]).unwrap();
        let err = EquivocationProof::from_event(&event_with_tags(
            EQUIVOCATION_PROOF,
            &base,
            &one,
            &publisher,
        ))
        .unwrap_err();
        assert!(matches!(err, AgreementError::MalformedContent(_)), "{err}");
    }

    #[test]
    fn outsiders_silent_members_and_other_jobs_are_reported_not_counted() {
        let r = result(&[("out/app", 1)]);
        let a = Member::new(key(1), r.clone(), NOW);
        let b = Member::new(key(2), r.clone(), NOW);
        let quiet = Member::new(key(3), r.clone(), NOW);
        let outsider = Member::new(key(7), result(&[("out/app", 6)]), NOW);
        let roster = roster(&[&a, &b, &quiet], 2);
        let mut elsewhere = a.commitment.commitment().clone();
        elsewhere.job = EventId::all_zeros();
        let elsewhere = commit_event(&elsewhere, &a.keys, NOW + 1);
        let tally = Tally::new(roster, job());
        // An outsider's commitment does not make anyone ready.
        assert!(!tally.ready_to_reveal(&[a.commitment.clone(), outsider.commitment.clone()]));
        let outcome = tally.evaluate(
            &[
                a.commitment.clone(),
                b.commitment.clone(),
                quiet.commitment.clone(),
                outsider.commitment.clone(),
                elsewhere.clone(),
            ],
            &[
                a.reveal(NOW + 10),
                b.reveal(NOW + 10),
                outsider.reveal(NOW + 10),
            ],
        );
        assert_eq!(outcome.outsiders, [outsider.pubkey()].into_iter().collect());
        assert_eq!(outcome.silent, [quiet.pubkey()].into_iter().collect());
        assert_eq!(outcome.files["out/app"].votes.len(), 1);
        assert_eq!(outcome.agreed.len(), 2);
        assert_eq!(outcome.ignored.len(), 1);
        assert_eq!(outcome.ignored[0].0, elsewhere.id());
    }

    #[test]
    fn agreement_is_per_file() {
        // All agree on `app`; `log.txt` is non-deterministic (three different hashes).
        let a = Member::new(key(1), result(&[("app", 1), ("log.txt", 11)]), NOW);
        let b = Member::new(key(2), result(&[("app", 1), ("log.txt", 12)]), NOW);
        let c = Member::new(key(3), result(&[("app", 1), ("log.txt", 13)]), NOW);
        let outcome = tally(&[&a, &b, &c], 2);
        assert_eq!(outcome.agreed_result(), result(&[("app", 1)]));
        assert_eq!(outcome.unagreed_files(), ["log.txt"]);
        assert_eq!(outcome.agreed.len(), 3);
        assert!(outcome.disagreed.is_empty());
        assert!(outcome.is_attestable());

        // Two agree on `sig`, the third reports another hash for it, lacks `doc` and adds an
        // extra file nobody else has.
        let a = Member::new(key(1), result(&[("app", 1), ("sig", 2), ("doc", 3)]), NOW);
        let b = Member::new(key(2), result(&[("app", 1), ("sig", 2), ("doc", 3)]), NOW);
        let c = Member::new(key(3), result(&[("app", 1), ("sig", 9), ("extra", 4)]), NOW);
        let outcome = tally(&[&a, &b, &c], 2);
        assert_eq!(
            outcome.agreed_result(),
            result(&[("app", 1), ("sig", 2), ("doc", 3)])
        );
        assert_eq!(outcome.unagreed_files(), ["extra"]);
        assert_eq!(
            outcome.disagreed[&c.pubkey()],
            BTreeMap::from([("doc".to_string(), None), ("sig".to_string(), Some(sha(9)))])
        );

        // Agreement split across members: nobody backs both agreed files → no attestation.
        let a = Member::new(key(1), result(&[("x", 1), ("y", 2)]), NOW);
        let b = Member::new(key(2), result(&[("x", 1), ("y", 9)]), NOW);
        let c = Member::new(key(3), result(&[("x", 8), ("y", 2)]), NOW);
        let outcome = tally(&[&a, &b, &c], 2);
        assert_eq!(outcome.agreed_result(), result(&[("x", 1), ("y", 2)]));
        assert_eq!(outcome.agreed, [a.pubkey()].into_iter().collect());
        assert!(!outcome.is_attestable());
    }

    #[test]
    fn minority_thresholds_cannot_agree_on_two_hashes() {
        let a = Member::new(key(1), result(&[("app", 1)]), NOW);
        let b = Member::new(key(2), result(&[("app", 1)]), NOW);
        let c = Member::new(key(3), result(&[("app", 2)]), NOW);
        let d = Member::new(key(4), result(&[("app", 2)]), NOW);
        let outcome = tally(&[&a, &b, &c, &d], 2);
        assert_eq!(outcome.files["app"].agreed, None);
        assert!(!outcome.is_attestable());
    }

    #[test]
    fn attestation_is_derived_from_the_tally_and_round_trips() {
        let r = result(&[("out/b", 2), ("out/a", 1)]);
        let a = Member::new(key(1), r.clone(), NOW);
        let b = Member::new(key(2), r.clone(), NOW);
        let c = Member::new(key(3), result(&[("out/a", 1), ("out/b", 7)]), NOW);
        let commitments = vec![
            a.commitment.clone(),
            b.commitment.clone(),
            c.commitment.clone(),
        ];
        let reveals = vec![a.reveal(NOW + 10), b.reveal(NOW + 30), c.reveal(NOW + 50)];
        let outcome = Tally::new(roster(&[&a, &b, &c], 2), job()).evaluate(&commitments, &reveals);
        let mandate = EventId::from_byte_array([0x3a; 32]);
        let (att, created_at) = QuorumAttestation::from_tally(&outcome, &basis(mandate)).unwrap();
        // The latest reveal of the agreeing members, not the liar's.
        assert_eq!(created_at, Timestamp::from(NOW + 30));
        assert_eq!(att.files, r);
        assert_eq!(att.agreed, [a.pubkey(), b.pubkey()].into_iter().collect());
        let floor = Timestamp::from(0);
        assert_eq!(outcome.supports(&att, created_at, floor), Ok(()));
        assert!(
            outcome
                .supports(&att, Timestamp::from(NOW + 50), floor)
                .is_err()
        );
        let mut padded = att.clone();
        padded.agreed.insert(c.pubkey());
        assert!(outcome.supports(&padded, created_at, floor).is_err());
        let mut short = att.clone();
        short.agreed.remove(&a.pubkey());
        assert!(
            outcome
                .supports(&short, created_at, floor)
                .unwrap_err()
                .contains("needed")
        );
        // It is never dated before the evidence it relies on.
        let mut later = basis(mandate);
        later.not_before = Timestamp::from(NOW + 40);
        let (_, floored) = QuorumAttestation::from_tally(&outcome, &later).unwrap();
        assert_eq!(floored, Timestamp::from(NOW + 40));
        assert_eq!(outcome.supports(&att, floored, later.not_before), Ok(()));
        assert!(
            outcome
                .supports(&att, created_at, later.not_before)
                .is_err()
        );

        // Deterministic: two members building it get the same id; the quorum key signs it.
        let q = key(0x99);
        let one = att.unsigned(q.public_key(), created_at).unwrap();
        let (again, _) = QuorumAttestation::from_tally(&outcome, &basis(mandate)).unwrap();
        let two = again.unsigned(q.public_key(), created_at).unwrap();
        assert_eq!(one.id, two.id);
        assert!(one.id.is_some());
        let event = one.sign_with_keys(&q).unwrap();
        assert_eq!(event.created_at, created_at);
        assert_eq!(QuorumAttestation::from_event(&event).unwrap(), att);
        let tags = tags_of(&event);
        assert_eq!(tags[0], vec!["e".to_string(), job().to_hex()]);
        assert_eq!(tags[1][3], "mandate");
        let p: Vec<&Vec<String>> = tags.iter().filter(|t| t[0] == "p").collect();
        assert!(
            p.iter()
                .all(|t| t.len() == 4 && t[2].is_empty() && t[3] == "agreed")
        );
        assert!(p[0][1] < p[1][1]);
    }

    #[test]
    fn malformed_attestations_name_the_tag() {
        let q = key(0x99);
        let att = QuorumAttestation {
            job: job(),
            mandate: EventId::from_byte_array([0x3a; 32]),
            commit: COMMIT.into(),
            files: result(&[("a", 1), ("b", 2)]),
            agreed: [key(1).public_key(), key(2).public_key()]
                .into_iter()
                .collect(),
            evidence: None,
            wrapped: None,
        };
        let good = att
            .to_event_builder(Timestamp::from(NOW))
            .unwrap()
            .sign_with_keys(&q)
            .unwrap();
        let base = tags_of(&good);
        let mut reversed_x = base.clone();
        let xs: Vec<usize> = (0..base.len()).filter(|i| base[*i][0] == "x").collect();
        reversed_x.swap(xs[0], xs[1]);
        let mut reversed_p = base.clone();
        let ps: Vec<usize> = (0..base.len()).filter(|i| base[*i][0] == "p").collect();
        reversed_p.swap(ps[0], ps[1]);
        let member = key(1).public_key().to_hex();
        let mandate_marked: Vec<Vec<String>> = base
            .iter()
            .filter(|t| !(t[0] == "e" && t.get(3).is_some()))
            .cloned()
            .collect();
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (mandate_marked, "marker `mandate`"),
            (drop(&base, "c"), "missing `c`"),
            (replace(&base, "c", &["c", "main"]), "`c`"),
            (drop(&base, "x"), "missing `x`"),
            (reversed_x, "`x`"),
            (drop(&base, "p"), "missing `p`"),
            (reversed_p, "`p`"),
            (replace(&base, "p", &["p", &member]), "`p`"),
            (replace(&base, "p", &["p", "nope", "", "agreed"]), "`p`"),
            (
                [
                    base.clone(),
                    vec![vec!["e".into(), job().to_hex(), "".into(), "seen".into()]],
                ]
                .concat(),
                "unexpected marker",
            ),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(QUORUM_ATTESTATION, &tags, "", &q);
            match QuorumAttestation::from_event(&event) {
                Ok(parsed) => {
                    assert!(needle.is_empty(), "{tags:?} parsed");
                    assert_eq!(parsed, att);
                }
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{needle}: {err}"
                ),
            }
        }
    }

    #[test]
    fn a_member_that_built_another_plan_votes_on_nothing() {
        let plan = sha(0x70);
        let r = result(&[("out/app", 1)]);
        let a = Member::new(key(1), r.clone(), NOW);
        let b = Member::new(key(2), r.clone(), NOW);
        let c = Member::new(key(3), r.clone(), NOW);
        let commitments = vec![
            a.commitment.clone(),
            b.commitment.clone(),
            c.commitment.clone(),
        ];
        let with_plan = |m: &Member, plan: Option<Sha256Hex>| {
            let reveal = Reveal::new(
                &m.commitment,
                m.salt,
                m.result.clone(),
                Timestamp::from(NOW + 3600),
            )
            .with_plan(plan);
            let event = reveal
                .to_event_builder()
                .unwrap()
                .custom_created_at(Timestamp::from(NOW + 5))
                .sign_with_keys(&m.keys)
                .unwrap();
            let parsed = SignedReveal::from_event(&event).unwrap();
            assert_eq!(parsed.reveal().plan, plan);
            parsed
        };
        let reveals = vec![
            with_plan(&a, Some(plan)),
            with_plan(&b, Some(plan)),
            with_plan(&c, Some(sha(0x71))),
        ];
        let outcome = Tally::new(roster(&[&a, &b, &c], 2), job())
            .expecting_plan(Some(plan))
            .evaluate(&commitments, &reveals);
        assert_eq!(
            outcome.agreed,
            [a.pubkey(), b.pubkey()].into_iter().collect()
        );
        assert_eq!(
            outcome.disagreed[&c.pubkey()][PLAN_ENTRY],
            Some(sha(0x71)),
            "same bytes, another plan: not agreeing"
        );
        assert_eq!(outcome.files["out/app"].votes[&sha(1)].len(), 2);
        // Without an expectation, the plan is not judged.
        let outcome = Tally::new(roster(&[&a, &b, &c], 2), job()).evaluate(&commitments, &reveals);
        assert_eq!(outcome.agreed.len(), 3);
    }

    #[test]
    fn the_attestation_names_its_evidence_and_parses_it_strictly() {
        let q = key(0x99);
        let evidence = JobEvidence {
            announcement: EventId::from_byte_array([0x51; 32]),
            state: EventId::from_byte_array([0x52; 32]),
            pipeline: ".quorum/pipeline.yml".into(),
            plan_hash: sha(0x70),
            job: "build".into(),
        };
        let att = QuorumAttestation {
            job: job(),
            mandate: EventId::from_byte_array([0x3a; 32]),
            commit: COMMIT.into(),
            files: result(&[("a", 1)]),
            agreed: [key(1).public_key(), key(2).public_key()]
                .into_iter()
                .collect(),
            evidence: Some(evidence.clone()),
            wrapped: Some(5050),
        };
        let event = att
            .to_event_builder(Timestamp::from(NOW))
            .unwrap()
            .sign_with_keys(&q)
            .unwrap();
        assert_eq!(QuorumAttestation::from_event(&event).unwrap(), att);
        let tags = tags_of(&event);
        assert!(tags.contains(&vec![
            "pipeline".to_string(),
            ".quorum/pipeline.yml".into(),
            sha(0x70).to_hex()
        ]));
        assert!(tags.contains(&vec!["wrapper".to_string(), "5050".into()]));
        let no_job = drop(&tags, "job");
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (no_job, "needs all four"),
            (
                replace(&tags, "pipeline", &["pipeline", "p.yml"]),
                "`pipeline`",
            ),
            (
                replace(&tags, "pipeline", &["pipeline", "p.yml", "zz"]),
                "not a sha256",
            ),
            (replace(&tags, "wrapper", &["wrapper", "five"]), "`wrapper`"),
            (replace(&tags, "job", &["job", ""]), "`job`"),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(QUORUM_ATTESTATION, &tags, "", &q);
            let err = QuorumAttestation::from_event(&event)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
