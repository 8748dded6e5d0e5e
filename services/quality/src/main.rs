//! `osp-quality`: one quality instance. Run as many as the load needs; they share the
//! work through NATS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use osp_eventlog::Definitions;
use osp_quality::{Config, Quality};
use osp_runtime::Snapshots;

/// The allocator, as in the other services (mimalloc answers more queries per second).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP quality service: a catalog of rules, checks of outputs against them, audits.
#[derive(Parser)]
#[command(name = "osp-quality", version, about)]
struct Args {
    /// NATS server(s) to use; several, comma-separated, for a cluster.
    #[arg(long, env = "OSP_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Apply the stream definitions in this folder (replicas, limits) instead of the
    /// built-in ones.
    #[arg(long, env = "OSP_STREAMS")]
    streams: Option<PathBuf>,
    /// Keep every stream on this many servers (3 in a 3-node cluster).
    #[arg(long, env = "OSP_REPLICAS")]
    replicas: Option<usize>,
    /// How long an instance has to answer a command before another gets it (how soon the
    /// commands of a crashed instance are taken up again).
    #[arg(long, env = "OSP_QUALITY_ACK_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    osp_runtime::init_tracing("info");
    let args = Args::parse();
    let definitions = Definitions::for_deployment(args.streams.as_deref(), args.replicas)?;
    let client = osp_eventlog::connect("osp-quality", &args.nats_url).await?;
    let config = Config { ack_wait: args.ack_wait, definitions, snapshots: Snapshots::from_env()? };
    let quality = Quality::start(client, config)
        .await
        .with_context(|| format!("starting the quality service on {}", args.nats_url))?;
    osp_runtime::stop_requested().await?;
    tracing::info!("stopping");
    quality.shutdown().await;
    Ok(())
}
