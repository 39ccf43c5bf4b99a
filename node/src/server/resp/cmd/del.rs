//! DEL key [key ...]: how many of the keys existed.

use super::{Ctx, Flow};
use crate::engine::now_ms;
use crate::server::resp::codec::write_integer;
use bytes::Bytes;

/// Runs DEL.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let mut removed = 0;
    for key in &args[1..] {
        let now = now_ms();
        match ctx.write_key(key, |s| s.decide_delete(key, now)) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                ctx.engine_error(&e);
                return Flow::Continue;
            }
        }
    }
    write_integer(ctx.out, removed);
    Flow::Continue
}
