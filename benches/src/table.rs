//! The table every benchmark prints: each row the raw baseline next to ours, with their
//! ratio and the ratio's target where there is one.

use comfy_table::{presets, CellAlignment, ColumnConstraint, Width};

/// Rows of figures, printed as one table (the `--json` report is separate).
pub struct Table {
    raw: &'static str,
    ours: &'static str,
    rows: Vec<[String; 5]>,
}

/// Per column: its alignment, the spaces before it, and the width it takes at least
/// (spaces included), so that tables of different benchmarks line up alike.
const COLUMNS: [(CellAlignment, u16, u16); 5] = [
    (CellAlignment::Left, 0, 22),
    (CellAlignment::Right, 1, 15),
    (CellAlignment::Right, 1, 15),
    (CellAlignment::Right, 1, 9),
    (CellAlignment::Left, 2, 0),
];

impl Table {
    pub fn new(raw: &'static str, ours: &'static str) -> Table {
        Table { raw, ours, rows: Vec::new() }
    }

    /// A row of rates (items per second).
    pub fn rate(&mut self, label: &str, raw: f64, ours: f64, ratio: Option<f64>, target: &str) {
        self.row(label, format!("{raw:.0}/s"), format!("{ours:.0}/s"), ratio, target);
    }

    /// A row of latencies (microseconds).
    pub fn micros(&mut self, label: &str, raw: f64, ours: f64, ratio: Option<f64>, target: &str) {
        self.row(label, format!("{raw:.0} us"), format!("{ours:.0} us"), ratio, target);
    }

    pub fn row(&mut self, label: &str, raw: String, ours: String, ratio: Option<f64>, target: &str) {
        let ratio = ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
        self.rows.push([label.to_owned(), raw, ours, ratio, target.to_owned()]);
    }

    /// Prints the table and whether every target is met.
    pub fn print(&self, meets_targets: bool) {
        print!("{}", self.render(meets_targets));
    }

    fn render(&self, meets_targets: bool) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(presets::NOTHING).set_header(["", self.raw, self.ours, "ratio", "target"]);
        table.add_rows(self.rows.iter());
        for (column, (alignment, before, at_least)) in table.column_iter_mut().zip(COLUMNS) {
            column.set_cell_alignment(alignment);
            column.set_padding((before, 0));
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(at_least)));
        }
        let verdict = if meets_targets { "met" } else { "NOT met" };
        format!("{}\ntargets {verdict}\n", table.trim_fmt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_labels() {
        let mut table = Table::new("raw JetStream", "osp eventlog");
        table.rate("append throughput", 51234.4, 40321.0, Some(0.787), ">= 0.7");
        table.micros("append latency p50", 110.2, 150.0, None, "");
        table.row("loaded: submit to completed p99", "-".into(), "12345 us".into(), None, "");
        assert_eq!(
            table.render(true),
            "                                 raw JetStream   osp eventlog    ratio  target\n\
             append throughput                      51234/s        40321/s     0.79  >= 0.7\n\
             append latency p50                      110 us         150 us\n\
             loaded: submit to completed p99              -       12345 us\n\
             targets met\n"
        );

        let mut table = Table::new("raw NATS", "osp registry");
        table.rate("registrations", 9000.0, 8000.0, Some(0.888), "");
        table.micros("find latency p99", 80.0, 95.5, Some(1.19), "<= 1.5");
        assert_eq!(
            table.render(false),
            "                             raw NATS   osp registry    ratio  target\n\
             registrations                  9000/s         8000/s     0.89\n\
             find latency p99                80 us          96 us     1.19  <= 1.5\n\
             targets NOT met\n"
        );
    }

    #[test]
    fn a_wide_figure_widens_its_column() {
        let mut table = Table::new("raw", "ours");
        table.rate("short", 1.0, 2.0, None, "");
        table.rate("long", 1.0, 123_456_789_012_345.0, None, "");
        let text = table.render(true);
        let ends: Vec<usize> = text.lines().take(3).map(str::len).collect();
        assert_eq!(ends[1], ends[2], "{text}");
    }
}
