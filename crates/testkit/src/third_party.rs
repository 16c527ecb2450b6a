//! Third-party tools for interop tests: nostr-rs-relay, a relay nobody on this project wrote,
//! ngit, the git tool Nostr git users have, and skopeo, an OCI registry client.
//!
//! `scripts/test` installs them (`cargo install`, apt) when they are missing; a test that needs
//! one and cannot find it fails with that instruction rather than skipping.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nostr-rs-relay on loopback; killed when dropped.
pub struct NostrRsRelay {
    child: Child,
    pub url: String,
}

impl Drop for NostrRsRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// `name` as `cargo install` put it, else as found on `PATH`.
fn installed(name: &str) -> std::path::PathBuf {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|home| home.join("bin").join(name));
    match cargo_bin {
        Some(path) if path.exists() => path,
        _ => name.into(),
    }
}

fn binary() -> std::path::PathBuf {
    installed("nostr-rs-relay")
}

/// The directory holding `ngit` and its git remote helper `git-remote-nostr` (put it first on
/// a git command's `PATH`). Panics with the install command when ngit is not installed.
pub fn ngit_dir() -> std::path::PathBuf {
    let ngit = installed("ngit");
    let found = if ngit.is_absolute() {
        ngit.exists().then_some(ngit)
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("ngit"))
                .find(|p| p.exists())
        })
    };
    let ngit = found.unwrap_or_else(|| {
        panic!("ngit is required for this test: cargo install ngit --version 2.2.0 --locked")
    });
    ngit.parent()
        .expect("ngit lives in a directory")
        .to_path_buf()
}

/// Starts nostr-rs-relay with an SQLite database under `dir` and waits until it accepts
/// connections.
pub fn start_nostr_rs_relay(dir: &Path) -> NostrRsRelay {
    std::fs::create_dir_all(dir).expect("creating the relay dir");
    let port = free_port();
    let config = format!(
        "[info]\nrelay_url = \"ws://127.0.0.1:{port}/\"\nname = \"interop\"\n\n\
         [database]\nengine = \"sqlite\"\ndata_directory = \"{}\"\n\n\
         [network]\naddress = \"127.0.0.1\"\nport = {port}\n\n\
         [limits]\nmessages_per_sec = 10000\nmax_event_bytes = 262144\nmax_ws_message_bytes = 1048576\n",
        dir.display()
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).expect("writing the relay config");
    let child = Command::new(binary())
        .arg("--config")
        .arg(&config_path)
        .arg("--db")
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nostr-rs-relay ({e}); install it with scripts/test or \
                 `apt-get install protobuf-compiler && cargo install nostr-rs-relay`"
            )
        });
    let relay = NostrRsRelay {
        child,
        url: format!("ws://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nostr-rs-relay did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    relay
}

/// Runs `skopeo --insecure-policy ARGS` (bounded to two minutes) and returns what it did;
/// panics with the install command when skopeo is missing.
pub fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("120")
        .arg("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("these tests need skopeo: apt-get install skopeo")
}

/// [`skopeo`] that must succeed: its standard output, or a panic naming what it printed.
pub fn skopeo_ok(args: &[&str]) -> Vec<u8> {
    let out = skopeo(args);
    assert!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
