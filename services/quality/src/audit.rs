//! A check's decisions: evaluate the rules, count the findings, derive the opinion, record
//! the audit entry. Pure: the rules' definitions come with the command (read from the
//! catalog when it was admitted), the time from the caller, a part's run's end from the
//! log (read when its hint was admitted).
//!
//! Built-in rules are evaluated here, at once. A check that also needs agents — a judge,
//! or a `custom` rule — is opened (`audit.opened`): each such part is a run of the
//! scheduler, and the entry is recorded when the last part's run has ended
//! (`audit.part_ended` each) or the check's deadline passed, whatever has not answered
//! then being missing evidence. A part whose agent answered with something that is not
//! a result (a malformed reply, a score outside 0 to 1) is missing evidence too, saying
//! why. The findings and the opinion follow the mapping of
//! [`osp_protocol::quality::audit`].

use osp_protocol::quality::{
    custom_result, unchecked, AgentPart, AuditEntry, AuditOpened, AuditPartEnded, AuditRecorded, Check, Findings,
    JudgeResult, Opinion, QualityEvent, Rule, RuleKind, RuleResult, Severity, DEFAULT_AGENT_TIMEOUT_MS,
    JUDGE_CAPABILITY,
};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::{child_run_id, TaskError};
use osp_protocol::{Error, Timestamp, Token};

use crate::aggregate::{Audit, CheckCommand, OpenAudit};
use crate::rules;

/// Past a check's timeout, how long the service waits for its parts' runs to end before
/// it counts them as missing: the runs' own timeouts (the same length) fire first and
/// say more.
pub const CLOSE_GRACE_MS: u64 = 2_000;

/// How a part's run ended, as the log tells.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEnd {
    /// `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Its output, when completed.
    pub output: Option<serde_json::Value>,
    /// Its error, when failed; why, when cancelled.
    pub error: Option<TaskError>,
}

/// `check` on audit `record`: records the entry, or opens it when agents must answer
/// first. The same check again (a resend, or another instance taking it up) changes
/// nothing; another check under the audit's id is a `conflict`.
pub fn check(existing: &Audit, command: &CheckCommand, now: Timestamp) -> Result<Vec<QualityEvent>, Error> {
    let check = &command.check;
    let same = match existing {
        Audit::Recorded(existing) => Some(same_check(&existing.entry, check)),
        Audit::Open(open) => Some(open.opened.check == **check),
        _ => None,
    };
    match same {
        Some(true) => return Ok(vec![]),
        Some(false) => {
            return Err(Error::Conflict {
                field: "audit_id".into(),
                value: check.audit_id.to_string(),
                reason: "an audit entry with that id records another check (other rules, objectives, execution, agent or metadata)".into(),
            })
        }
        None => {}
    }
    let Some(rules) = command.rules.as_deref() else {
        // The inbox reads the definitions before it decides; without them, nothing can be
        // evaluated truthfully.
        return Err(Error::Unavailable { reason: "the check's rules were not read from the catalog".into() });
    };
    let parts = agent_parts(check, rules);
    if parts.is_empty() {
        return Ok(vec![QualityEvent::AuditRecorded(record(check, rules, now))]);
    }
    let results: Vec<RuleResult> = rules
        .iter()
        .filter(|rule| !matches!(rule.kind, RuleKind::Custom { .. }))
        .map(|rule| evaluate(rule, &check.output))
        .collect();
    let timeout = check.timeout_ms.unwrap_or(DEFAULT_AGENT_TIMEOUT_MS);
    Ok(vec![QualityEvent::AuditOpened(Box::new(AuditOpened {
        check: (**check).clone(),
        rules: rules.to_vec(),
        results,
        parts,
        deadline: now.plus_millis(timeout + CLOSE_GRACE_MS),
    }))])
}

