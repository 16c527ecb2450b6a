//! Approval gates: the run pauses, asks the maintainers (kind 8701), and goes on only when
//! enough of them approved exactly these artifacts (8702), or fails when they reject (8703) or
//! the request expires.
//!
//! What is shown for approval is what the jobs named in `show` produced: every artifact with
//! its sha256 and the DVMs that built it. The tally (`quorum_proto::approval`) refuses verdicts
//! from anyone outside the maintainer set, expired or replayed ones, and ones that name other
//! bytes.

use std::time::Duration;

use quorum_pipeline::PlannedJob;
use quorum_proto::approval::{
    APPROVAL, ApprovalRequest, ApprovalTally, ArtifactDigest, GateStatus, REJECTION,
};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::maintainer_set;
use quorum_proto::nostr::{Filter, PublicKey, Timestamp};

use crate::{Engine, JobRecord, JobState, lock};

/// An approval job's settings, from the plan.
pub(crate) struct Gate<'a> {
    pub required: u32,
    pub from: &'a [String],
    pub show: &'a [String],
}

/// How often the gate looks for new verdicts.
const POLL: Duration = Duration::from_millis(500);

pub(crate) async fn run_gate(
    engine: &Engine<'_, '_>,
    job: &PlannedJob,
    gate: Gate<'_>,
    finished: &[JobRecord],
) -> JobRecord {
    let mut record = JobRecord::new(job);
    match ask(engine, job, &gate, finished).await {
        Ok((request, verdict)) => {
            record.request = Some(request);
            match verdict {
                Ok(summary) => {
                    record.content = Some(summary);
                    record.state = JobState::Succeeded;
                }
                Err(reason) => record.state = JobState::Failed { reason },
            }
        }
        Err(reason) => record.state = JobState::Failed { reason },
    }
    record
}

