//! `required-fields`: each JSON pointer names a value in the output that is not null.
//!
//! Unlike the other kinds, a missing field is the finding itself, and all of them are
//! reported at once, so an agent asked to retry learns everything it left out.

use osp_protocol::Error;
use serde_json::Value;

use super::message::{count, excerpt_to};
use super::pointer::Pointer;
use super::Verdict;

/// How many characters of the list of fields a message quotes.
const SHOWN_LIST_CHARS: usize = 200;

/// A prepared `required-fields` rule.
#[derive(Clone, Debug)]
pub struct RequiredFields {
    fields: Vec<Pointer>,
}

impl RequiredFields {
    /// Parses every pointer; the error names the one at fault (`params.fields[2]`).
    pub fn prepare(fields: &[String]) -> Result<RequiredFields, Error> {
        if fields.is_empty() {
            return Err(Error::Invalid {
                field: "params.fields".to_owned(),
                reason: "is empty: name at least one JSON pointer".to_owned(),
            });
        }
        let fields = fields
            .iter()
            .enumerate()
            .map(|(i, field)| Pointer::parse(&format!("params.fields[{i}]"), field))
            .collect::<Result<_, _>>()?;
        Ok(RequiredFields { fields })
    }

    /// Passes when every field is there and not null; otherwise names each that is not.
    pub fn check(&self, output: &Value) -> Verdict {
        let absent: Vec<String> = self.fields.iter().filter_map(|field| absence(field, output)).collect();
        let required = count(self.fields.len(), "required field");
        if absent.is_empty() {
            let list = self.fields.iter().map(Pointer::describe).collect::<Vec<_>>().join(", ");
            return Verdict::pass(excerpt_to(&format!("all {required} present: {list}"), SHOWN_LIST_CHARS));
        }
        let message = format!("{} of {required} missing or null: {}", absent.len(), absent.join(", "));
        Verdict::fail(excerpt_to(&message, SHOWN_LIST_CHARS))
    }
}

/// `/a (missing)` or `/a (null)` when the field is absent, `None` when it is there.
fn absence(field: &Pointer, output: &Value) -> Option<String> {
    match field.select(output) {
        None => Some(format!("{} (missing)", field.describe())),
        Some(Value::Null) => Some(format!("{} (null)", field.describe())),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pointers: &[&str]) -> RequiredFields {
        RequiredFields::prepare(&pointers.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn passes_when_every_field_is_there() {
        let check = fields(&["/summary", "/items/0/id", "/a~1b"]);
        let verdict = check.check(&json!({"summary": "", "items": [{"id": 0}], "a/b": false}));
        assert!(verdict.passed, "{}", verdict.message);
        assert_eq!(verdict.message, "all 3 required fields present: /summary, /items/0/id, /a~1b");
    }

    #[test]
    fn reports_every_missing_or_null_field_at_once() {
        let check = fields(&["/summary", "/title", "/items/1", "/ok"]);
        let verdict = check.check(&json!({"title": null, "items": [1], "ok": 1}));
        assert!(!verdict.passed);
        assert_eq!(
            verdict.message,
            "3 of 4 required fields missing or null: /summary (missing), /title (null), /items/1 (missing)"
        );
    }

    #[test]
    fn refusals_name_the_pointer_at_fault() {
        match RequiredFields::prepare(&["/ok".to_owned(), "/fine".to_owned(), "oops".to_owned()]) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "params.fields[2]"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(RequiredFields::prepare(&[]), Err(Error::Invalid { field, .. }) if field == "params.fields"));
    }
}
