//! RESP commands, one per file (families such as INCR/DECR share one). Each file parses its
//! arguments, asks the engine, and writes the reply; errors use Redis's own wording so clients
//! and scripts that match on it keep working.
//!
//! A command that writes records the partition and offset it wrote in [`Ctx`]; the connection
//! then calls [`Ctx::finish`] once per batch, which hands the batch's entries to the log and,
//! under `fsync=always`, waits for one shared fsync before any reply is sent.
//!
//! Under a write concern above ONE (WRITECONCERN), a write's reply is written at once but held
//! back: the batch's commands all run first, and [`Ctx::finish`] then waits for every held
//! reply's concern, in order, replacing a reply whose concern failed with the error. So the
//! 16 pipelined writes of a connection share one wait for the replicas, as 16 SETs and one WAIT
//! do on Redis, instead of each waiting for a round trip before the next one runs.

mod client;
mod cluster;
mod command;
mod config;
mod dbsize;
mod debug;
mod del;
mod echo;
mod exists;
mod expire;
mod flushall;
mod get;
mod incr;
mod info;
mod keys;
mod mget;
mod mset;
mod persist;
mod ping;
mod quit;
mod readonly;
mod scan;
mod select;
mod set;
mod ttl;
mod wait;
mod writeconcern;

use crate::Error;
use crate::engine::{Engine, Partition, now_ms};
use crate::metrics::{self, CommandLabel};
use crate::proto::{Command, NodeAddress, WriteConcern};
use crate::routing::{self, Route};
use crate::server::Limits;
use crate::server::resp::codec::write_error;
use crate::server::resp::proxy::{PROXY_CLIENT_NAME, Proxy};
use crate::slot::key_slot;
use crate::storage::{KvState, Position};
use crate::topology::{Held, Map};
use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Whether the connection goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading commands.
    Continue,
    /// Send the replies, then close (QUIT, protocol errors).
    Close,
}

/// A SCAN cursor: where the next page starts.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The partition being walked.
    pub partition: u32,
    /// The first key of the next page.
    pub next_key: Bytes,
}

/// Most SCAN cursors a connection keeps; the oldest is forgotten past it.
pub const MAX_CURSORS: usize = 64;

/// Most replies a batch holds back for their write concern; the batch stops there, waits for
/// them and sends its replies before it runs more commands.
pub const MAX_HELD_REPLIES: usize = 4096;

/// A reply held back until its command's writes meet the write concern in force when it ran.
struct HeldReply {
    /// Where the reply is in the batch's output: `out[start..end]`.
    start: usize,
    end: usize,
    /// The command's writes: the last position per partition.
    writes: Vec<(Arc<Partition>, Position)>,
    concern: WriteConcern,
    timeout: std::time::Duration,
    /// When the command ran plus its timeout.
    deadline: tokio::time::Instant,
    /// The command's position in [`COMMANDS`], to count a failed concern as its error.
    index: usize,
}

/// What a connection remembers between commands.
#[derive(Debug)]
pub struct ConnState {
    /// The client id (CLIENT ID).
    pub id: u64,
    /// The name set by CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// Open SCAN cursors, oldest first.
    pub cursors: VecDeque<(u64, Cursor)>,
    next_cursor: u64,
    /// The write concern of this connection's writes (WRITECONCERN); ONE, as Redis, unless set.
    pub concern: WriteConcern,
    /// How long a write waits for its concern.
    pub concern_timeout: std::time::Duration,
    /// The highest offset this connection wrote per partition, for WAIT. At most one entry per
    /// partition.
    pub written: std::collections::HashMap<u32, u64>,
    /// READONLY was sent: reads of slots this node replicates are served here.
    pub readonly: bool,
    /// A write of this connection was proxied to another node, whose replicas WAIT cannot see.
    pub proxied_writes: bool,
}

/// What a node does with a command for a slot another node leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// Forward it to the slot's primary and pass the reply back (see [`crate::server::resp::proxy`]).
    Proxy,
    /// Answer `-MOVED slot host:port`, as Redis Cluster does.
    Moved,
}

