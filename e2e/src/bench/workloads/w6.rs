//! W6, resync and failover: a correctness table, not a ratio. A primary and two replicas whose
//! links go through proxies (so a drop is the same TCP-level event for both systems):
//!
//! 1. a short drop of one replica's link (writes go on meanwhile): it must resync partially;
//! 2. a drop while more is written than the backlog holds (4 MiB in all on both sides: Redis
//!    `repl-backlog-size 4mb`, Partita `--backlog-bytes 262144` × 16 partitions): a full sync;
//! 3. the primary cut off from both replicas, one replica promoted, the other pointed at it:
//!    it must resync partially from the new primary;
//! 4. a write sent to the old primary after the failover: Partita (primary assigned with
//!    `min-in-sync 1`) must refuse it; Redis with its defaults accepts it, and the write is lost
//!    once the old primary rejoins. (Redis with `min-replicas-to-write 1` refuses it too here,
//!    because the cut closes the replicas' connections; in a silent partition it accepts writes
//!    for up to `min-replicas-max-lag` seconds. BENCHMARKS.md says so.)
//! 5. then every copy holds the same keys and digest.
//!
//! How each system synced is read from its own counters: Redis's `sync_full` and
//! `sync_partial_ok` on the primary serving the sync, Partita's per-partition `full_syncs` and
//! `partial_syncs` on the replica.

use std::time::Duration;

use super::Ctx;
use crate::bench::load;
use crate::bench::resp::Reply;
use crate::bench::systems::{
    Cluster, ClusterOpts, Server, System, partita_follow, partita_promote, redis_replicaof,
    start_cluster,
};
use crate::{Error, Result};

const ROW_PARTIAL: &str = "1. partial resync after a short drop (300 ms, 100 writes)";
const ROW_FULL: &str = "2. full sync after a drop past the backlog";
const ROW_PROMOTE: &str = "3. after a promote, the other replica resyncs partially";
const ROW_STALE: &str = "4. a write to the old primary after failover is refused (Partita min-in-sync 1, Redis defaults)";
const ROW_GATE: &str = "5. every copy equal afterwards (key count and digest)";

/// One W6 run for `ctx.system`.
pub async fn run(ctx: &mut Ctx<'_>) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return ctx.fail("W6", "start", &format!("temp dir: {e}")),
    };
    let opts = ClusterOpts {
        replicas: 2,
        via_proxy: true,
        partita_primary: vec!["--backlog-bytes".into(), "262144".into()],
        redis_primary: vec!["--repl-backlog-size".into(), "4mb".into()],
        min_in_sync: 1,
    };
    let mut cluster = match start_cluster(ctx.env, dir.path(), ctx.system, &opts).await {
        Ok(c) => c,
        Err(e) => return ctx.fail("W6", "start", &e.to_string()),
    };
    let r = steps(ctx, &mut cluster).await;
    match r {
        Ok(keys) => {
            ctx.res.w6(
                ROW_GATE,
                ctx.system,
                &format!("yes: {keys} keys, equal digests"),
                true,
            );
            ctx.commit(
                "W6",
                "resync and failover",
                Ok(keys),
                super::Pending::default(),
            )
            .ok();
        }
        Err(e) => {
            ctx.res.w6(ROW_GATE, ctx.system, &format!("no: {e}"), false);
            ctx.fail("W6", "resync and failover", &e.to_string());
        }
    }
    cluster.stop().await;
}

/// Syncs served so far: (full, partial). Redis: counters of the primary `primary`; Partita:
/// counters of the replica `replica`, summed over partitions.
async fn syncs(primary: &mut Server, replica: &Server) -> Result<(u64, u64)> {
    match primary.system {
        System::Redis => {
            let f = primary.info("stats").await?;
            let get = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            Ok((get("sync_full"), get("sync_partial_ok")))
        }
        System::Partita => {
            let st = replica.status().await?;
            let (mut full, mut partial) = (0, 0);
            for p in st.partitions {
                if let Some(l) = p.link {
                    full += l.full_syncs;
                    partial += l.partial_syncs;
                }
            }
            Ok((full, partial))
        }
    }
}

fn describe(system: System, full: u64, partial: u64) -> String {
    match system {
        System::Redis => format!("sync_full +{full}, sync_partial_ok +{partial}"),
        System::Partita => format!("{full} partitions full, {partial} partial"),
    }
}

