//! The workloads of issue #10, and the bookkeeping they share: a run's measurements are kept
//! aside until the correctness gate after it passes, so a run that fails the gate is reported
//! as failed and never timed.
//!
//! W1–W4 share one primary with two replicas per (run, system), in the order W1 (pipeline 16,
//! then 1, each followed by W2's catch-up), W3, W4, each closed by a gate; W1 with 0 replicas,
//! W5 and W6 start their own servers.

pub mod w1;
pub mod w3;
pub mod w4;
pub mod w5;
pub mod w6;

use std::time::Duration;

use super::Config;
use super::load::{KeySet, Values};
use super::report::{Gate, MetricDef, Results};
use super::systems::{Cluster, ClusterOpts, Env, System, start_cluster};
use crate::Result;

/// What a workload runs with.
pub struct Ctx<'a> {
    /// Counts and durations.
    pub cfg: &'a Config,
    /// Binaries and timeouts.
    pub env: &'a Env,
    /// The value pool.
    pub values: &'a Values,
    /// Where results go.
    pub res: &'a mut Results,
    /// 0-based run.
    pub run: usize,
    /// The system under test.
    pub system: System,
}

impl Ctx<'_> {
    /// A progress line on stderr.
    pub fn log(&self, msg: &str) {
        eprintln!("[partita-bench] {msg}");
    }

    /// Records a gate, and on success the run's measurements.
    pub fn commit(
        &mut self,
        workload: &str,
        step: &str,
        gate: Result<u64>,
        pending: Pending,
    ) -> Result<()> {
        let run = self.run + 1;
        match gate {
            Ok(keys) => {
                for (def, v) in &pending.0 {
                    self.res.record(def, self.system, *v);
                }
                self.res.gates.push(Gate {
                    workload: workload.into(),
                    step: step.into(),
                    run,
                    system: self.system,
                    passed: true,
                    keys: Some(keys),
                    detail: String::new(),
                });
                Ok(())
            }
            Err(e) => {
                self.fail(workload, step, &e.to_string());
                Err(e)
            }
        }
    }

    /// Records a failed run (a gate that failed, or a run that broke before its gate).
    pub fn fail(&mut self, workload: &str, step: &str, why: &str) {
        self.log(&format!(
            "FAILED {workload} {step} run {} {}: {why}",
            self.run + 1,
            self.system.name()
        ));
        self.res.gates.push(Gate {
            workload: workload.into(),
            step: step.into(),
            run: self.run + 1,
            system: self.system,
            passed: false,
            keys: None,
            detail: why.into(),
        });
    }

    /// Seed for a load: differs per run and step, equal for both systems.
    pub fn seed(&self, step: u64) -> u64 {
        (self.run as u64) << 20 | step
    }
}

/// Measurements of a run not yet confirmed by its gate.
#[derive(Debug, Default)]
pub struct Pending(pub Vec<(MetricDef, f64)>);

impl Pending {
    /// Adds one.
    pub fn add(&mut self, def: MetricDef, v: f64) {
        self.0.push((def, v));
    }
}

/// Keys a cluster is expected to hold: the random keys written plus counted extras.
#[derive(Debug, Default)]
pub struct Expected {
    /// Random and sequential `key:` keys written.
    pub keys: KeySet,
    /// Other keys written (probes).
    pub extra: u64,
}

impl Expected {
    /// The exact count every copy must hold.
    pub fn count(&self) -> u64 {
        self.keys.len() + self.extra
    }
}

/// W1 with 0 replicas (Partita standalone, a lone redis-server): pipeline 16 then 1.
pub async fn unreplicated(ctx: &mut Ctx<'_>) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return ctx.fail("W1", "0 replicas", &format!("temp dir: {e}")),
    };
    let opts = ClusterOpts::default();
    let mut cluster = match start_cluster(ctx.env, dir.path(), ctx.system, &opts).await {
        Ok(c) => c,
        Err(e) => return ctx.fail("W1", "0 replicas: start", &e.to_string()),
    };
    let mut expected = Expected::default();
    for depth in [16, 1] {
        if w1::run(ctx, &mut cluster, &mut expected, 0, depth)
            .await
            .is_err()
        {
            break;
        }
    }
    cluster.stop().await;
}

/// W1 and W2 with 2 replicas, then W3 and W4 on the same servers.
pub async fn replicated(ctx: &mut Ctx<'_>) {
    use super::Workload::{W1, W3, W4};
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return ctx.fail("W1", "2 replicas", &format!("temp dir: {e}")),
    };
    let opts = ClusterOpts {
        replicas: 2,
        ..ClusterOpts::default()
    };
    let mut cluster = match start_cluster(ctx.env, dir.path(), ctx.system, &opts).await {
        Ok(c) => c,
        Err(e) => return ctx.fail("W1", "2 replicas: start", &e.to_string()),
    };
    let mut expected = Expected::default();
    let steps = async {
        if ctx.cfg.has(W1) || ctx.cfg.has(super::Workload::W2) {
            for depth in [16, 1] {
                w1::run(ctx, &mut cluster, &mut expected, 2, depth).await?;
            }
        }
        if ctx.cfg.has(W3) {
            w3::run(ctx, &mut cluster, &mut expected).await?;
        }
        if ctx.cfg.has(W4) {
            w4::run(ctx, &mut cluster, &mut expected).await?;
        }
        Ok::<(), crate::Error>(())
    };
    let _ = steps.await;
    cluster.stop().await;
}

/// Seconds as a `Duration`.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Gates a cluster against what it should hold.
pub async fn gate(ctx: &Ctx<'_>, cluster: &mut Cluster, expected: &Expected) -> Result<u64> {
    cluster.gate(ctx.env.deadline, Some(expected.count())).await
}
