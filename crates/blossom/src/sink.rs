//! Streaming file I/O shared by the server and the client: hash-while-writing into a temporary
//! file, a temp-file guard that removes the file on every failure path, and a read-ahead file
//! stream for serving and uploading.
//!
//! Throughput is the point of this module (a 1 GiB artifact should move at close to SHA-256
//! speed), so: the network side (an async task) hands 1 MiB pooled buffers, or big received
//! chunks as they are, to two blocking threads, one hashing and one writing, that share the
//! same reference-counted bytes; buffers are recycled instead of allocated per chunk; with
//! fsync on, a helper thread starts the disk early so the final fsync has little left to do;
//! and no blob is ever held whole in memory.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use quorum_proto::blossom::Sha256Hex;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Size of one I/O buffer: big enough that per-chunk overhead (syscalls, channel hops) is
/// negligible next to hashing, small enough that a few in flight cost little memory.
pub const CHUNK: usize = 1 << 20;

/// Buffers in flight per writer or reader (one being filled, the rest queued, being hashed or
/// being written).
const POOL: usize = 6;

/// With fsync on, how much is written between background flushes.
/// (Small in unit tests, so that they exercise the background flushes.)
const SYNC_EVERY: usize = if cfg!(test) { 1 << 20 } else { 64 << 20 };

/// Network chunks at least this big are handed to the writer thread as they are (no copy);
/// smaller ones are coalesced into 1 MiB buffers so that writes stay large.
const DIRECT_MIN: usize = 64 * 1024;

