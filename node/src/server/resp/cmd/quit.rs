//! QUIT: `+OK`, then the connection closes.

use super::{Ctx, Flow};
use crate::server::resp::codec::write_simple;
use bytes::Bytes;

/// Runs QUIT.
pub fn run(_args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    write_simple(ctx.out, "OK");
    Flow::Close
}
