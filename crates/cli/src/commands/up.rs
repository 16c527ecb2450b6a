//! `quorum up`: the embedded default network in one process, on loopback, data in one place.

use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::embedded::{Embedded, EmbeddedSpec};
use crate::cli::UpArgs;
use crate::shutdown::Shutdown;

/// `DATA/endpoints.json`: how scripts and other processes find the running network.
#[derive(Debug, Serialize)]
struct Endpoints<'a> {
    relay: &'a str,
    blossom: &'a str,
    /// Public keys (hex) of the runner DVMs.
    runners: Vec<String>,
    /// Public key (hex) of the router DVM, if runners were started.
    router: Option<String>,
    /// Public key (hex) of the local operator (DATA/operator.nsec) who runs every DVM here.
    operator: String,
    /// The fake-Lightning Cashu mint's URL (`--mint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    mint: Option<String>,
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

    let network = Embedded::start(EmbeddedSpec {
        data: args.data.clone(),
        relay_listen: args.relay_listen,
        blossom_listen: args.blossom_listen,
        relay: &args.relay,
        blossom: &args.blossom,
        runners: args.runners,
        unsandboxed_runners: args.unsandboxed_runners,
    })
    .await?;
    // In memory: its ecash is gone when `quorum up` stops, as the mint is.
    let mint = if args.mint {
        Some(
            quorum_pay::fake_mint::FakeMint::start()
                .await
                .context("cannot start the mint")?,
        )
    } else {
        None
    };
    let endpoints = Endpoints {
        relay: &network.relay_url,
        blossom: network.blossom_url.as_str().trim_end_matches('/'),
        runners: network
            .runners
            .iter()
            .map(|dvm| dvm.public_key().to_hex())
            .collect(),
        router: network.router.as_ref().map(|dvm| dvm.public_key().to_hex()),
        operator: network.operator.to_hex(),
        mint: mint.as_ref().map(|m| m.url.clone()),
    };
    write_atomically(&endpoints_file, &serde_json::to_vec_pretty(&endpoints)?)?;
    super::announce(&format!("relay: {}", endpoints.relay));
    super::announce(&format!("blossom: {}", endpoints.blossom));
    for runner in &endpoints.runners {
        super::announce(&format!("runner: {runner}"));
    }
    if let Some(router) = &endpoints.router {
        super::announce(&format!("router: {router}"));
    }
    // Every DVM here is this machine's: one operator, whose key is DATA/operator.nsec.
    super::announce(&format!("operator: {}", endpoints.operator));
    if let Some(mint) = &endpoints.mint {
        super::announce(&format!("mint: {mint}"));
    }
    super::announce(&format!("endpoints: {}", endpoints_file.display()));

    // The dashboard serves until the same signal; if it cannot start, the network still stops
    // cleanly before the error is told.
    let ui = match args.ui {
        Some(listen) => {
            let relays = super::relay_urls(std::slice::from_ref(&network.relay_url))?;
            let blossom = vec![network.blossom_url.clone()];
            super::ui::serve(relays, blossom, listen, shutdown).await
        }
        None => {
            shutdown.wait().await;
            Ok(())
        }
    };
    drop(mint);
    let stopped = network.shutdown().await;
    let _ = std::fs::remove_file(&endpoints_file);
    stopped?;
    ui?;
    Ok(ExitCode::SUCCESS)
}

/// Readers poll for the file: they must never see it half written.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
