//! Approval gates: a pipeline step that waits for `required` maintainers to sign off on exactly
//! these bytes (design §8).
//!
//! Three regular kinds of our own, outside the NIP-90 range so that relays store them and DVMs
//! do not mistake them for jobs, in the block 8700–8719 that no NIP, registry or spec we know
//! of claims (8000/8001 are NIP-43, 8333 is in registry-of-kinds):
//!
//! - 8701 *approval request*, by whoever runs the pipeline: `p`-tags the maintainers and names
//!   the repository, run, commit, artifacts (sha256 + name), builders, `required` count and a
//!   NIP-40 expiration.
//! - 8702 *approval* and 8703 *rejection*, by a maintainer (local key or NIP-46 bunker): they
//!   reference the request id **and repeat** its run, commit and every artifact hash, so a
//!   signature cannot be replayed onto another request or other bytes; they expire too.
//!
//! [`ApprovalTally::evaluate`] counts verdicts and gives every refused one a reason.
//! `docs/protocol.md` §12 has examples.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nostr::{Event, EventBuilder, EventId, Kind, PublicKey, Tag, Timestamp};

use crate::blossom::Sha256Hex;
use crate::nip34::{RepoCoordinate, is_object_id};
use crate::tags::custom_tag;

/// An approval request (regular).
pub const APPROVAL_REQUEST: Kind = Kind::Custom(8701);
/// A maintainer's approval of a request (regular).
pub const APPROVAL: Kind = Kind::Custom(8702);
/// A maintainer's rejection of a request (regular).
pub const REJECTION: Kind = Kind::Custom(8703);

const TAG_REPO: &str = "a";
const TAG_COMMIT: &str = "c";
const TAG_RUN: &str = "run";
const TAG_ARTIFACT: &str = "x";
const TAG_BUILDER: &str = "builder";
const TAG_REQUIRED: &str = "required";
const TAG_EXPIRATION: &str = "expiration";
const TAG_MAINTAINER: &str = "p";
const TAG_REQUEST: &str = "e";
const TAG_JOB: &str = "job";

/// Why an event is not a valid approval request, approval or rejection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApprovalError {
    #[error("kind {found} is not an {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
    #[error("invalid approval request event: {0}")]
    InvalidRequest(String),
}

type Result<T> = std::result::Result<T, ApprovalError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> ApprovalError {
    ApprovalError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

fn is_hex64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One artifact by name and content hash: `["x", SHA256, NAME]` (the hash first, so relays
/// index it and anyone can find the approvals of a file by its hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactDigest {
    pub name: String,
    pub sha256: Sha256Hex,
}

impl ArtifactDigest {
    pub fn new(name: impl Into<String>, sha256: Sha256Hex) -> Self {
        ArtifactDigest {
            name: name.into(),
            sha256,
        }
    }

    pub fn to_tag(&self) -> Tag {
        custom_tag(TAG_ARTIFACT, [self.sha256.to_hex(), self.name.clone()])
    }

    /// Parses the values after the tag name; the error is the reason, for a `x` tag error.
    pub(crate) fn parse(values: &[String]) -> std::result::Result<Self, String> {
        let hash = values.first().ok_or("no sha256")?;
        let sha256 = Sha256Hex::parse(hash)
            .map_err(|_| format!("{hash:?} is not a 64-hex lowercase sha256"))?;
        let name = values
            .get(1)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("artifact {hash} has no name"))?;
        Ok(ArtifactDigest::new(name.clone(), sha256))
    }
}

/// Sorts artifacts by name and refuses a name or a (name, hash) pair given twice.
fn canonical_artifacts(
    mut artifacts: Vec<ArtifactDigest>,
) -> std::result::Result<Vec<ArtifactDigest>, String> {
    artifacts.sort();
    for pair in artifacts.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(format!("artifact {:?} is listed twice", pair[0].name));
        }
    }
    Ok(artifacts)
}

fn single_value<'a>(event: &'a Event, name: &'static str) -> Result<&'a str> {
    let mut found = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|values| values[0] == name);
    let tag = found.next().ok_or(ApprovalError::MissingTag(name))?;
    if found.next().is_some() {
        return Err(ApprovalError::Duplicate(name));
    }
    tag.get(1)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| malformed(name, "no value"))
}

fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => ApprovalError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn parse_commit(event: &Event) -> Result<String> {
    let commit = single_value(event, TAG_COMMIT)?;
    if !is_object_id(commit) {
        return Err(malformed(
            "c",
            format!("{commit:?} is not a full 40- or 64-hex lowercase commit id"),
        ));
    }
    Ok(commit.to_string())
}

fn parse_run(event: &Event) -> Result<String> {
    let run = single_value(event, TAG_RUN)?;
    if !is_hex64(run) {
        return Err(malformed("run", format!("{run:?} is not a 64-hex run id")));
    }
    Ok(run.to_string())
}

fn parse_expiration(event: &Event) -> Result<Timestamp> {
    let at = single_value(event, TAG_EXPIRATION)?;
    Timestamp::from_str(at)
        .map_err(|_| malformed("expiration", format!("{at:?} is not a Unix timestamp")))
}

fn parse_artifacts(event: &Event) -> Result<Vec<ArtifactDigest>> {
    let artifacts = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|values| values[0] == TAG_ARTIFACT)
        .map(|values| ArtifactDigest::parse(&values[1..]).map_err(|e| malformed("x", e)))
        .collect::<Result<Vec<_>>>()?;
    if artifacts.is_empty() {
        return Err(ApprovalError::MissingTag("x"));
    }
    canonical_artifacts(artifacts).map_err(|e| malformed("x", e))
}

fn parse_pubkey(tag: &'static str, hex: &str) -> Result<PublicKey> {
    PublicKey::from_hex(hex)
        .map_err(|_| malformed(tag, format!("{hex:?} is not a 64-hex public key")))
}

/// What the pipeline asks maintainers to approve (kind 8701).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The repository (`a`).
    pub repo: RepoCoordinate,
    /// The run id (64 hex, docs/protocol.md §9).
    pub run: String,
    /// The commit the artifacts were built from (`c`).
    pub commit: String,
    /// What is to be approved, sorted by name.
    pub artifacts: Vec<ArtifactDigest>,
    /// The DVMs that built the artifacts (`builder`); shown to the maintainer before signing.
    pub builders: Vec<PublicKey>,
    /// The maintainers asked (`p`).
    pub maintainers: Vec<PublicKey>,
    /// How many distinct maintainers must approve.
    pub required: u32,
    /// NIP-40: the gate fails if not approved by then.
    pub expiration: Timestamp,
    /// Human-readable description for the maintainer.
    pub content: String,
    /// The pipeline's approval job this request is for (`job`). A quorum that signs a release
    /// only after the gates it depends on finds each gate's request by it (§15.9).
    pub job: Option<String>,
}

impl ApprovalRequest {
    /// Checks what the wire format cannot express: at least one artifact and maintainer,
    /// `required` in 1..=maintainers, names unique.
    pub fn validate(&self) -> Result<()> {
        if self.maintainers.is_empty() {
            return Err(ApprovalError::MissingTag("p"));
        }
        if self.required == 0 {
            return Err(malformed("required", "must be at least 1"));
        }
        let distinct: BTreeSet<_> = self.maintainers.iter().collect();
        if self.required as usize > distinct.len() {
            return Err(malformed(
                "required",
                format!(
                    "{} approvals can never come from {} maintainers",
                    self.required,
                    distinct.len()
                ),
            ));
        }
        if !is_object_id(&self.commit) {
            return Err(malformed(
                "c",
                format!(
                    "{:?} is not a full 40- or 64-hex lowercase commit id",
                    self.commit
                ),
            ));
        }
        if !is_hex64(&self.run) {
            return Err(malformed(
                "run",
                format!("{:?} is not a 64-hex run id", self.run),
            ));
        }
        if self.artifacts.is_empty() {
            return Err(ApprovalError::MissingTag("x"));
        }
        canonical_artifacts(self.artifacts.clone()).map_err(|e| malformed("x", e))?;
        Ok(())
    }

