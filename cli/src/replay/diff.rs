//! `osp replay diff`: where two runs of the same workflow went different ways. Pure:
//! compares two timelines.
//!
//! The runs of each tree are matched by their place in it (the child run's id after the
//! root's: `:classify`, `:route:tech`, `:subtask:s2`), so two runs of one workflow line
//! up step by step. For each step the diff compares whether it ran at all, its input, the
//! decisions recorded on it (its event types and attempts, in order: a retry, a refusal,
//! a timeout, an approval rejected), its output (or error), and its duration (an outlier
//! when one took at least [`OUTLIER_RATIO`] times the other and [`OUTLIER_MIN_MS`] more).
//! The divergences are listed in the order they happened; the first is where the runs
//! went different ways.

use std::collections::BTreeMap;

use osp_protocol::context::{EMBEDDINGS_KIND, SCOPE_KIND};
use osp_protocol::json::from_msgpack_value;
use osp_protocol::scheduler::{RunEvent, Submitted, TaskError, RUN_KIND};
use serde_json::{json, Value};

use super::event::Event;
use super::timeline::{Line, Timeline};
use crate::clock;

/// A duration at least this many times the other's is a timing outlier…
pub const OUTLIER_RATIO: u64 = 3;
/// …when it is also at least this much longer.
pub const OUTLIER_MIN_MS: u64 = 100;

/// What differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The root runs run different definitions.
    Workflow,
    /// A step ran in one run only.
    Step,
    /// A step's input.
    Input,
    /// What was decided on a step (its events, in order).
    Decision,
    /// A step's output or error.
    Output,
    /// A step took far longer in one run.
    Timing,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Workflow => "workflow",
            Kind::Step => "step",
            Kind::Input => "input",
            Kind::Decision => "decision",
            Kind::Output => "output",
            Kind::Timing => "timing",
        }
    }
}

/// One difference between the runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Where in the runs' order it happened (for ordering).
    position: usize,
    /// The step: its place in the tree (`` for the root run).
    pub step: String,
    /// What differs.
    pub kind: Kind,
    /// What run a had there.
    pub a: Value,
    /// What run b had there.
    pub b: Value,
}

/// The differences between two run trees, first first.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// The first run.
    pub a: String,
    /// The second.
    pub b: String,
    /// Every divergence, in the order they happened.
    pub divergences: Vec<Divergence>,
}

/// One step of a tree: its lines.
struct Step<'a> {
    lines: Vec<(usize, &'a Line)>,
}

impl Step<'_> {
    fn first(&self) -> usize {
        self.lines.first().map_or(0, |(index, _)| *index)
    }

    fn submitted(&self) -> Option<&Submitted> {
        self.lines.iter().find_map(|(_, line)| match &line.event {
            Event::Run(RunEvent::Submitted(submitted)) => Some(submitted),
            _ => None,
        })
    }

    fn input(&self) -> Value {
        self.submitted().map_or(Value::Null, |submitted| from_msgpack_value(&submitted.input))
    }

    /// The decisions: what happened to it, in order (progress and logs are no decisions).
    fn decisions(&self) -> Vec<(usize, String)> {
        self.lines
            .iter()
            .filter(|(_, line)| {
                line.kind == RUN_KIND
                    && !matches!(line.event, Event::Run(RunEvent::Progressed(_) | RunEvent::Logged(_)))
            })
            .map(|(index, line)| {
                let attempt = line.attempt.map(|attempt| format!(" (attempt {attempt})")).unwrap_or_default();
                (*index, format!("{}{attempt}", line.event_type))
            })
            .collect()
    }

    /// Its output, or its error, and where it was recorded.
    fn outcome(&self) -> Option<(usize, Value)> {
        self.lines.iter().rev().find_map(|(index, line)| match &line.event {
            Event::Run(RunEvent::Completed(completed)) => {
                Some((*index, json!({"output": from_msgpack_value(&completed.output)})))
            }
            Event::Run(RunEvent::Failed(failed)) => Some((*index, json!({"error": error_json(&failed.error)}))),
            Event::Run(RunEvent::Cancelled(cancelled)) => Some((*index, json!({"cancelled": cancelled.reason}))),
            _ => None,
        })
    }

    /// From its first event to its last, in milliseconds.
    fn duration_ms(&self) -> Option<u64> {
        let (first, last) = (self.lines.first()?.1, self.lines.last()?.1);
        Some((last.offset_ms - first.offset_ms).max(0) as u64)
    }
}

