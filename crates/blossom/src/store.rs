//! The content-addressed blob store on disk.
//!
//! Layout under the data directory:
//!
//! ```text
//! blobs/<first 2 hex>/<sha256>        the bytes, exactly as received
//! blobs/<first 2 hex>/<sha256>.json   metadata sidecar (size, type, uploaded, owners)
//! tmp/                                uploads in progress (same filesystem: rename is atomic)
//! ```
//!
//! Invariants, kept across crashes:
//! - a blob file exists only at its own hash: bytes are hashed while they stream into `tmp/`,
//!   fsynced, and only then renamed into place (atomic publish), after which the shard
//!   directory is fsynced;
//! - a blob file always has a sidecar: the sidecar is written (atomically, via `tmp/`) before
//!   the blob is renamed in, and removed after the blob on delete. A sidecar without a blob is
//!   dropped at open; a blob without a sidecar (only possible if someone else touched the
//!   directory) is adopted with no owners;
//! - anything left in `tmp/` is garbage from an interrupted upload and is removed at open.
//!
//! Metadata changes (publish, owner merge, delete) are serialised by one async lock; streaming
//! the bytes is not, so concurrent uploads (also of the same blob) only meet at the rename.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use quorum_proto::blossom::{DEFAULT_MIME, Sha256Hex};
use quorum_proto::nostr::PublicKey;
use serde::{Deserialize, Serialize};

use crate::error::BlossomError;
use crate::sink::{HashingWriter, SinkError, TempFile};

/// What the store knows about a blob besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Size in bytes.
    pub size: u64,
    /// MIME type given by the first uploader (or `application/octet-stream`).
    #[serde(rename = "type")]
    pub mime_type: String,
    /// Unix seconds of the first upload.
    pub uploaded: u64,
    /// Who uploaded it (hex pubkey → Unix seconds of their upload). A blob is deleted when
    /// its last owner deletes it; a blob uploaded anonymously has no owner.
    #[serde(default)]
    pub owners: BTreeMap<String, u64>,
    /// Someone uploaded it without a token (anonymous uploads enabled). Such a blob is never
    /// deleted by its named owners: one of them could be someone who merely claimed the hash
    /// (a mirror of a blob already here) and would otherwise delete the anonymous upload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anonymous: bool,
}

impl BlobMeta {
    /// Whether `pubkey` is among the owners.
    pub fn is_owner(&self, pubkey: &PublicKey) -> bool {
        self.owners.contains_key(&pubkey.to_hex())
    }
}

/// How much one uploader owns; see [`BlobStore::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the sizes of the blobs it owns.
    pub bytes: u64,
    /// Number of blobs it owns.
    pub blobs: u64,
}

/// Per-uploader limits, checked when a blob gains an owner. Anonymous uploads count as one
/// uploader. A blob counts in full for each of its owners (each could be the last one, and a
/// blob goes only when its last owner deletes it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most bytes one uploader may own; `None` = no limit.
    pub max_bytes: Option<u64>,
    /// Most blobs one uploader may own; `None` = no limit.
    pub max_blobs: Option<u64>,
}

impl Quota {
    /// Whether `used` plus one more blob of `size` bytes stays within the limits; the refusal
    /// says which limit and how much is in use.
    pub fn admits(&self, used: Usage, size: u64) -> Result<(), BlossomError> {
        if let Some(max) = self.max_blobs
            && used.blobs.saturating_add(1) > max
        {
            return Err(BlossomError::QuotaExceeded(format!(
                "upload quota exceeded: this uploader already stores {} blobs, the limit is {max}",
                used.blobs
            )));
        }
        if let Some(max) = self.max_bytes
            && used.bytes.saturating_add(size) > max
        {
            return Err(BlossomError::QuotaExceeded(format!(
                "upload quota exceeded: {size} more bytes would pass this uploader's {max} bytes \
                 ({} in use)",
                used.bytes
            )));
        }
        Ok(())
    }
}

/// What happened on [`BlobStore::remove_owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// No such blob.
    NotFound,
    /// The caller does not own it; nothing changed.
    NotOwner,
    /// The caller's ownership was removed; `deleted` says whether the bytes went too.
    Removed {
        /// The blob had no owner left and was deleted.
        deleted: bool,
    },
}

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    index: RwLock<HashMap<Sha256Hex, BlobMeta>>,
    meta_lock: tokio::sync::Mutex<()>,
}

/// An upload in progress: a temp file being hashed and written.
pub struct Ingest {
    temp: TempFile,
    writer: HashingWriter,
}

