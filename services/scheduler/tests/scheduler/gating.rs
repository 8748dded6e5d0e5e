//! Runs gated on checks (the run option `checks`), against a real server with the
//! scheduler, the quality service and real agents: each `onFailure` action, a judge
//! agent's verdict, an unknown rule refused at submit, and missing evidence when no
//! quality service answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{client, code, register_agent, submission, system_with_agent, worker, RUN_WITHIN};
use osp_client::{Client, TaskFailure};
use osp_protocol::quality::Opinion;
use osp_protocol::scheduler::queries::{RunStatus, RunView};
use osp_protocol::scheduler::FailureCause;
use osp_quality::Quality;
use serde_json::{json, Value};

/// A quality instance on `url` with the rule `has-summary` (a required `/summary`).
async fn quality_with_rule(url: &str) -> Quality {
    let quality = Quality::start(osp_tests::connect(url).await, osp_quality::Config::default())
        .await
        .expect("start the quality service");
    let rule = json!({"name": "has-summary", "severity": "error", "kind": "required-fields",
                      "params": {"fields": ["/summary"]}});
    client(url).await.command::<_, Value>("quality", "add_rule", &rule).await.expect("add the rule");
    quality
}

/// An agent that writes a summary only when the input asks for one.
async fn summarize(task: osp_client::Task) -> Result<Value, TaskFailure> {
    Ok(match task.input()["good"].as_bool() {
        Some(true) => json!({"summary": "short and sweet"}),
        _ => json!({"text": "no summary here"}),
    })
}

fn gated(on_failure: &str) -> Value {
    json!({"checks": {"rules": ["has-summary"], "onFailure": on_failure}, "retry": {"attempts": 2}})
}

async fn wait(client: &Client, run_id: &str) -> RunView {
    client.scheduler().wait(run_id, RUN_WITHIN).await.unwrap_or_else(|e| panic!("{run_id}: {e}"))
}

