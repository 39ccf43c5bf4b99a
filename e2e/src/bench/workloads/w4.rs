//! W4, acknowledged writes: Partita's write concerns against what a Redis user does for the
//! same guarantee. QUORUM (2 of 3 copies) against SET + `WAIT 1`, ALL against SET + `WAIT 2`,
//! ONE against a plain SET, at 1 client × depth 1, 16 × 1 and 16 × 16.
//!
//! At depth 16 Redis sends its 16 SETs and one WAIT in the same batch (the cheapest way to have
//! all 16 acknowledged), Partita 16 SETs under the connection's WRITECONCERN; either way one
//! latency sample is the time from sending the batch to its last reply. A WAIT that answers
//! fewer replicas than asked, or an error, is a failed write and fails the run.

use super::{Ctx, Expected, Pending, gate, secs};
use crate::Result;
use crate::bench::load::{self, Ack, Keys, Spec};
use crate::bench::report::MetricDef;
use crate::bench::stats::{Better, latency};
use crate::bench::systems::{Cluster, System};

/// W4's nine (mode, shape) loads, gated once at the end.
pub async fn run(ctx: &mut Ctx<'_>, cluster: &mut Cluster, expected: &mut Expected) -> Result<()> {
    let mut pending = Pending::default();
    let modes = [
        ("one", "ONE vs SET", "ONE", 0),
        ("quorum", "QUORUM vs SET+WAIT 1", "QUORUM", 1),
        ("all", "ALL vs SET+WAIT 2", "ALL", 2),
    ];
    for (mi, (id, label, concern, wait)) in modes.into_iter().enumerate() {
        for (si, (clients, depth)) in [(1, 1), (16, 1), (16, 16)].into_iter().enumerate() {
            let ack = match (cluster.system, wait) {
                (System::Redis, 0) => Ack::Plain,
                (System::Redis, n) => Ack::Wait(n, 5000),
                (System::Partita, _) => Ack::Concern(concern.to_string()),
            };
            let spec = Spec {
                addr: cluster.primary.resp.clone(),
                clients,
                depth,
                duration: secs(ctx.cfg.w4_secs),
                max_ops: ctx.cfg.w4_max_ops,
                rate: None,
                keys: Keys::Random {
                    space: ctx.cfg.keyspace,
                },
                ack,
                seed: ctx.seed(400 + 10 * mi as u64 + si as u64),
                op_timeout: ctx.env.op_timeout,
            };
            let step = format!("{label}, {clients}×{depth}");
            let out = load::run(&spec, ctx.values, std::sync::Arc::default()).await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    ctx.fail("W4", &step, &e.to_string());
                    return Err(e);
                }
            };
            expected.keys.union(&out.keys);
            if let Err(e) = out.check_no_failures("acknowledged writes") {
                ctx.fail("W4", &step, &e.to_string());
                return Err(e);
            }
            let l = latency(&out.lat_ns);
            let shape = format!("{clients}×{depth}");
            let key = format!("w4_{id}_{clients}x{depth}");
            for (q, v, unit, better) in [
                ("p50", l.p50_ms, "ms", Better::Lower),
                ("p99", l.p99_ms, "ms", Better::Lower),
                ("p999", l.p999_ms, "ms", Better::Lower),
                ("ops", out.ops_per_sec(), "ops/s", Better::Higher),
            ] {
                let ql = if q == "ops" {
                    "SET/s"
                } else if q == "p999" {
                    "p99.9"
                } else {
                    q
                };
                pending.add(
                    MetricDef::new(
                        &format!("{key}_{q}"),
                        "W4",
                        &format!("{label}, {shape}, {ql}"),
                        unit,
                        better,
                    ),
                    v,
                );
            }
            ctx.log(&format!(
                "  W4 {step}: {:.0}/s p50 {:.3} p99 {:.3} p99.9 {:.3} ms",
                out.ops_per_sec(),
                l.p50_ms,
                l.p99_ms,
                l.p999_ms
            ));
        }
    }
    let g = gate(ctx, cluster, expected).await;
    ctx.commit("W4", "9 loads", g, pending)
}
