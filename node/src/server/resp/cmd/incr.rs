//! INCR, DECR, INCRBY and DECRBY: add to an integer value and return the result. The primary
//! computes the new value and logs it as a plain put, keeping the key's expiry.

use super::{Ctx, Flow, int_arg};
use crate::engine::now_ms;
use crate::server::resp::codec::{write_error, write_integer};
use crate::storage::IncrError;
use bytes::Bytes;

/// Runs one of the family; `name` says which.
pub fn run(name: &str, args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let key = &args[1];
    let delta = match name {
        "incr" => 1,
        "decr" => -1,
        _ => {
            let Some(n) = int_arg(ctx, &args[2]) else {
                return Flow::Continue;
            };
            if name == "decrby" {
                let Some(neg) = n.checked_neg() else {
                    write_error(ctx.out, "ERR decrement would overflow");
                    return Flow::Continue;
                };
                neg
            } else {
                n
            }
        }
    };
    if !ctx.key_ok(key) {
        return Flow::Continue;
    }
    let now = now_ms();
    let result = ctx.write_key(key, |s| match s.decide_incr(key.clone(), delta, now) {
        Ok((v, command)) => (Ok(v), Some(command)),
        Err(e) => (Err(e), None),
    });
    match result {
        Ok(Ok(v)) => write_integer(ctx.out, v),
        Ok(Err(IncrError::NotAnInteger)) => {
            write_error(ctx.out, "ERR value is not an integer or out of range")
        }
        Ok(Err(IncrError::Overflow)) => {
            write_error(ctx.out, "ERR increment or decrement would overflow")
        }
        Err(e) => ctx.engine_error(&e),
    }
    Flow::Continue
}
