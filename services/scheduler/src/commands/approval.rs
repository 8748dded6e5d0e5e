//! `approve` and `reject`: the decisions of approvers on a run waiting for approval.
//!
//! The approver is the command's `Osp-Actor`. When the run lists approvers, anyone else
//! is refused (`forbidden`, recorded as a rejection) and does not count; each approver
//! counts once. The `required`-th approval approves the run and dispatches its task; one
//! rejection cancels the run. An approval asked for because an output failed its checks
//! (`checks.onFailure: approval`) decides that output instead: approved, the run completes
//! with it; rejected, the run fails.

use osp_protocol::scheduler::{
    ApprovalDecided, Approved, Cancelled, CommandName, Completed, Decision, Failed, RunEvent, TaskError,
};
use osp_protocol::{Error, Timestamp};

use super::{attempts, illegal};
use crate::run::{Phase, Run};

/// The error kind of a run whose output failed its checks and was then rejected.
pub const CHECK_REJECTED: &str = "check_rejected";

pub(super) fn decide(run: &Run, decision: &Decision, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    let command = if decision.approved { CommandName::Approve } else { CommandName::Reject }.into();
    let (Phase::AwaitingApproval, Some(approval)) = (&run.phase, &run.approval) else {
        return Err(illegal(run, command, "it is not waiting for approval"));
    };
    if !approval.approvers.is_empty() && !approval.approvers.contains(&decision.approver) {
        return Err(Error::Forbidden {
            field: "Osp-Actor header".into(),
            value: decision.approver.clone(),
            reason: format!("is not one of this run's approvers ({})", approval.approvers.join(", ")),
        });
    }
    if approval.decisions.iter().any(|d| d.approver == decision.approver) {
        return Err(Error::Conflict {
            field: "Osp-Actor header".into(),
            value: decision.approver.clone(),
            reason: "has decided on this run already; each approver counts once".into(),
        });
    }
    let mut events = vec![RunEvent::ApprovalDecided(ApprovalDecided {
        approver: decision.approver.clone(),
        approved: decision.approved,
        reason: decision.reason.clone(),
    })];
    let why = decision.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    if let (Some(held), false) = (&run.held, decision.approved) {
        events.push(RunEvent::Failed(Failed {
            error: TaskError {
                kind: CHECK_REJECTED.into(),
                message: format!("the output that failed its checks was rejected by {}{why}", decision.approver),
                details: None,
            },
            attempts: held.attempt,
        }));
        return Ok(events);
    }
    if !decision.approved {
        events.push(RunEvent::Cancelled(Cancelled {
            reason: format!("rejected by {}{why}", decision.approver),
            forced: false,
        }));
        return Ok(events);
    }
    let mut by: Vec<String> = approval.decisions.iter().filter(|d| d.approved).map(|d| d.approver.clone()).collect();
    by.push(decision.approver.clone());
    if by.len() as u32 >= approval.required {
        events.push(RunEvent::Approved(Approved { by, on_expiry: false }));
        match &run.held {
            Some(held) => {
                events.push(RunEvent::Completed(Completed { attempt: held.attempt, output: held.output.clone() }))
            }
            None => events.extend(attempts::dispatch_unless_paused(run, 1, now)),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::TimerKind;
    use osp_protocol::scheduler::{ApprovalDecided, ApprovalExpired, Approved, RunEvent};

    fn waiting(approvers: &[&str], required: u32, auto: bool) -> Vec<RunEvent> {
        submit_history(with_approval(approvers, required, Some(1000), auto))
    }

    fn decided(approver: &str, approved: bool) -> RunEvent {
        RunEvent::ApprovalDecided(ApprovalDecided { approver: approver.into(), approved, reason: None })
    }

    #[test]
    fn two_of_three_approvals_dispatch_and_an_unlisted_approver_does_not_count() {
        let history = waiting(&["ann", "bob", "cid"], 2, false);
        let error = given_run(history.clone()).when(&approve("eve")).then_refused("is not one of this run's approvers");
        assert_eq!((error.code(), error.field()), ("forbidden", Some("Osp-Actor header")));
        given_run(history.clone()).when(&approve("ann")).then(vec![decided("ann", true)]);
        let mut history = history;
        history.push(decided("ann", true));
        given_run(history.clone()).when(&approve("ann")).then_refused("counts once");
        given_run(history.clone()).when(&approve("bob")).then(vec![
            decided("bob", true),
            RunEvent::Approved(Approved { by: vec!["ann".into(), "bob".into()], on_expiry: false }),
            dispatched(1, 1),
        ]);
    }

    #[test]
    fn a_rejection_cancels_the_run_and_records_who_and_why() {
        let events = given_run(waiting(&[], 1, false)).when(&reject("ann", "too risky")).events();
        assert_eq!(
            events[0],
            RunEvent::ApprovalDecided(ApprovalDecided {
                approver: "ann".into(),
                approved: false,
                reason: Some("too risky".into())
            })
        );
        assert_eq!(events[1], cancelled("rejected by ann: too risky", false));
    }

    #[test]
    fn expiry_approves_or_cancels_as_the_options_say() {
        let later = NOW.plus_millis(1000);
        given_run(waiting(&[], 1, false)).when(&timer(TimerKind::Approval, 1)).then(vec![]);
        given_run(waiting(&[], 1, true)).when_at(&timer(TimerKind::Approval, 1), later).then(vec![
            RunEvent::ApprovalExpired(ApprovalExpired { approvals: 0, auto_approved: true }),
            RunEvent::Approved(Approved { by: vec![], on_expiry: true }),
            dispatched(1, 1),
        ]);
        given_run(waiting(&[], 1, false)).when_at(&timer(TimerKind::Approval, 1), later).then(vec![
            RunEvent::ApprovalExpired(ApprovalExpired { approvals: 0, auto_approved: false }),
            cancelled("approval expired after 1000 ms with 0 of 1 approvals", false),
        ]);
    }

    #[test]
    fn approving_a_completed_run_is_an_illegal_transition() {
        let ended = vec![submitted(options()), dispatched(1, 1), started(1, "a1"), completed(1)];
        let error = given_run(ended)
            .when(&approve("ann"))
            .then_refused("cannot approve: it is completed; it is not waiting for approval");
        assert_eq!(error.code(), "illegal_transition");
    }

    #[test]
    fn approval_while_paused_waits_for_resume() {
        let mut history = waiting(&[], 1, false);
        history.push(paused());
        given_run(history).when(&approve("ann")).then(vec![
            decided("ann", true),
            RunEvent::Approved(Approved { by: vec!["ann".into()], on_expiry: false }),
        ]);
    }
}
