//! `osp bench scale`: what an `osp-scheduler` process holds in memory as runs go through
//! it, with ended runs leaving memory after `--keep-finished`, next to the same binary
//! keeping every run (`--keep-finished` of a year), in the same run of the benchmark.
//!
//! Each instance is its own process (the `osp-scheduler` beside `osp-bench`), on a
//! nats-server of its own; its resident memory (`VmRSS`) is read at checkpoints, once
//! every run so far has ended and the grace period has passed. Runs are single tasks whose
//! agent (in this process) answers a `--output-bytes` output at once, `--in-flight` at a
//! time. Before them, `--active` runs are submitted that wait for an approval (and stay in
//! memory throughout), to measure what a run in hand costs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};
use osp_client::{Agent, Client, Submission, Task, TaskFailure, Worker};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus};
use osp_protocol::scheduler::RunOptions;
use serde_json::json;
use tokio::sync::oneshot;

/// Options of `osp bench scale`.
#[derive(Args)]
pub struct ScaleArgs {
    /// Runs through the instance that lets ended runs go.
    #[arg(long, default_value_t = 200_000)]
    runs: u64,
    /// Runs through the instance that keeps every run (the baseline).
    #[arg(long, default_value_t = 10_000)]
    baseline_runs: u64,
    /// Memory is read after this many runs, then at every tenfold, and at the end.
    #[arg(long, default_value_t = 10_000)]
    first: u64,
    /// Bytes of each run's output.
    #[arg(long, default_value_t = 4096)]
    output_bytes: usize,
    /// Runs submitted and not ended yet.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// Runs kept waiting for an approval, to measure a run in hand.
    #[arg(long, default_value_t = 10_000)]
    active: u64,
    /// How long ended runs stay in memory in the measured instance.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    keep_finished: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

const CAPABILITY: &str = "bench-scale";
const AGENT: &str = "bench-scale-agent";
/// The baseline's grace period: longer than any benchmark.
const KEEP_ALL: &str = "8760h";

/// How the `osp-scheduler` processes of a setup are started.
#[derive(Clone)]
struct Launch {
    binary: PathBuf,
    /// `--keep-finished`, as the scheduler reads it.
    keep_finished: String,
}

/// An `osp-scheduler` process, killed when dropped.
struct Instance {
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    fn start(launch: &Launch, url: &str) -> anyhow::Result<Instance> {
        let child = Command::new(&launch.binary)
            .args(["--nats-url", url, "--keep-finished", &launch.keep_finished, "--snapshot-every", "off"])
            .env("OSP_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        Ok(Instance { child })
    }

    /// Resident memory, in bytes.
    fn resident(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS in the process status")?;
        Ok(kib * 1024)
    }
}

/// The `osp-scheduler` processes of a setup, all started alike.
struct Instances {
    launch: Launch,
    url: String,
    running: Vec<Instance>,
}

impl Instances {
    fn new(launch: &Launch, url: &str) -> Instances {
        Instances { launch: launch.clone(), url: url.to_owned(), running: Vec::new() }
    }

    /// Starts one more instance.
    fn add(&mut self) -> anyhow::Result<()> {
        self.running.push(Instance::start(&self.launch, &self.url)?);
        Ok(())
    }

