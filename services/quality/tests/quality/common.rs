//! What every quality test starts from: a fresh nats-server, quality instances on
//! connections of their own, a client, and the service's commands and queries sent with
//! the client's generic `command` / `query`.

use std::collections::BTreeMap;

use osp_client::{Answer, Client, Error};
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_local_nats::NatsServer;
use osp_protocol::quality::queries::Digest;
use osp_protocol::quality::RemoveOutcome;
use osp_protocol::quality::{AuditEntry, AuditRecorded, CheckOutcome, QualityEvent, Rule};
use osp_quality::{Config, Quality};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// A server of its own, on a free port with a temp store.
pub async fn server() -> NatsServer {
    NatsServer::start().await.expect("start nats-server")
}

/// A server, a quality instance and a client, each on a connection of its own.
pub async fn system() -> (NatsServer, Quality, Client) {
    let server = server().await;
    let instance = quality(&server.url()).await;
    let client = client(&server.url()).await;
    (server, instance, client)
}

/// A quality instance with its own connection.
pub async fn quality(url: &str) -> Quality {
    Quality::start(osp_tests::connect(url).await, Config::default()).await.expect("start the quality service")
}

/// A client with its own connection.
pub async fn client(url: &str) -> Client {
    Client::new(osp_tests::connect(url).await).with_actor("user:test")
}

/// Sends a quality command.
pub async fn command<R: DeserializeOwned>(
    client: &Client,
    command: &str,
    body: &impl Serialize,
) -> Result<Answer<R>, Error> {
    client.command("quality", command, body).await
}

/// Asks a quality query.
pub async fn query<R: DeserializeOwned>(
    client: &Client,
    query: &str,
    body: &impl Serialize,
) -> Result<Answer<R>, Error> {
    client.query("quality", query, body).await
}

/// Adds `rule`, which must be accepted.
pub async fn add(client: &Client, rule: &Value) {
    command::<Value>(client, "add_rule", rule).await.unwrap_or_else(|e| panic!("add {rule}: {e}"));
}

/// Removes the rule `name`: whether it was there.
pub async fn remove(client: &Client, name: &str) -> bool {
    command::<RemoveOutcome>(client, "remove_rule", &json!({"name": name})).await.unwrap().result.removed
}

/// Checks `output` against `rules` under `audit_id`: the audit entry.
pub async fn check(client: &Client, audit_id: &str, output: Value, rules: &[&str]) -> AuditEntry {
    let body = json!({"audit_id": audit_id, "output": output, "rules": rules});
    match command::<CheckOutcome>(client, "check", &body)
        .await
        .unwrap_or_else(|e| panic!("check {audit_id}: {e}"))
        .result
    {
        CheckOutcome::Recorded(entry) => *entry,
        CheckOutcome::Open(open) => panic!("a check of built-in rules is recorded at once, not {open:?}"),
    }
}

/// The service's digest.
pub async fn digest(client: &Client) -> Digest {
    query::<Digest>(client, "digest", &json!({})).await.unwrap().result
}

/// The rejection a command or query got.
#[track_caller]
pub fn refusal<T: std::fmt::Debug>(outcome: Result<T, Error>) -> osp_protocol::Error {
    match outcome {
        Err(Error::Rejected { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Three built-in rules: a summary is required (error), no shouting in it (warning),
/// the score is 0 to 1 (error, critical).
pub fn three_rules() -> Vec<Value> {
    vec![
        json!({"name": "has-summary", "description": "the output has a summary", "severity": "error",
               "kind": "required-fields", "params": {"fields": ["/summary"]}}),
        json!({"name": "no-shouting", "severity": "warning",
               "kind": "regex", "params": {"pattern": "[A-Z]{5,}", "mustMatch": false, "field": "/summary"}}),
        json!({"name": "score-range", "severity": "error", "critical": true,
               "kind": "range", "params": {"min": 0, "max": 1, "field": "/score"}}),
    ]
}

/// The names of [`three_rules`].
pub const THREE: [&str; 3] = ["has-summary", "no-shouting", "score-range"];

/// Adds [`three_rules`].
pub async fn add_three(client: &Client) {
    for rule in three_rules() {
        add(client, &rule).await;
    }
}

/// Every `audit.recorded` on the log, by audit id, in log order.
pub async fn recorded_audits(url: &str) -> BTreeMap<String, Vec<AuditRecorded>> {
    let log = EventLog::open(osp_tests::connect(url).await).await.expect("open the event log");
    let mut follow = log.follow::<Recorded<QualityEvent>>("osp.v1.evt.audit.*", Start::All).await.unwrap();
    let mut recorded: BTreeMap<String, Vec<AuditRecorded>> = BTreeMap::new();
    while let Some(item) = follow.next().await {
        match item.expect("a readable log") {
            LogItem::Event(event) => match event.envelope.payload {
                QualityEvent::AuditRecorded(audit) => recorded.entry(audit.entry.id.clone()).or_default().push(audit),
                // The steps of a check agents help make.
                QualityEvent::AuditOpened(_) | QualityEvent::AuditPartEnded(_) => {}
                other => panic!("not an audit event on an audit subject: {other:?}"),
            },
            LogItem::Malformed(bad) => panic!("unreadable event: {bad:?}"),
            LogItem::CaughtUp(_) => break,
        }
    }
    recorded
}

/// The rule definitions as the catalog's commands sent them.
pub fn rules_of(values: &[Value]) -> Vec<Rule> {
    values.iter().map(|value| serde_json::from_value(value.clone()).unwrap()).collect()
}

#[allow(unused_imports)] // not every module polls
pub use osp_tests::eventually;

/// An `osp-quality` process, as an operator runs it; returns once it serves.
pub async fn spawn_quality(url: &str) -> tokio::process::Child {
    osp_tests::spawn_service(env!("CARGO_BIN_EXE_osp-quality"), url, &["--ack-wait", "2s"], "quality started").await
}
