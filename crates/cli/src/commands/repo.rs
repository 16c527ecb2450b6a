//! `quorum repo announce` and `quorum repo push`: the maintainer's signed NIP-34 events that
//! watchers follow (what they say is built in `quorum_watcher::maintainer`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quorum_dvm::client::JobClient;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Keys, PublicKey};
use quorum_watcher::maintainer::{AnnouncementOptions, LocalRepository};
use serde_json::json;

use super::signer::Signer;
use crate::cli::{RepoAnnounceArgs, RepoCommand, RepoPushArgs};

pub async fn run(command: RepoCommand) -> anyhow::Result<ExitCode> {
    match command {
        RepoCommand::Announce(args) => announce(args).await,
        RepoCommand::Push(args) => push(args).await,
    }
}

async fn announce(args: RepoAnnounceArgs) -> anyhow::Result<ExitCode> {
    let repo = LocalRepository::open(&args.dir)?;
    let relays = super::relay_urls(&args.relays)?;
    let repo_relays = if args.repo_relays.is_empty() {
        relays.clone()
    } else {
        super::relay_urls(&args.repo_relays)?
    };
    let maintainers = args
        .maintainers
        .iter()
        .map(|m| {
            PublicKey::parse(m)
                .with_context(|| format!("--maintainer {m:?} is neither an npub nor 64 hex"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = AnnouncementOptions {
        identifier: args
            .identifier
            .clone()
            .unwrap_or_else(|| repo.default_identifier()),
        name: args.name.clone(),
        description: args.description.clone(),
        clone: args.clone.clone(),
        web: args.web.clone(),
        relays: repo_relays,
        maintainers,
    };
    let announcement = repo.announcement(&options)?;
    let signer = Signer::from_args(&args.signer).await?;
    let owner = signer.public_key().await?;
    let event = signer.sign(announcement.to_event_builder()).await?;
    signer.shutdown().await;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    let published = client.publish_signed(&event).await;
    client.shutdown().await;
    published.context("the announcement (30617) was not published")?;
    let coordinate = RepoCoordinate::new(owner, announcement.identifier.clone());
    if args.json {
        println!(
            "{}",
            json!({
                "event": event.id.to_hex(),
                "repository": coordinate.to_string(),
                "naddr": coordinate.to_naddr(),
                "clone": announcement.clone,
                "relays": announcement.relays.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "maintainers": std::iter::once(owner).chain(announcement.maintainers.iter().copied())
                    .map(|m| m.to_hex()).collect::<Vec<_>>(),
                "earliest_unique_commit": announcement.earliest_unique_commit,
            })
        );
    } else {
        println!("announced {coordinate}");
        println!("  naddr   {}", coordinate.to_naddr());
        for url in &announcement.clone {
            println!("  clone   {url}");
        }
        println!(
            "next: `quorum mandate create --repo {coordinate} …` for quorum jobs, then `quorum \
             repo push` to publish the refs watchers build"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn push(args: RepoPushArgs) -> anyhow::Result<ExitCode> {
    let repo = LocalRepository::open(&args.dir)?;
    let relays = super::relay_urls(&args.relays)?;
    let identifier = args
        .identifier
        .clone()
        .unwrap_or_else(|| repo.default_identifier());
    let signer = Signer::from_args(&args.signer).await?;
    let owner = signer.public_key().await?;
    if !args.no_push {
        repo.push(&args.remote, &args.refspecs)?;
    }
    let state = repo.remote_state(&args.remote, &identifier)?;
    let event = signer.sign(state.to_event_builder()).await?;
    signer.shutdown().await;
    let client = JobClient::connect(&relays, Keys::generate()).await?;
    // A state nobody announced is followed by nobody: say so, but publish it anyway (the
    // announcement may be another maintainer's, or come next).
    let announced = client
        .fetch(
            quorum_proto::nip34::announcements_of(&RepoCoordinate::new(owner, identifier.clone())),
            Duration::from_secs(5),
        )
        .await
        .map(|found| !found.is_empty())
        .unwrap_or(false);
    let published = client.publish_signed(&event).await;
    client.shutdown().await;
    published.context("the state (30618) was not published")?;
    if !announced && !args.json {
        eprintln!(
            "! no announcement of {identifier} by {} on these relays: watchers follow the \
             maintainers an owner's announcement names (`quorum repo announce`)",
            owner.to_hex()
        );
    }
    let coordinate = RepoCoordinate::new(owner, identifier);
    if args.json {
        println!(
            "{}",
            json!({
                "event": event.id.to_hex(),
                "repository": coordinate.to_string(),
                "refs": state.refs,
                "head": state.head,
                "announced": announced,
            })
        );
    } else {
        println!(
            "published the state of {coordinate} ({})",
            event.id.to_hex()
        );
        for (name, commit) in &state.refs {
            println!("  {name} → {}", &commit[..commit.len().min(12)]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
