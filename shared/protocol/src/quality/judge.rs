//! The judge: a model-based check of an output, made by an agent with the `judge`
//! capability (the runtime runs no model itself). The quality service submits it as a run
//! of the scheduler: the judge agent takes a task whose input is a [`JudgeTask`] and
//! completes it with a [`JudgeReply`]-shaped output.

use serde::{Deserialize, Serialize};

use crate::quality::audit::JudgeResult;
use crate::quality::rules::RuleResult;
use crate::Error;

/// Most criteria a judge is given.
pub const MAX_CRITERIA: usize = 32;
/// Longest criterion or model name.
pub const MAX_CRITERION_BYTES: usize = 1024;

/// What a check asks of the judge: OSP's `{criteria, threshold, model?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeSpec {
    /// What the output is judged on (one text or a list).
    #[serde(deserialize_with = "one_or_many")]
    pub criteria: Vec<String>,
    /// The score (0 to 1) the output must reach to pass.
    pub threshold: f64,
    /// Which model the judge should use, if the check cares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The input of a judge's task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeTask {
    /// What is judged.
    pub output: serde_json::Value,
    /// On what.
    pub criteria: Vec<String>,
    /// The score to reach.
    pub threshold: f64,
    /// The model to use, if named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What the checks are for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<String>,
}

/// What a judge agent completes its task with. `passed` is the runtime's to decide
/// (score against the threshold): a judge may say it, and is then overruled if it
/// disagrees with its own score.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JudgeReply {
    /// 0 to 1.
    pub score: f64,
    /// Ignored: the runtime compares the score with the threshold.
    #[serde(default)]
    pub passed: Option<bool>,
    /// The judge's explanation of its score, kept in the audit entry.
    #[serde(default)]
    pub reasoning: String,
    /// Per-criterion results, if the judge gives them.
    #[serde(default)]
    pub rule_results: Option<Vec<RuleResult>>,
}

impl JudgeSpec {
    /// Checks the values; the error names the field under `prefix` (`judge`,
    /// `options.checks.judge`).
    pub fn check(&self, prefix: &str) -> Result<(), Error> {
        let invalid = |field: &str, reason: String| Error::Invalid { field: format!("{prefix}.{field}"), reason };
        if self.criteria.is_empty() || self.criteria.len() > MAX_CRITERIA {
            return Err(invalid("criteria", format!("must name 1 to {MAX_CRITERIA} criteria")));
        }
        if let Some(bad) = self.criteria.iter().find(|c| c.trim().is_empty() || c.len() > MAX_CRITERION_BYTES) {
            return Err(invalid("criteria", format!("{bad:?} is not a criterion (1 to {MAX_CRITERION_BYTES} bytes)")));
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(invalid("threshold", format!("must be 0 to 1, not {}", self.threshold)));
        }
        if self.model.as_ref().is_some_and(|m| m.is_empty() || m.len() > MAX_CRITERION_BYTES) {
            return Err(invalid("model", format!("must be 1 to {MAX_CRITERION_BYTES} bytes")));
        }
        Ok(())
    }

    /// The judge's result from its task's output, or why the output is not a judge's
    /// reply (malformed, or a score outside 0 to 1): then nothing was judged.
    pub fn result(&self, output: &serde_json::Value) -> Result<JudgeResult, String> {
        let reply: JudgeReply = serde_json::from_value(output.clone())
            .map_err(|e| format!("the judge's reply is not {{score, reasoning, ruleResults?}}: {e}"))?;
        if !reply.score.is_finite() || !(0.0..=1.0).contains(&reply.score) {
            return Err(format!("the judge's score {} is outside 0 to 1", reply.score));
        }
        Ok(JudgeResult {
            score: reply.score,
            passed: reply.score >= self.threshold,
            reasoning: reply.reasoning,
            rule_results: reply.rule_results,
        })
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(threshold: f64) -> JudgeSpec {
        JudgeSpec { criteria: vec!["accurate".into()], threshold, model: None }
    }

    #[test]
    fn criteria_are_one_text_or_a_list_and_values_are_checked() {
        let one: JudgeSpec = serde_json::from_value(json!({"criteria": "accurate", "threshold": 0.7})).unwrap();
        assert_eq!(one.criteria, ["accurate"]);
        let many: JudgeSpec =
            serde_json::from_value(json!({"criteria": ["a", "b"], "threshold": 0.7, "model": "m"})).unwrap();
        assert_eq!(many.criteria.len(), 2);
        let error = spec(1.5).check("judge").unwrap_err();
        assert_eq!(error.field(), Some("judge.threshold"));
        let error = JudgeSpec { criteria: vec![], ..spec(0.5) }.check("options.checks.judge").unwrap_err();
        assert_eq!(error.field(), Some("options.checks.judge.criteria"));
    }

    #[test]
    fn the_runtime_decides_passed_from_the_score_and_refuses_malformed_replies() {
        let judged = spec(0.7).result(&json!({"score": 0.8, "passed": false, "reasoning": "good"})).unwrap();
        assert!(judged.passed, "the score reaches the threshold, whatever the judge said");
        assert!(!spec(0.7).result(&json!({"score": 0.5, "reasoning": "meh"})).unwrap().passed);
        for (reply, says) in [
            (json!({"score": 1.7, "reasoning": "x"}), "outside 0 to 1"),
            (json!({"score": -0.1}), "outside 0 to 1"),
            (json!({"reasoning": "no score"}), "score"),
            (json!("great"), "not {score"),
            (json!({"score": 0.5, "verdict": "ok"}), "verdict"),
        ] {
            let error = spec(0.5).result(&reply).unwrap_err();
            assert!(error.contains(says), "{reply}: {error}");
        }
    }
}

/// The input of a custom rule's task (an agent of the rule's capability checks the
/// output): the output, and the rule with its params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomRuleTask {
    /// What is checked.
    pub output: serde_json::Value,
    /// Its definition at the check; the agent reads its `params` to know what to check.
    pub rule: crate::quality::Rule,
}

/// What a custom rule's agent completes its task with: `{passed, message?}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomReply {
    passed: bool,
    #[serde(default)]
    message: Option<String>,
}

/// The result of custom rule `rule` from its task's output, or why the output is not a
/// `{passed, message?}` reply.
pub fn custom_result(rule: &crate::quality::Rule, output: &serde_json::Value) -> Result<RuleResult, String> {
    let reply: CustomReply = serde_json::from_value(output.clone())
        .map_err(|e| format!("the agent's reply is not {{passed, message?}}: {e}"))?;
    Ok(RuleResult {
        rule_name: rule.name.clone(),
        passed: reply.passed,
        severity: rule.severity,
        message: reply.message.unwrap_or_else(|| if reply.passed { "passed" } else { "failed" }.into()),
        critical: rule.critical,
        unchecked: false,
    })
}

/// The result of a part that gave none (`part` is the rule's name, or `judge`): missing
/// evidence, saying why.
pub fn unchecked(part: &str, severity: crate::quality::Severity, critical: bool, why: String) -> RuleResult {
    RuleResult { rule_name: part.to_owned(), passed: false, severity, message: why, critical, unchecked: true }
}
