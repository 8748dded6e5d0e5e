//! What the `osp` binary tests share: running `osp` against a server, `osp dev` in a
//! folder of its own, and the services with an agent for the `osp run` tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use osp_client::{Client, Worker, WorkerBuilder};
use osp_local_nats::NatsServer;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Runs `osp args...` against the server at `url` and waits for it to finish.
pub fn osp(url: &str, args: &[&str]) -> std::process::Output {
    osp_with(url, &[], args)
}

/// Runs `osp args...` against the server at `url` with the environment variables `vars`
/// (a time zone, say) and waits for it to finish.
pub fn osp_with(url: &str, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_osp"));
    command.args(args).env("OSP_NATS_URL", url).envs(vars.iter().copied()).output().expect("run osp")
}

/// `osp dev` running in `folder` on a free port, and what it printed on starting.
pub struct Dev {
    /// The process; killed when dropped.
    pub process: Child,
    /// The URL from its first line.
    pub url: String,
    /// Its lines up to "Ctrl-C to stop.", the first included.
    pub banner: Vec<String>,
    /// Its stdout, kept open: its last words need a reader.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Dev {
    /// Starts `osp dev --port <free> extra...` in `folder` and reads its banner.
    pub async fn start(folder: &Path, extra: &[&str]) -> Dev {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp"))
            .args(["dev", "--port", &port.to_string()])
            .args(extra)
            .env_remove("OSP_NATS_URL")
            .current_dir(folder)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        while let Some(line) = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.unwrap().unwrap()
        {
            if line == "Ctrl-C to stop." {
                break;
            }
            banner.push(line);
        }
        let first = banner.first().expect("osp dev printed its banner");
        let url = first.strip_prefix("OSP is up on ").expect("the first line gives the URL").to_owned();
        Dev { process, url, banner, _stdout: stdout }
    }

    /// Sends Ctrl-C and checks that it exits cleanly.
    pub async fn stop(mut self) {
        Command::new("kill").args(["-INT", &self.process.id().unwrap().to_string()]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.process.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// How long one `osp` command may take.
pub const COMMAND_WITHIN: Duration = Duration::from_secs(60);

/// A server with the registry and the scheduler running, and one agent registered; the
/// agent's [`Worker`] is the test's, for its handler is what the test is about.
pub struct Services {
    /// The server's URL, for `osp`.
    pub url: String,
    /// A client acting as `user:test`.
    pub client: Client,
    agent: String,
    capabilities: Vec<String>,
    max_concurrency: u32,
    scheduler: osp_scheduler::Scheduler,
    registry: osp_registry::Registry,
    _server: NatsServer,
}

impl Services {
    /// Starts a server, the registry and the scheduler, and registers agent `agent`
    /// offering `capabilities`, `max_concurrency` tasks at once: the scheduler refuses a
    /// submit no registered agent can take.
    pub async fn start(agent: &str, capabilities: &[&str], max_concurrency: u32) -> Services {
        let server = NatsServer::start().await.unwrap();
        let url = server.url();
        let registry = osp_registry::Registry::start(osp_tests::connect(&url).await, osp_registry::Config::default())
            .await
            .unwrap();
        let client = Client::new(osp_tests::connect(&url).await).with_actor("user:test");
        let card = json!({"capabilities": capabilities, "max_concurrency": max_concurrency});
        let entry = EntryDoc::new("agents", agent, "a test agent".into(), from_json(&card), None).unwrap();
        client.registry().register(&entry).await.unwrap();
        let scheduler =
            osp_scheduler::Scheduler::start(osp_tests::connect(&url).await, osp_scheduler::Config::default())
                .await
                .unwrap();
        Services {
            url,
            client,
            agent: agent.to_owned(),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            max_concurrency,
            scheduler,
            registry,
            _server: server,
        }
    }

    /// The registered agent's worker, connected as `agent:<name>` with the capabilities
    /// and the concurrency it was registered with; the caller starts it with its handler.
    pub async fn worker(&self) -> WorkerBuilder {
        let agent = Client::new(osp_tests::connect(&self.url).await).with_actor(format!("agent:{}", self.agent));
        Worker::builder(&agent, &self.agent).capabilities(&self.capabilities).max_concurrency(self.max_concurrency)
    }

    /// Stops the agent's `worker` first, while the scheduler can still take its reports,
    /// then the scheduler and the registry.
    pub async fn stop(self, worker: Worker) {
        worker.shutdown().await;
        self.scheduler.shutdown().await;
        self.registry.shutdown().await;
    }
}

/// `osp args...` against `url` as user `tester` (the actor its commands act as), nothing
/// on stdin, its output piped; killed when dropped.
pub fn command(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp"));
    command
        .args(args)
        .env("OSP_NATS_URL", url)
        .env("USER", "tester")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits up to [`COMMAND_WITHIN`] for `osp args...`, spawned as `child`, and expects exit
/// status `code`; its stdout and stderr.
pub async fn exited(code: i32, args: &[&str], child: Child) -> (String, String) {
    let out =
        tokio::time::timeout(COMMAND_WITHIN, child.wait_with_output()).await.expect("osp finished in time").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "osp {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout.into_owned(), stderr.into_owned())
}

/// Runs [`command`] and expects exit status `code`; its stdout and stderr.
pub async fn exits(code: i32, url: &str, args: &[&str]) -> (String, String) {
    exited(code, args, command(url, args).spawn().unwrap()).await
}

/// Runs [`command`] with `stdin` on its stdin and expects exit status `code`; its stdout
/// and stderr.
pub async fn exits_with_stdin(code: i32, url: &str, args: &[&str], stdin: &str) -> (String, String) {
    let mut child = command(url, args).stdin(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    exited(code, args, child).await
}

/// Runs [`command`] and expects success; its stdout.
pub async fn ok(url: &str, args: &[&str]) -> String {
    exits(0, url, args).await.0
}

/// Runs [`command`] and expects exit status 1; its stderr.
pub async fn fails(url: &str, args: &[&str]) -> String {
    exits(1, url, args).await.1
}

/// The values of NDJSON output, a line each.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}
