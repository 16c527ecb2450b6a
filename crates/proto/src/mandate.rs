//! The mandate (kind 8704): a maintainer's signed statement that a FROST quorum key may act for a
//! pipeline of a repository (design §6.1).
//!
//! A mandate names the repository (`a`), the pipeline file and optionally the jobs it covers, the
//! quorum's group public key, each member DVM with its FROST share index, the threshold `t` of
//! `n`, how the key is made (`dkg` or `dealer`; `refresh` asks the members to renew their shares
//! of an existing key), the event kinds the quorum may sign (`allow`), and a NIP-40 expiration,
//! which is required. Consumers trust a quorum key only through a mandate: [`select_mandate`]
//! picks the one that counts, given the repository's maintainer set (NIP-34,
//! [`crate::nip34::maintainer_set`]), which this crate cannot fetch.
//!
//! `t > n/2` is required unless the caller explicitly allows a minority threshold
//! ([`ThresholdRule::AllowMinority`]): with `2t ≤ n`, two disjoint sets of `t` members can each
//! "agree" on a different result for the same job and both sets can sign, so the quorum key would
//! vouch for two conflicting results. With a majority any two signing sets share a member, and an
//! honest member signs only one result per job.
//!
//! `docs/protocol.md` §15.1 has an example.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use nostr::{Event, EventBuilder, Kind, PublicKey, Tag, Timestamp};

use crate::agreement::Roster;
use crate::nip34::RepoCoordinate;
use crate::tags::{custom_tag, tags_named};

/// A maintainer's mandate for a pipeline quorum (regular).
pub const MANDATE: Kind = Kind::Custom(8704);

const TAG_REPO: &str = "a";
const TAG_PIPELINE: &str = "pipeline";
const TAG_JOB: &str = "job";
const TAG_QUORUM: &str = "quorum";
const TAG_MEMBER: &str = "member";
const TAG_THRESHOLD: &str = "threshold";
const TAG_KEYGEN: &str = "keygen";
const TAG_ALLOW: &str = "allow";
const TAG_EXPIRATION: &str = "expiration";
const TAG_REQUESTER: &str = "requester";
const TAG_SOURCE: &str = "source";
const TAG_INNER: &str = "inner";

/// Why an event is not a valid mandate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MandateError {
    #[error("kind {found} is not a mandate (8704)")]
    WrongKind { found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
}

type Result<T> = std::result::Result<T, MandateError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> MandateError {
    MandateError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => MandateError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn required_value(event: &Event, name: &'static str) -> Result<String> {
    optional_value(event, name)?.ok_or(MandateError::MissingTag(name))
}

fn parse_pubkey(tag: &'static str, hex: &str) -> Result<PublicKey> {
    let lowercase_hex =
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lowercase_hex {
        return Err(malformed(
            tag,
            format!("{hex:?} is not a 64-hex lowercase public key"),
        ));
    }
    let key = PublicKey::from_hex(hex)
        .map_err(|_| malformed(tag, format!("{hex:?} is not a public key")))?;
    // Only a point on the curve can ever verify a signature.
    key.xonly()
        .map_err(|_| malformed(tag, format!("{hex:?} is not a valid public key")))?;
    Ok(key)
}

/// How the quorum key is made (`["keygen", "dkg"]` or `["keygen", "dealer", DEALER?]`), or
/// that its members are asked to refresh their shares of it (`["keygen", "refresh"]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keygen {
    /// Distributed key generation among the members: nobody, not even the maintainer, ever
    /// holds the whole key. The default.
    Dkg,
    /// A trusted dealer splits a key and sends each member its share (kind 8709). `dealer` is
    /// the key whose share deliveries members accept; `None` means the mandate's signer.
    Dealer { dealer: Option<PublicKey> },
    /// The key exists (the mandate names it) and the members are asked to refresh their
    /// shares of it, over 8710/8711/8712 with session = this mandate's id: same key, same
    /// members, indices and threshold, new shares that do not combine with the old ones.
    Refresh,
}

impl Keygen {
    pub const fn name(self) -> &'static str {
        match self {
            Keygen::Dkg => "dkg",
            Keygen::Dealer { .. } => "dealer",
            Keygen::Refresh => "refresh",
        }
    }

    fn to_tag(self) -> Tag {
        let mut values = vec![self.name().to_string()];
        if let Keygen::Dealer {
            dealer: Some(dealer),
        } = self
        {
            values.push(dealer.to_hex());
        }
        custom_tag(TAG_KEYGEN, values)
    }

    fn parse(values: &[String]) -> Result<Self> {
        match values {
            [mode] if mode == "dkg" => Ok(Keygen::Dkg),
            [mode, ..] if mode == "dkg" => Err(malformed("keygen", "`dkg` takes no dealer")),
            [mode] if mode == "dealer" => Ok(Keygen::Dealer { dealer: None }),
            [mode, dealer] if mode == "dealer" => Ok(Keygen::Dealer {
                dealer: Some(parse_pubkey("keygen", dealer)?),
            }),
            [mode, ..] if mode == "dealer" => Err(malformed("keygen", "too many values")),
            [mode] if mode == "refresh" => Ok(Keygen::Refresh),
            [mode, ..] if mode == "refresh" => Err(malformed("keygen", "`refresh` takes no value")),
            [other, ..] => Err(malformed(
                "keygen",
                format!("{other:?} is not `dkg`, `dealer` or `refresh`"),
            )),
            [] => Err(malformed("keygen", "no value")),
        }
    }
}

