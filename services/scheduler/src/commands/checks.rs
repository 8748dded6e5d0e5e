//! Checks of an attempt's output (the run option `checks`): when the agent completes an
//! attempt, the run records `run.checking` and holds the output; the quality service's
//! audit entry for it (read from the log) decides what follows (`run.checked`).
//!
//! - passed (no critical and no major finding: failed warnings pass, a failed error
//!   rule or a judge below its threshold does not; missing evidence passes only with
//!   `onMissingEvidence: pass`): the run completes with the held output;
//! - failed, by `onFailure`: `fail` fails the run (kind `check_failed`); `retry` fails
//!   the attempt and the retry policy decides (the next attempt's task carries the
//!   failed results as feedback); `approval` makes the run wait for approval, which
//!   completes it with the output, or a rejection, which fails it.
//!
//! No audit entry by the checks' deadline is missing evidence (opinion `disclaimer`).

use osp_protocol::quality::{AuditEntry, Findings, Opinion};
use osp_protocol::registry::Document;
use osp_protocol::scheduler::{
    ApprovalRequested, Checked, Checking, Checks, Completed, Failed, FailureCause, OnCheckFailure, OnMissingEvidence,
    RunEvent, TaskError, Workflow, CHECK_FAILED,
};
use osp_protocol::{Timestamp, Token};

use super::attempts;
use crate::run::{Phase, Run};

/// Past the checks' own timeout, how long the scheduler waits for the quality service to
/// record the audit entry before it counts the evidence as missing.
pub const RECORD_GRACE_MS: u64 = 5_000;

/// The id of the audit entry that checks attempt `attempt` of run `run_id`: the same on
/// every instance and every redelivery, so the check is recorded once.
pub fn audit_id(run_id: &str, attempt: u32) -> Token {
    let hash = blake3::hash(format!("{run_id}:{attempt}").as_bytes()).to_hex();
    Token::new("audit_id", format!("chk-{}", &hash[..32])).expect("hex is a valid token")
}

/// The agent completed attempt `attempt` with `output`: the run completes, or, when its
/// options name checks, the output is checked first.
pub(super) fn completed(run: &Run, attempt: u32, output: &Document, now: Timestamp) -> Vec<RunEvent> {
    match run.checks() {
        None => vec![RunEvent::Completed(Completed { attempt, output: output.clone() })],
        Some(checks) => vec![checking(&run.run_id, attempt, output.clone(), &checks, now)],
    }
}

/// A check run (a `check` step) being submitted: what it checks is its input's
/// `candidate` when there is one (an `evaluate` step's input), else its input.
pub(super) fn check_run(run_id: &Token, step: Option<&Workflow>, input: &Document, now: Timestamp) -> Option<RunEvent> {
    let Some(Workflow::Check(check)) = step else { return None };
    let candidate = match input {
        Document::Map(fields) => fields.iter().find(|(key, _)| key.as_str() == Some("candidate")).map(|(_, v)| v),
        _ => None,
    };
    Some(checking(run_id.as_str(), 1, candidate.unwrap_or(input).clone(), &check.checks(), now))
}

fn checking(run_id: &str, attempt: u32, output: Document, checks: &Checks, now: Timestamp) -> RunEvent {
    RunEvent::Checking(Checking {
        attempt,
        audit_id: audit_id(run_id, attempt),
        output,
        deadline: now.plus_millis(checks.timeout_ms() + RECORD_GRACE_MS),
    })
}

/// The audit entry `entry` was recorded: if it is the one the run waits for, decide.
pub(super) fn recorded(run: &Run, entry: &AuditEntry, now: Timestamp) -> Vec<RunEvent> {
    let verdict = Checked {
        attempt: 0,
        audit_id: match Token::new("audit_id", entry.id.as_str()) {
            Ok(id) => id,
            Err(_) => return vec![],
        },
        opinion: entry.opinion,
        findings: entry.findings,
        passed: false,
        failed: entry.rule_results.iter().filter(|r| !r.passed).cloned().collect(),
        judge: entry.judge_result.clone(),
        missing: None,
    };
    decide(run, verdict, now)
}

