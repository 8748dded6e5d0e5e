//! A run as an aggregate: its state, and what each event does to it (`evolve`). The
//! decisions are in [`crate::commands`]. Pure: no I/O, no clock.
//!
//! Besides the [`RunView`] that queries show, the state keeps the run's [`Phase`]:
//! where its task is, which is what every decision turns on.

use osp_eventlog::Aggregate;
use osp_protocol::scheduler::queries::{
    ApprovalView, AttemptView, DecisionView, InputView, LogLine, Progress, RunStatus, RunView, VIEW_LOG_LINES,
};
use osp_protocol::scheduler::{Dispatched, RunEvent};
use osp_protocol::{Envelope, Timestamp};

use crate::commands::{self, RunCommand};

/// One run's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    /// What queries show.
    pub view: RunView,
    /// Where its task is.
    pub phase: Phase,
    /// A graceful cancel was asked for (so a cancel deadline timer was set).
    pub cancel_requested: bool,
}

/// Where a run's task is.
#[derive(Clone, Debug, Default, PartialEq)]
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
            Phase::Running { .. } | Phase::Cancelling { .. } => RunStatus::InProgress,
            _ => RunStatus::Pending,
        }
    }
}

impl Run {
    /// Whether it has been submitted.
    pub fn exists(&self) -> bool {
        self.phase != Phase::New
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
        self.phase = Phase::Queued { attempt: dispatched.attempt, dispatch: dispatched.dispatch };
    }

    fn end(&mut self, status: RunStatus, at: Timestamp) {
        self.view.status = Some(status);
        self.view.ended_at = Some(at);
        self.view.cancelling_until = None;
        self.view.retry_at = None;
        // Nothing is dispatched after the end: a pause no longer means anything.
        self.view.paused = false;
        self.phase = Phase::Ended;
    }
}

impl Aggregate for Run {
    type Event = RunEvent;
    type Command = RunCommand;

    fn evolve(&mut self, event: &Envelope<RunEvent>) {
        let at = event.occurred_at;
        self.view.updated_at = at;
        match &event.payload {
            RunEvent::Submitted(submitted) => {
                self.view.run_id = event.aggregate.id.to_string();
                self.view.capability = submitted.capability.to_string();
                self.view.input = submitted.input.clone();
                self.view.options = submitted.options.clone();
                self.view.metadata = submitted.metadata.clone();
                self.view.submitted_by = event.actor.clone();
                self.view.submitted_at = at;
                self.phase = Phase::Ready { attempt: 1 };
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
                    state: "pending".into(),
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
                        approval.state = "rejected".into();
                    }
                }
            }
            RunEvent::ApprovalExpired(expired) => {
                if let Some(approval) = &mut self.view.approval {
                    approval.state = if expired.auto_approved { "approved-on-expiry" } else { "expired" }.into();
                }
            }
            RunEvent::Approved(approved) => {
                if let Some(approval) = self.view.approval.as_mut().filter(|_| !approved.on_expiry) {
                    approval.state = "approved".into();
                }
                self.phase = Phase::Ready { attempt: 1 };
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
                attempt.outcome = Some("failed".into());
                attempt.error = Some(failed.error.clone());
                attempt.cause = Some(failed.cause);
            }
            RunEvent::RetryScheduled(retry) => {
                self.view.retry_at = Some(retry.due_at);
                self.phase = Phase::RetryWait { attempt: retry.attempt, due_at: retry.due_at };
            }
            RunEvent::TimedOut(timed_out) => self.attempt_mut(timed_out.attempt).timed_out = true,
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
                let attempt = self.attempt_mut(completed.attempt);
                attempt.ended_at = Some(at);
                attempt.outcome = Some("completed".into());
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
                    attempt.outcome = Some("cancelled".into());
                }
                if let Some(approval) = self.view.approval.as_mut().filter(|a| a.state == "pending") {
                    approval.state = "cancelled".into();
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
