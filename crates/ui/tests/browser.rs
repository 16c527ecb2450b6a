//! The dashboard in a real browser: Debian's Chromium, driven through chromedriver with
//! fantoccini, watches one real routed run on loopback — our relay and Blossom server, a router
//! DVM, three quorum runner DVMs with bubblewrap (one of them backdoored), a 2-of-3 key dealt
//! to them under the owner's mandate — and sees, without reloading any page: the run appear,
//! its DAG, the log tail grow (ANSI colours, HTML in the log shown as text), the approval gate
//! (approved through the page's NIP-07 path), the quorum's tally naming the disagreeing
//! member, and the release's verdict; then a stranger's tampered release with its failed
//! check, and a hostile DVM announcement in the market, escaped. Screenshots of each view go to
//! `target/ui-screenshots/`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::member::MemberConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::Dvm;
use quorum_proto::approval::{
    APPROVAL_REQUEST, ApprovalRequest, ArtifactDigest, Decision, Verdict,
};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::nip89::{Announcement, Capabilities, JobLimits, Offer, Price};
use quorum_proto::nostr::{EventId, Filter, JsonUtil, Keys, Kind, PublicKey};
use quorum_proto::release::{Attestation, FileMetadata, ReleaseBinding};
use quorum_testkit::git::{commit_file, sample_repo};
use quorum_testnet::Network;
use quorum_testnet::quorum::{QuorumSpec, deal, publish};
use serde_json::json;
use sha2::{Digest, Sha256};

const PIPELINE: &str = "on: [push]
jobs:
  test:
    run: |
      for i in 1 2 3 4 5 6 7 8; do printf '\\033[32mcheck %s ok\\033[0m\\n' \"$i\"; sleep 1; done
      echo '<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">'
  build:
    needs: test
    run: sh build.sh
    artifacts: [out/hello.txt]
    mode: quorum
    replicas: 3
    threshold: 2
    release: true
  approve:
    needs: build
    approval:
      required: 1
";

const HOSTILE_NAME: &str = "<img src=x onerror=\"window.pwned=3\">evil-dvm";
const HOSTILE_ABOUT: &str = "<script>window.pwned=4</script>";

fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(60),
            straggler_wait: Duration::from_secs(3),
            reveal_wait: Duration::from_secs(20),
            ..AgreementConfig::default()
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(5),
            ..SigningConfig::default()
        },
    }
}

/// A backdoored build agent: it appends to the build's output before it is packed.
fn backdoor(work: &Path) {
    let file = work.join("out/hello.txt");
    let mut bytes = std::fs::read(&file).expect("the build wrote out/hello.txt");
    bytes.extend_from_slice(b"backdoor\n");
    std::fs::write(&file, bytes).unwrap();
}