    /// The request, ready to sign; fails if [`ApprovalRequest::validate`] does.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        self.validate()?;
        let mut tags = vec![
            custom_tag(TAG_REPO, [self.repo.to_string()]),
            custom_tag(TAG_RUN, [self.run.clone()]),
            custom_tag(TAG_COMMIT, [self.commit.clone()]),
        ];
        let artifacts =
            canonical_artifacts(self.artifacts.clone()).map_err(|e| malformed("x", e))?;
        tags.extend(artifacts.iter().map(ArtifactDigest::to_tag));
        tags.extend(
            self.builders
                .iter()
                .map(|b| custom_tag(TAG_BUILDER, [b.to_hex()])),
        );
        tags.extend(self.maintainers.iter().copied().map(Tag::public_key));
        tags.push(custom_tag(TAG_REQUIRED, [self.required.to_string()]));
        if let Some(job) = &self.job {
            tags.push(custom_tag(TAG_JOB, [job.clone()]));
        }
        tags.push(Tag::expiration(self.expiration));
        Ok(EventBuilder::new(APPROVAL_REQUEST, self.content.clone())
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        if event.kind != APPROVAL_REQUEST {
            return Err(ApprovalError::WrongKind {
                expected: "approval request (8701)",
                found: event.kind.as_u16(),
            });
        }
        let repo = single_value(event, TAG_REPO)?;
        let repo = RepoCoordinate::from_str(repo).map_err(|e| malformed("a", e.to_string()))?;
        let required = single_value(event, TAG_REQUIRED)?;
        let required = required
            .parse()
            .map_err(|_| malformed("required", format!("{required:?} is not a count")))?;
        let mut builders = Vec::new();
        let mut maintainers = Vec::new();
        for values in event.tags.iter().map(Tag::as_slice) {
            let value = values.get(1).map(String::as_str).unwrap_or_default();
            match values[0].as_str() {
                TAG_BUILDER => builders.push(parse_pubkey("builder", value)?),
                TAG_MAINTAINER => maintainers.push(parse_pubkey("p", value)?),
                _ => {}
            }
        }
        let request = ApprovalRequest {
            repo,
            run: parse_run(event)?,
            commit: parse_commit(event)?,
            artifacts: parse_artifacts(event)?,
            builders,
            maintainers,
            required,
            expiration: parse_expiration(event)?,
            content: event.content.clone(),
            job: optional_value(event, TAG_JOB)?,
        };
        request.validate()?;
        Ok(request)
    }
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn kind(self) -> Kind {
        match self {
            Decision::Approve => APPROVAL,
            Decision::Reject => REJECTION,
        }
    }

    pub fn from_kind(kind: Kind) -> Option<Self> {
        if kind == APPROVAL {
            Some(Decision::Approve)
        } else if kind == REJECTION {
            Some(Decision::Reject)
        } else {
            None
        }
    }
}

/// A maintainer's approval (8702) or rejection (8703) of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// The request's event id (`e`).
    pub request: EventId,
    /// The request's author (`p`), so the pipeline hears of it.
    pub requester: PublicKey,
    /// Repeated from the request.
    pub run: String,
    /// Repeated from the request.
    pub commit: String,
    /// Repeated from the request: every artifact, sorted by name.
    pub artifacts: Vec<ArtifactDigest>,
    /// NIP-40; required.
    pub expiration: Timestamp,
    /// A comment (for a rejection: why).
    pub content: String,
}

impl Verdict {
    /// A verdict on `request` (a parsed request and its event) that repeats what it names.
    pub fn on(
        decision: Decision,
        request_event: &Event,
        request: &ApprovalRequest,
        expiration: Timestamp,
    ) -> Self {
        Verdict {
            decision,
            request: request_event.id,
            requester: request_event.pubkey,
            run: request.run.clone(),
            commit: request.commit.clone(),
            artifacts: request.artifacts.clone(),
            expiration,
            content: String::new(),
        }
    }

    pub fn with_content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }

    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let artifacts =
            canonical_artifacts(self.artifacts.clone()).map_err(|e| malformed("x", e))?;
        if artifacts.is_empty() {
            return Err(ApprovalError::MissingTag("x"));
        }
        let mut tags = vec![
            Tag::event(self.request),
            Tag::public_key(self.requester),
            custom_tag(TAG_RUN, [self.run.clone()]),
            custom_tag(TAG_COMMIT, [self.commit.clone()]),
        ];
        tags.extend(artifacts.iter().map(ArtifactDigest::to_tag));
        tags.push(Tag::expiration(self.expiration));
        Ok(
            EventBuilder::new(self.decision.kind(), self.content.clone())
                .tags(tags)
                .allow_self_tagging(),
        )
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        let decision = Decision::from_kind(event.kind).ok_or(ApprovalError::WrongKind {
            expected: "approval (8702) or rejection (8703)",
            found: event.kind.as_u16(),
        })?;
        let request = single_value(event, TAG_REQUEST)?;
        let request = EventId::from_hex(request)
            .map_err(|_| malformed("e", format!("{request:?} is not a 64-hex event id")))?;
        let requester = parse_pubkey("p", single_value(event, TAG_MAINTAINER)?)?;
        Ok(Verdict {
            decision,
            request,
            requester,
            run: parse_run(event)?,
            commit: parse_commit(event)?,
            artifacts: parse_artifacts(event)?,
            expiration: parse_expiration(event)?,
            content: event.content.clone(),
        })
    }
}

