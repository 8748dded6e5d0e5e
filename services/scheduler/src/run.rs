//! A run as an aggregate: what its decisions ([`crate::commands`]) and effects
//! ([`crate::effects`]) read, and what each event does to it (`evolve`). Pure: no I/O,
//! no clock.
//!
//! The state is the run's [`Phase`]: where its task is, which every decision turns on;
//! what was submitted ([`Submission`]: tasks are built from it, a submit again is
//! compared with it); its [`Attempt`]s, its [`Approval`] tally, an output held while its
//! checks decide, and, for a workflow run, its [`WorkflowState`]: the definition and every
//! step's result, which the workflow engine decides from. What only queries show (logs,
//! progress, questions and answers, the result, most times) is folded apart, in
//! [`crate::run_view`]: a run in hand stays small.

use osp_protocol::json::from_msgpack_value;
use osp_protocol::quality::Opinion;
use osp_protocol::registry::Document;
use osp_protocol::scheduler::queries::{ApprovalState, RunStatus};
use osp_protocol::scheduler::{
    Checks, Dispatched, FailureCause, ParentLink, RunEvent, RunOptions, TaskError, Workflow,
};
use osp_protocol::{Envelope, Timestamp, Token};
use osp_runtime::Aggregate;

use crate::commands::{self, RunCommand};
use crate::workflow::{StepEnd, StepRecord, Steps};

/// One run's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// Its id: audit ids and its steps' run ids are made from it.
    pub run_id: String,
    /// Where its task is.
    pub phase: Phase,
    /// No new work is dispatched.
    pub paused: bool,
    /// What was submitted.
    pub submission: Submission,
    /// The attempts so far, oldest first: attempt `n` is at `n - 1`.
    pub attempts: Vec<Attempt>,
    /// Its approval request, once it was asked for.
    pub approval: Option<Approval>,
    /// What a workflow run's engine decides from; `None` for a run of one task.
    pub workflow: Option<WorkflowState>,
    /// An attempt's output held while its checks decide (and, if they failed with
    /// `onFailure: approval`, while approvers decide).
    pub held: Option<HeldOutput>,
    /// A graceful cancel's deadline, once one was asked for (its timer may be set until
    /// the run ends).
    pub cancel_deadline: Option<Timestamp>,
}

/// What a submit asked for.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Submission {
    /// When; `None` for a step's run that its parent cancelled before the submit came.
    pub at: Option<Timestamp>,
    /// Whose agents run its task (empty for a workflow run).
    pub capability: String,
    /// What it runs when it is not a single task: a pattern, or a check.
    pub workflow: Option<Workflow>,
    /// The run whose step it is, which hears how it ended.
    pub parent: Option<ParentLink>,
    /// The task's input.
    pub input: Document,
    /// How it runs.
    pub options: RunOptions,
    /// The submitter's own data: only compared with a submit again.
    pub metadata: Option<Document>,
}

impl Default for Submission {
    fn default() -> Submission {
        Submission {
            at: None,
            capability: String::new(),
            workflow: None,
            parent: None,
            input: Document::Nil,
            options: RunOptions::default(),
            metadata: None,
        }
    }
}

/// One attempt of the task.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    /// Dispatches of it so far (more than 1 when a pause deferred it).
    pub dispatches: u32,
    /// When it times out.
    pub deadline: Option<Timestamp>,
    /// The agent that started it.
    pub agent: Option<String>,
    /// When (the agent is lost if the registry marks it offline after this).
    pub started_at: Option<Timestamp>,
    /// Its timeout fired (with `onTimeout: continue` it went on).
    pub timed_out: bool,
    /// How it failed, if it did (the next attempt's agent is told of failed checks).
    pub failure: Option<Failure>,
    /// The checks of its output.
    pub check: Option<AttemptCheck>,
}

/// How an attempt failed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub error: TaskError,
    /// Who found it.
    pub cause: FailureCause,
}

