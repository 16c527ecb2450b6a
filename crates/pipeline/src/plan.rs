//! The compiled pipeline: a serialisable DAG of jobs that the router executes.
//!
//! Execution only ever sees a [`Plan`], never the YAML (woodpecker's split between frontend and
//! backend types). A plan is canonical: maps are sorted, sets (`needs`, `secrets`,
//! `artifacts`, approvers, `show`) are sorted and deduplicated, public keys are lowercase hex,
//! and jobs are in a deterministic topological order. Two files that mean the same thing —
//! for example with jobs or `env` keys in another order — compile to the same plan and the same
//! [`Plan::plan_hash`]. List order that means something (steps, DVM inputs) is kept.

use std::collections::{BTreeMap, HashSet};

use globset::GlobBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What makes a pipeline run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    /// Runs on pushes; `None` when the file has no `push` trigger.
    pub push: Option<PushTrigger>,
    /// Runs when a maintainer asks; `None` when the file has no `manual` trigger.
    pub manual: Option<ManualTrigger>,
    /// Runs on NIP-34 pull requests (1618) and their updates (1619); `None` when the file has
    /// no `pull_request` trigger. Left out of the plan when absent, so that plans without it
    /// keep the hash they had before the trigger existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestTrigger>,
}

/// `on.pull_request`: no keys yet. A pull-request run builds a contributor's commit, so it
/// runs only the jobs that neither release nor run as a quorum ([`Plan::for_pull_request`]),
/// gets no secrets, and, for a contributor who is no maintainer, waits for a maintainer's
/// approval (the router's business).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestTrigger {}

/// `on.push`. As in GitHub Actions: with neither list every push runs the pipeline; with only
/// one list, pushes of the other ref type do not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTrigger {
    /// Branch name globs (`main`, `release/**`), matched against the name after `refs/heads/`.
    pub branches: Option<Vec<String>>,
    /// Tag name globs (`v*`), matched against the name after `refs/tags/`.
    pub tags: Option<Vec<String>>,
}

/// `on.manual`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualTrigger {
    pub inputs: BTreeMap<String, ManualInput>,
}

/// One input a maintainer may (or must) give when starting a run by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualInput {
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<String>,
}

/// An event that may start a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerEvent {
    /// A push that moved `ref_name` (`refs/heads/main`, `refs/tags/v1.0`).
    Push { ref_name: String },
    /// A maintainer started the pipeline by hand.
    Manual,
    /// A pull request (or an update of one) proposed a commit.
    PullRequest,
}

/// Who dispatches a job and who must agree on its result (design §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Mode {
    /// The DVM that ran the previous job requests this one.
    Naive,
    /// The router DVM holding the mandate dispatches it.
    #[default]
    Router,
    /// `replicas` DVMs run it; `threshold` identical results are needed to go on.
    Quorum { replicas: u32, threshold: u32 },
}

/// The input types of a NIP-90 `i` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    Text,
    Url,
    Event,
    Job,
}

impl InputType {
    pub const ALL: [InputType; 4] = [
        InputType::Text,
        InputType::Url,
        InputType::Event,
        InputType::Job,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Url => "url",
            InputType::Event => "event",
            InputType::Job => "job",
        }
    }
}

