//! `osp audit`: the entries the quality service's checks recorded — query, show, and
//! export to / import from markdown with YAML front matter.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use osp_protocol::quality::markdown::{from_markdown, to_markdown};
use osp_protocol::quality::queries::{AuditQuery, AuditView, MAX_LIMIT};
use osp_protocol::quality::{AuditEntry, Opinion};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{entry_json, opinion_name, parse_opinion, print_entry, read_text, usage_error};
use crate::connect::{self, service_error};
use crate::output::table;
use crate::output::Lines;

/// How `--since` and `--until` are written, for `--help`.
/// Options of `osp audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Print JSON: one object per entry per line for query, one object otherwise.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The audit entries matching every filter given, oldest first.
    Query(QueryArgs),
    /// One entry whole: opinion, findings, rule results, the judge's verdict, and the
    /// rules as they were when it was checked.
    ///
    /// Exits with status 1 when there is none of that id.
    Show {
        /// The entry's id.
        id: String,
    },
    /// One entry as markdown: YAML front matter holding the whole entry, then a body
    /// for people, generated from it.
    ///
    /// Exits with status 1 when there is none of that id.
    Export {
        /// The entry's id.
        id: String,
        /// Write to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<String>,
    },
    /// Read an entry from a markdown file (as `osp audit export` writes it) and print it
    /// as JSON.
    ///
    /// The YAML front matter is the truth: the entry is read from it alone, and the
    /// markdown body after it is ignored (it is generated from the front matter on
    /// export), so an edit must be made in the front matter. A file that is not an audit
    /// entry exits with status 2, naming the line or the field.
    Import {
        /// The markdown file; `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: String,
        /// Compare the entry with the one the service recorded under the same id, and
        /// exit with status 1 (naming the fields that differ) unless they are equal.
        #[arg(long)]
        check: bool,
    },
}

/// The filters of `osp audit query`.
#[derive(Args)]
struct QueryArgs {
    /// Only entries of this opinion: unqualified, qualified, adverse, disclaimer.
    /// Repeatable, or comma-separated: any of them.
    #[arg(long = "opinion", value_name = "O", value_delimiter = ',', value_parser = parse_opinion)]
    opinions: Vec<Opinion>,
    /// Only entries with at least N critical findings.
    #[arg(long, value_name = "N")]
    min_critical: Option<u32>,
    /// Only entries with at least N major findings.
    #[arg(long, value_name = "N")]
    min_major: Option<u32>,
    /// Only entries of this agent's output.
    #[arg(long, value_name = "A")]
    agent: Option<String>,
    /// Only entries of this execution (a run id).
    #[arg(long, value_name = "E")]
    execution: Option<String>,
    /// Only entries made at or after TIME: RFC 3339 (2026-11-24T16:00:00Z) or an age
    /// (90s, 15m, 2h, 1d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only entries made before TIME: RFC 3339 or an age, as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Entries per page, 1 to 1000 [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    limit: Option<u32>,
    /// Start after this entry id (the `next` a page ended with).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
    /// Every page, not only the first.
    #[arg(long)]
    all: bool,
}

