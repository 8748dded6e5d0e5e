//! `osp events tail` and `osp events replay`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use osp_eventlog::{LogItem, Recorded, Start};
use osp_protocol::subject::ALL_EVENTS;
use osp_protocol::AnyPayload;
use time::OffsetDateTime;

use crate::{connect, output};

/// Reading the event log.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Follow events as they are stored, until Ctrl-C.
    Tail {
        /// Only events on this subject (wildcards allowed), e.g. `osp.v1.evt.run.*`.
        #[arg(long, default_value = ALL_EVENTS)]
        subject: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the log from a point to its current end, then exit.
    Replay {
        /// Start at this stream sequence (the first is 1).
        #[arg(long, conflicts_with = "since", value_parser = clap::value_parser!(u64).range(1..))]
        from_seq: Option<u64>,
        /// Start at this time: RFC 3339 (`2026-11-24T16:00:00Z`) or an age (`90s`, `15m`, `2h`, `1d`).
        #[arg(long)]
        since: Option<String>,
        /// Only events on this subject (wildcards allowed).
        #[arg(long, default_value = ALL_EVENTS)]
        subject: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `osp events` command.
pub async fn run(command: EventsCommand, url: &str) -> anyhow::Result<ExitCode> {
    let log = connect::event_log(url).await?;
    match command {
        EventsCommand::Tail { subject, json } => {
            let mut follow = log.follow::<Recorded<AnyPayload>>(&subject, Start::New).await?;
            eprintln!("following {subject} (Ctrl-C to stop)");
            let mut lines = output::Lines::new(json, true);
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                    item = follow.next() => match item {
                        None => bail!("the log subscription ended"),
                        Some(item) => print(&mut lines, item?)?,
                    },
                }
            }
        }
        EventsCommand::Replay { from_seq, since, subject, json } => {
            let start = match (from_seq, since) {
                (Some(seq), _) => Start::Sequence(seq),
                (None, Some(since)) => {
                    Start::Since(crate::time_args::parse_time("--since", &since, OffsetDateTime::now_utc())?)
                }
                (None, None) => Start::All,
            };
            let mut follow = log.follow::<Recorded<AnyPayload>>(&subject, start).await?;
            let bar = output::progress(follow.pending(), "replaying");
            let mut lines = output::Lines::new(json, false);
            while let Some(item) = follow.next().await {
                match item? {
                    LogItem::CaughtUp(_) => break,
                    item => {
                        bar.inc(1);
                        print(&mut lines, item)?;
                    }
                }
            }
            bar.finish_and_clear();
            lines.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print(lines: &mut output::Lines, item: LogItem<Recorded<AnyPayload>>) -> anyhow::Result<()> {
    match item {
        LogItem::Event(event) => lines.event(&event)?,
        LogItem::Malformed(malformed) => lines.malformed(&malformed)?,
        LogItem::CaughtUp(_) => {}
    }
    Ok(())
}
