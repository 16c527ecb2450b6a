//! Shared helpers for the sandbox integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use quorum_sandbox::{Bubblewrap, LogLine, Sandbox, StepOutcome, StepSpec, Stream};

/// The fork bomb test runs alone: where the sandbox has no pids cgroup (its notes say so) a
/// bomb is bounded only by its timeout, and the forks it takes from the machine would fail the
/// steps of tests running beside it. Every other sandboxed test holds this shared.
pub static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The bubblewrap backend. Missing bwrap is a test failure, never a skip.
pub fn bwrap() -> Bubblewrap {
    Bubblewrap::detect().unwrap_or_else(|e| {
        panic!(
            "these tests need bubblewrap: install it (apt-get install bubblewrap) \
             and make sure it can create namespaces here. {e}"
        )
    })
}

/// A spec with a short timeout, so no test can hang.
pub fn spec(script: &str, work: &Path) -> StepSpec {
    let mut s = StepSpec::new(script, work);
    s.timeout = Duration::from_secs(20);
    s
}

/// Run a step, with an outer bound well above the step's own timeout.
pub async fn run(sb: &dyn Sandbox, spec: &StepSpec) -> (StepOutcome, Vec<LogLine>) {
    let mut log: Vec<LogLine> = Vec::new();
    let outcome = tokio::time::timeout(
        spec.timeout + Duration::from_secs(30),
        sb.run(spec, &mut log),
    )
    .await
    .expect("run did not return in time")
    .expect("sandbox error");
    (outcome, log)
}

/// All log text of one stream, one line per line.
pub fn text(log: &[LogLine], stream: Stream) -> String {
    log.iter()
        .filter(|l| l.stream == stream)
        .map(|l| format!("{}\n", l.text))
        .collect()
}

/// Everything in the log.
pub fn all(log: &[LogLine]) -> String {
    log.iter()
        .map(|l| format!("{:?}: {}\n", l.stream, l.text))
        .collect()
}

/// Processes whose command line contains `marker` (what `pgrep -f` does), except us.
pub fn pgrep(marker: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// A marker unique to this test run, to find stray processes.
pub fn marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("quorum-marker-{tag}-{}-{nanos}", std::process::id())
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
