//! `osp-scheduler`: one scheduler instance. Run as many as the load needs; they share
//! the work through NATS.

use clap::Parser;
use osp_runtime::ServiceArgs;
use osp_scheduler::Scheduler;

/// The allocator: services allocate and free a command's worth of small values per
/// message, where mimalloc measured about 1.6 times the throughput of the system one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP scheduler service: durable runs of tasks executed by agents.
#[derive(Parser)]
#[command(name = "osp-scheduler", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    osp_runtime::service::main("osp-scheduler", &args.service, Scheduler::start).await
}
