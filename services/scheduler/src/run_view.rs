//! A run as queries show it: [`RunView`] (`get`) and [`RunSummary`] (`list`).
//!
//! Each fact about a run is folded once. What decisions read is in the run's state
//! ([`Run`]); what only queries show (who submitted it, when it last changed, progress,
//! logs, questions and answers, the result, when each attempt was dispatched and ended,
//! what an approval asks and why each approver decided) is in its [`RunDetails`], folded
//! from the same events just after the run's own `evolve`. A reply is put together from
//! the two when it is asked for.

use std::collections::VecDeque;

use osp_protocol::registry::{document, Document};
use osp_protocol::scheduler::queries::{
    ApprovalView, AttemptOutcome, AttemptView, CheckView, DecisionView, InputView, LogLine, Progress, RunStatus,
    RunSummary, RunView, StepView, VIEW_LOG_LINES,
};
use osp_protocol::scheduler::{Dispatched, RunEvent, TaskError};
use osp_protocol::{Envelope, Timestamp};

use crate::run::{Approval, Attempt, CheckState, Phase, Run};
use crate::workflow::StepRecord;

/// What queries show of a run beyond its state.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunDetails {
    submitted_by: String,
    updated_at: Timestamp,
    ended_at: Option<Timestamp>,
    /// A nil output is an output: a snapshot must not read it back as none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "document::present")]
    output: Option<Document>,
    error: Option<TaskError>,
    cancel_reason: Option<String>,
    progress: Option<Progress>,
    /// The latest lines, at most [`VIEW_LOG_LINES`].
    logs: VecDeque<LogLine>,
    log_count: u64,
    inputs: Vec<InputView>,
    approval: Option<ApprovalDetails>,
    /// Attempt `n` is at `n - 1`, as in [`Run::attempts`] (which may be longer).
    attempts: Vec<AttemptDetails>,
    /// The steps a workflow run is known to have in all so far.
    steps_known: u32,
}

/// When an attempt was dispatched and ended, and how.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct AttemptDetails {
    dispatched_at: Option<Timestamp>,
    ended_at: Option<Timestamp>,
    outcome: Option<AttemptOutcome>,
}

/// What an approval asks, and why and when each approver decided (in the order of
/// [`Approval::decisions`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ApprovalDetails {
    message: String,
    decisions: Vec<(Option<String>, Timestamp)>,
}

impl RunDetails {
    /// Applies `event`; `run` is the run's state just after it.
    pub fn apply(&mut self, event: &Envelope<RunEvent>, run: &Run) {
        let at = event.occurred_at;
        self.updated_at = at;
        match &event.payload {
            RunEvent::Submitted(submitted) => {
                self.submitted_by = event.actor.clone();
                if let Some(dispatched) = &submitted.dispatched {
                    self.dispatched(dispatched, at);
                }
            }
            RunEvent::ApprovalRequested(request) => {
                self.approval = Some(ApprovalDetails { message: request.message.clone(), decisions: Vec::new() });
            }
            RunEvent::ApprovalDecided(decided) => {
                if let Some(approval) = &mut self.approval {
                    approval.decisions.push((decided.reason.clone(), at));
                }
            }
            RunEvent::Dispatched(dispatched) => self.dispatched(dispatched, at),
            RunEvent::Progressed(progress) => {
                self.progress = Some(Progress {
                    current: progress.current,
                    total: progress.total,
                    message: progress.message.clone(),
                });
            }
            RunEvent::Logged(line) => {
                if self.logs.len() == VIEW_LOG_LINES {
                    self.logs.pop_front();
                }
                let line =
                    LogLine { at, attempt: line.attempt, level: line.level.clone(), message: line.message.clone() };
                self.logs.push_back(line);
                self.log_count += 1;
            }
            RunEvent::InputRequested(request) => self.inputs.push(InputView {
                request_id: request.request_id.clone(),
                attempt: request.attempt,
                question: request.question.clone(),
                answer: None,
                answered_by: None,
            }),
            RunEvent::InputAnswered(answered) => {
                if let Some(input) = self.inputs.iter_mut().rev().find(|i| i.request_id == answered.request_id) {
                    input.answer = Some(answered.answer.clone());
                    input.answered_by = Some(event.actor.clone());
                }
            }
            RunEvent::AttemptFailed(failed) => self.attempt_ended(failed.attempt, AttemptOutcome::Failed, at),
            RunEvent::StepsStarted(started) if run.workflow.is_some() => {
                self.steps_known = self.steps_known.max(started.total);
                let keys: Vec<&str> = started.steps.iter().map(|s| s.key.as_str()).collect();
                self.workflow_progress(run, format!("started {}", keys.join(", ")));
            }
            RunEvent::StepEnded(ended) => self.workflow_progress(run, format!("{} {}", ended.key, ended.status)),
            RunEvent::Completed(completed) => {
                // A workflow run (attempt 0) has no attempt to close.
                if completed.attempt > 0 {
                    self.attempt_ended(completed.attempt, AttemptOutcome::Completed, at);
                }
                self.output = Some(completed.output.clone());
                self.ended_at = Some(at);
            }
            RunEvent::Failed(failed) => {
                self.error = Some(failed.error.clone());
                self.ended_at = Some(at);
            }
            RunEvent::Cancelled(cancelled) => {
                // The latest attempt ends with the run, unless it ended before.
                let latest = run.attempt();
                if latest > 0 {
                    let attempt = self.attempt_mut(latest);
                    if attempt.ended_at.is_none() {
                        attempt.ended_at = Some(at);
                        attempt.outcome = Some(AttemptOutcome::Cancelled);
                    }
                }
                self.cancel_reason = Some(cancelled.reason.clone());
                self.ended_at = Some(at);
            }
            _ => {}
        }
    }

