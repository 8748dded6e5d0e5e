//! `cancel`, `pause`, `resume`: what an operator does to a run as a whole.
//!
//! A cancel ends the run at once unless an agent holds an attempt and the cancel is
//! graceful: then the agent is told and has `graceful_timeout_ms` to stop (reporting
//! `failed` with any kind) before the cancel is forced. Pending retries and approvals go
//! with the run. A pause stops new dispatches (a first attempt after approval, a retry,
//! a task an agent took while paused) until resume; the attempt in hand goes on.

use osp_protocol::scheduler::{Cancel, CancelRequested, Cancelled, Pause, Paused, Resumed, RunEvent};
use osp_protocol::{Error, Timestamp};

use super::{attempts, illegal};
use crate::run::{Phase, Run};

pub(super) fn cancel(run: &Run, cancel: &Cancel, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    let cancelled = |forced| RunEvent::Cancelled(Cancelled { reason: cancel.reason.clone(), forced });
    Ok(match &run.phase {
        Phase::Ended(_) | Phase::New => return Err(illegal(run, "cancel", "it has ended")),
        // Already being cancelled: a graceful cancel again changes nothing; a forced one forces.
        Phase::Cancelling { .. } if cancel.graceful => vec![],
        Phase::Cancelling { .. } => vec![cancelled(true)],
        Phase::Running { .. } | Phase::AwaitingInput { .. } if !cancel.graceful => vec![cancelled(true)],
        Phase::Running { .. } | Phase::AwaitingInput { .. } => vec![RunEvent::CancelRequested(CancelRequested {
            reason: cancel.reason.clone(),
            deadline: now.plus_millis(cancel.graceful_timeout_ms),
        })],
        // A workflow ends at once; its steps' runs are cancelled after it, gracefully
        // when the cancel is.
        Phase::Orchestrating => vec![cancelled(!cancel.graceful)],
        // No agent holds it: nothing to wait for.
        Phase::AwaitingApproval
        | Phase::Ready { .. }
        | Phase::Queued { .. }
        | Phase::RetryWait { .. }
        | Phase::Checking { .. } => vec![cancelled(false)],
    })
}

pub(super) fn pause(run: &Run, pause: &Pause) -> Result<Vec<RunEvent>, Error> {
    if run.ended() {
        return Err(illegal(run, "pause", "it has ended"));
    }
    if run.paused {
        return Err(illegal(run, "pause", "it is paused already"));
    }
    Ok(vec![RunEvent::Paused(Paused { reason: pause.reason.clone() })])
}

