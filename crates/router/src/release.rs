//! Publishing a run's release: NIP-94 file metadata (1063) for each artifact of the jobs marked
//! `release: true`, and our release binding (8700) naming the repository, commit, run, every
//! artifact's sha256 and the runner results that attest them; then, for other Nostr apps, the
//! NIP-82 shapes: one asset (3063) per artifact, the release (30063) listing them and the
//! application (32267) naming the repository (docs/protocol.md §11.5).
//!
//! A release job run by a quorum (`mode: quorum`) already has its binding, signed by the quorum
//! key when the members agreed; this module publishes only the file metadata for it, after
//! storing a verification bundle (`quorum_proto::bundle`: every signed event `quorum verify`
//! needs, gathered from the relays as verify gathers them) on the artifacts' Blossom servers,
//! named by a `bundle` tag in the 1063 and 3063 events, so that the release still verifies once
//! relays dropped its expired mandate. Release jobs run by single DVMs get one binding signed
//! by the key that ran the pipeline, naming the runner results that attest them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use quorum_blossom::client::BlossomClient;
use quorum_dvm::client::JobClient;
use quorum_pipeline::Plan;
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{EventId, PublicKey, Timestamp};
use quorum_proto::release::{
    AssetRef, Attestation, FileMetadata, ReleaseBinding, SoftwareApplication, SoftwareAsset,
    SoftwareRelease,
};
use quorum_proto::step::{ArtifactRef, StepJob};

use crate::{JobRecord, RunContext, RunOutcome, run_id};

/// How long to look for the runners' NIP-89 announcements (their platform).
const ANNOUNCEMENT_WAIT: Duration = Duration::from_secs(2);
/// The NIP-82 platform when no runner announcement says one.
pub const UNKNOWN_PLATFORM: &str = "unknown";

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
    /// The NIP-82 software assets (3063), one per artifact, in the order of `files`.
    pub assets: Vec<EventId>,
    /// The NIP-82 software release (30063) listing `assets`; `None` when no artifact was
    /// released (a wrapped DVM's result).
    pub software_release: Option<EventId>,
    /// The NIP-82 software application (32267) the release belongs to; `None` like
    /// `software_release`.
    pub application: Option<EventId>,
    /// The NIP-82 version: [`ReleaseOptions::version`], or [`default_version`].
    pub version: String,
    /// The verification bundle stored for the quorum-signed part of the release: its sha256
    /// and the URLs that serve it.
    pub bundle: Option<(Sha256Hex, Vec<String>)>,
    /// Why no bundle was stored, when one should have been.
    pub bundle_error: Option<String>,
}

/// What the caller knows beyond the run: a version, and copies of the artifacts elsewhere.
#[derive(Debug, Clone, Default)]
pub struct ReleaseOptions {
    /// The version (e.g. the git tag at the commit); default [`default_version`].
    pub version: Option<String>,
    /// More URLs serving an artifact's bytes (e.g. mirrors made with BUD-04), by sha256 hex:
    /// added as `fallback`s in 1063 and `url`s in 3063, after the runner's own.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Stores the verification bundle of a quorum-signed release on the Blossom servers that
    /// hold its artifacts (the runners' and the mirrors). `None`: no bundle.
    pub bundle_uploader: Option<BlossomClient>,
}

/// The version of a release made from an untagged commit: `0.0.0-g<first 12 hex of the
/// commit>`, a semver pre-release (the `g`, as in `git describe`, keeps an all-digit hash a
/// valid identifier) that sorts below any real version.
pub fn default_version(commit: &str) -> String {
    format!("0.0.0-g{}", &commit[..commit.len().min(12)])
}

/// The MIME type of an artifact, by its name: the tar family by extension, anything else
/// `application/octet-stream`.
pub fn artifact_mime(name: &str) -> &'static str {
    let name = name.to_ascii_lowercase();
    let by_suffix = [
        (".tar", "application/x-tar"),
        (".tar.gz", "application/gzip"),
        (".tgz", "application/gzip"),
        (".tar.xz", "application/x-xz"),
        (".tar.bz2", "application/x-bzip2"),
        (".tar.zst", "application/zstd"),
    ];
    by_suffix
        .iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map_or("application/octet-stream", |(_, mime)| mime)
}

