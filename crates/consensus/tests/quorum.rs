//! Quorum members over a real relay on loopback: commit-reveal and FROST signing, with honest,
//! lying, copying, equivocating, silent and killed members, replayed round messages, and fewer
//! than `t` shares. Every quorum-signed event is checked as plain BIP-340 under the quorum key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::{self, AgreementConfig};
use quorum_consensus::channel::Channel;
use quorum_consensus::member::{self, MemberConfig, MemberOutcome, QuorumJob};
use quorum_consensus::signing::{self, SigningConfig, SigningError};
use quorum_proto::agreement::{BuildResult, Commitment, Reveal, Salt, SignedCommitment};
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{Keygen, Mandate, Member};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::quorum_msg::{self, Opened, QuorumMessage, SessionId};
use quorum_threshold::sign::{self, SignatureShare, SigningRequest};
use quorum_threshold::{KeyShare, Roster, SignError};

struct Relay {
    url: RelayUrl,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let relay = quorum_relay::Relay::open(quorum_relay::RelayConfig::default(), dir.path())
        .await
        .expect("the relay opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(relay.serve(listener, async move {
        let _ = stopped.await;
    }));
    Relay {
        url,
        _stop: stop,
        _dir: dir,
    }
}

struct Quorum {
    members: Vec<(Keys, KeyShare)>,
    mandate: Mandate,
    mandate_id: EventId,
}

fn quorum(threshold: u16, n: usize) -> Quorum {
    let keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
    let roster = Roster::new(threshold, keys.iter().map(|k| k.public_key())).unwrap();
    let (group, shares) =
        quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng).expect("dealt");
    let maintainer = Keys::generate();
    let mandate = Mandate {
        repo: RepoCoordinate::new(maintainer.public_key(), "sample"),
        pipeline: ".quorum/pipeline.yml".into(),
        jobs: vec!["build".into()],
        quorum: Some(group.quorum()),
        members: roster
            .members()
            .iter()
            .map(|m| Member::new(m.pubkey, m.index))
            .collect(),
        threshold,
        keygen: Keygen::Dealer { dealer: None },
        allow: [8708u16].into_iter().collect(),
        expiration: Timestamp::now() + 3600u64,
        rules: Default::default(),
        content: String::new(),
    };
    let event = mandate
        .to_event_builder()
        .unwrap()
        .sign_with_keys(&maintainer)
        .unwrap();
    let members = keys
        .into_iter()
        .map(|k| {
            let share = shares
                .iter()
                .find(|s| s.member() == k.public_key())
                .unwrap()
                .clone();
            (k, share)
        })
        .collect();
    Quorum {
        members,
        mandate,
        mandate_id: event.id,
    }
}

fn result(byte: u8) -> BuildResult {
    BuildResult::new()
        .with_file(
            "out/app",
            Sha256Hex::parse(&hex::encode([byte; 32])).unwrap(),
        )
        .with_file(
            "out/lib",
            Sha256Hex::parse(&hex::encode([7u8; 32])).unwrap(),
        )
}

/// A result that differs from `result(1)` in every file.
fn other_result(byte: u8) -> BuildResult {
    BuildResult::new()
        .with_file(
            "out/app",
            Sha256Hex::parse(&hex::encode([byte; 32])).unwrap(),
        )
        .with_file(
            "out/lib",
            Sha256Hex::parse(&hex::encode([byte ^ 0x80; 32])).unwrap(),
        )
}

fn fast() -> MemberConfig {
    MemberConfig {
        agreement: AgreementConfig {
            commit_wait: Duration::from_secs(8),
            straggler_wait: Duration::from_secs(2),
            reveal_wait: Duration::from_secs(4),
            lifetime: Duration::from_secs(3600),
        },
        signing: SigningConfig {
            attempt_timeout: Duration::from_secs(3),
            message_lifetime: Duration::from_secs(3600),
        },
    }
}

fn job(q: &Quorum, job: EventId, result: BuildResult) -> QuorumJob {
    QuorumJob {
        job,
        mandate: q.mandate.clone(),
        mandate_id: q.mandate_id,
        commit: "a".repeat(40),
        result,
        evidence: None,
        wrapped: None,
        not_before: quorum_proto::nostr::Timestamp::from(0),
        records: None,
    }
}

/// Runs the given members concurrently, each with its own result.
async fn run_members(
    relay: &RelayUrl,
    q: &Quorum,
    which: &[(usize, BuildResult)],
    job_id: EventId,
) -> Vec<MemberOutcome> {
    let config = fast();
    let futures = which.iter().map(|(i, result)| {
        let (keys, share) = &q.members[*i];
        let job = job(q, job_id, result.clone());
        let config = config.clone();
        let relays = vec![relay.clone()];
        async move {
            member::take_part(&relays, keys, share, &job, &config, |_| Vec::new())
                .await
                .expect("the member ran")
        }
    });
    tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(futures),
    )
    .await
    .expect("members finished in time")
}

