//! Every registry operation's contract, through the client, against a real server.

use crate::common::{agent, system, tool};
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::{FindQuery, PageRequest, Status};
use serde_json::json;

#[tokio::test]
async fn register_get_list_find_update_unregister() {
    let (_server, instance, client) = system().await;
    let registry = client.registry();

    let added = registry.register(&agent("a1", &["summarize", "translate"])).await.unwrap();
    assert_eq!((added.result.revision, added.result.created), (1, true));
    registry.register(&agent("a2", &["translate"])).await.unwrap();
    registry.register(&tool("grep", json!({"kind": "cli", "os": ["linux", "mac"]}))).await.unwrap();

    let a1 = registry.get("agents", "a1").await.unwrap().expect("a1 is registered");
    assert_eq!((a1.status, a1.revision, a1.description.as_str()), (Status::Online, 1, "agent a1"));
    assert_eq!(registry.get("agents", "nobody").await.unwrap(), None);
    let names = |entries: Vec<osp_protocol::registry::queries::EntryView>| {
        entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
    };
    assert_eq!(names(registry.list_all("agents").await.unwrap()), ["a1", "a2"]);
    assert_eq!(registry.get("tools", "grep").await.unwrap().unwrap().status, Status::Registered);

    let by = |criteria| registry.find_all("agents", from_json(&criteria), false);
    assert_eq!(names(by(json!({"capabilities": "translate"})).await.unwrap()), ["a1", "a2"]);
    assert_eq!(names(by(json!({"capabilities": ["summarize", "translate"]})).await.unwrap()), ["a1"]);
    assert_eq!(names(by(json!({"capabilities": "draw"})).await.unwrap()), Vec::<String>::new());
    let tools = registry.find_all("tools", from_json(&json!({"os": "mac"})), false).await.unwrap();
    assert_eq!(names(tools), ["grep"]);

    let updated = registry.register(&agent("a1", &["summarize"])).await.unwrap();
    assert_eq!((updated.result.revision, updated.result.created), (2, false));
    assert_eq!(names(by(json!({"capabilities": "translate"})).await.unwrap()), ["a2"], "the index follows updates");

    assert!(registry.unregister("agents", "a1", Some("retired".into())).await.unwrap());
    assert!(!registry.unregister("agents", "a1", None).await.unwrap(), "unknown now");
    assert_eq!(registry.get("agents", "a1").await.unwrap(), None);
    assert_eq!(names(registry.list_all("agents").await.unwrap()), ["a2"]);
    let live = registry.live(PageRequest::default()).await.unwrap();
    assert_eq!(names(live.entries), ["a2"]);
    instance.shutdown().await;
}

#[tokio::test]
async fn pages_follow_the_cursor_to_the_end() {
    let (_server, instance, client) = system().await;
    let registry = client.registry();
    for i in 0..25 {
        registry.register(&tool(&format!("t{i:02}"), json!({"n": i, "even": i % 2 == 0}))).await.unwrap();
    }
    let first = registry.list("tools", PageRequest { after: None, limit: Some(10) }).await.unwrap();
    assert_eq!((first.entries.len(), first.next.as_deref()), (10, Some("t09")));
    let last = registry.list("tools", PageRequest { after: Some("t19".into()), limit: Some(10) }).await.unwrap();
    assert_eq!((last.entries.len(), last.next), (5, None));
    let query = FindQuery {
        registry: "tools".into(),
        criteria: Some(from_json(&json!({"even": true}))),
        live: false,
        after: None,
        limit: Some(5),
    };
    let evens = registry.find(&query).await.unwrap();
    assert_eq!(evens.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["t00", "t02", "t04", "t06", "t08"]);
    assert_eq!(evens.next.as_deref(), Some("t08"));
    assert_eq!(registry.find_all("tools", from_json(&json!({"even": true})), false).await.unwrap().len(), 13);
    instance.shutdown().await;
}

#[tokio::test]
async fn pages_fit_one_message_in_json_too() {
    let (server, instance, client) = system().await;
    // `false` is 1 byte in MessagePack and 6 in JSON: 8 such resources, each under the
    // 64 KiB limit, are over 2 MiB of JSON.
    let falses = vec![false; 60_000];
    for i in 0..8 {
        client.registry().register(&tool(&format!("wide-{i}"), json!({ "flags": falses }))).await.unwrap();
    }
    let nats = osp_tests::connect(&server.url()).await;
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/json");
        headers.insert("Osp-Min-Seq", client.seen().to_string().as_str());
        let body = json!({"registry": "tools", "after": after, "limit": 1000});
        let reply =
            nats.request_with_headers("osp.v1.q.registry.list", headers, body.to_string().into()).await.unwrap();
        assert!(reply.payload.len() < 1024 * 1024);
        let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["ok"], true, "{:.300}", reply.to_string());
        let entries = reply["result"]["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        names.extend(entries.iter().map(|e| e["name"].as_str().unwrap().to_owned()));
        match reply["result"]["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(names, (0..8).map(|i| format!("wide-{i}")).collect::<Vec<_>>());
    instance.shutdown().await;
}
