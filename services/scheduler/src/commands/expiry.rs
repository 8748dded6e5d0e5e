//! The runtime's own findings: a timer fired (timeout, retry delay, approval expiry,
//! graceful-cancel deadline), or the agent holding an attempt was lost (silent, or
//! marked offline by the registry).
//!
//! A timer is a hint: it may fire late, twice (the durable timer and the in-memory one),
//! or after the state moved on. Each decision checks that the state still waits for it
//! and that its time has come; otherwise it changes nothing.

use osp_protocol::scheduler::{
    ApprovalExpired, Approved, Cancelled, Failed, FailureCause, OnTimeout, RunEvent, TaskError, TimedOut,
};
use osp_protocol::Timestamp;

use super::{attempts, checks, TimerFired, TimerKind};
use crate::run::{Phase, Run};

/// Clock differences between instances tolerated when judging whether a time has come.
const CLOCK_SLACK_MS: u64 = 50;

/// How the agent was lost.
pub(super) enum Lost {
    /// No heartbeat for the run's heartbeat timeout.
    Heartbeat {
        /// How long.
        silent_ms: u64,
    },
    /// The registry marked it offline.
    Offline,
}

pub(super) fn timer(run: &Run, timer: &TimerFired, now: Timestamp) -> Vec<RunEvent> {
    let due = |at: Option<Timestamp>| at.is_some_and(|at| at <= now.plus_millis(CLOCK_SLACK_MS));
    match (timer.kind, &run.phase) {
        (TimerKind::Timeout, Phase::Orchestrating) => match &run.workflow {
            Some(workflow) if !workflow.timed_out && due(workflow.deadline) => workflow_timed_out(run),
            _ => vec![],
        },
        (TimerKind::Timeout, phase) => {
            let active = match phase {
                Phase::Queued { attempt, .. }
                | Phase::Running { attempt, .. }
                | Phase::AwaitingInput { attempt, .. } => *attempt == timer.n,
                _ => false,
            };
            match run.nth_attempt(timer.n) {
                Some(attempt) if active && !attempt.timed_out && due(attempt.deadline) => timed_out(run, timer.n, now),
                _ => vec![],
            }
        }
        (TimerKind::Retry, Phase::RetryWait { attempt, due_at })
            if *attempt == timer.n && !run.paused && due(Some(*due_at)) =>
        {
            vec![attempts::dispatch(&run.submission.options, timer.n, 1, now)]
        }
        (TimerKind::Approval, Phase::AwaitingApproval) => match &run.approval {
            Some(approval) if due(approval.expires_at) => {
                let approvals = approval.decisions.iter().filter(|d| d.approved).count() as u32;
                let auto_approved = approval.auto_approve_on_timeout;
                let mut events = vec![RunEvent::ApprovalExpired(ApprovalExpired { approvals, auto_approved })];
                if auto_approved {
                    events.push(RunEvent::Approved(Approved { by: vec![], on_expiry: true }));
                    events.extend(attempts::dispatch_unless_paused(run, 1, now));
                } else {
                    let waited = run.submission.options.approval.as_ref().and_then(|a| a.timeout_ms).unwrap_or(0);
                    events.push(RunEvent::Cancelled(Cancelled {
                        reason: format!(
                            "approval expired after {waited} ms with {approvals} of {} approvals",
                            approval.required
                        ),
                        forced: false,
                    }));
                }
                events
            }
            _ => vec![],
        },
        (TimerKind::Check, Phase::Checking { attempt }) if *attempt == timer.n => {
            checks::deadline_passed(run, timer.n, now.plus_millis(CLOCK_SLACK_MS))
        }
        (TimerKind::Cancel, Phase::Cancelling { reason, .. }) if due(run.cancel_deadline) => {
            vec![RunEvent::Cancelled(Cancelled { reason: reason.clone(), forced: true })]
        }
        _ => vec![],
    }
}

fn timed_out(run: &Run, attempt: u32, now: Timestamp) -> Vec<RunEvent> {
    let Some(timeout) = &run.submission.options.timeout else { return vec![] };
    let mut events = vec![RunEvent::TimedOut(TimedOut { attempt, action: timeout.on_timeout, after_ms: timeout.ms })];
    match timeout.on_timeout {
        OnTimeout::Continue => {}
        OnTimeout::Cancel => events.push(RunEvent::Cancelled(Cancelled {
            reason: format!("attempt {attempt} timed out after {} ms", timeout.ms),
            forced: run.phase.held().is_some(),
        })),
        OnTimeout::Fail => {
            let error = TaskError {
                kind: FailureCause::Timeout.kind().into(),
                message: format!("attempt {attempt} timed out after {} ms", timeout.ms),
                details: None,
            };
            events.extend(attempts::fail(run, attempt, error, true, FailureCause::Timeout, now));
        }
    }
    events
}

