//! Checks: an output against built-in rules gives the expected results, findings and
//! opinion, and the log keeps the audit entry with the rule definitions it was checked
//! against; unknown rules and oversized outputs are refused; an audit can be read back.

use std::time::Duration;

use osp_client::CheckRequest;
use osp_protocol::quality::queries::AuditView;
use osp_protocol::quality::{AuditEntry, Findings, Opinion};
use serde_json::json;

use crate::common::{
    add, add_three, check, command, query, recorded_audits, refusal, rules_of, system, three_rules, THREE,
};

#[tokio::test]
async fn a_check_against_three_rules_records_findings_opinion_and_the_definitions() {
    let (server, instance, client) = system().await;
    add_three(&client).await;

    // All pass.
    let clean = check(&client, "clean", json!({"summary": "All fine.", "score": 0.9}), &THREE).await;
    assert_eq!((clean.findings, clean.opinion), (Findings::default(), Opinion::Unqualified));
    assert_eq!(clean.scope, THREE);

    // The warning fails: one minor finding, qualified.
    let loud = check(&client, "loud", json!({"summary": "GREAT results", "score": 0.4}), &THREE).await;
    let passed: Vec<bool> = loud.rule_results.iter().map(|result| result.passed).collect();
    assert_eq!(passed, [true, false, true]);
    assert_eq!((loud.findings, loud.opinion), (Findings { critical: 0, major: 0, minor: 1 }, Opinion::Qualified));

    // The critical rule fails: adverse, whatever else passed.
    let off = check(&client, "off", json!({"summary": "ok", "score": 3}), &THREE).await;
    assert_eq!((off.findings, off.opinion), (Findings { critical: 1, major: 0, minor: 0 }, Opinion::Adverse));
    let failed = off.rule_results.iter().find(|result| !result.passed).unwrap();
    assert_eq!(failed.rule_name, "score-range");
    assert!(failed.critical && !failed.message.is_empty(), "{failed:?}");

    // The log holds each entry once, with the definitions as they were at the check.
    let recorded = recorded_audits(&server.url()).await;
    assert_eq!(recorded.keys().collect::<Vec<_>>(), ["clean", "loud", "off"]);
    for (id, audits) in &recorded {
        assert_eq!(audits.len(), 1, "{id}");
        assert_eq!(audits[0].rules, rules_of(&three_rules()), "{id}");
    }
    assert_eq!(recorded["loud"][0].entry, loud);

    // A later change of a rule does not change what an old audit says it checked.
    let mut stricter = three_rules()[2].clone();
    stricter["params"]["max"] = json!(0.5);
    command::<serde_json::Value>(&client, "update_rule", &stricter).await.unwrap();
    let view = query::<AuditView>(&client, "audit", &json!({"id": "clean"})).await.unwrap().result;
    assert_eq!((view.entry, view.rules), (clean, rules_of(&three_rules())));
    let after = check(&client, "after", json!({"summary": "ok", "score": 0.9}), &THREE).await;
    assert_eq!(after.opinion, Opinion::Adverse, "the new definition applies to new checks");
    instance.shutdown().await;
}

#[tokio::test]
async fn a_check_sent_again_is_recorded_once_and_another_under_its_id_conflicts() {
    let (server, instance, client) = system().await;
    add_three(&client).await;
    let body = json!({"auditId": "a-1", "output": {"summary": "x", "score": 0}, "rules": THREE,
                      "executionId": "run-7", "agentId": "writer", "objectives": ["a summary"]});
    let first = command::<AuditEntry>(&client, "check", &body).await.unwrap();
    let again = command::<AuditEntry>(&client, "check", &body).await.unwrap();
    assert_eq!((again.seq, &again.result), (first.seq, &first.result));
    assert_eq!(first.result.execution_id.as_deref(), Some("run-7"));

    let mut other = body.clone();
    other["rules"] = json!(["has-summary"]);
    let error = refusal(command::<AuditEntry>(&client, "check", &other).await);
    assert_eq!((error.code(), error.field()), ("conflict", Some("audit_id")));
    assert_eq!(recorded_audits(&server.url()).await["a-1"].len(), 1);

    // Without an audit id, the command id names the entry.
    let derived =
        command::<AuditEntry>(&client, "check", &json!({"output": 1, "rules": ["score-range"]})).await.unwrap();
    assert!(derived.result.id.starts_with("a-"), "{}", derived.result.id);
    instance.shutdown().await;
}

#[tokio::test]
async fn unknown_rules_and_oversized_outputs_are_refused() {
    let (_server, instance, client) = system().await;
    add(&client, &three_rules()[0]).await;

    let error = refusal(
        command::<AuditEntry>(&client, "check", &json!({"output": {}, "rules": ["has-summary", "nope", "nada"]})).await,
    );
    assert_eq!((error.code(), error.field()), ("not_found", Some("rules")));
    let message = error.to_string();
    assert!(message.contains("nope") && message.contains("nada"), "names the unknown rules: {message}");
    assert!(message.contains("has-summary"), "lists the catalog: {message}");

    let big = "x".repeat(300 * 1024);
    let error = refusal(
        command::<AuditEntry>(&client, "check", &json!({"output": {"text": big}, "rules": ["has-summary"]})).await,
    );
    assert_eq!(error.code(), "too_large", "{error}");
    assert!(error.to_string().contains("output"), "{error}");

    // Nothing recorded for either; the service goes on.
    let error = refusal(query::<AuditView>(&client, "audit", &json!({"id": "nope"})).await);
    assert_eq!(error.code(), "not_found");
    let entry = check(&client, "after", json!({"summary": "s"}), &["has-summary"]).await;
    assert_eq!(entry.opinion, Opinion::Unqualified);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_custom_rule_no_agent_answers_is_missing_evidence_at_the_deadline() {
    let (_server, instance, client) = system().await;
    add(
        &client,
        &json!({"name": "tone", "severity": "error", "kind": "custom", "params": {"capability": "tone-check"}}),
    )
    .await;
    // No scheduler runs here: the rule's run is never made, and the deadline closes the check.
    let request = CheckRequest::new(json!("hello"), ["tone"]).audit_id("c-1").timeout_ms(300);
    let entry = client.quality().check_and_wait(&request, Duration::from_secs(20)).await.unwrap();
    assert!(entry.rule_results[0].unchecked, "{entry:?}");
    assert!(entry.rule_results[0].message.contains("no answer within 300 ms"), "{entry:?}");
    assert_eq!(entry.opinion, Opinion::Disclaimer);
    instance.shutdown().await;
}
