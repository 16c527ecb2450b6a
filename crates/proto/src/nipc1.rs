//! ngit-ci CI events ("NIP-C1" in design.md): 9841 job result, 9842 workflow result and 39842
//! workflow progress, so that gitworkshop shows our runs next to the repository.
//!
//! The shapes follow the ngit-ci `NIP.md` ("NIP-C1 Nostr CI", draft) and what gitworkshop and
//! Amethyst/Quartz parse (shared/reviews/ecosystem.md §1). The kinds are experimental upstream
//! and may change. Where we are laxer or stricter than the spec, we say so at the item:
//! - `a` and `c` are required (gitworkshop queries by `#a` and `#c`). `w`, `o` and `r` are
//!   optional in the types, because a 9840 omits `o`; [`check_gitworkshop_conformance`] holds
//!   what we publish to the spec, which wants `w` (with the file's sha256) and `o` everywhere.
//! - `r` is two things: a value under `refs/` is the pushed git ref (context); on a 9842 another
//!   value is the workflow run id, equal to the 39842's `d`.
//! - `queued_at` and `started_at` are Unix seconds, like every Nostr time.
//! - `in-progress` on 39842 lists the ids of the jobs running now; `queue` counts capacity
//!   rounds ahead.
//! - 9841's `logs` is a SHOULD: absent reads as empty (gitworkshop's own `log_url` spelling is
//!   accepted on parse).
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
/// The marker of a standing service request's quote (9843), which we neither send nor model.
const MARKER_SERVICE_REQUEST: &str = "service-request";
/// The prefix of a log tail whose earlier bytes were left out.
const LOG_TAIL_OMITTED: &str = "[log-tail omitted=";
/// The longest a 39842 may live: its expiration is at most this after its `created_at`.
pub const PROGRESS_MAX_LIFETIME_SECS: u64 = 30 * 60;
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
        Self::parse(event, true)
    }

    /// The context of an event whose NIP-22 tags are not a PR context of this shape (a 9840,
    /// whose only `p` is the coordinator).
    fn from_event_without_pull_request(event: &Event) -> Result<Self> {
        Self::parse(event, false)
    }

    fn parse(event: &Event, with_pull_request: bool) -> Result<Self> {
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
        let root = if with_pull_request {
            optional_value(event, TAG_ROOT)?
        } else {
            None
        };
        let pull_request = match root {
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
            // The first `r` under `refs/` is the git ref; others are a 9842's run id.
            git_ref: tags_named(event, TAG_REF)
                .filter_map(|v| v.get(1))
                .find(|v| v.starts_with("refs/"))
                .cloned(),
            pull_request,
        };
        context.validate()?;
        Ok(context)
    }
}

/// A quoted event: `["q", ID, RELAY, PUBKEY, MARKER]`, the marker being the job id for a
/// job result and `manual-trigger` for the 9840 of a re-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub id: EventId,
    pub relay: Option<RelayUrl>,
    pub author: Option<PublicKey>,
    /// The job id of a quoted job result; Quartz ignores a job quote without it.
    pub job: Option<String>,
}

impl Quote {
    pub fn of(event: &Event) -> Self {
        Quote {
            id: event.id,
            relay: None,
            author: Some(event.pubkey),
            job: None,
        }
    }

    /// A quote of the job result `event` of job `job`, marked with the job id.
    pub fn job_result(event: &Event, job: impl Into<String>) -> Self {
        Quote {
            job: Some(job.into()),
            ..Quote::of(event)
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
        } else if let Some(job) = &self.job {
            values.push(job.clone());
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
        let marker = values.get(4).filter(|m| !m.is_empty());
        let manual = marker.map(String::as_str) == Some(MARKER_MANUAL_TRIGGER);
        let job = marker.filter(|_| !manual).cloned();
        Ok((
            Quote {
                id,
                relay,
                author,
                job,
            },
            manual,
        ))
    }
}

/// The job results of one attempt and the manual trigger, if any.
fn parse_quotes(event: &Event) -> Result<(Vec<Quote>, Option<Quote>)> {
    let mut jobs = Vec::new();
    let mut manual = None;
    for values in tags_named(event, TAG_QUOTE) {
        // A 9841's quote of its 39842 is an address, and a service request is not a job.
        let value = values.get(1).map(String::as_str).unwrap_or_default();
        if value.starts_with("39842:")
            || values.get(4).map(String::as_str) == Some(MARKER_SERVICE_REQUEST)
        {
            continue;
        }
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
    /// URL of the full log (`logs`); empty: none (the tag is left out).
    pub logs: String,
    pub name: Option<String>,
    /// One per file (`artifact`, repeatable).
    pub artifacts: Vec<CiArtifact>,
    /// The run's progress event (`["q", "39842:<coordinator>:<run>"]`).
    pub workflow_run: Option<RunAddress>,
    pub queued_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// Runner labels (`runs_on`, one tag, many values).
    pub runs_on: Vec<String>,
    /// A short log tail (`content`).
    pub log_tail: String,
    /// How many earlier bytes of the log the tail leaves out (`[log-tail omitted=N]` prefix).
    pub log_omitted: Option<u64>,
}

/// A file a job produced: `["artifact", URL, FILENAME, NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiArtifact {
    /// A Blossom URL, whose path names the file's sha256.
    pub url: String,
    /// The file's path within the artifact; gitworkshop shows it.
    pub filename: Option<String>,
    /// The artifact (group of files) it belongs to.
    pub name: Option<String>,
}

/// The address of a run's progress event, `39842:<coordinator hex>:<run id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAddress {
    pub coordinator: PublicKey,
    pub run: String,
}

