//! `quorum verify` on quorum-signed releases, over a real relay on loopback. The events a
//! quorum publishes are made here without running the members: a maintainer's NIP-34
//! announcement and mandate, each member's commitment and reveal, and the attestation, release
//! binding and NIP-94 metadata signed with FROST by two of three shares of a dealt key.

use std::collections::BTreeMap;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_dvm::client::JobClient;
use quorum_proto::agreement::{
    BuildResult, Commitment, QuorumAttestation, Reveal, Salt, SignedCommitment, SignedReveal, Tally,
};
use quorum_proto::approval::ArtifactDigest;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{Keygen, Mandate, Member};
use quorum_proto::nip34::{RepoCoordinate, RepositoryAnnouncement};
use quorum_proto::quorum_job::{ReleaseParams, release_binding};
use quorum_proto::release::{Attestation, FileMetadata, ReleaseBinding};
use quorum_router::verify::{Threshold, Verification, verify_file};
use quorum_testnet::Network;
use quorum_threshold::sign::{SigningRequest, aggregate, commit, sign};
use quorum_threshold::{KeyShare, QuorumGroup};

/// The released bytes, and bytes a member might have built instead.
const RELEASED: &[u8] = b"app 1.0.0 for linux\n";
const OTHER: &[u8] = b"app 1.0.0 for linux, built differently\n";
const FILE: &str = "out/app";

fn sha(bytes: &[u8]) -> Sha256Hex {
    use sha2::{Digest, Sha256};
    Sha256Hex::from(<[u8; 32]>::from(Sha256::digest(bytes)))
}

fn result(bytes: &[u8]) -> BuildResult {
    BuildResult::new().with_file(FILE, sha(bytes))
}

/// The commitments and reveals of a job, as a member would tally them.
type Votes = (Vec<SignedCommitment>, Vec<SignedReveal>);

fn at(offset: i64) -> Timestamp {
    Timestamp::from(Timestamp::now().as_secs().saturating_add_signed(offset))
}

/// A repository with a maintainer, a 2-of-3 quorum, and a relay holding what they publish.
struct World {
    dir: tempfile::TempDir,
    network: Network,
    client: JobClient,
    owner: Keys,
    maintainer: Keys,
    repo: RepoCoordinate,
    members: Vec<Keys>,
    group: QuorumGroup,
    /// One share per member, in `members` order.
    shares: Vec<KeyShare>,
    job: EventId,
    commit: String,
    run: String,
}

