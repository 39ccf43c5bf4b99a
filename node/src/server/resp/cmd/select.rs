//! SELECT index: only database 0 exists, as in Redis Cluster.

use super::{Ctx, Flow, int_arg};
use crate::server::resp::codec::{write_error, write_simple};
use bytes::Bytes;

/// Runs SELECT.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    match int_arg(ctx, &args[1]) {
        Some(0) => write_simple(ctx.out, "OK"),
        Some(_) => write_error(ctx.out, "ERR DB index is out of range"),
        None => {}
    }
    Flow::Continue
}
