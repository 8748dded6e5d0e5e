//! The leases behind [`Ownership`]: keys in the KV bucket [`LEASES_BUCKET`], written with
//! a per-message time to live and compare-and-set.
//!
//! - `<service>.member.<member>`: an instance is there (renewed, never compared);
//! - `<service>.part.<partition>`: who owns the partition; created only where the key
//!   holds nothing or a marker (a lease that lapsed or was given up), renewed only on the
//!   revision this instance wrote last, so at most one instance holds it.
//!
//! A task per instance watches the bucket's keys of its service, renews what it holds,
//! and acts on [`plan`]: claims the free partitions planned for it and gives up those
//! planned for another member, which claims them once it sees the lease gone.
//!
//! Renewals are plain publishes carrying `Nats-TTL` and the expected revision, not the
//! client's KV calls: async-nats 0.51 renews with no time to live (the lease would never
//! lapse) and creates without one over a marker (docs/architecture.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use futures::StreamExt;
use osp_eventlog::{Error, EventLog, Result};
use osp_protocol::Partitions;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::plan;
use super::{Ownership, Timing};

/// The KV bucket holding every service's leases.
pub const LEASES_BUCKET: &str = "OSP_LEASES";
/// How long the marker of a lapsed or given-up lease stays: a watcher that was away
/// meanwhile still learns the lease is gone.
const MARKERS_KEPT: Duration = Duration::from_secs(60);
/// Taken off a lease's time to live for this instance's deadline: clocks run at slightly
/// different rates, and the owner must stop before the server lets another claim.
const DRIFT: Duration = Duration::from_millis(150);
/// How long a broken watch of the bucket waits before it is opened again.
const REWATCH_AFTER: Duration = Duration::from_millis(250);

/// Joins the members of `service`, which share `partitions`, and keeps this instance's
/// leases until `shutdown`, when it gives them up for the others to take at once. The
/// task ends after that.
pub async fn start(
    log: &EventLog,
    service: &str,
    partitions: Partitions,
    timing: Timing,
    shutdown: CancellationToken,
) -> Result<(Ownership, JoinHandle<()>)> {
    if timing.ttl.subsec_nanos() != 0 || timing.ttl.is_zero() || timing.renew_every >= timing.ttl {
        return Err(Error::Unavailable {
            operation: "keep partition leases",
            reason: format!(
                "the lease time to live must be whole seconds, at least 1, and longer than the renewal interval (ttl {:?}, renew every {:?})",
                timing.ttl, timing.renew_every
            ),
        });
    }
    let unavailable = |reason: String| Error::Unavailable { operation: "keep partition leases", reason };
    let config = kv::Config {
        bucket: LEASES_BUCKET.into(),
        description: "Which service instance owns which partitions (docs/architecture.md)".into(),
        history: 1,
        num_replicas: log.replicas(),
        limit_markers: Some(MARKERS_KEPT),
        ..Default::default()
    };
    let js = log.jetstream();
    let store = match js.get_key_value(LEASES_BUCKET).await {
        Ok(store) => store,
        Err(_) => js.create_or_update_key_value(config).await.map_err(|e| unavailable(e.to_string()))?,
    };
    let ownership = Ownership::new(uuid::Uuid::now_v7().simple().to_string(), partitions);
    let keeper = Keeper {
        store,
        js: js.clone(),
        service: service.to_owned(),
        ownership: ownership.clone(),
        timing,
        table: Table::default(),
        held: BTreeMap::new(),
        ready: false,
    };
    keeper.put(&keeper.member_key(), None).await.map_err(|e| unavailable(e.to_string()))?;
    let watch = keeper.watch().await.map_err(|e| unavailable(e.to_string()))?;
    tracing::info!(service, member = ownership.member(), %partitions, "joined the members sharing the partitions");
    Ok((ownership, tokio::spawn(keeper.keep(watch, shutdown))))
}

/// The members and owners as the bucket says.
#[derive(Default)]
struct Table {
    members: BTreeSet<String>,
    owners: BTreeMap<u32, String>,
}

struct Keeper {
    store: Store,
    js: async_nats::jetstream::Context,
    service: String,
    ownership: Ownership,
    timing: Timing,
    table: Table,
    /// The partitions held, with the revision of the last write of each lease.
    held: BTreeMap<u32, u64>,
    /// The watch has delivered what the bucket held at the start: the table can be acted on.
    ready: bool,
}

