//! In-memory projections: a service's read model, folded from the log and kept live.
//!
//! A [`Projection`] replays every event matching its filter (or filters: a service that
//! folds several aggregate kinds into one view, [`Projection::start_on`]), then follows
//! new ones, on one ordered consumer ([`osp_eventlog::Follow`]). It can be dropped and rebuilt
//! at any time: it is a fold of the log, never a source of truth.
//!
//! Read-your-writes: every reply of a service carries a log sequence; a query that
//! sends it back (`Osp-Min-Seq`) is answered only once this instance has applied every
//! matching event up to it ([`Projection::wait_for`]), whichever instance wrote them.
//!
//! A view that can be serialised ([`Snapshot`]) may start from the newest valid snapshot
//! and replay only the events after it, and saves snapshots as it goes
//! ([`Projection::start_with`], [`crate::snapshot`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use osp_protocol::{AggregateRef, EventHash, EventPayload, Partitions, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::index::{Index, Indexed};
use crate::ownership::{Ownership, Share};
use crate::resident::{Record, Resident};
use crate::snapshot::{self, LastEvent, Restored, Snapshot, Snapshots};

mod share;
use osp_eventlog::{Delivered, EventLog, LogItem, Recorded, Result, Start};
pub(crate) use share::Parts;

/// A read model that events are applied to, in log order.
pub trait View: Default + Send + Sync + 'static {
    /// The events it reads.
    type Event: EventPayload + Send + Sync + 'static;
    /// Applies the next event. Must not fail: a fact that cannot be applied is a bug in
    /// the view, not in the log.
    fn apply(&mut self, event: &Recorded<Self::Event>);

    /// `event` continues the history of an aggregate this view has evicted
    /// ([`crate::resident`]): the projection gives the earlier events back
    /// ([`restore`](Self::restore)) before it applies `event`.
    fn missing(&self, _event: &Recorded<Self::Event>) -> bool {
        false
    }

    /// Makes an evicted aggregate resident again from its events before the one that
    /// [`missing`](Self::missing) named.
    fn restore(&mut self, _aggregate: &AggregateRef, _earlier: &[Recorded<Self::Event>]) {}

    /// The view will hold only the aggregates of some of `partitions` ([`Keeping::owned`]):
    /// told once, before any event, so it can keep what it folds apart per partition
    /// ([`Resident::share`](crate::Resident::share)).
    fn share(&mut self, _partitions: Partitions) {}

    /// Drops every aggregate of the partitions that `moved` away, finished or not: they
    /// are now another instance's ([`crate::ownership`]). Not counted as evicted. A view
    /// holding a share must: a partition that comes back is folded again from its first
    /// event.
    fn forget(&mut self, _moved: &Share) {}

    /// Evicts the aggregates that finished before `finished_before`; returns how many.
    fn evict(&mut self, _finished_before: Timestamp) -> usize {
        0
    }

    /// What the listing index holds of `aggregate`, resident, for a view that keeps an
    /// index ([`crate::index`]): its id in the index and its entry. Asked once per batch
    /// of events for each aggregate they changed, never for one the view has evicted.
    fn indexed(&self, _aggregate: &AggregateRef) -> Option<(String, Indexed)> {
        None
    }
}

/// A view that keeps the aggregates of record type `R` resident ([`crate::resident`]).
pub trait Keeps<R: Record>: View {
    fn resident(&self) -> &Resident<R>;
}

/// The refusal a query or a command gives when a history it needed ([`Projection::recall`])
/// could not be read: an event in it that cannot be read is named (`damaged`: asking again
/// will not read it either); anything else is the log being out of reach.
pub fn unreadable(error: osp_eventlog::Error) -> osp_protocol::Error {
    match error {
        osp_eventlog::Error::Malformed { seq, subject, error } => {
            osp_protocol::Error::Damaged { aggregate: subject, seq, reason: error.to_string() }
        }
        other => osp_protocol::Error::Unavailable { reason: other.to_string() },
    }
}

/// What a projection keeps besides its view's state.
#[derive(Clone)]
pub struct Keeping {
    /// How long a finished aggregate stays resident after it finished.
    pub keep_finished: Duration,
    /// The view's listing index, if it keeps one.
    pub index: Option<Arc<Index>>,
    /// The partitions this instance owns, when the view holds only those: it applies
    /// only their events, folds a partition's history when it gains one and forgets its
    /// aggregates when it moves away. `None`: the view holds every aggregate.
    pub owned: Option<Ownership>,
}

