//! Rules: named checks of a task's output.
//!
//! ```json
//! {"name": "has-summary", "description": "the output names a summary", "severity": "error",
//!  "kind": "required-fields", "params": {"fields": ["/summary"]}}
//! ```
//!
//! Built-in kinds need no model; `custom` delegates to an agent of a named capability.
//! A rule that looks at part of the output names it with a JSON pointer (RFC 6901,
//! `/summary/title`); without one it looks at the whole output. Text checks (regex,
//! contains, length of text) read a string as it is and anything else as its compact JSON.

use serde::{Deserialize, Serialize};

use crate::{Error, Token};

/// How much a failed rule matters. (Ordered most severe first: `Error` < `Warning` < `Info`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure is a finding (major, or critical when the rule says so).
    Error,
    /// A failure is a minor finding.
    Warning,
    /// A failure is reported, and is no finding.
    Info,
}

/// A rule of the catalog. (Unknown fields are not refused here: serde cannot refuse
/// them next to the flattened kind; the quality service checks the rule's shape.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Unique in the catalog; a subject token (no `.`, `*`, `>` or whitespace).
    pub name: String,
    /// What it checks, for people.
    #[serde(default)]
    pub description: String,
    /// How much a failure matters.
    pub severity: Severity,
    /// A failure of this `error` rule is a critical finding, not a major one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// What it checks, and how.
    #[serde(flatten)]
    pub kind: RuleKind,
}

