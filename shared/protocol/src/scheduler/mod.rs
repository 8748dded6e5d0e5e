//! The scheduler's part of the wire protocol: runs of one task, executed by the agents
//! of a capability, with timeout, retry, cancel, approval, pause and input.
//!
//! - commands on `osp.v1.in.scheduler.<command>` ([`Command`]);
//! - events on `osp.v1.evt.run.<run_id>` ([`RunEvent`]);
//! - tasks on the work queue `osp.v1.work.<capability>` ([`TaskMessage`], JSON), taken
//!   by agents from the shared durable consumer `work-<capability>`;
//! - signals to the agent holding a task on `osp.v1.task.<run_id>.signal` ([`Signal`],
//!   JSON, core NATS): cancel, answer, pause, resume;
//! - heartbeats of the agent holding a task on `osp.v1.task.<run_id>.heartbeat` (core
//!   NATS, never stored);
//! - queries on `osp.v1.q.scheduler.{get,list,digest}` ([`queries`]).

pub mod checks;
mod commands;
mod events;
pub mod options;
pub mod queries;
pub mod workflow;

use serde::{Deserialize, Serialize};

pub use checks::{Checks, OnCheckFailure, OnMissingEvidence};
pub use commands::{
    derived_run_id, Answer, Cancel, Command, CommandName, Decision, Origin, Pause, Report, ReportKind, Submit,
    COMMANDS, DEFAULT_CANCEL_REASON, MAX_DATA_BYTES, MAX_LOG_BYTES, MAX_SMALL_DATA_BYTES, MAX_TEXT_BYTES,
};
pub use events::{
    ApprovalDecided, ApprovalExpired, ApprovalRequested, Approved, AttemptFailed, CancelRequested, Cancelled, Checked,
    Checking, Completed, Deferred, Dispatched, Failed, FailureCause, InputAnswered, InputRequested, Logged, Paused,
    Progressed, Resumed, RetryScheduled, RunEvent, Started, StepEnded, StepStarted, StepsStarted, Submitted, TimedOut,
    CHECK_FAILED,
};
pub use options::{Approval, Backoff, Notify, OnTimeout, Retry, RunOptions, Timeout};
pub use workflow::{child_run_id, ParentLink, Workflow};

use crate::registry::Document;
use crate::{Error, Timestamp, Token};

/// The service's name: its inbox is `osp.v1.in.scheduler.>`.
pub const SERVICE: &str = "scheduler";
/// Aggregate kind of runs.
pub const RUN_KIND: &str = "run";
/// Prefix of the subjects about one run's task.
pub const TASK_PREFIX: &str = "osp.v1.task";
/// Every task heartbeat: what scheduler instances subscribe to.
pub const ALL_TASK_HEARTBEATS: &str = "osp.v1.task.*.heartbeat";
/// How often an agent should heartbeat a task it holds (what the client crate does).
pub const TASK_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the agent holding `run_id`'s task hears cancel, answer, pause and resume.
pub fn signal_subject(run_id: &Token) -> String {
    format!("{TASK_PREFIX}.{run_id}.signal")
}

/// Where the agent holding `run_id`'s task sends heartbeats.
pub fn heartbeat_subject(run_id: &Token) -> String {
    format!("{TASK_PREFIX}.{run_id}.heartbeat")
}

/// The run id of a task heartbeat's subject.
pub fn heartbeat_run(subject: &str) -> Option<&str> {
    subject.strip_prefix(TASK_PREFIX)?.strip_prefix('.')?.strip_suffix(".heartbeat")
}

/// The durable consumer the agents of `capability` share on the work queue.
pub fn work_consumer(capability: &Token) -> String {
    format!("work-{capability}")
}

/// The `Nats-Msg-Id` of a task message: one per dispatch of an attempt, so publishing
/// it again (after a crash) is deduplicated by the stream.
pub fn task_message_id(run_id: &Token, attempt: u32, dispatch: u32) -> String {
    format!("task:{run_id}:{attempt}:{dispatch}")
}

/// The command token of the hint a run's `notify` option sends.
pub const RUN_ENDED_COMMAND: &str = "run_ended";

/// The hint the scheduler sends to `osp.v1.in.<service>.run_ended` when a run whose
/// options name `notify {service, key}` ends. Only a hint: the receiver reads the run's
/// end from the log (`osp.v1.evt.run.<run_id>`), so a forged hint changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEnded {
    /// The run that ended; how it ended is read from its subject on the log.
    pub run_id: String,
    /// The `key` of its `notify` option.
    pub key: String,
    /// How it ended.
    pub status: queries::RunStatus,
}

impl RunEnded {
    /// The command id of the hint about `run_id`: one per run, so it is sent once.
    pub fn command_id(run_id: &str) -> String {
        format!("run-ended:{run_id}")
    }
}

/// What went wrong in an attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// A short machine-readable kind (`error` when the agent gives none; the runtime's
    /// own are `timeout`, `heartbeat`, `agent_offline`): what `retryOn` matches.
    pub kind: String,
    /// For people.
    pub message: String,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Document>,
}

