//! Text checks: `regex`, `contains` and `length`.
//!
//! The text of a value is the string itself, or the compact JSON of anything else (so
//! `{"a":1}` can be searched too). `length` counts a string's characters (not bytes), an
//! array's items and an object's keys; other values are counted as their JSON text.
//!
//! Patterns use the `regex` crate: matching is linear in the text (no backtracking), so no
//! pattern — `(a+)+$`, `^(a|a)*$` — can hang the service on a 256 KiB output. What a linear
//! engine cannot do (look-around, back-references) is refused when the rule is added, as
//! are patterns longer than [`MAX_PATTERN_BYTES`] or compiling to more than
//! [`MAX_COMPILED_BYTES`]: a compiled program's size is the constant factor of matching.

use std::borrow::Cow;

use osp_protocol::Error;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::bounds::Bounds;
use super::message::{count, excerpt};
use super::pointer::Pointer;
use super::{ValueCheck, Verdict};

/// The longest pattern (or `contains` value) a rule may give.
pub const MAX_PATTERN_BYTES: usize = 4 * 1024;
/// The most memory a compiled pattern may take (`RegexBuilder::size_limit`). Unicode
/// classes are large (`\p{L}{1,64}` needs between 1 and 4 MiB), and this size is also the
/// constant factor of matching when the lazy DFA gives up, so it is bounded well below the
/// crate's default of 10 MiB.
pub const MAX_COMPILED_BYTES: usize = 4 * 1024 * 1024;
/// The most memory a pattern's lazy DFA may cache (`RegexBuilder::dfa_size_limit`).
pub const MAX_DFA_BYTES: usize = 2 * 1024 * 1024;

