//! `osp log verify`: every event decodes and every aggregate's hash chain holds; and
//! every running service's live state is the state rebuilt from the log from scratch.
//!
//! Each service is asked for the digest of its state once it has applied the log as far
//! as it was verified (`Osp-Min-Seq`); its answer says the sequence its state is at.
//! The same view code the service runs then folds the log from the first event to that
//! very sequence, here, and the two digests must be equal.

use std::future::Future;
use std::process::ExitCode;

use clap::Args;
use osp_eventlog::EventLog;
use osp_protocol::subject::{self, ALL_EVENTS};
use osp_protocol::Token;
use osp_runtime::View;
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
    /// Only the log: do not compare the running services' states with the log.
    #[arg(long)]
    no_services: bool,
}

/// How a running service's live state compared with the log rebuilt from scratch.
struct ServiceCheck {
    service: &'static str,
    outcome: Result<Compared, String>,
}

/// A live digest and the rebuilt one, at the sequence the live state was at.
struct Compared {
    applied: u64,
    live: String,
    rebuilt: String,
}

impl ServiceCheck {
    fn line(&self) -> String {
        match &self.outcome {
            Ok(c) if c.live == c.rebuilt => format!(
                "{}: the live state at seq {} is the log's, rebuilt from scratch (digest {})",
                self.service,
                c.applied,
                short(&c.live)
            ),
            Ok(c) => format!(
                "{}: MISMATCH at seq {}: the live state's digest is {}, the log rebuilt from scratch gives {}",
                self.service,
                c.applied,
                short(&c.live),
                short(&c.rebuilt)
            ),
            Err(why) => format!("{}: not checked ({why})", self.service),
        }
    }

    fn mismatch(&self) -> bool {
        matches!(&self.outcome, Ok(c) if c.live != c.rebuilt)
    }

    fn json(&self) -> serde_json::Value {
        match &self.outcome {
            Ok(c) => {
                json!({"service": self.service, "applied": c.applied, "live": c.live, "rebuilt": c.rebuilt, "matches": c.live == c.rebuilt})
            }
            Err(why) => json!({"service": self.service, "skipped": why}),
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Compares service `service`'s live digest (`ask`: digest and the sequence of the last
/// event in its state, asked once it had applied the log up to `up_to`) with `V` folded
/// from the log's events of `kinds` up to the later of the two.
async fn compare<V: View, F>(
    log: &EventLog,
    up_to: u64,
    service: &'static str,
    kinds: &[&str],
    ask: F,
    digest: impl Fn(&V) -> Result<String, osp_protocol::Error>,
) -> ServiceCheck
where
    F: Future<Output = osp_client::Result<(String, u64)>>,
{
    let outcome = async {
        let (live, applied) = ask.await.map_err(|error| match error {
            osp_client::Error::NoResponders { .. } => "not running".to_owned(),
            other => other.to_string(),
        })?;
        // It answered once it had applied the log up to `up_to` (and its last event
        // applied may be later): everything up to there must be in its state.
        let applied = applied.max(up_to);
        let filters: Vec<String> = kinds
            .iter()
            .map(|kind| Token::new("kind", *kind).map(|kind| subject::events_of_kind(&kind)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        let mut bar: Option<indicatif::ProgressBar> = None;
        let view: V = osp_runtime::fold(log, &filters, Some(applied), |done, pending| {
            bar.get_or_insert_with(|| output::progress(done + pending, &format!("rebuilding {service}"))).inc(1)
        })
        .await
        .map_err(|e| e.to_string())?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let rebuilt = digest(&view).map_err(|e| e.to_string())?;
        Ok(Compared { applied, live, rebuilt })
    }
    .await;
    ServiceCheck { service, outcome }
}

/// Every service's check, asked at `up_to` (the end of the verified log).
async fn check_services(log: &EventLog, url: &str, up_to: u64) -> anyhow::Result<Vec<ServiceCheck>> {
    let client = connect::osp_client(url).await?;
    client.saw(up_to);
    Ok(vec![
        compare(
            log,
            up_to,
            "registry",
            &osp_registry::VIEW_KINDS,
            async { client.registry().digest().await.map(|a| (a.result.digest, a.result.last_seq)) },
            |view: &osp_registry::view::RegistryView| view.digest().map(|d| d.digest),
        )
        .await,
        compare(
            log,
            up_to,
            "scheduler",
            &osp_scheduler::VIEW_KINDS,
            async { client.scheduler().digest().await.map(|a| (a.result.digest, a.result.applied)) },
            |view: &osp_scheduler::view::SchedulerView| view.digest().map(|d| d.digest),
        )
        .await,
        compare(
            log,
            up_to,
            "quality",
            &osp_quality::VIEW_KINDS,
            async { client.quality().digest().await.map(|a| (a.result.digest, a.result.applied)) },
            |view: &osp_quality::view::QualityView| view.digest().map(|d| d.digest),
        )
        .await,
        compare(
            log,
            up_to,
            "context",
            &osp_context::KINDS,
            async { client.context().digest().await.map(|a| (a.result.digest, a.result.applied)) },
            |view: &osp_context::view::ContextView| view.digest().map(|d| d.digest),
        )
        .await,
    ])
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
    let services = match args.no_services {
        true => Vec::new(),
        false => check_services(&log, url, report.up_to).await?,
    };
    let mismatches = services.iter().filter(|check| check.mismatch()).count();
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
                "clean": report.is_clean() && mismatches == 0,
                "problems": problems,
                "services": services.iter().map(ServiceCheck::json).collect::<Vec<_>>(),
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
        for check in &services {
            lines.line(&check.line())?;
        }
    }
    lines.flush()?;
    Ok(if report.is_clean() && mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