/// The checks of an attempt's output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptCheck {
    /// The quality service's audit entry that checks it.
    pub audit_id: Token,
    pub state: CheckState,
}

/// Where the checks of an output are.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CheckState {
    /// The audit entry is awaited (its deadline timer may be set).
    Awaiting,
    /// The audit entry, or its absence by the deadline, decided.
    Decided { opinion: Opinion, passed: bool },
}

/// An approval request, and the approvers' decisions on it so far.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    /// Who may decide (anyone when empty).
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// When its timer fires.
    pub expires_at: Option<Timestamp>,
    /// On expiry: approve, or cancel the run.
    pub auto_approve_on_timeout: bool,
    /// The decisions, in order (each approver decides once).
    pub decisions: Vec<Vote>,
    pub state: ApprovalState,
}

/// One approver's decision: approve, or reject.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    pub approver: String,
    pub approved: bool,
}

/// An output waiting for its checks (see [`crate::commands::checks`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldOutput {
    /// The attempt that produced it.
    pub attempt: u32,
    /// The audit entry that checks it.
    pub audit_id: Token,
    pub output: Document,
    /// When missing evidence is missing.
    pub deadline: Timestamp,
}

/// A workflow run's definition, input and steps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkflowState {
    pub definition: Workflow,
    /// The run's input, as JSON (what the engine builds step inputs from).
    pub input: serde_json::Value,
    pub steps: Steps,
    /// When the run's timeout fires, once its steps may start.
    pub deadline: Option<Timestamp>,
    /// Its timeout fired.
    pub timed_out: bool,
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
    Ready { attempt: u32 },
    /// The `dispatch`-th dispatch of attempt `attempt` is on the work queue; no agent has
    /// started it yet.
    Queued { attempt: u32, dispatch: u32 },
    /// Attempt `attempt`, a retry, waits for its delay: it is due at `due_at`.
    RetryWait { attempt: u32, due_at: Timestamp },
    /// `agent` works on attempt `attempt`.
    Running { attempt: u32, agent: String },
    /// `agent` asked question `request_id` and waits for the answer.
    AwaitingInput { attempt: u32, agent: String, request_id: String },
    /// A graceful cancel, for `reason`: `agent` has until [`Run::cancel_deadline`] to stop.
    Cancelling { attempt: u32, agent: String, reason: String },
    /// The agent completed attempt `attempt`; its output is being checked.
    Checking { attempt: u32 },
    /// A workflow run whose steps may run (none of the task phases apply to it).
    Orchestrating,
    /// Over.
    Ended(End),
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum End {
    Completed,
    Failed,
    Cancelled,
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
            Phase::Ended(End::Completed) => RunStatus::Completed,
            Phase::Ended(End::Failed) => RunStatus::Failed,
            Phase::Ended(End::Cancelled) => RunStatus::Cancelled,
            Phase::New | Phase::Ready { .. } | Phase::Queued { .. } | Phase::RetryWait { .. } => RunStatus::Pending,
        }
    }
}

impl Run {
    /// Whether it has been submitted (or cancelled before it was).
    pub fn exists(&self) -> bool {
        self.phase != Phase::New
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// Where it is, in the protocol's words.
    pub fn status(&self) -> RunStatus {
        self.phase.status()
    }

    /// Whether the run was cancelled before it was ever submitted (a workflow step's run
    /// whose parent ended before the step's submit).
    pub fn cancelled_unsubmitted(&self) -> bool {
        self.ended() && self.submission.at.is_none()
    }

    /// The root of the run's tree: the run a person submitted (itself, unless it is a
    /// step of a workflow).
    pub fn root(&self) -> &str {
        self.submission.parent.as_ref().map_or(self.run_id.as_str(), |parent| parent.root.as_str())
    }

    /// The number of the latest attempt (0 before the first dispatch).
    pub fn attempt(&self) -> u32 {
        self.attempts.len() as u32
    }

    /// Attempt `n` (from 1), if the run has had it. `n` may come from outside (a fired
    /// timer's payload), so 0 is simply no attempt.
    pub fn nth_attempt(&self, n: u32) -> Option<&Attempt> {
        self.attempts.get((n as usize).checked_sub(1)?)
    }

    /// The checks its output must pass: its `checks` option, or, for a check run (a
    /// `check` step), the check it is.
    pub fn checks(&self) -> Option<std::borrow::Cow<'_, Checks>> {
        match (&self.submission.options.checks, &self.submission.workflow) {
            (Some(checks), _) => Some(std::borrow::Cow::Borrowed(&**checks)),
            (None, Some(Workflow::Check(check))) => Some(std::borrow::Cow::Owned(check.checks())),
            _ => None,
        }
    }

