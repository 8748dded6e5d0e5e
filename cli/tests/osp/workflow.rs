//! `osp run` with workflows, against a real nats-server with a registry, a scheduler and
//! an agent running in the test: submit a definition file (JSON, YAML, stdin) and watch it
//! to the end, read its step tree with a nested workflow, list with and without the
//! child runs, a failing workflow; and the mistakes: a bad file, a capability and a file
//! at once, options given twice.

use std::path::Path;
use std::time::Duration;

use osp_client::{Task, TaskFailure, Worker};
use serde_json::{json, Value};

use crate::common::{exits, exits_with_stdin, json_lines, ok, Services};

/// The capabilities agent `flows` offers.
const CAPABILITIES: [&str; 4] = ["classify", "split", "work", "merge"];

/// A routing whose `fan` route is a parallelization of its own (split, a subtask per
/// part, merge), and whose `plain` route is one task.
const ROUTING_JSON: &str = r#"{"routing": {
  "classify": {"task": {"capability": "classify"}},
  "routes": {
    "fan": {"parallelization": {
      "split": {"task": {"capability": "split"}},
      "worker": {"task": {"capability": "work"}},
      "merge": {"task": {"capability": "merge"}}}},
    "plain": {"task": {"capability": "work"}}},
  "default": "plain"}}"#;

/// The same workflow in YAML.
const ROUTING_YAML: &str = "
routing:
  classify: {task: {capability: classify}}
  routes:
    fan:
      parallelization:
        split: {task: {capability: split}}
        worker: {task: {capability: work}}
        merge: {task: {capability: merge}}
    plain: {task: {capability: work}}
  default: plain
";

/// The services with agent `flows` (all of [`CAPABILITIES`], 8 tasks at once) and its
/// worker, which pulls every second: with more capabilities than that, they take turns.
async fn start() -> (Services, Worker) {
    let services = Services::start("flows", &CAPABILITIES, 8).await;
    let worker = services.worker().await.pull_expires(Duration::from_secs(1)).start(work).await.unwrap();
    (services, worker)
}

