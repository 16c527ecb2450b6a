//! Publishing a run's release: NIP-94 file metadata (1063) for each artifact of the jobs marked
//! `release: true`, and our release binding (8700) naming the repository, commit, run, every
//! artifact's sha256 and the runner results that attest them; then, for other Nostr apps, the
//! NIP-82 shapes: one asset (3063) per artifact, the release (30063) listing them and the
//! application (32267) naming the repository (docs/protocol.md §11.5).
//!
//! The NIP-82 events are shaped for zapstore, their main reader: a channel (`c`) on the 30063,
//! and `f` values from zapstore's platform list only. An artifact whose platform is unknown
//! gets no 3063 (its 1063 and binding are still published) and [`Release::nip82_error`] says
//! why. zapstore admits publishers by key, so [`ReleaseOptions::nip82_signer`] lets a
//! maintainer's key (a key file or a NIP-46 bunker) sign the NIP-82 events instead of the key
//! that ran the pipeline; the binding stays the verifiable record either way.
//!
//! A release job run by a quorum (`mode: quorum`) already has its binding, signed by the quorum
//! key when the members agreed; this module publishes only the file metadata for it, after
//! storing a verification bundle (`quorum_proto::bundle`: every signed event `quorum verify`
//! needs, gathered from the relays as verify gathers them) on the artifacts' Blossom servers,
//! named by a `bundle` tag in the 1063 and 3063 events, so that the release still verifies once
//! relays dropped its expired mandate. Release jobs run by single DVMs get one binding signed
//! by the key that ran the pipeline, naming the runner results that attest them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use quorum_blossom::client::BlossomClient;
use quorum_dvm::client::JobClient;
use quorum_pipeline::Plan;
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{EventBuilder, EventId, NostrSigner, PublicKey, Timestamp};
use quorum_proto::release::{
    AssetRef, Attestation, FileMetadata, RELEASE_BINDING, ReleaseBinding, SoftwareApplication,
    SoftwareAsset, SoftwareRelease, zapstore_platform,
};
use quorum_proto::step::{ArtifactRef, ArtifactSpec, OCI_MANIFEST_MEDIA_TYPE, StepJob};

use crate::{JobRecord, RunContext, RunOutcome, run_id};

/// How long to look for the runners' NIP-89 announcements (their platform).
const ANNOUNCEMENT_WAIT: Duration = Duration::from_secs(2);
/// The NIP-82 channel of a release version (zapstore's publisher defaults to it).
pub const CHANNEL_MAIN: &str = "main";
/// The NIP-82 channel of a pre-release version.
pub const CHANNEL_BETA: &str = "beta";

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
    /// The NIP-82 channel (`c` of the 30063): [`ReleaseOptions::channel`], or
    /// [`default_channel`].
    pub channel: String,
    /// Who signed the NIP-82 events: [`ReleaseOptions::nip82_signer`]'s key, else the key that
    /// ran the pipeline; `None` when none was published.
    pub nip82_signer: Option<PublicKey>,
    /// Why some or all NIP-82 events were not published (an artifact with no platform zapstore
    /// accepts, a signer that did not sign, a relay that refused), while the 1063s and the
    /// binding were.
    pub nip82_error: Option<String>,
    /// The verification bundle stored for the quorum-signed part of the release: its sha256
    /// and the URLs that serve it.
    pub bundle: Option<(Sha256Hex, Vec<String>)>,
    /// Why no bundle was stored, when one should have been.
    pub bundle_error: Option<String>,
}

