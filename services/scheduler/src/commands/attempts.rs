//! Attempts: dispatching one, and what follows when one fails — a retry after the
//! backoff's delay, or the run's failure.

use osp_protocol::scheduler::{
    AttemptFailed, Dispatched, Failed, FailureCause, RetryScheduled, RunEvent, RunOptions, TaskError,
};
use osp_protocol::Timestamp;

use crate::run::Run;

/// Puts attempt `attempt` on the work queue (its `dispatch`-th time), with its deadline
/// if the run has a timeout: every attempt gets the whole timeout again.
pub(super) fn dispatch(options: &RunOptions, attempt: u32, dispatch: u32, now: Timestamp) -> RunEvent {
    RunEvent::Dispatched(dispatched(options, attempt, dispatch, now))
}

/// What dispatching attempt `attempt` (its `dispatch`-th time) records.
pub(super) fn dispatched(options: &RunOptions, attempt: u32, dispatch: u32, now: Timestamp) -> Dispatched {
    let deadline = options.timeout.as_ref().map(|timeout| now.plus_millis(timeout.ms));
    Dispatched { attempt, dispatch, deadline }
}

/// Dispatches attempt `attempt` now, unless the run is paused (then resume does). A
/// workflow run has no task of its own: its steps start in a decision of their own.
pub(super) fn dispatch_unless_paused(run: &Run, attempt: u32, now: Timestamp) -> Vec<RunEvent> {
    match run.paused || run.workflow.is_some() {
        true => vec![],
        false => vec![dispatch(&run.submission.options, attempt, 1, now)],
    }
}

/// Attempt `attempt` failed: record it, then retry (after the backoff's delay) if the
/// policy allows, else fail the run.
pub(super) fn fail(
    run: &Run,
    attempt: u32,
    error: TaskError,
    retryable: bool,
    cause: FailureCause,
    now: Timestamp,
) -> Vec<RunEvent> {
    let options = &run.submission.options;
    let retry =
        options.retry.as_ref().filter(|retry| retryable && attempt < retry.attempts && retry.retries(&error.kind));
    let mut events = vec![RunEvent::AttemptFailed(AttemptFailed { attempt, error: error.clone(), retryable, cause })];
    match retry {
        Some(retry) => {
            let delay_ms = retry.delay_after(attempt);
            let next = attempt + 1;
            events.push(RunEvent::RetryScheduled(RetryScheduled {
                attempt: next,
                delay_ms,
                due_at: now.plus_millis(delay_ms),
            }));
            if delay_ms == 0 && !run.paused {
                events.push(dispatch(options, next, 1, now));
            }
        }
        None => events.push(RunEvent::Failed(Failed { error, attempts: attempt })),
    }
    events
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use osp_protocol::scheduler::{Backoff, RunEvent};

    /// The delays recorded for each retry until the run fails, for a policy.
    fn delays(backoff: Backoff, max: Option<u64>) -> Vec<u64> {
        let options = with_retry(5, 1000, backoff, max);
        let mut history = vec![submitted(options.clone()), dispatched(1, 1)];
        let mut found = vec![];
        for attempt in 1..=5 {
            history.push(started(attempt, "a1"));
            let events = given_run(history.clone()).when(&failed_report(attempt, "a1", "error", true)).events();
            match &events[1] {
                RunEvent::RetryScheduled(retry) => {
                    assert_eq!(
                        (retry.attempt, retry.due_at.millis()),
                        (attempt + 1, NOW.millis() + retry.delay_ms as i64)
                    );
                    found.push(retry.delay_ms);
                }
                RunEvent::Failed(failed) => assert_eq!(failed.attempts, 5),
                other => panic!("{other:?}"),
            }
            history.extend(events);
            history.push(dispatched(attempt + 1, 1));
        }
        found
    }

    #[test]
    fn each_backoff_kind_schedules_the_spec_delays() {
        assert_eq!(delays(Backoff::None, None), [1000, 1000, 1000, 1000]);
        assert_eq!(delays(Backoff::Linear, None), [1000, 2000, 3000, 4000]);
        assert_eq!(delays(Backoff::Exponential, None), [1000, 2000, 4000, 8000]);
        assert_eq!(delays(Backoff::Exponential, Some(3000)), [1000, 2000, 3000, 3000]);
    }

    #[test]
    fn a_zero_delay_dispatches_at_once_and_a_permanent_failure_is_not_retried() {
        let options = with_retry(3, 0, Backoff::None, None);
        let history = [submitted(options.clone()), dispatched(1, 1), started(1, "a1")];
        let events = given_run(history.clone()).when(&failed_report(1, "a1", "error", true)).events();
        assert!(
            matches!(events.as_slice(), [RunEvent::AttemptFailed(_), RunEvent::RetryScheduled(_), RunEvent::Dispatched(d)] if d.attempt == 2)
        );
        let events = given_run(history).when(&failed_report(1, "a1", "error", false)).events();
        assert!(matches!(events.as_slice(), [RunEvent::AttemptFailed(_), RunEvent::Failed(_)]));
    }

    #[test]
    fn retry_on_limits_which_failures_are_retried() {
        let mut options = with_retry(3, 0, Backoff::None, None);
        options.retry.as_mut().unwrap().retry_on = Some(vec!["timeout".into()]);
        let history = [submitted(options), dispatched(1, 1), started(1, "a1")];
        let events = given_run(history).when(&failed_report(1, "a1", "quota", true)).events();
        assert!(matches!(events.as_slice(), [RunEvent::AttemptFailed(_), RunEvent::Failed(_)]), "{events:?}");
    }
}
