//! Making an image without a container engine, and putting it on Blossom (`quorum image push`).
//!
//! Three inputs are understood:
//!
//! - a root filesystem **directory**: packed into one layer deterministically (entries
//!   sorted, owner 0:0, mtime 0, no time in a gzip header), so the same tree gives the same
//!   digest on every machine with the same compressor; zstd unless asked otherwise (see
//!   [`DEFAULT_LAYER_COMPRESSION`]);
//! - a root filesystem **tarball** (`.tar`, `.tar.gz`, `.tar.zst`, e.g. from `mmdebstrap`):
//!   used as the layer byte for byte;
//! - an **OCI image layout** directory (`oci-layout`, `index.json`, `blobs/sha256/…`, as
//!   `skopeo copy … oci:DIR` or `podman save --format oci-dir` write): its first manifest,
//!   config and layers as they are, so the digest is the one the layout already has.
//!
//! For the first two a config and manifest are written with `oci-spec`'s types. Every blob is
//! a file under `out` named by its sha256, which is also its Blossom address; [`push`] uploads
//! them (BUD-02, authorised like every upload of ours) and the manifest last, so a server that
//! has the manifest has the whole image.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageIndex, ImageManifest,
    ImageManifestBuilder, MediaType, RootFsBuilder,
};
use quorum_proto::image::{Digest, ImageRef};
use sha2::{Digest as _, Sha256};

use crate::OciError;
use crate::unpack::{Compression, layer_reader};

/// Default `PATH` of images made here, as Debian's.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a directory's layer is compressed unless asked otherwise: zstd (OCI image-spec 1.1,
/// pulled by containerd, podman, skopeo and Docker 23+). A runner pays for decompression on
/// every first fetch: for the Debian toolchain image of the tests a fifth less CPU than gzip
/// (`cargo bench -p quorum-oci --bench image`); it also packs about seven times faster.
pub const DEFAULT_LAYER_COMPRESSION: Compression = Compression::Zstd;

/// zstd's level for layers: its default, the level registries and buildkit use.
pub const ZSTD_LEVEL: i32 = 3;

/// One blob of a built image, on disk.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
}

/// An image ready to push: its blobs, manifest last.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The manifest digest: what `image:` pins.
    pub manifest: Digest,
    /// Config and layers first, the manifest last.
    pub blobs: Vec<BlobFile>,
}

impl BuiltImage {
    /// `NAME@sha256:…` for a pipeline, `name` being `[HOST[:PORT]/]path[:tag]`.
    pub fn reference(&self, name: &str) -> Result<ImageRef, OciError> {
        let mut r = ImageRef::parse_unpinned(name)
            .map_err(|e| OciError::Image(name.to_owned(), e.to_string()))?;
        r.digest = Some(self.manifest.clone());
        Ok(r)
    }

    /// Total bytes of all blobs.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Builds an image from `input` (a directory, tarball or OCI layout; see the module docs),
/// writing new blobs under `out`; a directory's layer is compressed with
/// [`DEFAULT_LAYER_COMPRESSION`].
pub fn build(input: &Path, out: &Path) -> Result<BuiltImage, OciError> {
    build_with(input, out, DEFAULT_LAYER_COMPRESSION)
}

/// [`build`], a directory's layer compressed with `compression` (tarballs and layouts are
/// used as they are).
pub fn build_with(
    input: &Path,
    out: &Path,
    compression: Compression,
) -> Result<BuiltImage, OciError> {
    fs::create_dir_all(out).map_err(|e| OciError::io("creating", out, e))?;
    let meta = fs::metadata(input).map_err(|e| OciError::io("reading", input, e))?;
    if meta.is_dir() && input.join("index.json").is_file() && input.join("oci-layout").is_file() {
        return from_layout(input, false);
    }
    let (layer, diff_id) = if meta.is_dir() {
        pack_dir(input, out, compression)?
    } else {
        let compression = {
            let mut head = [0u8; 4];
            let mut f = fs::File::open(input).map_err(|e| OciError::io("opening", input, e))?;
            let n = f
                .read(&mut head)
                .map_err(|e| OciError::io("reading", input, e))?;
            Compression::sniff(&head[..n])
        };
        let diff_id = hash_reader(layer_reader(input, compression)?)
            .map_err(|e| OciError::io("reading", input, e))?;
        let (digest, size) = hash_file(input)?;
        let path = out.join(digest.hex());
        fs::copy(input, &path).map_err(|e| OciError::io("copying", input, e))?;
        let media = match compression {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
            Compression::None => MediaType::ImageLayer,
        };
        ((BlobFile { digest, size, path }, media), diff_id)
    };
    let ((layer, layer_media), diff_id) = (layer, diff_id);
    let bad = |e: oci_spec::OciSpecError| OciError::Image("new image".into(), e.to_string());
    let config = ImageConfigurationBuilder::default()
        .architecture(crate::cache::oci_arch())
        .os("linux")
        .config(
            ConfigBuilder::default()
                .env(vec![DEFAULT_PATH.to_owned()])
                .build()
                .map_err(bad)?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(bad)?,
        )
        .build()
        .map_err(bad)?;
    let config_json = serde_json::to_vec(&config).expect("serialisable");
    let config_blob = write_blob(out, &config_json)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, &config_blob)?)
        .layers(vec![descriptor(layer_media, &layer)?])
        .build()
        .map_err(bad)?;
    let manifest_json = serde_json::to_vec(&manifest).expect("serialisable");
    let manifest_blob = write_blob(out, &manifest_json)?;
    Ok(BuiltImage {
        manifest: manifest_blob.digest.clone(),
        blobs: vec![config_blob, layer, manifest_blob],
    })
}

