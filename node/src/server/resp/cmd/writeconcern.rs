//! WRITECONCERN [ONE|QUORUM|ALL] [TIMEOUT ms]: the write concern of this connection's writes.
//! Partita's own command; Redis has none (it offers WAIT after the fact, which works here too).
//!
//! ONE, the default, acknowledges a write once the primary has applied it, as Redis does.
//! QUORUM waits until a majority of the partition's copies hold it, ALL until every in-sync
//! copy does. A write that misses its concern within the timeout (default 5000 ms) answers
//! `-TIMEOUT …` saying how many copies acknowledged it; it is not rolled back. Without
//! arguments the command returns the connection's current setting.

use super::{Ctx, Flow, int_arg, syntax_error};
use crate::proto::WriteConcern;
use crate::server::resp::codec::{write_bulk, write_simple};
use bytes::Bytes;
use std::time::Duration;

/// Most milliseconds a write may wait for its concern.
pub const MAX_TIMEOUT_MS: i64 = 3_600_000;

/// Runs WRITECONCERN.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if args.len() == 1 {
        let name = ctx
            .conn
            .concern
            .as_str_name()
            .trim_start_matches("WRITE_CONCERN_");
        write_bulk(
            ctx.out,
            format!("{name} {}", ctx.conn.concern_timeout.as_millis()),
        );
        return Flow::Continue;
    }
    let mut concern = ctx.conn.concern;
    let mut timeout = ctx.conn.concern_timeout;
    let mut i = 1;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"ONE" => concern = WriteConcern::One,
            b"QUORUM" => concern = WriteConcern::Quorum,
            b"ALL" => concern = WriteConcern::All,
            b"TIMEOUT" => {
                let Some(arg) = args.get(i + 1) else {
                    return syntax_error(ctx);
                };
                let Some(ms) = int_arg(ctx, arg) else {
                    return Flow::Continue;
                };
                if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                    crate::server::resp::codec::write_error(
                        ctx.out,
                        format!("ERR timeout must be between 1 and {MAX_TIMEOUT_MS} ms"),
                    );
                    return Flow::Continue;
                }
                timeout = Duration::from_millis(ms as u64);
                i += 1;
            }
            _ => return syntax_error(ctx),
        }
        i += 1;
    }
    ctx.conn.concern = concern;
    ctx.conn.concern_timeout = timeout;
    write_simple(ctx.out, "OK");
    Flow::Continue
}
