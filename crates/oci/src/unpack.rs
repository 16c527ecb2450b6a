//! Applying image layers to a root directory with OCI semantics (image-spec `layer.md`).
//!
//! Each layer is a tar stream (plain, gzip or zstd) applied in order on top of the ones before:
//! `.wh.NAME` deletes `NAME` of lower layers, `.wh..wh..opq` empties a directory of what lower
//! layers put there, a later entry replaces an earlier one, hard links point at files already in
//! the root. Every path is resolved inside the root as if the root were `/`: `..` stops at the
//! root and a symlink (absolute or relative) is followed *within* the root, so no entry of a
//! hostile layer can write, link or delete outside it.
//!
//! What an unprivileged unpacker cannot make is left out, on purpose and always the same way,
//! so that every runner gets the same tree: device nodes and FIFOs are skipped (the sandbox
//! gives its own `/dev`), owners are not copied (the sandbox maps one user), setuid/setgid bits
//! are cleared (the sandbox mounts `nosuid`), and directories keep owner `rwx` so that the cache
//! can evict them. Regular files and directories keep their mode and mtime.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::OciError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path, as Linux's own limit.
const MAX_SYMLINKS: usize = 40;

/// How a layer blob is compressed, from its media type or, failing that, its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type; `None` for a type we do not know.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let m = media_type;
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") || m.ends_with("tar.gz") {
            Some(Compression::Gzip)
        } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with(".tar") || m.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the magic bytes at the start of a blob.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The uncompressed tar stream of a layer file.
pub fn layer_reader(path: &Path, compression: Compression) -> Result<Box<dyn Read>, OciError> {
    let file = fs::File::open(path).map_err(|e| OciError::io("opening layer", path, e))?;
    let file = io::BufReader::with_capacity(1 << 20, file);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(file)
                .map_err(|e| OciError::io("starting zstd on layer", path, e))?,
        ),
    })
}

/// Applies layers to an empty directory `root`. `layer` names the layer in errors.
pub struct Unpacker {
    root: PathBuf,
    /// Bytes of file content all layers together may write (a small compressed layer can
    /// expand to fill the disk otherwise).
    max_bytes: u64,
    written: u64,
    /// Directory modes to set once every layer is in (a read-only directory would stop later
    /// entries from being written into it).
    dir_modes: Vec<(PathBuf, u32, Option<SystemTime>)>,
    /// File contents pass through here: decompressed into it, written from it with one
    /// syscall per [`WRITE_CHUNK`]. One buffer for every file of every layer.
    buf: Vec<u8>,
}

/// Bytes of file content read from a layer and written to a file at a time.
const WRITE_CHUNK: usize = 1 << 20;

