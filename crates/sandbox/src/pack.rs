//! Collecting a step's artifacts and packing directories deterministically.
//!
//! Builders agree per file (design section 7), so packing must not add differences the build
//! did not make. A directory artifact becomes a tar file whose bytes depend only on the names,
//! contents, executable bits and symlink targets inside it:
//!
//! - entries sorted by path bytes, the directory itself first, prefixed by its name;
//! - mtime = `SOURCE_DATE_EPOCH`, uid/gid 0, empty user/group names, no atime/ctime or xattrs;
//! - mode 0755 for directories and files with any executable bit, 0644 for other files;
//! - symlinks stored as symlinks with their target text, never followed;
//! - hard links stored as separate regular files; devices, fifos and sockets skipped (with a
//!   warning), as they cannot be built reproducibly and have no place in a release.
//!
//! Artifact paths come from the pipeline file, that is from whoever wrote the job: absolute
//! paths, `..` and symlinks resolving outside the work dir are rejected with an error naming
//! the path, so a job cannot make the DVM upload `/root/.ssh/id_ed25519`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file ready for upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Name relative to the work dir (`target/release/app`), with `.tar` added for packed
    /// directories (`dist.tar`).
    pub name: String,
    /// The host file to upload: inside the work dir for files, in `out_dir` for packed dirs.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex (the Blossom id).
    pub sha256: String,
}

/// Why the artifacts could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// An absolute artifact path.
    #[error("artifact path {path:?} is absolute; artifact paths are relative to the work dir")]
    Absolute {
        /// The path as given.
        path: String,
    },
    /// A `..` component.
    #[error("artifact path {path:?} contains '..'")]
    ParentDir {
        /// The path as given.
        path: String,
    },
    /// The empty path or `.`: the work dir itself.
    #[error("artifact path {path:?} names the work dir itself")]
    WorkDir {
        /// The path as given.
        path: String,
    },
    /// Resolves, through symlinks, to somewhere outside the work dir.
    #[error("artifact path {path:?} resolves to {resolved}, outside the work dir")]
    Escapes {
        /// The path as given.
        path: String,
        /// Where it leads.
        resolved: PathBuf,
    },
    /// Does not exist (or is a dangling symlink).
    #[error("artifact path {path:?} does not exist")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A glob pattern matched nothing.
    #[error("artifact pattern {pattern:?} matches nothing")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// A glob pattern does not parse.
    #[error("artifact pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The parse error.
        source: globset::Error,
    },
    /// Neither a regular file nor a directory (device, fifo, socket).
    #[error("artifact path {path:?} is not a regular file or directory")]
    Unsupported {
        /// The path as given.
        path: String,
    },
    /// Two artifacts would have the same name.
    #[error("two artifacts are named {name:?}")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Reading the work dir or writing a tar file failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PackError + use<> {
    let path = path.to_owned();
    move |source| PackError::Io {
        context,
        path,
        source,
    }
}

/// Resolve `patterns` (paths or globs relative to `work_dir`) into artifacts.
///
/// A plain path must exist; a glob (`*`, `?`, `[..]`, `{a,b}`; `*` does not cross `/`, `**`
/// does) must match something. Matches are taken in path order; a match inside a directory
/// already taken is skipped. Files are taken as they are; directories are packed into
/// `out_dir` (which should not be inside `work_dir`) as described in the module docs.
pub fn collect_artifacts(
    work_dir: &Path,
    patterns: &[impl AsRef<str>],
    source_date_epoch: i64,
    out_dir: &Path,
) -> Result<Vec<Artifact>, PackError> {
    let root = work_dir
        .canonicalize()
        .map_err(io_err("opening work dir", work_dir))?;
    let mut taken: Vec<String> = Vec::new();
    for p in patterns {
        let pattern = p.as_ref();
        let rel = normalise(pattern)?;
        if !pattern.contains(['*', '?', '[', '{']) {
            taken.push(rel);
            continue;
        }
        let glob = globset::GlobBuilder::new(&rel)
            .literal_separator(true)
            .build()
            .map_err(|source| PackError::Pattern {
                pattern: pattern.to_owned(),
                source,
            })?
            .compile_matcher();
        let mut all = Vec::new();
        walk_names(&root, "", &mut all)?;
        let before = taken.len();
        taken.extend(all.into_iter().filter(|n| glob.is_match(n)));
        if taken.len() == before {
            return Err(PackError::NoMatch {
                pattern: pattern.to_owned(),
            });
        }
    }
    taken.sort();
    taken.dedup();
    let mut dirs: Vec<String> = Vec::new();
    let mut out: Vec<Artifact> = Vec::new();
    for rel in taken {
        if dirs.iter().any(|d| rel.starts_with(&format!("{d}/"))) {
            continue;
        }
        let joined = root.join(&rel);
        fs::symlink_metadata(&joined).map_err(|_| PackError::NotFound { path: rel.clone() })?;
        let resolved = joined
            .canonicalize()
            .map_err(|_| PackError::NotFound { path: rel.clone() })?;
        if !resolved.starts_with(&root) {
            return Err(PackError::Escapes {
                path: rel,
                resolved,
            });
        }
        let meta = fs::metadata(&resolved).map_err(io_err("reading", &resolved))?;
        let artifact = if meta.is_file() {
            let (size, sha256) = sha256_file(&resolved)?;
            Artifact {
                name: rel.clone(),
                path: resolved,
                size,
                sha256,
            }
        } else if meta.is_dir() {
            fs::create_dir_all(out_dir).map_err(io_err("creating", out_dir))?;
            let top = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
            let dest = out_dir.join(format!("{:03}-{top}.tar", out.len()));
            let (size, sha256) = pack_dir(&resolved, &top, source_date_epoch, &dest)?;
            dirs.push(rel.clone());
            Artifact {
                name: format!("{rel}.tar"),
                path: dest,
                size,
                sha256,
            }
        } else {
            return Err(PackError::Unsupported { path: rel });
        };
        if out.iter().any(|a| a.name == artifact.name) {
            return Err(PackError::Duplicate {
                name: artifact.name,
            });
        }
        out.push(artifact);
    }
    Ok(out)
}

