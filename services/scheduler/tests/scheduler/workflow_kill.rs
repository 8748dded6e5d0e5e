//! Three scheduler processes run 40 workflows of three patterns; one is killed with
//! SIGKILL while they run, and a replacement is started. Every workflow still ends with
//! exactly the output its agents' answers make, every step's run is submitted once, and
//! no task attempt is started, or executed by an agent, twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{client, eventually, server};
use crate::workflow_nesting::{agent, definition, output, run_events, task};
use futures::StreamExt;
use osp_client::{Submission, Task, TaskFailure};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::RunEvent;
use serde_json::{json, Value};
use tokio::process::Child;

const WORKFLOWS: usize = 40;
const CAPABILITIES: &[&str] = &["split", "square", "merge", "plan", "add", "mul", "synthesize", "generate", "evaluate"];
/// The evaluator's scores, by iteration: only the third passes (threshold 0.8).
const SCORES: [f64; 3] = [0.25, 0.5, 0.9];

/// An `osp-scheduler` process, as an operator runs it; returns once it serves.
async fn spawn_scheduler(url: &str) -> Child {
    osp_tests::spawn_service(env!("CARGO_BIN_EXE_osp-scheduler"), url, &["--ack-wait", "2s"], "scheduler started").await
}

/// The three shapes, by workflow number.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Split into five subtasks, square each, merge by summing.
    Parallel,
    /// Plan a diamond `a → (b, c) → d`, synthesize the results by step.
    Diamond,
    /// Generate, evaluate, optimize (by generating again) for three iterations.
    Evaluator,
}

impl Shape {
    fn of(n: usize) -> Shape {
        [Shape::Parallel, Shape::Diamond, Shape::Evaluator][n % 3]
    }

    fn definition(self) -> Value {
        let step = |capability| task(capability, Value::Null);
        match self {
            Shape::Parallel => json!({"parallelization": {"split": step("split"), "worker": step("square"),
                "merge": step("merge"), "maxConcurrency": 3}}),
            Shape::Diamond => json!({"orchestratorWorkers": {"plan": step("plan"),
                "workers": {"add": step("add"), "mul": step("mul")}, "synthesize": step("synthesize")}}),
            Shape::Evaluator => json!({"evaluatorOptimizer": {"generate": step("generate"),
                "evaluate": step("evaluate"), "threshold": 0.8, "maxIterations": 3}}),
        }
    }

    /// The keys of the steps a run of this shape runs, each a task.
    fn steps(self) -> Vec<String> {
        let keys: Vec<&str> = match self {
            Shape::Parallel => {
                vec!["split", "subtask:p1", "subtask:p2", "subtask:p3", "subtask:p4", "subtask:p5", "merge"]
            }
            Shape::Diamond => vec!["plan", "step:a", "step:b", "step:c", "step:d", "synthesize"],
            Shape::Evaluator => {
                vec!["generate:1", "evaluate:1", "optimize:2", "evaluate:2", "optimize:3", "evaluate:3"]
            }
        };
        keys.into_iter().map(str::to_owned).collect()
    }

    /// The output of workflow `n`, worked out from what the agents answer.
    fn expected(self, n: i64) -> Value {
        match self {
            Shape::Parallel => json!((1..=5).map(|k| (10 * n + k).pow(2)).sum::<i64>()),
            Shape::Diamond => json!({"a": n, "b": n + 1, "c": 2 * n, "d": 3 * n + 1}),
            Shape::Evaluator => json!({"output": format!("v3-{n}"), "iteration": 3, "score": 0.9, "passed": true,
                "stoppedBecause": "passed", "iterations": [
                    {"iteration": 1, "score": 0.25, "passed": false, "feedback": "try 2"},
                    {"iteration": 2, "score": 0.5, "passed": false, "feedback": "try 3"},
                    {"iteration": 3, "score": 0.9, "passed": true, "feedback": "try 4"}]}),
        }
    }
}

/// Checks that `counts` counts each of `expected` once, and nothing else.
fn assert_each_once<K: Ord + std::fmt::Debug>(what: &str, counts: &BTreeMap<K, u32>, expected: &BTreeSet<K>) {
    let not_once: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(not_once.is_empty(), "{what} more than once: {not_once:?}");
    let missing: Vec<_> = expected.iter().filter(|k| !counts.contains_key(k)).collect();
    let unexpected: Vec<_> = counts.keys().filter(|k| !expected.contains(k)).collect();
    assert!(missing.is_empty() && unexpected.is_empty(), "{what}: missing {missing:?}, unexpected {unexpected:?}");
}

fn run_id(n: usize) -> String {
    format!("wf{n:02}")
}

