//! Rules as the catalog receives them (JSON), through [`prepare`] and [`PreparedRule::check`].
//! Each kind's finer behaviour is tested in its own module.

use super::*;
use osp_protocol::quality::Severity;
use proptest::prelude::*;
use serde_json::json;

fn rule(kind: &str, params: Value) -> Rule {
    let rule = json!({"name": "r", "description": "d", "severity": "warning", "kind": kind, "params": params});
    serde_json::from_value(rule.clone()).unwrap_or_else(|e| panic!("{rule}: {e}"))
}

fn check(kind: &str, params: Value, output: &Value) -> RuleResult {
    prepare(&rule(kind, params.clone())).unwrap_or_else(|e| panic!("{kind} {params}: {e}")).check(output)
}

fn refusal(rule: &Rule) -> (String, String) {
    match prepare(rule) {
        Err(Error::Invalid { field, reason }) => (field, reason),
        other => panic!("{rule:?}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_built_in_kind_passes_and_fails() {
    let output = json!({"summary": "A short summary.", "score": 0.7, "status": "final", "items": [1, 2, 3]});
    let cases = [
        (
            "json-schema",
            json!({"schema": {"type": "object", "required": ["summary"]}}),
            json!({"schema": {"required": ["title"]}}),
        ),
        ("required-fields", json!({"fields": ["/summary", "/items/2"]}), json!({"fields": ["/summary", "/items/3"]})),
        (
            "regex",
            json!({"pattern": "^A ", "field": "/summary"}),
            json!({"pattern": "short", "mustMatch": false, "field": "/summary"}),
        ),
        ("length", json!({"min": 3, "max": 3, "field": "/items"}), json!({"max": 10, "field": "/summary"})),
        ("range", json!({"min": 0.5, "max": 1, "field": "/score"}), json!({"min": 0.8, "field": "/score"})),
        (
            "contains",
            json!({"value": "SUMMARY", "ignoreCase": true}),
            json!({"value": "conclusion", "field": "/summary"}),
        ),
        (
            "allowed-values",
            json!({"values": ["draft", "final"], "field": "/status"}),
            json!({"values": ["draft"], "field": "/status"}),
        ),
    ];
    for (kind, passing, failing) in cases {
        let passed = check(kind, passing.clone(), &output);
        assert!(passed.passed && !passed.unchecked, "{kind} {passing}: {}", passed.message);
        let failed = check(kind, failing.clone(), &output);
        assert!(!failed.passed && !failed.unchecked, "{kind} {failing}: {}", failed.message);
        assert!(!failed.message.is_empty());
    }
}

#[test]
fn a_result_carries_the_rules_name_severity_and_criticality() {
    let rule: Rule = serde_json::from_value(json!({
        "name": "has-summary", "severity": "error", "critical": true,
        "kind": "required-fields", "params": {"fields": ["/summary"]}
    }))
    .unwrap();
    let result = prepare(&rule).unwrap().check(&json!({}));
    assert_eq!(
        result,
        RuleResult {
            rule_name: "has-summary".to_owned(),
            passed: false,
            severity: Severity::Error,
            message: "1 of 1 required field missing or null: /summary (missing)".to_owned(),
            critical: true,
            unchecked: false,
        }
    );
}

#[test]
fn a_missing_field_fails_the_rule_naming_the_pointer() {
    for (kind, params) in [
        ("regex", json!({"pattern": "x", "field": "/a/b"})),
        ("length", json!({"min": 1, "field": "/a/b"})),
        ("range", json!({"min": 1, "field": "/a/b"})),
        ("contains", json!({"value": "x", "field": "/a/b"})),
        ("allowed-values", json!({"values": [1], "field": "/a/b"})),
        ("json-schema", json!({"schema": true, "field": "/a/b"})),
    ] {
        let result = check(kind, params, &json!({"a": {}}));
        assert!(!result.passed);
        assert_eq!(result.message, "/a/b is missing: the output has no value there", "{kind}");
    }
}

#[test]
fn a_custom_rule_is_left_to_an_agent() {
    let prepared = prepare(&rule("custom", json!({"capability": "tone-check", "params": {"tone": "formal"}}))).unwrap();
    assert_eq!(prepared.needs_agent().map(Token::as_str), Some("tone-check"));
    let result = prepared.check(&json!("anything"));
    assert!(result.unchecked && !result.passed);
    assert!(result.message.contains("capability \"tone-check\""), "{}", result.message);
    assert_eq!(prepare(&rule("range", json!({"max": 1}))).unwrap().needs_agent(), None);
}

#[test]
fn refusals_name_the_field_and_say_why() {
    let named = |name: &str| Rule { name: name.to_owned(), ..rule("range", json!({"max": 1})) };
    let described = |description: String| Rule { description, ..rule("range", json!({"max": 1})) };
    let cases = [
        (named("has.dot"), "name", "'.'"),
        (named(""), "name", "empty"),
        (named("has space"), "name", "whitespace"),
        (named(&"n".repeat(MAX_NAME_BYTES + 1)), "name", "at most 64 bytes"),
        (described("d".repeat(MAX_DESCRIPTION_BYTES + 1)), "description", "at most 4096 bytes"),
        (rule("json-schema", json!({"schema": {"type": 3}})), "params.schema", "not a valid JSON Schema"),
        (
            rule("json-schema", json!({"schema": {"$ref": "https://example.invalid/s.json"}})),
            "params.schema",
            "example.invalid",
        ),
        (rule("json-schema", json!({"schema": {}, "field": "nope"})), "params.field", "start with \"/\""),
        (rule("regex", json!({"pattern": "(?=look)ahead"})), "params.pattern", "look-around"),
        (rule("regex", json!({"pattern": "(?<=look)behind"})), "params.pattern", "look-around"),
        (rule("regex", json!({"pattern": "(a)\\1"})), "params.pattern", "backreferences"),
        (rule("regex", json!({"pattern": "[z-a]"})), "params.pattern", "invalid"),
        (rule("regex", json!({"pattern": "x".repeat(MAX_PATTERN_BYTES + 1)})), "params.pattern", "at most 4096 bytes"),
        (rule("regex", json!({"pattern": "\\w{500}{500}"})), "params.pattern", "more than 4 MiB"),
        (rule("regex", json!({"pattern": "x", "field": "/bad~"})), "params.field", "~"),
        (rule("required-fields", json!({"fields": ["/a", "/b", "c"]})), "params.fields[2]", "start with \"/\""),
        (rule("required-fields", json!({"fields": []})), "params.fields", "empty"),
        (rule("length", json!({"min": 5, "max": 2})), "params.min", "greater than max 2"),
        (rule("length", json!({})), "params", "neither min nor max"),
        (rule("range", json!({"min": 1.5, "max": 1})), "params.min", "greater than max 1"),
        (rule("contains", json!({"value": ""})), "params.value", "empty"),
        (rule("allowed-values", json!({"values": []})), "params.values", "empty"),
    ];
    for (rule, field, why) in cases {
        let (got_field, reason) = refusal(&rule);
        assert_eq!(got_field, field, "{:?}: {reason}", rule.kind);
        assert!(reason.contains(why), "{field}: {reason:?} does not say {why:?}");
    }
    // Bounds that are not finite numbers cannot be written in JSON, but can in MessagePack.
    for (min, max, field) in [(Some(f64::NAN), None, "params.min"), (None, Some(f64::INFINITY), "params.max")] {
        let rule = Rule { kind: RuleKind::Range { min, max, field: None }, ..rule("range", json!({"max": 1})) };
        assert_eq!(refusal(&rule).0, field);
    }
}

#[test]
fn catastrophic_patterns_on_100_kb_finish() {
    let mut text = "a".repeat(100 * 1024);
    text.push('!');
    let output = json!({ "text": text });
    for pattern in ["(a+)+$", "^(a|a)*$", "^(a*)*b$", "(.*a){20}"] {
        let result = check("regex", json!({"pattern": pattern, "field": "/text"}), &output);
        assert!(!result.message.is_empty(), "{pattern}");
    }
    let schema = json!({"schema": {"properties": {"text": {"pattern": "^(a|a)*$"}}}});
    assert!(!check("json-schema", schema, &output).passed);
}

#[test]
fn the_sample_catalog_checks_a_2_kb_output() {
    let output = sample_output();
    let size = output.to_string().len();
    assert!((1500..=2600).contains(&size), "the sample output is {size} bytes");
    let catalog = sample_catalog();
    assert_eq!(catalog.len(), 20);
    let kinds: std::collections::BTreeSet<_> = catalog.iter().map(|rule| rule.kind.name()).collect();
    assert_eq!(kinds.len(), 7, "every built-in kind: {kinds:?}");
    let failed: Vec<String> = catalog
        .iter()
        .map(|rule| prepare(rule).unwrap_or_else(|e| panic!("{}: {e}", rule.name)).check(&output))
        .filter(|result| !result.passed)
        .map(|result| format!("{}: {}", result.rule_name, result.message))
        .collect();
    assert_eq!(
        failed,
        [
            "has-reviewer: 1 of 1 required field missing or null: /meta/reviewer (missing)",
            "short-title: /title has 26 characters, above the maximum 20",
            "tokens-budget: /meta/tokens is 1450, above the maximum 1000",
        ]
    );
}

#[test]
fn prepared_rules_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<PreparedRule>();
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        "[a-c~/é0-9 ]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-c~/0-9]{0,3}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn any_pointer() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "(/[a-c0-9~-]{0,3}){1,3}", "[a-c/~]{0,6}"]
}

fn any_field() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any_pointer())
}

