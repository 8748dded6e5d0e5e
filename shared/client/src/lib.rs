//! The Rust client of OSP, for agents and for whoever submits work.
//!
//! The wire protocol (`docs/protocol.md`) is the real API and any NATS client can speak
//! it; this crate is that protocol with types: [`Client`] sends commands and waits for
//! their outcome, asks queries with read-your-writes, and [`Agent`] keeps an agent
//! registered and alive. [`Scheduler`] submits runs and follows them; [`Worker`] takes an
//! agent's tasks from the work queue, runs them and reports. [`Quality`] manages the rules
//! and checks outputs against them, each check an audit entry. [`Context`] reads and
//! writes the context service's scoped entries and embeddings.

mod agent;
mod client;
mod context;
mod error;
pub mod local_dev;
mod quality;
mod registry;
mod replies;
mod scheduler;
mod worker;

pub use agent::{Agent, AgentBuilder};
pub use client::{Answer, Client, DEFAULT_TIMEOUT};
pub use context::{hashing_embedder, Context, EnvEntry, SearchBy};
pub use error::{explain, Error, Result};
pub use quality::{CheckRequest, Quality};
pub use registry::Registry;
pub use scheduler::{is_final, RunUpdate, RunWatch, Scheduler, Submission};
pub use worker::{
    heartbeat_period, work_consumer_config, LogLevel, Task, TaskFailure, Worker, WorkerBuilder, WorkerStats,
};