impl Unpacker {
    /// An unpacker writing into `root`, which must exist.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_limit(root, u64::MAX)
    }

    /// An unpacker that refuses to write more than `max_bytes` of file content in all.
    pub fn with_limit(root: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Unpacker {
            root: root.into(),
            max_bytes,
            written: 0,
            dir_modes: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Applies one layer's tar stream.
    pub fn apply(&mut self, layer: &str, tar_stream: impl Read) -> Result<(), OciError> {
        let bad = |path: &str, reason: String| OciError::BadLayer {
            layer: layer.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let io_err = |path: &str, e: io::Error| bad(path, e.to_string());
        let mut archive = tar::Archive::new(tar_stream);
        // Paths this layer made: its own whiteouts must not delete them (image-spec: whiteouts
        // apply to lower layers only).
        let mut mine: HashSet<PathBuf> = HashSet::new();
        let entries = archive
            .entries()
            .map_err(|e| bad("", format!("not a tar stream: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad("", format!("unreadable tar entry: {e}")))?;
            let raw_path = entry
                .path()
                .map_err(|e| bad("", format!("entry path: {e}")))?
                .into_owned();
            let shown = raw_path.display().to_string();
            let Some(rel) = clean(&raw_path) else {
                return Err(bad(&shown, "path leaves the image root".into()));
            };
            if rel.as_os_str().is_empty() {
                continue; // "./" itself
            }
            let name = rel
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .unwrap_or_default();
            let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == OPAQUE {
                let dir = self
                    .resolve(&parent_rel, true)
                    .map_err(|e| io_err(&shown, e))?;
                if dir.is_dir() {
                    for child in fs::read_dir(&dir).map_err(|e| io_err(&shown, e))? {
                        let child = child.map_err(|e| io_err(&shown, e))?;
                        let child_rel = parent_rel.join(child.file_name());
                        if !mine.contains(&child_rel) {
                            remove_any(&child.path()).map_err(|e| io_err(&shown, e))?;
                        }
                    }
                }
                continue;
            }
            if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
                let target_rel = parent_rel.join(target);
                if target.is_empty() || target == "." || target == ".." {
                    return Err(bad(&shown, "whiteout of nothing".into()));
                }
                if !mine.contains(&target_rel) {
                    let dir = self
                        .resolve(&parent_rel, true)
                        .map_err(|e| io_err(&shown, e))?;
                    remove_any(&dir.join(target)).map_err(|e| io_err(&shown, e))?;
                }
                continue;
            }
            let parent = self
                .resolve(&parent_rel, true)
                .map_err(|e| io_err(&shown, e))?;
            let dest = parent.join(&name);
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().unwrap_or(0o644) & 0o1777;
            let mtime = header
                .mtime()
                .ok()
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            let existing = fs::symlink_metadata(&dest).ok();
            match kind {
                tar::EntryType::Directory => {
                    match &existing {
                        Some(m) if m.is_dir() => {}
                        Some(_) => {
                            remove_any(&dest).map_err(|e| io_err(&shown, e))?;
                            make_dir(&dest).map_err(|e| io_err(&shown, e))?;
                        }
                        None => make_dir(&dest).map_err(|e| io_err(&shown, e))?,
                    }
                    self.dir_modes.push((dest, mode | 0o700, mtime));
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    self.written = self.written.saturating_add(entry.size());
                    if self.written > self.max_bytes {
                        return Err(bad(
                            &shown,
                            format!("the image unpacks to more than {} bytes", self.max_bytes),
                        ));
                    }
                    if existing.is_some() {
                        remove_any(&dest).map_err(|e| io_err(&shown, e))?;
                    }
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&dest)
                        .map_err(|e| io_err(&shown, e))?;
                    // The header's size bounds what `entry` yields, so the count above holds.
                    copy_file(&mut entry, &mut out, &mut self.buf)
                        .map_err(|e| io_err(&shown, e))?;
                    out.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(|e| io_err(&shown, e))?;
                    if let Some(t) = mtime {
                        out.set_modified(t).map_err(|e| io_err(&shown, e))?;
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| bad(&shown, e.to_string()))?
                        .ok_or_else(|| bad(&shown, "symlink without a target".into()))?
                        .into_owned();
                    if existing.is_some() {
                        remove_any(&dest).map_err(|e| io_err(&shown, e))?;
                    }
                    // Stored as written: the sandbox reads it with the image as `/`, and
                    // [`Unpacker::resolve`] follows it the same way.
                    std::os::unix::fs::symlink(&target, &dest).map_err(|e| io_err(&shown, e))?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| bad(&shown, e.to_string()))?
                        .ok_or_else(|| bad(&shown, "hard link without a target".into()))?
                        .into_owned();
                    let Some(target_rel) = clean(&target) else {
                        return Err(bad(&shown, "hard link target leaves the image root".into()));
                    };
                    // The link itself is not followed (a hard link to a symlink links the
                    // symlink), its parents are, within the root.
                    let t_parent = self
                        .resolve(target_rel.parent().unwrap_or(Path::new("")), false)
                        .map_err(|e| io_err(&shown, e))?;
                    let source = t_parent.join(target_rel.file_name().unwrap_or_default());
                    let meta = fs::symlink_metadata(&source).map_err(|_| {
                        bad(
                            &shown,
                            format!(
                                "hard link to {} which is not in the image",
                                target.display()
                            ),
                        )
                    })?;
                    if meta.is_dir() {
                        return Err(bad(&shown, "hard link to a directory".into()));
                    }
                    if source == dest {
                        mine.insert(rel);
                        continue;
                    }
                    if existing.is_some() {
                        remove_any(&dest).map_err(|e| io_err(&shown, e))?;
                    }
                    fs::hard_link(&source, &dest).map_err(|e| io_err(&shown, e))?;
                }
                // Devices and FIFOs: see the module docs. PAX/GNU headers are consumed by tar.
                _ => continue,
            }
            mine.insert(rel);
        }
        Ok(())
    }

    /// Sets the directory modes and mtimes held back while layers were applied.
    pub fn finish(mut self) -> Result<(), OciError> {
        // Deepest first, so setting a parent's mtime is the last change to it.
        self.dir_modes
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (dir, mode, mtime) in self.dir_modes {
            // A later layer may have replaced or removed it.
            if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                .map_err(|e| OciError::io("setting the mode of", &dir, e))?;
            if let Some(t) = mtime
                && let Ok(f) = fs::File::open(&dir)
            {
                let _ = f.set_modified(t);
            }
        }
        Ok(())
    }

    /// The host path of `rel` inside the root, every symlink on the way followed within the
    /// root (like `openat2(RESOLVE_IN_ROOT)`; nothing else writes to the root meanwhile, so
    /// there is no race). With `create`, missing directories on the way are made.
    fn resolve(&self, rel: &Path, create: bool) -> io::Result<PathBuf> {
        let mut pending: Vec<std::ffi::OsString> = rel
            .components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        let mut current: Vec<std::ffi::OsString> = Vec::new();
        let mut followed = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            let mut host = self.root.clone();
            host.extend(&current);
            host.push(&part);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(io::Error::other("too many levels of symbolic links"));
                    }
                    let target = fs::read_link(&host)?;
                    if target.is_absolute() {
                        current.clear();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => pending.push(n.to_owned()),
                            Component::ParentDir => pending.push("..".into()),
                            _ => {}
                        }
                    }
                }
                Ok(m) if m.is_dir() => current.push(part),
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", host.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    make_dir(&host)?;
                    current.push(part);
                }
                Err(e) => return Err(e),
            }
        }
        let mut host = self.root.clone();
        host.extend(&current);
        Ok(host)
    }
}

