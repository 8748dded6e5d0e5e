//! The streams check: each stream of the definitions exists, and its live configuration
//! is the one its definition fixes, field by field.

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use osp_eventlog::Definitions;
use serde_json::{Map, Value};

use super::{bounded, count, Check};

/// What to do about a missing stream.
pub(super) const CREATE: &str =
    "run `osp dev`, or start any OSP service (osp-registry, osp-scheduler, …) against this server: each creates the streams at start-up";

fn name(config: &stream::Config) -> String {
    format!("stream {}", config.name)
}

/// A line per stream, skipped `because`.
pub(super) fn skipped(definitions: &Definitions, because: &str) -> Vec<Check> {
    definitions.streams.iter().map(|(_, config)| Check::skip(name(config), because)).collect()
}

/// A line per stream of `definitions`, and the streams found (for the later checks).
pub(super) async fn check(js: &jetstream::Context, definitions: &Definitions) -> (Vec<Check>, Vec<stream::Stream>) {
    let mut checks = Vec::new();
    let mut present = Vec::new();
    for (file, wanted) in &definitions.streams {
        let mut found = None;
        checks.push(bounded(&name(wanted), compare(js, file, wanted, &mut found)).await);
        present.extend(found);
    }
    (checks, present)
}

/// Finds the stream `wanted` (defined in `file`) and compares it with its definition;
/// `found` gets it when it exists.
async fn compare(
    js: &jetstream::Context,
    file: &str,
    wanted: &stream::Config,
    found: &mut Option<stream::Stream>,
) -> Check {
    let stream = match js.get_stream(&wanted.name).await {
        Ok(stream) => stream,
        Err(error) => {
            let missing = matches!(error.kind(), GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            return match missing {
                true => Check::fail(name(wanted), "missing", CREATE),
                false => Check::fail(name(wanted), format!("cannot read it: {error}"), CREATE),
            };
        }
    };
    let info = stream.cached_info();
    let contents = format!("{}, {}", count(info.state.messages, "message"), count(info.state.bytes, "byte"));
    let differences = differences(wanted, &info.config);
    let check = match differences.as_slice() {
        [] => Check::ok(name(wanted), format!("{contents}; as {file}")),
        different => {
            let listed: Vec<String> = different.iter().map(|d| d.to_string()).collect();
            let detail = format!("{contents}; differs from {file}: {}", listed.join("; "));
            let fix = format!(
                "restart any OSP service (each applies the definitions at start-up), or `nats stream edit {} --config {file}`",
                wanted.name
            );
            // The description only describes: every other field decides what the stream
            // keeps and refuses.
            match different.iter().all(|d| d.field == "description") {
                true => Check::warn(name(wanted), detail, fix),
                false => Check::fail(name(wanted), detail, fix),
            }
        }
    };
    *found = Some(stream);
    check
}

/// A field whose live value is not the defined one.
#[derive(Debug, PartialEq)]
struct Difference {
    /// Its name in the NATS JSON API (as in the definition files).
    field: String,
    live: Value,
    wanted: Value,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &Value| match value {
            Value::Null => "unset".to_owned(),
            value => value.to_string(),
        };
        write!(f, "{} is {}, defined {}", self.field, shown(&self.live), shown(&self.wanted))
    }
}

/// The fields the definition fixes (those it sets) and every switch the live stream has
/// on, where the two differ. A field the definition leaves unset is the server's to fill
/// (it writes its own defaults and metadata), so it is not compared, but a switch is:
/// unset means off, and a stream that allows what its definition does not (a rollup, a
/// seal) must be seen.
fn differences(wanted: &stream::Config, live: &stream::Config) -> Vec<Difference> {
    let (wanted, live) = (as_fields(&as_the_server_stores(wanted)), as_fields(live));
    let switched_on = live.iter().filter(|(_, value)| value.as_bool() == Some(true)).map(|(field, _)| field);
    let mut fields: Vec<&String> = wanted.keys().chain(switched_on).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter_map(|field| {
            let (live, wanted) = (live.get(field), wanted.get(field));
            let (live, wanted) = (setting(live, wanted), setting(wanted, live));
            (limit(field, &live) != limit(field, &wanted)).then(|| Difference { field: field.clone(), live, wanted })
        })
        .collect()
}

/// `wanted` with what the server turns on by itself: it carries out message schedules
/// with rollups, so a stream that allows schedules gets `allow_rollup_hdrs` (seen on
/// 2.15.1).
fn as_the_server_stores(wanted: &stream::Config) -> stream::Config {
    let mut stored = wanted.clone();
    stored.allow_rollup |= stored.allow_message_schedules;
    stored
}

fn as_fields(config: &stream::Config) -> Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    }
}

/// A field's value on one side, `other` its value on the other: a switch is serialised
/// only when on, so one unset where the other side has a switch is off.
fn setting(value: Option<&Value>, other: Option<&Value>) -> Value {
    match (value, other) {
        (Some(value), _) => value.clone(),
        (None, Some(Value::Bool(_))) => Value::Bool(false),
        (None, _) => Value::Null,
    }
}

/// `value` as compared: the server stores "no limit" as -1 whichever of 0 or -1 was asked.
fn limit(field: &str, value: &Value) -> Value {
    match field.starts_with("max_") && value.as_i64().is_some_and(|limit| limit <= 0) {
        true => Value::from(-1),
        false => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> stream::Config {
        Definitions::builtin().streams[0].1.clone()
    }

    #[test]
    fn a_stream_as_the_server_stores_it_has_no_differences() {
        let wanted = events();
        let mut live = wanted.clone();
        // What the server fills in on its own.
        live.max_consumers = -1;
        live.max_messages_per_subject = -1;
        live.metadata.insert("_nats.req.level".into(), "1".into());
        live.compression = Some(stream::Compression::None);
        assert_eq!(differences(&wanted, &live), []);
        let inbox = &Definitions::builtin().streams[1].1;
        let mut live = inbox.clone();
        (live.max_messages, live.max_bytes, live.max_age) = (-1, -1, std::time::Duration::ZERO);
        live.duplicate_window = std::time::Duration::from_secs(120);
        assert_eq!(differences(inbox, &live), []);
        let timers = &Definitions::builtin().streams[3].1;
        let mut live = timers.clone();
        live.allow_rollup = true;
        assert_eq!(differences(timers, &live), []);
    }

    #[test]
    fn each_field_that_differs_is_named_with_both_values() {
        let wanted = events();
        let mut live = wanted.clone();
        live.deny_purge = false;
        live.allow_rollup = true;
        live.sealed = true;
        live.discard = stream::DiscardPolicy::Old;
        live.max_age = std::time::Duration::from_secs(121);
        let found: Vec<String> = differences(&wanted, &live).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "allow_rollup_hdrs is true, defined false",
                "deny_purge is false, defined true",
                "discard is \"old\", defined \"new\"",
                "max_age is 121000000000, defined 0",
                "sealed is true, defined false",
            ]
        );
    }
}
