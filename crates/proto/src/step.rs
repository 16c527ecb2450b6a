//! The run-step job (kind 5702): what a runner DVM is asked to build, and what it reports.
//!
//! A request names a git repository (`i` url input, marker `repo`), the exact commit, and the
//! step: its script, environment, secrets, artifact paths, network access, timeout and resource
//! limits, all as NIP-90 `param` tags. Secrets are only accepted in NIP-44 encrypted requests:
//! a clear request that carries one is refused, so that a careless client cannot publish them.
//! The result content is the JSON [`StepReport`]. `docs/protocol.md` §8 has examples.

use std::collections::BTreeMap;
use std::time::Duration;

use nostr::Kind;
use serde::{Deserialize, Serialize};

use crate::kinds::JobKind;
use crate::nip90::{InputType, JobInput, JobParam, JobRequest};

const MARKER_REPO: &str = "repo";
const PARAM_COMMIT: &str = "commit";
const PARAM_RUN: &str = "run";
const PARAM_ENV: &str = "env";
const PARAM_SECRET: &str = "secret";
const PARAM_ARTIFACT: &str = "artifact";
const PARAM_NETWORK: &str = "network";
const PARAM_TIMEOUT: &str = "timeout";
const PARAM_NAME: &str = "name";
const PARAM_MEMORY: &str = "memory";
const PARAM_PROCESSES: &str = "processes";
const PARAM_IMAGE: &str = "image";

/// Why a request is not a valid run-step job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    #[error("kind {0} is not a run-step request (5702)")]
    WrongKind(u16),
    #[error("no repository: add an `i` tag of type url with marker `repo`")]
    NoRepository,
    #[error("more than one repository input")]
    TwoRepositories,
    #[error("no `commit` param")]
    NoCommit,
    #[error("commit {0:?} is not a full 40- or 64-hex git object id")]
    BadCommit(String),
    #[error("no `run` param: the step has nothing to do")]
    NoScript,
    #[error("`{param}` param: {reason}")]
    BadParam { param: &'static str, reason: String },
    #[error("the request carries secrets in the clear; send it NIP-44 encrypted")]
    ClearSecrets,
    #[error("artifact path {0:?} must be relative and stay inside the work dir")]
    BadArtifactPath(String),
}

fn bad(param: &'static str, reason: impl Into<String>) -> StepError {
    StepError::BadParam {
        param,
        reason: reason.into(),
    }
}

/// A step to run: everything a runner needs, parsed from a run-step request.
#[derive(Clone, PartialEq, Eq)]
pub struct StepJob {
    /// Human-readable step name (for logs and reports).
    pub name: Option<String>,
    /// Where to clone from.
    pub repo: String,
    /// The exact commit to build (lowercase hex).
    pub commit: String,
    /// Shell commands, run in order by `sh -eu`.
    pub script: String,
    pub env: BTreeMap<String, String>,
    /// Secret environment variables. Never logged, never echoed in results.
    pub secrets: BTreeMap<String, String>,
    /// Paths (relative to the repository root) to upload after the step.
    pub artifacts: Vec<String>,
    pub network: bool,
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<u64>,
    pub max_processes: Option<u64>,
    /// The build image, the step's `/` (see [`crate::image`]): pinned by digest, or by tag
    /// only outside quorum mode (the runner resolves the tag). `None`: the runner's own
    /// toolchain.
    pub image: Option<crate::image::ImageRef>,
}

