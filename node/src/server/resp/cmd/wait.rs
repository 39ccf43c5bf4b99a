//! WAIT numreplicas timeout: block until that many replicas have acknowledged this connection's
//! writes, or the timeout (milliseconds; 0 waits forever) passes, then return how many have.
//!
//! A connection's writes may span partitions, each with its own replicas; the answer is the
//! smallest count over the partitions it wrote, so "2" means every write reached two replicas.
//! Without writes it counts the replicas connected now, as Redis does. A standalone node has no
//! replicas, so it answers 0: at once when 0 are asked for, after the timeout otherwise. On a
//! connection that proxied a write to another node (proxy mode), it answers 0 once the timeout
//! passes: those writes' replicas are another node's to count. Use WRITECONCERN there.

use super::{Ctx, Flow, int_arg};
use crate::engine::Partition;
use crate::server::resp::codec::{write_error, write_integer};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs WAIT.
pub async fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let Some(wanted) = int_arg(ctx, &args[1]) else {
        return Flow::Continue;
    };
    let Some(timeout) = int_arg(ctx, &args[2]) else {
        return Flow::Continue;
    };
    if timeout < 0 {
        write_error(ctx.out, "ERR timeout is negative");
        return Flow::Continue;
    }
    // A write proxied to another node is acknowledged there; this node cannot see its
    // replicas, so it vouches for none: 0, after the timeout, as Redis answers when too few
    // replicas acknowledge.
    if ctx.conn.proxied_writes {
        if wanted > 0 {
            let mut shutdown = ctx.shutdown.clone();
            let stop = async move {
                let _ = shutdown.wait_for(|down| *down).await;
            };
            if timeout > 0 {
                let _ = tokio::time::timeout(Duration::from_millis(timeout as u64), stop).await;
            } else {
                stop.await;
            }
        }
        write_integer(ctx.out, 0);
        return Flow::Continue;
    }
    // The batch's own writes are made durable before the wait, as Redis does.
    if let Err(e) = ctx.commit().await {
        // Earlier replies of this batch acknowledged writes that did not persist: replace
        // them with the error and close, as a failed batch commit does.
        ctx.out.clear();
        write_error(ctx.out, format!("ERR write not persisted: {e}"));
        return Flow::Close;
    }
    let targets: Vec<(Arc<Partition>, u64)> = if ctx.conn.written.is_empty() {
        ctx.engine
            .partitions()
            .iter()
            .filter(|p| p.is_primary())
            .map(|p| (Arc::clone(p), 0))
            .collect()
    } else {
        ctx.conn
            .written
            .iter()
            .filter_map(|(&id, &o)| {
                ctx.engine
                    .partitions()
                    .get(id as usize)
                    .map(|p| (Arc::clone(p), o))
            })
            .collect()
    };
    let count = |targets: &[(Arc<Partition>, u64)]| -> i64 {
        targets
            .iter()
            .map(|(p, o)| i64::from(p.tracker().acked_replicas(*o)))
            .min()
            .unwrap_or(0)
    };
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let acked = count(&targets);
        if acked >= wanted {
            break;
        }
        // Wait on the partition furthest behind; any ack there may lift the minimum.
        let Some((slowest, _)) = targets
            .iter()
            .min_by_key(|(p, o)| p.tracker().acked_replicas(*o))
        else {
            // Nothing to wait for (no primaries): as Redis without replicas, wait out the timeout.
            let rest = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = sleep_or_forever(rest) => {}
                _ = shutdown.wait_for(|&down| down) => {}
            }
            break;
        };
        let mut changed = slowest.acks_changed();
        if count(&targets) >= wanted {
            break;
        }
        let rest = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if rest.is_some_and(|r| r.is_zero()) {
            break;
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = sleep_or_forever(rest) => break,
            _ = shutdown.wait_for(|&down| down) => break,
        }
    }
    write_integer(ctx.out, count(&targets));
    Flow::Continue
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
