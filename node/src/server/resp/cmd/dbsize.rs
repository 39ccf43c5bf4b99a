//! DBSIZE: keys held on this node, including expired keys not yet deleted, as Redis counts. In a
//! cluster, only the partitions this node serves (leads, or replicates for a READONLY
//! connection), so adding up every node's answer counts each key once.

use super::{Ctx, Flow};
use crate::server::resp::codec::write_integer;
use bytes::Bytes;

/// Runs DBSIZE.
pub fn run(_args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if ctx.refuses_partial("DBSIZE") {
        return Flow::Continue;
    }
    let keys: usize = ctx
        .engine
        .partitions()
        .iter()
        .filter(|p| ctx.serves(p.id(), false))
        .map(|p| p.read(crate::storage::KvState::len))
        .sum();
    write_integer(ctx.out, keys as i64);
    Flow::Continue
}
