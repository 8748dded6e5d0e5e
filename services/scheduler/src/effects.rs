//! Effects: what the log's run events ask of the world — put a task on the work queue,
//! set a timer, signal the agent; for workflows, decide what comes next, submit the
//! steps' runs, pass a cancel or pause on to them, tell a parent its step ended.
//! Computed as data by [`effects_of`] (pure), performed by the shell.
//!
//! Effects are driven by the log, not by the command that caused the events: every
//! instance shares the durable consumer `effects-scheduler` on `osp.v1.evt.run.*`, so
//! each event's effects are performed by one instance, and again by another if that one
//! dies before acknowledging. Each effect is idempotent (a task message has a
//! deterministic `Nats-Msg-Id`, a timer's subject is its identity, a signal is a hint)
//! and is judged against the run's state *now*: an event whose effect the run has moved
//! past (a dispatch of an attempt already started, a timer of an ended run) does nothing.

use osp_protocol::scheduler::queries::{ApprovalState, RunStatus};
use osp_protocol::scheduler::{FailureCause, Notify, RunEvent, Signal, StepEnded, TaskError};
use osp_protocol::{Envelope, Timestamp, Token};

use crate::commands::{ParentSignal, TimerKind};
use crate::run::{CheckState, Phase, Run};

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Publish the task of attempt `attempt` (its `dispatch`-th time) to the work queue.
    PublishTask {
        /// From 1; the message id `task:<run>:<attempt>:<dispatch>` makes a repeat a no-op.
        attempt: u32,
        /// From 1; a dispatch deferred by a pause is published again, as the next, on resume.
        dispatch: u32,
    },
    /// Set a durable timer.
    SetTimer {
        /// With the run and `n`, the timer's id: setting the same timer again replaces it.
        kind: TimerKind,
        /// For which attempt.
        n: u32,
        /// When it fires: the durable timer rounds it up to the second; a past time fires at once.
        at: Timestamp,
    },
    /// Tell the agent.
    Signal(Signal),
    /// Remove timers that can no longer matter (the run ended), so they do not wait in
    /// the timer stream until they fire for nothing.
    ClearTimers(Vec<(TimerKind, u32)>),
    /// Decide what the workflow does next.
    Advance,
    /// Submit the runs of these steps (by key).
    StartSteps(Vec<String>),
    /// Pass this on to the runs of the steps still running.
    ToSteps(ParentSignal),
    /// Ask the quality service to check attempt `attempt`'s held output.
    RequestCheck {
        /// Nothing is asked unless this attempt's output is still the one held.
        attempt: u32,
    },
    /// Tell the service the run's `notify` option names that the run ended.
    NotifyEnd(Notify, RunStatus),
    /// Tell the parent run that this run (one of its steps) ended.
    NotifyParent {
        /// The workflow run whose step this is: `StepEnded` is decided on it.
        parent: Token,
        /// How its step ended.
        ended: StepEnded,
    },
}

