//! The service shell's executor against a real server: a decision that appends nothing
//! (a refusal, a no-op) is checked against the log, not only against a view that may
//! lag; racing executors on one aggregate each land exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use osp_eventlog::Recorded;
use osp_protocol::{AggregateRef, Envelope, Error, Timestamp};
use osp_runtime::{Aggregate, CommandMeta, Executor, Folded, Holds, Projection, Refusal, View};
use osp_tests::{added, counter, CounterEvent, Harness};
use tokio_util::sync::CancellationToken;

/// A counter that must exist before it can be read back.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counter {
    value: Option<i64>,
}

enum Ask {
    /// Add to it.
    Add(i64),
    /// Refused unless it exists.
    Check,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = Ask;

    fn evolve(&mut self, event: &Envelope<CounterEvent>) {
        self.value = Some(osp_tests::value([&event.payload]) + self.value.unwrap_or(0));
    }

    fn decide(&self, command: &Ask, _now: Timestamp) -> Result<Vec<CounterEvent>, Error> {
        match (command, self.value) {
            (Ask::Add(by), _) => Ok(vec![CounterEvent::Added(osp_tests::Added { by: *by })]),
            (Ask::Check, Some(_)) => Ok(vec![]),
            (Ask::Check, None) => Err(Error::NotFound { field: "id".into(), value: "?".into(), reason: "none".into() }),
        }
    }
}

#[derive(Default)]
struct Counters(HashMap<AggregateRef, Folded<Counter>>);

impl View for Counters {
    type Event = CounterEvent;
    fn apply(&mut self, event: &Recorded<CounterEvent>) {
        self.0.entry(event.envelope.aggregate.clone()).or_default().apply(event);
    }
}

impl Holds<Counter> for Counters {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Counter>> {
        self.0.get(aggregate)
    }
}

fn meta(id: &str) -> CommandMeta {
    CommandMeta { id: id.into(), received_at: Timestamp::now(), actor: "test".into(), correlation_id: None }
}

async fn executor(h: &Harness, shutdown: &CancellationToken) -> Arc<Executor<Counter, Counters>> {
    let projection = Projection::<Counters>::start(&h.log, "osp.v1.evt.counter.*", shutdown.clone()).await.unwrap();
    Arc::new(Executor::new(h.log.clone(), projection))
}

#[tokio::test]
async fn a_refusal_rests_on_the_log_not_on_a_lagging_view() {
    let h = Harness::start().await;
    let shutdown = CancellationToken::new();
    let executor = executor(&h, &shutdown).await;
    for i in 0..50 {
        // Another writer creates the counter; at once, before the view can have it,
        // this executor is asked something that is refused unless it exists.
        let aggregate = counter(&format!("c{i}"));
        h.log.append(&aggregate, &osp_eventlog::Head::EMPTY, vec![added(1, &format!("elsewhere-{i}"))]).await.unwrap();
        let place = executor.queue(&aggregate).await;
        match executor.execute(place, &aggregate, &Ask::Check, &meta(&format!("check-{i}"))).await {
            Ok(executed) => assert_eq!(executed.state.state.value, Some(1)),
            Err(Refusal::Rejected(error)) => panic!("round {i}: refused on a stale view: {error}"),
            Err(Refusal::Failed(error)) => panic!("{error}"),
        }
    }
    shutdown.cancel();
}

#[tokio::test]
async fn racing_executors_each_land_once_and_a_repeat_is_recognised() {
    let h = Harness::start().await;
    let shutdown = CancellationToken::new();
    let (one, two) = (executor(&h, &shutdown).await, executor(&h, &shutdown).await);
    let aggregate = counter("shared");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (executor, aggregate) = (if i % 2 == 0 { one.clone() } else { two.clone() }, aggregate.clone());
        tasks.push(tokio::spawn(async move {
            let place = executor.queue(&aggregate).await;
            executor.execute(place, &aggregate, &Ask::Add(1), &meta(&format!("add-{i}"))).await.map(|e| e.seq)
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    let history = h.log.load::<CounterEvent>(&aggregate).await.unwrap();
    assert_eq!(osp_tests::value(history.events.iter().map(|e| &e.envelope.payload)), 40);
    // The same command again, on either instance: applied before, nothing appended.
    let place = two.queue(&aggregate).await;
    let again = two.execute(place, &aggregate, &Ask::Add(1), &meta("add-0")).await.unwrap();
    assert_eq!(again.appended, 0);
    assert_eq!(h.log.load::<CounterEvent>(&aggregate).await.unwrap().events.len(), 40);
    shutdown.cancel();
}

#[tokio::test]
async fn a_queue_on_one_aggregate_is_decided_in_order_each_from_its_predecessors_state() {
    let h = Harness::start().await;
    let shutdown = CancellationToken::new();
    let executor = executor(&h, &shutdown).await;
    let aggregate = counter("queued");
    // Places are taken in order, then all run at once: each decision must see every
    // event of the ones before it, though the view has not applied them yet.
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let place = executor.queue(&aggregate).await;
        let (executor, aggregate) = (executor.clone(), aggregate.clone());
        tasks.push(tokio::spawn(async move {
            let executed = executor.execute(place, &aggregate, &Ask::Add(1), &meta(&format!("q-{i}"))).await;
            (i, executed.map(|e| (e.state.state.value, e.appended)))
        }));
    }
    for task in tasks {
        let (i, executed) = task.await.unwrap();
        let Ok((value, appended)) = executed else { panic!("command {i} was not decided") };
        assert_eq!((value, appended), (Some(i + 1), 1), "command {i} decided on the state after the {i} before it");
    }
    let history = h.log.load::<CounterEvent>(&aggregate).await.unwrap();
    assert_eq!(history.events.len(), 200);
    shutdown.cancel();
}