/// Ten seconds: the effects of an ending are performed from memory, and a client asking
/// about a run it just saw end is answered without a read of the log. Memory holds about
/// `rate × grace` finished aggregates (10,000 at 1,000 runs/s), so longer costs memory.
pub const KEEP_FINISHED: Duration = Duration::from_secs(10);

impl Default for Keeping {
    fn default() -> Keeping {
        Keeping { keep_finished: KEEP_FINISHED, index: None, owned: None }
    }
}

/// A view kept up to date from the log by a background task.
pub struct Projection<V> {
    folded: Arc<Folding<V>>,
    applied: watch::Receiver<u64>,
    log: EventLog,
    filters: Vec<String>,
}

impl<V> Clone for Projection<V> {
    fn clone(&self) -> Self {
        Projection {
            folded: self.folded.clone(),
            applied: self.applied.clone(),
            log: self.log.clone(),
            filters: self.filters.clone(),
        }
    }
}

/// The view and how far it has applied the log, changed together: `applied` is sent
/// while the view's write lock is held, so whoever holds a read lock sees a sequence
/// that is exactly what the view holds (what a snapshot must record).
struct Folding<V> {
    view: RwLock<V>,
    applied: watch::Sender<u64>,
    /// The last event applied: its sequence and hash.
    last_event: Mutex<Option<(u64, EventHash)>>,
    keeping: Keeping,
    /// Events applied since finished aggregates were last evicted.
    since_evicted: AtomicU64,
    /// What the view changed that its index does not hold yet. Changed under the view's
    /// write lock, taken under its read lock, so it always matches the view.
    unindexed: Mutex<Unindexed>,
    /// With `keeping.owned`, per partition: the view holds all of it. Set once a gained
    /// partition's history is folded in; cleared when it moves away.
    loaded: Vec<AtomicBool>,
    /// With `keeping.owned`, per partition: the listing index holds all of it
    /// ([`share`](self::share)).
    indexed: Vec<AtomicBool>,
    /// With `keeping.owned`, per partition: how many times it was gained.
    gains: Vec<AtomicU64>,
    /// How a view holding a share saves and restores its partitions' snapshots.
    parts: Option<Parts<V>>,
    /// Partitions gained that were taken in from a snapshot.
    restored: AtomicU64,
}

/// The aggregates whose index entries the events applied since the last batch changed,
/// with the sequence of the last of their events applied.
#[derive(Default)]
struct Unindexed {
    aggregates: HashMap<AggregateRef, u64>,
    /// The view had applied the log up to here.
    covers: u64,
}

