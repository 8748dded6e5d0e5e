//! `osp bench scheduler`: single-task runs end to end through the scheduler, next to a
//! raw JetStream work queue, same server, same run.
//!
//! - raw publish: asynchronous JetStream publishes of messages the size of a task
//!   message, each with a message id and a content type as a task message has, to a
//!   stream configured like the work queue, [`RAW_WINDOW`] acks in flight, for
//!   `--raw-duration`: what the server can write;
//! - raw work queue: publish → pull (a durable pull consumer, explicit ack, one
//!   connection per agent) → ack, `--in-flight` tasks outstanding (published and not
//!   yet taken), for `--raw-duration`: tasks/s end to end, and publish → pulled latency;
//!   then one task at a time for the latency of an idle queue;
//! - ours: the scheduler in-process, and `--agents` workers, each on a connection of its
//!   own with `--concurrency` slots, whose handler returns the input at once; a submitter
//!   keeps `--in-flight` runs outstanding (submitted and not completed yet; each submit
//!   waits for its reply, many in parallel) for `--duration`, after a warm-up; then runs
//!   one at a time for the latency of an idle system.
//!
//! The latency target applies to the idle figures: with `--in-flight` runs outstanding,
//! a run's time in the system is `in_flight / runs_per_s` whatever the scheduler does
//! (Little's law), so the loaded latencies measure queueing more than the scheduler.
//!
//! Times are taken in this process: submit start; the submit's reply; the handler
//! called (keyed by run id); and each run event as it arrives on one ordered consumer of
//! `osp.v1.evt.run.*` created before the first run (`run.dispatched`, `run.started`,
//! `run.completed`).
//!
//! Writes per run are measured, not assumed: see [`Writes`].

