//! Events of runs: kind `run`, subject `osp.v1.evt.run.<run_id>`.
//!
//! Each attempt of a run's task has its own trail (`run.dispatched` → `run.started` →
//! `run.progress` / `run.log` / `run.input_*` → `run.completed` or `run.attempt_failed`),
//! every event naming its attempt; what happens to the run as a whole (approval, pause,
//! cancel, timeouts, retries, its end) has events of its own. Who and when are in the
//! envelope (`actor`, `occurred_at`); why is in the payload where there is a why.
//!
//! A workflow run has no attempts of its own: its steps are child runs, recorded as
//! `run.steps_started` and `run.step_ended` on the parent, while each child run has the
//! whole trail of a run of its own.

use serde::{Deserialize, Serialize};

use crate::quality::{Findings, JudgeResult, Opinion, RuleResult};
use crate::registry::Document;
use crate::scheduler::options::{OnTimeout, RunOptions};
use crate::scheduler::queries::RunStatus;
use crate::scheduler::workflow::{ParentLink, Workflow};
use crate::scheduler::TaskError;
use crate::{Timestamp, Token};

/// The error kind of an output that failed its checks.
pub const CHECK_FAILED: &str = "check_failed";

/// The run was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    /// The capability whose agents execute its task; absent for a workflow run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Token>,
    /// The workflow it runs, when it is not a single task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Box<Workflow>>,
    /// The run whose step this one is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// The task's input.
    pub input: Document,
    /// How it runs.
    pub options: RunOptions,
    /// The submitter's own data, kept with the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
    /// A run that needs no approval is dispatched as it is submitted: its first attempt's
    /// dispatch is part of this one event (one append, not an atomic batch of two), and
    /// means what a `run.dispatched` would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched: Option<Dispatched>,
}

/// The run waits for approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequested {
    /// What the approvers are asked.
    pub message: String,
    /// Who may decide; anyone when empty.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// When the request expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// On expiry: approve (true) or cancel.
    pub auto_approve_on_timeout: bool,
}

/// One approver decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDecided {
    /// The command's `Osp-Actor`; each approver counts once.
    pub approver: String,
    /// Approve or reject.
    pub approved: bool,
    /// Why, if they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Approval is complete: the task may be dispatched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approved {
    /// The approvers whose approvals counted (empty when approved on expiry).
    pub by: Vec<String>,
    /// Approved because the request expired with auto-approve.
    pub on_expiry: bool,
}

/// The approval request expired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalExpired {
    /// Approvals received by then.
    pub approvals: u32,
    /// Whether the run was approved because of it (else it is cancelled).
    pub auto_approved: bool,
}

/// An attempt's task was put on the capability's work queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dispatched {
    /// Which attempt, from 1.
    pub attempt: u32,
    /// Which dispatch of that attempt, from 1 (an attempt deferred by a pause is
    /// dispatched again on resume).
    pub dispatch: u32,
    /// When the attempt times out, if the run has a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

/// An agent took a task of a paused run: it gave the task back, and the attempt will
/// be dispatched again on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    /// The attempt given back: dispatched again, as its next dispatch, on resume.
    pub attempt: u32,
    /// The agent that took it.
    pub agent: String,
}

/// An agent started an attempt: from now it owns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// The attempt it took, from 1: this agent's from now until it ends.
    pub attempt: u32,
    /// Its name in the `agents` registry (the report's `agent`), as offline events find it.
    pub agent: String,
}

/// Progress of an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progressed {
    /// Which attempt reported it, from 1 (a run shows the progress of the attempt in hand).
    pub attempt: u32,
    /// Work done.
    pub current: u64,
    /// Work in all, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A log line of an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    /// Which attempt logged it, from 1.
    pub attempt: u32,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
}

/// The agent asked a question; the run waits for an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRequested {
    /// Which attempt asked, from 1; its timeout keeps running while it waits.
    pub attempt: u32,
    /// The question's id: the answer names it.
    pub request_id: String,
    /// Any document, at most 64 KiB encoded, for whoever answers.
    pub question: Document,
}

/// The question was answered (the answer is sent on to the agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputAnswered {
    /// The question's id.
    pub request_id: String,
    /// Any document, at most 64 KiB encoded; sent on to the agent as an `answer` signal.
    pub answer: Document,
}

