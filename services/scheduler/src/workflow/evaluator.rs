//! Evaluator-optimizer: `generate` makes a candidate, `evaluate` scores it, `optimize`
//! (or `generate` again) improves it with the feedback, and so on until an evaluation
//! passes or `maxIterations` evaluations were made — a bound the runtime enforces,
//! whatever the agents answer.
//!
//! An evaluation is `{score, passed?, feedback?, criteria?: [{name, score}]}`. When the
//! definition lists criteria, the runtime computes the score itself (weighted mean of
//! the criteria's scores), and each criterion with a threshold must reach it. It passes
//! when the score reaches the threshold and the evaluator did not say `passed: false`.
//! The run's output says which iteration won (the one that passed, else the best score)
//! and why it stopped.

use osp_protocol::scheduler::workflow::EvaluatorOptimizer;
use serde_json::{json, Value};

use super::{failure, start_one, step_failed, Next, Steps};

/// One evaluation, as the runtime judged it.
struct Evaluation {
    score: f64,
    passed: bool,
    feedback: Value,
    raw: Value,
}

pub(super) fn next(evaluator: &EvaluatorOptimizer, input: &Value, steps: &Steps) -> Next {
    let max = evaluator.max_iterations();
    let mut evaluations: Vec<(Value, Evaluation)> = Vec::new();
    for k in 1..=max {
        let total = 2 * k as usize;
        let (make_key, make) = match k {
            1 => ("generate:1".to_owned(), &evaluator.generate),
            _ => (format!("optimize:{k}"), evaluator.optimize.as_ref().unwrap_or(&evaluator.generate)),
        };
        let Some(made) = steps.get(&make_key) else {
            let step_input = match evaluations.last() {
                None => json!({"input": input, "iteration": 1}),
                Some((candidate, evaluation)) => json!({"input": input, "iteration": k, "candidate": candidate,
                    "feedback": evaluation.feedback, "evaluation": evaluation.raw}),
            };
            return start_one(make_key, make, step_input, total);
        };
        let Some(made) = &made.end else { return Next::Wait };
        if !made.succeeded() {
            return step_failed(&make_key, made);
        }
        let candidate = made.output_json();
        let evaluate_key = format!("evaluate:{k}");
        let Some(evaluated) = steps.get(&evaluate_key) else {
            let criteria = serde_json::to_value(&evaluator.criteria).unwrap_or_default();
            return start_one(
                evaluate_key,
                &evaluator.evaluate,
                json!({"input": input, "iteration": k, "candidate": candidate, "criteria": criteria}),
                total,
            );
        };
        let Some(evaluated) = &evaluated.end else { return Next::Wait };
        if !evaluated.succeeded() {
            return step_failed(&evaluate_key, evaluated);
        }
        let evaluation = match judge(evaluator, &evaluated.output_json()) {
            Ok(evaluation) => evaluation,
            Err(why) => return failure("invalid_evaluation", format!("evaluation {k}: {why}")),
        };
        let passed = evaluation.passed;
        evaluations.push((candidate, evaluation));
        if passed {
            return Next::Complete(result(&evaluations, k as usize - 1, "passed"));
        }
    }
    // Every iteration was made and none passed: the best one wins (the later on a tie).
    let best = (0..evaluations.len())
        .max_by(|&a, &b| evaluations[a].1.score.total_cmp(&evaluations[b].1.score))
        .unwrap_or_default();
    Next::Complete(result(&evaluations, best, "max-iterations"))
}

