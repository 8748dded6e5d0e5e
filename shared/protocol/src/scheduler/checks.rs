//! Gating a run on checks: the run option `checks` names the quality service's rules
//! (and a judge) the output must pass, and what a failure does.
//!
//! ```json
//! "checks": {"rules": ["has-summary", "short"], "judge": {"criteria": "accurate", "threshold": 0.7},
//!            "onFailure": "retry", "onMissingEvidence": "fail", "timeoutMs": 60000}
//! ```
//!
//! When the agent completes an attempt, the run does not complete: it records
//! `run.checking`, sends `check` to the quality service with the output, and decides on
//! the audit entry the quality service records for it (`run.checked`): an entry with no
//! critical and no major finding (failed warnings are minor) completes the run; missing
//! evidence (a `disclaimer`) counts as `onMissingEvidence` says; otherwise `onFailure`
//! says what happens (see [`OnCheckFailure`]).

use serde::{Deserialize, Serialize};

use crate::quality::{JudgeSpec, MAX_RULES_PER_CHECK};
use crate::scheduler::options::MAX_APPROVERS;
use crate::{Error, Token};

/// How long checks may take when the run does not say: enough for a judge agent.
pub const DEFAULT_CHECKS_TIMEOUT_MS: u64 = 60_000;

/// The checks a run's output must pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checks {
    /// Rules of the quality service's catalog, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// A judge, too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSpec>,
    /// What a failed check does.
    #[serde(default)]
    pub on_failure: OnCheckFailure,
    /// What checks that could not be made (a judge that did not answer) count as.
    #[serde(default)]
    pub on_missing_evidence: OnMissingEvidence,
    /// What the checks are for (kept in the audit entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<String>,
    /// How long the checks may take, judge and custom rules included
    /// ([`DEFAULT_CHECKS_TIMEOUT_MS`] when absent); past it, whatever is missing is
    /// missing evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// With `onFailure: approval`: who may approve the output anyway (anyone when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    /// With `onFailure: approval`: approvals needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<u32>,
}

/// What a failed check does to the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCheckFailure {
    /// The run fails (error kind `check_failed`, the audit named in its details).
    #[default]
    Fail,
    /// The attempt fails (kind `check_failed`) and the retry policy decides; the next
    /// attempt's task carries the failed results as `feedback`.
    Retry,
    /// The run waits for approval (`awaiting`) with the audit attached: approved, it
    /// completes with the output; rejected, it fails.
    Approval,
}

/// What a check that could not be made counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissingEvidence {
    /// A failure (`onFailure` applies).
    #[default]
    Fail,
    /// A pass: missing evidence alone does not fail the output.
    Pass,
}

impl Checks {
    /// How long the checks may take.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_CHECKS_TIMEOUT_MS)
    }

    /// The rule names, as subject tokens (checked by [`Checks::check`]).
    pub fn rule_tokens(&self) -> Vec<Token> {
        self.rules.iter().filter_map(|name| Token::new("rule", name.as_str()).ok()).collect()
    }

    /// Checks every value; the error names the field under `options.checks.`.
    pub fn check(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: String| Error::Invalid { field: format!("options.checks.{field}"), reason };
        if self.rules.is_empty() && self.judge.is_none() {
            return Err(invalid("rules", "name at least one rule, or a judge".into()));
        }
        if self.rules.len() > MAX_RULES_PER_CHECK {
            return Err(invalid("rules", format!("at most {MAX_RULES_PER_CHECK} rules")));
        }
        for (i, name) in self.rules.iter().enumerate() {
            Token::new(&format!("options.checks.rules[{i}]"), name.as_str())?;
        }
        if let Some(judge) = &self.judge {
            judge.check("options.checks.judge")?;
        }
        if let Some(ms) = self.timeout_ms {
            if !(1..=super::options::MAX_MS).contains(&ms) {
                return Err(invalid("timeoutMs", format!("must be 1 to {} ms, not {ms}", super::options::MAX_MS)));
            }
        }
        let approval_only = self.approvers.is_some() || self.required_approvals.is_some();
        if approval_only && self.on_failure != OnCheckFailure::Approval {
            return Err(invalid("approvers", "approvers apply with onFailure: approval".into()));
        }
        if let Some(approvers) = &self.approvers {
            if approvers.is_empty() || approvers.len() > MAX_APPROVERS || approvers.iter().any(|a| a.is_empty()) {
                return Err(invalid("approvers", format!("must list 1 to {MAX_APPROVERS} actor names")));
            }
        }
        let distinct = self.approvers.as_ref().map(|a| a.iter().collect::<std::collections::BTreeSet<_>>().len());
        match (self.required_approvals, distinct) {
            (Some(0), _) => Err(invalid("requiredApprovals", "must be at least 1".into())),
            (Some(required), Some(listed)) if required as usize > listed => Err(invalid(
                "requiredApprovals",
                format!("{required} approvals required but only {listed} distinct approvers listed"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::RunOptions;
    use crate::Encoding;

    fn options(text: &str) -> Result<RunOptions, Error> {
        let options: RunOptions = Encoding::Json.decode(text.as_bytes())?;
        options.check().map(|()| options)
    }

    #[test]
    fn spec_shaped_checks_are_read_with_their_defaults() {
        let read =
            options(r#"{"checks":{"rules":["has-summary"],"judge":{"criteria":"accurate","threshold":0.7}}}"#).unwrap();
        let checks = read.checks.unwrap();
        assert_eq!((checks.on_failure, checks.on_missing_evidence), (OnCheckFailure::Fail, OnMissingEvidence::Fail));
        assert_eq!(checks.timeout_ms(), DEFAULT_CHECKS_TIMEOUT_MS);
        let read = options(
            r#"{"checks":{"rules":["r"],"onFailure":"approval","approvers":["ann"],"onMissingEvidence":"pass"}}"#,
        )
        .unwrap();
        assert_eq!(read.checks.unwrap().on_failure, OnCheckFailure::Approval);
    }

    #[test]
    fn bad_checks_name_their_field() {
        for (text, field) in [
            (r#"{"checks":{}}"#, "options.checks.rules"),
            (r#"{"checks":{"rules":["a.b"]}}"#, "options.checks.rules[0]"),
            (r#"{"checks":{"rules":["a"],"timeoutMs":0}}"#, "options.checks.timeoutMs"),
            (r#"{"checks":{"judge":{"criteria":"x","threshold":2}}}"#, "options.checks.judge.threshold"),
            (r#"{"checks":{"rules":["a"],"approvers":["ann"]}}"#, "options.checks.approvers"),
            (
                r#"{"checks":{"rules":["a"],"onFailure":"approval","approvers":["ann"],"requiredApprovals":2}}"#,
                "options.checks.requiredApprovals",
            ),
        ] {
            let error = options(text).unwrap_err();
            assert_eq!(error.field(), Some(field), "{text}: {error}");
        }
        let error = options(r#"{"checks":{"rules":["a"],"onFailure":"explode"}}"#).unwrap_err();
        assert!(error.to_string().contains("onFailure"), "{error}");
    }
}
