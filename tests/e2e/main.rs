//! End-to-end tests of the event store against a real nats-server, one per test.

mod append;
mod consumers;
mod durability;
mod guards;
mod replay;
mod timers;
mod verify;