/// The artifacts a successful run releases (those of its `release: true` jobs), with the job
/// that made each; empty when the run failed or releases nothing.
pub fn released_artifacts<'a>(
    plan: &Plan,
    outcome: &'a RunOutcome,
) -> Vec<(&'a JobRecord, &'a ArtifactRef)> {
    if !outcome.succeeded {
        return Vec::new();
    }
    outcome
        .jobs
        .iter()
        .filter(|record| plan.job(&record.id).is_some_and(|job| job.release))
        .flat_map(|record| {
            record
                .report
                .iter()
                .flat_map(|r| &r.artifacts)
                .map(move |a| (record, a))
        })
        .collect()
}

/// Publishes the release of a successful run, if the pipeline marks any job `release: true`,
/// with default [`ReleaseOptions`].
pub async fn publish_release(
    client: &JobClient,
    plan: &Plan,
    context: &RunContext,
    outcome: &RunOutcome,
) -> Result<Option<Release>, String> {
    publish_release_with(client, plan, context, outcome, &ReleaseOptions::default()).await
}

/// Publishes the release of a successful run, if the pipeline marks any job `release: true`:
/// 1063 per artifact, the binding (unless quorums signed theirs), then the NIP-82 events.
/// Everything but a quorum's binding is signed by `client`'s key.
pub async fn publish_release_with(
    client: &JobClient,
    plan: &Plan,
    context: &RunContext,
    outcome: &RunOutcome,
    options: &ReleaseOptions,
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
    let mut described = Vec::new();
    // The quorum-signed part first: its bundle is named by every event that follows.
    let quorum_artifacts: Vec<(&JobRecord, &ArtifactRef)> = released
        .iter()
        .filter(|r| r.quorum.is_some())
        .flat_map(|r| {
            r.report
                .iter()
                .flat_map(|rep| &rep.artifacts)
                .map(move |a| (*r, a))
        })
        .collect();
    let (bundle, bundle_error) = match &options.bundle_uploader {
        Some(uploader) if !quorum_artifacts.is_empty() => {
            match store_bundle(client, uploader, &repo, &quorum_artifacts, options).await {
                Ok(stored) => (Some(stored), None),
                Err(reason) => {
                    tracing::warn!("no verification bundle stored: {reason}");
                    (None, Some(reason))
                }
            }
        }
        _ => (None, None),
    };
    let with_bundle = ReleaseOptions {
        bundle_uploader: None,
        ..options.clone()
    };
    let bundled = Bundled {
        options: &with_bundle,
        bundle: bundle.as_ref(),
    };
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
                files.push(publish_metadata(client, artifact, bundled).await?);
                described.push((record, artifact));
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
            files.push(
                publish_metadata(
                    client,
                    artifact,
                    Bundled {
                        options: &with_bundle,
                        bundle: None,
                    },
                )
                .await?,
            );
            described.push((record, artifact));
        }
    }
    if attestations.is_empty()
        && let Some(&(binding, signer)) = bindings.first()
    {
        // Every release job ran in quorum mode: the quorums' bindings are the release.
        let nip82 = publish_nip82(client, &repo, context, bundled, &described).await?;
        return Ok(Some(Release {
            binding,
            signer,
            bindings,
            files,
            assets: nip82.assets,
            software_release: nip82.release,
            application: nip82.application,
            version: nip82.version,
            bundle,
            bundle_error,
        }));
    }
    let binding = ReleaseBinding::new(
        repo.clone(),
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
    let nip82 = publish_nip82(client, &repo, context, bundled, &described).await?;
    Ok(Some(Release {
        binding,
        signer,
        bindings,
        files,
        assets: nip82.assets,
        software_release: nip82.release,
        application: nip82.application,
        version: nip82.version,
        bundle,
        bundle_error,
    }))
}

/// The release options and the bundle the quorum-signed artifacts' events name.
#[derive(Clone, Copy)]
struct Bundled<'a> {
    options: &'a ReleaseOptions,
    bundle: Option<&'a (Sha256Hex, Vec<String>)>,
}

