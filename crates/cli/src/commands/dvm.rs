//! `quorum dvm …`: running DVM roles as daemons.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use quorum_dvm::{Dvm, DvmConfig};
use quorum_runner::{GitPolicy, Runner, RunnerConfig, doctor};
use quorum_sandbox::Sandbox;

use crate::cli::{DvmCommand, RouterArgs, RunnerArgs, WatcherArgs};
use crate::shutdown::Shutdown;

pub async fn run(command: DvmCommand) -> anyhow::Result<ExitCode> {
    match command {
        DvmCommand::Runner(args) => runner(args).await,
        DvmCommand::Router(args) => router(args).await,
        DvmCommand::Watcher(args) => watcher(args).await,
        DvmCommand::Wrapper(args) => super::wrapper::run(args).await,
        DvmCommand::Recorder(args) => super::market::recorder(args).await,
    }
}

async fn watcher(args: WatcherArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    let router = quorum_proto::nostr::PublicKey::parse(&args.router).with_context(|| {
        format!(
            "--router {:?} is neither an npub nor 64 hex characters",
            args.router
        )
    })?;
    let source = match (&args.owner, &args.identifier) {
        (Some(owner), Some(identifier)) => quorum_watcher::Source::Nip34 {
            owner: quorum_proto::nostr::PublicKey::parse(owner).with_context(|| {
                format!("--owner {owner:?} is neither an npub nor 64 hex characters")
            })?,
            identifier: identifier.clone(),
        },
        _ => quorum_watcher::Source::Poll,
    };
    let share_dir = args.data.join("shares");
    let mandate = args
        .mandate
        .as_deref()
        .map(|text| {
            quorum_proto::nostr::EventId::parse(text).with_context(|| {
                format!("--mandate {text:?} is neither a note/nevent nor 64 hex characters")
            })
        })
        .transpose()?;
    // Always ready to act in a quorum: under --mandate, or (following NIP-34 state) under the
    // watcher mandate of the repository that lists this watcher, found at each poll.
    let quorum = Some(quorum_watcher::WatcherQuorum {
        mandate,
        share_dir: share_dir.clone(),
        member: Default::default(),
        relays: relays.clone(),
        keys: keys.clone(),
    });
    let operator = operator(args.operator.as_deref())?;
    let client = quorum_dvm::client::JobClient::connect(&relays, keys.clone()).await?;
    // A watcher is no job handler, but it announces itself as the DVMs do, so that it can be
    // found and its operator confirmed (a watcher quorum's members are checked like any).
    if let Err(err) = client
        .publish_event(watcher_announcement(operator).to_event_builder())
        .await
    {
        tracing::warn!("cannot publish the NIP-89 announcement: {err}");
    }
    let config = quorum_watcher::WatchConfig {
        repo: args.repo.clone(),
        source,
        router,
        data: args.data.clone(),
        git: GitPolicy {
            allow_local: args.allow_local_repos,
            allow_private: args.allow_private_git,
            timeout: Some(Duration::from_secs(600)),
            ..GitPolicy::default()
        },
        quorum,
    };
    let watcher = quorum_watcher::Watcher::new(config, client)?;
    // Quorum keys: answer DKG proposals and dealer deliveries naming this watcher; shares are
    // kept in DATA/shares (mode 0600).
    let keygen = tokio::spawn({
        let (keys, stop) = (keys.clone(), shutdown.clone());
        async move {
            let served = quorum_consensus::keygen::serve(&relays, &keys, share_dir, stop.wait());
            if let Err(e) = served.await {
                tracing::error!("quorum key service: {e}");
            }
        }
    });
    super::announce(&format!("watcher: {}", keys.public_key().to_hex()));
    watcher
        .run(Duration::from_secs(args.interval.max(1)), shutdown.wait())
        .await;
    let _ = keygen.await;
    Ok(ExitCode::SUCCESS)
}

/// `--operator`: the key of whoever runs this DVM, npub or hex.
pub(crate) fn operator(
    text: Option<&str>,
) -> anyhow::Result<Option<quorum_proto::nostr::PublicKey>> {
    text.map(|text| super::operator::parse_key("--operator", text))
        .transpose()
}

