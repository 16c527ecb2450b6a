//! The policy seams: write and query policies see verified events / clamped filters and the
//! connection, and their verdicts reach the client with their prefix.

mod common;

use common::{TestRelay, note, signed};
use nostr::prelude::*;
use quorum_relay::{
    Admission, BoxFuture, ConnectionInfo, QueryPolicy, Relay, RelayConfig, WritePolicy,
};
use serde_json::json;

/// Refuses direct messages (kind 4) and anything from one banned key.
struct NoDms {
    banned: PublicKey,
}

impl WritePolicy for NoDms {
    fn admit<'a>(&'a self, event: &'a Event, conn: &'a ConnectionInfo) -> BoxFuture<'a, Admission> {
        Box::pin(async move {
            assert!(conn.remote.is_some(), "serve() provides the peer address");
            if event.pubkey == self.banned {
                Admission::restricted("this key may not publish here")
            } else if event.kind == Kind::EncryptedDirectMessage {
                Admission::blocked("kind 4 is not accepted; use NIP-17")
            } else {
                Admission::Accept
            }
        })
    }
}

/// Requires every filter to name its authors.
struct AuthorsOnly;

impl QueryPolicy for AuthorsOnly {
    fn admit<'a>(
        &'a self,
        filters: &'a [Filter],
        _conn: &'a ConnectionInfo,
    ) -> BoxFuture<'a, Admission> {
        Box::pin(async move {
            if filters.iter().all(|f| f.authors.is_some()) {
                Admission::Accept
            } else {
                Admission::blocked("filters must name authors")
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_query_policies_decide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let banned = Keys::generate();
    let relay = Relay::open(RelayConfig::default(), dir.path())
        .await
        .expect("open")
        .with_write_policy(NoDms {
            banned: banned.public_key(),
        })
        .with_query_policy(AuthorsOnly);
    assert!(relay.information_document().limitation.restricted_writes);
    let served = TestRelay::serve(relay).await;
    let keys = Keys::generate();
    let mut raw = served.raw().await;

    let (ok, msg) = raw.publish(&note(&keys, "fine")).await;
    assert!(ok, "{msg}");
    let dm = signed(&keys, EventBuilder::new(Kind::EncryptedDirectMessage, "x"));
    let (ok, msg) = raw.publish(&dm).await;
    assert!(!ok);
    assert_eq!(msg, "blocked: kind 4 is not accepted; use NIP-17");
    let (ok, msg) = raw.publish(&note(&banned, "hello")).await;
    assert!(!ok);
    assert_eq!(msg, "restricted: this key may not publish here");
    assert!(served.stored(Filter::new().id(dm.id)).await.is_empty());

    let err = raw
        .req("all", vec![json!({"kinds": [1]})])
        .await
        .expect_err("refused");
    assert_eq!(err, "blocked: filters must name authors");
    let mine = raw
        .req(
            "mine",
            vec![json!({"authors": [keys.public_key().to_hex()]})],
        )
        .await
        .expect("allowed");
    assert_eq!(mine.len(), 1);
}
