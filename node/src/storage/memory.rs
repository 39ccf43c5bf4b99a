//! The in-memory backend: persistence off, as Redis without AOF or RDB. It keeps the most
//! recent entries, up to the backlog window, for replicas' partial resync, and nothing else, so
//! its memory stays bounded however long the node runs. A restart starts empty. Of a snapshot it
//! keeps only the position: the state itself lives with the caller, so
//! [`LogStore::newest_snapshot`] has nothing to return.
//!
//! Like Redis's replication backlog, the entries live in one ring of bytes, in the same framed
//! form as on disk: appending copies bytes and allocates nothing, and trimming the oldest entry
//! frees nothing. A sparse index finds an offset without decoding the whole ring.

use super::record::{self, Decoded, HEADER_LEN};
use super::snapshot::SnapshotData;
use super::{LogStore, Position};
use crate::Error;
use crate::proto::LogEntry;
use parking_lot::Mutex;
use std::collections::VecDeque;

/// An index point every this many entries.
const INDEX_EVERY: u64 = 64;

struct Inner {
    /// Framed records, oldest first.
    ring: VecDeque<u8>,
    /// Absolute position (bytes ever trimmed) of `ring[0]`.
    trimmed: u64,
    /// Offset of the first record in the ring; `last.offset + 1` when empty.
    first: u64,
    /// (offset, absolute position) of every INDEX_EVERY-th entry still held.
    index: VecDeque<(u64, u64)>,
    last: Position,
    snapshot_last: Position,
    scratch: Vec<u8>,
}

impl Inner {
    /// The length of the record starting at ring position `at`.
    fn record_len(&self, at: usize) -> usize {
        let mut len = [0u8; 4];
        for (i, b) in len.iter_mut().enumerate() {
            *b = self.ring.get(at + i).copied().unwrap_or(0);
        }
        HEADER_LEN + u32::from_le_bytes(len) as usize
    }

    /// Decodes the record at ring position `at`, and the bytes it takes. The ring is read where
    /// it lies: a record that wraps around its end is copied into `wrapped` first, never the
    /// whole ring (`VecDeque::make_contiguous` would move up to the whole backlog on every
    /// read once the ring has wrapped, which it always has once the window is full).
    fn decode_at(&self, at: usize, wrapped: &mut Vec<u8>) -> Option<(LogEntry, usize)> {
        let n = self.record_len(at);
        let end = at.checked_add(n).filter(|&end| end <= self.ring.len())?;
        let (a, b) = self.ring.as_slices();
        let bytes = if end <= a.len() {
            &a[at..end]
        } else if at >= a.len() {
            &b[at - a.len()..end - a.len()]
        } else {
            wrapped.clear();
            wrapped.extend_from_slice(&a[at..]);
            wrapped.extend_from_slice(&b[..end - a.len()]);
            wrapped.as_slice()
        };
        match record::decode(bytes) {
            Decoded::Record(e, used) if used == n => Some((e, n)),
            _ => None,
        }
    }

    /// Ring position of the record at `offset` (which must be held).
    fn position_of(&self, offset: u64) -> usize {
        let (mut at_offset, mut pos) = match self.index.partition_point(|&(o, _)| o <= offset) {
            0 => (self.first, 0),
            i => {
                let (o, abs) = self.index[i - 1];
                (o, (abs - self.trimmed) as usize)
            }
        };
        while at_offset < offset {
            pos += self.record_len(pos);
            at_offset += 1;
        }
        pos
    }
}

/// A log kept in memory, bounded by the backlog window.
pub struct MemoryStore {
    partition: u32,
    backlog_bytes: u64,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store keeping about `backlog_bytes` of recent entries.
    pub fn new(partition: u32, backlog_bytes: u64) -> Self {
        Self {
            partition,
            backlog_bytes,
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                trimmed: 0,
                first: 1,
                index: VecDeque::new(),
                last: Position::default(),
                snapshot_last: Position::default(),
                scratch: Vec::new(),
            }),
        }
    }

    fn corrupt(&self, offset: u64) -> Error {
        Error::CorruptEntry {
            partition: self.partition,
            offset,
            reason: "the in-memory backlog does not decode".into(),
        }
    }
}

impl LogStore for MemoryStore {
    fn last(&self) -> Position {
        self.inner.lock().last
    }

    fn first_offset(&self) -> u64 {
        self.inner.lock().first
    }

