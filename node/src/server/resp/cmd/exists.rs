//! EXISTS key [key ...]: how many of the keys exist (a key named twice counts twice).

use super::{Ctx, Flow};
use crate::server::resp::codec::write_integer;
use bytes::Bytes;

/// Runs EXISTS.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let n = args[1..]
        .iter()
        .filter(|k| ctx.read_key(k, |s, now| s.contains(k, now)))
        .count();
    write_integer(ctx.out, n as i64);
    Flow::Continue
}
