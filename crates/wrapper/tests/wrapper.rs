//! Wrapper DVMs over a real relay and Blossom server on loopback, each delegating to its own
//! `interop/dvm-digest.mjs`: a NIP-90 DVM written with nostr-tools in Node that knows nothing of
//! Quorum CI. Three wrappers hold 2-of-3 shares of a quorum key; the maintainer's repository (a
//! `file://` git repository) has a `uses: dvm` quorum job in its pipeline, its announcement and
//! state are published, and the mandate names each wrapper's inner DVM. The engine
//! (`quorum_router::execute`) sends the quorum request as it does for any run; the quorum
//! attestation is checked here and by nostr-tools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::AgreementConfig;
use quorum_consensus::signing::SigningConfig;
use quorum_dvm::client::{JobClient, JobOutcome, Quiet};
use quorum_dvm::{Dvm, DvmConfig};
use quorum_proto::agreement::{QUORUM_ATTESTATION, QuorumAttestation};
use quorum_proto::mandate::Mandate;
use quorum_proto::nip90::{JobInput, JobRequest};
use quorum_proto::quorum_job::QuorumReport;
use quorum_router::quorum::QuorumContext;
use quorum_router::{EngineConfig, JobRecord, JobState, QuietRun, RunContext, RunOutcome};
use quorum_testkit::daemon::Daemon;
use quorum_testkit::git::git;
use quorum_testnet::Network;
use quorum_testnet::quorum::{DealtQuorum, QuorumSpec};
use quorum_wrapper::{MemberConfig, QuorumMember, Wrapper, WrapperConfig};
use sha2::{Digest, Sha256};

const KIND: u16 = 5050;
const TEXT: &str = "the quick brown fox jumps over the lazy dog";
const IDENTIFIER: &str = "digests";
/// Every wait in these tests ends within this.
const PATIENCE: Duration = Duration::from_secs(90);

