//! A workflow run's steps: what the engine ([`crate::workflow`]) says comes next,
//! recorded as events; the end of a step's run; and what a parent asks of its steps'
//! runs (cancel, pause, resume).
//!
//! A step is a child run of its own (`<parent>:<key>`); the parent only records that it
//! started it (`run.steps_started`) and how it ended (`run.step_ended`). Effects carry
//! the rest: the child runs are submitted after the parent recorded them, and a child's
//! end is reported to its parent after the child recorded it — so a crash between the
//! two loses nothing, and doing either twice changes nothing.

use osp_protocol::registry::document::{encoded_len, from_json};
use osp_protocol::scheduler::options::DEFAULT_GRACEFUL_TIMEOUT_MS;
use osp_protocol::scheduler::{
    child_run_id, Cancel, Cancelled, Completed, Failed, Paused, RunEvent, StepEnded, StepStarted, StepsStarted,
    TaskError, MAX_DATA_BYTES,
};
use osp_protocol::{Timestamp, Token};

use super::lifecycle;
use crate::run::{Phase, Run};
use crate::workflow::{self, Next};

/// Steps' inputs one `run.steps_started` may carry; more ready steps start in the next
/// decision (a stored message is at most 1 MiB).
const STARTS_BYTES: usize = 512 * 1024;

/// What a workflow run asks of its steps' runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ParentSignal {
    /// The parent ended early (cancelled, failed, timed out): so does the step.
    Cancel {
        /// Why.
        reason: String,
        /// Without giving the agent time to stop.
        forced: bool,
    },
    /// The parent was paused.
    Pause,
    /// The parent was resumed.
    Resume,
}

/// What comes next in a workflow run, if it is running and not paused.
pub(super) fn advance(run: &Run) -> Vec<RunEvent> {
    let Some(state) = run.workflow.as_ref().filter(|_| run.phase == Phase::Orchestrating && !run.view.paused) else {
        return vec![];
    };
    let Ok(run_id) = Token::new("run_id", run.view.run_id.clone()) else { return vec![] };
    match workflow::next(&state.definition, &state.input, &state.steps) {
        Next::Wait => vec![],
        Next::Start { steps, total } => {
            let mut started = Vec::new();
            let mut bytes = 0;
            for spec in steps {
                let input = from_json(&spec.input);
                let size = encoded_len(&input);
                if size > MAX_DATA_BYTES {
                    return vec![fail(
                        "too_large",
                        format!(
                            "step {}'s input is {size} bytes, more than the {MAX_DATA_BYTES} a task may get",
                            spec.key
                        ),
                    )];
                }
                bytes += size;
                if bytes > STARTS_BYTES && !started.is_empty() {
                    break;
                }
                let child = child_run_id(&run_id, &spec.key);
                started.push(StepStarted { key: spec.key, run_id: child, step: spec.step, input });
            }
            vec![RunEvent::StepsStarted(StepsStarted { steps: started, total })]
        }
        Next::Complete(output) => {
            let output = from_json(&output);
            match encoded_len(&output) {
                size if size > MAX_DATA_BYTES => vec![fail(
                    "too_large",
                    format!("the workflow's output is {size} bytes, more than the {MAX_DATA_BYTES} a run may return"),
                )],
                _ => vec![RunEvent::Completed(Completed { attempt: 0, output })],
            }
        }
        Next::Fail(error) => vec![RunEvent::Failed(Failed { error, attempts: 0 })],
    }
}

/// The run of step `ended.key` ended: recorded once, also after the parent itself ended
/// (so its step tree shows how each step ended).
pub(super) fn ended(run: &Run, ended: &StepEnded) -> Vec<RunEvent> {
    let Some(state) = &run.workflow else { return vec![] };
    match state.steps.get(&ended.key) {
        Some(step) if step.end.is_none() && step.run_id == ended.run_id => vec![RunEvent::StepEnded(ended.clone())],
        _ => vec![],
    }
}

/// What the parent asks, where it still means something. A cancel of a step's run that
/// was never submitted (the parent ended before the submit) records the run as
/// cancelled, so the late submit finds it ended and does nothing.
pub(super) fn from_parent(run: &Run, signal: &ParentSignal, now: Timestamp) -> Vec<RunEvent> {
    if run.phase == Phase::Ended {
        return vec![];
    }
    match signal {
        ParentSignal::Cancel { reason, forced } if run.phase == Phase::New => {
            vec![RunEvent::Cancelled(Cancelled { reason: reason.clone(), forced: *forced })]
        }
        ParentSignal::Cancel { reason, forced } => {
            let Ok(run_id) = Token::new("run_id", run.view.run_id.clone()) else { return vec![] };
            let cancel = Cancel {
                run_id,
                reason: reason.clone(),
                graceful: !forced,
                graceful_timeout_ms: DEFAULT_GRACEFUL_TIMEOUT_MS,
            };
            lifecycle::cancel(run, &cancel, now).unwrap_or_default()
        }
        ParentSignal::Pause if run.exists() && !run.view.paused => {
            vec![RunEvent::Paused(Paused { reason: Some("its workflow was paused".into()) })]
        }
        ParentSignal::Resume if run.view.paused => lifecycle::resume(run, now).unwrap_or_default(),
        _ => vec![],
    }
}

fn fail(kind: &str, message: String) -> RunEvent {
    RunEvent::Failed(Failed { error: TaskError { kind: kind.into(), message, details: None }, attempts: 0 })
}
