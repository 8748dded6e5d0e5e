//! The `osp` binary as a user runs it, one module per command family (one test binary,
//! for the same reason as the services').

mod common;

mod cli;
mod context;
mod doctor;
mod errors;
mod quality;
mod readme;
mod registry;
mod replay;
mod run;
mod workflow;
