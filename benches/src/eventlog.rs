//! `osp bench eventlog`: the event store next to raw JetStream, same server, same run.
//!
//! - append throughput: `EventLog::append` of one event to each of N new aggregates,
//!   `window` appends in flight, vs raw pipelined `send_publish` of the same number of
//!   messages of the same size with the same headers (`Nats-Msg-Id`,
//!   `Nats-Expected-Last-Subject-Sequence`);
//! - replay throughput: `follow` + decode + hash + fold into a small state, vs a raw
//!   ordered consumer reading the same messages (best of three rounds each);
//! - latency: one append at a time on one aggregate vs raw publish-and-wait.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::message::PublishMessage;
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use osp_eventlog::{Definitions, EventLog, Head, LogItem, NewEvent, Recorded, Start, EVENTS_STREAM};
use osp_protocol::{derived_event_id, AggregateRef, Envelope, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::stats::{percentiles, rate, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench eventlog`.
#[derive(Args)]
pub struct EventlogArgs {
    /// Events written (and read back) in each throughput phase.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Appends (and raw publishes) in flight at once.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Sequential appends timed for the latency figures.
    #[arg(long, default_value_t = 1_000)]
    samples: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The benchmark's event: a typical small payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ticked {
    amount: i64,
    note: String,
}

osp_protocol::event_payload! {
    #[derive(Clone, Debug, PartialEq)]
    enum BenchEvent {
        Ticked(Ticked) = ("bench.ticked", 1),
    }
}

/// What the replay folds into.
#[derive(Default)]
struct Totals {
    events: u64,
    amount: i64,
    highest_version: u64,
}

fn tick(cause: &str) -> NewEvent<BenchEvent> {
    let now = Timestamp::now();
    NewEvent {
        id: derived_event_id(cause, 0, now),
        occurred_at: now,
        actor: "service:bench".into(),
        correlation_id: Some("bench-run".into()),
        causation_id: Some(cause.to_owned()),
        payload: BenchEvent::Ticked(Ticked {
            amount: 1,
            note: "a small payload of a typical size for a task event".into(),
        }),
    }
}

fn aggregate(kind: &str, id: usize) -> AggregateRef {
    AggregateRef::new(kind, &format!("a{id}")).expect("valid bench ids")
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: EventlogArgs) -> anyhow::Result<ExitCode> {
    if args.events == 0 || args.window == 0 || args.samples == 0 {
        bail!("--events, --window and --samples must be at least 1");
    }
    let (binary, server) = crate::start_server().await?;
    let client = osp_cli::connect::client(&server.url()).await?;
    let log = EventLog::start(client.clone(), &Definitions::builtin()).await?;
    let event_bytes = sample_event_bytes()?;
    eprintln!(
        "bench eventlog: nats-server {} ({}), {} events of {event_bytes} B, window {}",
        binary.version, binary.source, args.events, args.window
    );

    // Warm up both paths (connections, server file store, allocator).
    raw_publish(&log, "warmraw", 1_000, args.window, event_bytes).await?;
    append_many(&log, "warm", 1_000, args.window).await?;

    let raw_publish_time = raw_publish(&log, "rawpub", args.events, args.window, event_bytes).await?;
    let append_time = append_many(&log, "bench", args.events, args.window).await?;

    let mut raw_read_time = Duration::MAX;
    let mut replay_time = Duration::MAX;
    for _ in 0..3 {
        raw_read_time = raw_read_time.min(raw_read(&log, "osp.v1.evt.bench.*", args.events).await?);
        replay_time = replay_time.min(replay_fold(&log, "osp.v1.evt.bench.*", args.events).await?);
    }

    let raw_latency = raw_latency(&log, args.samples, event_bytes).await?;
    let append_latency = append_latency(&log, args.samples).await?;
    drop(server);

    let figures = Figures {
        raw_publish_per_s: rate(args.events, raw_publish_time),
        append_per_s: rate(args.events, append_time),
        raw_read_per_s: rate(args.events, raw_read_time),
        replay_per_s: rate(args.events, replay_time),
        raw_latency,
        append_latency,
    };
    let report = figures.report(&args, event_bytes, &binary.version.to_string());
    if args.json {
        println!("{report}");
    } else {
        figures.print_table();
    }
    Ok(ExitCode::SUCCESS)
}

struct Figures {
    raw_publish_per_s: f64,
    append_per_s: f64,
    raw_read_per_s: f64,
    replay_per_s: f64,
    raw_latency: Percentiles,
    append_latency: Percentiles,
}

impl Figures {
    fn append_ratio(&self) -> f64 {
        self.append_per_s / self.raw_publish_per_s
    }
    fn replay_ratio(&self) -> f64 {
        self.replay_per_s / self.raw_read_per_s
    }
    fn latency_p99_ratio(&self) -> f64 {
        self.append_latency.p99 / self.raw_latency.p99
    }
    fn meets_targets(&self) -> bool {
        self.append_ratio() >= 0.7 && self.replay_ratio() >= 0.7 && self.latency_p99_ratio() <= 1.5
    }

    fn report(&self, args: &EventlogArgs, event_bytes: usize, server_version: &str) -> serde_json::Value {
        json!({
            "benchmark": "eventlog",
            "server_version": server_version,
            "events": args.events,
            "window": args.window,
            "latency_samples": args.samples,
            "event_bytes": event_bytes,
            "raw_publish_per_s": round2(self.raw_publish_per_s),
            "append_per_s": round2(self.append_per_s),
            "append_ratio": round2(self.append_ratio()),
            "raw_read_per_s": round2(self.raw_read_per_s),
            "replay_per_s": round2(self.replay_per_s),
            "replay_ratio": round2(self.replay_ratio()),
            "raw_latency_p50_us": round2(self.raw_latency.p50),
            "raw_latency_p99_us": round2(self.raw_latency.p99),
            "append_latency_p50_us": round2(self.append_latency.p50),
            "append_latency_p99_us": round2(self.append_latency.p99),
            "latency_p99_ratio": round2(self.latency_p99_ratio()),
            "targets": { "append_ratio": ">= 0.7", "replay_ratio": ">= 0.7", "latency_p99_ratio": "<= 1.5" },
            "meets_targets": self.meets_targets(),
        })
    }

    fn print_table(&self) {
        let mut table = Table::new("raw JetStream", "osp eventlog");
        table.rate("append throughput", self.raw_publish_per_s, self.append_per_s, Some(self.append_ratio()), ">= 0.7");
        table.rate("replay throughput", self.raw_read_per_s, self.replay_per_s, Some(self.replay_ratio()), ">= 0.7");
        table.micros("append latency p50", self.raw_latency.p50, self.append_latency.p50, None, "");
        table.micros(
            "append latency p99",
            self.raw_latency.p99,
            self.append_latency.p99,
            Some(self.latency_p99_ratio()),
            "<= 1.5",
        );
        table.print(self.meets_targets());
    }
}

/// Size of one benchmark event as stored, so the raw baseline writes the same bytes.
fn sample_event_bytes() -> anyhow::Result<usize> {
    let event = tick("sample");
    let envelope = Envelope {
        id: event.id,
        aggregate: aggregate("bench", 0),
        version: 1,
        occurred_at: event.occurred_at,
        actor: event.actor,
        correlation_id: event.correlation_id,
        causation_id: event.causation_id,
        prev_hash: None,
        payload: event.payload,
    };
    Ok(envelope.encode()?.len())
}

/// Raw JetStream: `count` messages to new subjects with the same headers as an append,
/// `window` acknowledgements outstanding.
async fn raw_publish(
    log: &EventLog,
    kind: &str,
    count: usize,
    window: usize,
    bytes: usize,
) -> anyhow::Result<Duration> {
    let js = log.jetstream();
    let payload = bytes::Bytes::from(vec![b'x'; bytes]);
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    for i in 0..count {
        if in_flight.len() >= window {
            in_flight.next().await.expect("a publish is in flight")?;
        }
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(uuid::Uuid::now_v7().to_string())
            .expected_last_subject_sequence(0);
        let ack = js.send_publish(aggregate(kind, i).subject(), publish).await?;
        in_flight.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = in_flight.next().await {
        ack?;
    }
    Ok(started.elapsed())
}

/// `EventLog::append` of one event to each of `count` new aggregates, `window` at once.
async fn append_many(log: &EventLog, kind: &str, count: usize, window: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut appends = futures::stream::iter(0..count)
        .map(|i| async move { log.append(&aggregate(kind, i), &Head::EMPTY, vec![tick(&format!("{kind}-{i}"))]).await })
        .buffer_unordered(window);
    while let Some(result) = appends.next().await {
        result.context("append")?;
    }
    Ok(started.elapsed())
}

/// A raw ordered consumer reading `count` messages on `filter`.
pub(super) async fn raw_read(log: &EventLog, filter: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let stream = log.jetstream().get_stream(EVENTS_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut bytes = 0usize;
    for _ in 0..count {
        let message = messages.next().await.context("the raw read ended early")??;
        bytes += message.payload.len();
    }
    std::hint::black_box(bytes);
    Ok(started.elapsed())
}

/// `follow` + decode + hash + fold of `count` events on `filter`, until caught up.
async fn replay_fold(log: &EventLog, filter: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut follow = log.follow::<Recorded<BenchEvent>>(filter, Start::All).await?;
    let mut totals = Totals::default();
    while let Some(item) = follow.next().await {
        match item? {
            LogItem::Event(event) => {
                let BenchEvent::Ticked(tick) = &event.envelope.payload;
                totals.events += 1;
                totals.amount += tick.amount;
                totals.highest_version = totals.highest_version.max(event.envelope.version);
            }
            LogItem::Malformed(m) => bail!("malformed bench event at {}: {}", m.seq, m.error),
            LogItem::CaughtUp(_) => break,
        }
    }
    let elapsed = started.elapsed();
    if totals.events != count as u64 || totals.amount != count as i64 {
        bail!("replay folded {} events (amount {}), expected {count}", totals.events, totals.amount);
    }
    Ok(elapsed)
}

/// Raw publish-and-wait, one at a time, on one subject with the expected-sequence header.
async fn raw_latency(log: &EventLog, samples: usize, bytes: usize) -> anyhow::Result<Percentiles> {
    let js = log.jetstream();
    let payload = bytes::Bytes::from(vec![b'x'; bytes]);
    let subject = aggregate("rawlat", 0).subject();
    let mut last = 0;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(uuid::Uuid::now_v7().to_string())
            .expected_last_subject_sequence(last);
        last = js.send_publish(subject.clone(), publish).await?.await?.sequence;
        times.push(started.elapsed());
    }
    Ok(percentiles(&mut times))
}

/// `EventLog::append`, one at a time, on one aggregate.
async fn append_latency(log: &EventLog, samples: usize) -> anyhow::Result<Percentiles> {
    let agg = aggregate("latency", 0);
    let mut head = Head::EMPTY;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        head = log.append(&agg, &head, vec![tick(&format!("latency-{i}"))]).await?.head;
        times.push(started.elapsed());
    }
    Ok(percentiles(&mut times))
}
