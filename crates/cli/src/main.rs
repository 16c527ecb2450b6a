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
    match runtime.block_on(commands::run(cli)) {
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
