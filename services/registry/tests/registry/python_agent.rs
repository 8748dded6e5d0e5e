//! The Python example agent (`examples/python/agent.py`) against a real server and
//! registry: the wire protocol spoken from another language with nothing but nats-py.
//!
//! Needs `python3` and nats-py in `.osp/tools/python` (`scripts/install-python-deps`,
//! which `scripts/test` runs).

use crate::common::{eventually, system};
use futures::StreamExt;
use osp_eventlog::EventLog;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::{EntryView, PageRequest, Status};
use osp_protocol::registry::{EntryEvent, EntryKey};
use osp_tests::python::{PythonAgent, WAIT};
use serde_json::json;

/// The card the agent below registers (`--capability py-echo --capability py-shout
/// --max-concurrency 3`, and the version the script declares).
fn expected_card() -> serde_json::Value {
    json!({"capabilities": ["py-echo", "py-shout"], "max_concurrency": 3, "version": "0.1.0"})
}

fn resource_json(view: &EntryView) -> serde_json::Value {
    serde_json::to_value(&view.resource).expect("a resource reads as JSON")
}

#[tokio::test]
async fn the_python_agent_registers_heartbeats_and_unregisters_on_sigterm() {
    const NAME: &str = "py-agent-1";
    let (server, instance, client) = system().await;
    let registry = client.registry();
    // Listen for its beats before it starts, so none is missed.
    let mut beats = osp_tests::connect(&server.url()).await.subscribe(format!("osp.v1.hb.{NAME}")).await.unwrap();

    let mut agent = PythonAgent::start(
        &server.url(),
        &[
            "--name",
            NAME,
            "--capability",
            "py-echo",
            "--capability",
            "py-shout",
            "--max-concurrency",
            "3",
            "--heartbeat",
            "1",
        ],
    )
    .await;
    let registered = agent.line_starting("registered ").await;
    let seq = registered
        .strip_prefix(&format!("registered agents/{NAME} at seq "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|seq| seq.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected registration line: {registered:?}"));
    assert!(seq > 0, "{registered}");
    // Its own find (read-your-writes on its register's seq) lists it. With one registry
    // instance, the view has then applied the registration for our queries too.
    let found = agent.line_starting("found in find: ").await;
    let names: Vec<String> = serde_json::from_str(found.trim_start_matches("found in find: ")).expect("a JSON list");
    assert_eq!(names, [NAME]);

    // Found by its second capability, online, with the card it sent.
    let by_capability =
        registry.find_all("agents", from_json(&json!({"capabilities": "py-shout"})), true).await.unwrap();
    assert_eq!(by_capability.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), [NAME]);
    let entry = &by_capability[0];
    assert_eq!((entry.status, entry.revision), (Status::Online, 1));
    assert_eq!(resource_json(entry), expected_card());
    assert_eq!(entry.description, "An example agent written in Python");
    let metadata = serde_json::to_value(entry.metadata.as_ref().expect("metadata")).unwrap();
    assert_eq!(metadata["language"], "python", "{metadata}");

    // It beats on the subject the registry listens to, and is live (a registration
    // starts online; the beats keep it so).
    for _ in 0..2 {
        let beat = tokio::time::timeout(WAIT, beats.next()).await;
        beat.unwrap_or_else(|_| panic!("no heartbeat on osp.v1.hb.{NAME} within {WAIT:?}")).expect("subscribed");
    }
    let live = registry.live(PageRequest::default()).await.unwrap();
    assert!(live.entries.iter().any(|e| e.name == NAME && e.status == Status::Online), "not live: {live:?}");

    // SIGTERM: it unregisters and exits 0.
    agent.terminate().await;
    let (status, rest, stderr) = agent.exit().await;
    assert!(status.success(), "the agent exited with {status}; its stderr:\n{stderr}");
    assert_eq!(rest, ["unregistered"], "stderr:\n{stderr}");
    eventually(WAIT, "the entry to be gone", || async { registry.get("agents", NAME).await.unwrap().is_none() }).await;

    // The log: what it caused carries its actor; what it sent is what was recorded.
    let key = EntryKey::new("agents", NAME).unwrap();
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap().events;
    let caused: Vec<_> = history
        .iter()
        .filter(|e| !matches!(e.envelope.payload, EntryEvent::WentOffline(_) | EntryEvent::CameOnline(_)))
        .collect();
    assert_eq!(caused.len(), 2, "a registration and an unregistration: {history:?}");
    for event in &caused {
        assert_eq!(event.envelope.actor, format!("agent:{NAME}"), "{event:?}");
    }
    match &caused[0].envelope.payload {
        EntryEvent::Registered(doc) => {
            assert_eq!(doc.name.as_str(), NAME);
            assert_eq!(serde_json::to_value(&doc.resource).unwrap(), expected_card());
        }
        other => panic!("expected entry.registered first, found {other:?}"),
    }
    assert_eq!(caused[0].seq, seq, "the register reply's seq is its event's");
    match &caused[1].envelope.payload {
        EntryEvent::Unregistered(gone) => assert_eq!(gone.reason.as_deref(), Some("shut down")),
        other => panic!("expected entry.unregistered last, found {other:?}"),
    }
    instance.shutdown().await;
}

#[tokio::test]
async fn a_refused_registration_exits_2_with_the_registrys_message() {
    let (server, instance, client) = system().await;

    let agent = PythonAgent::start(&server.url(), &["--name", "py-bad", "--capability", "not.a.token"]).await;
    let (status, stdout, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(2), "stdout: {stdout:?}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(r#"invalid resource.capabilities[0] "not.a.token": must not contain '.'"#),
        "the registry's message is shown: {stderr}"
    );
    assert!(!stdout.iter().any(|line| line.starts_with("registered")), "{stdout:?}");
    assert_eq!(client.registry().get("agents", "py-bad").await.unwrap(), None);
    instance.shutdown().await;
}
