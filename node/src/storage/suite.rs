//! The shared test suite every [`LogStore`] backend must pass, so the rules on the trait are
//! checked once and hold for all of them. A backend's own tests call [`run_all`] with a
//! [`Backend`] that opens (or, for a durable backend, reopens) its store.

use super::state::{entry, epoch_marker};
use super::{LogStore, Position, Recovered, SnapshotData, SnapshotMeta};
use crate::Error;
use crate::proto::{Command, LogEntry, PutCommand, command::Cmd};
use bytes::Bytes;

/// Opens a backend's store. For a durable backend, a second `open` must find what the first
/// store held, as after a restart (the first store is dropped first).
pub trait Backend {
    /// A fresh store the first time; the same data, recovered, after that (durable backends).
    fn open(&mut self) -> (Box<dyn LogStore>, Recovered);
}

/// `count` put entries from `first` on, all in `epoch`.
pub fn entries(epoch: u64, first: u64, count: u64) -> Vec<LogEntry> {
    (first..first + count)
        .map(|offset| {
            let command = Command {
                cmd: Some(Cmd::Put(PutCommand {
                    key: format!("key:{offset:06}").into_bytes(),
                    value: vec![offset as u8; 40],
                    expire_at_ms: 0,
                })),
            };
            entry(
                Position::new(epoch, offset),
                1_000 + offset as i64,
                &command,
            )
        })
        .collect()
}

fn offsets(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.offset).collect()
}

fn snapshot_at(at: Position) -> SnapshotData {
    let items = vec![(
        Bytes::from_static(b"k"),
        super::Item {
            value: Bytes::from_static(b"v"),
            expire_at_ms: 0,
        },
    )];
    SnapshotData {
        meta: SnapshotMeta {
            at,
            epoch_history: vec![(at.epoch, 1)],
        },
        items,
    }
}

/// Every check, each on a fresh store.
pub fn run_all(backend: &mut dyn Backend) {
    appends_continue_the_log_exactly(backend);
    reads_return_entries_in_order(backend);
    truncation_drops_the_tail_and_appends_continue(backend);
    truncation_below_a_snapshot_is_refused(backend);
    a_snapshot_ahead_of_the_log_lets_appends_continue(backend);
    reads_from_first_offset_are_contiguous_after_snapshots(backend);
}

fn fresh(backend: &mut dyn Backend) -> Box<dyn LogStore> {
    let (store, recovered) = backend.open();
    assert_eq!(store.last(), Position::default(), "a fresh store is empty");
    assert!(recovered.entries.is_empty() && recovered.snapshot.is_none());
    store
}

fn appends_continue_the_log_exactly(backend: &mut dyn Backend) {
    let store = fresh(backend);
    store.append(entries(1, 1, 10)).expect("append 1..=10");
    assert_eq!(store.last(), Position::new(1, 10));
    assert!(matches!(
        store.append(entries(1, 12, 1)),
        Err(Error::OffsetGap {
            expected: 11,
            got: 12,
            ..
        })
    ));
    assert!(
        store.append(entries(1, 10, 1)).is_err(),
        "a replayed offset"
    );
    let mut gapped = entries(1, 11, 3);
    gapped.remove(1);
    assert!(store.append(gapped).is_err(), "a gap inside one batch");
    assert_eq!(
        store.last(),
        Position::new(1, 10),
        "refused appends change nothing"
    );
    store
        .append(entries(2, 11, 1))
        .expect("the next offset, in a newer epoch");
    assert_eq!(store.last(), Position::new(2, 11));
    assert!(store.sync().expect("sync") >= 11 || !store.durable());
}

fn reads_return_entries_in_order(backend: &mut dyn Backend) {
    let store = fresh(backend);
    let written = entries(1, 1, 200);
    store.append(written[..150].to_vec()).expect("append");
    store.append(written[150..].to_vec()).expect("append");
    let all = store.read(1, usize::MAX).expect("read");
    assert_eq!(offsets(&all), offsets(&written));
    assert!(
        all == written,
        "entries read back differ from those written"
    );
    let tail = store.read(120, usize::MAX).expect("read");
    assert_eq!(offsets(&tail), (120..=200).collect::<Vec<_>>());
    let one = store.read(50, 1).expect("read");
    assert_eq!(
        offsets(&one),
        vec![50],
        "a tiny budget still returns one entry"
    );
    let some = store.read(1, 1_000).expect("read");
    assert!(
        !some.is_empty() && some.len() < 200,
        "the byte budget bounds a read"
    );
    assert_eq!(offsets(&some), (1..=some.len() as u64).collect::<Vec<_>>());
    assert!(store.read(201, usize::MAX).expect("read").is_empty());
}

