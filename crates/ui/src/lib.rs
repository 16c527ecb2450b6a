//! The live web dashboard of Quorum CI (`quorum ui`, `quorum up --ui`).
//!
//! It reads everything from the relays and Blossom servers it is given and keeps nothing of
//! its own, so it works on any network: runs (followed with `quorum follow`'s code,
//! `quorum_router::follow`), their DAGs, live log tails and full logs, each quorum's
//! commit-reveal, tally, attestation and mandate (protocol §15), approval gates, releases with
//! the verdict of `quorum verify`'s own code (`quorum_router::verify`), and the DVM market.
//!
//! Pages are rendered on the server ([`views`]); each one's `main` is sent again over
//! Server-Sent Events whenever it changes, and one small embedded script swaps it in (no
//! polling in the page, no framework, no CDN: [`assets`]). Everything from the network is
//! escaped ([`html`]), and a Content-Security-Policy allows no inline script.

pub mod dag;
pub mod html;
pub mod hub;
pub mod views;

mod assets;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt as _;
use quorum_dvm::client::{ClientError, JobClient};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Event, EventId, Filter, Keys, RelayUrl};
use quorum_proto::step::BlobRef;
use quorum_router::verify::{self, Expectation};
use sha2::{Digest, Sha256};
use url::Url;

pub use routes::router;
pub use views::View;

/// The most verdicts kept; beyond, they are computed again when asked.
const MAX_CACHED: usize = 1000;
/// The most full logs kept.
const MAX_CACHED_LOGS: usize = 32;
/// How long one relay query of a page may take.
const FETCH: Duration = Duration::from_secs(4);
/// The largest full log shown (bigger ones are linked, not inlined).
const MAX_LOG_BYTES: usize = 4 << 20;
/// The largest file re-hashed for a release's mirror check.
const MAX_ARTIFACT_BYTES: usize = 256 << 20;
/// A verdict is computed again after this long (relays change: a mandate expires, a newer
/// one revokes, a mirror appears).
const VERDICT_TTL: Duration = Duration::from_secs(60);
/// ... and sooner while it fails or names no mirror: a release's events arrive one by one.
const UNSETTLED_VERDICT_TTL: Duration = Duration::from_secs(5);

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("cannot reach the relays: {0}")]
    Relays(#[from] ClientError),
}

/// Where the dashboard reads from.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub relays: Vec<RelayUrl>,
    /// Blossom servers asked first for logs and released files, by sha256.
    pub blossom: Vec<Url>,
}

