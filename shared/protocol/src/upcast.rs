//! Upcasters: how an event written with an older payload schema is read as the current one.
//!
//! An event on the log is never rewritten (its bytes are hashed into its aggregate's
//! chain), so when a payload's shape changes, the old events stay as they were written and
//! are converted while they are read. An [`Upcaster`] is one step of that conversion: it
//! takes a payload of one event type written with schema `n` (as a MessagePack value) and
//! returns it in the shape of schema `n + 1`. A reader that knows schema `m` applies the
//! steps `n → n+1 → … → m` and then decodes the result with its current payload type
//! ([`event_payload!`](crate::event_payload) does this for every enum it declares).
//!
//! A schema with no step from it is a compatible change (fields added with defaults): the
//! value goes on unchanged to the next schema. So a type only needs upcasters for the
//! versions that renamed, moved or reinterpreted fields.

use rmpv::Value;

use crate::Error;

/// One step of an event type's schema evolution: schema `from` to schema `from + 1`.
#[derive(Clone, Copy)]
pub struct Upcaster {
    /// The event type it converts (`run.submitted`).
    pub event_type: &'static str,
    /// The schema it reads; it writes `from + 1`.
    pub from: u16,
    /// The conversion. An error says which field of the old payload it could not read.
    pub upcast: fn(Value) -> Result<Value, String>,
}

impl std::fmt::Debug for Upcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upcaster({} {} -> {})", self.event_type, self.from, self.from + 1)
    }
}

/// Whether `upcasters` hold a step for `event_type` from `schema` up to (not including)
/// `current`: only then does a payload need to go through a value to be read.
pub fn needs_upcast(upcasters: &[Upcaster], event_type: &str, schema: u16, current: u16) -> bool {
    schema < current && upcasters.iter().any(|u| u.event_type == event_type && (schema..current).contains(&u.from))
}

/// Brings `payload`, an `event_type` payload written with `schema`, up to `current` by
/// applying every step of `upcasters` on the way, in order.
pub fn upcast(
    upcasters: &[Upcaster],
    event_type: &str,
    schema: u16,
    current: u16,
    mut payload: Value,
) -> Result<Value, Error> {
    for from in schema..current {
        if let Some(step) = upcasters.iter().find(|u| u.event_type == event_type && u.from == from) {
            payload = (step.upcast)(payload).map_err(|reason| Error::Malformed {
                encoding: "msgpack".into(),
                path: "payload".into(),
                reason: format!("{event_type} schema {from} cannot be upcast to {}: {reason}", from + 1),
            })?;
        }
    }
    Ok(payload)
}

/// The value of field `name` of a map payload, for upcasters that move or rename fields.
pub fn field<'a>(payload: &'a Value, name: &str) -> Option<&'a Value> {
    payload.as_map()?.iter().find(|(key, _)| key.as_str() == Some(name)).map(|(_, value)| value)
}

/// `payload` (a map) with field `name` removed and returned.
pub fn take_field(payload: &mut Value, name: &str) -> Option<Value> {
    let Value::Map(entries) = payload else { return None };
    let index = entries.iter().position(|(key, _)| key.as_str() == Some(name))?;
    Some(entries.remove(index).1)
}

/// `payload` (a map) with field `name` set to `value` (replacing one of that name).
pub fn set_field(payload: &mut Value, name: &str, value: Value) -> Result<(), String> {
    let Value::Map(entries) = payload else { return Err("the payload is not a map".into()) };
    entries.retain(|(key, _)| key.as_str() != Some(name));
    entries.push((Value::from(name), value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename_by_to_amount(mut payload: Value) -> Result<Value, String> {
        let by = take_field(&mut payload, "by").ok_or("no field `by`")?;
        set_field(&mut payload, "amount", by)?;
        Ok(payload)
    }

    fn amount_to_cents(mut payload: Value) -> Result<Value, String> {
        let amount = field(&payload, "amount").and_then(Value::as_i64).ok_or("`amount` is not an integer")?;
        set_field(&mut payload, "amount", Value::from(amount * 100))?;
        Ok(payload)
    }

    const STEPS: &[Upcaster] = &[
        Upcaster { event_type: "counter.added", from: 1, upcast: rename_by_to_amount },
        // Schema 2 -> 3 added a field with a default: no step.
        Upcaster { event_type: "counter.added", from: 3, upcast: amount_to_cents },
    ];

    fn map(entries: &[(&str, i64)]) -> Value {
        Value::Map(entries.iter().map(|(k, v)| (Value::from(*k), Value::from(*v))).collect())
    }

    #[test]
    fn every_step_from_the_written_schema_is_applied_in_order() {
        let v1 = map(&[("by", 5)]);
        assert_eq!(upcast(STEPS, "counter.added", 1, 4, v1).unwrap(), map(&[("amount", 500)]));
        let v3 = map(&[("amount", 7)]);
        assert_eq!(upcast(STEPS, "counter.added", 3, 4, v3).unwrap(), map(&[("amount", 700)]));
        let v2 = map(&[("amount", 7)]);
        assert_eq!(upcast(STEPS, "counter.added", 2, 3, v2.clone()).unwrap(), v2, "no step: unchanged");
    }

    #[test]
    fn only_payloads_with_a_step_ahead_go_through_a_value() {
        assert!(needs_upcast(STEPS, "counter.added", 1, 4));
        assert!(needs_upcast(STEPS, "counter.added", 2, 4));
        assert!(!needs_upcast(STEPS, "counter.added", 2, 3));
        assert!(!needs_upcast(STEPS, "counter.added", 4, 4));
        assert!(!needs_upcast(STEPS, "counter.reset", 1, 4));
    }

    #[test]
    fn a_payload_a_step_cannot_read_is_malformed_and_says_why() {
        let error = upcast(STEPS, "counter.added", 1, 2, map(&[("count", 1)])).unwrap_err().to_string();
        assert!(error.contains("counter.added schema 1 cannot be upcast to 2: no field `by`"), "{error}");
    }
}