fn descriptor(media: MediaType, blob: &BlobFile) -> Result<Descriptor, OciError> {
    let digest: oci_spec::image::Digest = blob
        .digest
        .to_string()
        .parse()
        .map_err(|e: oci_spec::OciSpecError| OciError::Image("new image".into(), e.to_string()))?;
    Ok(Descriptor::new(media, blob.size, digest))
}

/// The image of an OCI layout a build wrote (an `oci:` artifact): its only manifest, which
/// must be an OCI image manifest, with its config and layers, each re-hashed.
///
/// The layout lies in a work dir a job controlled, and the runner reads it on the host, so
/// nothing in it may be a symlink (a job could point a blob at a host file) and
/// `index.json` must name exactly one manifest (what builders agree on must be unambiguous).
pub fn read_layout(dir: &Path) -> Result<BuiltImage, OciError> {
    from_layout(dir, true)
}

/// The first (`strict`: the only) manifest of an OCI layout, with its config and layers, as
/// they are. Symlinks are never followed inside the layout.
fn from_layout(dir: &Path, strict: bool) -> Result<BuiltImage, OciError> {
    let bad = |reason: String| OciError::Image(dir.display().to_string(), reason);
    for sub in ["blobs", "blobs/sha256"] {
        let path = dir.join(sub);
        let meta = fs::symlink_metadata(&path).map_err(|e| OciError::io("reading", &path, e))?;
        if !meta.is_dir() {
            return Err(bad(format!("{sub} is not a directory")));
        }
    }
    let index_path = dir.join("index.json");
    let index: ImageIndex = serde_json::from_slice(&read_regular(&index_path)?)
        .map_err(|e| bad(format!("index.json: {e}")))?;
    let first = match index.manifests().as_slice() {
        [] => return Err(bad("index.json lists no manifest".into())),
        [only] => only,
        [first, ..] if !strict => first,
        more => {
            return Err(bad(format!(
                "index.json lists {} manifests; an artifact layout holds one image",
                more.len()
            )));
        }
    };
    if strict && first.media_type() != &MediaType::ImageManifest {
        return Err(bad(format!(
            "index.json names a {}, not an OCI image manifest ({})",
            first.media_type(),
            MediaType::ImageManifest
        )));
    }
    let blob = |d: &str| -> Result<BlobFile, OciError> {
        let digest = Digest::parse(d).ok_or_else(|| bad(format!("{d} is not a sha256 digest")))?;
        let path = dir.join("blobs/sha256").join(digest.hex());
        let (actual, size) = hash_regular(&path)?;
        if actual != digest {
            return Err(bad(format!("blob {digest} hashes to {actual}")));
        }
        Ok(BlobFile { digest, size, path })
    };
    let manifest_blob = blob(first.digest().as_ref())?;
    let manifest: ImageManifest = serde_json::from_slice(&read_regular(&manifest_blob.path)?)
        .map_err(|e| bad(format!("manifest {}: {e}", manifest_blob.digest)))?;
    if strict && manifest.media_type().as_ref() != Some(&MediaType::ImageManifest) {
        return Err(bad(format!(
            "manifest {} has no mediaType {}",
            manifest_blob.digest,
            MediaType::ImageManifest
        )));
    }
    let mut blobs = vec![blob(manifest.config().digest().as_ref())?];
    for layer in manifest.layers() {
        blobs.push(blob(layer.digest().as_ref())?);
    }
    Ok(BuiltImage {
        manifest: manifest_blob.digest.clone(),
        blobs: blobs.into_iter().chain([manifest_blob]).collect(),
    })
}

/// Opens a regular file, refusing a symlink in its last component.
fn open_regular(path: &Path) -> Result<fs::File, OciError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| OciError::io("opening", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| OciError::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(OciError::Image(
            path.display().to_string(),
            "not a regular file".into(),
        ));
    }
    Ok(file)
}