/// `error` as JSON, its details as they were written.
fn error_json(error: &TaskError) -> Value {
    let mut json = json!({"kind": error.kind, "message": error.message});
    if let Some(details) = &error.details {
        json["details"] = from_msgpack_value(details);
    }
    json
}

/// The steps of `timeline`, by their place in the tree. Runs and their scopes count; the
/// tree's other aggregates (audits, agents) are compared through the runs' events.
fn steps(timeline: &Timeline) -> BTreeMap<String, Step<'_>> {
    let mut steps: BTreeMap<String, Step<'_>> = BTreeMap::new();
    for (index, line) in timeline.lines.iter().enumerate() {
        let run = match line.kind.as_str() {
            RUN_KIND => line.id.as_str(),
            SCOPE_KIND | EMBEDDINGS_KIND => line.id.strip_prefix("run:").unwrap_or(&line.id),
            _ => continue,
        };
        let Some(place) = run.strip_prefix(timeline.root.as_str()) else { continue };
        steps.entry(place.to_owned()).or_insert_with(|| Step { lines: Vec::new() }).lines.push((index, line));
    }
    steps
}

/// Compares the trees of runs `a` and `b`.
pub fn diff(a: &Timeline, b: &Timeline) -> Diff {
    let (steps_a, steps_b) = (steps(a), steps(b));
    let mut divergences = Vec::new();
    let definition = |steps: &BTreeMap<String, Step<'_>>| {
        steps.get("").and_then(Step::submitted).map_or(
            Value::Null,
            |submitted| json!({"workflow": submitted.workflow, "capability": submitted.capability}),
        )
    };
    let (definition_a, definition_b) = (definition(&steps_a), definition(&steps_b));
    if definition_a != definition_b {
        divergences.push(Divergence {
            position: 0,
            step: String::new(),
            kind: Kind::Workflow,
            a: definition_a,
            b: definition_b,
        });
    }
    let places: std::collections::BTreeSet<&String> = steps_a.keys().chain(steps_b.keys()).collect();
    for place in places {
        let (one, other) = (steps_a.get(place), steps_b.get(place));
        let mut push = |position: usize, kind: Kind, a: Value, b: Value| {
            divergences.push(Divergence { position, step: place.clone(), kind, a, b })
        };
        let (one, other) = match (one, other) {
            (Some(one), Some(other)) => (one, other),
            (Some(one), None) => {
                push(one.first(), Kind::Step, json!("ran"), json!("did not run"));
                continue;
            }
            (None, Some(other)) => {
                push(other.first(), Kind::Step, json!("did not run"), json!("ran"));
                continue;
            }
            (None, None) => continue,
        };
        if one.input() != other.input() {
            push(one.first().min(other.first()), Kind::Input, one.input(), other.input());
        }
        let (decisions_a, decisions_b) = (one.decisions(), other.decisions());
        let differs = (0..decisions_a.len().max(decisions_b.len()))
            .find(|&i| decisions_a.get(i).map(|d| &d.1) != decisions_b.get(i).map(|d| &d.1));
        if let Some(i) = differs {
            let at = |decisions: &[(usize, String)]| decisions.get(i).map(|d| d.0).unwrap_or(usize::MAX);
            let said = |decisions: &[(usize, String)]| decisions.get(i).map_or(json!("(nothing)"), |d| json!(d.1));
            push(at(&decisions_a).min(at(&decisions_b)), Kind::Decision, said(&decisions_a), said(&decisions_b));
        }
        if let (Some((at_a, out_a)), Some((at_b, out_b))) = (one.outcome(), other.outcome()) {
            if out_a != out_b {
                push(at_a.min(at_b), Kind::Output, out_a, out_b);
            }
        }
        if let (Some(took_a), Some(took_b)) = (one.duration_ms(), other.duration_ms()) {
            let (short, long) = (took_a.min(took_b), took_a.max(took_b));
            if long >= short.saturating_mul(OUTLIER_RATIO) && long - short >= OUTLIER_MIN_MS {
                let end = |step: &Step<'_>| step.lines.last().map_or(0, |(index, _)| *index);
                push(end(one).min(end(other)), Kind::Timing, json!(took_a), json!(took_b));
            }
        }
    }
    divergences.sort_by_key(|divergence| divergence.position);
    Diff { a: a.root.clone(), b: b.root.clone(), divergences }
}

