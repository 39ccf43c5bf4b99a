//! End-to-end scenarios for Partita.
//!
//! Nothing is implemented here yet (see the README's "State" section). The plan, from
//! DESIGN.md: an in-memory Kubernetes API that `kube::Client` talks to, a StatefulSet
//! controller and kubelet that run real `partita-node` processes on loopback, the real operator
//! in-process, and scenarios written once against `kube::Client` so they also run on a real
//! cluster.

pub use partita_api as api;
