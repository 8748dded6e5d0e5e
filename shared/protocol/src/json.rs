//! MessagePack values shown as JSON (for `--json` output and exports).
//!
//! JSON has no bytes and only string keys, so the mapping is explicit: bytes become
//! lower-case hex strings, non-string map keys their JSON text, and MessagePack
//! extension values `{"$ext": type, "hex": data}`.

use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

/// Converts a decoded MessagePack value to JSON without losing information silently.
/// What a JSON value is, for error messages: `null`, `a boolean`, `a number`,
/// `a string`, `a list`, `an object`.
pub fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

pub fn from_msgpack_value(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::Number(u.into()),
            (None, Some(s)) => Json::Number(s.into()),
            (None, None) => Json::Null,
        },
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::String(s) => Json::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(b) => Json::String(hex::encode(b)),
        Value::Array(items) => Json::Array(items.iter().map(from_msgpack_value).collect()),
        Value::Map(entries) => {
            Json::Object(entries.iter().map(|(k, v)| (map_key(k), from_msgpack_value(v))).collect::<Map<_, _>>())
        }
        Value::Ext(kind, data) => serde_json::json!({ "$ext": kind, "hex": hex::encode(data) }),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

fn map_key(key: &Value) -> String {
    match key {
        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => from_msgpack_value(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_kind_of_value() {
        let v = Value::Map(vec![
            (Value::from("n"), Value::Nil),
            (Value::from("b"), Value::from(true)),
            (Value::from("i"), Value::from(-3)),
            (Value::from("u"), Value::from(u64::MAX)),
            (Value::from("f"), Value::F64(1.5)),
            (Value::from("nan"), Value::F64(f64::NAN)),
            (Value::from("bin"), Value::Binary(vec![0xab, 0x01])),
            (Value::from(7), Value::Array(vec![Value::from("x")])),
            (Value::from("ext"), Value::Ext(5, vec![1])),
        ]);
        assert_eq!(
            from_msgpack_value(&v),
            serde_json::json!({
                "n": null, "b": true, "i": -3, "u": u64::MAX, "f": 1.5, "nan": null,
                "bin": "ab01", "7": ["x"], "ext": {"$ext": 5, "hex": "01"}
            })
        );
    }
}
