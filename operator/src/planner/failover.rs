//! Which replica replaces a lost primary (invariant 3 of DESIGN.md).
//!
//! The candidate is the reachable, in-sync replica with the highest (epoch, offset): within one
//! history every copy's log is a prefix of the primary's, so the highest position holds every
//! write any reachable copy holds.
//!
//! With `requireQuorum`, that is not enough: a write acknowledged at QUORUM is on a majority of
//! the `copies` (the lost primary possibly among them), so it is certainly on a reachable replica
//! only when the reachable replicas, and any majority, must share a copy. That needs
//! `copies - majority + 1` reachable replicas. With fewer, the planner promotes no one and says
//! why, rather than risk losing an acknowledged write.

use std::fmt;

/// What the operator observed of one replica of the partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The node.
    pub node: String,
    /// It answered its last status call within the timeout.
    pub reachable: bool,
    /// The lost primary counted it in sync when last seen (streaming, within the lag bound).
    pub in_sync: bool,
    /// Its last entry's epoch and offset.
    pub position: (u64, u64),
}

/// Why no replica may be promoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoCandidate {
    /// No replica answered.
    NoneReachable,
    /// Replicas answered, but none was in sync.
    NoneInSync,
    /// Too few replicas answered to be sure the best holds every QUORUM-acknowledged write.
    TooFewForQuorum {
        /// Replicas that answered.
        reachable: usize,
        /// Replicas that must answer.
        needed: usize,
    },
}

impl fmt::Display for NoCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoCandidate::NoneReachable => write!(f, "no replica is reachable"),
            NoCandidate::NoneInSync => write!(f, "no reachable replica was in sync"),
            NoCandidate::TooFewForQuorum { reachable, needed } => write!(
                f,
                "only {reachable} of the {needed} replicas needed to be sure of every QUORUM-acknowledged write are reachable (failover.requireQuorum)"
            ),
        }
    }
}

/// The replica to promote for a partition configured with `copies` copies (QUORUM is a majority
/// of it) whose primary is lost. `replicas` are every other copy in the map; during a move there
/// is one more of them than usual, and the quorum check counts it.
pub fn choose(
    replicas: &[Replica],
    copies: usize,
    require_quorum: bool,
) -> Result<&Replica, NoCandidate> {
    let reachable: Vec<&Replica> = replicas.iter().filter(|r| r.reachable).collect();
    if reachable.is_empty() {
        return Err(NoCandidate::NoneReachable);
    }
    if require_quorum {
        let majority = copies / 2 + 1;
        // Every copy that exists, the lost primary included, may hold the write.
        let existing = copies.max(replicas.len() + 1);
        let needed = existing.saturating_sub(majority) + 1;
        if reachable.len() < needed {
            return Err(NoCandidate::TooFewForQuorum {
                reachable: reachable.len(),
                needed,
            });
        }
    }
    reachable
        .into_iter()
        .filter(|r| r.in_sync)
        .max_by(|a, b| {
            a.position
                .cmp(&b.position)
                .then_with(|| b.node.cmp(&a.node))
        })
        .ok_or(NoCandidate::NoneInSync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(node: &str, reachable: bool, in_sync: bool, epoch: u64, offset: u64) -> Replica {
        Replica {
            node: node.into(),
            reachable,
            in_sync,
            position: (epoch, offset),
        }
    }

    #[test]
    fn the_reachable_in_sync_replica_with_the_highest_position_wins() {
        let rs = [
            r("a", true, true, 3, 90),
            r("b", true, true, 4, 10),
            r("c", false, true, 4, 99),
        ];
        assert_eq!(choose(&rs, 4, false).unwrap().node, "b");
        let rs = [r("a", true, true, 3, 90), r("b", true, false, 4, 10)];
        assert_eq!(choose(&rs, 3, false).unwrap().node, "a");
    }

    #[test]
    fn with_require_quorum_too_few_reachable_replicas_promote_no_one() {
        // Three copies: a QUORUM write is on 2, perhaps the lost primary and one replica, so
        // both replicas must answer.
        let rs = [r("a", true, true, 1, 5), r("b", false, true, 1, 9)];
        assert_eq!(
            choose(&rs, 3, true),
            Err(NoCandidate::TooFewForQuorum {
                reachable: 1,
                needed: 2
            })
        );
        assert_eq!(choose(&rs, 3, false).unwrap().node, "a");
        // Five copies: a QUORUM write is on 3; any 3 of the 4 replicas share one with it.
        let rs = [
            r("a", true, true, 1, 5),
            r("b", true, true, 1, 7),
            r("c", true, true, 1, 6),
            r("d", false, true, 1, 9),
        ];
        assert_eq!(choose(&rs, 5, true).unwrap().node, "b");
        assert_eq!(choose(&[], 3, false), Err(NoCandidate::NoneReachable));
        assert_eq!(
            choose(&[r("a", true, false, 1, 1)], 2, true),
            Err(NoCandidate::NoneInSync)
        );
    }

    proptest! {
        /// Whatever subset of copies holds a QUORUM-acknowledged write (a majority, the lost
        /// primary possibly among them), the chosen replica holds it whenever one is chosen
        /// under requireQuorum.
        #[test]
        fn a_chosen_replica_holds_every_quorum_acknowledged_write(
            copies in 2usize..7,
            holders in proptest::collection::vec(any::<bool>(), 7),
            reachable in proptest::collection::vec(any::<bool>(), 7),
            offsets in proptest::collection::vec(0u64..100, 7),
        ) {
            let majority = copies / 2 + 1;
            // Copy 0 is the lost primary, which holds the write at offset 100; replicas that
            // hold it are at 100 or beyond, the others below.
            let mut held: Vec<bool> = holders[..copies].to_vec();
            held[0] = true;
            let mut i = 1;
            while held.iter().filter(|h| **h).count() < majority {
                held[i] = true;
                i += 1;
            }
            let replicas: Vec<Replica> = (1..copies)
                .map(|k| r(
                    &format!("n{k}"),
                    reachable[k],
                    true,
                    1,
                    if held[k] { 100 + offsets[k] } else { offsets[k] },
                ))
                .collect();
            if let Ok(chosen) = choose(&replicas, copies, true) {
                prop_assert!(chosen.position.1 >= 100, "{chosen:?} lacks the write");
            }
        }
    }
}
