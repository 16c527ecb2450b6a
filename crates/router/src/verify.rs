//! `quorum verify`: is this file a release of the repository the user expects, built by a
//! quorum from the code its maintainers signed?
//!
//! Verification is a pure judgement ([`judge`]) over a pool of signed events, gathered from the
//! relays ([`gather`]) and/or read from a verification bundle (`quorum_proto::bundle`), so it
//! works the same online and offline, years later, after relays dropped the expired mandate.
//! It re-checks the whole trust chain (docs/protocol.md §16; §11 lists what `quorum verify` checks) for the repository the user names
//! (`--repo`); without one it reports what it found and fails closed:
//!
//! 1. **Bindings.** Every release binding (8700) that lists the file's sha256 is a candidate;
//!    those for another repository are reported as warnings, never the verdict (a stranger's
//!    newer binding changes nothing). The file verifies if any binding for the expected
//!    repository passes every check below.
//! 2. **Attestation.** The quorum key signed an attestation (8708) that lists these bytes for
//!    the binding's commit, names the job request, the mandate and the source evidence.
//! 3. **Source.** The request the quorum answered fetched one of the owner's announced clone
//!    URLs at the commit; a maintainer-signed state (30618) had the commit at a ref tip; the
//!    request named exactly this evidence, job, mandate and release (the run id recomputed
//!    from the URL, commit and plan hash); the attestation is not dated before any of it.
//! 4. **Mandate.** A maintainer's mandate authorised this quorum key for the repository when
//!    the attestation was made (not superseded, not revoked, not expired), covering the job and
//!    allowing releases; it admitted the request's author.
//! 5. **Members.** At least `t` members agreed, each a member of the mandate. A member named
//!    as agreeing whose own commitments and reveals (8705/8706) dated no later than the
//!    attestation contradict it (two commitments, another plan, other bytes) is a failure;
//!    what anyone publishes later is no evidence against the release. The other members are
//!    reported from everything on record: disagreed, silent or late.
//! 6. **Approvals.** When the request the quorum answered names approval gates its release
//!    depends on, the binding names an approved request (8701) for each: the quorum signed it
//!    only after the maintainers approved, and a refused approval does not verify.
//! 7. **Policy.** What the user requires: a minimum threshold, keys made by DKG (as the
//!    maintainers' mandate that made the key says), a minimum of distinct confirmed operators
//!    among the agreeing members, and by default a quorum at all (a single builder's release
//!    fails unless allowed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient};
use quorum_proto::agreement::{
    BuildResult, COMMITMENT, QUORUM_ATTESTATION, QuorumAttestation, REVEAL, SignedCommitment,
    SignedReveal, Tally, TallyOutcome,
};
use quorum_proto::approval::{
    APPROVAL, APPROVAL_REQUEST, ApprovalRequest, ApprovalTally, GateStatus, REJECTION,
};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::bundle::{self, MAX_BUNDLE_BYTES, VerificationBundle};
use quorum_proto::image::ImageRef;
use quorum_proto::mandate::{Keygen, MANDATE, Mandate, select_mandate};
use quorum_proto::nip34::{REPO_ANNOUNCEMENT, REPO_STATE, RepoCoordinate, maintainer_set};
use quorum_proto::nip90::{JobRequest, JobResult};
use quorum_proto::nostr::{Alphabet, Event, EventId, Filter, Kind, SingleLetterTag, Timestamp};
use quorum_proto::quorum_job::{QuorumJobParams, hex_list};
use quorum_proto::release::{FILE_METADATA, FileMetadata, RELEASE_BINDING, ReleaseBinding};
use quorum_proto::step::{StepJob, StepReport};
use quorum_proto::{operator, source};
use serde::Serialize;

/// How long one relay query may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long fetching one bundle from one URL may take: release events name bundles, and
/// anyone can publish release events, so a slow server must not hold the verdict up.
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The most bundles fetched for one verification (the first named; duplicates count once).
const MAX_BUNDLES: usize = 8;
/// NIP-82 software asset, which may name a bundle too.
const SOFTWARE_ASSET: Kind = Kind::Custom(3063);

/// Why `verify` could not reach a verdict (a failed check is a verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot query the relays: {0}")]
    Relay(#[from] ClientError),
    #[error("bundle {}: {reason}", path.display())]
    Bundle { path: PathBuf, reason: String },
    #[error("image {0}")]
    Image(String),
}

/// What the user expects of a release, and requires beyond the trust chain.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// The repository the file must be a release of (`--repo`). Without it nothing verifies.
    pub repo: Option<RepoCoordinate>,
    /// The least `t` the mandate's quorum may have.
    pub min_threshold: Option<u16>,
    /// The least number of distinct confirmed operators (`quorum_proto::operator`) among the
    /// members that agreed.
    pub min_operators: Option<usize>,
    /// Refuse quorum keys that a dealer made (who held the whole key), or whose making is not
    /// on record.
    pub require_dkg: bool,
    /// Accept a release signed by a single builder's key instead of a quorum.
    pub allow_single_builder: bool,
}

/// A binding found for the file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Candidate {
    pub release: String,
    pub signer: String,
    pub repo: String,
    pub commit: String,
}

/// The source evidence a release rests on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceReport {
    /// The owner's announcement (30617).
    pub announcement: String,
    /// The maintainer-signed state (30618) and who signed it.
    pub state: String,
    pub state_signer: String,
    /// The URL the members fetched, one of the announcement's clone URLs.
    pub url: String,
    /// The refs of the state whose tip is the commit. Empty when the commit was only
    /// reachable from one (the mandate's `ancestor` rule): the members checked that with git,
    /// this verifier cannot offline.
    pub refs: Vec<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Every check held for a release of the expected repository.
    pub ok: bool,
    pub sha256: String,
    /// The repository the user expects (`--repo`).
    pub expected_repo: Option<String>,
    /// Every binding that lists these bytes, whoever signed it.
    pub candidates: Vec<Candidate>,
    /// The release binding's event id (the one that verified, or the one judged).
    pub release: Option<String>,
    /// Who signed the release.
    pub signer: Option<String>,
    pub repo: Option<String>,
    pub commit: Option<String>,
    pub run: Option<String>,
    /// The artifact's name in the release.
    pub name: Option<String>,
    /// Builders whose signed result names exactly these bytes (for a quorum-signed release,
    /// the quorum key once its attestation lists them).
    pub attested_by: Vec<String>,
    /// Checks that did not hold, with why.
    pub problems: Vec<String>,
    /// What was found but does not decide the verdict (other repositories' bindings, …).
    pub warnings: Vec<String>,
    /// Where the file can be downloaded (NIP-94).
    pub urls: Vec<String>,
    /// The quorum key (hex) of a quorum-signed release.
    pub quorum: Option<String>,
    /// The quorum attestation (8708) the release names.
    pub attestation: Option<String>,
    /// The job request the quorum answered, and who signed it.
    pub request: Option<String>,
    pub requester: Option<String>,
    /// The pipeline job, its file and plan hash, as the attestation names them.
    pub job: Option<String>,
    pub pipeline: Option<String>,
    pub plan_hash: Option<String>,
    /// The NIP-34 evidence of the source.
    pub source: Option<SourceReport>,
    /// "runners", or "wrappers of kind K DVMs".
    pub built_by: Option<String>,
    /// The mandate (8704) the attestation names.
    pub mandate: Option<String>,
    /// Who signed that mandate (hex).
    pub mandate_signer: Option<String>,
    /// The mandate's `t` of `n`.
    pub threshold: Option<Threshold>,
    /// How the quorum key was made: `dkg`, `dealer` (one party held the whole key), or
    /// `unknown` (no mandate on record says).
    pub keygen: Option<String>,
    /// Who runs each member that agreed (hex → operator hex, or `null` when no operator
    /// confirms it: the DVM's announcement and the operator's signed list must both say so).
    pub operators: BTreeMap<String, Option<String>>,
    /// How many distinct confirmed operators run the members that agreed.
    pub distinct_operators: Option<usize>,
    /// Members (hex) the attestation names as agreeing.
    pub agreed: Vec<String>,
    /// Members whose reveal reports an attested file otherwise, whose reveal does not open
    /// their commitment, who built another plan, or who committed twice (equivocated).
    pub disagreed: Vec<String>,
    /// Members with no reveal on record.
    pub silent: Vec<String>,
    /// Members the attestation does not name whose reveal matches it (they revealed after the
    /// quorum tallied, usually after it signed).
    pub late: Vec<String>,
    /// The verification bundles read (sha256).
    pub bundles: Vec<String>,
    /// The approval requests (8701) of the gates the release depended on, each approved.
    pub approvals: Vec<String>,
    /// For an image (`verify --image`): the reference whose manifest was fetched and
    /// re-hashed; `sha256` is then the manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A mandate's threshold: `t` of the `n` members must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub t: u16,
    pub n: u16,
}

impl Verification {
    fn new(sha256: String, expected: Option<&RepoCoordinate>) -> Self {
        Verification {
            ok: false,
            sha256,
            expected_repo: expected.map(ToString::to_string),
            candidates: Vec::new(),
            release: None,
            signer: None,
            repo: None,
            commit: None,
            run: None,
            name: None,
            attested_by: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            urls: Vec::new(),
            quorum: None,
            attestation: None,
            request: None,
            requester: None,
            job: None,
            pipeline: None,
            plan_hash: None,
            source: None,
            built_by: None,
            mandate: None,
            mandate_signer: None,
            threshold: None,
            keygen: None,
            operators: BTreeMap::new(),
            distinct_operators: None,
            agreed: Vec::new(),
            disagreed: Vec::new(),
            silent: Vec::new(),
            late: Vec::new(),
            bundles: Vec::new(),
            approvals: Vec::new(),
            image: None,
        }
    }

    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }
}