/// A workflow run's timeout fired: record it, then fail or cancel the run (its steps'
/// runs are cancelled after it), or go on.
fn workflow_timed_out(run: &Run) -> Vec<RunEvent> {
    let Some(timeout) = &run.submission.options.timeout else { return vec![] };
    let message = format!("the workflow timed out after {} ms", timeout.ms);
    let mut events =
        vec![RunEvent::TimedOut(TimedOut { attempt: 0, action: timeout.on_timeout, after_ms: timeout.ms })];
    match timeout.on_timeout {
        OnTimeout::Continue => {}
        OnTimeout::Cancel => events.push(RunEvent::Cancelled(Cancelled { reason: message, forced: false })),
        OnTimeout::Fail => events.push(RunEvent::Failed(Failed {
            error: TaskError { kind: FailureCause::Timeout.kind().into(), message, details: None },
            attempts: 0,
        })),
    }
    events
}

pub(super) fn agent_lost(run: &Run, attempt: u32, agent: &str, lost: Lost, now: Timestamp) -> Vec<RunEvent> {
    if run.phase.held() != Some((attempt, agent)) {
        return vec![];
    }
    if let Phase::Cancelling { reason, .. } = &run.phase {
        return vec![RunEvent::Cancelled(Cancelled { reason: reason.clone(), forced: true })];
    }
    let (cause, message) = match lost {
        Lost::Heartbeat { silent_ms } => {
            (FailureCause::Heartbeat, format!("agent {agent:?} sent no heartbeat for {silent_ms} ms"))
        }
        Lost::Offline => (FailureCause::AgentOffline, format!("the registry marked agent {agent:?} offline")),
    };
    let error = TaskError { kind: cause.kind().into(), message, details: None };
    attempts::fail(run, attempt, error, true, cause, now)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{RunCommand, TimerKind};
    use osp_protocol::scheduler::{FailureCause, RunEvent};

    fn running(options: osp_protocol::scheduler::RunOptions) -> Vec<RunEvent> {
        let mut history = submit_history(options);
        history.push(started(1, "a1"));
        history
    }

    #[test]
    fn each_timeout_action() {
        let later = NOW.plus_millis(1000);
        let events =
            given_run(running(with_timeout(1000, "fail"))).when_at(&timer(TimerKind::Timeout, 1), later).events();
        assert!(
            matches!(events.as_slice(), [RunEvent::TimedOut(_), RunEvent::AttemptFailed(f), RunEvent::Failed(_)] if f.cause == FailureCause::Timeout)
        );
        let events =
            given_run(running(with_timeout(1000, "cancel"))).when_at(&timer(TimerKind::Timeout, 1), later).events();
        assert!(matches!(events.as_slice(), [RunEvent::TimedOut(_), RunEvent::Cancelled(c)] if c.forced));
        let history = running(with_timeout(1000, "continue"));
        let events = given_run(history.clone()).when_at(&timer(TimerKind::Timeout, 1), later).events();
        assert!(matches!(events.as_slice(), [RunEvent::TimedOut(_)]));
        let mut continued = history;
        continued.extend(events);
        given_run(continued.clone()).when_at(&timer(TimerKind::Timeout, 1), later).then(vec![]);
        given_run(continued).when(&completed_report(1, "a1")).then(vec![completed(1)]);
    }

    #[test]
    fn a_timer_before_its_time_or_for_an_older_attempt_changes_nothing() {
        let history = running(with_timeout(1000, "fail"));
        given_run(history.clone()).when(&timer(TimerKind::Timeout, 1)).then(vec![]);
        given_run(history.clone()).when_at(&timer(TimerKind::Timeout, 2), NOW.plus_millis(5000)).then(vec![]);
        // A timer payload is input: attempt 0 names no attempt, and is no panic.
        for kind in [TimerKind::Timeout, TimerKind::Retry, TimerKind::Approval, TimerKind::Cancel] {
            given_run(history.clone()).when_at(&timer(kind, 0), NOW.plus_millis(5000)).then(vec![]);
        }
    }

    #[test]
    fn a_timeout_with_retries_left_retries_and_the_retry_gets_the_whole_timeout() {
        let mut options = with_timeout(1000, "fail");
        options.retry = with_retry(2, 0, osp_protocol::scheduler::Backoff::None, None).retry;
        let later = NOW.plus_millis(1000);
        let events = given_run(running(options)).when_at(&timer(TimerKind::Timeout, 1), later).events();
        let Some(RunEvent::Dispatched(dispatched)) = events.last() else { panic!("{events:?}") };
        assert_eq!((dispatched.attempt, dispatched.deadline), (2, Some(later.plus_millis(1000))));
    }

    #[test]
    fn a_lost_agent_fails_its_attempt_once() {
        let lost = RunCommand::HeartbeatLost { attempt: 1, agent: "a1".into(), silent_ms: 900 };
        let events = given_run(running(options())).when(&lost).events();
        assert!(
            matches!(events.as_slice(), [RunEvent::AttemptFailed(f), RunEvent::Failed(_)] if f.cause == FailureCause::Heartbeat && f.error.kind == "heartbeat")
        );
        let mut history = running(options());
        history.extend(events);
        given_run(history).when(&lost).then(vec![]);
        let offline = RunCommand::AgentOffline { attempt: 1, agent: "a2".into() };
        given_run(running(options())).when(&offline).then(vec![]);
        let offline = RunCommand::AgentOffline { attempt: 1, agent: "a1".into() };
        let events = given_run(running(options())).when(&offline).events();
        assert!(matches!(&events[0], RunEvent::AttemptFailed(f) if f.cause == FailureCause::AgentOffline));
    }
}
