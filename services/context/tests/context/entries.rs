//! Every entry operation's contract: key-value set, get, remove (whether it existed),
//! list by prefix and history at a past sequence; settings, read-only ones refused;
//! preferences resolved agent > user > system.

use serde_json::json;

use crate::common::{client, context, refusal, server};

#[tokio::test]
async fn key_value_entries_and_their_history() {
    let server = server().await;
    let instance = context(&server.url()).await;
    let ana = client(&server.url(), "user:ana").await.context();

    let first = ana.set("session:s1", "notes/a", json!({"n": 1})).await.unwrap();
    assert_eq!((first.result.revision, first.result.updated_by.as_str()), (1, "user:ana"));
    assert_eq!(first.result.seq, first.seq);
    let second = ana.set("session:s1", "notes/a", json!({"n": 2})).await.unwrap();
    assert_eq!(second.result.revision, 2);
    let same = ana.set("session:s1", "notes/a", json!({"n": 2})).await.unwrap();
    assert_eq!((same.result.revision, same.seq), (2, second.seq), "the same value again changes nothing");
    ana.set("session:s1", "notes/b", json!("text")).await.unwrap();
    ana.set("session:s1", "todo", json!([1, 2])).await.unwrap();

    let read = ana.get("session:s1", "notes/a").await.unwrap().unwrap();
    assert_eq!(read.value, json!({"n": 2}));
    assert!(ana.get("session:s1", "nope").await.unwrap().is_none());
    assert!(ana.get("session:s2", "notes/a").await.unwrap().is_none(), "scopes are apart");
    assert_eq!(ana.list("session:s1", "notes/").await.unwrap(), ["notes/a", "notes/b"]);
    assert_eq!(ana.list("session:s1", "").await.unwrap(), ["notes/a", "notes/b", "todo"]);

    // History: the value just after each write, read from the log.
    let then = ana.history("session:s1", "notes/a", Some(first.seq), None).await.unwrap().unwrap();
    assert_eq!((then.value, then.seq), (json!({"n": 1}), first.seq));
    let later = ana.history("session:s1", "notes/a", Some(second.seq), None).await.unwrap().unwrap();
    assert_eq!(later.value, json!({"n": 2}));
    assert!(ana.history("session:s1", "notes/a", Some(first.seq - 1), None).await.unwrap().is_none());
    assert!(ana.remove("session:s1", "notes/a").await.unwrap(), "it existed");
    assert!(!ana.remove("session:s1", "notes/a").await.unwrap(), "and now it does not");
    assert!(ana.get("session:s1", "notes/a").await.unwrap().is_none());
    let before_removal = ana.history("session:s1", "notes/a", Some(second.seq), None).await.unwrap().unwrap();
    assert_eq!(before_removal.value, json!({"n": 2}), "the log keeps what was removed");
    let now = osp_protocol::Timestamp::now();
    assert!(ana.history("session:s1", "notes/a", None, Some(now)).await.unwrap().is_none());
    instance.shutdown().await;
}

#[tokio::test]
async fn settings_preferences_and_read_only() {
    let server = server().await;
    let instance = context(&server.url()).await;
    let ana = client(&server.url(), "user:ana").await.context();
    let agent = client(&server.url(), "agent:a1").await.context();

    ana.set_setting("model", json!("small"), Some("the default model"), false).await.unwrap();
    ana.set_setting("max_tokens", json!(4096), None, true).await.unwrap();
    let error = refusal(ana.set_setting("max_tokens", json!(1), None, false).await);
    assert_eq!(error.code(), "illegal_transition");
    assert!(error.to_string().contains("read-only"), "{error}");
    assert_eq!(refusal(ana.remove_setting("max_tokens").await).code(), "illegal_transition");
    let settings = agent.settings().await.unwrap();
    assert_eq!(settings.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["max_tokens", "model"]);
    assert!(settings[0].read_only && settings[1].description.as_deref() == Some("the default model"));
    assert_eq!(refusal(agent.set_setting("model", json!("big"), None, false).await).code(), "forbidden");

    // agent > user > system.
    ana.set_preference("user:ana", "model", json!("medium")).await.unwrap();
    ana.set_preference("user:ana", "tone", json!("dry")).await.unwrap();
    agent.set_preference("agent:a1", "tone", json!("warm")).await.unwrap();
    let resolved = |key, agent: Option<&'static str>, user: Option<&'static str>| {
        let ana = ana.clone();
        async move { ana.preference(key, agent, user).await.unwrap().unwrap() }
    };
    let tone = resolved("tone", Some("a1"), Some("ana")).await;
    assert_eq!((tone.entry.value, tone.entry.scope.to_string()), (json!("warm"), "agent:a1".to_owned()));
    let model = resolved("model", Some("a1"), None).await;
    assert_eq!(
        (model.entry.value, model.entry.scope.to_string()),
        (json!("medium"), "user:ana".to_owned()),
        "ana's own by default"
    );
    let system = resolved("max_tokens", Some("a1"), Some("ana")).await;
    assert_eq!(system.entry.value, json!(4096));
    assert!(ana.preference("nothing", None, None).await.unwrap().is_none());
    assert_eq!(refusal(agent.set_preference("agent:a2", "tone", json!("x")).await).code(), "forbidden");
    assert_eq!(ana.preferences("user:ana").await.unwrap().len(), 2);
    assert!(ana.remove_preference("user:ana", "tone").await.unwrap());
    instance.shutdown().await;
}
