//! Publishing a run's release: NIP-94 file metadata (1063) for each artifact of the jobs marked
//! `release: true`, and our release binding (8700) naming the repository, commit, run, every
//! artifact's sha256 and the runner results that attest them.
//!
//! A release job run by a quorum (`mode: quorum`) already has its binding, signed by the quorum
//! key when the members agreed; this module publishes only the file metadata for it. Release
//! jobs run by single DVMs get one binding signed by the key that ran the pipeline, naming the
//! runner results that attest them.

use quorum_dvm::client::JobClient;
use quorum_pipeline::Plan;
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nostr::{EventId, PublicKey, Timestamp};
use quorum_proto::release::{Attestation, FileMetadata, ReleaseBinding};
use quorum_proto::step::ArtifactRef;

use crate::{RunContext, RunOutcome, run_id};

/// What was published.
#[derive(Debug, Clone)]
pub struct Release {
    /// The release binding's event id (the first, when several quorums each signed one).
    pub binding: EventId,
    /// Who signed that binding: the quorum key, or the key that ran the pipeline.
    pub signer: PublicKey,
    /// Every binding of the release, with its signer: one per quorum release job, plus one
    /// for the release jobs single DVMs ran.
    pub bindings: Vec<(EventId, PublicKey)>,
    /// The NIP-94 file metadata events, one per artifact.
    pub files: Vec<EventId>,
}

/// Publishes the release of a successful run, if the pipeline marks any job `release: true`.
pub async fn publish_release(
    client: &JobClient,
    plan: &Plan,
    context: &RunContext,
    outcome: &RunOutcome,
) -> Result<Option<Release>, String> {
    let released: Vec<_> = outcome
        .jobs
        .iter()
        .filter(|record| plan.job(&record.id).is_some_and(|job| job.release))
        .collect();
    if released.is_empty() || !outcome.succeeded {
        return Ok(None);
    }
    let repo = context.repo_id.clone().ok_or_else(|| {
        "a release names the repository by its NIP-34 identity; give the run its owner and \
         identifier"
            .to_string()
    })?;
    let mut artifacts = Vec::new();
    let mut attestations = Vec::new();
    let mut files = Vec::new();
    let mut bindings = Vec::new();
    for record in released {
        if let Some(quorum) = &record.quorum {
            let Some(binding) = &quorum.release else {
                return Err(format!(
                    "release job {} ran in quorum mode but has no quorum-signed binding",
                    record.id
                ));
            };
            let binding = EventId::from_hex(binding).map_err(|e| e.to_string())?;
            let signer = PublicKey::parse(&quorum.pubkey).map_err(|e| e.to_string())?;
            bindings.push((binding, signer));
            // A wrapped DVM's result has no Blossom artifacts to describe.
            for artifact in record.report.iter().flat_map(|r| &r.artifacts) {
                files.push(publish_metadata(client, artifact).await?);
            }
            continue;
        }
        let (Some(report), Some(result), Some(provider)) =
            (&record.report, &record.result, &record.provider)
        else {
            return Err(format!("release job {} has no runner result", record.id));
        };
        let result = EventId::from_hex(result).map_err(|e| e.to_string())?;
        let builder = PublicKey::parse(provider).map_err(|e| e.to_string())?;
        attestations.push(Attestation { result, builder });
        for artifact in &report.artifacts {
            let sha = Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?;
            artifacts.push(ArtifactDigest::new(
                format!("{}/{}", record.id, artifact.name),
                sha,
            ));
            files.push(publish_metadata(client, artifact).await?);
        }
    }
    if attestations.is_empty()
        && let Some(&(binding, signer)) = bindings.first()
    {
        // Every release job ran in quorum mode: the quorums' bindings are the release.
        return Ok(Some(Release {
            binding,
            signer,
            bindings,
            files,
        }));
    }
    let binding = ReleaseBinding::new(
        repo,
        context.commit.clone(),
        run_id(&context.repo, &context.commit, plan),
        artifacts,
        attestations,
    )
    .map_err(|e| e.to_string())?;
    let builder = binding
        .to_event_builder(Timestamp::now())
        .map_err(|e| e.to_string())?;
    let event = client
        .publish_event(builder)
        .await
        .map_err(|e| format!("cannot publish the release: {e}"))?;
    bindings.push((event.id, event.pubkey));
    let (binding, signer) = bindings[0];
    Ok(Some(Release {
        binding,
        signer,
        bindings,
        files,
    }))
}

/// Publishes the NIP-94 file metadata (1063) of one artifact.
async fn publish_metadata(client: &JobClient, artifact: &ArtifactRef) -> Result<EventId, String> {
    let sha = Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?;
    let metadata = FileMetadata::for_artifact(
        &artifact.blob.urls,
        "application/octet-stream",
        sha,
        artifact.blob.size,
    )
    .ok_or_else(|| format!("artifact {} is on no Blossom server", artifact.name))?;
    let event = client
        .publish_event(metadata.to_event_builder())
        .await
        .map_err(|e| format!("cannot publish file metadata: {e}"))?;
    Ok(event.id)
}