use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use osp_client::{Agent, Client, Submission, Task, TaskFailure, Worker};
use osp_eventlog::{EVENTS_STREAM, INBOX_STREAM, TIMERS_STREAM, WORK_STREAM};
use osp_protocol::scheduler::{RunEvent, RunOptions, TaskMessage, RUN_KIND};
use osp_protocol::{subject, Envelope, Token};
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::stats::{percentiles, rate, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// How long runs are submitted for (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(super) duration: Duration,
    /// How long each raw baseline runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(super) raw_duration: Duration,
    /// In-process agents: workers, each on a NATS connection of its own (and raw
    /// consumers, as many).
    #[arg(long, default_value_t = 2)]
    pub(super) agents: usize,
    /// Tasks each agent runs at once (its max concurrency).
    #[arg(long, default_value_t = 64)]
    pub(super) concurrency: u32,
    /// Runs in flight: submitted and not completed yet (raw: tasks published and not
    /// yet taken).
    #[arg(long, default_value_t = 256)]
    pub(super) in_flight: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

/// The capability the benchmark's agents offer.
pub(super) const CAPABILITY: &str = "bench-echo";
/// Raw publishes whose acks are awaited at once.
const RAW_WINDOW: usize = 2_000;
/// The raw baselines' stream, subjects and consumer.
const RAW_STREAM: &str = "BENCH_RAW_WORK";
const RAW_PUBLISH_SUBJECT: &str = "bench.raw.publish";
const RAW_QUEUE_SUBJECT: &str = "bench.raw.queue";
const RAW_CONSUMER: &str = "bench-raw";
/// Tasks a raw consumer asks for in one pull (what a worker asks for at most).
const RAW_BATCH: usize = 64;
/// Warm-up of each raw baseline, and of the scheduler, not counted.
const RAW_WARMUP: Duration = Duration::from_millis(500);
const WARMUP: Duration = Duration::from_secs(1);
/// How long runs (and raw tasks) go one at a time for the idle latency.
pub(super) const IDLE: Duration = Duration::from_secs(2);
const RAW_IDLE: Duration = Duration::from_secs(1);
/// How long a run (or the raw queue's backlog) may take to end before the benchmark
/// gives up on it.
pub(super) const RUN_WITHIN: Duration = Duration::from_secs(60);
/// Targets.
const EFFICIENCY_TARGET: f64 = 0.4;
const DISPATCH_P50_TARGET_US: f64 = 2_000.0;
/// The streams whose writes a run costs.
const COUNTED_STREAMS: [&str; 4] = [EVENTS_STREAM, INBOX_STREAM, WORK_STREAM, TIMERS_STREAM];

/// Runs the benchmark and prints its figures.
pub async fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    if args.agents == 0 || args.concurrency == 0 || args.in_flight == 0 {
        bail!("--agents, --concurrency and --in-flight must be at least 1");
    }
    if args.duration.is_zero() || args.raw_duration.is_zero() {
        bail!("--duration and --raw-duration must be more than zero");
    }
    let (binary, server) = crate::start_server().await?;
    let url = server.url();
    let task_bytes = task_message_bytes()?;
    eprintln!(
        "bench scheduler: nats-server {} ({}), {} agents x {} concurrency, {} runs in flight, \
         task message {task_bytes} B, {:?} (raw {:?} each)",
        binary.version, binary.source, args.agents, args.concurrency, args.in_flight, args.duration, args.raw_duration
    );

    // The registry applies the stream definitions; the agents are registered so submit
    // finds the capability offered. Liveness is out of the way (the workers do not
    // heartbeat the registry), and it is stopped before anything is measured.
    let registry_config =
        osp_registry::Config { offline_after: Duration::from_secs(3600), ..osp_registry::Config::default() };
    let registry = osp_registry::Registry::start(osp_cli::connect::client(&url).await?, registry_config).await?;
    let client = Client::new(osp_cli::connect::client(&url).await?).with_actor("service:bench");
    for i in 0..args.agents {
        let entry = Agent::builder(agent_name(i))
            .description(format!("benchmark agent {i}"))
            .capabilities([CAPABILITY])
            .max_concurrency(args.concurrency)
            .entry()?;
        client.registry().register(&entry).await.with_context(|| format!("registering {}", agent_name(i)))?;
    }
    registry.shutdown().await;

    let js = jetstream::new(client.nats().clone());
    let raw = measure_raw(&url, &js, task_bytes, &args).await?;

    let scheduler = osp_scheduler::Scheduler::start(osp_cli::connect::client(&url).await?, Default::default())
        .await
        .context("starting the scheduler")?;
    let tracker = Arc::new(Tracker::default());
    let follower = follow_runs(&js, tracker.clone()).await?;
    let mut workers = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        workers.push(start_worker(&url, i, args.concurrency, tracker.clone()).await?);
    }
    let ours = Ours { client, tracker };

    drive(&ours, WARMUP, args.in_flight, &Progress::hidden()).await?;
    let before = Writes::read(&js).await?;
    let loaded = drive(&ours, args.duration, args.in_flight, &Progress::new("runs", args.duration)).await?;
    let writes = Writes::read(&js).await?.since(&before);
    let idle = drive(&ours, IDLE, 1, &Progress::new("idle runs", IDLE)).await?;

    for worker in workers {
        worker.shutdown().await;
    }
    scheduler.shutdown().await;
    follower.abort();
    drop(server);

    let figures = Figures { task_bytes, raw, loaded, idle, writes };
    if args.json {
        println!("{}", figures.report(&args, &binary.version.to_string()));
    } else {
        figures.print_table(&args);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn agent_name(i: usize) -> String {
    format!("bench-agent-{i}")
}

/// The input of every benchmark run: a small JSON object.
fn task_input() -> serde_json::Value {
    json!({ "text": "a small input of a typical size for a task", "n": 1 })
}

/// Size of the task message the scheduler puts on the work queue for a benchmark run,
/// so the raw baselines write the same bytes.
pub(super) fn task_message_bytes() -> anyhow::Result<usize> {
    let run_id = Token::new("run_id", uuid::Uuid::now_v7().to_string())?;
    let message = TaskMessage {
        feedback: None,
        signal_subject: osp_protocol::scheduler::signal_subject(&run_id),
        heartbeat_subject: osp_protocol::scheduler::heartbeat_subject(&run_id),
        run_id,
        attempt: 1,
        dispatch: 1,
        capability: Token::new("capability", CAPABILITY)?,
        input: task_input(),
        deadline: None,
        heartbeat_ms: RunOptions::default().heartbeat_timeout_ms(),
    };
    Ok(serde_json::to_vec(&message)?.len())
}

/// A worker on a connection of its own whose handler notes when it is called and
/// returns the input.
async fn start_worker(url: &str, i: usize, concurrency: u32, tracker: Arc<Tracker>) -> anyhow::Result<Worker> {
    let client = Client::new(osp_cli::connect::client(url).await?);
    let worker = Worker::builder(&client, agent_name(i))
        .capability(CAPABILITY)
        .max_concurrency(concurrency)
        .shutdown_timeout(Duration::from_secs(5))
        .start(move |task: Task| {
            tracker.handler_called(task.run_id(), Instant::now());
            std::future::ready(Ok::<_, TaskFailure>(task.input().clone()))
        })
        .await
        .with_context(|| format!("starting agent {i}"))?;
    Ok(worker)
}

/// What the raw baselines measured.
pub(super) struct Raw {
    publish_per_s: f64,
    pub(super) queue_per_s: f64,
    /// Publish → pulled by a consumer, `--in-flight` outstanding.
    queue_latency: Percentiles,
    /// The same, one task at a time.
    pub(super) idle_latency: Percentiles,
}

/// Both raw baselines, each after a warm-up, on a stream of their own configured like
/// the work queue (deleted after).
pub(super) async fn measure_raw(
    url: &str,
    js: &jetstream::Context,
    bytes: usize,
    args: &SchedulerArgs,
) -> anyhow::Result<Raw> {
    let work = js.get_stream(WORK_STREAM).await.context("reading the work queue's configuration")?;
    let config = jetstream::stream::Config {
        name: RAW_STREAM.to_owned(),
        subjects: vec!["bench.raw.>".to_owned()],
        description: None,
        ..work.cached_info().config.clone()
    };
    let mut stream = js.create_stream(config).await.context("creating the raw baseline's stream")?;

    raw_publish(js, RAW_WARMUP, bytes, &Progress::hidden()).await?;
    let publish_per_s =
        raw_publish(js, args.raw_duration, bytes, &Progress::new("raw publish", args.raw_duration)).await?;
    stream.purge().await.context("emptying the raw stream")?;

    let queue = |duration, in_flight, progress| {
        raw_work_queue(url, js, &stream, duration, bytes, args.agents, in_flight, progress)
    };
    let (hidden, loaded, idle) = (
        Progress::hidden(),
        Progress::new("raw work queue", args.raw_duration),
        Progress::new("raw idle queue", RAW_IDLE),
    );
    queue(RAW_WARMUP, args.in_flight, &hidden).await?;
    let (queue_per_s, queue_latency) = queue(args.raw_duration, args.in_flight, &loaded).await?;
    let (_, idle_latency) = queue(RAW_IDLE, 1, &idle).await?;
    stream.delete_consumer(RAW_CONSUMER).await.context("deleting the raw consumer")?;
    let _ = stream.info().await;
    js.delete_stream(RAW_STREAM).await.context("deleting the raw stream")?;
    Ok(Raw { publish_per_s, queue_per_s, queue_latency, idle_latency })
}

/// Raw JetStream publishes of `bytes` B with a message id and a content type, for
/// `duration`, [`RAW_WINDOW`] acks in flight: messages acked per second.
async fn raw_publish(
    js: &jetstream::Context,
    duration: Duration,
    bytes: usize,
    progress: &Progress,
) -> anyhow::Result<f64> {
    let payload = Bytes::from(vec![b'x'; bytes]);
    let mut acks = FuturesUnordered::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut published = 0usize;
    while Instant::now() < deadline {
        if acks.len() >= RAW_WINDOW {
            let ack: PublishResult = acks.next().await.expect("a publish is in flight");
            ack.context("raw publish")?;
        }
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(uuid::Uuid::now_v7().to_string())
            .header(osp_protocol::CONTENT_TYPE, osp_protocol::JSON);
        acks.push(js.send_publish(RAW_PUBLISH_SUBJECT, publish).await.context("raw publish")?.into_future());
        published += 1;
        if published & 1023 == 0 {
            progress.tick(published as u64);
        }
    }
    while let Some(ack) = acks.next().await {
        ack.context("raw publish")?;
    }
    let elapsed = started.elapsed();
    progress.finish();
    Ok(rate(published, elapsed))
}

/// Raw work queue for `duration`: tasks published (`in_flight` outstanding), pulled by
/// `consumers` consumers on connections of their own from one durable pull consumer,
/// and acked. Tasks taken per second, and publish → pulled latency.
#[allow(clippy::too_many_arguments)]
async fn raw_work_queue(
    url: &str,
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    duration: Duration,
    bytes: usize,
    consumers: usize,
    in_flight: usize,
    progress: &Progress,
) -> anyhow::Result<(f64, Percentiles)> {
    // Settings of a capability's work consumer.
    stream
        .create_consumer(pull::Config {
            durable_name: Some(RAW_CONSUMER.to_owned()),
            filter_subject: RAW_QUEUE_SUBJECT.to_owned(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await
        .context("creating the raw consumer")?;
    let slots = Arc::new(Semaphore::new(in_flight));
    let stop = CancellationToken::new();
    let taken = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let deadline = base + duration;
    let mut readers = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let consumer: PullConsumer = jetstream::new(osp_cli::connect::client(url).await?)
            .get_consumer_from_stream(RAW_CONSUMER, RAW_STREAM)
            .await
            .context("binding to the raw consumer")?;
        let mut messages = consumer.stream().max_messages_per_batch(RAW_BATCH).messages().await?;
        let (slots, stop, taken) = (slots.clone(), stop.clone(), taken.clone());
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => break,
                    message = messages.next() => match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "raw pull failed; going on");
                            continue;
                        }
                        None => break,
                    },
                };
                let now = Instant::now();
                let sent = message.payload.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
                if now <= deadline {
                    latencies.push(Duration::from_nanos(nanos_since(base, now).saturating_sub(sent)));
                    taken.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "raw ack failed");
                }
                slots.add_permits(1);
            }
            latencies
        }));
    }

    let mut acks = FuturesUnordered::new();
    let mut published = 0u64;
    loop {
        let permit = tokio::select! {
            biased;
            Some(ack) = acks.next(), if !acks.is_empty() => {
                let ack: PublishResult = ack;
                ack.context("raw publish")?;
                continue;
            }
            permit = slots.acquire() => permit?,
            () = tokio::time::sleep_until(deadline.into()) => break,
        };
        if Instant::now() >= deadline {
            break;
        }
        permit.forget();
        let mut payload = BytesMut::with_capacity(bytes.max(8));
        payload.put_u64_le(nanos_since(base, Instant::now()));
        payload.resize(bytes.max(8), b'x');
        let publish = PublishMessage::build()
            .payload(payload.freeze())
            .message_id(uuid::Uuid::now_v7().to_string())
            .header(osp_protocol::CONTENT_TYPE, osp_protocol::JSON);
        acks.push(js.send_publish(RAW_QUEUE_SUBJECT, publish).await.context("raw publish")?.into_future());
        published += 1;
        if published & 255 == 0 {
            progress.tick(taken.load(Ordering::Relaxed));
        }
    }
    while let Some(ack) = acks.next().await {
        ack.context("raw publish")?;
    }
    // Every task published is taken before the consumers stop.
    let all = u32::try_from(in_flight).unwrap_or(u32::MAX);
    let _all = tokio::time::timeout(RUN_WITHIN, slots.acquire_many(all))
        .await
        .context("the raw work queue's last tasks were not taken")??;
    stop.cancel();
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await?);
    }
    progress.finish();
    Ok((rate(taken.load(Ordering::Relaxed) as usize, duration), percentiles(&mut latencies)))
}

