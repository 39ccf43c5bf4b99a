//! FLUSHALL and FLUSHDB [ASYNC|SYNC]: remove every key, one logged clear per partition. In a
//! cluster, a node clears the partitions it leads.

use super::{Ctx, Flow, syntax_error};
use crate::server::resp::codec::write_simple;
use bytes::Bytes;
use std::sync::Arc;

/// Runs FLUSHALL or FLUSHDB (one database, so they are the same).
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if let Some(mode) = args.get(1) {
        let mode = mode.to_ascii_uppercase();
        if args.len() > 2 || (mode != b"ASYNC" && mode != b"SYNC") {
            return syntax_error(ctx);
        }
    }
    if ctx.refuses_partial("FLUSHALL") {
        return Flow::Continue;
    }
    // In a cluster, only the partitions this node leads, as a Redis Cluster node flushes only
    // its own slots.
    let partitions: Vec<_> = ctx
        .engine
        .partitions()
        .iter()
        .filter(|p| ctx.serves(p.id(), true))
        .map(Arc::clone)
        .collect();
    for p in &partitions {
        if let Err(e) = ctx.write_partition(p, |s| ((), s.decide_clear())) {
            ctx.engine_error(&e);
            return Flow::Continue;
        }
    }
    write_simple(ctx.out, "OK");
    Flow::Continue
}
