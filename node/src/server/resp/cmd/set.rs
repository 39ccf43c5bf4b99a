//! SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL], as Redis 7.
//!
//! The condition and the expiry are resolved on this node (the primary) into a plain put with
//! an absolute expiry, or nothing, so the log holds only idempotent commands.

use super::{Ctx, Flow, int_arg, syntax_error};
use crate::engine::now_ms;
use crate::server::resp::codec::{write_bulk, write_error, write_null, write_simple};
use crate::storage::{SetCondition, SetExpiry};
use bytes::Bytes;

/// Runs SET.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let (key, value) = (&args[1], &args[2]);
    if !ctx.key_ok(key) || !ctx.value_ok(value) {
        return Flow::Continue;
    }
    let mut condition = SetCondition::Always;
    let mut expiry = SetExpiry::Clear;
    let mut expiry_set = false;
    let mut get = false;
    let now = now_ms();
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            b"XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            b"KEEPTTL" if !expiry_set => {
                expiry = SetExpiry::Keep;
                expiry_set = true;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !expiry_set => {
                let Some(arg) = args.get(i + 1) else {
                    return syntax_error(ctx);
                };
                let Some(n) = int_arg(ctx, arg) else {
                    return Flow::Continue;
                };
                let at = match opt.as_slice() {
                    b"EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
                    b"PX" => n.checked_add(now),
                    b"EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                match at {
                    Some(at) if n > 0 => expiry = SetExpiry::At(at),
                    _ => {
                        write_error(ctx.out, "ERR invalid expire time in 'set' command");
                        return Flow::Continue;
                    }
                }
                expiry_set = true;
                i += 1;
            }
            _ => return syntax_error(ctx),
        }
        i += 1;
    }
    let outcome = ctx.write_key_at(key, now, |s| {
        let o = s.decide_set(key.clone(), value.clone(), condition, expiry, get, now);
        let command = o.command.clone();
        (o, command)
    });
    match outcome {
        Ok(o) if get => match o.previous {
            Some(prev) => write_bulk(ctx.out, &prev),
            None => write_null(ctx.out),
        },
        Ok(o) if o.applied => write_simple(ctx.out, "OK"),
        Ok(_) => write_null(ctx.out),
        Err(e) => ctx.engine_error(&e),
    }
    Flow::Continue
}