/// What the RESP front end knows of the cluster: this node, and the partition map it holds.
pub struct Cluster {
    /// This node.
    pub node: NodeAddress,
    /// The partition map, once pushed.
    pub topology: Arc<Held>,
    /// A standalone node leads every partition and answers as Redis without cluster support.
    pub standalone: bool,
    /// Proxy or redirect commands for other nodes' slots.
    pub redirect: Redirect,
    /// Connections to other nodes, for proxying.
    pub proxy: Proxy,
}

impl ConnState {
    /// A new connection's state.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            name: None,
            cursors: VecDeque::new(),
            next_cursor: 1,
            concern: WriteConcern::One,
            concern_timeout: std::time::Duration::from_secs(5),
            written: std::collections::HashMap::new(),
            readonly: false,
            proxied_writes: false,
        }
    }

    /// Stores a cursor and returns its number (never 0, which means "start" and "done").
    pub fn open_cursor(&mut self, cursor: Cursor) -> u64 {
        let n = self.next_cursor;
        self.next_cursor += 1;
        if self.cursors.len() >= MAX_CURSORS {
            self.cursors.pop_front();
        }
        self.cursors.push_back((n, cursor));
        n
    }

    /// Takes the cursor with number `n`, if this connection still holds it.
    pub fn take_cursor(&mut self, n: u64) -> Option<Cursor> {
        let at = self.cursors.iter().position(|(id, _)| *id == n)?;
        self.cursors.remove(at).map(|(_, c)| c)
    }
}

/// Everything a command needs: the engine, the connection, the reply buffer, and the writes
/// the batch made.
pub struct Ctx<'a> {
    /// The node's partitions.
    pub engine: &'a Arc<Engine>,
    /// The connection's state.
    pub conn: &'a mut ConnState,
    /// Limits to enforce.
    pub limits: &'a Limits,
    /// The cluster this node is part of.
    pub cluster: &'a Cluster,
    /// Replies, in command order.
    pub out: &'a mut BytesMut,
    /// Turns true when the node shuts down; blocking commands give up then.
    pub shutdown: watch::Receiver<bool>,
    /// (partition, position of the last write) for every partition this batch wrote.
    written: Vec<(Arc<Partition>, Position)>,
    /// The same, for the command being run only.
    command_writes: Vec<(Arc<Partition>, Position)>,
    /// Replies waiting for their write concern, in output order.
    held: Vec<HeldReply>,
    /// Calls and errors per command (by position in [`COMMANDS`]), added to the shared
    /// counters once per batch rather than once per command.
    counts: [(u32, u32); COMMANDS.len()],
}

