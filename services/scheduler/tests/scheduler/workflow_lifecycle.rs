//! A workflow run's life as an operator sees it: a cancel of the root reaches every run
//! of its tree, a pause holds back the next step, the run's own timeout fails or cancels
//! it, and a bad definition is refused at submit naming the field at fault.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{eventually, system, worker, RUN_WITHIN};
use crate::workflow_nesting::{agent, output, run_events, submit, task, Gate};
use osp_client::{Scheduler, Task, TaskFailure};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus, RunSummary};
use osp_protocol::scheduler::{RunEvent, RunOutcome};
use serde_json::{json, Value};

/// How many tasks started working, and how many of them heard a cancel.
#[derive(Clone, Default)]
struct Cancellable {
    started: Arc<AtomicU32>,
    heard: Arc<AtomicU32>,
}

impl Cancellable {
    /// Works until told to stop (or far longer than any test waits).
    async fn work(&self, task: Task) -> Result<Value, TaskFailure> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = task.cancelled() => {
                self.heard.fetch_add(1, Ordering::SeqCst);
                Err(TaskFailure::cancelled())
            }
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(json!("never cancelled")),
        }
    }

    fn started(&self) -> u32 {
        self.started.load(Ordering::SeqCst)
    }

    fn heard(&self) -> u32 {
        self.heard.load(Ordering::SeqCst)
    }
}

/// Every run the scheduler holds, workflows' steps included, by id.
async fn all_runs(runs: &Scheduler) -> BTreeMap<String, RunSummary> {
    let query = ListQuery { children: true, limit: Some(1000), ..ListQuery::default() };
    let page = runs.list(&query).await.unwrap();
    assert!(page.next.is_none(), "one page holds them all");
    page.runs.into_iter().map(|run| (run.run_id.clone(), run)).collect()
}