/// What the caller knows beyond the run: a version, copies of the artifacts elsewhere, and who
/// signs the NIP-82 events.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The version (e.g. the git tag at the commit); default [`default_version`].
    pub version: Option<String>,
    /// The NIP-82 channel (`main`, `beta`, `nightly`, `dev`); default [`default_channel`].
    pub channel: Option<String>,
    /// Signs the NIP-82 events (32267/30063/3063) instead of the key that ran the pipeline:
    /// zapstore admits publishers by key (an allowlist or web-of-trust rank) and lets one key
    /// own an app id, so a maintainer's key, local or behind a NIP-46 bunker, publishes there.
    /// The 1063s and the binding are still signed as before.
    pub nip82_signer: Option<Arc<dyn NostrSigner>>,
    /// More URLs serving an artifact's bytes (e.g. mirrors made with BUD-04), by sha256 hex:
    /// added as `fallback`s in 1063 and `url`s in 3063, after the runner's own.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Stores the verification bundle of a quorum-signed release on the Blossom servers that
    /// hold its artifacts (the runners' and the mirrors). `None`: no bundle.
    pub bundle_uploader: Option<BlossomClient>,
    /// How long to wait for a quorum's release binding that it signs only after the run's
    /// approval gates passed; default [`BINDING_WAIT`].
    pub binding_wait: Duration,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            version: None,
            channel: None,
            nip82_signer: None,
            mirrors: BTreeMap::new(),
            bundle_uploader: None,
            binding_wait: BINDING_WAIT,
        }
    }
}

/// How long the engine waits for a binding the quorum signs after the approval gates: the
/// members look for verdicts every few seconds, then sign in one FROST session.
pub const BINDING_WAIT: Duration = Duration::from_secs(90);

