//! Three scheduler processes share the load; one is killed with SIGKILL while 1,000 runs
//! are in flight. Every run still ends exactly once, no attempt is started (or executed
//! by an agent) twice, and a restarted instance's state equals the others' and a fold of
//! the log. The same again with the runs shared out in 16 partitions: the survivors take
//! the dead instance's partitions over, and the digest gathered from the three instances
//! is the fold's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{client, eventually, register_agent, server, submission, worker};
use futures::StreamExt;
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_protocol::scheduler::RunEvent;
use osp_runtime::Projection;
use osp_scheduler::view::SchedulerView;
use serde_json::json;
use tokio::process::Child;

const RUNS: usize = 1000;

/// An `osp-scheduler` process, as an operator runs it, with `args`; returns once it serves.
async fn spawn_scheduler(url: &str, args: &[&str]) -> Child {
    let args: Vec<&str> = ["--ack-wait", "2s"].iter().chain(args).copied().collect();
    osp_tests::spawn_service(env!("CARGO_BIN_EXE_osp-scheduler"), url, &args, "scheduler started").await
}

#[tokio::test]
async fn kill_9_one_of_three_with_1000_runs_in_flight() {
    kill_9_one_of_three(&[]).await
}

#[tokio::test]
async fn kill_9_one_of_three_owning_16_partitions_with_1000_runs_in_flight() {
    kill_9_one_of_three(&["--partitions", "16"]).await
}

async fn kill_9_one_of_three(args: &[&str]) {
    let server = server().await;
    let url = server.url();
    let mut instances =
        vec![spawn_scheduler(&url, args).await, spawn_scheduler(&url, args).await, spawn_scheduler(&url, args).await];
    register_agent(&url, "a1", &["echo"]).await;
    register_agent(&url, "a2", &["echo"]).await;

    // What the agents were given to execute, by (run, attempt).
    let executed: Arc<Mutex<HashMap<(String, u32), u32>>> = Arc::default();
    let mut agents = Vec::new();
    for name in ["a1", "a2"] {
        let executed = executed.clone();
        agents.push(
            worker(&url, name, "echo", 32, move |task| {
                let executed = executed.clone();
                async move {
                    *executed.lock().unwrap().entry((task.run_id().to_owned(), task.attempt())).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(task.input().clone())
                }
            })
            .await,
        );
    }

    let submitter = client(&url).await;
    let submitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = {
        let submitted = submitted.clone();
        let runs = submitter.scheduler();
        tokio::spawn(async move {
            futures::stream::iter(0..RUNS)
                .for_each_concurrent(64, |i| {
                    let runs = runs.clone();
                    let submitted = submitted.clone();
                    async move {
                        let run = submission(
                            &format!("run-{i:04}"),
                            "echo",
                            json!({"i": i}),
                            json!({"retry": {"attempts": 3}}),
                        );
                        // A submit in the hands of the killed instance times out; the same
                        // submission again is the same command.
                        for attempt in 1.. {
                            match runs.submit(&run).await {
                                Ok(_) => break,
                                Err(error) if attempt < 10 => eprintln!("submit {i} again after: {error}"),
                                Err(error) => panic!("submit {i}: {error}"),
                            }
                        }
                        submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
                .await;
        })
    };

    // Kill one instance while runs are in flight.
    eventually(Duration::from_secs(120), "a third of the runs submitted", || async {
        submitted.load(std::sync::atomic::Ordering::Relaxed) >= RUNS / 3
    })
    .await;
    let mut victim = instances.remove(0);
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();
    sending.await.unwrap();

    // Every run ends.
    let runs = submitter.scheduler();
    for i in 0..RUNS {
        let run = runs.wait(&format!("run-{i:04}"), Duration::from_secs(120)).await.unwrap();
        assert!(run.status().is_final(), "run-{i:04}: {run:?}");
    }

    // The log: one end per run, one dispatch per (attempt, dispatch), one start per attempt.
    let log = EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    let mut follow = log.follow::<Recorded<RunEvent>>("osp.v1.evt.run.*", Start::All).await.unwrap();
    let mut ends: BTreeMap<String, u32> = BTreeMap::new();
    let mut starts: HashMap<(String, u32), u32> = HashMap::new();
    let mut dispatches: HashMap<(String, u32, u32), u32> = HashMap::new();
    let mut last = 0;
    while let Some(item) = follow.next().await {
        match item.unwrap() {
            LogItem::Event(event) => {
                last = event.seq;
                let run = event.envelope.aggregate.id.to_string();
                match &event.envelope.payload {
                    RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                        *ends.entry(run).or_default() += 1
                    }
                    RunEvent::Started(s) => *starts.entry((run, s.attempt)).or_default() += 1,
                    RunEvent::Dispatched(d) => *dispatches.entry((run, d.attempt, d.dispatch)).or_default() += 1,
                    _ => {}
                }
            }
            LogItem::Malformed(bad) => panic!("{bad:?}"),
            LogItem::CaughtUp(_) => break,
        }
    }
    assert_eq!(ends.len(), RUNS);
    assert!(ends.values().all(|n| *n == 1), "a run ended twice: {:?}", ends.iter().find(|(_, n)| **n != 1));
    assert!(starts.values().all(|n| *n == 1), "an attempt started twice");
    assert!(dispatches.values().all(|n| *n == 1), "a dispatch recorded twice");
    let executed = executed.lock().unwrap().clone();
    let twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "attempts executed twice by agents: {twice:?}");
    assert!(executed.len() >= RUNS);

    // A restarted instance rebuilds the same state as the others and as a fold of the log
    // (shared out, the instances answer the digest together).
    instances.push(spawn_scheduler(&url, args).await);
    same_state_as_the_log(&log, &submitter, last).await;
    for agent in agents {
        agent.shutdown().await;
    }
}

/// Every instance answers the digest of a fold of the log from scratch, up to `last`.
async fn same_state_as_the_log(log: &EventLog, submitter: &osp_client::Client, last: u64) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let folded = Projection::<SchedulerView>::start(log, "osp.v1.evt.run.*", shutdown.clone()).await.unwrap();
    let expected = folded.read().digest().unwrap();
    assert_eq!(expected.runs, RUNS as u64);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        // Queries go to any instance; each answers after applying up to `last`.
        let digest = submitter.scheduler().digest().await.unwrap().result;
        assert!(digest.applied >= last);
        seen.insert(digest.digest);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![expected.digest], "every instance holds the log's state");
    shutdown.cancel();
}
