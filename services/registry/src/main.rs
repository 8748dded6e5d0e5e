//! `osp-registry`: one registry instance. Run as many as the load needs; they share the
//! work through NATS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use osp_eventlog::Definitions;
use osp_registry::{Config, Registry};
use osp_runtime::Snapshots;

/// The allocator: services allocate and free a reply's worth of small values per query,
/// where mimalloc measured about 1.6 times the queries per second of the system one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP registry service: named registries, agent discovery and liveness.
#[derive(Parser)]
#[command(name = "osp-registry", version, about)]
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
    /// Silence after which an agent is marked offline (e.g. 15s, 1m).
    #[arg(long, env = "OSP_REGISTRY_OFFLINE_AFTER", default_value = "15s", value_parser = humantime::parse_duration)]
    offline_after: Duration,
    /// How long an instance has to answer a command before another gets it (how soon the
    /// commands of a crashed instance are taken up again).
    #[arg(long, env = "OSP_REGISTRY_ACK_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    osp_runtime::init_tracing("info");
    let args = Args::parse();
    let definitions = Definitions::for_deployment(args.streams.as_deref(), args.replicas)?;
    let client = osp_eventlog::connect("osp-registry", &args.nats_url).await?;
    let snapshots = Snapshots::from_env()?;
    let config = Config { offline_after: args.offline_after, ack_wait: args.ack_wait, definitions, snapshots };
    let registry =
        Registry::start(client, config).await.with_context(|| format!("starting the registry on {}", args.nats_url))?;
    osp_runtime::stop_requested().await?;
    tracing::info!("stopping");
    registry.shutdown().await;
    Ok(())
}
