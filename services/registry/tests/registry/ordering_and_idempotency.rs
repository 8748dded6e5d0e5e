//! Decisions rest on the log, not on a view that may lag; one instance keeps the order
//! commands on an aggregate arrived in; a command id is applied at most once and a
//! resend is answered with the first outcome.

use std::time::Duration;

use crate::common::{client, registry, server, system, tool};
use osp_eventlog::{EventLog, Head, NewEvent};
use osp_protocol::registry::queries::RegisterOutcome;
use osp_protocol::registry::{EntryEvent, EntryKey};
use osp_protocol::{derived_event_id, Timestamp};
use serde_json::json;

#[tokio::test]
async fn a_refusal_is_checked_against_the_log_not_a_lagging_view() {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let client = client(&server.url()).await;
    let registered = |name: String, resource| {
        let doc = tool(&name, resource);
        let event = NewEvent {
            id: derived_event_id(&name, 0, Timestamp::now()),
            occurred_at: Timestamp::now(),
            actor: "test".into(),
            correlation_id: None,
            causation_id: Some(format!("elsewhere/{name}")),
            payload: EntryEvent::Registered(doc.clone()),
        };
        (doc.key().aggregate(), event)
    };
    let filler = "x".repeat(60 * 1024);
    for round in 0..10 {
        // Written straight to the log (as another instance would): large entries the
        // view must read first, then the one that matters; then at once an unregister,
        // decided while the view is still behind.
        for n in 0..8 {
            let (aggregate, event) = registered(format!("filler-{round}-{n}"), json!({"x": filler}));
            log.append(&aggregate, &Head::EMPTY, vec![event]).await.unwrap();
        }
        let name = format!("fresh-{round}");
        let (aggregate, event) = registered(name.clone(), json!({"round": round}));
        log.append(&aggregate, &Head::EMPTY, vec![event]).await.unwrap();
        assert!(client.registry().unregister("tools", &name, None).await.unwrap(), "round {round}: it is on the log");
    }
    instance.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_instance_decides_an_aggregates_commands_in_arrival_order() {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let nats = osp_tests::connect(&server.url()).await;
    let js = async_nats::jetstream::new(nats.clone());
    let big: Vec<u32> = (0..6000).collect();
    let rounds = 20;
    for round in 0..rounds {
        // A slow-to-read register, then at once a quick unregister of the same entry.
        let name = format!("ordered-{round}");
        let register = json!({"registry": "tools", "name": name, "resource": {"big": big}});
        let unregister = json!({"registry": "tools", "name": name});
        for (command, body) in [("register", register), ("unregister", unregister)] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Content-Type", "application/json");
            let subject = format!("osp.v1.in.registry.{command}");
            js.publish_with_headers(subject, headers, serde_json::to_vec(&body).unwrap().into()).await.unwrap();
        }
    }
    let reader = client(&server.url()).await;
    crate::common::eventually(Duration::from_secs(30), "every command decided", || async {
        instance.commands().accepted() + instance.commands().rejected() == 2 * rounds
    })
    .await;
    assert_eq!(instance.commands().rejected(), 0, "no unregister overtook its register");
    reader.registry().register(&tool("marker", json!({}))).await.unwrap();
    let left: Vec<_> = reader.registry().list_all("tools").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(left, ["marker"]);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_resent_command_is_answered_with_its_first_outcome_and_applied_once() {
    let (server, instance, client) = system().await;
    let entry = tool("x", json!({"v": 1}));
    let first = client.command_with_id::<_, RegisterOutcome>("registry", "register", &entry, "reg-1").await.unwrap();
    assert_eq!((first.result.revision, first.result.created), (1, true));
    client.registry().register(&tool("x", json!({"v": 2}))).await.unwrap();
    assert!(client.registry().unregister("tools", "x", None).await.unwrap());

    // The same command id again, after the entry changed and went: nothing happens, and
    // the answer is the one the first sending got.
    let again = client.command_with_id::<_, RegisterOutcome>("registry", "register", &entry, "reg-1").await.unwrap();
    assert_eq!((again.seq, again.result), (first.seq, first.result));
    assert_eq!(client.registry().get("tools", "x").await.unwrap(), None, "not registered again");
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let history = log.load::<EntryEvent>(&EntryKey::new("tools", "x").unwrap().aggregate()).await.unwrap();
    assert_eq!(history.events.len(), 3, "registered, updated, unregistered: nothing more");
    instance.shutdown().await;
}

#[tokio::test]
async fn a_command_arriving_while_an_instance_stops_is_handled_by_the_next() {
    let server = server().await;
    let stopping = registry(&server.url(), Duration::from_secs(15)).await;
    let client = client(&server.url()).await.with_timeout(Duration::from_secs(30));
    let shutdown = tokio::spawn(stopping.shutdown());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let late = tokio::spawn({
        let client = client.clone();
        async move { client.registry().register(&tool("late", json!({}))).await }
    });
    shutdown.await.unwrap();
    let next = registry(&server.url(), Duration::from_secs(15)).await;
    late.await.unwrap().expect("the command sent during the shutdown is answered");
    assert!(client.registry().get("tools", "late").await.unwrap().is_some());
    next.shutdown().await;
}
