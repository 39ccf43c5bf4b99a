//! The Partita operator, as a library so tests run the same code in-process as the binary.
//!
//! Nothing is implemented here yet (see the README's "State" section). The planned layout,
//! from DESIGN.md: `planner/` is pure (`plan(desired, observed, now) -> actions`, no kube, tokio
//! or tonic); `resources` builds the owned objects with pure functions; `observe` and `act` do
//! the I/O; `controller` wires them into a kube-runtime reconcile wrapped in a finalizer; status
//! is written with server-side apply. The resource types come from [`partita_api`].

pub use partita_api as api;
