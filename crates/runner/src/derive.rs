//! What a quorum member builds: the job as the pipeline at the commit defines it, derived by the
//! member itself, never taken from the request (docs/protocol.md §16).
//!
//! After [`quorum_consensus::job::QuorumMember::admit`] checked the mandate, the requester and
//! the NIP-34 evidence, and the commit is fetched, [`derive`] reads the mandate's pipeline file
//! from git's objects at the commit, lints it into a plan, finds the job the request names and
//! checks that the request is exactly that job (`quorum_pipeline::dispatch::check_request`):
//! script, environment, artifacts, network and timeout from the plan, expression values bound.
//! It also checks the release the request asks for (the run id is recomputed), each later step
//! of a quorum chain (the quorum key signs a next step only as the plan defines it), and, under
//! the mandate's `ancestor` rule, that the commit is reachable from the maintainers' refs. The
//! result names the evidence the attestation carries.

use std::path::Path;

use quorum_consensus::job::Admission;
use quorum_pipeline::dispatch::{self, Checked, DispatchError};
use quorum_pipeline::{Plan, PlannedJob};
use quorum_proto::agreement::JobEvidence;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::chain::{self, PARAM_CHAIN};
use quorum_proto::nip90::JobRequest;
use quorum_proto::nostr::{Event, EventId, Keys, PublicKey};
use quorum_proto::quorum_job::QuorumJobParams;

use crate::git::{self, GitError, GitPolicy};

/// Why the request is not a job the pipeline at its commit defines (each names the check).
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("pipeline: commit {commit} has no {path}")]
    NoPipeline { commit: String, path: String },
    #[error("pipeline: {path} at commit {commit} does not lint:\n{diagnostics}")]
    Lint {
        commit: String,
        path: String,
        diagnostics: String,
    },
    #[error("job: {path} at commit {commit} has no job {job:?}")]
    UnknownJob {
        commit: String,
        path: String,
        job: String,
    },
    #[error("job: the request names no job (`job` param)")]
    NoJob,
    #[error(
        "job: {job} is not a quorum job of the mandate's size (the pipeline says {found}, the \
         mandate is {t} of {n})"
    )]
    Size {
        job: String,
        found: String,
        t: u16,
        n: usize,
    },
    #[error("job: {0}")]
    Dispatch(#[from] DispatchError),
    #[error("release: {0}")]
    Release(String),
    #[error("chain: {0}")]
    Chain(String),
    #[error(
        "source: commit {commit} is not reachable from any ref of the maintainers' state (the \
         mandate's `source` rule is `ancestor`)"
    )]
    NotReachable { commit: String },
}

/// The job a member derived.
#[derive(Debug, Clone)]
pub struct Derived {
    pub plan: Plan,
    pub plan_hash: Sha256Hex,
    pub job: PlannedJob,
    /// The step (or DVM request) as the plan renders it.
    pub checked: Checked,
    /// What the attestation names.
    pub evidence: JobEvidence,
}

/// The most a pipeline file may be (the linter refuses larger ones anyway).
const MAX_PIPELINE_BYTES: u64 = quorum_pipeline::MAX_FILE_BYTES as u64;

/// Derives and checks the job `request` (`request_event`, admitted as `admission`) runs, from
/// the pipeline at its commit in the checkout `dir` (the commit already fetched there).
pub async fn derive(
    admission: &Admission,
    request_event: &Event,
    request: &JobRequest,
    dir: &Path,
    policy: &GitPolicy,
) -> Result<Derived, DeriveError> {
    let params = &admission.params;
    let commit = params.commit.as_str();
    let path = admission.mandate.pipeline.as_str();
    let url = params
        .source
        .as_ref()
        .map(|s| s.url.as_str())
        .ok_or_else(|| DeriveError::Release("the request names no source".into()))?;
    let text = git::show_file(dir, commit, path, MAX_PIPELINE_BYTES, policy)
        .await?
        .ok_or_else(|| DeriveError::NoPipeline {
            commit: commit.to_string(),
            path: path.to_string(),
        })?;
    let plan = quorum_pipeline::parse(path, &text).map_err(|d| DeriveError::Lint {
        commit: commit.to_string(),
        path: path.to_string(),
        diagnostics: d.to_string(),
    })?;
    let plan_hash = plan.plan_hash();
    let job_id = request
        .param_value(dispatch::PARAM_JOB)
        .ok_or(DeriveError::NoJob)?;
    let job = plan
        .job(job_id)
        .ok_or_else(|| DeriveError::UnknownJob {
            commit: commit.to_string(),
            path: path.to_string(),
            job: job_id.to_string(),
        })?
        .clone();
    check_size(&job, admission)?;
    let checked = dispatch::check_request(&job, url, commit, request)?;
    check_release(&plan, &job, params, url, &plan_hash)?;
    check_chain(
        &plan,
        &job,
        admission,
        request_event,
        request,
        url,
        &plan_hash,
    )?;
    if let Some(source) = &admission.source {
        for tips in &source.ancestry {
            if !git::reaches(dir, url, commit, tips, policy).await? {
                return Err(DeriveError::NotReachable {
                    commit: commit.to_string(),
                });
            }
        }
    }
    let source = params
        .source
        .as_ref()
        .expect("checked above: the request names its source");
    let plan_hash = Sha256Hex::parse(&plan_hash).expect("a plan hash is a sha256");
    Ok(Derived {
        evidence: JobEvidence {
            announcement: source.announcement,
            state: source.state,
            pipeline: path.to_string(),
            plan_hash,
            job: job.id.clone(),
        },
        plan,
        plan_hash,
        job,
        checked,
    })
}