async fn wait_status(client: &Client, run_id: &str, status: RunStatus) -> RunView {
    let runs = client.scheduler();
    let deadline = tokio::time::Instant::now() + RUN_WITHIN;
    loop {
        if let Some(run) = runs.get(run_id).await.ok().flatten().filter(|run| run.status() == status) {
            return run;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {run_id} to be {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_passing_output_completes_the_run_and_a_failing_one_fails_it_with_its_audit() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let quality = quality_with_rule(&server.url()).await;
    let agent = worker(&server.url(), "a1", "summarize", 4, summarize).await;
    let runs = client.scheduler();
    runs.submit(&submission("good", "summarize", json!({"good": true}), gated("fail"))).await.unwrap();
    runs.submit(&submission("bad", "summarize", json!({"good": false}), gated("fail"))).await.unwrap();

    let good = wait(&client, "good").await;
    assert_eq!(good.status(), RunStatus::Completed);
    let check = good.attempts[0].check.as_ref().expect("the attempt was checked");
    assert_eq!((check.opinion, check.passed), (Some(Opinion::Unqualified), Some(true)));
    assert_eq!(osp_protocol::json::from_msgpack_value(good.output.as_ref().unwrap())["summary"], "short and sweet");

    let bad = wait(&client, "bad").await;
    assert_eq!(bad.status(), RunStatus::Failed);
    assert_eq!(bad.attempts.len(), 1, "onFailure fail does not retry, whatever the retry policy");
    let error = bad.error.as_ref().unwrap();
    assert_eq!(error.kind, "check_failed");
    assert!(error.message.contains("has-summary"), "{}", error.message);
    // The audit entry is the quality service's, under the id the attempt names.
    let audit_id = &bad.attempts[0].check.as_ref().unwrap().audit_id;
    let entry = client.quality().wait_recorded(audit_id, RUN_WITHIN).await.unwrap();
    assert_eq!((entry.execution_id.as_deref(), entry.agent_id.as_deref()), (Some("bad"), Some("a1")));
    assert_eq!(entry.opinion, Opinion::Qualified);
    agent.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn retry_gives_the_next_attempt_the_failed_checks_as_feedback() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let quality = quality_with_rule(&server.url()).await;
    let feedback_seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = feedback_seen.clone();
    let agent = worker(&server.url(), "a1", "summarize", 4, move |task: osp_client::Task| {
        let seen = seen.clone();
        async move {
            Ok(match task.feedback() {
                None => json!({"text": "forgot the summary"}),
                Some(feedback) => {
                    seen.lock().unwrap().push(feedback.clone());
                    json!({"summary": "fixed after feedback"})
                }
            })
        }
    })
    .await;
    client.scheduler().submit(&submission("r", "summarize", json!({}), gated("retry"))).await.unwrap();
    let run = wait(&client, "r").await;
    assert_eq!(run.status(), RunStatus::Completed);
    assert_eq!(run.attempts.len(), 2);
    assert_eq!(run.attempts[0].cause, Some(FailureCause::Check));
    assert_eq!(run.attempts[0].check.as_ref().unwrap().passed, Some(false));
    assert_eq!(run.attempts[1].check.as_ref().unwrap().passed, Some(true));
    let feedback = feedback_seen.lock().unwrap().clone();
    assert_eq!(feedback.len(), 1, "{feedback:?}");
    assert_eq!(feedback[0]["failed"][0]["ruleName"], "has-summary");
    agent.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn approval_lets_a_person_accept_or_refuse_an_output_that_failed() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let quality = quality_with_rule(&server.url()).await;
    let agent = worker(&server.url(), "a1", "summarize", 4, summarize).await;
    let options = json!({"checks": {"rules": ["has-summary"], "onFailure": "approval", "approvers": ["ann"]}});
    let runs = client.scheduler();
    runs.submit(&submission("kept", "summarize", json!({}), options.clone())).await.unwrap();
    runs.submit(&submission("refused", "summarize", json!({}), options)).await.unwrap();
    for run_id in ["kept", "refused"] {
        let waiting = wait_status(&client, run_id, RunStatus::Awaiting).await;
        assert!(waiting.approval.as_ref().unwrap().message.contains("failed its checks"));
    }
    let eve = client.clone().with_actor("eve").scheduler();
    assert_eq!(code(eve.approve("kept", None).await), "forbidden");
    let ann = client.clone().with_actor("ann").scheduler();
    ann.approve("kept", Some("good enough")).await.unwrap();
    ann.reject("refused", Some("no summary, no deal")).await.unwrap();
    let kept = wait(&client, "kept").await;
    assert_eq!(kept.status(), RunStatus::Completed);
    assert_eq!(osp_protocol::json::from_msgpack_value(kept.output.as_ref().unwrap())["text"], "no summary here");
    let refused = wait(&client, "refused").await;
    assert_eq!((refused.status(), refused.error.unwrap().kind.as_str()), (RunStatus::Failed, "check_rejected"));
    agent.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_judge_agent_gates_a_run_by_its_score() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let quality = quality_with_rule(&server.url()).await;
    let agent = worker(&server.url(), "a1", "summarize", 4, summarize).await;
    // The judge scores a summary 0.9 and anything else 0.2.
    let judge = worker(&server.url(), "judge-1", "judge", 4, |task: osp_client::Task| async move {
        let has = task.input()["output"].get("summary").is_some();
        Ok(json!({"score": if has { 0.9 } else { 0.2 }, "reasoning": if has { "summarised" } else { "no summary" }}))
    })
    .await;
    let options = json!({"checks": {"judge": {"criteria": ["summarises the text"], "threshold": 0.7}}});
    let runs = client.scheduler();
    runs.submit(&submission("judged-good", "summarize", json!({"good": true}), options.clone())).await.unwrap();
    runs.submit(&submission("judged-bad", "summarize", json!({}), options)).await.unwrap();
    assert_eq!(wait(&client, "judged-good").await.status(), RunStatus::Completed);
    let bad = wait(&client, "judged-bad").await;
    assert_eq!(bad.status(), RunStatus::Failed);
    assert!(bad.error.as_ref().unwrap().message.contains("judge: score 0.20: no summary"), "{:?}", bad.error);
    judge.shutdown().await;
    agent.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_submit_whose_checks_name_an_unknown_rule_is_refused() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    let quality = quality_with_rule(&server.url()).await;
    let options = json!({"checks": {"rules": ["has-summary", "no-such-rule"]}});
    let refused = client.scheduler().submit(&submission("r", "summarize", json!({}), options)).await;
    let error = refused.as_ref().err().and_then(|e| e.rejection()).cloned().expect("refused");
    assert_eq!((error.code(), error.field()), ("not_found", Some("options.checks.rules")));
    assert!(error.to_string().contains("no-such-rule") && error.to_string().contains("has-summary"), "{error}");
    quality.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn with_no_quality_service_the_checks_deadline_counts_evidence_as_missing() {
    let (server, scheduler, client) = system_with_agent("a1", "summarize").await;
    register_agent(&server.url(), "a1", &["summarize"]).await;
    let agent = worker(&server.url(), "a1", "summarize", 4, summarize).await;
    let options = json!({"checks": {"judge": {"criteria": "anything", "threshold": 0.5}, "timeoutMs": 200,
                                    "onMissingEvidence": "pass"}});
    client.scheduler().submit(&submission("lonely", "summarize", json!({"good": true}), options)).await.unwrap();
    let started = tokio::time::Instant::now();
    let run = wait(&client, "lonely").await;
    assert_eq!(run.status(), RunStatus::Completed, "onMissingEvidence pass");
    assert_eq!(run.attempts[0].check.as_ref().unwrap().opinion, Some(Opinion::Disclaimer));
    assert!(started.elapsed() >= Duration::from_millis(200), "not before the checks' deadline");
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_evaluator_optimizer_can_evaluate_with_a_quality_check() {
    let (server, scheduler, client) = system_with_agent("writer", "write").await;
    let quality = quality_with_rule(&server.url()).await;
    // The writer forgets the summary until it is given feedback.
    let agent = worker(&server.url(), "writer", "write", 4, |task: osp_client::Task| async move {
        Ok(match task.input()["feedback"].is_null() {
            true => json!({"text": "a draft"}),
            false => json!({"summary": "a summary, after feedback"}),
        })
    })
    .await;
    let definition = serde_json::from_value(json!({"evaluatorOptimizer": {
        "generate": {"task": {"capability": "write"}},
        "evaluate": {"check": {"rules": ["has-summary"]}},
        "maxIterations": 3}}))
    .unwrap();
    let submission = osp_client::Submission::workflow(definition, json!({"topic": "foxes"})).run_id("eo");
    client.scheduler().submit(&submission).await.unwrap();
    let run = wait(&client, "eo").await;
    assert_eq!(run.status(), RunStatus::Completed, "{:?}", run.error);
    let output = osp_protocol::json::from_msgpack_value(run.output.as_ref().unwrap());
    assert_eq!((output["iteration"].as_u64(), output["stoppedBecause"].as_str()), (Some(2), Some("passed")));
    assert_eq!(output["iterations"][0]["feedback"]["failed"][0]["ruleName"], "has-summary");
    // Each evaluation is an audit entry of its own, of the step's run.
    let evaluation = client.scheduler().get("eo:evaluate:1").await.unwrap().expect("the first evaluate step");
    let audit_id = evaluation.attempts[0].check.as_ref().expect("checked").audit_id.clone();
    let entry = client.quality().wait_recorded(&audit_id, RUN_WITHIN).await.unwrap();
    assert_eq!(entry.execution_id.as_deref(), Some("eo:evaluate:1"));
    agent.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
}
