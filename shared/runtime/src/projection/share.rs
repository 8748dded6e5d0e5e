//! A view holding a share of the partitions ([`Keeping::owned`]): what it does when its
//! share changes, and how it restores its partitions' snapshots.
//!
//! A partition that moves away is forgotten ([`View::forget`]). One that is gained is
//! taken in from its newest snapshot, when the view is [`Partitioned`] and one holds up
//! ([`crate::snapshot`]), and the partition's events after that are applied up to where
//! the view is, with the follow paused; the follow brings the rest. Until then the
//! partition is not *loaded*: queries and commands about its aggregates read them from
//! the log.
//!
//! A partition taken in from a snapshot is not yet *indexed*: the aggregates the
//! snapshot had let go of are not in this instance's listing index. Their entries are
//! built in the background, from the partition's history up to the snapshot (an entry is
//! never replaced by one of an earlier event: [`crate::Indexed`]); until then the
//! partition is left out of [`Projection::share`], so a query over every aggregate waits
//! for it ([`crate::gather`]) while decisions about it need not.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::FutureExt;
use osp_protocol::Partitions;
use tokio_util::sync::CancellationToken;

use super::{aggregate_id, Folding, Keeping, Projection, View, RECALL_RETRY};
use crate::ownership::Share;
use crate::snapshot::{self, LastEvent, Partitioned, Restored, Snapshots};
use osp_eventlog::{Delivered, EventLog, LogItem, Recorded, Result, Start};

/// Restores the newest snapshots of some partitions: (the log, P, the partitions, the
/// view's filters, the sequence they may cover at most).
type Restore<V> =
    fn(EventLog, Partitions, Vec<u32>, Vec<String>, u64) -> BoxFuture<'static, Result<Vec<(u32, Restored<V>)>>>;
/// Encodes what a view holds of one partition as its snapshot ([`snapshot::encode_part`]).
pub(super) type EncodePart<V> = fn(&V, Partitions, u32, u64, &[String], LastEvent) -> Result<Vec<u8>>;

/// How a [`Partitioned`] view saves and restores its partitions' snapshots.
pub(crate) struct Parts<V> {
    /// Restore a gained partition from its snapshot (else fold it from the first event).
    read: bool,
    restore: Restore<V>,
    absorb: fn(&mut V, V),
    pub(super) encode: EncodePart<V>,
}

impl<V: Partitioned> Parts<V> {
    pub(crate) fn of(snapshots: Snapshots) -> Parts<V> {
        Parts {
            read: snapshots.read,
            restore: |log, partitions, wanted, filters, at_most| {
                async move { snapshot::newest_parts::<V>(&log, partitions, &wanted, &filters, at_most).await }.boxed()
            },
            absorb: V::absorb,
            encode: snapshot::encode_part::<V>,
        }
    }
}

impl<V: View> Projection<V> {
    /// The partitions the view holds every aggregate of, in memory and in its listing
    /// index: all of them unless it holds a share ([`Keeping::owned`]); a partition
    /// gained is in it once its history is folded and indexed.
    pub fn share(&self) -> Share {
        let folded = &self.folded;
        match &folded.keeping.owned {
            None => Share::whole(Partitions::ONE),
            Some(owned) => {
                let partitions = owned.partitions();
                let held = |p: &u32| folded.loaded(*p) && folded.indexed[*p as usize].load(Ordering::Acquire);
                Share::new(partitions, partitions.all().filter(held))
            }
        }
    }

    /// How many partitions this view has gained and taken in from a snapshot, rather than
    /// folding their history from the first event.
    pub fn partitions_restored(&self) -> u64 {
        self.folded.restored.load(Ordering::Relaxed)
    }
}

impl<V: View> Folding<V> {
    pub(super) fn loaded(&self, partition: u32) -> bool {
        self.loaded[partition as usize].load(Ordering::Acquire)
    }

    /// The partitions loaded: what its snapshots are saved of.
    pub(super) fn loaded_share(&self) -> Option<Share> {
        let partitions = self.keeping.owned.as_ref()?.partitions();
        Some(Share::new(partitions, partitions.all().filter(|p| self.loaded(*p))))
    }

