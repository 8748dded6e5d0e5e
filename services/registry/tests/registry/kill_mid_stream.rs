//! Kill -9 a registry instance in the middle of a stream of registrations: nothing
//! accepted is lost or doubled, and a new instance rebuilds exactly the same state
//! from the log.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{client, eventually, server};
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_protocol::registry::EntryEvent;
use tokio::process::Child;

/// An `osp-registry` process, as an operator runs it; returns once it serves.
async fn spawn_registry(url: &str) -> Child {
    osp_tests::spawn_service(env!("CARGO_BIN_EXE_osp-registry"), url, &["--ack-wait", "2s"], "registry started").await
}

#[tokio::test]
async fn kill_9_mid_stream_loses_and_doubles_nothing_and_a_rebuild_is_identical() {
    let server = server().await;
    let url = server.url();
    let mut first = spawn_registry(&url).await;

    // A stream of registrations, each with its own id, stored in the inbox (acked by
    // JetStream) without waiting for the registry.
    let total = 600;
    let nats = osp_tests::connect(&url).await;
    let js = async_nats::jetstream::new(nats.clone());
    let sender = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 0..total {
            let body = serde_json::json!({"registry": "tools", "name": format!("t{i:04}"), "resource": {"i": i}});
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Content-Type", "application/json");
            headers.insert("Nats-Msg-Id", format!("cmd-{i}").as_str());
            let ack = js
                .publish_with_headers("osp.v1.in.registry.register", headers, serde_json::to_vec(&body).unwrap().into())
                .await
                .unwrap();
            acks.push(ack);
        }
        for ack in acks {
            ack.await.expect("the inbox stored the command");
        }
    });

    // Kill it mid-stream: once some, but not all, registrations are on the log.
    let log = EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    eventually(Duration::from_secs(30), "the first registrations", || async {
        log.last_sequence().await.unwrap() >= 100
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let at_kill = log.last_sequence().await.unwrap();
    sender.await.unwrap();
    assert!(at_kill < total, "the kill came mid-stream (log at {at_kill} of {total})");

    // A new instance takes over, including the commands the dead one held.
    let mut second = spawn_registry(&url).await;
    let reader = client(&url).await;
    eventually(Duration::from_secs(60), "every registration", || async {
        let digest = reader.registry().digest().await.unwrap().result;
        digest.registries.get("tools").copied() == Some(total)
    })
    .await;

    // The log: each command exactly once, nothing else.
    let mut follow = log.follow::<Recorded<EntryEvent>>("osp.v1.evt.entry.*", Start::All).await.unwrap();
    let (mut names, mut causes, mut events) = (BTreeSet::new(), BTreeSet::new(), 0);
    while let Some(item) = follow.next().await {
        match item.unwrap() {
            LogItem::Event(event) => {
                events += 1;
                let EntryEvent::Registered(doc) = &event.envelope.payload else { panic!("only registrations") };
                names.insert(doc.name.to_string());
                causes.insert(event.envelope.causation_id.clone().unwrap());
            }
            LogItem::Malformed(bad) => panic!("malformed event {bad:?}"),
            LogItem::CaughtUp(_) => break,
        }
    }
    assert_eq!((events, names.len(), causes.len()), (total, total as usize, total as usize), "none lost, none doubled");
    assert_eq!(causes, (0..total).map(|i| format!("cmd-{i}")).collect());
    assert!(log.verify("osp.v1.evt.>", |_, _| {}).await.unwrap().is_clean());

    // A rebuild from scratch holds exactly the same state.
    let before = reader.registry().digest().await.unwrap().result;
    let listed = reader.registry().list_all("tools").await.unwrap();
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    let _third = spawn_registry(&url).await;
    let fresh = client(&url).await;
    assert_eq!(fresh.registry().digest().await.unwrap().result, before);
    assert_eq!(fresh.registry().list_all("tools").await.unwrap(), listed);
}
