//! Instances sharing the runs out in partitions: each holds only the runs of its own
//! partitions, a newcomer's share is forgotten by the others, any instance answers for any
//! run, `list` and `digest` over every run are gathered from all the instances and equal
//! what one instance holding everything answers, and the instance left after the others
//! stop holds every run again.

use std::time::Duration;

use crate::common::{client, eventually, register_agent, server, submission, worker, RUN_WITHIN};
use osp_protocol::scheduler::queries::{Digest, ListQuery};
use osp_protocol::Partitions;
use osp_runtime::Projection;
use osp_scheduler::view::SchedulerView;
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
    let expected = folded_digest(&url).await;
    assert_eq!(expected.runs, RUNS as u64);
    same_answers(&submitter, &ids, &expected).await;

    // A newcomer takes its share; the others forget what moved to it.
    let third = instance(&url).await;
    eventually(Duration::from_secs(15), "the runs held once, shared among three", || {
        let held = [first.runs_in_memory(), second.runs_in_memory(), third.runs_in_memory()];
        async move { held.iter().sum::<usize>() == RUNS && held.iter().all(|n| *n > 0) }
    })
    .await;
    same_answers(&submitter, &ids, &expected).await;

    second.shutdown().await;
    third.shutdown().await;
    eventually(Duration::from_secs(15), "the instance left holding every run", || {
        let held = first.runs_in_memory();
        async move { held == RUNS }
    })
    .await;
    for id in &ids {
        let run = runs.get(id).await.unwrap().expect("the run is found");
        assert!(run.status().is_final(), "{id}: {run:?}");
    }
    same_answers(&submitter, &ids, &expected).await;
    agent.shutdown().await;
    first.shutdown().await;
}

/// The digest of a fold of the whole log by one view.
async fn folded_digest(url: &str) -> Digest {
    let log = osp_eventlog::EventLog::open(osp_tests::connect(url).await).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let folded = Projection::<SchedulerView>::start(&log, "osp.v1.evt.run.*", shutdown.clone()).await.unwrap();
    let digest = folded.read().digest().unwrap();
    shutdown.cancel();
    digest
}

/// `list`, page by page (a page size that does not divide the runs), lists every run once
/// in order, and `digest` is the fold's.
async fn same_answers(submitter: &osp_client::Client, ids: &[String], expected: &Digest) {
    let runs = submitter.scheduler();
    let (mut listed, mut after) = (Vec::new(), None);
    loop {
        let query = ListQuery { after: after.clone(), limit: Some(37), ..ListQuery::default() };
        let page = runs.list(&query).await.unwrap();
        assert!(page.runs.len() <= 37);
        listed.extend(page.runs.into_iter().map(|run| run.run_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, ids, "every run listed once, in order");
    let digest = runs.digest().await.unwrap().result;
    assert_eq!((digest.digest.as_str(), digest.runs), (expected.digest.as_str(), expected.runs));
}
