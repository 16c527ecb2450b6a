//! `quorum verify` on quorum-signed releases, over a real relay (and Blossom server) on
//! loopback. Every event of the trust chain is made here by hand, without running the members,
//! so that each case can change exactly one link: the owner's NIP-34 announcement (30617) with
//! its clone URL, a maintainer's state (30618) with the commit at a ref tip, a maintainer's
//! mandate (8704), the run-step request (5702) naming mandate, commit, source, release and job
//! (its run id = `quorum_pipeline::run_id(url, commit, plan hash)`), each member's commitment
//! and reveal (with the plan hash), and the attestation (8708, with its `JobEvidence`) and
//! release binding (8700) signed with FROST by two of three shares of a dealt key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::client::JobClient;
use quorum_proto::agreement::{
    AttestationBasis, BuildResult, Commitment, JobEvidence, QuorumAttestation, Reveal, Salt,
    SignedCommitment, SignedReveal, Tally,
};
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::bundle::{VerificationBundle, bundle_tag};
use quorum_proto::mandate::{Keygen, Mandate, MandateRules, Member};
use quorum_proto::nip34::{RepoCoordinate, RepositoryAnnouncement, RepositoryState};
use quorum_proto::nip89::{Announcement, Capabilities, JobLimits, Offer, Price};
use quorum_proto::nip90::{JobParam, JobRequest, JobResult};
use quorum_proto::operator::OperatorList;
use quorum_proto::quorum_job::{QuorumJobParams, ReleaseParams, SourceRef, release_binding};
use quorum_proto::release::{Attestation, FileMetadata, ReleaseBinding};
use quorum_proto::step::{ArtifactRef, BlobRef, SandboxRef, StepJob, StepReport};
use quorum_router::verify::{
    Candidate, Expectation, SourceReport, Threshold, Verification, VerifyError, gather, verify_file,
};
use quorum_testnet::Network;
use quorum_threshold::sign::{SigningRequest, aggregate, commit, sign};
use quorum_threshold::{KeyShare, QuorumGroup};

/// The released bytes, and bytes a member might have built instead.
const RELEASED: &[u8] = b"app 1.0.0 for linux\n";
const OTHER: &[u8] = b"app 1.0.0 for linux, built differently\n";
const FILE: &str = "out/app";
/// The owner's announced clone URL (nothing is fetched from it: verify reads events only).
const URL: &str = "https://git.example/app.git";
const PIPELINE: &str = ".quorum/pipeline.yml";
const JOB: &str = "build";
const SCRIPT: &str = "make app";
const DEALER_WARNING: &str =
    "the quorum key was made by a dealer, who held the whole key while dealing it";

fn sha(bytes: &[u8]) -> Sha256Hex {
    use sha2::{Digest, Sha256};
    Sha256Hex::from(<[u8; 32]>::from(Sha256::digest(bytes)))
}

fn result(bytes: &[u8]) -> BuildResult {
    BuildResult::new().with_file(FILE, sha(bytes))
}

/// Distinct released bytes, so that several cases can share one relay.
fn variant(case: &str) -> Vec<u8> {
    format!("app 1.0.0 for linux, case {case}\n").into_bytes()
}

/// The commitments and reveals of a job, as a member would tally them.
type Votes = (Vec<SignedCommitment>, Vec<SignedReveal>);

/// The relay and Blossom server every identity of a test publishes to.
struct Net {
    dir: tempfile::TempDir,
    network: Network,
    client: JobClient,
}

impl Net {
    async fn start() -> Arc<Net> {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::start(dir.path()).await;
        let client = network.client().await;
        Arc::new(Net {
            dir,
            network,
            client,
        })
    }

    async fn publish(&self, event: &Event) {
        self.client.publish_signed(event).await.unwrap();
    }
}

/// How the quorum key signs: FROST shares of a dealt key, or a single plain key (a "1-of-1
/// quorum", which FROST cannot deal: nothing but the mandate calls it a quorum).
enum QuorumKey {
    Frost {
        group: QuorumGroup,
        /// One share per member, in `World::members` order.
        shares: Vec<KeyShare>,
    },
    Solo(Keys),
}

/// A repository with an owner and a maintainer, a quorum of members, a requester (the engine)
/// and the repository's NIP-34 evidence on the relay: the owner's announcement listing the
/// maintainer and [`URL`], and the maintainer's state with `refs/heads/main` at the commit.
struct World {
    net: Arc<Net>,
    /// Seconds added to every time this world dates its events (a stranger acting later).
    shift: i64,
    owner: Keys,
    maintainer: Keys,
    /// Who signs the job requests (the engine).
    requester: Keys,
    repo: RepoCoordinate,
    members: Vec<Keys>,
    key: QuorumKey,
    threshold: u16,
    commit: String,
    /// The plan hash of the pipeline at the commit, as the members derived it.
    plan: Sha256Hex,
    announcement: Event,
    state: Event,
    /// How many requests [`World::ask`] made: each is named after its number, so that two
    /// requests are two jobs even when they are dated the same second.
    requests: AtomicI64,
}

/// What a requester asks: the step, the job it names and the quorum params.
struct Ask {
    step: StepJob,
    job: String,
    params: QuorumJobParams,
}

/// A quorum's release as published.
struct Released {
    request: Event,
    attestation: Event,
    binding: Event,
}

impl World {
    /// A 2-of-3 quorum on a relay of its own.
    async fn start() -> World {
        World::on(Net::start().await, "app", 3, 2, 0).await
    }

    /// A world whose maintainer signed [`World::mandate`] ten minutes ago.
    async fn mandated() -> (World, Event) {
        let world = World::start().await;
        let mandate = world
            .publish_mandate(&world.mandate(), &world.maintainer, -600)
            .await;
        (world, mandate)
    }

