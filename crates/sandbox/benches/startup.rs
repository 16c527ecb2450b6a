//! Sandbox start-up cost: `true` as a plain process, under a bare `bwrap`, and through the full
//! `Sandbox::run` path of both backends (cgroup, pipes, prelude shell, cleanup); for bubblewrap
//! with today's hardening (build user, staged binds, seccomp, masked /proc), with the flags it
//! used before (`unhardened_for_benchmarks`), and with a network of the step's own (pasta).
//! The sandbox variants run interleaved, so that drift on a shared machine hits them alike.
//!
//! `cargo bench -p quorum-sandbox --bench startup` prints medians and ratios and writes
//! `target/bench/sandbox.json`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quorum_sandbox::{Bubblewrap, LogLine, Sandbox, StepSpec, Unsandboxed};

const RUNS: usize = 50;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn time_cmd(program: &str, args: &[&str]) -> f64 {
    let mut v = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let ok = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn")
            .success();
        v.push(t.elapsed());
        assert!(ok, "{program} failed");
    }
    median(v)
}

/// Medians of each `(sandbox, network)` variant, run round-robin `RUNS` times.
fn time_sandboxes(rt: &tokio::runtime::Runtime, variants: &[(&dyn Sandbox, bool)]) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(RUNS); variants.len()];
    for _ in 0..RUNS {
        for (i, (sb, network)) in variants.iter().enumerate() {
            let mut spec = StepSpec::new("true", dir.path());
            spec.network = *network;
            let mut log: Vec<LogLine> = Vec::new();
            let t = Instant::now();
            let out = rt.block_on(sb.run(&spec, &mut log)).expect("run");
            times[i].push(t.elapsed());
            assert!(out.success(), "{out:?} {log:?}");
        }
    }
    times.into_iter().map(median).collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bwrap = Bubblewrap::detect().expect("bubblewrap is required (apt-get install bubblewrap)");
    let plain = time_cmd("/bin/true", &[]);
    let bare = time_cmd(
        "bwrap",
        &[
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "/bin/true",
        ],
    );
    let unhardened = bwrap.clone().unhardened_for_benchmarks();
    let unsandboxed_backend = Unsandboxed::new();
    let mut variants: Vec<(&dyn Sandbox, bool)> = vec![
        (&bwrap, false),
        (&unhardened, false),
        (&unsandboxed_backend, false),
    ];
    if bwrap.network_available() {
        variants.push((&bwrap, true));
    }
    let m = time_sandboxes(&rt, &variants);
    let (sandbox, before, unsandboxed) = (m[0], m[1], m[2]);
    let network = m.get(3).copied();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let root = bwrap.build_ids().is_some();
    let json = format!(
        "{{\n  \"runs\": {RUNS},\n  \"cores\": {cores},\n  \"bwrap_version\": \"{}\",\n  \
         \"as_root_with_build_user\": {root},\n  \
         \"plain_true_ms_median\": {plain:.3},\n  \"bwrap_true_ms_median\": {bare:.3},\n  \
         \"sandbox_run_true_ms_median\": {sandbox:.3},\n  \
         \"sandbox_run_unhardened_true_ms_median\": {before:.3},\n  \
         \"sandbox_run_network_true_ms_median\": {},\n  \
         \"unsandboxed_run_true_ms_median\": {unsandboxed:.3},\n  \
         \"hardening_added_ms\": {:.3},\n  \
         \"ratio_hardened_to_unhardened\": {:.3},\n  \
         \"ratio_hardened_to_plain_process\": {:.3},\n  \
         \"network_added_ms\": {}\n}}\n",
        bwrap.describe().version,
        network.map_or("null".into(), |n| format!("{n:.3}")),
        sandbox - before,
        sandbox / before,
        sandbox / plain,
        network.map_or("null".into(), |n| format!("{:.3}", n - sandbox)),
    );
    print!("{json}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sandbox.json"), json).unwrap();
    let file = dir.join("sandbox.json").canonicalize().unwrap();
    eprintln!("wrote {}", file.display());
}
