//! `osp bench replay`: rebuilding the scheduler's state from a large log, from scratch and
//! from a snapshot, next to a raw ordered read of the same stream in the same run; and
//! `osp replay run` on a long run.
//!
//! The log is written in bulk with valid envelopes and hash chains (pipelined raw
//! publishes of what `EventLog::append` would store: the benchmark measures reading, not
//! writing): single-task runs of `--events-per-run` events each (submitted with its
//! dispatch, started, progress reports, a log line, completed), and one run of
//! `--long-run` events, `--events` in all. The scheduler's run view (what an instance
//! folds before it serves anything) is then started three ways: from the first event,
//! with a snapshot saved, and from that snapshot.

use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream::message::PublishMessage;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use osp_eventlog::{Definitions, EventLog};
use osp_protocol::registry::document::from_json;
use osp_protocol::scheduler::{
    Completed, Dispatched, Logged, Progressed, RunEvent, RunOptions, Started, Submitted, RUN_KIND,
};
use osp_protocol::{derived_event_id, AggregateRef, Envelope, EventHash, Timestamp, Token};
use osp_runtime::{Projection, Snapshots};
use osp_scheduler::view::SchedulerView;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::stats::{rate, round2};

/// Options of `osp bench replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events of each run (at least 4: submitted, started, a log line, completed).
    #[arg(long, default_value_t = 20)]
    events_per_run: usize,
    /// Events of the one long run that `osp replay run` is timed on.
    #[arg(long, default_value_t = 10_000)]
    long_run: usize,
    /// Publishes in flight while writing the log.
    #[arg(long, default_value_t = 2_000)]
    window: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The run the long timeline is read from.
const LONG_RUN: &str = "long-run";

/// Runs the benchmark and prints its figures.
pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if args.events_per_run < 4 || args.long_run < 4 || args.events <= args.long_run || args.window == 0 {
        bail!("--events-per-run and --long-run must be at least 4, --events more than --long-run, --window at least 1");
    }
    let (binary, server) = crate::start_server().await?;
    let log = EventLog::start(osp_cli::connect::client(&server.url()).await?, &Definitions::builtin()).await?;
    let runs = (args.events - args.long_run) / args.events_per_run;
    let events = runs * args.events_per_run + args.long_run;
    eprintln!(
        "bench replay: nats-server {} ({}), {events} events: {runs} runs of {} and one of {}",
        binary.version, binary.source, args.events_per_run, args.long_run
    );
    let started = Instant::now();
    let mut writer = Writer::new(&log, args.window);
    for run in 0..runs {
        writer.run(&format!("r{run}"), args.events_per_run).await?;
    }
    writer.run(LONG_RUN, args.long_run).await?;
    let written = writer.finish().await?;
    let write_time = started.elapsed();
    anyhow::ensure!(written == events, "wrote {written} events, meant {events}");

    let filter = osp_protocol::subject::events_of_kind(&Token::new("kind", RUN_KIND)?);
    let raw_read_time = crate::eventlog::raw_read(&log, &filter, events).await?;

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let scratch = Projection::<SchedulerView>::start_with(&log, &[&filter], Snapshots::OFF, shutdown.clone()).await?;
    let scratch_time = started.elapsed();
    let started = Instant::now();
    scratch.save_snapshot().await?;
    let save_time = started.elapsed();
    let snapshot_bytes = snapshot_size(&log).await?;
    let started = Instant::now();
    let restored =
        Projection::<SchedulerView>::start_with(&log, &[&filter], Snapshots { every: 0, read: true }, shutdown.clone())
            .await?;
    let snapshot_time = started.elapsed();
    anyhow::ensure!(
        restored.read().digest()? == scratch.read().digest()?,
        "the state started from the snapshot differs from the one folded from scratch"
    );
    shutdown.cancel();

    let started = Instant::now();
    let timeline = osp_cli::replay::timeline_of(&log, LONG_RUN).await?;
    let text = timeline.text();
    let replay_run_time = started.elapsed();
    anyhow::ensure!(timeline.lines.len() == args.long_run && text.len() > args.long_run, "the long run's timeline");
    drop(server);

    let figures = Figures {
        events,
        runs: runs + 1,
        write_per_s: rate(events, write_time),
        raw_read_per_s: rate(events, raw_read_time),
        scratch_time,
        save_time,
        snapshot_bytes,
        snapshot_time,
        replay_run_time,
    };
    match args.json {
        true => println!("{}", figures.report(&args, &binary.version.to_string())),
        false => figures.print(&args),
    }
    Ok(ExitCode::SUCCESS)
}

