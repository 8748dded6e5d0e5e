//! Bad input: every malformed or illegal command gets an error reply naming the field
//! and the reason, and a rejection record on the log; bad queries get an error reply;
//! the service keeps running throughout.

use std::time::Duration;

use crate::common::{client, registry, server, system, tool};
use serde_json::{json, Value};

async fn send(
    nats: &async_nats::Client,
    command: &str,
    content_type: Option<&str>,
    payload: Vec<u8>,
    id: &str,
) -> Value {
    osp_tests::send_raw_command(nats, "registry", command, content_type, payload, id).await
}

fn msgpack(value: Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&value).unwrap()
}

fn json_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

/// (id, command, content type, payload, error code, field, words in the message)
type Case =
    (&'static str, &'static str, Option<&'static str>, Vec<u8>, &'static str, Option<&'static str>, &'static str);

#[tokio::test]
async fn every_bad_command_is_answered_and_recorded_and_the_service_goes_on() {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let nats = osp_tests::connect(&server.url()).await;
    let json = Some("application/json");
    let big = "x".repeat(70 * 1024);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // (id, command, content type, payload, error code, field, words in the message)
        ("garbage", "register", None, vec![0xc1, 0xff, 0x00], "malformed", None, "malformed msgpack message"),
        ("bad-json", "register", json, b"{\"registry\": ".to_vec(), "malformed", None, "malformed json message"),
        ("no-name", "register", json, json_bytes(json!({"registry": "tools", "resource": {}})), "malformed", None, "missing field `name`"),
        ("wrong-type", "register", None, msgpack(json!({"registry": "tools", "name": 7, "resource": {}})), "malformed", Some("name"), "invalid type: integer `7`"),
        ("dot", "register", json, json_bytes(json!({"registry": "tools", "name": "a.b", "resource": {}})), "invalid_token", Some("name"), "must not contain '.'"),
        ("star", "register", json, json_bytes(json!({"registry": "tools", "name": "*", "resource": {}})), "invalid_token", Some("name"), "wildcards"),
        ("gt", "register", json, json_bytes(json!({"registry": "tools", "name": ">", "resource": {}})), "invalid_token", Some("name"), "wildcards"),
        ("space", "register", json, json_bytes(json!({"registry": "tools", "name": "a b", "resource": {}})), "invalid_token", Some("name"), "whitespace"),
        ("registry", "register", json, json_bytes(json!({"registry": "To*ls", "name": "a", "resource": {}})), "invalid_token", Some("registry"), "lower-case"),
        ("big", "register", json, json_bytes(json!({"registry": "tools", "name": "big", "resource": {"x": big}})), "too_large", None, "over the limit of 65536 bytes"),
        ("card", "register", json, json_bytes(json!({"registry": "agents", "name": "a", "resource": {"capabilities": ["a.b"]}})), "invalid_token", Some("resource.capabilities[0]"), "must not contain '.'"),
        ("typo", "register", json, json_bytes(json!({"registry": "tools", "name": "a", "resource": {}, "descripton": "x"})), "malformed", None, "unknown field `descripton`"),
        ("unknown", "unregister", json, json_bytes(json!({"registry": "agents", "name": "nobody"})), "not_found", Some("name"), "registry \"agents\" has no entry by that name"),
        ("explode", "explode", json, json_bytes(json!({})), "unknown_command", None, "use one of register, unregister"),
        ("yaml", "register", Some("text/yaml"), b"name: a".to_vec(), "unsupported_content_type", None, "unsupported content type \"text/yaml\""),
        ("empty", "register", None, vec![], "malformed", None, "malformed msgpack message"),
    ];
    for (id, command, content_type, payload, code, field, words) in &cases {
        let reply = send(&nats, command, *content_type, payload.clone(), id).await;
        osp_tests::assert_refused(id, &reply, code, *field, words);
    }

    // Each refusal is on the log, once, with the error the sender was told.
    let recorded = osp_tests::rejections(&server.url()).await;
    assert_eq!(recorded.len(), cases.len());
    for (id, _, _, _, code, _, _) in &cases {
        assert_eq!((recorded[*id].0.as_str(), recorded[*id].1.code()), ("registry", *code), "{id}");
    }

    // Still serving.
    let client = client(&server.url()).await;
    client.registry().register(&tool("after", json!({}))).await.unwrap();
    assert!(client.registry().get("tools", "after").await.unwrap().is_some());
    assert_eq!(instance.commands().rejected(), cases.len() as u64);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_command_sent_twice_with_one_id_is_applied_once() {
    let (_server, instance, client) = system().await;
    let entry = tool("once", json!({"v": 1}));
    let first = client.command_with_id::<_, Value>("registry", "register", &entry, "same-id").await.unwrap();
    // A second inbox message with the same command id: the aggregate remembers it.
    let again = client.command_with_id::<_, Value>("registry", "register", &entry, "same-id").await.unwrap();
    assert_eq!(first.seq, again.seq, "the second answer points at the first's event");
    assert_eq!(client.registry().get("tools", "once").await.unwrap().unwrap().revision, 1);
    instance.shutdown().await;
}

