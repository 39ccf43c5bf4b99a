//! Accepting connections and running each one: read, execute a batch, make it durable, reply.

use super::cmd::{self, Cluster, ConnState, Ctx, Flow};
use crate::engine::Engine;
use crate::metrics::{self, DirectionLabel};
use crate::server::Limits;
use crate::server::resp::codec::{ParserLimits, RequestParser, write_error};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Replies buffered past this many bytes (or [`cmd::MAX_HELD_REPLIES`] replies waiting for
/// their write concern) are sent before more commands of the batch run.
const MAX_OUTPUT_BATCH: usize = 16 << 20;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts RESP connections on `listener` until `shutdown` turns true, then waits for every
/// connection to finish the batch it is running.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    limits: Limits,
    cluster: Arc<Cluster>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (mut socket, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accepting a RESP connection: {e}");
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    let mut out = BytesMut::new();
                    write_error(&mut out, "ERR max number of clients reached");
                    let _ = socket.write_all(&out).await;
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let engine = Arc::clone(&engine);
                let cluster = Arc::clone(&cluster);
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    metrics::get().connections.inc();
                    if let Err(e) = run(socket, engine, limits, cluster, shutdown).await {
                        tracing::debug!("RESP connection closed: {e}");
                    }
                    metrics::get().connections.dec();
                    drop(permit);
                });
            }
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Why a batch of commands stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Every complete command was run; more bytes are needed.
    NeedInput,
    /// Enough replies are buffered: send them, then go on without reading.
    OutputFull,
    /// The connection must close after the replies are sent.
    Close,
}

/// Runs every complete command buffered in `input`.
async fn run_batch(
    parser: &mut RequestParser,
    input: &mut BytesMut,
    ctx: &mut Ctx<'_>,
    max_request_bytes: usize,
) -> Stop {
    loop {
        match parser.parse(input) {
            Ok(Some(args)) => {
                if cmd::dispatch(args, ctx).await == Flow::Close {
                    return Stop::Close;
                }
                if ctx.out.len() >= MAX_OUTPUT_BATCH || ctx.holds_enough() {
                    return Stop::OutputFull;
                }
            }
            Ok(None) => {
                if parser.pending_arg_bytes() + input.len() > max_request_bytes {
                    write_error(
                        ctx.out,
                        format!("ERR request exceeds max-request-bytes ({max_request_bytes})"),
                    );
                    return Stop::Close;
                }
                return Stop::NeedInput;
            }
            Err(e) => {
                e.write_reply(ctx.out);
                return Stop::Close;
            }
        }
    }
}

async fn run(
    mut socket: TcpStream,
    engine: Arc<Engine>,
    limits: Limits,
    cluster: Arc<Cluster>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let parser_limits = ParserLimits {
        max_bulk_len: limits
            .max_request_bytes
            .min(ParserLimits::default().max_bulk_len),
        ..ParserLimits::default()
    };
    let mut parser = RequestParser::new(parser_limits);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut conn = ConnState::new(NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed));
    let in_label = DirectionLabel { direction: "in" };
    let out_label = DirectionLabel { direction: "out" };
    let mut stop = Stop::NeedInput;
    loop {
        if stop == Stop::NeedInput {
            // A shutdown lets the batch that is running finish, then closes between batches.
            let n = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                n = socket.read_buf(&mut input) => n?,
            };
            if n == 0 {
                return Ok(());
            }
            metrics::get()
                .net_bytes
                .get_or_create(&in_label)
                .inc_by(n as u64);
        }
        let mut ctx = Ctx::new(
            &engine,
            &mut conn,
            &limits,
            &cluster,
            &mut out,
            shutdown.clone(),
        );
        stop = run_batch(&mut parser, &mut input, &mut ctx, limits.max_request_bytes).await;
        // Acknowledge only what is durable under the fsync policy, and what met the write
        // concern it asked for.
        if let Err(e) = ctx.finish().await {
            out.clear();
            write_error(&mut out, format!("ERR write not persisted: {e}"));
            stop = Stop::Close;
        }
        if !out.is_empty() {
            socket.write_all(&out).await?;
            metrics::get()
                .net_bytes
                .get_or_create(&out_label)
                .inc_by(out.len() as u64);
            out.clear();
        }
        if stop == Stop::Close {
            let _ = socket.shutdown().await;
            return Ok(());
        }
    }
}
