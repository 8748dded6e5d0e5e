//! The Python example agent (`examples/python/agent.py`) as a child process, for the
//! tests that speak the wire protocol from another language.
//!
//! Needs `python3` and nats-py in `.osp/tools/python` (`scripts/install-python-deps`,
//! which `scripts/test` runs).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long to wait for anything the agent does: generous, for a cold Python start on a
/// loaded machine. Nothing is asserted about how long it actually takes.
pub const WAIT: Duration = Duration::from_secs(60);

/// The workspace root (this crate is `tests`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the workspace root exists")
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
pub struct PythonAgent {
    child: Child,
    /// Its stdout, line by line, as printed.
    lines: mpsc::UnboundedReceiver<String>,
    /// Its whole stderr, once it exits.
    stderr: JoinHandle<String>,
}

impl PythonAgent {
    /// Starts the agent on the server at `url` with `args`.
    pub async fn start(url: &str, args: &[&str]) -> PythonAgent {
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
    pub async fn line_starting(&mut self, prefix: &str) -> String {
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
    pub async fn terminate(&self) {
        let pid = self.child.id().expect("the agent is still running");
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Kills it with SIGKILL: the process dies with no last word.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the agent");
        let _ = self.child.wait().await;
    }

    /// Waits for the agent to exit: its status, the rest of its stdout, and its stderr.
    pub async fn exit(mut self) -> (ExitStatus, Vec<String>, String) {
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
