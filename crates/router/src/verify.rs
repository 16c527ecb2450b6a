//! `quorum verify`: is this file a release, who signed it, and on whose authority?
//!
//! From a file's sha256 alone: the newest release binding (8700) that lists it (NIP-94 file
//! metadata gives the places to download it), then one of two checks.
//!
//! - A **quorum-signed** release (its attestation names the binding's own signer as builder):
//!   the quorum attestation (8708) lists these bytes for the same commit; the maintainer's
//!   mandate (8704) it names authorised that quorum key for the repository when the
//!   attestation was made and had not been superseded; at least `t` members agreed; and the
//!   members' commitments and reveals (8705/8706) tell who agreed, disagreed or kept silent.
//! - Any other release: each attestation is a runner's step result that names these bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_dvm::client::{ClientError, JobClient};
use quorum_proto::agreement::{
    BuildResult, COMMITMENT, QUORUM_ATTESTATION, QuorumAttestation, REVEAL, SignedCommitment,
    SignedReveal, Tally,
};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{MANDATE, Mandate, select_mandate};
use quorum_proto::nip34::{REPO_ANNOUNCEMENT, maintainer_set};
use quorum_proto::nip90::JobResult;
use quorum_proto::nostr::{Alphabet, Event, EventId, Filter, SingleLetterTag};
use quorum_proto::quorum_job::hex_list;
use quorum_proto::release::{FILE_METADATA, FileMetadata, RELEASE_BINDING, ReleaseBinding};
use quorum_proto::step::StepReport;
use serde::Serialize;

/// How long one relay query may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Every check held: a release lists these bytes, and either its quorum was authorised by
    /// a maintainer's mandate and `t` members agreed, or (a release without a quorum) at least
    /// one builder attests them.
    pub ok: bool,
    pub sha256: String,
    /// The release binding's event id.
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
    /// Where the file can be downloaded (NIP-94).
    pub urls: Vec<String>,
    /// The quorum key (hex) of a quorum-signed release.
    pub quorum: Option<String>,
    /// The quorum attestation (8708) the release names.
    pub attestation: Option<String>,
    /// The mandate (8704) the attestation names.
    pub mandate: Option<String>,
    /// Who signed that mandate (hex).
    pub mandate_signer: Option<String>,
    /// The mandate's `t` of `n`.
    pub threshold: Option<Threshold>,
    /// Members (hex) the attestation names as agreeing.
    pub agreed: Vec<String>,
    /// Members whose reveal reports an attested file otherwise, whose reveal does not open
    /// their commitment, or who committed twice (equivocated).
    pub disagreed: Vec<String>,
    /// Members with no reveal on the relays.
    pub silent: Vec<String>,
    /// Members the attestation does not name whose reveal matches it (they revealed after the
    /// quorum signed).
    pub late: Vec<String>,
}

/// A mandate's threshold: `t` of the `n` members must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub t: u16,
    pub n: u16,
}

impl Verification {
    fn new(sha256: String) -> Self {
        Verification {
            ok: false,
            sha256,
            release: None,
            signer: None,
            repo: None,
            commit: None,
            run: None,
            name: None,
            attested_by: Vec::new(),
            problems: Vec::new(),
            urls: Vec::new(),
            quorum: None,
            attestation: None,
            mandate: None,
            mandate_signer: None,
            threshold: None,
            agreed: Vec::new(),
            disagreed: Vec::new(),
            silent: Vec::new(),
            late: Vec::new(),
        }
    }

    fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }
}

