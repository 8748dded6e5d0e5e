//! Retries: every backoff kind's delays, measured between one attempt's failure and the
//! next attempt's dispatch, and `retryOn`.

use crate::common::{submission, system_with_agent, worker, RUN_WITHIN};
use osp_client::TaskFailure;
use osp_protocol::scheduler::queries::{RunStatus, RunView};
use serde_json::json;

async fn always_fails(task: osp_client::Task) -> Result<serde_json::Value, TaskFailure> {
    let kind = task.input()["kind"].as_str().unwrap_or("flaky").to_owned();
    Err(TaskFailure::new(format!("attempt {} failed", task.attempt())).kind(kind))
}

/// The delays between each failure and the next dispatch, in ms.
fn gaps(run: &RunView) -> Vec<i64> {
    run.attempts
        .windows(2)
        .map(|pair| pair[1].dispatched_at.unwrap().millis() - pair[0].ended_at.unwrap().millis())
        .collect()
}

#[tokio::test]
async fn each_backoff_kind_waits_its_delays() {
    let (server, scheduler, client) = system_with_agent("a1", "flaky").await;
    let agent = worker(&server.url(), "a1", "flaky", 8, always_fails).await;
    let runs = client.scheduler();
    let cases = [
        ("none", json!({"attempts": 4, "delayMs": 300, "backoff": "none"}), [300, 300, 300]),
        ("linear", json!({"attempts": 4, "delayMs": 300, "backoff": "linear"}), [300, 600, 900]),
        (
            "exponential",
            json!({"attempts": 4, "delayMs": 300, "backoff": "exponential", "maxDelayMs": 1000}),
            [300, 600, 1000],
        ),
    ];
    for (name, retry, _) in &cases {
        runs.submit(&submission(name, "flaky", json!({}), json!({ "retry": retry }))).await.unwrap();
    }
    for (name, _, expected) in &cases {
        let run = runs.wait(name, RUN_WITHIN).await.unwrap();
        assert_eq!(run.status(), RunStatus::Failed, "{name}");
        assert_eq!(run.attempts.len(), 4, "{name}: attempts in all, the first included");
        assert_eq!(run.error.as_ref().unwrap().kind, "flaky");
        for (gap, want) in gaps(&run).iter().zip(expected) {
            // Never early; late only by scheduling noise (generous bound).
            assert!(
                *gap >= *want && *gap < *want + 1500,
                "{name}: waited {gap} ms where the backoff says {want} ms: {:?}",
                gaps(&run)
            );
        }
    }
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn retry_on_retries_only_the_listed_kinds() {
    let (server, scheduler, client) = system_with_agent("a1", "flaky").await;
    let agent = worker(&server.url(), "a1", "flaky", 4, always_fails).await;
    let runs = client.scheduler();
    let retry = json!({"retry": {"attempts": 3, "retryOn": ["flaky"]}});
    runs.submit(&submission("listed", "flaky", json!({"kind": "flaky"}), retry.clone())).await.unwrap();
    runs.submit(&submission("unlisted", "flaky", json!({"kind": "quota"}), retry)).await.unwrap();
    assert_eq!(runs.wait("listed", RUN_WITHIN).await.unwrap().attempts.len(), 3);
    assert_eq!(runs.wait("unlisted", RUN_WITHIN).await.unwrap().attempts.len(), 1);
    agent.shutdown().await;
    scheduler.shutdown().await;
}