impl fmt::Display for RunAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            CI_WORKFLOW_PROGRESS.as_u16(),
            self.coordinator.to_hex(),
            self.run
        )
    }
}

impl RunAddress {
    fn parse(value: &str) -> Result<Self> {
        let bad = || malformed("q", format!("{value:?} is not a 39842 address"));
        let mut parts = value.splitn(3, ':');
        let (Some("39842"), Some(pubkey), Some(run)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if run.is_empty() {
            return Err(bad());
        }
        Ok(RunAddress {
            coordinator: parse_pubkey("q", pubkey)?,
            run: run.to_string(),
        })
    }
}

impl CiJobResult {
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let mut tags = self.context.to_tags()?;
        tags.push(custom_tag(TAG_JOB, [self.job.clone()]));
        tags.push(custom_tag(TAG_CONCLUSION, [self.conclusion.as_str()]));
        if !self.logs.is_empty() {
            tags.push(custom_tag(TAG_LOGS, [self.logs.clone()]));
        }
        if let Some(name) = &self.name {
            tags.push(custom_tag(TAG_NAME, [name.clone()]));
        }
        if let Some(run) = &self.workflow_run {
            tags.push(custom_tag(TAG_QUOTE, [run.to_string()]));
        }
        tags.extend(self.artifacts.iter().map(|a| {
            let mut values = vec![a.url.clone()];
            // The name needs a filename before it: positions are meaningful.
            if a.filename.is_some() || a.name.is_some() {
                values.push(a.filename.clone().unwrap_or_default());
            }
            values.extend(a.name.clone());
            custom_tag(TAG_ARTIFACT, values)
        }));
        push_time(&mut tags, TAG_QUEUED_AT, self.queued_at);
        push_time(&mut tags, TAG_STARTED_AT, self.started_at);
        if let Some(code) = self.exit_code {
            tags.push(custom_tag(TAG_EXIT_CODE, [code.to_string()]));
        }
        if !self.runs_on.is_empty() {
            tags.push(custom_tag(TAG_RUNS_ON, self.runs_on.clone()));
        }
        let content = match self.log_omitted {
            Some(omitted) => format!("{LOG_TAIL_OMITTED}{omitted}]\n{}", self.log_tail),
            None => self.log_tail.clone(),
        };
        Ok(EventBuilder::new(CI_JOB_RESULT, content)
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, CI_JOB_RESULT, "job result (9841)")?;
        let logs = match optional_value(event, TAG_LOGS)? {
            Some(logs) => logs,
            None => optional_value(event, TAG_LOG_URL)?.unwrap_or_default(),
        };
        let (log_omitted, log_tail) = split_log_tail(&event.content);
        let workflow_run = tags_named(event, TAG_QUOTE)
            .filter_map(|v| v.get(1))
            .find(|v| v.starts_with("39842:"))
            .map(|v| RunAddress::parse(v))
            .transpose()?;
        Ok(CiJobResult {
            context: CiContext::from_event(event)?,
            job: required_value(event, TAG_JOB)?,
            conclusion: required_value(event, TAG_CONCLUSION)?.parse()?,
            logs,
            name: optional_value(event, TAG_NAME)?,
            artifacts: tags_named(event, TAG_ARTIFACT)
                .filter(|v| v.get(1).is_some_and(|u| !u.is_empty()))
                .map(|v| CiArtifact {
                    url: v[1].clone(),
                    filename: v.get(2).filter(|f| !f.is_empty()).cloned(),
                    name: v.get(3).filter(|n| !n.is_empty()).cloned(),
                })
                .collect(),
            workflow_run,
            queued_at: optional_time(event, TAG_QUEUED_AT)?,
            started_at: optional_time(event, TAG_STARTED_AT)?,
            exit_code: optional_number(event, TAG_EXIT_CODE, "an exit code")?,
            runs_on: tags_named(event, TAG_RUNS_ON)
                .flat_map(|v| v[1..].iter().filter(|l| !l.is_empty()).cloned())
                .collect(),
            log_tail,
            log_omitted,
        })
    }
}

