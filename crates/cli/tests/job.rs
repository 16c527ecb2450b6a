//! `quorum dvm runner` and `quorum job` as a user runs them: three processes (the embedded
//! network, a runner, the customer) talking over loopback, with the interface scripts rely on
//! (`--json`, exit codes) checked.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use quorum_testkit::daemon::{Daemon, run};
use quorum_testkit::git::sample_repo;
use serde_json::Value;
use sha2::{Digest, Sha256};

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

struct Fleet {
    _up: Daemon,
    _runner: Daemon,
    relay: String,
    runner: String,
}

/// `quorum up` with no runners of its own, on free ports, data in `data`, and `extra` flags.
fn start_up(data: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "up",
        "--data",
        data.to_str().unwrap(),
        "--relay-listen",
        "127.0.0.1:0",
        "--blossom-listen",
        "127.0.0.1:0",
        "--runners",
        "0",
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(QUORUM, &args)
}

fn start_fleet(dir: &Path) -> Fleet {
    let up = start_up(&dir.join("net"), &[]);
    let relay = up.value_of("relay");
    let blossom = up.value_of("blossom");
    // Relative paths, as a person types them: the runner must not hand the sandbox a
    // relative work dir (it did, once).
    let runner = Daemon::spawn_in(
        Some(dir),
        QUORUM,
        &[
            "dvm",
            "runner",
            "--relay",
            &relay,
            "--blossom",
            &blossom,
            "--key",
            "runner/runner.nsec",
            "--data",
            "runner",
            "--allow-local-repos",
        ],
    );
    let key = dir.join("runner/runner.nsec");
    let pubkey = runner.value_of("runner");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a created key file is private");
    Fleet {
        _up: up,
        _runner: runner,
        relay,
        runner: pubkey,
    }
}

