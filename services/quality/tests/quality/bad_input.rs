//! Bad input: every malformed or illegal command gets an error reply naming the field
//! and the reason, and a rejection record on the log; the service keeps running.

use serde_json::{json, Value};

use crate::common::{add, check, client, quality, server, three_rules, THREE};

fn msgpack(value: Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&value).unwrap()
}

fn json_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).unwrap()
}

fn regex_named(name: &str) -> Value {
    json!({"name": name, "severity": "error", "kind": "regex", "params": {"pattern": "a"}})
}

/// (id, command, content type, payload, error code, field, words in the message)
type Case =
    (&'static str, &'static str, Option<&'static str>, Vec<u8>, &'static str, Option<&'static str>, &'static str);

#[tokio::test]
async fn every_bad_command_is_answered_and_recorded_and_the_service_goes_on() {
    let server = server().await;
    let instance = quality(&server.url()).await;
    let client = client(&server.url()).await;
    add(&client, &three_rules()[0]).await;
    let nats = osp_tests::connect(&server.url()).await;
    let json = Some("application/json");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("garbage", "add_rule", None, vec![0xc1, 0xff, 0x00], "malformed", None, "malformed msgpack message"),
        ("bad-json", "check", json, b"{\"output\": ".to_vec(), "malformed", None, "malformed json message"),
        ("no-output", "check", json, json_bytes(json!({"rules": ["has-summary"]})), "malformed", None, "missing field `output`"),
        ("judge", "check", json, json_bytes(json!({"output": 1, "rules": ["has-summary"], "judge": {}})), "malformed", None, "missing field `criteria`"),
        ("threshold", "check", json, json_bytes(json!({"output": 1, "judge": {"criteria": "x", "threshold": 2}})), "invalid", Some("judge.threshold"), "0 to 1"),
        ("hint-dot", "run_ended", json, json_bytes(json!({"run_id": "a.b", "key": "k", "status": "completed"})), "invalid_token", Some("run_id"), "must not contain '.'"),
        ("hint-forged", "run_ended", json, json_bytes(json!({"run_id": "never-ran", "key": "a-1", "status": "completed"})), "illegal_transition", None, "has not ended"),
        ("severity", "add_rule", None, msgpack(json!({"name": "r", "severity": "fatal", "kind": "regex", "params": {"pattern": "a"}})), "invalid", Some("severity"), "fatal"),
        ("kind", "add_rule", json, json_bytes(json!({"name": "r", "severity": "error", "kind": "spell-check", "params": {}})), "invalid", Some("kind"), "spell-check"),
        ("rule-dot", "add_rule", json, json_bytes(regex_named("a.b")), "invalid_token", Some("name"), "must not contain '.'"),
        ("rule-star", "add_rule", json, json_bytes(regex_named("*")), "invalid_token", Some("name"), "wildcards"),
        ("rule-gt", "update_rule", json, json_bytes(regex_named("a.>")), "invalid_token", Some("name"), "name"),
        ("remove-dot", "remove_rule", json, json_bytes(json!({"name": "a.b"})), "invalid_token", Some("name"), "must not contain '.'"),
        ("audit-dot", "check", json, json_bytes(json!({"auditId": "x.y", "output": 1, "rules": ["has-summary"]})), "invalid_token", Some("audit_id"), "must not contain '.'"),
        ("audit-star", "check", json, json_bytes(json!({"audit_id": "*", "output": 1, "rules": ["has-summary"]})), "invalid_token", Some("audit_id"), "wildcards"),
        ("rules-dot", "check", json, json_bytes(json!({"output": 1, "rules": ["has-summary", "a.b"]})), "invalid_token", Some("rules[1]"), "must not contain '.'"),
        ("no-rules", "check", json, json_bytes(json!({"output": 1, "rules": []})), "invalid", Some("rules"), "must name 1 to 100 rules"),
        ("unknown-rule", "check", json, json_bytes(json!({"output": 1, "rules": ["nope"]})), "not_found", Some("rules"), "has-summary"),
        ("bad-regex", "add_rule", json, json_bytes(json!({"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "(a"}})), "invalid", Some("params.pattern"), ""),
        ("bad-schema", "add_rule", json, json_bytes(json!({"name": "s", "severity": "error", "kind": "json-schema", "params": {"schema": {"type": "thing"}}})), "invalid", Some("params.schema"), ""),
        ("typo", "add_rule", json, json_bytes(json!({"name": "t", "severity": "error", "kind": "regex", "params": {"pattern": "a"}, "descripton": "x"})), "invalid", Some("descripton"), "no such field"),
        ("explode", "explode", json, json_bytes(json!({})), "unknown_command", None, "use one of add_rule, update_rule, remove_rule, check"),
        ("yaml", "check", Some("text/yaml"), b"output: 1".to_vec(), "unsupported_content_type", None, "text/yaml"),
        ("empty", "check", None, vec![], "malformed", None, "malformed msgpack message"),
    ];
    for (id, command, content_type, payload, code, field, words) in &cases {
        let reply = osp_tests::send_raw_command(&nats, "quality", command, *content_type, payload.clone(), id).await;
        osp_tests::assert_refused(id, &reply, code, *field, words);
    }

    // Each refusal is on the log, once, with the error the sender was told.
    let recorded = osp_tests::rejections(&server.url()).await;
    assert_eq!(recorded.len(), cases.len());
    for (id, _, _, _, code, _, _) in &cases {
        assert_eq!((recorded[*id].0.as_str(), recorded[*id].1.code()), ("quality", *code), "{id}");
    }

    // Still serving.
    for rule in &three_rules()[1..] {
        add(&client, rule).await;
    }
    let entry = check(&client, "after", json!({"summary": "s", "score": 0}), &THREE).await;
    assert_eq!(entry.rule_results.len(), 3);
    assert_eq!(instance.commands().rejected(), cases.len() as u64);
    instance.shutdown().await;
}