/// Runs an `osp audit` command. Input (times, a markdown file) is read before
/// connecting, so a mistake in it is said whether or not a server is up.
pub async fn run(args: AuditArgs, url: &str) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let quality = || async move { Ok::<_, anyhow::Error>(connect::osp_client(url).await?.quality()) };
    match args.command {
        AuditCommand::Query(filters) => {
            let mut query = match filters.query(OffsetDateTime::now_utc()) {
                Ok(query) => query,
                Err(error) => return Ok(usage_error(&error)),
            };
            let quality = quality().await?;
            let mut entries = Vec::new();
            loop {
                let page = quality.audits(&query).await.map_err(service_error)?;
                entries.extend(page.entries);
                match page.next {
                    Some(next) if filters.all => query.after = Some(next),
                    Some(next) => {
                        eprintln!("more entries after {next}: --all for every page, or --after {next}");
                        break;
                    }
                    None => break,
                }
            }
            print_entries(&entries, json)?;
        }
        AuditCommand::Show { id } => {
            let view = quality().await?.audit(&id).await.map_err(service_error)?.ok_or_else(|| not_found(&id))?;
            print_view(&view, json)?;
        }
        AuditCommand::Export { id, output } => {
            let view = quality().await?.audit(&id).await.map_err(service_error)?.ok_or_else(|| not_found(&id))?;
            let markdown = to_markdown(&view.entry);
            match output {
                Some(path) => {
                    std::fs::write(&path, markdown).with_context(|| format!("cannot write {path}"))?;
                    // On stderr, as `osp log export -o` says it: stdout holds entries only.
                    eprintln!("wrote audit {id} to {path}");
                }
                None => Lines::new(false, false).line(markdown.trim_end_matches('\n'))?,
            }
        }
        AuditCommand::Import { file, check } => {
            let entry = match read_entry(&file) {
                Ok(entry) => entry,
                Err(error) => return Ok(usage_error(&error)),
            };
            Lines::new(true, true).line(&entry_json(&entry).to_string())?;
            if check {
                let recorded = quality().await?.audit(&entry.id).await.map_err(service_error)?;
                let recorded = recorded.ok_or_else(|| not_found(&entry.id))?.entry;
                let differences = differing_fields(&entry, &recorded);
                if !differences.is_empty() {
                    bail!("{file}: differs from the recorded entry {:?} in {}", entry.id, differences.join(", "));
                }
                eprintln!("{file}: equals the recorded entry {:?}", entry.id);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn not_found(id: &str) -> anyhow::Error {
    anyhow!("no audit entry with id {id:?} (osp audit query lists them)")
}

impl QueryArgs {
    /// The query the filters make; times are read relative to `now`.
    fn query(&self, now: OffsetDateTime) -> anyhow::Result<AuditQuery> {
        let time = |flag: &str, text: &Option<String>| {
            text.as_deref().map(|text| crate::time_args::parse_time(flag, text, now)).transpose()
        };
        Ok(AuditQuery {
            opinions: self.opinions.clone(),
            min_critical: self.min_critical,
            min_major: self.min_major,
            agent_id: self.agent.clone(),
            execution_id: self.execution.clone(),
            from: time("--since", &self.since)?,
            to: time("--until", &self.until)?,
            after: self.after.clone(),
            limit: self.limit,
        })
    }
}

/// The entry in the markdown file `arg` (`-`: stdin).
fn read_entry(arg: &str) -> anyhow::Result<AuditEntry> {
    let (text, source) = read_text(arg)?;
    from_markdown(&text).map_err(|error| anyhow!("{source}: not an audit entry: {error}"))
}

/// The top-level fields (their wire names) in which two entries differ.
fn differing_fields(entry: &AuditEntry, recorded: &AuditEntry) -> Vec<String> {
    let (Ok(Value::Object(mine)), Ok(Value::Object(theirs))) =
        (serde_json::to_value(entry), serde_json::to_value(recorded))
    else {
        return if entry == recorded { Vec::new() } else { vec!["the entry".to_owned()] };
    };
    let mut keys: Vec<&String> = mine.keys().chain(theirs.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|key| mine.get(*key) != theirs.get(*key)).cloned().collect()
}

/// Prints entries as a table, or one JSON object per line. An empty table is a note on
/// stderr, so stdout holds only entries.
fn print_entries(entries: &[AuditEntry], json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for entry in entries {
            lines.line(&entry_json(entry).to_string())?;
        }
    } else if entries.is_empty() {
        eprintln!("no audit entries");
    } else {
        let blank = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
        let rows = entries.iter().map(|entry| {
            vec![
                entry.id.clone(),
                crate::clock::time(entry.created_at),
                opinion_name(entry.opinion),
                entry.findings.critical.to_string(),
                entry.findings.major.to_string(),
                entry.findings.minor.to_string(),
                blank(&entry.agent_id),
                blank(&entry.execution_id),
            ]
        });
        let header = ["ID", "CREATED", "OPINION", "CRITICAL", "MAJOR", "MINOR", "AGENT", "EXECUTION"];
        lines.line(&table(&header, rows))?;
    }
    lines.flush()
}

/// Prints an entry and the rules it was checked against; with `json`, one object
/// `{entry, rules}`.
fn print_view(view: &AuditView, json: bool) -> std::io::Result<()> {
    if json {
        let value = json!({"entry": entry_json(&view.entry), "rules": view.rules});
        return Lines::new(true, false).line(&value.to_string());
    }
    print_entry(&view.entry, false)?;
    let mut lines = Lines::new(false, false);
    if !view.rules.is_empty() {
        lines.line("")?;
        lines.line("checked against:")?;
        for rule in &view.rules {
            lines.line(&format!("  {}: {}", rule.name, serde_json::to_string(&rule.kind).unwrap_or_default()))?;
        }
    }
    lines.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use osp_protocol::quality::Findings;
    use osp_protocol::Timestamp;
    use time::format_description::well_known::Rfc3339;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn parse(args: &[&str]) -> Result<AuditArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("audit").chain(args.iter().copied())).map(|cli| cli.args)
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-24T12:00:00Z", &Rfc3339).unwrap()
    }

    #[test]
    fn the_filters_make_the_query() {
        let args = parse(&[
            "query",
            "--opinion",
            "adverse",
            "--opinion",
            "disclaimer,qualified",
            "--min-critical",
            "1",
            "--min-major",
            "2",
            "--agent",
            "writer",
            "--execution",
            "run-1",
            "--since",
            "2h",
            "--until",
            "2026-11-24T11:30:00Z",
            "--limit",
            "5",
        ])
        .unwrap();
        let AuditCommand::Query(filters) = args.command else { panic!("not a query") };
        let query = filters.query(now()).unwrap();
        assert_eq!(query.opinions, [Opinion::Adverse, Opinion::Disclaimer, Opinion::Qualified]);
        assert_eq!((query.min_critical, query.min_major, query.limit), (Some(1), Some(2), Some(5)));
        assert_eq!((query.agent_id.as_deref(), query.execution_id.as_deref()), (Some("writer"), Some("run-1")));
        assert_eq!(query.from.unwrap().to_rfc3339(), "2026-11-24T10:00:00Z");
        assert_eq!(query.to.unwrap().to_rfc3339(), "2026-11-24T11:30:00Z");

        let error = parse(&["query", "--opinion", "fine"]).err().unwrap().to_string();
        assert!(error.contains("\"fine\" is not an opinion"), "{error}");
        assert!(parse(&["query", "--limit", "0"]).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_ages() {
        let at = |text: &str| crate::time_args::parse_time("--since", text, now()).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-24T10:30:00Z"), "2026-11-24T10:30:00Z");
        assert_eq!(at("90s"), "2026-11-24T11:58:30Z");
        assert_eq!(at("15m"), "2026-11-24T11:45:00Z");
        assert_eq!(at("1d"), "2026-11-23T12:00:00Z");
        assert_eq!(at("1h 30m"), "2026-11-24T10:30:00Z");
        for bad in ["", "yesterday", "m", "2026-13-01"] {
            let error = crate::time_args::parse_time("--until", bad, now()).unwrap_err().to_string();
            assert!(error.starts_with(&format!("--until {bad:?}: expected RFC 3339")), "{error}");
        }
    }

    fn entry() -> AuditEntry {
        AuditEntry {
            id: "a-1".into(),
            created_at: Timestamp(1_700_000_000_123),
            agent_id: Some("writer".into()),
            execution_id: Some("run-1".into()),
            objectives: vec!["a summary".into()],
            scope: vec!["has-summary".into()],
            opinion: Opinion::Unqualified,
            findings: Findings::default(),
            rule_results: vec![],
            judge_result: None,
            metadata: None,
        }
    }

    #[test]
    fn an_exported_file_imports_to_the_same_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-1.md");
        std::fs::write(&file, to_markdown(&entry())).unwrap();
        assert_eq!(read_entry(file.to_str().unwrap()).unwrap(), entry());

        std::fs::write(&file, "# no front matter\n").unwrap();
        let error = read_entry(file.to_str().unwrap()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{}: not an audit entry: ", file.display())), "{error}");
    }

    #[test]
    fn differences_are_named_by_field() {
        assert!(differing_fields(&entry(), &entry()).is_empty());
        let other = AuditEntry { opinion: Opinion::Qualified, metadata: Some(json!({"a": 1})), ..entry() };
        assert_eq!(differing_fields(&entry(), &other), ["metadata", "opinion"]);
    }
}