/// The maintainer's pipeline: one DVM job of the inner kind, run by the quorum. `output`, when
/// given, is passed to the inner DVMs as the `output` param (`blossom`: answer with a file).
fn pipeline(output: Option<&str>) -> String {
    let params = output.map_or_else(String::new, |o| format!("    params:\n      output: {o}\n"));
    format!(
        "on: [push]\njobs:\n  digest:\n    uses: dvm\n    kind: {KIND}\n    inputs:\n      \
         - type: text\n        value: \"{TEXT}\"\n{params}    mode: quorum\n    replicas: 3\n    \
         threshold: 2\n"
    )
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

fn member_config(commit_wait: Duration) -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait,
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

/// A wrapper of kind [`KIND`] jobs forwarding to `inner` (several: in turn; none: the open
/// market, then of `inner_kind`), reading quorum jobs' pipelines from `file://` repositories
/// and fetching claimed files from loopback.
fn config(relay: &RelayUrl, dir: &Path, inner_kind: u16, inner: &[PublicKey]) -> WrapperConfig {
    let mut config = WrapperConfig::new(
        Kind::from_u16(inner_kind),
        vec![relay.clone()],
        dir.join("work"),
    );
    config.kind = Kind::from_u16(KIND);
    config.inner_providers = inner.to_vec();
    config.timeout = Duration::from_secs(30);
    config.git.allow_local = true;
    config.downloads.allow_private = true;
    config
}

/// Starts a wrapper DVM with `keys`, a quorum member when `shares` is given.
async fn wrapper(
    relay: &RelayUrl,
    keys: &Keys,
    config: WrapperConfig,
    dir: &Path,
    shares: Option<(&Path, MemberConfig)>,
) -> Dvm {
    let mut wrapper = Wrapper::connect(config, keys.clone())
        .await
        .expect("the wrapper connects");
    if let Some((shares, member)) = shares {
        wrapper = wrapper.with_quorum(
            QuorumMember::new(vec![relay.clone()], keys.clone(), shares.to_path_buf())
                .with_config(member),
        );
    }
    let config = DvmConfig::new(vec![relay.clone()], dir.join("dvm"), "quorum-wrapper");
    Dvm::start(config, keys.clone(), wrapper)
        .await
        .expect("the wrapper DVM starts")
}

/// The maintainer's side: a repository whose commits carry the pipeline, a 2-of-3 quorum key
/// dealt to three wrapper keys (shares in `dir/<n>/shares`), and a mandate that names each
/// wrapper's inner DVM.
struct Maintainer {
    dir: PathBuf,
    relay: RelayUrl,
    repo: PathBuf,
    url: String,
    dealt: DealtQuorum,
    /// The mandate the runs use (the newest: it names the inner DVMs).
    mandate: Event,
    /// The newest state published, so that the next one is newer.
    state: Option<Event>,
}

impl Maintainer {
    async fn new(network: &Network, dir: &Path) -> Maintainer {
        let dealt = quorum_testnet::quorum::deal(
            &network.relay,
            QuorumSpec {
                n: 3,
                t: 2,
                identifier: IDENTIFIER,
                jobs: &[],
                allow: &[QUORUM_ATTESTATION.as_u16()],
            },
            |n| dir.join(n.to_string()).join("shares"),
        )
        .await;
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join(".quorum")).unwrap();
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["config", "user.name", "Maintainer"]);
        git(
            &repo,
            &["config", "user.email", "maintainer@example.invalid"],
        );
        Maintainer {
            dir: dir.to_path_buf(),
            relay: network.relay.clone(),
            url: format!("file://{}", repo.display()),
            repo,
            mandate: dealt.mandate.clone(),
            dealt,
            state: None,
        }
    }

    fn members(&self) -> &[Keys] {
        &self.dealt.members
    }

    fn shares(&self, n: usize) -> PathBuf {
        self.dir.join(n.to_string()).join("shares")
    }

    /// Signs and publishes a newer mandate for the same quorum naming `inner` (member → inner
    /// DVM); later runs use it.
    async fn name_inner(&mut self, inner: BTreeMap<PublicKey, PublicKey>) {
        let mut mandate = Mandate::from_event(&self.mandate).unwrap();
        mandate.rules.inner = inner;
        // Members take the newest mandate: this one must be dated after the dealt one.
        while Timestamp::now() <= self.mandate.created_at {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let event = mandate
            .to_event_builder()
            .expect("a valid mandate")
            .sign_with_keys(&self.dealt.owner)
            .unwrap();
        let client = JobClient::connect(std::slice::from_ref(&self.relay), Keys::generate())
            .await
            .unwrap();
        client.publish_signed(&event).await.unwrap();
        client.shutdown().await;
        self.mandate = event;
    }

    /// Commits `pipeline` and publishes the owner's announcement and a state whose `main` is
    /// that commit; returns the commit.
    async fn push(&mut self, pipeline: &str) -> String {
        std::fs::write(self.repo.join(".quorum/pipeline.yml"), pipeline).unwrap();
        git(&self.repo, &["add", "."]);
        git(&self.repo, &["commit", "--quiet", "-m", "pipeline"]);
        let commit = git(&self.repo, &["rev-parse", "HEAD"]);
        // A state replaces the one before only if it is newer.
        while let Some(last) = &self.state
            && Timestamp::now() <= last.created_at
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, state) = self
            .dealt
            .publish_repository(&self.relay, &self.url, "refs/heads/main", &commit)
            .await;
        self.state = Some(state);
        commit
    }

    /// Runs the pipeline at `commit` with the engine, as `quorum run --mandate` does.
    async fn run(&self, client: &JobClient, pipeline: &str, commit: &str) -> RunOutcome {
        let plan = quorum_pipeline::parse(".quorum/pipeline.yml", pipeline)
            .unwrap_or_else(|d| panic!("{d}"));
        let quorum = QuorumContext::new(self.mandate.clone())
            .unwrap()
            .with_source(client, &self.url, commit)
            .await;
        assert!(quorum.source.is_ok(), "{:?}", quorum.source);
        let context = RunContext {
            repo: self.url.clone(),
            commit: commit.to_string(),
            repo_id: Some(self.dealt.repo()),
            quorum: Some(quorum),
            ..RunContext::default()
        };
        quorum_router::execute(
            client,
            &plan,
            &context,
            &EngineConfig::default(),
            Vec::new(),
            &mut QuietRun,
        )
        .await
    }
}

