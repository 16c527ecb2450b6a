//! `quorum demo`: the whole flow on this machine, honestly labelled.
//!
//! It makes a sample project in a new git repository, publishes its NIP-34 announcement and
//! state signed by a demo maintainer key, runs its pipeline on the embedded network (test,
//! build by a 2-of-3 quorum of runner DVMs whose key they made by DKG, an approval gate, a
//! release signed by the quorum key), approves as the demo maintainer
//! (and says so: in real use a maintainer runs `quorum approve` with their own key or bunker),
//! downloads the released file from Blossom and verifies it (from the relay, then again with no
//! relay from the release's verification bundle, saved beside the file), and prints how to do
//! that again.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use quorum_dvm::client::JobClient;
use quorum_pipeline::PlannedJob;
use quorum_proto::approval::{APPROVAL_REQUEST, ApprovalRequest, Decision, Verdict};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Filter, Keys, PublicKey, Timestamp};
use quorum_router::{EngineConfig, JobRecord, JobState, RunContext, RunReporter};
use serde_json::json;

use super::embedded::{Embedded, EmbeddedSpec, QuorumRequest, form_quorum, wait_for_shares};
use crate::cli::{BlossomOptions, DemoArgs, RelayOptions};

const IDENTIFIER: &str = "hello-quorum";
/// The build's quorum: 2 of 3 runners must build the same bytes.
const QUORUM_MEMBERS: usize = 3;
const QUORUM_THRESHOLD: u16 = 2;

const PIPELINE: &str = "\
name: release
on: [push]
jobs:
  test:
    run: sh test.sh
  build:
    needs: test
    run: sh build.sh
    artifacts: [dist/hello.txt]
    mode: quorum
    replicas: 3
    threshold: 2
    release: true
  approve:
    needs: build
    approval:
      required: 1
      show: [build]
";

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("quorum-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            // Kept: the printed commands point into it.
            dir.keep()
        }
    };
    let say = |text: &str| {
        if !args.json {
            eprintln!("{text}");
        }
    };
    std::fs::create_dir_all(&data)?;
    let data = std::path::absolute(&data)?;

    if !args.relays.is_empty() {
        // Someone else's network: its runners, found by their NIP-89 announcements.
        let relays = super::relay_urls(&args.relays)?;
        let finder = JobClient::connect(&relays, Keys::generate()).await?;
        let runners: Vec<PublicKey> = finder
            .discover(quorum_proto::step::StepJob::kind(), Duration::from_secs(5))
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        finder.shutdown().await;
        if runners.is_empty() {
            bail!(
                "no runner DVM announces itself on {}",
                args.relays.join(", ")
            );
        }
        say(&format!(
            "network     {} ({} runners)",
            args.relays.join(", "),
            runners.len()
        ));
        return tour(&args, &data, relays, runners, Vec::new(), say).await;
    }
    let sandboxed = quorum_sandbox::Bubblewrap::detect().is_ok();
    if !sandboxed {
        say("! bubblewrap is not installed, so this demo runs its build steps UNSANDBOXED.");
        say("  Install it (apt-get install bubblewrap) to see the real thing; operators must.");
    }
    let relay_options = RelayOptions::default();
    let blossom_options = BlossomOptions::default();
    let network = Embedded::start(EmbeddedSpec {
        data: data.join("network"),
        relay_listen: "127.0.0.1:0".parse().expect("constant address"),
        blossom_listen: "127.0.0.1:0".parse().expect("constant address"),
        relay: &relay_options,
        blossom: &blossom_options,
        runners: QUORUM_MEMBERS,
        unsandboxed_runners: !sandboxed,
    })
    .await?;
    say(&format!(
        "network     relay {}  blossom {}",
        network.relay_url, network.blossom_url
    ));
    // A pinned image (`image:`) needs one built and pushed first, which takes minutes
    // (mmdebstrap) rather than seconds: the tour builds on the runners' own toolchain.
    say("toolchain   the runners' own (the host's /usr): no build image is pinned here, so this");
    say(
        "            agreement holds on one machine; pin one with `image:` (README) to agree across hosts",
    );
    let relays = super::relay_urls(std::slice::from_ref(&network.relay_url))?;
    let runners = network.runners.iter().map(|d| d.public_key()).collect();
    let share_dirs = network.share_dirs(QUORUM_MEMBERS);
    let outcome = tour(&args, &data, relays, runners, share_dirs, say).await;
    network.shutdown().await?;
    outcome
}

