//! One real nats-server process with JetStream: start, readiness, stop / kill / restart.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::ports::free_ports;
use crate::{find, Binary, Error};

/// How long a started server may take to accept a client and answer JetStream.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for one readiness probe; a forming cluster can leave requests unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness probes and between exit checks while stopping.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long `stop` waits after SIGTERM before resorting to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts attempted when an auto-picked port turns out to be taken.
const PORT_ATTEMPTS: usize = 3;
/// Log lines quoted in startup errors.
const LOG_TAIL_LINES: usize = 30;
/// Default log file name, inside the store dir.
pub(crate) const LOG_FILE_NAME: &str = "nats-server.log";

/// Knobs for [`NatsServer::start_with`]; the defaults give an isolated throwaway server.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Client port on 127.0.0.1. `None` picks a free one, so parallel tests never collide.
    pub port: Option<u16>,
    /// JetStream store dir. `None` uses a fresh temp dir owned (and deleted) by the handle;
    /// pass a path to keep data across handles.
    pub store_dir: Option<PathBuf>,
    /// Server name (`-n`); `None` lets the server generate one.
    pub server_name: Option<String>,
    /// Server log. `None` writes `nats-server.log` in the store dir, so output never
    /// reaches the test's stdout but is still there to read when something fails.
    pub log_file: Option<PathBuf>,
}

/// How the process is configured: flags suffice for one node; cluster routes need a file.
#[derive(Debug)]
pub(crate) enum Launch {
    /// `-a 127.0.0.1 -p PORT -js -sd STORE [-n NAME]`.
    Flags { server_name: Option<String> },
    /// `-c FILE`, with everything (listen, store, cluster) in the file.
    ConfigFile(PathBuf),
}

/// A running (or stopped, restartable) nats-server with JetStream on loopback.
///
/// Exists so tests and `osp dev` use the real server, and can exercise crashes and
/// restarts: the port and store dir survive [`kill`](Self::kill) + [`restart`](Self::restart).
/// Dropping the handle kills the process and deletes a store dir it created.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    launch: Launch,
    port: u16,
    store_dir: PathBuf,
    log_file: PathBuf,
    /// Length of the log when the current process started, so errors quote only its lines.
    log_offset: u64,
    child: Option<Child>,
    /// Deleted on drop, after `Drop::drop` has killed the process.
    _temp_dir: Option<TempDir>,
}

