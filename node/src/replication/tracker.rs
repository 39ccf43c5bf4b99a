//! A primary's view of its replicas: what each has acknowledged, how far behind it is in
//! entries and in milliseconds, whether it counts as in sync, and how many copies hold a given
//! offset. Pure: the time is an argument, and the runtime only feeds it events.
//!
//! Lag in milliseconds is the age of the oldest entry a replica has not acknowledged. The
//! tracker keeps a bounded list of (offset, time appended) samples for that, so it answers in
//! constant memory however far a replica falls behind.

use crate::proto::{SyncKind, WriteConcern};
use std::collections::VecDeque;

/// Most append samples kept for lag in milliseconds; older ones are thinned out.
pub const MAX_SAMPLES: usize = 4096;

/// One replica as the primary sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// Its node id.
    pub node_id: String,
    /// The stream currently open from it, if any (a number that grows with every stream).
    pub session: Option<u64>,
    /// Whether its stream has passed the handshake (and snapshot) and carries live entries.
    pub streaming: bool,
    /// Highest offset it has applied.
    pub acked: u64,
    /// Highest offset on its disk.
    pub durable: u64,
    /// How its current or last stream began.
    pub last_sync: SyncKind,
    /// Bytes queued for it and not yet sent.
    pub send_buffer_bytes: u64,
}

/// Every replica of one partition, and the append times lag is measured against.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Copies the partition is configured with, the primary included.
    pub copies: u32,
    /// Writes are refused while fewer replicas than this are in sync.
    pub min_in_sync: u32,
    /// A replica lagging longer than this is not in sync.
    pub max_lag_ms: u64,
    /// The replicas, expected or attached.
    pub replicas: Vec<ReplicaState>,
    samples: VecDeque<(u64, i64)>,
    end: u64,
    next_session: u64,
}

