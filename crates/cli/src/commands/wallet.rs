//! `quorum wallet`: the Cashu wallet runs pay from (`quorum_pay::PayWallet`, SQLite in the data
//! directory, its seed in `seed` mode 0600). Tokens are printed only by `send`, on stdout.

use std::process::ExitCode;
use std::time::Duration;

use quorum_pay::PayWallet;

use crate::cli::{WalletArgs, WalletCommand};

pub async fn run(args: WalletArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.data {
        Some(dir) => dir.clone(),
        None => super::run::data_home()?.join("wallet"),
    };
    let wallet = PayWallet::open_in(&dir, &args.mint).await?;
    match args.command {
        WalletCommand::Balance => println!("{} sat", wallet.balance().await?),
        WalletCommand::Mint { amount, wait } => {
            let balance = wallet.mint(amount, Duration::from_secs(wait)).await?;
            println!("minted {amount} sat; balance {balance} sat");
        }
        WalletCommand::Receive { token } => {
            let received = wallet.receive(token.trim(), None).await?;
            println!(
                "received {received} sat; balance {} sat",
                wallet.balance().await?
            );
        }
        WalletCommand::Send { amount } => println!("{}", wallet.send(amount).await?),
    }
    Ok(ExitCode::SUCCESS)
}
