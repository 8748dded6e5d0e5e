//! How results talk about the output: short sentences quoting at most a few dozen
//! characters of it, so a 256 KiB output never becomes a 256 KiB message.

use serde_json::Value;

/// How many characters of a value a message quotes.
pub const SHOWN_CHARS: usize = 80;

/// `text` cut to [`SHOWN_CHARS`] characters, with `…` when something was cut.
pub fn excerpt(text: &str) -> String {
    excerpt_to(text, SHOWN_CHARS)
}

/// `text` cut to `shown` characters, with `…` when something was cut.
pub fn excerpt_to(text: &str, shown: usize) -> String {
    match text.char_indices().nth(shown) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A value as a message names it: `the string "abc"`, `the number 3`, `an array of 2
/// items`, `null` ... Containers are described by size, never printed whole.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", excerpt(s)),
        Value::Array(items) => format!("an array of {}", count(items.len(), "item")),
        Value::Object(map) => format!("an object with {}", count(map.len(), "key")),
    }
}

/// `1 item`, `3 items`.
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn excerpts_cut_at_a_character_not_a_byte() {
        let long = "é".repeat(200);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), SHOWN_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("short"), "short");
    }

    #[test]
    fn descriptions_never_print_a_container_whole() {
        assert_eq!(describe(&json!([1, 2, 3])), "an array of 3 items");
        assert_eq!(describe(&json!({"a": 1})), "an object with 1 key");
        assert_eq!(describe(&json!("x")), "the string \"x\"");
        assert_eq!(describe(&json!(null)), "null");
    }
}
