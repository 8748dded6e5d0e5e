//! `osp bench context`: the context service on a server of its own, next to a raw
//! JetStream KV bucket measured in the same run:
//!
//! - KV set/s: `--ops` sets of a `--value-bytes` value through the service (a command
//!   through the inbox, decided, appended, answered), `--in-flight` at once, over
//!   `--keys` keys spread over `--scopes` scopes (a scope is an aggregate, so the sets to
//!   one scope are decided one after another); next to `kv.put` of the same sizes and
//!   keys;
//! - KV get/s: `--ops` gets through the service (a query answered from memory); next to
//!   `kv.get`;
//! - search: `--vectors` random vectors of `--dimension` loaded in batches of 1,000, then
//!   `--searches` searches of the top 10, one at a time (p50/p99). Exact search: recall
//!   is 1.0 by construction.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use clap::Args;
use futures::StreamExt;
use osp_client::SearchBy;
use osp_protocol::context::{upsert_batch, Embedding};
use serde_json::json;

use crate::stats::{percentiles, rate, round2, Percentiles};
use crate::table::Table;

/// Options of `osp bench context`.
#[derive(Args)]
pub struct ContextArgs {
    /// Sets and gets through the service (and raw puts and gets, as many).
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
    /// At once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Scopes the keys are spread over (`session:bench-<n>`); the sets to one scope are
    /// decided one after another, those to several side by side.
    #[arg(long, default_value_t = 16)]
    scopes: usize,
    /// Size of a value, as JSON text.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Vectors searched.
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    /// Numbers in each vector searched (384: a small sentence-embedding model's).
    #[arg(long, default_value_t = 384)]
    dimension: usize,
    /// Searches, one at a time.
    #[arg(long, default_value_t = 200)]
    searches: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The scope of the benchmark's vectors.
const SCOPE: &str = "session:bench";
/// The target of the KV ratios.
const KV_TARGET: f64 = 0.5;

/// Runs the benchmark and prints its figures.
pub async fn run(args: ContextArgs) -> anyhow::Result<ExitCode> {
    if [args.ops, args.in_flight, args.keys, args.scopes, args.vectors, args.searches].contains(&0) {
        bail!("--ops, --in-flight, --keys, --scopes, --vectors and --searches must be more than zero");
    }
    let (binary, server) = crate::start_server().await?;
    let url = server.url();
    eprintln!(
        "bench context: nats-server {} ({}), {} ops of {} B, {} in flight, {} keys over {} scopes",
        binary.version, binary.source, args.ops, args.value_bytes, args.in_flight, args.keys, args.scopes
    );
    let service = osp_context::Context::start(osp_cli::connect::client(&url).await?, osp_context::Config::default())
        .await
        .context("starting the context service")?;
    let client = osp_client::Client::new(osp_cli::connect::client(&url).await?).with_actor("user:bench");
    let context = client.context();
    let value = json!("v".repeat(args.value_bytes.saturating_sub(2)));

    let js = jetstream::new(client.nats().clone());
    let kv = js
        .create_key_value(jetstream::kv::Config { bucket: "bench".into(), history: 1, ..Default::default() })
        .await
        .context("creating the raw KV bucket")?;
    let bytes = bytes::Bytes::from(serde_json::to_vec(&value)?);
    let key = |i: usize| format!("k{}", i % args.keys);
    let scope = |i: usize| format!("session:bench-{}", (i % args.keys) % args.scopes);

    let raw_put = throughput(args.ops, args.in_flight, |i| {
        let (kv, bytes, key) = (kv.clone(), bytes.clone(), key(i));
        async move { kv.put(key, bytes).await.map(drop).map_err(anyhow::Error::from) }
    })
    .await?;
    let set = throughput(args.ops, args.in_flight, |i| {
        let (context, value, key, scope) = (context.clone(), value.clone(), key(i), scope(i));
        async move { context.set(&scope, &key, value).await.map(drop).map_err(anyhow::Error::from) }
    })
    .await?;
    let raw_get = throughput(args.ops, args.in_flight, |i| {
        let (kv, key) = (kv.clone(), key(i));
        async move { kv.get(key).await.map(drop).map_err(anyhow::Error::from) }
    })
    .await?;
    let get = throughput(args.ops, args.in_flight, |i| {
        let (context, key, scope) = (context.clone(), key(i), scope(i));
        async move { context.get(&scope, &key).await?.map(drop).context("a key set just now") }
    })
    .await?;

    // Vectors: load, then search one at a time.
    let started = Instant::now();
    let mut seed = 0x2545f4914f6cdd1d_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let per_batch = upsert_batch(args.dimension);
    for batch in 0..args.vectors.div_ceil(per_batch) {
        let entries: Vec<Embedding> = (batch * per_batch..((batch + 1) * per_batch).min(args.vectors))
            .map(|i| Embedding {
                id: format!("v{i}"),
                content: String::new(),
                metadata: None,
                vector: (0..args.dimension).map(|_| random()).collect(),
            })
            .collect();
        context.upsert_embeddings(SCOPE, &entries).await.context("loading vectors")?;
    }
    let load = started.elapsed();
    let mut times = Vec::with_capacity(args.searches);
    for _ in 0..args.searches {
        let query: Vec<f32> = (0..args.dimension).map(|_| random()).collect();
        let sent = Instant::now();
        let found = context.search(SCOPE, SearchBy::Vector(query), 10, None).await.context("searching")?;
        times.push(sent.elapsed());
        anyhow::ensure!(
            found.compared == args.vectors as u64,
            "a search compared {} of {} vectors",
            found.compared,
            args.vectors
        );
    }
    let search = percentiles(&mut times);
    service.shutdown().await;
    drop(server);

    let (set_ratio, get_ratio) = (set / raw_put, get / raw_get);
    let meets = set_ratio >= KV_TARGET && get_ratio >= KV_TARGET;
    if args.json {
        println!(
            "{}",
            json!({
                "benchmark": "context", "server_version": binary.version.to_string(), "ops": args.ops,
                "in_flight": args.in_flight, "keys": args.keys, "scopes": args.scopes, "value_bytes": args.value_bytes,
                "kv_set_per_sec": round2(set), "raw_kv_put_per_sec": round2(raw_put), "kv_set_ratio": round2(set_ratio),
                "kv_get_per_sec": round2(get), "raw_kv_get_per_sec": round2(raw_get), "kv_get_ratio": round2(get_ratio),
                "vectors": args.vectors, "dimension": args.dimension, "vector_load_secs": round2(load.as_secs_f64()),
                "search_top_k": 10, "search_p50_us": round2(search.p50), "search_p99_us": round2(search.p99),
                "search": "exact", "recall": 1.0,
                "targets": {"kv_set_ratio": KV_TARGET, "kv_get_ratio": KV_TARGET}, "meets_targets": meets,
            })
        );
    } else {
        let mut table = Table::new("raw JetStream KV", "osp context");
        table.rate("KV set (put)", raw_put, set, Some(set_ratio), ">= 0.5");
        table.rate("KV get", raw_get, get, Some(get_ratio), ">= 0.5");
        table.print(meets);
        print_search(&args, load, search);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_search(args: &ContextArgs, load: Duration, search: Percentiles) {
    println!(
        "search: {} vectors of {} dimensions (loaded in {:.1} s), top 10, exact (recall 1.0): p50 {:.0} us, p99 {:.0} us",
        args.vectors,
        args.dimension,
        load.as_secs_f64(),
        search.p50,
        search.p99
    );
}

/// Operations per second of `count` calls of `call(i)`, `in_flight` at once.
async fn throughput<F, Fut>(count: usize, in_flight: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut calls = futures::stream::iter(0..count).map(call).buffer_unordered(in_flight);
    while let Some(outcome) = calls.next().await {
        outcome?;
    }
    Ok(rate(count, started.elapsed()))
}
