//! `quorum run`: the pipeline of a repository's HEAD, on the embedded network or on the DVMs of
//! the given relays, with live progress and an outcome a script can read.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_dvm::client::JobClient;
use quorum_pipeline::{JobSpec, Mode, PlannedJob, TriggerEvent};
use quorum_proto::mandate::MANDATE;
use quorum_proto::nostr::{EventId, Filter, PublicKey};
use quorum_proto::step::{ArtifactRef, StepJob};
use quorum_router::pipeline_run::PipelineRun;
use quorum_router::quorum::QuorumContext;
use quorum_router::release::{Release, ReleaseOptions};
use quorum_router::{EngineConfig, JobRecord, JobState, Recovered, RunContext, RunReporter};
use serde_json::json;

use super::embedded::{Embedded, EmbeddedSpec, QuorumRequest, form_quorum, wait_for_shares};
use crate::cli::{BlossomOptions, RelayOptions, RunArgs};

pub async fn run(args: RunArgs, color: bool) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let commit = git(&dir, &["rev-parse", "HEAD"])
        .with_context(|| format!("{} is not a git repository with a commit", dir.display()))?;
    let text = git(
        &dir,
        &["show", &format!("HEAD:{}", quorum_pipeline::PIPELINE_PATH)],
    )
    .with_context(|| {
        format!(
            "no {} in the HEAD commit of {}",
            quorum_pipeline::PIPELINE_PATH,
            dir.display()
        )
    })?;
    let plan = match quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, &text) {
        Ok(plan) => plan,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            eprintln!("{}", super::lint::REFERENCE_HINT);
            bail!(
                "the pipeline has {} error(s)",
                diagnostics.diagnostics.len()
            );
        }
    };
    let branch = git(&dir, &["symbolic-ref", "--quiet", "HEAD"]).ok();
    let triggered = plan.triggered_by(&TriggerEvent::Manual)
        || branch.as_ref().is_some_and(|ref_name| {
            plan.triggered_by(&TriggerEvent::Push {
                ref_name: ref_name.clone(),
            })
        });
    if !triggered {
        bail!(
            "the pipeline runs neither by hand (on: manual) nor on pushes to {}",
            branch.as_deref().unwrap_or("a detached HEAD")
        );
    }
    let mut context = RunContext {
        repo: args
            .repo
            .clone()
            .unwrap_or_else(|| format!("file://{}", dir.display())),
        commit,
        ..RunContext::default()
    };
    for spec in &args.secrets {
        let (name, value) = super::secret(spec)?;
        context.secrets.insert(name, value);
    }
    let parse_key = |flag: &str, text: &str| {
        PublicKey::parse(text)
            .with_context(|| format!("{flag} {text:?} is neither an npub nor 64 hex characters"))
    };
    if let (Some(owner), Some(identifier)) = (&args.owner, &args.identifier) {
        context.repo_id = Some(quorum_proto::nip34::RepoCoordinate::new(
            parse_key("--owner", owner)?,
            identifier.clone(),
        ));
    }
    for maintainer in &args.maintainers {
        context
            .maintainers
            .push(parse_key("--maintainer", maintainer)?);
    }
    let mirror_servers = blossom_urls(&args.blossoms)?;
    for pair in &args.inputs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--input {pair:?} is not NAME=VALUE"))?;
        context.inputs.insert(name.to_string(), value.to_string());
    }

    // The network: the given relays and whatever runners they announce, or our own.
    let quorum_sizes: std::collections::BTreeSet<(u32, u32)> = plan
        .jobs
        .iter()
        .filter_map(|job| match job.mode {
            Mode::Quorum {
                replicas,
                threshold,
            } if !matches!(job.spec, JobSpec::Approval { .. }) => Some((replicas, threshold)),
            _ => None,
        })
        .collect();
    let run_id = quorum_router::run_id(&context.repo, &context.commit, &plan);
    let (embedded, relays, runners) = if args.relays.is_empty() {
        let data = match &args.data {
            Some(data) => data.clone(),
            None => default_data_dir(&run_id)?,
        };
        if !args.json {
            eprintln!(
                "embedded network data: {} (`quorum up --data` serves it again; delete it when \
                 done)",
                data.display()
            );
        }
        let relay_options = RelayOptions::default();
        let blossom_options = BlossomOptions::default();
        let network = Embedded::start(EmbeddedSpec {
            data,
            relay_listen: "127.0.0.1:0".parse().expect("constant address"),
            blossom_listen: "127.0.0.1:0".parse().expect("constant address"),
            relay: &relay_options,
            blossom: &blossom_options,
            runners: quorum_sizes
                .iter()
                .map(|&(replicas, _)| replicas as usize)
                .fold(args.runners, usize::max),
            unsandboxed_runners: args.unsandboxed_runners,
        })
        .await?;
        let relays = super::relay_urls(std::slice::from_ref(&network.relay_url))?;
        let runners: Vec<PublicKey> = network.runners.iter().map(|d| d.public_key()).collect();
        (Some(network), relays, runners)
    } else {
        (None, super::relay_urls(&args.relays)?, Vec::new())
    };
    // The run's identity: a key file (the default one is made on first use) or a bunker,
    // opened before the run so that a bad key file or bunker URI stops it before any build.
    let (signer, signer_source) = match &args.bunker {
        Some(uri) => (
            super::signer::Signer::open(None, Some(uri))
                .await
                .context("--bunker")?,
            "through the bunker".to_string(),
        ),
        None => {
            let path = match &args.key {
                Some(path) => path.clone(),
                None => default_identity()?,
            };
            let keys = quorum_dvm::keyfile::load_or_create(&path)?;
            let source = format!("key {}", path.display());
            (super::signer::Signer::Local(keys), source)
        }
    };
    let run_key = signer.public_key().await?;
    if !args.json {
        eprintln!(
            "signing as {} ({signer_source})",
            quorum_proto::nostr::ToBech32::to_bech32(&run_key).unwrap_or_default(),
        );
    }
    // Payments need a local key: tokens are locked to it for refunds and change, and a
    // quorum member's token is sealed with it. The run's own key when it is here.
    let local_keys = signer.local().cloned();
    let (run_signer, run_bunker) = signer.into_shared();
    // Opened before the run, so that a bad key file or bunker URI stops it before any build.
    let (nip82_signer, nip82_bunker) =
        match (args.nip82_key.as_deref(), args.nip82_bunker.as_deref()) {
            (None, None) => (None, None),
            (key, bunker) => {
                let signer = super::signer::Signer::open(key, bunker)
                    .await
                    .context("--nip82-key/--nip82-bunker")?;
                let (shared, bunker) = signer.into_shared();
                (Some(shared), bunker)
            }
        };
    let client = JobClient::connect(&relays, run_signer.clone()).await?;
    let runners = if embedded.is_some() {
        runners
    } else {
        let found = client
            .discover(StepJob::kind(), Duration::from_secs(5))
            .await?;
        if found.is_empty() {
            bail!(
                "no runner DVM announces itself (NIP-89, kind 5702) on {}",
                args.relays.join(", ")
            );
        }
        found.into_iter().map(|(key, _)| key).collect()
    };
    if runners.is_empty() {
        bail!("no runner DVM to run on (see the warning above)");
    }
    if let Some(id) = &args.mandate {
        let id = EventId::parse(id)
            .with_context(|| format!("--mandate {id:?} is not an event id (hex or note)"))?;
        let found = client
            .fetch(Filter::new().id(id).kind(MANDATE), Duration::from_secs(5))
            .await?;
        let event = found
            .into_iter()
            .next()
            .with_context(|| format!("mandate {id} is not on the relays"))?;
        let quorum = QuorumContext::new(event).map_err(anyhow::Error::msg)?;
        match &context.repo_id {
            Some(repo) if *repo != quorum.mandate.repo => bail!(
                "--owner/--identifier name {repo}, but mandate {id} is for {}",
                quorum.mandate.repo
            ),
            _ => context.repo_id = Some(quorum.mandate.repo.clone()),
        }
        if !quorum.mandate.rules.admits(&run_key, None) {
            bail!(
                "mandate {id} names who may request its quorum's jobs, and this run's key {} is \
                 not among them: pass --key with a key the mandate names",
                run_key.to_hex()
            );
        }
        context.quorum = Some(
            quorum
                .with_source(&client, &context.repo, &context.commit)
                .await,
        );
    } else if !quorum_sizes.is_empty() {
        let Some(network) = &embedded else {
            bail!(
                "the pipeline has quorum jobs: pass --mandate EVENT_ID (a mandate made with \
                 `quorum mandate create`)"
            );
        };
        let quorum =
            local_quorum(network, &dir, &mut context, &quorum_sizes, &args, run_key).await?;
        context.quorum = Some(
            quorum
                .with_source(&client, &context.repo, &context.commit)
                .await,
        );
    }
    if let Some(Err(reason)) = context.quorum.as_ref().map(|q| &q.source) {
        eprintln!("! the quorum jobs will not run: {reason}");
    }

    let payer: Option<std::sync::Arc<dyn quorum_dvm::handler::Payer>> =
        match (args.budget, &args.mint) {
            (Some(_), Some(mint)) => {
                let dir = match &args.wallet {
                    Some(dir) => dir.clone(),
                    None => data_home()?.join("wallet"),
                };
                // Payments refund to this key, and change comes back locked to it.
                Some(std::sync::Arc::new(quorum_pay::WalletPayer {
                    wallet: quorum_pay::PayWallet::open_in(&dir, mint).await?,
                    keys: match &local_keys {
                        Some(keys) => keys.clone(),
                        // Signing through a bunker: the wallet's own key.
                        None => quorum_dvm::keyfile::load_or_create(&dir.join("payer.nsec"))?,
                    },
                }))
            }
            _ => None,
        };
    let config = EngineConfig {
        runners,
        payer,
        budget_msats: args.budget.map(|sats| sats.saturating_mul(1000)),
        ..EngineConfig::default()
    };
    let mut reporter = Progress::new(args.json, color);
    if !args.json {
        eprintln!(
            "run {} of {} at {}",
            &run_id[..12],
            plan.name.as_deref().unwrap_or("pipeline"),
            &context.commit[..12]
        );
    }
    // Copies go first, so that the release's events list them (the embedded Blossom, the
    // source, is still up).
    let blossom = quorum_blossom::client::BlossomClient::new(run_signer.clone());
    // NIP-C1's `w` hashes the file's bytes, which `git` above trims: read them as they are.
    let ci_source = Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["show", &format!("HEAD:{}", quorum_pipeline::PIPELINE_PATH)])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|raw| quorum_router::status::CiSource::of_pipeline(&raw, None))
        .unwrap_or_default();
    let end = PipelineRun::new(&client, &plan, &context, &config)
        .with_ci_source(ci_source)
        .with_release(ReleaseOptions {
            version: git(&dir, &["tag", "--points-at", "HEAD", "--sort=-v:refname"])
                .ok()
                .and_then(|tags| tags.lines().next().map(str::to_string)),
            channel: args.nip82_channel.clone(),
            nip82_signer: nip82_signer.clone(),
            mirrors: Default::default(),
            bundle_uploader: Some(blossom.clone()),
            ..ReleaseOptions::default()
        })
        .with_mirrors(blossom, mirror_servers)
        .run(Recovered::default(), &mut reporter)
        .await;
    if let Err(err) = &end.ci_status {
        eprintln!("CI status not published: {err}");
    }
    let mut succeeded = end.succeeded;
    let outcome = end.outcome;
    let mirrors = end.mirrors;
    let release = match end.release {
        Ok(release) => release,
        // Without the repository's identity nothing can name the release: say so (the run
        // object fails the run only when the identity was known).
        Err(reason) if context.repo_id.is_none() => {
            eprintln!("no release published: {reason}");
            None
        }
        Err(reason) => {
            eprintln!("✘ release: {reason}");
            succeeded = false;
            None
        }
    };
    if let Some(error) = release.as_ref().and_then(|r| r.bundle_error.as_deref()) {
        eprintln!(
            "! no verification bundle stored (the release verifies from the relays only): {}",
            super::sanitize(error)
        );
    }
    if let Some(error) = release.as_ref().and_then(|r| r.nip82_error.as_deref()) {
        eprintln!("! NIP-82 (zapstore): {}", super::sanitize(error));
    }
    if let Some(release) = &release
        && !args.json
    {
        let signer = match &context.quorum {
            Some(q) if q.quorum() == release.signer => "the quorum key",
            _ => "this run's key",
        };
        eprintln!("✔ release {} signed by {signer}", release.binding.to_hex());
        if let (Some(repo), Some(id)) = (&context.repo_id, release.software_release) {
            eprintln!(
                "  NIP-82 release {}@{} on channel {} ({}, {} asset(s), signed by {})",
                super::sanitize(&repo.identifier),
                super::sanitize(&release.version),
                super::sanitize(&release.channel),
                id.to_hex(),
                release.assets.len(),
                match release.nip82_signer {
                    Some(key) if key != run_key => key.to_hex(),
                    _ => "this run's key".to_string(),
                }
            );
        }
        if let Some((sha, urls)) = &release.bundle {
            eprintln!(
                "  verification bundle {sha}{} (`quorum verify FILE --repo REPO --bundle IT` \
                 needs no relay)",
                urls.first()
                    .map(|url| format!(" at {}", super::sanitize(url)))
                    .unwrap_or_default()
            );
        }
    }
    // Before the embedded network stops: its Blossom server is where the bytes are.
    let saved = match &args.out {
        Some(out) => save_outputs(out, &outcome.jobs, release.as_ref(), !args.json).await,
        None => Vec::new(),
    };
    if saved.iter().any(|file| file.error.is_some()) {
        succeeded = false;
    }
    client.shutdown().await;
    drop(nip82_signer);
    drop(run_signer);
    for bunker in [nip82_bunker, run_bunker].into_iter().flatten() {
        if let Ok(bunker) = std::sync::Arc::try_unwrap(bunker) {
            bunker.shutdown().await;
        }
    }
    if let Some(network) = embedded {
        network.shutdown().await?;
    }

    if args.json {
        let artifacts: Vec<_> = outcome
            .jobs
            .iter()
            .filter(|job| job.succeeded())
            .flat_map(|job| {
                job.report
                    .iter()
                    .flat_map(|r| &r.artifacts)
                    .map(move |a| (job, a))
            })
            .map(|(job, a)| {
                json!({
                    "job": job.id, "name": a.name, "size": a.blob.size,
                    "sha256": a.blob.sha256, "urls": a.blob.urls,
                })
            })
            .collect();
        let value = json!({
            "status": if succeeded { "success" } else { "failure" },
            "run": run_id,
            "repo": context.repo,
            "repository": context.repo_id.as_ref().map(|r| r.to_string()),
            "commit": context.commit,
            "jobs": outcome.jobs.iter().map(job_json).collect::<Vec<_>>(),
            "paid_msats": outcome.paid_msats(),
            "artifacts": artifacts,
            "release": release.as_ref().map(|r| r.binding.to_hex()),
            "nip82": release.as_ref().map(nip82_json),
            "bundle": release.as_ref().and_then(bundle_json),
            "mirrors": mirrors,
            "quorum": context.quorum.as_ref().map(|q| json!({
                "pubkey": q.quorum().to_hex(),
                "threshold": q.mandate.threshold,
                "members": q.members().iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
            })),
            "mandate": context.quorum.as_ref().map(|q| q.mandate_event.id.to_hex()),
            "out": args.out.as_ref().map(|_| &saved),
        });
        println!("{value}");
    } else {
        print_summary(&outcome.jobs);
        print_saved(&saved, context.repo_id.as_ref());
        if outcome.paid_msats() > 0 {
            eprintln!("paid {} sat in all", outcome.paid_msats() / 1000);
        }
    }
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The key `quorum run` signs with unless `--key` says: one per user, in the config directory.
fn default_identity() -> anyhow::Result<std::path::PathBuf> {
    let dir = xdg_dir("XDG_CONFIG_HOME", ".config", "--key FILE")?.join("quorum");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join("run.nsec"))
}

