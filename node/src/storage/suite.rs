//! The shared test suite every [`LogStore`] backend must pass, so the rules on the trait are
//! checked once and hold for all of them. A backend's own tests call [`run_all`] with a
//! [`Backend`] that opens (or, for a durable backend, reopens) its store.

use super::record::HEADER_LEN;
use super::state::{entry, epoch_marker};
use super::{KvState, LogStore, Position, Recovered, SnapshotData, SnapshotMeta};
use crate::Error;
use crate::proto::{Command, LogEntry, PutCommand, command::Cmd};
use bytes::Bytes;
use prost::Message;

/// Opens a backend's store. For a durable backend, a second `open` must find what the first
/// store held, as after a restart (the first store is dropped first).
pub trait Backend {
    /// A fresh store the first time; the same data, recovered, after that (durable backends).
    fn open(&mut self) -> (Box<dyn LogStore>, Recovered);
}

/// `count` put entries from `first` on, all in `epoch`.
pub fn entries(epoch: u64, first: u64, count: u64) -> Vec<LogEntry> {
    (first..first + count)
        .map(|offset| put(epoch, offset, 40))
        .collect()
}

/// A put entry at (`epoch`, `offset`) of a key of its own, with a value of `value_len` bytes.
pub fn put(epoch: u64, offset: u64, value_len: usize) -> LogEntry {
    let command = Command {
        cmd: Some(Cmd::Put(PutCommand {
            key: format!("key:{offset:06}").into_bytes(),
            value: vec![offset as u8; value_len],
            expire_at_ms: 0,
        })),
    };
    entry(
        Position::new(epoch, offset),
        1_000 + offset as i64,
        &command,
    )
}

fn offsets(entries: &[LogEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.offset).collect()
}

/// Bytes the entries take as framed records: what a read's budget counts.
pub fn framed(entries: &[LogEntry]) -> usize {
    entries.iter().map(|e| HEADER_LEN + e.encoded_len()).sum()
}

