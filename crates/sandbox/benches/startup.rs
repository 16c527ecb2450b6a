//! Sandbox start-up cost: `true` as a plain process, under a bare `bwrap`, and through the full
//! `Sandbox::run` path of both backends (cgroup, pipes, prelude shell, cleanup).
//!
//! `cargo bench -p quorum-sandbox --bench startup` prints medians and writes
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

fn time_sandbox(rt: &tokio::runtime::Runtime, sb: &dyn Sandbox) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let spec = StepSpec::new("true", dir.path());
    let mut v = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut log: Vec<LogLine> = Vec::new();
        let t = Instant::now();
        let out = rt.block_on(sb.run(&spec, &mut log)).expect("run");
        v.push(t.elapsed());
        assert!(out.success(), "{out:?} {log:?}");
    }
    median(v)
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
    let sandbox = time_sandbox(&rt, &bwrap);
    let unsandboxed = time_sandbox(&rt, &Unsandboxed::new());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let json = format!(
        "{{\n  \"runs\": {RUNS},\n  \"cores\": {cores},\n  \"bwrap_version\": \"{}\",\n  \
         \"plain_true_ms_median\": {plain:.3},\n  \"bwrap_true_ms_median\": {bare:.3},\n  \
         \"sandbox_run_true_ms_median\": {sandbox:.3},\n  \
         \"unsandboxed_run_true_ms_median\": {unsandboxed:.3}\n}}\n",
        bwrap.describe().version
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
