//! Wrapper DVMs over a real relay on loopback, each delegating to its own `interop/dvm-digest.mjs`:
//! a NIP-90 DVM written with nostr-tools in Node that knows nothing of Quorum CI. Three wrappers
//! hold 2-of-3 shares of a quorum key and agree on what their inner DVMs answered; the quorum
//! attestation is checked as plain BIP-340 here and by nostr-tools.

use std::path::Path;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::client::{JobClient, JobOutcome, Quiet};
use quorum_dvm::{Dvm, DvmConfig};
use quorum_proto::agreement::{QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::nip90::{JobInput, JobRequest};
use quorum_proto::quorum_job::QuorumJobParams;
use quorum_testkit::daemon::Daemon;
use quorum_wrapper::{MemberConfig, QuorumMember, Wrapper, WrapperConfig};
use sha2::{Digest, Sha256};

const KIND: u16 = 5050;
const TEXT: &str = "the quick brown fox jumps over the lazy dog";
/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(90);

/// A relay (and a Blossom server nobody here uses) on loopback, stopped when dropped.
async fn network(dir: &Path) -> quorum_testnet::Network {
    quorum_testnet::Network::start(dir).await
}

/// Starts `node interop/dvm-digest.mjs <relay> [args]` (killed on drop) and returns its key.
fn digest_dvm(relay: &RelayUrl, args: &[&str]) -> (Daemon, PublicKey) {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "`node` is needed for the third-party DVM: install Node.js 20+ (scripts/test does, \
         with interop/node_modules)"
    );
    let interop = quorum_testkit::node::ensure_installed();
    let script = interop.join("dvm-digest.mjs");
    let mut argv = vec![script.to_str().unwrap(), relay.as_str()];
    argv.extend_from_slice(args);
    let daemon = Daemon::spawn("node", &argv);
    let key = PublicKey::from_hex(&daemon.value_of("dvm")).expect("dvm-digest prints its key");
    (daemon, key)
}

/// What an honest dvm-digest answers for `text`.
fn honest_digest(text: &str) -> String {
    format!(
        "sha256={} words={}",
        hex::encode(Sha256::digest(text.as_bytes())),
        text.split_whitespace().count()
    )
}

fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(20),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(6),
            lifetime: Duration::from_secs(3600),
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(4),
            message_lifetime: Duration::from_secs(3600),
        },
    }
}

/// A 2-of-3 quorum dealt to three wrapper keys, each share stored in `dir/<n>/shares`, and
/// the mandate (signed by the repository's owner) published on the relay.
struct Quorum {
    members: Vec<Keys>,
    quorum: PublicKey,
    mandate: EventId,
}

async fn quorum(relay: &RelayUrl, dir: &Path) -> Quorum {
    let dealt = quorum_testnet::quorum::deal(
        relay,
        quorum_testnet::quorum::QuorumSpec {
            n: 3,
            t: 2,
            identifier: "digests",
            jobs: &[],
            allow: &[QUORUM_ATTESTATION.as_u16()],
        },
        |n| dir.join(n.to_string()).join("shares"),
    )
    .await;
    Quorum {
        members: dealt.members,
        quorum: dealt.quorum,
        mandate: dealt.mandate.id,
    }
}

/// Starts a wrapper DVM serving `config.kind` with `keys`, a quorum member when `shares` is
/// given.
async fn wrapper(
    relay: &RelayUrl,
    keys: &Keys,
    config: WrapperConfig,
    dir: &Path,
    shares: Option<&Path>,
) -> Dvm {
    let mut wrapper = Wrapper::connect(config, keys.clone())
        .await
        .expect("the wrapper connects");
    if let Some(shares) = shares {
        wrapper = wrapper.with_quorum(
            QuorumMember::new(vec![relay.clone()], keys.clone(), shares.to_path_buf())
                .with_config(fast()),
        );
    }
    let config = DvmConfig::new(vec![relay.clone()], dir.join("dvm"), "quorum-wrapper");
    Dvm::start(config, keys.clone(), wrapper)
        .await
        .expect("the wrapper DVM starts")
}

