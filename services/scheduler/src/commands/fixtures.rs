//! Commands, events and histories the decision tests are written in.

use osp_eventlog::Recorded;
use osp_protocol::registry::Document;
use osp_protocol::scheduler::queries::RunView;
use osp_protocol::scheduler::{
    Approval, Backoff, Cancel, Cancelled, Command, Completed, Decision, Dispatched, OnTimeout, Pause, Paused, Report,
    ReportKind, Retry, RunEvent, RunOptions, Started, Submit, Submitted, TaskError, Timeout,
};
use osp_protocol::{EventHash, Timestamp, Token};
use osp_runtime::testing::{envelope, given, Given, TEST_TIME};
use osp_runtime::View;

use super::{RunCommand, TimerFired, TimerKind};
use crate::run::Run;
use crate::view::SchedulerView;

/// The time decisions are taken at.
pub const NOW: Timestamp = TEST_TIME;

pub fn given_run(history: impl IntoIterator<Item = RunEvent>) -> Given<Run> {
    given::<Run>(history)
}

/// The scheduler's view after `history`, the events of run `test`, stored one after
/// another from sequence 1.
pub fn scheduler_view(history: &[RunEvent]) -> SchedulerView {
    let mut view = SchedulerView::default();
    for (i, event) in history.iter().enumerate() {
        let envelope = envelope(event.clone(), i as u64 + 1);
        let stored_at = envelope.occurred_at;
        view.apply(&Recorded { seq: i as u64 + 1, stored_at, hash: EventHash([0; 32]), envelope });
    }
    view
}

/// What `get` answers for run `test` after `history`.
pub fn view_after(history: &[RunEvent]) -> RunView {
    scheduler_view(history).get("test").expect("a run")
}

/// The laws of the view, which holds each run's state beside what only queries show of
/// it, for run `test` after `history` (`state` is the run's state after it): `get`
/// shows what the state says, and a snapshot of the view answers `get` and `digest` as
/// the view does.
#[track_caller]
pub fn check_view(history: &[RunEvent], state: &Run) {
    let view = scheduler_view(history);
    let shown = view.get("test").expect("a run");
    assert_eq!(
        (shown.status(), shown.paused, shown.attempts.len() as u32),
        (state.status(), state.paused, state.attempt())
    );
    let saved = rmp_serde::to_vec_named(&view).expect("a view encodes");
    let restored: SchedulerView = rmp_serde::from_slice(&saved).expect("a snapshot decodes");
    assert_eq!(restored.get("test"), Some(shown), "a snapshot of the view answers get as the view");
    assert_eq!(restored.digest().unwrap(), view.digest().unwrap(), "and digest");
}

fn run_id() -> Token {
    Token::new("run_id", "test").unwrap()
}

pub fn options() -> RunOptions {
    RunOptions::default()
}

pub fn with_timeout(ms: u64, action: &str) -> RunOptions {
    let on_timeout = match action {
        "fail" => OnTimeout::Fail,
        "cancel" => OnTimeout::Cancel,
        _ => OnTimeout::Continue,
    };
    RunOptions { timeout: Some(Timeout { ms, on_timeout }), ..RunOptions::default() }
}

pub fn with_retry(attempts: u32, delay_ms: u64, backoff: Backoff, max_delay_ms: Option<u64>) -> RunOptions {
    RunOptions {
        retry: Some(Retry { attempts, delay_ms, backoff, max_delay_ms, retry_on: None }),
        ..RunOptions::default()
    }
}

pub fn with_approval(approvers: &[&str], required: u32, timeout_ms: Option<u64>, auto: bool) -> RunOptions {
    RunOptions {
        approval: Some(Approval {
            message: "ship it?".into(),
            approvers: (!approvers.is_empty()).then(|| approvers.iter().map(|a| (*a).to_owned()).collect()),
            required_approvals: required,
            timeout_ms,
            auto_approve_on_timeout: auto,
        }),
        ..RunOptions::default()
    }
}

/// The events a submit with `options` records.
pub fn submit_history(options: RunOptions) -> Vec<RunEvent> {
    given_run([]).when(&submit(options)).events()
}

