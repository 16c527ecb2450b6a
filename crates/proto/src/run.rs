//! The run-pipeline job (kind 5700): what a router DVM is asked to run, and what it reports.
//!
//! A request names a repository and a commit; the router reads `.quorum/pipeline.yml` from that
//! commit itself (the file the maintainer committed, not one a requester could substitute),
//! optionally checking it against a pinned plan hash, and runs every job on DVMs. Each
//! sub-request it signs carries the run request as its `e` tag and the job id as a `job` param,
//! so that a router restarted mid-run finds its finished steps on the relays. The result
//! content is the JSON [`RunReport`]. `docs/protocol.md` §9 has examples.

use std::collections::BTreeMap;

use nostr::{EventId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::kinds::JobKind;
use crate::nip34::RepoCoordinate;
use crate::nip90::{InputType, JobInput, JobParam, JobRequest};
use crate::step::ArtifactRef;

const MARKER_REPO: &str = "repo";
const PARAM_COMMIT: &str = "commit";
const PARAM_PLAN: &str = "plan";
const PARAM_RUNNER: &str = "runner";
const PARAM_INPUT: &str = "input";
const PARAM_SECRET: &str = "secret";
const PARAM_MANDATE: &str = "mandate";
const PARAM_REPO_ID: &str = "repo-id";
const PARAM_MAINTAINER: &str = "maintainer";
const PARAM_REF: &str = "ref";
const PARAM_MANUAL_TRIGGER: &str = "manual-trigger";
const PARAM_PULL_REQUEST: &str = "pull-request";

/// Why a request is not a valid run-pipeline job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    #[error("kind {0} is not a run-pipeline request (5700)")]
    WrongKind(u16),
    #[error("no repository: add an `i` tag of type url with marker `repo`")]
    NoRepository,
    #[error("no `commit` param")]
    NoCommit,
    #[error("commit {0:?} is not a full 40- or 64-hex git object id")]
    BadCommit(String),
    #[error("`plan` param {0:?} is not a 64-hex plan hash")]
    BadPlanHash(String),
    #[error("`runner` param {0:?} is not a 64-hex public key")]
    BadRunner(String),
    #[error("`{0}` param: expected a name and a value")]
    BadPair(&'static str),
    #[error("the request carries secrets in the clear; send it NIP-44 encrypted")]
    ClearSecrets,
    #[error("`mandate` param {0:?} is not a 64-hex event id")]
    BadMandate(String),
    #[error("`repo-id` param: {0}")]
    BadRepoId(String),
    #[error("`repo-id` param given twice")]
    TwoRepoIds,
    #[error("`maintainer` param {0:?} is not a 64-hex public key")]
    BadMaintainer(String),
    #[error("`ref` param {0:?} is not a full ref name (refs/heads/… or refs/tags/…)")]
    BadRef(String),
    #[error("`manual-trigger` {0:?} is not an event id")]
    BadManualTrigger(String),
    #[error(
        "`pull-request` {0:?} is not: PR id, PR author, 1618 or 1619 event id, its kind, its author"
    )]
    BadPullRequest(String),
}

fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pipeline run to perform.
#[derive(Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub repo: String,
    pub commit: String,
    /// If set, the plan hash the router must find at `commit`, or refuse.
    pub plan_hash: Option<String>,
    /// Runners to use, in order of preference; empty: the router's own choice.
    pub runners: Vec<PublicKey>,
    /// Values of manual trigger inputs.
    pub inputs: BTreeMap<String, String>,
    /// Secrets for the pipeline's jobs (encrypted requests only).
    pub secrets: BTreeMap<String, String>,
    /// The mandate (8704) the run's quorum jobs run under.
    pub mandate: Option<EventId>,
    /// The repository's NIP-34 identity (`30617:<owner hex>:<d>`), which approval requests
    /// and releases name.
    pub repo_id: Option<RepoCoordinate>,
    /// The repository's maintainers, asked by approval gates that list nobody in `from`.
    pub maintainers: Vec<PublicKey>,
    /// The pushed ref whose move started the run (a watcher's push), for the CI status.
    pub git_ref: Option<String>,
    /// The maintainer's manual trigger (NIP-C1 9840) this run replays; the router checks it
    /// again and quotes it in the run's CI status, whose trigger is then `manual`.
    pub manual_trigger: Option<EventId>,
    /// The NIP-34 pull request (and the 1618 or 1619 event that proposed `commit`) this run
    /// builds: a contributor's commit, run narrowly (no releases, no quorum jobs, no secrets)
    /// and, for a contributor who is no maintainer, only after a maintainer approved.
    pub pull_request: Option<crate::nipc1::PullRequestContext>,
}

