//! Orchestrator-workers: `plan` returns `{goal, steps: [{id, description, worker, input,
//! dependsOn}]}`. The plan is checked whole before any of it runs (duplicate ids,
//! unknown dependencies or workers, cycles: the run fails naming the fault). A step
//! starts on its worker once every step it depends on succeeded, in parallel with any
//! other ready step; a step whose dependency failed (or was skipped) is skipped.
//! `synthesize` gets `{input, goal, plan, results}`, a result `{stepId, worker, success,
//! data | error}` per plan step, in plan order.

use std::collections::{BTreeMap, HashMap};

use osp_protocol::scheduler::workflow::{step_id, OrchestratorWorkers, MAX_FAN_OUT};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{failure, free_slots, start_one, step_failed, Next, StepSpec, Steps};

const PLAN: &str = "plan";
const SYNTHESIZE: &str = "synthesize";

/// One step of a plan, as the plan step returns it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanStep {
    id: String,
    #[serde(default)]
    description: Value,
    worker: String,
    #[serde(default)]
    input: Value,
    #[serde(default, alias = "depends_on")]
    depends_on: Vec<String>,
}

/// A plan.
#[derive(Clone, Debug, Deserialize)]
struct Plan {
    #[serde(default)]
    goal: Value,
    steps: Vec<PlanStep>,
}

/// Where a plan step is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Waiting,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

pub(super) fn next(orchestrator: &OrchestratorWorkers, input: &Value, steps: &Steps) -> Next {
    let Some(record) = steps.get(PLAN) else {
        return start_one(PLAN, &orchestrator.plan, input.clone(), 2 + usize::from(orchestrator.synthesize.is_some()));
    };
    let Some(end) = &record.end else { return Next::Wait };
    if !end.succeeded() {
        return step_failed(PLAN, end);
    }
    let plan_json = end.output_json();
    let (plan, order) = match read_plan(&plan_json, orchestrator) {
        Ok(plan) => plan,
        Err(why) => return failure("invalid_plan", why),
    };
    let total = 1 + plan.steps.len() + usize::from(orchestrator.synthesize.is_some());
    let key = |step: &PlanStep| format!("step:{}", step.id);

    // States in dependency order, so a step's dependencies are known before it.
    let mut states: HashMap<&str, State> = HashMap::new();
    for &i in &order {
        let step = &plan.steps[i];
        let state = match steps.get(&key(step)).map(|r| &r.end) {
            Some(None) => State::Running,
            Some(Some(end)) if end.succeeded() => State::Succeeded,
            Some(Some(_)) => State::Failed,
            None if step.depends_on.iter().any(|d| matches!(states[d.as_str()], State::Failed | State::Skipped)) => {
                State::Skipped
            }
            None => State::Waiting,
        };
        states.insert(&step.id, state);
    }
    let running = states.values().filter(|s| **s == State::Running).count();
    let ready: Vec<&PlanStep> = plan
        .steps
        .iter()
        .filter(|s| states[s.id.as_str()] == State::Waiting)
        .filter(|s| s.depends_on.iter().all(|d| states[d.as_str()] == State::Succeeded))
        .collect();
    if !ready.is_empty() {
        let starts: Vec<StepSpec> = ready
            .into_iter()
            .take(free_slots(orchestrator.max_concurrency, running))
            .map(|step| {
                let dependencies: Map<String, Value> = step
                    .depends_on
                    .iter()
                    .map(|d| {
                        (d.clone(), steps.ended(&format!("step:{d}")).map(|e| e.output_json()).unwrap_or_default())
                    })
                    .collect();
                StepSpec {
                    key: key(step),
                    step: orchestrator.workers[&step.worker].clone(),
                    input: json!({"id": step.id, "description": step.description, "input": step.input,
                        "goal": plan.goal, "dependencies": dependencies}),
                }
            })
            .collect();
        return match starts.is_empty() {
            true => Next::Wait,
            false => Next::Start { steps: starts, total: total as u32 },
        };
    }
    if running > 0 || states.values().any(|s| *s == State::Waiting) {
        return Next::Wait;
    }

    let results: Vec<Value> = plan
        .steps
        .iter()
        .map(|step| {
            let mut result = Map::new();
            result.insert("stepId".into(), json!(step.id));
            result.insert("worker".into(), json!(step.worker));
            match steps.ended(&key(step)) {
                Some(end) => result.extend(end.result_json()),
                None => {
                    let failed: Vec<&str> = step
                        .depends_on
                        .iter()
                        .filter(|d| states[d.as_str()] != State::Succeeded)
                        .map(String::as_str)
                        .collect();
                    result.insert("success".into(), json!(false));
                    result.insert(
                        "error".into(),
                        json!({"kind": "skipped", "message": format!("not run: {} did not succeed", failed.join(", "))}),
                    );
                }
            }
            Value::Object(result)
        })
        .collect();
    let Some(synthesize) = &orchestrator.synthesize else {
        return Next::Complete(json!({"goal": plan.goal, "results": results}));
    };
    match steps.get(SYNTHESIZE) {
        None => start_one(
            SYNTHESIZE,
            synthesize,
            json!({"input": input, "goal": plan.goal, "plan": plan_json, "results": results}),
            total,
        ),
        Some(record) => match &record.end {
            None => Next::Wait,
            Some(end) if end.succeeded() => Next::Complete(end.output_json()),
            Some(end) => step_failed(SYNTHESIZE, end),
        },
    }
}

