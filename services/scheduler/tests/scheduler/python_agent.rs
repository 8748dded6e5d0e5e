//! The Python example agent (`examples/python/agent.py`) executes tasks: it takes them
//! from the work queue, reports progress and a result, and when it is killed with
//! SIGKILL mid-task its attempt fails by heartbeat timeout and the retry runs on a Rust
//! agent.
//!
//! Needs `python3` and nats-py in `.osp/tools/python` (`scripts/install-python-deps`,
//! which `scripts/test` runs).

use crate::common::{eventually, submission, system, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::FailureCause;
use osp_tests::python::PythonAgent;
use serde_json::json;

#[tokio::test]
async fn the_python_agent_executes_tasks_and_its_death_is_noticed() {
    let (server, scheduler, client) = system().await;
    let registry =
        osp_registry::Registry::start(osp_tests::connect(&server.url()).await, Default::default()).await.unwrap();
    let mut python = PythonAgent::start(&server.url(), &["--name", "py1", "--capability", "summarize"]).await;
    python.line_starting("found in find").await;
    let runs = client.scheduler();

    runs.submit(&submission(
        "py-ok",
        "summarize",
        json!({"text": "the quick brown fox jumps over the lazy dog"}),
        json!({}),
    ))
    .await
    .unwrap();
    let run = runs.wait("py-ok", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempts[0].agent.as_deref(), Some("py1"));
    let output = osp_protocol::json::from_msgpack_value(run.output.as_ref().unwrap());
    assert_eq!(output, json!({"summary": "the quick brown fox jumps", "words": 9}));
    assert_eq!(run.progress.as_ref().map(|p| (p.current, p.total)), Some((2, Some(2))));
    assert!(run.log_count >= 1);

    // A long task; the agent dies in the middle of it.
    let options = json!({"heartbeatTimeoutMs": 2000, "retry": {"attempts": 2, "delayMs": 0}});
    runs.submit(&submission("py-killed", "summarize", json!({"text": "x", "sleep_ms": 60000}), options)).await.unwrap();
    eventually(RUN_WITHIN, "the python agent to start the task", || async {
        runs.get("py-killed").await.unwrap().is_some_and(|r| r.status() == RunStatus::InProgress)
    })
    .await;
    python.kill().await;
    let rust =
        worker(&server.url(), "rust1", "summarize", 1, |task| async move { Ok(json!({"attempt": task.attempt()})) })
            .await;
    let run = runs.wait("py-killed", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!((run.attempts[0].agent.as_deref(), run.attempts[0].cause), (Some("py1"), Some(FailureCause::Heartbeat)));
    assert_eq!(run.attempts[1].agent.as_deref(), Some("rust1"));
    rust.shutdown().await;
    registry.shutdown().await;
    scheduler.shutdown().await;
}
