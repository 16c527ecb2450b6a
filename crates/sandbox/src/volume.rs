//! A size-capped file system for a runner's work dirs, so that no build step can fill the
//! runner's disk (its journal, key shares, relay database live next to the work dirs).
//!
//! [`WorkVolume::mount`] makes a sparse image file of the cap's size beside the directory,
//! formats it ext4 (no journal: work dirs are disposable), loop-mounts it on the directory
//! (`nosuid,nodev`) and unlinks the image at once: the loop device keeps it alive while it is
//! mounted, and nothing is left on disk once it is unmounted, even after a crash. Dropping the
//! volume unmounts it. A volume left mounted by a killed process is detached and replaced on the
//! next mount.
//!
//! Everything written into the work dirs (the checkout, the step's output, the packed
//! artifacts) counts against the cap; a step that writes past it gets `ENOSPC`, fails, and its
//! outcome says `disk_limit_hit`. Artifacts are still read from the host path after the step.
//! Inside the sandbox, `/proc/self/mountinfo` shows the work dir as a path of this file system,
//! not of the host's.
//!
//! Needs root (loop devices and mounts); a non-root runner puts its data dir on a file system
//! of its own instead.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::SandboxError;

/// Smallest cap accepted (ext4 needs some room for its own metadata).
pub const MIN_BYTES: u64 = 16 << 20;

/// A mounted, size-capped work root. Unmounted on drop.
#[derive(Debug)]
pub struct WorkVolume {
    dir: PathBuf,
    bytes: u64,
}

impl WorkVolume {
    /// Mount a fresh file system of `bytes` on `dir` (created if missing). Whatever `dir` held
    /// before is removed: it is a work root, which holds nothing worth keeping between runs.
    pub fn mount(dir: impl Into<PathBuf>, bytes: u64) -> Result<WorkVolume, SandboxError> {
        let dir = std::path::absolute(dir.into())
            .map_err(|e| SandboxError::io("resolving the work dir", e))?;
        let unavailable = |reason: String| SandboxError::Unavailable { reason };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(unavailable(
                "a size-capped work dir needs root (loop mount); put the runner's data dir on a \
                 file system of its own instead"
                    .into(),
            ));
        }
        if bytes < MIN_BYTES {
            return Err(SandboxError::InvalidSpec(format!(
                "work dir cap {bytes} bytes is below the minimum of {MIN_BYTES}"
            )));
        }
        let io = |what: &str, e| SandboxError::io(format!("{what} {}", dir.display()), e);
        if dir.exists() && is_mountpoint(&dir) {
            // Left by a runner that was killed: detach it (its unlinked image goes with it).
            umount(&dir).map_err(|e| io("detaching a stale volume at", e))?;
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io("clearing", e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io("creating", e))?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "work".into());
        let image = dir.with_file_name(format!(".{name}.volume-{}", std::process::id()));
        let made = make_and_mount(&image, &dir, bytes);
        let _ = fs::remove_file(&image);
        made?;
        Ok(WorkVolume { dir, bytes })
    }

    /// Where the volume is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for WorkVolume {
    fn drop(&mut self) {
        if let Err(e) = umount(&self.dir) {
            tracing::warn!(
                "cannot unmount the work volume at {}: {e}",
                self.dir.display()
            );
        }
    }
}

fn make_and_mount(image: &Path, dir: &Path, bytes: u64) -> Result<(), SandboxError> {
    let io = |what: String, e| SandboxError::io(what, e);
    let file =
        fs::File::create(image).map_err(|e| io(format!("creating {}", image.display()), e))?;
    file.set_len(bytes)
        .map_err(|e| io(format!("sizing {}", image.display()), e))?;
    drop(file);
    run(Command::new(tool("mkfs.ext4"))
        .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
        .args(["-E", "nodiscard,root_owner=0:0"])
        .arg(image))?;
    run(Command::new(tool("mount"))
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
        .arg(image)
        .arg(dir))?;
    Ok(())
}

fn tool(name: &str) -> PathBuf {
    crate::net::which(name).unwrap_or_else(|| PathBuf::from(name))
}

fn run(cmd: &mut Command) -> Result<(), SandboxError> {
    let program = PathBuf::from(cmd.get_program());
    let out = cmd.output().map_err(|source| SandboxError::Spawn {
        program: program.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(SandboxError::Unavailable {
        reason: format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

/// A mount point is on another device than its parent (or is `/`).
fn is_mountpoint(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (fs::metadata(dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev() || d.ino() == p.ino(),
        _ => false,
    }
}

fn umount(dir: &Path) -> std::io::Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated path. MNT_DETACH: a step's process still holding a file
    // open cannot keep the runner from shutting down; the loop device goes when it lets go.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
