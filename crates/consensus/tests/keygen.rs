//! Making quorum keys over a real relay on loopback: DKG among 3 and 5 members, a member silent
//! in round 2, dealer deliveries (from the dealer and from an impostor), and the member service
//! that stores shares. Every key made here signs an event that verifies as plain BIP-340 under
//! the group key.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nostr_sdk::prelude::*;
use quorum_consensus::keygen::{self, KeygenConfig, KeygenError, ServeConfig};
use quorum_proto::mandate::{self, Keygen, Mandate};
use quorum_proto::nip34::{RepoCoordinate, RepositoryAnnouncement};
use quorum_proto::quorum_msg::{MessageKind, QuorumMessage, SessionId};
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

fn fast() -> KeygenConfig {
    KeygenConfig {
        round_timeout: Duration::from_secs(10),
        delivery_timeout: Duration::from_secs(5),
        message_lifetime: Duration::from_secs(600),
    }
}

/// A mandate for `keys` with threshold `t`, without a quorum key yet.
fn mandate(maintainer: &Keys, keys: &[Keys], threshold: u16) -> Mandate {
    let pubkeys: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    Mandate {
        repo: RepoCoordinate::new(maintainer.public_key(), "sample"),
        pipeline: ".quorum/pipeline.yml".into(),
        jobs: vec!["build".into()],
        quorum: None,
        members: keygen::new_members(&pubkeys),
        threshold,
        keygen: Keygen::Dkg,
        allow: [8708u16].into_iter().collect(),
        expiration: Timestamp::now() + 3600u64,
        rules: Default::default(),
        content: "test quorum".into(),
    }
}

/// Signs a note as the quorum with the first `t` shares and checks it as plain BIP-340.
fn sign_with(shares: &[KeyShare]) -> Event {
    try_sign(shares).expect("plain BIP-340 under the group key")
}

/// Signs a note as the quorum with the first `t` shares (the first share's group aggregates);
/// an error if any step fails or the result does not verify under the group key.
fn try_sign(shares: &[KeyShare]) -> Result<Event, String> {
    let group = shares[0].group();
    let t = usize::from(group.threshold());
    let mut rng = rand::rngs::OsRng;
    let signers = &shares[..t];
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for share in signers {
        let (secret, public) = quorum_threshold::sign::commit(share, &mut rng);
        nonces.push(secret);
        commitments.insert(share.member(), public);
    }
    let unsigned =
        EventBuilder::text_note("signed by a quorum made over Nostr").build(group.quorum());
    let request = quorum_threshold::SigningRequest::new(unsigned, commitments);
    let mut sig_shares = BTreeMap::new();
    for (share, nonce) in signers.iter().zip(nonces) {
        let s = quorum_threshold::sign::sign(share, nonce, &request).map_err(|e| e.to_string())?;
        sig_shares.insert(share.member(), s);
    }
    let event = quorum_threshold::sign::aggregate(group, &request, &sig_shares)
        .map_err(|e| e.to_string())?;
    event.verify().map_err(|e| e.to_string())?;
    assert_eq!(event.pubkey, group.quorum());
    Ok(event)
}

