//! The registry against a real nats-server, one module per behaviour it protects (one
//! test binary, for the same reason as the scheduler's).

mod common;

mod bad_input;
mod cluster;
mod entries;
mod kill_mid_stream;
mod liveness;
mod ordering_and_idempotency;
mod python_agent;
mod two_instances;