/// The watcher's NIP-89 announcement: the watch-source kind (5701) its role has in the kind
/// table, an offer of no price that runs nothing itself, and its operator.
fn watcher_announcement(
    operator: Option<quorum_proto::nostr::PublicKey>,
) -> quorum_proto::nip89::Announcement {
    use quorum_proto::nip89::{Announcement, Capabilities, JobLimits, Offer, Price};
    Announcement {
        identifier: "quorum-watcher".into(),
        name: "quorum-watcher".into(),
        about: "Quorum CI git watcher: asks a router to run the pipeline of each new commit".into(),
        kinds: vec![quorum_proto::kinds::JobKind::WatchSource.request_kind()],
        offer: Offer {
            capabilities: Capabilities {
                arch: std::env::consts::ARCH.into(),
                os: std::env::consts::OS.into(),
                sandbox: "none".into(),
                toolchains: vec!["git".into()],
                network: true,
                images: false,
                require_image: false,
            },
            price: Price::default(),
            limits: JobLimits {
                concurrency: 1,
                max_timeout_secs: 600,
                max_request_bytes: 0,
            },
        },
        operator,
    }
}

async fn router(args: RouterArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    let runners = args
        .runners
        .iter()
        .map(|text| {
            quorum_proto::nostr::PublicKey::parse(text).with_context(|| {
                format!("--runner {text:?} is neither an npub nor 64 hex characters")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let setup = RouterSetup {
        relays,
        data: args.data.clone(),
        runners,
        max_run: Duration::from_secs(args.max_run),
        allow_local_repos: args.allow_local_repos,
        operator: operator(args.operator.as_deref())?,
        allow_private_git: args.allow_private_git,
        select: args.policy.as_deref().map(read_policy).transpose()?,
        mint: args.mint.clone(),
        fee_msats: args.fee_msats,
    };
    let dvm = start_router(setup, keys.clone()).await?;
    super::announce(&format!("router: {}", keys.public_key().to_hex()));
    shutdown.wait().await;
    dvm.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// A selection policy file, linted: every problem is reported with its position.
pub(crate) fn read_policy(
    path: &std::path::Path,
) -> anyhow::Result<quorum_pipeline::select::SelectPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    quorum_pipeline::parse_policy(&path.display().to_string(), &text)
        .map_err(|d| anyhow::anyhow!("the policy file does not lint:\n{d}"))
}

/// What a router DVM needs besides its keys.
pub struct RouterSetup {
    pub relays: Vec<quorum_proto::nostr::RelayUrl>,
    pub data: std::path::PathBuf,
    pub runners: Vec<quorum_proto::nostr::PublicKey>,
    pub max_run: Duration,
    pub allow_local_repos: bool,
    /// Who runs the router, named in its announcement.
    pub operator: Option<quorum_proto::nostr::PublicKey>,
    pub allow_private_git: bool,
    /// The selection policy for runs that leave runners open (`--policy FILE`).
    pub select: Option<quorum_pipeline::select::SelectPolicy>,
    /// The mint a paid router takes tokens of (`--mint`); `None`: runs are free and hire
    /// free runners only.
    pub mint: Option<String>,
    /// The fee per run, in millisats (`--fee-msats`).
    pub fee_msats: u64,
}

/// Starts a router DVM; its job client signs with the same key, so that it recognises its own
/// sub-requests after a restart. Shared with the embedded network.
pub async fn start_router(
    setup: RouterSetup,
    keys: quorum_proto::nostr::Keys,
) -> anyhow::Result<quorum_router::dvm::RunningRouter> {
    let client = quorum_dvm::client::JobClient::connect(&setup.relays, keys.clone()).await?;
    // A paid router: requesters' tokens are redeemed into its wallet, and the runs pay their
    // runners from it with the router's key (refunds and change come back to it).
    let mut price = quorum_proto::nip89::Price::default();
    let mut payments: Option<Arc<dyn quorum_dvm::handler::PaymentGate>> = None;
    let mut payer: Option<Arc<dyn quorum_dvm::handler::Payer>> = None;
    if let Some(mint) = &setup.mint {
        let wallet = quorum_pay::PayWallet::open_in(&setup.data.join("wallet"), mint).await?;
        price.msats_per_job = setup.fee_msats;
        price.mints = vec![wallet.mint_url().to_string()];
        payments = Some(Arc::new(quorum_pay::Collector::per_job(
            wallet.clone(),
            setup.fee_msats,
        )));
        payer = Some(Arc::new(quorum_pay::WalletPayer {
            wallet,
            keys: keys.clone(),
        }));
    }
    let router = quorum_router::dvm::Router::new(
        quorum_router::dvm::RouterConfig {
            work_root: setup.data.join("work"),
            git: GitPolicy {
                allow_local: setup.allow_local_repos,
                allow_private: setup.allow_private_git,
                timeout: Some(Duration::from_secs(600)),
                ..GitPolicy::default()
            },
            runners: setup.runners,
            select: setup.select,
            max_run: setup.max_run,
            bundle_store: Some(quorum_blossom::client::BlossomClient::new(keys.clone())),
            price,
            payer,
        },
        Arc::new(client),
    );
    let mut config = DvmConfig::new(setup.relays, setup.data.join("dvm"), "quorum-router");
    config.about = "Quorum CI router: runs pipelines on runner DVMs".into();
    config.concurrency = 4;
    config.operator = setup.operator;
    config.payments = payments;
    Ok(router.start(config, keys).await?)
}

async fn runner(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    // The doctor's machine checks (`quorum doctor`): every problem is logged, and a failure of
    // something this runner needs refuses the start. A sandboxed runner then uses the sandbox
    // the bubblewrap check ran its trial step in.
    let needs = doctor::Needs {
        sandbox: !args.unsandboxed,
        network: args.allow_network,
    };
    let data = args.data.clone();
    let machine = tokio::task::spawn_blocking(move || doctor::check_machine(&data, needs))
        .await
        .context("the machine checks crashed")?;
    super::doctor::log(&machine.checks);
    if let Some(refusal) = super::doctor::refusal(&machine.checks) {
        let bwrap_failed = machine
            .checks
            .iter()
            .any(|c| c.name == doctor::BUBBLEWRAP && c.status == doctor::Status::Fail);
        if bwrap_failed {
            anyhow::bail!("{refusal}; --unsandboxed exists for development only");
        }
        anyhow::bail!("{refusal}");
    }
    // Relays and Blossom servers may well come up after the runner: their reachability and
    // this clock against the relays' are only logged, from the background.
    tokio::spawn({
        let relays = args.relays.clone();
        let blossom: Vec<String> = args.blossom.iter().map(|u| u.to_string()).collect();
        async move {
            let mut checks =
                doctor::check_endpoints(&relays, &blossom, doctor::ENDPOINT_TIMEOUT).await;
            for check in &mut checks {
                if check.status == doctor::Status::Fail {
                    check.status = doctor::Status::Warn;
                }
            }
            super::doctor::log(&checks);
        }
    });
    let sandbox: Arc<dyn Sandbox> = if args.unsandboxed {
        sandbox(true)?
    } else {
        let bwrap = machine
            .bubblewrap
            .context("the bubblewrap check passed without keeping its sandbox")?
            .with_network_allowed(args.allow_network_to.clone());
        if args.allow_network && !bwrap.network_available() {
            anyhow::bail!(
                "--allow-network: this machine cannot give steps a network of their own ({})",
                bwrap.describe().notes.join("; ")
            );
        }
        Arc::new(bwrap)
    };
    // The work dirs on a size-capped file system, so that no step can fill the data dir's disk.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
    let _volume = if args.work_disk_mib > 0 && !args.unsandboxed && root {
        Some(
            quorum_sandbox::volume::WorkVolume::mount(
                args.data.join("work"),
                args.work_disk_mib << 20,
            )
            .context("cannot set up the size-capped work dir (--work-disk-mib 0 turns it off)")?,
        )
    } else {
        if args.work_disk_mib > 0 {
            tracing::warn!("work dir not size-capped: that needs root (loop mount)");
        }
        None
    };
    let setup = RunnerSetup {
        relays: relays.clone(),
        blossom: args.blossom.clone(),
        data: args.data.clone(),
        concurrency: args.concurrency,
        max_timeout: Duration::from_secs(args.max_timeout),
        allow_network: args.allow_network,
        allow_local_repos: args.allow_local_repos,
        allow_private_git: args.allow_private_git,
        price_msats: args.price_msats,
        price_msats_per_second: args.price_msats_per_second,
        mint: args.mint.clone(),
        operator: operator(args.operator.as_deref())?,
        images: args.images.clone(),
    };
    let dvm = start_runner(setup, keys.clone(), sandbox).await?;
    // Quorum keys: answer DKG proposals and dealer deliveries naming this runner; shares are
    // kept in DATA/shares (mode 0600).
    let keygen = tokio::spawn({
        let (keys, stop) = (keys.clone(), shutdown.clone());
        let share_dir = args.data.join("shares");
        async move {
            let served = quorum_consensus::keygen::serve(&relays, &keys, share_dir, stop.wait());
            if let Err(e) = served.await {
                tracing::error!("quorum key service: {e}");
            }
        }
    });
    super::announce(&format!("runner: {}", keys.public_key().to_hex()));
    shutdown.wait().await;
    dvm.shutdown().await;
    let _ = keygen.await;
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
    pub allow_private_git: bool,
    pub price_msats: u64,
    /// Price per second a job runs (prepaid for `max_timeout`, change returned).
    pub price_msats_per_second: u64,
    /// The mint payments are taken at (a priced runner collects only with one).
    pub mint: Option<String>,
    /// Who runs the runner, named in its announcement.
    pub operator: Option<quorum_proto::nostr::PublicKey>,
    /// Build images: cache, cap, whether they are required.
    pub images: crate::cli::ImageCacheArgs,
}

/// Starts a runner DVM. Shared with `quorum up`.
pub async fn start_runner(
    setup: RunnerSetup,
    keys: quorum_proto::nostr::Keys,
    sandbox: Arc<dyn Sandbox>,
) -> anyhow::Result<Dvm> {
    let mut config = RunnerConfig::new(setup.data.join("work"), setup.blossom.clone());
    config.git = GitPolicy {
        allow_local: setup.allow_local_repos,
        allow_private: setup.allow_private_git,
        timeout: Some(Duration::from_secs(600)),
        ..GitPolicy::default()
    };
    config.max_timeout = setup.max_timeout;
    config.allow_network = setup.allow_network;
    config.concurrency = u32::try_from(setup.concurrency).unwrap_or(u32::MAX);
    config.price_msats = setup.price_msats;
    config.msats_per_second = setup.price_msats_per_second;
    config.mints = setup
        .mint
        .iter()
        .map(|m| m.trim_end_matches('/').to_string())
        .collect();
    let priced = setup.price_msats > 0 || setup.price_msats_per_second > 0;
    let payments: Option<Arc<dyn quorum_dvm::handler::PaymentGate>> = match &setup.mint {
        Some(mint) if priced => Some(Arc::new(quorum_pay::Collector {
            wallet: quorum_pay::PayWallet::open_in(&setup.data.join("wallet"), mint).await?,
            price_msats: setup.price_msats,
            msats_per_second: setup.price_msats_per_second,
            max_secs: setup.max_timeout.as_secs(),
        })),
        None if priced => {
            tracing::warn!("a price without --mint is announced but not collected");
            None
        }
        _ => None,
    };
    let cache_dir = (setup.images.image_cache.clone()).unwrap_or_else(|| setup.data.join("images"));
    let fetcher = quorum_oci::Fetcher::new(
        setup.blossom.clone(),
        setup.images.insecure_registries.clone(),
    );
    config.images = Some(Arc::new(
        quorum_oci::ImageCache::open(&cache_dir, setup.images.image_cache_mib << 20, fetcher)
            .with_context(|| format!("cannot open the image cache {}", cache_dir.display()))?,
    ));
    config.require_image = setup.images.require_image;
    let max_request_bytes = config.max_request_bytes;
    let blossom = quorum_blossom::client::BlossomClient::new(keys.clone());
    // Quorum jobs: the shares this runner holds are in DATA/shares (made by the key service).
    let member = quorum_consensus::job::QuorumMember::new(
        setup.relays.clone(),
        keys.clone(),
        setup.data.join("shares"),
    );
    let runner = Runner::new(config, sandbox, blossom).with_quorum(member);

    let mut dvm_config = DvmConfig::new(setup.relays, setup.data.join("dvm"), "quorum-runner");
    dvm_config.about = "Quorum CI runner: builds and tests git commits in a sandbox".into();
    dvm_config.concurrency = setup.concurrency.max(1);
    dvm_config.max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    dvm_config.operator = setup.operator;
    dvm_config.payments = payments;
    Ok(Dvm::start(dvm_config, keys, runner).await?)
}