impl Keeper {
    async fn keep(mut self, mut watch: kv::Watch, shutdown: CancellationToken) {
        let every = self.timing.renew_every;
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return self.leave().await,
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        self.ready |= entry.delta == 0;
                        self.note(&entry);
                        if self.ready {
                            self.reconcile().await;
                        }
                    }
                    ended => {
                        tracing::warn!(error = ?ended.and_then(Result::err), "the watch of the leases ended; opening it again");
                        watch = loop {
                            tokio::select! {
                                () = shutdown.cancelled() => return self.leave().await,
                                () = tokio::time::sleep(REWATCH_AFTER) => {}
                            }
                            match self.watch().await {
                                Ok(watch) => break watch,
                                Err(error) => tracing::warn!(%error, "cannot watch the leases yet"),
                            }
                        };
                        self.table = Table::default();
                    }
                },
                _ = ticks.tick() => {
                    self.ready = true;
                    self.renew().await;
                    self.reconcile().await;
                }
            }
        }
    }

    /// Every key of this service, the last entry of each first.
    async fn watch(&self) -> std::result::Result<kv::Watch, kv::WatchError> {
        self.store.watch_with_history(format!("{}.>", self.service)).await
    }

    fn member_key(&self) -> String {
        format!("{}.member.{}", self.service, self.ownership.member())
    }

    fn partition_key(&self, partition: u32) -> String {
        format!("{}.part.{partition}", self.service)
    }

    /// Takes in a change of the bucket.
    fn note(&mut self, entry: &kv::Entry) {
        let Some(rest) = entry.key.strip_prefix(&self.service).and_then(|rest| rest.strip_prefix('.')) else {
            return;
        };
        let present = entry.operation == Operation::Put;
        if let Some(member) = rest.strip_prefix("member.") {
            match present {
                true => self.table.members.insert(member.to_owned()),
                false => self.table.members.remove(member),
            };
        } else if let Some(partition) = rest.strip_prefix("part.").and_then(|p| p.parse::<u32>().ok()) {
            match present {
                true => self.table.owners.insert(partition, String::from_utf8_lossy(&entry.value).into_owned()),
                false => self.table.owners.remove(&partition),
            };
            self.ownership.see_owner(partition, self.table.owners.get(&partition).map(String::as_str));
        }
    }

    /// Claims the free partitions the plan gives this instance; gives up those it gives
    /// another member.
    async fn reconcile(&mut self) {
        let me = self.ownership.member().to_owned();
        let mut members = self.table.members.clone();
        members.insert(me.clone());
        // What this instance holds is known here before the watch shows it.
        let mut owners = self.table.owners.clone();
        owners.retain(|partition, owner| *owner != me || self.held.contains_key(partition));
        owners.extend(self.held.keys().map(|partition| (*partition, me.clone())));
        let planned: Vec<Option<String>> = plan(self.ownership.partitions().count(), &members, &owners)
            .into_iter()
            .map(|owner| owner.map(str::to_owned))
            .collect();
        for (partition, owner) in (0u32..).zip(planned) {
            let mine = owner.as_deref() == Some(me.as_str());
            let held = self.held.contains_key(&partition);
            if mine && !held && !owners.contains_key(&partition) {
                self.claim(partition).await;
            } else if !mine && held {
                self.release(partition).await;
            }
        }
    }

    async fn claim(&mut self, partition: u32) {
        let key = self.partition_key(partition);
        let expected = match self.store.entry(key.as_str()).await {
            Ok(None) => 0,
            Ok(Some(entry)) if entry.operation != Operation::Put => entry.revision,
            Ok(Some(entry)) => {
                let owner = String::from_utf8_lossy(&entry.value).into_owned();
                self.table.owners.insert(partition, owner);
                return;
            }
            Err(error) => return tracing::warn!(%error, partition, "cannot read a partition's lease"),
        };
        let sent = Instant::now();
        match self.put(&key, Some(expected)).await {
            Ok(revision) => {
                self.held.insert(partition, revision);
                self.ownership.hold(partition, self.deadline(sent));
                tracing::info!(service = %self.service, partition, "claimed a partition");
            }
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                tracing::debug!(partition, "another member claimed the partition first");
            }
            Err(error) => tracing::warn!(%error, partition, "cannot claim a partition"),
        }
    }

    /// Stops acting for the partition, then deletes its lease for the planned owner.
    async fn release(&mut self, partition: u32) {
        self.ownership.drop_partition(partition);
        let revision = self.held.remove(&partition);
        let key = self.partition_key(partition);
        match self.store.delete_expect_revision(key.as_str(), revision).await {
            Ok(()) => tracing::info!(service = %self.service, partition, "gave up a partition"),
            Err(error) => tracing::warn!(%error, partition, "cannot give up a partition; its lease will lapse"),
        }
    }

    async fn renew(&mut self) {
        if let Err(error) = self.put(&self.member_key(), None).await {
            tracing::warn!(%error, "cannot renew this instance's membership");
        }
        for (partition, revision) in self.held.clone() {
            let sent = Instant::now();
            match self.put(&self.partition_key(partition), Some(revision)).await {
                Ok(revision) => {
                    self.held.insert(partition, revision);
                    self.ownership.hold(partition, self.deadline(sent));
                }
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    self.held.remove(&partition);
                    self.ownership.drop_partition(partition);
                    tracing::warn!(partition, "lost a partition's lease (it lapsed and was claimed)");
                }
                // Held until the deadline of the last renewal; the next may get through.
                Err(error) => tracing::warn!(%error, partition, "cannot renew a partition's lease"),
            }
        }
    }

    /// Gives every partition up and leaves, so the others take them now, not in a `ttl`.
    async fn leave(mut self) {
        for partition in self.held.keys().copied().collect::<Vec<_>>() {
            self.release(partition).await;
        }
        if let Err(error) = self.store.delete(self.member_key()).await {
            tracing::warn!(%error, "cannot leave the members; the membership will lapse");
        }
    }

    /// Until when a lease written at `sent` may be acted on.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.timing.ttl.saturating_sub(DRIFT)
    }

    /// Writes this instance's name to `key` with the lease's time to live; compared with
    /// `expected` (the key's last revision, 0 for none) when given. Returns the revision.
    async fn put(&self, key: &str, expected: Option<u64>) -> std::result::Result<u64, PublishError> {
        let mut publish =
            PublishMessage::build().payload(self.ownership.member().to_owned().into()).ttl(self.timing.ttl);
        if let Some(expected) = expected {
            publish = publish.expected_last_subject_sequence(expected);
        }
        let ack = self.js.send_publish(format!("$KV.{LEASES_BUCKET}.{key}"), publish).await?.await?;
        Ok(ack.sequence)
    }
}
