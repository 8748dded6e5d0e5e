//! Approval: n-of-m with an unlisted approver ignored, rejection, expiry with and
//! without auto-approve, and approving a run that is not waiting.

use crate::common::{client, submission, system_with_agent, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::{ApprovalState, RunStatus};
use serde_json::json;

async fn echo(task: osp_client::Task) -> Result<serde_json::Value, osp_client::TaskFailure> {
    Ok(task.input().clone())
}

#[tokio::test]
async fn two_of_three_approvers_and_an_unlisted_one_does_not_count() {
    let (server, scheduler, submitter) = system_with_agent("a1", "deploy").await;
    let agent = worker(&server.url(), "a1", "deploy", 2, echo).await;
    let options =
        json!({"approval": {"message": "deploy to prod?", "approvers": ["ann", "bob", "cid"], "requiredApprovals": 2}});
    let submitted = submitter.scheduler().submit(&submission("r", "deploy", json!({"v": 1}), options)).await.unwrap();
    assert_eq!(submitted.result.status, RunStatus::Awaiting);
    let as_ = |who: &'static str| {
        let url = server.url();
        async move { client(&url).await.with_actor(who).scheduler() }
    };

    let eve = as_("eve").await.approve("r", Some("looks fine")).await;
    assert_eq!(crate::common::code(eve), "forbidden");
    let ann = as_("ann").await.approve("r", Some("tests pass")).await.unwrap();
    assert_eq!(ann.result.status, RunStatus::Awaiting, "one of two approvals");
    assert_eq!(crate::common::code(as_("ann").await.approve("r", None).await), "conflict", "each approver counts once");
    as_("bob").await.approve("r", None).await.unwrap();

    let run = submitter.scheduler().wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Completed);
    let approval = run.approval.unwrap();
    let decided: Vec<(&str, Option<&str>)> =
        approval.decisions.iter().map(|d| (d.approver.as_str(), d.reason.as_deref())).collect();
    assert_eq!(decided, [("ann", Some("tests pass")), ("bob", None)], "eve's decision did not count");
    assert!(approval.decisions.iter().all(|d| d.at.millis() > 0));
    assert_eq!(approval.state, ApprovalState::Approved);
    assert_eq!(crate::common::code(as_("cid").await.approve("r", None).await), "illegal_transition");
    agent.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_rejection_cancels_the_run() {
    let (server, scheduler, client) = system_with_agent("a1", "deploy").await;
    let runs = client.scheduler();
    runs.submit(&submission("r", "deploy", json!({}), json!({"approval": {"message": "ok?"}}))).await.unwrap();
    runs.reject("r", Some("not today")).await.unwrap();
    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Cancelled);
    assert_eq!(run.cancel_reason.as_deref(), Some("rejected by user:test: not today"));
    assert!(run.attempts.is_empty(), "nothing was dispatched");
    drop(server);
    scheduler.shutdown().await;
}

#[tokio::test]
async fn expiry_cancels_or_auto_approves() {
    let (server, scheduler, client) = system_with_agent("a1", "deploy").await;
    let agent = worker(&server.url(), "a1", "deploy", 2, echo).await;
    let runs = client.scheduler();
    runs.submit(&submission("expires", "deploy", json!({}), json!({"approval": {"message": "ok?", "timeoutMs": 800}})))
        .await
        .unwrap();
    let auto = json!({"approval": {"message": "ok?", "timeoutMs": 800, "autoApproveOnTimeout": true}});
    runs.submit(&submission("auto", "deploy", json!({}), auto)).await.unwrap();

    let expired = runs.wait("expires", RUN_WITHIN).await.unwrap();
    assert_eq!(expired.status(), RunStatus::Cancelled);
    assert!(expired.cancel_reason.as_deref().unwrap().contains("approval expired"), "{expired:?}");
    assert!(expired.ended_at.unwrap().millis() - expired.submitted_at.millis() >= 800);
    let approved = runs.wait("auto", RUN_WITHIN).await.unwrap();
    assert_eq!(
        (approved.status(), approved.approval.unwrap().state.as_str()),
        (RunStatus::Completed, "approved-on-expiry")
    );
    agent.shutdown().await;
    scheduler.shutdown().await;
}