/// Check a user-given relative path and normalise it (`./a//b/` → `a/b`).
fn normalise(path: &str) -> Result<String, PackError> {
    let p = Path::new(path);
    let mut parts: Vec<&str> = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(PackError::Absolute { path: path.into() });
            }
            Component::ParentDir => return Err(PackError::ParentDir { path: path.into() }),
            Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
        }
    }
    if parts.is_empty() {
        return Err(PackError::WorkDir { path: path.into() });
    }
    Ok(parts.join("/"))
}

/// Every path under `dir` (relative, `/`-separated), not following symlinks. Names that are
/// not UTF-8 cannot be written in a pipeline file, so they cannot match and are left out.
fn walk_names(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), PackError> {
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(io_err("reading", &entry.path()))?;
        if ft.is_dir() {
            walk_names(&entry.path(), &rel, out)?;
        }
        out.push(rel);
    }
    Ok(())
}

/// SHA-256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(u64, String), PackError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

enum Kind {
    Dir,
    File { exec: bool },
    Symlink(PathBuf),
}

/// Pack directory `dir` into the tar file `dest`, entries under `top/`. Returns size and
/// SHA-256 of the tar, computed while writing.
pub fn pack_dir(
    dir: &Path,
    top: &str,
    source_date_epoch: i64,
    dest: &Path,
) -> Result<(u64, String), PackError> {
    let mut entries: Vec<(Vec<u8>, PathBuf, Kind)> = vec![(top.into(), dir.to_owned(), Kind::Dir)];
    collect_entries(dir, top.as_bytes(), &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let file = File::create(dest).map_err(io_err("creating", dest))?;
    let mut builder = tar::Builder::new(HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        size: 0,
    });
    let mtime = source_date_epoch.max(0) as u64;
    for (name, host, kind) in &entries {
        let name = Path::new(std::ffi::OsStr::from_bytes(name));
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        let res = match kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                builder.append_data(&mut h, name, io::empty())
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, name, target)
            }
            Kind::File { exec } => {
                // O_NOFOLLOW: it was a regular file when listed; never follow a swapped-in link.
                let f = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(host)
                    .map_err(io_err("opening", host))?;
                let len = f.metadata().map_err(io_err("reading", host))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if *exec { 0o755 } else { 0o644 });
                h.set_size(len);
                builder.append_data(
                    &mut h,
                    name,
                    Exact {
                        inner: f.take(len),
                        left: len,
                    },
                )
            }
        };
        res.map_err(io_err("packing", host))?;
    }
    let mut w = builder.into_inner().map_err(io_err("writing", dest))?;
    w.inner.flush().map_err(io_err("writing", dest))?;
    w.inner
        .get_ref()
        .sync_all()
        .map_err(io_err("writing", dest))?;
    Ok((w.size, hex::encode(w.hasher.finalize())))
}

fn collect_entries(
    dir: &Path,
    prefix: &[u8],
    out: &mut Vec<(Vec<u8>, PathBuf, Kind)>,
) -> Result<(), PackError> {
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let host = entry.path();
        let mut name = prefix.to_vec();
        name.push(b'/');
        name.extend_from_slice(entry.file_name().as_bytes());
        let meta = fs::symlink_metadata(&host).map_err(io_err("reading", &host))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            out.push((name.clone(), host.clone(), Kind::Dir));
            collect_entries(&host, &name, out)?;
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push((name, host, Kind::File { exec }));
        } else if ft.is_symlink() {
            let target = fs::read_link(&host).map_err(io_err("reading", &host))?;
            out.push((name, host, Kind::Symlink(target)));
        } else {
            tracing::warn!("not packing {}: not a file, dir or symlink", host.display());
        }
    }
    Ok(())
}

/// Counts and hashes what goes to the tar file.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that fails if it ends before `left` bytes, so a file that shrank while being
/// packed is an error instead of a corrupt archive (growth is cut off by `take`).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being packed",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_rejects_and_cleans() {
        assert_eq!(normalise("./a//b/").unwrap(), "a/b");
        assert!(matches!(
            normalise("/etc/passwd"),
            Err(PackError::Absolute { .. })
        ));
        assert!(matches!(
            normalise("a/../../x"),
            Err(PackError::ParentDir { .. })
        ));
        assert!(matches!(normalise("."), Err(PackError::WorkDir { .. })));
    }
}