type PublishResult = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;

fn nanos_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// When things happened to one run, as seen from this process.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeline {
    /// The submit was started.
    pub(super) submitted: Instant,
    /// Its reply came.
    accepted: Option<Instant>,
    /// `run.dispatched` arrived.
    dispatched: Option<Instant>,
    /// The agent's handler was called.
    handler: Option<Instant>,
    /// `run.started` arrived.
    started: Option<Instant>,
    /// The final event arrived.
    pub(super) ended: Option<Instant>,
    /// The final event was `run.completed`.
    pub(super) completed: bool,
}

struct Pending {
    timeline: Timeline,
    done: oneshot::Sender<Timeline>,
}

/// The runs under way, keyed by run id: what the submitter, the handlers and the
/// follower of the log note.
#[derive(Default)]
pub(super) struct Tracker {
    runs: Mutex<HashMap<String, Pending>>,
    /// Runs that ended, for the progress line.
    ended: AtomicU64,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A run about to be submitted: its timeline comes through the receiver once it ends.
    fn expect(&self, run_id: &str, submitted: Instant) -> oneshot::Receiver<Timeline> {
        let (done, ended) = oneshot::channel();
        let timeline = Timeline {
            submitted,
            accepted: None,
            dispatched: None,
            handler: None,
            started: None,
            ended: None,
            completed: false,
        };
        self.lock().insert(run_id.to_owned(), Pending { timeline, done });
        ended
    }

