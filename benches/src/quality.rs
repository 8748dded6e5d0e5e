//! `osp bench quality`: rule evaluations/s for the 20 built-in rules of
//! [`osp_quality::rules::sample_catalog`] on [`osp_quality::rules::sample_output`] padded
//! to 2 KB ([`OUTPUT_BYTES`]), in one run:
//!
//! - the pure evaluator, on this thread: the catalog prepared (compiled) once, then
//!   evaluated against the output for `--eval-duration` (rule evaluations/s); what
//!   preparing the catalog costs; and what [`osp_quality::audit::record`], the decision a
//!   check makes in the service, costs per check;
//! - the service, in-process on its own connection: the catalog added through
//!   `osp_client`, then `--checks` checks of the output against all 20 rules,
//!   `--in-flight` at once (checks/s, and rule evaluations/s = checks/s × 20), and
//!   `--samples` checks one at a time (latency p50/p99); vs raw JetStream publish-and-ack
//!   of the check command's bytes, with a message id and a command's headers, to a stream
//!   configured like the inbox, same count and in-flight, and one at a time taking turns
//!   with the checks.
//!
//!
//! Then the latency a gated run adds over an ungated one: with the scheduler and an
//! in-process agent answering every task with the 2 KB output, `--runs` single-task runs
//! one at a time, taking turns: ungated, and gated on the catalog's rules the output
//! passes (`options.checks`), each timed from submit to its end as the client sees it.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use osp_client::CheckRequest;
use osp_eventlog::INBOX_STREAM;
use osp_protocol::quality::{Check, Rule, RuleResult};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::RunOptions;
use osp_protocol::{headers, Encoding, Timestamp, Token};
use osp_quality::rules::{prepare, sample_catalog, sample_output, PreparedRule};
use serde_json::{json, Value};

