//! NIP-34 git over Nostr: the repository announcement (kind 30617) and state (kind 30618).
//!
//! The maintainer's signed state event is what starts a pipeline (design §3): a git watcher
//! diffs its refs and builds exactly the commit it names. Parsing is therefore strict: a ref
//! whose value is not a full lowercase hex object id is an error that names the ref, rather than
//! a ref silently skipped. Multi-valued tags (`web`, `clone`, `relays`, `maintainers`) are one
//! tag with many values, as NIP-34 says, not repeated tags. Tags this module does not know are
//! ignored. `docs/protocol.md` §10 has examples.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::tags::custom_tag;
use nostr::{Event, EventBuilder, Kind, PublicKey, RelayUrl, Tag};

/// NIP-34 repository announcement (addressable, `d` = repository id).
pub const REPO_ANNOUNCEMENT: Kind = Kind::Custom(30617);
/// NIP-34 repository state (addressable, same `d` as the announcement).
pub const REPO_STATE: Kind = Kind::Custom(30618);

const TAG_D: &str = "d";
const TAG_NAME: &str = "name";
const TAG_DESCRIPTION: &str = "description";
const TAG_WEB: &str = "web";
const TAG_CLONE: &str = "clone";
const TAG_RELAYS: &str = "relays";
const TAG_REFERENCE: &str = "r";
const MARKER_EUC: &str = "euc";
const TAG_MAINTAINERS: &str = "maintainers";
const TAG_UPSTREAM: &str = "u";
const TAG_HASHTAG: &str = "t";
const LEGACY_PERSONAL_FORK: &str = "personal-fork";
const TAG_HEAD: &str = "HEAD";
const HEAD_PREFIX: &str = "ref: ";
const REFS_PREFIX: &str = "refs/";

/// Why an event is not a valid NIP-34 repository event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Nip34Error {
    #[error("kind {found} is not a NIP-34 {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("ref `{name}`: {reason}")]
    BadRef { name: String, reason: String },
    #[error("malformed repository coordinate {coordinate:?}: {reason}")]
    BadCoordinate { coordinate: String, reason: String },
}