impl<'a> Ctx<'a> {
    /// A context for one batch.
    pub fn new(
        engine: &'a Arc<Engine>,
        conn: &'a mut ConnState,
        limits: &'a Limits,
        cluster: &'a Cluster,
        out: &'a mut BytesMut,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            engine,
            conn,
            limits,
            cluster,
            out,
            shutdown,
            written: Vec::new(),
            command_writes: Vec::new(),
            held: Vec::new(),
            counts: [(0, 0); COMMANDS.len()],
        }
    }

    /// Whether this node serves partition `p` to this connection under the partition map it
    /// holds: as its primary, or (for a read on a READONLY connection) as a replica. Without a
    /// map, every partition is served. Keyless commands (KEYS, SCAN, DBSIZE, FLUSHALL) cover
    /// only what is served, as on a Redis Cluster node.
    pub fn serves(&self, p: u32, write: bool) -> bool {
        if self.cluster.standalone {
            return true;
        }
        let Some(map) = self.cluster.topology.get() else {
            return true;
        };
        self.engine
            .slots()
            .slot_range(p)
            .is_some_and(|(slot, _)| self.route_by(&map, &[slot], write) == Route::Here)
    }

    /// Where a command on `slots` goes under `map`, given this connection and this node's own
    /// copies.
    fn route_by(&self, map: &Map, slots: &[u16], write: bool) -> Route {
        routing::route(
            Some(map),
            &self.engine.slots(),
            &self.cluster.node.node_id,
            slots,
            write,
            self.conn.readonly,
            |p| local_copy(self.engine, p),
        )
    }

    /// For a keyless command over the whole data set (DBSIZE, KEYS, SCAN, FLUSHALL): in a
    /// proxying cluster, a client that is not cluster-aware would get an answer for this
    /// node's partitions only and take it for the whole. Writes the error saying so and returns
    /// true; false where the command may run (no map, `--redirect moved` as Redis Cluster, a
    /// READONLY connection, or a proxy's own connection).
    pub fn refuses_partial(&mut self, name: &str) -> bool {
        let partial = !self.cluster.standalone
            && self.cluster.redirect == Redirect::Proxy
            && !self.conn.readonly
            && self.conn.name.as_deref() != Some(PROXY_CLIENT_NAME)
            && self.cluster.topology.get().is_some();
        if partial {
            write_error(
                self.out,
                format!(
                    "ERR {name} would cover only the partitions this node leads: run it on each primary (CLUSTER NODES lists them), or use a cluster client (redis-cli -c, redis-cli --cluster call)"
                ),
            );
        }
        partial
    }

    /// Runs `decide` on `key`'s partition and records the write, if any.
    pub fn write_key<R>(
        &mut self,
        key: &[u8],
        decide: impl FnOnce(&KvState) -> (R, Option<Command>),
    ) -> Result<R, Error> {
        self.write_key_at(key, now_ms(), decide)
    }

    /// Like [`Ctx::write_key`], with the time the decision was made at, so a command reads the
    /// clock once.
    pub fn write_key_at<R>(
        &mut self,
        key: &[u8],
        now: i64,
        decide: impl FnOnce(&KvState) -> (R, Option<Command>),
    ) -> Result<R, Error> {
        let partition = Arc::clone(self.engine.partition_of(key));
        self.write_partition_at(&partition, now, decide)
    }

    /// Runs `decide` on `partition` and records the write, if any.
    pub fn write_partition<R>(
        &mut self,
        partition: &Arc<Partition>,
        decide: impl FnOnce(&KvState) -> (R, Option<Command>),
    ) -> Result<R, Error> {
        self.write_partition_at(partition, now_ms(), decide)
    }

    fn write_partition_at<R>(
        &mut self,
        partition: &Arc<Partition>,
        now: i64,
        decide: impl FnOnce(&KvState) -> (R, Option<Command>),
    ) -> Result<R, Error> {
        let (result, at) = partition.write(now, decide)?;
        if let Some(at) = at {
            record(&mut self.written, partition, at);
            // Only a write concern above ONE waits for the command's own writes.
            if self.conn.concern != WriteConcern::One {
                record(&mut self.command_writes, partition, at);
            }
        }
        Ok(result)
    }

    /// Reads `key`'s partition.
    pub fn read_key<R>(&self, key: &[u8], f: impl FnOnce(&KvState, i64) -> R) -> R {
        let now = now_ms();
        self.engine.partition_of(key).read(|s| f(s, now))
    }

    /// Makes the batch's writes as durable as the fsync policy asks: every written partition's
    /// entries go to the log, and under fsync=always one shared fsync covers them.
    pub async fn commit(&mut self) -> Result<(), Error> {
        self.publish_counts();
        let written = std::mem::take(&mut self.written);
        for (p, _) in &written {
            p.flush()?;
        }
        for (p, at) in &written {
            p.wait_durable(at.offset).await?;
            let o = self.conn.written.entry(p.id()).or_default();
            *o = (*o).max(at.offset);
        }
        Ok(())
    }

    /// Ends the batch: commits its writes ([`Ctx::commit`]), then waits for the write concern
    /// of every held reply. A reply whose concern failed (timeout, or its primary deposed) is
    /// replaced by the error, which says how many copies acknowledged. Fails only when the
    /// commit itself failed (the caller then closes the connection).
    pub async fn finish(&mut self) -> Result<(), Error> {
        self.commit().await?;
        let held = std::mem::take(&mut self.held);
        let mut failed: Vec<(usize, usize, String)> = Vec::new();
        for h in &held {
            for (p, at) in &h.writes {
                if let Err(e) = p
                    .wait_acked_until(*at, h.concern, h.timeout, h.deadline)
                    .await
                {
                    failed.push((h.start, h.end, engine_error_message(&e)));
                    if let Some((_, errors)) = counters().get(h.index) {
                        errors.inc();
                    }
                    break;
                }
            }
        }
        if !failed.is_empty() {
            let mut out = BytesMut::with_capacity(self.out.len());
            let mut from = 0;
            for (start, end, message) in failed {
                out.extend_from_slice(&self.out[from..start]);
                write_error(&mut out, message);
                from = end;
            }
            out.extend_from_slice(&self.out[from..]);
            *self.out = out;
        }
        Ok(())
    }

    /// Whether the batch holds as many replies as it may ([`MAX_HELD_REPLIES`]).
    pub fn holds_enough(&self) -> bool {
        self.held.len() >= MAX_HELD_REPLIES
    }

    /// Adds the batch's command counts to the shared metrics.
    fn publish_counts(&mut self) {
        for (i, (calls, errors)) in self.counts.iter_mut().enumerate() {
            if let Some((c, e)) = counters().get(i) {
                if *calls > 0 {
                    c.inc_by(u64::from(*calls));
                }
                if *errors > 0 {
                    e.inc_by(u64::from(*errors));
                }
            }
            (*calls, *errors) = (0, 0);
        }
    }

    /// Checks a key against the key size limit, writing the error if it is too long.
    pub fn key_ok(&mut self, key: &[u8]) -> bool {
        if key.len() > self.limits.max_key_bytes {
            write_error(
                self.out,
                format!(
                    "ERR key too large ({} bytes; max-key-bytes is {})",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            );
            return false;
        }
        true
    }

    /// Checks a value against the value size limit, writing the error if it is too long.
    pub fn value_ok(&mut self, value: &[u8]) -> bool {
        if value.len() > self.limits.max_value_bytes {
            write_error(
                self.out,
                format!(
                    "ERR value too large ({} bytes; max-value-bytes is {})",
                    value.len(),
                    self.limits.max_value_bytes
                ),
            );
            return false;
        }
        true
    }

    /// Writes the error for a failed engine call, with the prefix Redis clients act on:
    /// READONLY on a replica (naming the primary), NOREPLICAS when too few replicas are in
    /// sync, FENCED during a switchover, TIMEOUT when a write concern was not met.
    pub fn engine_error(&mut self, e: &Error) {
        write_error(self.out, engine_error_message(e));
    }
}

