//! The member side of a quorum job request, for any DVM that holds a share: a runner before and
//! after its build, a wrapper around the ordinary DVM it wraps.
//!
//! Before doing any work, a member *admits* the request ([`QuorumMember::admit`]): it looks up
//! the mandate the request names, the repository's announcement (30617), its maintainer-signed
//! states (30618) and the repository's other mandates on the relays, and checks on its own
//! ([`admit_events`], pure):
//!
//! 1. the mandate is the one that counts for its repository (signed by a maintainer, newest,
//!    unexpired, naming this quorum and this member, allowing what will be signed, covering the
//!    job, for the repository a release is asked for);
//! 2. the request's author is one the mandate admits (`requester` tags; the quorum key itself
//!    always, for quorum chains);
//! 3. the evidence the request names (`source` param) ties its repository URL and commit to
//!    the maintainers (`quorum_proto::source::check`): the URL is one of the owner's `clone`
//!    URLs, the commit a ref's tip in a maintainer-signed state, still current.
//!
//! The caller then derives the job from the pipeline at the commit (the runner crate's
//! `derive`), builds, and takes part ([`QuorumMember::serve`]): commit-reveal and signing
//! ([`crate::member::take_part`]) of an attestation that names the evidence, and, when the
//! request asks, the release binding and the next step of a quorum chain.
//!
//! [`QuorumMember::serve_anchor`] is the same with no published request: the session is keyed by
//! an id every member derives alike (a git watcher quorum uses the id of the unsigned run
//! request it is about to sign), and the caller hands in the events to sign after the
//! attestation; the mandate must allow their kinds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::agreement::{BuildResult, JobEvidence, QUORUM_ATTESTATION};
use quorum_proto::chain;
use quorum_proto::mandate::{MANDATE, Mandate};
use quorum_proto::nip34::{REPO_ANNOUNCEMENT, RepoCoordinate, maintainer_set};
use quorum_proto::nip90::JobRequest;
use quorum_proto::quorum_job::{
    QuorumJobParams, QuorumReport, hex_list, next_step_request, release_binding,
};
use quorum_proto::release::RELEASE_BINDING;
use quorum_proto::source::{self, SourceError};
use quorum_threshold::KeyShare;

use crate::agreement::Agreement;
use crate::member::{self, MemberConfig, MemberError, MemberOutcome, QuorumJob};

