//! How runs are printed: `key: value` lines and tables for people, with times and
//! durations as [`clock`] shows them; JSON for tools (one object, or one per line for
//! lists), with every time in RFC 3339.

use crate::clock::{self, with_rfc3339_times};
use crate::output::table;
use osp_protocol::json::from_msgpack_value;
use osp_protocol::registry::Document;
use osp_protocol::scheduler::queries::{ApprovalState, AttemptOutcome, CheckView, RunStatus, RunSummary, RunView};
use osp_protocol::scheduler::RunOutcome;
use osp_protocol::Timestamp;
use serde_json::{json, Value};

use super::tree::{self, Tree};
use crate::entries::truncate;
use crate::output::Lines;

/// Log lines `get` shows (the latest); `--json` has all the view carries.
const LOG_LINES: usize = 10;
/// Longest cell of free text in a table, in characters.
const CELL_WIDTH: usize = 60;

/// A document as JSON (bytes as hex, as everywhere in the CLI).
pub fn document(doc: &Document) -> Value {
    from_msgpack_value(doc)
}

/// A run as one JSON object: the scheduler's view (docs/protocol.md §17.8) with times in
/// RFC 3339.
pub fn run_json(run: &RunView) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or_else(|error| json!({ "error": error.to_string() }));
    with_rfc3339_times(&mut value);
    // The documents as the CLI shows MessagePack (bytes as hex), not as serde writes them.
    value["input"] = document(&run.input);
    if let Some(output) = &run.output {
        value["output"] = document(output);
    }
    if let Some(metadata) = &run.metadata {
        value["metadata"] = document(metadata);
    }
    for (i, input) in run.inputs.iter().enumerate() {
        value["inputs"][i]["question"] = document(&input.question);
        if let Some(answer) = &input.answer {
            value["inputs"][i]["answer"] = document(answer);
        }
    }
    value
}

/// A run summary as one JSON object.
pub fn summary_json(run: &RunSummary) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or_else(|error| json!({ "error": error.to_string() }));
    with_rfc3339_times(&mut value);
    value
}

/// What a command did to a run, as JSON (people read [`super::steer::said`]).
pub fn print_outcome(outcome: &RunOutcome, seq: u64) -> std::io::Result<()> {
    let line = json!({"run_id": outcome.run_id, "status": outcome.status, "paused": outcome.paused,
                      "created": outcome.created, "seq": seq});
    Lines::new(true, true).line(&line.to_string())
}

/// Prints runs as a table, or one JSON object per line. An empty table is a note on
/// stderr, so stdout holds only runs. With `parents`, the table says whose step each run
/// is (`-` for a run a person submitted).
pub fn print_summaries(runs: &[RunSummary], json: bool, parents: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for run in runs {
            lines.line(&summary_json(run).to_string())?;
        }
    } else if runs.is_empty() {
        eprintln!("no runs");
    } else {
        let rows = runs.iter().map(|run| {
            let mut row = vec![
                run.run_id.clone(),
                run.capability.clone(),
                status(run.status, run.paused),
                run.attempts.to_string(),
                run.progress.as_ref().map_or_else(|| "-".to_owned(), |p| progress(p.current, p.total, None)),
                clock::time(run.submitted_at),
                clock::time(run.updated_at),
            ];
            if parents {
                row.insert(1, run.parent.clone().unwrap_or_else(|| "-".to_owned()));
            }
            row
        });
        let mut header = vec!["RUN", "CAPABILITY", "STATUS", "ATTEMPTS", "PROGRESS", "SUBMITTED", "UPDATED"];
        if parents {
            header.insert(1, "PARENT");
        }
        lines.line(&table(&header, rows))?;
    }
    lines.flush()
}

