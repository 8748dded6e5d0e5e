//! Wait for input: the agent asks, the run waits, the answer resumes it and reaches the agent.

use crate::common::{eventually, submission, system_with_agent, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::json;

#[tokio::test]
async fn a_question_round_trip() {
    let (server, scheduler, client) = system_with_agent("a1", "ask").await;
    let agent = worker(&server.url(), "a1", "ask", 2, |task| async move {
        let answer = task
            .ask(json!({"question": "which region?"}))
            .await
            .map_err(|e| osp_client::TaskFailure::new(e.to_string()))?;
        Ok(json!({"deployed_to": answer}))
    })
    .await;
    let runs = client.scheduler();
    runs.submit(&submission("r", "ask", json!({}), json!({}))).await.unwrap();
    eventually(RUN_WITHIN, "the run to wait for an answer", || async {
        runs.get("r").await.unwrap().is_some_and(|r| r.status() == RunStatus::Awaiting)
    })
    .await;
    let run = runs.get("r").await.unwrap().unwrap();
    let question = run.open_input().expect("an open question");
    assert_eq!(osp_protocol::json::from_msgpack_value(&question.question), json!({"question": "which region?"}));
    assert_eq!(crate::common::code(runs.answer("r", Some("nope"), json!("x")).await), "not_found");
    let answered = runs.answer("r", None, json!("eu-west")).await.unwrap();
    assert_eq!(answered.result.status, RunStatus::InProgress);
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed);
    assert_eq!(osp_protocol::json::from_msgpack_value(run.output.as_ref().unwrap()), json!({"deployed_to": "eu-west"}));
    assert_eq!(run.inputs[0].answered_by.as_deref(), Some("user:test"));
    agent.shutdown().await;
    scheduler.shutdown().await;
}