fn truncation_drops_the_tail_and_appends_continue(backend: &mut dyn Backend) {
    let store = fresh(backend);
    store.append(entries(1, 1, 5)).expect("append");
    store.append(entries(2, 6, 5)).expect("append");
    store.truncate_after(7).expect("truncate");
    assert_eq!(store.last(), Position::new(2, 7));
    store
        .truncate_after(5)
        .expect("truncate into the older epoch");
    assert_eq!(
        store.last(),
        Position::new(1, 5),
        "the epoch of the new last entry"
    );
    store.truncate_after(9).expect("past the end is a no-op");
    assert_eq!(store.last(), Position::new(1, 5));
    store.append(entries(3, 6, 3)).expect("continue at 6");
    let read = store.read(1, usize::MAX).expect("read");
    let epochs: Vec<u64> = read.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, vec![1, 1, 1, 1, 1, 3, 3, 3]);
}

fn truncation_below_a_snapshot_is_refused(backend: &mut dyn Backend) {
    let store = fresh(backend);
    store.append(entries(1, 1, 10)).expect("append");
    store
        .save_snapshot(&snapshot_at(Position::new(1, 8)))
        .expect("snapshot");
    assert_eq!(store.snapshot_offset(), 8);
    assert!(matches!(
        store.truncate_after(7),
        Err(Error::BadTruncate { offset: 7, .. })
    ));
    store
        .truncate_after(8)
        .expect("down to the snapshot is allowed");
    assert_eq!(store.last(), Position::new(1, 8));
}

fn a_snapshot_ahead_of_the_log_lets_appends_continue(backend: &mut dyn Backend) {
    let store = fresh(backend);
    store.append(entries(1, 1, 4)).expect("append");
    // The caller applied 5..=6 to memory and snapshotted before appending them.
    store
        .save_snapshot(&snapshot_at(Position::new(1, 6)))
        .expect("snapshot ahead");
    store
        .append(entries(1, 5, 2))
        .expect("appends continue from the log's end");
    assert_eq!(store.last(), Position::new(1, 6));
}

fn reads_from_first_offset_are_contiguous_after_snapshots(backend: &mut dyn Backend) {
    let store = fresh(backend);
    let mut next = 1;
    for round in 0..6 {
        store.append(entries(1, next, 300)).expect("append");
        next += 300;
        if round % 2 == 1 {
            store
                .save_snapshot(&snapshot_at(store.last()))
                .expect("snapshot");
        }
    }
    let first = store.first_offset();
    let read = store.read(first, usize::MAX).expect("read");
    assert_eq!(offsets(&read), (first..next).collect::<Vec<_>>());
}

/// Checks for durable backends: what was appended survives a restart, with or without sync, and
/// recovery is the newest snapshot plus the entries after it.
pub fn run_durable(backend: &mut dyn Backend) {
    let (store, _) = backend.open();
    store.append(entries(1, 1, 50)).expect("append");
    store.sync().expect("sync");
    store
        .append(
            entries(2, 51, 1)
                .into_iter()
                .map(marker)
                .collect::<Vec<_>>(),
        )
        .expect("append");
    store
        .append(entries(2, 52, 49))
        .expect("append, not synced");
    store
        .save_snapshot(&snapshot_at(Position::new(1, 40)))
        .expect("snapshot");
    drop(store);
    let (store, recovered) = backend.open();
    assert_eq!(
        store.last(),
        Position::new(2, 100),
        "nothing appended was lost"
    );
    let snap = recovered.snapshot.expect("the snapshot");
    assert_eq!(snap.meta.at, Position::new(1, 40));
    assert_eq!(offsets(&recovered.entries), (41..=100).collect::<Vec<_>>());
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    store
        .append(entries(2, 101, 1))
        .expect("appends continue after a restart");
}

fn marker(mut e: LogEntry) -> LogEntry {
    let fresh = entry(
        Position::new(e.epoch, e.offset),
        e.timestamp_ms,
        &epoch_marker("n"),
    );
    e.command = fresh.command;
    e.crc32c = fresh.crc32c;
    e
}