impl StepJob {
    pub fn new(
        repo: impl Into<String>,
        commit: impl Into<String>,
        script: impl Into<String>,
    ) -> Self {
        StepJob {
            name: None,
            repo: repo.into(),
            commit: commit.into(),
            script: script.into(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            artifacts: Vec::new(),
            network: false,
            timeout: None,
            memory_bytes: None,
            max_processes: None,
            image: None,
        }
    }

    /// The request for this step (clear; encrypt it with
    /// [`JobRequest::to_encrypted_event_builder`] when it has secrets).
    pub fn to_request(&self) -> JobRequest {
        let mut request = JobRequest::new(JobKind::RunStep.request_kind())
            .expect("run-step is a job kind")
            .input(JobInput::url(self.repo.clone()).with_marker(MARKER_REPO))
            .param(PARAM_COMMIT, self.commit.clone())
            .param(PARAM_RUN, self.script.clone());
        if let Some(name) = &self.name {
            request = request.param(PARAM_NAME, name.clone());
        }
        for (key, value) in &self.env {
            request.params.push(JobParam {
                key: PARAM_ENV.into(),
                values: vec![key.clone(), value.clone()],
            });
        }
        for (key, value) in &self.secrets {
            request.params.push(JobParam {
                key: PARAM_SECRET.into(),
                values: vec![key.clone(), value.clone()],
            });
        }
        for path in &self.artifacts {
            request = request.param(PARAM_ARTIFACT, path.clone());
        }
        if self.network {
            request = request.param(PARAM_NETWORK, "on");
        }
        if let Some(timeout) = self.timeout {
            request = request.param(PARAM_TIMEOUT, timeout.as_secs().to_string());
        }
        if let Some(memory) = self.memory_bytes {
            request = request.param(PARAM_MEMORY, memory.to_string());
        }
        if let Some(processes) = self.max_processes {
            request = request.param(PARAM_PROCESSES, processes.to_string());
        }
        if let Some(image) = &self.image {
            request = request.param(PARAM_IMAGE, image.to_string());
        }
        request
    }

    /// Parses a run-step request. `was_encrypted` says whether it arrived NIP-44 encrypted;
    /// secrets in a clear request are refused.
    pub fn from_request(request: &JobRequest, was_encrypted: bool) -> Result<Self, StepError> {
        if request.kind != JobKind::RunStep.request_kind() {
            return Err(StepError::WrongKind(request.kind.as_u16()));
        }
        let mut repos = request
            .inputs
            .iter()
            .filter(|i| i.input_type == InputType::Url && i.marker.as_deref() == Some(MARKER_REPO));
        let repo = repos.next().ok_or(StepError::NoRepository)?.data.clone();
        if repos.next().is_some() {
            return Err(StepError::TwoRepositories);
        }
        let commit = request
            .param_value(PARAM_COMMIT)
            .ok_or(StepError::NoCommit)?
            .to_string();
        if !matches!(commit.len(), 40 | 64)
            || !commit
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(StepError::BadCommit(commit));
        }
        let script = request
            .params
            .iter()
            .filter(|p| p.key == PARAM_RUN)
            .map(|p| p.values.join(" "))
            .collect::<Vec<_>>()
            .join("\n");
        if script.trim().is_empty() {
            return Err(StepError::NoScript);
        }
        let mut step = StepJob::new(repo, commit, script);
        for param in &request.params {
            match param.key.as_str() {
                PARAM_NAME => step.name = Some(param.value().to_string()),
                PARAM_ENV => {
                    let (key, value) = key_value(param, PARAM_ENV)?;
                    step.env.insert(key, value);
                }
                PARAM_SECRET => {
                    if !was_encrypted {
                        return Err(StepError::ClearSecrets);
                    }
                    let (key, value) = key_value(param, PARAM_SECRET)?;
                    step.secrets.insert(key, value);
                }
                PARAM_ARTIFACT => {
                    let path = param.value();
                    check_artifact_path(path)?;
                    step.artifacts.push(path.to_string());
                }
                PARAM_NETWORK => {
                    step.network = match param.value() {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        other => {
                            return Err(bad(PARAM_NETWORK, format!("{other:?} is not on or off")));
                        }
                    }
                }
                PARAM_TIMEOUT => {
                    step.timeout = Some(Duration::from_secs(number(param, PARAM_TIMEOUT)?))
                }
                PARAM_MEMORY => step.memory_bytes = Some(number(param, PARAM_MEMORY)?),
                PARAM_PROCESSES => step.max_processes = Some(number(param, PARAM_PROCESSES)?),
                PARAM_IMAGE => {
                    let image = crate::image::ImageRef::parse_unpinned(param.value())
                        .map_err(|e| bad(PARAM_IMAGE, e.to_string()))?;
                    step.image = Some(image);
                }
                _ => {}
            }
        }
        Ok(step)
    }

