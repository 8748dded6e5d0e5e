//! `osp replay run` and `osp replay diff`: a run understood after the fact, from the log
//! alone. Nothing is re-executed and no agent is called: the events are read
//! ([`collect`]) and typed ([`event`]), laid out ([`timeline`], [`causes`]), folded with
//! the services' own view code ([`state`]) or compared ([`diff`]).

mod causes;
mod collect;
mod diff;
mod event;
mod state;
mod timeline;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use osp_eventlog::EventLog;
use osp_protocol::Timestamp;
use time::OffsetDateTime;

pub use collect::run_tree;
pub use timeline::Timeline;

use crate::{connect, output};

/// Replaying runs.
#[derive(Subcommand)]
pub enum ReplayCommand {
    /// The complete timeline of a run and its descendants, across every service: each
    /// event with its time since the first, its attempt, how long what it ends took and
    /// what caused it (`<- #seq`, or who sent the command). With --at, the state of every
    /// projection the run touched as it was at that point, folded from the log.
    Run(RunArgs),
    /// Where two runs of the same workflow diverged: the first differing step, input,
    /// decision, output or timing outlier, then the others. Exits with status 1 when
    /// they differ.
    Diff(DiffArgs),
}

/// Options of `osp replay run`.
#[derive(Args)]
pub struct RunArgs {
    /// The run (the root of a workflow's tree, or any run).
    run_id: String,
    /// Instead of the timeline, the state at this point of the log: a stream sequence
    /// (`1234`), or a time (RFC 3339, or an age such as `5m`). A sequence past the end of
    /// the log, or a time to come, shows the state at the log's end and says so on stderr.
    #[arg(long, value_name = "SEQ|TIME")]
    at: Option<String>,
    /// One JSON object.
    #[arg(long)]
    json: bool,
}

/// Options of `osp replay diff`.
#[derive(Args)]
pub struct DiffArgs {
    /// The first run.
    run_a: String,
    /// The second run (of the same workflow).
    run_b: String,
    /// One JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs an `osp replay` command.
pub async fn run(command: ReplayCommand, url: &str) -> anyhow::Result<ExitCode> {
    let log = connect::event_log(url).await?;
    let mut lines = output::Lines::new(false, false);
    match command {
        ReplayCommand::Run(args) => {
            let collected = run_tree(&log, &args.run_id).await?;
            match args.at {
                Some(at) => {
                    let now = OffsetDateTime::now_utc();
                    let point = match at.parse::<u64>() {
                        Ok(seq) => state::Point::Seq(seq),
                        Err(_) => state::Point::Time(crate::time_args::parse_time("--at", &at, now)?),
                    };
                    let last = log.last_sequence().await.context("reading how far the log goes")?;
                    let (seq, beyond) = state::landing(&collected, point, last, Timestamp::from_offset_date_time(now));
                    if let Some(note) = beyond {
                        eprintln!("--at {at} {note}");
                    }
                    let state = state::at(&collected, seq)?;
                    match args.json {
                        true => lines.line(&state.to_string())?,
                        false => state::text(&collected, &state).iter().try_for_each(|line| lines.line(line))?,
                    }
                }
                None => {
                    let timeline = timeline::build(&args.run_id, &collected.events);
                    match args.json {
                        true => lines.line(&timeline.json().to_string())?,
                        false => timeline.text().iter().try_for_each(|line| lines.line(line))?,
                    }
                }
            }
            lines.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        ReplayCommand::Diff(args) => {
            if args.run_a == args.run_b {
                bail!("name two different runs to compare");
            }
            let (a, b) = (timeline_of(&log, &args.run_a).await?, timeline_of(&log, &args.run_b).await?);
            let diff = diff::diff(&a, &b);
            match args.json {
                true => lines.line(&diff.json().to_string())?,
                false => diff.text().iter().try_for_each(|line| lines.line(line))?,
            }
            lines.flush()?;
            Ok(if diff.divergences.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// The timeline of run `run_id`'s tree.
pub async fn timeline_of(log: &EventLog, run_id: &str) -> anyhow::Result<Timeline> {
    Ok(timeline::build(run_id, &run_tree(log, run_id).await?.events))
}
