//! An agent in Rust: registers with its card, heartbeats, shows up in `find`, and
//! unregisters on Ctrl-C.
//!
//! ```sh
//! osp dev                                                    # in another terminal
//! cargo run -p osp-client --example agent -- --name rusty --capability summarize
//! osp agents --live                                          # it is there
//! ```

use std::time::Duration;

use clap::Parser;
use osp_client::{Agent, Client};
use osp_protocol::registry::document::from_json;

/// A minimal OSP agent.
#[derive(Parser)]
struct Args {
    /// NATS server.
    #[arg(long, env = "OSP_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The agent's name, unique among agents.
    #[arg(long, default_value = "rust-agent")]
    name: String,
    /// What it can do (repeat for several).
    #[arg(long = "capability", default_value = "echo")]
    capabilities: Vec<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::connect(&args.nats_url).await?;
    let agent = Agent::builder(&args.name)
        .description("An example agent written with osp-client")
        .capabilities(args.capabilities.clone())
        .max_concurrency(2)
        .version(env!("CARGO_PKG_VERSION"))
        .card_field("endpoint", serde_json::json!({"language": "rust"}))
        .heartbeat_interval(Duration::from_secs(args.heartbeat))
        .start(&client)
        .await?;
    println!("registered agents/{} at seq {}", agent.name(), agent.registration().seq);

    // The client sends the highest sequence it has seen with every query, so this find
    // already sees the registration, whichever registry instance answers.
    let criteria = from_json(&serde_json::json!({ "capabilities": [args.capabilities[0]] }));
    let found = client.registry().find_all("agents", criteria, true).await?;
    let names: Vec<_> = found.iter().map(|entry| entry.name.as_str()).collect();
    println!("live agents with {}: {names:?}", args.capabilities[0]);

    println!("heartbeating every {}s; Ctrl-C to unregister and stop", args.heartbeat);
    tokio::signal::ctrl_c().await?;
    agent.shutdown().await?;
    println!("unregistered");
    Ok(())
}
