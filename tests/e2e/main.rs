//! End-to-end tests of the event store and the service shell against a real
//! nats-server, one per test.

mod append;
mod consumers;
mod durability;
mod executor;
mod guards;
mod ownership;
mod replay;
mod service;
mod snapshots;
mod timers;
mod upcast;
mod verify;