/// One NIP-90 input of a DVM job. `value` may contain expressions (see [`crate::expr`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvmInput {
    #[serde(rename = "type")]
    pub input_type: InputType,
    pub value: String,
    pub marker: Option<String>,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobSpec {
    /// A script run by a runner DVM (kind 5702) in its sandbox.
    Run {
        /// `run`, or the `steps` joined by newlines, in order.
        script: String,
        /// Values may contain expressions, resolved by the router before dispatch.
        env: BTreeMap<String, String>,
        /// Names of secrets to pass in as environment variables; values never live in the file.
        secrets: Vec<String>,
        /// Relative paths to upload after the job.
        artifacts: Vec<String>,
        network: bool,
        /// `None`: the runner's default.
        timeout_secs: Option<u64>,
        /// The build image, canonically spelled (`registry/path[:tag]@sha256:…`); pinned by
        /// digest in quorum jobs. `None`: the runner's own toolchain. Left out of the JSON when
        /// `None`, so plans without images hash as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
    },
    /// A request to any NIP-90 DVM; the DVM needs to know nothing about Quorum CI.
    Dvm {
        /// The request kind, 5000–5999.
        kind: u16,
        inputs: Vec<DvmInput>,
        /// Values may contain expressions.
        params: BTreeMap<String, String>,
        /// The DVM to ask (hex public key); `None`: any DVM serving `kind`.
        provider: Option<String>,
        /// How long to wait for a result; `None`: the router's default.
        timeout_secs: Option<u64>,
    },
    /// A gate that runs nothing and waits for `required` maintainer approvals.
    Approval {
        required: u32,
        /// Hex public keys allowed to approve; empty: the repository's maintainers.
        from: Vec<String>,
        /// Jobs whose artifacts and results are shown to approvers.
        show: Vec<String>,
    },
}

/// One job of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedJob {
    pub id: String,
    /// Display name; the id when the file gives none.
    pub name: String,
    /// Direct dependencies, sorted.
    pub needs: Vec<String>,
    pub spec: JobSpec,
    pub mode: Mode,
    /// The job's artifacts are part of the release, published once every job of the run has
    /// succeeded (so after any approval gate).
    pub release: bool,
    /// Which DVMs may take the job: the file's `select` with the job's own over it. Absent
    /// from the plan (and its hash) when neither gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<crate::select::SelectPolicy>,
}

impl PlannedJob {
    /// `(replicas, threshold)` of a job that a quorum runs; `None` for other jobs (an approval
    /// gate runs nothing, whatever its mode).
    pub fn quorum_size(&self) -> Option<(u32, u32)> {
        match (&self.mode, &self.spec) {
            (_, JobSpec::Approval { .. }) => None,
            (
                Mode::Quorum {
                    replicas,
                    threshold,
                },
                _,
            ) => Some((*replicas, *threshold)),
            _ => None,
        }
    }
}

/// The id of a run: sha256 of the repository URL, the commit and the plan hash, each followed
/// by a NUL byte, so that the same pipeline on the same commit is recognisably the same run
/// (deduplication), and a quorum member can recompute the run a release names.
pub fn run_id(repo: &str, commit: &str, plan_hash: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [repo, commit, plan_hash] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// A compiled, linted pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub name: Option<String>,
    pub on: Triggers,
    /// In topological order; among jobs whose needs are met, by id.
    pub jobs: Vec<PlannedJob>,
}

