//! `quorum job …`: submitting jobs to DVMs, following them live, printing the outcome.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_dvm::client::{JobClient, JobOutcome, JobReporter};
use quorum_proto::nip90::{InputType, JobFeedback, JobInput, JobParam, JobRequest};
use quorum_proto::nostr::{Keys, Kind, PublicKey};
use quorum_proto::step::{StepJob, StepReport};
use serde_json::{Value, json};

use crate::cli::{BuildArgs, JobCommand, JobTarget, SubmitArgs};

pub async fn run(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Build(args) => build(args).await,
        JobCommand::Submit(args) => submit(args).await,
    }
}

async fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let mut step = StepJob::new(args.repo, args.commit, args.run.join("\n"));
    step.artifacts = args.artifacts;
    step.network = args.network;
    step.timeout = args.timeout.map(Duration::from_secs);
    for pair in &args.env {
        let (key, value) = key_value(pair, "--env")?;
        step.env.insert(key, value);
    }
    for spec in &args.secrets {
        let (key, value) = super::secret(spec)?;
        step.secrets.insert(key, value);
    }
    let encrypt = !step.secrets.is_empty();
    // Check the step locally first: the same rules the runner applies, with the same words.
    StepJob::from_request(&step.to_request(), encrypt).context("invalid step")?;
    let mut request = step.to_request();
    let sent = send(&args.target, &mut request, encrypt).await?;
    let outcome = &sent.outcome;

    let (code, value) = match outcome {
        JobOutcome::Result {
            request,
            event,
            provider,
            content,
        } => {
            let report: StepReport = serde_json::from_str(content).with_context(|| {
                format!(
                    "the runner's result is not a step report: {}",
                    super::sanitize(content)
                )
            })?;
            let ok = report.succeeded();
            let value = json!({
                "status": if ok { "success" } else { "error" },
                "request": request.id.to_hex(),
                "result": event.id.to_hex(),
                "provider": provider.to_hex(),
                "exit_code": report.exit_code,
                "timed_out": report.timed_out,
                "duration_ms": report.duration_ms,
                "commit": report.commit,
                "artifacts": report.artifacts.iter().map(|a| json!({
                    "name": a.name, "size": a.blob.size, "sha256": a.blob.sha256, "urls": a.blob.urls,
                })).collect::<Vec<_>>(),
                "log": {"sha256": report.log.sha256, "size": report.log.size, "urls": report.log.urls},
                "sandbox": {"name": report.sandbox.name, "isolated": report.sandbox.isolated},
            });
            if !args.target.json {
                print_step_report(&report, provider);
            }
            (exit(ok), value)
        }
        JobOutcome::Error {
            request,
            provider,
            feedback,
        } => (
            exit(false),
            error_json(request.id.to_hex(), provider, feedback),
        ),
    };
    finish(&args.target, &sent, value);
    Ok(code)
}

async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut request = JobRequest::new(Kind::from_u16(args.kind))
        .with_context(|| format!("--kind {} is not a job request kind (5000-5999)", args.kind))?;
    for input in &args.inputs {
        let (head, value) = input
            .split_once(':')
            .with_context(|| format!("--input {input:?} is not TYPE[#MARKER]:VALUE"))?;
        let (kind, marker) = match head.split_once('#') {
            Some((kind, marker)) => (kind, Some(marker.to_string())),
            None => (head, None),
        };
        let input_type: InputType = kind.parse().with_context(|| format!("--input {input:?}"))?;
        request.inputs.push(JobInput {
            data: value.to_string(),
            input_type,
            relay: None,
            marker,
        });
    }
    for param in &args.params {
        let (key, value) = param
            .split_once('=')
            .with_context(|| format!("--param {param:?} is not KEY=VALUE"))?;
        request.params.push(JobParam::new(key, value));
    }
    let sent = send(&args.target, &mut request, args.encrypt).await?;
    let outcome = &sent.outcome;
    let (code, value) = match outcome {
        JobOutcome::Result {
            request,
            event,
            provider,
            content,
        } => {
            if !args.target.json {
                println!("{}", super::sanitize(content));
            }
            let value = json!({
                "status": "success",
                "request": request.id.to_hex(),
                "result": event.id.to_hex(),
                "provider": provider.to_hex(),
                "content": content,
            });
            (exit(true), value)
        }
        JobOutcome::Error {
            request,
            provider,
            feedback,
        } => (
            exit(false),
            error_json(request.id.to_hex(), provider, feedback),
        ),
    };
    finish(&args.target, &sent, value);
    Ok(code)
}

/// A job's answer and, when it was paid, what it cost.
struct Sent {
    outcome: JobOutcome,
    paid_msats: u64,
    change_msats: u64,
}

