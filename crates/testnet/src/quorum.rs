//! Test-only: a quorum to run members of. A t-of-n key is dealt to fresh member keys, each
//! share is saved where that member's DVM looks for it, and a mandate for the key, signed by a
//! fresh repository owner, is published. Dealing keeps tests fast and deterministic; the DKG
//! over relays has tests of its own (`quorum-consensus`, `quorum-cli`).
//!
//! The owner also publishes, when a test asks, what members require before they build
//! (protocol §16): the repository's announcement and maintainer-signed states
//! ([`DealtQuorum::publish_repository`], [`DealtQuorum::publish_state`]), and newer mandates
//! with other rules ([`DealtQuorum::publish_mandate`]).

use std::path::PathBuf;

use quorum_dvm::client::JobClient;
use quorum_proto::mandate::{Keygen, Mandate, MandateRules, Member};
use quorum_proto::nip34::RepoCoordinate;
use quorum_proto::nostr::{Event, Keys, PublicKey, RelayUrl, Timestamp};

/// What the mandate says.
#[derive(Debug, Clone)]
pub struct QuorumSpec<'a> {
    pub n: usize,
    pub t: u16,
    /// The repository's NIP-34 identifier (`d`), owned by the fresh owner key.
    pub identifier: &'a str,
    /// The jobs the mandate covers (empty: all).
    pub jobs: &'a [&'a str],
    /// The kinds the quorum may sign.
    pub allow: &'a [u16],
}

/// A dealt quorum and its published mandate.
pub struct DealtQuorum {
    /// The members' DVM keys, in the order their shares were saved.
    pub members: Vec<Keys>,
    /// The repository owner, who signed the mandate.
    pub owner: Keys,
    pub quorum: PublicKey,
    pub mandate: Event,
}

/// Deals `spec`'s key, saves member `i`'s share in `share_dir(i)` (mode 0600, the file name
/// members look up) and publishes the mandate on `relay`.
pub async fn deal(
    relay: &RelayUrl,
    spec: QuorumSpec<'_>,
    share_dir: impl Fn(usize) -> PathBuf,
) -> DealtQuorum {
    deal_for(relay, spec, share_dir, Keys::generate()).await
}

/// [`deal`] for a repository `owner` already has: a second quorum of the same repository
/// (say, its watchers beside its builders) is mandated by the same owner.
pub async fn deal_for(
    relay: &RelayUrl,
    spec: QuorumSpec<'_>,
    share_dir: impl Fn(usize) -> PathBuf,
    owner: Keys,
) -> DealtQuorum {
    let members: Vec<Keys> = (0..spec.n).map(|_| Keys::generate()).collect();
    let roster = quorum_threshold::Roster::new(spec.t, members.iter().map(Keys::public_key))
        .expect("a valid roster");
    let (group, shares) =
        quorum_threshold::dealer::deal(&roster, &mut rand::rngs::OsRng).expect("the key is dealt");
    for (i, keys) in members.iter().enumerate() {
        let share = shares
            .iter()
            .find(|s| s.member() == keys.public_key())
            .expect("a share per member");
        quorum_threshold::store::save(
            &quorum_consensus::job::share_path(&share_dir(i), &group.quorum()),
            share,
        )
        .expect("the share is saved");
    }
    let repo = RepoCoordinate::new(owner.public_key(), spec.identifier);
    for i in 0..spec.n {
        // As the key service does: the share serves the repository it was made for.
        quorum_consensus::keygen::record_repository(&share_dir(i), &group.quorum(), &repo)
            .expect("the repository is recorded");
    }
    let mandate = Mandate {
        repo,
        pipeline: ".quorum/pipeline.yml".into(),
        jobs: spec.jobs.iter().map(|j| j.to_string()).collect(),
        quorum: Some(group.quorum()),
        members: roster
            .members()
            .iter()
            .map(|m| Member::new(m.pubkey, m.index))
            .collect(),
        threshold: spec.t,
        keygen: Keygen::Dealer { dealer: None },
        allow: spec.allow.iter().copied().collect(),
        expiration: Timestamp::now() + 3600u64,
        rules: Default::default(),
        content: String::new(),
    };
    let event = mandate
        .to_event_builder()
        .expect("a valid mandate")
        .sign_with_keys(&owner)
        .expect("signed");
    let client = JobClient::connect(std::slice::from_ref(relay), Keys::generate())
        .await
        .expect("the client connects");
    client
        .publish_signed(&event)
        .await
        .expect("the mandate is published");
    client.shutdown().await;
    DealtQuorum {
        members,
        owner,
        quorum: group.quorum(),
        mandate: event,
    }
}