/// Judges an evaluation's output against the definition's threshold and criteria.
fn judge(evaluator: &EvaluatorOptimizer, output: &Value) -> Result<Evaluation, String> {
    let unit = |value: Option<&Value>, what: &str| -> Result<f64, String> {
        match value.and_then(Value::as_f64) {
            Some(score) if (0.0..=1.0).contains(&score) => Ok(score),
            Some(score) => Err(format!("{what} {score} is not between 0 and 1")),
            None => Err(format!("{what} is missing or not a number (got {output})")),
        }
    };
    let said_passed = match output.get("passed") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(passed)) => Some(*passed),
        Some(other) => return Err(format!("passed must be true or false, not {other}")),
    };
    let (score, criteria_passed) = match evaluator.criteria.is_empty() {
        true => (unit(output.get("score"), "the score")?, true),
        false => {
            let given = output.get("criteria").and_then(Value::as_array).cloned().unwrap_or_default();
            let (mut weighted, mut weights, mut all_passed) = (0.0, 0.0, true);
            for criterion in &evaluator.criteria {
                let found = given.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(&criterion.name));
                let score =
                    unit(found.and_then(|c| c.get("score")), &format!("criterion {:?}'s score", criterion.name))?;
                let weight = criterion.weight.unwrap_or(1.0);
                weighted += weight * score;
                weights += weight;
                all_passed &= criterion.threshold.is_none_or(|t| score >= t);
            }
            (weighted / weights, all_passed)
        }
    };
    Ok(Evaluation {
        score,
        passed: score >= evaluator.threshold() && criteria_passed && said_passed != Some(false),
        feedback: output.get("feedback").cloned().unwrap_or(Value::Null),
        raw: output.clone(),
    })
}

