//! `quorum mandate create` as a maintainer runs it, against a `quorum relay` and three
//! `quorum dvm runner` daemons whose quorum key service makes the key with a DKG; and the
//! operators who run them (`--operator`, `quorum operator publish|show`), without whom a
//! quorum of one person's DVMs is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use quorum_proto::nostr::PublicKey;
use quorum_testkit::daemon::{Daemon, run};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

/// A runner whose announcement names `operator`.
fn runner(dir: &Path, relay: &str, operator: &str) -> (Daemon, String) {
    let daemon = Daemon::spawn(
        QUORUM,
        &[
            "dvm",
            "runner",
            "--relay",
            relay,
            // Never contacted: no job runs here.
            "--blossom",
            "http://127.0.0.1:9/",
            "--key",
            dir.join("runner.nsec").to_str().unwrap(),
            "--data",
            dir.to_str().unwrap(),
            // No build step runs either, so no sandbox is needed.
            "--unsandboxed",
            "--operator",
            operator,
        ],
    );
    let pubkey = daemon.value_of("runner");
    (daemon, pubkey)
}

/// `quorum operator publish --key FILE --dvm …`: the operator's key signs its list.
fn publish_list(relay: &str, key: &Path, dvms: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "operator",
        "publish",
        "--relay",
        relay,
        "--key",
        key.to_str().unwrap(),
        "--json",
    ];
    for dvm in dvms {
        args.extend(["--dvm", dvm]);
    }
    let out = run(QUORUM, &args, Duration::from_secs(60));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "operator publish failed: {stderr}");
    // The key file's secret is in neither stream.
    let secret = std::fs::read_to_string(key).unwrap();
    let secret_hex = quorum_dvm::keyfile::load(key)
        .unwrap()
        .secret_key()
        .to_secret_hex();
    for text in [&stdout, &stderr] {
        assert!(!text.contains(secret.trim()) && !text.contains(&secret_hex));
    }
    serde_json::from_str(&stdout).expect("one JSON object")
}

