//! `quorum approve` / `quorum reject` against a real relay: only the maintainers asked can
//! sign, nothing is signed without confirmation, and the verdict counts in the tally.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_proto::approval::{
    APPROVAL, ApprovalRequest, ApprovalTally, ArtifactDigest, GateStatus, REJECTION,
};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip34::RepoCoordinate;
use quorum_testkit::daemon::{Daemon, run};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

fn key_file(dir: &std::path::Path, name: &str, keys: &Keys) -> String {
    let path = dir.join(name);
    std::fs::write(&path, keys.secret_key().to_secret_hex()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_asked_maintainer_can_approve_and_only_after_confirming() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Daemon::spawn(
        QUORUM,
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--data",
            dir.path().join("relay").to_str().unwrap(),
        ],
    );
    let url = relay.value_of("relay");
    let pipeline = Keys::generate();
    let maintainer = Keys::generate();
    let stranger = Keys::generate();
    let request = ApprovalRequest {
        repo: RepoCoordinate::new(maintainer.public_key(), "app"),
        run: "ab".repeat(32),
        commit: "cd".repeat(20),
        artifacts: vec![ArtifactDigest::new(
            "build/out/app",
            Sha256Hex::parse(&"ef".repeat(32)).unwrap(),
        )],
        builders: vec![Keys::generate().public_key()],
        maintainers: vec![maintainer.public_key()],
        required: 1,
        expiration: Timestamp::now() + 600,
        content: "Release app?".into(),
        job: None,
    };
    let event = request
        .to_event_builder()
        .unwrap()
        .sign_with_keys(&pipeline)
        .unwrap();
    let client = Client::new(pipeline.clone());
    client.add_relay(url.as_str()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client.send_event(&event).await.unwrap();
    let id = event.id.to_hex();

    let approve = |key: &str, yes: bool, json: bool| {
        let mut args = vec![
            "approve",
            id.as_str(),
            "--relay",
            url.as_str(),
            "--key",
            key,
        ];
        if yes {
            args.push("--yes");
        }
        if json {
            args.push("--json");
        }
        run(QUORUM, &args, Duration::from_secs(60))
    };
    let stranger_key = key_file(dir.path(), "stranger", &stranger);
    let out = approve(&stranger_key, true, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not among the maintainers"));

    let maintainer_key = key_file(dir.path(), "maintainer", &maintainer);
    let out = approve(&maintainer_key, false, false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "no terminal, no --yes: nothing signed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&"ef".repeat(32)),
        "the artifact hash is shown: {stderr}"
    );
    assert!(stderr.contains("pass --yes"), "{stderr}");

    let out = approve(&maintainer_key, true, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert_eq!(printed["decision"], "approved");
    assert_eq!(printed["request"], id.as_str());
    assert_eq!(printed["artifacts"][0]["sha256"], "ef".repeat(32));

    let verdicts = client
        .fetch_events(
            Filter::new().kinds([APPROVAL, REJECTION]).event(event.id),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .into_iter()
        .collect::<Vec<_>>();
    assert_eq!(
        verdicts.len(),
        1,
        "only the maintainer's verdict was signed"
    );
    assert_eq!(printed["verdict"], verdicts[0].id.to_hex());
    let tally = ApprovalTally::evaluate(
        &event,
        &verdicts,
        &[maintainer.public_key()],
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!(tally.status(), GateStatus::Approved);
    client.shutdown().await;
}
