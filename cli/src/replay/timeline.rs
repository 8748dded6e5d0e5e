//! A run tree's timeline: every event, in log order, with its time relative to the
//! first, the attempt it belongs to, how long what it ends took, and what caused it.
//! Pure: built from events already read.

use std::collections::HashMap;

use osp_eventlog::Recorded;
use osp_protocol::context::MASK;
use osp_protocol::{AnyPayload, Timestamp};
use serde_json::{json, Value};

use super::causes::{Cause, Causes};
use crate::clock;
use crate::entries::truncate;

/// Longest detail shown on a text line, in characters.
const DETAIL_WIDTH: usize = 90;

/// One event of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Its stream sequence.
    pub seq: u64,
    /// When it happened (the writer's clock).
    pub occurred_at: Timestamp,
    /// Milliseconds since the first event of the timeline.
    pub offset_ms: i64,
    /// Its aggregate, `<kind>:<id>`.
    pub aggregate: String,
    /// Its kind.
    pub kind: String,
    /// Its aggregate's id.
    pub id: String,
    /// Its type.
    pub event_type: String,
    /// The attempt it belongs to, when it names one.
    pub attempt: Option<u64>,
    /// Who did it.
    pub actor: String,
    /// What caused it.
    pub cause: Cause,
    /// How long what it ends took (an attempt, a step, a run, an approval, a check).
    pub duration_ms: Option<u64>,
    /// Its payload as JSON (sensitive context values masked).
    pub payload: Value,
    /// Hash of its stored bytes.
    pub hash: String,
}

/// A run tree's timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// The root run.
    pub root: String,
    /// The events, in log order.
    pub lines: Vec<Line>,
}

