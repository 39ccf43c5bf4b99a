//! The Partita operator, as a library so that tests run the same code in-process as the binary.
//!
//! Layout, from DESIGN.md:
//! - [`validate`] and [`resources`] are pure: a spec is checked, then turned into the objects a
//!   set owns.
//! - [`status`] is pure: what the reconcile saw becomes the status and the Events to record.
//! - [`controller`] does the I/O: a kube-runtime reconcile wrapped in a finalizer that applies
//!   objects by server-side apply and writes status the same way.
//! - [`leader`] elects one acting replica through a Lease; its decisions are pure too.
//! - [`metrics`] and [`http`] serve `/metrics`, `/healthz` and `/readyz`.
//! - [`planner`] is pure: `plan(desired, observed, current, now)` decides placement, failover,
//!   switchover, moves and rollouts; [`controller`] records its map and carries its actions out.
//! - [`health`] and [`nodes`] poll and call the nodes over gRPC.
//! - [`requests`] is pure: the values of the request annotations (switchover, rebalance) that
//!   users set and the operator acts on.
//! - [`run`] runs the whole operator (HTTP, election, controller), for `main` and the e2e box.
//! - [`plugin`] is the `kubectl-partita` kubectl plugin; its formatting and checks are pure.
//!
//! The resource types come from [`partita_api`].

pub mod backoff;
pub mod controller;
pub mod error;
pub mod health;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod planner;
pub mod plugin;
pub mod requests;
pub mod resources;
pub mod run;
pub mod status;
pub mod validate;

pub use error::{Error, Result};
pub use partita_api as api;
