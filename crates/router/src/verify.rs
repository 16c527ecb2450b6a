//! `quorum verify` (first version): is this file a release, and who attests to its bytes?
//!
//! From a file's sha256 alone: the release bindings (8700) that list it, the signer of each,
//! and for each attestation the runner's result event, re-parsed, whose step report must name
//! exactly this sha256. NIP-94 file metadata gives the places to download it. The quorum issue
//! adds the mandate check: which key may sign releases for the repository.

use std::path::Path;
use std::time::Duration;

use quorum_dvm::client::JobClient;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip90::JobResult;
use quorum_proto::nostr::{Alphabet, Filter, SingleLetterTag};
use quorum_proto::release::{FILE_METADATA, FileMetadata, RELEASE_BINDING, ReleaseBinding};
use quorum_proto::step::StepReport;
use serde::Serialize;

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Every check held: a release lists these bytes and at least one builder attests them.
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
    /// Builders whose signed result names exactly these bytes.
    pub attested_by: Vec<String>,
    /// Attestations that did not hold, with why.
    pub problems: Vec<String>,
    /// Where the file can be downloaded (NIP-94).
    pub urls: Vec<String>,
}

/// Hashes `path` and checks it against the release events on the client's relays.
pub async fn verify_file(client: &JobClient, path: &Path) -> Result<Verification, String> {
    // Streamed: a release artifact can be larger than memory.
    let sha = {
        use sha2::{Digest, Sha256};
        let mut file = std::fs::File::open(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hex::encode(hasher.finalize())
    };
    let digest = Sha256Hex::parse(&sha).map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(5);
    let x = SingleLetterTag::lowercase(Alphabet::X);
    let mut verification = Verification {
        ok: false,
        sha256: sha.clone(),
        release: None,
        signer: None,
        repo: None,
        commit: None,
        run: None,
        name: None,
        attested_by: Vec::new(),
        problems: Vec::new(),
        urls: Vec::new(),
    };
    let files = client
        .fetch(
            Filter::new().kind(FILE_METADATA).custom_tag(x, &sha),
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    for file in files
        .iter()
        .filter_map(|e| FileMetadata::from_event(e).ok())
    {
        if file.sha256 == digest {
            verification.urls.extend(file.urls().map(str::to_string));
        }
    }
    let bindings = client
        .fetch(
            Filter::new().kind(RELEASE_BINDING).custom_tag(x, &sha),
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    let Some((event, binding)) = bindings
        .iter()
        .filter_map(|e| ReleaseBinding::from_event(e).ok().map(|b| (e, b)))
        .filter(|(_, b)| b.contains(&digest))
        .max_by_key(|(e, _)| e.created_at)
    else {
        verification
            .problems
            .push("no release lists these bytes".into());
        return Ok(verification);
    };
    verification.release = Some(event.id.to_hex());
    verification.signer = Some(event.pubkey.to_hex());
    verification.repo = Some(binding.repo.to_string());
    verification.commit = Some(binding.commit.clone());
    verification.run = Some(binding.run.clone());
    let name = binding
        .artifacts
        .iter()
        .find(|a| a.sha256 == digest)
        .map(|a| a.name.clone());
    verification.name = name.clone();
    for attestation in &binding.attestations {
        let results = client
            .fetch(Filter::new().id(attestation.result), timeout)
            .await
            .unwrap_or_default();
        let Some(result) = results.first() else {
            verification
                .problems
                .push(format!("result {} not found", attestation.result));
            continue;
        };
        if result.pubkey != attestation.builder {
            verification.problems.push(format!(
                "result {} is not signed by the builder it names",
                attestation.result
            ));
            continue;
        }
        let report = JobResult::from_event(result)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                serde_json::from_str::<StepReport>(&r.content).map_err(|e| e.to_string())
            });
        match report {
            Ok(report) if report.commit != binding.commit => verification.problems.push(format!(
                "{} built commit {}, not {}",
                attestation.builder.to_hex(),
                report.commit,
                binding.commit
            )),
            Ok(report) if report.artifacts.iter().any(|a| a.blob.sha256 == sha) => {
                verification.attested_by.push(attestation.builder.to_hex())
            }
            Ok(_) => verification.problems.push(format!(
                "{} did not report these bytes",
                attestation.builder.to_hex()
            )),
            Err(err) => verification.problems.push(format!(
                "result {} is not a step report: {err}",
                attestation.result
            )),
        }
    }
    verification.ok = !verification.attested_by.is_empty() && verification.problems.is_empty();
    Ok(verification)
}
