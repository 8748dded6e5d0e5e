//! Nested workflows: a step that is itself a workflow runs as a child workflow run
//! (`<parent>:<key>`, linked to its parent and its root), and every event of the tree
//! carries the root's id as its correlation id. Per-step options (retry, timeout,
//! approval) apply to that step's run only; a workflow run's progress counts its steps.
//!
//! The helpers marked `pub(crate)` are shared with the other workflow modules
//! (`workflow_lifecycle`, `workflow_kill`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{eventually, register_agent, submission, system, RUN_WITHIN};
use osp_client::{Scheduler, Submission, Task, TaskFailure, Worker};
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_protocol::scheduler::queries::{Progress, RunStatus, RunView};
use osp_protocol::scheduler::{RunEvent, Workflow};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// A workflow definition from its JSON form (as a person writes it).
pub(crate) fn definition(json: Value) -> Workflow {
    serde_json::from_value(json).expect("a valid workflow definition")
}

/// A task step of `capability`, with `options` when they are not `null`.
pub(crate) fn task(capability: &str, options: Value) -> Value {
    match options {
        Value::Null => json!({"task": {"capability": capability}}),
        options => json!({"task": {"capability": capability, "options": options}}),
    }
}

/// Submits `workflow` on `input` as run `run_id`.
pub(crate) async fn submit(runs: &Scheduler, run_id: &str, workflow: Value, input: Value) {
    runs.submit(&Submission::workflow(definition(workflow), input).run_id(run_id)).await.expect("submit the workflow");
}

/// A run's output as JSON (`null` when it has none).
pub(crate) fn output(run: &RunView) -> Value {
    run.output.as_ref().map(osp_protocol::json::from_msgpack_value).unwrap_or(Value::Null)
}

/// Registers agent `name` for `capabilities` and starts one worker taking them all; the
/// handler tells them apart by `task.capability()`.
pub(crate) async fn agent<F, Fut>(url: &str, name: &str, capabilities: &[&str], handler: F) -> Worker
where
    F: Fn(Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, TaskFailure>> + Send + 'static,
{
    register_agent(url, name, capabilities).await;
    let client = crate::common::client(url).await;
    Worker::builder(&client, name)
        .capabilities(capabilities.iter().copied())
        .max_concurrency(16)
        .start(handler)
        .await
        .expect("start a worker")
}

/// Every run of the tree rooted at `root`, found by walking each run's steps.
pub(crate) async fn tree(runs: &Scheduler, root: &str) -> BTreeMap<String, RunView> {
    let mut found = BTreeMap::new();
    let mut next = vec![root.to_owned()];
    while let Some(run_id) = next.pop() {
        let run = runs.get(&run_id).await.unwrap().unwrap_or_else(|| panic!("run {run_id} of the tree"));
        next.extend(run.steps.iter().map(|step| step.run_id.clone()));
        found.insert(run_id, run);
    }
    found
}

/// Every run event on the log so far, in log order.
pub(crate) async fn run_events(url: &str) -> Vec<Recorded<RunEvent>> {
    let log = EventLog::open(osp_tests::connect(url).await).await.unwrap();
    let mut follow = log.follow::<Recorded<RunEvent>>("osp.v1.evt.run.*", Start::All).await.unwrap();
    let mut events = Vec::new();
    while let Some(item) = follow.next().await {
        match item.unwrap() {
            LogItem::Event(event) => events.push(event),
            LogItem::Malformed(bad) => panic!("a run event that cannot be read: {bad:?}"),
            LogItem::CaughtUp(_) => break,
        }
    }
    events
}

/// A gate a handler waits at until the test lets one task through.
#[derive(Clone)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicU32>,
}

impl Default for Gate {
    /// A closed gate.
    fn default() -> Gate {
        Gate { permits: Arc::new(Semaphore::new(0)), waiting: Arc::default() }
    }
}

