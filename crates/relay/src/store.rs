//! Reading the event store on behalf of clients: NIP-40 expiry on the read path, merging of
//! several filters, and keeping blocking database work off the async worker threads.
//!
//! nostr-lmdb 0.44 knows nothing about NIP-40: it stores and serves expired events. The relay
//! therefore (a) refuses already-expired events on publish, (b) filters expired events out of
//! every query and deletes the ones it meets ("lazy expiry"), re-querying so that a `limit`
//! is still honoured with live events, and (c) sweeps events whose expiry it saw at publish
//! time (see [`ExpiryIndex`]). `COUNT` uses the store's count and may include expired events
//! that were stored before the current process started and not yet met by a query.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use nostr::{Event, EventId, Filter, Timestamp};
use nostr_database::{DatabaseError, NostrDatabase};

/// How many times a query is repeated after deleting expired events it returned.
const EXPIRY_REQUERIES: usize = 4;

/// Runs a store operation on the blocking pool.
///
/// nostr-lmdb's `query`/`count` do their LMDB work synchronously inside the returned future,
/// so awaiting them on a worker thread would stall every other connection on that thread for
/// the duration of a large query. `Handle::block_on` keeps this correct for stores whose
/// futures do need the runtime.
async fn blocking<T, F, Fut>(db: &Arc<dyn NostrDatabase>, f: F) -> Result<T, DatabaseError>
where
    T: Send + 'static,
    F: FnOnce(Arc<dyn NostrDatabase>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, DatabaseError>>,
{
    let db = Arc::clone(db);
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(f(db))).await {
        Ok(result) => result,
        Err(join) => Err(DatabaseError::backend(join)),
    }
}

/// Stored events matching any of `filters` (each with its limit already set), without
/// duplicates and without expired events, newest first (ties: lowest id first).
pub(crate) async fn query(
    db: &Arc<dyn NostrDatabase>,
    filters: Vec<Filter>,
) -> Result<Vec<Event>, DatabaseError> {
    blocking(db, move |db| async move {
        let mut seen: HashSet<EventId> = HashSet::new();
        let mut out: Vec<Event> = Vec::new();
        for filter in filters {
            for event in query_fresh(&db, filter).await? {
                if seen.insert(event.id) {
                    out.push(event);
                }
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    })
    .await
}

/// Number of stored events matching any of `filters` (NIP-45).
pub(crate) async fn count(
    db: &Arc<dyn NostrDatabase>,
    filters: Vec<Filter>,
) -> Result<usize, DatabaseError> {
    blocking(db, move |db| async move {
        if let [filter] = filters.as_slice() {
            return db.count(filter.clone()).await;
        }
        // Several filters may overlap: count distinct ids.
        let mut seen: HashSet<EventId> = HashSet::new();
        for filter in filters {
            let events = db.query(filter).await?;
            seen.extend(events.into_iter().map(|e| e.id));
        }
        Ok(seen.len())
    })
    .await
}

/// One filter's events with expired ones removed (and deleted from the store).
async fn query_fresh(
    db: &Arc<dyn NostrDatabase>,
    filter: Filter,
) -> Result<Vec<Event>, DatabaseError> {
    let want = filter.limit;
    for attempt in 0..=EXPIRY_REQUERIES {
        let events = db.query(filter.clone()).await?;
        let now = Timestamp::now();
        let (fresh, expired): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| !e.is_expired_at(&now));
        if expired.is_empty() {
            return Ok(fresh);
        }
        let ids: Vec<EventId> = expired.iter().map(|e| e.id).collect();
        tracing::debug!(count = ids.len(), "deleting expired events met by a query");
        if let Err(e) = db.delete(Filter::new().ids(ids)).await {
            // A read-only or failing store: still never serve them, just serve fewer.
            tracing::warn!(error = %e, "cannot delete expired events");
            return Ok(fresh);
        }
        // Without a limit the store returned everything: nothing more to fetch.
        let Some(limit) = want else { return Ok(fresh) };
        if fresh.len() >= limit || attempt == EXPIRY_REQUERIES {
            return Ok(fresh);
        }
    }
    Ok(Vec::new())
}

/// Expiration times of events stored by this process, so that they are deleted soon after
/// they expire even if nobody queries them (which keeps `COUNT` honest).
#[derive(Debug, Default)]
pub(crate) struct ExpiryIndex {
    pending: Mutex<BTreeSet<(Timestamp, EventId)>>,
}

impl ExpiryIndex {
    /// Remembers `event` if it carries a NIP-40 expiration.
    pub(crate) fn track(&self, event: &Event) {
        if let Some(at) = event.tags.expiration()
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.insert((*at, event.id));
        }
    }

    /// Removes and returns the ids that expired before `now`.
    pub(crate) fn take_expired(&self, now: Timestamp) -> Vec<EventId> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(first) = pending.first() {
            if first.0 >= now {
                break;
            }
            if let Some((_, id)) = pending.pop_first() {
                out.push(id);
            }
        }
        out
    }
}

