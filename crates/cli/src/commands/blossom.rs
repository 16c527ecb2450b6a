//! `quorum blossom`: the Blossom server as a standalone daemon.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use quorum_blossom::{BlossomConfig, BlossomServer};
use quorum_proto::nostr::PublicKey;
use tokio::net::TcpListener;
use url::Url;

use crate::cli::{BlossomArgs, BlossomOptions};
use crate::shutdown::Shutdown;

pub async fn run(args: BlossomArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let (server, listener, url) =
        start(&args.options, &args.data, args.listen, args.public_url).await?;
    super::announce(&format!("blossom: {url}"));
    server
        .serve(listener, shutdown.wait())
        .await
        .context("Blossom server stopped with an error")?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the listener first (so that port 0 resolves), then opens the store with the public
/// URL derived from the bound address unless one was given. Shared with `quorum up`.
pub async fn start(
    options: &BlossomOptions,
    data: &Path,
    listen: SocketAddr,
    public_url: Option<Url>,
) -> anyhow::Result<(BlossomServer, TcpListener, Url)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another server using it?)"))?;
    let addr = listener.local_addr().context("listener has no address")?;
    let public_url = match public_url {
        Some(url) => url,
        None => Url::parse(&format!("http://{addr}/")).context("bound address is not a URL")?,
    };
    let config = config(options, public_url.clone())?;
    let server = BlossomServer::open(config, data)
        .await
        .with_context(|| format!("cannot open the blob store in {}", data.display()))?;
    Ok((server, listener, public_url))
}

fn config(options: &BlossomOptions, public_url: Url) -> anyhow::Result<BlossomConfig> {
    let allowed_uploaders = if options.allowed_uploaders.is_empty() {
        None
    } else {
        let keys = options
            .allowed_uploaders
            .iter()
            .map(|text| {
                PublicKey::parse(text).with_context(|| {
                    format!("--allow-uploader {text:?} is neither an npub nor 64 hex characters")
                })
            })
            .collect::<anyhow::Result<HashSet<_>>>()?;
        Some(keys)
    };
    Ok(BlossomConfig {
        public_url: Some(public_url),
        max_blob_bytes: options.max_blob_size.as_u64(),
        allowed_uploaders,
        require_auth_for_upload: !options.anonymous_uploads,
        allow_private_mirror_targets: options.allow_private_mirror,
        quota: quorum_blossom::Quota {
            max_bytes: options.quota_bytes.map(|size| size.as_u64()),
            max_blobs: options.quota_blobs,
        },
        min_free_bytes: options.min_free_space.as_u64(),
        require_auth_for_list: options.private_list,
        oci_credentials: options
            .oci_credentials
            .as_deref()
            .map(|text| {
                quorum_blossom::oci::OciCredentials::parse(text)
                    .context("--oci-credentials must be USER:PASSWORD, both non-empty")
            })
            .transpose()?,
        ..BlossomConfig::default()
    })
}