    fn append(&self, entries: Vec<LogEntry>) -> Result<(), Error> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        super::check_continues(self.partition, inner.last.offset, &entries)?;
        let Some(last) = entries.last() else {
            return Ok(());
        };
        inner.last = Position::new(last.epoch, last.offset);
        inner.scratch.clear();
        // Entries the window would trim at once are not framed at all: without a backlog only
        // the newest is kept.
        let skip = if self.backlog_bytes == 0 {
            entries.len() - 1
        } else {
            0
        };
        if skip > 0 {
            let dropped = inner.ring.len();
            inner.ring.clear();
            inner.trimmed += dropped as u64;
            inner.index.clear();
            inner.first = entries[skip].offset;
        }
        let base = inner.trimmed + inner.ring.len() as u64;
        for e in &entries[skip..] {
            if e.offset.is_multiple_of(INDEX_EVERY) {
                inner
                    .index
                    .push_back((e.offset, base + inner.scratch.len() as u64));
            }
            record::encode(e, &mut inner.scratch);
        }
        inner.ring.extend(inner.scratch.iter());
        // Keep the newest entry however small the window.
        while inner.ring.len() as u64 > self.backlog_bytes && inner.first < inner.last.offset {
            let n = inner.record_len(0);
            inner.ring.drain(..n.min(inner.ring.len()));
            inner.trimmed += n as u64;
            inner.first += 1;
            while inner.index.front().is_some_and(|&(o, _)| o < inner.first) {
                inner.index.pop_front();
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<u64, Error> {
        Ok(self.inner.lock().last.offset)
    }

    fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<LogEntry>, Error> {
        let inner = self.inner.lock();
        if from < inner.first {
            return Err(Error::Trimmed {
                partition: self.partition,
                from,
                first: inner.first,
            });
        }
        if from > inner.last.offset {
            return Ok(Vec::new());
        }
        let start = inner.position_of(from);
        let mut out = Vec::new();
        let mut wrapped = Vec::new();
        let (mut at, mut taken) = (start, 0usize);
        while at < inner.ring.len() {
            // Rule 7: within the budget, but always the first entry.
            if !out.is_empty() && taken.saturating_add(inner.record_len(at)) > max_bytes {
                break;
            }
            let Some((e, used)) = inner.decode_at(at, &mut wrapped) else {
                return Err(self.corrupt(from + out.len() as u64));
            };
            at += used;
            taken += used;
            out.push(e);
        }
        Ok(out)
    }

    fn truncate_after(&self, offset: u64) -> Result<(), Error> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        super::check_truncate(self.partition, offset, inner.snapshot_last.offset)?;
        if offset >= inner.last.offset {
            return Ok(());
        }
        let new_last = if offset >= inner.first {
            let at = inner.position_of(offset);
            match inner.decode_at(at, &mut Vec::new()) {
                Some((e, _)) => Position::new(e.epoch, e.offset),
                None => return Err(self.corrupt(offset)),
            }
        } else if offset == inner.snapshot_last.offset {
            inner.snapshot_last
        } else {
            return Err(Error::BadTruncate {
                partition: self.partition,
                offset,
                reason: "that offset is no longer held".into(),
            });
        };
        let cut = if offset + 1 >= inner.first {
            inner.position_of(offset + 1)
        } else {
            0
        };
        inner.ring.truncate(cut);
        while inner.index.back().is_some_and(|&(o, _)| o > offset) {
            inner.index.pop_back();
        }
        if inner.ring.is_empty() {
            inner.first = offset + 1;
        }
        inner.last = new_last;
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        inner.snapshot_last = inner.snapshot_last.max(snapshot.meta.at);
        Ok(())
    }

    fn install_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
        let at = snapshot.meta.at;
        let mut inner = self.inner.lock();
        let dropped = inner.ring.len() as u64;
        inner.ring.clear();
        inner.trimmed += dropped;
        inner.index.clear();
        inner.first = at.offset + 1;
        inner.last = at;
        inner.snapshot_last = at;
        Ok(())
    }

    fn newest_snapshot(&self) -> Result<Option<SnapshotData>, Error> {
        // Only the snapshot's position is kept: the caller holds the state itself.
        Ok(None)
    }

    fn log_bytes(&self) -> u64 {
        self.inner.lock().ring.len() as u64
    }

    fn snapshot_offset(&self) -> u64 {
        self.inner.lock().snapshot_last.offset
    }

    fn durable(&self) -> bool {
        false
    }

    fn retains_entries(&self) -> bool {
        self.backlog_bytes > 0
    }

