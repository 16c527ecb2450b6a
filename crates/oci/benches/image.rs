//! Build image costs, each as a ratio to a baseline measured in the same run:
//!
//! - the first fetch of a ~100 MB image from a Blossom server on loopback (download, re-hash,
//!   decompress, unpack, rename into the cache) against sha256 of the same bytes read from disk
//!   (goal: `hash_to_fetch_ratio` ≥ 0.5, a fetch costing at most twice a hash), with the CPU
//!   time the whole process (client and server) spent on it (`first_fetch_cpu_ms_median`);
//!   the headline is the layer `quorum image push` makes (zstd), `by_layer` has gzip too.
//!   The bench image is incompressible, so its layers cost about the same to decompress;
//! - the same for the cached mmdebstrap Debian root of the runner tests when present
//!   (`~/.cache/quorum-ci-test`, `debian_image_by_layer`): a real toolchain, about 3:1
//!   compressible, as mmdebstrap made it (gzip) and as zstd;
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
use quorum_oci::build::{BuiltImage, ZSTD_LEVEL, build, build_with, push};
use quorum_oci::unpack::Compression;
use quorum_oci::{Fetcher, ImageCache, ImageRef};
use quorum_proto::nostr::Keys;
use quorum_sandbox::{Bubblewrap, LogLine, Sandbox, StepSpec};
use sha2::{Digest, Sha256};

const IMAGE_MB: usize = 100;
const FETCHES: usize = 3;
/// Rounds of the Debian image's fetches (it unpacks to about four times the bench image).
const DEBIAN_FETCHES: usize = 3;
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
    // The same tree as each kind of layer; the headline figure is the default's.
    let images: Vec<(String, BuiltImage)> = [Compression::Zstd, Compression::Gzip]
        .into_iter()
        .map(|compression| {
            let out = dir.path().join(format!("blobs-{compression:?}"));
            let image = build_with(&root, &out, compression).unwrap();
            (format!("{compression:?}").to_lowercase(), image)
        })
        .collect();
    let figures = first_fetches(&rt, dir.path(), &url, &images, FETCHES);
    let headline = &figures[0];
    let reference = images[0].1.reference("127.0.0.1:9/bench/image").unwrap();

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
    // A real toolchain image compresses (about 3:1), so its layer's format decides what a
    // first fetch costs: the Debian image as mmdebstrap made it (gzip) and recompressed with
    // zstd as `quorum image push` would.
    let debian_figures = debian_tar.as_ref().map(|tar| {
        let zst = dir.path().join("debian.tar.zst");
        recompress_zstd(tar, &zst);
        let images: Vec<(String, BuiltImage)> = [("zstd", &zst), ("gzip", tar)]
            .into_iter()
            .map(|(name, input)| {
                let out = dir.path().join(format!("debian-blobs-{name}"));
                (name.to_owned(), build(input, &out).unwrap())
            })
            .collect();
        first_fetches(&rt, dir.path(), &url, &images, DEBIAN_FETCHES)
    });

    // Start-up: `true` in the cached image against `true` on the host toolchain.
    let bwrap = Bubblewrap::detect().expect("bubblewrap is required (apt-get install bubblewrap)");
    let cache = ImageCache::open(
        dir.path().join("start-cache"),
        1 << 34,
        Fetcher::new(vec![url.clone()], Vec::new()),
    )
    .unwrap();
    let (start_image, start_reference) = match &debian_figures {
        Some(debian) => (
            "mmdebstrap debian bookworm + gcc",
            debian[0].reference.clone(),
        ),
        None => ("the fetched bench image", reference),
    };
    let start_lease = rt.block_on(cache.get(&start_reference)).unwrap();
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

    let mb = headline.bytes as f64 / 1e6;
    let json = serde_json::json!({
        "layer": headline.layer,
        "image_bytes": headline.bytes,
        "fetches": FETCHES,
        "sha256_ms_median": round(headline.hash_ms, 1),
        "first_fetch_ms_median": round(headline.fetch_ms, 1),
        "first_fetch_cpu_ms_median": round(headline.cpu_ms, 1),
        "sha256_mb_per_s": round(mb / (headline.hash_ms / 1000.0), 1),
        "fetch_mb_per_s": round(mb / (headline.fetch_ms / 1000.0), 1),
        "hash_to_fetch_ratio": round(headline.ratio(), 3),
        "by_layer": figures.iter().map(Figures::json).collect::<Vec<_>>(),
        "debian_image_by_layer": debian_figures
            .as_ref()
            .map(|d| d.iter().map(Figures::json).collect::<Vec<_>>()),
        "start_image": start_image,
        "starts": STARTS,
        "host_toolchain_start_ms_median": round(host_ms, 2),
        "cached_image_start_ms_median": round(image_ms, 2),
        "image_start_extra_ms": round(image_ms - host_ms, 2),
        "ratio_image_to_host_start": round(image_ms / host_ms, 3),
    });
    let json = serde_json::to_string_pretty(&json).unwrap() + "\n";
    print!("{json}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let out = target.join("bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("image.json"), json).unwrap();
    eprintln!("wrote {}", out.join("image.json").display());
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// First-fetch figures of one image (medians).
struct Figures {
    /// What its layer is: `zstd` or `gzip`.
    layer: String,
    bytes: u64,
    reference: ImageRef,
    hash_ms: f64,
    fetch_ms: f64,
    cpu_ms: f64,
}

