//! Parallelization through real agents: fail-fast cancels the subtasks still running,
//! collect-all hands merge the successes (and the failures, when asked), `maxConcurrency`
//! holds as the agents see it, merge gets the results in subtask order with their
//! durations, subtasks may be given without a split, and a split that returns no usable
//! subtasks fails the run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use osp_client::{Task, TaskFailure};
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::{json, Value};

use crate::common::{eventually, system, RUN_WITHIN};
use crate::workflow_routing::{child, child_exists, echo, output, run_workflow, step_keys, task, Agents, Outcome};

/// Subtasks `{id, prompt}` from `(id, prompt)` pairs.
fn subtasks<S: AsRef<str>>(pairs: impl IntoIterator<Item = (S, Value)>) -> Value {
    pairs.into_iter().map(|(id, prompt)| json!({"id": id.as_ref(), "prompt": prompt})).collect()
}

/// A parallelization of static `subtasks` run by `work`, merged by `merge`, with `extra`
/// settings (`failureStrategy`, `maxConcurrency` …).
fn fan_out(subtasks: Value, extra: Value) -> Value {
    let mut definition = json!({"subtasks": subtasks, "worker": task("work"), "merge": task("merge")});
    definition.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
    json!({"parallelization": definition})
}

/// A worker that fails the subtasks whose prompt is `{"fail": message}` (for good: no
/// retry would help) and answers the others with their prompt upper-cased.
async fn upper_or_fail(task: Task) -> Outcome {
    let prompt = &task.input()["prompt"];
    match prompt["fail"].as_str() {
        Some(message) => Err(TaskFailure::new(message).kind("broken").permanent()),
        None => Ok(json!(prompt.as_str().unwrap_or_default().to_uppercase())),
    }
}

/// The ids of merge's results.
fn ids(results: &Value) -> Vec<&str> {
    results.as_array().expect("a list of results").iter().map(|r| r["id"].as_str().expect("an id")).collect()
}

/// A handler returning `answer`, counting its calls in `calls`: what shows that a step
/// did, or did not, reach an agent.
fn counted(calls: &Arc<AtomicUsize>, answer: Value) -> impl Fn(Task) -> std::future::Ready<Outcome> {
    let calls = calls.clone();
    move |_task| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(answer.clone()))
    }
}

/// The subtasks in the agents' hands now, and the most there ever were at once.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl InFlight {
    /// Counts a task in for as long as `work` runs.
    async fn during<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let holding = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(holding, Ordering::SeqCst);
        let result = work.await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// What the fail-fast test's agent saw: subtasks started and cancellations received.
#[derive(Default)]
struct Seen {
    started: AtomicUsize,
    cancelled: AtomicUsize,
}

/// The fail-fast test's worker: `fail` waits until every subtask is in an agent's hands,
/// then fails; the others work for a minute unless cancelled first.
async fn fail_once_all_started(task: Task, seen: Arc<Seen>, subtasks: usize) -> Outcome {
    seen.started.fetch_add(1, Ordering::SeqCst);
    if task.input()["id"] == "fail" {
        while seen.started.load(Ordering::SeqCst) < subtasks {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        return Err(TaskFailure::new("the sky fell").permanent());
    }
    tokio::select! {
        () = task.cancelled() => {
            seen.cancelled.fetch_add(1, Ordering::SeqCst);
            Err(TaskFailure::cancelled())
        }
        () = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!("too late")),
    }
}

