//! Replay and audit against a real nats-server with every service running (registry,
//! scheduler, quality, context, each saving snapshots every few events) and an agent: a
//! workflow run with an approval and a retry, then `osp replay run` (order, causation,
//! durations, the state at several points equal to what the services said then), `osp
//! replay diff` (a planted divergence), `osp log verify` (the services' states, a forged
//! event, a live state that is not the log's), snapshots (every view starts from one as
//! from scratch), and `osp log export` / `import` (same hashes, same states).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use osp_client::{Client, Task, TaskFailure, Worker};
use osp_eventlog::EventLog;
use osp_local_nats::NatsServer;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use osp_protocol::scheduler::queries::{ApprovalState, RunStatus};
use osp_runtime::{Projection, Snapshot, Snapshots};
use osp_scheduler::view::SchedulerView;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{exits, ok};

/// Classify (its run needs an approval), then the `plain` route: one task that may be
/// retried.
const WORKFLOW: &str = r#"{"routing": {
  "classify": {"task": {"capability": "classify", "options": {"approval": {"message": "route it?"}}}},
  "routes": {"plain": {"task": {"capability": "work", "options": {"retry": {"attempts": 3, "delayMs": 200}}}}},
  "default": "plain"}}"#;

/// Every service, on a server of its own, with the agent `flows`.
struct System {
    server: NatsServer,
    url: String,
    client: Client,
    registry: osp_registry::Registry,
    scheduler: osp_scheduler::Scheduler,
    quality: osp_quality::Quality,
    context: osp_context::Context,
    worker: Option<Worker>,
}

/// Snapshots every few events, so the runs here save several.
const SNAPSHOTS: Snapshots = Snapshots { every: 5, read: true };

impl System {
    async fn start() -> System {
        let server = NatsServer::start().await.unwrap();
        System::on(server, SNAPSHOTS).await
    }

    /// The services on `server` (no agent).
    async fn on(server: NatsServer, snapshots: Snapshots) -> System {
        let url = server.url();
        let nats = || osp_tests::connect(&url);
        let service = osp_runtime::ServiceConfig { snapshots, ..Default::default() };
        let registry = osp_registry::Config { service: service.clone(), ..Default::default() };
        // Boxed: four services' start futures held at once would overflow a test thread's stack.
        let registry = Box::pin(osp_registry::Registry::start(nats().await, registry)).await.unwrap();
        let scheduler = Box::pin(osp_scheduler::Scheduler::start(nats().await, service.clone())).await.unwrap();
        let quality = Box::pin(osp_quality::Quality::start(nats().await, service.clone())).await.unwrap();
        let context = osp_context::Config { service, ..Default::default() };
        let context = Box::pin(osp_context::Context::start(nats().await, context)).await.unwrap();
        let client = Client::new(nats().await).with_actor("user:test");
        System { url: url.clone(), server, client, registry, scheduler, quality, context, worker: None }
    }

    /// Registers agent `flows` and starts it: `classify` routes to `input.route`; `work`
    /// writes a note to its run's context scope and answers, but fails its first attempt
    /// in the runs whose id starts with `flaky`.
    async fn with_agent(mut self) -> System {
        let card = json!({"capabilities": ["classify", "work"], "max_concurrency": 4});
        let entry = EntryDoc::new("agents", "flows", "the test's agent".into(), from_json(&card), None).unwrap();
        self.client.registry().register(&entry).await.unwrap();
        let agent = Client::new(osp_tests::connect(&self.url).await).with_actor("agent:flows");
        let handler = move |task: Task| {
            let agent = agent.clone();
            async move {
                match task.capability() {
                    "classify" => Ok(json!({"route": task.input()["route"]})),
                    _ if task.run_id().starts_with("flaky") && task.attempt() == 1 => {
                        Err(TaskFailure::new("not this time").kind("flaky"))
                    }
                    _ => {
                        let scope = format!("run:{}", task.run_id());
                        agent.context().set(&scope, "note", json!({"attempt": task.attempt()})).await.unwrap();
                        Ok(json!({"did": task.input()["prompt"]}))
                    }
                }
            }
        };
        let worker = Worker::builder(&self.client, "flows")
            .capabilities(&["classify".to_owned(), "work".to_owned()])
            .max_concurrency(4)
            .pull_expires(Duration::from_secs(1))
            .start(handler)
            .await
            .unwrap();
        self.worker = Some(worker);
        self
    }

