//! `osp-context`: one context instance. Run as many as the load needs; they share the
//! work through NATS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use osp_context::sealing::SealKey;
use osp_context::{Config, Context};
use osp_eventlog::Definitions;
use osp_runtime::Snapshots;

/// The allocator, as in the other services.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP context service: key-value entries, settings, preferences, environment
/// entries and embeddings, in scopes with access rules.
#[derive(Parser)]
#[command(name = "osp-context", version, about)]
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
    /// How long an instance has to answer a command before another gets it.
    #[arg(long, env = "OSP_CONTEXT_ACK_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    ack_wait: Duration,
    /// Operators who may reveal sensitive values (comma-separated actors, e.g.
    /// user:ana,user:ops); agents may reveal the entries whose target names them.
    #[arg(long, env = "OSP_CONTEXT_REVEAL_TO", value_delimiter = ',')]
    reveal_to: Vec<String>,
    /// How long a search by text waits for an agent of the `embed` capability.
    #[arg(long, env = "OSP_CONTEXT_EMBED_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    embed_timeout: Duration,
    /// The key sensitive values are sealed with on the log: 64 hex digits (e.g. `openssl
    /// rand -hex 32`), the same on every instance. Keep it as any secret. Without it,
    /// sensitive environment values are refused.
    #[arg(long, env = "OSP_CONTEXT_SEAL_KEY", hide_env_values = true, value_parser = seal_key)]
    seal_key: Option<SealKey>,
}

fn seal_key(text: &str) -> Result<SealKey, String> {
    SealKey::from_hex(text).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    osp_runtime::init_tracing("info");
    let args = Args::parse();
    let definitions = Definitions::for_deployment(args.streams.as_deref(), args.replicas)?;
    let client = osp_eventlog::connect("osp-context", &args.nats_url).await?;
    let reveal_to = args.reveal_to.into_iter().map(|actor| actor.trim().to_owned()).filter(|a| !a.is_empty()).collect();
    if args.seal_key.is_none() {
        tracing::warn!("no seal key (OSP_CONTEXT_SEAL_KEY): sensitive environment values will be refused");
    }
    let config = Config {
        ack_wait: args.ack_wait,
        definitions,
        reveal_to,
        embed_timeout: args.embed_timeout,
        seal_key: args.seal_key,
        snapshots: Snapshots::from_env()?,
    };
    let context = Context::start(client, config)
        .await
        .with_context(|| format!("starting the context service on {}", args.nats_url))?;
    osp_runtime::stop_requested().await?;
    tracing::info!("stopping");
    context.shutdown().await;
    Ok(())
}
