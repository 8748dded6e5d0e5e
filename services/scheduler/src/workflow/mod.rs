//! The workflow engine: given a workflow's definition, its input and the steps it has
//! run so far, what comes next — start steps, wait, complete or fail. Pure: the run's
//! decisions ([`crate::commands`]) record what it says as events, and the child runs do
//! the work.
//!
//! Nothing but the recorded steps is remembered between two calls: every decision is
//! recomputed from the definition and the step results in the log, so a replayed run
//! decides exactly what it decided the first time. One module per pattern.

mod evaluator;
mod orchestrator;
mod parallel;
mod routing;

use std::collections::HashMap;

use osp_protocol::json::from_msgpack_value;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::Document;
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::{TaskError, Workflow};
use osp_protocol::{Timestamp, Token};
use serde_json::{json, Value};

/// What a workflow does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Start these steps.
    Start {
        /// The steps, in order.
        steps: Vec<StepSpec>,
        /// The steps the workflow is known to have in all, these included.
        total: u32,
    },
    /// Wait for a running step to end.
    Wait,
    /// The workflow succeeded with this output.
    Complete(Value),
    /// The workflow failed.
    Fail(TaskError),
}

/// A step to start: its key, what it runs, and its input.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSpec {
    /// Its key in the workflow (`classify`, `subtask:a`, `evaluate:2`).
    pub key: String,
    /// What it runs.
    pub step: Workflow,
    /// The child run's input, as the pattern derives it (the run's, or earlier steps' outputs).
    pub input: Value,
}

/// One step a workflow run started, and how it ended.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    /// Unique in the workflow (`classify`, `subtask:a`); its child run is named after it.
    pub key: String,
    /// Its child run.
    pub run_id: Token,
    /// What it runs.
    pub step: Workflow,
    /// The input its child run was submitted with, as `run.steps_started` recorded it.
    pub input: Document,
    /// When it started.
    pub started_at: Timestamp,
    /// How it ended, once it did.
    pub end: Option<StepEnd>,
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepEnd {
    /// `completed`, `failed` or `cancelled`.
    pub status: RunStatus,
    /// Its output, when completed.
    pub output: Option<Document>,
    /// Its error, otherwise.
    pub error: Option<TaskError>,
    /// From its start to its end.
    pub duration_ms: u64,
    /// When it ended.
    pub ended_at: Timestamp,
}

impl StepEnd {
    /// Whether the step succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Completed
    }

    /// Its output as JSON (`null` when it has none).
    pub fn output_json(&self) -> Value {
        self.output.as_ref().map(from_msgpack_value).unwrap_or(Value::Null)
    }

    /// Its error, or one saying how it ended without an error of its own.
    pub fn error_or_status(&self) -> TaskError {
        self.error.clone().unwrap_or_else(|| TaskError {
            kind: self.status.as_str().to_owned(),
            message: format!("the step was {}", self.status),
            details: None,
        })
    }

    /// The result as a step's consumers (merge, synthesize) get it:
    /// `{success, data}` or `{success, error}`.
    pub fn result_json(&self) -> serde_json::Map<String, Value> {
        let mut result = serde_json::Map::new();
        result.insert("success".into(), Value::Bool(self.succeeded()));
        match self.succeeded() {
            true => result.insert("data".into(), self.output_json()),
            false => result.insert("error".into(), error_json(&self.error_or_status())),
        };
        result
    }
}

/// The steps of a workflow run so far, by key.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Steps {
    records: Vec<StepRecord>,
    by_key: HashMap<String, usize>,
}

impl Steps {
    /// Records a started step.
    pub fn start(&mut self, record: StepRecord) {
        self.by_key.insert(record.key.clone(), self.records.len());
        self.records.push(record);
    }

    /// Records the end of step `key`.
    pub fn end(&mut self, key: &str, end: StepEnd) {
        if let Some(&i) = self.by_key.get(key) {
            self.records[i].end = Some(end);
        }
    }

    /// Step `key`, if it started.
    pub fn get(&self, key: &str) -> Option<&StepRecord> {
        self.by_key.get(key).map(|&i| &self.records[i])
    }

    /// How step `key` ended, if it did.
    pub fn ended(&self, key: &str) -> Option<&StepEnd> {
        self.get(key)?.end.as_ref()
    }

    /// Every step, in the order they started.
    pub fn all(&self) -> &[StepRecord] {
        &self.records
    }

    /// The steps still running.
    pub fn running(&self) -> impl Iterator<Item = &StepRecord> {
        self.records.iter().filter(|r| r.end.is_none())
    }