impl Gate {
    /// Waits until let through.
    pub(crate) async fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.permits.acquire().await.expect("the gate is never closed").forget();
    }

    /// Lets one waiting (or the next) task through.
    pub(crate) fn open_once(&self) {
        self.permits.add_permits(1);
    }

    /// Tasks that came to the gate so far.
    pub(crate) fn arrived(&self) -> u32 {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// The tree of the nesting test: an orchestrator whose `refine` worker is an
/// evaluator-optimizer and whose `fanout` worker is a parallelization of routings.
fn orchestrator_of_nested_workflows() -> Value {
    json!({"orchestratorWorkers": {
        "plan": task("plan", Value::Null),
        "workers": {
            "refine": {"evaluatorOptimizer": {
                "generate": task("generate", Value::Null), "evaluate": task("evaluate", Value::Null),
                "threshold": 0.8, "maxIterations": 3}},
            "fanout": {"parallelization": {
                "subtasks": [{"id": "a", "prompt": "apple"}, {"id": "b", "prompt": "Berry"}],
                "worker": {"routing": {"classify": task("classify", Value::Null),
                    "routes": {"upper": task("upper", Value::Null), "lower": task("lower", Value::Null)}}}}}},
        "synthesize": task("synthesize", Value::Null)}})
}

/// The agent of every task of [`orchestrator_of_nested_workflows`].
async fn nesting_agent(task: Task) -> Result<Value, TaskFailure> {
    let input = task.input();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(match task.capability() {
        "plan" => json!({"goal": "a draft, then a fan-out", "steps": [
            {"id": "draft", "description": "write it", "worker": "refine", "input": input},
            {"id": "fan", "description": "fan out", "worker": "fanout", "input": input, "dependsOn": ["draft"]}]}),
        "generate" => json!(format!("draft {}", input["iteration"])),
        "evaluate" => json!({"score": if input["iteration"] == 1 { 0.5 } else { 0.9 }, "feedback": "more"}),
        // Lower-case prompts go up, the others down.
        "classify" => match text(&input["prompt"]).starts_with(char::is_lowercase) {
            true => json!("upper"),
            false => json!({"route": "lower"}),
        },
        "upper" => json!(text(&input["prompt"]).to_uppercase()),
        "lower" => json!(text(&input["prompt"]).to_lowercase()),
        "synthesize" => {
            let results = &input["results"];
            let fan: Vec<Value> =
                results[1]["data"].as_array().into_iter().flatten().map(|r| r["data"].clone()).collect();
            json!({"draft": results[0]["data"]["output"], "fan": fan})
        }
        other => return Err(TaskFailure::invalid_input(format!("no such capability here: {other}"))),
    })
}

const NESTING_CAPABILITIES: &[&str] = &["plan", "generate", "evaluate", "classify", "upper", "lower", "synthesize"];

#[tokio::test]
async fn a_step_that_is_a_workflow_runs_as_a_child_run_linked_to_its_parent_and_root() {
    let (server, scheduler, client) = system().await;
    let url = server.url();
    let worker = agent(&url, "a1", NESTING_CAPABILITIES, nesting_agent).await;
    let runs = client.scheduler();
    submit(&runs, "w", orchestrator_of_nested_workflows(), json!({"topic": "fruit"})).await;
    // Another tree, whose events must carry its own root.
    runs.submit(&submission("solo", "upper", json!({"prompt": "x"}), json!({}))).await.unwrap();

    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!(root.status(), RunStatus::Completed, "{root:?}");
    assert_eq!(output(&root), json!({"draft": "draft 2", "fan": ["APPLE", "berry"]}));
    assert_eq!(runs.wait("solo", RUN_WITHIN).await.unwrap().status(), RunStatus::Completed);

    let runs_of_tree = tree(&runs, "w").await;
    let ids: Vec<&str> = runs_of_tree.keys().map(String::as_str).collect();
    let draft = ["generate:1", "evaluate:1", "optimize:2", "evaluate:2"].map(|k| format!("w:step:draft:{k}"));
    let fan = ["a:classify", "a:route:upper", "b:classify", "b:route:lower", "a", "b"]
        .map(|k| format!("w:step:fan:subtask:{k}"));
    let mut expected: BTreeSet<String> =
        ["w", "w:plan", "w:step:draft", "w:step:fan", "w:synthesize"].map(String::from).into();
    expected.extend(draft.into_iter().chain(fan));
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());

    // Each step's run: `<parent>:<key>`, linked to its parent's step and to the root.
    for run in runs_of_tree.values() {
        for step in &run.steps {
            let child = &runs_of_tree[&step.run_id];
            assert_eq!(step.run_id, format!("{}:{}", run.run_id, step.key));
            let link = child.parent.as_ref().unwrap_or_else(|| panic!("{} has no parent", child.run_id));
            assert_eq!(
                (link.run_id.as_str(), link.step.as_str(), link.root.as_str()),
                (run.run_id.as_str(), step.key.as_str(), "w")
            );
            assert_eq!(child.status(), RunStatus::Completed, "{}", child.run_id);
        }
    }
    assert!(root.parent.is_none());
    let pattern = |id: &str| runs_of_tree[id].workflow.as_ref().map(Workflow::pattern);
    assert_eq!(pattern("w:step:draft"), Some("evaluator-optimizer"));
    assert_eq!(pattern("w:step:fan"), Some("parallelization"));
    assert_eq!(pattern("w:step:fan:subtask:a"), Some("routing"));
    assert_eq!(pattern("w:step:fan:subtask:a:route:upper"), None, "a task step is a run of one task");

    // The log: every event of every run of the tree carries the root as correlation id.
    let mut correlations: HashMap<String, BTreeSet<Option<String>>> = HashMap::new();
    for event in run_events(&url).await {
        let envelope = event.envelope;
        correlations.entry(envelope.aggregate.id.to_string()).or_default().insert(envelope.correlation_id);
    }
    for id in &expected {
        assert_eq!(correlations.get(id), Some(&BTreeSet::from([Some("w".to_owned())])), "the events of {id}");
    }
    assert_eq!(correlations["solo"], BTreeSet::from([Some("solo".to_owned())]), "another tree has its own root");
    worker.shutdown().await;
    scheduler.shutdown().await;
}

