//! Where a request belongs, decided from the partition map the node holds: here, or at another
//! node (`-MOVED`), or nowhere because its keys span slots (`-CROSSSLOT`) or its slot has no
//! primary (`-CLUSTERDOWN`). Pure, so every rule is tested without sockets.
//!
//! The rules follow Redis Cluster, which clients already implement:
//! - every key of one command must hash to one slot;
//! - a slot is served by its partition's primary;
//! - a connection that sent READONLY may also read from a replica of the slot's partition.
//!
//! A node without a map (a standalone node, or one not yet told) serves everything itself, and
//! its roles alone decide what it accepts.

use crate::slot::SlotMap;
use crate::topology::Map;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve it here.
    Here,
    /// The slot's primary is elsewhere: its RESP address.
    Moved {
        /// The hash slot.
        slot: u16,
        /// `host:port` of the primary's RESP listener.
        addr: String,
    },
    /// The keys hash to more than one slot.
    CrossSlot,
    /// The slot's partition has no primary in the map.
    Down {
        /// The hash slot.
        slot: u16,
    },
}

/// Routes a command on `slots` (one per key; empty for a keyless command) at node `here`.
/// `write` says whether it writes, `readonly` whether the connection sent READONLY.
pub fn route(
    map: Option<&Map>,
    slot_map: &SlotMap,
    here: &str,
    slots: &[u16],
    write: bool,
    readonly: bool,
) -> Route {
    let (Some(map), Some(&slot)) = (map, slots.first()) else {
        return Route::Here;
    };
    if slots.iter().any(|s| *s != slot) {
        return Route::CrossSlot;
    }
    let partition = slot_map.partition_of_slot(slot);
    let Some(r) = map.route(partition) else {
        return Route::Down { slot };
    };
    if r.primary == here || (!write && readonly && r.replicas.iter().any(|id| id == here)) {
        return Route::Here;
    }
    match map.primary(partition) {
        Some(primary) => Route::Moved {
            slot,
            addr: primary.resp_addr.clone(),
        },
        None => Route::Down { slot },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::key_slot;
    use crate::topology::fixture::two_partitions;

    /// Two partitions: 0 led by a (replica b), 1 led by `primary_of_1` (replica a); c holds
    /// nothing.
    fn map(primary_of_1: &str) -> (Map, SlotMap) {
        let m = two_partitions("127.0.0.1", &["a", "b", "c"], primary_of_1, (1, 1), 1);
        (m, SlotMap::new(2).unwrap())
    }

    #[test]
    fn keys_go_to_their_slots_primary() {
        let (m, s) = map("b");
        assert_eq!(route(Some(&m), &s, "a", &[100], true, false), Route::Here);
        assert_eq!(
            route(Some(&m), &s, "a", &[9000], true, false),
            Route::Moved {
                slot: 9000,
                addr: "127.0.0.1:6002".into()
            }
        );
        assert_eq!(
            route(Some(&m), &s, "c", &[100], false, false),
            Route::Moved {
                slot: 100,
                addr: "127.0.0.1:6001".into()
            }
        );
    }

    #[test]
    fn readonly_connections_read_from_replicas_but_never_write() {
        let (m, s) = map("b");
        assert_eq!(route(Some(&m), &s, "a", &[9000], false, true), Route::Here);
        assert!(matches!(
            route(Some(&m), &s, "a", &[9000], true, true),
            Route::Moved { .. }
        ));
        assert!(matches!(
            route(Some(&m), &s, "c", &[9000], false, true),
            Route::Moved { .. }
        ));
    }

    #[test]
    fn keys_of_two_slots_are_refused_and_hash_tags_keep_them_together() {
        let (m, s) = map("b");
        let a = key_slot(b"{user1}:name");
        let b = key_slot(b"{user1}:email");
        assert_eq!(a, b);
        assert_eq!(route(Some(&m), &s, "a", &[a, b], true, false).clone(), {
            route(Some(&m), &s, "a", &[a], true, false)
        });
        let other = key_slot(b"user2");
        assert_ne!(a, other);
        assert_eq!(
            route(Some(&m), &s, "a", &[a, other], true, false),
            Route::CrossSlot
        );
    }

    #[test]
    fn without_a_map_or_keys_everything_is_served_here_and_a_leaderless_slot_is_down() {
        let (m, s) = map("b");
        assert_eq!(route(None, &s, "a", &[9000], true, false), Route::Here);
        assert_eq!(route(Some(&m), &s, "c", &[], true, false), Route::Here);
        let (m, s) = map("");
        assert_eq!(
            route(Some(&m), &s, "a", &[9000], true, false),
            Route::Down { slot: 9000 }
        );
    }
}