#[tokio::test]
async fn bad_queries_get_clear_errors() {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let nats = osp_tests::connect(&server.url()).await;
    let ask = |query: &'static str, content_type: &'static str, body: Vec<u8>, min_seq: Option<&'static str>| {
        let nats = nats.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Content-Type", content_type);
            if let Some(min_seq) = min_seq {
                headers.insert("Osp-Min-Seq", min_seq);
            }
            let reply =
                nats.request_with_headers(format!("osp.v1.q.registry.{query}"), headers, body.into()).await.unwrap();
            let error_header =
                reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
            let body: Value = match content_type {
                "application/json" => serde_json::from_slice(&reply.payload).unwrap(),
                _ => rmp_serde::from_slice(&reply.payload).unwrap(),
            };
            (body, error_header)
        }
    };
    let json = "application/json";
    for (query, body, code, header, words) in [
        ("find", json!({"registry": "agents", "criteria": ["x"]}), "invalid", "400", "invalid criteria: must be a map"),
        ("get", json!({"registry": "agents", "name": "a.b"}), "invalid_token", "400", "invalid name \"a.b\""),
        ("get", json!({"registry": "agents", "name": "nobody"}), "not_found", "404", "name \"nobody\" not found"),
        ("list", json!({"registry": "tools", "limit": 0}), "invalid", "400", "invalid limit: must be 1 to 1000"),
        ("list", json!({"registry": "tools", "colour": "red"}), "malformed", "400", "unknown field `colour`"),
        ("list", json!({}), "malformed", "400", "missing field `registry`"),
    ] {
        let (reply, error_header) = ask(query, json, json_bytes(body.clone()), None).await;
        assert_eq!(
            (reply["ok"].as_bool(), reply["error"]["error"].as_str()),
            (Some(false), Some(code)),
            "{body}: {reply}"
        );
        assert!(reply["error"]["message"].as_str().unwrap().contains(words), "{body}: {reply}");
        assert_eq!(error_header.as_deref(), Some(header), "{body}");
    }
    let (reply, _) = ask("list", json, json_bytes(json!({"registry": "tools"})), Some("soon")).await;
    assert!(reply["error"]["message"].as_str().unwrap().contains("invalid Osp-Min-Seq header"), "{reply}");
    let (reply, _) = ask("list", "text/yaml", b"registry: tools".to_vec(), None).await;
    assert_eq!(reply["error"]["error"], "unsupported_content_type", "answered in MessagePack: {reply}");
    // An empty body reads as `{}`: `live` needs nothing.
    let (reply, _) = ask("live", json, Vec::new(), None).await;
    assert_eq!(reply["ok"], true, "{reply}");
    instance.shutdown().await;
}