/// The checks' deadline passed with no audit entry: the evidence is missing.
pub(super) fn deadline_passed(run: &Run, attempt: u32, now: Timestamp) -> Vec<RunEvent> {
    let Some(held) = run.held.as_ref().filter(|held| held.attempt == attempt && held.deadline <= now) else {
        return vec![];
    };
    let verdict = Checked {
        attempt,
        audit_id: held.audit_id.clone(),
        opinion: Opinion::Disclaimer,
        findings: Findings::default(),
        passed: false,
        failed: Vec::new(),
        judge: None,
        missing: Some(format!(
            "the quality service recorded no audit entry within {} ms",
            run.checks().map_or(0, |checks| checks.timeout_ms()) + RECORD_GRACE_MS
        )),
    };
    decide(run, verdict, now)
}

/// Records the verdict on the held output and what follows from it. Anything but the
/// audit the run waits for, while it waits, changes nothing.
fn decide(run: &Run, mut verdict: Checked, now: Timestamp) -> Vec<RunEvent> {
    let (Phase::Checking { attempt }, Some(held), Some(checks)) = (&run.phase, &run.held, run.checks()) else {
        return vec![];
    };
    if held.audit_id != verdict.audit_id {
        return vec![];
    }
    let attempt = *attempt;
    verdict.attempt = attempt;
    // Minor findings (failed warnings) do not stop a run; a critical or major one (a
    // failed error rule, a judge below its threshold) does.
    let found = verdict.findings.critical > 0 || verdict.findings.major > 0 || verdict.opinion == Opinion::Adverse;
    let missing_fails = verdict.opinion == Opinion::Disclaimer && checks.on_missing_evidence == OnMissingEvidence::Fail;
    verdict.passed = !found && !missing_fails;
    if run.is_check() {
        // A check run completes with the evaluation, passed or not: its parent decides.
        let output = evaluation(&verdict, &checks.rules);
        return vec![RunEvent::Checked(verdict), RunEvent::Completed(Completed { attempt, output })];
    }
    if verdict.passed {
        let completed = Completed { attempt, output: held.output.clone() };
        return vec![RunEvent::Checked(verdict), RunEvent::Completed(completed)];
    }
    let error = check_error(&verdict);
    let mut events = vec![RunEvent::Checked(verdict)];
    match checks.on_failure {
        OnCheckFailure::Fail => events.push(RunEvent::Failed(Failed { error, attempts: attempt })),
        OnCheckFailure::Retry => events.extend(attempts::fail(run, attempt, error, true, FailureCause::Check, now)),
        OnCheckFailure::Approval => events.push(RunEvent::ApprovalRequested(ApprovalRequested {
            message: format!(
                "the output of attempt {attempt} failed its checks ({}); approve to complete the run with it, reject to fail the run",
                error.message
            ),
            approvers: checks.approvers.clone().unwrap_or_default(),
            required: checks.required_approvals.unwrap_or(1),
            expires_at: None,
            auto_approve_on_timeout: false,
        })),
    }
    events
}