impl RunRequest {
    pub fn new(repo: impl Into<String>, commit: impl Into<String>) -> Self {
        RunRequest {
            repo: repo.into(),
            commit: commit.into(),
            plan_hash: None,
            runners: Vec::new(),
            inputs: BTreeMap::new(),
            secrets: BTreeMap::new(),
            mandate: None,
            repo_id: None,
            maintainers: Vec::new(),
            git_ref: None,
            manual_trigger: None,
            pull_request: None,
        }
    }

    pub fn to_request(&self) -> JobRequest {
        let mut request = JobRequest::new(JobKind::RunPipeline.request_kind())
            .expect("run-pipeline is a job kind")
            .input(JobInput::url(self.repo.clone()).with_marker(MARKER_REPO))
            .param(PARAM_COMMIT, self.commit.clone());
        if let Some(hash) = &self.plan_hash {
            request = request.param(PARAM_PLAN, hash.clone());
        }
        for runner in &self.runners {
            request = request.param(PARAM_RUNNER, runner.to_hex());
        }
        if let Some(mandate) = &self.mandate {
            request = request.param(PARAM_MANDATE, mandate.to_hex());
        }
        if let Some(repo_id) = &self.repo_id {
            request = request.param(PARAM_REPO_ID, repo_id.to_string());
        }
        for maintainer in &self.maintainers {
            request = request.param(PARAM_MAINTAINER, maintainer.to_hex());
        }
        if let Some(git_ref) = &self.git_ref {
            request = request.param(PARAM_REF, git_ref.clone());
        }
        if let Some(trigger) = &self.manual_trigger {
            request = request.param(PARAM_MANUAL_TRIGGER, trigger.to_hex());
        }
        if let Some(pr) = &self.pull_request {
            request.params.push(JobParam {
                key: PARAM_PULL_REQUEST.into(),
                values: vec![
                    pr.root.to_hex(),
                    pr.root_author.to_hex(),
                    pr.trigger.to_hex(),
                    pr.trigger_kind.as_u16().to_string(),
                    pr.trigger_author.to_hex(),
                ],
            });
        }
        for (name, values) in [(PARAM_INPUT, &self.inputs), (PARAM_SECRET, &self.secrets)] {
            for (key, value) in values {
                request.params.push(JobParam {
                    key: name.into(),
                    values: vec![key.clone(), value.clone()],
                });
            }
        }
        request
    }

