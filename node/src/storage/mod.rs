//! Partition storage: the in-memory state of a partition, and the log and snapshots that make it
//! durable.
//!
//! Each partition has one history, a log of entries at offsets 1, 2, 3, … (DESIGN.md, invariant
//! 2). The [`LogStore`] trait is the small surface a storage backend implements; its rules are
//! written on the trait and checked by one shared test suite ([`suite`]) that every backend must
//! pass, in the way openraft tests its storage backends:
//!
//! - [`DiskStore`]: segment files of checksummed records, and checksummed snapshots written to a
//!   temporary file, synced and renamed. Recovery is the newest valid snapshot plus log replay; a
//!   torn or corrupt log tail is truncated with a warning; a corrupt snapshot is refused.
//! - [`MemoryStore`]: the same rules with nothing on disk, for running with persistence off
//!   (like Redis without AOF or RDB) and for tests.
//!
//! [`KvState`] is the partition's state machine: it applies commands at exactly the next offset
//! and answers reads. It has no I/O and takes the time as an argument, so every decision
//! (expiry, conditional writes) is a pure function of its inputs.

mod disk;
mod memory;
mod record;
mod snapshot;
mod state;
#[cfg(test)]
pub(crate) mod suite;

pub use disk::{DiskStore, DiskStoreConfig};
pub use memory::MemoryStore;
pub use record::MAX_RECORD_LEN;
pub use snapshot::{SnapshotData, SnapshotMeta};
pub use state::{
    IncrError, Item, KvState, SetCondition, SetExpiry, SetOutcome, Ttl, digest_hex, entry,
    epoch_marker, xor_digest,
};

use crate::Error;
use crate::proto::LogEntry;

/// (epoch, offset) of the last entry a copy holds. Orders by epoch, then offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Epoch in which the entry at `offset` was written; 0 for an empty history.
    pub epoch: u64,
    /// Offset of the last entry; 0 for an empty history.
    pub offset: u64,
}

impl Position {
    /// A position.
    pub fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// The wire form.
    pub fn proto(self) -> crate::proto::Position {
        crate::proto::Position {
            epoch: self.epoch,
            offset: self.offset,
        }
    }
}

/// An epoch history, (epoch, first offset) oldest first, in its wire form.
pub fn epoch_history_proto(history: &[(u64, u64)]) -> Vec<crate::proto::EpochStart> {
    history
        .iter()
        .map(|&(epoch, start_offset)| crate::proto::EpochStart {
            epoch,
            start_offset,
        })
        .collect()
}

/// When the log is made durable, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Acknowledge a write only once its record is on disk. Concurrent writers share each
    /// fsync (group commit).
    Always,
    /// Sync once a second: a crash of the machine loses at most about a second of writes; a
    /// crash of the process alone loses none.
    #[default]
    EverySec,
    /// Never sync explicitly; the operating system writes back when it chooses.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "never" | "no" => Ok(FsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?}: use always, everysec or never"
            )),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::Never => "never",
        })
    }
}

/// Checks rule 1 of [`LogStore`]: `entries` continue a log whose last offset is `last`, one
/// offset after another.
pub fn check_continues(partition: u32, last: u64, entries: &[LogEntry]) -> Result<(), Error> {
    for (expected, e) in (last + 1..).zip(entries) {
        if e.offset != expected {
            return Err(Error::OffsetGap {
                partition,
                expected,
                got: e.offset,
            });
        }
    }
    Ok(())
}

/// Checks rule 3 of [`LogStore`]: a truncation may not reach below the newest snapshot.
pub fn check_truncate(partition: u32, offset: u64, snapshot_offset: u64) -> Result<(), Error> {
    if offset < snapshot_offset {
        return Err(Error::BadTruncate {
            partition,
            offset,
            reason: format!("the newest snapshot already holds offsets up to {snapshot_offset}"),
        });
    }
    Ok(())
}

/// What a store held when it was opened: the newest valid snapshot, and the log entries after
/// it, in offset order with no gaps.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest snapshot that passed its checksum, if any.
    pub snapshot: Option<SnapshotData>,
    /// Entries after the snapshot's offset (or from offset 1 without a snapshot).
    pub entries: Vec<LogEntry>,
    /// What recovery had to repair or refuse, for the node's log and status.
    pub warnings: Vec<String>,
}