/// chromedriver on a free loopback port, killed when dropped.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is required: apt-get install chromium chromium-driver");
        Chromedriver { child, port }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Chromedriver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,1400", "--force-device-scale-factor=1"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connected =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", driver.port))
                .await;
        match connected {
            Ok(client) => return client,
            Err(err) if Instant::now() > deadline => panic!("chromedriver did not start: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// When the test started: each screenshot's time is printed, to see where a slow run spends it.
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn screenshots() -> PathBuf {
    // target/debug/deps/browser-… → target/ui-screenshots
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from a target dir");
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &Client, name: &str) {
    eprintln!(
        "{:?} screenshot {name}",
        START.get_or_init(Instant::now).elapsed()
    );
    let png = client.screenshot().await.expect("a screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits until the JavaScript expression `condition` is true on the page, without reloading.
async fn until(client: &Client, what: &str, condition: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let script = format!("return !!({condition});");
    loop {
        if client.execute(&script, vec![]).await.unwrap() == json!(true) {
            return;
        }
        if Instant::now() > deadline {
            let text = client
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap();
            panic!(
                "{what}: not seen within {timeout:?}; the page says:\n{}",
                text.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn js(client: &Client, expression: &str) -> serde_json::Value {
    client
        .execute(&format!("return ({expression});"), vec![])
        .await
        .unwrap()
}

/// Opens `path` and marks the loaded page, so that [`still_same_page`] can tell a reload.
async fn open(client: &Client, base: &str, path: &str) {
    client.goto(&format!("{base}{path}")).await.unwrap();
    client
        .execute("window.__page = 'kept';", vec![])
        .await
        .unwrap();
    until(
        client,
        "the live stream",
        "document.getElementById('live-state').textContent === 'live'",
        Duration::from_secs(30),
    )
    .await;
}

async fn still_same_page(client: &Client) {
    assert_eq!(
        js(client, "window.__page").await,
        json!("kept"),
        "the page was reloaded"
    );
}

fn sha(bytes: &[u8]) -> Sha256Hex {
    Sha256Hex::from_bytes(Sha256::digest(bytes).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_its_quorum_approval_and_release_in_a_real_browser() {
    START.get_or_init(Instant::now);
    let driver = Chromedriver::start();
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, _) = sample_repo(dir.path());
    let commit = commit_file(&repo, ".quorum/pipeline.yml", PIPELINE, "pipeline");

    // Three runners hold shares of a 2-of-3 key; the third is backdoored.
    let share_dir = |n: usize| dir.path().join(format!("runner{n}")).join("shares");
    let dealt = deal(
        &network.relay,
        QuorumSpec {
            n: 3,
            t: 2,
            identifier: "sample",
            jobs: &["build"],
            allow: &[8708, 8700],
        },
        share_dir,
    )
    .await;
    let mut runners: Vec<Dvm> = Vec::new();
    for (n, keys) in dealt.members.iter().enumerate() {
        let data = dir.path().join(format!("runner{n}"));
        runners.push(if n == 2 {
            network
                .tampering_quorum_runner(&data, keys.clone(), &share_dir(n), fast(), backdoor)
                .await
        } else {
            network
                .quorum_runner(&data, keys.clone(), &share_dir(n), fast())
                .await
        });
    }
    let url = format!("file://{}", repo.display());
    dealt
        .publish_repository(&network.relay, &url, "refs/heads/main", &commit)
        .await;
    let router_keys = Keys::generate();
    let router = network
        .router(&dir.path().join("router"), &router_keys)
        .await;

    // The dashboard, as `quorum ui --relay … --blossom …` serves it.
    let dashboard = quorum_ui::Dashboard::connect(quorum_ui::UiConfig {
        relays: vec![network.relay.clone()],
        blossom: vec![network.blossom.clone()],
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(quorum_ui::serve(dashboard, listener, async move {
        let _ = stopped.await;
    }));
    let client = browser(&driver).await;

    // The runs list is open before the run exists; the run appears in it.
    open(&client, &base, "/").await;
    let repo_id = dealt.repo();
    let mut run = quorum_proto::run::RunRequest::new(url, &commit);
    run.repo_id = Some(repo_id.clone());
    run.git_ref = Some("refs/heads/main".into());
    run.runners = runners.iter().map(Dvm::public_key).collect();
    let customer = network.client().await;
    let request = customer
        .submit(&run.to_request().provider(router_keys.public_key()), false)
        .await
        .unwrap();
    let id = request.id.to_hex();
    until(
        &client,
        "the new run in the list",
        &format!("document.querySelector('tr[data-run=\"{id}\"]')"),
        Duration::from_secs(20),
    )
    .await;
    still_same_page(&client).await;
    shot(&client, "1-runs").await;

    // Its log tail grows while the test job runs, in colour, with the HTML in it as text.
    open(&client, &base, &format!("/run/{id}/job/test")).await;
    until(
        &client,
        "log lines",
        "document.querySelectorAll('#log .ln').length >= 2",
        Duration::from_secs(60),
    )
    .await;
    let first = js(&client, "document.querySelectorAll('#log .ln').length")
        .await
        .as_u64()
        .unwrap();
    until(
        &client,
        "the tail growing",
        &format!("document.querySelectorAll('#log .ln').length > {first}"),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        js(
            &client,
            "document.querySelector('#log .ln span.c2') !== null"
        )
        .await
            == json!(true),
        "ANSI green is rendered"
    );
    shot(&client, "2-log-tail").await;
    until(&client, "the full log from Blossom", "document.getElementById('full-log') && document.getElementById('full-log').textContent.includes('check 8 ok')", Duration::from_secs(60)).await;
    still_same_page(&client).await;
    let log = js(&client, "document.getElementById('full-log').textContent").await;
    assert!(
        log.as_str()
            .unwrap()
            .contains("<script>window.pwned=1</script><img src=x"),
        "{log}"
    );
    assert_eq!(
        js(
            &client,
            "document.querySelectorAll('main img, main script').length"
        )
        .await,
        json!(0)
    );
    assert_eq!(js(&client, "typeof window.pwned").await, json!("undefined"));

    // The run's DAG: test → build, each job's mode, and the gate waiting with its command.
    open(&client, &base, &format!("/run/{id}")).await;
    until(&client, "the build done and the gate waiting", "document.querySelector('a.node.success[data-job=\"build\"]') && document.querySelector('a.node.waiting[data-job=\"approve\"]') && document.querySelector('section.gate pre.command')", Duration::from_secs(120)).await;
    // test → build (the build request's `needs` input), build → approve (the gate shows build's files).
    until(
        &client,
        "two edges",
        "document.querySelectorAll('svg.dag path.edge').length === 2",
        Duration::from_secs(30),
    )
    .await;
    let modes = js(&client, "[...document.querySelectorAll('svg.dag a.node text.mode')].map(t => t.textContent).join('|')").await;
    let modes = modes.as_str().unwrap();
    assert!(
        modes.contains("router") && modes.contains("quorum") && modes.contains("approval"),
        "{modes}"
    );
    let command = js(
        &client,
        "document.querySelector('section.gate pre.command').textContent",
    )
    .await;
    assert!(
        command.as_str().unwrap().starts_with("quorum approve "),
        "{command}"
    );
    still_same_page(&client).await;
    shot(&client, "3-run-dag").await;
    // The graph works from the keyboard: a job's node takes focus, Enter opens the job.
    client
        .execute(
            "document.querySelector('a.node[data-job=\"build\"]').focus();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        js(&client, "document.activeElement.getAttribute('data-job')").await,
        json!("build")
    );
    client
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    until(
        &client,
        "the job page opened by Enter",
        &format!("location.pathname === '/run/{id}/job/build'"),
        Duration::from_secs(30),
    )
    .await;

    // The gate's page shows what is approved; a NIP-07 signer approves from the page. (The
    // stand-in signer hands back the maintainer's signature of the same verdict.)
    open(&client, &base, &format!("/run/{id}/job/approve")).await;
    let asks = customer
        .fetch(
            Filter::new()
                .kind(APPROVAL_REQUEST)
                .author(router_keys.public_key()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let ask = asks.first().expect("the router asked");
    let parsed = ApprovalRequest::from_event(ask).unwrap();
    let verdict = Verdict::on(Decision::Approve, ask, &parsed, parsed.expiration)
        .to_event_builder()
        .unwrap()
        .sign_with_keys(&dealt.owner)
        .unwrap();
    until(
        &client,
        "what is approved",
        "document.querySelector('section.gate table td code.sha')",
        Duration::from_secs(30),
    )
    .await;
    shot(&client, "4-approval").await;
    client
        .execute(
            "window.nostr = { signEvent: async () => JSON.parse(arguments[0]) }; window.quorumUi.wireSigner();",
            vec![json!(verdict.as_json())],
        )
        .await
        .unwrap();
    client
        .find(Locator::Css("button.nip07"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The page says it was published, until the live page shows the gate passed (and the
    // maintainer's approval) in its place.
    until(&client, "the verdict published", "(document.querySelector('.nip07-result') && document.querySelector('.nip07-result').textContent.startsWith('published')) || document.querySelector('h1 .badge.success')", Duration::from_secs(30)).await;
    until(&client, "the gate passed", "document.querySelector('h1 .badge.success') && document.querySelector('section.gate .badge.success')", Duration::from_secs(20)).await;

    // The quorum: who committed and revealed what, the tally naming the backdoored member.
    open(&client, &base, &format!("/run/{id}/job/build")).await;
    let liar = runners[2].public_key().to_hex();
    until(&client, "the tally", "document.querySelector('#tally .agreed .count') && document.querySelector('#tally .agreed .count').textContent === '2' && document.querySelector('#tally .disagreed .count').textContent === '1'", Duration::from_secs(20)).await;
    assert_eq!(
        js(
            &client,
            &format!("!!document.querySelector('#tally .disagreed a[title=\"{liar}\"]')")
        )
        .await,
        json!(true)
    );
    assert_eq!(
        js(&client, "document.getElementById('threshold').textContent").await,
        json!("2 of 3")
    );
    assert_eq!(
        js(
            &client,
            "document.querySelectorAll('table.files tr.other').length"
        )
        .await,
        json!(1),
        "the backdoored bytes"
    );
    assert_eq!(
        js(
            &client,
            "document.querySelectorAll('ol.timeline:not(#signing) li').length"
        )
        .await,
        json!(6),
        "3 commitments, 3 reveals"
    );
    // At least t round-1 commitments, a request, t round-2 shares.
    until(
        &client,
        "the signing rounds",
        "document.querySelectorAll('#signing li').length >= 5",
        Duration::from_secs(30),
    )
    .await;
    shot(&client, "5-quorum").await;

    // The release and its verdict, from quorum verify's code, appear once the run is over.
    open(
        &client,
        &base,
        &format!(
            "/releases?repo={}",
            quorum_ui::html::url_part(&repo_id.to_string())
        ),
    )
    .await;
    until(&client, "the verified release", "document.querySelector('.verdict[data-ok=\"true\"]') && document.querySelector('.mirrors li')", Duration::from_secs(120)).await;
    let checks = js(
        &client,
        "document.querySelectorAll('.verdict[data-ok=\"true\"] .checks li.pass').length",
    )
    .await;
    assert!(checks.as_u64().unwrap() >= 5, "{checks}");
    shot(&client, "6-release").await;

    // A stranger publishes a release of the same repository with other bytes: the page shows
    // it, and the check it fails.
    let stranger = Keys::generate();
    let evil = b"hello from quorum\nbackdoor\n";
    let file = dir.path().join("evil.txt");
    std::fs::write(&file, evil).unwrap();
    quorum_blossom::client::BlossomClient::new(stranger.clone())
        .upload_file(&network.blossom, &file)
        .await
        .unwrap();
    let binding = ReleaseBinding::new(
        repo_id.clone(),
        &commit,
        "ab".repeat(32),
        vec![ArtifactDigest::new("build/out/hello.txt", sha(evil))],
        // "built by" a machine of the stranger's: one builder's word, no quorum.
        vec![Attestation {
            result: EventId::all_zeros(),
            builder: Keys::generate().public_key(),
        }],
    )
    .unwrap()
    .to_event_builder(quorum_proto::nostr::Timestamp::now())
    .unwrap()
    .sign_with_keys(&stranger)
    .unwrap();
    let metadata = FileMetadata::for_artifact(
        &[network
            .blossom
            .join(&sha(evil).to_hex())
            .unwrap()
            .to_string()],
        "text/plain",
        sha(evil),
        evil.len() as u64,
    )
    .unwrap()
    .to_event_builder()
    .sign_with_keys(&stranger)
    .unwrap();
    publish(&network.relay, &[&binding, &metadata]).await;
    until(
        &client,
        "the tampered release",
        "document.querySelector('.verdict[data-ok=\"false\"] .checks li.fail')",
        Duration::from_secs(30),
    )
    .await;
    let failed = js(&client, "[...document.querySelectorAll('.verdict[data-ok=\"false\"] .checks li.fail')].map(li => li.textContent).join('\\n')").await;
    assert!(
        failed.as_str().unwrap().contains("not by a quorum"),
        "{failed}"
    );
    assert_eq!(
        js(
            &client,
            "document.querySelectorAll('.verdict[data-ok=\"true\"]').length"
        )
        .await,
        json!(1),
        "the honest release still verifies"
    );
    still_same_page(&client).await;
    client
        .execute(
            "document.querySelector('.verdict[data-ok=\"false\"]').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    shot(&client, "7-release-tampered").await;

    // The market: every DVM announced, a hostile announcement shown as text.
    let hostile = Announcement {
        identifier: "evil".into(),
        name: HOSTILE_NAME.into(),
        about: HOSTILE_ABOUT.into(),
        kinds: vec![Kind::from_u16(5702)],
        offer: Offer {
            capabilities: Capabilities {
                arch: "x86_64".into(),
                os: "linux".into(),
                sandbox: "none".into(),
                toolchains: vec![],
                network: true,
                images: false,
                require_image: false,
            },
            price: Price {
                msats_per_job: 21_000,
                ..Price::default()
            },
            limits: JobLimits {
                concurrency: 1,
                max_timeout_secs: 60,
                max_request_bytes: 65536,
            },
        },
        operator: None::<PublicKey>,
    }
    .to_event_builder()
    .sign_with_keys(&stranger)
    .unwrap();
    publish(&network.relay, &[&hostile]).await;
    open(&client, &base, "/market").await;
    let row = format!("dvm-{}", stranger.public_key().to_hex());
    until(
        &client,
        "the hostile DVM",
        &format!("document.getElementById('{row}')"),
        Duration::from_secs(20),
    )
    .await;
    for runner in &runners {
        assert_eq!(
            js(
                &client,
                &format!(
                    "!!document.getElementById('dvm-{}')",
                    runner.public_key().to_hex()
                )
            )
            .await,
            json!(true)
        );
    }
    assert_eq!(
        js(
            &client,
            &format!("document.querySelector('#{row} .dvm-name').textContent")
        )
        .await,
        json!(HOSTILE_NAME)
    );
    assert_eq!(
        js(
            &client,
            &format!("document.querySelector('#{row} .about').textContent")
        )
        .await,
        json!(HOSTILE_ABOUT)
    );
    assert_eq!(
        js(
            &client,
            "document.querySelectorAll('main img, main script').length"
        )
        .await,
        json!(0)
    );
    assert_eq!(js(&client, "typeof window.pwned").await, json!("undefined"));
    shot(&client, "8-market").await;

    // The runs list shows the routed run once (not again as the router's CI status), filters,
    // and the run page fits a phone's screen.
    open(&client, &base, "/").await;
    assert_eq!(
        js(&client, "document.querySelectorAll('tr[data-run]').length").await,
        json!(1)
    );
    open(&client, &base, "/?status=failure").await;
    assert_eq!(
        js(
            &client,
            &format!("!!document.querySelector('tr[data-run=\"{id}\"]')")
        )
        .await,
        json!(false)
    );
    client.set_window_size(390, 844).await.unwrap();
    open(&client, &base, &format!("/run/{id}")).await;
    until(
        &client,
        "the finished run",
        "document.querySelector('h1 .badge.success')",
        Duration::from_secs(60),
    )
    .await;
    shot(&client, "9-run-phone").await;

    client.close().await.unwrap();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    customer.shutdown().await;
    router.shutdown().await;
    for runner in runners {
        runner.shutdown().await;
    }
}
