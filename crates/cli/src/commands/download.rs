//! Downloads of blobs a run names (released artifacts, verification bundles): from the first
//! URL that serves exactly the expected bytes (re-hashed on the way, renamed into place only
//! when they match), with a progress bar when stderr is a terminal.

use std::path::Path;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use quorum_blossom::client::BlossomClient;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nostr::Keys;

/// Downloads `sha` into `dest` from the first of `urls` that serves it; `label` names the
/// file on the progress bar. Returns the size, or every URL's failure.
pub(crate) async fn fetch_verified(
    sha: Sha256Hex,
    urls: &[String],
    dest: &Path,
    label: &str,
    show_progress: bool,
) -> anyhow::Result<u64> {
    // Anonymous GETs: a throwaway key, never the user's.
    let client = BlossomClient::new(Keys::generate());
    let bar = if show_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("a valid template"),
    );
    bar.set_message(label.to_string());
    let mut failures = Vec::new();
    for url in urls {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(err) => {
                failures.push(format!("{url}: {err}"));
                continue;
            }
        };
        let on_progress = |received: u64, total: Option<u64>| {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(received);
        };
        match client
            .download_url_with_progress(&parsed, sha, dest, &on_progress)
            .await
        {
            Ok(size) => {
                bar.finish_and_clear();
                return Ok(size);
            }
            Err(err) => failures.push(format!("{url}: {err}")),
        }
    }
    bar.abandon();
    bail!(
        "cannot download {label} ({sha}): {}",
        if failures.is_empty() {
            "the run names no URL for it".to_string()
        } else {
            failures.join("; ")
        }
    )
}
