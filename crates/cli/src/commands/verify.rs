//! `quorum verify FILE`: what the release events on the relays say about these bytes.

use std::process::ExitCode;

use quorum_dvm::client::JobClient;
use quorum_proto::nostr::Keys;

use crate::cli::VerifyArgs;

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let relays = super::relay_urls(&args.relays)?;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let verification = quorum_router::verify::verify_file(&client, &args.file).await;
    client.shutdown().await;
    let verification = verification.map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&verification)?);
    } else {
        let mark = |ok: bool| if ok { "✔" } else { "✘" };
        println!("sha256      {}", verification.sha256);
        match &verification.release {
            Some(release) => {
                println!("{} release  {release}", mark(true));
                let show = |label: &str, value: &Option<String>| {
                    if let Some(value) = value {
                        println!("  {label:<9} {}", super::sanitize(value));
                    }
                };
                show("name", &verification.name);
                show("signed by", &verification.signer);
                show("repo", &verification.repo);
                show("commit", &verification.commit);
                show("run", &verification.run);
            }
            None => println!("{} no release lists these bytes", mark(false)),
        }
        for builder in &verification.attested_by {
            println!("{} built by {builder}", mark(true));
        }
        for problem in &verification.problems {
            println!("{} {}", mark(false), super::sanitize(problem));
        }
        for url in &verification.urls {
            println!("  mirror    {}", super::sanitize(url));
        }
        println!(
            "{}",
            if verification.ok {
                "verified: a release lists these bytes and its builders attest them \
                 (the release signer's authority is checked once quorum mandates land)"
            } else {
                "NOT verified"
            }
        );
    }
    Ok(if verification.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