/// Publishes the request and waits for the tally; the outer error is for a gate that could
/// not even ask, the inner one for a gate the maintainers did not open.
async fn ask(
    engine: &Engine<'_, '_>,
    job: &PlannedJob,
    gate: &Gate<'_>,
    finished: &[JobRecord],
) -> Result<(String, Result<String, String>), String> {
    let Engine {
        client,
        context,
        config,
        reporter,
        run,
    } = *engine;
    let named: Vec<PublicKey> = if gate.from.is_empty() {
        context.maintainers.clone()
    } else {
        gate.from
            .iter()
            .map(|key| PublicKey::parse(key).map_err(|e| format!("approver {key:?}: {e}")))
            .collect::<Result<_, _>>()?
    };
    if named.is_empty() {
        return Err(format!(
            "approval gate {} has nobody to ask: list maintainers in `from`, or give the run \
             its maintainers",
            job.id
        ));
    }
    let repo = context.repo_id.clone().ok_or_else(|| {
        "approval gates name the repository by its NIP-34 identity; give the run its owner \
         and identifier"
            .to_string()
    })?;
    // Who counts is the repository's maintainer set (§12): the pipeline file is written by
    // whoever wrote the commit, so `from` may narrow the electorate, never widen it.
    let announcements = client
        .fetch(
            quorum_proto::nip34::announcements_of(&repo),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| format!("cannot look up the maintainers of {repo}: {e}"))?;
    let set = maintainer_set(&repo.owner, &repo.identifier, &announcements);
    let (maintainers, strangers): (Vec<PublicKey>, Vec<PublicKey>) =
        named.into_iter().partition(|key| set.contains(key));
    if !strangers.is_empty() {
        lock(reporter).job_progress(
            &job.id,
            &client.public_key(),
            &format!(
                "not asking {}: not a maintainer of {repo} (the owner and those its announcement \
                 lists)",
                strangers
                    .iter()
                    .map(|k| k.to_hex()[..12].to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if maintainers.len() < gate.required as usize {
        return Err(format!(
            "approval gate {} needs {} approval(s), but only {} of the keys it would ask are \
             maintainers of {repo}{}",
            job.id,
            gate.required,
            maintainers.len(),
            if strangers.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} are not: {})",
                    strangers.len(),
                    strangers
                        .iter()
                        .map(PublicKey::to_hex)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    }
    let mut artifacts = Vec::new();
    let mut builders = Vec::new();
    for shown in gate.show {
        let Some(record) = finished.iter().find(|r| &r.id == shown) else {
            continue;
        };
        if let Some(provider) = record
            .provider
            .as_deref()
            .and_then(|p| PublicKey::parse(p).ok())
            && !builders.contains(&provider)
        {
            builders.push(provider);
        }
        for artifact in record.report.iter().flat_map(|r| &r.artifacts) {
            let sha = Sha256Hex::parse(&artifact.blob.sha256)
                .map_err(|e| format!("artifact {}: {e}", artifact.name))?;
            artifacts.push(ArtifactDigest::new(
                format!("{shown}/{}", artifact.name),
                sha,
            ));
        }
    }
    if artifacts.is_empty() {
        return Err(format!(
            "approval gate {} has nothing to show: the jobs in `show` produced no artifacts",
            job.id
        ));
    }
    let request = ApprovalRequest {
        repo,
        run: run.to_string(),
        commit: context.commit.clone(),
        artifacts,
        builders,
        maintainers: maintainers.clone(),
        required: gate.required,
        expiration: Timestamp::now() + config.approval_wait.as_secs(),
        content: format!("Approve {} of commit {}?", job.name, context.commit),
    };
    decide(client, request, |line| {
        lock(reporter).job_progress(&job.id, &client.public_key(), line)
    })
    .await
}

/// The name under which a pull-request run shows the pipeline file it would run.
pub(crate) const PULL_REQUEST_PIPELINE: &str = "pull-request/.quorum/pipeline.yml";

/// A contributor's pull-request commit waiting for a maintainer to let it run: what one of
/// them approves is that commit and the pipeline file at it (its sha256, shown as
/// [`PULL_REQUEST_PIPELINE`]), since the contributor wrote both.
pub(crate) struct PullRequestGate {
    pub repo: quorum_proto::nip34::RepoCoordinate,
    pub run: String,
    pub commit: String,
    pub pipeline_sha256: Sha256Hex,
    /// The repository's maintainer set (§10).
    pub maintainers: Vec<PublicKey>,
    pub wait: Duration,
}

impl PullRequestGate {
    /// Asks; `say` gets the line that tells how to approve. Returns the request id, and the
    /// verdict: approved (by whom) or why not.
    pub async fn ask(
        self,
        client: &quorum_dvm::client::JobClient,
        say: impl FnOnce(&str),
    ) -> Result<(String, Result<String, String>), String> {
        let content = format!(
            "Run the pipeline of pull-request commit {}? Its author is not a maintainer; the \
             run gets no secrets and releases nothing.",
            self.commit
        );
        let request = ApprovalRequest {
            repo: self.repo,
            run: self.run,
            commit: self.commit,
            artifacts: vec![ArtifactDigest::new(
                PULL_REQUEST_PIPELINE,
                self.pipeline_sha256,
            )],
            builders: Vec::new(),
            maintainers: self.maintainers,
            required: 1,
            expiration: Timestamp::now() + self.wait.as_secs(),
            content,
        };
        decide(client, request, say).await
    }
}

/// Publishes `request` and waits for the maintainers' tally; `say` gets the line that tells
/// how to approve, once published.
async fn decide(
    client: &quorum_dvm::client::JobClient,
    request: ApprovalRequest,
    say: impl FnOnce(&str),
) -> Result<(String, Result<String, String>), String> {
    let maintainers = request.maintainers.clone();
    let builder = request.to_event_builder().map_err(|e| e.to_string())?;
    let event = client
        .publish_event(builder)
        .await
        .map_err(|e| format!("cannot ask the maintainers: {e}"))?;
    say(&crate::progress::approval_wait(
        request.required,
        &event.id.to_hex(),
    ));
    let filter = Filter::new().kinds([APPROVAL, REJECTION]).event(event.id);
    loop {
        let verdicts = client
            .fetch(filter.clone(), Duration::from_secs(2))
            .await
            .unwrap_or_default();
        let tally = ApprovalTally::evaluate(&event, &verdicts, &maintainers, Timestamp::now())
            .map_err(|e| e.to_string())?;
        let names = |keys: &[PublicKey]| {
            keys.iter()
                .map(|k| k.to_hex()[..12].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verdict = match tally.status() {
            GateStatus::Pending => {
                tokio::time::sleep(POLL).await;
                continue;
            }
            GateStatus::Approved => Ok(format!("approved by {}", names(&tally.approved_by))),
            GateStatus::Rejected => Err(format!("rejected by {}", names(&tally.rejected_by))),
            GateStatus::Expired => Err("no decision before the approval request expired".into()),
        };
        return Ok((event.id.to_hex(), verdict));
    }
}
