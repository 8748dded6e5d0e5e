//! A deterministic judge agent: offers the `judge` capability, which the quality service
//! asks to score an output (`osp check --judge`, a run gated on `checks.judge`). No
//! model: a criterion is met when every word of it (of three letters or more) appears in
//! the output's text, and the score is the share of criteria met — the same output and
//! criteria always give the same score, so examples and tests can rely on it.
//!
//! ```sh
//! osp dev                                                   # in another terminal
//! cargo run -p osp-client --example judge_agent
//! osp check examples/quality/summary.json --judge "quick brown fox" --judge "lazy cat" --threshold 0.5
//! ```
//!
//! Task input `{output, criteria, threshold, model?, objectives?}`; output `{score,
//! reasoning, ruleResults}` with one result per criterion.

mod common;

use clap::Parser;
use osp_client::{Agent, Client, Task, TaskFailure, Worker};
use serde_json::{json, Value};

/// A deterministic judge agent.
#[derive(Parser)]
struct Args {
    /// NATS server (unless given: the newest `osp dev` running on this machine).
    #[arg(long, env = "OSP_NATS_URL", default_value_t = osp_client::local_dev::nats_url())]
    nats_url: String,
    /// The agent's name, unique among agents.
    #[arg(long, default_value = "judge")]
    name: String,
    /// Tasks it runs at once.
    #[arg(long, default_value_t = 8)]
    max_concurrency: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::exit(run(Args::parse()).await)
}

/// The agent's life, from connecting to unregistering.
async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(&args.nats_url).await?.with_actor(format!("agent:{}", args.name));
    let agent = Agent::builder(&args.name)
        .description("A deterministic judge (criteria words found in the output), for examples and tests")
        .capabilities(["judge"])
        .max_concurrency(args.max_concurrency)
        .version(env!("CARGO_PKG_VERSION"))
        .start(&client)
        .await?;
    let worker = Worker::builder(&client, &args.name)
        .capabilities(["judge"])
        .max_concurrency(args.max_concurrency)
        .start(judge)
        .await?;
    println!("agents/{} ready to judge outputs; Ctrl-C to stop", agent.name());
    tokio::signal::ctrl_c().await?;
    let stats = worker.shutdown().await;
    println!("judged {}", common::count(stats.completed, "output"));
    agent.shutdown().await?;
    Ok(())
}

/// Scores one output on its criteria.
async fn judge(task: Task) -> Result<Value, TaskFailure> {
    let input = task.input();
    let criteria: Vec<&str> = input["criteria"]
        .as_array()
        .ok_or_else(|| TaskFailure::invalid_input("input.criteria must be a list"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if criteria.is_empty() {
        return Err(TaskFailure::invalid_input("input.criteria names no criterion"));
    }
    let text = match &input["output"] {
        Value::String(text) => text.to_lowercase(),
        other => other.to_string().to_lowercase(),
    };
    let results: Vec<Value> = criteria
        .iter()
        .map(|criterion| {
            let missing: Vec<String> = words(criterion).filter(|word| !text.contains(word.as_str())).collect();
            let message = match missing.is_empty() {
                true => "every word of it is in the output".to_owned(),
                false => format!("not in the output: {}", missing.join(", ")),
            };
            json!({"ruleName": criterion, "passed": missing.is_empty(), "severity": "info", "message": message})
        })
        .collect();
    let met = results.iter().filter(|r| r["passed"] == true).count();
    let score = met as f64 / criteria.len() as f64;
    Ok(json!({
        "score": score,
        "reasoning": format!("{met} of {} criteria met", criteria.len()),
        "ruleResults": results,
    }))
}

/// The words of a criterion that count: lowercase, three letters or more.
fn words(criterion: &str) -> impl Iterator<Item = String> + '_ {
    criterion.split(|c: char| !c.is_alphanumeric()).filter(|word| word.chars().count() >= 3).map(str::to_lowercase)
}