/// What a rule checks: `kind` and its `params`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "kind", content = "params", rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RuleKind {
    /// The output (or the part at `field`) is valid against a JSON Schema.
    JsonSchema {
        /// The schema (draft 2020-12 unless it says otherwise with `$schema`).
        schema: serde_json::Value,
        /// Where in the output; the whole output when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// Each of these JSON pointers names a value in the output that is not null.
    RequiredFields {
        /// JSON pointers (`/summary`, `/items/0/id`).
        fields: Vec<String>,
    },
    /// The text must (or must not) match a regular expression. Patterns are matched in
    /// linear time (no backtracking, so no pattern can hang the service); look-around and
    /// back-references are refused when the rule is added.
    Regex {
        /// The pattern (Rust `regex` syntax).
        pattern: String,
        /// `true`: must match; `false`: must not match.
        #[serde(default = "yes", rename = "mustMatch")]
        must_match: bool,
        /// Where in the output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// The length of the text (in characters), of an array (in items) or of an object
    /// (in keys) is within bounds.
    Length {
        /// At least.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u64>,
        /// At most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
        /// Where in the output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// The number at `field` is within bounds (inclusive).
    Range {
        /// At least.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// At most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
        /// Where in the output; the whole output when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// The text contains (or does not contain) a value.
    Contains {
        /// What to look for.
        value: String,
        /// `true`: must contain; `false`: must not contain.
        #[serde(default = "yes", rename = "mustContain")]
        must_contain: bool,
        /// Compare ignoring case.
        #[serde(default, rename = "ignoreCase", skip_serializing_if = "std::ops::Not::not")]
        ignore_case: bool,
        /// Where in the output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// The value at `field` is one of these.
    AllowedValues {
        /// The values allowed (compared as JSON values).
        values: Vec<serde_json::Value>,
        /// Where in the output; the whole output when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// An agent of `capability` checks the output: it gets `{output, params, rule}` and
    /// answers `{passed, message?}`.
    Custom {
        /// Whose agents check.
        capability: Token,
        /// What they are given besides the output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        params: Option<serde_json::Value>,
    },
}

fn yes() -> bool {
    true
}

/// The fields of a rule.
const RULE_FIELDS: &[&str] = &["name", "description", "severity", "critical", "kind", "params"];

impl Rule {
    /// Reads a rule from its JSON form (as sent, or as written in a file), refusing what
    /// serde alone would let through: a field or a parameter the rule does not have
    /// (`"feild"`, `"mustmatch"`: next to the flattened kind serde drops them without a
    /// word, and the rule would check something else than meant). The error names the
    /// field (`severity`, `params.feild`).
    pub fn from_json(sent: &serde_json::Value) -> Result<Rule, Error> {
        let invalid = |field: &str, reason: String| Error::Invalid { field: field.to_owned(), reason };
        let Some(fields) = sent.as_object() else {
            return Err(invalid("rule", format!("a rule is an object, not {}", crate::json::kind_of(sent))));
        };
        if let Some(unknown) = fields.keys().find(|key| !RULE_FIELDS.contains(&key.as_str())) {
            return Err(invalid(unknown, format!("a rule has no such field (it has {})", RULE_FIELDS.join(", "))));
        }
        for field in ["name", "severity", "kind"] {
            match fields.get(field) {
                None => return Err(invalid(field, "missing".into())),
                Some(value) if !value.is_string() => {
                    return Err(invalid(field, format!("must be a string, not {}", crate::json::kind_of(value))))
                }
                Some(_) => {}
            }
        }
        Token::new("name", fields["name"].as_str().unwrap_or_default())?;
        serde_json::from_value::<Severity>(fields["severity"].clone()).map_err(|_| {
            invalid("severity", format!("{} is not a severity (error, warning or info)", fields["severity"]))
        })?;
        let kind = serde_json::json!({"kind": fields["kind"], "params": fields.get("params")});
        let kind: RuleKind = serde_json::from_value(kind).map_err(|e| match e.to_string() {
            unknown if unknown.starts_with("unknown variant") => invalid("kind", unknown),
            other => invalid("params", other),
        })?;
        let rule: Rule = serde_json::from_value(sent.clone()).map_err(|e| invalid("rule", e.to_string()))?;
        let written = serde_json::to_value(&kind).map_err(|e| Error::Encode { reason: e.to_string() })?;
        let kept = written.get("params").and_then(serde_json::Value::as_object).cloned().unwrap_or_default();
        // Defaults (`null`, `false`) are not written back, so they do not count as dropped.
        let dropped = fields.get("params").and_then(serde_json::Value::as_object).and_then(|params| {
            params.iter().find(|(name, value)| {
                !kept.contains_key(*name) && !matches!(value, serde_json::Value::Null | serde_json::Value::Bool(false))
            })
        });
        match dropped {
            Some((name, _)) => Err(invalid(
                &format!("params.{name}"),
                format!(
                    "a {} rule has no such parameter (it has {})",
                    kind.name(),
                    kept.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                ),
            )),
            None => Ok(rule),
        }
    }
}

/// What checking one rule gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleResult {
    /// The rule.
    pub rule_name: String,
    /// Whether the output passed it.
    pub passed: bool,
    /// The rule's severity.
    pub severity: Severity,
    /// Why it passed or failed, for people.
    pub message: String,
    /// The rule is critical (a failure is a critical finding).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// The rule could not be checked (a custom rule's agent did not answer): evidence is
    /// missing, which the audit's opinion takes into account; `passed` is then false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
}

impl RuleKind {
    /// The kind's name on the wire: `json-schema`, `required-fields`, `regex`, `length`,
    /// `range`, `contains`, `allowed-values`, `custom`.
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_read_from_their_json_form_and_write_it_back() {
        for json in [
            json!({"name": "r", "description": "d", "severity": "error", "critical": true, "kind": "required-fields", "params": {"fields": ["/a"]}}),
            json!({"name": "r", "description": "d", "severity": "warning", "kind": "regex", "params": {"pattern": "^a", "mustMatch": false}}),
            json!({"name": "r", "description": "", "severity": "info", "kind": "custom", "params": {"capability": "tone"}}),
        ] {
            let rule: Rule = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(serde_json::to_value(&rule).unwrap(), json);
            assert_eq!(rule.kind.name(), json["kind"], "the kind's name is its wire name");
            let packed = rmp_serde::to_vec_named(&rule).unwrap();
            assert_eq!(rmp_serde::from_slice::<Rule>(&packed).unwrap(), rule);
        }
        let unknown = serde_json::from_value::<Rule>(
            json!({"name": "r", "severity": "error", "kind": "spell-check", "params": {}}),
        );
        assert!(unknown.unwrap_err().to_string().contains("spell-check"));
    }

    #[test]
    fn a_strict_read_names_the_field_serde_would_have_dropped_or_misread() {
        let base = json!({"name": "r", "severity": "error", "kind": "regex", "params": {"pattern": "a"}});
        assert!(Rule::from_json(&base).is_ok());
        let defaults = json!({"name": "r", "severity": "error", "kind": "contains", "params": {"value": "a", "ignoreCase": false, "field": null}});
        assert!(Rule::from_json(&defaults).is_ok());
        let custom = json!({"name": "r", "severity": "info", "kind": "custom", "params": {"capability": "c", "params": {"any": 1}}});
        assert!(Rule::from_json(&custom).is_ok());
        let field = |mut rule: serde_json::Value, key: &str, value: serde_json::Value| {
            rule[key] = value;
            Rule::from_json(&rule).unwrap_err().field().map(str::to_owned)
        };
        assert_eq!(field(base.clone(), "severty", json!("warning")), Some("severty".into()));
        assert_eq!(field(base.clone(), "severity", json!("fatal")), Some("severity".into()));
        assert_eq!(field(base.clone(), "kind", json!("spell-check")), Some("kind".into()));
        assert_eq!(field(base.clone(), "params", json!({"pattern": 3})), Some("params".into()));
        let typo = field(base.clone(), "params", json!({"pattern": "a", "feild": "/x"}));
        assert_eq!(typo, Some("params.feild".into()));
        assert_eq!(Rule::from_json(&json!([1])).unwrap_err().field(), Some("rule"));
    }
}