impl World {
    /// The owner announces the repository listing `maintainer`; a dealer makes the quorum key.
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let network = Network::start(dir.path()).await;
        let client = network.client().await;
        let owner = Keys::generate();
        let maintainer = Keys::generate();
        let mut announcement = RepositoryAnnouncement::new("app");
        announcement.maintainers = vec![maintainer.public_key()];
        let event = announcement
            .to_event_builder()
            .sign_with_keys(&owner)
            .unwrap();
        client.publish_signed(&event).await.unwrap();
        let members: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
        let roster =
            quorum_threshold::Roster::new(2, members.iter().map(Keys::public_key)).unwrap();
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
        let job = EventBuilder::text_note("the job request")
            .sign_with_keys(&Keys::generate())
            .unwrap()
            .id;
        World {
            dir,
            network,
            client,
            repo: RepoCoordinate::new(owner.public_key(), "app"),
            owner,
            maintainer,
            members,
            group,
            shares,
            job,
            commit: "3f1c".repeat(10),
            run: "5f0c".repeat(16),
        }
    }

    /// A world whose maintainer signed [`World::mandate`] ten minutes ago.
    async fn mandated() -> (World, Event) {
        let world = World::start().await;
        let mandate = world
            .publish_mandate(&world.mandate(), &world.maintainer, -600)
            .await;
        (world, mandate)
    }

    /// `votes` are cast and revealed, and the quorum attests and releases what they agreed on.
    /// Returns (attestation, binding) ids.
    async fn release_agreed(
        &self,
        mandate: &Event,
        votes: &[(usize, &[u8])],
    ) -> (EventId, EventId) {
        let votes = self.take_part(votes, true).await;
        let (attestation, unsigned) = self.attestation(mandate, &votes);
        self.release(unsigned, &attestation.files, None).await
    }

    fn quorum(&self) -> PublicKey {
        self.group.quorum()
    }

    /// What the maintainer would sign: this quorum may build and release `build`.
    fn mandate(&self) -> Mandate {
        Mandate {
            repo: self.repo.clone(),
            pipeline: ".quorum/pipeline.yml".into(),
            jobs: vec!["build".into()],
            quorum: Some(self.quorum()),
            members: self
                .group
                .roster()
                .members()
                .iter()
                .map(|m| Member::new(m.pubkey, m.index))
                .collect(),
            threshold: 2,
            keygen: Keygen::Dealer { dealer: None },
            allow: [1063u16, 8700, 8708].into_iter().collect(),
            expiration: at(86_400),
            rules: Default::default(),
            content: "build quorum for app".into(),
        }
    }

    async fn publish_mandate(&self, mandate: &Mandate, signer: &Keys, created_at: i64) -> Event {
        let event = mandate
            .to_event_builder()
            .unwrap()
            .custom_created_at(at(created_at))
            .sign_with_keys(signer)
            .unwrap();
        self.client.publish_signed(&event).await.unwrap();
        event
    }

    /// Each listed member commits to a result of `bytes` as `out/app`, and reveals it if
    /// `reveals`. Returns what a member would tally.
    async fn take_part(&self, votes: &[(usize, &[u8])], reveals_it: bool) -> Votes {
        let (mut commitments, mut reveals) = (Vec::new(), Vec::new());
        for (i, bytes) in votes {
            let result = &result(bytes);
            let keys = &self.members[*i];
            let salt = Salt::random();
            let offset = i64::try_from(*i).unwrap();
            let commitment = Commitment::new(
                &keys.public_key(),
                self.job,
                self.quorum(),
                &salt,
                result,
                at(3600),
            )
            .to_event_builder()
            .custom_created_at(at(-300 + offset))
            .sign_with_keys(keys)
            .unwrap();
            self.client.publish_signed(&commitment).await.unwrap();
            let commitment = SignedCommitment::from_event(&commitment).unwrap();
            if reveals_it {
                let reveal = Reveal::new(&commitment, salt, result.clone(), at(3600))
                    .to_event_builder()
                    .unwrap()
                    .custom_created_at(at(-200 + offset))
                    .sign_with_keys(keys)
                    .unwrap();
                self.client.publish_signed(&reveal).await.unwrap();
                reveals.push(SignedReveal::from_event(&reveal).unwrap());
            }
            commitments.push(commitment);
        }
        (commitments, reveals)
    }

    /// The attestation the quorum derives from the tally, unsigned.
    fn attestation(
        &self,
        mandate: &Event,
        (commitments, reveals): &Votes,
    ) -> (QuorumAttestation, UnsignedEvent) {
        let roster = Mandate::from_event(mandate).unwrap().roster().unwrap();
        let outcome = Tally::new(roster, self.job).evaluate(commitments, reveals);
        let (attestation, created_at) =
            QuorumAttestation::from_tally(&outcome, mandate.id, self.commit.clone()).unwrap();
        let unsigned = attestation.unsigned(self.quorum(), created_at).unwrap();
        (attestation, unsigned)
    }

    /// Signs `event` with FROST, members 0 and 1 taking part.
    fn frost(&self, event: UnsignedEvent) -> Event {
        let signers = [&self.shares[0], &self.shares[1]];
        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for share in signers {
            let (secret, public) = commit(share, &mut rand::rngs::OsRng);
            commitments.insert(share.member(), public);
            nonces.push((share, secret));
        }
        let request = SigningRequest::new(event, commitments);
        let shares = nonces
            .into_iter()
            .map(|(share, secret)| (share.member(), sign(share, secret, &request).unwrap()))
            .collect();
        let event = aggregate(&self.group, &request, &shares).unwrap();
        event.verify().expect("plain BIP-340 under the quorum key");
        event
    }

    /// Signs with FROST when the event is the quorum's, else with `other`.
    fn sign_as(&self, event: UnsignedEvent, other: Option<&Keys>) -> Event {
        match other {
            Some(keys) => event.sign_with_keys(keys).unwrap(),
            None => self.frost(event),
        }
    }

    /// Publishes the attestation, the release binding of `files` derived from it, and a NIP-94
    /// event for `RELEASED`, all signed by the attestation's author (the quorum through FROST,
    /// or `other`). Returns (attestation, binding) ids.
    async fn release(
        &self,
        attestation: UnsignedEvent,
        files: &BuildResult,
        other: Option<&Keys>,
    ) -> (EventId, EventId) {
        let params = ReleaseParams {
            repo: self.repo.clone(),
            run: self.run.clone(),
            job: "build".into(),
        };
        let binding = release_binding(&params, &self.commit, files, &attestation).unwrap();
        let author = attestation.pubkey;
        let attestation = self.sign_as(attestation, other);
        let binding = self.sign_as(binding, other);
        let metadata = FileMetadata::for_artifact(
            &[format!("https://blossom.example/{}", sha(RELEASED))],
            "application/octet-stream",
            sha(RELEASED),
            RELEASED.len() as u64,
        )
        .unwrap()
        .to_event_builder()
        .build(author);
        let metadata = self.sign_as(metadata, other);
        for event in [&attestation, &binding, &metadata] {
            self.client.publish_signed(event).await.unwrap();
        }
        (attestation.id, binding.id)
    }

    async fn verify(&self, bytes: &[u8]) -> Verification {
        let file = self.dir.path().join("download");
        std::fs::write(&file, bytes).unwrap();
        let verifier =
            JobClient::connect(std::slice::from_ref(&self.network.relay), Keys::generate())
                .await
                .unwrap();
        let verification = verify_file(&verifier, &file).await.unwrap();
        verifier.shutdown().await;
        verification
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

/// Asserts that verification failed with exactly this problem.
fn refused(verified: &Verification, problem: String) {
    assert!(!verified.ok, "{verified:#?}");
    assert_eq!(verified.problems, vec![problem]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_release_verifies_and_names_who_agreed_and_who_did_not() {
    let (world, mandate) = World::mandated().await;
    let (attestation, binding) = world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED), (2, OTHER)])
        .await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.ok, "{verified:#?}");
    assert!(verified.problems.is_empty(), "{verified:#?}");
    assert_eq!(verified.sha256, sha(RELEASED).to_hex());
    assert_eq!(verified.release, Some(binding.to_hex()));
    assert_eq!(verified.signer, Some(world.quorum().to_hex()));
    assert_eq!(verified.quorum, Some(world.quorum().to_hex()));
    assert_eq!(verified.attestation, Some(attestation.to_hex()));
    assert_eq!(verified.mandate, Some(mandate.id.to_hex()));
    assert_eq!(
        verified.mandate_signer,
        Some(world.maintainer.public_key().to_hex())
    );
    assert_eq!(verified.threshold, Some(Threshold { t: 2, n: 3 }));
    assert_eq!(verified.name.as_deref(), Some("build/out/app"));
    assert_eq!(verified.commit, Some(world.commit.clone()));
    assert_eq!(verified.attested_by, vec![world.quorum().to_hex()]);
    assert_eq!(verified.agreed, world.hex(&[0, 1]));
    assert_eq!(verified.disagreed, world.hex(&[2]));
    assert!(verified.silent.is_empty(), "{verified:#?}");
    assert_eq!(verified.urls.len(), 1);

    // The JSON a script reads.
    let json = serde_json::to_value(&verified).unwrap();
    for field in [
        "ok",
        "sha256",
        "release",
        "quorum",
        "mandate",
        "agreed",
        "disagreed",
        "silent",
        "signer",
        "repo",
        "commit",
        "run",
        "name",
        "attested_by",
        "problems",
        "urls",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }

    // One byte changed: no release lists it.
    let mut tampered = RELEASED.to_vec();
    tampered[0] ^= 1;
    let tampered = world.verify(&tampered).await;
    assert_eq!(tampered.release, None);
    refused(&tampered, "no release lists these bytes".into());

    // A second implementation (nostr-tools) verifies every quorum-signed event as the relay
    // serves it: attestation, binding, file metadata.
    let filter = serde_json::json!({ "authors": [world.quorum().to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[world.network.relay.as_str(), &filter],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["count"], 3, "{out}");
    assert_eq!(report["valid"], 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_revealed_is_silent_and_does_not_fail_the_release() {
    let (world, mandate) = World::mandated().await;
    world.take_part(&[(2, RELEASED)], false).await;
    world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
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
    world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;
    world.take_part(&[(2, RELEASED)], true).await;

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
    world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;

    let verified = world.verify(RELEASED).await;
    assert_eq!(
        verified.mandate_signer,
        Some(stranger.public_key().to_hex())
    );
    refused(
        &verified,
        format!(
            "mandate {} is signed by {}, who is not a maintainer of {} (maintainers: the owner \
             and those its 30617 announcement lists)",
            mandate.id,
            stranger.public_key().to_hex(),
            world.repo
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_revoked_before_the_release_is_refused() {
    let (world, mandate) = World::mandated().await;
    // The owner (a maintainer too) revokes it: the same quorum, allowed to sign nothing.
    let mut revocation = world.mandate();
    revocation.allow.clear();
    let revocation = world.publish_mandate(&revocation, &world.owner, -500).await;
    let (attestation, _) = world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;

    refused(
        &world.verify(RELEASED).await,
        format!(
            "mandate {} was superseded before attestation {attestation}: mandate {} by {} \
             (at {}) revoked the quorum's right to sign releases",
            mandate.id,
            revocation.id,
            world.owner.public_key().to_hex(),
            revocation.created_at.as_secs()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandate_that_does_not_allow_release_bindings_is_refused() {
    let world = World::start().await;
    let mut narrow = world.mandate();
    narrow.allow = [8708u16].into_iter().collect();
    let mandate = world
        .publish_mandate(&narrow, &world.maintainer, -600)
        .await;
    world
        .release_agreed(&mandate, &[(0, RELEASED), (1, RELEASED)])
        .await;

    refused(
        &world.verify(RELEASED).await,
        format!(
            "mandate {} does not allow the quorum to sign kind 8700 (release binding)",
            mandate.id
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_signed_by_a_key_other_than_the_mandates_quorum_is_refused() {
    let (world, mandate) = World::mandated().await;
    let votes = world.take_part(&[(0, RELEASED), (1, RELEASED)], true).await;
    let (attestation, genuine) = world.attestation(&mandate, &votes);
    // Someone copies the agreed attestation and signs it, and a release, with their own key.
    let rogue = Keys::generate();
    let forged = attestation
        .unsigned(rogue.public_key(), genuine.created_at)
        .unwrap();
    world
        .release(forged, &attestation.files, Some(&rogue))
        .await;

    let verified = world.verify(RELEASED).await;
    assert_eq!(verified.quorum, Some(rogue.public_key().to_hex()));
    refused(
        &verified,
        format!(
            "mandate {} is for quorum key {}, not the release's signer {}",
            mandate.id,
            world.quorum().to_hex(),
            rogue.public_key().to_hex()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_by_another_key_that_names_the_quorums_attestation_is_refused() {
    let (world, mandate) = World::mandated().await;
    let votes = world.take_part(&[(0, RELEASED), (1, RELEASED)], true).await;
    let (_, unsigned) = world.attestation(&mandate, &votes);
    let attestation = world.frost(unsigned);
    world.client.publish_signed(&attestation).await.unwrap();
    // The genuine attestation, under a binding signed by someone else.
    let rogue = Keys::generate();
    let binding = ReleaseBinding::new(
        world.repo.clone(),
        world.commit.clone(),
        world.run.clone(),
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
    world.client.publish_signed(&binding).await.unwrap();

    let verified = world.verify(RELEASED).await;
    assert_eq!(verified.quorum, None);
    refused(
        &verified,
        format!(
            "attestation {} is a quorum attestation by {}, but the release is signed by {}: a \
             quorum's release must be signed by the quorum key",
            attestation.id,
            world.quorum().to_hex(),
            rogue.public_key().to_hex()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_of_other_bytes_does_not_vouch_for_the_release() {
    let (world, mandate) = World::mandated().await;
    // The members agreed on OTHER; the binding claims RELEASED.
    let votes = world
        .take_part(&[(0, OTHER), (1, OTHER), (2, OTHER)], true)
        .await;
    let (_, unsigned) = world.attestation(&mandate, &votes);
    let (attestation, _) = world.release(unsigned, &result(RELEASED), None).await;

    let verified = world.verify(RELEASED).await;
    assert!(verified.attested_by.is_empty());
    assert_eq!(verified.agreed, world.hex(&[0, 1, 2]));
    refused(
        &verified,
        format!(
            "attestation {attestation} lists {FILE} as {}, but the release lists build/{FILE} \
             as {}",
            sha(OTHER),
            sha(RELEASED)
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_naming_a_member_whose_reveal_contradicts_it_is_refused() {
    let (world, mandate) = World::mandated().await;
    let votes = world
        .take_part(&[(0, RELEASED), (1, RELEASED), (2, OTHER)], true)
        .await;
    let (mut attestation, unsigned) = world.attestation(&mandate, &votes);
    // The quorum claims the dissenter agreed.
    let dissenter = world.members[2].public_key();
    attestation.agreed.insert(dissenter);
    let unsigned = attestation
        .unsigned(world.quorum(), unsigned.created_at)
        .unwrap();
    world.release(unsigned, &attestation.files, None).await;

    let verified = world.verify(RELEASED).await;
    let reveal = votes.1.iter().find(|r| r.member() == dissenter).unwrap();
    assert_eq!(verified.agreed, world.hex(&[0, 1, 2]));
    assert!(verified.disagreed.is_empty());
    refused(
        &verified,
        format!(
            "{}, named as agreeing, revealed otherwise in {}: {FILE} = {}",
            dissenter.to_hex(),
            reveal.id(),
            sha(OTHER)
        ),
    );
}
