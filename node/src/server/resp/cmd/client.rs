//! CLIENT SETNAME name | GETNAME | ID | SETINFO attr value: what redis-cli and client
//! libraries send on connecting.

use super::{Ctx, Flow, syntax_error};
use crate::server::resp::codec::{
    write_bulk, write_error, write_integer, write_null, write_simple,
};
use bytes::Bytes;

/// Runs CLIENT.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"SETNAME", 3) => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                write_error(
                    ctx.out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                ctx.conn.name = (!args[2].is_empty()).then(|| args[2].clone());
                write_simple(ctx.out, "OK");
            }
        }
        (b"GETNAME", 2) => match &ctx.conn.name {
            Some(name) => write_bulk(ctx.out, name),
            None => write_null(ctx.out),
        },
        (b"ID", 2) => write_integer(ctx.out, ctx.conn.id as i64),
        (b"SETINFO", 4) => write_simple(ctx.out, "OK"),
        (b"SETNAME" | b"GETNAME" | b"ID" | b"SETINFO", _) => return syntax_error(ctx),
        _ => write_error(
            ctx.out,
            format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&args[1])
            ),
        ),
    }
    Flow::Continue
}
