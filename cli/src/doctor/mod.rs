//! `osp doctor`: checks a deployment, against the NATS server the CLI points at, and says
//! what to do about each problem.
//!
//! The checks run in order, each bounded in time ([`CHECK_WITHIN`]), and every one is
//! reported even when an earlier one failed: a check that needs what failed (a connection,
//! JetStream, a stream) is reported as skipped, so the report always has the same shape.
//! The exit status is 1 when a check failed; warnings leave it 0.

mod consumers;
mod server;
mod services;
mod streams;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, RawMessageError};
use clap::Args;
use osp_eventlog::{Definitions, EVENTS_STREAM};
use serde::Serialize;

use crate::output;

/// Options of `osp doctor`.
#[derive(Args)]
pub struct DoctorArgs {
    /// Print one JSON object per check instead of lines for people.
    #[arg(long)]
    json: bool,
    /// Compare the streams with the definitions in this folder, as the services were
    /// started with `--streams`, instead of the built-in ones.
    #[arg(long, env = "OSP_STREAMS")]
    streams: Option<PathBuf>,
    /// The replicas the services were started with (`--replicas`).
    #[arg(long, env = "OSP_REPLICAS")]
    replicas: Option<usize>,
}

/// Longest a check may take. JetStream requests give up after 5 s by themselves, so a
/// check bounded here reports their error first and this bound only catches what waits
/// on nothing else (a request a NATS permission silently drops).
const CHECK_WITHIN: Duration = Duration::from_secs(6);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run, for a check it needs failed.
    Skip,
}

impl Status {
    /// The mark people read at the start of the line: a failure stands out.
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

/// One finding: what was checked, how it came out, and on a problem what to do; with
/// `--json`, a line as it is.
#[derive(Clone, Debug, Serialize)]
struct Check {
    #[serde(rename = "check")]
    name: String,
    status: Status,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { name: name.into(), status: Status::Ok, detail: detail.into(), fix: None }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }

    fn skip(name: impl Into<String>, because: &str) -> Check {
        Check { name: name.into(), status: Status::Skip, detail: format!("skipped: {because}"), fix: None }
    }
}

/// `check`, or a failure of `name` when it takes longer than [`CHECK_WITHIN`].
async fn bounded<F: Future<Output = Check>>(name: &str, check: F) -> Check {
    tokio::time::timeout(CHECK_WITHIN, check).await.unwrap_or_else(|_| no_answer(name))
}

/// The failure of a check that got no answer in time.
fn no_answer(name: &str) -> Check {
    Check::fail(
        name,
        format!("no answer within {}", humantime::format_duration(CHECK_WITHIN)),
        "the server may be overloaded, or a NATS permission denies the request (a denied request gets no reply): check the server's log",
    )
}

/// What to do when the server did not answer a read it should have.
const RETRY: &str = "run `osp doctor` again; if it persists, check the server's log";

/// The first message of `stream` at or after sequence `from` on any of `subjects`, asked
/// of the stream's leader (the streams a service reads need not allow direct gets).
async fn first_from(
    stream: &stream::Stream,
    subjects: &[String],
    from: u64,
) -> Result<Option<StreamMessage>, RawMessageError> {
    let mut first: Option<StreamMessage> = None;
    for subject in subjects {
        match stream.get_first_raw_message_by_subject(subject, from).await {
            Ok(message) if first.as_ref().is_none_or(|first| message.sequence < first.sequence) => {
                first = Some(message)
            }
            Ok(_) => {}
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(first)
}

/// How long ago the server stored something at `at` (no time at all if its clock is
/// ahead of this machine's).
fn age(at: time::OffsetDateTime) -> Duration {
    Duration::try_from(time::OffsetDateTime::now_utc() - at).unwrap_or_default()
}

/// "2m 5s ago", to the second.
fn ago(age: Duration) -> String {
    format!("{} ago", humantime::format_duration(Duration::from_secs(age.as_secs())))
}

/// "1 message", "2 messages".
fn count(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// Runs every check against the server at `url` and prints the report.
pub async fn run(args: DoctorArgs, url: &str) -> anyhow::Result<ExitCode> {
    let definitions = Definitions::for_deployment(args.streams.as_deref(), args.replicas)?;
    let checks = examine(url, &definitions).await;
    let mut lines = output::Lines::new(args.json, false);
    let width = checks.iter().map(|check| check.name.len()).max().unwrap_or(0);
    for check in &checks {
        if args.json {
            lines.line(&serde_json::to_string(check)?)?;
            continue;
        }
        lines.line(&format!("{:<5} {:<width$}  {}", check.status.mark(), check.name, check.detail))?;
        if let Some(fix) = &check.fix {
            lines.line(&format!("      → {fix}"))?;
        }
    }
    lines.flush()?;
    let failed = checks.iter().any(|check| check.status == Status::Fail);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Every check, in order; those whose prerequisite failed are skipped.
async fn examine(url: &str, definitions: &Definitions) -> Vec<Check> {
    let (connection, client) = server::connection(url).await;
    let mut checks = vec![connection];
    let Some(client) = client else {
        checks.push(Check::skip("server version", "no connection"));
        checks.push(Check::skip("jetstream", "no connection"));
        checks.extend(skipped_after_jetstream(definitions, "no connection"));
        checks.push(server::credentials(url, None));
        return checks;
    };
    let version = server::server_version(&client);
    let supported = version.status == Status::Ok;
    checks.push(version);
    if supported {
        checks.extend(with_jetstream(&client, definitions).await);
    } else {
        // The services refuse to start on it, and the client cannot read all its replies.
        checks.push(Check::skip("jetstream", "the server is too old"));
        checks.extend(skipped_after_jetstream(definitions, "the server is too old"));
    }
    checks.push(server::credentials(url, Some(&client.server_info())));
    checks
}

/// The checks that need JetStream, on `client`'s server.
async fn with_jetstream(client: &async_nats::Client, definitions: &Definitions) -> Vec<Check> {
    let jetstream = async_nats::jetstream::new(client.clone());
    let account = bounded("jetstream", server::jetstream(&jetstream)).await;
    let available = account.status == Status::Ok;
    let mut checks = vec![account];
    if !available {
        checks.extend(skipped_after_jetstream(definitions, "JetStream is not available"));
        return checks;
    }
    let (stream_checks, present) = streams::check(&jetstream, definitions).await;
    checks.extend(stream_checks);
    let events = present.iter().find(|stream| stream.cached_info().config.name == EVENTS_STREAM);
    checks.extend(services::check(client, events).await);
    checks.extend(consumers::check(&present).await);
    checks
}

/// The checks of streams, services and consumers, skipped `because`.
fn skipped_after_jetstream(definitions: &Definitions, because: &str) -> Vec<Check> {
    let mut checks = streams::skipped(definitions, because);
    checks.extend(services::skipped(because));
    checks.push(Check::skip("consumers", because));
    checks
}
