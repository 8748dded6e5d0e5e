//! A workflow run's step tree, for `osp run get` and the end of `osp run watch`: its
//! steps, and beneath each step that is a workflow of its own, that run's steps, fetched
//! with `get` as deep as workflows nest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use osp_client::Scheduler;
use osp_protocol::scheduler::queries::{RunView, StepView};
use osp_protocol::scheduler::workflow;
use osp_protocol::Timestamp;
use serde_json::Value;

use super::show::{progress, run_json};
use crate::clock;
use crate::entries::truncate;

/// How deep nested workflow runs are fetched: as deep as workflows may nest.
pub const MAX_DEPTH: usize = workflow::MAX_DEPTH;
/// The most nested workflow runs fetched for one tree (a parallelization whose worker is
/// a workflow may have a thousand); the rest are counted, not shown.
pub const MAX_FETCHES: usize = 256;
/// `get`s in flight at once, per level.
const CONCURRENT_FETCHES: usize = 8;
/// Longest error shown in the tree, in characters.
const ERROR_WIDTH: usize = 80;

/// A workflow run with the trees of its steps that are workflows of their own.
#[derive(Debug)]
pub struct Tree {
    /// The workflow run at this tree's root, as `get` answered it.
    pub run: RunView,
    /// The trees of its nested workflow steps, by step key.
    pub nested: BTreeMap<String, Tree>,
    /// Its nested workflow steps not shown: deeper than [`MAX_DEPTH`], past
    /// [`MAX_FETCHES`], or whose run is not there (yet).
    pub unfetched: usize,
}

impl Tree {
    /// The tree of `run`, its nested workflow runs fetched from `scheduler`.
    pub async fn fetch(scheduler: &Scheduler, run: RunView) -> osp_client::Result<Tree> {
        let budget = AtomicUsize::new(MAX_FETCHES);
        fetch_at(scheduler, run, 0, &budget).await
    }

    /// Steps ended, and known in all so far (the scheduler's count: a parallelization
    /// knows its subtasks once split).
    pub fn done(&self) -> (u64, u64) {
        let steps = &self.run.steps;
        let ended = steps.iter().filter(|step| step.status.is_final()).count() as u64;
        let known = self.run.progress.as_ref().and_then(|p| p.total).unwrap_or(0);
        (ended, known.max(steps.len() as u64))
    }
}

/// True when the step is a workflow of its own (`what` is a pattern's name, where a
/// task's is `task <capability>`).
fn is_workflow(step: &StepView) -> bool {
    !step.what.starts_with("task ")
}

/// `run`'s tree, where `run` is `depth` workflows below the root.
fn fetch_at<'a>(
    scheduler: &'a Scheduler,
    run: RunView,
    depth: usize,
    budget: &'a AtomicUsize,
) -> BoxFuture<'a, osp_client::Result<Tree>> {
    async move {
        let wanted: Vec<(String, String)> =
            run.steps.iter().filter(|s| is_workflow(s)).map(|s| (s.key.clone(), s.run_id.clone())).collect();
        let count = wanted.len();
        let allowed = if depth < MAX_DEPTH { take(budget, count) } else { 0 };
        let fetched: Vec<Option<(String, Tree)>> = futures::stream::iter(wanted.into_iter().take(allowed))
            .map(|(key, run_id)| async move {
                let tree = match scheduler.get(&run_id).await? {
                    Some(child) => Some((key, fetch_at(scheduler, child, depth + 1, budget).await?)),
                    None => None,
                };
                Ok::<_, osp_client::Error>(tree)
            })
            .buffered(CONCURRENT_FETCHES)
            .try_collect()
            .await?;
        // A step's run not found (not submitted yet) has no tree yet.
        let nested: BTreeMap<String, Tree> = fetched.into_iter().flatten().collect();
        Ok(Tree { run, unfetched: count - nested.len(), nested })
    }
    .boxed()
}

/// Takes up to `wanted` fetches from `budget`; how many it got.
fn take(budget: &AtomicUsize, wanted: usize) -> usize {
    let before = budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| Some(left.saturating_sub(wanted)))
        .unwrap_or_default();
    before.min(wanted)
}

/// The `steps:` block of a workflow run: one aligned line per step (key, what it runs,
/// status, duration, error), each nested workflow's steps indented beneath its step.
pub fn block(tree: &Tree, now: Timestamp) -> Vec<String> {
    let mut rows = vec![Row::Step(["STEP", "RUNS", "STATUS", "DURATION", "ERROR"].map(str::to_owned))];
    rows_of(tree, 0, now, &mut rows);
    let cells = || rows.iter().filter_map(|row| if let Row::Step(cells) = row { Some(cells) } else { None });
    let columns = if cells().skip(1).any(|cells| !cells[4].is_empty()) { 5 } else { 4 };
    let widths: Vec<usize> =
        (0..columns).map(|c| cells().map(|cells| cells[c].chars().count()).max().unwrap_or(0)).collect();
    let mut lines = vec!["steps:".to_owned()];
    for row in &rows {
        let line = match row {
            Row::Step(cells) => {
                let cells: Vec<String> = (0..columns).map(|c| format!("{:<w$}", cells[c], w = widths[c])).collect();
                cells.join("  ").trim_end().to_owned()
            }
            Row::Note(note) => note.clone(),
        };
        lines.push(format!("  {line}"));
    }
    lines
}

