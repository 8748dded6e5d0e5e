//! A deterministic embedder agent: offers the `embed` capability, which the context
//! service uses for a search by text. No model: a text's vector is its words hashed into
//! buckets ([`osp_client::hashing_embedder`]), so texts sharing words come out close, and
//! the same text always gives the same vector.
//!
//! ```sh
//! osp dev                                                       # in another terminal
//! cargo run -p osp-client --example embedder
//! osp embed search global --text "purring cats" --top-k 3     # the service asks it for the vector
//! ```
//!
//! The scope's embeddings must have been made by the same embedder (same dimension and
//! hashing) for the scores to mean anything.
//!
//! Task input `{"text": "...", "dimension"?: n}` (384 by default); output `{"vector": [...]}`.

mod common;

use clap::Parser;
use osp_client::{hashing_embedder, Agent, Client, Task, TaskFailure, Worker};
use serde_json::{json, Value};

/// A deterministic embedder agent.
#[derive(Parser)]
struct Args {
    /// NATS server (unless given: the newest `osp dev` running on this machine).
    #[arg(long, env = "OSP_NATS_URL", default_value_t = osp_client::local_dev::nats_url())]
    nats_url: String,
    /// The agent's name, unique among agents.
    #[arg(long, default_value = "embedder")]
    name: String,
    /// Tasks it runs at once.
    #[arg(long, default_value_t = 8)]
    max_concurrency: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run(Args::parse()).await)
}

/// The agent's life, from connecting to unregistering.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(&args.nats_url).await?.with_actor(format!("agent:{}", args.name));
    let agent = Agent::builder(&args.name)
        .description("A deterministic embedder (hashed bag of words), for examples and tests")
        .capabilities(["embed"])
        .max_concurrency(args.max_concurrency)
        .version(env!("CARGO_PKG_VERSION"))
        .start(&client)
        .await?;
    let worker = Worker::builder(&client, &args.name)
        .capabilities(["embed"])
        .max_concurrency(args.max_concurrency)
        .start(embed)
        .await?;
    println!("agents/{} ready to embed texts; Ctrl-C to stop", agent.name());
    tokio::signal::ctrl_c().await?;
    let stats = worker.shutdown().await;
    println!("embedded {}", common::count(stats.completed, "text"));
    agent.shutdown().await?;
    Ok(())
}

/// Embeds one text.
async fn embed(task: Task) -> Result<Value, TaskFailure> {
    let input = task.input();
    let text = input["text"].as_str().ok_or_else(|| TaskFailure::invalid_input("input.text must be a string"))?;
    let dimension = input["dimension"].as_u64().unwrap_or(384).clamp(1, 4096) as usize;
    Ok(json!({"vector": hashing_embedder(text, dimension)}))
}