/// The rules a storage backend keeps. Offsets and positions are as in DESIGN.md invariant 2.
///
/// 1. `append` takes entries whose offsets continue the log exactly (`last().offset + 1`, then
///    consecutive); anything else is refused with [`Error::OffsetGap`] and changes nothing.
/// 2. Appended entries are readable at once with `read`, and survive the process being killed
///    (they are in the operating system); they survive the machine crashing once `sync` has
///    returned.
/// 3. `truncate_after(o)` removes every entry after offset `o`; the next append continues at
///    `o + 1`. Truncating below the newest snapshot is refused.
/// 4. `save_snapshot` stores a snapshot consistent at its position atomically: after a crash
///    either the old set of snapshots or the new one is found, never a partial file. The log
///    before the snapshot may then be dropped, but only beyond the configured backlog window,
///    which partial resync of replicas needs. A backend that is not durable may drop entries
///    beyond the backlog window at any time, since nothing survives it anyway.
/// 5. Opening a backend yields [`Recovered`]: the newest valid snapshot and every entry after
///    it. A damaged log tail is cut at the last good record; a damaged snapshot is never loaded.
///    A durable backend ([`LogStore::durable`]) yields what it held when the process died.
/// 6. `install_snapshot(s)` replaces the whole history, whatever it was (ahead of, behind or at
///    `s`'s position, divergent or not), with `s`, which is at position `at`: afterwards
///    `last()` is `at`, the log holds no entry, `first_offset()` is `at.offset + 1`,
///    `snapshot_offset()` is `at.offset`, the next append must start at `at.offset + 1` (rule 1)
///    and truncating below `at.offset` is refused (rule 3). A durable backend never recovers the
///    old history's entries on top of `s`: after a crash it recovers either a consistent earlier
///    state of the old history (possibly empty) or `s`. If it fails, the store refuses appends
///    until an install succeeds or the process restarts. The store cannot tell a snapshot of the
///    replaced state from one of the new: the caller must not save one taken before the install.
/// 7. `read(from, max_bytes)` returns the entries from exactly `from`, at consecutive offsets,
///    as many as fit in `max_bytes` of framed records, or just the entry at `from` when it alone
///    is larger; nothing when `from` is past the end; [`Error::Trimmed`] when `from` is below
///    `first_offset()`. The memory and I/O a read uses are bounded by `max_bytes` and one record
///    (plus a fixed buffer), never by how much log the store holds.
/// 8. `newest_snapshot` returns the newest snapshot the store holds that passes its checksum
///    (falling back to an older one when the newest is damaged), or `None` for a store that
///    keeps no snapshot data. With `read` from its offset + 1 it rebuilds the state at any offset
///    from there to `last()`, as a replica must after `truncate_after`; a store that keeps no
///    snapshot data can only rebuild from the log, from `first_offset()`.
pub trait LogStore: Send + Sync {
    /// The last entry's position, or the snapshot's when the log after it is empty.
    fn last(&self) -> Position;
    /// The first offset still held in the log (one past the snapshot when the log before it was
    /// dropped); `last().offset + 1` when the log is empty.
    fn first_offset(&self) -> u64;
    /// Appends entries; see rule 1.
    fn append(&self, entries: Vec<LogEntry>) -> Result<(), Error>;
    /// Makes every appended entry durable; returns the offset now durable.
    fn sync(&self) -> Result<u64, Error>;
    /// Entries from offset `from` on, up to `max_bytes` (at least one when any exist); see
    /// rule 7.
    fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<LogEntry>, Error>;
    /// Removes entries after `offset`; see rule 3.
    fn truncate_after(&self, offset: u64) -> Result<(), Error>;
    /// Stores a snapshot; see rule 4. The snapshot may be ahead of the log's end (entries the
    /// caller applied but has not appended yet); appends then continue from the log's end.
    fn save_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error>;
    /// Replaces the whole history with `snapshot`, as a replica does when its primary sends a
    /// full sync; see rule 6.
    fn install_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error>;
    /// The newest valid snapshot held, loaded and verified; `None` when there is none or the
    /// store keeps no snapshot data. See rule 8.
    fn newest_snapshot(&self) -> Result<Option<SnapshotData>, Error>;
    /// Bytes of log held.
    fn log_bytes(&self) -> u64;
    /// Offset of the newest snapshot; 0 when there is none.
    fn snapshot_offset(&self) -> u64;
    /// Whether what was appended survives the process being killed.
    fn durable(&self) -> bool;
    /// Whether the store keeps entries at all. One that does not (an in-memory store with no
    /// backlog window: a standalone node without persistence) is moved along with
    /// [`LogStore::advance_to`], and the caller need not encode entries for it.
    fn retains_entries(&self) -> bool {
        true
    }
    /// For a store that keeps no entries: the log now ends at `last`, which must be past the
    /// current end. Stores that keep entries refuse it: they must be given the entries.
    fn advance_to(&self, last: Position) -> Result<(), Error> {
        Err(Error::OffsetGap {
            partition: 0,
            expected: self.last().offset + 1,
            got: last.offset,
        })
    }
}
