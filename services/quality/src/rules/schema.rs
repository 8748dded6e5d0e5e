//! `json-schema`: the output (or the part at `field`) is valid against a JSON Schema.
//!
//! The schema is compiled once, when the rule is prepared, and is itself validated against
//! its meta-schema (draft 2020-12 unless `$schema` names another draft). Two choices keep a
//! schema from reaching outside or hanging the service:
//! - the `jsonschema` crate is built without its HTTP and file resolvers, so a remote `$ref`
//!   is an error when the rule is added, never a fetch;
//! - `pattern` and `patternProperties` use the linear-time `regex` engine with the same
//!   size limits as regex rules (not the backtracking default), so `^(a+)+$` cannot hang.

use jsonschema::{PatternOptions, Validator};
use osp_protocol::Error;
use serde_json::Value;

use super::message::{describe, excerpt_to};
use super::pointer::Pointer;
use super::text::{MAX_COMPILED_BYTES, MAX_DFA_BYTES};
use super::{ValueCheck, Verdict};

/// How many characters of a schema error a message or a refusal quotes.
const SHOWN_ERROR_CHARS: usize = 240;

/// A compiled `json-schema` rule.
#[derive(Clone, Debug)]
pub struct SchemaCheck {
    validator: Validator,
    field: Pointer,
}

impl SchemaCheck {
    /// Compiles `schema`; refuses one that is not valid against its meta-schema, names a
    /// resource it cannot resolve offline, or has a pattern the regex engine refuses.
    pub fn prepare(schema: &Value, field: Option<&str>) -> Result<SchemaCheck, Error> {
        let field = Pointer::parse_optional("params.field", field)?;
        let patterns = PatternOptions::regex().size_limit(MAX_COMPILED_BYTES).dfa_size_limit(MAX_DFA_BYTES);
        let validator =
            jsonschema::options().with_pattern_options(patterns).build(schema).map_err(|error| Error::Invalid {
                field: "params.schema".to_owned(),
                reason: excerpt_to(
                    &format!("is not a valid JSON Schema: {}", located(&error.instance_path().to_string(), &error)),
                    SHOWN_ERROR_CHARS,
                ),
            })?;
        Ok(SchemaCheck { validator, field })
    }
}

impl ValueCheck for SchemaCheck {
    fn field(&self) -> &Pointer {
        &self.field
    }

    /// Validates the selected value; a failure quotes the first error and counts the rest.
    fn check_value(&self, value: &Value) -> Verdict {
        let mut errors = self.validator.iter_errors(value);
        let Some(first) = errors.next() else {
            return Verdict::pass(format!("{} is valid against the schema", self.field.describe()));
        };
        let more = match errors.count() {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        let what = first.masked_with(describe(first.instance())).to_string();
        let message = format!(
            "{} is not valid against the schema: {}{more}",
            self.field.describe(),
            located(&first.instance_path().to_string(), &what)
        );
        Verdict::fail(excerpt_to(&message, SHOWN_ERROR_CHARS))
    }
}

/// `at /a/b: what`, or just `what` at the root.
fn located(path: &str, what: &dyn std::fmt::Display) -> String {
    match path {
        "" => what.to_string(),
        path => format!("at {path}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(schema: Value) -> SchemaCheck {
        SchemaCheck::prepare(&schema, None).unwrap()
    }

    fn refusal(schema: Value) -> String {
        match SchemaCheck::prepare(&schema, None) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "params.schema");
                reason
            }
            other => panic!("{schema}: {other:?}"),
        }
    }

    #[test]
    fn passes_a_valid_output_and_fails_an_invalid_one_saying_where() {
        let check = schema(json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}));
        assert!(check.check_value(&json!({"n": 3})).passed);
        let failed = check.check_value(&json!({"n": "three"}));
        assert!(!failed.passed);
        assert!(failed.message.contains("at /n"), "{}", failed.message);
        assert!(failed.message.contains("the string \"three\""), "{}", failed.message);
        assert!(failed.message.contains("integer"), "{}", failed.message);
    }

    #[test]
    fn counts_the_errors_after_the_first() {
        let check = schema(json!({"type": "array", "items": {"type": "string"}}));
        let failed = check.check_value(&json!([1, 2, 3]));
        assert!(failed.message.contains("(and 2 more)"), "{}", failed.message);
    }

    #[test]
    fn a_huge_failing_value_gives_a_short_message() {
        let check = schema(json!({"type": "array"}));
        let huge = json!({"text": "x".repeat(100_000)});
        let failed = check.check_value(&huge);
        assert!(!failed.passed);
        assert!(failed.message.chars().count() <= SHOWN_ERROR_CHARS + 1, "{}", failed.message);
        assert!(failed.message.contains("an object with 1 key"), "{}", failed.message);
    }

    #[test]
    fn an_earlier_draft_is_honoured() {
        // Draft 4 spells exclusiveMaximum as a boolean; 2020-12 would refuse that schema.
        let check = schema(
            json!({"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 5, "exclusiveMaximum": true}),
        );
        assert!(check.check_value(&json!(4)).passed);
        assert!(!check.check_value(&json!(5)).passed);
    }

    #[test]
    fn refuses_a_schema_its_meta_schema_refuses() {
        let reason = refusal(json!({"type": "integr"}));
        assert!(reason.contains("not a valid JSON Schema"), "{reason}");
        assert!(reason.contains("/type"), "{reason}");
        refusal(json!({"minLength": -1}));
        refusal(json!(42));
    }

    #[test]
    fn refuses_a_remote_ref_without_fetching_it() {
        let reason = refusal(json!({"$ref": "https://schemas.invalid/summary.json"}));
        assert!(reason.contains("schemas.invalid"), "{reason}");
    }

    #[test]
    fn refuses_a_pattern_the_linear_engine_cannot_run() {
        let reason = refusal(json!({"type": "string", "pattern": "(a)\\1"}));
        assert!(reason.contains("pattern") || reason.contains("\\1"), "{reason}");
    }

    #[test]
    fn a_catastrophic_pattern_in_a_schema_runs_in_linear_time() {
        let check = schema(json!({"type": "string", "pattern": "^(a+)+$"}));
        let mut text = "a".repeat(100_000);
        text.push('!');
        assert!(!check.check_value(&json!(text)).passed);
    }
}
