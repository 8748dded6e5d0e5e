//! Appending: optimistic concurrency, dedupe of retries, atomic batches.

use osp_eventlog::{Error, Head};
use osp_tests::{added, counter, new_event, value, CounterEvent, Harness, Reset};

#[tokio::test]
async fn two_concurrent_writers_one_wins_the_other_conflicts_then_succeeds_after_catching_up() {
    let h = Harness::start().await;
    let other = h.second_writer().await;
    let agg = counter("c1");
    let first = h.log.append(&agg, &Head::EMPTY, vec![added(1, "seed")]).await.unwrap();

    // Both decided on the same head; they race.
    let (a, b) = tokio::join!(
        h.log.append(&agg, &first.head, vec![added(10, "writer-a")]),
        other.append(&agg, &first.head, vec![added(100, "writer-b")]),
    );
    let (winner, loser) = match (a, b) {
        (Ok(won), Err(lost)) => (won, lost),
        (Err(lost), Ok(won)) => (won, lost),
        (a, b) => panic!("exactly one writer must win: {a:?} / {b:?}"),
    };
    let Error::Conflict { expected, actual, .. } = &loser else { panic!("expected a conflict, got {loser}") };
    assert_eq!(*expected, first.head.seq);
    assert_eq!(*actual, winner.head.seq);

    // The loser catches up, decides again on the new head, and succeeds.
    let loaded = h.log.load::<CounterEvent>(&agg).await.unwrap();
    assert_eq!(loaded.head, winner.head);
    let retried = h.log.append(&agg, &loaded.head, vec![added(1000, "writer-retry")]).await.unwrap();
    assert_eq!(retried.head.version, 3);

    let history = h.log.load::<CounterEvent>(&agg).await.unwrap();
    let versions: Vec<u64> = history.events.iter().map(|e| e.envelope.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    let total = value(history.events.iter().map(|e| &e.envelope.payload));
    assert!(total == 1011 || total == 1101, "one of the racers and the retry: {total}");
}

#[tokio::test]
async fn many_writers_racing_on_one_aggregate_each_land_exactly_once() {
    let h = Harness::start().await;
    let agg = counter("hot");
    let writers = 8;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = h.second_writer().await;
        let agg = agg.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                let head = log.load::<CounterEvent>(&agg).await.unwrap().head;
                match log.append(&agg, &head, vec![added(1, &format!("w{w}"))]).await {
                    Ok(_) => return conflicts,
                    Err(e) if e.is_conflict() => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let history = h.log.load::<CounterEvent>(&agg).await.unwrap();
    assert_eq!(history.events.len(), writers);
    assert_eq!(value(history.events.iter().map(|e| &e.envelope.payload)), writers as i64);
}

#[tokio::test]
async fn a_retried_append_with_the_same_ids_is_a_no_op() {
    let h = Harness::start().await;
    let agg = counter("dedupe");
    let first = h.log.append(&agg, &Head::EMPTY, vec![added(5, "cmd-1")]).await.unwrap();
    // The same decision again (as after a lost ack or a redelivered command).
    let again = h.log.append(&agg, &Head::EMPTY, vec![added(5, "cmd-1")]).await.unwrap();
    assert_eq!(again.head, first.head);
    assert_eq!(again.events[0].seq, first.events[0].seq);

    // Same for a multi-event batch.
    let batch = || {
        vec![
            new_event(CounterEvent::Reset(Reset {}), "cmd-2", 0),
            new_event(CounterEvent::Added(osp_tests::Added { by: 7 }), "cmd-2", 1),
        ]
    };
    let stored = h.log.append(&agg, &first.head, batch()).await.unwrap();
    let retried = h.log.append(&agg, &first.head, batch()).await.unwrap();
    assert_eq!(retried.head, stored.head);

    let history = h.log.load::<CounterEvent>(&agg).await.unwrap();
    assert_eq!(history.events.len(), 3, "nothing was stored twice");
    assert_eq!(history.head, stored.head);
    assert_eq!(h.log.last_sequence().await.unwrap(), 3);
}

#[tokio::test]
async fn a_batch_is_atomic_contiguous_and_chained() {
    let h = Harness::start().await;
    let agg = counter("batch");
    let events: Vec<_> =
        (0..5).map(|i| new_event(CounterEvent::Added(osp_tests::Added { by: i }), "cmd", i as u32)).collect();
    let appended = h.log.append(&agg, &Head::EMPTY, events).await.unwrap();
    let seqs: Vec<u64> = appended.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    let loaded = h.log.load::<CounterEvent>(&agg).await.unwrap();
    let strip = |events: &[osp_eventlog::Recorded<CounterEvent>]| {
        events.iter().map(|e| (e.seq, e.hash, e.envelope.clone())).collect::<Vec<_>>()
    };
    assert_eq!(strip(&loaded.events), strip(&appended.events));
    for pair in loaded.events.windows(2) {
        assert_eq!(pair[1].envelope.prev_hash, Some(pair[0].hash));
    }

    // A conflicting batch stores nothing at all.
    let stale = vec![added(1, "late-0"), added(2, "late-1")];
    let err = h.log.append(&agg, &Head::EMPTY, stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(h.log.load::<CounterEvent>(&agg).await.unwrap().events.len(), 5);
}

#[tokio::test]
async fn an_oversized_event_is_refused_before_it_reaches_the_server() {
    let h = Harness::start().await;
    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    struct Blob {
        data: String,
    }
    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum BlobEvent { Stored(Blob) = ("blob.stored", 1) }
    }
    let event = osp_eventlog::NewEvent {
        id: uuid::Uuid::now_v7(),
        occurred_at: osp_protocol::Timestamp::now(),
        actor: "test".into(),
        correlation_id: None,
        causation_id: None,
        payload: BlobEvent::Stored(Blob { data: "x".repeat(2 * 1024 * 1024) }),
    };
    let err = h.log.append(&counter("big"), &Head::EMPTY, vec![event]).await.unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
    assert_eq!(h.log.last_sequence().await.unwrap(), 0);
}

#[tokio::test]
async fn a_burst_of_concurrent_multi_event_appends_all_land() {
    // The server holds at most 50 atomic batches in flight per stream; a burst above
    // that must be absorbed (retried), not surface as a failure.
    let h = Harness::start().await;
    let appends = futures::future::join_all((0..300).map(|i| {
        let log = h.log.clone();
        async move {
            let events = vec![
                new_event(CounterEvent::Added(osp_tests::Added { by: 1 }), &format!("burst-{i}"), 0),
                new_event(CounterEvent::Added(osp_tests::Added { by: 2 }), &format!("burst-{i}"), 1),
            ];
            log.append(&counter(&format!("burst{i}")), &Head::EMPTY, events).await
        }
    }))
    .await;
    let failures: Vec<String> = appends.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
    assert!(failures.is_empty(), "{} of 300 failed, e.g. {:?}", failures.len(), failures.first());
    assert_eq!(h.log.last_sequence().await.unwrap(), 600);
}
