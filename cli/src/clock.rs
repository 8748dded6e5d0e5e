//! Times and durations as people read them: times in the local zone (`TZ`, else the
//! system's), or in UTC with `--utc`, always the same width; durations in words (`350ms`,
//! `1.2s`, `2m 5s`). What `--json` prints is for tools and stays in RFC 3339 UTC and
//! milliseconds.

use std::sync::OnceLock;

use jiff::fmt::friendly::{FractionalUnit, SpanPrinter};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Unit};
use osp_protocol::Timestamp;
use serde_json::Value;

/// The zone times are shown in: set once, from `--utc`, before anything is printed, so
/// that the printers need not each be handed it.
static ZONE: OnceLock<TimeZone> = OnceLock::new();

/// Date, time to the millisecond and offset: every field has a fixed width, so times line
/// up in columns, and the offset makes a time mean one instant wherever it is read.
const FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f %:z";

/// Shows times in UTC from now on, instead of in the local zone.
pub fn use_utc() {
    // Only `main` sets it, before printing: nothing can have read the local zone yet.
    let _ = ZONE.set(TimeZone::UTC);
}

fn zone() -> &'static TimeZone {
    ZONE.get_or_init(TimeZone::system)
}

/// `at` for people: `2026-12-07 15:04:05.120 +01:00`.
pub fn time(at: Timestamp) -> String {
    time_in(at, zone())
}

fn time_in(at: Timestamp, zone: &TimeZone) -> String {
    // Beyond jiff's calendar (±9999 years) a time saturates, as the protocol's does.
    let instant = jiff::Timestamp::from_millisecond(at.millis()).unwrap_or(match at.millis() < 0 {
        true => jiff::Timestamp::MIN,
        false => jiff::Timestamp::MAX,
    });
    instant.to_zoned_datetime(zone.clone()).strftime(FORMAT).to_string()
}

/// A duration of `ms` milliseconds for people, to a precision that suits its size: `350ms`
/// under a second, `1.2s` under a minute, `2m 5s` and `1h 2m 5s` beyond.
pub fn duration(ms: u64) -> String {
    /// Under a second: whole milliseconds, `0ms` for none.
    static SHORT: SpanPrinter = SpanPrinter::new().zero_unit(Unit::Millisecond);
    /// Longer: seconds with the tenths a rounding left, if any.
    static LONG: SpanPrinter = SpanPrinter::new().fractional(Some(FractionalUnit::Second));
    let span = SignedDuration::from_millis(i64::try_from(ms).unwrap_or(i64::MAX));
    let rounding = match ms {
        0..1_000 => return SHORT.duration_to_string(&span),
        1_000..60_000 => (Unit::Millisecond, 100),
        _ => (Unit::Second, 1),
    };
    LONG.duration_to_string(&span.round(rounding).unwrap_or(span))
}

/// The keys whose values are times (Unix ms on the wire).
const TIME_KEYS: &[&str] = &[
    "at",
    "submitted_at",
    "updated_at",
    "ended_at",
    "dispatched_at",
    "started_at",
    "deadline",
    "expires_at",
    "cancelling_until",
    "retry_at",
    "due_at",
    "occurred_at",
    // An audit entry's, in its wire form (camelCase).
    "createdAt",
];
/// The keys whose values are the users' own documents (a context entry's value, an agent's
/// card): never rewritten.
const DOCUMENT_KEYS: &[&str] =
    &["input", "output", "metadata", "question", "answer", "details", "value", "card", "resource"];

/// `value` (a run, a summary, an event's payload) with its times in RFC 3339 for tools,
/// leaving the users' documents alone.
pub fn with_rfc3339_times(value: &mut Value) {
    rewrite(value, &|key, value| match value.as_i64() {
        Some(ms) if TIME_KEYS.contains(&key) => Some(Timestamp(ms).to_rfc3339().into()),
        _ => None,
    });
}

/// `value` (JSON printed for people: an event's payload, run options, a system context)
/// with its times as [`time`] shows them and its durations (`ms`, `…_ms`, `…Ms`) as
/// [`duration`] does, leaving the users' documents alone.
pub fn for_people(value: &mut Value) {
    rewrite(value, &|key, value| {
        let is_duration = key == "ms" || key.ends_with("_ms") || key.ends_with("Ms");
        match (value.as_i64(), value.as_u64()) {
            (Some(ms), _) if TIME_KEYS.contains(&key) => Some(time(Timestamp(ms)).into()),
            (_, Some(ms)) if is_duration => Some(duration(ms).into()),
            _ => None,
        }
    });
}