impl fmt::Display for Keygen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member DVM and its FROST share index: `["member", PUBKEY_HEX, INDEX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub pubkey: PublicKey,
    /// 1..=n, unique within the mandate (the FROST participant identifier).
    pub index: u16,
}

impl Member {
    pub fn new(pubkey: PublicKey, index: u16) -> Self {
        Member { pubkey, index }
    }
}

/// Which thresholds a mandate may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThresholdRule {
    /// `t > n/2` (the default): any two signing sets share a member.
    #[default]
    Majority,
    /// Any `1 ≤ t ≤ n`. Two disjoint minorities could sign conflicting results; only for
    /// callers that accept that (tests, experiments).
    AllowMinority,
}

/// Which commits the quorum may build (`["source", "tip"|"ancestor"]`): the commit must be the
/// tip of a ref in the repository's newest maintainer-signed state (30618), or, with
/// `ancestor`, reachable from one (a push that landed while an older commit's build was on its
/// way does not stop that build).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceRule {
    #[default]
    Tip,
    Ancestor,
}

impl SourceRule {
    pub const fn name(self) -> &'static str {
        match self {
            SourceRule::Tip => "tip",
            SourceRule::Ancestor => "ancestor",
        }
    }
}

/// What a mandate says about the jobs its quorum takes, beyond who the members are: whose
/// requests count, which commits, and which ordinary DVM each wrapper member forwards to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MandateRules {
    /// The keys allowed to request the quorum's jobs (`requester`, repeated): a router DVM, a
    /// watcher quorum's key, the machine that runs `quorum run`. Empty: anyone may ask, and
    /// the members still derive every job from the maintainer's code. The quorum key itself
    /// may always ask (it signs the next step of a quorum chain).
    pub requesters: Vec<PublicKey>,
    /// Which commits the quorum may build.
    pub source: SourceRule,
    /// For a quorum of wrapper DVMs: member → the ordinary DVM it forwards to
    /// (`["inner", MEMBER, INNER_DVM]`). Inner DVMs are distinct, so that `t` agreeing
    /// wrappers mean `t` different DVMs did the work.
    pub inner: BTreeMap<PublicKey, PublicKey>,
}

impl MandateRules {
    /// Whether `author` may request the quorum's jobs (the quorum key always may).
    pub fn admits(&self, author: &PublicKey, quorum: Option<&PublicKey>) -> bool {
        self.requesters.is_empty() || self.requesters.contains(author) || quorum == Some(author)
    }
}

/// A mandate (kind 8704).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mandate {
    /// The repository (`a` = `30617:<owner>:<id>`).
    pub repo: RepoCoordinate,
    /// The pipeline file, e.g. `.quorum/pipeline.yml` (`pipeline`).
    pub pipeline: String,
    /// The jobs of the pipeline the quorum runs (`job`, repeated); empty = every job.
    pub jobs: Vec<String>,
    /// The quorum's group public key (`quorum`, BIP-340 x-only, as signatures verify under).
    /// Absent only in a DKG *proposal*: a mandate that asks the members to run a DKG (session =
    /// this mandate's id) and authorises nothing until a mandate naming the derived key is
    /// signed.
    pub quorum: Option<PublicKey>,
    /// The members, one `member` tag each (and a `p` tag each, for `#p` queries).
    pub members: Vec<Member>,
    /// `t`: how many members must agree and sign. `n` is `members.len()`.
    pub threshold: u16,
    pub keygen: Keygen,
    /// The event kinds the quorum may sign (`allow`, repeated). Empty = nothing: a newer mandate
    /// without `allow` tags revokes the quorum.
    pub allow: BTreeSet<u16>,
    /// NIP-40, required: the quorum key means nothing after it.
    pub expiration: Timestamp,
    /// Whose requests, which commits, which inner DVMs.
    pub rules: MandateRules,
    /// A human-readable note.
    pub content: String,
}

impl Mandate {
    /// `n`, the number of members.
    pub fn n(&self) -> usize {
        self.members.len()
    }

    /// Checks with the default rule, `t > n/2` ([`ThresholdRule::Majority`]).
    pub fn validate(&self) -> Result<()> {
        self.validate_with(ThresholdRule::Majority)
    }

