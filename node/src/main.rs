//! `partita-node`: the Partita server. Thin on purpose: it parses flags, opens the engine, binds
//! the listeners and waits for a signal; everything else is the `partita_node` library.
//!
//! `partita-node --standalone` runs one node that is primary of every partition and needs no
//! operator: the embedded default for trying Partita out. Without `--standalone` the node takes
//! each partition's role from its data directory, or waits for the operator (or
//! `partita admin`) to assign one, and replicates over gRPC.

use clap::Parser;

/// mimalloc rather than the system allocator: the write path allocates small buffers at a high
/// rate, where glibc's malloc showed up at a tenth of the CPU (Redis ships jemalloc for the same
/// reason).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use partita_node::engine::{Engine, EngineConfig};
use partita_node::proto::{NodeAddress, WriteConcern};
use partita_node::replication::{Replication, ReplicationConfig, primary};
use partita_node::server::grpc::WriteDefaults;
use partita_node::server::{self, Limits};
use partita_node::storage::FsyncPolicy;
use partita_node::topology::Held;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A Partita node: replicated, partitioned key-value storage speaking gRPC and RESP.
#[derive(Debug, Parser)]
#[command(name = "partita-node", version, about)]
struct Args {
    /// Be primary of every partition, with no operator and no replicas.
    #[arg(long)]
    standalone: bool,
    /// This node's identity (the pod name under the operator).
    #[arg(long, env = "PARTITA_NODE_ID", default_value = "node-0")]
    node_id: String,
    /// Directory for logs and snapshots.
    #[arg(long, env = "PARTITA_DATA_DIR", default_value = "partita-data")]
    data_dir: PathBuf,
    /// Keep everything in memory: persistence off, like Redis without AOF or RDB.
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// Address of the gRPC listener (KV, Replication, Admin).
    #[arg(long, env = "PARTITA_GRPC_LISTEN", default_value = "127.0.0.1:7379")]
    grpc_listen: SocketAddr,
    /// Address of the RESP (Redis protocol) listener.
    #[arg(long, env = "PARTITA_RESP_LISTEN", default_value = "127.0.0.1:6379")]
    resp_listen: SocketAddr,
    /// Address of the HTTP listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "PARTITA_HTTP_LISTEN", default_value = "127.0.0.1:8379")]
    http_listen: SocketAddr,
    /// Number of partitions; fixed for a data directory.
    #[arg(long, env = "PARTITA_PARTITIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=16384))]
    partitions: u32,
    /// When the log is synced to disk: always, everysec or never.
    #[arg(long, env = "PARTITA_FSYNC", default_value = "everysec")]
    fsync: FsyncPolicy,
    /// Bytes of log kept per partition for replicas' partial resync. Default: 64 MiB on disk
    /// with a data directory; 1 MiB in memory with --in-memory (16 MiB for 16 partitions,
    /// where Redis keeps 1 MiB in all). A standalone node with --in-memory keeps none: it has
    /// no replicas.
    #[arg(long, env = "PARTITA_BACKLOG_BYTES")]
    backlog_bytes: Option<u64>,
    /// Bytes per log segment file.
    #[arg(long, default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4096..))]
    segment_bytes: u64,
    /// A partition takes a snapshot after this many bytes of log.
    #[arg(long, default_value_t = 256 << 20)]
    snapshot_log_bytes: u64,
    /// Longest key accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_key_bytes: usize,
    /// Longest value accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_value_bytes: usize,
    /// Largest request accepted, in bytes.
    #[arg(long, default_value_t = 128 << 20)]
    max_request_bytes: usize,
    /// Most client connections at once, RESP and gRPC each.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Most keys one KEYS, MGET or scan page may return.
    #[arg(long, default_value_t = 1_000_000)]
    max_keys_per_call: usize,
    /// Most bytes of keys and values one reply may carry (MGET, KEYS, scan pages, batches).
    #[arg(long, default_value_t = 256 << 20)]
    max_reply_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    #[arg(
        long,
        env = "PARTITA_SHUTDOWN_TIMEOUT",
        default_value = "10",
        value_name = "SECONDS"
    )]
    shutdown_timeout: u64,
    /// Host other nodes and clients reach this node at (the pod IP under the operator);
    /// defaults to the listeners' own addresses.
    #[arg(long, env = "PARTITA_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// What to do with a Redis command for a slot another node leads: `proxy` forwards it to
    /// that node and returns its reply (for clients that know nothing of clusters); `moved`
    /// answers `-MOVED slot host:port`, as Redis Cluster does. Cluster-aware clients go
    /// straight to the primary either way.
    #[arg(long, env = "PARTITA_REDIRECT", default_value = "proxy", value_parser = ["proxy", "moved"])]
    redirect: String,
    /// Write concern of gRPC writes that do not set one: one, quorum or all. RESP connections
    /// start at one, as Redis, and change it with WRITECONCERN.
    #[arg(long, env = "PARTITA_WRITE_CONCERN", default_value = "quorum",
          value_parser = ["one", "quorum", "all"])]
    write_concern: String,
    /// How long a write waits for its write concern when the request gives no timeout.
    #[arg(long, default_value_t = 5000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    write_timeout_ms: u64,
    /// Most bytes of entries or snapshot data per replication message.
    #[arg(long, default_value_t = 256 << 10,
          value_parser = clap::value_parser!(u64).range(4096..=(64 << 20)))]
    replication_batch_bytes: u64,
    /// Most bytes queued for one replica and not yet sent. A replica that stops reading holds
    /// no more of this node's memory than this; once it falls out of the backlog it is cut off
    /// and resyncs with a snapshot.
    #[arg(long, default_value_t = 4 << 20,
          value_parser = clap::value_parser!(u64).range(4096..))]
    replica_send_buffer_bytes: u64,
    /// How often an idle primary sends replicas a heartbeat.
    #[arg(long, env = "PARTITA_HEARTBEAT_MS", default_value_t = 500, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
    /// A replica lagging more than this is not in sync (min-in-sync-replicas, ALL).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    replica_max_lag_ms: u64,
    /// Largest snapshot this node accepts from a primary, in bytes.
    #[arg(long, default_value_t = 64 << 30)]
    max_snapshot_bytes: u64,
    /// Log format: text or json.
    #[arg(long, env = "PARTITA_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARTITA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log collectors and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

