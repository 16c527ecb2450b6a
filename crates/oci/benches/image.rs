//! Build image costs, each as a ratio to a baseline measured in the same run:
//!
//! - the first fetch of a ~100 MB image from a Blossom server on loopback (download, re-hash,
//!   gunzip, unpack, rename into the cache) against sha256 of the same bytes read from disk
//!   (goal: `hash_to_fetch_ratio` ≥ 0.5, a fetch costing at most twice a hash), with the CPU
//!   time the whole process (client and server) spent on it (`first_fetch_cpu_ms_median`);
//! - a step started in a cached image (`StepSpec::rootfs`) against the same step on the host's
//!   toolchain, both through `Sandbox::run` of bubblewrap, interleaved (goal: under 20 ms
//!   extra). The image is the cached mmdebstrap Debian root of the runner tests when present
//!   (`~/.cache/quorum-ci-test`), else the fetched one.
//!
//! `cargo bench -p quorum-oci --bench image` prints the figures and writes
//! `target/bench/image.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quorum_blossom::client::BlossomClient;
use quorum_blossom::{BlossomConfig, BlossomServer};
use quorum_oci::build::{build, push};
use quorum_oci::{Fetcher, ImageCache};
use quorum_proto::nostr::Keys;
use quorum_sandbox::{Bubblewrap, LogLine, Sandbox, StepSpec};
use sha2::{Digest, Sha256};

const IMAGE_MB: usize = 100;
const FETCHES: usize = 3;
const STARTS: usize = 30;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

/// `IMAGE_MB` files of 1 MiB of incompressible bytes, and an os-release.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=bench\n").unwrap();
    // A shell, so that the start-up figure can use this image when no Debian root is cached
    // (a fresh machine): busybox-static is one file.
    if let Some(busybox) = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(busybox, root.join("bin/sh")).unwrap();
    }
    let mut state = 0x2545f4914f6cdd1du64;
    for i in 0..IMAGE_MB {
        let bytes: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(root.join(format!("data/{i:03}")), bytes).unwrap();
    }
    root
}

/// CPU time (user + system) of this whole process so far: the fetching client, the Blossom
/// server it fetches from and every thread either runs.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn sha256_files(paths: &[PathBuf]) -> Duration {
    let t = Instant::now();
    for p in paths {
        let mut f = std::fs::File::open(p).unwrap();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        std::hint::black_box(hasher.finalize());
    }
    t.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let server = BlossomServer::open(
            BlossomConfig {
                public_url: Some(url.clone()),
                fsync: false,
                ..BlossomConfig::default()
            },
            &dir.path().join("blossom"),
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        (url, stop)
    });
    let root = rootfs(dir.path());
    let image = build(&root, &dir.path().join("blobs")).unwrap();
    rt.block_on(push(
        &image,
        &BlossomClient::new(Keys::generate()),
        std::slice::from_ref(&url),
    ))
    .unwrap();
    let reference = image.reference("127.0.0.1:9/bench/image").unwrap();
    let blob_paths: Vec<PathBuf> = image.blobs.iter().map(|b| b.path.clone()).collect();
    let bytes = image.size();

    // Interleaved: a hash, then a first fetch into a fresh cache, FETCHES times.
    let (mut hashes, mut fetches, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_cache = None;
    for i in 0..FETCHES {
        hashes.push(sha256_files(&blob_paths));
        let cache = ImageCache::open(
            dir.path().join(format!("cache{i}")),
            1 << 34,
            Fetcher::new(vec![url.clone()], Vec::new()),
        )
        .unwrap();
        let (t, cpu) = (Instant::now(), process_cpu());
        let lease = rt.block_on(cache.get(&reference)).unwrap();
        fetches.push(t.elapsed());
        cpus.push(process_cpu() - cpu);
        assert!(lease.fetched());
        drop(lease);
        if let Some(old) = last_cache.replace(cache) {
            let _ = std::fs::remove_dir_all(old.dir());
        }
    }
    let (hash_ms, fetch_ms, cpu_ms) = (median(hashes), median(fetches), median(cpus));
    // Now, not with the rest: the start-up figure below needs bubblewrap and a build user.
    eprintln!(
        "sha256 {hash_ms:.1} ms, first fetch {fetch_ms:.1} ms ({cpu_ms:.1} ms CPU), \
         hash_to_fetch_ratio {:.3}",
        hash_ms / fetch_ms
    );

    // Start-up: `true` in the cached image against `true` on the host toolchain.
    let bwrap = Bubblewrap::detect().expect("bubblewrap is required (apt-get install bubblewrap)");
    let debian = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quorum-ci-test"));
    let debian_tar = debian.and_then(|d| {
        std::fs::read_dir(d)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("debian-bookworm-gcc-"))
            })
    });
    let cache = last_cache.expect("a cache");
    let (start_image, start_lease) = match &debian_tar {
        Some(tar) => {
            let debian_image = build(tar, &dir.path().join("debian-blobs")).unwrap();
            rt.block_on(push(
                &debian_image,
                &BlossomClient::new(Keys::generate()),
                std::slice::from_ref(&url),
            ))
            .unwrap();
            let r = debian_image.reference("127.0.0.1:9/bench/debian").unwrap();
            (
                "mmdebstrap debian bookworm + gcc",
                rt.block_on(cache.get(&r)).unwrap(),
            )
        }
        None => (
            "the fetched bench image",
            rt.block_on(cache.get(&reference)).unwrap(),
        ),
    };
    let work = tempfile::tempdir().unwrap();
    let (mut host, mut in_image) = (Vec::new(), Vec::new());
    for _ in 0..STARTS {
        for with_image in [false, true] {
            let mut spec = StepSpec::new("true", work.path());
            if with_image {
                spec.rootfs = Some(start_lease.root().to_path_buf());
            }
            let mut log: Vec<LogLine> = Vec::new();
            let t = Instant::now();
            let out = rt.block_on(bwrap.run(&spec, &mut log)).unwrap();
            assert!(out.success(), "{out:?} {log:?}");
            if with_image { &mut in_image } else { &mut host }.push(t.elapsed());
        }
    }
    let (host_ms, image_ms) = (median(host), median(in_image));
    let _ = stop.send(());

    let mb = bytes as f64 / 1e6;
    let json = format!(
        "{{\n  \"image_bytes\": {bytes},\n  \"fetches\": {FETCHES},\n  \
         \"sha256_ms_median\": {hash_ms:.1},\n  \"first_fetch_ms_median\": {fetch_ms:.1},\n  \
         \"first_fetch_cpu_ms_median\": {cpu_ms:.1},\n  \
         \"sha256_mb_per_s\": {:.1},\n  \"fetch_mb_per_s\": {:.1},\n  \
         \"hash_to_fetch_ratio\": {:.3},\n  \
         \"start_image\": \"{start_image}\",\n  \"starts\": {STARTS},\n  \
         \"host_toolchain_start_ms_median\": {host_ms:.2},\n  \
         \"cached_image_start_ms_median\": {image_ms:.2},\n  \
         \"image_start_extra_ms\": {:.2},\n  \"ratio_image_to_host_start\": {:.3}\n}}\n",
        mb / (hash_ms / 1000.0),
        mb / (fetch_ms / 1000.0),
        hash_ms / fetch_ms,
        image_ms - host_ms,
        image_ms / host_ms,
    );
    print!("{json}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let out = target.join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("image.json"), json).unwrap();
    eprintln!("wrote {}", out.join("image.json").display());
}