    fn attempt_mut(&mut self, attempt: u32) -> &mut AttemptDetails {
        let index = attempt.max(1) as usize - 1;
        if self.attempts.len() <= index {
            self.attempts.resize_with(index + 1, AttemptDetails::default);
        }
        &mut self.attempts[index]
    }

    fn dispatched(&mut self, dispatched: &Dispatched, at: Timestamp) {
        self.attempt_mut(dispatched.attempt).dispatched_at = Some(at);
        // Progress is the attempt in hand's: a new attempt has none yet.
        if dispatched.dispatch == 1 {
            self.progress = None;
        }
    }

    fn attempt_ended(&mut self, attempt: u32, outcome: AttemptOutcome, at: Timestamp) {
        let attempt = self.attempt_mut(attempt);
        attempt.ended_at = Some(at);
        attempt.outcome = Some(outcome);
    }

    /// A workflow run's progress: its steps ended, of those known.
    fn workflow_progress(&mut self, run: &Run, message: String) {
        if let Some(workflow) = &run.workflow {
            let done = workflow.steps.done() as u64;
            let total = Some(u64::from(self.steps_known));
            self.progress = Some(Progress { current: done, total, message: Some(message) });
        }
    }
}

/// What `get` answers for `run`, whose latest event is at `seq`.
pub fn run_view(run: &Run, details: &RunDetails, seq: u64) -> RunView {
    let submission = &run.submission;
    RunView {
        run_id: run.run_id.clone(),
        capability: submission.capability.clone(),
        status: Some(run.status()),
        paused: run.paused,
        cancelling_until: run.cancel_deadline.filter(|_| !run.ended()),
        input: submission.input.clone(),
        options: submission.options.clone(),
        metadata: submission.metadata.clone(),
        attempts: run
            .attempts
            .iter()
            .zip(1..)
            .map(|(attempt, n)| attempt_view(n, attempt, details.attempts.get(n as usize - 1)))
            .collect(),
        retry_at: match run.phase {
            Phase::RetryWait { due_at, .. } => Some(due_at),
            _ => None,
        },
        progress: details.progress.clone(),
        logs: details.logs.iter().cloned().collect(),
        log_count: details.log_count,
        approval: run.approval.as_ref().map(|approval| approval_view(approval, details.approval.as_ref())),
        inputs: details.inputs.clone(),
        output: details.output.clone(),
        error: details.error.clone(),
        cancel_reason: details.cancel_reason.clone(),
        submitted_by: details.submitted_by.clone(),
        submitted_at: submission.at.unwrap_or_default(),
        updated_at: details.updated_at,
        ended_at: details.ended_at,
        seq,
        workflow: submission.workflow.clone(),
        parent: submission.parent.clone(),
        steps: run.workflow.iter().flat_map(|workflow| workflow.steps.all()).map(step_view).collect(),
    }
}

/// What `list` shows of `run`: the capability is a workflow run's pattern.
pub fn run_summary(run: &Run, details: &RunDetails) -> RunSummary {
    let submission = &run.submission;
    RunSummary {
        run_id: run.run_id.clone(),
        capability: match &submission.workflow {
            Some(workflow) => workflow.pattern().to_owned(),
            None => submission.capability.clone(),
        },
        parent: submission.parent.as_ref().map(|p| p.run_id.to_string()),
        status: run.status(),
        paused: run.paused,
        attempts: run.attempt(),
        progress: details.progress.clone(),
        submitted_at: submission.at.unwrap_or_default(),
        updated_at: details.updated_at,
    }
}

fn attempt_view(n: u32, attempt: &Attempt, details: Option<&AttemptDetails>) -> AttemptView {
    let details = details.cloned().unwrap_or_default();
    AttemptView {
        attempt: n,
        dispatches: attempt.dispatches,
        dispatched_at: details.dispatched_at,
        deadline: attempt.deadline,
        agent: attempt.agent.clone(),
        started_at: attempt.started_at,
        ended_at: details.ended_at,
        outcome: details.outcome,
        error: attempt.failure.as_ref().map(|failure| failure.error.clone()),
        cause: attempt.failure.as_ref().map(|failure| failure.cause),
        timed_out: attempt.timed_out,
        check: attempt.check.as_ref().map(|check| {
            let (opinion, passed) = match check.state {
                CheckState::Awaiting => (None, None),
                CheckState::Decided { opinion, passed } => (Some(opinion), Some(passed)),
            };
            CheckView { audit_id: check.audit_id.to_string(), opinion, passed }
        }),
    }
}

fn approval_view(approval: &Approval, details: Option<&ApprovalDetails>) -> ApprovalView {
    let noted = details.map_or(&[][..], |details| &details.decisions);
    ApprovalView {
        message: details.map(|details| details.message.clone()).unwrap_or_default(),
        approvers: approval.approvers.clone(),
        required: approval.required,
        expires_at: approval.expires_at,
        auto_approve_on_timeout: approval.auto_approve_on_timeout,
        decisions: approval
            .decisions
            .iter()
            .zip(noted)
            .map(|(vote, (reason, at))| DecisionView {
                approver: vote.approver.clone(),
                approved: vote.approved,
                reason: reason.clone(),
                at: *at,
            })
            .collect(),
        state: approval.state,
    }
}

fn step_view(step: &StepRecord) -> StepView {
    StepView {
        key: step.key.clone(),
        run_id: step.run_id.to_string(),
        what: step.step.describe(),
        status: step.end.as_ref().map_or(RunStatus::InProgress, |end| end.status),
        started_at: step.started_at,
        ended_at: step.end.as_ref().map(|end| end.ended_at),
        duration_ms: step.end.as_ref().map(|end| end.duration_ms),
        error: step.end.as_ref().and_then(|end| end.error.clone()),
    }
}
