//! Blossom throughput on loopback, measured against the physical floor.
//!
//! Uploads and downloads one blob (1 GiB by default; `QUORUM_BENCH_BYTES` to change) with our
//! client against our server, and reports each time as a ratio to the time this process needs
//! just to SHA-256 the same file (both ends must hash every byte, so hashing speed is the
//! ceiling). Goals: upload ≥ 0.7 × hashing speed, download ≥ 1 GB/s.
//!
//! Variants separate what costs what: fsync on/off on the server (durability is the default),
//! the client's pre-hash (needed because a BUD-11 upload token names the hash) and the
//! client's fsync of downloads.
//!
//! Each run is repeated (`QUORUM_BENCH_REPEAT`, default 3) and the best time is reported
//! beside the median, with the load average, because build machines are often shared.
//!
//! Run: `cargo bench -p quorum-blossom --bench throughput`. Writes `target/bench/blossom.json`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quorum_blossom::sink::sha256_file;
use quorum_blossom::{BlossomClient, BlossomConfig, BlossomServer};
use quorum_proto::nostr::Keys;
use serde_json::json;

const GIB: u64 = 1 << 30;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Pseudo-random bytes (xorshift64), written 1 MiB at a time: fast, incompressible enough,
/// and not all zeros (so no filesystem can cheat with sparse files).
fn generate(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    file.into_inner().unwrap().sync_all().unwrap();
}

