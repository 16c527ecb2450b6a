//! One job paid as `quorum job --mint URL --budget SATS` pays it (docs/protocol.md §17.4): the
//! request goes to its DVM unpaid; when the DVM answers `payment-required` with an amount
//! within the budget, and announces this wallet's mint, the job is asked again with a token
//! locked to that DVM, in a request NIP-44 encrypted to it. Change in the answer (a per-second
//! price's unused part, or all of it for a job that failed before it started) comes back into
//! the wallet.
//!
//! A router (run-pipeline, kind 5700) that announces the wallet's mint is paid up front with
//! the whole budget: its fee, and the budget for the runners it hires; what a run does not
//! spend comes back as change.

use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient, JobOutcome, JobReporter};
use quorum_dvm::handler::Payer;
use quorum_proto::kinds::JobKind;
use quorum_proto::nip90::{FeedbackStatus, JobParam, JobRequest};
use quorum_proto::nostr::{PublicKey, Timestamp};
use quorum_proto::payment::PARAM_CASHU;

use crate::WalletPayer;

/// Why a paid job could not be asked. Messages never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum PaidJobError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("paying for a job needs the DVM named (--provider): the token is locked to it")]
    NoProvider,
    #[error("{dvm} asks for payment without saying how much")]
    NoAmount { dvm: String },
    #[error("{dvm} asks {msats} msats, over the budget of {budget} msats")]
    OverBudget {
        dvm: String,
        msats: u64,
        budget: u64,
    },
    #[error("{dvm} does not announce mint {mint}, which this wallet holds ecash of")]
    ForeignMint { dvm: String, mint: String },
    #[error("cannot pay {dvm}: {reason}")]
    Pay { dvm: String, reason: String },
}

/// The answer to a paid job and what it cost.
#[derive(Debug)]
pub struct PaidOutcome {
    pub outcome: JobOutcome,
    /// Handed over to the DVM, in millisats (0: it asked for nothing).
    pub paid_msats: u64,
    /// Given back as change and received into the wallet, in millisats.
    pub change_msats: u64,
}

/// Pays for jobs from a wallet, at most `budget_msats` a job.
pub struct PaidJob<'a> {
    pub payer: &'a WalletPayer,
    pub budget_msats: u64,
}

impl PaidJob<'_> {
    /// Runs `request` (addressed to one DVM), paying when it asks, as described above.
    pub async fn run(
        &self,
        client: &JobClient,
        request: &JobRequest,
        encrypt: bool,
        wait: Duration,
        reporter: &mut dyn JobReporter,
    ) -> Result<PaidOutcome, PaidJobError> {
        let [dvm] = request.providers.as_slice() else {
            return Err(PaidJobError::NoProvider);
        };
        let short = dvm.to_hex()[..12].to_string();
        // A router is paid up front, whatever its fee, with the whole budget: its fee and the
        // budget for the runners it hires. What it does not spend comes back as change.
        if request.kind == JobKind::RunPipeline.request_kind()
            && let Some(fee) = self.announced_fee(client, request, dvm).await?
        {
            if fee > self.budget_msats {
                return Err(PaidJobError::OverBudget {
                    dvm: short,
                    msats: fee,
                    budget: self.budget_msats,
                });
            }
            return self
                .pay_and_run(client, request, dvm, self.budget_msats, wait, reporter)
                .await;
        }
        let first = client.run(request, encrypt, wait, reporter).await?;
        let asked = match &first {
            JobOutcome::Error { feedback, .. }
                if feedback.status == FeedbackStatus::PaymentRequired =>
            {
                feedback.amount.as_ref().map(|a| a.msats)
            }
            _ => {
                return Ok(PaidOutcome {
                    outcome: first,
                    paid_msats: 0,
                    change_msats: 0,
                });
            }
        };
        let msats = asked.ok_or_else(|| PaidJobError::NoAmount { dvm: short.clone() })?;
        if msats > self.budget_msats {
            return Err(PaidJobError::OverBudget {
                dvm: short,
                msats,
                budget: self.budget_msats,
            });
        }
        // A token from a mint the DVM does not take would be refused, and stay locked to it
        // until the locktime: check its announcement first.
        if self.announced_fee(client, request, dvm).await?.is_none() {
            return Err(PaidJobError::ForeignMint {
                dvm: short,
                mint: self.payer.wallet.mint_url().to_string(),
            });
        }
        self.pay_and_run(client, request, dvm, msats, wait, reporter)
            .await
    }

    /// What `dvm` announces it charges per job for `request`'s kind, when its announcement
    /// lists this wallet's mint; `None`: it takes no payment here.
    async fn announced_fee(
        &self,
        client: &JobClient,
        request: &JobRequest,
        dvm: &PublicKey,
    ) -> Result<Option<u64>, PaidJobError> {
        let mint = self.payer.wallet.mint_url();
        let offers = client
            .discover(request.kind, Duration::from_secs(5))
            .await?;
        Ok(offers
            .iter()
            .find(|(key, offer)| key == dvm && offer.offer.price.mints.iter().any(|m| m == mint))
            .map(|(_, offer)| offer.offer.price.msats_per_job))
    }

    /// Asks `request` again of `dvm` with a token of `msats` (rounded up to sats) locked to
    /// it, NIP-44 encrypted to it, and takes the change its answer carries.
    async fn pay_and_run(
        &self,
        client: &JobClient,
        request: &JobRequest,
        dvm: &PublicKey,
        msats: u64,
        wait: Duration,
        reporter: &mut dyn JobReporter,
    ) -> Result<PaidOutcome, PaidJobError> {
        let short = dvm.to_hex()[..12].to_string();
        let sats = msats.div_ceil(1000);
        let locktime = Timestamp::now().as_secs() + wait.as_secs() + 3600;
        let token = self
            .payer
            .pay(dvm, sats, locktime)
            .await
            .map_err(|reason| PaidJobError::Pay {
                dvm: short.clone(),
                reason,
            })?;
        let mut paid = request.clone();
        paid.params.push(JobParam::new(PARAM_CASHU, token));
        // The token travels NIP-44 encrypted to the DVM, never in a clear tag.
        let outcome = client.run(&paid, true, wait, reporter).await?;
        let mut change_msats = 0;
        if let Some(sealed) = outcome.sealed_change() {
            match self.payer.receive_change(dvm, sealed).await {
                // Never counted as more than was paid.
                Ok(back) => change_msats = back.saturating_mul(1000).min(sats * 1000),
                Err(why) => tracing::warn!(dvm = %short, "change not received: {why}"),
            }
        }
        Ok(PaidOutcome {
            outcome,
            paid_msats: sats * 1000,
            change_msats,
        })
    }
}
