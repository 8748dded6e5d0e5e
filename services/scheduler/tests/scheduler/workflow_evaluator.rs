//! Evaluator-optimizer through real agents: it stops at the first passing evaluation,
//! or after `maxIterations` evaluations whatever the evaluator says (the best candidate
//! winning); with weighted criteria the runtime computes the score; a score outside
//! 0..1 fails the run.
//!
//! The candidates are versions: `generate` makes `{"version": 1}`, `optimize` the next
//! version, noting the feedback it was given; the evaluator scores a version from a table
//! in the run's input (`{"scores": [..]}`, one per version).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use osp_client::{Client, Task};
use osp_protocol::scheduler::queries::{RunStatus, RunView};
use serde_json::{json, Value};

use crate::common::system;
use crate::workflow_routing::{child, output, run_workflow, step_keys, task, Agents, Outcome};

/// An evaluator-optimizer of the three agents below, with `extra` settings (`threshold`,
/// `maxIterations`, `criteria`).
fn refine(extra: Value) -> Value {
    let mut definition =
        json!({"generate": task("generate"), "evaluate": task("evaluate"), "optimize": task("optimize")});
    definition.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
    json!({"evaluatorOptimizer": definition})
}

/// The first candidate.
async fn generate(_task: Task) -> Outcome {
    Ok(json!({"version": 1}))
}

/// The next version of the candidate, with the feedback that asked for it.
async fn optimize(task: Task) -> Outcome {
    let version = task.input()["candidate"]["version"].as_u64().unwrap_or_default();
    Ok(json!({"version": version + 1, "after": task.input()["feedback"]}))
}

/// The evaluation of a version: entry `version - 1` of the input's `scores` (a score, or
/// an evaluation's `criteria`), with feedback naming the version.
async fn evaluate(task: Task) -> Outcome {
    let input = task.input();
    let version = input["candidate"]["version"].as_u64().unwrap_or_default();
    let entry = &input["input"]["scores"][version.saturating_sub(1) as usize];
    let feedback = format!("improve version {version}");
    Ok(match entry {
        Value::Array(criteria) => json!({"score": 0.0, "criteria": criteria, "feedback": feedback}),
        score => json!({"score": score, "feedback": feedback}),
    })
}

/// The three agents, the evaluator's calls counted.
async fn agents(url: &str) -> (Agents, Arc<AtomicUsize>) {
    let mut agents = Agents::register(url, &["generate", "evaluate", "optimize"]).await;
    let evaluations = Arc::new(AtomicUsize::new(0));
    let counted = evaluations.clone();
    agents.serve("generate", 4, generate).await;
    agents
        .serve("evaluate", 4, move |task| {
            counted.fetch_add(1, Ordering::SeqCst);
            evaluate(task)
        })
        .await;
    agents.serve("optimize", 4, optimize).await;
    (agents, evaluations)
}

/// Runs `definition` with the evaluator's `scores`, one per version.
async fn run_scored(client: &Client, definition: Value, scores: Value) -> RunView {
    run_workflow(client, "w1", definition, json!({ "scores": scores })).await
}