#[allow(
    clippy::print_stdout,
    reason = "the machine-readable ready line goes to stdout"
)]
async fn run(args: Args) -> Result<(), String> {
    let cfg = EngineConfig {
        data_dir: (!args.in_memory).then(|| args.data_dir.clone()),
        partitions: args.partitions,
        fsync: args.fsync,
        backlog_bytes: args.backlog_bytes.unwrap_or(if args.in_memory {
            1 << 20
        } else {
            64 << 20
        }),
        segment_bytes: args.segment_bytes,
        snapshot_log_bytes: args.snapshot_log_bytes,
        // A standalone node has no replicas.
        replicated: !args.standalone,
        max_lag_ms: args.replica_max_lag_ms,
    };
    let limits = Limits {
        max_key_bytes: args.max_key_bytes,
        max_value_bytes: args.max_value_bytes,
        max_request_bytes: args.max_request_bytes,
        max_connections: args.max_connections,
        max_keys_per_call: args.max_keys_per_call,
        max_reply_bytes: args.max_reply_bytes,
    };
    limits.validate()?;
    let resp = bind("RESP", args.resp_listen).await?;
    let grpc = bind("gRPC", args.grpc_listen).await?;
    let http = bind("HTTP", args.http_listen).await?;
    let addr = |l: &TcpListener| l.local_addr().map_err(|e| e.to_string());
    let (resp_addr, grpc_addr, http_addr) = (addr(&resp)?, addr(&grpc)?, addr(&http)?);

    let engine = tokio::task::spawn_blocking(move || Engine::open(cfg))
        .await
        .map_err(|e| format!("recovery failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let engine = Arc::new(engine);
    tracing::info!(
        partitions = args.partitions,
        keys = engine.keys(),
        recovery_ms = engine.recovery.as_millis() as u64,
        warnings = engine.recovery_warnings.len(),
        "storage recovered"
    );

    let (shutdown_tx, shutdown) = watch::channel(false);
    let advertise = |a: SocketAddr| match &args.advertise_host {
        Some(host) => format!("{host}:{}", a.port()),
        None => a.to_string(),
    };
    let node = NodeAddress {
        node_id: args.node_id.clone(),
        grpc_addr: advertise(grpc_addr),
        resp_addr: advertise(resp_addr),
    };
    let repl_cfg = ReplicationConfig {
        node: node.clone(),
        batch_bytes: args.replication_batch_bytes as usize,
        send_buffer_bytes: args.replica_send_buffer_bytes,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        max_lag_ms: args.replica_max_lag_ms,
        max_snapshot_bytes: args.max_snapshot_bytes,
    };
    let repl = Replication::new(Arc::clone(&engine), repl_cfg.clone(), shutdown.clone());
    let writes = WriteDefaults {
        concern: match args.write_concern.as_str() {
            "one" => WriteConcern::One,
            "all" => WriteConcern::All,
            _ => WriteConcern::Quorum,
        },
        timeout: Duration::from_millis(args.write_timeout_ms),
    };
    let data_dir = (!args.in_memory).then(|| args.data_dir.clone());
    let topology = Held::load(data_dir.as_deref(), engine.slots())
        .map(Arc::new)
        .map_err(|e| e.to_string())?;
    let cluster = Arc::new(server::resp::Cluster {
        node: node.clone(),
        topology: Arc::clone(&topology),
        standalone: args.standalone,
        redirect: if args.redirect == "moved" {
            server::resp::Redirect::Moved
        } else {
            server::resp::Redirect::Proxy
        },
        proxy: server::resp::Proxy::new(limits.max_reply_bytes),
    });
    let service = server::grpc::Service::new(
        Arc::clone(&engine),
        limits,
        node,
        Arc::clone(&repl),
        writes,
        topology,
    );
    let replication = primary::Service::new(Arc::clone(&engine), repl_cfg, shutdown.clone());
    let grpc_task = {
        let mut shutdown = shutdown.clone();
        let incoming = server::grpc::limited_incoming(grpc, limits.max_connections);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.kv())
                .add_service(service.admin())
                .add_service(replication.server())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown.wait_for(|&down| down).await;
                }),
        )
    };
    let resp_task = tokio::spawn(server::resp::serve(
        resp,
        Arc::clone(&engine),
        limits,
        cluster,
        shutdown.clone(),
    ));
    let http_task = tokio::spawn(server::http::serve(
        http,
        Arc::clone(&engine),
        shutdown.clone(),
    ));
    let background = tokio::spawn(Arc::clone(&engine).run_background(shutdown.clone()));
    repl.start();
    engine.set_ready(true);
    tracing::info!(%resp_addr, %grpc_addr, %http_addr, "partita-node ready");
    // A line for scripts and tests, which may have asked for port 0.
    println!("partita-node ready resp={resp_addr} grpc={grpc_addr} http={http_addr}");

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    engine.set_ready(false);
    let _ = shutdown_tx.send(true);
    let drain = async {
        let _ = resp_task.await;
        let _ = grpc_task.await;
        let _ = http_task.await;
        let _ = background.await;
    };
    if tokio::time::timeout(Duration::from_secs(args.shutdown_timeout), drain)
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; syncing the log anyway");
    }
    let engine_for_sync = Arc::clone(&engine);
    tokio::task::spawn_blocking(move || engine_for_sync.flush_and_sync())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("syncing the log at shutdown: {e}"))?;
    tracing::info!("log synced; bye");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
