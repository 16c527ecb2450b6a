//! nostr-tools as a second opinion: it verifies every event our relay serves (id recomputed,
//! signature checked) and publishes an event of its own, which nostr-sdk then reads back.

mod common;

use std::time::Duration;

use common::{STEP, TestRelay, note, sdk_client};
use nostr::prelude::*;
use quorum_relay::RelayConfig;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_tools_verifies_served_events_and_publishes() {
    let relay = TestRelay::start(RelayConfig::default()).await;
    let keys = Keys::generate();
    let mut raw = relay.raw().await;
    // Contents that stress the id serialisation: escapes, non-ASCII, a control character.
    let contents = [
        "plain",
        "quotes \" and backslash \\ and / slash",
        "line\nbreak\ttab\rreturn",
        "unicode: é ñ 漢字 🚀",
        "control \u{1} char",
        "",
    ];
    for content in contents {
        let (ok, msg) = raw.publish(&note(&keys, content)).await;
        assert!(ok, "{content:?}: {msg}");
    }
    let tagged = common::signed(
        &keys,
        EventBuilder::new(Kind::Custom(5700), "{\"json\":\"in content\"}")
            .tag(Tag::parse(["t", "ci"]).expect("tag"))
            .tag(Tag::parse(["param", "a b", "c\"d"]).expect("tag")),
    );
    assert!(raw.publish(&tagged).await.0);

    let filter = json!({"authors": [keys.public_key().to_hex()]}).to_string();
    let stdout = tokio::task::spawn_blocking({
        let url = relay.url.clone();
        move || {
            quorum_testkit::node::run_script_ok(
                "relay-verify.mjs",
                &[&url, &filter, "nostr-tools says hi ✓"],
                Duration::from_secs(120),
            )
        }
    })
    .await
    .expect("script task");
    let line = stdout.lines().last().expect("a JSON line");
    let report: Value = serde_json::from_str(line).expect("JSON report");
    assert_eq!(report["count"], contents.len() + 1, "{report}");
    assert_eq!(report["valid"], contents.len() + 1, "{report}");
    assert_eq!(report["invalid"], json!([]), "{report}");
    assert_eq!(report["published"]["ok"], true, "{report}");

    // The nostr-tools event, read back through nostr-sdk (which verifies it again).
    let published: Event =
        serde_json::from_value(report["published"]["event"].clone()).expect("event JSON");
    published
        .verify()
        .expect("nostr-tools event verifies in rust-nostr");
    let reader = sdk_client(&Keys::generate(), &relay.url).await;
    let fetched = reader
        .fetch_events(Filter::new().id(published.id), STEP)
        .await
        .expect("fetch");
    let fetched = fetched.first().expect("nostr-tools event stored");
    assert_eq!(fetched.content, "nostr-tools says hi ✓");
    assert_eq!(fetched.pubkey, published.pubkey);
    reader.shutdown().await;
}
