//! Orchestrator-workers through real agents: a plan's steps run as a dependency graph
//! (independent steps at once, a join after all it depends on), a faulty plan is refused
//! whole before any step is dispatched, and a failed step's dependants are skipped with
//! synthesize told so.
//!
//! The planning agent returns the plan found in the run's input, so each test writes the
//! plan it needs next to what it expects of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osp_client::{Client, Task, TaskFailure};
use osp_protocol::scheduler::queries::{RunStatus, RunView};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::system;
use crate::workflow_routing::{child_exists, echo, output, run_workflow, step_keys, task, Agents, Outcome};

/// Plan steps `(id, dependsOn)` for worker `do`, each asked to work `sleepMs` (and to
/// fail when its id is in `failing`).
fn plan(steps: &[(&str, &[&str])], sleep_ms: u64, failing: &[&str]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(id, depends_on)| {
            json!({"id": id, "description": format!("step {id}"), "worker": "do", "dependsOn": depends_on,
                "input": {"sleepMs": sleep_ms, "fail": failing.contains(id)}})
        })
        .collect();
    json!({"goal": "a report", "steps": steps})
}

/// An orchestrator whose plan comes from the run's input (`{"plan": …}`), with one worker
/// `do` and a synthesize step that echoes what it gets.
fn orchestrator() -> Value {
    json!({"orchestratorWorkers": {"plan": task("plan"), "workers": {"do": task("work")}, "synthesize": task("synthesize")}})
}

/// When each plan step was in an agent's hands.
#[derive(Clone, Default)]
struct Timeline {
    intervals: Arc<Mutex<HashMap<String, (Instant, Instant)>>>,
}

impl Timeline {
    fn record(&self, id: &str, started: Instant) {
        self.intervals.lock().unwrap().insert(id.to_owned(), (started, Instant::now()));
    }

    /// When step `id` started and ended.
    fn of(&self, id: &str) -> (Instant, Instant) {
        *self.intervals.lock().unwrap().get(id).unwrap_or_else(|| panic!("step {id} never reached an agent"))
    }

    /// The steps that reached an agent, sorted.
    fn ran(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.intervals.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// A plan step's agent: works its `sleepMs`, fails when asked to, and answers with its id
/// and the ids of the dependencies whose results it was given.
async fn work(task: Task, timeline: Timeline) -> Outcome {
    let started = Instant::now();
    let step = task.input();
    let id = step["id"].as_str().unwrap_or_default().to_owned();
    tokio::time::sleep(Duration::from_millis(step["input"]["sleepMs"].as_u64().unwrap_or_default())).await;
    timeline.record(&id, started);
    if step["input"]["fail"] == true {
        return Err(TaskFailure::new(format!("{id} failed on purpose")).permanent());
    }
    let given: Vec<&String> = step["dependencies"].as_object().map(|d| d.keys().collect()).unwrap_or_default();
    Ok(json!({"id": id, "given": given}))
}

/// The agents of these tests: the planner, the recorded worker and synthesize.
async fn agents(url: &str) -> (Agents, Timeline) {
    let mut agents = Agents::register(url, &["plan", "work", "synthesize"]).await;
    let timeline = Timeline::default();
    agents.serve("plan", 4, |task| async move { Ok(task.input()["plan"].clone()) }).await;
    let recorded = timeline.clone();
    agents.serve("work", 8, move |task| work(task, recorded.clone())).await;
    agents.serve("synthesize", 4, echo).await;
    (agents, timeline)
}

/// Runs the orchestrator on `plan` as run `run_id`.
async fn run_plan(client: &Client, run_id: &str, plan: Value) -> RunView {
    run_workflow(client, run_id, orchestrator(), json!({ "plan": plan })).await
}

/// What synthesize got for step `id`.
fn result_of<'a>(synthesized: &'a Value, id: &str) -> &'a Value {
    let results = synthesized["results"].as_array().expect("synthesize got the results");
    results.iter().find(|r| r["stepId"] == id).unwrap_or_else(|| panic!("no result for {id} in {synthesized}"))
}

#[tokio::test]
async fn a_diamond_runs_its_branches_in_parallel_and_the_join_after_both() {
    let (server, scheduler, client) = system().await;
    let (agents, timeline) = agents(&server.url()).await;
    let diamond = plan(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])], 300, &[]);
    let run = run_plan(&client, "w1", diamond.clone()).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");

    let [a, b, c, d] = ["a", "b", "c", "d"].map(|id| timeline.of(id));
    assert!(a.1 <= b.0 && a.1 <= c.0, "b and c start after a ended");
    assert!(b.0 < c.1 && c.0 < b.1, "b and c ran at the same time: b {b:?}, c {c:?}");
    assert!(d.0 >= b.1 && d.0 >= c.1, "d starts only after b and c ended");

    let synthesized = output(&run);
    assert_eq!((&synthesized["goal"], &synthesized["plan"]), (&json!("a report"), &diamond));
    let steps: Vec<&Value> = synthesized["results"].as_array().unwrap().iter().map(|r| &r["stepId"]).collect();
    assert_eq!(steps, ["a", "b", "c", "d"], "results in plan order");
    assert_eq!(
        result_of(&synthesized, "d"),
        &json!({"stepId": "d", "worker": "do", "success": true,
        "data": {"id": "d", "given": ["b", "c"]}})
    );
    assert_eq!(step_keys(&run)[..2], ["plan", "step:a"]);
    assert_eq!(step_keys(&run).last(), Some(&"synthesize"));
    agents.shutdown().await;
    scheduler.shutdown().await;
}

