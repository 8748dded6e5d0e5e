//! Two registry instances side by side: commands spread over both, concurrent updates
//! of one entry end in one consistent, fully logged history, and both answer the same
//! after the read-your-writes token.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{client, registry, server, tool};
use osp_eventlog::EventLog;
use osp_protocol::registry::{EntryEvent, EntryKey};
use osp_registry::entry::Entry;
use osp_runtime::Folded;
use serde_json::json;

#[tokio::test]
async fn commands_spread_and_concurrent_updates_make_one_history() {
    let server = server().await;
    let first = registry(&server.url(), Duration::from_secs(15)).await;
    let second = registry(&server.url(), Duration::from_secs(15)).await;

    // Many writers, each on a connection of its own, all updating the same entry.
    let writers = 6;
    let updates_each = 25;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client(&server.url()).await;
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..updates_each {
                let answer = client.registry().register(&tool("shared", json!({"writer": writer, "n": n}))).await;
                seqs.push(answer.expect("every update is accepted").seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    let total = writers * updates_each;
    assert_eq!(BTreeSet::from_iter(seqs.iter().copied()).len(), total, "each update got its own event");

    // Both instances took part.
    let (a, b) = (first.commands().accepted(), second.commands().accepted());
    assert_eq!(a + b, total as u64);
    assert!(a > 0 && b > 0, "commands are spread over both instances: {a} and {b}");

    // The log holds one linear history: versions 1..=total, one event per command, a
    // registration then updates, the hash chain intact.
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let key = EntryKey::new("tools", "shared").unwrap();
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap();
    assert_eq!(history.events.len(), total);
    let causes: BTreeSet<_> = history.events.iter().map(|e| e.envelope.causation_id.clone().unwrap()).collect();
    assert_eq!(causes.len(), total, "no command applied twice");
    assert!(matches!(history.events[0].envelope.payload, EntryEvent::Registered(_)));
    assert!(history.events[1..].iter().all(|e| matches!(e.envelope.payload, EntryEvent::Updated(_))));
    assert!(log.verify(&key.aggregate().subject(), |_, _| {}).await.unwrap().is_clean());
    let folded = Folded::<Entry>::from_events(&history.events);
    assert_eq!(folded.state.revision, total as u64);

    // Both instances, asked with the newest token, answer exactly what the log says.
    let newest = *seqs.iter().max().unwrap();
    assert_eq!(newest, history.head.seq);
    let expected_doc = folded.state.doc.clone().unwrap();
    let mut digests = BTreeSet::new();
    for _ in 0..24 {
        // A fresh client that knows nothing but the token: whichever instance the queue
        // group picks must have applied the log that far.
        let reader = client(&server.url()).await;
        reader.registry().register(&tool("marker", json!({}))).await.unwrap();
        let entry = reader.registry().get("tools", "shared").await.unwrap().unwrap();
        assert_eq!((entry.revision, &entry.resource), (total as u64, &expected_doc.resource));
    }
    // Nothing moves any more: every instance holds the same state, byte for byte.
    let settled = client(&server.url()).await;
    settled.registry().register(&tool("marker", json!({"last": true}))).await.unwrap();
    for _ in 0..24 {
        let digest = settled.registry().digest().await.unwrap().result;
        digests.insert((digest.last_seq, digest.digest));
    }
    assert_eq!(digests.len(), 1, "instances at rest agree: {digests:?}");
    let asked = digest_requests_per_instance(&server.url()).await;
    assert!(asked.len() == 2 && asked.iter().all(|n| *n > 0), "both instances answered digests: {asked:?}");

    first.shutdown().await;
    second.shutdown().await;
}

/// Asks the standard micro-service discovery (`$SRV.STATS.osp-registry`) how many
/// digest queries each instance answered.
async fn digest_requests_per_instance(url: &str) -> Vec<u64> {
    use futures::StreamExt;
    let nats = osp_tests::connect(url).await;
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
    nats.publish_with_reply("$SRV.STATS.osp-registry", inbox, "".into()).await.unwrap();
    let mut counts = Vec::new();
    while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(1), replies.next()).await {
        let stats: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        let endpoints = stats["endpoints"].as_array().unwrap();
        let digest =
            endpoints.iter().find(|e| e["name"] == "digest").unwrap_or_else(|| panic!("a digest endpoint in {stats}"));
        counts.push(digest["num_requests"].as_u64().unwrap());
    }
    counts
}

#[tokio::test]
async fn a_query_waits_for_the_token_it_carries() {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let writer = client(&server.url()).await;
    let accepted = writer.registry().register(&tool("t", json!({"v": 1}))).await.unwrap();

    // A token from the future (no such sequence yet) is answered at once: nothing the
    // view reads lies between what it applied and the end of the log.
    let nats = osp_tests::connect(&server.url()).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Osp-Min-Seq", (accepted.seq + 1000).to_string().as_str());
    let body = serde_json::to_vec(&json!({"registry": "tools", "name": "t"})).unwrap();
    headers.insert("Content-Type", "application/json");
    let reply = nats.request_with_headers("osp.v1.q.registry.get", headers, body.into()).await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["resource"]["v"], 1);
    instance.shutdown().await;
}
