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
    let sandbox: Arc<dyn Sandbox> = if args.unsandboxed {
        Arc::new(quorum_sandbox::Unsandboxed::new())
    } else {
        Arc::new(quorum_sandbox::Bubblewrap::detect().context(
            "bubblewrap is needed to run build steps safely (apt-get install bubblewrap); \
             --unsandboxed exists for development only",
        )?)
    };
    let mut config = RunnerConfig::new(args.data.join("work"), args.blossom.clone());
    config.git = GitPolicy {
        allow_local: args.allow_local_repos,
        timeout: Some(Duration::from_secs(600)),
    };
    config.max_timeout = Duration::from_secs(args.max_timeout);
    config.allow_network = !args.no_network;
    config.concurrency = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
    config.price_msats = args.price_msats;
    let max_request_bytes = config.max_request_bytes;
    let blossom = quorum_blossom::client::BlossomClient::new(keys.clone());
    let runner = Runner::new(config, sandbox, blossom);

    let mut dvm_config = DvmConfig::new(relays, args.data.join("dvm"), "quorum-runner");
    dvm_config.about = "Quorum CI runner: builds and tests git commits in a sandbox".into();
    dvm_config.concurrency = args.concurrency.max(1);
    dvm_config.max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let dvm = Dvm::start(dvm_config, keys.clone(), runner).await?;
    super::announce(&format!("runner: {}", keys.public_key().to_hex()));
    shutdown.wait().await;
    dvm.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
