//! Which network addresses a server may reach on a stranger's behalf: the SSRF guard shared by
//! the Blossom mirror (BUD-04) and the DVMs' git fetches (`quorum_runner::git`).
//!
//! A URL from a request must not turn the server into a probe of its own network: hosts that
//! resolve to loopback, private (RFC 1918, unique-local), link-local (169.254.169.254, the
//! cloud metadata address), CGNAT and other special-purpose addresses are refused unless the
//! operator allows them. [`resolve_checked`] resolves once and returns the addresses it
//! checked; callers connect to exactly those (pinning), so a DNS answer that changes between
//! the check and the connection (DNS rebinding) cannot slip a private address in.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Why a host may not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// DNS failed.
    #[error("cannot resolve {host}: {detail}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's message.
        detail: String,
    },
    /// DNS did not answer in time.
    #[error("cannot resolve {host}: no answer within {secs}s")]
    Timeout {
        /// The host name.
        host: String,
        /// The time limit.
        secs: u64,
    },
    /// DNS answered with no address.
    #[error("{host} has no addresses")]
    Empty {
        /// The host name.
        host: String,
    },
    /// The host resolves to an address that is not on the public internet. The message does
    /// not name the address: what an internal name resolves to is not the requester's business.
    #[error("{host} resolves to a loopback, private or link-local address")]
    NotPublic {
        /// The host name.
        host: String,
        /// The first refused address (for the operator's log).
        addr: IpAddr,
    },
}

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// documentation, multicast, unspecified, …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 may reach private v4
        }
    }
}

/// Resolves `host` (a name, or an IP literal with or without brackets) with a time limit and
/// returns every address it has, or refuses the host if any of them is not public (unless
/// `allow_private`). Connect only to the returned addresses.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, AddressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| AddressError::Timeout {
                host: host.to_owned(),
                secs: timeout.as_secs(),
            })?
            .map_err(|e| AddressError::Resolve {
                host: host.to_owned(),
                detail: e.to_string(),
            })?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(AddressError::Empty {
            host: host.to_owned(),
        });
    }
    // One private address is enough to refuse: which one a client would pick is not ours to
    // predict.
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(AddressError::NotPublic {
            host: host.to_owned(),
            addr: bad.ip(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn literals_and_names_are_checked() {
        let t = Duration::from_secs(5);
        for host in [
            "127.0.0.1",
            "[::1]",
            "10.0.0.1",
            "169.254.169.254",
            "localhost",
        ] {
            let err = resolve_checked(host, 80, false, t).await.unwrap_err();
            assert!(
                matches!(err, AddressError::NotPublic { .. }),
                "{host}: {err}"
            );
            assert!(!err.to_string().contains("127.0.0.1") || host == "127.0.0.1");
        }
        let pinned = resolve_checked("[::1]", 9418, true, t).await.unwrap();
        assert_eq!(pinned, vec!["[::1]:9418".parse().unwrap()]);
        let public = resolve_checked("1.1.1.1", 443, false, t).await.unwrap();
        assert_eq!(public, vec!["1.1.1.1:443".parse().unwrap()]);
    }
}