async fn dkg_among(n: usize, t: u16) {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..n).map(|_| Keys::generate()).collect();
    let proposal = keygen::propose_dkg(&relays, &maintainer, mandate(&maintainer, &keys, t))
        .await
        .expect("proposal published");
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let watch = tokio::spawn({
        let relays = relays.clone();
        let members = members.clone();
        let id = proposal.id;
        async move { keygen::await_group_key(&relays, id, &members, Duration::from_secs(60)).await }
    });
    let runs: Vec<_> = keys
        .iter()
        .map(|k| {
            let (relays, k, proposal) = (relays.clone(), k.clone(), proposal.clone());
            tokio::spawn(async move { keygen::run_dkg(&relays, &k, &proposal, &fast()).await })
        })
        .collect();
    let mut shares = Vec::new();
    for run in runs {
        shares.push(run.await.unwrap().expect("the DKG succeeds"));
    }
    let quorum = watch.await.unwrap().expect("all members announce one key");
    for (share, k) in shares.iter().zip(&keys) {
        assert_eq!(share.quorum(), quorum);
        assert_eq!(share.member(), k.public_key());
        assert_eq!(share.group().threshold(), t);
        // The mandate's indices are the shares' indices.
        let index = mandate(&maintainer, &keys, t)
            .member_index(&k.public_key())
            .unwrap();
        assert_eq!(share.index(), index);
    }
    sign_with(&shares);
    // Any t of them sign, not only the first.
    let mut reversed = shares.clone();
    reversed.reverse();
    sign_with(&reversed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_2_of_3_over_a_relay_signs_under_the_group_key() {
    dkg_among(3, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dkg_3_of_5_over_a_relay_signs_under_the_group_key() {
    dkg_among(5, 3).await;
}

/// One member of three is offline: the organiser does not wait out its whole timeout but
/// names the member that sent nothing for the session once the answer window is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_organiser_names_a_member_that_never_answers_without_waiting_the_timeout() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let proposal = keygen::propose_dkg(&relays, &maintainer, mandate(&maintainer, &keys, 2))
        .await
        .expect("proposal published");
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    // Two members take part; the third never comes online.
    for k in &keys[..2] {
        let (relays, k, proposal) = (relays.clone(), k.clone(), proposal.clone());
        tokio::spawn(async move { keygen::run_dkg(&relays, &k, &proposal, &fast()).await });
    }
    let started = std::time::Instant::now();
    let result = keygen::await_group_key_within(
        &relays,
        proposal.id,
        &members,
        Duration::from_secs(120),
        Duration::from_secs(3),
    )
    .await;
    let waited = started.elapsed();
    match result {
        Err(KeygenError::Silent { members, .. }) => {
            assert_eq!(members, vec![keys[2].public_key()], "only the offline one")
        }
        other => panic!("{other:?}"),
    }
    assert!(waited < Duration::from_secs(60), "gave up after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_silent_in_round_2_is_named_by_the_others() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let proposal = keygen::propose_dkg(&relays, &maintainer, mandate(&maintainer, &keys, 2))
        .await
        .unwrap();
    // The third member sends its round-1 package, then nothing.
    let silent = &keys[2];
    let parsed = Mandate::from_event(&proposal).unwrap();
    let roster = Roster::from_members(
        2,
        parsed
            .members
            .iter()
            .map(|m| quorum_threshold::Member {
                index: m.index,
                pubkey: m.pubkey,
            })
            .collect(),
    )
    .unwrap();
    let (_secret, broadcast) =
        quorum_threshold::dkg::start(&roster, silent.public_key(), &mut rand::rngs::OsRng).unwrap();
    let others = [keys[0].public_key(), keys[1].public_key()];
    let round1 = QuorumMessage::seal_broadcast(
        silent,
        MessageKind::DkgRound1,
        SessionId::from_event_id(&proposal.id),
        None,
        &others,
        &serde_json::to_string(&broadcast).unwrap(),
        Timestamp::now() + 600u64,
    )
    .unwrap();
    publish(&relay.url, &round1).await;

    let config = KeygenConfig {
        round_timeout: Duration::from_secs(4),
        ..fast()
    };
    let runs: Vec<_> = keys[..2]
        .iter()
        .map(|k| {
            let (relays, k, proposal, config) =
                (relays.clone(), k.clone(), proposal.clone(), config.clone());
            tokio::spawn(async move { keygen::run_dkg(&relays, &k, &proposal, &config).await })
        })
        .collect();
    for run in runs {
        let err = run
            .await
            .unwrap()
            .expect_err("no key without the third member");
        match &err {
            KeygenError::Silent { kind, members } => {
                assert_eq!(*kind, MessageKind::DkgRound2);
                assert_eq!(members, &vec![silent.public_key()]);
            }
            other => panic!("expected the silent member to be named, got {other}"),
        }
        assert!(err.to_string().contains(&silent.public_key().to_hex()));
    }
}

async fn publish(url: &RelayUrl, event: &Event) {
    let client = Client::new(Keys::generate());
    client.add_relay(url.clone()).await.unwrap();
    client.connect().await;
    let output = client.send_event(event).await.expect("published");
    assert!(
        output.failed.is_empty(),
        "relay refused: {:?}",
        output.failed
    );
    client.shutdown().await;
}

/// A dealt quorum and its signed dealer mandate (signed by `maintainer`, who deals).
fn dealt(maintainer: &Keys, keys: &[Keys], t: u16) -> (Event, Vec<KeyShare>) {
    let pubkeys: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let roster = Roster::new(t, pubkeys).unwrap();
    let (group, shares) = quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng).unwrap();
    let mut m = mandate(maintainer, keys, t);
    m.quorum = Some(group.quorum());
    m.keygen = Keygen::Dealer { dealer: None };
    let event = m
        .to_event_builder()
        .unwrap()
        .sign_with_keys(maintainer)
        .unwrap();
    (event, shares)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_from_anyone_but_the_dealer_is_refused() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let (mandate_event, shares) = dealt(&maintainer, &keys, 2);
    publish(&relay.url, &mandate_event).await;

    // The library refuses to deal under a mandate whose dealer is someone else...
    let impostor = Keys::generate();
    let err = keygen::deal_over_relays(&relays, &impostor, &mandate_event, &shares, &fast())
        .await
        .expect_err("not the dealer");
    assert!(matches!(err, KeygenError::NotApplicable { .. }), "{err}");

    // ...and a member refuses a well-formed delivery of a valid share from the impostor.
    let member = &keys[0];
    let share = shares
        .iter()
        .find(|s| s.member() == member.public_key())
        .unwrap();
    let forged = QuorumMessage::seal(
        &impostor,
        MessageKind::DealerShare,
        SessionId::from_event_id(&mandate_event.id),
        Some(share.quorum()),
        &BTreeMap::from([(member.public_key(), share.to_json().unwrap().to_string())]),
        Timestamp::now() + 600u64,
    )
    .unwrap();
    publish(&relay.url, &forged).await;
    let err = keygen::receive_dealt_share(&relays, member, &mandate_event, &fast())
        .await
        .expect_err("refused");
    match &err {
        KeygenError::NotFromDealer { sender, dealer, .. } => {
            assert_eq!(*sender, impostor.public_key());
            assert_eq!(*dealer, maintainer.public_key());
        }
        other => panic!("expected a refusal naming the impostor, got {other}"),
    }
    assert!(err.to_string().contains(&impostor.public_key().to_hex()));
    assert!(!err.to_string().contains(share.to_json().unwrap().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dealer_mode_end_to_end() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let mandate_event = keygen::deal_and_publish(
        &relays,
        &maintainer,
        mandate(&maintainer, &keys, 2),
        &fast(),
    )
    .await
    .expect("dealt and delivered");
    let parsed = Mandate::from_event(&mandate_event).unwrap();
    assert_eq!(parsed.keygen, Keygen::Dealer { dealer: None });
    let quorum = parsed.quorum.expect("a dealer mandate names its key");
    let mut shares = Vec::new();
    for k in &keys {
        let share = keygen::receive_dealt_share(&relays, k, &mandate_event, &fast())
            .await
            .expect("the dealer's delivery is accepted");
        assert_eq!(share.quorum(), quorum);
        assert_eq!(share.member(), k.public_key());
        shares.push(share);
    }
    sign_with(&shares);

    // A named dealer other than the signer: deliveries from it count, from the signer not.
    let dealer = Keys::generate();
    let (mut m, shares) = {
        let (event, shares) = dealt(&maintainer, &keys, 2);
        (Mandate::from_event(&event).unwrap(), shares)
    };
    m.keygen = Keygen::Dealer {
        dealer: Some(dealer.public_key()),
    };
    let named = keygen::publish_mandate(&relays, &maintainer, &m)
        .await
        .unwrap();
    let err = keygen::deal_over_relays(&relays, &maintainer, &named, &shares, &fast())
        .await
        .expect_err("the signer is not the named dealer");
    assert!(matches!(err, KeygenError::NotApplicable { .. }), "{err}");
    keygen::deal_over_relays(&relays, &dealer, &named, &shares, &fast())
        .await
        .expect("the named dealer deals");
    let share = keygen::receive_dealt_share(&relays, &keys[1], &named, &fast())
        .await
        .expect("accepted from the named dealer");
    assert_eq!(Some(share.quorum()), m.quorum);
}

/// Every log line of this test binary, as text.
fn captured_logs() -> &'static Mutex<String> {
    static LOGS: OnceLock<Mutex<String>> = OnceLock::new();
    LOGS.get_or_init(|| {
        tracing::subscriber::set_global_default(Capture).expect("one global subscriber");
        Mutex::new(String::new())
    })
}

/// A tracing subscriber that appends every event's fields to [`captured_logs`].
struct Capture;

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        let mut logs = captured_logs().lock().unwrap();
        logs.push_str(&line);
        logs.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_saves_shares_with_mode_0600_and_never_logs_them() {
    captured_logs();
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let services = Services::start(&relays, &keys, &dirs);
    // Let the services subscribe; the relay keeps what they miss anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A bad mandate naming the members first: it must not stop the services.
    let bad = EventBuilder::new(mandate::MANDATE, "not a mandate")
        .tags(keys.iter().map(|k| Tag::public_key(k.public_key())))
        .sign_with_keys(&maintainer)
        .unwrap();
    publish(&relay.url, &bad).await;

    // DKG through the services.
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let proposal = keygen::propose_dkg(&relays, &maintainer, mandate(&maintainer, &keys, 2))
        .await
        .unwrap();
    let quorum = keygen::await_group_key(&relays, proposal.id, &members, Duration::from_secs(60))
        .await
        .expect("the services make the key");
    // Members store their share before they announce it: all N announced, so all hold it.
    for dir in &dirs {
        let book = keygen::load_shares(&dir.path().join("shares"));
        assert!(book.get(&quorum).is_some(), "announced before saving");
    }
    // Dealer mode through the services too.
    let dealt = keygen::deal_and_publish(
        &relays,
        &maintainer,
        mandate(&maintainer, &keys, 2),
        &fast(),
    )
    .await
    .unwrap();
    let dealt_quorum = Mandate::from_event(&dealt).unwrap().quorum.unwrap();

    let mut dkg_shares = Vec::new();
    let mut contents = Vec::new();
    for (k, dir) in keys.iter().zip(&dirs) {
        let share_dir = dir.path().join("shares");
        for q in [quorum, dealt_quorum] {
            let path = share_dir.join(format!("{}.json", q.to_hex()));
            let book = wait_for_share(&share_dir, &q).await;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
            let share = book.get(&q).expect("the share is in the book").clone();
            assert_eq!(share.member(), k.public_key());
            contents.push(std::fs::read_to_string(&path).unwrap());
            if q == quorum {
                dkg_shares.push(share);
            }
        }
        let dir_mode = std::fs::metadata(&share_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
    sign_with(&dkg_shares);

    services.stop().await;
    let logs = captured_logs().lock().unwrap().clone();
    assert!(logs.contains("quorum key share saved"), "{logs}");
    for content in contents {
        let value: serde_json::Value = serde_json::from_str(&content).unwrap();
        let secret = value["key_package"].as_str().unwrap();
        assert!(
            !logs.contains(secret),
            "a share's secret appears in the logs"
        );
        assert!(!logs.contains(&content), "a share file appears in the logs");
    }
}

/// Each member's key service (`serve_with`) on `DIR/shares`, until stopped.
struct Services {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), KeygenError>>>,
}

impl Services {
    fn start(relays: &[RelayUrl], keys: &[Keys], dirs: &[tempfile::TempDir]) -> Services {
        let mut services = Services {
            stops: Vec::new(),
            tasks: Vec::new(),
        };
        for (k, dir) in keys.iter().zip(dirs) {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (relays, k, share_dir) = (relays.to_vec(), k.clone(), dir.path().join("shares"));
            let config = ServeConfig {
                keygen: fast(),
                ..ServeConfig::default()
            };
            services.tasks.push(tokio::spawn(async move {
                keygen::serve_with(&relays, &k, share_dir, config, async {
                    let _ = stopped.await;
                })
                .await
            }));
            services.stops.push(stop);
        }
        services
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for service in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), service)
                .await
                .expect("the service stops")
                .unwrap()
                .expect("the service ran");
        }
    }
}

async fn wait_for_share(dir: &std::path::Path, quorum: &PublicKey) -> keygen::ShareBook {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let book = keygen::load_shares(dir);
        if book.get(quorum).is_some() {
            return book;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no share of {quorum} in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dealt 2-of-3 quorum stored in three members' share directories, its mandate published.
async fn stored_quorum(
    relay: &Relay,
    maintainer: &Keys,
    keys: &[Keys],
) -> (Event, Vec<KeyShare>, Vec<tempfile::TempDir>) {
    let (mandate_event, shares) = dealt(maintainer, keys, 2);
    publish(&relay.url, &mandate_event).await;
    let dirs: Vec<tempfile::TempDir> = keys.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    for (k, dir) in keys.iter().zip(&dirs) {
        let share = shares
            .iter()
            .find(|s| s.member() == k.public_key())
            .unwrap();
        let path = dir
            .path()
            .join("shares")
            .join(format!("{}.json", share.quorum().to_hex()));
        quorum_threshold::store::save(&path, share).unwrap();
        // What the member service records when it saves a share itself: the repository the
        // key is for, without which it refreshes nothing.
        let repo = Mandate::from_event(&mandate_event).unwrap().repo;
        keygen::record_repository(&dir.path().join("shares"), &share.quorum(), &repo).unwrap();
    }
    (mandate_event, shares, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_through_the_services_keeps_the_key_and_renews_the_shares() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let (mandate_event, old_shares, dirs) = stored_quorum(&relay, &maintainer, &keys).await;
    let quorum = old_shares[0].quorum();
    let services = Services::start(&relays, &keys, &dirs);

    // The maintainer asks for a refresh of the same key, members and threshold.
    let current = Mandate::from_event(&mandate_event).unwrap();
    let refresh = keygen::propose_refresh(&relays, &maintainer, current.clone())
        .await
        .expect("refresh mandate published");
    let parsed = Mandate::from_event(&refresh).unwrap();
    assert_eq!(parsed.keygen, Keygen::Refresh);
    assert_eq!(parsed.quorum, Some(quorum));
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let announced = keygen::await_group_key(&relays, refresh.id, &members, Duration::from_secs(60))
        .await
        .expect("all members announce the refreshed key");
    assert_eq!(announced, quorum, "a refresh keeps the quorum key");

    // Each member replaces its share file once all announced; wait for the new ones.
    let mut new_shares = Vec::new();
    for (k, dir) in keys.iter().zip(&dirs) {
        let share_dir = dir.path().join("shares");
        let old = old_shares
            .iter()
            .find(|s| s.member() == k.public_key())
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let new = loop {
            let book = keygen::load_shares(&share_dir);
            let share = book.get(&quorum).expect("a share of the quorum").clone();
            if share.to_json().unwrap() != old.to_json().unwrap() {
                break share;
            }
            assert!(tokio::time::Instant::now() < deadline, "never refreshed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(new.quorum(), quorum);
        assert_eq!(new.member(), k.public_key());
        assert_eq!(new.index(), old.index());
        assert_eq!(new.group().roster(), old.group().roster());
        assert_ne!(
            serde_json::to_string(new.group()).unwrap(),
            serde_json::to_string(old.group()).unwrap(),
            "the verifying shares change"
        );
        let path = share_dir.join(format!("{}.json", quorum.to_hex()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing is left aside once the refresh is done.
        let pending = share_dir.join("refresh");
        assert!(
            std::fs::read_dir(&pending).is_ok_and(|mut d| d.next().is_none()),
            "a refreshed share is left in {}",
            pending.display()
        );
        new_shares.push(new);
    }

    // Two new shares sign under the same key, any two of them.
    let event = sign_with(&new_shares);
    assert_eq!(event.pubkey, quorum);
    sign_with(&new_shares[1..]);
    // One old share and one new share make no valid signature, whichever group aggregates.
    let mixed = [old_shares[0].clone(), new_shares[1].clone()];
    assert!(
        try_sign(&mixed).is_err(),
        "an old share combined with a new one"
    );
    let mixed = [new_shares[0].clone(), old_shares[1].clone()];
    assert!(
        try_sign(&mixed).is_err(),
        "a new share combined with an old one"
    );

    services.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_without_a_share_refuses_to_refresh() {
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let maintainer = Keys::generate();
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let (mandate_event, shares, _dirs) = stored_quorum(&relay, &maintainer, &keys).await;
    let quorum = shares[0].quorum();
    let refresh = keygen::propose_refresh(
        &relays,
        &maintainer,
        Mandate::from_event(&mandate_event).unwrap(),
    )
    .await
    .unwrap();

    // A member whose share directory has no share of that quorum.
    let empty = tempfile::tempdir().unwrap();
    let err = keygen::run_refresh(&relays, &keys[0], &refresh, empty.path(), &fast())
        .await
        .expect_err("no share, no refresh");
    assert!(
        matches!(err, KeygenError::NoShare { quorum: q, .. } if q == quorum),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("holds no share of quorum"), "{text}");
    assert!(text.contains(&quorum.to_hex()), "{text}");

    // A share of another quorum does not stand in for it.
    let (_, others) = dealt(&maintainer, &keys, 2);
    let other = others
        .iter()
        .find(|s| s.member() == keys[0].public_key())
        .unwrap();
    let err = keygen::run_refresh_with(&relays, &keys[0], &refresh, other, &fast(), |_| Ok(()))
        .await
        .expect_err("a share of another key");
    assert!(matches!(err, KeygenError::WrongQuorum { .. }), "{err}");

    // Nor is a DKG proposal or a dealer mandate a refresh.
    let err = keygen::run_refresh(&relays, &keys[0], &mandate_event, empty.path(), &fast())
        .await
        .expect_err("not a refresh mandate");
    assert!(matches!(err, KeygenError::NotApplicable { .. }), "{err}");
}

/// How many captured log lines hold all of `needles`.
fn refusals(needles: &[&str]) -> usize {
    captured_logs()
        .lock()
        .unwrap()
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .count()
}

/// The share files' bytes in each member's directory.
fn share_bytes(dirs: &[tempfile::TempDir]) -> Vec<BTreeMap<String, Vec<u8>>> {
    dirs.iter()
        .map(|dir| {
            std::fs::read_dir(dir.path().join("shares"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .map(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read(&p).unwrap())
                })
                .collect()
        })
        .collect()
}

/// Review M2: only a repository's maintainers start key sessions on its members. A stranger
/// re-signs the live mandate's tags as a refresh, asks for a refresh of the same key under a
/// repository of its own, and proposes a DKG for the maintainer's repository: each is refused
/// (logged with the reason) by every member, no share file changes, no session starts and no
/// round message is sent. Then a co-maintainer (listed in the owner's NIP-34 announcement, so
/// found only through the relays) asks for a refresh, and it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_start_no_key_session_and_a_maintainer_still_refreshes() {
    captured_logs();
    let relay = relay().await;
    let relays = vec![relay.url.clone()];
    let owner = Keys::generate();
    let co_maintainer = Keys::generate();
    let stranger = Keys::generate();
    let mut announcement = RepositoryAnnouncement::new("sample");
    announcement.maintainers = vec![co_maintainer.public_key()];
    let announcement = announcement
        .to_event_builder()
        .sign_with_keys(&owner)
        .unwrap();
    publish(&relay.url, &announcement).await;
    let keys: Vec<Keys> = (0..3).map(|_| Keys::generate()).collect();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let services = Services::start(&relays, &keys, &dirs);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The owner deals a key through the services; each records the repository with its share.
    let live = keygen::deal_and_publish(&relays, &owner, mandate(&owner, &keys, 2), &fast())
        .await
        .unwrap();
    let live_mandate = Mandate::from_event(&live).unwrap();
    let quorum = live_mandate.quorum.unwrap();
    for dir in &dirs {
        let share_dir = dir.path().join("shares");
        wait_for_share(&share_dir, &quorum).await;
        assert_eq!(
            keygen::repository_of(&share_dir, &quorum).unwrap(),
            Some(live_mandate.repo.clone())
        );
    }
    let before = share_bytes(&dirs);

    // 1. The live mandate's tags, re-signed by the stranger as a refresh.
    let mut resigned = live_mandate.clone();
    resigned.keygen = Keygen::Refresh;
    // 2. A refresh of the same key under the stranger's own repository (it is that
    //    repository's owner, so the maintainer check alone would pass).
    let mut own_repo = resigned.clone();
    own_repo.repo = RepoCoordinate::new(stranger.public_key(), "sample");
    // 3. A DKG proposal for the owner's repository.
    let mut dkg = mandate(&owner, &keys, 2);
    dkg.content = "a stranger's DKG".into();
    let attempts: Vec<(Event, &str)> = [
        (resigned, "who is not a maintainer"),
        (own_repo, "but this member holds that key for"),
        (dkg, "who is not a maintainer"),
    ]
    .into_iter()
    .map(|(m, reason)| {
        let event = m
            .to_event_builder()
            .unwrap()
            .sign_with_keys(&stranger)
            .unwrap();
        (event, reason)
    })
    .collect();
    for (event, _) in &attempts {
        publish(&relay.url, event).await;
    }
    // Every member refuses each, saying why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (event, reason) in &attempts {
        let id = event.id.to_hex();
        while refusals(&[&id, "refused", reason]) < keys.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every member refused {id} ({reason})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        share_bytes(&dirs),
        before,
        "a stranger changed a share file"
    );
    for dir in &dirs {
        let share_dir = dir.path().join("shares");
        assert_eq!(
            keygen::load_shares(&share_dir).len(),
            1,
            "a stranger's DKG made a share"
        );
        for (event, _) in &attempts {
            let marker = share_dir.join("sessions").join(event.id.to_hex());
            assert!(!marker.exists(), "a session started for {}", event.id);
        }
    }

    // A maintainer other than the owner refreshes: the services find it in the announcement.
    let refresh = keygen::propose_refresh(&relays, &co_maintainer, live_mandate.clone())
        .await
        .unwrap();
    let members: Vec<PublicKey> = keys.iter().map(Keys::public_key).collect();
    let announced = keygen::await_group_key(&relays, refresh.id, &members, Duration::from_secs(60))
        .await
        .expect("the maintainer's refresh runs");
    assert_eq!(announced, quorum);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (i, dir) in dirs.iter().enumerate() {
        let name = format!("{}.json", quorum.to_hex());
        while share_bytes(std::slice::from_ref(dir))[0][&name] == before[i][&name] {
            assert!(tokio::time::Instant::now() < deadline, "never refreshed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    services.stop().await;

    // No member sent a round message in a stranger's session.
    let client = Client::default();
    client.add_relay(relay.url.clone()).await.unwrap();
    client.connect().await;
    let rounds = client
        .fetch_events(
            Filter::new()
                .kinds([
                    quorum_proto::quorum_msg::DKG_ROUND1,
                    quorum_proto::quorum_msg::DKG_ROUND2,
                    quorum_proto::quorum_msg::DKG_DONE,
                ])
                .authors(members.clone()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    client.shutdown().await;
    let sessions: std::collections::BTreeSet<SessionId> = rounds
        .iter()
        .map(|e| QuorumMessage::from_event(e).unwrap().session)
        .collect();
    assert_eq!(
        sessions,
        [SessionId::from_event_id(&refresh.id)]
            .into_iter()
            .collect(),
        "round messages only in the maintainer's session"
    );
}
