//! Deciding and appending: the one loop every command of every service goes through.
//!
//! Take the aggregate's state from the projection, ask [`Aggregate::decide`], append
//! what it decided with the head it decided on. When another instance appended first
//! (a conflict), load the aggregate from the log and decide again: two instances never
//! both win a decision, and neither loses one.
//!
//! Event ids are derived from the command's id, so a decision made again after a crash
//! yields the same ids (the stream deduplicates them); and an aggregate remembers the
//! commands behind its latest events, so a command delivered again after the dedupe
//! window is recognised as applied instead of applied twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use osp_protocol::{derived_event_id, AggregateRef, Timestamp};
use tokio::sync::OwnedMutexGuard;

use crate::{Aggregate, Folded, Projection, View};
use osp_eventlog::{Error, EventLog, NewEvent};

/// A view that holds the folded state of every aggregate of type `A`. It may read more
/// than `A`'s events (the context service folds the scheduler's runs into the same view,
/// so one `Osp-Min-Seq` covers both).
pub trait Holds<A: Aggregate>: View {
    /// The aggregate's state as applied so far, if it has any events.
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<A>>;
}

/// Who asked, and the facts of the asking that decide the event ids.
#[derive(Clone, Debug)]
pub struct CommandMeta {
    /// The command's id: its idempotency key, recorded as the events' causation id.
    pub id: String,
    /// When the command was stored in the inbox: the time part of the event ids, the
    /// same on every redelivery.
    pub received_at: Timestamp,
    /// Who sent it.
    pub actor: String,
    /// The root run it belongs to, if any.
    pub correlation_id: Option<String>,
}

/// What a command came to.
#[derive(Clone, Debug)]
pub struct Executed<A> {
    /// The aggregate's state just after the command: after its events, or, for a
    /// command applied before, as it was right after that first time.
    pub state: Folded<A>,
    /// The sequence of the command's last event (or of the aggregate's head when it
    /// changed nothing): the caller's read-your-writes token.
    pub seq: u64,
    /// Events appended now: 0 when there was nothing to do or it was done before.
    pub appended: usize,
}

/// Why a command came to nothing.
#[derive(Debug)]
pub enum Refusal {
    /// The command is at fault: tell the sender, record it, do not retry.
    Rejected(osp_protocol::Error),
    /// We are (the log could not be reached): try again later.
    Failed(Error),
}

/// Conflicts one command may meet before it is given up for now (and redelivered).
const MAX_CONFLICTS: usize = 32;
/// How long the executor waits for its own events to reach the projection, so the next
/// command on the same aggregate starts from them.
const SETTLE_WITHIN: Duration = Duration::from_secs(2);

/// Decides and appends commands for aggregates of type `A` held in view `V`.
pub struct Executor<A: Aggregate, V> {
    log: EventLog,
    projection: Projection<V>,
    locks: Arc<AggregateLocks<Folded<A>>>,
}

/// A place in an aggregate's queue: commands on one aggregate are decided one at a
/// time, in the order their places were taken ([`Executor::queue`]).
pub struct Place<A: Aggregate> {
    turn: Pin<Box<dyn Future<Output = Turn<Folded<A>>> + Send>>,
}

impl<A: Aggregate, V: Holds<A>> Executor<A, V> {
    /// An executor over `projection`, appending to `log`.
    pub fn new(log: EventLog, projection: Projection<V>) -> Executor<A, V> {
        Executor { log, projection, locks: Arc::default() }
    }

    /// The projection it decides from.
    pub fn projection(&self) -> &Projection<V> {
        &self.projection
    }

    /// Takes the next place in `aggregate`'s queue, now: call it in the order commands
    /// arrive, then [`execute`](Self::execute) them in any order or concurrently, and
    /// each is decided in its turn.
    pub async fn queue(&self, aggregate: &AggregateRef) -> Place<A> {
        let mut turn: Pin<Box<dyn Future<Output = Turn<Folded<A>>> + Send>> =
            Box::pin(self.locks.clone().lock(aggregate.clone()));
        // Polled once, the request for the lock is in the (FIFO) queue from this moment.
        if let Poll::Ready(turn) = futures::poll!(turn.as_mut()) {
            return Place { turn: Box::pin(std::future::ready(turn)) };
        }
        Place { turn }
    }