/// A value as text checks read it.
pub fn text_of(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

/// A compiled `regex` rule.
#[derive(Clone, Debug)]
pub struct RegexCheck {
    regex: Regex,
    must_match: bool,
    field: Pointer,
}

impl RegexCheck {
    /// Compiles `pattern` within the limits.
    pub fn prepare(pattern: &str, must_match: bool, field: Option<&str>) -> Result<RegexCheck, Error> {
        if pattern.is_empty() {
            return Err(invalid("params.pattern", "is empty: it would match every text".to_owned()));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(too_long("params.pattern", pattern));
        }
        let regex = compile("params.pattern", pattern, false)?;
        Ok(RegexCheck { regex, must_match, field: Pointer::parse_optional("params.field", field)? })
    }

    fn pattern(&self) -> String {
        format!("/{}/", excerpt(self.regex.as_str()))
    }
}

impl ValueCheck for RegexCheck {
    fn field(&self) -> &Pointer {
        &self.field
    }

    fn check_value(&self, value: &Value) -> Verdict {
        let text = text_of(value);
        let at = self.field.describe();
        let pattern = self.pattern();
        match (self.regex.find(&text), self.must_match) {
            (Some(found), true) => Verdict::pass(format!("{at} matches {pattern} at {:?}", excerpt(found.as_str()))),
            (None, true) => Verdict::fail(format!("{at} does not match {pattern}: the text is {:?}", excerpt(&text))),
            (Some(found), false) => {
                Verdict::fail(format!("{at} matches {pattern}, which it must not, at {:?}", excerpt(found.as_str())))
            }
            (None, false) => Verdict::pass(format!("{at} does not match {pattern}, as required")),
        }
    }
}

/// A prepared `contains` rule.
#[derive(Clone, Debug)]
pub struct ContainsCheck {
    value: String,
    /// Set when the rule ignores case: the value as an escaped literal, compiled
    /// case-insensitively (Unicode simple case folding, still linear).
    ignoring_case: Option<Regex>,
    must_contain: bool,
    field: Pointer,
}

impl ContainsCheck {
    /// Checks the value and, to ignore case, compiles it as a literal.
    pub fn prepare(
        value: &str,
        must_contain: bool,
        ignore_case: bool,
        field: Option<&str>,
    ) -> Result<ContainsCheck, Error> {
        if value.is_empty() {
            return Err(invalid("params.value", "is empty: every text contains it".to_owned()));
        }
        if value.len() > MAX_PATTERN_BYTES {
            return Err(too_long("params.value", value));
        }
        let ignoring_case = match ignore_case {
            true => Some(compile("params.value", &regex::escape(value), true)?),
            false => None,
        };
        let field = Pointer::parse_optional("params.field", field)?;
        Ok(ContainsCheck { value: value.to_owned(), ignoring_case, must_contain, field })
    }

    fn found_in(&self, text: &str) -> bool {
        match &self.ignoring_case {
            Some(regex) => regex.is_match(text),
            None => text.contains(self.value.as_str()),
        }
    }
}

impl ValueCheck for ContainsCheck {
    fn field(&self) -> &Pointer {
        &self.field
    }

    fn check_value(&self, value: &Value) -> Verdict {
        let text = text_of(value);
        let at = self.field.describe();
        let needle =
            format!("{:?}{}", excerpt(&self.value), if self.ignoring_case.is_some() { " (ignoring case)" } else { "" });
        match (self.found_in(&text), self.must_contain) {
            (true, true) => Verdict::pass(format!("{at} contains {needle}")),
            (false, true) => Verdict::fail(format!("{at} does not contain {needle}: the text is {:?}", excerpt(&text))),
            (true, false) => Verdict::fail(format!("{at} contains {needle}, which it must not")),
            (false, false) => Verdict::pass(format!("{at} does not contain {needle}, as required")),
        }
    }
}

/// A prepared `length` rule.
#[derive(Clone, Debug)]
pub struct LengthCheck {
    bounds: Bounds<u64>,
    field: Pointer,
}

impl LengthCheck {
    /// Checks the bounds.
    pub fn prepare(min: Option<u64>, max: Option<u64>, field: Option<&str>) -> Result<LengthCheck, Error> {
        Ok(LengthCheck { bounds: Bounds::new(min, max)?, field: Pointer::parse_optional("params.field", field)? })
    }
}

impl ValueCheck for LengthCheck {
    fn field(&self) -> &Pointer {
        &self.field
    }

    fn check_value(&self, value: &Value) -> Verdict {
        let (length, unit) = match value {
            Value::Array(items) => (items.len(), "item"),
            Value::Object(map) => (map.len(), "key"),
            other => (text_of(other).chars().count(), "character"),
        };
        let has = format!("{} has {}", self.field.describe(), count(length, unit));
        let length = u64::try_from(length).unwrap_or(u64::MAX);
        match self.bounds.violation(length) {
            None => Verdict::pass(format!("{has}, {}", self.bounds.describe())),
            Some(violation) => Verdict::fail(format!("{has}, {violation}")),
        }
    }
}

/// Compiles `pattern` within the size limits (its length is checked by the caller, on the
/// text the rule gave); `field` names it in the error.
fn compile(field: &str, pattern: &str, ignore_case: bool) -> Result<Regex, Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(MAX_COMPILED_BYTES)
        .dfa_size_limit(MAX_DFA_BYTES)
        .build()
        .map_err(|error| invalid(field, refusal(&error)))
}

/// Why the regex engine refused a pattern, in one sentence.
fn refusal(error: &regex::Error) -> String {
    match error {
        regex::Error::CompiledTooBig(limit) => format!(
            "compiles to more than {} MiB, the limit for a pattern: use fewer or smaller repetitions, or ASCII classes ([a-z], (?-u:\\w)) instead of Unicode ones",
            limit >> 20
        ),
        // The syntax error's text draws the pattern with a caret, then says `error: ...`.
        regex::Error::Syntax(text) => {
            let why = text.lines().find_map(|line| line.strip_prefix("error: ")).unwrap_or(text);
            format!("is not a valid pattern: {why} (patterns use Rust regex syntax and are matched in linear time, so look-around and back-references are not supported)")
        }
        other => format!("is not a valid pattern: {other}"),
    }
}

