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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osp_protocol::{derived_event_id, AggregateRef, Timestamp};
use tokio::sync::OwnedMutexGuard;

use crate::{Aggregate, Error, EventLog, Folded, NewEvent, Projection, View};

/// A view that holds the folded state of every aggregate of type `A`.
pub trait Holds<A: Aggregate>: View<Event = A::Event> {
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
    /// The aggregate's state afterwards.
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
pub struct Executor<A, V> {
    log: EventLog,
    projection: Projection<V>,
    locks: AggregateLocks,
    marker: std::marker::PhantomData<fn() -> A>,
}

impl<A: Aggregate, V: Holds<A>> Executor<A, V> {
    /// An executor over `projection`, appending to `log`.
    pub fn new(log: EventLog, projection: Projection<V>) -> Executor<A, V> {
        Executor { log, projection, locks: AggregateLocks::default(), marker: std::marker::PhantomData }
    }

    /// The projection it decides from.
    pub fn projection(&self) -> &Projection<V> {
        &self.projection
    }

    /// Decides `command` on `aggregate` and appends the outcome. Commands on one
    /// aggregate are taken one at a time in this instance (in the order they arrive);
    /// across instances, optimistic concurrency keeps them consistent.
    #[tracing::instrument(skip_all, fields(%aggregate, command_id = %meta.id))]
    pub async fn execute(
        &self,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Executed<A>, Refusal> {
        let _turn = self.locks.lock(aggregate).await;
        let mut folded = self.projection.read().folded(aggregate).cloned().unwrap_or_default();
        let cause = format!("{aggregate}/{}", meta.id);
        for _ in 0..MAX_CONFLICTS {
            if let Some(seq) = folded.applied(&meta.id) {
                tracing::debug!(seq, "command applied before; not again");
                return Ok(Executed { state: folded, seq, appended: 0 });
            }
            let now = Timestamp::now();
            let events = A::decide(&folded.state, command, now).map_err(Refusal::Rejected)?;
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
                    if self.projection.wait_for(seq, SETTLE_WITHIN).await.is_err() {
                        tracing::warn!(seq, "the projection has not applied this instance's own append yet");
                    }
                    return Ok(Executed { state: folded, seq, appended: appended.events.len() });
                }
                Err(error) if error.is_conflict() => {
                    tracing::debug!(%error, "another writer decided first; deciding again on the log's state");
                    let loaded = self.log.load::<A::Event>(aggregate).await.map_err(Refusal::Failed)?;
                    folded = Folded::from_events(&loaded.events);
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
}

/// One turn at a time per aggregate, in this process. Entries are removed when nobody
/// holds or waits for them, so the map stays as small as the work in flight.
#[derive(Default)]
struct AggregateLocks {
    locks: Mutex<HashMap<AggregateRef, Arc<tokio::sync::Mutex<()>>>>,
}

struct Turn<'a> {
    locks: &'a AggregateLocks,
    aggregate: AggregateRef,
    _held: OwnedMutexGuard<()>,
}

impl AggregateLocks {
    async fn lock(&self, aggregate: &AggregateRef) -> Turn<'_> {
        let lock = self.map().entry(aggregate.clone()).or_default().clone();
        Turn { locks: self, aggregate: aggregate.clone(), _held: lock.lock_owned().await }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<AggregateRef, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // Two references: the map's and the one this turn holds. More means a waiter.
        if map.get(&self.aggregate).is_some_and(|lock| Arc::strong_count(lock) <= 2) {
            map.remove(&self.aggregate);
        }
    }
}