impl Figures {
    fn ratio(&self) -> f64 {
        self.hash_ms / self.fetch_ms
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "layer": self.layer,
            "image_bytes": self.bytes,
            "sha256_ms_median": round(self.hash_ms, 1),
            "first_fetch_ms_median": round(self.fetch_ms, 1),
            "first_fetch_cpu_ms_median": round(self.cpu_ms, 1),
            "hash_to_fetch_ratio": round(self.ratio(), 3),
        })
    }
}

/// Pushes `images` to the Blossom server at `url`, then measures, interleaved, `rounds`
/// times each: sha256 of an image's blobs from disk, and a first fetch of it into a fresh
/// cache (wall and whole-process CPU time).
fn first_fetches(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    url: &url::Url,
    images: &[(String, BuiltImage)],
    rounds: usize,
) -> Vec<Figures> {
    for (_, image) in images {
        rt.block_on(push(
            image,
            &BlossomClient::new(Keys::generate()),
            std::slice::from_ref(url),
        ))
        .unwrap();
    }
    let mut samples: Vec<[Vec<Duration>; 3]> = vec![Default::default(); images.len()];
    for round in 0..rounds {
        for (n, (name, image)) in images.iter().enumerate() {
            let [hashes, fetches, cpus] = &mut samples[n];
            let blob_paths: Vec<PathBuf> = image.blobs.iter().map(|b| b.path.clone()).collect();
            hashes.push(sha256_files(&blob_paths));
            let cache_dir = dir.join(format!("cache-{name}-{round}"));
            let cache = ImageCache::open(
                &cache_dir,
                1 << 34,
                Fetcher::new(vec![url.clone()], Vec::new()),
            )
            .unwrap();
            let reference = image.reference("127.0.0.1:9/bench/image").unwrap();
            let (t, cpu) = (Instant::now(), process_cpu());
            let lease = rt.block_on(cache.get(&reference)).unwrap();
            fetches.push(t.elapsed());
            cpus.push(process_cpu() - cpu);
            assert!(lease.fetched());
            drop(lease);
            std::fs::remove_dir_all(&cache_dir).unwrap();
        }
    }
    images
        .iter()
        .zip(samples)
        .map(|((name, image), [hashes, fetches, cpus])| {
            let figures = Figures {
                layer: name.clone(),
                bytes: image.size(),
                reference: image.reference("127.0.0.1:9/bench/image").unwrap(),
                hash_ms: median(hashes),
                fetch_ms: median(fetches),
                cpu_ms: median(cpus),
            };
            eprintln!(
                "{} bytes, {} layer: sha256 {:.1} ms, first fetch {:.1} ms ({:.1} ms CPU), \
                 hash_to_fetch_ratio {:.3}",
                figures.bytes,
                figures.layer,
                figures.hash_ms,
                figures.fetch_ms,
                figures.cpu_ms,
                figures.ratio()
            );
            figures
        })
        .collect()
}

/// The gzip root filesystem tarball `gz` recompressed as `zst` (zstd at the level of
/// `quorum image push`).
fn recompress_zstd(gz: &Path, zst: &Path) {
    let mut input = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
        std::fs::File::open(gz).unwrap(),
    ));
    let mut output =
        zstd::stream::write::Encoder::new(std::fs::File::create(zst).unwrap(), ZSTD_LEVEL)
            .unwrap()
            .auto_finish();
    std::io::copy(&mut input, &mut output).unwrap();
}
