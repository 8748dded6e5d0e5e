//! An audit entry as a markdown file, for people and for version control.
//!
//! ```text
//! ---
//! id: audit-1
//! createdAt: 2026-11-25T17:03:27.512Z
//! executionId: run-42
//! opinion: qualified
//! findings:
//!   critical: 0
//!   major: 1
//!   minor: 0
//! ...
//! ---
//! <!-- generated from the front matter ... -->
//! # Audit audit-1: qualified
//! ...
//! ```
//!
//! The YAML front matter holds the whole entry, with the keys of its JSON form
//! (`executionId`, `ruleResults`), and is the truth: [`from_markdown`] reads the entry
//! from it alone, and gives back exactly what [`to_markdown`] was given. The one
//! difference from the JSON form is `createdAt`, written as an RFC 3339 time for people
//! (milliseconds since the epoch, as on the wire, are accepted too, and are written when
//! the time is outside the years RFC 3339 can show).
//!
//! The markdown body after the front matter (title, findings, a table of the rule results,
//! the judge's verdict) is generated from the entry for people to read; it is **ignored**
//! when the file is read back, so an edit must be made in the front matter.

use serde_yaml_ng::{Mapping, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::quality::audit::{AuditEntry, JudgeResult};
use crate::quality::rules::RuleResult;
use crate::{Error, Timestamp};

/// The line that opens and closes the front matter.
const FENCE: &str = "---";
/// The key of the time, the one field written differently from the JSON form.
const CREATED_AT: &str = "createdAt";

/// The entry as a markdown file: its YAML front matter, then a generated body for people.
pub fn to_markdown(entry: &AuditEntry) -> String {
    format!("{FENCE}\n{}{FENCE}\n{}", front_matter(entry), body(entry))
}

/// Reads an entry from a markdown file's front matter (the body is ignored: it is
/// generated). Errors say what is wrong: no front matter, an unterminated one, YAML that
/// does not parse (with its line and column in the file), a field of the wrong type (with
/// its path, `findings.major`).
pub fn from_markdown(text: &str) -> Result<AuditEntry, Error> {
    let yaml = front_matter_of(text)?;
    let mut value: Value = serde_yaml_ng::from_str(yaml).map_err(yaml_error)?;
    let Value::Mapping(fields) = &mut value else {
        return Err(malformed("", "the front matter is not a mapping of the audit entry's fields".into()));
    };
    created_at_from_front_matter(fields)?;
    serde_path_to_error::deserialize(value).map_err(|e| malformed(&e.path().to_string(), e.inner().to_string()))
}

// ----- the front matter -----

/// The entry's JSON form in YAML, with `createdAt` as a time people read.
fn front_matter(entry: &AuditEntry) -> String {
    // An entry is plain data with string keys: YAML can hold all of it.
    let mut value = serde_yaml_ng::to_value(entry).expect("an audit entry is representable in YAML");
    if let Value::Mapping(fields) = &mut value {
        fields.insert(CREATED_AT.into(), created_at_for_people(entry.created_at));
    }
    serde_yaml_ng::to_string(&value).expect("a YAML value with string keys can be written")
}

/// RFC 3339 when it reads back to the same instant; milliseconds otherwise (a year
/// outside 0..=9999 has no RFC 3339 form).
fn created_at_for_people(at: Timestamp) -> Value {
    let text = at.to_rfc3339();
    if parse_rfc3339(&text) == Some(at) {
        Value::String(text)
    } else {
        Value::Number(at.millis().into())
    }
}

/// Turns an RFC 3339 `createdAt` into milliseconds, the field's type; anything else is
/// left for the deserializer to judge.
fn created_at_from_front_matter(fields: &mut Mapping) -> Result<(), Error> {
    let Some(Value::String(text)) = fields.get(CREATED_AT) else {
        return Ok(());
    };
    let at = parse_rfc3339(text).ok_or_else(|| {
        malformed(
            CREATED_AT,
            format!("{text:?} is neither an RFC 3339 time (2026-11-25T17:03:27.512Z) nor milliseconds since the epoch"),
        )
    })?;
    fields.insert(CREATED_AT.into(), Value::Number(at.millis().into()));
    Ok(())
}

fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(Timestamp::from_offset_date_time)
}

