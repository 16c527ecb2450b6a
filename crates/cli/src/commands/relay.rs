//! `quorum relay`: the Nostr relay as a standalone daemon, and the relay settings it shares
//! with `quorum up`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_proto::nostr::PublicKey;
use quorum_relay::{AuthMode, Relay, RelayConfig};
use tokio::net::TcpListener;

use crate::cli::{AuthArg, RelayArgs, RelayOptions};
use crate::shutdown::Shutdown;

pub async fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let (relay, listener, url) = start(&args.options, &args.data, args.listen, &[]).await?;
    super::announce(&format!("relay: {url}"));
    relay
        .serve(listener, shutdown.wait())
        .await
        .context("relay stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the relay's store and binds its listener; returns the relay, the listener and the
/// `ws://` URL clients use. Shared with `quorum up`, which names its own DVMs' keys in
/// `own_writers`: they join an `--allow-writer` list (and are ignored without one).
pub async fn start(
    options: &RelayOptions,
    data: &Path,
    listen: SocketAddr,
    own_writers: &[PublicKey],
) -> anyhow::Result<(Relay, TcpListener, String)> {
    let mut config = config(options)?;
    if let Some(writers) = &mut config.allowed_writers {
        writers.extend(own_writers.iter().copied());
    }
    if config.auth != AuthMode::Off && config.public_url.is_none() {
        tracing::warn!(
            "NIP-42 relay tags are checked against the Host header clients send, which a relay \
             in the middle chooses: pass --public-url with the URL clients use"
        );
    }
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
    if let Some(n) = options.max_connections_per_ip {
        limits.max_connections_per_ip = n;
    }
    if let Some(secs) = options.handshake_timeout {
        if secs == 0 {
            bail!("--handshake-timeout must be at least 1 second");
        }
        limits.handshake_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = options.read_timeout {
        limits.read_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = options.idle_timeout {
        limits.idle_timeout = Duration::from_secs(secs);
    }
    if let Some(size) = options.max_req_size {
        limits.max_req_bytes = to_usize(size, "--max-req-size")?;
    }
    if limits.max_req_bytes != 0 && limits.max_req_bytes < limits.max_event_bytes {
        bail!(
            "--max-req-size ({} bytes) is smaller than the largest event (--max-event-size, {} \
             bytes): such an event could never be read",
            limits.max_req_bytes,
            limits.max_event_bytes
        );
    }
    config.auth = match options.auth {
        AuthArg::Off => AuthMode::Off,
        AuthArg::Available => AuthMode::Available,
        AuthArg::Write => AuthMode::RequiredForWrite,
        AuthArg::Read => AuthMode::RequiredForRead,
    };
    if let Some(url) = &options.public_url {
        if !matches!(url.scheme(), "ws" | "wss") || url.host_str().is_none() {
            bail!("--public-url {url} must be a ws:// or wss:// URL with a host");
        }
        config.public_url = Some(url.clone());
    }
    if !options.allowed_writers.is_empty() {
        if !matches!(
            config.auth,
            AuthMode::RequiredForWrite | AuthMode::RequiredForRead
        ) {
            bail!(
                "--allow-writer needs --auth write (or read): only authenticated connections \
                 can be checked against the list"
            );
        }
        let keys = options
            .allowed_writers
            .iter()
            .map(|text| {
                PublicKey::parse(text).with_context(|| {
                    format!("--allow-writer {text:?} is neither an npub nor 64 hex characters")
                })
            })
            .collect::<anyhow::Result<HashSet<_>>>()?;
        config.allowed_writers = Some(keys);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        relay: RelayOptions,
    }

    fn config_of(args: &[&str]) -> anyhow::Result<RelayConfig> {
        let flags = Flags::try_parse_from(std::iter::once("quorum").chain(args.iter().copied()))
            .expect("flags parse");
        config(&flags.relay)
    }

    fn error_of(args: &[&str]) -> String {
        format!("{:#}", config_of(args).expect_err("refused"))
    }

    #[test]
    fn connection_limits_and_timeouts_reach_the_relay() {
        let config = config_of(&[
            "--max-connections-per-ip",
            "7",
            "--handshake-timeout",
            "3",
            "--read-timeout",
            "0",
            "--idle-timeout",
            "45",
            "--max-req-size",
            "8MiB",
        ])
        .expect("config");
        let limits = &config.limits;
        assert_eq!(limits.max_connections_per_ip, 7);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(limits.read_timeout, Duration::ZERO);
        assert_eq!(limits.idle_timeout, Duration::from_secs(45));
        assert_eq!(limits.max_req_bytes, 8 * 1024 * 1024);
        // Without flags: the library's defaults.
        let defaults = config_of(&[]).expect("config").limits;
        let library = quorum_relay::Limits::default();
        assert_eq!(
            defaults.max_connections_per_ip,
            library.max_connections_per_ip
        );
        assert_eq!(defaults.idle_timeout, library.idle_timeout);
        assert_eq!(defaults.max_req_bytes, library.max_req_bytes);

        assert!(error_of(&["--handshake-timeout", "0"]).contains("at least 1 second"));
        let small = error_of(&["--max-req-size", "1KiB"]);
        assert!(small.contains("smaller than the largest event"), "{small}");
        let unlimited = config_of(&["--max-req-size", "0"]).expect("0 = unlimited");
        assert_eq!(unlimited.limits.max_req_bytes, 0);
    }

    #[test]
    fn public_url_must_be_a_websocket_url() {
        let config = config_of(&["--auth", "write", "--public-url", "wss://relay.example.org"])
            .expect("config");
        assert_eq!(
            config.public_url.as_ref().and_then(|u| u.host_str()),
            Some("relay.example.org")
        );
        let err = error_of(&["--public-url", "https://relay.example.org"]);
        assert!(err.contains("must be a ws:// or wss:// URL"), "{err}");
    }

    #[test]
    fn allowed_writers_need_write_auth_and_valid_keys() {
        let key = quorum_proto::nostr::Keys::generate().public_key();
        let npub = quorum_proto::nostr::nips::nip19::ToBech32::to_bech32(&key).expect("npub");
        let config = config_of(&["--auth", "write", "--allow-writer", &npub]).expect("config");
        assert_eq!(config.allowed_writers, Some(HashSet::from([key])));
        let config =
            config_of(&["--auth", "read", "--allow-writer", &key.to_hex()]).expect("config");
        assert_eq!(config.allowed_writers, Some(HashSet::from([key])));
        assert_eq!(config_of(&[]).expect("config").allowed_writers, None);

        for auth in ["off", "available"] {
            let err = error_of(&["--auth", auth, "--allow-writer", &npub]);
            assert!(err.contains("--allow-writer needs --auth write"), "{err}");
        }
        let err = error_of(&["--auth", "write", "--allow-writer", "npub1nope"]);
        assert!(err.contains("\"npub1nope\" is neither an npub"), "{err}");
    }
}