/// Records a write at `at` on `partition`: the last position per partition.
fn record(writes: &mut Vec<(Arc<Partition>, Position)>, partition: &Arc<Partition>, at: Position) {
    match writes.iter_mut().find(|(p, _)| p.id() == partition.id()) {
        Some((_, o)) => *o = (*o).max(at),
        None => writes.push((Arc::clone(partition), at)),
    }
}

/// The error reply for a failed engine call (see [`Ctx::engine_error`]).
fn engine_error_message(e: &Error) -> String {
    match e {
        Error::NotPrimary {
            partition,
            epoch,
            primary: Some(p),
        } => format!(
            "READONLY You can't write against a read only replica. Partition {partition} \
                 (epoch {epoch}) is led by {} (gRPC {}{})",
            if p.node_id.is_empty() {
                "its primary"
            } else {
                &p.node_id
            },
            p.grpc_addr,
            if p.resp_addr.is_empty() {
                String::new()
            } else {
                format!(", RESP {}", p.resp_addr)
            }
        ),
        Error::NotPrimary { .. } => format!("READONLY {e}"),
        Error::Fenced { .. } => format!("FENCED {e}"),
        Error::NotEnoughInSync { .. } => {
            format!("NOREPLICAS Not enough good replicas to write: {e}")
        }
        Error::WriteConcernTimeout { .. } | Error::Deposed { .. } => format!("TIMEOUT {e}"),
        _ => format!("ERR {e}"),
    }
}

