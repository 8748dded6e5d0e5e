//! What every scheduler test starts from: a fresh nats-server, scheduler instances on
//! connections of their own, a registry with agents, and clients.

use std::time::Duration;

use osp_client::Client;
use osp_local_nats::NatsServer;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use osp_scheduler::{Config, Scheduler};

/// A server of its own, on a free port with a temp store.
pub async fn server() -> NatsServer {
    NatsServer::start().await.expect("start nats-server")
}

/// A server, a scheduler instance and a client, each on a connection of its own.
pub async fn system() -> (NatsServer, Scheduler, Client) {
    let server = server().await;
    let instance = scheduler(&server.url()).await;
    let client = client(&server.url()).await;
    (server, instance, client)
}

/// A scheduler instance with its own connection.
pub async fn scheduler(url: &str) -> Scheduler {
    Scheduler::start(osp_tests::connect(url).await, Config::default()).await.expect("start the scheduler")
}

/// A client with its own connection, acting as `user:test`.
pub async fn client(url: &str) -> Client {
    Client::new(osp_tests::connect(url).await).with_actor("user:test")
}

/// Registers agent `name` offering `capabilities` (straight into the registry's log,
/// through a registry instance started for the purpose and stopped after).
pub async fn register_agent(url: &str, name: &str, capabilities: &[&str]) {
    let registry = osp_registry::Registry::start(osp_tests::connect(url).await, osp_registry::Config::default())
        .await
        .expect("start a registry");
    let entry = EntryDoc::new(
        "agents",
        name,
        format!("agent {name}"),
        from_json(&serde_json::json!({ "capabilities": capabilities, "max_concurrency": 4 })),
        None,
    )
    .expect("a valid agent entry");
    client(url).await.registry().register(&entry).await.expect("register the agent");
    registry.shutdown().await;
}

#[allow(unused_imports)] // some test binaries poll nothing
pub use osp_tests::eventually;

/// Run options from their JSON form (as a submitter writes them).
pub fn options(json: serde_json::Value) -> osp_protocol::scheduler::RunOptions {
    serde_json::from_value(json).expect("valid run options")
}

/// A run of `capability` with `input` and `options`, named `run_id`.
pub fn submission(
    run_id: &str,
    capability: &str,
    input: serde_json::Value,
    options_json: serde_json::Value,
) -> osp_client::Submission {
    osp_client::Submission::new(capability, input).run_id(run_id).options(options(options_json))
}

/// A server, a scheduler, a client, and agent `agent` registered for `capability`.
pub async fn system_with_agent(agent: &str, capability: &str) -> (NatsServer, Scheduler, Client) {
    let (server, scheduler, client) = system().await;
    register_agent(&server.url(), agent, &[capability]).await;
    (server, scheduler, client)
}

/// How long a test waits for a run to end.
pub const RUN_WITHIN: Duration = Duration::from_secs(30);

/// Starts a worker for `capability` named `agent` on its own connection.
pub async fn worker<F, Fut>(
    url: &str,
    agent: &str,
    capability: &str,
    max_concurrency: u32,
    handler: F,
) -> osp_client::Worker
where
    F: Fn(osp_client::Task) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<serde_json::Value, osp_client::TaskFailure>> + Send + 'static,
{
    let client = client(url).await;
    osp_client::Worker::builder(&client, agent)
        .capability(capability)
        .max_concurrency(max_concurrency)
        .start(handler)
        .await
        .expect("start a worker")
}

/// The error code of a refused command.
pub fn code<T: std::fmt::Debug>(result: osp_client::Result<T>) -> String {
    match result {
        Err(error) => {
            error.rejection().map(|e| e.code().to_owned()).unwrap_or_else(|| format!("not a rejection: {error}"))
        }
        Ok(value) => format!("accepted: {value:?}"),
    }
}
