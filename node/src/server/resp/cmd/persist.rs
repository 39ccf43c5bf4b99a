//! PERSIST key: remove the key's expiry; 1 if there was one.

use super::{Ctx, Flow};
use crate::engine::now_ms;
use crate::server::resp::codec::write_integer;
use bytes::Bytes;

/// Runs PERSIST.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let key = &args[1];
    let now = now_ms();
    match ctx.write_key(key, |s| s.decide_persist(key, now)) {
        Ok(removed) => write_integer(ctx.out, i64::from(removed)),
        Err(e) => ctx.engine_error(&e),
    }
    Flow::Continue
}