/// Hashes `path` and verifies it against the events on `client`'s relays (when given) and in
/// the verification `bundle` file (when given; bundles the release events name are fetched
/// from Blossom too). A directory is taken as an OCI image layout (as `quorum run --out`
/// saves an `oci:` artifact): every blob in it is re-hashed and its one image manifest's
/// digest is judged, as [`verify_image`] judges one fetched from a registry.
pub async fn verify_file(
    client: Option<&JobClient>,
    path: &Path,
    bundle: Option<&Path>,
    expect: &Expectation,
) -> Result<Verification, VerifyError> {
    let digest = if path.is_dir() {
        let dir = path.to_path_buf();
        let layout = tokio::task::spawn_blocking(move || quorum_oci::build::read_layout(&dir))
            .await
            .map_err(|e| VerifyError::Image(format!("reading {}: {e}", path.display())))?
            .map_err(|e| {
                VerifyError::Image(format!("{} is not an image layout: {e}", path.display()))
            })?;
        Sha256Hex::parse(layout.manifest.hex()).map_err(|e| VerifyError::Image(e.to_string()))?
    } else {
        sha256_of(path)?
    };
    verify_digest(client, digest, bundle, expect).await
}

/// Verifies an OCI image released as an artifact (`oci:` in a pipeline): fetches the manifest
/// `image` pins (`NAME@sha256:…`) from the registry it names (`quorum blossom`'s `/v2/` or any
/// other; plain HTTP on loopback or for a host in `insecure`), re-hashes it, and judges the
/// manifest digest exactly as [`verify_file`] judges a file's sha256. A registry that serves
/// other bytes, or bytes that are not an OCI image manifest, fails the verdict, named.
pub async fn verify_image(
    client: Option<&JobClient>,
    image: &ImageRef,
    insecure: Vec<String>,
    bundle: Option<&Path>,
    expect: &Expectation,
) -> Result<Verification, VerifyError> {
    let digest = image.digest.clone().ok_or_else(|| {
        VerifyError::Image(format!("{image} names no digest: give NAME@sha256:…"))
    })?;
    let sha = Sha256Hex::parse(digest.hex()).map_err(|e| VerifyError::Image(e.to_string()))?;
    let scratch = tempfile::tempdir().map_err(|source| VerifyError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    let dest = scratch.path().join("manifest");
    // No Blossom server of our own: the registry in the reference is asked, as `skopeo` or
    // `podman pull` would, and every byte re-hashed against the pinned digest.
    let fetcher = quorum_oci::Fetcher::new(Vec::new(), insecure);
    let fetched = fetcher
        .fetch(
            image,
            &digest,
            quorum_oci::fetch::BlobKind::Manifest,
            quorum_oci::fetch::MAX_MANIFEST_BYTES,
            &dest,
        )
        .await;
    let problem = match fetched {
        Err(e) => Some(format!("image manifest {image}: {e}")),
        Ok(_) => std::fs::read(&dest)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes)
                    .map_err(|e| e.to_string())
            })
            .err()
            .map(|e| format!("{digest} is not an OCI image manifest: {e}")),
    };
    let mut verification = verify_digest(client, sha, bundle, expect).await?;
    verification.image = Some(image.to_string());
    if let Some(problem) = problem {
        verification.problem(problem);
        verification.ok = false;
    }
    Ok(verification)
}

/// Verifies `digest` (a file's sha256 or an image's manifest digest) against the events on
/// `client`'s relays and in the `bundle` file.
async fn verify_digest(
    client: Option<&JobClient>,
    digest: Sha256Hex,
    bundle: Option<&Path>,
    expect: &Expectation,
) -> Result<Verification, VerifyError> {
    let mut pool = Vec::new();
    let mut bundles = Vec::new();
    if let Some(path) = bundle {
        let bytes = read_bounded(path).map_err(|reason| VerifyError::Bundle {
            path: path.to_path_buf(),
            reason,
        })?;
        let parsed = VerificationBundle::from_json(&bytes).map_err(|e| VerifyError::Bundle {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        bundles.push(Sha256Hex::from_bytes(sha2_digest(&bytes)));
        pool.extend(parsed.events);
    }
    let mut unread = Vec::new();
    if let Some(client) = client {
        unread = gather(client, &digest, expect, &mut pool, &mut bundles).await?;
    }
    let mut verification = judge(&digest, &pool, expect);
    verification.bundles = bundles.iter().map(Sha256Hex::to_hex).collect();
    verification.warnings.extend(unread);
    Ok(verification)
}

/// Adds to `pool` every event on the relays that verifying `digest` may need, and the events of
/// the bundles the release events name (fetched from Blossom, re-hashed). Returns what it could
/// not read (named bundles no URL served), for the verdict's warnings.
pub async fn gather(
    client: &JobClient,
    digest: &Sha256Hex,
    expect: &Expectation,
    pool: &mut Vec<Event>,
    bundles: &mut Vec<Sha256Hex>,
) -> Result<Vec<String>, VerifyError> {
    let sha = digest.to_hex();
    let mut unread = Vec::new();
    let x = SingleLetterTag::lowercase(Alphabet::X);
    pool.extend(
        fetch(
            client,
            Filter::new()
                .kinds([FILE_METADATA, SOFTWARE_ASSET, RELEASE_BINDING])
                .custom_tag(x, &sha),
        )
        .await?,
    );
    // Bundles first: they may hold what the relays dropped.
    let named: Vec<(Sha256Hex, Vec<String>)> = pool
        .iter()
        .filter(|e| e.kind == FILE_METADATA || e.kind == SOFTWARE_ASSET)
        .flat_map(bundle::bundles_named)
        .collect();
    let mut tried = BTreeSet::new();
    for (sha, urls) in named {
        if bundles.contains(&sha) || !tried.insert(sha) {
            continue;
        }
        if tried.len() > MAX_BUNDLES {
            unread.push(format!(
                "bundle {sha} was not fetched: {MAX_BUNDLES} named bundles were tried already"
            ));
            break;
        }
        match fetch_bundle(&sha, &urls).await {
            Ok(found) if found.covers(digest) => {
                bundles.push(sha);
                pool.extend(found.events);
            }
            Ok(_) => tracing::debug!(%sha, "a named bundle is for other files"),
            Err(reason) => {
                tracing::debug!(%sha, "cannot read a named bundle: {reason}");
                unread.push(format!(
                    "the verification bundle {sha} the release names could not be read ({reason}); \
                     if the relays no longer hold what it holds, pass a copy with --bundle"
                ));
            }
        }
    }
    let bindings: Vec<ReleaseBinding> = pool
        .iter()
        .filter(|e| e.kind == RELEASE_BINDING)
        .filter_map(|e| ReleaseBinding::from_event(e).ok())
        .filter(|b| b.contains(digest))
        .filter(|b| expect.repo.as_ref().is_none_or(|r| *r == b.repo))
        .collect();
    let attestations: Vec<EventId> = bindings
        .iter()
        .flat_map(|b| b.attestations.iter().map(|a| a.result))
        .collect();
    add_ids(client, pool, attestations).await?;
    // The approval requests the bindings name, and the maintainers' verdicts on them.
    let approvals: Vec<EventId> = bindings
        .iter()
        .flat_map(|b| b.approvals.iter().copied())
        .collect();
    if !approvals.is_empty() {
        add_ids(client, pool, approvals.clone()).await?;
        pool.extend(
            fetch(
                client,
                Filter::new().kinds([APPROVAL, REJECTION]).events(approvals),
            )
            .await?,
        );
    }
    let mut ids = Vec::new();
    let mut jobs = Vec::new();
    for attestation in pool
        .iter()
        .filter(|e| e.kind == QUORUM_ATTESTATION)
        .filter_map(|e| QuorumAttestation::from_event(e).ok())
    {
        ids.push(attestation.mandate);
        ids.push(attestation.job);
        jobs.push(attestation.job);
        if let Some(evidence) = &attestation.evidence {
            ids.push(evidence.announcement);
            ids.push(evidence.state);
        }
    }
    add_ids(client, pool, ids).await?;
    let repos: BTreeSet<RepoCoordinate> = bindings.iter().map(|b| b.repo.clone()).collect();
    for repo in repos {
        let more = fetch(client, quorum_proto::mandate::mandates_of(&repo)).await?;
        pool.extend(more);
        let more = fetch(client, quorum_proto::nip34::announcements_of(&repo)).await?;
        pool.extend(more);
    }
    if !jobs.is_empty() {
        let more = fetch(
            client,
            Filter::new().kinds([COMMITMENT, REVEAL]).events(jobs),
        )
        .await?;
        pool.extend(more);
    }
    // Who runs the members: their announcements, then the lists of the operators they claim.
    let members: Vec<quorum_proto::nostr::PublicKey> = pool
        .iter()
        .filter(|e| e.kind == QUORUM_ATTESTATION)
        .filter_map(|e| QuorumAttestation::from_event(e).ok())
        .flat_map(|a| a.agreed)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !members.is_empty() {
        pool.extend(
            fetch(
                client,
                operator::announcement_filter(members.iter().copied()),
            )
            .await?,
        );
        let claimed = operator::claimed_operators(&members, pool);
        if !claimed.is_empty() {
            pool.extend(fetch(client, operator::list_filter(claimed)).await?);
        }
    }
    Ok(unread)
}

/// The verdict on `digest` from the signed events in `pool` (relays, bundles): pure.
pub fn judge(digest: &Sha256Hex, pool: &[Event], expect: &Expectation) -> Verification {
    let pool = Pool::new(pool);
    let mut verification = Verification::new(digest.to_hex(), expect.repo.as_ref());
    for file in pool
        .of_kind(FILE_METADATA)
        .filter_map(|e| FileMetadata::from_event(e).ok())
    {
        if file.sha256 == *digest {
            for url in file.urls() {
                if !verification.urls.iter().any(|u| u == url) {
                    verification.urls.push(url.to_string());
                }
            }
        }
    }
    let mut bindings: Vec<(&Event, ReleaseBinding)> = pool
        .of_kind(RELEASE_BINDING)
        .filter_map(|e| ReleaseBinding::from_event(e).ok().map(|b| (e, b)))
        .filter(|(_, b)| b.contains(digest))
        .collect();
    // Newest first, so that of several that pass, the newest is reported.
    bindings.sort_by(|(x, _), (y, _)| y.created_at.cmp(&x.created_at).then(x.id.cmp(&y.id)));
    verification.candidates = bindings
        .iter()
        .map(|(e, b)| Candidate {
            release: e.id.to_hex(),
            signer: e.pubkey.to_hex(),
            repo: b.repo.to_string(),
            commit: b.commit.clone(),
        })
        .collect();
    if bindings.is_empty() {
        verification.problem("no release lists these bytes");
        return verification;
    }
    let Some(expected) = &expect.repo else {
        let repos: BTreeSet<String> = bindings.iter().map(|(_, b)| b.repo.to_string()).collect();
        verification.problem(format!(
            "no repository was named, so nothing can verify: releases of these bytes name {}; \
             pass --repo with the repository you expect (30617:<owner hex>:<d> or its naddr)",
            repos.into_iter().collect::<Vec<_>>().join(", ")
        ));
        return verification;
    };
    let mut verdicts = Vec::new();
    for (event, binding) in &bindings {
        if binding.repo != *expected {
            verification.warnings.push(format!(
                "release {} by {} is for another repository ({}): ignored",
                event.id,
                event.pubkey.to_hex(),
                binding.repo
            ));
            continue;
        }
        let mut candidate = Verification::new(digest.to_hex(), Some(expected));
        check_binding(&pool, event, binding, digest, expect, &mut candidate);
        candidate.ok = !candidate.attested_by.is_empty() && candidate.problems.is_empty();
        verdicts.push(candidate);
    }
    let Some(index) = verdicts
        .iter()
        .position(|v| v.ok)
        .or((!verdicts.is_empty()).then_some(0))
    else {
        verification.problem(format!(
            "no release of {expected} lists these bytes (only releases of other repositories do)"
        ));
        return verification;
    };
    let others = verdicts.len() - 1;
    let chosen = verdicts.swap_remove(index);
    // The warnings about other repositories' releases, then the chosen release's own.
    let mut warnings = verification.warnings;
    warnings.extend(chosen.warnings.iter().cloned());
    let mut chosen = Verification {
        candidates: verification.candidates,
        urls: verification.urls,
        warnings,
        ..chosen
    };
    if others > 0 {
        chosen.warnings.push(format!(
            "{others} other release(s) of {expected} list these bytes too{}",
            if chosen.ok {
                " (not needed for the verdict)"
            } else {
                "; none verifies either"
            }
        ));
    }
    chosen
}

/// The events a judgement looks at, by id and kind.
struct Pool<'a> {
    events: Vec<&'a Event>,
    by_id: BTreeMap<EventId, &'a Event>,
}

impl<'a> Pool<'a> {
    fn new(events: &'a [Event]) -> Self {
        // Only events whose id and signature hold are evidence of anything; an event read from
        // a relay and again from a bundle is one event (not "another release").
        let mut seen = std::collections::HashSet::new();
        let events: Vec<&Event> = events
            .iter()
            .filter(|e| seen.insert(e.id) && e.verify().is_ok())
            .collect();
        let by_id = events.iter().map(|e| (e.id, *e)).collect();
        Pool { events, by_id }
    }

    fn get(&self, id: &EventId) -> Option<&'a Event> {
        self.by_id.get(id).copied()
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &'a Event> + '_ {
        self.events.iter().copied().filter(move |e| e.kind == kind)
    }

    fn owned_all(&self) -> Vec<Event> {
        self.events.iter().map(|e| (*e).clone()).collect()
    }

    fn owned(&self, kinds: &[Kind]) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| kinds.contains(&e.kind))
            .map(|e| (*e).clone())
            .collect()
    }
}

