//! The on-disk backend: one directory per partition, holding
//!
//! ```text
//! log/00000000000000000001.log     segments, named by their first offset, of framed records
//! log/00000000000000500001.log
//! snap/00000000000000480000.snap   snapshots, named by their offset; the newest two are kept
//! ```
//!
//! Opening the directory recovers it: the newest snapshot that passes its checksum is loaded (a
//! damaged one is renamed `*.corrupt` and never read again), then the log is read record by
//! record. The first record that is torn, fails its checksum or breaks the offset sequence ends
//! the log: its segment is cut there and later segments are removed, with a warning. Segments
//! are dropped once the older kept snapshot covers them and the backlog window (the bytes of log
//! kept for replicas' partial resync) no longer needs them.
//!
//! `sync` does not hold the append lock while it waits for the disk, so appends go on during an
//! fsync and the next fsync covers all of them: group commit.
//!
//! Reads walk a segment record by record from the nearest index point, reading headers only for
//! the records before the one asked for, and stop at the byte budget: a replica catching up
//! costs the primary memory and I/O in proportion to what it is sent, not to the segment size
//! (DESIGN.md, invariant 4).
//!
//! Installing a snapshot (a replica's full sync) replaces the whole history in an order that is
//! safe at every step of a crash: the old segments are removed newest first, each removal made
//! durable before the next, so what is left is always a prefix of the old log that recovery
//! accepts; then the old snapshots; then the new snapshot is written atomically; then an empty
//! segment after it is started. Recovery therefore finds a consistent earlier state of the old
//! history (possibly nothing at all), or the new snapshot, and never old entries on top of it.

use super::record::{self, Decoded, HEADER_LEN, MAX_RECORD_LEN};
use super::snapshot::{self, SnapshotData, sync_dir};
use super::{LogStore, Position, Recovered};
use crate::Error;
use crate::proto::LogEntry;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Settings of a [`DiskStore`].
#[derive(Debug, Clone, Copy)]
pub struct DiskStoreConfig {
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Bytes of log kept behind the newest snapshot, for partial resync of replicas.
    pub backlog_bytes: u64,
    /// Snapshots kept; the older ones are the fallback when the newest is damaged.
    pub keep_snapshots: usize,
}

impl Default for DiskStoreConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            backlog_bytes: 64 << 20,
            keep_snapshots: 2,
        }
    }
}

/// Record an index point every this many entries, so finding an offset reads at most this
/// many records.
const INDEX_EVERY: u64 = 64;

/// Read buffer used while stepping over the records before the one asked for: only their
/// headers are needed.
const SKIP_BUF: usize = 512;

/// Smallest and largest read buffer used for returning records; within these bounds it follows
/// the read's byte budget.
const READ_BUF: (usize, usize) = (4 << 10, 64 << 10);

#[derive(Debug)]
struct Segment {
    first: u64,
    /// Last offset held; `first - 1` when empty.
    last: u64,
    path: PathBuf,
    bytes: u64,
    /// (offset, file position) of every INDEX_EVERY-th entry.
    index: Vec<(u64, u64)>,
    /// Epoch of the last entry held, when not empty.
    last_epoch: u64,
}

impl Segment {
    /// A segment holding nothing yet, whose first entry will be `first`.
    fn empty(first: u64, path: PathBuf) -> Self {
        Self {
            first,
            last: first - 1,
            path,
            bytes: 0,
            index: Vec::new(),
            last_epoch: 0,
        }
    }

    fn contains(&self, offset: u64) -> bool {
        self.first <= offset && offset <= self.last
    }

    fn is_empty(&self) -> bool {
        self.last < self.first
    }

    /// File position to start reading from to find `offset`.
    fn seek_hint(&self, offset: u64) -> (u64, u64) {
        match self.index.partition_point(|&(o, _)| o <= offset) {
            0 => (self.first, 0),
            i => self.index[i - 1],
        }
    }
}

struct Inner {
    segments: Vec<Segment>,
    active: Arc<File>,
    last: Position,
    /// (offset, path) of kept snapshots, oldest first.
    snapshots: Vec<(u64, PathBuf)>,
    snapshot_last: Position,
    written: u64,
    synced: u64,
    /// Bumped by every truncation, so an fsync that started before one cannot claim offsets
    /// that were removed and written again since.
    truncations: u64,
    buf: Vec<u8>,
    /// Set when a write failed half way: the file's tail is unknown, so nothing more is appended.
    failed: Option<String>,
}

/// A partition's log and snapshots in a directory.
pub struct DiskStore {
    partition: u32,
    dir: PathBuf,
    cfg: DiskStoreConfig,
    inner: Mutex<Inner>,
    /// Held while snapshot files are written, removed or read outside `inner`'s lock, so saving
    /// a snapshot, installing one and loading the newest never interleave. Taken before `inner`.
    snapshot_files: Mutex<()>,
}

fn seg_name(first: u64) -> String {
    format!("{first:020}.log")
}

fn snap_name(offset: u64) -> String {
    format!("{offset:020}.snap")
}

/// Removes a file; one already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

/// The first offset the log holds: that of the oldest segment holding anything.
fn first_of(inner: &Inner) -> u64 {
    inner
        .segments
        .iter()
        .find(|s| !s.is_empty())
        .map_or(inner.last.offset + 1, |s| s.first)
}

/// Walks one segment's records in order, reading no more of the file than it returns (plus
/// the headers of records stepped over, and a bounded read-ahead buffer).
struct Cursor<'a> {
    partition: u32,
    seg: &'a Segment,
    file: BufReader<File>,
    /// Offset of the record at `pos`.
    offset: u64,
    /// File position of the record at the cursor.
    pos: u64,
    /// That record's header, once read.
    header: Option<[u8; HEADER_LEN]>,
}

impl<'a> Cursor<'a> {
    /// A cursor on the record at `from` (or on the segment's end when `from` is past it),
    /// reading records through a buffer of about `buf_bytes`.
    fn open(partition: u32, seg: &'a Segment, from: u64, buf_bytes: usize) -> Result<Self, Error> {
        let (offset, pos) = seg.seek_hint(from);
        let io = |e| Error::io("reading log", &seg.path, e);
        let mut file = File::open(&seg.path).map_err(io)?;
        file.seek(SeekFrom::Start(pos)).map_err(io)?;
        let mut cursor = Cursor {
            partition,
            seg,
            file: BufReader::with_capacity(SKIP_BUF, file),
            offset,
            pos,
            header: None,
        };
        while cursor.offset < from && cursor.skip()? {}
        // Start the reading buffer exactly at the cursor.
        let mut file = cursor.file.into_inner();
        file.seek(SeekFrom::Start(cursor.pos)).map_err(io)?;
        cursor.file = BufReader::with_capacity(buf_bytes.clamp(READ_BUF.0, READ_BUF.1), file);
        cursor.header = None;
        Ok(cursor)
    }

