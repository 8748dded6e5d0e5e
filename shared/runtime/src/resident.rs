//! The aggregates of one kind that a view keeps in memory: every live one, and a finished
//! one only for a grace period after it finished. Memory is bounded by live work, not by
//! history.
//!
//! A finished aggregate leaves memory (is *evicted*) once it has been finished for the
//! grace period ([`crate::ServiceConfig::keep_finished`]); the projection evicts as it
//! folds and once a second. Asked for afterwards, it is *recalled*: folded again from its
//! own subject on the log (one read of the stream's subject index) through a small LRU
//! cache ([`crate::Projection::recall`]). Should an event of an evicted aggregate ever be
//! appended, the projection gives its earlier events back before applying it
//! ([`Resident::missing`], [`Resident::restore`]), so a view never applies an event to a
//! state it has forgotten.
//!
//! Whether an aggregate is resident changes no answer, so a view's digest cannot depend on
//! it: it is the XOR of one fingerprint per aggregate, and those of evicted aggregates are
//! kept folded together per partition ([`Resident::digest`], [`Resident::digests`]), so an
//! instance holding a share of the partitions answers for exactly its share.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use osp_eventlog::Recorded;
use osp_protocol::{EventPayload, Partitions, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ownership::Share;

/// Finished aggregates recalled from the log that one view keeps at once.
pub const RECALLED: usize = 1024;
/// Room kept however few are resident, so a quiet view does not reallocate at every turn.
const SPARE: usize = 1024;

/// What a view keeps of one aggregate: its state, and whatever its queries show of it.
pub trait Record: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The events of its kind.
    type Event: EventPayload + Send + Sync + 'static;

    /// Applies the next event of this aggregate.
    fn apply(&mut self, event: &Recorded<Self::Event>);

    /// Nothing more is expected to happen to it: it may leave memory.
    fn finished(&self) -> bool;

    /// What it adds to its view's digest: a hash of what queries show of it, or `None`
    /// for an aggregate queries do not show.
    fn fingerprint(&self) -> Option<[u8; 32]>;
}

/// The resident aggregates of one kind, by id.
#[derive(Serialize, Deserialize)]
#[serde(bound = "R: Record")]
pub struct Resident<R> {
    /// Boxed, so that the map's spare room costs a pointer a slot, not a record.
    records: HashMap<String, Box<R>>,
    /// The finished ones, oldest first, with when they finished (by the log's clock): the
    /// order they leave in. An entry whose aggregate has changed since is looked at again
    /// when it comes up.
    finished: VecDeque<(Timestamp, String)>,
    /// The fingerprints of the evicted aggregates, folded together per partition.
    evicted: BTreeMap<u32, Fingerprints>,
    /// The partitions aggregates are spread over ([`share`](Self::share)).
    partitions: Partitions,
    #[serde(skip, default = "recalled_cache")]
    recalled: Mutex<LruCache<String, Arc<R>>>,
}

/// Fingerprints folded together: their XOR (so the order they are folded in does not
/// matter, and one can be taken out again) and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    xor: [u8; 32],
    count: u64,
}

impl Fingerprints {
    fn toggle(&mut self, fingerprint: [u8; 32], added: bool) {
        self.xor_in(fingerprint);
        match added {
            true => self.count += 1,
            false => self.count = self.count.saturating_sub(1),
        }
    }

    /// Folds in the fingerprint of one more aggregate: one a view keeps outside a
    /// [`Resident`] (a catalog that never leaves memory), in the same digest.
    pub fn add(&mut self, fingerprint: [u8; 32]) {
        self.toggle(fingerprint, true);
    }

    fn xor_in(&mut self, bytes: [u8; 32]) {
        for (acc, byte) in self.xor.iter_mut().zip(bytes) {
            *acc ^= byte;
        }
    }

    /// These and `other` together: the digest of a view that keeps aggregates of several
    /// kinds, each in a `Resident` of its own.
    pub fn and(mut self, other: Fingerprints) -> Fingerprints {
        self.xor_in(other.xor);
        self.count += other.count;
        self
    }