struct Figures {
    events: usize,
    runs: usize,
    write_per_s: f64,
    raw_read_per_s: f64,
    scratch_time: Duration,
    save_time: Duration,
    snapshot_bytes: u64,
    snapshot_time: Duration,
    replay_run_time: Duration,
}

impl Figures {
    fn rebuild_per_s(&self) -> f64 {
        rate(self.events, self.scratch_time)
    }
    fn rebuild_ratio(&self) -> f64 {
        self.rebuild_per_s() / self.raw_read_per_s
    }
    fn snapshot_fraction(&self) -> f64 {
        self.snapshot_time.as_secs_f64() / self.scratch_time.as_secs_f64()
    }
    fn meets_targets(&self) -> bool {
        self.rebuild_ratio() >= 0.5 && self.snapshot_fraction() <= 0.1 && self.replay_run_time < Duration::from_secs(1)
    }

    fn report(&self, args: &ReplayArgs, server_version: &str) -> serde_json::Value {
        json!({
            "benchmark": "replay",
            "server_version": server_version,
            "events": self.events,
            "runs": self.runs,
            "events_per_run": args.events_per_run,
            "write_per_s": round2(self.write_per_s),
            "raw_read_per_s": round2(self.raw_read_per_s),
            "raw_read_s": round2(self.events as f64 / self.raw_read_per_s),
            "cold_start_scratch_s": round2(self.scratch_time.as_secs_f64()),
            "cold_start_scratch_per_s": round2(self.rebuild_per_s()),
            "rebuild_ratio": round2(self.rebuild_ratio()),
            "snapshot_save_s": round2(self.save_time.as_secs_f64()),
            "snapshot_bytes": self.snapshot_bytes,
            "cold_start_snapshot_s": round2(self.snapshot_time.as_secs_f64()),
            "snapshot_fraction": round2(self.snapshot_fraction()),
            "replay_run_events": args.long_run,
            "replay_run_s": round2(self.replay_run_time.as_secs_f64()),
            "targets": {"rebuild_ratio": ">= 0.5", "snapshot_fraction": "<= 0.1", "replay_run_s": "< 1"},
            "meets_targets": self.meets_targets(),
        })
    }

    fn print(&self, args: &ReplayArgs) {
        let rows = [
            ("log written (bulk, pipelined)", format!("{:.0} events/s", self.write_per_s), String::new()),
            (
                "raw ordered read",
                format!("{:.2} s, {:.0} events/s", self.events as f64 / self.raw_read_per_s, self.raw_read_per_s),
                String::new(),
            ),
            (
                "scheduler cold start, from scratch",
                format!("{:.2} s, {:.0} events/s", self.scratch_time.as_secs_f64(), self.rebuild_per_s()),
                format!("rebuild_ratio {:.2} (>= 0.5)", self.rebuild_ratio()),
            ),
            (
                "snapshot saved",
                format!("{:.2} s, {} MB", self.save_time.as_secs_f64(), self.snapshot_bytes / 1_000_000),
                String::new(),
            ),
            (
                "scheduler cold start, from the snapshot",
                format!("{:.2} s", self.snapshot_time.as_secs_f64()),
                format!("{:.1}% of from scratch (<= 10%)", 100.0 * self.snapshot_fraction()),
            ),
            (
                "osp replay run, one run",
                format!("{:.3} s for {} events", self.replay_run_time.as_secs_f64(), args.long_run),
                "(< 1 s)".to_owned(),
            ),
        ];
        println!("{} events in {} runs", self.events, self.runs);
        for (what, figure, target) in rows {
            println!("{what:<40} {figure:<28} {target}");
        }
        println!("targets {}", if self.meets_targets() { "met" } else { "NOT met" });
    }
}