/// Why a verdict was not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The id or the signature does not verify.
    InvalidSignature,
    /// Not a well-formed approval or rejection.
    Malformed(String),
    /// The signer is not in the maintainer set.
    NotAMaintainer(PublicKey),
    /// It answers another request.
    OtherRequest(EventId),
    /// It names another run.
    OtherRun(String),
    /// It names another commit.
    OtherCommit(String),
    /// Its artifact list differs from the request's.
    OtherArtifacts(String),
    /// Its own expiration has passed.
    Expired(Timestamp),
    /// It was signed after the request expired.
    AfterRequestExpired,
    /// The same maintainer already has a counted verdict (`counted`).
    Duplicate { counted: EventId },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InvalidSignature => f.write_str("invalid id or signature"),
            Refusal::Malformed(e) => write!(f, "malformed: {e}"),
            Refusal::NotAMaintainer(pk) => write!(f, "{} is not a maintainer", pk.to_hex()),
            Refusal::OtherRequest(id) => write!(f, "answers another request ({})", id.to_hex()),
            Refusal::OtherRun(run) => write!(f, "names another run ({run})"),
            Refusal::OtherCommit(c) => write!(f, "names another commit ({c})"),
            Refusal::OtherArtifacts(why) => write!(f, "names other artifacts: {why}"),
            Refusal::Expired(at) => write!(f, "expired at {}", at.as_secs()),
            Refusal::AfterRequestExpired => f.write_str("signed after the request expired"),
            Refusal::Duplicate { counted } => write!(
                f,
                "the same maintainer's verdict {} is already counted",
                counted.to_hex()
            ),
        }
    }
}

/// Where a gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateStatus {
    /// `required` maintainers approved.
    Approved,
    /// So many maintainers rejected that `required` approvals can no longer be reached.
    Rejected,
    /// The request expired before enough approvals came.
    Expired,
    /// Still waiting.
    Pending,
}

/// The verdicts counted and refused for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyOutcome {
    pub approved_by: Vec<PublicKey>,
    pub rejected_by: Vec<PublicKey>,
    pub refused: Vec<(EventId, Refusal)>,
    pub required: u32,
    /// Distinct maintainers who could vote.
    pub electorate: usize,
    pub request_expired: bool,
}

impl TallyOutcome {
    pub fn status(&self) -> GateStatus {
        if self.approved_by.len() >= self.required as usize {
            GateStatus::Approved
        } else if self.electorate.saturating_sub(self.rejected_by.len()) < self.required as usize {
            GateStatus::Rejected
        } else if self.request_expired {
            GateStatus::Expired
        } else {
            GateStatus::Pending
        }
    }

    pub fn is_approved(&self) -> bool {
        self.status() == GateStatus::Approved
    }
}

/// Counts maintainers' verdicts on an approval request.
pub struct ApprovalTally;

