//! Extra latency of a quorum step over a single-DVM step, end to end on loopback (not a test):
//! `cargo bench -p quorum-router --bench quorum_step` writes `target/bench/quorum_step.json`.
//!
//! One network (our relay, our Blossom server, runner DVMs with bubblewrap). For n = 3, 5, 7
//! (t = n/2 + 1): n quorum runners holding shares of a dealt key and a mandate for it. The same
//! one-job pipeline (`sh build.sh` on the sample repository, one artifact) goes through
//! [`quorum_router::execute`] (a) to one of those runners, as an ordinary step, and (b) as
//! `mode: quorum` with `replicas: n`, `threshold: t`; the two alternate, after one warm-up each.
//!
//! The extra latency (quorum median − single median) is split with the members' own timings:
//! each member logs its commit-reveal and signing times at the end of its part (the `quorum part
//! done` debug event of `quorum_consensus::member`), caught here by a small tracing subscriber.
//! Per quorum step, over the members that signed:
//!
//! - *agreement*: from the last of them entering commit-reveal (its build and upload done) to
//!   the last tally;
//! - *signing*: the slowest member's signing session, tally to signed attestation;
//! - *build skew*: from the first to the last of them entering commit-reveal (their builds
//!   share the machine's cores);
//! - *other*: the rest of the extra latency (n builds at once instead of one, the members'
//!   mandate lookup, n results, the engine's attestation lookup).
//!
//! The members wait [`STRAGGLER_WAIT`] for stragglers once `t` have committed (the default, 5 s,
//! would dominate whenever one build is slower than the rest); it is in the output.
//!
//! Members derive the job from the maintainer's code (protocol §16), so for each n the quorum
//! pipeline is committed to the repository and the mandate's owner publishes the repository's
//! announcement and a state naming that commit; both modes build that commit.
//!
//! `-- --runs N --sizes 3,5` measures less (a smoke run, e.g. under `cargo test --bench`);
//! `-- --help` says so.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::Dvm;
use quorum_dvm::client::JobClient;
use quorum_router::quorum::QuorumContext;
use quorum_router::{EngineConfig, JobRecord, QuietRun, RunContext, execute};
use quorum_testnet::Network;
use serde_json::json;

/// Measured runs per mode and n, after one warm-up each (`--runs`).
const RUNS: usize = 5;
/// The quorum sizes measured (`--sizes`).
const SIZES: [usize; 3] = [3, 5, 7];
/// The members' straggler wait in this bench.
const STRAGGLER_WAIT: Duration = Duration::from_millis(500);

const PIPELINE: &str =
    "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n";

/// One member's part in one quorum job, as it logged it.
#[derive(Debug, Clone)]
struct Part {
    job: String,
    agreement_ms: f64,
    signing_ms: Option<f64>,
    signed: bool,
    /// When the event was logged: the end of the member's part.
    at: Instant,
}

static PARTS: Mutex<Vec<Part>> = Mutex::new(Vec::new());

/// A tracing subscriber that only listens to the members' `quorum part done` events.
struct Parts;

const MEMBER_TARGET: &str = "quorum_consensus::member";

impl tracing::Subscriber for Parts {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event()
            && meta.target() == MEMBER_TARGET
            && meta.fields().field("agreement_ms").is_some()
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let at = Instant::now();
        let mut visitor = PartVisitor::default();
        event.record(&mut visitor);
        if let (Some(job), Some(agreement_ms)) = (visitor.job, visitor.agreement_ms) {
            PARTS.lock().unwrap().push(Part {
                job,
                agreement_ms,
                signing_ms: visitor.signing_ms,
                signed: visitor.signed,
                at,
            });
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Default)]
struct PartVisitor {
    job: Option<String>,
    agreement_ms: Option<f64>,
    signing_ms: Option<f64>,
    signed: bool,
}

