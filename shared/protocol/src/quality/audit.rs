//! The audit: one entry per checked execution, with the findings counted from the failed
//! checks and the opinion that follows from them.
//!
//! **Findings** (what [`Findings::count`] does): each failed rule of severity `error` is
//! a *major* finding, or a *critical* one when the rule is `critical`; each failed
//! `warning` is a *minor* finding; a failed `info` rule is no finding. A judge that did
//! not pass is a *major* finding. A check that could not be made (a custom rule's agent or
//! the judge did not answer) is no finding but missing evidence.
//!
//! **Opinion** (what [`Opinion::from_findings`] does), the first that applies:
//! 1. `adverse`: any critical finding, or 2 or more major ones;
//! 2. `disclaimer`: evidence is missing (a check could not be made);
//! 3. `qualified`: 1 major finding, or any minor one;
//! 4. `unqualified`: no finding.

use serde::{Deserialize, Serialize};

use crate::quality::rules::{RuleResult, Severity};
use crate::Timestamp;

/// The name an entry's `scope` gives the judge: when the scope names it and the entry has
/// no judge result, the judge's evidence is missing.
pub const JUDGE_SCOPE: &str = "judge";

/// What the checks found, by weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Findings {
    /// Failed critical rules.
    pub critical: u32,
    /// Failed error rules, and a judge that did not pass.
    pub major: u32,
    /// Failed warning rules.
    pub minor: u32,
}

/// The auditor's opinion of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Opinion {
    /// Nothing found.
    Unqualified,
    /// Something found, not enough to reject.
    Qualified,
    /// Enough found to reject the output.
    Adverse,
    /// No opinion: evidence is missing.
    Disclaimer,
}

/// What the judge said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeResult {
    /// 0 to 1.
    pub score: f64,
    /// Whether the score reached the threshold.
    pub passed: bool,
    /// Why, in the judge's words.
    pub reasoning: String,
    /// The judge's own per-rule results, if it gave any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_results: Option<Vec<RuleResult>>,
}

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEntry {
    /// Its id (a subject token).
    pub id: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// The agent whose output was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The execution checked (a run id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// What the checks were for.
    #[serde(default)]
    pub objectives: Vec<String>,
    /// What was checked (rule names, `judge`).
    #[serde(default)]
    pub scope: Vec<String>,
    /// Follows from `findings` and whether evidence is missing (see the module doc).
    pub opinion: Opinion,
    /// Failed rules and a failed judge, counted by weight; missing evidence counts none.
    pub findings: Findings,
    /// Each rule's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_results: Vec<RuleResult>,
    /// The judge's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_result: Option<JudgeResult>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl Findings {
    /// Counts the findings of the failed checks, by the mapping of the module doc: a failed
    /// `error` rule is major (critical when the rule is), a failed `warning` minor, a
    /// failed `info` nothing; a judge that did not pass is major. A rule that could not be
    /// checked is no finding: it is missing evidence (see [`AuditEntry::evidence_missing`]).
    pub fn count(rule_results: &[RuleResult], judge: Option<&JudgeResult>) -> Findings {
        let mut findings = Findings::default();
        for result in rule_results.iter().filter(|result| !result.passed && !result.unchecked) {
            match (result.severity, result.critical) {
                (Severity::Error, true) => findings.critical += 1,
                (Severity::Error, false) => findings.major += 1,
                (Severity::Warning, _) => findings.minor += 1,
                (Severity::Info, _) => {}
            }
        }
        if judge.is_some_and(|judge| !judge.passed) {
            findings.major += 1;
        }
        findings
    }

    /// No finding at all.
    pub fn is_empty(&self) -> bool {
        *self == Findings::default()
    }
}

impl Opinion {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The opinion that follows from the findings, by the rule of the module doc. Findings
    /// enough to reject win over missing evidence: what was found stays found, whatever
    /// could not be checked.
    pub fn from_findings(findings: Findings, evidence_missing: bool) -> Opinion {
        if findings.critical > 0 || findings.major >= 2 {
            Opinion::Adverse
        } else if evidence_missing {
            Opinion::Disclaimer
        } else if !findings.is_empty() {
            Opinion::Qualified
        } else {
            Opinion::Unqualified
        }
    }
}