    /// Follows the partitions the instance owns: forgets those that moved away, takes in
    /// those gained (see the module's doc); returns how many events it applied. A history
    /// that cannot be read now is folded at the next call.
    pub(super) async fn reshare(
        self: &Arc<Self>,
        log: &EventLog,
        filters: &[&str],
        shutdown: &CancellationToken,
    ) -> u64 {
        let Some(owned) = &self.keeping.owned else { return 0 };
        let partitions = owned.partitions();
        let now = owned.owned();
        let lost: Vec<u32> = partitions.all().filter(|p| self.loaded(*p) && !now.contains(p)).collect();
        if !lost.is_empty() {
            let mut view = self.write();
            for p in &lost {
                self.loaded[*p as usize].store(false, Ordering::Release);
                self.indexed[*p as usize].store(false, Ordering::Release);
            }
            view.forget(&Share::new(partitions, lost.iter().copied()));
            tracing::info!(
                view = std::any::type_name::<V>(),
                ?lost,
                "partitions moved away; their aggregates forgotten"
            );
        }
        let gained: Vec<u32> = now.into_iter().filter(|p| !self.loaded(*p)).collect();
        if gained.is_empty() {
            return 0;
        }
        let up_to = *self.applied.borrow();
        let from = self.restore(log, filters, partitions, &gained, up_to).await;
        let folded = match self.fold_partitions(log, filters, &from, up_to, shutdown).await {
            Ok(folded) => folded,
            Err(error) => {
                // What was taken in from snapshots goes too: the next try takes it in again.
                self.write().forget(&Share::new(partitions, gained.iter().copied()));
                tracing::warn!(%error, ?gained, "cannot fold gained partitions yet");
                return 0;
            }
        };
        let mut unindexed = Vec::new();
        for (p, after) in &from {
            let gain = self.gains[*p as usize].fetch_add(1, Ordering::AcqRel) + 1;
            let indexed = *after == 0 || self.keeping.index.is_none();
            if !indexed {
                unindexed.push(ToIndex { partition: *p, up_to: *after, gain });
            }
            self.indexed[*p as usize].store(indexed, Ordering::Release);
            self.loaded[*p as usize].store(true, Ordering::Release);
        }
        let restored: Vec<u32> = unindexed.iter().map(|part| part.partition).collect();
        tracing::info!(
            view = std::any::type_name::<V>(),
            ?gained,
            ?restored,
            folded,
            up_to,
            "gained partitions taken in"
        );
        if !unindexed.is_empty() {
            let filters: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
            tokio::spawn(self.clone().index_history(log.clone(), filters, unindexed, shutdown.clone()));
        }
        folded
    }

    /// Takes in the newest snapshot of each of `gained` that covers at most `up_to`;
    /// returns, per gained partition, the sequence its state now covers (0: none).
    async fn restore(
        &self,
        log: &EventLog,
        filters: &[&str],
        partitions: Partitions,
        gained: &[u32],
        up_to: u64,
    ) -> BTreeMap<u32, u64> {
        let mut from: BTreeMap<u32, u64> = gained.iter().map(|p| (*p, 0)).collect();
        let Some(parts) = self.parts.as_ref().filter(|parts| parts.read && up_to > 0) else { return from };
        let filters = filters.iter().map(|filter| (*filter).to_owned()).collect();
        let restored = match (parts.restore)(log.clone(), partitions, gained.to_vec(), filters, up_to).await {
            Ok(restored) => restored,
            Err(error) => {
                tracing::warn!(%error, ?gained, "cannot look for the partitions' snapshots; folding them from the first event");
                return from;
            }
        };
        let mut view = self.write();
        for (p, restored) in restored {
            (parts.absorb)(&mut view, restored.view);
            from.insert(p, restored.seq);
            self.restored.fetch_add(1, Ordering::Relaxed);
        }
        from
    }

