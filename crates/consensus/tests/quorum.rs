//! Quorum members over a real relay on loopback: commit-reveal and FROST signing, with honest,
//! lying, copying, equivocating and silent members. Every quorum-signed event is checked as
//! plain BIP-340 under the quorum key.

use std::collections::BTreeSet;
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::agreement::{self, AgreementConfig};
use quorum_consensus::channel::Channel;
use quorum_consensus::member::{self, MemberConfig, MemberOutcome, QuorumJob};
use quorum_consensus::signing::SigningConfig;
use quorum_proto::agreement::BuildResult;
use quorum_proto::blossom::Sha256Hex;
use quorum_proto::mandate::{Keygen, Mandate, Member};
use quorum_proto::nip34::RepoCoordinate;
use quorum_threshold::{KeyShare, Roster};

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
    let order: Vec<usize> = {
        let roster = q.members[0].1.group().roster().clone();
        let mut idx: Vec<usize> = (0..3).collect();
        idx.sort_by_key(|i| roster.index_of(&q.members[*i].0.public_key()).unwrap());
        idx
    };
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
                &config.agreement,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copycat_that_commits_after_a_reveal_does_not_count() {
    let relay = relay().await;
    let q = quorum(2, 3);
    let id = job_id(6);
    let config = fast();
    let copycat_keys = q.members[2].0.clone();
    let copycat_share = q.members[2].1.clone();
    let relays = vec![relay.url.clone()];
    let copycat = async {
        // Never builds: waits for someone's reveal, then commits to what it saw.
        let channel = Channel::open(&relays, copycat_keys.clone(), vec![agreement::filter(&id)])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let copied = channel
            .wait_for(deadline, |seen| {
                seen.iter()
                    .find(|e| e.kind == quorum_proto::agreement::REVEAL)
                    .and_then(|e| quorum_proto::agreement::Reveal::from_event(e).ok())
                    .map(|r| r.result)
            })
            .await
            .expect("a reveal to copy");
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