    /// Parses a run-pipeline request; secrets are refused unless it arrived encrypted.
    pub fn from_request(request: &JobRequest, was_encrypted: bool) -> Result<Self, RunError> {
        if request.kind != JobKind::RunPipeline.request_kind() {
            return Err(RunError::WrongKind(request.kind.as_u16()));
        }
        let repo = request
            .inputs
            .iter()
            .find(|i| i.input_type == InputType::Url && i.marker.as_deref() == Some(MARKER_REPO))
            .ok_or(RunError::NoRepository)?
            .data
            .clone();
        let commit = request
            .param_value(PARAM_COMMIT)
            .ok_or(RunError::NoCommit)?;
        if !is_hex(commit, &[40, 64]) {
            return Err(RunError::BadCommit(commit.to_string()));
        }
        let mut run = RunRequest::new(repo, commit);
        for param in &request.params {
            match param.key.as_str() {
                PARAM_PLAN => {
                    let hash = param.value();
                    if !is_hex(hash, &[64]) {
                        return Err(RunError::BadPlanHash(hash.to_string()));
                    }
                    run.plan_hash = Some(hash.to_string());
                }
                PARAM_RUNNER => {
                    let key = PublicKey::from_hex(param.value())
                        .map_err(|_| RunError::BadRunner(param.value().to_string()))?;
                    run.runners.push(key);
                }
                PARAM_INPUT => {
                    let (key, value) = pair(param, PARAM_INPUT)?;
                    run.inputs.insert(key, value);
                }
                PARAM_MANDATE => {
                    let id = EventId::from_hex(param.value())
                        .map_err(|_| RunError::BadMandate(param.value().to_string()))?;
                    run.mandate = Some(id);
                }
                PARAM_REPO_ID => {
                    if run.repo_id.is_some() {
                        return Err(RunError::TwoRepoIds);
                    }
                    let repo_id =
                        param
                            .value()
                            .parse()
                            .map_err(|e: crate::nip34::Nip34Error| {
                                RunError::BadRepoId(e.to_string())
                            })?;
                    run.repo_id = Some(repo_id);
                }
                PARAM_MAINTAINER => {
                    let key = param.value();
                    if !is_hex(key, &[64]) {
                        return Err(RunError::BadMaintainer(key.to_string()));
                    }
                    let key = PublicKey::from_hex(key)
                        .map_err(|_| RunError::BadMaintainer(key.to_string()))?;
                    if !run.maintainers.contains(&key) {
                        run.maintainers.push(key);
                    }
                }
                PARAM_REF => {
                    let git_ref = param.value();
                    if !(git_ref.starts_with("refs/heads/") || git_ref.starts_with("refs/tags/")) {
                        return Err(RunError::BadRef(git_ref.to_string()));
                    }
                    run.git_ref = Some(git_ref.to_string());
                }
                PARAM_MANUAL_TRIGGER => {
                    let id = EventId::from_hex(param.value())
                        .map_err(|_| RunError::BadManualTrigger(param.value().to_string()))?;
                    run.manual_trigger = Some(id);
                }
                PARAM_PULL_REQUEST => {
                    let bad = || RunError::BadPullRequest(param.values.join(" "));
                    let [root, root_author, trigger, kind, trigger_author] =
                        param.values.as_slice()
                    else {
                        return Err(bad());
                    };
                    let kind: u16 = kind.parse().map_err(|_| bad())?;
                    if !matches!(kind, 1618 | 1619) {
                        return Err(bad());
                    }
                    run.pull_request = Some(crate::nipc1::PullRequestContext {
                        root: EventId::from_hex(root).map_err(|_| bad())?,
                        root_author: PublicKey::from_hex(root_author).map_err(|_| bad())?,
                        trigger: EventId::from_hex(trigger).map_err(|_| bad())?,
                        trigger_kind: nostr::Kind::from_u16(kind),
                        trigger_author: PublicKey::from_hex(trigger_author).map_err(|_| bad())?,
                    });
                }
                PARAM_SECRET => {
                    if !was_encrypted {
                        return Err(RunError::ClearSecrets);
                    }
                    let (key, value) = pair(param, PARAM_SECRET)?;
                    run.secrets.insert(key, value);
                }
                _ => {}
            }
        }
        Ok(run)
    }
}

impl std::fmt::Debug for RunRequest {
    /// Secret values never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("plan_hash", &self.plan_hash)
            .field("runners", &self.runners)
            .field("inputs", &self.inputs)
            .field("secrets", &crate::RedactedSecrets(&self.secrets))
            .field("mandate", &self.mandate)
            .field("repo_id", &self.repo_id)
            .field("maintainers", &self.maintainers)
            .field("git_ref", &self.git_ref)
            .field("manual_trigger", &self.manual_trigger)
            .field("pull_request", &self.pull_request)
            .finish()
    }
}

fn pair(param: &JobParam, name: &'static str) -> Result<(String, String), RunError> {
    match param.values.as_slice() {
        [key, value] => Ok((key.clone(), value.clone())),
        _ => Err(RunError::BadPair(name)),
    }
}

/// How one job of a run ended, in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: String,
    pub name: String,
    /// `success`, `failure` or `skipped`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The DVM whose answer counted (hex).
    pub provider: Option<String>,
    /// The sub-request and result event ids.
    pub request: Option<String>,
    pub result: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
    /// What this job cost: tokens handed over to DVMs less the change they gave back, in
    /// millisats. Absent when nothing was paid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paid_msats: u64,
    /// Each DVM paid for this job (every member of a quorum job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payments: Vec<StepPayment>,
}

/// What a run paid one DVM for one job ([`JobSummary::payments`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPayment {
    /// The DVM (hex).
    pub dvm: String,
    /// Handed over, in millisats.
    pub paid_msats: u64,
    /// Given back as change, in millisats.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub change_msats: u64,
}

