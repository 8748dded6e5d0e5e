//! `osp bench ...`: each figure printed next to a raw-JetStream baseline measured in the
//! same run, on a nats-server the benchmark starts for itself.

mod eventlog;
mod stats;

use std::process::ExitCode;

use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// The event store: append throughput, replay throughput and append latency.
    Eventlog(eventlog::EventlogArgs),
}

/// Runs a benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Eventlog(args) => eventlog::run(args).await,
    }
}