/// Whether `message` names the cycle of `a`, `b` and `c`, from whichever step and in
/// whichever direction.
fn names_the_cycle(message: &str) -> bool {
    let cycles = ["a → b → c → a", "b → c → a → b", "c → a → b → c", "a → c → b → a", "c → b → a → c", "b → a → c → b"];
    cycles.iter().any(|cycle| message.contains(cycle))
}

#[tokio::test]
async fn a_cycle_in_the_plan_fails_the_run_before_any_step_is_dispatched() {
    let (server, scheduler, client) = system().await;
    let (agents, timeline) = agents(&server.url()).await;
    let cyclic = plan(&[("start", &[]), ("a", &["c"]), ("b", &["a"]), ("c", &["b"])], 0, &[]);
    let run = run_plan(&client, "w1", cyclic).await;
    assert_eq!(run.status(), RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("the run's error");
    assert_eq!(error.kind, "invalid_plan");
    assert!(error.message.contains("dependency cycle") && names_the_cycle(&error.message), "{}", error.message);
    assert_eq!(step_keys(&run), ["plan"]);
    for id in ["start", "a", "b", "c"] {
        assert!(!child_exists(&client, "w1", &format!("step:{id}")).await, "step {id} has a run");
    }
    assert!(timeline.ran().is_empty(), "not even the step outside the cycle ran: {:?}", timeline.ran());
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_unknown_worker_an_unknown_dependency_or_a_duplicate_id_fails_the_run_saying_which() {
    let (server, scheduler, client) = system().await;
    let (agents, timeline) = agents(&server.url()).await;
    let mut unknown_worker = plan(&[("a", &[]), ("x", &[])], 0, &[]);
    unknown_worker["steps"][1]["worker"] = json!("painter");
    let faults = [
        ("unknown-worker", unknown_worker, r#"step "x" names worker "painter", which is not a worker (workers: do)"#),
        (
            "unknown-dependency",
            plan(&[("a", &[]), ("b", &["z"])], 0, &[]),
            r#"step "b" depends on "z", which is not a step of the plan"#,
        ),
        ("duplicate-id", plan(&[("a", &[]), ("b", &[]), ("a", &[])], 0, &[]), r#"the plan has two steps with id "a""#),
    ];
    for (run_id, faulty, message) in faults {
        let run = run_plan(&client, run_id, faulty).await;
        assert_eq!(run.status(), RunStatus::Failed, "{run_id}: {run:?}");
        let error = run.error.as_ref().expect("the run's error");
        assert_eq!((error.kind.as_str(), error.message.as_str()), ("invalid_plan", message), "{run_id}");
        assert_eq!(step_keys(&run), ["plan"], "{run_id}: no step started");
    }
    assert!(timeline.ran().is_empty(), "no plan step reached an agent: {:?}", timeline.ran());
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn a_failed_steps_dependants_are_skipped_and_synthesize_gets_them_as_skipped() {
    let (server, scheduler, client) = system().await;
    let (agents, timeline) = agents(&server.url()).await;
    let broken = plan(&[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &["b", "c"])], 0, &["a"]);
    let run = run_plan(&client, "w1", broken).await;
    assert_eq!(run.status(), RunStatus::Completed, "synthesize decides what a failure means: {run:?}");
    assert_eq!(timeline.ran(), ["a", "c"], "b and d never reached an agent");
    for skipped in ["step:b", "step:d"] {
        assert!(!child_exists(&client, "w1", skipped).await, "{skipped} has a run");
    }

    let synthesized = output(&run);
    let a = result_of(&synthesized, "a");
    assert_eq!((&a["success"], &a["error"]["message"]), (&json!(false), &json!("a failed on purpose")));
    assert_eq!(result_of(&synthesized, "c")["success"], json!(true));
    for (id, because) in [("b", "a"), ("d", "b")] {
        let result = result_of(&synthesized, id);
        assert_eq!(result["success"], json!(false), "{result}");
        assert_eq!(result["error"]["kind"], json!("skipped"), "{result}");
        assert_eq!(result["error"]["message"], json!(format!("not run: {because} did not succeed")), "{result}");
    }
    agents.shutdown().await;
    scheduler.shutdown().await;
}
