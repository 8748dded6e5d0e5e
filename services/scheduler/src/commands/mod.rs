//! The run's decisions, one file per command family: what may happen in the run's
//! current state, and what it causes. Pure functions of the state, the command and the
//! time.
//!
//! - [`submit`]: create a run (idempotent by run id);
//! - [`lifecycle`]: cancel, pause, resume;
//! - [`approval`]: approve, reject, expiry;
//! - [`reports`]: what the agent holding an attempt reports, and the answer to its question;
//! - [`expiry`]: the runtime's own findings: timeouts, retry delays, lost heartbeats,
//!   agents gone offline;
//! - [`attempts`]: dispatching an attempt, and what follows a failed one;
//! - [`checks`]: an attempt's output checked by the quality service before the run
//!   completes;
//! - [`steps`]: a workflow run's steps — starting them, their ends, and what a parent
//!   asks of its steps' runs.

mod approval;
mod attempts;
pub mod checks;
mod expiry;
mod lifecycle;
mod reports;
mod steps;
mod submit;

pub use steps::ParentSignal;

use osp_protocol::scheduler::Command;
use osp_protocol::{Error, Timestamp};
use serde::{Deserialize, Serialize};

use crate::run::{Phase, Run};
use osp_protocol::scheduler::RunEvent;

/// What may be asked of a run: a client's command, or a decision the scheduler takes
/// itself.
#[derive(Clone, Debug, PartialEq)]
pub enum RunCommand {
    /// From a submitter or an agent (boxed: it is much larger than the others).
    Client(Box<Command>),
    /// A durable timer fired.
    Timer(TimerFired),
    /// The agent holding `attempt` sent no heartbeat for the run's heartbeat timeout.
    HeartbeatLost {
        /// The attempt found silent; nothing happens unless the run still holds it.
        attempt: u32,
        /// Who held it as the sweep saw: must still hold it; named in the failure.
        agent: String,
        /// How long this instance heard nothing.
        silent_ms: u64,
    },
    /// The registry marked the agent holding `attempt` offline.
    AgentOffline {
        /// The attempt the agent held; nothing happens unless the run still holds it.
        attempt: u32,
        /// The agent the registry marked offline; must still hold the attempt.
        agent: String,
    },
    /// A workflow run decides what comes next (after it started, a step ended, it was
    /// approved or resumed).
    Advance,
    /// The run of one of this workflow run's steps ended.
    StepEnded(osp_protocol::scheduler::StepEnded),
    /// This run is a step of a workflow run, which was cancelled, paused or resumed.
    FromParent(ParentSignal),
    /// The quality service recorded an audit entry of this run (as the log tells).
    Checked(Box<osp_protocol::quality::AuditEntry>),
}

impl From<Command> for RunCommand {
    fn from(command: Command) -> RunCommand {
        RunCommand::Client(Box::new(command))
    }
}

/// Which of a run's timers fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Attempt `n`'s timeout.
    Timeout,
    /// Attempt `n`'s retry delay is over.
    Retry,
    /// The approval request expired.
    Approval,
    /// A graceful cancel's time is up.
    Cancel,
    /// Attempt `n`'s checks are due.
    Check,
}

/// A fired timer: its kind and the attempt (or generation) it was set for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFired {
    /// The run.
    pub run_id: String,
    /// Which timer.
    pub kind: TimerKind,
    /// The attempt it was set for (1 for approval).
    pub n: u32,
}

/// Decides `command` on `run` at `now`.
pub fn decide(run: &Run, command: &RunCommand, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    match command {
        RunCommand::Client(command) => decide_client(run, command, now),
        RunCommand::Timer(timer) => Ok(expiry::timer(run, timer, now)),
        RunCommand::HeartbeatLost { attempt, agent, silent_ms } => {
            Ok(expiry::agent_lost(run, *attempt, agent, expiry::Lost::Heartbeat { silent_ms: *silent_ms }, now))
        }
        RunCommand::AgentOffline { attempt, agent } => {
            Ok(expiry::agent_lost(run, *attempt, agent, expiry::Lost::Offline, now))
        }
        RunCommand::Advance => Ok(steps::advance(run)),
        RunCommand::StepEnded(ended) => Ok(steps::ended(run, ended)),
        RunCommand::FromParent(signal) => Ok(steps::from_parent(run, signal, now)),
        RunCommand::Checked(entry) => Ok(checks::recorded(run, entry, now)),
    }
}

fn decide_client(run: &Run, command: &Command, now: Timestamp) -> Result<Vec<RunEvent>, Error> {
    match command {
        Command::Submit(submit) => submit::decide(run, submit, now),
        command if !run.exists() => Err(Error::NotFound {
            field: "run_id".into(),
            value: command.run_id().to_string(),
            reason: "no run has this id".into(),
        }),
        Command::Cancel(cancel) => lifecycle::cancel(run, cancel, now),
        Command::Pause(pause) => lifecycle::pause(run, pause),
        Command::Resume(_) => lifecycle::resume(run, now),
        Command::Decide(decision) => approval::decide(run, decision, now),
        Command::Answer(answer) => reports::answer(run, answer),
        Command::Report(report) => reports::decide(run, report, now),
    }
}

/// The refusal of `command` in the run's current state.
fn illegal(run: &Run, command: &str, reason: impl Into<String>) -> Error {
    Error::IllegalTransition { command: command.to_owned(), state: state_name(run), reason: reason.into() }
}