/// Hashes `path` and checks it against the release events on the client's relays.
pub async fn verify_file(client: &JobClient, path: &Path) -> Result<Verification, VerifyError> {
    let digest = sha256_of(path)?;
    let sha = digest.to_hex();
    let x = SingleLetterTag::lowercase(Alphabet::X);
    let mut verification = Verification::new(sha.clone());
    let files = fetch(
        client,
        Filter::new().kind(FILE_METADATA).custom_tag(x, &sha),
    )
    .await?;
    for file in files
        .iter()
        .filter_map(|e| FileMetadata::from_event(e).ok())
    {
        if file.sha256 == digest {
            verification.urls.extend(file.urls().map(str::to_string));
        }
    }
    let bindings = fetch(
        client,
        Filter::new().kind(RELEASE_BINDING).custom_tag(x, &sha),
    )
    .await?;
    let Some((event, binding)) = bindings
        .iter()
        .filter_map(|e| ReleaseBinding::from_event(e).ok().map(|b| (e, b)))
        .filter(|(_, b)| b.contains(&digest))
        .max_by_key(|(e, _)| e.created_at)
    else {
        verification.problem("no release lists these bytes");
        return Ok(verification);
    };
    verification.release = Some(event.id.to_hex());
    verification.signer = Some(event.pubkey.to_hex());
    verification.repo = Some(binding.repo.to_string());
    verification.commit = Some(binding.commit.clone());
    verification.run = Some(binding.run.clone());
    verification.name = binding
        .artifacts
        .iter()
        .find(|a| a.sha256 == digest)
        .map(|a| a.name.clone());
    if binding
        .attestations
        .iter()
        .any(|a| a.builder == event.pubkey)
    {
        check_quorum(client, event, &binding, &digest, &mut verification).await?;
    } else {
        check_builders(client, event, &binding, &sha, &mut verification).await?;
    }
    verification.ok = !verification.attested_by.is_empty() && verification.problems.is_empty();
    Ok(verification)
}

