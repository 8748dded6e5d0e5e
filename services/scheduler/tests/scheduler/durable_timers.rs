//! Timers are durable: set by an instance that is then killed, they still fire — on the
//! instance that is alive — and decide what they were set for.

use std::time::Duration;

use crate::common::{client, register_agent, scheduler, server, submission, RUN_WITHIN};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::json;

#[tokio::test]
async fn a_timer_set_by_a_killed_instance_fires_on_another() {
    let server = server().await;
    let url = server.url();
    register_agent(&url, "a1", &["deploy"]).await;
    let mut doomed =
        osp_tests::spawn_service(env!("CARGO_BIN_EXE_osp-scheduler"), &url, &["--ack-wait", "2s"], "scheduler started")
            .await;
    let runs = client(&url).await.scheduler();
    let options = json!({"approval": {"message": "ok?", "timeoutMs": 2500}});
    runs.submit(&submission("r", "deploy", json!({}), options)).await.unwrap();

    // Once the expiry's timer is in the timer stream, the instance that set it dies,
    // in-memory timer and all.
    let js = async_nats::jetstream::new(osp_tests::connect(&url).await);
    crate::common::eventually(RUN_WITHIN, "the approval timer to be set", || {
        let js = js.clone();
        async move { js.get_stream("OSP_TIMERS").await.unwrap().info().await.unwrap().state.messages > 0 }
    })
    .await;
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    let survivor = scheduler(&url).await;

    let run = runs.wait("r", RUN_WITHIN).await.unwrap();
    assert_eq!(run.status(), RunStatus::Cancelled);
    assert!(run.cancel_reason.as_deref().unwrap().contains("approval expired"), "{run:?}");
    let waited = run.ended_at.unwrap().millis() - run.submitted_at.millis();
    assert!(waited >= 2500, "expired after {waited} ms, before its 2500 ms");
    tokio::time::sleep(Duration::from_millis(200)).await;
    survivor.shutdown().await;
}
