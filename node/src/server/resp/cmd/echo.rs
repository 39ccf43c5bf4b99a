//! ECHO message: the message back, as a bulk string.

use super::{Ctx, Flow};
use crate::server::resp::codec::write_bulk;
use bytes::Bytes;

/// Runs ECHO.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    write_bulk(ctx.out, &args[1]);
    Flow::Continue
}
