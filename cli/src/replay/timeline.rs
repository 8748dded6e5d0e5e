//! A run tree's timeline: every event, in log order, with its time relative to the
//! first, the attempt it belongs to, how long what it ends took, and what caused it.
//! Pure: built from events already read.

use std::collections::HashMap;

use osp_eventlog::Recorded;
use osp_protocol::context::{ContextEvent, EntrySet, EMBEDDINGS_KIND, MASK, SCOPE_KIND};
use osp_protocol::json::from_msgpack_value;
use osp_protocol::quality::{QualityEvent, AUDIT_KIND};
use osp_protocol::scheduler::{RunEvent, RUN_KIND};
use osp_protocol::{AnyPayload, Timestamp};
use serde_json::{json, Value};

use super::causes::{Cause, Causes};
use super::event::Event;
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
    /// Its aggregate's kind (`run`, `scope`, `audit`, `entry`, ...).
    pub kind: String,
    /// Its aggregate's id.
    pub id: String,
    /// Its type, as written.
    pub event_type: String,
    /// What happened.
    pub event: Event,
    /// The attempt it belongs to, when it names one.
    pub attempt: Option<u32>,
    /// Who did it.
    pub actor: String,
    /// What caused it.
    pub cause: Cause,
    /// How long what it ends took (an attempt, a step, a run, an approval, a check).
    pub duration_ms: Option<u64>,
    /// Its payload as written, as JSON (sensitive context values masked).
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
        matches!(event.envelope.aggregate.kind.as_str(), RUN_KIND | SCOPE_KIND | EMBEDDINGS_KIND | AUDIT_KIND)
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
        let typed = Event::of(&envelope.payload);
        let mut payload = envelope.payload.to_json();
        if matches!(&typed, Event::Context(ContextEvent::EntrySet(entry)) if entry.sensitive) {
            payload["value"] = MASK.into();
        }
        let cause = causes.resolve(envelope.causation_id.as_deref());
        causes.note(event.seq, id, &typed);
        let attempt = typed.run().and_then(RunEvent::attempt);
        let duration_ms = duration(&mut began, &format!("{kind}:{id}"), &typed, envelope.occurred_at);
        lines.push(Line {
            seq: event.seq,
            occurred_at: envelope.occurred_at,
            offset_ms: envelope.occurred_at.millis() - start.millis(),
            aggregate: envelope.aggregate.to_string(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            event_type: envelope.payload.event_type.clone(),
            event: typed,
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

/// A context entry's value as the timeline shows it: a sensitive one never.
fn shown_value(entry: &EntrySet) -> Value {
    match entry.sensitive {
        true => MASK.into(),
        false => entry.value.clone(),
    }
}

/// How long what `event` of `aggregate` ends took, from the event that began it
/// (remembered in `began` by key: `<aggregate>/<what>`).
fn duration(began: &mut HashMap<String, Timestamp>, aggregate: &str, event: &Event, at: Timestamp) -> Option<u64> {
    let key = |what: &str| format!("{aggregate}/{what}");
    let attempt = |attempt: u32| format!("attempt {attempt}");
    let begins = match event {
        Event::Run(RunEvent::Submitted(_)) => Some("run".to_owned()),
        Event::Run(RunEvent::Started(started)) => Some(attempt(started.attempt)),
        Event::Run(RunEvent::ApprovalRequested(_)) => Some("approval".to_owned()),
        Event::Run(RunEvent::Checking(_)) => Some("check".to_owned()),
        Event::Quality(QualityEvent::AuditOpened(_)) => Some("audit".to_owned()),
        _ => None,
    };
    if let Some(what) = begins {
        began.insert(key(&what), at);
        return None;
    }
    let since = |what: &str| began.get(&key(what)).map(|start| at.millis_since(*start));
    match event {
        Event::Run(RunEvent::StepEnded(ended)) => Some(ended.duration_ms),
        Event::Run(RunEvent::Approved(_) | RunEvent::ApprovalExpired(_)) => since("approval"),
        Event::Run(RunEvent::ApprovalDecided(decided)) if !decided.approved => since("approval"),
        Event::Run(RunEvent::Checked(_)) => since("check"),
        Event::Quality(QualityEvent::AuditRecorded(_)) => since("audit"),
        Event::Run(RunEvent::AttemptFailed(failed)) => since(&attempt(failed.attempt)),
        // A workflow run's (attempt 0) took from its submit: it has no attempts.
        Event::Run(RunEvent::Completed(completed)) if completed.attempt > 0 => since(&attempt(completed.attempt)),
        Event::Run(RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_)) => since("run"),
        _ => None,
    }
}

impl Timeline {
    /// The runs of the tree, in the order their first events came.
    pub fn runs(&self) -> Vec<&str> {
        let mut runs: Vec<&str> = Vec::new();
        for line in self.lines.iter().filter(|line| line.kind == RUN_KIND) {
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
        Some(rest) if matches!(line.kind.as_str(), RUN_KIND | SCOPE_KIND | EMBEDDINGS_KIND) => {
            format!("{} {}", line.kind, if rest.is_empty() { "(root)" } else { rest })
        }
        _ => line.aggregate.clone(),
    }
}

/// What a line says of its event, briefly, with times and durations for people.
fn detail(line: &Line) -> String {
    match &line.event {
        Event::Run(event) => match event {
            RunEvent::Submitted(submitted) => match (&submitted.workflow, &submitted.capability) {
                (Some(workflow), _) => format!("workflow {}", workflow.field()),
                (None, Some(capability)) => format!("task {capability}"),
                (None, None) => "task null".to_owned(),
            },
            RunEvent::StepsStarted(started) => {
                let keys: Vec<&str> = started.steps.iter().map(|step| step.key.as_str()).collect();
                format!("steps {}", keys.join(", "))
            }
            RunEvent::StepEnded(ended) => format!("{} {}", ended.key, ended.status),
            RunEvent::Started(started) => format!("agent {}", started.agent),
            RunEvent::Deferred(deferred) => format!("agent {}", deferred.agent),
            RunEvent::Completed(completed) => format!("output {}", compact(&from_msgpack_value(&completed.output))),
            RunEvent::AttemptFailed(failed) => format!("{}: {}", failed.error.kind, failed.error.message),
            RunEvent::Failed(failed) => format!("{}: {}", failed.error.kind, failed.error.message),
            RunEvent::RetryScheduled(retry) => format!("attempt {} due {}", retry.attempt, clock::time(retry.due_at)),
            RunEvent::ApprovalDecided(decided) => format!(
                "{} {}{}",
                decided.approver,
                if decided.approved { "approved" } else { "rejected" },
                decided.reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default()
            ),
            RunEvent::Cancelled(cancelled) => format!("reason {}", cancelled.reason),
            RunEvent::CancelRequested(requested) => format!("reason {}", requested.reason),
            _ => as_written(line),
        },
        Event::Context(ContextEvent::EntrySet(entry)) => format!("{} = {}", entry.key, compact(&shown_value(entry))),
        Event::Quality(QualityEvent::AuditRecorded(recorded)) => {
            format!(
                "opinion {}, findings {}",
                recorded.entry.opinion.as_str(),
                compact(&json!(recorded.entry.findings))
            )
        }
        _ => as_written(line),
    }
}

/// The payload as written, with times and durations for people.
fn as_written(line: &Line) -> String {
    let mut payload = line.payload.clone();
    clock::for_people(&mut payload);
    compact(&payload)
}

fn compact(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use osp_protocol::{AggregateRef, Envelope, EventHash};
    use uuid::Uuid;

    use super::super::event::tests::written;
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
                payload: written(event_type, &payload),
            },
        }
    }

    /// A workflow whose one step failed once, was retried, then completed.
    fn events() -> Vec<Recorded<AnyPayload>> {
        let child = "run:r1:step:a";
        let error = json!({"kind": "flaky", "message": "try again"});
        let failure = json!({"attempt": 1, "error": error, "retryable": true, "cause": "agent"});
        let secret = json!({"section": "env", "key": "token", "value": "s3cret", "sensitive": true});
        let task = json!({"task": {"capability": "work"}});
        let workflow = json!({"orchestratorWorkers": {"plan": task, "workers": {"a": task}, "synthesize": task}});
        let submitted = json!({"workflow": workflow, "input": null, "options": {}});
        let steps =
            json!({"steps": [{"key": "step:a", "run_id": "r1:step:a", "step": task, "input": null}], "total": 1});
        let ended = json!({"key": "step:a", "run_id": "r1:step:a", "status": "completed", "duration_ms": 630});
        let dispatched = json!({"attempt": 1, "dispatch": 1});
        let retry = json!({"attempt": 2, "delay_ms": 100, "due_at": 1_400});
        vec![
            event(1, 900, "entry:agents:bob", "entry.registered", "reg", json!({})),
            event(2, 1_000, "run:r1", "run.submitted", "submit:r1:h", submitted),
            event(3, 1_010, "run:r1", "run.steps_started", "advance:r1:2", steps),
            event(
                4,
                1_020,
                child,
                "run.submitted",
                "start:r1:step:a",
                json!({"capability": "work", "input": null, "options": {}, "dispatched": dispatched}),
            ),
            event(5, 1_100, child, "run.started", "started:r1:step:a:1:1:bob", json!({"attempt": 1, "agent": "bob"})),
            event(6, 1_300, child, "run.attempt_failed", "failed:r1:step:a:1", failure),
            event(7, 1_300, child, "run.retry_scheduled", "failed:r1:step:a:1", retry),
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
