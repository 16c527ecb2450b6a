//! Running the Node.js interop scripts under `interop/` (nostr-tools, blossom-client-sdk).
//!
//! The npm dependencies are installed on first use with `npm ci`, so that `cargo test` works on
//! a fresh clone; a missing `node`/`npm` is a test failure with a message that says what to
//! install, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The repository's `interop/` directory.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// Makes sure `interop/node_modules` is installed and returns the `interop/` directory.
///
/// Installation runs at most once per process; concurrent test processes serialise on a lock
/// directory, so two of them never run `npm ci` into the same tree at once.
pub fn ensure_installed() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = interop_dir()
                .canonicalize()
                .expect("interop/ directory is missing from the repository");
            let lock = dir.join(".install.lock");
            let _guard = DirLock::acquire(&lock, Duration::from_secs(300));
            if !dir.join("node_modules/.package-lock.json").exists() {
                let status = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .status()
                    .expect("`npm` not found: install Node.js 20+ and npm (Debian: apt-get install nodejs npm)");
                assert!(status.success(), "`npm ci` in {} failed", dir.display());
            }
            dir
        })
        .clone()
}

/// Runs `node interop/<script> <args>` with a time limit and returns its output.
///
/// Panics with the script's stderr if it cannot be started; the caller asserts on the exit
/// status and output, so a failing script fails the test with the script's own message.
pub fn run_script(script: &str, args: &[&str], timeout: Duration) -> Output {
    let dir = ensure_installed();
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`node` not found: install Node.js 20+ (Debian: apt-get install nodejs)");
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait().expect("waiting for node") {
            Some(_) => return child.wait_with_output().expect("reading node output"),
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("reading node output");
                panic!(
                    "node {script} did not finish within {timeout:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs a script and asserts that it exited successfully; returns its stdout.
pub fn run_script_ok(script: &str, args: &[&str], timeout: Duration) -> String {
    let out = run_script(script, args, timeout);
    assert!(
        out.status.success(),
        "node {script} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("node printed non-UTF-8")
}

/// A cross-process lock: `mkdir` is atomic, so the process that creates the directory holds it.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path, patience: Duration) -> Self {
        let deadline = std::time::Instant::now() + patience;
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return DirLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock older than the patience window belongs to a process that died.
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > patience);
                    if stale {
                        let _ = std::fs::remove_dir(path);
                    } else if std::time::Instant::now() >= deadline {
                        panic!("timed out waiting for {}", path.display());
                    } else {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                Err(e) => panic!("cannot create lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
