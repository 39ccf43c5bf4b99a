//! DEBUG DIGEST: an order-independent digest of every key, value and expiry on this node, 40 hex
//! characters (all zeros when empty), equal on two copies exactly when they hold the same data.
//! DEBUG DIGEST-VALUE key [key...]: per-key digests, for finding where two copies differ.

use super::{Ctx, Flow};
use crate::server::resp::codec::{write_array_header, write_bulk, write_error, write_simple};
use crate::storage::digest_hex;
use bytes::Bytes;
use sha1::{Digest, Sha1};

/// Runs DEBUG.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    match args[1].to_ascii_uppercase().as_slice() {
        b"DIGEST" if args.len() == 2 => {
            let (digest, _) = ctx.engine.digest();
            write_simple(ctx.out, digest);
        }
        b"DIGEST-VALUE" => {
            write_array_header(ctx.out, args.len() - 2);
            for key in &args[2..] {
                let digest = ctx.read_key(key, |s, _| {
                    s.held(key).map(|item| {
                        let mut h = Sha1::new();
                        h.update(&item.value);
                        h.update(item.expire_at_ms.to_le_bytes());
                        let d: [u8; 20] = h.finalize().into();
                        d
                    })
                });
                write_bulk(ctx.out, digest_hex(&digest.unwrap_or([0; 20])));
            }
        }
        _ => write_error(ctx.out, "ERR DEBUG supports DIGEST and DIGEST-VALUE here"),
    }
    Flow::Continue
}
