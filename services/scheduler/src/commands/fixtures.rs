//! Commands, events and histories the decision tests are written in.

use osp_protocol::registry::Document;
use osp_protocol::scheduler::{
    Approval, Backoff, Cancel, Cancelled, Command, Completed, Decision, Dispatched, OnTimeout, Pause, Paused, Report,
    ReportKind, Retry, RunEvent, RunOptions, Started, Submit, Submitted, TaskError, Timeout,
};
use osp_protocol::{Timestamp, Token};
use osp_runtime::testing::{given, Given, TEST_TIME};

use super::{RunCommand, TimerFired, TimerKind};
use crate::run::Run;

/// The time decisions are taken at.
pub const NOW: Timestamp = TEST_TIME;

pub fn given_run(history: impl IntoIterator<Item = RunEvent>) -> Given<Run> {
    given::<Run>(history)
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
