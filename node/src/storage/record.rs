//! Framing of log records on disk: `[len: u32 LE][crc32c: u32 LE][payload: len bytes]`, where
//! the payload is a protobuf `LogEntry`. The checksum covers the payload, so a torn write (a
//! short payload) and a flipped bit are both caught; the length is bounded, so a corrupt length
//! cannot make recovery allocate gigabytes.

use crate::proto::LogEntry;
use prost::Message;

/// Bytes of the frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload a record may carry. Far above any request limit; a larger length field can
/// only be corruption.
pub const MAX_RECORD_LEN: usize = 256 * 1024 * 1024;

/// Appends one framed record holding `entry` to `out`.
pub fn encode(entry: &LogEntry, out: &mut Vec<u8>) {
    let len = entry.encoded_len();
    out.reserve(HEADER_LEN + len);
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    // Encoding into a Vec cannot fail: Vec grows as needed.
    let _ = entry.encode(out);
    let payload = &out[start + HEADER_LEN..];
    let crc = crc32c::crc32c(payload);
    let payload_len = payload.len() as u32;
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading one record from the front of a buffer found.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A whole, valid record, and the bytes it took.
    Record(LogEntry, usize),
    /// The buffer ends inside a record: a torn write if this is the end of the file.
    Incomplete,
    /// The record is damaged: the reason.
    Corrupt(String),
}

/// Reads the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_LEN {
        return Decoded::Corrupt(format!("record length {len} exceeds {MAX_RECORD_LEN}"));
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    let actual = crc32c::crc32c(payload);
    if actual != crc {
        return Decoded::Corrupt(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    match LogEntry::decode(payload) {
        Ok(entry) => Decoded::Record(entry, HEADER_LEN + len),
        Err(e) => Decoded::Corrupt(format!("undecodable entry: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64) -> LogEntry {
        LogEntry {
            epoch: 1,
            offset,
            timestamp_ms: 5,
            command: vec![1, 2, 3],
            crc32c: crc32c::crc32c(&[1, 2, 3]),
        }
    }

    #[test]
    fn a_record_round_trips_and_reports_its_length() {
        let mut buf = Vec::new();
        encode(&entry(7), &mut buf);
        encode(&entry(8), &mut buf);
        let Decoded::Record(first, used) = decode(&buf) else {
            panic!("first record")
        };
        assert_eq!(first, entry(7));
        assert_eq!(
            decode(&buf[used..]),
            Decoded::Record(entry(8), buf.len() - used)
        );
    }

    #[test]
    fn every_truncation_of_a_record_is_incomplete() {
        let mut buf = Vec::new();
        encode(&entry(1), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_single_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(&entry(1), &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[byte] ^= 1 << bit;
                match decode(&damaged) {
                    Decoded::Record(e, _) => panic!("flip at {byte}.{bit} decoded as {e:?}"),
                    Decoded::Corrupt(_) | Decoded::Incomplete => {}
                }
            }
        }
    }

    #[test]
    fn an_absurd_length_is_corruption_not_an_allocation() {
        let mut buf = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
        buf.extend_from_slice(&[0; 16]);
        assert!(matches!(decode(&buf), Decoded::Corrupt(_)));
    }
}