/// Builds the timeline of the tree rooted at `root` from its events (in log order).
/// Events of agents and rules (aggregates the tree shares with others) are kept only
/// while the tree is going on: from its first event to its last.
pub fn build(root: &str, events: &[Recorded<AnyPayload>]) -> Timeline {
    let own = |event: &&Recorded<AnyPayload>| {
        matches!(event.envelope.aggregate.kind.as_str(), "run" | "scope" | "embeddings" | "audit")
    };
    let first = events.iter().filter(own).map(|e| e.seq).min().unwrap_or(0);
    let last = events.iter().filter(own).map(|e| e.seq).max().unwrap_or(0);
    let start = events.iter().filter(own).map(|e| e.envelope.occurred_at).min().unwrap_or_default();
    let mut causes = Causes::default();
    let mut began: HashMap<String, Timestamp> = HashMap::new();
    let mut lines = Vec::new();
    for event in events.iter().filter(|event| (first..=last).contains(&event.seq)) {
        let envelope = &event.envelope;
        let (kind, id) = (envelope.aggregate.kind.as_str(), envelope.aggregate.id.as_str());
        let event_type = envelope.payload.event_type.as_str();
        let mut payload = envelope.payload.to_json();
        if event_type == "scope.entry_set" && payload["sensitive"] == Value::Bool(true) {
            payload["value"] = Value::String(MASK.into());
        }
        let cause = causes.resolve(envelope.causation_id.as_deref());
        causes.note(event.seq, id, event_type, &payload);
        let attempt = payload["attempt"].as_u64().filter(|attempt| *attempt > 0);
        let duration_ms = duration(&mut began, kind, id, event_type, attempt, &payload, envelope.occurred_at);
        lines.push(Line {
            seq: event.seq,
            occurred_at: envelope.occurred_at,
            offset_ms: envelope.occurred_at.millis() - start.millis(),
            aggregate: envelope.aggregate.to_string(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            attempt,
            actor: envelope.actor.clone(),
            cause,
            duration_ms,
            payload,
            hash: event.hash.to_hex(),
        });
    }
    Timeline { root: root.to_owned(), lines }
}

/// How long what this event ends took, from the event that began it (remembered in
/// `began` by key: `<aggregate>/<what>`).
fn duration(
    began: &mut HashMap<String, Timestamp>,
    kind: &str,
    id: &str,
    event_type: &str,
    attempt: Option<u64>,
    payload: &Value,
    at: Timestamp,
) -> Option<u64> {
    let key = |what: &str| format!("{kind}:{id}/{what}");
    let begins = match event_type {
        "run.submitted" => Some("run".to_owned()),
        "run.started" => Some(format!("attempt {}", attempt.unwrap_or(0))),
        "run.approval_requested" => Some("approval".to_owned()),
        "run.checking" => Some("check".to_owned()),
        "audit.opened" => Some("audit".to_owned()),
        _ => None,
    };
    if let Some(what) = begins {
        began.insert(key(&what), at);
        return None;
    }
    let since = |what: &str| began.get(&key(what)).map(|start| at.millis_since(*start));
    let attempt = format!("attempt {}", attempt.unwrap_or(0));
    match event_type {
        "run.step_ended" => payload["duration_ms"].as_u64(),
        "run.approved" | "run.approval_expired" => since("approval"),
        "run.approval_decided" if payload["approved"] == Value::Bool(false) => since("approval"),
        "run.checked" => since("check"),
        "audit.recorded" => since("audit"),
        "run.attempt_failed" => since(&attempt),
        "run.completed" if attempt != "attempt 0" => since(&attempt),
        "run.completed" | "run.failed" | "run.cancelled" => since("run"),
        _ => None,
    }
}

impl Timeline {
    /// The runs of the tree, in the order their first events came.
    pub fn runs(&self) -> Vec<&str> {
        let mut runs: Vec<&str> = Vec::new();
        for line in self.lines.iter().filter(|line| line.kind == "run") {
            if !runs.contains(&line.id.as_str()) {
                runs.push(&line.id);
            }
        }
        runs
    }

    /// The time the lines' offsets count from: the tree's first event's.
    fn start(&self) -> Timestamp {
        self.lines.first().map(|line| Timestamp(line.occurred_at.millis() - line.offset_ms)).unwrap_or_default()
    }

    /// From the first event to the last, in milliseconds.
    pub fn span_ms(&self) -> i64 {
        self.lines.iter().map(|line| line.offset_ms).max().unwrap_or(0)
    }

    /// The timeline as one JSON object (`osp replay run --json`).
    pub fn json(&self) -> Value {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|line| {
                let (caused_by_seq, caused_by_command) = match &line.cause {
                    Cause::Event(seq) => (Some(*seq), None),
                    Cause::Command(id) => (None, Some(id.as_str())),
                    Cause::Unknown => (None, None),
                };
                json!({
                    "seq": line.seq,
                    "occurred_at": line.occurred_at.to_rfc3339(),
                    "offset_ms": line.offset_ms,
                    "aggregate": line.aggregate,
                    "type": line.event_type,
                    "attempt": line.attempt,
                    "actor": line.actor,
                    "caused_by_seq": caused_by_seq,
                    "caused_by_command": caused_by_command,
                    "duration_ms": line.duration_ms,
                    "hash": line.hash,
                    "payload": line.payload,
                })
            })
            .collect();
        json!({
            "root": self.root,
            "runs": self.runs(),
            "span_ms": self.span_ms(),
            "events": lines,
        })
    }

    /// The timeline as text: a heading, then one line per event.
    pub fn text(&self) -> Vec<String> {
        let heading = format!(
            "run {}: {} events, {} runs, {}",
            self.root,
            self.lines.len(),
            self.runs().len(),
            match (self.lines.first(), self.lines.last()) {
                (Some(first), Some(last)) => format!(
                    "seq {}..{}, from {} ({} to the last event)",
                    first.seq,
                    last.seq,
                    clock::time(self.start()),
                    clock::duration(self.span_ms().max(0) as u64)
                ),
                _ => "no events".to_owned(),
            },
        );
        let rows = self.lines.iter().map(|line| {
            vec![
                format!("+{}", seconds(line.offset_ms)),
                format!("#{}", line.seq),
                short_aggregate(&self.root, line),
                line.event_type.clone(),
                line.attempt.map(|a| a.to_string()).unwrap_or_default(),
                line.duration_ms.map(clock::duration).unwrap_or_default(),
                match &line.cause {
                    Cause::Event(seq) => format!("<- #{seq}"),
                    Cause::Command(_) => format!("<- {}", line.actor),
                    Cause::Unknown => String::new(),
                },
                truncate(&detail(line), DETAIL_WIDTH),
            ]
        });
        let table = crate::output::table(&["TIME", "SEQ", "WHERE", "EVENT", "TRY", "TOOK", "CAUSE", "DETAIL"], rows);
        std::iter::once(heading).chain(table.lines().map(str::to_owned)).collect()
    }
}

