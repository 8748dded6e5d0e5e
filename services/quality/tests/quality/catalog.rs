//! The catalog's commands, each on its contract: adding twice changes nothing, another
//! definition under a taken name conflicts, updates replace, removes say whether there
//! was anything to remove, and a removed name can be added again.

use osp_protocol::quality::queries::{RulePage, RuleView};
use serde_json::{json, Value};

use crate::common::{add, command, query, refusal, remove, system, three_rules};

fn regex_rule(pattern: &str) -> Value {
    json!({"name": "no-keys", "description": "no API key", "severity": "error",
           "kind": "regex", "params": {"pattern": pattern, "mustMatch": false}})
}

async fn rule(client: &osp_client::Client, name: &str) -> Result<RuleView, osp_client::Error> {
    query::<RuleView>(client, "rule", &json!({"name": name})).await.map(|answer| answer.result)
}

#[tokio::test]
async fn every_catalog_command_keeps_its_contract() {
    let (_server, instance, client) = system().await;

    // Add, then the same again: one definition, revision 1, no new event.
    let first = command::<RuleView>(&client, "add_rule", &regex_rule("sk-[a-z0-9]{8,}")).await.unwrap();
    assert_eq!(first.result.revision, 1);
    let again = command::<RuleView>(&client, "add_rule", &regex_rule("sk-[a-z0-9]{8,}")).await.unwrap();
    assert_eq!((again.seq, again.result.revision), (first.seq, 1), "the same rule again appends nothing");

    // Another definition under the name: a conflict that says to update instead.
    let error = refusal(command::<RuleView>(&client, "add_rule", &regex_rule("AKIA[A-Z0-9]{16}")).await);
    assert_eq!((error.code(), error.field()), ("conflict", Some("name")));
    assert!(error.to_string().contains("update_rule"), "{error}");

    // Update replaces it; the same update again changes nothing.
    let updated = command::<RuleView>(&client, "update_rule", &regex_rule("AKIA[A-Z0-9]{16}")).await.unwrap();
    assert_eq!(updated.result.revision, 2);
    let same = command::<RuleView>(&client, "update_rule", &regex_rule("AKIA[A-Z0-9]{16}")).await.unwrap();
    assert_eq!((same.seq, same.result.revision), (updated.seq, 2));
    let shown = rule(&client, "no-keys").await.unwrap();
    assert_eq!(
        shown.rule.kind,
        serde_json::from_value::<osp_protocol::quality::Rule>(regex_rule("AKIA[A-Z0-9]{16}")).unwrap().kind
    );

    // Updating a rule that is not there is not_found.
    let mut unknown = regex_rule("x");
    unknown["name"] = json!("nobody");
    let error = refusal(command::<RuleView>(&client, "update_rule", &unknown).await);
    assert_eq!((error.code(), error.field()), ("not_found", Some("name")));

    // Remove says whether it removed anything; the rule is gone from the queries.
    assert!(remove(&client, "no-keys").await);
    assert!(!remove(&client, "no-keys").await, "removing it again removes nothing");
    assert!(!remove(&client, "never-there").await);
    assert_eq!(refusal(rule(&client, "no-keys").await).code(), "not_found");

    // A removed name can be added again, with any definition, from revision 1.
    let readded = command::<RuleView>(&client, "add_rule", &regex_rule("ghp_[A-Za-z0-9]{36}")).await.unwrap();
    assert_eq!(readded.result.revision, 1);
    assert_eq!(rule(&client, "no-keys").await.unwrap().revision, 1);

    // The catalog lists by name, a page at a time.
    for extra in three_rules() {
        add(&client, &extra).await;
    }
    let page = query::<RulePage>(&client, "rules", &json!({"limit": 3})).await.unwrap().result;
    let names: Vec<_> = page.rules.iter().map(|view| view.rule.name.as_str()).collect();
    assert_eq!(names, ["has-summary", "no-keys", "no-shouting"]);
    let rest = query::<RulePage>(&client, "rules", &json!({"after": page.next.unwrap()})).await.unwrap().result;
    let names: Vec<_> = rest.rules.iter().map(|view| view.rule.name.as_str()).collect();
    assert_eq!((names, rest.next), (vec!["score-range"], None));
    assert_eq!(instance.commands().rejected(), 2);
    instance.shutdown().await;
}

#[tokio::test]
async fn a_rule_that_cannot_be_evaluated_is_refused_naming_the_field() {
    let (_server, instance, client) = system().await;
    let cases = [
        (regex_rule("(unclosed"), "params.pattern"),
        (regex_rule("(?=look-ahead)"), "params.pattern"),
        (
            json!({"name": "bad-schema", "severity": "error", "kind": "json-schema", "params": {"schema": {"type": 12}}}),
            "params.schema",
        ),
        (
            json!({"name": "bad-pointer", "severity": "error", "kind": "required-fields", "params": {"fields": ["summary"]}}),
            "params.fields[0]",
        ),
        (
            json!({"name": "typo", "severity": "error", "kind": "regex", "params": {"pattern": "a", "feild": "/x"}}),
            "params.feild",
        ),
    ];
    for (rule, field) in cases {
        let error = refusal(command::<RuleView>(&client, "add_rule", &rule).await);
        assert_eq!(error.code(), "invalid", "{rule}: {error}");
        assert!(error.field().is_some_and(|named| named.starts_with(field)), "{rule}: expected {field}, got {error:?}");
    }
    // Nothing of them entered the catalog.
    let page = query::<RulePage>(&client, "rules", &json!({})).await.unwrap().result;
    assert!(page.rules.is_empty(), "{page:?}");
    instance.shutdown().await;
}
