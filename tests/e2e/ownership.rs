//! Partition leases against a real server: members share the partitions out, take over
//! those of a member that stopped renewing, give a share to one that joins, and never
//! act for the same partition at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::stream::{Config, SubjectTransform};
use osp_eventlog::{EventLog, Head, Recorded};
use osp_protocol::Partitions;
use osp_runtime::ownership::{self, Ownership, Share, Timing, LEASES_BUCKET};
use osp_runtime::{Keeping, Projection, Snapshot, Snapshots, View};
use osp_tests::{added, connect, counter, eventually, CounterEvent, Harness};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "leases-test";

#[tokio::test]
async fn a_partition_is_the_one_the_server_computes() {
    let harness = Harness::start().await;
    let js = harness.log.jetstream();
    let stream = js
        .create_stream(Config {
            name: "PARTITIONED".into(),
            subjects: vec!["part.*".into()],
            subject_transform: Some(SubjectTransform {
                source: "part.*".into(),
                destination: "part.{{partition(16,1)}}.{{wildcard(1)}}".into(),
            }),
            ..Default::default()
        })
        .await
        .expect("create a stream with a partition transform");
    let partitions = Partitions::new(16).unwrap();
    let ids = (0..48).map(|n| format!("run-{n}")).chain(["019a-7b2c".into(), "ä-ü".into(), "x".into()]);
    for id in ids {
        let ack = js.publish(format!("part.{id}"), "".into()).await.unwrap().await.unwrap();
        let stored = stream.get_raw_message(ack.sequence).await.unwrap();
        assert_eq!(stored.subject.as_str(), format!("part.{}.{id}", partitions.of(&id)), "{id}");
    }
}

/// One member: its share, and what stops it.
struct Member {
    ownership: Ownership,
    keeper: JoinHandle<()>,
    shutdown: CancellationToken,
}

async fn join(url: &str, partitions: Partitions) -> Member {
    let log = EventLog::open(connect(url).await).await.expect("open the log");
    let shutdown = CancellationToken::new();
    let (ownership, keeper) = ownership::start(&log, SERVICE, partitions, Timing::default(), shutdown.clone())
        .await
        .expect("join the members");
    Member { ownership, keeper, shutdown }
}

/// How many partitions each member acts for now, and whether every partition has one.
fn shares(members: &[&Member], partitions: Partitions) -> (Vec<usize>, bool) {
    let counts = members.iter().map(|m| partitions.all().filter(|p| m.ownership.owns(*p)).count()).collect();
    let covered = partitions.all().all(|p| members.iter().any(|m| m.ownership.owns(p)));
    (counts, covered)
}

