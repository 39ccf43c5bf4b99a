//! The planner: pure decisions from observations, with no kube, tokio or tonic inside
//! (DESIGN.md, "Operator"). The controller observes, asks the planner, and carries out the
//! actions it returns.
//!
//! - [`failover`]: which replica replaces a lost primary, or why none may.

pub mod failover;