/// How a command is called: its name, arity as Redis states it (negative: at least), and flags
/// for COMMAND.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Arity, the name included; negative means "at least".
    pub arity: i32,
    /// COMMAND flags.
    pub flags: &'static [&'static str],
    /// Position of the first key, 0 when none.
    pub first_key: i32,
    /// Position of the last key; -1 for "the last argument".
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly", "fast"];
const A: &[&str] = &["fast"];

/// Every command this node serves.
pub const COMMANDS: &[Spec] = &[
    spec("client", -2, A, (0, 0, 0)),
    spec("cluster", -2, A, (0, 0, 0)),
    spec("command", -1, A, (0, 0, 0)),
    spec("config", -2, A, (0, 0, 0)),
    spec("dbsize", 1, R, (0, 0, 0)),
    spec("debug", -2, A, (0, 0, 0)),
    spec("decr", 2, W, (1, 1, 1)),
    spec("decrby", 3, W, (1, 1, 1)),
    spec("del", -2, W, (1, -1, 1)),
    spec("echo", 2, A, (0, 0, 0)),
    spec("exists", -2, R, (1, -1, 1)),
    spec("expire", 3, W, (1, 1, 1)),
    spec("expireat", 3, W, (1, 1, 1)),
    spec("flushall", -1, W, (0, 0, 0)),
    spec("flushdb", -1, W, (0, 0, 0)),
    spec("get", 2, R, (1, 1, 1)),
    spec("incr", 2, W, (1, 1, 1)),
    spec("incrby", 3, W, (1, 1, 1)),
    spec("info", -1, A, (0, 0, 0)),
    spec("keys", 2, &["readonly"], (0, 0, 0)),
    spec("mget", -2, R, (1, -1, 1)),
    spec("mset", -3, W, (1, -1, 2)),
    spec("persist", 2, W, (1, 1, 1)),
    spec("pexpire", 3, W, (1, 1, 1)),
    spec("pexpireat", 3, W, (1, 1, 1)),
    spec("ping", -1, A, (0, 0, 0)),
    spec("pttl", 2, R, (1, 1, 1)),
    spec("quit", -1, A, (0, 0, 0)),
    spec("readonly", 1, A, (0, 0, 0)),
    spec("readwrite", 1, A, (0, 0, 0)),
    spec("scan", -2, &["readonly"], (0, 0, 0)),
    spec("select", 2, A, (0, 0, 0)),
    spec("set", -3, W, (1, 1, 1)),
    spec("ttl", 2, R, (1, 1, 1)),
    spec("wait", 3, A, (0, 0, 0)),
    spec("writeconcern", -1, A, (0, 0, 0)),
];

/// Looks up a command by name, ignoring case; its position in [`COMMANDS`] too. A binary
/// search: [`COMMANDS`] is sorted by name (a test checks it), and every command pays for this.
pub fn lookup(name: &[u8]) -> Option<(usize, &'static Spec)> {
    let lower = name.iter().map(u8::to_ascii_lowercase);
    COMMANDS
        .binary_search_by(|s| s.name.bytes().cmp(lower.clone()))
        .ok()
        .and_then(|i| COMMANDS.get(i).map(|s| (i, s)))
}

/// (calls, errors) counters of every command, resolved once so the hot path neither allocates
/// a label nor takes the family's lock.
fn counters() -> &'static [(Counter, Counter)] {
    static COUNTERS: OnceLock<Vec<(Counter, Counter)>> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|s| {
                let label = CommandLabel {
                    command: s.name.to_string(),
                };
                let m = metrics::get();
                (
                    m.commands.get_or_create(&label).clone(),
                    m.errors.get_or_create(&label).clone(),
                )
            })
            .collect()
    })
}

