//! Health checking: every set's nodes are polled for their Admin status, in parallel, with
//! short timeouts, by one background task per set. What matters for a decision (a node
//! stopping or starting to answer, a role or epoch change, a replica leaving or joining the
//! in-sync set, a node down for longer than the detection window) triggers a reconcile at once,
//! so a lost primary is acted on within about one poll interval after the window, not at the
//! next periodic requeue.
//!
//! The cache also remembers since when a node has not answered: that is what the detection
//! window is measured against. Times are milliseconds on a monotonic clock that starts with the
//! operator; the planner takes them as plain numbers.

use crate::nodes::{NodeConn, STATUS_TIMEOUT};
use futures::future::join_all;
use kube::runtime::reflector::ObjectRef;
use partita_api::ReplicatedPartitionSet;
use partita_node::proto::NodeStatus;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

type SetRef = ObjectRef<ReplicatedPartitionSet>;

/// Most reconcile triggers queued; past it a trigger is dropped, which is harmless: one queued
/// trigger already makes the reconcile read everything afresh.
pub const TRIGGER_QUEUE: usize = 256;

/// What the operator last saw of one node.
#[derive(Clone, Debug, Default)]
pub struct NodeHealth {
    /// Its last status call answered.
    pub reachable: bool,
    /// Since when it has not answered (operator clock, ms); `None` while it answers.
    pub down_since_ms: Option<u64>,
    /// Its last answer.
    pub status: Option<NodeStatus>,
    /// Why the last call failed.
    pub error: Option<String>,
    /// It has not answered for the detection window or longer (a trigger is sent when this
    /// flips, so the planner acts as soon as the window has passed).
    pub window_passed: bool,
}

/// What to poll for one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Targets {
    /// gRPC address (host:port) of every pod that has one, by pod name.
    pub addresses: BTreeMap<String, String>,
    /// How often to poll.
    pub interval: Duration,
    /// The set's failover detection window.
    pub window: Duration,
}

struct Watched {
    targets: Targets,
    nodes: BTreeMap<String, NodeHealth>,
    /// A channel per address that answered its last poll, reused by the next one: polling
    /// every node twice a second must not cost a TCP and HTTP/2 handshake each time. A call
    /// that fails drops its channel, so a node that comes back is reached afresh.
    channels: HashMap<String, Channel>,
    task: Option<JoinHandle<()>>,
}

/// The health cache and its pollers, shared by every reconcile.
pub struct Health {
    start: Instant,
    sets: Mutex<HashMap<SetRef, Watched>>,
    trigger: mpsc::Sender<SetRef>,
}

impl Health {
    /// A cache whose pollers send reconcile triggers to the returned receiver.
    pub fn new() -> (Arc<Self>, mpsc::Receiver<SetRef>) {
        let (trigger, rx) = mpsc::channel(TRIGGER_QUEUE);
        (
            Arc::new(Self {
                start: Instant::now(),
                sets: Mutex::new(HashMap::new()),
                trigger,
            }),
            rx,
        )
    }

    /// Milliseconds since the operator started: the planner's clock.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SetRef, Watched>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls `set`'s nodes in the background from now on (updating what to poll if it is
    /// already polled).
    pub fn watch(self: &Arc<Self>, set: SetRef, targets: Targets) {
        let mut sets = self.lock();
        let watched = sets.entry(set.clone()).or_insert_with(|| Watched {
            targets: targets.clone(),
            nodes: BTreeMap::new(),
            channels: HashMap::new(),
            task: None,
        });
        watched.targets = targets;
        let addresses: std::collections::BTreeSet<&String> =
            watched.targets.addresses.values().collect();
        watched.channels.retain(|a, _| addresses.contains(a));
        let gone: Vec<String> = watched
            .nodes
            .keys()
            .filter(|n| !watched.targets.addresses.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            watched.nodes.remove(&n);
        }
        if watched.task.as_ref().is_none_or(JoinHandle::is_finished) {
            let me = Arc::clone(self);
            watched.task = Some(tokio::spawn(async move { me.poll_loop(set).await }));
        }
    }

    /// Stops polling `set` and forgets it.
    pub fn forget(&self, set: &SetRef) {
        if let Some(w) = self.lock().remove(set)
            && let Some(task) = w.task
        {
            task.abort();
        }
    }

    /// Stops every poller: the controller is stopping (shutdown, or leadership lost).
    pub fn stop_all(&self) {
        for (_, w) in self.lock().drain() {
            if let Some(task) = w.task {
                task.abort();
            }
        }
    }

    /// Polls every node of `set` now and returns what is known of each.
    pub async fn poll_now(&self, set: &SetRef) -> BTreeMap<String, NodeHealth> {
        let Some(targets) = self.lock().get(set).map(|w| w.targets.clone()) else {
            return BTreeMap::new();
        };
        self.poll(set, &targets).await;
        self.snapshot(set)
    }