/// One operator runs all three runners, and says so: a 2-of-3 quorum of them is refused with
/// the reason, and made with `--allow-same-operator` (by DKG, then by a dealer).
#[test]
fn mandate_create_makes_a_2_of_3_key_among_three_runners_by_dkg_and_by_dealer() {
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
    let operator_key = dir.path().join("operator.nsec");
    let operator = quorum_dvm::keyfile::create(&operator_key)
        .unwrap()
        .public_key()
        .to_hex();
    let runners: Vec<(Daemon, String, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("runner{i}"));
            let (daemon, pubkey) = runner(&data, &url, &operator);
            (daemon, pubkey, data)
        })
        .collect();
    let dvms: Vec<&str> = runners
        .iter()
        .map(|(_, pubkey, _)| pubkey.as_str())
        .collect();
    let published = publish_list(&url, &operator_key, &dvms);
    assert_eq!(published["operator"], operator.as_str());
    assert_eq!(published["list"].as_str().map(str::len), Some(64));

    let key = dir.path().join("maintainer.nsec");
    let maintainer = quorum_dvm::keyfile::create(&key).unwrap();
    let coordinate = format!("30617:{}:app", maintainer.public_key().to_hex());
    let mut args = vec![
        "mandate",
        "create",
        "--relay",
        &url,
        "--key",
        key.to_str().unwrap(),
        "--repo",
        &coordinate,
        "--pipeline",
        ".quorum/pipeline.yml",
        "--threshold",
        "2",
        "--wait",
        "120",
        "--json",
    ];
    for (_, pubkey, _) in &runners {
        args.extend(["--member", pubkey.as_str()]);
    }
    // Two wrappers may not forward to one inner DVM: refused before anything is published.
    let inner_dvm = quorum_proto::nostr::Keys::generate().public_key().to_hex();
    let mut same_inner = args.clone();
    let pairs: Vec<String> = dvms[..2]
        .iter()
        .map(|dvm| format!("{dvm}={inner_dvm}"))
        .collect();
    for pair in &pairs {
        same_inner.extend(["--inner", pair.as_str()]);
    }
    let out = run(QUORUM, &same_inner, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{inner_dvm} is named for two members: each wrapper must forward to a different DVM"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(out.stdout.is_empty());

    // One operator could sign alone: refused, saying whose each member is and what to do.
    let out = run(QUORUM, &args, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a one-operator quorum was made: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "all 3 members are run by one operator, {operator}: it alone could sign"
        )),
        "{stderr}"
    );
    for dvm in &dvms {
        assert!(
            stderr.contains(&format!("member {dvm}: operator {operator} (confirmed)")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("--allow-same-operator"), "{stderr}");
    assert!(stderr.contains("Nothing was published"), "{stderr}");
    assert!(out.stdout.is_empty());

    // `quorum operator show` sees the same: three DVMs, each listed and claiming the operator.
    let out = run(
        QUORUM,
        &["operator", "show", &operator, "--relay", &url, "--json"],
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let confirmed: Vec<&str> = shown["dvms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["confirmed"] == true && d["listed"] == true && d["claims"] == true)
        .map(|d| d["dvm"].as_str().unwrap())
        .collect();
    assert_eq!(confirmed.len(), 3, "{shown}");
    assert!(dvms.iter().all(|dvm| confirmed.contains(dvm)), "{shown}");

    args.push("--allow-same-operator");
    let out = run(QUORUM, &args, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mandate create failed: {stderr}");
    assert!(
        stderr.contains("note: --allow-same-operator: all 3 members"),
        "{stderr}"
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        printed["operators"]["distinct"],
        serde_json::json!([operator])
    );
    assert_eq!(printed["operators"]["fewest_signing"], 1);
    let quorum = PublicKey::from_hex(printed["quorum"].as_str().unwrap()).unwrap();
    assert_eq!(printed["threshold"], 2);
    assert_eq!(printed["members"].as_array().unwrap().len(), 3);
    assert!(printed["mandate"].as_str().is_some_and(|id| id.len() == 64));
    assert!(
        printed["proposal"]
            .as_str()
            .is_some_and(|id| id.len() == 64)
    );
    assert_shares(&runners, &quorum);

    // Dealer mode: the output says plainly that this machine held the whole key. This mandate
    // also says who may ask (an npub), that ancestors of the signed tips may be built, and which
    // ordinary DVM each member forwards to.
    let requester = quorum_proto::nostr::Keys::generate().public_key();
    let npub = quorum_proto::nostr::ToBech32::to_bech32(&requester).unwrap();
    let inner: Vec<(String, String)> = dvms
        .iter()
        .map(|dvm| {
            let inner = quorum_proto::nostr::Keys::generate().public_key().to_hex();
            (dvm.to_string(), inner)
        })
        .collect();
    let pairs: Vec<String> = inner.iter().map(|(m, i)| format!("{m}={i}")).collect();
    args.extend(["--dealer", "--requester", &npub, "--source", "ancestor"]);
    for pair in &pairs {
        args.extend(["--inner", pair.as_str()]);
    }
    let out = run(QUORUM, &args, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mandate create --dealer failed: {stderr}"
    );
    assert!(stderr.contains("held the whole quorum key"), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(printed["proposal"].is_null());
    let dealt = PublicKey::from_hex(printed["quorum"].as_str().unwrap()).unwrap();
    assert_ne!(dealt, quorum);
    assert_shares(&runners, &dealt);
    let id = printed["mandate"].as_str().unwrap();
    let mandate = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fetch_event(&url, id));
    let tags: Vec<Vec<String>> = mandate.tags.iter().map(|t| t.as_slice().to_vec()).collect();
    assert!(
        tags.contains(&vec!["requester".into(), requester.to_hex()]),
        "{tags:?}"
    );
    assert!(
        tags.contains(&vec!["source".into(), "ancestor".into()]),
        "{tags:?}"
    );
    for (member, inner) in &inner {
        assert!(
            tags.contains(&vec!["inner".into(), member.clone(), inner.clone()]),
            "{tags:?}"
        );
    }
    let parsed = quorum_proto::mandate::Mandate::from_event(&mandate).unwrap();
    assert_eq!(parsed.rules.requesters, [requester]);
    assert_eq!(
        parsed.rules.source,
        quorum_proto::mandate::SourceRule::Ancestor
    );
    assert_eq!(parsed.rules.inner.len(), 3);

    for (daemon, _, _) in runners {
        assert!(daemon.terminate().success(), "runner exits 0 on SIGTERM");
    }
}

/// The maintainer's key stays in a NIP-46 remote signer (nostr-connect's, as a bunker app runs
/// it): `--bunker` signs the DKG proposal and the mandate through it, and the mandate is the
/// maintainer's. Its three runners are run by three operators who each confirm theirs, so the
/// quorum is made without `--allow-same-operator`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandate_create_signs_through_a_nip46_bunker() {
    use quorum_proto::nostr::Keys;
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
    // Three operators, each running one runner and confirming it.
    let runners: Vec<(Daemon, String, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("runner{i}"));
            let key = dir.path().join(format!("operator{i}.nsec"));
            let operator = quorum_dvm::keyfile::create(&key).unwrap().public_key();
            let (daemon, pubkey) = runner(&data, &url, &operator.to_hex());
            publish_list(&url, &key, &[&pubkey]);
            (daemon, pubkey, data)
        })
        .collect();
    let maintainer = Keys::generate();
    let bunker = quorum_testkit::bunker::Bunker::serve(&url, maintainer.clone());
    let uri = bunker.uri().to_string();

    let coordinate = format!("30617:{}:app", maintainer.public_key().to_hex());
    let mut args: Vec<String> = [
        "mandate",
        "create",
        "--relay",
        &url,
        "--bunker",
        &uri,
        "--repo",
        &coordinate,
        "--threshold",
        "2",
        "--wait",
        "120",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (_, pubkey, _) in &runners {
        args.extend(["--member".to_string(), pubkey.clone()]);
    }
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(QUORUM, &args, Duration::from_secs(180))
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mandate create --bunker failed: {stderr}"
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let quorum = PublicKey::from_hex(printed["quorum"].as_str().unwrap()).unwrap();
    assert_shares(&runners, &quorum);
    // Made without --allow-same-operator: three confirmed operators, any two of them needed.
    assert_eq!(
        printed["operators"]["distinct"].as_array().unwrap().len(),
        3,
        "{printed}"
    );
    assert_eq!(printed["operators"]["fewest_signing"], 2);

    // The published mandate is signed by the maintainer, whose key never left the bunker.
    let client = nostr_sdk::Client::default();
    client.add_relay(url.as_str()).await.unwrap();
    client.connect().await;
    let id = quorum_proto::nostr::EventId::from_hex(printed["mandate"].as_str().unwrap()).unwrap();
    let events = client
        .fetch_events(
            quorum_proto::nostr::Filter::new().id(id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let mandate = events.first().expect("the mandate is on the relay");
    assert_eq!(mandate.pubkey, maintainer.public_key());
    mandate.verify().unwrap();
    client.shutdown().await;
    drop(bunker);
    for (daemon, _, _) in runners {
        assert!(daemon.terminate().success(), "runner exits 0 on SIGTERM");
    }
}

/// The event `id` (hex) from the relay at `url`.
async fn fetch_event(url: &str, id: &str) -> quorum_proto::nostr::Event {
    let client = nostr_sdk::Client::default();
    client.add_relay(url).await.unwrap();
    client.connect().await;
    let id = quorum_proto::nostr::EventId::from_hex(id).unwrap();
    let events = client
        .fetch_events(
            quorum_proto::nostr::Filter::new().id(id),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    events.first().cloned().expect("the event is on the relay")
}

/// Each runner saved its share of exactly `quorum`, readable by its owner only.
fn assert_shares(runners: &[(Daemon, String, std::path::PathBuf)], quorum: &PublicKey) {
    for (_, pubkey, data) in runners {
        let shares = data.join("shares");
        let path = shares.join(format!("{}.json", quorum.to_hex()));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not written",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
        let book = quorum_consensus::keygen::load_shares(&shares);
        let share = book.get(quorum).expect("the share loads");
        assert_eq!(share.quorum(), *quorum);
        assert_eq!(share.member().to_hex(), *pubkey);
        assert_eq!(share.group().threshold(), 2);
    }
}