fn read_regular(path: &Path) -> Result<Vec<u8>, OciError> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .read_to_end(&mut bytes)
        .map_err(|e| OciError::io("reading", path, e))?;
    Ok(bytes)
}

fn hash_regular(path: &Path) -> Result<(Digest, u64), OciError> {
    hash_open(open_regular(path)?, path)
}

/// A directory as one deterministic layer, compressed with `compression`; returns the blob
/// and the diff id.
fn pack_dir(
    dir: &Path,
    out: &Path,
    compression: Compression,
) -> Result<((BlobFile, MediaType), Digest), OciError> {
    let tmp = out.join(".layer.tmp");
    let file = fs::File::create(&tmp).map_err(|e| OciError::io("creating", &tmp, e))?;
    let (writer, media) = match compression {
        Compression::Gzip => (
            LayerWriter::Gzip(flate2::GzBuilder::new().write(file, flate2::Compression::default())),
            MediaType::ImageLayerGzip,
        ),
        Compression::Zstd => (
            LayerWriter::Zstd(
                zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)
                    .map_err(|e| OciError::io("compressing", &tmp, e))?,
            ),
            MediaType::ImageLayerZstd,
        ),
        Compression::None => (LayerWriter::Plain(file), MediaType::ImageLayer),
    };
    let mut diff = HashingWriter {
        inner: writer,
        hasher: Sha256::new(),
    };
    {
        let mut builder = tar::Builder::new(&mut diff);
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        let mut entries = Vec::new();
        walk(dir, Path::new(""), &mut entries).map_err(|e| OciError::io("reading", dir, e))?;
        let mut links: std::collections::HashMap<(u64, u64), PathBuf> = Default::default();
        for rel in entries {
            let host = dir.join(&rel);
            let meta =
                fs::symlink_metadata(&host).map_err(|e| OciError::io("reading", &host, e))?;
            let mut h = tar::Header::new_gnu();
            h.set_mode(meta.permissions().mode() & 0o7777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let err = |e| OciError::io("packing", &host, e);
            if meta.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                builder
                    .append_data(&mut h, &rel, io::empty())
                    .map_err(err)?;
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&host).map_err(err)?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                builder.append_link(&mut h, &rel, &target).map_err(err)?;
            } else if meta.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        builder.append_link(&mut h, &rel, first).map_err(err)?;
                        continue;
                    }
                    links.insert((meta.dev(), meta.ino()), rel.clone());
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.len());
                let f = fs::File::open(&host).map_err(err)?;
                builder.append_data(&mut h, &rel, f).map_err(err)?;
            }
            // Devices, FIFOs and sockets are not part of a build image (see `unpack`).
        }
        builder
            .finish()
            .map_err(|e| OciError::io("packing", dir, e))?;
    }
    let diff_id = Digest::from_hex(&hex::encode(diff.hasher.finalize())).expect("hex");
    diff.inner
        .finish()
        .and_then(|f| f.sync_all())
        .map_err(|e| OciError::io("writing", &tmp, e))?;
    let (digest, size) = hash_file(&tmp)?;
    let path = out.join(digest.hex());
    fs::rename(&tmp, &path).map_err(|e| OciError::io("renaming", &tmp, e))?;
    Ok(((BlobFile { digest, size, path }, media), diff_id))
}

/// The compressor a directory's layer is written through.
enum LayerWriter {
    Gzip(flate2::write::GzEncoder<fs::File>),
    Zstd(zstd::stream::write::Encoder<'static, fs::File>),
    Plain(fs::File),
}

impl LayerWriter {
    /// Ends the compressed stream; the file it was written to.
    fn finish(self) -> io::Result<fs::File> {
        match self {
            LayerWriter::Gzip(w) => w.finish(),
            LayerWriter::Zstd(w) => w.finish(),
            LayerWriter::Plain(f) => Ok(f),
        }
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LayerWriter::Gzip(w) => w.write(buf),
            LayerWriter::Zstd(w) => w.write(buf),
            LayerWriter::Plain(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LayerWriter::Gzip(w) => w.flush(),
            LayerWriter::Zstd(w) => w.flush(),
            LayerWriter::Plain(f) => f.flush(),
        }
    }
}

/// Every path under `root` (relative), parents before children, siblings sorted by name.
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let meta = fs::symlink_metadata(root.join(&child))?;
        out.push(child.clone());
        if meta.is_dir() {
            walk(root, &child, out)?;
        }
    }
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_blob(out: &Path, bytes: &[u8]) -> Result<BlobFile, OciError> {
    let digest = Digest::from_hex(&hex::encode(Sha256::digest(bytes))).expect("hex");
    let path = out.join(digest.hex());
    fs::write(&path, bytes).map_err(|e| OciError::io("writing", &path, e))?;
    Ok(BlobFile {
        digest,
        size: bytes.len() as u64,
        path,
    })
}