    /// Returns once the scheduler answers a `digest` (which every instance is asked for).
    async fn serving(&self, client: &Client) -> anyhow::Result<()> {
        let ready = Instant::now();
        while client.scheduler().digest().await.is_err() {
            if ready.elapsed() > READY_WITHIN {
                bail!("{} did not answer within {READY_WITHIN:?}", self.launch.binary.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// How long a starting scheduler has to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Run ids waiting for the agent to be called with them.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// What pushes runs through the schedulers: the submitting client, and the runs whose
/// call to the agent is awaited.
#[derive(Clone)]
struct Runner {
    client: Client,
    waiting: Waiting,
}

/// Scheduler processes on a server of their own, with the agent registered and working.
/// The instances are declared first, so they are stopped before the server.
struct Setup {
    instances: Instances,
    runner: Runner,
    _worker: Worker,
    _server: osp_local_nats::NatsServer,
}

/// A fresh server with `count` instances started as `launch` says, serving.
async fn setup(launch: &Launch, count: usize, args: &ScaleArgs) -> anyhow::Result<Setup> {
    let (_, server) = crate::start_server().await?;
    let url = server.url();
    let client = register_agent(&url).await?;
    let mut instances = Instances::new(launch, &url);
    for _ in 0..count {
        instances.add()?;
    }
    instances.serving(&client).await?;
    let waiting: Waiting = Arc::default();
    let worker = start_agent(&url, waiting.clone(), args).await?;
    Ok(Setup { instances, runner: Runner { client, waiting }, _worker: worker, _server: server })
}

/// Registers the benchmark's agent (through a registry in this process, stopped once it
/// has recorded it); returns the client that submits the runs.
async fn register_agent(url: &str) -> anyhow::Result<Client> {
    let registry_config =
        osp_registry::Config { offline_after: Duration::from_secs(3600), ..osp_registry::Config::default() };
    let registry = osp_registry::Registry::start(osp_cli::connect::client(url).await?, registry_config).await?;
    let client = Client::new(osp_cli::connect::client(url).await?).with_actor("service:bench");
    let entry = Agent::builder(AGENT).description("benchmark agent").capabilities([CAPABILITY]).entry()?;
    client.registry().register(&entry).await?;
    registry.shutdown().await;
    Ok(client)
}

/// The agent, in this process: answers every task at once with `--output-bytes` of
/// output, and tells `waiting` it was called.
async fn start_agent(url: &str, waiting: Waiting, args: &ScaleArgs) -> anyhow::Result<Worker> {
    let output = "o".repeat(args.output_bytes);
    let worker = Worker::builder(&Client::new(osp_cli::connect::client(url).await?), AGENT)
        .capability(CAPABILITY)
        .max_concurrency(args.in_flight as u32)
        .start(move |task: Task| {
            if let Some(called) = waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(task.run_id()) {
                let _ = called.send(());
            }
            std::future::ready(Ok::<_, TaskFailure>(json!({"text": output})))
        })
        .await?;
    Ok(worker)
}

impl Runner {
    /// Runs `from..to` through, `in_flight` at a time; returns once every one has ended.
    async fn runs(&self, from: u64, to: u64, in_flight: usize) -> anyhow::Result<()> {
        let scheduler = self.client.scheduler();
        stream::iter(from..to)
            .map(Ok)
            .try_for_each_concurrent(in_flight, |n| {
                let scheduler = scheduler.clone();
                async move {
                    let id = format!("run-{n:09}");
                    let (called, heard) = oneshot::channel();
                    self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), called);
                    scheduler.submit(&Submission::new(CAPABILITY, json!({"n": n})).run_id(&id)).await?;
                    tokio::time::timeout(Duration::from_secs(60), heard)
                        .await
                        .context("the agent was not called")??;
                    anyhow::Ok(())
                }
            })
            .await?;
        self.settled().await
    }

    /// Returns once no run is pending or in progress.
    async fn settled(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        for status in [RunStatus::Pending, RunStatus::InProgress] {
            let open = ListQuery { status: Some(status), children: true, limit: Some(1), ..ListQuery::default() };
            while !self.client.scheduler().list(&open).await?.runs.is_empty() {
                if started.elapsed() > Duration::from_secs(120) {
                    bail!("runs still {status} two minutes after the last was submitted");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Setup {
    /// Resident memory of the (only) instance, for the memory figures.
    fn resident(&self) -> anyhow::Result<u64> {
        self.instances.running.first().context("no instance running")?.resident()
    }

    /// Resident memory once ended runs have had `grace` (and the once-a-second eviction) to leave.
    async fn resident_after(&self, grace: Duration) -> anyhow::Result<u64> {
        tokio::time::sleep(grace + Duration::from_secs(2)).await;
        self.resident()
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    if args.runs < args.first || args.first == 0 || args.in_flight == 0 {
        bail!("--first must be at least 1 and at most --runs, and --in-flight at least 1");
    }
    let binary = std::env::current_exe()?.with_file_name("osp-scheduler");
    if !binary.exists() {
        bail!("{} is missing: build it beside osp-bench (cargo build --release -p osp-scheduler)", binary.display());
    }
    let keep = humantime::format_duration(args.keep_finished).to_string();
    eprintln!(
        "bench scale: {} runs ({} B outputs, {} in flight) through an osp-scheduler keeping ended runs {keep}, \
         {} through one keeping them all",
        args.runs, args.output_bytes, args.in_flight, args.baseline_runs
    );

    let launch = Launch { binary, keep_finished: keep };
    let memory = memory(&launch, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&memory.json(&args))?);
    } else {
        memory.print(&args);
    }
    Ok(if memory.meets_target() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// The memory figures: of one instance letting ended runs go, and of one keeping them all.
struct Memory {
    /// The baseline keeping every run: idle, after its runs, and per run.
    idle_all: u64,
    kept_all: u64,
    kept_per_run: f64,
    /// The measured instance: idle, per run in hand, and after each checkpoint's runs.
    idle: u64,
    active_per_run: f64,
    checkpoints: Vec<(u64, u64)>,
    /// How long the measured instance's runs took, checkpoints included.
    elapsed: Duration,
}

/// Measures the baseline keeping every run, then the instance `launch` says.
async fn memory(launch: &Launch, args: &ScaleArgs) -> anyhow::Result<Memory> {
    // The baseline: the same binary, keeping every run.
    let baseline = setup(&Launch { keep_finished: KEEP_ALL.into(), ..launch.clone() }, 1, args).await?;
    let idle_all = baseline.resident()?;
    baseline.runner.runs(0, args.baseline_runs, args.in_flight).await?;
    let kept_all = baseline.resident_after(Duration::ZERO).await?;
    drop(baseline);
    let kept_per_run = (kept_all.saturating_sub(idle_all)) as f64 / args.baseline_runs.max(1) as f64;

    let measured = setup(launch, 1, args).await?;
    let idle = measured.resident()?;
    // Runs in hand first, on a fresh process: measured later, the allocator's memory
    // kept from the finished runs' traffic would hide them.
    let approval = serde_json::from_value::<RunOptions>(json!({"approval": {"message": "hold"}}))?;
    let scheduler = measured.runner.client.scheduler();
    stream::iter(0..args.active)
        .map(Ok)
        .try_for_each_concurrent(args.in_flight, |n| {
            let (scheduler, approval) = (scheduler.clone(), approval.clone());
            async move {
                let submission =
                    Submission::new(CAPABILITY, json!({"n": n})).run_id(format!("held-{n:09}")).options(approval);
                scheduler.submit(&submission).await.map(drop)
            }
        })
        .await?;
    let holding = measured.resident_after(args.keep_finished).await?;
    let active_per_run = (holding as f64 - idle as f64) / args.active.max(1) as f64;
    let mut checkpoints = Vec::new();
    let mut at = args.first;
    let mut done = 0;
    let started = Instant::now();
    loop {
        measured.runner.runs(done, at, args.in_flight).await?;
        done = at;
        let resident = measured.resident_after(args.keep_finished).await?;
        eprintln!("  after {done} runs: {:.1} MiB", mib(resident));
        checkpoints.push((done, resident));
        if done == args.runs {
            break;
        }
        at = (at * 10).min(args.runs);
    }
    let elapsed = started.elapsed();
    Ok(Memory { idle_all, kept_all, kept_per_run, idle, active_per_run, checkpoints, elapsed })
}

impl Memory {
    fn first(&self) -> (u64, u64) {
        self.checkpoints[0]
    }

    fn last(&self) -> (u64, u64) {
        *self.checkpoints.last().expect("one checkpoint at least")
    }

    fn finished_per_run(&self) -> f64 {
        let ((first_runs, first), (last_runs, last)) = (self.first(), self.last());
        (last as f64 - first as f64) / (last_runs - first_runs).max(1) as f64
    }

    fn growth(&self) -> f64 {
        self.last().1 as f64 / self.first().1 as f64
    }

    fn runs_per_s(&self) -> f64 {
        self.last().0 as f64 / self.elapsed.as_secs_f64()
    }

    /// Memory grew from the first checkpoint to the last by at most a fifth.
    fn meets_target(&self) -> bool {
        self.growth() <= 1.2
    }

    fn json(&self, args: &ScaleArgs) -> serde_json::Value {
        json!({
            "benchmark": "scale",
            "runs": args.runs,
            "output_bytes": args.output_bytes,
            "keep_finished_ms": args.keep_finished.as_millis() as u64,
            "runs_per_s": round(self.runs_per_s()),
            "resident_bytes_idle": self.idle,
            "resident_bytes_after": self.checkpoints.iter().map(|(runs, bytes)| json!({"runs": runs, "bytes": bytes})).collect::<Vec<_>>(),
            "growth_first_to_last": round(self.growth()),
            "bytes_per_finished_run": round(self.finished_per_run()),
            "bytes_per_active_run": round(self.active_per_run),
            "baseline_keeping_all": {"runs": args.baseline_runs, "resident_bytes_idle": self.idle_all, "resident_bytes_after": self.kept_all, "bytes_per_finished_run": round(self.kept_per_run)},
        })
    }

    fn print(&self, args: &ScaleArgs) {
        let ((first_runs, _), (last_runs, _)) = (self.first(), self.last());
        println!("resident memory of one osp-scheduler ({} B outputs)", args.output_bytes);
        println!("  idle: {:.1} MiB", mib(self.idle));
        for (runs, bytes) in &self.checkpoints {
            println!("  after {runs:>9} finished runs: {:>8.1} MiB", mib(*bytes));
        }
        println!("  growth from {first_runs} to {last_runs} runs: {:.2}x (target: at most 1.20x)", self.growth());
        println!(
            "  per finished run: {:>8.0} B   baseline keeping every run: {:.0} B",
            self.finished_per_run(),
            self.kept_per_run
        );
        println!("  per active run (awaiting approval): {:.0} B", self.active_per_run);
        println!("  runs/s while measured: {:.0}", self.runs_per_s());
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