    fn damaged(&self, why: &str) -> Error {
        Error::CorruptEntry {
            partition: self.partition,
            offset: self.offset,
            reason: format!(
                "log segment {} damaged while open: {why}",
                self.seg.path.display()
            ),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.file.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.damaged("the file ends inside a record")
            } else {
                Error::io("reading log", &self.seg.path, e)
            }
        })
    }

    /// The framed length of the record at the cursor; `None` past the segment's last entry.
    fn peek_len(&mut self) -> Result<Option<usize>, Error> {
        if self.offset > self.seg.last || self.pos >= self.seg.bytes {
            return Ok(None);
        }
        let header = match self.header {
            Some(h) => h,
            None => {
                let mut h = [0u8; HEADER_LEN];
                self.read_exact(&mut h)?;
                self.header = Some(h);
                h
            }
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_RECORD_LEN || self.pos + (HEADER_LEN + len) as u64 > self.seg.bytes {
            return Err(self.damaged(&format!("record length {len} runs past the segment")));
        }
        Ok(Some(HEADER_LEN + len))
    }

    /// Steps over the record at the cursor without reading its payload; false at the end.
    fn skip(&mut self) -> Result<bool, Error> {
        let Some(len) = self.peek_len()? else {
            return Ok(false);
        };
        self.file
            .seek_relative((len - HEADER_LEN) as i64)
            .map_err(|e| Error::io("reading log", &self.seg.path, e))?;
        self.header = None;
        self.pos += len as u64;
        self.offset += 1;
        Ok(true)
    }

    /// Reads the record at the cursor, using `buf` as scratch; `None` at the end.
    fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<LogEntry>, Error> {
        let Some(len) = self.peek_len()? else {
            return Ok(None);
        };
        let header = self.header.take().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(len, 0);
        self.read_exact(&mut buf[HEADER_LEN..])?;
        let entry = match record::decode(buf) {
            Decoded::Record(entry, used) if used == len && entry.offset == self.offset => entry,
            Decoded::Record(entry, _) => {
                return Err(self.damaged(&format!("entry at offset {}", entry.offset)));
            }
            Decoded::Incomplete => return Err(self.damaged("a torn record")),
            Decoded::Corrupt(why) => return Err(self.damaged(&why)),
        };
        self.pos += len as u64;
        self.offset += 1;
        Ok(Some(entry))
    }
}

fn list(dir: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("listing", dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix(ext)
            && let Ok(n) = stem.parse::<u64>()
        {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// What reading a segment found: its valid entries, their index points, and the first problem
/// with its file position, if any.
type Scanned = (Vec<LogEntry>, Vec<(u64, u64)>, Option<(u64, String)>);

/// Reads a segment's records, stopping at the first damaged one. `last_epoch` is the epoch of
/// the entry before the segment, so a drop in epoch across segments is caught too.
fn scan_segment(path: &Path, first: u64, mut last_epoch: u64) -> Result<Scanned, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading log segment", path, e))?;
    let mut entries = Vec::new();
    let mut index = Vec::new();
    let mut pos = 0usize;
    let mut expected = first;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Decoded::Record(entry, used) => {
                if entry.offset != expected {
                    let why = format!("entry at offset {} where {expected} was due", entry.offset);
                    return Ok((entries, index, Some((pos as u64, why))));
                }
                if entry.epoch < last_epoch {
                    let why = format!("epoch {} after epoch {last_epoch}", entry.epoch);
                    return Ok((entries, index, Some((pos as u64, why))));
                }
                if crc32c::crc32c(&entry.command) != entry.crc32c {
                    let why = format!("command checksum mismatch at offset {}", entry.offset);
                    return Ok((entries, index, Some((pos as u64, why))));
                }
                if (entry.offset - first).is_multiple_of(INDEX_EVERY) {
                    index.push((entry.offset, pos as u64));
                }
                last_epoch = entry.epoch;
                expected += 1;
                pos += used;
                entries.push(entry);
            }
            Decoded::Incomplete => {
                let why = format!("torn record ({} trailing bytes)", bytes.len() - pos);
                return Ok((entries, index, Some((pos as u64, why))));
            }
            Decoded::Corrupt(why) => return Ok((entries, index, Some((pos as u64, why)))),
        }
    }
    Ok((entries, index, None))
}

/// Renames a file to `<name>.corrupt`, keeping it for inspection but out of recovery's way.
fn set_aside(path: &Path) -> Result<(), Error> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    std::fs::rename(path, &aside).map_err(|e| Error::io("setting aside", path, e))
}

fn open_append(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("opening log segment", path, e))
}

impl DiskStore {
    /// Opens (creating if needed) the partition directory `dir` and recovers it.
    pub fn open(
        dir: impl Into<PathBuf>,
        partition: u32,
        cfg: DiskStoreConfig,
    ) -> Result<(Self, Recovered), Error> {
        let dir = dir.into();
        let log_dir = dir.join("log");
        let snap_dir = dir.join("snap");
        for d in [&log_dir, &snap_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("creating directory", d, e))?;
        }
        let mut warnings = Vec::new();

        // Snapshots: the newest valid one wins; damaged ones are set aside, never loaded.
        for (_, tmp) in list(&snap_dir, ".snap.tmp")? {
            std::fs::remove_file(&tmp).map_err(|e| Error::io("removing", &tmp, e))?;
        }
        let mut snapshots = list(&snap_dir, ".snap")?;
        let mut loaded: Option<SnapshotData> = None;
        let mut refused = 0;
        while let Some((offset, path)) = snapshots.last().cloned() {
            match snapshot::read(&path) {
                Ok(data) if data.meta.at.offset == offset => {
                    loaded = Some(data);
                    break;
                }
                Ok(data) => {
                    let why = format!(
                        "refusing snapshot {}: named for offset {offset} but holds {}",
                        path.display(),
                        data.meta.at.offset
                    );
                    warnings.push(why);
                }
                Err(e) => warnings.push(format!("refusing {e}")),
            }
            refused += 1;
            let aside = path.with_extension("snap.corrupt");
            std::fs::rename(&path, &aside).map_err(|e| Error::io("setting aside", &path, e))?;
            snapshots.pop();
        }
        let snap_pos = loaded.as_ref().map(|s| s.meta.at).unwrap_or_default();

