//! The scheduler against a real nats-server, one module per behaviour it protects. One
//! test binary rather than one per file: each binary links the whole stack, and a
//! dozen of them cost minutes of linking and gigabytes of disk.

mod common;

mod agent_lost;
mod approval_quorum;
mod bad_input;
mod cancel;
mod concurrency;
mod durable_timers;
mod eviction;
mod gating;
mod input;
mod kill_mid_run;
mod memory;
mod partitions;
mod pause_resume;
mod python_agent;
mod retry_backoff;
mod timeouts;
mod wire;
mod workflow_evaluator;
mod workflow_kill;
mod workflow_lifecycle;
mod workflow_nesting;
mod workflow_orchestrator;
mod workflow_parallel;
mod workflow_routing;
