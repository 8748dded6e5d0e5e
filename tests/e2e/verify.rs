//! Tamper evidence: forged and malformed events are found and named by sequence.

use osp_eventlog::{Error, Head, LogItem, ProblemKind, Recorded, Start};
use osp_protocol::subject::ALL_EVENTS;
use osp_protocol::{AnyPayload, Envelope, EventHash};
use osp_tests::{added, counter, CounterEvent, Harness};

/// Publishes raw bytes to a subject of the log, as any NATS client could.
async fn publish_raw(h: &Harness, subject: String, bytes: Vec<u8>) -> u64 {
    h.log.jetstream().publish(subject, bytes.into()).await.unwrap().await.unwrap().sequence
}

#[tokio::test]
async fn a_clean_log_verifies() {
    let h = Harness::start().await;
    for id in ["a", "b"] {
        let mut head = Head::EMPTY;
        for i in 0..5 {
            head = h.log.append(&counter(id), &head, vec![added(i, &format!("{id}{i}"))]).await.unwrap().head;
        }
    }
    let mut calls = 0;
    let report = h.log.verify(ALL_EVENTS, |_, _| calls += 1).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.events, report.aggregates, report.up_to), (10, 2, 10));
    assert_eq!(calls, 10, "progress is reported per event");
}

#[tokio::test]
async fn a_forged_event_with_a_wrong_previous_hash_is_reported() {
    let h = Harness::start().await;
    let agg = counter("victim");
    let mut head = Head::EMPTY;
    for i in 0..3 {
        head = h.log.append(&agg, &head, vec![added(i, &format!("real-{i}"))]).await.unwrap().head;
    }
    // Copy the last genuine event and append a forged successor whose link is wrong.
    // (The chain is unsigned: a forger who can read the log can compute the right hash;
    // what keeps forgers out is the account permission to publish on osp.v1.evt.>, see
    // docs/operations.md. The chain proves no stored event was altered or removed.)
    let last = h.log.load::<AnyPayload>(&agg).await.unwrap().events.pop().unwrap();
    let mut forged: Envelope<AnyPayload> = last.envelope.clone();
    forged.id = uuid::Uuid::now_v7();
    forged.version += 1;
    forged.prev_hash = Some(EventHash::of(b"not the previous event"));
    let forged_seq = publish_raw(&h, agg.subject(), forged.encode().unwrap()).await;

    // A later genuine-looking append on another aggregate stays clean.
    h.log.append(&counter("bystander"), &Head::EMPTY, vec![added(1, "b")]).await.unwrap();

    let report = h.log.verify(ALL_EVENTS, |_, _| {}).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.seq, forged_seq);
    assert_eq!(problem.subject, agg.subject());
    assert!(matches!(problem.kind, ProblemKind::BrokenLink { expected: Some(h), .. } if h == last.hash));
    assert!(problem.to_string().contains("broken hash link"), "{problem}");
}

#[tokio::test]
async fn an_event_claiming_another_aggregate_or_skipping_a_version_is_reported() {
    let h = Harness::start().await;
    let a = counter("a");
    let head = h.log.append(&a, &Head::EMPTY, vec![added(1, "a1")]).await.unwrap().head;
    let genuine = h.log.load::<AnyPayload>(&a).await.unwrap().events.pop().unwrap();

    // The same bytes stored under another aggregate's subject.
    let moved = publish_raw(&h, counter("b").subject(), genuine.envelope.encode().unwrap()).await;
    // A correctly linked event that skips a version.
    let mut skipping = genuine.envelope.clone();
    skipping.version = head.version + 2;
    skipping.prev_hash = head.hash;
    let skipped = publish_raw(&h, a.subject(), skipping.encode().unwrap()).await;

    let report = h.log.verify(ALL_EVENTS, |_, _| {}).await.unwrap();
    let kinds: Vec<_> = report.problems.iter().map(|p| (p.seq, p.kind.clone())).collect();
    assert_eq!(
        kinds,
        [
            (moved, ProblemKind::WrongAggregate { claimed: "counter:a".into() }),
            (skipped, ProblemKind::VersionGap { expected: 2, found: 3 }),
        ]
    );
}

#[tokio::test]
async fn a_malformed_message_on_the_log_is_reported_with_its_sequence_never_a_panic() {
    let h = Harness::start().await;
    let agg = counter("m");
    let head = h.log.append(&agg, &Head::EMPTY, vec![added(1, "ok")]).await.unwrap().head;
    let garbage = [b"\xc1\xc1\xc1".to_vec(), b"{\"json\": true}".to_vec(), rmp_like_map_without_payload(), Vec::new()];
    let mut bad_seqs = Vec::new();
    for bytes in garbage {
        bad_seqs.push(publish_raw(&h, agg.subject(), bytes).await);
    }
    // A message on a subject that is not an aggregate subject at all.
    let stray = publish_raw(&h, "osp.v1.evt.lonely".into(), b"x".to_vec()).await;
    h.log.append(&counter("after"), &Head::EMPTY, vec![added(2, "after")]).await.unwrap();

    // Followers report each bad message and go on.
    let mut follow = h.log.follow::<Recorded<CounterEvent>>(ALL_EVENTS, Start::All).await.unwrap();
    let mut malformed = Vec::new();
    let mut good = Vec::new();
    loop {
        match follow.next().await.unwrap().unwrap() {
            LogItem::Event(e) => good.push(e.seq),
            LogItem::Malformed(m) => {
                assert!(!m.error.to_string().is_empty());
                malformed.push(m.seq)
            }
            LogItem::CaughtUp(_) => break,
        }
    }
    let mut expected_bad = bad_seqs.clone();
    expected_bad.push(stray);
    assert_eq!(malformed, expected_bad);
    assert_eq!(good, [1, stray + 1]);

    // Loading the aggregate refuses to decide on an unreadable history.
    match h.log.load::<CounterEvent>(&agg).await {
        Err(Error::Malformed { seq, .. }) => assert_eq!(seq, bad_seqs[0]),
        other => panic!("expected a malformed-history error, got {other:?}"),
    }
    // An append on the stale head is a conflict, not a crash.
    assert!(h.log.append(&agg, &head, vec![added(1, "x")]).await.unwrap_err().is_conflict());

    // Verify names the first bad message of the aggregate and the stray one.
    let report = h.log.verify(ALL_EVENTS, |_, _| {}).await.unwrap();
    let seqs: Vec<u64> = report.problems.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [bad_seqs[0], stray]);
    assert!(matches!(report.problems[0].kind, ProblemKind::Malformed(_)));
    assert!(matches!(report.problems[1].kind, ProblemKind::NotAnAggregateSubject(_)));
}

/// A MessagePack map that looks like an envelope but has no payload.
fn rmp_like_map_without_payload() -> Vec<u8> {
    // {"type": "counter.added"} encoded by hand: fixmap(1), fixstr(4) "type", fixstr(13).
    let mut bytes = vec![0x81, 0xa4];
    bytes.extend_from_slice(b"type");
    bytes.push(0xad);
    bytes.extend_from_slice(b"counter.added");
    bytes
}
