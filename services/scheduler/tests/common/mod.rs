//! What every scheduler test starts from: a fresh nats-server, scheduler instances on
//! connections of their own, a registry with agents, and clients.

#![allow(dead_code)] // each test binary uses its own part of this module

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

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
