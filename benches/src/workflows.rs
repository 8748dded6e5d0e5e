//! `osp bench workflows`: workflow runs end to end through the scheduler, next to
//! single-task runs and the raw JetStream work queue, same server, same run.
//!
//! - raw: the work-queue baselines of `osp bench scheduler` ([`measure_raw`], with
//!   `--raw-duration` each and [`FAN_OUT`] tasks in flight); the figures shown are
//!   publish → pulled of one task at a time (an idle queue), and tasks/s;
//! - single task: runs of one task, one at a time, for [`IDLE`]: submit → completed,
//!   the figure `osp bench scheduler` prints as `idle: submit to completed p50`;
//! - parallelization: a `split` step returning [`FAN_OUT`] subtasks, all run at once
//!   by a worker step, then a `merge` step: `FAN_OUT + 2` steps, three on the critical
//!   path (split, a subtask, merge);
//! - orchestrator-workers: a `plan` step returning [`DAG_LAYERS`] layers of
//!   [`DAG_WIDTH`] steps, each step depending on every step of the layer before (a fan-out
//!   and a fan-in at every layer), one worker, then a `synthesize` step: plan, every plan
//!   step and synthesize are the steps; plan, the layers and synthesize the critical path.
//!
//! Each workflow runs one at a time, back to back, for `--duration` (at least
//! [`MIN_RUNS`] runs), after a warm-up run. Its wall time is submit start → the root's
//! final event seen by the one follower of run events, as for a single task. A run
//! counts only when it completed with every one of its steps completed, as read back
//! from the scheduler; a phase stops at the first run that did not, which the report
//! names, and the command then exits non-zero.
//!
//! The agents are no-ops: `--agents` workers, each on a connection of its own with
//! `--concurrency` slots, offering the one capability every step names. The handler
//! answers by the step key in the run id (`<root>:split` → the subtasks, `<root>:plan`
//! → the plan, any other step → a small constant, a single task → its input) and notes
//! how long it took, so the overhead of a run is its wall time less the agents' time on
//! its critical path (per level of the path, the slowest step of the level).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use clap::Args;
use osp_client::{Agent, Client, Submission, Task, TaskFailure, Worker};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::{child_run_id, Workflow};
use osp_protocol::Token;
use serde_json::{json, Value};

