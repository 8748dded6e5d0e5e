//! A run as an aggregate: its state, and what each event does to it (`evolve`). The
//! decisions are in [`crate::commands`]. Pure: no I/O, no clock.
//!
//! Besides the [`RunView`] that queries show, the state keeps the run's [`Phase`]:
//! where its task is, which is what every decision turns on; and, for a workflow run,
//! its [`WorkflowState`]: the definition and every step's result, which the workflow
//! engine decides from.

use osp_eventlog::Aggregate;
use osp_protocol::json::from_msgpack_value;
use osp_protocol::scheduler::queries::{
    ApprovalState, ApprovalView, AttemptOutcome, AttemptView, CheckView, DecisionView, InputView, LogLine, Progress,
    RunStatus, RunView, StepView, VIEW_LOG_LINES,
};
use osp_protocol::scheduler::{Checks, Dispatched, FailureCause, RunEvent, Workflow};
use osp_protocol::{Envelope, Timestamp};

use crate::commands::{self, RunCommand};
use crate::workflow::{StepEnd, StepRecord, Steps};

/// One run's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// What queries show.
    pub view: RunView,
    /// Where its task is.
    pub phase: Phase,
    /// A graceful cancel was asked for (so a cancel deadline timer was set).
    pub cancel_requested: bool,
    /// What a workflow run's engine decides from; `None` for a run of one task.
    pub workflow: Option<WorkflowState>,
    /// An attempt's output held while its checks decide (and, if they failed with
    /// `onFailure: approval`, while approvers decide).
    pub held: Option<HeldOutput>,
}

/// An output waiting for its checks (see [`crate::commands::checks`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldOutput {
    /// The attempt that produced it.
    pub attempt: u32,
    /// The audit entry that checks it.
    pub audit_id: osp_protocol::Token,
    /// The output.
    pub output: osp_protocol::registry::Document,
    /// When missing evidence is missing.
    pub deadline: Timestamp,
}

/// A workflow run's definition, input and steps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkflowState {
    /// The definition.
    pub definition: Workflow,
    /// The run's input, as JSON (what the engine builds step inputs from).
    pub input: serde_json::Value,
    /// The steps so far.
    pub steps: Steps,
    /// When the run's timeout fires, once its steps may start.
    pub deadline: Option<Timestamp>,
    /// Its timeout fired.
    pub timed_out: bool,
    /// The steps known in all so far.
    pub total: u32,
}

/// Where a run's task is.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Not submitted.
    #[default]
    New,
    /// Waiting for approval.
    AwaitingApproval,
    /// Attempt `attempt` may be dispatched, but the run is paused.
    Ready {
        /// The attempt.
        attempt: u32,
    },
    /// On the work queue, no agent has started it yet.
    Queued {
        /// The attempt.
        attempt: u32,
        /// Which dispatch of it.
        dispatch: u32,
    },
    /// A retry waits for its delay.
    RetryWait {
        /// The attempt to come.
        attempt: u32,
        /// When it is due.
        due_at: Timestamp,
    },
    /// An agent works on it.
    Running {
        /// The attempt.
        attempt: u32,
        /// The agent.
        agent: String,
    },
    /// The agent asked a question and waits for the answer.
    AwaitingInput {
        /// The attempt.
        attempt: u32,
        /// The agent.
        agent: String,
        /// The question.
        request_id: String,
    },
    /// A graceful cancel: the agent has until `deadline` to stop.
    Cancelling {
        /// The attempt.
        attempt: u32,
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The agent completed the attempt; its output is being checked.
    Checking {
        /// The attempt.
        attempt: u32,
    },
    /// A workflow run whose steps may run (none of the task phases apply to it).
    Orchestrating,
    /// Completed, failed or cancelled.
    Ended,
}

impl Phase {
    /// The attempt an agent holds, and the agent, in this phase.
    pub fn held(&self) -> Option<(u32, &str)> {
        match self {
            Phase::Running { attempt, agent }
            | Phase::AwaitingInput { attempt, agent, .. }
            | Phase::Cancelling { attempt, agent, .. } => Some((*attempt, agent)),
            _ => None,
        }
    }

    fn status(&self) -> RunStatus {
        match self {
            Phase::AwaitingApproval | Phase::AwaitingInput { .. } => RunStatus::Awaiting,
            Phase::Running { .. } | Phase::Cancelling { .. } | Phase::Checking { .. } | Phase::Orchestrating => {
                RunStatus::InProgress
            }
            _ => RunStatus::Pending,
        }
    }
}

impl Run {
    /// Whether it has been submitted.
    pub fn exists(&self) -> bool {
        self.phase != Phase::New
    }

