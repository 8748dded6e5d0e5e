//! `find` criteria: partial matching of a resource, and the index keys a match needs.
//!
//! The rules (also in `osp_protocol::registry::queries`): every key of the criteria must
//! be in the resource and match there; a scalar matches an equal scalar (numbers by
//! value) or an array holding a match; an array matches an array holding a match for
//! every one of its items ("contains all"); a map matches a map recursively. A key with
//! dots is a path into nested maps, unless the resource has that key as it is.

use osp_protocol::registry::document::{kind_name, Document};
use osp_protocol::Error;

/// A scalar as the index keys it: numbers that are whole are one key whether they were
/// written as integers or floats, so `1` finds `1.0`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scalar {
    /// null.
    Nil,
    /// true or false.
    Bool(bool),
    /// A whole number.
    Int(i128),
    /// A string.
    Str(String),
}

impl Scalar {
    /// The key of `value`, if it is an indexable scalar (non-whole floats and bytes are not).
    pub fn of(value: &Document) -> Option<Scalar> {
        match value {
            Document::Nil => Some(Scalar::Nil),
            Document::Boolean(b) => Some(Scalar::Bool(*b)),
            Document::Integer(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)).map(Scalar::Int),
            Document::F32(f) => whole(f64::from(*f)),
            Document::F64(f) => whole(*f),
            Document::String(s) => s.as_str().map(|s| Scalar::Str(s.to_owned())),
            _ => None,
        }
    }
}

/// A float that is a whole number in `i128`'s range, as that number (exactly: such a
/// float converts without rounding).
fn whole(f: f64) -> Option<Scalar> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38).then_some(Scalar::Int(f as i128))
}

/// Checks that `criteria` is something `find` can use: a map with string keys.
pub fn check(criteria: &Document) -> Result<(), Error> {
    let Document::Map(entries) = criteria else {
        return Err(Error::Invalid {
            field: "criteria".into(),
            reason: format!("must be a map of resource fields to match, found {}", kind_name(criteria)),
        });
    };
    if let Some((key, _)) = entries.iter().find(|(key, _)| key.as_str().is_none()) {
        return Err(Error::Invalid {
            field: "criteria".into(),
            reason: format!("keys must be strings, found {}", kind_name(key)),
        });
    }
    Ok(())
}

/// Whether `resource` matches `criteria`.
pub fn matches(resource: &Document, criteria: &Document) -> bool {
    match criteria {
        Document::Map(wanted) => wanted.iter().all(|(key, want)| {
            key.as_str().and_then(|key| lookup(resource, key)).is_some_and(|have| matches(have, want))
        }),
        Document::Array(wanted) => match resource {
            Document::Array(have) => wanted.iter().all(|want| have.iter().any(|item| matches(item, want))),
            _ => false,
        },
        scalar => match resource {
            Document::Array(have) => have.iter().any(|item| matches(item, scalar)),
            have => equal(have, scalar),
        },
    }
}

/// The value at `key` of a map: the key as it is, else the key read as a dotted path.
fn lookup<'a>(document: &'a Document, key: &str) -> Option<&'a Document> {
    if let Some(value) = osp_protocol::registry::document::get(document, key) {
        return Some(value);
    }
    let (first, rest) = key.split_once('.')?;
    lookup(osp_protocol::registry::document::get(document, first)?, rest)
}

/// Numbers are equal by value, exactly: whole numbers compare as integers (so `1`
/// equals `1.0`, and 2^53 + 1 does not equal 2^53), other floats as floats. This is the
/// same equality the index keys by ([`Scalar::of`]).
fn equal(have: &Document, want: &Document) -> bool {
    if !(is_number(have) && is_number(want)) {
        return have == want;
    }
    match (Scalar::of(have), Scalar::of(want)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => have.as_f64() == want.as_f64(),
        _ => false,
    }
}

fn is_number(value: &Document) -> bool {
    matches!(value, Document::Integer(_) | Document::F32(_) | Document::F64(_))
}

/// The `(path, scalar)` keys every matching resource must have in the index: scalars of
/// the criteria at their paths (array items under the array's path). Necessary, not
/// sufficient: candidates found through them are still checked with [`matches`].
pub fn requirements(criteria: &Document) -> Vec<(String, Scalar)> {
    let mut out = Vec::new();
    collect(criteria, String::new(), &mut out);
    out
}

fn collect(value: &Document, path: String, out: &mut Vec<(String, Scalar)>) {
    match value {
        Document::Map(entries) => {
            for (key, item) in entries {
                if let Some(key) = key.as_str() {
                    collect(item, join(&path, key), out);
                }
            }
        }
        Document::Array(items) => items.iter().for_each(|item| collect(item, path.clone(), out)),
        scalar => {
            if let Some(scalar) = Scalar::of(scalar) {
                out.push((path, scalar));
            }
        }
    }
}