use crate::scheduler::{
    agent_name, drive, follow_runs, measure_raw, ms, one_run, task_message_bytes, Latencies, Ours, Phase, Progress,
    Raw, SchedulerArgs, Tracker, CAPABILITY, IDLE, RUN_WITHIN,
};
use crate::stats::{percentiles, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench workflows`.
#[derive(Args)]
pub struct WorkflowsArgs {
    /// How long each workflow is run, one run at a time (e.g. 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long each raw baseline runs.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    raw_duration: Duration,
    /// In-process agents: workers, each on a NATS connection of its own.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Tasks each agent runs at once (its max concurrency).
    #[arg(long, default_value_t = 64)]
    concurrency: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Subtasks of the parallelization.
const FAN_OUT: usize = 100;
/// The plan's shape: layers, and steps per layer.
const DAG_LAYERS: usize = 10;
const DAG_WIDTH: usize = 5;
/// The worker the plan's steps name.
const DAG_WORKER: &str = "noop";
/// Runs of each workflow at the least, whatever `--duration`.
const MIN_RUNS: usize = 3;
/// Single-task runs before the measured ones, not counted.
const WARMUP: Duration = Duration::from_millis(500);

/// Runs the benchmark and prints its figures; exits non-zero when a run did not
/// complete.
pub async fn run(args: WorkflowsArgs) -> anyhow::Result<ExitCode> {
    if args.agents == 0 || args.concurrency == 0 {
        bail!("--agents and --concurrency must be at least 1");
    }
    if args.duration.is_zero() || args.raw_duration.is_zero() {
        bail!("--duration and --raw-duration must be more than zero");
    }
    let (binary, server) = crate::start_server().await?;
    let url = server.url();
    let (parallel, dag) = (Shape::parallelization(), Shape::orchestrator_workers());
    eprintln!(
        "bench workflows: nats-server {} ({}), {} agents x {} concurrency, parallelization of {FAN_OUT}, \
         DAG of {}, {:?} each (raw {:?} each)",
        binary.version,
        binary.source,
        args.agents,
        args.concurrency,
        dag_shape(),
        args.duration,
        args.raw_duration
    );

    let client = register_agents(&url, &args).await?;
    let js = jetstream::new(client.nats().clone());
    let raw = measure_raw(&url, &js, task_message_bytes()?, &args.raw_args()).await?;

    let scheduler = osp_scheduler::Scheduler::start(osp_cli::connect::client(&url).await?, Default::default())
        .await
        .context("starting the scheduler")?;
    let tracker = Arc::new(Tracker::default());
    let follower = follow_runs(&js, tracker.clone()).await?;
    let agent_time = Arc::new(AgentTime::default());
    let mut workers = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        workers.push(start_worker(&url, i, args.concurrency, tracker.clone(), agent_time.clone()).await?);
    }
    let ours = Ours { client, tracker };

    drive(&ours, WARMUP, 1, &Progress::hidden()).await?;
    let single = drive(&ours, IDLE, 1, &Progress::new("single tasks", IDLE)).await?;
    let parallel = measure_shape(&ours, &agent_time, parallel, args.duration).await?;
    let dag = measure_shape(&ours, &agent_time, dag, args.duration).await?;

    for worker in workers {
        worker.shutdown().await;
    }
    scheduler.shutdown().await;
    follower.abort();
    drop(server);

    let figures = Figures { raw, single, parallel, dag };
    if args.json {
        println!("{}", figures.report(&args, &binary.version.to_string()));
    } else {
        figures.print_table(&args);
    }
    Ok(if figures.all_completed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

impl WorkflowsArgs {
    /// The options of the raw baselines, as `osp bench scheduler` takes them: as many
    /// consumers as agents, and a fan-out's worth of tasks in flight.
    fn raw_args(&self) -> SchedulerArgs {
        SchedulerArgs {
            duration: self.duration,
            raw_duration: self.raw_duration,
            agents: self.agents,
            concurrency: self.concurrency,
            in_flight: FAN_OUT,
            json: self.json,
        }
    }
}

/// Registers the agents, so a submit finds the capability offered, through a registry
/// started for it (which also applies the stream definitions) and stopped once they
/// are registered: the workers do not heartbeat it. The client is the submitter's.
async fn register_agents(url: &str, args: &WorkflowsArgs) -> anyhow::Result<Client> {
    let offline_after = Duration::from_secs(3600);
    let config = osp_registry::Config { offline_after, ..osp_registry::Config::default() };
    let registry = osp_registry::Registry::start(osp_cli::connect::client(url).await?, config).await?;
    let client = Client::new(osp_cli::connect::client(url).await?).with_actor("service:bench");
    for name in (0..args.agents).map(agent_name) {
        let agent = Agent::builder(name.as_str()).capabilities([CAPABILITY]).max_concurrency(args.concurrency);
        client.registry().register(&agent.entry()?).await.with_context(|| format!("registering {name}"))?;
    }
    registry.shutdown().await;
    Ok(client)
}

/// A no-op agent on a connection of its own: it answers each task at once (see
/// [`Answers::answer`]) and notes how long that took.
async fn start_worker(
    url: &str,
    i: usize,
    concurrency: u32,
    tracker: Arc<Tracker>,
    agent_time: Arc<AgentTime>,
) -> anyhow::Result<Worker> {
    let client = Client::new(osp_cli::connect::client(url).await?);
    let answers = Arc::new(Answers::new());
    Worker::builder(&client, agent_name(i))
        .capability(CAPABILITY)
        .max_concurrency(concurrency)
        .shutdown_timeout(Duration::from_secs(5))
        .start(move |task: Task| {
            let called = Instant::now();
            tracker.handler_called(task.run_id(), called);
            let output = answers.answer(&task);
            agent_time.note(task.run_id(), called.elapsed());
            std::future::ready(Ok::<_, TaskFailure>(output))
        })
        .await
        .with_context(|| format!("starting agent {i}"))
}

/// What the no-op agent answers, made once.
struct Answers {
    /// A split step's output.
    subtasks: Value,
    /// A plan step's output.
    plan: Value,
}

impl Answers {
    fn new() -> Answers {
        let subtasks: Vec<Value> =
            (0..FAN_OUT).map(|i| json!({"id": subtask_id(i), "prompt": format!("subtask {i}")})).collect();
        let steps: Vec<Value> = (0..DAG_LAYERS)
            .flat_map(|layer| (0..DAG_WIDTH).map(move |i| (layer, i)))
            .map(|(layer, i)| {
                let depends_on: Vec<String> =
                    (0..DAG_WIDTH).filter(|_| layer > 0).map(|j| dag_step_id(layer - 1, j)).collect();
                json!({
                    "id": dag_step_id(layer, i),
                    "description": format!("layer {layer}, step {i}"),
                    "worker": DAG_WORKER,
                    "input": {"layer": layer, "step": i},
                    "dependsOn": depends_on,
                })
            })
            .collect();
        Answers { subtasks: json!({ "subtasks": subtasks }), plan: json!({"goal": dag_shape(), "steps": steps}) }
    }

    /// The split step gets the subtasks, the plan step the plan, any other step a small
    /// constant (an echo would grow a plan step's input, which holds the outputs of the
    /// steps it depends on, layer after layer); a single task gets its input back, as in
    /// `osp bench scheduler`.
    fn answer(&self, task: &Task) -> Value {
        match step_key(task.run_id()) {
            Some("split") => self.subtasks.clone(),
            Some("plan") => self.plan.clone(),
            Some(_) => json!({"done": true}),
            None => task.input().clone(),
        }
    }
}

/// The step key of a step's run (`<root>:<step key>`; the benchmark's roots are UUIDs,
/// without `:`), `None` for a root.
fn step_key(run_id: &str) -> Option<&str> {
    run_id.split_once(':').map(|(_, key)| key)
}

fn subtask_id(i: usize) -> String {
    format!("s{i}")
}

fn dag_step_id(layer: usize, i: usize) -> String {
    format!("l{layer}s{i}")
}

/// The plan's shape, for people.
fn dag_shape() -> String {
    format!(
        "{} steps: {DAG_LAYERS} layers of {DAG_WIDTH}, each step depending on every step of the layer before",
        DAG_LAYERS * DAG_WIDTH
    )
}

/// How long the agents' handlers took, by run id.
#[derive(Default)]
struct AgentTime {
    took: Mutex<HashMap<String, Duration>>,
}

impl AgentTime {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Duration>> {
        self.took.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, run_id: &str, took: Duration) {
        *self.lock().entry(run_id.to_owned()).or_default() += took;
    }

    /// The agents' time on the critical path of the workflow run `root` (per level, its
    /// slowest step), forgetting its steps.
    fn on_critical_path(&self, root: &Token, shape: &Shape) -> Duration {
        let mut took = self.lock();
        let mut slowest = |level: &Vec<String>| {
            level.iter().filter_map(|key| took.remove(child_run_id(root, key).as_str())).max().unwrap_or_default()
        };
        shape.levels.iter().map(&mut slowest).sum()
    }
}

/// A workflow the benchmark runs.
struct Shape {
    /// Its name in the report.
    name: &'static str,
    definition: Workflow,
    /// Its step keys, level by level along the critical path: each level's steps start
    /// once every step of the level before ended.
    levels: Vec<Vec<String>>,
}

impl Shape {
    /// Split into [`FAN_OUT`] subtasks, each a no-op, then merge.
    fn parallelization() -> Shape {
        let definition = json!({"parallelization": {
            "split": {"task": {"capability": CAPABILITY}},
            "worker": {"task": {"capability": CAPABILITY}},
            "merge": {"task": {"capability": CAPABILITY}},
        }});
        let subtasks = (0..FAN_OUT).map(|i| format!("subtask:{}", subtask_id(i))).collect();
        Shape::new("parallel_100", definition, vec![vec!["split".into()], subtasks, vec!["merge".into()]])
    }

    /// Plan [`DAG_LAYERS`] layers of [`DAG_WIDTH`] no-op steps, run them, synthesize.
    fn orchestrator_workers() -> Shape {
        let definition = json!({"orchestratorWorkers": {
            "plan": {"task": {"capability": CAPABILITY}},
            "workers": {DAG_WORKER: {"task": {"capability": CAPABILITY}}},
            "synthesize": {"task": {"capability": CAPABILITY}},
        }});
        let mut levels = vec![vec!["plan".to_owned()]];
        levels.extend(
            (0..DAG_LAYERS).map(|layer| (0..DAG_WIDTH).map(|i| format!("step:{}", dag_step_id(layer, i))).collect()),
        );
        levels.push(vec!["synthesize".to_owned()]);
        Shape::new("dag_50", definition, levels)
    }

    fn new(name: &'static str, definition: Value, levels: Vec<Vec<String>>) -> Shape {
        let definition = serde_json::from_value(definition).expect("the benchmark's workflows are well formed");
        Shape { name, definition, levels }
    }

    /// Its steps in all.
    fn steps(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// Steps on its critical path.
    fn critical_path(&self) -> usize {
        self.levels.len()
    }
}

/// One completed workflow run.
struct WorkflowRun {
    /// Submit start → its final event seen.
    wall: Duration,
    /// The agents' time on its critical path.
    agents: Duration,
}

/// What the runs of one workflow gave.
struct Measured {
    shape: Shape,
    runs: Vec<WorkflowRun>,
    /// Why the run that stopped the phase did not complete.
    failure: Option<String>,
}

/// Runs `shape` one run at a time for `duration` (at least [`MIN_RUNS`] runs) after a
/// warm-up run, stopping at the first run that does not complete.
async fn measure_shape(
    ours: &Ours,
    agent_time: &AgentTime,
    shape: Shape,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let mut measured = Measured { runs: Vec::new(), failure: None, shape };
    if let Err(error) = workflow_run(ours, agent_time, &measured.shape).await {
        measured.failure = Some(format!("warm-up: {error}"));
        return Ok(measured);
    }
    let progress = Progress::new(measured.shape.name, duration);
    let deadline = Instant::now() + duration;
    while measured.runs.len() < MIN_RUNS || Instant::now() < deadline {
        match workflow_run(ours, agent_time, &measured.shape).await {
            Ok(run) => measured.runs.push(run),
            Err(error) => {
                measured.failure = Some(error);
                break;
            }
        }
        progress.tick(measured.runs.len() as u64);
    }
    progress.finish();
    Ok(measured)
}

/// One run of `shape`: submitted, awaited, checked.
async fn workflow_run(ours: &Ours, agent_time: &AgentTime, shape: &Shape) -> Result<WorkflowRun, String> {
    let submission = Submission::workflow(shape.definition.clone(), json!({"benchmark": shape.name}));
    let root = Token::new("run_id", submission.id()).map_err(|error| error.to_string())?;
    let scheduler = ours.client.scheduler();
    let timeline = one_run(scheduler.clone(), ours.tracker.clone(), submission).await?;
    check_completed(&scheduler, &root, shape).await?;
    let ended = timeline.ended.filter(|_| timeline.completed).ok_or(format!("run {root}: no run.completed seen"))?;
    let agents = agent_time.on_critical_path(&root, shape);
    Ok(WorkflowRun { wall: ended.saturating_duration_since(timeline.submitted), agents })
}

/// Whether the run completed, and every one of the shape's steps with it.
async fn check_completed(scheduler: &osp_client::Scheduler, root: &Token, shape: &Shape) -> Result<(), String> {
    let view = scheduler.wait(root.as_str(), RUN_WITHIN).await.map_err(|error| format!("run {root}: {error}"))?;
    let completed = view.steps.iter().filter(|step| step.status == RunStatus::Completed).count();
    if view.status() != RunStatus::Completed || completed != shape.steps() {
        return Err(format!(
            "run {root} ended {:?} with {completed} of {} steps completed (error: {:?})",
            view.status(),
            shape.steps(),
            view.error
        ));
    }
    Ok(())
}

/// Figures of one workflow's completed runs, in milliseconds.
struct Summary {
    wall_p50: f64,
    wall_min: f64,
    wall_max: f64,
    /// The agents' time on the critical path, median.
    agents_p50: f64,
    /// Wall time less the agents' time on the critical path, median.
    overhead_p50: f64,
    /// The overhead over every step of the workflow.
    overhead_per_step: f64,
    /// The overhead over the steps of its critical path.
    overhead_per_critical_step: f64,
    wall_per_step: f64,
}

impl Measured {
    /// `None` when no run completed.
    fn summary(&self) -> Option<Summary> {
        if self.runs.is_empty() {
            return None;
        }
        let p50 = |of: fn(&WorkflowRun) -> Duration| {
            let mut samples: Vec<Duration> = self.runs.iter().map(of).collect();
            percentiles(&mut samples).p50 / 1000.0
        };
        let walls = self.runs.iter().map(|run| run.wall.as_secs_f64() * 1000.0);
        let (steps, critical_path) = (self.shape.steps() as f64, self.shape.critical_path() as f64);
        let (wall_p50, overhead_p50) = (p50(|run| run.wall), p50(|run| run.wall.saturating_sub(run.agents)));
        Some(Summary {
            wall_p50,
            wall_min: walls.clone().fold(f64::INFINITY, f64::min),
            wall_max: walls.fold(0.0, f64::max),
            agents_p50: p50(|run| run.agents),
            overhead_p50,
            overhead_per_step: overhead_p50 / steps,
            overhead_per_critical_step: overhead_p50 / critical_path,
            wall_per_step: wall_p50 / steps,
        })
    }

    /// The report's fields of this workflow, named after it; its figures are null
    /// when no run completed.
    fn report(&self, into: &mut serde_json::Map<String, Value>) {
        let summary = self.summary();
        let figure = |of: fn(&Summary) -> f64| json!(summary.as_ref().map(|s| round3(of(s))));
        let fields = [
            ("runs", json!(self.runs.len())),
            ("steps", json!(self.shape.steps())),
            ("critical_path_steps", json!(self.shape.critical_path())),
            ("wall_ms_p50", figure(|s| s.wall_p50)),
            ("wall_ms_min", figure(|s| s.wall_min)),
            ("wall_ms_max", figure(|s| s.wall_max)),
            ("agents_on_critical_path_ms_p50", figure(|s| s.agents_p50)),
            ("overhead_ms_p50", figure(|s| s.overhead_p50)),
            ("overhead_per_step_ms", figure(|s| s.overhead_per_step)),
            ("overhead_per_critical_path_step_ms", figure(|s| s.overhead_per_critical_step)),
            ("wall_per_step_ms", figure(|s| s.wall_per_step)),
            ("failure", json!(self.failure)),
        ];
        for (field, value) in fields {
            into.insert(format!("{}_{field}", self.shape.name), value);
        }
    }
}

/// `x` to three decimals: per-step figures are fractions of a millisecond.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct Figures {
    raw: Raw,
    single: Phase,
    parallel: Measured,
    dag: Measured,
}

impl Figures {
    fn all_completed(&self) -> bool {
        self.single.failed == 0 && self.parallel.failure.is_none() && self.dag.failure.is_none()
    }

    /// Single-task submit → completed, one run at a time (microseconds).
    fn single_task(&self) -> Percentiles {
        Latencies::of(&self.single.timelines).completed
    }

    fn report(&self, args: &WorkflowsArgs, server_version: &str) -> Value {
        let single = self.single_task();
        let (parallel, dag) = (self.parallel.summary(), self.dag.summary());
        let mut report = json!({
            "benchmark": "workflows",
            "server_version": server_version,
            "duration_s": args.duration.as_secs_f64(),
            "raw_duration_s": args.raw_duration.as_secs_f64(),
            "agents": args.agents,
            "concurrency": args.concurrency,
            "dag_shape": dag_shape(),
            "single_task_runs": self.single.timelines.len(),
            "single_task_failed": self.single.failed,
            "single_task_ms_p50": ms(single.p50),
            "single_task_ms_p99": ms(single.p99),
            "raw_workqueue_idle_p50_ms": ms(self.raw.idle_latency.p50),
            "raw_workqueue_idle_p99_ms": ms(self.raw.idle_latency.p99),
            "raw_workqueue_tasks_per_s": round2(self.raw.queue_per_s),
            "raw_workqueue_in_flight": FAN_OUT,
            "per_step_overhead_ms": {
                "parallel_100": parallel.map(|s| round3(s.overhead_per_step)),
                "dag_50_critical_path": dag.map(|s| round3(s.overhead_per_critical_step)),
                "single_task": ms(single.p50),
            },
            "all_runs_completed": self.all_completed(),
        });
        if let Some(fields) = report.as_object_mut() {
            self.parallel.report(fields);
            self.dag.report(fields);
        }
        report
    }

    fn print_table(&self, args: &WorkflowsArgs) {
        let single = self.single_task().p50 / 1000.0;
        let millis = |ms: f64| format!("{ms:.2} ms");
        let mut table = Table::new("reference", "osp workflow");
        let mut row = |label: String, reference: f64, ours: String, ratio: Option<f64>| {
            table.row(&label, if reference > 0.0 { millis(reference) } else { "-".into() }, ours, ratio, "");
        };
        let ratio = |ours: f64, reference: f64| Some(ours / reference.max(f64::EPSILON));
        let raw_idle = self.raw.idle_latency.p50 / 1000.0;
        row("single task: submit to completed p50".into(), raw_idle, millis(single), ratio(single, raw_idle));
        for measured in [&self.parallel, &self.dag] {
            let (name, steps, cp) = (measured.shape.name, measured.shape.steps(), measured.shape.critical_path());
            let Some(s) = measured.summary() else {
                row(format!("{name}: no run completed"), 0.0, "-".into(), None);
                continue;
            };
            let reference = single * cp as f64;
            row(
                format!("{name}: submit to completed p50"),
                reference,
                millis(s.wall_p50),
                ratio(s.wall_p50, reference),
            );
            row(format!("{name}: min / max"), 0.0, format!("{:.1}/{:.1} ms", s.wall_min, s.wall_max), None);
            let per_step = s.overhead_per_step;
            row(format!("{name}: overhead per step ({steps})"), single, millis(per_step), ratio(per_step, single));
            let per_cp_step = s.overhead_per_critical_step;
            let label = format!("{name}: overhead per critical-path step ({cp})");
            row(label, single, millis(per_cp_step), ratio(per_cp_step, single));
        }
        let runs = format!("{} + {} + {}", self.single.timelines.len(), self.parallel.runs.len(), self.dag.runs.len());
        table.row("runs completed (single + parallel + dag)", "-".into(), runs, None, "all");
        table.print(self.all_completed());
        self.print_notes(args, single);
    }

    fn print_notes(&self, args: &WorkflowsArgs, single: f64) {
        println!(
            "reference: for the single task, the raw work queue idle (publish -> pulled, one task at a time); \
             for a workflow, the single task p50 x its critical-path steps; per step, the single task p50"
        );
        println!(
            "parallel_100: split -> {FAN_OUT} subtasks at once -> merge; dag_50: plan -> {} -> synthesize; \
             no-op agents: {} x {} concurrency; single task p50 {single:.2} ms over {} runs",
            dag_shape(),
            args.agents,
            args.concurrency,
            self.single.timelines.len()
        );
        for measured in [&self.parallel, &self.dag] {
            let name = measured.shape.name;
            if let Some(s) = measured.summary() {
                println!(
                    "{name}: {} runs; overhead = wall time - agents' time on the critical path (p50 {:.3} ms); \
                     wall time per step {:.3} ms",
                    measured.runs.len(),
                    s.agents_p50,
                    s.wall_per_step
                );
            }
            if let Some(failure) = &measured.failure {
                println!("{name}: FAILED: {failure}");
            }
        }
        println!(
            "raw work queue: {:.0} tasks/s with {FAN_OUT} in flight, idle p50 {:.2} ms p99 {:.2} ms",
            self.raw.queue_per_s,
            self.raw.idle_latency.p50 / 1000.0,
            self.raw.idle_latency.p99 / 1000.0
        );
        if let Some(error) = &self.single.first_error {
            println!("single tasks: {} failed (first: {error})", self.single.failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflows_have_the_steps_the_report_names() {
        let (parallel, dag) = (Shape::parallelization(), Shape::orchestrator_workers());
        assert_eq!((parallel.steps(), parallel.critical_path()), (FAN_OUT + 2, 3));
        assert_eq!((dag.steps(), dag.critical_path()), (DAG_LAYERS * DAG_WIDTH + 2, DAG_LAYERS + 2));
        parallel.definition.check().unwrap();
        dag.definition.check().unwrap();
    }

    #[test]
    fn the_plan_chains_every_layer_to_the_whole_layer_before() {
        let plan = Answers::new().plan;
        let steps = plan["steps"].as_array().unwrap();
        assert_eq!(steps.len(), DAG_LAYERS * DAG_WIDTH);
        assert_eq!(steps[0]["dependsOn"], json!([]));
        assert_eq!(steps[DAG_WIDTH]["dependsOn"], json!(["l0s0", "l0s1", "l0s2", "l0s3", "l0s4"]));
    }

    #[test]
    fn the_agents_time_on_the_critical_path_is_the_slowest_step_of_each_level() {
        let (agent_time, shape) = (AgentTime::default(), Shape::parallelization());
        let root = Token::new("run_id", "r1").unwrap();
        let took = |key: &str, ms| agent_time.note(child_run_id(&root, key).as_str(), Duration::from_millis(ms));
        took("split", 2);
        took("subtask:s0", 1);
        took("subtask:s7", 5);
        took("merge", 3);
        assert_eq!(agent_time.on_critical_path(&root, &shape), Duration::from_millis(10));
        assert_eq!(step_key("r1:subtask:s7"), Some("subtask:s7"));
        assert_eq!(step_key("r1"), None);
    }
}