    /// The kind a run-step request has.
    pub fn kind() -> Kind {
        JobKind::RunStep.request_kind()
    }
}

impl std::fmt::Debug for StepJob {
    /// Secret values never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepJob")
            .field("name", &self.name)
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .field("script", &self.script)
            .field("env", &self.env)
            .field("secrets", &crate::RedactedSecrets(&self.secrets))
            .field("artifacts", &self.artifacts)
            .field("network", &self.network)
            .field("timeout", &self.timeout)
            .field("memory_bytes", &self.memory_bytes)
            .field("max_processes", &self.max_processes)
            .field("image", &self.image)
            .finish()
    }
}

fn key_value(param: &JobParam, name: &'static str) -> Result<(String, String), StepError> {
    let [key, value] = param.values.as_slice() else {
        return Err(bad(name, "expected a name and a value"));
    };
    let valid_name = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_name {
        return Err(bad(
            name,
            format!("{key:?} is not an environment variable name"),
        ));
    }
    Ok((key.clone(), value.clone()))
}

fn number(param: &JobParam, name: &'static str) -> Result<u64, StepError> {
    param
        .value()
        .parse()
        .map_err(|_| bad(name, format!("{:?} is not a whole number", param.value())))
}

/// The prefix that marks an OCI image layout directory in a step's artifact list
/// (`oci:out/image`, as skopeo names a layout): the runner uploads every blob the layout's
/// image manifest references and reports the manifest, whose digest is what builders agree on.
pub const OCI_ARTIFACT_PREFIX: &str = "oci:";

/// The media type of what an OCI artifact reports: an OCI image manifest.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What one entry of a step's artifact list names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSpec<'a> {
    /// A file or a directory (packed as a tar), by its path.
    Path(&'a str),
    /// An OCI image layout directory, by its path (the entry without [`OCI_ARTIFACT_PREFIX`]).
    OciLayout(&'a str),
}

impl<'a> ArtifactSpec<'a> {
    /// Reads one entry of a step's (or a plan's) artifact list.
    pub fn of(entry: &'a str) -> Self {
        match entry.strip_prefix(OCI_ARTIFACT_PREFIX) {
            Some(path) => ArtifactSpec::OciLayout(path),
            None => ArtifactSpec::Path(entry),
        }
    }

    /// The path inside the work dir, either way.
    pub fn path(&self) -> &'a str {
        match self {
            ArtifactSpec::Path(p) | ArtifactSpec::OciLayout(p) => p,
        }
    }
}

fn check_artifact_path(entry: &str) -> Result<(), StepError> {
    let path = ArtifactSpec::of(entry).path();
    let escapes = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|part| part == "..");
    if escapes {
        return Err(StepError::BadArtifactPath(entry.to_string()));
    }
    Ok(())
}

/// One uploaded file: an artifact or a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
    /// Where it can be downloaded (one per Blossom server that stored it).
    pub urls: Vec<String>,
}

/// An artifact of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The declared path; a directory becomes `PATH.tar`; an OCI layout keeps its
    /// `oci:PATH` entry and the blob is its image manifest.
    pub name: String,
    #[serde(flatten)]
    pub blob: BlobRef,
}

/// The sandbox a step ran in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRef {
    pub name: String,
    pub isolated: bool,
    /// The build image the step ran in, as `registry/path@sha256:<manifest digest>` (the
    /// digest fetched, also when the request named a tag); absent: the host's toolchain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The content of a run-step result: what ran and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub commit: String,
    /// Exit code of the step's shell; `null` if it was killed.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The `SOURCE_DATE_EPOCH` the step saw (the commit time).
    pub source_date_epoch: i64,
    pub artifacts: Vec<ArtifactRef>,
    pub log: BlobRef,
    /// The last lines of the log (at most 4 KiB), so that a failure can be shown without
    /// fetching the whole log.
    #[serde(default)]
    pub log_tail: String,
    pub sandbox: SandboxRef,
    /// In a quorum job: how the runner's part in the agreement and signing went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<crate::quorum_job::QuorumReport>,
    /// The job result (NIP-C1 9841, hex id) the runner signed itself, when the request named
    /// the run's progress event (`ci-run`); the coordinator quotes it instead of signing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_job_result: Option<String>,
}

