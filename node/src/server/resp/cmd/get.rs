//! GET key: the value, or nil when the key is missing or expired.

use super::{Ctx, Flow};
use crate::server::resp::codec::{write_bulk, write_null};
use bytes::Bytes;

/// Runs GET.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let key = &args[1];
    match ctx.read_key(key, |s, now| s.get(key, now).map(|i| i.value.clone())) {
        Some(value) => write_bulk(ctx.out, &value),
        None => write_null(ctx.out),
    }
    Flow::Continue
}
