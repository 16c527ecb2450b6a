//! The member side of a quorum job request, for any DVM that holds a share: a runner after its
//! build, a wrapper after the ordinary DVM it wraps answered.
//!
//! Given the request (which `p`-tags every member and names a mandate) and this member's own
//! result, [`QuorumMember::serve`] looks the mandate up on the relays and checks that it is the
//! one that counts for its repository (signed by a maintainer, newest, unexpired, naming this
//! quorum and this member, allowing what will be signed, covering the job), loads the share for
//! its quorum key from the share directory, and takes part in the agreement and signing
//! ([`crate::member::take_part`]). When the request asks for a release, the members also sign
//! the release binding derived from the agreed files.
//!
//! [`QuorumMember::serve_anchor`] is the same with no published request: the session is keyed by
//! an id every member derives alike (a git watcher quorum uses the id of the unsigned run
//! request it is about to sign), and the caller hands in the events to sign after the
//! attestation; the mandate must allow their kinds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::agreement::{BuildResult, QUORUM_ATTESTATION};
use quorum_proto::chain;
use quorum_proto::mandate::{MANDATE, Mandate};
use quorum_proto::nip34::{REPO_ANNOUNCEMENT, maintainer_set};
use quorum_proto::nip90::JobRequest;
use quorum_proto::quorum_job::{
    QuorumJobParams, QuorumReport, hex_list, next_step_request, release_binding,
};
use quorum_proto::release::RELEASE_BINDING;
use quorum_threshold::KeyShare;

use crate::agreement::Agreement;
use crate::member::{self, MemberConfig, MemberError, MemberOutcome, QuorumJob};

/// Why a member cannot serve a quorum request.
#[derive(Debug, thiserror::Error)]
pub enum QuorumJobError {
    #[error("cannot reach the relays to look up mandate {mandate}: {reason}")]
    Lookup { mandate: EventId, reason: String },
    #[error("mandate {0} is not on the relays")]
    MandateNotFound(EventId),
    #[error("mandate {mandate}: {reason}")]
    Mandate { mandate: EventId, reason: String },
    #[error("no key share for quorum {quorum} in {dir}: {reason}")]
    NoShare {
        quorum: PublicKey,
        dir: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Member(#[from] MemberError),
}

/// A DVM's identity as a quorum member: its relays, its DVM key and where its shares are.
#[derive(Clone)]
pub struct QuorumMember {
    relays: Vec<RelayUrl>,
    keys: Keys,
    share_dir: PathBuf,
    config: MemberConfig,
    lookup_timeout: Duration,
}

impl std::fmt::Debug for QuorumMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumMember")
            .field("relays", &self.relays)
            .field("member", &self.keys.public_key())
            .field("share_dir", &self.share_dir)
            .finish_non_exhaustive()
    }
}

