//! The quality service against a real nats-server, one module per behaviour it protects
//! (one test binary, as the other services have).

mod common;

mod audits_query;
mod bad_input;
mod catalog;
mod checks;
mod eviction;
mod judge;
mod kill_mid_load;
mod two_instances;