/// The run of part `run_id` of the open audit ended as `end`: its result, and the entry
/// when it was the last part.
pub fn part_ended(audit: &Audit, run_id: &Token, end: &RunEnd) -> Result<Vec<QualityEvent>, Error> {
    let open = match audit {
        Audit::Open(open) => open,
        // Recorded already (the deadline came first, or this is a resend): nothing to do.
        Audit::Recorded(_) => return Ok(vec![]),
        _ => {
            return Err(Error::NotFound {
                field: "key".into(),
                value: run_id.to_string(),
                reason: "no open check has this id".into(),
            })
        }
    };
    let Some(part) = open.opened.parts.iter().find(|part| part.run_id == *run_id) else {
        return Err(Error::NotFound {
            field: "run_id".into(),
            value: run_id.to_string(),
            reason: "not a run of this check's parts".into(),
        });
    };
    if open.ended(&part.part) {
        return Ok(vec![]);
    }
    let ended = part_result(&open.opened, part, end);
    let mut events = vec![QualityEvent::AuditPartEnded(ended.clone())];
    let mut all = open.ended.clone();
    all.push(ended);
    if open.opened.parts.iter().all(|part| all.iter().any(|e| e.part == part.part)) {
        events.push(QualityEvent::AuditRecorded(assemble(open, &all)));
    }
    Ok(events)
}

/// The open audit's deadline: every part that has not answered is missing evidence, and
/// the entry is recorded with what there is.
pub fn close(audit: &Audit, now: Timestamp) -> Vec<QualityEvent> {
    let Audit::Open(open) = audit else { return vec![] };
    if now < open.opened.deadline {
        return vec![];
    }
    let waited = open.opened.check.timeout_ms.unwrap_or(DEFAULT_AGENT_TIMEOUT_MS);
    let mut all = open.ended.clone();
    let mut events = Vec::new();
    for part in open.opened.parts.iter().filter(|part| !open.ended(&part.part)) {
        let missing = AuditPartEnded {
            part: part.part.clone(),
            run_id: part.run_id.clone(),
            result: Some(missing(&open.opened, part, format!("no answer within {waited} ms"))),
            judge: None,
        };
        all.push(missing.clone());
        events.push(QualityEvent::AuditPartEnded(missing));
    }
    events.push(QualityEvent::AuditRecorded(assemble(open, &all)));
    events
}

/// The parts of `check` agents make: its judge, then its custom rules, each a run.
fn agent_parts(check: &Check, rules: &[Rule]) -> Vec<AgentPart> {
    let judge = check.judge.as_ref().map(|_| AgentPart {
        part: osp_protocol::quality::audit::JUDGE_SCOPE.to_owned(),
        run_id: child_run_id(&check.audit_id, "judge"),
        capability: Token::new("capability", JUDGE_CAPABILITY).expect("valid token"),
    });
    let custom = rules.iter().filter_map(|rule| match &rule.kind {
        RuleKind::Custom { capability, .. } => Some(AgentPart {
            part: rule.name.clone(),
            run_id: child_run_id(&check.audit_id, &format!("rule:{}", rule.name)),
            capability: capability.clone(),
        }),
        _ => None,
    });
    judge.into_iter().chain(custom).collect()
}

/// What part `part`'s run gave.
fn part_result(opened: &AuditOpened, part: &AgentPart, end: &RunEnd) -> AuditPartEnded {
    let mut ended = AuditPartEnded { part: part.part.clone(), run_id: part.run_id.clone(), result: None, judge: None };
    let who = if is_judge(part) { "the judge".to_owned() } else { format!("the agent of {}", part.capability) };
    let output = match (end.status, &end.output) {
        (RunStatus::Completed, Some(output)) => output,
        (status, _) => {
            let why = end.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
            ended.result = Some(missing(opened, part, format!("{who}'s run {} was {status}{why}", part.run_id)));
            return ended;
        }
    };
    match (is_judge(part), opened.check.judge.as_ref(), rule_of(opened, part)) {
        (true, Some(spec), _) => match spec.result(output) {
            Ok(judged) => ended.judge = Some(judged),
            Err(why) => ended.result = Some(missing(opened, part, why)),
        },
        (false, _, Some(rule)) => {
            ended.result = Some(custom_result(rule, output).unwrap_or_else(|why| missing(opened, part, why)))
        }
        _ => ended.result = Some(missing(opened, part, "no rule of this check".into())),
    }
    ended
}

