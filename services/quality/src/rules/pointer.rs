//! JSON pointers (RFC 6901): where in the output a rule looks.
//!
//! A pointer is parsed once, when its rule is prepared, so a malformed one is refused then
//! with the field that named it; selecting is then a walk of at most as many steps as the
//! pointer has tokens.

use osp_protocol::Error;
use serde_json::Value;

use super::message::excerpt;

/// A parsed JSON pointer: `""` is the whole output, `/a/0/b~1c` is `a`, item 0, `b/c`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    /// As the rule wrote it, for messages.
    text: String,
    /// The reference tokens, unescaped (`~1` → `/`, `~0` → `~`).
    tokens: Vec<String>,
}

impl Pointer {
    /// The whole output.
    pub fn whole() -> Pointer {
        Pointer { text: String::new(), tokens: Vec::new() }
    }

    /// Parses `text`; `field` names the rule's parameter in the error (`params.field`).
    pub fn parse(field: &str, text: &str) -> Result<Pointer, Error> {
        if !text.is_empty() && !text.starts_with('/') {
            return Err(invalid(field, text, "must be \"\" (the whole output) or start with \"/\""));
        }
        let tokens = text.split('/').skip(1).map(|token| unescape(field, text, token)).collect::<Result<_, _>>()?;
        Ok(Pointer { text: text.to_owned(), tokens })
    }

    /// Parses an optional pointer: absent means the whole output.
    pub fn parse_optional(field: &str, text: Option<&str>) -> Result<Pointer, Error> {
        text.map_or_else(|| Ok(Pointer::whole()), |text| Pointer::parse(field, text))
    }

    /// The value it names in `output`, if there is one.
    pub fn select<'v>(&self, output: &'v Value) -> Option<&'v Value> {
        self.tokens.iter().try_fold(output, |value, token| match value {
            Value::Object(map) => map.get(token),
            Value::Array(items) => array_index(token).and_then(|index| items.get(index)),
            _ => None,
        })
    }

    /// Whether it names the whole output.
    pub fn is_whole(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How messages name it: the pointer itself, or "the output" for the whole of it.
    pub fn describe(&self) -> String {
        if self.is_whole() {
            "the output".to_owned()
        } else {
            excerpt(&self.text)
        }
    }
}

const TILDE: &str = "has a \"~\" not followed by 0 or 1 (write \"~0\" for \"~\", \"~1\" for \"/\")";

/// `~1` → `/`, `~0` → `~`; any other `~` is malformed (RFC 6901, section 3).
fn unescape(field: &str, pointer: &str, token: &str) -> Result<String, Error> {
    let mut unescaped = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        let plain = match c {
            '~' => match chars.next() {
                Some('0') => '~',
                Some('1') => '/',
                _ => return Err(invalid(field, pointer, TILDE)),
            },
            c => c,
        };
        unescaped.push(plain);
    }
    Ok(unescaped)
}

/// An array index as RFC 6901 spells it: `0`, or digits without a leading zero. `-` (the
/// item after the last) and anything else name nothing.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = token.len() > 1 && token.starts_with('0');
    if digits && !leading_zero {
        token.parse().ok()
    } else {
        None
    }
}

fn invalid(field: &str, pointer: &str, why: &str) -> Error {
    Error::Invalid {
        field: field.to_owned(),
        reason: format!("{:?} is not a JSON pointer: it {why}", excerpt(pointer)),
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
