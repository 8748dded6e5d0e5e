//! Workflow definitions: the four patterns of the OSP spec, plus the single task, as a
//! tree a person writes in a JSON file and a client sends inside `submit`.
//!
//! ```json
//! {"routing": {
//!    "classify": {"task": {"capability": "classify"}},
//!    "routes": {"billing": {"task": {"capability": "billing"}},
//!               "tech":    {"task": {"capability": "tech-support"}}},
//!    "default": "tech"}}
//! ```
//!
//! Every step is itself a workflow: a `task` step is a run of one task; any other step is
//! a nested workflow run. Each step runs as a child run of its own (id
//! `<parent>:<step key>`), with the step's `options` (timeout, retry, approval) as its run
//! options. Field names are camelCase, as in the OSP TypeScript types; unknown fields are
//! refused, so a typo is an error rather than a silently ignored setting.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::registry::Document;
use crate::scheduler::options::RunOptions;
use crate::{Error, Token};

/// How many iterations an evaluator-optimizer runs when `maxIterations` is not given.
pub const DEFAULT_MAX_ITERATIONS: u32 = 3;
/// The most iterations an evaluator-optimizer may ask for.
pub const MAX_ITERATIONS: u32 = 50;
/// The score an evaluation must reach when `threshold` is not given.
pub const DEFAULT_THRESHOLD: f64 = 0.8;
/// How deep workflows may nest.
pub const MAX_DEPTH: usize = 8;
/// The most steps a definition may name (routes, workers and steps in all).
pub const MAX_STEPS: usize = 256;
/// The most subtasks of a parallelization, or steps of a plan.
pub const MAX_FAN_OUT: usize = 1000;

/// A workflow, or one step of one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "camelCase")]
#[strum(serialize_all = "camelCase")]
pub enum Workflow {
    /// One task, executed by an agent of a capability.
    Task(TaskStep),
    /// Classify, then delegate to the chosen route.
    Routing(Routing),
    /// Split into subtasks, run them in parallel, merge the results.
    Parallelization(Parallelization),
    /// Plan a dependency graph of steps, run it, synthesize.
    OrchestratorWorkers(OrchestratorWorkers),
    /// Generate, evaluate, optimize with the feedback, until good enough.
    EvaluatorOptimizer(EvaluatorOptimizer),
    /// A check by the quality service, as a step: no agent of its own; its output is the
    /// evaluation `{score, passed, feedback, auditId, opinion}` (an evaluator-optimizer's
    /// `evaluate` step can be one).
    Check(CheckStep),
}

/// A check of the step's input by the quality service: its `candidate` when the input
/// has one (the input of an `evaluate` step), else the whole input. Its run completes
/// with the evaluation, whether the check passed or not: `score` is the judge's when
/// there is one, else the share of rules passed; `passed` means no critical or major
/// finding and no missing evidence; `feedback` lists what failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckStep {
    /// Rules of the quality service's catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// A judge, too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::quality::JudgeSpec>,
    /// What the check is for (kept in the audit entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<String>,
    /// How long the judge and custom rules may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The run options of a step that takes none (a check).
static NO_OPTIONS: std::sync::LazyLock<RunOptions> = std::sync::LazyLock::new(RunOptions::default);

impl CheckStep {
    /// The check as the run option `checks` says it (what the scheduler sends).
    pub fn checks(&self) -> crate::scheduler::Checks {
        crate::scheduler::Checks {
            rules: self.rules.clone(),
            judge: self.judge.clone(),
            on_failure: crate::scheduler::OnCheckFailure::Fail,
            on_missing_evidence: crate::scheduler::OnMissingEvidence::Fail,
            objectives: self.objectives.clone(),
            timeout_ms: self.timeout_ms,
            approvers: None,
            required_approvals: None,
        }
    }
}

/// One task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskStep {
    /// Whose agents execute it.
    pub capability: Token,
    /// How it runs.
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
}

