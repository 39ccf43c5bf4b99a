//! One partition at run time: its state machine behind a lock, its log store, and the group
//! commit that makes `fsync=always` cheap under concurrency.
//!
//! A write runs a pure decision (`KvState::decide_*`) under the lock; if it produces a command,
//! the command gets the next offset, is applied to the state and queued as a log entry. Nothing
//! is acknowledged yet: the caller then `flush`es the queue to the store (one write to the
//! operating system for everything queued, by any connection) and, under `fsync=always`, waits in
//! `wait_durable` until an fsync covers its offset. Concurrent waiters share each fsync.
//!
//! A failed write to the log leaves the state ahead of the log, so the partition stops taking
//! writes (fail-stop, as PostgreSQL does after a failed fsync) until the node restarts and
//! recovers from disk.

use crate::Error;
use crate::proto::{Command, LogEntry, WriteConcern};
use crate::replication::role::{self, Change, Role, RoleState, Upstream};
use crate::replication::{LinkInfo, Tracker};
use crate::storage::{FsyncPolicy, KvState, LogStore, Position, SnapshotData, entry};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The durable offset, or why the partition stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// Highest offset known to be on disk (or, without fsync, in the operating system).
    pub offset: u64,
    /// Set once a log write or fsync failed; the partition refuses writes from then on.
    pub failed: Option<String>,
}

struct Live {
    state: KvState,
    /// The role and the epoch the node holds (invariant 1: writes only as primary, at it).
    role: RoleState,
    pending: Vec<LogEntry>,
    /// For a store that keeps no entries: the position of the last write not yet handed on.
    pending_last: Option<Position>,
    /// Bytes of log entries written since the last snapshot.
    since_snapshot: u64,
}

#[derive(Default)]
struct SyncState {
    requested: u64,
    running: bool,
}

/// A partition: state, log, and durability.
pub struct Partition {
    id: u32,
    live: Mutex<Live>,
    /// Serializes appends to the store, so entries reach it in offset order.
    flush_lock: Mutex<()>,
    store: Arc<dyn LogStore>,
    fsync: FsyncPolicy,
    durable_tx: watch::Sender<Durability>,
    sync: Mutex<SyncState>,
    /// Set when a log write or fsync failed: checked on every write without taking a lock.
    failed: AtomicBool,
    /// Highest offset handed to the store (fsync=everysec and never report it as durable).
    written: AtomicU64,
    /// Whether the store keeps entries; when it does not, writes are not encoded for it.
    retain: bool,
    /// Where the role file lives; `None` keeps the role in memory only.
    role_dir: Option<PathBuf>,
    /// Held while the history is snapshotted, replaced or cut, so those never interleave.
    history_lock: Mutex<()>,
    /// Woken whenever entries reach the store, for replication streams waiting on new entries.
    appended: Notify,
    /// As a primary: the replicas' progress.
    tracker: parking_lot::Mutex<Tracker>,
    /// Bumped on every replica acknowledgement, for writes waiting on a write concern.
    acks: watch::Sender<u64>,
    /// As a replica: the link to the primary, for status.
    link: parking_lot::Mutex<LinkInfo>,
    /// A replica that lags more than this many milliseconds is not in sync.
    max_lag_ms: u64,
}

