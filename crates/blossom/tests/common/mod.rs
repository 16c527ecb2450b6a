//! Shared helpers for the integration tests: a real server on 127.0.0.1:0 that stops when the
//! handle drops, token builders, and deterministic pseudo-random blobs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_blossom::{BlossomConfig, BlossomServer};
use quorum_proto::blossom::{AuthBuilder, Sha256Hex, Verb, encode_header};
use quorum_proto::nostr::{Keys, Timestamp};
use sha2::Digest;
use url::Url;

/// Every test body runs under this limit, so a hang fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    pub url: Url,
    pub server: BlossomServer,
    pub dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with `config` (its `public_url` is set from the bound port) in a fresh dir.
    pub async fn start(config: BlossomConfig) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(config, &dir).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server over an existing data dir (for reopen tests); the caller owns the dir.
    pub async fn start_in(mut config: BlossomConfig, dir: &Path) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        if config.public_url.is_none() {
            config.public_url = Some(url.clone());
        }
        let server = BlossomServer::open(config, dir).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        Self {
            url,
            server,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
            _tmp: None,
        }
    }

    /// Stops gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("server did not stop")
                .unwrap();
        }
    }

    pub fn host(&self) -> String {
        self.url.host_str().unwrap().to_owned()
    }

    pub fn join(&self, path: &str) -> Url {
        self.url.join(path).unwrap()
    }

    /// Files under `tmp/` of the data dir.
    pub fn temp_files(&self) -> usize {
        self.server.store().temp_files()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The test config: auth on, private mirror targets allowed, no fsync (faster tests; the
/// fsync path is exercised by the reopen test and the benchmark).
pub fn config() -> BlossomConfig {
    BlossomConfig {
        allow_private_mirror_targets: true,
        fsync: false,
        ..BlossomConfig::default()
    }
}

pub fn sha(data: &[u8]) -> Sha256Hex {
    Sha256Hex::from_bytes(sha2::Sha256::digest(data).into())
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A signed header for `verb` with the given hashes and server host, valid for 60 s.
pub fn auth(keys: &Keys, verb: Verb, hashes: &[Sha256Hex], server: Option<&str>) -> String {
    let mut b = AuthBuilder::new(verb, Timestamp::now() + 60);
    for h in hashes {
        b = b.hash(*h);
    }
    if let Some(s) = server {
        b = b.server(s);
    }
    encode_header(&b.into_event_builder().sign_with_keys(keys).unwrap())
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}