impl<V> Folding<V> {
    fn last_event(&self) -> Option<(u64, EventHash)> {
        *self.last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// [`snapshot::encode`] for one view type.
type Encode<V> = fn(&V, u64, &[String], LastEvent) -> Result<Vec<u8>>;

/// How a projection saves snapshots of its view, when it does.
struct Saver<V> {
    every: u64,
    encode: Encode<V>,
    name: &'static str,
    shape: u32,
}

/// How long a follower waits before reopening after the subscription failed.
const REOPEN_AFTER: Duration = Duration::from_millis(250);

impl<V: View> Projection<V> {
    /// Replays `filter` into a new view and returns once it has caught up with the log;
    /// a background task then keeps it live until `shutdown`.
    pub async fn start(log: &EventLog, filter: &str, shutdown: CancellationToken) -> Result<Projection<V>> {
        Projection::start_on(log, &[filter], shutdown).await
    }

    /// Like [`start`](Self::start), for the events matching any of `filters` (not empty,
    /// not overlapping), applied in log order.
    pub async fn start_on(log: &EventLog, filters: &[&str], shutdown: CancellationToken) -> Result<Projection<V>> {
        let (projection, _follower) =
            Projection::start_inner(log, filters, None, None, Keeping::default(), None, shutdown).await?;
        Ok(projection)
    }

    async fn start_inner(
        log: &EventLog,
        filters: &[&str],
        restored: Option<Restored<V>>,
        saver: Option<Saver<V>>,
        keeping: Keeping,
        parts: Option<Parts<V>>,
        shutdown: CancellationToken,
    ) -> Result<(Projection<V>, JoinHandle<()>)> {
        let (mut view, mut from, mut last_event) = match restored {
            Some(restored) => (restored.view, restored.seq, restored.last_event),
            None => (V::default(), 0, None),
        };
        if let Some(owned) = &keeping.owned {
            // Holding nothing yet, it starts at the log's end; its partitions are taken in
            // as they are gained (below, the first share).
            view.share(owned.partitions());
            from = log.last_sequence().await?;
            last_event = match from {
                0 => None,
                _ => log.stored_hash(from).await?.map(|hash| (from, hash)),
            };
        }
        if let (0, Some(index)) = (from, &keeping.index) {
            // Folded from the first event, the index is built again with it.
            index.clear().map_err(index_unavailable)?;
        }
        let folded = Arc::new(Folding::new(view, from, last_event, keeping, parts));
        let applied = folded.applied.subscribe();
        let filter = filters.join(",");
        let filter = filter.as_str();
        let mut follow = log.follow_any::<Recorded<V::Event>>(filters, Start::Sequence(from + 1)).await?;
        let mut caught_up = false;
        let mut replayed = 0;
        // Replay in the foreground: the service answers nothing before it has the state.
        while !caught_up {
            match follow.next_where(&|subject| folded.wants(subject)).await {
                Some(Ok(Delivered::Item(item))) => {
                    replayed += u64::from(matches!(item, LogItem::Event(_)));
                    caught_up = folded.apply_item(log, item, filter, &shutdown).await;
                }
                Some(Ok(Delivered::Passed(seq))) => folded.pass(seq),
                Some(Err(error)) => return Err(error),
                // Serving from part of the log would answer wrongly: fail the start.
                None => {
                    return Err(osp_eventlog::Error::Unavailable {
                        operation: "replay the log",
                        reason: format!("the subscription to {filter} ended before it caught up"),
                    })
                }
            }
        }
        // Boxed: a start is awaited inside callers' futures, which would all carry its size.
        replayed += Box::pin(folded.reshare(log, filters, &shutdown)).await;
        let evicted = folded.evict();
        tracing::info!(filter, from, replayed, evicted, applied = *applied.borrow(), "projection caught up");
        let filters: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        let projection = Projection { folded: folded.clone(), applied, log: log.clone(), filters: filters.clone() };
        let snapshots = saver.map(|saver| Saving { saver, since: replayed, saving: None });
        let follower = tokio::spawn(keep_live(log.clone(), filters, folded, follow, snapshots, shutdown));
        Ok((projection, follower))
    }

    /// The view, for reading. Hold it briefly and never across an `.await`: the
    /// follower waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, V> {
        self.folded.view.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partitions its instance owns, when the view holds only those.
    pub fn owned(&self) -> Option<&Ownership> {
        self.folded.keeping.owned.as_ref()
    }

    /// The log it folds.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The view's listing index, if it keeps one, holding every event the view has applied
    /// (once [`Index::page`] has written what this stages).
    pub fn index(&self) -> Option<&Index> {
        let index = self.folded.keeping.index.as_deref()?;
        self.folded.stage_changed(&self.read(), index);
        Some(index)
    }

    /// `read` of the record of `aggregate`: the resident one, or one recalled from the
    /// log (through the view's cache of recalled records); `None` when the aggregate has
    /// no events. An event in its history that cannot be read is the error
    /// `Malformed`, naming it.
    pub async fn recall<R, T>(&self, aggregate: &AggregateRef, read: impl FnOnce(&R) -> T) -> Result<Option<T>>
    where
        R: Record,
        V: Keeps<R>,
    {
        let id = aggregate.id.as_str();
        let held = self.folded.holds(id);
        let cached = {
            let view = self.read();
            let resident = view.resident();
            match resident.get(id) {
                Some(record) if held => return Ok(Some(read(record))),
                _ => resident.recalled_record(id),
            }
        };
        if let Some(record) = cached {
            return Ok(Some(read(&record)));
        }
        let loaded = self.log.load::<R::Event>(aggregate).await?;
        if loaded.events.is_empty() {
            return Ok(None);
        }
        let mut record = R::default();
        for event in &loaded.events {
            record.apply(event);
        }
        let answer = read(&record);
        if record.finished() {
            self.read().resident().remember(id, Arc::new(record));
        }
        Ok(Some(answer))
    }

    /// The subjects of the events it reads.
    pub(crate) fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Every matching event up to this stream sequence has been applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Returns once the view has applied the event at `seq`, an event it reads (the
    /// executor's own append): no need to ask the log whether one is coming.
    pub async fn wait_applied(&self, seq: u64, within: Duration) -> Result<(), osp_protocol::Error> {
        let mut applied = self.applied.clone();
        let reached = matches!(tokio::time::timeout(within, applied.wait_for(|at| *at >= seq)).await, Ok(Ok(_)));
        match reached {
            true => Ok(()),
            false => Err(osp_protocol::Error::Lagging { wanted: seq, applied: self.applied() }),
        }
    }

    /// Returns once every matching event up to `seq` is applied, or fails with
    /// `Lagging` after `within`. A sequence beyond the log's end, or one of an event
    /// this view does not read, is answered from the log's own index, not waited for.
    pub async fn wait_for(&self, seq: u64, within: Duration) -> Result<(), osp_protocol::Error> {
        let deadline = tokio::time::Instant::now() + within;
        let mut applied = self.applied.clone();
        loop {
            let now = *applied.borrow_and_update();
            if now >= seq {
                return Ok(());
            }
            // The next matching event after what is applied: if there is none up to
            // `seq`, this view already holds everything `seq` stands for.
            let lookup = self.log.next_matching_any(&self.filters, now + 1);
            let next = match tokio::time::timeout_at(deadline, lookup).await {
                Ok(Ok(Some(next))) if next <= seq => next,
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(osp_protocol::Error::Unavailable { reason: e.to_string() }),
                Err(_) => return Err(osp_protocol::Error::Lagging { wanted: seq, applied: self.applied() }),
            };
            let reached = matches!(
                tokio::time::timeout_at(deadline, applied.wait_for(|applied| *applied >= next)).await,
                Ok(Ok(_))
            );
            if !reached {
                return Err(osp_protocol::Error::Lagging { wanted: seq, applied: self.applied() });
            }
        }
    }
}

impl<V: Snapshot> Projection<V> {
    /// Like [`start_on`](Self::start_on), starting from the newest valid snapshot of the
    /// view (when `snapshots.read`) and replaying only the events after it; then saving a
    /// snapshot every `snapshots.every` events applied. A snapshot that cannot be read or
    /// does not match is ignored with a warning: it is a cache, never the truth.
    pub async fn start_with(
        log: &EventLog,
        filters: &[&str],
        snapshots: Snapshots,
        shutdown: CancellationToken,
    ) -> Result<Projection<V>> {
        Projection::start_kept(log, filters, snapshots, Keeping::default(), shutdown).await
    }

    /// Like [`start_with`](Self::start_with), keeping what `keeping` says: finished
    /// aggregates evicted after `keeping.keep_finished`, and the listing index. A snapshot
    /// is used only if the index covers it (the index of a view restored from a snapshot
    /// must hold what the snapshot let go of).
    pub async fn start_kept(
        log: &EventLog,
        filters: &[&str],
        snapshots: Snapshots,
        keeping: Keeping,
        shutdown: CancellationToken,
    ) -> Result<Projection<V>> {
        let (projection, _follower) =
            Projection::start_followed(log, filters, snapshots, keeping, None, shutdown).await?;
        Ok(projection)
    }

    /// Like [`start_kept`](Self::start_kept), with the task that follows the log, which
    /// ends after `shutdown` once it has written what it keeps (a service waits for it).
    /// A view holding a share (`keeping.owned`) is saved and restored a partition at a time
    /// with `parts`, and never folds from the first event without them.
    pub(crate) async fn start_followed(
        log: &EventLog,
        filters: &[&str],
        snapshots: Snapshots,
        keeping: Keeping,
        parts: Option<Parts<V>>,
        shutdown: CancellationToken,
    ) -> Result<(Projection<V>, JoinHandle<()>)> {
        let owned: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        let at_most = match &keeping.index {
            Some(index) => index.covers().map_err(index_unavailable)?,
            None => u64::MAX,
        };
        // A view holding a share restores partitions as it gains them, not the whole view.
        let shared_out = keeping.owned.is_some();
        let restored = match snapshots.read && !shared_out {
            true => snapshot::newest_valid::<V>(log, &owned, at_most).await.unwrap_or_else(|error| {
                tracing::warn!(view = V::NAME, %error, "cannot look for snapshots; folding from the first event");
                None
            }),
            false => None,
        };
        let saver = (snapshots.every > 0 && (!shared_out || parts.is_some())).then_some(Saver {
            every: snapshots.every,
            encode: snapshot::encode::<V>,
            name: V::NAME,
            shape: V::SHAPE,
        });
        let parts = parts.filter(|_| shared_out);
        Projection::start_inner(log, filters, restored, saver, keeping, parts, shutdown).await
    }

    /// Saves a snapshot of the view as it is now; returns the sequence it covers. Not of a
    /// view holding a share: a part saved as the whole would be read as the whole.
    pub async fn save_snapshot(&self) -> Result<u64> {
        if self.folded.keeping.owned.is_some() {
            return Err(osp_eventlog::Error::Unavailable {
                operation: "save a snapshot",
                reason: "the view holds a share of the partitions; its partitions are saved as it goes".into(),
            });
        }
        let (seq, bytes) = {
            let view = self.read();
            self.folded.index_covers_all(&view)?;
            let seq = *self.folded.applied.borrow();
            (seq, snapshot::encode(&*view, seq, &self.filters, self.folded.last_event())?)
        };
        snapshot::save(&self.log, V::NAME, V::SHAPE, seq, &bytes).await?;
        Ok(seq)
    }
}

/// A view folded once from the first event matching `filters` up to `up_to` (the log's
/// end when `None`), with no follow and no snapshot: what a projection rebuilt from
/// scratch holds at that point (`osp log verify` compares it with the live one). Finished
/// aggregates are evicted as it goes, as in a projection, so a long history fits.
/// `progress` is called with (events applied, events still pending).
pub async fn fold<V: View>(
    log: &EventLog,
    filters: &[&str],
    up_to: Option<u64>,
    mut progress: impl FnMut(u64, u64),
) -> Result<V> {
    let folded = Folding::new(V::default(), 0, None, Keeping::default(), None);
    let mut follow = log.follow_any::<Recorded<V::Event>>(filters, Start::All).await?;
    let filter = filters.join(",");
    let never = CancellationToken::new();
    let mut applied = 0;
    while let Some(item) = follow.next().await {
        let item = item?;
        let seq = match &item {
            LogItem::Event(event) => event.seq,
            LogItem::Malformed(bad) => bad.seq,
            LogItem::CaughtUp(_) => break,
        };
        if up_to.is_some_and(|up_to| seq > up_to) {
            break;
        }
        applied += u64::from(matches!(item, LogItem::Event(_)));
        folded.apply_item(log, item, &filter, &never).await;
        progress(applied, follow.pending());
    }
    Ok(folded.view.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// How often finished aggregates are evicted while a view folds (a replay of a long
/// history stays as small as the live view).
const EVICT_EVERY_EVENTS: u64 = 4096;
/// The changed aggregates whose index entries are built and written together.
const INDEX_BATCH: usize = 1024;
/// How often a live view evicts and writes its index when the log is quiet.
const EVICT_EVERY: Duration = Duration::from_secs(1);
/// How long a view waits before it asks the log again for an evicted aggregate's history.
const RECALL_RETRY: Duration = Duration::from_millis(500);

impl<V: View> Folding<V> {
    /// With `keeping.owned`, no partition is loaded yet: each is taken in as it is gained.
    fn new(
        view: V,
        applied: u64,
        last_event: Option<(u64, EventHash)>,
        keeping: Keeping,
        parts: Option<Parts<V>>,
    ) -> Folding<V> {
        let count = keeping.owned.as_ref().map_or(0, |owned| owned.partitions().count() as usize);
        Folding {
            view: RwLock::new(view),
            applied: watch::Sender::new(applied),
            last_event: Mutex::new(last_event),
            since_evicted: AtomicU64::new(0),
            unindexed: Mutex::default(),
            loaded: (0..count).map(|_| AtomicBool::new(false)).collect(),
            indexed: (0..count).map(|_| AtomicBool::new(false)).collect(),
            gains: (0..count).map(|_| AtomicU64::new(0)).collect(),
            parts,
            restored: AtomicU64::new(0),
            keeping,
        }
    }

    /// The view reads the event stored on `subject`: one of an aggregate it holds.
    fn wants(&self, subject: &str) -> bool {
        self.keeping.owned.is_none() || self.holds(aggregate_id(subject))
    }

    /// The event at `seq` is another instance's: the view has applied the log that far.
    fn pass(&self, seq: u64) {
        if self.keeping.index.is_some() {
            let mut unindexed = self.unindexed();
            unindexed.covers = unindexed.covers.max(seq);
        }
        self.applied.send_if_modified(|applied| advance(applied, seq));
    }

    /// The view holds every event of the aggregate `id`.
    fn holds(&self, id: &str) -> bool {
        match &self.keeping.owned {
            Some(owned) => self.loaded[owned.partitions().of(id) as usize].load(Ordering::Acquire),
            None => true,
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, V> {
        self.view.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one step of the follow; true once caught up.
    async fn apply_item(
        &self,
        log: &EventLog,
        item: LogItem<Recorded<V::Event>>,
        filter: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let (seq, caught_up) = match item {
            LogItem::Event(event) if self.holds(event.envelope.aggregate.id.as_str()) => {
                self.apply_event(log, &event, shutdown).await;
                return false;
            }
            // Another instance's partition.
            LogItem::Event(event) => (event.seq, false),
            LogItem::Malformed(bad) => {
                // Skipped loudly: `osp log verify` names it; stopping here would stop the service.
                tracing::error!(seq = bad.seq, subject = %bad.subject, error = %bad.error, filter, "unreadable event skipped");
                (bad.seq, false)
            }
            LogItem::CaughtUp(seq) => (seq, true),
        };
        let _view = self.write();
        if self.keeping.index.is_some() {
            let mut unindexed = self.unindexed();
            unindexed.covers = unindexed.covers.max(seq);
        }
        self.applied.send_if_modified(|applied| advance(applied, seq));
        caught_up
    }

    async fn apply_event(&self, log: &EventLog, event: &Recorded<V::Event>, shutdown: &CancellationToken) {
        let seq = event.seq;
        let earlier = self.earlier_of(log, event, shutdown).await;
        let mut view = self.write();
        if let Some(earlier) = earlier {
            view.restore(&event.envelope.aggregate, &earlier);
        }
        view.apply(event);
        let mut batch_full = false;
        if self.keeping.index.is_some() {
            let mut unindexed = self.unindexed();
            match unindexed.aggregates.get_mut(&event.envelope.aggregate) {
                Some(last) => *last = seq,
                None => {
                    unindexed.aggregates.insert(event.envelope.aggregate.clone(), seq);
                }
            }
            unindexed.covers = unindexed.covers.max(seq);
            batch_full = unindexed.aggregates.len() >= INDEX_BATCH;
        }
        let mut last_event = self.last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A gained partition's history is folded after later events of others.
        if last_event.is_none_or(|(last, _)| last < seq) {
            *last_event = Some((seq, event.hash));
        }
        drop(last_event);
        self.applied.send_if_modified(|applied| advance(applied, seq));
        drop(view);
        if batch_full {
            self.write_index();
        }
        if self.since_evicted.fetch_add(1, Ordering::Relaxed) + 1 >= EVICT_EVERY_EVENTS {
            self.evict();
        }
    }

    /// The events of `event`'s aggregate before it, when the view has evicted them; asked
    /// of the log until it answers (or the view stops): applying the event to a state the
    /// view has forgotten would be wrong for good.
    async fn earlier_of(
        &self,
        log: &EventLog,
        event: &Recorded<V::Event>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Recorded<V::Event>>> {
        if !self.view.read().unwrap_or_else(|poisoned| poisoned.into_inner()).missing(event) {
            return None;
        }
        let aggregate = &event.envelope.aggregate;
        loop {
            match log.load::<V::Event>(aggregate).await {
                Ok(loaded) => return Some(loaded.events.into_iter().take_while(|e| e.seq < event.seq).collect()),
                Err(error @ osp_eventlog::Error::Malformed { .. }) => {
                    tracing::error!(%aggregate, %error, "an evicted aggregate's history cannot be read; applying its next event to nothing");
                    return Some(Vec::new());
                }
                Err(error) => tracing::warn!(%aggregate, %error, "cannot recall an evicted aggregate yet"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return Some(Vec::new()),
                () = tokio::time::sleep(RECALL_RETRY) => {}
            }
        }
    }

    /// Evicts what has been finished for longer than the view keeps it, once the index
    /// holds what the view changed (an evicted aggregate's entry cannot be built).
    fn evict(&self) -> usize {
        self.write_index();
        self.since_evicted.store(0, Ordering::Relaxed);
        let keep = i64::try_from(self.keeping.keep_finished.as_millis()).unwrap_or(i64::MAX);
        let before = Timestamp(Timestamp::now().millis().saturating_sub(keep));
        let evicted = self.write().evict(before);
        if evicted > 0 {
            tracing::debug!(evicted, "finished aggregates left memory");
        }
        evicted
    }

    fn unindexed(&self) -> MutexGuard<'_, Unindexed> {
        self.unindexed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds the entries of the aggregates `view` changed since the last batch and stages
    /// them in `index`.
    fn stage_changed(&self, view: &V, index: &Index) {
        let Unindexed { aggregates, covers } = std::mem::take(&mut *self.unindexed());
        for (aggregate, seq) in &aggregates {
            if let Some((id, entry)) = view.indexed(aggregate) {
                index.stage(id, entry, *seq, covers);
            }
        }
        index.advance(covers);
    }

    /// Writes what the view changed to the index (not durably); the entries are built under
    /// the view's read lock, and written outside it.
    fn write_index(&self) {
        let Some(index) = &self.keeping.index else { return };
        self.stage_changed(&self.view.read().unwrap_or_else(|poisoned| poisoned.into_inner()), index);
        if let Err(error) = index.flush(false) {
            tracing::error!(%error, "cannot write the listing index");
        }
    }

    /// The view stops: its index is written durably, so the next start of the instance
    /// resumes from a snapshot the index covers.
    fn stopped(&self) {
        let view = self.view.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = self.index_covers_all(&view) {
            tracing::error!(%error, "cannot write the listing index");
        }
    }

    /// Writes the index, durably, so it covers every event `view` (read-locked) holds
    /// (before a snapshot of the view is taken: the snapshot relies on it).
    fn index_covers_all(&self, view: &V) -> Result<()> {
        match &self.keeping.index {
            Some(index) => {
                self.stage_changed(view, index);
                index.flush(true).map_err(index_unavailable)
            }
            None => Ok(()),
        }
    }
}

fn index_unavailable(error: crate::index::IndexError) -> osp_eventlog::Error {
    osp_eventlog::Error::Unavailable { operation: "keep the listing index", reason: error.to_string() }
}

/// A projection's snapshot saving: events applied since the last save, and the save in
/// flight (at most one: a slow store skips saves rather than piling them up).
struct Saving<V> {
    saver: Saver<V>,
    since: u64,
    saving: Option<JoinHandle<()>>,
}

impl<V: View> Saving<V> {
    /// Counts an applied step; saves a snapshot when enough events have been applied.
    /// The state is encoded here, under the view's read lock (the follower waits for
    /// it); the upload runs on its own task.
    fn after(&mut self, log: &EventLog, filters: &[String], folded: &Folding<V>, applied_event: bool) {
        self.since += u64::from(applied_event);
        if self.since < self.saver.every || self.saving.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        self.since = 0;
        let name = self.saver.name;
        let encoded = {
            let view = folded.view.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = folded.index_covers_all(&view) {
                return tracing::error!(view = name, %error, "no snapshot: the index cannot cover it");
            }
            let (seq, last_event) = (*folded.applied.borrow(), folded.last_event());
            let encoded = match (&folded.parts, folded.loaded_share()) {
                // A view holding a share is saved a partition at a time.
                (Some(parts), Some(share)) => share
                    .iter()
                    .map(|p| {
                        let bytes = (parts.encode)(&view, share.partitions(), p, seq, filters, last_event)?;
                        Ok((snapshot::part_name(name, share.partitions(), p), bytes))
                    })
                    .collect::<Result<Vec<_>>>(),
                _ => (self.saver.encode)(&view, seq, filters, last_event).map(|bytes| vec![(name.to_owned(), bytes)]),
            };
            encoded.map(|encoded| (seq, encoded))
        };
        let (seq, encoded) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => return tracing::error!(view = name, %error, "cannot encode a snapshot"),
        };
        let (log, shape) = (log.clone(), self.saver.shape);
        self.saving = Some(tokio::spawn(async move {
            for (name, bytes) in encoded {
                if let Err(error) = snapshot::save(&log, &name, shape, seq, &bytes).await {
                    tracing::warn!(view = name, seq, %error, "cannot save a snapshot");
                }
            }
        }));
    }
}

/// The aggregate id in an event's subject (`osp.v1.evt.<kind>.<id>`): its last token.
pub(crate) fn aggregate_id(subject: &str) -> &str {
    subject.rsplit_once('.').map_or(subject, |(_, id)| id)
}

/// The next change of the partitions owned; never, for a view holding every aggregate.
async fn changed(
    owned: &mut Option<watch::Receiver<BTreeSet<u32>>>,
) -> std::result::Result<(), watch::error::RecvError> {
    match owned {
        Some(owned) => owned.changed().await,
        None => std::future::pending().await,
    }
}

fn advance(applied: &mut u64, seq: u64) -> bool {
    let moved = seq > *applied;
    *applied = (*applied).max(seq);
    moved
}

/// Follows the log until shutdown, reopening from the last applied sequence if the
/// subscription ever ends or fails, or stalls (see [`Stall`]); saves snapshots if asked.
async fn keep_live<V: View>(
    log: EventLog,
    filters: Vec<String>,
    folded: Arc<Folding<V>>,
    mut follow: osp_eventlog::Follow<Recorded<V::Event>>,
    mut snapshots: Option<Saving<V>>,
    shutdown: CancellationToken,
) {
    let mut checks = tokio::time::interval(STALL_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut evictions = tokio::time::interval(EVICT_EVERY);
    evictions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = Stall::default();
    let filter = filters.join(",");
    let subjects: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut owned = folded.keeping.owned.as_ref().map(Ownership::changes);
    let wanted = |subject: &str| folded.wants(subject);
    folded.reshare(&log, &subjects, &shutdown).await;
    // The start-up replay counts: a long one is worth saving at once.
    if let Some(snapshots) = &mut snapshots {
        snapshots.after(&log, &filters, &folded, false);
    }
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return folded.stopped(),
            delivered = follow.next_where(&wanted) => match delivered {
                Some(Ok(Delivered::Passed(seq))) => {
                    folded.pass(seq);
                    continue;
                }
                Some(Ok(Delivered::Item(item))) => Some(Ok(item)),
                Some(Err(error)) => Some(Err(error)),
                None => None,
            },
            _ = evictions.tick() => {
                folded.evict();
                // A gained partition whose history could not be read is tried again.
                folded.reshare(&log, &subjects, &shutdown).await;
                continue;
            }
            Ok(()) = changed(&mut owned) => {
                folded.reshare(&log, &subjects, &shutdown).await;
                continue;
            }
            _ = checks.tick() => {
                let at = *folded.applied.borrow();
                if !stall.check(&log, &filters, at).await {
                    continue;
                }
                tracing::warn!(%filter, applied = at, "the log has events this view has not received; reopening");
                None
            }
        };
        match item {
            Some(Ok(item)) => {
                let event = matches!(item, LogItem::Event(_));
                folded.apply_item(&log, item, &filter, &shutdown).await;
                if let Some(snapshots) = &mut snapshots {
                    snapshots.after(&log, &filters, &folded, event);
                }
                continue;
            }
            Some(Err(error)) => tracing::warn!(%error, %filter, "following the log failed; reopening"),
            None => tracing::debug!(%filter, "reopening the log subscription"),
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return folded.stopped(),
                () = tokio::time::sleep(REOPEN_AFTER) => {}
            }
            let from = *folded.applied.borrow() + 1;
            match log.follow_any(&subjects, Start::Sequence(from)).await {
                Ok(reopened) => {
                    follow = reopened;
                    stall = Stall::default();
                    break;
                }
                Err(error) => tracing::warn!(%error, %filter, "cannot reopen the log subscription yet"),
            }
        }
    }
}

/// How often a follower that applied nothing checks the log for events it missed.
const STALL_CHECK: Duration = Duration::from_secs(3);

/// Stall detection. An ordered consumer whose server died is recreated by the client,
/// but seen in a cluster losing a node, the new one could sit idle (heartbeats, no
/// messages) while the log held newer matching events, leaving the view stale for half
/// a minute. So a follower that applied nothing since the last check asks the log for
/// the next matching event; if the same one is still missing at the next check, the
/// follower is reopened from the last applied sequence. Costs one point read per check,
/// only while idle.
#[derive(Default)]
struct Stall {
    /// The applied sequence at the last check.
    applied: u64,
    /// A matching event past it that the log held at the last check.
    missing: Option<u64>,
}

impl Stall {
    /// True when the follower should be reopened.
    async fn check(&mut self, log: &EventLog, filters: &[String], applied: u64) -> bool {
        if applied != self.applied {
            *self = Stall { applied, missing: None };
            return false;
        }
        let next = match log.next_matching_any(filters, applied + 1).await {
            Ok(next) => next,
            Err(error) => {
                tracing::debug!(%error, ?filters, "cannot check the log for missed events now");
                return false;
            }
        };
        let stalled = next.is_some() && next == self.missing;
        self.missing = next;
        stalled
    }
}
