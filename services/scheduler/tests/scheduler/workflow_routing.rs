//! Routing through real agents: the classified route runs on the run's input and its
//! output is the run's; the route is a child run linked to its parent and root; an
//! unknown key takes the default route, or fails the run naming the key and the routes;
//! a route may itself be a workflow.
//!
//! The helpers at the top are shared by the other workflow pattern tests
//! (`crate::workflow_routing::…`): one agent, one worker per capability, and a run
//! submitted and waited for in one call.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use osp_client::{Client, Submission, Task, TaskFailure, Worker};
use osp_protocol::json::from_msgpack_value;
use osp_protocol::scheduler::queries::{RunStatus, RunView};
use osp_protocol::scheduler::Workflow;
use serde_json::{json, Value};

use crate::common::{register_agent, system, worker, RUN_WITHIN};

/// The agent every workflow test registers and runs its workers as.
pub(crate) const AGENT: &str = "a1";

/// What a worker's handler returns.
pub(crate) type Outcome = Result<Value, TaskFailure>;

/// The agents of a test: agent [`AGENT`], registered for every capability the test's
/// workflows name (a submit is refused otherwise), with one worker per capability.
pub(crate) struct Agents {
    url: String,
    workers: Vec<Worker>,
}

impl Agents {
    /// Registers [`AGENT`] for `capabilities`; no worker runs yet.
    pub(crate) async fn register(url: &str, capabilities: &[&str]) -> Agents {
        register_agent(url, AGENT, capabilities).await;
        Agents { url: url.to_owned(), workers: Vec::new() }
    }

    /// Starts a worker taking `capability`'s tasks, up to `max_concurrency` at once.
    pub(crate) async fn serve<F, Fut>(&mut self, capability: &str, max_concurrency: u32, handler: F)
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.workers.push(worker(&self.url, AGENT, capability, max_concurrency, handler).await);
    }

    /// Stops every worker (their tasks in hand finish first).
    pub(crate) async fn shutdown(self) {
        for worker in self.workers {
            worker.shutdown().await;
        }
    }
}

/// A handler that returns its task's input: a merge or synthesize step whose input the
/// run's output then shows.
pub(crate) async fn echo(task: Task) -> Outcome {
    Ok(task.input().clone())
}

/// A workflow from its JSON form (a definition the engine would refuse fails the test
/// here, not in the scheduler).
pub(crate) fn workflow(definition: Value) -> Workflow {
    let workflow: Workflow = serde_json::from_value(definition).expect("a workflow definition");
    workflow.check().expect("a valid workflow");
    workflow
}

/// A task step of `capability`, as a definition names it.
pub(crate) fn task(capability: &str) -> Value {
    json!({"task": {"capability": capability}})
}

/// Submits `definition` on `input` as run `run_id`, and waits for the run to end.
pub(crate) async fn run_workflow(client: &Client, run_id: &str, definition: Value, input: Value) -> RunView {
    let runs = client.scheduler();
    runs.submit(&Submission::workflow(workflow(definition), input).run_id(run_id)).await.expect("the submit");
    runs.wait(run_id, RUN_WITHIN).await.expect("the run to end")
}

/// A run's output as JSON (`null` when it has none).
pub(crate) fn output(run: &RunView) -> Value {
    run.output.as_ref().map(from_msgpack_value).unwrap_or(Value::Null)
}

/// The keys of a workflow run's steps, in the order they started.
pub(crate) fn step_keys(run: &RunView) -> Vec<&str> {
    run.steps.iter().map(|step| step.key.as_str()).collect()
}

/// The run of step `key` of run `parent`, which must exist.
pub(crate) async fn child(client: &Client, parent: &str, key: &str) -> RunView {
    let run_id = format!("{parent}:{key}");
    client.scheduler().get(&run_id).await.expect("the get").unwrap_or_else(|| panic!("no run {run_id}"))
}

/// Whether step `key` of run `parent` ever became a run.
pub(crate) async fn child_exists(client: &Client, parent: &str, key: &str) -> bool {
    client.scheduler().get(&format!("{parent}:{key}")).await.expect("the get").is_some()
}

/// Billing and tech routes, classified by `classify`; `default` when given.
fn support_desk(default: Option<&str>) -> Value {
    let mut routing = json!({"classify": task("classify"),
        "routes": {"billing": task("billing"), "tech": task("tech")}});
    if let Some(default) = default {
        routing["default"] = json!(default);
    }
    json!({"routing": routing})
}

/// A classifier that names the route the input asks for (`{"topic": …}`).
async fn classify_by_topic(task: Task) -> Outcome {
    Ok(json!({"route": task.input()["topic"]}))
}

/// A route's agent: answers with the route's name and the input it got.
fn answer_as(route: &'static str, calls: &Arc<AtomicUsize>) -> impl Fn(Task) -> std::future::Ready<Outcome> {
    let calls = calls.clone();
    move |task| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(json!({"route": route, "got": task.input()})))
    }
}

