//! Job overhead of the runner DVM on loopback, next to the baselines measured in the same run.
//!
//! - relay round trip: publish → a subscriber receives it (the floor for any DVM answer);
//! - sandbox start-up: bubblewrap running `true`;
//! - git fetch of the sample commit (file://);
//! - a no-op job: request published → result received (`quorum job build --run true`);
//! - throughput of one runner with its default concurrency on no-op jobs.
//!
//! `cargo bench -p quorum-runner --bench job_overhead` writes `target/bench/job_overhead.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_dvm::DvmConfig;
use quorum_dvm::client::{JobClient, JobOutcome, Quiet};
use quorum_proto::step::StepJob;
use quorum_runner::GitPolicy;
use quorum_sandbox::Sandbox;
use quorum_testnet::bench::relay_round_trips;
use serde_json::json;

const SAMPLES: usize = 40;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut millis: Vec<f64>) -> serde_json::Value {
    millis.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p95) = (percentile(&millis, 0.5), percentile(&millis, 0.95));
    println!(
        "{name:<28} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   (n={})",
        millis.len()
    );
    json!({"p50_ms": p50, "p95_ms": p95, "samples": millis.len()})
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn sandbox_startups(sandbox: &dyn Sandbox, dir: &Path) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        let spec = quorum_sandbox::StepSpec::new("true", dir.to_path_buf());
        let mut log: Vec<quorum_sandbox::LogLine> = Vec::new();
        let start = Instant::now();
        let outcome = sandbox.run(&spec, &mut log).await.unwrap();
        samples.push(ms(start.elapsed()));
        assert!(outcome.success());
    }
    samples
}

async fn git_fetches(repo: &Path, commit: &str, dir: &Path) -> Vec<f64> {
    let policy = GitPolicy {
        allow_local: true,
        ..GitPolicy::default()
    };
    let mut samples = Vec::new();
    for i in 0..SAMPLES {
        let dest = dir.join(format!("fetch-{i}"));
        let start = Instant::now();
        quorum_runner::git::fetch_commit(
            &format!("file://{}", repo.display()),
            commit,
            &dest,
            &policy,
        )
        .await
        .unwrap();
        samples.push(ms(start.elapsed()));
        std::fs::remove_dir_all(&dest).unwrap();
    }
    samples
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("bench")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Quiet unless RUST_LOG asks: logging would be part of what is measured.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let network = quorum_testnet::Network::start(dir.path()).await;
    let relay_url = network.relay.clone();
    let (repo, commit) = quorum_testkit::git::sample_repo(dir.path());
    let sandbox: Arc<dyn Sandbox> =
        Arc::new(quorum_sandbox::Bubblewrap::detect().expect("bubblewrap"));
    let dvm = network.runner(&dir.path().join("runner"), true).await;
    let provider = dvm.public_key();
    let concurrency = DvmConfig::new(Vec::new(), PathBuf::new(), "default").concurrency;

    println!("runner job overhead on loopback (debug logging off, release build)");
    let relay_rtt = relay_round_trips(&relay_url, SAMPLES).await;
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let startup = sandbox_startups(sandbox.as_ref(), &empty).await;
    let fetch = git_fetches(&repo, &commit, dir.path()).await;

    let client = JobClient::connect(std::slice::from_ref(&relay_url), Keys::generate())
        .await
        .unwrap();
    let step = StepJob::new(format!("file://{}", repo.display()), &commit, "true");
    let mut jobs = Vec::new();
    for _ in 0..SAMPLES {
        let request = step.to_request().provider(provider);
        let start = Instant::now();
        let outcome = client
            .run(&request, false, Duration::from_secs(60), &mut Quiet)
            .await
            .unwrap();
        assert!(matches!(outcome, JobOutcome::Result { .. }), "{outcome:?}");
        jobs.push(ms(start.elapsed()));
    }

    // Throughput: many no-op jobs in flight at once, one runner.
    let burst = 40;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..burst {
        let relay_url = relay_url.clone();
        let request = step.to_request().provider(provider);
        tasks.push(tokio::spawn(async move {
            let client = JobClient::connect(&[relay_url], Keys::generate())
                .await
                .unwrap();
            let outcome = client
                .run(&request, false, Duration::from_secs(300), &mut Quiet)
                .await
                .unwrap();
            client.shutdown().await;
            matches!(outcome, JobOutcome::Result { .. })
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    let jobs_per_sec = ok as f64 / elapsed.as_secs_f64();

    let relay_rtt = summary("relay publish→receive", relay_rtt);
    let startup = summary("sandbox start-up (bwrap true)", startup);
    let fetch = summary("git fetch (file://)", fetch);
    let job = summary("no-op job request→result", jobs);
    let overhead = job["p50_ms"].as_f64().unwrap()
        - startup["p50_ms"].as_f64().unwrap()
        - fetch["p50_ms"].as_f64().unwrap();
    println!("overhead beyond sandbox start-up and git fetch (p50): {overhead:.2} ms");
    println!(
        "throughput: {ok}/{burst} no-op jobs in {:.2} s = {jobs_per_sec:.2} jobs/s (concurrency {concurrency})",
        elapsed.as_secs_f64()
    );
    let figures = json!({
        "relay_round_trip": relay_rtt,
        "sandbox_startup": startup,
        "git_fetch": fetch,
        "noop_job": job,
        "overhead_beyond_sandbox_and_fetch_p50_ms": overhead,
        "throughput": {"jobs": ok, "seconds": elapsed.as_secs_f64(), "jobs_per_sec": jobs_per_sec, "concurrency": concurrency},
    });
    let out = bench_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("job_overhead.json"),
        serde_json::to_vec_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!(
        "figures written to {}",
        out.join("job_overhead.json").display()
    );
    client.shutdown().await;
    dvm.shutdown().await;
}