pub fn submit(options: RunOptions) -> RunCommand {
    RunCommand::from(Command::Submit(Submit {
        run_id: run_id(),
        capability: Some(Token::new("capability", "summarize").unwrap()),
        workflow: None,
        parent: None,
        input: "hi".into(),
        options,
        metadata: None,
    }))
}

pub fn submitted(options: RunOptions) -> RunEvent {
    RunEvent::Submitted(Submitted {
        capability: Some(Token::new("capability", "summarize").unwrap()),
        workflow: None,
        parent: None,
        input: "hi".into(),
        options,
        metadata: None,
        dispatched: None,
    })
}

pub fn dispatched(attempt: u32, dispatch: u32) -> RunEvent {
    RunEvent::Dispatched(Dispatched { attempt, dispatch, deadline: None })
}

pub fn started(attempt: u32, agent: &str) -> RunEvent {
    RunEvent::Started(Started { attempt, agent: agent.into() })
}

pub fn completed(attempt: u32) -> RunEvent {
    RunEvent::Completed(Completed { attempt, output: Document::Nil })
}

pub fn cancelled(reason: &str, forced: bool) -> RunEvent {
    RunEvent::Cancelled(Cancelled { reason: reason.into(), forced })
}

pub fn paused() -> RunEvent {
    RunEvent::Paused(Paused { reason: None })
}

pub fn cancel(graceful: bool) -> RunCommand {
    RunCommand::from(Command::Cancel(Cancel {
        run_id: run_id(),
        reason: "stop".into(),
        graceful,
        graceful_timeout_ms: 5000,
    }))
}

pub fn pause_cmd() -> RunCommand {
    RunCommand::from(Command::Pause(Pause { run_id: run_id(), reason: None }))
}

pub fn resume_cmd() -> RunCommand {
    RunCommand::from(Command::Resume(run_id()))
}

pub fn approve(approver: &str) -> RunCommand {
    RunCommand::from(Command::Decide(Decision {
        run_id: run_id(),
        approver: approver.into(),
        approved: true,
        reason: None,
    }))
}

pub fn reject(approver: &str, reason: &str) -> RunCommand {
    RunCommand::from(Command::Decide(Decision {
        run_id: run_id(),
        approver: approver.into(),
        approved: false,
        reason: Some(reason.into()),
    }))
}

pub fn answer_cmd(request_id: Option<&str>) -> RunCommand {
    RunCommand::from(Command::Answer(osp_protocol::scheduler::Answer {
        run_id: run_id(),
        request_id: request_id.map(str::to_owned),
        answer: "yes".into(),
    }))
}

fn report(attempt: u32, agent: &str, kind: ReportKind) -> RunCommand {
    RunCommand::from(Command::Report(Report { run_id: run_id(), attempt, agent: agent.into(), kind }))
}

pub fn started_report(attempt: u32, agent: &str) -> RunCommand {
    report(attempt, agent, ReportKind::Started)
}

pub fn progress_report(attempt: u32, agent: &str) -> RunCommand {
    report(attempt, agent, ReportKind::Progress { current: 1, total: Some(2), message: Some("half".into()) })
}

pub fn log_report(attempt: u32, agent: &str) -> RunCommand {
    report(attempt, agent, ReportKind::Log { level: "info".into(), message: "working".into() })
}

pub fn ask_report(attempt: u32, agent: &str, request_id: &str) -> RunCommand {
    report(attempt, agent, ReportKind::Ask { request_id: request_id.into(), question: "proceed?".into() })
}

pub fn completed_report(attempt: u32, agent: &str) -> RunCommand {
    report(attempt, agent, ReportKind::Completed { output: Document::Nil })
}

pub fn failed_report(attempt: u32, agent: &str, kind: &str, retryable: bool) -> RunCommand {
    let error = TaskError { kind: kind.into(), message: "boom".into(), details: None };
    report(attempt, agent, ReportKind::Failed { error, retryable })
}

pub fn timer(kind: TimerKind, n: u32) -> RunCommand {
    RunCommand::Timer(TimerFired { run_id: "test".into(), kind, n })
}