impl QuorumMember {
    pub fn new(relays: Vec<RelayUrl>, keys: Keys, share_dir: PathBuf) -> Self {
        QuorumMember {
            relays,
            keys,
            share_dir,
            config: MemberConfig::default(),
            lookup_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_config(mut self, config: MemberConfig) -> Self {
        self.config = config;
        self
    }

    pub fn share_dir(&self) -> &Path {
        &self.share_dir
    }

    /// Takes part in the quorum job `request` (whose quorum params are `params`) with this
    /// member's `result`. `job` is the pipeline job the request runs, when it says (the `job`
    /// param), for the mandate's job list.
    pub async fn serve(
        &self,
        request: &Event,
        params: &QuorumJobParams,
        job: Option<&str>,
        result: BuildResult,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        let mut needed = vec![QUORUM_ATTESTATION];
        if params.release.is_some() {
            needed.push(RELEASE_BINDING);
        }
        // A quorum chain: the quorum, not one member, signs the next step's request.
        let parsed = JobRequest::from_event(request).ok();
        let next_kind = parsed.as_ref().and_then(|parsed| {
            chain::next_request(request, parsed, EventId::all_zeros())
                .and_then(Result::ok)
                .map(|next| next.kind)
        });
        needed.extend(next_kind);
        let release = params.release.clone();
        let commit = params.commit.clone();
        self.take_part(
            request.id,
            params,
            job,
            result,
            &needed,
            |quorum_job, quorum, agreement| {
                let Ok(attestation) = member::attestation(quorum_job, quorum, agreement) else {
                    return Vec::new();
                };
                let mut extra = Vec::new();
                if let Some(release) = &release {
                    let files = agreement.tally.agreed_result();
                    match release_binding(release, &commit, &files, &attestation) {
                        Ok(binding) => extra.push(binding),
                        // Every honest member derives the same error from the same data.
                        Err(err) => {
                            tracing::warn!("no release binding for the agreed files: {err}")
                        }
                    }
                }
                if let Some(parsed) = &parsed {
                    match next_step_request(request, parsed, &attestation) {
                        Some(Ok(next)) => extra.push(next),
                        Some(Err(err)) => tracing::warn!("the chain stops here: {err}"),
                        None => {}
                    }
                }
                extra
            },
        )
        .await
    }

    /// Takes part in a quorum session anchored at `job` (an event id every member derives the
    /// same way, not necessarily a published request) with this member's `result`, and has the
    /// quorum sign `extra` after the attestation: events fixed before the agreement, such as
    /// the next step's request. The mandate must allow 8708 and the kind of every extra event.
    pub async fn serve_anchor(
        &self,
        job: EventId,
        params: &QuorumJobParams,
        job_name: Option<&str>,
        result: BuildResult,
        extra: Vec<UnsignedEvent>,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        let mut needed = vec![QUORUM_ATTESTATION];
        for event in &extra {
            if !needed.contains(&event.kind) {
                needed.push(event.kind);
            }
        }
        self.take_part(job, params, job_name, result, &needed, |_, _, _| {
            extra.clone()
        })
        .await
    }

    async fn take_part(
        &self,
        job: EventId,
        params: &QuorumJobParams,
        job_name: Option<&str>,
        result: BuildResult,
        needed: &[Kind],
        extra: impl Fn(&QuorumJob, PublicKey, &Agreement) -> Vec<UnsignedEvent>,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        let (mandate_event, mandate) = self.checked_mandate(params, job_name, needed).await?;
        let quorum = mandate
            .quorum
            .expect("checked_mandate requires a quorum key");
        let share = load_share(&self.share_dir, &quorum)?;
        let quorum_job = QuorumJob {
            job,
            mandate: mandate.clone(),
            mandate_id: mandate_event.id,
            commit: params.commit.clone(),
            result,
            records: Some(self.share_dir.join("agreements")),
        };
        let outcome = member::take_part(
            &self.relays,
            &self.keys,
            &share,
            &quorum_job,
            &self.config,
            |agreement| extra(&quorum_job, quorum, agreement),
        )
        .await?;
        let report = report(&quorum, mandate_event.id, &outcome);
        Ok((report, outcome))
    }

    /// The mandate the request names, if it is the one that counts for its repository.
    async fn checked_mandate(
        &self,
        params: &QuorumJobParams,
        job: Option<&str>,
        needed: &[Kind],
    ) -> Result<(Event, Mandate), QuorumJobError> {
        let id = params.mandate;
        let refuse = |reason: String| QuorumJobError::Mandate {
            mandate: id,
            reason,
        };
        let client = Client::builder().build();
        for relay in &self.relays {
            client
                .add_relay(relay.clone())
                .await
                .map_err(|e| QuorumJobError::Lookup {
                    mandate: id,
                    reason: e.to_string(),
                })?;
        }
        client.connect().await;
        let looked_up = async {
            let named = client
                .fetch_events(Filter::new().id(id).kind(MANDATE), self.lookup_timeout)
                .await?;
            let Some(named) = named.into_iter().find(|e| e.id == id) else {
                return Ok(None);
            };
            let mandate = Mandate::from_event(&named);
            let (announcements, mandates) = match &mandate {
                Ok(m) => {
                    let announcements = client
                        .fetch_events(
                            Filter::new()
                                .kind(REPO_ANNOUNCEMENT)
                                .author(m.repo.owner)
                                .identifier(m.repo.identifier.clone()),
                            self.lookup_timeout,
                        )
                        .await?;
                    let mandates = client
                        .fetch_events(
                            Filter::new().kind(MANDATE).custom_tag(
                                SingleLetterTag::lowercase(Alphabet::A),
                                m.repo.to_string(),
                            ),
                            self.lookup_timeout,
                        )
                        .await?;
                    (announcements.to_vec(), mandates.to_vec())
                }
                Err(_) => (Vec::new(), Vec::new()),
            };
            Ok::<_, nostr_sdk::client::Error>(Some((named, mandate, announcements, mandates)))
        }
        .await;
        client.shutdown().await;
        let (named, mandate, announcements, mut mandates) = looked_up
            .map_err(|e| QuorumJobError::Lookup {
                mandate: id,
                reason: e.to_string(),
            })?
            .ok_or(QuorumJobError::MandateNotFound(id))?;
        named
            .verify()
            .map_err(|_| refuse("bad id or signature".into()))?;
        let mandate = mandate.map_err(|e| refuse(e.to_string()))?;
        let quorum = mandate
            .quorum
            .ok_or_else(|| refuse("is a DKG proposal, which authorises nothing".into()))?;
        let maintainers = maintainer_set(
            &mandate.repo.owner,
            &mandate.repo.identifier,
            &announcements,
        );
        if !maintainers.contains(&named.pubkey) {
            return Err(refuse(format!(
                "is signed by {}, who is not a maintainer of {}",
                named.pubkey, mandate.repo
            )));
        }
        if !mandates.iter().any(|e| e.id == named.id) {
            mandates.push(named.clone());
        }
        let now = Timestamp::now();
        match quorum_proto::mandate::select_mandate(
            &mandates,
            &mandate.repo,
            &quorum,
            &maintainers,
            now,
        ) {
            Some((current, _)) if current.id == named.id => {}
            Some((current, _)) => {
                return Err(refuse(format!("is superseded by mandate {}", current.id)));
            }
            None => return Err(refuse("is expired or not yet valid".into())),
        }
        if mandate.member_index(&self.keys.public_key()).is_none() {
            return Err(refuse("does not name this DVM as a member".into()));
        }
        for &kind in needed {
            if !mandate.allows(kind) {
                return Err(refuse(format!(
                    "does not allow the quorum to sign kind {}",
                    kind.as_u16()
                )));
            }
        }
        let job = job.or(params.release.as_ref().map(|r| r.job.as_str()));
        if let Some(job) = job
            && !mandate.covers(&mandate.pipeline, job)
        {
            return Err(refuse(format!("does not cover job {job}")));
        }
        if let Some(release) = &params.release
            && release.repo != mandate.repo
        {
            return Err(refuse(format!(
                "is for {}, but the release is asked for {}",
                mandate.repo, release.repo
            )));
        }
        Ok((named, mandate))
    }
}

/// Where a member keeps the share for `quorum`: `DIR/<quorum hex>.json`.
pub fn share_path(dir: &Path, quorum: &PublicKey) -> PathBuf {
    dir.join(format!("{}.json", quorum.to_hex()))
}

/// The share for `quorum` from `dir` (mode 0600 enforced by the store).
pub fn load_share(dir: &Path, quorum: &PublicKey) -> Result<KeyShare, QuorumJobError> {
    quorum_threshold::store::load(&share_path(dir, quorum)).map_err(|e| QuorumJobError::NoShare {
        quorum: *quorum,
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The report a member attaches to its result.
pub fn report(quorum: &PublicKey, mandate: EventId, outcome: &MemberOutcome) -> QuorumReport {
    let tally = &outcome.agreement.tally;
    let signed = outcome.signed.as_ref();
    QuorumReport {
        quorum: quorum.to_hex(),
        mandate: mandate.to_hex(),
        attestation: signed.and_then(|s| s.events.first()).map(|e| e.id.to_hex()),
        release: signed
            .and_then(|s| s.events.iter().find(|e| e.kind == RELEASE_BINDING))
            .map(|e| e.id.to_hex()),
        next: signed
            .and_then(|s| {
                s.events
                    .iter()
                    .find(|e| (5000..6000).contains(&e.kind.as_u16()))
            })
            .map(|e| e.id.to_hex()),
        agreed: hex_list(&tally.agreed),
        // A member whose reveal did not open its commitment, or who committed twice, did not
        // back the agreed files either.
        disagreed: hex_list(
            tally
                .disagreed
                .keys()
                .chain(tally.invalid.keys())
                .chain(tally.equivocated.keys())
                .collect::<BTreeSet<_>>(),
        ),
        silent: hex_list(
            tally
                .silent
                .iter()
                .chain(&outcome.agreement.late)
                .collect::<BTreeSet<_>>(),
        ),
        failure: outcome.failure.clone(),
    }
}
