//! The scenarios, written once against [`Cluster`] and `kube::Client`, so each runs in the box
//! (the test suite) and on a real cluster (`partita-e2e`, `e2e/kind.sh`).
//!
//! Each creates its own set, drives it through one situation with real faults, checks what
//! must hold (no acknowledged write lost, one writer per partition, copies equal), and returns
//! an [`Outcome`] whose line `SCENARIO <name> ok <metric>=<value> …` reports what was measured.
//! Timings are measured and reported, never asserted: they are too noisy on shared machines.
//! Bounds that are correctness (a write window that must end) are checked with generous
//! deadlines.

mod bad_spec;
mod create_ready;
mod failover;
mod operator_restart;
mod replaced;
mod rollout;
mod scale;
pub mod set;
pub mod writer;

use crate::cluster::Cluster;
use crate::{Error, Result};
use std::fmt;
use std::time::Duration;

/// Every scenario's name, in the order they run.
pub const NAMES: [&str; 9] = [
    "create-ready",
    "failover",
    "freeze",
    "network-cut",
    "scale-up",
    "scale-down",
    "rollout",
    "operator-restart",
    "bad-spec",
];

/// What a scenario measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The scenario's name.
    pub name: String,
    /// What it measured, in order.
    pub metrics: Vec<(String, String)>,
}

impl Outcome {
    /// An outcome with nothing measured yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            metrics: Vec::new(),
        }
    }

    /// Adds a measurement.
    pub fn with(mut self, metric: &str, value: impl fmt::Display) -> Self {
        self.metrics.push((metric.into(), value.to_string()));
        self
    }

    /// Adds a duration, in whole milliseconds.
    pub fn millis(self, metric: &str, d: Duration) -> Self {
        self.with(metric, d.as_millis())
    }

    /// The value of `metric`, if measured.
    pub fn get(&self, metric: &str) -> Option<&str> {
        self.metrics
            .iter()
            .find(|(m, _)| m == metric)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Outcome {
    /// `SCENARIO <name> ok <metric>=<value> …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SCENARIO {} ok", self.name)?;
        for (m, v) in &self.metrics {
            write!(f, " {m}={v}")?;
        }
        Ok(())
    }
}

/// Runs scenario `name` on `cluster`.
pub async fn run(name: &str, cluster: &mut impl Cluster) -> Result<Outcome> {
    match name {
        "create-ready" => create_ready::run(cluster).await,
        "failover" => failover::run(cluster).await,
        "freeze" => replaced::run(cluster, replaced::Fault::Freeze).await,
        "network-cut" => replaced::run(cluster, replaced::Fault::Cut).await,
        "scale-up" => scale::up(cluster).await,
        "scale-down" => scale::down(cluster).await,
        "rollout" => rollout::run(cluster).await,
        "operator-restart" => operator_restart::run(cluster).await,
        "bad-spec" => bad_spec::run(cluster).await,
        other => Err(Error::Invalid(format!(
            "no scenario {other:?}; the scenarios are {}",
            NAMES.join(", ")
        ))),
    }
}

/// Fails with `message` unless `ok`.
pub(crate) fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Check(message()))
    }
}
