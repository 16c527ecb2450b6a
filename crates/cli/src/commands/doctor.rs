//! `quorum doctor`: prints the checks of `quorum_runner::doctor`, one line each with the fix
//! under a warning or failure, or as JSON; exit code 1 when one failed.

use std::process::ExitCode;

use quorum_runner::doctor::{self, Check, Options, Report, Status};

use crate::cli::DoctorArgs;

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        data: args.data,
        relays: args.relays,
        blossom: args.blossoms,
        needs: doctor::Needs::default(),
        timeout: doctor::ENDPOINT_TIMEOUT,
    };
    let report = doctor::run(&options).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per check (`STATUS  NAME  DETAIL`), an indented `fix:` line under problems, and
/// a count at the end. Relay answers and URLs are sanitised: they may carry terminal escapes.
fn text(report: &Report) -> String {
    let labels: Vec<String> = report
        .checks
        .iter()
        .map(|c| super::sanitize(&c.label()))
        .collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (check, label) in report.checks.iter().zip(&labels) {
        out.push_str(&format!(
            "{:<7} {label:<width$}  {}\n",
            check.status.as_str(),
            super::sanitize(&check.detail)
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{:<7} fix: {}\n", "", super::sanitize(fix)));
        }
    }
    let count = |status: Status| report.checks.iter().filter(|c| c.status == status).count();
    out.push_str(&format!(
        "\n{} ok, {} warning(s), {} failed, {} skipped{}\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skipped),
        if report.ok {
            ""
        } else {
            ": fix the failed checks before running build steps here"
        }
    ));
    out
}

/// How a runner reports the checks it ran at start: each problem as a log line.
pub(crate) fn log(checks: &[Check]) {
    for check in checks {
        let fix = check.fix.as_deref().unwrap_or("");
        match check.status {
            Status::Fail => {
                tracing::error!(check = %check.label(), fix, "{}", check.detail)
            }
            Status::Warn => tracing::warn!(check = %check.label(), fix, "{}", check.detail),
            Status::Ok | Status::Skipped => {
                tracing::debug!(check = %check.label(), "{}", check.detail)
            }
        }
    }
}

/// The error a runner refuses to start with: every failed check and its fix.
pub(crate) fn refusal(checks: &[Check]) -> Option<String> {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| match &c.fix {
            Some(fix) => format!("{}: {} (fix: {fix})", c.label(), c.detail),
            None => format!("{}: {}", c.label(), c.detail),
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "refusing to start, checks failed (`quorum doctor` shows them all): {}",
            failed.join("; ")
        )
    })
}