/// Every `(path, scalar)` of a resource, the same way [`requirements`] reads criteria.
pub fn index_keys(resource: &Document) -> Vec<(String, Scalar)> {
    requirements(resource)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::registry::document::from_json;
    use proptest::prelude::*;
    use serde_json::json;

    fn m(resource: serde_json::Value, criteria: serde_json::Value) -> bool {
        matches(&from_json(&resource), &from_json(&criteria))
    }

    #[test]
    fn the_matching_rules() {
        let card = json!({"capabilities": ["summarize", "translate"], "max_concurrency": 4,
                          "endpoint": {"region": "eu", "zones": ["a", "b"]}, "gpu": true, "a.b": 1});
        for (criteria, expected) in [
            (json!({}), true),
            (json!({"capabilities": "summarize"}), true),
            (json!({"capabilities": ["summarize"]}), true),
            (json!({"capabilities": ["translate", "summarize"]}), true),
            (json!({"capabilities": ["summarize", "draw"]}), false),
            (json!({"capabilities": "draw"}), false),
            (json!({"max_concurrency": 4}), true),
            (json!({"max_concurrency": 4.0}), true),
            (json!({"max_concurrency": "4"}), false),
            (json!({"endpoint": {"region": "eu"}}), true),
            (json!({"endpoint": {"region": "us"}}), false),
            (json!({"endpoint.region": "eu"}), true),
            (json!({"endpoint.zones": ["b"]}), true),
            (json!({"endpoint": {"zones": "c"}}), false),
            (json!({"gpu": true}), true),
            (json!({"missing": null}), false),
            (json!({"a.b": 1}), true),
            (json!({"capabilities": {"x": 1}}), false),
            (json!({"endpoint": ["eu"]}), false),
        ] {
            assert_eq!(m(card.clone(), criteria.clone()), expected, "{criteria}");
        }
    }

    #[test]
    fn criteria_must_be_a_map_with_string_keys() {
        assert!(check(&from_json(&json!({"a": 1}))).is_ok());
        let err = check(&from_json(&json!(["a"]))).unwrap_err().to_string();
        assert_eq!(err, "invalid criteria: must be a map of resource fields to match, found an array");
        let int_key = Document::Map(vec![(Document::from(1), Document::from(2))]);
        assert!(check(&int_key).unwrap_err().to_string().contains("keys must be strings"));
    }

    #[test]
    fn numbers_match_exactly_the_way_the_index_keys_them() {
        let big = 10_000_000_000_000_000_000u64;
        assert!(matches(&from_json(&json!({"n": 1e19})), &from_json(&json!({"n": big}))));
        assert!(requirements(&from_json(&json!({"n": big}))) == index_keys(&from_json(&json!({"n": 1e19}))));
        let (two_53, next) = (9_007_199_254_740_992u64, 9_007_199_254_740_993u64);
        assert!(!matches(&from_json(&json!({"n": two_53})), &from_json(&json!({"n": next}))));
        assert!(matches(&from_json(&json!({"n": 2.5})), &from_json(&json!({"n": 2.5}))));
        assert!(!matches(&from_json(&json!({"n": 2.5})), &from_json(&json!({"n": 2}))));
    }

    #[test]
    fn whole_numbers_share_a_key() {
        assert_eq!(Scalar::of(&Document::F64(4.0)), Scalar::of(&Document::from(4)));
        assert_eq!(Scalar::of(&Document::F64(4.5)), None);
        assert_eq!(Scalar::of(&Document::from(u64::MAX)), Some(Scalar::Int(u64::MAX as i128)));
    }

    fn document() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            (0i64..4).prop_map(|n| json!(n)),
            prop_oneof![Just(1.0f64), Just(2.5)].prop_map(|f| json!(f)),
            "[ab]{0,2}".prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[xyz]", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The index never hides a match: whatever matches has every required key.
        #[test]
        fn requirements_are_necessary(resource in document(), criteria in document()) {
            let (resource, criteria) = (from_json(&resource), from_json(&criteria));
            if matches(&resource, &criteria) && matches!(criteria, Document::Map(_)) {
                let keys = index_keys(&resource);
                for required in requirements(&criteria) {
                    prop_assert!(keys.contains(&required), "{required:?} missing from {keys:?}");
                }
            }
        }

        /// A resource always matches itself (as criteria), and any part of a map of it.
        #[test]
        fn a_resource_matches_itself(resource in document()) {
            let resource = from_json(&resource);
            prop_assert!(matches(&resource, &resource));
        }
    }
}