/// The size of the newest snapshot in the store.
async fn snapshot_size(log: &EventLog) -> anyhow::Result<u64> {
    let store = log.jetstream().get_object_store(osp_runtime::SNAPSHOTS_BUCKET).await?;
    let mut list = store.list().await?;
    let mut size = 0;
    while let Ok(Some(object)) = tokio::time::timeout(Duration::from_secs(2), list.next()).await {
        size = size.max(object?.size as u64);
    }
    Ok(size)
}

/// Writes runs as the scheduler would have stored them: valid envelopes, each linked to
/// the one before by hash, pipelined raw publishes with their ids.
struct Writer<'a> {
    log: &'a EventLog,
    window: usize,
    in_flight: FuturesUnordered<<async_nats::jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture>,
    written: usize,
}

impl<'a> Writer<'a> {
    fn new(log: &'a EventLog, window: usize) -> Writer<'a> {
        Writer { log, window, in_flight: FuturesUnordered::new(), written: 0 }
    }

    /// The `n` events of run `id`.
    async fn run(&mut self, id: &str, n: usize) -> anyhow::Result<()> {
        let aggregate = AggregateRef::new(RUN_KIND, id)?;
        let subject = aggregate.subject();
        let mut prev_hash = None;
        let at = Timestamp::now();
        for version in 1..=n as u64 {
            let payload = match version {
                1 => RunEvent::Submitted(Submitted {
                    capability: Some(Token::new("capability", "bench")?),
                    workflow: None,
                    parent: None,
                    input: from_json(&json!({"text": "a small input of a typical size for a task"})),
                    options: RunOptions::default(),
                    metadata: None,
                    dispatched: Some(Dispatched { attempt: 1, dispatch: 1, deadline: None }),
                }),
                2 => RunEvent::Started(Started { attempt: 1, agent: "bench-agent".into() }),
                v if v == n as u64 - 1 => {
                    RunEvent::Logged(Logged { attempt: 1, level: "info".into(), message: "done working".into() })
                }
                v if v == n as u64 => {
                    RunEvent::Completed(Completed { attempt: 1, output: from_json(&json!({"ok": true})) })
                }
                v => RunEvent::Progressed(Progressed {
                    attempt: 1,
                    current: v,
                    total: Some(n as u64),
                    message: Some("working".into()),
                }),
            };
            let envelope = Envelope {
                id: derived_event_id(id, version as u32, at),
                aggregate: aggregate.clone(),
                version,
                occurred_at: at.plus_millis(version),
                actor: if version == 1 { "user:bench".into() } else { "agent:bench-agent".into() },
                correlation_id: Some(id.to_owned()),
                causation_id: Some(format!("bench:{id}:{version}")),
                prev_hash,
                payload,
            };
            let bytes = envelope.encode()?;
            prev_hash = Some(EventHash::of(&bytes));
            let publish = PublishMessage::build().payload(bytes.into()).message_id(envelope.id.to_string());
            if self.in_flight.len() >= self.window {
                self.in_flight.next().await.expect("a publish in flight")?;
            }
            self.in_flight.push(self.log.jetstream().send_publish(subject.clone(), publish).await?.into_future());
            self.written += 1;
        }
        Ok(())
    }

    /// Waits for every publish; the events written.
    async fn finish(mut self) -> anyhow::Result<usize> {
        while let Some(ack) = self.in_flight.next().await {
            ack?;
        }
        Ok(self.written)
    }
}
