//! Paying DVMs with Cashu (docs/protocol.md §17.4), on the `cdk` wallet: no Cashu is written
//! by hand here.
//!
//! - [`PayWallet`]: a sat wallet at one mint, stored in SQLite in a data directory: balance,
//!   mint (from a Lightning invoice; a test mint's fake backend pays it by itself), send,
//!   receive, and [`PayWallet::pay_locked`], a token P2PK-locked (NUT-11) to a DVM's key with a
//!   locktime after which the payer's own key can take it back ([`PayWallet::refund`]).
//! - [`Collector`]: a priced DVM's side, a `quorum_dvm` [`PaymentGate`]: it reads the token
//!   from the (NIP-44 encrypted) request's `cashu` param or the `cashu-sealed` param addressed
//!   to it, checks mint, amount and lock before anything else, and redeems it at the mint with
//!   the DVM's key, so a spent token (double spend, replay) is refused by the mint itself. When
//!   the job is over it returns what a per-second price did not use (all of it for a job that
//!   failed before it started) as change locked to the payment's refund key.
//! - [`WalletPayer`]: the requester's side, a `quorum_dvm` [`Payer`]: pays, seals a token for
//!   one DVM of a quorum request, and receives change; [`job::PaidJob`] pays for one job as
//!   `quorum job` does, answering `payment-required` within a budget.
//!
//! Nostr keys are x-only; NUT-11 keys are compressed points. A token is locked to `02‖x`, as
//! NIP-61 does, and cdk signs by x-only key, so the DVM's Nostr secret key unlocks it.

#[cfg(feature = "fake-mint")]
pub mod fake_mint;
pub mod job;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cdk::Amount;
use cdk::nuts::{Conditions, CurrencyUnit, PaymentMethod, SpendingConditions, Token};
use cdk::wallet::{ReceiveOptions, SendOptions, Wallet};
use quorum_dvm::handler::{Change, Earned, Payer, Payment, PaymentGate, Receipt};
use quorum_proto::nip90::{JobParam, JobRequest};
use quorum_proto::nostr::{Keys, PublicKey, SecretKey};

/// Why a wallet operation failed. Messages never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("wallet store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("mint {mint}: {reason}")]
    Mint { mint: String, reason: String },
    #[error("not a Cashu token: {0}")]
    Token(String),
    #[error("{0}")]
    Wallet(String),
}

fn wallet_error(e: impl std::fmt::Display) -> PayError {
    PayError::Wallet(e.to_string())
}

/// The NUT-11 key a Nostr key locks to: the even-Y point of its x coordinate.
pub fn lock_key(key: &PublicKey) -> Result<cdk::nuts::PublicKey, PayError> {
    cdk::nuts::PublicKey::from_hex(format!("02{}", key.to_hex())).map_err(wallet_error)
}

fn cashu_secret(key: &SecretKey) -> Result<cdk::nuts::SecretKey, PayError> {
    cdk::nuts::SecretKey::from_hex(key.to_secret_hex()).map_err(wallet_error)
}

/// 64 random bytes from the operating system's generator: a new wallet's seed.
pub fn random_seed() -> [u8; 64] {
    let mut seed = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    seed
}

/// The wallet seed kept in `path` (64 random bytes as hex, mode 0600), made on first use. It
/// restores the wallet's proofs: keep it with the data and never share it.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; 64], PayError> {
    let store = |e: std::io::Error| PayError::Store {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes: Vec<u8> = (0..text.trim().len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(text.trim().get(i..i + 2)?, 16).ok())
                .collect();
            bytes.try_into().map_err(|_| PayError::Store {
                path: path.display().to_string(),
                reason: "not a 64-byte hex wallet seed".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(store)?;
            }
            let seed = random_seed();
            let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(store)?;
            file.write_all(hex.as_bytes()).map_err(store)?;
            Ok(seed)
        }
        Err(e) => Err(store(e)),
    }
}

/// Whether `url` names a host on this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A sat wallet at one mint.
#[derive(Clone)]
pub struct PayWallet {
    wallet: Wallet,
    mint: String,
}

impl PayWallet {
    /// Opens (or creates) the wallet of `mint` in `dir` with the seed kept in `dir/seed`.
    pub async fn open_in(dir: &Path, mint: &str) -> Result<Self, PayError> {
        let seed = load_or_create_seed(&dir.join("seed"))?;
        Self::open(dir, mint, seed).await
    }