    /// Applies the events of each partition of `from` after the sequence it names, up to
    /// `up_to`; returns how many.
    async fn fold_partitions(
        &self,
        log: &EventLog,
        filters: &[&str],
        from: &BTreeMap<u32, u64>,
        up_to: u64,
        shutdown: &CancellationToken,
    ) -> Result<u64> {
        let Some(owned) = &self.keeping.owned else { return Ok(0) };
        let partitions = owned.partitions();
        let start = from.values().min().map_or(up_to, |after| after + 1);
        if start > up_to {
            return Ok(0);
        }
        let after = |id: &str| from.get(&partitions.of(id)).copied();
        let mut follow = log.follow_any::<Recorded<V::Event>>(filters, Start::Sequence(start)).await?;
        let mut folded = 0;
        while let Some(delivered) = follow.next_where(&|subject| after(aggregate_id(subject)).is_some()).await {
            let seq = match delivered? {
                Delivered::Item(LogItem::Event(event)) if event.seq <= up_to => {
                    if after(event.envelope.aggregate.id.as_str()).is_some_and(|after| event.seq > after) {
                        self.apply_event(log, &event, shutdown).await;
                        folded += 1;
                    }
                    event.seq
                }
                Delivered::Item(LogItem::Malformed(bad)) if bad.seq < up_to => continue,
                Delivered::Passed(seq) if seq <= up_to => seq,
                _ => break,
            };
            if seq == up_to {
                break;
            }
        }
        follow.close().await;
        Ok(folded)
    }

    /// Builds the index entries of partitions taken in from snapshots, until done or the
    /// view stops: asked of the log again after a failure.
    async fn index_history(
        self: Arc<Self>,
        log: EventLog,
        filters: Vec<String>,
        parts: Vec<ToIndex>,
        shutdown: CancellationToken,
    ) {
        let started = Instant::now();
        loop {
            let indexing = self.index_once(&log, &filters, &parts, &shutdown);
            let error = tokio::select! {
                () = shutdown.cancelled() => return,
                indexed = indexing => match indexed {
                    Ok(events) => {
                        let partitions: Vec<u32> = parts.iter().map(|part| part.partition).collect();
                        let elapsed = started.elapsed();
                        return tracing::info!(?partitions, events, ?elapsed, "the history of partitions taken in from snapshots indexed");
                    }
                    Err(error) => error,
                },
            };
            tracing::warn!(%error, "cannot index the history of partitions taken in yet");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RECALL_RETRY) => {}
            }
        }
    }

    /// Folds each partition of `parts` up to its snapshot into a view of its own, whose
    /// entries go to this view's index; marks the partitions indexed if they were not
    /// gained again since. Returns how many events were folded.
    async fn index_once(
        &self,
        log: &EventLog,
        filters: &[String],
        parts: &[ToIndex],
        shutdown: &CancellationToken,
    ) -> Result<u64> {
        let (Some(owned), Some(index)) = (&self.keeping.owned, &self.keeping.index) else { return Ok(0) };
        let partitions = owned.partitions();
        let keeping = Keeping { keep_finished: self.keeping.keep_finished, index: Some(index.clone()), owned: None };
        let history = Folding::new(V::default(), 0, None, keeping, None);
        let until: BTreeMap<u32, u64> = parts.iter().map(|part| (part.partition, part.up_to)).collect();
        let up_to = until.values().copied().max().unwrap_or(0);
        let before = |id: &str| until.get(&partitions.of(id)).copied();
        let subjects: Vec<&str> = filters.iter().map(String::as_str).collect();
        let mut follow = log.follow_any::<Recorded<V::Event>>(&subjects, Start::All).await?;
        let mut folded = 0;
        while let Some(delivered) = follow.next_where(&|subject| before(aggregate_id(subject)).is_some()).await {
            let seq = match delivered? {
                Delivered::Item(LogItem::Event(event)) => {
                    if before(event.envelope.aggregate.id.as_str()).is_some_and(|until| event.seq <= until) {
                        history.apply_event(log, &event, shutdown).await;
                        folded += 1;
                    }
                    event.seq
                }
                Delivered::Item(LogItem::Malformed(bad)) => bad.seq,
                Delivered::Passed(seq) => seq,
                Delivered::Item(LogItem::CaughtUp(_)) => break,
            };
            if seq >= up_to {
                break;
            }
        }
        follow.close().await;
        history.write_index();
        for part in parts {
            let p = part.partition as usize;
            if self.gains[p].load(Ordering::Acquire) == part.gain && self.loaded(part.partition) {
                self.indexed[p].store(true, Ordering::Release);
            }
        }
        Ok(folded)
    }
}

/// A partition taken in from a snapshot whose history is not in the index yet.
struct ToIndex {
    partition: u32,
    /// The sequence its snapshot covered: the events up to it are indexed in the background.
    up_to: u64,
    /// Which gain of the partition it was: one gained again meanwhile is indexed anew.
    gain: u64,
}