/// The support desk's agents: a classifier, and billing and tech agents counting their
/// calls (billing's first, tech's second).
async fn support_agents(url: &str) -> (Agents, [Arc<AtomicUsize>; 2]) {
    let mut agents = Agents::register(url, &["classify", "billing", "tech"]).await;
    let calls = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    agents.serve("classify", 4, classify_by_topic).await;
    agents.serve("billing", 4, answer_as("billing", &calls[0])).await;
    agents.serve("tech", 4, answer_as("tech", &calls[1])).await;
    (agents, calls)
}

#[tokio::test]
async fn the_classified_route_runs_on_the_runs_input_and_its_output_is_the_runs() {
    let (server, scheduler, client) = system().await;
    let (agents, [billing, tech]) = support_agents(&server.url()).await;
    let input = json!({"topic": "billing", "text": "invoice 7 charged twice"});
    let run = run_workflow(&client, "w1", support_desk(None), input.clone()).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(output(&run), json!({"route": "billing", "got": input}));
    assert_eq!(step_keys(&run), ["classify", "route:billing"]);
    assert_eq!((billing.load(Ordering::SeqCst), tech.load(Ordering::SeqCst)), (1, 0), "only the chosen route ran");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn each_step_is_a_child_run_carrying_its_parent_and_root() {
    let (server, scheduler, client) = system().await;
    let (agents, _) = support_agents(&server.url()).await;
    let run = run_workflow(&client, "w1", support_desk(None), json!({"topic": "tech"})).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert!(run.parent.is_none(), "the submitted run is the root");
    for key in ["classify", "route:tech"] {
        let step = child(&client, "w1", key).await;
        assert_eq!(step.status(), RunStatus::Completed, "{step:?}");
        let parent = step.parent.as_ref().unwrap_or_else(|| panic!("{key} has no parent link"));
        assert_eq!((parent.run_id.as_str(), parent.step.as_str(), parent.root.as_str()), ("w1", key, "w1"));
        let listed = run.steps.iter().find(|s| s.key == key).expect("the step in the parent's tree");
        assert_eq!((listed.run_id.as_str(), listed.status), (step.run_id.as_str(), RunStatus::Completed));
    }
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_unknown_route_key_takes_the_default_route() {
    let (server, scheduler, client) = system().await;
    let (agents, [billing, tech]) = support_agents(&server.url()).await;
    let run = run_workflow(&client, "w1", support_desk(Some("tech")), json!({"topic": "weather"})).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    assert_eq!(step_keys(&run), ["classify", "route:tech"]);
    assert_eq!(output(&run)["route"], json!("tech"));
    assert_eq!((billing.load(Ordering::SeqCst), tech.load(Ordering::SeqCst)), (0, 1));
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_unknown_route_key_without_a_default_fails_the_run_naming_the_key_and_the_routes() {
    let (server, scheduler, client) = system().await;
    let (agents, [billing, tech]) = support_agents(&server.url()).await;
    let run = run_workflow(&client, "w1", support_desk(None), json!({"topic": "weather"})).await;
    assert_eq!(run.status(), RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("the run's error");
    assert_eq!(error.kind, "unknown_route");
    assert!(error.message.contains("\"weather\"") && error.message.contains("billing, tech"), "{}", error.message);
    assert_eq!(step_keys(&run), ["classify"], "no route step started");
    for route in ["route:billing", "route:tech", "route:weather"] {
        assert!(!child_exists(&client, "w1", route).await, "{route} has a run");
    }
    assert_eq!((billing.load(Ordering::SeqCst), tech.load(Ordering::SeqCst)), (0, 0), "no route's agent was called");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_route_that_is_itself_a_workflow_completes() {
    let (server, scheduler, client) = system().await;
    let mut agents = Agents::register(&server.url(), &["classify", "lookup", "merge"]).await;
    agents.serve("classify", 4, |_task| async { Ok(json!("survey")) }).await;
    agents
        .serve("lookup", 4, |task| async move {
            Ok(json!(format!("found {}", task.input()["prompt"].as_str().unwrap_or("?"))))
        })
        .await;
    agents.serve("merge", 4, echo).await;
    let survey = json!({"parallelization": {
        "subtasks": [{"id": "docs", "prompt": "docs"}, {"id": "code", "prompt": "code"}],
        "worker": task("lookup"), "merge": task("merge")}});
    let definition = json!({"routing": {"classify": task("classify"), "routes": {"survey": survey}}});
    let run = run_workflow(&client, "w1", definition, json!("where is the retry policy?")).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let merged = output(&run);
    assert_eq!(merged["input"], json!("where is the retry policy?"), "the route got the run's input");
    let data: Vec<&Value> = merged["results"].as_array().expect("the results").iter().map(|r| &r["data"]).collect();
    assert_eq!(data, [&json!("found docs"), &json!("found code")]);

    let route = child(&client, "w1", "route:survey").await;
    assert_eq!(route.workflow.as_ref().map(Workflow::pattern), Some("parallelization"));
    assert_eq!(step_keys(&route), ["subtask:docs", "subtask:code", "merge"]);
    let leaf = child(&client, "w1:route:survey", "subtask:docs").await;
    let link = leaf.parent.as_ref().expect("a parent link");
    assert_eq!((link.run_id.as_str(), link.root.as_str()), ("w1:route:survey", "w1"), "the root is the submitted run");
    agents.shutdown().await;
    scheduler.shutdown().await;
}
