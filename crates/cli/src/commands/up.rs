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
    /// Public keys (hex) of the runner DVMs.
    runners: Vec<String>,
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

    // The servers stop after the DVMs, so that nothing a DVM still says is lost.
    let (stop_servers, servers_stopped) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let relay_task = tokio::spawn(relay.serve(relay_listener, stopped(servers_stopped.clone())));
    let blossom_task = tokio::spawn(blossom.serve(blossom_listener, stopped(servers_stopped)));

    let runners = start_runners(&args, &relay_url, &blossom_url).await?;
    let endpoints = Endpoints {
        relay: &relay_url,
        blossom: blossom_url.as_str().trim_end_matches('/'),
        runners: runners
            .iter()
            .map(|dvm| dvm.public_key().to_hex())
            .collect(),
    };
    write_atomically(&endpoints_file, &serde_json::to_vec_pretty(&endpoints)?)?;
    super::announce(&format!("relay: {}", endpoints.relay));
    super::announce(&format!("blossom: {}", endpoints.blossom));
    for runner in &endpoints.runners {
        super::announce(&format!("runner: {runner}"));
    }
    super::announce(&format!("endpoints: {}", endpoints_file.display()));

    shutdown.wait().await;
    for runner in runners {
        runner.shutdown().await;
    }
    let _ = stop_servers.send(true);
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

/// Starts the runner DVMs of the embedded fleet, each with its own key and data dir. Without
/// bubblewrap they are not started (unless asked to run unsandboxed), and the operator is told.
async fn start_runners(
    args: &UpArgs,
    relay_url: &str,
    blossom_url: &url::Url,
) -> anyhow::Result<Vec<quorum_dvm::Dvm>> {
    if args.runners == 0 {
        return Ok(Vec::new());
    }
    let sandbox = match super::dvm::sandbox(false) {
        Ok(sandbox) => sandbox,
        Err(_) if args.unsandboxed_runners => super::dvm::sandbox(true)?,
        Err(err) => {
            tracing::warn!(
                "no runner DVMs started: {err:#}. Install bubblewrap, or pass \
                 --unsandboxed-runners for development"
            );
            return Ok(Vec::new());
        }
    };
    let relays = super::relay_urls(&[relay_url.to_string()])?;
    let mut dvms = Vec::with_capacity(args.runners);
    for n in 1..=args.runners {
        let data = args.data.join("runners").join(n.to_string());
        let keys = quorum_dvm::keyfile::load_or_create(&data.join("runner.nsec"))?;
        let setup = super::dvm::RunnerSetup {
            relays: relays.clone(),
            blossom: vec![blossom_url.clone()],
            data,
            concurrency: 2,
            max_timeout: std::time::Duration::from_secs(3600),
            allow_network: true,
            // The embedded network is one person's machine: local repositories are theirs.
            allow_local_repos: true,
            price_msats: 0,
        };
        dvms.push(super::dvm::start_runner(setup, keys, sandbox.clone()).await?);
    }
    Ok(dvms)
}

/// Readers poll for the file: they must never see it half written.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
