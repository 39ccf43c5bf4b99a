//! W5, full sync: a primary holding 1M keys × 100 B, then a fresh, empty replica attached
//! (`REPLICAOF` on Redis, Admin AssignRole on Partita); the time from the attach call until the
//! replica serves every key (its link is up, it has applied the primary's offset of the moment
//! of the attach, and DBSIZE counts every key). Once idle, then again with a second fresh
//! replica while a writer adds new keys at a fixed rate (20K SETs/s); afterwards the writer
//! stops and every copy must hold exactly the preloaded keys plus every write the writer had
//! acknowledged, with equal digests: no lost writes.
//!
//! Partita's primary keeps its default in-memory backlog (1 MiB per partition); with 1M keys
//! written the log no longer holds offset 1, so the fresh replica gets a snapshot, as Redis's
//! gets an RDB. The sync kinds are reported.

use std::time::{Duration, Instant};

use super::{Ctx, Pending};
use crate::bench::load::{self, Ack, Keys, Spec};
use crate::bench::report::MetricDef;
use crate::bench::stats::Better;
use crate::bench::systems::{
    Cluster, Server, System, partita_assign_follow, partita_assign_primary, redis_replicaof,
    start_partita, start_redis,
};
use crate::{Error, Result};

/// One W5 run: idle, then under load; each gated.
pub async fn run(ctx: &mut Ctx<'_>) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return ctx.fail("W5", "start", &format!("temp dir: {e}")),
    };
    let mut cluster = match start(ctx, dir.path()).await {
        Ok(c) => c,
        Err(e) => return ctx.fail("W5", "start", &e.to_string()),
    };
    let keys = ctx.cfg.w5_keys;
    let loaded = Instant::now();
    if let Err(e) = load::fill(
        &cluster.primary.resp,
        (0, keys),
        (4, 1000),
        ctx.values,
        ctx.env.op_timeout,
    )
    .await
    {
        cluster.stop().await;
        return ctx.fail("W5", "load", &e.to_string());
    }
    ctx.log(&format!(
        "  W5 loaded {keys} keys in {:.1} s",
        loaded.elapsed().as_secs_f64()
    ));
    for (step, under_load) in [("idle", false), ("under load", true)] {
        if let Err(e) = attach(ctx, dir.path(), &mut cluster, step, under_load).await {
            ctx.fail("W5", step, &e.to_string());
            break;
        }
    }
    cluster.stop().await;
}

async fn start(ctx: &Ctx<'_>, dir: &std::path::Path) -> Result<Cluster> {
    let primary = match ctx.system {
        System::Redis => start_redis(ctx.env, dir, "r0", None, &[]).await?,
        System::Partita => {
            let p = start_partita(ctx.env, dir, "n1", false, &[]).await?;
            partita_assign_primary(&p, 1, &["n2".into(), "n3".into()], 0).await?;
            p
        }
    };
    Ok(Cluster {
        system: ctx.system,
        primary,
        replicas: Vec::new(),
        proxies: Vec::new(),
    })
}