#[tokio::test]
async fn members_share_take_over_from_the_dead_give_to_newcomers_and_never_overlap() {
    let harness = Harness::start().await;
    let url = harness.server.url();
    let partitions = Partitions::new(16).unwrap();
    let [a, b, c] = [join(&url, partitions).await, join(&url, partitions).await, join(&url, partitions).await];
    let a = Arc::new(a);
    let c = Arc::new(c);

    eventually(Duration::from_secs(15), "three members sharing 16 partitions 6/5/5", || {
        let (mut counts, covered) = shares(&[&a, &b, &c], partitions);
        counts.sort_unstable();
        async move { covered && counts == [5, 5, 6] }
    })
    .await;

    // From here on, a sampler checks that no two members ever act for one partition.
    let watched: Arc<Mutex<Vec<Ownership>>> =
        Arc::new(Mutex::new(vec![a.ownership.clone(), b.ownership.clone(), c.ownership.clone()]));
    let overlaps = Arc::new(Mutex::new(Vec::<u32>::new()));
    let sampling = CancellationToken::new();
    let sampler = {
        let (watched, overlaps, sampling) = (watched.clone(), overlaps.clone(), sampling.clone());
        tokio::spawn(async move {
            while !sampling.is_cancelled() {
                for p in partitions.all() {
                    let holders = watched.lock().unwrap().iter().filter(|o| o.owns(p)).count();
                    if holders > 1 {
                        overlaps.lock().unwrap().push(p);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // b dies: it stops renewing, without giving anything up.
    let b_had = b.ownership.owned();
    b.keeper.abort();
    let died = tokio::time::Instant::now();
    eventually(Duration::from_secs(15), "a and c taking over b's partitions", || {
        let (mut counts, covered) = shares(&[&a, &c], partitions);
        counts.sort_unstable();
        async move { covered && counts == [8, 8] }
    })
    .await;
    println!("takeover of {} partitions after their owner died: {:?}", b_had.len(), died.elapsed());
    assert!(partitions.all().all(|p| !b.ownership.owns(p)), "a dead member's leases lapse for it too");

    // d joins: a and c give it a share.
    let d = Arc::new(join(&url, partitions).await);
    watched.lock().unwrap().push(d.ownership.clone());
    eventually(Duration::from_secs(15), "d given its share", || {
        let (mut counts, covered) = shares(&[&a, &c, &d], partitions);
        counts.sort_unstable();
        async move { covered && counts == [5, 5, 6] }
    })
    .await;

    // c leaves: it gives its partitions up as it goes, and its leases are gone at once.
    c.shutdown.cancel();
    let c = Arc::into_inner(c).expect("the only handle");
    c.keeper.await.expect("c's keeper ends");
    assert!(c.ownership.owned().is_empty());
    let leases = harness.log.jetstream().get_key_value(LEASES_BUCKET).await.unwrap();
    for p in partitions.all() {
        let entry = leases.entry(format!("{SERVICE}.part.{p}")).await.unwrap();
        let by_c = entry.is_some_and(|e| e.operation == Operation::Put && e.value == c.ownership.member().as_bytes());
        assert!(!by_c, "partition {p} still leased by the member that left");
    }
    eventually(Duration::from_secs(15), "a and d sharing everything", || {
        let (counts, covered) = shares(&[&a, &d], partitions);
        async move { covered && counts == [8, 8] }
    })
    .await;

    sampling.cancel();
    sampler.await.unwrap();
    assert!(overlaps.lock().unwrap().is_empty(), "partitions acted for by two members at once: {overlaps:?}");
}

/// Each counter's total, for the counters the view holds.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Totals(HashMap<String, i64>);

impl View for Totals {
    type Event = CounterEvent;

    fn apply(&mut self, event: &Recorded<CounterEvent>) {
        let total = self.0.entry(event.envelope.aggregate.id.to_string()).or_default();
        match &event.envelope.payload {
            CounterEvent::Added(added) => *total += added.by,
            CounterEvent::Reset(_) => *total = 0,
        }
    }

    fn forget(&mut self, moved: &Share) {
        self.0.retain(|id, _| !moved.contains_id(id));
    }
}

impl Snapshot for Totals {
    const NAME: &'static str = "totals-test";
    const SHAPE: u32 = 1;
}

/// Adds `by` to each of `counters`, `times` times, as one writer would.
async fn add_to(log: &EventLog, counters: &[String], by: i64, times: usize, heads: &mut HashMap<String, Head>) {
    for id in counters {
        for n in 0..times {
            let head = heads.get(id).cloned().unwrap_or(Head::EMPTY);
            let appended = log.append(&counter(id), &head, vec![added(by, &format!("{id}-{by}-{n}"))]).await.unwrap();
            heads.insert(id.clone(), appended.head);
        }
    }
}

#[tokio::test]
async fn a_view_holds_only_its_partitions_and_folds_the_history_of_those_it_gains() {
    let harness = Harness::start().await;
    let url = harness.server.url();
    let partitions = Partitions::new(8).unwrap();
    let counters: Vec<String> = (0..40).map(|n| format!("c{n}")).collect();
    let mut heads = HashMap::new();
    add_to(&harness.log, &counters, 2, 3, &mut heads).await;

    let a = join(&url, partitions).await;
    let b = join(&url, partitions).await;
    let view_of = |member: &Member| {
        let keeping = Keeping { owned: Some(member.ownership.clone()), ..Keeping::default() };
        let filters = [osp_protocol::subject::events_of_kind(&counter("x").kind)];
        let (log, shutdown) = (harness.log.clone(), member.shutdown.clone());
        async move {
            let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
            let snapshots = Snapshots { every: 0, read: false };
            Projection::<Totals>::start_kept(&log, &filters, snapshots, keeping, shutdown).await.unwrap()
        }
    };
    let (view_a, view_b) = (view_of(&a).await, view_of(&b).await);
    // Holds exactly the counters of the partitions its member owns, each at `total`.
    let holds_its_share = |view: &Projection<Totals>, member: &Member, total: i64| {
        let owned = member.ownership.owned();
        let view = view.read();
        let mine: Vec<&String> = counters.iter().filter(|id| owned.contains(&partitions.of(id))).collect();
        view.0.len() == mine.len() && mine.iter().all(|id| view.0.get(*id) == Some(&total))
    };

    eventually(Duration::from_secs(15), "a and b each folding its half", || {
        let (counts, covered) = shares(&[&a, &b], partitions);
        let held = holds_its_share(&view_a, &a, 6) && holds_its_share(&view_b, &b, 6);
        async move { covered && counts == [4, 4] && held }
    })
    .await;

    // New events: each applies those of its own partitions only.
    add_to(&harness.log, &counters, 1, 1, &mut heads).await;
    eventually(Duration::from_secs(15), "both following their share", || {
        let held = holds_its_share(&view_a, &a, 7) && holds_its_share(&view_b, &b, 7);
        async move { held }
    })
    .await;

    // b dies: a gains its partitions and folds their history, then follows all of them.
    b.keeper.abort();
    eventually(Duration::from_secs(15), "a holding every counter", || {
        let held = a.ownership.owned().len() == 8 && holds_its_share(&view_a, &a, 7);
        async move { held }
    })
    .await;
    add_to(&harness.log, &counters, 3, 1, &mut heads).await;
    eventually(Duration::from_secs(15), "a following every counter", || {
        let held = holds_its_share(&view_a, &a, 10);
        async move { held }
    })
    .await;

    // A newcomer takes half back: a forgets what moved.
    let c = join(&url, partitions).await;
    let view_c = view_of(&c).await;
    eventually(Duration::from_secs(15), "a and c each holding its half", || {
        let held = holds_its_share(&view_a, &a, 10) && holds_its_share(&view_c, &c, 10);
        let (counts, _) = shares(&[&a, &c], partitions);
        async move { held && counts == [4, 4] }
    })
    .await;
}
