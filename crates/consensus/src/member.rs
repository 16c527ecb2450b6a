//! A member's whole part in one quorum job: check the mandate, agree, and sign what was agreed.
//!
//! The caller (a runner after its build, a wrapper after the inner DVM answered) hands in its
//! own result; this module runs commit-reveal with the other members and, when `t` of them
//! revealed the same files, a FROST session that signs the quorum attestation (and whatever
//! else the caller derives from the agreement, such as a release binding). Every field of a
//! signed event comes from the agreement, never from one member's local state, so all signers
//! derive byte-identical events.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_proto::agreement::{
    AttestationBasis, BuildResult, JobEvidence, QuorumAttestation, Roster,
};
use quorum_proto::mandate::Mandate;
use quorum_proto::quorum_msg::SessionId;
use quorum_threshold::KeyShare;
use sha2::{Digest, Sha256};

use crate::agreement::{self, Agreement, AgreementConfig, AgreementError};
use crate::channel::{Channel, ChannelError};
use crate::signing::{self, Signed, SigningConfig, SigningError};

/// Why a member did not take part, or the session failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("mandate {mandate}: {reason}")]
    Mandate { mandate: EventId, reason: String },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Agreement(#[from] AgreementError),
}

/// One quorum job as a member sees it.
#[derive(Debug, Clone)]
pub struct QuorumJob {
    /// The job request all members serve (one request that names every member).
    pub job: EventId,
    /// The mandate that authorises the quorum, and its event id.
    pub mandate: Mandate,
    pub mandate_id: EventId,
    /// The commit the job built.
    pub commit: String,
    /// This member's own result.
    pub result: BuildResult,
    /// Where the job came from, as this member derived it: the attestation names it, and the
    /// member reveals its plan hash (members that read another plan do not count).
    pub evidence: Option<JobEvidence>,
    /// The inner kind, when ordinary DVMs wrapped by the members did the work.
    pub wrapped: Option<u16>,
    /// The earliest time the attestation may carry (the latest of its evidence's times).
    pub not_before: Timestamp,
    /// Where this member records its commitments, one file per job, so that after a restart it
    /// opens the commitment it already made instead of making another (`agreement::records`).
    /// `None`: no record (a restarted member would commit again, an equivocation).
    pub records: Option<PathBuf>,
}

/// How a member's part ended.
#[derive(Debug, Clone)]
pub struct MemberOutcome {
    pub agreement: Agreement,
    /// The quorum-signed events, when `t` members agreed and signing succeeded.
    pub signed: Option<Signed>,
    /// Why nothing was signed, when it was not.
    pub failure: Option<String>,
    /// How long commit-reveal took, in milliseconds: from this member's commitment to its
    /// tally (so it includes waiting for the other members' builds).
    pub agreement_ms: Option<f64>,
    /// How long the signing session took, in milliseconds: from the tally to the signed events
    /// (or the session's failure). `None` when there was nothing to sign.
    pub signing_ms: Option<f64>,
}

impl MemberOutcome {
    /// The quorum attestation, if one was signed.
    pub fn attestation(&self) -> Option<&Event> {
        self.signed.as_ref().and_then(|s| s.events.first())
    }
}

/// Timing of a member's part.
#[derive(Debug, Clone, Default)]
pub struct MemberConfig {
    pub agreement: AgreementConfig,
    pub signing: SigningConfig,
}

