//! Primary/replica replication over gRPC streams (DESIGN.md, invariants 1–4).
//!
//! The decisions are pure and live in their own modules, with their own table tests:
//! - [`role`]: which role changes the epoch rules allow, and the file that keeps a role;
//! - [`resume`]: how a primary answers a replica's hello (continue, truncate or snapshot);
//! - [`tracker`]: what each replica has acknowledged, its lag, and which write concerns hold.
//!
//! The runtime around them only executes what they decide:
//! - [`primary`]: the Replication service a primary runs, one stream per replica and
//!   partition, with a bounded send buffer;
//! - [`replica`]: the link a replica keeps to its primary, reconnecting with backoff;
//! - [`Replication`]: role changes from the Admin service, which start and stop links.

pub mod primary;
pub mod replica;
pub mod resume;
pub mod role;
pub mod tracker;

pub use tracker::Tracker;

use crate::Error;
use crate::engine::{Engine, Partition};
use crate::proto::{self, LinkState, NodeAddress, SyncKind};
use role::{Change, Role, RoleState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How replication runs on this node.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// This node's identity and addresses.
    pub node: NodeAddress,
    /// Most bytes of entries (or snapshot data) in one message; a single larger entry is sent
    /// alone.
    pub batch_bytes: usize,
    /// Most bytes queued for one replica and not yet sent. A replica that stops reading holds
    /// at most this much of the primary's memory; once it falls out of the backlog it is cut
    /// off and comes back through a snapshot.
    pub send_buffer_bytes: u64,
    /// How often an idle primary sends a heartbeat.
    pub heartbeat: Duration,
    /// A replica lagging more than this is not in sync.
    pub max_lag_ms: u64,
    /// Largest snapshot a replica accepts, in bytes.
    pub max_snapshot_bytes: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            node: NodeAddress::default(),
            batch_bytes: 256 << 10,
            send_buffer_bytes: 4 << 20,
            heartbeat: Duration::from_millis(500),
            max_lag_ms: 10_000,
            max_snapshot_bytes: 64 << 30,
        }
    }
}

/// Largest replication message: a batch, or one entry of the largest record the log holds.
pub fn max_message_bytes(cfg: &ReplicationConfig) -> usize {
    cfg.batch_bytes.max(crate::storage::MAX_RECORD_LEN) + (1 << 20)
}

/// A replica's view of its link to the primary, for status and INFO.
#[derive(Debug, Clone, Default)]
pub struct LinkInfo {
    /// The link's state.
    pub state: LinkState,
    /// How it last synchronised.
    pub last_sync: SyncKind,
    /// Entries behind the primary's end offset, from the last heartbeat or batch.
    pub lag_entries: u64,
    /// Milliseconds behind, as the primary measured it.
    pub lag_ms: u64,
    /// Full syncs since the node started.
    pub full_syncs: u64,
    /// Partial syncs (continue or truncate) since the node started.
    pub partial_syncs: u64,
    /// Why the link is not streaming, if it is not.
    pub error: String,
    /// The primary's end offset, as last heard.
    pub primary_end: u64,
    /// The primary's commit offset, as last heard.
    pub commit_offset: u64,
}

impl LinkInfo {
    /// The proto form.
    pub fn proto(&self) -> proto::ReplicaLink {
        proto::ReplicaLink {
            state: self.state as i32,
            last_sync: self.last_sync as i32,
            lag_entries: self.lag_entries,
            lag_ms: self.lag_ms,
            full_syncs: self.full_syncs,
            partial_syncs: self.partial_syncs,
            error: self.error.clone(),
        }
    }
}

/// Replication on this node: the links of the partitions it follows, and the role changes
/// that start and stop them.
pub struct Replication {
    engine: Arc<Engine>,
    cfg: ReplicationConfig,
    links: parking_lot::Mutex<HashMap<u32, tokio::task::JoinHandle<()>>>,
    /// One channel per primary address, shared by every partition following it.
    channels: parking_lot::Mutex<HashMap<String, tonic::transport::Channel>>,
    shutdown: watch::Receiver<bool>,
}

impl Replication {
    /// Replication for `engine`.
    pub fn new(
        engine: Arc<Engine>,
        cfg: ReplicationConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            cfg,
            links: parking_lot::Mutex::new(HashMap::new()),
            channels: parking_lot::Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicationConfig {
        &self.cfg
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Starts the links of every partition the node follows (after a restart).
    pub fn start(self: &Arc<Self>) {
        for p in self.engine.partitions() {
            self.sync_link(p);
        }
    }

    /// Makes the link of `p` match its role: a replica has exactly one link, to its primary
    /// at its epoch; any other role has none.
    pub fn sync_link(self: &Arc<Self>, p: &Arc<Partition>) {
        let role = p.role();
        let mut links = self.links.lock();
        if let Some(old) = links.remove(&p.id()) {
            old.abort();
        }
        match role.role {
            Role::Replica(primary) => {
                let channel = {
                    let mut channels = self.channels.lock();
                    match channels.get(&primary.grpc_addr) {
                        Some(c) => c.clone(),
                        None => match replica::channel(&primary.grpc_addr) {
                            Ok(c) => {
                                channels.insert(primary.grpc_addr.clone(), c.clone());
                                c
                            }
                            Err(e) => {
                                let mut link = p.link();
                                link.state = LinkState::Refused;
                                link.error = e.to_string();
                                return;
                            }
                        },
                    }
                };
                {
                    let mut link = p.link();
                    link.state = LinkState::Connecting;
                    link.error.clear();
                }
                let task = replica::run(
                    Arc::clone(p),
                    self.cfg.clone(),
                    channel,
                    role.epoch,
                    primary,
                    self.shutdown.clone(),
                );
                links.insert(p.id(), tokio::spawn(task));
            }
            _ => {
                let mut link = p.link();
                link.state = LinkState::Unspecified;
            }
        }
    }

    /// Applies one role change to several partitions, all or nothing: every partition is
    /// checked first, and none changes if one refuses.
    pub fn change(
        self: &Arc<Self>,
        partitions: &[Arc<Partition>],
        change: Change,
        next: &RoleState,
    ) -> Result<Vec<proto::PartitionRoleState>, Error> {
        for p in partitions {
            let held = p.role();
            role::check_change(
                p.id(),
                &held,
                p.last().epoch,
                change,
                next.epoch,
                &next.role,
            )?;
        }
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let before = p.role();
            let last = p.change_role(change, next.clone(), &self.cfg.node.node_id)?;
            // An identical retry (the operator re-applies its plan on every reconcile) must not
            // restart a healthy link.
            if p.role() != before {
                self.sync_link(p);
            }
            out.push(proto::PartitionRoleState {
                partition: p.id(),
                role: next.role.proto() as i32,
                epoch: next.epoch,
                last: Some(last.proto()),
            });
        }
        Ok(out)
    }

    /// Promotes: waits (at most `timeout`) until every partition holds `min_offset`, then
    /// makes each primary at `next.epoch`, keeping its log.
    pub async fn promote(
        self: &Arc<Self>,
        partitions: &[Arc<Partition>],
        next: &RoleState,
        min_offset: u64,
        timeout: Duration,
    ) -> Result<Vec<proto::PartitionRoleState>, Error> {
        let started = std::time::Instant::now();
        for p in partitions {
            loop {
                let held = p.last().offset;
                if held >= min_offset {
                    break;
                }
                if started.elapsed() >= timeout {
                    return Err(Error::NotCaughtUp {
                        partition: p.id(),
                        held,
                        wanted: min_offset,
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
                let notified = p.appended().notified();
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        }
        self.change(partitions, Change::Promote, next)
    }
}