impl TaskError {
    /// Checks the sizes.
    pub fn check(&self) -> Result<(), Error> {
        if self.kind.is_empty() || self.kind.len() > 64 {
            return Err(Error::Invalid { field: "error.kind".into(), reason: "must be 1 to 64 bytes".into() });
        }
        crate::check_size("error.message", self.message.len(), MAX_TEXT_BYTES)?;
        if let Some(details) = &self.details {
            crate::check_size("error.details", crate::registry::document::encoded_len(details), MAX_SMALL_DATA_BYTES)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A task on the work queue `osp.v1.work.<capability>`, in JSON so an agent in any
/// language reads it with its standard library.
///
/// The agent reports `started` with `run_id` and `attempt` before anything else; only
/// an accepted `started` makes the attempt its own (the reply says whether to go on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    /// The run.
    pub run_id: Token,
    /// The attempt, from 1: every report names it.
    pub attempt: u32,
    /// Which dispatch of the attempt.
    pub dispatch: u32,
    /// The work queue it came from, `osp.v1.work.<capability>`.
    pub capability: Token,
    /// The task's input.
    pub input: serde_json::Value,
    /// When the attempt times out, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The run's heartbeat timeout, in ms: an attempt whose agent sends no heartbeat on
    /// [`heartbeat_subject`] for this long fails. Beat well within it.
    pub heartbeat_ms: u64,
    /// Where cancel, answer, pause and resume arrive.
    pub signal_subject: String,
    /// Where heartbeats go.
    pub heartbeat_subject: String,
    /// Why the attempt before this one failed its checks (the run's `checks` option with
    /// `onFailure: retry`): `{auditId, opinion, findings, failed: [{ruleName, severity,
    /// message}], judge?}`, for the agent to do better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<serde_json::Value>,
}

/// What the reply to an accepted `submit`, `cancel`, `pause`, `resume`, `approve`,
/// `reject` or `answer` says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The run.
    pub run_id: String,
    /// Its status after the command.
    pub status: queries::RunStatus,
    /// Whether it is paused.
    pub paused: bool,
    /// For `submit`: false when the run existed already (the same submission sent
    /// again), true when this command created it.
    pub created: bool,
}

/// What the reply to an accepted `started` says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartOutcome {
    /// True: the attempt is the agent's, work on it. False: give the task back
    /// (acknowledge it and do nothing); `reason` says why.
    pub go: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the reply to an accepted report (other than `started`) says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// The run's status after the report.
    pub status: queries::RunStatus,
    /// True when the run is being cancelled: stop, and report `failed` with kind
    /// `cancelled`.
    pub cancelling: bool,
}

/// A signal to the agent holding a run's task (core NATS, JSON). Signals are hints that
/// arrive while the agent listens; the run's state (`get`) is the truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// Stop. Graceful: clean up and report `failed` with kind `cancelled` before
    /// `deadline`. Not graceful: the run is already cancelled; stop now.
    Cancel {
        /// Ignore it unless you hold this attempt: a run's attempts share one signal subject.
        attempt: u32,
        /// Whether the agent may finish cleaning up.
        graceful: bool,
        /// Until when, for a graceful cancel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
        /// The cancel's reason, or the failure the runtime found (timeout, lost heartbeat).
        reason: String,
    },
    /// The answer to the agent's question.
    Answer {
        /// The attempt that asked; ignore the answer unless you hold it.
        attempt: u32,
        /// The question's id.
        request_id: String,
        /// As the `answer` command gave it; also in `get`'s `inputs[].answer` if this is lost.
        answer: serde_json::Value,
    },
    /// The run is paused (no new work is dispatched; the agent may go on).
    Pause {
        /// Ignore the signal unless you hold this attempt.
        attempt: u32,
    },
    /// The run is resumed.
    Resume {
        /// Ignore the signal unless you hold this attempt.
        attempt: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_subjects() {
        let run = Token::new("run_id", "r-1").unwrap();
        assert_eq!(signal_subject(&run), "osp.v1.task.r-1.signal");
        assert_eq!(heartbeat_subject(&run), "osp.v1.task.r-1.heartbeat");
        assert_eq!(heartbeat_run("osp.v1.task.r-1.heartbeat"), Some("r-1"));
        assert_eq!(heartbeat_run("osp.v1.task.r-1.signal"), None);
        assert_eq!(task_message_id(&run, 2, 1), "task:r-1:2:1");
        assert_eq!(work_consumer(&Token::new("c", "summarize").unwrap()), "work-summarize");
    }

    #[test]
    fn signals_are_tagged_json() {
        let signal = Signal::Answer { attempt: 1, request_id: "q1".into(), answer: serde_json::json!("yes") };
        let json = serde_json::to_value(&signal).unwrap();
        assert_eq!(json["signal"], "answer");
        assert_eq!(serde_json::from_value::<Signal>(json).unwrap(), signal);
    }
}
