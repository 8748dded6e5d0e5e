//! The OSP service runtime: how a service is built on the event log.
//!
//! A service brings its domain — aggregates with pure `decide` / `evolve`, views folded
//! from events, query handlers, the effects its events ask for — and this crate does the
//! rest, the same way for every service:
//! - [`Aggregate`]: the pure decision functions of one kind of aggregate;
//! - [`Projection`]: a view folded from the log and followed live, with read-your-writes
//!   ([`Projection::wait_for`]) and [`snapshot`]s so a start replays only the rest;
//!   [`resident`]: live aggregates in memory, finished ones recalled from the log;
//!   [`index`]: listings of all history from local disk;
//! - [`Executor`]: decide, append with optimistic concurrency, retry on conflict;
//! - [`Inbox`]: commands in from any client, refusals recorded, replies out;
//! - [`serve_queries`]: micro-service endpoints over a view; [`gather`]: queries over every
//!   aggregate answered together by instances that each hold a share;
//! - [`Reactor`] and [`TimerHandler`]: effects of events, as data, performed idempotently;
//!   fired timers decided as commands;
//! - [`Service`]: the one start-up, putting these parts together; [`ServiceArgs`] and
//!   [`service::main`]: the one command line and `main` of every service binary;
//! - [`testing`]: given / when / then for aggregates, with the replay law checked.
//!
//! The JetStream store underneath (append, read, definitions, work consumers, timers,
//! verify) is `osp-eventlog`.

mod aggregate;
mod executor;
pub mod gather;
mod handing;
mod inbound;
mod inbox;
pub mod index;
pub mod ownership;
mod projection;
mod queries;
mod reactor;
mod rejection;
pub mod resident;
mod running;
pub mod service;
pub mod snapshot;
pub mod testing;

pub use aggregate::{Aggregate, Folded, REMEMBERED_CAUSES};
pub use executor::{CommandMeta, Executed, Executor, Holds, Place, Refusal};
pub use gather::Part;
pub use inbound::Inbound;
pub use inbox::{CommandHandler, Inbox, InboxCounts, DEFAULT_ACK_WAIT};
pub use index::{Index, Indexed};
pub use projection::{fold, unreadable, Keeping, Keeps, Projection, View, KEEP_FINISHED};
pub use queries::{serve_queries, Caller, Query, QueryResult, ViewProgress, MIN_SEQ_WAIT};
pub use reactor::{Reactor, TimerHandler};
pub use resident::{Fingerprints, Record, Resident};
pub use running::{stop_requested, Running};
pub use service::{Service, ServiceArgs, ServiceConfig, Stop};
pub use snapshot::{Partitioned, Snapshot, Snapshots, SNAPSHOTS_BUCKET};

/// Sends tracing to stderr, filtered by `OSP_LOG` (e.g. `osp_scheduler=debug`), or at
/// `default` (`info`, `warn`) without it: what every OSP binary does first.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OSP_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
