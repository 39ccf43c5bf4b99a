//! TTL and PTTL key: seconds (or milliseconds) left; -1 without expiry, -2 when missing.

use super::{Ctx, Flow};
use crate::server::resp::codec::write_integer;
use crate::storage::Ttl;
use bytes::Bytes;

/// Runs TTL or PTTL; `name` says which.
pub fn run(name: &str, args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let key = &args[1];
    let reply = match ctx.read_key(key, |s, now| s.ttl(key, now)) {
        Ttl::Missing => -2,
        Ttl::Persistent => -1,
        // TTL rounds to the nearest second, as Redis does.
        Ttl::Millis(ms) if name == "ttl" => (ms + 500) / 1000,
        Ttl::Millis(ms) => ms,
    };
    write_integer(ctx.out, reply);
    Flow::Continue
}