/// Splits `[log-tail omitted=N]\n` off a job result's content, when it is there.
fn split_log_tail(content: &str) -> (Option<u64>, String) {
    content
        .strip_prefix(LOG_TAIL_OMITTED)
        .and_then(|rest| rest.split_once("]\n"))
        .and_then(|(n, tail)| Some((Some(n.parse().ok()?), tail.to_string())))
        .unwrap_or_else(|| (None, content.to_string()))
}

/// A workflow result (kind 9842): one run attempt, by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiWorkflowResult {
    pub context: CiContext,
    /// The workflow run id (`r`, after the git ref), the `d` of the run's 39842.
    pub run_id: Option<String>,
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
        // After the context's git-ref `r`: gitworkshop reads the first `r` as the branch badge.
        if let Some(run) = &self.run_id {
            tags.push(custom_tag(TAG_REF, [run.clone()]));
        }
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
            run_id: tags_named(event, TAG_REF)
                .filter_map(|v| v.get(1))
                .find(|v| !v.starts_with("refs/"))
                .cloned(),
            conclusion: required_value(event, TAG_CONCLUSION)?.parse()?,
            queued_at: optional_time(event, TAG_QUEUED_AT)?,
            started_at: optional_time(event, TAG_STARTED_AT)?,
            jobs,
            manual_trigger,
            content: event.content.clone(),
        })
    }
}

/// A manual trigger (kind 9840): a maintainer asks one coordinator to run the workflow `w` at
/// commit `c` again (gitworkshop's Retry button). It carries the common tags except `o` (a
/// re-run is always `manual`) and exactly one `p`, the coordinator. Who may ask is the
/// coordinator's check, not the type's: the author must maintain the repository.
///
/// Re-runs of pull-request workflows (NIP-22 `E`/`K`/`P` context, no `r`) parse with
/// [`CiManualTrigger::pull_request`] set, so that a coordinator can refuse them by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiManualTrigger {
    pub coordinator: PublicKey,
    /// The context to run; `trigger` is always `None` (the run's `o` is `manual`).
    pub context: CiContext,
    /// The pull request (`E`) of a PR re-run.
    pub pull_request: Option<EventId>,
}

impl CiManualTrigger {
    pub fn to_event_builder(&self) -> Result<EventBuilder> {
        let mut context = self.context.clone();
        context.trigger = None;
        context.pull_request = None;
        let workflow_hash = context.workflow.as_ref().and_then(|w| w.sha256);
        if workflow_hash.is_none() {
            return Err(malformed(
                "w",
                "a manual trigger names the workflow file and its sha256",
            ));
        }
        let mut tags = vec![nostr::Tag::public_key(self.coordinator)];
        tags.extend(context.to_tags()?);
        Ok(EventBuilder::new(CI_MANUAL_TRIGGER, "")
            .tags(tags)
            .allow_self_tagging())
    }

