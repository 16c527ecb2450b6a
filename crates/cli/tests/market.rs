//! `quorum market`, `quorum dvm recorder` and `quorum wallet` as a user runs them: the binary
//! against `quorum up`'s relay and runners, and against cdk's mint in process (fake Lightning).

use std::time::Duration;

use quorum_testkit::daemon::Daemon;

const QUORUM: &str = env!("CARGO_BIN_EXE_quorum");

fn run_quorum(args: &[&str]) -> std::process::Output {
    quorum_testkit::daemon::run(QUORUM, args, Duration::from_secs(60))
}

fn ok(args: &[&str]) -> String {
    let out = run_quorum(args);
    assert!(
        out.status.success(),
        "quorum {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_market_shows_the_runners_their_operator_and_what_a_policy_says() {
    let data = tempfile::tempdir().unwrap();
    let up = Daemon::spawn(
        QUORUM,
        &[
            "up",
            "--data",
            data.path().to_str().unwrap(),
            "--relay-listen",
            "127.0.0.1:0",
            "--blossom-listen",
            "127.0.0.1:0",
        ],
    );
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(up.value_of("endpoints")).unwrap()).unwrap();
    let relay = endpoints["relay"].as_str().unwrap();
    let operator = endpoints["operator"].as_str().unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["market", "--relay", relay, "--json"])).unwrap();
    let judged = json["judged"].as_array().unwrap();
    let mut dvms: Vec<&str> = judged.iter().map(|j| j["dvm"].as_str().unwrap()).collect();
    dvms.sort();
    let mut runners: Vec<&str> = endpoints["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    runners.sort();
    assert_eq!(dvms, runners, "{json}");
    for j in judged {
        assert_eq!(j["operator"], operator, "{j}");
        assert_eq!(j["excluded"], serde_json::json!([]), "{j}");
    }

    // One operator runs all three: a policy asking for two is told so, and a price cap that
    // the free runners meet admits them.
    let policy = data.path().join("policy.yml");
    std::fs::write(&policy, "price: { per_job: 1 }\ndiversity: 2\n").unwrap();
    let table = ok(&[
        "market",
        "--relay",
        relay,
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(table.matches(" yes").count(), 3, "{table}");
    assert!(
        table.contains("come from 1 distinct confirmed operator(s); 2 needed"),
        "{table}"
    );
    // A policy that does not lint is refused with its position.
    std::fs::write(&policy, "prefer: slowest\n").unwrap();
    let out = run_quorum(&[
        "market",
        "--relay",
        relay,
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.yml:1:9: error: unknown preference \"slowest\""),
        "{err}"
    );

    // A record keeper's round: nothing has run yet, so it has no figures to publish.
    let key = data.path().join("recorder.nsec");
    let out = ok(&[
        "dvm",
        "recorder",
        "--relay",
        relay,
        "--key",
        key.to_str().unwrap(),
        "--once",
    ]);
    assert!(out.contains("recorded 0 DVM(s)"), "{out}");
    assert!(up.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_mints_sends_and_receives_at_a_real_mint() {
    let mint = quorum_pay::fake_mint::FakeMint::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    let wallet = |who: &std::path::Path, rest: &[&str]| {
        let mut args = vec![
            "wallet",
            "--mint",
            &mint.url,
            "--data",
            who.to_str().unwrap(),
        ];
        args.extend_from_slice(rest);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ok(&args)
        })
    };
    let minted = wallet(&alice, &["mint", "20", "--wait", "20"])
        .await
        .unwrap();
    assert!(minted.contains("balance 20 sat"), "{minted}");
    let token = wallet(&alice, &["send", "5"]).await.unwrap();
    assert!(token.trim().starts_with("cashu"), "{token}");
    let received = wallet(&bob, &["receive", token.trim()]).await.unwrap();
    assert!(received.contains("received 5 sat"), "{received}");
    let balance = wallet(&alice, &["balance"]).await.unwrap();
    assert_eq!(balance.trim(), "15 sat");
    // Spent already: refused, and nothing changes.
    let again = tokio::task::spawn_blocking({
        let (mint, bob, token) = (mint.url.clone(), bob.clone(), token.trim().to_string());
        move || {
            run_quorum(&[
                "wallet",
                "--mint",
                &mint,
                "--data",
                bob.to_str().unwrap(),
                "receive",
                &token,
            ])
        }
    })
    .await
    .unwrap();
    assert!(!again.status.success());
    // The seed is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice.join("seed"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
