//! How a primary answers a replica's hello: continue from its log, truncate a divergent tail,
//! or send a snapshot. A pure function with a table of tests, because every other guarantee of
//! replication rests on it (DESIGN.md, invariant 2).
//!
//! Epochs have one writer each (invariant 1), so two copies that hold an entry of the same
//! epoch at the same offset hold the same entry, and the same history before it. The histories
//! therefore agree up to the highest offset at which both have an entry of the same epoch; the
//! epoch histories (where each epoch starts) are enough to find it, as Kafka's leader epochs
//! and Raft's log matching do.

use crate::storage::Position;

/// What the primary knows about its own history.
#[derive(Debug, Clone)]
pub struct PrimaryView<'a> {
    /// The epoch the primary holds.
    pub epoch: u64,
    /// Its last entry.
    pub last: Position,
    /// The first offset its log still holds (entries before it are only in snapshots).
    pub log_start: u64,
    /// Its epoch history: (epoch, first offset), oldest first.
    pub history: &'a [(u64, u64)],
}

/// What the replica said in its hello.
#[derive(Debug, Clone)]
pub struct HelloView<'a> {
    /// The epoch the replica was told to follow at.
    pub epoch: u64,
    /// Its last entry.
    pub last: Position,
    /// Its epoch history.
    pub history: &'a [(u64, u64)],
}

/// The primary's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The replica's history is a prefix of ours: entries after `offset` follow.
    Continue {
        /// The replica's last offset.
        offset: u64,
    },
    /// The replica's history diverged after `offset`: it drops the rest, entries follow.
    TruncateTo {
        /// The last offset both histories agree on.
        offset: u64,
    },
    /// The log no longer holds what the replica needs: a snapshot follows.
    Snapshot,
    /// The replica follows at an older epoch than ours: refuse (STALE_EPOCH).
    StaleReplica,
    /// The replica follows at a newer epoch than ours: we are a stale primary and step down.
    StepDown {
        /// The newer epoch.
        epoch: u64,
    },
}

/// The offsets `[start, end]` that `epoch` covers in `history`, given the history's last
/// offset. `None` when the epoch wrote nothing in this history.
fn epoch_range(history: &[(u64, u64)], last: u64, epoch: u64) -> Option<(u64, u64)> {
    let i = history.iter().position(|&(e, _)| e == epoch)?;
    let start = history[i].1;
    let end = history.get(i + 1).map_or(last, |&(_, next)| next - 1);
    (start <= end).then_some((start, end))
}

/// The highest offset at which both histories hold an entry of the same epoch; 0 when none.
pub fn agreement(primary: &[(u64, u64)], p_last: u64, replica: &[(u64, u64)], r_last: u64) -> u64 {
    let mut best = 0;
    for &(epoch, _) in replica {
        let (Some((rs, re)), Some((ps, pe))) = (
            epoch_range(replica, r_last, epoch),
            epoch_range(primary, p_last, epoch),
        ) else {
            continue;
        };
        let (lo, hi) = (rs.max(ps), re.min(pe));
        if lo <= hi {
            best = best.max(hi);
        }
    }
    best
}