fn check_binding(
    pool: &Pool<'_>,
    event: &Event,
    binding: &ReleaseBinding,
    digest: &Sha256Hex,
    expect: &Expectation,
    verification: &mut Verification,
) {
    verification.release = Some(event.id.to_hex());
    verification.signer = Some(event.pubkey.to_hex());
    verification.repo = Some(binding.repo.to_string());
    verification.commit = Some(binding.commit.clone());
    verification.run = Some(binding.run.clone());
    verification.name = binding
        .artifacts
        .iter()
        .find(|a| a.sha256 == *digest)
        .map(|a| a.name.clone());
    if binding
        .attestations
        .iter()
        .any(|a| a.builder == event.pubkey)
    {
        check_quorum(pool, event, binding, digest, expect, verification);
    } else if expect.allow_single_builder {
        check_builders(pool, event, binding, digest, verification);
    } else {
        verification.problem(format!(
            "release {} is signed by {}, not by a quorum: no independent builders agreed on \
             these bytes (pass --allow-single-builder to accept a single builder's word)",
            event.id,
            event.pubkey.to_hex()
        ));
    }
}

/// A release without a quorum: each attestation is a runner's step result naming these bytes.
fn check_builders(
    pool: &Pool<'_>,
    release: &Event,
    binding: &ReleaseBinding,
    digest: &Sha256Hex,
    verification: &mut Verification,
) {
    let sha = digest.to_hex();
    for attestation in &binding.attestations {
        let Some(result) = pool.get(&attestation.result) else {
            verification.problem(format!("result {} not found", attestation.result));
            continue;
        };
        if result.pubkey != attestation.builder {
            verification.problem(format!(
                "result {} is not signed by the builder it names",
                attestation.result
            ));
            continue;
        }
        if result.kind == QUORUM_ATTESTATION {
            verification.problem(format!(
                "attestation {} is a quorum attestation by {}, but the release is signed by {}: \
                 a quorum's release must be signed by the quorum key",
                attestation.result,
                attestation.builder.to_hex(),
                release.pubkey.to_hex()
            ));
            continue;
        }
        let report = JobResult::from_event(result)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                serde_json::from_str::<StepReport>(&r.content).map_err(|e| e.to_string())
            });
        match report {
            Ok(report) if report.commit != binding.commit => verification.problem(format!(
                "{} built commit {}, not {}",
                attestation.builder.to_hex(),
                report.commit,
                binding.commit
            )),
            Ok(report) if report.artifacts.iter().any(|a| a.blob.sha256 == sha) => {
                verification.attested_by.push(attestation.builder.to_hex())
            }
            Ok(_) => verification.problem(format!(
                "{} did not report these bytes",
                attestation.builder.to_hex()
            )),
            Err(err) => verification.problem(format!(
                "result {} is not a step report: {err}",
                attestation.result
            )),
        }
    }
    if !verification.attested_by.is_empty() {
        verification.warnings.push(
            "a single builder's release: nothing but that builder's word says these bytes \
             come from the commit (accepted with --allow-single-builder)"
                .into(),
        );
    }
}