/// A fully received upload, hashed and synced, not yet published.
#[derive(Debug)]
pub struct Staged {
    temp: TempFile,
    /// Hash of the received bytes.
    pub sha256: Sha256Hex,
    /// Number of received bytes.
    pub size: u64,
}

impl Ingest {
    /// Appends bytes; fails with 413 as soon as the limit would be exceeded.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlossomError> {
        self.writer.write(data).await.map_err(sink_error)
    }

    /// Appends a received chunk without copying it when it is big.
    pub async fn write_bytes(&mut self, data: bytes::Bytes) -> Result<(), BlossomError> {
        self.writer.write_bytes(data).await.map_err(sink_error)
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.writer.len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Waits for the hash and the fsync.
    pub async fn finish(self) -> Result<Staged, BlossomError> {
        let written = self.writer.finish().await.map_err(sink_error)?;
        Ok(Staged {
            temp: self.temp,
            sha256: written.sha256,
            size: written.size,
        })
    }
}

fn sink_error(e: SinkError) -> BlossomError {
    match e {
        SinkError::TooLarge { limit } => BlossomError::TooLarge { max: limit },
        SinkError::Io(source) => BlossomError::Io {
            context: "writing an upload",
            source,
        },
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl BlobStore {
    /// Opens (creating if needed) a store under `dir`, removes leftovers of interrupted
    /// uploads, and loads the metadata index. With `fsync`, every published blob and sidecar
    /// is synced to disk before the upload is acknowledged.
    pub async fn open(dir: &Path, fsync: bool) -> Result<Self, BlossomError> {
        let dir = dir.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Self::open_blocking(&dir, fsync))
            .await
            .map_err(|e| BlossomError::Internal(format!("store open task: {e}")))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn open_blocking(dir: &Path, fsync: bool) -> Result<Inner, BlossomError> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&blobs).map_err(BlossomError::io("creating blobs/"))?;
        std::fs::create_dir_all(&tmp).map_err(BlossomError::io("creating tmp/"))?;

        let mut stale = 0usize;
        for entry in std::fs::read_dir(&tmp).map_err(BlossomError::io("reading tmp/"))? {
            let entry = entry.map_err(BlossomError::io("reading tmp/"))?;
            if std::fs::remove_file(entry.path()).is_ok() {
                stale += 1;
            }
        }
        if stale > 0 {
            tracing::info!(count = stale, "removed leftovers of interrupted uploads");
        }

        let mut index = HashMap::new();
        for shard in std::fs::read_dir(&blobs).map_err(BlossomError::io("reading blobs/"))? {
            let shard = shard.map_err(BlossomError::io("reading blobs/"))?;
            if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let names: Vec<_> = std::fs::read_dir(shard.path())
                .map_err(BlossomError::io("reading a blob shard"))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            for name in &names {
                let Some(hash) = name.strip_suffix(".json") else {
                    continue;
                };
                let Ok(sha) = Sha256Hex::parse(hash) else {
                    continue;
                };
                let blob = shard.path().join(hash);
                let sidecar = shard.path().join(name);
                let meta = std::fs::read(&sidecar)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<BlobMeta>(&b).ok());
                let blob_len = std::fs::metadata(&blob).ok().map(|m| m.len());
                match (meta, blob_len) {
                    (Some(meta), Some(len)) if meta.size == len => {
                        index.insert(sha, meta);
                    }
                    (_, None) => {
                        // Interrupted publish or delete: the sidecar alone means nothing.
                        let _ = std::fs::remove_file(&sidecar);
                    }
                    (_, Some(len)) => {
                        tracing::warn!(%sha, "unreadable sidecar; adopting the blob without owners");
                        index.insert(sha, adopted(len));
                    }
                }
            }
            for name in &names {
                if let Ok(sha) = Sha256Hex::parse(name)
                    && !index.contains_key(&sha)
                    && let Ok(m) = std::fs::metadata(shard.path().join(name))
                {
                    tracing::warn!(%sha, "blob without sidecar; adopting it without owners");
                    index.insert(sha, adopted(m.len()));
                }
            }
        }
        tracing::debug!(blobs = index.len(), dir = %dir.display(), "blob store open");
        Ok(Inner {
            root: dir.to_path_buf(),
            blobs,
            tmp,
            fsync,
            index: RwLock::new(index),
            meta_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn shard(&self, sha: &Sha256Hex) -> PathBuf {
        let hex = sha.to_hex();
        self.inner.blobs.join(&hex[..2])
    }

    /// Where the bytes of `sha` live (whether or not it is stored).
    pub fn blob_path(&self, sha: &Sha256Hex) -> PathBuf {
        self.shard(sha).join(sha.to_hex())
    }

    fn sidecar_path(&self, sha: &Sha256Hex) -> PathBuf {
        self.shard(sha).join(format!("{sha}.json"))
    }

    /// Metadata of a stored blob.
    pub fn get(&self, sha: &Sha256Hex) -> Option<BlobMeta> {
        self.read_index().get(sha).cloned()
    }

    /// Whether a blob is stored.
    pub fn contains(&self, sha: &Sha256Hex) -> bool {
        self.read_index().contains_key(sha)
    }

    /// Number of stored blobs.
    pub fn len(&self) -> usize {
        self.read_index().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Sha256Hex, BlobMeta>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.inner
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Sha256Hex, BlobMeta>> {
        self.inner
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a stored blob for reading.
    pub async fn open_blob(
        &self,
        sha: &Sha256Hex,
    ) -> Result<Option<(std::fs::File, BlobMeta)>, BlossomError> {
        let Some(meta) = self.get(sha) else {
            return Ok(None);
        };
        let path = self.blob_path(sha);
        match tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(|e| BlossomError::Internal(format!("open task: {e}")))?
        {
            Ok(f) => Ok(Some((f, meta))),
            // Deleted between the index lookup and the open.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlossomError::Io {
                context: "opening a blob",
                source: e,
            }),
        }
    }

    /// Starts receiving a blob of at most `limit` bytes.
    pub fn begin(&self, limit: u64) -> Result<Ingest, BlossomError> {
        let (temp, file) = TempFile::create_in(&self.inner.tmp, "upload-")
            .map_err(BlossomError::io("creating a temp file"))?;
        Ok(Ingest {
            temp,
            writer: HashingWriter::new(file, limit, self.inner.fsync),
        })
    }

    /// What `owner` (`None`: anonymous uploads) owns here. A scan of the index: cheap next to
    /// receiving a blob, and never out of step with it.
    pub fn usage(&self, owner: Option<&PublicKey>) -> Usage {
        let key = owner.map(PublicKey::to_hex);
        self.read_index()
            .values()
            .filter(|meta| match &key {
                Some(key) => meta.owners.contains_key(key),
                None => meta.anonymous,
            })
            .fold(Usage::default(), |used, meta| Usage {
                bytes: used.bytes.saturating_add(meta.size),
                blobs: used.blobs + 1,
            })
    }

    /// Whether `owner` (`None`: anonymous) already owns the stored blob `sha`, so that storing
    /// it again for them changes nothing.
    pub fn owned_by(&self, sha: &Sha256Hex, owner: Option<&PublicKey>) -> bool {
        self.get(sha).is_some_and(|meta| match owner {
            Some(o) => meta.is_owner(o),
            None => meta.anonymous,
        })
    }

    /// Bytes available to unprivileged writers on the filesystem of the data directory.
    pub fn free_space(&self) -> Result<u64, BlossomError> {
        let stat = rustix::fs::statvfs(&self.inner.root).map_err(|errno| BlossomError::Io {
            context: "reading the free space of the data directory",
            source: std::io::Error::from(errno),
        })?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Publishes a received blob, or merges `owner` into an existing one, if `owner` stays
    /// within `quota` (checked under the metadata lock, so concurrent uploads cannot pass it
    /// together). Returns the metadata and whether the blob is new. On any error the received
    /// bytes are removed with `staged`.
    pub async fn publish(
        &self,
        staged: Staged,
        mime_type: String,
        owner: Option<PublicKey>,
        quota: &Quota,
    ) -> Result<(BlobMeta, bool), BlossomError> {
        let _guard = self.inner.meta_lock.lock().await;
        let sha = staged.sha256;
        let now = now_secs();
        if !self.owned_by(&sha, owner.as_ref()) {
            quota.admits(self.usage(owner.as_ref()), staged.size)?;
        }
        if let Some(existing) = self.get(&sha) {
            // Same bytes already here: the temp file is dropped (and removed) with `staged`.
            let meta = self.merge_owner(sha, existing, owner, now).await?;
            return Ok((meta, false));
        }
        let mut owners = BTreeMap::new();
        if let Some(o) = owner {
            owners.insert(o.to_hex(), now);
        }
        let meta = BlobMeta {
            size: staged.size,
            mime_type,
            uploaded: now,
            owners,
            anonymous: owner.is_none(),
        };
        let shard = self.shard(&sha);
        let blob = self.blob_path(&sha);
        let sidecar = self.sidecar_path(&sha);
        let tmp = self.inner.tmp.clone();
        let fsync = self.inner.fsync;
        let json = serde_json::to_vec(&meta)
            .map_err(|e| BlossomError::Internal(format!("serialising metadata: {e}")))?;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if !shard.exists() {
                std::fs::create_dir_all(&shard)?;
                if fsync && let Some(parent) = shard.parent() {
                    sync_dir(parent)?;
                }
            }
            write_atomic(&tmp, &sidecar, &json, fsync)?;
            staged.temp.persist(&blob)?;
            if fsync {
                sync_dir(&shard)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BlossomError::Internal(format!("publish task: {e}")))?
        .map_err(BlossomError::io("publishing a blob"))?;
        self.write_index().insert(sha, meta.clone());
        Ok((meta, true))
    }

    /// Caller holds `meta_lock`.
    async fn merge_owner(
        &self,
        sha: Sha256Hex,
        mut meta: BlobMeta,
        owner: Option<PublicKey>,
        now: u64,
    ) -> Result<BlobMeta, BlossomError> {
        match owner {
            None if meta.anonymous => return Ok(meta),
            None => meta.anonymous = true,
            Some(o) if meta.owners.contains_key(&o.to_hex()) => return Ok(meta),
            Some(o) => {
                meta.owners.insert(o.to_hex(), now);
            }
        }
        self.write_sidecar(&sha, &meta).await?;
        self.write_index().insert(sha, meta.clone());
        Ok(meta)
    }

    async fn write_sidecar(&self, sha: &Sha256Hex, meta: &BlobMeta) -> Result<(), BlossomError> {
        let json = serde_json::to_vec(meta)
            .map_err(|e| BlossomError::Internal(format!("serialising metadata: {e}")))?;
        let tmp = self.inner.tmp.clone();
        let sidecar = self.sidecar_path(sha);
        let fsync = self.inner.fsync;
        tokio::task::spawn_blocking(move || write_atomic(&tmp, &sidecar, &json, fsync))
            .await
            .map_err(|e| BlossomError::Internal(format!("sidecar task: {e}")))?
            .map_err(BlossomError::io("writing a metadata sidecar"))
    }

    /// Removes `owner` from a blob; deletes the bytes when no owner remains.
    pub async fn remove_owner(
        &self,
        sha: &Sha256Hex,
        owner: &PublicKey,
    ) -> Result<RemoveOutcome, BlossomError> {
        let _guard = self.inner.meta_lock.lock().await;
        let Some(mut meta) = self.get(sha) else {
            return Ok(RemoveOutcome::NotFound);
        };
        if meta.owners.remove(&owner.to_hex()).is_none() {
            return Ok(RemoveOutcome::NotOwner);
        }
        if !meta.owners.is_empty() || meta.anonymous {
            self.write_sidecar(sha, &meta).await?;
            self.write_index().insert(*sha, meta);
            return Ok(RemoveOutcome::Removed { deleted: false });
        }
        // Out of the index first, so nobody starts serving what is about to vanish.
        self.write_index().remove(sha);
        let blob = self.blob_path(sha);
        let sidecar = self.sidecar_path(sha);
        let shard = self.shard(sha);
        let fsync = self.inner.fsync;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Blob before sidecar: a crash in between leaves a sidecar alone, dropped at open.
            remove_if_exists(&blob)?;
            remove_if_exists(&sidecar)?;
            if fsync {
                sync_dir(&shard)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BlossomError::Internal(format!("delete task: {e}")))?
        .map_err(BlossomError::io("deleting a blob"))?;
        Ok(RemoveOutcome::Removed { deleted: true })
    }

    /// Blobs owned by `owner`, newest first (by that owner's upload time), with that time.
    pub fn list(&self, owner: &PublicKey) -> Vec<(Sha256Hex, BlobMeta, u64)> {
        let key = owner.to_hex();
        let mut out: Vec<_> = self
            .read_index()
            .iter()
            .filter_map(|(sha, meta)| meta.owners.get(&key).map(|t| (*sha, meta.clone(), *t)))
            .collect();
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        out
    }

    /// Files currently in `tmp/` (uploads in progress or leftovers); for tests and monitoring.
    pub fn temp_files(&self) -> usize {
        std::fs::read_dir(&self.inner.tmp)
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn adopted(size: u64) -> BlobMeta {
    BlobMeta {
        size,
        mime_type: DEFAULT_MIME.to_owned(),
        uploaded: now_secs(),
        owners: BTreeMap::new(),
        // Nobody can claim it: it stays until an operator removes it.
        anonymous: true,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `dest` via a temp file in `tmp` and a rename, so readers and crashes see
/// either the old or the new content.
fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let (temp, mut file) = TempFile::create_in(tmp, "meta-")?;
    file.write_all(bytes)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    temp.persist(dest)?;
    if fsync && let Some(dir) = dest.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}