/// Reads and checks a plan; returns it with its steps' indexes in dependency order.
fn read_plan(output: &Value, orchestrator: &OrchestratorWorkers) -> Result<(Plan, Vec<usize>), String> {
    let plan: Plan = serde_json::from_value(output.clone()).map_err(|e| {
        format!("the plan step's output is not a plan {{goal, steps: [{{id, description, worker, input, dependsOn}}]}}: {e}")
    })?;
    if plan.steps.is_empty() || plan.steps.len() > MAX_FAN_OUT {
        return Err(format!("the plan must have 1 to {MAX_FAN_OUT} steps, not {}", plan.steps.len()));
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, step) in plan.steps.iter().enumerate() {
        step_id(&format!("plan step {i} id"), &step.id).map_err(|e| e.to_string())?;
        if index.insert(&step.id, i).is_some() {
            return Err(format!("the plan has two steps with id {:?}", step.id));
        }
    }
    for step in &plan.steps {
        if !orchestrator.workers.contains_key(&step.worker) {
            let workers: Vec<&str> = orchestrator.workers.keys().map(String::as_str).collect();
            return Err(format!(
                "step {:?} names worker {:?}, which is not a worker (workers: {})",
                step.id,
                step.worker,
                workers.join(", ")
            ));
        }
        if let Some(unknown) = step.depends_on.iter().find(|d| !index.contains_key(d.as_str())) {
            return Err(format!("step {:?} depends on {unknown:?}, which is not a step of the plan", step.id));
        }
    }
    let order = dependency_order(&plan.steps, &index)?;
    Ok((plan, order))
}