impl Bundled<'_> {
    /// The `bundle` tag of an artifact's events. Callers pass a bundle only for the
    /// quorum-released artifacts, each of which the bundle covers.
    fn tag(&self) -> Option<quorum_proto::nostr::Tag> {
        let (sha, urls) = self.bundle?;
        Some(quorum_proto::bundle::bundle_tag(sha, urls))
    }
}

/// Gathers every signed event that verifying the quorum-released `artifacts` needs (as
/// `quorum verify` gathers them), stores them as one verification bundle on the Blossom
/// servers that hold the artifacts, and returns its sha256 and URLs.
async fn store_bundle(
    client: &JobClient,
    uploader: &BlossomClient,
    repo: &RepoCoordinate,
    artifacts: &[(&JobRecord, &ArtifactRef)],
    options: &ReleaseOptions,
) -> Result<(Sha256Hex, Vec<String>), String> {
    let expect = crate::verify::Expectation {
        repo: Some(repo.clone()),
        ..Default::default()
    };
    let mut pool = Vec::new();
    let mut digests = Vec::new();
    let mut servers: Vec<url::Url> = Vec::new();
    for (_, artifact) in artifacts {
        let digest = Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?;
        digests.push(digest);
        for url in artifact_urls(artifact, options) {
            if let Ok(url) = url::Url::parse(&url)
                && let Ok(root) = url.join("/")
                && !servers.contains(&root)
            {
                servers.push(root);
            }
        }
    }
    // One gathering per binding is enough: it covers every artifact the binding lists.
    let mut seen_bindings = BTreeSet::new();
    for (record, artifact) in artifacts {
        let binding = record.quorum.as_ref().and_then(|q| q.release.clone());
        if !seen_bindings.insert(binding) {
            continue;
        }
        let digest = Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?;
        crate::verify::gather(client, &digest, &expect, &mut pool, &mut Vec::new())
            .await
            .map_err(|e| e.to_string())?;
    }
    // The release's own metadata is not evidence; everything else is.
    pool.retain(|e| e.kind != quorum_proto::release::FILE_METADATA);
    let bundle = quorum_proto::bundle::VerificationBundle::new(digests, pool);
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = scratch.path().join("verification-bundle.json");
    std::fs::write(&path, bundle.to_json()).map_err(|e| e.to_string())?;
    let outcomes = uploader
        .upload_to_many(&servers, &path)
        .await
        .map_err(|e| e.to_string())?;
    let mut sha = None;
    let mut urls = Vec::new();
    let mut refusals = Vec::new();
    for outcome in outcomes {
        match outcome {
            quorum_blossom::client::ServerOutcome::Stored { uploaded, .. } => {
                sha = Some(uploaded.descriptor.sha256);
                urls.push(uploaded.descriptor.url.clone());
            }
            other => refusals.push(other.server().to_string()),
        }
    }
    match sha {
        Some(sha) => Ok((sha, urls)),
        None => Err(format!(
            "no Blossom server stored the verification bundle (tried {})",
            refusals.join(", ")
        )),
    }
}

/// The runner's URLs of an artifact, then the caller's mirrors of it (no URL twice).
fn artifact_urls(artifact: &ArtifactRef, options: &ReleaseOptions) -> Vec<String> {
    let mut urls = artifact.blob.urls.clone();
    for url in options
        .mirrors
        .get(&artifact.blob.sha256)
        .into_iter()
        .flatten()
    {
        if !urls.contains(url) {
            urls.push(url.clone());
        }
    }
    urls
}

/// Publishes the NIP-94 file metadata (1063) of one artifact (naming its verification
/// bundle, if any).
async fn publish_metadata(
    client: &JobClient,
    artifact: &ArtifactRef,
    bundled: Bundled<'_>,
) -> Result<EventId, String> {
    let sha = Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?;
    let metadata = FileMetadata::for_artifact(
        &artifact_urls(artifact, bundled.options),
        artifact_mime(&artifact.name),
        sha,
        artifact.blob.size,
    )
    .ok_or_else(|| format!("artifact {} is on no Blossom server", artifact.name))?;
    let builder = metadata.to_event_builder().tags(bundled.tag());
    let event = client
        .publish_event(builder)
        .await
        .map_err(|e| format!("cannot publish file metadata: {e}"))?;
    Ok(event.id)
}

