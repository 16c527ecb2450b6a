//! Publishing a run's release: NIP-94 file metadata (1063) for each artifact of the jobs marked
//! `release: true`, and our release binding (8700) naming the repository, commit, run, every
//! artifact's sha256 and the runner results that attest them.
//!
//! In this version the binding is signed by the key that ran the pipeline; the quorum issue
//! replaces that signature with the FROST quorum key (the binding is already spelled
//! canonically for it).

use quorum_dvm::client::JobClient;
use quorum_pipeline::Plan;
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nostr::{EventId, PublicKey, Timestamp};
use quorum_proto::release::{Attestation, FileMetadata, ReleaseBinding};

use crate::{RunContext, RunOutcome, run_id};

/// What was published.
#[derive(Debug, Clone)]
pub struct Release {
    /// The release binding's event id.
    pub binding: EventId,
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
    for record in released {
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
            files.push(event.id);
        }
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
    Ok(Some(Release {
        binding: event.id,
        files,
    }))
}