fn check_size(job: &PlannedJob, admission: &Admission) -> Result<(), DeriveError> {
    let (t, n) = (admission.mandate.threshold, admission.mandate.n());
    match job.quorum_size() {
        Some((replicas, threshold)) if replicas as usize == n && u32::from(t) == threshold => {
            Ok(())
        }
        found => Err(DeriveError::Size {
            job: job.id.clone(),
            found: match found {
                Some((replicas, threshold)) => format!("{threshold} of {replicas}"),
                None => "no quorum".into(),
            },
            t,
            n,
        }),
    }
}

/// A release is asked for exactly when the job is a release job, for the run this pipeline at
/// this commit is, and names the job.
fn check_release(
    plan: &Plan,
    job: &PlannedJob,
    params: &QuorumJobParams,
    url: &str,
    plan_hash: &str,
) -> Result<(), DeriveError> {
    match (&params.release, job.release) {
        (None, false) => Ok(()),
        (None, true) => Err(DeriveError::Release(format!(
            "job {} is a release job, but the request asks for no release binding",
            job.id
        ))),
        (Some(_), false) => Err(DeriveError::Release(format!(
            "job {} is not a release job (`release: true`)",
            job.id
        ))),
        (Some(release), true) => {
            let run = quorum_pipeline::run_id(url, &params.commit, plan_hash);
            if release.run != run {
                return Err(DeriveError::Release(format!(
                    "the request names run {}, but this pipeline at commit {} from {url} is \
                     run {run}",
                    release.run, params.commit
                )));
            }
            if release.job != job.id {
                return Err(DeriveError::Release(format!(
                    "the release names job {}, the request runs job {}",
                    release.job, job.id
                )));
            }
            // The quorum signs the binding only after these passed, so they must be all of
            // them: a request that leaves one out would have it sign before that approval.
            let gates: Vec<&str> = plan.release_gates().iter().map(|g| g.id.as_str()).collect();
            if release.gates != gates {
                return Err(DeriveError::Release(format!(
                    "the release depends on approval gates [{}], the request names [{}]",
                    gates.join(", "),
                    release.gates.join(", ")
                )));
            }
            Ok(())
        }
    }
}

/// Every later step of a quorum chain the request carries is the plan's next job, with the
/// same quorum, commit and source, exactly as the plan renders it.
fn check_chain(
    plan: &Plan,
    job: &PlannedJob,
    admission: &Admission,
    request_event: &Event,
    request: &JobRequest,
    url: &str,
    plan_hash: &str,
) -> Result<(), DeriveError> {
    if request.param_value(PARAM_CHAIN).is_none() {
        return Ok(());
    }
    let expected: Vec<&PlannedJob> = plan.quorum_chain_from(job).into_iter().skip(1).collect();
    let members: std::collections::BTreeSet<PublicKey> =
        admission.mandate.members.iter().map(|m| m.pubkey).collect();
    // Each next request is derived as the quorum would sign it; its own signature is
    // irrelevant here, so a throwaway key stands in.
    let scratch = Keys::generate();
    let mut event = request_event.clone();
    let mut current = request.clone();
    let mut steps = 0;
    loop {
        let next = match chain::next_request(&event, &current, EventId::all_zeros()) {
            None => break,
            Some(Err(err)) => return Err(DeriveError::Chain(err.to_string())),
            Some(Ok(next)) => next,
        };
        let Some(next_job) = expected.get(steps) else {
            return Err(DeriveError::Chain(format!(
                "it carries more steps than the pipeline's quorum chain after {} ({})",
                job.id,
                expected.len()
            )));
        };
        dispatch::check_request(next_job, url, &admission.params.commit, &next)
            .map_err(|e| DeriveError::Chain(format!("step {}: {e}", steps + 1)))?;
        let providers: std::collections::BTreeSet<PublicKey> =
            next.providers.iter().copied().collect();
        if providers != members {
            return Err(DeriveError::Chain(format!(
                "step {} is not addressed to exactly the mandate's members",
                steps + 1
            )));
        }
        let next_params = QuorumJobParams::from_request(&next)
            .map_err(|e| DeriveError::Chain(format!("step {}: {e}", steps + 1)))?
            .ok_or_else(|| {
                DeriveError::Chain(format!("step {} is not a quorum request", steps + 1))
            })?;
        if next_params.mandate != admission.params.mandate
            || next_params.commit != admission.params.commit
            || next_params.source != admission.params.source
        {
            return Err(DeriveError::Chain(format!(
                "step {} names another mandate, commit or source",
                steps + 1
            )));
        }
        check_release(plan, next_job, &next_params, url, plan_hash)
            .map_err(|e| DeriveError::Chain(format!("step {}: {e}", steps + 1)))?;
        steps += 1;
        event = next
            .to_event_builder()
            .sign_with_keys(&scratch)
            .map_err(|e| DeriveError::Chain(e.to_string()))?;
        current = next;
    }
    if steps != expected.len() {
        return Err(DeriveError::Chain(format!(
            "it carries {steps} later steps; the pipeline's quorum chain after {} has {}",
            job.id,
            expected.len()
        )));
    }
    Ok(())
}
