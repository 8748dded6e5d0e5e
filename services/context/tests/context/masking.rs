//! Sensitive environment values: masked in every reply and read, revealed only to whom
//! may see them (a refused reveal is recorded), never in the service's own tracing output
//! (at debug), and never in clear on the log: it holds them sealed with the service's key.

use osp_client::EnvEntry;
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_protocol::context::{ContextEvent, MASK};

use crate::common::{client, refusal, seal_key, server, spawn_context};

const SECRET: &str = "sk-live-8d3f0c1e9b7a";

#[tokio::test]
async fn sensitive_values_are_masked_everywhere_but_where_allowed() {
    let server = server().await;
    let url = server.url();
    let (mut process, logged) = spawn_context(&url, "debug").await;
    let ana = client(&url, "user:ana").await.context();
    let entry =
        EnvEntry { key: "API_KEY".into(), value: SECRET.into(), target: vec!["agent:a1".into()], sensitive: true };
    let answer = ana.set_env("global", &entry).await.unwrap();
    assert_eq!((answer.result.value.as_str(), answer.result.masked), (Some(MASK), true), "the reply is masked");
    ana.set_env("global", &EnvEntry { key: "REGION".into(), value: "eu".into(), ..EnvEntry::default() }).await.unwrap();

    let read = ana.env("global", "API_KEY", false).await.unwrap().unwrap();
    assert_eq!((read.value.as_str(), read.sensitive), (Some(MASK), true));
    let listed = ana.envs("global", None, false).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.value.as_str().unwrap()).collect::<Vec<_>>(), [MASK, "eu"]);
    assert_eq!(refusal(ana.env("global", "API_KEY", true).await).code(), "forbidden", "ana may not reveal");
    let ops = client(&url, "user:ops").await.context();
    assert_eq!(ops.env("global", "API_KEY", true).await.unwrap().unwrap().value, SECRET, "ops may");
    let a1 = client(&url, "agent:a1").await.context();
    assert_eq!(a1.env("global", "API_KEY", true).await.unwrap().unwrap().value, SECRET, "its target names a1");
    assert_eq!(a1.envs("global", Some("agent:a1"), true).await.unwrap()[0].value, SECRET);
    let a2 = client(&url, "agent:a2").await.context();
    assert_eq!(a2.env("global", "API_KEY", false).await.unwrap().unwrap().value, MASK);
    assert_eq!(refusal(a2.env("global", "API_KEY", true).await).code(), "forbidden");
    assert_eq!(a2.envs("global", None, true).await.unwrap()[0].value, MASK, "a list reveals what it may only");

    // Refused reveals are on the log (the query's, with the reason, not the value).
    let rejections = osp_tests::rejections(&url).await;
    let refused: Vec<_> = rejections.values().filter(|(_, error)| error.code() == "forbidden").collect();
    assert_eq!(refused.len(), 2, "{rejections:?}");
    assert!(refused.iter().all(|(_, error)| !error.to_string().contains(SECRET)));

    // The same secret sent again is recognised as the same value: nothing is appended.
    ana.set_env("global", &entry).await.unwrap();

    // The log holds the value sealed, which the service's key opens, and nowhere in clear.
    let log = EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    let mut follow = log.follow::<Recorded<ContextEvent>>("osp.v1.evt.scope.global", Start::All).await.unwrap();
    let mut stored = Vec::new();
    while let Some(LogItem::Event(event)) = follow.next().await.map(Result::unwrap) {
        if let ContextEvent::EntrySet(set) = event.envelope.payload {
            stored.push((set.key, set.value, set.sealed));
        }
    }
    assert_eq!(stored.len(), 2, "{stored:?}");
    let (key, sealed, is_sealed) = &stored[0];
    assert!(*is_sealed && !sealed.to_string().contains(SECRET), "{sealed}");
    let place = osp_context::sealing::place(&"global", key);
    assert_eq!(seal_key().unseal(&place, sealed.as_str().unwrap()).unwrap(), SECRET);
    assert_eq!((stored[1].1.clone(), stored[1].2), (serde_json::json!("eu"), false));
    let js = async_nats::jetstream::new(osp_tests::connect(&url).await);
    let mut events = js.get_stream("OSP_EVENTS").await.unwrap();
    let last = events.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let message = events.get_raw_message(seq).await.unwrap();
        let bytes = message.payload.as_ref();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "event {seq} holds the secret in clear");
    }

    // Its own tracing, at debug, never shows it.
    process.start_kill().unwrap();
    process.wait().await.unwrap();
    let lines = logged.lock().unwrap();
    assert!(lines.iter().any(|line| line.contains("command accepted")), "the tracing was captured: {lines:?}");
    let leaks: Vec<_> = lines.iter().filter(|line| line.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the service logged the secret: {leaks:?}");
}

#[tokio::test]
async fn without_a_seal_key_a_sensitive_value_is_refused_not_logged_in_clear() {
    let server = server().await;
    let url = server.url();
    let keyless = osp_context::Context::start(osp_tests::connect(&url).await, osp_context::Config::default())
        .await
        .expect("start a context instance without a seal key");
    let ana = client(&url, "user:ana").await.context();
    let entry = EnvEntry { key: "TOKEN".into(), value: SECRET.into(), sensitive: true, ..EnvEntry::default() };
    let error = refusal(ana.set_env("global", &entry).await);
    assert_eq!((error.code(), error.field()), ("invalid", Some("sensitive")), "{error}");
    assert!(error.to_string().contains("OSP_CONTEXT_SEAL_KEY"), "{error}");
    keyless.shutdown().await;
}