/// Runs one command.
pub async fn dispatch(args: Vec<Bytes>, ctx: &mut Ctx<'_>) -> Flow {
    let Some(name) = args.first() else {
        return Flow::Continue;
    };
    let Some((index, spec)) = lookup(name) else {
        let mut message = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(name)
        );
        for a in args.iter().skip(1).take(20) {
            message.push_str(&format!("'{}' ", String::from_utf8_lossy(a)));
        }
        write_error(ctx.out, message);
        count_error("unknown");
        return Flow::Continue;
    };
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        write_error(
            ctx.out,
            format!("ERR wrong number of arguments for '{}' command", spec.name),
        );
        ctx.counts[index].1 += 1;
        return Flow::Continue;
    }
    ctx.counts[index].0 += 1;
    if let Some(route) = misrouted(spec, &args, ctx) {
        let before = ctx.out.len();
        refuse_or_forward(route, &args, spec.flags.contains(&"write"), ctx).await;
        if ctx.out.get(before) == Some(&b'-') {
            ctx.counts[index].1 += 1;
        }
        return Flow::Continue;
    }
    let before = ctx.out.len();
    ctx.command_writes.clear();
    let flow = match spec.name {
        "client" => client::run(&args, ctx),
        "cluster" => cluster::run(&args, ctx),
        "command" => command::run(&args, ctx),
        "config" => config::run(&args, ctx),
        "dbsize" => dbsize::run(&args, ctx),
        "debug" => debug::run(&args, ctx),
        "decr" | "decrby" | "incr" | "incrby" => incr::run(spec.name, &args, ctx),
        "del" => del::run(&args, ctx),
        "echo" => echo::run(&args, ctx),
        "exists" => exists::run(&args, ctx),
        "expire" | "pexpire" | "expireat" | "pexpireat" => expire::run(spec.name, &args, ctx),
        "flushall" | "flushdb" => flushall::run(&args, ctx),
        "get" => get::run(&args, ctx),
        "info" => info::run(&args, ctx),
        "keys" => keys::run(&args, ctx),
        "mget" => mget::run(&args, ctx),
        "mset" => mset::run(&args, ctx),
        "persist" => persist::run(&args, ctx),
        "ping" => ping::run(&args, ctx),
        "pttl" | "ttl" => ttl::run(spec.name, &args, ctx),
        "quit" => quit::run(&args, ctx),
        "readonly" | "readwrite" => readonly::run(spec.name, &args, ctx),
        "scan" => scan::run(&args, ctx),
        "select" => select::run(&args, ctx),
        "set" => set::run(&args, ctx),
        "wait" => wait::run(&args, ctx).await,
        "writeconcern" => writeconcern::run(&args, ctx),
        _ => {
            write_error(ctx.out, format!("ERR command '{}' is not wired", spec.name));
            Flow::Continue
        }
    };
    if ctx.conn.concern != WriteConcern::One && !ctx.command_writes.is_empty() {
        // Held back until the batch ends (see [`Ctx::finish`]); the deadline starts now.
        ctx.held.push(HeldReply {
            start: before,
            end: ctx.out.len(),
            writes: std::mem::take(&mut ctx.command_writes),
            concern: ctx.conn.concern,
            timeout: ctx.conn.concern_timeout,
            deadline: tokio::time::Instant::now() + ctx.conn.concern_timeout,
            index,
        });
    }
    if ctx.out.get(before) == Some(&b'-') {
        ctx.counts[index].1 += 1;
    }
    flow
}

/// The hash slots of a command's keys, at the positions its spec names.
fn key_slots(spec: &Spec, args: &[Bytes]) -> Vec<u16> {
    if spec.first_key <= 0 {
        return Vec::new();
    }
    let last = if spec.last_key < 0 {
        args.len() as i32 + spec.last_key
    } else {
        spec.last_key
    };
    (spec.first_key..=last)
        .step_by(spec.step.max(1) as usize)
        .filter_map(|i| args.get(i as usize))
        .map(|k| key_slot(k))
        .collect()
}