    fn forget(&self, run_id: &str) {
        self.lock().remove(run_id);
    }

    pub(super) fn handler_called(&self, run_id: &str, at: Instant) {
        if let Some(pending) = self.lock().get_mut(run_id) {
            pending.timeline.handler.get_or_insert(at);
        }
    }

    fn saw(&self, run_id: &str, event: &RunEvent, at: Instant) {
        let mut runs = self.lock();
        let Some(pending) = runs.get_mut(run_id) else { return };
        let timeline = &mut pending.timeline;
        match event {
            // A run needing no approval is dispatched by its submission's own event.
            RunEvent::Dispatched(_)
            | RunEvent::Submitted(osp_protocol::scheduler::Submitted { dispatched: Some(_), .. }) => {
                timeline.dispatched.get_or_insert(at);
            }
            RunEvent::Started(_) => {
                timeline.started.get_or_insert(at);
            }
            RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                timeline.ended = Some(at);
                timeline.completed = matches!(event, RunEvent::Completed(_));
                if let Some(Pending { timeline, done }) = runs.remove(run_id) {
                    let _ = done.send(timeline);
                    self.ended.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// Follows every run event from now on (one ordered consumer), noting when each
/// arrives.
pub(super) async fn follow_runs(
    js: &jetstream::Context,
    tracker: Arc<Tracker>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let filter = subject::events_of_kind(&Token::new("kind", RUN_KIND)?);
    let prefix = filter.trim_end_matches('*').to_owned();
    let consumer = js
        .get_stream(EVENTS_STREAM)
        .await?
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .context("following the run events")?;
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let at = Instant::now();
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "following the run events failed; going on");
                    continue;
                }
            };
            let Some(run_id) = message.subject.strip_prefix(prefix.as_str()) else { continue };
            match Envelope::<RunEvent>::decode(&message.payload) {
                Ok(envelope) => tracker.saw(run_id, &envelope.payload, at),
                Err(error) => tracing::warn!(%error, run_id, "unreadable run event"),
            }
        }
    }))
}

