//! A JetStream cluster of real nats-server processes on loopback.

use std::fs;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use crate::ports::free_ports;
use crate::server::{temp_dir, Launch, LOG_FILE_NAME};
use crate::{find, Binary, Error, NatsServer};

/// Cluster name shared by all nodes.
const CLUSTER_NAME: &str = "osp";
/// How long a new cluster may take before it can place a stream on every node.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The throwaway stream that shows a stream can be placed on every node.
const PLACEMENT_PROBE: &str = "OSP_PLACEMENT_PROBE";

/// N nodes forming one JetStream cluster, each with its own store dir, client port and
/// route port. Exists so replicated streams, quorum loss and node restarts can be tested
/// against the real server. Dropping it kills every node and deletes their dirs.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<NatsServer>,
}

impl Cluster {
    /// Start `nodes` nodes (named `n1`..`nN`, cluster `osp`) with the binary from
    /// [`find`], and wait until JetStream answers on every node.
    ///
    /// # Panics
    /// If `nodes` is 0.
    pub async fn start(nodes: usize) -> Result<Self, Error> {
        Self::start_with(&find()?, nodes).await
    }

    /// [`start`](Self::start) with a given binary, e.g. one from
    /// [`find_or_install`](crate::find_or_install).
    ///
    /// Unlike a single node, a port taken between picking and binding is not retried:
    /// the route list is baked into every node's config.
    ///
    /// # Panics
    /// If `nodes` is 0.
    pub async fn start_with(binary: &Binary, nodes: usize) -> Result<Self, Error> {
        assert!(nodes > 0, "a cluster needs at least one node");
        let ports = free_ports(2 * nodes).map_err(Error::io("picking free ports"))?;
        let (client_ports, route_ports) = ports.split_at(nodes);

        let mut servers = Vec::with_capacity(nodes);
        for (i, (&port, &route_port)) in client_ports.iter().zip(route_ports).enumerate() {
            let name = format!("n{}", i + 1);
            let dir = temp_dir(&format!("osp-nats-{name}-"))?;
            let store_dir = dir.path().to_path_buf();
            let routes: Vec<String> = route_ports
                .iter()
                .filter(|&&p| p != route_port)
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let config = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{routes}]\n}}\n",
                store = store_dir.display().to_string(),
                routes = routes.join(", "),
            );
            let config_file = store_dir.join("nats-server.conf");
            fs::write(&config_file, config).map_err(Error::io(format!("writing {}", config_file.display())))?;

            let log_file = store_dir.join(LOG_FILE_NAME);
            let launch = Launch::ConfigFile(config_file);
            let mut server = NatsServer::new(binary, launch, port, store_dir, log_file, Some(dir));
            server.spawn()?;
            servers.push(server);
        }
        // All nodes are up before any is probed: none can be ready without a meta leader.
        for server in &mut servers {
            server.wait_ready().await?;
        }
        wait_for_placement(&servers[0], nodes).await?;
        Ok(Cluster { nodes: servers })
    }

    /// Client URLs of all nodes, in node order; pass them all to a client for failover.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i` (0-based; node `i` is named `n{i+1}`), so a test can kill, stop or restart it.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }
}

/// A stream on every node can be placed only once the meta leader knows each node as a
/// JetStream peer, which may come a moment after every node answers on its own (seen as
/// "no suitable peers for placement" when a test created its replicated streams at once):
/// place a throwaway stream on every node, retrying until it is placed, and remove it.
async fn wait_for_placement(first: &NatsServer, nodes: usize) -> Result<(), Error> {
    let started = Instant::now();
    let probe = stream::Config {
        name: PLACEMENT_PROBE.into(),
        subjects: vec!["osp.placement-probe".into()],
        num_replicas: nodes,
        storage: stream::StorageType::Memory,
        ..Default::default()
    };
    let client =
        async_nats::connect(first.url()).await.map_err(|e| first.not_ready(started.elapsed(), e.to_string()))?;
    let js = jetstream::new(client);
    loop {
        let last_error = match js.create_stream(probe.clone()).await {
            Ok(_) => match js.delete_stream(PLACEMENT_PROBE).await {
                Ok(_) => return Ok(()),
                Err(error) => format!("removing the placement probe: {error}"),
            },
            Err(error) => format!("placing a stream on {nodes} nodes: {error}"),
        };
        if started.elapsed() >= PLACEMENT_TIMEOUT {
            return Err(first.not_ready(started.elapsed(), last_error));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