/// The dashboard: a read-only client of the relays, what it follows, and its caches.
#[derive(Clone)]
pub struct Dashboard {
    pub hub: hub::Hub,
    pub relays: Vec<RelayUrl>,
    blossom: Vec<Url>,
    http: reqwest::Client,
    logs: Arc<Mutex<HashMap<String, String>>>,
    verdicts: Arc<Mutex<HashMap<(EventId, String), VerdictSlot>>>,
    /// (URL, sha256) pairs whose bytes were checked.
    mirrors_ok: Arc<Mutex<std::collections::HashSet<(String, String)>>>,
    /// Set when the server stops, so that live streams end and the server can.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

/// A file's verdict: the last one computed (and when), and whether a new one is under way.
#[derive(Default)]
struct VerdictSlot {
    last: Option<(Instant, Box<views::FileVerdict>)>,
    computing: bool,
}

impl Dashboard {
    /// Connects to the relays (with a throwaway key: the dashboard signs nothing) and starts
    /// following the runs on them.
    pub async fn connect(config: UiConfig) -> Result<Dashboard, UiError> {
        let client = JobClient::connect(&config.relays, Keys::generate()).await?;
        let hub = hub::Hub::new(Arc::new(client));
        hub.spawn();
        Ok(Dashboard {
            hub,
            relays: config.relays,
            blossom: config.blossom,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // A server named by an event must not bounce us elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a default HTTP client builds"),
            logs: Arc::default(),
            verdicts: Arc::default(),
            mirrors_ok: Arc::default(),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Where the blob `sha` may be: our Blossom servers first, then the URLs an event names
    /// (whatever they serve is re-hashed, so a wrong or hostile URL shows nothing).
    /// One URL per blob and server: `/<sha256>` and `/<sha256>.txt` on one server are the same
    /// copy (BUD-01), shown in the spelling the event gives.
    fn blob_urls(&self, sha: &str, named: &[String]) -> Vec<String> {
        let ours: Vec<String> = self
            .blossom
            .iter()
            .filter_map(|server| server.join(sha).ok())
            .map(|u| u.to_string())
            .collect();
        merge_blob_urls(ours, named)
    }

    /// Downloads `url` (at most `max` bytes) and checks that it hashes to `sha`.
    async fn download(&self, url: &str, sha: &Sha256Hex, max: usize) -> Result<Vec<u8>, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("cut off: {e}"))?
        {
            if bytes.len() + chunk.len() > max {
                return Err(format!("larger than {max} bytes"));
            }
            bytes.extend_from_slice(&chunk);
        }
        let got = Sha256Hex::from_bytes(Sha256::digest(&bytes).into());
        if got != *sha {
            return Err(format!("serves other bytes (sha256 {got})"));
        }
        Ok(bytes)
    }

    /// A job's full log from Blossom, re-hashed, as text.
    pub async fn full_log(&self, log: &BlobRef) -> Result<String, String> {
        if let Some(text) = self
            .logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&log.sha256)
        {
            return Ok(text.clone());
        }
        let sha = Sha256Hex::parse(&log.sha256)
            .map_err(|_| "the log's sha256 is malformed".to_string())?;
        if log.size as usize > MAX_LOG_BYTES {
            return Err(format!(
                "it is {} bytes; download it from {}",
                log.size,
                log.urls.join(", ")
            ));
        }
        let mut failures = Vec::new();
        for url in self.blob_urls(&log.sha256, &log.urls) {
            match self.download(&url, &sha, MAX_LOG_BYTES).await {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
                    // Logs are up to 4 MiB: keep the last few dozen, not every one ever shown.
                    if logs.len() >= MAX_CACHED_LOGS {
                        logs.clear();
                    }
                    logs.insert(log.sha256.clone(), text.clone());
                    return Ok(text);
                }
                Err(err) => failures.push(format!("{url}: {err}")),
            }
        }
        Err(if failures.is_empty() {
            "no Blossom server holds it".into()
        } else {
            failures.join("; ")
        })
    }

    /// The verdict on a released file, once computed (computing starts on the first ask; the
    /// live page shows it when it is ready).
    pub fn verdict(
        &self,
        repo: &RepoCoordinate,
        binding: &EventId,
        sha: &Sha256Hex,
    ) -> Option<views::FileVerdict> {
        let slot_key = (*binding, sha.to_hex());
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= MAX_CACHED {
            verdicts.retain(|_, slot| slot.computing);
        }
        let slot = verdicts.entry(slot_key.clone()).or_default();
        let shown = slot.last.as_ref().map(|(_, verdict)| (**verdict).clone());
        let fresh = slot.last.as_ref().is_some_and(|(at, verdict)| {
            let settled = verdict.verification.ok && verdict.mirrors.iter().any(|(_, r)| r.is_ok());
            at.elapsed()
                < if settled {
                    VERDICT_TTL
                } else {
                    UNSETTLED_VERDICT_TTL
                }
        });
        if fresh || slot.computing {
            return shown;
        }
        slot.computing = true;
        drop(verdicts);
        let dashboard = self.clone();
        let (repo, sha) = (repo.clone(), *sha);
        tokio::spawn(async move {
            let verdict = dashboard.compute_verdict(&repo, &sha).await;
            let mut verdicts = dashboard.verdicts.lock().unwrap_or_else(|e| e.into_inner());
            verdicts.insert(
                slot_key,
                VerdictSlot {
                    last: Some((Instant::now(), Box::new(verdict))),
                    computing: false,
                },
            );
            drop(verdicts);
            dashboard.hub.touch();
        });
        // The last verdict is shown while a new one is computed.
        shown
    }

