//! The command-line grammar (clap derive). Every command and flag documents itself in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Quorum CI: CI/CD without a chokepoint, on Nostr DVMs, Blossom and FROST quorums.
#[derive(Debug, Parser)]
#[command(name = "quorum", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags that every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr: -v for debug, -vv for trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only print errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// When to use colours; `auto` honours NO_COLOR and whether stderr is a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Nostr relay (NIP-01, 09, 11, 40, 42, 45) with LMDB storage.
    Relay(RelayArgs),
    /// Run a Blossom server (BUD-01/02/04/06/11/12) with a content-addressed store on disk.
    Blossom(BlossomArgs),
    /// Run the embedded default network on loopback: a relay and a Blossom server, data in one
    /// directory; writes DIR/endpoints.json once everything is ready.
    Up(UpArgs),
}

/// Options of `quorum relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub listen: SocketAddr,

    /// Data directory (the LMDB store lives in DATA/lmdb).
    #[arg(long)]
    pub data: PathBuf,

    #[command(flatten)]
    pub options: RelayOptions,
}

/// Relay settings shared by `quorum relay` and `quorum up`.
#[derive(Debug, Args)]
pub struct RelayOptions {
    /// Largest accepted event (serialised JSON).
    #[arg(long, value_name = "SIZE")]
    pub max_event_size: Option<ByteSize>,

    /// Largest accepted client message (a REQ with many filters, an EVENT).
    #[arg(long, value_name = "SIZE")]
    pub max_message_size: Option<ByteSize>,

    /// Most events a single REQ filter may return.
    #[arg(long, value_name = "N")]
    pub max_filter_limit: Option<usize>,

    /// Most events one connection may publish per minute (0 = unlimited).
    #[arg(long, value_name = "N")]
    pub events_per_minute: Option<u32>,

    /// Most open subscriptions per connection.
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Most simultaneous connections.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// NIP-42 authentication.
    #[arg(long, value_enum, default_value_t = AuthArg::Off)]
    pub auth: AuthArg,

    /// Relay name in the NIP-11 document.
    #[arg(long)]
    pub name: Option<String>,

    /// Relay description in the NIP-11 document.
    #[arg(long)]
    pub description: Option<String>,

    /// Operator contact (NIP-11).
    #[arg(long)]
    pub contact: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// No AUTH challenge.
    Off,
    /// Send an AUTH challenge; require nothing.
    Available,
    /// Require NIP-42 authentication to publish.
    Write,
    /// Require NIP-42 authentication to read.
    Read,
}

/// Options of `quorum blossom`.
#[derive(Debug, Args)]
pub struct BlossomArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Data directory (blobs and their metadata).
    #[arg(long)]
    pub data: PathBuf,

    /// Public base URL used in blob descriptors (default: http://LISTEN).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,

    #[command(flatten)]
    pub options: BlossomOptions,
}

/// Blossom settings shared by `quorum blossom` and `quorum up`.
#[derive(Debug, Args)]
pub struct BlossomOptions {
    /// Largest accepted blob.
    #[arg(long, value_name = "SIZE", default_value = "2GiB")]
    pub max_blob_size: ByteSize,

    /// Only these keys may upload (npub or hex; repeat). Default: anyone with a valid BUD-11 token.
    #[arg(long = "allow-uploader", value_name = "PUBKEY")]
    pub allowed_uploaders: Vec<String>,

    /// Accept uploads without a BUD-11 authorization event.
    #[arg(long)]
    pub anonymous_uploads: bool,

    /// Let BUD-04 mirror requests fetch from loopback and private addresses (tests only).
    #[arg(long)]
    pub allow_private_mirror: bool,
}

/// Options of `quorum up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Data directory: relay data in DATA/relay, blobs in DATA/blossom, DATA/endpoints.json.
    #[arg(long)]
    pub data: PathBuf,

    /// Relay address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub relay_listen: SocketAddr,

    /// Blossom server address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub blossom_listen: SocketAddr,

    #[command(flatten)]
    pub relay: RelayOptions,

    #[command(flatten)]
    pub blossom: BlossomOptions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