    /// Opens (or creates) the wallet of `mint` in `dir` (`dir/wallet.sqlite`), with `seed`
    /// (keep it with the data: it restores the proofs).
    pub async fn open(dir: &Path, mint: &str, seed: [u8; 64]) -> Result<Self, PayError> {
        std::fs::create_dir_all(dir).map_err(|e| PayError::Store {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = dir.join("wallet.sqlite");
        let store = cdk_sqlite::WalletSqliteDatabase::new(path.to_string_lossy().as_ref())
            .await
            .map_err(|e| PayError::Store {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let wallet =
            Wallet::new(mint, CurrencyUnit::Sat, Arc::new(store), seed, None).map_err(|e| {
                PayError::Mint {
                    mint: mint.into(),
                    reason: e.to_string(),
                }
            })?;
        // cdk paces a wallet's requests to each host (a burst of 20, then one every 3 s) so
        // that a busy wallet stays under a public mint's own limits; a payment is one swap,
        // so the 21st payment of a minute waits 3 s. A mint on this machine (a test or
        // `quorum up --mint`) has no shared limit to protect: no pacing there.
        if is_loopback_url(mint) {
            wallet.disable_rate_limiting();
        }
        Ok(PayWallet {
            wallet,
            mint: mint.trim_end_matches('/').to_string(),
        })
    }

    /// The mint URL, normalised (no trailing slash).
    pub fn mint_url(&self) -> &str {
        &self.mint
    }

    /// Spendable sats.
    pub async fn balance(&self) -> Result<u64, PayError> {
        Ok(self
            .wallet
            .total_balance()
            .await
            .map_err(wallet_error)?
            .into())
    }

    /// Mints `sats` from a Lightning invoice the mint issues, waiting up to `wait` for it to
    /// be paid (a test mint's fake backend pays at once). Returns the new balance.
    pub async fn mint(&self, sats: u64, wait: Duration) -> Result<u64, PayError> {
        let quote = self
            .wallet
            .mint_quote(PaymentMethod::BOLT11, Some(Amount::from(sats)), None, None)
            .await
            .map_err(|e| PayError::Mint {
                mint: self.mint.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(invoice = %quote.request, "minting {sats} sats");
        self.wallet
            .wait_and_mint_quote(quote, Default::default(), Default::default(), wait)
            .await
            .map_err(|e| PayError::Mint {
                mint: self.mint.clone(),
                reason: e.to_string(),
            })?;
        self.balance().await
    }

    /// A bearer token of `sats` (keep it secret: whoever holds it can spend it).
    pub async fn send(&self, sats: u64) -> Result<String, PayError> {
        self.send_with(sats, None).await
    }

    async fn send_with(
        &self,
        sats: u64,
        conditions: Option<SpendingConditions>,
    ) -> Result<String, PayError> {
        let prepared = self
            .wallet
            .prepare_send(
                Amount::from(sats),
                SendOptions {
                    conditions,
                    include_fee: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(wallet_error)?;
        let token = prepared.confirm(None).await.map_err(wallet_error)?;
        Ok(token.to_string())
    }

    /// A token of `sats` that only `to`'s key can redeem until `locktime` (unix seconds), and
    /// after it also `refund_to`'s: payment for a DVM job, refundable if the DVM never takes
    /// it.
    pub async fn pay_locked(
        &self,
        sats: u64,
        to: &PublicKey,
        refund_to: &PublicKey,
        locktime: u64,
    ) -> Result<String, PayError> {
        let conditions = Conditions::new(
            Some(locktime),
            None,
            Some(vec![lock_key(refund_to)?]),
            None,
            None,
            None,
        )
        .map_err(wallet_error)?;
        let conditions = SpendingConditions::new_p2pk(lock_key(to)?, Some(conditions));
        self.send_with(sats, Some(conditions)).await
    }

    /// Receives `token` into this wallet, signing with `key` if it is locked (to the DVM's
    /// key, or to the payer's refund key after the locktime). Returns the sats received.
    pub async fn receive(&self, token: &str, key: Option<&SecretKey>) -> Result<u64, PayError> {
        let signing = match key {
            Some(key) => vec![cashu_secret(key)?],
            None => Vec::new(),
        };
        let amount = self
            .wallet
            .receive(
                token,
                ReceiveOptions {
                    p2pk_signing_keys: signing,
                    ..Default::default()
                },
            )
            .await
            .map_err(wallet_error)?;
        Ok(amount.into())
    }

    /// A token of `sats` that only `to`'s key can redeem (change for a payer).
    pub async fn send_locked(&self, sats: u64, to: &PublicKey) -> Result<String, PayError> {
        let conditions = SpendingConditions::new_p2pk(lock_key(to)?, None);
        self.send_with(sats, Some(conditions)).await
    }

    /// Takes back a payment the DVM never redeemed, once its locktime has passed.
    pub async fn refund(&self, token: &str, payer: &SecretKey) -> Result<u64, PayError> {
        self.receive(token, Some(payer)).await
    }
}

/// A priced DVM's payment gate: the price, the mints it takes, and the wallet payments go to.
/// A per-second price is prepaid for the longest a job may run ([`Collector::upfront_msats`]);
/// when the job is over, what it did not use goes back to the payer ([`PaymentGate::settle`]).
pub struct Collector {
    pub wallet: PayWallet,
    /// Charged for every job that starts, in millisats.
    pub price_msats: u64,
    /// Charged for every second a job runs (started seconds count whole), in millisats.
    pub msats_per_second: u64,
    /// The longest a job may run, in seconds: what a per-second price is prepaid for.
    pub max_secs: u64,
}

impl Collector {
    /// A gate charging `msats` per job, and nothing per second.
    pub fn per_job(wallet: PayWallet, msats: u64) -> Self {
        Collector {
            wallet,
            price_msats: msats,
            msats_per_second: 0,
            max_secs: 0,
        }
    }

    /// What a job must be paid before it starts: the per-job price and the longest run.
    pub fn upfront_msats(&self) -> u64 {
        quorum_proto::nip89::Price {
            msats_per_job: self.price_msats,
            msats_per_second: self.msats_per_second,
            mints: Vec::new(),
        }
        .max_msats(self.max_secs)
    }

    /// What a job that ran for `worked` costs: the per-job price and its seconds, started
    /// seconds counting whole, at most the longest run.
    pub fn charge_msats(&self, worked: Duration) -> u64 {
        let secs = worked.as_millis().div_ceil(1000) as u64;
        self.price_msats.saturating_add(
            self.msats_per_second
                .saturating_mul(secs.min(self.max_secs)),
        )
    }

    /// Checks `token` against the price and the DVM's key, then redeems it. Returns the
    /// millisats received and the payment's refund key (where change goes).
    pub async fn redeem(
        &self,
        token: &str,
        dvm: &Keys,
    ) -> Result<(u64, Option<PublicKey>), String> {
        let parsed = Token::from_str(token).map_err(|_| "not a Cashu token".to_string())?;
        let mint = parsed
            .mint_url()
            .map_err(|e| format!("the token names no mint: {e}"))?
            .to_string();
        let mint = mint.trim_end_matches('/');
        if mint != self.wallet.mint_url() {
            return Err(format!(
                "the token is from mint {mint}; this DVM takes {}",
                self.wallet.mint_url()
            ));
        }
        if parsed.unit().is_some_and(|u| u != CurrencyUnit::Sat) {
            return Err("the token is not in sats".into());
        }
        let value: u64 = parsed
            .value()
            .map_err(|e| format!("cannot read the token's value: {e}"))?
            .into();
        let price_sats = self.upfront_msats().div_ceil(1000);
        if value < price_sats {
            return Err(format!(
                "under-paid: the token holds {value} sats; the price is {price_sats}"
            ));
        }
        // Every proof must be locked to this DVM's key: a bearer token in a request could have
        // been read by anyone on the way, and one locked to someone else is not ours to take.
        let ours = lock_key(&dvm.public_key()).map_err(|e| e.to_string())?;
        let secrets = parsed.token_secrets();
        let conditions: Vec<SpendingConditions> = secrets
            .iter()
            .filter_map(|secret| SpendingConditions::try_from(*secret).ok())
            .collect();
        let locked_to_us = !secrets.is_empty()
            && conditions.len() == secrets.len()
            && conditions.iter().all(|c| {
                matches!(
                    c,
                    SpendingConditions::P2PKConditions { data, .. } if data.x_only_public_key() == ours.x_only_public_key()
                )
            });
        if !locked_to_us {
            return Err("the token is not P2PK-locked to this DVM's key (NUT-11)".into());
        }
        // Change goes to the payer's refund key: the key the payer named to take the payment
        // back, so it is theirs to unlock.
        let refund_to = conditions.iter().find_map(|c| match c {
            SpendingConditions::P2PKConditions {
                conditions: Some(conditions),
                ..
            } => conditions
                .refund_keys
                .as_ref()
                .and_then(|keys| keys.first())
                .and_then(|key| PublicKey::from_slice(&key.x_only_public_key().serialize()).ok()),
            _ => None,
        });
        let received = self
            .wallet
            .receive(token, Some(dvm.secret_key()))
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.to_lowercase().contains("spent") {
                    "the token is already spent (double spend or replay)".to_string()
                } else {
                    format!("the mint did not redeem the token: {text}")
                }
            })?;
        Ok((received.saturating_mul(1000), refund_to))
    }
}

impl PaymentGate for Collector {
    fn collect<'a>(
        &'a self,
        request: &'a JobRequest,
        dvm: &'a Keys,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Payment> + Send + 'a>> {
        Box::pin(async move {
            match quorum_proto::payment::token_for(request, dvm.secret_key()) {
                // Free: nothing asked up front. A token sent anyway is still taken (a router's
                // budget for the runners it hires), and what is not earned goes back.
                None if self.upfront_msats() == 0 => Payment::Paid(Receipt::default()),
                None => Payment::Required {
                    msats: self.upfront_msats(),
                    mints: vec![self.wallet.mint_url().to_string()],
                },
                Some(Err(why)) => Payment::Refused(why.to_string()),
                Some(Ok(token)) => match self.redeem(&token, dvm).await {
                    Ok((msats, refund_to)) => Payment::Paid(Receipt { msats, refund_to }),
                    Err(why) => Payment::Refused(why),
                },
            }
        })
    }

    fn settle<'a>(
        &'a self,
        paid: &'a Receipt,
        _dvm: &'a Keys,
        earned: Earned,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Change>> + Send + 'a>> {
        Box::pin(async move {
            let paid_sats = paid.msats / 1000;
            let charged_msats = match earned {
                Earned::Nothing => 0,
                Earned::Worked(worked) => self.charge_msats(worked),
                Earned::Charged(msats) => msats,
            };
            // Charged in whole sats, rounded up: tokens hold sats.
            let charged = charged_msats.div_ceil(1000).min(paid_sats);
            let change = paid_sats - charged;
            if change == 0 {
                return None;
            }
            let Some(to) = paid.refund_to else {
                tracing::warn!("{change} sats of change kept: the payment named no refund key");
                return None;
            };
            match self.wallet.send_locked(change, &to).await {
                Ok(token) => Some(Change {
                    msats: change * 1000,
                    to,
                    token,
                }),
                Err(err) => {
                    tracing::warn!("cannot make {change} sats of change: {err}");
                    None
                }
            }
        })
    }
}

/// A wallet that pays DVMs for the engine, with the payer's key: payments are refundable to
/// it, and change comes back locked and sealed to it.
pub struct WalletPayer {
    pub wallet: PayWallet,
    pub keys: Keys,
}

impl Payer for WalletPayer {
    fn pay<'a>(
        &'a self,
        dvm: &'a PublicKey,
        sats: u64,
        locktime: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            self.wallet
                .pay_locked(sats, dvm, &self.keys.public_key(), locktime)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn seal(&self, dvm: &PublicKey, token: &str) -> Result<JobParam, String> {
        quorum_proto::payment::seal_for(self.keys.secret_key(), dvm, token)
            .map_err(|e| e.to_string())
    }

    fn receive_change<'a>(
        &'a self,
        dvm: &'a PublicKey,
        sealed: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send + 'a>> {
        Box::pin(async move {
            let token = quorum_proto::payment::open_change(sealed, self.keys.secret_key(), dvm)
                .map_err(|e| e.to_string())?;
            self.wallet
                .receive(&token, Some(self.keys.secret_key()))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_mint_on_this_machine_counts_as_loopback() {
        for url in [
            "http://127.0.0.1:3338",
            "http://127.0.0.5:1/",
            "http://localhost:3338",
            "http://[::1]:3338",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "https://mint.example.com",
            "http://10.0.0.1:3338",
            "http://127.0.0.1.example.com",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    /// A remote mint keeps cdk's pacing (its own rate limits are shared by every wallet); a
    /// mint on this machine is not paced. Opening a wallet does not contact its mint.
    #[tokio::test]
    async fn a_wallet_paces_requests_to_a_remote_mint_only() {
        let dir = tempfile::tempdir().unwrap();
        let remote = PayWallet::open(
            &dir.path().join("remote"),
            "https://mint.example.com",
            random_seed(),
        )
        .await
        .unwrap();
        assert!(remote.wallet.is_rate_limited());
        let local = PayWallet::open(
            &dir.path().join("local"),
            "http://127.0.0.1:3338",
            random_seed(),
        )
        .await
        .unwrap();
        assert!(!local.wallet.is_rate_limited());
    }
}