/// Every wrapper's result for the request of `record`, by wrapper.
async fn results(client: &JobClient, record: &JobRecord) -> BTreeMap<PublicKey, Event> {
    let request = EventId::from_hex(record.request.as_ref().expect("a request went out")).unwrap();
    let events = client
        .fetch(
            Filter::new()
                .kind(Kind::from_u16(KIND + 1000))
                .event(request),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    events.into_iter().map(|e| (e.pubkey, e)).collect()
}

fn report(results: &BTreeMap<PublicKey, Event>, member: &Keys) -> QuorumReport {
    let result = results
        .get(&member.public_key())
        .unwrap_or_else(|| panic!("no result from {}", member.public_key()));
    quorum_wrapper::report_of(result).expect("a quorum report")
}

/// The attestation the engine found for `record`, parsed.
async fn attestation(client: &JobClient, record: &JobRecord) -> (Event, QuorumAttestation) {
    let quorum = record.quorum.as_ref().expect("a quorum record");
    let id = EventId::from_hex(quorum.attestation.as_ref().expect("an attestation")).unwrap();
    let events = client
        .fetch(Filter::new().id(id), Duration::from_secs(3))
        .await
        .unwrap();
    let event = events
        .into_iter()
        .next()
        .expect("the attestation is on the relay");
    event.verify().expect("plain BIP-340 under the quorum key");
    let parsed = QuorumAttestation::from_event(&event).unwrap();
    (event, parsed)
}

fn tag_values<'a>(event: &'a Event, name: &str) -> Vec<&'a [String]> {
    event
        .tags
        .iter()
        .filter(|t| t.kind().as_str() == name)
        .map(|t| &t.as_slice()[1..])
        .collect()
}

