//! Workflows end to end, one run of each shape through real agents.

use crate::common::{register_agent, system, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::Workflow;
use serde_json::json;

#[tokio::test]
async fn a_routing_run_classifies_then_runs_the_route() {
    let (server, scheduler, client) = system().await;
    register_agent(&server.url(), "a1", &["classify", "billing", "tech"]).await;
    let classify = worker(&server.url(), "a1", "classify", 4, |_task| async { Ok(json!({"route": "billing"})) }).await;
    let billing =
        worker(&server.url(), "a1", "billing", 4, |task| async move { Ok(json!({"refund": task.input()})) }).await;
    let definition: Workflow = serde_json::from_value(json!({"routing": {
        "classify": {"task": {"capability": "classify"}},
        "routes": {"billing": {"task": {"capability": "billing"}}, "tech": {"task": {"capability": "tech"}}}}}))
    .unwrap();
    let runs = client.scheduler();
    runs.submit(&osp_client::Submission::workflow(definition, json!("invoice 7")).run_id("w1")).await.unwrap();
    let run = runs.wait("w1", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(osp_protocol::json::from_msgpack_value(run.output.as_ref().unwrap()), json!({"refund": "invoice 7"}));
    let keys: Vec<&str> = run.steps.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["classify", "route:billing"]);
    let child = runs.get("w1:route:billing").await.unwrap().expect("the route's run");
    assert_eq!(child.parent.as_ref().unwrap().root.as_str(), "w1");
    classify.shutdown().await;
    billing.shutdown().await;
    scheduler.shutdown().await;
}
