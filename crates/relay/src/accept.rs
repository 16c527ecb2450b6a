//! TCP connections, before they are WebSocket sessions: the accept loop of
//! [`crate::Relay::serve`], the per-address connection cap and the handshake deadline.
//!
//! A connection counts against its address for as long as its socket is open: while its HTTP
//! request is read, and afterwards as a WebSocket session (the count travels inside the socket
//! wrapper, [`Counted`], which hyper hands over to the session on upgrade). A connection's
//! whole HTTP life (its requests, their answers, the upgrade) must fit in
//! [`crate::Limits::handshake_timeout`]; a client that connects and says nothing, sends its
//! headers a byte at a time, or keeps a plain HTTP connection open is closed then. So the only
//! long-lived connections are WebSocket sessions, bounded by the session's own timeouts.
//!
//! IPv6 clients are counted per /64 network, the block one subscriber usually has, so that a
//! single host cannot walk through its own addresses to get around the cap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::Inner;
use crate::http;

/// Longest a refused connection (over its address's cap) is kept to answer 503.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);

/// Pause after an accept error that is not about one connection (such as running out of file
/// descriptors), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Open connections per address key (see [`ip_key`]).
#[derive(Debug, Default)]
pub(crate) struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// What to do with a new connection.
enum Admission {
    /// Under the cap: serve it.
    Serve(IpSlot),
    /// At the cap: answer 503 (still counted, so refusals are bounded too).
    Refuse(IpSlot),
    /// Far over the cap: close it without a word.
    Drop,
}

impl PerIp {
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Admission {
        let key = ip_key(ip);
        let Ok(mut open) = self.open.lock() else {
            return Admission::Drop;
        };
        let count = open.entry(key).or_insert(0);
        let serve = cap == 0 || *count < cap;
        if !serve && *count >= cap.saturating_mul(2) {
            return Admission::Drop;
        }
        *count += 1;
        let slot = IpSlot {
            per_ip: Arc::clone(self),
            key,
        };
        if serve {
            Admission::Serve(slot)
        } else {
            Admission::Refuse(slot)
        }
    }

    /// Open connections from `ip`'s key (for tests and logs).
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .map(|open| open.get(&ip_key(ip)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// One connection's place in its address's count; given back on drop.
#[derive(Debug)]
struct IpSlot {
    per_ip: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.per_ip.open.lock()
            && let Some(count) = open.get_mut(&self.key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a connection is counted under: IPv4 addresses (also IPv4-mapped IPv6) as they
/// are, IPv6 addresses by their /64 network.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// A TCP stream that holds its address's [`IpSlot`] until it is dropped (after the WebSocket
/// session, when the connection was upgraded).
struct Counted {
    tcp: TcpStream,
    _slot: IpSlot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts connections until the relay's shutdown token is cancelled. Connections still in
/// their handshake then are dropped; WebSocket sessions close themselves on the same token.
pub(crate) async fn serve(inner: Arc<Inner>, listener: TcpListener) -> io::Result<()> {
    let per_ip = Arc::clone(&inner.per_ip);
    let mut handshakes: JoinSet<()> = JoinSet::new();
    let shutdown = inner.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished handshakes so the set stays small.
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // Admitted here, in accept order, not in the spawned task: tasks run on
                    // several threads, and a later connection must not take the place of an
                    // earlier one from the same address.
                    let cap = inner.config.limits.max_connections_per_ip;
                    let (slot, refused) = match per_ip.admit(remote.ip(), cap) {
                        Admission::Serve(slot) => (slot, false),
                        Admission::Refuse(slot) => (slot, true),
                        Admission::Drop => {
                            tracing::debug!(%remote, cap, "connection dropped: far over the per-address cap");
                            continue;
                        }
                    };
                    handshakes.spawn(connection(Arc::clone(&inner), tcp, remote, slot, refused));
                }
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept connections; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    handshakes.shutdown().await;
    Ok(())
}

/// Serves one admitted TCP connection (holding `slot`, its place in its address's count): its
/// HTTP request, and hands a WebSocket upgrade to the session. A `refused` connection is only
/// answered 503.
async fn connection(
    inner: Arc<Inner>,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: IpSlot,
    refused: bool,
) {
    let limits = &inner.config.limits;
    // Relay messages are small and latency-bound (a quorum's signing round is several
    // request-answer exchanges): without TCP_NODELAY, Nagle's algorithm meets the peer's
    // delayed ACK and holds a message back for about 40 ms.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {err}");
    }
    let io = TokioIo::new(Counted { tcp, _slot: slot });
    let deadline = if refused {
        match limits.handshake_timeout {
            Duration::ZERO => REFUSAL_GRACE,
            d => d.min(REFUSAL_GRACE),
        }
    } else {
        limits.handshake_timeout
    };
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let inner = Arc::clone(&inner);
        async move {
            let request = request.map(axum::body::Body::new);
            let response = if refused {
                http::refuse_per_ip(&inner, remote)
            } else {
                http::respond(inner, Some(remote), request).await
            };
            Ok::<_, Infallible>(response)
        }
    });
    // Keep-alive stays on: hyper would otherwise answer an upgrade with `Connection: close`.
    // The deadline below bounds the connection's whole HTTP life instead.
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let outcome = if deadline.is_zero() {
        Ok(served.await)
    } else {
        tokio::time::timeout(deadline, served).await
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(%remote, error = %err, "HTTP connection failed"),
        Err(_) => tracing::debug!(%remote, ?deadline, "handshake timed out; connection closed"),
    }
}

/// Errors about one connection (the peer gave up before we accepted it): accept the next.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn cap_serves_then_refuses_then_drops_and_slots_come_back() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let mut held = Vec::new();
        for _ in 0..2 {
            match per_ip.admit(ip, 2) {
                Admission::Serve(slot) => held.push(slot),
                _ => panic!("under the cap: served"),
            }
        }
        for _ in 0..2 {
            match per_ip.admit(ip, 2) {
                Admission::Refuse(slot) => held.push(slot),
                _ => panic!("at the cap: refused with an answer"),
            }
        }
        assert!(matches!(per_ip.admit(ip, 2), Admission::Drop));
        assert!(matches!(per_ip.admit(other, 2), Admission::Serve(_)));
        assert_eq!(per_ip.open(ip), 4);
        held.clear();
        assert_eq!(per_ip.open(ip), 0);
        assert!(matches!(per_ip.admit(ip, 2), Admission::Serve(_)));
        assert!(
            matches!(per_ip.admit(ip, 0), Admission::Serve(_)),
            "0 = unlimited"
        );
    }
}
