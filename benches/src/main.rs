//! `osp-bench`, run as `osp bench ...`: each figure printed next to a raw-NATS baseline
//! measured in the same run, on a nats-server the benchmark starts for itself.
//!
//! A binary of its own, apart from `osp`, so the command operators install carries no
//! benchmark code: `osp bench` runs the `osp-bench` found beside it (or on `PATH`).

mod context;
mod eventlog;
mod quality;
mod registry;
mod replay;
mod scale;
mod scheduler;
mod stats;
mod table;
mod workflows;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use osp_local_nats::{Binary, NatsServer, ServerOptions};

/// The same allocator as `osp` and the services' binaries, so the services measured here
/// allocate as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure throughput and latency next to raw JetStream, on a server of its own.
#[derive(Parser)]
#[command(name = "osp-bench", bin_name = "osp bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// The benchmarks.
#[derive(Subcommand)]
enum BenchCommand {
    /// The event store: append throughput, replay throughput and append latency.
    Eventlog(eventlog::EventlogArgs),
    /// The registry: registrations/s, and `find` by capability (queries/s, latency)
    /// next to a raw NATS request/reply round trip.
    Registry(registry::RegistryArgs),
    /// The scheduler: single-task runs end to end (runs/s, submit to dispatch and to
    /// completed latency, JetStream writes per run) next to a raw JetStream work queue.
    Scheduler(scheduler::SchedulerArgs),
    /// Workflows: a 100-way parallelization and a 50-step DAG of no-op agents (wall time,
    /// scheduler overhead per step) next to a single task and a raw JetStream work queue.
    Workflows(workflows::WorkflowsArgs),
    /// Quality: rule evaluations/s of the 20-rule sample catalog on a 2 KB output, in the
    /// pure evaluator and through the service (checks/s, check latency) next to raw
    /// JetStream publishes.
    Quality(quality::QualityArgs),
    /// Context: KV sets/s and gets/s through the service next to a raw JetStream KV bucket,
    /// and exact search over 100,000 vectors of 384 dimensions (p50/p99).
    Context(context::ContextArgs),
    /// Scale: an `osp-scheduler` process's resident memory as runs go through it (flat:
    /// ended runs leave memory), per finished and per active run, next to the same binary
    /// keeping every run; CPU per run per instance for 1, 2 and 4 instances sharing the
    /// runs in partitions, next to one holding every run; the takeover of a killed
    /// instance's partitions.
    Scale(scale::ScaleArgs),
    /// Replay: the scheduler's cold start on a log of 1,000,000 events from scratch and
    /// from a snapshot, next to a raw ordered read of the same stream; `osp replay run`
    /// on a run of 10,000 events.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    osp_runtime::init_tracing("warn");
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Eventlog(args) => eventlog::run(args).await,
        BenchCommand::Registry(args) => registry::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Workflows(args) => workflows::run(args).await,
        BenchCommand::Quality(args) => quality::run(args).await,
        BenchCommand::Context(args) => context::run(args).await,
        BenchCommand::Replay(args) => replay::run(args).await,
        BenchCommand::Scale(args) => scale::run(args).await,
    }
}

/// A nats-server of the benchmark's own (temporary store, free port), and the binary it
/// runs, whose version the report names.
async fn start_server() -> anyhow::Result<(Binary, NatsServer)> {
    let binary = osp_cli::dev::nats_server_binary()?;
    let server = NatsServer::start_with(&binary, ServerOptions::default()).await?;
    Ok((binary, server))
}