impl tracing::field::Visit for PartVisitor {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        match field.name() {
            "agreement_ms" => self.agreement_ms = Some(value),
            "signing_ms" => self.signing_ms = Some(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "signed" {
            self.signed = value;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "job" {
            self.job = Some(format!("{value:?}"));
        }
    }
}

/// The members' parts in `job`, once `n` have logged theirs (or after 10 s).
async fn parts_of(job: &str, n: usize) -> Vec<Part> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let parts: Vec<Part> = PARTS
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.job == job)
            .cloned()
            .collect();
        if parts.len() >= n || Instant::now() >= deadline {
            return parts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The split of one quorum step, over the members that signed.
struct Split {
    /// Step start → the last signer entering commit-reveal (dispatch, n builds, uploads,
    /// mandate lookup).
    build_ms: f64,
    agreement_ms: f64,
    signing_ms: f64,
    /// The `t`-th signer done → the engine's outcome (results, attestation lookup).
    tail_ms: f64,
    build_skew_ms: f64,
    member_agreement_max_ms: f64,
    signed: usize,
}

/// `parts` of a quorum step that ran from `start` to `end` with threshold `t`.
fn split(parts: &[Part], start: Instant, end: Instant, t: usize) -> Split {
    let signers: Vec<&Part> = parts.iter().filter(|p| p.signed).collect();
    assert!(signers.len() >= t, "fewer than t members signed: {parts:?}");
    // Each signer's timeline in ms after the step's start.
    let done = |p: &Part| p.at.saturating_duration_since(start).as_secs_f64() * 1000.0;
    let tallied = |p: &Part| done(p) - p.signing_ms.unwrap_or(0.0);
    let entered = |p: &Part| tallied(p) - p.agreement_ms;
    let max = |f: &dyn Fn(&Part) -> f64| signers.iter().map(|p| f(p)).fold(f64::MIN, f64::max);
    let min = |f: &dyn Fn(&Part) -> f64| signers.iter().map(|p| f(p)).fold(f64::MAX, f64::min);
    let mut finished: Vec<f64> = signers.iter().map(|p| done(p)).collect();
    finished.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let wall = (end - start).as_secs_f64() * 1000.0;
    Split {
        build_ms: max(&entered),
        agreement_ms: max(&tallied) - max(&entered),
        signing_ms: max(&|p| p.signing_ms.unwrap_or(0.0)),
        tail_ms: wall - finished[t - 1],
        build_skew_ms: max(&entered) - min(&entered),
        member_agreement_max_ms: max(&|p| p.agreement_ms),
        signed: signers.len(),
    }
}

fn member_config() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(60),
            straggler_wait: STRAGGLER_WAIT,
            reveal_wait: Duration::from_secs(20),
            ..AgreementConfig::default()
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SigningConfig::default()
        },
    }
}

/// n quorum runners holding shares of a dealt t-of-n key, and a published mandate for it.
async fn fleet(
    network: &Network,
    dir: &Path,
    n: usize,
    t: u16,
) -> (Vec<Dvm>, quorum_testnet::quorum::DealtQuorum) {
    let data = |i: usize| dir.join(format!("n{n}-runner{i}"));
    let dealt = quorum_testnet::quorum::deal(
        &network.relay,
        quorum_testnet::quorum::QuorumSpec {
            n,
            t,
            identifier: "sample",
            jobs: &["build"],
            allow: &[8708],
        },
        |i| data(i).join("shares"),
    )
    .await;
    let mut runners = Vec::new();
    for (i, k) in dealt.members.iter().enumerate() {
        runners.push(
            network
                .quorum_runner(
                    &data(i),
                    k.clone(),
                    &data(i).join("shares"),
                    member_config(),
                )
                .await,
        );
    }
    (runners, dealt)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("bench")
}

/// One run of a one-job plan.
struct Timed {
    start: Instant,
    end: Instant,
    record: JobRecord,
}

impl Timed {
    fn wall_ms(&self) -> f64 {
        (self.end - self.start).as_secs_f64() * 1000.0
    }
}

/// Runs the one-job `plan`, which must succeed.
async fn timed(
    client: &JobClient,
    plan: &quorum_pipeline::Plan,
    context: &RunContext,
    config: &EngineConfig,
) -> Timed {
    let start = Instant::now();
    let outcome = execute(client, plan, context, config, Vec::new(), &mut QuietRun).await;
    let end = Instant::now();
    let record = outcome.jobs.into_iter().next().expect("one job");
    assert!(outcome.succeeded, "{:?}", record.state);
    Timed { start, end, record }
}

