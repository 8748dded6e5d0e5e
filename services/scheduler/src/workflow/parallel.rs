//! Parallelization: the subtasks (given, or returned by `split`) each run on the
//! `worker` step, up to `maxConcurrency` at once, in subtask order. Fail-fast fails the
//! run at the first failed subtask (the runtime then cancels the ones still running);
//! collect-all runs them all. `merge` gets `{input, results}`, the results
//! `{id, success, data | error, durationMs}` in subtask order, failures only with
//! `includeFailures`.

use osp_protocol::scheduler::workflow::{check_subtasks, FailureStrategy, Parallelization, Subtask};
use serde_json::{json, Value};

use super::{failure, free_slots, start_one, step_failed, Next, StepSpec, Steps};

const SPLIT: &str = "split";
const MERGE: &str = "merge";

pub(super) fn next(parallel: &Parallelization, input: &Value, steps: &Steps) -> Next {
    let from_split;
    let subtasks: &[Subtask] = match (&parallel.subtasks, &parallel.split) {
        (Some(subtasks), _) => subtasks,
        (None, Some(split)) => {
            let Some(record) = steps.get(SPLIT) else {
                return start_one(SPLIT, split, input.clone(), 2 + usize::from(parallel.merge.is_some()));
            };
            let Some(end) = &record.end else { return Next::Wait };
            if !end.succeeded() {
                return step_failed(SPLIT, end);
            }
            from_split = match subtasks_of(&end.output_json()) {
                Ok(subtasks) => subtasks,
                Err(why) => return failure("invalid_split", why),
            };
            &from_split
        }
        (None, None) => return failure("invalid_workflow", "a parallelization needs a split step or subtasks"),
    };
    let total = usize::from(parallel.split.is_some()) + subtasks.len() + usize::from(parallel.merge.is_some());
    let key = |subtask: &Subtask| format!("subtask:{}", subtask.id);

    let mut running = 0;
    let mut waiting = Vec::new();
    for subtask in subtasks {
        match steps.get(&key(subtask)).map(|r| &r.end) {
            None => waiting.push(subtask),
            Some(None) => running += 1,
            Some(Some(end)) if !end.succeeded() && parallel.failure_strategy == FailureStrategy::FailFast => {
                return step_failed(&key(subtask), end);
            }
            Some(Some(_)) => {}
        }
    }
    if !waiting.is_empty() {
        let starts: Vec<StepSpec> = waiting
            .into_iter()
            .take(free_slots(parallel.max_concurrency, running))
            .map(|subtask| StepSpec {
                key: key(subtask),
                step: (*parallel.worker).clone(),
                input: json!({
                    "id": subtask.id,
                    "prompt": osp_protocol::json::from_msgpack_value(&subtask.prompt),
                    "metadata": subtask.metadata.as_ref().map(osp_protocol::json::from_msgpack_value),
                    "input": input,
                }),
            })
            .collect();
        return match starts.is_empty() {
            true => Next::Wait,
            false => Next::Start { steps: starts, total: total as u32 },
        };
    }
    if running > 0 {
        return Next::Wait;
    }

    let results: Vec<Value> = subtasks
        .iter()
        .filter_map(|subtask| {
            let end = steps.ended(&key(subtask))?;
            if !end.succeeded() && !parallel.include_failures {
                return None;
            }
            let mut result = serde_json::Map::new();
            result.insert("id".into(), json!(subtask.id));
            result.extend(end.result_json());
            result.insert("durationMs".into(), json!(end.duration_ms));
            Some(Value::Object(result))
        })
        .collect();
    let Some(merge) = &parallel.merge else { return Next::Complete(Value::Array(results)) };
    match steps.get(MERGE) {
        None => start_one(MERGE, merge, json!({"input": input, "results": results}), total),
        Some(record) => match &record.end {
            None => Next::Wait,
            Some(end) if end.succeeded() => Next::Complete(end.output_json()),
            Some(end) => step_failed(MERGE, end),
        },
    }
}

/// The subtasks a split step returned: a list, or `{"subtasks": [...]}`, of
/// `{id, prompt, metadata?}`.
fn subtasks_of(output: &Value) -> Result<Vec<Subtask>, String> {
    let list = match output {
        Value::Object(object) => object.get("subtasks").unwrap_or(output),
        other => other,
    };
    let subtasks: Vec<Subtask> = serde_json::from_value(list.clone())
        .map_err(|e| format!("the split step's output is not a list of subtasks {{id, prompt, metadata?}}: {e}"))?;
    check_subtasks("the split step's subtasks", &subtasks).map_err(|e| e.to_string())?;
    Ok(subtasks)
}