/// A file that is deleted when dropped unless [`TempFile::persist`] moved it into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates a new, uniquely named file in `dir` (which must be on the same filesystem as
    /// the final location, so that [`TempFile::persist`] is an atomic rename).
    pub fn create_in(dir: &Path, prefix: &str) -> io::Result<(Self, std::fs::File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let name = format!(
                "{prefix}{}-{}-{nanos:08x}.part",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((Self { path, armed: true }, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the file currently is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Atomically renames the file to `dest`; from then on it is no longer removed on drop.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove temp file");
        }
    }
}

/// Why a streaming write stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// More bytes arrived than the limit allows.
    #[error("more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Writing or syncing the file failed.
    #[error("writing the temporary file: {0}")]
    Io(#[from] io::Error),
}

/// What a finished [`HashingWriter`] produced.
#[derive(Debug)]
pub struct Written {
    /// SHA-256 of every byte written.
    pub sha256: Sha256Hex,
    /// Number of bytes written.
    pub size: u64,
}

/// Hashes and writes a byte stream to a file.
///
/// Hashing and writing run on two blocking threads that see the same (reference-counted)
/// buffers, so the two costs overlap instead of adding up. Dropping the writer without calling
/// [`HashingWriter::finish`] stops both threads; the caller's [`TempFile`] guard removes the
/// file.
pub struct HashingWriter {
    to_hash: Option<mpsc::Sender<Bytes>>,
    to_write: Option<mpsc::Sender<Bytes>>,
    recycle: mpsc::Sender<Vec<u8>>,
    pool: mpsc::Receiver<Vec<u8>>,
    allocated: usize,
    buf: Vec<u8>,
    len: u64,
    limit: u64,
    hasher: tokio::task::JoinHandle<Sha256Hex>,
    writer: tokio::task::JoinHandle<io::Result<()>>,
}

impl HashingWriter {
    /// Starts a writer into `file` that refuses more than `limit` bytes. With `fsync`, the
    /// file's data is synced before [`HashingWriter::finish`] returns.
    pub fn new(mut file: std::fs::File, limit: u64, fsync: bool) -> Self {
        let (to_hash, mut hash_rx) = mpsc::channel::<Bytes>(POOL);
        let (to_write, mut write_rx) = mpsc::channel::<Bytes>(POOL);
        let (recycle, pool) = mpsc::channel::<Vec<u8>>(POOL);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(piece) = hash_rx.blocking_recv() {
                hasher.update(&piece);
            }
            Sha256Hex::from_bytes(hasher.finalize().into())
        });
        // With fsync, a helper thread (started once a blob is big enough to need it) flushes
        // what has been written so far every SYNC_EVERY bytes, so that the disk works while
        // the network still delivers and the final fsync only has the tail left. It syncs a
        // clone of the descriptor: the writer never waits for it.
        let writer = tokio::task::spawn_blocking(move || {
            let mut syncer: Option<std::sync::mpsc::SyncSender<()>> = None;
            let mut since_sync = 0usize;
            while let Some(piece) = write_rx.blocking_recv() {
                file.write_all(&piece)?;
                since_sync += piece.len();
                if fsync && since_sync >= SYNC_EVERY {
                    since_sync = 0;
                    if syncer.is_none() {
                        syncer = spawn_syncer(&file);
                    }
                    if let Some(tick) = &syncer {
                        // Busy syncing already: skip this tick.
                        let _ = tick.try_send(());
                    }
                }
            }
            drop(syncer);
            if fsync {
                file.sync_all()?;
            }
            Ok(())
        });
        Self {
            to_hash: Some(to_hash),
            to_write: Some(to_write),
            recycle,
            pool,
            allocated: 1,
            buf: Vec::with_capacity(CHUNK),
            len: 0,
            limit,
            hasher,
            writer,
        }
    }

    /// Bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes. Fails as soon as the total would exceed the limit, before writing them.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), SinkError> {
        let new_len = self.len.saturating_add(data.len() as u64);
        if new_len > self.limit {
            return Err(SinkError::TooLarge { limit: self.limit });
        }
        self.len = new_len;
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.flush_buf().await?;
            }
        }
        Ok(())
    }

    /// Appends a received chunk; big chunks go to the threads without being copied.
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<(), SinkError> {
        if data.len() < DIRECT_MIN {
            return self.write(&data).await;
        }
        let new_len = self.len.saturating_add(data.len() as u64);
        if new_len > self.limit {
            return Err(SinkError::TooLarge { limit: self.limit });
        }
        self.len = new_len;
        // Keep the order: whatever is buffered goes first.
        if !self.buf.is_empty() {
            self.flush_buf().await?;
        }
        self.send(data).await
    }

    async fn send(&mut self, piece: Bytes) -> Result<(), SinkError> {
        let hashed = match &self.to_hash {
            Some(tx) => tx.send(piece.clone()).await.is_ok(),
            None => false,
        };
        let written = hashed
            && match &self.to_write {
                Some(tx) => tx.send(piece).await.is_ok(),
                None => false,
            };
        if written {
            Ok(())
        } else {
            Err(self.thread_error().await)
        }
    }

    async fn flush_buf(&mut self) -> Result<(), SinkError> {
        let mut next = match self.pool.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.allocated < POOL => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            // Both threads hold the buffers; one comes back when they are done with it (the
            // writer keeps its sender alive, so this cannot wait forever while they run).
            Err(_) => match self.pool.recv().await {
                Some(buf) => buf,
                None => return Err(self.thread_error().await),
            },
        };
        // Recycled buffers come back as they were sent: full.
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        let piece = Bytes::from_owner(Recycled {
            buf: full,
            home: self.recycle.clone(),
        });
        self.send(piece).await
    }

    /// A thread stopped taking input: the writer's result says why.
    async fn thread_error(&mut self) -> SinkError {
        self.to_hash = None;
        self.to_write = None;
        match (&mut self.writer).await {
            Ok(Err(e)) => SinkError::Io(e),
            Ok(Ok(())) => SinkError::Io(io::Error::other("hashing writer stopped early")),
            Err(e) => SinkError::Io(io::Error::other(format!("hashing writer panicked: {e}"))),
        }
    }

    /// Flushes, waits for both threads (and the fsync) and returns hash and size.
    pub async fn finish(mut self) -> Result<Written, SinkError> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(Bytes::from(last)).await?;
        }
        self.to_hash = None;
        self.to_write = None;
        match (&mut self.writer).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SinkError::Io(e)),
            Err(e) => {
                return Err(SinkError::Io(io::Error::other(format!(
                    "writer thread panicked: {e}"
                ))));
            }
        }
        let sha256 = (&mut self.hasher)
            .await
            .map_err(|e| SinkError::Io(io::Error::other(format!("hasher panicked: {e}"))))?;
        Ok(Written {
            sha256,
            size: self.len,
        })
    }
}

/// Starts a thread that calls `sync_data` on a clone of `file` whenever it is ticked; it ends
/// when the sender drops. `None` if the descriptor cannot be cloned (the final fsync still
/// happens, just without the head start).
fn spawn_syncer(file: &std::fs::File) -> Option<std::sync::mpsc::SyncSender<()>> {
    let clone = file.try_clone().ok()?;
    let (tick, ticks) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("blossom-sync".into())
        .spawn(move || {
            while ticks.recv().is_ok() {
                if clone.sync_data().is_err() {
                    // The writer's final sync_all reports the error.
                    break;
                }
            }
        })
        .ok()?;
    Some(tick)
}

