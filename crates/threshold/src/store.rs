//! The share file: one [`KeyShare`] as JSON, written atomically, readable by its owner only.
//!
//! [`save`] writes a temporary file in the target's directory (created with mode 0600, so the
//! secret is never readable by others, not even briefly), fsyncs it, renames it over the
//! target and fsyncs the directory: a crash leaves either the old file or the new one, never a
//! torn one. [`load`] refuses a file whose mode grants any access to group or others (the
//! error names the path and the mode) and a path that is not a regular file; it checks the
//! mode on the opened file, so a swap between check and read is not possible.
//!
//! Errors name the path and what failed, never file content. Unix only.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::share::{KeyShare, ShareError};

/// Why saving or loading a share file failed. Never contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The share file is readable or writable by group or others.
    #[error(
        "refusing to load {}: mode {mode:04o} gives access to group or others; \
         run `chmod 600` on it (and consider the share compromised)",
        path.display()
    )]
    InsecureMode {
        /// The path.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file does not hold a valid share.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong (never the content).
        source: Box<ShareError>,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `share` to `path` atomically with mode 0600 (replacing any existing file), creating
/// its directory with mode 0700 if needed.
pub fn save(path: &Path, share: &KeyShare) -> Result<(), StoreError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let json = share
        .to_json_bytes()
        .map_err(|source| StoreError::Invalid {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| StoreError::NotAFile {
        path: path.to_path_buf(),
    })?;
    if !dir.exists() {
        // Only its owner may list a directory of key shares.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating directory", &dir))?;
    }
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_tmp(&tmp, &json).and_then(|()| {
        fs::rename(&tmp, path).map_err(io("renaming the temporary file onto", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing directory", &dir))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(tmp: &Path, json: &[u8]) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io("creating", tmp))?;
    // The umask can only remove bits from 0600; make it exact anyway.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io("setting the mode of", tmp))?;
    file.write_all(json).map_err(io("writing", tmp))?;
    file.sync_all().map_err(io("syncing", tmp))
}

/// Reads the share at `path`, refusing files that group or others may access.
pub fn load(path: &Path) -> Result<KeyShare, StoreError> {
    let mut file = File::open(path).map_err(io("opening", path))?;
    let meta = file.metadata().map_err(io("reading metadata of", path))?;
    if !meta.is_file() {
        return Err(StoreError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::InsecureMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::with_capacity(meta.len() as usize + 1));
    file.read_to_string(&mut text)
        .map_err(io("reading", path))?;
    KeyShare::from_json(&text).map_err(|source| StoreError::Invalid {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}