/// A workflow run started steps, each as a child run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepsStarted {
    /// The steps, in the order they were started.
    pub steps: Vec<StepStarted>,
    /// The steps the workflow is known to have in all, so far (for its progress).
    pub total: u32,
}

/// One step started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStarted {
    /// Its key in the workflow: `classify`, `route:billing`, `subtask:3`, `step:fetch`,
    /// `evaluate:2` …
    pub key: String,
    /// Its child run.
    pub run_id: Token,
    /// What it runs.
    pub step: Workflow,
    /// The child run's input, as the pattern derives it (§17.10 of docs/protocol.md).
    pub input: Document,
}

/// A step's child run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepEnded {
    /// The step's key, as `run.steps_started` gave it.
    pub key: String,
    /// Its child run.
    pub run_id: Token,
    /// `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Its output, when completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Document>,
    /// Its error, when failed (or why it was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// From its start to its end.
    pub duration_ms: u64,
}

/// The run succeeded: its task (or its workflow) is completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    /// The attempt that succeeded (0 for a workflow run, which has no attempts).
    pub attempt: u32,
    /// The run's result: the agent's `completed` output, or what the workflow returns.
    pub output: Document,
}

/// The agent completed the attempt, and the run's `checks` must pass before the run
/// completes: the output is sent to the quality service as audit `audit_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checking {
    /// The attempt that completed, from 1; with the run id, it derives `audit_id`.
    pub attempt: u32,
    /// The audit entry the quality service is asked to record.
    pub audit_id: Token,
    /// The output, held until the checks decide.
    pub output: Document,
    /// When whatever is not checked by then counts as missing evidence.
    pub deadline: Timestamp,
}

/// The checks of an attempt's output decided (from the quality service's audit entry on
/// the log, or from the checks' deadline passing without one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    /// The attempt whose output was checked, as `run.checking` named it.
    pub attempt: u32,
    /// The audit entry.
    pub audit_id: Token,
    /// Its opinion (`disclaimer` when no entry was recorded in time).
    pub opinion: Opinion,
    /// The entry's findings; all zero when no entry was recorded in time.
    pub findings: Findings,
    /// Whether the output passed, by the run's `checks` option.
    pub passed: bool,
    /// The rule results that did not pass (what a retry's feedback names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<RuleResult>,
    /// The judge's result, if it judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeResult>,
    /// Set when no audit entry came in time: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The agent reported the failure.
    Agent,
    /// The run's timeout fired (`onTimeout: fail`).
    Timeout,
    /// The agent stopped sending heartbeats.
    Heartbeat,
    /// The registry marked the agent offline.
    AgentOffline,
    /// The output failed the run's checks (`onFailure: retry`).
    Check,
}

impl FailureCause {
    /// The error kind the runtime gives failures it detects itself.
    pub fn kind(self) -> &'static str {
        match self {
            FailureCause::Agent => "error",
            FailureCause::Timeout => "timeout",
            FailureCause::Heartbeat => "heartbeat",
            FailureCause::AgentOffline => "agent_offline",
            FailureCause::Check => CHECK_FAILED,
        }
    }
}

/// An attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailed {
    /// The attempt that failed, from 1; the retry policy decides whether another follows.
    pub attempt: u32,
    /// What went wrong.
    pub error: TaskError,
    /// Whether it may be retried.
    pub retryable: bool,
    /// Who found out.
    pub cause: FailureCause,
}

/// Another attempt will be dispatched after a delay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryScheduled {
    /// The attempt to come.
    pub attempt: u32,
    /// The delay the backoff gave.
    pub delay_ms: u64,
    /// When it is due.
    pub due_at: Timestamp,
}

/// An attempt's timeout fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedOut {
    /// The attempt that timed out, from 1; 0 for a workflow run's own timeout.
    pub attempt: u32,
    /// What the run's options said to do.
    pub action: OnTimeout,
    /// The timeout, in ms.
    pub after_ms: u64,
}

/// No new work is dispatched until resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    /// Why, if the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Dispatching goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resumed {}

/// A graceful cancel: the agent is told and has until `deadline` to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequested {
    /// The cancel's reason (`cancelled` when none was given), as the agent is told.
    pub reason: String,
    /// When the cancel is forced.
    pub deadline: Timestamp,
}

