//! The image cache: unpacked image roots, content-addressed by manifest digest, shared by jobs.
//!
//! ```text
//! <dir>/images/<hex>/rootfs/     the image's `/`, complete (never written after the rename)
//! <dir>/images/<hex>/meta.json   size, layers, config env; its mtime is the last use
//! <dir>/locks/<hex>              flock: shared while a job uses the image, exclusive to evict
//! <dir>/locks/<hex>.fetch        flock: exclusive while one job fetches the image
//! <dir>/tmp/<hex>.<pid>.<n>/     a fetch in progress: blobs and the root being unpacked
//! ```
//!
//! `tmp/` carries `chattr +T` where the file system supports it, so that each fetch's root is
//! placed away from the files other work just deleted (see `spread_subdirectories`).
//!
//! An image is fetched and unpacked under `tmp/`, then renamed into `images/` in one step, so a
//! process killed half-way leaves only a `tmp/` entry that no job looks at and the next fetch
//! of that image removes. Two jobs (threads or processes) asking for the same image serialise
//! on its fetch lock: one fetches, the other finds it done. A job holds a shared use lock from
//! before it looks until it is done with the root ([`ImageLease`]), so a job waiting for
//! another's fetch never waits for that other job to end, and eviction (least recently used
//! first while the cache is over its cap, taking the use lock without waiting) skips images in
//! use or being fetched.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use quorum_proto::image::{Digest, ImageRef};
use serde::{Deserialize, Serialize};

use crate::OciError;
use crate::fetch::{BlobKind, Fetcher, MAX_MANIFEST_BYTES};
use crate::unpack::{Compression, Unpacker, layer_reader, remove_any};

/// Largest layer accepted, compressed.
pub const MAX_LAYER_BYTES: u64 = 8 << 30;
/// Most layers in one image (Docker's own limit is 127).
pub const MAX_LAYERS: usize = 128;

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// What the cache records beside an unpacked root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMeta {
    /// Bytes the root takes (file sizes; hard links counted once per link).
    pub size: u64,
    /// The manifest digest that was resolved (an index's platform entry), if different.
    pub manifest: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// `Env` of the image config (`NAME=value`), which a step starts from.
    pub env: Vec<String>,
}

/// An image in the cache, as [`ImageCache::list`] shows it.
#[derive(Debug, Clone)]
pub struct CachedImage {
    pub digest: Digest,
    pub size: u64,
    pub last_used: SystemTime,
}

/// A job's use of an image: the root stays in place (not evicted) until this is dropped.
#[derive(Debug)]
pub struct ImageLease {
    digest: Digest,
    root: PathBuf,
    meta: ImageMeta,
    fetched: bool,
    _lock: fs::File,
}

impl ImageLease {
    /// The host directory holding the image's `/`; bind it read-only.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The digest asked for.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// What the cache recorded about the image.
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    /// Whether this call fetched the image (false: it was cached already).
    pub fn fetched(&self) -> bool {
        self.fetched
    }

    /// The image config's environment as pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        self.meta
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// Unpacked images on disk, capped in size. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    cap_bytes: u64,
    fetcher: Fetcher,
}