#[cfg(test)]
mod tests {
    use super::super::testing::Drive;
    use super::super::Next;
    use serde_json::{json, Value};

    fn parallel(extra: Value) -> Value {
        let mut definition = json!({"split": {"task": {"capability": "split"}}, "worker": {"task": {"capability": "work"}},
            "merge": {"task": {"capability": "merge"}}});
        definition.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"parallelization": definition})
    }

    fn subtasks(n: usize) -> Value {
        Value::Array((1..=n).map(|i| json!({"id": format!("s{i}"), "prompt": format!("part {i}")})).collect())
    }

    #[test]
    fn subtasks_run_up_to_max_concurrency_and_merge_gets_results_in_subtask_order() {
        let mut run = Drive::new(parallel(json!({"maxConcurrency": 2})), json!("doc"));
        assert_eq!(run.started(), ["split"]);
        run.complete("split", json!({"subtasks": subtasks(3)}));
        assert_eq!(run.started(), ["subtask:s1", "subtask:s2"]);
        assert_eq!(
            run.input_of("subtask:s2"),
            json!({"id": "s2", "prompt": "part 2", "metadata": null, "input": "doc"})
        );
        assert_eq!(run.next(), Next::Wait, "two are running: no third");
        run.complete("subtask:s2", json!("two"));
        assert_eq!(run.started(), ["subtask:s3"]);
        run.complete("subtask:s3", json!("three"));
        assert_eq!(run.next(), Next::Wait);
        run.complete("subtask:s1", json!("one"));
        assert_eq!(run.started(), ["merge"]);
        let results = &run.input_of("merge")["results"];
        let ids: Vec<&str> = results.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["s1", "s2", "s3"], "subtask order, not end order");
        assert_eq!(results[0], json!({"id": "s1", "success": true, "data": "one", "durationMs": 10}));
        run.complete("merge", json!("merged"));
        assert_eq!(run.next(), Next::Complete(json!("merged")));
    }

    #[test]
    fn fail_fast_fails_the_run_at_the_first_failure() {
        let mut run = Drive::new(parallel(json!({})), json!(null));
        run.started();
        run.complete("split", subtasks(3));
        assert_eq!(run.started().len(), 3, "no limit: all at once");
        run.fail("subtask:s2", "boom");
        let Next::Fail(error) = run.next() else { panic!() };
        assert!(error.message.starts_with("step subtask:s2 failed: boom"), "{}", error.message);
    }

    #[test]
    fn collect_all_merges_with_or_without_the_failures() {
        for include in [false, true] {
            let mut run = Drive::new(
                parallel(json!({"failureStrategy": "collect-all", "includeFailures": include})),
                json!(null),
            );
            run.started();
            run.complete("split", subtasks(3));
            run.started();
            run.fail("subtask:s2", "boom");
            run.complete("subtask:s1", json!(1));
            assert_eq!(run.next(), Next::Wait);
            run.complete("subtask:s3", json!(3));
            assert_eq!(run.started(), ["merge"]);
            let results = run.input_of("merge")["results"].clone();
            match include {
                false => assert_eq!(results.as_array().unwrap().len(), 2),
                true => {
                    assert_eq!(results[1]["success"], json!(false));
                    assert_eq!(results[1]["error"]["message"], json!("boom"));
                }
            }
        }
    }

    #[test]
    fn static_subtasks_need_no_split_and_without_merge_the_results_are_the_output() {
        let definition = json!({"parallelization": {"subtasks": subtasks(2), "worker": {"task": {"capability": "w"}}}});
        let mut run = Drive::new(definition, json!(null));
        assert_eq!(run.started(), ["subtask:s1", "subtask:s2"]);
        run.complete("subtask:s1", json!("a"));
        run.complete("subtask:s2", json!("b"));
        let Next::Complete(output) = run.next() else { panic!() };
        assert_eq!(output[1]["data"], json!("b"));
    }

    #[test]
    fn a_split_that_returns_no_usable_subtasks_fails_the_run_saying_why() {
        for (output, why) in [
            (json!("not a list"), "not a list of subtasks"),
            (json!([{"id": "a", "prompt": 1}, {"id": "a", "prompt": 2}]), "earlier subtask"),
            (json!([{"id": "a.b", "prompt": 1}]), "'.'"),
            (json!([]), "1 to 1000"),
        ] {
            let mut run = Drive::new(parallel(json!({})), json!(null));
            run.started();
            run.complete("split", output);
            let Next::Fail(error) = run.next() else { panic!() };
            assert_eq!(error.kind, "invalid_split");
            assert!(error.message.contains(why), "{why}: {}", error.message);
        }
    }
}
