//! The OSP scheduler service.

pub mod commands;
pub mod run;
