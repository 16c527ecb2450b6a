//! The embedded default network: relay, Blossom server and runner DVMs in this process, on
//! loopback, with their data under one directory. `quorum up` serves it until stopped;
//! `quorum run` and `quorum demo` use it for one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use quorum_dvm::Dvm;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{BlossomOptions, RelayOptions};

/// What to start.
pub struct EmbeddedSpec<'a> {
    pub data: PathBuf,
    pub relay_listen: SocketAddr,
    pub blossom_listen: SocketAddr,
    pub relay: &'a RelayOptions,
    pub blossom: &'a BlossomOptions,
    pub runners: usize,
    pub unsandboxed_runners: bool,
}

/// A running embedded network.
pub struct Embedded {
    pub relay_url: String,
    pub blossom_url: url::Url,
    pub runners: Vec<Dvm>,
    /// The router DVM (kind 5700), using the runners above.
    pub router: Option<Dvm>,
    stop_servers: watch::Sender<bool>,
    relay_task: JoinHandle<Result<(), quorum_relay::RelayError>>,
    blossom_task: JoinHandle<Result<(), quorum_blossom::BlossomError>>,
}

impl Embedded {
    pub async fn start(spec: EmbeddedSpec<'_>) -> anyhow::Result<Embedded> {
        std::fs::create_dir_all(&spec.data)
            .with_context(|| format!("cannot create data directory {}", spec.data.display()))?;
        let (relay, relay_listener, relay_url) =
            super::relay::start(spec.relay, &spec.data.join("relay"), spec.relay_listen).await?;
        let (blossom, blossom_listener, blossom_url) = super::blossom::start(
            spec.blossom,
            &spec.data.join("blossom"),
            spec.blossom_listen,
            None,
        )
        .await?;
        // The servers stop after the DVMs, so that nothing a DVM still says is lost.
        let (stop_servers, servers_stopped) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let relay_task =
            tokio::spawn(relay.serve(relay_listener, stopped(servers_stopped.clone())));
        let blossom_task = tokio::spawn(blossom.serve(blossom_listener, stopped(servers_stopped)));
        let runners = start_runners(
            &spec.data,
            spec.runners,
            spec.unsandboxed_runners,
            &relay_url,
            &blossom_url,
        )
        .await?;
        let router = if runners.is_empty() {
            None
        } else {
            let data = spec.data.join("router");
            let keys = quorum_dvm::keyfile::load_or_create(&data.join("router.nsec"))?;
            let setup = super::dvm::RouterSetup {
                relays: super::relay_urls(std::slice::from_ref(&relay_url))?,
                data,
                runners: runners.iter().map(Dvm::public_key).collect(),
                max_run: std::time::Duration::from_secs(6 * 3600),
                allow_local_repos: true,
            };
            Some(super::dvm::start_router(setup, keys).await?)
        };
        Ok(Embedded {
            relay_url,
            blossom_url,
            runners,
            router,
            stop_servers,
            relay_task,
            blossom_task,
        })
    }

    /// Stops the DVMs, then the servers, and reports a server that failed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(router) = self.router {
            router.shutdown().await;
        }
        for runner in self.runners {
            runner.shutdown().await;
        }
        let _ = self.stop_servers.send(true);
        let (relay_result, blossom_result) = tokio::join!(self.relay_task, self.blossom_task);
        relay_result
            .context("relay task panicked")?
            .context("relay stopped with an error")?;
        blossom_result
            .context("Blossom task panicked")?
            .context("Blossom server stopped with an error")?;
        Ok(())
    }
}

/// Starts the runner DVMs, each with its own key and data dir. Without bubblewrap they are not
/// started (unless asked to run unsandboxed), and the operator is told why.
async fn start_runners(
    data: &Path,
    count: usize,
    unsandboxed: bool,
    relay_url: &str,
    blossom_url: &url::Url,
) -> anyhow::Result<Vec<Dvm>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let sandbox = match super::dvm::sandbox(false) {
        Ok(sandbox) => sandbox,
        Err(_) if unsandboxed => super::dvm::sandbox(true)?,
        Err(err) => {
            tracing::warn!(
                "no runner DVMs started: {err:#}. Install bubblewrap, or pass \
                 --unsandboxed-runners for development"
            );
            return Ok(Vec::new());
        }
    };
    let relays = super::relay_urls(&[relay_url.to_string()])?;
    let mut dvms = Vec::with_capacity(count);
    for n in 1..=count {
        let data = data.join("runners").join(n.to_string());
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