/// Prints one run whole: `key: value` lines, with tables of attempts and decisions, and
/// a workflow run's step tree when given; with `json`, one JSON object.
pub fn print_run(run: &RunView, tree: Option<&Tree>, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        lines.line(&run_json(run).to_string())?;
        return lines.flush();
    }
    let mut out = Vec::new();
    out.push(format!("run: {}", run.run_id));
    match (&run.workflow, tree) {
        (Some(workflow), Some(tree)) => {
            let (done, total) = tree.done();
            out.push(format!("workflow: {}, {done}/{total} steps done", workflow.pattern()));
        }
        (Some(workflow), None) => out.push(format!("workflow: {}", workflow.pattern())),
        (None, _) => out.push(format!("capability: {}", run.capability)),
    }
    if let Some(parent) = &run.parent {
        out.push(format!("step: {} of run {} (root {})", parent.step, parent.run_id, parent.root));
    }
    out.push(format!("status: {}", status(run.status(), run.paused)));
    out.push(format!("submitted: {} by {}", clock::time(run.submitted_at), run.submitted_by));
    out.push(format!("updated: {}", clock::time(run.updated_at)));
    if let Some(ended) = run.ended_at {
        out.push(format!("ended: {}", clock::time(ended)));
    }
    if let Some(until) = run.cancelling_until {
        out.push(format!("cancelling: the agent has until {} to stop", clock::time(until)));
    }
    if let Some(at) = run.retry_at {
        out.push(format!("next attempt: {}", clock::time(at)));
    }
    out.push(format!("input: {}", compact(&document(&run.input))));
    if run.options != Default::default() {
        let mut options = serde_json::to_value(&run.options).unwrap_or_default();
        clock::for_people(&mut options);
        out.push(format!("options: {options}"));
    }
    if let Some(metadata) = &run.metadata {
        out.push(format!("metadata: {}", compact(&document(metadata))));
    }
    // A workflow run's progress is its steps, which its `workflow:` line counts.
    if let Some(p) = run.progress.as_ref().filter(|_| run.workflow.is_none()) {
        out.push(format!("progress: {}", progress(p.current, p.total, p.message.as_deref())));
    }
    if let Some(approval) = &run.approval {
        let who = match approval.approvers.is_empty() {
            true => "anyone".to_owned(),
            false => approval.approvers.join(", "),
        };
        let approvals = approval.decisions.iter().filter(|d| d.approved).count();
        let mut line =
            format!("approval: {} ({approvals} of {} approvals; from {who}", approval.state, approval.required);
        if let Some(expires) = approval.expires_at.filter(|_| approval.state == ApprovalState::Pending) {
            let then = if approval.auto_approve_on_timeout { "approved" } else { "cancelled" };
            line.push_str(&format!("; expires {}, then {then}", clock::time(expires)));
        }
        line.push(')');
        out.push(line);
        out.push(format!("  asked: {}", approval.message));
        if !approval.decisions.is_empty() {
            let rows = approval.decisions.iter().map(|d| {
                let decision = if d.approved { "approved" } else { "rejected" };
                let reason = d.reason.as_deref().map_or_else(|| "-".to_owned(), |r| truncate(r, CELL_WIDTH));
                vec![d.approver.clone(), decision.to_owned(), clock::time(d.at), reason]
            });
            out.push(indent(&table(&["APPROVER", "DECISION", "AT", "REASON"], rows)));
        }
    }
    for input in &run.inputs {
        let question = compact(&document(&input.question));
        match &input.answer {
            None => {
                out.push(format!("question {} (attempt {}, open): {question}", input.request_id, input.attempt));
                out.push(format!("  answer it: osp run answer {} 'JSON'", run.run_id));
            }
            Some(answer) => out.push(format!(
                "question {} (attempt {}): {question} -> {} by {}",
                input.request_id,
                input.attempt,
                compact(&document(answer)),
                input.answered_by.as_deref().unwrap_or("?")
            )),
        }
    }
    if let Some(tree) = tree {
        out.extend(tree::block(tree, Timestamp::now()));
    }
    if !run.attempts.is_empty() {
        out.push("attempts:".to_owned());
        let time = |at: Option<Timestamp>| at.map_or_else(|| "-".to_owned(), clock::time);
        let checked = run.attempts.iter().any(|a| a.check.is_some());
        let rows = run.attempts.iter().map(|a| {
            let mut error = a.error.as_ref().map_or_else(|| "-".to_owned(), |e| truncate(&e.to_string(), CELL_WIDTH));
            if a.timed_out && a.error.is_none() {
                error = "timed out, went on".to_owned();
            }
            let attempt = match a.dispatches {
                0 | 1 => a.attempt.to_string(),
                n => format!("{} ({n} dispatches)", a.attempt),
            };
            let mut row = vec![
                attempt,
                a.agent.clone().unwrap_or_else(|| "-".to_owned()),
                time(a.dispatched_at),
                time(a.started_at),
                time(a.ended_at),
                a.outcome.map_or("-", AttemptOutcome::as_str).to_owned(),
            ];
            if checked {
                row.push(a.check.as_ref().map_or_else(|| "-".to_owned(), check_cell));
            }
            row.push(error);
            row
        });
        let mut header = vec!["ATTEMPT", "AGENT", "DISPATCHED", "STARTED", "ENDED", "OUTCOME"];
        if checked {
            header.push("CHECKS");
        }
        header.push("ERROR");
        out.push(indent(&table(&header, rows)));
    }
    if let Some(output) = &run.output {
        let output = serde_json::to_string_pretty(&document(output)).unwrap_or_default();
        out.push(format!("output: {output}"));
    }
    if let Some(error) = &run.error {
        out.push(format!("error: {error}"));
    }
    if let Some(reason) = &run.cancel_reason {
        out.push(format!("cancelled: {reason}"));
    }
    if !run.logs.is_empty() {
        let shown = &run.logs[run.logs.len().saturating_sub(LOG_LINES)..];
        out.push(format!("logs (the last {} of {}):", shown.len(), run.log_count.max(run.logs.len() as u64)));
        for line in shown {
            out.push(format!("  {}  #{} {:<5} {}", clock::time(line.at), line.attempt, line.level, line.message));
        }
    }
    for line in out {
        lines.line(&line)?;
    }
    lines.flush()
}

