//! CI status for gitworkshop (NIP-C1 as ngit-ci uses it): a workflow progress event (39842,
//! addressable, expiring) while the run goes, then one job result (9841) per job and one
//! workflow result (9842) quoting them, so that clients that show CI for a NIP-34 repository
//! show our runs. Published only when the run knows its repository's NIP-34 identity, which
//! every such event names.

use quorum_dvm::client::JobClient;
use quorum_proto::nipc1::{
    CiContext, CiJobResult, CiWorkflowProgress, CiWorkflowResult, Conclusion, ProgressStatus, Quote,
};
use quorum_proto::nostr::{EventId, Timestamp};

use crate::{JobState, RunContext, RunOutcome};

/// How long a progress event stays up if nobody replaces it (a run that died).
const PROGRESS_LIFETIME_SECS: u64 = 6 * 3600;

/// Says that the run `run` is in progress (39842, `d` = the run id). Nothing without a NIP-34
/// identity; a failure to publish is logged, not fatal: status is for display.
pub async fn publish_progress(
    client: &JobClient,
    context: &RunContext,
    run: &str,
    jobs: u32,
    started_at: Timestamp,
) {
    let Some(repo) = context.repo_id.clone() else {
        return;
    };
    let progress = CiWorkflowProgress {
        identifier: run.to_string(),
        context: CiContext::new(repo, context.commit.clone()),
        status: ProgressStatus::InProgress,
        conclusion: None,
        queued_at: Some(started_at),
        started_at: Some(started_at),
        jobs: Vec::new(),
        manual_trigger: None,
        queue: Some(0),
        in_progress: Some(jobs),
        expiration: started_at + PROGRESS_LIFETIME_SECS,
        content: String::new(),
    };
    // Dated `started_at`: the concluded event that replaces it is dated at least a second later
    // (a replaceable event of the same second would be a tie the relay may settle either way).
    let published = match progress.to_event_builder() {
        Ok(builder) => client
            .publish_event(builder.custom_created_at(started_at))
            .await
            .map(|_| ()),
        Err(err) => return tracing::warn!("no CI progress: {err}"),
    };
    if let Err(err) = published {
        tracing::warn!("CI progress not published: {err}");
    }
}

/// Publishes the run's CI status; returns the workflow result's id, or `None` when the run
/// has no NIP-34 identity to name. The progress event of `run` is replaced by a concluded one.
pub async fn publish_ci_status(
    client: &JobClient,
    context: &RunContext,
    run: &str,
    outcome: &RunOutcome,
    started_at: Timestamp,
) -> Result<Option<EventId>, String> {
    let Some(repo) = context.repo_id.clone() else {
        return Ok(None);
    };
    let ci = CiContext::new(repo, context.commit.clone());
    let mut quotes = Vec::new();
    let mut conclusions = Vec::new();
    for job in &outcome.jobs {
        let conclusion = match &job.state {
            JobState::Succeeded => Conclusion::Success,
            JobState::Skipped { .. } => Conclusion::Skipped,
            JobState::Failed { .. } if job.report.as_ref().is_some_and(|r| r.timed_out) => {
                Conclusion::TimedOut
            }
            JobState::Failed { .. } => Conclusion::Failure,
        };
        conclusions.push(conclusion);
        let report = job.report.as_ref();
        let result = CiJobResult {
            context: ci.clone(),
            job: job.id.clone(),
            conclusion,
            // gitworkshop links the full log; a job without a runner log has none to link.
            logs: report
                .and_then(|r| r.log.urls.first().cloned())
                .unwrap_or_default(),
            name: Some(job.name.clone()),
            artifacts: report
                .map(|r| {
                    r.artifacts
                        .iter()
                        .filter_map(|a| a.blob.urls.first().cloned())
                        .collect()
                })
                .unwrap_or_default(),
            queued_at: Some(started_at),
            started_at: Some(started_at),
            exit_code: report.and_then(|r| r.exit_code),
            runs_on: job.provider.iter().cloned().collect(),
            log_tail: report.map(|r| r.log_tail.clone()).unwrap_or_default(),
        };
        let builder = match result.to_event_builder() {
            Ok(builder) => builder,
            // A job with nothing to link (skipped, gate) cannot be a 9841: the workflow result
            // still carries its conclusion.
            Err(err) => {
                tracing::debug!(job = %job.id, "no CI job result: {err}");
                continue;
            }
        };
        let event = client
            .publish_event(builder)
            .await
            .map_err(|e| format!("cannot publish CI status: {e}"))?;
        quotes.push(Quote::of(&event));
    }
    let conclusion = Conclusion::roll_up(conclusions).unwrap_or(Conclusion::Neutral);
    let concluded = CiWorkflowProgress {
        identifier: run.to_string(),
        context: ci.clone(),
        status: ProgressStatus::Concluded,
        conclusion: Some(conclusion),
        queued_at: Some(started_at),
        started_at: Some(started_at),
        jobs: quotes.clone(),
        manual_trigger: None,
        queue: Some(0),
        in_progress: Some(0),
        expiration: Timestamp::now() + PROGRESS_LIFETIME_SECS,
        content: String::new(),
    };
    client
        .publish_event(
            concluded
                .to_event_builder()
                .map_err(|e| e.to_string())?
                .custom_created_at(Timestamp::now().max(started_at + 1u64)),
        )
        .await
        .map_err(|e| format!("cannot publish CI progress: {e}"))?;
    let workflow = CiWorkflowResult {
        context: ci,
        conclusion,
        queued_at: Some(started_at),
        started_at: Some(started_at),
        jobs: quotes,
        manual_trigger: None,
        content: String::new(),
    };
    let event = client
        .publish_event(workflow.to_event_builder().map_err(|e| e.to_string())?)
        .await
        .map_err(|e| format!("cannot publish CI status: {e}"))?;
    Ok(Some(event.id))
}