fn is_judge(part: &AgentPart) -> bool {
    part.part == osp_protocol::quality::audit::JUDGE_SCOPE
}

fn rule_of<'a>(opened: &'a AuditOpened, part: &AgentPart) -> Option<&'a Rule> {
    opened.rules.iter().find(|rule| rule.name == part.part)
}

/// The result of a part that gave none: missing evidence, saying why.
fn missing(opened: &AuditOpened, part: &AgentPart, why: String) -> RuleResult {
    match rule_of(opened, part).filter(|_| !is_judge(part)) {
        Some(rule) => unchecked(&rule.name, rule.severity, rule.critical, why),
        None => unchecked(&part.part, Severity::Error, false, why),
    }
}

/// The entry of the open audit `open`, every part ended (`ended`).
fn assemble(open: &OpenAudit, ended: &[AuditPartEnded]) -> AuditRecorded {
    let opened = &open.opened;
    let part = |name: &str| ended.iter().find(|e| e.part == name);
    let mut results: Vec<RuleResult> = opened
        .rules
        .iter()
        .map(|rule| match &rule.kind {
            RuleKind::Custom { .. } => part(&rule.name)
                .and_then(|e| e.result.clone())
                .unwrap_or_else(|| unchecked(&rule.name, rule.severity, rule.critical, "no answer".into())),
            _ => opened
                .results
                .iter()
                .find(|r| r.rule_name == rule.name)
                .cloned()
                .unwrap_or_else(|| unchecked(&rule.name, rule.severity, rule.critical, "not evaluated".into())),
        })
        .collect();
    let judge = part(osp_protocol::quality::audit::JUDGE_SCOPE);
    // A judge that gave no result says why among the results, as missing evidence.
    results.extend(judge.and_then(|e| e.result.clone()));
    let judged = judge.and_then(|e| e.judge.clone());
    record_entry(&opened.check, &opened.rules, &results, judged, open.opened_at)
}

/// The audit entry of a check of built-in rules only (`rules`, its rules' definitions, in
/// its order), made at `now`: what such a check records at once.
pub fn record(check: &Check, rules: &[Rule], now: Timestamp) -> AuditRecorded {
    let results: Vec<RuleResult> = rules.iter().map(|rule| evaluate(rule, &check.output)).collect();
    record_entry(check, rules, &results, None, now)
}

/// The audit entry of `check` against `rules`, with its rules' `results` (in its order)
/// and the judge's result, made at `at`.
fn record_entry(
    check: &Check,
    rules: &[Rule],
    results: &[RuleResult],
    judge: Option<JudgeResult>,
    at: Timestamp,
) -> AuditRecorded {
    let findings = Findings::count(results, judge.as_ref());
    let mut scope: Vec<String> = check.rules.iter().map(ToString::to_string).collect();
    if check.judge.is_some() {
        scope.push(osp_protocol::quality::audit::JUDGE_SCOPE.to_owned());
    }
    let mut entry = AuditEntry {
        id: check.audit_id.to_string(),
        created_at: at,
        agent_id: check.agent_id.clone(),
        execution_id: check.execution_id.clone(),
        objectives: check.objectives.clone(),
        scope,
        opinion: Opinion::Unqualified,
        findings,
        rule_results: results.to_vec(),
        judge_result: judge,
        metadata: check.metadata.clone(),
    };
    entry.opinion = Opinion::from_findings(findings, entry.evidence_missing());
    AuditRecorded { entry, rules: rules.to_vec() }
}

/// One built-in rule's result. A rule of the catalog was checked when it was added;
/// should one still not prepare (an evaluator grown stricter since), its result is
/// `unchecked`: missing evidence, not a finding against the output. The rule is prepared
/// once per definition ([`rules::memo`], which caches the pure `prepare`), not on every
/// check.
fn evaluate(rule: &Rule, output: &serde_json::Value) -> RuleResult {
    match rules::memo::prepared(rule) {
        Ok(prepared) => prepared.check(output),
        Err(error) => unchecked(
            &rule.name,
            rule.severity,
            rule.critical,
            format!("not checked: the rule cannot be evaluated ({error})"),
        ),
    }
}

