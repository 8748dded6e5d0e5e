//! Partitioned ownership: which instance of a service owns which partitions, through
//! leases kept in NATS.
//!
//! Aggregates fall into a fixed number of partitions ([`osp_protocol::Partitions`]).
//! Every instance of a service is a *member*; members share the partitions out
//! ([`plan`]) and each holds a lease on every partition it owns ([`leases`]): a key in
//! the KV bucket [`LEASES_BUCKET`] that expires unless renewed. An instance that dies
//! stops renewing, its leases expire, and the others take its partitions; one that joins
//! is given a share, which the others release to it.
//!
//! A lease is a promise in time, so [`Ownership::owns`] is true only until the last
//! renewal sent plus the lease's time to live: an owner that cannot renew (cut off from
//! the server, or paused) stops acting for the partition before the server lets anyone
//! else claim it.

pub mod leases;
pub mod plan;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use osp_protocol::Partitions;
use tokio::sync::watch;
use tokio::time::Instant;

pub use leases::{start, LEASES_BUCKET};

/// How leases are kept.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a lease lasts unless renewed: how long the partitions of an instance that
    /// died stay without an owner. Whole seconds (the server's unit), at least one.
    pub ttl: Duration,
    /// How often leases are renewed: a few times per `ttl`, so one lost renewal costs
    /// nothing.
    pub renew_every: Duration,
}

impl Default for Timing {
    /// A 3 s lease renewed every second: partitions of a dead instance are taken over in
    /// about 3 s, the figure measured for the plan in docs/architecture.md.
    fn default() -> Timing {
        Timing { ttl: Duration::from_secs(3), renew_every: Duration::from_secs(1) }
    }
}

/// Some of the partitions aggregates are spread over: those a view holds all of
/// ([`crate::Projection::share`]), or those that moved away from it ([`crate::View::forget`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    partitions: Partitions,
    set: BTreeSet<u32>,
}

impl Share {
    pub fn new(partitions: Partitions, set: impl IntoIterator<Item = u32>) -> Share {
        Share { partitions, set: set.into_iter().filter(|p| *p < partitions.count()).collect() }
    }

    /// Every one of `partitions`.
    pub fn whole(partitions: Partitions) -> Share {
        Share::new(partitions, partitions.all())
    }

    /// What the aggregates are spread over.
    pub fn partitions(&self) -> Partitions {
        self.partitions
    }

    pub fn contains(&self, partition: u32) -> bool {
        self.set.contains(&partition)
    }

    /// Whether the aggregate with id `id` is in one of these partitions.
    pub fn contains_id(&self, id: &str) -> bool {
        self.contains(self.partitions.of(id))
    }

    /// The partitions, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.iter().copied()
    }

    /// The partitions in both.
    pub fn and(&self, other: &Share) -> Share {
        Share { partitions: self.partitions, set: self.set.intersection(&other.set).copied().collect() }
    }
}

/// This instance's share of the partitions, as its leases stand.
#[derive(Clone)]
pub struct Ownership {
    shared: Arc<Shared>,
}

struct Shared {
    member: String,
    partitions: Partitions,
    /// Per partition, until when (milliseconds after `epoch`) this instance may act for
    /// it; 0 when it does not own it.
    until: Vec<AtomicU64>,
    epoch: Instant,
    owned: watch::Sender<BTreeSet<u32>>,
    /// Per partition, the member the leases name as its owner, as last seen.
    owners: RwLock<Vec<Option<String>>>,
}

impl Ownership {
    fn new(member: String, partitions: Partitions) -> Ownership {
        let until = partitions.all().map(|_| AtomicU64::new(0)).collect();
        let owners = RwLock::new(partitions.all().map(|_| None).collect());
        let shared =
            Shared { member, partitions, until, epoch: Instant::now(), owned: watch::Sender::default(), owners };
        Ownership { shared: Arc::new(shared) }
    }

    /// This instance's name among the members.
    pub fn member(&self) -> &str {
        &self.shared.member
    }

    pub fn partitions(&self) -> Partitions {
        self.shared.partitions
    }

    /// True while this instance holds the lease on `partition` and it has not lapsed.
    pub fn owns(&self, partition: u32) -> bool {
        let until = self.shared.until.get(partition as usize).map_or(0, |until| until.load(Ordering::Acquire));
        until > self.now()
    }

    /// True while this instance owns the partition of the aggregate `id`.
    pub fn owns_id(&self, id: &str) -> bool {
        self.owns(self.shared.partitions.of(id))
    }

    /// The member the leases name as the owner of `partition` (this one or another), as
    /// this instance last saw them: where its commands go ([`crate::Inbox`]).
    pub fn owner(&self, partition: u32) -> Option<String> {
        let owners = self.shared.owners.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        owners.get(partition as usize).cloned().flatten()
    }

    /// Another member owning the partition of the aggregate `id`, if one does.
    pub fn owner_elsewhere(&self, id: &str) -> Option<String> {
        let partition = self.shared.partitions.of(id);
        if self.owns(partition) {
            return None;
        }
        self.owner(partition).filter(|owner| owner != self.member())
    }

    /// Takes in the owner the leases name for `partition` (a renewal names the same one).
    fn see_owner(&self, partition: u32, owner: Option<&str>) {
        let unchanged =
            |seen: &[Option<String>]| seen.get(partition as usize).is_none_or(|seen| seen.as_deref() == owner);
        if unchanged(&self.shared.owners.read().unwrap_or_else(|poisoned| poisoned.into_inner())) {
            return;
        }
        let mut seen = self.shared.owners.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(seen) = seen.get_mut(partition as usize) {
            *seen = owner.map(str::to_owned);
        }
    }

    /// The partitions this instance holds leases on.
    pub fn owned(&self) -> BTreeSet<u32> {
        self.shared.owned.borrow().clone()
    }

    /// Changes to [`owned`](Self::owned): a partition leaves the set before its lease is
    /// given up, and joins it once the lease is held.
    pub fn changes(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.shared.owned.subscribe()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.shared.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Holds `partition` until `deadline`.
    fn hold(&self, partition: u32, deadline: Instant) {
        let until = u64::try_from(deadline.saturating_duration_since(self.shared.epoch).as_millis()).unwrap_or(0);
        self.shared.until[partition as usize].store(until, Ordering::Release);
        self.shared.owned.send_if_modified(|owned| owned.insert(partition));
    }

    /// Stops acting for `partition`.
    fn drop_partition(&self, partition: u32) {
        self.shared.until[partition as usize].store(0, Ordering::Release);
        self.shared.owned.send_if_modified(|owned| owned.remove(&partition));
    }
}