/// Fails the first two attempts of every run, then succeeds.
async fn flaky(task: Task) -> Result<Value, TaskFailure> {
    match task.capability() {
        "plan" => Ok(json!({"goal": "both", "steps": [
            {"id": "patient", "worker": "patient"}, {"id": "hasty", "worker": "hasty"}]})),
        _ if task.attempt() < 3 => Err(TaskFailure::new(format!("attempt {} fails", task.attempt()))),
        _ => Ok(json!(format!("done at attempt {}", task.attempt()))),
    }
}

#[tokio::test]
async fn a_step_with_retry_is_retried_alone_and_the_workflow_completes() {
    let (server, scheduler, client) = system().await;
    let worker = agent(&server.url(), "a1", &["plan", "flaky"], flaky).await;
    let runs = client.scheduler();
    let workflow = json!({"orchestratorWorkers": {"plan": task("plan", Value::Null), "workers": {
        "patient": task("flaky", json!({"retry": {"attempts": 3}})),
        "hasty": task("flaky", Value::Null)}}});
    submit(&runs, "w", workflow, json!(null)).await;

    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!(root.status(), RunStatus::Completed, "{root:?}");
    let results = &output(&root)["results"];
    assert_eq!(
        results[0],
        json!({"stepId": "patient", "worker": "patient", "success": true, "data": "done at attempt 3"})
    );
    assert_eq!((&results[1]["stepId"], &results[1]["success"]), (&json!("hasty"), &json!(false)));
    let attempts = |id: &'static str| {
        let runs = runs.clone();
        async move { runs.get(id).await.unwrap().expect("the step's run").attempts.len() }
    };
    assert_eq!(attempts("w:step:patient").await, 3, "its retry policy: 3 attempts");
    assert_eq!(attempts("w:step:hasty").await, 1, "the same agent, without retry: one attempt");
    assert_eq!(attempts("w:plan").await, 1);
    assert!(root.options.retry.is_none() && root.attempts.is_empty(), "the workflow run itself is not retried");
    worker.shutdown().await;
    scheduler.shutdown().await;
}

/// Classifies everything as `slow`; `slow` works until it is told to stop.
async fn slow_route(task: Task) -> Result<Value, TaskFailure> {
    match task.capability() {
        "classify" => Ok(json!("slow")),
        _ => {
            tokio::select! {
                _ = task.cancelled() => Err(TaskFailure::cancelled()),
                _ = tokio::time::sleep(Duration::from_secs(20)) => Ok(json!("too late")),
            }
        }
    }
}