        // The log, record by record. Damage after the snapshot cuts the log there (what follows
        // is set aside, never deleted); damage wholly behind the snapshot only sets aside the
        // segments the snapshot covers.
        let mut segments: Vec<Segment> = Vec::new();
        let mut entries = Vec::new();
        let files = list(&log_dir, ".log")?;
        let mut cut = false;
        for (i, (first, path)) in files.iter().enumerate() {
            let first = *first;
            if cut {
                warnings.push(format!("setting aside {} after the cut", path.display()));
                set_aside(path)?;
                continue;
            }
            let expected_first = segments.last().map(|s| s.last + 1);
            if let Some(expected) = expected_first.filter(|&e| e != first) {
                warnings.push(format!(
                    "segment {} starts at {first}, not {expected}: setting it and later ones aside",
                    path.display()
                ));
                set_aside(path)?;
                cut = true;
                continue;
            }
            let prev_epoch = segments.last().map_or(0, |s| s.last_epoch);
            let (seg_entries, index, problem) = scan_segment(path, first, prev_epoch)?;
            let mut bytes = std::fs::metadata(path)
                .map_err(|e| Error::io("reading log segment", path, e))?
                .len();
            if let Some((pos, why)) = problem {
                let damaged_at = first + seg_entries.len() as u64;
                let next_first = files.get(i + 1).map(|(f, _)| *f);
                if damaged_at <= snap_pos.offset
                    && next_first.is_some_and(|n| n <= snap_pos.offset + 1)
                {
                    // Everything in this segment and before it is covered by the snapshot.
                    warnings.push(format!(
                        "partition {partition}: log segment {} is damaged at offset {damaged_at} \
                         ({why}), behind the snapshot at {}; setting it and older segments aside",
                        path.display(),
                        snap_pos.offset
                    ));
                    for s in segments.drain(..) {
                        set_aside(&s.path)?;
                    }
                    set_aside(path)?;
                    entries.clear();
                    continue;
                }
                if damaged_at <= snap_pos.offset {
                    return Err(Error::Unrecoverable {
                        partition,
                        dir,
                        reason: format!(
                            "log segment {} is damaged at offset {damaged_at} ({why}), behind the \
                             snapshot at {}, and holds entries after the snapshot that cannot be \
                             read past the damage; restore the directory from a backup, or remove \
                             it and let the node resync from a replica",
                            path.display(),
                            snap_pos.offset
                        ),
                    });
                }
                warnings.push(format!(
                    "partition {partition}: log damaged in {} at byte {pos}: {why}; \
                     truncating {} bytes, recovering to offset {}",
                    path.display(),
                    bytes - pos,
                    damaged_at - 1
                ));
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io("opening log segment", path, e))?;
                f.set_len(pos)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io("truncating log segment", path, e))?;
                bytes = pos;
                cut = true;
            }
            let last_epoch = seg_entries.last().map_or(prev_epoch, |e| e.epoch);
            segments.push(Segment {
                first,
                last: first + seg_entries.len() as u64 - 1,
                path: path.clone(),
                bytes,
                index,
                last_epoch,
            });
            entries.extend(seg_entries);
        }
        let log_first = segments.first().map_or(snap_pos.offset + 1, |s| s.first);
        let log_last = segments.last().map_or(snap_pos.offset, |s| s.last);

        if loaded.is_none() && refused > 0 && log_first > 1 {
            return Err(Error::Unrecoverable {
                partition,
                dir,
                reason: format!(
                    "every snapshot is damaged and the log starts at offset {log_first}, so \
                     offsets 1..{log_first} are lost; restore the directory from a backup, or \
                     remove it and let the node resync from a replica"
                ),
            });
        }
        if log_first > snap_pos.offset + 1 {
            return Err(Error::Unrecoverable {
                partition,
                dir,
                reason: format!(
                    "the log starts at offset {log_first} but the newest valid snapshot ends at \
                     {}: offsets in between are missing; restore the directory from a backup, \
                     or remove it and let the node resync from a replica",
                    snap_pos.offset
                ),
            });
        }
        if log_last < snap_pos.offset {
            // The snapshot covers the whole log (its tail was still buffered when the process
            // stopped, or was cut above): the log restarts after it. Older snapshots needed that
            // log, so they can no longer be a fallback: set them aside too.
            for s in segments.drain(..) {
                set_aside(&s.path)?;
            }
            entries.clear();
            let newest = snapshots.len().saturating_sub(1);
            for (_, old) in snapshots.drain(..newest) {
                warnings.push(format!(
                    "setting aside {}: the log it needs is gone",
                    old.display()
                ));
                set_aside(&old)?;
            }
        }
        if segments.is_empty() {
            let first = snap_pos.offset + 1;
            let path = log_dir.join(seg_name(first));
            open_append(&path)?;
            segments.push(Segment::empty(first, path));
        }
        sync_dir(&log_dir)?;
        sync_dir(&snap_dir)?;

        let last = match entries.last() {
            Some(e) if e.offset > snap_pos.offset => Position::new(e.epoch, e.offset),
            _ => snap_pos,
        };
        entries.retain(|e| e.offset > snap_pos.offset);
        let active_path = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let active = Arc::new(open_append(&active_path)?);
        for w in &warnings {
            tracing::warn!(partition, "{w}");
        }
        let store = DiskStore {
            partition,
            dir,
            cfg,
            inner: Mutex::new(Inner {
                segments,
                active,
                last,
                snapshots,
                snapshot_last: snap_pos,
                written: last.offset,
                synced: last.offset,
                truncations: 0,
                buf: Vec::new(),
                failed: None,
            }),
            snapshot_files: Mutex::new(()),
        };
        Ok((
            store,
            Recovered {
                snapshot: loaded,
                entries,
                warnings,
            },
        ))
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn roll(&self, inner: &mut Inner, first: u64) -> Result<(), Error> {
        // The closed segment must be durable before the next one is, or a crash could keep a
        // later record while losing an earlier one.
        let old = inner
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        inner
            .active
            .sync_data()
            .map_err(|e| Error::io("syncing log segment", &old, e))?;
        let path = self.dir.join("log").join(seg_name(first));
        inner.active = Arc::new(open_append(&path)?);
        sync_dir(&self.dir.join("log"))?;
        inner.segments.push(Segment::empty(first, path));
        inner.synced = inner.written;
        Ok(())
    }

    /// Installs `data` as the whole history (rule 6 of [`LogStore`]), calling `crash_point`
    /// after every step that leaves the directory in a state a crash could leave it in. An error
    /// from `crash_point` stops the install there, as a crash would: tests use it to check what
    /// recovery makes of every such state.
    fn install(
        &self,
        data: &SnapshotData,
        crash_point: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let _files = self.snapshot_files.lock();
        let mut inner = self.inner.lock();
        // An fsync in flight on the old segment must not claim offsets of the new history.
        inner.truncations += 1;
        let result = self.replace_history(&mut inner, data, crash_point);
        if let Err(e) = &result {
            // The files no longer match what `inner` describes: append nothing more.
            inner.failed = Some(format!("installing a snapshot failed: {e}"));
        }
        result
    }

    fn replace_history(
        &self,
        inner: &mut Inner,
        data: &SnapshotData,
        crash_point: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let at = data.meta.at;
        let log_dir = self.dir.join("log");
        let snap_dir = self.dir.join("snap");
        // The old segments, newest first, each removal durable before the next: what is left is
        // always a prefix of the old log, which recovery accepts with or without the old
        // snapshots. (Removing an older segment first could leave a log that starts after every
        // snapshot: unrecoverable.) Listed from the directory, not from `inner`, so a retry after
        // a failed install also finds what the failed one left.
        for (_, path) in list(&log_dir, ".log")?.into_iter().rev() {
            remove_if_present(&path)?;
            sync_dir(&log_dir)?;
            crash_point()?;
        }
        // With no log, any subset of the old snapshots is a consistent state of the old history.
        for (_, path) in list(&snap_dir, ".snap.tmp")?
            .into_iter()
            .chain(list(&snap_dir, ".snap")?.into_iter().rev())
        {
            remove_if_present(&path)?;
            crash_point()?;
        }
        sync_dir(&snap_dir)?;
        crash_point()?;
        // Nothing is left: a crash now recovers an empty store. Then the new snapshot, atomically
        // (temporary file, sync, rename, directory sync).
        let snap_path = snap_dir.join(snap_name(at.offset));
        snapshot::write(&snap_path, data)?;
        crash_point()?;
        // Recovery starts the log after a snapshot without segments; starting it here just
        // saves that step.
        let first = at.offset + 1;
        let seg_path = log_dir.join(seg_name(first));
        let active = open_append(&seg_path)?;
        sync_dir(&log_dir)?;
        inner.segments = vec![Segment::empty(first, seg_path)];
        inner.active = Arc::new(active);
        inner.last = at;
        inner.snapshots = vec![(at.offset, snap_path)];
        inner.snapshot_last = at;
        inner.written = at.offset;
        inner.synced = at.offset;
        inner.failed = None;
        Ok(())
    }

    fn compact(&self, inner: &mut Inner) -> Result<(), Error> {
        // Recovery from the oldest kept snapshot needs every entry after it, and replicas'
        // partial resync needs the backlog: drop a segment only when neither does.
        let floor = inner.snapshots.first().map_or(0, |(o, _)| *o);
        let mut dropped = false;
        while inner.segments.len() > 1 {
            let seg = &inner.segments[0];
            let after: u64 = inner.segments[1..].iter().map(|s| s.bytes).sum();
            if seg.last > floor || after < self.cfg.backlog_bytes {
                break;
            }
            std::fs::remove_file(&seg.path).map_err(|e| Error::io("removing", &seg.path, e))?;
            inner.segments.remove(0);
            dropped = true;
        }
        if dropped {
            sync_dir(&self.dir.join("log"))?;
        }
        Ok(())
    }
}