/// What to measure: `--runs N`, `--sizes 3,5,7`.
struct Options {
    runs: usize,
    sizes: Vec<usize>,
}

fn options() -> Options {
    const USAGE: &str = "usage: quorum_step [--runs N] [--sizes 3,5,7]\n\
        measures the extra latency of a quorum step over a single-DVM step; writes \
        target/bench/quorum_step.json";
    let mut options = Options {
        runs: RUNS,
        sizes: SIZES.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                options.runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .unwrap_or_else(|| panic!("--runs takes a positive number\n{USAGE}"));
            }
            "--sizes" => {
                options.sizes = args
                    .next()
                    .map(|v| v.split(',').map(|n| n.parse::<usize>()).collect())
                    .and_then(Result::ok)
                    .filter(|s: &Vec<usize>| !s.is_empty() && s.iter().all(|&n| n >= 2))
                    .unwrap_or_else(|| panic!("--sizes takes quorum sizes ≥ 2, e.g. 3,5\n{USAGE}"));
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => panic!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Options { runs, sizes } = options();
    tracing::subscriber::set_global_default(Parts).expect("no other subscriber");
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = quorum_testkit::git::sample_repo(dir.path());
    let url = format!("file://{}", repo.display());
    let single_plan = quorum_pipeline::parse(".quorum/pipeline.yml", PIPELINE).unwrap();
    let client = network.client().await;
    println!(
        "members' straggler wait: {} ms (default {} ms); {runs} runs per mode and n, after one \
         warm-up each",
        STRAGGLER_WAIT.as_millis(),
        AgreementConfig::default().straggler_wait.as_millis()
    );
    println!(
        "{:>2} {:>2} | {:>10} {:>10} {:>9} | {:>9} {:>9} {:>10} {:>9} | {:>12} {:>6}",
        "n",
        "t",
        "single ms",
        "quorum ms",
        "extra ms",
        "agree ms",
        "sign ms",
        "skew ms",
        "other ms",
        "member agr ms",
        "signed"
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let t = (n / 2 + 1) as u16;
        let (runners, dealt) = fleet(&network, dir.path(), n, t).await;
        let quorum_pipeline =
            format!("{PIPELINE}    mode: quorum\n    replicas: {n}\n    threshold: {t}\n");
        let quorum_plan = quorum_pipeline::parse(".quorum/pipeline.yml", &quorum_pipeline).unwrap();
        // The members build what the pipeline at the commit says, from the source the
        // maintainer signed.
        let commit = quorum_testkit::git::commit_file(
            &repo,
            ".quorum/pipeline.yml",
            &quorum_pipeline,
            &format!("quorum of {n}"),
        );
        dealt
            .publish_repository(&network.relay, &url, "refs/heads/main", &commit)
            .await;
        let quorum = QuorumContext::new(dealt.mandate.clone())
            .unwrap()
            .with_source(&client, &url, &commit)
            .await;
        if let Err(reason) = &quorum.source {
            panic!("no source evidence for the quorum step: {reason}");
        }
        let single_context = RunContext {
            repo: url.clone(),
            commit: commit.clone(),
            ..RunContext::default()
        };
        let quorum_context = RunContext {
            quorum: Some(quorum),
            ..single_context.clone()
        };
        let single_config = EngineConfig {
            runners: vec![runners[0].public_key()],
            ..EngineConfig::default()
        };
        let quorum_config = EngineConfig::default();

        let mut singles = Vec::new();
        let mut quorums = Vec::new();
        let mut splits = Vec::new();
        for run in 0..=runs {
            let single = timed(&client, &single_plan, &single_context, &single_config).await;
            let step = timed(&client, &quorum_plan, &quorum_context, &quorum_config).await;
            let request = step.record.request.as_deref().expect("a quorum request");
            // Every member's part ends before the next run starts.
            let parts = parts_of(request, n).await;
            if run == 0 {
                continue;
            }
            singles.push(single.wall_ms());
            quorums.push(step.wall_ms());
            splits.push(split(&parts, step.start, step.end, usize::from(t)));
        }
        let single = median(singles.clone());
        let quorum_ms = median(quorums.clone());
        let extra = quorum_ms - single;
        let build = median(splits.iter().map(|s| s.build_ms).collect());
        let tail = median(splits.iter().map(|s| s.tail_ms).collect());
        let agreement = median(splits.iter().map(|s| s.agreement_ms).collect());
        let signing = median(splits.iter().map(|s| s.signing_ms).collect());
        let skew = median(splits.iter().map(|s| s.build_skew_ms).collect());
        let member_agreement = median(splits.iter().map(|s| s.member_agreement_max_ms).collect());
        let other = extra - agreement - signing;
        let signed_min = splits.iter().map(|s| s.signed).min().unwrap();
        println!(
            "{n:>2} {t:>2} | {single:>10.1} {quorum_ms:>10.1} {extra:>9.1} | {agreement:>9.1} {signing:>9.1} {skew:>10.1} {other:>9.1} | {member_agreement:>12.1} {signed_min:>3}/{n}"
        );
        rows.push(json!({
            "n": n,
            "t": t,
            "single_step_median_ms": single,
            "quorum_step_median_ms": quorum_ms,
            "extra_ms": extra,
            "agreement_ms": agreement,
            "signing_ms": signing,
            "other_ms": other,
            "quorum_step_phases_ms": {"build": build, "agreement": agreement,
                "signing": signing, "tail": tail},
            "build_skew_ms": skew,
            "member_agreement_max_ms": member_agreement,
            "min_signers": signed_min,
            "single_step_samples_ms": singles,
            "quorum_step_samples_ms": quorums,
        }));
        for runner in runners {
            runner.shutdown().await;
        }
    }
    println!(
        "agree: last signer entering commit-reveal → last tally; sign: slowest signer, tally → signed; \
         skew: first → last signer entering commit-reveal; other: extra − agree − sign (n builds \
         at once, mandate lookup, attestation lookup); member agr: slowest signer's own \
         commit-reveal, skew included (medians over the runs)"
    );
    println!(
        "\nphases of the quorum step (medians, ms): build = start → last signer entering commit-reveal; tail = t-th signer done → outcome"
    );
    println!(
        "{:>2} | {:>8} {:>8} {:>8} {:>8} | {:>10} {:>9}",
        "n", "build", "agree", "sign", "tail", "sum", "quorum ms"
    );
    for row in &rows {
        let phase = |name: &str| row["quorum_step_phases_ms"][name].as_f64().unwrap();
        let (build, agree, sign, tail) = (
            phase("build"),
            phase("agreement"),
            phase("signing"),
            phase("tail"),
        );
        println!(
            "{:>2} | {build:>8.1} {agree:>8.1} {sign:>8.1} {tail:>8.1} | {:>10.1} {:>9.1}",
            row["n"].as_u64().unwrap(),
            build + agree + sign + tail,
            row["quorum_step_median_ms"].as_f64().unwrap()
        );
    }
    match rows.iter().find(|r| r["n"] == 5) {
        Some(n5) => {
            let signing_n5 = n5["signing_ms"].as_f64().unwrap();
            println!(
                "goal: signing adds under 100 ms at n = 5 on loopback: {signing_n5:.1} ms, {}",
                if signing_n5 < 100.0 { "met" } else { "NOT met" }
            );
        }
        None => println!("goal: signing at n = 5 not measured (--sizes)"),
    }

    let figures = json!({
        "straggler_wait_ms": STRAGGLER_WAIT.as_millis() as u64,
        "straggler_wait_default_ms": AgreementConfig::default().straggler_wait.as_millis() as u64,
        "runs": runs,
        "worker_threads": 2,
        "steps": rows,
    });
    let out = bench_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("quorum_step.json"),
        serde_json::to_vec_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!(
        "figures written to {}",
        out.join("quorum_step.json").display()
    );
    client.shutdown().await;
}
