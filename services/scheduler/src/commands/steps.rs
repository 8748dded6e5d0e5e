//! A workflow run's steps: what the engine ([`crate::workflow`]) says comes next,
//! recorded as events; the end of a step's run; and what a parent asks of its steps'
//! runs (cancel, pause, resume).
//!
//! A step is a child run of its own (`<parent>:<key>`); the parent only records that it
//! started it (`run.steps_started`) and how it ended (`run.step_ended`). Effects carry
//! the rest: the child runs are submitted after the parent recorded them, and a child's
//! end is reported to its parent after the child recorded it — so a crash between the
//! two loses nothing, and doing either twice changes nothing.

use osp_protocol::registry::document::{encoded_len, from_json};
use osp_protocol::scheduler::options::DEFAULT_GRACEFUL_TIMEOUT_MS;
use osp_protocol::scheduler::{
    child_run_id, Cancel, Cancelled, Completed, Failed, Paused, RunEvent, StepEnded, StepStarted, StepsStarted,
    TaskError, MAX_DATA_BYTES,
};
use osp_protocol::{Timestamp, Token};

use super::lifecycle;
use crate::run::{Phase, Run};
use crate::workflow::{self, Next};

/// Steps' inputs one `run.steps_started` may carry; more ready steps start in the next
/// decision (a stored message is at most 1 MiB).
const STARTS_BYTES: usize = 512 * 1024;

/// What a workflow run asks of its steps' runs.
#[derive(Clone, Debug, PartialEq)]
pub enum ParentSignal {
    /// The parent ended early (cancelled, failed, timed out): so does the step.
    Cancel {
        /// The step's cancel reason, naming the parent's end (`its workflow failed: …`).
        reason: String,
        /// Without giving the agent time to stop.
        forced: bool,
    },
    /// The parent was paused.
    Pause,
    /// The parent was resumed.
    Resume,
}

/// What comes next in a workflow run, if it is running and not paused.
pub(super) fn advance(run: &Run) -> Vec<RunEvent> {
    let Some(state) = run.workflow.as_ref().filter(|_| run.phase == Phase::Orchestrating && !run.paused) else {
        return vec![];
    };
    let Ok(run_id) = Token::new("run_id", run.run_id.clone()) else { return vec![] };
    match workflow::next(&state.definition, &state.input, &state.steps) {
        Next::Wait => vec![],
        Next::Start { steps, total } => {
            let mut started = Vec::new();
            let mut bytes = 0;
            for spec in steps {
                let input = from_json(&spec.input);
                let size = encoded_len(&input);
                if size > MAX_DATA_BYTES {
                    return vec![fail(
                        "too_large",
                        format!(
                            "step {}'s input is {size} bytes, more than the {MAX_DATA_BYTES} a task may get",
                            spec.key
                        ),
                    )];
                }
                bytes += size;
                if bytes > STARTS_BYTES && !started.is_empty() {
                    break;
                }
                let child = child_run_id(&run_id, &spec.key);
                started.push(StepStarted { key: spec.key, run_id: child, step: spec.step, input });
            }
            vec![RunEvent::StepsStarted(StepsStarted { steps: started, total })]
        }
        Next::Complete(output) => {
            let output = from_json(&output);
            match encoded_len(&output) {
                size if size > MAX_DATA_BYTES => vec![fail(
                    "too_large",
                    format!("the workflow's output is {size} bytes, more than the {MAX_DATA_BYTES} a run may return"),
                )],
                _ => vec![RunEvent::Completed(Completed { attempt: 0, output })],
            }
        }
        Next::Fail(error) => vec![RunEvent::Failed(Failed { error, attempts: 0 })],
    }
}

/// The run of step `ended.key` ended: recorded once, also after the parent itself ended
/// (so its step tree shows how each step ended).
pub(super) fn ended(run: &Run, ended: &StepEnded) -> Vec<RunEvent> {
    let Some(state) = &run.workflow else { return vec![] };
    match state.steps.get(&ended.key) {
        Some(step) if step.end.is_none() && step.run_id == ended.run_id => vec![RunEvent::StepEnded(ended.clone())],
        _ => vec![],
    }
}

/// What the parent asks, where it still means something. A cancel of a step's run that
/// was never submitted (the parent ended before the submit) records the run as
/// cancelled, so the late submit finds it ended and does nothing.
pub(super) fn from_parent(run: &Run, signal: &ParentSignal, now: Timestamp) -> Vec<RunEvent> {
    if run.ended() {
        return vec![];
    }
    match signal {
        ParentSignal::Cancel { reason, forced } if run.phase == Phase::New => {
            vec![RunEvent::Cancelled(Cancelled { reason: reason.clone(), forced: *forced })]
        }
        ParentSignal::Cancel { reason, forced } => {
            let Ok(run_id) = Token::new("run_id", run.run_id.clone()) else { return vec![] };
            let cancel = Cancel {
                run_id,
                reason: reason.clone(),
                graceful: !forced,
                graceful_timeout_ms: DEFAULT_GRACEFUL_TIMEOUT_MS,
            };
            lifecycle::cancel(run, &cancel, now).unwrap_or_default()
        }
        ParentSignal::Pause if run.exists() && !run.paused => {
            vec![RunEvent::Paused(Paused { reason: Some("its workflow was paused".into()) })]
        }
        ParentSignal::Resume if run.paused => lifecycle::resume(run, now).unwrap_or_default(),
        _ => vec![],
    }
}