struct Running {
    url: url::Url,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(base: &Path, fsync: bool, max: u64) -> Running {
    let dir = tempfile::tempdir_in(base).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let config = BlossomConfig {
        public_url: Some(url.clone()),
        max_blob_bytes: max,
        fsync,
        ..BlossomConfig::default()
    };
    let server = BlossomServer::open(config, dir.path()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        url,
        stop,
        task,
        _dir: dir,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

const UPLOAD: &str = "upload (server fsync)";
const DOWNLOAD: &str = "download (client no fsync)";

struct Row {
    name: &'static str,
    samples: Vec<f64>,
}

fn best(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run() {
    let size: u64 = std::env::var("QUORUM_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GIB);
    let repeat: usize = std::env::var("QUORUM_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let load_before = loadavg();
    let target = target_dir();
    let work = target.join("bench-tmp");
    std::fs::create_dir_all(&work).unwrap();
    let tmp = tempfile::tempdir_in(&work).unwrap();
    let input = tmp.path().join("blob.bin");

    let t = Instant::now();
    generate(&input, size);
    eprintln!("generated {size} bytes in {:.2?}", t.elapsed());

    // The floor: hash the file (twice; the first run also warms the page cache, like the
    // upload will find it).
    let (sha, _) = sha256_file(&input).await.unwrap();
    let t = Instant::now();
    let (sha2, n) = sha256_file(&input).await.unwrap();
    let hash_time = t.elapsed();
    assert_eq!((sha, n), (sha2, size));

    let keys = Keys::generate();
    let client = BlossomClient::new(keys.clone()).with_fsync(false);
    let syncing = BlossomClient::new(keys.clone()).with_fsync(true);
    let out = tmp.path().join("out.bin");
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |name: &'static str, d: Duration| {
        eprintln!("{name}: {d:.2?}");
        match rows.iter_mut().find(|r| r.name == name) {
            Some(r) => r.samples.push(d.as_secs_f64()),
            None => rows.push(Row {
                name,
                samples: vec![d.as_secs_f64()],
            }),
        }
    };

    let mut hash_samples = vec![hash_time.as_secs_f64()];
    for _ in 0..repeat {
        // Upload, hash known (a build DVM has hashed its artifacts already), durable server.
        let durable = start(tmp.path(), true, size + 1).await;
        let t = Instant::now();
        let up = client
            .upload_file_with_hash(&durable.url, &input, sha, size)
            .await
            .unwrap();
        record(UPLOAD, t.elapsed());
        assert!(up.created);

        // Download from it: the client re-hashes into a temp file and renames.
        let t = Instant::now();
        client.download(&durable.url, sha, &out).await.unwrap();
        record(DOWNLOAD, t.elapsed());
        std::fs::remove_file(&out).unwrap();
        let t = Instant::now();
        syncing.download(&durable.url, sha, &out).await.unwrap();
        record("download (client fsync)", t.elapsed());
        std::fs::remove_file(&out).unwrap();
        durable.stop().await;

        // Upload without fsync: what the network + hashing path costs alone.
        let fast = start(tmp.path(), false, size + 1).await;
        let t = Instant::now();
        client
            .upload_file_with_hash(&fast.url, &input, sha, size)
            .await
            .unwrap();
        record("upload (no fsync)", t.elapsed());
        fast.stop().await;

        // Upload including the client's own pre-hash of the file (upload_file).
        let durable2 = start(tmp.path(), true, size + 1).await;
        let t = Instant::now();
        client.upload_file(&durable2.url, &input).await.unwrap();
        record("upload incl. client pre-hash (server fsync)", t.elapsed());
        durable2.stop().await;

        let t = Instant::now();
        sha256_file(&input).await.unwrap();
        hash_samples.push(t.elapsed().as_secs_f64());
    }

    // Report the best of the repetitions (the machine may be shared; the minimum is the
    // least disturbed measurement) and the median.
    let gb = size as f64 / 1e9;
    let hash_s = best(&hash_samples);
    println!();
    println!(
        "blob: {size} bytes, best of {repeat}; sha256 floor: {hash_s:.3} s = {:.2} GB/s; load average before/after: {load_before} / {}",
        gb / hash_s,
        loadavg()
    );
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>13}",
        "run", "best s", "median s", "GB/s", "× hash speed"
    );
    let mut runs = Vec::new();
    for r in &rows {
        let b = best(&r.samples);
        let ratio = hash_s / b;
        println!(
            "{:<46} {:>9.3} {:>9.3} {:>9.2} {:>13.2}",
            r.name,
            b,
            median(&r.samples),
            gb / b,
            ratio
        );
        runs.push(json!({
            "name": r.name,
            "seconds_best": b,
            "seconds_median": median(&r.samples),
            "samples": r.samples,
            "gb_per_s": gb / b,
            "ratio_to_hash": ratio,
        }));
    }
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| best(&r.samples))
    };
    let upload_ratio = find(UPLOAD).map(|s| hash_s / s).unwrap_or(0.0);
    let upload_nofsync_ratio = find("upload (no fsync)").map(|s| hash_s / s).unwrap_or(0.0);
    let download_gbps = find(DOWNLOAD).map(|s| gb / s).unwrap_or(0.0);
    println!(
        "goals: upload ≥ 0.70 × hash speed: {upload_ratio:.2} with fsync, {upload_nofsync_ratio:.2} without ({}); download ≥ 1 GB/s: {download_gbps:.2} ({})",
        if upload_ratio >= 0.7 {
            "met"
        } else {
            "NOT met"
        },
        if download_gbps >= 1.0 {
            "met"
        } else {
            "NOT met"
        },
    );
    let report = json!({
        "bytes": size,
        "repeat": repeat,
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "hash_seconds": hash_s,
        "hash_samples": hash_samples,
        "hash_gb_per_s": gb / hash_s,
        "runs": runs,
        "goals": {
            "upload_ratio_min": 0.7,
            "upload_ratio": upload_ratio,
            "upload_ratio_without_fsync": upload_nofsync_ratio,
            "upload_met": upload_ratio >= 0.7,
            "download_gb_per_s_min": 1.0,
            "download_gb_per_s": download_gbps,
            "download_met": download_gbps >= 1.0,
        },
    });
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).unwrap();
    let path = out_dir.join("blossom.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", path.display());
}