/// What the agents answer: a function of the task's input only.
fn answer(capability: &str, input: &Value) -> Value {
    let sum_of = |values: &Value| values.as_object().map_or(0, |o| o.values().filter_map(Value::as_i64).sum::<i64>());
    match capability {
        "split" => json!((1..=5)
            .map(|k| json!({"id": format!("p{k}"), "prompt": 10 * input["n"].as_i64().unwrap() + k}))
            .collect::<Vec<_>>()),
        "square" => json!(input["prompt"].as_i64().unwrap().pow(2)),
        "merge" => json!(input["results"].as_array().unwrap().iter().filter_map(|r| r["data"].as_i64()).sum::<i64>()),
        "plan" => {
            let n = &input["n"];
            json!({"goal": "diamond", "steps": [
                {"id": "a", "worker": "add", "input": {"x": n}},
                {"id": "b", "worker": "add", "input": {"x": 1}, "dependsOn": ["a"]},
                {"id": "c", "worker": "mul", "input": {"x": 2}, "dependsOn": ["a"]},
                {"id": "d", "worker": "add", "input": {"x": 0}, "dependsOn": ["b", "c"]}]})
        }
        "add" => json!(input["input"]["x"].as_i64().unwrap() + sum_of(&input["dependencies"])),
        "mul" => json!(input["input"]["x"].as_i64().unwrap() * sum_of(&input["dependencies"])),
        "synthesize" => {
            let results = input["results"].as_array().unwrap();
            Value::Object(
                results.iter().map(|r| (r["stepId"].as_str().unwrap().to_owned(), r["data"].clone())).collect(),
            )
        }
        "generate" => json!(format!("v{}-{}", input["iteration"], input["input"]["n"])),
        _ => {
            let k = input["iteration"].as_u64().unwrap();
            json!({"score": SCORES[k as usize - 1], "feedback": format!("try {}", k + 1)})
        }
    }
}

/// Each (run, attempt) the agents executed, and how many times.
type Executed = Arc<Mutex<HashMap<(String, u32), u32>>>;

/// Records the task, takes 20 to 50 ms, answers.
async fn execute(executed: Executed, task: Task) -> Result<Value, TaskFailure> {
    *executed.lock().unwrap().entry((task.run_id().to_owned(), task.attempt())).or_default() += 1;
    let ms = 20 + task.run_id().bytes().map(u64::from).sum::<u64>() % 31;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(answer(task.capability(), task.input()))
}

/// Submits every workflow, again after a submit that timed out (the killed instance had
/// it); counts those accepted.
fn submit_all(url: String, accepted: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let runs = client(&url).await.scheduler();
        futures::stream::iter(0..WORKFLOWS)
            .for_each_concurrent(8, |n| {
                let (runs, accepted) = (runs.clone(), accepted.clone());
                async move {
                    let shape = Shape::of(n);
                    let run = Submission::workflow(definition(shape.definition()), json!({"n": n})).run_id(run_id(n));
                    for attempt in 1.. {
                        match runs.submit(&run).await {
                            Ok(_) => break,
                            Err(error) if attempt < 10 => eprintln!("submit {n} again after: {error}"),
                            Err(error) => panic!("submit {n}: {error}"),
                        }
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await;
    })
}

#[tokio::test]
async fn kill_9_one_of_three_schedulers_while_workflows_run() {
    let server = server().await;
    let url = server.url();
    let mut instances = vec![spawn_scheduler(&url).await, spawn_scheduler(&url).await, spawn_scheduler(&url).await];
    let executed: Executed = Arc::default();
    let mut agents = Vec::new();
    for name in ["a1", "a2"] {
        let executed = executed.clone();
        agents.push(agent(&url, name, CAPABILITIES, move |task| execute(executed.clone(), task)).await);
    }

    let accepted = Arc::new(AtomicUsize::new(0));
    let submitting = submit_all(url.clone(), accepted.clone());
    let tasks_in_all: usize = (0..WORKFLOWS).map(|n| Shape::of(n).steps().len()).sum();
    eventually(Duration::from_secs(60), "a third of the tasks executed", || async {
        executed.lock().unwrap().len() >= tasks_in_all / 3
    })
    .await;
    let mut victim = instances.remove(0);
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();
    let at_kill = executed.lock().unwrap().len();
    assert!(at_kill < tasks_in_all, "killed while tasks remained ({at_kill} of {tasks_in_all} executed)");
    instances.push(spawn_scheduler(&url).await);
    submitting.await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), WORKFLOWS);

    // Every workflow ends with the output its agents' answers make.
    let runs = client(&url).await.scheduler();
    for n in 0..WORKFLOWS {
        let run = runs.wait(&run_id(n), Duration::from_secs(60)).await.unwrap();
        assert_eq!(run.status(), RunStatus::Completed, "{}: {run:?}", run_id(n));
        assert_eq!(output(&run), Shape::of(n).expected(n as i64), "{}'s output", run_id(n));
    }

    // The log: each run of each tree submitted once and ended once; each attempt started once.
    let tasks: BTreeSet<String> = (0..WORKFLOWS)
        .flat_map(|n| Shape::of(n).steps().into_iter().map(move |key| format!("{}:{key}", run_id(n))))
        .collect();
    let every_run: BTreeSet<String> = tasks.iter().cloned().chain((0..WORKFLOWS).map(run_id)).collect();
    let (mut submitted, mut ended, mut started) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for event in run_events(&url).await {
        let run = event.envelope.aggregate.id.to_string();
        match &event.envelope.payload {
            RunEvent::Submitted(_) => *submitted.entry(run).or_insert(0) += 1,
            RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                *ended.entry(run).or_insert(0) += 1
            }
            RunEvent::Started(s) => *started.entry((run, s.attempt)).or_insert(0) += 1,
            _ => {}
        }
    }
    let first_attempts: BTreeSet<(String, u32)> = tasks.iter().map(|run| (run.clone(), 1)).collect();
    assert_each_once("submitted", &submitted, &every_run);
    assert_each_once("ended", &ended, &every_run);
    assert_each_once("started", &started, &first_attempts);
    let executed: BTreeMap<(String, u32), u32> = executed.lock().unwrap().clone().into_iter().collect();
    assert_each_once("executed by an agent", &executed, &first_attempts);
    for agent in agents {
        agent.shutdown().await;
    }
}