impl ApprovalTally {
    /// Counts `verdicts` on `request` at time `now`. `maintainers` is the authoritative set
    /// (normally [`crate::nip34::maintainer_set`]), not the request's `p` tags: whoever runs
    /// the pipeline cannot widen it.
    ///
    /// Refused, each with a [`Refusal`]: bad id or signature; malformed; not by a maintainer;
    /// for another request, run, commit or artifact list (as a set of name + sha256, which must
    /// equal the request's exactly); expired at `now`; signed after the request expired; and
    /// every verdict but one per maintainer. A maintainer's rejection takes precedence over
    /// their approvals (withdrawing consent is always possible, re-granting it needs a new
    /// request); among several of the same decision the earliest (`created_at`, then lowest
    /// id) counts. The request itself must verify and parse, or this is an error.
    pub fn evaluate(
        request: &Event,
        verdicts: &[Event],
        maintainers: &[PublicKey],
        now: Timestamp,
    ) -> Result<TallyOutcome> {
        request
            .verify()
            .map_err(|e| ApprovalError::InvalidRequest(e.to_string()))?;
        let parsed = ApprovalRequest::from_event(request)?;
        let electorate: BTreeSet<PublicKey> = maintainers.iter().copied().collect();
        let mut refused = Vec::new();
        // Per maintainer: the valid verdicts, to pick one from.
        let mut valid: BTreeMap<PublicKey, Vec<(&Event, Decision)>> = BTreeMap::new();
        for event in verdicts {
            match Self::check(event, request, &parsed, &electorate, now) {
                Ok(decision) => valid
                    .entry(event.pubkey)
                    .or_default()
                    .push((event, decision)),
                Err(reason) => refused.push((event.id, reason)),
            }
        }
        let mut approved_by = Vec::new();
        let mut rejected_by = Vec::new();
        for (maintainer, mut list) in valid {
            list.sort_by_key(|(event, decision)| {
                (*decision != Decision::Reject, event.created_at, event.id)
            });
            let (counted, decision) = list[0];
            match decision {
                Decision::Approve => approved_by.push(maintainer),
                Decision::Reject => rejected_by.push(maintainer),
            }
            refused.extend(list[1..].iter().map(|(event, _)| {
                (
                    event.id,
                    Refusal::Duplicate {
                        counted: counted.id,
                    },
                )
            }));
        }
        Ok(TallyOutcome {
            approved_by,
            rejected_by,
            refused,
            required: parsed.required,
            electorate: electorate.len(),
            request_expired: now >= parsed.expiration,
        })
    }

    fn check(
        event: &Event,
        request_event: &Event,
        request: &ApprovalRequest,
        maintainers: &BTreeSet<PublicKey>,
        now: Timestamp,
    ) -> std::result::Result<Decision, Refusal> {
        if event.verify().is_err() {
            return Err(Refusal::InvalidSignature);
        }
        let verdict = Verdict::from_event(event).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if !maintainers.contains(&event.pubkey) {
            return Err(Refusal::NotAMaintainer(event.pubkey));
        }
        if verdict.request != request_event.id {
            return Err(Refusal::OtherRequest(verdict.request));
        }
        if verdict.run != request.run {
            return Err(Refusal::OtherRun(verdict.run));
        }
        if verdict.commit != request.commit {
            return Err(Refusal::OtherCommit(verdict.commit));
        }
        if verdict.artifacts != request.artifacts {
            return Err(Refusal::OtherArtifacts(artifact_difference(
                &verdict.artifacts,
                &request.artifacts,
            )));
        }
        if now >= verdict.expiration {
            return Err(Refusal::Expired(verdict.expiration));
        }
        if event.created_at >= request.expiration {
            return Err(Refusal::AfterRequestExpired);
        }
        Ok(verdict.decision)
    }
}

