//! `quorum approve` / `quorum reject`: a maintainer's verdict on an approval gate, signed only
//! after they were shown what they are approving.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_dvm::client::JobClient;
use quorum_proto::approval::{APPROVAL_REQUEST, ApprovalRequest, Decision, Verdict};
use quorum_proto::nostr::{EventId, Filter, Keys, Timestamp};

use super::signer::Signer;
use crate::cli::VerdictArgs;

/// How long a verdict stays valid (NIP-40): long enough to reach the relays, short enough that
/// a leaked one is soon worthless.
const VERDICT_LIFETIME_SECS: u64 = 3600;

pub async fn run(args: VerdictArgs, decision: Decision) -> anyhow::Result<ExitCode> {
    let id = EventId::parse(&args.request)
        .with_context(|| format!("{:?} is not an event id (hex or nevent)", args.request))?;
    let relays = super::relay_urls(&args.relays)?;
    let signer = Signer::from_args(&args.signer).await?;
    let me = signer.public_key().await?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let found = client
        .fetch(
            Filter::new().id(id).kind(APPROVAL_REQUEST),
            Duration::from_secs(10),
        )
        .await?;
    let Some(event) = found.into_iter().next() else {
        client.shutdown().await;
        bail!("no approval request {id} on {}", args.relays.join(", "));
    };
    let request = ApprovalRequest::from_event(&event).context("the approval request is invalid")?;
    if !request.maintainers.contains(&me) {
        client.shutdown().await;
        bail!(
            "your key {} is not among the maintainers this request asks",
            me.to_hex()
        );
    }
    if request.expiration <= Timestamp::now() {
        client.shutdown().await;
        bail!("the approval request expired at {}", request.expiration);
    }

    // What is being approved, before anything is signed.
    let sanitize = super::sanitize;
    eprintln!("repository  {}", sanitize(&request.repo.to_string()));
    eprintln!("run         {}", request.run);
    eprintln!("commit      {}", request.commit);
    eprintln!("asked by    {}", event.pubkey.to_hex());
    for artifact in &request.artifacts {
        eprintln!(
            "artifact    {}  {}",
            artifact.sha256.to_hex(),
            sanitize(&artifact.name)
        );
    }
    for builder in &request.builders {
        eprintln!("built by    {}", builder.to_hex());
    }
    eprintln!(
        "needs       {} of {} maintainers; expires {}",
        request.required,
        request.maintainers.len(),
        request.expiration
    );
    if !request.content.is_empty() {
        eprintln!("note        {}", sanitize(&request.content));
    }
    let verb = match decision {
        Decision::Approve => "approve",
        Decision::Reject => "reject",
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            client.shutdown().await;
            bail!("nothing signed: pass --yes to {verb} without a prompt");
        }
        eprint!(
            "{verb} these {} artifact(s)? [y/N] ",
            request.artifacts.len()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            client.shutdown().await;
            eprintln!("nothing signed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let verdict = Verdict::on(
        decision,
        &event,
        &request,
        Timestamp::now() + VERDICT_LIFETIME_SECS,
    )
    .with_content(args.comment.clone());
    let signed = signer.sign(verdict.to_event_builder()?).await?;
    client
        .publish_signed(&signed)
        .await
        .context("the verdict was not published")?;
    client.shutdown().await;
    signer.shutdown().await;
    let done = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    if args.json {
        let value = serde_json::json!({
            "decision": done,
            "verdict": signed.id.to_hex(),
            "request": event.id.to_hex(),
            "repository": request.repo.to_string(),
            "commit": request.commit,
            "artifacts": request.artifacts.iter().map(|a| serde_json::json!({
                "name": a.name, "sha256": a.sha256.to_hex(),
            })).collect::<Vec<_>>(),
        });
        super::announce(&value.to_string());
    } else {
        super::announce(&format!("{done}: {}", signed.id.to_hex()));
    }
    Ok(ExitCode::SUCCESS)
}