/// The three wrappers of `q`, each delegating to its own dvm-digest (`liar` started with
/// `--lie`), each with its share in `dir/<n>/shares`.
struct Members {
    dvms: Vec<Dvm>,
    _inner: Vec<Daemon>,
}

impl Members {
    async fn shutdown(self) {
        for dvm in self.dvms {
            dvm.shutdown().await;
        }
    }
}

async fn start_members(relay: &RelayUrl, q: &Quorum, dir: &Path, liar: Option<usize>) -> Members {
    let mut inner = Vec::new();
    let mut dvms = Vec::new();
    for (n, keys) in q.members.iter().enumerate() {
        let args: &[&str] = if liar == Some(n) { &["--lie"] } else { &[] };
        let (daemon, key) = digest_dvm(relay, args);
        inner.push(daemon);
        let member_dir = dir.join(n.to_string());
        let shares = member_dir.join("shares");
        dvms.push(
            wrapper(
                relay,
                keys,
                inner_config(relay, key),
                &member_dir,
                Some(&shares),
            )
            .await,
        );
    }
    Members {
        dvms,
        _inner: inner,
    }
}

fn inner_config(relay: &RelayUrl, inner: PublicKey) -> WrapperConfig {
    let mut config = WrapperConfig::new(Kind::from_u16(KIND), vec![relay.clone()]);
    config.inner_providers = vec![inner];
    config.timeout = Duration::from_secs(30);
    config
}

async fn customer(relay: &RelayUrl) -> JobClient {
    JobClient::connect(std::slice::from_ref(relay), Keys::generate())
        .await
        .unwrap()
}

/// Waits until `filter` matches at least `n` events and returns them.
async fn wait_for(client: &JobClient, filter: Filter, n: usize) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let events = client
            .fetch(filter.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} events for {filter:?} within {PATIENCE:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One quorum request to the three wrappers; returns their results (one per wrapper) and the
/// quorum attestation.
async fn quorum_job(relay: &RelayUrl, q: &Quorum) -> (JobClient, Event, Vec<Event>, Option<Event>) {
    let client = customer(relay).await;
    let mut request = JobRequest::new(Kind::from_u16(KIND))
        .unwrap()
        .input(JobInput::text(TEXT));
    request.providers = q.members.iter().map(Keys::public_key).collect();
    QuorumJobParams {
        mandate: q.mandate,
        commit: "c".repeat(40),
        release: None,
    }
    .apply(&mut request);
    let event = client.submit(&request, false).await.unwrap();
    let results = wait_for(
        &client,
        Filter::new()
            .kind(Kind::from_u16(KIND + 1000))
            .event(event.id),
        3,
    )
    .await;
    let attestations = client
        .fetch(
            Filter::new().kind(QUORUM_ATTESTATION).event(event.id),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    (client, event, results, attestations.into_iter().next())
}

fn result_of<'a>(results: &'a [Event], member: &Keys) -> &'a Event {
    results
        .iter()
        .find(|e| e.pubkey == member.public_key())
        .unwrap_or_else(|| panic!("no result from {}", member.public_key()))
}