    async fn compute_verdict(&self, repo: &RepoCoordinate, sha: &Sha256Hex) -> views::FileVerdict {
        let expect = Expectation {
            repo: Some(repo.clone()),
            ..Expectation::default()
        };
        let mut pool = Vec::new();
        let mut bundles = Vec::new();
        let warnings =
            verify::gather(&self.hub.client, sha, &expect, &mut pool, &mut bundles).await;
        let mut verification = verify::judge(sha, &pool, &expect);
        verification.bundles = bundles.iter().map(Sha256Hex::to_hex).collect();
        match warnings {
            Ok(unread) => verification.warnings.extend(unread),
            Err(err) => verification
                .problems
                .push(format!("cannot read the relays: {err}")),
        }
        let mut mirrors = Vec::new();
        for url in self.blob_urls(&sha.to_hex(), &verification.urls) {
            // A URL that served these bytes once is not downloaded again at every verdict.
            let checked = (url.clone(), sha.to_hex());
            let known = self
                .mirrors_ok
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&checked);
            let result = if known {
                Ok(())
            } else {
                self.download(&url, sha, MAX_ARTIFACT_BYTES)
                    .await
                    .map(|_| ())
            };
            if result.is_ok() && !known {
                let mut ok = self.mirrors_ok.lock().unwrap_or_else(|e| e.into_inner());
                if ok.len() >= MAX_CACHED {
                    ok.clear();
                }
                ok.insert(checked);
            }
            // Our own servers that do not hold it are not the release's mirrors: say nothing.
            if result.is_err() && !verification.urls.contains(&url) {
                continue;
            }
            mirrors.push((url, result));
        }
        views::FileVerdict {
            verification,
            mirrors,
        }
    }
}

/// Events matching `filter` on the dashboard's relays; a relay problem shows as nothing found
/// (and is logged): a page keeps rendering what it can.
pub(crate) async fn fetch(client: &JobClient, filter: Filter) -> Vec<Event> {
    match client.fetch(filter, FETCH).await {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!("cannot read the relays: {err}");
            Vec::new()
        }
    }
}

/// Serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    dashboard: Dashboard,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = dashboard.closing.clone();
    // Live updates are small writes: without TCP_NODELAY each waits for the browser's delayed
    // ACK of the one before.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {err}");
        }
    });
    axum::serve(listener, router(dashboard))
        .with_graceful_shutdown(async move {
            shutdown.await;
            closing.send_replace(true);
        })
        .await
}

/// `ours` followed by the http(s) URLs of `named` that are not already a copy in `ours`; a named
/// URL replaces the one of ours it spells differently (with a file extension).
fn merge_blob_urls(mut urls: Vec<String>, named: &[String]) -> Vec<String> {
    for url in named {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            continue;
        }
        let bare = without_extension(url);
        match urls
            .iter()
            .position(|known| without_extension(known) == bare)
        {
            Some(i) => urls[i] = url.clone(),
            None => urls.push(url.clone()),
        }
    }
    urls
}

/// A blob URL without the file extension of its last path segment.
fn without_extension(url: &str) -> &str {
    let last = url.rfind('/').map_or(0, |i| i + 1);
    match url[last..].find('.') {
        Some(dot) => &url[..last + dot],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::merge_blob_urls;

    #[test]
    fn a_blob_with_and_without_its_extension_on_one_server_is_one_mirror() {
        let sha = "3d2863d3fc4a9fcf8665fd1e1878a79cea126e150b565a2ac3e35b656a0a271c";
        let ours = vec![format!("http://127.0.0.1:1/{sha}")];
        let named = vec![
            format!("http://127.0.0.1:1/{sha}.txt"),
            format!("http://127.0.0.1:1/{sha}"),
            format!("https://cdn.example/{sha}.txt"),
            format!("ftp://cdn.example/{sha}"),
        ];
        assert_eq!(
            merge_blob_urls(ours, &named),
            vec![
                format!("http://127.0.0.1:1/{sha}"),
                format!("https://cdn.example/{sha}.txt"),
            ]
        );
        // Another server's copy, or the same server under another path, stays separate.
        let ours = vec![format!("http://127.0.0.1:1/{sha}")];
        let named = vec![
            format!("http://127.0.0.1:2/{sha}.txt"),
            format!("http://127.0.0.1:1/files/{sha}.txt"),
        ];
        assert_eq!(merge_blob_urls(ours, &named).len(), 3);
    }
}