#[tokio::test]
async fn cancelling_a_root_cancels_every_run_of_its_tree_and_the_agents_hear_it() {
    let (server, scheduler, client) = system().await;
    let long = Cancellable::default();
    let evaluated = Arc::new(AtomicU32::new(0));
    let worker = {
        let (long, evaluated) = (long.clone(), evaluated.clone());
        agent(&server.url(), "a1", &["classify", "long", "evaluate"], move |task| {
            let (long, evaluated) = (long.clone(), evaluated.clone());
            async move {
                match task.capability() {
                    "classify" => Ok(json!("slow")),
                    "long" => long.work(task).await,
                    _ => {
                        evaluated.fetch_add(1, Ordering::SeqCst);
                        Ok(json!({"score": 1}))
                    }
                }
            }
        })
        .await
    };
    // root (parallelization) → subtask:x (routing) → route:slow (evaluator) → generate:1 (task)
    let workflow = json!({"parallelization": {
        "subtasks": [{"id": "a", "prompt": 1}, {"id": "b", "prompt": 2}, {"id": "c", "prompt": 3}],
        "worker": {"routing": {"classify": task("classify", Value::Null), "routes": {"slow": {"evaluatorOptimizer": {
            "generate": task("long", Value::Null), "evaluate": task("evaluate", Value::Null)}}}}}}});
    let runs = client.scheduler();
    submit(&runs, "w", workflow, json!(null)).await;
    eventually(RUN_WITHIN, "the three deepest tasks to be in flight", || async { long.started() == 3 }).await;

    runs.cancel("w", Some("no longer needed"), Some(Duration::from_secs(10))).await.unwrap();
    eventually(RUN_WITHIN, "every run of the tree to end", || async {
        all_runs(&runs).await.values().all(|run| run.status.is_final())
    })
    .await;
    let tree = all_runs(&runs).await;
    let status_of = |suffix: &str| -> Vec<RunStatus> {
        ["a", "b", "c"].iter().map(|x| tree[&format!("w:subtask:{x}{suffix}")].status).collect()
    };
    assert_eq!(tree["w"].status, RunStatus::Cancelled);
    assert_eq!(status_of(""), [RunStatus::Cancelled; 3], "the routings");
    assert_eq!(status_of(":route:slow"), [RunStatus::Cancelled; 3], "the evaluator-optimizers");
    assert_eq!(status_of(":route:slow:generate:1"), [RunStatus::Cancelled; 3], "the tasks in flight");
    assert_eq!(status_of(":classify"), [RunStatus::Completed; 3], "steps that ended before stay as they ended");
    assert_eq!(tree.len(), 13, "no other run: {:?}", tree.keys().collect::<Vec<_>>());
    for (id, run) in tree.iter().filter(|(id, _)| *id != "w") {
        let parent = run.parent.as_deref().unwrap_or_else(|| panic!("{id} is listed without its parent"));
        assert!(id.starts_with(&format!("{parent}:")) && tree.contains_key(parent), "{id}'s parent: {parent}");
    }
    eventually(RUN_WITHIN, "the agents to hear the cancel", || async { long.heard() == 3 }).await;

    // Nothing started after the cancel: no step, no task.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = run_events(&server.url()).await;
    let cancelled_at = events
        .iter()
        .find(|e| e.envelope.aggregate.id.as_str() == "w" && matches!(e.envelope.payload, RunEvent::Cancelled(_)))
        .expect("the root's run.cancelled")
        .seq;
    let late: Vec<_> = events
        .iter()
        .filter(|e| e.seq > cancelled_at)
        .filter(|e| matches!(e.envelope.payload, RunEvent::StepsStarted(_) | RunEvent::Submitted(_)))
        .map(|e| e.envelope.aggregate.id.to_string())
        .collect();
    assert!(late.is_empty(), "steps started after the cancel: {late:?}");
    assert_eq!((evaluated.load(Ordering::SeqCst), long.started()), (0, 3));
    assert_eq!(all_runs(&runs).await.len(), 13);
    worker.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_paused_workflow_starts_no_step_until_resumed_and_pauses_its_running_step() {
    let (server, scheduler, client) = system().await;
    let gate = Gate::default();
    let in_hand: Arc<Mutex<Option<Task>>> = Arc::default();
    let evaluated = Arc::new(AtomicU32::new(0));
    let worker = {
        let (gate, in_hand, evaluated) = (gate.clone(), in_hand.clone(), evaluated.clone());
        agent(&server.url(), "a1", &["generate", "evaluate"], move |task| {
            let (gate, in_hand, evaluated) = (gate.clone(), in_hand.clone(), evaluated.clone());
            async move {
                if task.capability() == "generate" {
                    *in_hand.lock().unwrap() = Some(task.clone());
                    gate.pass().await;
                    return Ok(json!("draft"));
                }
                evaluated.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"score": 0.9}))
            }
        })
        .await
    };
    let runs = client.scheduler();
    let workflow = json!({"evaluatorOptimizer": {"generate": task("generate", Value::Null),
        "evaluate": task("evaluate", Value::Null)}});
    submit(&runs, "w", workflow, json!("brief")).await;
    eventually(RUN_WITHIN, "the first step to run", || async { gate.arrived() == 1 }).await;

    runs.pause("w", Some("look first")).await.unwrap();
    eventually(RUN_WITHIN, "the running step's run to be paused", || async {
        runs.get("w:generate:1").await.unwrap().is_some_and(|run| run.paused)
    })
    .await;
    let generating = in_hand.lock().unwrap().clone().expect("the task in hand");
    eventually(RUN_WITHIN, "its agent to hear the pause", || async { generating.is_paused() }).await;

    // The step ends during the pause; the next one does not start.
    gate.open_once();
    eventually(RUN_WITHIN, "the first step to end", || async {
        runs.get("w").await.unwrap().unwrap().steps.first().is_some_and(|s| s.status == RunStatus::Completed)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let root = runs.get("w").await.unwrap().unwrap();
    let keys: Vec<&str> = root.steps.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["generate:1"], "no step started while paused");
    assert_eq!((root.status(), root.paused), (RunStatus::InProgress, true));
    assert_eq!(evaluated.load(Ordering::SeqCst), 0);

    runs.resume("w").await.unwrap();
    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!(root.status(), RunStatus::Completed, "{root:?}");
    assert_eq!((&output(&root)["output"], &output(&root)["stoppedBecause"]), (&json!("draft"), &json!("passed")));
    assert_eq!(evaluated.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
    scheduler.shutdown().await;
}

/// A parallelization of two subtasks that run until cancelled, under `options`; returns
/// once both are in flight.
async fn two_long_subtasks(runs: &Scheduler, long: &Cancellable, run_id: &str, options: Value) {
    let workflow = json!({"parallelization": {"subtasks": [{"id": "a", "prompt": 1}, {"id": "b", "prompt": 2}],
        "worker": task("long", Value::Null), "options": options}});
    submit(runs, run_id, workflow, json!(null)).await;
    eventually(RUN_WITHIN, "both subtasks to be in flight", || async { long.started() == 2 }).await;
}

/// Ends `run_id` by its own timeout, and checks its steps were cancelled (and their
/// agents told); returns how the run ended.
async fn timed_out(on_timeout: &str) -> osp_protocol::scheduler::queries::RunView {
    let (server, scheduler, client) = system().await;
    crate::common::register_agent(&server.url(), "a1", &["long"]).await;
    let long = Cancellable::default();
    let worker = {
        let long = long.clone();
        worker(&server.url(), "a1", "long", 4, move |task| {
            let long = long.clone();
            async move { long.work(task).await }
        })
        .await
    };
    let runs = client.scheduler();
    two_long_subtasks(&runs, &long, "w", json!({"timeout": {"ms": 800, "onTimeout": on_timeout}})).await;
    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    for step in ["w:subtask:a", "w:subtask:b"] {
        let step = runs.wait(step, RUN_WITHIN).await.unwrap();
        assert_eq!(step.status(), RunStatus::Cancelled, "{step:?}");
    }
    eventually(RUN_WITHIN, "the agents to hear the cancel", || async { long.heard() == 2 }).await;
    worker.shutdown().await;
    scheduler.shutdown().await;
    root
}

#[tokio::test]
async fn a_workflow_timeout_fails_the_run_and_cancels_its_running_steps() {
    let root = timed_out("fail").await;
    assert_eq!(root.status(), RunStatus::Failed, "{root:?}");
    let error = root.error.unwrap();
    assert_eq!(error.kind, "timeout");
    assert!(error.message.contains("800 ms"), "{}", error.message);
}

#[tokio::test]
async fn a_workflow_timeout_with_on_timeout_cancel_cancels_the_run() {
    let root = timed_out("cancel").await;
    assert_eq!(root.status(), RunStatus::Cancelled, "{root:?}");
    assert!(root.cancel_reason.as_deref().is_some_and(|r| r.contains("timed out")), "{:?}", root.cancel_reason);
}

/// How a refused submit was answered: (code, field, message).
fn refusal(answer: osp_client::Result<osp_client::Answer<RunOutcome>>) -> (String, Option<String>, String) {
    let error = match answer {
        Err(error) => error,
        Ok(accepted) => panic!("accepted: {:?}", accepted.result),
    };
    let rejection = error.rejection().unwrap_or_else(|| panic!("not a rejection: {error}"));
    (rejection.code().to_owned(), rejection.field().map(str::to_owned), rejection.to_string())
}

/// (run id, workflow, options, error code, field, words in the message)
type Refused = (&'static str, Value, Value, &'static str, Option<&'static str>, &'static str);

#[tokio::test]
async fn a_bad_definition_is_refused_at_submit_naming_the_field() {
    let (server, scheduler, client) = system().await;
    crate::common::register_agent(&server.url(), "a1", &["classify", "work", "write", "review"]).await;
    let routes = |routes: Value| json!({"routing": {"classify": task("classify", Value::Null), "routes": routes}});
    let evaluator = |max: u32| {
        json!({"evaluatorOptimizer": {"generate": task("write", Value::Null),
            "evaluate": task("review", Value::Null), "maxIterations": max}})
    };
    let retried_workflow = routes(json!({"fan": {"parallelization": {"subtasks": [{"id": "a", "prompt": 1}],
        "worker": task("work", Value::Null), "options": {"retry": {"attempts": 2}}}}}));
    #[rustfmt::skip]
    let cases: Vec<Refused> = vec![
        ("typo", json!({"routing": {"clasify": task("classify", Value::Null), "routes": {}}}), json!({}),
            "malformed", Some("workflow.routing.clasify"), "expected one of `classify`"),
        ("no-iterations", evaluator(0), json!({}), "invalid", Some("workflow.evaluatorOptimizer.maxIterations"), "1 to 50"),
        ("too-many-iterations", evaluator(51), json!({}),
            "invalid", Some("workflow.evaluatorOptimizer.maxIterations"), "not 51"),
        ("dotted-route", routes(json!({"a.b": task("work", Value::Null)})), json!({}),
            "invalid_token", Some("workflow.routing.routes"), "'.'"),
        ("retried-step-workflow", retried_workflow, json!({}),
            "invalid", Some("workflow.routing.routes.fan.parallelization.options.retry"), "retry applies to task steps"),
        ("retried-root", evaluator(2), json!({"retry": {"attempts": 2}}), "invalid", Some("options.retry"), "task steps"),
        ("nobody-offers", routes(json!({"x": task("teleport", Value::Null)})), json!({}),
            "not_found", Some("capability"), "teleport"),
    ];
    let runs = client.scheduler();
    for (run_id, workflow, options, code, field, words) in &cases {
        let body = json!({"run_id": run_id, "workflow": workflow, "input": null, "options": options});
        let (got_code, got_field, message) = refusal(client.command("scheduler", "submit", &body).await);
        assert_eq!((got_code.as_str(), got_field.as_deref()), (*code, *field), "{run_id}: {message}");
        assert!(message.contains(words), "{run_id}: {message:?} should say {words:?}");
        assert!(runs.get(run_id).await.unwrap().is_none(), "{run_id}: nothing was recorded");
    }

    // Told to wait for an agent, the same definition is accepted, and runs once one comes.
    let waiting = routes(json!({"x": task("teleport", Value::Null)}));
    let body = json!({"run_id": "waits", "workflow": waiting, "input": "here", "options": {"waitForAgent": true}});
    let accepted = client.command::<_, RunOutcome>("scheduler", "submit", &body).await.unwrap();
    assert_eq!(accepted.result.status, RunStatus::InProgress);
    let late_agent = agent(&server.url(), "a2", &["classify", "teleport"], |task| async move {
        Ok(match task.capability() {
            "classify" => json!("x"),
            _ => json!({"arrived": task.input()}),
        })
    })
    .await;
    let run = runs.wait("waits", RUN_WITHIN).await.unwrap();
    assert_eq!((run.status(), output(&run)), (RunStatus::Completed, json!({"arrived": "here"})));
    late_agent.shutdown().await;
    scheduler.shutdown().await;
}
