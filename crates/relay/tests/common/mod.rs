//! Shared test helpers: a real relay on 127.0.0.1:0 over LMDB in a temp dir, a raw WebSocket
//! client that speaks JSON, and event signing.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::prelude::*;
use quorum_relay::{Relay, RelayConfig};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Time any single network expectation may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

pub struct TestRelay {
    pub relay: Relay,
    pub url: String,
    pub http_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), quorum_relay::RelayError>>>,
    pub dir: Option<tempfile::TempDir>,
}

impl TestRelay {
    /// A relay on a fresh LMDB in a temp dir.
    pub async fn start(config: RelayConfig) -> TestRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let relay = Relay::open(config, dir.path()).await.expect("open relay");
        let mut t = TestRelay::serve(relay).await;
        t.dir = Some(dir);
        t
    }

    /// Serves an existing relay on 127.0.0.1:0.
    pub async fn serve(relay: Relay) -> TestRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        TestRelay {
            relay,
            url: format!("ws://{addr}"),
            http_url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
            dir: None,
        }
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task)
                .await
                .expect("serve returns after shutdown")
                .expect("serve task")
                .expect("serve result");
        }
    }

    /// Events in the store matching `filter` (bypassing the protocol).
    pub async fn stored(&self, filter: Filter) -> Vec<Event> {
        self.relay
            .database()
            .query(filter)
            .await
            .expect("query store")
            .into_iter()
            .collect()
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(&self.url).await
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A WebSocket client that sends and receives raw JSON.
pub struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Raw { ws }
    }

    /// Connects with a tiny receive buffer, so that not reading quickly stalls the relay's
    /// writes to this socket (for slow-subscriber tests).
    pub async fn connect_small_buffer(url: &str) -> Raw {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .parse()
            .expect("ws://ip:port");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let (ws, _) = tokio::time::timeout(
            STEP,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("handshake in time")
        .expect("handshake");
        Raw { ws }
    }

    /// Connects from a chosen loopback address (any of 127.0.0.0/8 works on Linux), to be
    /// counted as another client by per-address limits.
    pub async fn connect_from(url: &str, local: std::net::IpAddr) -> Raw {
        let (ws, _) = tokio::time::timeout(STEP, Raw::handshake_from(url, local))
            .await
            .expect("handshake in time")
            .expect("handshake");
        Raw { ws }
    }

    /// A WebSocket handshake from `local`, returning the relay's answer as it is (an HTTP
    /// refusal is `Err(tungstenite::Error::Http(..))`).
    pub async fn handshake_from(
        url: &str,
        local: std::net::IpAddr,
    ) -> Result<
        (
            WebSocketStream<MaybeTlsStream<TcpStream>>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let stream = tcp_from(url, local).await?;
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    /// Next JSON message from the relay (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        self.try_recv(STEP).await.expect("relay answered in time")
    }

    /// Next JSON message, or `None` after `wait` (or when the socket closes).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match msg.expect("socket error") {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("relay sent JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Skips messages until one whose type is `kind` (e.g. "OK", "EOSE").
    pub async fn recv_kind(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v[0] == kind {
                return v;
            }
        }
    }

    /// Publishes and returns the relay's `OK` answer as (accepted, message).
    pub async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.send(json!(["EVENT", event])).await;
        self.ok_for(&event.id.to_hex()).await
    }

    /// Waits for the OK of `id`.
    pub async fn ok_for(&mut self, id: &str) -> (bool, String) {
        loop {
            let v = self.recv().await;
            if v[0] == "OK" && v[1] == id {
                return (
                    v[2].as_bool().expect("OK status"),
                    v[3].as_str().expect("OK message").to_owned(),
                );
            }
        }
    }

    /// REQ and collect the stored events until EOSE (or a CLOSED, returned as Err).
    pub async fn req(&mut self, sub: &str, filters: Vec<Value>) -> Result<Vec<Event>, String> {
        let mut msg = vec![json!("REQ"), json!(sub)];
        msg.extend(filters);
        self.send(Value::Array(msg)).await;
        let mut events = Vec::new();
        loop {
            let v = self.recv().await;
            match v[0].as_str() {
                Some("EVENT") if v[1] == sub => {
                    events.push(serde_json::from_value::<Event>(v[2].clone()).expect("event"))
                }
                Some("EOSE") if v[1] == sub => return Ok(events),
                Some("CLOSED") if v[1] == sub => {
                    return Err(v[2].as_str().unwrap_or_default().to_owned());
                }
                _ => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub fn from_inner(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Raw {
        Raw { ws }
    }

    pub fn ws_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }
}

/// A TCP connection to the relay at `url` (ws://ip:port) from the address `local`.
pub async fn tcp_from(url: &str, local: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .parse()
        .expect("ws://ip:port");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit, or beyond
/// it where allowed, as for root), for tests that open many sockets.
pub fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit),
            0,
            "getrlimit"
        );
        if limit.rlim_cur >= want {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let capped = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &capped),
                0,
                "setrlimit"
            );
            assert!(
                limit.rlim_max >= want,
                "this test needs {want} open files; the hard limit is {}",
                limit.rlim_max
            );
        }
    }
}

pub fn note(keys: &Keys, content: &str) -> Event {
    EventBuilder::text_note(content)
        .sign_with_keys(keys)
        .expect("sign")
}

pub fn signed(keys: &Keys, builder: EventBuilder) -> Event {
    builder.sign_with_keys(keys).expect("sign")
}

/// A nostr-sdk client connected to `url`.
pub async fn sdk_client(keys: &Keys, url: &str) -> nostr_sdk::Client {
    let client = nostr_sdk::Client::builder().signer(keys.clone()).build();
    client.add_relay(url).await.expect("add relay");
    client.connect().await;
    client.wait_for_connection(STEP).await;
    client
}
