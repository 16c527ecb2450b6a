//! The source of a quorum job: the maintainer-signed NIP-34 events that tie a repository URL and
//! a commit to the repository's maintainers. This is the input end of the trust chain
//! (docs/protocol.md §16): builders agreeing on bytes is worth nothing unless the bytes come from
//! the code a maintainer signed.
//!
//! Two events are the evidence, both named by the job request (`["param", "source",
//! ANNOUNCEMENT_ID, STATE_ID]`) and by the quorum's attestation:
//!
//! - the owner's **announcement** (30617): it lists the maintainers and the `clone` URLs, and the
//!   request's repository URL must be one of them;
//! - a **state** (30618) signed by one of those maintainers, in which the commit is the tip of a
//!   ref.
//!
//! [`select`] is what a requester (the pipeline engine) uses to pick the evidence for a commit;
//! [`check`] is what every member uses to check the evidence a request names against what it
//! sees on the relays itself, and what `quorum verify` uses again later. Both are pure: the
//! caller fetches the events. Relays keep only the newest version of an addressable event, so
//! a member also requires the named evidence to still be current: the announcement the owner's
//! newest, and the commit a tip of the newest maintainer-signed state too (or, under the
//! mandate's `ancestor` rule, reachable from one, which only git can tell: [`Source::ancestry`]
//! lists the tips the caller must check).

use std::collections::BTreeSet;

use nostr::{Event, EventId, PublicKey};

use crate::mandate::SourceRule;
use crate::nip34::{
    RepoCoordinate, RepositoryAnnouncement, RepositoryState, newest_announcement, newest_state,
    owner_announcement, state_of,
};

/// Why the evidence does not tie the request to the maintainers' code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("no valid repository announcement (30617) by the owner of {repo} is on the relays")]
    NoAnnouncement { repo: RepoCoordinate },
    #[error("announcement {id} is not on the relays")]
    AnnouncementNotFound { id: EventId },
    #[error("event {id} is not the owner's announcement of {repo}: {reason}")]
    NotAnnouncement {
        id: EventId,
        repo: RepoCoordinate,
        reason: String,
    },
    #[error(
        "announcement {named} is not the owner's newest announcement of the repository ({newest} is)"
    )]
    StaleAnnouncement { named: EventId, newest: EventId },
    #[error(
        "repository URL {url} is not one of the clone URLs the owner announced for {repo} ({})",
        if clone.is_empty() { "none".to_string() } else { clone.join(", ") }
    )]
    UrlNotListed {
        url: String,
        repo: RepoCoordinate,
        clone: Vec<String>,
    },
    #[error("no repository state (30618) signed by a maintainer of {repo} is on the relays")]
    NoState { repo: RepoCoordinate },
    #[error("state {id} is not on the relays")]
    StateNotFound { id: EventId },
    #[error("event {id} is not a repository state of {repo}: {reason}")]
    NotState {
        id: EventId,
        repo: RepoCoordinate,
        reason: String,
    },
    #[error("state {id} is signed by {signer}, who is not a maintainer of {repo}")]
    StateNotByMaintainer {
        id: EventId,
        signer: PublicKey,
        repo: RepoCoordinate,
    },
    #[error("commit {commit} is not the tip of any ref in maintainer-signed state {state}")]
    NotATip { commit: String, state: EventId },
    #[error(
        "commit {commit} is no longer the tip of any ref in the newest maintainer-signed state \
         {newest} (a maintainer moved the refs on; the mandate's `source` rule is `tip`)"
    )]
    NoLongerATip { commit: String, newest: EventId },
}

/// The evidence of a job's source, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    /// The owner's announcement the request relies on.
    pub announcement: &'a Event,
    /// The maintainers it names (the owner included).
    pub maintainers: BTreeSet<PublicKey>,
    /// The maintainer-signed state the request relies on.
    pub state: &'a Event,
    /// The refs of `state` whose tip is the commit (empty when the commit is only reachable
    /// from one, under the `ancestor` rule).
    pub refs: Vec<String>,
    /// Under the `ancestor` rule, for each state in which the commit is not a tip: the ref tips
    /// from one of which the commit must be reachable. The caller checks this with git; empty
    /// when nothing is left to check.
    pub ancestry: Vec<Vec<String>>,
}

