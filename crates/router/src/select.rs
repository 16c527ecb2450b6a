//! Applying `select:` before a run starts (docs/pipeline.md "Choosing DVMs"): every job with a
//! policy (its own, the file's, or the engine's default for runs that leave runners open) is
//! judged against the market on the relays, and the run starts only when each such job has
//! enough DVMs. A job that has too few fails before anything runs, with the report of who was
//! considered and why each was left out; the rest of the run is skipped.
//!
//! What the policy judges, by sort of job:
//! - a script job: the engine's runners, or every DVM announcing kind 5702 when it has none;
//!   the DVMs that pass, in the policy's order of preference, are the job's runners;
//! - a DVM call: its `provider`, or every DVM announcing its kind;
//! - a quorum job: the mandate's members, which must have at least `t` that pass from at least
//!   `diversity` (default `t`) distinct confirmed operators. The request still goes to every
//!   member: the mandate, not the engine, says who holds shares.

use std::collections::HashMap;
use std::time::Duration;

use quorum_market::Query;
use quorum_pipeline::select::SelectPolicy;
use quorum_pipeline::{JobSpec, Plan, PlannedJob};
use quorum_proto::nostr::{Kind, PublicKey};
use quorum_proto::step::StepJob;

use crate::{EngineConfig, RunContext};

/// How long to wait for the relays' answers about the market.
const MARKET_WAIT: Duration = Duration::from_secs(5);

/// The DVMs each judged job may be given to, in order of preference, with the most each
/// charges for the job in millisats (0: free), by job id.
pub(crate) type Selected = HashMap<String, Vec<(PublicKey, u64)>>;

/// The policy `job` runs under: its own (the file's folded in at compile time), else the
/// engine's default; a run that pays DVMs judges every job (with no criterion when it has no
/// policy), to learn what each charges.
fn policy_of<'a>(job: &'a PlannedJob, config: &'a EngineConfig) -> Option<&'a SelectPolicy> {
    static OPEN: SelectPolicy = SelectPolicy {
        trusted: None,
        record: None,
        price: None,
        prefer: None,
        diversity: None,
    };
    if matches!(job.spec, JobSpec::Approval { .. }) {
        return None;
    }
    job.select
        .as_ref()
        .or(config.select.as_ref())
        .or(config.payer.as_ref().map(|_| &OPEN))
}

/// Judges every job of `plan` that has a policy. `Err` lists, by job id, why each job that
/// cannot run was refused.
pub(crate) async fn preselect(
    client: &quorum_dvm::client::JobClient,
    plan: &Plan,
    context: &RunContext,
    config: &EngineConfig,
) -> Result<Selected, Vec<(String, String)>> {
    let mut selected = Selected::new();
    let mut refused = Vec::new();
    let maintainer = context
        .repo_id
        .as_ref()
        .map(|r| r.owner)
        .or_else(|| context.maintainers.first().copied());
    for job in &plan.jobs {
        let Some(policy) = policy_of(job, config) else {
            continue;
        };
        // Judged only to learn prices (a paying run without a policy): nobody is refused for
        // it, and no diversity was asked for.
        let implicit = job.select.is_none() && config.select.is_none();
        let (kind, candidates, needed, diversity) = match (&job.spec, job.quorum_size()) {
            (_, Some((_, threshold))) => {
                let Some(quorum) = &context.quorum else {
                    // The quorum job fails on its own, naming the missing mandate.
                    continue;
                };
                let kind = match &job.spec {
                    JobSpec::Dvm { kind, .. } => Kind::from_u16(*kind),
                    _ => StepJob::kind(),
                };
                let diversity =
                    (!implicit).then(|| quorum_market::select::diversity_for(policy, threshold));
                (kind, Some(quorum.members()), threshold as usize, diversity)
            }
            (JobSpec::Dvm { kind, provider, .. }, None) => {
                let named = provider
                    .as_deref()
                    .and_then(|hex| PublicKey::from_hex(hex).ok())
                    .map(|p| vec![p]);
                (Kind::from_u16(*kind), named, 1, None)
            }
            (_, None) => {
                let runners = (!config.runners.is_empty()).then(|| config.runners.clone());
                (StepJob::kind(), runners, 1, None)
            }
        };
        let query = Query {
            kind,
            candidates: candidates.as_deref(),
            policy,
            maintainer,
            with_record: false,
            timeout: MARKET_WAIT,
        };
        let selection = match quorum_market::choose(client, &query).await {
            Ok(selection) => selection,
            // Only prices were wanted: the job runs as it would without a wallet.
            Err(_) if implicit && job.quorum_size().is_some() => continue,
            Err(err) => {
                refused.push((job.id.clone(), err.to_string()));
                continue;
            }
        };
        if implicit && job.quorum_size().is_some() {
            // The prices of the members that announce one; the request goes to every member
            // whatever this finds (the mandate says who holds shares).
            let priced = selection
                .judged
                .iter()
                .map(|j| (j.dvm, j.max_msats.unwrap_or(0)))
                .collect();
            selected.insert(job.id.clone(), priced);
            continue;
        }
        match selection.require(needed, diversity) {
            Ok(_) => {
                let admitted: Vec<(PublicKey, u64)> = selection
                    .judged
                    .iter()
                    .filter(|j| j.admitted())
                    .map(|j| (j.dvm, j.max_msats.unwrap_or(0)))
                    .collect();
                tracing::info!(
                    job = %job.id,
                    "selection admits {} of {} DVMs",
                    admitted.len(),
                    selection.judged.len()
                );
                selected.insert(job.id.clone(), admitted);
            }
            Err(too_few) => refused.push((job.id.clone(), too_few.to_string())),
        }
    }
    if refused.is_empty() {
        Ok(selected)
    } else {
        Err(refused)
    }
}
