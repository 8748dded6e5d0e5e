//! `submit`: create a run. Submitting the same run id again with the same content
//! changes nothing (the reply is the run as it is); with other content it is refused.
//!
//! A run of one task is dispatched in the same event; a workflow run starts its first
//! steps in a decision of its own ([`super::steps`]), which the submit's event causes.

use osp_protocol::scheduler::{ApprovalRequested, RunEvent, Submit, Submitted, Workflow};
use osp_protocol::{Error, Timestamp};

use super::{attempts, checks};
use crate::run::Run;

pub(super) fn decide(run: &Run, submit: &Submit, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    if run.cancelled_unsubmitted() {
        // A workflow step's run its parent cancelled before the submit came: stays so.
        return Ok(vec![]);
    }
    if run.exists() {
        let submitted = &run.submission;
        let capability = submit.capability.as_ref().map(ToString::to_string).unwrap_or_default();
        let same = submitted.capability == capability
            && submitted.workflow.as_ref() == submit.workflow.as_deref()
            && submitted.parent == submit.parent
            && submitted.input == submit.input
            && submitted.options == submit.options
            && submitted.metadata == submit.metadata;
        return match same {
            true => Ok(vec![]),
            false => Err(Error::Conflict {
                field: "run_id".into(),
                value: submit.run_id.to_string(),
                reason: "a run with this id was submitted with other content; choose another id".into(),
            }),
        };
    }
    let submitted = |dispatched| {
        RunEvent::Submitted(Submitted {
            capability: submit.capability.clone(),
            workflow: submit.workflow.clone(),
            parent: submit.parent.clone(),
            input: submit.input.clone(),
            options: submit.options.clone(),
            metadata: submit.metadata.clone(),
            dispatched,
        })
    };
    Ok(match &submit.options.approval {
        Some(approval) => vec![
            submitted(None),
            RunEvent::ApprovalRequested(ApprovalRequested {
                message: approval.message.clone(),
                approvers: approval.approvers.clone().unwrap_or_default(),
                required: approval.required_approvals,
                expires_at: approval.timeout_ms.map(|ms| now.plus_millis(ms)),
                auto_approve_on_timeout: approval.auto_approve_on_timeout,
            }),
        ],
        // A check step has no agent: its input is checked at once.
        None if matches!(submit.workflow.as_deref(), Some(Workflow::Check(_))) => {
            let mut events = vec![submitted(None)];
            events.extend(checks::check_run(&submit.run_id, submit.workflow.as_deref(), &submit.input, now));
            events
        }
        None if submit.workflow.is_some() => vec![submitted(None)],
        // The common case is one event: submitting is a single append.
        None => vec![submitted(Some(attempts::dispatched(&submit.options, 1, 1, now)))],
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{submitted as submitted_event, *};
    use osp_protocol::scheduler::{Dispatched, RunEvent, Submitted};

    #[test]
    fn a_submit_dispatches_the_first_attempt_in_the_same_event() {
        let events = given_run([]).when(&submit(options())).events();
        let [RunEvent::Submitted(submitted)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(submitted.dispatched, Some(Dispatched { attempt: 1, dispatch: 1, deadline: None }));
        let run = given_run(events).state().clone();
        assert_eq!(run.phase, crate::run::Phase::Queued { attempt: 1, dispatch: 1 });
        // The two-event form means the same.
        let two = given_run([submitted_event(options()), dispatched(1, 1)]).state().clone();
        assert_eq!(two.phase, run.phase);
        assert_eq!(two.attempts.len(), 1);
        assert_eq!(two.attempts[0].dispatches, run.attempts[0].dispatches);
    }

    #[test]
    fn a_timeout_gives_the_attempt_a_deadline() {
        let options = with_timeout(5000, "fail");
        let events = given_run([]).when(&submit(options.clone())).events();
        let RunEvent::Submitted(Submitted { dispatched: Some(Dispatched { deadline: Some(deadline), .. }), .. }) =
            &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!(deadline.millis(), NOW.millis() + 5000);
    }

    #[test]
    fn the_same_submission_again_changes_nothing_and_another_is_a_conflict() {
        given_run([submitted_event(options()), dispatched(1, 1)]).when(&submit(options())).then(vec![]);
        let error = given_run([submitted_event(options()), dispatched(1, 1)])
            .when(&submit(with_timeout(10, "fail")))
            .then_refused("conflicts");
        assert_eq!(error.field(), Some("run_id"));
    }

    #[test]
    fn approval_comes_before_dispatch() {
        let options = with_approval(&["ann", "bob"], 2, Some(60_000), false);
        let events = given_run([]).when(&submit(options)).events();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], RunEvent::ApprovalRequested(r) if r.required == 2 && r.expires_at.is_some()));
    }
}
