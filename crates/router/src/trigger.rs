//! Manual triggers (NIP-C1 kind 9840): gitworkshop's "Retry" button. A maintainer asks the
//! coordinator that signed a run's 9842 — this router — to run the workflow at a commit again.
//!
//! The router takes a trigger only when it checks out ([`check`]): a valid signature, exactly
//! one `p` naming this router, our workflow file with its sha256, and a repository among its
//! `a` tags whose maintainer set (the owner's announcement) holds the author and whose newest
//! maintainer-signed state has the commit at a ref tip. Anything else is ignored with a log
//! line, so a stranger's 9840 starts nothing. An accepted trigger becomes a run-pipeline
//! request the router addresses to itself ([`TriggerInbox`]), tagged with the trigger (`e`),
//! so that the DVM runtime's journal, restart and result handling apply to re-runs as to any
//! run, and a trigger is taken once however often the inbox sees it. When the router runs that
//! request it checks the trigger again (anyone may name one) and compares the workflow hash
//! with the file at the commit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quorum_dvm::client::JobClient;
use quorum_proto::kinds::JobKind;
use quorum_proto::nip34::{
    RepoCoordinate, announcements_of, maintainer_set, newest_announcement, newest_state, states_of,
};
use quorum_proto::nipc1::{CI_MANUAL_TRIGGER, CiManualTrigger, Quote};
use quorum_proto::nostr::{Event, EventId, Filter, PublicKey, Timestamp};
use quorum_proto::run::RunRequest;

/// How old a trigger may be when the router first sees it: older ones are stale (a
/// restarted router must not replay yesterday's retries).
pub const MAX_TRIGGER_AGE: Duration = Duration::from_secs(3600);

/// How often the inbox looks for new triggers. A look is a stored-event query from the last
/// one on, so a relay that was away meanwhile loses nothing.
pub const INBOX_INTERVAL: Duration = Duration::from_secs(3);

/// How far back each look reaches before the previous one.
const LOOK_OVERLAP: Duration = Duration::from_secs(300);

/// A manual trigger this router will run.
#[derive(Debug, Clone)]
pub struct AcceptedTrigger {
    pub event: Event,
    pub trigger: CiManualTrigger,
    /// The repository (one of the trigger's `a`) the author maintains and whose state has
    /// the commit.
    pub repo: RepoCoordinate,
    /// Where to fetch it: the first `clone` URL of the owner's newest announcement.
    pub clone_url: String,
}

impl AcceptedTrigger {
    /// The quote a re-run's 39842 and 9842 carry (`manual-trigger`).
    pub fn quote(&self) -> Quote {
        Quote::of(&self.event)
    }

    /// The run-pipeline request that replays it, addressed to `router` and tagged with it.
    pub fn run_request(&self, router: PublicKey) -> quorum_proto::nip90::JobRequest {
        let mut run = RunRequest::new(self.clone_url.clone(), self.trigger.context.commit.clone());
        run.repo_id = Some(self.repo.clone());
        run.git_ref = self.trigger.context.git_ref.clone();
        run.manual_trigger = Some(self.event.id);
        let mut request = run.to_request().provider(router);
        request.parent = Some(self.event.id);
        request
    }
}

/// Checks 9840 `event` for the router `me` (module docs); the error says why it is not taken.
pub async fn check(
    client: &JobClient,
    event: &Event,
    me: &PublicKey,
) -> Result<AcceptedTrigger, String> {
    event
        .verify()
        .map_err(|_| "its signature does not verify".to_string())?;
    let trigger = CiManualTrigger::from_event(event).map_err(|e| e.to_string())?;
    if trigger.coordinator != *me {
        return Err(format!(
            "it is addressed to coordinator {}, not this router",
            trigger.coordinator.to_hex()
        ));
    }
    if trigger.pull_request.is_some() {
        return Err("it re-runs a pull-request workflow, which this router does not run".into());
    }
    let path = trigger
        .context
        .workflow
        .as_ref()
        .map(|w| w.path.as_str())
        .unwrap_or_default();
    if path != quorum_pipeline::PIPELINE_PATH {
        return Err(format!(
            "it names workflow {path:?}; this router runs {}",
            quorum_pipeline::PIPELINE_PATH
        ));
    }
    let mut refused = Vec::new();
    for repo in &trigger.context.repos {
        match eligible(client, repo, &event.pubkey, &trigger.context.commit).await {
            Ok(clone_url) => {
                return Ok(AcceptedTrigger {
                    event: event.clone(),
                    trigger: trigger.clone(),
                    repo: repo.clone(),
                    clone_url,
                });
            }
            Err(reason) => refused.push(format!("{repo}: {reason}")),
        }
    }
    Err(refused.join("; "))
}

