//! `quorum dvm wrapper`: a quorum member whose work is done by an ordinary NIP-90 DVM of kind K
//! on the open market; it holds a share and takes part in the agreement with that DVM's result.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use quorum_dvm::{Dvm, DvmConfig};
use quorum_proto::nostr::{Kind, PublicKey};
use quorum_wrapper::{QuorumMember, Wrapper, WrapperConfig};

use crate::cli::WrapperArgs;
use crate::shutdown::Shutdown;

pub async fn run(args: WrapperArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let keys = quorum_dvm::keyfile::load_or_create(&args.key)?;
    let inner_providers = args
        .inner_providers
        .iter()
        .map(|text| {
            PublicKey::parse(text).with_context(|| {
                format!("--inner-provider {text:?} is neither an npub nor 64 hex characters")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let inner_kind = Kind::from_u16(args.inner_kind);
    let mut config = WrapperConfig::new(inner_kind, relays.clone(), args.data.join("work"));
    config.git = quorum_runner::GitPolicy {
        allow_local: args.allow_local_repos,
        allow_private: args.allow_private_git,
        ..quorum_runner::GitPolicy::default()
    };
    config.downloads.allow_private = args.allow_private_downloads;
    config.kind = args.kind.map_or(inner_kind, Kind::from_u16);
    config.inner_providers = inner_providers;
    config.timeout = Duration::from_secs(args.timeout.max(1));
    config.concurrency = u32::try_from(args.concurrency).unwrap_or(u32::MAX);
    config.price_msats = args.price_msats;
    let served = config.kind.as_u16();
    let max_request_bytes = config.max_request_bytes;

    // Quorum jobs: the shares this wrapper holds are in DATA/shares (made by the key service).
    let share_dir = args.data.join("shares");
    let member = QuorumMember::new(relays.clone(), keys.clone(), share_dir.clone());
    let wrapper = Wrapper::connect(config, keys.clone())
        .await?
        .with_quorum(member);

    let mut dvm_config = DvmConfig::new(relays.clone(), args.data.join("dvm"), "quorum-wrapper");
    // One announcement per served kind, so one key may wrap several.
    dvm_config.identifier = format!("quorum-wrapper-{served}");
    dvm_config.about = format!(
        "Quorum CI wrapper: kind {served} jobs done by ordinary kind {} DVMs, agreed on by a quorum",
        args.inner_kind
    );
    dvm_config.concurrency = args.concurrency.max(1);
    dvm_config.max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    dvm_config.operator = super::dvm::operator(args.operator.as_deref())?;
    let dvm = Dvm::start(dvm_config, keys.clone(), wrapper).await?;

    // Answer DKG proposals and dealer deliveries naming this wrapper, as a runner does.
    let keygen = tokio::spawn({
        let (relays, keys, stop) = (relays, keys.clone(), shutdown.clone());
        async move {
            let served = quorum_consensus::keygen::serve(&relays, &keys, share_dir, stop.wait());
            if let Err(e) = served.await {
                tracing::error!("quorum key service: {e}");
            }
        }
    });
    super::announce(&format!("wrapper: {}", keys.public_key().to_hex()));
    shutdown.wait().await;
    dvm.shutdown().await;
    let _ = keygen.await;
    Ok(ExitCode::SUCCESS)
}