fn result(evaluations: &[(Value, Evaluation)], winner: usize, stopped_because: &str) -> Value {
    let (candidate, evaluation) = &evaluations[winner];
    json!({
        "output": candidate,
        "iteration": winner + 1,
        "score": evaluation.score,
        "passed": evaluation.passed,
        "stoppedBecause": stopped_because,
        "iterations": evaluations.iter().enumerate().map(|(i, (_, e))| json!({
            "iteration": i + 1, "score": e.score, "passed": e.passed, "feedback": e.feedback,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::Drive;
    use super::super::Next;
    use serde_json::{json, Value};

    fn evaluator(extra: Value) -> Value {
        let mut definition = json!({"generate": {"task": {"capability": "write"}},
            "evaluate": {"task": {"capability": "review"}}, "optimize": {"task": {"capability": "rewrite"}}});
        definition.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"evaluatorOptimizer": definition})
    }

    /// Runs iteration `k`'s two steps: the candidate, then its evaluation.
    fn iterate(run: &mut Drive, k: u32, candidate: &str, evaluation: Value) {
        let make = if k == 1 { "generate:1".to_owned() } else { format!("optimize:{k}") };
        assert_eq!(run.started(), std::slice::from_ref(&make));
        run.complete(&make, json!(candidate));
        assert_eq!(run.started(), [format!("evaluate:{k}")]);
        assert_eq!(run.input_of(&format!("evaluate:{k}"))["candidate"], json!(candidate));
        run.complete(&format!("evaluate:{k}"), evaluation);
    }

    #[test]
    fn it_stops_when_an_evaluation_reaches_the_threshold() {
        let mut run = Drive::new(evaluator(json!({"threshold": 0.7})), json!("brief"));
        iterate(&mut run, 1, "draft 1", json!({"score": 0.4, "feedback": "too short"}));
        iterate(&mut run, 2, "draft 2", json!({"score": 0.75, "feedback": "good"}));
        assert_eq!(run.input_of("optimize:2")["feedback"], json!("too short"));
        assert_eq!(run.input_of("optimize:2")["candidate"], json!("draft 1"));
        let Next::Complete(result) = run.next() else { panic!() };
        assert_eq!(result["output"], json!("draft 2"));
        assert_eq!(result["iteration"], json!(2));
        assert_eq!(result["stoppedBecause"], json!("passed"));
        assert_eq!(result["iterations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn it_stops_at_max_iterations_with_the_best_candidate() {
        let mut run = Drive::new(evaluator(json!({"maxIterations": 3})), json!(null));
        iterate(&mut run, 1, "a", json!({"score": 0.5}));
        iterate(&mut run, 2, "b", json!({"score": 0.6}));
        iterate(&mut run, 3, "c", json!({"score": 0.55, "passed": true}));
        let Next::Complete(result) = run.next() else { panic!() };
        assert_eq!(result["stoppedBecause"], json!("max-iterations"));
        assert_eq!(result["output"], json!("b"));
        assert_eq!(result["passed"], json!(false), "0.55 is under the default threshold 0.8");
        assert_eq!(run.steps.all().len(), 6, "never more than maxIterations evaluations");
    }

    #[test]
    fn with_criteria_the_runtime_computes_the_weighted_score_and_checks_each_threshold() {
        let criteria = json!({"criteria": [{"name": "clarity", "weight": 3}, {"name": "facts", "weight": 1, "threshold": 0.9}],
            "threshold": 0.7, "maxIterations": 2});
        let mut run = Drive::new(evaluator(criteria), json!(null));
        // 0.75·3 + 0.95 = 3.2 / 4 = 0.8 ≥ 0.7 and facts ≥ 0.9: passes, whatever the agent's own score.
        iterate(
            &mut run,
            1,
            "a",
            json!({"score": 0.1, "criteria": [{"name": "clarity", "score": 0.75}, {"name": "facts", "score": 0.95}]}),
        );
        let Next::Complete(result) = run.next() else { panic!() };
        assert_eq!(result["score"], json!(0.8));
        assert_eq!(result["stoppedBecause"], json!("passed"));

        let mut run = Drive::new(
            evaluator(
                json!({"criteria": [{"name": "clarity", "weight": 3}, {"name": "facts", "threshold": 0.9}], "threshold": 0.7}),
            ),
            json!(null),
        );
        iterate(
            &mut run,
            1,
            "a",
            json!({"criteria": [{"name": "clarity", "score": 1.0}, {"name": "facts", "score": 0.5}]}),
        );
        assert!(matches!(run.next(), Next::Start { .. }), "0.875 passes the score, but facts misses its own threshold");
    }

    #[test]
    fn a_malformed_or_out_of_range_evaluation_fails_the_run_saying_why() {
        for (evaluation, why) in [
            (json!({"score": 1.5}), "1.5 is not between 0 and 1"),
            (json!({"feedback": "meh"}), "the score is missing"),
            (json!("great"), "the score is missing"),
            (json!({"score": 0.5, "passed": "yes"}), "passed must be true or false"),
        ] {
            let mut run = Drive::new(evaluator(json!({})), json!(null));
            iterate(&mut run, 1, "a", evaluation);
            let Next::Fail(error) = run.next() else { panic!("{why}") };
            assert_eq!(error.kind, "invalid_evaluation");
            assert!(error.message.contains(why), "{why}: {}", error.message);
        }
        let mut run = Drive::new(evaluator(json!({"criteria": [{"name": "clarity"}]})), json!(null));
        iterate(&mut run, 1, "a", json!({"criteria": []}));
        let Next::Fail(error) = run.next() else { panic!() };
        assert!(error.message.contains("criterion \"clarity\"'s score is missing"), "{}", error.message);
    }

    #[test]
    fn without_optimize_generate_is_asked_again_with_the_feedback() {
        let definition = json!({"evaluatorOptimizer": {"generate": {"task": {"capability": "write"}},
            "evaluate": {"task": {"capability": "review"}}}});
        let mut run = Drive::new(definition, json!(null));
        iterate(&mut run, 1, "a", json!({"score": 0.1, "feedback": "again"}));
        let Next::Start { steps, .. } = run.next() else { panic!() };
        assert_eq!(steps[0].key, "optimize:2");
        assert!(
            matches!(&steps[0].step, osp_protocol::scheduler::Workflow::Task(t) if t.capability.as_str() == "write")
        );
    }
}