    /// How many steps ended.
    pub fn done(&self) -> usize {
        self.records.iter().filter(|r| r.end.is_some()).count()
    }
}

/// What `workflow`, run on `input`, does next, given the steps so far.
pub fn next(workflow: &Workflow, input: &Value, steps: &Steps) -> Next {
    match workflow {
        // A single task, or a check, is a run of its own, never a workflow run.
        Workflow::Task(_) | Workflow::Check(_) => Next::Wait,
        Workflow::Routing(routing) => routing::next(routing, input, steps),
        Workflow::Parallelization(parallel) => parallel::next(parallel, input, steps),
        Workflow::OrchestratorWorkers(orchestrator) => orchestrator::next(orchestrator, input, steps),
        Workflow::EvaluatorOptimizer(evaluator) => evaluator::next(evaluator, input, steps),
    }
}

/// Starts one step (the usual case), counting it in `total`.
fn start_one(key: impl Into<String>, step: &Workflow, input: Value, total: usize) -> Next {
    Next::Start { steps: vec![StepSpec { key: key.into(), step: step.clone(), input }], total: total as u32 }
}

/// A workflow failure of kind `kind`.
fn failure(kind: &str, message: impl Into<String>) -> Next {
    Next::Fail(TaskError { kind: kind.to_owned(), message: message.into(), details: None })
}

/// Step `key` failed, so the workflow does: the step's error, with the step named.
fn step_failed(key: &str, end: &StepEnd) -> Next {
    let error = end.error_or_status();
    Next::Fail(TaskError {
        kind: error.kind.clone(),
        message: format!("step {key} {}: {}", end.status, error.message),
        details: Some(from_json(&json!({"step": key, "error": error_json(&error)}))),
    })
}

fn error_json(error: &TaskError) -> Value {
    let mut value = json!({"kind": error.kind, "message": error.message});
    if let Some(details) = &error.details {
        value["details"] = from_msgpack_value(details);
    }
    value
}

/// At most `limit` more steps may start when `running` are running (any number when
/// there is no limit).
fn free_slots(limit: Option<u32>, running: usize) -> usize {
    limit.map_or(usize::MAX, |limit| (limit as usize).saturating_sub(running))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Drives the engine as the log would: start what it asks, end steps as told.
    use super::*;

    /// A workflow run in a test: its definition, input and steps.
    pub struct Drive {
        pub workflow: Workflow,
        pub input: Value,
        pub steps: Steps,
        now: u64,
    }

    impl Drive {
        pub fn new(workflow: Value, input: Value) -> Drive {
            let workflow: Workflow = serde_json::from_value(workflow).expect("a definition");
            workflow.check().expect("a valid definition");
            Drive { workflow, input, steps: Steps::default(), now: 0 }
        }

        /// What comes next; steps it starts are recorded as started.
        pub fn next(&mut self) -> Next {
            let next = next(&self.workflow, &self.input, &self.steps);
            if let Next::Start { steps, .. } = &next {
                for spec in steps {
                    self.steps.start(StepRecord {
                        key: spec.key.clone(),
                        run_id: Token::new("run_id", format!("r:{}", spec.key)).expect("a token"),
                        step: spec.step.clone(),
                        input: from_json(&spec.input),
                        started_at: Timestamp(self.now as i64),
                        end: None,
                    });
                }
            }
            next
        }

        /// The keys `next` starts (empty when it does something else).
        pub fn started(&mut self) -> Vec<String> {
            match self.next() {
                Next::Start { steps, .. } => steps.into_iter().map(|s| s.key).collect(),
                other => panic!("expected steps to start, got {other:?}"),
            }
        }

        /// The input step `key` was started with.
        pub fn input_of(&self, key: &str) -> Value {
            from_msgpack_value(&self.steps.get(key).expect("started").input)
        }

        pub fn complete(&mut self, key: &str, output: Value) {
            self.end(key, RunStatus::Completed, Some(output), None);
        }

        pub fn fail(&mut self, key: &str, message: &str) {
            let error = TaskError { kind: "error".into(), message: message.into(), details: None };
            self.end(key, RunStatus::Failed, None, Some(error));
        }

        fn end(&mut self, key: &str, status: RunStatus, output: Option<Value>, error: Option<TaskError>) {
            assert!(self.steps.get(key).is_some_and(|r| r.end.is_none()), "{key} is not running");
            self.now += 10;
            let end = StepEnd {
                status,
                output: output.as_ref().map(from_json),
                error,
                duration_ms: 10,
                ended_at: Timestamp(self.now as i64),
            };
            self.steps.end(key, end);
        }
    }
}
