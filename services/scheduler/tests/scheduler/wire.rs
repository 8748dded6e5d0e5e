//! A run end to end with nothing but NATS messages, as an agent or submitter in any
//! language would do it: submit, take the task from the work queue, report, read the run.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use osp_client::Answer;
use osp_protocol::scheduler::queries::{GetQuery, RunStatus, RunView};
use osp_protocol::scheduler::{ReportOutcome, RunOutcome, StartOutcome, TaskMessage};
use serde_json::json;

#[tokio::test]
async fn a_run_from_submit_to_completed_over_plain_messages() {
    let (server, scheduler, client) = crate::common::system().await;
    crate::common::register_agent(&server.url(), "a1", &["summarize"]).await;

    let submitted: Answer<RunOutcome> = client
        .command(
            "scheduler",
            "submit",
            &json!({"run_id": "r-1", "capability": "summarize", "input": {"text": "hello world"}}),
        )
        .await
        .unwrap();
    assert_eq!((submitted.result.status, submitted.result.created), (RunStatus::Pending, true));

    // Take the task as an agent: the shared durable consumer of the capability.
    let js = async_nats::jetstream::new(osp_tests::connect(&server.url()).await);
    let stream = js.get_stream("OSP_WORK").await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("work-summarize".into()),
            filter_subject: "osp.v1.work.summarize".into(),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.unwrap();
    let message = messages.next().await.expect("a task").unwrap();
    let task: TaskMessage = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!((task.run_id.as_str(), task.attempt, task.input.clone()), ("r-1", 1, json!({"text": "hello world"})));

    let agent = client.clone().with_actor("a1");
    let start: Answer<StartOutcome> =
        agent.command("scheduler", "started", &json!({"run_id": "r-1", "attempt": 1})).await.unwrap();
    assert!(start.result.go);
    message.double_ack().await.unwrap();
    let progress: Answer<ReportOutcome> = agent
        .command("scheduler", "progress", &json!({"run_id": "r-1", "attempt": 1, "current": 1, "total": 2}))
        .await
        .unwrap();
    assert_eq!(progress.result.status, RunStatus::InProgress);
    let done: Answer<ReportOutcome> = agent
        .command("scheduler", "completed", &json!({"run_id": "r-1", "attempt": 1, "output": {"summary": "hello"}}))
        .await
        .unwrap();
    assert_eq!(done.result.status, RunStatus::Completed);

    let run: Answer<RunView> = client.query("scheduler", "get", &GetQuery { run_id: "r-1".into() }).await.unwrap();
    let run = run.result;
    assert_eq!(run.status(), RunStatus::Completed);
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].agent.as_deref(), Some("a1"));
    assert_eq!(osp_protocol::json::from_msgpack_value(run.output.as_ref().unwrap()), json!({"summary": "hello"}));
    assert_eq!(run.progress.map(|p| p.current), Some(1));
    scheduler.shutdown().await;
}
