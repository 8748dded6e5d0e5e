//! A check's decision: evaluate the rules, count the findings, derive the opinion, record
//! the audit entry. Pure: the rules' definitions come with the command (read from the
//! catalog when it was admitted), the time from the caller.
//!
//! Built-in rules are evaluated here, at once. A `custom` rule needs an agent: until
//! custom rules run through the scheduler, its result is `unchecked` (naming the
//! capability it needs), which is missing evidence, so the opinion is at best a
//! `disclaimer`. The findings and the opinion follow the mapping of
//! [`osp_protocol::quality::audit`].

use osp_protocol::quality::{AuditEntry, AuditRecorded, Check, Findings, Opinion, QualityEvent, Rule, RuleResult};
use osp_protocol::{Error, Timestamp};

use crate::aggregate::{AuditState, CheckCommand};
use crate::rules;

/// `check` on the audit entry `existing` (if recorded): records the entry, once. The same
/// check again (a resend, or another instance taking it up) changes nothing; another check
/// under a recorded audit id is a `conflict`.
pub fn check(
    existing: Option<&AuditState>,
    command: &CheckCommand,
    now: Timestamp,
) -> Result<Vec<QualityEvent>, Error> {
    let check = &command.check;
    if let Some(existing) = existing {
        return match same_check(&existing.entry, check) {
            true => Ok(vec![]),
            false => Err(Error::Conflict {
                field: "audit_id".into(),
                value: check.audit_id.to_string(),
                reason: "an audit entry with that id records another check (other rules, objectives, execution, agent or metadata)".into(),
            }),
        };
    }
    let Some(rules) = command.rules.as_deref() else {
        // The inbox reads the definitions before it decides; without them, nothing can be
        // evaluated truthfully.
        return Err(Error::Unavailable { reason: "the check's rules were not read from the catalog".into() });
    };
    Ok(vec![QualityEvent::AuditRecorded(record(check, rules, now))])
}

/// The audit entry of `check` against `rules` (its rules' definitions, in its order),
/// made at `now`.
pub fn record(check: &Check, rules: &[Rule], now: Timestamp) -> AuditRecorded {
    let rule_results: Vec<RuleResult> = rules.iter().map(|rule| evaluate(rule, &check.output)).collect();
    let findings = Findings::count(&rule_results, None);
    let mut entry = AuditEntry {
        id: check.audit_id.to_string(),
        created_at: now,
        agent_id: check.agent_id.clone(),
        execution_id: check.execution_id.clone(),
        objectives: check.objectives.clone(),
        scope: check.rules.iter().map(ToString::to_string).collect(),
        opinion: Opinion::Unqualified,
        findings,
        rule_results,
        judge_result: None,
        metadata: check.metadata.clone(),
    };
    entry.opinion = Opinion::from_findings(findings, entry.evidence_missing());
    AuditRecorded { entry, rules: rules.to_vec() }
}

/// One rule's result. A rule of the catalog was checked when it was added; should one
/// still not prepare (an evaluator grown stricter since), its result is `unchecked`:
/// missing evidence, not a finding against the output. The rule is prepared once per
/// definition ([`rules::memo`], which caches the pure `prepare`), not on every check.
fn evaluate(rule: &Rule, output: &serde_json::Value) -> RuleResult {
    match rules::memo::prepared(rule) {
        Ok(prepared) => prepared.check(output),
        Err(error) => RuleResult {
            rule_name: rule.name.clone(),
            passed: false,
            severity: rule.severity,
            message: format!("not checked: the rule cannot be evaluated ({error})"),
            critical: rule.critical,
            unchecked: true,
        },
    }
}

/// Whether `entry` records `check`: the same rules, objectives, execution, agent and
/// metadata. (The output itself is not kept on the log, so it cannot be compared: an
/// audit id names one check, and its sender keeps it to one output.)
fn same_check(entry: &AuditEntry, check: &Check) -> bool {
    entry.scope.iter().map(String::as_str).eq(check.rules.iter().map(|rule| rule.as_str()))
        && entry.objectives == check.objectives
        && entry.execution_id == check.execution_id
        && entry.agent_id == check.agent_id
        && entry.metadata == check.metadata
}

#[cfg(test)]
mod tests {
    use osp_eventlog::testing::{given, TEST_TIME};
    use osp_protocol::quality::{RuleKind, Severity};
    use osp_protocol::Token;
    use serde_json::json;

    use super::*;
    use crate::aggregate::{QualityCommand, Record};

    fn rule(name: &str, severity: Severity, kind: RuleKind) -> Rule {
        Rule { name: name.into(), description: String::new(), severity, critical: false, kind }
    }

