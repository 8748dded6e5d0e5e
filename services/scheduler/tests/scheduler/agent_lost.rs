//! An agent lost mid-task: killed (its heartbeats stop), or marked offline by the
//! registry. The attempt fails and the retry runs on another agent.

use std::time::Duration;

use crate::common::{eventually, register_agent, submission, system, worker, RUN_WITHIN};
use osp_client::TaskFailure;
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::FailureCause;
use serde_json::json;

/// Works until told otherwise.
async fn works_forever(task: osp_client::Task) -> Result<serde_json::Value, TaskFailure> {
    task.cancelled().await;
    Err(TaskFailure::cancelled())
}

async fn echo(task: osp_client::Task) -> Result<serde_json::Value, TaskFailure> {
    Ok(json!({"by": "a2", "attempt": task.attempt()}))
}

async fn wait_started(runs: &osp_client::Scheduler, run_id: &str) {
    eventually(RUN_WITHIN, "the first attempt to start", || async {
        runs.get(run_id).await.unwrap().is_some_and(|run| run.status() == RunStatus::InProgress)
    })
    .await;
}

#[tokio::test]
async fn a_killed_agent_fails_its_attempt_by_heartbeat_timeout_and_the_retry_runs_elsewhere() {
    let (server, scheduler, client) = system().await;
    register_agent(&server.url(), "a1", &["work"]).await;
    let runs = client.scheduler();
    let options = json!({"heartbeatTimeoutMs": 1500, "retry": {"attempts": 2, "delayMs": 0}});
    runs.submit(&submission("r", "work", json!({}), options)).await.unwrap();

    // Agent a1 runs in a runtime of its own: shutting that down is the process dying —
    // its tasks, heartbeats and connection stop at once, with no last word.
    let url = server.url();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let doomed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let agent = runtime.block_on(worker(&url, "a1", "work", 1, works_forever));
        started_tx.send(()).unwrap();
        kill_rx.recv().unwrap();
        runtime.shutdown_background();
        drop(agent);
    });
    started_rx.recv().unwrap();
    wait_started(&runs, "r").await;
    kill_tx.send(()).unwrap();
    doomed.join().unwrap();

    let survivor = worker(&server.url(), "a2", "work", 1, echo).await;
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let (first, second) = (&run.attempts[0], &run.attempts[1]);
    assert_eq!((first.agent.as_deref(), first.cause), (Some("a1"), Some(FailureCause::Heartbeat)));
    assert_eq!(first.error.as_ref().unwrap().kind, "heartbeat");
    let silent = first.ended_at.unwrap().millis() - first.started_at.unwrap().millis();
    assert!(silent >= 1500, "failed after {silent} ms, within its heartbeat timeout");
    assert_eq!(second.agent.as_deref(), Some("a2"));
    survivor.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_agent_the_registry_marks_offline_loses_its_attempt() {
    let (server, scheduler, client) = system().await;
    // A registry that marks agents offline after one silent second. The worker sends
    // task heartbeats, but no registry heartbeats: the registry will find it silent.
    let registry = osp_registry::Registry::start(
        osp_tests::connect(&server.url()).await,
        osp_registry::Config { offline_after: Duration::from_secs(1), ..Default::default() },
    )
    .await
    .unwrap();
    register_agent(&server.url(), "a1", &["work"]).await;
    let agent = worker(&server.url(), "a1", "work", 1, works_forever).await;
    let runs = client.scheduler();
    let options = json!({"heartbeatTimeoutMs": 60000, "retry": {"attempts": 2, "delayMs": 0}});
    runs.submit(&submission("r", "work", json!({}), options)).await.unwrap();
    wait_started(&runs, "r").await;
    let survivor = {
        // a2 keeps itself alive in the registry the way agents do.
        let agent_client = crate::common::client(&server.url()).await;
        let alive =
            osp_client::Agent::builder("a2").capabilities(["work"]).heartbeat_interval(Duration::from_millis(200));
        let alive = alive.start(&agent_client).await.unwrap();
        (alive, worker(&server.url(), "a2", "work", 1, echo).await)
    };
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempts[0].cause, Some(FailureCause::AgentOffline));
    assert_eq!(run.attempts[1].agent.as_deref(), Some("a2"));
    survivor.1.shutdown().await;
    survivor.0.shutdown().await.unwrap();
    agent.shutdown().await;
    registry.shutdown().await;
    scheduler.shutdown().await;
}
