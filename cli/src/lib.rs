//! The `osp` command's parts, as a library so that `osp-bench` (a binary of its own)
//! can reuse how the CLI connects, finds a nats-server and builds a run's timeline.

pub mod agents;
pub mod clock;
pub mod connect;
pub mod context;
pub mod dev;
pub mod doctor;
mod entries;
pub mod events;
mod json_args;
pub mod output;
pub mod quality;
pub mod registry;
pub mod replay;
pub mod run;
mod time_args;
pub mod transfer;
pub mod verify;