    /// Decides `command` on `aggregate` in its turn and appends the outcome. Across
    /// instances, optimistic concurrency keeps decisions consistent.
    ///
    /// The turn passes the state it leaves to the next command in line for the
    /// aggregate, so a queue of commands on one aggregate is decided back to back, each
    /// from the state its predecessor appended, without waiting for the projection to
    /// apply each event; the caller still returns only once the projection has applied
    /// its own events (or [`SETTLE_WITHIN`] passed), so a reply is read-your-writes.
    #[tracing::instrument(skip_all, fields(%aggregate, command_id = %meta.id))]
    pub async fn execute(
        &self,
        place: Place<A>,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Executed<A>, Refusal> {
        let mut turn = place.turn.await;
        let executed = self.decide_in_turn(&mut turn, aggregate, command, meta).await;
        drop(turn);
        if let Ok(executed) = &executed {
            if executed.appended > 0 && self.projection.wait_applied(executed.seq, SETTLE_WITHIN).await.is_err() {
                tracing::warn!(seq = executed.seq, "the projection has not applied this instance's own append yet");
            }
        }
        executed
    }

    /// The decision loop of [`Executor::execute`], in the aggregate's turn: the state is
    /// the newer of the projection's and the one the previous command in line left.
    async fn decide_in_turn(
        &self,
        turn: &mut Turn<Folded<A>>,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Executed<A>, Refusal> {
        let mut folded = {
            let view = self.projection.read();
            match (view.folded(aggregate), turn.state.as_ref()) {
                (Some(viewed), Some(left)) if left.head.seq > viewed.head.seq => left.clone(),
                (Some(viewed), _) => viewed.clone(),
                (None, left) => left.cloned().unwrap_or_default(),
            }
        };
        let mut fresh = false;
        let cause = format!("{aggregate}/{}", meta.id);
        for _ in 0..MAX_CONFLICTS {
            if let Some(seq) = folded.applied(&meta.id) {
                tracing::debug!(seq, "command applied before; not again");
                let state = self.state_at(aggregate, folded, seq).await?;
                return Ok(Executed { state, seq, appended: 0 });
            }
            let now = Timestamp::now();
            let decided = A::decide(&folded.state, command, now);
            // Only an append checks the state its decision rests on. A refusal or a
            // no-op appends nothing, so before one is final the state is checked against
            // the log: the projection may not have applied the latest events yet.
            let appends_nothing = decided.as_ref().map_or(true, Vec::is_empty);
            if appends_nothing && !fresh && !self.is_head(aggregate, &folded).await? {
                folded = self.load(aggregate).await?;
                fresh = true;
                continue;
            }
            let events = decided.map_err(Refusal::Rejected)?;
            if events.is_empty() {
                let seq = folded.head.seq;
                return Ok(Executed { state: folded, seq, appended: 0 });
            }
            let new_events = events
                .into_iter()
                .enumerate()
                .map(|(index, payload)| NewEvent {
                    id: derived_event_id(&cause, index as u32, meta.received_at),
                    occurred_at: now,
                    actor: meta.actor.clone(),
                    correlation_id: meta.correlation_id.clone(),
                    causation_id: Some(meta.id.clone()),
                    payload,
                })
                .collect();
            match self.log.append(aggregate, &folded.head, new_events).await {
                Ok(appended) => {
                    for event in &appended.events {
                        folded.apply(event);
                    }
                    let seq = appended.head.seq;
                    // Handed over only when another command waits (saves a clone per
                    // command otherwise); never left stale for one that comes later.
                    *turn.state = turn.has_waiters().then(|| folded.clone());
                    return Ok(Executed { state: folded, seq, appended: appended.events.len() });
                }
                Err(error) if error.is_conflict() => {
                    tracing::debug!(%error, "another writer decided first; deciding again on the log's state");
                    folded = self.load(aggregate).await?;
                    fresh = true;
                }
                Err(Error::Protocol(error)) => return Err(Refusal::Rejected(error)),
                Err(error) => return Err(Refusal::Failed(error)),
            }
        }
        Err(Refusal::Failed(Error::Unavailable {
            operation: "decide",
            reason: format!("{aggregate} changed under {MAX_CONFLICTS} decisions in a row"),
        }))
    }

    /// Decides one of the service's own commands (a fired timer, a fact read from the
    /// log) on `aggregate`, taking its place in the aggregate's queue now. `meta.id`
    /// names the decision the same way on every instance, so when several take it at
    /// once it is recorded once. Fails only when the log could not be reached (then the
    /// caller retries); a refusal is logged and is not an error, since retrying it would
    /// change nothing.
    pub async fn decide_own(
        &self,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Option<Executed<A>>, Error> {
        let place = self.queue(aggregate).await;
        match self.execute(place, aggregate, command, meta).await {
            Ok(executed) => {
                match executed.appended {
                    0 => tracing::debug!(%aggregate, command_id = %meta.id, "nothing to do"),
                    _ => tracing::info!(%aggregate, command_id = %meta.id, seq = executed.seq, "decided"),
                }
                Ok(Some(executed))
            }
            Err(Refusal::Rejected(error)) => {
                tracing::warn!(%aggregate, command_id = %meta.id, %error, "own decision refused");
                Ok(None)
            }
            Err(Refusal::Failed(error)) => {
                tracing::warn!(%aggregate, command_id = %meta.id, %error, "could not decide now");
                Err(error)
            }
        }
    }

    /// True when `folded` ends where the log's history of `aggregate` ends (asked of the
    /// stream leader).
    async fn is_head(&self, aggregate: &AggregateRef, folded: &Folded<A>) -> Result<bool, Refusal> {
        let last = self.log.last_of(&aggregate.subject()).await.map_err(Refusal::Failed)?;
        Ok(last == folded.head.seq)
    }

    async fn load(&self, aggregate: &AggregateRef) -> Result<Folded<A>, Refusal> {
        let loaded = self.log.load::<A::Event>(aggregate).await.map_err(unreadable)?;
        Ok(Folded::from_events(&loaded.events))
    }

    /// The state right after the event at `seq`: what a command applied before answers.
    async fn state_at(&self, aggregate: &AggregateRef, folded: Folded<A>, seq: u64) -> Result<Folded<A>, Refusal> {
        if folded.head.seq == seq {
            return Ok(folded);
        }
        let loaded = self.log.load::<A::Event>(aggregate).await.map_err(unreadable)?;
        Ok(Folded::from_events(loaded.events.iter().take_while(|event| event.seq <= seq)))
    }
}

/// Why a history could not be loaded: an event in it that cannot be read is the command's
/// refusal (`damaged`, naming it: no redelivery can read it either), anything else ours.
fn unreadable(error: Error) -> Refusal {
    match error {
        Error::Malformed { .. } => Refusal::Rejected(crate::projection::unreadable(error)),
        other => Refusal::Failed(other),
    }
}

/// One turn at a time per aggregate, in this process, each turn passing the state it
/// left to the next (`S`, the aggregate's folded state). Entries are removed when nobody
/// holds or waits for them, so the map stays as small as the work in flight.
struct AggregateLocks<S> {
    locks: Mutex<HashMap<AggregateRef, Slot<S>>>,
}

/// An aggregate's lock, and the state the last turn left in it.
type Slot<S> = Arc<tokio::sync::Mutex<Option<S>>>;

impl<S> Default for AggregateLocks<S> {
    fn default() -> Self {
        AggregateLocks { locks: Mutex::default() }
    }
}

/// An aggregate's turn, held until dropped, with the state the previous turn left.
struct Turn<S> {
    locks: Arc<AggregateLocks<S>>,
    aggregate: AggregateRef,
    state: OwnedMutexGuard<Option<S>>,
}

impl<S> AggregateLocks<S> {
    async fn lock(self: Arc<Self>, aggregate: AggregateRef) -> Turn<S> {
        let lock = self.map().entry(aggregate.clone()).or_default().clone();
        let state = lock.lock_owned().await;
        Turn { locks: self, aggregate, state }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<AggregateRef, Slot<S>>> {
        self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> Turn<S> {
    /// Whether another command waits for this aggregate (only then is the state worth
    /// handing over). References to the lock: the map's, this turn's, one per waiter.
    fn has_waiters(&self) -> bool {
        Arc::strong_count(OwnedMutexGuard::mutex(&self.state)) > 2
    }
}

impl<S> Drop for Turn<S> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        if !self.has_waiters() {
            map.remove(&self.aggregate);
        }
    }
}