/// An attempt's checks, in a cell: `passed, qualified (chk-…)`, or `checking (chk-…)`.
fn check_cell(check: &CheckView) -> String {
    match (check.passed, check.opinion) {
        (Some(passed), Some(opinion)) => {
            format!("{}, {} ({})", if passed { "passed" } else { "failed" }, opinion.as_str(), check.audit_id)
        }
        _ => format!("checking ({})", check.audit_id),
    }
}

/// `in-progress` or `in-progress, paused` (an ended run is only ended).
fn status(status: RunStatus, paused: bool) -> String {
    if paused && !status.is_final() {
        format!("{status}, paused")
    } else {
        status.as_str().to_owned()
    }
}

/// `3/5 message`, `3 message`.
pub fn progress(current: u64, total: Option<u64>, message: Option<&str>) -> String {
    let mut text = match total {
        Some(total) => format!("{current}/{total}"),
        None => current.to_string(),
    };
    if let Some(message) = message {
        text.push(' ');
        text.push_str(message);
    }
    text
}

/// JSON on one line, cut to a readable length.
pub fn compact(value: &Value) -> String {
    truncate(&value.to_string(), 200)
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::registry::document::from_json;
    use osp_protocol::scheduler::queries::AttemptView;

    #[test]
    fn times_become_rfc3339_but_documents_stay() {
        let run = RunView {
            run_id: "r-1".into(),
            capability: "summarize".into(),
            status: Some(RunStatus::Completed),
            input: from_json(&json!({"at": 5, "text": "hi"})),
            output: Some(from_json(&json!({"deadline": 7}))),
            attempts: vec![AttemptView {
                attempt: 1,
                dispatches: 1,
                dispatched_at: Some(Timestamp(1_500)),
                ..Default::default()
            }],
            submitted_at: Timestamp(1_000),
            updated_at: Timestamp(2_000),
            ..Default::default()
        };
        let json = run_json(&run);
        assert_eq!(json["submitted_at"], "1970-01-01T00:00:01Z");
        assert_eq!(json["attempts"][0]["dispatched_at"], "1970-01-01T00:00:01.5Z");
        assert_eq!(json["input"], json!({"at": 5, "text": "hi"}));
        assert_eq!(json["output"], json!({"deadline": 7}));
        assert_eq!(json["status"], "completed");
    }

    #[test]
    fn progress_reads_naturally() {
        assert_eq!(progress(3, Some(5), Some("reading")), "3/5 reading");
        assert_eq!(progress(3, None, None), "3");
        assert_eq!(status(RunStatus::Pending, true), "pending, paused");
        assert_eq!(status(RunStatus::Completed, true), "completed");
    }
}
