//! W3, visibility lag: a probe writes a fresh key on the primary and, from the moment the
//! write is acknowledged, polls every replica with GET until all of them return it. Measured
//! idle, under W1's closed-loop load (50 clients × pipeline 16), and under an open-loop load at
//! a fixed rate (SETs sent on a schedule, whatever the server's pace).
//!
//! Polling is a GET round trip per replica in a tight loop, so the resolution is one loopback
//! round trip (tens of microseconds), the same for both systems.

use std::time::{Duration, Instant};

use super::{Ctx, Expected, Pending, gate, secs};
use crate::bench::load::{self, Ack, Keys, Spec};
use crate::bench::report::MetricDef;
use crate::bench::resp::{Conn, Reply};
use crate::bench::stats::{Better, latency};
use crate::bench::systems::Cluster;
use crate::{Error, Result};

/// W3's three conditions, gated once at the end.
pub async fn run(ctx: &mut Ctx<'_>, cluster: &mut Cluster, expected: &mut Expected) -> Result<()> {
    let mut pending = Pending::default();
    let mut probe_id = 0u64;
    let r = async {
        for (cond, label) in [
            ("idle", "idle"),
            ("loaded", "under W1 load (50 × 16, closed loop)"),
            ("open", "under an open-loop load"),
        ] {
            let background = match cond {
                "loaded" => Some(Spec {
                    addr: cluster.primary.resp.clone(),
                    clients: ctx.cfg.w1_clients,
                    depth: 16,
                    duration: secs(ctx.cfg.w3_secs + 5.0),
                    max_ops: u64::MAX,
                    rate: None,
                    keys: Keys::Random {
                        space: ctx.cfg.keyspace,
                    },
                    ack: Ack::Plain,
                    seed: ctx.seed(300),
                    op_timeout: ctx.env.op_timeout,
                }),
                "open" => Some(Spec {
                    addr: cluster.primary.resp.clone(),
                    clients: 8,
                    depth: 10,
                    duration: secs(ctx.cfg.w3_secs + 5.0),
                    max_ops: u64::MAX,
                    rate: Some(ctx.cfg.w3_rate),
                    keys: Keys::Random {
                        space: ctx.cfg.keyspace,
                    },
                    ack: Ack::Plain,
                    seed: ctx.seed(301),
                    op_timeout: ctx.env.op_timeout,
                }),
                _ => None,
            };
            let bg = background.map(|s| load::spawn(s, ctx.values.clone()));
            if bg.is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let probed = probes(ctx, cluster, &mut probe_id).await;
            if let Some((stop, task)) = bg {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                let out = task
                    .await
                    .map_err(|e| Error::Check(format!("background load died: {e}")))??;
                expected.keys.union(&out.keys);
                out.check_no_failures("background load")?;
            }
            let lat_ns = probed?;
            let l = latency(&lat_ns);
            let rate = if cond == "open" {
                format!(" at {:.0} SET/s", ctx.cfg.w3_rate)
            } else {
                String::new()
            };
            for (q, v) in [("p50", l.p50_ms), ("p99", l.p99_ms)] {
                pending.add(
                    MetricDef::new(
                        &format!("w3_{cond}_{q}"),
                        "W3",
                        &format!("ack → visible on both replicas, {q}, {label}{rate}"),
                        "ms",
                        Better::Lower,
                    ),
                    v,
                );
            }
            ctx.log(&format!(
                "  W3 {cond}: {} probes, p50 {:.3} ms, p99 {:.3} ms",
                lat_ns.len(),
                l.p50_ms,
                l.p99_ms
            ));
        }
        Ok::<(), Error>(())
    }
    .await;
    expected.extra += probe_id;
    if let Err(e) = r {
        ctx.fail("W3", "probes", &e.to_string());
        return Err(e);
    }
    let g = gate(ctx, cluster, expected).await;
    ctx.commit("W3", "3 conditions", g, pending)
}

/// Probes until the count or the time is used up; nanoseconds from ack to visible on all.
async fn probes(ctx: &Ctx<'_>, cluster: &Cluster, probe_id: &mut u64) -> Result<Vec<u64>> {
    let t = ctx.env.op_timeout;
    let mut w = Conn::connect(&cluster.primary.resp, t).await?;
    let mut readers = Vec::new();
    for r in &cluster.replicas {
        readers.push(Conn::connect(&r.resp, t).await?);
    }
    let until = Instant::now() + secs(ctx.cfg.w3_secs);
    let mut out = Vec::new();
    let value = [b'v'; 100];
    while out.len() < ctx.cfg.w3_probes && Instant::now() < until {
        let key = format!("probe:{:012}", *probe_id);
        *probe_id += 1;
        let r = w.call(&[b"SET", key.as_bytes(), &value]).await?;
        if !r.is_ok() {
            return Err(Error::Check(format!("probe SET: {}", r.text())));
        }
        let acked = Instant::now();
        let mut seen = vec![false; readers.len()];
        while seen.iter().any(|s| !s) {
            for (i, c) in readers.iter_mut().enumerate() {
                if seen.get(i) == Some(&false)
                    && let Reply::Bulk(Some(_)) = c.call(&[b"GET", key.as_bytes()]).await?
                    && let Some(s) = seen.get_mut(i)
                {
                    *s = true;
                }
            }
            if acked.elapsed() > ctx.env.deadline {
                return Err(Error::Timeout {
                    what: format!("{key} to be visible on every replica"),
                    after: ctx.env.deadline,
                });
            }
        }
        out.push(u64::try_from(acked.elapsed().as_nanos()).unwrap_or(u64::MAX));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(out)
}