impl StepReport {
    /// The step finished on its own with exit code 0.
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn sample() -> StepJob {
        let mut step = StepJob::new("https://git.example/app.git", COMMIT, "make\nmake test");
        step.name = Some("build".into());
        step.env.insert("PROFILE".into(), "release".into());
        step.artifacts = vec!["target/app".into(), "dist".into(), "oci:out/image".into()];
        step.network = true;
        step.timeout = Some(Duration::from_secs(600));
        step.memory_bytes = Some(1 << 30);
        step.max_processes = Some(256);
        step
    }

    #[test]
    fn round_trips_through_a_request() {
        let step = sample();
        assert_eq!(
            StepJob::from_request(&step.to_request(), false).unwrap(),
            step
        );
    }

    #[test]
    fn secrets_only_travel_encrypted() {
        let mut step = sample();
        step.secrets.insert("TOKEN".into(), "hunter2".into());
        let request = step.to_request();
        assert_eq!(
            StepJob::from_request(&request, false),
            Err(StepError::ClearSecrets)
        );
        assert_eq!(StepJob::from_request(&request, true).unwrap(), step);
        let shown = format!("{step:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn bad_steps_name_the_problem() {
        let base = sample().to_request();
        let with = |key: &str, values: &[&str]| {
            let mut request = base.clone();
            request.params.retain(|p| p.key != key);
            request.params.push(JobParam {
                key: key.into(),
                values: values.iter().map(|s| s.to_string()).collect(),
            });
            request
        };
        let cases = [
            (with("commit", &["main"]), "not a full"),
            (
                with("commit", &["0123456789ABCDEF0123456789ABCDEF01234567"]),
                "not a full",
            ),
            (with("run", &["  "]), "nothing to do"),
            (with("env", &["1X", "y"]), "environment variable"),
            (with("env", &["X"]), "a name and a value"),
            (with("network", &["maybe"]), "not on or off"),
            (with("timeout", &["soon"]), "whole number"),
            (with("artifact", &["../etc/passwd"]), "inside the work dir"),
            (with("artifact", &["/etc/passwd"]), "inside the work dir"),
            (with("artifact", &["oci:/etc"]), "inside the work dir"),
            (
                with("artifact", &["oci:out/../../x"]),
                "inside the work dir",
            ),
            (with("artifact", &["oci:"]), "inside the work dir"),
        ];
        for (request, needle) in cases {
            let err = StepJob::from_request(&request, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut no_repo = base.clone();
        no_repo.inputs.clear();
        assert_eq!(
            StepJob::from_request(&no_repo, false),
            Err(StepError::NoRepository)
        );
    }

    #[test]
    fn report_json_is_stable() {
        let report = StepReport {
            commit: COMMIT.into(),
            exit_code: Some(0),
            timed_out: false,
            duration_ms: 1200,
            source_date_epoch: 1_700_000_000,
            artifacts: vec![ArtifactRef {
                name: "dist.tar".into(),
                blob: BlobRef {
                    sha256: "ab".repeat(32),
                    size: 10,
                    urls: vec!["http://127.0.0.1:3000/abab.tar".into()],
                },
            }],
            log: BlobRef {
                sha256: "cd".repeat(32),
                size: 5,
                urls: vec![],
            },
            log_tail: "done\n".into(),
            sandbox: SandboxRef {
                name: "bubblewrap".into(),
                isolated: true,
                image: None,
            },
            quorum: None,
            ci_job_result: None,
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["artifacts"][0]["name"], "dist.tar");
        assert_eq!(json["artifacts"][0]["sha256"], "ab".repeat(32));
        let back: StepReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert!(back.succeeded());
    }
}
