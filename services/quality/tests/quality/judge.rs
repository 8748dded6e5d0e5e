//! The judge and custom rules, made by real agents through the scheduler: a check that
//! needs agents is opened, its parts run as tasks, and the entry is recorded when they
//! answered — or say why they did not (a malformed reply, a score out of range, no
//! answer in time).

use std::time::Duration;

use osp_client::{CheckRequest, Client, TaskFailure};
use osp_protocol::quality::{CheckOutcome, JudgeSpec, Opinion};
use osp_scheduler::Scheduler;
use serde_json::{json, Value};

use crate::common::{add, client, system};

/// How long a test waits for an open check's entry.
const WITHIN: Duration = Duration::from_secs(30);

async fn scheduler(url: &str) -> Scheduler {
    Scheduler::start(osp_tests::connect(url).await, osp_scheduler::Config::default())
        .await
        .expect("start the scheduler")
}

/// An agent `name` of `capability` answering every task with `reply(input)`.
async fn agent(url: &str, name: &str, capability: &str, reply: fn(&Value) -> Value) -> osp_client::Worker {
    let client = client(url).await;
    osp_client::Worker::builder(&client, name)
        .capability(capability)
        .max_concurrency(4)
        .start(move |task: osp_client::Task| async move { Ok::<_, TaskFailure>(reply(task.input())) })
        .await
        .expect("start an agent")
}

fn judge(threshold: f64) -> JudgeSpec {
    JudgeSpec { criteria: vec!["states the facts".into()], threshold, model: Some("tiny".into()) }
}

/// Checks `output` against `rules` and the judge, waiting for the entry.
async fn judged(
    client: &Client,
    id: &str,
    output: Value,
    rules: &[&str],
    timeout_ms: u64,
) -> osp_protocol::quality::AuditEntry {
    let request =
        CheckRequest::new(output, rules.iter().copied()).audit_id(id).judge(judge(0.7)).timeout_ms(timeout_ms);
    match client.quality().check(&request).await.expect("the check is accepted").result {
        CheckOutcome::Open(open) => assert_eq!(open.waiting, ["judge"]),
        CheckOutcome::Recorded(entry) => panic!("a judged check cannot be recorded at once: {entry:?}"),
    }
    client.quality().check_and_wait(&request, WITHIN).await.expect("the entry is recorded")
}

#[tokio::test]
async fn a_judge_agent_scores_the_output_and_the_threshold_decides() {
    let (server, quality, client) = system().await;
    let scheduler = scheduler(&server.url()).await;
    add(
        &client,
        &json!({"name": "has-summary", "severity": "error", "kind": "required-fields",
                         "params": {"fields": ["/summary"]}}),
    )
    .await;
    // The judge sees the output, the criteria and the threshold in its task's input.
    let judge_agent = agent(&server.url(), "judge-1", "judge", |input| {
        assert_eq!((input["criteria"][0].as_str(), input["threshold"].as_f64()), (Some("states the facts"), Some(0.7)));
        let score = if input["output"]["summary"] == "facts" { 0.9 } else { 0.5 };
        json!({"score": score, "reasoning": format!("scored {score}")})
    })
    .await;

    let good = judged(&client, "good", json!({"summary": "facts"}), &["has-summary"], 20_000).await;
    assert_eq!(good.scope, ["has-summary", "judge"]);
    let verdict = good.judge_result.as_ref().expect("the judge's result");
    assert_eq!((verdict.score, verdict.passed, verdict.reasoning.as_str()), (0.9, true, "scored 0.9"));
    assert_eq!(good.opinion, Opinion::Unqualified);

    let weak = judged(&client, "weak", json!({"summary": "vibes"}), &["has-summary"], 20_000).await;
    assert_eq!(weak.judge_result.as_ref().map(|j| j.passed), Some(false));
    assert_eq!((weak.findings.major, weak.opinion), (1, Opinion::Qualified));

    // The judge's run is a run like any other, named after the audit.
    let run = client.scheduler().get("good:judge").await.unwrap().expect("the judge's run");
    assert_eq!(run.capability, "judge");
    judge_agent.shutdown().await;
    scheduler.shutdown().await;
    quality.shutdown().await;
}

#[tokio::test]
async fn a_malformed_or_out_of_range_reply_is_missing_evidence_saying_why() {
    let (server, quality, client) = system().await;
    let scheduler = scheduler(&server.url()).await;
    let judge_agent = agent(&server.url(), "judge-1", "judge", |input| match input["output"]["case"].as_str() {
        Some("range") => json!({"score": 1.5, "reasoning": "very good"}),
        _ => json!({"verdict": "fine"}),
    })
    .await;
    for (case, says) in [("range", "outside 0 to 1"), ("shape", "not {score")] {
        let entry = judged(&client, case, json!({"case": case}), &[], 20_000).await;
        assert_eq!(entry.opinion, Opinion::Disclaimer, "{case}");
        assert!(entry.judge_result.is_none());
        let reason = entry.rule_results.iter().find(|r| r.rule_name == "judge").expect("the judge's reason");
        assert!(reason.unchecked && reason.message.contains(says), "{case}: {}", reason.message);
    }
    judge_agent.shutdown().await;
    scheduler.shutdown().await;
    quality.shutdown().await;
}

