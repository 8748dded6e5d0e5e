//! A new service built from the runtime's parts alone, end to end against a real server:
//! a counter service whose commands come through its inbox, whose value is a query,
//! whose events ask (through a reactor) for a timer, and whose fired timer resets it.
//! Nothing of its start-up is written here beyond plugging the parts in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{Recorded, Timers};
use osp_protocol::{AggregateRef, Encoding, Envelope, Error, Timestamp};
use osp_runtime::{
    Aggregate, CommandHandler, CommandMeta, Executed, Executor, Folded, Holds, Inbound, Query, Reactor, Running,
    Service, ServiceConfig, Snapshot, Snapshots, TimerHandler, View,
};
use osp_tests::{counter, eventually, send_raw_command, CounterEvent, Harness};
use serde::{Deserialize, Serialize};
use serde_json::json;

const SERVICE: &str = "counter";
/// A counter that reaches this is reset a moment later, by a timer.
const RESET_AT: i64 = 10;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

#[derive(Clone)]
enum Ask {
    Add(i64),
    Reset,
}

impl Aggregate for Counter {
    type Event = CounterEvent;
    type Command = Ask;

    fn evolve(&mut self, event: &Envelope<CounterEvent>) {
        match &event.payload {
            CounterEvent::Added(added) => self.value += added.by,
            CounterEvent::Reset(_) => self.value = 0,
        }
    }

