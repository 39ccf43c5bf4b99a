//! The node's partitions, opened and recovered together, and the background work that keeps
//! them healthy: deleting expired keys through the log, syncing the log once a second under
//! `fsync=everysec`, and taking snapshots once enough log has been written.
//!
//! A standalone node (`--standalone`) is primary of every partition at epoch 1 or the highest
//! epoch its log holds. Any other node takes each partition's role from the role file kept
//! beside its log, or starts with none and waits for the Admin service to assign one.

mod partition;

pub use partition::{Durability, Partition};

use crate::Error;
use crate::replication::role::{self, RoleState};
use crate::slot::SlotMap;
use crate::storage::{
    DiskStore, DiskStoreConfig, FsyncPolicy, KvState, LogStore, MemoryStore, digest_hex, xor_digest,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How the engine stores and syncs partitions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where partitions live; `None` keeps everything in memory (persistence off).
    pub data_dir: Option<PathBuf>,
    /// Number of partitions.
    pub partitions: u32,
    /// When the log is synced.
    pub fsync: FsyncPolicy,
    /// Bytes of log kept per partition for partial resync.
    pub backlog_bytes: u64,
    /// Bytes per log segment.
    pub segment_bytes: u64,
    /// A partition takes a snapshot after this many bytes of log.
    pub snapshot_log_bytes: u64,
    /// Whether partitions have replicas. Without any (a standalone node), an in-memory node
    /// keeps no replication backlog, as Redis allocates its backlog only once a replica
    /// connects; the on-disk log keeps its backlog window either way.
    pub replicated: bool,
    /// A replica lagging more than this many milliseconds is not in sync.
    pub max_lag_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            partitions: 16,
            fsync: FsyncPolicy::EverySec,
            backlog_bytes: 64 << 20,
            segment_bytes: 64 << 20,
            snapshot_log_bytes: 256 << 20,
            replicated: true,
            max_lag_ms: 10_000,
        }
    }
}

/// The current time in Unix milliseconds: the one clock the node's decisions are given.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The node's partitions.
pub struct Engine {
    cfg: EngineConfig,
    slots: SlotMap,
    partitions: Vec<Arc<Partition>>,
    started: Instant,
    ready: AtomicBool,
    /// Seconds the last recovery took.
    pub recovery: Duration,
    /// What recovery had to repair, per partition.
    pub recovery_warnings: Vec<String>,
}

const LAYOUT_FILE: &str = "partita-layout";

/// A recovered partition and what recovery had to repair.
type Opened = (Arc<Partition>, Vec<String>);