fn any_kind() -> impl Strategy<Value = RuleKind> {
    let bound = || prop::option::of(prop_oneof![any::<f64>(), -10.0..10.0]);
    prop_oneof![
        (any_json(), any_field()).prop_map(|(schema, field)| RuleKind::JsonSchema { schema, field }),
        (
            prop_oneof![
                Just(json!({"type": "object"})),
                Just(json!({"items": {"pattern": "^(a|a)*$"}, "minItems": 1}))
            ],
            any_field()
        )
            .prop_map(|(schema, field)| RuleKind::JsonSchema { schema, field }),
        prop::collection::vec(any_pointer(), 0..4).prop_map(|fields| RuleKind::RequiredFields { fields }),
        (r"[a-c.*+?()|\[\]^$\\{}0-9]{0,10}", any::<bool>(), any_field())
            .prop_map(|(pattern, must_match, field)| RuleKind::Regex { pattern, must_match, field }),
        (prop::option::of(0..20_u64), prop::option::of(0..20_u64), any_field())
            .prop_map(|(min, max, field)| RuleKind::Length { min, max, field }),
        (bound(), bound(), any_field()).prop_map(|(min, max, field)| RuleKind::Range { min, max, field }),
        ("[a-cA-Cé~ ]{0,4}", any::<bool>(), any::<bool>(), any_field()).prop_map(
            |(value, must_contain, ignore_case, field)| {
                RuleKind::Contains { value, must_contain, ignore_case, field }
            }
        ),
        (prop::collection::vec(any_json(), 0..4), any_field())
            .prop_map(|(values, field)| RuleKind::AllowedValues { values, field }),
        Just(RuleKind::Custom { capability: Token::new("capability", "judge").unwrap(), params: None }),
    ]
}

fn any_rule() -> impl Strategy<Value = Rule> {
    let severity = prop_oneof![Just(Severity::Error), Just(Severity::Warning), Just(Severity::Info)];
    let name = prop_oneof![9 => "[a-c-]{1,6}", 1 => "[a-c. -]{0,6}"];
    (name, severity, any::<bool>(), any_kind()).prop_map(|(name, severity, critical, kind)| Rule {
        name,
        description: String::new(),
        severity,
        critical,
        kind,
    })
}

proptest! {
    #[test]
    fn any_rule_on_any_output_never_panics(rule in any_rule(), output in any_json()) {
        if let Ok(prepared) = prepare(&rule) {
            let result = prepared.check(&output);
            prop_assert_eq!(&result.rule_name, &rule.name);
            prop_assert_eq!(result.severity, rule.severity);
            prop_assert!(!result.message.is_empty());
            prop_assert!(result.message.chars().count() <= 600, "{}", result.message);
        }
    }
}