    /// The hash, in hex.
    pub fn hex(&self) -> String {
        self.xor.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// How many aggregates are in it.
    pub fn count(&self) -> u64 {
        self.count
    }
}

fn recalled_cache<R>() -> Mutex<LruCache<String, Arc<R>>> {
    Mutex::new(LruCache::new(NonZeroUsize::new(RECALLED).expect("not zero")))
}

impl<R: Record> Default for Resident<R> {
    fn default() -> Self {
        Resident {
            records: HashMap::new(),
            finished: VecDeque::new(),
            evicted: BTreeMap::new(),
            partitions: Partitions::ONE,
            recalled: recalled_cache(),
        }
    }
}

impl<R: Record> Resident<R> {
    /// Keeps the fingerprints of evicted aggregates apart per partition of `partitions`, so
    /// that a partition can be forgotten ([`forget`](Self::forget)) and digested alone
    /// ([`digests`](Self::digests)). Called before anything is evicted.
    pub fn share(&mut self, partitions: Partitions) {
        debug_assert!(self.evicted.is_empty(), "fingerprints already kept by partition of {}", self.partitions);
        self.partitions = partitions;
    }

    /// Applies the next event of its aggregate (made resident if it was not).
    pub fn apply(&mut self, event: &Recorded<R::Event>) -> &R {
        let id = event.envelope.aggregate.id.as_str();
        // Most events are of a resident aggregate: no key to allocate for those.
        if !self.records.contains_key(id) {
            self.records.insert(id.to_owned(), Box::default());
        }
        let record: &mut R = self.records.get_mut(id).expect("inserted above");
        let was_finished = record.finished();
        record.apply(event);
        if record.finished() && !was_finished {
            self.finished.push_back((event.envelope.occurred_at, id.to_owned()));
        }
        record
    }

    /// Changes the resident record of `id` by what an event of another aggregate says of it
    /// (a run's scope is finished once the run has ended), at `at` by the log's clock: once
    /// that finishes it, it leaves memory after the grace period, as if its own event had.
    /// The change must leave its fingerprint as it was: a record put back is folded from
    /// its own events alone.
    pub fn change(&mut self, id: &str, at: Timestamp, change: impl FnOnce(&mut R)) {
        let Some(record) = self.records.get_mut(id) else { return };
        let was_finished = record.finished();
        change(record.as_mut());
        if record.finished() && !was_finished {
            self.finished.push_back((at, id.to_owned()));
        }
    }

    /// The resident record of `id`.
    pub fn get(&self, id: &str) -> Option<&R> {
        self.records.get(id).map(Box::as_ref)
    }

    /// Every resident record.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &R)> {
        self.records.iter().map(|(id, record)| (id, record.as_ref()))
    }

    /// How many are resident.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none are resident.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `event` continues a history this view has let go of: its earlier events must be
    /// given back ([`restore`](Self::restore)) before it is applied.
    pub fn missing(&self, event: &Recorded<R::Event>) -> bool {
        event.envelope.prev_hash.is_some() && !self.records.contains_key(event.envelope.aggregate.id.as_str())
    }

    /// Makes an evicted aggregate resident again from its earlier events.
    pub fn restore(&mut self, id: &str, earlier: &[Recorded<R::Event>]) {
        let mut record = R::default();
        for event in earlier {
            record.apply(event);
        }
        if let Some(fingerprint) = record.fingerprint() {
            self.evicted_of(id).toggle(fingerprint, false);
        }
        // Still finished after the next event, it must be able to leave again.
        if let (true, Some(last)) = (record.finished(), earlier.last()) {
            self.finished.push_back((last.envelope.occurred_at, id.to_owned()));
        }
        self.recalled().pop(id);
        self.records.insert(id.to_owned(), Box::new(record));
    }

    /// Evicts the aggregates that finished before `before` and are finished still.
    pub fn evict(&mut self, before: Timestamp) -> usize {
        let mut evicted = 0;
        while let Some((at, _)) = self.finished.front() {
            if *at >= before {
                break;
            }
            let Some((_, id)) = self.finished.pop_front() else { break };
            let Some(record) = self.records.get(&id) else { continue };
            if !record.finished() {
                continue;
            }
            if let Some(record) = self.records.remove(&id) {
                if let Some(fingerprint) = record.fingerprint() {
                    self.evicted_of(&id).toggle(fingerprint, true);
                }
                self.recalled().pop(&id);
                evicted += 1;
            }
        }
        if evicted > 0 {
            self.shrink();
        }
        evicted
    }

