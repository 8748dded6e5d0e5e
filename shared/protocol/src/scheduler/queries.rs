//! Queries of the scheduler: NATS micro-service endpoints `osp.v1.q.scheduler.<query>`,
//! answered in the request's encoding with a [`crate::Reply`].
//!
//! | query | request | result |
//! |---|---|---|
//! | `get` | `{run_id}` | [`RunView`], or `not_found` |
//! | `list` | `{status?, capability?, after?, limit?}` | [`RunPage`]: summaries by run id |
//! | `digest` | `{}` | [`Digest`]: a hash of every run's state, to compare instances |
//!
//! To follow a run live, read its events from the log (`osp.v1.evt.run.<run_id>`,
//! an ordered consumer from the start); `get` with `Osp-Min-Seq` gives the state at any
//! event's sequence or later.

use serde::{Deserialize, Serialize};

use crate::registry::Document;
use crate::scheduler::workflow::{ParentLink, Workflow};
use crate::scheduler::{FailureCause, RunOptions, TaskError};
use crate::Timestamp;

/// The query names (endpoints) of the scheduler.
pub const QUERIES: &[&str] = &["get", "list", "digest"];
/// Runs per page when the query does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most runs per page.
pub const MAX_LIMIT: u32 = 1000;
/// Log lines a [`RunView`] carries (the latest); the log holds them all.
pub const VIEW_LOG_LINES: usize = 100;

/// Where a run is in its life.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RunStatus {
    /// Created; waiting to be dispatched, on the work queue, or waiting for a retry.
    Pending,
    /// An agent is working on it.
    InProgress,
    /// Waiting for a person: approval or an answer.
    Awaiting,
    /// Ended: succeeded.
    Completed,
    /// Ended: failed.
    Failed,
    /// Ended: cancelled.
    Cancelled,
}

impl RunStatus {
    /// True once the run has ended.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }

    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<RunStatus, String> {
        use strum::VariantNames;
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("{s:?} is not a status: {}", RunStatus::VARIANTS.join(", ")))
    }
}

/// Where a run's approval request is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::IntoStaticStr, strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ApprovalState {
    /// Approvers may decide.
    Pending,
    /// The required approvals came.
    Approved,
    /// An approver rejected it.
    Rejected,
    /// It expired, and the run was cancelled.
    Expired,
    /// It expired, and `autoApproveOnTimeout` approved it.
    ApprovedOnExpiry,
    /// The run was cancelled while it was pending.
    Cancelled,
}

impl ApprovalState {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How an attempt ended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::Display, strum::IntoStaticStr, strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum AttemptOutcome {
    /// The run completed with its output.
    Completed,
    /// It failed: its agent said so, the scheduler found it (timeout, heartbeat, agent
    /// offline), or its output failed its checks (`onFailure: retry`).
    Failed,
    /// The run was cancelled before it ended.
    Cancelled,
}

impl AttemptOutcome {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `get`: one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// The run.
    #[serde(alias = "runId")]
    pub run_id: String,
}

/// `list`: runs by id, optionally of one status or capability.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only runs in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// Only runs of this capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Also the child runs of workflows' steps (left out unless asked for).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub children: bool,
    /// Start after this run id (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Progress of the attempt in hand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Done.
    pub current: u64,
    /// In all, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One attempt of the task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    /// Its number, from 1.
    pub attempt: u32,
    /// Dispatches of it (more than 1 when a pause deferred it).
    pub dispatches: u32,
    /// When it was (last) dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<Timestamp>,
    /// When it times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The agent that holds (held) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When the agent started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// How it ended, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// Its error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Who found the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
    /// Its timeout fired (with `onTimeout: continue` it went on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// The checks of its output (the run's `checks` option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckView>,
}

/// The checks of an attempt's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    /// The quality service's audit entry (`osp audit show <id>`).
    pub audit_id: String,
    /// Its opinion, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opinion: Option<crate::quality::Opinion>,
    /// Whether the output passed, once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
}

/// One approver's decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    /// The `Osp-Actor` of the `approve` or `reject`.
    pub approver: String,
    /// Approve or reject.
    pub approved: bool,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was recorded (Unix ms, the writer's clock).
    pub at: Timestamp,
}

/// An approval request and its decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// What is asked.
    pub message: String,
    /// Who may decide (anyone when empty).
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// On expiry: approve or cancel.
    pub auto_approve_on_timeout: bool,
    /// The decisions so far.
    pub decisions: Vec<DecisionView>,
    /// Where it is.
    pub state: ApprovalState,
}

/// A question of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputView {
    /// Its id.
    pub request_id: String,
    /// The attempt that asked.
    pub attempt: u32,
    /// As the agent asked it: any document, at most 64 KiB encoded.
    pub question: Document,
    /// The answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::registry::document::present")]
    pub answer: Option<Document>,
    /// Who answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was recorded (Unix ms, the writer's clock).
    pub at: Timestamp,
    /// Which attempt logged it, from 1.
    pub attempt: u32,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The line.
    pub message: String,
}