/// What a paid run cost its requester ([`RunReport::payment`], docs/protocol.md §17.4), in
/// millisats: `paid_msats` = `fee_msats` + `runners_msats` + `change_msats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPayment {
    /// What the requester's token held.
    pub paid_msats: u64,
    /// The router's fee for the run.
    pub fee_msats: u64,
    /// Paid to the DVMs the run hired, less the change they gave back.
    pub runners_msats: u64,
    /// Given back to the requester as change (the result's `change` tag).
    pub change_msats: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The content of a run-pipeline result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// sha256 of repository URL, commit and plan hash (NUL-separated): the run's identity.
    pub run: String,
    pub repo: String,
    pub commit: String,
    pub plan_hash: String,
    /// `success` or `failure`.
    pub status: String,
    pub jobs: Vec<JobSummary>,
    /// What the run published: the release binding (8700), its NIP-94 file events (1063), the
    /// NIP-82 release (30063) and the concluding CI status (9842), as hex ids. Absent in
    /// reports of routers that published nothing.
    #[serde(default, skip_serializing_if = "Published::is_empty")]
    pub published: Published,
    /// What the run cost, when the requester paid the router. Absent for unpaid runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<RunPayment>,
}

/// The ids of the events a run published after its jobs ([`RunReport::published`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_status: Option<String>,
    /// Why the release or the CI status could not be published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Published {
    pub fn is_empty(&self) -> bool {
        *self == Published::default()
    }
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.status == "success"
    }
}

#[cfg(test)]
mod tests {
    use nostr::Keys;

    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn round_trips_and_keeps_secrets_encrypted_only() {
        let mut run = RunRequest::new("https://git.example/app.git", COMMIT);
        run.plan_hash = Some("ab".repeat(32));
        run.runners = vec![Keys::generate().public_key()];
        run.inputs.insert("reason".into(), "release".into());
        run.mandate = Some(EventId::all_zeros());
        let maintainer = Keys::generate().public_key();
        run.repo_id = Some(RepoCoordinate::new(maintainer, "app"));
        run.maintainers = vec![maintainer, Keys::generate().public_key()];
        run.git_ref = Some("refs/heads/main".into());
        run.manual_trigger = Some(EventId::from_hex(&"cd".repeat(32)).unwrap());
        run.pull_request = Some(crate::nipc1::PullRequestContext {
            root: EventId::from_hex(&"ab".repeat(32)).unwrap(),
            root_author: maintainer,
            trigger: EventId::from_hex(&"ef".repeat(32)).unwrap(),
            trigger_kind: nostr::Kind::from_u16(1619),
            trigger_author: maintainer,
        });
        assert_eq!(
            RunRequest::from_request(&run.to_request(), false).unwrap(),
            run
        );
        run.secrets.insert("TOKEN".into(), "x".into());
        assert_eq!(
            RunRequest::from_request(&run.to_request(), false),
            Err(RunError::ClearSecrets)
        );
        assert_eq!(
            RunRequest::from_request(&run.to_request(), true).unwrap(),
            run
        );
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let base = RunRequest::new("https://git.example/app.git", COMMIT).to_request();
        let with = |key: &str, values: &[&str]| {
            let mut request = base.clone();
            request.params.retain(|p| p.key != key);
            request.params.push(JobParam {
                key: key.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            });
            request
        };
        let cases = [
            (with("commit", &["HEAD"]), "not a full"),
            (with("plan", &["abc"]), "plan hash"),
            (with("manual-trigger", &["retry"]), "`manual-trigger`"),
            (with("pull-request", &["ab"]), "`pull-request`"),
            (with("runner", &["bob"]), "public key"),
            (with("input", &["only-a-name"]), "a name and a value"),
            (with("mandate", &["not-an-id"]), "64-hex event id"),
            (with("repo-id", &["30618:abc:app"]), "`repo-id` param"),
            (
                with("repo-id", &["30617:abc:app"]),
                "not a 64-hex public key",
            ),
            (with("maintainer", &["bob"]), "`maintainer` param \"bob\""),
            (
                with("maintainer", &[&"AB".repeat(32)]),
                "`maintainer` param",
            ),
            (with("ref", &["main"]), "`ref` param \"main\""),
        ];
        for (request, needle) in cases {
            let err = RunRequest::from_request(&request, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let coordinate = format!("30617:{}:app", Keys::generate().public_key().to_hex());
        let twice = base
            .clone()
            .param("repo-id", coordinate.clone())
            .param("repo-id", coordinate);
        assert_eq!(
            RunRequest::from_request(&twice, false),
            Err(RunError::TwoRepoIds)
        );
        let mut no_repo = base.clone();
        no_repo.inputs.clear();
        assert_eq!(
            RunRequest::from_request(&no_repo, false),
            Err(RunError::NoRepository)
        );
    }
}