#[tokio::test]
async fn fail_fast_fails_the_run_and_cancels_the_subtasks_still_running() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["work", "merge"]).await;
    let seen = Arc::new(Seen::default());
    let all = subtasks([("slow1", json!("a")), ("fail", json!("b")), ("slow2", json!("c"))]);
    let seen_by_worker = seen.clone();
    agents.serve("work", 8, move |task| fail_once_all_started(task, seen_by_worker.clone(), 3)).await;
    agents.serve("merge", 4, echo).await;
    let run = run_workflow(&client, "w1", fan_out(all, json!({"failureStrategy": "fail-fast"})), json!(null)).await;
    assert_eq!(run.status(), RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("the run's error");
    assert!(error.message.starts_with("step subtask:fail failed: the sky fell"), "{}", error.message);

    let runs = client.scheduler();
    for slow in ["w1:subtask:slow1", "w1:subtask:slow2"] {
        let sibling = runs.wait(slow, RUN_WITHIN).await.expect("the sibling to end");
        assert_eq!(sibling.status(), RunStatus::Cancelled, "{sibling:?}");
        let reason = sibling.cancel_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("its workflow failed"), "{reason}");
    }
    assert_eq!(seen.cancelled.load(Ordering::SeqCst), 2, "each slow sibling's agent was told to stop");
    assert!(!child_exists(&client, "w1", "merge").await, "no merge after a fail-fast failure");
    eventually(RUN_WITHIN, "the parent's step tree to show the cancelled siblings", || async {
        let run = runs.get("w1").await.unwrap().expect("the run");
        let cancelled = run.steps.iter().filter(|s| s.status == RunStatus::Cancelled).count();
        cancelled == 2
    })
    .await;
    agents.shutdown().await;
    scheduler.shutdown().await;
}

/// Runs a collect-all parallelization whose middle subtask fails, and returns the
/// results merge got.
async fn collect_all_merge_results(include_failures: bool) -> Value {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["work", "merge"]).await;
    agents.serve("work", 4, upper_or_fail).await;
    agents.serve("merge", 4, echo).await;
    let all = subtasks([("a", json!("one")), ("b", json!({"fail": "b is broken"})), ("c", json!("three"))]);
    let settings = json!({"failureStrategy": "collect-all", "includeFailures": include_failures});
    let run = run_workflow(&client, "w1", fan_out(all, settings), json!(null)).await;
    assert_eq!(run.status(), RunStatus::Completed, "collect-all lets merge decide: {run:?}");
    assert_eq!(step_keys(&run), ["subtask:a", "subtask:b", "subtask:c", "merge"]);
    agents.shutdown().await;
    scheduler.shutdown().await;
    output(&run)["results"].clone()
}

#[tokio::test]
async fn collect_all_without_include_failures_merges_only_the_successes() {
    let results = collect_all_merge_results(false).await;
    assert_eq!(ids(&results), ["a", "c"]);
    for result in results.as_array().unwrap() {
        assert_eq!(result["success"], json!(true), "{result}");
    }
    assert_eq!(results[1]["data"], json!("THREE"));
}

#[tokio::test]
async fn collect_all_with_include_failures_merges_the_failures_with_their_error() {
    let results = collect_all_merge_results(true).await;
    assert_eq!(ids(&results), ["a", "b", "c"]);
    let failed = &results[1];
    assert_eq!(failed["success"], json!(false), "{failed}");
    assert_eq!((&failed["error"]["kind"], &failed["error"]["message"]), (&json!("broken"), &json!("b is broken")));
    assert!(failed.get("data").is_none(), "a failure has no data: {failed}");
    assert_eq!((&results[0]["data"], &results[2]["data"]), (&json!("ONE"), &json!("THREE")));
}

