//! `osp check`: an ad-hoc check of an output against rules of the catalog, recorded as
//! an audit entry like any other check.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use osp_client::CheckRequest;
use osp_protocol::quality::{AuditEntry, CheckOutcome, JudgeSpec, Opinion, DEFAULT_AGENT_TIMEOUT_MS};
use serde_json::Value;

use super::{print_entry, read_text, usage_error};
use crate::connect::{self, service_error};
use crate::json_args;

/// What `osp check` exits with, for `--help`.
const EXIT_CODES: &str = "\
Exit status: 0 when the opinion is unqualified (nothing found) or qualified (one major or only minor
findings); 1 when it is adverse (a critical finding, or two major ones) or a disclaimer (evidence is
missing: a rule could not be checked, the judge did not answer), and when the service refuses the
check (an unknown rule, say);
2 when the output file cannot be read, or is not JSON without --text.";

/// Options of `osp check`.
#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct CheckArgs {
    /// The output to check: a JSON file (with --text, any text file), `-` for stdin.
    #[arg(value_name = "OUTPUT_FILE|-")]
    output: String,
    /// The rules to check, by name, comma-separated, in the order their results are
    /// reported (`osp rules list` shows the catalog).
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', required_unless_present = "judge")]
    rules: Vec<String>,
    /// Have a judge (an agent with the `judge` capability) score the output on this
    /// criterion too. Repeatable.
    #[arg(long = "judge", value_name = "CRITERION")]
    judge: Vec<String>,
    /// The score (0 to 1) the judge must give for the output to pass.
    #[arg(long, value_name = "SCORE", default_value_t = 0.7, requires = "judge")]
    threshold: f64,
    /// The model the judge should use.
    #[arg(long, value_name = "NAME", requires = "judge")]
    model: Option<String>,
    /// How long the judge and custom rules may take; past it, what has not answered is
    /// missing evidence (a disclaimer) [default: the service's, 60s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// The output is the file's text (checked as a JSON string), not JSON.
    #[arg(long)]
    text: bool,
    /// What the check is for, kept in the audit entry. Repeatable.
    #[arg(long = "objective", value_name = "TEXT")]
    objectives: Vec<String>,
    /// The execution whose output it is (a run id), kept in the audit entry.
    #[arg(long, value_name = "ID")]
    execution: Option<String>,
    /// The agent whose output it is, kept in the audit entry.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// The audit entry's id (a subject token: no `.`, `*`, `>` or whitespace) [default: a
    /// new UUID]. Checking the same output under the same id again is harmless; another
    /// check under the same id is refused.
    #[arg(long, value_name = "ID")]
    audit_id: Option<String>,
    /// Your own data, kept in the audit entry: a JSON object inline or `@FILE`.
    #[arg(long, value_name = "JSON|@FILE")]
    metadata: Option<String>,
    /// Print the audit entry as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `osp check`: the output is read before connecting, so a bad file is said whether
/// or not a server is up; the exit status follows the opinion.
pub async fn run(args: CheckArgs, url: &str) -> anyhow::Result<ExitCode> {
    let request = match request(&args) {
        Ok(request) => request,
        Err(error) => return Ok(usage_error(&error)),
    };
    let quality = connect::osp_client(url).await?.quality();
    let entry = match quality.check(&request).await.map_err(service_error)?.result {
        CheckOutcome::Recorded(entry) => *entry,
        CheckOutcome::Open(open) => {
            let spinner = waiting_spinner(&open.waiting, args.json);
            // The service records the entry by the check's deadline; allow for a slow start.
            let timeout = args.timeout.unwrap_or(Duration::from_millis(DEFAULT_AGENT_TIMEOUT_MS));
            let entry = quality.wait_recorded(&open.audit_id, timeout + OPEN_CHECK_SLACK).await;
            spinner.finish_and_clear();
            entry.map_err(service_error)?
        }
    };
    print_entry(&entry, args.json)?;
    Ok(exit_status(&entry))
}

/// How much longer than the check's timeout an open check is waited for.
const OPEN_CHECK_SLACK: Duration = Duration::from_secs(15);