/// The effects of the event in `envelope` on a run now in state `run`.
pub fn effects_of(envelope: &Envelope<RunEvent>, run: &Run) -> Vec<Effect> {
    let event = &envelope.payload;
    let mut effects = Vec::new();
    let current = run.attempt();
    // A submit that dispatched its first attempt has the effects of a dispatch.
    let dispatched = match event {
        RunEvent::Dispatched(dispatched) => Some(dispatched),
        RunEvent::Submitted(submitted) => submitted.dispatched.as_ref(),
        _ => None,
    };
    if let Some(dispatched) = dispatched {
        if run.phase == (Phase::Queued { attempt: dispatched.attempt, dispatch: dispatched.dispatch }) {
            effects.push(Effect::PublishTask { attempt: dispatched.attempt, dispatch: dispatched.dispatch });
        }
        if let Some(at) = dispatched.deadline.filter(|_| current == dispatched.attempt && !run.ended()) {
            effects.push(Effect::SetTimer { kind: TimerKind::Timeout, n: dispatched.attempt, at });
        }
    }
    match event {
        RunEvent::RetryScheduled(retry) if retry.delay_ms > 0 => {
            if matches!(run.phase, Phase::RetryWait { attempt, .. } if attempt == retry.attempt) {
                effects.push(Effect::SetTimer { kind: TimerKind::Retry, n: retry.attempt, at: retry.due_at });
            }
        }
        RunEvent::ApprovalRequested(request) => {
            if let Some(at) = request.expires_at.filter(|_| run.phase == Phase::AwaitingApproval) {
                effects.push(Effect::SetTimer { kind: TimerKind::Approval, n: 1, at });
            }
        }
        RunEvent::CancelRequested(request) => {
            if let Phase::Cancelling { attempt, .. } = &run.phase {
                effects.push(Effect::SetTimer { kind: TimerKind::Cancel, n: *attempt, at: request.deadline });
                effects.push(Effect::Signal(Signal::Cancel {
                    attempt: *attempt,
                    graceful: true,
                    deadline: Some(request.deadline),
                    reason: request.reason.clone(),
                }));
            }
        }
        RunEvent::Cancelled(cancelled)
            if cancelled.forced && run.attempts.last().is_some_and(|a| a.agent.is_some()) =>
        {
            effects.push(stop(current, &cancelled.reason));
        }
        RunEvent::AttemptFailed(failed) if !matches!(failed.cause, FailureCause::Agent | FailureCause::Check) => {
            // The runtime failed an attempt an agent may still be working on: tell it to stop.
            effects.push(stop(failed.attempt, &failed.error.message));
        }
        RunEvent::Checking(checking) if run.phase == (Phase::Checking { attempt: checking.attempt }) => {
            effects.push(Effect::RequestCheck { attempt: checking.attempt });
            effects.push(Effect::SetTimer { kind: TimerKind::Check, n: checking.attempt, at: checking.deadline });
        }
        RunEvent::Checked(checked) => effects.push(Effect::ClearTimers(vec![(TimerKind::Check, checked.attempt)])),
        RunEvent::InputAnswered(answered) => {
            if let Some((attempt, _)) = run.phase.held() {
                effects.push(Effect::Signal(Signal::Answer {
                    attempt,
                    request_id: answered.request_id.clone(),
                    answer: osp_protocol::json::from_msgpack_value(&answered.answer),
                }));
            }
        }
        RunEvent::Paused(_) | RunEvent::Resumed(_) => {
            if let Some((attempt, _)) = run.phase.held() {
                let signal = match event {
                    RunEvent::Paused(_) => Signal::Pause { attempt },
                    _ => Signal::Resume { attempt },
                };
                effects.push(Effect::Signal(signal));
            }
        }
        _ => {}
    }
    if run.workflow.is_some() {
        effects.extend(workflow_effects(event, run));
    }
    if matches!(event, RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_)) {
        let pending = pending_timers(run);
        if !pending.is_empty() {
            effects.push(Effect::ClearTimers(pending));
        }
        if let Some(notify) = notify_parent(envelope, run) {
            effects.push(notify);
        }
        if let Some(notify) = &run.submission.options.notify {
            effects.push(Effect::NotifyEnd((**notify).clone(), run.status()));
        }
    }
    effects
}

/// What a workflow run's events ask: start steps, go on, pass a cancel or pause down.
fn workflow_effects(event: &RunEvent, run: &Run) -> Vec<Effect> {
    let Some(workflow) = &run.workflow else { return vec![] };
    let running = run.phase == Phase::Orchestrating;
    let mut effects = Vec::new();
    match event {
        RunEvent::Submitted(_) | RunEvent::Approved(_) if running => {
            effects.push(Effect::Advance);
            if let Some(at) = workflow.deadline.filter(|_| !workflow.timed_out) {
                effects.push(Effect::SetTimer { kind: TimerKind::Timeout, n: 1, at });
            }
        }
        RunEvent::StepsStarted(started) if running => {
            effects.push(Effect::StartSteps(started.steps.iter().map(|s| s.key.clone()).collect()));
            // A decision starts at most so many steps' inputs; the rest start next.
            if has_next(run, workflow) {
                effects.push(Effect::Advance);
            }
        }
        // Most step ends change nothing (the others are still running): deciding only
        // when the engine has something to do spares a decision per step.
        RunEvent::StepEnded(_) if running && has_next(run, workflow) => effects.push(Effect::Advance),
        RunEvent::Resumed(_) if running => {
            effects.push(Effect::ToSteps(ParentSignal::Resume));
            effects.push(Effect::Advance);
        }
        RunEvent::Paused(_) if running => effects.push(Effect::ToSteps(ParentSignal::Pause)),
        RunEvent::Cancelled(cancelled) => effects.push(Effect::ToSteps(ParentSignal::Cancel {
            reason: format!("its workflow was cancelled: {}", cancelled.reason),
            forced: cancelled.forced,
        })),
        RunEvent::Failed(failed) => effects.push(Effect::ToSteps(ParentSignal::Cancel {
            reason: format!("its workflow failed: {}", failed.error.message),
            forced: false,
        })),
        _ => {}
    }
    effects
}

/// Whether the workflow has something to do now (the engine is pure and cheap to ask).
fn has_next(run: &Run, workflow: &crate::run::WorkflowState) -> bool {
    !run.paused
        && crate::workflow::next(&workflow.definition, &workflow.input, &workflow.steps) != crate::workflow::Next::Wait
}