/// Locks a mutex; a panic while holding it cannot leave a partition half-updated in a way a
/// later holder could not see (every write applies and queues in one step), so poisoning is
/// ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Partition {
    /// A partition over a recovered state and its store, in `role`. The role is kept in
    /// `role_dir` when one is given.
    pub fn new(
        state: KvState,
        role: RoleState,
        store: Arc<dyn LogStore>,
        fsync: FsyncPolicy,
        role_dir: Option<PathBuf>,
        max_lag_ms: u64,
    ) -> Self {
        let retain = store.retains_entries();
        let durable = Durability {
            offset: state.last().offset,
            failed: None,
        };
        let tracker = match &role.role {
            Role::Primary(s) => Tracker::new(s.copies, s.min_in_sync, max_lag_ms, &s.replicas),
            _ => Tracker::default(),
        };
        Self {
            id: state.partition(),
            live: Mutex::new(Live {
                state,
                role,
                pending: Vec::new(),
                pending_last: None,
                since_snapshot: 0,
            }),
            flush_lock: Mutex::new(()),
            store,
            fsync,
            written: AtomicU64::new(durable.offset),
            durable_tx: watch::channel(durable).0,
            sync: Mutex::new(SyncState::default()),
            failed: AtomicBool::new(false),
            retain,
            role_dir,
            history_lock: Mutex::new(()),
            appended: Notify::new(),
            tracker: parking_lot::Mutex::new(tracker),
            acks: watch::channel(0).0,
            link: parking_lot::Mutex::new(LinkInfo::default()),
            max_lag_ms,
        }
    }

    /// The partition id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&KvState) -> R) -> R {
        f(&lock(&self.live).state)
    }

    /// Runs `decide` against the state; if it returns a command, the command is applied at the
    /// next offset and queued for the log. Returns the decision's result and the position (epoch
    /// and offset) written: the epoch names whose history the write belongs to, which an offset
    /// alone does not once the role changes (see [`Partition::wait_acked`]).
    /// The write is not acknowledged until `flush` (and, under fsync=always, `wait_durable`).
    pub fn write<R>(
        &self,
        now_ms: i64,
        decide: impl FnOnce(&KvState) -> (R, Option<Command>),
    ) -> Result<(R, Option<Position>), Error> {
        if self.failed.load(Ordering::Acquire) {
            let why = self.durable_tx.borrow().failed.clone().unwrap_or_default();
            return Err(self.stopped(&why));
        }
        let mut live = lock(&self.live);
        self.check_writable(&live.role, now_ms)?;
        let (result, command) = decide(&live.state);
        let Some(command) = command else {
            return Ok((result, None));
        };
        let at = self.queue(&mut live, now_ms, command)?;
        Ok((result, Some(at)))
    }

    /// Applies `command` as the next entry at the held epoch and queues it for the log;
    /// returns its position. A command too large for one log record changes nothing.
    fn queue(&self, live: &mut Live, now_ms: i64, command: Command) -> Result<Position, Error> {
        // A primary's epoch is never below its last entry's (role::check_change).
        let epoch = live.role.epoch.max(live.state.last().epoch);
        let at = Position::new(epoch, live.state.last().offset + 1);
        if !self.retain {
            // Nothing keeps the entry: apply, and remember where the log now ends.
            live.state.apply_next(epoch, command);
            live.pending_last = Some(at);
            return Ok(at);
        }
        let e = entry(at, now_ms, &command);
        if e.command.len() + 64 > crate::storage::MAX_RECORD_LEN {
            return Err(Error::LimitExceeded {
                what: "a log entry",
                limit: crate::storage::MAX_RECORD_LEN as u64,
                setting: "the log's largest record",
            });
        }
        live.since_snapshot += (e.command.len() + 32) as u64;
        live.state.apply_next(epoch, command);
        live.pending.push(e);
        Ok(at)
    }

    /// Whether a client write may proceed: only on the primary at its epoch (invariant 1), and
    /// only while enough replicas are in sync.
    fn check_writable(&self, role: &RoleState, now_ms: i64) -> Result<(), Error> {
        if let Some(refused) = role.refusal(self.id) {
            return Err(refused);
        }
        if let Role::Primary(s) = &role.role
            && s.min_in_sync > 0
        {
            let in_sync = self.tracker.lock().in_sync_count(now_ms);
            if in_sync < s.min_in_sync {
                return Err(Error::NotEnoughInSync {
                    partition: self.id,
                    in_sync,
                    min: s.min_in_sync,
                });
            }
        }
        Ok(())
    }

    fn stopped(&self, why: &str) -> Error {
        Error::Unrecoverable {
            partition: self.id,
            dir: Default::default(),
            reason: format!(
                "the partition stopped after a failed log write ({why}); restart the node"
            ),
        }
    }

    /// Hands every queued entry to the store (the operating system). Returns the last offset
    /// the store holds.
    pub fn flush(&self) -> Result<u64, Error> {
        let _order = lock(&self.flush_lock);
        // Once an append failed, no caller may take "nothing pending" for success: its entry
        // may have been in the batch that failed.
        if self.failed.load(Ordering::Acquire) {
            let why = self.durable_tx.borrow().failed.clone().unwrap_or_default();
            return Err(self.stopped(&why));
        }
        if !self.retain {
            let Some(last) = lock(&self.live).pending_last.take() else {
                return Ok(self.store.last().offset);
            };
            return match self.store.advance_to(last) {
                Ok(()) => {
                    // A store that keeps no entries has nothing to replicate: no replica lag
                    // to measure either.
                    self.written.fetch_max(last.offset, Ordering::Release);
                    Ok(last.offset)
                }
                Err(e) => {
                    self.fail(e.to_string(), "log write");
                    Err(e)
                }
            };
        }
        let pending = std::mem::take(&mut lock(&self.live).pending);
        if pending.is_empty() {
            return Ok(self.store.last().offset);
        }
        let last = pending.last().map_or(0, |e| e.offset);
        match self.store.append(pending) {
            Ok(()) => {
                // Under fsync=always only an fsync moves the durable offset (and wakes waiters).
                self.written.fetch_max(last, Ordering::Release);
                self.tracker.lock().appended(last, crate::engine::now_ms());
                self.appended.notify_waiters();
                Ok(last)
            }
            Err(e) => {
                self.fail(e.to_string(), "log write");
                Err(e)
            }
        }
    }

    /// Under fsync=always, waits until `offset` is on disk, sharing fsyncs with other waiters;
    /// otherwise returns at once.
    pub async fn wait_durable(self: &Arc<Self>, offset: u64) -> Result<(), Error> {
        if self.fsync != FsyncPolicy::Always {
            return Ok(());
        }
        let mut rx = self.durable_tx.subscribe();
        if rx.borrow().offset >= offset {
            return Ok(());
        }
        let start = {
            let mut s = lock(&self.sync);
            s.requested = s.requested.max(offset);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.sync_loop());
        }
        let result = rx
            .wait_for(|d| d.offset >= offset || d.failed.is_some())
            .await
            .map(|d| d.failed.clone());
        match result {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(self.stopped(&why)),
            Err(_) => Err(self.stopped("the partition was closed")),
        }
    }

    /// One fsync after another until every requested offset is covered: each covers everything
    /// appended before it started.
    fn sync_loop(&self) {
        let mut previous = None;
        loop {
            if self.failed.load(Ordering::Acquire) {
                lock(&self.sync).running = false;
                return;
            }
            let started = std::time::Instant::now();
            match self.store.sync() {
                Ok(upto) if previous == Some(upto) && lock(&self.sync).requested > upto => {
                    // Nothing more can become durable: the requested offsets never reached the
                    // log. Waiters must not wait forever.
                    self.fail(
                        format!("offsets up to {upto} are durable but more were awaited"),
                        "fsync",
                    );
                    lock(&self.sync).running = false;
                    return;
                }
                Ok(upto) => {
                    previous = Some(upto);
                    crate::metrics::observe_fsync(started.elapsed());
                    self.durable_tx.send_if_modified(|d| {
                        let moved = d.offset < upto;
                        d.offset = d.offset.max(upto);
                        moved
                    });
                    let mut s = lock(&self.sync);
                    if s.requested <= upto {
                        s.running = false;
                        return;
                    }
                }
                Err(e) => {
                    self.fail(e.to_string(), "fsync");
                    lock(&self.sync).running = false;
                    return;
                }
            }
        }
    }

    fn fail(&self, why: String, what: &str) {
        tracing::error!(partition = self.id, "{what} failed, stopping writes: {why}");
        // The flag first: anyone woken by the notification must already see it set.
        self.failed.store(true, Ordering::Release);
        self.durable_tx.send_modify(|d| d.failed = Some(why));
    }

    /// Syncs the store now (fsync=everysec's tick, and shutdown).
    pub fn sync_now(&self) -> Result<(), Error> {
        let started = std::time::Instant::now();
        // A failed fsync stops writes, as under fsync=always: a retry can falsely succeed after
        // the kernel dropped the dirty pages.
        let upto = self
            .store
            .sync()
            .inspect_err(|e| self.fail(e.to_string(), "fsync"))?;
        crate::metrics::observe_fsync(started.elapsed());
        self.durable_tx.send_if_modified(|d| {
            let moved = d.offset < upto;
            d.offset = d.offset.max(upto);
            moved
        });
        Ok(())
    }

    /// Takes a snapshot if more than `threshold` bytes of log were written since the last one.
    /// The state is copied under the lock (values are shared, not copied); the file is written
    /// without it.
    pub fn maybe_snapshot(&self, threshold: u64) -> Result<bool, Error> {
        if self.failed.load(Ordering::Acquire) {
            // The state may hold writes that never reached the log: never make them durable.
            return Ok(false);
        }
        // A history replaced (a full sync) or cut (a truncation) while this snapshot is being
        // written would make it a snapshot of a history the store no longer holds.
        let _history = lock(&self.history_lock);
        let snapshot = {
            let mut live = lock(&self.live);
            if live.since_snapshot < threshold {
                return Ok(false);
            }
            live.since_snapshot = 0;
            live.state.snapshot()
        };
        self.store.save_snapshot(&snapshot)?;
        crate::metrics::snapshot_taken(self.id);
        Ok(true)
    }

    /// The store's view: log bytes, first offset and newest snapshot offset.
    pub fn log_info(&self) -> (u64, u64, u64) {
        (
            self.store.log_bytes(),
            self.store.first_offset(),
            self.store.snapshot_offset(),
        )
    }

    /// The epoch the node holds for the partition.
    pub fn epoch(&self) -> u64 {
        lock(&self.live).role.epoch
    }

    /// The role and epoch.
    pub fn role(&self) -> RoleState {
        lock(&self.live).role.clone()
    }

    /// The copy's role, as routing needs it.
    pub fn local(&self) -> crate::routing::Local {
        let role = self.role();
        crate::routing::Local {
            role: match role.role {
                Role::Primary(_) => crate::routing::LocalRole::Primary,
                Role::Replica(primary) => crate::routing::LocalRole::Replica(primary),
                _ => crate::routing::LocalRole::Neither,
            },
            epoch: role.epoch,
        }
    }

    /// Whether the node leads the partition at exactly `epoch`.
    pub fn leads_at(&self, epoch: u64) -> bool {
        let live = lock(&self.live);
        live.role.epoch == epoch && matches!(live.role.role, Role::Primary(_))
    }

    /// Whether the node is the partition's primary.
    pub fn is_primary(&self) -> bool {
        matches!(lock(&self.live).role.role, Role::Primary(_))
    }

    /// Changes the role, after checking the epoch rules ([`role::check_change`]); the new role
    /// is on disk before it takes effect. A new primary whose epoch is newer than its last
    /// entry's writes an epoch marker, so its epoch history records where the epoch starts.
    /// Returns the position after the change (for a fence, the final one).
    pub fn change_role(
        &self,
        change: Change,
        next: RoleState,
        node_id: &str,
    ) -> Result<Position, Error> {
        {
            let mut live = lock(&self.live);
            role::check_change(
                self.id,
                &live.role,
                live.state.last().epoch,
                change,
                next.epoch,
                &next.role,
            )?;
            if live.role == next {
                drop(live);
                self.flush()?;
                return Ok(self.last());
            }
            if let Some(dir) = &self.role_dir {
                role::save(dir, &next)?;
            }
            if let Role::Primary(s) = &next.role {
                *self.tracker.lock() =
                    Tracker::new(s.copies, s.min_in_sync, self.max_lag_ms, &s.replicas);
                let end = live.state.last().offset;
                self.tracker.lock().appended(end, crate::engine::now_ms());
            } else if !(next.role == Role::Fenced && next.epoch == live.role.epoch) {
                // What replicas acknowledged to this copy as a primary says nothing of any later
                // history. Only a primary fenced at its own epoch (a switchover) keeps counting:
                // its streams still drain the entries it accepted.
                *self.tracker.lock() = Tracker::default();
            }
            tracing::info!(
                partition = self.id,
                from = live.role.role.name(),
                to = next.role.name(),
                epoch = next.epoch,
                "role changed"
            );
            let lead =
                matches!(next.role, Role::Primary(_)) && next.epoch > live.state.last().epoch;
            live.role = next;
            if lead {
                let marker = crate::storage::epoch_marker(node_id);
                self.queue(&mut live, crate::engine::now_ms(), marker)?;
            }
        }
        // Writes waiting for their write concern look again: one this copy no longer leads
        // the epoch of fails now rather than at its timeout.
        self.acks.send_modify(|n| *n += 1);
        self.flush()?;
        Ok(self.last())
    }

    /// Whether a write this copy accepted at `at` can still be acknowledged: the copy still
    /// holds `at.epoch` as its primary (or fenced at it, draining it to the switchover's
    /// target), and its history still holds an entry of that epoch at that offset. A copy that
    /// moved on (deposed: made a replica, fenced at a newer epoch) may have truncated the
    /// entry, and its offset may now name another primary's entry, which replicas acknowledge
    /// as if it were this one.
    fn holds_write(&self, at: Position) -> bool {
        let live = lock(&self.live);
        let leads = live.role.epoch == at.epoch
            && matches!(live.role.role, Role::Primary(_) | Role::Fenced);
        let epoch_there = live
            .state
            .epoch_history()
            .iter()
            .take_while(|&&(_, start)| start <= at.offset)
            .last()
            .map(|&(epoch, _)| epoch);
        leads && live.state.last().offset >= at.offset && epoch_there == Some(at.epoch)
    }

    /// Steps down at once after seeing a newer epoch (a replica's hello, a refused stream):
    /// the partition is fenced at that epoch until an admin call gives it a role.
    pub fn step_down(&self, epoch: u64) {
        let held = lock(&self.live).role.epoch;
        if epoch <= held {
            return;
        }
        let next = RoleState {
            epoch,
            role: Role::Fenced,
        };
        match self.change_role(Change::Fence, next, "") {
            Ok(_) => tracing::warn!(
                partition = self.id,
                epoch,
                "saw a newer epoch: stepped down and fenced"
            ),
            Err(e) => tracing::error!(partition = self.id, "stepping down: {e}"),
        }
    }

    /// As a replica following `up`: applies entries from the primary, each at exactly the next
    /// offset with a good checksum, and hands them to the log. A bad entry stops the batch; the
    /// entries before it are kept. Returns the last offset held. Refused once the role is no
    /// longer `up` (promoted, or told to follow another primary or epoch): the stream's entries
    /// belong to a history the copy left.
    pub fn apply_replicated(&self, up: &Upstream, entries: Vec<LogEntry>) -> Result<u64, Error> {
        let outcome = {
            let mut live = lock(&self.live);
            self.check_upstream(&live.role, Some(up), "apply entries")?;
            let mut outcome = Ok(());
            for e in entries {
                if let Err(err) = live.state.apply(&e) {
                    outcome = Err(err);
                    break;
                }
                live.since_snapshot += (e.command.len() + 32) as u64;
                if self.retain {
                    live.pending.push(e);
                } else {
                    live.pending_last = Some(Position::new(e.epoch, e.offset));
                }
            }
            outcome
        };
        let last = self.flush()?;
        outcome.map(|()| last)
    }

    /// As a replica: drops every entry after `offset` and rebuilds the state from the newest
    /// snapshot and the log up to it. Fails (and changes nothing) when the store cannot: the
    /// snapshot already covers more, or the log no longer holds what replay needs; the caller
    /// then falls back to a full sync.
    pub fn truncate_to(&self, up: &Upstream, offset: u64) -> Result<(), Error> {
        let _history = lock(&self.history_lock);
        self.flush()?;
        let mut live = lock(&self.live);
        self.check_upstream(&live.role, Some(up), "truncate")?;
        if offset >= live.state.last().offset {
            return Ok(());
        }
        let snapshot = self.store.newest_snapshot()?;
        let mut state = match snapshot {
            Some(s) if s.meta.at.offset <= offset => KvState::from_snapshot(self.id, s),
            Some(s) => {
                return Err(Error::BadTruncate {
                    partition: self.id,
                    offset,
                    reason: format!(
                        "the newest snapshot holds offsets up to {}",
                        s.meta.at.offset
                    ),
                });
            }
            None => KvState::new(self.id),
        };
        let mut next = state.last().offset + 1;
        if next < self.store.first_offset() && next <= offset {
            return Err(Error::Trimmed {
                partition: self.id,
                from: next,
                first: self.store.first_offset(),
            });
        }
        self.store.truncate_after(offset)?;
        while next <= offset {
            let batch = self.store.read(next, 1 << 20)?;
            if batch.is_empty() {
                break;
            }
            for e in batch.iter().take_while(|e| e.offset <= offset) {
                state.apply(e)?;
            }
            next = state.last().offset + 1;
        }
        if state.last().offset != offset {
            return Err(Error::Unrecoverable {
                partition: self.id,
                dir: PathBuf::new(),
                reason: format!(
                    "rebuilding to offset {offset} after truncation reached only {}",
                    state.last().offset
                ),
            });
        }
        live.state = state;
        self.written.store(offset, Ordering::Release);
        self.durable_tx
            .send_modify(|d| d.offset = d.offset.min(offset));
        Ok(())
    }

    /// Only a replica following `up` (or, without `up`, a copy with no role, being cleared) has
    /// its history extended, replaced or cut: a link task finishing after a promotion or after
    /// the copy was told to follow another primary must not touch the history it holds now.
    fn check_upstream(
        &self,
        role: &RoleState,
        up: Option<&Upstream>,
        what: &str,
    ) -> Result<(), Error> {
        let ok = match up {
            Some(up) => role.follows(up),
            None => role.role == Role::Unassigned,
        };
        if ok {
            return Ok(());
        }
        Err(Error::Replication {
            partition: self.id,
            reason: format!(
                "refusing to {what} for a stream {}: the copy is {} at epoch {}",
                up.map_or_else(
                    || "of no primary".to_string(),
                    |u| format!("from {} at epoch {}", u.primary.node_id, u.epoch)
                ),
                role.role.name(),
                role.epoch
            ),
        })
    }

    /// As a replica following `up` (`None`: a copy with no role, being cleared): replaces the
    /// whole state and history with `snapshot`.
    pub fn install_snapshot(
        &self,
        up: Option<&Upstream>,
        snapshot: SnapshotData,
    ) -> Result<(), Error> {
        let _history = lock(&self.history_lock);
        self.flush()?;
        let mut live = lock(&self.live);
        self.check_upstream(&live.role, up, "load a snapshot")?;
        let at = snapshot.meta.at;
        self.store.install_snapshot(&snapshot)?;
        live.state = KvState::from_snapshot(self.id, snapshot);
        live.since_snapshot = 0;
        live.pending.clear();
        live.pending_last = None;
        self.written.store(at.offset, Ordering::Release);
        self.durable_tx.send_modify(|d| d.offset = at.offset);
        Ok(())
    }

    /// A snapshot of the state for a replica, consistent at its position; every entry up to it
    /// is in the store first, so the entries after it can be read from the store.
    pub fn snapshot_for_replica(&self) -> Result<SnapshotData, Error> {
        self.flush()?;
        let live = lock(&self.live);
        // Entries queued since the flush are after the snapshot's position: flush order keeps
        // them after it in the store.
        Ok(live.state.snapshot())
    }

    /// The store, for replication streams reading entries.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// Woken whenever entries reach the store.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// The replicas' progress, as a primary.
    pub fn tracker(&self) -> parking_lot::MutexGuard<'_, Tracker> {
        self.tracker.lock()
    }

    /// Records a replica's acknowledgement and wakes writes waiting on a write concern.
    pub fn on_ack(&self, node_id: &str, session: u64, applied: u64, durable: u64) {
        if self.tracker.lock().ack(node_id, session, applied, durable) {
            self.acks.send_modify(|n| *n += 1);
        }
    }

    /// Changes whenever a replica acknowledges.
    pub fn acks_changed(&self) -> watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// The link to the primary, as a replica.
    pub fn link(&self) -> parking_lot::MutexGuard<'_, LinkInfo> {
        self.link.lock()
    }

    /// Waits until `concern` holds for the write at `at` (as [`Partition::write`] returned
    /// it), or `timeout` passes. Returns the copies that had applied it and the copies required.
    ///
    /// Replicas acknowledge offsets, and an offset names this copy's write only while the copy
    /// still leads the write's epoch (see `holds_write`): once it was deposed, the same offset
    /// may hold another primary's entry. So the write fails at once with [`Error::Deposed`]
    /// when the copy stops leading that epoch, and is never acknowledged after that.
    pub async fn wait_acked(
        &self,
        at: Position,
        concern: WriteConcern,
        timeout: Duration,
    ) -> Result<(u32, u32), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.wait_acked_until(at, concern, timeout, deadline).await
    }

    /// As [`Partition::wait_acked`], giving up at `deadline`: a connection that waits for
    /// several writes of one pipelined batch gives each the deadline its own timeout set when
    /// it was made, not a fresh timeout from when its turn came. `timeout` is only reported.
    pub async fn wait_acked_until(
        &self,
        at: Position,
        concern: WriteConcern,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<(u32, u32), Error> {
        let offset = at.offset;
        let now = crate::engine::now_ms();
        let required = self.tracker.lock().required(concern, now);
        let mut rx = self.acks.subscribe();
        // Counted first, then checked against the role: a role change replaces the tracker
        // before it wakes this wait, so a count taken from the old tracker is only used while
        // the role still holds the write.
        let check = || {
            let acked = self.tracker.lock().acked_copies(offset);
            (acked, self.holds_write(at))
        };
        let (mut acked, mut held) = check();
        if held && acked >= required {
            return Ok((acked, required));
        }
        let waited = tokio::time::timeout_at(deadline, async {
            while held && acked < required {
                if rx.changed().await.is_err() {
                    return;
                }
                (acked, held) = check();
            }
        })
        .await;
        let (acked, held) = check();
        if !held {
            return Err(Error::Deposed {
                partition: self.id,
                epoch: at.epoch,
                offset,
                acked,
                required,
            });
        }
        if waited.is_ok() && acked >= required {
            return Ok((acked, required));
        }
        Err(Error::WriteConcernTimeout {
            partition: self.id,
            concern: concern.as_str_name().trim_start_matches("WRITE_CONCERN_"),
            acked,
            required,
            timeout_ms: timeout.as_millis() as u64,
            offset,
        })
    }

    /// The position of the last applied entry.
    pub fn last(&self) -> Position {
        lock(&self.live).state.last()
    }

    /// As a replica following `up`: the applied and durable offsets to acknowledge, read under
    /// the same lock as the role. `None` once the role is no longer `up`: from then on the
    /// copy's offsets may belong to another primary's history, and the old primary must not
    /// count them as copies of its own entries.
    pub fn follower_progress(&self, up: &Upstream) -> Option<(u64, u64)> {
        let live = lock(&self.live);
        if !live.role.follows(up) {
            return None;
        }
        let applied = live.state.last().offset;
        Some((applied, self.durable_offset().min(applied)))
    }

    /// Whether the partition stopped taking writes after a failed log write or fsync.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The durable offset: synced to disk under fsync=always and everysec, handed to the
    /// operating system under never.
    pub fn durable_offset(&self) -> u64 {
        match self.fsync {
            FsyncPolicy::Never => self.written.load(Ordering::Acquire),
            _ => self.durable_tx.borrow().offset,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fail-stop and group commit. A full or slow disk cannot be produced safely on a test
    //! machine, so these tests wrap the real in-memory store in one that fails on demand with the
    //! error a full disk gives (ENOSPC), or holds fsync until the test lets it through. The
    //! partition relies only on the store returning that error, or returning late.
    use super::*;
    use crate::proto::{PutCommand, SyncKind, command::Cmd};
    use crate::storage::{MemoryStore, SnapshotData};
    use std::time::Duration;

    /// The real in-memory store, with faults on demand: failing appends or fsyncs with the
    /// error a full disk gives, and fsyncs held at a gate (a slow disk) and counted.
    struct TestStore {
        inner: MemoryStore,
        fail_appends: AtomicBool,
        fail_syncs: AtomicBool,
        gate: Option<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
        syncs: AtomicU64,
    }

    fn enospc(what: &'static str) -> Error {
        Error::io(what, "/data", std::io::Error::from_raw_os_error(28))
    }

    fn test_store(gate: Option<std::sync::mpsc::Receiver<()>>) -> Arc<TestStore> {
        Arc::new(TestStore {
            inner: MemoryStore::new(0, 1 << 20),
            fail_appends: AtomicBool::new(false),
            fail_syncs: AtomicBool::new(false),
            gate: gate.map(std::sync::Mutex::new),
            syncs: AtomicU64::new(0),
        })
    }

    impl LogStore for TestStore {
        fn last(&self) -> Position {
            self.inner.last()
        }
        fn first_offset(&self) -> u64 {
            self.inner.first_offset()
        }
        fn append(&self, entries: Vec<LogEntry>) -> Result<(), Error> {
            if self.fail_appends.load(Ordering::SeqCst) {
                return Err(enospc("appending to log"));
            }
            self.inner.append(entries)
        }
        fn sync(&self) -> Result<u64, Error> {
            if let Some(gate) = &self.gate {
                let gate = gate
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                gate.recv_timeout(Duration::from_secs(30))
                    .map_err(|_| enospc("the test never opened the gate"))?;
            }
            if self.fail_syncs.load(Ordering::SeqCst) {
                return Err(enospc("syncing log segment"));
            }
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync()
        }
        fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<LogEntry>, Error> {
            self.inner.read(from, max_bytes)
        }
        fn truncate_after(&self, offset: u64) -> Result<(), Error> {
            self.inner.truncate_after(offset)
        }
        fn save_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
            self.inner.save_snapshot(snapshot)
        }
        fn install_snapshot(&self, snapshot: &SnapshotData) -> Result<(), Error> {
            self.inner.install_snapshot(snapshot)
        }
        fn newest_snapshot(&self) -> Result<Option<SnapshotData>, Error> {
            self.inner.newest_snapshot()
        }
        fn log_bytes(&self) -> u64 {
            self.inner.log_bytes()
        }
        fn snapshot_offset(&self) -> u64 {
            self.inner.snapshot_offset()
        }
        fn durable(&self) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_one_fsync() {
        let (open_gate, gate) = std::sync::mpsc::channel();
        let store = test_store(Some(gate));
        let p = Arc::new(Partition::new(
            KvState::new(0),
            RoleState::standalone(),
            Arc::clone(&store) as Arc<dyn LogStore>,
            FsyncPolicy::Always,
            None,
            0,
        ));
        // Two writers, as two connections would: each queues, flushes, and waits.
        let first = set(&p, "a").expect("queued").expect("offset");
        p.flush().expect("flushed");
        let w1 = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_durable(first).await }
        });
        let second = set(&p, "b").expect("queued").expect("offset");
        p.flush().expect("flushed");
        let w2 = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_durable(second).await }
        });
        // Once both wait (the first fsync is held at the gate), let exactly one fsync through.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&p.sync).requested < second {
            assert!(
                std::time::Instant::now() < until,
                "the second writer never waited"
            );
            tokio::task::yield_now().await;
        }
        open_gate.send(()).expect("gate");
        let (r1, r2) = tokio::join!(w1, w2);
        assert!(r1.expect("task").is_ok() && r2.expect("task").is_ok());
        assert_eq!(
            store.syncs.load(Ordering::SeqCst),
            1,
            "one fsync covered both writes"
        );
        assert_eq!(p.durable_offset(), second);
    }

    fn partition(fsync: FsyncPolicy) -> (Arc<Partition>, Arc<TestStore>) {
        let store = test_store(None);
        let p = Partition::new(
            KvState::new(0),
            RoleState::standalone(),
            Arc::clone(&store) as Arc<dyn LogStore>,
            fsync,
            None,
            0,
        );
        (Arc::new(p), store)
    }

    fn set(p: &Partition, key: &str) -> Result<Option<u64>, Error> {
        let command = Command {
            cmd: Some(Cmd::Put(PutCommand {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                expire_at_ms: 0,
            })),
        };
        p.write(1, |_| ((), Some(command)))
            .map(|(_, at)| at.map(|at| at.offset))
    }

    /// The stream [`replica_partition`] follows: n1 at epoch 1.
    fn up() -> Upstream {
        Upstream {
            epoch: 1,
            primary: crate::proto::NodeAddress {
                node_id: "n1".into(),
                grpc_addr: "127.0.0.1:1".into(),
                resp_addr: String::new(),
            },
        }
    }

    fn replica_partition() -> Arc<Partition> {
        let p = partition(FsyncPolicy::Never).0;
        let follow = RoleState {
            epoch: 1,
            role: Role::Replica(up().primary),
        };
        p.change_role(Change::Follow, follow, "n2").expect("follow");
        p
    }

    fn put_entry(offset: u64, key: &str) -> LogEntry {
        let command = Command {
            cmd: Some(Cmd::Put(PutCommand {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                expire_at_ms: 0,
            })),
        };
        entry(Position::new(1, offset), 0, &command)
    }

    #[test]
    fn a_replica_applies_entries_only_at_the_next_offset_and_never_skips() {
        let p = replica_partition();
        assert_eq!(
            p.apply_replicated(&up(), vec![put_entry(1, "a"), put_entry(2, "b")])
                .unwrap(),
            2
        );
        // A gap stops the batch at the entry before it; nothing after the gap is applied.
        let err = p
            .apply_replicated(
                &up(),
                vec![put_entry(3, "c"), put_entry(5, "e"), put_entry(6, "f")],
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::OffsetGap {
                    expected: 4,
                    got: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(p.last().offset, 3);
        assert_eq!(
            p.store().last().offset,
            3,
            "what was applied reached the log"
        );
        // A damaged entry is refused too.
        let mut bad = put_entry(4, "d");
        bad.crc32c ^= 1;
        assert!(matches!(
            p.apply_replicated(&up(), vec![bad]),
            Err(Error::CorruptEntry { offset: 4, .. })
        ));
        assert_eq!(p.last().offset, 3);
        assert!(p.read(|s| s.held(b"d").is_none() && s.held(b"e").is_none()));
        // Client writes are refused on a replica, naming its primary.
        assert!(matches!(
            set(&p, "x"),
            Err(Error::NotPrimary {
                primary: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn a_promoted_replica_keeps_its_log_and_marks_its_epoch() {
        let p = replica_partition();
        p.apply_replicated(&up(), vec![put_entry(1, "a"), put_entry(2, "b")])
            .unwrap();
        let promote = RoleState::standalone_at(2);
        let last = p.change_role(Change::Promote, promote, "n2").unwrap();
        assert_eq!(last, Position::new(2, 3), "an epoch marker opens epoch 2");
        assert_eq!(p.read(|s| s.epoch_history().to_vec()), vec![(1, 1), (2, 3)]);
        assert_eq!(set(&p, "c").unwrap(), Some(4));
        // The old stream's late entries are refused now.
        assert!(p.apply_replicated(&up(), vec![put_entry(3, "z")]).is_err());
        assert!(
            p.install_snapshot(Some(&up()), SnapshotData::default())
                .is_err()
        );
    }

    #[test]
    fn after_a_failed_append_no_caller_is_told_its_write_persisted() {
        let (p, store) = partition(FsyncPolicy::EverySec);
        set(&p, "a").expect("queued");
        set(&p, "b").expect("queued");
        p.flush().expect("both reach the store");
        set(&p, "c").expect("queued");
        set(&p, "d").expect("queued");
        store.fail_appends.store(true, Ordering::SeqCst);
        // One connection's flush takes both queued entries and fails...
        assert!(p.flush().is_err());
        // ...and the other connection, finding nothing queued, must not take that as success.
        assert!(
            p.flush().is_err(),
            "an empty queue after a failure is not a success"
        );
        assert!(p.failed());
        assert!(set(&p, "e").is_err(), "writes are refused from now on");
        assert_eq!(
            p.maybe_snapshot(0).ok(),
            Some(false),
            "unlogged writes are never snapshotted"
        );
    }

    /// A primary of 3 copies at `epoch`, expecting replicas b and c.
    fn primary_of_three(epoch: u64) -> RoleState {
        RoleState {
            epoch,
            role: Role::Primary(crate::replication::role::PrimarySettings {
                replicas: vec!["b".into(), "c".into()],
                copies: 3,
                min_in_sync: 0,
            }),
        }
    }

    fn write_at(p: &Partition, key: &str) -> Position {
        let command = Command {
            cmd: Some(Cmd::Put(PutCommand {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                expire_at_ms: 0,
            })),
        };
        let (_, at) = p.write(1, |_| ((), Some(command))).expect("written");
        at.expect("a position")
    }

    #[tokio::test]
    async fn a_write_is_never_acknowledged_once_its_primary_is_deposed() {
        // The e2e freeze scenario: a stalled primary took a write at epoch 2 and waited for a
        // QUORUM; meanwhile it was replaced, told to follow (its tail truncated), and led
        // again at epoch 4, where its replicas acknowledged offsets past the write's. Those
        // acknowledgements are of epoch 4's entries: the write must fail, not be acknowledged.
        let (p, _) = partition(FsyncPolicy::Never);
        p.change_role(Change::Assign, primary_of_three(2), "a")
            .expect("primary");
        let at = write_at(&p, "stale");
        p.flush().expect("flushed");
        let waiter = {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                p.wait_acked(at, WriteConcern::Quorum, Duration::from_secs(60))
                    .await
            })
        };
        let follow = RoleState {
            epoch: 3,
            role: Role::Replica(up().primary),
        };
        p.change_role(Change::Follow, follow, "a").expect("follow");
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ends when the role changes, not at its timeout")
            .expect("joined");
        assert!(
            matches!(waited, Err(Error::Deposed { epoch: 2, .. })),
            "{waited:?}"
        );

        // Led again at a newer epoch, with replicas acknowledging past that offset: a wait for
        // the old position still fails, at once.
        p.change_role(Change::Promote, primary_of_three(4), "a")
            .expect("promote");
        for r in ["b", "c"] {
            let session = p.tracker().attach(r, SyncKind::Partial, at.offset + 5);
            p.on_ack(r, session, at.offset + 5, at.offset + 5);
        }
        let again = p
            .wait_acked(at, WriteConcern::Quorum, Duration::from_secs(60))
            .await;
        assert!(matches!(again, Err(Error::Deposed { .. })), "{again:?}");
        // A write of the new epoch is acknowledged as usual.
        let now = write_at(&p, "new");
        p.flush().expect("flushed");
        let session = p.tracker().attach("b", SyncKind::Partial, now.offset);
        p.on_ack("b", session, now.offset, now.offset);
        assert_eq!(
            p.wait_acked(now, WriteConcern::Quorum, Duration::from_secs(1))
                .await
                .expect("acknowledged"),
            (3, 2)
        );
    }

    #[tokio::test]
    async fn a_primary_fenced_at_its_own_epoch_still_acknowledges_what_it_drains() {
        // A switchover fences the primary at its epoch; its streams drain the writes it took,
        // and the target's acknowledgement still counts for them.
        let (p, _) = partition(FsyncPolicy::Never);
        p.change_role(Change::Assign, primary_of_three(2), "a")
            .expect("primary");
        let at = write_at(&p, "k");
        p.flush().expect("flushed");
        let session = p.tracker().attach("b", SyncKind::Partial, 0);
        p.change_role(
            Change::Fence,
            RoleState {
                epoch: 2,
                role: Role::Fenced,
            },
            "a",
        )
        .expect("fence");
        p.on_ack("b", session, at.offset, at.offset);
        assert_eq!(
            p.wait_acked(at, WriteConcern::Quorum, Duration::from_secs(1))
                .await
                .expect("acknowledged"),
            (2, 2)
        );
    }

    #[test]
    fn a_stream_the_copy_left_can_neither_change_it_nor_acknowledge() {
        // The copy follows n1 at epoch 1, then is told to follow n3 at epoch 2 while a message
        // of the old stream is still being handled: nothing of that stream lands any more.
        let p = replica_partition();
        p.apply_replicated(&up(), vec![put_entry(1, "a"), put_entry(2, "b")])
            .unwrap();
        assert_eq!(p.follower_progress(&up()), Some((2, 2)));
        let next = Upstream {
            epoch: 2,
            primary: crate::proto::NodeAddress {
                node_id: "n3".into(),
                grpc_addr: "127.0.0.1:3".into(),
                resp_addr: String::new(),
            },
        };
        let follow = RoleState {
            epoch: next.epoch,
            role: Role::Replica(next.primary.clone()),
        };
        p.change_role(Change::Follow, follow, "n2").unwrap();
        assert_eq!(p.follower_progress(&up()), None, "no acknowledgement");
        assert!(p.apply_replicated(&up(), vec![put_entry(3, "c")]).is_err());
        assert!(p.truncate_to(&up(), 1).is_err());
        assert!(
            p.install_snapshot(Some(&up()), SnapshotData::default())
                .is_err()
        );
        assert_eq!(p.last().offset, 2, "the history is untouched");
        // The new stream's own calls are accepted.
        assert_eq!(p.follower_progress(&next), Some((2, 2)));
        p.truncate_to(&next, 1).unwrap();
        assert_eq!(p.last().offset, 1);
    }

    #[tokio::test]
    async fn a_failed_fsync_ends_the_wait_with_an_error_instead_of_hanging() {
        let (p, store) = partition(FsyncPolicy::Always);
        let offset = set(&p, "a").expect("queued").expect("an offset");
        p.flush().expect("flushed");
        store.fail_syncs.store(true, Ordering::SeqCst);
        let waited = tokio::time::timeout(Duration::from_secs(10), p.wait_durable(offset)).await;
        assert!(
            matches!(waited, Ok(Err(_))),
            "the waiter gets an error, promptly"
        );
        assert!(p.failed());
        assert!(p.flush().is_err());
    }

    #[test]
    fn a_failed_periodic_fsync_also_stops_writes() {
        let (p, store) = partition(FsyncPolicy::EverySec);
        set(&p, "a").expect("queued");
        p.flush().expect("flushed");
        store.fail_syncs.store(true, Ordering::SeqCst);
        assert!(p.sync_now().is_err());
        assert!(
            p.failed(),
            "a retried fsync can falsely succeed, so the first failure stops writes"
        );
        assert!(set(&p, "b").is_err());
    }
}
