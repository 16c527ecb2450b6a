//! Reading the event store on behalf of clients: NIP-40 expiry on the read path, merging of
//! several filters, streaming stored events in small batches, and keeping blocking database
//! work off the async worker threads and bounded in number.
//!
//! Memory: no read holds more than a small batch of whole events. A `REQ` is first planned
//! from ids and timestamps only (`negentropy_items`, which nostr-lmdb answers from borrowed
//! views of its memory map without building events), then its events are read, serialised
//! and handed out at most [`BATCH_BYTES`] at a time. `COUNT` never builds an event: one filter
//! is the store's own count, several are a set of ids. At most
//! [`crate::Limits::max_concurrent_queries`] reads run at once, relay-wide.
//!
//! nostr-lmdb 0.44 knows nothing about NIP-40: it stores and serves expired events. The relay
//! therefore (a) refuses already-expired events on publish, (b) skips expired events met while
//! streaming a `REQ` and deletes them ("lazy expiry"), planning again so that a `limit` is
//! still honoured with live events, and (c) sweeps events whose expiry it saw at publish time
//! (see [`ExpiryIndex`]). `COUNT` uses the store's count and may include expired events that
//! were stored before the current process started and not yet met by a query.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use nostr::{Event, EventId, Filter, JsonUtil, Timestamp};
use nostr_database::{DatabaseError, NostrDatabase};
use tokio::sync::Semaphore;

/// How many times a `REQ` is planned again after deleting expired events it met.
const EXPIRY_REQUERIES: usize = 4;

/// Ids read from the store in one batch of a `REQ`.
const FETCH_IDS: usize = 64;

/// A batch of a `REQ`'s stored events stops growing once its JSON reaches this size (so a batch
/// holds at most this plus one event).
pub(crate) const BATCH_BYTES: usize = 512 * 1024;

/// The event store, with the relay's read discipline around it.
pub(crate) struct Store {
    db: Arc<dyn NostrDatabase>,
    /// Expiration times of events stored by this process (for the sweeper).
    pub(crate) expiry: ExpiryIndex,
    /// One permit per concurrent read.
    reads: Arc<Semaphore>,
}

/// One stored event of a `REQ`, serialised.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) id: EventId,
    pub(crate) created_at: Timestamp,
    /// The event's JSON.
    pub(crate) json: String,
}

impl Store {
    /// `max_concurrent_reads == 0` means unlimited.
    pub(crate) fn new(db: Arc<dyn NostrDatabase>, max_concurrent_reads: usize) -> Store {
        let permits = if max_concurrent_reads == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max_concurrent_reads
        };
        Store {
            db,
            expiry: ExpiryIndex::default(),
            reads: Arc::new(Semaphore::new(permits)),
        }
    }

    pub(crate) fn db(&self) -> &Arc<dyn NostrDatabase> {
        &self.db
    }

    /// Runs a store read on the blocking pool, once a read permit is free.
    ///
    /// nostr-lmdb's `query`/`count` do their LMDB work synchronously inside the returned
    /// future, so awaiting them on a worker thread would stall every other connection on that
    /// thread for the duration of a large query. `Handle::block_on` keeps this correct for
    /// stores whose futures do need the runtime. The permit travels with the work, so a caller
    /// that gives up (its client left) does not free it before the read ends.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, DatabaseError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn NostrDatabase>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, DatabaseError>>,
    {
        let permit = Arc::clone(&self.reads)
            .acquire_owned()
            .await
            .map_err(DatabaseError::backend)?;
        let db = Arc::clone(&self.db);
        let handle = tokio::runtime::Handle::current();
        let work = move || {
            let _permit = permit;
            handle.block_on(f(db))
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(join) => Err(DatabaseError::backend(join)),
        }
    }

    /// Number of stored events matching any of `filters` (NIP-45), without building events.
    pub(crate) async fn count(&self, filters: Vec<Filter>) -> Result<usize, DatabaseError> {
        self.read(move |db| async move {
            if let [filter] = filters.as_slice() {
                return db.count(filter.clone()).await;
            }
            // Several filters may overlap: count distinct ids.
            let mut seen: HashSet<EventId> = HashSet::new();
            for filter in filters {
                seen.extend(
                    db.negentropy_items(filter)
                        .await?
                        .into_iter()
                        .map(|(id, _)| id),
                );
            }
            Ok(seen.len())
        })
        .await
    }

    /// The stored events matching any of `filters` (each with its limit already set), without
    /// duplicates and without expired events, newest first (ties: lowest id first), to be
    /// taken batch by batch with [`StoredEvents::next_batch`].
    pub(crate) fn stored_events(&self, filters: Vec<Filter>) -> StoredEvents<'_> {
        StoredEvents {
            store: self,
            filters,
            plan: Vec::new(),
            next: 0,
            planned: false,
            given: HashSet::new(),
            expired: Vec::new(),
            requeries_left: EXPIRY_REQUERIES,
        }
    }

    /// Deletes the tracked events that have expired.
    pub(crate) async fn sweep(&self) {
        let ids = self.expiry.take_expired(Timestamp::now());
        if ids.is_empty() {
            return;
        }
        let n = ids.len();
        match self.db.delete(Filter::new().ids(ids)).await {
            Ok(()) => tracing::debug!(count = n, "swept expired events"),
            Err(e) => tracing::warn!(error = %e, "cannot sweep expired events"),
        }
    }
}

