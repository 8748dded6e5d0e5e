//! The Python example agent (`examples/python/agent.py`) against a real server and
//! registry: the wire protocol spoken from another language with nothing but nats-py.
//!
//! Needs `python3` and nats-py in `.osp/tools/python` (`scripts/install-python-deps`,
//! which `scripts/test` runs).

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::{eventually, system};
use futures::StreamExt;
use osp_eventlog::EventLog;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::{EntryView, PageRequest, Status};
use osp_protocol::registry::{EntryEvent, EntryKey};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long to wait for anything the agent does: generous, for a cold Python start on a
/// loaded machine. Nothing is asserted about how long it actually takes.
const WAIT: Duration = Duration::from_secs(60);

/// The workspace root (this crate is `services/registry`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root exists")
}

/// Where `scripts/install-python-deps` puts nats-py.
fn python_packages() -> PathBuf {
    workspace_root().join(".osp/tools/python")
}

/// Fails with what to do when nats-py is not installed where the agent will look.
async fn require_nats_py() {
    let packages = python_packages();
    let probe = Command::new("python3")
        .args(["-c", "import nats"])
        .env("PYTHONPATH", &packages)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("run python3 (is Python 3 installed?)");
    assert!(
        probe.status.success(),
        "nats-py cannot be imported from {}: run scripts/install-python-deps\n{}",
        packages.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// `examples/python/agent.py` running as a child process.
struct PythonAgent {
    child: Child,
    /// Its stdout, line by line, as printed.
    lines: mpsc::UnboundedReceiver<String>,
    /// Its whole stderr, once it exits.
    stderr: JoinHandle<String>,
}

impl PythonAgent {
    /// Starts the agent on the server at `url` with `args`.
    async fn start(url: &str, args: &[&str]) -> PythonAgent {
        require_nats_py().await;
        let root = workspace_root();
        let mut child = Command::new("python3")
            .arg(root.join("examples/python/agent.py"))
            .args(["--nats-url", url])
            .args(args)
            .current_dir(&root)
            .env("PYTHONPATH", python_packages())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("OSP_NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start python3 examples/python/agent.py");
        let (send, lines) = mpsc::unbounded_channel();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                println!("agent> {line}");
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        PythonAgent { child, lines, stderr }
    }

    /// Waits for the next line of stdout starting with `prefix` and returns it; fails if
    /// the agent ends first.
    async fn line_starting(&mut self, prefix: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => {
                let (status, stderr) = self.finish().await;
                panic!("the agent ended ({status}) without printing {prefix:?}; its stderr:\n{stderr}")
            }
            Err(_) => panic!("no line {prefix:?} from the agent within {WAIT:?}"),
        }
    }

    /// Sends SIGTERM, what `kill` and service managers send.
    async fn terminate(&self) {
        let pid = self.child.id().expect("the agent is still running");
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the agent to exit: its status, the rest of its stdout, and its stderr.
    async fn exit(mut self) -> (ExitStatus, Vec<String>, String) {
        let (status, stderr) = self.finish().await;
        // The reader ends at the end of the pipe, which closes the channel.
        let mut rest = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            rest.push(line);
        }
        (status, rest, stderr)
    }

    async fn finish(&mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the agent did not exit within {WAIT:?}"))
            .expect("wait for the agent");
        let stderr = tokio::time::timeout(WAIT, &mut self.stderr).await.ok().and_then(Result::ok).unwrap_or_default();
        (status, stderr)
    }
}

/// The card the agent below registers (`--capability py-echo --capability py-shout
/// --max-concurrency 3`, and the version the script declares).
fn expected_card() -> serde_json::Value {
    json!({"capabilities": ["py-echo", "py-shout"], "max_concurrency": 3, "version": "0.1.0"})
}

fn resource_json(view: &EntryView) -> serde_json::Value {
    serde_json::to_value(&view.resource).expect("a resource reads as JSON")
}

#[tokio::test]
async fn the_python_agent_registers_heartbeats_and_unregisters_on_sigterm() {
    const NAME: &str = "py-agent-1";
    let (server, instance, client) = system().await;
    let registry = client.registry();
    // Listen for its beats before it starts, so none is missed.
    let mut beats = osp_tests::connect(&server.url()).await.subscribe(format!("osp.v1.hb.{NAME}")).await.unwrap();

    let mut agent = PythonAgent::start(
        &server.url(),
        &[
            "--name",
            NAME,
            "--capability",
            "py-echo",
            "--capability",
            "py-shout",
            "--max-concurrency",
            "3",
            "--heartbeat",
            "1",
        ],
    )
    .await;
    let registered = agent.line_starting("registered ").await;
    let seq = registered
        .strip_prefix(&format!("registered agents/{NAME} at seq "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|seq| seq.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unexpected registration line: {registered:?}"));
    assert!(seq > 0, "{registered}");
    // Its own find (read-your-writes on its register's seq) lists it. With one registry
    // instance, the view has then applied the registration for our queries too.
    let found = agent.line_starting("found in find: ").await;
    let names: Vec<String> = serde_json::from_str(found.trim_start_matches("found in find: ")).expect("a JSON list");
    assert_eq!(names, [NAME]);

    // Found by its second capability, online, with the card it sent.
    let by_capability =
        registry.find_all("agents", from_json(&json!({"capabilities": "py-shout"})), true).await.unwrap();
    assert_eq!(by_capability.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), [NAME]);
    let entry = &by_capability[0];
    assert_eq!((entry.status, entry.revision), (Status::Online, 1));
    assert_eq!(resource_json(entry), expected_card());
    assert_eq!(entry.description, "An example agent written in Python");
    let metadata = serde_json::to_value(entry.metadata.as_ref().expect("metadata")).unwrap();
    assert_eq!(metadata["language"], "python", "{metadata}");

    // It beats on the subject the registry listens to, and is live (a registration
    // starts online; the beats keep it so).
    for _ in 0..2 {
        let beat = tokio::time::timeout(WAIT, beats.next()).await;
        beat.unwrap_or_else(|_| panic!("no heartbeat on osp.v1.hb.{NAME} within {WAIT:?}")).expect("subscribed");
    }
    let live = registry.live(PageRequest::default()).await.unwrap();
    assert!(live.entries.iter().any(|e| e.name == NAME && e.status == Status::Online), "not live: {live:?}");

    // SIGTERM: it unregisters and exits 0.
    agent.terminate().await;
    let (status, rest, stderr) = agent.exit().await;
    assert!(status.success(), "the agent exited with {status}; its stderr:\n{stderr}");
    assert_eq!(rest, ["unregistered"], "stderr:\n{stderr}");
    eventually(WAIT, "the entry to be gone", || async { registry.get("agents", NAME).await.unwrap().is_none() }).await;

    // The log: what it caused carries its actor; what it sent is what was recorded.
    let key = EntryKey::new("agents", NAME).unwrap();
    let log = EventLog::open(osp_tests::connect(&server.url()).await).await.unwrap();
    let history = log.load::<EntryEvent>(&key.aggregate()).await.unwrap().events;
    let caused: Vec<_> = history
        .iter()
        .filter(|e| !matches!(e.envelope.payload, EntryEvent::WentOffline(_) | EntryEvent::CameOnline(_)))
        .collect();
    assert_eq!(caused.len(), 2, "a registration and an unregistration: {history:?}");
    for event in &caused {
        assert_eq!(event.envelope.actor, format!("agent:{NAME}"), "{event:?}");
    }
    match &caused[0].envelope.payload {
        EntryEvent::Registered(doc) => {
            assert_eq!(doc.name.as_str(), NAME);
            assert_eq!(serde_json::to_value(&doc.resource).unwrap(), expected_card());
        }
        other => panic!("expected entry.registered first, found {other:?}"),
    }
    assert_eq!(caused[0].seq, seq, "the register reply's seq is its event's");
    match &caused[1].envelope.payload {
        EntryEvent::Unregistered(gone) => assert_eq!(gone.reason.as_deref(), Some("shut down")),
        other => panic!("expected entry.unregistered last, found {other:?}"),
    }
    instance.shutdown().await;
}

#[tokio::test]
async fn a_refused_registration_exits_2_with_the_registrys_message() {
    let (server, instance, client) = system().await;

    let agent = PythonAgent::start(&server.url(), &["--name", "py-bad", "--capability", "not.a.token"]).await;
    let (status, stdout, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(2), "stdout: {stdout:?}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(r#"invalid resource.capabilities[0] "not.a.token": must not contain '.'"#),
        "the registry's message is shown: {stderr}"
    );
    assert!(!stdout.iter().any(|line| line.starts_with("registered")), "{stdout:?}");
    assert_eq!(client.registry().get("agents", "py-bad").await.unwrap(), None);
    instance.shutdown().await;
}