    /// Three built-in rules: a summary is required (error), the text must not shout
    /// (warning), the score is 0 to 1 (error).
    fn catalog() -> Vec<Rule> {
        vec![
            rule("has-summary", Severity::Error, RuleKind::RequiredFields { fields: vec!["/summary".into()] }),
            rule(
                "no-shouting",
                Severity::Warning,
                RuleKind::Regex { pattern: "[A-Z]{5,}".into(), must_match: false, field: Some("/summary".into()) },
            ),
            rule(
                "score",
                Severity::Error,
                RuleKind::Range { min: Some(0.0), max: Some(1.0), field: Some("/score".into()) },
            ),
        ]
    }

    fn check_of(id: &str, output: serde_json::Value, rules: &[Rule]) -> CheckCommand {
        let check = Check {
            audit_id: Token::new("audit_id", id).unwrap(),
            output,
            rules: rules.iter().map(|rule| Token::new("rule", rule.name.as_str()).unwrap()).collect(),
            objectives: vec!["a usable summary".into()],
            execution_id: Some("run-1".into()),
            agent_id: Some("summarizer".into()),
            metadata: None,
        };
        CheckCommand { check: Box::new(check), rules: Some(rules.to_vec()) }
    }

    fn recorded(command: &CheckCommand) -> AuditRecorded {
        let events = given::<Record>([]).when(&QualityCommand::Check(command.clone())).events();
        let [QualityEvent::AuditRecorded(recorded)] = events.as_slice() else { panic!("{events:?}") };
        recorded.clone()
    }

    #[test]
    fn a_check_records_results_findings_and_opinion_with_the_rules_it_used() {
        let passes = recorded(&check_of("a-1", json!({"summary": "fine", "score": 0.5}), &catalog()));
        assert_eq!(passes.entry.findings, Findings::default());
        assert_eq!(passes.entry.opinion, Opinion::Unqualified);
        assert_eq!(passes.rules, catalog());
        assert_eq!(passes.entry.scope, ["has-summary", "no-shouting", "score"]);
        assert_eq!(passes.entry.created_at, TEST_TIME);
        assert_eq!(passes.entry.execution_id.as_deref(), Some("run-1"));

        let shouts = recorded(&check_of("a-2", json!({"summary": "GREAT NEWS", "score": 0.5}), &catalog()));
        assert_eq!(shouts.entry.findings, Findings { critical: 0, major: 0, minor: 1 });
        assert_eq!(shouts.entry.opinion, Opinion::Qualified);
        let passed: Vec<bool> = shouts.entry.rule_results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, false, true]);

        // No summary fails the regex rule too: a missing field fails the rule naming it.
        let bad = recorded(&check_of("a-3", json!({"score": 7}), &catalog()));
        assert_eq!(bad.entry.findings, Findings { critical: 0, major: 2, minor: 1 });
        assert_eq!(bad.entry.opinion, Opinion::Adverse);
    }

    #[test]
    fn a_custom_rule_is_unchecked_for_now_which_is_missing_evidence() {
        let custom = rule(
            "tone",
            Severity::Error,
            RuleKind::Custom { capability: Token::new("capability", "tone-check").unwrap(), params: None },
        );
        let audit = recorded(&check_of("a-1", json!({"summary": "ok", "score": 1}), &[catalog().remove(0), custom]));
        let result = &audit.entry.rule_results[1];
        assert!(result.unchecked && !result.passed, "{result:?}");
        assert!(result.message.contains("tone-check"), "{}", result.message);
        assert_eq!(audit.entry.opinion, Opinion::Disclaimer);
    }

    #[test]
    fn the_same_check_again_records_nothing_and_another_under_its_id_conflicts() {
        let first = check_of("a-1", json!({"summary": "x", "score": 0}), &catalog());
        let history = [QualityEvent::AuditRecorded(recorded(&first))];
        // The output is not compared (it is not on the log): only what the entry holds.
        let resent = check_of("a-1", json!({"other": true}), &catalog());
        given::<Record>(history.clone()).when(&QualityCommand::Check(resent)).then(vec![]);
        let other = check_of("a-1", json!({"summary": "x"}), &catalog()[..2]);
        let error = given::<Record>(history).when(&QualityCommand::Check(other)).then_refused("another check");
        assert_eq!((error.code(), error.field()), ("conflict", Some("audit_id")));
    }

    #[test]
    fn a_check_whose_rules_were_not_read_is_not_evaluated() {
        let mut command = check_of("a-1", json!({}), &catalog());
        command.rules = None;
        given::<Record>([]).when(&QualityCommand::Check(command)).then_refused("not read from the catalog");
    }
}
