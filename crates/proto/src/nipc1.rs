//! ngit-ci CI events ("NIP-C1" in design.md): 9841 job result, 9842 workflow result and 39842
//! workflow progress, so that gitworkshop shows our runs next to the repository.
//!
//! The authoritative ngit-ci NIP is not readable to us; these shapes follow the subset that
//! gitworkshop documents and parses (shared/specs/nip34-git.md §7, snapshot 2026-07-24). The
//! kinds are experimental upstream and may change. Where that digest is silent we chose, and say
//! so at the item:
//! - `a` and `c` are required (gitworkshop queries by `#a` and `#c`); `w`, `o` and `r` are
//!   optional, because a 9840 re-run omits `o` and not every job comes from a workflow file.
//! - `queued_at` and `started_at` are Unix seconds, like every Nostr time.
//! - `in-progress` on 39842 is read as a count of running jobs, `queue` as a count of capacity
//!   rounds ahead.
//! - 9841's `logs` is required (gitworkshop's own `log_url` spelling is accepted on parse).
//! - Unknown `conclusion` values are an error here; gitworkshop maps them to `startup_failure`.
//!
//! `docs/protocol.md` §13 has examples.

use std::fmt;
use std::str::FromStr;

use nostr::{Event, EventBuilder, EventId, Kind, PublicKey, RelayUrl, Tag, Timestamp};

use crate::blossom::Sha256Hex;
use crate::nip34::{RepoCoordinate, is_object_id};
use crate::tags::{custom_tag, tags_named};

/// Manual trigger (a maintainer asks a coordinator to re-run a workflow). Regular.
pub const CI_MANUAL_TRIGGER: Kind = Kind::Custom(9840);
/// Job result, signed by the compute provider that ran the job. Regular.
pub const CI_JOB_RESULT: Kind = Kind::Custom(9841);
/// Workflow result: the combined outcome of one run attempt, by the coordinator. Regular.
pub const CI_WORKFLOW_RESULT: Kind = Kind::Custom(9842);
/// Workflow progress, by the coordinator. Addressable and NIP-40 expiring.
pub const CI_WORKFLOW_PROGRESS: Kind = Kind::Custom(39842);

const TAG_REPO: &str = "a";
const TAG_COMMIT: &str = "c";
const TAG_WORKFLOW: &str = "w";
const TAG_TRIGGER: &str = "o";
const TAG_REF: &str = "r";
const TAG_ROOT: &str = "E";
const TAG_ROOT_KIND: &str = "K";
const TAG_ROOT_AUTHOR: &str = "P";
const TAG_PARENT: &str = "e";
const TAG_PARENT_KIND: &str = "k";
const TAG_PARENT_AUTHOR: &str = "p";
const TAG_JOB: &str = "job";
const TAG_CONCLUSION: &str = "conclusion";
const TAG_LOGS: &str = "logs";
const TAG_LOG_URL: &str = "log_url";
const TAG_NAME: &str = "name";
const TAG_ARTIFACT: &str = "artifact";
const TAG_QUEUED_AT: &str = "queued_at";
const TAG_STARTED_AT: &str = "started_at";
const TAG_EXIT_CODE: &str = "exit_code";
const TAG_RUNS_ON: &str = "runs_on";
const TAG_QUOTE: &str = "q";
const MARKER_MANUAL_TRIGGER: &str = "manual-trigger";
const TAG_D: &str = "d";
const TAG_STATUS: &str = "status";
const TAG_QUEUE: &str = "queue";
const TAG_IN_PROGRESS: &str = "in-progress";
const TAG_EXPIRATION: &str = "expiration";
/// The kind of a NIP-34 pull request, the root of a PR-triggered run.
const PULL_REQUEST_KIND: u16 = 1618;

