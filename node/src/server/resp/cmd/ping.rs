//! PING [message]: `+PONG`, or the message as a bulk string.

use super::{Ctx, Flow};
use crate::server::resp::codec::{write_bulk, write_simple};
use bytes::Bytes;

/// Runs PING.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    match args.get(1) {
        None => write_simple(ctx.out, "PONG"),
        Some(msg) if args.len() == 2 => write_bulk(ctx.out, msg),
        Some(_) => {
            crate::server::resp::codec::write_error(
                ctx.out,
                "ERR wrong number of arguments for 'ping' command",
            );
        }
    }
    Flow::Continue
}