use crate::stats::{percentiles, rate, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench quality`.
#[derive(Args)]
pub struct QualityArgs {
    /// Checks sent through the service for checks/s (and raw publishes, as many).
    #[arg(long, default_value_t = 10_000)]
    checks: usize,
    /// Checks (and raw publishes) in flight at once for checks/s.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Checks (and raw publishes) one at a time, for latency.
    #[arg(long, default_value_t = 1_000)]
    samples: usize,
    /// Runs of each kind (ungated, gated), one at a time, for the gated run's added latency.
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// How long the pure evaluator evaluates the catalog (e.g. 2s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    eval_duration: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The size of the output checked, as compact JSON.
const OUTPUT_BYTES: usize = 2048;
/// Checks (and raw publishes) to warm up with, not counted.
const WARMUP: usize = 200;
/// Times the catalog is prepared, and `record` made, to time them.
const PREPARE_ROUNDS: usize = 300;
/// The capability of the bench's agent, which answers with the output.
const OUTPUT_CAPABILITY: &str = "bench-output";
/// How long a bench run is waited for.
const RUN_WAIT: Duration = Duration::from_secs(30);
/// The raw baseline's stream and subject.
const RAW_STREAM: &str = "BENCH_RAW_QUALITY";
const RAW_SUBJECT: &str = "bench.raw.check";

/// Runs the benchmark and prints its figures.
pub async fn run(args: QualityArgs) -> anyhow::Result<ExitCode> {
    if args.checks == 0 || args.in_flight == 0 || args.samples == 0 || args.runs == 0 || args.eval_duration.is_zero() {
        bail!("--checks, --in-flight, --samples, --runs and --eval-duration must be more than zero");
    }
    let workload = Workload::sample()?;
    let (binary, server) = crate::start_server().await?;
    let url = server.url();
    eprintln!(
        "bench quality: nats-server {} ({}), {} rules, output {} B, check command {} B, {} in flight",
        binary.version,
        binary.source,
        workload.rules.len(),
        workload.output_bytes,
        workload.command_bytes,
        args.in_flight
    );

    let evaluator = measure_evaluator(&workload, args.eval_duration)?;
    let service = osp_quality::Quality::start(osp_cli::connect::client(&url).await?, osp_quality::Config::default())
        .await
        .context("starting the quality service")?;
    let client = osp_client::Client::new(osp_cli::connect::client(&url).await?).with_actor("service:bench");
    let checks = measure_service(&client, &workload, &evaluator.results, &args).await?;
    let gated = measure_gated(&client, &url, &workload, &evaluator.results, args.runs).await?;
    service.shutdown().await;
    drop(server);

    let figures = Figures { workload, evaluator, checks, gated };
    if args.json {
        println!("{}", figures.report(&args, &binary.version.to_string()));
    } else {
        figures.print_table(&args);
    }
    Ok(ExitCode::SUCCESS)
}

/// What is checked: the sample catalog, the sample output, and their sizes.
struct Workload {
    rules: Vec<Rule>,
    names: Vec<String>,
    output: Value,
    /// The output as compact JSON.
    output_bytes: usize,
    /// A check command of the output against every rule, as the client sends it.
    command_bytes: usize,
}

impl Workload {
    fn sample() -> anyhow::Result<Workload> {
        let rules = sample_catalog();
        let names: Vec<String> = rules.iter().map(|rule| rule.name.clone()).collect();
        let output = padded(sample_output(), OUTPUT_BYTES)?;
        let output_bytes = serde_json::to_vec(&output)?.len();
        let mut workload = Workload { rules, names, output, output_bytes, command_bytes: 0 };
        workload.command_bytes =
            Encoding::MessagePack.encode(&workload.check(&uuid::Uuid::now_v7().to_string())?)?.len();
        Ok(workload)
    }

    /// The check command's body for audit id `id`, as the client builds it.
    fn check(&self, id: &str) -> anyhow::Result<Check> {
        let rules = self.names.iter().map(|name| Token::new("rule", name.as_str())).collect::<Result<_, _>>()?;
        Ok(Check {
            judge: None,
            timeout_ms: None,
            audit_id: Token::new("audit_id", id)?,
            output: self.output.clone(),
            rules,
            objectives: Vec::new(),
            execution_id: None,
            agent_id: None,
            metadata: None,
        })
    }

    /// A check request of the output against every rule, under a fresh audit id.
    fn request(&self) -> CheckRequest {
        CheckRequest::new(self.output.clone(), self.names.iter().cloned())
    }
}

/// `output` (an object) with an `appendix` of plain prose making it `bytes` long as
/// compact JSON (or as it is, if it is that long already). The prose changes no rule's
/// verdict (no placeholder, no apology, no e-mail), only how much text there is to read.
fn padded(mut output: Value, bytes: usize) -> anyhow::Result<Value> {
    const PROSE: &str = "The rollout proceeds in stages and each stage is observed before the next. ";
    let object = output.as_object_mut().context("the sample output is an object")?;
    object.insert("appendix".to_owned(), Value::String(String::new()));
    let missing = bytes.saturating_sub(serde_json::to_vec(&output)?.len());
    let appendix: String = PROSE.chars().cycle().take(missing).collect();
    output["appendix"] = Value::String(appendix);
    Ok(output)
}

/// What the pure evaluator measured, on one thread.
struct Evaluator {
    /// Rules evaluated (prepared once) per second.
    evaluations_per_sec: f64,
    /// Evaluating the whole catalog once, prepared.
    evaluate_catalog: Percentiles,
    /// Preparing (checking and compiling) the whole catalog once.
    prepare_catalog: Percentiles,
    /// `audit::record` of one check against the whole catalog: the service's decision
    /// (with its memo of prepared rules, warm after the first round).
    record: Percentiles,
    /// How many of the catalog's rules pass on the output.
    passed: usize,
    /// The results, to compare with the service's.
    results: Vec<RuleResult>,
}

/// The pure evaluator: preparing, evaluating, and the decision of a check.
fn measure_evaluator(workload: &Workload, duration: Duration) -> anyhow::Result<Evaluator> {
    let prepared = prepare_all(&workload.rules)?;
    let results: Vec<RuleResult> = prepared.iter().map(|rule| rule.check(&workload.output)).collect();
    let passed = results.iter().filter(|result| result.passed).count();

    let mut evaluate_times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let timer = Instant::now();
        for rule in &prepared {
            std::hint::black_box(rule.check(std::hint::black_box(&workload.output)));
        }
        evaluate_times.push(timer.elapsed());
    }
    let evaluations_per_sec = rate(evaluate_times.len() * prepared.len(), started.elapsed());

    let prepare_times = timed(PREPARE_ROUNDS, || prepare_all(&workload.rules).map(drop))?;
    let check = workload.check("bench-record")?;
    let record_times = timed(PREPARE_ROUNDS, || {
        std::hint::black_box(osp_quality::audit::record(&check, &workload.rules, Timestamp::now()));
        Ok(())
    })?;
    Ok(Evaluator {
        evaluations_per_sec,
        evaluate_catalog: percentiles(&mut evaluate_times),
        prepare_catalog: percentiles(&mut prepare_times.clone()),
        record: percentiles(&mut record_times.clone()),
        passed,
        results,
    })
}

/// Every rule prepared afresh, as a check did before prepared rules were memoised.
fn prepare_all(rules: &[Rule]) -> anyhow::Result<Vec<PreparedRule>> {
    rules.iter().map(|rule| prepare(rule).with_context(|| format!("preparing rule {}", rule.name))).collect()
}

/// The time of each of `rounds` calls of `call`.
fn timed(rounds: usize, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        call()?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// How a run of calls went: how long it took and each call's latency.
struct Timed {
    elapsed: Duration,
    latency: Percentiles,
}

/// What the service measured, next to raw JetStream.
struct Checks {
    per_sec: f64,
    loaded_latency: Percentiles,
    raw_per_sec: f64,
    raw_loaded_latency: Percentiles,
    latency: Percentiles,
    raw_latency: Percentiles,
    /// A check's audit entry: its opinion, and whether its results are the pure
    /// evaluator's.
    opinion: String,
}

/// Checks through the service next to raw publishes, after adding the catalog and a
/// warm-up of both.
async fn measure_service(
    client: &osp_client::Client,
    workload: &Workload,
    expected: &[RuleResult],
    args: &QualityArgs,
) -> anyhow::Result<Checks> {
    let quality = client.quality();
    for rule in &workload.rules {
        quality.add_rule(rule).await.with_context(|| format!("adding rule {}", rule.name))?;
    }
    let js = jetstream::new(client.nats().clone());
    create_raw_stream(&js).await?;
    let raw = RawPublisher { js: &js, payload: Bytes::from(vec![b'x'; workload.command_bytes]) };

    raw.publish_all(WARMUP, args.in_flight).await?;
    check_all(&quality, workload, WARMUP, args.in_flight, &indicatif::ProgressBar::hidden()).await?;
    let raw_loaded = raw.publish_all(args.checks, args.in_flight).await?;
    let bar = progress(args.checks as u64);
    let loaded = check_all(&quality, workload, args.checks, args.in_flight, &bar).await?;
    bar.finish_and_clear();
    let (latency, raw_latency) = one_at_a_time(&quality, &raw, workload, args.samples).await?;

    let opinion = checked_opinion(&quality, workload, expected).await?;
    Ok(Checks {
        per_sec: rate(args.checks, loaded.elapsed),
        loaded_latency: loaded.latency,
        raw_per_sec: rate(args.checks, raw_loaded.elapsed),
        raw_loaded_latency: raw_loaded.latency,
        latency,
        raw_latency,
        opinion,
    })
}

/// Sends `count` checks, `in_flight` at once; each must give results for every rule.
async fn check_all(
    quality: &osp_client::Quality,
    workload: &Workload,
    count: usize,
    in_flight: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut checks = futures::stream::iter(0..count).map(|_| one_check(quality, workload)).buffer_unordered(in_flight);
    let mut latencies = Vec::with_capacity(count);
    while let Some(latency) = checks.next().await {
        latencies.push(latency?);
        bar.inc(1);
    }
    Ok(Timed { elapsed: started.elapsed(), latency: percentiles(&mut latencies) })
}

/// How long a check of built-in rules (recorded at once) is waited for.
const CHECK_WAIT: Duration = Duration::from_secs(30);

/// One check of the output against every rule, timed.
async fn one_check(quality: &osp_client::Quality, workload: &Workload) -> anyhow::Result<Duration> {
    let request = workload.request();
    let sent = Instant::now();
    let entry = quality.check_and_wait(&request, CHECK_WAIT).await.context("checking the output")?;
    let elapsed = sent.elapsed();
    ensure!(
        entry.rule_results.len() == workload.rules.len(),
        "a check of {} rules gave {} results",
        workload.rules.len(),
        entry.rule_results.len()
    );
    Ok(elapsed)
}

/// Checks and raw publishes one at a time, taking turns, so both meet the same conditions.
async fn one_at_a_time(
    quality: &osp_client::Quality,
    raw: &RawPublisher<'_>,
    workload: &Workload,
    samples: usize,
) -> anyhow::Result<(Percentiles, Percentiles)> {
    let (mut ours, mut raws) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let bar = progress(samples as u64);
    for _ in 0..samples {
        raws.push(raw.publish().await?);
        ours.push(one_check(quality, workload).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((percentiles(&mut ours), percentiles(&mut raws)))
}

/// The opinion of one more check, whose results must be the pure evaluator's, `expected`:
/// the service measured is the evaluator measured.
async fn checked_opinion(
    quality: &osp_client::Quality,
    workload: &Workload,
    expected: &[RuleResult],
) -> anyhow::Result<String> {
    let entry = quality.check_and_wait(&workload.request(), CHECK_WAIT).await?;
    ensure!(entry.rule_results == expected, "the service's results differ from the pure evaluator's");
    Ok(serde_json::to_value(entry.opinion)?.as_str().unwrap_or_default().to_owned())
}

/// Ungated and gated runs, one at a time, taking turns.
struct Gated {
    /// The rules the gated runs are checked against (those the output passes).
    rules: usize,
    ungated: Percentiles,
    gated: Percentiles,
}

impl Gated {
    fn report(&self, runs: usize) -> serde_json::Value {
        json!({
            "runs": runs,
            "rules": self.rules,
            "ungated_p50_us": round2(self.ungated.p50),
            "ungated_p99_us": round2(self.ungated.p99),
            "gated_p50_us": round2(self.gated.p50),
            "gated_p99_us": round2(self.gated.p99),
            "added_p50_us": round2(self.gated.p50 - self.ungated.p50),
            "added_p99_us": round2(self.gated.p99 - self.ungated.p99),
        })
    }
}

/// Starts a scheduler and an agent answering with the output, then times `runs` runs of
/// each kind from submit to end.
async fn measure_gated(
    client: &osp_client::Client,
    url: &str,
    workload: &Workload,
    results: &[RuleResult],
    runs: usize,
) -> anyhow::Result<Gated> {
    let scheduler = osp_scheduler::Scheduler::start(osp_cli::connect::client(url).await?, Default::default())
        .await
        .context("starting the scheduler")?;
    let output = workload.output.clone();
    let agent = osp_client::Worker::builder(client, "bench-agent")
        .capability(OUTPUT_CAPABILITY)
        .max_concurrency(4)
        .start(move |_task: osp_client::Task| {
            let output = output.clone();
            async move { Ok::<_, osp_client::TaskFailure>(output) }
        })
        .await
        .context("starting the bench's agent")?;
    let passing: Vec<String> = results.iter().filter(|r| r.passed).map(|r| r.rule_name.clone()).collect();
    let plain = RunOptions { wait_for_agent: true, ..RunOptions::default() };
    let checked =
        RunOptions { checks: Some(Box::new(serde_json::from_value(json!({"rules": passing}))?)), ..plain.clone() };
    let scheduler_client = client.scheduler();
    let (mut ungated, mut gated) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let bar = progress(2 * runs as u64);
    for i in 0..runs + WARMUP / 10 {
        for (options, times) in [(&plain, &mut ungated), (&checked, &mut gated)] {
            let submission = osp_client::Submission::new(OUTPUT_CAPABILITY, json!({})).options(options.clone());
            let sent = Instant::now();
            scheduler_client.submit(&submission).await.context("submitting a bench run")?;
            let run = scheduler_client.wait(submission.id(), RUN_WAIT).await.context("waiting for a bench run")?;
            ensure!(run.status() == RunStatus::Completed, "a bench run ended {}: {:?}", run.status(), run.error);
            if i >= WARMUP / 10 {
                times.push(sent.elapsed());
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    agent.shutdown().await;
    scheduler.shutdown().await;
    Ok(Gated { rules: passing.len(), ungated: percentiles(&mut ungated), gated: percentiles(&mut gated) })
}

/// A stream for the raw baseline, configured like the command inbox.
async fn create_raw_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    let inbox = js.get_stream(INBOX_STREAM).await.context("reading the inbox stream's configuration")?;
    let config = jetstream::stream::Config {
        name: RAW_STREAM.to_owned(),
        subjects: vec![RAW_SUBJECT.to_owned()],
        description: None,
        ..inbox.cached_info().config.clone()
    };
    js.create_stream(config).await.context("creating the raw baseline's stream")?;
    Ok(())
}

/// Raw JetStream: messages of a check command's size with a message id and the headers a
/// command carries, published and acked.
struct RawPublisher<'a> {
    js: &'a jetstream::Context,
    payload: Bytes,
}

impl RawPublisher<'_> {
    /// One publish, its ack awaited, timed.
    async fn publish(&self) -> anyhow::Result<Duration> {
        let publish = PublishMessage::build()
            .payload(self.payload.clone())
            .message_id(uuid::Uuid::now_v7().to_string())
            .header(headers::ACTOR, "service:bench")
            .header(headers::REPLY_TO, "_INBOX.bench");
        let sent = Instant::now();
        self.js.send_publish(RAW_SUBJECT, publish).await?.await.context("raw publish")?;
        Ok(sent.elapsed())
    }

    /// `count` publishes, `in_flight` at once.
    async fn publish_all(&self, count: usize, in_flight: usize) -> anyhow::Result<Timed> {
        let started = Instant::now();
        let mut publishes = futures::stream::iter(0..count).map(|_| self.publish()).buffer_unordered(in_flight);
        let mut latencies = Vec::with_capacity(count);
        while let Some(latency) = publishes.next().await {
            latencies.push(latency?);
        }
        Ok(Timed { elapsed: started.elapsed(), latency: percentiles(&mut latencies) })
    }
}

/// A progress bar on stderr, only when that is a terminal.
fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("checking [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

struct Figures {
    workload: Workload,
    evaluator: Evaluator,
    checks: Checks,
    gated: Gated,
}

impl Figures {
    fn rules(&self) -> f64 {
        self.workload.rules.len() as f64
    }
    /// Rule evaluations/s through the service: each check evaluates every rule.
    fn service_evaluations_per_sec(&self) -> f64 {
        self.checks.per_sec * self.rules()
    }
    fn checks_ratio(&self) -> f64 {
        self.checks.per_sec / self.checks.raw_per_sec
    }
    fn p50_ratio(&self) -> f64 {
        self.checks.latency.p50 / self.checks.raw_latency.p50
    }
    fn p99_ratio(&self) -> f64 {
        self.checks.latency.p99 / self.checks.raw_latency.p99
    }
    /// How much of a check's decision (`record`) preparing the catalog would be, were it
    /// prepared on every check.
    fn prepare_share_of_record(&self) -> f64 {
        let e = &self.evaluator;
        e.prepare_catalog.p50 / (e.prepare_catalog.p50 + e.evaluate_catalog.p50)
    }
    fn report(&self, args: &QualityArgs, server_version: &str) -> serde_json::Value {
        let (w, e, c) = (&self.workload, &self.evaluator, &self.checks);
        json!({
            "benchmark": "quality",
            "server_version": server_version,
            "rules": w.rules.len(),
            "rules_passing": e.passed,
            "output_bytes": w.output_bytes,
            "check_command_bytes": w.command_bytes,
            "checks": args.checks,
            "in_flight": args.in_flight,
            "samples": args.samples,
            "evaluator_evaluations_per_sec": round2(e.evaluations_per_sec),
            "evaluator_catalog_p50_us": round2(e.evaluate_catalog.p50),
            "evaluator_catalog_p99_us": round2(e.evaluate_catalog.p99),
            "prepare_catalog_p50_us": round2(e.prepare_catalog.p50),
            "prepare_catalog_p99_us": round2(e.prepare_catalog.p99),
            "record_p50_us": round2(e.record.p50),
            "record_p99_us": round2(e.record.p99),
            "prepare_share_of_uncached_record": round2(self.prepare_share_of_record()),
            "checks_per_sec": round2(c.per_sec),
            "rule_evaluations_per_sec": round2(self.service_evaluations_per_sec()),
            "check_loaded_p50_us": round2(c.loaded_latency.p50),
            "check_loaded_p99_us": round2(c.loaded_latency.p99),
            "check_p50_us": round2(c.latency.p50),
            "check_p99_us": round2(c.latency.p99),
            "raw_js_publish_per_sec": round2(c.raw_per_sec),
            "raw_js_publish_loaded_p50_us": round2(c.raw_loaded_latency.p50),
            "raw_js_publish_loaded_p99_us": round2(c.raw_loaded_latency.p99),
            "raw_js_publish_p50_us": round2(c.raw_latency.p50),
            "raw_js_publish_p99_us": round2(c.raw_latency.p99),
            "checks_ratio": round2(self.checks_ratio()),
            "check_p50_ratio": round2(self.p50_ratio()),
            "check_p99_ratio": round2(self.p99_ratio()),
            "opinion": c.opinion,
            "gated_run": self.gated.report(args.runs),
            "targets": {},
            "meets_targets": true,
        })
    }

    fn print_table(&self, args: &QualityArgs) {
        let (w, e, c) = (&self.workload, &self.evaluator, &self.checks);
        let mut table = Table::new("raw JetStream", "osp quality");
        table.rate("checks", c.raw_per_sec, c.per_sec, Some(self.checks_ratio()), "");
        table.micros("check latency loaded p50", c.raw_loaded_latency.p50, c.loaded_latency.p50, None, "");
        table.micros("check latency loaded p99", c.raw_loaded_latency.p99, c.loaded_latency.p99, None, "");
        table.micros("check latency p50", c.raw_latency.p50, c.latency.p50, Some(self.p50_ratio()), "");
        table.micros("check latency p99", c.raw_latency.p99, c.latency.p99, Some(self.p99_ratio()), "");
        table.print(true);
        println!(
            "rule evaluations/s: {:.0} through the service ({:.0} checks/s x {} rules, {} in flight), \
             {:.0} in the pure evaluator (1 thread)",
            self.service_evaluations_per_sec(),
            c.per_sec,
            w.rules.len(),
            args.in_flight,
            e.evaluations_per_sec
        );
        println!(
            "catalog: {} rules ({} pass, opinion {}), output {} B, check command {} B; \
             raw = JetStream publish + ack of {} B, same count and in flight",
            w.rules.len(),
            e.passed,
            c.opinion,
            w.output_bytes,
            w.command_bytes,
            w.command_bytes
        );
        println!(
            "pure: evaluating the prepared catalog p50 {:.1} us; preparing (compiling) it p50 {:.1} us, \
             {:.0}% of prepare + evaluate, which a check skips once its rules are in the memo; \
             audit::record (a check's decision) p50 {:.1} us, p99 {:.1} us",
            e.evaluate_catalog.p50,
            e.prepare_catalog.p50,
            100.0 * self.prepare_share_of_record(),
            e.record.p50,
            e.record.p99
        );
        let g = &self.gated;
        println!(
            "runs submit -> end, one at a time ({} of each): ungated p50 {:.2} ms, p99 {:.2} ms; gated on {} rules \
             p50 {:.2} ms, p99 {:.2} ms; added p50 {:.2} ms, p99 {:.2} ms",
            args.runs,
            g.ungated.p50 / 1000.0,
            g.ungated.p99 / 1000.0,
            g.rules,
            g.gated.p50 / 1000.0,
            g.gated.p99 / 1000.0,
            (g.gated.p50 - g.ungated.p50) / 1000.0,
            (g.gated.p99 - g.ungated.p99) / 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_padded_output_is_2_kb_and_changes_no_verdict() {
        let output = padded(sample_output(), OUTPUT_BYTES).unwrap();
        assert_eq!(serde_json::to_vec(&output).unwrap().len(), OUTPUT_BYTES);
        let rules = prepare_all(&sample_catalog()).unwrap();
        let verdicts = |output: &Value| rules.iter().map(|rule| rule.check(output).passed).collect::<Vec<_>>();
        assert_eq!(verdicts(&output), verdicts(&sample_output()));
        assert!(verdicts(&output).contains(&false) && verdicts(&output).contains(&true));
    }
}