async fn attach(
    ctx: &mut Ctx<'_>,
    dir: &std::path::Path,
    cluster: &mut Cluster,
    step: &str,
    under_load: bool,
) -> Result<()> {
    let keys = ctx.cfg.w5_keys;
    let n = cluster.replicas.len() + 1;
    let mut replica: Server = match ctx.system {
        System::Redis => start_redis(ctx.env, dir, &format!("r{n}"), None, &[]).await?,
        System::Partita => start_partita(ctx.env, dir, &format!("n{}", n + 1), false, &[]).await?,
    };
    let writer = under_load.then(|| {
        load::spawn(
            Spec {
                addr: cluster.primary.resp.clone(),
                clients: 4,
                depth: 10,
                duration: ctx.env.deadline,
                max_ops: u64::MAX,
                rate: Some(ctx.cfg.w5_rate),
                keys: Keys::Sequential {
                    start: keys,
                    end: u64::MAX,
                },
                ack: Ack::Plain,
                seed: ctx.seed(500),
                op_timeout: ctx.env.op_timeout,
            },
            ctx.values.clone(),
        )
    });
    if writer.is_some() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let target = cluster.primary.primary_offset().await?;
    let t0 = Instant::now();
    match ctx.system {
        System::Redis => redis_replicaof(&mut replica, Some(&cluster.primary.resp)).await?,
        System::Partita => partita_assign_follow(&replica, 1, &cluster.primary, None).await?,
    }
    let waited = wait_serving(ctx, cluster, &mut replica, target, keys, t0).await;
    let elapsed = t0.elapsed();
    cluster.replicas.push(replica);
    let mut written = 0;
    let mut writer_rate = None;
    if let Some((stop, task)) = writer {
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let out = task
            .await
            .map_err(|e| Error::Check(format!("writer died: {e}")))??;
        out.check_no_failures("the writer")?;
        written = out.ops;
        writer_rate = Some(out.ops_per_sec());
        ctx.log(&format!(
            "  W5 writer: {} SETs at {:.0}/s during the sync",
            out.ops,
            out.ops_per_sec()
        ));
    }
    waited?;
    // The writer's keys are all new (key indexes from `keys` upward), so the exact count says
    // no acknowledged write was lost on any copy.
    let want = keys + written;
    let g = cluster.gate(ctx.env.deadline, Some(want)).await;
    let kinds = sync_kinds(cluster).await;
    let ms = elapsed.as_secs_f64() * 1000.0;
    ctx.log(&format!(
        "  W5 {step}: {ms:.0} ms to serve {keys} keys; {kinds}"
    ));
    if ctx.system == System::Partita {
        ctx.res.notes.push(format!(
            "W5 run {} {step}: Partita replica sync kinds {kinds}",
            ctx.run + 1
        ));
    }
    let mut pending = Pending::default();
    let label = if under_load {
        format!(
            "full sync of {keys} keys × 100 B while {:.0} SETs/s go on",
            ctx.cfg.w5_rate
        )
    } else {
        format!("full sync of {keys} keys × 100 B, idle")
    };
    let id = if under_load {
        "w5_load_ms"
    } else {
        "w5_idle_ms"
    };
    pending.add(MetricDef::new(id, "W5", &label, "ms", Better::Lower), ms);
    if let Some(rate) = writer_rate {
        // An open-loop writer falls short of its rate when the primary answers slower than
        // the schedule: how well the primary kept serving writes during the sync.
        pending.add(
            MetricDef::new(
                "w5_writer_ops",
                "W5",
                &format!(
                    "writes/s the primary served during that sync (offered {:.0})",
                    ctx.cfg.w5_rate
                ),
                "ops/s",
                Better::Higher,
            ),
            rate,
        );
    }
    ctx.commit("W5", step, g, pending)
}

/// Waits until `replica` is linked, has applied `target` and counts at least `keys` keys.
async fn wait_serving(
    ctx: &Ctx<'_>,
    cluster: &mut Cluster,
    replica: &mut Server,
    target: u64,
    keys: u64,
    t0: Instant,
) -> Result<()> {
    loop {
        replica.check_alive()?;
        cluster.primary.check_alive()?;
        if replica
            .replica_offset()
            .await?
            .is_some_and(|at| at >= target)
            && replica.dbsize().await.is_ok_and(|k| k >= keys)
        {
            return Ok(());
        }
        if t0.elapsed() > ctx.env.deadline {
            return Err(Error::Timeout {
                what: "the fresh replica to serve every key".into(),
                after: ctx.env.deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// How Partita's replicas last synced, per partition (e.g. `n2: full×16`); empty for Redis.
async fn sync_kinds(cluster: &Cluster) -> String {
    let mut out = Vec::new();
    for r in &cluster.replicas {
        if r.system != System::Partita {
            continue;
        }
        let Ok(st) = r.status().await else {
            continue;
        };
        let mut counts = std::collections::BTreeMap::new();
        for p in st.partitions {
            let kind = p
                .link
                .map(|l| match l.last_sync {
                    1 => "partial",
                    2 => "truncate",
                    3 => "full",
                    _ => "none",
                })
                .unwrap_or("none");
            *counts.entry(kind).or_insert(0) += 1;
        }
        let c: Vec<String> = counts.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        out.push(format!("{}: {}", r.name, c.join(" ")));
    }
    out.join(", ")
}
