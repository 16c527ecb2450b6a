//! Scenario files: `tests/scenarios/NAME.pipeline.yml` is run end to end on a loopback network
//! (relay, Blossom, two bubblewrap runners) against the sample repository, and every job's
//! outcome must match `NAME.expected`: one line per job, `JOB STATUS [TEXT THE REASON CONTAINS]`, with
//! STATUS one of success, failure, skipped. Add a scenario by adding two files.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_router::{EngineConfig, JobRecord, JobState, RunContext, RunReporter, execute};
use quorum_testkit::git::{git, sample_repo};
use quorum_testnet::Network;

struct Silent;

impl RunReporter for Silent {
    fn job_started(&mut self, _: &quorum_pipeline::PlannedJob) {}
    fn job_progress(&mut self, _: &str, _: &PublicKey, _: &str) {}
    fn job_finished(&mut self, _: &JobRecord) {}
}

fn status(state: &JobState) -> (&'static str, &str) {
    match state {
        JobState::Succeeded => ("success", ""),
        JobState::Failed { reason } => ("failure", reason),
        JobState::Skipped { reason } => ("skipped", reason),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_file_ends_as_expected() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&scenarios)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".pipeline.yml").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 5, "scenario files are missing: {names:?}");

    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let first = network.runner(&dir.path().join("r1"), true).await;
    let second = network.runner(&dir.path().join("r2"), true).await;
    let client = network.client().await;
    let config = EngineConfig {
        runners: vec![first.public_key(), second.public_key()],
        ..EngineConfig::default()
    };
    let mut failures = Vec::new();
    for name in &names {
        let pipeline =
            std::fs::read_to_string(scenarios.join(format!("{name}.pipeline.yml"))).unwrap();
        let expected = std::fs::read_to_string(scenarios.join(format!("{name}.expected"))).unwrap();
        // Each scenario runs on its own commit carrying its pipeline, as a maintainer would push it.
        std::fs::create_dir_all(repo.join(".quorum")).unwrap();
        std::fs::write(repo.join(".quorum/pipeline.yml"), &pipeline).unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "--quiet", "--allow-empty", "-m", name]);
        let plan = match quorum_pipeline::parse(".quorum/pipeline.yml", &pipeline) {
            Ok(plan) => plan,
            Err(diagnostics) => {
                failures.push(format!("{name}: does not lint:\n{diagnostics}"));
                continue;
            }
        };
        let context = RunContext {
            repo: format!("file://{}", repo.display()),
            commit: git(&repo, &["rev-parse", "HEAD"]),
            ..RunContext::default()
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(120),
            execute(&client, &plan, &context, &config, Vec::new(), &mut Silent),
        )
        .await
        .unwrap_or_else(|_| panic!("scenario {name} did not finish within 120 s"));
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.splitn(3, ' ');
            let (job, want, reason) = (
                parts.next().unwrap(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let Some(record) = outcome.jobs.iter().find(|r| r.id == job) else {
                failures.push(format!("{name}: no job {job}"));
                continue;
            };
            let (got, why) = status(&record.state);
            if got != want || !why.contains(reason) {
                failures.push(format!(
                    "{name}: {job} ended {got} ({why:?}), expected {want} {reason:?}"
                ));
            }
        }
        let expected_jobs = expected.lines().filter(|l| !l.trim().is_empty()).count();
        if expected_jobs != outcome.jobs.len() {
            failures.push(format!(
                "{name}: {} jobs ran, {expected_jobs} expected",
                outcome.jobs.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    client.shutdown().await;
    first.shutdown().await;
    second.shutdown().await;
}
