//! `quorum relay`: the Nostr relay as a standalone daemon.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use quorum_relay::{AuthMode, Relay, RelayConfig};
use tokio::net::TcpListener;

use crate::cli::{AuthArg, RelayArgs, RelayOptions};
use crate::shutdown::Shutdown;

pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let (relay, listener, url) = start(&args.options, &args.data, args.listen).await?;
    super::announce(&format!("relay: {url}"));
    relay
        .serve(listener, shutdown.wait())
        .await
        .context("relay stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the relay's store and binds its listener; returns the relay, the listener and the
/// `ws://` URL clients use. Shared with `quorum up`.
pub async fn start(
    options: &RelayOptions,
    data: &Path,
    listen: SocketAddr,
) -> anyhow::Result<(Relay, TcpListener, String)> {
    let config = config(options)?;
    let relay = Relay::open(config, data)
        .await
        .with_context(|| format!("cannot open the relay store in {}", data.display()))?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another server using it?)"))?;
    let addr = listener.local_addr().context("listener has no address")?;
    Ok((relay, listener, format!("ws://{addr}")))
}

fn config(options: &RelayOptions) -> anyhow::Result<RelayConfig> {
    let mut config = RelayConfig::default();
    let limits = &mut config.limits;
    if let Some(size) = options.max_event_size {
        limits.max_event_bytes = to_usize(size, "--max-event-size")?;
    }
    if let Some(size) = options.max_message_size {
        limits.max_message_bytes = to_usize(size, "--max-message-size")?;
    }
    if let Some(n) = options.max_filter_limit {
        limits.max_filter_limit = n;
    }
    if let Some(n) = options.events_per_minute {
        limits.events_per_minute = n;
    }
    if let Some(n) = options.max_subscriptions {
        limits.max_subscriptions = n;
    }
    if let Some(n) = options.max_connections {
        limits.max_connections = n;
    }
    config.auth = match options.auth {
        AuthArg::Off => AuthMode::Off,
        AuthArg::Available => AuthMode::Available,
        AuthArg::Write => AuthMode::RequiredForWrite,
        AuthArg::Read => AuthMode::RequiredForRead,
    };
    if let Some(name) = &options.name {
        config.info.name = name.clone();
    }
    if let Some(description) = &options.description {
        config.info.description = description.clone();
    }
    if let Some(contact) = &options.contact {
        config.info.contact = Some(contact.clone());
    }
    Ok(config)
}

fn to_usize(size: bytesize::ByteSize, flag: &str) -> anyhow::Result<usize> {
    usize::try_from(size.as_u64()).with_context(|| format!("{flag} {size} is too large"))
}
