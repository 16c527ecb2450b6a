//! Orchestration overhead of the pipeline engine on loopback, next to the relay round trip
//! measured in the same run.
//!
//! - a 10-step chain of no-op steps (each `needs` the one before): wall time minus the steps'
//!   own sandbox time, divided by 10 = the cost of dispatching one step (fetch, feedback, log
//!   upload, result, next request);
//! - 100 one-step pipelines started at once on one fleet (2 runners): all must finish; wall
//!   time and the process's peak RSS.
//!
//! `cargo bench -p quorum-router --bench orchestration` writes `target/bench/orchestration.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nostr_sdk::prelude::*;
use quorum_dvm::Dvm;
use quorum_dvm::client::JobClient;
use quorum_router::{EngineConfig, QuietRun, RunContext, execute};
use quorum_testnet::bench::{median, relay_round_trips};
use serde_json::json;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn commit_pipeline(repo: &Path, pipeline: &str) -> String {
    use quorum_testkit::git::git;
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "pipeline"]);
    git(repo, &["rev-parse", "HEAD"])
}

fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let network = quorum_testnet::Network::start(dir.path()).await;
    let relay_url = network.relay.clone();
    let mut runners = Vec::new();
    for n in 0..2 {
        runners.push(
            network
                .runner(&dir.path().join(format!("runner{n}")), true)
                .await,
        );
    }
    let (repo, _) = quorum_testkit::git::sample_repo(dir.path());
    let mut chain = String::from("on: [push]\njobs:\n");
    for i in 0..10 {
        chain.push_str(&format!("  s{i}:\n    run: \"true\"\n"));
        if i > 0 {
            chain.push_str(&format!("    needs: s{}\n", i - 1));
        }
    }
    let commit = commit_pipeline(&repo, &chain);
    let plan = quorum_pipeline::parse(".quorum/pipeline.yml", &chain).unwrap();
    let context = RunContext {
        repo: format!("file://{}", repo.display()),
        commit,
        ..RunContext::default()
    };
    let config = EngineConfig {
        runners: runners.iter().map(Dvm::public_key).collect(),
        ..EngineConfig::default()
    };
    let client = JobClient::connect(std::slice::from_ref(&relay_url), Keys::generate())
        .await
        .unwrap();
    let rtt = median(relay_round_trips(&relay_url, 30).await);

    // Warm up once (first sandbox, first connections), then measure three chains.
    execute(&client, &plan, &context, &config, Vec::new(), &mut QuietRun).await;
    let mut per_step = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let outcome = execute(&client, &plan, &context, &config, Vec::new(), &mut QuietRun).await;
        let wall = start.elapsed().as_secs_f64() * 1000.0;
        assert!(outcome.succeeded);
        let steps: f64 = outcome
            .jobs
            .iter()
            .map(|j| j.report.as_ref().unwrap().duration_ms as f64)
            .sum();
        per_step.push((wall - steps) / 10.0);
    }
    per_step.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let overhead = per_step[1];
    println!("relay round trip (p50)                  {rtt:>8.2} ms");
    println!(
        "orchestration overhead per step (median) {overhead:>8.2} ms  (= {:.1} × relay RTT)",
        overhead / rtt
    );

    // 100 one-step pipelines at once.
    let single = quorum_pipeline::parse(
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  only:\n    run: \"true\"\n",
    )
    .unwrap();
    let start = Instant::now();
    let runs = (0..100).map(|_| {
        let relay_url = relay_url.clone();
        let single = &single;
        let context = &context;
        let config = &config;
        async move {
            let client = JobClient::connect(&[relay_url], Keys::generate())
                .await
                .unwrap();
            let outcome =
                execute(&client, single, context, config, Vec::new(), &mut QuietRun).await;
            client.shutdown().await;
            outcome.succeeded
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let finished = results.iter().filter(|ok| **ok).count();
    let elapsed = start.elapsed().as_secs_f64();
    let rss = peak_rss_kib();
    println!(
        "100 concurrent pipelines: {finished}/100 succeeded in {elapsed:.2} s; peak RSS {:.1} MiB (whole process: relay, Blossom, 2 runners, 100 clients)",
        rss as f64 / 1024.0
    );

    let figures = json!({
        "relay_round_trip_p50_ms": rtt,
        "per_step_overhead_ms": overhead,
        "per_step_overhead_samples_ms": per_step,
        "concurrent_pipelines": {"started": 100, "succeeded": finished, "seconds": elapsed, "peak_rss_kib": rss},
    });
    let out = bench_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("orchestration.json"),
        serde_json::to_vec_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!(
        "figures written to {}",
        out.join("orchestration.json").display()
    );
    client.shutdown().await;
    for runner in runners {
        runner.shutdown().await;
    }
}
