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
//!
//! The map can be behind the roles: after a promote, until the next push. A node's own role at
//! a newer epoch than the map's route wins: a new primary serves its partition, and a copy that
//! follows a newer primary sends clients there.

use crate::proto::NodeAddress;
use crate::slot::SlotMap;
use crate::topology::Map;

/// The role of this node's own copy of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocalRole {
    /// It leads the partition.
    Primary,
    /// It follows this primary.
    Replica(NodeAddress),
    /// Fenced, unassigned, or no copy: it serves nothing.
    #[default]
    Neither,
}

/// What this node's own copy of a partition says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// Its role.
    pub role: LocalRole,
    /// The epoch it holds.
    pub epoch: u64,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve it here.
    Here,
    /// The slot's primary is elsewhere.
    Moved {
        /// The hash slot.
        slot: u16,
        /// The primary.
        primary: NodeAddress,
    },
    /// The keys hash to more than one slot.
    CrossSlot,
    /// The slot's partition has no primary in the map.
    Down {
        /// The hash slot.
        slot: u16,
    },
}

/// Routes a command on `slots` (one per key; empty for a keyless command) at node `here`,
/// whose copy of the slots' partition is `local` (`local(partition)`). `write` says whether it
/// writes, `readonly` whether the connection sent READONLY (or, on gRPC, the read allows any
/// copy).
pub fn route(
    map: Option<&Map>,
    slot_map: &SlotMap,
    here: &str,
    slots: &[u16],
    write: bool,
    readonly: bool,
    local: impl FnOnce(u32) -> Local,
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
    let local = local(partition);
    if local.epoch > r.epoch {
        // The roles moved on since the map was pushed: this copy's role decides.
        return match local.role {
            LocalRole::Primary => Route::Here,
            LocalRole::Replica(_) if !write && readonly => Route::Here,
            LocalRole::Replica(followed) => match reachable(map, followed) {
                Some(primary) => Route::Moved { slot, primary },
                None => Route::Down { slot },
            },
            // A fenced or dropped copy may hold writes a failover discarded: never serve them.
            LocalRole::Neither => Route::Down { slot },
        };
    }
    if r.primary == here || (!write && readonly && r.replicas.iter().any(|id| id == here)) {
        return Route::Here;
    }
    match map.primary(partition) {
        Some(primary) => Route::Moved {
            slot,
            primary: primary.clone(),
        },
        None => Route::Down { slot },
    }
}