/// Why a member refuses a quorum request, or cannot serve it. Each says which check failed.
#[derive(Debug, thiserror::Error)]
pub enum QuorumJobError {
    #[error("cannot reach the relays to look up mandate {mandate}: {reason}")]
    Lookup { mandate: EventId, reason: String },
    #[error("mandate {0} is not on the relays")]
    MandateNotFound(EventId),
    #[error("mandate {mandate}: {reason}")]
    Mandate { mandate: EventId, reason: String },
    #[error(
        "requester: {author} is not among the keys mandate {mandate} allows to request the \
         quorum's jobs"
    )]
    Requester { author: PublicKey, mandate: EventId },
    #[error(
        "source: the request names no evidence of its source (a `source` param with the \
         repository's announcement and a maintainer-signed state)"
    )]
    NoSource,
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("no key share for quorum {quorum} in {dir}: {reason}")]
    NoShare {
        quorum: PublicKey,
        dir: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Member(#[from] MemberError),
}

/// What a member checked before doing any work for a request: the mandate that counts, and
/// the NIP-34 evidence of the job's source.
#[derive(Debug, Clone)]
pub struct Admission {
    pub mandate_event: Event,
    pub mandate: Mandate,
    pub quorum: PublicKey,
    /// The request's quorum params.
    pub params: QuorumJobParams,
    /// The checked evidence of the source, when the caller asked for one.
    pub source: Option<AdmittedSource>,
}

/// The source evidence a member checked (`quorum_proto::source::Source`, owned).
#[derive(Debug, Clone)]
pub struct AdmittedSource {
    pub announcement: Event,
    pub state: Event,
    /// The refs of `state` whose tip is the commit.
    pub refs: Vec<String>,
    /// Under the mandate's `ancestor` rule: ref tips from one of which (per list) the commit
    /// must be reachable; the caller checks with git.
    pub ancestry: Vec<Vec<String>>,
}

impl Admission {
    /// The earliest time the quorum may date what it signs for `request`: no attestation
    /// predates the events it relies on (the request, the mandate, the announcement, the state).
    pub fn not_before(&self, request_created_at: Timestamp) -> Timestamp {
        let mut at = request_created_at.max(self.mandate_event.created_at);
        if let Some(source) = &self.source {
            at = at
                .max(source.announcement.created_at)
                .max(source.state.created_at);
        }
        at
    }
}

/// The kinds the quorum will sign for `request`: the attestation, the release binding when one
/// is asked for, and the next step's request of a quorum chain.
pub fn kinds_to_sign(request: &Event, params: &QuorumJobParams) -> Vec<Kind> {
    let mut needed = vec![QUORUM_ATTESTATION];
    if params.release.is_some() {
        needed.push(RELEASE_BINDING);
    }
    let next_kind = JobRequest::from_event(request).ok().and_then(|parsed| {
        chain::next_request(request, &parsed, EventId::all_zeros())
            .and_then(Result::ok)
            .map(|next| next.kind)
    });
    needed.extend(next_kind);
    needed
}

/// What the relays said about a request's mandate and repository.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The mandate the request names.
    pub named: Option<Event>,
    /// The repository's mandates (`#a`), for supersession.
    pub mandates: Vec<Event>,
    /// The owner's announcements of the repository.
    pub announcements: Vec<Event>,
    /// Repository states by its maintainers, and any the request names.
    pub states: Vec<Event>,
}

/// Whether a job comes from a repository's code (a build: its source evidence is required and
/// checked), or not (a watcher quorum's anchor, whose members read the state themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sourced {
    FromRepository,
    Anchor,
}