    async fn log(&self) -> EventLog {
        EventLog::open(osp_tests::connect(&self.url).await).await.unwrap()
    }

    /// The four services' digests: (service, digest, the sequence it is at).
    async fn digests(&self) -> BTreeMap<&'static str, (String, u64)> {
        let c = &self.client;
        let registry = c.registry().digest().await.unwrap().result;
        let scheduler = c.scheduler().digest().await.unwrap().result;
        let quality = c.quality().digest().await.unwrap().result;
        let context = c.context().digest().await.unwrap().result;
        BTreeMap::from([
            ("registry", (registry.digest, registry.last_seq)),
            ("scheduler", (scheduler.digest, scheduler.applied)),
            ("quality", (quality.digest, quality.applied)),
            ("context", (context.digest, context.applied)),
        ])
    }

    async fn stop(self) {
        if let Some(worker) = self.worker {
            worker.shutdown().await;
        }
        self.context.shutdown().await;
        self.quality.shutdown().await;
        self.scheduler.shutdown().await;
        self.registry.shutdown().await;
        drop(self.server);
    }
}

/// Submits the workflow as `run_id`, approves its classify step when it asks, and waits
/// for the end; returns the scheduler's (digest, sequence) seen on the way.
async fn run_workflow(system: &System, folder: &Path, run_id: &str) -> Vec<(String, u64)> {
    let definition = folder.join("flow.json");
    std::fs::write(&definition, WORKFLOW).unwrap();
    let input = r#"{"route": "plain", "prompt": "hello"}"#;
    ok(
        &system.url,
        &["run", "submit", "--workflow", definition.to_str().unwrap(), "--input", input, "--run-id", run_id],
    )
    .await;
    let scheduler = system.client.scheduler();
    let classify = format!("{run_id}:classify");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{run_id} did not end");
        let digest = scheduler.digest().await.unwrap().result;
        if seen.last().is_none_or(|(_, applied)| *applied != digest.applied) {
            seen.push((digest.digest, digest.applied));
        }
        let step = scheduler.get(&classify).await.unwrap();
        if step.as_ref().is_some_and(|s| s.approval.as_ref().is_some_and(|a| a.state == ApprovalState::Pending)) {
            ok(&system.url, &["run", "approve", &classify, "--reason", "fine"]).await;
        }
        let root = scheduler.get(run_id).await.unwrap();
        if root.as_ref().is_some_and(|run| run.status == Some(RunStatus::Completed)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn replay_json(url: &str, args: &[&str]) -> Value {
    let output = crate::common::osp(url, args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The timeline's event of `type` on run `run` (the first, or the one of `attempt`).
fn event<'a>(timeline: &'a Value, run: &str, event_type: &str, attempt: Option<u64>) -> &'a Value {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["aggregate"] == format!("run:{run}")
                && e["type"] == event_type
                && attempt.is_none_or(|attempt| e["attempt"] == attempt)
        })
        .unwrap_or_else(|| panic!("{event_type} on {run} (attempt {attempt:?}) in {timeline:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_run_replays_with_its_causes_its_states_and_where_another_diverged() {
    let system = System::start().await.with_agent().await;
    let folder = tempfile::tempdir().unwrap();
    let seen = run_workflow(&system, folder.path(), "flaky-1").await;
    let url = system.url.clone();

    // The timeline: in log order, every service's events, with causes and durations.
    let timeline = replay_json(&url, &["replay", "run", "flaky-1", "--json"]);
    let seqs: Vec<u64> = timeline["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "log order: {seqs:?}");
    assert_eq!(timeline["runs"], json!(["flaky-1", "flaky-1:classify", "flaky-1:route:plain"]));
    let (classify, route) = ("flaky-1:classify", "flaky-1:route:plain");
    let steps_started = event(&timeline, "flaky-1", "run.steps_started", None);
    assert_eq!(event(&timeline, classify, "run.submitted", None)["caused_by_seq"], steps_started["seq"]);
    let requested = event(&timeline, classify, "run.approval_requested", None);
    let decided = event(&timeline, classify, "run.approval_decided", None);
    assert!(decided["actor"].as_str().unwrap().starts_with("user:"), "{decided}");
    assert!(decided["caused_by_command"].is_string(), "a person's command: {decided}");
    assert!(event(&timeline, classify, "run.approved", None)["duration_ms"].is_u64(), "approval took");
    assert!(requested["seq"].as_u64() < decided["seq"].as_u64());
    let failed = event(&timeline, route, "run.attempt_failed", Some(1));
    assert_eq!(failed["caused_by_seq"], event(&timeline, route, "run.started", Some(1))["seq"]);
    assert!(failed["duration_ms"].is_u64());
    let retry = event(&timeline, route, "run.retry_scheduled", None);
    let second = event(&timeline, route, "run.dispatched", Some(2));
    assert_eq!(second["caused_by_seq"], retry["seq"], "the retry timer, set by the retry: {second}");
    let started = event(&timeline, route, "run.started", Some(2));
    assert_eq!(started["caused_by_seq"], second["seq"]);
    let completed = event(&timeline, route, "run.completed", Some(2));
    assert_eq!(completed["caused_by_seq"], started["seq"]);
    let ended = event(&timeline, "flaky-1", "run.step_ended", None);
    assert!(
        timeline["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["aggregate"] == format!("scope:run:{route}") && e["type"] == "scope.entry_set"),
        "the agent's context write is in the timeline"
    );
    let step_ends: Vec<&Value> =
        timeline["events"].as_array().unwrap().iter().filter(|e| e["type"] == "run.step_ended").collect();
    assert_eq!(step_ends[1]["caused_by_seq"], completed["seq"], "{ended}");
    let text = ok(&url, &["replay", "run", "flaky-1"]).await;
    assert!(text.starts_with("run flaky-1: ") && text.contains("run.retry_scheduled"), "{text}");

    // --at: at every point the scheduler answered during the run, the tree folded from
    // the log up to that point is what the scheduler held then.
    assert!(seen.len() >= 3, "digests seen while it ran: {seen:?}");
    for (digest, applied) in &seen {
        let state = replay_json(&url, &["replay", "run", "flaky-1", "--at", &applied.to_string(), "--json"]);
        assert_eq!(&state["scheduler"]["digest"]["digest"], digest, "at seq {applied}: {state:#}");
    }
    let before = replay_json(&url, &["replay", "run", "flaky-1", "--at", &retry["seq"].to_string(), "--json"]);
    let route_then = before["scheduler"]["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == route).unwrap();
    assert_eq!(route_then["status"], "pending", "waiting for its retry then: {route_then}");
    assert_eq!(route_then["attempts"].as_array().unwrap().len(), 1);
    // Past the end of the log: the state at its end, and a word on stderr.
    let last = system.log().await.last_sequence().await.unwrap();
    let (text, note) = exits(0, &url, &["replay", "run", "flaky-1", "--at", "99999999"]).await;
    assert_eq!(
        note,
        format!("--at 99999999 is past the end of the log (last sequence {last}); showing the state at {last}\n")
    );
    assert!(text.starts_with(&format!("run flaky-1 as of seq {last} (")), "{text}");

    // Diff: the same workflow, whose step did not fail this time.
    run_workflow(&system, folder.path(), "steady-1").await;
    let diff = crate::common::osp(&url, &["replay", "diff", "flaky-1", "steady-1", "--json"]);
    assert_eq!(diff.status.code(), Some(1), "they differ");
    let diff: Value = serde_json::from_slice(&diff.stdout).unwrap();
    let first = diff["divergences"].as_array().unwrap().iter().find(|d| d["kind"] != "timing").unwrap();
    assert_eq!(first["step"], ":route:plain", "{diff:#}");
    assert_eq!(
        (first["kind"].as_str(), &first["a"], &first["b"]),
        (Some("decision"), &json!("run.attempt_failed (attempt 1)"), &json!("run.completed (attempt 1)"))
    );
    system.stop().await;
}

/// A view's digest, folded from scratch and from its newest snapshot: equal, and the
/// snapshot is there.
async fn from_snapshot_and_scratch<V: Snapshot>(log: &EventLog, kinds: &[&str], digest: impl Fn(&V) -> String) {
    let filters: Vec<String> = kinds.iter().map(|kind| format!("osp.v1.evt.{kind}.*")).collect();
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let shutdown = CancellationToken::new();
    let restored =
        Projection::<V>::start_with(log, &filters, Snapshots { every: 0, read: true }, shutdown.clone()).await.unwrap();
    let scratch = Projection::<V>::start_with(log, &filters, Snapshots::OFF, shutdown.clone()).await.unwrap();
    assert_eq!(digest(&restored.read()), digest(&scratch.read()), "{}", V::NAME);
    shutdown.cancel();
}

/// The names of the snapshots in the store.
async fn snapshots(log: &EventLog) -> Vec<String> {
    use futures::StreamExt;
    let store = log.jetstream().get_object_store(osp_runtime::SNAPSHOTS_BUCKET).await.unwrap();
    let mut list = store.list().await.unwrap();
    let mut names = Vec::new();
    while let Ok(Some(Ok(object))) = tokio::time::timeout(Duration::from_secs(2), list.next()).await {
        names.push(object.name);
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_snapshots_and_export_import_keep_every_state_and_hash() {
    let system = System::start().await.with_agent().await;
    let folder = tempfile::tempdir().unwrap();
    run_workflow(&system, folder.path(), "flaky-2").await;
    let url = system.url.clone();
    let log = system.log().await;
    // Enough registry and catalog events for those views to save snapshots too.
    for i in 0..5 {
        let tool = EntryDoc::new("tools", &format!("tool-{i}"), "a tool".into(), from_json(&json!({"i": i})), None);
        system.client.registry().register(&tool.unwrap()).await.unwrap();
    }
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quality/rules.yaml");
    ok(&url, &["rules", "add", rules]).await;
    for rule in ["has-summary", "short-summary", "no-lorem"] {
        ok(&url, &["rules", "rm", rule]).await;
    }

    // Every running service's live state is the log's.
    let report = replay_json(&url, &["log", "verify", "--json"]);
    assert_eq!(report["clean"], true, "{report:#}");
    let services = report["services"].as_array().unwrap();
    assert_eq!(services.len(), 4);
    assert!(services.iter().all(|s| s["matches"] == true), "{report:#}");

    // Snapshots were saved by every service as it went, and each view starts from its
    // newest one where it starts from scratch.
    for view in ["registry-entries", "scheduler-runs", "quality-records", "context-scopes"] {
        osp_tests::eventually(Duration::from_secs(10), &format!("a snapshot of {view}"), || async {
            snapshots(&log).await.iter().any(|name| name.starts_with(&format!("{view}/")))
        })
        .await;
    }
    from_snapshot_and_scratch(&log, &osp_scheduler::VIEW_KINDS, |v: &osp_scheduler::view::SchedulerView| {
        v.digest().unwrap().digest
    })
    .await;
    from_snapshot_and_scratch(&log, &osp_registry::VIEW_KINDS, |v: &osp_registry::view::RegistryView| {
        v.digest().unwrap().digest
    })
    .await;
    from_snapshot_and_scratch(&log, &osp_quality::VIEW_KINDS, |v: &osp_quality::view::QualityView| {
        v.digest().unwrap().digest
    })
    .await;
    from_snapshot_and_scratch(&log, &osp_context::KINDS, |v: &osp_context::view::ContextView| {
        v.digest().unwrap().digest
    })
    .await;

    // Export the whole log and the run; import each into an empty server of its own.
    let whole = folder.path().join("log.ndjson");
    let run = folder.path().join("run.ndjson");
    let (_, wrote) = exits(0, &url, &["log", "export", "-o", whole.to_str().unwrap()]).await;
    assert!(wrote.starts_with("exported ") && wrote.contains(&format!(" to {}", whole.display())), "{wrote}");
    ok(&url, &["log", "export", "--run", "flaky-2", "-o", run.to_str().unwrap()]).await;
    let before = system.digests().await;
    let timeline = replay_json(&url, &["replay", "run", "flaky-2", "--json"]);
    let (_, refused) = exits(1, &url, &["log", "import", whole.to_str().unwrap()]).await;
    assert!(refused.contains("is not empty"), "{refused}");

    let copy = NatsServer::start().await.unwrap();
    let copy_url = copy.url();
    let imported = ok(&copy_url, &["log", "import", whole.to_str().unwrap()]).await;
    assert!(imported.contains("every event has its original sequence"), "{imported}");
    // Services started on the copy (from scratch) reach the very same states.
    let copied = System::on(copy, Snapshots::OFF).await;
    let last = copied.log().await.last_sequence().await.unwrap();
    copied.client.saw(last);
    assert_eq!(copied.digests().await, before);
    let report = replay_json(&copy_url, &["log", "verify", "--json"]);
    assert_eq!(report["clean"], true, "{report:#}");
    assert_eq!(
        replay_json(&copy_url, &["replay", "run", "flaky-2", "--json"]),
        timeline,
        "the same timeline, hashes and all"
    );
    copied.stop().await;

    // The run alone: the same events, bytes and hashes, at new sequences.
    let alone = NatsServer::start().await.unwrap();
    ok(&alone.url(), &["log", "import", run.to_str().unwrap()]).await;
    let replayed = replay_json(&alone.url(), &["replay", "run", "flaky-2", "--json"]);
    let hashes = |timeline: &Value| -> Vec<(Value, Value)> {
        timeline["events"].as_array().unwrap().iter().map(|e| (e["type"].clone(), e["hash"].clone())).collect()
    };
    assert_eq!(hashes(&replayed), hashes(&timeline));
    assert_eq!(replay_json(&alone.url(), &["log", "verify", "--json", "--no-services"])["clean"], true);

    // A forged event on the original log: found, by its sequence.
    let forged = json!({"forged": true}).to_string();
    let ack = log.jetstream().publish("osp.v1.evt.run.flaky-2", forged.into()).await.unwrap().await.unwrap();
    let (out, _) = exits(1, &url, &["log", "verify"]).await;
    assert!(out.contains(&format!("seq {} on osp.v1.evt.run.flaky-2: malformed event", ack.sequence)), "{out}");
    system.stop().await;
}

/// A view whose state is not the log's: a forged snapshot, consistent with itself (so
/// the checks that guard against a corrupt one pass), holding the state of an earlier
/// point of the log while it claims to cover all of it.
#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_live_state_that_is_not_the_logs() {
    let system = System::start().await.with_agent().await;
    let folder = tempfile::tempdir().unwrap();
    run_workflow(&system, folder.path(), "flaky-3").await;
    let log = system.log().await;
    let url = system.url.clone();
    let filter = "osp.v1.evt.run.*";
    let whole: SchedulerView = osp_runtime::fold(&log, &[filter], None, |_, _| {}).await.unwrap();
    let last_run_event = whole.digest().unwrap().applied;
    let earlier: SchedulerView = osp_runtime::fold(&log, &[filter], Some(last_run_event - 1), |_, _| {}).await.unwrap();
    let last = log.last_sequence().await.unwrap();
    // An instance that keeps its listing index in a folder, so that its next start
    // trusts a snapshot the index covers.
    let System { scheduler, .. } = system;
    scheduler.shutdown().await;
    let state = tempfile::tempdir().unwrap();
    let config = || osp_scheduler::Config { state_dir: Some(state.path().to_owned()), ..Default::default() };
    osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, config()).await.unwrap().shutdown().await;
    let bytes = osp_runtime::snapshot::encode(&earlier, last, &[filter.to_owned()], None).unwrap();
    let store = log.jetstream().get_object_store(osp_runtime::SNAPSHOTS_BUCKET).await.unwrap();
    let name = osp_runtime::snapshot::object_name(SchedulerView::NAME, SchedulerView::SHAPE, last);
    store.put(name.as_str(), &mut bytes.as_slice()).await.unwrap();
    // Only an instance that trusted it answers.
    let tampered = osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, config()).await.unwrap();
    let (out, _) = exits(1, &url, &["log", "verify"]).await;
    assert!(out.contains("scheduler: MISMATCH at seq"), "{out}");
    assert!(out.contains("registry: the live state at seq"), "{out}");
    tampered.shutdown().await;
}
