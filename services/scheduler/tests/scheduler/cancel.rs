//! Cancel: graceful (the agent stops in time), graceful then forced (it does not),
//! forced at once, and a pending retry cancelled with the run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{eventually, submission, system_with_agent, worker, RUN_WITHIN};
use osp_client::TaskFailure;
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::RunEvent;
use serde_json::json;

/// Works until cancelled; with `ignore_cancel` in the input it does not listen.
async fn long_task(task: osp_client::Task) -> Result<serde_json::Value, TaskFailure> {
    if task.input()["ignore_cancel"].as_bool().unwrap_or(false) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return Ok(json!("too late"));
    }
    task.cancelled().await;
    Err(TaskFailure::cancelled())
}

async fn wait_in_progress(runs: &osp_client::Scheduler, run_id: &str) {
    eventually(RUN_WITHIN, "the run to be in progress", || async {
        runs.get(run_id).await.unwrap().is_some_and(|run| run.status() == RunStatus::InProgress)
    })
    .await;
}

/// The `run.cancelled` event of a run.
async fn cancelled_event(runs: &osp_client::Scheduler, run_id: &str) -> osp_protocol::scheduler::Cancelled {
    use futures::StreamExt;
    let mut watch = runs.watch(run_id).await.unwrap();
    while let Some(update) = watch.next().await {
        if let RunEvent::Cancelled(cancelled) = update.unwrap().event {
            return cancelled;
        }
    }
    panic!("the run ended without run.cancelled")
}

#[tokio::test]
async fn graceful_cancel_lets_the_agent_stop_and_forces_when_it_does_not() {
    let (server, scheduler, client) = system_with_agent("a1", "long").await;
    let agent = worker(&server.url(), "a1", "long", 4, long_task).await;
    let runs = client.scheduler();
    runs.submit(&submission("polite", "long", json!({}), json!({}))).await.unwrap();
    runs.submit(&submission("stubborn", "long", json!({"ignore_cancel": true}), json!({}))).await.unwrap();
    wait_in_progress(&runs, "polite").await;
    wait_in_progress(&runs, "stubborn").await;

    let outcome = runs.cancel("polite", Some("no longer needed"), Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(outcome.result.status, RunStatus::InProgress, "graceful: the agent is asked first");
    let polite = runs.wait("polite", RUN_WITHIN).await.unwrap();
    assert_eq!((polite.status(), polite.cancel_reason.as_deref()), (RunStatus::Cancelled, Some("no longer needed")));
    assert!(!cancelled_event(&runs, "polite").await.forced, "the agent stopped by itself");

    runs.cancel("stubborn", Some("stop"), Some(Duration::from_millis(600))).await.unwrap();
    let stubborn = runs.wait("stubborn", RUN_WITHIN).await.unwrap();
    assert_eq!(stubborn.status(), RunStatus::Cancelled);
    assert!(cancelled_event(&runs, "stubborn").await.forced, "forced after the graceful timeout");
    assert!(stubborn.cancelling_until.is_none(), "the cancel is over");
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_forced_cancel_ends_the_run_at_once_and_the_agent_is_told() {
    let (server, scheduler, client) = system_with_agent("a1", "long").await;
    let told = Arc::new(AtomicBool::new(false));
    let agent = {
        let told = told.clone();
        worker(&server.url(), "a1", "long", 4, move |task| {
            let told = told.clone();
            async move {
                task.cancelled().await;
                told.store(true, Ordering::SeqCst);
                Err(TaskFailure::cancelled())
            }
        })
        .await
    };
    let runs = client.scheduler();
    runs.submit(&submission("r", "long", json!({}), json!({}))).await.unwrap();
    wait_in_progress(&runs, "r").await;
    let outcome = runs.cancel("r", Some("now"), None).await.unwrap();
    assert_eq!(outcome.result.status, RunStatus::Cancelled);
    assert!(cancelled_event(&runs, "r").await.forced);
    eventually(RUN_WITHIN, "the agent to hear the cancel", || async { told.load(Ordering::SeqCst) }).await;
    assert_eq!(crate::common::code(runs.cancel("r", None, None).await), "illegal_transition");
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_pending_retry_is_cancelled_with_the_run() {
    let (server, scheduler, client) = system_with_agent("a1", "flaky").await;
    let agent = worker(&server.url(), "a1", "flaky", 4, |_task| async { Err(TaskFailure::new("no")) }).await;
    let runs = client.scheduler();
    runs.submit(&submission("r", "flaky", json!({}), json!({"retry": {"attempts": 3, "delayMs": 1500}})))
        .await
        .unwrap();
    eventually(RUN_WITHIN, "a retry to be scheduled", || async {
        runs.get("r").await.unwrap().is_some_and(|run| run.retry_at.is_some())
    })
    .await;
    runs.cancel("r", None, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let run = runs.get("r").await.unwrap().unwrap();
    assert_eq!(
        (run.status(), run.attempts.len(), run.retry_at),
        (RunStatus::Cancelled, 1, None),
        "the retry never ran"
    );
    agent.shutdown().await;
    scheduler.shutdown().await;
}