fn job(args: &[&str]) -> (i32, Value) {
    let out = run(QUORUM, args, JOB_TIMEOUT);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "--json must print one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// `quorum dvm runner` charging `price` (its price flags) at `mint`, data and key in `data`.
fn priced_runner(relay: &str, blossom: &str, mint: &str, data: &Path, price: &[&str]) -> Daemon {
    let key = data.join("runner.nsec");
    let mut args = vec![
        "dvm",
        "runner",
        "--relay",
        relay,
        "--blossom",
        blossom,
        "--key",
        key.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--allow-local-repos",
        "--mint",
        mint,
    ];
    args.extend_from_slice(price);
    Daemon::spawn(QUORUM, &args)
}

/// `quorum wallet --mint MINT --data WALLET ARGS…`, which must succeed; its stdout.
fn wallet(mint: &str, wallet: &Path, args: &[&str]) -> String {
    let mut all = vec!["wallet", "--mint", mint, "--data", wallet.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run(QUORUM, &all, JOB_TIMEOUT);
    assert!(out.status.success(), "quorum {all:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The balance of a wallet, in sats.
fn balance(mint: &str, dir: &Path) -> u64 {
    let text = wallet(mint, dir, &["balance"]);
    text.trim().trim_end_matches(" sat").parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_build_runs_on_a_runner_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(dir.path());
    let (repo, commit) = sample_repo(dir.path());
    let repo_url = format!("file://{}", repo.display());

    let (code, report) = job(&[
        "job",
        "build",
        "--relay",
        &fleet.relay,
        "--repo",
        &repo_url,
        "--commit",
        &commit,
        "--run",
        "sh build.sh",
        "--artifact",
        "out/hello.txt",
        "--artifact",
        "out/dist",
        "--provider",
        &fleet.runner,
        "--json",
    ]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["status"], "success");
    assert_eq!(report["provider"], fleet.runner.as_str());
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["request"].as_str().unwrap().len(), 64);
    assert_eq!(report["result"].as_str().unwrap().len(), 64);
    let artifacts = report["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2, "{report}");
    let http = reqwest::Client::new();
    for artifact in artifacts {
        let url = artifact["urls"][0].as_str().unwrap();
        let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            artifact["sha256"].as_str().unwrap(),
            "{artifact}"
        );
        assert_eq!(bytes.len() as u64, artifact["size"].as_u64().unwrap());
    }
    assert!(report["log"]["urls"][0].as_str().is_some(), "{report}");

    // A failing step: exit code 1 from `quorum`, the step's own code in the JSON.
    let (code, report) = job(&[
        "job",
        "build",
        "--relay",
        &fleet.relay,
        "--repo",
        &repo_url,
        "--commit",
        &commit,
        "--run",
        "echo tests failed >&2; exit 7",
        "--provider",
        &fleet.runner,
        "--json",
    ]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["status"], "error");
    assert_eq!(report["exit_code"], 7);

    // A request the runner cannot parse: error feedback, named.
    let (code, report) = job(&[
        "job",
        "submit",
        "--relay",
        &fleet.relay,
        "--kind",
        "5702",
        "--input",
        &format!("url:{repo_url}"),
        "--param",
        "run=true",
        "--provider",
        &fleet.runner,
        "--json",
    ]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["status"], "error");
    assert!(
        report["message"].as_str().unwrap().contains("repository"),
        "{report}"
    );

    // A quorum request naming a mandate nobody published, without the maintainer's evidence
    // of its source: refused with the reason, nothing built.
    let mandate = "ab".repeat(32);
    let (code, report) = job(&[
        "job",
        "submit",
        "--relay",
        &fleet.relay,
        "--kind",
        "5702",
        "--input",
        &format!("url#repo:{repo_url}"),
        "--param",
        &format!("commit={commit}"),
        "--param",
        "run=sh build.sh",
        "--param",
        &format!("mandate={mandate}"),
        "--provider",
        &fleet.runner,
        "--json",
    ]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["status"], "error");
    let message = report["message"].as_str().unwrap();
    assert!(message.starts_with("refused: "), "{report}");
    assert!(message.contains(&mandate), "{report}");
}

#[test]
fn bad_job_arguments_fail_before_anything_is_published() {
    let out = run(
        QUORUM,
        &[
            "job",
            "build",
            "--relay",
            "ws://127.0.0.1:9",
            "--repo",
            "https://git.example/r.git",
            "--commit",
            "main",
            "--run",
            "true",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a full 40- or 64-hex"), "{stderr}");

    let out = run(
        QUORUM,
        &[
            "job",
            "build",
            "--relay",
            "ws://127.0.0.1:9",
            "--repo",
            "https://git.example/r.git",
            "--commit",
            &"a".repeat(40),
            "--run",
            "true",
            "--secret",
            "TOKEN=x",
        ],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("need --provider"), "{stderr}");
}

#[test]
fn a_runner_refuses_a_key_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("open.nsec");
    std::fs::write(&key, "a".repeat(64)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(
        QUORUM,
        &[
            "dvm",
            "runner",
            "--relay",
            "ws://127.0.0.1:9",
            "--blossom",
            "http://127.0.0.1:9",
            "--key",
            key.to_str().unwrap(),
            "--data",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(&"a".repeat(64)));
}

/// `quorum up --mint` prints a mint; a runner charging per job and per second takes its
/// payment there; `quorum job build --budget` pays when asked and gets the change back.
#[test]
fn a_paid_job_pays_when_asked_within_the_budget_and_gets_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("net");
    let up = start_up(&data, &["--mint"]);
    let relay = up.value_of("relay");
    let blossom = up.value_of("blossom");
    let mint = up.value_of("mint");
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(data.join("endpoints.json")).unwrap()).unwrap();
    assert_eq!(endpoints["mint"], mint.as_str());
    // 2 sats a job and 1 sat a second for at most 20 s: 22 sats up front.
    let runner_data = dir.path().join("runner");
    let runner = priced_runner(
        &relay,
        &blossom,
        &mint,
        &runner_data,
        &[
            "--price-msats",
            "2000",
            "--price-msats-per-second",
            "1000",
            "--max-timeout",
            "20",
        ],
    );
    let dvm = runner.value_of("runner");
    let wallet_dir = dir.path().join("wallet");
    wallet(&mint, &wallet_dir, &["mint", "50"]);
    let (repo, commit) = sample_repo(dir.path());
    let repo_url = format!("file://{}", repo.display());
    let build = |budget: &str, json: &[&str]| {
        let mut args = vec![
            "job",
            "build",
            "--relay",
            &relay,
            "--repo",
            &repo_url,
            "--commit",
            &commit,
            "--run",
            "sh build.sh",
            "--provider",
            &dvm,
            "--mint",
            &mint,
            "--budget",
            budget,
            "--wallet",
            wallet_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(json);
        run(QUORUM, &args, JOB_TIMEOUT)
    };

    // Over the budget: nothing is paid, and the command says why.
    let out = build("10", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("asks 22000 msats, over the budget of 10000 msats"),
        "{stderr}"
    );
    assert_eq!(balance(&mint, &wallet_dir), 50);

    let out = build("30", &["--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    assert_eq!(report["status"], "success");
    assert_eq!(report["paid_msats"], 22_000, "{report}");
    let change = report["change_msats"].as_u64().unwrap();
    assert!(
        change > 0 && change < 20_000,
        "a few seconds' work is charged, the rest comes back: {report}"
    );
    let cost = 22 - change / 1000;
    assert_eq!(balance(&mint, &wallet_dir), 50 - cost, "{report}");
    assert_eq!(
        balance(&mint, &runner_data.join("wallet")),
        cost,
        "the runner kept what it charged"
    );
    drop(runner);
    drop(up);
}

/// `quorum dvm router --mint --fee-msats` as its operator starts it: an unpaid run gets
/// `payment-required`; `quorum job submit --kind 5700 --budget` pays the fee and a budget in one
/// token; the router hires a priced runner from its own wallet, keeps exactly its fee, and the
/// rest comes back to the requester as change; the run report says what went where.
#[test]
fn a_paid_router_hires_a_priced_runner_with_the_requesters_budget() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(&dir.path().join("net"), &["--mint"]);
    let relay = up.value_of("relay");
    let blossom = up.value_of("blossom");
    let mint = up.value_of("mint");
    let runner_data = dir.path().join("runner");
    let runner = priced_runner(
        &relay,
        &blossom,
        &mint,
        &runner_data,
        &["--price-msats", "3000"],
    );
    let runner_key = runner.value_of("runner");
    let router_data = dir.path().join("router");
    let router = Daemon::spawn(
        QUORUM,
        &[
            "dvm",
            "router",
            "--relay",
            &relay,
            "--key",
            router_data.join("router.nsec").to_str().unwrap(),
            "--data",
            router_data.to_str().unwrap(),
            "--allow-local-repos",
            "--runner",
            &runner_key,
            "--mint",
            &mint,
            "--fee-msats",
            "2000",
        ],
    );
    let router_key = router.value_of("router");
    let wallet_dir = dir.path().join("wallet");
    wallet(&mint, &wallet_dir, &["mint", "20"]);
    let (repo, _) = sample_repo(dir.path());
    let commit = quorum_testkit::git::commit_file(
        &repo,
        ".quorum/pipeline.yml",
        "on: [push]\njobs:\n  build:\n    run: sh build.sh\n    artifacts: [out/hello.txt]\n",
        "pipeline",
    );
    let repo_input = format!("url#repo:file://{}", repo.display());
    let commit_param = format!("commit={commit}");
    let submit = |budget: Option<&str>| {
        let mut args = vec![
            "job",
            "submit",
            "--relay",
            &relay,
            "--kind",
            "5700",
            "--provider",
            &router_key,
            "--input",
            &repo_input,
            "--param",
            &commit_param,
            "--wait",
            "120",
            "--json",
        ];
        if let Some(budget) = budget {
            args.extend_from_slice(&[
                "--mint",
                &mint,
                "--budget",
                budget,
                "--wallet",
                wallet_dir.to_str().unwrap(),
            ]);
        }
        job(&args)
    };

    // Unpaid: the router asks for its fee and runs nothing.
    let (code, unpaid) = submit(None);
    assert_ne!(code, 0, "{unpaid}");
    assert_eq!(unpaid["status"], "error", "{unpaid}");
    let message = unpaid["message"].as_str().unwrap_or_default();
    assert!(message.contains("2000 msats"), "{unpaid}");
    assert_eq!(balance(&mint, &runner_data.join("wallet")), 0);

    // 10 sats: the fee (2) and a budget of 8 for the runner (3); 5 come back.
    let (code, paid) = submit(Some("10"));
    assert_eq!(code, 0, "{paid}");
    assert_eq!(paid["paid_msats"], 10_000, "{paid}");
    assert_eq!(paid["change_msats"], 5_000, "{paid}");
    let report: Value = serde_json::from_str(paid["content"].as_str().unwrap()).unwrap();
    assert_eq!(report["status"], "success", "{report}");
    assert_eq!(
        report["payment"],
        serde_json::json!({
            "paid_msats": 10_000,
            "fee_msats": 2_000,
            "runners_msats": 3_000,
            "change_msats": 5_000
        }),
        "{report}"
    );
    assert_eq!(report["jobs"][0]["paid_msats"], 3_000, "{report}");
    assert_eq!(
        balance(&mint, &wallet_dir),
        15,
        "the requester paid the fee and the runner, no more"
    );
    assert_eq!(
        balance(&mint, &router_data.join("wallet")),
        2,
        "the router kept its fee"
    );
    assert_eq!(
        balance(&mint, &runner_data.join("wallet")),
        3,
        "the runner was paid its price"
    );
    drop(router);
    drop(runner);
    drop(up);
}
