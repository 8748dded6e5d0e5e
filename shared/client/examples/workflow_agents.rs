//! The agents of the workflow examples (`examples/workflows/`): one process, registered
//! as one agent, offering every capability the four examples name. No model: each task's
//! output is a plain function of its input, so the same run gives the same result every
//! time, and a short pause per task (`--delay-ms`) lets a watcher see the steps go by.
//!
//! ```sh
//! osp dev                                                                   # another terminal
//! target/release/examples/workflow_agents                                   # finds osp dev by itself
//! examples/workflows/run routing                                            # or all of it at once
//! ```
//!
//! What each capability does, by workflow pattern (the inputs are the ones the scheduler
//! gives each step, see `services/scheduler/src/workflow/`):
//!
//! - routing: `classify` reads `message` and names a route by keyword ("invoice",
//!   "refund", "charge" → `billing`; "error", "crash", "bug" → `tech`; anything else →
//!   `smalltalk`, which the example's definition has no route for, so its default route
//!   runs); `billing`, `tech-support` and `smalltalk` answer the message.
//! - parallelization: `split` cuts `text` into sentences (one subtask each),
//!   `word-count` counts a sentence's words, `merge` sums the counts.
//! - orchestrator-workers: `plan` makes outline → one research step per question →
//!   draft; `research` answers a question, `write` writes the outline or the draft,
//!   `synthesize` puts the document together.
//! - evaluator-optimizer: `generate` writes a first text naming the first of the
//!   `keywords`, `review` scores it (`coverage`: the share of keywords it names,
//!   `brevity`: within `maxWords`) and lists what is missing, `optimize` adds the first
//!   missing keyword.
//!
//! It prints a line per task done, and unregisters on Ctrl-C or SIGTERM (exit 0).

mod common;

use std::time::Duration;

use clap::Parser;
use osp_client::{Agent, Client, Task, TaskFailure, Worker, WorkerStats};
use serde_json::{json, Value};

/// Every capability it offers.
const CAPABILITIES: [&str; 14] = [
    "classify",
    "billing",
    "tech-support",
    "smalltalk",
    "split",
    "word-count",
    "merge",
    "plan",
    "research",
    "write",
    "synthesize",
    "generate",
    "review",
    "optimize",
];

/// Deterministic agents for the workflow examples.
#[derive(Parser)]
struct Args {
    /// NATS server (unless given: the newest `osp dev` running on this machine).
    #[arg(long, env = "OSP_NATS_URL", default_value_t = osp_client::local_dev::nats_url())]
    nats_url: String,
    /// The agent's name, unique among agents.
    #[arg(long, default_value = "workflow-agents")]
    name: String,
    /// How long each task takes, so that a watcher sees the steps progress.
    #[arg(long, default_value_t = 250)]
    delay_ms: u64,
    /// Tasks of one capability in hand at once.
    #[arg(long, default_value_t = 4)]
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
        .description("Deterministic agents for the workflow examples (no model)")
        .capabilities(CAPABILITIES)
        .max_concurrency(args.max_concurrency * CAPABILITIES.len() as u32)
        .version(env!("CARGO_PKG_VERSION"))
        .start(&client)
        .await?;
    let delay = Duration::from_millis(args.delay_ms);
    // One worker per capability: a worker's slots are shared by its capabilities, and
    // with fewer slots than capabilities they take turns, which would stall a workflow
    // whose next step is of a capability waiting for its turn.
    let mut workers = Vec::new();
    for capability in CAPABILITIES {
        let worker = Worker::builder(&client, &args.name)
            .capability(capability)
            .max_concurrency(args.max_concurrency)
            .start(move |task| execute(task, delay))
            .await?;
        workers.push(worker);
    }
    println!("ready: agents/{} offers {}", agent.name(), CAPABILITIES.join(", "));

    stop_requested().await?;
    let mut done = WorkerStats::default();
    for worker in workers {
        let stats = worker.shutdown().await;
        done.completed += stats.completed;
        done.failed += stats.failed;
    }
    agent.shutdown().await?;
    let completed = common::count(done.completed, "task");
    println!("unregistered agents/{}: {completed} completed, {} failed", args.name, done.failed);
    Ok(())
}

