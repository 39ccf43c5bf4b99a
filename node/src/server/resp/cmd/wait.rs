//! WAIT numreplicas timeout: block until that many replicas have acknowledged this connection's
//! writes, or the timeout (milliseconds; 0 waits forever) passes, then return how many have.
//!
//! A standalone node has no replicas, so the answer is 0: at once when 0 replicas are asked
//! for, after the timeout otherwise, as Redis without replicas behaves. Replication (DESIGN.md)
//! replaces this with real acknowledgements.

use super::{Ctx, Flow, int_arg};
use crate::server::resp::codec::{write_error, write_integer};
use bytes::Bytes;
use std::time::Duration;

/// Runs WAIT.
pub async fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let Some(wanted) = int_arg(ctx, &args[1]) else {
        return Flow::Continue;
    };
    let Some(timeout) = int_arg(ctx, &args[2]) else {
        return Flow::Continue;
    };
    if timeout < 0 {
        write_error(ctx.out, "ERR timeout is negative");
        return Flow::Continue;
    }
    let acked = 0;
    if wanted > acked {
        // The batch's own writes are made durable before the wait, as Redis does.
        if let Err(e) = ctx.commit().await {
            // Earlier replies of this batch acknowledged writes that did not persist: replace
            // them with the error and close, as a failed batch commit does.
            ctx.out.clear();
            write_error(ctx.out, format!("ERR write not persisted: {e}"));
            return Flow::Close;
        }
        let wait = async {
            if timeout == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(timeout as u64)).await;
        };
        let mut shutdown = ctx.shutdown.clone();
        tokio::select! {
            _ = wait => {}
            _ = shutdown.wait_for(|&down| down) => {}
        }
    }
    write_integer(ctx.out, acked);
    Flow::Continue
}