/// Publishes the request on the target's relays and follows it to its outcome, paying the DVM
/// when it asks and the target has a budget.
async fn send(target: &JobTarget, request: &mut JobRequest, encrypt: bool) -> anyhow::Result<Sent> {
    let relays = super::relay_urls(&target.relays)?;
    if let Some(provider) = &target.provider {
        let provider = PublicKey::parse(provider).with_context(|| {
            format!("--provider {provider:?} is neither an npub nor 64 hex characters")
        })?;
        request.providers.push(provider);
    } else if encrypt {
        bail!(
            "encrypted jobs (secrets, --encrypt) need --provider: they are readable by one DVM only"
        );
    }
    request.relays = relays.clone();
    let keys = match &target.key {
        Some(path) => quorum_dvm::keyfile::load(path)?,
        None => Keys::generate(),
    };
    let payer = match (target.budget, &target.mint) {
        (Some(budget), Some(mint)) => {
            let dir = match &target.wallet {
                Some(dir) => dir.clone(),
                None => super::run::data_home()?.join("wallet"),
            };
            // Payments refund to this key, and change comes back locked to it.
            let payer = quorum_pay::WalletPayer {
                wallet: quorum_pay::PayWallet::open_in(&dir, mint).await?,
                keys: keys.clone(),
            };
            Some((payer, budget.saturating_mul(1000)))
        }
        _ => None,
    };
    let client = JobClient::connect(&relays, keys).await?;
    let mut reporter = Live {
        quiet: target.json,
        last_tail: String::new(),
    };
    let wait = Duration::from_secs(target.wait);
    let sent = match &payer {
        Some((payer, budget_msats)) => quorum_pay::job::PaidJob {
            payer,
            budget_msats: *budget_msats,
        }
        .run(&client, request, encrypt, wait, &mut reporter)
        .await
        .map(|paid| Sent {
            outcome: paid.outcome,
            paid_msats: paid.paid_msats,
            change_msats: paid.change_msats,
        })
        .map_err(anyhow::Error::from),
        None => client
            .run(request, encrypt, wait, &mut reporter)
            .await
            .map(|outcome| Sent {
                outcome,
                paid_msats: 0,
                change_msats: 0,
            })
            .map_err(anyhow::Error::from),
    };
    client.shutdown().await;
    sent
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn error_json(request: String, provider: &PublicKey, feedback: &JobFeedback) -> Value {
    json!({
        "status": "error",
        "request": request,
        "result": null,
        "provider": provider.to_hex(),
        "message": feedback.extra,
        "log_tail": feedback.content,
    })
}

fn finish(target: &JobTarget, sent: &Sent, mut value: Value) {
    if sent.paid_msats > 0 {
        value["paid_msats"] = json!(sent.paid_msats);
        value["change_msats"] = json!(sent.change_msats);
    }
    if target.json {
        println!("{value}");
        return;
    }
    if sent.paid_msats > 0 {
        eprintln!(
            "paid {} sat to {}{}",
            sent.paid_msats / 1000,
            short(sent.outcome.provider()),
            match sent.change_msats {
                0 => String::new(),
                msats => format!(", {} sat came back as change", msats / 1000),
            }
        );
    }
    if let JobOutcome::Error {
        provider, feedback, ..
    } = &sent.outcome
    {
        if !feedback.content.is_empty() {
            eprintln!("{}", super::sanitize(&feedback.content));
        }
        eprintln!(
            "error from {}: {}",
            short(provider),
            super::sanitize(feedback.extra.as_deref().unwrap_or("(no reason given)"))
        );
    }
}

fn print_step_report(report: &StepReport, provider: &PublicKey) {
    let status = if report.succeeded() {
        "succeeded".to_string()
    } else if report.timed_out {
        "timed out".to_string()
    } else {
        match report.exit_code {
            Some(code) => format!("failed with exit code {code}"),
            None => "was killed".to_string(),
        }
    };
    println!(
        "step {status} in {:.1}s on {} ({})",
        report.duration_ms as f64 / 1000.0,
        short(provider),
        report.sandbox.name
    );
    for artifact in &report.artifacts {
        println!(
            "  {}  {}  {} bytes",
            artifact.blob.sha256,
            super::sanitize(&artifact.name),
            artifact.blob.size
        );
    }
    if let Some(url) = report.log.urls.first() {
        println!("  log: {}", super::sanitize(url));
    }
}

fn short(key: &PublicKey) -> String {
    key.to_hex()[..12].to_string()
}

fn key_value(pair: &str, flag: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = pair
        .split_once('=')
        .with_context(|| format!("{flag} takes KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

/// Prints feedback as it arrives: status changes, and the new lines of each log tail.
struct Live {
    quiet: bool,
    last_tail: String,
}

impl JobReporter for Live {
    fn feedback(&mut self, provider: &PublicKey, feedback: &JobFeedback, content: &str) {
        if self.quiet {
            return;
        }
        match feedback.status {
            quorum_proto::nip90::FeedbackStatus::Partial => {
                for line in quorum_dvm::client::new_lines(&self.last_tail, content) {
                    eprintln!("  | {}", super::sanitize(line));
                }
                self.last_tail = content.to_string();
            }
            status => eprintln!(
                "[{status}] {}{}",
                short(provider),
                feedback
                    .extra
                    .as_deref()
                    .map(|e| format!(": {}", super::sanitize(e)))
                    .unwrap_or_default()
            ),
        }
    }
}