/// Where the embedded network of a run keeps its data unless `--data` says: a new directory
/// per run under `$XDG_DATA_HOME/quorum/runs` (or `~/.local/share/quorum/runs`), so that what
/// the run published can be served again after it ends.
fn default_data_dir(run_id: &str) -> anyhow::Result<std::path::PathBuf> {
    let seconds = quorum_proto::nostr::Timestamp::now().as_secs();
    let dir = xdg_dir("XDG_DATA_HOME", ".local/share", "--data DIR")?
        .join("quorum/runs")
        .join(format!("{seconds}-{}", &run_id[..12]));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the run's data directory {}", dir.display()))?;
    Ok(dir)
}

/// `$XDG_DATA_HOME/quorum` (or `~/.local/share/quorum`): where the wallet lives by default.
pub(crate) fn data_home() -> anyhow::Result<std::path::PathBuf> {
    Ok(xdg_dir("XDG_DATA_HOME", ".local/share", "--data DIR")?.join("quorum"))
}

/// The XDG base directory `var` names, or `$HOME/fallback`; `flag` is what to pass instead
/// when neither is set.
fn xdg_dir(var: &str, fallback: &str, flag: &str) -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Ok(std::path::PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .with_context(|| format!("neither {var} nor HOME is set: pass {flag}"))?;
    Ok(std::path::PathBuf::from(home).join(fallback))
}

