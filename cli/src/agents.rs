//! `osp agents`: the agents registry at a glance, with what each can do and whether it
//! is online.

use std::process::ExitCode;

use clap::Args;
use osp_protocol::json::from_msgpack_value;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::EntryView;
use osp_protocol::registry::AGENTS;
use serde_json::{json, Value};

use crate::connect::{self, service_error};
use crate::entries::{self, Columns};
use crate::output::{table, Lines};

/// The card fields the table has columns for.
const CARD_COLUMNS: [&str; 3] = ["capabilities", "max_concurrency", "version"];

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
    match args.json || agents.is_empty() {
        true => entries::print_all(&agents, Columns::Agents, args.json)?,
        false => print_with_cards(&agents)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The agents' table, each row followed by the rest of the agent's card, indented: its
/// description, the card's fields the columns leave out (an endpoint, say) and its
/// metadata. Each cell is kept to one line, so the table has one line per row.
fn print_with_cards(agents: &[EntryView]) -> std::io::Result<()> {
    let mut lines = Lines::new(false, false);
    let one_line =
        |row: Vec<String>| row.iter().map(|cell| cell.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    let table = table(Columns::Agents.header(), agents.iter().map(|agent| one_line(Columns::Agents.row(agent))));
    let mut rows = table.lines();
    lines.line(rows.next().unwrap_or_default())?;
    for (agent, row) in agents.iter().zip(rows) {
        lines.line(row)?;
        for line in card_lines(agent) {
            lines.line(&format!("    {line}"))?;
        }
    }
    lines.flush()
}

/// What an agent's row does not show: its description, line by line, then each other
/// card field and its metadata as `key: JSON`.
fn card_lines(agent: &EntryView) -> Vec<String> {
    let mut lines: Vec<String> = agent.description.lines().map(str::to_owned).collect();
    if let Value::Object(card) = from_msgpack_value(&agent.resource) {
        let others = card.iter().filter(|(field, _)| !CARD_COLUMNS.contains(&field.as_str()));
        lines.extend(others.map(|(field, value)| format!("{field}: {value}")));
    }
    if let Some(metadata) = &agent.metadata {
        lines.push(format!("metadata: {}", from_msgpack_value(metadata)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use osp_protocol::registry::Status;
    use osp_protocol::Timestamp;

    use super::*;

    #[test]
    fn the_card_beyond_the_columns_is_shown() {
        let agent = EntryView {
            registry: "agents".into(),
            name: "rusty".into(),
            description: "An example agent\nwritten in Rust".into(),
            resource: from_json(&json!({"capabilities": ["echo"], "max_concurrency": 2, "version": "0.1.0",
                                        "endpoint": {"language": "rust"}})),
            metadata: Some(from_json(&json!({"team": "core"}))),
            status: Status::Online,
            revision: 1,
            registered_at: Timestamp(0),
            updated_at: Timestamp(0),
            seq: 1,
        };
        assert_eq!(
            card_lines(&agent),
            ["An example agent", "written in Rust", r#"endpoint: {"language":"rust"}"#, r#"metadata: {"team":"core"}"#]
        );
    }
}
