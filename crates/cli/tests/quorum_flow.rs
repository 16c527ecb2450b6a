//! The operator's whole quorum flow with the real binary, every piece a separate process on
//! loopback: `quorum relay`, `quorum blossom` and three sandboxed `quorum dvm runner`s; a
//! maintainer publishes the repository's NIP-34 announcement and state, makes a 2-of-3 quorum
//! of the runners by DKG with `quorum mandate create` (only the run's key may request its jobs),
//! runs a `mode: quorum` release job under that mandate with `quorum run --key`, downloads the
//! released file from Blossom and checks it with `quorum verify --repo` — from the relay, and
//! from the release's verification bundle with no relay — then sees it fail for another
//! repository, a stricter threshold, a missing `--repo` and a flipped byte.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::{Client, Keys};
use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
use quorum_testkit::daemon::Daemon;
use quorum_testkit::git::{git, sample_repo};
use serde_json::Value;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
const IDENTIFIER: &str = "sample";

/// Runs `quorum ARGS…` with a time limit; returns the exit code, stdout and stderr.
fn quorum(args: &[&str], timeout: Duration) -> (i32, String, String) {
    // `quorum run`'s default identity goes to a temporary config directory, not the home.
    let config = tempfile::tempdir().unwrap();
    let out = quorum_testkit::daemon::run_with_env(
        QUORUM,
        args,
        &[("XDG_CONFIG_HOME", config.path())],
        timeout,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `quorum relay` or `quorum blossom` on a free loopback port, and the URL it announces.
fn server(name: &str, dir: &Path) -> (Daemon, String) {
    let data = dir.join(name);
    let daemon = Daemon::spawn(
        QUORUM,
        &[
            name,
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let url = daemon.value_of(name);
    (daemon, url)
}

fn runner(data: &Path, relay: &str, blossom: &str) -> (Daemon, String) {
    let daemon = Daemon::spawn(
        QUORUM,
        &[
            "dvm",
            "runner",
            "--relay",
            relay,
            "--blossom",
            blossom,
            "--key",
            data.join("runner.nsec").to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            // The run's repository is file://DIR on this machine.
            "--allow-local-repos",
        ],
    );
    let pubkey = daemon.value_of("runner");
    (daemon, pubkey)
}

/// The maintainer's NIP-34 announcement (listing `clone_url`) and state (`main` at `commit`),
/// signed with their key and published: the evidence quorum members require before they build.
/// No `quorum` command publishes these yet; a maintainer's git client (ngit) does.
async fn publish_repository(relay: &str, maintainer: &Keys, clone_url: &str, commit: &str) {
    let mut announcement = RepositoryAnnouncement::new(IDENTIFIER);
    announcement.clone = vec![clone_url.to_string()];
    let state = RepositoryState::new(IDENTIFIER)
        .with_ref("refs/heads/main", commit)
        .unwrap()
        .with_head("refs/heads/main")
        .unwrap();
    let client = Client::new(maintainer.clone());
    client.add_relay(relay).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    for builder in [announcement.to_event_builder(), state.to_event_builder()] {
        let output = client.send_event_builder(builder).await.expect("published");
        assert!(
            output.failed.is_empty(),
            "the relay refused: {:?}",
            output.failed
        );
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_mandates_a_dkg_quorum_of_runners_runs_a_quorum_release_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, relay_url) = server("relay", dir.path());
    let (blossom, blossom_url) = server("blossom", dir.path());
    let runners: Vec<(Daemon, String)> = (1..=3)
        .map(|n| {
            runner(
                &dir.path().join(format!("runner{n}")),
                &relay_url,
                &blossom_url,
            )
        })
        .collect();
    let members: Vec<&str> = runners.iter().map(|(_, pubkey)| pubkey.as_str()).collect();

    // The maintainer owns the repository and announces it: its clone URL is the one `quorum
    // run` names (file://DIR), and its state points `main` at the commit with the pipeline.
    let key = dir.path().join("maintainer.nsec");
    let maintainer = quorum_dvm::keyfile::create(&key).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the maintainer key file has mode {mode:o}");
    let owner = maintainer.public_key().to_hex();
    let coordinate = format!("30617:{owner}:{IDENTIFIER}");
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(
        repo.join(".quorum/pipeline.yml"),
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    publish_repository(
        &relay_url,
        &maintainer,
        &format!("file://{}", repo.display()),
        &commit,
    )
    .await;
    // The key `quorum run` signs its requests with: the only one the mandate lets ask.
    let run_key = dir.path().join("run.nsec");
    let requester = quorum_dvm::keyfile::create(&run_key)
        .unwrap()
        .public_key()
        .to_hex();

    // 1. The quorum, by DKG among the three runners, and the mandate naming it.
    let mut args = vec![
        "mandate",
        "create",
        "--relay",
        &relay_url,
        "--key",
        key.to_str().unwrap(),
        "--repo",
        &coordinate,
        "--threshold",
        "2",
        "--allow",
        "8708",
        "--allow",
        "8700",
        "--requester",
        &requester,
        "--wait",
        "120",
        "--json",
        // The runners here name no operator: nothing says they are not one person's.
        "--allow-same-operator",
    ];
    for member in &members {
        args.extend(["--member", member]);
    }
    let (code, stdout, stderr) = quorum(&args, Duration::from_secs(180));
    assert_eq!(code, 0, "mandate create:\n{stdout}\n{stderr}");
    let created: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let quorum_key = created["quorum"].as_str().unwrap().to_string();
    let mandate = created["mandate"].as_str().unwrap().to_string();
    assert_eq!(quorum_key.len(), 64, "{created}");
    assert_eq!(mandate.len(), 64, "{created}");
    assert_eq!(created["threshold"], 2);
    assert_eq!(created["keygen"], "dkg");
    // Every member saves its share once it has seen all members announce the key; a quorum
    // job started before that would find a member without one.
    for n in 1..=3 {
        let share = dir
            .path()
            .join(format!("runner{n}/shares/{quorum_key}.json"));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !share.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not written",
                share.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 2. The pipeline's quorum release job, run under the mandate with the requester's key.
    let run_args = |key: Option<&str>| {
        let mut args = vec![
            "run",
            repo.to_str().unwrap(),
            "--relay",
            &relay_url,
            "--mandate",
            &mandate,
            "--owner",
            &owner,
            "--identifier",
            IDENTIFIER,
            "--json",
        ];
        if let Some(key) = key {
            args.extend(["--key", key]);
        }
        quorum(&args, Duration::from_secs(240))
    };
    // Without the key the mandate names, nothing is asked of the quorum.
    let (code, _, stderr) = run_args(None);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("names who may request its quorum's jobs") && stderr.contains("--key"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run_args(Some(run_key.to_str().unwrap()));
    assert_eq!(code, 0, "quorum run:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(report["quorum"]["pubkey"], quorum_key.as_str(), "{report}");
    assert_eq!(report["quorum"]["threshold"], 2);
    let mut named: Vec<&str> = report["quorum"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    named.sort_unstable();
    let mut expected = members.clone();
    expected.sort_unstable();
    assert_eq!(
        named, expected,
        "the mandate's members are the three runners"
    );
    assert_eq!(report["mandate"], mandate.as_str());
    let build = &report["jobs"][0];
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(build["quorum"]["pubkey"], quorum_key.as_str(), "{build}");
    let release = report["release"].as_str().expect("a release was published");
    assert_eq!(build["quorum"]["release"], release, "{report}");

    // 3. The released bytes, from Blossom.
    let artifact = &report["artifacts"][0];
    assert_eq!(artifact["name"], "out/hello.txt");
    let url = artifact["urls"][0].as_str().expect("a download URL");
    assert!(url.starts_with(&blossom_url), "{url} is on {blossom_url}");
    let bytes = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET the artifact")
        .bytes()
        .await
        .expect("the artifact's bytes");
    assert_eq!(&bytes[..], b"hello from quorum\n");
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, &bytes).unwrap();

    // 4. `quorum verify --repo`: a release of this repository, the quorum of the mandate
    // signed it and at least two agreed.
    let verify = |file: &Path, extra: &[&str]| {
        let mut args = vec!["verify", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = quorum(&args, Duration::from_secs(60));
        let value: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (code, value)
    };
    let online = ["--relay", relay_url.as_str(), "--repo", coordinate.as_str()];
    let (code, verified) = verify(&file, &online);
    assert_eq!(code, 0, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["sha256"], artifact["sha256"]);
    assert_eq!(verified["release"], release);
    assert_eq!(verified["quorum"], quorum_key.as_str(), "{verified}");
    assert_eq!(verified["signer"], quorum_key.as_str(), "{verified}");
    assert_eq!(verified["mandate"], mandate.as_str(), "{verified}");
    assert_eq!(verified["expected_repo"], coordinate.as_str(), "{verified}");
    assert_eq!(verified["repo"], coordinate.as_str(), "{verified}");
    assert_eq!(verified["commit"], commit.as_str(), "{verified}");
    assert_eq!(verified["requester"], requester.as_str(), "{verified}");
    assert_eq!(verified["job"], "build", "{verified}");
    assert_eq!(
        verified["source"]["state_signer"],
        owner.as_str(),
        "{verified}"
    );
    let agreed = verified["agreed"].as_array().unwrap();
    assert!(agreed.len() >= 2, "{verified}");
    assert!(
        agreed
            .iter()
            .all(|m| members.contains(&m.as_str().unwrap()))
    );
    assert_eq!(verified["disagreed"], serde_json::json!([]), "{verified}");
    // The interface scripts rely on.
    let object = verified.as_object().unwrap();
    for key in [
        "ok",
        "sha256",
        "release",
        "quorum",
        "mandate",
        "agreed",
        "disagreed",
        "silent",
    ] {
        assert!(object.contains_key(key), "no {key:?} in {verified}");
    }
    assert!(verified["ok"].is_boolean());
    assert!(verified["sha256"].is_string());
    for list in ["agreed", "disagreed", "silent"] {
        assert!(verified[list].is_array(), "{list} in {verified}");
    }

    // 5. From the release's verification bundle alone: no relay at all.
    let bundle = &report["bundle"];
    let bundle_sha = bundle["sha256"].as_str().expect("the run names its bundle");
    let bundle_url = bundle["urls"][0].as_str().expect("a bundle URL");
    assert!(bundle_url.starts_with(&blossom_url), "{bundle_url}");
    let bytes = reqwest::get(bundle_url)
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET the bundle")
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), bundle_sha);
    let bundle_file = dir.path().join("hello.txt.bundle.json");
    std::fs::write(&bundle_file, &bytes).unwrap();
    let offline = [
        "--repo",
        coordinate.as_str(),
        "--bundle",
        bundle_file.to_str().unwrap(),
    ];
    let (code, from_bundle) = verify(&file, &offline);
    assert_eq!(code, 0, "{from_bundle}");
    assert_eq!(from_bundle["release"], release, "{from_bundle}");
    assert_eq!(from_bundle["quorum"], quorum_key.as_str(), "{from_bundle}");

    // 6. What must not verify: no repository named, another repository, a stricter threshold
    // than the quorum's 2 of 3, and one byte flipped.
    let (code, unnamed) = verify(&file, &["--relay", relay_url.as_str()]);
    assert_ne!(code, 0, "{unnamed}");
    assert_eq!(unnamed["ok"], false, "{unnamed}");
    assert!(
        unnamed["problems"].to_string().contains("pass --repo"),
        "{unnamed}"
    );
    let other = format!("30617:{owner}:another");
    let (code, elsewhere) = verify(&file, &["--relay", relay_url.as_str(), "--repo", &other]);
    assert_ne!(code, 0, "{elsewhere}");
    assert_eq!(elsewhere["ok"], false, "{elsewhere}");
    let mut strict = online.to_vec();
    strict.extend(["--min-threshold", "3"]);
    let (code, stricter) = verify(&file, &strict);
    assert_ne!(code, 0, "{stricter}");
    assert!(
        stricter["problems"].to_string().contains("--min-threshold"),
        "{stricter}"
    );
    let mut tampered = std::fs::read(&file).unwrap();
    tampered[0] ^= 0x01;
    let bad = dir.path().join("tampered.txt");
    std::fs::write(&bad, &tampered).unwrap();
    let (code, rejected) = verify(&bad, &online);
    assert_ne!(code, 0, "{rejected}");
    assert_eq!(rejected["ok"], false, "{rejected}");

    for (daemon, _) in runners {
        assert!(daemon.terminate().success(), "runner exits 0 on SIGTERM");
    }
    assert!(blossom.terminate().success(), "blossom exits 0 on SIGTERM");
    assert!(relay.terminate().success(), "relay exits 0 on SIGTERM");
}