/// A step's run that ended (with `end`) tells its parent how.
fn notify_parent(end: &Envelope<RunEvent>, run: &Run) -> Option<Effect> {
    let parent = run.submission.parent.as_ref()?;
    let run_id = Token::new("run_id", run.run_id.clone()).ok()?;
    let (status, output, error) = match &end.payload {
        RunEvent::Completed(completed) => (RunStatus::Completed, Some(completed.output.clone()), None),
        RunEvent::Failed(failed) => (RunStatus::Failed, None, Some(failed.error.clone())),
        RunEvent::Cancelled(cancelled) => {
            let error = TaskError { kind: "cancelled".into(), message: cancelled.reason.clone(), details: None };
            (RunStatus::Cancelled, None, Some(error))
        }
        _ => return None,
    };
    Some(Effect::NotifyParent {
        parent: parent.run_id.clone(),
        ended: StepEnded {
            key: parent.step.clone(),
            run_id,
            status,
            output,
            error,
            duration_ms: end.occurred_at.millis_since(run.submission.at.unwrap_or_default()),
        },
    })
}

/// The timers an ended run may still have set: the last attempt's timeout, the approval's
/// expiry, a graceful cancel's deadline.
fn pending_timers(run: &Run) -> Vec<(TimerKind, u32)> {
    let mut timers = Vec::new();
    let latest = run.attempts.last();
    if latest.is_some_and(|a| a.deadline.is_some() && !a.timed_out) {
        timers.push((TimerKind::Timeout, run.attempt()));
    }
    if run.approval.as_ref().is_some_and(|a| {
        a.expires_at.is_some() && !matches!(a.state, ApprovalState::Expired | ApprovalState::ApprovedOnExpiry)
    }) {
        timers.push((TimerKind::Approval, 1));
    }
    if run.cancel_deadline.is_some() {
        timers.push((TimerKind::Cancel, run.attempt()));
    }
    if latest.is_some_and(|a| a.check.as_ref().is_some_and(|c| c.state == CheckState::Awaiting)) {
        timers.push((TimerKind::Check, run.attempt()));
    }
    if run.workflow.as_ref().is_some_and(|w| w.deadline.is_some() && !w.timed_out) {
        timers.push((TimerKind::Timeout, 1));
    }
    timers
}

fn stop(attempt: u32, reason: &str) -> Effect {
    Effect::Signal(Signal::Cancel { attempt, graceful: false, deadline: None, reason: reason.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fixtures::*;
    use osp_runtime::testing::{envelope, fold};

    fn effects(history: &[RunEvent]) -> Vec<Effect> {
        let run: Run = fold(history);
        effects_of(&envelope(history.last().unwrap().clone(), history.len() as u64), &run)
    }

    #[test]
    fn a_dispatch_publishes_the_task_once_and_sets_its_timeout() {
        let history = submit_history(with_timeout(1000, "fail"));
        assert_eq!(
            effects(&history),
            vec![
                Effect::PublishTask { attempt: 1, dispatch: 1 },
                Effect::SetTimer { kind: TimerKind::Timeout, n: 1, at: NOW.plus_millis(1000) }
            ]
        );
        // Redelivered after the agent started it: the task is not published again.
        let mut started_already = history.clone();
        started_already.push(started(1, "a1"));
        let run: Run = fold(&started_already);
        let submitted = envelope(history[0].clone(), 1);
        assert_eq!(
            effects_of(&submitted, &run),
            vec![Effect::SetTimer { kind: TimerKind::Timeout, n: 1, at: NOW.plus_millis(1000) }]
        );
        // After the run ended: nothing.
        started_already.push(completed(1));
        let run: Run = fold(&started_already);
        assert_eq!(effects_of(&submitted, &run), vec![]);
    }

    #[test]
    fn an_ended_run_clears_its_timers() {
        let mut history = submit_history(with_timeout(1000, "fail"));
        history.push(started(1, "a1"));
        history.push(completed(1));
        assert_eq!(effects(&history), vec![Effect::ClearTimers(vec![(TimerKind::Timeout, 1)])]);
        let mut no_timers = submit_history(options());
        no_timers.push(started(1, "a1"));
        no_timers.push(completed(1));
        assert_eq!(effects(&no_timers), vec![]);
    }

    #[test]
    fn a_forced_cancel_tells_the_agent_to_stop() {
        let mut history = submit_history(options());
        history.push(started(1, "a1"));
        history.push(cancelled("stop", true));
        assert!(matches!(
            effects(&history).as_slice(),
            [Effect::Signal(Signal::Cancel { attempt: 1, graceful: false, .. })]
        ));
        let mut queued = submit_history(options());
        queued.push(cancelled("stop", false));
        assert_eq!(effects(&queued), vec![]);
    }
}
