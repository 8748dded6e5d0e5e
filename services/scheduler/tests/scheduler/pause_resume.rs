//! Pause and resume: nothing new is dispatched while paused, a task taken during the
//! pause keeps its place and is dispatched again on resume.

use std::time::Duration;

use crate::common::{eventually, submission, system, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::json;

async fn echo(task: osp_client::Task) -> Result<serde_json::Value, osp_client::TaskFailure> {
    Ok(task.input().clone())
}

#[tokio::test]
async fn a_task_taken_while_paused_is_given_back_and_dispatched_on_resume() {
    let (server, scheduler, client) = system().await;
    let runs = client.scheduler();
    // No agent yet: the run waits on the work queue.
    runs.submit(&submission("r", "later", json!({"x": 1}), json!({"waitForAgent": true}))).await.unwrap();
    let paused = runs.pause("r", Some("maintenance")).await.unwrap();
    assert!(paused.result.paused);
    assert_eq!(crate::common::code(runs.pause("r", None).await), "illegal_transition");

    let agent = worker(&server.url(), "a1", "later", 2, echo).await;
    eventually(RUN_WITHIN, "the agent to give the task back", || async { agent.stats().declined > 0 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = runs.get("r").await.unwrap().unwrap();
    assert_eq!((run.status(), run.paused, run.attempts[0].dispatches), (RunStatus::Pending, true, 1));
    assert!(run.attempts[0].started_at.is_none(), "no work was done while paused");

    runs.resume("r").await.unwrap();
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!((run.status(), run.attempts.len(), run.attempts[0].dispatches), (RunStatus::Completed, 1, 2));
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn approval_during_a_pause_waits_for_resume_and_resuming_a_running_run_is_refused() {
    let (server, scheduler, client) = system().await;
    crate::common::register_agent(&server.url(), "a1", &["slow"]).await;
    let agent = worker(&server.url(), "a1", "slow", 2, |task| async move {
        tokio::time::sleep(Duration::from_millis(task.input()["ms"].as_u64().unwrap_or(0))).await;
        Ok(json!("done"))
    })
    .await;
    let runs = client.scheduler();
    runs.submit(&submission("gated", "slow", json!({}), json!({"approval": {"message": "go?"}}))).await.unwrap();
    runs.pause("gated", None).await.unwrap();
    runs.approve("gated", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = runs.get("gated").await.unwrap().unwrap();
    assert!(run.attempts.is_empty(), "approved while paused: nothing dispatched yet");
    runs.resume("gated").await.unwrap();
    assert_eq!(runs.wait("gated", RUN_WITHIN).await.unwrap().status(), RunStatus::Completed);

    runs.submit(&submission("busy", "slow", json!({"ms": 1500}), json!({}))).await.unwrap();
    eventually(RUN_WITHIN, "the run to start", || async {
        runs.get("busy").await.unwrap().is_some_and(|r| r.status() == RunStatus::InProgress)
    })
    .await;
    assert_eq!(crate::common::code(runs.resume("busy").await), "illegal_transition");
    agent.shutdown().await;
    scheduler.shutdown().await;
}