    /// A copy of what it holds of the partitions of `share`: what a partition's snapshot
    /// holds ([`crate::snapshot::Partitioned`]).
    pub fn part(&self, share: &Share) -> Resident<R>
    where
        R: Clone,
    {
        Resident {
            records: self
                .records
                .iter()
                .filter(|(id, _)| share.contains_id(id))
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect(),
            finished: self.finished.iter().filter(|(_, id)| share.contains_id(id)).cloned().collect(),
            evicted: self.evicted.iter().filter(|(p, _)| share.contains(**p)).map(|(p, f)| (*p, *f)).collect(),
            partitions: self.partitions,
            recalled: recalled_cache(),
        }
    }

    /// Takes in `part`, which holds partitions this one holds nothing of.
    pub fn absorb(&mut self, part: Resident<R>) {
        debug_assert_eq!(part.partitions, self.partitions, "shared out alike");
        self.records.extend(part.records);
        // Each oldest first: merged, they still leave in the order they finished.
        let mut finished: Vec<_> = self.finished.drain(..).chain(part.finished).collect();
        finished.sort_by_key(|(at, _)| *at);
        self.finished = finished.into();
        for (partition, fingerprints) in part.evicted {
            let kept = self.evicted.entry(partition).or_default();
            *kept = kept.and(fingerprints);
        }
    }

    fn evicted_of(&mut self, id: &str) -> &mut Fingerprints {
        self.evicted.entry(self.partitions.of(id)).or_default()
    }

    /// Drops every aggregate of the partitions that `moved` away, resident (finished or
    /// not) or evicted: they are now another instance's ([`crate::ownership`]).
    pub fn forget(&mut self, moved: &Share) {
        debug_assert_eq!(moved.partitions(), self.partitions, "shared out as the resident records are");
        self.records.retain(|id, _| !moved.contains_id(id));
        self.finished.retain(|(_, id)| !moved.contains_id(id));
        self.evicted.retain(|partition, _| !moved.contains(*partition));
        self.shrink();
    }

    /// Gives back the room of what left once it is mostly empty: a burst of finished
    /// aggregates must not keep its peak of memory for good (a map never shrinks by itself).
    fn shrink(&mut self) {
        let len = self.records.len();
        if self.records.capacity() > 4 * len + SPARE {
            self.records.shrink_to(2 * len);
        }
        let len = self.finished.len();
        if self.finished.capacity() > 4 * len + SPARE {
            self.finished.shrink_to(2 * len);
        }
    }

    /// The digest of every aggregate of the kind, resident or not.
    pub fn digest(&self) -> Fingerprints {
        let mut all = self.evicted.values().fold(Fingerprints::default(), |all, part| all.and(*part));
        for fingerprint in self.records.values().filter_map(|record| record.fingerprint()) {
            all.toggle(fingerprint, true);
        }
        all
    }

    /// [`digest`](Self::digest) per partition ([`share`](Self::share)), of those with any
    /// aggregate: what an instance holding a share answers for its partitions.
    pub fn digests(&self) -> BTreeMap<u32, Fingerprints> {
        let mut parts = self.evicted.clone();
        for (id, record) in &self.records {
            if let Some(fingerprint) = record.fingerprint() {
                parts.entry(self.partitions.of(id)).or_default().toggle(fingerprint, true);
            }
        }
        parts
    }

    /// A record recalled before and still cached.
    pub fn recalled_record(&self, id: &str) -> Option<Arc<R>> {
        self.recalled().get(id).cloned()
    }

    /// Caches a record recalled from the log, unless the aggregate is resident again.
    pub fn remember(&self, id: &str, record: Arc<R>) {
        if !self.records.contains_key(id) {
            self.recalled().put(id.to_owned(), record);
        }
    }

