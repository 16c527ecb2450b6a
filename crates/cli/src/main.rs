//! `quorum`: the command-line entry point of Quorum CI.
//!
//! This crate is glue: it parses flags (clap), sets up logging, builds the servers and clients
//! the libraries provide, binds ports, and prints. Protocol logic lives in the library crates.

mod cli;
mod commands;
mod logging;
mod shutdown;

use std::process::ExitCode;

use clap::Parser;

/// How long a finishing command waits for relays to take the events they missed.
const OUTBOX_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let one_shot = matches!(cli.command, cli::Command::Run(_) | cli::Command::Demo(_));
    logging::init(&cli.global, one_shot);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let outcome = commands::run(cli).await;
        // Relays that missed events (down, stalled) get them from the outbox; a process that
        // is about to exit gives them a moment, then says what they will not get from it.
        let waiting = quorum_dvm::publish::outbox().flush(OUTBOX_FLUSH).await;
        for (relay, events) in waiting {
            eprintln!("warning: relay {relay} did not take {events} event(s) published here");
        }
        outcome
    });
    match outcome {
        Ok(code) => code,
        Err(err) => {
            // The one place that prints errors: the whole context chain, on one line each.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