/// The submitting side.
pub(super) struct Ours {
    pub(super) client: Client,
    pub(super) tracker: Arc<Tracker>,
}

/// What one phase of runs gave.
pub(super) struct Phase {
    duration: Duration,
    /// Runs submitted in the phase, all ended.
    pub(super) timelines: Vec<Timeline>,
    /// Runs completed before the phase's end.
    completed_in_time: usize,
    /// Runs that failed, were cancelled, or whose submit failed.
    pub(super) failed: usize,
    pub(super) first_error: Option<String>,
}

/// Submits runs for `duration`, `in_flight` outstanding at once, then waits for those
/// submitted to end.
pub(super) async fn drive(
    ours: &Ours,
    duration: Duration,
    in_flight: usize,
    progress: &Progress,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let deadline = start + duration;
    let input = task_input();
    let ended_before = ours.tracker.ended.load(Ordering::Relaxed);
    let mut runs = futures::stream::repeat(())
        .take_while(move |()| std::future::ready(Instant::now() < deadline))
        .map(|()| {
            let scheduler = ours.client.scheduler();
            let tracker = ours.tracker.clone();
            let submission = Submission::new(CAPABILITY, input.clone());
            tokio::spawn(one_run(scheduler, tracker, submission))
        })
        .buffer_unordered(in_flight);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut phase = Phase { duration, timelines: Vec::new(), completed_in_time: 0, failed: 0, first_error: None };
    loop {
        let outcome = tokio::select! {
            outcome = runs.next() => match outcome {
                Some(outcome) => outcome,
                None => break,
            },
            _ = ticks.tick() => {
                progress.tick(ours.tracker.ended.load(Ordering::Relaxed) - ended_before);
                continue;
            }
        };
        match outcome.context("a run's task panicked")? {
            Ok(timeline) if timeline.completed => {
                if timeline.ended.is_some_and(|ended| ended <= deadline) {
                    phase.completed_in_time += 1;
                }
                phase.timelines.push(timeline);
            }
            Ok(_) => {
                phase.failed += 1;
                phase.first_error.get_or_insert_with(|| "a run failed or was cancelled".to_owned());
            }
            Err(error) => {
                phase.failed += 1;
                phase.first_error.get_or_insert(error);
            }
        }
    }
    progress.finish();
    if let Some(error) = &phase.first_error {
        tracing::warn!(failed = phase.failed, %error, "runs did not complete");
    }
    Ok(phase)
}