type Result<T> = std::result::Result<T, Nip34Error>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> Nip34Error {
    Nip34Error::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

/// Whether `text` is a full git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex.
pub fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The address of a repository: `30617:<owner pubkey hex>:<repository id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoCoordinate {
    pub owner: PublicKey,
    pub identifier: String,
}

impl RepoCoordinate {
    pub fn new(owner: PublicKey, identifier: impl Into<String>) -> Self {
        RepoCoordinate {
            owner,
            identifier: identifier.into(),
        }
    }
}

impl fmt::Display for RepoCoordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            REPO_ANNOUNCEMENT.as_u16(),
            self.owner.to_hex(),
            self.identifier
        )
    }
}

impl FromStr for RepoCoordinate {
    type Err = Nip34Error;

    /// Parses `30617:<64 hex>:<id>`; the id may itself contain colons.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Nip34Error::BadCoordinate {
            coordinate: s.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = s.splitn(3, ':');
        let kind = parts.next().unwrap_or_default();
        if kind != "30617" {
            return Err(bad("the kind is not 30617"));
        }
        let owner = parts.next().ok_or_else(|| bad("no owner public key"))?;
        if owner.len() != 64
            || !owner
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad("the owner is not a 64-hex public key"));
        }
        let owner =
            PublicKey::from_hex(owner).map_err(|_| bad("the owner is not a valid public key"))?;
        let identifier = parts.next().ok_or_else(|| bad("no repository id"))?;
        if identifier.is_empty() {
            return Err(bad("empty repository id"));
        }
        Ok(RepoCoordinate::new(owner, identifier))
    }
}

impl RepoCoordinate {
    /// A repository as a user names it: `30617:<owner hex>:<d>` or its NIP-19 `naddr1…`
    /// (which must be of kind 30617; relay hints are dropped).
    pub fn parse_user(text: &str) -> Result<Self> {
        use nostr::nips::nip19::{FromBech32, Nip19Coordinate};
        let text = text.trim();
        if !text.starts_with("naddr1") {
            return text.parse();
        }
        let bad = |reason: String| Nip34Error::BadCoordinate {
            coordinate: text.to_string(),
            reason,
        };
        let naddr = Nip19Coordinate::from_bech32(text).map_err(|e| bad(e.to_string()))?;
        if naddr.kind != REPO_ANNOUNCEMENT {
            return Err(bad(format!(
                "it addresses a kind {} event, not a repository (30617)",
                naddr.kind.as_u16()
            )));
        }
        if naddr.identifier.is_empty() {
            return Err(bad("empty repository id".into()));
        }
        Ok(RepoCoordinate::new(
            naddr.public_key,
            naddr.identifier.clone(),
        ))
    }

    /// The NIP-19 `naddr1…` of the repository (no relay hints).
    pub fn to_naddr(&self) -> String {
        use nostr::nips::nip01::Coordinate;
        use nostr::nips::nip19::{Nip19Coordinate, ToBech32};
        let coordinate =
            Coordinate::new(REPO_ANNOUNCEMENT, self.owner).identifier(&self.identifier);
        Nip19Coordinate::new(coordinate, [])
            .to_bech32()
            .expect("a coordinate encodes")
    }
}

/// A repository announcement (kind 30617).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryAnnouncement {
    /// The `d` tag: the repository id, usually a kebab-case short name.
    pub identifier: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// URLs to browse the repository.
    pub web: Vec<String>,
    /// git clone URLs.
    pub clone: Vec<String>,
    /// Relays the repository monitors for patches, issues and status.
    pub relays: Vec<RelayUrl>,
    /// The earliest unique commit (`["r", ID, "euc"]`): groups mirrors, separates forks.
    pub earliest_unique_commit: Option<String>,
    /// Other maintainers (the author is always one).
    pub maintainers: Vec<PublicKey>,
    /// The `u` tag: this is a subordinate fork of that repository (coordinate or git URL).
    pub fork_of: Option<String>,
    /// Hashtags (`t`), other than the legacy `personal-fork` marker.
    pub hashtags: Vec<String>,
    /// The legacy `["t", "personal-fork"]` marker (replaced by `u` in 2026-06; read only).
    pub legacy_personal_fork: bool,
}

impl RepositoryAnnouncement {
    pub fn new(identifier: impl Into<String>) -> Self {
        RepositoryAnnouncement {
            identifier: identifier.into(),
            name: None,
            description: None,
            web: Vec::new(),
            clone: Vec::new(),
            relays: Vec::new(),
            earliest_unique_commit: None,
            maintainers: Vec::new(),
            fork_of: None,
            hashtags: Vec::new(),
            legacy_personal_fork: false,
        }
    }

    /// `30617:<author>:<d>`, the address other events use in their `a` tags.
    pub fn coordinate(&self, author: &PublicKey) -> RepoCoordinate {
        RepoCoordinate::new(*author, self.identifier.clone())
    }

    /// Whether the author publishes this as a fork rather than as a maintainer of the project.
    pub fn is_subordinate_fork(&self) -> bool {
        self.fork_of.is_some() || self.legacy_personal_fork
    }

    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        if let Some(name) = &self.name {
            tags.push(custom_tag(TAG_NAME, [name.clone()]));
        }
        if let Some(description) = &self.description {
            tags.push(custom_tag(TAG_DESCRIPTION, [description.clone()]));
        }
        if !self.web.is_empty() {
            tags.push(custom_tag(TAG_WEB, self.web.clone()));
        }
        if !self.clone.is_empty() {
            tags.push(custom_tag(TAG_CLONE, self.clone.clone()));
        }
        if !self.relays.is_empty() {
            tags.push(custom_tag(
                TAG_RELAYS,
                self.relays.iter().map(|r| r.to_string()),
            ));
        }
        if let Some(euc) = &self.earliest_unique_commit {
            tags.push(custom_tag(TAG_REFERENCE, [euc.as_str(), MARKER_EUC]));
        }
        if !self.maintainers.is_empty() {
            tags.push(custom_tag(
                TAG_MAINTAINERS,
                self.maintainers.iter().map(|p| p.to_hex()),
            ));
        }
        if let Some(upstream) = &self.fork_of {
            tags.push(custom_tag(TAG_UPSTREAM, [upstream.clone()]));
        }
        for hashtag in &self.hashtags {
            tags.push(custom_tag(TAG_HASHTAG, [hashtag.clone()]));
        }
        if self.legacy_personal_fork {
            tags.push(custom_tag(TAG_HASHTAG, [LEGACY_PERSONAL_FORK]));
        }
        EventBuilder::new(REPO_ANNOUNCEMENT, "")
            .tags(tags)
            .allow_self_tagging()
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        if event.kind != REPO_ANNOUNCEMENT {
            return Err(Nip34Error::WrongKind {
                expected: "repository announcement (30617)",
                found: event.kind.as_u16(),
            });
        }
        let mut announcement = RepositoryAnnouncement::new(identifier_of(event)?);
        for tag in event.tags.iter() {
            let values = tag.as_slice();
            let rest = &values[1..];
            match values[0].as_str() {
                TAG_NAME => announcement.name = rest.first().cloned(),
                TAG_DESCRIPTION => announcement.description = rest.first().cloned(),
                TAG_WEB => announcement.web.extend(non_empty(rest)),
                TAG_CLONE => announcement.clone.extend(non_empty(rest)),
                TAG_RELAYS => {
                    for url in non_empty(rest) {
                        announcement.relays.push(
                            RelayUrl::parse(&url)
                                .map_err(|e| malformed("relays", format!("{url:?}: {e}")))?,
                        );
                    }
                }
                TAG_REFERENCE if rest.get(1).map(String::as_str) == Some(MARKER_EUC) => {
                    let commit = &rest[0];
                    if !is_object_id(commit) {
                        return Err(malformed(
                            "r",
                            format!(
                                "earliest unique commit {commit:?} is not a full 40- or 64-hex commit id"
                            ),
                        ));
                    }
                    announcement.earliest_unique_commit = Some(commit.clone());
                }
                TAG_MAINTAINERS => {
                    for hex in non_empty(rest) {
                        announcement
                            .maintainers
                            .push(PublicKey::from_hex(&hex).map_err(|_| {
                                malformed(
                                    "maintainers",
                                    format!("{hex:?} is not a 64-hex public key"),
                                )
                            })?);
                    }
                }
                TAG_UPSTREAM => {
                    let upstream = rest
                        .first()
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| malformed("u", "no upstream repository"))?;
                    announcement.fork_of = Some(upstream.clone());
                }
                TAG_HASHTAG => match rest.first() {
                    Some(t) if t == LEGACY_PERSONAL_FORK => {
                        announcement.legacy_personal_fork = true
                    }
                    Some(t) => announcement.hashtags.push(t.clone()),
                    None => {}
                },
                _ => {}
            }
        }
        Ok(announcement)
    }
}

fn non_empty(values: &[String]) -> impl Iterator<Item = String> + '_ {
    values.iter().filter(|v| !v.is_empty()).cloned()
}

fn identifier_of(event: &Event) -> Result<String> {
    let tag = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .find(|values| values[0] == TAG_D)
        .ok_or(Nip34Error::MissingTag("d"))?;
    tag.get(1)
        .filter(|d| !d.is_empty())
        .cloned()
        .ok_or_else(|| malformed("d", "empty repository id"))
}

/// Who may speak for the repository `owner` published as `identifier`: the owner plus the
/// `maintainers` of the owner's newest valid announcement among `announcements`.
///
/// Simplification, on purpose: ngit/gitworkshop define the maintainer set as the *transitive
/// closure* of pubkeys that list each other with the same `d`. We take one level only, from the
/// owner's own announcement; a maintainer listed only by another maintainer is not trusted
/// until the owner lists them too. That is stricter, never looser, and does not let a
/// maintainer widen the set alone. Events by other authors, with another `d`, that fail their
/// signature check, that do not parse, or that announce a subordinate fork are ignored. With
/// no valid owner announcement the set is the owner alone.
pub fn maintainer_set(
    owner: &PublicKey,
    identifier: &str,
    announcements: &[Event],
) -> BTreeSet<PublicKey> {
    let repo = RepoCoordinate::new(*owner, identifier);
    let mut set = BTreeSet::from([*owner]);
    if let Some((_, announcement)) = newest_announcement(&repo, announcements) {
        set.extend(announcement.maintainers);
    }
    set
}

/// The owner's newest valid announcement of `repo` among `events`: signature-checked, by the
/// owner, the same `d`, not a subordinate fork; the newest wins, on a tie the lowest id.
pub fn newest_announcement<'a>(
    repo: &RepoCoordinate,
    events: &'a [Event],
) -> Option<(&'a Event, RepositoryAnnouncement)> {
    events
        .iter()
        .filter(|e| e.kind == REPO_ANNOUNCEMENT && e.pubkey == repo.owner)
        .filter_map(|e| owner_announcement(repo, e).ok().map(|a| (e, a)))
        .max_by(|(x, _), (y, _)| newest_first(x, y))
}

/// A pull request (NIP-34 kind 1618): a contributor proposes the commit `c`, fetchable from
/// the `clone` URLs. Regular.
pub const PULL_REQUEST: Kind = Kind::Custom(1618);
/// A pull-request update (1619): a new tip `c` for the pull request `E` by `P`. Regular.
pub const PULL_REQUEST_UPDATE: Kind = Kind::Custom(1619);

/// A commit a pull request (1618) or an update of one (1619) proposes for a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedCommit {
    /// The repositories it is proposed to (`a`), at least one.
    pub repos: Vec<RepoCoordinate>,
    /// The tip commit (`c`).
    pub commit: String,
    /// Where the commit can be fetched (`clone`), at least one.
    pub clone: Vec<String>,
    /// The pull request and the event that proposed this commit, as CI events name them.
    pub context: crate::nipc1::PullRequestContext,
}

impl ProposedCommit {
    /// Reads a 1618 or a 1619 (whose root pull request is its `E`, by `P`). The signature is
    /// the caller's to check.
    pub fn from_event(event: &Event) -> Result<Self> {
        use crate::tags::tags_named;
        let value = |name: &'static str| -> Result<String> {
            tags_named(event, name)
                .next()
                .and_then(|t| t.get(1))
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(Nip34Error::MissingTag(name))
        };
        let (root, root_author) = if event.kind == PULL_REQUEST {
            (event.id, event.pubkey)
        } else if event.kind == PULL_REQUEST_UPDATE {
            let root = value("E")?;
            let author = value("P")?;
            (
                nostr::EventId::from_hex(&root)
                    .map_err(|_| malformed("E", format!("{root:?} is not an event id")))?,
                PublicKey::from_hex(&author)
                    .map_err(|_| malformed("P", format!("{author:?} is not a public key")))?,
            )
        } else {
            return Err(Nip34Error::WrongKind {
                expected: "pull request (1618) or pull-request update (1619)",
                found: event.kind.as_u16(),
            });
        };
        let repos = tags_named(event, "a")
            .filter_map(|t| t.get(1))
            .map(|value| RepoCoordinate::from_str(value))
            .collect::<Result<Vec<_>>>()?;
        if repos.is_empty() {
            return Err(Nip34Error::MissingTag("a"));
        }
        let commit = value("c")?;
        if !is_object_id(&commit) {
            return Err(malformed(
                "c",
                format!("{commit:?} is not a full commit id"),
            ));
        }
        let clone: Vec<String> = tags_named(event, TAG_CLONE)
            .flat_map(|t| t[1..].iter())
            .filter(|url| !url.is_empty())
            .cloned()
            .collect();
        if clone.is_empty() {
            return Err(Nip34Error::MissingTag("clone"));
        }
        Ok(ProposedCommit {
            repos,
            commit,
            clone,
            context: crate::nipc1::PullRequestContext {
                root,
                root_author,
                trigger: event.id,
                trigger_kind: event.kind,
                trigger_author: event.pubkey,
            },
        })
    }
}

/// The relay filter for the pull requests and their updates proposed to `repo`.
pub fn proposals_to(repo: &RepoCoordinate) -> nostr::Filter {
    nostr::Filter::new()
        .kinds([PULL_REQUEST, PULL_REQUEST_UPDATE])
        .custom_tag(
            nostr::SingleLetterTag::lowercase(nostr::Alphabet::A),
            repo.to_string(),
        )
}

/// The relay filter for `repo`'s announcements by its owner (30617), whose newest one names
/// the other maintainers ([`maintainer_set`]) and the clone URLs.
pub fn announcements_of(repo: &RepoCoordinate) -> nostr::Filter {
    nostr::Filter::new()
        .kind(REPO_ANNOUNCEMENT)
        .author(repo.owner)
        .identifier(repo.identifier.clone())
}

/// The relay filter for `repo`'s states (30618) signed by `maintainers`: anyone may publish a
/// state with the repository's `d`, and only theirs count ([`newest_state`]).
pub fn states_of(
    repo: &RepoCoordinate,
    maintainers: impl IntoIterator<Item = PublicKey>,
) -> nostr::Filter {
    nostr::Filter::new()
        .kind(REPO_STATE)
        .authors(maintainers)
        .identifier(repo.identifier.clone())
}

/// The newest valid state (30618) of `repo` signed by one of `maintainers` among `events`.
/// Anyone may publish a 30618 with the repository's `d`: only the maintainers' count.
pub fn newest_state<'a>(
    repo: &RepoCoordinate,
    maintainers: &BTreeSet<PublicKey>,
    events: &'a [Event],
) -> Option<(&'a Event, RepositoryState)> {
    events
        .iter()
        .filter(|e| e.kind == REPO_STATE && maintainers.contains(&e.pubkey))
        .filter_map(|e| state_of(repo, e).ok().map(|s| (e, s)))
        .max_by(|(x, _), (y, _)| newest_first(x, y))
}

/// `event` as the owner's announcement of `repo`, or why it is not one.
pub fn owner_announcement(
    repo: &RepoCoordinate,
    event: &Event,
) -> std::result::Result<RepositoryAnnouncement, String> {
    if event.kind != REPO_ANNOUNCEMENT {
        return Err(format!("it is kind {}, not 30617", event.kind.as_u16()));
    }
    if event.pubkey != repo.owner {
        return Err(format!("it is signed by {}, not the owner", event.pubkey));
    }
    event
        .verify()
        .map_err(|_| "bad id or signature".to_string())?;
    let parsed = RepositoryAnnouncement::from_event(event).map_err(|e| e.to_string())?;
    if parsed.identifier != repo.identifier {
        return Err(format!("it announces {:?}", parsed.identifier));
    }
    if parsed.is_subordinate_fork() {
        return Err("it announces a fork".into());
    }
    Ok(parsed)
}

/// `event` as a state of `repo` (any signer), or why it is not one.
pub fn state_of(
    repo: &RepoCoordinate,
    event: &Event,
) -> std::result::Result<RepositoryState, String> {
    if event.kind != REPO_STATE {
        return Err(format!("it is kind {}, not 30618", event.kind.as_u16()));
    }
    event
        .verify()
        .map_err(|_| "bad id or signature".to_string())?;
    let parsed = RepositoryState::from_event(event).map_err(|e| e.to_string())?;
    if parsed.identifier != repo.identifier {
        return Err(format!("it is the state of {:?}", parsed.identifier));
    }
    Ok(parsed)
}

/// NIP-01 order for replaceable events: the newest wins, on a tie the lowest id.
fn newest_first(x: &Event, y: &Event) -> std::cmp::Ordering {
    (x.created_at, std::cmp::Reverse(x.id)).cmp(&(y.created_at, std::cmp::Reverse(y.id)))
}

/// A repository state (kind 30618): where the maintainer says each branch and tag points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryState {
    /// The `d` tag, the same repository id as the announcement.
    pub identifier: String,
    /// Full ref name (`refs/heads/main`, `refs/tags/v1.0.0`) → commit id (40 or 64 lowercase hex).
    pub refs: BTreeMap<String, String>,
    /// The ref `HEAD` points at (`refs/heads/main`), from `["HEAD", "ref: refs/heads/main"]`.
    pub head: Option<String>,
}

impl RepositoryState {
    pub fn new(identifier: impl Into<String>) -> Self {
        RepositoryState {
            identifier: identifier.into(),
            refs: BTreeMap::new(),
            head: None,
        }
    }

    /// Adds a ref, checking its name and commit id.
    pub fn with_ref(mut self, name: impl Into<String>, commit: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let commit = commit.into();
        check_ref(&name, &commit)?;
        self.refs.insert(name, commit);
        Ok(self)
    }

    /// Points `HEAD` at `name` (a full ref name such as `refs/heads/main`).
    pub fn with_head(mut self, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_ref_name(&name)?;
        self.head = Some(name);
        Ok(self)
    }

    /// The commit `ref_name` points at. `ref_name` is a full ref name, or `HEAD`.
    pub fn commit_of(&self, ref_name: &str) -> Option<&str> {
        let name = if ref_name == TAG_HEAD {
            self.head.as_deref()?
        } else {
            ref_name
        };
        self.refs.get(name).map(String::as_str)
    }

    /// The refs whose commit differs from (or is absent in) `previous`, with their new commit:
    /// what a git watcher should consider building.
    pub fn moved_since<'a>(&'a self, previous: &'a RepositoryState) -> Vec<(&'a str, &'a str)> {
        self.refs
            .iter()
            .filter(|(name, commit)| previous.refs.get(*name) != Some(*commit))
            .map(|(name, commit)| (name.as_str(), commit.as_str()))
            .collect()
    }

    pub fn to_event_builder(&self) -> EventBuilder {
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        tags.extend(
            self.refs
                .iter()
                .map(|(name, commit)| custom_tag(name, [commit.clone()])),
        );
        if let Some(head) = &self.head {
            tags.push(custom_tag(TAG_HEAD, [format!("{HEAD_PREFIX}{head}")]));
        }
        EventBuilder::new(REPO_STATE, "")
            .tags(tags)
            .allow_self_tagging()
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        if event.kind != REPO_STATE {
            return Err(Nip34Error::WrongKind {
                expected: "repository state (30618)",
                found: event.kind.as_u16(),
            });
        }
        let mut state = RepositoryState::new(identifier_of(event)?);
        for tag in event.tags.iter() {
            let values = tag.as_slice();
            let name = values[0].as_str();
            if name == TAG_HEAD {
                let value = values.get(1).ok_or_else(|| malformed("HEAD", "no value"))?;
                let target = value.strip_prefix(HEAD_PREFIX).ok_or_else(|| {
                    malformed(
                        "HEAD",
                        format!("{value:?} is not of the form \"ref: refs/heads/<branch>\""),
                    )
                })?;
                check_ref_name(target)
                    .map_err(|_| malformed("HEAD", format!("{target:?} is not a full ref name")))?;
                state.head = Some(target.to_string());
            } else if name.starts_with(REFS_PREFIX) {
                let commit = values.get(1).ok_or_else(|| Nip34Error::BadRef {
                    name: name.to_string(),
                    reason: "no commit id".into(),
                })?;
                check_ref(name, commit)?;
                if state
                    .refs
                    .insert(name.to_string(), commit.clone())
                    .is_some()
                {
                    return Err(Nip34Error::BadRef {
                        name: name.to_string(),
                        reason: "given twice".into(),
                    });
                }
            }
        }
        Ok(state)
    }
}

fn check_ref_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Nip34Error::BadRef {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let rest = name
        .strip_prefix(REFS_PREFIX)
        .ok_or_else(|| bad("a ref name must start with refs/"))?;
    if rest.is_empty() || rest.ends_with('/') || rest.split('/').any(str::is_empty) {
        return Err(bad("empty path component"));
    }
    if rest.split('/').any(|part| part == "." || part == "..") {
        return Err(bad("`.` or `..` path component"));
    }
    if name.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("control character or space in the name"));
    }
    Ok(())
}

fn check_ref(name: &str, commit: &str) -> Result<()> {
    check_ref_name(name)?;
    if !is_object_id(commit) {
        return Err(Nip34Error::BadRef {
            name: name.to_string(),
            reason: format!("{commit:?} is not a full 40- or 64-hex lowercase commit id"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Timestamp};

    use super::*;

    const C1: &str = "0123456789abcdef0123456789abcdef01234567";
    const C2: &str = "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";

    fn sign(builder: EventBuilder, keys: &Keys) -> Event {
        builder.sign_with_keys(keys).unwrap()
    }

    fn event_with_tags(kind: Kind, tags: Vec<Vec<&str>>, keys: &Keys) -> Event {
        let tags: Vec<Tag> = tags.into_iter().map(|t| Tag::parse(t).unwrap()).collect();
        sign(EventBuilder::new(kind, "").tags(tags), keys)
    }

    fn sample_announcement(other: PublicKey) -> RepositoryAnnouncement {
        let mut a = RepositoryAnnouncement::new("quorum-ci");
        a.name = Some("Quorum CI".into());
        a.description = Some("CI over Nostr".into());
        a.web = vec![
            "https://git.example/quorum".into(),
            "https://mirror.example".into(),
        ];
        a.clone = vec![
            "https://git.example/quorum.git".into(),
            "git://x/q.git".into(),
        ];
        a.relays = vec![
            RelayUrl::parse("wss://relay.example").unwrap(),
            RelayUrl::parse("ws://127.0.0.1:7777").unwrap(),
        ];
        a.earliest_unique_commit = Some(C1.into());
        a.maintainers = vec![other];
        a.hashtags = vec!["ci".into()];
        a
    }

    #[test]
    fn announcement_round_trips_with_multi_value_tags() {
        let owner = Keys::generate();
        let other = Keys::generate().public_key();
        let announcement = sample_announcement(other);
        let event = sign(announcement.to_event_builder(), &owner);
        // One tag, many values.
        let clone = event
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == "clone")
            .collect::<Vec<_>>();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].as_slice().len(), 3);
        assert_eq!(
            RepositoryAnnouncement::from_event(&event).unwrap(),
            announcement
        );
        let coordinate = announcement.coordinate(&owner.public_key());
        assert_eq!(
            coordinate.to_string(),
            format!("30617:{}:quorum-ci", owner.public_key().to_hex())
        );
        assert_eq!(coordinate.to_string().parse(), Ok(coordinate));
    }

    #[test]
    fn fork_markers_are_read() {
        let keys = Keys::generate();
        let legacy = event_with_tags(
            REPO_ANNOUNCEMENT,
            vec![vec!["d", "x"], vec!["t", "personal-fork"]],
            &keys,
        );
        let parsed = RepositoryAnnouncement::from_event(&legacy).unwrap();
        assert!(parsed.is_subordinate_fork() && parsed.hashtags.is_empty());
        let mut fork = RepositoryAnnouncement::new("x");
        fork.fork_of = Some("https://git.example/x.git".into());
        let event = sign(fork.to_event_builder(), &keys);
        assert_eq!(RepositoryAnnouncement::from_event(&event).unwrap(), fork);
    }

    #[test]
    fn malformed_announcements_name_the_tag() {
        let keys = Keys::generate();
        let cases: Vec<(Vec<Vec<&str>>, &str)> = vec![
            (vec![vec!["name", "x"]], "missing `d`"),
            (vec![vec!["d", ""]], "`d`"),
            (
                vec![vec!["d", "x"], vec!["maintainers", "bob"]],
                "`maintainers`",
            ),
            (
                vec![vec!["d", "x"], vec!["relays", "not a url"]],
                "`relays`",
            ),
            (vec![vec!["d", "x"], vec!["r", "abc", "euc"]], "`r`"),
            (vec![vec!["d", "x"], vec!["u", ""]], "`u`"),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(REPO_ANNOUNCEMENT, tags.clone(), &keys);
            let err = RepositoryAnnouncement::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{tags:?}: {err}");
        }
        let wrong = event_with_tags(REPO_STATE, vec![vec!["d", "x"]], &keys);
        assert!(matches!(
            RepositoryAnnouncement::from_event(&wrong),
            Err(Nip34Error::WrongKind { found: 30618, .. })
        ));
        // An `r` tag without the euc marker is some other reference and is ignored.
        let plain_r = event_with_tags(
            REPO_ANNOUNCEMENT,
            vec![vec!["d", "x"], vec!["r", "whatever"]],
            &keys,
        );
        assert!(RepositoryAnnouncement::from_event(&plain_r).is_ok());
    }

    #[test]
    fn coordinates_parse_strictly() {
        let pk = Keys::generate().public_key().to_hex();
        let ok: RepoCoordinate = format!("30617:{pk}:a:b").parse().unwrap();
        assert_eq!(ok.identifier, "a:b");
        for bad in [
            format!("30618:{pk}:x"),
            format!("30617:{}:x", pk.to_uppercase()),
            "30617:abc:x".to_string(),
            format!("30617:{pk}:"),
            format!("30617:{pk}"),
            String::new(),
        ] {
            assert!(bad.parse::<RepoCoordinate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn maintainer_set_is_the_owner_plus_the_newest_listing() {
        let owner = Keys::generate();
        let alice = Keys::generate().public_key();
        let bob = Keys::generate().public_key();
        let mallory = Keys::generate();
        let mut old = RepositoryAnnouncement::new("repo");
        old.maintainers = vec![alice];
        let mut new = old.clone();
        new.maintainers = vec![bob];
        let old = sign(
            old.to_event_builder()
                .custom_created_at(Timestamp::from(1_000)),
            &owner,
        );
        let new_event = sign(
            new.to_event_builder()
                .custom_created_at(Timestamp::from(2_000)),
            &owner,
        );
        // A stranger announcing the same d cannot add himself.
        let mut forged = RepositoryAnnouncement::new("repo");
        forged.maintainers = vec![mallory.public_key()];
        let forged = sign(forged.to_event_builder(), &mallory);
        let set = maintainer_set(
            &owner.public_key(),
            "repo",
            &[old.clone(), new_event.clone(), forged],
        );
        assert_eq!(set, BTreeSet::from([owner.public_key(), bob]));
        // Another d does not count; no announcement at all leaves the owner alone.
        assert_eq!(
            maintainer_set(&owner.public_key(), "other", &[old, new_event]),
            BTreeSet::from([owner.public_key()])
        );
    }

    #[test]
    fn maintainer_set_ignores_bad_signatures() {
        let owner = Keys::generate();
        let mut a = RepositoryAnnouncement::new("repo");
        a.maintainers = vec![Keys::generate().public_key()];
        let event = sign(a.to_event_builder(), &owner);
        let mut json: serde_json::Value = serde_json::to_value(&event).unwrap();
        json["tags"][1][1] = serde_json::Value::String(Keys::generate().public_key().to_hex());
        let tampered: Event = serde_json::from_value(json).unwrap();
        assert_eq!(
            maintainer_set(&owner.public_key(), "repo", &[tampered]),
            BTreeSet::from([owner.public_key()])
        );
    }

    #[test]
    fn state_round_trips_and_resolves_refs() {
        let keys = Keys::generate();
        let state = RepositoryState::new("repo")
            .with_ref("refs/heads/main", C1)
            .unwrap()
            .with_ref("refs/tags/v1.0.0", C2)
            .unwrap()
            .with_head("refs/heads/main")
            .unwrap();
        let event = sign(state.to_event_builder(), &keys);
        let head = event
            .tags
            .iter()
            .find(|t| t.as_slice()[0] == "HEAD")
            .unwrap();
        assert_eq!(head.as_slice()[1], "ref: refs/heads/main");
        let parsed = RepositoryState::from_event(&event).unwrap();
        assert_eq!(parsed, state);
        assert_eq!(parsed.commit_of("refs/heads/main"), Some(C1));
        assert_eq!(parsed.commit_of("HEAD"), Some(C1));
        assert_eq!(parsed.commit_of("refs/tags/v1.0.0"), Some(C2));
        assert_eq!(parsed.commit_of("refs/heads/dev"), None);
        assert_eq!(parsed.commit_of("main"), None);

        let previous = RepositoryState::new("repo")
            .with_ref("refs/heads/main", C1)
            .unwrap();
        assert_eq!(state.moved_since(&previous), vec![("refs/tags/v1.0.0", C2)]);
    }

    #[test]
    fn users_name_repositories_by_coordinate_or_naddr() {
        let owner = nostr::Keys::generate().public_key();
        let repo = RepoCoordinate::new(owner, "app");
        let naddr = repo.to_naddr();
        assert!(naddr.starts_with("naddr1"), "{naddr}");
        assert_eq!(RepoCoordinate::parse_user(&naddr).unwrap(), repo);
        assert_eq!(RepoCoordinate::parse_user(&repo.to_string()).unwrap(), repo);
        assert!(RepoCoordinate::parse_user("naddr1qqqq").is_err());
        assert!(RepoCoordinate::parse_user("npub1xyz").is_err());
        let note = {
            use nostr::nips::nip01::Coordinate;
            use nostr::nips::nip19::{Nip19Coordinate, ToBech32};
            Nip19Coordinate::new(
                Coordinate::new(nostr::Kind::Custom(30023), owner).identifier("post"),
                [],
            )
            .to_bech32()
            .unwrap()
        };
        let err = RepoCoordinate::parse_user(&note).unwrap_err().to_string();
        assert!(err.contains("30023"), "{err}");
    }

    #[test]
    fn bad_refs_are_errors_that_name_the_ref() {
        let keys = Keys::generate();
        let upper = C1.to_uppercase();
        let cases: Vec<(Vec<Vec<&str>>, &str)> = vec![
            (vec![vec!["refs/heads/main", "abc"]], "missing `d`"),
            (
                vec![vec!["d", "r"], vec!["refs/heads/main", "abc"]],
                "ref `refs/heads/main`",
            ),
            (
                vec![vec!["d", "r"], vec!["refs/tags/v1", &upper]],
                "ref `refs/tags/v1`",
            ),
            (
                vec![vec!["d", "r"], vec!["refs/heads/main"]],
                "ref `refs/heads/main`: no commit id",
            ),
            (
                vec![vec!["d", "r"], vec!["refs/heads/", C1]],
                "ref `refs/heads/`",
            ),
            (
                vec![
                    vec!["d", "r"],
                    vec!["refs/heads/main", C1],
                    vec!["refs/heads/main", C1],
                ],
                "given twice",
            ),
            (vec![vec!["d", "r"], vec!["HEAD", C1]], "`HEAD`"),
            (vec![vec!["d", "r"], vec!["HEAD", "ref: main"]], "`HEAD`"),
        ];
        for (tags, needle) in cases {
            let event = event_with_tags(REPO_STATE, tags.clone(), &keys);
            let err = RepositoryState::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{tags:?}: {err}");
        }
        assert!(RepositoryState::new("r").with_ref("main", C1).is_err());
        assert!(
            RepositoryState::new("r")
                .with_ref("refs/heads/../x", C1)
                .is_err()
        );
    }

    #[test]
    fn state_ignores_extra_values_and_unknown_tags() {
        let keys = Keys::generate();
        // The removed "parent commits" extension may still appear after the commit id.
        let event = event_with_tags(
            REPO_STATE,
            vec![
                vec!["d", "r"],
                vec!["refs/heads/main", C1, "abcd"],
                vec!["alt", "repo state"],
            ],
            &keys,
        );
        let state = RepositoryState::from_event(&event).unwrap();
        assert_eq!(state.commit_of("refs/heads/main"), Some(C1));
        assert_eq!(state.head, None);
    }

    #[test]
    fn pull_requests_and_their_updates_propose_a_commit() {
        let owner = nostr::Keys::generate();
        let contributor = nostr::Keys::generate();
        let repo = RepoCoordinate::new(owner.public_key(), "app");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let pr = EventBuilder::new(PULL_REQUEST, "Fix it")
            .tags([
                custom_tag("a", [repo.to_string()]),
                custom_tag("c", [commit]),
                custom_tag("clone", ["https://git.example/fork.git"]),
                custom_tag("subject", ["Fix it"]),
            ])
            .sign_with_keys(&contributor)
            .unwrap();
        let proposed = ProposedCommit::from_event(&pr).unwrap();
        assert_eq!(proposed.repos, vec![repo.clone()]);
        assert_eq!(proposed.commit, commit);
        assert_eq!(
            proposed.clone,
            vec!["https://git.example/fork.git".to_string()]
        );
        assert_eq!(proposed.context.root, pr.id);
        assert_eq!(proposed.context.trigger_kind, PULL_REQUEST);
        assert_eq!(proposed.context.trigger_author, contributor.public_key());

        let update = EventBuilder::new(PULL_REQUEST_UPDATE, "")
            .tags([
                custom_tag("a", [repo.to_string()]),
                custom_tag("E", [pr.id.to_hex()]),
                custom_tag("P", [contributor.public_key().to_hex()]),
                custom_tag("c", ["89abcdef0123456789abcdef0123456789abcdef"]),
                custom_tag("clone", ["https://git.example/fork.git"]),
            ])
            .sign_with_keys(&contributor)
            .unwrap();
        let proposed = ProposedCommit::from_event(&update).unwrap();
        assert_eq!(proposed.context.root, pr.id);
        assert_eq!(proposed.context.trigger, update.id);
        assert_eq!(proposed.context.trigger_kind, PULL_REQUEST_UPDATE);

        // No commit, a short one, no clone URL: refused by name.
        for (drop, needle) in [("c", "`c`"), ("clone", "`clone`")] {
            let tags = pr.tags.iter().filter(|t| t.as_slice()[0] != drop).cloned();
            let event = EventBuilder::new(PULL_REQUEST, "")
                .tags(tags)
                .sign_with_keys(&contributor)
                .unwrap();
            let err = ProposedCommit::from_event(&event).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