/// A `REQ`'s stored events, read lazily (see [`Store::stored_events`]).
pub(crate) struct StoredEvents<'s> {
    store: &'s Store,
    filters: Vec<Filter>,
    /// Ids to send, in order; `next` is the first not yet read.
    plan: Vec<EventId>,
    next: usize,
    planned: bool,
    /// Ids already handed out (a new plan skips them).
    given: HashSet<EventId>,
    /// Expired events met since the last plan.
    expired: Vec<EventId>,
    requeries_left: usize,
}

impl StoredEvents<'_> {
    /// The next few events (at most about [`BATCH_BYTES`]), or `None` when all were given.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<StoredEvent>>, DatabaseError> {
        loop {
            if !self.planned {
                self.plan().await?;
            }
            if self.next < self.plan.len() {
                let ids: Vec<EventId> = self.plan[self.next..]
                    .iter()
                    .take(FETCH_IDS)
                    .copied()
                    .collect();
                let batch = self.store.read(move |db| fetch(db, ids)).await?;
                self.next += batch.consumed;
                self.expired.extend(batch.expired);
                if batch.events.is_empty() {
                    continue;
                }
                self.given.extend(batch.events.iter().map(|e| e.id));
                return Ok(Some(batch.events));
            }
            // Expired events took places some limits would give to live ones: delete them and
            // plan again; the events already given are skipped.
            if self.expired.is_empty() || self.requeries_left == 0 {
                return Ok(None);
            }
            let ids = std::mem::take(&mut self.expired);
            tracing::debug!(count = ids.len(), "deleting expired events met by a query");
            if let Err(e) = self.store.db.delete(Filter::new().ids(ids)).await {
                // A read-only or failing store: still never serve them, just serve fewer.
                tracing::warn!(error = %e, "cannot delete expired events");
                return Ok(None);
            }
            self.requeries_left -= 1;
            self.planned = false;
        }
    }

    /// Ids and timestamps of every filter's matches (never whole events), merged and ordered.
    async fn plan(&mut self) -> Result<(), DatabaseError> {
        let filters = self.filters.clone();
        let mut plan = self
            .store
            .read(move |db| async move {
                let mut seen: HashSet<EventId> = HashSet::new();
                let mut items: Vec<(Timestamp, EventId)> = Vec::new();
                for filter in filters {
                    for (id, created_at) in db.negentropy_items(filter).await? {
                        if seen.insert(id) {
                            items.push((created_at, id));
                        }
                    }
                }
                items.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                Ok(items.into_iter().map(|(_, id)| id).collect::<Vec<_>>())
            })
            .await?;
        plan.retain(|id| !self.given.contains(id));
        self.plan = plan;
        self.next = 0;
        self.planned = true;
        Ok(())
    }
}

/// What one read of a `REQ`'s plan found.
struct Fetched {
    events: Vec<StoredEvent>,
    /// Ids of the plan this read went through.
    consumed: usize,
    expired: Vec<EventId>,
}

