//! One module per command; each turns parsed flags into library calls and prints the outcome.

mod approve;
mod blossom;
mod demo;
mod doctor;
mod download;
mod dvm;
mod embedded;
mod follow;
mod image;
mod init;
mod job;
mod lint;
mod mandate;
mod market;
mod operator;
mod relay;
mod repo;
mod run;
mod signer;
mod ui;
mod up;
mod verify;
mod wallet;
mod wrapper;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let color = crate::logging::use_color(cli.global.color);
    match cli.command {
        Command::Relay(args) => relay::run(args).await,
        Command::Blossom(args) => blossom::run(args).await,
        Command::Up(args) => up::run(args).await,
        Command::Init(args) => init::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Run(args) => run::run(args, color).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Follow(args) => follow::run(args).await,
        Command::Ui(args) => ui::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Approve(args) => {
            approve::run(args, quorum_proto::approval::Decision::Approve).await
        }
        Command::Reject(args) => approve::run(args, quorum_proto::approval::Decision::Reject).await,
        Command::Dvm(command) => dvm::run(command).await,
        Command::Job(command) => job::run(command).await,
        Command::Mandate(command) => mandate::run(command).await,
        Command::Operator(command) => operator::run(command).await,
        Command::Doctor(args) => doctor::run(args).await,
        Command::Repo(command) => repo::run(command).await,
        Command::Market(args) => market::run(args).await,
        Command::Wallet(args) => wallet::run(args).await,
        Command::Image(command) => image::run(command).await,
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(args.shell, &mut command, "quorum", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
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

/// Text that came from the network, made safe for a terminal: control characters (escape
/// sequences included) become U+FFFD, newlines and tabs stay.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Parses relay URLs given on the command line, naming the bad one.
pub(crate) fn relay_urls(urls: &[String]) -> anyhow::Result<Vec<quorum_proto::nostr::RelayUrl>> {
    use anyhow::Context;
    urls.iter()
        .map(|url| {
            quorum_proto::nostr::RelayUrl::parse(url)
                .with_context(|| format!("--relay {url:?} is not a ws:// or wss:// URL"))
        })
        .collect()
}

/// A `--secret` argument: `NAME` takes the value of the environment variable NAME (nothing on
/// the command line for `ps` to show); `NAME=VALUE` is accepted too.
pub(crate) fn secret(spec: &str) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    match spec.split_once('=') {
        Some((name, value)) => Ok((name.to_string(), value.to_string())),
        None => {
            let value = std::env::var(spec).with_context(|| {
                format!("--secret {spec}: the environment variable {spec} is not set")
            })?;
            Ok((spec.to_string(), value))
        }
    }
}
