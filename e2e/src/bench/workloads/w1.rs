//! W1, throughput: 50 clients of 100-byte SETs over a 1M key space, pipeline 16 and 1, with 0
//! and 2 replicas; and W2, catch-up: right after a 2-replica load, how far behind the replicas
//! are and how long until every replica has applied the primary's last offset.
//!
//! Redis counts its replication offset in bytes of the command stream, Partita in entries; W2
//! converts Redis's to entries by dividing by the size of one SET of this benchmark (every SET
//! has the same size), so both are reported in entries.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::{Ctx, Expected, Pending, gate, secs};
use crate::Result;
use crate::bench::load::{self, Ack, Keys, Spec, VALUE_BYTES};
use crate::bench::report::MetricDef;
use crate::bench::resp::encode;
use crate::bench::stats::{Better, latency};
use crate::bench::systems::{Cluster, System};

/// Bytes one benchmark SET takes in Redis's replication stream.
pub fn set_bytes() -> u64 {
    let value = [0u8; VALUE_BYTES];
    encode(&[b"SET", load::key(0).as_bytes(), &value]).len() as u64
}

/// One W1 load (and W2 after it, with replicas), gated.
pub async fn run(
    ctx: &mut Ctx<'_>,
    cluster: &mut Cluster,
    expected: &mut Expected,
    replicas: usize,
    depth: usize,
) -> Result<()> {
    let step = format!("{replicas} replicas, pipeline {depth}");
    let spec = Spec {
        addr: cluster.primary.resp.clone(),
        clients: ctx.cfg.w1_clients,
        depth,
        duration: secs(ctx.cfg.w1_secs),
        max_ops: ctx.cfg.w1_max_ops,
        rate: None,
        keys: Keys::Random {
            space: ctx.cfg.keyspace,
        },
        ack: Ack::Plain,
        seed: ctx.seed(depth as u64 + 100 * replicas as u64),
        op_timeout: ctx.env.op_timeout,
    };
    let out = match load::run(&spec, ctx.values, Arc::new(AtomicBool::new(false))).await {
        Ok(o) => o,
        Err(e) => {
            ctx.fail("W1", &step, &e.to_string());
            return Err(e);
        }
    };
    let t_end = Instant::now();
    expected.keys.union(&out.keys);
    let mut pending = Pending::default();
    let w2 = if replicas > 0 && ctx.cfg.has(crate::bench::Workload::W2) {
        Some(catch_up(ctx, cluster, t_end).await)
    } else {
        None
    };
    if let Err(e) = out.check_no_failures("the load") {
        ctx.fail("W1", &step, &e.to_string());
        return Err(e);
    }
    let lat = latency(&out.lat_ns);
    let id = format!("w1_r{replicas}_p{depth}");
    let what = format!(
        "{replicas} replicas, {} clients × pipeline {depth}",
        ctx.cfg.w1_clients
    );
    if ctx.cfg.has(crate::bench::Workload::W1) {
        let d = |m: &str, label: &str, unit: &str, b| {
            MetricDef::new(
                &format!("{id}_{m}"),
                "W1",
                &format!("{label}, {what}"),
                unit,
                b,
            )
        };
        pending.add(
            d("ops", "SET/s", "ops/s", Better::Higher),
            out.ops_per_sec(),
        );
        pending.add(d("p50", "p50", "ms", Better::Lower), lat.p50_ms);
        pending.add(d("p99", "p99", "ms", Better::Lower), lat.p99_ms);
    }
    ctx.log(&format!(
        "  W1 {step}: {:.0} SET/s, p50 {:.3} ms, p99 {:.3} ms",
        out.ops_per_sec(),
        lat.p50_ms,
        lat.p99_ms
    ));
    if let Some(w2) = w2 {
        let (behind, ms) = match w2 {
            Ok(x) => x,
            Err(e) => {
                ctx.fail("W2", &step, &e.to_string());
                return Err(e);
            }
        };
        let d = |m: &str, label: &str, unit: &str| {
            MetricDef::new(
                &format!("w2_p{depth}_{m}"),
                "W2",
                &format!("{label} after W1 pipeline {depth}"),
                unit,
                Better::Lower,
            )
        };
        let mut p2 = Pending::default();
        p2.add(
            d(
                "behind",
                "replicas behind at the end of the load",
                "entries",
            ),
            behind,
        );
        p2.add(
            d(
                "catchup",
                "time until every replica applied the last offset",
                "ms",
            ),
            ms,
        );
        ctx.log(&format!(
            "  W2 {step}: {behind:.0} entries behind, caught up in {ms:.1} ms"
        ));
        pending.0.extend(p2.0);
    }
    let g = gate(ctx, cluster, expected).await;
    let (w1, w2): (Vec<_>, Vec<_>) = pending.0.into_iter().partition(|(d, _)| d.workload == "W1");
    match g {
        Ok(keys) => {
            if ctx.cfg.has(crate::bench::Workload::W1) {
                ctx.commit("W1", &step, Ok(keys), Pending(w1))?;
            }
            if replicas > 0 && ctx.cfg.has(crate::bench::Workload::W2) {
                ctx.commit("W2", &step, Ok(keys), Pending(w2))?;
            }
            Ok(())
        }
        Err(e) => {
            if replicas > 0 && ctx.cfg.has(crate::bench::Workload::W2) {
                ctx.fail("W2", &step, &e.to_string());
            }
            ctx.commit("W1", &step, Err(e), Pending::default())
        }
    }
}

/// (entries behind, ms until caught up) right after a load that ended at `t_end`.
async fn catch_up(ctx: &Ctx<'_>, cluster: &mut Cluster, t_end: Instant) -> Result<(f64, f64)> {
    let target = cluster.primary.primary_offset().await?;
    let mut behind = 0u64;
    for r in &mut cluster.replicas {
        let at = r.replica_offset().await?.unwrap_or(0);
        behind = behind.max(target.saturating_sub(at));
    }
    let took = cluster.wait_offset(target, t_end, ctx.env.deadline).await?;
    let entries = match cluster.system {
        System::Redis => behind as f64 / set_bytes() as f64,
        System::Partita => behind as f64,
    };
    Ok((entries, took.as_secs_f64() * 1000.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_benchmark_set_is_144_bytes_of_resp() {
        assert_eq!(super::set_bytes(), 144);
    }
}
