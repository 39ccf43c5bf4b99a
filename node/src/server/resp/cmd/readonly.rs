//! READONLY and READWRITE: whether this connection may read from replicas. After READONLY, a
//! read of a slot this node holds a replica of is served here instead of redirected to the
//! primary (the read may lag the primary); writes are always redirected. READWRITE undoes it.

use super::{Ctx, Flow};
use crate::server::resp::codec::{write_error, write_simple};
use bytes::Bytes;

/// Runs READONLY or READWRITE (`name`).
pub fn run(name: &str, _args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if ctx.cluster.standalone {
        write_error(ctx.out, "ERR This instance has cluster support disabled");
        return Flow::Continue;
    }
    ctx.conn.readonly = name == "readonly";
    write_simple(ctx.out, "OK");
    Flow::Continue
}
