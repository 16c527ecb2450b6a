//! CI status for gitworkshop (NIP-C1 as ngit-ci uses it): after a run, one job result (9841)
//! per job and one workflow result (9842) quoting them, so that clients that show CI for a
//! NIP-34 repository show our runs. Published only when the run knows its repository's
//! NIP-34 identity, which every such event names.

use quorum_dvm::client::JobClient;
use quorum_proto::nipc1::{CiContext, CiJobResult, CiWorkflowResult, Conclusion, Quote};
use quorum_proto::nostr::{EventId, Timestamp};

use crate::{JobState, RunContext, RunOutcome};

/// Publishes the run's CI status; returns the workflow result's id, or `None` when the run
/// has no NIP-34 identity to name.
pub async fn publish_ci_status(
    client: &JobClient,
    context: &RunContext,
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
    let workflow = CiWorkflowResult {
        context: ci,
        conclusion: Conclusion::roll_up(conclusions).unwrap_or(Conclusion::Neutral),
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
