//! One module per command; each turns parsed flags into library calls and prints the outcome.

mod blossom;
mod relay;
mod up;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Relay(args) => relay::run(args).await,
        Command::Blossom(args) => blossom::run(args).await,
        Command::Up(args) => up::run(args).await,
    }
}

/// Prints a line on stdout and flushes it, so that a parent process reading our stdout (a
/// script, a test) sees readiness at once, even when stdout is a pipe.
pub(crate) fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop a server that is otherwise healthy.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