/// Replaces each value `new(key, value)` gives a replacement for, everywhere in `value`
/// but under [`DOCUMENT_KEYS`].
fn rewrite(value: &mut Value, new: &impl Fn(&str, &Value) -> Option<Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut().filter(|(key, _)| !DOCUMENT_KEYS.contains(&key.as_str())) {
                match new(key, value) {
                    Some(replacement) => *value = replacement,
                    None => rewrite(value, new),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite(item, new)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-12-07T15:04:05Z and some milliseconds.
    fn at(ms: i64) -> Timestamp {
        Timestamp(1_796_655_845_000 + ms)
    }

    #[test]
    fn times_have_a_fixed_width_and_an_offset() {
        let utc = TimeZone::UTC;
        assert_eq!(time_in(at(120), &utc), "2026-12-07 15:04:05.120 +00:00");
        assert_eq!(time_in(at(500), &utc), "2026-12-07 15:04:05.500 +00:00");
        assert_eq!(time_in(at(0), &utc), "2026-12-07 15:04:05.000 +00:00");
        assert_eq!(time_in(Timestamp(0), &utc), "1970-01-01 00:00:00.000 +00:00");
        let width = time_in(at(0), &utc).len();
        for ms in [1, 20, 498, 999, 86_400_000] {
            assert_eq!(time_in(at(ms), &utc).len(), width, "{}", time_in(at(ms), &utc));
        }
        assert!(time_in(Timestamp(i64::MAX), &utc).starts_with("9999-12-"));
        assert!(time_in(Timestamp(i64::MIN), &utc).starts_with("-9999-01-"));
    }

    #[test]
    fn times_are_shown_in_the_zone_given() {
        let kolkata = TimeZone::posix("IST-5:30").unwrap();
        assert_eq!(time_in(at(120), &kolkata), "2026-12-07 20:34:05.120 +05:30");
        // Berlin, with its summer time: the offset follows the date.
        let berlin = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        assert_eq!(time_in(at(0), &berlin), "2026-12-07 16:04:05.000 +01:00");
        assert_eq!(time_in(Timestamp(1_782_000_000_000), &berlin), "2026-06-21 02:00:00.000 +02:00");
        let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(time_in(at(7), &new_york), "2026-12-07 10:04:05.007 -05:00");
    }

    #[test]
    fn durations_read_as_words() {
        let cases = [
            (0, "0ms"),
            (5, "5ms"),
            (350, "350ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_234, "1.2s"),
            (1_250, "1.3s"),
            (12_000, "12s"),
            (59_949, "59.9s"),
            (59_960, "1m"),
            (125_400, "2m 5s"),
            (3_725_000, "1h 2m 5s"),
            (30 * 24 * 3_600_000, "720h"),
        ];
        for (ms, words) in cases {
            assert_eq!(duration(ms), words, "{ms} ms");
        }
        assert!(!duration(u64::MAX).is_empty());
    }

    #[test]
    fn json_for_tools_gets_rfc3339_and_for_people_times_and_durations() {
        let value = json!({
            "deadline": 1_000,
            "delay_ms": 1_500,
            "timeout": {"ms": 30_000, "onTimeout": "fail"},
            "heartbeatTimeoutMs": 500,
            "steps": [{"started_at": 1_500, "duration_ms": 20}],
            "options": {"retry": {"delayMs": 250}},
            "input": {"at": 5, "step_ms": 7},
            "attempt": 2,
        });
        let mut tools = value.clone();
        with_rfc3339_times(&mut tools);
        assert_eq!(tools["deadline"], "1970-01-01T00:00:01Z");
        assert_eq!(tools["steps"][0], json!({"started_at": "1970-01-01T00:00:01.5Z", "duration_ms": 20}));
        assert_eq!((&tools["delay_ms"], &tools["input"]), (&value["delay_ms"], &value["input"]));

        let mut people = value.clone();
        for_people(&mut people);
        assert_eq!(people["deadline"], time(Timestamp(1_000)));
        assert_eq!(people["steps"][0], json!({"started_at": time(Timestamp(1_500)), "duration_ms": "20ms"}));
        assert_eq!(people["delay_ms"], "1.5s");
        assert_eq!(people["timeout"], json!({"ms": "30s", "onTimeout": "fail"}));
        assert_eq!(people["heartbeatTimeoutMs"], "500ms");
        assert_eq!(people["options"], json!({"retry": {"delayMs": "250ms"}}));
        assert_eq!((&people["input"], &people["attempt"]), (&value["input"], &value["attempt"]));
    }
}