/// One file `--out` saved, or why it could not.
#[derive(Debug, serde::Serialize)]
struct SavedFile {
    /// `artifact`, `image` (an `oci:` artifact, saved as an OCI image layout directory) or
    /// `bundle`.
    what: &'static str,
    job: Option<String>,
    name: String,
    sha256: String,
    path: std::path::PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Downloads every artifact of the succeeded jobs into `out` (by file name; `JOB/PATH` when
/// two jobs' artifacts share a name), each checked against its sha256, and the release's
/// verification bundle as `verification-bundle.json`. An `oci:DIR` artifact becomes the OCI
/// image layout `DIR` (its manifest, config and layers, each re-hashed).
async fn save_outputs(
    out: &Path,
    jobs: &[JobRecord],
    release: Option<&Release>,
    progress: bool,
) -> Vec<SavedFile> {
    let artifacts: Vec<(&JobRecord, &ArtifactRef)> = jobs
        .iter()
        .filter(|job| job.succeeded())
        .flat_map(|job| {
            job.report
                .iter()
                .flat_map(|r| &r.artifacts)
                .map(move |a| (job, a))
        })
        .collect();
    let base_name = |name: &str| {
        let path = name
            .strip_prefix(quorum_proto::step::OCI_ARTIFACT_PREFIX)
            .unwrap_or(name);
        path.rsplit('/').next().unwrap_or(path).to_string()
    };
    let mut count = std::collections::HashMap::new();
    for (_, artifact) in &artifacts {
        *count.entry(base_name(&artifact.name)).or_insert(0) += 1;
    }
    // Each file: what it is, the job, its name, sha256, URLs, and where it goes.
    struct Wanted {
        what: &'static str,
        job: Option<String>,
        name: String,
        sha256: String,
        urls: Vec<String>,
        path: std::path::PathBuf,
    }
    let mut wanted: Vec<Wanted> = artifacts
        .iter()
        .map(|(job, artifact)| {
            let base = base_name(&artifact.name);
            let image = artifact
                .name
                .strip_prefix(quorum_proto::step::OCI_ARTIFACT_PREFIX);
            let path = if count[&base] > 1 {
                out.join(&job.id).join(image.unwrap_or(&artifact.name))
            } else {
                out.join(base)
            };
            Wanted {
                what: if image.is_some() { "image" } else { "artifact" },
                job: Some(job.id.clone()),
                name: artifact.name.clone(),
                sha256: artifact.blob.sha256.clone(),
                urls: artifact.blob.urls.clone(),
                path,
            }
        })
        .collect();
    if let Some((sha, urls)) = release.and_then(|r| r.bundle.as_ref()) {
        wanted.push(Wanted {
            what: "bundle",
            job: None,
            name: "verification bundle".to_string(),
            sha256: sha.to_string(),
            urls: urls.clone(),
            path: out.join("verification-bundle.json"),
        });
    }
    let mut saved = Vec::new();
    for file in wanted {
        let result = async {
            let sha = quorum_proto::blossom::Sha256Hex::parse(&file.sha256)
                .map_err(|e| anyhow::anyhow!("the run reported a bad sha256: {e}"))?;
            if let Some(parent) = file.path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            if file.what == "image" {
                let digest = quorum_proto::image::Digest::from_hex(&sha.to_hex())
                    .context("the run reported a bad sha256")?;
                let urls: Vec<reqwest::Url> =
                    file.urls.iter().filter_map(|u| u.parse().ok()).collect();
                quorum_oci::layout::save_blossom_layout(&urls, &digest, &file.path).await?;
                return Ok(());
            }
            super::download::fetch_verified(sha, &file.urls, &file.path, &file.name, progress)
                .await
                .map(|_| ())
        }
        .await;
        saved.push(SavedFile {
            what: file.what,
            job: file.job,
            name: file.name,
            sha256: file.sha256,
            path: file.path,
            error: result.err().map(|e| format!("{e:#}")),
        });
    }
    saved
}

/// What `--out` saved, and how to verify it.
fn print_saved(saved: &[SavedFile], repo: Option<&quorum_proto::nip34::RepoCoordinate>) {
    let bundle = saved
        .iter()
        .find(|f| f.what == "bundle" && f.error.is_none());
    for file in saved {
        match &file.error {
            Some(error) => eprintln!("✘ not saved: {} ({})", file.name, super::sanitize(error)),
            None if file.what != "bundle" => {
                if file.what == "image" {
                    eprintln!(
                        "saved {} (OCI image layout of sha256:{}; skopeo copy oci:{} …)",
                        file.path.display(),
                        &file.sha256[..16],
                        file.path.display()
                    );
                } else {
                    eprintln!("saved {} ({})", file.path.display(), &file.sha256[..16]);
                }
                if let (Some(repo), Some(bundle)) = (repo, bundle) {
                    eprintln!(
                        "  verify: quorum verify {} --repo {repo} --bundle {}",
                        file.path.display(),
                        bundle.path.display()
                    );
                }
            }
            None => eprintln!(
                "saved {} (the release's verification bundle)",
                file.path.display()
            ),
        }
    }
}

/// Parses `--blossom` URLs.
pub(super) fn blossom_urls(urls: &[String]) -> anyhow::Result<Vec<reqwest::Url>> {
    urls.iter()
        .map(|url| {
            reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .with_context(|| format!("--blossom {url:?} is not an http(s) URL"))
        })
        .collect()
}

/// The NIP-82 events of a release, for the JSON outcome.
pub(super) fn nip82_json(release: &Release) -> serde_json::Value {
    json!({
        "version": release.version,
        "channel": release.channel,
        "signer": release.nip82_signer.map(|key| key.to_hex()),
        "error": release.nip82_error,
        "assets": release.assets.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        "release": release.software_release.map(|id| id.to_hex()),
        "application": release.application.map(|id| id.to_hex()),
    })
}

/// The verification bundle of a release (sha256 and where to download it), for the JSON
/// outcome: with it, `quorum verify --bundle` needs no relay.
pub(super) fn bundle_json(release: &Release) -> Option<serde_json::Value> {
    release
        .bundle
        .as_ref()
        .map(|(sha, urls)| json!({ "sha256": sha.to_string(), "urls": urls }))
}

/// A quorum of the embedded runners for the run's quorum jobs, made by DKG and mandated by a
/// local key kept in the data directory, which must then be the repository's identity: it
/// publishes the repository's announcement and state (the members' evidence of the source)
/// and names `engine` as the one key that may request the quorum's jobs.
async fn local_quorum(
    network: &Embedded,
    dir: &Path,
    context: &mut RunContext,
    sizes: &std::collections::BTreeSet<(u32, u32)>,
    args: &RunArgs,
    engine: PublicKey,
) -> anyhow::Result<QuorumContext> {
    let &(replicas, threshold) = sizes.iter().next().expect("called with quorum jobs");
    if sizes.len() > 1 {
        bail!(
            "the pipeline's quorum jobs ask for different quorums ({}); a run uses one mandate",
            sizes
                .iter()
                .map(|(n, t)| format!("{t} of {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let maintainer =
        quorum_dvm::keyfile::load_or_create(&network.data().join("local-maintainer.nsec"))?;
    let repo = match &context.repo_id {
        Some(repo) if repo.owner != maintainer.public_key() => bail!(
            "the quorum jobs need a mandate signed by a maintainer of {repo}: pass --mandate \
             EVENT_ID (see `quorum mandate create`)"
        ),
        Some(repo) => repo.clone(),
        None => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "repository".into());
            quorum_proto::nip34::RepoCoordinate::new(maintainer.public_key(), name)
        }
    };
    context.repo_id = Some(repo.clone());
    let members: Vec<PublicKey> = network.runners[..replicas as usize]
        .iter()
        .map(|d| d.public_key())
        .collect();
    let relays = super::relay_urls(std::slice::from_ref(&network.relay_url))?;
    // The local key speaks for this checkout: its announcement lists the URL the runners fetch
    // and its state points the branch (or a detached HEAD's stand-in) at the commit.
    let ref_name = git(dir, &["symbolic-ref", "--quiet", "HEAD"])
        .unwrap_or_else(|_| "refs/heads/detached".into());
    let publisher = JobClient::connect(&relays, maintainer.clone()).await?;
    let published = super::embedded::publish_repository(
        &publisher,
        &repo.identifier,
        &context.repo,
        &ref_name,
        &context.commit,
    )
    .await;
    publisher.shutdown().await;
    published?;
    let (quorum, operators) = form_quorum(
        &relays,
        &maintainer,
        &members,
        QuorumRequest {
            repo,
            pipeline: quorum_pipeline::PIPELINE_PATH.into(),
            jobs: Vec::new(),
            threshold: u16::try_from(threshold).context("threshold")?,
            requesters: vec![engine],
            note: "quorum of the embedded runners for a local run".into(),
        },
    )
    .await?;
    wait_for_shares(&network.share_dirs(replicas as usize), &quorum.quorum()).await?;
    if !args.json {
        eprintln!(
            "quorum {} ({threshold} of {replicas} embedded runners, key made by DKG), mandated by the local key {} in {}",
            &quorum.quorum().to_hex()[..12],
            &maintainer.public_key().to_hex()[..12],
            network.data().display()
        );
        // The embedded runners all run here: one operator, and it is said.
        eprintln!(
            "operators: {} (the local operator in {})",
            operators.summary(u16::try_from(threshold).unwrap_or(u16::MAX)),
            network.data().join("operator.nsec").display()
        );
    }
    Ok(quorum)
}

fn job_json(job: &JobRecord) -> serde_json::Value {
    let (status, reason) = match &job.state {
        JobState::Succeeded => ("success", None),
        JobState::Failed { reason } => ("failure", Some(reason.clone())),
        JobState::Skipped { reason } => ("skipped", Some(reason.clone())),
    };
    json!({
        "id": job.id, "name": job.name, "status": status, "reason": reason,
        "provider": job.provider, "request": job.request, "result": job.result,
        "log": job.report.as_ref().map(|r| json!({"sha256": r.log.sha256, "urls": r.log.urls})),
        "quorum": job.quorum,
        "paid_msats": job.paid_msats,
        "payments": job.payments,
    })
}

fn print_summary(jobs: &[JobRecord]) {
    for job in jobs {
        for artifact in job.report.iter().flat_map(|r| &r.artifacts) {
            println!(
                "{}  {}  {} bytes  ({})",
                artifact.blob.sha256,
                super::sanitize(&artifact.name),
                artifact.blob.size,
                job.id
            );
        }
    }
}

/// Live progress on stderr: on a terminal, a spinner per running job with its latest log line
/// (indicatif); otherwise, one line per event.
struct Progress {
    quiet: bool,
    bars: Option<indicatif::MultiProgress>,
    running: std::collections::HashMap<String, indicatif::ProgressBar>,
    /// Bold job names only when colours are on (`--color`, NO_COLOR).
    template: &'static str,
}

impl Progress {
    fn new(quiet: bool, color: bool) -> Self {
        use std::io::IsTerminal;
        let bars = (!quiet && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
        Progress {
            quiet,
            bars,
            running: Default::default(),
            template: if color {
                "{spinner} {prefix:.bold} {wide_msg}"
            } else {
                "{spinner} {prefix} {wide_msg}"
            },
        }
    }

    /// A finished-job line: above the spinners on a terminal, plain otherwise.
    fn line(&self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl RunReporter for Progress {
    fn job_started(&mut self, job: &PlannedJob) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(self.template)
                        .expect("constant template"),
                );
                bar.set_prefix(job.id.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running.insert(job.id.clone(), bar);
            }
            None => eprintln!("{}", quorum_router::progress::started_line(&job.id)),
        }
    }

    fn job_progress(&mut self, job: &str, _provider: &PublicKey, line: &str) {
        if self.quiet {
            return;
        }
        match self.running.get(job) {
            Some(bar) => bar.set_message(super::sanitize(line)),
            None => eprintln!(
                "{}",
                super::sanitize(&quorum_router::progress::job_line(job, line))
            ),
        }
    }

    fn job_finished(&mut self, record: &JobRecord) {
        if self.quiet {
            return;
        }
        if let Some(bar) = self.running.remove(&record.id) {
            bar.finish_and_clear();
        }
        self.line(&super::sanitize(&quorum_router::progress::finished_line(
            record,
        )));
        for payment in &record.payments {
            let change = match payment.change_msats {
                0 => String::new(),
                msats => format!(", {} sat came back as change", msats / 1000),
            };
            self.line(&format!(
                "  {} paid {} sat to {}{change}",
                record.id,
                payment.paid_msats / 1000,
                &payment.dvm[..12],
            ));
        }
        if let (JobState::Failed { .. }, Some(report)) = (&record.state, &record.report) {
            for line in quorum_router::progress::failure_details(&record.id, report) {
                self.line(&super::sanitize(&line));
            }
        }
    }

    fn mirrored(&mut self, report: &quorum_router::pipeline_run::MirrorReport) {
        if !self.quiet {
            self.line(&super::sanitize(&quorum_router::progress::mirrored_line(
                report,
            )));
        }
    }
}

/// Runs git in `dir` and returns its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
