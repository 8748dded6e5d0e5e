//! Numbers JSON can carry: MessagePack can hold NaN and the infinities, JSON cannot, and a
//! decoder into JSON values turns them into `null` without a word (a context value NaN
//! stored as null, a range rule `{min: NaN}` losing its minimum). So an inbound message
//! with one is refused, naming where it is, before anything reads it.

use rmpv::Value;

use crate::Error;

/// Longest field path an error names; a deeper one is cut, with `…` where it was.
pub const MAX_PATH_CHARS: usize = 200;

/// Refuses a MessagePack message holding a float that is NaN or infinite, naming its field
/// (`input.scores[2]`). Scans the bytes without decoding them; only a message it refuses
/// is decoded, to name the field. Bytes that are not MessagePack pass: their decoder says
/// what is wrong with them.
pub fn check_msgpack(bytes: &[u8]) -> Result<(), Error> {
    if !has_non_finite(bytes) {
        return Ok(());
    }
    let field =
        rmpv::decode::read_value(&mut &bytes[..]).ok().and_then(|value| path_to_non_finite(&value, String::new()));
    Err(Error::Invalid {
        field: cap(field.unwrap_or_default()),
        reason: "NaN and infinity are not numbers JSON can carry; send a finite number".into(),
    })
}

/// Whether any float in the MessagePack `bytes` is NaN or infinite: a walk over the
/// markers, skipping strings, binaries and extensions (their bytes are not numbers).
fn has_non_finite(bytes: &[u8]) -> bool {
    let mut at = 0;
    let read = |at: usize, n: usize| -> Option<u64> {
        let slice = bytes.get(at..at + n)?;
        Some(slice.iter().fold(0u64, |value, byte| value << 8 | u64::from(*byte)))
    };
    while let Some(&marker) = bytes.get(at) {
        at += 1;
        let skip = match marker {
            0xca => match read(at, 4) {
                Some(bits) if !f32::from_bits(bits as u32).is_finite() => return true,
                _ => 4,
            },
            0xcb => match read(at, 8) {
                Some(bits) if !f64::from_bits(bits).is_finite() => return true,
                _ => 8,
            },
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xc4 | 0xd9 => read(at, 1).map_or(0, |n| 1 + n as usize),
            0xc5 | 0xda => read(at, 2).map_or(0, |n| 2 + n as usize),
            0xc6 | 0xdb => read(at, 4).map_or(0, |n| 4 + n as usize),
            0xc7 => read(at, 1).map_or(0, |n| 2 + n as usize),
            0xc8 => read(at, 2).map_or(0, |n| 3 + n as usize),
            0xc9 => read(at, 4).map_or(0, |n| 5 + n as usize),
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 | 0xdc | 0xde => 2,
            0xce | 0xd2 | 0xdd | 0xdf => 4,
            0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            // Fixints, nil, booleans, and the headers of small maps and arrays (their items
            // follow as markers of their own); 0xc1 is never used.
            _ => 0,
        };
        at = at.saturating_add(skip);
    }
    false
}

/// Where in `value` the first non-finite float is, as a field path.
fn path_to_non_finite(value: &Value, here: String) -> Option<String> {
    match value {
        Value::F32(f) if !f.is_finite() => Some(here),
        Value::F64(f) if !f.is_finite() => Some(here),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| path_to_non_finite(item, format!("{here}[{i}]")))
        }
        Value::Map(entries) => entries.iter().find_map(|(key, item)| {
            let key = match key {
                Value::String(text) => text.as_str().map(str::to_owned).unwrap_or_else(|| "?".into()),
                other => other.to_string(),
            };
            let path = if here.is_empty() { key } else { format!("{here}.{key}") };
            path_to_non_finite(item, path)
        }),
        _ => None,
    }
}

/// `path`, at most [`MAX_PATH_CHARS`] characters: its start and its end, which say most.
pub fn cap(path: String) -> String {
    if path.chars().count() <= MAX_PATH_CHARS {
        return path;
    }
    let half = MAX_PATH_CHARS / 2;
    let start: String = path.chars().take(half).collect();
    let end: String = path.chars().rev().take(half).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
    }

    #[test]
    fn a_non_finite_float_is_refused_naming_its_field() {
        let cases = [
            (map(vec![("value", Value::F64(f64::NAN))]), "value"),
            (map(vec![("input", map(vec![("x", Value::F64(f64::INFINITY))]))]), "input.x"),
            (map(vec![("vector", Value::Array(vec![Value::F32(0.5), Value::F32(f32::NEG_INFINITY)]))]), "vector[1]"),
            (map(vec![("rule", map(vec![("min", Value::F32(f32::NAN)), ("max", Value::F64(5.0))]))]), "rule.min"),
        ];
        for (value, field) in cases {
            match check_msgpack(&encode(&value)) {
                Err(Error::Invalid { field: named, reason }) => {
                    assert_eq!(named, field);
                    assert!(reason.contains("NaN and infinity"), "{reason}");
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn finite_numbers_and_bytes_that_look_like_floats_pass() {
        // 0xcb followed by NaN's bits, inside a string and a binary: not a float.
        let nan_bits = f64::NAN.to_bits().to_be_bytes();
        let mut lookalike = vec![0xcb];
        lookalike.extend_from_slice(&nan_bits);
        let value = map(vec![
            ("f", Value::F64(1.5)),
            ("g", Value::F32(-0.0)),
            ("big", Value::from(u64::MAX)),
            ("text", Value::from(String::from_utf8_lossy(&lookalike).into_owned())),
            ("bin", Value::Binary(lookalike.clone())),
            ("ext", Value::Ext(3, lookalike)),
            ("list", Value::Array((0..40).map(Value::from).collect())),
        ]);
        assert_eq!(check_msgpack(&encode(&value)), Ok(()));
        assert_eq!(check_msgpack(b"not msgpack \xcb"), Ok(()), "a truncated float is the decoder's to refuse");
    }

    #[test]
    fn long_paths_are_cut_in_the_middle() {
        let path = "a.".repeat(300);
        let cut = cap(path.clone());
        assert_eq!(cut.chars().count(), MAX_PATH_CHARS + 1);
        assert!(cut.starts_with("a.a.") && cut.contains('…'));
        assert_eq!(cap("short".into()), "short");
    }
}
