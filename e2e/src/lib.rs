//! Partita end to end: a Kubernetes cluster in a box, and scenarios that run on it or on a real
//! cluster.
//!
//! There is no kube-apiserver, kubelet or container runtime on the machines that run the test
//! suite, so the box provides what the operator relies on, each piece talking to the others only
//! through `kube::Client` as on a real cluster:
//! - [`api`]: an in-memory Kubernetes API, a tower Service that `kube::Client` calls directly;
//! - [`statefulset`]: a StatefulSet controller (pods by ordinal, OnDelete, volume claims);
//! - [`kubelet`]: runs each bound pod's container as a real `partita-node` process on its own
//!   loopback address, probes readiness, and injects faults (SIGKILL, SIGSTOP, a cut network);
//! - [`cluster`]: the [`cluster::Cluster`] trait the scenarios are written against, with the box
//!   ([`inbox::InBox`]) and a real cluster ([`real::RealCluster`]) behind it;
//! - [`scenarios`]: the scenarios, each printing one `SCENARIO <name> ok <metric>=<value> …`.

pub mod api;
pub mod bench;
pub mod cluster;
pub mod error;
pub mod inbox;
pub mod kubelet;
pub mod real;
pub mod scenarios;
pub mod statefulset;

pub use error::{Error, Result};