/// The pure admission check (see the module docs). `me` is the member, `author` the request's
/// signer, `job` the pipeline job the request runs, `needed` the kinds the quorum will sign.
#[allow(clippy::too_many_arguments)]
pub fn admit_events(
    me: &PublicKey,
    author: &PublicKey,
    params: &QuorumJobParams,
    job: Option<&str>,
    needed: &[Kind],
    sourced: Sourced,
    lookup: &Lookup,
    now: Timestamp,
) -> Result<Admission, QuorumJobError> {
    let id = params.mandate;
    let refuse = |reason: String| QuorumJobError::Mandate {
        mandate: id,
        reason,
    };
    let named = lookup
        .named
        .as_ref()
        .filter(|e| e.id == id)
        .ok_or(QuorumJobError::MandateNotFound(id))?;
    named
        .verify()
        .map_err(|_| refuse("bad id or signature".into()))?;
    let mandate = Mandate::from_event(named).map_err(|e| refuse(e.to_string()))?;
    let quorum = mandate
        .quorum
        .ok_or_else(|| refuse("is a DKG proposal, which authorises nothing".into()))?;
    let maintainers = maintainer_set(
        &mandate.repo.owner,
        &mandate.repo.identifier,
        &lookup.announcements,
    );
    if !maintainers.contains(&named.pubkey) {
        return Err(refuse(format!(
            "is signed by {}, who is not a maintainer of {}",
            named.pubkey, mandate.repo
        )));
    }
    let mut mandates = lookup.mandates.clone();
    if !mandates.iter().any(|e| e.id == named.id) {
        mandates.push(named.clone());
    }
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
    if mandate.member_index(me).is_none() {
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
    if sourced == Sourced::FromRepository && !mandate.rules.admits(author, Some(&quorum)) {
        return Err(QuorumJobError::Requester {
            author: *author,
            mandate: id,
        });
    }
    let source = match sourced {
        Sourced::Anchor => None,
        Sourced::FromRepository => {
            let named = params.source.as_ref().ok_or(QuorumJobError::NoSource)?;
            let events: Vec<Event> = lookup
                .announcements
                .iter()
                .chain(&lookup.states)
                .cloned()
                .collect();
            let checked = source::check(
                &mandate.repo,
                &named.url,
                &params.commit,
                mandate.rules.source,
                (named.announcement, named.state),
                &events,
                true,
            )?;
            Some(AdmittedSource {
                announcement: checked.announcement.clone(),
                state: checked.state.clone(),
                refs: checked.refs.clone(),
                ancestry: checked.ancestry.clone(),
            })
        }
    };
    Ok(Admission {
        mandate_event: named.clone(),
        mandate,
        quorum,
        params: params.clone(),
        source,
    })
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

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// Looks up and checks a request by `author` before any work is done for it (see the
    /// module docs). `needed` are the kinds the quorum will sign ([`kinds_to_sign`]).
    pub async fn admit(
        &self,
        author: &PublicKey,
        params: &QuorumJobParams,
        job: Option<&str>,
        needed: &[Kind],
        sourced: Sourced,
    ) -> Result<Admission, QuorumJobError> {
        let lookup = self.lookup(params).await?;
        let admission = admit_events(
            &self.keys.public_key(),
            author,
            params,
            job,
            needed,
            sourced,
            &lookup,
            Timestamp::now(),
        )?;
        // A share serves the repository it was made for, whoever else mandates its key: a
        // stranger's mandate of this quorum for the stranger's own repository gets nothing.
        let refuse = |reason: String| QuorumJobError::Mandate {
            mandate: params.mandate,
            reason,
        };
        match crate::keygen::repository_of(&self.share_dir, &admission.quorum) {
            Ok(Some(repo)) if repo == admission.mandate.repo => Ok(admission),
            Ok(Some(repo)) => Err(refuse(format!(
                "is for {}, but this member's share of quorum {} was made for {repo}",
                admission.mandate.repo, admission.quorum
            ))),
            Ok(None) => Err(refuse(format!(
                "names quorum {}, for which this member has no record of the repository its \
                 share was made for",
                admission.quorum
            ))),
            Err(err) => Err(refuse(format!("cannot read the share's record: {err}"))),
        }
    }

    /// The mandate a request names, the repository's mandates, announcements and states.
    pub async fn lookup(&self, params: &QuorumJobParams) -> Result<Lookup, QuorumJobError> {
        let id = params.mandate;
        let failed = |e: nostr_sdk::client::Error| QuorumJobError::Lookup {
            mandate: id,
            reason: e.to_string(),
        };
        let client = crate::channel::connect(&self.relays, None)
            .await
            .map_err(|e| QuorumJobError::Lookup {
                mandate: id,
                reason: e.to_string(),
            })?;
        let timeout = self.lookup_timeout;
        let looked_up = async {
            let mut lookup = Lookup::default();
            let named = client
                .fetch_events(Filter::new().id(id).kind(MANDATE), timeout)
                .await?;
            lookup.named = named.into_iter().find(|e| e.id == id);
            let Some(Ok(mandate)) = lookup.named.as_ref().map(Mandate::from_event) else {
                return Ok(lookup);
            };
            let repo: &RepoCoordinate = &mandate.repo;
            lookup.announcements = client
                .fetch_events(quorum_proto::nip34::announcements_of(repo), timeout)
                .await?
                .to_vec();
            lookup.mandates = client
                .fetch_events(quorum_proto::mandate::mandates_of(repo), timeout)
                .await?
                .to_vec();
            let maintainers = maintainer_set(&repo.owner, &repo.identifier, &lookup.announcements);
            let mut states = client
                .fetch_events(quorum_proto::nip34::states_of(repo, maintainers), timeout)
                .await?
                .to_vec();
            // The named evidence, whoever signed it, so that a refusal can say what it is.
            if let Some(named) = &params.source {
                let wanted: BTreeSet<EventId> = [named.announcement, named.state]
                    .into_iter()
                    .filter(|id| {
                        !states
                            .iter()
                            .chain(&lookup.announcements)
                            .any(|e| e.id == *id)
                    })
                    .collect();
                if !wanted.is_empty() {
                    for event in client
                        .fetch_events(Filter::new().ids(wanted), timeout)
                        .await?
                    {
                        if event.kind == REPO_ANNOUNCEMENT {
                            lookup.announcements.push(event);
                        } else {
                            states.push(event);
                        }
                    }
                }
            }
            lookup.states = states;
            Ok(lookup)
        }
        .await;
        client.shutdown().await;
        looked_up.map_err(failed)
    }

    /// Takes part in the quorum job `request` (admitted as `admission`) with this member's
    /// `result`. `evidence` is the job's source as the member derived it (the attestation names
    /// it); `wrapped` the inner kind when a wrapper's inner DVM did the work.
    pub async fn serve(
        &self,
        admission: &Admission,
        request: &Event,
        evidence: Option<JobEvidence>,
        wrapped: Option<u16>,
        result: BuildResult,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        let parsed = JobRequest::from_event(request).ok();
        let release = admission.params.release.clone();
        let commit = admission.params.commit.clone();
        self.take_part(
            admission,
            request.id,
            admission.not_before(request.created_at),
            evidence,
            wrapped,
            result,
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
    /// the next step's request. The admission must have allowed 8708 and every extra kind.
    pub async fn serve_anchor(
        &self,
        admission: &Admission,
        job: EventId,
        not_before: Timestamp,
        result: BuildResult,
        extra: Vec<UnsignedEvent>,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        self.take_part(
            admission,
            job,
            not_before.max(admission.mandate_event.created_at),
            None,
            None,
            result,
            |_, _, _| extra.clone(),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn take_part(
        &self,
        admission: &Admission,
        job: EventId,
        not_before: Timestamp,
        evidence: Option<JobEvidence>,
        wrapped: Option<u16>,
        result: BuildResult,
        extra: impl Fn(&QuorumJob, PublicKey, &Agreement) -> Vec<UnsignedEvent>,
    ) -> Result<(QuorumReport, MemberOutcome), QuorumJobError> {
        let quorum = admission.quorum;
        let share = load_share(&self.share_dir, &quorum)?;
        let quorum_job = QuorumJob {
            job,
            mandate: admission.mandate.clone(),
            mandate_id: admission.mandate_event.id,
            commit: admission.params.commit.clone(),
            result,
            evidence,
            wrapped,
            not_before,
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
        let report = report(&quorum, admission.mandate_event.id, &outcome);
        Ok((report, outcome))
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

#[cfg(test)]
mod tests {
    use quorum_proto::mandate::{Keygen, MandateRules, Member};
    use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
    use quorum_proto::quorum_job::SourceRef;

    use super::*;

    const URL: &str = "https://git.example/app.git";
    const COMMIT: &str = "1111111111111111111111111111111111111111";

    struct World {
        owner: Keys,
        members: Vec<Keys>,
        router: Keys,
        lookup: Lookup,
        params: QuorumJobParams,
    }

    fn world(rules: MandateRules) -> World {
        let owner = Keys::generate();
        let members: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
        let router = Keys::generate();
        let repo = RepoCoordinate::new(owner.public_key(), "app");
        let mandate = Mandate {
            repo: repo.clone(),
            pipeline: ".quorum/pipeline.yml".into(),
            jobs: vec!["build".into()],
            quorum: Some(Keys::generate().public_key()),
            members: members
                .iter()
                .enumerate()
                .map(|(i, k)| Member::new(k.public_key(), i as u16 + 1))
                .collect(),
            threshold: 2,
            keygen: Keygen::Dkg,
            allow: [8708u16, 8700].into_iter().collect(),
            expiration: Timestamp::now() + 3600u64,
            rules,
            content: String::new(),
        };
        let mandate = mandate
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&owner)
            .unwrap();
        let mut announcement = RepositoryAnnouncement::new("app");
        announcement.clone = vec![URL.into()];
        let announcement = announcement
            .to_event_builder()
            .sign_with_keys(&owner)
            .unwrap();
        let state = RepositoryState::new("app")
            .with_ref("refs/heads/main", COMMIT)
            .unwrap()
            .to_event_builder()
            .sign_with_keys(&owner)
            .unwrap();
        let params = QuorumJobParams {
            mandate: mandate.id,
            commit: COMMIT.into(),
            release: None,
            source: Some(SourceRef {
                announcement: announcement.id,
                state: state.id,
                url: URL.into(),
            }),
        };
        World {
            owner,
            members,
            router,
            lookup: Lookup {
                named: Some(mandate.clone()),
                mandates: vec![mandate],
                announcements: vec![announcement],
                states: vec![state],
            },
            params,
        }
    }

    fn admit(
        w: &World,
        author: &Keys,
        params: &QuorumJobParams,
    ) -> Result<Admission, QuorumJobError> {
        admit_events(
            &w.members[0].public_key(),
            &author.public_key(),
            params,
            Some("build"),
            &[QUORUM_ATTESTATION],
            Sourced::FromRepository,
            &w.lookup,
            Timestamp::now(),
        )
    }

    #[test]
    fn the_maintainers_own_request_is_admitted_with_its_evidence() {
        let w = world(MandateRules::default());
        let admission = admit(&w, &w.router, &w.params).unwrap();
        let source = admission.source.unwrap();
        assert_eq!(source.refs, ["refs/heads/main"]);
        assert!(source.ancestry.is_empty());
        assert_eq!(admission.quorum, admission.mandate.quorum.unwrap());
    }

    #[test]
    fn each_failed_check_is_named() {
        // Requester: a mandate naming its router refuses a stranger, not the router.
        let w = world(MandateRules {
            requesters: vec![Keys::generate().public_key()],
            ..MandateRules::default()
        });
        let err = admit(&w, &w.router, &w.params).unwrap_err().to_string();
        assert!(err.starts_with("requester:"), "{err}");

        let w = world(MandateRules::default());
        // Source: none named; a fork URL; a commit no state names.
        let mut none = w.params.clone();
        none.source = None;
        let err = admit(&w, &w.router, &none).unwrap_err().to_string();
        assert!(
            err.starts_with("source:") && err.contains("names no evidence"),
            "{err}"
        );
        let mut fork = w.params.clone();
        fork.source.as_mut().unwrap().url = "https://evil.example/app.git".into();
        let err = admit(&w, &w.router, &fork).unwrap_err().to_string();
        assert!(err.contains("not one of the clone URLs"), "{err}");
        let mut other = w.params.clone();
        other.commit = "2".repeat(40);
        let err = admit(&w, &w.router, &other).unwrap_err().to_string();
        assert!(err.contains("not the tip of any ref"), "{err}");

        // Mandate: a stranger's mandate for the maintainer's repository counts for nothing.
        let mut w = world(MandateRules::default());
        let stranger = Keys::generate();
        let forged = Mandate::from_event(w.lookup.named.as_ref().unwrap())
            .unwrap()
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&stranger)
            .unwrap();
        w.params.mandate = forged.id;
        w.lookup.named = Some(forged);
        let err = admit(&w, &w.router, &w.params).unwrap_err().to_string();
        assert!(err.contains("not a maintainer"), "{err}");
        let _ = &w.owner;
    }

    #[test]
    fn a_watcher_anchor_needs_no_source_and_no_requester() {
        let w = world(MandateRules {
            requesters: vec![Keys::generate().public_key()],
            ..MandateRules::default()
        });
        let mut params = w.params.clone();
        params.source = None;
        let admission = admit_events(
            &w.members[1].public_key(),
            &w.members[1].public_key(),
            &params,
            None,
            &[QUORUM_ATTESTATION],
            Sourced::Anchor,
            &w.lookup,
            Timestamp::now(),
        )
        .unwrap();
        assert!(admission.source.is_none());
    }
}
