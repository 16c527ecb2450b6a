//! `quorum ui`: the web dashboard (`quorum_ui`) on the relays and Blossom servers given.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::UiArgs;
use crate::shutdown::Shutdown;

pub async fn run(args: UiArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::install().context("cannot install signal handlers")?;
    let relays = super::relay_urls(&args.relays)?;
    let blossom = blossom_urls(&args.blossom)?;
    serve(relays, blossom, args.listen, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Parses `--blossom` URLs, naming the bad one; each gets a trailing `/` so blob paths join.
pub(crate) fn blossom_urls(urls: &[String]) -> anyhow::Result<Vec<url::Url>> {
    urls.iter()
        .map(|text| {
            let with_slash = if text.ends_with('/') {
                text.clone()
            } else {
                format!("{text}/")
            };
            url::Url::parse(&with_slash)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .with_context(|| format!("--blossom {text:?} is not an http:// or https:// URL"))
        })
        .collect()
}

/// Serves the dashboard on `listen` until `shutdown`, printing its address once it listens.
pub(crate) async fn serve(
    relays: Vec<quorum_proto::nostr::RelayUrl>,
    blossom: Vec<url::Url>,
    listen: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("no local address")?;
    let dashboard = quorum_ui::Dashboard::connect(quorum_ui::UiConfig { relays, blossom })
        .await
        .context("cannot connect to the relays")?;
    super::announce(&format!("ui: http://{address}/"));
    quorum_ui::serve(dashboard, listener, shutdown.wait())
        .await
        .context("the dashboard stopped")
}