/// The error of an output that failed its checks: the audit, its opinion and findings,
/// and what failed, in a line; the same as data in `details`.
fn check_error(verdict: &Checked) -> TaskError {
    let findings = verdict.findings;
    let mut failed: Vec<String> = verdict.failed.iter().map(|r| format!("{}: {}", r.rule_name, r.message)).collect();
    if let Some(judge) = verdict.judge.as_ref().filter(|j| !j.passed) {
        failed.push(format!("judge: score {:.2}: {}", judge.score, judge.reasoning));
    }
    if let Some(missing) = &verdict.missing {
        failed.push(missing.clone());
    }
    let message = format!(
        "audit {} is {} (critical {}, major {}, minor {}){}{}",
        verdict.audit_id,
        verdict.opinion.as_str(),
        findings.critical,
        findings.major,
        findings.minor,
        if failed.is_empty() { "" } else { ": " },
        failed.join("; ")
    );
    let mut message = message;
    if message.len() > osp_protocol::scheduler::MAX_TEXT_BYTES {
        let mut end = osp_protocol::scheduler::MAX_TEXT_BYTES - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    TaskError { kind: CHECK_FAILED.into(), message, details: Some(feedback(verdict)) }
}

/// A check run's output: `{score, passed, feedback, auditId, opinion}`, what an
/// evaluator-optimizer reads of an evaluation. The score is the judge's when it judged,
/// else the share of rules passed (0 when nothing could be checked).
fn evaluation(verdict: &Checked, rules: &[String]) -> Document {
    let score = match &verdict.judge {
        Some(judge) => judge.score,
        None if rules.is_empty() => 0.0,
        None => {
            let failed = verdict.failed.iter().filter(|result| rules.contains(&result.rule_name)).count();
            (rules.len() - failed.min(rules.len())) as f64 / rules.len() as f64
        }
    };
    let value = serde_json::json!({
        "score": score,
        "passed": verdict.passed,
        "feedback": osp_protocol::json::from_msgpack_value(&feedback(verdict)),
        "auditId": verdict.audit_id.as_str(),
        "opinion": verdict.opinion,
    });
    osp_protocol::registry::document::from_json(&value)
}

/// What an agent is told of a failed check (the task's `feedback`, the error's
/// `details`): `{auditId, opinion, findings, failed: [{ruleName, severity, message}],
/// judge?, missing?}`.
pub fn feedback(verdict: &Checked) -> Document {
    let failed: Vec<serde_json::Value> = verdict
        .failed
        .iter()
        .map(|r| serde_json::json!({"ruleName": r.rule_name, "severity": r.severity, "message": r.message}))
        .collect();
    let mut value = serde_json::json!({
        "auditId": verdict.audit_id.as_str(),
        "opinion": verdict.opinion,
        "findings": verdict.findings,
        "failed": failed,
    });
    if let Some(judge) = &verdict.judge {
        value["judge"] =
            serde_json::json!({"score": judge.score, "passed": judge.passed, "reasoning": judge.reasoning});
    }
    if let Some(missing) = &verdict.missing {
        value["missing"] = missing.as_str().into();
    }
    osp_protocol::registry::document::from_json(&value)
}

#[cfg(test)]
mod tests {
    use osp_protocol::quality::{Findings, JudgeSpec, Opinion};
    use osp_protocol::registry::Document;
    use osp_protocol::scheduler::queries::RunStatus;
    use osp_protocol::scheduler::{
        AttemptFailed, Checks, FailureCause, OnCheckFailure, OnMissingEvidence, RunEvent, RunOptions,
    };

    use super::super::fixtures::*;
    use super::super::{RunCommand, TimerKind};
    use super::*;

    fn gated(checks: Checks) -> RunOptions {
        RunOptions { checks: Some(Box::new(checks)), ..with_retry(3, 0, osp_protocol::scheduler::Backoff::None, None) }
    }

    /// A run gated by `checks` whose agent completed attempt 1: it is being checked.
    fn checking(checks: Checks) -> Vec<RunEvent> {
        let mut history = vec![submitted(gated(checks)), dispatched(1, 1), started(1, "a1")];
        history.extend(given_run(history.clone()).when(&completed_report(1, "a1")).events());
        history
    }

    #[test]
    fn a_completed_attempt_of_a_gated_run_is_checked_first_and_holds_its_output() {
        let history = checking(checks(OnCheckFailure::Fail));
        let Some(RunEvent::Checking(checking)) = history.last() else { panic!("{history:?}") };
        assert_eq!(checking.audit_id, audit_id("test", 1));
        assert_eq!(checking.deadline, NOW.plus_millis(1000 + RECORD_GRACE_MS));
        let run = given_run(history.clone()).state().clone();
        assert_eq!((run.phase.clone(), run.status()), (Phase::Checking { attempt: 1 }, RunStatus::InProgress));
        // Without checks, the same report completes the run.
        let plain = [submitted(options()), dispatched(1, 1), started(1, "a1")];
        given_run(plain).when(&completed_report(1, "a1")).then(vec![super::super::fixtures::completed(1)]);
    }

    #[test]
    fn a_passing_audit_completes_the_run_with_the_held_output() {
        // A failed warning is a minor finding: it does not stop the run.
        let events =
            given_run(checking(checks(OnCheckFailure::Fail))).when(&audit_recorded(1, Opinion::Qualified)).events();
        assert!(matches!(&events[0], RunEvent::Checked(c) if c.passed && c.opinion == Opinion::Qualified));
        assert_eq!(events[1], RunEvent::Completed(Completed { attempt: 1, output: Document::Nil }));
    }

    #[test]
    fn one_failed_error_rule_stops_the_run_though_the_opinion_is_only_qualified() {
        let RunCommand::Checked(mut entry) = audit_recorded(1, Opinion::Adverse) else { unreachable!() };
        entry.findings.major = 1;
        entry.opinion = Opinion::Qualified;
        let events = given_run(checking(checks(OnCheckFailure::Fail))).when(&RunCommand::Checked(entry)).events();
        assert!(matches!(events.as_slice(), [RunEvent::Checked(c), RunEvent::Failed(_)] if !c.passed), "{events:?}");
    }

    #[test]
    fn a_failing_audit_fails_the_run_with_what_failed() {
        let events =
            given_run(checking(checks(OnCheckFailure::Fail))).when(&audit_recorded(1, Opinion::Adverse)).events();
        let [RunEvent::Checked(checked), RunEvent::Failed(failed)] = events.as_slice() else { panic!("{events:?}") };
        assert!(!checked.passed);
        assert_eq!(failed.error.kind, CHECK_FAILED);
        assert!(failed.error.message.contains("adverse") && failed.error.message.contains("/summary is missing"));
    }

    #[test]
    fn a_failing_audit_with_retry_fails_the_attempt_and_the_next_task_carries_the_feedback() {
        let history = checking(checks(OnCheckFailure::Retry));
        let events = given_run(history.clone()).when(&audit_recorded(1, Opinion::Adverse)).events();
        assert!(matches!(
            &events[1],
            RunEvent::AttemptFailed(AttemptFailed { attempt: 1, cause: FailureCause::Check, retryable: true, .. })
        ));
        assert!(matches!(events.last(), Some(RunEvent::Dispatched(d)) if d.attempt == 2), "{events:?}");
        let mut history = history;
        history.extend(events);
        let run = given_run(history).state().clone();
        let feedback = run.feedback_for(2).expect("feedback for attempt 2");
        assert_eq!(feedback["failed"][0]["ruleName"], "has-summary");
        assert_eq!(feedback["opinion"], "adverse");
        assert_eq!(run.feedback_for(1), None);
    }

    #[test]
    fn a_failing_audit_with_approval_waits_and_the_approvers_decide_the_output() {
        let mut gate = checks(OnCheckFailure::Approval);
        gate.approvers = Some(vec!["ann".into()]);
        let mut history = checking(gate);
        history.extend(given_run(history.clone()).when(&audit_recorded(1, Opinion::Adverse)).events());
        let run = given_run(history.clone()).state().clone();
        assert_eq!(run.status(), RunStatus::Awaiting);
        given_run(history.clone()).when(&approve("eve")).then_refused("is not one of this run's approvers");
        let approved = given_run(history.clone()).when(&approve("ann")).events();
        assert_eq!(approved.last(), Some(&RunEvent::Completed(Completed { attempt: 1, output: Document::Nil })));
        let rejected = given_run(history).when(&reject("ann", "wrong")).events();
        assert!(matches!(rejected.last(), Some(RunEvent::Failed(f)) if f.error.kind == "check_rejected"));
    }

    #[test]
    fn missing_evidence_counts_as_the_run_says() {
        let mut lenient = checks(OnCheckFailure::Fail);
        lenient.on_missing_evidence = OnMissingEvidence::Pass;
        let events = given_run(checking(lenient)).when(&audit_recorded(1, Opinion::Disclaimer)).events();
        assert!(matches!(events.last(), Some(RunEvent::Completed(_))));
        let events =
            given_run(checking(checks(OnCheckFailure::Fail))).when(&audit_recorded(1, Opinion::Disclaimer)).events();
        assert!(matches!(events.last(), Some(RunEvent::Failed(_))));
    }

    #[test]
    fn the_deadline_without_an_audit_is_missing_evidence_and_other_audits_change_nothing() {
        let history = checking(checks(OnCheckFailure::Fail));
        // Not due yet.
        given_run(history.clone()).when(&timer(TimerKind::Check, 1)).then(vec![]);
        let late = NOW.plus_millis(1000 + RECORD_GRACE_MS);
        let events = given_run(history.clone()).when_at(&timer(TimerKind::Check, 1), late).events();
        let [RunEvent::Checked(checked), RunEvent::Failed(_)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(checked.opinion, Opinion::Disclaimer);
        assert!(checked.missing.as_deref().unwrap_or_default().contains("no audit entry"));
        // An audit of another attempt, or of nothing the run asked for, changes nothing.
        given_run(history.clone()).when(&audit_recorded(2, Opinion::Unqualified)).then(vec![]);
        // Once decided, the same audit again changes nothing.
        let mut decided = history;
        decided.extend(given_run(decided.clone()).when(&audit_recorded(1, Opinion::Unqualified)).events());
        given_run(decided).when(&audit_recorded(1, Opinion::Adverse)).then(vec![]);
    }

    #[test]
    fn a_run_being_checked_is_cancelled_at_once() {
        given_run(checking(checks(OnCheckFailure::Fail))).when(&cancel(true)).then(vec![cancelled("stop", false)]);
    }

    #[test]
    fn a_judge_only_check_is_valid_and_its_failure_is_in_the_message() {
        let mut gate = checks(OnCheckFailure::Fail);
        gate.rules.clear();
        gate.judge = Some(JudgeSpec { criteria: vec!["accurate".into()], threshold: 0.8, model: None });
        gate.check().unwrap();
        let RunCommand::Checked(mut judged) = audit_recorded(1, Opinion::Qualified) else { unreachable!() };
        judged.rule_results.clear();
        judged.judge_result = Some(osp_protocol::quality::JudgeResult {
            score: 0.4,
            passed: false,
            reasoning: "too vague".into(),
            rule_results: None,
        });
        // A judge below its threshold is one major finding: a qualified opinion.
        judged.findings = Findings { critical: 0, major: 1, minor: 0 };
        judged.opinion = Opinion::Qualified;
        let events = given_run(checking(gate)).when(&RunCommand::Checked(judged)).events();
        let Some(RunEvent::Failed(failed)) = events.last() else { panic!("{events:?}") };
        assert!(failed.error.message.contains("judge: score 0.40: too vague"), "{}", failed.error.message);
    }
}

#[cfg(test)]
mod check_step {
    use osp_protocol::quality::Opinion;
    use osp_protocol::registry::document::from_json;
    use osp_protocol::scheduler::{Command, RunEvent, Submit};
    use osp_protocol::Token;
    use serde_json::json;

    use super::super::fixtures::*;
    use super::super::RunCommand;

    /// The submit of a check step's run `test` on `input`.
    fn check_submit(input: serde_json::Value) -> RunCommand {
        let step = serde_json::from_value(json!({"check": {"rules": ["has-summary"]}})).unwrap();
        RunCommand::from(Command::Submit(Submit {
            run_id: Token::new("run_id", "test").unwrap(),
            capability: None,
            workflow: Some(Box::new(step)),
            parent: None,
            input: from_json(&input),
            options: options(),
            metadata: None,
        }))
    }

    #[test]
    fn a_check_step_checks_its_candidate_at_once_and_completes_with_the_evaluation() {
        let events = given_run([]).when(&check_submit(json!({"candidate": {"summary": "x"}, "iteration": 2}))).events();
        let [RunEvent::Submitted(_), RunEvent::Checking(checking)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(checking.output, from_json(&json!({"summary": "x"})), "the candidate, not the whole input");
        let mut history = events.clone();
        for (opinion, passed, score) in [(Opinion::Adverse, false, 0.0), (Opinion::Unqualified, true, 1.0)] {
            let decided = given_run(history.clone()).when(&audit_recorded(1, opinion)).events();
            let Some(RunEvent::Completed(completed)) = decided.last() else { panic!("{decided:?}") };
            let evaluation = osp_protocol::json::from_msgpack_value(&completed.output);
            assert_eq!((evaluation["passed"].as_bool(), evaluation["score"].as_f64()), (Some(passed), Some(score)));
            assert_eq!(evaluation["opinion"], json!(opinion));
        }
        // Without a candidate, the whole input is checked.
        history = given_run([]).when(&check_submit(json!({"summary": "y"}))).events();
        assert!(matches!(&history[1], RunEvent::Checking(c) if c.output == from_json(&json!({"summary": "y"}))));
    }
}
