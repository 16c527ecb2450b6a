//! `quorum image push`: a root filesystem or OCI layout made into an image on Blossom.

use std::process::ExitCode;

use anyhow::Context;

use quorum_oci::unpack::Compression;

use crate::cli::{ImageCommand, ImagePushArgs, LayerCompression};

pub async fn run(command: ImageCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Push(args) => push(args).await,
    }
}

async fn push(args: ImagePushArgs) -> anyhow::Result<ExitCode> {
    let keys = match &args.key {
        Some(path) => quorum_dvm::keyfile::load_or_create(path)?,
        None => quorum_proto::nostr::Keys::generate(),
    };
    let work = tempfile::tempdir().context("cannot create a temp dir")?;
    let input = args.input.clone();
    let out = work.path().to_path_buf();
    let compression = match args.compression {
        LayerCompression::Zstd => Compression::Zstd,
        LayerCompression::Gzip => Compression::Gzip,
        LayerCompression::None => Compression::None,
    };
    let image = tokio::task::spawn_blocking(move || {
        quorum_oci::build::build_with(&input, &out, compression)
    })
    .await
    .context("building the image crashed")?
    .with_context(|| format!("cannot make an image of {}", args.input.display()))?;
    let reference = image.reference(&args.name)?;
    let client = quorum_blossom::client::BlossomClient::new(keys);
    quorum_oci::build::push(&image, &client, &args.blossom).await?;
    eprintln!(
        "pushed {} blobs ({} bytes) to {}",
        image.blobs.len(),
        image.size(),
        args.blossom
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    super::announce(&reference.to_string());
    Ok(ExitCode::SUCCESS)
}
