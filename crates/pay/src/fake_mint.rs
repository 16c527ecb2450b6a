//! A real Cashu mint (cdk's) in process on 127.0.0.1, whose Lightning backend is cdk's fake
//! wallet: invoices it issues are paid at once, so wallets can mint without a Lightning node.
//! For tests and for trying payments on the embedded network; its ecash is worth nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cdk::mint::{MintBuilder, MintMeltLimits};
use cdk::nuts::{CurrencyUnit, PaymentMethod};
use cdk::types::FeeReserve;
use tokio::sync::oneshot;

use crate::PayError;

/// A running fake-Lightning mint; stops when dropped.
pub struct FakeMint {
    pub url: String,
    _stop: oneshot::Sender<()>,
}

fn mint_error(e: impl std::fmt::Display) -> PayError {
    PayError::Mint {
        mint: "fake mint".into(),
        reason: e.to_string(),
    }
}

impl FakeMint {
    /// Starts a mint with in-memory storage on a free loopback port.
    pub async fn start() -> Result<FakeMint, PayError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(mint_error)?;
        let url = format!("http://{}", listener.local_addr().map_err(mint_error)?);
        let db = Arc::new(
            cdk_sqlite::mint::memory::empty()
                .await
                .map_err(mint_error)?,
        );
        let mut builder = MintBuilder::new(db.clone());
        let lightning = cdk_fake_wallet::FakeWallet::new(
            FeeReserve {
                min_fee_reserve: 1.into(),
                percent_fee_reserve: 1.0,
            },
            HashMap::default(),
            HashSet::default(),
            0,
            CurrencyUnit::Sat,
        );
        builder
            .add_payment_processor(
                CurrencyUnit::Sat,
                PaymentMethod::BOLT11,
                MintMeltLimits::new(1, 1_000_000),
                Arc::new(lightning),
            )
            .await
            .map_err(mint_error)?;
        let builder = builder
            .with_name("Quorum CI fake-Lightning mint".into())
            .with_urls(vec![url.clone()]);
        let seed: [u8; 32] = rand::random();
        let mint = builder
            .build_with_seed(db.clone(), &seed)
            .await
            .map_err(mint_error)?;
        mint.start().await.map_err(mint_error)?;
        // An empty method list would serve no bolt11 routes (shared/dependencies.md).
        let router = cdk_axum::create_mint_router(Arc::new(mint), vec!["bolt11".into()])
            .await
            .map_err(mint_error)?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeMint { url, _stop: stop })
    }
}
