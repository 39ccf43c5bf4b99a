//! KEYS pattern: every live key matching a Redis glob pattern. Bounded by max-keys-per-call:
//! past it the call fails and asks for SCAN, instead of building an unbounded reply.

use super::{Ctx, Flow};
use crate::engine::now_ms;
use crate::glob::{key_matches, literal_prefix};
use crate::server::resp::codec::{write_array_header, write_bulk, write_error};
use bytes::Bytes;

/// Runs KEYS.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if ctx.refuses_partial("KEYS") {
        return Flow::Continue;
    }
    let pattern = &args[1];
    let prefix = literal_prefix(pattern);
    let max = ctx.limits.max_keys_per_call;
    let now = now_ms();
    let mut found: Vec<Bytes> = Vec::new();
    let mut bytes = 0usize;
    let max_bytes = ctx.limits.max_reply_bytes;
    for p in ctx.engine.partitions() {
        if !ctx.serves(p.id(), false) {
            continue;
        }
        let mut too_many = false;
        p.read(|s| {
            s.for_each_from(prefix, |key, item| {
                if !key.starts_with(prefix) {
                    return false;
                }
                let live = item.expire_at_ms == 0 || item.expire_at_ms > now;
                if live && key_matches(pattern, key) {
                    bytes += key.len();
                    if found.len() >= max || bytes > max_bytes {
                        too_many = true;
                        return false;
                    }
                    found.push(key.clone());
                }
                true
            })
        });
        if too_many {
            write_error(
                ctx.out,
                format!(
                    "ERR KEYS would return more than {max} keys (max-keys-per-call) or \
                     {max_bytes} bytes (max-reply-bytes); use SCAN"
                ),
            );
            return Flow::Continue;
        }
    }
    write_array_header(ctx.out, found.len());
    for key in &found {
        write_bulk(ctx.out, key);
    }
    Flow::Continue
}
