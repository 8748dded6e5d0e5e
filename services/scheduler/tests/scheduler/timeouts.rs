//! Timeouts: each `onTimeout` action, and a retry that gets the whole timeout again.

use crate::common::{submission, system_with_agent, worker, RUN_WITHIN};
use osp_client::TaskFailure;
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::FailureCause;
use serde_json::json;

/// An agent that never finishes attempt 1 (until told to stop) and finishes later ones at once.
async fn slow_first_attempt(task: osp_client::Task) -> Result<serde_json::Value, TaskFailure> {
    let wait_ms = task.input()["sleep_ms"].as_u64().unwrap_or(60_000);
    if task.attempt() == 1 {
        tokio::select! {
            () = task.cancelled() => return Err(TaskFailure::cancelled()),
            () = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => {}
        }
    }
    Ok(json!({"attempt": task.attempt()}))
}

#[tokio::test]
async fn each_timeout_action() {
    let (server, scheduler, client) = system_with_agent("a1", "slow").await;
    let agent = worker(&server.url(), "a1", "slow", 8, slow_first_attempt).await;
    let runs = client.scheduler();
    runs.submit(&submission("fail", "slow", json!({}), json!({"timeout": {"ms": 700, "onTimeout": "fail"}})))
        .await
        .unwrap();
    runs.submit(&submission("cancel", "slow", json!({}), json!({"timeout": {"ms": 700, "onTimeout": "cancel"}})))
        .await
        .unwrap();
    runs.submit(&submission(
        "continue",
        "slow",
        json!({"sleep_ms": 1500}),
        json!({"timeout": {"ms": 500, "onTimeout": "continue"}}),
    ))
    .await
    .unwrap();

    let failed = runs.wait("fail", RUN_WITHIN).await.unwrap();
    assert_eq!(failed.status(), RunStatus::Failed);
    let error = failed.error.as_ref().unwrap();
    assert_eq!(error.kind, "timeout", "{error:?}");
    assert!(failed.attempts[0].timed_out);
    assert_eq!(failed.attempts[0].cause, Some(FailureCause::Timeout));
    let elapsed = failed.ended_at.unwrap().millis() - failed.attempts[0].dispatched_at.unwrap().millis();
    assert!(elapsed >= 700, "timed out after {elapsed} ms, before its 700 ms");

    let cancelled = runs.wait("cancel", RUN_WITHIN).await.unwrap();
    assert_eq!(cancelled.status(), RunStatus::Cancelled);
    assert!(cancelled.cancel_reason.as_deref().unwrap().contains("timed out after 700 ms"), "{cancelled:?}");

    let continued = runs.wait("continue", RUN_WITHIN).await.unwrap();
    assert_eq!(continued.status(), RunStatus::Completed, "continue records the timeout and goes on");
    assert!(continued.attempts[0].timed_out);
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_retry_restarts_the_timeout() {
    let (server, scheduler, client) = system_with_agent("a1", "slow").await;
    let agent = worker(&server.url(), "a1", "slow", 4, slow_first_attempt).await;
    let runs = client.scheduler();
    let options = json!({"timeout": {"ms": 800}, "retry": {"attempts": 2, "delayMs": 0}});
    runs.submit(&submission("r", "slow", json!({}), options)).await.unwrap();
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempts.len(), 2);
    assert!(run.attempts[0].timed_out && !run.attempts[1].timed_out);
    let second = &run.attempts[1];
    assert_eq!(
        second.deadline.unwrap().millis(),
        second.dispatched_at.unwrap().millis() + 800,
        "the whole timeout again"
    );
    agent.shutdown().await;
    scheduler.shutdown().await;
}