/// The NIP-82 events of one release.
struct Nip82 {
    assets: Vec<EventId>,
    release: Option<EventId>,
    application: Option<EventId>,
    version: String,
}

/// Publishes a 3063 asset per released artifact, the 30063 release listing them and the 32267
/// application (`d` = the repository's identifier, `a` = the repository). The platform of an
/// asset is `<os>-<arch>` from the NIP-89 announcement of the runner that built it (the step
/// report carries none); unknown runners give assets no `f`, and the release and application
/// `unknown` when no platform is known at all (32267 needs one).
async fn publish_nip82(
    client: &JobClient,
    repo: &RepoCoordinate,
    context: &RunContext,
    bundled: Bundled<'_>,
    described: &[(&JobRecord, &ArtifactRef)],
) -> Result<Nip82, String> {
    let options = bundled.options;
    let version = options
        .version
        .clone()
        .unwrap_or_else(|| default_version(&context.commit));
    if described.is_empty() {
        return Ok(Nip82 {
            assets: Vec::new(),
            release: None,
            application: None,
            version,
        });
    }
    let platforms = runner_platforms(client).await;
    let app = repo.identifier.clone();
    let mut assets = Vec::new();
    let mut all_platforms = BTreeSet::new();
    for (record, artifact) in described {
        let platform = builder_of(record).and_then(|key| platforms.get(&key).cloned());
        all_platforms.extend(platform.clone());
        let asset = SoftwareAsset {
            app: app.clone(),
            sha256: Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?,
            version: version.clone(),
            urls: artifact_urls(artifact, options),
            mime: artifact_mime(&artifact.name).to_string(),
            size: Some(artifact.blob.size),
            platforms: platform.into_iter().collect(),
            filename: artifact.name.rsplit('/').next().map(str::to_string),
            variant: None,
            commit: Some(context.commit.clone()),
            min_platform_version: None,
            target_platform_version: None,
            apk_certificate_hash: None,
        };
        let mut builder = asset.to_event_builder().map_err(|e| e.to_string())?;
        if record.quorum.is_some() {
            builder = builder.tags(bundled.tag());
        }
        let event = client
            .publish_event(builder)
            .await
            .map_err(|e| format!("cannot publish the software asset: {e}"))?;
        assets.push(event.id);
    }
    let platforms: Vec<String> = if all_platforms.is_empty() {
        vec![UNKNOWN_PLATFORM.to_string()]
    } else {
        all_platforms.into_iter().collect()
    };
    let release = SoftwareRelease {
        app: app.clone(),
        version: version.clone(),
        channel: None,
        platforms: platforms.clone(),
        assets: assets
            .iter()
            .map(|&id| AssetRef { id, relay: None })
            .collect(),
        content: format!("{repo} at {}", context.commit),
    };
    let release = client
        .publish_event(release.to_event_builder())
        .await
        .map_err(|e| format!("cannot publish the software release: {e}"))?;
    let mut application = SoftwareApplication::new(app.clone(), platforms);
    application.name = Some(app);
    application.repo = Some(repo.clone());
    let builder = application.to_event_builder().map_err(|e| e.to_string())?;
    let application = client
        .publish_event(builder)
        .await
        .map_err(|e| format!("cannot publish the software application: {e}"))?;
    Ok(Nip82 {
        assets,
        release: Some(release.id),
        application: Some(application.id),
        version,
    })
}

/// The runner whose build counted: the provider, else the first member a quorum named.
fn builder_of(record: &JobRecord) -> Option<PublicKey> {
    record
        .provider
        .as_deref()
        .or_else(|| {
            record
                .quorum
                .as_ref()
                .and_then(|q| q.agreed.first().map(String::as_str))
        })
        .and_then(|key| PublicKey::parse(key).ok())
}

/// `<os>-<arch>` of every runner announcing itself (NIP-89) on the client's relays.
async fn runner_platforms(client: &JobClient) -> HashMap<PublicKey, String> {
    match client.discover(StepJob::kind(), ANNOUNCEMENT_WAIT).await {
        Ok(found) => found
            .into_iter()
            .map(|(key, announcement)| {
                let caps = &announcement.offer.capabilities;
                (key, format!("{}-{}", caps.os, caps.arch))
            })
            .collect(),
        Err(_) => HashMap::new(),
    }
}
