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

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use osp_protocol::{EventHash, EventPayload};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::snapshot::{self, LastEvent, Restored, Snapshot, Snapshots};
use osp_eventlog::{EventLog, LogItem, Recorded, Result, Start};

/// A read model that events are applied to, in log order.
pub trait View: Default + Send + Sync + 'static {
    /// The events it reads.
    type Event: EventPayload + Send + Sync + 'static;
    /// Applies the next event. Must not fail: a fact that cannot be applied is a bug in
    /// the view, not in the log.
    fn apply(&mut self, event: &Recorded<Self::Event>);
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
        Projection::start_inner(log, filters, None, None, shutdown).await
    }

    async fn start_inner(
        log: &EventLog,
        filters: &[&str],
        restored: Option<Restored<V>>,
        saver: Option<Saver<V>>,
        shutdown: CancellationToken,
    ) -> Result<Projection<V>> {
        let (view, from, last_event) = match restored {
            Some(restored) => (restored.view, restored.seq, restored.last_event),
            None => (V::default(), 0, None),
        };
        let (applied_tx, applied) = watch::channel(from);
        let folded =
            Arc::new(Folding { view: RwLock::new(view), applied: applied_tx, last_event: Mutex::new(last_event) });
        let filter = filters.join(",");
        let filter = filter.as_str();
        let mut follow = log.follow_any::<Recorded<V::Event>>(filters, Start::Sequence(from + 1)).await?;
        let mut caught_up = false;
        let mut replayed = 0;
        // Replay in the foreground: the service answers nothing before it has the state.
        while !caught_up {
            match follow.next().await {
                Some(Ok(item)) => {
                    replayed += u64::from(matches!(item, LogItem::Event(_)));
                    caught_up = apply_item(&folded, item, filter);
                }
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
        tracing::info!(filter, from, replayed, applied = *applied.borrow(), "projection caught up");
        let filters: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        let projection = Projection { folded: folded.clone(), applied, log: log.clone(), filters: filters.clone() };
        let snapshots = saver.map(|saver| Saving { saver, since: replayed, saving: None });
        tokio::spawn(keep_live(log.clone(), filters, folded, follow, snapshots, shutdown));
        Ok(projection)
    }

    /// The view, for reading. Hold it briefly and never across an `.await`: the
    /// follower waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, V> {
        self.folded.view.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The log it folds.
    pub fn log(&self) -> &EventLog {
        &self.log
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
        let owned: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        let restored = match snapshots.read {
            true => snapshot::newest_valid::<V>(log, &owned).await.unwrap_or_else(|error| {
                tracing::warn!(view = V::NAME, %error, "cannot look for snapshots; folding from the first event");
                None
            }),
            false => None,
        };
        let saver = (snapshots.every > 0).then_some(Saver {
            every: snapshots.every,
            encode: snapshot::encode::<V>,
            name: V::NAME,
            shape: V::SHAPE,
        });
        Projection::start_inner(log, filters, restored, saver, shutdown).await
    }

    /// Saves a snapshot of the view as it is now; returns the sequence it covers.
    pub async fn save_snapshot(&self) -> Result<u64> {
        let (seq, bytes) = {
            let view = self.read();
            let seq = *self.folded.applied.borrow();
            (seq, snapshot::encode(&*view, seq, &self.filters, self.folded.last_event())?)
        };
        snapshot::save(&self.log, V::NAME, V::SHAPE, seq, &bytes).await?;
        Ok(seq)
    }
}

/// A view folded once from the first event matching `filters` up to `up_to` (the log's
/// end when `None`), with no follow and no snapshot: what a projection rebuilt from
/// scratch holds at that point (`osp log verify` compares it with the live one).
/// `progress` is called with (events applied, events still pending).
pub async fn fold<V: View>(
    log: &EventLog,
    filters: &[&str],
    up_to: Option<u64>,
    mut progress: impl FnMut(u64, u64),
) -> Result<V> {
    let mut view = V::default();
    let mut follow = log.follow_any::<Recorded<V::Event>>(filters, Start::All).await?;
    let mut applied = 0;
    while let Some(item) = follow.next().await {
        match item? {
            LogItem::Event(event) if up_to.is_some_and(|up_to| event.seq > up_to) => break,
            LogItem::Event(event) => {
                view.apply(&event);
                applied += 1;
                progress(applied, follow.pending());
            }
            LogItem::Malformed(bad) if up_to.is_some_and(|up_to| bad.seq > up_to) => break,
            LogItem::Malformed(bad) => {
                tracing::warn!(seq = bad.seq, subject = %bad.subject, error = %bad.error, "unreadable event skipped")
            }
            LogItem::CaughtUp(_) => break,
        }
    }
    Ok(view)
}

/// Applies one step of the follow; true once caught up.
fn apply_item<V: View>(folded: &Folding<V>, item: LogItem<Recorded<V::Event>>, filter: &str) -> bool {
    match item {
        LogItem::Event(event) => {
            let seq = event.seq;
            let mut view = folded.view.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            view.apply(&event);
            *folded.last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((seq, event.hash));
            folded.applied.send_if_modified(|applied| advance(applied, seq));
            false
        }
        LogItem::Malformed(bad) => {
            // Skipped loudly: `osp log verify` names it; stopping here would stop the service.
            tracing::error!(seq = bad.seq, subject = %bad.subject, error = %bad.error, filter, "unreadable event skipped");
            let _view = folded.view.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            folded.applied.send_if_modified(|applied| advance(applied, bad.seq));
            false
        }
        LogItem::CaughtUp(seq) => {
            let _view = folded.view.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            folded.applied.send_if_modified(|applied| advance(applied, seq));
            true
        }
    }
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
        let encoded = {
            let view = folded.view.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let seq = *folded.applied.borrow();
            (self.saver.encode)(&view, seq, filters, folded.last_event()).map(|bytes| (seq, bytes))
        };
        let (seq, bytes) = match encoded {
            Ok(encoded) => encoded,
            Err(error) => return tracing::error!(view = self.saver.name, %error, "cannot encode a snapshot"),
        };
        let (log, name, shape) = (log.clone(), self.saver.name, self.saver.shape);
        self.saving = Some(tokio::spawn(async move {
            if let Err(error) = snapshot::save(&log, name, shape, seq, &bytes).await {
                tracing::warn!(view = name, seq, %error, "cannot save a snapshot");
            }
        }));
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
    let mut stall = Stall::default();
    let filter = filters.join(",");
    let subjects: Vec<&str> = filters.iter().map(String::as_str).collect();
    // The start-up replay counts: a long one is worth saving at once.
    if let Some(snapshots) = &mut snapshots {
        snapshots.after(&log, &filters, &folded, false);
    }
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = follow.next() => item,
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
                apply_item(&folded, item, &filter);
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
                () = shutdown.cancelled() => return,
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