/// Two wrappers with honest inner DVMs and one whose inner DVM lies. The digest as content:
/// the honest two agree, the quorum signs an attestation that says wrappers did the job
/// (`["wrapper", KIND]`) and names its evidence, and the liar is named as disagreeing. The
/// digest as a file on Blossom: the liar's DVM claims the honest file's hash but serves other
/// bytes, so its wrapper, which fetches and hashes every claimed file, commits to nothing and
/// says why; the honest two agree on the file they fetched. nostr-tools verifies every event
/// the quorum signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrappers_of_nostr_tools_dvms_agree_on_checked_results_and_a_liar_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mut maintainer = Maintainer::new(&network, dir.path()).await;
    let blossom = network.blossom.as_str().trim_end_matches('/');
    let inner: Vec<(Daemon, PublicKey)> = (0..3)
        .map(|n| {
            let mut args = vec!["--blossom", blossom];
            if n == 2 {
                args.push("--lie");
            }
            digest_dvm(&network.relay, &args)
        })
        .collect();
    maintainer
        .name_inner(
            maintainer
                .members()
                .iter()
                .zip(&inner)
                .map(|(m, (_, dvm))| (m.public_key(), *dvm))
                .collect(),
        )
        .await;
    let mut wrappers = Vec::new();
    for (n, keys) in maintainer.members().iter().enumerate() {
        let data = dir.path().join(n.to_string());
        let config = config(&network.relay, &data, KIND, &[inner[n].1]);
        let shares = maintainer.shares(n);
        let member = member_config(Duration::from_secs(20));
        wrappers.push(wrapper(&network.relay, keys, config, &data, Some((&shares, member))).await);
    }
    let client = network.client().await;
    let honest: BTreeSet<PublicKey> = maintainer.members()[..2]
        .iter()
        .map(Keys::public_key)
        .collect();
    let liar = maintainer.members()[2].clone();

    // 1. The digest as the result's content.
    let text = pipeline(None);
    let commit = maintainer.push(&text).await;
    let outcome = maintainer.run(&client, &text, &commit).await;
    let record = &outcome.jobs[0];
    assert!(outcome.succeeded, "{:?}", record.state);
    assert_eq!(
        record.content.as_deref(),
        Some(honest_digest(TEXT).as_str())
    );
    let (event, attested) = attestation(&client, record).await;
    assert_eq!(event.pubkey, maintainer.dealt.quorum);
    assert_eq!(attested.mandate, maintainer.mandate.id);
    assert_eq!(attested.commit, commit);
    assert_eq!(attested.agreed, honest, "exactly the two honest wrappers");
    assert_eq!(
        quorum_wrapper::canonical::canonical_result(&honest_digest(TEXT)).result(),
        attested.files,
        "the quorum signed the sha256 of the honest content"
    );
    assert_eq!(
        attested.wrapped,
        Some(KIND),
        "the attestation says wrappers did it"
    );
    assert_eq!(tag_values(&event, "wrapper"), [[KIND.to_string()]]);
    let evidence = attested.evidence.as_ref().expect("the evidence is named");
    assert_eq!(evidence.job, "digest");
    assert_eq!(evidence.pipeline, ".quorum/pipeline.yml");
    assert_eq!(
        Some(evidence.state),
        maintainer.state.as_ref().map(|s| s.id)
    );
    let answers = results(&client, record).await;
    for member in &maintainer.members()[..2] {
        let result = &answers[&member.public_key()];
        assert_eq!(
            client.open_result(result).await.unwrap().1,
            honest_digest(TEXT),
            "the inner content, unchanged"
        );
        assert_eq!(
            tag_values(result, "quorum"),
            [[maintainer.dealt.quorum.to_hex()]]
        );
        let report = report(&answers, member);
        assert_eq!(report.failure, None, "{report:?}");
        assert_eq!(report.attestation, Some(event.id.to_hex()), "{report:?}");
        assert_eq!(report.disagreed, [liar.public_key().to_hex()], "{report:?}");
        assert!(
            tag_values(result, "e")
                .contains(&&[event.id.to_hex(), String::new(), "attestation".into()][..]),
            "{result:?}"
        );
    }
    let lie = client
        .open_result(&answers[&liar.public_key()])
        .await
        .unwrap()
        .1;
    assert_ne!(
        lie,
        honest_digest(TEXT),
        "the liar's content is passed on as it is"
    );
    let report_of_liar = report(&answers, &liar);
    assert_eq!(report_of_liar.attestation, None, "{report_of_liar:?}");
    assert_eq!(report_of_liar.disagreed, [liar.public_key().to_hex()]);
    assert_eq!(
        record.quorum.as_ref().unwrap().disagreed,
        [liar.public_key().to_hex()]
    );

    // 2. The digest as a file the inner DVMs store on Blossom; the liar's claims the honest hash.
    let text = pipeline(Some("blossom"));
    let commit = maintainer.push(&text).await;
    let outcome = maintainer.run(&client, &text, &commit).await;
    let record = &outcome.jobs[0];
    assert!(outcome.succeeded, "{:?}", record.state);
    let (file_event, attested) = attestation(&client, record).await;
    assert_eq!(attested.agreed, honest);
    let sha = hex::encode(Sha256::digest(honest_digest(TEXT).as_bytes()));
    let files: Vec<(String, String)> = attested
        .files
        .files
        .iter()
        .map(|(name, sha)| (name.to_string(), sha.to_string()))
        .collect();
    assert_eq!(files, [("digest.txt".to_string(), sha.clone())]);
    assert_eq!(tag_values(&file_event, "wrapper"), [[KIND.to_string()]]);
    let answers = results(&client, record).await;
    let content: serde_json::Value = serde_json::from_str(
        &client
            .open_result(&answers[&liar.public_key()])
            .await
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        content["artifacts"][0]["sha256"], sha,
        "the liar claimed the honest file's hash"
    );
    let report_of_liar = report(&answers, &liar);
    let failure = report_of_liar.failure.clone().unwrap_or_default();
    assert!(failure.contains("do not check out"), "{report_of_liar:?}");
    assert_eq!(report_of_liar.attestation, None);
    for member in &maintainer.members()[..2] {
        assert_eq!(
            report(&answers, member).attestation,
            Some(file_event.id.to_hex())
        );
    }

    // nostr-tools verifies every event the quorum key signed, as the relay serves them.
    let filter = serde_json::json!({ "authors": [maintainer.dealt.quorum.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[network.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let verdict: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verdict["count"], 2, "two attestations: {out}");
    assert_eq!(verdict["valid"], 2, "{out}");

    client.shutdown().await;
    for dvm in wrappers {
        dvm.shutdown().await;
    }
}

/// Review finding H4: a wrapper forwards a quorum job only to the inner DVM the mandate names
/// for it. One whose operator configured another inner DVM, and one whose mandate names none
/// (configured for the open market), refuse the job with the reason and forward nothing; the
/// one left cannot get the quorum to sign alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrapper_forwards_a_quorum_job_only_to_the_inner_dvm_its_mandate_names() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    let mut maintainer = Maintainer::new(&network, dir.path()).await;
    // A and C serve the job's kind, D serves 5051 to anyone who asks; B runs nowhere.
    let (_a, a) = digest_dvm(&network.relay, &[]);
    let (_c, c) = digest_dvm(&network.relay, &[]);
    let (_d, _) = digest_dvm(&network.relay, &["--kind", "5051"]);
    let b = Keys::generate().public_key();
    let members: Vec<Keys> = maintainer.members().to_vec();
    // The mandate: member 0 → A, member 1 → B, member 2 → none.
    maintainer
        .name_inner(BTreeMap::from([
            (members[0].public_key(), a),
            (members[1].public_key(), b),
        ]))
        .await;
    let configs = [
        config(&network.relay, &dir.path().join("0"), KIND, &[a]),
        // Its operator chose C, not the mandate's B.
        config(&network.relay, &dir.path().join("1"), KIND, &[c]),
        // The open market of kind 5051: never for a quorum job.
        config(&network.relay, &dir.path().join("2"), 5051, &[]),
    ];
    let mut wrappers = Vec::new();
    for (n, config) in configs.into_iter().enumerate() {
        let data = dir.path().join(n.to_string());
        let shares = maintainer.shares(n);
        // Member 0 waits for commitments that never come: not long.
        let member = member_config(Duration::from_secs(5));
        wrappers.push(
            wrapper(
                &network.relay,
                &members[n],
                config,
                &data,
                Some((&shares, member)),
            )
            .await,
        );
    }
    let client = network.client().await;
    let text = pipeline(None);
    let commit = maintainer.push(&text).await;
    let outcome = maintainer.run(&client, &text, &commit).await;
    let record = &outcome.jobs[0];
    let JobState::Failed { reason } = &record.state else {
        panic!("the job must fail: {:?}", record.state)
    };
    assert!(
        reason.contains("the quorum signed no attestation"),
        "{reason}"
    );
    let short = |k: &Keys| k.public_key().to_hex()[..12].to_string();
    let refused = |k: &Keys, why: &str| {
        reason.split("; ").any(|part| {
            part.contains(&short(k)) && part.contains("refused: inner: ") && part.contains(why)
        })
    };
    assert!(
        refused(&members[1], "which its operator did not configure"),
        "{reason}"
    );
    assert!(
        refused(&members[2], "names no inner DVM for this wrapper"),
        "{reason}"
    );
    assert!(record.quorum.as_ref().unwrap().attestation.is_none());

    // Only member 0 forwarded, to A; no inner request went to the open market.
    let requests = client
        .fetch(
            Filter::new().kinds([Kind::from_u16(KIND), Kind::from_u16(5051)]),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let mut forwarded = Vec::new();
    for event in &requests {
        let request = JobRequest::from_event(event).unwrap();
        assert!(
            !request.providers.is_empty(),
            "a request to the open market: {event:?}"
        );
        if members.iter().any(|m| m.public_key() == event.pubkey) {
            forwarded.push((event.pubkey, request.providers));
        }
    }
    assert_eq!(forwarded, [(members[0].public_key(), vec![a])]);
    let signed = client
        .fetch(
            Filter::new().author(maintainer.dealt.quorum),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    assert!(signed.is_empty(), "the quorum key signed: {signed:?}");

    client.shutdown().await;
    for dvm in wrappers {
        dvm.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_params_a_wrapper_is_a_proxy_to_the_open_market() {
    let dir = tempfile::tempdir().unwrap();
    let network = Network::start(dir.path()).await;
    // The inner DVM serves 5051; the wrapper sells it as 5050 and forwards to whoever takes it.
    let (_inner, inner_key) = digest_dvm(&network.relay, &["--kind", "5051"]);
    let keys = Keys::generate();
    let config = config(&network.relay, dir.path(), 5051, &[]);
    let dvm = wrapper(&network.relay, &keys, config, dir.path(), None).await;

    let client = network.client().await;
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
    let network = Network::start(dir.path()).await;
    let (_inner, inner_key) = digest_dvm(&network.relay, &[]);
    let nobody = Keys::generate().public_key();
    let keys = Keys::generate();
    let mut config = config(&network.relay, dir.path(), KIND, &[nobody, inner_key]);
    config.patience.until_taken = Duration::from_secs(3);
    let dvm = wrapper(&network.relay, &keys, config, dir.path(), None).await;
    let client = network.client().await;

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