/// Routing: the `classify` step's output names a route (a string, or `{"route": …}`);
/// that route's workflow gets the run's input, and its output is the run's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routing {
    /// Gets the run's input, returns the route key.
    pub classify: Box<Workflow>,
    /// Route key → workflow.
    pub routes: BTreeMap<String, Workflow>,
    /// The route taken when the key is unknown or classification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// How the routing run itself runs (timeout, approval).
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
}

/// Parallelization: subtasks (from the `split` step, or given here) each run by the
/// `worker` step, up to `maxConcurrency` at once; `merge` gets their results in
/// subtask order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Parallelization {
    /// Gets the run's input, returns the subtasks (a list, or `{"subtasks": […]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Box<Workflow>>,
    /// Subtasks given up front (instead of `split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtasks: Option<Vec<Subtask>>,
    /// Runs one subtask; gets `{id, prompt, metadata, input}`.
    pub worker: Box<Workflow>,
    /// At most this many subtasks at once (all at once when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// What a failed subtask does.
    #[serde(default)]
    pub failure_strategy: FailureStrategy,
    /// Whether failed subtasks' results reach `merge` (collect-all only).
    #[serde(default)]
    pub include_failures: bool,
    /// Gets `{input, results}`; without it the results are the run's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Box<Workflow>>,
    /// How the parallelization run itself runs.
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
}

/// One subtask of a parallelization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subtask {
    /// Unique among the subtasks; part of its run's id, so no `.`, `*`, `>` or spaces.
    pub id: String,
    /// What to do.
    pub prompt: Document,
    /// Anything else the worker should know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
}

/// What a failed subtask does to a parallelization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureStrategy {
    /// The run fails at the first failure, and the subtasks still running are cancelled.
    #[default]
    FailFast,
    /// Every subtask runs; `merge` decides what the failures mean.
    CollectAll,
}

/// Orchestrator-workers: the `plan` step returns `{goal, steps: [{id, description,
/// worker, input, dependsOn}]}`; each step runs on the named worker as soon as every step
/// it depends on succeeded; `synthesize` gets the plan and every result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorWorkers {
    /// Gets the run's input, returns the plan.
    pub plan: Box<Workflow>,
    /// Worker name (what the plan's steps name) → the step that does its work.
    pub workers: BTreeMap<String, Workflow>,
    /// Gets `{input, goal, plan, results}`; without it the results are the run's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesize: Option<Box<Workflow>>,
    /// At most this many plan steps at once (as many as are ready when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// How the orchestrator run itself runs.
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
}

/// Evaluator-optimizer: `generate`, then `evaluate` → `{score, passed?, feedback,
/// criteria?}`, then `optimize` with the feedback, evaluate again … until an evaluation
/// passes or `maxIterations` evaluations were made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluatorOptimizer {
    /// Gets `{input}`, returns the first candidate.
    pub generate: Box<Workflow>,
    /// Gets `{input, candidate, iteration, criteria}`, returns the evaluation.
    pub evaluate: Box<Workflow>,
    /// Gets `{input, candidate, feedback, evaluation, iteration}`, returns a better
    /// candidate; `generate` is asked again (with the feedback) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize: Option<Box<Workflow>>,
    /// The score that passes (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Weighted criteria: when given, the runtime computes the score from the
    /// evaluation's per-criterion scores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<Criterion>,
    /// The most evaluations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// How the evaluator-optimizer run itself runs.
    #[serde(default, skip_serializing_if = "RunOptions::is_default")]
    pub options: RunOptions,
}