impl ImageCache {
    /// Opens (creating) a cache at `dir` holding at most `cap_bytes` of unused images.
    pub fn open(
        dir: impl Into<PathBuf>,
        cap_bytes: u64,
        fetcher: Fetcher,
    ) -> Result<Self, OciError> {
        let dir = std::path::absolute(dir.into())
            .map_err(|e| OciError::io("resolving", Path::new("image cache"), e))?;
        for sub in ["images", "locks", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| OciError::io("creating", &p, e))?;
        }
        spread_subdirectories(&dir.join("tmp"));
        Ok(ImageCache {
            dir,
            cap_bytes,
            fetcher,
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image `image` names, fetched and unpacked if it is not cached yet.
    pub async fn get(&self, image: &ImageRef) -> Result<ImageLease, OciError> {
        let digest = match &image.digest {
            Some(d) => d.clone(),
            None => {
                let scratch = self.dir.join("tmp").join(format!(
                    "tag.{}.{}",
                    std::process::id(),
                    NEXT_TMP.fetch_add(1, Ordering::Relaxed)
                ));
                let d = self.fetcher.resolve_tag(image, &scratch).await?;
                tracing::warn!(%image, digest = %d, "image named by tag; resolved");
                d
            }
        };
        let lock_path = self.dir.join("locks").join(digest.hex());
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| OciError::io("opening", &lock_path, e))?;
        let lock = blocking(move || flock(&lock, libc::LOCK_SH).map(|_| lock))
            .await
            .map_err(|e| OciError::io("locking", &lock_path, e))?;
        if let Some(meta) = self.cached(&digest)? {
            return Ok(self.lease(digest, meta, false, lock));
        }
        // Not there: become the one fetcher (or wait for the one there is). Its own lock file:
        // upgrading the shared use lock would wait for every other job using the image.
        let fetch_path = self
            .dir
            .join("locks")
            .join(format!("{}.fetch", digest.hex()));
        let fetching = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&fetch_path)
            .map_err(|e| OciError::io("opening", &fetch_path, e))?;
        let fetching = blocking(move || flock(&fetching, libc::LOCK_EX).map(|_| fetching))
            .await
            .map_err(|e| OciError::io("locking", &fetch_path, e))?;
        if let Some(meta) = self.cached(&digest)? {
            drop(fetching);
            return Ok(self.lease(digest, meta, false, lock));
        }
        self.clear_stale(&digest);
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}.{}",
            digest.hex(),
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&tmp).map_err(|e| OciError::io("creating", &tmp, e))?;
        let made = self.fetch_into(image, &digest, &tmp).await;
        let meta = match made {
            Ok(meta) => meta,
            Err(e) => {
                let _ = blocking(move || remove_any(&tmp)).await;
                return Err(e);
            }
        };
        let dest = self.dir.join("images").join(digest.hex());
        fs::rename(&tmp, &dest).map_err(|e| OciError::io("moving into place", &dest, e))?;
        drop(fetching);
        tracing::info!(image = %image, size = meta.size, "image fetched and unpacked");
        let lease = self.lease(digest, meta, true, lock);
        self.evict(Some(lease.digest()));
        Ok(lease)
    }

    fn lease(&self, digest: Digest, meta: ImageMeta, fetched: bool, lock: fs::File) -> ImageLease {
        let dir = self.dir.join("images").join(digest.hex());
        // The meta file's mtime is the image's last use, for eviction.
        if let Ok(f) = fs::File::options().append(true).open(dir.join("meta.json")) {
            let _ = f.set_modified(SystemTime::now());
        }
        ImageLease {
            root: dir.join("rootfs"),
            digest,
            meta,
            fetched,
            _lock: lock,
        }
    }

    fn cached(&self, digest: &Digest) -> Result<Option<ImageMeta>, OciError> {
        let path = self.dir.join("images").join(digest.hex()).join("meta.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OciError::io("reading", &path, e)),
        }
    }

    /// Leftovers of fetches of `digest` that died (we hold its fetch lock, so no live one).
    fn clear_stale(&self, digest: &Digest) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        let prefix = format!("{}.", digest.hex());
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(path = %e.path().display(), "removing an unfinished image fetch");
                let _ = remove_any(&e.path());
            }
        }
    }

    /// Fetches manifest, config and layers into `tmp/blobs`, unpacks into `tmp/rootfs`.
    async fn fetch_into(
        &self,
        image: &ImageRef,
        digest: &Digest,
        tmp: &Path,
    ) -> Result<ImageMeta, OciError> {
        let blobs = tmp.join("blobs");
        let rootfs = tmp.join("rootfs");
        for d in [&blobs, &rootfs] {
            fs::create_dir(d).map_err(|e| OciError::io("creating", d, e))?;
        }
        let manifest_digest = digest.clone();
        let bad = |d: &Digest, reason: String| OciError::BadManifest {
            digest: d.to_string(),
            reason,
        };
        let mut manifest_bytes = self
            .read_small(image, &manifest_digest, BlobKind::Manifest, &blobs)
            .await?;
        let mut resolved = manifest_digest.clone();
        let value: serde_json::Value = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| bad(&resolved, format!("not JSON: {e}")))?;
        if value.get("manifests").is_some() {
            let index: ImageIndex = serde_json::from_value(value)
                .map_err(|e| bad(&resolved, format!("not an image index: {e}")))?;
            let chosen = pick_platform(&index)
                .ok_or_else(|| bad(&resolved, format!("no manifest for linux/{}", oci_arch())))?;
            resolved = Digest::parse(chosen.digest().as_ref()).ok_or_else(|| {
                bad(
                    &manifest_digest,
                    "index entry is not a sha256 digest".into(),
                )
            })?;
            manifest_bytes = self
                .read_small(image, &resolved, BlobKind::Manifest, &blobs)
                .await?;
        }
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| bad(&resolved, format!("not an image manifest: {e}")))?;
        if manifest.layers().len() > MAX_LAYERS {
            return Err(bad(&resolved, format!("more than {MAX_LAYERS} layers")));
        }
        let config_digest = Digest::parse(manifest.config().digest().as_ref())
            .ok_or_else(|| bad(&resolved, "config is not a sha256 digest".into()))?;
        let config_bytes = self
            .read_small(image, &config_digest, BlobKind::Blob, &blobs)
            .await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
            bad(
                &resolved,
                format!("config {config_digest} is not an image config: {e}"),
            )
        })?;
        let env = config
            .config()
            .as_ref()
            .and_then(|c| c.env().clone())
            .unwrap_or_default();
        // One image may take the whole cache, no more: compressed and unpacked.
        let declared: u64 = manifest.layers().iter().map(|l| l.size()).sum();
        if declared > self.cap_bytes {
            return Err(bad(
                &resolved,
                format!(
                    "its layers take {declared} bytes, more than the image cache's {}",
                    self.cap_bytes
                ),
            ));
        }
        let mut unpacker = Unpacker::with_limit(&rootfs, self.cap_bytes);
        let mut layers = Vec::new();
        // Applied so far: if a layer streamed into the root turns out not to be the verified
        // bytes, the root is rebuilt from these layers, fetched again into files (streamed
        // layers are never written to disk; see `Fetcher::fetch_tee`).
        let mut applied: Vec<(PathBuf, String, String, Digest, u64)> = Vec::new();
        for layer in manifest.layers() {
            let d = Digest::parse(layer.digest().as_ref())
                .ok_or_else(|| bad(&resolved, "a layer is not a sha256 digest".into()))?;
            let declared = layer.size();
            if declared > MAX_LAYER_BYTES {
                return Err(bad(
                    &resolved,
                    format!("layer {d} declares {declared} bytes"),
                ));
            }
            let path = blobs.join(d.hex());
            let media = layer.media_type().to_string();
            let name = d.to_string();
            // Unpacked while it downloads (the bytes are hashed on the way; nothing under
            // `tmp/` is used before the whole image verified).
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
            let streaming = {
                let (media, name) = (media.clone(), name.clone());
                tokio::task::spawn_blocking(move || {
                    // The chunks themselves are the buffer: the decoder reads them where they
                    // arrived, with no copy into a buffer of ours first.
                    let mut source = ChannelReader::new(rx);
                    let result = (|| {
                        let compression =
                            Compression::from_media_type(&media).unwrap_or_else(|| {
                                Compression::sniff(
                                    io::BufRead::fill_buf(&mut source).unwrap_or(&[]),
                                )
                            });
                        let reader = decoder(&mut source, compression)
                            .map_err(|e| OciError::io("decompressing", Path::new(&name), e))?;
                        unpacker.apply(&name, reader)
                    })();
                    // Read to the end, so that the download never waits on a reader that
                    // stopped (a tar ends before its padding; a broken layer fails early).
                    while let Ok(rest) = io::BufRead::fill_buf(&mut source) {
                        if rest.is_empty() {
                            break;
                        }
                        let n = rest.len();
                        io::BufRead::consume(&mut source, n);
                    }
                    (unpacker, result)
                })
            };
            let fetched = self
                .fetcher
                .fetch_tee(image, &d, BlobKind::Blob, declared, &path, Some(tx))
                .await;
            let (returned, streamed) = streaming
                .await
                .map_err(|e| OciError::io("unpacking", Path::new(&name), io::Error::other(e)))?;
            unpacker = returned;
            let (_, complete) = fetched?;
            applied.push((path.clone(), media, name, d.clone(), declared));
            match (complete, streamed) {
                (true, Ok(())) => {}
                // The verified bytes themselves do not unpack: the layer is bad.
                (true, Err(e)) => return Err(e),
                // The streamed bytes were not (all) the verified ones: start the root again.
                (false, _) => {
                    for (path, _, _, digest, declared) in &applied {
                        if !path.exists() {
                            self.fetcher
                                .fetch(image, digest, BlobKind::Blob, *declared, path)
                                .await?;
                        }
                    }
                    let root = rootfs.clone();
                    let cap = self.cap_bytes;
                    let replay: Vec<_> = applied
                        .iter()
                        .map(|(p, m, n, _, _)| (p.clone(), m.clone(), n.clone()))
                        .collect();
                    unpacker = spawn(move || -> Result<Unpacker, OciError> {
                        remove_any(&root).map_err(|e| OciError::io("clearing", &root, e))?;
                        fs::create_dir(&root).map_err(|e| OciError::io("creating", &root, e))?;
                        let mut u = Unpacker::with_limit(&root, cap);
                        for (path, media, name) in &replay {
                            apply_file(&mut u, path, media, name)?;
                        }
                        Ok(u)
                    })
                    .await?;
                }
            }
            layers.push(d.to_string());
        }
        for (path, ..) in &applied {
            let _ = fs::remove_file(path);
        }
        let root = rootfs.clone();
        let size = spawn(move || {
            unpacker.finish()?;
            tree_size(&root).map_err(|e| OciError::io("measuring", &root, e))
        })
        .await?;
        let _ = remove_any(&blobs);
        let meta = ImageMeta {
            size,
            manifest: resolved.to_string(),
            layers,
            env,
        };
        let meta_path = tmp.join("meta.json");
        fs::write(
            &meta_path,
            serde_json::to_vec_pretty(&meta).expect("serialisable"),
        )
        .map_err(|e| OciError::io("writing", &meta_path, e))?;
        Ok(meta)
    }

    async fn read_small(
        &self,
        image: &ImageRef,
        digest: &Digest,
        kind: BlobKind,
        blobs: &Path,
    ) -> Result<Vec<u8>, OciError> {
        let path = blobs.join(digest.hex());
        self.fetcher
            .fetch(image, digest, kind, MAX_MANIFEST_BYTES, &path)
            .await?;
        fs::read(&path).map_err(|e| OciError::io("reading", &path, e))
    }

    /// The cached images, least recently used first.
    pub fn list(&self) -> Vec<CachedImage> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir.join("images")) else {
            return out;
        };
        for e in entries.flatten() {
            let Some(digest) = Digest::from_hex(&e.file_name().to_string_lossy()) else {
                continue;
            };
            let meta_path = e.path().join("meta.json");
            let (Ok(bytes), Ok(stat)) = (fs::read(&meta_path), fs::metadata(&meta_path)) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<ImageMeta>(&bytes) else {
                continue;
            };
            out.push(CachedImage {
                digest,
                size: meta.size,
                last_used: stat.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by_key(|c| c.last_used);
        out
    }

    /// Removes least recently used images not in use until the cache fits its cap; `keep` is
    /// never removed (the image just fetched for a job).
    pub fn evict(&self, keep: Option<&Digest>) {
        let images = self.list();
        let mut total: u64 = images.iter().map(|i| i.size).sum();
        for image in images {
            if total <= self.cap_bytes {
                break;
            }
            if Some(&image.digest) == keep {
                continue;
            }
            let lock_path = self.dir.join("locks").join(image.digest.hex());
            let Ok(lock) = fs::OpenOptions::new().write(true).open(&lock_path) else {
                continue;
            };
            if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_err() {
                continue; // in use by a job
            }
            let from = self.dir.join("images").join(image.digest.hex());
            let to = self.dir.join("tmp").join(format!(
                "evicted.{}.{}.{}",
                image.digest.hex(),
                std::process::id(),
                NEXT_TMP.fetch_add(1, Ordering::Relaxed)
            ));
            // Renamed first so that no job ever sees a half-deleted root.
            if fs::rename(&from, &to).is_ok() {
                tracing::info!(image = %image.digest, size = image.size, "evicted from the image cache");
                let _ = remove_any(&to);
                total = total.saturating_sub(image.size);
            }
        }
    }
}

/// Applies a layer file that is on disk and verified.
fn apply_file(
    unpacker: &mut Unpacker,
    path: &Path,
    media: &str,
    name: &str,
) -> Result<(), OciError> {
    let compression = Compression::from_media_type(media).unwrap_or_else(|| {
        let mut head = [0u8; 4];
        let _ = fs::File::open(path).and_then(|mut f| io::Read::read(&mut f, &mut head));
        Compression::sniff(&head)
    });
    let reader = layer_reader(path, compression)?;
    unpacker.apply(name, reader)
}

/// The decompressed stream of a layer read from `source`.
fn decoder<'a, R: io::BufRead + 'a>(
    source: R,
    compression: Compression,
) -> io::Result<Box<dyn io::Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(source)?),
    })
}