/// Ctrl-C or SIGTERM (what a script's `kill` sends).
async fn stop_requested() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = terminate.recv() => Ok(()),
    }
}

/// Runs one task: the pause, then the capability's function of the input.
async fn execute(task: Task, delay: Duration) -> Result<Value, TaskFailure> {
    tokio::select! {
        () = task.cancelled() => return Err(TaskFailure::cancelled()),
        () = tokio::time::sleep(delay) => {}
    }
    let result = respond(task.capability(), task.input());
    match &result {
        Ok(output) => println!("{:<13} {}  -> {}", task.capability(), task.run_id(), brief(output)),
        Err(failure) => {
            println!("{:<13} {}  failed: {}: {}", task.capability(), task.run_id(), failure.kind, failure.message)
        }
    }
    result
}

/// The output of a task of `capability` for `input`.
fn respond(capability: &str, input: &Value) -> Result<Value, TaskFailure> {
    match capability {
        "classify" => classify(input),
        "billing" => reply(input, "billing", "We have opened a billing case; a refund, if due, takes 5 working days."),
        "tech-support" => {
            reply(input, "tech-support", "Sorry about that: please send us the log file so we can reproduce it.")
        }
        "smalltalk" => reply(input, "general", "Thanks for writing! Ask us anything about your account or the app."),
        "split" => split(input),
        "word-count" => word_count(input),
        "merge" => merge(input),
        "plan" => plan(input),
        "research" => research(input),
        "write" => write(input),
        "synthesize" => synthesize(input),
        "generate" => generate(input),
        "review" => review(input),
        "optimize" => optimize(input),
        other => {
            Err(TaskFailure::new(format!("this agent does not know how to {other}")).kind("unsupported").permanent())
        }
    }
}

// --- routing -------------------------------------------------------------------------

/// The keywords that pick each route; the first route with a keyword in the message wins.
const ROUTE_KEYWORDS: [(&str, &[&str]); 2] =
    [("billing", &["invoice", "refund", "charge"]), ("tech", &["error", "crash", "bug"])];

/// `{message}` → `{route, matched}`: the route key (`smalltalk` when no keyword matches).
fn classify(input: &Value) -> Result<Value, TaskFailure> {
    let message = text_field(input, "message")?.to_lowercase();
    let found = ROUTE_KEYWORDS
        .iter()
        .find_map(|(route, keywords)| keywords.iter().find(|k| message.contains(*k)).map(|k| (*route, *k)));
    Ok(match found {
        Some((route, keyword)) => json!({"route": route, "matched": keyword}),
        None => json!({"route": "smalltalk", "matched": null}),
    })
}

/// A route's answer to `{message}`.
fn reply(input: &Value, team: &str, answer: &str) -> Result<Value, TaskFailure> {
    let message = text_field(input, "message")?;
    Ok(json!({"team": team, "message": message, "reply": answer}))
}

// --- parallelization -----------------------------------------------------------------

/// `{text}` → `{subtasks: [{id: "s1", prompt: <sentence>}, …]}`.
fn split(input: &Value) -> Result<Value, TaskFailure> {
    let subtasks: Vec<Value> = sentences(text_field(input, "text")?)
        .iter()
        .enumerate()
        .map(|(i, sentence)| json!({"id": format!("s{}", i + 1), "prompt": sentence}))
        .collect();
    match subtasks.is_empty() {
        true => Err(TaskFailure::invalid_input("input.text has no sentence")),
        false => Ok(json!({ "subtasks": subtasks })),
    }
}

/// `{id, prompt: <sentence>}` → `{sentence, words}`.
fn word_count(input: &Value) -> Result<Value, TaskFailure> {
    let sentence = text_field(input, "prompt")?;
    Ok(json!({"sentence": sentence, "words": sentence.split_whitespace().count()}))
}