    /// Whether the run was cancelled before it was ever submitted (a workflow step's run
    /// whose parent ended before the step's submit).
    pub fn cancelled_unsubmitted(&self) -> bool {
        self.phase == Phase::Ended && self.view.submitted_by.is_empty()
    }

    /// The root of the run's tree: the run a person submitted (itself, unless it is a
    /// step of a workflow).
    pub fn root(&self) -> &str {
        self.view.parent.as_ref().map_or(self.view.run_id.as_str(), |parent| parent.root.as_str())
    }

    /// The number of the latest attempt (0 before the first dispatch).
    pub fn attempt(&self) -> u32 {
        self.view.attempts.len() as u32
    }

    /// Attempt `n` (from 1), if the run has had it. `n` may come from outside (a fired
    /// timer's payload), so 0 is simply no attempt.
    pub fn attempt_view(&self, n: u32) -> Option<&AttemptView> {
        self.view.attempts.get((n as usize).checked_sub(1)?)
    }

    /// The checks its output must pass: its `checks` option, or, for a check run (a
    /// `check` step), the check it is.
    pub fn checks(&self) -> Option<std::borrow::Cow<'_, Checks>> {
        match (&self.view.options.checks, &self.view.workflow) {
            (Some(checks), _) => Some(std::borrow::Cow::Borrowed(&**checks)),
            (None, Some(Workflow::Check(check))) => Some(std::borrow::Cow::Owned(check.checks())),
            _ => None,
        }
    }

    /// Whether it is a check run: a `check` step, whose output is the evaluation.
    pub fn is_check(&self) -> bool {
        matches!(self.view.workflow, Some(Workflow::Check(_)))
    }

    /// What attempt `attempt`'s task tells its agent of the attempt before it, when that
    /// one's output failed its checks.
    pub fn feedback_for(&self, attempt: u32) -> Option<serde_json::Value> {
        let previous = self.attempt_view(attempt.checked_sub(1)?)?;
        let error = previous.error.as_ref().filter(|_| previous.cause == Some(FailureCause::Check))?;
        error.details.as_ref().map(from_msgpack_value)
    }

    fn attempt_mut(&mut self, attempt: u32) -> &mut AttemptView {
        let index = attempt.max(1) as usize - 1;
        while self.view.attempts.len() <= index {
            let number = self.view.attempts.len() as u32 + 1;
            self.view.attempts.push(AttemptView { attempt: number, ..AttemptView::default() });
        }
        &mut self.view.attempts[index]
    }

    fn dispatched(&mut self, dispatched: &Dispatched, at: Timestamp) {
        let attempt = self.attempt_mut(dispatched.attempt);
        attempt.dispatches = dispatched.dispatch;
        attempt.dispatched_at = Some(at);
        attempt.deadline = dispatched.deadline;
        if dispatched.dispatch == 1 {
            self.view.progress = None;
        }
        self.view.retry_at = None;
        self.held = None;
        self.phase = Phase::Queued { attempt: dispatched.attempt, dispatch: dispatched.dispatch };
    }

    /// A workflow run's steps may start from `at`: its timeout runs from then.
    fn orchestrate(&mut self, at: Timestamp) {
        let deadline = self.view.options.timeout.as_ref().map(|timeout| at.plus_millis(timeout.ms));
        if let Some(workflow) = &mut self.workflow {
            workflow.deadline = deadline;
        }
        self.phase = Phase::Orchestrating;
    }

    fn workflow_progress(&mut self, message: String) {
        if let Some(workflow) = &self.workflow {
            let done = workflow.steps.done() as u64;
            self.view.progress =
                Some(Progress { current: done, total: Some(u64::from(workflow.total)), message: Some(message) });
        }
    }

    fn end(&mut self, status: RunStatus, at: Timestamp) {
        self.view.status = Some(status);
        self.view.ended_at = Some(at);
        self.view.cancelling_until = None;
        self.view.retry_at = None;
        // Nothing is dispatched after the end: a pause no longer means anything.
        self.view.paused = false;
        self.held = None;
        self.phase = Phase::Ended;
    }
}

impl Aggregate for Run {
    type Event = RunEvent;
    type Command = RunCommand;

