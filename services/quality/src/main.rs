//! `osp-quality`: one quality instance. Run as many as the load needs; they share the
//! work through NATS.

use clap::Parser;
use osp_quality::Quality;
use osp_runtime::ServiceArgs;

/// The allocator, as in the other services (mimalloc answers more queries per second).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP quality service: a catalog of rules, checks of outputs against them, audits.
#[derive(Parser)]
#[command(name = "osp-quality", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    osp_runtime::service::main("osp-quality", &args.service, Quality::start).await
}
