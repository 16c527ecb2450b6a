//! `quorum dvm …`: running DVM roles as daemons.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quorum_dvm::{Dvm, DvmConfig};
use quorum_runner::{GitPolicy, Runner, RunnerConfig};
use quorum_sandbox::Sandbox;

use crate::cli::{DvmCommand, RunnerArgs};
use crate::shutdown::Shutdown;

pub async fn run(command: DvmCommand) -> anyhow::Result<ExitCode> {
    match command {
        DvmCommand::Runner(args) => runner(args).await,
    }
}

async fn runner(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    let sandbox = sandbox(args.unsandboxed)?;
    let setup = RunnerSetup {
        relays,
        blossom: args.blossom.clone(),
        data: args.data.clone(),
        concurrency: args.concurrency,
        max_timeout: Duration::from_secs(args.max_timeout),
        allow_network: !args.no_network,
        allow_local_repos: args.allow_local_repos,
        price_msats: args.price_msats,
    };
    let dvm = start_runner(setup, keys.clone(), sandbox).await?;
    super::announce(&format!("runner: {}", keys.public_key().to_hex()));
    shutdown.wait().await;
    dvm.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The sandbox backend: bubblewrap, or the development-only unsandboxed one when asked.
pub fn sandbox(unsandboxed: bool) -> anyhow::Result<Arc<dyn Sandbox>> {
    if unsandboxed {
        return Ok(Arc::new(quorum_sandbox::Unsandboxed::new()));
    }
    Ok(Arc::new(quorum_sandbox::Bubblewrap::detect().context(
        "bubblewrap is needed to run build steps safely (apt-get install bubblewrap); \
         --unsandboxed exists for development only",
    )?))
}

/// What a runner DVM needs besides its keys and sandbox.
pub struct RunnerSetup {
    pub relays: Vec<quorum_proto::nostr::RelayUrl>,
    pub blossom: Vec<url::Url>,
    pub data: std::path::PathBuf,
    pub concurrency: usize,
    pub max_timeout: Duration,
    pub allow_network: bool,
    pub allow_local_repos: bool,
    pub price_msats: u64,
}

/// Starts a runner DVM. Shared with `quorum up`.
pub async fn start_runner(
    setup: RunnerSetup,
    keys: quorum_proto::nostr::Keys,
    sandbox: Arc<dyn Sandbox>,
) -> anyhow::Result<Dvm> {
    let mut config = RunnerConfig::new(setup.data.join("work"), setup.blossom);
    config.git = GitPolicy {
        allow_local: setup.allow_local_repos,
        timeout: Some(Duration::from_secs(600)),
    };
    config.max_timeout = setup.max_timeout;
    config.allow_network = setup.allow_network;
    config.concurrency = u32::try_from(setup.concurrency).unwrap_or(u32::MAX);
    config.price_msats = setup.price_msats;
    let max_request_bytes = config.max_request_bytes;
    let blossom = quorum_blossom::client::BlossomClient::new(keys.clone());
    let runner = Runner::new(config, sandbox, blossom);

    let mut dvm_config = DvmConfig::new(setup.relays, setup.data.join("dvm"), "quorum-runner");
    dvm_config.about = "Quorum CI runner: builds and tests git commits in a sandbox".into();
    dvm_config.concurrency = setup.concurrency.max(1);
    dvm_config.max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    Ok(Dvm::start(dvm_config, keys, runner).await?)
}