/// One run: submitted, then awaited until its final event arrives.
pub(super) async fn one_run(
    scheduler: osp_client::Scheduler,
    tracker: Arc<Tracker>,
    submission: Submission,
) -> Result<Timeline, String> {
    let run_id = submission.id().to_owned();
    let ended = tracker.expect(&run_id, Instant::now());
    if let Err(error) = scheduler.submit(&submission).await {
        tracker.forget(&run_id);
        return Err(format!("submit: {error}"));
    }
    let accepted = Instant::now();
    match tokio::time::timeout(RUN_WITHIN, ended).await {
        Ok(Ok(mut timeline)) => {
            timeline.accepted = Some(accepted);
            Ok(timeline)
        }
        _ => {
            tracker.forget(&run_id);
            Err(format!("run {run_id} did not end within {RUN_WITHIN:?}"))
        }
    }
}

/// The JetStream writes runs cost: messages stored in the OSP streams. Each stream's
/// `last_sequence` counts every message ever stored in it, including the work-queue
/// streams' messages deleted since on ack (OSP_INBOX, OSP_WORK, OSP_TIMERS), so the
/// difference over a phase is what the phase wrote: commands (submit, started,
/// completed) in OSP_INBOX, run events in OSP_EVENTS, task messages in OSP_WORK, timer
/// schedules and fired timers in OSP_TIMERS. Acks and consumer state updates are not
/// counted (they are not stored messages); neither are core-NATS messages (replies,
/// heartbeats, signals). The phase starts with no run under way and ends with every
/// run it submitted ended.
struct Writes(BTreeMap<&'static str, u64>);

impl Writes {
    async fn read(js: &jetstream::Context) -> anyhow::Result<Writes> {
        let mut sequences = BTreeMap::new();
        for name in COUNTED_STREAMS {
            let stream = js.get_stream(name).await.with_context(|| format!("reading stream {name}"))?;
            sequences.insert(name, stream.cached_info().state.last_sequence);
        }
        Ok(Writes(sequences))
    }

    fn since(&self, before: &Writes) -> Writes {
        Writes(self.0.iter().map(|(name, seq)| (*name, seq - before.0.get(name).copied().unwrap_or(0))).collect())
    }

    fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Latencies of a phase's completed runs, in microseconds.
pub(super) struct Latencies {
    dispatch: Percentiles,
    pub(super) completed: Percentiles,
    /// Submit → its reply.
    reply: Percentiles,
    /// Submit → `run.dispatched` seen.
    to_dispatched: Percentiles,
    /// `run.dispatched` seen → handler called.
    dispatched_to_handler: Percentiles,
    /// Handler called → `run.completed` seen.
    handler_to_completed: Percentiles,
}

impl Latencies {
    pub(super) fn of(timelines: &[Timeline]) -> Latencies {
        let between = |from: fn(&Timeline) -> Option<Instant>, to: fn(&Timeline) -> Option<Instant>| {
            let mut samples: Vec<Duration> =
                timelines.iter().filter_map(|t| Some(to(t)?.saturating_duration_since(from(t)?))).collect();
            percentiles(&mut samples)
        };
        Latencies {
            dispatch: between(|t| Some(t.submitted), |t| t.handler),
            completed: between(|t| Some(t.submitted), |t| t.ended),
            reply: between(|t| Some(t.submitted), |t| t.accepted),
            to_dispatched: between(|t| Some(t.submitted), |t| t.dispatched),
            dispatched_to_handler: between(|t| t.dispatched, |t| t.handler),
            handler_to_completed: between(|t| t.handler, |t| t.ended),
        }
    }
}

struct Figures {
    task_bytes: usize,
    raw: Raw,
    loaded: Phase,
    idle: Phase,
    writes: Writes,
}

pub(super) fn ms(us: f64) -> f64 {
    round2(us / 1000.0)
}

/// Where a run's time goes (medians, in milliseconds), for the JSON report.
fn phases(l: &Latencies) -> serde_json::Value {
    json!({
        "submit_reply": ms(l.reply.p50),
        "submit_to_dispatched_event": ms(l.to_dispatched.p50),
        "dispatched_event_to_handler": ms(l.dispatched_to_handler.p50),
        "handler_to_completed_event": ms(l.handler_to_completed.p50),
    })
}

impl Figures {
    fn runs_per_s(&self) -> f64 {
        rate(self.loaded.completed_in_time, self.loaded.duration)
    }
    /// Writes of the phase per run submitted in it (all of which ended).
    fn writes_per_run(&self) -> f64 {
        let runs = self.loaded.timelines.len() + self.loaded.failed;
        self.writes.total() as f64 / runs.max(1) as f64
    }
    fn writes_per_s(&self) -> f64 {
        self.runs_per_s() * self.writes_per_run()
    }
    fn efficiency(&self) -> f64 {
        self.writes_per_s() / self.raw.publish_per_s
    }
    fn queue_ratio(&self) -> f64 {
        self.runs_per_s() / self.raw.queue_per_s
    }
    fn meets_targets(&self, idle: &Latencies) -> bool {
        self.efficiency() >= EFFICIENCY_TARGET && idle.dispatch.p50 < DISPATCH_P50_TARGET_US
    }

    fn report(&self, args: &SchedulerArgs, server_version: &str) -> serde_json::Value {
        let (loaded, idle) = (Latencies::of(&self.loaded.timelines), Latencies::of(&self.idle.timelines));
        let runs = (self.loaded.timelines.len() + self.loaded.failed).max(1) as f64;
        let by_stream: serde_json::Map<_, _> =
            self.writes.0.iter().map(|(name, n)| ((*name).to_owned(), json!(round2(*n as f64 / runs)))).collect();
        json!({
            "benchmark": "scheduler",
            "server_version": server_version,
            "duration_s": args.duration.as_secs_f64(),
            "raw_duration_s": args.raw_duration.as_secs_f64(),
            "agents": args.agents,
            "concurrency": args.concurrency,
            "in_flight": args.in_flight,
            "task_message_bytes": self.task_bytes,
            "runs_completed": self.loaded.completed_in_time,
            "runs_submitted": self.loaded.timelines.len() + self.loaded.failed,
            "runs_failed": self.loaded.failed,
            "runs_per_s": round2(self.runs_per_s()),
            "writes_per_run": round2(self.writes_per_run()),
            "writes_per_run_by_stream": by_stream,
            "writes_per_s": round2(self.writes_per_s()),
            "efficiency": round2(self.efficiency()),
            "raw_publish_per_s": round2(self.raw.publish_per_s),
            "raw_publish_window": RAW_WINDOW,
            "raw_workqueue_tasks_per_s": round2(self.raw.queue_per_s),
            "raw_workqueue_p50_ms": ms(self.raw.queue_latency.p50),
            "raw_workqueue_p99_ms": ms(self.raw.queue_latency.p99),
            "workqueue_ratio": round2(self.queue_ratio()),
            "submit_to_dispatch_p50_ms": ms(loaded.dispatch.p50),
            "submit_to_dispatch_p99_ms": ms(loaded.dispatch.p99),
            "submit_to_completed_p50_ms": ms(loaded.completed.p50),
            "submit_to_completed_p99_ms": ms(loaded.completed.p99),
            "phases_p50_ms": phases(&loaded),
            "idle_runs": self.idle.timelines.len(),
            "idle_submit_to_dispatch_p50_ms": ms(idle.dispatch.p50),
            "idle_submit_to_dispatch_p99_ms": ms(idle.dispatch.p99),
            "idle_submit_to_completed_p50_ms": ms(idle.completed.p50),
            "idle_submit_to_completed_p99_ms": ms(idle.completed.p99),
            "idle_phases_p50_ms": phases(&idle),
            "raw_workqueue_idle_p50_ms": ms(self.raw.idle_latency.p50),
            "raw_workqueue_idle_p99_ms": ms(self.raw.idle_latency.p99),
            "targets": {
                "efficiency": format!(">= {EFFICIENCY_TARGET}"),
                "idle_submit_to_dispatch_p50_ms": format!("< {}", DISPATCH_P50_TARGET_US / 1000.0),
            },
            "meets_targets": self.meets_targets(&idle),
        })
    }

    fn print_table(&self, args: &SchedulerArgs) {
        let (loaded, idle) = (Latencies::of(&self.loaded.timelines), Latencies::of(&self.idle.timelines));
        let raw = &self.raw;
        let mut table = Table::new("raw JetStream", "osp scheduler");
        table.rate("tasks end to end", raw.queue_per_s, self.runs_per_s(), Some(self.queue_ratio()), "");
        let target = format!(">= {EFFICIENCY_TARGET}");
        table.rate("writes (efficiency)", raw.publish_per_s, self.writes_per_s(), Some(self.efficiency()), &target);
        let target = format!("< {DISPATCH_P50_TARGET_US:.0} us");
        table.micros("idle: submit to dispatch p50", raw.idle_latency.p50, idle.dispatch.p50, None, &target);
        table.micros("idle: submit to dispatch p99", raw.idle_latency.p99, idle.dispatch.p99, None, "");
        table.row("idle: submit to completed p50", "-".into(), format!("{:.0} us", idle.completed.p50), None, "");
        table.micros("loaded: submit to dispatch p50", raw.queue_latency.p50, loaded.dispatch.p50, None, "");
        table.micros("loaded: submit to dispatch p99", raw.queue_latency.p99, loaded.dispatch.p99, None, "");
        table.row("loaded: submit to completed p50", "-".into(), format!("{:.0} us", loaded.completed.p50), None, "");
        table.row("loaded: submit to completed p99", "-".into(), format!("{:.0} us", loaded.completed.p99), None, "");
        table.print(self.meets_targets(&idle));
        println!(
            "runs: {} completed in {:?} ({:.0}/s), {} failed; {} agents x {} concurrency, {} runs in flight",
            self.loaded.completed_in_time,
            args.duration,
            self.runs_per_s(),
            self.loaded.failed,
            args.agents,
            args.concurrency,
            args.in_flight
        );
        let runs = (self.loaded.timelines.len() + self.loaded.failed).max(1) as f64;
        let by_stream: Vec<String> =
            self.writes.0.iter().map(|(name, n)| format!("{name} {:.2}", *n as f64 / runs)).collect();
        println!(
            "writes per run: {:.2} ({}): messages stored, acks not counted",
            self.writes_per_run(),
            by_stream.join(", ")
        );
        println!(
            "raw: writes = JetStream publish + ack of {} B with a msg id, {RAW_WINDOW} acks in flight; \
             tasks = publish -> pull -> ack, {} in flight (idle: 1), {} consumers; latency = publish -> pulled",
            self.task_bytes, args.in_flight, args.agents
        );
        let line = |name: &str, l: &Latencies| {
            println!(
                "where the time goes, {name}, p50: submit reply {:.2} ms, submit to run.dispatched {:.2} ms, \
                 run.dispatched to handler {:.2} ms, handler to run.completed {:.2} ms",
                l.reply.p50 / 1000.0,
                l.to_dispatched.p50 / 1000.0,
                l.dispatched_to_handler.p50 / 1000.0,
                l.handler_to_completed.p50 / 1000.0
            );
        };
        line("loaded", &loaded);
        line(&format!("idle ({} runs one at a time)", self.idle.timelines.len()), &idle);
        if let Some(error) = self.loaded.first_error.as_ref().or(self.idle.first_error.as_ref()) {
            println!("failed runs: {} (first: {error})", self.loaded.failed + self.idle.failed);
        }
    }
}

/// A progress bar over a timed phase, on stderr and only when that is a terminal.
pub(super) struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
}

impl Progress {
    pub(super) fn new(label: &str, duration: Duration) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = indicatif::ProgressBar::new(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let template = format!("{label:<15} [{{bar:40}}] {{msg}}");
        if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        Progress { bar, started: Instant::now() }
    }

    pub(super) fn hidden() -> Progress {
        Progress { bar: indicatif::ProgressBar::hidden(), started: Instant::now() }
    }

    /// Time elapsed, and `done` items so far.
    pub(super) fn tick(&self, done: u64) {
        self.bar.set_position(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.bar.set_message(format!("{done} done"));
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_baselines_write_what_a_task_message_weighs() {
        let bytes = task_message_bytes().unwrap();
        assert!((150..400).contains(&bytes), "{bytes}");
    }

    #[test]
    fn writes_are_counted_per_stream_since_a_snapshot() {
        let before = Writes(COUNTED_STREAMS.iter().map(|name| (*name, 10)).collect());
        let after = Writes(COUNTED_STREAMS.iter().map(|name| (*name, 13)).collect());
        assert_eq!(after.since(&before).total(), 12);
    }

    #[test]
    fn timelines_give_the_phases_of_a_run() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let timeline = Timeline {
            submitted: t0,
            accepted: at(1),
            dispatched: at(2),
            handler: at(5),
            started: at(6),
            ended: at(9),
            completed: true,
        };
        let latencies = Latencies::of(&[timeline]);
        assert_eq!(latencies.dispatch.p50, 5_000.0);
        assert_eq!(latencies.completed.p50, 9_000.0);
        assert_eq!(latencies.dispatched_to_handler.p50, 3_000.0);
        assert_eq!(latencies.handler_to_completed.p50, 4_000.0);
    }
}