impl LogStore for DiskStore {
    fn last(&self) -> Position {
        self.inner.lock().last
    }

    fn first_offset(&self) -> u64 {
        first_of(&self.inner.lock())
    }

    fn append(&self, entries: Vec<LogEntry>) -> Result<(), Error> {
        let entries = entries.as_slice();
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut inner = self.inner.lock();
        if let Some(why) = &inner.failed {
            return Err(Error::Unrecoverable {
                partition: self.partition,
                dir: self.dir.clone(),
                reason: format!("an earlier write failed ({why}); restart the node to recover"),
            });
        }
        super::check_continues(self.partition, inner.last.offset, entries)?;
        let needs_roll = inner
            .segments
            .last()
            .is_none_or(|s| s.bytes >= self.cfg.segment_bytes);
        if needs_roll {
            self.roll(&mut inner, first.offset)?;
        }
        let mut buf = std::mem::take(&mut inner.buf);
        buf.clear();
        let Inner {
            segments, active, ..
        } = &mut *inner;
        let seg = segments.last_mut().ok_or(Error::Unrecoverable {
            partition: self.partition,
            dir: self.dir.clone(),
            reason: "no active log segment".into(),
        })?;
        if seg.last < seg.first && seg.first != first.offset {
            return Err(Error::Unrecoverable {
                partition: self.partition,
                dir: self.dir.clone(),
                reason: format!(
                    "the active log segment starts at {} but the next entry is {}",
                    seg.first, first.offset
                ),
            });
        }
        let base = seg.bytes;
        let mut positions = Vec::new();
        for e in entries {
            if (e.offset - seg.first).is_multiple_of(INDEX_EVERY) {
                positions.push((e.offset, base + buf.len() as u64));
            }
            record::encode(e, &mut buf);
        }
        let result = (&**active).write_all(&buf);
        if let Err(e) = result {
            // Put the file back to where it was, or stop appending for good.
            let restored = active.set_len(base).is_ok();
            if !restored {
                inner.failed = Some(e.to_string());
            }
            let path = inner
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            inner.buf = buf;
            return Err(Error::io("appending to log", path, e));
        }
        seg.bytes += buf.len() as u64;
        seg.index.extend(positions);
        let last = entries
            .last()
            .map_or(Position::default(), |e| Position::new(e.epoch, e.offset));
        seg.last = last.offset;
        seg.last_epoch = last.epoch;
        inner.last = last;
        inner.written = last.offset;
        inner.buf = buf;
        Ok(())
    }

    fn sync(&self) -> Result<u64, Error> {
        let (file, upto, path, generation) = {
            let inner = self.inner.lock();
            if inner.synced >= inner.written {
                return Ok(inner.synced);
            }
            let path = inner
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            (inner.active.clone(), inner.written, path, inner.truncations)
        };
        // Without the lock: appends continue, and the next sync covers them.
        file.sync_data()
            .map_err(|e| Error::io("syncing log segment", path, e))?;
        let mut inner = self.inner.lock();
        if inner.truncations == generation {
            inner.synced = inner.synced.max(upto);
        }
        Ok(inner.synced)
    }

    fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<LogEntry>, Error> {
        let inner = self.inner.lock();
        let first = first_of(&inner);
        if from < first {
            return Err(Error::Trimmed {
                partition: self.partition,
                from,
                first,
            });
        }
        let mut out = Vec::new();
        let mut taken = 0usize;
        let mut scratch = Vec::new();
        for seg in inner
            .segments
            .iter()
            .filter(|s| s.last >= from && !s.is_empty())
        {
            let mut cursor = Cursor::open(self.partition, seg, from, max_bytes)?;
            // Rule 7: within the budget, but always the first entry.
            while let Some(len) = cursor.peek_len()? {
                if !out.is_empty() && taken.saturating_add(len) > max_bytes {
                    return Ok(out);
                }
                let Some(entry) = cursor.next(&mut scratch)? else {
                    break;
                };
                taken += len;
                out.push(entry);
                if taken >= max_bytes {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    fn truncate_after(&self, offset: u64) -> Result<(), Error> {
        let mut inner = self.inner.lock();
        super::check_truncate(self.partition, offset, inner.snapshot_last.offset)?;
        if offset >= inner.last.offset {
            return Ok(());
        }
        // The epoch of the entry that becomes the last one.
        let new_last =
            if offset == inner.snapshot_last.offset {
                inner.snapshot_last
            } else {
                let seg = inner.segments.iter().find(|s| s.contains(offset)).ok_or(
                    Error::BadTruncate {
                        partition: self.partition,
                        offset,
                        reason: "that offset is no longer in the log".into(),
                    },
                )?;
                let e = Cursor::open(self.partition, seg, offset, 0)?
                    .next(&mut Vec::new())?
                    .ok_or(Error::BadTruncate {
                        partition: self.partition,
                        offset,
                        reason: "entry not found".into(),
                    })?;
                Position::new(e.epoch, e.offset)
            };
        // Cut the segment holding offset + 1; remove the ones after it.
        while inner.segments.len() > 1
            && inner.segments.last().is_some_and(|s| s.first > offset + 1)
        {
            if let Some(s) = inner.segments.pop() {
                std::fs::remove_file(&s.path).map_err(|e| Error::io("removing", &s.path, e))?;
            }
        }
        let seg = inner.segments.last_mut().ok_or(Error::BadTruncate {
            partition: self.partition,
            offset,
            reason: "no segment".into(),
        })?;
        let cut_at = if offset < seg.first {
            0
        } else {
            // Steps over the records up to `offset`, reading their headers only.
            let cursor = Cursor::open(self.partition, seg, offset + 1, 0)?;
            if cursor.offset != offset + 1 {
                return Err(Error::CorruptEntry {
                    partition: self.partition,
                    offset: cursor.offset,
                    reason: "damaged while truncating".into(),
                });
            }
            cursor.pos
        };
        let f = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(|e| Error::io("opening log segment", &seg.path, e))?;
        f.set_len(cut_at)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("truncating log segment", &seg.path, e))?;
        seg.bytes = cut_at;
        seg.index.retain(|&(o, _)| o <= offset);
        if offset < seg.first {
            // The whole segment went; it now starts empty at offset + 1.
            let new_path = self.dir.join("log").join(seg_name(offset + 1));
            std::fs::rename(&seg.path, &new_path)
                .map_err(|e| Error::io("renaming log segment", &seg.path, e))?;
            seg.path = new_path;
            seg.first = offset + 1;
        }
        seg.last = offset;
        seg.last_epoch = new_last.epoch;
        let path = seg.path.clone();
        inner.active = Arc::new(open_append(&path)?);
        sync_dir(&self.dir.join("log"))?;
        inner.last = new_last;
        inner.written = offset;
        inner.synced = offset;
        inner.truncations += 1;
        Ok(())
    }

    fn save_snapshot(&self, data: &SnapshotData) -> Result<(), Error> {
        let at = data.meta.at;
        let path = self.dir.join("snap").join(snap_name(at.offset));
        let _files = self.snapshot_files.lock();
        // Written without the log's lock: appends go on meanwhile.
        snapshot::write(&path, data)?;
        let mut inner = self.inner.lock();
        inner.snapshots.retain(|(o, _)| *o != at.offset);
        inner.snapshots.push((at.offset, path));
        inner.snapshots.sort();
        while inner.snapshots.len() > self.cfg.keep_snapshots.max(1) {
            let (_, old) = inner.snapshots.remove(0);
            std::fs::remove_file(&old).map_err(|e| Error::io("removing snapshot", &old, e))?;
        }
        if at > inner.snapshot_last {
            inner.snapshot_last = at;
        }
        self.compact(&mut inner)
    }

    fn install_snapshot(&self, data: &SnapshotData) -> Result<(), Error> {
        self.install(data, &mut || Ok(()))
    }

    fn newest_snapshot(&self) -> Result<Option<SnapshotData>, Error> {
        // Held while reading, so no save or install removes a file being read.
        let _files = self.snapshot_files.lock();
        let kept = self.inner.lock().snapshots.clone();
        for (offset, path) in kept.iter().rev() {
            let why = match snapshot::read(path) {
                Ok(data) if data.meta.at.offset == *offset => return Ok(Some(data)),
                Ok(data) => format!(
                    "snapshot {} is named for offset {offset} but holds {}",
                    path.display(),
                    data.meta.at.offset
                ),
                Err(e @ Error::CorruptSnapshot { .. }) => e.to_string(),
                Err(e) => return Err(e),
            };
            tracing::warn!(
                partition = self.partition,
                "refusing {why}; falling back to an older snapshot"
            );
        }
        Ok(None)
    }

    fn log_bytes(&self) -> u64 {
        self.inner.lock().segments.iter().map(|s| s.bytes).sum()
    }

    fn snapshot_offset(&self) -> u64 {
        self.inner.lock().snapshot_last.offset
    }

    fn durable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::KvState;
    use super::super::suite::{self, Backend, entries, framed, put};
    use super::*;

    struct Disk {
        dir: tempfile::TempDir,
        cfg: DiskStoreConfig,
        fresh: bool,
    }

    impl Disk {
        fn new(cfg: DiskStoreConfig) -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
                cfg,
                fresh: true,
            }
        }
        fn path(&self) -> PathBuf {
            self.dir.path().join("p0")
        }
    }

    impl Backend for Disk {
        fn open(&mut self) -> (Box<dyn LogStore>, Recovered) {
            if std::mem::take(&mut self.fresh) {
                // Each suite check wants a fresh store: start from an empty directory.
                std::fs::remove_dir_all(self.path()).ok();
            }
            let (store, recovered) =
                DiskStore::open(self.path(), 0, self.cfg).expect("open the store");
            (Box::new(store), recovered)
        }
    }

    /// Small segments, so the suite also crosses segment boundaries.
    fn small() -> DiskStoreConfig {
        DiskStoreConfig {
            segment_bytes: 4096,
            backlog_bytes: 8192,
            keep_snapshots: 2,
        }
    }

    struct Fresh(Disk);
    impl Backend for Fresh {
        fn open(&mut self) -> (Box<dyn LogStore>, Recovered) {
            self.0.fresh = true;
            self.0.open()
        }
    }

    #[test]
    fn disk_store_passes_the_shared_suite() {
        suite::run_all(&mut Fresh(Disk::new(small())));
        suite::run_all(&mut Fresh(Disk::new(DiskStoreConfig::default())));
    }

    #[test]
    fn disk_store_is_durable_across_reopening() {
        suite::run_durable(&mut Disk::new(small()));
        suite::run_durable(&mut Disk::new(DiskStoreConfig::default()));
    }

    fn write_log(disk: &Disk, count: u64) -> PathBuf {
        let (store, _) = DiskStore::open(disk.path(), 0, disk.cfg).expect("open");
        store.append(entries(1, 1, count)).expect("append");
        store.sync().expect("sync");
        let seg = list(&disk.path().join("log"), ".log").expect("list");
        seg.last().map(|(_, p)| p.clone()).expect("a segment")
    }

    #[test]
    fn a_torn_last_record_is_cut_and_recovery_ends_at_the_last_good_one() {
        let disk = Disk::new(DiskStoreConfig::default());
        let seg = write_log(&disk, 20);
        let len = std::fs::metadata(&seg).expect("meta").len();
        // A crash mid-write: the last record is only partly there.
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.set_len(len - 7).expect("tear");
        drop(f);
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        assert_eq!(store.last(), Position::new(1, 19));
        assert_eq!(recovered.entries.len(), 19);
        assert!(
            recovered.warnings.iter().any(|w| w.contains("torn record")),
            "{:?}",
            recovered.warnings
        );
        store
            .append(entries(1, 20, 1))
            .expect("appends continue at the cut");
        drop(store);
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("reopen");
        assert_eq!(store.last().offset, 20);
        assert!(recovered.warnings.is_empty(), "the cut was made durable");
    }

    #[test]
    fn a_flipped_byte_mid_segment_recovers_to_the_record_before_it() {
        let disk = Disk::new(DiskStoreConfig::default());
        let seg = write_log(&disk, 100);
        let mut bytes = std::fs::read(&seg).expect("read");
        // Find where entry 41 starts, and damage a byte inside it.
        let mut pos = 0;
        for _ in 0..40 {
            match record::decode(&bytes[pos..]) {
                Decoded::Record(_, used) => pos += used,
                other => panic!("unexpected {other:?}"),
            }
        }
        bytes[pos + 12] ^= 0x55;
        std::fs::write(&seg, &bytes).expect("write");
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        assert_eq!(store.last(), Position::new(1, 40), "the last good record");
        assert_eq!(recovered.entries.len(), 40);
        assert!(
            recovered.warnings.iter().any(|w| w.contains("checksum")),
            "{:?}",
            recovered.warnings
        );
        assert_eq!(
            std::fs::metadata(&seg).expect("meta").len(),
            pos as u64,
            "everything from the damage on was removed"
        );
    }

    #[test]
    fn damage_in_an_early_segment_removes_the_later_segments() {
        let disk = Disk::new(small());
        let (store, _) = DiskStore::open(disk.path(), 0, disk.cfg).expect("open");
        for batch in entries(1, 1, 400).chunks(10) {
            store.append(batch.to_vec()).expect("append");
        }
        drop(store);
        let segs = list(&disk.path().join("log"), ".log").expect("list");
        assert!(segs.len() >= 3, "small segments roll: {}", segs.len());
        let (_, second) = &segs[1];
        let mut bytes = std::fs::read(second).expect("read");
        bytes[20] ^= 1;
        std::fs::write(second, &bytes).expect("write");
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        assert_eq!(
            store.last().offset,
            segs[1].0 - 1,
            "ends where segment 2 began"
        );
        assert_eq!(recovered.entries.len() as u64, segs[1].0 - 1);
        let left = list(&disk.path().join("log"), ".log").expect("list");
        assert_eq!(
            left.len(),
            2,
            "the damaged segment is kept (cut), later ones removed"
        );
    }

    #[test]
    fn a_damaged_snapshot_is_refused_and_the_older_one_is_used() {
        let disk = Disk::new(DiskStoreConfig::default());
        let (store, s) = fill(&disk, 30, 30, |o| o == 10 || o == 20);
        drop(store);
        let newest = disk.path().join("snap").join(format!("{:020}.snap", 20));
        let mut bytes = std::fs::read(&newest).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&newest, &bytes).expect("write");

        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        let snap = recovered.snapshot.expect("the older snapshot");
        assert_eq!(snap.meta.at.offset, 10, "fell back to the older snapshot");
        assert_eq!(recovered.entries.first().map(|e| e.offset), Some(11));
        assert_eq!(store.last().offset, 30);
        assert!(
            recovered
                .warnings
                .iter()
                .any(|w| w.contains("corrupt snapshot")),
            "{:?}",
            recovered.warnings
        );
        assert!(
            newest.with_extension("snap.corrupt").exists(),
            "set aside, not loaded"
        );
        // Replaying the log over the older snapshot gives the same state as before.
        let mut again = super::super::KvState::from_snapshot(0, snap);
        for e in &recovered.entries {
            again.apply(e).expect("apply");
        }
        assert_eq!(again.digest(), s.digest());
    }