impl NatsServer {
    /// Start a single node with the binary from [`find`] and default options.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(&find()?, ServerOptions::default()).await
    }

    /// Start a single node and wait until it accepts clients and answers JetStream.
    pub async fn start_with(binary: &Binary, opts: ServerOptions) -> Result<Self, Error> {
        let (store_dir, temp_dir) = match opts.store_dir {
            Some(dir) => (dir, None),
            None => {
                let temp = temp_dir("osp-nats-")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let log_file = opts.log_file.unwrap_or_else(|| store_dir.join(LOG_FILE_NAME));
        let port = match opts.port {
            Some(port) => port,
            None => pick_port()?,
        };
        let launch = Launch::Flags { server_name: opts.server_name };
        let mut server = Self::new(binary, launch, port, store_dir, log_file, temp_dir);

        let mut attempts = 1;
        loop {
            server.spawn()?;
            match server.wait_ready().await {
                Err(e) if opts.port.is_none() && attempts < PORT_ATTEMPTS && e.is_port_in_use() => {
                    tracing::debug!(port = server.port, "port taken before nats-server bound it; retrying");
                    attempts += 1;
                    server.port = pick_port()?;
                }
                result => return result.map(|()| server),
            }
        }
    }

    /// A handle that has not spawned anything yet; [`Cluster`](crate::Cluster) uses it
    /// to start all nodes before waiting for any.
    pub(crate) fn new(
        binary: &Binary,
        launch: Launch,
        port: u16,
        store_dir: PathBuf,
        log_file: PathBuf,
        temp_dir: Option<TempDir>,
    ) -> Self {
        NatsServer {
            binary: binary.path.clone(),
            launch,
            port,
            store_dir,
            log_file,
            log_offset: 0,
            child: None,
            _temp_dir: temp_dir,
        }
    }

    /// Client URL, e.g. `nats://127.0.0.1:4222`. Stable across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Client port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// JetStream store dir, kept across restarts.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// OS process id while the server process exists (for signals from outside).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Graceful shutdown: SIGTERM, then wait for exit (SIGKILL after 10 s).
    /// Does nothing if the server is not running.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).map_err(|errno| Error::Io {
            what: format!("sending SIGTERM to nats-server {pid}"),
            source: errno.into(),
        })?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.is_running() {
            if Instant::now() >= deadline {
                tracing::warn!(pid, "nats-server ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
                self.kill();
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Crash the server: SIGKILL and reap, with no chance to flush. For testing recovery.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error only means it already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            // A killed server cannot delete its ports file; do it so the dir stays tidy.
            if let Some(stale) = self.ports_file(child.id()) {
                let _ = fs::remove_file(stale);
            }
        }
    }

    /// Start again on the same port and store dir (data kept), killing the old
    /// process first if it is still running, and wait until ready.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }

    /// Whether the process is alive; reaps it if it has exited.
    pub fn is_running(&mut self) -> bool {
        self.running_pid().is_some()
    }

    /// The pid if the process is alive; reaps it (dropping the handle) if it has exited.
    fn running_pid(&mut self) -> Option<u32> {
        self.reap();
        self.pid()
    }

    /// If the process has exited, reap it and return how it exited.
    fn reap(&mut self) -> Option<ExitStatus> {
        // try_wait only fails if the child is already reaped, which `kill` prevents.
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Launch the process. Output goes to the log file: `-l` for the server's own log,
    /// and stderr appended to the same file for anything printed before logging starts
    /// (bad flags, config errors). `--ports_file_dir` makes the server announce, once its
    /// listeners are bound, that the port really is its own (see [`wait_ready`](Self::wait_ready)).
    pub(crate) fn spawn(&mut self) -> Result<(), Error> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(Error::io(format!("opening log {}", self.log_file.display())))?;
        self.log_offset = log.metadata().map_or(0, |m| m.len());

        let mut command = Command::new(&self.binary);
        match &self.launch {
            Launch::Flags { server_name } => {
                command.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"]);
                command.arg(&self.store_dir);
                if let Some(name) = server_name {
                    command.arg("-n").arg(name);
                }
            }
            Launch::ConfigFile(path) => {
                command.arg("-c").arg(path);
            }
        }
        command.arg("-l").arg(&self.log_file);
        command.arg("--ports_file_dir").arg(&self.store_dir);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        tracing::debug!(pid = child.id(), url = %self.url(), "nats-server spawned");
        self.child = Some(child);
        Ok(())
    }

    /// Poll until this process has bound its port (its ports file exists), a client can
    /// connect and JetStream answers an account-info request (in a cluster that needs a
    /// meta leader), or fail with the log tail.
    ///
    /// The ports file matters: without it, a probe could succeed against some other
    /// process already listening on the port while ours is about to die of "address in use".
    pub(crate) async fn wait_ready(&mut self) -> Result<(), Error> {
        let url = self.url();
        let started = Instant::now();
        loop {
            if let Some(status) = self.reap() {
                return Err(Error::Exited { status, log: self.log_file.clone(), log_tail: self.log_tail() });
            }
            let bound = self.pid().and_then(|pid| self.ports_file(pid)).is_some();
            let last_error = if !bound {
                "listeners not bound yet (no ports file)".to_string()
            } else {
                match tokio::time::timeout(PROBE_TIMEOUT, probe(&url)).await {
                    Ok(Ok(())) => {
                        tracing::debug!(%url, elapsed = ?started.elapsed(), "nats-server ready");
                        return Ok(());
                    }
                    Ok(Err(e)) => e,
                    Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
                }
            };
            if started.elapsed() >= READY_TIMEOUT {
                return Err(self.not_ready(started.elapsed(), last_error));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The file nats-server writes into `--ports_file_dir` after binding its listeners,
    /// `<executable name>_<pid>.ports`. Matched by suffix since the name part is the
    /// server's idea of its executable name, which symlinks can change.
    fn ports_file(&self, pid: u32) -> Option<PathBuf> {
        let suffix = format!("_{pid}.ports");
        fs::read_dir(&self.store_dir)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
    }

    /// The last lines the current process wrote to the log, for error messages.
    /// The error of a server still not ready after `waited`, with its log's tail.
    pub(crate) fn not_ready(&self, waited: Duration, last_error: String) -> Error {
        Error::NotReady { url: self.url(), waited, last_error, log: self.log_file.clone(), log_tail: self.log_tail() }
    }

    fn log_tail(&self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.log_file) {
            // Best effort: a missing or unreadable log just gives an empty tail.
            let _ = file.seek(SeekFrom::Start(self.log_offset)).and_then(|_| file.read_to_end(&mut bytes));
        }
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for NatsServer {
    /// Never leave a server behind after a test, even one that panicked.
    fn drop(&mut self) {
        self.kill();
    }
}

/// One readiness probe: connect, then ask JetStream for account info.
async fn probe(url: &str) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| format!("connect: {e}"))?;
    async_nats::jetstream::new(client).query_account().await.map_err(|e| format!("JetStream account info: {e}"))?;
    Ok(())
}

fn pick_port() -> Result<u16, Error> {
    Ok(free_ports(1).map_err(Error::io("picking a free port"))?[0])
}

/// A temp dir for a server's store (and its log and config).
pub(crate) fn temp_dir(prefix: &str) -> Result<TempDir, Error> {
    tempfile::Builder::new().prefix(prefix).tempdir().map_err(Error::io("creating a temp store dir"))
}