/// `{results: [{id, success, data: {words}}]}` → `{sentences, words, longest}`.
fn merge(input: &Value) -> Result<Value, TaskFailure> {
    let results = list_field(input, "results")?;
    let counted: Vec<(&str, u64)> = results
        .iter()
        .filter(|r| r["success"] == json!(true))
        .map(|r| (r["id"].as_str().unwrap_or("?"), r["data"]["words"].as_u64().unwrap_or(0)))
        .collect();
    let longest = counted.iter().max_by_key(|(_, words)| *words).map(|(id, _)| *id);
    Ok(json!({
        "sentences": counted.len(),
        "words": counted.iter().map(|(_, words)| words).sum::<u64>(),
        "longest": longest,
    }))
}

// --- orchestrator-workers ------------------------------------------------------------

/// `{topic, questions}` → a plan: `outline`, then one `research-<n>` per question (in
/// parallel, each after the outline), then `draft` after all the research.
fn plan(input: &Value) -> Result<Value, TaskFailure> {
    let topic = text_field(input, "topic")?;
    let questions = list_field(input, "questions")?;
    let research_ids: Vec<String> = (1..=questions.len()).map(|n| format!("research-{n}")).collect();
    let mut steps = vec![json!({"id": "outline", "worker": "write", "description": "outline the brief",
        "input": {"kind": "outline", "topic": topic, "questions": questions}, "dependsOn": []})];
    for (id, question) in research_ids.iter().zip(questions) {
        steps.push(json!({"id": id, "worker": "research", "description": format!("answer: {}", question.as_str().unwrap_or("?")),
            "input": {"question": question}, "dependsOn": ["outline"]}));
    }
    steps.push(json!({"id": "draft", "worker": "write", "description": "write the draft from the research",
        "input": {"kind": "draft", "topic": topic}, "dependsOn": research_ids}));
    Ok(json!({"goal": format!("a short brief on {topic}"), "steps": steps}))
}

/// `{input: {question}}` → `{question, answer}`.
fn research(input: &Value) -> Result<Value, TaskFailure> {
    let question = text_field(&input["input"], "question")?;
    let answer = format!("(findings on: {})", question.trim_end_matches('?').to_lowercase());
    Ok(json!({"question": question, "answer": answer}))
}