/// Compiles a branch or tag glob: `*` stays within one path segment, `**` crosses them.
pub(crate) fn ref_glob(pattern: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

fn any_match(patterns: &[String], name: &str) -> bool {
    // Patterns were validated by the linter; one that no longer compiles (a plan deserialised
    // from elsewhere) matches nothing rather than everything.
    patterns
        .iter()
        .filter_map(|p| ref_glob(p).ok())
        .any(|g| g.is_match(name))
}

impl Plan {
    /// The event kinds a quorum mandated for the quorum jobs `covered` (empty: all of them) is
    /// asked to sign: attestations (8708) for each, release bindings (8700) when one releases,
    /// and run-step requests (5702) when one hands on to the next (a quorum chain, where the
    /// quorum key signs the next step's request). What `quorum mandate create` allows unless
    /// told otherwise.
    pub fn quorum_signing_kinds(&self, covered: &[String]) -> std::collections::BTreeSet<u16> {
        let is_covered = |job: &PlannedJob| {
            job.quorum_size().is_some() && (covered.is_empty() || covered.contains(&job.id))
        };
        let quorum_jobs: Vec<&PlannedJob> = self.jobs.iter().filter(|j| is_covered(j)).collect();
        let mut kinds = std::collections::BTreeSet::new();
        if quorum_jobs.is_empty() {
            return kinds;
        }
        kinds.insert(quorum_proto::agreement::QUORUM_ATTESTATION.as_u16());
        if quorum_jobs.iter().any(|job| job.release) {
            kinds.insert(quorum_proto::release::RELEASE_BINDING.as_u16());
        }
        let chained = quorum_jobs.iter().any(|job| {
            !job.needs.is_empty()
                && job
                    .needs
                    .iter()
                    .all(|need| quorum_jobs.iter().any(|q| &q.id == need))
        });
        if chained {
            kinds.insert(
                quorum_proto::kinds::JobKind::RunStep
                    .request_kind()
                    .as_u16(),
            );
        }
        kinds
    }

    /// Whether `event` starts this pipeline.
    pub fn triggered_by(&self, event: &TriggerEvent) -> bool {
        match event {
            TriggerEvent::Manual => self.on.manual.is_some(),
            TriggerEvent::PullRequest => self.on.pull_request.is_some(),
            TriggerEvent::Push { ref_name } => {
                let Some(push) = &self.on.push else {
                    return false;
                };
                if let Some(branch) = ref_name.strip_prefix("refs/heads/") {
                    match (&push.branches, &push.tags) {
                        (None, None) => true,
                        (Some(globs), _) => any_match(globs, branch),
                        (None, Some(_)) => false,
                    }
                } else if let Some(tag) = ref_name.strip_prefix("refs/tags/") {
                    match (&push.branches, &push.tags) {
                        (None, None) => true,
                        (_, Some(globs)) => any_match(globs, tag),
                        (Some(_), None) => false,
                    }
                } else {
                    false
                }
            }
        }
    }

    /// The plan a pull-request run runs: without the jobs that release or run as a quorum
    /// (both put the maintainers' keys or a mandated quorum's behind the result, which only
    /// maintainer-signed code may get) and without the jobs that need one of those, directly
    /// or not. Returns the plan and each job left out with the reason.
    pub fn for_pull_request(&self) -> (Plan, Vec<(String, String)>) {
        let mut left_out: Vec<(String, String)> = Vec::new();
        let mut jobs = Vec::new();
        // Jobs are in dependency order: a job's needs are decided before it.
        for job in &self.jobs {
            let reason = if job.release {
                Some("a pull-request run releases nothing".to_string())
            } else if job.quorum_size().is_some() {
                Some("quorum jobs build only maintainer-signed commits".to_string())
            } else {
                job.needs
                    .iter()
                    .find(|need| left_out.iter().any(|(id, _)| id == *need))
                    .map(|need| format!("it needs {need}, left out"))
            };
            match reason {
                Some(reason) => left_out.push((job.id.clone(), reason)),
                None => jobs.push(job.clone()),
            }
        }
        (
            Plan {
                jobs,
                ..self.clone()
            },
            left_out,
        )
    }

    /// The approval gates a release of this run depends on, sorted by id: every approval job,
    /// since the release is published only once every job of the run succeeded. A quorum signs
    /// a release binding only after they passed (docs/protocol.md §15.9).
    pub fn release_gates(&self) -> Vec<&PlannedJob> {
        let mut gates: Vec<&PlannedJob> = self
            .jobs
            .iter()
            .filter(|j| matches!(j.spec, JobSpec::Approval { .. }))
            .collect();
        gates.sort_by(|a, b| a.id.cmp(&b.id));
        gates
    }

    /// The job with this id.
    pub fn job(&self, id: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// Jobs not in `done` whose needs are all in `done`, in plan order. The caller leaves out
    /// those it has already started.
    pub fn ready(&self, done: &HashSet<&str>) -> Vec<&PlannedJob> {
        self.jobs
            .iter()
            .filter(|j| !done.contains(j.id.as_str()))
            .filter(|j| j.needs.iter().all(|n| done.contains(n.as_str())))
            .collect()
    }

    /// Every job that needs `id`, directly or not, in plan order: what to skip when `id` fails.
    pub fn dependants(&self, id: &str) -> Vec<&PlannedJob> {
        let mut tainted: HashSet<&str> = HashSet::from([id]);
        let mut out = Vec::new();
        // Plan order is topological, so one pass sees every need before its dependants.
        for job in &self.jobs {
            if job.needs.iter().any(|n| tainted.contains(n.as_str())) {
                tainted.insert(&job.id);
                out.push(job);
            }
        }
        out
    }

    /// The jobs from `head` on while the next one `fits`, needs only the one before, and is
    /// the only job that needs it: the jobs one chain request carries (naive and quorum chains).
    pub fn chain_from<'a>(
        &'a self,
        head: &'a PlannedJob,
        fits: impl Fn(&PlannedJob) -> bool,
    ) -> Vec<&'a PlannedJob> {
        let mut chain = vec![head];
        loop {
            let last = chain[chain.len() - 1];
            let dependants: Vec<&PlannedJob> = self
                .jobs
                .iter()
                .filter(|j| j.needs.contains(&last.id))
                .collect();
            match dependants.as_slice() {
                [next] if next.needs.len() == 1 && fits(next) => chain.push(next),
                _ => return chain,
            }
        }
    }

    /// The quorum chain that starts at `head`: followed while the next job is a quorum job of
    /// the same size (a script or a DVM call). The quorum key signs each next step's request,
    /// and only as this says.
    pub fn quorum_chain_from<'a>(&'a self, head: &'a PlannedJob) -> Vec<&'a PlannedJob> {
        let size = head.quorum_size();
        self.chain_from(head, |next| {
            size.is_some()
                && next.quorum_size() == size
                && matches!(next.spec, JobSpec::Run { .. } | JobSpec::Dvm { .. })
        })
    }

    /// The canonical JSON encoding: compact, fields in declaration order, maps sorted.
    pub fn canonical_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// sha256 (lowercase hex) of [`Plan::canonical_json`]; with the repository and commit it
    /// identifies a run, so that the same push seen twice is not built twice.
    pub fn plan_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, needs: &[&str]) -> PlannedJob {
        PlannedJob {
            id: id.into(),
            name: id.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            spec: JobSpec::Approval {
                required: 1,
                from: vec![],
                show: vec![],
            },
            mode: Mode::Router,
            release: false,
            select: None,
        }
    }

    fn plan(push: Option<PushTrigger>, manual: bool) -> Plan {
        Plan {
            name: None,
            on: Triggers {
                push,
                manual: manual.then(ManualTrigger::default),
                pull_request: None,
            },
            jobs: vec![
                job("a", &[]),
                job("b", &["a"]),
                job("c", &[]),
                job("d", &["b", "c"]),
            ],
        }
    }

    fn push(ref_name: &str) -> TriggerEvent {
        TriggerEvent::Push {
            ref_name: ref_name.into(),
        }
    }

    fn strings(s: &[&str]) -> Option<Vec<String>> {
        Some(s.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn push_filters_follow_github_actions() {
        let all = plan(Some(PushTrigger::default()), false);
        assert!(all.triggered_by(&push("refs/heads/anything")));
        assert!(all.triggered_by(&push("refs/tags/v1")));
        assert!(!all.triggered_by(&push("refs/notes/x")));
        assert!(!all.triggered_by(&TriggerEvent::Manual));

        let branches = plan(
            Some(PushTrigger {
                branches: strings(&["main", "release/*"]),
                tags: None,
            }),
            true,
        );
        assert!(branches.triggered_by(&push("refs/heads/main")));
        assert!(branches.triggered_by(&push("refs/heads/release/1.0")));
        assert!(!branches.triggered_by(&push("refs/heads/release/1.0/x")));
        assert!(!branches.triggered_by(&push("refs/heads/feature")));
        assert!(!branches.triggered_by(&push("refs/tags/v1")));
        assert!(branches.triggered_by(&TriggerEvent::Manual));

        let tags = plan(
            Some(PushTrigger {
                branches: None,
                tags: strings(&["v*", "nightly/**"]),
            }),
            false,
        );
        assert!(tags.triggered_by(&push("refs/tags/v1.2.3")));
        assert!(tags.triggered_by(&push("refs/tags/nightly/2026/11")));
        assert!(!tags.triggered_by(&push("refs/tags/x1")));
        assert!(!tags.triggered_by(&push("refs/heads/main")));

        let none = plan(None, false);
        assert!(!none.triggered_by(&push("refs/heads/main")));
        assert!(!none.triggered_by(&TriggerEvent::Manual));
    }

    #[test]
    fn ready_and_dependants() {
        let p = plan(None, false);
        let ids = |jobs: Vec<&PlannedJob>| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(p.ready(&HashSet::new())), ["a", "c"]);
        assert_eq!(ids(p.ready(&HashSet::from(["a"]))), ["b", "c"]);
        assert_eq!(ids(p.ready(&HashSet::from(["a", "b", "c"]))), ["d"]);
        assert!(p.ready(&HashSet::from(["a", "b", "c", "d"])).is_empty());
        assert_eq!(ids(p.dependants("a")), ["b", "d"]);
        assert_eq!(ids(p.dependants("c")), ["d"]);
        assert!(p.dependants("d").is_empty());
        assert!(p.dependants("nope").is_empty());
    }

    #[test]
    fn hash_is_sha256_of_canonical_json() {
        let p = plan(None, true);
        let hash = p.plan_hash();
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, hex::encode(Sha256::digest(p.canonical_json())));
        let round: Plan = serde_json::from_str(&p.canonical_json()).expect("round trip");
        assert_eq!(round, p);
        assert_eq!(round.plan_hash(), hash);
    }

    #[test]
    fn a_pull_request_runs_no_release_no_quorum_and_nothing_that_needs_them() {
        let file = "on: [push, pull_request]\njobs:\n  test:\n    run: make test\n  \
                    build:\n    run: make\n    artifacts: [out/app]\n    mode: quorum\n    \
                    replicas: 3\n    threshold: 2\n  package:\n    needs: [build]\n    \
                    run: make pkg\n  docs:\n    needs: [test]\n    run: make docs\n    \
                    artifacts: [out/docs]\n    release: true\n  lint:\n    needs: [test]\n    \
                    run: make lint\n";
        let plan = crate::parse(".quorum/pipeline.yml", file).unwrap();
        assert!(plan.triggered_by(&TriggerEvent::PullRequest));
        let (narrow, left_out) = plan.for_pull_request();
        let kept: Vec<&str> = narrow.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(kept, ["test", "lint"], "in dependency order");
        let reasons: BTreeMap<&str, &str> = left_out
            .iter()
            .map(|(id, why)| (id.as_str(), why.as_str()))
            .collect();
        assert_eq!(
            reasons["build"],
            "quorum jobs build only maintainer-signed commits"
        );
        assert_eq!(reasons["package"], "it needs build, left out");
        assert_eq!(reasons["docs"], "a pull-request run releases nothing");
        assert_eq!(narrow.on, plan.on);

        // A plan without the trigger keeps the hash it had before the trigger existed: the
        // absent trigger is not written into the canonical plan.
        let push_only = crate::parse(
            ".quorum/pipeline.yml",
            "on: push\njobs:\n  a:\n    run: x\n",
        )
        .unwrap();
        let json = serde_json::to_string(&push_only).unwrap();
        assert!(!json.contains("pull_request"), "{json}");
        assert!(!push_only.triggered_by(&TriggerEvent::PullRequest));
    }
}