fn artifact_difference(approved: &[ArtifactDigest], requested: &[ArtifactDigest]) -> String {
    let approved: BTreeSet<_> = approved.iter().collect();
    let requested: BTreeSet<_> = requested.iter().collect();
    let describe = |a: &ArtifactDigest| format!("{} {}", a.name, a.sha256);
    let extra: Vec<String> = approved
        .difference(&requested)
        .map(|a| describe(a))
        .collect();
    let missing: Vec<String> = requested
        .difference(&approved)
        .map(|a| describe(a))
        .collect();
    let mut parts = Vec::new();
    if !extra.is_empty() {
        parts.push(format!("not requested: {}", extra.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("not covered: {}", missing.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const OTHER_COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn run_id() -> String {
        "5f".repeat(32)
    }

    fn sha(byte: u8) -> Sha256Hex {
        Sha256Hex::from_bytes([byte; 32])
    }

    struct Fixture {
        pipeline: Keys,
        maintainers: Vec<Keys>,
        request: ApprovalRequest,
        request_event: Event,
    }

    fn fixture() -> Fixture {
        let pipeline = Keys::generate();
        let maintainers: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
        let request = ApprovalRequest {
            repo: RepoCoordinate::new(maintainers[0].public_key(), "app"),
            run: run_id(),
            commit: COMMIT.into(),
            artifacts: vec![
                ArtifactDigest::new("out/app", sha(1)),
                ArtifactDigest::new("out/app.sig", sha(2)),
            ],
            builders: vec![Keys::generate().public_key(), Keys::generate().public_key()],
            maintainers: maintainers.iter().map(Keys::public_key).collect(),
            required: 2,
            expiration: Timestamp::from(NOW + 3600),
            content: "release v1.0.0?".into(),
            job: Some("approve".into()),
        };
        let request_event = request
            .to_event_builder()
            .unwrap()
            .custom_created_at(Timestamp::from(NOW - 60))
            .sign_with_keys(&pipeline)
            .unwrap();
        Fixture {
            pipeline,
            maintainers,
            request,
            request_event,
        }
    }

    impl Fixture {
        fn verdict(&self, decision: Decision) -> Verdict {
            Verdict::on(
                decision,
                &self.request_event,
                &self.request,
                Timestamp::from(NOW + 600),
            )
        }

        fn sign(&self, verdict: &Verdict, keys: &Keys, at: u64) -> Event {
            verdict
                .to_event_builder()
                .unwrap()
                .custom_created_at(Timestamp::from(at))
                .sign_with_keys(keys)
                .unwrap()
        }

        fn electorate(&self) -> Vec<PublicKey> {
            self.maintainers.iter().map(Keys::public_key).collect()
        }

        fn tally(&self, verdicts: &[Event]) -> TallyOutcome {
            ApprovalTally::evaluate(
                &self.request_event,
                verdicts,
                &self.electorate(),
                Timestamp::from(NOW),
            )
            .unwrap()
        }
    }

    #[test]
    fn request_round_trips() {
        let f = fixture();
        let parsed = ApprovalRequest::from_event(&f.request_event).unwrap();
        assert_eq!(parsed, f.request);
        let p_tags = f.request_event.tags.public_keys().count();
        assert_eq!(p_tags, 3);
        // Artifacts are written sorted, whatever order they were given in.
        let mut shuffled = f.request.clone();
        shuffled.artifacts.reverse();
        let event = shuffled
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&f.pipeline)
            .unwrap();
        assert_eq!(
            ApprovalRequest::from_event(&event).unwrap().artifacts,
            f.request.artifacts
        );
    }

    #[test]
    fn verdicts_round_trip() {
        let f = fixture();
        for decision in [Decision::Approve, Decision::Reject] {
            let verdict = f.verdict(decision).with_content("looks good");
            let event = f.sign(&verdict, &f.maintainers[0], NOW);
            assert_eq!(event.kind, decision.kind());
            assert_eq!(Verdict::from_event(&event).unwrap(), verdict);
        }
    }

    #[test]
    fn bad_requests_are_refused_by_construction() {
        let f = fixture();
        let mut zero = f.request.clone();
        zero.required = 0;
        assert!(zero.to_event_builder().is_err());
        let mut too_many = f.request.clone();
        too_many.required = 4;
        let err = too_many.to_event_builder().unwrap_err();
        assert!(err.to_string().contains("`required`"), "{err}");
        let mut twice = f.request.clone();
        twice.artifacts.push(ArtifactDigest::new("out/app", sha(9)));
        assert!(
            twice
                .to_event_builder()
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let mut none = f.request.clone();
        none.artifacts.clear();
        assert_eq!(
            none.to_event_builder().unwrap_err(),
            ApprovalError::MissingTag("x")
        );
    }

    #[test]
    fn malformed_requests_name_the_tag() {
        let keys = Keys::generate();
        let pk = keys.public_key().to_hex();
        let repo = format!("30617:{pk}:app");
        let run = run_id();
        let x = sha(1).to_hex();
        let base: Vec<Vec<String>> = vec![
            vec!["a".into(), repo],
            vec!["run".into(), run],
            vec!["c".into(), COMMIT.into()],
            vec!["x".into(), x.clone(), "out/app".into()],
            vec!["p".into(), pk.clone()],
            vec!["required".into(), "1".into()],
            vec!["expiration".into(), "1900000000".into()],
        ];
        let replace = |name: &str, value: Vec<&str>| -> Vec<Vec<String>> {
            base.iter()
                .map(|t| {
                    if t[0] == name {
                        value.iter().map(|s| s.to_string()).collect()
                    } else {
                        t.clone()
                    }
                })
                .collect()
        };
        let drop = |name: &str| -> Vec<Vec<String>> {
            base.iter().filter(|t| t[0] != name).cloned().collect()
        };
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (drop("a"), "missing `a`"),
            (replace("a", vec!["a", "30617:zz:app"]), "`a`"),
            (drop("c"), "missing `c`"),
            (replace("c", vec!["c", "abc"]), "`c`"),
            (replace("run", vec!["run", "abc"]), "`run`"),
            (drop("x"), "missing `x`"),
            (replace("x", vec!["x", "nothex", "out/app"]), "`x`"),
            (replace("x", vec!["x", &x]), "`x`"),
            (drop("p"), "missing `p`"),
            (replace("p", vec!["p", "bob"]), "`p`"),
            (replace("required", vec!["required", "two"]), "`required`"),
            (replace("required", vec!["required", "2"]), "`required`"),
            (drop("expiration"), "missing `expiration`"),
            (
                replace("expiration", vec!["expiration", "soon"]),
                "`expiration`",
            ),
        ];
        for (tags, needle) in cases {
            let event = EventBuilder::new(APPROVAL_REQUEST, "")
                .tags(tags.iter().map(|t| Tag::parse(t.clone()).unwrap()))
                .allow_self_tagging()
                .sign_with_keys(&keys)
                .unwrap();
            match ApprovalRequest::from_event(&event) {
                Ok(_) => assert!(needle.is_empty(), "{tags:?} parsed"),
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{tags:?}: {err}"
                ),
            }
        }
        let mut doubled = base.clone();
        doubled.push(vec!["c".into(), COMMIT.into()]);
        let event = EventBuilder::new(APPROVAL_REQUEST, "")
            .tags(doubled.iter().map(|t| Tag::parse(t.clone()).unwrap()))
            .allow_self_tagging()
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(
            ApprovalRequest::from_event(&event),
            Err(ApprovalError::Duplicate("c"))
        );
    }

    #[test]
    fn two_of_three_approve() {
        let f = fixture();
        let approve = f.verdict(Decision::Approve);
        let a = f.sign(&approve, &f.maintainers[0], NOW - 10);
        let b = f.sign(&approve, &f.maintainers[1], NOW - 5);
        let outcome = f.tally(std::slice::from_ref(&a));
        assert_eq!(outcome.status(), GateStatus::Pending);
        let outcome = f.tally(&[a, b]);
        assert_eq!(outcome.status(), GateStatus::Approved);
        assert!(outcome.is_approved());
        assert_eq!(outcome.approved_by.len(), 2);
        assert!(outcome.refused.is_empty());
    }

    #[test]
    fn every_bad_verdict_is_refused_with_a_reason() {
        let f = fixture();
        let approve = f.verdict(Decision::Approve);
        let stranger = Keys::generate();
        let m = &f.maintainers;

        let not_maintainer = f.sign(&approve, &stranger, NOW);
        let mut other = approve.clone();
        other.request = EventId::all_zeros();
        let other_request = f.sign(&other, &m[0], NOW);
        let mut other = approve.clone();
        other.commit = OTHER_COMMIT.into();
        let other_commit = f.sign(&other, &m[0], NOW);
        let mut other = approve.clone();
        other.run = "ab".repeat(32);
        let other_run = f.sign(&other, &m[0], NOW);
        let mut other = approve.clone();
        other.artifacts[0].sha256 = sha(7);
        let other_bytes = f.sign(&other, &m[0], NOW);
        let mut other = approve.clone();
        other.artifacts.pop();
        let fewer = f.sign(&other, &m[0], NOW);
        let mut other = approve.clone();
        other.expiration = Timestamp::from(NOW);
        let expired = f.sign(&other, &m[0], NOW - 100);
        let late = f.sign(&approve, &m[0], NOW + 3600);
        let good = f.sign(&approve, &m[1], NOW - 20);
        let duplicate = f.sign(&approve, &m[1], NOW - 10);
        let mut forged: serde_json::Value =
            serde_json::to_value(f.sign(&approve, &m[2], NOW)).unwrap();
        forged["content"] = "tampered".into();
        let forged: Event = serde_json::from_value(forged).unwrap();
        let wrong_kind = EventBuilder::text_note("lgtm")
            .sign_with_keys(&m[2])
            .unwrap();

        let outcome = f.tally(&[
            not_maintainer.clone(),
            other_request.clone(),
            other_commit.clone(),
            other_run.clone(),
            other_bytes.clone(),
            fewer.clone(),
            expired.clone(),
            late.clone(),
            good.clone(),
            duplicate.clone(),
            forged.clone(),
            wrong_kind.clone(),
        ]);
        assert_eq!(outcome.approved_by, vec![m[1].public_key()]);
        assert_eq!(outcome.status(), GateStatus::Pending);
        let reason = |id: EventId| {
            outcome
                .refused
                .iter()
                .find(|(refused, _)| *refused == id)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("{id} not refused"))
        };
        assert_eq!(
            reason(not_maintainer.id),
            Refusal::NotAMaintainer(stranger.public_key())
        );
        assert_eq!(
            reason(other_request.id),
            Refusal::OtherRequest(EventId::all_zeros())
        );
        assert_eq!(
            reason(other_commit.id),
            Refusal::OtherCommit(OTHER_COMMIT.into())
        );
        assert!(matches!(reason(other_run.id), Refusal::OtherRun(_)));
        let why = reason(other_bytes.id).to_string();
        assert!(
            why.contains("not requested") && why.contains("not covered"),
            "{why}"
        );
        assert!(
            reason(fewer.id)
                .to_string()
                .contains("not covered: out/app.sig")
        );
        assert_eq!(reason(expired.id), Refusal::Expired(Timestamp::from(NOW)));
        assert_eq!(reason(late.id), Refusal::AfterRequestExpired);
        assert_eq!(
            reason(duplicate.id),
            Refusal::Duplicate { counted: good.id }
        );
        assert_eq!(reason(forged.id), Refusal::InvalidSignature);
        assert!(matches!(reason(wrong_kind.id), Refusal::Malformed(_)));
        assert_eq!(outcome.refused.len(), 11);
    }

    #[test]
    fn rejections_take_precedence_and_can_make_the_gate_fail() {
        let f = fixture();
        let approve = f.verdict(Decision::Approve);
        let reject = f
            .verdict(Decision::Reject)
            .with_content("unexpected binary size");
        let m = &f.maintainers;
        let a0 = f.sign(&approve, &m[0], NOW - 30);
        let r0 = f.sign(&reject, &m[0], NOW - 20);
        let r1 = f.sign(&reject, &m[1], NOW - 10);
        let a2 = f.sign(&approve, &m[2], NOW - 10);
        let outcome = f.tally(&[a0.clone(), r0.clone(), a2]);
        assert_eq!(outcome.rejected_by, vec![m[0].public_key()]);
        assert_eq!(
            outcome.refused,
            vec![(a0.id, Refusal::Duplicate { counted: r0.id })]
        );
        // 3 maintainers, 2 required: one rejection still leaves a path.
        assert_eq!(outcome.status(), GateStatus::Pending);
        let outcome = f.tally(&[r0, r1]);
        assert_eq!(outcome.status(), GateStatus::Rejected);
    }

    #[test]
    fn the_maintainer_set_is_authoritative_and_expiry_ends_the_gate() {
        let f = fixture();
        let approve = f.verdict(Decision::Approve);
        let a = f.sign(&approve, &f.maintainers[0], NOW - 10);
        // Someone the request p-tags but the caller's set does not hold is refused.
        let outcome = ApprovalTally::evaluate(
            &f.request_event,
            std::slice::from_ref(&a),
            &[f.maintainers[1].public_key(), f.maintainers[2].public_key()],
            Timestamp::from(NOW),
        )
        .unwrap();
        assert!(matches!(outcome.refused[0].1, Refusal::NotAMaintainer(_)));
        let outcome = ApprovalTally::evaluate(
            &f.request_event,
            &[a],
            &f.electorate(),
            Timestamp::from(NOW + 3600),
        )
        .unwrap();
        assert!(outcome.request_expired);
        assert_eq!(outcome.status(), GateStatus::Expired);
    }

    #[test]
    fn a_forged_request_is_an_error() {
        let f = fixture();
        let mut json: serde_json::Value = serde_json::to_value(&f.request_event).unwrap();
        json["content"] = "other".into();
        let forged: Event = serde_json::from_value(json).unwrap();
        assert!(matches!(
            ApprovalTally::evaluate(&forged, &[], &f.electorate(), Timestamp::from(NOW)),
            Err(ApprovalError::InvalidRequest(_))
        ));
    }
}
