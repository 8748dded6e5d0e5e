//! A sample catalog and output, for benchmarks (`osp bench quality`) and tests: 20 varied
//! built-in rules, most passing and some failing, against a report of about 1.6 KB
//! (`osp bench quality` pads it to exactly 2 KB).

use osp_protocol::quality::Rule;
use serde_json::{json, Value};

/// 20 built-in rules of every kind, as a catalog would hold them, written for
/// [`sample_output`]: most pass, a few fail, so both paths are measured.
pub fn sample_catalog() -> Vec<Rule> {
    vec![
        rule(
            "report-shape",
            "error",
            "json-schema",
            json!({"schema": {
                "type": "object",
                "required": ["title", "summary", "sections", "score", "status"],
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "sections": {"type": "array", "items": {"type": "object", "required": ["heading", "body"]}},
                    "score": {"type": "number", "minimum": 0, "maximum": 1}
                }
            }}),
        ),
        rule(
            "sources-shape",
            "warning",
            "json-schema",
            json!({"field": "/sources", "schema": {
                "type": "array", "maxItems": 10,
                "items": {"type": "object", "required": ["url"], "properties": {"url": {"type": "string", "pattern": "^https://"}}}
            }}),
        ),
        rule(
            "has-basics",
            "error",
            "required-fields",
            json!({"fields": ["/title", "/summary", "/status", "/meta/model"]}),
        ),
        rule(
            "has-first-section",
            "warning",
            "required-fields",
            json!({"fields": ["/sections/0/heading", "/sections/0/body"]}),
        ),
        rule("has-reviewer", "info", "required-fields", json!({"fields": ["/meta/reviewer"]})),
        rule("title-capitalised", "warning", "regex", json!({"pattern": "^[A-Z]", "field": "/title"})),
        rule(
            "no-placeholder",
            "error",
            "regex",
            json!({"pattern": "(?i)\\b(lorem ipsum|TODO|FIXME|TBD)\\b", "mustMatch": false}),
        ),
        rule("dated", "info", "regex", json!({"pattern": "\\b\\d{4}-\\d{2}-\\d{2}\\b", "field": "/meta/date"})),
        rule(
            "no-email",
            "error",
            "regex",
            json!({"pattern": "[\\w.+-]+@[\\w-]+\\.[\\w.]+", "mustMatch": false, "field": "/summary"}),
        ),
        rule("summary-length", "warning", "length", json!({"min": 50, "max": 600, "field": "/summary"})),
        rule("few-sections", "warning", "length", json!({"min": 2, "max": 8, "field": "/sections"})),
        rule("short-title", "error", "length", json!({"max": 20, "field": "/title"})),
        rule("score-bounds", "error", "range", json!({"min": 0, "max": 1, "field": "/score"})),
        rule("confident", "warning", "range", json!({"min": 0.8, "field": "/score"})),
        rule("tokens-budget", "info", "range", json!({"max": 1000, "field": "/meta/tokens"})),
        rule("mentions-risk", "warning", "contains", json!({"value": "risk", "ignoreCase": true})),
        rule(
            "no-apology",
            "error",
            "contains",
            json!({"value": "as an ai language model", "mustContain": false, "ignoreCase": true}),
        ),
        rule("cites-source", "info", "contains", json!({"value": "https://", "field": "/sources"})),
        rule(
            "known-status",
            "error",
            "allowed-values",
            json!({"values": ["draft", "review", "final"], "field": "/status"}),
        ),
        rule(
            "known-language",
            "warning",
            "allowed-values",
            json!({"values": ["en", "fr", "de"], "field": "/meta/language"}),
        ),
    ]
}

/// A report of about 1.6 KB (compact JSON) for [`sample_catalog`].
pub fn sample_output() -> Value {
    let body = "The migration moved the event log to JetStream with per-aggregate subjects, \
                optimistic concurrency on the last sequence, and snapshots every 500 events. \
                Rebuild time fell from minutes to seconds on the reference data set.";
    json!({
        "title": "Quarterly migration report",
        "summary": "The event log now lives in JetStream. Rebuilds are faster, consumers are durable, \
                    and the remaining risk is the snapshot format, which is not yet versioned.",
        "status": "review",
        "score": 0.86,
        "sections": [
            {"heading": "Context", "body": body},
            {"heading": "What changed", "body": body},
            {"heading": "Results", "body": body, "figures": [12.5, 3.1, 0.4]},
            {"heading": "Risks", "body": "Snapshot format changes would need an upcaster; a risk we accept for now."},
            {"heading": "Next steps", "body": body}
        ],
        "sources": [
            {"url": "https://example.org/design", "title": "Design notes"},
            {"url": "https://example.org/bench", "title": "Benchmarks"}
        ],
        "meta": {"model": "m-1", "date": "2025-03-31", "tokens": 1450, "language": "en", "tags": ["ops", "storage", "nats"]}
    })
}

fn rule(name: &str, severity: &str, kind: &str, params: Value) -> Rule {
    let rule = json!({"name": name, "description": format!("sample rule {name}"), "severity": severity, "kind": kind, "params": params});
    serde_json::from_value(rule).expect("the sample rules are well-formed")
}