/// Whether `author` may re-run `commit` of `repo`: a maintainer, the commit at a tip of the
/// newest maintainer-signed state. Returns the URL to fetch it from.
async fn eligible(
    client: &JobClient,
    repo: &RepoCoordinate,
    author: &PublicKey,
    commit: &str,
) -> Result<String, String> {
    let lookup = Duration::from_secs(5);
    let announcements = client
        .fetch(announcements_of(repo), lookup)
        .await
        .map_err(|e| format!("cannot look up the repository: {e}"))?;
    let maintainers: BTreeSet<PublicKey> =
        maintainer_set(&repo.owner, &repo.identifier, &announcements);
    if !maintainers.contains(author) {
        return Err(format!(
            "the author {} is not one of its maintainers",
            author.to_hex()
        ));
    }
    let (_, announcement) = newest_announcement(repo, &announcements)
        .ok_or_else(|| "its owner has no announcement on the relays".to_string())?;
    let clone_url = announcement
        .clone
        .first()
        .cloned()
        .ok_or_else(|| "its announcement lists no clone URL".to_string())?;
    let states = client
        .fetch(states_of(repo, maintainers.iter().copied()), lookup)
        .await
        .map_err(|e| format!("cannot look up its state: {e}"))?;
    let (_, state) = newest_state(repo, &maintainers, &states)
        .ok_or_else(|| "no maintainer has published its state".to_string())?;
    if !state.refs.values().any(|tip| tip == commit) {
        return Err(format!(
            "commit {commit} is not at a ref of its newest maintainer-signed state"
        ));
    }
    Ok(clone_url)
}

/// The 9840s addressed to a router, turned into run requests to itself.
pub struct TriggerInbox {
    client: Arc<JobClient>,
    /// Triggers already decided on (taken or ignored), so each is looked at once.
    seen: BTreeSet<EventId>,
    since: Timestamp,
}

impl TriggerInbox {
    /// An inbox for the router whose client (signing with the router's key) is `client`.
    pub fn new(client: Arc<JobClient>) -> Self {
        TriggerInbox {
            client,
            seen: BTreeSet::new(),
            since: Timestamp::now() - MAX_TRIGGER_AGE.as_secs(),
        }
    }

    /// Looks for new triggers every [`INBOX_INTERVAL`] until `stop` resolves.
    pub async fn serve(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            self.look().await;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(INBOX_INTERVAL) => {}
            }
        }
    }

    /// One look: every new trigger is checked, and an accepted one that has no run request of
    /// this router yet gets one. Returns the requests it published.
    pub async fn look(&mut self) -> Vec<Event> {
        let me = self.client.public_key();
        let looked_at = Timestamp::now();
        let found = match self
            .client
            .fetch(
                Filter::new()
                    .kind(CI_MANUAL_TRIGGER)
                    .pubkey(me)
                    .since(self.since),
                Duration::from_secs(5),
            )
            .await
        {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!("cannot look for manual triggers: {err}");
                return Vec::new();
            }
        };
        let mut published = Vec::new();
        for event in found {
            if !self.seen.insert(event.id) {
                continue;
            }
            let accepted = match check(&self.client, &event, &me).await {
                Ok(accepted) => accepted,
                Err(reason) => {
                    tracing::warn!(trigger = %event.id, author = %event.pubkey, "manual trigger ignored: {reason}");
                    continue;
                }
            };
            if self.already_requested(event.id).await {
                continue;
            }
            match self.client.submit(&accepted.run_request(me), false).await {
                Ok(request) => {
                    tracing::info!(trigger = %event.id, request = %request.id, commit = %accepted.trigger.context.commit, "a maintainer asked for a re-run");
                    published.push(request);
                }
                Err(err) => {
                    // Looked at again next time.
                    self.seen.remove(&event.id);
                    tracing::warn!(trigger = %event.id, "cannot request the re-run: {err}");
                }
            }
        }
        // An overlap: an event stamped shortly before the last look but stored after it (a
        // slow relay, a skewed clock) is seen again and skipped, never missed.
        self.since = looked_at - LOOK_OVERLAP.as_secs();
        published
    }

    /// Whether this router already asked itself to replay `trigger` (before a restart).
    async fn already_requested(&self, trigger: EventId) -> bool {
        self.client
            .fetch(
                Filter::new()
                    .kind(JobKind::RunPipeline.request_kind())
                    .author(self.client.public_key())
                    .event(trigger),
                Duration::from_secs(5),
            )
            .await
            .map(|found| !found.is_empty())
            .unwrap_or(false)
    }
}