impl AuditEntry {
    /// Whether a check of the entry could not be made: a rule result is `unchecked`, or
    /// the scope names the judge and there is no judge result (it did not answer).
    pub fn evidence_missing(&self) -> bool {
        self.rule_results.iter().any(|result| result.unchecked)
            || (self.scope.iter().any(|checked| checked == JUDGE_SCOPE) && self.judge_result.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(severity: Severity, passed: bool) -> RuleResult {
        RuleResult {
            rule_name: format!("{severity:?}").to_lowercase(),
            passed,
            severity,
            message: String::new(),
            critical: false,
            unchecked: false,
        }
    }

    fn failed(severity: Severity) -> RuleResult {
        rule(severity, false)
    }

    fn critical() -> RuleResult {
        RuleResult { critical: true, ..failed(Severity::Error) }
    }

    fn unchecked() -> RuleResult {
        RuleResult { unchecked: true, ..failed(Severity::Error) }
    }

    fn judge(passed: bool) -> JudgeResult {
        JudgeResult { score: if passed { 0.9 } else { 0.2 }, passed, reasoning: String::new(), rule_results: None }
    }

    fn entry(rule_results: Vec<RuleResult>, scope: &[&str], judge_result: Option<JudgeResult>) -> AuditEntry {
        AuditEntry {
            id: "a-1".into(),
            created_at: Timestamp(0),
            agent_id: None,
            execution_id: None,
            objectives: Vec::new(),
            scope: scope.iter().map(|s| (*s).to_owned()).collect(),
            opinion: Opinion::Unqualified,
            findings: Findings::default(),
            rule_results,
            judge_result,
            metadata: None,
        }
    }

    #[test]
    fn an_opinion_is_named_as_it_is_written() {
        for opinion in [Opinion::Unqualified, Opinion::Qualified, Opinion::Adverse, Opinion::Disclaimer] {
            assert_eq!(serde_json::to_value(opinion).unwrap(), opinion.as_str());
        }
    }

    /// Each case: what was checked, then the findings `[critical, major, minor]`, whether
    /// evidence is missing, and the opinion.
    #[test]
    fn findings_and_opinion_follow_the_documented_mapping() {
        use Opinion::*;
        use Severity::*;
        let cases: Vec<(&str, AuditEntry, [u32; 3], bool, Opinion)> = vec![
            ("no results", entry(vec![], &[], None), [0, 0, 0], false, Unqualified),
            (
                "passed everything",
                entry(
                    vec![rule(Error, true), rule(Warning, true), RuleResult { critical: true, ..rule(Error, true) }],
                    &["error", "warning", "judge"],
                    Some(judge(true)),
                ),
                [0, 0, 0],
                false,
                Unqualified,
            ),
            ("one failed info", entry(vec![failed(Info)], &[], None), [0, 0, 0], false, Unqualified),
            ("one failed warning", entry(vec![failed(Warning)], &[], None), [0, 0, 1], false, Qualified),
            (
                "two failed warnings",
                entry(vec![failed(Warning), failed(Warning)], &[], None),
                [0, 0, 2],
                false,
                Qualified,
            ),
            ("one failed error", entry(vec![failed(Error)], &[], None), [0, 1, 0], false, Qualified),
            ("one failed critical", entry(vec![critical()], &[], None), [1, 0, 0], false, Adverse),
            ("two failed errors", entry(vec![failed(Error), failed(Error)], &[], None), [0, 2, 0], false, Adverse),
            ("a failed judge", entry(vec![], &["judge"], Some(judge(false))), [0, 1, 0], false, Qualified),
            (
                "a failed judge and one failed error",
                entry(vec![failed(Error)], &["judge"], Some(judge(false))),
                [0, 2, 0],
                false,
                Adverse,
            ),
            ("an unchecked rule", entry(vec![unchecked()], &[], None), [0, 0, 0], true, Disclaimer),
            ("the judge did not answer", entry(vec![rule(Error, true)], &["judge"], None), [0, 0, 0], true, Disclaimer),
            (
                "missing evidence and one failed error",
                entry(vec![unchecked(), failed(Error)], &[], None),
                [0, 1, 0],
                true,
                Disclaimer,
            ),
            ("missing evidence and a critical", entry(vec![critical()], &["judge"], None), [1, 0, 0], true, Adverse),
            (
                "missing evidence and two failed errors",
                entry(vec![unchecked(), failed(Error), failed(Error)], &[], None),
                [0, 2, 0],
                true,
                Adverse,
            ),
        ];
        for (case, entry, [critical, major, minor], missing, opinion) in cases {
            let findings = Findings::count(&entry.rule_results, entry.judge_result.as_ref());
            assert_eq!(findings, Findings { critical, major, minor }, "{case}: findings");
            assert_eq!(entry.evidence_missing(), missing, "{case}: evidence missing");
            assert_eq!(Opinion::from_findings(findings, entry.evidence_missing()), opinion, "{case}: opinion");
        }
    }

    #[test]
    fn a_critical_flag_only_weighs_on_error_rules() {
        let warning = RuleResult { critical: true, ..failed(Severity::Warning) };
        let info = RuleResult { critical: true, ..failed(Severity::Info) };
        assert_eq!(Findings::count(&[warning, info], None), Findings { critical: 0, major: 0, minor: 1 });
    }
}
