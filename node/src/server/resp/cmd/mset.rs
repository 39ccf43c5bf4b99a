//! MSET key value [key value ...]: sets every pair.
//!
//! The pairs of one partition are written as one log entry, so they apply together on every
//! copy. Pairs in different partitions are separate entries: a crash between them can keep some
//! and not others, which a single Redis server does not allow. Use hash tags (`{user1}:a`,
//! `{user1}:b`) to keep keys that must change together in one partition.

use super::{Ctx, Flow};
use crate::proto::{Command, CommandBatch, PutCommand, command::Cmd};
use crate::server::resp::codec::{write_error, write_simple};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs MSET.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    if args.len() % 2 != 1 {
        write_error(ctx.out, "ERR wrong number of arguments for 'mset' command");
        return Flow::Continue;
    }
    let mut by_partition: BTreeMap<u32, Vec<Command>> = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        let (key, value) = (&pair[0], &pair[1]);
        if !ctx.key_ok(key) || !ctx.value_ok(value) {
            return Flow::Continue;
        }
        let p = ctx.engine.slots().partition_of_key(key);
        by_partition.entry(p).or_default().push(Command {
            cmd: Some(Cmd::Put(PutCommand {
                key: key.to_vec(),
                value: value.to_vec(),
                expire_at_ms: 0,
            })),
        });
    }
    for (p, commands) in by_partition {
        let Some(partition) = ctx.engine.partitions().get(p as usize).map(Arc::clone) else {
            continue;
        };
        let command = if commands.len() == 1 {
            commands.into_iter().next()
        } else {
            Some(Command {
                cmd: Some(Cmd::Batch(CommandBatch { commands })),
            })
        };
        if let Err(e) = ctx.write_partition(&partition, |_| ((), command)) {
            ctx.engine_error(&e);
            return Flow::Continue;
        }
    }
    write_simple(ctx.out, "OK");
    Flow::Continue
}
