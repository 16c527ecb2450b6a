//! `quorum run DIR` as a user runs it: the pipeline of the repository's HEAD on the embedded
//! network, with the JSON that scripts rely on and exit code 0 only on success.

use std::path::Path;
use std::time::Duration;

use quorum_testkit::daemon::run_with_env;
use quorum_testkit::git::{git, sample_repo};
use serde_json::Value;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

fn commit_pipeline(repo: &Path, pipeline: &str) -> String {
    std::fs::create_dir_all(repo.join(".quorum")).unwrap();
    std::fs::write(repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "pipeline"]);
    git(repo, &["rev-parse", "HEAD"])
}

fn quorum_run(repo: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["run", repo.to_str().unwrap()];
    args.extend_from_slice(extra);
    // The embedded network's data stays beside the repository, not in the real home.
    let xdg = repo
        .parent()
        .expect("the repository has a parent")
        .join("xdg");
    let config = repo
        .parent()
        .expect("the repository has a parent")
        .join("config");
    let out = run_with_env(
        QUORUM,
        &args,
        &[("XDG_DATA_HOME", &xdg), ("XDG_CONFIG_HOME", &config)],
        RUN_TIMEOUT,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_executes_the_pipeline_of_head_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = sample_repo(dir.path());
    let commit = commit_pipeline(
        &repo,
        "name: ci\non: [push]\njobs:\n  test:\n    run: test -f build.sh\n  build:\n    needs: test\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n",
    );
    let (code, stdout, stderr) = quorum_run(&repo, &["--json"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "success");
    assert_eq!(report["commit"], commit.as_str());
    assert_eq!(report["run"].as_str().unwrap().len(), 64);
    let jobs = report["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|j| j["status"] == "success" && j["provider"].is_string())
    );
    let artifact = &report["artifacts"][0];
    assert_eq!(artifact["name"], "out/hello.txt");
    // The embedded network is gone once the run ends: check the reported hash against the
    // bytes the sample build is known to write.
    let expected = Sha256::digest(b"hello from quorum\n");
    assert_eq!(artifact["sha256"], hex::encode(expected));
}

#[test]
fn a_failing_job_fails_the_run_and_skips_its_dependants() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = sample_repo(dir.path());
    commit_pipeline(
        &repo,
        "on: [push]\njobs:\n  test:\n    run: echo 2 tests failed; exit 1\n  build:\n    needs: test\n    run: sh build.sh\n",
    );
    let (code, stdout, stderr) = quorum_run(&repo, &["--json"]);
    assert_eq!(code, 1, "stderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "failure");
    assert_eq!(report["jobs"][0]["status"], "failure");
    assert_eq!(report["jobs"][0]["reason"], "the step exited with code 1");
    assert_eq!(report["jobs"][1]["status"], "skipped");

    // Text mode shows progress and the failure on stderr.
    let (code, _, stderr) = quorum_run(&repo, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("✘ test"), "{stderr}");
    assert!(
        stderr.contains("2 tests failed"),
        "the log tail is shown live: {stderr}"
    );
}

#[test]
fn a_broken_pipeline_is_reported_with_positions_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = sample_repo(dir.path());
    commit_pipeline(
        &repo,
        "on: [push]\njobs:\n  test:\n    run: make test\n  build:\n    needs: tset\n    run: make\n",
    );
    let (code, _, stderr) = quorum_run(&repo, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains(".quorum/pipeline.yml:6:"), "{stderr}");
    assert!(stderr.contains("needs unknown job \"tset\""), "{stderr}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    git(&empty, &["init", "--quiet"]);
    let (code, _, stderr) = quorum_run(&empty, &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not a git repository with a commit"),
        "{stderr}"
    );
}

/// A `mode: quorum` release job on the embedded network: the runners form a quorum by DKG, a
/// local key mandates it, and the release is signed by the quorum key the JSON names.
#[test]
fn a_quorum_job_runs_on_a_quorum_of_embedded_runners_and_the_quorum_signs_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = sample_repo(dir.path());
    commit_pipeline(
        &repo,
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    mode: quorum\n    replicas: 3\n    threshold: 2\n    release: true\n",
    );
    let data = dir.path().join("net");
    let (code, stdout, stderr) = quorum_run(&repo, &["--json", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let quorum = &report["quorum"];
    assert_eq!(quorum["threshold"], 2, "{report}");
    let members = quorum["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    let pubkey = quorum["pubkey"].as_str().unwrap();
    assert_eq!(pubkey.len(), 64);
    assert_eq!(report["mandate"].as_str().unwrap().len(), 64);
    let build = &report["jobs"][0];
    assert_eq!(build["quorum"]["pubkey"], pubkey, "{build}");
    assert!(build["quorum"]["agreed"].as_array().unwrap().len() >= 2);
    assert_eq!(
        build["quorum"]["release"], report["release"],
        "the release is the quorum's binding"
    );
    // Every runner kept its share, readable by its owner only.
    for n in 1..=3 {
        let share = data.join(format!("runners/{n}/shares/{pubkey}.json"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&share).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", share.display());
    }
}

/// `--blossom URL`: after the run, a second Blossom server copies the released artifact from
/// the embedded one (BUD-04 mirror); the JSON reports the copy, the release lists it, and the
/// second server serves the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blossom_mirrors_the_released_artifacts_to_the_given_server() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _) = sample_repo(dir.path());
    commit_pipeline(
        &repo,
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n    release: true\n",
    );
    // The embedded Blossom the copy comes from is on loopback, which a mirroring server
    // refuses to fetch from unless told otherwise.
    let store = dir.path().join("second-blossom");
    let second = quorum_testkit::daemon::Daemon::spawn(
        QUORUM,
        &[
            "blossom",
            "--listen",
            "127.0.0.1:0",
            "--data",
            store.to_str().unwrap(),
            "--allow-private-mirror",
        ],
    );
    let base = second.value_of("blossom");
    // A release names the repository by its NIP-34 identity.
    let owner = nostr_sdk::Keys::generate().public_key().to_hex();
    let (code, stdout, stderr) = quorum_run(
        &repo,
        &[
            "--json",
            "--blossom",
            &base,
            "--owner",
            &owner,
            "--identifier",
            "sample",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let sha = hex::encode(Sha256::digest(b"hello from quorum\n"));
    assert_eq!(report["artifacts"][0]["sha256"], sha.as_str());
    let mirrors = report["mirrors"].as_array().unwrap();
    assert_eq!(mirrors.len(), 1, "{report}");
    assert_eq!(mirrors[0]["status"], "stored", "{report}");
    assert_eq!(mirrors[0]["sha256"], sha.as_str());
    assert_eq!(
        mirrors[0]["server"],
        reqwest::Url::parse(&base).unwrap().as_str()
    );
    assert!(report["release"].is_string(), "{report}");
    assert_eq!(report["nip82"]["assets"].as_array().unwrap().len(), 1);

    // The embedded network is gone; the second server still serves the bytes.
    let url = mirrors[0]["url"].as_str().unwrap();
    assert!(url.starts_with(base.trim_end_matches('/')), "{url}");
    let bytes = reqwest::get(format!("{}/{sha}", base.trim_end_matches('/')))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    assert!(second.terminate().success());
}

/// `quorum run --bunker`: the run's key stays in a NIP-46 remote signer (nostr-connect's, as a
/// bunker app runs it). Every request is signed by it, the request carrying a secret is NIP-44
/// encrypted through it, and the encrypted answer is read through it; the key is never on
/// this machine, and no event of the run is signed by another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_signs_and_encrypts_through_a_nip46_bunker() {
    use quorum_proto::nostr::{Filter, JsonUtil, Keys, Kind};
    use quorum_testkit::daemon::Daemon;
    let dir = tempfile::tempdir().unwrap();
    let up = Daemon::spawn(
        QUORUM,
        &[
            "up",
            "--data",
            dir.path().join("up").to_str().unwrap(),
            "--relay-listen",
            "127.0.0.1:0",
            "--blossom-listen",
            "127.0.0.1:0",
        ],
    );
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(up.value_of("endpoints")).unwrap()).unwrap();
    let relay = endpoints["relay"].as_str().expect("relay URL").to_string();

    let maintainer = Keys::generate();
    let bunker = quorum_testkit::bunker::Bunker::serve(&relay, maintainer.clone());
    let uri = bunker.uri().to_string();

    let (repo, _) = sample_repo(dir.path());
    commit_pipeline(
        &repo,
        "on: [push]\njobs:\n  sign:\n    run: test \"$DEPLOY_TOKEN\" = 'from-the-vault' && mkdir -p out && echo signed > out/proof.txt\n    secrets: [DEPLOY_TOKEN]\n    artifacts: [out/proof.txt]\n",
    );
    let config = dir.path().join("config");
    let args = [
        "run",
        repo.to_str().unwrap(),
        "--relay",
        &relay,
        "--bunker",
        &uri,
        "--secret",
        "DEPLOY_TOKEN",
        "--json",
    ];
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = config.clone();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_with_env(
                QUORUM,
                &args,
                &[
                    ("XDG_CONFIG_HOME", &config),
                    ("DEPLOY_TOKEN", Path::new("from-the-vault")),
                ],
                RUN_TIMEOUT,
            )
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(report["artifacts"][0]["name"], "out/proof.txt");
    assert!(
        !stderr.contains("from-the-vault") && !stdout.contains("from-the-vault"),
        "the secret leaked into the output"
    );
    // No local identity was made: the bunker was the only signer.
    assert!(
        !config.join("quorum/run.nsec").exists(),
        "a local run key was created"
    );

    // On the relay: the job request is the maintainer's, encrypted (it carries a secret) and
    // the secret is not in the clear anywhere in it.
    let client = nostr_sdk::Client::default();
    client.add_relay(relay.as_str()).await.unwrap();
    client.connect().await;
    let requests = client
        .fetch_events(
            Filter::new()
                .kind(Kind::from(5702))
                .since(quorum_proto::nostr::Timestamp::now() - Duration::from_secs(600)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let request = requests.first().expect("the job request is on the relay");
    assert_eq!(request.pubkey, maintainer.public_key());
    request.verify().unwrap();
    assert!(
        quorum_proto::nip90::JobRequest::is_encrypted(request),
        "a request with a secret travels encrypted"
    );
    assert!(!request.as_json().contains("from-the-vault"));
    client.shutdown().await;
    drop(bunker);
    assert!(up.terminate().success(), "quorum up exits 0 on SIGTERM");
}
