//! Replay and follow: order, completeness, and the replay→live hand-over.

use std::collections::BTreeSet;

use osp_eventlog::{FromStored, Head, LogItem, Recorded, Start};
use osp_protocol::subject::ALL_EVENTS;
use osp_tests::{added, counter, CounterEvent, Harness};

/// Reads `follow` until it reports being caught up; returns events and the mark.
async fn until_caught_up<T: FromStored>(follow: &mut osp_eventlog::Follow<T>) -> (Vec<T>, u64) {
    let mut events = Vec::new();
    loop {
        match follow.next().await.expect("follow ended").expect("follow failed") {
            LogItem::Event(e) => events.push(e),
            LogItem::Malformed(m) => panic!("unexpected malformed event {m:?}"),
            LogItem::CaughtUp(seq) => return (events, seq),
        }
    }
}

#[tokio::test]
async fn replay_returns_exactly_what_was_appended_in_order() {
    let h = Harness::start().await;
    let mut heads = [Head::EMPTY; 3];
    let mut expected = Vec::new();
    for i in 0..30 {
        let agg = counter(&format!("c{}", i % 3));
        let head = &mut heads[i % 3];
        let appended = h.log.append(&agg, head, vec![added(i as i64, &format!("cmd-{i}"))]).await.unwrap();
        *head = appended.head;
        expected.extend(appended.events.into_iter().map(|e| (e.seq, e.hash, e.envelope)));
    }
    let mut follow = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::All).await.unwrap();
    let (events, caught_up) = until_caught_up(&mut follow).await;
    let got: Vec<_> = events.into_iter().map(|e| (e.seq, e.hash, e.envelope)).collect();
    assert_eq!(got, expected);
    assert_eq!(caught_up, 30);

    // From a sequence, and a single aggregate's subject.
    let mut from_seq = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::Sequence(25)).await.unwrap();
    let (tail, _) = until_caught_up(&mut from_seq).await;
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [25, 26, 27, 28, 29, 30]);
    let one = counter("c1").subject();
    let mut only_c1 = h.log.follow::<Recorded<CounterEvent>>(&one, Start::All).await.unwrap();
    let (c1, _) = until_caught_up(&mut only_c1).await;
    assert_eq!(c1.len(), 10);
    assert!(c1.iter().all(|e| e.envelope.aggregate == counter("c1")));
}

#[tokio::test]
async fn replay_since_a_time_starts_at_the_first_event_stored_then() {
    let h = Harness::start().await;
    let agg = counter("t");
    let early = h.log.append(&agg, &Head::EMPTY, vec![added(1, "early")]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cut = osp_protocol::Timestamp::now();
    h.log.append(&agg, &early.head, vec![added(2, "late")]).await.unwrap();
    let mut follow = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::Since(cut)).await.unwrap();
    let (events, _) = until_caught_up(&mut follow).await;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
}

#[tokio::test]
async fn an_empty_log_is_caught_up_at_once_and_new_events_follow() {
    let h = Harness::start().await;
    let mut follow = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::All).await.unwrap();
    let (events, seq) = until_caught_up(&mut follow).await;
    assert!(events.is_empty());
    assert_eq!(seq, 0);
    h.log.append(&counter("n"), &Head::EMPTY, vec![added(1, "x")]).await.unwrap();
    match follow.next().await.unwrap().unwrap() {
        LogItem::Event(e) => assert_eq!(e.seq, 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn follow_under_concurrent_appends_loses_and_duplicates_nothing_at_the_hand_over() {
    let h = Harness::start().await;
    let writers = 4;
    let per_writer = 250;
    // Writers start before the follower and keep going while it replays and goes live.
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = h.second_writer().await;
        tasks.push(tokio::spawn(async move {
            let agg = counter(&format!("w{w}"));
            let mut head = Head::EMPTY;
            let mut seqs = Vec::new();
            for i in 0..per_writer {
                let appended = log.append(&agg, &head, vec![added(1, &format!("w{w}-{i}"))]).await.unwrap();
                head = appended.head;
                seqs.push(appended.head.seq);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            seqs
        }));
    }
    // Let some history build up first so there is a real replay phase.
    while h.log.last_sequence().await.unwrap() < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut follow = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::All).await.unwrap();
    let total = (writers * per_writer) as usize;
    let mut seen = Vec::new();
    let mut caught_up_marks = 0;
    while seen.len() < total {
        match tokio::time::timeout(std::time::Duration::from_secs(20), follow.next()).await {
            Ok(Some(Ok(LogItem::Event(e)))) => seen.push(e.seq),
            Ok(Some(Ok(LogItem::CaughtUp(_)))) => caught_up_marks += 1,
            other => panic!("follow stalled after {} events: {other:?}", seen.len()),
        }
    }
    // Read while the writers were still writing; only now collect what they stored.
    let mut appended = BTreeSet::new();
    for task in tasks {
        appended.extend(task.await.unwrap());
    }
    assert!(caught_up_marks <= 1, "caught-up is reported once");
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event delivered twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "delivered in log order");
    assert_eq!(unique, appended, "every appended event delivered");
}

#[tokio::test]
async fn a_load_leaves_no_consumer_behind() {
    let h = Harness::start().await;
    let aggregate = counter("c");
    let mut head = Head::EMPTY;
    for i in 0..3 {
        head = h.log.append(&aggregate, &head, vec![added(i, &format!("cmd-{i}"))]).await.unwrap().head;
    }
    for _ in 0..20 {
        assert_eq!(h.log.load::<CounterEvent>(&aggregate).await.unwrap().events.len(), 3);
    }
    let mut events = h.log.jetstream().get_stream(osp_eventlog::EVENTS_STREAM).await.unwrap();
    assert_eq!(events.info().await.unwrap().state.consumer_count, 0, "each load deleted its consumer");
}
