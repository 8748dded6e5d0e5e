//! What every context test starts from: a fresh nats-server, context instances on
//! connections of their own, and clients acting as someone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use osp_client::{Client, Error};
use osp_context::{Config, Context};
use osp_local_nats::NatsServer;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;

/// A server of its own, on a free port with a temp store.
pub async fn server() -> NatsServer {
    NatsServer::start().await.expect("start nats-server")
}

/// A context instance with its own connection.
pub async fn context(url: &str) -> Context {
    context_keeping(url, osp_runtime::KEEP_FINISHED).await
}

/// A context instance that keeps a run's facts and scope in memory for `keep_finished`
/// after the run ended.
pub async fn context_keeping(url: &str, keep_finished: Duration) -> Context {
    let config = Config {
        service: osp_runtime::ServiceConfig { keep_finished, ..Default::default() },
        reveal_to: vec!["user:ops".into()],
        embed_timeout: Duration::from_secs(5),
        seal_key: Some(seal_key()),
    };
    Context::start(osp_tests::connect(url).await, config).await.expect("start the context service")
}

/// A client acting as `actor`, with its own connection.
pub async fn client(url: &str, actor: &str) -> Client {
    Client::new(osp_tests::connect(url).await).with_actor(actor)
}

/// The rejection a command or query got.
#[track_caller]
pub fn refusal<T: std::fmt::Debug>(outcome: Result<T, Error>) -> osp_protocol::Error {
    match outcome {
        Err(Error::Rejected { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// An `osp-context` process with `OSP_LOG` at `log`, as an operator runs it; returns once
/// it serves, with every line it logs kept.
pub async fn spawn_context(url: &str, log: &str) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp-context"))
        .args(["--nats-url", url, "--ack-wait", "2s", "--reveal-to", "user:ops"])
        .env("OSP_LOG", log)
        .env("OSP_CONTEXT_SEAL_KEY", "5e".repeat(32))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start osp-context");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let logged = Arc::new(Mutex::new(Vec::new()));
    let up = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let started = line.contains("context started");
            logged.lock().unwrap().push(line);
            if started {
                return true;
            }
        }
        false
    });
    assert!(up.await.unwrap_or(false), "osp-context did not start");
    let keeping = logged.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keeping.lock().unwrap().push(line);
        }
    });
    (child, logged)
}

pub use osp_tests::eventually;

/// The seal key the tests' context instances share.
pub fn seal_key() -> osp_context::sealing::SealKey {
    osp_context::sealing::SealKey::from_hex(&"5e".repeat(32)).expect("a valid key")
}