/// The run's state in the words of an error message: `completed`, `in-progress (paused)`.
fn state_name(run: &Run) -> String {
    let status = run.status().as_str();
    match (&run.phase, run.paused) {
        (Phase::Ended(_), _) => status.to_owned(),
        (_, true) => format!("{status} (paused)"),
        _ => status.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod properties {
    use super::fixtures::*;
    use super::*;
    use osp_protocol::quality::Opinion;
    use osp_protocol::scheduler::{Backoff, Checks, OnCheckFailure, OnMissingEvidence};
    use osp_runtime::testing::{envelope, fold};
    use osp_runtime::Aggregate;
    use proptest::prelude::*;

    /// Any command a run can meet, from any sender, at any moment.
    fn any_command() -> impl Strategy<Value = RunCommand> {
        let agent = prop_oneof![Just("a1"), Just("a2")];
        prop_oneof![
            Just(cancel(true)),
            Just(cancel(false)),
            Just(pause_cmd()),
            Just(resume_cmd()),
            prop_oneof![Just("ann"), Just("bob"), Just("eve")].prop_map(approve),
            Just(reject("ann", "no")),
            Just(answer_cmd(None)),
            (1u32..4, agent.clone()).prop_map(|(a, who)| started_report(a, who)),
            (1u32..4, agent.clone()).prop_map(|(a, who)| progress_report(a, who)),
            (1u32..4, agent.clone()).prop_map(|(a, who)| ask_report(a, who, "q")),
            (1u32..4, agent.clone()).prop_map(|(a, who)| completed_report(a, who)),
            (1u32..4, agent.clone(), any::<bool>()).prop_map(|(a, who, r)| failed_report(a, who, "error", r)),
            (
                prop_oneof![
                    Just(TimerKind::Timeout),
                    Just(TimerKind::Retry),
                    Just(TimerKind::Approval),
                    Just(TimerKind::Cancel)
                ],
                1u32..4
            )
                .prop_map(|(kind, n)| timer(kind, n)),
            (1u32..4, agent.clone()).prop_map(|(attempt, who)| RunCommand::HeartbeatLost {
                attempt,
                agent: who.into(),
                silent_ms: 1
            }),
            (1u32..4, agent).prop_map(|(attempt, who)| RunCommand::AgentOffline { attempt, agent: who.into() }),
            (
                1u32..4,
                prop_oneof![
                    Just(Opinion::Unqualified),
                    Just(Opinion::Qualified),
                    Just(Opinion::Adverse),
                    Just(Opinion::Disclaimer)
                ]
            )
                .prop_map(|(attempt, opinion)| audit_recorded(attempt, opinion)),
            (1u32..4).prop_map(|n| timer(TimerKind::Check, n)),
        ]
    }

    fn any_options() -> impl Strategy<Value = osp_protocol::scheduler::RunOptions> {
        let on_failure = prop_oneof![
            Just(None),
            Just(Some(OnCheckFailure::Fail)),
            Just(Some(OnCheckFailure::Retry)),
            Just(Some(OnCheckFailure::Approval))
        ];
        (any::<bool>(), any::<bool>(), 0u32..3, on_failure).prop_map(|(approval, timeout, retries, on_failure)| {
            let mut options = with_retry(retries + 1, 0, Backoff::None, None);
            options.checks = on_failure.map(|on_failure| {
                Box::new(Checks {
                    rules: vec!["has-summary".into()],
                    judge: None,
                    on_failure,
                    on_missing_evidence: OnMissingEvidence::Fail,
                    objectives: vec![],
                    timeout_ms: Some(10),
                    approvers: None,
                    required_approvals: None,
                })
            });
            if approval {
                options.approval = with_approval(&["ann", "bob"], 1, Some(10), false).approval;
            }
            if timeout {
                options.timeout = with_timeout(10, "fail").timeout;
            }
            options
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever happens: the state is a fold of the events; a run ends at most once
        /// and nothing happens to it after; no attempt is started twice; attempts never
        /// exceed the retry policy; and nothing panics.
        #[test]
        fn invariants_hold_for_any_sequence(options in any_options(), commands in proptest::collection::vec(any_command(), 0..40)) {
            let max_attempts = options.max_attempts();
            let mut history = submit_history(options);
            let mut state: Run = fold(&history);
            // Times move on, so timers may come due.
            for (step, command) in commands.iter().enumerate() {
                let now = NOW.plus_millis(step as u64 * 20);
                let ended = state.ended();
                if let Ok(events) = state.decide(command, now) {
                    prop_assert!(!ended || events.is_empty(), "an ended run changed: {command:?} -> {events:?}");
                    for event in events {
                        history.push(event.clone());
                        state.evolve(&envelope(event, history.len() as u64));
                    }
                }
            }
            prop_assert_eq!(&state, &fold::<Run>(&history));
            // What a snapshot saves is what it restores.
            let saved = rmp_serde::to_vec_named(&state).unwrap();
            prop_assert_eq!(&rmp_serde::from_slice::<Run>(&saved).unwrap(), &state);
            check_view(&history, &state);
            let ends = history.iter().filter(|e| matches!(e, RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_))).count();
            prop_assert!(ends <= 1);
            let mut started = std::collections::HashSet::new();
            for event in &history {
                if let RunEvent::Started(s) = event {
                    prop_assert!(started.insert(s.attempt), "attempt {} started twice", s.attempt);
                }
            }
            prop_assert!(state.attempt() <= max_attempts);
            // An output is held exactly while it is being checked or its failure awaits approval.
            let holding = matches!(state.phase, crate::run::Phase::Checking { .. })
                || (state.phase == crate::run::Phase::AwaitingApproval && state.held.is_some());
            prop_assert_eq!(state.held.is_some(), holding, "held {:?} in {:?}", state.held, state.phase);
        }
    }
}
