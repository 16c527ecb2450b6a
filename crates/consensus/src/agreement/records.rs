//! A member's record of the commitment it made for a job, kept on disk so that a member
//! restarted mid-job (the DVM runtime resumes journaled jobs) opens the commitment it already
//! published instead of making a second one, which the other members would prove to be an
//! equivocation (8707).
//!
//! One file per job, `DIR/<job hex>.json`: the salt (secret until the reveal), the canonical
//! bytes of the committed result and the signed commitment event. The file is written before the
//! commitment is published: a temporary file created with mode 0600 in the directory (mode
//! 0700), fsynced, hard-linked to its final name and the directory fsynced. Linking, unlike
//! renaming, fails when a record for the job exists already, so two calls racing for one job
//! cannot both commit: the loser takes the winner's record. A crash leaves either no record (and
//! nothing was published) or a whole one.
//!
//! Errors name the file and what is wrong with it, never the salt.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nostr_sdk::prelude::*;
use quorum_proto::agreement::Salt;
use serde::{Deserialize, Serialize};

/// Why a record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("commitment record {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// What a member committed to for one job.
#[derive(Clone)]
pub struct Record {
    pub salt: Salt,
    /// `BuildResult::canonical_bytes` of the committed result.
    pub result: Vec<u8>,
    /// The signed commitment event (8705), as published.
    pub commitment: Event,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("commitment", &self.commitment.id)
            .finish_non_exhaustive()
    }
}

/// The file's JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    job: EventId,
    salt: String,
    result: String,
    commitment: Event,
}

/// How [`create`] ended.
#[derive(Debug)]
pub enum Created {
    /// The record is on disk.
    New,
    /// A record for the job was there already (written by a concurrent call): this one.
    Existing(Box<Record>),
}

/// Where the record of `job` lives in `dir`.
pub fn path(dir: &Path, job: &EventId) -> PathBuf {
    dir.join(format!("{}.json", job.to_hex()))
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RecordError + 'a {
    move |source| RecordError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> RecordError {
    RecordError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates `dir` with mode 0700 if it does not exist, and refuses one that others can read
/// (the salts in it are secret until their reveals).
pub fn private_dir(dir: &Path) -> Result<(), RecordError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating", dir))?;
    let mode = fs::metadata(dir)
        .map_err(io("reading the metadata of", dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(invalid(
            dir,
            format!(
                "the directory has mode {:04o}; run `chmod 700` on it",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// The record of `job` in `dir`, if there is one.
pub fn load(dir: &Path, job: &EventId) -> Result<Option<Record>, RecordError> {
    let path = path(dir, job);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("opening", &path)(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(io("reading", &path))?;
    let parsed: RecordFile =
        serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not a record: {e}")))?;
    if parsed.job != *job {
        return Err(invalid(&path, format!("it is for job {}", parsed.job)));
    }
    let salt = Salt::parse(&parsed.salt).ok_or_else(|| invalid(&path, "the salt is not 64 hex"))?;
    let result =
        hex::decode(&parsed.result).map_err(|_| invalid(&path, "the result is not hex"))?;
    Ok(Some(Record {
        salt,
        result,
        commitment: parsed.commitment,
    }))
}

/// Writes the record of `job` unless one exists (then returns that one).
pub fn create(dir: &Path, job: &EventId, record: &Record) -> Result<Created, RecordError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path(dir, job);
    let json = serde_json::to_vec(&RecordFile {
        job: *job,
        salt: record.salt.to_hex(),
        result: hex::encode(&record.result),
        commitment: record.commitment.clone(),
    })
    .map_err(|e| invalid(&path, format!("cannot encode: {e}")))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        job.to_hex(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&tmp, &json).and_then(|()| match fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("linking the record to", &path)(e)),
    });
    let _ = fs::remove_file(&tmp);
    if !written? {
        return load(dir, job)?
            .map(|record| Created::Existing(Box::new(record)))
            .ok_or_else(|| invalid(&path, "it was there a moment ago and is gone"));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))?;
    Ok(Created::New)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    file.write_all(bytes).map_err(io("writing", path))?;
    file.sync_all().map_err(io("syncing", path))
}

/// Removes the records (and temporary files left by a crash) last written more than `lifetime`
/// ago: their commitments have expired on the relays, so nothing can resume them any more.
/// Returns how many it removed; a file it cannot remove is skipped with a warning.
pub fn sweep(dir: &Path, lifetime: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".json") || (name.starts_with('.') && name.ends_with(".tmp"));
        if !ours || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|written| now.duration_since(written).is_ok_and(|age| age > lifetime));
        if !old {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), "cannot remove an old commitment record: {e}")
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(keys: &Keys) -> Record {
        Record {
            salt: Salt::random(),
            result: vec![0, 1, 2, 3],
            commitment: EventBuilder::text_note("a commitment stands in")
                .sign_with_keys(keys)
                .unwrap(),
        }
    }

    #[test]
    fn a_record_round_trips_with_private_modes_and_is_never_replaced() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("agreements");
        private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let keys = Keys::generate();
        let job = EventId::from_byte_array([3; 32]);
        assert!(load(&dir, &job).unwrap().is_none());
        let first = record(&keys);
        assert!(matches!(create(&dir, &job, &first).unwrap(), Created::New));
        let file = path(&dir, &job);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = load(&dir, &job).unwrap().expect("the record");
        assert_eq!(loaded.salt, first.salt);
        assert_eq!(loaded.result, first.result);
        assert_eq!(loaded.commitment, first.commitment);
        // A second record for the job does not replace the first: the first comes back.
        let second = record(&keys);
        match create(&dir, &job, &second).unwrap() {
            Created::Existing(existing) => assert_eq!(existing.salt, first.salt),
            Created::New => panic!("a second record replaced the first"),
        }
        assert_eq!(load(&dir, &job).unwrap().unwrap().salt, first.salt);
        // No temporary file is left behind, and the salt is not in `Debug`.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("{}.json", job.to_hex())]);
        assert!(!format!("{loaded:?}").contains(&first.salt.to_hex()));
    }

    #[test]
    fn a_record_for_another_job_or_a_torn_file_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().to_path_buf();
        let keys = Keys::generate();
        let (a, b) = (
            EventId::from_byte_array([1; 32]),
            EventId::from_byte_array([2; 32]),
        );
        create(&dir, &a, &record(&keys)).unwrap();
        fs::copy(path(&dir, &a), path(&dir, &b)).unwrap();
        let err = load(&dir, &b).unwrap_err();
        assert!(err.to_string().contains("it is for job"), "{err}");
        fs::write(path(&dir, &b), "{\"job\":").unwrap();
        let err = load(&dir, &b).unwrap_err();
        assert!(err.to_string().contains("not a record"), "{err}");
    }

    #[test]
    fn a_directory_others_can_read_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = private_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn records_older_than_the_lifetime_are_swept() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().to_path_buf();
        let keys = Keys::generate();
        let (old, new) = (
            EventId::from_byte_array([1; 32]),
            EventId::from_byte_array([2; 32]),
        );
        create(&dir, &old, &record(&keys)).unwrap();
        create(&dir, &new, &record(&keys)).unwrap();
        let stale = fs::File::options()
            .write(true)
            .open(path(&dir, &old))
            .unwrap();
        stale
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        assert_eq!(sweep(&dir, Duration::from_secs(3600)), 1);
        assert!(load(&dir, &old).unwrap().is_none());
        assert!(load(&dir, &new).unwrap().is_some());
    }
}