fn job_id(n: u8) -> EventId {
    EventId::from_byte_array([n; 32])
}

fn assert_quorum_signed(event: &Event, q: &Quorum) {
    event.verify().expect("plain BIP-340 signature");
    assert_eq!(Some(event.pubkey), q.mandate.quorum);
}

/// Member indices in roster order: attempt `a` is coordinated by the `a`-th of them.
fn roster_order(q: &Quorum) -> Vec<usize> {
    let roster = q.members[0].1.group().roster().clone();
    let mut idx: Vec<usize> = (0..q.members.len()).collect();
    idx.sort_by_key(|i| roster.index_of(&q.members[*i].0.public_key()).unwrap());
    idx
}

/// One member's whole part as its own task, so that the test can kill it.
fn spawn_member(
    relay: &RelayUrl,
    q: &Quorum,
    i: usize,
    job_id: EventId,
    result: BuildResult,
) -> tokio::task::JoinHandle<MemberOutcome> {
    let (keys, share) = q.members[i].clone();
    let job = job(q, job_id, result);
    let relays = vec![relay.clone()];
    tokio::spawn(async move {
        member::take_part(&relays, &keys, &share, &job, &fast(), |_| Vec::new())
            .await
            .expect("the member ran")
    })
}

/// A client that only reads (and republishes what others signed).
async fn observer(relay: &RelayUrl) -> Client {
    let client = Client::default();
    client.add_relay(relay.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    client
}

async fn fetch(relay: &RelayUrl, filter: Filter) -> Vec<Event> {
    let client = observer(relay).await;
    let events = client
        .fetch_events(filter, Duration::from_secs(5))
        .await
        .unwrap();
    client.shutdown().await;
    events.into_iter().collect()
}

/// A signing round message as one of its recipients reads it.
struct RoundMessage {
    event: Event,
    opened: Opened,
    plaintext: serde_json::Value,
}

impl RoundMessage {
    fn attempt(&self) -> u64 {
        self.plaintext["attempt"]
            .as_u64()
            .expect("an attempt number")
    }
}

/// Every signing round message (8713–8715) on the relay, opened with a recipient's key.
async fn round_messages(relay: &RelayUrl, q: &Quorum) -> Vec<RoundMessage> {
    let filter = Filter::new().kinds([
        quorum_msg::SIGNING_ROUND1,
        quorum_msg::SIGNING_ROUND2,
        quorum_msg::SIGNING_REQUEST,
    ]);
    fetch(relay, filter)
        .await
        .into_iter()
        .map(|event| {
            let opened = q
                .members
                .iter()
                .find_map(|(keys, _)| QuorumMessage::open(&event, keys).ok())
                .expect("a member can open every round message");
            let plaintext = serde_json::from_str(&opened.plaintext).unwrap();
            RoundMessage {
                event,
                opened,
                plaintext,
            }
        })
        .collect()
}

/// Nonces are single-use: across sessions and attempts, no member sends a nonce commitment
/// twice.
fn assert_fresh_nonces(messages: &[RoundMessage]) {
    let mut seen: BTreeMap<PublicKey, BTreeSet<String>> = BTreeMap::new();
    for m in messages
        .iter()
        .filter(|m| m.event.kind == quorum_msg::SIGNING_ROUND1)
    {
        for c in m.plaintext["commitments"].as_array().unwrap() {
            let c = c.as_str().unwrap().to_string();
            assert!(
                seen.entry(m.opened.sender).or_default().insert(c),
                "{} sent a nonce commitment again (attempt {})",
                m.opened.sender,
                m.attempt()
            );
        }
    }
}

/// The members an attestation names as agreeing (`["p", KEY, "", "agreed"]`).
fn agreed_in(attestation: &Event) -> BTreeSet<PublicKey> {
    attestation
        .tags
        .iter()
        .filter(|t| t.as_slice().first().map(String::as_str) == Some("p"))
        .filter(|t| t.as_slice().get(3).map(String::as_str) == Some("agreed"))
        .map(|t| PublicKey::from_hex(&t.as_slice()[1]).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_honest_members_sign_one_attestation() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let outcomes = run_members(
        &relay.url,
        &q,
        &[(0, result(1)), (1, result(1)), (2, result(1))],
        job_id(1),
    )
    .await;
    let ids: BTreeSet<EventId> = outcomes
        .iter()
        .map(|o| o.attestation().expect("signed").id)
        .collect();
    assert_eq!(ids.len(), 1, "every member ends with the same event");
    let attestation = outcomes[0].attestation().unwrap();
    assert_quorum_signed(attestation, &q);
    assert_eq!(outcomes[0].agreement.tally.agreed.len(), 3);
    assert_eq!(outcomes[0].signed.as_ref().unwrap().attempts, 1);
    // A second implementation (nostr-tools) verifies it too, as the relay serves it.
    let filter = serde_json::json!({ "ids": [attestation.id.to_hex()] }).to_string();
    let out = quorum_testkit::node::run_script_ok(
        "relay-verify.mjs",
        &[relay.url.as_str(), &filter],
        Duration::from_secs(30),
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["count"], 1, "{out}");
    assert_eq!(report["valid"], 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_liar_is_named_and_the_honest_hash_is_signed() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let liar = q.members[2].0.public_key();
    let outcomes = run_members(
        &relay.url,
        &q,
        &[(0, result(1)), (1, result(1)), (2, result(9))],
        job_id(2),
    )
    .await;
    let attestation = outcomes[0].attestation().expect("signed");
    assert_quorum_signed(attestation, &q);
    assert!(
        attestation.content.is_empty() || !attestation.content.contains(&hex::encode([9u8; 32]))
    );
    let tally = &outcomes[0].agreement.tally;
    assert!(tally.disagreed.contains_key(&liar), "{tally:?}");
    assert!(!tally.agreed.contains(&liar));
    let honest_hash = hex::encode([1u8; 32]);
    assert!(
        attestation
            .tags
            .iter()
            .any(|t| t.as_slice().get(1) == Some(&honest_hash)),
        "{attestation:?}"
    );
    assert!(outcomes[2].signed.is_none() || outcomes[2].failure.is_none());
    assert!(
        outcomes[2]
            .failure
            .as_deref()
            .unwrap_or("")
            .contains("differs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_liars_of_three_sign_nothing() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let outcomes = run_members(
        &relay.url,
        &q,
        &[(0, result(1)), (1, other_result(8)), (2, other_result(9))],
        job_id(3),
    )
    .await;
    for outcome in &outcomes {
        assert!(outcome.signed.is_none());
        assert!(
            outcome.failure.as_deref().unwrap().contains("no agreement"),
            "{outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_t_members_online_cannot_sign() {
    let relay = relay().await;
    let q = quorum(3, 5);
    let outcomes = run_members(&relay.url, &q, &[(0, result(1)), (1, result(1))], job_id(4)).await;
    for outcome in &outcomes {
        assert!(outcome.signed.is_none(), "{outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_silent_in_round_two_is_replaced() {
    let relay = relay().await;
    let q = quorum(2, 3);
    // The first member in roster order coordinates attempt 0 and is chosen first: it takes part
    // in commit-reveal, then disappears.
    let order = roster_order(&q);
    let silent = order[0];
    let config = fast();
    let id = job_id(5);
    let silent_member = {
        let (keys, share) = q.members[silent].clone();
        let relays = vec![relay.url.clone()];
        let job = job(&q, id, result(1));
        let config = config.clone();
        async move {
            let channel = Channel::open(&relays, keys.clone(), vec![agreement::filter(&job.job)])
                .await
                .unwrap();
            agreement::commit_and_reveal(
                &channel,
                &member::roster_of(&share),
                job.job,
                &job.result,
                None,
                &config.agreement,
                None,
            )
            .await
            .unwrap();
            // Goes silent: no round 1, no round 2.
            channel.close().await;
        }
    };
    let others: Vec<(usize, BuildResult)> = order[1..].iter().map(|i| (*i, result(1))).collect();
    let (_, outcomes) = tokio::join!(silent_member, run_members(&relay.url, &q, &others, id));
    for outcome in &outcomes {
        let signed = outcome
            .signed
            .as_ref()
            .expect("signed without the silent member");
        assert!(signed.attempts >= 2, "{signed:?}");
        assert!(!signed.signers.contains(&q.members[silent].0.public_key()));
        assert_quorum_signed(&signed.events[0], &q);
    }
    // Each attempt drew fresh nonces: no commitment of a member repeats across attempts.
    assert_fresh_nonces(&round_messages(&relay.url, &q).await);
}

/// A member whose reveal lists none of the other commitments as `seen` (and reveals another
/// result) cannot stop the two honest members of a 2-of-3 quorum: it is one voice of two against
/// each of them, so neither is late; they agree and sign, and its result is counted and
/// disagrees. (Before the majority rule, any one omission made a member late, and this quorum
/// signed nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lists_no_commitment_as_seen_cannot_block_the_others() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(11);
    let (liar_keys, liar_share) = q.members[2].clone();
    let liar_pk = liar_keys.public_key();
    let relays = vec![relay.url.clone()];
    let lie = other_result(9);
    let liar = async {
        let channel = Channel::open(&relays, liar_keys.clone(), vec![agreement::filter(&id)])
            .await
            .unwrap();
        let salt = Salt::random();
        let expiration = Timestamp::now() + 3600u64;
        let commitment =
            Commitment::new(&liar_pk, id, liar_share.quorum(), &salt, &lie, expiration);
        let commitment = channel
            .publish(commitment.to_event_builder())
            .await
            .unwrap();
        // Reveals on time, once both honest members have committed, naming none of them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        channel
            .wait_for(deadline, |seen| {
                let others = seen
                    .iter()
                    .filter(|e| e.kind == quorum_proto::agreement::COMMITMENT)
                    .filter(|e| e.pubkey != liar_pk)
                    .count();
                (others == 2).then_some(())
            })
            .await
            .expect("the honest members commit");
        let reveal = Reveal::new(
            &SignedCommitment::from_event(&commitment).unwrap(),
            salt,
            lie.clone(),
            expiration,
        );
        assert!(reveal.seen.is_empty());
        channel
            .publish(reveal.to_event_builder().unwrap())
            .await
            .unwrap();
        channel.close().await;
    };
    let honest_members = [(0, result(1)), (1, result(1))];
    let (_, honest) = tokio::join!(liar, run_members(&relay.url, &q, &honest_members, id));
    let honest_keys: BTreeSet<PublicKey> = [0, 1]
        .iter()
        .map(|i| q.members[*i].0.public_key())
        .collect();
    let mut ids = BTreeSet::new();
    for outcome in &honest {
        let agreement = &outcome.agreement;
        assert!(agreement.late.is_empty(), "{outcome:?}");
        assert!(
            agreement.tally.revealed.contains_key(&liar_pk),
            "the liar's reveal was counted: {outcome:?}"
        );
        assert!(
            agreement.tally.disagreed.contains_key(&liar_pk),
            "{outcome:?}"
        );
        assert_eq!(agreement.tally.agreed, honest_keys);
        let attestation = outcome.attestation().expect("the honest two sign");
        assert_quorum_signed(attestation, &q);
        assert_eq!(agreed_in(attestation), honest_keys);
        let honest_hash = hex::encode([1u8; 32]);
        assert!(
            attestation
                .tags
                .iter()
                .any(|t| t.as_slice().get(1) == Some(&honest_hash)),
            "{attestation:?}"
        );
        ids.insert(attestation.id);
    }
    assert_eq!(ids.len(), 1, "both end with the same event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copycat_that_commits_after_the_reveals_does_not_count() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(6);
    let config = fast();
    let copycat_keys = q.members[2].0.clone();
    let copycat_share = q.members[2].1.clone();
    let relays = vec![relay.url.clone()];
    let copycat = async {
        // Never builds: waits for the honest members' reveals, then commits to what it saw.
        // (Both: a member is late when most of the other revealing members had not seen it
        // commit, and one honest reveal of two is not most.)
        let channel = Channel::open(&relays, copycat_keys.clone(), vec![agreement::filter(&id)])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let copied = channel
            .wait_for(deadline, |seen| {
                let reveals: Vec<quorum_proto::agreement::Reveal> = seen
                    .iter()
                    .filter(|e| e.kind == quorum_proto::agreement::REVEAL)
                    .filter_map(|e| quorum_proto::agreement::Reveal::from_event(e).ok())
                    .collect();
                (reveals.len() == 2).then(|| reveals[0].result.clone())
            })
            .await
            .expect("reveals to copy");
        channel.close().await;
        member::take_part(
            &relays,
            &copycat_keys,
            &copycat_share,
            &job(&q, id, copied),
            &config,
            |_| Vec::new(),
        )
        .await
        .unwrap()
    };
    let honest_members = [(0, result(1)), (1, result(1))];
    let (copycat_outcome, honest) =
        tokio::join!(copycat, run_members(&relay.url, &q, &honest_members, id));
    let copycat_pk = copycat_keys.public_key();
    for outcome in &honest {
        // Late if its reveal arrived before the tally, silent if after: never counted.
        assert!(
            !outcome.agreement.tally.agreed.contains(&copycat_pk),
            "{outcome:?}"
        );
        let attestation = outcome.attestation().expect("the honest two sign");
        assert!(
            !attestation
                .tags
                .iter()
                .any(|t| t.as_slice().get(1) == Some(&copycat_pk.to_hex())),
            "the copycat is not named as agreeing"
        );
    }
    assert!(
        copycat_outcome.agreement.late.contains(&copycat_pk),
        "{copycat_outcome:?}"
    );
    assert!(copycat_outcome.signed.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_member_is_proven_and_ignored() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(7);
    let (eq_keys, eq_share) = q.members[2].clone();
    // Two different commitments for the same job, published up front.
    let client = Client::new(eq_keys.clone());
    client.add_relay(relay.url.clone()).await.unwrap();
    client.connect().await;
    client.wait_for_connection(Duration::from_secs(5)).await;
    for byte in [1u8, 2] {
        let c = quorum_proto::agreement::Commitment::new(
            &eq_keys.public_key(),
            id,
            eq_share.quorum(),
            &quorum_proto::agreement::Salt::random(),
            &result(byte),
            Timestamp::now() + 3600u64,
        );
        client
            .send_event_builder(c.to_event_builder())
            .await
            .unwrap();
    }
    let outcomes = run_members(&relay.url, &q, &[(0, result(1)), (1, result(1))], id).await;
    for outcome in &outcomes {
        assert!(
            outcome
                .agreement
                .tally
                .equivocated
                .contains_key(&eq_keys.public_key()),
            "{outcome:?}"
        );
        assert_quorum_signed(outcome.attestation().expect("signed"), &q);
    }
    let proofs = client
        .fetch_events(
            Filter::new().kind(quorum_proto::agreement::EQUIVOCATION_PROOF),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(!proofs.is_empty(), "an equivocation proof was published");
    client.shutdown().await;
}

/// A member's part as its own task, recording its commitment in `records` (as a runner does in
/// `DATA/shares/agreements`): the test can kill it and start it again on the same directory.
fn spawn_recorded_member(
    relay: &RelayUrl,
    q: &Quorum,
    i: usize,
    job_id: EventId,
    result: BuildResult,
    records: &std::path::Path,
) -> tokio::task::JoinHandle<Result<MemberOutcome, member::MemberError>> {
    let (keys, share) = q.members[i].clone();
    let mut job = job(q, job_id, result);
    job.records = Some(records.to_path_buf());
    let relays = vec![relay.clone()];
    tokio::spawn(async move {
        member::take_part(&relays, &keys, &share, &job, &fast(), |_| Vec::new()).await
    })
}

/// Waits until the relay holds an event matching `filter`.
async fn wait_for_stored(relay: &RelayUrl, filter: Filter) -> Event {
    let client = observer(relay).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let found = loop {
        let events = client
            .fetch_events(filter.clone(), Duration::from_secs(2))
            .await
            .unwrap();
        if let Some(event) = events.into_iter().next() {
            break event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stored: {filter:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.shutdown().await;
    found
}

/// Starts member `victim` alone (it commits and then waits for the others), kills it as soon as
/// its commitment is on the relay, and returns that commitment.
async fn commit_and_kill(
    relay: &RelayUrl,
    q: &Quorum,
    victim: usize,
    id: EventId,
    records: &std::path::Path,
) -> Event {
    let handle = spawn_recorded_member(relay, q, victim, id, result(1), records);
    let commitment = wait_for_stored(
        relay,
        Filter::new()
            .kind(quorum_proto::agreement::COMMITMENT)
            .author(q.members[victim].0.public_key())
            .event(id),
    )
    .await;
    handle.abort();
    let joined = handle.await;
    assert!(joined.unwrap_err().is_cancelled(), "killed mid-job");
    commitment
}

/// What a member published for `id`: (commitments, reveals), and every equivocation proof.
async fn published_by(relay: &RelayUrl, member: PublicKey, id: EventId) -> (usize, usize, usize) {
    let mine = fetch(relay, agreement::filter(&id).author(member)).await;
    let count = |kind| mine.iter().filter(|e| e.kind == kind).count();
    let proofs = fetch(
        relay,
        Filter::new().kind(quorum_proto::agreement::EQUIVOCATION_PROOF),
    )
    .await;
    (
        count(quorum_proto::agreement::COMMITMENT),
        count(quorum_proto::agreement::REVEAL),
        proofs.len(),
    )
}

/// A member killed right after publishing its commitment and started again on the same record
/// directory publishes that same commitment again (no second digest, so nobody can prove an
/// equivocation), reveals with the recorded salt, and is named as agreeing in the attestation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_after_committing_opens_the_same_commitment() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(12);
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("agreements");
    let victim = 2;
    let victim_pk = q.members[victim].0.public_key();
    let first = commit_and_kill(&relay.url, &q, victim, id, &records).await;

    let restarted = spawn_recorded_member(&relay.url, &q, victim, id, result(1), &records);
    let others = run_members(&relay.url, &q, &[(0, result(1)), (1, result(1))], id).await;
    let restarted = tokio::time::timeout(Duration::from_secs(60), restarted)
        .await
        .expect("finished in time")
        .unwrap()
        .expect("the restarted member ran");
    let everyone: BTreeSet<PublicKey> = q.members.iter().map(|(k, _)| k.public_key()).collect();
    let mut ids = BTreeSet::new();
    for outcome in others.iter().chain([&restarted]) {
        let tally = &outcome.agreement.tally;
        assert!(tally.equivocated.is_empty(), "{outcome:?}");
        assert_eq!(tally.agreed, everyone, "{outcome:?}");
        let attestation = outcome.attestation().expect("attested");
        assert_quorum_signed(attestation, &q);
        assert_eq!(agreed_in(attestation), everyone);
        ids.insert(attestation.id);
    }
    assert_eq!(ids.len(), 1, "everyone ends with the same event");
    // The victim's counted reveal opens the commitment it made before it was killed.
    let counted = &others[0].agreement.tally.revealed[&victim_pk];
    let reveal = fetch(&relay.url, Filter::new().id(counted.reveal)).await;
    assert_eq!(
        quorum_proto::agreement::Reveal::from_event(&reveal[0])
            .unwrap()
            .commitment,
        first.id
    );
    let (commitments, _, proofs) = published_by(&relay.url, victim_pk, id).await;
    assert_eq!(commitments, 1, "one commitment, published twice");
    assert_eq!(proofs, 0, "no equivocation proof");
}

/// A member restarted on the same record directory whose rebuilt result is not the one it
/// committed to before commits nothing new, reveals nothing and says why; the other two agree
/// and sign without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_member_whose_result_changed_commits_nothing_new() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(13);
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("agreements");
    let victim = 2;
    let victim_pk = q.members[victim].0.public_key();
    commit_and_kill(&relay.url, &q, victim, id, &records).await;

    let restarted = spawn_recorded_member(&relay.url, &q, victim, id, result(2), &records);
    let others = run_members(&relay.url, &q, &[(0, result(1)), (1, result(1))], id).await;
    let err = restarted
        .await
        .unwrap()
        .expect_err("a changed result after a restart");
    assert!(
        err.to_string().contains(
            "my rebuilt result differs from the commitment I made before a restart; \
             not committing again"
        ),
        "{err}"
    );
    let two: BTreeSet<PublicKey> = [0, 1]
        .iter()
        .map(|i| q.members[*i].0.public_key())
        .collect();
    for outcome in &others {
        let tally = &outcome.agreement.tally;
        assert!(tally.equivocated.is_empty(), "{outcome:?}");
        assert!(tally.silent.contains(&victim_pk), "{outcome:?}");
        assert_eq!(tally.agreed, two);
        assert_quorum_signed(outcome.attestation().expect("the two sign"), &q);
    }
    let (commitments, reveals, proofs) = published_by(&relay.url, victim_pk, id).await;
    assert_eq!((commitments, reveals, proofs), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_after_its_round_one_commitments_is_replaced() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(8);
    // The coordinator of attempt 0 is in that attempt's subset whoever else commits first, so
    // killing it once its round-1 commitments are out leaves attempt 0 without its request or
    // its share.
    let victim = roster_order(&q)[0];
    let victim_pk = q.members[victim].0.public_key();
    let watcher = observer(&relay.url).await;
    let mut notifications = watcher.notifications();
    let victims_round1 = Filter::new()
        .kind(quorum_msg::SIGNING_ROUND1)
        .author(victim_pk);
    watcher.subscribe(victims_round1, None).await.unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| spawn_member(&relay.url, &q, i, id, result(1)))
        .collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match notifications.recv().await {
                Ok(RelayPoolNotification::Event { event, .. })
                    if event.kind == quorum_msg::SIGNING_ROUND1 && event.pubkey == victim_pk =>
                {
                    break;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the watcher lost the relay: {e}"),
            }
        }
    })
    .await
    .expect("the victim sent its round-1 commitments");
    handles[victim].abort();
    watcher.shutdown().await;

    let mut outcomes = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let joined = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("members finished in time");
        if i == victim {
            assert!(joined.unwrap_err().is_cancelled(), "killed mid-session");
        } else {
            outcomes.push(joined.expect("the member ran"));
        }
    }
    let messages = round_messages(&relay.url, &q).await;
    let from_victim: Vec<&RoundMessage> = messages
        .iter()
        .filter(|m| m.opened.sender == victim_pk)
        .collect();
    assert!(
        from_victim.iter().all(|m| m.attempt() == 0),
        "it died in attempt 0"
    );
    // It could only have finished attempt 0 by getting its share out before the abort landed,
    // which takes two more relay round trips than the watcher needed to see its commitments.
    let victim_shared = from_victim
        .iter()
        .any(|m| m.event.kind == quorum_msg::SIGNING_ROUND2);
    let mut ids = BTreeSet::new();
    for outcome in &outcomes {
        let signed = outcome.signed.as_ref().expect("the other two sign");
        let attestation = &signed.events[0];
        assert_quorum_signed(attestation, &q);
        ids.insert(attestation.id);
        // It agreed before it was killed: the attestation names it, it just did not sign.
        assert_eq!(outcome.agreement.tally.agreed.len(), 3, "{outcome:?}");
        assert_eq!(agreed_in(attestation), outcome.agreement.tally.agreed);
        if !victim_shared {
            assert!(signed.attempts >= 2, "{signed:?}");
            assert!(!signed.signers.contains(&victim_pk), "{signed:?}");
            assert!(signed.excluded.contains_key(&victim_pk), "{signed:?}");
        }
    }
    assert_eq!(ids.len(), 1, "both end with the same event");
    assert_fresh_nonces(&messages);
}

/// A replay of job A's events into job B: the round messages (a) carry A's session, and the
/// commitments and reveals (b) name A's job, so B uses none of them. (c) A round message of an
/// earlier attempt of the *same* session cannot be replayed into a later one: the attempt
/// number is in the plaintext, sealed and signed by its sender, so a replay says its own
/// attempt (and `rounds` takes a message only for the attempt it names); an identical copy is
/// also the same event id, which the channel keeps once. `assert_fresh_nonces` in the
/// multi-attempt tests shows every attempt's commitments are new, so nothing of an earlier one
/// could be reused either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_replayed_from_an_earlier_job_change_nothing() {
    let first = relay().await;
    let q = quorum(2, 3);
    let everyone = [(0, result(1)), (1, result(1)), (2, result(1))];
    let (job_a, job_b) = (job_id(9), job_id(10));
    let a = run_members(&first.url, &q, &everyone, job_a).await;
    let a_attestation = a[0].attestation().expect("job A signed").clone();
    let a_rounds = round_messages(&first.url, &q).await;
    let a_agreement = fetch(&first.url, agreement::filter(&job_a)).await;
    let a_sessions: BTreeSet<SessionId> = a_rounds.iter().map(|m| m.opened.session).collect();
    assert_eq!(a_sessions.len(), 1);
    assert!(a_rounds.len() >= 6, "3 commitments, a request, 2 shares");
    assert_eq!(a_agreement.len(), 6, "3 commitments, 3 reveals");

    // Job B runs on a relay that holds every event of A, put there by someone with no key of
    // the quorum: the members' subscriptions hand the round messages to them while B runs.
    let second = relay().await;
    let replayer = observer(&second.url).await;
    for event in a_rounds.iter().map(|m| &m.event).chain(&a_agreement) {
        replayer
            .send_event(event)
            .await
            .expect("the replay is stored");
    }
    replayer.shutdown().await;
    let b = run_members(&second.url, &q, &everyone, job_b).await;
    let a_ids: BTreeSet<EventId> = a_rounds
        .iter()
        .map(|m| m.event.id)
        .chain(a_agreement.iter().map(|e| e.id))
        .collect();
    let b_rounds: Vec<RoundMessage> = round_messages(&second.url, &q)
        .await
        .into_iter()
        .filter(|m| !a_ids.contains(&m.event.id))
        .collect();
    let b_sessions: BTreeSet<SessionId> = b_rounds.iter().map(|m| m.opened.session).collect();
    assert_eq!(b_sessions.len(), 1);
    assert!(b_sessions.is_disjoint(&a_sessions), "B is another session");
    for outcome in &b {
        let signed = outcome.signed.as_ref().expect("job B signed");
        assert_quorum_signed(&signed.events[0], &q);
        assert_ne!(signed.events[0].id, a_attestation.id);
        // Nobody was confused into excluding anyone by A's request or shares.
        assert_eq!(signed.attempts, 1, "{signed:?}");
        assert!(signed.excluded.is_empty(), "{signed:?}");
        // (b) Only B's own reveals count.
        let tally = &outcome.agreement.tally;
        assert_eq!(tally.revealed.len(), 3);
        assert!(tally.revealed.values().all(|r| !a_ids.contains(&r.reveal)));
    }
    // The request signed with B's round-1 commitments, none of A's.
    let request = b_rounds
        .iter()
        .find(|m| m.event.kind == quorum_msg::SIGNING_REQUEST)
        .expect("B's request");
    for m in b_rounds
        .iter()
        .filter(|m| m.event.kind == quorum_msg::SIGNING_ROUND1)
    {
        let chosen = &request.plaintext["commitments"][m.opened.sender.to_hex()];
        assert!(chosen.is_null() || *chosen == m.plaintext["commitments"]);
    }
    assert_fresh_nonces(&a_rounds.into_iter().chain(b_rounds).collect::<Vec<_>>());

    // (b) The relay kept A's commitments and reveals out of B's subscriptions (they name job
    // A). Had they come in anyway, the tally reports each as ignored and counts what it did
    // without them.
    let b_agreement = fetch(&second.url, agreement::filter(&job_b)).await;
    assert_eq!(b_agreement.len(), 6);
    let roster = member::roster_of(&q.members[0].1);
    let mixed: Vec<Event> = a_agreement.iter().chain(&b_agreement).cloned().collect();
    let replayed = agreement::tally_events(&mixed, &roster, job_b, None, b[0].agreement.my_reveal);
    let ignored: BTreeSet<EventId> = replayed.tally.ignored.iter().map(|(id, _)| *id).collect();
    let a_agreement_ids: BTreeSet<EventId> = a_agreement.iter().map(|e| e.id).collect();
    assert_eq!(ignored, a_agreement_ids, "{:?}", replayed.tally.ignored);
    assert_eq!(replayed.tally.revealed, b[0].agreement.tally.revealed);
    assert_eq!(replayed.tally.agreed, b[0].agreement.tally.agreed);
    assert!(replayed.late.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_t_signers_never_sign() {
    let relay = relay().await;
    let q = quorum(3, 5);
    let quorum_key = q.members[0].1.quorum();
    let event = EventBuilder::text_note("a release").build(quorum_key);
    let config = fast().signing;
    let pks: Vec<PublicKey> = q.members.iter().map(|(k, _)| k.public_key()).collect();
    let sign_alone = |i: usize, signers: Vec<PublicKey>| {
        let (keys, share) = q.members[i].clone();
        let (relay, event, config) = (relay.url.clone(), event.clone(), config.clone());
        async move {
            let since = Timestamp::now() - 60u64;
            let filters = vec![signing::filter(&keys.public_key(), since)];
            let channel = Channel::open(&[relay], keys, filters).await.unwrap();
            let session = SessionId::from_bytes([7; 32]);
            let signed =
                signing::sign_together(&channel, &share, &signers, session, vec![event], &config)
                    .await;
            channel.close().await;
            signed
        }
    };
    // Named t-1 signers: refused before any message.
    let err = sign_alone(0, pks[..2].to_vec()).await.unwrap_err();
    assert!(
        matches!(
            err,
            SigningError::TooFew {
                responsive: 2,
                threshold: 3,
                ..
            }
        ),
        "{err}"
    );
    // t named, t-1 of them there: every attempt waits in vain, and the session ends.
    let (one, two) = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join(
            sign_alone(0, pks[..3].to_vec()),
            sign_alone(1, pks[..3].to_vec()),
        ),
    )
    .await
    .expect("the session ended in time");
    for outcome in [one, two] {
        let err = outcome.unwrap_err();
        assert!(matches!(err, SigningError::TooFew { .. }), "{err}");
    }
    // Nothing came out: no signature share, no event by the quorum key.
    assert!(
        fetch(&relay.url, Filter::new().kind(quorum_msg::SIGNING_ROUND2))
            .await
            .is_empty()
    );
    assert!(
        fetch(&relay.url, Filter::new().author(quorum_key))
            .await
            .is_empty()
    );
}

/// `aggregate` refuses t-1 shares (as `quorum-threshold`'s tests show in detail); here the
/// shares are combined by hand, the way FROST does (R from the commitments, s the sum of the
/// shares): with all `t` that is exactly the quorum's signature, with t-1 it does not verify.
#[test]
fn a_signature_assembled_from_t_minus_one_shares_does_not_verify() {
    let q = quorum(3, 5);
    let shares: Vec<&KeyShare> = q.members.iter().map(|(_, s)| s).take(3).collect();
    let group = shares[0].group();
    let event = EventBuilder::text_note("a release").build(group.quorum());
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for share in &shares {
        let (secret, public) = sign::commit(share, &mut rand::rngs::OsRng);
        nonces.push(secret);
        commitments.insert(share.member(), public);
    }
    let request = SigningRequest::new(event, commitments);
    let all: BTreeMap<PublicKey, SignatureShare> = shares
        .iter()
        .zip(nonces)
        .map(|(share, n)| (share.member(), sign::sign(share, n, &request).unwrap()))
        .collect();
    let genuine = sign::aggregate(group, &request, &all).unwrap();
    genuine.verify().unwrap();

    let mut few = all.clone();
    let missing = shares[2].member();
    few.remove(&missing);
    assert_eq!(
        sign::aggregate(group, &request, &few).unwrap_err(),
        SignError::TooFewShares {
            given: 2,
            needed: 3
        }
    );
    let nonce_point: [u8; 32] = genuine.sig.serialize()[..32].try_into().unwrap();
    let assemble = |shares: &BTreeMap<PublicKey, SignatureShare>| {
        let mut sig = genuine.clone();
        sig.sig = signature(&nonce_point, shares.values());
        sig
    };
    assert_eq!(assemble(&all).sig, genuine.sig, "the recipe is FROST's");
    assert!(assemble(&few).verify().is_err(), "t-1 shares sign nothing");
    // Nor does a colluder's share standing in for the missing one.
    let mut padded = few.clone();
    padded.insert(missing, few[&shares[0].member()]);
    assert!(assemble(&padded).verify().is_err());
    assert_eq!(
        sign::aggregate(group, &request, &padded).unwrap_err(),
        SignError::InvalidShare {
            culprits: vec![missing]
        }
    );
}

/// A BIP-340 signature `R || s` with `s` the sum of the shares' scalars (mod the group order).
fn signature<'a>(
    nonce_point: &[u8; 32],
    shares: impl Iterator<Item = &'a SignatureShare>,
) -> nostr_sdk::secp256k1::schnorr::Signature {
    use nostr_sdk::secp256k1::{Scalar, SecretKey};
    let scalars: Vec<[u8; 32]> = shares
        .map(|share| {
            let hex: String = serde_json::from_value(serde_json::to_value(share).unwrap()).unwrap();
            hex::decode(hex)
                .unwrap()
                .try_into()
                .expect("a 32-byte scalar")
        })
        .collect();
    let (first, rest) = scalars.split_first().unwrap();
    let mut sum = SecretKey::from_slice(first).unwrap();
    for scalar in rest {
        sum = sum
            .add_tweak(&Scalar::from_be_bytes(*scalar).unwrap())
            .unwrap();
    }
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(nonce_point);
    bytes[32..].copy_from_slice(&sum.secret_bytes());
    nostr_sdk::secp256k1::schnorr::Signature::from_slice(&bytes).unwrap()
}