/// The YAML of the front matter, from the opening fence up to the closing one. The
/// opening `---` is kept: YAML reads it as the start of the document, and the line
/// numbers of YAML errors are then those of the file.
fn front_matter_of(text: &str) -> Result<&str, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let opening = lines.next().unwrap_or_default();
    if opening.trim_end() != FENCE {
        return Err(malformed("", format!("the file does not start with {FENCE} (the front matter's opening line)")));
    }
    let mut end = opening.len();
    for line in lines {
        if line.trim_end() == FENCE {
            return Ok(&text[..end]);
        }
        end += line.len();
    }
    Err(malformed("", format!("the front matter is unterminated: no line {FENCE} closes it")))
}

fn yaml_error(error: serde_yaml_ng::Error) -> Error {
    // The message already ends with the line and column, which are the file's own (see
    // `front_matter_of`).
    malformed("", format!("the front matter is not valid YAML: {error}"))
}

fn malformed(path: &str, reason: String) -> Error {
    Error::Malformed { encoding: "markdown".into(), path: path.into(), reason }
}

// ----- the body, for people -----

/// The readable rendering: title and opinion, what was checked, the findings, the rule
/// results as a table, the judge's verdict.
fn body(entry: &AuditEntry) -> String {
    let mut out = String::from(
        "<!-- Generated from the front matter above, for people to read: it is ignored when this file is \
         read back. Edit the front matter. -->\n\n",
    );
    out += &format!("# Audit {}: {}\n\n", inline(&entry.id), opinion_name(entry));
    out += &format!("- Execution: {}\n", entry.execution_id.as_deref().map_or("none".into(), inline));
    out += &format!("- Agent: {}\n", entry.agent_id.as_deref().map_or("none".into(), inline));
    out += &format!("- Created: {}\n", created_at_line(entry.created_at));
    out += &format!("- Findings: {}\n", findings_line(entry));
    if !entry.scope.is_empty() {
        out += &format!("- Scope: {}\n", inline(&entry.scope.join(", ")));
    }
    if !entry.objectives.is_empty() {
        out += "\n## Objectives\n\n";
        for objective in &entry.objectives {
            out += &format!("- {}\n", inline(objective));
        }
    }
    if !entry.rule_results.is_empty() {
        out += "\n## Rule results\n\n";
        out += &rule_table(&entry.rule_results);
    }
    if let Some(judge) = &entry.judge_result {
        out += "\n## Judge\n\n";
        out += &judge_section(judge);
    }
    out
}

/// The time as the front matter shows it.
fn created_at_line(at: Timestamp) -> String {
    match created_at_for_people(at) {
        Value::String(text) => text,
        _ => format!("{} ms since the epoch", at.millis()),
    }
}