    /// Checks what the wire format cannot express: at least one member; indices `1..=n` and
    /// keys unique; `1 ≤ t ≤ n` (and `t > n/2` under [`ThresholdRule::Majority`]); the quorum
    /// key is not a member's key; a dealer or refresh mandate names its key; pipeline and job names are
    /// not empty, jobs unique.
    pub fn validate_with(&self, rule: ThresholdRule) -> Result<()> {
        if self.pipeline.is_empty() {
            return Err(malformed("pipeline", "no value"));
        }
        let mut jobs = BTreeSet::new();
        for job in &self.jobs {
            if job.is_empty() {
                return Err(malformed("job", "empty job name"));
            }
            if !jobs.insert(job) {
                return Err(malformed("job", format!("job {job:?} is listed twice")));
            }
        }
        let n = self.members.len();
        if n == 0 {
            return Err(MandateError::MissingTag("member"));
        }
        let mut indices = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for member in &self.members {
            if member.index == 0 || usize::from(member.index) > n {
                return Err(malformed(
                    "member",
                    format!("index {} is not in 1..={n}", member.index),
                ));
            }
            if !indices.insert(member.index) {
                return Err(malformed(
                    "member",
                    format!("index {} is given twice", member.index),
                ));
            }
            if !keys.insert(member.pubkey) {
                return Err(malformed(
                    "member",
                    format!("{} is listed twice", member.pubkey.to_hex()),
                ));
            }
        }
        let t = usize::from(self.threshold);
        if t == 0 || t > n {
            return Err(malformed(
                "threshold",
                format!("t = {t} is not in 1..={n} (n = the number of members)"),
            ));
        }
        if rule == ThresholdRule::Majority && 2 * t <= n {
            return Err(malformed(
                "threshold",
                format!(
                    "{t} of {n} is not a majority: two disjoint sets of {t} members could sign \
                     conflicting results (t must be more than n/2)"
                ),
            ));
        }
        let mut requesters = BTreeSet::new();
        for requester in &self.rules.requesters {
            if !requesters.insert(requester) {
                return Err(malformed(
                    "requester",
                    format!("{} is listed twice", requester.to_hex()),
                ));
            }
        }
        let mut inner_dvms = BTreeSet::new();
        for (member, inner) in &self.rules.inner {
            if !keys.contains(member) {
                return Err(malformed(
                    "inner",
                    format!("{} is not a member", member.to_hex()),
                ));
            }
            if keys.contains(inner) {
                return Err(malformed(
                    "inner",
                    format!(
                        "{} is a member: a wrapper forwards to an ordinary DVM outside the quorum",
                        inner.to_hex()
                    ),
                ));
            }
            if !inner_dvms.insert(inner) {
                return Err(malformed(
                    "inner",
                    format!(
                        "{} is named for two members: each wrapper must forward to a different DVM",
                        inner.to_hex()
                    ),
                ));
            }
        }
        match (self.quorum, self.keygen) {
            (Some(quorum), _) if keys.contains(&quorum) => {
                return Err(malformed(
                    "quorum",
                    "the quorum key is a member's own key: that member would hold it alone",
                ));
            }
            (None, Keygen::Dealer { .. }) => {
                // A dealer knows the group key before it deals: nothing to propose.
                return Err(MandateError::MissingTag("quorum"));
            }
            (None, Keygen::Refresh) => {
                // A refresh keeps a key that exists: the mandate names it.
                return Err(MandateError::MissingTag("quorum"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether this mandate authorises its quorum at `now`: it is valid (default rule), names a
    /// quorum key, and has not expired. (That its signer is a maintainer is
    /// [`select_mandate`]'s business.)
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.quorum.is_some() && now < self.expiration && self.validate().is_ok()
    }

    /// Whether the quorum may sign events of `kind`.
    pub fn allows(&self, kind: Kind) -> bool {
        self.allow.contains(&kind.as_u16())
    }

    /// The FROST share index of `pubkey`, if it is a member.
    pub fn member_index(&self, pubkey: &PublicKey) -> Option<u16> {
        self.members
            .iter()
            .find(|m| m.pubkey == *pubkey)
            .map(|m| m.index)
    }

    /// Whether this is a watcher quorum's mandate: its quorum may sign run-pipeline requests
    /// (5700), which is what watchers do and builders never need. A run's builds never run
    /// under such a mandate, so that builders need not be watchers nor watchers builders.
    pub fn is_for_watchers(&self) -> bool {
        self.allows(crate::kinds::JobKind::RunPipeline.request_kind())
    }

    /// Whether the mandate covers job `job` of the pipeline file `pipeline`.
    pub fn covers(&self, pipeline: &str, job: &str) -> bool {
        self.pipeline == pipeline && (self.jobs.is_empty() || self.jobs.iter().any(|j| j == job))
    }

    /// The roster the agreement counts against; `None` for a DKG proposal (no key yet).
    pub fn roster(&self) -> Option<Roster> {
        let quorum = self.quorum?;
        Roster::new(
            quorum,
            self.members.iter().map(|m| m.pubkey),
            self.threshold,
        )
        .ok()
    }

    /// The mandate, ready for a maintainer to sign; refuses a minority threshold.
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        self.to_event_builder_with(ThresholdRule::Majority)
    }

    /// The mandate, ready to sign, checked with `rule`. Members are written by index, kinds
    /// ascending.
    pub fn to_event_builder_with(&self, rule: ThresholdRule) -> Result<EventBuilder> {
        self.validate_with(rule)?;
        let mut tags = vec![
            custom_tag(TAG_REPO, [self.repo.to_string()]),
            custom_tag(TAG_PIPELINE, [self.pipeline.clone()]),
        ];
        tags.extend(self.jobs.iter().map(|j| custom_tag(TAG_JOB, [j.clone()])));
        if let Some(quorum) = self.quorum {
            tags.push(custom_tag(TAG_QUORUM, [quorum.to_hex()]));
        }
        tags.push(self.keygen.to_tag());
        tags.push(custom_tag(
            TAG_THRESHOLD,
            [self.threshold.to_string(), self.n().to_string()],
        ));
        let mut members = self.members.clone();
        members.sort_by_key(|m| m.index);
        tags.extend(
            members
                .iter()
                .map(|m| custom_tag(TAG_MEMBER, [m.pubkey.to_hex(), m.index.to_string()])),
        );
        tags.extend(members.iter().map(|m| Tag::public_key(m.pubkey)));
        tags.extend(
            self.allow
                .iter()
                .map(|k| custom_tag(TAG_ALLOW, [k.to_string()])),
        );
        tags.extend(
            self.rules
                .requesters
                .iter()
                .map(|r| custom_tag(TAG_REQUESTER, [r.to_hex()])),
        );
        if self.rules.source != SourceRule::Tip {
            tags.push(custom_tag(TAG_SOURCE, [self.rules.source.name()]));
        }
        tags.extend(
            self.rules
                .inner
                .iter()
                .map(|(member, inner)| custom_tag(TAG_INNER, [member.to_hex(), inner.to_hex()])),
        );
        tags.push(Tag::expiration(self.expiration));
        Ok(EventBuilder::new(MANDATE, self.content.clone())
            .tags(tags)
            .allow_self_tagging())
    }

    /// Parses and validates a mandate with the default rule (`t > n/2`).
    pub fn from_event(event: &Event) -> Result<Self> {
        Self::from_event_with(event, ThresholdRule::Majority)
    }

    /// Parses a mandate and validates it with `rule`. The `p` tags are ignored (the `member`
    /// tags are authoritative); unknown tags too.
    pub fn from_event_with(event: &Event, rule: ThresholdRule) -> Result<Self> {
        if event.kind != MANDATE {
            return Err(MandateError::WrongKind {
                found: event.kind.as_u16(),
            });
        }
        let repo = required_value(event, TAG_REPO)?;
        let repo = RepoCoordinate::from_str(&repo).map_err(|e| malformed("a", e.to_string()))?;
        let quorum = optional_value(event, TAG_QUORUM)?
            .map(|q| parse_pubkey("quorum", &q))
            .transpose()?;
        let mut keygen_tags = tags_named(event, TAG_KEYGEN);
        let keygen = keygen_tags
            .next()
            .ok_or(MandateError::MissingTag("keygen"))?;
        if keygen_tags.next().is_some() {
            return Err(MandateError::Duplicate("keygen"));
        }
        let keygen = Keygen::parse(&keygen[1..])?;
        let mut threshold_tags = tags_named(event, TAG_THRESHOLD);
        let threshold = threshold_tags
            .next()
            .ok_or(MandateError::MissingTag("threshold"))?;
        if threshold_tags.next().is_some() {
            return Err(MandateError::Duplicate("threshold"));
        }
        let (t, n) = match &threshold[1..] {
            [t, n] => (t, n),
            _ => {
                return Err(malformed("threshold", "expected [\"threshold\", T, N]"));
            }
        };
        let t: u16 = t
            .parse()
            .map_err(|_| malformed("threshold", format!("t {t:?} is not a count")))?;
        let n: usize = n
            .parse()
            .map_err(|_| malformed("threshold", format!("n {n:?} is not a count")))?;
        let mut members = Vec::new();
        for values in tags_named(event, TAG_MEMBER) {
            let (hex, index) = match &values[1..] {
                [hex, index] => (hex, index),
                _ => {
                    return Err(malformed(
                        "member",
                        "expected [\"member\", PUBKEY_HEX, INDEX]",
                    ));
                }
            };
            let pubkey = parse_pubkey("member", hex)?;
            let index = index
                .parse()
                .map_err(|_| malformed("member", format!("index {index:?} is not a number")))?;
            members.push(Member { pubkey, index });
        }
        if !members.is_empty() && members.len() != n {
            return Err(malformed(
                "threshold",
                format!("n = {n}, but {} `member` tags are given", members.len()),
            ));
        }
        let mut jobs = Vec::new();
        for values in tags_named(event, TAG_JOB) {
            let job = values
                .get(1)
                .filter(|j| !j.is_empty())
                .ok_or_else(|| malformed("job", "no value"))?;
            jobs.push(job.clone());
        }
        let mut allow = BTreeSet::new();
        for values in tags_named(event, TAG_ALLOW) {
            let kind = values.get(1).map(String::as_str).unwrap_or_default();
            let kind: u16 = kind
                .parse()
                .map_err(|_| malformed("allow", format!("{kind:?} is not an event kind")))?;
            if !allow.insert(kind) {
                return Err(malformed("allow", format!("kind {kind} is listed twice")));
            }
        }
        let mut rules = MandateRules::default();
        for values in tags_named(event, TAG_REQUESTER) {
            let hex = values.get(1).map(String::as_str).unwrap_or_default();
            rules.requesters.push(parse_pubkey("requester", hex)?);
        }
        rules.source = match optional_value(event, TAG_SOURCE)?.as_deref() {
            None | Some("tip") => SourceRule::Tip,
            Some("ancestor") => SourceRule::Ancestor,
            Some(other) => {
                return Err(malformed(
                    "source",
                    format!("{other:?} is not `tip` or `ancestor`"),
                ));
            }
        };
        for values in tags_named(event, TAG_INNER) {
            let [member, inner] = &values[1..] else {
                return Err(malformed(
                    "inner",
                    "expected [\"inner\", MEMBER_HEX, INNER_DVM_HEX]",
                ));
            };
            let member = parse_pubkey("inner", member)?;
            let inner = parse_pubkey("inner", inner)?;
            if rules.inner.insert(member, inner).is_some() {
                return Err(malformed(
                    "inner",
                    format!("member {} is given twice", member.to_hex()),
                ));
            }
        }
        let expiration = required_value(event, TAG_EXPIRATION)?;
        let expiration = Timestamp::from_str(&expiration).map_err(|_| {
            malformed(
                "expiration",
                format!("{expiration:?} is not a Unix timestamp"),
            )
        })?;
        let mandate = Mandate {
            repo,
            pipeline: required_value(event, TAG_PIPELINE)?,
            jobs,
            quorum,
            members,
            threshold: t,
            keygen,
            allow,
            expiration,
            rules,
            content: event.content.clone(),
        };
        mandate.validate_with(rule)?;
        Ok(mandate)
    }
}

/// The relay filter for every mandate (8704) naming `repo` in its `a` tag, by anyone: the
/// candidates [`select_mandate`] and [`current_mandate_for`] choose among.
pub fn mandates_of(repo: &RepoCoordinate) -> nostr::Filter {
    nostr::Filter::new().kind(MANDATE).custom_tag(
        nostr::SingleLetterTag::lowercase(nostr::Alphabet::A),
        repo.to_string(),
    )
}

/// The mandate that authorises `quorum` for `repo` at `now`, among `events`: the **newest**
/// (`created_at`, then lowest id) event that
///
/// - is a kind 8704 with a valid id and signature,
/// - is signed by a key in `maintainers` (the repository's maintainer set, normally
///   [`crate::nip34::maintainer_set`]; the mandate's own tags cannot widen it),
/// - parses and validates with the default rule (`t > n/2`),
/// - names `repo` and exactly this `quorum` key,
/// - is not dated after `now` and has not expired at `now`.
///
/// A newer mandate supersedes an older one whoever of the maintainers signed either; a newer
/// one without `allow` tags therefore revokes the quorum. The caller still checks that the
/// mandate [`covers`](Mandate::covers) the pipeline and job and [`allows`](Mandate::allows) the
/// event kind in question.
pub fn select_mandate<'a>(
    events: &'a [Event],
    repo: &RepoCoordinate,
    quorum: &PublicKey,
    maintainers: &BTreeSet<PublicKey>,
    now: Timestamp,
) -> Option<(&'a Event, Mandate)> {
    newest(
        events
            .iter()
            .filter(|e| e.kind == MANDATE && maintainers.contains(&e.pubkey))
            .filter(|e| e.created_at <= now)
            .filter(|e| e.verify().is_ok())
            .filter_map(|e| Mandate::from_event(e).ok().map(|m| (e, m)))
            .filter(|(_, m)| m.repo == *repo && m.quorum == Some(*quorum) && now < m.expiration),
    )
}

/// The mandate a repository's maintainers currently give for the quorum jobs `jobs` of the
/// pipeline file `pipeline`, when a run names none: for each quorum key, the mandate that
/// counts for it ([`select_mandate`]: a newer one supersedes or revokes); of those that are
/// not a watcher quorum's ([`Mandate::is_for_watchers`]), cover every job and allow every kind
/// in `kinds`, the newest.
pub fn current_mandate_for<'a>(
    events: &'a [Event],
    repo: &RepoCoordinate,
    maintainers: &BTreeSet<PublicKey>,
    now: Timestamp,
    pipeline: &str,
    jobs: &[&str],
    kinds: &[Kind],
) -> Option<(&'a Event, Mandate)> {
    newest(
        mandates_in_force(events, repo, maintainers, now)
            .filter(|(_, m)| !m.is_for_watchers())
            .filter(|(_, m)| jobs.iter().all(|job| m.covers(pipeline, job)))
            .filter(|(_, m)| kinds.iter().all(|kind| m.allows(*kind))),
    )
}

/// For each quorum key a mandate among `events` names, the one that counts for it at `now`
/// ([`select_mandate`]).
fn mandates_in_force<'a, 'b>(
    events: &'a [Event],
    repo: &'b RepoCoordinate,
    maintainers: &'b BTreeSet<PublicKey>,
    now: Timestamp,
) -> impl Iterator<Item = (&'a Event, Mandate)> {
    let quorums: BTreeSet<PublicKey> = events
        .iter()
        .filter(|e| e.kind == MANDATE)
        .filter_map(|e| Mandate::from_event(e).ok()?.quorum)
        .collect();
    quorums
        .into_iter()
        .filter_map(move |quorum| select_mandate(events, repo, &quorum, maintainers, now))
}

/// The newest of `mandates` (`created_at`, then lowest id).
fn newest<'a>(
    mandates: impl Iterator<Item = (&'a Event, Mandate)>,
) -> Option<(&'a Event, Mandate)> {
    mandates.max_by(|(x, _), (y, _)| {
        (x.created_at, std::cmp::Reverse(x.id)).cmp(&(y.created_at, std::cmp::Reverse(y.id)))
    })
}

/// The watcher-quorum mandate `member` acts under for `repo` now, when its operator pinned
/// none: for each quorum key, the mandate that counts for it ([`select_mandate`]), of those
/// for watchers ([`Mandate::is_for_watchers`]) that allow attestations and name `member`, the
/// newest. `None`: no maintainer has put this watcher in a quorum, and it asks for runs under
/// its own key.
pub fn watcher_mandate_for<'a>(
    events: &'a [Event],
    repo: &RepoCoordinate,
    maintainers: &BTreeSet<PublicKey>,
    now: Timestamp,
    member: &PublicKey,
) -> Option<(&'a Event, Mandate)> {
    newest(
        mandates_in_force(events, repo, maintainers, now)
            .filter(|(_, m)| m.is_for_watchers())
            .filter(|(_, m)| m.allows(crate::agreement::QUORUM_ATTESTATION))
            .filter(|(_, m)| m.members.iter().any(|entry| entry.pubkey == *member)),
    )
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key(byte: u8) -> Keys {
        Keys::parse(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    fn sample(owner: &Keys) -> Mandate {
        Mandate {
            repo: RepoCoordinate::new(owner.public_key(), "app"),
            pipeline: ".quorum/pipeline.yml".into(),
            jobs: vec!["build".into()],
            quorum: Some(key(9).public_key()),
            members: vec![
                Member::new(key(3).public_key(), 3),
                Member::new(key(1).public_key(), 1),
                Member::new(key(2).public_key(), 2),
            ],
            threshold: 2,
            keygen: Keygen::Dkg,
            allow: [8708, 8700, 1063, 5702].into_iter().collect(),
            expiration: Timestamp::from(NOW + 86_400),
            rules: MandateRules::default(),
            content: "build quorum for app".into(),
        }
    }

    fn sign(mandate: &Mandate, keys: &Keys, at: u64) -> Event {
        mandate
            .to_event_builder()
            .unwrap()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn round_trips_and_answers_questions() {
        let owner = key(0x10);
        let mandate = sample(&owner);
        let event = sign(&mandate, &owner, NOW);
        let parsed = Mandate::from_event(&event).unwrap();
        // Members come back in index order.
        let mut expected = mandate.clone();
        expected.members.sort_by_key(|m| m.index);
        assert_eq!(parsed, expected);
        assert_eq!(event.tags.public_keys().count(), 3);
        assert!(parsed.allows(Kind::Custom(8708)));
        assert!(!parsed.allows(Kind::TextNote));
        assert_eq!(parsed.member_index(&key(2).public_key()), Some(2));
        assert_eq!(parsed.member_index(&key(9).public_key()), None);
        assert!(parsed.is_valid_at(Timestamp::from(NOW)));
        assert!(!parsed.is_valid_at(Timestamp::from(NOW + 86_400)));
        assert!(parsed.covers(".quorum/pipeline.yml", "build"));
        assert!(!parsed.covers(".quorum/pipeline.yml", "deploy"));
        assert!(!parsed.covers("other.yml", "build"));
        let roster = parsed.roster().unwrap();
        assert_eq!(roster.threshold(), 2);
        assert_eq!(roster.quorum(), key(9).public_key());
        assert!(roster.contains(&key(1).public_key()));

        let mut dealer = mandate.clone();
        dealer.keygen = Keygen::Dealer {
            dealer: Some(key(0x20).public_key()),
        };
        dealer.jobs.clear();
        let parsed = Mandate::from_event(&sign(&dealer, &owner, NOW)).unwrap();
        assert_eq!(parsed.keygen, dealer.keygen);
        assert!(parsed.covers(".quorum/pipeline.yml", "anything"));

        // A refresh mandate names the existing key and is a mandate like any other.
        let mut refresh = mandate.clone();
        refresh.keygen = Keygen::Refresh;
        let event = sign(&refresh, &owner, NOW);
        assert!(
            event
                .tags
                .iter()
                .any(|t| t.as_slice() == ["keygen", "refresh"])
        );
        let parsed = Mandate::from_event(&event).unwrap();
        assert_eq!(parsed.keygen, Keygen::Refresh);
        assert_eq!(parsed.quorum, mandate.quorum);
        assert!(parsed.is_valid_at(Timestamp::from(NOW)));

        // A DKG proposal names no key and authorises nothing.
        let mut proposal = mandate.clone();
        proposal.quorum = None;
        let parsed = Mandate::from_event(&sign(&proposal, &owner, NOW)).unwrap();
        assert_eq!(parsed.quorum, None);
        assert!(!parsed.is_valid_at(Timestamp::from(NOW)));
        assert!(parsed.roster().is_none());
    }

    #[test]
    fn rules_round_trip_and_bad_rules_are_refused() {
        let owner = key(0x10);
        let mut mandate = sample(&owner);
        let router = key(0x40).public_key();
        mandate.rules.requesters = vec![router];
        mandate.rules.source = SourceRule::Ancestor;
        mandate.rules.inner = [
            (key(1).public_key(), key(0x51).public_key()),
            (key(2).public_key(), key(0x52).public_key()),
        ]
        .into_iter()
        .collect();
        let event = sign(&mandate, &owner, NOW);
        assert!(
            event
                .tags
                .iter()
                .any(|t| t.as_slice() == ["source", "ancestor"])
        );
        let parsed = Mandate::from_event(&event).unwrap();
        assert_eq!(parsed.rules, mandate.rules);
        let quorum = parsed.quorum.unwrap();
        assert!(parsed.rules.admits(&router, Some(&quorum)));
        assert!(parsed.rules.admits(&quorum, Some(&quorum)));
        assert!(!parsed.rules.admits(&key(0x41).public_key(), Some(&quorum)));
        assert!(MandateRules::default().admits(&key(0x41).public_key(), None));
        // The default rule is not written.
        let plain = sign(&sample(&owner), &owner, NOW);
        assert!(plain.tags.iter().all(|t| t.as_slice()[0] != "source"));
        assert_eq!(
            Mandate::from_event(&plain).unwrap().rules,
            MandateRules::default()
        );

        let mut twice = mandate.clone();
        twice.rules.requesters.push(router);
        assert!(
            twice
                .validate()
                .unwrap_err()
                .to_string()
                .contains("`requester`")
        );
        let mut stranger = mandate.clone();
        stranger
            .rules
            .inner
            .insert(key(0x60).public_key(), key(0x61).public_key());
        assert!(
            stranger
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not a member")
        );
        let mut shared = mandate.clone();
        shared
            .rules
            .inner
            .insert(key(3).public_key(), key(0x51).public_key());
        assert!(
            shared
                .validate()
                .unwrap_err()
                .to_string()
                .contains("different DVM")
        );
        let mut inside = mandate.clone();
        inside
            .rules
            .inner
            .insert(key(3).public_key(), key(1).public_key());
        assert!(
            inside
                .validate()
                .unwrap_err()
                .to_string()
                .contains("is a member")
        );

        let edits = crate::tags::TagEdits::of(&event);
        let member1 = key(1).public_key().to_hex();
        for (tags, needle) in [
            (edits.replace("source", &["source", "any"]), "`source`"),
            (edits.with(&["source", "tip"]), "`source` tag given twice"),
            (
                edits.replace("requester", &["requester", "bob"]),
                "`requester`",
            ),
            (edits.replace("inner", &["inner", &member1]), "`inner`"),
            (
                edits.with(&["inner", &member1, &key(0x53).public_key().to_hex()]),
                "given twice",
            ),
        ] {
            let event = EventBuilder::new(MANDATE, "")
                .tags(tags.iter().map(|t| custom_tag(&t[0], t[1..].to_vec())))
                .allow_self_tagging()
                .sign_with_keys(&owner)
                .unwrap();
            let err = Mandate::from_event(&event).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn thresholds_must_be_a_majority_by_default() {
        let owner = key(0x10);
        let mut m = sample(&owner);
        m.threshold = 0;
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("`threshold`")
        );
        m.threshold = 4;
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("`threshold`")
        );
        m.threshold = 3;
        assert_eq!(m.validate(), Ok(()));
        // 2 of 4: not a majority.
        m.members.push(Member::new(key(4).public_key(), 4));
        m.threshold = 2;
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("not a majority"), "{err}");
        assert!(m.to_event_builder().is_err());
        assert_eq!(m.validate_with(ThresholdRule::AllowMinority), Ok(()));
        let event = m
            .to_event_builder_with(ThresholdRule::AllowMinority)
            .unwrap()
            .sign_with_keys(&owner)
            .unwrap();
        assert!(Mandate::from_event(&event).is_err());
        assert_eq!(
            Mandate::from_event_with(&event, ThresholdRule::AllowMinority)
                .unwrap()
                .threshold,
            2
        );
        m.threshold = 3;
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn bad_rosters_are_refused() {
        let owner = key(0x10);
        let mut m = sample(&owner);
        m.members[0].index = 7;
        assert!(m.validate().unwrap_err().to_string().contains("1..=3"));
        let mut m = sample(&owner);
        m.members[0].index = 1;
        assert!(m.validate().unwrap_err().to_string().contains("twice"));
        let mut m = sample(&owner);
        m.members[0].pubkey = m.members[1].pubkey;
        assert!(m.validate().unwrap_err().to_string().contains("twice"));
        let mut m = sample(&owner);
        m.quorum = Some(m.members[0].pubkey);
        assert!(m.validate().unwrap_err().to_string().contains("`quorum`"));
        let mut m = sample(&owner);
        m.members.clear();
        assert_eq!(m.validate(), Err(MandateError::MissingTag("member")));
        let mut m = sample(&owner);
        m.quorum = None;
        m.keygen = Keygen::Dealer { dealer: None };
        assert_eq!(m.validate(), Err(MandateError::MissingTag("quorum")));
        m.keygen = Keygen::Refresh;
        assert_eq!(m.validate(), Err(MandateError::MissingTag("quorum")));
        let mut m = sample(&owner);
        m.jobs.push("build".into());
        assert!(m.validate().unwrap_err().to_string().contains("`job`"));
    }

    #[test]
    fn malformed_mandates_name_the_tag() {
        let owner = key(0x10);
        let good = sign(&sample(&owner), &owner, NOW);
        let edits = crate::tags::TagEdits::of(&good);
        let base = edits.base.clone();
        let replace = |name: &str, value: &[&str]| edits.replace(name, value);
        let drop = |name: &str| edits.drop(name);
        let with = |extra: &[&str]| edits.with(extra);
        let member1 = key(1).public_key().to_hex();
        let cases: Vec<(Vec<Vec<String>>, &str)> = vec![
            (base.clone(), ""),
            (drop("a"), "missing `a`"),
            (replace("a", &["a", "30617:zz:app"]), "`a`"),
            (drop("pipeline"), "missing `pipeline`"),
            (replace("quorum", &["quorum", "ABCD"]), "`quorum`"),
            (with(&["quorum", &member1]), "`quorum` tag given twice"),
            (drop("keygen"), "missing `keygen`"),
            (replace("keygen", &["keygen", "magic"]), "`keygen`"),
            (replace("keygen", &["keygen", "dkg", &member1]), "`keygen`"),
            (replace("keygen", &["keygen", "dealer", "bob"]), "`keygen`"),
            (
                replace("keygen", &["keygen", "refresh", &member1]),
                "`keygen`",
            ),
            (drop("threshold"), "missing `threshold`"),
            (replace("threshold", &["threshold", "2"]), "`threshold`"),
            (
                replace("threshold", &["threshold", "two", "3"]),
                "`threshold`",
            ),
            (
                replace("threshold", &["threshold", "2", "4"]),
                "`threshold`",
            ),
            (
                replace("threshold", &["threshold", "1", "3"]),
                "`threshold`",
            ),
            (drop("member"), "missing `member`"),
            (replace("member", &["member", &member1]), "`member`"),
            (replace("member", &["member", "bob", "1"]), "`member`"),
            (replace("member", &["member", &member1, "one"]), "`member`"),
            (replace("job", &["job", ""]), "`job`"),
            (replace("allow", &["allow", "release"]), "`allow`"),
            (with(&["allow", "8708"]), "`allow`"),
            (drop("expiration"), "missing `expiration`"),
            (
                replace("expiration", &["expiration", "soon"]),
                "`expiration`",
            ),
        ];
        for (tags, needle) in cases {
            let event = EventBuilder::new(MANDATE, "")
                .tags(tags.iter().map(|t| custom_tag(&t[0], t[1..].to_vec())))
                .allow_self_tagging()
                .sign_with_keys(&owner)
                .unwrap();
            match Mandate::from_event(&event) {
                Ok(_) => assert!(needle.is_empty(), "{tags:?} parsed"),
                Err(err) => assert!(
                    !needle.is_empty() && err.to_string().contains(needle),
                    "{needle}: {err}"
                ),
            }
        }
        let wrong = EventBuilder::text_note("hi")
            .sign_with_keys(&owner)
            .unwrap();
        assert_eq!(
            Mandate::from_event(&wrong),
            Err(MandateError::WrongKind { found: 1 })
        );
    }

    #[test]
    fn a_run_that_names_no_mandate_gets_the_newest_that_covers_its_jobs_and_kinds() {
        let owner = key(0x10);
        let stranger = key(0x12);
        let maintainers: BTreeSet<PublicKey> = [owner.public_key()].into_iter().collect();
        let at = Timestamp::from(NOW);
        let build = sample(&owner);
        let repo = build.repo.clone();
        let find = |events: &[Event], jobs: &[&str], kinds: &[Kind]| {
            current_mandate_for(
                events,
                &repo,
                &maintainers,
                at,
                ".quorum/pipeline.yml",
                jobs,
                kinds,
            )
            .map(|(e, _)| e.id)
        };
        let release = [Kind::Custom(8708), Kind::Custom(8700)];
        let build_event = sign(&build, &owner, NOW - 100);

        // A watcher quorum's mandate is newer and even covers the job and allows both kinds,
        // but its quorum signs run requests (5700): builds never run under it.
        let mut watchers = sample(&owner);
        watchers.quorum = Some(key(8).public_key());
        watchers.allow = [8708, 8700, 5700].into_iter().collect();
        assert!(watchers.is_for_watchers() && !build.is_for_watchers());
        let watchers = sign(&watchers, &owner, NOW - 10);
        // A stranger's newer mandate for yet another key does not count at all.
        let mut hijack = sample(&owner);
        hijack.quorum = Some(key(7).public_key());
        let hijack = sign(&hijack, &stranger, NOW - 5);
        let events = [build_event.clone(), watchers.clone(), hijack];
        assert_eq!(find(&events, &["build"], &release), Some(build_event.id));
        assert_eq!(find(&events, &["build", "deploy"], &release), None);
        assert_eq!(
            find(&events, &["build"], &[Kind::Custom(5700)]),
            None,
            "the build mandate does not let its quorum sign run requests"
        );

        // The build quorum's own newer mandate without `allow` revokes it: nothing is left.
        let mut revoke = build.clone();
        revoke.allow.clear();
        let revoke = sign(&revoke, &owner, NOW - 1);
        assert_eq!(
            find(&[build_event, watchers, revoke], &["build"], &release),
            None
        );
    }

    #[test]
    fn a_watcher_finds_the_watcher_quorum_that_names_it() {
        let owner = key(0x10);
        let stranger = key(0x12);
        let maintainers: BTreeSet<PublicKey> = [owner.public_key()].into_iter().collect();
        let at = Timestamp::from(NOW);
        let repo = sample(&owner).repo;
        let member = key(1).public_key();
        let find = |events: &[Event], who: &PublicKey| {
            watcher_mandate_for(events, &repo, &maintainers, at, who).map(|(e, _)| e.id)
        };
        // A build quorum names the watcher too, but it does not sign run requests.
        let build = sign(&sample(&owner), &owner, NOW - 100);
        assert_eq!(find(std::slice::from_ref(&build), &member), None);

        let mut watchers = sample(&owner);
        watchers.quorum = Some(key(8).public_key());
        watchers.allow = [8708, 5700].into_iter().collect();
        let watchers_event = sign(&watchers, &owner, NOW - 50);
        let events = [build.clone(), watchers_event.clone()];
        assert_eq!(find(&events, &member), Some(watchers_event.id));
        assert_eq!(
            find(&events, &key(4).public_key()),
            None,
            "not a member: the watcher signs its own requests"
        );

        // A stranger's watcher mandate naming the watcher does not count.
        let mut hijack = watchers.clone();
        hijack.quorum = Some(key(7).public_key());
        let hijack = sign(&hijack, &stranger, NOW - 5);
        let events = [build.clone(), watchers_event.clone(), hijack];
        assert_eq!(find(&events, &member), Some(watchers_event.id));

        // A newer mandate for the key without `allow` revokes it.
        let mut revoke = watchers.clone();
        revoke.allow.clear();
        let revoke = sign(&revoke, &owner, NOW - 1);
        assert_eq!(find(&[build, watchers_event, revoke], &member), None);
    }

    #[test]
    fn the_newest_mandate_by_a_maintainer_counts() {
        let owner = key(0x10);
        let co_maintainer = key(0x11);
        let stranger = key(0x12);
        let maintainers: BTreeSet<PublicKey> = [owner.public_key(), co_maintainer.public_key()]
            .into_iter()
            .collect();
        let mandate = sample(&owner);
        let repo = mandate.repo.clone();
        let quorum = mandate.quorum.unwrap();
        let at = Timestamp::from(NOW);
        let pick = |events: &[Event]| {
            select_mandate(events, &repo, &quorum, &maintainers, at).map(|(e, _)| e.id)
        };

        let old = sign(&mandate, &owner, NOW - 100);
        assert_eq!(pick(std::slice::from_ref(&old)), Some(old.id));

        // A stranger's newer mandate for the same quorum does not count.
        let mut hijack = mandate.clone();
        hijack.allow.insert(1);
        let hijack = sign(&hijack, &stranger, NOW - 50);
        assert_eq!(pick(&[old.clone(), hijack]), Some(old.id));

        // Another maintainer's newer mandate supersedes; one without `allow` revokes.
        let mut revoke = mandate.clone();
        revoke.allow.clear();
        let revoke_event = sign(&revoke, &co_maintainer, NOW - 10);
        let (_, current) = select_mandate(
            &[old.clone(), revoke_event.clone()],
            &repo,
            &quorum,
            &maintainers,
            at,
        )
        .unwrap();
        assert_eq!(current.allow, BTreeSet::new());
        assert!(!current.allows(Kind::Custom(8708)));

        // Expired, future-dated, other-quorum, other-repo and forged mandates are skipped.
        let mut expired = mandate.clone();
        expired.expiration = Timestamp::from(NOW);
        let expired = sign(&expired, &owner, NOW - 5);
        let future = sign(&mandate, &owner, NOW + 60);
        let mut other_quorum = mandate.clone();
        other_quorum.quorum = Some(key(0x30).public_key());
        let other_quorum = sign(&other_quorum, &owner, NOW - 4);
        let mut other_repo = mandate.clone();
        other_repo.repo = RepoCoordinate::new(owner.public_key(), "other");
        let other_repo = sign(&other_repo, &owner, NOW - 3);
        let mut forged: serde_json::Value =
            serde_json::to_value(sign(&mandate, &owner, NOW - 2)).unwrap();
        forged["content"] = "tampered".into();
        let forged: Event = serde_json::from_value(forged).unwrap();
        assert_eq!(
            pick(&[
                old.clone(),
                expired,
                future,
                other_quorum,
                other_repo,
                forged
            ]),
            Some(old.id)
        );

        // On equal created_at the lowest id wins.
        let mut twin = mandate.clone();
        twin.content = "twin".into();
        let twin = sign(&twin, &owner, NOW - 100);
        let lowest = old.id.min(twin.id);
        assert_eq!(pick(&[old, twin]), Some(lowest));
    }
}
