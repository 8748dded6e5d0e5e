//! JSON pointers (RFC 6901): where in the output a rule looks.
//!
//! A pointer is parsed once, when its rule is prepared, so a malformed one is refused then
//! with the field that named it; selecting is then a walk of at most as many steps as the
//! pointer has tokens. Parsing and walking are jsonptr's; the field-named refusals and how
//! messages name a pointer are ours.

use jsonptr::{ParseError, PointerBuf};
use osp_protocol::Error;
use serde_json::Value;

use super::message::excerpt;

/// A parsed JSON pointer: `""` is the whole output, `/a/0/b~1c` is `a`, item 0, `b/c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer(PointerBuf);

impl Pointer {
    /// The whole output.
    pub fn whole() -> Pointer {
        Pointer(PointerBuf::root())
    }

    /// Parses `text`; `field` names the rule's parameter in the error (`params.field`).
    pub fn parse(field: &str, text: &str) -> Result<Pointer, Error> {
        let why = match jsonptr::Pointer::parse(text) {
            Ok(pointer) => return Ok(Pointer(pointer.to_buf())),
            Err(ParseError::NoLeadingSlash) => "must be \"\" (the whole output) or start with \"/\"",
            Err(ParseError::InvalidEncoding { .. }) => {
                "has a \"~\" not followed by 0 or 1 (write \"~0\" for \"~\", \"~1\" for \"/\")"
            }
        };
        Err(Error::Invalid {
            field: field.to_owned(),
            reason: format!("{:?} is not a JSON pointer: it {why}", excerpt(text)),
        })
    }

    /// Parses an optional pointer: absent means the whole output.
    pub fn parse_optional(field: &str, text: Option<&str>) -> Result<Pointer, Error> {
        text.map_or_else(|| Ok(Pointer::whole()), |text| Pointer::parse(field, text))
    }

    /// The value it names in `output`, if there is one. An array item is named by `0` or
    /// digits without a leading zero; `-` (the item after the last) names nothing.
    pub fn select<'v>(&self, output: &'v Value) -> Option<&'v Value> {
        self.0.resolve(output).ok()
    }

    /// Whether it names the whole output.
    pub fn is_whole(&self) -> bool {
        self.0.is_root()
    }

    /// How messages name it: the pointer itself, or "the output" for the whole of it.
    pub fn describe(&self) -> String {
        if self.is_whole() {
            "the output".to_owned()
        } else {
            excerpt(self.0.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn select<'v>(pointer: &str, output: &'v Value) -> Option<&'v Value> {
        Pointer::parse("params.field", pointer).unwrap().select(output)
    }

    #[test]
    fn selects_by_key_index_and_escapes() {
        let output = json!({"a": {"b/c": [10, {"~d": true}]}, "": 1, "07": "key"});
        assert_eq!(select("", &output), Some(&output));
        assert_eq!(select("/a/b~1c/0", &output), Some(&json!(10)));
        assert_eq!(select("/a/b~1c/1/~0d", &output), Some(&json!(true)));
        assert_eq!(select("/", &output), Some(&json!(1)));
        assert_eq!(select("/07", &output), Some(&json!("key")), "an object key may look like a number");
    }

    #[test]
    fn names_nothing_past_the_output() {
        let output = json!({"a": [1, 2], "s": "text"});
        for pointer in ["/b", "/a/2", "/a/-", "/a/01", "/a/x", "/a/+1", "/s/0", "/a/0/x", "/a/18446744073709551616"] {
            assert_eq!(select(pointer, &output), None, "{pointer}");
        }
    }

    #[test]
    fn refuses_malformed_pointers_naming_the_field() {
        for (pointer, why) in [("summary", "start with"), ("/a~2", "~"), ("/a~", "~"), ("#/a", "start with")] {
            match Pointer::parse("params.fields[2]", pointer) {
                Err(Error::Invalid { field, reason }) => {
                    assert_eq!(field, "params.fields[2]");
                    assert!(reason.contains(why), "{pointer}: {reason}");
                }
                other => panic!("{pointer}: {other:?}"),
            }
        }
    }
}