/// Why an event is not a valid ngit-ci CI event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CiError {
    #[error("kind {found} is not an ngit-ci {expected}")]
    WrongKind { expected: &'static str, found: u16 },
    #[error("missing `{0}` tag")]
    MissingTag(&'static str),
    #[error("malformed `{tag}` tag: {reason}")]
    MalformedTag { tag: &'static str, reason: String },
    #[error("`{0}` tag given twice")]
    Duplicate(&'static str),
    #[error("unknown {what} {value:?} (expected {expected})")]
    UnknownValue {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
}

type Result<T> = std::result::Result<T, CiError>;

fn malformed(tag: &'static str, reason: impl Into<String>) -> CiError {
    CiError::MalformedTag {
        tag,
        reason: reason.into(),
    }
}

fn optional_value(event: &Event, name: &'static str) -> Result<Option<String>> {
    crate::tags::single_value(event, name).map_err(|e| match e {
        crate::tags::SingleValueError::Duplicate(name) => CiError::Duplicate(name),
        crate::tags::SingleValueError::Empty(name) => malformed(name, "no value"),
    })
}

fn required_value(event: &Event, name: &'static str) -> Result<String> {
    optional_value(event, name)?.ok_or(CiError::MissingTag(name))
}

fn optional_number<T: FromStr>(event: &Event, name: &'static str, what: &str) -> Result<Option<T>> {
    optional_value(event, name)?
        .map(|v| {
            v.parse()
                .map_err(|_| malformed(name, format!("{v:?} is not {what}")))
        })
        .transpose()
}

fn optional_time(event: &Event, name: &'static str) -> Result<Option<Timestamp>> {
    optional_value(event, name)?
        .map(|v| {
            Timestamp::from_str(&v)
                .map_err(|_| malformed(name, format!("{v:?} is not a Unix timestamp")))
        })
        .transpose()
}

fn push_time(tags: &mut Vec<Tag>, name: &str, at: Option<Timestamp>) {
    if let Some(at) = at {
        tags.push(custom_tag(name, [at.as_secs().to_string()]));
    }
}

fn parse_event_id(tag: &'static str, hex: &str) -> Result<EventId> {
    EventId::from_hex(hex).map_err(|_| malformed(tag, format!("{hex:?} is not a 64-hex event id")))
}

fn parse_pubkey(tag: &'static str, hex: &str) -> Result<PublicKey> {
    PublicKey::from_hex(hex)
        .map_err(|_| malformed(tag, format!("{hex:?} is not a 64-hex public key")))
}

fn check_kind(event: &Event, kind: Kind, expected: &'static str) -> Result<()> {
    if event.kind == kind {
        Ok(())
    } else {
        Err(CiError::WrongKind {
            expected,
            found: event.kind.as_u16(),
        })
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, $expected:literal,
     { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CiError;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(CiError::UnknownValue {
                        what: $what,
                        value: other.to_string(),
                        expected: $expected,
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// What started the run (`o` tag).
    Trigger, "trigger", "push, pull_request, manual or schedule", {
        Push => "push",
        PullRequest => "pull_request",
        Manual => "manual",
        Schedule => "schedule",
    }
);

string_enum!(
    /// How a job or workflow ended (GitHub-style `conclusion` values).
    Conclusion, "conclusion",
    "success, failure, neutral, cancelled, skipped, timed_out or startup_failure", {
        Success => "success",
        Failure => "failure",
        Neutral => "neutral",
        Cancelled => "cancelled",
        Skipped => "skipped",
        TimedOut => "timed_out",
        StartupFailure => "startup_failure",
    }
);

string_enum!(
    /// Where a workflow stands (39842 `status` tag).
    ProgressStatus, "progress status", "queued, in_progress or concluded", {
        Queued => "queued",
        InProgress => "in_progress",
        Concluded => "concluded",
    }
);

impl Conclusion {
    /// gitworkshop's roll-up precedence (higher wins): startup_failure > timed_out > failure >
    /// (pending) > cancelled > success > neutral > skipped.
    pub const fn severity(self) -> u8 {
        match self {
            Conclusion::StartupFailure => 7,
            Conclusion::TimedOut => 6,
            Conclusion::Failure => 5,
            Conclusion::Cancelled => 3,
            Conclusion::Success => 2,
            Conclusion::Neutral => 1,
            Conclusion::Skipped => 0,
        }
    }

    /// The combined conclusion of several jobs (`None` for none).
    pub fn roll_up(conclusions: impl IntoIterator<Item = Conclusion>) -> Option<Conclusion> {
        conclusions.into_iter().max_by_key(|c| c.severity())
    }
}

/// The workflow file: `["w", PATH, SHA256 of its content]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub path: String,
    pub sha256: Option<Sha256Hex>,
}

/// The PR context of a PR-triggered run, NIP-22 style: the root PR (`E`/`K`/`P`) and the
/// concrete trigger, the PR itself or a 1619 update (`e`/`k`/`p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestContext {
    pub root: EventId,
    pub root_author: PublicKey,
    pub trigger: EventId,
    pub trigger_kind: Kind,
    pub trigger_author: PublicKey,
}

/// The context tags shared by 9841, 9842 and 39842.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiContext {
    /// One `a` per maintainer coordinate; at least one.
    pub repos: Vec<RepoCoordinate>,
    /// The commit (`c`), 40 or 64 lowercase hex.
    pub commit: String,
    pub workflow: Option<Workflow>,
    pub trigger: Option<Trigger>,
    /// The pushed ref (`r`), e.g. `refs/heads/main`.
    pub git_ref: Option<String>,
    pub pull_request: Option<PullRequestContext>,
}

impl CiContext {
    pub fn new(repo: RepoCoordinate, commit: impl Into<String>) -> Self {
        CiContext {
            repos: vec![repo],
            commit: commit.into(),
            workflow: None,
            trigger: None,
            git_ref: None,
            pull_request: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.repos.is_empty() {
            return Err(CiError::MissingTag("a"));
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
        if let Some(git_ref) = &self.git_ref
            && !git_ref.starts_with("refs/")
        {
            return Err(malformed(
                "r",
                format!("{git_ref:?} is not a full ref name"),
            ));
        }
        Ok(())
    }

    fn to_tags(&self) -> Result<Vec<Tag>> {
        self.validate()?;
        let mut tags: Vec<Tag> = self
            .repos
            .iter()
            .map(|repo| custom_tag(TAG_REPO, [repo.to_string()]))
            .collect();
        tags.push(custom_tag(TAG_COMMIT, [self.commit.clone()]));
        if let Some(workflow) = &self.workflow {
            let mut values = vec![workflow.path.clone()];
            values.extend(workflow.sha256.map(|h| h.to_hex()));
            tags.push(custom_tag(TAG_WORKFLOW, values));
        }
        if let Some(trigger) = self.trigger {
            tags.push(custom_tag(TAG_TRIGGER, [trigger.as_str()]));
        }
        if let Some(git_ref) = &self.git_ref {
            tags.push(custom_tag(TAG_REF, [git_ref.clone()]));
        }
        if let Some(pr) = &self.pull_request {
            tags.extend([
                custom_tag(TAG_ROOT, [pr.root.to_hex()]),
                custom_tag(TAG_ROOT_KIND, [PULL_REQUEST_KIND.to_string()]),
                custom_tag(TAG_ROOT_AUTHOR, [pr.root_author.to_hex()]),
                custom_tag(TAG_PARENT, [pr.trigger.to_hex()]),
                custom_tag(TAG_PARENT_KIND, [pr.trigger_kind.as_u16().to_string()]),
                custom_tag(TAG_PARENT_AUTHOR, [pr.trigger_author.to_hex()]),
            ]);
        }
        Ok(tags)
    }

    fn from_event(event: &Event) -> Result<Self> {
        let repos = tags_named(event, TAG_REPO)
            .map(|values| {
                let value = values.get(1).map(String::as_str).unwrap_or_default();
                RepoCoordinate::from_str(value).map_err(|e| malformed("a", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if repos.is_empty() {
            return Err(CiError::MissingTag("a"));
        }
        let workflow = match tags_named(event, TAG_WORKFLOW).next() {
            None => None,
            Some(values) => {
                let path = values
                    .get(1)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| malformed("w", "no workflow path"))?;
                let sha256 = match values.get(2).map(String::as_str) {
                    None | Some("") => None,
                    Some(hash) => Some(Sha256Hex::parse(hash).map_err(|_| {
                        malformed("w", format!("{hash:?} is not a 64-hex lowercase sha256"))
                    })?),
                };
                Some(Workflow {
                    path: path.clone(),
                    sha256,
                })
            }
        };
        let pull_request = match optional_value(event, TAG_ROOT)? {
            None => None,
            Some(root) => {
                let root_kind = required_value(event, TAG_ROOT_KIND)?;
                if root_kind != PULL_REQUEST_KIND.to_string() {
                    return Err(malformed(
                        "K",
                        format!("{root_kind:?}: the root of a CI run is a pull request (1618)"),
                    ));
                }
                let trigger_kind = required_value(event, TAG_PARENT_KIND)?;
                let trigger_kind: u16 = trigger_kind
                    .parse()
                    .map_err(|_| malformed("k", format!("{trigger_kind:?} is not a kind")))?;
                Some(PullRequestContext {
                    root: parse_event_id("E", &root)?,
                    root_author: parse_pubkey("P", &required_value(event, TAG_ROOT_AUTHOR)?)?,
                    trigger: parse_event_id("e", &required_value(event, TAG_PARENT)?)?,
                    trigger_kind: Kind::from_u16(trigger_kind),
                    trigger_author: parse_pubkey("p", &required_value(event, TAG_PARENT_AUTHOR)?)?,
                })
            }
        };
        let context = CiContext {
            repos,
            commit: required_value(event, TAG_COMMIT)?,
            workflow,
            trigger: optional_value(event, TAG_TRIGGER)?
                .map(|o| o.parse())
                .transpose()?,
            git_ref: optional_value(event, TAG_REF)?,
            pull_request,
        };
        context.validate()?;
        Ok(context)
    }
}

/// A quoted event: `["q", ID, RELAY, PUBKEY]` (+ `manual-trigger` for the 9840 of a re-run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub id: EventId,
    pub relay: Option<RelayUrl>,
    pub author: Option<PublicKey>,
}

impl Quote {
    pub fn of(event: &Event) -> Self {
        Quote {
            id: event.id,
            relay: None,
            author: Some(event.pubkey),
        }
    }

    fn to_tag(&self, manual_trigger: bool) -> Tag {
        let mut values = vec![
            self.id.to_hex(),
            self.relay
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            self.author.map(|a| a.to_hex()).unwrap_or_default(),
        ];
        if manual_trigger {
            values.push(MARKER_MANUAL_TRIGGER.to_string());
        }
        custom_tag(TAG_QUOTE, values)
    }

    /// Parses one `q` tag; returns the quote and whether it is the manual trigger.
    fn parse(values: &[String]) -> Result<(Self, bool)> {
        let id = parse_event_id("q", values.get(1).map(String::as_str).unwrap_or_default())?;
        let relay = match values.get(2).map(String::as_str) {
            None | Some("") => None,
            Some(url) => Some(
                RelayUrl::parse(url).map_err(|e| malformed("q", format!("relay {url:?}: {e}")))?,
            ),
        };
        let author = match values.get(3).map(String::as_str) {
            None | Some("") => None,
            Some(hex) => Some(parse_pubkey("q", hex)?),
        };
        let manual = values.get(4).map(String::as_str) == Some(MARKER_MANUAL_TRIGGER);
        Ok((Quote { id, relay, author }, manual))
    }
}

/// The job results of one attempt and the manual trigger, if any.
fn parse_quotes(event: &Event) -> Result<(Vec<Quote>, Option<Quote>)> {
    let mut jobs = Vec::new();
    let mut manual = None;
    for values in tags_named(event, TAG_QUOTE) {
        match Quote::parse(values)? {
            (quote, true) if manual.is_none() => manual = Some(quote),
            (_, true) => return Err(malformed("q", "two manual-trigger quotes")),
            (quote, false) => jobs.push(quote),
        }
    }
    Ok((jobs, manual))
}

/// A job result (kind 9841), signed by the provider that ran the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiJobResult {
    pub context: CiContext,
    /// The job id (`job`).
    pub job: String,
    pub conclusion: Conclusion,
    /// URL of the full log (`logs`).
    pub logs: String,
    pub name: Option<String>,
    /// Artifact URLs (`artifact`, repeatable).
    pub artifacts: Vec<String>,
    pub queued_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// Runner labels (`runs_on`, one tag, many values).
    pub runs_on: Vec<String>,
    /// A short log tail (`content`).
    pub log_tail: String,
}

impl CiJobResult {
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let mut tags = self.context.to_tags()?;
        tags.push(custom_tag(TAG_JOB, [self.job.clone()]));
        tags.push(custom_tag(TAG_CONCLUSION, [self.conclusion.as_str()]));
        tags.push(custom_tag(TAG_LOGS, [self.logs.clone()]));
        if let Some(name) = &self.name {
            tags.push(custom_tag(TAG_NAME, [name.clone()]));
        }
        tags.extend(
            self.artifacts
                .iter()
                .map(|url| custom_tag(TAG_ARTIFACT, [url.clone()])),
        );
        push_time(&mut tags, TAG_QUEUED_AT, self.queued_at);
        push_time(&mut tags, TAG_STARTED_AT, self.started_at);
        if let Some(code) = self.exit_code {
            tags.push(custom_tag(TAG_EXIT_CODE, [code.to_string()]));
        }
        if !self.runs_on.is_empty() {
            tags.push(custom_tag(TAG_RUNS_ON, self.runs_on.clone()));
        }
        Ok(EventBuilder::new(CI_JOB_RESULT, self.log_tail.clone())
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, CI_JOB_RESULT, "job result (9841)")?;
        let logs = match optional_value(event, TAG_LOGS)? {
            Some(logs) => logs,
            None => optional_value(event, TAG_LOG_URL)?.ok_or(CiError::MissingTag("logs"))?,
        };
        Ok(CiJobResult {
            context: CiContext::from_event(event)?,
            job: required_value(event, TAG_JOB)?,
            conclusion: required_value(event, TAG_CONCLUSION)?.parse()?,
            logs,
            name: optional_value(event, TAG_NAME)?,
            artifacts: tags_named(event, TAG_ARTIFACT)
                .filter_map(|v| v.get(1).filter(|u| !u.is_empty()).cloned())
                .collect(),
            queued_at: optional_time(event, TAG_QUEUED_AT)?,
            started_at: optional_time(event, TAG_STARTED_AT)?,
            exit_code: optional_number(event, TAG_EXIT_CODE, "an exit code")?,
            runs_on: tags_named(event, TAG_RUNS_ON)
                .flat_map(|v| v[1..].iter().filter(|l| !l.is_empty()).cloned())
                .collect(),
            log_tail: event.content.clone(),
        })
    }
}

/// A workflow result (kind 9842): one run attempt, by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiWorkflowResult {
    pub context: CiContext,
    pub conclusion: Conclusion,
    pub queued_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    /// One quote per 9841 of this attempt (gitworkshop shows only quoted job results).
    pub jobs: Vec<Quote>,
    /// The 9840 that asked for this re-run.
    pub manual_trigger: Option<Quote>,
    pub content: String,
}

impl CiWorkflowResult {
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let mut tags = self.context.to_tags()?;
        tags.push(custom_tag(TAG_CONCLUSION, [self.conclusion.as_str()]));
        push_time(&mut tags, TAG_QUEUED_AT, self.queued_at);
        push_time(&mut tags, TAG_STARTED_AT, self.started_at);
        tags.extend(self.jobs.iter().map(|q| q.to_tag(false)));
        tags.extend(self.manual_trigger.iter().map(|q| q.to_tag(true)));
        Ok(EventBuilder::new(CI_WORKFLOW_RESULT, self.content.clone())
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, CI_WORKFLOW_RESULT, "workflow result (9842)")?;
        let (jobs, manual_trigger) = parse_quotes(event)?;
        Ok(CiWorkflowResult {
            context: CiContext::from_event(event)?,
            conclusion: required_value(event, TAG_CONCLUSION)?.parse()?,
            queued_at: optional_time(event, TAG_QUEUED_AT)?,
            started_at: optional_time(event, TAG_STARTED_AT)?,
            jobs,
            manual_trigger,
            content: event.content.clone(),
        })
    }
}

/// Workflow progress (kind 39842, addressable, expiring): replaced as the run moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiWorkflowProgress {
    /// `d`: stable for the attempt, so each update replaces the last.
    pub identifier: String,
    pub context: CiContext,
    pub status: ProgressStatus,
    /// Present once `status` is `concluded` (ambiguous upstream; required then, here).
    pub conclusion: Option<Conclusion>,
    pub queued_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    /// The growing set of finished job results.
    pub jobs: Vec<Quote>,
    pub manual_trigger: Option<Quote>,
    /// Estimated capacity rounds ahead in the queue.
    pub queue: Option<u32>,
    /// Jobs running now.
    pub in_progress: Option<u32>,
    /// NIP-40; required: a stale progress event must disappear.
    pub expiration: Timestamp,
    pub content: String,
}

impl CiWorkflowProgress {
    fn validate(&self) -> Result<()> {
        if self.identifier.is_empty() {
            return Err(malformed("d", "empty identifier"));
        }
        if self.status == ProgressStatus::Concluded && self.conclusion.is_none() {
            return Err(CiError::MissingTag("conclusion"));
        }
        Ok(())
    }

    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        self.validate()?;
        let mut tags = vec![Tag::identifier(self.identifier.clone())];
        tags.extend(self.context.to_tags()?);
        tags.push(custom_tag(TAG_STATUS, [self.status.as_str()]));
        if let Some(conclusion) = self.conclusion {
            tags.push(custom_tag(TAG_CONCLUSION, [conclusion.as_str()]));
        }
        push_time(&mut tags, TAG_QUEUED_AT, self.queued_at);
        push_time(&mut tags, TAG_STARTED_AT, self.started_at);
        tags.extend(self.jobs.iter().map(|q| q.to_tag(false)));
        tags.extend(self.manual_trigger.iter().map(|q| q.to_tag(true)));
        if let Some(queue) = self.queue {
            tags.push(custom_tag(TAG_QUEUE, [queue.to_string()]));
        }
        if let Some(running) = self.in_progress {
            tags.push(custom_tag(TAG_IN_PROGRESS, [running.to_string()]));
        }
        tags.push(Tag::expiration(self.expiration));
        Ok(
            EventBuilder::new(CI_WORKFLOW_PROGRESS, self.content.clone())
                .tags(tags)
                .allow_self_tagging(),
        )
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, CI_WORKFLOW_PROGRESS, "workflow progress (39842)")?;
        let (jobs, manual_trigger) = parse_quotes(event)?;
        let expiration = required_value(event, TAG_EXPIRATION)?;
        let expiration = Timestamp::from_str(&expiration).map_err(|_| {
            malformed(
                "expiration",
                format!("{expiration:?} is not a Unix timestamp"),
            )
        })?;
        let progress = CiWorkflowProgress {
            identifier: required_value(event, TAG_D)?,
            context: CiContext::from_event(event)?,
            status: required_value(event, TAG_STATUS)?.parse()?,
            conclusion: optional_value(event, TAG_CONCLUSION)?
                .map(|c| c.parse())
                .transpose()?,
            queued_at: optional_time(event, TAG_QUEUED_AT)?,
            started_at: optional_time(event, TAG_STARTED_AT)?,
            jobs,
            manual_trigger,
            queue: optional_number(event, TAG_QUEUE, "a count")?,
            in_progress: optional_number(event, TAG_IN_PROGRESS, "a count")?,
            expiration,
            content: event.content.clone(),
        };
        progress.validate()?;
        Ok(progress)
    }

    /// Whether it still means "pending" at `now`: unexpired and not concluded.
    pub fn is_pending(&self, now: Timestamp) -> bool {
        now < self.expiration && self.status != ProgressStatus::Concluded
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sign(builder: EventBuilder, keys: &Keys) -> Event {
        builder.sign_with_keys(keys).unwrap()
    }

    fn context(owner: &Keys) -> CiContext {
        let mut context = CiContext::new(RepoCoordinate::new(owner.public_key(), "app"), COMMIT);
        context
            .repos
            .push(RepoCoordinate::new(Keys::generate().public_key(), "app"));
        context.workflow = Some(Workflow {
            path: ".quorum/pipeline.yml".into(),
            sha256: Some(Sha256Hex::from_bytes([9; 32])),
        });
        context.trigger = Some(Trigger::Push);
        context.git_ref = Some("refs/heads/main".into());
        context
    }

    fn job_result(owner: &Keys) -> CiJobResult {
        CiJobResult {
            context: context(owner),
            job: "build".into(),
            conclusion: Conclusion::Success,
            logs: "https://blossom.example/c0de.txt".into(),
            name: Some("Build".into()),
            artifacts: vec!["https://blossom.example/9b2e.tar".into()],
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_005)),
            exit_code: Some(0),
            runs_on: vec!["linux".into(), "x86_64".into()],
            log_tail: "build finished\n".into(),
        }
    }

    #[test]
    fn job_result_round_trips_with_every_tag() {
        let owner = Keys::generate();
        let runner = Keys::generate();
        let result = job_result(&owner);
        let event = sign(result.to_event_builder().unwrap(), &runner);
        assert_eq!(CiJobResult::from_event(&event).unwrap(), result);
        let a_tags = event.tags.iter().filter(|t| t.as_slice()[0] == "a").count();
        assert_eq!(a_tags, 2);
        // gitworkshop's alternative spelling of the log URL.
        let mut tags: Vec<Tag> = event
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] != "logs")
            .cloned()
            .collect();
        tags.push(custom_tag("log_url", ["https://x.example/log"]));
        let alt = sign(EventBuilder::new(CI_JOB_RESULT, "").tags(tags), &runner);
        assert_eq!(
            CiJobResult::from_event(&alt).unwrap().logs,
            "https://x.example/log"
        );
    }

    #[test]
    fn pull_request_context_round_trips() {
        let owner = Keys::generate();
        let author = Keys::generate();
        let mut result = job_result(&owner);
        result.context.trigger = Some(Trigger::PullRequest);
        result.context.git_ref = None;
        result.context.pull_request = Some(PullRequestContext {
            root: EventId::from_hex(&"aa".repeat(32)).unwrap(),
            root_author: author.public_key(),
            trigger: EventId::from_hex(&"bb".repeat(32)).unwrap(),
            trigger_kind: Kind::from_u16(1619),
            trigger_author: author.public_key(),
        });
        // The PR author's key in `p` must survive even when they sign it themselves.
        let event = sign(result.to_event_builder().unwrap(), &author);
        assert_eq!(CiJobResult::from_event(&event).unwrap(), result);
    }

    #[test]
    fn workflow_result_and_progress_round_trip() {
        let owner = Keys::generate();
        let coordinator = Keys::generate();
        let runner = Keys::generate();
        let job = sign(job_result(&owner).to_event_builder().unwrap(), &runner);
        let mut manual = Quote::of(&job);
        manual.id = EventId::from_hex(&"cd".repeat(32)).unwrap();
        manual.relay = Some(RelayUrl::parse("wss://relay.example").unwrap());
        let result = CiWorkflowResult {
            context: context(&owner),
            conclusion: Conclusion::Failure,
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: None,
            jobs: vec![Quote::of(&job)],
            manual_trigger: Some(manual.clone()),
            content: String::new(),
        };
        let event = sign(result.to_event_builder().unwrap(), &coordinator);
        let manual_tag = event
            .tags
            .iter()
            .find(|t| t.as_slice().get(4).map(String::as_str) == Some("manual-trigger"))
            .unwrap();
        assert_eq!(manual_tag.as_slice()[1], "cd".repeat(32));
        assert_eq!(CiWorkflowResult::from_event(&event).unwrap(), result);

        let progress = CiWorkflowProgress {
            identifier: "run-5f0c".into(),
            context: context(&owner),
            status: ProgressStatus::InProgress,
            conclusion: None,
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_010)),
            jobs: vec![Quote::of(&job)],
            manual_trigger: None,
            queue: Some(0),
            in_progress: Some(2),
            expiration: Timestamp::from(1_800_003_600),
            content: String::new(),
        };
        let event = sign(progress.to_event_builder().unwrap(), &coordinator);
        assert_eq!(event.tags.identifier(), Some("run-5f0c"));
        let parsed = CiWorkflowProgress::from_event(&event).unwrap();
        assert_eq!(parsed, progress);
        assert!(parsed.is_pending(Timestamp::from(1_800_000_100)));
        assert!(!parsed.is_pending(Timestamp::from(1_800_003_600)));
        let mut concluded = progress.clone();
        concluded.status = ProgressStatus::Concluded;
        assert_eq!(
            concluded.to_event_builder().unwrap_err(),
            CiError::MissingTag("conclusion")
        );
    }

    #[test]
    fn enums_round_trip_and_roll_up() {
        for c in Conclusion::ALL {
            assert_eq!(c.as_str().parse::<Conclusion>(), Ok(*c));
        }
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>(), Ok(*t));
        }
        for s in ProgressStatus::ALL {
            assert_eq!(s.as_str().parse::<ProgressStatus>(), Ok(*s));
        }
        assert_eq!(
            Conclusion::roll_up([
                Conclusion::Success,
                Conclusion::TimedOut,
                Conclusion::Failure
            ]),
            Some(Conclusion::TimedOut)
        );
        assert_eq!(
            Conclusion::roll_up([Conclusion::Skipped, Conclusion::Neutral]),
            Some(Conclusion::Neutral)
        );
        assert_eq!(Conclusion::roll_up([]), None);
    }

    #[test]
    fn malformed_ci_events_name_the_tag() {
        let keys = Keys::generate();
        let good = sign(job_result(&keys).to_event_builder().unwrap(), &keys);
        let tags: Vec<Vec<String>> = good.tags.iter().map(|t| t.clone().to_vec()).collect();
        let edit = |name: &str, value: Option<&str>| -> Event {
            let tags: Vec<Tag> = tags
                .iter()
                .filter_map(|t| {
                    if t[0] != name {
                        return Some(custom_tag(&t[0], t[1..].to_vec()));
                    }
                    value.map(|v| custom_tag(name, [v]))
                })
                .collect();
            sign(EventBuilder::new(CI_JOB_RESULT, "").tags(tags), &keys)
        };
        let cases: Vec<(Event, &str)> = vec![
            (edit("a", None), "missing `a`"),
            (edit("a", Some("30617:nope:app")), "`a`"),
            (edit("c", None), "missing `c`"),
            (edit("c", Some("main")), "`c`"),
            (edit("w", Some("")), "`w`"),
            (edit("o", Some("tuesday")), "unknown trigger"),
            (edit("r", Some("main")), "`r`"),
            (edit("job", None), "missing `job`"),
            (edit("conclusion", None), "missing `conclusion`"),
            (edit("conclusion", Some("done")), "unknown conclusion"),
            (edit("logs", None), "missing `logs`"),
            (edit("queued_at", Some("noon")), "`queued_at`"),
            (edit("exit_code", Some("zero")), "`exit_code`"),
        ];
        for (event, needle) in cases {
            let err = CiJobResult::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let wrong = sign(EventBuilder::new(CI_WORKFLOW_RESULT, ""), &keys);
        assert!(matches!(
            CiJobResult::from_event(&wrong),
            Err(CiError::WrongKind { found: 9842, .. })
        ));
    }

    #[test]
    fn malformed_progress_names_the_tag() {
        let keys = Keys::generate();
        let base = |extra: Vec<Vec<&str>>, drop: &str| -> Event {
            let coordinate = RepoCoordinate::new(keys.public_key(), "app").to_string();
            let mut tags: Vec<Vec<String>> = vec![
                vec!["d".into(), "run".into()],
                vec!["a".into(), coordinate],
                vec!["c".into(), COMMIT.into()],
                vec!["status".into(), "queued".into()],
                vec!["expiration".into(), "1900000000".into()],
            ];
            tags.retain(|t| t[0] != drop);
            tags.extend(
                extra
                    .into_iter()
                    .map(|t| t.into_iter().map(String::from).collect()),
            );
            let tags: Vec<Tag> = tags
                .into_iter()
                .map(|t| custom_tag(&t[0], t[1..].to_vec()))
                .collect();
            sign(
                EventBuilder::new(CI_WORKFLOW_PROGRESS, "").tags(tags),
                &keys,
            )
        };
        assert!(CiWorkflowProgress::from_event(&base(vec![], "")).is_ok());
        let cases: Vec<(Event, &str)> = vec![
            (base(vec![], "d"), "missing `d`"),
            (base(vec![], "expiration"), "missing `expiration`"),
            (base(vec![], "status"), "missing `status`"),
            (
                base(vec![vec!["status", "x"]], "status"),
                "unknown progress status",
            ),
            (base(vec![vec!["queue", "-1"]], ""), "`queue`"),
            (base(vec![vec!["in-progress", "many"]], ""), "`in-progress`"),
            (base(vec![vec!["q", "zz"]], ""), "`q`"),
            (
                base(
                    vec![
                        vec!["q", &"aa".repeat(32), "", "", "manual-trigger"],
                        vec!["q", &"bb".repeat(32), "", "", "manual-trigger"],
                    ],
                    "",
                ),
                "two manual-trigger",
            ),
            (
                base(vec![vec!["status", "concluded"]], "status"),
                "missing `conclusion`",
            ),
        ];
        for (event, needle) in cases {
            let err = CiWorkflowProgress::from_event(&event).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
