//! Find or install the pinned nats-server and run it locally — a single node or a
//! JetStream cluster — for tests, benchmarks and `osp dev`.
//!
//! No mocks: everything here launches the real binary, so tests see real JetStream
//! behaviour, including crashes ([`NatsServer::kill`]) and recovery ([`NatsServer::restart`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), osp_local_nats::Error> {
//! let server = osp_local_nats::NatsServer::start().await?;
//! let client = async_nats::connect(server.url()).await.unwrap();
//! # Ok(()) }
//! ```

mod binary;
mod cluster;
mod error;
mod ports;
mod server;

pub use binary::{find, find_in, find_or_install, install, Binary, Source, ENV_VAR, PINNED_VERSION};
pub use cluster::Cluster;
pub use error::{Error, Rejected};
pub use server::{NatsServer, ServerOptions};
