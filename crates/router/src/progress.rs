//! The lines a run's progress is told in, shared by everyone who tells it: `quorum run` and
//! `quorum demo` (from the engine's [`crate::RunReporter`] calls), the router DVM (its
//! `partial` feedback on the run-pipeline request, protocol §9) and `quorum follow` (which
//! reads that feedback back, [`Transition::parse`]). One spelling, so that a run looks the
//! same whether it ran here or is followed from another machine.
//!
//! The text is not sanitised: reasons and log lines come from the network, and the printer
//! (the CLI) makes them safe for a terminal.

use quorum_proto::step::StepReport;

use crate::{JobRecord, JobState};

/// The first 12 hex characters of a key: enough to tell DVMs apart in a progress line.
pub fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// `▶ JOB`: the job was started.
pub fn started_line(job: &str) -> String {
    format!("▶ {job}")
}

/// `  JOB | LINE`: a line of a job's feedback (a log line, a status change).
pub fn job_line(job: &str, line: &str) -> String {
    format!("  {job} | {line}")
}

/// Who did a job: " on RUNNER", or for a quorum job " by quorum KEY (A of N agreed, T needed)"
/// and who disagreed or was silent; empty when nobody answered.
pub fn done_by(record: &JobRecord) -> String {
    if let Some(quorum) = &record.quorum {
        let mut text = format!(
            " by quorum {} ({} of {} agreed, {} needed",
            short(&quorum.pubkey),
            quorum.agreed.len(),
            quorum.members.len(),
            quorum.threshold
        );
        for (label, keys) in [("disagreed", &quorum.disagreed), ("silent", &quorum.silent)] {
            if !keys.is_empty() {
                let keys: Vec<&str> = keys.iter().map(|k| short(k)).collect();
                text.push_str(&format!("; {label}: {}", keys.join(", ")));
            }
        }
        text.push(')');
        return text;
    }
    record
        .provider
        .as_deref()
        .map(|p| format!(" on {}", short(p)))
        .unwrap_or_default()
}

/// How a job ended, in one line: `✔ JOB on RUNNER`, `✘ JOB on RUNNER: REASON`,
/// `– JOB skipped: REASON` (with [`done_by`] for who).
pub fn finished_line(record: &JobRecord) -> String {
    let on = done_by(record);
    match &record.state {
        JobState::Succeeded => format!("✔ {}{on}", record.id),
        JobState::Failed { reason } => format!("✘ {}{on}: {reason}", record.id),
        JobState::Skipped { reason } => format!("– {} skipped: {reason}", record.id),
    }
}

/// What a failed step left to look at: the tail of its log and where the full log is.
pub fn failure_details(job: &str, report: &StepReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .log_tail
        .lines()
        .map(|line| job_line(job, line))
        .collect();
    if let Some(url) = report.log.urls.first() {
        lines.push(format!("  full log: {url}"));
    }
    lines
}

/// What an approval gate says while it waits: the command a maintainer runs.
pub fn approval_wait(required: u32, request: &str) -> String {
    format!("waiting for {required} approval(s): quorum approve {request}")
}

/// A job transition as the router's `partial` feedback tells it (one line of
/// [`started_line`] or [`finished_line`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Started { job: String },
    Succeeded { job: String },
    Failed { job: String },
    Skipped { job: String },
}

impl Transition {
    /// Reads one line; `None` for anything else (the line's rest is display text, not parsed).
    pub fn parse(line: &str) -> Option<Transition> {
        let (mark, rest) = line.split_once(' ')?;
        // A job id never holds a space or a colon (pipeline ids are [A-Za-z0-9_-]).
        let job = rest
            .split([' ', ':'])
            .next()
            .filter(|job| !job.is_empty())?
            .to_string();
        match mark {
            "▶" => Some(Transition::Started { job }),
            "✔" => Some(Transition::Succeeded { job }),
            "✘" => Some(Transition::Failed { job }),
            "–" => Some(Transition::Skipped { job }),
            _ => None,
        }
    }

    pub fn job(&self) -> &str {
        match self {
            Transition::Started { job }
            | Transition::Succeeded { job }
            | Transition::Failed { job }
            | Transition::Skipped { job } => job,
        }
    }
}

/// A released file copied to another Blossom server (BUD-04), or why not:
/// `✔ mirrored build/out/app to URL` / `✘ mirror of build/out/app to SERVER: refused (HTTP
/// 413): too large`.
pub fn mirrored_line(report: &crate::pipeline_run::MirrorReport) -> String {
    match &report.url {
        Some(url) => format!("✔ mirrored {} to {url}", report.name),
        None => format!(
            "✘ mirror of {} to {}: {}{}{}",
            report.name,
            report.server,
            report.status,
            report
                .http_status
                .map(|s| format!(" (HTTP {s})"))
                .unwrap_or_default(),
            report
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

/// What a paid run cost (a router's report, docs/protocol.md §17.4), in sats as tokens hold
/// them: `cost 5 sat (fee 2, runners 3) of 10 paid, 5 back as change`.
pub fn cost_line(payment: &quorum_proto::run::RunPayment) -> String {
    let sats = |msats: u64| msats.div_ceil(1000);
    format!(
        "cost {} sat (fee {}, runners {}) of {} paid, {} back as change",
        sats(payment.fee_msats + payment.runners_msats),
        sats(payment.fee_msats),
        sats(payment.runners_msats),
        sats(payment.paid_msats),
        sats(payment.change_msats),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_cost_is_told_in_sats() {
        let payment = quorum_proto::run::RunPayment {
            paid_msats: 10_000,
            fee_msats: 2_000,
            runners_msats: 3_000,
            change_msats: 5_000,
        };
        assert_eq!(
            cost_line(&payment),
            "cost 5 sat (fee 2, runners 3) of 10 paid, 5 back as change"
        );
    }

    fn record(state: JobState, provider: Option<&str>) -> JobRecord {
        JobRecord {
            id: "build".into(),
            name: "build".into(),
            state,
            provider: provider.map(str::to_string),
            request: None,
            result: None,
            report: None,
            content: None,
            tried: Vec::new(),
            quorum: None,
            paid_msats: 0,
            payments: Vec::new(),
        }
    }

    #[test]
    fn every_line_the_engine_writes_reads_back_as_its_transition() {
        let runner = "ab".repeat(32);
        let cases = [
            (
                finished_line(&record(JobState::Succeeded, Some(&runner))),
                Transition::Succeeded {
                    job: "build".into(),
                },
            ),
            (
                finished_line(&record(
                    JobState::Failed {
                        reason: "the step exited with code 3".into(),
                    },
                    Some(&runner),
                )),
                Transition::Failed {
                    job: "build".into(),
                },
            ),
            (
                finished_line(&record(
                    JobState::Failed {
                        reason: "no answer".into(),
                    },
                    None,
                )),
                Transition::Failed {
                    job: "build".into(),
                },
            ),
            (
                finished_line(&record(
                    JobState::Skipped {
                        reason: "needs lint, which did not succeed".into(),
                    },
                    None,
                )),
                Transition::Skipped {
                    job: "build".into(),
                },
            ),
            (
                started_line("build"),
                Transition::Started {
                    job: "build".into(),
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(Transition::parse(&line), Some(expected), "{line}");
        }
        assert_eq!(
            finished_line(&record(JobState::Succeeded, Some(&runner))),
            "✔ build on abababababab"
        );
    }

    #[test]
    fn other_lines_are_no_transitions() {
        for line in ["", "▶", "✔ ", "build finished", "  build | ✔ ok", "* build"] {
            assert_eq!(Transition::parse(line), None, "{line:?}");
        }
    }
}