/// Reads and serialises events of `ids` in order until [`BATCH_BYTES`] of JSON.
async fn fetch(db: Arc<dyn NostrDatabase>, ids: Vec<EventId>) -> Result<Fetched, DatabaseError> {
    let now = Timestamp::now();
    let mut fetched = Fetched {
        events: Vec::new(),
        consumed: 0,
        expired: Vec::new(),
    };
    let mut bytes = 0;
    for id in ids {
        fetched.consumed += 1;
        // None: deleted since the plan was made.
        let Some(event) = db.event_by_id(&id).await? else {
            continue;
        };
        if event.is_expired_at(&now) {
            fetched.expired.push(id);
            continue;
        }
        let json = event.as_json();
        bytes += json.len();
        fetched.events.push(StoredEvent {
            id,
            created_at: event.created_at,
            json,
        });
        if bytes >= BATCH_BYTES {
            break;
        }
    }
    Ok(fetched)
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

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::{EventBuilder, Keys, Kind, Tag};

    fn lmdb(dir: &tempfile::TempDir) -> Store {
        let db: Arc<dyn NostrDatabase> =
            Arc::new(nostr_lmdb::NostrLMDB::open(dir.path()).expect("open"));
        Store::new(db, 2)
    }

    /// Every event of a `REQ`, batch by batch.
    async fn all(store: &Store, filters: Vec<Filter>) -> Vec<Vec<StoredEvent>> {
        let mut stream = store.stored_events(filters);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next_batch().await.expect("batch") {
            batches.push(batch);
        }
        batches
    }

    /// nostr-lmdb stores expired events as given; the query path must skip and delete them and
    /// still fill the limit with live events.
    #[tokio::test]
    async fn expired_events_do_not_eat_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = lmdb(&dir);
        let db = store.db();
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
        let got: Vec<EventId> = all(
            &store,
            vec![Filter::new().author(keys.public_key()).limit(1)],
        )
        .await
        .into_iter()
        .flatten()
        .map(|e| e.id)
        .collect();
        assert_eq!(got, vec![live.id]);
        for e in &expired {
            assert!(db.event_by_id(&e.id).await.expect("lookup").is_none());
        }
        assert_eq!(store.count(vec![Filter::new()]).await.expect("count"), 1);
    }

    /// Overlapping filters: a `REQ` gives each event once, newest first across filters, in
    /// batches of bounded size; `COUNT` counts distinct events.
    #[tokio::test]
    async fn several_filters_merge_in_bounded_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = lmdb(&dir);
        let (alice, bob) = (Keys::generate(), Keys::generate());
        let now = Timestamp::now().as_secs();
        let big = "x".repeat(100 * 1024);
        let mut saves = Vec::new();
        for i in 0..30u64 {
            let keys = if i % 2 == 0 { &alice } else { &bob };
            let kind = if i % 3 == 0 {
                Kind::TextNote
            } else {
                Kind::Custom(30)
            };
            let e = EventBuilder::new(kind, &big)
                .custom_created_at(Timestamp::from(now - 1000 + i / 2))
                .sign_with_keys(keys)
                .expect("sign");
            saves.push(e);
        }
        for e in &saves {
            assert!(store.db().save_event(e).await.expect("save").is_success());
        }
        let filters = vec![
            Filter::new().author(alice.public_key()).limit(100),
            Filter::new().kind(Kind::TextNote).limit(100),
        ];
        let expected: HashSet<EventId> = saves
            .iter()
            .filter(|e| e.pubkey == alice.public_key() || e.kind == Kind::TextNote)
            .map(|e| e.id)
            .collect();
        let batches = all(&store, filters.clone()).await;
        assert!(batches.len() > 1, "100 KiB events come in several batches");
        for batch in &batches {
            let bytes: usize = batch.iter().map(|e| e.json.len()).sum();
            let last = batch.last().map_or(0, |e| e.json.len());
            assert!(bytes - last < BATCH_BYTES, "batch of {bytes} bytes");
        }
        let got: Vec<&StoredEvent> = batches.iter().flatten().collect();
        assert_eq!(got.len(), expected.len(), "each matching event once");
        assert_eq!(got.iter().map(|e| e.id).collect::<HashSet<_>>(), expected);
        for pair in got.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.created_at > b.created_at || (a.created_at == b.created_at && a.id < b.id),
                "newest first, ties by id"
            );
        }
        let unlimited: Vec<Filter> = filters
            .into_iter()
            .map(|f| Filter { limit: None, ..f })
            .collect();
        assert_eq!(store.count(unlimited).await.expect("count"), expected.len());
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
