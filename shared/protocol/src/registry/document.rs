//! Free-form documents (resources, metadata, find criteria) as MessagePack values.
//!
//! A resource is whatever its owner says it is (an agent card, a tool's schema), so it
//! is kept as a value, not a Rust type. MessagePack's value model is the faithful one:
//! it holds everything JSON holds, and bytes too.

use rmpv::Value;

/// A free-form document.
pub type Document = Value;

/// The value under `key` in a map document, if `document` is a map and has it.
pub fn get<'a>(document: &'a Document, key: &str) -> Option<&'a Document> {
    match document {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

/// What kind of value `document` is, in the words of an error message.
pub fn kind_name(document: &Document) -> &'static str {
    match document {
        Value::Nil => "null",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::F32(_) | Value::F64(_) => "a float",
        Value::String(_) => "a string",
        Value::Binary(_) => "bytes",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

/// The size of `document` encoded as MessagePack: what size limits are measured in,
/// whatever encoding it arrived in.
pub fn encoded_len(document: &Document) -> usize {
    let mut counter = ByteCounter(0);
    rmpv::encode::write_value(&mut counter, document).expect("counting never fails");
    counter.0
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A document from JSON text (for the CLI and tests).
pub fn from_json(json: &serde_json::Value) -> Document {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::from(u),
            (None, Some(i), _) => Value::from(i),
            (_, _, Some(f)) => Value::F64(f),
            _ => Value::Nil,
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (Value::from(k.as_str()), from_json(v))).collect())
        }
    }
}

/// Reads an optional document whose absence is an absent field
/// (`skip_serializing_if = "Option::is_none"`): a field that is there is `Some`, even when
/// it holds nil. Plain `Option` reads nil as `None`, so a nil output or answer (a task
/// may complete with none) would come back from a snapshot, or a reply, as no output or
/// no answer at all.
pub fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Document>, D::Error> {
    <Document as serde::Deserialize>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_kinds_and_sizes() {
        let doc = from_json(&serde_json::json!({"capabilities": ["a", "b"], "n": 1.5, "u": 7}));
        assert_eq!(get(&doc, "u"), Some(&Value::from(7)));
        assert_eq!(get(&doc, "missing"), None);
        assert_eq!(get(&Value::from(3), "u"), None);
        assert_eq!(kind_name(get(&doc, "capabilities").unwrap()), "an array");
        assert_eq!(encoded_len(&doc), rmp_serde::to_vec(&doc).unwrap().len());
        assert_eq!(
            crate::json::from_msgpack_value(&doc),
            serde_json::json!({"capabilities": ["a", "b"], "n": 1.5, "u": 7})
        );
    }
}