impl Source<'_> {
    /// The ids the request and the attestation name: (announcement, state).
    pub fn ids(&self) -> (EventId, EventId) {
        (self.announcement.id, self.state.id)
    }
}

/// The evidence a requester names for building `commit` of `repo` from `url`: the owner's
/// newest announcement, which must list `url`, and the newest maintainer-signed state, in which
/// `commit` must be a ref's tip (under `SourceRule::Ancestor` it need not be: the members check
/// with git that it is reachable).
pub fn select<'a>(
    repo: &RepoCoordinate,
    url: &str,
    commit: &str,
    rule: SourceRule,
    events: &'a [Event],
) -> Result<Source<'a>, SourceError> {
    let (announcement, parsed) = newest_announcement(repo, events)
        .ok_or_else(|| SourceError::NoAnnouncement { repo: repo.clone() })?;
    check_url(repo, url, &parsed)?;
    let maintainers = maintainers_of(repo, &parsed);
    let (state, parsed) = newest_state(repo, &maintainers, events)
        .ok_or_else(|| SourceError::NoState { repo: repo.clone() })?;
    let refs = tips(&parsed, commit);
    let ancestry = match (refs.is_empty(), rule) {
        (false, _) => Vec::new(),
        (true, SourceRule::Tip) => {
            return Err(SourceError::NotATip {
                commit: commit.to_string(),
                state: state.id,
            });
        }
        (true, SourceRule::Ancestor) => vec![parsed.refs.values().cloned().collect()],
    };
    Ok(Source {
        announcement,
        maintainers,
        state,
        refs,
        ancestry,
    })
}

/// The evidence a request names, checked against `events` (what the checker sees on the
/// relays, which must include the named events): the announcement is the owner's newest, lists
/// `url` and so names the maintainers; the state is signed by one of them and `commit` is a
/// ref's tip there; and `commit` is a tip of the newest maintainer-signed state too. Under
/// `SourceRule::Ancestor` the commit may instead be reachable from a tip, in either state:
/// [`Source::ancestry`] says what the caller must still check with git.
///
/// `current` says whether to require the named events to be the newest: members do (they act
/// now); a verifier checking an old release does not (relays replaced them since), and then
/// only the named events are judged.
pub fn check<'a>(
    repo: &RepoCoordinate,
    url: &str,
    commit: &str,
    rule: SourceRule,
    (announcement_id, state_id): (EventId, EventId),
    events: &'a [Event],
    current: bool,
) -> Result<Source<'a>, SourceError> {
    let announcement = events.iter().find(|e| e.id == announcement_id).ok_or(
        SourceError::AnnouncementNotFound {
            id: announcement_id,
        },
    )?;
    let parsed =
        owner_announcement(repo, announcement).map_err(|reason| SourceError::NotAnnouncement {
            id: announcement_id,
            repo: repo.clone(),
            reason,
        })?;
    if current
        && let Some((newest, _)) = newest_announcement(repo, events)
        && newest.id != announcement_id
    {
        return Err(SourceError::StaleAnnouncement {
            named: announcement_id,
            newest: newest.id,
        });
    }
    check_url(repo, url, &parsed)?;
    let maintainers = maintainers_of(repo, &parsed);
    let state = events
        .iter()
        .find(|e| e.id == state_id)
        .ok_or(SourceError::StateNotFound { id: state_id })?;
    let named = state_of(repo, state).map_err(|reason| SourceError::NotState {
        id: state_id,
        repo: repo.clone(),
        reason,
    })?;
    if !maintainers.contains(&state.pubkey) {
        return Err(SourceError::StateNotByMaintainer {
            id: state_id,
            signer: state.pubkey,
            repo: repo.clone(),
        });
    }
    let refs = tips(&named, commit);
    let mut ancestry = Vec::new();
    if refs.is_empty() {
        match rule {
            SourceRule::Tip => {
                return Err(SourceError::NotATip {
                    commit: commit.to_string(),
                    state: state_id,
                });
            }
            SourceRule::Ancestor => ancestry.push(named.refs.values().cloned().collect()),
        }
    }
    if current
        && let Some((newest, parsed)) = newest_state(repo, &maintainers, events)
        && newest.id != state_id
        && tips(&parsed, commit).is_empty()
    {
        match rule {
            SourceRule::Tip => {
                return Err(SourceError::NoLongerATip {
                    commit: commit.to_string(),
                    newest: newest.id,
                });
            }
            SourceRule::Ancestor => ancestry.push(parsed.refs.values().cloned().collect()),
        }
    }
    Ok(Source {
        announcement,
        maintainers,
        state,
        refs,
        ancestry,
    })
}

