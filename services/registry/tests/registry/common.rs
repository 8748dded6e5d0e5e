//! What every registry test starts from: a fresh nats-server, registry instances on
//! connections of their own, and clients.

use std::time::Duration;

use osp_client::Client;
use osp_local_nats::NatsServer;
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::EntryDoc;
use osp_registry::{Config, Registry};

/// A server of its own, on a free port with a temp store.
pub async fn server() -> NatsServer {
    NatsServer::start().await.expect("start nats-server")
}

/// A server, a registry instance (agents offline after 15 s) and a client, each on a
/// connection of its own: where most tests start.
pub async fn system() -> (NatsServer, Registry, Client) {
    let server = server().await;
    let instance = registry(&server.url(), Duration::from_secs(15)).await;
    let client = client(&server.url()).await;
    (server, instance, client)
}

/// A registry instance with its own connection.
pub async fn registry(url: &str, offline_after: Duration) -> Registry {
    let config = Config { offline_after, ..Config::default() };
    Registry::start(osp_tests::connect(url).await, config).await.expect("start the registry")
}

/// A client with its own connection.
pub async fn client(url: &str) -> Client {
    Client::new(osp_tests::connect(url).await).with_actor("user:test")
}

/// An agent entry with these capabilities.
pub fn agent(name: &str, capabilities: &[&str]) -> EntryDoc {
    EntryDoc::new(
        "agents",
        name,
        format!("agent {name}"),
        from_json(&serde_json::json!({ "capabilities": capabilities, "max_concurrency": 2 })),
        None,
    )
    .expect("a valid agent entry")
}

/// An entry of a registry without liveness.
pub fn tool(name: &str, resource: serde_json::Value) -> EntryDoc {
    EntryDoc::new("tools", name, String::new(), from_json(&resource), None).expect("a valid tool entry")
}

#[allow(unused_imports)] // some test binaries poll nothing
pub use osp_tests::eventually;