/// A run's whole state: what `get` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// Its id.
    pub run_id: String,
    /// The capability whose agents run it; empty for a workflow run (see `workflow`).
    pub capability: String,
    /// Where it is.
    pub status: Option<RunStatus>,
    /// No new work is dispatched.
    pub paused: bool,
    /// A graceful cancel is under way; the agent has until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelling_until: Option<Timestamp>,
    /// The task's input.
    pub input: Document,
    /// How it runs.
    pub options: RunOptions,
    /// The submitter's own data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
    /// The attempts so far, oldest first.
    pub attempts: Vec<AttemptView>,
    /// The next attempt's due time, while a retry waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Progress of the attempt in hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The latest log lines (at most [`VIEW_LOG_LINES`]).
    pub logs: Vec<LogLine>,
    /// Log lines in all.
    pub log_count: u64,
    /// Its approval, if it needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalView>,
    /// The agent's questions.
    pub inputs: Vec<InputView>,
    /// The output, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::registry::document::present")]
    pub output: Option<Document>,
    /// The error, once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// Who submitted it.
    pub submitted_by: String,
    /// When it was submitted, Unix ms; 0 for a step's run cancelled before its submit.
    pub submitted_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The sequence of its latest event.
    pub seq: u64,
    /// The workflow it runs, when it is not a single task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    /// The run whose step it is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// A workflow run's steps, in the order they started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepView>,
}

/// One step of a workflow run: a child run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Its key in the workflow (`classify`, `subtask:3`, `evaluate:2`).
    pub key: String,
    /// Its run.
    pub run_id: String,
    /// What it runs: `task <capability>`, or a pattern's name.
    pub what: String,
    /// `in-progress` until its run ended, then how it ended.
    pub status: RunStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// How long its run took, submit to end (`run.step_ended`'s `duration_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Its error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
}

impl Default for RunView {
    fn default() -> RunView {
        RunView {
            run_id: String::new(),
            capability: String::new(),
            status: None,
            paused: false,
            cancelling_until: None,
            input: Document::Nil,
            options: RunOptions::default(),
            metadata: None,
            attempts: Vec::new(),
            retry_at: None,
            progress: None,
            logs: Vec::new(),
            log_count: 0,
            approval: None,
            inputs: Vec::new(),
            output: None,
            error: None,
            cancel_reason: None,
            submitted_by: String::new(),
            submitted_at: Timestamp::default(),
            updated_at: Timestamp::default(),
            ended_at: None,
            seq: 0,
            workflow: None,
            parent: None,
            steps: Vec::new(),
        }
    }
}

impl RunView {
    /// The status, `pending` before the first event.
    pub fn status(&self) -> RunStatus {
        self.status.unwrap_or(RunStatus::Pending)
    }

    /// The attempt in hand (the latest), if any.
    pub fn current_attempt(&self) -> Option<&AttemptView> {
        self.attempts.last()
    }

    /// The open question, if the run waits for an answer.
    pub fn open_input(&self) -> Option<&InputView> {
        self.inputs.iter().rev().find(|input| input.answer.is_none())
    }
}

/// A run in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Its id.
    pub run_id: String,
    /// The capability (or, for a workflow run, the pattern's name).
    pub capability: String,
    /// The run whose step it is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Where it is.
    pub status: RunStatus,
    /// No new work is dispatched until it is resumed.
    pub paused: bool,
    /// Attempts so far.
    pub attempts: u32,
    /// Progress of the attempt in hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// When it was submitted.
    pub submitted_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A page of runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunPage {
    /// The runs, by id.
    pub runs: Vec<RunSummary>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A hash of every run's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Hex XOR of one BLAKE3 per run (of what `get` shows of it, MessagePack with named
    /// fields, after its length as 8 bytes little-endian): order-free, so runs that left
    /// an instance's memory count as those in it.
    pub digest: String,
    /// Runs counted.
    pub runs: u64,
    /// The log sequence the state is at.
    pub applied: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nil_output_or_answer_stays_a_nil_output_or_answer_through_either_encoding() {
        let mut view = RunView { output: Some(Document::Nil), ..RunView::default() };
        view.inputs.push(InputView {
            request_id: "q1".into(),
            attempt: 1,
            question: "go?".into(),
            answer: Some(Document::Nil),
            answered_by: Some("ann".into()),
        });
        let none = RunView::default();
        for encoding in [crate::Encoding::MessagePack, crate::Encoding::Json] {
            let back: RunView = encoding.decode(&encoding.encode(&view).unwrap()).unwrap();
            assert_eq!((back.output, back.inputs[0].answer.clone()), (Some(Document::Nil), Some(Document::Nil)));
            let back: RunView = encoding.decode(&encoding.encode(&none).unwrap()).unwrap();
            assert_eq!(back.output, None, "{encoding:?}: no output stays none");
        }
    }

    #[test]
    fn statuses_use_the_spec_names() {
        for status in [RunStatus::Pending, RunStatus::InProgress, RunStatus::Awaiting, RunStatus::Cancelled] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), status);
        }
        assert!("running".parse::<RunStatus>().unwrap_err().contains("in-progress"));
    }

    /// The names `Display` and `as_str` give are the wire's (serde's) names.
    #[test]
    fn each_state_has_one_name() {
        fn one_name<T>()
        where
            T: strum::VariantNames + serde::de::DeserializeOwned + Serialize + Copy,
            &'static str: From<T>,
        {
            for name in T::VARIANTS {
                let state: T = serde_json::from_value(serde_json::json!(name)).unwrap();
                assert_eq!(<&'static str>::from(state), *name);
                assert_eq!(serde_json::to_value(state).unwrap(), *name);
            }
        }
        one_name::<RunStatus>();
        one_name::<ApprovalState>();
        one_name::<AttemptOutcome>();
        assert_eq!(ApprovalState::ApprovedOnExpiry.to_string(), "approved-on-expiry");
    }
}