    /// Whether it is a check run: a `check` step, whose output is the evaluation.
    pub fn is_check(&self) -> bool {
        matches!(self.submission.workflow, Some(Workflow::Check(_)))
    }

    /// What attempt `attempt`'s task tells its agent of the attempt before it, when that
    /// one's output failed its checks.
    pub fn feedback_for(&self, attempt: u32) -> Option<serde_json::Value> {
        let failure = self.nth_attempt(attempt.checked_sub(1)?)?.failure.as_ref()?;
        let details = failure.error.details.as_ref().filter(|_| failure.cause == FailureCause::Check)?;
        Some(from_msgpack_value(details))
    }

    fn attempt_mut(&mut self, attempt: u32) -> &mut Attempt {
        let index = attempt.max(1) as usize - 1;
        if self.attempts.len() <= index {
            self.attempts.resize_with(index + 1, Attempt::default);
        }
        &mut self.attempts[index]
    }

    fn dispatched(&mut self, dispatched: &Dispatched) {
        let attempt = self.attempt_mut(dispatched.attempt);
        attempt.dispatches = dispatched.dispatch;
        attempt.deadline = dispatched.deadline;
        self.held = None;
        self.phase = Phase::Queued { attempt: dispatched.attempt, dispatch: dispatched.dispatch };
    }

    /// A workflow run's steps may start from `at`: its timeout runs from then.
    fn orchestrate(&mut self, at: Timestamp) {
        let deadline = self.submission.options.timeout.as_ref().map(|timeout| at.plus_millis(timeout.ms));
        if let Some(workflow) = &mut self.workflow {
            workflow.deadline = deadline;
        }
        self.phase = Phase::Orchestrating;
    }

    fn end(&mut self, end: End) {
        // Nothing is dispatched after the end: a pause no longer means anything.
        self.paused = false;
        self.held = None;
        self.phase = Phase::Ended(end);
    }
}

impl Aggregate for Run {
    type Event = RunEvent;
    type Command = RunCommand;