/// The submit of a workflow run `test` of `definition` (JSON) with `options`.
pub fn submit_workflow(definition: serde_json::Value, options: RunOptions) -> RunCommand {
    let workflow: osp_protocol::scheduler::Workflow = serde_json::from_value(definition).expect("a definition");
    workflow.check().expect("a valid definition");
    RunCommand::from(Command::Submit(Submit {
        run_id: run_id(),
        capability: None,
        workflow: Some(Box::new(workflow)),
        parent: None,
        input: "doc".into(),
        options,
        metadata: None,
    }))
}

/// How the run of step `key` of run `test` ended.
pub fn step_ended(key: &str, status: osp_protocol::scheduler::queries::RunStatus) -> RunCommand {
    use osp_protocol::scheduler::queries::RunStatus;
    let completed = status == RunStatus::Completed;
    RunCommand::StepEnded(osp_protocol::scheduler::StepEnded {
        key: key.into(),
        run_id: Token::new("run_id", format!("test:{key}")).unwrap(),
        status,
        output: completed.then(|| Document::from("done")),
        error: (!completed).then(|| TaskError { kind: "error".into(), message: "broke".into(), details: None }),
        duration_ms: 5,
    })
}

/// The quality service's audit entry of attempt `attempt` of run `test`, checked against
/// one rule (`has-summary`), with `opinion` and findings to match it: `qualified` is a
/// failed warning (minor), `adverse` two major findings, `disclaimer` a rule unchecked.
pub fn audit_recorded(attempt: u32, opinion: osp_protocol::quality::Opinion) -> RunCommand {
    use osp_protocol::quality::{AuditEntry, Findings, Opinion, RuleResult, Severity};
    let (findings, severity, passed, unchecked) = match opinion {
        Opinion::Unqualified => (Findings::default(), Severity::Error, true, false),
        Opinion::Qualified => (Findings { critical: 0, major: 0, minor: 1 }, Severity::Warning, false, false),
        Opinion::Adverse => (Findings { critical: 0, major: 2, minor: 0 }, Severity::Error, false, false),
        Opinion::Disclaimer => (Findings::default(), Severity::Error, false, true),
    };
    RunCommand::Checked(Box::new(AuditEntry {
        id: super::checks::audit_id("test", attempt).to_string(),
        created_at: NOW,
        agent_id: Some("a1".into()),
        execution_id: Some("test".into()),
        objectives: vec![],
        scope: vec!["has-summary".into()],
        opinion,
        findings,
        rule_results: vec![RuleResult {
            rule_name: "has-summary".into(),
            passed,
            severity,
            message: if passed { "ok".into() } else { "/summary is missing".into() },
            critical: false,
            unchecked,
        }],
        judge_result: None,
        metadata: None,
    }))
}

/// Runs that went through every phase and every way of ending, each as its history of
/// Checks of rule `has-summary`, a second to answer, failing the run when evidence is
/// missing: the gate the check tests and histories put on a run.
pub fn checks(on_failure: osp_protocol::scheduler::OnCheckFailure) -> osp_protocol::scheduler::Checks {
    use osp_protocol::scheduler::{Checks, OnMissingEvidence};
    Checks {
        rules: vec!["has-summary".into()],
        judge: None,
        on_failure,
        on_missing_evidence: OnMissingEvidence::Fail,
        objectives: vec![],
        timeout_ms: Some(1000),
        approvers: None,
        required_approvals: None,
    }
}

