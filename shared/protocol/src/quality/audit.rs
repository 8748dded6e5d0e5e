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

use crate::quality::rules::RuleResult;
use crate::Timestamp;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// The opinion.
    pub opinion: Opinion,
    /// The findings.
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