    fn evolve(&mut self, event: &Envelope<RunEvent>) {
        let at = event.occurred_at;
        if self.run_id.is_empty() {
            // Usually set by `run.submitted`; a child run cancelled before it was
            // submitted begins with `run.cancelled`.
            self.run_id = event.aggregate.id.to_string();
        }
        match &event.payload {
            RunEvent::Submitted(submitted) => {
                self.submission = Submission {
                    at: Some(at),
                    capability: submitted.capability.as_ref().map(ToString::to_string).unwrap_or_default(),
                    workflow: submitted.workflow.as_deref().cloned(),
                    parent: submitted.parent.clone(),
                    input: submitted.input.clone(),
                    options: submitted.options.clone(),
                    metadata: submitted.metadata.clone(),
                };
                self.phase = Phase::Ready { attempt: 1 };
                if let Some(definition) = submitted.workflow.as_deref().filter(|w| !matches!(w, Workflow::Check(_))) {
                    self.workflow = Some(WorkflowState {
                        definition: definition.clone(),
                        input: from_msgpack_value(&submitted.input),
                        steps: Steps::default(),
                        deadline: None,
                        timed_out: false,
                    });
                    self.orchestrate(at);
                }
                if let Some(dispatched) = &submitted.dispatched {
                    self.dispatched(dispatched);
                }
            }
            RunEvent::ApprovalRequested(request) => {
                self.approval = Some(Approval {
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
                if let Some(approval) = &mut self.approval {
                    approval.decisions.push(Vote { approver: decided.approver.clone(), approved: decided.approved });
                    if !decided.approved {
                        approval.state = ApprovalState::Rejected;
                    }
                }
            }
            RunEvent::ApprovalExpired(expired) => {
                if let Some(approval) = &mut self.approval {
                    approval.state = match expired.auto_approved {
                        true => ApprovalState::ApprovedOnExpiry,
                        false => ApprovalState::Expired,
                    };
                }
            }
            RunEvent::Approved(approved) => {
                if let Some(approval) = self.approval.as_mut().filter(|_| !approved.on_expiry) {
                    approval.state = ApprovalState::Approved;
                }
                match self.workflow.is_some() {
                    true => self.orchestrate(at),
                    false => self.phase = Phase::Ready { attempt: 1 },
                }
            }
            RunEvent::Dispatched(dispatched) => self.dispatched(dispatched),
            RunEvent::Deferred(deferred) => self.phase = Phase::Ready { attempt: deferred.attempt },
            RunEvent::Started(started) => {
                let attempt = self.attempt_mut(started.attempt);
                attempt.agent = Some(started.agent.clone());
                attempt.started_at = Some(at);
                self.phase = Phase::Running { attempt: started.attempt, agent: started.agent.clone() };
            }
            RunEvent::InputRequested(request) => {
                if let Some((attempt, agent)) = self.phase.held() {
                    let agent = agent.to_owned();
                    self.phase = Phase::AwaitingInput { attempt, agent, request_id: request.request_id.clone() };
                }
            }
            RunEvent::InputAnswered(_) => {
                if let Phase::AwaitingInput { attempt, agent, .. } = &self.phase {
                    self.phase = Phase::Running { attempt: *attempt, agent: agent.clone() };
                }
            }
            RunEvent::AttemptFailed(failed) => {
                self.attempt_mut(failed.attempt).failure =
                    Some(Failure { error: failed.error.clone(), cause: failed.cause });
            }
            RunEvent::Checking(checking) => {
                self.attempt_mut(checking.attempt).check =
                    Some(AttemptCheck { audit_id: checking.audit_id.clone(), state: CheckState::Awaiting });
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
                    check.state = CheckState::Decided { opinion: checked.opinion, passed: checked.passed };
                }
            }
            RunEvent::RetryScheduled(retry) => {
                self.held = None;
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
                    }
                }
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
            }
            RunEvent::Paused(_) => self.paused = true,
            RunEvent::Resumed(_) => self.paused = false,
            RunEvent::CancelRequested(request) => {
                if let Some((attempt, agent)) = self.phase.held() {
                    let agent = agent.to_owned();
                    self.phase = Phase::Cancelling { attempt, agent, reason: request.reason.clone() };
                }
                self.cancel_deadline = Some(request.deadline);
            }
            RunEvent::Completed(_) => self.end(End::Completed),
            RunEvent::Failed(_) => self.end(End::Failed),
            RunEvent::Cancelled(_) => {
                if let Some(approval) = self.approval.as_mut().filter(|a| a.state == ApprovalState::Pending) {
                    approval.state = ApprovalState::Cancelled;
                }
                self.end(End::Cancelled);
            }
            // Only queries show them.
            RunEvent::Progressed(_) | RunEvent::Logged(_) => {}
        }
    }

    fn decide(&self, command: &RunCommand, now: Timestamp) -> Result<Vec<RunEvent>, osp_protocol::Error> {
        commands::decide(self, command, now)
    }
}
