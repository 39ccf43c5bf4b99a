//! SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]: walk every key, a page at a time.
//!
//! Keys are walked partition by partition in key order. The cursor a reply returns names a
//! position this connection remembers (the partition and the next key), so a key present for the
//! whole walk is returned exactly once even while others are added or removed, a stronger
//! promise than Redis's "at least once". Cursors belong to the connection: a connection keeps
//! the 64 newest, and an unknown cursor is an error rather than a silent restart.

use super::{Ctx, Cursor, Flow, int_arg, syntax_error};
use crate::engine::now_ms;
use crate::glob::{key_matches, literal_prefix};
use crate::server::resp::codec::{write_array_header, write_bulk, write_error};
use bytes::Bytes;

/// Runs SCAN.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if ctx.refuses_partial("SCAN") {
        return Flow::Continue;
    }
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        write_error(ctx.out, "ERR invalid cursor");
        return Flow::Continue;
    };
    let mut pattern: Option<Bytes> = None;
    let mut count: usize = 10;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else {
            return syntax_error(ctx);
        };
        match args[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => match int_arg(ctx, value) {
                Some(n) if n >= 1 => count = (n as usize).min(ctx.limits.max_keys_per_call),
                Some(_) => return syntax_error(ctx),
                None => return Flow::Continue,
            },
            // Every value here is a string.
            b"TYPE" if value.eq_ignore_ascii_case(b"string") => {}
            b"TYPE" => {
                write_array_header(ctx.out, 2);
                write_bulk(ctx.out, "0");
                write_array_header(ctx.out, 0);
                return Flow::Continue;
            }
            _ => return syntax_error(ctx),
        }
        i += 2;
    }
    let mut at = if cursor == 0 {
        Cursor {
            partition: 0,
            next_key: Bytes::from(
                pattern
                    .as_deref()
                    .map(literal_prefix)
                    .unwrap_or_default()
                    .to_vec(),
            ),
        }
    } else {
        match ctx.conn.take_cursor(cursor) {
            Some(c) => c,
            None => {
                write_error(
                    ctx.out,
                    "ERR invalid cursor: unknown to this connection (cursors live on the connection that opened them)",
                );
                return Flow::Continue;
            }
        }
    };
    let now = now_ms();
    let mut keys: Vec<Bytes> = Vec::new();
    let partitions = ctx.engine.partitions().len() as u32;
    let prefix: Bytes = Bytes::from(
        pattern
            .as_deref()
            .map(literal_prefix)
            .unwrap_or_default()
            .to_vec(),
    );
    let next = loop {
        let Some(p) = ctx.engine.partitions().get(at.partition as usize) else {
            break None;
        };
        // In a cluster, partitions this node does not serve are skipped.
        if !ctx.serves(at.partition, false) {
            if at.partition + 1 < partitions {
                at = Cursor {
                    partition: at.partition + 1,
                    next_key: prefix.clone(),
                };
                continue;
            }
            break None;
        }
        let want = count.saturating_sub(keys.len()).max(1);
        let budget = ctx.limits.max_reply_bytes;
        let (page, next_key) = p.read(|s| {
            s.scan_page(&at.next_key, &[], want, budget, false, now, |k| {
                pattern.as_deref().is_none_or(|pat| key_matches(pat, k))
            })
        });
        // Past the pattern's literal prefix nothing more can match in this partition.
        let next_key = next_key.filter(|k| k.starts_with(&prefix));
        keys.extend(page.into_iter().map(|kv| Bytes::from(kv.key)));
        match next_key {
            Some(k) => {
                at.next_key = k;
                break Some(at);
            }
            None if at.partition + 1 < partitions => {
                at = Cursor {
                    partition: at.partition + 1,
                    next_key: prefix.clone(),
                };
                if keys.len() >= count {
                    break Some(at);
                }
            }
            None => break None,
        }
    };
    let reply_cursor = match next {
        Some(c) => ctx.conn.open_cursor(c),
        None => 0,
    };
    write_array_header(ctx.out, 2);
    write_bulk(ctx.out, reply_cursor.to_string());
    write_array_header(ctx.out, keys.len());
    for k in &keys {
        write_bulk(ctx.out, k);
    }
    Flow::Continue
}
