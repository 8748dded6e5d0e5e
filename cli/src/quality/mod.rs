//! The quality service's commands: `osp rules` (the catalog), `osp check` (an ad-hoc
//! check of an output) and `osp audit` (the entries checks recorded).
//!
//! What they share: reading a file argument (a path, or `-` for stdin), the usage exit
//! status for input that cannot be read, and how an audit entry is printed.

pub mod audit;
pub mod check;
pub mod rules;

use crate::output::table;
use std::process::ExitCode;

use anyhow::Context;
use osp_protocol::quality::{AuditEntry, Opinion, RuleResult, Severity};
use serde_json::Value;

use crate::clock;
use crate::entries::truncate;
use crate::output::Lines;

/// The exit status of input that cannot be read or is not what it should be (a bad rule
/// file, an output file that is not JSON), as clap's for a bad flag.
const USAGE_ERROR: u8 = 2;
/// Longest message shown in a table of rule results, in characters; `--json` has it whole.
const MESSAGE_WIDTH: usize = 80;

/// Says what is wrong with the input, and gives the usage exit status.
fn usage_error(error: &anyhow::Error) -> ExitCode {
    crate::output::print_error(error);
    ExitCode::from(USAGE_ERROR)
}

/// The text of the file `arg` (`-`: stdin), and how to name it in errors.
fn read_text(arg: &str) -> anyhow::Result<(String, String)> {
    if arg == "-" {
        let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
        return Ok((text, "stdin".to_owned()));
    }
    let text = std::fs::read_to_string(arg).with_context(|| format!("cannot read {arg}"))?;
    Ok((text, arg.to_owned()))
}

/// The wire name of an opinion (`unqualified`, `adverse`, ...).
fn opinion_name(opinion: Opinion) -> String {
    opinion.as_str().to_owned()
}

/// The wire name of a severity (`error`, `warning`, `info`).
fn severity_name(severity: Severity) -> String {
    wire_name(&severity)
}

/// A unit enum's name as serde writes it.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

/// Reads an opinion as written on the wire, for `--opinion`.
fn parse_opinion(text: &str) -> Result<Opinion, String> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not an opinion: use unqualified, qualified, adverse or disclaimer"))
}

/// An audit entry as one JSON object: its wire form (camelCase keys) with `createdAt`
/// in RFC 3339, as every time the CLI prints.
fn entry_json(entry: &AuditEntry) -> Value {
    let mut value = serde_json::to_value(entry).unwrap_or_else(|error| serde_json::json!({"error": error.to_string()}));
    value["createdAt"] = entry.created_at.to_rfc3339().into();
    value
}

/// Prints an audit entry for people: its opinion and findings, what it checked, a table
/// of the rule results and the judge's verdict; with `json`, one JSON object.
fn print_entry(entry: &AuditEntry, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        lines.line(&entry_json(entry).to_string())?;
        return lines.flush();
    }
    let findings = &entry.findings;
    lines.line(&format!("audit: {}", entry.id))?;
    lines.line(&format!("opinion: {}", opinion_name(entry.opinion)))?;
    lines.line(&format!(
        "findings: {} critical, {} major, {} minor",
        findings.critical, findings.major, findings.minor
    ))?;
    lines.line(&format!("created_at: {}", clock::time(entry.created_at)))?;
    for (key, value) in [("agent", &entry.agent_id), ("execution", &entry.execution_id)] {
        if let Some(value) = value {
            lines.line(&format!("{key}: {value}"))?;
        }
    }
    for objective in &entry.objectives {
        lines.line(&format!("objective: {objective}"))?;
    }
    if !entry.scope.is_empty() {
        lines.line(&format!("scope: {}", entry.scope.join(", ")))?;
    }
    if let Some(metadata) = &entry.metadata {
        lines.line(&format!("metadata: {metadata}"))?;
    }
    if !entry.rule_results.is_empty() {
        lines.line("")?;
        lines.line(&results_table(&entry.rule_results))?;
    }
    if let Some(judge) = &entry.judge_result {
        let verdict = if judge.passed { "passed" } else { "failed" };
        lines.line("")?;
        lines.line(&format!("judge: {verdict}, score {}: {}", judge.score, judge.reasoning))?;
    }
    lines.flush()
}

/// The rule results as a table: RULE, RESULT, SEVERITY, MESSAGE.
fn results_table(results: &[RuleResult]) -> String {
    let rows = results.iter().map(|result| {
        vec![
            result.rule_name.clone(),
            result_word(result).to_owned(),
            severity_word(result.severity, result.critical),
            truncate(&result.message, MESSAGE_WIDTH),
        ]
    });
    table(&["RULE", "RESULT", "SEVERITY", "MESSAGE"], rows)
}

/// What a rule's result was, in a word: a rule that could not be checked is neither
/// passed nor failed.
fn result_word(result: &RuleResult) -> &'static str {
    match (result.unchecked, result.passed) {
        (true, _) => "unchecked",
        (false, true) => "passed",
        (false, false) => "FAILED",
    }
}

/// A severity, and whether a failure is a critical finding.
fn severity_word(severity: Severity, critical: bool) -> String {
    let name = severity_name(severity);
    if critical {
        format!("{name} (critical)")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::quality::Findings;
    use osp_protocol::Timestamp;

    fn result(name: &str, passed: bool, severity: Severity) -> RuleResult {
        RuleResult {
            rule_name: name.into(),
            passed,
            severity,
            message: format!("{name} said so"),
            critical: false,
            unchecked: false,
        }
    }

    #[test]
    fn opinions_read_and_write_their_wire_names() {
        for name in ["unqualified", "qualified", "adverse", "disclaimer"] {
            assert_eq!(opinion_name(parse_opinion(name).unwrap()), name);
        }
        let error = parse_opinion("fine").unwrap_err();
        assert!(error.contains("\"fine\" is not an opinion"), "{error}");
    }

    #[test]
    fn rule_results_show_as_a_table() {
        let critical = RuleResult { critical: true, ..result("schema", false, Severity::Error) };
        let unchecked = RuleResult { unchecked: true, ..result("tone", false, Severity::Warning) };
        let text = results_table(&[result("has-summary", true, Severity::Error), critical, unchecked]);
        let lines: Vec<Vec<&str>> = text.lines().map(|line| line.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["RULE", "RESULT", "SEVERITY", "MESSAGE"]);
        assert_eq!(lines[1][..3], ["has-summary", "passed", "error"]);
        assert_eq!(lines[2][..4], ["schema", "FAILED", "error", "(critical)"]);
        assert_eq!(lines[3][..3], ["tone", "unchecked", "warning"]);
    }

    #[test]
    fn entries_in_json_have_their_time_in_rfc3339() {
        let entry = AuditEntry {
            id: "a-1".into(),
            created_at: Timestamp(1_500),
            agent_id: Some("writer".into()),
            execution_id: None,
            objectives: vec![],
            scope: vec!["r".into()],
            opinion: Opinion::Qualified,
            findings: Findings { critical: 0, major: 0, minor: 1 },
            rule_results: vec![result("r", false, Severity::Warning)],
            judge_result: None,
            metadata: None,
        };
        let json = entry_json(&entry);
        assert_eq!(json["createdAt"], "1970-01-01T00:00:01.5Z");
        assert_eq!(json["opinion"], "qualified");
        assert_eq!(json["ruleResults"][0]["ruleName"], "r");
        assert_eq!(json["agentId"], "writer");
    }
}
