//! Fetching the files an inner DVM's result claims, to hash them (protocol §15.8).
//!
//! The URLs come from whoever answered the inner request, so the wrapper fetches them as a
//! server fetches a stranger's URL: only http(s); hosts that resolve to loopback, private or
//! link-local addresses refused unless the operator allows them
//! (`quorum_blossom::address::resolve_checked`), every connection pinned to the addresses
//! checked and every redirect checked again; at most [`DownloadPolicy::max_bytes`] for one
//! result and [`DownloadPolicy::timeout`] in all. The bytes are hashed as they arrive and
//! never stored: the wrapper needs only their sha256.

use std::time::Duration;

use quorum_blossom::address::{AddressError, resolve_checked};
use quorum_proto::blossom::Sha256Hex;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

/// Redirects followed for one URL.
const MAX_REDIRECTS: usize = 5;
/// How long resolving one host may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the files an inner DVM claims may be fetched from, and how much of them.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    /// Allow hosts that resolve to loopback, private, link-local and other non-public addresses
    /// (a local network or tests). Off: an inner DVM cannot make the wrapper probe its own
    /// network.
    pub allow_private: bool,
    /// Most bytes fetched for one result, its files together.
    pub max_bytes: u64,
    /// Longest time fetching one result's files may take.
    pub timeout: Duration,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        DownloadPolicy {
            allow_private: false,
            max_bytes: 1 << 30,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Why a claimed file's bytes could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL")]
    Scheme,
    #[error("the URL names no host")]
    NoHost,
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot fetch it: {0}")]
    Transport(String),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    #[error("a redirect to an invalid location")]
    BadRedirect,
    #[error("more than the {0} bytes a wrapper fetches for one result")]
    TooLarge(u64),
    #[error("not fetched within the time allowed")]
    Timeout,
}

/// What the bytes at one URL are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Fetches `url` under `policy` (at most `limit` bytes, until `deadline`) and hashes the bytes.
pub async fn sha256_of(
    url: &Url,
    policy: &DownloadPolicy,
    limit: u64,
    deadline: Instant,
) -> Result<Fetched, FetchError> {
    let within = |d: Instant| d.saturating_duration_since(Instant::now());
    let mut response = tokio::time::timeout(within(deadline), get(url.clone(), policy))
        .await
        .map_err(|_| FetchError::Timeout)??;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let chunk = tokio::time::timeout(within(deadline), response.chunk())
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let Some(chunk) = chunk else { break };
        size += chunk.len() as u64;
        if size > limit {
            return Err(FetchError::TooLarge(limit));
        }
        hasher.update(&chunk);
    }
    Ok(Fetched {
        sha256: Sha256Hex::from_bytes(hasher.finalize().into()),
        size,
    })
}

/// GETs `url`, following redirects by hand so that every hop's host is checked and the
/// connection goes to exactly the addresses checked (no DNS rebinding in between).
async fn get(mut url: Url, policy: &DownloadPolicy) -> Result<reqwest::Response, FetchError> {
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme);
        }
        let host = url.host_str().ok_or(FetchError::NoHost)?.to_owned();
        let port = url.port_or_known_default().ok_or(FetchError::NoHost)?;
        let addrs = resolve_checked(&host, port, policy.allow_private, DNS_TIMEOUT).await?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(bare, &addrs)
            .connect_timeout(DNS_TIMEOUT)
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| FetchError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(FetchError::BadRedirect)?;
            url = url.join(location).map_err(|_| FetchError::BadRedirect)?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        return Ok(response);
    }
    Err(FetchError::Redirects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn private_and_non_http_urls_are_refused_before_any_connection() {
        let policy = DownloadPolicy::default();
        for url in [
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9/x",
            "http://10.0.0.1/x",
        ] {
            let err = sha256_of(&Url::parse(url).unwrap(), &policy, 1, soon())
                .await
                .unwrap_err();
            assert!(
                matches!(err, FetchError::Address(AddressError::NotPublic { .. })),
                "{url}: {err}"
            );
            assert!(
                err.to_string().contains("loopback, private or link-local"),
                "{err}"
            );
        }
        let err = sha256_of(
            &Url::parse("ftp://example.org/x").unwrap(),
            &policy,
            1,
            soon(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, FetchError::Scheme), "{err}");
    }

    /// A loopback HTTP server answering every connection with `response`.
    async fn serve(response: Vec<u8>) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/blob", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(&response).await;
                    // Held open: the response's length says where it ends, or it never does.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn the_bytes_are_hashed_and_capped() {
        let body = vec![7u8; 1000];
        let mut response =
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n".to_vec();
        response.extend_from_slice(&body);
        let url = serve(response).await;
        let policy = DownloadPolicy {
            allow_private: true,
            ..DownloadPolicy::default()
        };
        let fetched = sha256_of(&url, &policy, 1000, soon()).await.unwrap();
        assert_eq!(fetched.size, 1000);
        assert_eq!(
            fetched.sha256,
            Sha256Hex::from_bytes(Sha256::digest(&body).into())
        );
        let err = sha256_of(&url, &policy, 999, soon()).await.unwrap_err();
        assert!(matches!(err, FetchError::TooLarge(999)), "{err}");
        // The same server is loopback: refused unless allowed.
        let err = sha256_of(&url, &DownloadPolicy::default(), 1000, soon())
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Address(_)), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_finishes_runs_out_of_time() {
        // Promises 1000 bytes, sends 10 and keeps the connection open.
        let url =
            serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789".to_vec()).await;
        let policy = DownloadPolicy {
            allow_private: true,
            ..DownloadPolicy::default()
        };
        let deadline = Instant::now() + Duration::from_millis(500);
        let err = sha256_of(&url, &policy, 1 << 20, deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Timeout), "{err}");
    }
}