    /// A world of `t` of `n` members for a repository `identifier` of a fresh owner, on `net`.
    async fn on(net: Arc<Net>, identifier: &str, n: usize, t: u16, shift: i64) -> World {
        let owner = Keys::generate();
        let maintainer = Keys::generate();
        let members: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
        let key = if n == 1 {
            QuorumKey::Solo(Keys::generate())
        } else {
            let roster =
                quorum_threshold::Roster::new(t, members.iter().map(Keys::public_key)).unwrap();
            let (group, dealt) =
                quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng).unwrap();
            let shares = members
                .iter()
                .map(|k| {
                    dealt
                        .iter()
                        .find(|s| s.member() == k.public_key())
                        .unwrap()
                        .clone()
                })
                .collect();
            QuorumKey::Frost { group, shares }
        };
        let commit = hex::encode(rand::random::<[u8; 20]>());
        let mut announcement = RepositoryAnnouncement::new(identifier);
        announcement.maintainers = vec![maintainer.public_key()];
        announcement.clone = vec![URL.to_string()];
        let announcement = announcement
            .to_event_builder()
            .custom_created_at(at(shift - 1000))
            .sign_with_keys(&owner)
            .unwrap();
        net.publish(&announcement).await;
        let mut world = World {
            net,
            shift,
            repo: RepoCoordinate::new(owner.public_key(), identifier),
            owner,
            maintainer,
            requester: Keys::generate(),
            members,
            key,
            threshold: t,
            commit,
            plan: Sha256Hex::from_bytes(rand::random()),
            requests: AtomicI64::new(0),
            state: announcement.clone(),
            announcement,
        };
        world.state = world
            .publish_state(&world.maintainer.clone(), &world.commit.clone(), -900)
            .await;
        world
    }

    fn at(&self, offset: i64) -> Timestamp {
        at(self.shift + offset)
    }

    /// A state of the repository with `refs/heads/main` at `commit`, signed by `signer`.
    async fn publish_state(&self, signer: &Keys, commit: &str, offset: i64) -> Event {
        let state = RepositoryState::new(self.repo.identifier.clone())
            .with_ref("refs/heads/main", commit)
            .unwrap()
            .with_head("refs/heads/main")
            .unwrap()
            .to_event_builder()
            .custom_created_at(self.at(offset))
            .sign_with_keys(signer)
            .unwrap();
        self.net.publish(&state).await;
        state
    }

    fn quorum(&self) -> PublicKey {
        match &self.key {
            QuorumKey::Frost { group, .. } => group.quorum(),
            QuorumKey::Solo(keys) => keys.public_key(),
        }
    }

    /// What the maintainer would sign: this quorum may build and release `build`.
    fn mandate(&self) -> Mandate {
        let members = match &self.key {
            QuorumKey::Frost { group, .. } => group
                .roster()
                .members()
                .iter()
                .map(|m| Member::new(m.pubkey, m.index))
                .collect(),
            QuorumKey::Solo(_) => vec![Member::new(self.members[0].public_key(), 1)],
        };
        Mandate {
            repo: self.repo.clone(),
            pipeline: PIPELINE.into(),
            jobs: vec![JOB.into()],
            quorum: Some(self.quorum()),
            members,
            threshold: self.threshold,
            keygen: Keygen::Dealer { dealer: None },
            allow: [1063u16, 8700, 8708].into_iter().collect(),
            expiration: self.at(86_400),
            rules: MandateRules::default(),
            content: "build quorum for app".into(),
        }
    }

    async fn publish_mandate(&self, mandate: &Mandate, signer: &Keys, offset: i64) -> Event {
        let event = mandate
            .to_event_builder()
            .unwrap()
            .custom_created_at(self.at(offset))
            .sign_with_keys(signer)
            .unwrap();
        self.net.publish(&event).await;
        event
    }

    /// The run id of building the commit from `url` with this world's plan.
    fn run(&self, url: &str) -> String {
        quorum_pipeline::run_id(url, &self.commit, &self.plan.to_hex())
    }

    /// What an honest engine asks the quorum under `mandate`: job `build` of the commit from
    /// the announced URL, naming the maintainers' evidence, releasing as run `run(URL)`.
    fn ask(&self, mandate: &Event) -> Ask {
        let mut step = StepJob::new(URL, self.commit.clone(), SCRIPT);
        step.artifacts = vec![FILE.into()];
        step.name = Some(format!(
            "build {}",
            self.requests.fetch_add(1, Ordering::Relaxed)
        ));
        Ask {
            step,
            job: JOB.into(),
            params: QuorumJobParams {
                mandate: mandate.id,
                commit: self.commit.clone(),
                release: Some(ReleaseParams {
                    repo: self.repo.clone(),
                    run: self.run(URL),
                    job: JOB.into(),
                    gates: Vec::new(),
                }),
                source: Some(SourceRef {
                    announcement: self.announcement.id,
                    state: self.state.id,
                    url: URL.into(),
                }),
            },
        }
    }

    /// The request of `ask`, signed by `signer` at `offset`, p-tagging every member.
    async fn publish_ask(&self, ask: &Ask, signer: &Keys, offset: i64) -> Event {
        let mut request = ask.step.to_request();
        request.params.push(JobParam::new(
            quorum_pipeline::dispatch::PARAM_JOB,
            &ask.job,
        ));
        request.providers = self.members.iter().map(Keys::public_key).collect();
        ask.params.apply(&mut request);
        let event = request
            .to_event_builder()
            .custom_created_at(self.at(offset))
            .sign_with_keys(signer)
            .unwrap();
        self.net.publish(&event).await;
        event
    }

    /// The honest request under `mandate`, by the requester, 400 s ago.
    async fn request(&self, mandate: &Event) -> Event {
        self.publish_ask(&self.ask(mandate), &self.requester, -400)
            .await
    }

    /// Each listed member commits to a result of `bytes` as `out/app` for `job`, and reveals
    /// it (naming the plan) if `reveals`. Returns what a member would tally.
    async fn take_part(&self, job: EventId, votes: &[(usize, &[u8])], reveals: bool) -> Votes {
        self.take_part_at(job, votes, reveals, -300, -200).await
    }

    async fn take_part_at(
        &self,
        job: EventId,
        votes: &[(usize, &[u8])],
        reveals_it: bool,
        committed: i64,
        revealed: i64,
    ) -> Votes {
        let (mut commitments, mut reveals) = (Vec::new(), Vec::new());
        for (i, bytes) in votes {
            let result = &result(bytes);
            let keys = &self.members[*i];
            let salt = Salt::random();
            let offset = i64::try_from(*i).unwrap();
            let commitment = Commitment::new(
                &keys.public_key(),
                job,
                self.quorum(),
                &salt,
                result,
                self.at(3600),
            )
            .to_event_builder()
            .custom_created_at(self.at(committed + offset))
            .sign_with_keys(keys)
            .unwrap();
            self.net.publish(&commitment).await;
            let commitment = SignedCommitment::from_event(&commitment).unwrap();
            if reveals_it {
                let reveal = Reveal::new(&commitment, salt, result.clone(), self.at(3600))
                    .with_plan(Some(self.plan))
                    .to_event_builder()
                    .unwrap()
                    .custom_created_at(self.at(revealed + offset))
                    .sign_with_keys(keys)
                    .unwrap();
                self.net.publish(&reveal).await;
                reveals.push(SignedReveal::from_event(&reveal).unwrap());
            }
            commitments.push(commitment);
        }
        (commitments, reveals)
    }

    /// The attestation the members derive from the tally of `votes` on `request`: the
    /// evidence is what the request names, dated no earlier than the events it relies on.
    fn attest(
        &self,
        mandate: &Event,
        request: &Event,
        (commitments, reveals): &Votes,
    ) -> (QuorumAttestation, Timestamp) {
        let parsed = JobRequest::from_event(request).unwrap();
        let params = QuorumJobParams::from_request(&parsed).unwrap().unwrap();
        let source = params.source.unwrap();
        let roster = Mandate::from_event(mandate).unwrap().roster().unwrap();
        let outcome = Tally::new(roster, request.id)
            .expecting_plan(Some(self.plan))
            .evaluate(commitments, reveals);
        let not_before = [request, mandate, &self.announcement, &self.state]
            .iter()
            .map(|e| e.created_at)
            .max()
            .unwrap();
        let basis = AttestationBasis {
            mandate: mandate.id,
            commit: self.commit.clone(),
            evidence: Some(JobEvidence {
                announcement: source.announcement,
                state: source.state,
                pipeline: PIPELINE.into(),
                plan_hash: self.plan,
                job: parsed
                    .param_value(quorum_pipeline::dispatch::PARAM_JOB)
                    .unwrap()
                    .into(),
            }),
            wrapped: None,
            not_before,
        };
        QuorumAttestation::from_tally(&outcome, &basis).unwrap()
    }

    /// The release the request asks for.
    fn release_params(request: &Event) -> ReleaseParams {
        let parsed = JobRequest::from_event(request).unwrap();
        QuorumJobParams::from_request(&parsed)
            .unwrap()
            .unwrap()
            .release
            .unwrap()
    }

    /// Signs `event` with FROST (members 0 and 1 taking part), or with the solo key.
    fn frost(&self, event: UnsignedEvent) -> Event {
        let (group, shares) = match &self.key {
            QuorumKey::Frost { group, shares } => (group, shares),
            QuorumKey::Solo(keys) => return event.sign_with_keys(keys).unwrap(),
        };
        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for share in [&shares[0], &shares[1]] {
            let (secret, public) = commit(share, &mut rand::rngs::OsRng);
            commitments.insert(share.member(), public);
            nonces.push((share, secret));
        }
        let request = SigningRequest::new(event, commitments);
        let shares = nonces
            .into_iter()
            .map(|(share, secret)| (share.member(), sign(share, secret, &request).unwrap()))
            .collect();
        let event = aggregate(group, &request, &shares).unwrap();
        event.verify().expect("plain BIP-340 under the quorum key");
        event
    }

    /// Signs with the quorum key when the event is the quorum's, else with `other`.
    fn sign_as(&self, event: UnsignedEvent, other: Option<&Keys>) -> Event {
        match other {
            Some(keys) => event.sign_with_keys(keys).unwrap(),
            None => self.frost(event),
        }
    }

    /// Publishes `attestation` dated `created_at` and the release binding of `files` that
    /// `release` asks for, both signed by the quorum (or `other`), and a NIP-94 event for each
    /// file signed by the requester, as the engine publishes it.
    async fn release(
        &self,
        attestation: &QuorumAttestation,
        created_at: Timestamp,
        release: &ReleaseParams,
        files: &BuildResult,
        other: Option<&Keys>,
    ) -> (Event, Event) {
        let author = other.map_or(self.quorum(), Keys::public_key);
        let unsigned = attestation.unsigned(author, created_at).unwrap();
        let binding = release_binding(release, &attestation.commit, files, &unsigned).unwrap();
        let attestation = self.sign_as(unsigned, other);
        let binding = self.sign_as(binding, other);
        self.net.publish(&attestation).await;
        self.net.publish(&binding).await;
        for sha in files.files.values() {
            let metadata = FileMetadata::for_artifact(
                &[format!("https://blossom.example/{sha}")],
                "application/octet-stream",
                *sha,
                20,
            )
            .unwrap()
            .to_event_builder()
            .sign_with_keys(&self.requester)
            .unwrap();
            self.net.publish(&metadata).await;
        }
        (attestation, binding)
    }

    /// The honest path: the request, `votes` cast and revealed, the quorum attests and
    /// releases what they agreed on.
    async fn release_agreed(&self, mandate: &Event, votes: &[(usize, &[u8])]) -> Released {
        let request = self.request(mandate).await;
        self.release_request(mandate, request, votes).await
    }

    /// [`World::release_agreed`] for a request already published.
    async fn release_request(
        &self,
        mandate: &Event,
        request: Event,
        votes: &[(usize, &[u8])],
    ) -> Released {
        let votes = self.take_part(request.id, votes, true).await;
        let (attestation, created_at) = self.attest(mandate, &request, &votes);
        let (attestation, binding) = self
            .release(
                &attestation,
                created_at,
                &World::release_params(&request),
                &attestation.files,
                None,
            )
            .await;
        Released {
            request,
            attestation,
            binding,
        }
    }

    /// What members 0 and 1 agree on: `bytes`.
    async fn release_bytes(&self, mandate: &Event, bytes: &[u8]) -> Released {
        self.release_agreed(mandate, &[(0, bytes), (1, bytes)])
            .await
    }

    /// What one expecting this world's repository gets (relay only).
    fn expect(&self) -> Expectation {
        Expectation {
            repo: Some(self.repo.clone()),
            ..Default::default()
        }
    }

    async fn verify(&self, bytes: &[u8]) -> Verification {
        self.verify_with(bytes, &self.expect()).await
    }

    async fn verify_with(&self, bytes: &[u8], expect: &Expectation) -> Verification {
        verify_at(&self.net, bytes, expect, None, true)
            .await
            .unwrap()
    }

    fn hex(&self, members: &[usize]) -> Vec<String> {
        let mut list: Vec<String> = members
            .iter()
            .map(|i| self.members[*i].public_key().to_hex())
            .collect();
        list.sort();
        list
    }
}