/// A release without a quorum: each attestation is a runner's step result naming these bytes.
async fn check_builders(
    client: &JobClient,
    release: &Event,
    binding: &ReleaseBinding,
    sha: &str,
    verification: &mut Verification,
) -> Result<(), VerifyError> {
    for attestation in &binding.attestations {
        let Some(result) = fetch_id(client, attestation.result).await? else {
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
        let report = JobResult::from_event(&result)
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
    Ok(())
}

/// A quorum-signed release: its attestation, the mandate behind it, and the members.
async fn check_quorum(
    client: &JobClient,
    release: &Event,
    binding: &ReleaseBinding,
    digest: &Sha256Hex,
    verification: &mut Verification,
) -> Result<(), VerifyError> {
    let quorum = release.pubkey;
    verification.quorum = Some(quorum.to_hex());
    let [named] = binding.attestations.as_slice() else {
        verification.problem(format!(
            "a quorum-signed release names one attestation, its quorum's; this one names {}",
            binding.attestations.len()
        ));
        return Ok(());
    };
    let id = named.result;
    verification.attestation = Some(id.to_hex());

    // 1. The attestation: the quorum's, for these bytes and this commit.
    let Some(event) = fetch_id(client, id).await? else {
        verification.problem(format!("quorum attestation {id} not found on the relays"));
        return Ok(());
    };
    if event.kind != QUORUM_ATTESTATION {
        verification.problem(format!(
            "event {id}, named as the release's attestation, is kind {}, not a quorum \
             attestation (8708)",
            event.kind
        ));
        return Ok(());
    }
    if event.pubkey != quorum {
        verification.problem(format!(
            "attestation {id} is signed by {}, not by the release's signer {}",
            event.pubkey.to_hex(),
            quorum.to_hex()
        ));
        return Ok(());
    }
    let attestation = match QuorumAttestation::from_event(&event) {
        Ok(attestation) => attestation,
        Err(err) => {
            verification.problem(format!("attestation {id} does not parse: {err}"));
            return Ok(());
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

    // 2. The mandate: a maintainer's, for this quorum and repository, in force at the time.
    let mandate_id = attestation.mandate;
    verification.mandate = Some(mandate_id.to_hex());
    let Some(mandate_event) = fetch_id(client, mandate_id).await? else {
        verification.problem(format!(
            "mandate {mandate_id}, named by the attestation, not found on the relays"
        ));
        return Ok(());
    };
    verification.mandate_signer = Some(mandate_event.pubkey.to_hex());
    if mandate_event.kind != MANDATE {
        verification.problem(format!(
            "event {mandate_id}, named as the attestation's mandate, is kind {}, not a mandate \
             (8704)",
            mandate_event.kind
        ));
        return Ok(());
    }
    let mandate = match Mandate::from_event(&mandate_event) {
        Ok(mandate) => mandate,
        Err(err) => {
            verification.problem(format!("mandate {mandate_id} does not parse: {err}"));
            return Ok(());
        }
    };
    let mandate_problems = verification.problems.len();
    verification.threshold = Some(Threshold {
        t: mandate.threshold,
        n: u16::try_from(mandate.n()).unwrap_or(u16::MAX),
    });
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
    let announcements = fetch(
        client,
        Filter::new()
            .kind(REPO_ANNOUNCEMENT)
            .author(binding.repo.owner)
            .identifier(binding.repo.identifier.clone()),
    )
    .await?;
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
    let at = event.created_at;
    if at < mandate_event.created_at {
        verification.problem(format!(
            "attestation {id} was made at {}, before mandate {mandate_id} was signed ({})",
            at.as_secs(),
            mandate_event.created_at.as_secs()
        ));
    }
    if at >= mandate.expiration {
        verification.problem(format!(
            "mandate {mandate_id} had expired ({}) when attestation {id} was made ({})",
            mandate.expiration.as_secs(),
            at.as_secs()
        ));
    }
    let mut mandates = fetch(
        client,
        Filter::new().kind(MANDATE).custom_tag(
            SingleLetterTag::lowercase(Alphabet::A),
            binding.repo.to_string(),
        ),
    )
    .await?;
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
        None if verification.problems.len() == mandate_problems => {
            verification.problem(format!(
                "mandate {mandate_id} did not authorise quorum {} for {} at {}",
                quorum.to_hex(),
                binding.repo,
                at.as_secs()
            ));
        }
        None => {}
    }

    // 3. At least `t` agreeing members, all of the mandate.
    if attestation.agreed.len() < usize::from(mandate.threshold) {
        verification.problem(format!(
            "attestation {id} names {} agreeing members; mandate {mandate_id} needs {}",
            attestation.agreed.len(),
            mandate.threshold
        ));
    }
    for member in &attestation.agreed {
        if mandate.member_index(member).is_none() {
            verification.problem(format!(
                "attestation {id} names {} as agreeing, who is not a member of mandate \
                 {mandate_id}",
                member.to_hex()
            ));
        }
    }

    // 4. Who agreed, disagreed, kept silent: the members' own commitments and reveals.
    let Some(roster) = mandate.roster() else {
        return Ok(());
    };
    let events = fetch(
        client,
        Filter::new()
            .kinds([COMMITMENT, REVEAL])
            .event(attestation.job),
    )
    .await?;
    let commitments: Vec<SignedCommitment> = events
        .iter()
        .filter(|e| e.kind == COMMITMENT)
        .filter_map(|e| SignedCommitment::from_event(e).ok())
        .collect();
    let reveals: Vec<SignedReveal> = events
        .iter()
        .filter(|e| e.kind == REVEAL)
        .filter_map(|e| SignedReveal::from_event(e).ok())
        .collect();
    let members = roster.members().clone();
    let outcome = Tally::new(roster, attestation.job).evaluate(&commitments, &reveals);
    let (mut disagreed, mut silent, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for member in &members {
        let differs = outcome
            .revealed
            .get(member)
            .map(|r| (r.reveal, differences(&r.result, &attestation.files)));
        if attestation.agreed.contains(member) {
            // A member the quorum names must not contradict it in its own signed events. (A
            // reveal that no longer opens anything, e.g. its commitment expired from the
            // relays, is no evidence either way.)
            if outcome.equivocated.contains_key(member) {
                verification.problem(format!(
                    "{}, named as agreeing, equivocated: it committed twice for job {}",
                    member.to_hex(),
                    attestation.job
                ));
            } else if let Some((reveal, Some(diff))) = differs {
                verification.problem(format!(
                    "{}, named as agreeing, revealed otherwise in {reveal}: {diff}",
                    member.to_hex()
                ));
            }
        } else if outcome.equivocated.contains_key(member) || outcome.invalid.contains_key(member) {
            disagreed.push(member.to_hex());
        } else {
            match differs {
                Some((_, Some(_))) => disagreed.push(member.to_hex()),
                Some((_, None)) => late.push(member.to_hex()),
                None => silent.push(member.to_hex()),
            }
        }
    }
    verification.disagreed = disagreed;
    verification.silent = silent;
    verification.late = late;
    Ok(())
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

async fn fetch(client: &JobClient, filter: Filter) -> Result<Vec<Event>, VerifyError> {
    Ok(client.fetch(filter, FETCH_TIMEOUT).await?)
}

/// The event with this id (signature-checked by the client), if a relay has it.
async fn fetch_id(client: &JobClient, id: EventId) -> Result<Option<Event>, VerifyError> {
    Ok(fetch(client, Filter::new().id(id))
        .await?
        .into_iter()
        .find(|e| e.id == id))
}