/// Decides how a replica resumes. Pure.
pub fn decide(primary: &PrimaryView<'_>, hello: &HelloView<'_>) -> Resume {
    if hello.epoch > primary.epoch {
        return Resume::StepDown { epoch: hello.epoch };
    }
    if hello.epoch < primary.epoch {
        return Resume::StaleReplica;
    }
    let agreed = agreement(
        primary.history,
        primary.last.offset,
        hello.history,
        hello.last.offset,
    );
    // Entries after `agreed` must still be in the log for a partial sync.
    if agreed + 1 < primary.log_start {
        return Resume::Snapshot;
    }
    if agreed == hello.last.offset {
        Resume::Continue { offset: agreed }
    } else {
        Resume::TruncateTo { offset: agreed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(epoch: u64, last: (u64, u64), log_start: u64, history: &[(u64, u64)]) -> PrimaryView<'_> {
        PrimaryView {
            epoch,
            last: Position::new(last.0, last.1),
            log_start,
            history,
        }
    }

    fn h(epoch: u64, last: (u64, u64), history: &[(u64, u64)]) -> HelloView<'_> {
        HelloView {
            epoch,
            last: Position::new(last.0, last.1),
            history,
        }
    }

    #[test]
    fn the_resume_decision_as_a_table() {
        use Resume::*;
        // Primary at epoch 3: epoch 1 wrote 1..=100, epoch 2 wrote 101..=150, epoch 3 from 151.
        let ph: &[(u64, u64)] = &[(1, 1), (2, 101), (3, 151)];
        let cases: &[(&str, PrimaryView<'_>, HelloView<'_>, Resume)] = &[
            (
                "an empty replica, whole log held",
                p(3, (3, 200), 1, ph),
                h(3, (0, 0), &[]),
                Continue { offset: 0 },
            ),
            (
                "an empty replica, log trimmed",
                p(3, (3, 200), 50, ph),
                h(3, (0, 0), &[]),
                Snapshot,
            ),
            (
                "a prefix in the current epoch",
                p(3, (3, 200), 1, ph),
                h(3, (3, 180), &[(1, 1), (2, 101), (3, 151)]),
                Continue { offset: 180 },
            ),
            (
                "caught up exactly",
                p(3, (3, 200), 1, ph),
                h(3, (3, 200), &[(1, 1), (2, 101), (3, 151)]),
                Continue { offset: 200 },
            ),
            (
                "a prefix ending in an older epoch",
                p(3, (3, 200), 1, ph),
                h(3, (2, 140), &[(1, 1), (2, 101)]),
                Continue { offset: 140 },
            ),
            (
                "ended epoch 2 exactly where the primary did",
                p(3, (3, 200), 120, ph),
                h(3, (2, 150), &[(1, 1), (2, 101)]),
                Continue { offset: 150 },
            ),
            (
                "an old primary that wrote past the end of its epoch",
                p(3, (3, 200), 1, ph),
                h(3, (2, 170), &[(1, 1), (2, 101)]),
                TruncateTo { offset: 150 },
            ),
            (
                "a tail of an epoch the primary never saw",
                p(3, (3, 200), 1, &[(1, 1), (3, 101)]),
                h(3, (2, 130), &[(1, 1), (2, 101)]),
                TruncateTo { offset: 100 },
            ),
            (
                "divergence from the first entry",
                p(3, (3, 200), 1, &[(3, 1)]),
                h(3, (1, 10), &[(1, 1)]),
                TruncateTo { offset: 0 },
            ),
            (
                "divergence behind the log start",
                p(3, (3, 200), 160, ph),
                h(3, (2, 170), &[(1, 1), (2, 101)]),
                Snapshot,
            ),
            (
                "a replica ahead in the same epoch (impossible, but safe)",
                p(3, (3, 200), 1, ph),
                h(3, (3, 220), &[(1, 1), (2, 101), (3, 151)]),
                TruncateTo { offset: 200 },
            ),
            (
                "divergence just inside the log start",
                p(3, (3, 200), 140, ph),
                h(3, (2, 170), &[(1, 1), (2, 101)]),
                TruncateTo { offset: 150 },
            ),
            (
                "a replica told to follow an older epoch",
                p(3, (3, 200), 1, ph),
                h(2, (2, 150), &[(1, 1), (2, 101)]),
                StaleReplica,
            ),
            (
                "a replica following a newer epoch: we are stale",
                p(3, (3, 200), 1, ph),
                h(4, (3, 200), &[(1, 1), (2, 101), (3, 151)]),
                StepDown { epoch: 4 },
            ),
        ];
        for (name, primary, hello, want) in cases {
            assert_eq!(decide(primary, hello), *want, "{name}");
        }
    }

    #[test]
    fn agreement_never_passes_either_end() {
        let ph = [(1, 1), (2, 50)];
        let rh = [(1, 1), (2, 50)];
        assert_eq!(agreement(&ph, 80, &rh, 60), 60);
        assert_eq!(agreement(&ph, 55, &rh, 60), 55);
        assert_eq!(agreement(&ph, 0, &[], 0), 0);
    }
}
