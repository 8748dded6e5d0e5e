//! An agent in Rust: registers with its card, heartbeats, shows up in `find`, executes
//! the tasks of its capabilities, and unregisters on Ctrl-C.
//!
//! ```sh
//! osp dev                                                    # in another terminal
//! cargo run -p osp-client --example agent -- --name rusty --capability summarize
//! osp agents --live                                          # it is there
//! ```
//!
//! What it does with a task, by capability:
//!
//! - `summarize`: input `{"text": "...", "delay_ms"?: n, "ask"?: question, "fail"?: message}`.
//!   Reports progress sentence by sentence (waiting `delay_ms` between sentences, and
//!   stopping if cancelled), asks `ask` first if given, fails with `fail` if given, and
//!   returns `{"summary": <first sentence>, "sentences": n, "words": n, "answer"?: ...}`:
//!   the same output for the same input, so tests can check it.
//! - `echo`: returns its input.
//! - anything else: fails permanently (kind `unsupported`).

mod common;

use std::time::Duration;

use clap::Parser;
use osp_client::{Agent, Client, LogLevel, Task, TaskFailure, Worker};
use osp_protocol::registry::document::from_json;
use serde_json::{json, Value};

/// A minimal OSP agent.
#[derive(Parser)]
struct Args {
    /// NATS server (unless given: the newest `osp dev` running on this machine).
    #[arg(long, env = "OSP_NATS_URL", default_value_t = osp_client::local_dev::nats_url())]
    nats_url: String,
    /// The agent's name, unique among agents.
    #[arg(long, default_value = "rust-agent")]
    name: String,
    /// What it can do (repeat for several).
    #[arg(long = "capability", default_value = "echo")]
    capabilities: Vec<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    /// Tasks it runs at once.
    #[arg(long, default_value_t = 2)]
    max_concurrency: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run(Args::parse()).await)
}

/// The agent's life, from connecting to unregistering.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(&args.nats_url).await?;
    let agent = Agent::builder(&args.name)
        .description("An example agent written with osp-client")
        .capabilities(args.capabilities.clone())
        .max_concurrency(args.max_concurrency)
        .version(env!("CARGO_PKG_VERSION"))
        .card_field("endpoint", serde_json::json!({"language": "rust"}))
        .heartbeat_interval(Duration::from_secs(args.heartbeat))
        .start(&client)
        .await?;
    println!("registered agents/{} at seq {}", agent.name(), agent.registration().seq);

    // The client sends the highest sequence it has seen with every query, so this find
    // already sees the registration, whichever registry instance answers.
    let criteria = from_json(&serde_json::json!({ "capabilities": [args.capabilities[0]] }));
    let found = client.registry().find_all("agents", criteria, true).await?;
    let names: Vec<_> = found.iter().map(|entry| entry.name.as_str()).collect();
    println!("live agents with {}: {names:?}", args.capabilities[0]);

    // Without a scheduler (no work queue yet) the agent is still registered and alive.
    let worker = match Worker::builder(&client, &args.name)
        .capabilities(args.capabilities.clone())
        .max_concurrency(args.max_concurrency)
        .start(execute)
        .await
    {
        Ok(worker) => {
            println!("taking tasks of {:?}, {} at a time", args.capabilities, args.max_concurrency);
            Some(worker)
        }
        Err(error) => {
            eprintln!("not taking tasks (is the scheduler running?): {error}");
            None
        }
    };

    println!("heartbeating every {}s; Ctrl-C to unregister and stop", args.heartbeat);
    tokio::signal::ctrl_c().await?;
    if let Some(worker) = worker {
        let stats = worker.shutdown().await;
        println!("stopped taking tasks: {} completed, {} failed", stats.completed, stats.failed);
    }
    agent.shutdown().await?;
    println!("unregistered");
    Ok(())
}

/// Runs one task.
async fn execute(task: Task) -> Result<Value, TaskFailure> {
    match task.capability() {
        "summarize" => summarize(&task).await,
        "echo" => Ok(task.input().clone()),
        other => {
            Err(TaskFailure::new(format!("this agent does not know how to {other}")).kind("unsupported").permanent())
        }
    }
}

/// A deterministic "summary": the first sentence, and counts.
async fn summarize(task: &Task) -> Result<Value, TaskFailure> {
    let input = task.input();
    let text = input["text"].as_str().ok_or_else(|| TaskFailure::invalid_input("input.text must be a string"))?;
    let delay = Duration::from_millis(input["delay_ms"].as_u64().unwrap_or(0));
    let answer = match input.get("ask") {
        Some(question) => Some(task.ask(question.clone()).await?),
        None => None,
    };
    let sentences: Vec<&str> =
        text.split_inclusive(['.', '!', '?']).map(str::trim).filter(|sentence| !sentence.is_empty()).collect();
    let total = sentences.len() as u64;
    for (done, sentence) in sentences.iter().enumerate() {
        if !delay.is_zero() {
            tokio::select! {
                () = task.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        if task.is_cancelled() {
            task.log(LogLevel::Info, format!("cancelled after {done} of {total} sentences")).await;
            return Err(TaskFailure::cancelled());
        }
        let words = common::count(sentence.split_whitespace().count() as u64, "word");
        task.progress(done as u64 + 1, Some(total), Some(&format!("read a sentence of {words}"))).await;
    }
    if let Some(message) = input["fail"].as_str() {
        return Err(TaskFailure::new(message).kind("requested"));
    }
    let mut output = json!({
        "summary": sentences.first().copied().unwrap_or(""),
        "sentences": total,
        "words": text.split_whitespace().count(),
    });
    if let Some(answer) = answer {
        output["answer"] = answer;
    }
    Ok(output)
}