pub(super) fn resume(run: &Run, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    if run.ended() {
        return Err(illegal(run, "resume", "it has ended"));
    }
    if !run.paused {
        return Err(illegal(run, "resume", "it is not paused"));
    }
    let mut events = vec![RunEvent::Resumed(Resumed {})];
    match run.phase {
        // Held back while paused: dispatch it now.
        Phase::Ready { attempt } => {
            let dispatch = run.nth_attempt(attempt).map_or(0, |a| a.dispatches) + 1;
            events.push(attempts::dispatch(&run.submission.options, attempt, dispatch, now));
        }
        // A retry whose delay ended during the pause.
        Phase::RetryWait { attempt, due_at } if due_at <= now => {
            events.push(attempts::dispatch(&run.submission.options, attempt, 1, now));
        }
        _ => {}
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use osp_protocol::scheduler::{Backoff, CancelRequested, Cancelled, Resumed, RunEvent};

    #[test]
    fn cancel_before_an_agent_holds_it_ends_the_run_at_once() {
        for history in [
            vec![submitted(options()), dispatched(1, 1)],
            submit_history(with_approval(&[], 1, None, false)),
            vec![submitted(options()), dispatched(1, 1), paused()],
        ] {
            given_run(history).when(&cancel(true)).then(vec![cancelled("stop", false)]);
        }
    }

    #[test]
    fn a_pending_retry_is_cancelled_with_the_run() {
        let options = with_retry(3, 60_000, Backoff::None, None);
        let history = [submitted(options.clone()), dispatched(1, 1), started(1, "a1")];
        let mut history = history.to_vec();
        history.extend(given_run(history.clone()).when(&failed_report(1, "a1", "error", true)).events());
        assert!(view_after(&history).retry_at.is_some());
        given_run(history.clone()).when(&cancel(false)).then(vec![cancelled("stop", false)]);
        history.push(cancelled("stop", false));
        // The retry's timer firing later changes nothing.
        given_run(history).when(&timer(super::super::TimerKind::Retry, 2)).then(vec![]);
    }

    #[test]
    fn graceful_cancel_asks_the_agent_then_forced_cancel_forces() {
        let running = vec![submitted(options()), dispatched(1, 1), started(1, "a1")];
        given_run(running.clone()).when(&cancel(true)).then(vec![RunEvent::CancelRequested(CancelRequested {
            reason: "stop".into(),
            deadline: NOW.plus_millis(5000),
        })]);
        given_run(running.clone()).when(&cancel(false)).then(vec![cancelled("stop", true)]);
        let mut cancelling = running;
        cancelling.push(RunEvent::CancelRequested(CancelRequested { reason: "stop".into(), deadline: NOW }));
        given_run(cancelling.clone()).when(&cancel(true)).then(vec![]);
        given_run(cancelling.clone()).when(&cancel(false)).then(vec![cancelled("stop", true)]);
        // The agent stops in time: cancelled, not forced.
        let events = given_run(cancelling.clone()).when(&failed_report(1, "a1", "cancelled", true)).events();
        assert_eq!(events.last(), Some(&RunEvent::Cancelled(Cancelled { reason: "stop".into(), forced: false })));
        // It does not: the deadline forces it.
        given_run(cancelling).when(&timer(super::super::TimerKind::Cancel, 1)).then(vec![cancelled("stop", true)]);
    }

    #[test]
    fn an_ended_run_cannot_be_cancelled_paused_or_resumed() {
        let ended = vec![submitted(options()), dispatched(1, 1), started(1, "a1"), completed(1)];
        given_run(ended.clone()).when(&cancel(false)).then_refused("cannot cancel: it is completed");
        given_run(ended.clone()).when(&pause_cmd()).then_refused("cannot pause: it is completed");
        given_run(ended).when(&resume_cmd()).then_refused("cannot resume: it is completed");
    }

    #[test]
    fn resume_of_a_running_run_is_refused_and_pause_twice_too() {
        let running = vec![submitted(options()), dispatched(1, 1), started(1, "a1")];
        let error = given_run(running.clone())
            .when(&resume_cmd())
            .then_refused("cannot resume: it is in-progress; it is not paused");
        assert_eq!(error.code(), "illegal_transition");
        let mut paused_run = running;
        paused_run.push(paused());
        given_run(paused_run.clone()).when(&pause_cmd()).then_refused("paused already");
        given_run(paused_run).when(&resume_cmd()).then(vec![RunEvent::Resumed(Resumed {})]);
    }

    #[test]
    fn a_paused_run_keeps_its_place_and_is_dispatched_on_resume() {
        // An agent took the task while paused: it gives it back, resume dispatches again.
        let history = vec![submitted(options()), dispatched(1, 1), paused()];
        let events = given_run(history.clone()).when(&started_report(1, "a1")).events();
        assert!(matches!(events.as_slice(), [RunEvent::Deferred(d)] if d.attempt == 1));
        let mut history = history;
        history.extend(events);
        given_run(history).when(&resume_cmd()).then(vec![RunEvent::Resumed(Resumed {}), dispatched(1, 2)]);
        // A retry that fell due during the pause is dispatched on resume.
        let options = with_retry(2, 1000, Backoff::None, None);
        let mut history = vec![submitted(options.clone()), dispatched(1, 1), started(1, "a1"), paused()];
        history.extend(given_run(history.clone()).when(&failed_report(1, "a1", "error", true)).events());
        given_run(history.clone()).when(&timer(super::super::TimerKind::Retry, 2)).then(vec![]);
        let later = NOW.plus_millis(2000);
        given_run(history).when_at(&resume_cmd(), later).then(vec![RunEvent::Resumed(Resumed {}), dispatched(2, 1)]);
    }
}
