//! The context service against a real nats-server, one module per behaviour it protects
//! (one test binary, as the other services have).

mod common;

mod bad_input;
mod embeddings;
mod entries;
mod eviction;
mod isolation;
mod kill_and_rebuild;
mod masking;
mod two_instances;
