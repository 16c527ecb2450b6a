//! Logging to stderr with tracing, at a level chosen by -v/-q or RUST_LOG, coloured or not.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{ColorChoice, GlobalArgs};

/// Whether to use ANSI colours on stderr: `--color` first, then NO_COLOR, then the terminal.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

/// `one_shot`: a command that prints its own progress (`run`, `demo`) and hosts the embedded
/// services only for its duration; their routine notices (key generation, shares saved) would
/// interleave with it, so they show only from `-v` up.
pub fn init(args: &GlobalArgs, one_shot: bool) {
    let ours = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let deps = if args.verbose >= 2 { "debug" } else { "warn" };
    let mut default = format!(
        "{deps},quorum={ours},quorum_cli={ours},quorum_relay={ours},quorum_blossom={ours},quorum_proto={ours}"
    );
    if one_shot && args.verbose == 0 && !args.quiet {
        default.push_str(",quorum_consensus=warn");
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color(args.color))
        .with_target(args.verbose > 0)
        .init();
}
