//! The runner DVM end to end on loopback: a real relay, a real Blossom server, real git, and
//! bubblewrap. A customer publishes run-step requests and checks what comes back, downloading
//! and re-hashing every artifact.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::Dvm;
use quorum_proto::nip90::{FeedbackStatus, JobFeedback, JobResult};
use quorum_proto::step::{StepJob, StepReport};
use quorum_testkit::git::{SAMPLE_COMMIT_TIME, sample_repo};
use quorum_testnet::Network;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(60);

/// The fork bomb test runs alone: on a machine where the sandbox has no pids cgroup (it says so
/// in its notes) a bomb is bounded only by its timeout, and the forks it takes from the machine
/// would fail unrelated steps of tests running beside it. Every other test holds this shared.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn start_runner(network: &Network, data: &Path) -> (Dvm, Keys) {
    let keys = Keys::generate();
    let dvm = network.runner_with_keys(data, keys.clone(), true).await;
    (dvm, keys)
}

struct Customer {
    keys: Keys,
    client: Client,
    notifications: tokio::sync::broadcast::Receiver<RelayPoolNotification>,
}

impl Customer {
    async fn connect(network: &Network) -> Customer {
        let keys = Keys::generate();
        let client = Client::new(keys.clone());
        client.add_relay(network.relay.clone()).await.unwrap();
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(5)).await;
        let notifications = client.notifications();
        client
            .subscribe(Filter::new().pubkey(keys.public_key()), None)
            .await
            .unwrap();
        Customer {
            keys,
            client,
            notifications,
        }
    }

    async fn submit(&self, step: &StepJob, provider: PublicKey, encrypt: bool) -> Event {
        let request = step.to_request().provider(provider);
        let builder = if encrypt {
            request
                .to_encrypted_event_builder(self.keys.secret_key())
                .unwrap()
        } else {
            request.to_event_builder()
        };
        let event = builder.sign_with_keys(&self.keys).unwrap();
        self.client.send_event(&event).await.unwrap();
        event
    }

    /// Waits for the result or `error` feedback of `request`.
    async fn outcome(
        &mut self,
        request: &Event,
        provider: &Keys,
    ) -> Result<StepReport, JobFeedback> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notification = tokio::time::timeout_at(deadline, self.notifications.recv())
                .await
                .expect("timed out waiting for the runner")
                .unwrap();
            let RelayPoolNotification::Event { event, .. } = notification else {
                continue;
            };
            if !event.tags.event_ids().any(|id| *id == request.id) {
                continue;
            }
            if event.kind.as_u16() == 6702 {
                let result = JobResult::from_event(&event).unwrap();
                let content = result
                    .decrypt(self.keys.secret_key(), &provider.public_key())
                    .unwrap();
                return Ok(serde_json::from_str(&content).unwrap());
            }
            if let Ok(feedback) = JobFeedback::from_event(&event)
                && feedback.status == FeedbackStatus::Error
            {
                return Err(feedback);
            }
        }
    }
}