    fn evolve(&mut self, event: &Envelope<RunEvent>) {
        let at = event.occurred_at;
        self.view.updated_at = at;
        if self.view.run_id.is_empty() {
            // Usually set by `run.submitted`; a child run cancelled before it was
            // submitted begins with `run.cancelled`.
            self.view.run_id = event.aggregate.id.to_string();
        }
        match &event.payload {
            RunEvent::Submitted(submitted) => {
                self.view.capability = submitted.capability.as_ref().map(ToString::to_string).unwrap_or_default();
                self.view.input = submitted.input.clone();
                self.view.options = submitted.options.clone();
                self.view.metadata = submitted.metadata.clone();
                self.view.submitted_by = event.actor.clone();
                self.view.submitted_at = at;
                self.view.workflow = submitted.workflow.as_deref().cloned();
                self.view.parent = submitted.parent.clone();
                self.phase = Phase::Ready { attempt: 1 };
                if let Some(definition) = submitted.workflow.as_deref().filter(|w| !matches!(w, Workflow::Check(_))) {
                    self.workflow = Some(WorkflowState {
                        definition: definition.clone(),
                        input: from_msgpack_value(&submitted.input),
                        steps: Steps::default(),
                        deadline: None,
                        timed_out: false,
                        total: 0,
                    });
                    self.orchestrate(at);
                }
                if let Some(dispatched) = &submitted.dispatched {
                    self.dispatched(dispatched, at);
                }
            }
            RunEvent::ApprovalRequested(request) => {
                self.view.approval = Some(ApprovalView {
                    message: request.message.clone(),
                    approvers: request.approvers.clone(),
                    required: request.required,
                    expires_at: request.expires_at,
                    auto_approve_on_timeout: request.auto_approve_on_timeout,
                    decisions: Vec::new(),
                    state: ApprovalState::Pending,
                });
                self.phase = Phase::AwaitingApproval;
            }
            RunEvent::ApprovalDecided(decided) => {
                if let Some(approval) = &mut self.view.approval {
                    approval.decisions.push(DecisionView {
                        approver: decided.approver.clone(),
                        approved: decided.approved,
                        reason: decided.reason.clone(),
                        at,
                    });
                    if !decided.approved {
                        approval.state = ApprovalState::Rejected;
                    }
                }
            }
            RunEvent::ApprovalExpired(expired) => {
                if let Some(approval) = &mut self.view.approval {
                    approval.state = match expired.auto_approved {
                        true => ApprovalState::ApprovedOnExpiry,
                        false => ApprovalState::Expired,
                    };
                }
            }
            RunEvent::Approved(approved) => {
                if let Some(approval) = self.view.approval.as_mut().filter(|_| !approved.on_expiry) {
                    approval.state = ApprovalState::Approved;
                }
                match self.workflow.is_some() {
                    true => self.orchestrate(at),
                    false => self.phase = Phase::Ready { attempt: 1 },
                }
            }
            RunEvent::Dispatched(dispatched) => self.dispatched(dispatched, at),
            RunEvent::Deferred(deferred) => self.phase = Phase::Ready { attempt: deferred.attempt },
            RunEvent::Started(started) => {
                let attempt = self.attempt_mut(started.attempt);
                attempt.agent = Some(started.agent.clone());
                attempt.started_at = Some(at);
                self.phase = Phase::Running { attempt: started.attempt, agent: started.agent.clone() };
            }
            RunEvent::Progressed(progress) => {
                self.view.progress = Some(Progress {
                    current: progress.current,
                    total: progress.total,
                    message: progress.message.clone(),
                });
            }
            RunEvent::Logged(line) => {
                if self.view.logs.len() == VIEW_LOG_LINES {
                    self.view.logs.remove(0);
                }
                self.view.logs.push(LogLine {
                    at,
                    attempt: line.attempt,
                    level: line.level.clone(),
                    message: line.message.clone(),
                });
                self.view.log_count += 1;
            }
            RunEvent::InputRequested(request) => {
                self.view.inputs.push(InputView {
                    request_id: request.request_id.clone(),
                    attempt: request.attempt,
                    question: request.question.clone(),
                    answer: None,
                    answered_by: None,
                });
                if let Some((attempt, agent)) = self.phase.held() {
                    let agent = agent.to_owned();
                    self.phase = Phase::AwaitingInput { attempt, agent, request_id: request.request_id.clone() };
                }
            }
            RunEvent::InputAnswered(answered) => {
                if let Some(input) = self.view.inputs.iter_mut().rev().find(|i| i.request_id == answered.request_id) {
                    input.answer = Some(answered.answer.clone());
                    input.answered_by = Some(event.actor.clone());
                }
                if let Phase::AwaitingInput { attempt, agent, .. } = &self.phase {
                    self.phase = Phase::Running { attempt: *attempt, agent: agent.clone() };
                }
            }
            RunEvent::AttemptFailed(failed) => {
                let attempt = self.attempt_mut(failed.attempt);
                attempt.ended_at = Some(at);
                attempt.outcome = Some(AttemptOutcome::Failed);
                attempt.error = Some(failed.error.clone());
                attempt.cause = Some(failed.cause);
            }
            RunEvent::Checking(checking) => {
                self.attempt_mut(checking.attempt).check =
                    Some(CheckView { audit_id: checking.audit_id.to_string(), opinion: None, passed: None });
                self.held = Some(HeldOutput {
                    attempt: checking.attempt,
                    audit_id: checking.audit_id.clone(),
                    output: checking.output.clone(),
                    deadline: checking.deadline,
                });
                self.phase = Phase::Checking { attempt: checking.attempt };
            }
            RunEvent::Checked(checked) => {
                if let Some(check) = &mut self.attempt_mut(checked.attempt).check {
                    check.opinion = Some(checked.opinion);
                    check.passed = Some(checked.passed);
                }
            }
            RunEvent::RetryScheduled(retry) => {
                self.held = None;
                self.view.retry_at = Some(retry.due_at);
                self.phase = Phase::RetryWait { attempt: retry.attempt, due_at: retry.due_at };
            }
            RunEvent::TimedOut(timed_out) => match &mut self.workflow {
                Some(workflow) => workflow.timed_out = true,
                None => self.attempt_mut(timed_out.attempt).timed_out = true,
            },
            RunEvent::StepsStarted(started) => {
                if let Some(workflow) = &mut self.workflow {
                    for step in &started.steps {
                        workflow.steps.start(StepRecord {
                            key: step.key.clone(),
                            run_id: step.run_id.clone(),
                            step: step.step.clone(),
                            input: step.input.clone(),
                            started_at: at,
                            end: None,
                        });
                        self.view.steps.push(StepView {
                            key: step.key.clone(),
                            run_id: step.run_id.to_string(),
                            what: step.step.describe(),
                            status: RunStatus::InProgress,
                            started_at: at,
                            ended_at: None,
                            duration_ms: None,
                            error: None,
                        });
                    }
                    workflow.total = workflow.total.max(started.total);
                }
                let keys: Vec<&str> = started.steps.iter().map(|s| s.key.as_str()).collect();
                self.workflow_progress(format!("started {}", keys.join(", ")));
            }
            RunEvent::StepEnded(ended) => {
                if let Some(workflow) = &mut self.workflow {
                    workflow.steps.end(
                        &ended.key,
                        StepEnd {
                            status: ended.status,
                            output: ended.output.clone(),
                            error: ended.error.clone(),
                            duration_ms: ended.duration_ms,
                            ended_at: at,
                        },
                    );
                }
                if let Some(step) = self.view.steps.iter_mut().find(|s| s.key == ended.key) {
                    step.status = ended.status;
                    step.ended_at = Some(at);
                    step.duration_ms = Some(ended.duration_ms);
                    step.error = ended.error.clone();
                }
                self.workflow_progress(format!("{} {}", ended.key, ended.status));
            }
            RunEvent::Paused(_) => self.view.paused = true,
            RunEvent::Resumed(_) => self.view.paused = false,
            RunEvent::CancelRequested(request) => {
                if let Some((attempt, agent)) = self.phase.held() {
                    let agent = agent.to_owned();
                    self.phase = Phase::Cancelling { attempt, agent, reason: request.reason.clone() };
                }
                self.view.cancelling_until = Some(request.deadline);
                self.cancel_requested = true;
            }
            RunEvent::Completed(completed) => {
                // A workflow run (attempt 0) has no attempt to close.
                if completed.attempt > 0 {
                    let attempt = self.attempt_mut(completed.attempt);
                    attempt.ended_at = Some(at);
                    attempt.outcome = Some(AttemptOutcome::Completed);
                }
                self.view.output = Some(completed.output.clone());
                self.end(RunStatus::Completed, at);
            }
            RunEvent::Failed(failed) => {
                self.view.error = Some(failed.error.clone());
                self.end(RunStatus::Failed, at);
            }
            RunEvent::Cancelled(cancelled) => {
                if let Some(attempt) = self.view.attempts.last_mut().filter(|a| a.ended_at.is_none()) {
                    attempt.ended_at = Some(at);
                    attempt.outcome = Some(AttemptOutcome::Cancelled);
                }
                if let Some(approval) = self.view.approval.as_mut().filter(|a| a.state == ApprovalState::Pending) {
                    approval.state = ApprovalState::Cancelled;
                }
                self.view.cancel_reason = Some(cancelled.reason.clone());
                self.end(RunStatus::Cancelled, at);
            }
        }
        if self.phase != Phase::Ended {
            self.view.status = Some(self.phase.status());
        }
    }

    fn decide(&self, command: &RunCommand, now: Timestamp) -> Result<Vec<RunEvent>, osp_protocol::Error> {
        commands::decide(self, command, now)
    }
}