impl Diff {
    /// As one JSON object (`--json`).
    pub fn json(&self) -> Value {
        let divergences: Vec<Value> = self
            .divergences
            .iter()
            .map(|d| json!({"step": d.step, "kind": d.kind.as_str(), "a": d.a, "b": d.b}))
            .collect();
        json!({"a": self.a, "b": self.b, "same": self.divergences.is_empty(), "first": divergences.first(), "divergences": divergences})
    }

    /// As text: the first divergence, then the others.
    pub fn text(&self) -> Vec<String> {
        let Some(first) = self.divergences.first() else {
            return vec![format!(
                "runs {} and {} went the same way: same steps, inputs, decisions and outputs",
                self.a, self.b
            )];
        };
        let mut lines =
            vec![format!("runs {} and {} diverged first at {}", self.a, self.b, describe(first, &self.a, &self.b))];
        lines.extend(self.divergences.iter().skip(1).map(|d| format!("  then {}", describe(d, &self.a, &self.b))));
        lines
    }
}

fn describe(divergence: &Divergence, a: &str, b: &str) -> String {
    let step = if divergence.step.is_empty() { "the root run".to_owned() } else { format!("step {}", divergence.step) };
    let show = |value: &Value| match divergence.kind {
        Kind::Timing => clock::duration(value.as_u64().unwrap_or(0)),
        _ => value.as_str().map_or_else(|| value.to_string(), str::to_owned),
    };
    format!("{step} ({}): {a} {}, {b} {}", divergence.kind.as_str(), show(&divergence.a), show(&divergence.b))
}

#[cfg(test)]
mod tests {
    use osp_protocol::Timestamp;

    use super::super::causes::Cause;
    use super::super::event::tests::read;
    use super::*;

    fn line(root: &str, place: &str, at: i64, event_type: &str, payload: Value) -> Line {
        let id = format!("{root}{place}");
        let event = read(event_type, &payload);
        Line {
            seq: 0,
            occurred_at: Timestamp(at),
            offset_ms: at,
            aggregate: format!("run:{id}"),
            kind: RUN_KIND.into(),
            id,
            event_type: event_type.into(),
            attempt: event.run().and_then(RunEvent::attempt),
            event,
            actor: "service:scheduler".into(),
            cause: Cause::Unknown,
            duration_ms: None,
            payload,
            hash: String::new(),
        }
    }

    fn submitted(workflow: Option<Value>) -> Value {
        json!({"workflow": workflow, "capability": workflow.is_none().then_some("work"), "input": {"q": 1}, "options": {}})
    }

    fn started(attempt: u32) -> Value {
        json!({"attempt": attempt, "agent": "a1"})
    }

    fn completed(attempt: u32, output: Value) -> Value {
        json!({"attempt": attempt, "output": output})
    }

    fn routing_workflow() -> Value {
        let task = json!({"task": {"capability": "work"}});
        json!({"routing": {"classify": task, "routes": {"billing": task, "tech": task}}})
    }