/// SHA-256 and size of a file, read in 1 MiB blocks on a blocking thread.
pub async fn sha256_file(path: &Path) -> io::Result<(Sha256Hex, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((Sha256Hex::from_bytes(hasher.finalize().into()), size))
    })
    .await
    .map_err(io::Error::other)?
}

/// A read buffer that returns to its stream's pool when the last `Bytes` view of it drops.
struct Recycled {
    buf: Vec<u8>,
    home: mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // A full pool or a finished stream: the buffer is simply freed.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

/// Streams `len` bytes of `file` from `offset` in 1 MiB chunks, read ahead on a blocking thread.
///
/// A file that turns out shorter than `len` ends the stream with an error, so that a response
/// with a promised Content-Length is cut off rather than silently short.
pub fn file_stream(
    mut file: std::fs::File,
    offset: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(POOL);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        // Buffers come back here when hyper is done with them, so a long stream reuses a
        // handful of 1 MiB buffers instead of faulting in fresh memory for every chunk.
        let (recycle, mut recycled) = mpsc::channel::<Vec<u8>>(2 * POOL);
        let mut left = len;
        while left > 0 {
            let want = left.min(CHUNK as u64);
            let mut buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            buf.clear();
            // read_to_end into reserved capacity fills it without zeroing it first.
            let res = (&mut file).take(want).read_to_end(&mut buf);
            let item = match res {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file is shorter than expected",
                )),
                Ok(n) => {
                    left -= n as u64;
                    Ok(Bytes::from_owner(Recycled {
                        buf,
                        home: recycle.clone(),
                    }))
                }
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn mixed_pieces_keep_order_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, file) = TempFile::create_in(dir.path(), "t-").unwrap();
        let all = data(5 * CHUNK + 12345);
        let mut w = HashingWriter::new(file, u64::MAX, true);
        // Small copies, a big zero-copy piece in the middle of a partial buffer, odd sizes.
        let sizes = [10, 70_000, 3, CHUNK + 1, 5000, 2 * CHUNK, 100, DIRECT_MIN];
        let mut at = 0;
        for (i, s) in sizes.iter().cycle().enumerate() {
            if at == all.len() {
                break;
            }
            let end = (at + s).min(all.len());
            if i % 2 == 0 {
                w.write(&all[at..end]).await.unwrap();
            } else {
                w.write_bytes(Bytes::copy_from_slice(&all[at..end]))
                    .await
                    .unwrap();
            }
            at = end;
        }
        let done = w.finish().await.unwrap();
        assert_eq!(done.size, all.len() as u64);
        assert_eq!(
            done.sha256,
            Sha256Hex::from_bytes(Sha256::digest(&all).into())
        );
        assert_eq!(std::fs::read(temp.path()).unwrap(), all);
        let path = temp.path().to_path_buf();
        drop(temp);
        assert!(!path.exists(), "temp file must be removed on drop");
    }

    #[tokio::test]
    async fn limit_is_enforced_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (_temp, file) = TempFile::create_in(dir.path(), "t-").unwrap();
        let mut w = HashingWriter::new(file, 100, false);
        w.write(&[1; 60]).await.unwrap();
        assert!(matches!(
            w.write(&[1; 41]).await,
            Err(SinkError::TooLarge { limit: 100 })
        ));
        assert!(matches!(
            w.write_bytes(Bytes::from(vec![0; DIRECT_MIN])).await,
            Err(SinkError::TooLarge { .. })
        ));
        assert_eq!(w.len(), 60);
    }

    #[tokio::test]
    async fn file_stream_reads_a_window() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let all = data(3 * CHUNK + 7);
        let path = dir.path().join("f");
        std::fs::write(&path, &all).unwrap();
        let s = file_stream(std::fs::File::open(&path).unwrap(), 5, (2 * CHUNK) as u64);
        let got: Vec<u8> = s.map(|c| c.unwrap().to_vec()).concat().await;
        assert_eq!(got, &all[5..5 + 2 * CHUNK]);
        // Asking for more than the file holds ends with an error, not a short success.
        let s = file_stream(std::fs::File::open(&path).unwrap(), 0, all.len() as u64 + 1);
        let items: Vec<_> = s.collect().await;
        assert!(items.last().unwrap().is_err());
    }
}