/// Whether `entry` records `check`: the same rules, objectives, execution, agent and
/// metadata. (The output itself is not kept in the entry, so it cannot be compared: an
/// audit id names one check, and its sender keeps it to one output.)
fn same_check(entry: &AuditEntry, check: &Check) -> bool {
    let judged = check.judge.is_some() as usize;
    entry.scope.len() == check.rules.len() + judged
        && entry.scope.iter().map(String::as_str).zip(check.rules.iter().map(|rule| rule.as_str())).all(|(a, b)| a == b)
        && entry.objectives == check.objectives
        && entry.execution_id == check.execution_id
        && entry.agent_id == check.agent_id
        && entry.metadata == check.metadata
}

#[cfg(test)]
mod tests {
    use osp_protocol::quality::{JudgeSpec, RuleKind, Severity};
    use osp_protocol::Token;
    use osp_runtime::testing::{given, TEST_TIME};
    use serde_json::json;

    use super::*;
    use crate::aggregate::{Audit, AuditCommand};

    fn rule(name: &str, severity: Severity, kind: RuleKind) -> Rule {
        Rule { name: name.into(), description: String::new(), severity, critical: false, kind }
    }

    /// Three built-in rules: a summary is required (error), the text must not shout
    /// (warning), the score is 0 to 1 (error).
    fn catalog() -> Vec<Rule> {
        vec![
            rule("has-summary", Severity::Error, RuleKind::RequiredFields { fields: vec!["/summary".into()] }),
            rule(
                "no-shouting",
                Severity::Warning,
                RuleKind::Regex { pattern: "[A-Z]{5,}".into(), must_match: false, field: Some("/summary".into()) },
            ),
            rule(
                "score",
                Severity::Error,
                RuleKind::Range { min: Some(0.0), max: Some(1.0), field: Some("/score".into()) },
            ),
        ]
    }

    fn check_of(id: &str, output: serde_json::Value, rules: &[Rule]) -> CheckCommand {
        let check = Check {
            audit_id: Token::new("audit_id", id).unwrap(),
            output,
            rules: rules.iter().map(|rule| Token::new("rule", rule.name.as_str()).unwrap()).collect(),
            objectives: vec!["a usable summary".into()],
            execution_id: Some("run-1".into()),
            agent_id: Some("summarizer".into()),
            metadata: None,
            judge: None,
            timeout_ms: Some(1000),
        };
        CheckCommand { check: Box::new(check), rules: Some(rules.to_vec()) }
    }

    fn recorded(command: &CheckCommand) -> AuditRecorded {
        let events = given::<Audit>([]).when(&AuditCommand::Check(command.clone())).events();
        let [QualityEvent::AuditRecorded(recorded)] = events.as_slice() else { panic!("{events:?}") };
        recorded.clone()
    }