fn opinion_name(entry: &AuditEntry) -> String {
    serde_json::to_value(entry.opinion).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn findings_line(entry: &AuditEntry) -> String {
    let f = entry.findings;
    let missing = if entry.evidence_missing() { "; evidence is missing" } else { "" };
    format!("{} critical, {} major, {} minor{missing}", f.critical, f.major, f.minor)
}

fn rule_table(results: &[RuleResult]) -> String {
    let mut table = String::from("| Rule | Severity | Passed | Message |\n|---|---|---|---|\n");
    for result in results {
        let severity = serde_json::to_value(result.severity).ok().and_then(|v| v.as_str().map(str::to_owned));
        let severity = format!("{}{}", severity.unwrap_or_default(), if result.critical { " (critical)" } else { "" });
        let passed = match (result.unchecked, result.passed) {
            (true, _) => "unchecked",
            (false, true) => "yes",
            (false, false) => "no",
        };
        table += &format!("| {} | {severity} | {passed} | {} |\n", cell(&result.rule_name), cell(&result.message));
    }
    table
}

fn judge_section(judge: &JudgeResult) -> String {
    let mut out = format!("Score {} · passed: {}\n", judge.score, if judge.passed { "yes" } else { "no" });
    if !judge.reasoning.is_empty() {
        out += "\n";
        for line in judge.reasoning.lines() {
            out += &format!("> {line}\n");
        }
    }
    if let Some(results) = judge.rule_results.as_deref().filter(|results| !results.is_empty()) {
        out += "\nThe judge's rule results:\n\n";
        out += &rule_table(results);
    }
    out
}

/// Text on one line of the body.
fn inline(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Text in a table cell: a `|` would end the cell, a line break the row.
fn cell(text: &str) -> String {
    inline(&text.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::audit::{Findings, Opinion};
    use crate::quality::rules::Severity;
    use proptest::prelude::*;
    use serde_json::json;

    fn full_entry() -> AuditEntry {
        let tricky = "key: value # not a comment\n- not a list\n\"quoted\" 'single' — ünïcødé ✓ 日本\n";
        AuditEntry {
            id: "audit-1".into(),
            created_at: Timestamp(1_795_626_207_512),
            agent_id: Some("writer".into()),
            execution_id: Some("run-42:step:draft".into()),
            objectives: vec!["the summary is accurate".into(), tricky.into(), "null".into(), String::new()],
            scope: vec!["has-summary".into(), "true".into(), "1".into(), "judge".into()],
            opinion: Opinion::Adverse,
            findings: Findings { critical: 1, major: 1, minor: 0 },
            rule_results: vec![
                RuleResult {
                    rule_name: "has-summary".into(),
                    passed: false,
                    severity: Severity::Error,
                    message: "missing /summary | see: docs".into(),
                    critical: true,
                    unchecked: false,
                },
                RuleResult {
                    rule_name: "- tone".into(),
                    passed: false,
                    severity: Severity::Warning,
                    message: "~".into(),
                    critical: false,
                    unchecked: true,
                },
            ],
            judge_result: Some(JudgeResult {
                score: 0.1,
                passed: false,
                reasoning: "Too short.\nAnd: wrong #2".into(),
                rule_results: Some(vec![]),
            }),
            metadata: Some(json!({
                "model": "m-1", "temperature": 1e-7, "one": 1.0, "int": 3, "big": u64::MAX, "neg": -5,
                "nested": {"list": [1, "2", null, true, {"a": "yes"}], "empty": {}, "none": []},
                "null": "null", "": "empty key", "k: v": "# x"
            })),
        }
    }

    #[test]
    fn a_full_entry_reads_back_exactly() {
        let entry = full_entry();
        let markdown = to_markdown(&entry);
        assert!(markdown.contains("createdAt: 2026-11-25T17:03:27.512Z\n"), "{markdown}");
        assert!(markdown.contains("# Audit audit-1: adverse"), "{markdown}");
        assert!(markdown.contains("| has-summary | error (critical) | no | missing /summary \\| see: docs |"));
        assert_eq!(from_markdown(&markdown).unwrap(), entry, "{markdown}");
    }

    #[test]
    fn the_body_is_ignored_when_read_back() {
        let entry = full_entry();
        let markdown = to_markdown(&entry).replace("# Audit audit-1: adverse", "# Audit audit-1: unqualified");
        assert_eq!(from_markdown(&markdown).unwrap(), entry);
    }

    #[test]
    fn a_time_rfc_3339_cannot_show_is_written_as_milliseconds() {
        for millis in [i64::MIN, -62_167_219_200_001, 253_402_300_800_000, i64::MAX] {
            let entry = AuditEntry { created_at: Timestamp(millis), ..full_entry() };
            let markdown = to_markdown(&entry);
            assert!(markdown.contains(&format!("createdAt: {millis}\n")), "{markdown}");
            assert!(markdown.contains(&format!("- Created: {millis} ms since the epoch\n")), "{markdown}");
            assert_eq!(from_markdown(&markdown).unwrap(), entry);
        }
    }

    #[test]
    fn a_file_written_by_hand_reads() {
        let text = "---\n\
            id: audit-7\n\
            createdAt: 1795626207512\n\
            executionId: run-7\n\
            objectives: [tone is polite]\n\
            scope: [polite, judge]\n\
            opinion: qualified\n\
            findings: {critical: 0, major: 1, minor: 0}\n\
            ruleResults:\n  \
              - ruleName: polite\n    \
                passed: true\n    \
                severity: warning\n    \
                message: ok\n\
            judgeResult:\n  \
              score: 0.4\n  \
              passed: false\n  \
              reasoning: too curt\n\
            ---\n\
            # My notes\n\nAnything at all.\n";
        let entry = from_markdown(text).unwrap();
        assert_eq!(entry.created_at, Timestamp(1_795_626_207_512));
        assert_eq!(entry.execution_id.as_deref(), Some("run-7"));
        assert_eq!(entry.scope, ["polite", "judge"]);
        assert_eq!(entry.findings, Findings { critical: 0, major: 1, minor: 0 });
        assert_eq!(entry.rule_results[0].severity, Severity::Warning);
        assert_eq!(entry.judge_result.as_ref().map(|j| j.score), Some(0.4));
        assert_eq!(entry.metadata, None);
        // Another time zone is the same instant.
        let text = text.replace("1795626207512", "2026-11-25T18:03:27.512+01:00");
        assert_eq!(from_markdown(&text).unwrap(), entry);
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let good = to_markdown(&full_entry());
        let cases: Vec<(&str, String, &str, &str)> = vec![
            ("no front matter", "# Audit\n".into(), "", "does not start with ---"),
            ("empty file", String::new(), "", "does not start with ---"),
            ("unterminated", "---\nid: a\n".into(), "", "unterminated"),
            ("not YAML", "---\nid: a\n  opinion: [\n---\n".into(), "", "line 3 column"),
            ("not a mapping", "---\n- a\n---\n".into(), "", "not a mapping"),
            ("wrong type", good.replace("  major: 1\n", "  major: one\n"), "findings.major", "invalid type"),
            ("unknown opinion", good.replace("opinion: adverse", "opinion: fine"), "opinion", "unknown variant"),
            ("bad time", good.replace("2026-11-25T17:03:27.512Z", "yesterday"), "createdAt", "RFC 3339"),
            (
                "unknown field",
                good.replace("opinion: adverse", "opinion: adverse\nverdict: ok"),
                "verdict",
                "unknown field",
            ),
            ("missing field", good.replace("opinion: adverse\n", ""), "", "opinion"),
        ];
        for (case, text, path, reason) in cases {
            let error = from_markdown(&text).expect_err(case);
            let Error::Malformed { path: got, reason: why, .. } = &error else { panic!("{case}: {error:?}") };
            assert!(got == path || (path.is_empty() && got == "."), "{case}: path {got:?} in {error}");
            assert!(why.contains(reason), "{case}: {error}");
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[-:#'\" \n\t|>{}\\[\\],&*!%@`?a-z0-9]{0,12}",
            prop::sample::select(vec!["null", "~", "true", "no", "1", "0x1f", "1e3", ".inf", "", " ", "- x", "a: b"])
                .prop_map(str::to_owned),
        ]
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            prop::num::f64::NORMAL.prop_map(serde_json::Value::from),
            (0.0..1.0f64).prop_map(serde_json::Value::from),
            text().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn metadata() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::btree_map(text(), json_value(), 0..4)
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()))
    }

    fn severity() -> impl Strategy<Value = Severity> {
        prop::sample::select(vec![Severity::Error, Severity::Warning, Severity::Info])
    }

    fn rule_result() -> impl Strategy<Value = RuleResult> {
        (text(), any::<bool>(), severity(), text(), any::<bool>(), any::<bool>()).prop_map(
            |(rule_name, passed, severity, message, critical, unchecked)| RuleResult {
                rule_name,
                passed,
                severity,
                message,
                critical,
                unchecked,
            },
        )
    }

    fn judge_result() -> impl Strategy<Value = JudgeResult> {
        (0.0..=1.0f64, any::<bool>(), text(), prop::option::of(prop::collection::vec(rule_result(), 0..3)))
            .prop_map(|(score, passed, reasoning, rule_results)| JudgeResult { score, passed, reasoning, rule_results })
    }

    fn opinion() -> impl Strategy<Value = Opinion> {
        prop::sample::select(vec![Opinion::Unqualified, Opinion::Qualified, Opinion::Adverse, Opinion::Disclaimer])
    }

    fn entry() -> impl Strategy<Value = AuditEntry> {
        let time = prop_oneof![4 => -62_167_219_200_000..253_402_300_800_000i64, 1 => any::<i64>()];
        let texts = || prop::collection::vec(text(), 0..4);
        let findings = (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(critical, major, minor)| Findings {
            critical,
            major,
            minor,
        });
        (
            (text(), time, prop::option::of(text()), prop::option::of(text()), texts(), texts()),
            (opinion(), findings, prop::collection::vec(rule_result(), 0..4)),
            (prop::option::of(judge_result()), prop::option::of(metadata())),
        )
            .prop_map(
                |(
                    (id, created_at, agent_id, execution_id, objectives, scope),
                    (opinion, findings, rule_results),
                    (judge_result, metadata),
                )| AuditEntry {
                    id,
                    created_at: Timestamp(created_at),
                    agent_id,
                    execution_id,
                    objectives,
                    scope,
                    opinion,
                    findings,
                    rule_results,
                    judge_result,
                    metadata,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_entry_reads_back_exactly(entry in entry()) {
            let markdown = to_markdown(&entry);
            let read = from_markdown(&markdown).map_err(|e| TestCaseError::fail(format!("{e}\n{markdown}")))?;
            prop_assert_eq!(read, entry, "{}", markdown);
        }
    }
}