/// The followed primary with its RESP address, which a role may lack: the map's entry for the
/// same node (by id, else gRPC address) fills it in.
fn reachable(map: &Map, followed: NodeAddress) -> Option<NodeAddress> {
    if !followed.resp_addr.is_empty() {
        return Some(followed);
    }
    map.topology()
        .nodes
        .iter()
        .find(|n| {
            (!followed.node_id.is_empty() && n.node_id == followed.node_id)
                || (!followed.grpc_addr.is_empty() && n.grpc_addr == followed.grpc_addr)
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::key_slot;
    use crate::topology::fixture::two_partitions;

    /// A copy whose role is no newer than the map.
    fn stale(_: u32) -> Local {
        Local::default()
    }

    /// Two partitions: 0 led by a (replica b), 1 led by `primary_of_1` (replica a); c holds
    /// nothing.
    fn map(primary_of_1: &str) -> (Map, SlotMap) {
        let m = two_partitions("127.0.0.1", &["a", "b", "c"], primary_of_1, (1, 1), 1);
        (m, SlotMap::new(2).unwrap())
    }

    #[test]
    fn keys_go_to_their_slots_primary() {
        let (m, s) = map("b");
        assert_eq!(
            route(Some(&m), &s, "a", &[100], true, false, stale),
            Route::Here
        );
        assert_eq!(
            route(Some(&m), &s, "a", &[9000], true, false, stale),
            Route::Moved {
                slot: 9000,
                primary: m.node("b").unwrap().clone()
            }
        );
        assert_eq!(
            route(Some(&m), &s, "c", &[100], false, false, stale),
            Route::Moved {
                slot: 100,
                primary: m.node("a").unwrap().clone()
            }
        );
    }

    #[test]
    fn readonly_connections_read_from_replicas_but_never_write() {
        let (m, s) = map("b");
        assert_eq!(
            route(Some(&m), &s, "a", &[9000], false, true, stale),
            Route::Here
        );
        assert!(matches!(
            route(Some(&m), &s, "a", &[9000], true, true, stale),
            Route::Moved { .. }
        ));
        assert!(matches!(
            route(Some(&m), &s, "c", &[9000], false, true, stale),
            Route::Moved { .. }
        ));
    }

    #[test]
    fn keys_of_two_slots_are_refused_and_hash_tags_keep_them_together() {
        let (m, s) = map("b");
        let a = key_slot(b"{user1}:name");
        let b = key_slot(b"{user1}:email");
        assert_eq!(a, b);
        assert_eq!(
            route(Some(&m), &s, "a", &[a, b], true, false, stale).clone(),
            { route(Some(&m), &s, "a", &[a], true, false, stale) }
        );
        let other = key_slot(b"user2");
        assert_ne!(a, other);
        assert_eq!(
            route(Some(&m), &s, "a", &[a, other], true, false, stale),
            Route::CrossSlot
        );
    }

    #[test]
    fn without_a_map_or_keys_everything_is_served_here_and_a_leaderless_slot_is_down() {
        let (m, s) = map("b");
        assert_eq!(
            route(None, &s, "a", &[9000], true, false, stale),
            Route::Here
        );
        assert_eq!(
            route(Some(&m), &s, "c", &[], true, false, stale),
            Route::Here
        );
        let (m, s) = map("");
        assert_eq!(
            route(Some(&m), &s, "a", &[9000], true, false, stale),
            Route::Down { slot: 9000 }
        );
    }

    #[test]
    fn a_role_newer_than_the_map_wins_until_the_next_push() {
        let (m, s) = map("b");
        // c was promoted for partition 1 at epoch 2; the map (epoch 1) still names b.
        let promoted = |_| Local {
            role: LocalRole::Primary,
            epoch: 2,
        };
        assert_eq!(
            route(Some(&m), &s, "c", &[9000], true, false, promoted),
            Route::Here
        );
        // b now follows c at epoch 2: it sends clients to c, not to itself.
        let c = NodeAddress {
            node_id: "c".into(),
            grpc_addr: "127.0.0.1:7003".into(),
            resp_addr: "127.0.0.1:6003".into(),
        };
        let follows = |_| Local {
            role: LocalRole::Replica(c.clone()),
            epoch: 2,
        };
        assert_eq!(
            route(Some(&m), &s, "b", &[9000], true, false, follows),
            Route::Moved {
                slot: 9000,
                primary: c.clone()
            }
        );
        // A role at the map's epoch changes nothing.
        let same = |_| Local {
            role: LocalRole::Primary,
            epoch: 1,
        };
        assert!(matches!(
            route(Some(&m), &s, "c", &[9000], true, false, same),
            Route::Moved { .. }
        ));
    }

    #[test]
    fn a_fenced_copy_newer_than_the_map_serves_nothing_and_a_bare_follow_is_resolved() {
        let (m, s) = map("b");
        // b was the primary at epoch 1, saw epoch 2 and stepped down (fenced).
        let fenced = |_| Local {
            role: LocalRole::Neither,
            epoch: 2,
        };
        for (write, readonly) in [(true, false), (false, false), (false, true)] {
            assert_eq!(
                route(Some(&m), &s, "b", &[9000], write, readonly, fenced),
                Route::Down { slot: 9000 }
            );
        }
        // A follow that named only the primary's id and gRPC address: the map has its RESP one.
        let bare = NodeAddress {
            node_id: "a".into(),
            grpc_addr: String::new(),
            resp_addr: String::new(),
        };
        let follows = |_| Local {
            role: LocalRole::Replica(bare.clone()),
            epoch: 2,
        };
        assert_eq!(
            route(Some(&m), &s, "b", &[9000], true, false, follows),
            Route::Moved {
                slot: 9000,
                primary: m.node("a").unwrap().clone()
            }
        );
        let unknown = |_| Local {
            role: LocalRole::Replica(NodeAddress {
                node_id: "zed".into(),
                grpc_addr: String::new(),
                resp_addr: String::new(),
            }),
            epoch: 2,
        };
        assert_eq!(
            route(Some(&m), &s, "b", &[9000], true, false, unknown),
            Route::Down { slot: 9000 }
        );
    }
}