fn tag_values<'a>(event: &'a Event, name: &str) -> Vec<&'a [String]> {
    event
        .tags
        .iter()
        .filter(|t| t.kind().as_str() == name)
        .map(|t| &t.as_slice()[1..])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_wrappers_of_a_nostr_tools_dvm_get_the_quorum_to_sign() {
    let dir = tempfile::tempdir().unwrap();
    let relay = network(dir.path()).await;
    let q = quorum(&relay.relay, dir.path()).await;
    let members = start_members(&relay.relay, &q, dir.path(), None).await;

    let (client, request, results, attestation) = quorum_job(&relay.relay, &q).await;

    let expected = honest_digest(TEXT);
    for member in &q.members {
        let result = result_of(&results, member);
        let (_, content) = client
            .open_result(result)
            .expect("an ordinary NIP-90 result");
        assert_eq!(content, expected, "the inner content, unchanged");
        assert_eq!(tag_values(result, "quorum"), [[q.quorum.to_hex()]]);
        let report = quorum_wrapper::report_of(result).expect("a quorum report");
        assert_eq!(report.failure, None, "{report:?}");
        assert_eq!(report.agreed.len(), 3, "{report:?}");
        let attestation = attestation
            .as_ref()
            .expect("the quorum signed an attestation");
        assert_eq!(report.attestation, Some(attestation.id.to_hex()));
        assert!(
            tag_values(result, "e")
                .contains(&&[attestation.id.to_hex(), String::new(), "attestation".into()][..]),
            "{result:?}"
        );
    }

    let attestation = attestation.unwrap();
    attestation
        .verify()
        .expect("plain BIP-340 under the quorum key");
    assert_eq!(attestation.pubkey, q.quorum);
    let parsed = QuorumAttestation::from_event(&attestation).unwrap();
    assert_eq!(parsed.job, request.id);
    assert_eq!(parsed.mandate, q.mandate);
    assert_eq!(
        parsed.files,
        quorum_wrapper::canonical::canonical_result(&expected),
        "the quorum signed the sha256 of the inner content"
    );
    assert_eq!(parsed.agreed.len(), 3);

    // nostr-tools verifies the attestation as the relay serves it.
    let filter = serde_json::json!({ "ids": [attestation.id.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[relay.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let verdict: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verdict["count"], 1, "{out}");
    assert_eq!(verdict["valid"], 1, "{out}");

    client.shutdown().await;
    members.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrapper_whose_inner_dvm_lies_is_named_as_disagreeing() {
    let dir = tempfile::tempdir().unwrap();
    let relay = network(dir.path()).await;
    let q = quorum(&relay.relay, dir.path()).await;
    let members = start_members(&relay.relay, &q, dir.path(), Some(2)).await;

    let (client, request, results, attestation) = quorum_job(&relay.relay, &q).await;

    let attestation = attestation.expect("the two honest wrappers got the quorum to sign");
    attestation.verify().unwrap();
    assert_eq!(attestation.pubkey, q.quorum);
    let parsed = QuorumAttestation::from_event(&attestation).unwrap();
    assert_eq!(parsed.job, request.id);
    let honest: std::collections::BTreeSet<PublicKey> =
        q.members[..2].iter().map(Keys::public_key).collect();
    assert_eq!(
        parsed.agreed, honest,
        "exactly the two honest wrappers agreed"
    );
    assert_eq!(
        parsed.files,
        quorum_wrapper::canonical::canonical_result(&honest_digest(TEXT))
    );

    let liar = &q.members[2];
    let lie = client.open_result(result_of(&results, liar)).unwrap().1;
    assert_ne!(
        lie,
        honest_digest(TEXT),
        "the liar's content is passed on as it is"
    );
    let report = quorum_wrapper::report_of(result_of(&results, liar)).unwrap();
    assert_eq!(report.disagreed, [liar.public_key().to_hex()], "{report:?}");
    assert_eq!(report.attestation, None, "{report:?}");
    for member in &q.members[..2] {
        let report = quorum_wrapper::report_of(result_of(&results, member)).unwrap();
        assert_eq!(
            report.attestation,
            Some(attestation.id.to_hex()),
            "{report:?}"
        );
        assert_eq!(report.disagreed, [liar.public_key().to_hex()], "{report:?}");
    }

    client.shutdown().await;
    members.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_params_a_wrapper_is_a_proxy_to_the_open_market() {
    let dir = tempfile::tempdir().unwrap();
    let relay = network(dir.path()).await;
    // The inner DVM serves 5051; the wrapper sells it as 5050 and forwards to whoever takes it.
    let (_inner, inner_key) = digest_dvm(&relay.relay, &["--kind", "5051"]);
    let keys = Keys::generate();
    let mut config = WrapperConfig::new(Kind::from_u16(5051), vec![relay.relay.clone()]);
    config.kind = Kind::from_u16(KIND);
    config.timeout = Duration::from_secs(30);
    let dvm = wrapper(&relay.relay, &keys, config, dir.path(), None).await;

    let client = customer(&relay.relay).await;
    let (request, outcome) = ask(&client, &keys, JobInput::text(TEXT)).await;
    let JobOutcome::Result {
        provider,
        content,
        event,
        ..
    } = outcome
    else {
        panic!("expected a result: {outcome:?}");
    };
    assert_eq!(provider, keys.public_key());
    assert_eq!(content, honest_digest(TEXT));
    assert!(tag_values(&event, "quorum").is_empty());
    assert!(quorum_wrapper::report_of(&event).is_none());

    // The inner request went out under the wrapper's key, open, with the same input.
    let inner_requests = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(5051))
                .author(keys.public_key()),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let [inner_request] = inner_requests.as_slice() else {
        panic!("one inner request: {inner_requests:?}");
    };
    let parsed = JobRequest::from_event(inner_request).unwrap();
    assert!(parsed.providers.is_empty());
    assert_eq!(parsed.inputs, request.inputs);
    assert_eq!(parsed.parent, Some(event_request_id(&event)));
    let inner_results = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(6051))
                .event(inner_request.id),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(
        inner_results.iter().any(|e| e.pubkey == inner_key),
        "the nostr-tools DVM answered the wrapper: {inner_results:?}"
    );

    client.shutdown().await;
    dvm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inner_error_is_passed_on_and_the_next_provider_is_tried() {
    let dir = tempfile::tempdir().unwrap();
    let relay = network(dir.path()).await;
    let (_inner, inner_key) = digest_dvm(&relay.relay, &[]);
    let nobody = Keys::generate().public_key();
    let keys = Keys::generate();
    let mut config = inner_config(&relay.relay, nobody);
    config.inner_providers.push(inner_key);
    config.patience.until_taken = Duration::from_secs(3);
    let dvm = wrapper(&relay.relay, &keys, config, dir.path(), None).await;
    let client = customer(&relay.relay).await;

    // Nobody answers for the first provider: the second one does.
    let (_, outcome) = ask(&client, &keys, JobInput::text(TEXT)).await;
    assert!(
        matches!(&outcome, JobOutcome::Result { content, .. } if *content == honest_digest(TEXT)),
        "{outcome:?}"
    );

    // No text input: the inner DVM's error, named, as the wrapper's error.
    let url = JobInput::url("https://example.invalid/x");
    let (_, outcome) = ask(&client, &keys, url).await;
    let JobOutcome::Error { feedback, .. } = outcome else {
        panic!("expected error feedback: {outcome:?}");
    };
    let reason = feedback.extra.unwrap_or_default();
    assert!(reason.contains("no text input"), "{reason}");
    assert!(reason.contains(&inner_key.to_hex()), "{reason}");

    client.shutdown().await;
    dvm.shutdown().await;
}

/// Runs a kind-5050 job with `input` on the wrapper `wrapper` and follows it to its end.
async fn ask(client: &JobClient, wrapper: &Keys, input: JobInput) -> (JobRequest, JobOutcome) {
    let request = JobRequest::new(Kind::from_u16(KIND))
        .unwrap()
        .input(input)
        .provider(wrapper.public_key());
    let outcome = client
        .run(&request, false, PATIENCE, &mut Quiet)
        .await
        .unwrap();
    (request, outcome)
}

fn event_request_id(result: &Event) -> EventId {
    quorum_proto::nip90::JobResult::from_event(result)
        .unwrap()
        .request_id()
}
