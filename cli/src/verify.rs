//! `osp log verify`: every event decodes and every aggregate's hash chain holds.

use std::process::ExitCode;

use clap::Args;
use osp_protocol::subject::ALL_EVENTS;
use serde_json::json;

use crate::{connect, output};

/// Options of `osp log verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Only verify events on this subject (wildcards allowed).
    #[arg(long, default_value = ALL_EVENTS)]
    subject: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `osp log verify`; exit status 1 when a problem is found.
pub async fn run(args: VerifyArgs, url: &str) -> anyhow::Result<ExitCode> {
    let log = connect::event_log(url).await?;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let report = log
        .verify(&args.subject, |checked, pending| {
            bar.get_or_insert_with(|| output::progress(checked + pending, "verifying")).inc(1);
        })
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut lines = output::Lines::new(args.json, false);
    if args.json {
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| json!({ "seq": p.seq, "subject": p.subject, "problem": p.to_string() }))
            .collect();
        lines.line(
            &json!({
                "events": report.events,
                "aggregates": report.aggregates,
                "up_to_seq": report.up_to,
                "clean": report.is_clean(),
                "problems": problems,
            })
            .to_string(),
        )?;
    } else {
        for problem in &report.problems {
            lines.line(&problem.to_string())?;
        }
        let verdict = if report.is_clean() { "OK".to_owned() } else { format!("{} PROBLEM(S)", report.problems.len()) };
        lines.line(&format!(
            "verified {} events of {} aggregates up to seq {}: {verdict}",
            report.events, report.aggregates, report.up_to
        ))?;
    }
    lines.flush()?;
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
