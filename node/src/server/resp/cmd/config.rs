//! CONFIG GET pattern: the few settings tools ask for (redis-benchmark asks for `save` and
//! `appendonly`), answered from the node's real configuration. CONFIG SET is refused: settings
//! are flags of the node.

use super::{Ctx, Flow};
use crate::glob::glob_match;
use crate::server::resp::codec::{write_array_header, write_bulk, write_error};
use crate::storage::FsyncPolicy;
use bytes::Bytes;

/// Runs CONFIG.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let sub = args[1].to_ascii_uppercase();
    if sub.as_slice() != b"GET" || args.len() < 3 {
        write_error(
            ctx.out,
            "ERR CONFIG supports only GET here: the node is configured by its flags",
        );
        return Flow::Continue;
    }
    let cfg = ctx.engine.config();
    let persistent = cfg.data_dir.is_some();
    let settings: [(&str, String); 5] = [
        ("save", String::new()),
        ("appendonly", if persistent { "yes" } else { "no" }.into()),
        (
            "appendfsync",
            match cfg.fsync {
                FsyncPolicy::Always => "always",
                FsyncPolicy::EverySec => "everysec",
                FsyncPolicy::Never => "no",
            }
            .into(),
        ),
        ("databases", "1".into()),
        ("maxclients", ctx.limits.max_connections.to_string()),
    ];
    let found: Vec<&(&str, String)> = settings
        .iter()
        .filter(|(name, _)| {
            args[2..]
                .iter()
                .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
        })
        .collect();
    write_array_header(ctx.out, found.len() * 2);
    for (name, value) in found {
        write_bulk(ctx.out, name);
        write_bulk(ctx.out, value);
    }
    Flow::Continue
}