/// One criterion of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// Its name, as the evaluation's `criteria[].name` gives it.
    pub name: String,
    /// Its weight in the score (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The score it must reach by itself, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Workflow {
    /// The pattern's name: `task`, `routing`, `parallelization`, `orchestrator-workers`
    /// or `evaluator-optimizer`.
    pub fn pattern(&self) -> &'static str {
        match self {
            Workflow::Task(_) => "task",
            Workflow::Routing(_) => "routing",
            Workflow::Parallelization(_) => "parallelization",
            Workflow::OrchestratorWorkers(_) => "orchestrator-workers",
            Workflow::EvaluatorOptimizer(_) => "evaluator-optimizer",
            Workflow::Check(_) => "check",
        }
    }

    /// Its field in a definition: `task`, `routing`, `parallelization`,
    /// `orchestratorWorkers`, `evaluatorOptimizer` or `check`.
    pub fn field(&self) -> &'static str {
        self.into()
    }

    /// The run options of this workflow (or step).
    pub fn options(&self) -> &RunOptions {
        match self {
            Workflow::Task(w) => &w.options,
            Workflow::Routing(w) => &w.options,
            Workflow::Parallelization(w) => &w.options,
            Workflow::OrchestratorWorkers(w) => &w.options,
            Workflow::EvaluatorOptimizer(w) => &w.options,
            Workflow::Check(_) => &NO_OPTIONS,
        }
    }

    /// Every capability its tasks name, nested workflows included.
    pub fn capabilities(&self) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        self.visit(&mut |step| {
            if let Workflow::Task(task) = step {
                found.insert(task.capability.as_str());
            }
        });
        found
    }

    /// Every rule the `checks` of its steps name, nested workflows included.
    pub fn checked_rules(&self) -> BTreeSet<&str> {
        let mut found = BTreeSet::new();
        self.visit(&mut |step| {
            found.extend(step.options().checks.iter().flat_map(|checks| checks.rules.iter().map(String::as_str)));
            if let Workflow::Check(check) = step {
                found.extend(check.rules.iter().map(String::as_str));
            }
        });
        found
    }

    /// Calls `each` on this step and every step nested in it.
    fn visit<'a>(&'a self, each: &mut impl FnMut(&'a Workflow)) {
        each(self);
        let mut steps: Vec<&Workflow> = Vec::new();
        match self {
            Workflow::Task(_) | Workflow::Check(_) => {}
            Workflow::Routing(w) => {
                steps.push(&w.classify);
                steps.extend(w.routes.values());
            }
            Workflow::Parallelization(w) => {
                steps.extend(w.split.as_deref());
                steps.push(&w.worker);
                steps.extend(w.merge.as_deref());
            }
            Workflow::OrchestratorWorkers(w) => {
                steps.push(&w.plan);
                steps.extend(w.workers.values());
                steps.extend(w.synthesize.as_deref());
            }
            Workflow::EvaluatorOptimizer(w) => {
                steps.extend([&*w.generate, &*w.evaluate]);
                steps.extend(w.optimize.as_deref());
            }
        }
        for step in steps {
            step.visit(each);
        }
    }

    /// What a step is, for people: `task summarize`, `routing`.
    pub fn describe(&self) -> String {
        match self {
            Workflow::Task(task) => format!("task {}", task.capability),
            Workflow::Check(check) => {
                let mut parts = check.rules.clone();
                parts.extend(check.judge.as_ref().map(|_| "judge".to_owned()));
                format!("check {}", parts.join(", "))
            }
            other => other.pattern().to_owned(),
        }
    }

    /// Checks every rule of the definition at once, so nothing runs of a workflow that
    /// could not finish; the error's field is the path to the fault
    /// (`workflow.routing.routes.billing.task.options.retry.attempts`).
    pub fn check(&self) -> Result<(), Error> {
        let mut steps = 0;
        self.check_at("workflow", 0, &mut steps)
    }

    fn check_at(&self, path: &str, depth: usize, steps: &mut usize) -> Result<(), Error> {
        *steps += 1;
        if *steps > MAX_STEPS {
            return Err(invalid("workflow", format!("names more than {MAX_STEPS} steps")));
        }
        if depth > MAX_DEPTH {
            return Err(invalid(path, format!("nests deeper than {MAX_DEPTH} workflows")));
        }
        let here = format!("{path}.{}", self.field());
        let options = self.options();
        options.check().map_err(|e| within(&here, e))?;
        if !matches!(self, Workflow::Task(_)) && options.retry.is_some() {
            return Err(invalid(
                &format!("{here}.options.retry"),
                "retry applies to task steps: a workflow is retried step by step; set it on its steps".into(),
            ));
        }
        if !matches!(self, Workflow::Task(_)) && options.checks.is_some() {
            return Err(invalid(
                &format!("{here}.options.checks"),
                "checks apply to task steps (an agent's output); set them on its steps".into(),
            ));
        }
        let child =
            |step: &Workflow, name: &str, steps: &mut usize| step.check_at(&format!("{here}.{name}"), depth + 1, steps);
        match self {
            Workflow::Task(_) => {}
            // The check's fields sit in the step itself, not under `options.checks`.
            Workflow::Check(check) => check.checks().check().map_err(|e| match e {
                Error::Invalid { field, reason } => {
                    invalid(&format!("{here}.{}", field.trim_start_matches("options.checks.")), reason)
                }
                other => other,
            })?,
            Workflow::Routing(routing) => {
                child(&routing.classify, "classify", steps)?;
                if routing.routes.is_empty() {
                    return Err(invalid(&format!("{here}.routes"), "must name at least one route".into()));
                }
                for (key, route) in &routing.routes {
                    step_id(&format!("{here}.routes"), key)?;
                    child(route, &format!("routes.{key}"), steps)?;
                }
                if let Some(default) = routing.default.as_ref().filter(|d| !routing.routes.contains_key(*d)) {
                    return Err(invalid(
                        &format!("{here}.default"),
                        format!("{default:?} is not a route (routes: {})", keys(&routing.routes)),
                    ));
                }
            }
            Workflow::Parallelization(parallel) => {
                match (&parallel.split, &parallel.subtasks) {
                    (Some(split), None) => child(split, "split", steps)?,
                    (None, Some(subtasks)) => check_subtasks(&format!("{here}.subtasks"), subtasks)?,
                    _ => {
                        return Err(invalid(&here, "needs either a split step or a list of subtasks, not both".into()))
                    }
                }
                child(&parallel.worker, "worker", steps)?;
                if let Some(merge) = &parallel.merge {
                    child(merge, "merge", steps)?;
                }
                positive(&format!("{here}.maxConcurrency"), parallel.max_concurrency)?;
                if parallel.include_failures && parallel.failure_strategy == FailureStrategy::FailFast {
                    return Err(invalid(
                        &format!("{here}.includeFailures"),
                        "only means something with failureStrategy collect-all (fail-fast fails the run at the first failure)".into(),
                    ));
                }
            }
            Workflow::OrchestratorWorkers(orchestrator) => {
                child(&orchestrator.plan, "plan", steps)?;
                if orchestrator.workers.is_empty() {
                    return Err(invalid(&format!("{here}.workers"), "must name at least one worker".into()));
                }
                for (name, worker) in &orchestrator.workers {
                    step_id(&format!("{here}.workers"), name)?;
                    child(worker, &format!("workers.{name}"), steps)?;
                }
                if let Some(synthesize) = &orchestrator.synthesize {
                    child(synthesize, "synthesize", steps)?;
                }
                positive(&format!("{here}.maxConcurrency"), orchestrator.max_concurrency)?;
            }
            Workflow::EvaluatorOptimizer(evaluator) => {
                child(&evaluator.generate, "generate", steps)?;
                child(&evaluator.evaluate, "evaluate", steps)?;
                if let Some(optimize) = &evaluator.optimize {
                    child(optimize, "optimize", steps)?;
                }
                unit_interval(&format!("{here}.threshold"), evaluator.threshold)?;
                if let Some(n) = evaluator.max_iterations {
                    if !(1..=MAX_ITERATIONS).contains(&n) {
                        return Err(invalid(
                            &format!("{here}.maxIterations"),
                            format!("must be 1 to {MAX_ITERATIONS}, not {n}"),
                        ));
                    }
                }
                let mut names = BTreeSet::new();
                for (i, criterion) in evaluator.criteria.iter().enumerate() {
                    let at = format!("{here}.criteria[{i}]");
                    if criterion.name.is_empty() || !names.insert(criterion.name.as_str()) {
                        return Err(invalid(&format!("{at}.name"), "must be a name of its own, not empty".into()));
                    }
                    if criterion.weight.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
                        return Err(invalid(&format!("{at}.weight"), "must be a number above 0".into()));
                    }
                    unit_interval(&format!("{at}.threshold"), criterion.threshold)?;
                }
            }
        }
        Ok(())
    }
}