#[tokio::test]
async fn max_concurrency_is_never_exceeded_as_the_agents_see_it() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["work", "merge"]).await;
    let in_flight = InFlight::default();
    let counter = in_flight.clone();
    // The agent could take all twelve at once: only the workflow's limit holds it back.
    agents
        .serve("work", 12, move |_task| {
            let counter = counter.clone();
            async move {
                counter.during(tokio::time::sleep(Duration::from_millis(300))).await;
                Ok(json!("done"))
            }
        })
        .await;
    agents.serve("merge", 4, echo).await;
    let twelve = subtasks((1..=12).map(|i| (format!("s{i}"), json!(i))));
    let run = run_workflow(&client, "w1", fan_out(twelve, json!({"maxConcurrency": 3})), json!(null)).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(ids(&output(&run)["results"]).len(), 12);
    assert_eq!(in_flight.most(), 3, "three subtasks at a time, never more (and the limit was reached)");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn merge_gets_the_results_in_subtask_order_with_their_durations() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["split", "work", "merge"]).await;
    // The split makes one subtask per word; the earlier a word, the longer its subtask.
    agents
        .serve("split", 4, |task| async move {
            let words: Vec<Value> = task.input().as_str().unwrap_or_default().split(' ').map(Value::from).collect();
            let n = words.len();
            let list: Vec<Value> = words
                .into_iter()
                .enumerate()
                .map(|(i, word)| json!({"id": format!("w{i}"), "prompt": word, "metadata": {"sleepMs": 200 * (n - i)}}))
                .collect();
            Ok(json!({ "subtasks": list }))
        })
        .await;
    agents
        .serve("work", 4, |task| async move {
            let sleep = task.input()["metadata"]["sleepMs"].as_u64().unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(sleep)).await;
            upper_or_fail(task).await
        })
        .await;
    agents.serve("merge", 4, echo).await;
    let definition =
        json!({"parallelization": {"split": task("split"), "worker": task("work"), "merge": task("merge")}});
    let run = run_workflow(&client, "w1", definition, json!("alpha beta gamma")).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let merged = output(&run);
    assert_eq!(merged["input"], json!("alpha beta gamma"));
    let results = &merged["results"];
    assert_eq!(ids(results), ["w0", "w1", "w2"], "subtask order, though w0 ended last");
    let data: Vec<&Value> = results.as_array().unwrap().iter().map(|r| &r["data"]).collect();
    assert_eq!(data, [&json!("ALPHA"), &json!("BETA"), &json!("GAMMA")]);
    for (result, slept) in results.as_array().unwrap().iter().zip([600, 400, 200]) {
        let duration = result["durationMs"].as_u64().unwrap_or_else(|| panic!("no durationMs in {result}"));
        assert!(duration >= slept, "{result}: the subtask's run took at least its {slept} ms of work");
    }
    assert_eq!(step_keys(&run), ["split", "subtask:w0", "subtask:w1", "subtask:w2", "merge"]);
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn static_subtasks_run_without_a_split_and_without_merge_the_results_are_the_output() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["work"]).await;
    agents.serve("work", 4, upper_or_fail).await;
    let all = subtasks([("x", json!("ex")), ("y", json!("why"))]);
    let definition = json!({"parallelization": {"subtasks": all, "worker": task("work")}});
    let run = run_workflow(&client, "w1", definition, json!(null)).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(step_keys(&run), ["subtask:x", "subtask:y"]);
    assert!(!child_exists(&client, "w1", "split").await);
    let results = output(&run);
    assert_eq!(ids(&results), ["x", "y"]);
    assert_eq!((&results[0]["data"], &results[1]["data"]), (&json!("EX"), &json!("WHY")));
    let step = child(&client, "w1", "subtask:y").await;
    let input = osp_protocol::json::from_msgpack_value(&step.input);
    assert_eq!(input, json!({"id": "y", "prompt": "why", "metadata": null, "input": null}), "what a worker gets");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_split_returning_malformed_subtasks_fails_the_run_with_invalid_split() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["split", "work"]).await;
    let worked = Arc::new(AtomicUsize::new(0));
    let twice_a = json!([{"id": "a", "prompt": 1}, {"id": "a", "prompt": 2}]);
    agents.serve("split", 4, move |_task| std::future::ready(Ok(twice_a.clone()))).await;
    agents.serve("work", 4, counted(&worked, json!("done"))).await;
    let definition = json!({"parallelization": {"split": task("split"), "worker": task("work")}});
    let run = run_workflow(&client, "w1", definition, json!(null)).await;
    assert_eq!(run.status(), RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("the run's error");
    assert_eq!(error.kind, "invalid_split");
    assert!(error.message.contains("earlier subtask"), "{}", error.message);
    assert_eq!(step_keys(&run), ["split"], "no subtask started");
    assert_eq!(worked.load(Ordering::SeqCst), 0);
    agents.shutdown().await;
    scheduler.shutdown().await;
}