    fn recalled(&self) -> MutexGuard<'_, LruCache<String, Arc<R>>> {
        self.recalled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The hash of one aggregate's encoded query answer, as its [`Record::fingerprint`].
pub fn fingerprint(bytes: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use osp_protocol::{AggregateRef, AnyPayload, EventHash};

    use super::*;
    use crate::testing::envelope;

    /// What a toy aggregate went through: the types of its events, in order.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Steps(Vec<String>);

    impl Record for Steps {
        type Event = AnyPayload;

        fn apply(&mut self, event: &Recorded<AnyPayload>) {
            self.0.push(event.envelope.payload.event_type.clone());
        }

        fn finished(&self) -> bool {
            self.0.last().is_some_and(|last| last == "toy.ended")
        }

        fn fingerprint(&self) -> Option<[u8; 32]> {
            Some(fingerprint(self.0.join(",").as_bytes()))
        }
    }

    /// Event `n` of aggregate `id`, of type `toy.<what>`, at `at` ms.
    fn event(id: &str, n: u64, what: &str, at: i64) -> Recorded<AnyPayload> {
        let payload = AnyPayload { event_type: format!("toy.{what}"), schema: 1, body: rmpv::Value::Nil };
        let mut envelope = envelope(payload, n);
        envelope.aggregate = AggregateRef::new("toy", id).unwrap();
        envelope.occurred_at = Timestamp(at);
        envelope.prev_hash = (n > 1).then_some(EventHash([n as u8; 32]));
        Recorded { seq: n, stored_at: Timestamp(at), hash: EventHash([0; 32]), envelope }
    }

    #[test]
    fn an_aggregate_leaves_once_finished_for_the_grace_period_and_the_digest_does_not_change() {
        let mut resident = Resident::<Steps>::default();
        resident.apply(&event("a", 1, "begun", 100));
        resident.apply(&event("a", 2, "ended", 200));
        resident.apply(&event("b", 1, "begun", 150));
        resident.apply(&event("c", 1, "begun", 160));
        resident.apply(&event("c", 2, "ended", 300));
        let digest = resident.digest();
        assert_eq!(digest.count(), 3);

        assert_eq!(resident.evict(Timestamp(200)), 0, "a ended at 200, not before");
        assert_eq!(resident.evict(Timestamp(201)), 1);
        assert!(resident.get("a").is_none() && resident.get("b").is_some() && resident.get("c").is_some());
        assert_eq!(resident.digest(), digest, "the digest counts what left");
        assert_eq!(resident.evict(Timestamp(10_000)), 1, "c too; b never ended");
        assert_eq!(resident.len(), 1);
        assert_eq!(resident.digest(), digest);
    }

    #[test]
    fn an_event_of_an_aggregate_that_left_needs_its_history_back_and_then_folds_as_if_it_never_left() {
        let history = [event("a", 1, "begun", 100), event("a", 2, "ended", 200)];
        let next = event("a", 3, "reopened", 5_000);
        let mut kept = Resident::<Steps>::default();
        let mut evicting = Resident::<Steps>::default();
        for event in &history {
            kept.apply(event);
            evicting.apply(event);
        }
        kept.apply(&next);
        evicting.evict(Timestamp(1_000));

        assert!(!evicting.missing(&event("z", 1, "begun", 0)), "a first event needs no history");
        assert!(evicting.missing(&next));
        evicting.restore("a", &history);
        assert!(!evicting.missing(&next));
        evicting.apply(&next);
        assert_eq!(evicting.get("a"), kept.get("a"));
        assert_eq!(evicting.digest(), kept.digest());
    }

    #[test]
    fn the_room_of_a_burst_that_left_is_given_back() {
        let mut resident = Resident::<Steps>::default();
        for n in 0..20_000 {
            let id = format!("r{n}");
            resident.apply(&event(&id, 1, "begun", 100));
            resident.apply(&event(&id, 2, "ended", 200));
        }
        let peak = resident.records.capacity();
        assert!(peak >= 20_000);
        resident.apply(&event("live", 1, "begun", 300));
        assert_eq!(resident.evict(Timestamp(1_000)), 20_000);
        assert!(resident.records.capacity() <= 4 + SPARE, "{} of {peak} kept", resident.records.capacity());
        assert!(resident.finished.capacity() <= 4 + SPARE);
        assert!(resident.get("live").is_some());
    }

    #[test]
    fn an_aggregate_put_back_that_is_still_finished_leaves_again() {
        let history = [event("a", 1, "begun", 100), event("a", 2, "ended", 200)];
        let mut resident = Resident::<Steps>::default();
        for event in &history {
            resident.apply(event);
        }
        resident.evict(Timestamp(1_000));
        resident.restore("a", &history);
        resident.apply(&event("a", 3, "ended", 5_000));
        let digest = resident.digest();
        assert_eq!(resident.evict(Timestamp(10_000)), 1);
        assert!(resident.is_empty());
        assert_eq!(resident.digest(), digest);
    }

    #[test]
    fn a_record_finished_by_another_aggregates_event_leaves_like_any_other() {
        let mut resident = Resident::<Steps>::default();
        resident.apply(&event("a", 1, "begun", 100));
        resident.apply(&event("b", 1, "begun", 100));
        resident.change("a", Timestamp(300), |steps| steps.0.push("toy.ended".into()));
        resident.change("gone", Timestamp(300), |_| panic!("not resident: nothing to change"));
        assert_eq!(resident.evict(Timestamp(300)), 0, "finished at 300, not before");
        assert_eq!(resident.evict(Timestamp(301)), 1);
        assert!(resident.get("a").is_none() && resident.get("b").is_some());
    }

    #[test]
    fn fingerprints_of_two_kinds_add_up_to_those_of_one() {
        let (mut one, mut first, mut second) =
            (Resident::<Steps>::default(), Resident::<Steps>::default(), Resident::<Steps>::default());
        for (id, n) in [("a", 1), ("b", 2), ("c", 3)] {
            let event = event(id, 1, &format!("begun-{n}"), 100);
            one.apply(&event);
            match n {
                2 => second.apply(&event),
                _ => first.apply(&event),
            };
        }
        assert_eq!(first.digest().and(second.digest()), one.digest());
        assert_eq!(first.digest().and(Fingerprints::default()), first.digest());
    }

    #[test]
    fn a_share_digests_per_partition_and_forgets_what_moved_resident_or_evicted() {
        let partitions = Partitions::new(4).unwrap();
        let ids: Vec<String> = (0..40).map(|n| format!("r{n}")).collect();
        let (mut shared, mut whole) = (Resident::<Steps>::default(), Resident::<Steps>::default());
        shared.share(partitions);
        for (n, id) in ids.iter().enumerate() {
            let ended = n % 3 != 0;
            for resident in [&mut shared, &mut whole] {
                resident.apply(&event(id, 1, "begun", 100));
                if ended {
                    resident.apply(&event(id, 2, "ended", 200));
                }
            }
        }
        assert_eq!(shared.evict(Timestamp(1_000)), 26);
        let parts = shared.digests();
        let all = parts.values().fold(Fingerprints::default(), |all, part| all.and(*part));
        assert_eq!(all, whole.digest(), "the parts add up to the whole, evicted or not");
        assert_eq!(all, shared.digest());

        let moved = Share::new(partitions, [1, 3]);
        shared.forget(&moved);
        let mut kept = Resident::<Steps>::default();
        for (n, id) in ids.iter().enumerate().filter(|(_, id)| !moved.contains_id(id)) {
            kept.apply(&event(id, 1, "begun", 100));
            if n % 3 != 0 {
                kept.apply(&event(id, 2, "ended", 200));
            }
        }
        assert_eq!(shared.digest(), kept.digest(), "what moved is gone, resident and evicted alike");
        assert_eq!(shared.digests().keys().copied().collect::<Vec<_>>(), vec![0, 2]);
        assert!(shared.iter().all(|(id, _)| !moved.contains_id(id)));
    }

    #[test]
    fn a_recalled_record_is_cached_only_while_the_aggregate_is_not_resident() {
        let mut resident = Resident::<Steps>::default();
        resident.apply(&event("a", 1, "begun", 100));
        resident.remember("a", Arc::new(Steps(vec!["stale".into()])));
        assert!(resident.recalled_record("a").is_none(), "resident: nothing to recall");
        resident.apply(&event("a", 2, "ended", 200));
        resident.evict(Timestamp(1_000));
        resident.remember("a", Arc::new(Steps(vec!["toy.begun".into(), "toy.ended".into()])));
        assert_eq!(resident.recalled_record("a").unwrap().0.len(), 2);
        resident.restore("a", &[event("a", 1, "begun", 100)]);
        assert!(resident.recalled_record("a").is_none(), "back in memory: the cached copy goes");
    }
}