#[tokio::test]
async fn it_stops_at_the_first_evaluation_that_reaches_the_threshold() {
    let (server, scheduler, client) = system().await;
    let (agents, evaluations) = agents(&server.url()).await;
    let definition = refine(json!({"threshold": 0.7, "maxIterations": 5}));
    let run = run_scored(&client, definition, json!([0.25, 0.5, 0.75, 1.0, 1.0])).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let result = output(&run);
    assert_eq!((&result["stoppedBecause"], &result["iteration"]), (&json!("passed"), &json!(3)), "{result}");
    assert_eq!((&result["score"], &result["passed"]), (&json!(0.75), &json!(true)));
    assert_eq!(result["output"], json!({"version": 3, "after": "improve version 2"}), "optimize got the feedback");
    let scores: Vec<&Value> = result["iterations"].as_array().unwrap().iter().map(|i| &i["score"]).collect();
    assert_eq!(scores, [&json!(0.25), &json!(0.5), &json!(0.75)]);
    assert_eq!(step_keys(&run), ["generate:1", "evaluate:1", "optimize:2", "evaluate:2", "optimize:3", "evaluate:3"]);
    assert_eq!(evaluations.load(Ordering::SeqCst), 3, "no evaluation after the one that passed");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn it_stops_at_max_iterations_when_nothing_passes_and_the_best_candidate_wins() {
    let (server, scheduler, client) = system().await;
    let (agents, evaluations) = agents(&server.url()).await;
    let definition = refine(json!({"threshold": 0.9, "maxIterations": 3}));
    let run = run_scored(&client, definition, json!([0.25, 0.75, 0.5, 0.5, 0.5])).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let result = output(&run);
    assert_eq!(result["stoppedBecause"], json!("max-iterations"), "{result}");
    assert_eq!((&result["iteration"], &result["score"], &result["passed"]), (&json!(2), &json!(0.75), &json!(false)));
    assert_eq!(result["output"]["version"], json!(2), "the best candidate, not the last");
    let evaluate_steps = step_keys(&run).into_iter().filter(|key| key.starts_with("evaluate:")).count();
    assert_eq!((evaluate_steps, evaluations.load(Ordering::SeqCst)), (3, 3), "exactly maxIterations evaluations");
    assert_eq!(step_keys(&run).last(), Some(&"evaluate:3"), "no candidate made after the last evaluation");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn with_weighted_criteria_the_runtime_computes_the_score() {
    let (server, scheduler, client) = system().await;
    let (agents, _) = agents(&server.url()).await;
    let criteria = json!([{"name": "accuracy", "weight": 3.0}, {"name": "style", "threshold": 0.5}]);
    let definition = refine(json!({"threshold": 0.8, "maxIterations": 3, "criteria": criteria}));
    // Version 1 scores (3 × 1 + 0.25) / 4 = 0.8125 but style misses its own threshold;
    // version 2 scores (3 × 1 + 0.5) / 4 = 0.875 and passes, where the plain mean (0.75)
    // and the evaluator's own score (0) would not.
    let scores = json!([
        [{"name": "accuracy", "score": 1.0}, {"name": "style", "score": 0.25}],
        [{"name": "accuracy", "score": 1.0}, {"name": "style", "score": 0.5}],
    ]);
    let run = run_scored(&client, definition, scores).await;
    assert_eq!(run.status(), RunStatus::Completed, "{run:?}");
    let result = output(&run);
    assert_eq!((&result["stoppedBecause"], &result["iteration"]), (&json!("passed"), &json!(2)), "{result}");
    assert_eq!(result["score"], json!(0.875));
    let first = &result["iterations"][0];
    assert_eq!((&first["score"], &first["passed"]), (&json!(0.8125), &json!(false)), "{first}");
    let evaluated = child(&client, "w1", "evaluate:1").await;
    let given = osp_protocol::json::from_msgpack_value(&evaluated.input);
    assert_eq!(given["criteria"], criteria, "the evaluator is told the criteria");
    agents.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test]
async fn an_out_of_range_score_fails_the_run_with_invalid_evaluation() {
    let (server, scheduler, client) = system().await;
    let (agents, _) = agents(&server.url()).await;
    let run = run_scored(&client, refine(json!({"maxIterations": 3})), json!([1.5, 0.5, 0.5])).await;
    assert_eq!(run.status(), RunStatus::Failed, "{run:?}");
    let error = run.error.as_ref().expect("the run's error");
    assert_eq!(error.kind, "invalid_evaluation");
    assert!(error.message.contains("1.5") && error.message.contains("between 0 and 1"), "{}", error.message);
    assert_eq!(step_keys(&run), ["generate:1", "evaluate:1"], "nothing after the invalid evaluation");
    agents.shutdown().await;
    scheduler.shutdown().await;
}