fn hash_reader(mut r: impl Read) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    io::copy(&mut r, &mut hasher)?;
    Ok(Digest::from_hex(&hex::encode(hasher.finalize())).expect("hex"))
}

/// The sha256 and size of a file.
pub fn hash_file(path: &Path) -> Result<(Digest, u64), OciError> {
    hash_open(
        fs::File::open(path).map_err(|e| OciError::io("opening", path, e))?,
        path,
    )
}

fn hash_open(f: fs::File, path: &Path) -> Result<(Digest, u64), OciError> {
    let size = f
        .metadata()
        .map_err(|e| OciError::io("reading", path, e))?
        .len();
    let digest =
        hash_reader(io::BufReader::new(f)).map_err(|e| OciError::io("reading", path, e))?;
    Ok((digest, size))
}

/// Uploads every blob of `image` to each server in `servers` (manifest last) with `client`;
/// fails if a server refuses one, naming server and blob.
pub async fn push(
    image: &BuiltImage,
    client: &quorum_blossom::client::BlossomClient,
    servers: &[url::Url],
) -> Result<(), OciError> {
    for server in servers {
        for blob in &image.blobs {
            let uploaded =
                client
                    .upload_file(server, &blob.path)
                    .await
                    .map_err(|e| OciError::Transport {
                        url: server.to_string(),
                        reason: format!("uploading {}: {e}", blob.digest),
                    })?;
            if uploaded.descriptor.sha256.to_string() != blob.digest.hex() {
                return Err(OciError::DigestMismatch {
                    digest: blob.digest.to_string(),
                    actual: uploaded.descriptor.sha256.to_string(),
                    source_url: server.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OCI layout of a one-file root, written by [`build`] and laid out as skopeo does.
    fn layout(dir: &Path) -> (PathBuf, BuiltImage) {
        let root = dir.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hello"), "hi\n").unwrap();
        let image = build(&root, &dir.join("made")).unwrap();
        let out = dir.join("layout");
        fs::create_dir_all(out.join("blobs/sha256")).unwrap();
        for blob in &image.blobs {
            fs::copy(&blob.path, out.join("blobs/sha256").join(blob.digest.hex())).unwrap();
        }
        let manifest = image.blobs.last().unwrap();
        let entry = format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
            MediaType::ImageManifest,
            manifest.digest,
            manifest.size
        );
        fs::write(
            out.join("index.json"),
            format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#),
        )
        .unwrap();
        fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        (out, image)
    }

    #[test]
    fn an_artifact_layout_is_read_with_every_blob_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let (out, image) = layout(dir.path());
        let read = read_layout(&out).unwrap();
        assert_eq!(read.manifest, image.manifest);
        assert_eq!(read.blobs.len(), 3);
        assert_eq!(read.blobs.last().unwrap().digest, image.manifest);
    }

    #[test]
    fn an_artifact_layout_with_a_symlink_a_second_manifest_or_a_bad_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (out, image) = layout(dir.path());
        let config = &image.blobs[0];
        let config_path = out.join("blobs/sha256").join(config.digest.hex());

        // A blob that is a symlink (to a host file with the same bytes, even) is refused.
        let elsewhere = dir.path().join("elsewhere");
        fs::rename(&config_path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &config_path).unwrap();
        let err = read_layout(&out).unwrap_err().to_string();
        assert!(err.contains(&config.digest.hex().to_string()), "{err}");
        // `quorum image push` of one's own layout does not care: it is not a job's output.
        fs::remove_file(&config_path).unwrap();
        fs::rename(&elsewhere, &config_path).unwrap();

        // A blob whose bytes are not its name.
        let good = fs::read(&config_path).unwrap();
        fs::write(&config_path, b"{}").unwrap();
        let err = read_layout(&out).unwrap_err().to_string();
        assert!(err.contains("hashes to"), "{err}");
        fs::write(&config_path, &good).unwrap();

        // Two manifests: which one the builders agree on would be ambiguous.
        let index = fs::read_to_string(out.join("index.json")).unwrap();
        let entry = &index[index.find("[{").unwrap() + 1..index.rfind("}]").unwrap() + 1];
        fs::write(
            out.join("index.json"),
            index.replace(entry, &format!("{entry},{entry}")),
        )
        .unwrap();
        let err = read_layout(&out).unwrap_err().to_string();
        assert!(err.contains("lists 2 manifests"), "{err}");
        assert!(
            build(&out, &dir.path().join("again")).is_ok(),
            "push takes the first"
        );
    }
}
