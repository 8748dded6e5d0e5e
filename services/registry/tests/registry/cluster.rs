//! The registry as compose deploys it: a 3-node JetStream cluster, every stream on
//! three replicas, instances connected to different nodes; losing a node loses nothing.

use std::time::Duration;

use crate::common::{agent, eventually, tool};
use osp_client::Client;
use osp_eventlog::Definitions;
use osp_local_nats::Cluster;
use osp_registry::{Config, Registry};
use osp_runtime::ServiceConfig;
use serde_json::json;

#[tokio::test]
async fn three_replicas_instances_on_different_nodes_and_a_node_lost() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("osp_eventlog=debug,osp_client=debug,osp_registry=info")
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await.expect("start a 3-node cluster");
    let urls = cluster.urls();
    let service = ServiceConfig { definitions: Definitions::builtin().with_replicas(3), ..Default::default() };
    let config = || Config { service: service.clone(), ..Config::default() };
    let first = Registry::start(osp_tests::connect(&urls[0]).await, config()).await.unwrap();
    let second = Registry::start(osp_tests::connect(&urls[1]).await, config()).await.unwrap();

    let writer = Client::new(osp_tests::connect(&urls[2]).await);
    writer.registry().register(&agent("a1", &["summarize"])).await.unwrap();
    writer.registry().register(&tool("t1", json!({"kind": "cli"}))).await.unwrap();

    // A node that holds replicas (and maybe an instance's connection) goes away.
    cluster.node(1).kill();
    let reader = Client::new(osp_tests::connect(&urls[0]).await).with_timeout(Duration::from_secs(20));
    eventually(Duration::from_secs(60), "writes accepted with a node down", || async {
        reader.registry().register(&tool("t2", json!({}))).await.is_ok()
    })
    .await;
    let names: Vec<_> = reader.registry().list_all("tools").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["t1", "t2"]);
    assert!(reader.registry().get("agents", "a1").await.unwrap().is_some());

    first.shutdown().await;
    second.shutdown().await;
}
