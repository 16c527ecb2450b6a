//! `quorum verify FILE`: what the release events on the relays say about these bytes.

use std::process::ExitCode;

use quorum_dvm::client::JobClient;
use quorum_proto::nostr::{Keys, PublicKey, ToBech32};
use quorum_router::verify::Verification;

use crate::cli::VerifyArgs;

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let relays = super::relay_urls(&args.relays)?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let verification = quorum_router::verify::verify_file(&client, &args.file).await;
    client.shutdown().await;
    let verification = verification?;
    if args.json {
        println!("{}", serde_json::to_string(&verification)?);
    } else {
        print_human(&verification);
    }
    Ok(if verification.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// `npub… (hex)` for a hex key, or the text as it came (sanitised) if it is not one.
fn npub(hex: &str) -> String {
    match PublicKey::from_hex(hex)
        .ok()
        .and_then(|k| k.to_bech32().ok())
    {
        Some(npub) => npub,
        None => super::sanitize(hex),
    }
}

fn print_human(v: &Verification) {
    println!("sha256      {}", v.sha256);
    let show = |label: &str, value: &Option<String>| {
        if let Some(value) = value {
            println!("  {label:<11} {}", super::sanitize(value));
        }
    };
    // Without a release, the problems below say so.
    if let Some(release) = &v.release {
        println!("{} release   {release}", mark(true));
        show("name", &v.name);
        show("signed by", &v.signer.as_deref().map(npub));
        show("repo", &v.repo);
        show("commit", &v.commit);
        show("run", &v.run);
    }
    if let Some(quorum) = &v.quorum {
        println!("  quorum      {}", npub(quorum));
        show("attestation", &v.attestation);
        if let Some(mandate) = &v.mandate {
            println!("  mandate     {}", super::sanitize(mandate));
            show("  signed by", &v.mandate_signer.as_deref().map(npub));
        }
        if let Some(threshold) = v.threshold {
            println!(
                "  threshold   {} of {} members must agree",
                threshold.t, threshold.n
            );
        }
        let members = |label: &str, list: &[String]| {
            println!("  {label:<11} {}", list.len());
            for member in list {
                println!("    {}", npub(member));
            }
        };
        members("agreed", &v.agreed);
        members("disagreed", &v.disagreed);
        members("silent", &v.silent);
        if !v.late.is_empty() {
            members("late", &v.late);
        }
    }
    for builder in &v.attested_by {
        println!("{} attested by {}", mark(true), npub(builder));
    }
    for problem in &v.problems {
        println!("{} {}", mark(false), super::sanitize(problem));
    }
    for url in &v.urls {
        println!("  mirror      {}", super::sanitize(url));
    }
    let verdict = match (v.ok, v.quorum.is_some()) {
        (true, true) => {
            "verified: a quorum authorised by a maintainer's mandate signed a release of these \
             bytes, and at least t of its members agreed on them"
        }
        (true, false) => {
            "verified: a release lists these bytes and its builders attest them (it is not \
             quorum-signed: nothing vouches for the signer's authority)"
        }
        (false, _) => "NOT verified",
    };
    println!("{verdict}");
}