/// A line of the block: a step's cells (`[step, runs, status, duration, error]`), or a
/// note that is not aligned with them.
enum Row {
    Step([String; 5]),
    Note(String),
}

/// The rows of `tree`'s steps, `depth` levels in.
fn rows_of(tree: &Tree, depth: usize, now: Timestamp, rows: &mut Vec<Row>) {
    let indent = "  ".repeat(depth);
    for step in &tree.run.steps {
        let nested = tree.nested.get(&step.key);
        let what = match nested {
            Some(nested) => {
                let (done, total) = nested.done();
                format!("{} {}", step.what, progress(done, Some(total), None))
            }
            None => step.what.clone(),
        };
        let error = step.error.as_ref().map(|e| truncate(&e.to_string(), ERROR_WIDTH)).unwrap_or_default();
        rows.push(Row::Step([
            format!("{indent}{}", step.key),
            what,
            step.status.to_string(),
            duration(step, now),
            error,
        ]));
        if let Some(nested) = nested {
            rows_of(nested, depth + 1, now, rows);
        }
    }
    if tree.unfetched > 0 {
        rows.push(Row::Note(format!(
            "{indent}… {} not shown: osp run get {}",
            crate::output::count(tree.unfetched as u64, "nested workflow run"),
            tree.run.run_id
        )));
    }
}

/// How long the step's run took (`1.2s`), or has taken so far.
fn duration(step: &StepView, now: Timestamp) -> String {
    let (ms, suffix) = match step.duration_ms {
        Some(ms) => (ms, ""),
        None => (now.millis_since(step.started_at), " so far"),
    };
    format!("{}{suffix}", clock::duration(ms))
}

/// The tree as one JSON object: the run as `osp run get --json` prints it, each nested
/// workflow step with its run's tree as `run`, and `steps_not_fetched` where the bounds
/// left some out.
pub fn json(tree: &Tree) -> Value {
    let mut value = run_json(&tree.run);
    for (i, step) in tree.run.steps.iter().enumerate() {
        if let Some(nested) = tree.nested.get(&step.key) {
            value["steps"][i]["run"] = json(nested);
        }
    }
    if tree.unfetched > 0 {
        value["steps_not_fetched"] = tree.unfetched.into();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::scheduler::queries::{Progress, RunStatus};
    use osp_protocol::scheduler::TaskError;

    fn step(key: &str, what: &str, status: RunStatus, ms: Option<i64>) -> StepView {
        StepView {
            key: key.into(),
            run_id: format!("w:{key}"),
            what: what.into(),
            status,
            started_at: Timestamp(1_000),
            ended_at: ms.map(|ms| Timestamp(1_000 + ms)),
            duration_ms: ms.map(|ms| ms as u64),
            error: None,
        }
    }

    /// A workflow run with `steps`, knowing of `total` in all.
    fn run(run_id: &str, steps: Vec<StepView>, total: u64) -> RunView {
        RunView {
            run_id: run_id.into(),
            steps,
            progress: Some(Progress { current: 0, total: Some(total), message: None }),
            ..RunView::default()
        }
    }

    #[test]
    fn nested_steps_are_indented_beneath_their_step() {
        let mut failed = step("subtask:b", "task work", RunStatus::Failed, Some(5));
        failed.error = Some(TaskError { kind: "boom".into(), message: "no good".into(), details: None });
        let child = run(
            "w:route:a",
            vec![
                step("subtask:a", "task work", RunStatus::Completed, Some(1_200)),
                failed,
                step("merge", "task merge", RunStatus::InProgress, None),
            ],
            4,
        );
        let root = run(
            "w",
            vec![
                step("classify", "task classify", RunStatus::Completed, Some(20)),
                step("route:a", "parallelization", RunStatus::InProgress, None),
            ],
            2,
        );
        let tree = Tree {
            run: root,
            nested: [("route:a".to_owned(), Tree { run: child, nested: BTreeMap::new(), unfetched: 0 })].into(),
            unfetched: 0,
        };
        let lines = block(&tree, Timestamp(4_000));
        assert_eq!(
            lines,
            [
                "steps:",
                "  STEP         RUNS                 STATUS       DURATION   ERROR",
                "  classify     task classify        completed    20ms",
                "  route:a      parallelization 2/4  in-progress  3s so far",
                "    subtask:a  task work            completed    1.2s",
                "    subtask:b  task work            failed       5ms        boom: no good",
                "    merge      task merge           in-progress  3s so far",
            ]
        );
        let json = json(&tree);
        assert_eq!(json["steps"][1]["run"]["steps"][1]["error"]["kind"], "boom");
        assert_eq!(json["steps"][1]["run"]["run_id"], "w:route:a");
        assert!(json["steps"][0].get("run").is_none() && json.get("steps_not_fetched").is_none(), "{json}");
    }

    #[test]
    fn unfetched_workflows_are_counted_and_the_budget_is_shared() {
        let root = run("w", vec![step("route:a", "routing", RunStatus::Completed, Some(1))], 1);
        let tree = Tree { run: root, nested: BTreeMap::new(), unfetched: 1 };
        let lines = block(&tree, Timestamp(0));
        assert_eq!(lines.last().unwrap(), "  … 1 nested workflow run not shown: osp run get w");
        assert_eq!(json(&tree)["steps_not_fetched"], 1);
        let budget = AtomicUsize::new(5);
        assert_eq!((take(&budget, 3), take(&budget, 3), take(&budget, 1)), (3, 2, 0));
    }
}