/// A blocking reader over the chunks a download sends; end of stream when the sender is gone.
/// As a [`io::BufRead`] it lends each chunk as it came.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        bytes::Buf::advance(&mut self.current, n);
    }
}

/// The index entry for this machine's platform (linux and our architecture).
fn pick_platform(index: &ImageIndex) -> Option<&oci_spec::image::Descriptor> {
    let arch = oci_arch();
    index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    })
}

/// Our architecture as OCI spells it.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn tree_size(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                total += 4096;
                stack.push(e.path());
            } else if m.nlink() <= 1 || seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// `FS_TOPDIR_FL` of `linux/fs.h` (`chattr +T`), which the libc crate does not name.
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Marks `dir` as the top of unrelated directory trees (`chattr +T`), so that ext4 places each
/// new subdirectory (an image being fetched) in a block group with room, as it does for
/// directories in `/`, rather than beside its parent. Why: on ext4 without a journal, creating
/// a file first skips, one by one, every inode of its group freed in the last 30 seconds; in
/// a group where builds churn through files, that made the files of a first fetch cost about
/// 1 ms each (~110 ms of a 100 MB image of 100 files). Best effort: other file systems ignore
/// or refuse the flag, and nothing depends on it.
fn spread_subdirectories(dir: &Path) {
    let Ok(file) = fs::File::open(dir) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: both ioctls take a pointer to an int, valid for the call.
    let set = unsafe {
        libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && (flags & FS_TOPDIR_FL != 0 || {
                flags |= FS_TOPDIR_FL;
                libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) == 0
            })
    };
    if !set {
        tracing::debug!(dir = %dir.display(), error = %io::Error::last_os_error(),
            "could not mark the fetch directory as a top directory; fetches still work");
    }
}

fn flock(file: &fs::File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor owned by `file` for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

async fn spawn<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OciError> + Send + 'static,
) -> Result<T, OciError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OciError::io("unpacking", Path::new("image"), io::Error::other(e)))?
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_ext4_the_fetch_directory_spreads_its_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let _cache =
            ImageCache::open(dir.path(), 1 << 20, Fetcher::new(Vec::new(), Vec::new())).unwrap();
        let tmp = fs::File::open(dir.path().join("tmp")).unwrap();
        // SAFETY: statfs fills the struct it is given; the ioctl writes one int.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstatfs(tmp.as_raw_fd(), &mut stat) }, 0);
        const EXT_SUPER_MAGIC: libc::c_long = 0xEF53; // ext2, ext3 and ext4
        if stat.f_type as libc::c_long != EXT_SUPER_MAGIC {
            eprintln!(
                "not ext4 here (f_type {:#x}): nothing to check",
                stat.f_type
            );
            return;
        }
        let mut flags: libc::c_int = 0;
        assert_eq!(
            unsafe { libc::ioctl(tmp.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) },
            0
        );
        assert_ne!(flags & FS_TOPDIR_FL, 0, "flags {flags:#x}");
    }
}