impl Engine {
    /// Opens and recovers every partition, in parallel.
    pub fn open(cfg: EngineConfig) -> Result<Self, Error> {
        let slots = SlotMap::new(cfg.partitions)?;
        let started = Instant::now();
        if let Some(dir) = &cfg.data_dir {
            check_layout(dir, cfg.partitions)?;
        }
        let opened: Vec<Result<Opened, Error>> = std::thread::scope(|scope| {
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            let ids: Vec<u32> = (0..cfg.partitions).collect();
            let chunks: Vec<Vec<u32>> = ids
                .chunks(ids.len().div_ceil(workers).max(1))
                .map(<[u32]>::to_vec)
                .collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let cfg = &cfg;
                    scope.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|p| open_partition(cfg, p))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(Error::Unrecoverable {
                            partition: 0,
                            dir: PathBuf::new(),
                            reason: "a recovery thread panicked".into(),
                        })]
                    })
                })
                .collect()
        });
        let mut partitions = Vec::with_capacity(opened.len());
        let mut warnings = Vec::new();
        for result in opened {
            let (p, w) = result?;
            partitions.push(p);
            warnings.extend(w);
        }
        Ok(Self {
            cfg,
            slots,
            partitions,
            started,
            ready: AtomicBool::new(false),
            recovery: started.elapsed(),
            recovery_warnings: warnings,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The slot map.
    pub fn slots(&self) -> SlotMap {
        self.slots
    }

    /// Every partition, by id.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// The partition that owns `key`.
    pub fn partition_of(&self, key: &[u8]) -> &Arc<Partition> {
        let p = self.slots.partition_of_key(key) as usize;
        // partition_of_key is always below the partition count.
        &self.partitions[p.min(self.partitions.len() - 1)]
    }

    /// Time since the engine was opened.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Marks the node ready (listeners up); `/readyz` reports it.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Keys over all partitions.
    pub fn keys(&self) -> usize {
        self.partitions.iter().map(|p| p.read(KvState::len)).sum()
    }

    /// Order-independent digest over all partitions, as 40 hex characters, and the key count.
    pub fn digest(&self) -> (String, u64) {
        let mut acc = [0u8; 20];
        let mut keys = 0u64;
        for p in &self.partitions {
            let (d, n) = p.read(|s| (s.digest(), s.len()));
            xor_digest(&mut acc, &d);
            keys += n as u64;
        }
        (digest_hex(&acc), keys)
    }

    /// Deletes, through the log, keys whose expiry is due: at most `per_partition` per
    /// partition. Partitions that stopped after a failure are skipped. Returns how many were
    /// deleted, and whether some partition had more due than it was allowed to delete.
    pub fn expire_cycle(&self, now: i64, per_partition: usize) -> (usize, bool) {
        let mut deleted = 0;
        let mut more = false;
        // Only a primary decides expiry; replicas learn it from the log.
        for p in self
            .partitions
            .iter()
            .filter(|p| !p.failed() && p.is_primary())
        {
            let result = p
                .write(now, |s| {
                    let due = s.due_expirations(now, per_partition);
                    (due.len(), KvState::delete_all(&due))
                })
                .and_then(|(n, offset)| match offset {
                    Some(_) => p.flush().map(|_| n),
                    None => Ok(0),
                });
            match result {
                Ok(n) => {
                    deleted += n;
                    more |= n >= per_partition;
                }
                Err(e) => tracing::error!(partition = p.id(), "expiry: {e}"),
            }
        }
        (deleted, more)
    }

    /// Takes a snapshot of every partition that has written enough log since its last one.
    /// A partition that fails is reported and skipped; the others go on.
    pub fn snapshot_cycle(&self) -> usize {
        let mut taken = 0;
        for p in self.partitions.iter().filter(|p| !p.failed()) {
            match p
                .flush()
                .and_then(|_| p.maybe_snapshot(self.cfg.snapshot_log_bytes))
            {
                Ok(true) => taken += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(partition = p.id(), "snapshot: {e}"),
            }
        }
        taken
    }

    /// Syncs every partition's log (fsync=everysec's tick); a partition that fails is
    /// reported and stops taking writes, and the others go on.
    pub fn sync_cycle(&self) {
        for p in self.partitions.iter().filter(|p| !p.failed()) {
            if let Err(e) = p.flush().and_then(|_| p.sync_now()) {
                tracing::error!(partition = p.id(), "sync: {e}");
            }
        }
    }

    /// Hands every queued entry to the log and syncs it: the last step of a clean shutdown.
    pub fn flush_and_sync(&self) -> Result<(), Error> {
        for p in &self.partitions {
            p.flush()?;
            p.sync_now()?;
        }
        Ok(())
    }

    /// Runs the background cycles until `shutdown` turns true.
    pub async fn run_background(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut expire = tokio::time::interval(Duration::from_millis(100));
        let mut second = tokio::time::interval(Duration::from_secs(1));
        expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = expire.tick() => {
                    // Like Redis's active expiry: keep going while some partition had more due
                    // than a batch, within a bounded time.
                    let deadline = Instant::now() + Duration::from_millis(25);
                    while self.expire_cycle(now_ms(), 200).1 && Instant::now() < deadline {}
                }
                _ = second.tick() => {
                    let me = Arc::clone(&self);
                    let work = tokio::task::spawn_blocking(move || {
                        if me.cfg.fsync == FsyncPolicy::EverySec {
                            me.sync_cycle();
                        }
                        me.snapshot_cycle();
                    });
                    if let Err(e) = work.await {
                        tracing::error!("background task failed: {e}");
                    }
                }
            }
        }
    }
}

/// Refuses a data directory written with another partition count: keys would map to other
/// partitions, and reads would miss data that is there.
fn check_layout(dir: &std::path::Path, partitions: u32) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating data directory", dir, e))?;
    let path = dir.join(LAYOUT_FILE);
    let want = format!("partitions={partitions}\n");
    match std::fs::read_to_string(&path) {
        Ok(found) if found == want => Ok(()),
        Ok(found) => Err(Error::Unrecoverable {
            partition: 0,
            dir: dir.to_path_buf(),
            reason: format!(
                "the directory holds data for {:?} but the node was started with {partitions} \
                 partitions; start it with the same --partitions, or use another --data-dir",
                found.trim()
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, want).map_err(|e| Error::io("writing layout file", &path, e))
        }
        Err(e) => Err(Error::io("reading layout file", &path, e)),
    }
}

fn open_partition(cfg: &EngineConfig, id: u32) -> Result<Opened, Error> {
    let partition_dir = cfg.data_dir.as_ref().map(|d| d.join(format!("p{id:05}")));
    let (store, recovered): (Arc<dyn LogStore>, _) = match &partition_dir {
        Some(dir) => {
            let (store, recovered) = DiskStore::open(
                dir.clone(),
                id,
                DiskStoreConfig {
                    segment_bytes: cfg.segment_bytes,
                    backlog_bytes: cfg.backlog_bytes,
                    keep_snapshots: 2,
                },
            )?;
            (Arc::new(store), recovered)
        }
        None => {
            let backlog = if cfg.replicated { cfg.backlog_bytes } else { 0 };
            (Arc::new(MemoryStore::new(id, backlog)), Default::default())
        }
    };
    let mut state = match recovered.snapshot {
        Some(snapshot) => KvState::from_snapshot(id, snapshot),
        None => KvState::new(id),
    };
    for e in &recovered.entries {
        state.apply(e)?;
    }
    let last_epoch = state.last().epoch;
    let (role, role_dir) = if cfg.replicated {
        let held = match &partition_dir {
            Some(dir) => role::load(dir, id)?,
            None => None,
        };
        let role = held.unwrap_or(RoleState {
            epoch: last_epoch,
            role: role::Role::Unassigned,
        });
        (role, partition_dir)
    } else {
        (RoleState::standalone_at(last_epoch.max(1)), None)
    };
    let partition = Partition::new(state, role, store, cfg.fsync, role_dir, cfg.max_lag_ms);
    Ok((Arc::new(partition), recovered.warnings))
}