impl DealtQuorum {
    /// The repository the mandate is for.
    pub fn repo(&self) -> RepoCoordinate {
        RepoCoordinate::new(self.owner.public_key(), self.identifier())
    }

    fn identifier(&self) -> String {
        quorum_proto::mandate::Mandate::from_event(&self.mandate)
            .expect("our own mandate parses")
            .repo
            .identifier
    }

    /// Publishes, as the owner, the repository's announcement (with `clone_url`) and a state
    /// in which `ref_name` points at `commit`: the evidence members require before they build
    /// (protocol §16). Returns both events.
    pub async fn publish_repository(
        &self,
        relay: &RelayUrl,
        clone_url: &str,
        ref_name: &str,
        commit: &str,
    ) -> (Event, Event) {
        use quorum_proto::nip34::{RepositoryAnnouncement, RepositoryState};
        let mut announcement = RepositoryAnnouncement::new(self.identifier());
        announcement.clone = vec![clone_url.to_string()];
        let announcement = announcement
            .to_event_builder()
            .sign_with_keys(&self.owner)
            .expect("signed");
        let state = RepositoryState::new(self.identifier())
            .with_ref(ref_name, commit)
            .expect("a valid ref")
            .to_event_builder()
            .sign_with_keys(&self.owner)
            .expect("signed");
        publish(relay, &[&announcement, &state]).await;
        (announcement, state)
    }

    /// Publishes, as the owner, a newer repository state with `refs` (name, commit): the
    /// maintainer moving the refs. Signed after the clock's second ticked, so that it is newer
    /// than any state published before (relays keep only the newest).
    pub async fn publish_state(&self, relay: &RelayUrl, refs: &[(&str, &str)]) -> Event {
        let mut state = quorum_proto::nip34::RepositoryState::new(self.identifier());
        for (name, commit) in refs {
            state = state.with_ref(*name, *commit).expect("a valid ref");
        }
        next_second().await;
        let state = state
            .to_event_builder()
            .sign_with_keys(&self.owner)
            .expect("signed");
        publish(relay, &[&state]).await;
        state
    }

    /// Publishes, as the owner, a newer mandate for the same quorum and repository with
    /// `rules` (requesters, source rule), which supersedes the current one; it becomes
    /// [`DealtQuorum::mandate`] and is returned.
    pub async fn publish_mandate(&mut self, relay: &RelayUrl, rules: MandateRules) -> Event {
        let mut mandate = Mandate::from_event(&self.mandate).expect("our own mandate parses");
        mandate.rules = rules;
        next_second().await;
        let event = mandate
            .to_event_builder()
            .expect("a valid mandate")
            .sign_with_keys(&self.owner)
            .expect("signed");
        publish(relay, &[&event]).await;
        self.mandate = event.clone();
        event
    }
}

/// Waits until the clock's second ticks: an event signed after this is newer (`created_at`)
/// than any signed before.
pub async fn next_second() {
    let now = Timestamp::now();
    while Timestamp::now() <= now {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Publishes `events` on `relay` through a throwaway client.
pub async fn publish(relay: &RelayUrl, events: &[&Event]) {
    let client = JobClient::connect(std::slice::from_ref(relay), Keys::generate())
        .await
        .expect("the client connects");
    for event in events {
        client
            .publish_signed(event)
            .await
            .expect("the event is published");
    }
    client.shutdown().await;
}
