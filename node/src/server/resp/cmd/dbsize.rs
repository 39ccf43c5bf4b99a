//! DBSIZE: keys held on this node, including expired keys not yet deleted, as Redis counts.

use super::{Ctx, Flow};
use crate::server::resp::codec::write_integer;
use bytes::Bytes;

/// Runs DBSIZE.
pub fn run(_args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    write_integer(ctx.out, ctx.engine.keys() as i64);
    Flow::Continue
}