#[tokio::test]
async fn a_judge_that_never_answers_is_missing_evidence_after_the_timeout() {
    let (server, quality, client) = system().await;
    let scheduler = scheduler(&server.url()).await;
    // No judge agent at all: the judge's run waits for one, and times out.
    let entry = judged(&client, "alone", json!({"summary": "x"}), &[], 1_000).await;
    assert_eq!(entry.opinion, Opinion::Disclaimer);
    let reason = entry.rule_results.iter().find(|r| r.rule_name == "judge").expect("the judge's reason");
    assert!(reason.message.contains("timed out after 1000 ms"), "{}", reason.message);
    scheduler.shutdown().await;
    quality.shutdown().await;
}

#[tokio::test]
async fn a_custom_rule_is_checked_by_an_agent_of_its_capability() {
    let (server, quality, client) = system().await;
    let scheduler = scheduler(&server.url()).await;
    add(
        &client,
        &json!({"name": "polite", "severity": "warning", "kind": "custom",
                         "params": {"capability": "tone-check"}}),
    )
    .await;
    let tone = agent(&server.url(), "tone-1", "tone-check", |input| {
        assert_eq!(input["rule"]["name"], "polite");
        let rude = input["output"]["text"].as_str().unwrap_or_default().contains('!');
        json!({"passed": !rude, "message": if rude { "shouts" } else { "calm" }})
    })
    .await;
    let check = |id: &str, text: &str| CheckRequest::new(json!({"text": text}), ["polite"]).audit_id(id);
    let calm = client.quality().check_and_wait(&check("calm", "thank you"), WITHIN).await.unwrap();
    assert_eq!((calm.rule_results[0].passed, calm.opinion), (true, Opinion::Unqualified));
    let rude = client.quality().check_and_wait(&check("rude", "NOW!"), WITHIN).await.unwrap();
    let result = &rude.rule_results[0];
    assert_eq!((result.passed, result.message.as_str(), rude.opinion), (false, "shouts", Opinion::Qualified));
    tone.shutdown().await;
    scheduler.shutdown().await;
    quality.shutdown().await;
}

#[tokio::test]
async fn a_quality_instance_killed_while_checks_wait_for_their_judge_loses_nothing() {
    let server = crate::common::server().await;
    let url = server.url();
    let mut instances = vec![crate::common::spawn_quality(&url).await, crate::common::spawn_quality(&url).await];
    let scheduler = scheduler(&url).await;
    // A slow judge, so the checks are still open when an instance dies.
    let client_of_judge = client(&url).await;
    let judge_agent = osp_client::Worker::builder(&client_of_judge, "judge-slow")
        .capability("judge")
        .max_concurrency(4)
        .start(|task: osp_client::Task| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let score = if task.input()["output"]["n"].as_u64().unwrap_or(0).is_multiple_of(2) { 0.9 } else { 0.1 };
            Ok::<_, TaskFailure>(json!({"score": score, "reasoning": "even numbers please"}))
        })
        .await
        .expect("start the judge");
    let client = client(&url).await.with_timeout(Duration::from_secs(5));
    let requests: Vec<CheckRequest> = (0..24)
        .map(|n| {
            CheckRequest::new(json!({"n": n}), Vec::<String>::new())
                .audit_id(format!("j-{n:02}"))
                .judge(judge(0.5))
                .timeout_ms(30_000)
        })
        .collect();
    for request in &requests {
        // A check in the hands of an instance killed later is sent again by the waiting below.
        client.quality().check(request).await.expect("the check is accepted");
    }
    let mut victim = instances.remove(0);
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();

    for (n, request) in requests.iter().enumerate() {
        let entry = client.quality().check_and_wait(request, WITHIN).await.expect("the entry is recorded");
        let judged = entry.judge_result.as_ref().unwrap_or_else(|| panic!("check {n} lost its judge: {entry:?}"));
        assert_eq!(judged.passed, n % 2 == 0, "check {n}");
    }
    let recorded = crate::common::recorded_audits(&url).await;
    assert_eq!(recorded.len(), requests.len());
    assert!(recorded.values().all(|entries| entries.len() == 1), "each entry recorded once");
    judge_agent.shutdown().await;
    scheduler.shutdown().await;
}
