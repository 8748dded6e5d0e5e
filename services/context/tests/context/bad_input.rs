//! Bad input: every malformed or illegal command gets an error reply naming the field and
//! the reason, and a rejection record on the log; the service keeps running.

use serde_json::{json, Value};

use crate::common::{client, context, server};

fn json_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

/// (id, command, content type, payload, error code, field, words in the message)
type Case =
    (&'static str, &'static str, Option<&'static str>, Vec<u8>, &'static str, Option<&'static str>, &'static str);

#[tokio::test]
async fn every_bad_command_is_answered_and_recorded_and_the_service_goes_on() {
    let server = server().await;
    let instance = context(&server.url()).await;
    let ana = client(&server.url(), "user:ana").await.context();
    ana.upsert_embeddings(
        "global",
        &[osp_protocol::context::Embedding {
            id: "e".into(),
            content: String::new(),
            metadata: None,
            vector: vec![1.0, 0.0, 0.0],
        }],
    )
    .await
    .unwrap();
    let nats = osp_tests::connect(&server.url()).await;
    let json = Some("application/json");
    let big = "x".repeat(osp_protocol::context::MAX_VALUE_BYTES);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("garbage", "set", None, vec![0xc1, 0xff], "malformed", None, "malformed msgpack message"),
        ("bad-json", "set", json, b"{\"scope\": ".to_vec(), "malformed", None, "malformed json message"),
        ("scope", "set", json, json_bytes(json!({"scope": "planet:mars", "key": "k", "value": 1})), "invalid", Some("scope"), "unknown scope kind"),
        ("no-scope", "set", json, json_bytes(json!({"key": "k", "value": 1})), "invalid", Some("scope"), "is required"),
        ("key-dot", "set", json, json_bytes(json!({"scope": "global", "key": "a.b", "value": 1})), "invalid_token", Some("key"), "must not contain '.'"),
        ("key-star", "remove", json, json_bytes(json!({"scope": "global", "key": "*"})), "invalid_token", Some("key"), "wildcards"),
        ("key-gt", "set_env", json, json_bytes(json!({"scope": "global", "key": ">", "value": "v"})), "invalid_token", Some("key"), "wildcards"),
        ("scope-inject", "set", json, json_bytes(json!({"scope": "run:a.>", "key": "k", "value": 1})), "invalid_token", Some("scope"), "'.'"),
        ("id-dot", "remove_embedding", json, json_bytes(json!({"scope": "global", "id": "a.b"})), "invalid_token", Some("id"), "'.'"),
        ("too-big", "set", json, json_bytes(json!({"scope": "global", "key": "k", "value": big})), "too_large", None, "over the limit"),
        ("env-number", "set_env", json, json_bytes(json!({"scope": "global", "key": "k", "value": 3})), "invalid", Some("value"), "string"),
        ("pref-run", "set_preference", json, json_bytes(json!({"scope": "run:r", "key": "k", "value": 1})), "invalid", Some("scope"), "preferences belong"),
        ("vector-text", "upsert_embeddings", json, json_bytes(json!({"scope": "global", "entries": [{"id": "x", "vector": ["a"]}]})), "malformed", None, "entries"),
        ("vector-empty", "upsert_embeddings", json, json_bytes(json!({"scope": "global", "entries": [{"id": "x", "vector": []}]})), "invalid", Some("entries[0].vector"), "1 to 4096"),
        ("vector-zero", "upsert_embeddings", json, json_bytes(json!({"scope": "global", "entries": [{"id": "x", "vector": [0, 0, 0]}]})), "invalid", Some("entries[0].vector"), "all zeros"),
        ("dimension", "upsert_embeddings", json, json_bytes(json!({"scope": "global", "entries": [{"id": "x", "vector": [1, 2]}]})), "invalid", Some("entries[0].vector"), "have 3"),
        ("unknown-field", "set", json, json_bytes(json!({"scope": "global", "key": "k", "value": 1, "ttl": 5})), "malformed", None, "unknown field `ttl`"),
        ("agent-global", "set", json, json_bytes(json!({"scope": "global", "key": "k", "value": 1})), "forbidden", Some("Osp-Actor header"), "may not write global"),
        ("explode", "explode", json, json_bytes(json!({})), "unknown_command", None, "use one of set, remove"),
        ("yaml", "set", Some("text/yaml"), b"scope: global".to_vec(), "unsupported_content_type", None, "text/yaml"),
    ];
    for (id, command, content_type, payload, code, field, words) in &cases {
        let reply = match *id {
            // The same command, from an agent.
            "agent-global" => send_as(&nats, "agent:a1", command, payload.clone(), id).await,
            _ => osp_tests::send_raw_command(&nats, "context", command, *content_type, payload.clone(), id).await,
        };
        osp_tests::assert_refused(id, &reply, code, *field, words);
    }
    let recorded = osp_tests::rejections(&server.url()).await;
    assert_eq!(recorded.len(), cases.len());
    for (id, _, _, _, code, _, _) in &cases {
        assert_eq!((recorded[*id].0.as_str(), recorded[*id].1.code()), ("context", *code), "{id}");
    }
    // Still serving.
    ana.set("global", "after", json!(true)).await.unwrap();
    assert_eq!(instance.commands().rejected(), cases.len() as u64);
    instance.shutdown().await;
}

/// A JSON command with an `Osp-Actor`, its reply as JSON.
async fn send_as(nats: &async_nats::Client, actor: &str, command: &str, payload: Vec<u8>, id: &str) -> Value {
    use futures::StreamExt;
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(inbox.clone()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("Nats-Msg-Id", id),
        ("Osp-Reply-To", inbox.as_str()),
        ("Content-Type", "application/json"),
        ("Osp-Actor", actor),
    ] {
        headers.insert(name, value);
    }
    let js = async_nats::jetstream::new(nats.clone());
    js.publish_with_headers(format!("osp.v1.in.context.{command}"), headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), replies.next()).await.unwrap().unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

#[tokio::test]
async fn names_too_long_for_a_scope_are_refused_by_queries_not_a_panic() {
    let server = server().await;
    let url = server.url();
    let instance = context(&url).await;
    // A valid token of 128 bytes, too long once `agent:` is put before it.
    let long = "a".repeat(128);
    let ops = client(&url, "user:ops").await.context();
    let error = crate::common::refusal(ops.system(Some(&long)).await);
    assert_eq!(error.code(), "invalid_token", "{error}");
    let error = crate::common::refusal(ops.preference("tone", Some(&long), None).await);
    assert_eq!(error.code(), "invalid_token", "{error}");
    // Still serving.
    ops.set("global", "after", json!(true)).await.unwrap();
    assert!(ops.system(Some("a1")).await.is_ok());
    instance.shutdown().await;
}
