//! Snapshots against a real server: a projection started from one ends where one folded
//! from the first event ends, having replayed only the rest; snapshots are saved as the
//! view goes; one that is corrupt, of another shape or of another log is ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use osp_eventlog::{Head, Recorded};
use osp_runtime::snapshot::{self, object_name};
use osp_runtime::{Projection, Snapshot, Snapshots, View, SNAPSHOTS_BUCKET};
use osp_tests::{added, counter, eventually, value, CounterEvent, Harness};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Every counter's total.
#[derive(Default, Debug, PartialEq, Serialize, Deserialize)]
struct Totals {
    totals: BTreeMap<String, i64>,
    /// Events this instance applied itself (not part of the state: a restored view
    /// starts counting at 0, which tells how much it replayed).
    #[serde(skip)]
    replayed: u64,
}

impl View for Totals {
    type Event = CounterEvent;
    fn apply(&mut self, event: &Recorded<CounterEvent>) {
        let total = self.totals.entry(event.envelope.aggregate.id.to_string()).or_default();
        *total = match &event.envelope.payload {
            CounterEvent::Reset(_) => 0,
            other => *total + value([other]),
        };
        self.replayed += 1;
    }
}

impl Snapshot for Totals {
    const NAME: &'static str = "test-totals";
    const SHAPE: u32 = 1;
}

/// The same view as an older build saved it: shape 0.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
struct OldTotals(Totals);

impl View for OldTotals {
    type Event = CounterEvent;
    fn apply(&mut self, event: &Recorded<CounterEvent>) {
        self.0.apply(event)
    }
}

impl Snapshot for OldTotals {
    const NAME: &'static str = "test-totals";
    const SHAPE: u32 = 0;
}

const FILTER: &str = "osp.v1.evt.counter.*";

/// Appends `n` events spread over ten counters, after `heads`.
async fn append(h: &Harness, heads: &mut BTreeMap<String, Head>, n: usize, round: &str) {
    for i in 0..n {
        let id = format!("c{}", i % 10);
        let head = heads.entry(id.clone()).or_default();
        let appended = h.log.append(&counter(&id), head, vec![added(i as i64, &format!("{round}-{i}"))]).await.unwrap();
        *head = appended.head;
    }
}

async fn start(h: &Harness, snapshots: Snapshots, shutdown: &CancellationToken) -> Projection<Totals> {
    Projection::<Totals>::start_with(&h.log, &[FILTER], snapshots, shutdown.clone()).await.unwrap()
}

/// The snapshots in the store, by name.
async fn stored(h: &Harness) -> Vec<String> {
    let Ok(store) = h.log.jetstream().get_object_store(SNAPSHOTS_BUCKET).await else { return vec![] };
    let mut list = store.list().await.unwrap();
    let mut names = Vec::new();
    while let Ok(Some(Ok(object))) = tokio::time::timeout(Duration::from_secs(2), list.next()).await {
        if !object.deleted {
            names.push(object.name);
        }
    }
    names
}

#[tokio::test]
async fn a_start_from_a_snapshot_equals_a_start_from_scratch_and_replays_only_the_rest() {
    let h = Harness::start().await;
    let shutdown = CancellationToken::new();
    let mut heads = BTreeMap::new();
    append(&h, &mut heads, 300, "a").await;
    // Saves every 100 events: its start-up replay of 300 is saved at once.
    let first = start(&h, Snapshots { every: 100, read: true }, &shutdown).await;
    assert_eq!(first.read().replayed, 300);
    eventually(Duration::from_secs(10), "a snapshot saved after the start-up replay", || async {
        stored(&h).await.iter().any(|name| name.starts_with("test-totals/1/"))
    })
    .await;
    append(&h, &mut heads, 250, "b").await;
    let last = h.log.last_sequence().await.unwrap();
    first.wait_for(last, Duration::from_secs(10)).await.unwrap();
    let saved = first.save_snapshot().await.unwrap();
    assert_eq!(saved, last);
    append(&h, &mut heads, 40, "c").await;
    let last = h.log.last_sequence().await.unwrap();

    let restored = start(&h, Snapshots { every: 0, read: true }, &shutdown).await;
    let scratch = start(&h, Snapshots::OFF, &shutdown).await;
    assert_eq!(restored.read().replayed, 40, "only the events after the snapshot");
    assert_eq!(scratch.read().replayed, 590);
    assert_eq!(restored.applied(), last);
    assert_eq!(restored.read().totals, scratch.read().totals);
    // And both keep following the log alike.
    append(&h, &mut heads, 10, "d").await;
    let last = h.log.last_sequence().await.unwrap();
    for projection in [&restored, &scratch, &first] {
        projection.wait_for(last, Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(restored.read().totals, scratch.read().totals);
    assert_eq!(first.read().totals, scratch.read().totals);
    eventually(Duration::from_secs(10), "old snapshots deleted, the newest kept", || async {
        let kept: Vec<String> = stored(&h).await.into_iter().filter(|name| name.starts_with("test-totals/")).collect();
        (1..=snapshot::KEPT).contains(&kept.len())
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_snapshot_that_does_not_hold_up_is_ignored_and_the_next_one_used() {
    let h = Harness::start().await;
    let shutdown = CancellationToken::new();
    let mut heads = BTreeMap::new();
    append(&h, &mut heads, 100, "a").await;
    let first = start(&h, Snapshots { every: 0, read: false }, &shutdown).await;
    let good = first.save_snapshot().await.unwrap();
    append(&h, &mut heads, 20, "b").await;
    let last = h.log.last_sequence().await.unwrap();
    let store = h.log.jetstream().get_object_store(SNAPSHOTS_BUCKET).await.unwrap();
    let filters = [FILTER.to_owned()];
    let wrong_totals = Totals { totals: BTreeMap::from([("c0".to_owned(), -1)]), replayed: 0 };
    // Newer than the good one, each wrong in its own way (the last one's name does not
    // say what it holds).
    let mut corrupt = snapshot::encode(&wrong_totals, last, &filters, None).unwrap();
    let end = corrupt.len() - 1;
    corrupt[end] ^= 0x55;
    let beyond_the_log = snapshot::encode(&wrong_totals, last + 1_000, &filters, None).unwrap();
    let other_log = snapshot::encode(&wrong_totals, last, &filters, Some((last, osp_protocol::EventHash::of(b"x"))));
    let other_filters = snapshot::encode(&wrong_totals, last, &["osp.v1.evt.other.*".to_owned()], None).unwrap();
    for (seq, bytes) in [
        (last + 1, corrupt),
        (last + 2, beyond_the_log),
        (last + 3, other_log.unwrap()),
        (last + 4, other_filters),
        (last + 5, b"not a snapshot at all".to_vec()),
        (last + 7, snapshot::encode(&wrong_totals, last, &filters, None).unwrap()),
    ] {
        store.put(object_name("test-totals", 1, seq).as_str(), &mut bytes.as_slice()).await.unwrap();
    }
    // An older shape: a state this build must not read.
    let older = snapshot::encode(&OldTotals(wrong_totals), last, &filters, None).unwrap();
    store.put(object_name("test-totals", 0, last + 6).as_str(), &mut older.as_slice()).await.unwrap();

    let restored = start(&h, Snapshots { every: 0, read: true }, &shutdown).await;
    let scratch = start(&h, Snapshots::OFF, &shutdown).await;
    assert_eq!(restored.read().totals, scratch.read().totals, "no wrong snapshot was trusted");
    assert_eq!(restored.read().replayed, last - good, "the good snapshot was used");
    shutdown.cancel();
}