    /// What is known of `set`'s nodes, without polling.
    pub fn snapshot(&self, set: &SetRef) -> BTreeMap<String, NodeHealth> {
        self.lock()
            .get(set)
            .map(|w| w.nodes.clone())
            .unwrap_or_default()
    }

    async fn poll_loop(self: Arc<Self>, set: SetRef) {
        loop {
            // Nobody takes triggers any more: the controller that owned this cache is gone
            // (leadership lost: its future was dropped, and `stop_all` never ran). Polling on
            // would leak a poller per set at every loss of the lead.
            if self.trigger.is_closed() {
                self.forget(&set);
                return;
            }
            let Some(targets) = self.lock().get(&set).map(|w| w.targets.clone()) else {
                return;
            };
            if self.poll(&set, &targets).await {
                // Full queue: a trigger is already waiting, and it reads everything afresh.
                let _ = self.trigger.try_send(set.clone());
            }
            tokio::time::sleep(targets.interval).await;
        }
    }

    /// Polls every target once, updates the cache, and says whether anything that matters for
    /// a decision changed.
    async fn poll(&self, set: &SetRef, targets: &Targets) -> bool {
        let cached: HashMap<String, Channel> = self
            .lock()
            .get(set)
            .map(|w| w.channels.clone())
            .unwrap_or_default();
        let calls = targets.addresses.iter().map(|(name, addr)| {
            let channel = cached.get(addr).cloned();
            async move {
                let result = async {
                    let mut conn = match channel {
                        Some(channel) => NodeConn::from_channel(name, channel),
                        None => NodeConn::connect(name, addr, STATUS_TIMEOUT).await?,
                    };
                    let status = conn.status().await?;
                    Ok::<_, crate::error::Error>((conn.channel(), status))
                }
                .await;
                (name.clone(), addr.clone(), result)
            }
        });
        let results = join_all(calls).await;
        let now = self.now_ms();
        let window = targets.window.as_millis() as u64;
        let mut sets = self.lock();
        let Some(watched) = sets.get_mut(set) else {
            return false;
        };
        let mut changed = false;
        for (name, addr, result) in results {
            let old = watched.nodes.get(&name).cloned().unwrap_or_default();
            let result = match result {
                Ok((channel, status)) => {
                    watched.channels.insert(addr, channel);
                    Ok(status)
                }
                Err(e) => {
                    watched.channels.remove(&addr);
                    Err(e)
                }
            };
            let new = match result {
                Ok(status) => NodeHealth {
                    reachable: true,
                    down_since_ms: None,
                    status: Some(status),
                    error: None,
                    window_passed: false,
                },
                Err(e) => {
                    let since = old.down_since_ms.unwrap_or(now);
                    NodeHealth {
                        reachable: false,
                        down_since_ms: Some(since),
                        status: old.status.clone(),
                        error: Some(e.to_string()),
                        window_passed: now.saturating_sub(since) >= window,
                    }
                }
            };
            if fingerprint(&old) != fingerprint(&new) || new.window_passed != old.window_passed {
                changed = true;
            }
            watched.nodes.insert(name, new);
        }
        changed
    }
}

/// A hash of what a decision depends on: reachability, roles, epochs, followed primaries, live
/// links, in-sync sets, readiness and topology version. Offsets and lag change all the time
/// and are left out.
fn fingerprint(h: &NodeHealth) -> u64 {
    let mut hasher = DefaultHasher::new();
    h.reachable.hash(&mut hasher);
    if let Some(s) = h.status.as_ref().filter(|_| h.reachable) {
        s.ready.hash(&mut hasher);
        s.topology_version.hash(&mut hasher);
        for p in &s.partitions {
            (p.partition, p.role, p.epoch).hash(&mut hasher);
            p.primary.as_ref().map(|a| &a.node_id).hash(&mut hasher);
            p.link.as_ref().map(|l| l.state).hash(&mut hasher);
            for r in &p.replicas {
                (&r.node_id, r.connected, r.in_sync).hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pollers_stop_once_nobody_takes_their_triggers() {
        let (health, rx) = Health::new();
        let set = ObjectRef::new("orders").within("shop");
        let targets = Targets {
            addresses: BTreeMap::new(),
            interval: Duration::from_millis(5),
            window: Duration::from_secs(3),
        };
        health.watch(set.clone(), targets);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            health.lock().contains_key(&set),
            "polled while the controller runs"
        );
        // The controller goes without stopping the pollers, as when leadership is lost.
        drop(rx);
        let end = Instant::now() + Duration::from_secs(5);
        while health.lock().contains_key(&set) {
            assert!(Instant::now() < end, "the poller outlived its controller");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