fn at(offset: i64) -> Timestamp {
    Timestamp::from(Timestamp::now().as_secs().saturating_add_signed(offset))
}

/// Verifies `bytes` (written to a file) from the relay of `net` when `online`, and/or from a
/// bundle file.
async fn verify_at(
    net: &Net,
    bytes: &[u8],
    expect: &Expectation,
    bundle: Option<&Path>,
    online: bool,
) -> Result<Verification, VerifyError> {
    let file = net.dir.path().join(format!("download-{}", sha(bytes)));
    std::fs::write(&file, bytes).unwrap();
    let verifier = if online {
        Some(
            JobClient::connect(std::slice::from_ref(&net.network.relay), Keys::generate())
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let verification = verify_file(verifier.as_ref(), &file, bundle, expect).await;
    if let Some(verifier) = verifier {
        verifier.shutdown().await;
    }
    verification
}

/// Asserts that verification failed with exactly these problems.
fn refused(verified: &Verification, problems: &[String]) {
    assert!(!verified.ok, "{verified:#?}");
    assert_eq!(verified.problems, problems, "{verified:#?}");
}

fn back_dated(attestation: &Event, what: &str, event: &Event) -> String {
    format!(
        "attestation {} is dated {}, before the {what} {} it relies on ({}): back-dated",
        attestation.id,
        attestation.created_at.as_secs(),
        event.id,
        event.created_at.as_secs()
    )
}

/// Every quorum-signed event on the relay re-verified by nostr-tools: `count` of them.
fn nostr_tools_verify(net: &Net, author: &PublicKey, count: usize) {
    let filter = serde_json::json!({ "authors": [author.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[net.network.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["count"], count, "{out}");
    assert_eq!(report["valid"], count, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_release_verifies_and_names_its_evidence_and_who_agreed() {
    let (world, mandate) = World::mandated().await;
    let released = world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED), (2, OTHER)])
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert!(verified.problems.is_empty(), "{verified:#?}");
    assert_eq!(verified.warnings, vec![DEALER_WARNING.to_string()]);
    assert_eq!(verified.sha256, sha(RELEASED).to_hex());
    assert_eq!(verified.expected_repo, Some(world.repo.to_string()));
    assert_eq!(
        verified.candidates,
        vec![Candidate {
            release: released.binding.id.to_hex(),
            signer: world.quorum().to_hex(),
            repo: world.repo.to_string(),
            commit: world.commit.clone(),
        }]
    );
    assert_eq!(verified.release, Some(released.binding.id.to_hex()));
    assert_eq!(verified.signer, Some(world.quorum().to_hex()));
    assert_eq!(verified.repo, Some(world.repo.to_string()));
    assert_eq!(verified.commit, Some(world.commit.clone()));
    assert_eq!(verified.run, Some(world.run(URL)));
    assert_eq!(verified.name.as_deref(), Some("build/out/app"));
    assert_eq!(verified.attested_by, vec![world.quorum().to_hex()]);
    assert_eq!(verified.quorum, Some(world.quorum().to_hex()));
    assert_eq!(verified.attestation, Some(released.attestation.id.to_hex()));
    assert_eq!(verified.request, Some(released.request.id.to_hex()));
    assert_eq!(
        verified.requester,
        Some(world.requester.public_key().to_hex())
    );
    assert_eq!(verified.job.as_deref(), Some(JOB));
    assert_eq!(verified.pipeline.as_deref(), Some(PIPELINE));
    assert_eq!(verified.plan_hash, Some(world.plan.to_hex()));
    assert_eq!(
        verified.source,
        Some(SourceReport {
            announcement: world.announcement.id.to_hex(),
            state: world.state.id.to_hex(),
            state_signer: world.maintainer.public_key().to_hex(),
            url: URL.into(),
            refs: vec!["refs/heads/main".into()],
        })
    );
    assert_eq!(verified.built_by.as_deref(), Some("runners"));
    assert_eq!(verified.mandate, Some(mandate.id.to_hex()));
    assert_eq!(
        verified.mandate_signer,
        Some(world.maintainer.public_key().to_hex())
    );
    assert_eq!(verified.threshold, Some(Threshold { t: 2, n: 3 }));
    assert_eq!(verified.keygen.as_deref(), Some("dealer"));
    // No member names an operator here: each is listed, unconfirmed.
    let unconfirmed: BTreeMap<String, Option<String>> =
        world.hex(&[0, 1]).into_iter().map(|m| (m, None)).collect();
    assert_eq!(verified.operators, unconfirmed);
    assert_eq!(verified.distinct_operators, Some(0));
    assert_eq!(verified.agreed, world.hex(&[0, 1]));
    assert_eq!(verified.disagreed, world.hex(&[2]));
    assert!(verified.silent.is_empty() && verified.late.is_empty());
    assert_eq!(
        verified.urls,
        vec![format!("https://blossom.example/{}", sha(RELEASED))]
    );
    assert!(verified.bundles.is_empty());

    // The JSON a script reads (docs/protocol.md §11).
    let json = serde_json::to_value(&verified).unwrap();
    for field in [
        "ok",
        "sha256",
        "expected_repo",
        "candidates",
        "release",
        "signer",
        "repo",
        "commit",
        "run",
        "name",
        "attested_by",
        "problems",
        "warnings",
        "urls",
        "quorum",
        "attestation",
        "request",
        "requester",
        "job",
        "pipeline",
        "plan_hash",
        "source",
        "built_by",
        "mandate",
        "mandate_signer",
        "threshold",
        "keygen",
        "operators",
        "distinct_operators",
        "agreed",
        "disagreed",
        "silent",
        "late",
        "bundles",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert_eq!(json["threshold"], serde_json::json!({"t": 2, "n": 3}));
    for field in ["announcement", "state", "state_signer", "url", "refs"] {
        assert!(json["source"].get(field).is_some(), "no source.{field}");
    }

    // One byte changed: no release lists it.
    let mut tampered = RELEASED.to_vec();
    tampered[0] ^= 1;
    let tampered = world.verify(&tampered).await;
    assert_eq!(tampered.release, None);
    refused(&tampered, &["no release lists these bytes".into()]);

    // A second implementation (nostr-tools) verifies every quorum-signed event as the relay
    // serves it: the attestation and the binding.
    nostr_tools_verify(&world.net, &world.quorum(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_revealed_is_silent_and_does_not_fail_the_release() {
    let (world, mandate) = World::mandated().await;
    let request = world.request(&mandate).await;
    world.take_part(request.id, &[(2, RELEASED)], false).await;
    world
        .release_request(&mandate, request, &[(0, RELEASED), (1, RELEASED)])
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.agreed, world.hex(&[0, 1]));
    assert!(verified.disagreed.is_empty(), "{verified:#?}");
    assert_eq!(verified.silent, world.hex(&[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_agreed_after_the_quorum_signed_is_late() {
    let (world, mandate) = World::mandated().await;
    let released = world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;
    // Member 2 commits and reveals the same bytes after the attestation.
    world
        .take_part_at(released.request.id, &[(2, RELEASED)], true, -150, -100)
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.agreed, world.hex(&[0, 1]));
    assert_eq!(verified.late, world.hex(&[2]));
    assert!(verified.disagreed.is_empty() && verified.silent.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandate_signed_by_someone_who_is_not_a_maintainer_is_refused() {
    let world = World::start().await;
    let stranger = Keys::generate();
    let mandate = world
        .publish_mandate(&world.mandate(), &stranger, -600)
        .await;
    world.release_bytes(&mandate, RELEASED).await;

    let verified = world.verify(RELEASED).await;
    assert_eq!(
        verified.mandate_signer,
        Some(stranger.public_key().to_hex())
    );
    refused(
        &verified,
        &[format!(
            "mandate {} is signed by {}, who is not a maintainer of {} (maintainers: the owner \
             and those its 30617 announcement lists)",
            mandate.id,
            stranger.public_key().to_hex(),
            world.repo
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_revoked_before_the_release_is_refused() {
    let (world, mandate) = World::mandated().await;
    // The owner (a maintainer too) revokes it: the same quorum, allowed to sign nothing.
    let mut revocation = world.mandate();
    revocation.allow.clear();
    let revocation = world.publish_mandate(&revocation, &world.owner, -500).await;
    let released = world.release_bytes(&mandate, RELEASED).await;

    refused(
        &world.verify(RELEASED).await,
        &[format!(
            "mandate {} was superseded before attestation {}: mandate {} by {} (at {}) revoked \
             the quorum's right to sign releases",
            mandate.id,
            released.attestation.id,
            revocation.id,
            world.owner.public_key().to_hex(),
            revocation.created_at.as_secs()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_mandate_is_refused_and_one_signed_after_the_release_changes_nothing() {
    let net = Net::start().await;
    // A newer mandate for the same quorum, signed before the attestation, counts instead.
    let world = World::on(Arc::clone(&net), "app", 3, 2, 0).await;
    let mandate = world
        .publish_mandate(&world.mandate(), &world.maintainer, -600)
        .await;
    let mut newer = world.mandate();
    newer.content = "build quorum for app, renewed".into();
    let newer = world.publish_mandate(&newer, &world.maintainer, -500).await;
    let released = world.release_bytes(&mandate, RELEASED).await;
    refused(
        &world.verify(RELEASED).await,
        &[format!(
            "mandate {} was superseded before attestation {}: mandate {} by {} (at {}) counted \
             instead",
            mandate.id,
            released.attestation.id,
            newer.id,
            world.maintainer.public_key().to_hex(),
            newer.created_at.as_secs()
        )],
    );

    // A revocation signed after the attestation does not undo a release made before it.
    let later = World::on(net, "later", 3, 2, 0).await;
    let mandate = later
        .publish_mandate(&later.mandate(), &later.maintainer, -600)
        .await;
    later.release_bytes(&mandate, OTHER).await;
    let mut revocation = later.mandate();
    revocation.allow.clear();
    later
        .publish_mandate(&revocation, &later.maintainer, -50)
        .await;
    let verified = later.verify(OTHER).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.mandate, Some(mandate.id.to_hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandate_that_does_not_allow_release_bindings_is_refused() {
    let world = World::start().await;
    let mut narrow = world.mandate();
    narrow.allow = [8708u16].into_iter().collect();
    let mandate = world
        .publish_mandate(&narrow, &world.maintainer, -600)
        .await;
    world.release_bytes(&mandate, RELEASED).await;

    refused(
        &world.verify(RELEASED).await,
        &[format!(
            "mandate {} does not allow the quorum to sign kind 8700 (release binding)",
            mandate.id
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_signed_by_a_key_other_than_the_mandates_quorum_is_refused() {
    let (world, mandate) = World::mandated().await;
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, RELEASED), (1, RELEASED)], true)
        .await;
    let (attestation, created_at) = world.attest(&mandate, &request, &votes);
    // Someone copies the agreed attestation and signs it, and a release, with their own key.
    let rogue = Keys::generate();
    world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &attestation.files,
            Some(&rogue),
        )
        .await;

    let verified = world.verify(RELEASED).await;
    assert_eq!(verified.quorum, Some(rogue.public_key().to_hex()));
    refused(
        &verified,
        &[format!(
            "mandate {} is for quorum key {}, not the release's signer {}",
            mandate.id,
            world.quorum().to_hex(),
            rogue.public_key().to_hex()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_by_another_key_that_names_the_quorums_attestation_is_refused() {
    let (world, mandate) = World::mandated().await;
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, RELEASED), (1, RELEASED)], true)
        .await;
    let (attestation, created_at) = world.attest(&mandate, &request, &votes);
    let attestation = world.frost(attestation.unsigned(world.quorum(), created_at).unwrap());
    world.net.publish(&attestation).await;
    // The genuine attestation, under a binding signed by someone else.
    let rogue = Keys::generate();
    let binding = ReleaseBinding::new(
        world.repo.clone(),
        world.commit.clone(),
        world.run(URL),
        vec![ArtifactDigest::new("build/out/app", sha(RELEASED))],
        vec![Attestation {
            result: attestation.id,
            builder: world.quorum(),
        }],
    )
    .unwrap()
    .to_event_builder(attestation.created_at)
    .unwrap()
    .sign_with_keys(&rogue)
    .unwrap();
    world.net.publish(&binding).await;

    // By default a release not signed by a quorum is refused outright.
    let verified = world.verify(RELEASED).await;
    assert_eq!(verified.quorum, None);
    refused(
        &verified,
        &[format!(
            "release {} is signed by {}, not by a quorum: no independent builders agreed on \
             these bytes (pass --allow-single-builder to accept a single builder's word)",
            binding.id,
            rogue.public_key().to_hex()
        )],
    );
    // Accepting single builders does not make a quorum's attestation the rogue's.
    let verified = world
        .verify_with(
            RELEASED,
            &Expectation {
                allow_single_builder: true,
                ..world.expect()
            },
        )
        .await;
    assert!(verified.attested_by.is_empty());
    refused(
        &verified,
        &[format!(
            "attestation {} is a quorum attestation by {}, but the release is signed by {}: a \
             quorum's release must be signed by the quorum key",
            attestation.id,
            world.quorum().to_hex(),
            rogue.public_key().to_hex()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_of_other_bytes_does_not_vouch_for_the_release() {
    let (world, mandate) = World::mandated().await;
    // The members agreed on OTHER; the binding claims RELEASED.
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, OTHER), (1, OTHER), (2, OTHER)], true)
        .await;
    let (attestation, created_at) = world.attest(&mandate, &request, &votes);
    let (attestation, _) = world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &result(RELEASED),
            None,
        )
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.attested_by.is_empty());
    assert_eq!(verified.agreed, world.hex(&[0, 1, 2]));
    refused(
        &verified,
        &[format!(
            "attestation {} lists {FILE} as {}, but the release lists build/{FILE} as {}",
            attestation.id,
            sha(OTHER),
            sha(RELEASED)
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_naming_a_member_whose_reveal_contradicts_it_is_refused() {
    let (world, mandate) = World::mandated().await;
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(
            request.id,
            &[(0, RELEASED), (1, RELEASED), (2, OTHER)],
            true,
        )
        .await;
    let (mut attestation, _) = world.attest(&mandate, &request, &votes);
    // The quorum claims the dissenter agreed, dated after every reveal.
    let dissenter = world.members[2].public_key();
    attestation.agreed.insert(dissenter);
    let tallied = votes.1.iter().map(|r| r.event().created_at).max().unwrap();
    world
        .release(
            &attestation,
            tallied,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;

    let verified = world.verify(RELEASED).await;
    let reveal = votes.1.iter().find(|r| r.member() == dissenter).unwrap();
    assert_eq!(verified.agreed, world.hex(&[0, 1, 2]));
    assert!(verified.disagreed.is_empty());
    refused(
        &verified,
        &[format!(
            "{}, named as agreeing, revealed otherwise in {}: {FILE} = {}",
            dissenter.to_hex(),
            reveal.id(),
            sha(OTHER)
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_naming_a_member_that_equivocated_before_it_is_refused() {
    let (world, mandate) = World::mandated().await;
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, RELEASED), (1, RELEASED)], true)
        .await;
    // Member 0 also committed to other bytes, before the quorum signed.
    world
        .take_part_at(request.id, &[(0, OTHER)], false, -250, -240)
        .await;
    let (attestation, created_at) = world.attest(&mandate, &request, &votes);
    world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;

    refused(
        &world.verify(RELEASED).await,
        &[format!(
            "{}, named as agreeing, equivocated: it committed twice for job {}",
            world.members[0].public_key().to_hex(),
            request.id
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_members_publish_after_the_attestation_does_not_turn_the_verdict() {
    let (world, mandate) = World::mandated().await;
    let released = world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;
    // After the quorum signed, member 0 commits again to other bytes and reveals them (a
    // restarted member, or one poisoning the release), and member 1 reveals other bytes
    // under a new commitment: neither is evidence about the agreement that was signed.
    world
        .take_part_at(
            released.request.id,
            &[(0, OTHER), (1, OTHER)],
            true,
            -100,
            -50,
        )
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.agreed, world.hex(&[0, 1]));
    assert!(verified.disagreed.is_empty(), "{verified:#?}");
    assert_eq!(verified.silent, world.hex(&[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_repositorys_release_does_not_verify_and_without_repo_nothing_does() {
    // The attacker's own repository, quorum and mandate: a genuine release of the attacker's
    // repository, of bytes the victim's users may download.
    let (attacker, mandate) = World::mandated().await;
    let released = attacker.release_bytes(&mandate, RELEASED).await;
    let victim = RepoCoordinate::new(Keys::generate().public_key(), "app");
    let candidates = vec![Candidate {
        release: released.binding.id.to_hex(),
        signer: attacker.quorum().to_hex(),
        repo: attacker.repo.to_string(),
        commit: attacker.commit.clone(),
    }];

    let verified = attacker
        .verify_with(
            RELEASED,
            &Expectation {
                repo: Some(victim.clone()),
                ..Default::default()
            },
        )
        .await;
    refused(
        &verified,
        &[format!(
            "no release of {victim} lists these bytes (only releases of other repositories do)"
        )],
    );
    assert_eq!(verified.expected_repo, Some(victim.to_string()));
    assert_eq!(verified.candidates, candidates);
    assert_eq!(verified.release, None);
    assert_eq!(
        verified.warnings,
        vec![format!(
            "release {} by {} is for another repository ({}): ignored",
            released.binding.id,
            attacker.quorum().to_hex(),
            attacker.repo
        )]
    );

    // Without --repo nothing verifies, even the attacker's genuine release: verify says what
    // it found and that the user must name the repository.
    let verified = attacker
        .verify_with(RELEASED, &Expectation::default())
        .await;
    refused(
        &verified,
        &[format!(
            "no repository was named, so nothing can verify: releases of these bytes name {}; \
             pass --repo with the repository you expect (30617:<owner hex>:<d> or its naddr)",
            attacker.repo
        )],
    );
    assert_eq!(verified.expected_repo, None);
    assert_eq!(verified.candidates, candidates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_newer_release_of_the_same_bytes_is_a_warning_not_the_verdict() {
    let net = Net::start().await;
    let world = World::on(Arc::clone(&net), "app", 3, 2, 0).await;
    let mandate = world
        .publish_mandate(&world.mandate(), &world.maintainer, -600)
        .await;
    let genuine = world.release_bytes(&mandate, RELEASED).await;
    // A stranger runs a quorum of its own for a repository of its own, 150 s later, and
    // releases the same bytes.
    let stranger = World::on(Arc::clone(&net), "app", 3, 2, 150).await;
    let theirs = stranger
        .publish_mandate(&stranger.mandate(), &stranger.maintainer, -600)
        .await;
    let strangers = stranger.release_bytes(&theirs, RELEASED).await;
    assert!(strangers.binding.created_at > genuine.binding.created_at);
    // And someone signs a newer binding for the genuine repository naming a result that
    // does not exist (H2: it must not hide the genuine release).
    let vandal = Keys::generate();
    let bogus = ReleaseBinding::new(
        world.repo.clone(),
        world.commit.clone(),
        world.run(URL),
        vec![ArtifactDigest::new("build/out/app", sha(RELEASED))],
        vec![Attestation {
            result: EventId::from_byte_array([0x11; 32]),
            builder: vandal.public_key(),
        }],
    )
    .unwrap()
    .to_event_builder(at(60))
    .unwrap()
    .sign_with_keys(&vandal)
    .unwrap();
    net.publish(&bogus).await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.release, Some(genuine.binding.id.to_hex()));
    assert_eq!(verified.quorum, Some(world.quorum().to_hex()));
    // Every candidate is listed, newest first.
    let listed: Vec<&str> = verified
        .candidates
        .iter()
        .map(|c| c.release.as_str())
        .collect();
    assert_eq!(
        listed,
        vec![
            bogus.id.to_hex(),
            strangers.binding.id.to_hex(),
            genuine.binding.id.to_hex()
        ]
    );
    assert_eq!(
        verified.warnings,
        vec![
            format!(
                "release {} by {} is for another repository ({}): ignored",
                strangers.binding.id,
                stranger.quorum().to_hex(),
                stranger.repo
            ),
            DEALER_WARNING.to_string(),
            format!(
                "1 other release(s) of {} list these bytes too (not needed for the verdict)",
                world.repo
            ),
        ]
    );
    // The stranger's release verifies for the stranger's repository, and only there.
    let theirs = stranger.verify(RELEASED).await;
    assert!(theirs.ok, "{theirs:#?}");
    assert_eq!(theirs.release, Some(strangers.binding.id.to_hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_builders_release_is_refused_unless_allowed() {
    let world = World::start().await;
    // The engine asks one runner for the step; the runner's result reports the bytes; the
    // engine signs a binding naming that result.
    let mut step = StepJob::new(URL, world.commit.clone(), SCRIPT);
    step.artifacts = vec![FILE.into()];
    let request = step
        .to_request()
        .to_event_builder()
        .sign_with_keys(&world.requester)
        .unwrap();
    world.net.publish(&request).await;
    let builder = Keys::generate();
    let blob = |bytes: &[u8]| BlobRef {
        sha256: sha(bytes).to_hex(),
        size: bytes.len() as u64,
        urls: vec![format!("https://blossom.example/{}", sha(bytes))],
    };
    let report = StepReport {
        commit: world.commit.clone(),
        exit_code: Some(0),
        timed_out: false,
        duration_ms: 10,
        source_date_epoch: 0,
        artifacts: vec![ArtifactRef {
            name: FILE.into(),
            blob: blob(RELEASED),
        }],
        log: blob(b"log"),
        log_tail: String::new(),
        sandbox: SandboxRef {
            name: "bubblewrap".into(),
            isolated: true,
            image: None,
        },
        quorum: None,
        ci_job_result: None,
    };
    let result = JobResult::for_request(&request, serde_json::to_string(&report).unwrap())
        .unwrap()
        .to_event_builder(builder.secret_key())
        .unwrap()
        .sign_with_keys(&builder)
        .unwrap();
    world.net.publish(&result).await;
    let binding = ReleaseBinding::new(
        world.repo.clone(),
        world.commit.clone(),
        world.run(URL),
        vec![ArtifactDigest::new("build/out/app", sha(RELEASED))],
        vec![Attestation {
            result: result.id,
            builder: builder.public_key(),
        }],
    )
    .unwrap()
    .to_event_builder(Timestamp::now())
    .unwrap()
    .sign_with_keys(&world.requester)
    .unwrap();
    world.net.publish(&binding).await;

    let verified = world.verify(RELEASED).await;
    refused(
        &verified,
        &[format!(
            "release {} is signed by {}, not by a quorum: no independent builders agreed on \
             these bytes (pass --allow-single-builder to accept a single builder's word)",
            binding.id,
            world.requester.public_key().to_hex()
        )],
    );
    assert!(verified.attested_by.is_empty());

    let verified = world
        .verify_with(
            RELEASED,
            &Expectation {
                allow_single_builder: true,
                ..world.expect()
            },
        )
        .await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.attested_by, vec![builder.public_key().to_hex()]);
    assert_eq!(verified.quorum, None);
    assert_eq!(
        verified.warnings,
        vec![
            "a single builder's release: nothing but that builder's word says these bytes come \
             from the commit (accepted with --allow-single-builder)"
                .to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_of_one_dealer_quorum_is_reported_and_refused_when_the_user_requires_more() {
    // One person holds the owner key, the "quorum" key and the only member key.
    let world = World::on(Net::start().await, "solo", 1, 1, 0).await;
    let mandate = world
        .publish_mandate(&world.mandate(), &world.owner, -600)
        .await;
    world.release_agreed(&mandate, &[(0, RELEASED)]).await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.threshold, Some(Threshold { t: 1, n: 1 }));
    assert_eq!(verified.keygen.as_deref(), Some("dealer"));
    assert_eq!(verified.warnings, vec![DEALER_WARNING.to_string()]);

    let verified = world
        .verify_with(
            RELEASED,
            &Expectation {
                min_threshold: Some(2),
                ..world.expect()
            },
        )
        .await;
    refused(
        &verified,
        &[
            "the quorum needs only 1 of 1 members to agree; at least 2 were required \
           (--min-threshold)"
                .into(),
        ],
    );
    let verified = world
        .verify_with(
            RELEASED,
            &Expectation {
                require_dkg: true,
                ..world.expect()
            },
        )
        .await;
    refused(
        &verified,
        &[
            "the quorum key was not shown to be made by DKG (keygen: dealer); --require-dkg \
           refuses it"
                .into(),
        ],
    );
    nostr_tools_verify(&world.net, &world.quorum(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_dkg_takes_the_maintainers_word_for_the_keygen_and_no_strangers() {
    let net = Net::start().await;
    // The maintainer's mandate says the key was made by DKG.
    let world = World::on(Arc::clone(&net), "app", 3, 2, 0).await;
    let mut dkg = world.mandate();
    dkg.keygen = Keygen::Dkg;
    let mandate = world.publish_mandate(&dkg, &world.maintainer, -600).await;
    world.release_bytes(&mandate, RELEASED).await;
    let require_dkg = Expectation {
        require_dkg: true,
        min_threshold: Some(2),
        ..world.expect()
    };
    let verified = world.verify_with(RELEASED, &require_dkg).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.keygen.as_deref(), Some("dkg"));
    assert!(verified.warnings.is_empty(), "{verified:#?}");

    // A dealt key whose origin a stranger tries to rewrite: an earlier mandate for the same
    // key and repository claiming DKG, signed by someone who is not a maintainer.
    let dealt = World::on(net, "dealt", 3, 2, 0).await;
    let mandate = dealt
        .publish_mandate(&dealt.mandate(), &dealt.maintainer, -600)
        .await;
    let mut claim = dealt.mandate();
    claim.keygen = Keygen::Dkg;
    dealt.publish_mandate(&claim, &Keys::generate(), -700).await;
    dealt.release_bytes(&mandate, OTHER).await;
    let verified = dealt
        .verify_with(
            OTHER,
            &Expectation {
                repo: Some(dealt.repo.clone()),
                ..require_dkg
            },
        )
        .await;
    assert_eq!(verified.keygen.as_deref(), Some("dealer"));
    refused(
        &verified,
        &[
            "the quorum key was not shown to be made by DKG (keygen: dealer); --require-dkg \
           refuses it"
                .into(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_dated_attestation_is_refused() {
    let (world, mandate) = World::mandated().await;
    // Dated a second before the request it answers.
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, RELEASED), (1, RELEASED)], true)
        .await;
    let (attestation, _) = world.attest(&mandate, &request, &votes);
    let early = Timestamp::from(request.created_at.as_secs() - 1);
    let (attestation, _) = world
        .release(
            &attestation,
            early,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(RELEASED).await,
        &[back_dated(&attestation, "job request", &request)],
    );

    // Dated before the state it names (the owner, a maintainer, signed it 150 s ago).
    let bytes = variant("state");
    let state = world.publish_state(&world.owner, &world.commit, -150).await;
    let mut ask = world.ask(&mandate);
    ask.params.source.as_mut().unwrap().state = state.id;
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (attestation, _) = world.attest(&mandate, &request, &votes);
    let tallied = votes.1.iter().map(|r| r.event().created_at).max().unwrap();
    let (attestation, _) = world
        .release(
            &attestation,
            tallied,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(&bytes).await,
        &[back_dated(&attestation, "state", &state)],
    );

    // Dated before the mandate it acts under.
    let bytes = variant("mandate");
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (attestation, _) = world.attest(&mandate, &request, &votes);
    let early = Timestamp::from(mandate.created_at.as_secs() - 1);
    let (attestation, _) = world
        .release(
            &attestation,
            early,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(&bytes).await,
        &[
            back_dated(&attestation, "mandate", &mandate),
            back_dated(&attestation, "job request", &request),
        ],
    );
}

/// Each case changes one link between the release and the maintainers' code; each gets bytes
/// of its own, so that the cases share one relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_that_does_not_tie_the_release_to_the_maintainers_code_is_refused() {
    let (world, mandate) = World::mandated().await;
    let stranger = Keys::generate();
    let other_commit = hex::encode(rand::random::<[u8; 20]>());

    // A request built on a state signed by someone who is not a maintainer.
    let bytes = variant("stranger's state");
    let state = world.publish_state(&stranger, &world.commit, -850).await;
    let mut ask = world.ask(&mandate);
    ask.params.source.as_mut().unwrap().state = state.id;
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    world
        .release_request(&mandate, request, &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "source: state {} is signed by {}, who is not a maintainer of {}",
            state.id,
            stranger.public_key(),
            world.repo
        )],
    );

    // A maintainer-signed state in which the commit is not a ref tip.
    let bytes = variant("not a tip");
    let state = world.publish_state(&world.owner, &other_commit, -850).await;
    let mut ask = world.ask(&mandate);
    ask.params.source.as_mut().unwrap().state = state.id;
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    world
        .release_request(&mandate, request, &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "source: commit {} is not the tip of any ref in maintainer-signed state {}",
            world.commit, state.id
        )],
    );

    // A request fetching another URL than the announced clone URLs (a fork), with the run
    // id computed for that URL.
    let bytes = variant("fork");
    let fork = "https://git.example/attacker/app.git";
    let mut ask = world.ask(&mandate);
    ask.step.repo = fork.into();
    ask.params.source.as_mut().unwrap().url = fork.into();
    ask.params.release.as_mut().unwrap().run = world.run(fork);
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    world
        .release_request(&mandate, request, &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "source: repository URL {fork} is not one of the clone URLs the owner announced \
             for {} ({URL})",
            world.repo
        )],
    );

    // A run step whose `repo` input is not the URL its source evidence names.
    let bytes = variant("repo input");
    let mut ask = world.ask(&mandate);
    ask.step.repo = fork.into();
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    let released = world
        .release_request(&mandate, request, &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "job request {} fetches {fork}, not {URL}, the URL its source evidence names",
            released.request.id
        )],
    );

    // A request naming another job than the attestation's.
    let bytes = variant("job");
    let mut ask = world.ask(&mandate);
    ask.job = "test".into();
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (mut attestation, created_at) = world.attest(&mandate, &request, &votes);
    attestation.evidence.as_mut().unwrap().job = JOB.into();
    world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "job request {} does not name job {JOB}",
            request.id
        )],
    );

    // An attestation naming other source evidence than the request it answers.
    let bytes = variant("source");
    let state = world.publish_state(&world.owner, &world.commit, -840).await;
    let mut ask = world.ask(&mandate);
    ask.params.source.as_mut().unwrap().state = state.id;
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (mut attestation, created_at) = world.attest(&mandate, &request, &votes);
    attestation.evidence.as_mut().unwrap().state = world.state.id;
    let (attestation, _) = world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "attestation {} names other source evidence than the request it answers",
            attestation.id
        )],
    );

    // A request and binding naming a run that is not this URL, commit and plan.
    let bytes = variant("run");
    let wrong_run = "0f".repeat(32);
    let mut ask = world.ask(&mandate);
    ask.params.release.as_mut().unwrap().run = wrong_run.clone();
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    world
        .release_request(&mandate, request, &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "the release names run {wrong_run}, but {URL} at commit {} with plan {} is run {}",
            world.commit,
            world.plan,
            world.run(URL)
        )],
    );

    // A binding for another release than the request asked for.
    let bytes = variant("release");
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (attestation, created_at) = world.attest(&mandate, &request, &votes);
    let mut release = World::release_params(&request);
    release.run = wrong_run.clone();
    world
        .release(&attestation, created_at, &release, &attestation.files, None)
        .await;
    refused(
        &world.verify(&bytes).await,
        &[
            format!(
                "job request {} did not ask for this release (repository, run and job)",
                request.id
            ),
            format!(
                "the release names run {wrong_run}, but {URL} at commit {} with plan {} is run \
                 {}",
                world.commit,
                world.plan,
                world.run(URL)
            ),
        ],
    );

    // A request under another mandate than the attestation's.
    let bytes = variant("mandate");
    let mut ask = world.ask(&mandate);
    ask.params.mandate = EventId::from_byte_array([0x22; 32]);
    let request = world.publish_ask(&ask, &world.requester, -400).await;
    world
        .release_request(&mandate, request.clone(), &[(0, &bytes), (1, &bytes)])
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "job request {} names another mandate or commit than the attestation",
            request.id
        )],
    );

    // An attestation built from another pipeline file than the mandate's.
    let bytes = variant("pipeline");
    let request = world.request(&mandate).await;
    let votes = world
        .take_part(request.id, &[(0, &bytes), (1, &bytes)], true)
        .await;
    let (mut attestation, created_at) = world.attest(&mandate, &request, &votes);
    attestation.evidence.as_mut().unwrap().pipeline = "ci.yml".into();
    let (attestation, _) = world
        .release(
            &attestation,
            created_at,
            &World::release_params(&request),
            &attestation.files,
            None,
        )
        .await;
    refused(
        &world.verify(&bytes).await,
        &[format!(
            "attestation {} builds from ci.yml, but mandate {} covers {PIPELINE}",
            attestation.id, mandate.id
        )],
    );

    // The honest release on the same relay still verifies.
    world.release_bytes(&mandate, RELEASED).await;
    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_by_someone_the_mandate_does_not_name_as_requester_is_refused() {
    let world = World::start().await;
    let mut mandate = world.mandate();
    mandate.rules.requesters = vec![world.requester.public_key()];
    let mandate = world
        .publish_mandate(&mandate, &world.maintainer, -600)
        .await;
    let stranger = Keys::generate();
    let request = world
        .publish_ask(&world.ask(&mandate), &stranger, -400)
        .await;
    world
        .release_request(&mandate, request.clone(), &[(0, OTHER), (1, OTHER)])
        .await;
    let verified = world.verify(OTHER).await;
    assert_eq!(verified.requester, Some(stranger.public_key().to_hex()));
    refused(
        &verified,
        &[format!(
            "job request {} is signed by {}, whom mandate {} does not allow to request the \
             quorum's jobs",
            request.id,
            stranger.public_key().to_hex(),
            mandate.id
        )],
    );

    // The named requester's release verifies.
    world.release_bytes(&mandate, RELEASED).await;
    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
}

/// Publishes `member`'s NIP-89 announcement naming `operator`.
async fn announce(net: &Net, member: &Keys, operator: &PublicKey) {
    let announcement = Announcement {
        identifier: "runner".into(),
        name: "runner".into(),
        about: String::new(),
        kinds: vec![StepJob::kind()],
        offer: Offer {
            capabilities: Capabilities {
                arch: "x86_64".into(),
                os: "linux".into(),
                sandbox: "bubblewrap".into(),
                toolchains: Vec::new(),
                network: false,
                images: false,
                require_image: false,
            },
            price: Price::default(),
            limits: JobLimits {
                concurrency: 1,
                max_timeout_secs: 600,
                max_request_bytes: 65_536,
            },
        },
        operator: Some(*operator),
    }
    .to_event_builder()
    .sign_with_keys(member)
    .unwrap();
    net.publish(&announcement).await;
}

/// Publishes `operator`'s list of the DVMs it runs, dated `offset`.
async fn list(net: &Net, operator: &Keys, dvms: &[&Keys], offset: i64) {
    let list = OperatorList::new(dvms.iter().map(|k| k.public_key()))
        .to_event_builder()
        .custom_created_at(at(offset))
        .sign_with_keys(operator)
        .unwrap();
    net.publish(&list).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_operators_counts_the_distinct_confirmed_operators_of_the_agreeing_members() {
    let (world, mandate) = World::mandated().await;
    let (a, b) = (Keys::generate(), Keys::generate());
    let [m0, m1, m2] = [&world.members[0], &world.members[1], &world.members[2]];
    // Members 0 and 2 are run by A, member 1 by B: each claims it and each operator lists it.
    announce(&world.net, m0, &a.public_key()).await;
    announce(&world.net, m1, &b.public_key()).await;
    announce(&world.net, m2, &a.public_key()).await;
    list(&world.net, &a, &[m0, m2], -60).await;
    list(&world.net, &b, &[m1], -60).await;
    world.release_bytes(&mandate, RELEASED).await;

    let two = Expectation {
        min_operators: Some(2),
        ..world.expect()
    };
    let verified = world.verify_with(RELEASED, &two).await;
    assert!(verified.ok, "{verified:#?}");
    assert_eq!(verified.distinct_operators, Some(2));
    assert_eq!(
        verified.operators,
        BTreeMap::from([
            (m0.public_key().to_hex(), Some(a.public_key().to_hex())),
            (m1.public_key().to_hex(), Some(b.public_key().to_hex())),
        ])
    );
    let verified = world
        .verify_with(
            RELEASED,
            &Expectation {
                min_operators: Some(3),
                ..world.expect()
            },
        )
        .await;
    refused(
        &verified,
        &[
            "the 2 members that agreed are run by 2 distinct confirmed operator(s); at least 3 \
           were required (--min-operators)"
                .into(),
        ],
    );

    // B's newer list no longer names member 1: its claim alone proves nothing.
    list(&world.net, &b, &[], -30).await;
    let verified = world.verify_with(RELEASED, &two).await;
    assert_eq!(verified.distinct_operators, Some(1));
    assert_eq!(verified.operators[&m1.public_key().to_hex()], None);
    refused(
        &verified,
        &[
            "the 2 members that agreed are run by 1 distinct confirmed operator(s); at least 2 \
           were required (--min-operators): a member counts only when its announcement names \
           an operator and that operator's signed list names it"
                .into(),
        ],
    );
}

/// Gathers from the relay what verifying `bytes` needs, as a release does, and writes the
/// bundle to a file. Returns the file and the bundle's bytes.
async fn make_bundle(world: &World, bytes: &[u8]) -> (PathBuf, Vec<u8>) {
    let verifier = world.net.network.client().await;
    let mut pool = Vec::new();
    gather(
        &verifier,
        &sha(bytes),
        &world.expect(),
        &mut pool,
        &mut Vec::new(),
    )
    .await
    .unwrap();
    verifier.shutdown().await;
    let json = VerificationBundle::new([sha(bytes)], pool).to_json();
    let path = world
        .net
        .dir
        .path()
        .join(format!("bundle-{}.json", sha(bytes)));
    std::fs::write(&path, &json).unwrap();
    (path, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_mandate_gone_from_the_relay_still_verifies_from_the_bundle() {
    let world = World::start().await;
    // A mandate that expires seconds from now (NIP-40: the relay drops it then), time enough
    // to release and make the bundle first.
    let mut short = world.mandate();
    short.expiration = at(20);
    let mandate = world.publish_mandate(&short, &world.maintainer, -600).await;
    let released = world.release_bytes(&mandate, RELEASED).await;
    assert!(world.verify(RELEASED).await.ok);
    let (bundle, json) = make_bundle(&world, RELEASED).await;
    let parsed = VerificationBundle::from_json(&json).unwrap();
    for event in [
        &mandate,
        &released.request,
        &released.attestation,
        &released.binding,
        &world.announcement,
        &world.state,
    ] {
        assert!(
            parsed.events.iter().any(|e| e.id == event.id),
            "the bundle lacks {}",
            event.id
        );
    }

    // The maintainer moves main on: the relay replaces the state the release names.
    let newer = hex::encode(rand::random::<[u8; 20]>());
    world.publish_state(&world.maintainer, &newer, -10).await;
    refused(
        &world.verify(RELEASED).await,
        &[format!(
            "source: state {} is not on the relays",
            world.state.id
        )],
    );

    // Once the mandate expired, the relay no longer serves it.
    let left = short
        .expiration
        .as_secs()
        .saturating_sub(Timestamp::now().as_secs());
    tokio::time::sleep(Duration::from_secs(left + 1)).await;
    let online = world.verify(RELEASED).await;
    refused(
        &online,
        &[format!(
            "mandate {}, named by the attestation, not found (relays drop a mandate once it \
             expires: verify with the release's bundle)",
            mandate.id
        )],
    );
    assert!(online.bundles.is_empty());

    // The bundle alone, with no relay at all: verified.
    let offline = verify_at(&world.net, RELEASED, &world.expect(), Some(&bundle), false)
        .await
        .unwrap();
    assert!(offline.ok, "{offline:#?}");
    assert_eq!(offline.mandate, Some(mandate.id.to_hex()));
    assert_eq!(offline.bundles, vec![sha(&json).to_hex()]);
    assert_eq!(offline.agreed, world.hex(&[0, 1]));
    // The bundle is no better than what is in it: it says nothing of other bytes.
    let other = verify_at(&world.net, OTHER, &world.expect(), Some(&bundle), false)
        .await
        .unwrap();
    refused(&other, &["no release lists these bytes".into()]);

    // Stored on Blossom and named by a release event's `bundle` tag, the relay's verifier
    // finds it by itself.
    let stored = quorum_blossom::client::BlossomClient::new(Keys::generate())
        .upload_file(&world.net.network.blossom, &bundle)
        .await
        .unwrap();
    assert_eq!(stored.descriptor.sha256, sha(&json));
    let metadata = FileMetadata::for_artifact(
        &[format!("https://blossom.example/{}", sha(RELEASED))],
        "application/octet-stream",
        sha(RELEASED),
        RELEASED.len() as u64,
    )
    .unwrap()
    .to_event_builder()
    .tag(bundle_tag(
        &sha(&json),
        std::slice::from_ref(&stored.descriptor.url),
    ))
    .sign_with_keys(&world.requester)
    .unwrap();
    world.net.publish(&metadata).await;
    let found = world.verify(RELEASED).await;
    assert!(found.ok, "{found:#?}");
    assert_eq!(found.bundles, vec![sha(&json).to_hex()]);

    // A bundle file whose events were tampered with is an error, not a verdict.
    let mut forged: serde_json::Value = serde_json::from_slice(&json).unwrap();
    forged["events"][0]["content"] = "tampered".into();
    let forged_path = world.net.dir.path().join("forged-bundle.json");
    std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let err = verify_at(
        &world.net,
        RELEASED,
        &world.expect(),
        Some(&forged_path),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, VerifyError::Bundle { reason, .. } if reason.contains("invalid id or signature")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_published_after_the_bundle_was_made_is_seen_online_only() {
    let (world, mandate) = World::mandated().await;
    let released = world.release_bytes(&mandate, RELEASED).await;
    let (bundle, _) = make_bundle(&world, RELEASED).await;
    // Later, a maintainer publishes a revocation dated before the attestation.
    let mut revocation = world.mandate();
    revocation.allow.clear();
    let revocation = world.publish_mandate(&revocation, &world.owner, -500).await;

    let offline = verify_at(&world.net, RELEASED, &world.expect(), Some(&bundle), false)
        .await
        .unwrap();
    assert!(offline.ok, "offline, the bundle cannot know: {offline:#?}");
    let online = verify_at(&world.net, RELEASED, &world.expect(), Some(&bundle), true)
        .await
        .unwrap();
    refused(
        &online,
        &[format!(
            "mandate {} was superseded before attestation {}: mandate {} by {} (at {}) revoked \
             the quorum's right to sign releases",
            mandate.id,
            released.attestation.id,
            revocation.id,
            world.owner.public_key().to_hex(),
            revocation.created_at.as_secs()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_server_that_never_answers_does_not_hold_the_verdict_up() {
    let (world, mandate) = World::mandated().await;
    world.release_bytes(&mandate, RELEASED).await;
    // Anyone may publish a 1063 naming a "bundle" on a server that accepts connections and
    // never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let nowhere = Sha256Hex::from_bytes([0x42; 32]);
    let metadata = FileMetadata::for_artifact(
        &[format!("https://blossom.example/{}", sha(RELEASED))],
        "application/octet-stream",
        sha(RELEASED),
        RELEASED.len() as u64,
    )
    .unwrap()
    .to_event_builder()
    .tag(bundle_tag(
        &nowhere,
        &[format!("http://{address}/{nowhere}")],
    ))
    .sign_with_keys(&Keys::generate())
    .unwrap();
    world.net.publish(&metadata).await;

    let verified = tokio::time::timeout(Duration::from_secs(60), world.verify(RELEASED))
        .await
        .expect("verify gives up on a silent bundle server");
    assert!(verified.ok, "{verified:#?}");
    assert!(verified.bundles.is_empty());
    held.abort();
}
