//! What a steering command (cancel, pause, resume, approve, reject, answer) did, said in
//! words. The run's new status alone (`gate: pending` after an approval) was read as
//! "not approved" by the person who had just approved.

use std::time::Duration;

use osp_protocol::scheduler::queries::{ApprovalState, ApprovalView, RunStatus};
use osp_protocol::scheduler::RunOutcome;

/// A steering command as it was given, with what its sentence needs beyond the outcome.
#[derive(Clone, Copy, Debug)]
pub enum Steer<'a> {
    /// `cancel`, and how long the agent was given to stop.
    Cancel { graceful: Option<Duration> },
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `approve`, and the run's approval as it stands after it (the count is not in the
    /// outcome).
    Approve { approval: Option<&'a ApprovalView> },
    /// `reject`.
    Reject,
    /// `answer`, and the question it named, if any.
    Answer { request_id: Option<&'a str> },
}

/// The sentence for `steer` having led to `outcome`: `approved gate (1 of 2 approvals);
/// waiting for 1 more`.
pub fn said(steer: Steer<'_>, outcome: &RunOutcome) -> String {
    let (id, status) = (&outcome.run_id, outcome.status);
    let now = state(status, outcome.paused);
    match steer {
        Steer::Cancel { .. } if status == RunStatus::Cancelled => format!("cancelled {id}"),
        Steer::Cancel { graceful: Some(wait) } => format!(
            "cancelling {id}: its agent has {} to stop, then the cancel is forced",
            humantime::format_duration(wait)
        ),
        Steer::Cancel { graceful: None } => format!("asked to cancel {id}; it is {now}"),
        Steer::Pause => format!(
            "paused {id}: no new work is dispatched until `osp run resume {id}`; it is {}",
            state(status, false)
        ),
        Steer::Resume => format!("resumed {id}; it is {now}"),
        Steer::Approve { approval: Some(approval) } => {
            let given = approval.decisions.iter().filter(|decision| decision.approved).count() as u32;
            let counted = format!("approved {id} ({given} of {} approvals)", approval.required);
            match status {
                RunStatus::Awaiting if approval.state == ApprovalState::Pending => {
                    format!("{counted}; waiting for {} more", approval.required.saturating_sub(given))
                }
                _ => format!("{counted}; {}", goes_on(status, outcome.paused, &now)),
            }
        }
        Steer::Approve { approval: None } => format!("approved {id}; it is {now}"),
        Steer::Reject => match status {
            RunStatus::Cancelled => format!("rejected {id}; the run is cancelled"),
            RunStatus::Failed => format!("rejected {id}; the run failed (its output had failed its checks)"),
            _ => format!("rejected {id}; it is {now}"),
        },
        Steer::Answer { request_id } => {
            let question = request_id.map_or_else(|| "the open question".to_owned(), |id| format!("question {id}"));
            format!("answered {question} of {id}; {}", goes_on(status, outcome.paused, &now))
        }
    }
}

/// What became of a run a person let go on.
fn goes_on(status: RunStatus, paused: bool, now: &str) -> String {
    match status {
        RunStatus::Pending | RunStatus::InProgress if paused => {
            "the run goes on once resumed (it is paused)".to_owned()
        }
        RunStatus::Pending | RunStatus::InProgress => "the run goes on".to_owned(),
        RunStatus::Completed => "the run completed".to_owned(),
        _ => format!("it is {now}"),
    }
}

/// A status in words, for "it is ...".
fn state(status: RunStatus, paused: bool) -> String {
    let words = match status {
        RunStatus::Pending => "waiting to be dispatched",
        RunStatus::InProgress => "in progress",
        RunStatus::Awaiting => "awaiting an approval or an answer",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    };
    match paused && !status.is_final() {
        true => format!("{words}, paused"),
        false => words.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::scheduler::queries::DecisionView;
    use osp_protocol::Timestamp;

    use super::*;

    fn outcome(status: RunStatus, paused: bool) -> RunOutcome {
        RunOutcome { run_id: "gate".into(), status, paused, created: false }
    }

    fn approval(required: u32, approved_by: &[&str], state: ApprovalState) -> ApprovalView {
        ApprovalView {
            message: "ship it?".into(),
            approvers: vec![],
            required,
            expires_at: None,
            auto_approve_on_timeout: false,
            decisions: approved_by
                .iter()
                .map(|approver| DecisionView {
                    approver: (*approver).into(),
                    approved: true,
                    reason: None,
                    at: Timestamp(0),
                })
                .collect(),
            state,
        }
    }

    #[test]
    fn an_approval_says_how_many_and_what_next() {
        let one = approval(1, &["user:ann"], ApprovalState::Approved);
        let approve = Steer::Approve { approval: Some(&one) };
        assert_eq!(
            said(approve, &outcome(RunStatus::Pending, false)),
            "approved gate (1 of 1 approvals); the run goes on"
        );
        assert_eq!(
            said(approve, &outcome(RunStatus::Pending, true)),
            "approved gate (1 of 1 approvals); the run goes on once resumed (it is paused)"
        );
        assert_eq!(
            said(approve, &outcome(RunStatus::Completed, false)),
            "approved gate (1 of 1 approvals); the run completed"
        );
        let half = approval(2, &["user:ann"], ApprovalState::Pending);
        assert_eq!(
            said(Steer::Approve { approval: Some(&half) }, &outcome(RunStatus::Awaiting, false)),
            "approved gate (1 of 2 approvals); waiting for 1 more"
        );
    }

    #[test]
    fn every_steering_command_says_what_it_did() {
        let cases = [
            (Steer::Reject, RunStatus::Cancelled, false, "rejected gate; the run is cancelled"),
            (Steer::Cancel { graceful: None }, RunStatus::Cancelled, false, "cancelled gate"),
            (
                Steer::Cancel { graceful: Some(Duration::from_secs(5)) },
                RunStatus::InProgress,
                false,
                "cancelling gate: its agent has 5s to stop, then the cancel is forced",
            ),
            (
                Steer::Pause,
                RunStatus::Awaiting,
                true,
                "paused gate: no new work is dispatched until `osp run resume gate`; it is awaiting an approval or an answer",
            ),
            (Steer::Resume, RunStatus::InProgress, false, "resumed gate; it is in progress"),
            (Steer::Answer { request_id: None }, RunStatus::InProgress, false, "answered the open question of gate; the run goes on"),
            (
                Steer::Answer { request_id: Some("q1-2") },
                RunStatus::Awaiting,
                false,
                "answered question q1-2 of gate; it is awaiting an approval or an answer",
            ),
        ];
        for (steer, status, paused, expected) in cases {
            assert_eq!(said(steer, &outcome(status, paused)), expected, "{steer:?}");
        }
    }
}
