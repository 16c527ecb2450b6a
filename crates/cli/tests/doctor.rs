//! `quorum doctor` as an operator runs it: on this machine as it is, with bubblewrap hidden,
//! and against a relay and a Blossom server that answer and a relay that does not.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quorum_testkit::daemon::Daemon;

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

/// Every check the doctor reports, whatever the machine.
const CHECKS: [&str; 11] = [
    "bubblewrap",
    "build-user",
    "user-namespaces",
    "cgroups",
    "pasta",
    "tun",
    "git",
    "disk",
    "relay",
    "clock",
    "blossom",
];

fn run(program: &str, args: &[&str]) -> std::process::Output {
    quorum_testkit::daemon::run(program, args, Duration::from_secs(60))
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The checks named `name` (one per URL for relays and Blossom servers).
fn checks<'a>(report: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["name"] == name)
        .collect()
}

#[test]
fn doctor_json_lists_every_check_and_nothing_fails_on_this_machine() {
    let data = tempfile::tempdir().unwrap();
    let out = run(
        QUORUM,
        &["doctor", "--json", "--data", data.path().to_str().unwrap()],
    );
    let report = json(&out);
    let names: BTreeSet<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS.into_iter().collect(), "{report:#}");
    let failed: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(failed.is_empty(), "failed here: {failed:#?}");
    assert_eq!(
        checks(&report, "bubblewrap")[0]["status"],
        "ok",
        "{report:#}"
    );
    assert_eq!(checks(&report, "git")[0]["status"], "ok", "{report:#}");
    for check in report["checks"].as_array().unwrap() {
        let status = check["status"].as_str().unwrap();
        assert!(
            ["ok", "warn", "skipped"].contains(&status),
            "unknown status: {check}"
        );
        assert!(!check["detail"].as_str().unwrap().is_empty(), "{check}");
        if status == "warn" {
            assert!(check["fix"].is_string(), "a warning without a fix: {check}");
        }
    }
    assert_eq!(report["ok"], true);
    assert!(out.status.success(), "exit code {:?}", out.status.code());
}

/// Where a program is on this test's PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

#[test]
fn without_bubblewrap_doctor_fails_and_names_the_fix() {
    // The sandbox looks for bwrap on PATH and then in /usr/bin: the doctor gets a PATH with
    // git alone, and runs in a mount namespace of its own where /usr/bin/bwrap is /dev/null
    // (not a file), so that nothing on the host changes. As real root `unshare --mount`
    // keeps this process root; otherwise a user namespace maps us to root for the mount.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(which("git"), bin.path().join("git")).unwrap();
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let hide = if Path::new("/usr/bin/bwrap").exists() {
        "mount --bind /dev/null /usr/bin/bwrap && "
    } else {
        ""
    };
    let script = format!("{hide}exec env PATH=\"$1\" \"$2\" doctor --data \"$1\"");
    let mut args = vec!["--mount"];
    if !root {
        args.push("--map-root-user");
    }
    let path = bin.path().to_str().unwrap();
    args.extend(["sh", "-c", &script, "sh", path, QUORUM]);
    let started = Instant::now();
    let out = run(which("unshare").to_str().unwrap(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("bubblewrap"))
        .unwrap_or_else(|| panic!("no bubblewrap line: {stdout}\n{stderr}"));
    assert!(line.starts_with("fail "), "{stdout}");
    assert!(line.contains("bwrap not found"), "{stdout}");
    assert!(
        stdout.contains("fix: apt-get install bubblewrap"),
        "{stdout}"
    );
    // git was still found through the PATH it was given.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains(" git ")),
        "{stdout}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn relays_and_blossom_servers_are_reached_or_named_unreachable_in_bounded_time() {
    let data = tempfile::tempdir().unwrap();
    let relay_dir = data.path().join("relay");
    let blossom_dir = data.path().join("blossom");
    let relay = Daemon::spawn(
        QUORUM,
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--data",
            relay_dir.to_str().unwrap(),
        ],
    );
    let relay_url = relay.value_of("relay");
    let blossom = Daemon::spawn(
        QUORUM,
        &[
            "blossom",
            "--listen",
            "127.0.0.1:0",
            "--data",
            blossom_dir.to_str().unwrap(),
        ],
    );
    let blossom_url = blossom.value_of("blossom");
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dead_url = format!("ws://127.0.0.1:{closed}");

    let started = Instant::now();
    let out = run(
        QUORUM,
        &[
            "doctor",
            "--json",
            "--data",
            data.path().to_str().unwrap(),
            "--relay",
            &relay_url,
            "--relay",
            &dead_url,
            "--blossom",
            &blossom_url,
        ],
    );
    // Every endpoint is bounded by a 5 s timeout, and all are tried at once.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let report = json(&out);
    let by_target = |name: &str, url: &str| {
        checks(&report, name)
            .into_iter()
            .find(|c| c["target"] == url)
            .unwrap_or_else(|| panic!("no {name} check for {url}: {report:#}"))
            .clone()
    };

    let live = by_target("relay", &relay_url);
    assert_eq!(live["status"], "ok", "{live}");
    // Same machine, same clock: the relay's Date header agrees with ours.
    let clock = by_target("clock", &relay_url);
    assert_eq!(clock["status"], "ok", "{clock}");

    let dead = by_target("relay", &dead_url);
    assert_eq!(dead["status"], "fail", "{dead}");
    assert!(
        dead["detail"].as_str().unwrap().contains("unreachable"),
        "{dead}"
    );
    assert!(
        dead["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{closed}")),
        "{dead}"
    );
    assert_eq!(by_target("clock", &dead_url)["status"], "skipped");

    assert_eq!(by_target("blossom", &blossom_url)["status"], "ok");

    assert_eq!(report["ok"], false);
    assert_eq!(out.status.code(), Some(1));

    // The text form names the unreachable relay on its failed line.
    let out = run(
        QUORUM,
        &[
            "doctor",
            "--data",
            data.path().to_str().unwrap(),
            "--relay",
            &dead_url,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("fail ") && l.contains(&dead_url)),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
    drop((relay, blossom));
}