/// Writes `text` to file `name` in `folder`; its path.
fn file(folder: &Path, name: &str, text: &str) -> String {
    let path = folder.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The agent, by capability. `classify`: `{"route": input.route}`. `split`: a subtask
/// per `input.parts` (default `["x", "y"]`). `work`: `{"did": prompt}`, or fails (kind
/// `boom`) when the prompt is `"fail"`. `merge`: how many results it got.
async fn work(task: Task) -> Result<Value, TaskFailure> {
    let input = task.input().clone();
    match task.capability() {
        "classify" => Ok(json!({"route": input["route"]})),
        "split" => {
            let parts = input["parts"].as_array().cloned().unwrap_or_else(|| vec![json!("x"), json!("y")]);
            Ok(parts.iter().map(|part| json!({"id": part, "prompt": part})).collect())
        }
        "work" if input["prompt"] == "fail" => Err(TaskFailure::new("no good").kind("boom")),
        "work" => Ok(json!({"did": input["prompt"]})),
        "merge" => Ok(json!({"merged": input["results"].as_array().map_or(0, Vec::len)})),
        other => Err(TaskFailure::new(format!("no such capability {other}"))),
    }
}

fn run_ids(runs: &[Value]) -> Vec<&str> {
    runs.iter().map(|run| run["run_id"].as_str().unwrap()).collect()
}

/// Asserts that `text` has a line starting with each of `starts` (indentation counts).
fn has_lines(text: &str, starts: &[&str]) {
    for start in starts {
        assert!(text.lines().any(|line| line.starts_with(start)), "a line starting {start:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_file_runs_and_shows_its_step_tree() {
    let (services, worker) = start().await;
    let url = services.url.clone();
    let folder = tempfile::tempdir().unwrap();
    let json_file = file(folder.path(), "flow.json", ROUTING_JSON);

    // JSON, watched to the end: its events, then its step tree, the nested workflow's
    // steps beneath its step.
    let watched = ok(
        &url,
        &["run", "submit", "--workflow", &json_file, "--input", r#"{"route": "fan"}"#, "--run-id", "wf-1", "--watch"],
    )
    .await;
    assert_eq!(watched.lines().next(), Some("wf-1"), "{watched}");
    for expected in [
        "routing by user:tester, input {\"route\":\"fan\"}",
        "run.steps_started",
        "started classify (task classify)",
        "route:fan (parallelization)",
        "run.step_ended",
        "classify completed after",
        r#"run.completed          {"merged":2}"#,
    ] {
        assert!(watched.contains(expected), "{expected} in\n{watched}");
    }
    let tree = &watched[watched.find("\nsteps:\n").expect("the tree after the events")..];
    has_lines(
        tree,
        &[
            "  STEP",
            "  classify     task classify        completed",
            "  route:fan    parallelization 4/4  completed",
            "    split      task split           completed",
            "    subtask:x  task work            completed",
            "    subtask:y  task work            completed",
            "    merge      task merge           completed",
        ],
    );

    // Get: the pattern, its progress, the tree.
    let shown = ok(&url, &["run", "get", "wf-1"]).await;
    has_lines(
        &shown,
        &["run: wf-1", "workflow: routing, 2/2 steps done", "status: completed", "steps:", "    subtask:y  task work"],
    );
    assert!(shown.contains(r#"output: {"#) && !shown.contains("capability:"), "{shown}");
    // As JSON, the run as the scheduler has it; with --tree, the nested run inside.
    let run: Value = serde_json::from_str(&ok(&url, &["run", "get", "wf-1", "--json"]).await).unwrap();
    let keys: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["classify", "route:fan"], "{run}");
    assert!(run["steps"][1].get("run").is_none() && run["workflow"]["routing"].is_object(), "{run}");
    let whole: Value = serde_json::from_str(&ok(&url, &["run", "get", "wf-1", "--tree"]).await).unwrap();
    let nested = &whole["steps"][1]["run"];
    assert_eq!((&nested["run_id"], &nested["status"]), (&json!("wf-1:route:fan"), &json!("completed")), "{whole}");
    let keys: Vec<&str> = nested["steps"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["split", "subtask:x", "subtask:y", "merge"], "{whole}");
    // A step's run says whose step it is.
    let step = ok(&url, &["run", "get", "wf-1:route:fan:subtask:x"]).await;
    has_lines(&step, &["capability: work", "step: subtask:x of run wf-1:route:fan (root wf-1)"]);

    // YAML, the other route; then JSON from stdin.
    let yaml_file = file(folder.path(), "flow.yaml", ROUTING_YAML);
    let watched = ok(
        &url,
        &["run", "submit", "--workflow", &yaml_file, "--input", r#"{"route": "plain"}"#, "--run-id", "wf-2", "--watch"],
    )
    .await;
    has_lines(
        &watched[watched.find("\nsteps:\n").unwrap()..],
        &["  classify", "  route:plain  task work      completed"],
    );
    let (submitted, _) =
        exits_with_stdin(0, &url, &["run", "submit", "--workflow", "-", "--run-id", "wf-3"], ROUTING_JSON).await;
    assert_eq!(submitted, "wf-3\n");
    let (watched, _) = exits(0, &url, &["run", "watch", "wf-3"]).await;
    assert!(watched.contains("  route:plain  task work      completed"), "{watched}");

    // List: the runs people submitted; with --children, the steps' runs too.
    let roots = json_lines(&ok(&url, &["run", "list", "--json"]).await);
    assert_eq!(run_ids(&roots), ["wf-1", "wf-2", "wf-3"]);
    assert!(roots.iter().all(|run| run["capability"] == "routing" && run.get("parent").is_none()), "{roots:?}");
    let all = json_lines(&ok(&url, &["run", "list", "--children", "--json"]).await);
    let ids = run_ids(&all);
    for id in ["wf-1", "wf-1:classify", "wf-1:route:fan", "wf-1:route:fan:subtask:x", "wf-2:route:plain"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    let subtask = all.iter().find(|run| run["run_id"] == "wf-1:route:fan:subtask:x").unwrap();
    assert_eq!((&subtask["parent"], &subtask["capability"]), (&json!("wf-1:route:fan"), &json!("work")));
    let table = ok(&url, &["run", "list"]).await;
    assert!(!table.contains("PARENT") && !table.contains("wf-1:"), "{table}");
    let table = ok(&url, &["run", "list", "--children"]).await;
    assert!(table.lines().next().unwrap().starts_with("RUN"), "{table}");
    assert!(table.lines().next().unwrap().contains("PARENT"), "{table}");
    let columns = |id: &str| -> Vec<String> {
        let line = table.lines().find(|line| line.starts_with(&format!("{id} "))).expect(id);
        line.split_whitespace().take(3).map(str::to_owned).collect()
    };
    assert_eq!(columns("wf-1:route:fan:merge"), ["wf-1:route:fan:merge", "wf-1:route:fan", "merge"], "{table}");
    assert_eq!(columns("wf-1"), ["wf-1", "-", "routing"], "{table}");

    services.stop(worker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_workflow_exits_1_and_the_scheduler_refusals_are_said() {
    let (services, worker) = start().await;
    let url = services.url.clone();
    let folder = tempfile::tempdir().unwrap();

    // Fail-fast: the failed subtask fails the run; the watch exits 1 and shows where.
    let failing = file(
        folder.path(),
        "failing.json",
        r#"{"parallelization": {"subtasks": [{"id": "good", "prompt": "fine"}, {"id": "bad", "prompt": "fail"}],
            "worker": {"task": {"capability": "work"}}}}"#,
    );
    let (watched, _) = exits(1, &url, &["run", "submit", "--workflow", &failing, "--run-id", "bad-1", "--watch"]).await;
    assert!(watched.contains("subtask:bad failed after"), "{watched}");
    assert!(watched.contains("run.failed             boom: step subtask:bad failed: no good"), "{watched}");
    let tree = &watched[watched.find("\nsteps:\n").unwrap()..];
    has_lines(tree, &["  STEP", "  subtask:bad   task work  failed"]);
    assert!(tree.contains("ERROR") && tree.contains("boom: no good"), "{tree}");
    // With --json every line is an event: no tree.
    let (events, _) = exits(1, &url, &["run", "watch", "bad-1", "--json"]).await;
    let events = json_lines(&events);
    assert_eq!(events.last().unwrap()["type"], "run.failed");
    assert!(events.iter().any(|e| e["type"] == "run.step_ended"), "{events:?}");

    // Options in the file's root and on the command line: the scheduler's refusal.
    let with_options = file(
        folder.path(),
        "options.json",
        r#"{"routing": {"classify": {"task": {"capability": "classify"}}, "routes": {"a": {"task": {"capability": "work"}}},
            "options": {"timeout": {"ms": 60000}}}}"#,
    );
    let (_, twice) = exits(1, &url, &["run", "submit", "--workflow", &with_options, "--timeout", "1m"]).await;
    assert!(twice.contains("given both with the submit and in the workflow's root step"), "{twice}");
    // Retry on a workflow run is refused too; a capability nobody offers as for a task.
    let (_, retry) = exits(1, &url, &["run", "submit", "--workflow", &failing, "--retry", "2"]).await;
    assert!(retry.contains("a workflow is retried step by step"), "{retry}");
    let nobody = file(
        folder.path(),
        "nobody.yml",
        "routing: {classify: {task: {capability: classify}}, routes: {a: {task: {capability: nobody}}}}",
    );
    let (_, refused) = exits(1, &url, &["run", "submit", "--workflow", &nobody]).await;
    assert!(refused.contains("nobody") && refused.contains("--wait-for-agent"), "{refused}");

    services.stop(worker).await;
}

#[tokio::test]
async fn bad_definitions_are_usage_errors_said_before_anything_is_sent() {
    // Nothing listens here: these fail on their input, not on the connection.
    let url = "nats://127.0.0.1:1";
    let folder = tempfile::tempdir().unwrap();

    let not_a_route = file(
        folder.path(),
        "flow.json",
        r#"{"routing": {"classify": {"task": {"capability": "c"}}, "routes": {"a": {"task": {"capability": "x"}}}, "default": "z"}}"#,
    );
    let (_, error) = exits(2, url, &["run", "submit", "--workflow", &not_a_route]).await;
    assert_eq!(
        error,
        format!(
            "error: --workflow {not_a_route}: invalid workflow.routing.default: \"z\" is not a route (routes: a)\n"
        )
    );
    let typo = file(folder.path(), "flow.yaml", "routing:\n  classify: {task: {capability: c}}\n  rutes: {}\n");
    let (_, error) = exits(2, url, &["run", "submit", "--workflow", &typo]).await;
    assert!(error.contains("not a workflow definition") && error.contains("unknown field `rutes`"), "{error}");
    assert!(error.contains("line 3 column 3"), "{error}");
    let broken = file(folder.path(), "broken.json", "{\"routing\": {\n  \"classify\": }");
    let (_, error) = exits(2, url, &["run", "submit", "--workflow", &broken]).await;
    assert!(error.contains("line 2 column"), "{error}");
    let (_, error) = exits(2, url, &["run", "submit", "--workflow", "-"]).await;
    assert!(error.starts_with("error: --workflow stdin: not a workflow definition: EOF"), "{error}");
    let (_, error) = exits(2, url, &["run", "submit", "--workflow", "/no/such/flow.json"]).await;
    assert!(error.starts_with("error: --workflow: cannot read /no/such/flow.json"), "{error}");

    // A capability and a workflow, or neither: the command line is wrong.
    let (_, both) = exits(2, url, &["run", "submit", "work", "--workflow", &not_a_route]).await;
    assert!(both.contains("cannot be used with"), "{both}");
    let (_, neither) = exits(2, url, &["run", "submit", "--input", "{}"]).await;
    assert!(neither.contains("required arguments were not provided") && neither.contains("--workflow"), "{neither}");
    let (_, stdin) = exits(1, url, &["run", "submit", "--workflow", "-", "--input", "-"]).await;
    assert!(stdin.contains("only one of --input, --metadata and --options (and --workflow) can read stdin"), "{stdin}");

    // The help says what a workflow file is and where the whole format is.
    let help = ok(url, &["run", "submit", "--help"]).await;
    assert!(help.contains("--workflow <FILE|->") && help.contains("docs/protocol.md §17.10"), "{help}");
    assert!(help.contains("\"parallelization\"") && help.contains("exits with status 2"), "{help}");
}
