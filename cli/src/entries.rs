//! How registry entries are printed: a table (or `key: value` lines for one entry) for
//! people, JSON for tools (one object per entry per line).

use comfy_table::{presets, Table};
use osp_protocol::json::from_msgpack_value;
use osp_protocol::registry::queries::EntryView;
use osp_protocol::registry::AgentCard;
use osp_protocol::Timestamp;
use serde_json::Value;

use crate::clock;
use crate::output::Lines;

/// Longest description shown in a table, in characters; `get` shows it whole.
const DESCRIPTION_WIDTH: usize = 60;

/// Which columns a table of entries has.
#[derive(Clone, Copy, Debug)]
pub enum Columns {
    /// Any registry's: NAME, STATUS, REVISION, UPDATED, DESCRIPTION.
    Entries,
    /// The agents' card fields: NAME, STATUS, CAPABILITIES, MAX, VERSION, UPDATED.
    Agents,
}

impl Columns {
    pub fn header(self) -> &'static [&'static str] {
        match self {
            Columns::Entries => &["NAME", "STATUS", "REVISION", "UPDATED", "DESCRIPTION"],
            Columns::Agents => &["NAME", "STATUS", "CAPABILITIES", "MAX", "VERSION", "UPDATED"],
        }
    }

    pub fn row(self, entry: &EntryView) -> Vec<String> {
        let (name, status, updated) =
            (entry.name.clone(), entry.status.as_str().to_owned(), clock::time(entry.updated_at));
        match self {
            Columns::Entries => {
                vec![name, status, entry.revision.to_string(), updated, truncate(&entry.description, DESCRIPTION_WIDTH)]
            }
            Columns::Agents => {
                // Every agents entry was checked as a card when registered; show blanks
                // rather than fail should one ever not read.
                let card = AgentCard::from_resource(&entry.resource).ok();
                let capabilities = card.as_ref().map(|card| {
                    card.capabilities.iter().map(|capability| capability.as_str()).collect::<Vec<_>>().join(",")
                });
                let max = card.as_ref().map(|card| card.max_concurrency.to_string());
                let version = card.and_then(|card| card.version);
                let blank = |cell: Option<String>| cell.unwrap_or_else(|| "-".to_owned());
                vec![name, status, blank(capabilities), blank(max), blank(version), updated]
            }
        }
    }

    fn none_found(self) -> &'static str {
        match self {
            Columns::Entries => "no entries",
            Columns::Agents => "no agents",
        }
    }
}

/// Prints `entries` as a table, or as one JSON object per line with `json`. An empty
/// table is a note on stderr, so stdout holds only entries.
pub fn print_all(entries: &[EntryView], columns: Columns, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for entry in entries {
            lines.line(&to_json(entry).to_string())?;
        }
    } else if entries.is_empty() {
        eprintln!("{}", columns.none_found());
    } else {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING).set_header(columns.header().to_vec());
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        table.add_rows(entries.iter().map(|entry| columns.row(entry)));
        lines.line(&table.trim_fmt())?;
    }
    lines.flush()
}

/// Prints one entry whole: `key: value` lines, resource and metadata as indented JSON;
/// with `json`, one JSON object.
pub fn print_one(entry: &EntryView, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        lines.line(&to_json(entry).to_string())?;
    } else {
        for (key, value) in fields(entry, clock::time) {
            let text = match value {
                Value::Null => continue,
                Value::String(text) => text,
                Value::Array(_) | Value::Object(_) => {
                    serde_json::to_string_pretty(&value).expect("a JSON value always serializes")
                }
                other => other.to_string(),
            };
            lines.line(&format!("{key}: {text}"))?;
        }
    }
    lines.flush()
}

/// An entry as one JSON object, with times in RFC 3339.
pub fn to_json(entry: &EntryView) -> Value {
    Value::Object(
        fields(entry, Timestamp::to_rfc3339).into_iter().map(|(key, value)| (key.to_owned(), value)).collect(),
    )
}

/// An entry's fields, in the order people read them, with times as `time` writes them.
fn fields(entry: &EntryView, time: fn(Timestamp) -> String) -> [(&'static str, Value); 10] {
    [
        ("registry", entry.registry.clone().into()),
        ("name", entry.name.clone().into()),
        ("description", entry.description.clone().into()),
        ("status", entry.status.as_str().into()),
        ("revision", entry.revision.into()),
        ("registered_at", time(entry.registered_at).into()),
        ("updated_at", time(entry.updated_at).into()),
        ("seq", entry.seq.into()),
        ("resource", from_msgpack_value(&entry.resource)),
        ("metadata", entry.metadata.as_ref().map_or(Value::Null, from_msgpack_value)),
    ]
}

/// `text` on one line (runs of whitespace, newlines included, become one space), cut to
/// `width` characters with an ellipsis.
pub fn truncate(text: &str, width: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= width {
        return line;
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::registry::document::from_json;
    use osp_protocol::registry::Status;
    use serde_json::json;

    fn agent(resource: Value) -> EntryView {
        EntryView {
            registry: "agents".into(),
            name: "a1".into(),
            description: "Summarises\ndocuments".into(),
            resource: from_json(&resource),
            metadata: None,
            status: Status::Online,
            revision: 2,
            registered_at: Timestamp(0),
            updated_at: Timestamp(1_500),
            seq: 7,
        }
    }

    #[test]
    fn descriptions_fit_one_cell() {
        assert_eq!(truncate("short\n  text", 20), "short text");
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert_eq!(truncate("ééééééé", 5), "éééé…");
    }

    #[test]
    fn rows_read_the_agent_card() {
        let entry = agent(json!({"capabilities": ["summarize", "translate"], "max_concurrency": 4}));
        let updated = clock::time(Timestamp(1_500));
        assert_eq!(Columns::Agents.row(&entry), ["a1", "online", "summarize,translate", "4", "-", &updated]);
        assert_eq!(Columns::Entries.row(&entry), ["a1", "online", "2", &updated, "Summarises documents"]);
        assert_eq!(Columns::Agents.row(&agent(json!({"not": "a card"})))[2..5], ["-", "-", "-"]);
    }

    #[test]
    fn json_has_every_field() {
        let entry = agent(json!({"capabilities": ["summarize"]}));
        assert_eq!(
            to_json(&entry),
            json!({"registry": "agents", "name": "a1", "description": "Summarises\ndocuments",
                   "status": "online", "revision": 2, "registered_at": "1970-01-01T00:00:00Z",
                   "updated_at": "1970-01-01T00:00:01.5Z", "seq": 7,
                   "resource": {"capabilities": ["summarize"]}, "metadata": null})
        );
    }
}
