//! `osp run` as an operator uses it, against a real nats-server with a registry, a
//! scheduler and an agent running in the test: submit and watch to the end (completed,
//! failed, cancelled), read, list, approve and reject as someone, pause, resume and
//! answer; and the mistakes: bad flags, illegal transitions, no scheduler, no server.

use std::time::Duration;

use osp_client::{Client, Task, TaskFailure, Worker};
use osp_local_nats::NatsServer;
use osp_protocol::scheduler::queries::RunStatus;
use serde_json::{json, Value};

use crate::common::{command, exited, exits, fails, json_lines, ok, Services, COMMAND_WITHIN};

/// The services with agent `tester` (capability `work`, 4 tasks at once) and its worker.
async fn start() -> (Services, Worker) {
    let services = Services::start("tester", &["work"], 4).await;
    let worker = services.worker().await.start(work).await.unwrap();
    (services, worker)
}

/// Waits until run `run_id` is in `status`.
async fn until(client: &Client, run_id: &str, status: RunStatus) {
    let deadline = tokio::time::Instant::now() + COMMAND_WITHIN;
    loop {
        let run = client.scheduler().get(run_id).await.unwrap();
        if run.as_ref().is_some_and(|run| run.status() == status) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "run {run_id} never {status}: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent: `{"ask"?: question, "steps"?: n, "step_ms"?: ms, "fail"?: message}`. Asks
/// first, then reports n steps of progress (stopping when cancelled), then fails or
/// returns `{"done": true, "answer"?: ...}`.
async fn work(task: Task) -> Result<Value, TaskFailure> {
    let input = task.input().clone();
    let answer = match input.get("ask") {
        Some(question) => Some(task.ask(question.clone()).await?),
        None => None,
    };
    let steps = input["steps"].as_u64().unwrap_or(0);
    let pause = Duration::from_millis(input["step_ms"].as_u64().unwrap_or(10));
    for step in 1..=steps {
        tokio::select! {
            () = task.cancelled() => return Err(TaskFailure::cancelled()),
            () = tokio::time::sleep(pause) => {}
        }
        task.progress(step, Some(steps), Some("working")).await;
    }
    if let Some(message) = input["fail"].as_str() {
        return Err(TaskFailure::new(message).kind("boom"));
    }
    let mut output = json!({"done": true});
    if let Some(answer) = answer {
        output["answer"] = answer;
    }
    Ok(output)
}

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_and_watch_to_the_end_then_get_and_list() {
    let (services, worker) = start().await;
    let url = services.url.clone();

    // A run that completes: its id, then its events, exit 0.
    let watched =
        ok(&url, &["run", "submit", "work", "--input", r#"{"steps": 3}"#, "--run-id", "ok-1", "--watch"]).await;
    let lines: Vec<&str> = watched.lines().collect();
    assert_eq!(lines[0], "ok-1", "{watched}");
    for expected in [
        "run.submitted",
        "work by user:tester",
        "attempt 1 dispatched",
        "run.started",
        "attempt 1 by agent tester",
        "attempt 1: 3/3 working",
        "run.completed",
    ] {
        assert!(watched.contains(expected), "{expected} in\n{watched}");
    }
    assert!(lines.last().unwrap().contains(r#"run.completed          attempt 1: {"done":true}"#), "{watched}");

    // Its whole state, for people and as JSON.
    let shown = ok(&url, &["run", "get", "ok-1"]).await;
    for expected in [
        "run: ok-1",
        "capability: work",
        "status: completed",
        "by user:tester",
        "input: {\"steps\":3}",
        "progress: 3/3 working",
        "ATTEMPT",
        "AGENT",
        "OUTCOME",
        "tester",
        "completed",
        "output: {",
    ] {
        assert!(shown.contains(expected), "{expected} in\n{shown}");
    }
    let run: Value = serde_json::from_str(&ok(&url, &["run", "get", "ok-1", "--json"]).await).unwrap();
    assert_eq!(
        (&run["run_id"], &run["status"], &run["output"]),
        (&json!("ok-1"), &json!("completed"), &json!({"done": true}))
    );
    assert_eq!((&run["attempts"][0]["agent"], &run["attempts"][0]["outcome"]), (&json!("tester"), &json!("completed")));
    assert_eq!(run["submitted_by"], "user:tester");
    assert!(is_rfc3339(&run["submitted_at"]) && is_rfc3339(&run["attempts"][0]["started_at"]), "{run}");

    // The watch of an ended run replays it and exits as it ended; NDJSON with --json.
    let events = json_lines(&ok(&url, &["run", "watch", "ok-1", "--json"]).await);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"run.submitted"));
    assert_eq!(types.last(), Some(&"run.completed"));
    assert!(types.contains(&"run.progress"), "{types:?}");
    let completed = events.last().unwrap();
    assert_eq!((&completed["run_id"], &completed["payload"]["output"]), (&json!("ok-1"), &json!({"done": true})));
    assert!(is_rfc3339(&completed["occurred_at"]) && completed["seq"].as_u64().unwrap() > 0, "{completed}");

    // A run whose agent fails, with no retry: exit 1.
    let (failed, _) = exits(1, &url, &["run", "submit", "work", "--input", r#"{"fail": "no good"}"#, "--watch"]).await;
    for expected in [
        "run.attempt_failed",
        "attempt 1 (agent, retryable): boom: no good",
        "run.failed",
        "after 1 attempt: boom: no good",
    ] {
        assert!(failed.contains(expected), "{expected} in\n{failed}");
    }
    let failed_id = failed.lines().next().unwrap().to_owned();
    // With retries, the run goes on after the first failure, and still fails.
    let (retried, _) = exits(
        1,
        &url,
        &[
            "run",
            "submit",
            "work",
            "--input",
            r#"{"fail": "again"}"#,
            "--retry",
            "2",
            "--retry-delay",
            "10ms",
            "--watch",
            "--json",
        ],
    )
    .await;
    let retried = json_lines(&retried);
    assert_eq!(retried[0]["created"], true, "first the outcome: {:?}", retried[0]);
    let types: Vec<&str> = retried[1..].iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "run.started").count(), 2, "{types:?}");
    assert!(types.contains(&"run.retry_scheduled") && types.last() == Some(&"run.failed"), "{types:?}");

    // A capability nobody offers is refused, unless the run waits for an agent.
    let refused = fails(&url, &["run", "submit", "nobody"]).await;
    assert!(refused.contains("no registered agent offers it (offered: work)"), "{refused}");
    assert!(refused.contains("set --wait-for-agent to queue the run") && !refused.contains("options."), "{refused}");
    let queued = ok(&url, &["run", "submit", "nobody", "--wait-for-agent", "--run-id", "queued", "--json"]).await;
    let queued: Value = serde_json::from_str(&queued).unwrap();
    assert_eq!(
        (&queued["run_id"], &queued["status"], &queued["created"]),
        (&json!("queued"), &json!("pending"), &json!(true))
    );
    // The same submission again names the same run.
    let (again, note) = exits(0, &url, &["run", "submit", "nobody", "--wait-for-agent", "--run-id", "queued"]).await;
    assert_eq!(
        (again.as_str(), note.as_str()),
        ("queued\n", "run queued existed already, submitted with the same content\n")
    );

    // List: a table, NDJSON, filters, pages.
    let table = ok(&url, &["run", "list"]).await;
    for expected in [
        "RUN",
        "CAPABILITY",
        "STATUS",
        "ATTEMPTS",
        "PROGRESS",
        "SUBMITTED",
        "ok-1",
        "queued",
        "nobody",
        "3/3",
        &failed_id,
    ] {
        assert!(table.contains(expected), "{expected} in\n{table}");
    }
    let all = json_lines(&ok(&url, &["run", "list", "--json"]).await);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|run| is_rfc3339(&run["submitted_at"])), "{all:?}");
    let completed = json_lines(&ok(&url, &["run", "list", "--status", "completed", "--json"]).await);
    assert_eq!(completed.iter().map(|r| r["run_id"].as_str().unwrap()).collect::<Vec<_>>(), ["ok-1"]);
    let nobody = json_lines(&ok(&url, &["run", "list", "--capability", "nobody", "--json"]).await);
    assert_eq!(nobody.len(), 1);
    let (page, more) = exits(0, &url, &["run", "list", "--limit", "3", "--json"]).await;
    assert_eq!(json_lines(&page).len(), 3);
    assert!(more.contains("more runs after") && more.contains("--all"), "{more}");
    let (pages, quiet) = exits(0, &url, &["run", "list", "--limit", "3", "--all", "--json"]).await;
    assert_eq!((json_lines(&pages), quiet.as_str()), (all, ""));
    let (none, note) = exits(0, &url, &["run", "list", "--status", "awaiting"]).await;
    assert_eq!((none.as_str(), note.as_str()), ("", "no runs\n"));

    // No such run.
    let missing = fails(&url, &["run", "get", "nope"]).await;
    assert_eq!(missing, "error: no run with id \"nope\" (osp run list shows the runs)\n");
    assert!(fails(&url, &["run", "cancel", "nope"]).await.contains("no run with id \"nope\""));
    let (_, watch_missing) = exits(4, &url, &["run", "watch", "nope"]).await;
    assert!(watch_missing.contains("no run with id \"nope\""), "{watch_missing}");

    services.stop(worker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_run_exits_3() {
    let (services, worker) = start().await;
    let url = services.url.clone();

    // A long run watched while it is cancelled gracefully: the agent stops, exit 3.
    let submit =
        ["run", "submit", "work", "--run-id", "slow", "--input", r#"{"steps": 600, "step_ms": 100}"#, "--watch"];
    let watch = command(&url, &submit).spawn().unwrap();
    until(&services.client, "slow", RunStatus::InProgress).await;
    let cancelled = ok(&url, &["run", "cancel", "slow", "--graceful", "5s", "--reason", "enough"]).await;
    assert_eq!(cancelled, "cancelling slow: its agent has 5s to stop, then the cancel is forced\n");
    let (watched, _) = exited(3, &submit, watch).await;
    assert!(watched.contains("run.cancel_requested") && watched.contains("by user:tester: enough"), "{watched}");
    assert!(watched.lines().last().unwrap().contains("run.cancelled          enough"), "{watched}");

    // At once, as JSON; then cancelling again is refused.
    ok(&url, &["run", "submit", "work", "--run-id", "slow-2", "--input", r#"{"steps": 600, "step_ms": 100}"#]).await;
    let outcome: Value = serde_json::from_str(&ok(&url, &["run", "cancel", "slow-2", "--json"]).await).unwrap();
    assert_eq!((&outcome["status"], &outcome["created"]), (&json!("cancelled"), &json!(false)));
    let again = fails(&url, &["run", "cancel", "slow-2"]).await;
    assert_eq!(again, "error: cannot cancel: it is cancelled; it has ended\n");
    let (watched, _) = exits(3, &url, &["run", "watch", "slow-2"]).await;
    assert!(watched.contains("run.cancelled          cancelled (forced)"), "{watched}");

    services.stop(worker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approvers_decide_as_themselves() {
    let (services, worker) = start().await;
    let url = services.url.clone();
    let gate = ["--require-approval", "ship it?", "--approvers", "user:ann,user:bob"];

    let submitted = ok(&url, &[&["run", "submit", "work", "--run-id", "gate"][..], &gate].concat()).await;
    assert_eq!(submitted, "gate\n");
    let shown = ok(&url, &["run", "get", "gate"]).await;
    assert!(shown.contains("status: awaiting"), "{shown}");
    assert!(shown.contains("approval: pending (0 of 1 approvals; from user:ann, user:bob)"), "{shown}");
    assert!(shown.contains("  asked: ship it?"), "{shown}");

    // Someone not on the list, and the default actor (user:tester), are refused.
    let eve = fails(&url, &["run", "approve", "gate", "--as", "user:eve"]).await;
    assert!(eve.contains("forbidden") && eve.contains("not one of this run's approvers (user:ann, user:bob)"), "{eve}");
    assert!(eve.contains("\"user:eve\""), "{eve}");
    let me = fails(&url, &["run", "approve", "gate"]).await;
    assert!(me.contains("forbidden: Osp-Actor header \"user:tester\""), "{me}");

    // A listed approver approves: the run goes on and completes.
    let approved = ok(&url, &["run", "approve", "gate", "--as", "user:ann", "--reason", "lgtm"]).await;
    assert_eq!(approved, "approved gate (1 of 1 approvals); the run goes on\n");
    let (watched, _) = exits(0, &url, &["run", "watch", "gate"]).await;
    for expected in [
        "run.approval_requested",
        "\"ship it?\": 1 approval from user:ann, user:bob",
        "run.approval_decided",
        "approved by user:ann: lgtm",
        "run.approved",
        "run.completed",
    ] {
        assert!(watched.contains(expected), "{expected} in\n{watched}");
    }
    let run: Value = serde_json::from_str(&ok(&url, &["run", "get", "gate", "--json"]).await).unwrap();
    let decision = &run["approval"]["decisions"][0];
    assert_eq!(
        (&decision["approver"], &decision["approved"], &decision["reason"]),
        (&json!("user:ann"), &json!(true), &json!("lgtm"))
    );
    assert!(is_rfc3339(&decision["at"]), "{decision}");
    let shown = ok(&url, &["run", "get", "gate"]).await;
    assert!(shown.contains("APPROVER") && shown.contains("user:ann  approved") && shown.contains("lgtm"), "{shown}");
    let late = fails(&url, &["run", "approve", "gate", "--as", "user:bob"]).await;
    assert!(late.starts_with("error: cannot approve: it is completed"), "{late}");

    // Two approvals needed: the first says how many more.
    ok(&url, &[&["run", "submit", "work", "--run-id", "gate-3", "--approvals", "2"][..], &gate].concat()).await;
    let first = ok(&url, &["run", "approve", "gate-3", "--as", "user:ann"]).await;
    assert_eq!(first, "approved gate-3 (1 of 2 approvals); waiting for 1 more\n");
    let second = ok(&url, &["run", "approve", "gate-3", "--as", "user:bob"]).await;
    assert_eq!(second, "approved gate-3 (2 of 2 approvals); the run goes on\n");
    exits(0, &url, &["run", "watch", "gate-3"]).await;

    // A rejection cancels the run.
    ok(&url, &[&["run", "submit", "work", "--run-id", "gate-2"][..], &gate].concat()).await;
    let rejected = ok(&url, &["run", "reject", "gate-2", "--as", "user:bob", "--reason", "not today"]).await;
    assert_eq!(rejected, "rejected gate-2; the run is cancelled\n");
    let (watched, _) = exits(3, &url, &["run", "watch", "gate-2"]).await;
    assert!(watched.contains("rejected by user:bob: not today"), "{watched}");
    let shown = ok(&url, &["run", "get", "gate-2"]).await;
    assert!(shown.contains("cancelled: rejected by user:bob: not today"), "{shown}");

    services.stop(worker).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_answer() {
    let (services, worker) = start().await;
    let url = services.url.clone();

    let input = r#"{"ask": {"q": "left or right?"}, "steps": 50, "step_ms": 100}"#;
    ok(&url, &["run", "submit", "work", "--run-id", "asks", "--input", input]).await;
    until(&services.client, "asks", RunStatus::Awaiting).await;
    let shown = ok(&url, &["run", "get", "asks"]).await;
    assert!(shown.contains(r#"question q1-1 (attempt 1, open): {"q":"left or right?"}"#), "{shown}");
    assert!(shown.contains("answer it: osp run answer asks 'JSON'"), "{shown}");

    assert_eq!(
        ok(&url, &["run", "pause", "asks", "--reason", "hold on"]).await,
        "paused asks: no new work is dispatched until `osp run resume asks`; it is awaiting an approval or an answer\n"
    );
    let twice = fails(&url, &["run", "pause", "asks"]).await;
    assert!(twice.starts_with("error: cannot pause: it is awaiting") && twice.contains("paused already"), "{twice}");
    assert_eq!(ok(&url, &["run", "resume", "asks"]).await, "resumed asks; it is awaiting an approval or an answer\n");

    // An answer that is not JSON is refused before anything is sent.
    let bare = fails(&url, &["run", "answer", "asks", "left"]).await;
    assert!(bare.contains("ANSWER: invalid JSON") && bare.contains("quote a string"), "{bare}");
    let answered = ok(&url, &["run", "answer", "asks", r#""left""#, "--as", "user:ann", "--json"]).await;
    let answered: Value = serde_json::from_str(&answered).unwrap();
    assert_eq!((&answered["run_id"], &answered["status"]), (&json!("asks"), &json!("in-progress")));
    let again = fails(&url, &["run", "answer", "asks", r#""right""#]).await;
    assert!(again.starts_with("error: cannot answer: it is in-progress"), "{again}");

    // Resume a running run that is not paused: refused with the service's message.
    let resumed = fails(&url, &["run", "resume", "asks"]).await;
    assert_eq!(resumed, "error: cannot resume: it is in-progress; it is not paused\n");

    let (watched, _) = exits(0, &url, &["run", "watch", "asks"]).await;
    for expected in [
        "run.input_requested",
        "attempt 1 asks q1-1",
        "run.paused",
        "by user:tester: hold on",
        "run.resumed",
        "run.input_answered",
        "q1-1 answered by user:ann: \"left\"",
        r#"{"answer":"left","done":true}"#,
    ] {
        assert!(watched.contains(expected), "{expected} in\n{watched}");
    }
    let run: Value = serde_json::from_str(&ok(&url, &["run", "get", "asks", "--json"]).await).unwrap();
    assert_eq!((&run["inputs"][0]["answer"], &run["inputs"][0]["answered_by"]), (&json!("left"), &json!("user:ann")));

    services.stop(worker).await;
}

#[tokio::test]
async fn bad_flags_are_refused_before_anything_is_sent() {
    // Nothing listens here: these fail on their input, not on the connection.
    let url = "nats://127.0.0.1:1";
    let submit = |extra: &'static [&'static str]| [&["run", "submit", "work"][..], extra].concat();

    let (_, fibonacci) = exits(2, url, &submit(&["--retry", "3", "--backoff", "fibonacci"])).await;
    assert!(fibonacci.contains("invalid value 'fibonacci' for '--backoff <BACKOFF>'"), "{fibonacci}");
    assert!(fibonacci.contains("[possible values: none, linear, exponential]"), "{fibonacci}");
    let (_, zero) = exits(2, url, &submit(&["--retry", "0"])).await;
    assert!(zero.contains("invalid value '0' for '--retry <N>': 0 is not in 1..=100"), "{zero}");
    let (_, soon) = exits(2, url, &submit(&["--timeout", "soon"])).await;
    assert!(soon.contains("invalid value 'soon' for '--timeout <DURATION>'"), "{soon}");
    let (_, action) = exits(2, url, &submit(&["--timeout", "1s", "--on-timeout", "explode"])).await;
    assert!(action.contains("[possible values: fail, cancel, continue]"), "{action}");

    for (extra, expected) in [
        (&["--backoff", "linear"][..], "error: --backoff needs a retry policy: add --retry N"),
        (&["--on-timeout", "cancel"][..], "error: --on-timeout needs a timeout: add --timeout DURATION"),
        (&["--approvers", "user:ann"][..], "error: --approvers needs an approval: add --require-approval MESSAGE"),
        (&["--timeout", "0s"][..], "error: invalid --timeout: must be more than 0 ms"),
        (&["--options", r#"{"retries": 3}"#][..], "error: --options: unknown field `retries`"),
        (&["--input", "{oops"][..], "error: --input: invalid JSON"),
        (&["--input", "-", "--options", "-"][..], "error: only one of --input, --metadata and --options"),
        (&["--run-id", "a.b"][..], "error: invalid run id \"a.b\""),
    ] {
        let args = [&["run", "submit", "work"][..], extra].concat();
        let err = fails(url, &args).await;
        assert!(err.starts_with(expected), "{extra:?}: {err}");
    }
    let (_, status) = exits(2, url, &["run", "list", "--status", "running"]).await;
    assert!(status.contains("\"running\" is not a status: pending, in-progress"), "{status}");

    // No server: the watch failed (3), other commands fail (1), both with the hint.
    let (_, watch) = exits(4, url, &["run", "watch", "r-1"]).await;
    assert!(watch.contains("cannot connect to NATS at nats://127.0.0.1:1: start one with `osp dev`"), "{watch}");
    let get = fails(url, &["run", "get", "r-1"]).await;
    assert!(get.contains("cannot connect to NATS"), "{get}");
}

#[tokio::test]
async fn without_a_scheduler_the_cli_says_what_to_start() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let started = std::time::Instant::now();
    let (_, watch) = exits(4, &url, &["run", "watch", "r-1"]).await;
    assert!(watch.contains("no instance of the scheduler service is running"), "{watch}");
    assert!(watch.contains("start `osp dev`, or run `osp-scheduler`"), "{watch}");
    for args in [&["run", "submit", "work"][..], &["run", "cancel", "r-1"], &["run", "list"]] {
        let err = fails(&url, args).await;
        assert!(err.contains("no instance of the scheduler service is running"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "said at once, not after a command's timeout");
}
