//! Saving an image fetched by digest as an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), the form `skopeo copy oci:DIR …` and `podman load` read:
//! how `quorum run --out` hands over an `oci:` artifact.
//!
//! Every blob comes through [`Fetcher`] (re-hashed as it arrives); the finished directory is
//! then read back with [`read_layout`], which re-hashes each blob once more and refuses
//! anything but one image manifest. The layout is written under a temporary name beside `dir`
//! and renamed into place, so `dir` is never a half layout.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageManifest, MediaType};
use quorum_proto::image::{Digest, ImageRef};

use crate::OciError;
use crate::build::{BuiltImage, read_layout};
use crate::cache::{MAX_LAYER_BYTES, MAX_LAYERS};
use crate::fetch::{BlobKind, Fetcher, MAX_MANIFEST_BYTES};

/// Fetches the image `image` pins (its manifest, config and layers, by digest) and writes it
/// as an OCI image layout at `dir`, which must not exist yet. Returns the image as read back.
pub async fn save_layout(
    fetcher: &Fetcher,
    image: &ImageRef,
    dir: &Path,
) -> Result<BuiltImage, OciError> {
    let digest = image.digest.clone().ok_or_else(|| {
        OciError::Image(
            image.to_string(),
            "an image is saved by digest, not by tag".into(),
        )
    })?;
    if fs::symlink_metadata(dir).is_ok() {
        return Err(OciError::io(
            "writing a layout at",
            dir,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let tmp = temporary_beside(dir);
    let written = write_layout(fetcher, image, &digest, &tmp).await;
    // Reading back re-hashes every blob (an image may be gigabytes): off the async threads.
    let (tmp_dir, dest) = (tmp.clone(), dir.to_path_buf());
    let result = match written {
        Ok(()) => tokio::task::spawn_blocking(move || {
            let read = read_layout(&tmp_dir)?;
            if read.manifest != digest {
                return Err(OciError::BadManifest {
                    digest: digest.to_string(),
                    reason: format!("the saved layout names {}", read.manifest),
                });
            }
            fs::rename(&tmp_dir, &dest).map_err(|e| OciError::io("renaming", &tmp_dir, e))?;
            let mut saved = read;
            for blob in &mut saved.blobs {
                blob.path = dest.join("blobs/sha256").join(blob.digest.hex());
            }
            Ok(saved)
        })
        .await
        .unwrap_or_else(|e| Err(OciError::io("checking", &tmp, std::io::Error::other(e)))),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// `dir`'s sibling `.NAME.partial`, where the layout is written before it is renamed.
fn temporary_beside(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    dir.with_file_name(format!(".{name}.partial"))
}

async fn write_layout(
    fetcher: &Fetcher,
    image: &ImageRef,
    digest: &Digest,
    dir: &Path,
) -> Result<(), OciError> {
    let _ = fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| OciError::io("creating", &blobs, e))?;
    let manifest_path = blobs.join(digest.hex());
    let fetched = fetcher
        .fetch(
            image,
            digest,
            BlobKind::Manifest,
            MAX_MANIFEST_BYTES,
            &manifest_path,
        )
        .await?;
    let bytes = fs::read(&manifest_path).map_err(|e| OciError::io("reading", &manifest_path, e))?;
    let bad = |reason: String| OciError::BadManifest {
        digest: digest.to_string(),
        reason,
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an image manifest: {e}")))?;
    if manifest.layers().len() > MAX_LAYERS {
        return Err(bad(format!("more than {MAX_LAYERS} layers")));
    }
    let config = std::iter::once((manifest.config(), MAX_MANIFEST_BYTES));
    let layers = manifest.layers().iter().map(|l| (l, MAX_LAYER_BYTES));
    for (descriptor, limit) in config.chain(layers) {
        let blob = Digest::parse(descriptor.digest().as_ref())
            .ok_or_else(|| bad(format!("{} is not a sha256 digest", descriptor.digest())))?;
        if descriptor.size() > limit {
            return Err(bad(format!(
                "blob {blob} declares {} bytes",
                descriptor.size()
            )));
        }
        let path = blobs.join(blob.hex());
        fetcher
            .fetch(image, &blob, BlobKind::Blob, descriptor.size(), &path)
            .await?;
    }
    let media = manifest
        .media_type()
        .clone()
        .unwrap_or(MediaType::ImageManifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media.to_string(),
            "digest": digest.to_string(),
            "size": fetched.size,
        }],
    });
    let index_path = dir.join("index.json");
    fs::write(
        &index_path,
        serde_json::to_vec(&index).expect("serialisable"),
    )
    .map_err(|e| OciError::io("writing", &index_path, e))?;
    let marker = dir.join("oci-layout");
    fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| OciError::io("writing", &marker, e))?;
    Ok(())
}

/// [`save_layout`] for an image whose manifest is the Blossom blob at `urls` (`…/<sha256>`,
/// as a release or step report lists it): the config and layers are asked of the same
/// servers, by their sha256.
pub async fn save_blossom_layout(
    urls: &[url::Url],
    manifest: &Digest,
    dir: &Path,
) -> Result<BuiltImage, OciError> {
    let servers: Vec<url::Url> = urls
        .iter()
        .filter_map(|u| u.join("./").ok())
        .filter(|base| matches!(base.scheme(), "http" | "https"))
        .collect();
    let Some(first) = servers.first() else {
        return Err(OciError::NotFound {
            digest: manifest.to_string(),
            tried: "no http(s) URL was given".into(),
        });
    };
    // Only a name for the registry fallback, which is the first server's own `/v2/`.
    let host = match first.port() {
        Some(port) => format!("{}:{port}", first.host_str().unwrap_or_default()),
        None => first.host_str().unwrap_or_default().to_owned(),
    };
    let image = ImageRef::parse(&format!("{host}/quorum/artifact@{manifest}"))
        .map_err(|e| OciError::Image(manifest.to_string(), e.to_string()))?;
    save_layout(&Fetcher::new(servers, Vec::new()), &image, dir).await
}