    /// A routing run: classify said `route`; the route's step ran (slowly, if `slow`);
    /// its first attempt failed if `flaky`.
    fn routing(root: &str, route: &str, flaky: bool, slow: bool) -> Timeline {
        let mut lines = vec![
            line(root, "", 0, "run.submitted", submitted(Some(routing_workflow()))),
            line(root, ":classify", 5, "run.submitted", submitted(None)),
            line(root, ":classify", 10, "run.started", started(1)),
            line(root, ":classify", 20, "run.completed", completed(1, json!({"route": route}))),
        ];
        let step = format!(":route:{route}");
        lines.push(line(root, &step, 25, "run.submitted", submitted(None)));
        lines.push(line(root, &step, 30, "run.started", started(1)));
        if flaky {
            let error = json!({"kind": "flaky", "message": "not this time"});
            let failed = json!({"attempt": 1, "error": error, "retryable": true, "cause": "agent"});
            lines.push(line(root, &step, 40, "run.attempt_failed", failed));
            lines.push(line(root, &step, 50, "run.started", started(2)));
        }
        let end = if slow { 900 } else { 60 };
        lines.push(line(root, &step, end, "run.completed", completed(1 + u32::from(flaky), json!("done"))));
        lines.push(line(root, "", end + 5, "run.completed", completed(0, json!("done"))));
        Timeline { root: root.into(), lines }
    }

    #[test]
    fn two_runs_that_went_the_same_way_have_no_divergence() {
        let diff = super::diff(&routing("a", "tech", false, false), &routing("b", "tech", false, false));
        assert_eq!(diff.divergences, []);
        assert!(diff.text()[0].contains("went the same way"));
    }

    #[test]
    fn the_first_divergence_is_where_the_runs_went_different_ways() {
        let diff = super::diff(&routing("a", "tech", false, false), &routing("b", "billing", false, false));
        let first = &diff.divergences[0];
        assert_eq!((first.step.as_str(), first.kind), (":classify", Kind::Output));
        assert_eq!(first.a, json!({"output": {"route": "tech"}}));
        let kinds: Vec<(&str, Kind)> = diff.divergences.iter().map(|d| (d.step.as_str(), d.kind)).collect();
        assert!(kinds.contains(&(":route:billing", Kind::Step)) && kinds.contains(&(":route:tech", Kind::Step)));
        assert!(
            diff.text()[0].starts_with("runs a and b diverged first at step :classify (output)"),
            "{:?}",
            diff.text()
        );
        assert_eq!(diff.json()["first"]["kind"], "output");
    }

    #[test]
    fn a_retry_is_a_differing_decision_and_a_slow_step_a_timing_outlier() {
        let diff = super::diff(&routing("a", "tech", false, false), &routing("b", "tech", true, false));
        let first = &diff.divergences[0];
        assert_eq!((first.step.as_str(), first.kind), (":route:tech", Kind::Decision));
        assert_eq!(
            (first.a.clone(), first.b.clone()),
            (json!("run.completed (attempt 1)"), json!("run.attempt_failed (attempt 1)"))
        );

        let diff = super::diff(&routing("a", "tech", false, false), &routing("b", "tech", false, true));
        let timing: Vec<&Divergence> = diff.divergences.iter().filter(|d| d.kind == Kind::Timing).collect();
        assert_eq!(timing.len(), 2, "the step and the root run: {:?}", diff.divergences);
        assert_eq!(
            (timing[0].step.as_str(), timing[0].a.clone(), timing[0].b.clone()),
            (":route:tech", json!(35), json!(875))
        );
        assert!(
            diff.text().iter().any(|line| line.ends_with("step :route:tech (timing): a 35ms, b 875ms")),
            "{:?}",
            diff.text()
        );
    }

    #[test]
    fn runs_of_different_workflows_say_so_first() {
        let mut other = routing("b", "tech", false, false);
        let task = json!({"task": {"capability": "work"}});
        let parallel = json!({"parallelization": {"split": task, "worker": task}});
        other.lines[0] = line("b", "", 0, "run.submitted", submitted(Some(parallel)));
        let diff = super::diff(&routing("a", "tech", false, false), &other);
        assert_eq!(diff.divergences[0].kind, Kind::Workflow);
    }
}
