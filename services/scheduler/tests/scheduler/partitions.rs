//! Instances sharing the runs out in partitions: each holds only the runs of its own
//! partitions, any instance answers for any run, and the instance left after another
//! stops holds every run again.

use std::time::Duration;

use crate::common::{client, eventually, register_agent, server, submission, worker, RUN_WITHIN};
use osp_protocol::Partitions;
use osp_scheduler::{Config, Scheduler};
use serde_json::json;

const RUNS: usize = 200;

async fn instance(url: &str) -> Scheduler {
    // Ended runs stay in memory for the test's length: what an instance holds is its share.
    let config = Config {
        partitions: Some(Partitions::new(16).unwrap()),
        keep_finished: Duration::from_secs(3600),
        ..Config::default()
    };
    Scheduler::start(osp_tests::connect(url).await, config).await.expect("start the scheduler")
}

#[tokio::test]
async fn each_instance_holds_only_its_share_and_the_last_one_holds_all() {
    let server = server().await;
    let url = server.url();
    let (first, second) = (instance(&url).await, instance(&url).await);
    register_agent(&url, "a1", &["echo"]).await;
    let agent = worker(&url, "a1", "echo", 32, |task| async move { Ok(task.input().clone()) }).await;
    let submitter = client(&url).await;
    let runs = submitter.scheduler();
    let ids: Vec<String> = (0..RUNS).map(|i| format!("run-{i:03}")).collect();
    for id in &ids {
        runs.submit(&submission(id, "echo", json!({"id": id}), json!({}))).await.unwrap();
    }
    for id in &ids {
        let run = runs.wait(id, RUN_WITHIN).await.unwrap();
        assert!(run.status().is_final(), "{id}: {run:?}");
    }
    eventually(Duration::from_secs(15), "the runs held once, shared between the two", || {
        let (a, b) = (first.runs_in_memory(), second.runs_in_memory());
        async move { a + b == RUNS && a > 0 && b > 0 }
    })
    .await;
    println!("held: {} and {}", first.runs_in_memory(), second.runs_in_memory());

    second.shutdown().await;
    eventually(Duration::from_secs(15), "the instance left holding every run", || {
        let held = first.runs_in_memory();
        async move { held == RUNS }
    })
    .await;
    for id in &ids {
        let run = runs.get(id).await.unwrap().expect("the run is found");
        assert!(run.status().is_final(), "{id}: {run:?}");
    }
    agent.shutdown().await;
    first.shutdown().await;
}
