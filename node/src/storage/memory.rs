//! The in-memory backend: persistence off, as Redis without AOF or RDB. It keeps the most
//! recent entries, up to the backlog window, for replicas' partial resync, and nothing else, so
//! its memory stays bounded however long the node runs. A restart starts empty.

use super::snapshot::SnapshotData;
use super::{LogStore, Position};
use crate::Error;
use crate::proto::LogEntry;
use parking_lot::Mutex;
use prost::Message;
use std::collections::VecDeque;

struct Inner {
    entries: VecDeque<(LogEntry, usize)>,
    bytes: u64,
    last: Position,
    snapshot_last: Position,
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
                entries: VecDeque::new(),
                bytes: 0,
                last: Position::default(),
                snapshot_last: Position::default(),
            }),
        }
    }
}

impl LogStore for MemoryStore {
    fn last(&self) -> Position {
        self.inner.lock().last
    }

    fn first_offset(&self) -> u64 {
        let inner = self.inner.lock();
        inner
            .entries
            .front()
            .map_or(inner.last.offset + 1, |(e, _)| e.offset)
    }

    fn append(&self, entries: &[LogEntry]) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        super::check_continues(self.partition, inner.last.offset, entries)?;
        for e in entries {
            let size = e.encoded_len() + 8;
            inner.bytes += size as u64;
            inner.entries.push_back((e.clone(), size));
            inner.last = Position::new(e.epoch, e.offset);
        }
        while inner.bytes > self.backlog_bytes && inner.entries.len() > 1 {
            if let Some((_, size)) = inner.entries.pop_front() {
                inner.bytes -= size as u64;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<u64, Error> {
        Ok(self.inner.lock().last.offset)
    }

    fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<LogEntry>, Error> {
        let inner = self.inner.lock();
        let mut out = Vec::new();
        let mut taken = 0;
        for (e, size) in inner.entries.iter().filter(|(e, _)| e.offset >= from) {
            if taken >= max_bytes.max(1) {
                break;
            }
            taken += size;
            out.push(e.clone());
        }
        Ok(out)
    }

    fn truncate_after(&self, offset: u64) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        if offset < inner.snapshot_last.offset {
            return Err(Error::BadTruncate {
                partition: self.partition,
                offset,
                reason: format!(
                    "the newest snapshot already holds offsets up to {}",
                    inner.snapshot_last.offset
                ),
            });
        }
        if offset >= inner.last.offset {
            return Ok(());
        }
        let new_last = match inner.entries.iter().find(|(e, _)| e.offset == offset) {
            Some((e, _)) => Position::new(e.epoch, e.offset),
            None if offset == inner.snapshot_last.offset => inner.snapshot_last,
            None => {
                return Err(Error::BadTruncate {
                    partition: self.partition,
                    offset,
                    reason: "that offset is no longer held".into(),
                });
            }
        };
        while inner.entries.back().is_some_and(|(e, _)| e.offset > offset) {
            if let Some((_, size)) = inner.entries.pop_back() {
                inner.bytes -= size as u64;
            }
        }
        inner.last = new_last;
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        inner.snapshot_last = inner.snapshot_last.max(snapshot.meta.at);
        Ok(())
    }

    fn log_bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    fn snapshot_offset(&self) -> u64 {
        self.inner.lock().snapshot_last.offset
    }

    fn durable(&self) -> bool {
        false
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
        suite::run_all(&mut Memory { backlog: 1 << 20 });
    }

    #[test]
    fn memory_stays_within_the_backlog_window() {
        let store = MemoryStore::new(0, 10_000);
        for batch in suite::entries(1, 1, 5_000).chunks(100) {
            store.append(batch).expect("append");
        }
        assert!(
            store.log_bytes() <= 10_000,
            "{} bytes held",
            store.log_bytes()
        );
        assert!(store.first_offset() > 4_000, "old entries were dropped");
        assert_eq!(store.last().offset, 5_000);
    }
}