impl Tracker {
    /// A tracker for a primary with `copies` copies, expecting `expected` replicas.
    pub fn new(copies: u32, min_in_sync: u32, max_lag_ms: u64, expected: &[String]) -> Self {
        Self {
            copies: copies.max(1),
            min_in_sync,
            max_lag_ms,
            replicas: expected
                .iter()
                .map(|n| ReplicaState {
                    node_id: n.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The primary's log now ends at `offset`, appended at `now_ms`.
    pub fn appended(&mut self, offset: u64, now_ms: i64) {
        if offset <= self.end {
            return;
        }
        self.end = offset;
        if self.samples.back().is_some_and(|&(_, t)| t == now_ms) {
            // One sample per millisecond is as fine as lag in milliseconds can be.
            if let Some(last) = self.samples.back_mut() {
                last.0 = offset;
            }
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            // Keep the oldest (it bounds the worst lag) and thin out the rest.
            let oldest = self.samples.pop_front();
            self.samples.pop_front();
            if let Some(o) = oldest {
                self.samples.push_front(o);
            }
        }
        self.samples.push_back((offset, now_ms));
        // Samples every replica has passed are no longer needed.
        let min_acked = self
            .replicas
            .iter()
            .map(|r| r.acked)
            .min()
            .unwrap_or(offset);
        while self.samples.len() > 1 && self.samples.get(1).is_some_and(|&(o, _)| o <= min_acked) {
            self.samples.pop_front();
        }
    }

    /// The primary's last offset as the tracker knows it.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// A stream from `node_id` opened; returns its session number.
    pub fn attach(&mut self, node_id: &str, sync: SyncKind, from: u64) -> u64 {
        self.next_session += 1;
        let session = self.next_session;
        let r = match self.replicas.iter_mut().position(|r| r.node_id == node_id) {
            Some(i) => &mut self.replicas[i],
            None => {
                self.replicas.push(ReplicaState {
                    node_id: node_id.to_string(),
                    ..Default::default()
                });
                let i = self.replicas.len() - 1;
                &mut self.replicas[i]
            }
        };
        r.session = Some(session);
        r.streaming = false;
        r.last_sync = sync;
        // What the replica holds now is what it resumes from (a truncation lowers it).
        r.acked = from;
        r.durable = r.durable.min(from);
        r.send_buffer_bytes = 0;
        session
    }

    fn find(&mut self, node_id: &str, session: u64) -> Option<&mut ReplicaState> {
        self.replicas
            .iter_mut()
            .find(|r| r.node_id == node_id && r.session == Some(session))
    }

    /// The stream now carries live entries.
    pub fn streaming(&mut self, node_id: &str, session: u64) {
        if let Some(r) = self.find(node_id, session) {
            r.streaming = true;
        }
    }

    /// The replica acknowledged. Returns false when the session is no longer current.
    pub fn ack(&mut self, node_id: &str, session: u64, applied: u64, durable: u64) -> bool {
        match self.find(node_id, session) {
            Some(r) => {
                r.acked = r.acked.max(applied);
                r.durable = r.durable.max(durable);
                true
            }
            None => false,
        }
    }

    /// Bytes queued for the replica.
    pub fn set_buffer(&mut self, node_id: &str, session: u64, bytes: u64) {
        if let Some(r) = self.find(node_id, session) {
            r.send_buffer_bytes = bytes;
        }
    }

    /// The stream closed.
    pub fn detach(&mut self, node_id: &str, session: u64) {
        if let Some(r) = self.find(node_id, session) {
            r.session = None;
            r.streaming = false;
            r.send_buffer_bytes = 0;
        }
    }

    /// Milliseconds a replica that has applied `acked` is behind at `now_ms`: the age of the
    /// oldest entry it has not applied.
    pub fn lag_ms(&self, acked: u64, now_ms: i64) -> u64 {
        if acked >= self.end {
            return 0;
        }
        // The first sample past `acked` was appended no later than the entry after `acked`
        // became visible, so its age is a lower bound of the true lag, off by one sample.
        let t = self
            .samples
            .iter()
            .find(|&&(o, _)| o > acked)
            .map_or(now_ms, |&(_, t)| t);
        now_ms.saturating_sub(t).max(0) as u64
    }

    /// Whether a replica counts as in sync: streaming, and behind by less than the lag bound.
    pub fn in_sync(&self, r: &ReplicaState, now_ms: i64) -> bool {
        r.session.is_some() && r.streaming && self.lag_ms(r.acked, now_ms) <= self.max_lag_ms
    }

    /// Replicas in sync now.
    pub fn in_sync_count(&self, now_ms: i64) -> u32 {
        self.replicas
            .iter()
            .filter(|r| self.in_sync(r, now_ms))
            .count() as u32
    }

    /// Copies, the primary included, that hold `offset`.
    pub fn acked_copies(&self, offset: u64) -> u32 {
        1 + self.replicas.iter().filter(|r| r.acked >= offset).count() as u32
    }

    /// Replicas holding `offset`, as Redis's WAIT counts them: for offset 0 (no write yet),
    /// the replicas connected now.
    pub fn acked_replicas(&self, offset: u64) -> u32 {
        self.replicas
            .iter()
            .filter(|r| r.acked >= offset && (offset > 0 || r.session.is_some()))
            .count() as u32
    }

    /// Copies a write concern needs: ONE the primary; QUORUM a majority of the configured
    /// copies; ALL the primary and every replica in sync when the write was made.
    pub fn required(&self, concern: WriteConcern, now_ms: i64) -> u32 {
        match concern {
            WriteConcern::Unspecified | WriteConcern::One => 1,
            WriteConcern::Quorum => self.copies / 2 + 1,
            WriteConcern::All => 1 + self.in_sync_count(now_ms),
        }
    }

    /// The highest offset a majority of the configured copies holds.
    pub fn commit_offset(&self) -> u64 {
        let mut held: Vec<u64> = std::iter::once(self.end)
            .chain(self.replicas.iter().map(|r| r.acked))
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let majority = (self.copies / 2 + 1) as usize;
        held.get(majority - 1).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker::new(3, 1, 1000, &["b".into(), "c".into()])
    }

    #[test]
    fn acks_count_copies_and_stale_sessions_are_ignored() {
        let mut t = tracker();
        t.appended(10, 1000);
        let sb = t.attach("b", SyncKind::Partial, 4);
        t.streaming("b", sb);
        assert_eq!(t.acked_copies(5), 1);
        assert!(t.ack("b", sb, 10, 8));
        assert_eq!(t.acked_copies(10), 2);
        assert_eq!(t.commit_offset(), 10);
        // b reconnects: the old stream's acks and detach no longer count.
        let sb2 = t.attach("b", SyncKind::Partial, 10);
        assert!(!t.ack("b", sb, 12, 12));
        t.detach("b", sb);
        assert_eq!(t.replicas[0].session, Some(sb2));
    }

    #[test]
    fn required_copies_per_write_concern() {
        let mut t = tracker();
        t.appended(1, 0);
        assert_eq!(t.required(WriteConcern::One, 0), 1);
        assert_eq!(t.required(WriteConcern::Quorum, 0), 2);
        assert_eq!(t.required(WriteConcern::All, 0), 1, "nobody is in sync yet");
        let s = t.attach("c", SyncKind::Full, 0);
        t.streaming("c", s);
        t.ack("c", s, 1, 1);
        assert_eq!(t.required(WriteConcern::All, 0), 2);
        assert_eq!(
            Tracker::new(5, 0, 0, &[]).required(WriteConcern::Quorum, 0),
            3
        );
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_unacknowledged_entry() {
        let mut t = tracker();
        let s = t.attach("b", SyncKind::Partial, 0);
        t.streaming("b", s);
        t.appended(5, 1_000);
        t.appended(9, 1_400);
        assert_eq!(t.lag_ms(0, 2_000), 1_000);
        assert_eq!(t.lag_ms(5, 2_000), 600);
        assert_eq!(t.lag_ms(9, 2_000), 0);
        assert!(!t.in_sync(&t.replicas[0], 2_500), "lags 1500 ms > 1000");
        t.ack("b", s, 9, 9);
        assert!(t.in_sync(&t.replicas[0], 2_500));
        assert_eq!(t.in_sync_count(2_500), 1);
    }

    #[test]
    fn samples_stay_bounded() {
        let mut t = tracker();
        let s = t.attach("b", SyncKind::Partial, 0);
        for i in 1..=(MAX_SAMPLES as u64 * 4) {
            t.appended(i, i as i64);
        }
        assert!(t.samples.len() <= MAX_SAMPLES);
        // The oldest sample is kept, so a replica stuck at 0 still shows its full lag.
        assert_eq!(t.lag_ms(0, 20_000), 20_000 - 1);
        t.ack("b", s, 5, 5);
        assert!(t.lag_ms(5, 20_000) > 0);
    }
}
