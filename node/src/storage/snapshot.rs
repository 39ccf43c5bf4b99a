//! The snapshot file format, and writing it atomically.
//!
//! ```text
//! "PTSNAP01"                      magic and version
//! u32 LE  header length
//! header  protobuf SnapshotBegin: position, epoch history, key count
//! records length-delimited protobuf KeyValue, in key order
//! u64 LE  record count
//! u32 LE  CRC32C of every byte above
//! "PTSNEND1"                      end marker
//! ```
//!
//! The whole-file checksum is verified before anything is decoded, so a damaged snapshot is
//! refused, never partly loaded. Writing goes to a temporary file that is synced, renamed over
//! the final name and followed by a sync of the directory, so a crash leaves either the old
//! snapshot or the new one.

use super::Position;
use super::state::Item;
use crate::Error;
use crate::proto::{KeyValue, SnapshotBegin};
use bytes::Bytes;
use prost::Message;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"PTSNAP01";
const END: &[u8; 8] = b"PTSNEND1";
const TRAILER_LEN: usize = 8 + 4 + 8;

/// What a snapshot is of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The position the snapshot is consistent at.
    pub at: Position,
    /// The epoch history up to `at`: (epoch, first offset written in it).
    pub epoch_history: Vec<(u64, u64)>,
}

/// A snapshot: its position and every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotData {
    /// What the snapshot is of.
    pub meta: SnapshotMeta,
    /// Every key with its value and expiry, in no particular order.
    pub items: Vec<(Bytes, Item)>,
}

fn header(meta: &SnapshotMeta, keys: u64) -> SnapshotBegin {
    SnapshotBegin {
        epoch: meta.at.epoch,
        at: Some(meta.at.proto()),
        epoch_history: super::epoch_history_proto(&meta.epoch_history),
        total_keys: keys,
        total_bytes: 0,
        total_chunks: 0,
        crc32c: 0,
    }
}

/// A writer that checksums what passes through it.
struct Crc<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `snapshot` to `path` atomically (temporary file, sync, rename, directory sync).
pub fn write(path: &Path, snapshot: &SnapshotData) -> Result<(), Error> {
    let tmp = path.with_extension("snap.tmp");
    let io = |context| move |e| Error::io(context, path, e);
    let file = File::create(&tmp).map_err(io("creating snapshot"))?;
    let mut out = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
    };
    let head = header(&snapshot.meta, snapshot.items.len() as u64).encode_to_vec();
    let mut record = Vec::with_capacity(256);
    (|| -> std::io::Result<()> {
        out.write_all(MAGIC)?;
        out.write_all(&(head.len() as u32).to_le_bytes())?;
        out.write_all(&head)?;
        for (key, item) in &snapshot.items {
            record.clear();
            KeyValue {
                key: key.to_vec(),
                value: item.value.to_vec(),
                expire_at_ms: item.expire_at_ms,
            }
            .encode_length_delimited(&mut record)
            .map_err(std::io::Error::other)?;
            out.write_all(&record)?;
        }
        out.write_all(&(snapshot.items.len() as u64).to_le_bytes())?;
        let crc = out.crc;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(END)?;
        out.flush()
    })()
    .map_err(io("writing snapshot"))?;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| Error::io("writing snapshot", path, e.into_error()))?;
    file.sync_all().map_err(io("syncing snapshot"))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("renaming snapshot into place"))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Syncs a directory, so a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Reads and verifies the snapshot at `path`. Any damage is [`Error::CorruptSnapshot`].
pub fn read(path: &Path) -> Result<SnapshotData, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading snapshot", path, e))?;
    decode(&bytes).map_err(|reason| Error::CorruptSnapshot {
        path: path.to_path_buf(),
        reason,
    })
}

fn decode(bytes: &[u8]) -> Result<SnapshotData, String> {
    if bytes.len() < MAGIC.len() + 4 + TRAILER_LEN {
        return Err(format!("too short ({} bytes)", bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err("bad magic: not a Partita snapshot, or an unknown version".into());
    }
    if &bytes[bytes.len() - 8..] != END {
        return Err("missing end marker: the file is truncated".into());
    }
    let crc_at = bytes.len() - 12;
    let stored = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    let actual = crc32c::crc32c(&bytes[..crc_at]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    let count_at = bytes.len() - TRAILER_LEN;
    let mut count_bytes = [0u8; 8];
    count_bytes.copy_from_slice(&bytes[count_at..count_at + 8]);
    let count = u64::from_le_bytes(count_bytes);

    let head_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let head_end = 12usize
        .checked_add(head_len)
        .filter(|&e| e <= count_at)
        .ok_or("header length runs past the records")?;
    let head = SnapshotBegin::decode(&bytes[12..head_end]).map_err(|e| e.to_string())?;
    let at = head.at.unwrap_or_default();
    let meta = SnapshotMeta {
        at: Position::new(at.epoch, at.offset),
        epoch_history: head
            .epoch_history
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect(),
    };
    let mut items = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
    let mut rest = &bytes[head_end..count_at];
    while !rest.is_empty() {
        let kv = KeyValue::decode_length_delimited(&mut rest).map_err(|e| e.to_string())?;
        items.push((
            Bytes::from(kv.key),
            Item {
                value: Bytes::from(kv.value),
                expire_at_ms: kv.expire_at_ms,
            },
        ));
    }
    if items.len() as u64 != count || head.total_keys != count {
        return Err(format!(
            "holds {} keys, but its header says {} and its trailer {count}",
            items.len(),
            head.total_keys
        ));
    }
    Ok(SnapshotData { meta, items })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotData {
        let mut items = Vec::new();
        for i in 0..50u32 {
            items.push((
                Bytes::from(format!("key:{i:04}")),
                Item {
                    value: Bytes::from(vec![i as u8; (i % 7) as usize]),
                    expire_at_ms: if i % 3 == 0 { 1_900_000_000_000 } else { 0 },
                },
            ));
        }
        SnapshotData {
            meta: SnapshotMeta {
                at: Position::new(3, 120),
                epoch_history: vec![(1, 1), (3, 100)],
            },
            items,
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.snap");
        write(&path, &sample()).expect("write");
        assert_eq!(read(&path).expect("read"), sample());
        assert!(
            !dir.path().join("a.snap.tmp").exists(),
            "the temporary file was renamed away"
        );
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.snap");
        write(&path, &sample()).expect("write");
        let good = std::fs::read(&path).expect("read");
        // Every position, one bit each: the check must not depend on where the damage is.
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at byte {at} was accepted");
        }
    }

    #[test]
    fn a_truncated_snapshot_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.snap");
        write(&path, &sample()).expect("write");
        let good = std::fs::read(&path).expect("read");
        for keep in [0, 7, 20, good.len() / 2, good.len() - 1] {
            assert!(
                decode(&good[..keep]).is_err(),
                "truncation to {keep} accepted"
            );
        }
    }
}
