//! Rules checked against a task's output: the pure evaluator.
//!
//! [`prepare`] runs when a rule is added to the catalog: it is the only place a bad rule is
//! caught, so each refusal is an [`Error::Invalid`] naming the field (`name`,
//! `params.schema`, `params.fields[2]`, ...) and saying why. It also compiles what can be
//! compiled once (JSON Schemas, patterns, JSON pointers). [`PreparedRule::check`] then
//! evaluates the rule against an output and never fails: every outcome, a missing field
//! included, is a [`RuleResult`] whose message says why in one short sentence.
//!
//! Evaluating never panics and its work is bounded by the output (up to 256 KiB): pointers
//! are walks, text checks are linear (patterns are bounded by [`MAX_PATTERN_BYTES`] and
//! [`MAX_COMPILED_BYTES`]), and schemas use the same linear regex engine. `custom` rules are not evaluated here: their result is
//! `unchecked`, and [`PreparedRule::needs_agent`] says which capability the service must
//! route them to.

mod bounds;
mod fields;
pub mod memo;
mod message;
mod pointer;
mod sample;
mod schema;
mod text;
mod values;

use osp_protocol::quality::{Rule, RuleKind, RuleResult};
use osp_protocol::{Error, Token};
use serde_json::Value;

pub use pointer::Pointer;
pub use sample::{sample_catalog, sample_output};
pub use text::{MAX_COMPILED_BYTES, MAX_DFA_BYTES, MAX_PATTERN_BYTES};

/// The longest rule name, in bytes (it is a subject token, and shows up in every result).
pub const MAX_NAME_BYTES: usize = 64;
/// The longest rule description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;

/// A rule checked and compiled, ready to evaluate any number of outputs.
#[derive(Clone, Debug)]
pub struct PreparedRule {
    rule: Rule,
    check: Check,
}

/// What a prepared rule evaluates, one variant per kind.
#[derive(Clone, Debug)]
enum Check {
    JsonSchema(schema::SchemaCheck),
    RequiredFields(fields::RequiredFields),
    Regex(text::RegexCheck),
    Length(text::LengthCheck),
    Contains(text::ContainsCheck),
    Range(values::RangeCheck),
    AllowedValues(values::AllowedValues),
    /// An agent of this capability evaluates it.
    Custom(Token),
}

/// Checks `rule` and compiles it; the error names the field at fault and says why.
pub fn prepare(rule: &Rule) -> Result<PreparedRule, Error> {
    check_name(&rule.name)?;
    check_description(&rule.description)?;
    let check = match &rule.kind {
        RuleKind::JsonSchema { schema, field } => {
            Check::JsonSchema(schema::SchemaCheck::prepare(schema, field.as_deref())?)
        }
        RuleKind::RequiredFields { fields } => Check::RequiredFields(fields::RequiredFields::prepare(fields)?),
        RuleKind::Regex { pattern, must_match, field } => {
            Check::Regex(text::RegexCheck::prepare(pattern, *must_match, field.as_deref())?)
        }
        RuleKind::Length { min, max, field } => {
            Check::Length(text::LengthCheck::prepare(*min, *max, field.as_deref())?)
        }
        RuleKind::Range { min, max, field } => Check::Range(values::RangeCheck::prepare(*min, *max, field.as_deref())?),
        RuleKind::Contains { value, must_contain, ignore_case, field } => {
            Check::Contains(text::ContainsCheck::prepare(value, *must_contain, *ignore_case, field.as_deref())?)
        }
        RuleKind::AllowedValues { values, field } => {
            Check::AllowedValues(values::AllowedValues::prepare(values, field.as_deref())?)
        }
        RuleKind::Custom { capability, .. } => Check::Custom(capability.clone()),
    };
    Ok(PreparedRule { rule: rule.clone(), check })
}

impl PreparedRule {
    /// The rule as it was given.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.rule.name
    }

    /// The capability of the agents that evaluate this rule, for a `custom` rule; `None`
    /// for built-in kinds, which [`check`](Self::check) evaluates itself.
    pub fn needs_agent(&self) -> Option<&Token> {
        match &self.check {
            Check::Custom(capability) => Some(capability),
            _ => None,
        }
    }

    /// Evaluates the rule against `output`. A `custom` rule gives a result marked
    /// `unchecked` (not passed) whose message names the capability it needs: the service
    /// routes it to an agent and replaces the result with the agent's answer.
    pub fn check(&self, output: &Value) -> RuleResult {
        let verdict = match &self.check {
            Check::JsonSchema(check) => check.check_output(output),
            Check::RequiredFields(check) => check.check(output),
            Check::Regex(check) => check.check_output(output),
            Check::Length(check) => check.check_output(output),
            Check::Contains(check) => check.check_output(output),
            Check::Range(check) => check.check_output(output),
            Check::AllowedValues(check) => check.check_output(output),
            Check::Custom(capability) => {
                let message = format!("not checked here: it needs an agent of capability {:?}", capability.as_str());
                return self.result(Verdict::fail(message), true);
            }
        };
        self.result(verdict, false)
    }

    fn result(&self, verdict: Verdict, unchecked: bool) -> RuleResult {
        RuleResult {
            rule_name: self.rule.name.clone(),
            passed: verdict.passed,
            severity: self.rule.severity,
            message: verdict.message,
            critical: self.rule.critical,
            unchecked,
        }
    }
}

/// What evaluating gave, before the rule's name and severity are attached.
#[derive(Clone, Debug, PartialEq)]
struct Verdict {
    passed: bool,
    message: String,
}

impl Verdict {
    fn pass(message: String) -> Verdict {
        Verdict { passed: true, message }
    }

    fn fail(message: String) -> Verdict {
        Verdict { passed: false, message }
    }
}

/// A check of the one value its rule's pointer selects (every kind but required-fields).
trait ValueCheck {
    /// Where in the output the rule looks.
    fn field(&self) -> &Pointer;

    /// Evaluates the selected value.
    fn check_value(&self, value: &Value) -> Verdict;

    /// Selects the value and evaluates it; a missing value fails the rule, naming where.
    fn check_output(&self, output: &Value) -> Verdict {
        match self.field().select(output) {
            Some(value) => self.check_value(value),
            None => Verdict::fail(format!("{} is missing: the output has no value there", self.field().describe())),
        }
    }
}

/// A subject token of at most [`MAX_NAME_BYTES`].
fn check_name(name: &str) -> Result<(), Error> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::Invalid {
            field: "name".to_owned(),
            reason: format!("is {} bytes long; a rule name is at most {MAX_NAME_BYTES} bytes", name.len()),
        });
    }
    match Token::new("name", name) {
        Ok(_) => Ok(()),
        Err(Error::InvalidToken { value, reason, .. }) => {
            Err(Error::Invalid { field: "name".to_owned(), reason: format!("{value:?} {reason}") })
        }
        Err(other) => Err(other),
    }
}

fn check_description(description: &str) -> Result<(), Error> {
    match description.len() {
        len if len > MAX_DESCRIPTION_BYTES => Err(Error::Invalid {
            field: "description".to_owned(),
            reason: format!("is {len} bytes long; a description is at most {MAX_DESCRIPTION_BYTES} bytes"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