    pub fn from_event(event: &Event) -> Result<Self> {
        check_kind(event, CI_MANUAL_TRIGGER, "manual trigger (9840)")?;
        let coordinators: Vec<&String> = tags_named(event, TAG_PARENT_AUTHOR)
            .filter_map(|v| v.get(1))
            .collect();
        let [coordinator] = coordinators.as_slice() else {
            return Err(malformed(
                "p",
                format!(
                    "a manual trigger names exactly one coordinator, this one names {}",
                    coordinators.len()
                ),
            ));
        };
        let coordinator = parse_pubkey("p", coordinator)?;
        let pull_request = optional_value(event, TAG_ROOT)?
            .map(|root| parse_event_id("E", &root))
            .transpose()?;
        // The PR form has no lowercase `p` of its own (that is the coordinator): its context
        // is read without the PR tags, which only a PR-aware coordinator would resolve.
        let mut context = CiContext::from_event_without_pull_request(event)?;
        context.trigger = None;
        match context.workflow.as_ref().and_then(|w| w.sha256) {
            Some(_) => {}
            None => {
                return Err(malformed(
                    "w",
                    "a manual trigger names the workflow file and its sha256",
                ));
            }
        }
        Ok(CiManualTrigger {
            coordinator,
            context,
            pull_request,
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
    /// The ids of the jobs running now (one `in-progress` tag, left out when none).
    pub in_progress: Vec<String>,
    /// NIP-40; required: a stale progress event must disappear. The spec bounds it at
    /// [`PROGRESS_MAX_LIFETIME_SECS`] after `created_at`, which the publisher sets.
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
        if !self.in_progress.is_empty() {
            tags.push(custom_tag(TAG_IN_PROGRESS, self.in_progress.clone()));
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
            in_progress: tags_named(event, TAG_IN_PROGRESS)
                .flat_map(|v| v[1..].iter().filter(|j| !j.is_empty()).cloned())
                .collect(),
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

/// Every way `events` (the 9841, 9842 and 39842 of one or more runs, as fetched from a relay)
/// falls short of the NIP-C1 spec and of what gitworkshop and Amethyst/Quartz parse, one line
/// each; empty when they conform. Written from the spec and those parsers as
/// shared/reviews/ecosystem.md §1 describes them, for tests and diagnostics.
///
/// It checks what our publisher controls: the common tags on every event (`a`, a full `c`, `w`
/// with a 64-hex sha256, `o`, a `refs/heads|tags` `r` on push runs, the git ref before the run
/// id), job results quoted with their job id and present, one artifact tag per file with its
/// filename and a Blossom-style URL, a 9842 with an empty content and a run id equal to its
/// 39842's `d`, and 39842s that list running job ids, expire within 30 minutes and drop
/// `queue` once running. It does not check relays, signers or PR context (not in `events`).
pub fn check_gitworkshop_conformance(events: &[Event]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut job_results: std::collections::HashMap<EventId, (&Event, String)> =
        std::collections::HashMap::new();
    let mut quoted: std::collections::HashSet<EventId> = std::collections::HashSet::new();
    let mut progress_runs: std::collections::HashMap<String, &Event> =
        std::collections::HashMap::new();
    for event in events {
        let kind = event.kind.as_u16();
        let at = |what: String| format!("{kind} {}: {what}", &event.id.to_hex()[..8]);
        let values = |name: &str| -> Vec<Vec<String>> {
            tags_named(event, name).map(|v| v[1..].to_vec()).collect()
        };
        if ![CI_JOB_RESULT, CI_WORKFLOW_RESULT, CI_WORKFLOW_PROGRESS].contains(&event.kind) {
            problems.push(at(
                "not a NIP-C1 job result, workflow result or progress".into()
            ));
            continue;
        }
        // Common tags (the spec: "every event in this NIP identifies the repository, commit,
        // workflow file and normalized trigger").
        let a = values(TAG_REPO);
        if a.is_empty() {
            problems.push(at("no `a` (gitworkshop finds runs by #a)".into()));
        }
        for value in &a {
            if RepoCoordinate::from_str(value.first().map(String::as_str).unwrap_or_default())
                .is_err()
            {
                problems.push(at(format!("`a` {value:?} is not a 30617 coordinate")));
            }
        }
        match values(TAG_COMMIT).first().and_then(|v| v.first()) {
            Some(c) if is_object_id(c) => {}
            other => problems.push(at(format!("first `c` {other:?} is not a full commit id"))),
        }
        let w = values(TAG_WORKFLOW);
        match w.as_slice() {
            [one] => {
                if one.first().is_none_or(|p| p.is_empty()) {
                    problems.push(at("`w` has no workflow path".into()));
                }
                if one.get(1).is_none_or(|h| Sha256Hex::parse(h).is_err()) {
                    problems.push(at(format!(
                        "`w` {one:?} lacks the 64-hex sha256 of the file (Quartz drops it)"
                    )));
                }
            }
            [] => problems.push(at("no `w` (gitworkshop titles it \"(workflow)\")".into())),
            _ => problems.push(at("more than one `w`".into())),
        }
        let o = values(TAG_TRIGGER);
        let trigger = match o.as_slice() {
            [one] => match one.first().map(|t| t.parse::<Trigger>()) {
                Some(Ok(t)) => Some(t),
                _ => {
                    problems.push(at(format!("`o` {one:?} is not a trigger")));
                    None
                }
            },
            [] => {
                problems.push(at("no `o` (the trigger label)".into()));
                None
            }
            _ => {
                problems.push(at("more than one `o`".into()));
                None
            }
        };
        let r: Vec<String> = values(TAG_REF)
            .into_iter()
            .filter_map(|v| v.into_iter().next())
            .collect();
        let git_ref = r.iter().position(|v| v.starts_with("refs/"));
        if trigger == Some(Trigger::Push) {
            match git_ref {
                Some(i) if r[i].starts_with("refs/heads/") || r[i].starts_with("refs/tags/") => {}
                _ => problems.push(at("a push run without a refs/heads or refs/tags `r`".into())),
            }
        }
        if let Some(i) = git_ref
            && i != 0
        {
            problems.push(at(
                "the git-ref `r` is not the first `r` (gitworkshop badges the first)".into(),
            ));
        }
        let run_ids: Vec<&String> = r.iter().filter(|v| !v.starts_with("refs/")).collect();
        let quotes = values(TAG_QUOTE);
        let job_quotes = |problems: &mut Vec<String>, quoted: &mut std::collections::HashSet<_>| {
            for q in quotes.iter().filter(|q| {
                q.first().is_some_and(|v| !v.starts_with("39842:"))
                    && q.get(3).map(String::as_str) != Some(MARKER_MANUAL_TRIGGER)
                    && q.get(3).map(String::as_str) != Some(MARKER_SERVICE_REQUEST)
            }) {
                match q.first().and_then(|id| EventId::from_hex(id).ok()) {
                    Some(id) => {
                        quoted.insert(id);
                    }
                    None => problems.push(at(format!("`q` {q:?} names no event id"))),
                }
                if q.len() < 4 || q[3].is_empty() {
                    problems.push(at(format!(
                        "job `q` {q:?} has no job-id marker (Quartz ignores it)"
                    )));
                }
                if q.get(2).is_none_or(|p| PublicKey::from_hex(p).is_err()) {
                    problems.push(at(format!("job `q` {q:?} has no publisher pubkey")));
                }
            }
        };
        if event.kind == CI_JOB_RESULT {
            if let Err(err) = CiJobResult::from_event(event) {
                problems.push(at(format!("does not parse: {err}")));
            }
            if !run_ids.is_empty() {
                problems.push(at(format!("a job result with a non-ref `r` {run_ids:?}")));
            }
            let job = values(TAG_JOB)
                .first()
                .and_then(|v| v.first().cloned())
                .unwrap_or_default();
            job_results.insert(event.id, (event, job));
            match values(TAG_LOGS).first().and_then(|v| v.first()) {
                Some(url) if !url.is_empty() => {}
                _ => problems.push(at("no `logs` URL".into())),
            }
            if !quotes
                .iter()
                .any(|q| q.first().is_some_and(|v| v.starts_with("39842:")))
            {
                problems.push(at("no `q` of the run's 39842 address".into()));
            }
            for artifact in values(TAG_ARTIFACT) {
                let url = artifact.first().cloned().unwrap_or_default();
                if artifact.get(1).is_none_or(|f| f.is_empty()) {
                    problems.push(at(format!(
                        "`artifact` {artifact:?} has no filename (\"Download artifact\")"
                    )));
                }
                let path = url.split_once("://").map_or("", |(_, rest)| rest);
                if Sha256Hex::from_url_path(path).is_none() {
                    problems.push(at(format!("`artifact` URL {url:?} names no sha256")));
                }
            }
        } else if event.kind == CI_WORKFLOW_RESULT {
            let parsed = CiWorkflowResult::from_event(event);
            if let Err(err) = &parsed {
                problems.push(at(format!("does not parse: {err}")));
            }
            // Our one deviation: a run that never started has no job result to carry why, so
            // its `startup_failure` result says it (gitworkshop shows the content).
            let not_started = parsed
                .as_ref()
                .is_ok_and(|r| r.conclusion == Conclusion::StartupFailure && r.jobs.is_empty());
            if !event.content.is_empty() && !not_started {
                problems.push(at("content is not empty".into()));
            }
            if run_ids.len() != 1 {
                problems.push(at(format!(
                    "needs exactly one run-id `r` (the 39842 `d`), has {run_ids:?}"
                )));
            }
            job_quotes(&mut problems, &mut quoted);
        } else {
            let progress = match CiWorkflowProgress::from_event(event) {
                Ok(progress) => progress,
                Err(err) => {
                    problems.push(at(format!("does not parse: {err}")));
                    continue;
                }
            };
            progress_runs.insert(progress.identifier.clone(), event);
            if !event.content.is_empty() {
                problems.push(at("content is not empty".into()));
            }
            let lifetime = progress
                .expiration
                .as_secs()
                .saturating_sub(event.created_at.as_secs());
            if progress.expiration <= event.created_at || lifetime > PROGRESS_MAX_LIFETIME_SECS {
                problems.push(at(format!(
                    "expiration {lifetime} s after created_at, not within 30 minutes"
                )));
            }
            let in_progress = values(TAG_IN_PROGRESS);
            match progress.status {
                ProgressStatus::Concluded if !in_progress.is_empty() => {
                    problems.push(at("concluded with `in-progress` jobs".into()))
                }
                ProgressStatus::InProgress if progress.queue.is_some() => {
                    problems.push(at("`queue` while in progress".into()))
                }
                _ => {}
            }
            for id in in_progress.iter().flatten() {
                // A number here is the old count; gitworkshop shows it as a job named "2".
                if id.is_empty() || id.parse::<u64>().is_ok() {
                    problems.push(at(format!("`in-progress` {id:?} is not a job id")));
                }
            }
            job_quotes(&mut problems, &mut quoted);
        }
    }
    for event in events.iter().filter(|e| e.kind == CI_WORKFLOW_RESULT) {
        let at = |what: String| format!("9842 {}: {what}", &event.id.to_hex()[..8]);
        for q in tags_named(event, TAG_QUOTE) {
            let (Some(id), Some(job)) =
                (q.get(1).and_then(|id| EventId::from_hex(id).ok()), q.get(4))
            else {
                continue;
            };
            if job == MARKER_MANUAL_TRIGGER || job == MARKER_SERVICE_REQUEST {
                continue;
            }
            match job_results.get(&id) {
                None => problems.push(at(format!("quotes job result {id} that is not there"))),
                Some((quoted_event, quoted_job)) => {
                    if quoted_job != job {
                        problems.push(at(format!(
                            "quotes job {quoted_job:?} with the marker {job:?}"
                        )));
                    }
                    if q.get(3) != Some(&quoted_event.pubkey.to_hex()) {
                        problems.push(at(format!("quotes {id} under another pubkey")));
                    }
                }
            }
        }
        // gitworkshop pairs a 9842 with its pending 39842 by run id (newer) or by signer,
        // context tags and queued_at (older): both must agree.
        let run_id = tags_named(event, TAG_REF)
            .filter_map(|v| v.get(1))
            .find(|v| !v.starts_with("refs/"));
        if let Some(progress) = run_id.and_then(|run| progress_runs.get(run)) {
            let context = |e: &Event| -> Vec<Vec<String>> {
                let mut tags: Vec<Vec<String>> = e
                    .tags
                    .iter()
                    .map(|t| t.as_slice().to_vec())
                    .filter(|t| {
                        [
                            "a",
                            "c",
                            "w",
                            "o",
                            "x",
                            "E",
                            "K",
                            "P",
                            "e",
                            "k",
                            "p",
                            "queued_at",
                        ]
                        .contains(&t[0].as_str())
                            || (t[0] == "r" && t.get(1).is_some_and(|v| v.starts_with("refs/")))
                    })
                    .collect();
                tags.sort();
                tags
            };
            if context(event) != context(progress) {
                problems.push(at("its context tags differ from its 39842's".into()));
            }
            if progress.pubkey != event.pubkey {
                problems.push(at("signed by another key than its 39842".into()));
            }
        }
    }
    for (id, (_, job)) in &job_results {
        if !quoted.contains(id) {
            problems.push(format!(
                "9841 {} (job {job:?}): no 9842 or 39842 quotes it, so gitworkshop hides it",
                &id.to_hex()[..8]
            ));
        }
    }
    problems
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
            artifacts: vec![CiArtifact {
                url: format!("https://blossom.example/{}", "9b".repeat(32)),
                filename: Some("dist/app".into()),
                name: Some("dist".into()),
            }],
            workflow_run: Some(RunAddress {
                coordinator: owner.public_key(),
                run: "run-5f0c".into(),
            }),
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_005)),
            exit_code: Some(0),
            runs_on: vec!["linux".into(), "x86_64".into()],
            log_tail: "build finished\n".into(),
            log_omitted: Some(2048),
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
            run_id: Some("run-5f0c".into()),
            conclusion: Conclusion::Failure,
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: None,
            jobs: vec![Quote::job_result(&job, "build")],
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
        // The git ref comes before the run id, and the job quote carries its job id.
        let r: Vec<&str> = event
            .tags
            .iter()
            .filter(|t| t.as_slice()[0] == "r")
            .map(|t| t.as_slice()[1].as_str())
            .collect();
        assert_eq!(r, ["refs/heads/main", "run-5f0c"]);
        assert!(event.tags.iter().any(|t| t.as_slice().len() == 5
            && t.as_slice()[0] == "q"
            && t.as_slice()[4] == "build"));

        let progress = CiWorkflowProgress {
            identifier: "run-5f0c".into(),
            context: context(&owner),
            status: ProgressStatus::InProgress,
            conclusion: None,
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_010)),
            jobs: vec![Quote::of(&job)],
            manual_trigger: None,
            queue: None,
            in_progress: vec!["build".into(), "test".into()],
            expiration: Timestamp::from(1_800_003_600),
            content: String::new(),
        };
        let event = sign(progress.to_event_builder().unwrap(), &coordinator);
        assert_eq!(event.tags.identifier(), Some("run-5f0c"));
        let parsed = CiWorkflowProgress::from_event(&event).unwrap();
        assert_eq!(parsed, progress);
        let in_progress = event
            .tags
            .iter()
            .find(|t| t.as_slice()[0] == "in-progress")
            .unwrap();
        assert_eq!(in_progress.as_slice()[1..], ["build", "test"]);
        assert!(parsed.is_pending(Timestamp::from(1_800_000_100)));
        assert!(!parsed.is_pending(Timestamp::from(1_800_003_600)));
        let mut concluded = progress.clone();
        concluded.status = ProgressStatus::Concluded;
        assert_eq!(
            concluded.to_event_builder().unwrap_err(),
            CiError::MissingTag("conclusion")
        );
    }

