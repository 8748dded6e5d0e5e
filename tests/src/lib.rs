//! Fixtures shared by the end-to-end tests: a real nats-server per test with the OSP
//! streams applied, and a small counter aggregate to append.

use std::time::Duration;

use osp_eventlog::{Definitions, EventLog, NewEvent};
use osp_local_nats::NatsServer;
use osp_protocol::{derived_event_id, AggregateRef, Timestamp};
use serde::{Deserialize, Serialize};

/// A counter grew by `by`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Added {
    /// How much.
    pub by: i64,
}

/// A counter went back to zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reset {}

osp_protocol::event_payload! {
    /// The test aggregate's events.
    #[derive(Clone, Debug, PartialEq)]
    pub enum CounterEvent {
        Added(Added) = ("counter.added", 1),
        Reset(Reset) = ("counter.reset", 1),
    }
}

/// A fresh server with the OSP streams, and the event log opened on it.
pub struct Harness {
    /// The server; tests may kill and restart it.
    pub server: NatsServer,
    /// A connection that reconnects forever.
    pub client: async_nats::Client,
    /// The event log on `client`.
    pub log: EventLog,
}

impl Harness {
    /// Starts a server on a free port with a temp store and applies `streams/`.
    pub async fn start() -> Harness {
        let server = NatsServer::start().await.expect("start nats-server");
        let client = connect(&server.url()).await;
        Definitions::builtin()
            .apply(&async_nats::jetstream::new(client.clone()))
            .await
            .expect("apply stream definitions");
        let log = EventLog::open(client.clone()).await.expect("open the event log");
        Harness { server, client, log }
    }

    /// Another, independent connection to the same server with its own event log handle.
    pub async fn second_writer(&self) -> EventLog {
        EventLog::open(connect(&self.server.url()).await).await.expect("open the event log")
    }
}

/// Connects with settings suited to tests that restart the server.
pub async fn connect(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .expect("connect to nats-server")
}

/// The counter aggregate named `id`.
pub fn counter(id: &str) -> AggregateRef {
    AggregateRef::new("counter", id).expect("valid id")
}

/// An `Added` event whose id is derived from `cause` (so the same cause gives the same id).
pub fn added(by: i64, cause: &str) -> NewEvent<CounterEvent> {
    new_event(CounterEvent::Added(Added { by }), cause, 0)
}

/// A new event of `payload`, its id derived from `cause` and `index`.
pub fn new_event(payload: CounterEvent, cause: &str, index: u32) -> NewEvent<CounterEvent> {
    NewEvent {
        id: derived_event_id(cause, index, Timestamp(1_700_000_000_000)),
        occurred_at: Timestamp::now(),
        actor: "test".into(),
        correlation_id: None,
        causation_id: Some(cause.to_owned()),
        payload,
    }
}

/// The counter's value after `events`: the fold the tests compare.
pub fn value<'a>(events: impl IntoIterator<Item = &'a CounterEvent>) -> i64 {
    events.into_iter().fold(0, |total, event| match event {
        CounterEvent::Added(Added { by }) => total + by,
        CounterEvent::Reset(_) => 0,
    })
}