/// The release binding `quorum` (hex) signed for `attestation` (hex), once it is on the
/// relays (checked: signed by the quorum key, naming the attestation); `None` after `wait`.
async fn await_binding(
    client: &JobClient,
    quorum: &str,
    attestation: &str,
    wait: Duration,
) -> Option<EventId> {
    let quorum = PublicKey::parse(quorum).ok()?;
    let attestation = EventId::from_hex(attestation).ok()?;
    let filter = quorum_proto::nostr::Filter::new()
        .kind(RELEASE_BINDING)
        .author(quorum)
        .event(attestation);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = client
            .fetch(filter.clone(), Duration::from_secs(3))
            .await
            .unwrap_or_default();
        let binding = found.into_iter().find(|event| {
            event.pubkey == quorum
                && event.verify().is_ok()
                && ReleaseBinding::from_event(event).is_ok_and(|b| {
                    b.attestations
                        .iter()
                        .any(|a| a.result == attestation && a.builder == quorum)
                })
        });
        if let Some(binding) = binding {
            return Some(binding.id);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The version of a release made from an untagged commit: `0.0.0-g<first 12 hex of the
/// commit>`, a semver pre-release (the `g`, as in `git describe`, keeps an all-digit hash a
/// valid identifier) that sorts below any real version.
pub fn default_version(commit: &str) -> String {
    format!("0.0.0-g{}", &commit[..commit.len().min(12)])
}

/// The channel of a version: [`CHANNEL_BETA`] for a semver pre-release (a `-` after the
/// numbers, as in `1.0.0-rc1` or [`default_version`]'s `0.0.0-g…`), else [`CHANNEL_MAIN`].
pub fn default_channel(version: &str) -> &'static str {
    if version.contains('-') {
        CHANNEL_BETA
    } else {
        CHANNEL_MAIN
    }
}

/// The MIME type of an artifact, by its name: an OCI image layout (`oci:PATH`, whose blob is
/// the image manifest) the OCI image manifest media type, the tar family by extension,
/// anything else `application/octet-stream`.
pub fn artifact_mime(name: &str) -> &'static str {
    if let ArtifactSpec::OciLayout(_) = ArtifactSpec::of(name) {
        return OCI_MANIFEST_MEDIA_TYPE;
    }
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
    // A quorum withholds the binding of a release that depends on approval gates until they
    // passed; they have now (the run succeeded), so it is on its way.
    let mut signed_after: Vec<JobRecord> = Vec::new();
    for record in &released {
        let Some(quorum) = &record.quorum else {
            continue;
        };
        if quorum.release.is_some() {
            continue;
        }
        let Some(attestation) = quorum.attestation.as_deref() else {
            continue;
        };
        let binding = await_binding(client, &quorum.pubkey, attestation, options.binding_wait)
            .await
            .ok_or_else(|| {
                format!(
                    "release job {}: the quorum signed no release binding within {} s after \
                     the approval gates passed",
                    record.id,
                    options.binding_wait.as_secs()
                )
            })?;
        let mut record = (*record).clone();
        if let Some(quorum) = record.quorum.as_mut() {
            quorum.release = Some(binding.to_hex());
        }
        signed_after.push(record);
    }
    let released: Vec<&JobRecord> = released
        .into_iter()
        .map(|r| signed_after.iter().find(|s| s.id == r.id).unwrap_or(r))
        .collect();
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
        let nip82 = publish_nip82(client, &repo, context, bundled, &described).await;
        return Ok(Some(Release {
            binding,
            signer,
            bindings,
            files,
            assets: nip82.assets,
            software_release: nip82.release,
            application: nip82.application,
            version: nip82.version,
            channel: nip82.channel,
            nip82_signer: nip82.signer,
            nip82_error: nip82.error,
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
    let nip82 = publish_nip82(client, &repo, context, bundled, &described).await;
    Ok(Some(Release {
        binding,
        signer,
        bindings,
        files,
        assets: nip82.assets,
        software_release: nip82.release,
        application: nip82.application,
        version: nip82.version,
        channel: nip82.channel,
        nip82_signer: nip82.signer,
        nip82_error: nip82.error,
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
    channel: String,
    signer: Option<PublicKey>,
    error: Option<String>,
}

/// Who signs and publishes the NIP-82 events.
enum Nip82Signer<'a> {
    /// The key that ran the pipeline.
    Client(&'a JobClient),
    /// A maintainer's signer; `client` only carries the signed events to the relays.
    Maintainer {
        client: &'a JobClient,
        signer: &'a Arc<dyn NostrSigner>,
        key: PublicKey,
    },
}

impl<'a> Nip82Signer<'a> {
    /// The client that carries the events to the relays, whoever signs them.
    fn client(&self) -> &'a JobClient {
        match self {
            Nip82Signer::Client(client) | Nip82Signer::Maintainer { client, .. } => client,
        }
    }

    fn key(&self) -> PublicKey {
        match self {
            Nip82Signer::Client(client) => client.public_key(),
            Nip82Signer::Maintainer { key, .. } => *key,
        }
    }

    async fn publish(&self, builder: EventBuilder, what: &str) -> Result<EventId, String> {
        match self {
            Nip82Signer::Client(client) => client
                .publish_event(builder)
                .await
                .map(|event| event.id)
                .map_err(|e| format!("cannot publish the {what}: {e}")),
            Nip82Signer::Maintainer { client, signer, .. } => {
                let event = builder
                    .sign(*signer)
                    .await
                    .map_err(|e| format!("the NIP-82 signer did not sign the {what}: {e}"))?;
                client
                    .publish_signed(&event)
                    .await
                    .map_err(|e| format!("cannot publish the {what}: {e}"))?;
                Ok(event.id)
            }
        }
    }
}

/// Publishes a 3063 asset per released artifact, the 30063 release listing them and the 32267
/// application (`d` = the repository's identifier, `a` = the repository), signed by
/// [`ReleaseOptions::nip82_signer`] if given. The platform of an asset is zapstore's spelling
/// of the `<os>-<arch>` in the NIP-89 announcement of the runner that built it (the step
/// report carries none). An artifact whose runner announced no platform, or one zapstore does
/// not list, gets no 3063; with no 3063 at all there is no 30063 or 32267 either. Nothing here
/// fails the release: the 1063s and binding are published, and `error` says what is missing.
async fn publish_nip82(
    client: &JobClient,
    repo: &RepoCoordinate,
    context: &RunContext,
    bundled: Bundled<'_>,
    described: &[(&JobRecord, &ArtifactRef)],
) -> Nip82 {
    let options = bundled.options;
    let version = options
        .version
        .clone()
        .unwrap_or_else(|| default_version(&context.commit));
    let channel = options
        .channel
        .clone()
        .unwrap_or_else(|| default_channel(&version).to_string());
    let mut nip82 = Nip82 {
        assets: Vec::new(),
        release: None,
        application: None,
        version,
        channel,
        signer: None,
        error: None,
    };
    if described.is_empty() {
        return nip82;
    }
    let signer = match &options.nip82_signer {
        None => Nip82Signer::Client(client),
        Some(signer) => match signer.get_public_key().await {
            Ok(key) => Nip82Signer::Maintainer {
                client,
                signer,
                key,
            },
            Err(e) => {
                nip82.error = Some(format!(
                    "no NIP-82 events published: the NIP-82 signer gave no public key: {e}"
                ));
                return nip82;
            }
        },
    };
    let mut problems = Vec::new();
    if let Err(reason) = publish_nip82_events(
        &signer,
        repo,
        context,
        bundled,
        described,
        &mut nip82,
        &mut problems,
    )
    .await
    {
        problems.push(reason);
    }
    if nip82.release.is_some() || !nip82.assets.is_empty() {
        nip82.signer = Some(signer.key());
    }
    if !problems.is_empty() {
        let reason = problems.join("; ");
        tracing::warn!("NIP-82: {reason}");
        nip82.error = Some(reason);
    }
    nip82
}

/// The events of [`publish_nip82`]: a skipped artifact is pushed to `problems`, a failure to
/// sign or publish ends the publishing (returned).
async fn publish_nip82_events(
    signer: &Nip82Signer<'_>,
    repo: &RepoCoordinate,
    context: &RunContext,
    bundled: Bundled<'_>,
    described: &[(&JobRecord, &ArtifactRef)],
    nip82: &mut Nip82,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let client = signer.client();
    let options = bundled.options;
    let platforms = runner_platforms(client).await;
    let app = repo.identifier.clone();
    let mut all_platforms = BTreeSet::new();
    for (record, artifact) in described {
        let announced = builder_of(record).and_then(|key| platforms.get(&key));
        let platform = match announced {
            None => Err(
                "the runner that built it announced no platform (NIP-89), so zapstore's `f` \
                 is unknown"
                    .to_string(),
            ),
            Some((os, arch)) => zapstore_platform(os, arch).map_err(|e| e.to_string()),
        };
        let platform = match platform {
            Ok(platform) => platform,
            Err(reason) => {
                problems.push(format!(
                    "no NIP-82 asset for {}/{}: {reason}",
                    record.id, artifact.name
                ));
                continue;
            }
        };
        all_platforms.insert(platform.to_string());
        let asset = SoftwareAsset {
            app: app.clone(),
            sha256: Sha256Hex::parse(&artifact.blob.sha256).map_err(|e| e.to_string())?,
            version: nip82.version.clone(),
            urls: artifact_urls(artifact, options),
            mime: artifact_mime(&artifact.name).to_string(),
            size: Some(artifact.blob.size),
            platforms: vec![platform.to_string()],
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
        nip82
            .assets
            .push(signer.publish(builder, "software asset").await?);
    }
    if nip82.assets.is_empty() {
        // A 30063 listing nothing and a 32267 with no platform would only be rejected.
        return Ok(());
    }
    let platforms: Vec<String> = all_platforms.into_iter().collect();
    let release = SoftwareRelease {
        app: app.clone(),
        version: nip82.version.clone(),
        channel: Some(nip82.channel.clone()),
        platforms: platforms.clone(),
        assets: nip82
            .assets
            .iter()
            .map(|&id| AssetRef { id, relay: None })
            .collect(),
        content: format!("{repo} at {}", context.commit),
    };
    let builder = release.to_event_builder().map_err(|e| e.to_string())?;
    nip82.release = Some(signer.publish(builder, "software release").await?);
    let mut application = SoftwareApplication::new(app.clone(), platforms);
    application.name = Some(app);
    application.repo = Some(repo.clone());
    let builder = application.to_event_builder().map_err(|e| e.to_string())?;
    nip82.application = Some(signer.publish(builder, "software application").await?);
    Ok(())
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

/// `(os, arch)` of every runner announcing itself (NIP-89) on the client's relays.
async fn runner_platforms(client: &JobClient) -> HashMap<PublicKey, (String, String)> {
    match client.discover(StepJob::kind(), ANNOUNCEMENT_WAIT).await {
        Ok(found) => found
            .into_iter()
            .map(|(key, announcement)| {
                let caps = &announcement.offer.capabilities;
                (key, (caps.os.clone(), caps.arch.clone()))
            })
            .collect(),
        Err(_) => HashMap::new(),
    }
}