    fn advance_to(&self, last: Position) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        if self.backlog_bytes > 0 || last.offset <= inner.last.offset {
            return Err(Error::OffsetGap {
                partition: self.partition,
                expected: inner.last.offset + 1,
                got: last.offset,
            });
        }
        let dropped = inner.ring.len() as u64;
        inner.ring.clear();
        inner.trimmed += dropped;
        inner.index.clear();
        inner.first = last.offset + 1;
        inner.last = last;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::suite::{self, Backend};
    use super::*;
    use crate::storage::Recovered;

    struct Memory {
        backlog: u64,
    }

    impl Backend for Memory {
        fn open(&mut self) -> (Box<dyn LogStore>, Recovered) {
            (
                Box::new(MemoryStore::new(0, self.backlog)),
                Recovered::default(),
            )
        }
    }

    #[test]
    fn memory_store_passes_the_shared_suite() {
        // A window larger than the suite's data: trimming is checked separately below.
        suite::run_all(&mut Memory { backlog: 1 << 20 });
    }

    #[test]
    fn without_a_backlog_the_store_keeps_only_where_the_log_ends() {
        let store = MemoryStore::new(3, 0);
        assert!(!store.retains_entries());
        store.advance_to(Position::new(1, 10)).expect("advance");
        assert_eq!(store.last(), Position::new(1, 10));
        assert_eq!(store.first_offset(), 11, "no entry is held");
        assert!(store.read(11, usize::MAX).expect("read").is_empty());
        assert!(
            store.advance_to(Position::new(1, 10)).is_err(),
            "never backwards or in place"
        );
        store
            .append(suite::entries(2, 11, 3))
            .expect("entries still append after it");
        assert_eq!(store.last(), Position::new(2, 13));
        let kept = MemoryStore::new(0, 1 << 20);
        assert!(kept.retains_entries());
        assert!(
            kept.advance_to(Position::new(1, 1)).is_err(),
            "a backlog needs the entries"
        );
    }

    #[test]
    fn memory_stays_within_the_backlog_window() {
        let store = MemoryStore::new(0, 10_000);
        for batch in suite::entries(1, 1, 5_000).chunks(100) {
            store.append(batch.to_vec()).expect("append");
        }
        assert!(
            store.log_bytes() <= 10_000,
            "{} bytes held",
            store.log_bytes()
        );
        assert!(store.first_offset() > 4_000, "old entries were dropped");
        assert_eq!(store.last().offset, 5_000);
        assert!(
            matches!(
                store.read(1, usize::MAX),
                Err(Error::Trimmed { from: 1, .. })
            ),
            "reading trimmed offsets is an error, not a silent jump"
        );
        let read = store.read(store.first_offset(), usize::MAX).expect("read");
        assert_eq!(read.first().map(|e| e.offset), Some(store.first_offset()));
        assert_eq!(read.last().map(|e| e.offset), Some(5_000));
    }

    #[test]
    fn a_full_window_reads_right_wherever_the_ring_wraps_and_is_never_moved_to_read() {
        let all = suite::entries(1, 1, 3_000);
        let store = MemoryStore::new(0, 4_000);
        let mut wrapped_reads = 0;
        for e in &all {
            store.append(vec![e.clone()]).expect("append");
            let (first, last) = (store.first_offset(), e.offset);
            let wrapped = !store.inner.lock().ring.as_slices().1.is_empty();
            // Every entry held reads back as written, in one read and from every offset.
            let read = store.read(first, usize::MAX).expect("read");
            let want: Vec<LogEntry> = all[(first - 1) as usize..last as usize].to_vec();
            assert_eq!(read, want, "from {first} to {last}");
            let tail = store.read(last, usize::MAX).expect("read the newest");
            assert_eq!(tail, vec![e.clone()]);
            // A read leaves the ring where it is: reading moves no bytes.
            if wrapped {
                wrapped_reads += 1;
                assert!(
                    !store.inner.lock().ring.as_slices().1.is_empty(),
                    "the ring was made contiguous"
                );
            }
        }
        assert!(
            wrapped_reads > 100,
            "the ring wrapped {wrapped_reads} times"
        );
        // Truncating to an entry held where the ring wraps keeps exactly what precedes it.
        let (first, last) = (store.first_offset(), store.last().offset);
        let cut = (first + last) / 2;
        store.truncate_after(cut).expect("truncate");
        assert_eq!(store.last().offset, cut);
        let read = store.read(first, usize::MAX).expect("read");
        assert_eq!(read, all[(first - 1) as usize..cut as usize].to_vec());
    }
}
