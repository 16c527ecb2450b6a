//! `quorum follow RUN|REPO`: a run's progress from the relays alone, on any machine. The
//! library (`quorum_router::follow`) works out what happened; this prints it in the lines
//! `quorum run` prints (`quorum_router::progress`), sanitised, since all of it came from the
//! network.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quorum_dvm::client::JobClient;
use quorum_proto::nostr::Keys;
use quorum_router::follow::{FollowError, FollowEvent, Target, find_run, follow_run};
use quorum_router::progress::{
    approval_wait, cost_line, failure_details, job_line, short, started_line,
};

use super::sanitize;
use crate::cli::FollowArgs;

/// How often the relays are read: often enough to feel live, rarely enough to cost nothing.
const POLL: Duration = Duration::from_secs(1);
/// Exit code when --timeout passes first (0: the run succeeded, 1: it failed or could not be
/// followed).
const TIMED_OUT: u8 = 2;
/// Without --timeout, how long to wait for a repository's next run.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

pub async fn run(args: FollowArgs) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let relays = super::relay_urls(&args.relays)?;
    // Following reads only: a throwaway key signs nothing anyone sees.
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let json = args.json;
    if let (Target::Repository(repo), false) = (&target, json) {
        eprintln!("waiting for a run of {repo}…");
    }
    let work = async {
        let request = find_run(&client, &target, args.timeout.unwrap_or(FOREVER)).await?;
        follow_run(&client, request, POLL, &mut |event| print(&event, json)).await
    };
    let outcome = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.ok(),
        None => Some(work.await),
    };
    client.shutdown().await;
    let outcome = match outcome {
        None | Some(Err(FollowError::NoRun { .. })) => {
            let limit = args.timeout.unwrap_or(FOREVER);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "timeout", "after_secs": limit.as_secs()})
                );
            } else {
                eprintln!(
                    "✘ gave up after {} s: the run had not ended (--timeout)",
                    limit.as_secs()
                );
            }
            return Ok(ExitCode::from(TIMED_OUT));
        }
        Some(outcome) => outcome.context("cannot follow the run")?,
    };
    Ok(if outcome.succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One event: a JSON line on stdout, or the progress lines `quorum run` prints on stderr
/// (with the outcome on stdout).
fn print(event: &FollowEvent, json: bool) {
    if json {
        match serde_json::to_string(event) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("cannot encode an event: {err}"),
        }
        return;
    }
    let shorts = |keys: &[String]| keys.iter().map(|k| short(k)).collect::<Vec<_>>().join(", ");
    match event {
        FollowEvent::Run {
            request,
            router,
            repo,
            commit,
            repo_id,
            ..
        } => eprintln!(
            "run {request} of {} at {}{}",
            sanitize(repo_id.as_deref().unwrap_or(repo)),
            sanitize(commit.get(..12).unwrap_or(commit)),
            router
                .as_deref()
                .map(|r| format!(", routed by {}", short(r)))
                .unwrap_or_default()
        ),
        FollowEvent::RunId { run } => eprintln!("run id {}", sanitize(run)),
        FollowEvent::Taken { router } => eprintln!("router {} took the run", short(router)),
        FollowEvent::JobStarted { job, providers, .. } if providers.is_empty() => {
            eprintln!("{}", sanitize(&started_line(job)))
        }
        FollowEvent::JobStarted { job, providers, .. } => {
            eprintln!("{} on {}", sanitize(&started_line(job)), shorts(providers))
        }
        FollowEvent::JobSent { job, providers, .. } => eprintln!(
            "{}",
            sanitize(&job_line(job, &format!("asked {}", shorts(providers))))
        ),
        FollowEvent::JobLog { job, line, .. } => eprintln!("{}", sanitize(&job_line(job, line))),
        FollowEvent::ApprovalRequested {
            job,
            request,
            required,
            ..
        } => eprintln!(
            "{}",
            sanitize(&job_line(
                job.as_deref().unwrap_or("approval"),
                &approval_wait(*required, request)
            ))
        ),
        FollowEvent::Verdict {
            maintainer,
            approved,
            ..
        } => eprintln!(
            "  approval | {} by {}",
            if *approved { "approved" } else { "rejected" },
            short(maintainer)
        ),
        FollowEvent::JobFinished {
            job,
            status,
            line,
            report,
        } => {
            eprintln!("{}", sanitize(line));
            if let (true, Some(report)) = (status == "failure", report) {
                for line in failure_details(job, report) {
                    eprintln!("{}", sanitize(&line));
                }
            }
        }
        FollowEvent::Release {
            binding,
            signer,
            quorum,
        } => eprintln!(
            "✔ release {binding} signed by {} {}",
            if *quorum {
                "the quorum key"
            } else {
                "the router"
            },
            short(signer)
        ),
        FollowEvent::Finished {
            status,
            reason,
            report,
        } => {
            for job in report.iter().flat_map(|r| &r.jobs) {
                for artifact in &job.artifacts {
                    println!(
                        "{}  {}  {} bytes  ({})",
                        sanitize(&artifact.blob.sha256),
                        sanitize(&artifact.name),
                        artifact.blob.size,
                        sanitize(&job.id)
                    );
                }
            }
            if let Some(payment) = report.as_ref().and_then(|r| r.payment.as_ref()) {
                println!("{}", cost_line(payment));
            }
            if status == "success" {
                println!("✔ run succeeded");
                return;
            }
            let failed: Vec<&str> = report
                .iter()
                .flat_map(|r| &r.jobs)
                .filter(|job| job.status == "failure")
                .map(|job| job.id.as_str())
                .collect();
            match (reason, failed.is_empty()) {
                (Some(reason), _) => println!("✘ run failed: {}", sanitize(reason)),
                (None, false) => println!("✘ run failed: {}", sanitize(&failed.join(", "))),
                (None, true) => println!("✘ run failed"),
            }
        }
    }
}