/// events: what the view is tested on.
pub fn histories() -> Vec<(&'static str, Vec<RunEvent>)> {
    use osp_protocol::quality::Opinion;
    use osp_protocol::scheduler::queries::RunStatus;
    use osp_protocol::scheduler::OnCheckFailure;
    use serde_json::json;

    let checked =
        |on_failure| RunOptions { checks: Some(Box::new(checks(on_failure))), ..with_retry(3, 0, Backoff::None, None) };
    let approve_why = |approver: &str| {
        RunCommand::from(Command::Decide(Decision {
            run_id: run_id(),
            approver: approver.into(),
            approved: true,
            reason: Some(format!("{approver} read it")),
        }))
    };
    let parallel = json!({"parallelization": {"subtasks": [{"id": "a", "prompt": 1}, {"id": "b", "prompt": 2}, {"id": "c", "prompt": 3}],
        "worker": {"task": {"capability": "w"}}, "maxConcurrency": 2, "failureStrategy": "collect-all"}});
    let check_step = RunCommand::from(Command::Submit(Submit {
        run_id: run_id(),
        capability: None,
        workflow: Some(Box::new(serde_json::from_value(json!({"check": {"rules": ["has-summary"]}})).unwrap())),
        parent: None,
        input: "draft".into(),
        options: options(),
        metadata: None,
    }));
    let start = |attempt| started_report(attempt, "a1");
    let logs: Vec<(RunCommand, u64)> = (0..105).map(|_| (log_report(1, "a1"), 0)).collect();

    vec![
        ("queued", play(vec![], &[(submit(options()), 0)])),
        (
            "completed",
            play(
                submit_history(with_timeout(5000, "fail")),
                &[
                    (start(1), 1),
                    (progress_report(1, "a1"), 2),
                    (log_report(1, "a1"), 3),
                    (completed_report(1, "a1"), 4),
                ],
            ),
        ),
        ("logs-beyond-the-view", {
            let history = play(submit_history(options()), &[(start(1), 1)]);
            play(play(history, &logs), &[(failed_report(1, "a1", "error", false), 9)])
        }),
        (
            "retried-then-failed",
            play(
                submit_history(with_retry(2, 1000, Backoff::None, None)),
                &[
                    (start(1), 1),
                    (progress_report(1, "a1"), 2),
                    (failed_report(1, "a1", "quota", true), 2),
                    (timer(TimerKind::Retry, 2), 1002),
                    (started_report(2, "a2"), 1003),
                    (failed_report(2, "a2", "quota", true), 1004),
                ],
            ),
        ),
        (
            "approved-by-two",
            play(
                submit_history(with_approval(&["ann", "bob", "cid"], 2, Some(60_000), false)),
                &[(approve_why("ann"), 1), (approve("bob"), 2), (start(1), 3), (completed_report(1, "a1"), 4)],
            ),
        ),
        (
            "awaiting-one-more-approval",
            play(submit_history(with_approval(&["ann", "bob"], 2, Some(60_000), false)), &[(approve_why("ann"), 1)]),
        ),
        ("rejected", play(submit_history(with_approval(&[], 1, None, false)), &[(reject("ann", "too risky"), 1)])),
        (
            "approved-on-expiry",
            play(
                submit_history(with_approval(&[], 1, Some(1000), true)),
                &[(timer(TimerKind::Approval, 1), 1000), (start(1), 1001), (completed_report(1, "a1"), 1002)],
            ),
        ),
        (
            "expired",
            play(submit_history(with_approval(&[], 1, Some(1000), false)), &[(timer(TimerKind::Approval, 1), 1000)]),
        ),
        (
            "cancelled-awaiting-approval",
            play(submit_history(with_approval(&[], 1, None, false)), &[(cancel(false), 1)]),
        ),
        ("cancelling", play(submit_history(options()), &[(start(1), 1), (cancel(true), 2)])),
        (
            "checked-after-a-cancel-was-asked",
            play(
                submit_history(checked(OnCheckFailure::Fail)),
                &[(start(1), 1), (cancel(true), 2), (completed_report(1, "a1"), 3)],
            ),
        ),
        (
            "cancel-forced-at-its-deadline",
            play(submit_history(options()), &[(start(1), 1), (cancel(true), 2), (timer(TimerKind::Cancel, 1), 5002)]),
        ),
        (
            "cancel-the-agent-stopped-for",
            play(
                submit_history(options()),
                &[(start(1), 1), (cancel(true), 2), (failed_report(1, "a1", "cancelled", true), 3)],
            ),
        ),
        (
            "deferred-while-paused",
            play(
                submit_history(options()),
                &[(pause_cmd(), 1), (start(1), 2), (resume_cmd(), 3), (start(1), 4), (completed_report(1, "a1"), 5)],
            ),
        ),
        (
            "retry-due-while-paused",
            play(
                submit_history(with_retry(2, 1000, Backoff::None, None)),
                &[(start(1), 1), (pause_cmd(), 2), (failed_report(1, "a1", "error", true), 3)],
            ),
        ),
        (
            "question-answered",
            play(
                submit_history(options()),
                &[(start(1), 1), (ask_report(1, "a1", "q1"), 2), (answer_cmd(None), 3), (completed_report(1, "a1"), 4)],
            ),
        ),
        ("question-open", play(submit_history(options()), &[(start(1), 1), (ask_report(1, "a1", "q1"), 2)])),
        (
            "question-open-when-cancelled",
            play(submit_history(options()), &[(start(1), 1), (ask_report(1, "a1", "q1"), 2), (cancel(false), 3)]),
        ),
        (
            "checks-failed-then-passed",
            play(
                submit_history(checked(OnCheckFailure::Retry)),
                &[
                    (start(1), 1),
                    (completed_report(1, "a1"), 2),
                    (audit_recorded(1, Opinion::Adverse), 3),
                    (start(2), 4),
                    (completed_report(2, "a1"), 5),
                    (audit_recorded(2, Opinion::Qualified), 6),
                ],
            ),
        ),
        (
            "checks-failed-and-rejected",
            play(
                submit_history(checked(OnCheckFailure::Approval)),
                &[
                    (start(1), 1),
                    (completed_report(1, "a1"), 2),
                    (audit_recorded(1, Opinion::Adverse), 3),
                    (reject("ann", "wrong"), 4),
                ],
            ),
        ),
        (
            "checks-evidence-missing",
            play(
                submit_history(checked(OnCheckFailure::Fail)),
                &[(start(1), 1), (completed_report(1, "a1"), 2), (timer(TimerKind::Check, 1), 10_000)],
            ),
        ),
        (
            "cancelled-while-checked",
            play(
                submit_history(checked(OnCheckFailure::Fail)),
                &[(start(1), 1), (completed_report(1, "a1"), 2), (cancel(true), 3)],
            ),
        ),
        (
            "timed-out-and-went-on",
            play(
                submit_history(with_timeout(1000, "continue")),
                &[(start(1), 1), (timer(TimerKind::Timeout, 1), 1000), (completed_report(1, "a1"), 1001)],
            ),
        ),
        (
            "agent-lost",
            play(
                submit_history(options()),
                &[(start(1), 1), (RunCommand::HeartbeatLost { attempt: 1, agent: "a1".into(), silent_ms: 900 }, 2)],
            ),
        ),
        (
            "workflow-completed",
            play(
                vec![],
                &[
                    (submit_workflow(parallel.clone(), options()), 0),
                    (RunCommand::Advance, 1),
                    (step_ended("subtask:a", RunStatus::Completed), 2),
                    (RunCommand::Advance, 3),
                    (pause_cmd(), 4),
                    (step_ended("subtask:b", RunStatus::Failed), 5),
                    (resume_cmd(), 6),
                    (step_ended("subtask:c", RunStatus::Completed), 7),
                    (RunCommand::Advance, 8),
                ],
            ),
        ),
        (
            "workflow-timed-out",
            play(
                vec![],
                &[
                    (submit_workflow(parallel.clone(), with_timeout(1000, "fail")), 0),
                    (RunCommand::Advance, 1),
                    (timer(TimerKind::Timeout, 1), 1000),
                    (step_ended("subtask:a", RunStatus::Cancelled), 1001),
                ],
            ),
        ),
        (
            "workflow-approved",
            play(
                vec![],
                &[
                    (submit_workflow(parallel, with_approval(&[], 1, None, false)), 0),
                    (approve("ann"), 1),
                    (RunCommand::Advance, 2),
                ],
            ),
        ),
        (
            "step-cancelled-before-its-submit",
            play(
                vec![],
                &[
                    (
                        RunCommand::FromParent(super::ParentSignal::Cancel {
                            reason: "parent gone".into(),
                            forced: false,
                        }),
                        0,
                    ),
                    (submit(options()), 1),
                ],
            ),
        ),
        ("check-step", play(vec![], &[(check_step, 0), (audit_recorded(1, Opinion::Unqualified), 1)])),
    ]
}

/// `history` and what `commands` decide after it, each `ms` after [`NOW`].
fn play(mut history: Vec<RunEvent>, commands: &[(RunCommand, u64)]) -> Vec<RunEvent> {
    for (command, ms) in commands {
        let events = given_run(history.clone()).when_at(command, NOW.plus_millis(*ms)).events();
        history.extend(events);
    }
    history
}
