//! An agent never holds more tasks than its max concurrency, and tasks beyond that wait
//! on the work queue (for it or another agent) rather than in its hands.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{submission, system_with_agent, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::json;

#[tokio::test]
async fn max_concurrency_is_never_exceeded() {
    let (server, scheduler, client) = system_with_agent("a1", "slow").await;
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let agent = {
        let (now, most) = (now.clone(), most.clone());
        worker(&server.url(), "a1", "slow", 3, move |_task| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                let holding = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(holding, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(json!("done"))
            }
        })
        .await
    };
    let runs = client.scheduler();
    for i in 0..10 {
        runs.submit(&submission(&format!("r{i}"), "slow", json!({}), json!({}))).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(runs.wait(&format!("r{i}"), RUN_WITHIN).await.unwrap().status(), RunStatus::Completed);
    }
    assert_eq!(most.load(Ordering::SeqCst), 3, "three at a time, never more");
    assert_eq!(agent.shutdown().await.completed, 10);
    scheduler.shutdown().await;
}