/// `{input: {kind: outline | draft, …}, dependencies}` → the outline's sections, or the
/// draft built from the research its step depends on.
fn write(input: &Value) -> Result<Value, TaskFailure> {
    let step = &input["input"];
    let topic = text_field(step, "topic")?;
    match step["kind"].as_str() {
        Some("outline") => {
            let mut sections = vec![format!("What {topic} is")];
            sections.extend(list_field(step, "questions")?.iter().filter_map(Value::as_str).map(str::to_owned));
            Ok(json!({ "sections": sections }))
        }
        Some("draft") => {
            let dependencies = input["dependencies"].as_object().cloned().unwrap_or_default();
            let paragraphs: Vec<String> = dependencies
                .values()
                .map(|found| {
                    format!(
                        "{} {}.",
                        found["question"].as_str().unwrap_or("?"),
                        found["answer"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            Ok(json!({"title": topic, "paragraphs": paragraphs}))
        }
        _ => Err(TaskFailure::invalid_input("input.input.kind must be \"outline\" or \"draft\"")),
    }
}

/// `{goal, results: [{stepId, success, data}]}` → the document: the outline's sections
/// and the draft's paragraphs.
fn synthesize(input: &Value) -> Result<Value, TaskFailure> {
    let results = list_field(input, "results")?;
    let data_of =
        |id: &str| results.iter().find(|r| r["stepId"] == json!(id) && r["success"] == json!(true)).map(|r| &r["data"]);
    let succeeded = results.iter().filter(|r| r["success"] == json!(true)).count();
    Ok(json!({
        "goal": input["goal"],
        "title": data_of("draft").map_or(Value::Null, |d| d["title"].clone()),
        "sections": data_of("outline").map_or(Value::Null, |d| d["sections"].clone()),
        "paragraphs": data_of("draft").map_or(Value::Null, |d| d["paragraphs"].clone()),
        "stepsSucceeded": format!("{succeeded}/{}", results.len()),
    }))
}

// --- evaluator-optimizer -------------------------------------------------------------

/// `{input: {topic, keywords}}` → `{text}`: one sentence naming the first keyword.
fn generate(input: &Value) -> Result<Value, TaskFailure> {
    let brief = &input["input"];
    let topic = text_field(brief, "topic")?;
    let first = keywords(brief)?.first().cloned().unwrap_or_default();
    Ok(json!({ "text": format!("{topic} in brief: it keeps {first}.") }))
}

/// `{input: {keywords, maxWords}, candidate: {text}, criteria}` → `{score, feedback,
/// missing, criteria: [{name, score}]}`, scored on `coverage` (the share of keywords the
/// text names) and `brevity` (1 within `maxWords`, less the longer it gets).
fn review(input: &Value) -> Result<Value, TaskFailure> {
    let brief = &input["input"];
    let text = text_field(&input["candidate"], "text")?;
    let wanted = keywords(brief)?;
    let lowered = text.to_lowercase();
    let missing: Vec<&String> = wanted.iter().filter(|k| !lowered.contains(&k.to_lowercase())).collect();
    let coverage = 1.0 - missing.len() as f64 / wanted.len().max(1) as f64;
    let words = text.split_whitespace().count() as f64;
    let max_words = brief["maxWords"].as_f64().unwrap_or(50.0);
    let brevity = if words <= max_words { 1.0 } else { max_words / words };
    let scores = [("coverage", coverage), ("brevity", brevity)];
    let feedback = match missing.first() {
        None => "names every keyword".to_owned(),
        Some(_) => format!("does not name {}", missing.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")),
    };
    Ok(json!({
        "score": weighted_score(&scores, &input["criteria"]),
        "feedback": feedback,
        "missing": missing,
        "criteria": scores.iter().map(|(name, score)| json!({"name": name, "score": score})).collect::<Vec<_>>(),
    }))
}

/// `{candidate: {text}, evaluation: {missing}}` → `{text}` with a sentence naming the
/// first missing keyword (the same text when nothing is missing).
fn optimize(input: &Value) -> Result<Value, TaskFailure> {
    let text = text_field(&input["candidate"], "text")?;
    Ok(match input["evaluation"]["missing"].get(0).and_then(Value::as_str) {
        Some(keyword) => json!({ "text": format!("{text} It also covers {keyword}.") }),
        None => json!({ "text": text }),
    })
}

/// The mean of `scores` weighted as the definition's `criteria` say (1 when not named).
fn weighted_score(scores: &[(&str, f64)], criteria: &Value) -> f64 {
    let weight = |name: &str| {
        criteria
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == json!(name)))
            .and_then(|c| c["weight"].as_f64())
            .unwrap_or(1.0)
    };
    let total: f64 = scores.iter().map(|(name, _)| weight(name)).sum();
    scores.iter().map(|(name, score)| weight(name) * score).sum::<f64>() / total
}

fn keywords(brief: &Value) -> Result<Vec<String>, TaskFailure> {
    Ok(list_field(brief, "keywords")?.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

// --- input ---------------------------------------------------------------------------

/// `value[field]` as text; a bare string counts as the field itself, so `"hello"` works
/// as well as `{"message": "hello"}`.
fn text_field<'a>(value: &'a Value, field: &str) -> Result<&'a str, TaskFailure> {
    value
        .as_str()
        .or_else(|| value[field].as_str())
        .ok_or_else(|| TaskFailure::invalid_input(format!("{field} must be a string (got {value})")))
}

fn list_field<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>, TaskFailure> {
    value[field].as_array().ok_or_else(|| TaskFailure::invalid_input(format!("{field} must be a list (got {value})")))
}

/// The sentences of `text`, each ending at `.`, `!` or `?`.
fn sentences(text: &str) -> Vec<&str> {
    text.split_inclusive(['.', '!', '?']).map(str::trim).filter(|sentence| !sentence.is_empty()).collect()
}

/// An output on one line, cut to fit a terminal.
fn brief(output: &Value) -> String {
    let line = output.to_string();
    match line.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}
