//! The operator's whole quorum flow with the real binary, every piece a separate process on
//! loopback: `quorum relay`, `quorum blossom` and three sandboxed `quorum dvm runner`s; a
//! maintainer makes a 2-of-3 quorum of the runners by DKG with `quorum mandate create`, runs a
//! `mode: quorum` release job under that mandate with `quorum run`, downloads the released
//! file from Blossom and checks it with `quorum verify` — then flips one byte and sees it fail.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use quorum_testkit::daemon::{Daemon, run};
use quorum_testkit::git::{git, sample_repo};
use serde_json::Value;

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
const IDENTIFIER: &str = "sample";

/// Runs `quorum ARGS…` with a time limit; returns the exit code, stdout and stderr.
fn quorum(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let out = run(QUORUM, args, timeout);
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

    // The maintainer owns the repository, so no announcement is needed to make them one.
    let key = dir.path().join("maintainer.nsec");
    let maintainer = quorum_dvm::keyfile::create(&key).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the maintainer key file has mode {mode:o}");
    let owner = maintainer.public_key().to_hex();
    let coordinate = format!("30617:{owner}:{IDENTIFIER}");

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

    // 2. The pipeline: one quorum release job, run under the mandate.
    let (repo, _) = sample_repo(dir.path());
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(
        repo.join(".quorum/pipeline.yml"),
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "pipeline"]);
    let (code, stdout, stderr) = quorum(
        &[
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
        ],
        Duration::from_secs(240),
    );
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

    // 4. `quorum verify`: the quorum of the mandate signed it and at least two agreed.
    let verify = |file: &Path| {
        let (code, stdout, stderr) = quorum(
            &[
                "verify",
                file.to_str().unwrap(),
                "--relay",
                &relay_url,
                "--json",
            ],
            Duration::from_secs(60),
        );
        let value: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("verify printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (code, value)
    };
    let (code, verified) = verify(&file);
    assert_eq!(code, 0, "{verified}");
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["sha256"], artifact["sha256"]);
    assert_eq!(verified["release"], release);
    assert_eq!(verified["quorum"], quorum_key.as_str(), "{verified}");
    assert_eq!(verified["signer"], quorum_key.as_str(), "{verified}");
    assert_eq!(verified["mandate"], mandate.as_str(), "{verified}");
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

    // 5. One byte flipped: nothing lists these bytes.
    let mut tampered = bytes.to_vec();
    tampered[0] ^= 0x01;
    let bad = dir.path().join("tampered.txt");
    std::fs::write(&bad, &tampered).unwrap();
    let (code, rejected) = verify(&bad);
    assert_ne!(code, 0, "{rejected}");
    assert_eq!(rejected["ok"], false, "{rejected}");

    for (daemon, _) in runners {
        assert!(daemon.terminate().success(), "runner exits 0 on SIGTERM");
    }
    assert!(blossom.terminate().success(), "blossom exits 0 on SIGTERM");
    assert!(relay.terminate().success(), "relay exits 0 on SIGTERM");
}