fn too_long(field: &str, text: &str) -> Error {
    invalid(field, format!("is {} bytes long; at most {MAX_PATTERN_BYTES} bytes are allowed", text.len()))
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Invalid { field: field.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal_of(result: Result<impl std::fmt::Debug, Error>) -> (String, String) {
        match result {
            Err(Error::Invalid { field, reason }) => (field, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn regex_must_match_and_must_not_match() {
        let must = RegexCheck::prepare("^[A-Z][a-z]+", true, Some("/title")).unwrap();
        let passed = must.check_output(&json!({"title": "Hello world"}));
        assert!(passed.passed, "{}", passed.message);
        assert!(passed.message.contains("\"Hello\""), "{}", passed.message);
        let failed = must.check_output(&json!({"title": "hello"}));
        assert!(!failed.passed);
        assert!(failed.message.contains("/title does not match"), "{}", failed.message);

        let must_not = RegexCheck::prepare(r"(?i)lorem ipsum", false, None).unwrap();
        assert!(must_not.check_value(&json!("a fine text")).passed);
        let failed = must_not.check_value(&json!({"body": "Lorem Ipsum dolor"}));
        assert!(!failed.passed, "non-strings are read as their JSON");
        assert!(failed.message.contains("must not"), "{}", failed.message);
    }

    #[test]
    fn regex_refusals_name_the_field_and_say_why() {
        for (pattern, why) in [
            ("(?=a)b", "look-around"),
            ("(?<!a)b", "look-around"),
            (r"(a)\1", "backreference"),
            ("(unclosed", "unclosed"),
            ("", "empty"),
            (r"\w{1000}{1000}", "4 MiB"),
        ] {
            let (field, reason) = refusal_of(RegexCheck::prepare(pattern, true, None));
            assert_eq!(field, "params.pattern");
            assert!(reason.contains(why), "{pattern}: {reason}");
        }
        let (_, reason) = refusal_of(RegexCheck::prepare(&"a".repeat(MAX_PATTERN_BYTES + 1), true, None));
        assert!(reason.contains("4096 bytes"), "{reason}");
        let (field, _) = refusal_of(RegexCheck::prepare("a", true, Some("title")));
        assert_eq!(field, "params.field");
    }

    #[test]
    fn ordinary_patterns_fit_the_limits() {
        for pattern in [
            r"^\w+$",
            r"\p{L}{1,64}",
            r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$",
            r"\b\d{4}-\d{2}-\d{2}\b",
            r"[a-zA-Z0-9]{1,100}",
            r"(?-u:\w){1,100}",
        ] {
            RegexCheck::prepare(pattern, true, None).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        }
    }

    #[test]
    fn catastrophic_backtracking_patterns_run_in_linear_time() {
        let mut text = "a".repeat(100_000);
        text.push('!');
        for pattern in ["(a+)+$", "^(a|a)*$", "^(a|aa)+$", "(x+x+)+y"] {
            let check = RegexCheck::prepare(pattern, true, None).unwrap();
            let verdict = check.check_value(&json!(text));
            assert!(!verdict.passed, "{pattern} cannot match before the final '!': {}", verdict.message);
        }
    }

    #[test]
    fn contains_exactly_or_ignoring_case() {
        let exact = ContainsCheck::prepare("Summary", true, false, None).unwrap();
        assert!(exact.check_value(&json!("## Summary\n...")).passed);
        assert!(!exact.check_value(&json!("## summary")).passed);
        let folded = ContainsCheck::prepare("ÉTÉ (1+1)", true, true, None).unwrap();
        assert!(folded.check_value(&json!("un été (1+1) chaud")).passed, "metacharacters are literal");
        let must_not = ContainsCheck::prepare("TODO", false, true, Some("/body")).unwrap();
        assert!(must_not.check_output(&json!({"body": "done"})).passed);
        let failed = must_not.check_output(&json!({"body": "todo: finish"}));
        assert!(!failed.passed);
        assert!(
            failed.message.contains("/body contains \"TODO\" (ignoring case), which it must not"),
            "{}",
            failed.message
        );
        let (field, reason) = refusal_of(ContainsCheck::prepare("", true, false, None));
        assert_eq!((field.as_str(), reason.contains("empty")), ("params.value", true));
    }

    #[test]
    fn length_counts_characters_items_and_keys() {
        let check = LengthCheck::prepare(Some(2), Some(3), None).unwrap();
        assert!(check.check_value(&json!("été")).passed, "3 characters, 5 bytes");
        assert!(!check.check_value(&json!("é")).passed);
        assert!(check.check_value(&json!([1, 2])).passed);
        assert!(!check.check_value(&json!([1, 2, 3, 4])).passed);
        assert!(check.check_value(&json!({"a": 1, "b": 2})).passed);
        assert!(check.check_value(&json!(123)).passed, "a number is counted as its JSON text");
        let failed = check.check_value(&json!("toolong"));
        assert_eq!(failed.message, "the output has 7 characters, above the maximum 3");
        let (field, _) = refusal_of(LengthCheck::prepare(Some(4), Some(3), None));
        assert_eq!(field, "params.min");
    }
}
