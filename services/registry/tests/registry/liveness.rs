//! Liveness: an agent that stops heartbeating goes offline after the timeout and back
//! online when it returns, with one logged transition each way, even with two
//! instances watching.

use std::time::Duration;

use crate::common::{agent, client, eventually, registry, server};
use osp_client::Agent;
use osp_eventlog::EventLog;
use osp_protocol::registry::queries::{PageRequest, Status};
use osp_protocol::registry::{EntryEvent, EntryKey};

const OFFLINE_AFTER: Duration = Duration::from_secs(1);

fn transitions(events: &[osp_eventlog::Recorded<EntryEvent>]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e.envelope.payload {
            EntryEvent::WentOffline(_) => Some("offline"),
            EntryEvent::CameOnline(_) => Some("online"),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn silence_means_offline_once_and_beats_bring_it_back_once() {
    let server = server().await;
    let first = registry(&server.url(), OFFLINE_AFTER).await;
    let second = registry(&server.url(), OFFLINE_AFTER).await;
    let client = client(&server.url()).await;
    client.registry().register(&agent("beater", &["summarize"])).await.unwrap();
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let key = EntryKey::new("agents", "beater").unwrap();
    let status = || async { client.registry().get("agents", "beater").await.unwrap().unwrap().status };

    // Beating (by hand, as any NATS client would) keeps it online past the timeout.
    let nats = osp_tests::connect(&server.url()).await;
    for _ in 0..12 {
        nats.publish("osp.v1.hb.beater", "".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status().await, Status::Online);

    // Silence: offline, once, however long it lasts and whichever instance noticed.
    eventually(Duration::from_secs(10), "offline", || async { status().await == Status::Offline }).await;
    tokio::time::sleep(OFFLINE_AFTER * 3).await;
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap();
    assert_eq!(transitions(&history.events), ["offline"]);
    let EntryEvent::WentOffline(offline) = &history.events.last().unwrap().envelope.payload else { panic!() };
    assert_eq!(offline.timeout_ms, 1000);
    assert!(offline.silent_for_ms >= 1000, "silent for at least the timeout: {offline:?}");
    assert_eq!(history.events.last().unwrap().envelope.actor, "service:registry");
    let live = client.registry().live(PageRequest::default()).await.unwrap();
    assert!(live.entries.is_empty(), "an offline agent is not live");

    // It comes back: online, once, for a burst of beats.
    for _ in 0..5 {
        nats.publish("osp.v1.hb.beater", "".into()).await.unwrap();
    }
    eventually(Duration::from_secs(10), "online again", || async { status().await == Status::Online }).await;
    for _ in 0..5 {
        nats.publish("osp.v1.hb.beater", "".into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap();
    assert_eq!(transitions(&history.events), ["offline", "online"]);

    // Heartbeats of names that are not registered agents change nothing.
    nats.publish("osp.v1.hb.stranger", "".into()).await.unwrap();
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(
        log.load::<EntryEvent>(&EntryKey::new("agents", "stranger").unwrap().aggregate()).await.unwrap().events.len(),
        0
    );
}

#[tokio::test]
async fn the_client_agent_heartbeats_goes_offline_when_dropped_and_unregisters_on_shutdown() {
    let server = server().await;
    let instance = registry(&server.url(), OFFLINE_AFTER).await;
    let client = client(&server.url()).await;
    let status = |name: &'static str| {
        let client = client.clone();
        async move { client.registry().get("agents", name).await.unwrap().map(|e| e.status) }
    };

    let steady = Agent::builder("steady")
        .capabilities(["summarize"])
        .heartbeat_interval(Duration::from_millis(200))
        .start(&client)
        .await
        .unwrap();
    let crashing = Agent::builder("crashing")
        .capabilities(["summarize"])
        .heartbeat_interval(Duration::from_millis(200))
        .start(&client)
        .await
        .unwrap();
    assert_eq!(steady.registration().result.revision, 1);
    tokio::time::sleep(OFFLINE_AFTER * 3).await;
    assert_eq!(status("steady").await, Some(Status::Online), "its heartbeats keep it online");

    drop(crashing); // no unregister: as if the process died
    eventually(Duration::from_secs(10), "the dropped agent offline", || async {
        status("crashing").await == Some(Status::Offline)
    })
    .await;
    assert_eq!(status("steady").await, Some(Status::Online));

    steady.shutdown().await.unwrap();
    assert_eq!(status("steady").await, None, "shut down means unregistered");
    let key = EntryKey::new("agents", "steady").unwrap();
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap();
    assert!(history.events.iter().all(|e| e.envelope.actor == "agent:steady"), "the agent's own commands name it");
    instance.shutdown().await;
}
