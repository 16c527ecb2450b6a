//! hzrd149's `blossom-client-sdk` 5.1 (npm, the reference client) with a nostr-tools signer
//! against our server, through `interop/blossom-client.mjs`: BUD-06 probe, upload, download
//! with re-hash, list, delete.

mod common;

use std::time::Duration;

use common::*;
use quorum_proto::nostr::Keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blossom_client_sdk_against_our_server() {
    init_tracing();
    let s = TestServer::start(config()).await;
    let keys = Keys::generate();
    let sk = keys.secret_key().to_secret_hex();
    let url = s.url.to_string();
    // The script blocks a thread (node runs as a child process); the server keeps serving on
    // the runtime's other worker.
    let out = tokio::task::spawn_blocking(move || {
        quorum_testkit::node::run_script_ok(
            "blossom-client.mjs",
            &[&url, &sk, "250000"],
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    let line = out.lines().last().expect("script printed nothing");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let sha = v["sha256"].as_str().unwrap();

    assert_eq!(v["pubkey"], keys.public_key().to_hex());
    assert_eq!(v["descriptor"]["sha256"], sha);
    assert_eq!(v["descriptor"]["size"], 250000);
    assert!(
        v["descriptor"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{sha}.bin"))
    );
    // The SDK probed HEAD /upload unauthenticated, got 401, and signed an upload token.
    assert_eq!(v["authTypes"], serde_json::json!(["upload"]));
    assert_eq!(v["fetchedSha256"], sha);
    assert_eq!(v["fetchedSize"], 250000);
    assert_eq!(v["contentType"], "application/octet-stream");
    assert_eq!(v["listed"], serde_json::json!([sha]));
    assert_eq!(v["deleted"], true);
    assert_eq!(v["hasAfterDelete"], false);
    assert!(s.server.store().is_empty());
    assert_eq!(s.temp_files(), 0);
}