    /// One run as we now publish it: a 9841, the concluded 39842 quoting it and the 9842.
    fn conforming_run(coordinator: &Keys, owner: &Keys) -> Vec<Event> {
        // One context for all three: `context` adds a random second maintainer each call.
        let ci = context(owner);
        let mut result = job_result(owner);
        result.context = ci.clone();
        result.workflow_run = Some(RunAddress {
            coordinator: coordinator.public_key(),
            run: "run-5f0c".into(),
        });
        let job = sign(result.to_event_builder().unwrap(), coordinator);
        let progress = CiWorkflowProgress {
            identifier: "run-5f0c".into(),
            context: ci.clone(),
            status: ProgressStatus::Concluded,
            conclusion: Some(Conclusion::Success),
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_000)),
            jobs: vec![Quote::job_result(&job, "build")],
            manual_trigger: None,
            queue: None,
            in_progress: Vec::new(),
            expiration: Timestamp::from(1_800_001_800),
            content: String::new(),
        };
        let progress = sign(
            progress
                .to_event_builder()
                .unwrap()
                .custom_created_at(Timestamp::from(1_800_000_000)),
            coordinator,
        );
        let workflow = CiWorkflowResult {
            context: ci.clone(),
            run_id: Some("run-5f0c".into()),
            conclusion: Conclusion::Success,
            queued_at: Some(Timestamp::from(1_800_000_000)),
            started_at: Some(Timestamp::from(1_800_000_000)),
            jobs: vec![Quote::job_result(&job, "build")],
            manual_trigger: None,
            content: String::new(),
        };
        let workflow = sign(workflow.to_event_builder().unwrap(), coordinator);
        vec![job, progress, workflow]
    }

    #[test]
    fn conformance_checker_accepts_a_conforming_run() {
        let events = conforming_run(&Keys::generate(), &Keys::generate());
        assert_eq!(check_gitworkshop_conformance(&events), Vec::<String>::new());
    }

    #[test]
    fn conformance_checker_names_what_gitworkshop_and_quartz_trip_on() {
        let keys = Keys::generate();
        let coordinate = RepoCoordinate::new(keys.public_key(), "app").to_string();
        // What we published before: a count in `in-progress`, a 6 h expiration, `queue` while
        // running, no `w`/`o`/run id, a job quote without its marker, a URL-only artifact.
        let raw = |kind: Kind, tags: Vec<Vec<String>>, created_at: u64| -> Event {
            let tags: Vec<Tag> = tags
                .into_iter()
                .map(|t| custom_tag(&t[0], t[1..].to_vec()))
                .collect();
            sign(
                EventBuilder::new(kind, "")
                    .tags(tags)
                    .custom_created_at(Timestamp::from(created_at)),
                &keys,
            )
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
        let common = vec![s(&["a", &coordinate]), s(&["c", COMMIT])];
        let mut job_tags = common.clone();
        job_tags.extend([
            s(&["job", "build"]),
            s(&["conclusion", "success"]),
            s(&["logs", "https://b.example/log"]),
            s(&["artifact", "https://b.example/9b2e.tar"]),
        ]);
        let job = raw(CI_JOB_RESULT, job_tags, 1_800_000_000);
        let mut progress_tags = common.clone();
        progress_tags.extend([
            s(&["d", "run"]),
            s(&["status", "in_progress"]),
            s(&["queue", "0"]),
            s(&["in-progress", "2"]),
            s(&["expiration", "1800021600"]),
        ]);
        let progress = raw(CI_WORKFLOW_PROGRESS, progress_tags, 1_800_000_000);
        let mut workflow_tags = common;
        workflow_tags.extend([
            s(&["conclusion", "success"]),
            s(&["q", &job.id.to_hex(), "", &keys.public_key().to_hex()]),
        ]);
        let workflow = raw(CI_WORKFLOW_RESULT, workflow_tags, 1_800_000_100);
        let problems = check_gitworkshop_conformance(&[job, progress, workflow]);
        for needle in [
            "no `w`",
            "no `o`",
            "no `q` of the run's 39842",
            "has no filename",
            "names no sha256",
            "not within 30 minutes",
            "`queue` while in progress",
            "`in-progress` \"2\" is not a job id",
            "exactly one run-id `r`",
            "no job-id marker",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} not in {problems:#?}"
            );
        }
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
            (edit("job", None), "missing `job`"),
            (edit("conclusion", None), "missing `conclusion`"),
            (edit("conclusion", Some("done")), "unknown conclusion"),
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

    #[test]
    fn a_manual_trigger_names_one_coordinator_and_the_workflow_hash() {
        let owner = Keys::generate();
        let coordinator = Keys::generate().public_key();
        let trigger = CiManualTrigger {
            coordinator,
            context: context(&owner),
            pull_request: None,
        };
        let event = sign(trigger.to_event_builder().unwrap(), &owner);
        assert!(
            tags_named(&event, TAG_TRIGGER).next().is_none(),
            "a 9840 omits `o`"
        );
        let parsed = CiManualTrigger::from_event(&event).unwrap();
        assert_eq!(parsed.coordinator, coordinator);
        assert_eq!(parsed.context.commit, COMMIT);
        assert_eq!(parsed.context.trigger, None);
        assert_eq!(parsed.context.git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(parsed.context.workflow, trigger.context.workflow);

        // Two coordinators, none, or a workflow without its hash: refused by name.
        let with = |extra: Vec<Tag>, drop: &str| {
            let tags = event
                .tags
                .iter()
                .filter(|t| t.as_slice()[0] != drop)
                .cloned()
                .chain(extra);
            sign(
                EventBuilder::new(CI_MANUAL_TRIGGER, "")
                    .tags(tags)
                    .allow_self_tagging(),
                &owner,
            )
        };
        let two = with(vec![Tag::public_key(Keys::generate().public_key())], "");
        let err = CiManualTrigger::from_event(&two).unwrap_err().to_string();
        assert!(err.contains("exactly one coordinator"), "{err}");
        let none = with(Vec::new(), "p");
        assert!(CiManualTrigger::from_event(&none).is_err());
        let no_hash = with(vec![custom_tag("w", [".quorum/pipeline.yml"])], "w");
        let err = CiManualTrigger::from_event(&no_hash)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256"), "{err}");

        // The PR form: E/K/P and no lowercase p but the coordinator's.
        let pr = EventId::from_hex(&"ab".repeat(32)).unwrap();
        let pr_trigger = with(
            vec![
                custom_tag("E", [pr.to_hex()]),
                custom_tag("K", ["1618"]),
                custom_tag("P", [owner.public_key().to_hex()]),
                custom_tag("e", [pr.to_hex()]),
                custom_tag("k", ["1618"]),
            ],
            "r",
        );
        let parsed = CiManualTrigger::from_event(&pr_trigger).unwrap();
        assert_eq!(parsed.pull_request, Some(pr));
        assert_eq!(parsed.coordinator, coordinator);
    }
}