/// The run ended cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    /// The cancel's reason, or why the run was ended (a rejection, an expired approval, …).
    pub reason: String,
    /// True when an attempt was still running and was not given (or did not take) the
    /// chance to stop by itself.
    pub forced: bool,
}

/// The run ended failed: its last attempt failed and no retry is left.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// The last attempt's error.
    pub error: TaskError,
    /// Attempts made.
    pub attempts: u32,
}

crate::event_payload! {
    /// What can happen to a run.
    #[derive(Clone, Debug, PartialEq)]
    pub enum RunEvent {
        /// Created.
        Submitted(Submitted) = ("run.submitted", 1),
        /// Waiting for approval.
        ApprovalRequested(ApprovalRequested) = ("run.approval_requested", 1),
        /// One approver decided.
        ApprovalDecided(ApprovalDecided) = ("run.approval_decided", 1),
        /// The request expired.
        ApprovalExpired(ApprovalExpired) = ("run.approval_expired", 1),
        /// Approved: dispatch follows.
        Approved(Approved) = ("run.approved", 1),
        /// A task on the work queue.
        Dispatched(Dispatched) = ("run.dispatched", 1),
        /// A task taken during a pause, given back.
        Deferred(Deferred) = ("run.deferred", 1),
        /// An agent owns the attempt.
        Started(Started) = ("run.started", 1),
        /// Progress.
        Progressed(Progressed) = ("run.progress", 1),
        /// A log line.
        Logged(Logged) = ("run.log", 1),
        /// A question for a person.
        InputRequested(InputRequested) = ("run.input_requested", 1),
        /// Its answer.
        InputAnswered(InputAnswered) = ("run.input_answered", 1),
        /// An attempt failed: a retry, or the run's failure, follows.
        AttemptFailed(AttemptFailed) = ("run.attempt_failed", 1),
        /// A retry is due later.
        RetryScheduled(RetryScheduled) = ("run.retry_scheduled", 1),
        /// A timeout fired.
        TimedOut(TimedOut) = ("run.timed_out", 1),
        /// A `pause`: nothing new is dispatched until resumed.
        Paused(Paused) = ("run.paused", 1),
        /// A `resume`: dispatching goes on (a deferred attempt is dispatched again).
        Resumed(Resumed) = ("run.resumed", 1),
        /// The agent is asked to stop.
        CancelRequested(CancelRequested) = ("run.cancel_requested", 1),
        /// The output is being checked.
        Checking(Checking) = ("run.checking", 1),
        /// The checks decided.
        Checked(Checked) = ("run.checked", 1),
        /// A workflow run started steps.
        StepsStarted(StepsStarted) = ("run.steps_started", 1),
        /// A workflow run's step ended.
        StepEnded(StepEnded) = ("run.step_ended", 1),
        /// Ended: succeeded.
        Completed(Completed) = ("run.completed", 1),
        /// Ended: failed.
        Failed(Failed) = ("run.failed", 1),
        /// Ended: cancelled.
        Cancelled(Cancelled) = ("run.cancelled", 1),
    }
}

impl RunEvent {
    /// The attempt it belongs to, when it names one (a workflow run's end names none: it
    /// has no attempts of its own).
    pub fn attempt(&self) -> Option<u32> {
        let attempt = match self {
            RunEvent::Dispatched(Dispatched { attempt, .. })
            | RunEvent::Deferred(Deferred { attempt, .. })
            | RunEvent::Started(Started { attempt, .. })
            | RunEvent::Progressed(Progressed { attempt, .. })
            | RunEvent::Logged(Logged { attempt, .. })
            | RunEvent::InputRequested(InputRequested { attempt, .. })
            | RunEvent::AttemptFailed(AttemptFailed { attempt, .. })
            | RunEvent::RetryScheduled(RetryScheduled { attempt, .. })
            | RunEvent::TimedOut(TimedOut { attempt, .. })
            | RunEvent::Checking(Checking { attempt, .. })
            | RunEvent::Checked(Checked { attempt, .. })
            | RunEvent::Completed(Completed { attempt, .. }) => *attempt,
            _ => return None,
        };
        Some(attempt).filter(|attempt| *attempt > 0)
    }
}