async fn download(url: &str) -> Vec<u8> {
    reqwest::get(url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn build_step(repo: &Path, commit: &str) -> StepJob {
    let mut step = StepJob::new(format!("file://{}", repo.display()), commit, "sh build.sh");
    step.artifacts = vec!["out/hello.txt".into(), "out/dist".into()];
    step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_runs_in_the_sandbox_and_its_artifacts_land_in_blossom() {
    let _machine = MACHINE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let (dvm, keys) = start_runner(&network, &dir.path().join("runner")).await;
    let mut customer = Customer::connect(&network).await;

    let request = customer
        .submit(&build_step(&repo, &commit), keys.public_key(), false)
        .await;
    let report = customer.outcome(&request, &keys).await.expect("a result");
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(report.commit, commit);
    assert_eq!(report.source_date_epoch, SAMPLE_COMMIT_TIME);
    assert!(report.sandbox.isolated);
    let names: Vec<&str> = report.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["out/dist.tar", "out/hello.txt"]);
    for artifact in &report.artifacts {
        let bytes = download(&artifact.blob.urls[0]).await;
        assert_eq!(
            sha256_hex(&bytes),
            artifact.blob.sha256,
            "{}",
            artifact.name
        );
        assert_eq!(bytes.len() as u64, artifact.blob.size);
    }
    let hello = download(&report.artifacts[1].blob.urls[0]).await;
    assert_eq!(hello, b"hello from quorum\n");
    let log = download(&report.log.urls[0]).await;
    assert_eq!(sha256_hex(&log), report.log.sha256);
    assert!(String::from_utf8_lossy(&log).contains("build finished"));
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_build_byte_identical_artifacts() {
    let _machine = MACHINE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let (dvm_a, keys_a) = start_runner(&network, &dir.path().join("a")).await;
    let (dvm_b, keys_b) = start_runner(&network, &dir.path().join("b")).await;
    let mut customer = Customer::connect(&network).await;
    let step = build_step(&repo, &commit);
    let request_a = customer.submit(&step, keys_a.public_key(), false).await;
    let report_a = customer.outcome(&request_a, &keys_a).await.unwrap();
    // A second later, so that wall-clock time would show if anything leaked into the output.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let request_b = customer.submit(&step, keys_b.public_key(), false).await;
    let report_b = customer.outcome(&request_b, &keys_b).await.unwrap();
    let sums = |r: &StepReport| {
        r.artifacts
            .iter()
            .map(|a| (a.name.clone(), a.blob.sha256.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(sums(&report_a), sums(&report_b));
    assert!(!report_a.artifacts.is_empty());
    dvm_a.shutdown().await;
    dvm_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_failing_steps_are_contained_and_reported() {
    let _machine = MACHINE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let runner_dir = dir.path().join("runner");
    let (dvm, keys) = start_runner(&network, &runner_dir).await;
    // The operator's key file sits in the DVM's data dir; a step must not be able to read it.
    let key_file = runner_dir.join("dvm.nsec");
    std::fs::write(&key_file, keys.secret_key().to_secret_hex()).unwrap();
    let mut customer = Customer::connect(&network).await;

    let mut steal = StepJob::new(
        format!("file://{}", repo.display()),
        &commit,
        format!("cat {} || echo NO-KEY-ACCESS; exit 3", key_file.display()),
    );
    steal.artifacts = vec![];
    let request = customer.submit(&steal, keys.public_key(), false).await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    assert_eq!(report.exit_code, Some(3));
    let log = String::from_utf8(download(&report.log.urls[0]).await).unwrap();
    assert!(log.contains("NO-KEY-ACCESS"), "{log}");
    assert!(!log.contains(&keys.secret_key().to_secret_hex()));

    // No network unless asked: the relay listens on the host's loopback, which a step in its
    // own network namespace cannot reach.
    let port = network
        .relay
        .as_str()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let probe = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\" \
         && echo NETWORK-REACHED || echo NO-NETWORK"
    );
    let request = customer
        .submit(
            &StepJob::new(format!("file://{}", repo.display()), &commit, probe.clone()),
            keys.public_key(),
            false,
        )
        .await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    let log = String::from_utf8(download(&report.log.urls[0]).await).unwrap();
    assert!(log.contains("NO-NETWORK"), "{log}");
    // With network granted the step has a network of its own (an interface besides lo), and
    // the relay on the host's loopback is still out of reach (the sandbox's tests show the
    // same step reaching a test-made internet).
    let mut allowed = StepJob::new(
        format!("file://{}", repo.display()),
        &commit,
        format!("grep -q eth0 /proc/net/dev && echo OWN-INTERFACE; {probe}"),
    );
    allowed.network = true;
    let request = customer.submit(&allowed, keys.public_key(), false).await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    let log = String::from_utf8(download(&report.log.urls[0]).await).unwrap();
    assert!(log.contains("OWN-INTERFACE"), "{log}");
    assert!(log.contains("NO-NETWORK"), "{log}");

    // A commit the repository does not have is an error, named as such.
    let missing = StepJob::new(format!("file://{}", repo.display()), "0".repeat(40), "true");
    let request = customer.submit(&missing, keys.public_key(), false).await;
    let error = customer.outcome(&request, &keys).await.unwrap_err();
    assert!(
        error
            .extra
            .as_deref()
            .unwrap()
            .contains("does not serve commit"),
        "{error:?}"
    );

    // A step past its timeout is killed and says so; the DVM keeps serving.
    let mut slow = StepJob::new(format!("file://{}", repo.display()), &commit, "sleep 60");
    slow.timeout = Some(Duration::from_secs(1));
    let request = customer.submit(&slow, keys.public_key(), false).await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    assert!(report.timed_out, "{report:?}");

    let request = customer
        .submit(&build_step(&repo, &commit), keys.public_key(), false)
        .await;
    assert!(customer.outcome(&request, &keys).await.unwrap().succeeded());
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_arrive_encrypted_and_never_appear_in_logs_or_results() {
    let _machine = MACHINE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let (dvm, keys) = start_runner(&network, &dir.path().join("runner")).await;
    let mut customer = Customer::connect(&network).await;

    let mut step = StepJob::new(
        format!("file://{}", repo.display()),
        &commit,
        "echo \"token is $DEPLOY_TOKEN\"; test \"$DEPLOY_TOKEN\" = s3cr3t-v4lue",
    );
    step.secrets
        .insert("DEPLOY_TOKEN".into(), "s3cr3t-v4lue".into());
    // In the clear, the runner refuses it.
    let request = customer.submit(&step, keys.public_key(), false).await;
    let error = customer.outcome(&request, &keys).await.unwrap_err();
    assert!(
        error.extra.as_deref().unwrap().contains("encrypted"),
        "{error:?}"
    );
    // Encrypted, it runs, and the secret is redacted from the log.
    let request = customer.submit(&step, keys.public_key(), true).await;
    assert!(!request.as_json().contains("s3cr3t"));
    let report = customer.outcome(&request, &keys).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    let log = String::from_utf8(download(&report.log.urls[0]).await).unwrap();
    assert!(log.contains("token is ***"), "{log}");
    assert!(!log.contains("s3cr3t-v4lue"));
    // An encrypted job's blobs went up under a throwaway key: the runner's public Blossom
    // list (BUD-12) does not show them, while it shows those of a clear job.
    let clear = customer
        .submit(&build_step(&repo, &commit), keys.public_key(), false)
        .await;
    let clear = customer.outcome(&clear, &keys).await.unwrap();
    let listed: Vec<serde_json::Value> = reqwest::get(
        network
            .blossom
            .join(&format!("list/{}", keys.public_key().to_hex()))
            .unwrap(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let listed: Vec<&str> = listed.iter().filter_map(|d| d["sha256"].as_str()).collect();
    assert!(listed.contains(&clear.log.sha256.as_str()), "{listed:?}");
    assert!(!listed.contains(&report.log.sha256.as_str()), "{listed:?}");
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_works_over_nostr_rs_relay() {
    let _machine = MACHINE.read().await;
    let dir = tempfile::tempdir().unwrap();
    let mut network = Network::start(dir.path()).await;
    // Swap our relay for nostr-rs-relay: nothing may assume it talks to its own relay.
    let third_party = quorum_testkit::third_party::start_nostr_rs_relay(&dir.path().join("nrr"));
    network.relay = RelayUrl::parse(&third_party.url).unwrap();
    let (repo, commit) = sample_repo(dir.path());
    let (dvm, keys) = start_runner(&network, &dir.path().join("runner")).await;
    let mut customer = Customer::connect(&network).await;
    let request = customer
        .submit(&build_step(&repo, &commit), keys.public_key(), false)
        .await;
    let report = customer.outcome(&request, &keys).await.expect("a result");
    assert!(report.succeeded(), "{report:?}");
    for artifact in &report.artifacts {
        let bytes = download(&artifact.blob.urls[0]).await;
        assert_eq!(
            sha256_hex(&bytes),
            artifact.blob.sha256,
            "{}",
            artifact.name
        );
    }
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained_and_reported() {
    let _alone = MACHINE.write().await;
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let (repo, commit) = sample_repo(dir.path());
    let (dvm, keys) = start_runner(&network, &dir.path().join("runner")).await;
    let mut customer = Customer::connect(&network).await;
    // A fork bomb is contained by the process limit or the timeout, and reported.
    let mut bomb = StepJob::new(
        format!("file://{}", repo.display()),
        &commit,
        "bomb() { bomb | bomb & }; bomb; sleep 30",
    );
    bomb.timeout = Some(Duration::from_secs(3));
    bomb.max_processes = Some(64);
    let request = customer.submit(&bomb, keys.public_key(), false).await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    assert!(!report.succeeded(), "{report:?}");

    // The runner keeps serving after it.
    let request = customer
        .submit(&build_step(&repo, &commit), keys.public_key(), false)
        .await;
    let report = customer.outcome(&request, &keys).await.unwrap();
    assert!(report.succeeded(), "{report:?}");
    dvm.shutdown().await;
}