/// A quorum-signed release: its attestation, the source it rests on, the mandate behind it,
/// the members, and what the user requires.
fn check_quorum(
    pool: &Pool<'_>,
    release: &Event,
    binding: &ReleaseBinding,
    digest: &Sha256Hex,
    expect: &Expectation,
    verification: &mut Verification,
) {
    let quorum = release.pubkey;
    verification.quorum = Some(quorum.to_hex());
    let [named] = binding.attestations.as_slice() else {
        verification.problem(format!(
            "a quorum-signed release names one attestation, its quorum's; this one names {}",
            binding.attestations.len()
        ));
        return;
    };
    let id = named.result;
    verification.attestation = Some(id.to_hex());

    // 1. The attestation: the quorum's, for these bytes and this commit.
    let Some(event) = pool.get(&id) else {
        verification.problem(format!("quorum attestation {id} not found"));
        return;
    };
    if event.kind != QUORUM_ATTESTATION {
        verification.problem(format!(
            "event {id}, named as the release's attestation, is kind {}, not a quorum \
             attestation (8708)",
            event.kind
        ));
        return;
    }
    if event.pubkey != quorum {
        verification.problem(format!(
            "attestation {id} is signed by {}, not by the release's signer {}",
            event.pubkey.to_hex(),
            quorum.to_hex()
        ));
        return;
    }
    let attestation = match QuorumAttestation::from_event(event) {
        Ok(attestation) => attestation,
        Err(err) => {
            verification.problem(format!("attestation {id} does not parse: {err}"));
            return;
        }
    };
    let mut jobs = BTreeSet::new();
    for artifact in &binding.artifacts {
        let Some((job, file)) = artifact.name.split_once('/') else {
            verification.problem(format!(
                "release artifact {:?} is not named JOB/NAME, as a quorum's release names them",
                artifact.name
            ));
            continue;
        };
        jobs.insert(job);
        match attestation.files.files.get(file) {
            Some(sha) if sha == &artifact.sha256 => {
                if sha == digest {
                    verification.attested_by = vec![quorum.to_hex()];
                }
            }
            Some(sha) => verification.problem(format!(
                "attestation {id} lists {file} as {sha}, but the release lists {} as {}",
                artifact.name, artifact.sha256
            )),
            None => verification.problem(format!(
                "attestation {id} does not list {file} (the release's {})",
                artifact.name
            )),
        }
    }
    if attestation.commit != binding.commit {
        verification.problem(format!(
            "attestation {id} is for commit {}, the release for commit {}",
            attestation.commit, binding.commit
        ));
    }
    verification.agreed = hex_list(&attestation.agreed);
    verification.built_by = Some(match attestation.wrapped {
        Some(kind) => format!("wrapper DVMs around ordinary kind {kind} DVMs"),
        None => "runners".into(),
    });

    // 2. The mandate: a maintainer's, for this quorum and repository, in force at the time.
    let mandate_id = attestation.mandate;
    verification.mandate = Some(mandate_id.to_hex());
    let Some(mandate_event) = pool.get(&mandate_id) else {
        verification.problem(format!(
            "mandate {mandate_id}, named by the attestation, not found (relays drop a mandate \
             once it expires: verify with the release's bundle)"
        ));
        return;
    };
    verification.mandate_signer = Some(mandate_event.pubkey.to_hex());
    if mandate_event.kind != MANDATE {
        verification.problem(format!(
            "event {mandate_id}, named as the attestation's mandate, is kind {}, not a mandate \
             (8704)",
            mandate_event.kind
        ));
        return;
    }
    let mandate = match Mandate::from_event(mandate_event) {
        Ok(mandate) => mandate,
        Err(err) => {
            verification.problem(format!("mandate {mandate_id} does not parse: {err}"));
            return;
        }
    };
    verification.threshold = Some(Threshold {
        t: mandate.threshold,
        n: u16::try_from(mandate.n()).unwrap_or(u16::MAX),
    });
    let mandated = Mandated {
        event: mandate_event,
        mandate: &mandate,
    };
    check_mandate(pool, binding, event, mandated, &jobs, verification);

    // 3. The source: the request, the maintainers' evidence, the pipeline job.
    check_source(
        pool,
        binding,
        &attestation,
        event,
        mandated,
        &jobs,
        verification,
    );
    check_approvals(pool, release, binding, &attestation, verification);

    // 4. At least `t` agreeing members, all of the mandate, and who said what.
    check_members(pool, &attestation, event, &mandate, verification);

    // 5. Who runs the members that agreed, and what the user requires.
    let agreed: Vec<quorum_proto::nostr::PublicKey> = attestation.agreed.iter().copied().collect();
    let claims = operator::confirmed_operators(&agreed, &pool.owned_all());
    verification.operators = claims
        .iter()
        .map(|(member, claim)| (member.to_hex(), claim.confirmed().map(|o| o.to_hex())))
        .collect();
    let distinct = operator::distinct_confirmed(claims.values()).len();
    verification.distinct_operators = Some(distinct);
    if let Some(min) = expect.min_operators
        && distinct < min
    {
        verification.problem(format!(
            "the {} members that agreed are run by {distinct} distinct confirmed operator(s); \
             at least {min} were required (--min-operators){}",
            agreed.len(),
            if claims.values().any(|c| c.confirmed().is_none()) {
                ": a member counts only when its announcement names an operator and that \
                 operator's signed list names it"
            } else {
                ""
            }
        ));
    }
    check_policy(pool, binding, &quorum, &mandate, expect, verification);
}

/// A mandate event and what it says.
#[derive(Clone, Copy)]
struct Mandated<'a> {
    event: &'a Event,
    mandate: &'a Mandate,
}

fn check_mandate(
    pool: &Pool<'_>,
    binding: &ReleaseBinding,
    attestation_event: &Event,
    mandated: Mandated<'_>,
    jobs: &BTreeSet<&str>,
    verification: &mut Verification,
) {
    let Mandated {
        event: mandate_event,
        mandate,
    } = mandated;
    let quorum = attestation_event.pubkey;
    let mandate_id = mandate_event.id;
    let id = attestation_event.id;
    let before = verification.problems.len();
    match mandate.quorum {
        Some(key) if key == quorum => {}
        Some(key) => verification.problem(format!(
            "mandate {mandate_id} is for quorum key {}, not the release's signer {}",
            key.to_hex(),
            quorum.to_hex()
        )),
        None => verification.problem(format!(
            "mandate {mandate_id} names no quorum key (it is a DKG proposal)"
        )),
    }
    if mandate.repo != binding.repo {
        verification.problem(format!(
            "mandate {mandate_id} is for repository {}, the release for {}",
            mandate.repo, binding.repo
        ));
    }
    let announcements = pool.owned(&[REPO_ANNOUNCEMENT]);
    let maintainers = maintainer_set(
        &binding.repo.owner,
        &binding.repo.identifier,
        &announcements,
    );
    if !maintainers.contains(&mandate_event.pubkey) {
        verification.problem(format!(
            "mandate {mandate_id} is signed by {}, who is not a maintainer of {} (maintainers: \
             the owner and those its 30617 announcement lists)",
            mandate_event.pubkey.to_hex(),
            binding.repo
        ));
    }
    for (kind, what) in [
        (RELEASE_BINDING, "release binding"),
        (QUORUM_ATTESTATION, "quorum attestation"),
    ] {
        if !mandate.allows(kind) {
            verification.problem(format!(
                "mandate {mandate_id} does not allow the quorum to sign kind {kind} ({what})"
            ));
        }
    }
    for job in jobs {
        if !mandate.covers(&mandate.pipeline, job) {
            verification.problem(format!(
                "mandate {mandate_id} does not cover job {job} (it covers {})",
                mandate.jobs.join(", ")
            ));
        }
    }
    let at = attestation_event.created_at;
    back_dated(attestation_event, "mandate", mandate_event, verification);
    if at >= mandate.expiration {
        verification.problem(format!(
            "mandate {mandate_id} had expired ({}) when attestation {id} was made ({})",
            mandate.expiration.as_secs(),
            at.as_secs()
        ));
    }
    let mut mandates = pool.owned(&[MANDATE]);
    if !mandates.iter().any(|e| e.id == mandate_id) {
        mandates.push(mandate_event.clone());
    }
    match select_mandate(&mandates, &binding.repo, &quorum, &maintainers, at) {
        Some((counted, _)) if counted.id == mandate_id => {}
        Some((counted, newer)) => verification.problem(format!(
            "mandate {mandate_id} was superseded before attestation {id}: mandate {} by {} \
             (at {}) {}",
            counted.id,
            counted.pubkey.to_hex(),
            counted.created_at.as_secs(),
            if newer.allows(QUORUM_ATTESTATION) && newer.allows(RELEASE_BINDING) {
                "counted instead"
            } else {
                "revoked the quorum's right to sign releases"
            }
        )),
        None if verification.problems.len() == before => {
            verification.problem(format!(
                "mandate {mandate_id} did not authorise quorum {} for {} at {}",
                quorum.to_hex(),
                binding.repo,
                at.as_secs()
            ));
        }
        None => {}
    }
}