#[tokio::test]
async fn a_step_with_a_timeout_fails_that_step_and_the_workflow_names_it() {
    let (server, scheduler, client) = system().await;
    let worker = agent(&server.url(), "a1", &["classify", "slow"], slow_route).await;
    let runs = client.scheduler();
    let workflow = json!({"routing": {"classify": task("classify", Value::Null),
        "routes": {"slow": task("slow", json!({"timeout": {"ms": 500}}))}}});
    submit(&runs, "w", workflow, json!(null)).await;

    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!(root.status(), RunStatus::Failed, "{root:?}");
    let error = root.error.as_ref().unwrap();
    assert_eq!(error.kind, "timeout");
    assert!(error.message.contains("route:slow"), "the step is named: {}", error.message);
    let details = osp_protocol::json::from_msgpack_value(error.details.as_ref().unwrap());
    assert_eq!(details["step"], json!("route:slow"));
    let step = runs.get("w:route:slow").await.unwrap().unwrap();
    assert_eq!(step.status(), RunStatus::Failed);
    assert!(step.attempts[0].timed_out, "{step:?}");
    let classify = runs.get("w:classify").await.unwrap().unwrap();
    assert_eq!((classify.status(), classify.options.timeout.as_ref()), (RunStatus::Completed, None));
    worker.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_step_with_approval_waits_for_it_and_then_the_workflow_goes_on() {
    let (server, scheduler, client) = system().await;
    let paid = Arc::new(AtomicU32::new(0));
    let worker = {
        let paid = paid.clone();
        agent(&server.url(), "a1", &["classify", "pay"], move |task| {
            let paid = paid.clone();
            async move {
                match task.capability() {
                    "classify" => Ok(json!("pay")),
                    _ => {
                        paid.fetch_add(1, Ordering::SeqCst);
                        Ok(json!({"paid": task.input()}))
                    }
                }
            }
        })
        .await
    };
    let runs = client.scheduler();
    let workflow = json!({"routing": {"classify": task("classify", Value::Null),
        "routes": {"pay": task("pay", json!({"approval": {"message": "pay the invoice?"}}))}}});
    submit(&runs, "w", workflow, json!("invoice 7")).await;

    eventually(RUN_WITHIN, "the pay step to await approval", || async {
        runs.get("w:route:pay").await.unwrap().is_some_and(|run| run.status() == RunStatus::Awaiting)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (step, root) = (runs.get("w:route:pay").await.unwrap().unwrap(), runs.get("w").await.unwrap().unwrap());
    assert_eq!((step.status(), step.attempts.len()), (RunStatus::Awaiting, 0), "nothing dispatched before approval");
    assert_eq!(root.status(), RunStatus::InProgress, "the workflow goes on meanwhile");
    assert_eq!(paid.load(Ordering::SeqCst), 0);

    runs.approve("w:route:pay", Some("checked")).await.unwrap();
    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!(root.status(), RunStatus::Completed, "{root:?}");
    assert_eq!(output(&root), json!({"paid": "invoice 7"}));
    assert_eq!(paid.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
    scheduler.shutdown().await;
}

/// Split into four subtasks and merge, each held at a gate of its own, so the test can
/// look at the run's progress while either runs.
struct Held {
    split: Gate,
    merge: Gate,
}

#[tokio::test]
async fn a_workflow_runs_progress_counts_the_steps_done_of_the_steps_known() {
    let (server, scheduler, client) = system().await;
    let held = Arc::new(Held { split: Gate::default(), merge: Gate::default() });
    let worked: Arc<Mutex<Vec<String>>> = Arc::default();
    let worker = {
        let (held, worked) = (held.clone(), worked.clone());
        agent(&server.url(), "a1", &["split", "work", "merge"], move |task| {
            let (held, worked) = (held.clone(), worked.clone());
            async move {
                match task.capability() {
                    "split" => {
                        held.split.pass().await;
                        Ok(json!((1..=4).map(|i| json!({"id": format!("s{i}"), "prompt": i})).collect::<Vec<_>>()))
                    }
                    "work" => {
                        worked.lock().unwrap().push(task.run_id().to_owned());
                        Ok(task.input()["prompt"].clone())
                    }
                    _ => {
                        held.merge.pass().await;
                        Ok(json!(task.input()["results"].as_array().unwrap().len()))
                    }
                }
            }
        })
        .await
    };
    let runs = client.scheduler();
    let workflow = json!({"parallelization": {"split": task("split", Value::Null),
        "worker": task("work", Value::Null), "merge": task("merge", Value::Null)}});
    submit(&runs, "w", workflow, json!(null)).await;
    let progress = |current, total| Some(Progress { current, total: Some(total), message: None });
    let progress_of = |run: RunView| run.progress.map(|p| Progress { message: None, ..p });

    eventually(RUN_WITHIN, "the split step to run", || async { held.split.arrived() == 1 }).await;
    let root = runs.get("w").await.unwrap().unwrap();
    assert_eq!(progress_of(root), progress(0, 3), "split, merge and at least one subtask known; none done");
    held.split.open_once();

    eventually(RUN_WITHIN, "the merge step to run", || async { held.merge.arrived() == 1 }).await;
    let root = runs.get("w").await.unwrap().unwrap();
    assert_eq!(progress_of(root), progress(5, 6), "split and the four subtasks done, merge known");
    held.merge.open_once();

    let root = runs.wait("w", RUN_WITHIN).await.unwrap();
    assert_eq!((root.status(), output(&root)), (RunStatus::Completed, json!(4)));
    assert_eq!(progress_of(root.clone()), progress(6, 6), "every step done");
    assert_eq!(root.steps.len(), 6);
    assert_eq!(worked.lock().unwrap().len(), 4);
    worker.shutdown().await;
    scheduler.shutdown().await;
}