    fn decide(&self, command: &Ask, _now: Timestamp) -> Result<Vec<CounterEvent>, Error> {
        Ok(match command {
            Ask::Add(by) => vec![CounterEvent::Added(osp_tests::Added { by: *by })],
            Ask::Reset if self.value == 0 => vec![],
            Ask::Reset => vec![CounterEvent::Reset(osp_tests::Reset {})],
        })
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Counters(HashMap<String, Folded<Counter>>);

impl View for Counters {
    type Event = CounterEvent;
    fn apply(&mut self, event: &Recorded<CounterEvent>) {
        self.0.entry(event.envelope.aggregate.id.to_string()).or_default().apply(event);
    }
}

impl Snapshot for Counters {
    const NAME: &'static str = "test-counters";
    const SHAPE: u32 = 1;
}

impl Holds<Counter> for Counters {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Counter>> {
        self.0.get(aggregate.id.as_str())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Add {
    id: String,
    by: i64,
}

struct Commands;

impl CommandHandler for Commands {
    type Aggregate = Counter;
    type View = Counters;
    type Command = Ask;
    type Outcome = i64;

    fn commands(&self) -> &'static [&'static str] {
        &["add"]
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Ask), Error> {
        match inbound.command.as_str() {
            "add" => {
                let add: Add = encoding.decode(&inbound.payload)?;
                Ok((AggregateRef::new("counter", &add.id)?, Ask::Add(add.by)))
            }
            other => Err(Error::Invalid { field: "command".into(), reason: format!("no command {other:?}") }),
        }
    }

    fn outcome(&self, _: &Ask, executed: &Executed<Counter>) -> i64 {
        executed.state.state.value
    }
}

#[derive(Deserialize)]
struct Get {
    id: String,
}

/// A counter that reached [`RESET_AT`] asks for its reset, a second later.
struct Resets {
    view: osp_runtime::Projection<Counters>,
    executor: Arc<Executor<Counter, Counters>>,
    timers: Timers,
}

impl Reactor for Resets {
    type Event = CounterEvent;
    type Effect = Timestamp;
    const NAME: &'static str = "resets";
    const KIND: &'static str = "counter";

    async fn ready(&self, seq: u64) -> bool {
        self.view.wait_applied(seq, Duration::from_secs(5)).await.is_ok()
    }

    async fn effects_of(&self, event: &Recorded<CounterEvent>) -> osp_eventlog::Result<Vec<Timestamp>> {
        let value = self.view.read().0.get(event.envelope.aggregate.id.as_str()).map_or(0, |c| c.state.value);
        Ok(match event.envelope.payload {
            CounterEvent::Added(_) if value >= RESET_AT => vec![Timestamp(event.stored_at.millis() + 1000)],
            _ => vec![],
        })
    }

    async fn perform(&self, event: &Recorded<CounterEvent>, at: &Timestamp) -> osp_eventlog::Result<()> {
        let id = &event.envelope.aggregate.id;
        self.timers.set(id, *at, id.to_string().into_bytes().into()).await
    }
}

impl TimerHandler for Resets {
    async fn fire(&self, fired: &[u8], fired_at: Timestamp) -> osp_eventlog::Result<()> {
        let id = String::from_utf8_lossy(fired).into_owned();
        let meta = CommandMeta {
            id: format!("reset:{id}:{}", fired_at.millis()),
            received_at: fired_at,
            actor: "service:counter".into(),
            correlation_id: None,
        };
        self.executor.decide_own(&counter(&id), &Ask::Reset, &meta).await.map(|_| ())
    }
}

/// The whole start-up of the counter service.
async fn start(client: async_nats::Client) -> anyhow::Result<Running> {
    let config = ServiceConfig { snapshots: Snapshots::OFF, ..ServiceConfig::default() };
    let mut service = Service::open(client, SERVICE, "0.0.1", config).await?;
    let view = service.view::<Counters>(&["counter"]).await?;
    let executor = service.executor(&view);
    let resets = Arc::new(Resets { view: view.clone(), executor: executor.clone(), timers: service.timers().await? });
    service.commands(Commands, executor);
    let get = Query::new("get", |view: &Counters, get: Get| Ok(view.0.get(&get.id).map_or(0, |c| c.state.value)));
    service.queries(view, vec![get]).await?;
    service.react(resets.clone()).await?;
    service.on_timers(&resets.timers, resets.clone(), 8).await?;
    service.running().await
}

async fn get(client: &async_nats::Client, id: &str) -> i64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    let body = json!({ "id": id }).to_string().into();
    let reply = client.request_with_headers("osp.v1.q.counter.get", headers, body).await.expect("an answer");
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
    reply["result"].as_i64().unwrap_or_else(|| panic!("a value: {reply}"))
}

#[tokio::test]
async fn a_service_built_from_the_runtime_alone_takes_commands_answers_queries_reacts_and_keeps_timers() {
    let h = Harness::start().await;
    let running = start(h.client.clone()).await.expect("the counter service starts");
    let json = Some("application/json");
    let add = |id: &'static str, by: i64| json!({ "id": id, "by": by }).to_string().into_bytes();

    let reply = send_raw_command(&h.client, SERVICE, "add", json, add("c1", 4), "add-1").await;
    assert_eq!((reply["ok"].clone(), reply["result"].clone()), (json!(true), json!(4)), "{reply}");
    assert_eq!(get(&h.client, "c1").await, 4);

    // Bad input is refused, naming the field, and recorded on the log.
    let reply = send_raw_command(&h.client, SERVICE, "add", json, br#"{"id":"c1","by":"x"}"#.to_vec(), "add-bad").await;
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(reply["error"].to_string().contains("by"), "the refusal names the field: {reply}");
    assert!(osp_tests::rejections(&h.server.url()).await.contains_key("add-bad"), "the refusal is on the log");

    // Reaching the threshold asks for a timer; the fired timer resets the counter.
    let reply = send_raw_command(&h.client, SERVICE, "add", json, add("c1", 7), "add-2").await;
    assert_eq!(reply["result"], 11, "{reply}");
    eventually(Duration::from_secs(10), "the timer resets the counter", || async { get(&h.client, "c1").await == 0 })
        .await;
    let history = h.log.load::<CounterEvent>(&counter("c1")).await.unwrap();
    assert!(matches!(history.events.last().map(|e| &e.envelope.payload), Some(CounterEvent::Reset(_))));
    assert_eq!(history.events.last().unwrap().envelope.actor, "service:counter");

    running.shutdown().await;
}