async fn tour(
    args: &DemoArgs,
    data: &Path,
    relays: Vec<quorum_proto::nostr::RelayUrl>,
    runners: Vec<PublicKey>,
    share_dirs: Vec<PathBuf>,
    say: impl Fn(&str),
) -> anyhow::Result<ExitCode> {
    // The maintainer and the project.
    let maintainer = quorum_dvm::keyfile::load_or_create(&data.join("demo-maintainer.nsec"))?;
    let repo = make_project(&data.join("hello-quorum"))?;
    let commit = git(&repo, &["rev-parse", "HEAD"])?;
    say(&format!(
        "maintainer  {} (a demo key in {})",
        maintainer.public_key().to_hex(),
        data.join("demo-maintainer.nsec").display()
    ));
    say(&format!(
        "repository  {} at {}",
        repo.display(),
        &commit[..12]
    ));

    let maintainer_client = JobClient::connect(&relays, maintainer.clone()).await?;
    let repo_url = format!("file://{}", repo.display());
    super::embedded::publish_repository(
        &maintainer_client,
        IDENTIFIER,
        &repo_url,
        "refs/heads/main",
        &commit,
    )
    .await?;
    say("signed      NIP-34 announcement (30617) and state (30618): main → the commit");

    let plan = quorum_pipeline::parse(quorum_pipeline::PIPELINE_PATH, PIPELINE)
        .map_err(|d| anyhow::anyhow!("the demo pipeline does not lint:\n{d}"))?;
    // The quorum: the runners make a key by DKG over the relay, the maintainer mandates it.
    if runners.len() < QUORUM_MEMBERS {
        bail!(
            "the demo's build runs on a quorum of {QUORUM_MEMBERS} runners; {} are available",
            runners.len()
        );
    }
    let members = &runners[..QUORUM_MEMBERS];
    // The key the demo's engine signs its requests with: the only one the mandate lets ask.
    let keys = Keys::generate();
    let client = JobClient::connect(&relays, keys.clone()).await?;
    let (quorum, operators) = form_quorum(
        &relays,
        &maintainer,
        members,
        QuorumRequest {
            repo: RepoCoordinate::new(maintainer.public_key(), IDENTIFIER),
            pipeline: quorum_pipeline::PIPELINE_PATH.into(),
            jobs: vec!["build".into()],
            threshold: QUORUM_THRESHOLD,
            requesters: vec![keys.public_key()],
            note: "the demo's build and release quorum".into(),
        },
    )
    .await?;
    let quorum = quorum.with_source(&client, &repo_url, &commit).await;
    if let Err(reason) = &quorum.source {
        bail!("the quorum would refuse the build: {reason}");
    }
    wait_for_shares(&share_dirs, &quorum.quorum()).await?;
    say(&format!(
        "quorum      {} ({} of {}, key made by DKG among the runners; nobody holds it whole)",
        quorum.quorum().to_hex(),
        QUORUM_THRESHOLD,
        QUORUM_MEMBERS
    ));
    say(&format!(
        "mandate     {} signed by the demo maintainer: this quorum may sign build attestations and releases",
        quorum.mandate_event.id.to_hex()
    ));
    say(&format!(
        "operators   {}",
        operators.summary(QUORUM_THRESHOLD)
    ));
    if operators.fewest_signing(QUORUM_THRESHOLD) < usize::from(QUORUM_THRESHOLD) {
        say(
            "            (fine for a demo on one machine; a real quorum's members are run by \
             unrelated operators, and `quorum mandate create` refuses this unless told \
             --allow-same-operator)",
        );
    }
    let context = RunContext {
        repo: repo_url.clone(),
        commit: commit.clone(),
        repo_id: Some(RepoCoordinate::new(maintainer.public_key(), IDENTIFIER)),
        maintainers: vec![maintainer.public_key()],
        quorum: Some(quorum.clone()),
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners,
        ..EngineConfig::default()
    };
    let mirror_servers = super::run::blossom_urls(&args.blossoms)?;
    let mut reporter = Lines { quiet: args.json };
    let started_at = Timestamp::now();
    // Copies on the `--blossom` servers first, so that the release's events list them.
    let blossom = quorum_blossom::client::BlossomClient::new(keys.clone());
    let pipeline_run =
        quorum_router::pipeline_run::PipelineRun::new(&client, &plan, &context, &config)
            .with_release(quorum_router::release::ReleaseOptions {
                bundle_uploader: Some(blossom.clone()),
                ..Default::default()
            })
            .with_mirrors(blossom, mirror_servers)
            .with_ci_source(quorum_router::status::CiSource::of_pipeline(PIPELINE, None));
    let run_id = pipeline_run.id();
    // The demo maintainer answers this run's approval request while the run goes; a run that
    // ends first (a failed job: no request will ever come) ends the waiting with it, and a
    // request that cannot be approved ends the run rather than leave the gate waiting.
    let engine_key = keys.public_key();
    let end = {
        let execution = pipeline_run.run(quorum_router::Recovered::default(), &mut reporter);
        let approving = approve_as_demo_maintainer(
            &maintainer_client,
            &maintainer,
            &engine_key,
            &run_id,
            started_at,
            args.json,
        );
        tokio::pin!(execution, approving);
        let mut approved = false;
        loop {
            tokio::select! {
                end = &mut execution => break end,
                result = &mut approving, if !approved => {
                    result?;
                    approved = true;
                }
            }
        }
    };
    if let Err(err) = &end.ci_status {
        eprintln!("CI status not published: {err}");
    }
    let outcome = end.outcome;
    let mirrors = end.mirrors;
    let release = end.release.map_err(anyhow::Error::msg)?;

    // Fetch what was released, as a user would, and verify it.
    let mut verified = None;
    let mut verified_offline = None;
    let mut bundle = None;
    let released_file = data.join("hello.txt");
    let bundle_file = data.join("hello.txt.bundle.json");
    if let Some(release) = &release {
        say(&format!(
            "released    {} signed by the quorum key{}",
            release.binding.to_hex(),
            if release.signer == quorum.quorum() {
                ""
            } else {
                " (NOT: by another key)"
            }
        ));
        let build = outcome.jobs.iter().find(|j| j.id == "build");
        let artifact = build
            .and_then(|b| b.report.as_ref())
            .and_then(|r| r.artifacts.first())
            .context("the build reported no artifact")?;
        // Any URL that serves exactly the reported bytes will do; verify hashes them again.
        let sha = Sha256Hex::parse(&artifact.blob.sha256)
            .map_err(|e| anyhow::anyhow!("the build reported a bad sha256: {e}"))?;
        super::download::fetch_verified(
            sha,
            &artifact.blob.urls,
            &released_file,
            "released file",
            !args.json,
        )
        .await?;
        let expect = quorum_router::verify::Expectation {
            repo: Some(RepoCoordinate::new(maintainer.public_key(), IDENTIFIER)),
            ..Default::default()
        };
        let verification =
            quorum_router::verify::verify_file(Some(&client), &released_file, None, &expect)
                .await
                .map_err(anyhow::Error::msg)?;
        say(&format!(
            "verified    {}  {}: release signed by the quorum key, mandated by the maintainer; \
             {} of {} members built these bytes ({} needed), {} disagreed, {} silent",
            verification.sha256,
            if verification.ok { "ok" } else { "NOT OK" },
            verification.agreed.len(),
            verification.threshold.as_ref().map_or(0, |t| t.n),
            verification.threshold.as_ref().map_or(0, |t| t.t),
            verification.disagreed.len(),
            verification.silent.len(),
        ));
        for problem in &verification.problems {
            say(&format!("            ! {problem}"));
        }
        verified = Some(verification);
        // The verification bundle, kept beside the file: it verifies with no relay at all.
        match &release.bundle {
            Some((sha, urls)) => {
                bundle = Some(save_bundle(*sha, urls, &bundle_file).await?);
                let offline = quorum_router::verify::verify_file(
                    None,
                    &released_file,
                    Some(&bundle_file),
                    &expect,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                say(&format!(
                    "bundle      {sha}: the release's signed events, saved as {}; verified from it \
                     with no relay: {}",
                    bundle_file.display(),
                    if offline.ok { "ok" } else { "NOT OK" }
                ));
                for problem in &offline.problems {
                    say(&format!("            ! {problem}"));
                }
                verified_offline = Some(offline.ok);
            }
            None => say(&format!(
                "bundle      none stored: {}",
                release.bundle_error.as_deref().unwrap_or("no reason given")
            )),
        }
    }
    client.shutdown().await;
    maintainer_client.shutdown().await;

    let ok = outcome.succeeded
        && verified.as_ref().is_some_and(|v| v.ok)
        && verified_offline != Some(false);
    let repo_id = RepoCoordinate::new(maintainer.public_key(), IDENTIFIER);
    let later = release.as_ref().map(|_| {
        check_later(
            data,
            &released_file,
            &repo_id,
            &args.relays,
            bundle.as_ref().map(|_| bundle_file.as_path()),
        )
    });
    if args.json {
        let value = json!({
            "status": if ok { "success" } else { "failure" },
            "run": run_id,
            "repo": context.repo,
            "commit": commit,
            "jobs": outcome.jobs.iter().map(|j| json!({
                "name": j.id,
                "status": match j.state { JobState::Succeeded => "success", JobState::Failed { .. } => "failure", JobState::Skipped { .. } => "skipped" },
                "provider": j.provider,
            })).collect::<Vec<_>>(),
            "artifacts": outcome.jobs.iter().flat_map(|j| j.report.iter().flat_map(|r| &r.artifacts)).map(|a| json!({
                "name": a.name, "size": a.blob.size, "sha256": a.blob.sha256, "urls": a.blob.urls,
            })).collect::<Vec<_>>(),
            "release": release.as_ref().map(|r| r.binding.to_hex()),
            "nip82": release.as_ref().map(super::run::nip82_json),
            "mirrors": mirrors,
            "quorum": json!({
                "pubkey": quorum.quorum().to_hex(),
                "threshold": quorum.mandate.threshold,
                "members": quorum.members().iter().map(|m| m.to_hex()).collect::<Vec<_>>(),
                "operators": operators.json(QUORUM_THRESHOLD),
            }),
            "mandate": quorum.mandate_event.id.to_hex(),
            "verified": verified,
            "verified_offline": verified_offline,
            "bundle": bundle.as_ref().map(|(sha, urls)| json!({
                "sha256": sha.to_string(), "urls": urls, "file": bundle_file,
            })),
            "check_later": later.as_ref().map(|l| json!({"relay": l.relay, "offline": l.offline})),
            "data": data,
        });
        println!("{value}");
    } else {
        for job in &outcome.jobs {
            for artifact in job.report.iter().flat_map(|r| &r.artifacts) {
                println!("{}  {}", artifact.blob.sha256, artifact.name);
            }
        }
        if let Some(later) = &later {
            println!();
            println!("To check the released file again later:");
            for command in &later.relay {
                println!("  {command}");
            }
            if let Some(offline) = &later.offline {
                println!("or with nothing running, from the release's verification bundle:");
                println!("  {offline}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How to check the released file again once the demo is over.
struct CheckLater {
    /// With the demo's relay: on the embedded network, restarted by `quorum up` first.
    relay: Vec<String>,
    /// From the verification bundle, with nothing running.
    offline: Option<String>,
}

fn check_later(
    data: &Path,
    file: &Path,
    repo: &RepoCoordinate,
    relays: &[String],
    bundle: Option<&Path>,
) -> CheckLater {
    let verify = format!("quorum verify {} --repo {repo}", file.display());
    let relay = if relays.is_empty() {
        vec![
            format!("quorum up --data {}", data.join("network").display()),
            format!("{verify} --relay <the relay URL quorum up prints>"),
        ]
    } else {
        vec![format!("{verify} --relay {}", relays.join(" --relay "))]
    };
    CheckLater {
        relay,
        offline: bundle.map(|b| format!("{verify} --bundle {}", b.display())),
    }
}

/// Downloads the verification bundle `sha` from the first of `urls` that serves exactly those
/// bytes into `dest`.
async fn save_bundle(
    sha: Sha256Hex,
    urls: &[String],
    dest: &Path,
) -> anyhow::Result<(Sha256Hex, Vec<String>)> {
    super::download::fetch_verified(sha, urls, dest, "verification bundle", false).await?;
    Ok((sha, urls.to_vec()))
}

/// Waits for the approval request and approves it with the demo maintainer's key, saying
/// plainly that this is the demo signing for its own maintainer.
/// Approves this run's approval request as the demo maintainer: only a request signed by this
/// run's engine key, for this run id, since the run started (relays reused from an earlier
/// demo hold earlier runs' requests).
async fn approve_as_demo_maintainer(
    client: &JobClient,
    maintainer: &Keys,
    engine: &PublicKey,
    run_id: &str,
    started_at: Timestamp,
    quiet: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let filter = Filter::new()
        .kind(APPROVAL_REQUEST)
        .author(*engine)
        .since(started_at);
    let event = loop {
        let found = client.fetch(filter.clone(), Duration::from_secs(2)).await?;
        // Only this run's request counts: relays used before hold earlier demos' requests,
        // which may even name the same run (the same commit of the same project).
        let ours = found
            .into_iter()
            .filter(|event| event.created_at >= started_at)
            .filter(|event| {
                ApprovalRequest::from_event(event).is_ok_and(|request| request.run == run_id)
            })
            .max_by_key(|event| event.created_at);
        if let Some(event) = ours {
            break event;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no approval request appeared");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let request = ApprovalRequest::from_event(&event)?;
    if !request.maintainers.contains(&maintainer.public_key()) {
        bail!("the approval request does not ask the demo maintainer");
    }
    if !quiet {
        eprintln!("approval    the pipeline asks its maintainer to approve:");
        for artifact in &request.artifacts {
            eprintln!(
                "              {}  {}",
                artifact.sha256.to_hex(),
                artifact.name
            );
        }
        eprintln!(
            "            signed by the DEMO maintainer key (in real use: `quorum approve {}`)",
            event.id.to_hex()
        );
    }
    let verdict = Verdict::on(Decision::Approve, &event, &request, Timestamp::now() + 3600)
        .with_content("approved by quorum demo");
    client.publish_event(verdict.to_event_builder()?).await?;
    Ok(())
}

/// A small project whose build is reproducible: its output depends only on the commit.
fn make_project(repo: &Path) -> anyhow::Result<PathBuf> {
    if repo.exists() {
        std::fs::remove_dir_all(repo)?;
    }
    std::fs::create_dir_all(repo.join(".quorum"))?;
    std::fs::write(repo.join(".quorum/pipeline.yml"), PIPELINE)?;
    std::fs::write(
        repo.join("greeting.txt"),
        "hello from a quorum of builders\n",
    )?;
    std::fs::write(
        repo.join("test.sh"),
        "set -eu\ngrep -q quorum greeting.txt\necho 'tests passed'\n",
    )?;
    std::fs::write(
        repo.join("build.sh"),
        "set -eu\nmkdir -p dist\n\
         { cat greeting.txt; date -u -d \"@$SOURCE_DATE_EPOCH\" +'built from the commit of %Y-%m-%d'; } > dist/hello.txt\n\
         echo built\n",
    )?;
    git(repo, &["init", "--quiet", "--initial-branch=main"])?;
    git(repo, &["add", "."])?;
    git(
        repo,
        &[
            "-c",
            "user.name=Demo Maintainer",
            "-c",
            "user.email=demo@quorum.invalid",
            "commit",
            "--quiet",
            "-m",
            "hello, quorum",
        ],
    )?;
    Ok(repo.to_path_buf())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .context("cannot run git (install git)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Progress as plain lines.
struct Lines {
    quiet: bool,
}

impl RunReporter for Lines {
    fn job_started(&mut self, job: &PlannedJob) {
        if !self.quiet {
            eprintln!("{}", quorum_router::progress::started_line(&job.id));
        }
    }

    fn job_progress(&mut self, job: &str, _provider: &PublicKey, line: &str) {
        if !self.quiet {
            eprintln!(
                "{}",
                super::sanitize(&quorum_router::progress::job_line(job, line))
            );
        }
    }

    fn job_finished(&mut self, record: &JobRecord) {
        if self.quiet {
            return;
        }
        eprintln!(
            "{}",
            super::sanitize(&quorum_router::progress::finished_line(record))
        );
    }

    fn mirrored(&mut self, report: &quorum_router::pipeline_run::MirrorReport) {
        if !self.quiet {
            eprintln!(
                "{}",
                super::sanitize(&quorum_router::progress::mirrored_line(report))
            );
        }
    }
}
