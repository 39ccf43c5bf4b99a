//! The node crate's error type. One enum for the crate, so callers match on causes instead of
//! parsing strings.

use std::path::PathBuf;
use thiserror::Error;

/// Errors from the node crate.
#[derive(Debug, Error)]
pub enum Error {
    /// A partition count outside 1..=16384 (each partition needs at least one hash slot).
    #[error("partition count must be between 1 and {max}, got {got}")]
    InvalidPartitionCount {
        /// The count that was asked for.
        got: u32,
        /// The largest count allowed: the number of hash slots.
        max: u32,
    },

    /// A file operation failed.
    #[error("{context} ({path}): {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A snapshot failed its checksum or could not be decoded; it is never loaded.
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The data directory cannot be recovered without losing history.
    #[error("cannot recover partition {partition} from {dir}: {reason}")]
    Unrecoverable {
        /// The partition.
        partition: u32,
        /// Its data directory.
        dir: PathBuf,
        /// Why, and what the operator can do.
        reason: String,
    },

    /// An entry was offered at an offset other than exactly the next one (invariant 2).
    #[error("partition {partition}: entry at offset {got}, expected exactly {expected}")]
    OffsetGap {
        /// The partition.
        partition: u32,
        /// The offset that was expected: one past the last.
        expected: u64,
        /// The offset that was offered.
        got: u64,
    },

    /// A log entry's command failed its checksum or could not be decoded.
    #[error("partition {partition}: corrupt entry at offset {offset}: {reason}")]
    CorruptEntry {
        /// The partition.
        partition: u32,
        /// The entry's offset.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// Asked to truncate below what a snapshot already holds, or above the log's end.
    #[error("partition {partition}: cannot truncate to offset {offset}: {reason}")]
    BadTruncate {
        /// The partition.
        partition: u32,
        /// The requested offset.
        offset: u64,
        /// Why not.
        reason: String,
    },

    /// Entries were asked for from an offset the log no longer holds; a full sync is needed.
    #[error(
        "partition {partition}: offset {from} is no longer in the log, which starts at {first}"
    )]
    Trimmed {
        /// The partition.
        partition: u32,
        /// The offset asked for.
        from: u64,
        /// The first offset the log holds.
        first: u64,
    },

    /// A configured limit was exceeded.
    #[error("{what} exceeds the limit of {limit} (set by {setting})")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The flag or setting that controls it.
        setting: &'static str,
    },
    /// The client could not use a cluster as asked (no seed, no answer in its attempts).
    #[error("{reason}")]
    Client {
        /// Why.
        reason: String,
    },

    /// The client could not reach a node.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The node's gRPC address.
        addr: String,
        /// Why.
        reason: String,
    },

    /// A node refused a client's request; the status carries the node's ErrorInfo.
    #[error("{}: {}", .0.code(), .0.message())]
    Call(Box<tonic::Status>),

    /// A topology push was refused: older than the map held, or inconsistent.
    #[error("topology refused: {reason}")]
    BadTopology {
        /// Why.
        reason: String,
        /// The version the node holds (0 when none).
        held: u64,
    },

    /// A write reached a copy that is not the partition's primary (a replica, or a copy with
    /// no role yet).
    #[error(
        "partition {partition} is not led by this node at epoch {epoch}{}",
        primary_hint(primary)
    )]
    NotPrimary {
        /// The partition.
        partition: u32,
        /// The epoch the node holds.
        epoch: u64,
        /// The primary this node follows, if it knows one.
        primary: Option<crate::proto::NodeAddress>,
    },

    /// The partition is fenced and accepts no writes until it is given a role at a newer epoch.
    #[error(
        "partition {partition} is fenced at epoch {epoch}: it accepts no writes until it is \
         given a role at a newer epoch"
    )]
    Fenced {
        /// The partition.
        partition: u32,
        /// The epoch the node holds.
        epoch: u64,
    },

    /// A request carried a lower epoch than the node holds (DESIGN.md, invariant 1).
    #[error("partition {partition}: epoch {got} is lower than the epoch {held} this node holds")]
    StaleEpoch {
        /// The partition.
        partition: u32,
        /// The epoch in the request.
        got: u64,
        /// The epoch held.
        held: u64,
    },

    /// A role change that the epoch rules or the node's state forbid.
    #[error("partition {partition}: {reason}")]
    BadRole {
        /// The partition.
        partition: u32,
        /// Why.
        reason: String,
    },

    /// The primary refused a write because too few replicas are in sync.
    #[error(
        "partition {partition}: {in_sync} replicas in sync, fewer than min-in-sync-replicas \
         {min}; the write was refused"
    )]
    NotEnoughInSync {
        /// The partition.
        partition: u32,
        /// Replicas in sync.
        in_sync: u32,
        /// The configured minimum.
        min: u32,
    },

    /// A write was applied on the primary but not acknowledged by enough copies in time.
    #[error(
        "partition {partition}: write concern {concern} not met within {timeout_ms} ms: \
         {acked} of {required} copies acknowledged offset {offset}; the write was applied on \
         the primary and is not rolled back"
    )]
    WriteConcernTimeout {
        /// The partition.
        partition: u32,
        /// ONE, QUORUM or ALL.
        concern: &'static str,
        /// Copies that had applied it.
        acked: u32,
        /// Copies the concern required.
        required: u32,
        /// The timeout.
        timeout_ms: u64,
        /// The write's offset.
        offset: u64,
    },

    /// A write was applied on this copy as the primary of an epoch, and the copy stopped leading
    /// that epoch (it was deposed: made a replica, or fenced at a newer epoch) before enough
    /// copies acknowledged it. It is not acknowledged, now or later: whether it survives is up to
    /// the new primary's history.
    #[error(
        "partition {partition}: this node stopped leading epoch {epoch} before the write at \
         offset {offset} was acknowledged ({acked} of {required} copies had it); it may or may \
         not survive in the new primary's history"
    )]
    Deposed {
        /// The partition.
        partition: u32,
        /// The epoch the write was made at.
        epoch: u64,
        /// The write's offset.
        offset: u64,
        /// Copies that had applied it when the node stopped leading.
        acked: u32,
        /// Copies the concern required.
        required: u32,
    },

    /// A promotion waited for the copy to reach an offset, and it did not in time.
    #[error(
        "partition {partition}: holds offset {held}, not {wanted}, after waiting {waited_ms} ms"
    )]
    NotCaughtUp {
        /// The partition.
        partition: u32,
        /// The offset held.
        held: u64,
        /// The offset asked for.
        wanted: u64,
        /// How long it waited.
        waited_ms: u64,
    },

    /// A replication stream broke a rule, or the link to the primary failed.
    #[error("partition {partition}: replication: {reason}")]
    Replication {
        /// The partition.
        partition: u32,
        /// What happened.
        reason: String,
    },
}

fn primary_hint(primary: &Option<crate::proto::NodeAddress>) -> String {
    match primary {
        Some(p) if !p.node_id.is_empty() && p.node_id != p.grpc_addr => {
            format!("; its primary is {} at {}", p.node_id, p.grpc_addr)
        }
        Some(p) => format!("; its primary is at {}", p.grpc_addr),
        None => "; it knows no primary for it".into(),
    }
}

impl Error {
    /// An I/O error with what was being done and on which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
