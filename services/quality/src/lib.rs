//! The OSP quality service (OSP "Checks", the lifecycle's Evaluation phase).
//!
//! So far its pure core: [`rules`] checks a task's output against the built-in rule
//! kinds. The service around it (the rule catalog as commands and events, the judge
//! through the task machinery, audit entries, gating runs) comes next.

pub mod rules;
