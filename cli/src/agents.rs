//! `osp agents`: the agents registry at a glance, with what each can do and whether it
//! is online.

use std::process::ExitCode;

use clap::Args;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::AGENTS;
use serde_json::json;

use crate::connect::{self, service_error};
use crate::entries::{self, Columns};

/// Options of `osp agents`.
#[derive(Args)]
pub struct AgentsArgs {
    /// Only agents online now.
    #[arg(long)]
    live: bool,
    /// Only agents that have this capability; repeat to require several.
    #[arg(long = "capability", value_name = "C")]
    capabilities: Vec<String>,
    /// One JSON object per agent per line.
    #[arg(long)]
    json: bool,
}

/// Runs `osp agents`: a `find` in the agents registry on the card's capabilities.
pub async fn run(args: AgentsArgs, url: &str) -> anyhow::Result<ExitCode> {
    let criteria = match args.capabilities.is_empty() {
        true => json!({}),
        false => json!({ "capabilities": args.capabilities }),
    };
    let client = connect::osp_client(url).await?;
    let agents = client.registry().find_all(AGENTS, from_json(&criteria), args.live).await.map_err(service_error)?;
    entries::print_all(&agents, Columns::Agents, args.json)?;
    Ok(ExitCode::SUCCESS)
}