    #[test]
    fn a_check_records_results_findings_and_opinion_with_the_rules_it_used() {
        let passes = recorded(&check_of("a-1", json!({"summary": "fine", "score": 0.5}), &catalog()));
        assert_eq!(passes.entry.findings, Findings::default());
        assert_eq!(passes.entry.opinion, Opinion::Unqualified);
        assert_eq!(passes.rules, catalog());
        assert_eq!(passes.entry.scope, ["has-summary", "no-shouting", "score"]);
        assert_eq!(passes.entry.created_at, TEST_TIME);
        assert_eq!(passes.entry.execution_id.as_deref(), Some("run-1"));

        let shouts = recorded(&check_of("a-2", json!({"summary": "GREAT NEWS", "score": 0.5}), &catalog()));
        assert_eq!(shouts.entry.findings, Findings { critical: 0, major: 0, minor: 1 });
        assert_eq!(shouts.entry.opinion, Opinion::Qualified);
        let passed: Vec<bool> = shouts.entry.rule_results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, false, true]);

        // No summary fails the regex rule too: a missing field fails the rule naming it.
        let bad = recorded(&check_of("a-3", json!({"score": 7}), &catalog()));
        assert_eq!(bad.entry.findings, Findings { critical: 0, major: 2, minor: 1 });
        assert_eq!(bad.entry.opinion, Opinion::Adverse);
    }

    fn custom_rule() -> Rule {
        rule(
            "tone",
            Severity::Error,
            RuleKind::Custom { capability: Token::new("capability", "tone-check").unwrap(), params: None },
        )
    }

    fn judged(command: &CheckCommand) -> CheckCommand {
        let mut command = command.clone();
        command.check.judge = Some(JudgeSpec { criteria: vec!["accurate".into()], threshold: 0.7, model: None });
        command
    }

    fn ends(status: RunStatus, output: Option<serde_json::Value>) -> RunEnd {
        let error = (status != RunStatus::Completed).then(|| TaskError {
            kind: "timeout".into(),
            message: "attempt 1 timed out after 1000 ms".into(),
            details: None,
        });
        RunEnd { status, output, error }
    }

    /// The events of: `command`, then each part's run ending as `ends` says (by part).
    fn run_to_end(command: &CheckCommand, ends: &[(&str, RunEnd)]) -> Vec<QualityEvent> {
        let mut history = given::<Audit>([]).when(&AuditCommand::Check(command.clone())).events();
        for (key, end) in ends {
            let run_id = child_run_id(&command.check.audit_id, key);
            let part = AuditCommand::PartEnded { run_id, end: Some(end.clone()) };
            history.extend(given::<Audit>(history.clone()).when(&part).events());
        }
        history
    }

    fn entry_of(history: &[QualityEvent]) -> AuditEntry {
        match history.last() {
            Some(QualityEvent::AuditRecorded(recorded)) => recorded.entry.clone(),
            other => panic!("not recorded: {other:?}"),
        }
    }

    #[test]
    fn a_check_with_agent_parts_opens_then_records_when_the_last_part_ends() {
        let command =
            judged(&check_of("a-1", json!({"summary": "ok", "score": 1}), &[catalog().remove(0), custom_rule()]));
        let opened = given::<Audit>([]).when(&AuditCommand::Check(command.clone())).events();
        let [QualityEvent::AuditOpened(open)] = opened.as_slice() else { panic!("{opened:?}") };
        let parts: Vec<(&str, &str)> = open.parts.iter().map(|p| (p.part.as_str(), p.run_id.as_str())).collect();
        assert_eq!(parts, [("judge", "a-1:judge"), ("tone", "a-1:rule:tone")]);
        assert_eq!(open.results.len(), 1, "the built-in rule is evaluated at once");
        assert_eq!(open.deadline, TEST_TIME.plus_millis(1000 + CLOSE_GRACE_MS));

        let history = run_to_end(
            &command,
            &[
                ("judge", ends(RunStatus::Completed, Some(json!({"score": 0.9, "reasoning": "accurate"})))),
                ("rule:tone", ends(RunStatus::Completed, Some(json!({"passed": false, "message": "curt"})))),
            ],
        );
        assert!(matches!(history[1], QualityEvent::AuditPartEnded(_)));
        let entry = entry_of(&history);
        assert_eq!(entry.scope, ["has-summary", "tone", "judge"]);
        let results: Vec<(&str, bool)> = entry.rule_results.iter().map(|r| (r.rule_name.as_str(), r.passed)).collect();
        assert_eq!(results, [("has-summary", true), ("tone", false)]);
        assert_eq!(entry.judge_result.as_ref().map(|j| (j.score, j.passed)), Some((0.9, true)));
        assert_eq!((entry.findings.major, entry.opinion), (1, Opinion::Qualified));
        // Dated when the check was opened (the test log dates event n at TEST_TIME + n ms).
        assert_eq!(entry.created_at, TEST_TIME.plus_millis(1));
    }

    #[test]
    fn a_judge_below_its_threshold_is_a_major_finding() {
        let command = judged(&check_of("a-1", json!({"summary": "ok", "score": 1}), &catalog()[..1]));
        let history = run_to_end(
            &command,
            &[("judge", ends(RunStatus::Completed, Some(json!({"score": 0.3, "passed": true, "reasoning": "vague"}))))],
        );
        let entry = entry_of(&history);
        assert_eq!(entry.judge_result.as_ref().map(|j| j.passed), Some(false), "the threshold decides, not the judge");
        assert_eq!((entry.findings.major, entry.opinion), (1, Opinion::Qualified));
    }

    #[test]
    fn a_malformed_or_missing_answer_is_missing_evidence_saying_why() {
        let command = judged(&check_of("a-1", json!({"summary": "ok", "score": 1}), &catalog()[..1]));
        for (end, says) in [
            (ends(RunStatus::Completed, Some(json!({"score": 7, "reasoning": "x"}))), "outside 0 to 1"),
            (ends(RunStatus::Completed, Some(json!("looks fine"))), "not {score"),
            (ends(RunStatus::Failed, None), "timed out after 1000 ms"),
        ] {
            let entry = entry_of(&run_to_end(&command, &[("judge", end)]));
            assert_eq!(entry.opinion, Opinion::Disclaimer, "{says}");
            let judge = entry.rule_results.iter().find(|r| r.rule_name == "judge").expect("the judge's reason");
            assert!(judge.unchecked && judge.message.contains(says), "{}", judge.message);
        }
    }

    #[test]
    fn the_deadline_records_what_there_is_and_late_answers_change_nothing() {
        let command = check_of("a-1", json!({"summary": "ok", "score": 1}), &[custom_rule()]);
        let history = given::<Audit>([]).when(&AuditCommand::Check(command.clone())).events();
        given::<Audit>(history.clone()).when(&AuditCommand::Close).then(vec![]);
        let late = TEST_TIME.plus_millis(1000 + CLOSE_GRACE_MS);
        let closed = given::<Audit>(history.clone()).when_at(&AuditCommand::Close, late).events();
        let mut history = history;
        history.extend(closed);
        let entry = entry_of(&history);
        assert!(entry.rule_results[0].unchecked && entry.rule_results[0].message.contains("no answer within 1000 ms"));
        assert_eq!(entry.opinion, Opinion::Disclaimer);
        let part = AuditCommand::PartEnded {
            run_id: child_run_id(&command.check.audit_id, "rule:tone"),
            end: Some(ends(RunStatus::Completed, Some(json!({"passed": true})))),
        };
        given::<Audit>(history).when(&part).then(vec![]);
    }

    #[test]
    fn a_hint_about_a_run_of_no_part_is_refused_and_a_resent_check_changes_nothing() {
        let command = check_of("a-1", json!({"summary": "ok", "score": 1}), &[custom_rule()]);
        let history = given::<Audit>([]).when(&AuditCommand::Check(command.clone())).events();
        let stranger = AuditCommand::PartEnded {
            run_id: Token::new("run_id", "someone-else").unwrap(),
            end: Some(ends(RunStatus::Completed, Some(json!({"passed": true})))),
        };
        given::<Audit>(history.clone()).when(&stranger).then_refused("not a run of this check's parts");
        given::<Audit>(history.clone()).when(&AuditCommand::Check(command)).then(vec![]);
        let unread =
            AuditCommand::PartEnded { run_id: child_run_id(&Token::new("a", "a-1").unwrap(), "rule:tone"), end: None };
        given::<Audit>(history).when(&unread).then_refused("not read from the log");
    }

    #[test]
    fn the_same_check_again_records_nothing_and_another_under_its_id_conflicts() {
        let first = check_of("a-1", json!({"summary": "x", "score": 0}), &catalog());
        let history = [QualityEvent::AuditRecorded(recorded(&first))];
        // The output is not compared (it is not on the log): only what the entry holds.
        let resent = check_of("a-1", json!({"other": true}), &catalog());
        given::<Audit>(history.clone()).when(&AuditCommand::Check(resent)).then(vec![]);
        let other = check_of("a-1", json!({"summary": "x"}), &catalog()[..2]);
        let error = given::<Audit>(history).when(&AuditCommand::Check(other)).then_refused("another check");
        assert_eq!((error.code(), error.field()), ("conflict", Some("audit_id")));
    }

    #[test]
    fn a_check_whose_rules_were_not_read_is_not_evaluated() {
        let mut command = check_of("a-1", json!({}), &catalog());
        command.rules = None;
        given::<Audit>([]).when(&AuditCommand::Check(command)).then_refused("not read from the catalog");
    }
}
