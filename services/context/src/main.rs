//! `osp-context`: one context instance. Run as many as the load needs; they share the
//! work through NATS.

use std::time::Duration;

use clap::Parser;
use osp_context::sealing::SealKey;
use osp_context::{Config, Context};
use osp_runtime::ServiceArgs;

/// The allocator, as in the other services.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The OSP context service: key-value entries, settings, preferences, environment
/// entries and embeddings, in scopes with access rules.
#[derive(Parser)]
#[command(name = "osp-context", version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
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
    let args = Args::parse();
    let reveal_to = args.reveal_to.into_iter().map(|actor| actor.trim().to_owned()).filter(|a| !a.is_empty()).collect();
    osp_runtime::service::main("osp-context", &args.service, |client, service| {
        let config = Config { service, reveal_to, embed_timeout: args.embed_timeout, seal_key: args.seal_key };
        Context::start(client, config)
    })
    .await
}