/// The steps in an order where each comes after what it depends on, or the cycle that
/// makes that impossible.
fn dependency_order(steps: &[PlanStep], index: &BTreeMap<&str, usize>) -> Result<Vec<usize>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        i: usize,
        steps: &[PlanStep],
        index: &BTreeMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), String> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Open => {
                let from = path.iter().position(|&p| p == i).unwrap_or(0);
                let cycle: Vec<&str> =
                    path[from..].iter().chain(std::iter::once(&i)).map(|&p| steps[p].id.as_str()).collect();
                return Err(format!("the plan has a dependency cycle: {}", cycle.join(" → ")));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Open;
        path.push(i);
        for dependency in &steps[i].depends_on {
            visit(index[dependency.as_str()], steps, index, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    for i in 0..steps.len() {
        visit(i, steps, index, &mut marks, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Drive;
    use super::super::Next;
    use serde_json::{json, Value};

    fn orchestrator() -> Value {
        json!({"orchestratorWorkers": {"plan": {"task": {"capability": "plan"}},
            "workers": {"research": {"task": {"capability": "research"}}, "write": {"task": {"capability": "write"}}},
            "synthesize": {"task": {"capability": "synthesize"}}}})
    }

    fn step(id: &str, worker: &str, depends_on: &[&str]) -> Value {
        json!({"id": id, "description": format!("do {id}"), "worker": worker, "input": {"n": id}, "dependsOn": depends_on})
    }

    fn planned(steps: Vec<Value>) -> Drive {
        let mut run = Drive::new(orchestrator(), json!("topic"));
        assert_eq!(run.started(), ["plan"]);
        run.complete("plan", json!({"goal": "a report", "steps": steps}));
        run
    }

    #[test]
    fn a_diamond_runs_its_middle_steps_in_parallel_and_the_last_after_both() {
        let mut run = planned(vec![
            step("a", "research", &[]),
            step("b", "research", &["a"]),
            step("c", "write", &["a"]),
            step("d", "write", &["b", "c"]),
        ]);
        assert_eq!(run.started(), ["step:a"]);
        run.complete("step:a", json!("A"));
        assert_eq!(run.started(), ["step:b", "step:c"]);
        assert_eq!(run.input_of("step:b")["dependencies"], json!({"a": "A"}));
        assert_eq!(run.input_of("step:c")["goal"], json!("a report"));
        run.complete("step:c", json!("C"));
        assert_eq!(run.next(), Next::Wait, "d waits for b");
        run.complete("step:b", json!("B"));
        assert_eq!(run.started(), ["step:d"]);
        assert_eq!(run.input_of("step:d")["dependencies"], json!({"b": "B", "c": "C"}));
        run.complete("step:d", json!("D"));
        assert_eq!(run.started(), ["synthesize"]);
        let synthesis = run.input_of("synthesize");
        assert_eq!(synthesis["plan"]["goal"], json!("a report"));
        assert_eq!(synthesis["results"][3], json!({"stepId": "d", "worker": "write", "success": true, "data": "D"}));
        run.complete("synthesize", json!("report"));
        assert_eq!(run.next(), Next::Complete(json!("report")));
    }

    #[test]
    fn a_failed_steps_dependants_do_not_run_and_synthesize_hears_why() {
        let mut run = planned(vec![step("a", "research", &[]), step("b", "write", &["a"]), step("c", "write", &[])]);
        assert_eq!(run.started(), ["step:a", "step:c"]);
        run.fail("step:a", "no sources");
        assert_eq!(run.next(), Next::Wait, "c still runs; b never starts");
        run.complete("step:c", json!("C"));
        assert_eq!(run.started(), ["synthesize"]);
        let results = run.input_of("synthesize")["results"].clone();
        assert_eq!(results[0]["error"]["message"], json!("no sources"));
        assert_eq!(results[1]["error"]["kind"], json!("skipped"));
        assert_eq!(results[2]["success"], json!(true));
    }

    #[test]
    fn a_bad_plan_fails_the_run_before_any_step_runs() {
        for (steps, why) in [
            (vec![step("a", "research", &["b"]), step("b", "write", &["a"])], "cycle: a → b → a"),
            (vec![step("a", "research", &["a"])], "cycle: a → a"),
            (vec![step("a", "research", &["zz"])], "depends on \"zz\""),
            (vec![step("a", "research", &[]), step("a", "write", &[])], "two steps with id \"a\""),
            (vec![step("a", "paint", &[])], "worker \"paint\", which is not a worker (workers: research, write)"),
            (vec![step("a*", "research", &[])], "wildcards"),
            (vec![], "1 to 1000 steps"),
        ] {
            let mut run = planned(steps);
            let Next::Fail(error) = run.next() else { panic!("{why}") };
            assert_eq!(error.kind, "invalid_plan");
            assert!(error.message.contains(why), "{why}: {}", error.message);
            assert_eq!(run.steps.all().len(), 1, "only the plan ran");
        }
    }
}
