//! MGET key [key ...]: the values, nil for missing keys.

use super::{Ctx, Flow};
use crate::server::resp::codec::{write_array_header, write_bulk, write_error, write_null};
use bytes::Bytes;

/// Runs MGET.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let keys = &args[1..];
    if keys.len() > ctx.limits.max_keys_per_call {
        write_error(
            ctx.out,
            format!(
                "ERR too many keys (max-keys-per-call is {})",
                ctx.limits.max_keys_per_call
            ),
        );
        return Flow::Continue;
    }
    let values: Vec<Option<Bytes>> = keys
        .iter()
        .map(|key| ctx.read_key(key, |s, now| s.get(key, now).map(|i| i.value.clone())))
        .collect();
    let bytes: usize = values.iter().flatten().map(Bytes::len).sum();
    if bytes > ctx.limits.max_reply_bytes {
        write_error(
            ctx.out,
            format!(
                "ERR reply of {bytes} bytes exceeds max-reply-bytes ({})",
                ctx.limits.max_reply_bytes
            ),
        );
        return Flow::Continue;
    }
    write_array_header(ctx.out, keys.len());
    for value in &values {
        match value {
            Some(v) => write_bulk(ctx.out, v),
            None => write_null(ctx.out),
        }
    }
    Flow::Continue
}
