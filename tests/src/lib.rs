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

pub mod python;

/// Sends raw bytes to `osp.v1.in.<service>.<command>` as any NATS client could (a
/// JetStream publish with `Nats-Msg-Id` = `id` and `Osp-Reply-To`), and returns the
/// reply as JSON, decoded from whatever encoding it came in.
pub async fn send_raw_command(
    nats: &async_nats::Client,
    service: &str,
    command: &str,
    content_type: Option<&str>,
    payload: Vec<u8>,
    id: &str,
) -> serde_json::Value {
    use futures::StreamExt;
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.expect("subscribe to the reply inbox");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("Osp-Reply-To", inbox.as_str());
    if let Some(content_type) = content_type {
        headers.insert("Content-Type", content_type);
    }
    let js = async_nats::jetstream::new(nats.clone());
    js.publish_with_headers(format!("osp.v1.in.{service}.{command}"), headers, payload.into())
        .await
        .expect("publish the command")
        .await
        .expect("the inbox stores the command");
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next()).await.expect("a reply").expect("a reply");
    let encoding = reply.headers.as_ref().and_then(|h| h.get("Content-Type")).map(|v| v.as_str().to_owned());
    match osp_protocol::Encoding::from_content_type(encoding.as_deref()).expect("a known encoding") {
        osp_protocol::Encoding::Json => serde_json::from_slice(&reply.payload).expect("a JSON reply"),
        osp_protocol::Encoding::MessagePack => rmp_serde::from_slice(&reply.payload).expect("a MessagePack reply"),
    }
}

/// Checks that `reply` (from [`send_raw_command`]) refuses the command with error `code`,
/// naming `field` (when given) and saying `words`, and names the rejection's record.
#[track_caller]
pub fn assert_refused(id: &str, reply: &serde_json::Value, code: &str, field: Option<&str>, words: &str) {
    assert_eq!(reply["ok"], false, "{id}: {reply}");
    let error = &reply["error"];
    assert_eq!(error["error"], code, "{id}: {reply}");
    if let Some(field) = field {
        let named = error.get("field").or_else(|| error.get("path"));
        assert_eq!(named.and_then(serde_json::Value::as_str), Some(field), "{id}: {reply}");
    }
    assert!(error["message"].as_str().unwrap_or_default().contains(words), "{id}: {reply}");
    assert!(reply["seq"].as_u64().is_some(), "{id}: the reply names the rejection's record: {reply}");
}

/// Polls `check` until it holds; fails the test naming `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a service binary (`osp-registry`, `osp-scheduler`) against the server at
/// `url`, as an operator runs it, with `args`; returns once its log says `started`.
pub async fn spawn_service(binary: &str, url: &str, args: &[&str], started: &str) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(binary)
        .args(["--nats-url", url])
        .args(args)
        .env("OSP_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let up = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(started) {
                return true;
            }
        }
        false
    });
    assert!(up.await.unwrap_or(false), "{binary} did not log {started:?}");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// The rejection records on the log, by command id, with the service that recorded them.
pub async fn rejections(url: &str) -> std::collections::BTreeMap<String, (String, osp_protocol::Error)> {
    use osp_eventlog::{LogItem, Recorded, Start};
    let log = EventLog::open(connect(url).await).await.expect("open the event log");
    let mut follow = log
        .follow::<Recorded<osp_protocol::RejectionEvent>>("osp.v1.evt.rejection.*", Start::All)
        .await
        .expect("follow the rejections");
    let mut recorded = std::collections::BTreeMap::new();
    while let Some(item) = follow.next().await {
        match item.expect("a readable log") {
            LogItem::Event(event) => {
                let osp_protocol::RejectionEvent::Recorded(record) = event.envelope.payload;
                let first = recorded.insert(record.command_id, (record.service, record.error));
                assert!(first.is_none(), "each refusal is recorded once");
            }
            LogItem::Malformed(bad) => panic!("unreadable rejection record: {bad:?}"),
            LogItem::CaughtUp(_) => break,
        }
    }
    recorded
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