/// What this node's copy of partition `p` says, for routing.
fn local_copy(engine: &Engine, p: u32) -> routing::Local {
    engine
        .partitions()
        .get(p as usize)
        .map(|x| x.local())
        .unwrap_or_default()
}

/// Where a command goes when this node must not serve it under the partition map it holds.
fn misrouted(spec: &Spec, args: &[Bytes], ctx: &Ctx<'_>) -> Option<Route> {
    if ctx.cluster.standalone || spec.first_key <= 0 {
        return None;
    }
    let map = ctx.cluster.topology.get()?;
    let route = ctx.route_by(&map, &key_slots(spec, args), spec.flags.contains(&"write"));
    (route != Route::Here).then_some(route)
}

/// Forwards a command for another node's slot (proxy mode, unless it came from a proxy), or
/// writes the error a Redis Cluster client acts on: `-MOVED slot host:port`, `-CROSSSLOT`, or
/// `-CLUSTERDOWN`.
async fn refuse_or_forward(route: Route, args: &[Bytes], write: bool, ctx: &mut Ctx<'_>) {
    let from_proxy = ctx.conn.name.as_deref() == Some(PROXY_CLIENT_NAME);
    let message = match route {
        Route::Here => return,
        Route::Moved { slot, primary } => {
            let addr = primary.resp_addr;
            if ctx.cluster.redirect == Redirect::Proxy && !from_proxy {
                let concern = (ctx.conn.concern, ctx.conn.concern_timeout);
                match ctx
                    .cluster
                    .proxy
                    .forward(&addr, args, concern, ctx.out)
                    .await
                {
                    Ok(()) => {
                        ctx.conn.proxied_writes |= write;
                        return;
                    }
                    Err(why) => format!("ERR forwarding to {addr} (slot {slot}) failed: {why}"),
                }
            } else {
                format!("MOVED {slot} {addr}")
            }
        }
        Route::CrossSlot => "CROSSSLOT Keys in request don't hash to the same slot".into(),
        Route::Down { slot } => {
            format!("CLUSTERDOWN Hash slot {slot} is not served: its partition has no primary")
        }
    };
    write_error(ctx.out, message);
}

fn count_error(command: &str) {
    metrics::get()
        .errors
        .get_or_create(&CommandLabel {
            command: command.to_string(),
        })
        .inc();
}

/// Parses an integer argument as Redis does, writing Redis's error when it is not one.
pub fn int_arg(ctx: &mut Ctx<'_>, arg: &[u8]) -> Option<i64> {
    let parsed = std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.starts_with('+') && !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok());
    if parsed.is_none() {
        write_error(ctx.out, "ERR value is not an integer or out of range");
    }
    parsed
}

/// Writes Redis's syntax error.
pub fn syntax_error(ctx: &mut Ctx<'_>) -> Flow {
    write_error(ctx.out, "ERR syntax error");
    Flow::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_sorted_and_every_one_is_found_in_any_case() {
        assert!(
            COMMANDS.windows(2).all(|w| w[0].name < w[1].name),
            "COMMANDS must stay sorted by name for lookup's binary search"
        );
        for (i, spec) in COMMANDS.iter().enumerate() {
            for name in [
                spec.name.to_string(),
                spec.name.to_ascii_uppercase(),
                spec.name
                    .char_indices()
                    .map(|(j, c)| {
                        if j % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect(),
            ] {
                let found = lookup(name.as_bytes()).map(|(at, s)| (at, s.name));
                assert_eq!(found, Some((i, spec.name)), "{name}");
            }
        }
        for unknown in ["", "s", "sets", "zzz", "aaa", "ge", "gett", "se\u{0}t"] {
            assert!(lookup(unknown.as_bytes()).is_none(), "{unknown}");
        }
    }
}