async fn steps(ctx: &mut Ctx<'_>, c: &mut Cluster) -> Result<u64> {
    let (t, deadline) = (ctx.env.op_timeout, ctx.env.deadline);
    let system = ctx.system;
    let mut next = ctx.cfg.w6_keys;
    load::fill(&c.primary.resp, (0, next), (1, 64), ctx.values, t).await?;
    c.wait_caught_up(deadline).await?;

    // 1. A short drop.
    let replica = c
        .replicas
        .first()
        .ok_or_else(|| Error::Check("no replica".into()))?;
    let before = syncs(&mut c.primary, replica).await?;
    let proxy = c
        .proxies
        .first()
        .ok_or_else(|| Error::Check("no proxy".into()))?;
    proxy.cut();
    load::fill(&c.primary.resp, (next, next + 100), (1, 10), ctx.values, t).await?;
    next += 100;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();
    // The link must come back at the new offset; wait until the counters move, then catch up.
    let after = wait_syncs(c, before, deadline).await?;
    c.wait_caught_up(deadline).await?;
    let (full, partial) = (after.0 - before.0, after.1 - before.1);
    ctx.res.w6(
        ROW_PARTIAL,
        system,
        &describe(system, full, partial),
        full == 0 && partial > 0,
    );

    // 2. A drop past the backlog.
    let replica = c
        .replicas
        .first()
        .ok_or_else(|| Error::Check("no replica".into()))?;
    let before = syncs(&mut c.primary, replica).await?;
    if let Some(p) = c.proxies.first() {
        p.cut();
    }
    let n = ctx.cfg.w6_past_backlog;
    load::fill(&c.primary.resp, (next, next + n), (1, 64), ctx.values, t).await?;
    next += n;
    if let Some(p) = c.proxies.first() {
        p.heal();
    }
    let after = wait_syncs(c, before, deadline).await?;
    c.wait_caught_up(deadline).await?;
    let (full, partial) = (after.0 - before.0, after.1 - before.1);
    ctx.res.w6(
        &format!("{ROW_FULL} ({n} writes of ~150 B; 4 MiB backlog)"),
        system,
        &describe(system, full, partial),
        full > 0,
    );
    c.gate(deadline, Some(next)).await?;

    // 3. Failover: the primary is cut off from both replicas; r1/n2 is promoted.
    for p in &c.proxies {
        p.cut();
    }
    let [new, other] = &mut c.replicas[..] else {
        return Err(Error::Check("expected two replicas".into()));
    };
    // Partita's counters are the replica's own; Redis's are the new primary's (none yet).
    let before = syncs(&mut c.primary, other).await?;
    match system {
        System::Redis => {
            redis_replicaof(new, None).await?;
            redis_replicaof(other, Some(&new.resp)).await?;
        }
        System::Partita => {
            partita_promote(new, 2, &[c.primary.name.clone(), other.name.clone()], 1).await?;
            partita_follow(other, 2, new).await?;
        }
    }
    // Make the promoted copy the cluster's primary, the old one a replica.
    std::mem::swap(&mut c.primary, &mut c.replicas[0]);
    // Wait for the other replica (now replicas[1]) to stream from the new primary.
    let until = std::time::Instant::now() + deadline;
    loop {
        let (p, rs) = (&mut c.primary, &mut c.replicas);
        let other = rs
            .get_mut(1)
            .ok_or_else(|| Error::Check("no replica".into()))?;
        if other.replica_offset().await?.is_some() {
            let target = p.primary_offset().await?;
            if other.replica_offset().await? >= Some(target) {
                break;
            }
        }
        if std::time::Instant::now() > until {
            return Err(Error::Timeout {
                what: "the other replica to follow the new primary".into(),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = c
        .replicas
        .get(1)
        .ok_or_else(|| Error::Check("no replica".into()))?;
    let after = syncs(&mut c.primary, other).await?;
    let (full, partial) = match system {
        // Redis's counters are the new primary's, which served no sync before.
        System::Redis => (after.0, after.1),
        System::Partita => (after.0 - before.0, after.1 - before.1),
    };
    ctx.res.w6(
        ROW_PROMOTE,
        system,
        &describe(system, full, partial),
        full == 0 && partial > 0,
    );

    // 4. A write to the old primary (now replicas[0], still cut off and believing it leads).
    let old = c
        .replicas
        .get_mut(0)
        .ok_or_else(|| Error::Check("no old primary".into()))?;
    let stale = b"stale:after-failover";
    let reply = old.call(&[b"SET", stale, b"lost?"]).await?;
    let accepted = reply.is_ok();
    // It rejoins as a replica of the new primary.
    for p in &c.proxies {
        p.heal();
    }
    match system {
        System::Redis => {
            let addr = c.primary.resp.clone();
            let old = c
                .replicas
                .get_mut(0)
                .ok_or_else(|| Error::Check("no old primary".into()))?;
            redis_replicaof(old, Some(&addr)).await?;
        }
        System::Partita => {
            let old = c
                .replicas
                .first()
                .ok_or_else(|| Error::Check("no old primary".into()))?;
            partita_follow(old, 2, &c.primary).await?;
        }
    }
    c.wait_caught_up(deadline).await?;
    let kept = !matches!(c.primary.call(&[b"GET", stale]).await?, Reply::Bulk(None));
    let outcome = match (accepted, kept) {
        (true, false) => format!(
            "accepted ({}), then lost when the old primary rejoined",
            reply.text()
        ),
        (true, true) => format!("accepted ({}) and kept", reply.text()),
        (false, _) => format!("refused: {}", reply.text()),
    };
    ctx.res.w6(ROW_STALE, system, &outcome, !accepted || kept);
    let want = next + u64::from(kept);
    c.gate(deadline, Some(want)).await
}

/// Waits until the replica's sync counters move past `before` (the reconnect happened).
async fn wait_syncs(c: &mut Cluster, before: (u64, u64), deadline: Duration) -> Result<(u64, u64)> {
    let until = std::time::Instant::now() + deadline;
    loop {
        let replica = c
            .replicas
            .first()
            .ok_or_else(|| Error::Check("no replica".into()))?;
        let now = syncs(&mut c.primary, replica).await?;
        // Partita counts per partition: wait for all of them to have resynced.
        let enough = match c.system {
            System::Redis => now.0 + now.1 > before.0 + before.1,
            System::Partita => {
                now.0 + now.1 >= before.0 + before.1 + crate::bench::systems::PARTITIONS as u64
            }
        };
        if enough {
            return Ok(now);
        }
        c.check_alive()?;
        if std::time::Instant::now() > until {
            return Err(Error::Timeout {
                what: "the dropped replica to resync".into(),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
