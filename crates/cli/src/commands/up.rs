//! `quorum up`: the embedded default network in one process, on loopback, data in one place.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::cli::UpArgs;
use crate::shutdown::Shutdown;

/// `DATA/endpoints.json`: how scripts and other processes find the running network.
#[derive(Debug, Serialize)]
struct Endpoints<'a> {
    relay: &'a str,
    blossom: &'a str,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create data directory {}", args.data.display()))?;
    let endpoints_file = args.data.join("endpoints.json");
    // A file left by an earlier run would point readers at servers that are gone.
    match std::fs::remove_file(&endpoints_file) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("cannot remove {}", endpoints_file.display()));
        }
    }

    let (relay, relay_listener, relay_url) =
        super::relay::start(&args.relay, &args.data.join("relay"), args.relay_listen).await?;
    let (blossom, blossom_listener, blossom_url) = super::blossom::start(
        &args.blossom,
        &args.data.join("blossom"),
        args.blossom_listen,
        None,
    )
    .await?;

    let relay_task = tokio::spawn(relay.serve(relay_listener, shutdown.clone().wait()));
    let blossom_task = tokio::spawn(blossom.serve(blossom_listener, shutdown.clone().wait()));

    let endpoints = Endpoints {
        relay: &relay_url,
        blossom: blossom_url.as_str().trim_end_matches('/'),
    };
    write_atomically(&endpoints_file, &serde_json::to_vec_pretty(&endpoints)?)?;
    super::announce(&format!("relay: {}", endpoints.relay));
    super::announce(&format!("blossom: {}", endpoints.blossom));
    super::announce(&format!("endpoints: {}", endpoints_file.display()));

    let (relay_result, blossom_result) = tokio::join!(relay_task, blossom_task);
    let _ = std::fs::remove_file(&endpoints_file);
    relay_result
        .context("relay task panicked")?
        .context("relay stopped with an error")?;
    blossom_result
        .context("Blossom task panicked")?
        .context("Blossom server stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// Readers poll for the file: they must never see it half written.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