/// A spinner naming what an open check waits for (none for `--json`, whose output is
/// for tools).
fn waiting_spinner(waiting: &[String], json: bool) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!("waiting for {}", waiting.join(", ")));
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// The check the flags ask for.
fn request(args: &CheckArgs) -> anyhow::Result<CheckRequest> {
    let output = read_output(&args.output, args.text)?;
    let mut request = CheckRequest::new(output, args.rules.iter().cloned()).objectives(args.objectives.iter().cloned());
    if let Some(timeout) = args.timeout {
        request = request.timeout_ms(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    }
    if !args.judge.is_empty() {
        let judge = JudgeSpec { criteria: args.judge.clone(), threshold: args.threshold, model: args.model.clone() };
        judge.check("--judge").map_err(|e| anyhow!("{e}"))?;
        request = request.judge(judge);
    }
    if let Some(id) = &args.audit_id {
        request = request.audit_id(id.as_str());
    }
    if let Some(execution) = &args.execution {
        request = request.execution_id(execution.as_str());
    }
    if let Some(agent) = &args.agent {
        request = request.agent_id(agent.as_str());
    }
    if let Some(metadata) = &args.metadata {
        if metadata == "-" {
            return Err(anyhow!("--metadata: give inline JSON or @FILE (only the output file reads stdin)"));
        }
        request = request.metadata(json_args::read("--metadata", metadata)?);
    }
    Ok(request)
}

/// The output in `arg` (`-`: stdin): its JSON, or with `text` its text as a JSON string.
fn read_output(arg: &str, text: bool) -> anyhow::Result<Value> {
    let (contents, source) = read_text(arg)?;
    if text {
        return Ok(Value::String(contents));
    }
    serde_json::from_str(&contents)
        .map_err(|error| anyhow!("{source}: the output is not JSON ({error}); --text checks a file's text as it is"))
}

/// 0 for an opinion that accepts the output, 1 for one that does not (see
/// [`EXIT_CODES`]).
fn exit_status(entry: &AuditEntry) -> ExitCode {
    match entry.opinion {
        Opinion::Unqualified | Opinion::Qualified => ExitCode::SUCCESS,
        Opinion::Adverse | Opinion::Disclaimer => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn parse(args: &[&str]) -> Result<CheckArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("check").chain(args.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn the_flags_make_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.json");
        std::fs::write(&file, r#"{"summary": "Short."}"#).unwrap();
        let path = file.to_str().unwrap();
        let args = parse(&[
            path,
            "--rules",
            "has-summary,short",
            "--objective",
            "a summary",
            "--objective",
            "a short one",
            "--execution",
            "run-1",
            "--agent",
            "writer",
            "--audit-id",
            "a-1",
            "--metadata",
            r#"{"team": "docs"}"#,
        ])
        .unwrap();
        let made = request(&args).unwrap();
        let expected = CheckRequest::new(json!({"summary": "Short."}), ["has-summary", "short"])
            .audit_id("a-1")
            .objectives(["a summary", "a short one"])
            .execution_id("run-1")
            .agent_id("writer")
            .metadata(json!({"team": "docs"}));
        assert_eq!(made, expected);

        let text = request(&parse(&[path, "--rules", "r", "--text"]).unwrap()).unwrap();
        assert_eq!(text.output(), &json!(r#"{"summary": "Short."}"#));
        assert!(parse(&[path]).is_err(), "--rules or --judge is required");

        let flags = [path, "--judge", "accurate", "--threshold", "0.8", "--timeout", "5s", "--audit-id", "a-2"];
        let judged = request(&parse(&flags).unwrap()).unwrap();
        let judge = JudgeSpec { criteria: vec!["accurate".into()], threshold: 0.8, model: None };
        let expected = CheckRequest::new(json!({"summary": "Short."}), Vec::<String>::new())
            .audit_id("a-2")
            .judge(judge)
            .timeout_ms(5000);
        assert_eq!(judged, expected);
        let bad = request(&parse(&[path, "--judge", "accurate", "--threshold", "3"]).unwrap()).unwrap_err();
        assert!(bad.to_string().contains("threshold"), "{bad}");
    }

    #[test]
    fn an_output_that_is_not_json_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.txt");
        std::fs::write(&file, "Just words.").unwrap();
        let path = file.to_str().unwrap();
        let error = request(&parse(&[path, "--rules", "r"]).unwrap()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("{path}: the output is not JSON")), "{error}");
        assert!(error.contains("--text"), "{error}");
        assert_eq!(
            request(&parse(&[path, "--rules", "r", "--text"]).unwrap()).unwrap().output(),
            &json!("Just words.")
        );
    }

    #[test]
    fn the_opinion_makes_the_exit_status() {
        let entry = |opinion| AuditEntry {
            id: "a".into(),
            created_at: osp_protocol::Timestamp(0),
            agent_id: None,
            execution_id: None,
            objectives: vec![],
            scope: vec![],
            opinion,
            findings: Default::default(),
            rule_results: vec![],
            judge_result: None,
            metadata: None,
        };
        for (opinion, status) in [
            (Opinion::Unqualified, ExitCode::SUCCESS),
            (Opinion::Qualified, ExitCode::SUCCESS),
            (Opinion::Adverse, ExitCode::FAILURE),
            (Opinion::Disclaimer, ExitCode::FAILURE),
        ] {
            assert_eq!(exit_status(&entry(opinion)), status, "{opinion:?}");
        }
    }
}
