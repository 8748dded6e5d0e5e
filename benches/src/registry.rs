//! `osp bench registry`: the registry service next to raw NATS, same server, same run.
//!
//! - registrations: `agents` agents registered through `osp_client`, `window` commands
//!   in flight, each agent with 3 distinct capabilities out of a pool of `capabilities`
//!   (deterministic); vs raw JetStream publish-and-ack of the same payload size, with
//!   message ids and the command's headers, same window, to a stream configured like
//!   the inbox;
//! - find: `find` of the agents holding one capability (a page of at most `limit`
//!   entries) through `osp_client`, one at a time for latency and `concurrency` at once
//!   for queries/s; vs a core-NATS responder in the same process, on its own connection,
//!   answering the same request with a pre-encoded reply of the same bytes.
//!
//! The registry runs in-process on its own connection, with liveness out of the way
//! (agents go offline only after an hour of silence).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::Args;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use osp_client::Agent;
use osp_eventlog::INBOX_STREAM;
use osp_protocol::registry::queries::{FindQuery, Page};
use osp_protocol::registry::{document::from_json, EntryDoc, AGENTS, SERVICE};
use osp_protocol::{headers, subject, Encoding, Reply, Token};
use serde_json::json;

use crate::stats::{percentiles, rate, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench registry`.
#[derive(Args)]
pub struct RegistryArgs {
    /// Agents registered before `find` is measured.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// `find` queries in each measurement (sequential, and concurrent).
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Size of the capability pool; each agent gets 3 distinct capabilities from it.
    #[arg(long, default_value_t = 100)]
    capabilities: usize,
    /// Register commands (and raw publishes) in flight at once.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Queries in flight at once for the queries/s figures.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Entries per `find` page.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Capabilities per agent.
const PER_AGENT: usize = 3;
/// Registrations (and raw publishes) to warm up with, not counted.
const WARMUP_REGISTRATIONS: usize = 500;
/// Queries (of each kind) to warm up with, not counted.
const WARMUP_QUERIES: usize = 200;
/// Concurrent rounds of each kind; the best counts.
const ROUNDS: usize = 3;
/// What `find_p99_ratio` should stay under.
const FIND_P99_TARGET: f64 = 3.0;
/// The raw baseline's subjects and stream.
const RAW_STREAM: &str = "BENCH_RAW";
const RAW_COMMAND_SUBJECT: &str = "bench.raw.register";
const RAW_QUERY_SUBJECT: &str = "bench.raw.find";

/// Runs the benchmark and prints its figures.
pub async fn run(args: RegistryArgs) -> anyhow::Result<ExitCode> {
    if args.agents == 0 || args.queries == 0 || args.window == 0 || args.concurrency == 0 || args.limit == 0 {
        bail!("--agents, --queries, --window, --concurrency and --limit must be at least 1");
    }
    if args.capabilities < PER_AGENT {
        bail!("--capabilities must be at least {PER_AGENT}: each agent has {PER_AGENT} distinct ones");
    }
    let (binary, server) = crate::start_server().await?;
    let url = server.url();
    let config = osp_registry::Config { offline_after: Duration::from_secs(3600), ..osp_registry::Config::default() };
    let service = osp_registry::Registry::start(osp_cli::connect::client(&url).await?, config).await?;
    let client = osp_client::Client::new(osp_cli::connect::client(&url).await?).with_actor("service:bench");

    let entries = (0..args.agents).map(|i| agent_entry(i, args.capabilities)).collect::<anyhow::Result<Vec<_>>>()?;
    let command_bytes = Encoding::MessagePack.encode(&entries[0])?.len();
    eprintln!(
        "bench registry: nats-server {} ({}), {} agents with {PER_AGENT} of {} capabilities, \
         register payload {command_bytes} B, window {}",
        binary.version, binary.source, args.agents, args.capabilities, args.window
    );
    let registrations = measure_registrations(&url, &client, &entries, command_bytes, &args).await?;
    let finds = measure_finds(&url, &client, &args).await?;
    service.shutdown().await;
    drop(server);

    let figures = Figures { command_bytes, registrations, finds };
    if args.json {
        println!("{}", figures.report(&args, &binary.version.to_string()));
    } else {
        figures.print_table(&args);
    }
    Ok(ExitCode::SUCCESS)
}

/// Registrations through the client next to raw JetStream publishes, after a warm-up of
/// both. The warm-up registers into another registry, so `find` on `agents` sees only
/// the measured agents.
async fn measure_registrations(
    url: &str,
    client: &osp_client::Client,
    entries: &[EntryDoc],
    command_bytes: usize,
    args: &RegistryArgs,
) -> anyhow::Result<Registrations> {
    let registry = client.registry();
    let js = jetstream::new(client.nats().clone());
    create_raw_stream(&js).await?;
    let warm =
        (0..WARMUP_REGISTRATIONS).map(|i| warmup_entry(i, args.capabilities)).collect::<anyhow::Result<Vec<_>>>()?;
    raw_publish(&js, WARMUP_REGISTRATIONS, args.window, command_bytes).await?;
    register_all(&registry, &warm, args.window, &indicatif::ProgressBar::hidden()).await?;

    let raw = raw_publish(&js, entries.len(), args.window, command_bytes).await?;
    let bar = progress(entries.len() as u64);
    let api = ApiTap::start(url).await?;
    let ours = register_all(&registry, entries, args.window, &bar).await?;
    let api_requests = api.stop().await;
    bar.finish_and_clear();

    let registered = registry.digest().await?.result.registries.get(AGENTS).copied().unwrap_or(0);
    ensure!(
        registered == entries.len() as u64,
        "the registry holds {registered} agents, {} were registered",
        entries.len()
    );
    Ok(Registrations {
        per_sec: rate(entries.len(), ours.elapsed),
        latency: ours.latency,
        raw_per_sec: rate(entries.len(), raw.elapsed),
        raw_latency: raw.latency,
        api_requests: api_requests.into_iter().map(|(kind, n)| (kind, n as f64 / entries.len() as f64)).collect(),
    })
}

/// `find` of one capability through the client next to a raw responder giving the same
/// reply bytes: one at a time (taking turns) for latency, `concurrency` at once for
/// queries/s.
async fn measure_finds(url: &str, client: &osp_client::Client, args: &RegistryArgs) -> anyhow::Result<Finds> {
    let wanted = 0;
    let matching = (0..args.agents).filter(|&i| capabilities_of(i, args.capabilities).contains(&wanted)).count();
    let query = FindQuery {
        registry: AGENTS.to_owned(),
        criteria: Some(from_json(&json!({ "capabilities": capability(wanted) }))),
        live: false,
        after: None,
        limit: Some(args.limit),
    };

    // The registry's reply, asked the way the client asks; the raw responder gives the same.
    let request = RawRequest::like(client, &query)?;
    let find_subject = subject::query(&Token::new("service", SERVICE)?, &Token::new("query", "find")?);
    let reply = client
        .nats()
        .request_with_headers(find_subject.clone(), request.headers.clone(), request.payload.clone())
        .await
        .context("asking the registry's find")?;
    let reply_entries = match Encoding::MessagePack.decode::<Reply<Page>>(&reply.payload)? {
        Reply::Ok { result, .. } => result.entries.len(),
        Reply::Err { error, .. } => bail!("find failed: {error}"),
    };
    ensure!(reply_entries <= matching, "find gave {reply_entries} entries, {matching} agents match");
    let responder_nats = osp_cli::connect::client(url).await?;
    let requests = responder_nats.queue_subscribe(RAW_QUERY_SUBJECT, "q".into()).await?;
    let headers = reply.headers.clone().unwrap_or_default();
    let responder = tokio::spawn(respond_raw(requests, responder_nats, headers, reply.payload.clone()));
    request.wait_for_responder(client.nats(), RAW_QUERY_SUBJECT).await?;

    let registry = client.registry();
    let (registry, query, request, nats, find_subject) = (&registry, &query, &request, client.nats(), &find_subject);
    let ours: Call = Box::new(move || {
        async move {
            registry.find(query).await?;
            Ok(())
        }
        .boxed()
    });
    let raw: Call = Box::new(move || request.send(nats, RAW_QUERY_SUBJECT).boxed());
    let undecoded: Call = Box::new(move || request.send(nats, find_subject).boxed());
    let [latency, raw_latency, undecoded_latency] =
        sequential([&ours, &raw, &undecoded], WARMUP_QUERIES, args.queries).await?;
    concurrent(&ours, WARMUP_QUERIES, args.concurrency).await?;
    concurrent(&raw, WARMUP_QUERIES, args.concurrency).await?;
    let (mut ours_time, mut raw_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        raw_time = raw_time.min(concurrent(&raw, args.queries, args.concurrency).await?);
        ours_time = ours_time.min(concurrent(&ours, args.queries, args.concurrency).await?);
    }
    responder.abort();

    Ok(Finds {
        capability: capability(wanted),
        matching,
        reply_entries,
        reply_bytes: reply.payload.len(),
        qps: rate(args.queries, ours_time),
        latency,
        raw_qps: rate(args.queries, raw_time),
        raw_latency,
        undecoded_latency,
        decode_us: decode_time(&reply.payload)?,
    })
}

/// The capability named by its index in the pool.
fn capability(index: usize) -> String {
    format!("cap-{index:03}")
}

/// The pool indices of agent `agent`'s capabilities: distinct, spread evenly, the same on
/// every run.
fn capabilities_of(agent: usize, pool: usize) -> [usize; PER_AGENT] {
    let mut state = agent as u64;
    let mut picked = [usize::MAX; PER_AGENT];
    let mut count = 0;
    while count < PER_AGENT {
        let candidate = (splitmix64(&mut state) % pool as u64) as usize;
        if !picked[..count].contains(&candidate) {
            picked[count] = candidate;
            count += 1;
        }
    }
    picked
}

/// One step of SplitMix64: a small, well-mixed deterministic sequence.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The agent card of benchmark agent `i`, as an agent would register it.
fn agent_entry(i: usize, pool: usize) -> anyhow::Result<EntryDoc> {
    let regions = ["eu-west", "us-east", "ap-south"];
    Ok(Agent::builder(format!("agent-{i:05}"))
        .description(format!("benchmark agent {i}"))
        .capabilities(capabilities_of(i, pool).map(capability))
        .max_concurrency(4)
        .version("1.0.0")
        .card_field("endpoint", json!({ "region": regions[i % regions.len()] }))
        .entry()?)
}

/// A warm-up entry: the same card, in a registry `find` on `agents` does not read.
fn warmup_entry(i: usize, pool: usize) -> anyhow::Result<EntryDoc> {
    let agent = agent_entry(i, pool)?;
    Ok(EntryDoc::new("bench-warmup", &format!("warm-{i:05}"), agent.description, agent.resource, None)?)
}

/// The progress bar of the registrations: on stderr, and only when that is a terminal.
fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("registering [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

/// How a run of calls went: how long it took and each call's latency.
struct Timed {
    elapsed: Duration,
    latency: Percentiles,
}

/// Registers `entries` through the client, `window` commands in flight.
async fn register_all(
    registry: &osp_client::Registry,
    entries: &[EntryDoc],
    window: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut calls = futures::stream::iter(entries)
        .map(|entry| async move {
            let sent = Instant::now();
            registry.register(entry).await.with_context(|| format!("registering {}", entry.name))?;
            Ok::<_, anyhow::Error>(sent.elapsed())
        })
        .buffer_unordered(window);
    let mut latencies = Vec::with_capacity(entries.len());
    while let Some(latency) = calls.next().await {
        latencies.push(latency?);
        bar.inc(1);
    }
    Ok(Timed { elapsed: started.elapsed(), latency: percentiles(&mut latencies) })
}

/// A stream for the raw baseline, configured like the command inbox.
async fn create_raw_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    let inbox = js.get_stream(INBOX_STREAM).await.context("reading the inbox stream's configuration")?;
    let config = jetstream::stream::Config {
        name: RAW_STREAM.to_owned(),
        subjects: vec!["bench.raw.>".to_owned()],
        description: None,
        ..inbox.cached_info().config.clone()
    };
    js.create_stream(config).await.context("creating the raw baseline's stream")?;
    Ok(())
}

/// Raw JetStream: `count` messages of `bytes` B with a message id and the headers a
/// command carries, publish and wait for the ack, `window` in flight.
async fn raw_publish(js: &jetstream::Context, count: usize, window: usize, bytes: usize) -> anyhow::Result<Timed> {
    let payload = Bytes::from(vec![b'x'; bytes]);
    let reply_to = js.client().new_inbox();
    let started = Instant::now();
    let mut publishes = futures::stream::iter(0..count)
        .map(|_| {
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(uuid::Uuid::now_v7().to_string())
                .header(headers::ACTOR, "service:bench")
                .header(headers::REPLY_TO, reply_to.as_str());
            async move {
                let sent = Instant::now();
                js.send_publish(RAW_COMMAND_SUBJECT, publish).await?.await?;
                Ok::<_, anyhow::Error>(sent.elapsed())
            }
        })
        .buffer_unordered(window);
    let mut latencies = Vec::with_capacity(count);
    while let Some(latency) = publishes.next().await {
        latencies.push(latency.context("raw publish")?);
    }
    Ok(Timed { elapsed: started.elapsed(), latency: percentiles(&mut latencies) })
}

/// Counts the JetStream API requests anyone sends (`$JS.API.>`), by kind, from a
/// subscription of its own: publishes to streams are not API requests; pulls
/// (`CONSUMER.MSG.NEXT`) and lookups (`STREAM.MSG.GET`) are.
struct ApiTap {
    counts: tokio::task::JoinHandle<BTreeMap<String, u64>>,
    stop: tokio_util::sync::CancellationToken,
}

impl ApiTap {
    async fn start(url: &str) -> anyhow::Result<ApiTap> {
        let nats = osp_cli::connect::client(url).await?;
        let mut requests = nats.subscribe("$JS.API.>").await?;
        nats.flush().await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let counts = tokio::spawn(async move {
            let mut counts = BTreeMap::new();
            loop {
                let request = tokio::select! {
                    () = stopped.cancelled() => break,
                    request = requests.next() => match request { Some(request) => request, None => break },
                };
                *counts.entry(api_kind(&request.subject)).or_insert(0) += 1;
            }
            drop(nats);
            counts
        });
        Ok(ApiTap { counts, stop })
    }

    /// What it counted.
    async fn stop(self) -> BTreeMap<String, u64> {
        self.stop.cancel();
        self.counts.await.unwrap_or_default()
    }
}

/// `$JS.API.STREAM.MSG.GET.OSP_EVENTS` → `STREAM.MSG.GET`; `$JS.API.STREAM.INFO.X` →
/// `STREAM.INFO`: the request without the names it addresses.
fn api_kind(subject: &str) -> String {
    let tokens: Vec<&str> = subject.split('.').skip(2).collect();
    let keep = if tokens.get(1) == Some(&"MSG") { 3 } else { 2 };
    tokens.into_iter().take(keep).collect::<Vec<_>>().join(".")
}

/// A query as the client sends it (headers and payload), to send raw.
struct RawRequest {
    headers: HeaderMap,
    payload: Bytes,
}

impl RawRequest {
    fn like(client: &osp_client::Client, query: &FindQuery) -> anyhow::Result<RawRequest> {
        let mut headers = HeaderMap::new();
        headers.insert(headers::MIN_SEQ, client.seen().to_string().as_str());
        Ok(RawRequest { headers, payload: Encoding::MessagePack.encode(query)?.into() })
    }

    /// One core-NATS request to `subject`, reply not decoded.
    async fn send(&self, nats: &async_nats::Client, subject: &str) -> anyhow::Result<()> {
        let reply = nats.request_with_headers(subject.to_owned(), self.headers.clone(), self.payload.clone()).await?;
        std::hint::black_box(reply.payload.len());
        Ok(())
    }

    /// Returns once something answers on `subject` (a new subscription on another
    /// connection takes a moment to reach the server).
    async fn wait_for_responder(&self, nats: &async_nats::Client, subject: &str) -> anyhow::Result<()> {
        for _ in 0..100 {
            if self.send(nats, subject).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the raw responder on {subject} does not answer")
    }
}

/// The raw responder: answers every request with `payload` and `headers`, one at a
/// time, the way a query endpoint does.
async fn respond_raw(
    mut requests: async_nats::Subscriber,
    nats: async_nats::Client,
    headers: HeaderMap,
    payload: Bytes,
) {
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            if let Err(error) = nats.publish_with_headers(reply, headers.clone(), payload.clone()).await {
                tracing::warn!(%error, "raw responder could not answer");
            }
        }
    }
}

/// Median time to decode the reply into a page, as the client does, in microseconds.
fn decode_time(reply: &[u8]) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(WARMUP_QUERIES);
    for _ in 0..WARMUP_QUERIES {
        let started = Instant::now();
        let page = Encoding::MessagePack.decode::<Reply<Page>>(reply)?;
        times.push(started.elapsed());
        std::hint::black_box(page);
    }
    Ok(percentiles(&mut times).p50)
}

/// A call to time: one query, its reply awaited.
type Call<'a> = Box<dyn Fn() -> BoxFuture<'a, anyhow::Result<()>> + 'a>;

/// Latency of each of `calls`, one call at a time, taking turns (in a rotating order)
/// so that all of them meet the same conditions.
async fn sequential<const N: usize>(
    calls: [&Call<'_>; N],
    warmup: usize,
    samples: usize,
) -> anyhow::Result<[Percentiles; N]> {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for round in 0..warmup + samples {
        for turn in 0..N {
            let which = (round + turn) % N;
            let started = Instant::now();
            calls[which]().await?;
            if round >= warmup {
                times[which].push(started.elapsed());
            }
        }
    }
    Ok(times.map(|mut times| percentiles(&mut times)))
}

/// Time for `count` calls, `concurrency` in flight.
async fn concurrent(call: &Call<'_>, count: usize, concurrency: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut calls = futures::stream::iter(0..count).map(|_| call()).buffer_unordered(concurrency);
    while let Some(done) = calls.next().await {
        done?;
    }
    Ok(started.elapsed())
}

/// What the registration phase measured.
struct Registrations {
    per_sec: f64,
    latency: Percentiles,
    raw_per_sec: f64,
    raw_latency: Percentiles,
    /// JetStream API requests per registration, by kind.
    api_requests: BTreeMap<String, f64>,
}

/// What the find phase measured.
struct Finds {
    capability: String,
    /// Agents holding the capability.
    matching: usize,
    reply_entries: usize,
    reply_bytes: usize,
    qps: f64,
    latency: Percentiles,
    raw_qps: f64,
    raw_latency: Percentiles,
    /// The registry's own reply, asked raw: no client-side decoding.
    undecoded_latency: Percentiles,
    /// Median time to decode one reply as the client does.
    decode_us: f64,
}

struct Figures {
    command_bytes: usize,
    registrations: Registrations,
    finds: Finds,
}

impl Figures {
    fn register_ratio(&self) -> f64 {
        self.registrations.per_sec / self.registrations.raw_per_sec
    }
    fn find_p50_ratio(&self) -> f64 {
        self.finds.latency.p50 / self.finds.raw_latency.p50
    }
    fn find_p99_ratio(&self) -> f64 {
        self.finds.latency.p99 / self.finds.raw_latency.p99
    }
    fn find_qps_ratio(&self) -> f64 {
        self.finds.qps / self.finds.raw_qps
    }
    fn meets_targets(&self) -> bool {
        self.find_p99_ratio() <= FIND_P99_TARGET
    }

    fn report(&self, args: &RegistryArgs, server_version: &str) -> serde_json::Value {
        let (r, f) = (&self.registrations, &self.finds);
        let api: serde_json::Map<_, _> =
            r.api_requests.iter().map(|(kind, n)| (kind.clone(), json!(round2(*n)))).collect();
        json!({
            "benchmark": "registry",
            "server_version": server_version,
            "agents": args.agents,
            "capabilities": args.capabilities,
            "capabilities_per_agent": PER_AGENT,
            "window": args.window,
            "queries": args.queries,
            "concurrency": args.concurrency,
            "limit": args.limit,
            "register_payload_bytes": self.command_bytes,
            "registrations_per_sec": round2(r.per_sec),
            "register_p50_us": round2(r.latency.p50),
            "register_p99_us": round2(r.latency.p99),
            "raw_js_publish_per_sec": round2(r.raw_per_sec),
            "raw_js_publish_p50_us": round2(r.raw_latency.p50),
            "raw_js_publish_p99_us": round2(r.raw_latency.p99),
            "register_ratio": round2(self.register_ratio()),
            "js_api_requests_per_registration": api,
            "capability": f.capability,
            "matching_agents": f.matching,
            "reply_entries": f.reply_entries,
            "reply_bytes": f.reply_bytes,
            "find_qps": round2(f.qps),
            "find_p50_us": round2(f.latency.p50),
            "find_p99_us": round2(f.latency.p99),
            "raw_qps": round2(f.raw_qps),
            "raw_p50_us": round2(f.raw_latency.p50),
            "raw_p99_us": round2(f.raw_latency.p99),
            "find_p50_ratio": round2(self.find_p50_ratio()),
            "find_p99_ratio": round2(self.find_p99_ratio()),
            "find_qps_ratio": round2(self.find_qps_ratio()),
            "find_undecoded_p50_us": round2(f.undecoded_latency.p50),
            "find_undecoded_p99_us": round2(f.undecoded_latency.p99),
            "reply_decode_us": round2(f.decode_us),
            "targets": { "find_p99_ratio": format!("<= {FIND_P99_TARGET}") },
            "meets_targets": self.meets_targets(),
        })
    }

    fn print_table(&self, args: &RegistryArgs) {
        let (r, f) = (&self.registrations, &self.finds);
        let mut table = Table::new("raw NATS", "osp registry");
        table.rate("registrations", r.raw_per_sec, r.per_sec, Some(self.register_ratio()), "");
        table.micros("register latency p50", r.raw_latency.p50, r.latency.p50, None, "");
        table.micros("register latency p99", r.raw_latency.p99, r.latency.p99, None, "");
        table.rate("find queries", f.raw_qps, f.qps, Some(self.find_qps_ratio()), "");
        table.micros("find latency p50", f.raw_latency.p50, f.latency.p50, Some(self.find_p50_ratio()), "");
        let target = format!("<= {FIND_P99_TARGET}");
        table.micros("find latency p99", f.raw_latency.p99, f.latency.p99, Some(self.find_p99_ratio()), &target);
        table.print(self.meets_targets());
        println!(
            "registrations: {} agents, {} B commands, {} in flight; raw = JetStream publish + ack, same size and window",
            args.agents, self.command_bytes, args.window
        );
        let api: Vec<String> = r.api_requests.iter().map(|(kind, n)| format!("{kind} {n:.2}")).collect();
        println!(
            "JetStream API requests per registration: {}",
            if api.is_empty() { "none".into() } else { api.join(", ") }
        );
        println!(
            "find {{capabilities: {}}}: {} of {} agents match; a reply holds {} entries, {} B; \
             raw = core NATS request/reply of the same bytes; {} in flight for queries/s",
            f.capability, f.matching, args.agents, f.reply_entries, f.reply_bytes, args.concurrency
        );
        println!(
            "find without client-side decoding: p50 {:.0} us, p99 {:.0} us; decoding one reply: {:.0} us",
            f.undecoded_latency.p50, f.undecoded_latency.p99, f.decode_us
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_distinct_deterministic_and_spread() {
        let pool = 100;
        let mut holders = vec![0usize; pool];
        for agent in 0..10_000 {
            let picked = capabilities_of(agent, pool);
            assert_eq!(picked, capabilities_of(agent, pool));
            assert!(picked.iter().all(|&c| c < pool));
            assert!(picked[0] != picked[1] && picked[1] != picked[2] && picked[0] != picked[2], "{picked:?}");
            picked.iter().for_each(|&c| holders[c] += 1);
        }
        // 300 holders each on average.
        assert!(holders.iter().all(|&n| (200..400).contains(&n)), "{holders:?}");
        assert_eq!(capabilities_of(7, 3).iter().copied().collect::<std::collections::BTreeSet<_>>().len(), 3);
    }

    #[test]
    fn api_requests_are_counted_by_kind() {
        assert_eq!(api_kind("$JS.API.STREAM.MSG.GET.OSP_EVENTS"), "STREAM.MSG.GET");
        assert_eq!(api_kind("$JS.API.CONSUMER.MSG.NEXT.OSP_INBOX.inbox-registry"), "CONSUMER.MSG.NEXT");
        assert_eq!(api_kind("$JS.API.DIRECT.GET.OSP_EVENTS"), "DIRECT.GET");
        assert_eq!(api_kind("$JS.API.STREAM.INFO.OSP_INBOX"), "STREAM.INFO");
        assert_eq!(api_kind("$JS.API.INFO"), "INFO");
    }

    #[test]
    fn agent_cards_are_valid_and_name_their_capabilities() {
        let entry = agent_entry(42, 100).unwrap();
        assert_eq!(entry.name.to_string(), "agent-00042");
        let card = osp_protocol::registry::AgentCard::from_resource(&entry.resource).unwrap();
        let expected: Vec<String> = capabilities_of(42, 100).map(capability).into();
        assert_eq!(card.capabilities.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>(), expected);
        assert_eq!(warmup_entry(1, 100).unwrap().registry.to_string(), "bench-warmup");
    }
}