/// Takes part in `job` with `share`: commit-reveal, then signing of the attestation followed by
/// `extra(&agreement)` (more events to sign, derived from the agreement only).
pub async fn take_part(
    relays: &[RelayUrl],
    keys: &Keys,
    share: &KeyShare,
    job: &QuorumJob,
    config: &MemberConfig,
    extra: impl Fn(&Agreement) -> Vec<UnsignedEvent>,
) -> Result<MemberOutcome, MemberError> {
    check_mandate(job, share, keys)?;
    let me = keys.public_key();
    let since = Timestamp::now() - 600u64;
    let channel = Channel::open(
        relays,
        keys.clone(),
        vec![agreement::filter(&job.job), signing::filter(&me, since)],
    )
    .await?;
    let outcome = run(&channel, share, job, config, extra).await;
    channel.close().await;
    if let Ok(outcome) = &outcome {
        tracing::debug!(
            job = %job.job,
            member = %me,
            agreement_ms = outcome.agreement_ms,
            signing_ms = outcome.signing_ms,
            signed = outcome.signed.is_some(),
            "quorum part done"
        );
    }
    outcome
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

async fn run(
    channel: &Channel,
    share: &KeyShare,
    job: &QuorumJob,
    config: &MemberConfig,
    extra: impl Fn(&Agreement) -> Vec<UnsignedEvent>,
) -> Result<MemberOutcome, MemberError> {
    let me = channel.public_key();
    let roster = roster_of(share);
    let started = Instant::now();
    let plan = job.evidence.as_ref().map(|e| e.plan_hash);
    let agreement = agreement::commit_and_reveal(
        channel,
        &roster,
        job.job,
        &job.result,
        plan,
        &config.agreement,
        job.records.as_deref(),
    )
    .await?;
    let tallied = Instant::now();
    let agreement_ms = Some(ms(tallied - started));
    let unsigned = |agreement, failure| MemberOutcome {
        agreement,
        signed: None,
        failure: Some(failure),
        agreement_ms,
        signing_ms: None,
    };
    let threshold = usize::from(roster.threshold());
    let agreed: BTreeSet<PublicKey> = agreement.tally.agreed.iter().copied().collect();
    let attestation = match attestation(job, share.quorum(), &agreement) {
        Ok(attestation) => attestation,
        Err(why) => return Ok(unsigned(agreement, format!("no agreement: {why}"))),
    };
    if agreed.len() < threshold {
        let failure = format!(
            "no agreement: {} of the {} needed members revealed the same files{}",
            agreed.len(),
            threshold,
            relay_note(channel).await,
        );
        return Ok(unsigned(agreement, failure));
    }
    if !agreed.contains(&me) {
        let failure = "my result differs from the one the quorum agreed on; not signing".into();
        return Ok(unsigned(agreement, failure));
    }
    let mut events = vec![attestation];
    events.extend(extra(&agreement));
    let session = session_id(&job.job, &events);
    let signers: Vec<PublicKey> = agreed.into_iter().collect();
    let signed =
        signing::sign_together(channel, share, &signers, session, events, &config.signing).await;
    let signing_ms = Some(ms(tallied.elapsed()));
    let (signed, failure) = match signed {
        Ok(signed) => (Some(signed), None),
        Err(SigningError::Channel(e)) => return Err(e.into()),
        Err(e) => (
            None,
            Some(format!("signing failed: {e}{}", relay_note(channel).await)),
        ),
    };
    Ok(MemberOutcome {
        agreement,
        signed,
        failure,
        agreement_ms,
        signing_ms,
    })
}

/// When some relays were not working during the session, says which: a round that timed out
/// then is a fault of the network, not a disagreement.
async fn relay_note(channel: &Channel) -> String {
    let bad = channel.unresponsive_relays().await;
    if bad.is_empty() {
        String::new()
    } else {
        format!(" (relay unresponsive: {})", bad.join(", "))
    }
}

/// The attestation every agreeing member derives identically from the tally.
pub fn attestation(
    job: &QuorumJob,
    quorum: PublicKey,
    agreement: &Agreement,
) -> Result<UnsignedEvent, String> {
    let basis = AttestationBasis {
        mandate: job.mandate_id,
        commit: job.commit.clone(),
        evidence: job.evidence.clone(),
        wrapped: job.wrapped,
        not_before: job.not_before,
    };
    let (attestation, created_at) =
        QuorumAttestation::from_tally(&agreement.tally, &basis).map_err(|e| e.to_string())?;
    attestation
        .unsigned(quorum, created_at)
        .map_err(|e| e.to_string())
}

/// The agreement roster of a share's quorum.
pub fn roster_of(share: &KeyShare) -> Roster {
    Roster::new(
        share.quorum(),
        share.group().roster().pubkeys(),
        share.group().threshold(),
    )
    .expect("a key share's roster is valid")
}

/// A session id every signer computes the same way: the job and the ids of what is signed.
pub(crate) fn session_id(job: &EventId, events: &[UnsignedEvent]) -> SessionId {
    let mut hash = Sha256::new();
    hash.update(job.as_bytes());
    for event in events {
        let mut event = event.clone();
        hash.update(event.id().as_bytes());
    }
    SessionId::from_bytes(hash.finalize().into())
}

fn check_mandate(job: &QuorumJob, share: &KeyShare, keys: &Keys) -> Result<(), MemberError> {
    let refuse = |reason: String| MemberError::Mandate {
        mandate: job.mandate_id,
        reason,
    };
    if !job.mandate.is_valid_at(Timestamp::now()) {
        return Err(refuse("expired".into()));
    }
    if job.mandate.quorum != Some(share.quorum()) {
        return Err(refuse(format!(
            "does not name the quorum my share is for ({})",
            share.quorum()
        )));
    }
    if job.mandate.member_index(&keys.public_key()).is_none() {
        return Err(refuse("does not name me as a member".into()));
    }
    if share.group().threshold() != job.mandate.threshold {
        return Err(refuse(format!(
            "says threshold {}, the key was made for {}",
            job.mandate.threshold,
            share.group().threshold()
        )));
    }
    Ok(())
}
