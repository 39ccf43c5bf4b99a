//! COMMAND [COUNT | INFO name... | DOCS ...]: what commands this node serves, in Redis's reply
//! shape, so redis-cli's hints and client libraries' command tables work.

use super::{COMMANDS, Ctx, Flow, Spec, lookup};
use crate::server::resp::codec::{
    write_array_header, write_bulk, write_error, write_integer, write_null_array, write_simple,
};
use bytes::{Bytes, BytesMut};

fn write_spec(out: &mut BytesMut, s: &Spec) {
    write_array_header(out, 6);
    write_bulk(out, s.name);
    write_integer(out, i64::from(s.arity));
    write_array_header(out, s.flags.len());
    for f in s.flags {
        write_simple(out, f);
    }
    write_integer(out, i64::from(s.first_key));
    write_integer(out, i64::from(s.last_key));
    write_integer(out, i64::from(s.step));
}

/// Runs COMMAND.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let Some(sub) = args.get(1) else {
        write_array_header(ctx.out, COMMANDS.len());
        for s in COMMANDS {
            write_spec(ctx.out, s);
        }
        return Flow::Continue;
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => write_integer(ctx.out, COMMANDS.len() as i64),
        b"INFO" => {
            write_array_header(ctx.out, args.len() - 2);
            for name in &args[2..] {
                match lookup(name) {
                    Some((_, s)) => write_spec(ctx.out, s),
                    None => write_null_array(ctx.out),
                }
            }
        }
        // No documentation is served; clients fall back to what they know.
        b"DOCS" => write_array_header(ctx.out, 0),
        _ => write_error(
            ctx.out,
            format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(sub)
            ),
        ),
    }
    Flow::Continue
}
