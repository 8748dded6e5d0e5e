//! What the agent holding an attempt reports, and the answer to its question.
//!
//! An attempt belongs to the agent whose `started` was accepted first; reports of any
//! other agent, or about an attempt that is over (timed out, retried, cancelled), are
//! refused, which tells a late agent to stop. A `started` of a paused run is accepted as
//! a deferral: the agent gives the task back and resume dispatches it again.

use osp_protocol::scheduler::{
    Answer, AttemptFailed, Cancelled, Deferred, FailureCause, InputAnswered, InputRequested, Logged, Progressed,
    Report, ReportKind, RunEvent, Started,
};
use osp_protocol::{Error, Timestamp};

use super::{attempts, checks, illegal};
use crate::run::{Phase, Run};

pub(super) fn decide(run: &Run, report: &Report, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    let name = report.kind.name();
    if run.ended() {
        return Err(illegal(run, name, "it has ended; stop working on it"));
    }
    if let ReportKind::Started = report.kind {
        return started(run, report);
    }
    match run.phase.held() {
        Some((attempt, agent)) if attempt == report.attempt && agent == report.agent => {}
        Some((attempt, agent)) if attempt == report.attempt => {
            return Err(illegal(run, name, format!("attempt {attempt} is held by agent {agent:?}")))
        }
        _ => {
            return Err(illegal(
                run,
                name,
                format!("attempt {} is not in progress; stop working on it", report.attempt),
            ))
        }
    }
    let attempt = report.attempt;
    Ok(match &report.kind {
        ReportKind::Started => unreachable!("handled above"),
        ReportKind::Progress { current, total, message } => {
            vec![RunEvent::Progressed(Progressed {
                attempt,
                current: *current,
                total: *total,
                message: message.clone(),
            })]
        }
        ReportKind::Log { level, message } => {
            vec![RunEvent::Logged(Logged { attempt, level: level.clone(), message: message.clone() })]
        }
        ReportKind::Ask { request_id, question } => match &run.phase {
            Phase::Running { .. } => vec![RunEvent::InputRequested(InputRequested {
                attempt,
                request_id: request_id.clone(),
                question: question.clone(),
            })],
            Phase::AwaitingInput { request_id: open, .. } if open == request_id => vec![],
            Phase::AwaitingInput { request_id: open, .. } => {
                return Err(illegal(run, name, format!("it waits for the answer to {open:?} already")))
            }
            _ => return Err(illegal(run, name, "it is being cancelled")),
        },
        ReportKind::Completed { output } => checks::completed(run, attempt, output, now),
        ReportKind::Failed { error, retryable } => match &run.phase {
            // The agent stopped as a graceful cancel asked.
            Phase::Cancelling { reason, .. } => vec![
                RunEvent::AttemptFailed(AttemptFailed {
                    attempt,
                    error: error.clone(),
                    retryable: *retryable,
                    cause: FailureCause::Agent,
                }),
                RunEvent::Cancelled(Cancelled { reason: reason.clone(), forced: false }),
            ],
            _ => attempts::fail(run, attempt, error.clone(), *retryable, FailureCause::Agent, now),
        },
    })
}

fn started(run: &Run, report: &Report) -> Result<Vec<RunEvent>, Error> {
    match &run.phase {
        Phase::Queued { attempt, .. } if *attempt == report.attempt => Ok(match run.paused {
            true => vec![RunEvent::Deferred(Deferred { attempt: *attempt, agent: report.agent.clone() })],
            false => vec![RunEvent::Started(Started { attempt: *attempt, agent: report.agent.clone() })],
        }),
        // Sent again (a lost reply): it is this agent's already.
        _ if run.phase.held() == Some((report.attempt, report.agent.as_str())) => Ok(vec![]),
        _ => match run.phase.held() {
            Some((attempt, agent)) if attempt == report.attempt => {
                Err(illegal(run, "start", format!("attempt {attempt} was started by agent {agent:?}")))
            }
            _ => Err(illegal(run, "start", format!("attempt {} is not waiting for an agent", report.attempt))),
        },
    }
}

pub(super) fn answer(run: &Run, answer: &Answer) -> Result<Vec<RunEvent>, Error> {
    let Phase::AwaitingInput { request_id, .. } = &run.phase else {
        return Err(illegal(run, "answer", "it is not waiting for an answer"));
    };
    if answer.request_id.as_ref().is_some_and(|given| given != request_id) {
        return Err(Error::NotFound {
            field: "request_id".into(),
            value: answer.request_id.clone().unwrap_or_default(),
            reason: format!("the open question is {request_id:?}"),
        });
    }
    Ok(vec![RunEvent::InputAnswered(InputAnswered { request_id: request_id.clone(), answer: answer.answer.clone() })])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use osp_protocol::scheduler::queries::{AttemptOutcome, RunStatus};
    use osp_protocol::scheduler::{InputAnswered, RunEvent};

    fn running() -> Vec<RunEvent> {
        vec![submitted(options()), dispatched(1, 1), started(1, "a1")]
    }

    #[test]
    fn the_first_agent_to_start_an_attempt_owns_it() {
        let queued = vec![submitted(options()), dispatched(1, 1)];
        given_run(queued).when(&started_report(1, "a1")).then(vec![started(1, "a1")]);
        given_run(running()).when(&started_report(1, "a1")).then(vec![]);
        given_run(running()).when(&started_report(1, "a2")).then_refused("attempt 1 was started by agent \"a1\"");
        given_run(running()).when(&progress_report(1, "a2")).then_refused("held by agent \"a1\"");
        given_run(running()).when(&started_report(2, "a2")).then_refused("attempt 2 is not waiting for an agent");
    }

    #[test]
    fn reports_fold_into_status_progress_logs_and_result() {
        let mut history = running();
        history.extend(given_run(history.clone()).when(&progress_report(1, "a1")).events());
        history.extend(given_run(history.clone()).when(&log_report(1, "a1")).events());
        let view = view_after(&history);
        assert_eq!(view.status(), RunStatus::InProgress);
        assert_eq!(view.progress.as_ref().map(|p| (p.current, p.total)), Some((1, Some(2))));
        assert_eq!((view.logs.len(), view.log_count), (1, 1));
        history.extend(given_run(history.clone()).when(&completed_report(1, "a1")).events());
        let view = view_after(&history);
        assert_eq!(view.status(), RunStatus::Completed);
        assert_eq!(view.attempts[0].outcome, Some(AttemptOutcome::Completed));
        given_run(history).when(&progress_report(1, "a1")).then_refused("it has ended");
    }

    #[test]
    fn a_question_makes_the_run_wait_and_the_answer_resumes_it() {
        let mut history = running();
        history.extend(given_run(history.clone()).when(&ask_report(1, "a1", "q1")).events());
        assert_eq!(given_run(history.clone()).state().status(), RunStatus::Awaiting);
        given_run(history.clone()).when(&ask_report(1, "a1", "q1")).then(vec![]);
        given_run(history.clone()).when(&answer_cmd(Some("q9"))).then_refused("request_id \"q9\" not found");
        let events = given_run(history.clone()).when(&answer_cmd(None)).events();
        assert_eq!(
            events,
            vec![RunEvent::InputAnswered(InputAnswered { request_id: "q1".into(), answer: "yes".into() })]
        );
        history.extend(events);
        let view = view_after(&history);
        assert_eq!(view.status(), RunStatus::InProgress);
        assert_eq!(view.inputs[0].answer, Some("yes".into()));
        given_run(history).when(&answer_cmd(None)).then_refused("not waiting for an answer");
    }
}
