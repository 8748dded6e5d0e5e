//! Runs that ended leave memory, and are answered exactly as they were before they left:
//! `get` recalls them from the log, `list` reads the listing index, the digest counts
//! them, and a command on one is refused as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{client, code, eventually, register_agent, server, submission, worker, RUN_WITHIN};
use osp_client::{Client, TaskFailure};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus};
use osp_scheduler::{Config, Scheduler};
use serde_json::{json, Value};

/// Every answer the test compares, as JSON.
async fn answers(runs: &osp_client::Scheduler, ids: &[String]) -> BTreeMap<String, Value> {
    let mut answers = BTreeMap::new();
    for id in ids {
        let run = runs.get(id).await.unwrap();
        answers.insert(format!("get {id}"), serde_json::to_value(run).unwrap());
    }
    let queries = [
        ("all", ListQuery { children: true, ..ListQuery::default() }),
        ("roots", ListQuery::default()),
        ("completed", ListQuery { status: Some(RunStatus::Completed), ..ListQuery::default() }),
        ("failed", ListQuery { status: Some(RunStatus::Failed), ..ListQuery::default() }),
        ("awaiting", ListQuery { status: Some(RunStatus::Awaiting), ..ListQuery::default() }),
        ("echo", ListQuery { capability: Some("echo".into()), ..ListQuery::default() }),
        ("deploy", ListQuery { capability: Some("deploy".into()), ..ListQuery::default() }),
        ("page of 2", ListQuery { limit: Some(2), ..ListQuery::default() }),
        ("after", ListQuery { after: Some("echo-2".into()), limit: Some(3), ..ListQuery::default() }),
        (
            "completed after",
            ListQuery {
                status: Some(RunStatus::Completed),
                after: Some("echo-1".into()),
                limit: Some(2),
                ..ListQuery::default()
            },
        ),
    ];
    for (name, query) in queries {
        answers.insert(format!("list {name}"), serde_json::to_value(runs.list(&query).await.unwrap()).unwrap());
    }
    let digest = runs.digest().await.unwrap().result;
    answers.insert("digest".into(), json!({"digest": digest.digest, "runs": digest.runs}));
    answers.insert("approve ended".into(), json!(code(runs.approve("rejected", Some("late")).await)));
    let again = runs.submit(&submission("echo-1", "echo", json!({"n": 1, "fail": false}), json!({}))).await.unwrap();
    answers.insert("submit again".into(), json!({"status": again.result.status, "created": again.result.created}));
    answers.insert("get unknown".into(), serde_json::to_value(runs.get("never-submitted").await.unwrap()).unwrap());
    answers
}

async fn instance(url: &str, keep_finished: Duration) -> Scheduler {
    let config = Config { keep_finished, ..Config::default() };
    Scheduler::start(osp_tests::connect(url).await, config).await.expect("start the scheduler")
}

#[tokio::test]
async fn a_run_that_left_memory_is_answered_as_before_it_left() {
    let server = server().await;
    let url = server.url();
    register_agent(&url, "echo-agent", &["echo", "deploy"]).await;
    let keeping = instance(&url, Duration::from_secs(3600)).await;
    let client: Client = client(&url).await;
    let runs = client.scheduler();
    let _worker = worker(&url, "echo-agent", "echo", 4, |task| async move {
        match task.input()["fail"].as_bool() {
            Some(true) => Err(TaskFailure::new("the input said so")),
            _ => Ok(json!({"echo": task.input().clone(), "padding": "x".repeat(4096)})),
        }
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = format!("echo-{n}");
        runs.submit(&submission(&id, "echo", json!({"n": n, "fail": n == 3}), json!({}))).await.unwrap();
        ids.push(id);
    }
    for id in ["rejected", "waiting"] {
        runs.submit(&submission(id, "deploy", json!({}), json!({"approval": {"message": "ok?"}}))).await.unwrap();
        ids.push(id.to_owned());
    }
    runs.reject("rejected", Some("no")).await.unwrap();
    for id in ids.iter().filter(|id| id.as_str() != "waiting") {
        runs.wait(id, RUN_WITHIN).await.unwrap();
    }
    let before = answers(&runs, &ids).await;
    assert_eq!(before["digest"]["runs"], json!(7), "{before:#?}");
    keeping.shutdown().await;

    // A new instance that keeps ended runs no time at all: only the waiting run stays.
    let evicting = instance(&url, Duration::ZERO).await;
    eventually(RUN_WITHIN, "only the run still waiting to stay in memory", || async { evicting.runs_in_memory() == 1 })
        .await;
    let after = answers(&runs, &ids).await;
    for (name, answer) in &before {
        assert_eq!(&after[name], answer, "{name}");
    }

    // The run in memory goes on as before, and leaves once it ends.
    runs.reject("waiting", None).await.unwrap();
    assert_eq!(runs.wait("waiting", RUN_WITHIN).await.unwrap().status(), RunStatus::Cancelled);
    eventually(RUN_WITHIN, "the ended run to leave memory", || async { evicting.runs_in_memory() == 0 }).await;
    assert_eq!(runs.get("waiting").await.unwrap().unwrap().status(), RunStatus::Cancelled);
    evicting.shutdown().await;
}
