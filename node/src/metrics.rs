//! Prometheus metrics of the node, served at `/metrics`.
//!
//! Counters and histograms that the hot path updates live in one process-wide registry, so the
//! front ends need no handle to it; gauges that describe partitions (keys, log size, snapshot
//! age) are read from the engine when scraped, so they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Label of a command counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// The command, lower case (RESP) or the RPC name (gRPC).
    pub command: String,
}

/// Label of a per-partition gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The partition id.
    pub partition: String,
}

/// Label of a byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` or `out`.
    pub direction: &'static str,
}

/// Label of a replication sync counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabel {
    /// `partial`, `truncate` or `full`.
    pub kind: &'static str,
}

/// Every metric of the node.
pub struct Metrics {
    /// Commands executed.
    pub commands: Family<CommandLabel, Counter>,
    /// Command errors returned.
    pub errors: Family<CommandLabel, Counter>,
    /// Bytes read from and written to clients.
    pub net_bytes: Family<DirectionLabel, Counter>,
    /// Open client connections.
    pub connections: Gauge,
    /// Time each fsync of a log segment took.
    pub fsync_seconds: Histogram,
    /// Keys per partition.
    pub keys: Family<PartitionLabel, Gauge>,
    /// Bytes of log per partition.
    pub log_bytes: Family<PartitionLabel, Gauge>,
    /// Seconds since each partition's last snapshot (since start when none was taken).
    pub snapshot_age_seconds: Family<PartitionLabel, Gauge>,
    /// Replica streams a primary began, by how they resumed.
    pub replica_syncs: Family<SyncLabel, Counter>,
    /// Entry batches a primary sent to replicas.
    pub replication_batches: Counter,
    /// Entries a primary sent to replicas.
    pub replication_entries: Counter,
    snapshot_unix_ms: Vec<AtomicU64>,
}

const MAX_PARTITIONS: usize = 16384;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn build() -> (Metrics, Registry) {
    let m = Metrics {
        commands: Family::default(),
        errors: Family::default(),
        net_bytes: Family::default(),
        connections: Gauge::default(),
        fsync_seconds: Histogram::new([
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
        ]),
        keys: Family::default(),
        log_bytes: Family::default(),
        snapshot_age_seconds: Family::default(),
        replica_syncs: Family::default(),
        replication_batches: Counter::default(),
        replication_entries: Counter::default(),
        snapshot_unix_ms: (0..MAX_PARTITIONS)
            .map(|_| AtomicU64::new(now_unix_ms()))
            .collect(),
    };
    let mut r = Registry::with_prefix("partita");
    r.register("commands", "Commands executed", m.commands.clone());
    r.register(
        "command_errors",
        "Command errors returned",
        m.errors.clone(),
    );
    r.register(
        "net_bytes",
        "Bytes read from and written to clients",
        m.net_bytes.clone(),
    );
    r.register(
        "connections",
        "Open client connections",
        m.connections.clone(),
    );
    r.register(
        "fsync_seconds",
        "Time each log fsync took",
        m.fsync_seconds.clone(),
    );
    r.register("keys", "Keys held per partition", m.keys.clone());
    r.register(
        "log_bytes",
        "Bytes of log per partition",
        m.log_bytes.clone(),
    );
    r.register(
        "snapshot_age_seconds",
        "Seconds since the partition's last snapshot",
        m.snapshot_age_seconds.clone(),
    );
    r.register(
        "replica_syncs",
        "Replica streams begun as a primary, by kind (partial, truncate, full)",
        m.replica_syncs.clone(),
    );
    r.register(
        "replication_batches",
        "Entry batches sent to replicas",
        m.replication_batches.clone(),
    );
    r.register(
        "replication_entries",
        "Entries sent to replicas",
        m.replication_entries.clone(),
    );
    (m, r)
}

static METRICS: OnceLock<(Metrics, Registry)> = OnceLock::new();

/// The node's metrics.
pub fn get() -> &'static Metrics {
    &METRICS.get_or_init(build).0
}

/// Records one fsync's duration.
pub fn observe_fsync(d: Duration) {
    get().fsync_seconds.observe(d.as_secs_f64());
}

/// Records that a partition took a snapshot now.
pub fn snapshot_taken(partition: u32) {
    if let Some(at) = get().snapshot_unix_ms.get(partition as usize) {
        at.store(now_unix_ms(), Ordering::Relaxed);
    }
}

/// Seconds since the partition's last snapshot.
pub fn snapshot_age_seconds(partition: u32) -> i64 {
    get()
        .snapshot_unix_ms
        .get(partition as usize)
        .map_or(0, |at| {
            (now_unix_ms().saturating_sub(at.load(Ordering::Relaxed)) / 1000) as i64
        })
}

/// Counts a replica stream begun as a primary.
pub fn replica_sync(kind: crate::proto::SyncKind) {
    let kind = match kind {
        crate::proto::SyncKind::Partial => "partial",
        crate::proto::SyncKind::Truncate => "truncate",
        crate::proto::SyncKind::Full => "full",
        crate::proto::SyncKind::Unspecified => "unspecified",
    };
    get().replica_syncs.get_or_create(&SyncLabel { kind }).inc();
}

/// The text exposition of every metric.
pub fn encode() -> String {
    let mut out = String::new();
    let registry = &METRICS.get_or_init(build).1;
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