fn check_url(
    repo: &RepoCoordinate,
    url: &str,
    announcement: &RepositoryAnnouncement,
) -> Result<(), SourceError> {
    // Exact match: a URL the owner did not write is not the owner's (no normalisation that a
    // look-alike host or path could slip through).
    if announcement.clone.iter().any(|c| c == url) {
        Ok(())
    } else {
        Err(SourceError::UrlNotListed {
            url: url.to_string(),
            repo: repo.clone(),
            clone: announcement.clone.clone(),
        })
    }
}

fn maintainers_of(
    repo: &RepoCoordinate,
    announcement: &RepositoryAnnouncement,
) -> BTreeSet<PublicKey> {
    let mut set = BTreeSet::from([repo.owner]);
    set.extend(announcement.maintainers.iter().copied());
    set
}

/// The refs of `state` whose tip is `commit`.
fn tips(state: &RepositoryState, commit: &str) -> Vec<String> {
    state
        .refs
        .iter()
        .filter(|(_, tip)| *tip == commit)
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use nostr::{Keys, Timestamp};

    use super::*;

    const URL: &str = "https://git.example/app.git";
    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    struct Repo {
        owner: Keys,
        co: Keys,
        repo: RepoCoordinate,
    }

    fn repo() -> Repo {
        let owner = Keys::generate();
        let co = Keys::generate();
        let repo = RepoCoordinate::new(owner.public_key(), "app");
        Repo { owner, co, repo }
    }

    fn announce(r: &Repo, at: u64, clone: &[&str]) -> Event {
        let mut a = RepositoryAnnouncement::new("app");
        a.clone = clone.iter().map(|c| c.to_string()).collect();
        a.maintainers = vec![r.co.public_key()];
        a.to_event_builder()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(&r.owner)
            .unwrap()
    }

    fn state(keys: &Keys, at: u64, main: &str) -> Event {
        RepositoryState::new("app")
            .with_ref("refs/heads/main", main)
            .unwrap()
            .to_event_builder()
            .custom_created_at(Timestamp::from(at))
            .sign_with_keys(keys)
            .unwrap()
    }

    #[test]
    fn the_engine_selects_the_newest_evidence_and_members_accept_it() {
        let r = repo();
        let old = announce(&r, 10, &[URL]);
        let new = announce(&r, 20, &[URL, "git://m.example/app"]);
        let s1 = state(&r.owner, 30, C1);
        let s2 = state(&r.co, 40, C2);
        let events = vec![old, new.clone(), s1.clone(), s2.clone()];
        let source = select(&r.repo, URL, C2, SourceRule::Tip, &events).unwrap();
        assert_eq!(source.ids(), (new.id, s2.id));
        assert_eq!(source.refs, ["refs/heads/main"]);
        assert!(source.ancestry.is_empty());
        assert!(source.maintainers.contains(&r.co.public_key()));
        let checked = check(
            &r.repo,
            URL,
            C2,
            SourceRule::Tip,
            source.ids(),
            &events,
            true,
        )
        .unwrap();
        assert_eq!(checked, source);
        // C1 was a tip once, but the refs moved on.
        assert_eq!(
            select(&r.repo, URL, C1, SourceRule::Tip, &events).unwrap_err(),
            SourceError::NotATip {
                commit: C1.into(),
                state: s2.id
            }
        );
        assert_eq!(
            check(
                &r.repo,
                URL,
                C1,
                SourceRule::Tip,
                (new.id, s1.id),
                &events,
                true
            )
            .unwrap_err(),
            SourceError::NoLongerATip {
                commit: C1.into(),
                newest: s2.id
            }
        );
        // A verifier of an old release judges the named events alone.
        assert!(
            check(
                &r.repo,
                URL,
                C1,
                SourceRule::Tip,
                (new.id, s1.id),
                &events,
                false
            )
            .is_ok()
        );
        // Under `ancestor` the member is told which tips to check with git.
        let source = check(
            &r.repo,
            URL,
            C1,
            SourceRule::Ancestor,
            (new.id, s1.id),
            &events,
            true,
        )
        .unwrap();
        assert_eq!(source.ancestry, vec![vec![C2.to_string()]]);
    }

    #[test]
    fn strangers_forks_and_other_urls_are_refused_naming_the_check() {
        let r = repo();
        let stranger = Keys::generate();
        let announcement = announce(&r, 10, &[URL]);
        let good = state(&r.owner, 30, C1);
        let theirs = state(&stranger, 40, C2);
        let events = vec![announcement.clone(), good.clone(), theirs.clone()];
        // A fork URL is not a clone URL.
        let err = select(
            &r.repo,
            "https://evil.example/app.git",
            C1,
            SourceRule::Tip,
            &events,
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::UrlNotListed { .. }), "{err}");
        assert!(err.to_string().contains(URL), "{err}");
        // A stranger's newer state does not count: the selection skips it, a check refuses it.
        assert_eq!(
            select(&r.repo, URL, C1, SourceRule::Tip, &events)
                .unwrap()
                .state
                .id,
            good.id
        );
        let err = check(
            &r.repo,
            URL,
            C2,
            SourceRule::Tip,
            (announcement.id, theirs.id),
            &events,
            true,
        )
        .unwrap_err();
        assert!(
            matches!(err, SourceError::StateNotByMaintainer { .. }),
            "{err}"
        );
        // An announcement by someone else with the same `d`, or a fork, is not the owner's.
        let mut fake = RepositoryAnnouncement::new("app");
        fake.clone = vec!["https://evil.example/app.git".into()];
        let fake = fake.to_event_builder().sign_with_keys(&stranger).unwrap();
        let mut events = events.clone();
        events.push(fake.clone());
        let err = check(
            &r.repo,
            "https://evil.example/app.git",
            C1,
            SourceRule::Tip,
            (fake.id, good.id),
            &events,
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("not the owner"), "{err}");
        let mut fork = RepositoryAnnouncement::new("app");
        fork.clone = vec![URL.into()];
        fork.fork_of = Some("30617:abc:app".into());
        let fork = fork
            .to_event_builder()
            .custom_created_at(Timestamp::from(50))
            .sign_with_keys(&r.owner)
            .unwrap();
        events.push(fork.clone());
        let err = check(
            &r.repo,
            URL,
            C1,
            SourceRule::Tip,
            (fork.id, good.id),
            &events,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("fork"), "{err}");
        // A commit no state names; evidence not on the relays; a stale announcement.
        let err = select(
            &r.repo,
            URL,
            "3333333333333333333333333333333333333333",
            SourceRule::Tip,
            &events,
        )
        .unwrap_err();
        assert!(matches!(err, SourceError::NotATip { .. }), "{err}");
        let missing = EventId::all_zeros();
        assert_eq!(
            check(
                &r.repo,
                URL,
                C1,
                SourceRule::Tip,
                (missing, good.id),
                &events,
                true
            )
            .unwrap_err(),
            SourceError::AnnouncementNotFound { id: missing }
        );
        let newer = announce(&r, 60, &[URL]);
        events.push(newer.clone());
        assert_eq!(
            check(
                &r.repo,
                URL,
                C1,
                SourceRule::Tip,
                (announcement.id, good.id),
                &events,
                true
            )
            .unwrap_err(),
            SourceError::StaleAnnouncement {
                named: announcement.id,
                newest: newer.id
            }
        );
        assert!(select(&r.repo, URL, C1, SourceRule::Tip, &[]).is_err());
    }
}
