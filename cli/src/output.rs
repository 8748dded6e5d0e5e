//! How events and problems are printed: one line each, for people or (with `--json`)
//! one JSON object per line for tools.

use std::io::Write;

use osp_eventlog::{Malformed, Recorded};
use osp_protocol::AnyPayload;
use serde_json::json;

use crate::clock;

/// Standard output, line by line, flushed per line when following live.
pub struct Lines {
    out: std::io::BufWriter<std::io::Stdout>,
    json: bool,
    flush_each: bool,
    columns: EventColumns,
}

/// The padded columns of an event line: aggregate, version, type and actor. Lines are
/// printed as they come, so a column cannot be sized to its widest value beforehand: each
/// starts wide enough for the usual values (`entry:agents:summarizer`, `v12`,
/// `run.approval_requested`, `service:scheduler`), and a longer one widens it from that
/// line on.
struct EventColumns {
    widths: [usize; 4],
}

impl EventColumns {
    fn new() -> EventColumns {
        EventColumns { widths: [24, 4, 22, 17] }
    }

    /// The cells, each padded to its column's width, two spaces apart.
    fn pad(&mut self, cells: [String; 4]) -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&mut self.widths)
            .map(|(cell, width)| {
                *width = (*width).max(cell.chars().count());
                format!("{cell:<width$}", width = *width)
            })
            .collect();
        padded.join("  ")
    }
}

impl Lines {
    /// `json`: NDJSON instead of text; `flush_each`: for live output.
    pub fn new(json: bool, flush_each: bool) -> Lines {
        Lines { out: std::io::BufWriter::new(std::io::stdout()), json, flush_each, columns: EventColumns::new() }
    }

    /// Prints one event.
    pub fn event(&mut self, event: &Recorded<AnyPayload>) -> std::io::Result<()> {
        let e = &event.envelope;
        let line = if self.json {
            json!({
                "seq": event.seq,
                "subject": e.aggregate.subject(),
                "stored_at": event.stored_at.to_rfc3339(),
                "hash": event.hash.to_hex(),
                "id": e.id,
                "type": e.payload.event_type,
                "schema": e.payload.schema,
                "aggregate_kind": e.aggregate.kind,
                "aggregate_id": e.aggregate.id,
                "version": e.version,
                "occurred_at": e.occurred_at.millis(),
                "actor": e.actor,
                "correlation_id": e.correlation_id,
                "causation_id": e.causation_id,
                "prev_hash": e.prev_hash.map(|h| h.to_hex()),
                "payload": e.payload.to_json(),
            })
            .to_string()
        } else {
            let cells =
                [e.aggregate.to_string(), format!("v{}", e.version), e.payload.event_type.clone(), e.actor.clone()];
            let mut payload = e.payload.to_json();
            clock::for_people(&mut payload);
            format!("#{:<8} {}  {}  {payload}", event.seq, clock::time(e.occurred_at), self.columns.pad(cells))
        };
        self.line(&line)
    }

    /// Prints a message that could not be decoded.
    pub fn malformed(&mut self, m: &Malformed) -> std::io::Result<()> {
        let line = if self.json {
            json!({ "seq": m.seq, "subject": m.subject, "malformed": m.error.to_string() }).to_string()
        } else {
            format!("#{:<8} MALFORMED on {}: {}", m.seq, m.subject, m.error)
        };
        self.line(&line)
    }

    /// Prints any line.
    pub fn line(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.out, "{line}")?;
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `n` and `noun`, the noun in the plural unless `n` is 1: "1 approval", "2 approvals".
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Says `error` on stderr as every command does: `error: ` then the error and its causes,
/// each once ([`osp_client::explain`]).
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {}", osp_client::explain(error.as_ref()));
}

/// True when `error` is stdout having been closed by the reader.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A progress bar on stderr for a replay of `total` messages; hidden when stderr is not
/// a terminal (indicatif's rule), when the output itself goes to the terminal (the lines
/// are the progress, and a bar would tear them), or when the replay is short.
pub fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if total < 10_000 || std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A table without borders, two spaces between columns, as every listing of `osp`
/// prints them.
pub fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.add_rows(rows);
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_columns_line_up_and_widen_for_a_longer_value() {
        let mut columns = EventColumns::new();
        let cells = |aggregate: &str, actor: &str| {
            [aggregate.to_owned(), "v1".to_owned(), "run.started".to_owned(), actor.to_owned()]
        };
        let first = columns.pad(cells("run:r-1", "agent:a1"));
        let second = columns.pad(cells("entry:agents:summarizer", "service:scheduler"));
        assert_eq!(first.find("v1"), second.find("v1"));
        assert_eq!(first.find("run.started"), second.find("run.started"));
        assert_eq!(first.len(), second.len(), "{first:?}\n{second:?}");

        let long = columns.pad(cells("run:0193a1b2-7c4d-7e5f-8a9b-0c1d2e3f4a5b", "agent:a1"));
        let after = columns.pad(cells("run:r-1", "agent:a1"));
        assert!(long.find("v1") > first.find("v1"), "{long:?}");
        assert_eq!(long.find("v1"), after.find("v1"), "the column stays as wide: {after:?}");
    }
}
