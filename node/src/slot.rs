//! Keys to hash slots, and hash slots to partitions.
//!
//! Keys map to slots exactly as Redis Cluster maps them (CRC16/XMODEM of the key, or of its
//! `{hash tag}`, mod 16384), so that Redis Cluster clients can be served. Slots map to partitions
//! in contiguous, near-equal ranges: with N partitions, partition p owns the slots from
//! `p * 16384 / N` up to (not including) `(p + 1) * 16384 / N`. Contiguous ranges keep
//! `CLUSTER SLOTS` answers short, one range per partition.

use crate::Error;

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: u32 = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster uses for slots.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: the content of the first `{...}` if it is non-empty,
/// otherwise the whole key (Redis Cluster's hash tag rule).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// The hash slot of a key, in `0..16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    // SLOTS is a power of two, so the mask is the modulus.
    crc16(hash_tag(key)) & (SLOTS as u16 - 1)
}

/// How the 16384 slots are divided among a fixed number of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotMap {
    partitions: u32,
}

impl SlotMap {
    /// A map for `partitions` partitions; between 1 and 16384, so every partition owns a slot.
    pub fn new(partitions: u32) -> Result<Self, Error> {
        if partitions == 0 || partitions > SLOTS {
            return Err(Error::InvalidPartitionCount {
                got: partitions,
                max: SLOTS,
            });
        }
        Ok(Self { partitions })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// First slot owned by partition `p`; for `p == partitions` this is 16384 (one past the end).
    fn start(&self, p: u32) -> u32 {
        // u64: 16384 * 16384 does not fit comfortably in u32 arithmetic on every path.
        (u64::from(p) * u64::from(SLOTS) / u64::from(self.partitions)) as u32
    }

    /// The inclusive slot range `(first, last)` of partition `p`, or `None` if `p` is out of range.
    pub fn slot_range(&self, p: u32) -> Option<(u16, u16)> {
        if p >= self.partitions {
            return None;
        }
        Some((self.start(p) as u16, (self.start(p + 1) - 1) as u16))
    }

    /// The partition that owns `slot` (taken mod 16384).
    pub fn partition_of_slot(&self, slot: u16) -> u32 {
        let slot = u64::from(u32::from(slot) % SLOTS);
        // The largest p with p * SLOTS / N <= slot.
        (((slot + 1) * u64::from(self.partitions) - 1) / u64::from(SLOTS)) as u32
    }

    /// The partition that owns `key`.
    pub fn partition_of_key(&self, key: &[u8]) -> u32 {
        self.partition_of_slot(key_slot(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_matches_the_redis_cluster_reference_values() {
        // The check value of CRC16/XMODEM, and slots Redis itself reports (CLUSTER KEYSLOT).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
    }

    #[test]
    fn hash_tags_follow_the_redis_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(
            hash_tag(b"foo{}{bar}"),
            b"foo{}{bar}",
            "empty first tag hashes whole key"
        );
        assert_eq!(
            hash_tag(b"foo{{bar}}zap"),
            b"{bar",
            "from the first {{ to the first }} after it"
        );
        assert_eq!(
            hash_tag(b"foo{bar}{zap}"),
            b"bar",
            "only the first tag counts"
        );
        assert_eq!(hash_tag(b"nobraces"), b"nobraces");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
    }

    #[test]
    fn partition_counts_outside_the_slot_range_are_refused() {
        assert!(matches!(
            SlotMap::new(0),
            Err(Error::InvalidPartitionCount { got: 0, max: SLOTS })
        ));
        assert!(SlotMap::new(SLOTS + 1).is_err());
        assert!(SlotMap::new(1).is_ok());
        assert!(SlotMap::new(SLOTS).is_ok());
    }

    #[test]
    fn one_partition_owns_every_slot_and_16384_own_one_each() -> Result<(), Error> {
        let one = SlotMap::new(1)?;
        assert_eq!(one.slot_range(0), Some((0, 16383)));
        assert_eq!(one.partition_of_slot(16383), 0);
        let all = SlotMap::new(SLOTS)?;
        assert_eq!(all.slot_range(42), Some((42, 42)));
        assert_eq!(all.partition_of_slot(42), 42);
        assert_eq!(all.slot_range(SLOTS), None);
        Ok(())
    }

    proptest! {
        #[test]
        fn slot_ranges_tile_the_slot_space(n in 1u32..=SLOTS) {
            let map = SlotMap::new(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut next = 0u32;
            let (mut smallest, mut largest) = (u32::MAX, 0u32);
            for p in 0..n {
                let (first, last) = map.slot_range(p).ok_or_else(|| TestCaseError::fail("no range"))?;
                prop_assert_eq!(u32::from(first), next, "ranges are contiguous");
                prop_assert!(first <= last);
                let len = u32::from(last) - u32::from(first) + 1;
                smallest = smallest.min(len);
                largest = largest.max(len);
                prop_assert_eq!(map.partition_of_slot(first), p);
                prop_assert_eq!(map.partition_of_slot(last), p);
                next = u32::from(last) + 1;
            }
            prop_assert_eq!(next, SLOTS, "ranges cover every slot");
            prop_assert!(largest - smallest <= 1, "ranges differ in size by at most one");
        }

        #[test]
        fn every_slot_maps_into_its_partitions_range(n in 1u32..=SLOTS, slot in 0u16..16384) {
            let map = SlotMap::new(n).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let p = map.partition_of_slot(slot);
            prop_assert!(p < n);
            let (first, last) = map.slot_range(p).ok_or_else(|| TestCaseError::fail("no range"))?;
            prop_assert!(first <= slot && slot <= last);
        }
    }
}