impl EvaluatorOptimizer {
    /// The iteration bound in force.
    pub fn max_iterations(&self) -> u32 {
        self.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS)
    }

    /// The passing score in force.
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }
}

/// The link of a child run to the run whose step it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// The parent run.
    pub run_id: Token,
    /// Which of its steps this run is.
    pub step: String,
    /// The root of the tree (the run a person submitted): every run of the tree carries
    /// it as its correlation id.
    pub root: Token,
}

/// The id of the run of step `key` of run `parent`: `<parent>:<key>`, or, when that is
/// longer than a subject token may be, a hash of it under the root's prefix (still the
/// same on every instance).
pub fn child_run_id(parent: &Token, key: &str) -> Token {
    let id = format!("{parent}:{key}");
    Token::new("run_id", id.clone()).unwrap_or_else(|_| {
        let hash = blake3::hash(id.as_bytes()).to_hex();
        let prefix: String = parent.as_str().chars().take(48).collect();
        Token::new("run_id", format!("{prefix}:{}", &hash[..48])).expect("a valid prefix and hex")
    })
}

/// Checks that `id` can be part of a run id (it names a route, worker, subtask or plan
/// step); `at` names where it came from.
pub fn step_id(at: &str, id: &str) -> Result<(), Error> {
    let token = Token::new(at, id)?;
    if token.as_str().contains(':') || token.as_str().len() > 64 {
        return Err(invalid(at, format!("{id:?} must be at most 64 bytes and have no ':' (it is part of a run id)")));
    }
    Ok(())
}

