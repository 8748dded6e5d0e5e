//! Value checks: `range` (a number within bounds) and `allowed-values` (one of a list).

use osp_protocol::Error;
use serde_json::{Number, Value};

use super::bounds::Bounds;
use super::message::{count, describe, excerpt};
use super::pointer::Pointer;
use super::{ValueCheck, Verdict};

/// A prepared `range` rule.
#[derive(Clone, Debug)]
pub struct RangeCheck {
    bounds: Bounds<f64>,
    field: Pointer,
}

impl RangeCheck {
    /// Refuses a bound that is not a finite number (NaN or an infinity can arrive in
    /// MessagePack) and bounds nothing could pass. Negative bounds are fine: the number
    /// checked may be negative.
    pub fn prepare(min: Option<f64>, max: Option<f64>, field: Option<&str>) -> Result<RangeCheck, Error> {
        for (name, bound) in [("params.min", min), ("params.max", max)] {
            if let Some(bound) = bound.filter(|bound| !bound.is_finite()) {
                return Err(Error::Invalid {
                    field: name.to_owned(),
                    reason: format!("is {bound}, not a finite number"),
                });
            }
        }
        Ok(RangeCheck { bounds: Bounds::new(min, max)?, field: Pointer::parse_optional("params.field", field)? })
    }
}

impl ValueCheck for RangeCheck {
    fn field(&self) -> &Pointer {
        &self.field
    }

    fn check_value(&self, value: &Value) -> Verdict {
        let at = self.field.describe();
        let Some(number) = value.as_f64() else {
            return Verdict::fail(format!("{at} is not a number: it is {}", describe(value)));
        };
        match self.bounds.violation(number) {
            None => Verdict::pass(format!("{at} is {value}, {}", self.bounds.describe())),
            Some(violation) => Verdict::fail(format!("{at} is {value}, {violation}")),
        }
    }
}

/// A prepared `allowed-values` rule.
#[derive(Clone, Debug)]
pub struct AllowedValues {
    values: Vec<Value>,
    /// The list as messages quote it, cut short.
    quoted: String,
    field: Pointer,
}

impl AllowedValues {
    /// Refuses an empty list (nothing could pass).
    pub fn prepare(values: &[Value], field: Option<&str>) -> Result<AllowedValues, Error> {
        if values.is_empty() {
            return Err(Error::Invalid {
                field: "params.values".to_owned(),
                reason: "is empty, so no value could pass".to_owned(),
            });
        }
        let quoted = excerpt(&Value::Array(values.to_vec()).to_string());
        Ok(AllowedValues { values: values.to_vec(), quoted, field: Pointer::parse_optional("params.field", field)? })
    }
}

impl ValueCheck for AllowedValues {
    fn field(&self) -> &Pointer {
        &self.field
    }

    fn check_value(&self, value: &Value) -> Verdict {
        let is = format!("{} is {}", self.field.describe(), describe(value));
        match self.values.iter().any(|allowed| same_json(allowed, value)) {
            true => Verdict::pass(format!("{is}, one of the {} allowed", count(self.values.len(), "value"))),
            false => Verdict::fail(format!("{is}, not one of the allowed values {}", self.quoted)),
        }
    }
}

/// Equality of JSON values, where numbers are equal by value (`1` is `1.0`), as JSON means
/// them, not by how they were written.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => same_number(a, b),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, a)| b.get(key).is_some_and(|b| same_json(a, b)))
        }
        (a, b) => a == b,
    }
}

/// Integers compare exactly (no rounding through `f64` above 2^53); otherwise by value.
fn same_number(a: &Number, b: &Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(a), Some(b), _, _) => a == b,
        (_, _, Some(a), Some(b)) => a == b,
        _ => a.as_f64() == b.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn range_passes_within_inclusive_bounds_and_fails_outside() {
        let check = RangeCheck::prepare(Some(0.0), Some(1.0), Some("/score")).unwrap();
        for score in [json!(0), json!(0.5), json!(1)] {
            assert!(check.check_output(&json!({ "score": score })).passed, "{score}");
        }
        let failed = check.check_output(&json!({"score": 1.5}));
        assert_eq!(failed.message, "/score is 1.5, above the maximum 1");
        let negative = RangeCheck::prepare(Some(-10.0), None, None).unwrap();
        assert!(negative.check_value(&json!(-3)).passed);
        assert!(!negative.check_value(&json!(-11)).passed);
    }

    #[test]
    fn range_on_a_non_number_says_what_it_got() {
        let check = RangeCheck::prepare(None, Some(5.0), None).unwrap();
        let failed = check.check_value(&json!("4"));
        assert!(!failed.passed);
        assert_eq!(failed.message, "the output is not a number: it is the string \"4\"");
    }

    #[test]
    fn range_refuses_non_finite_and_crossed_bounds() {
        for (min, max, field) in [
            (Some(f64::NAN), None, "params.min"),
            (None, Some(f64::INFINITY), "params.max"),
            (Some(f64::NEG_INFINITY), Some(1.0), "params.min"),
            (Some(2.0), Some(1.0), "params.min"),
            (None, None, "params"),
        ] {
            match RangeCheck::prepare(min, max, None) {
                Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field, "{min:?} {max:?}"),
                other => panic!("{min:?} {max:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn allowed_values_compare_as_json() {
        let check =
            AllowedValues::prepare(&[json!("draft"), json!("final"), json!(1), json!({"a": [1]})], Some("/status"))
                .unwrap();
        for status in [json!("final"), json!(1.0), json!({"a": [1.0]})] {
            let verdict = check.check_output(&json!({ "status": status }));
            assert!(verdict.passed, "{status}: {}", verdict.message);
        }
        for status in [json!("Final"), json!("1"), json!(2), json!(null), json!({"a": [1], "b": 2})] {
            assert!(!check.check_output(&json!({ "status": status })).passed, "{status}");
        }
        let failed = check.check_output(&json!({"status": "gone"}));
        assert!(failed.message.contains("not one of the allowed values [\"draft\""), "{}", failed.message);
        assert!(
            matches!(AllowedValues::prepare(&[], None), Err(Error::Invalid { field, .. }) if field == "params.values")
        );
    }

    #[test]
    fn large_integers_are_not_rounded() {
        assert!(!same_json(&json!(9_007_199_254_740_993_u64), &json!(9_007_199_254_740_992_u64)));
        assert!(same_json(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(same_json(&json!(-1), &json!(-1.0)));
    }
}
