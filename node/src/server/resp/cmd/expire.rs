//! EXPIRE, PEXPIRE, EXPIREAT and PEXPIREAT key time: set a key's expiry; 1 if the key exists,
//! 0 if not. A time already past deletes the key, through the log.

use super::{Ctx, Flow, int_arg};
use crate::engine::now_ms;
use crate::server::resp::codec::{write_error, write_integer};
use bytes::Bytes;

/// Runs one of the family; `name` says which.
pub fn run(name: &str, args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let key = &args[1];
    if args.len() > 3 {
        write_error(
            ctx.out,
            format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(&args[3])
            ),
        );
        return Flow::Continue;
    }
    let Some(n) = int_arg(ctx, &args[2]) else {
        return Flow::Continue;
    };
    let now = now_ms();
    let at = match name {
        "expire" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        "pexpire" => n.checked_add(now),
        "expireat" => n.checked_mul(1000),
        _ => Some(n),
    };
    let Some(at) = at else {
        write_error(
            ctx.out,
            format!("ERR invalid expire time in '{name}' command"),
        );
        return Flow::Continue;
    };
    match ctx.write_key(key, |s| s.decide_expire(key, at, now)) {
        Ok(existed) => write_integer(ctx.out, i64::from(existed)),
        Err(e) => ctx.engine_error(&e),
    }
    Flow::Continue
}