/// Checks a list of subtasks (given in the definition, or returned by a split step).
pub fn check_subtasks(at: &str, subtasks: &[Subtask]) -> Result<(), Error> {
    if subtasks.is_empty() || subtasks.len() > MAX_FAN_OUT {
        return Err(invalid(at, format!("must list 1 to {MAX_FAN_OUT} subtasks, not {}", subtasks.len())));
    }
    let mut seen = BTreeSet::new();
    for (i, subtask) in subtasks.iter().enumerate() {
        step_id(&format!("{at}[{i}].id"), &subtask.id)?;
        if !seen.insert(subtask.id.as_str()) {
            return Err(invalid(&format!("{at}[{i}].id"), format!("{:?} is the id of an earlier subtask", subtask.id)));
        }
    }
    Ok(())
}

fn keys<T>(map: &BTreeMap<String, T>) -> String {
    map.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn positive(at: &str, value: Option<u32>) -> Result<(), Error> {
    match value {
        Some(0) => Err(invalid(at, "must be at least 1".into())),
        _ => Ok(()),
    }
}

fn unit_interval(at: &str, value: Option<f64>) -> Result<(), Error> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(invalid(at, format!("must be between 0 and 1, not {v}"))),
        _ => Ok(()),
    }
}

/// `error`, with its field put under `path` (`options.retry` → `<path>.options.retry`).
fn within(path: &str, error: Error) -> Error {
    match error {
        Error::Invalid { field, reason } => Error::Invalid { field: format!("{path}.{field}"), reason },
        other => other,
    }
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Invalid { field: field.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Workflow, Error> {
        let workflow: Workflow = serde_json::from_value(json).map_err(|e| invalid("workflow", e.to_string()))?;
        workflow.check()?;
        Ok(workflow)
    }

    fn task(capability: &str) -> serde_json::Value {
        serde_json::json!({"task": {"capability": capability}})
    }

    #[test]
    fn every_pattern_reads_from_json_and_round_trips_through_messagepack() {
        let definitions = [
            serde_json::json!({"routing": {"classify": task("c"), "routes": {"a": task("x"), "b": task("y")}, "default": "a"}}),
            serde_json::json!({"parallelization": {"split": task("s"), "worker": task("w"), "maxConcurrency": 4,
                "failureStrategy": "collect-all", "includeFailures": true, "merge": task("m")}}),
            serde_json::json!({"orchestratorWorkers": {"plan": task("p"), "workers": {"research": task("r")}, "synthesize": task("s")}}),
            serde_json::json!({"evaluatorOptimizer": {"generate": task("g"), "evaluate": task("e"), "optimize": task("o"),
                "threshold": 0.9, "criteria": [{"name": "clarity", "weight": 2.5, "threshold": 0.5}], "maxIterations": 5}}),
        ];
        for json in definitions {
            let workflow = parse(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
            let packed = rmp_serde::to_vec_named(&workflow).unwrap();
            assert_eq!(rmp_serde::from_slice::<Workflow>(&packed).unwrap(), workflow);
            assert_eq!(serde_json::to_value(&workflow).unwrap(), json, "JSON writes back what it read");
            assert!(json.get(workflow.field()).is_some(), "{} is its field", workflow.field());
        }
    }

    #[test]
    fn errors_name_the_path_to_the_fault() {
        let cases = [
            (
                serde_json::json!({"routing": {"classify": task("c"), "routes": {"a": task("x")}, "default": "z"}}),
                "workflow.routing.default",
            ),
            (
                serde_json::json!({"routing": {"classify": task("c"), "routes": {"a": {"task": {"capability": "x",
                    "options": {"retry": {"attempts": 0}}}}}}}),
                "workflow.routing.routes.a.task.options.retry.attempts",
            ),
            (
                serde_json::json!({"parallelization": {"worker": task("w"), "subtasks": [
                    {"id": "a", "prompt": "p"}, {"id": "a", "prompt": "q"}]}}),
                "workflow.parallelization.subtasks[1].id",
            ),
            (serde_json::json!({"parallelization": {"worker": task("w")}}), "workflow.parallelization"),
            (
                serde_json::json!({"parallelization": {"split": task("s"), "worker": task("w"), "includeFailures": true}}),
                "workflow.parallelization.includeFailures",
            ),
            (
                serde_json::json!({"evaluatorOptimizer": {"generate": task("g"), "evaluate": task("e"), "maxIterations": 0}}),
                "workflow.evaluatorOptimizer.maxIterations",
            ),
            (
                serde_json::json!({"evaluatorOptimizer": {"generate": task("g"), "evaluate": task("e"), "threshold": 1.5}}),
                "workflow.evaluatorOptimizer.threshold",
            ),
            (
                serde_json::json!({"routing": {"classify": task("c"), "routes": {"a": task("x")},
                    "options": {"retry": {"attempts": 2}}}}),
                "workflow.routing.options.retry",
            ),
            (
                serde_json::json!({"routing": {"classify": task("c"), "routes": {"a.b": task("x")}}}),
                "workflow.routing.routes",
            ),
        ];
        for (json, field) in cases {
            let error = parse(json.clone()).expect_err(&json.to_string());
            assert_eq!(error.field(), Some(field), "{json}: {error}");
        }
        let typo = parse(serde_json::json!({"routing": {"clasify": task("c"), "routes": {}}})).unwrap_err();
        assert!(typo.to_string().contains("clasify"), "{typo}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut json = task("leaf");
        for _ in 0..=MAX_DEPTH {
            json = serde_json::json!({"routing": {"classify": task("c"), "routes": {"only": json}}});
        }
        let error = parse(json).unwrap_err();
        assert!(error.to_string().contains("nests deeper"), "{error}");
    }

    #[test]
    fn child_run_ids_are_the_parent_and_the_step_or_a_hash_when_too_long() {
        let parent = Token::new("run_id", "r-1").unwrap();
        assert_eq!(child_run_id(&parent, "subtask:a").as_str(), "r-1:subtask:a");
        let long = Token::new("run_id", "x".repeat(120)).unwrap();
        let child = child_run_id(&long, "subtask:a");
        assert!(child.as_str().len() <= 128 && child.as_str().starts_with(&"x".repeat(48)));
        assert_eq!(child, child_run_id(&long, "subtask:a"));
        assert_ne!(child, child_run_id(&long, "subtask:b"));
    }
}