/// `1.234s`: the time since the first event, to the millisecond as events are apart.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}s", ms / 1000, (ms % 1000).abs())
}

/// The aggregate as a line shows it: runs and scopes of the tree by their part after the
/// root's id (`run :classify`), others in full.
fn short_aggregate(root: &str, line: &Line) -> String {
    let id = line.id.strip_prefix("run:").unwrap_or(&line.id);
    match id.strip_prefix(root) {
        Some(rest) if matches!(line.kind.as_str(), "run" | "scope" | "embeddings") => {
            format!("{} {}", line.kind, if rest.is_empty() { "(root)" } else { rest })
        }
        _ => line.aggregate.clone(),
    }
}

/// What a line says of its event, briefly, with times and durations for people.
fn detail(line: &Line) -> String {
    let mut p = line.payload.clone();
    clock::for_people(&mut p);
    let p = &p;
    let text = |value: &Value| value.as_str().map_or_else(|| compact(value), str::to_owned);
    match line.event_type.as_str() {
        "run.submitted" => match p["workflow"].as_object() {
            Some(workflow) => format!("workflow {}", workflow.keys().next().map_or("", String::as_str)),
            None => format!("task {}", text(&p["capability"])),
        },
        "run.steps_started" => {
            let keys: Vec<String> = p["steps"].as_array().into_iter().flatten().map(|s| text(&s["key"])).collect();
            format!("steps {}", keys.join(", "))
        }
        "run.step_ended" => format!("{} {}", text(&p["key"]), text(&p["status"])),
        "run.started" | "run.deferred" => format!("agent {}", text(&p["agent"])),
        "run.completed" => format!("output {}", compact(&p["output"])),
        "run.attempt_failed" | "run.failed" => {
            format!("{}: {}", text(&p["error"]["kind"]), text(&p["error"]["message"]))
        }
        "run.retry_scheduled" => format!("attempt {} due {}", p["attempt"], text(&p["due_at"])),
        "run.approval_decided" => format!(
            "{} {}{}",
            text(&p["approver"]),
            if p["approved"] == Value::Bool(true) { "approved" } else { "rejected" },
            p["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        "run.cancelled" | "run.cancel_requested" => format!("reason {}", text(&p["reason"])),
        "scope.entry_set" => format!("{} = {}", text(&p["key"]), compact(&p["value"])),
        "audit.recorded" => {
            format!("opinion {}, findings {}", text(&p["entry"]["opinion"]), compact(&p["entry"]["findings"]))
        }
        _ => compact(p),
    }
}

fn compact(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use osp_protocol::{AggregateRef, Envelope, EventHash};
    use uuid::Uuid;

    use super::*;

    fn event(
        seq: u64,
        at: i64,
        aggregate: &str,
        event_type: &str,
        cause: &str,
        payload: Value,
    ) -> Recorded<AnyPayload> {
        let (kind, id) = aggregate.split_once(':').unwrap();
        let body = rmpv::ext::to_value(&payload).unwrap();
        Recorded {
            seq,
            stored_at: Timestamp(at),
            hash: EventHash::of(&seq.to_be_bytes()),
            envelope: Envelope {
                id: Uuid::nil(),
                aggregate: AggregateRef::new(kind, id).unwrap(),
                version: 1,
                occurred_at: Timestamp(at),
                actor: "service:scheduler".into(),
                correlation_id: Some("r1".into()),
                causation_id: Some(cause.into()),
                prev_hash: None,
                payload: AnyPayload { event_type: event_type.into(), schema: 1, body },
            },
        }
    }

    /// A workflow whose one step failed once, was retried, then completed.
    fn events() -> Vec<Recorded<AnyPayload>> {
        let child = "run:r1:step:a";
        let failure = json!({"attempt": 1, "error": {"kind": "flaky", "message": "try again"}});
        let secret = json!({"key": "token", "value": "s3cret", "sensitive": true});
        let steps = json!({"steps": [{"key": "step:a", "run_id": "r1:step:a"}]});
        let ended = json!({"key": "step:a", "status": "completed", "duration_ms": 630});
        vec![
            event(1, 900, "entry:agents:bob", "entry.registered", "reg", json!({})),
            event(2, 1_000, "run:r1", "run.submitted", "submit:r1:h", json!({"workflow": {"orchestratorWorkers": {}}})),
            event(3, 1_010, "run:r1", "run.steps_started", "advance:r1:2", steps),
            event(
                4,
                1_020,
                child,
                "run.submitted",
                "start:r1:step:a",
                json!({"dispatched": {"attempt": 1, "dispatch": 1}}),
            ),
            event(5, 1_100, child, "run.started", "started:r1:step:a:1:1:bob", json!({"attempt": 1, "agent": "bob"})),
            event(6, 1_300, child, "run.attempt_failed", "failed:r1:step:a:1", failure),
            event(7, 1_300, child, "run.retry_scheduled", "failed:r1:step:a:1", json!({"attempt": 2, "due_at": 1_400})),
            event(8, 1_310, "scope:run:r1:step:a", "scope.entry_set", "set-1", secret),
            event(9, 1_400, child, "run.dispatched", "timer:r1:step:a:retry:2", json!({"attempt": 2, "dispatch": 1})),
            event(10, 1_450, child, "run.started", "started:r1:step:a:2:1:bob", json!({"attempt": 2, "agent": "bob"})),
            event(
                11,
                1_650,
                child,
                "run.completed",
                "completed:r1:step:a:2",
                json!({"attempt": 2, "output": {"ok": true}}),
            ),
            event(12, 1_700, "run:r1", "run.step_ended", "step-ended:r1:step:a", ended),
            event(13, 1_710, "run:r1", "run.completed", "advance:r1:12", json!({"attempt": 0, "output": {}})),
            event(14, 5_000, "entry:agents:bob", "entry.offline", "liveness", json!({})),
        ]
    }

    #[test]
    fn lines_are_in_log_order_with_times_attempts_durations_and_causes() {
        let timeline = build("r1", &events());
        let seqs: Vec<u64> = timeline.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (2..=13).collect::<Vec<_>>(), "the agent's events outside the run are left out");
        let line = |seq: u64| timeline.lines.iter().find(|l| l.seq == seq).unwrap();
        assert_eq!(line(2).offset_ms, 0);
        assert_eq!(line(11).offset_ms, 650);
        assert_eq!((line(6).attempt, line(6).duration_ms), (Some(1), Some(200)));
        assert_eq!((line(11).attempt, line(11).duration_ms), (Some(2), Some(200)));
        assert_eq!(line(12).duration_ms, Some(630));
        assert_eq!(line(13).duration_ms, Some(710), "the workflow run, from its submit");
        assert_eq!(line(13).attempt, None, "a workflow run has no attempt of its own");
        for (seq, cause) in [(3, 2), (4, 3), (5, 4), (6, 5), (9, 7), (10, 9), (11, 10), (12, 11), (13, 12)] {
            assert_eq!(line(seq).cause, Cause::Event(cause), "#{seq}");
        }
        assert_eq!(line(2).cause, Cause::Command("submit:r1:h".into()));
        assert_eq!(line(8).payload["value"], MASK, "a sensitive value is never shown");
        assert_eq!(timeline.runs(), ["r1", "r1:step:a"]);
    }

    #[test]
    fn text_and_json_say_the_same() {
        let time = |ms: i64| clock::time(Timestamp(ms));
        let timeline = build("r1", &events());
        let text = timeline.text();
        let heading = format!("run r1: 12 events, 2 runs, seq 2..13, from {} (710ms to the last event)", time(1_000));
        assert_eq!(text[0], heading);
        let retry = text.iter().find(|l| l.contains("run.retry_scheduled")).unwrap();
        assert!(retry.contains(&format!("attempt 2 due {}", time(1_400))), "{retry}");
        let completed = text.iter().find(|l| l.contains("run.completed") && l.contains("run (root)")).unwrap();
        assert!(completed.contains(" 710ms "), "{completed}");
        let failed = text.iter().find(|l| l.contains("run.attempt_failed")).unwrap();
        assert!(
            failed.contains("run :step:a") && failed.contains("<- #5") && failed.contains("flaky: try again"),
            "{failed}"
        );
        assert!(!text.iter().any(|l| l.contains("s3cret")));
        let json = timeline.json();
        assert_eq!(json["events"].as_array().unwrap().len(), 12);
        assert_eq!(json["events"][3]["caused_by_seq"], 4);
        assert_eq!(json["events"][0]["caused_by_command"], "submit:r1:h");
        assert_eq!(json["span_ms"], 710);
    }
}