/// Deletes the tracked events that have expired.
pub(crate) async fn sweep(db: &Arc<dyn NostrDatabase>, index: &ExpiryIndex) {
    let ids = index.take_expired(Timestamp::now());
    if ids.is_empty() {
        return;
    }
    let n = ids.len();
    match db.delete(Filter::new().ids(ids)).await {
        Ok(()) => tracing::debug!(count = n, "swept expired events"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep expired events"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Tag};

    /// nostr-lmdb stores expired events as given; the query path must skip and delete them and
    /// still fill the limit with live events.
    #[tokio::test]
    async fn expired_events_do_not_eat_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db: Arc<dyn NostrDatabase> =
            Arc::new(nostr_lmdb::NostrLMDB::open(dir.path()).expect("open"));
        let keys = Keys::generate();
        let now = Timestamp::now().as_secs();
        let live = EventBuilder::text_note("live")
            .custom_created_at(Timestamp::from(now - 100))
            .sign_with_keys(&keys)
            .expect("sign");
        db.save_event(&live).await.expect("save");
        // Three newer events, already expired, written straight into the store.
        let mut expired = Vec::new();
        for i in 0..3 {
            let e = EventBuilder::text_note(format!("expired {i}"))
                .tag(Tag::expiration(Timestamp::from(now - 10)))
                .custom_created_at(Timestamp::from(now - 50 + i))
                .sign_with_keys(&keys)
                .expect("sign");
            assert!(db.save_event(&e).await.expect("save").is_success());
            expired.push(e);
        }
        let got = query(&db, vec![Filter::new().author(keys.public_key()).limit(1)])
            .await
            .expect("query");
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![live.id]);
        for e in &expired {
            assert!(db.event_by_id(&e.id).await.expect("lookup").is_none());
        }
        assert_eq!(count(&db, vec![Filter::new()]).await.expect("count"), 1);
    }

    #[test]
    fn expiry_index_returns_only_expired() {
        let keys = Keys::generate();
        let now = Timestamp::now().as_secs();
        let index = ExpiryIndex::default();
        let past = EventBuilder::text_note("a")
            .tag(Tag::expiration(Timestamp::from(now - 1)))
            .sign_with_keys(&keys)
            .expect("sign");
        let future = EventBuilder::text_note("b")
            .tag(Tag::expiration(Timestamp::from(now + 100)))
            .sign_with_keys(&keys)
            .expect("sign");
        let plain = EventBuilder::text_note("c")
            .sign_with_keys(&keys)
            .expect("sign");
        for e in [&past, &future, &plain] {
            index.track(e);
        }
        assert_eq!(index.take_expired(Timestamp::from(now)), vec![past.id]);
        assert!(index.take_expired(Timestamp::from(now)).is_empty());
        assert_eq!(
            index.take_expired(Timestamp::from(now + 101)),
            vec![future.id]
        );
    }
}