    #[test]
    fn without_a_valid_snapshot_or_the_full_log_recovery_fails_clearly() {
        let disk = Disk::new(small());
        let (store, _) = fill(&disk, 600, 20, |o| o % 20 == 0);
        assert!(store.first_offset() > 1, "old segments were dropped");
        drop(store);
        for (_, snap) in list(&disk.path().join("snap"), ".snap").expect("list") {
            let mut bytes = std::fs::read(&snap).expect("read");
            bytes[10] ^= 0xff;
            std::fs::write(&snap, &bytes).expect("write");
        }
        match DiskStore::open(disk.path(), 0, disk.cfg) {
            Err(Error::Unrecoverable { reason, .. }) => {
                assert!(reason.contains("every snapshot is damaged"), "{reason}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("recovered from damaged snapshots and a partial log"),
        }
    }

    /// Opens the store, appends `count` entries in batches of `chunk`, applies them to a state,
    /// and snapshots after every entry whose offset `snapshot_at` picks. Returns the open store
    /// and the state.
    fn fill(
        disk: &Disk,
        count: u64,
        chunk: usize,
        snapshot_at: impl Fn(u64) -> bool,
    ) -> (DiskStore, super::super::KvState) {
        let (store, _) = DiskStore::open(disk.path(), 0, disk.cfg).expect("open");
        let mut s = super::super::KvState::new(0);
        for batch in entries(1, 1, count).chunks(chunk) {
            store.append(batch.to_vec()).expect("append");
            for e in batch {
                s.apply(e).expect("apply");
                if snapshot_at(e.offset) {
                    store.save_snapshot(&s.snapshot()).expect("snapshot");
                }
            }
        }
        store.sync().expect("sync");
        (store, s)
    }

    fn flip_in(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[at] ^= 0x40;
        std::fs::write(path, &bytes).expect("write");
    }

    #[test]
    fn damage_behind_the_snapshot_keeps_every_entry_after_it() {
        let disk = Disk::new(DiskStoreConfig {
            segment_bytes: 4096,
            backlog_bytes: 1 << 30,
            keep_snapshots: 2,
        });
        drop(fill(&disk, 400, 10, |o| o == 300));
        let segs = list(&disk.path().join("log"), ".log").expect("list");
        assert!(segs.len() >= 4, "{} segments", segs.len());
        // Damage the first segment, wholly behind the snapshot at 300.
        flip_in(&segs[0].1, 30);
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        assert_eq!(
            store.last().offset,
            400,
            "every entry after the snapshot is kept"
        );
        assert_eq!(recovered.snapshot.map(|s| s.meta.at.offset), Some(300));
        assert_eq!(recovered.entries.first().map(|e| e.offset), Some(301));
        assert_eq!(recovered.entries.len(), 100);
        assert!(
            segs[0].1.with_extension("log.corrupt").exists(),
            "set aside, not deleted"
        );
    }

    #[test]
    fn damage_in_a_segment_spanning_the_snapshot_is_refused_not_deleted() {
        let disk = Disk::new(DiskStoreConfig {
            segment_bytes: 1 << 20,
            backlog_bytes: 1 << 30,
            keep_snapshots: 2,
        });
        drop(fill(&disk, 100, 10, |o| o == 60));
        let segs = list(&disk.path().join("log"), ".log").expect("list");
        assert_eq!(segs.len(), 1, "one segment holds offsets 1..=100");
        flip_in(&segs[0].1, 30);
        match DiskStore::open(disk.path(), 0, disk.cfg) {
            Err(Error::Unrecoverable { reason, .. }) => {
                assert!(reason.contains("behind the snapshot"), "{reason}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened a log whose entries after the snapshot cannot be read"),
        }
        assert!(segs[0].1.exists(), "nothing was deleted");
    }

    #[test]
    fn segments_are_dropped_only_behind_the_older_snapshot_and_the_backlog() {
        let disk = Disk::new(small());
        let (store, _) = fill(&disk, 2000, 25, |o| o % 500 == 0);
        let older_snapshot = 1500;
        let first = store.first_offset();
        assert!(first > 1, "something was dropped");
        assert!(
            first <= older_snapshot + 1,
            "the older snapshot can still recover"
        );
        let behind = store.log_bytes();
        assert!(
            behind >= disk.cfg.backlog_bytes,
            "the backlog window is kept: {behind} bytes"
        );
        let snaps = list(&disk.path().join("snap"), ".snap").expect("list");
        assert_eq!(
            snaps.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![1500, 2000],
            "two snapshots kept"
        );
        assert!(
            matches!(
                store.read(first - 1, usize::MAX),
                Err(Error::Trimmed { from, first: f, .. }) if from == first - 1 && f == first
            ),
            "a dropped offset is an error, not a silent jump"
        );
        assert_eq!(
            store
                .read(first, 1)
                .expect("read")
                .first()
                .map(|e| e.offset),
            Some(first)
        );
    }

    /// The history the install tests replace: 600 entries in small segments (the oldest of
    /// which are dropped), with snapshots at 200 and 400. Returns the open store, the entries and
    /// the snapshots.
    fn old_history(disk: &Disk) -> (DiskStore, Vec<LogEntry>, Vec<SnapshotData>) {
        std::fs::remove_dir_all(disk.path()).ok();
        let (store, _) = DiskStore::open(disk.path(), 0, disk.cfg).expect("open");
        let old = entries(1, 1, 600);
        let mut state = KvState::new(0);
        let mut snaps = Vec::new();
        for batch in old.chunks(20) {
            store.append(batch.to_vec()).expect("append");
            for e in batch {
                state.apply(e).expect("apply");
                if e.offset == 200 || e.offset == 400 {
                    snaps.push(state.snapshot());
                    store.save_snapshot(&state.snapshot()).expect("snapshot");
                }
            }
        }
        store.sync().expect("sync");
        assert!(
            store.first_offset() > 1,
            "the old log no longer starts at 1"
        );
        (store, old, snaps)
    }

    /// A snapshot of a history that diverges from [`old_history`] after offset 250.
    fn divergent_snapshot(old: &[LogEntry], at: u64) -> SnapshotData {
        let mut state = KvState::new(0);
        for e in &old[..250] {
            state.apply(e).expect("apply");
        }
        for offset in 251..=at {
            state.apply(&put(2, offset, 10)).expect("apply");
        }
        state.snapshot()
    }

    fn simulated_crash() -> Error {
        Error::io("simulated crash", "/", std::io::Error::other("crash"))
    }

    #[test]
    fn a_crash_at_any_step_of_an_install_recovers_one_history() {
        let disk = Disk::new(small());
        // Behind the old log's end and ahead of it.
        for new_at in [300, 900] {
            let (_, old, _) = old_history(&disk);
            let new = divergent_snapshot(&old, new_at);
            let mut seen = std::collections::BTreeSet::new();
            let mut step = 0;
            loop {
                let (store, old, old_snaps) = old_history(&disk);
                let mut points = 0;
                let result = store.install(&new, &mut || {
                    if points == step {
                        return Err(simulated_crash());
                    }
                    points += 1;
                    Ok(())
                });
                // A crash: the process goes, the directory stays as the last step left it.
                drop(store);
                let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg)
                    .unwrap_or_else(|e| panic!("a crash at step {step} is unrecoverable: {e}"));
                let from = match &recovered.snapshot {
                    Some(s) if *s == new => {
                        assert!(
                            recovered.entries.is_empty(),
                            "step {step}: old entries replayed on top of the new snapshot"
                        );
                        seen.insert("the new snapshot");
                        None
                    }
                    Some(s) => {
                        assert!(
                            old_snaps.contains(s),
                            "step {step}: recovered a snapshot of neither history"
                        );
                        seen.insert(if recovered.entries.is_empty() {
                            "an old snapshot alone"
                        } else {
                            "an old snapshot and old entries"
                        });
                        Some(s.meta.at.offset + 1)
                    }
                    None => {
                        seen.insert("nothing");
                        Some(1)
                    }
                };
                if let Some(from) = from {
                    // A consistent earlier state of the old history: its entries, contiguous.
                    let start = (from - 1) as usize;
                    let prefix = old.get(start..start + recovered.entries.len());
                    assert!(
                        prefix == Some(recovered.entries.as_slice()),
                        "step {step}: recovered entries are not the old history from {from}"
                    );
                }
                let last = recovered
                    .entries
                    .last()
                    .map(|e| Position::new(e.epoch, e.offset))
                    .or(recovered.snapshot.as_ref().map(|s| s.meta.at))
                    .unwrap_or_default();
                assert_eq!(store.last(), last, "step {step}");
                assert_eq!(
                    store.newest_snapshot().expect("newest snapshot"),
                    recovered.snapshot,
                    "step {step}"
                );
                if result.is_ok() {
                    assert_eq!(recovered.snapshot.as_ref(), Some(&new), "installed");
                    break;
                }
                step += 1;
            }
            assert_eq!(
                seen.into_iter().collect::<Vec<_>>(),
                vec![
                    "an old snapshot alone",
                    "an old snapshot and old entries",
                    "nothing",
                    "the new snapshot",
                ],
                "the crash points cover every kind of state ({step} points)"
            );
        }
    }

    #[test]
    fn a_failed_install_stops_appends_until_an_install_succeeds() {
        let disk = Disk::new(small());
        let (store, old, _) = old_history(&disk);
        let new = divergent_snapshot(&old, 300);
        let mut points = 0;
        let failed = store.install(&new, &mut || {
            points += 1;
            if points == 3 {
                Err(simulated_crash())
            } else {
                Ok(())
            }
        });
        assert!(failed.is_err());
        assert!(
            matches!(
                store.append(entries(1, 601, 1)),
                Err(Error::Unrecoverable { .. })
            ),
            "the files no longer match the old history: nothing is appended to it"
        );
        store.install_snapshot(&new).expect("a retry succeeds");
        store
            .append(entries(2, 301, 2))
            .expect("appends continue after the snapshot");
        drop(store);
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("reopen");
        assert_eq!(recovered.snapshot, Some(new));
        assert_eq!(
            recovered
                .entries
                .iter()
                .map(|e| e.offset)
                .collect::<Vec<_>>(),
            vec![301, 302]
        );
        assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        assert_eq!(store.last(), Position::new(2, 302));
    }

    #[test]
    fn a_snapshot_without_any_segment_recovers_and_the_log_continues_after_it() {
        let disk = Disk::new(small());
        let (store, state) = fill(&disk, 50, 10, |o| o == 50);
        drop(store);
        for (_, seg) in list(&disk.path().join("log"), ".log").expect("list") {
            std::fs::remove_file(&seg).expect("remove");
        }
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("recovers");
        assert_eq!(recovered.snapshot, Some(state.snapshot()));
        assert!(recovered.entries.is_empty());
        assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
        assert_eq!(store.last(), Position::new(1, 50));
        assert_eq!(store.first_offset(), 51);
        assert!(matches!(
            store.append(entries(1, 52, 1)),
            Err(Error::OffsetGap { expected: 51, .. })
        ));
        store
            .append(entries(1, 51, 3))
            .expect("the log continues at 51");
        drop(store);
        let (store, recovered) = DiskStore::open(disk.path(), 0, disk.cfg).expect("reopen");
        assert_eq!(
            recovered
                .entries
                .iter()
                .map(|e| e.offset)
                .collect::<Vec<_>>(),
            vec![51, 52, 53]
        );
        assert_eq!(store.last(), Position::new(1, 53));
    }

    #[test]
    fn newest_snapshot_never_returns_a_damaged_one() {
        let disk = Disk::new(DiskStoreConfig::default());
        let (store, state) = fill(&disk, 30, 30, |o| o == 10 || o == 20);
        let snap_dir = disk.path().join("snap");
        let (older, newest) = (snap_dir.join(snap_name(10)), snap_dir.join(snap_name(20)));
        assert_eq!(
            store.newest_snapshot().expect("load"),
            Some(snapshot::read(&newest).expect("read"))
        );
        let at_ten = snapshot::read(&older).expect("read");
        assert_eq!(at_ten.meta.at, Position::new(1, 10));
        let len = std::fs::metadata(&newest).expect("meta").len() as usize;
        flip_in(&newest, len / 2);
        assert_eq!(
            store.newest_snapshot().expect("load"),
            Some(at_ten),
            "the damaged newest is skipped for the older one"
        );
        flip_in(&older, 20);
        assert_eq!(
            store.newest_snapshot().expect("load"),
            None,
            "never a damaged one"
        );
        assert_eq!(store.last(), state.last(), "the log is untouched");
    }

    /// Bytes this thread has read through system calls so far: Linux's per-thread I/O account.
    #[cfg(target_os = "linux")]
    fn thread_read_bytes() -> u64 {
        std::fs::read_to_string("/proc/thread-self/io")
            .expect("per-thread I/O counters")
            .lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("rchar")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_bounded_read_reads_about_its_budget_not_the_segment() {
        let disk = Disk::new(DiskStoreConfig::default());
        let (store, _) = DiskStore::open(disk.path(), 0, disk.cfg).expect("open");
        let written: Vec<LogEntry> = (1..=20_000).map(|o| put(1, o, 200)).collect();
        for batch in written.chunks(1_000) {
            store.append(batch.to_vec()).expect("append");
        }
        store.sync().expect("sync");
        let segment = store.log_bytes();
        assert_eq!(
            list(&disk.path().join("log"), ".log").expect("list").len(),
            1,
            "one segment of {segment} bytes"
        );
        // Bounded by the budget, the largest read buffer and the headers stepped over.
        let slack = (READ_BUF.1 + INDEX_EVERY as usize * SKIP_BUF) as u64;
        for (from, budget) in [
            (10_000, 4_096),
            (10_017, 1),
            (1, 100_000),
            (19_990, 1 << 20),
        ] {
            let before = thread_read_bytes();
            let read = store.read(from, budget).expect("read");
            let used = thread_read_bytes() - before;
            assert_eq!(read.first().map(|e| e.offset), Some(from));
            assert!(read.len() == 1 || framed(&read) <= budget);
            assert!(
                used <= budget.min(segment as usize) as u64 + slack,
                "a read of {budget} bytes at {from} read {used} bytes of a {segment}-byte segment"
            );
        }
    }
}