fn fail(kind: &str, message: String) -> RunEvent {
    RunEvent::Failed(Failed { error: TaskError { kind: kind.into(), message, details: None }, attempts: 0 })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{RunCommand, TimerKind};
    use super::ParentSignal;
    use crate::run::Phase;
    use osp_protocol::scheduler::queries::RunStatus;
    use osp_protocol::scheduler::RunEvent;
    use serde_json::json;

    fn parallel(max: u32, strategy: &str) -> serde_json::Value {
        json!({"parallelization": {"subtasks": [{"id": "a", "prompt": 1}, {"id": "b", "prompt": 2}, {"id": "c", "prompt": 3}],
            "worker": {"task": {"capability": "w"}}, "maxConcurrency": max, "failureStrategy": strategy}})
    }

    fn submitted_workflow(
        definition: serde_json::Value,
        options: osp_protocol::scheduler::RunOptions,
    ) -> Vec<RunEvent> {
        given_run([]).when(&submit_workflow(definition, options)).events()
    }

    fn started_keys(events: &[RunEvent]) -> Vec<String> {
        events
            .iter()
            .flat_map(|e| match e {
                RunEvent::StepsStarted(s) => s.steps.iter().map(|s| s.key.clone()).collect(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn a_workflow_submit_is_one_event_and_advance_starts_its_first_steps_as_child_runs() {
        let history = submitted_workflow(parallel(2, "fail-fast"), options());
        assert!(
            matches!(history.as_slice(), [RunEvent::Submitted(s)] if s.dispatched.is_none() && s.workflow.is_some())
        );
        let events = given_run(history).when(&RunCommand::Advance).events();
        let [RunEvent::StepsStarted(started)] = events.as_slice() else { panic!("{events:?}") };
        let ids: Vec<&str> = started.steps.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(ids, ["test:subtask:a", "test:subtask:b"]);
        assert_eq!(started.total, 3);
    }

    #[test]
    fn a_step_end_is_recorded_once_and_only_for_a_running_step() {
        let mut history = submitted_workflow(parallel(3, "collect-all"), options());
        history.extend(given_run(history.clone()).when(&RunCommand::Advance).events());
        let ended = given_run(history.clone()).when(&step_ended("subtask:a", RunStatus::Completed)).events();
        assert_eq!(ended.len(), 1);
        history.extend(ended);
        given_run(history.clone()).when(&step_ended("subtask:a", RunStatus::Completed)).then(vec![]);
        given_run(history.clone()).when(&step_ended("merge", RunStatus::Completed)).then(vec![]);
        let view = view_after(&history);
        assert_eq!(view.progress.as_ref().map(|p| (p.current, p.total)), Some((1, Some(3))));
    }

    #[test]
    fn a_paused_workflow_starts_nothing_until_resumed() {
        let mut history = submitted_workflow(parallel(1, "fail-fast"), options());
        history.extend(given_run(history.clone()).when(&RunCommand::Advance).events());
        history.extend(given_run(history.clone()).when(&pause_cmd()).events());
        history.extend(given_run(history.clone()).when(&step_ended("subtask:a", RunStatus::Completed)).events());
        given_run(history.clone()).when(&RunCommand::Advance).then(vec![]);
        let resumed = given_run(history.clone()).when(&resume_cmd()).events();
        assert!(
            matches!(resumed.as_slice(), [RunEvent::Resumed(_)]),
            "resume itself starts nothing: its effect advances"
        );
        history.extend(resumed);
        assert_eq!(started_keys(&given_run(history).when(&RunCommand::Advance).events()), ["subtask:b"]);
    }

    #[test]
    fn cancel_ends_a_workflow_at_once_and_a_late_child_is_recorded_cancelled() {
        let mut history = submitted_workflow(parallel(3, "fail-fast"), options());
        history.extend(given_run(history.clone()).when(&RunCommand::Advance).events());
        given_run(history.clone()).when(&cancel(true)).then(vec![cancelled("stop", false)]);
        given_run(history).when(&cancel(false)).then(vec![cancelled("stop", true)]);
        // A step's run the parent cancels before its submit: recorded as cancelled, and the submit then does nothing.
        let signal = RunCommand::FromParent(ParentSignal::Cancel { reason: "parent gone".into(), forced: false });
        let tombstone = given_run([]).when(&signal).events();
        assert_eq!(tombstone, vec![cancelled("parent gone", false)]);
        given_run(tombstone).when(&submit(options())).then(vec![]);
    }

    #[test]
    fn a_workflow_timeout_fails_it_or_cancels_it() {
        let history = submitted_workflow(parallel(3, "fail-fast"), with_timeout(1000, "fail"));
        let later = NOW.plus_millis(1000);
        let events = given_run(history.clone()).when_at(&timer(TimerKind::Timeout, 1), later).events();
        assert!(matches!(events.as_slice(), [RunEvent::TimedOut(_), RunEvent::Failed(f)] if f.error.kind == "timeout"));
        given_run(history).when_at(&timer(TimerKind::Timeout, 1), NOW.plus_millis(10)).then(vec![]);
        let history = submitted_workflow(parallel(3, "fail-fast"), with_timeout(1000, "cancel"));
        let events = given_run(history).when_at(&timer(TimerKind::Timeout, 1), later).events();
        assert!(matches!(events.as_slice(), [RunEvent::TimedOut(_), RunEvent::Cancelled(_)]));
    }

    #[test]
    fn an_approved_workflow_dispatches_no_task_of_its_own() {
        let history = submitted_workflow(parallel(3, "fail-fast"), with_approval(&[], 1, None, false));
        assert_eq!(given_run(history.clone()).state().phase, Phase::AwaitingApproval);
        let events = given_run(history.clone()).when(&approve("ann")).events();
        assert!(events.iter().all(|e| !matches!(e, RunEvent::Dispatched(_))), "{events:?}");
        let mut approved = history;
        approved.extend(events);
        assert_eq!(given_run(approved).state().phase, Phase::Orchestrating);
    }

    mod properties {
        use super::*;
        use osp_runtime::testing::{envelope, fold};
        use osp_runtime::Aggregate;
        use proptest::prelude::*;

        fn any_command() -> impl Strategy<Value = RunCommand> {
            let key = prop_oneof![Just("subtask:a"), Just("subtask:b"), Just("subtask:c"), Just("merge")];
            let status = prop_oneof![Just(RunStatus::Completed), Just(RunStatus::Failed), Just(RunStatus::Cancelled)];
            prop_oneof![
                4 => Just(RunCommand::Advance),
                4 => (key, status).prop_map(|(k, s)| step_ended(k, s)),
                1 => Just(cancel(true)),
                1 => Just(pause_cmd()),
                1 => Just(resume_cmd()),
                1 => Just(timer(TimerKind::Timeout, 1)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever happens to a workflow run: its state is a fold of its events; it
            /// ends at most once and only records its steps' ends after; no step starts
            /// twice, while paused, or after the end; never more than maxConcurrency
            /// subtasks run at once.
            #[test]
            fn workflow_invariants_hold_for_any_sequence(
                strategy in prop_oneof![Just("fail-fast"), Just("collect-all")],
                commands in proptest::collection::vec(any_command(), 0..40),
            ) {
                let mut definition = parallel(2, strategy);
                definition["parallelization"]["merge"] = json!({"task": {"capability": "m"}});
                let mut history = submitted_workflow(definition, with_timeout(200, "fail"));
                let mut state: crate::run::Run = fold(&history);
                for (step, command) in commands.iter().enumerate() {
                    let now = NOW.plus_millis(step as u64 * 20);
                    let (ended, paused) = (state.ended(), state.paused);
                    let Ok(events) = state.decide(command, now) else { continue };
                    for event in events {
                        prop_assert!(!ended || matches!(event, RunEvent::StepEnded(_)), "an ended run changed: {event:?}");
                        prop_assert!(!paused || !matches!(event, RunEvent::StepsStarted(_)), "a step started while paused");
                        history.push(event.clone());
                        state.evolve(&envelope(event, history.len() as u64));
                    }
                    let running = state.workflow.as_ref().unwrap().steps.running().filter(|s| s.key.starts_with("subtask:")).count();
                    prop_assert!(running <= 2, "{running} subtasks at once");
                }
                prop_assert_eq!(&state, &fold::<crate::run::Run>(&history));
                // What a snapshot saves is what it restores.
                let saved = rmp_serde::to_vec_named(&state).unwrap();
                prop_assert_eq!(&rmp_serde::from_slice::<crate::run::Run>(&saved).unwrap(), &state);
                check_view(&history, &state);
                let ends = history.iter().filter(|e| matches!(e, RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_))).count();
                prop_assert!(ends <= 1);
                let keys = started_keys(&history);
                let distinct: std::collections::HashSet<&String> = keys.iter().collect();
                prop_assert_eq!(distinct.len(), keys.len(), "a step started twice: {:?}", keys);
            }
        }
    }
}
