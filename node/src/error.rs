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