/// Approval before release: a quorum request whose release depends on approval gates (its
/// `release` param names them, and the members checked that against the pipeline) was signed
/// only after each passed. The binding must name, for each gate, an approval request (8701)
/// of the job's requester for this repository, run, commit and gate, approved by enough of the
/// repository's maintainers (counted as the engine counted them, at the binding's time: a
/// rejection or a missing verdict is a failure).
fn check_approvals(
    pool: &Pool<'_>,
    release: &Event,
    binding: &ReleaseBinding,
    attestation: &QuorumAttestation,
    verification: &mut Verification,
) {
    let Some(request_event) = pool.get(&attestation.job) else {
        return;
    };
    let Some(release_params) = JobRequest::from_event(request_event)
        .ok()
        .and_then(|request| QuorumJobParams::from_request(&request).ok().flatten())
        .and_then(|params| params.release)
    else {
        return;
    };
    let maintainers = maintainer_set(
        &binding.repo.owner,
        &binding.repo.identifier,
        &pool.owned(&[REPO_ANNOUNCEMENT]),
    );
    let verdicts = pool.owned(&[APPROVAL, REJECTION]);
    for gate in &release_params.gates {
        let asked: Vec<(&Event, ApprovalRequest)> = binding
            .approvals
            .iter()
            .filter_map(|id| pool.get(id))
            .filter(|e| e.kind == APPROVAL_REQUEST && e.pubkey == request_event.pubkey)
            .filter_map(|e| ApprovalRequest::from_event(e).ok().map(|r| (e, r)))
            .filter(|(_, r)| r.job.as_deref() == Some(gate.as_str()))
            .collect();
        let Some((event, request)) = asked.first() else {
            verification.problem(format!(
                "release {} names no approval for gate {gate}: its pipeline asks the \
                 maintainers to approve before the release (no approval request {} found)",
                release.id,
                if binding.approvals.is_empty() {
                    "named".to_string()
                } else {
                    format!(
                        "among {}",
                        binding
                            .approvals
                            .iter()
                            .map(EventId::to_hex)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
            continue;
        };
        if request.repo != binding.repo
            || request.run != binding.run
            || request.commit != binding.commit
        {
            verification.problem(format!(
                "approval request {} for gate {gate} is for another repository, run or commit \
                 than release {}",
                event.id, release.id
            ));
            continue;
        }
        verification.approvals.push(event.id.to_hex());
        let electorate: Vec<_> = request
            .maintainers
            .iter()
            .copied()
            .filter(|k| maintainers.contains(k))
            .collect();
        let mine: Vec<Event> = verdicts
            .iter()
            .filter(|v| v.tags.event_ids().any(|id| *id == event.id))
            .cloned()
            .collect();
        match ApprovalTally::evaluate(event, &mine, &electorate, release.created_at) {
            Ok(tally) => match tally.status() {
                GateStatus::Approved => {}
                GateStatus::Rejected => verification.problem(format!(
                    "approval gate {gate} was refused (request {}): rejected by {}",
                    event.id,
                    tally
                        .rejected_by
                        .iter()
                        .map(|k| k.to_hex())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                GateStatus::Pending => verification.problem(format!(
                    "approval gate {gate} was not approved (request {}): {} of {} required \
                     maintainers approved",
                    event.id,
                    tally.approved_by.len(),
                    request.required
                )),
                GateStatus::Expired => verification.problem(format!(
                    "approval gate {gate} expired before it was approved (request {})",
                    event.id
                )),
            },
            Err(err) => verification.problem(format!(
                "approval request {} for gate {gate} is invalid: {err}",
                event.id
            )),
        }
    }
}

fn check_source(
    pool: &Pool<'_>,
    binding: &ReleaseBinding,
    attestation: &QuorumAttestation,
    attestation_event: &Event,
    mandated: Mandated<'_>,
    jobs: &BTreeSet<&str>,
    verification: &mut Verification,
) {
    let Mandated {
        event: mandate_event,
        mandate,
    } = mandated;
    let id = attestation_event.id;
    let Some(evidence) = &attestation.evidence else {
        verification.problem(format!(
            "attestation {id} names no evidence of its source (announcement, state, pipeline, \
             job): nothing shows the quorum built the maintainers' code"
        ));
        return;
    };
    verification.job = Some(evidence.job.clone());
    verification.pipeline = Some(evidence.pipeline.clone());
    verification.plan_hash = Some(evidence.plan_hash.to_hex());
    verification.request = Some(attestation.job.to_hex());
    if evidence.pipeline != mandate.pipeline {
        verification.problem(format!(
            "attestation {id} builds from {}, but mandate {} covers {}",
            evidence.pipeline, mandate_event.id, mandate.pipeline
        ));
    }
    if jobs.iter().any(|job| *job != evidence.job) {
        verification.problem(format!(
            "the release names artifacts of jobs {}, but the attestation is for job {}",
            jobs.iter().copied().collect::<Vec<_>>().join(", "),
            evidence.job
        ));
    }
    // The request the quorum answered: what the members were asked, by whom.
    let Some(request_event) = pool.get(&attestation.job) else {
        verification.problem(format!(
            "job request {}, which attestation {id} answers, not found",
            attestation.job
        ));
        return;
    };
    verification.requester = Some(request_event.pubkey.to_hex());
    back_dated(
        attestation_event,
        "job request",
        request_event,
        verification,
    );
    let params = JobRequest::from_event(request_event)
        .map_err(|e| e.to_string())
        .and_then(|request| {
            let params = QuorumJobParams::from_request(&request)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "it is not a quorum request".to_string())?;
            Ok((request, params))
        });
    let (request, params) = match params {
        Ok(parsed) => parsed,
        Err(reason) => {
            verification.problem(format!(
                "job request {} does not parse as a quorum request: {reason}",
                attestation.job
            ));
            return;
        }
    };
    if request.param_value(quorum_pipeline::dispatch::PARAM_JOB) != Some(evidence.job.as_str()) {
        verification.problem(format!(
            "job request {} does not name job {}",
            attestation.job, evidence.job
        ));
    }
    if params.mandate != mandate_event.id || params.commit != attestation.commit {
        verification.problem(format!(
            "job request {} names another mandate or commit than the attestation",
            attestation.job
        ));
    }
    if !mandate
        .rules
        .admits(&request_event.pubkey, mandate.quorum.as_ref())
    {
        verification.problem(format!(
            "job request {} is signed by {}, whom mandate {} does not allow to request the \
             quorum's jobs",
            attestation.job,
            request_event.pubkey.to_hex(),
            mandate_event.id
        ));
    }
    let Some(named) = &params.source else {
        verification.problem(format!(
            "job request {} names no source evidence",
            attestation.job
        ));
        return;
    };
    if named.announcement != evidence.announcement || named.state != evidence.state {
        verification.problem(format!(
            "attestation {id} names other source evidence than the request it answers"
        ));
    }
    // A run step fetches its `repo` input: it must be the URL the evidence vouches for.
    if request.kind == StepJob::kind() {
        match StepJob::from_request(&request, false) {
            Ok(step) if step.repo == named.url => {}
            Ok(step) => verification.problem(format!(
                "job request {} fetches {}, not {}, the URL its source evidence names",
                attestation.job, step.repo, named.url
            )),
            Err(err) => verification.problem(format!(
                "job request {} is not a run step: {err}",
                attestation.job
            )),
        }
    }
    match &params.release {
        Some(release)
            if release.repo == binding.repo
                && release.run == binding.run
                && release.job == evidence.job => {}
        _ => verification.problem(format!(
            "job request {} did not ask for this release (repository, run and job)",
            attestation.job
        )),
    }
    let run = quorum_pipeline::run_id(
        &named.url,
        &attestation.commit,
        &evidence.plan_hash.to_hex(),
    );
    if run != binding.run {
        verification.problem(format!(
            "the release names run {}, but {} at commit {} with plan {} is run {run}",
            binding.run, named.url, attestation.commit, evidence.plan_hash
        ));
    }
    // The maintainers' evidence, as it was when the quorum built: the named events, not
    // whatever replaced them since.
    let events: Vec<Event> = pool.owned(&[REPO_ANNOUNCEMENT, REPO_STATE]);
    match source::check(
        &binding.repo,
        &named.url,
        &attestation.commit,
        mandate.rules.source,
        (evidence.announcement, evidence.state),
        &events,
        false,
    ) {
        Ok(checked) => {
            verification.source = Some(SourceReport {
                announcement: checked.announcement.id.to_hex(),
                state: checked.state.id.to_hex(),
                state_signer: checked.state.pubkey.to_hex(),
                url: named.url.clone(),
                refs: checked.refs.clone(),
            });
            if checked.refs.is_empty() {
                verification.warnings.push(format!(
                    "commit {} is not a ref tip in state {}: under the mandate's `ancestor` \
                     rule the members checked with git that a ref reaches it; this verifier \
                     cannot re-check that offline",
                    attestation.commit, evidence.state
                ));
            }
            for (what, event) in [
                ("announcement", checked.announcement),
                ("state", checked.state),
            ] {
                back_dated(attestation_event, what, event, verification);
            }
        }
        Err(err) => verification.problem(format!("source: {err}")),
    }
}

/// A problem if the attestation is dated before `event`, evidence it relies on: its time is
/// the signers' choice, and the mandate that counted is judged at that time.
fn back_dated(attestation: &Event, what: &str, event: &Event, verification: &mut Verification) {
    if attestation.created_at < event.created_at {
        verification.problem(format!(
            "attestation {} is dated {}, before the {what} {} it relies on ({}): back-dated",
            attestation.id,
            attestation.created_at.as_secs(),
            event.id,
            event.created_at.as_secs()
        ));
    }
}

fn check_members(
    pool: &Pool<'_>,
    attestation: &QuorumAttestation,
    attestation_event: &Event,
    mandate: &Mandate,
    verification: &mut Verification,
) {
    let id = attestation_event.id;
    if attestation.agreed.len() < usize::from(mandate.threshold) {
        verification.problem(format!(
            "attestation {id} names {} agreeing members; the mandate needs {}",
            attestation.agreed.len(),
            mandate.threshold
        ));
    }
    for member in &attestation.agreed {
        if mandate.member_index(member).is_none() {
            verification.problem(format!(
                "attestation {id} names {} as agreeing, who is not a member of the mandate",
                member.to_hex()
            ));
        }
    }
    let Some(roster) = mandate.roster() else {
        return;
    };
    // Only what was said before the quorum signed is evidence about the agreement: a member
    // cannot be framed, or poison a release, by publishing something later. What the other
    // members said at any time is only reported (a member that revealed the same bytes after
    // the quorum signed is late, not silent).
    let at = attestation_event.created_at;
    let plan = attestation.evidence.as_ref().map(|e| e.plan_hash);
    let tally = |until: Option<Timestamp>| {
        let said: Vec<&Event> = pool
            .events
            .iter()
            .copied()
            .filter(|e| e.kind == COMMITMENT || e.kind == REVEAL)
            .filter(|e| until.is_none_or(|until| e.created_at <= until))
            .collect();
        let commitments: Vec<SignedCommitment> = said
            .iter()
            .filter(|e| e.kind == COMMITMENT)
            .filter_map(|e| SignedCommitment::from_event(e).ok())
            .collect();
        let reveals: Vec<SignedReveal> = said
            .iter()
            .filter(|e| e.kind == REVEAL)
            .filter_map(|e| SignedReveal::from_event(e).ok())
            .collect();
        Tally::new(roster.clone(), attestation.job)
            .expecting_plan(plan)
            .evaluate(&commitments, &reveals)
    };
    let before = tally(Some(at));
    let ever = tally(None);
    let other_plan = |outcome: &TallyOutcome, member| {
        outcome.disagreed.get(member).and_then(|d| {
            d.get(quorum_proto::agreement::PLAN_ENTRY)
                .map(|plan| plan.map_or("none".to_string(), |p| p.to_hex()))
        })
    };
    let differs = |outcome: &TallyOutcome, member| {
        outcome
            .revealed
            .get(member)
            .map(|r| (r.reveal, differences(&r.result, &attestation.files)))
    };
    let (mut disagreed, mut silent, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for member in roster.members() {
        if attestation.agreed.contains(member) {
            // A member the quorum names must not contradict it in its own signed events. (A
            // reveal that no longer opens anything, e.g. its commitment expired from the
            // relays, is no evidence either way.)
            if before.equivocated.contains_key(member) {
                verification.problem(format!(
                    "{}, named as agreeing, equivocated: it committed twice for job {}",
                    member.to_hex(),
                    attestation.job
                ));
            } else if let Some(plan) = other_plan(&before, member) {
                verification.problem(format!(
                    "{}, named as agreeing, revealed another plan ({plan})",
                    member.to_hex()
                ));
            } else if let Some((reveal, Some(diff))) = differs(&before, member) {
                verification.problem(format!(
                    "{}, named as agreeing, revealed otherwise in {reveal}: {diff}",
                    member.to_hex()
                ));
            }
        } else if ever.equivocated.contains_key(member)
            || ever.invalid.contains_key(member)
            || other_plan(&ever, member).is_some()
        {
            disagreed.push(member.to_hex());
        } else {
            match differs(&ever, member) {
                Some((_, Some(_))) => disagreed.push(member.to_hex()),
                Some((_, None)) => late.push(member.to_hex()),
                None => silent.push(member.to_hex()),
            }
        }
    }
    verification.disagreed = disagreed;
    verification.silent = silent;
    verification.late = late;
}

fn check_policy(
    pool: &Pool<'_>,
    binding: &ReleaseBinding,
    quorum: &quorum_proto::nostr::PublicKey,
    mandate: &Mandate,
    expect: &Expectation,
    verification: &mut Verification,
) {
    if let Some(min) = expect.min_threshold
        && mandate.threshold < min
    {
        verification.problem(format!(
            "the quorum needs only {} of {} members to agree; at least {min} were required \
             (--min-threshold)",
            mandate.threshold,
            mandate.n()
        ));
    }
    // How the key was made: the earliest of the maintainers' mandates for it that says (a
    // refresh keeps the key, so it does not say). Anyone can publish a mandate naming any key:
    // only the maintainers' count, or a stranger could date one earlier and claim a DKG.
    let maintainers = maintainer_set(
        &binding.repo.owner,
        &binding.repo.identifier,
        &pool.owned(&[REPO_ANNOUNCEMENT]),
    );
    let origin = pool
        .of_kind(MANDATE)
        .filter(|e| maintainers.contains(&e.pubkey))
        .filter_map(|e| Mandate::from_event(e).ok().map(|m| (e, m)))
        .filter(|(_, m)| {
            m.repo == binding.repo && m.quorum == Some(*quorum) && m.keygen != Keygen::Refresh
        })
        .min_by_key(|(e, _)| (e.created_at, e.id))
        .map(|(_, m)| m.keygen);
    let keygen = match origin.or(Some(mandate.keygen).filter(|k| *k != Keygen::Refresh)) {
        Some(Keygen::Dkg) => "dkg",
        Some(Keygen::Dealer { .. }) => "dealer",
        _ => "unknown",
    };
    verification.keygen = Some(keygen.into());
    if keygen == "dealer" {
        verification.warnings.push(
            "the quorum key was made by a dealer, who held the whole key while dealing it".into(),
        );
    }
    if expect.require_dkg && keygen != "dkg" {
        verification.problem(format!(
            "the quorum key was not shown to be made by DKG (keygen: {keygen}); --require-dkg \
             refuses it"
        ));
    }
}

/// How `result` differs from the attested `files` (each attested file it reports otherwise or
/// lacks); `None` when it backs every one. Extra files do not count.
fn differences(result: &BuildResult, files: &BuildResult) -> Option<String> {
    let diffs: Vec<String> = files
        .files
        .iter()
        .filter(|(name, sha)| result.files.get(*name) != Some(sha))
        .map(|(name, _)| match result.files.get(name) {
            Some(other) => format!("{name} = {other}"),
            None => format!("{name} missing"),
        })
        .collect();
    (!diffs.is_empty()).then(|| diffs.join(", "))
}

/// The sha256 of the file at `path`, streamed: a release artifact can be larger than memory.
fn sha256_of(path: &Path) -> Result<Sha256Hex, VerifyError> {
    use sha2::{Digest, Sha256};
    let read = |source| VerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(read)?;
    Ok(Sha256Hex::from(<[u8; 32]>::from(hasher.finalize())))
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if size > MAX_BUNDLE_BYTES {
        return Err(format!(
            "it is {size} bytes; a bundle is at most {MAX_BUNDLE_BYTES}"
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// A bundle from the first of `urls` that serves bytes hashing to `sha`.
async fn fetch_bundle(sha: &Sha256Hex, urls: &[String]) -> Result<VerificationBundle, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dest = scratch.path().join("bundle.json");
    let client = quorum_blossom::client::BlossomClient::new(quorum_proto::nostr::Keys::generate())
        .with_max_download(MAX_BUNDLE_BYTES);
    let mut last = "no URL".to_string();
    for url in urls {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        match tokio::time::timeout(BUNDLE_TIMEOUT, client.download_url(&parsed, *sha, &dest)).await
        {
            Ok(Ok(_)) => {
                let bytes = std::fs::read(&dest).map_err(|e| e.to_string())?;
                return VerificationBundle::from_json(&bytes).map_err(|e| e.to_string());
            }
            Ok(Err(err)) => last = format!("{url}: {err}"),
            Err(_) => last = format!("{url}: no answer within {BUNDLE_TIMEOUT:?}"),
        }
    }
    Err(last)
}

async fn fetch(client: &JobClient, filter: Filter) -> Result<Vec<Event>, VerifyError> {
    Ok(client.fetch(filter, FETCH_TIMEOUT).await?)
}

/// Adds the events with these ids (those not in the pool yet) from the relays.
async fn add_ids(
    client: &JobClient,
    pool: &mut Vec<Event>,
    ids: Vec<EventId>,
) -> Result<(), VerifyError> {
    let missing: BTreeSet<EventId> = ids
        .into_iter()
        .filter(|id| !pool.iter().any(|e| e.id == *id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    pool.extend(fetch(client, Filter::new().ids(missing)).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! [`judge`] on hand-made chains of signed events, where a relay could not hold the case
    //! (an expired mandate, a forged event) or the pure rule is the point. The quorum key is a
    //! plain key here: judging looks at signatures, not at how they were made.

    use quorum_proto::agreement::{
        Commitment, JobEvidence, QuorumAttestation, Reveal, Salt, SignedCommitment,
    };
    use quorum_proto::approval::ArtifactDigest;
    use quorum_proto::mandate::{Keygen, Mandate, Member, SourceRule};
    use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
    use quorum_proto::nip90::JobParam;
    use quorum_proto::nostr::{EventBuilder, Keys, UnsignedEvent};
    use quorum_proto::quorum_job::{ReleaseParams, SourceRef, release_binding};
    use quorum_proto::release::Attestation;

    use super::*;

    const T: u64 = 1_800_000_000;
    const URL: &str = "https://git.example/app.git";
    const PIPELINE: &str = ".quorum/pipeline.yml";
    const BYTES: &[u8] = b"app\n";

    fn keys(byte: u8) -> Keys {
        Keys::parse(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    fn at(offset: i64) -> Timestamp {
        Timestamp::from(T.saturating_add_signed(offset))
    }

    fn signed(builder: EventBuilder, keys: &Keys, offset: i64) -> Event {
        builder
            .custom_created_at(at(offset))
            .sign_with_keys(keys)
            .unwrap()
    }

    fn digest() -> Sha256Hex {
        Sha256Hex::from_bytes(sha2_digest(BYTES))
    }

    /// A repository, a 2-of-3 quorum (key `quorum`), and the honest chain of a release of
    /// [`BYTES`]: each event a public field, so that a case can replace one.
    struct Chain {
        owner: Keys,
        quorum: Keys,
        members: Vec<Keys>,
        repo: RepoCoordinate,
        commit: String,
        plan: Sha256Hex,
        announcement: Event,
        state: Event,
        mandate: Event,
        request: Event,
        votes: Vec<Event>,
        attestation: QuorumAttestation,
        attestation_event: Event,
        binding: Event,
    }

    impl Chain {
        fn new() -> Chain {
            Chain::with(|_| {}, |_| {})
        }

        /// The honest chain with the mandate and the attestation changed before signing.
        fn with(
            mandate: impl FnOnce(&mut Mandate),
            attest: impl FnOnce(&mut QuorumAttestation),
        ) -> Chain {
            let owner = keys(1);
            let quorum = keys(2);
            let members: Vec<Keys> = (3..6).map(keys).collect();
            let requester = keys(6);
            let repo = RepoCoordinate::new(owner.public_key(), "app");
            let commit = "3f1c".repeat(10);
            let plan = Sha256Hex::from_bytes([7; 32]);
            let mut announcement = RepositoryAnnouncement::new("app");
            announcement.clone = vec![URL.into()];
            let announcement = signed(announcement.to_event_builder(), &owner, -1000);
            let state = signed(
                RepositoryState::new("app")
                    .with_ref("refs/heads/main", &commit)
                    .unwrap()
                    .to_event_builder(),
                &owner,
                -900,
            );
            let mut terms = Mandate {
                repo: repo.clone(),
                pipeline: PIPELINE.into(),
                jobs: vec!["build".into()],
                quorum: Some(quorum.public_key()),
                members: members
                    .iter()
                    .zip(1..)
                    .map(|(k, i)| Member::new(k.public_key(), i))
                    .collect(),
                threshold: 2,
                keygen: Keygen::Dealer { dealer: None },
                allow: [8700u16, 8708].into_iter().collect(),
                expiration: at(86_400),
                rules: Default::default(),
                content: String::new(),
            };
            mandate(&mut terms);
            let mandate = signed(terms.to_event_builder().unwrap(), &owner, -600);
            let release = ReleaseParams {
                repo: repo.clone(),
                run: quorum_pipeline::run_id(URL, &commit, &plan.to_hex()),
                job: "build".into(),
                gates: Vec::new(),
            };
            let mut step = StepJob::new(URL, commit.clone(), "make");
            step.artifacts = vec!["out/app".into()];
            let mut request = step.to_request();
            request
                .params
                .push(JobParam::new(quorum_pipeline::dispatch::PARAM_JOB, "build"));
            QuorumJobParams {
                mandate: mandate.id,
                commit: commit.clone(),
                release: Some(release.clone()),
                source: Some(SourceRef {
                    announcement: announcement.id,
                    state: state.id,
                    url: URL.into(),
                }),
            }
            .apply(&mut request);
            let request = signed(request.to_event_builder(), &requester, -400);
            let files = BuildResult::new().with_file("out/app", digest());
            let mut votes = Vec::new();
            for (i, member) in members.iter().take(2).enumerate() {
                let salt = Salt::from_bytes([i as u8; 32]);
                let commitment = signed(
                    Commitment::new(
                        &member.public_key(),
                        request.id,
                        quorum.public_key(),
                        &salt,
                        &files,
                        at(3600),
                    )
                    .to_event_builder(),
                    member,
                    -300,
                );
                let parsed = SignedCommitment::from_event(&commitment).unwrap();
                let reveal = Reveal::new(&parsed, salt, files.clone(), at(3600))
                    .with_plan(Some(plan))
                    .to_event_builder()
                    .unwrap();
                votes.push(commitment);
                votes.push(signed(reveal, member, -200));
            }
            let mut attestation = QuorumAttestation {
                job: request.id,
                mandate: mandate.id,
                commit: commit.clone(),
                files: files.clone(),
                agreed: members.iter().take(2).map(Keys::public_key).collect(),
                evidence: Some(JobEvidence {
                    announcement: announcement.id,
                    state: state.id,
                    pipeline: PIPELINE.into(),
                    plan_hash: plan,
                    job: "build".into(),
                }),
                wrapped: None,
            };
            attest(&mut attestation);
            let unsigned = attestation.unsigned(quorum.public_key(), at(-200)).unwrap();
            let binding = release_binding(&release, &commit, &files, &unsigned).unwrap();
            let attestation_event = unsigned.sign_with_keys(&quorum).unwrap();
            let binding = binding.sign_with_keys(&quorum).unwrap();
            Chain {
                owner,
                quorum,
                members,
                repo,
                commit,
                plan,
                announcement,
                state,
                mandate,
                request,
                votes,
                attestation,
                attestation_event,
                binding,
            }
        }

        fn pool(&self) -> Vec<Event> {
            let mut pool = vec![
                self.announcement.clone(),
                self.state.clone(),
                self.mandate.clone(),
                self.request.clone(),
                self.attestation_event.clone(),
                self.binding.clone(),
            ];
            pool.extend(self.votes.iter().cloned());
            pool
        }

        fn expect(&self) -> Expectation {
            Expectation {
                repo: Some(self.repo.clone()),
                ..Expectation::default()
            }
        }

        fn judge(&self, pool: &[Event]) -> Verification {
            judge(&digest(), pool, &self.expect())
        }

        /// A binding of these bytes signed by the quorum key at `offset`, naming `results`.
        fn binding_naming(&self, results: Vec<Attestation>, offset: i64) -> Event {
            let binding = ReleaseBinding::new(
                self.repo.clone(),
                self.commit.clone(),
                quorum_pipeline::run_id(URL, &self.commit, &self.plan.to_hex()),
                vec![ArtifactDigest::new("build/out/app", digest())],
                results,
            )
            .unwrap();
            signed(
                binding.to_event_builder(at(offset)).unwrap(),
                &self.quorum,
                offset,
            )
        }
    }

    impl Chain {
        /// The same chain built on `state`: the request and the attestation name it.
        fn naming_state(mut self, state: Event) -> Chain {
            let mut request = JobRequest::from_event(&self.request).unwrap();
            let mut params = QuorumJobParams::from_request(&request).unwrap().unwrap();
            params.source.as_mut().unwrap().state = state.id;
            params.apply(&mut request);
            self.request = signed(request.to_event_builder(), &keys(6), -400);
            if let Some(evidence) = self.attestation.evidence.as_mut() {
                evidence.state = state.id;
            }
            self.state = state;
            self.resign_from_request()
        }

        /// Votes, attestation and binding for the current request.
        fn resign_from_request(mut self) -> Chain {
            let files = self.attestation.files.clone();
            self.votes.clear();
            for (i, member) in self.members.iter().take(2).enumerate() {
                let salt = Salt::from_bytes([i as u8; 32]);
                let commitment = signed(
                    Commitment::new(
                        &member.public_key(),
                        self.request.id,
                        self.quorum.public_key(),
                        &salt,
                        &files,
                        at(3600),
                    )
                    .to_event_builder(),
                    member,
                    -300,
                );
                let parsed = SignedCommitment::from_event(&commitment).unwrap();
                let reveal = Reveal::new(&parsed, salt, files.clone(), at(3600))
                    .with_plan(Some(self.plan))
                    .to_event_builder()
                    .unwrap();
                self.votes.push(commitment);
                self.votes.push(signed(reveal, member, -200));
            }
            self.attestation.job = self.request.id;
            let unsigned: UnsignedEvent = self
                .attestation
                .unsigned(self.quorum.public_key(), at(-200))
                .unwrap();
            let release = self.release_params();
            self.binding = release_binding(&release, &self.commit, &files, &unsigned)
                .unwrap()
                .sign_with_keys(&self.quorum)
                .unwrap();
            self.attestation_event = unsigned.sign_with_keys(&self.quorum).unwrap();
            self
        }
    }

    impl Chain {
        /// The release params the current request names.
        fn release_params(&self) -> ReleaseParams {
            JobRequest::from_event(&self.request)
                .ok()
                .and_then(|request| QuorumJobParams::from_request(&request).ok().flatten())
                .and_then(|params| params.release)
                .unwrap_or_else(|| ReleaseParams {
                    repo: self.repo.clone(),
                    run: quorum_pipeline::run_id(URL, &self.commit, &self.plan.to_hex()),
                    job: "build".into(),
                    gates: Vec::new(),
                })
        }

        /// The chain of a pipeline with an approval gate `approve`: the request names it, the
        /// engine asked the owner (8701, returned), and the quorum signed the binding after
        /// the approval, naming that request. Verdicts are the case's to add.
        fn gated() -> (Chain, Event) {
            let mut chain = Chain::new();
            let mut request = JobRequest::from_event(&chain.request).unwrap();
            let mut params = QuorumJobParams::from_request(&request).unwrap().unwrap();
            params.release.as_mut().unwrap().gates = vec!["approve".into()];
            params.apply(&mut request);
            chain.request = signed(request.to_event_builder(), &keys(6), -400);
            let chain = chain.resign_from_request();
            let release = chain.release_params();
            let asked = quorum_proto::approval::ApprovalRequest {
                repo: chain.repo.clone(),
                run: release.run.clone(),
                commit: chain.commit.clone(),
                artifacts: vec![ArtifactDigest::new("build/out/app", digest())],
                builders: Vec::new(),
                maintainers: vec![chain.owner.public_key()],
                required: 1,
                expiration: at(86_400),
                content: "Approve?".into(),
                job: Some("approve".into()),
            };
            let asked = signed(asked.to_event_builder().unwrap(), &keys(6), -100);
            (chain, asked)
        }

        /// The binding signed after `approved` (8701s) passed.
        fn bind_after(&mut self, approved: &[&Event]) {
            let unsigned = self
                .attestation
                .unsigned(self.quorum.public_key(), at(-200))
                .unwrap();
            self.binding = quorum_proto::quorum_job::release_binding_after(
                &self.release_params(),
                &self.commit,
                &self.attestation.files,
                &unsigned,
                approved,
            )
            .unwrap()
            .sign_with_keys(&self.quorum)
            .unwrap();
        }

        /// The owner's verdict on `asked`.
        fn verdict(&self, decision: quorum_proto::approval::Decision, asked: &Event) -> Event {
            let parsed = quorum_proto::approval::ApprovalRequest::from_event(asked).unwrap();
            let verdict = quorum_proto::approval::Verdict::on(decision, asked, &parsed, at(3600));
            signed(verdict.to_event_builder().unwrap(), &self.owner, -50)
        }
    }

    #[test]
    fn a_gated_release_verifies_with_its_approval() {
        use quorum_proto::approval::Decision;
        let (mut chain, asked) = Chain::gated();
        chain.bind_after(&[&asked]);
        let mut pool = chain.pool();
        pool.push(asked.clone());
        pool.push(chain.verdict(Decision::Approve, &asked));
        let verified = chain.judge(&pool);
        assert!(verified.ok, "{verified:#?}");
        assert_eq!(verified.approvals, vec![asked.id.to_hex()]);
    }

    #[test]
    fn a_gated_release_whose_approval_was_refused_does_not_verify() {
        use quorum_proto::approval::Decision;
        let (mut chain, asked) = Chain::gated();
        chain.bind_after(&[&asked]);
        let mut pool = chain.pool();
        pool.push(asked.clone());
        pool.push(chain.verdict(Decision::Reject, &asked));
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![format!(
                "approval gate approve was refused (request {}): rejected by {}",
                asked.id,
                chain.owner.public_key().to_hex()
            )]
        );
        // Without any verdict the gate never passed either.
        let mut pool = chain.pool();
        pool.push(asked.clone());
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![format!(
                "approval gate approve was not approved (request {}): 0 of 1 required \
                 maintainers approved",
                asked.id
            )]
        );
    }

    #[test]
    fn a_gated_release_signed_before_its_approval_does_not_verify() {
        use quorum_proto::approval::Decision;
        // The binding signed with the attestation, as quorums did before gates held it back:
        // it names no approval, even though the maintainers approved later.
        let (chain, asked) = Chain::gated();
        let mut pool = chain.pool();
        pool.push(asked.clone());
        pool.push(chain.verdict(Decision::Approve, &asked));
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![format!(
                "release {} names no approval for gate approve: its pipeline asks the \
                 maintainers to approve before the release (no approval request named found)",
                chain.binding.id
            )]
        );
        // Nor does one naming another run's approval request (the requester's own, approved).
        let (mut chain, _) = Chain::gated();
        let mut other = quorum_proto::approval::ApprovalRequest::from_event(&asked).unwrap();
        other.run = "ab".repeat(32);
        let other = signed(other.to_event_builder().unwrap(), &keys(6), -100);
        chain.bind_after(&[&other]);
        let mut pool = chain.pool();
        pool.push(other.clone());
        pool.push(chain.verdict(Decision::Approve, &other));
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![format!(
                "approval request {} for gate approve is for another repository, run or \
                 commit than release {}",
                other.id, chain.binding.id
            )]
        );
    }

    fn problems(verification: &Verification) -> Vec<&str> {
        assert!(!verification.ok, "{verification:#?}");
        verification.problems.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_honest_chain_verifies() {
        let chain = Chain::new();
        let verified = chain.judge(&chain.pool());
        assert!(verified.ok, "{verified:#?}");
        assert_eq!(verified.agreed.len(), 2);
        assert_eq!(
            verified.silent,
            vec![chain.members[2].public_key().to_hex()]
        );
        assert_eq!(verified.keygen.as_deref(), Some("dealer"));
    }

    #[test]
    fn a_mandate_expired_when_the_quorum_attested_is_refused() {
        // No relay would serve it (or accept it now): only a bundle can carry it.
        let chain = Chain::with(|m| m.expiration = at(-250), |_| {});
        assert_eq!(
            problems(&chain.judge(&chain.pool())),
            vec![format!(
                "mandate {} had expired ({}) when attestation {} was made ({})",
                chain.mandate.id,
                T - 250,
                chain.attestation_event.id,
                T - 200
            )]
        );
    }

    #[test]
    fn forged_events_are_no_evidence() {
        let chain = Chain::new();
        let mut pool = chain.pool();
        let forged = pool
            .iter_mut()
            .find(|e| e.id == chain.attestation_event.id)
            .unwrap();
        forged.content = "forged".into();
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![format!(
                "quorum attestation {} not found",
                chain.attestation_event.id
            )]
        );
    }

    #[test]
    fn under_the_ancestor_rule_a_commit_below_a_tip_is_a_warning_not_a_failure() {
        // The state the request names has main at another commit.
        let tip = "9a9b".repeat(10);
        let chain = |rule: SourceRule| {
            let chain = Chain::with(|m| m.rules.source = rule, |_| {});
            let state = signed(
                RepositoryState::new("app")
                    .with_ref("refs/heads/main", &tip)
                    .unwrap()
                    .to_event_builder(),
                &chain.owner,
                -900,
            );
            chain.naming_state(state)
        };
        let ancestor = chain(SourceRule::Ancestor);
        let verified = ancestor.judge(&ancestor.pool());
        assert!(verified.ok, "{verified:#?}");
        assert!(
            verified
                .warnings
                .iter()
                .any(|w| w.contains("`ancestor` rule")),
            "{verified:#?}"
        );
        assert_eq!(verified.source.unwrap().refs, Vec::<String>::new());
        let tip_rule = chain(SourceRule::Tip);
        assert_eq!(
            problems(&tip_rule.judge(&tip_rule.pool())),
            vec![format!(
                "source: commit {} is not the tip of any ref in maintainer-signed state {}",
                tip_rule.commit, tip_rule.state.id
            )]
        );
    }

    #[test]
    fn of_several_releases_of_the_repository_one_that_verifies_is_enough() {
        let chain = Chain::new();
        // The quorum key also signed a newer binding of the same bytes that names an
        // attestation nobody has.
        let missing = EventId::from_byte_array([9; 32]);
        let newer = chain.binding_naming(
            vec![Attestation {
                result: missing,
                builder: chain.quorum.public_key(),
            }],
            -100,
        );
        let mut pool = chain.pool();
        pool.push(newer.clone());
        let verified = chain.judge(&pool);
        assert!(verified.ok, "{verified:#?}");
        assert_eq!(verified.release, Some(chain.binding.id.to_hex()));
        assert_eq!(verified.candidates.len(), 2);
        assert_eq!(verified.candidates[0].release, newer.id.to_hex());
        assert!(verified.warnings.contains(&format!(
            "1 other release(s) of {} list these bytes too (not needed for the verdict)",
            chain.repo
        )));

        // The same binding twice in the pool (from a relay and from a bundle) is one release.
        let mut doubled = chain.pool();
        doubled.push(chain.binding.clone());
        let verified = chain.judge(&doubled);
        assert!(verified.ok, "{verified:#?}");
        assert!(
            !verified
                .warnings
                .iter()
                .any(|w| w.contains("other release")),
            "{:?}",
            verified.warnings
        );

        // When none verifies, the newest is reported, with a word on the others.
        pool.retain(|e| e.id != chain.attestation_event.id);
        let verified = chain.judge(&pool);
        assert_eq!(verified.release, Some(newer.id.to_hex()));
        assert_eq!(
            problems(&verified),
            vec![format!("quorum attestation {missing} not found")]
        );
        assert!(verified.warnings.contains(&format!(
            "1 other release(s) of {} list these bytes too; none verifies either",
            chain.repo
        )));
    }

    #[test]
    fn a_quorum_binding_names_exactly_its_own_attestation() {
        let chain = Chain::new();
        let two = chain.binding_naming(
            vec![
                Attestation {
                    result: chain.attestation_event.id,
                    builder: chain.quorum.public_key(),
                },
                Attestation {
                    result: chain.request.id,
                    builder: chain.members[0].public_key(),
                },
            ],
            -200,
        );
        let mut pool = chain.pool();
        pool.retain(|e| e.id != chain.binding.id);
        pool.push(two);
        assert_eq!(
            problems(&chain.judge(&pool)),
            vec![
                "a quorum-signed release names one attestation, its quorum's; this one names 2"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_attestation_without_evidence_or_enough_members_is_refused() {
        let bare = Chain::with(|_| {}, |a| a.evidence = None);
        assert_eq!(
            problems(&bare.judge(&bare.pool())),
            vec![format!(
                "attestation {} names no evidence of its source (announcement, state, \
                 pipeline, job): nothing shows the quorum built the maintainers' code",
                bare.attestation_event.id
            )]
        );

        let outsider = keys(9).public_key();
        let chain = Chain::with(
            |_| {},
            |a| {
                let first = *a.agreed.iter().next().unwrap();
                a.agreed = [first, outsider].into_iter().collect();
            },
        );
        let verified = chain.judge(&chain.pool());
        assert_eq!(
            problems(&verified),
            vec![format!(
                "attestation {} names {} as agreeing, who is not a member of the mandate",
                chain.attestation_event.id,
                outsider.to_hex()
            )]
        );

        let lone = Chain::with(
            |_| {},
            |a| {
                let first = *a.agreed.iter().next().unwrap();
                a.agreed = [first].into_iter().collect();
            },
        );
        assert_eq!(
            problems(&lone.judge(&lone.pool())),
            vec![format!(
                "attestation {} names 1 agreeing members; the mandate needs 2",
                lone.attestation_event.id
            )]
        );
    }

    #[test]
    fn a_mandate_that_does_not_cover_the_job_is_refused() {
        let chain = Chain::with(|m| m.jobs = vec!["test".into()], |_| {});
        assert_eq!(
            problems(&chain.judge(&chain.pool())),
            vec![format!(
                "mandate {} does not cover job build (it covers test)",
                chain.mandate.id
            )]
        );
    }

    #[test]
    fn a_request_that_is_not_a_quorum_request_is_refused() {
        let mut chain = Chain::new();
        let mut step = StepJob::new(URL, chain.commit.clone(), "make");
        step.artifacts = vec!["out/app".into()];
        chain.request = signed(step.to_request().to_event_builder(), &keys(6), -400);
        let chain = chain.resign_from_request();
        assert_eq!(
            problems(&chain.judge(&chain.pool())),
            vec![format!(
                "job request {} does not parse as a quorum request: it is not a quorum request",
                chain.request.id
            )]
        );
    }

    #[test]
    fn a_refreshed_key_keeps_the_keygen_of_the_mandate_that_made_it() {
        for (origin, expected) in [
            (Keygen::Dkg, "dkg"),
            (Keygen::Dealer { dealer: None }, "dealer"),
        ] {
            let chain = Chain::with(|m| m.keygen = Keygen::Refresh, |_| {});
            let mut made = Mandate::from_event(&chain.mandate).unwrap();
            made.keygen = origin;
            let made = signed(made.to_event_builder().unwrap(), &chain.owner, -700);
            let mut pool = chain.pool();
            pool.push(made);
            let verified = chain.judge(&pool);
            assert!(verified.ok, "{verified:#?}");
            assert_eq!(verified.keygen.as_deref(), Some(expected));
            // Without the mandate that made it, nothing on record says.
            let alone = chain.judge(&chain.pool());
            assert_eq!(alone.keygen.as_deref(), Some("unknown"));
            let require = Expectation {
                require_dkg: true,
                ..chain.expect()
            };
            assert_eq!(
                problems(&judge(&digest(), &chain.pool(), &require)),
                vec![
                    "the quorum key was not shown to be made by DKG (keygen: unknown); \
                     --require-dkg refuses it"
                ]
            );
        }
    }

    #[test]
    fn release_artifacts_of_a_quorum_are_named_job_slash_name() {
        let chain = Chain::new();
        let binding = ReleaseBinding::new(
            chain.repo.clone(),
            chain.commit.clone(),
            quorum_pipeline::run_id(URL, &chain.commit, &chain.plan.to_hex()),
            vec![ArtifactDigest::new("app", digest())],
            vec![Attestation {
                result: chain.attestation_event.id,
                builder: chain.quorum.public_key(),
            }],
        )
        .unwrap();
        let binding = signed(
            binding.to_event_builder(at(-200)).unwrap(),
            &chain.quorum,
            -200,
        );
        let mut pool = chain.pool();
        pool.retain(|e| e.id != chain.binding.id);
        pool.push(binding);
        let verified = chain.judge(&pool);
        assert!(verified.attested_by.is_empty());
        assert_eq!(
            problems(&verified),
            vec![
                "release artifact \"app\" is not named JOB/NAME, as a quorum's release names them"
            ]
        );
    }
}