/// Reads from `from` to the end of the log in reads of `max_bytes`, checking rule 7 on each:
/// every read starts exactly where the last one ended, at consecutive offsets, within the budget
/// (or one entry alone), and as full as the budget allows.
pub fn read_all(store: &dyn LogStore, from: u64, max_bytes: usize) -> Vec<LogEntry> {
    let mut out: Vec<LogEntry> = Vec::new();
    let mut next = from;
    let mut previous_bytes: Option<usize> = None;
    loop {
        let got = store.read(next, max_bytes).expect("read");
        let Some(head) = got.first() else {
            assert!(
                next > store.last().offset,
                "a read at {next}, inside the log, returned nothing"
            );
            return out;
        };
        if let Some(bytes) = previous_bytes {
            assert!(
                bytes + framed(std::slice::from_ref(head)) > max_bytes,
                "the read before {next} stopped with room left in its budget of {max_bytes}"
            );
        }
        assert_eq!(
            offsets(&got),
            (next..next + got.len() as u64).collect::<Vec<_>>(),
            "a read starts exactly at {next} and returns consecutive offsets"
        );
        let bytes = framed(&got);
        assert!(
            got.len() == 1 || bytes <= max_bytes,
            "{bytes} bytes in {} entries for a budget of {max_bytes}",
            got.len()
        );
        previous_bytes = Some(bytes);
        next += got.len() as u64;
        out.extend(got);
    }
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
    installing_a_snapshot_replaces_any_history(backend);
    the_newest_snapshot_and_the_log_rebuild_the_state_after_truncation(backend);
    bounded_reads_walk_the_whole_log(backend);
    reads_below_the_first_offset_are_trimmed(backend);
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

/// Checks rule 6 on a store that has just installed `snap`, and that it refuses appends and
/// truncations that do not fit the new history (changing nothing).
fn assert_installed(store: &dyn LogStore, snap: &SnapshotData) {
    let at = snap.meta.at;
    assert_eq!(store.last(), at, "the log ends at the snapshot");
    assert_eq!(store.first_offset(), at.offset + 1, "and holds no entry");
    assert_eq!(store.snapshot_offset(), at.offset);
    assert_eq!(store.log_bytes(), 0, "no byte of the old log is left");
    assert!(
        store
            .read(at.offset + 1, usize::MAX)
            .expect("read")
            .is_empty(),
        "no entry after the snapshot"
    );
    if at.offset > 0 {
        assert!(
            matches!(
                store.read(at.offset, usize::MAX),
                Err(Error::Trimmed { .. })
            ),
            "the snapshot's own offset is not in the log"
        );
        assert!(
            matches!(
                store.truncate_after(at.offset - 1),
                Err(Error::BadTruncate { .. })
            ),
            "no truncation below the snapshot"
        );
    }
    let newest = store.newest_snapshot().expect("newest snapshot");
    if store.durable() {
        assert_eq!(
            newest.as_ref(),
            Some(snap),
            "the installed snapshot is held"
        );
    } else {
        assert_eq!(newest, None, "a memory store keeps no snapshot data");
    }
    let mut wrong = vec![at.offset, at.offset + 2];
    if at.offset > 0 {
        wrong.push(1);
    }
    for got in wrong {
        assert!(
            matches!(
                store.append(entries(at.epoch, got, 1)),
                Err(Error::OffsetGap { expected, got: g, .. }) if expected == at.offset + 1 && g == got
            ),
            "an append at {got} after a snapshot at {} is refused",
            at.offset
        );
    }
    assert_eq!(
        store.last(),
        at,
        "refused appends and truncations change nothing"
    );
}

fn installing_a_snapshot_replaces_any_history(backend: &mut dyn Backend) {
    // Ahead of the log's end.
    let store = fresh(backend);
    store.append(entries(1, 1, 10)).expect("append");
    let ahead = snapshot_at(Position::new(2, 50));
    store.install_snapshot(&ahead).expect("install ahead");
    assert_installed(&*store, &ahead);
    store
        .append(entries(2, 51, 3))
        .expect("appends continue at 51");
    assert_eq!(
        offsets(&store.read(51, usize::MAX).expect("read")),
        vec![51, 52, 53]
    );
    store.truncate_after(50).expect("down to the snapshot");
    assert_eq!(store.last(), Position::new(2, 50));

    // Behind the log's end, over a divergent history with its own snapshot.
    let store = fresh(backend);
    store.append(entries(1, 1, 5)).expect("append");
    store.append(entries(2, 6, 95)).expect("append");
    store
        .save_snapshot(&snapshot_at(Position::new(2, 80)))
        .expect("snapshot");
    let behind = snapshot_at(Position::new(3, 30));
    store.install_snapshot(&behind).expect("install behind");
    assert_installed(&*store, &behind);
    let new = entries(3, 31, 10);
    store.append(new.clone()).expect("appends continue at 31");
    assert!(
        store.read(31, usize::MAX).expect("read") == new,
        "only the new history's entries are read, none of the old 31..=100"
    );
    assert_eq!(store.last(), Position::new(3, 40));
    // Installed again, behind the new end, on a store that already installed one.
    let again = snapshot_at(Position::new(4, 35));
    store.install_snapshot(&again).expect("install again");
    assert_installed(&*store, &again);

    // At exactly the log's end, and at the same offset in another epoch.
    for installed in [Position::new(1, 20), Position::new(3, 20)] {
        let store = fresh(backend);
        store.append(entries(1, 1, 20)).expect("append");
        let snap = snapshot_at(installed);
        store.install_snapshot(&snap).expect("install at the end");
        assert_installed(&*store, &snap);
        store
            .append(entries(installed.epoch, 21, 1))
            .expect("append after");
    }

    // On an empty store.
    let store = fresh(backend);
    let snap = snapshot_at(Position::new(1, 7));
    store.install_snapshot(&snap).expect("install on empty");
    assert_installed(&*store, &snap);
}

fn the_newest_snapshot_and_the_log_rebuild_the_state_after_truncation(backend: &mut dyn Backend) {
    let store = fresh(backend);
    let mut written = entries(1, 1, 60);
    written.extend(entries(2, 61, 60));
    let mut state = KvState::new(0);
    for batch in written.chunks(10) {
        store.append(batch.to_vec()).expect("append");
        for e in batch {
            state.apply(e).expect("apply");
            if e.offset == 20 || e.offset == 40 {
                store.save_snapshot(&state.snapshot()).expect("snapshot");
            }
        }
    }
    store.truncate_after(90).expect("truncate");
    let mut expected = KvState::new(0);
    for e in &written[..90] {
        expected.apply(e).expect("apply");
    }

    let (mut rebuilt, from) = match store.newest_snapshot().expect("newest snapshot") {
        Some(snap) => {
            assert!(store.durable(), "only a durable store keeps snapshot data");
            assert_eq!(snap.meta.at, Position::new(1, 40), "the newest snapshot");
            let from = snap.meta.at.offset + 1;
            (KvState::from_snapshot(0, snap), from)
        }
        None => {
            assert!(!store.durable(), "a durable store keeps its snapshots");
            (KvState::new(0), store.first_offset())
        }
    };
    let replay = read_all(&*store, from, 300);
    assert!(
        replay.as_slice() == &written[(from - 1) as usize..90],
        "the log from the snapshot on is exactly the history up to the truncation point"
    );
    for e in &replay {
        rebuilt.apply(e).expect("replay");
    }
    assert_eq!(rebuilt.last(), Position::new(2, 90));
    assert_eq!(rebuilt.digest(), expected.digest(), "the same state");
    assert_eq!(rebuilt.epoch_history(), expected.epoch_history());
}

fn bounded_reads_walk_the_whole_log(backend: &mut dyn Backend) {
    let store = fresh(backend);
    let written = entries(1, 1, 1000);
    for batch in written.chunks(100) {
        store.append(batch.to_vec()).expect("append");
    }
    let one = framed(&written[499..500]);
    for budget in [0, 1, one, 3 * one + 1, 1_000, 10_000, usize::MAX] {
        let read = read_all(&*store, 1, budget);
        assert!(
            read == written,
            "reads of {budget} bytes walk the whole log"
        );
    }
    let ten = store.read(500, 10 * one).expect("read");
    assert_eq!(
        offsets(&ten),
        (500..510).collect::<Vec<_>>(),
        "ten entries of {one} bytes fill a budget of ten"
    );
    assert!(
        ten.as_slice() == &written[499..509],
        "the entries read are those written"
    );

    // An entry larger than the budget comes alone, and only first.
    store
        .append(vec![put(1, 1001, 20_000), put(1, 1002, 40)])
        .expect("append");
    let big = store.read(1001, 100).expect("read");
    assert_eq!(offsets(&big), vec![1001], "alone, however small the budget");
    assert_eq!(framed(&big), framed(&[put(1, 1001, 20_000)]));
    let before = store.read(1000, 1_000).expect("read");
    assert_eq!(offsets(&before), vec![1000], "not after a smaller one");
    assert_eq!(offsets(&store.read(1002, 1).expect("read")), vec![1002]);
}

fn reads_below_the_first_offset_are_trimmed(backend: &mut dyn Backend) {
    let store = fresh(backend);
    assert_eq!(store.first_offset(), 1);
    assert!(matches!(
        store.read(0, usize::MAX),
        Err(Error::Trimmed {
            from: 0,
            first: 1,
            ..
        })
    ));
    store.append(entries(1, 1, 50)).expect("append");
    store
        .install_snapshot(&snapshot_at(Position::new(1, 40)))
        .expect("install");
    for from in [1, 39, 40] {
        assert!(
            matches!(
                store.read(from, usize::MAX),
                Err(Error::Trimmed { from: f, first: 41, .. }) if f == from
            ),
            "a read at {from}, below the log's first offset 41, is an error, not a silent jump"
        );
    }
    store.append(entries(2, 41, 5)).expect("append");
    assert_eq!(
        offsets(&store.read(41, usize::MAX).expect("read")),
        (41..=45).collect::<Vec<_>>()
    );
    assert!(matches!(
        store.read(40, usize::MAX),
        Err(Error::Trimmed { .. })
    ));
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

    // A full sync behind the end, over a divergent history: a restart finds the new history
    // and nothing of the old.
    let installed = snapshot_at(Position::new(3, 70));
    store.install_snapshot(&installed).expect("install");
    let new = entries(3, 71, 5);
    store.append(new.clone()).expect("append");
    drop(store);
    let (store, recovered) = backend.open();
    assert_eq!(recovered.snapshot.as_ref(), Some(&installed));
    assert!(
        recovered.entries == new,
        "exactly the entries appended after the install"
    );
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(store.last(), Position::new(3, 75));
    assert_eq!(store.first_offset(), 71);
    assert_eq!(
        store.newest_snapshot().expect("newest snapshot"),
        Some(installed)
    );
    store
        .append(entries(3, 76, 1))
        .expect("appends continue after the restart");
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