/// Copies `from` to `to` through `buf` (grown to [`WRITE_CHUNK`] once, then reused): each
/// write is a full chunk, or the file's end, not whatever one read of the decoder returned.
fn copy_file(from: &mut impl Read, to: &mut impl io::Write, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.len() < WRITE_CHUNK {
        buf.resize(WRITE_CHUNK, 0);
    }
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        to.write_all(&buf[..filled])?;
        if filled < buf.len() {
            return Ok(());
        }
    }
}

/// `path` as plain relative components, or `None` if `..` would climb above the start
/// (which no honest layer writes).
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn make_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// Removes a file, symlink (never its target) or directory tree; missing is fine.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // A directory without owner write/exec permission could not be emptied.
            make_removable(path)?;
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_removable(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.permissions().mode() & 0o700 != 0o700 {
        fs::set_permissions(
            dir,
            fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
        )?;
    }
    for child in fs::read_dir(dir)? {
        let child = child?;
        if child.file_type()?.is_dir() {
            make_removable(&child.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn raw(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, link: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(kind);
        // set_path refuses `..`, which is exactly what a hostile layer would send.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    }

    #[test]
    fn whiteouts_opaque_dirs_and_hard_links() {
        let root = tempfile::tempdir().unwrap();
        let mut u = Unpacker::new(root.path());
        let l1 = layer(|b| {
            raw(b, tar::EntryType::Directory, "etc/", "");
            file(b, "etc/os-release", b"ID=lower\n");
            file(b, "etc/gone", b"x");
            raw(b, tar::EntryType::Directory, "opt/", "");
            file(b, "opt/a", b"a");
            file(b, "opt/b", b"b");
        });
        u.apply("l1", &l1[..]).unwrap();
        let l2 = layer(|b| {
            file(b, "etc/.wh.gone", b"");
            file(b, "opt/c", b"c");
            file(b, "opt/.wh..wh..opq", b"");
            file(b, "etc/os-release", b"ID=upper\n");
            raw(b, tar::EntryType::Link, "etc/again", "etc/os-release");
        });
        u.apply("l2", &l2[..]).unwrap();
        u.finish().unwrap();
        let r = root.path();
        assert!(!r.join("etc/gone").exists());
        assert_eq!(
            fs::read_to_string(r.join("etc/os-release")).unwrap(),
            "ID=upper\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/again")).unwrap(),
            "ID=upper\n"
        );
        // Opaque: lower a and b gone, this layer's c kept.
        let mut names: Vec<_> = fs::read_dir(r.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn nothing_escapes_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        let victim = outer.path().join("victim");
        fs::write(&victim, "keep").unwrap();

        // A symlink pointing out, then writes through it: land inside the root.
        let mut u = Unpacker::new(&root);
        let l = layer(|b| {
            raw(b, tar::EntryType::Symlink, "out", "/../../..");
            raw(b, tar::EntryType::Symlink, "rel", "../../");
            file(b, "out/victim", b"owned");
            file(b, "rel/victim2", b"owned");
        });
        u.apply("l", &l[..]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(root.join("victim")).unwrap(), "owned");
        assert_eq!(fs::read_to_string(root.join("victim2")).unwrap(), "owned");

        // `..` above the root, and a hard link to a host file: refused, named.
        let mut u = Unpacker::new(&root);
        let l = layer(|b| raw(b, tar::EntryType::Regular, "../victim", ""));
        let e = u.apply("evil", &l[..]).unwrap_err().to_string();
        assert!(
            e.contains("evil") && e.contains("leaves the image root"),
            "{e}"
        );
        let l = layer(|b| raw(b, tar::EntryType::Link, "x", "../victim"));
        assert!(u.apply("evil", &l[..]).is_err());
        // Through a symlink, a hard link target resolves inside the root too.
        let l = layer(|b| raw(b, tar::EntryType::Link, "y", "out/victim"));
        u.apply("l3", &l[..]).unwrap();
        assert_eq!(fs::read_to_string(root.join("y")).unwrap(), "owned");
        // A whiteout through the escaping symlink deletes nothing outside.
        let l = layer(|b| file(b, "out/.wh.victim", b""));
        u.apply("l4", &l[..]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!root.join("victim").exists());
    }

    #[test]
    fn files_larger_than_a_write_chunk_and_empty_files_are_written_whole() {
        let root = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..WRITE_CHUNK * 5 / 2 + 7)
            .map(|i| (i % 251) as u8)
            .collect();
        let exact = vec![7u8; WRITE_CHUNK];
        let l = layer(|b| {
            file(b, "big", &big);
            file(b, "empty", b"");
            file(b, "exact", &exact);
            file(b, "small", b"after");
        });
        let mut u = Unpacker::new(root.path());
        u.apply("l", &l[..]).unwrap();
        let r = root.path();
        assert_eq!(fs::read(r.join("big")).unwrap(), big);
        assert_eq!(fs::read(r.join("empty")).unwrap(), b"");
        assert_eq!(fs::read(r.join("exact")).unwrap(), exact);
        assert_eq!(fs::read(r.join("small")).unwrap(), b"after");
    }

    #[test]
    fn a_layer_that_unpacks_past_the_limit_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut u = Unpacker::with_limit(root.path(), 1000);
        let l = layer(|b| {
            file(b, "a", &[0u8; 600]);
            file(b, "b", &[0u8; 600]);
        });
        let e = u.apply("big", &l[..]).unwrap_err().to_string();
        assert!(
            e.contains("more than 1000 bytes") && e.contains("\"b\""),
            "{e}"
        );
    }

    #[test]
    fn compression_is_recognised() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
    }
}
