//! The plan: from what the operator sees (the recorded partition map, the pods, every node's
//! last Admin status) and the time, the map to record next and the node calls that make the
//! nodes match it.
//!
//! Why it is shaped this way:
//! - **Record first, act second.** Every change of who holds what (a new epoch, a new primary,
//!   a copy added or dropped) is a change of the map, which the controller writes to status,
//!   guarded by resourceVersion, before it makes any node call. A crash between the two leaves
//!   a map ahead of the nodes, and the next plan repairs the nodes towards it: that is what
//!   makes killing the operator anywhere safe (invariant 6).
//! - **Level-triggered.** Actions are derived from differences between the map and the nodes'
//!   reports, never from memory of earlier plans. Once the nodes match the map, planning again
//!   yields nothing.
//! - **One step per partition per plan.** A failover, a switchover or one step of a move: the
//!   next step waits for the next observation, so every step starts from what is true.
//! - **Order.** Failover first, then repair, then at most `maxConcurrentMoves` moves, then the
//!   rollout, which waits for everything else to be quiet.

use super::failover::{self, NoCandidate};
use super::{Copies, placement};
use std::collections::{BTreeMap, BTreeSet};

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Nodes of the set (`spec.nodes`): pods `<set>-0` to `<set>-(nodes-1)`.
    pub nodes: usize,
    /// Partitions of the set.
    pub partitions: usize,
    /// Copies of each partition, the primary included.
    pub replication_factor: usize,
    /// Whether a lost primary is replaced automatically.
    pub failover: bool,
    /// Promote only when it is sure to keep every QUORUM-acknowledged write.
    pub require_quorum: bool,
    /// How long a primary must be unreachable before it is replaced.
    pub detection_window_ms: u64,
    /// Most partitions with a move in flight.
    pub max_concurrent_moves: usize,
    /// Whether the map may be rebalanced now (`rebalance.auto`, or a rebalance request). Draining
    /// nodes above `nodes` happens regardless.
    pub rebalance: bool,
    /// Writes are refused while fewer replicas than this are in sync.
    pub min_in_sync_replicas: u32,
    /// A switchover requested by annotation: partition and target node.
    pub switchover: Option<(usize, String)>,
    /// Primaries a user chose (the last switchover done on request): rebalancing leaves them
    /// where they are rather than undo the user's choice.
    pub pinned: Vec<(usize, String)>,
}

/// A node's role for one partition, as it reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Accepts writes at its epoch.
    Primary,
    /// Follows a primary.
    Replica,
    /// Accepts no writes and follows nobody.
    Fenced,
}

/// One partition on one node, from the node's last status report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Its role.
    pub role: Role,
    /// The epoch it holds.
    pub epoch: u64,
    /// Its last entry: (epoch, offset).
    pub last: (u64, u64),
    /// As a replica: the node it follows.
    pub following: Option<String>,
    /// As a replica: whether its stream from the primary is live.
    pub streaming: bool,
    /// As a primary: its replicas' progress.
    pub replicas: Vec<ReplicaReport>,
}

/// A primary's view of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    /// The replica's node.
    pub node: String,
    /// Whether the primary counts it in sync.
    pub in_sync: bool,
    /// Entries behind.
    pub lag_entries: u64,
    /// Milliseconds behind.
    pub lag_ms: u64,
}

/// One node (pod) of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The pod name, which is the node id.
    pub name: String,
    /// The pod's ordinal.
    pub ordinal: usize,
    /// The pod exists and is not being deleted.
    pub pod: bool,
    /// The pod is Ready.
    pub ready: bool,
    /// The pod runs an older revision of the pod template.
    pub outdated: bool,
    /// Its last Admin status call answered.
    pub reachable: bool,
    /// When it stopped answering (milliseconds on the caller's clock); `None` while it answers
    /// or before it ever did.
    pub down_since_ms: Option<u64>,
    /// What it reported on its last answer, by partition.
    pub copies: BTreeMap<usize, CopyReport>,
    /// The topology version it holds.
    pub topology_version: u64,
}

/// A copy on its way from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The node losing its copy.
    pub from: String,
    /// The node gaining one.
    pub to: String,
}

/// One partition's entry in the recorded map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Primary, replicas and epoch.
    pub copies: Copies,
    /// The replicas the primary last counted in sync: what a failover trusts once the primary
    /// is gone.
    pub in_sync: Vec<String>,
    /// Lag per replica, from the primary's last report: (node, entries, millis).
    pub lag: Vec<(String, u64, u64)>,
    /// A move in flight.
    pub moving: Option<Move>,
    /// Why the partition is not healthy, if it is not.
    pub message: Option<String>,
}

/// The recorded map and its version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// One entry per partition; empty before the first placement (or when status was lost).
    pub map: Vec<Entry>,
    /// The map's version.
    pub version: u64,
}

/// A node call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make `node` primary of `partition` at `epoch`. Copies in `fence` (node, epoch) still
    /// claiming primary at an older epoch are fenced first, and the promotion waits until `node`
    /// holds the highest end offset they report: a switchover loses nothing.
    Promote {
        /// The partition.
        partition: usize,
        /// The new primary.
        node: String,
        /// The new epoch.
        epoch: u64,
        /// Old primaries to fence first.
        fence: Vec<(String, u64)>,
        /// Whether `node` hosts the partition already (promote keeps its log) or not (assign).
        hosted: bool,
        /// Why: "failover", "switchover", "placement" or "repair".
        reason: Reason,
    },
    /// Make `node` follow `primary` for `partition` at `epoch`.
    Follow {
        /// The partition.
        partition: usize,
        /// The follower.
        node: String,
        /// The primary.
        primary: String,
        /// The epoch.
        epoch: u64,
    },
    /// Remove `node`'s copy of `partition`.
    Drop {
        /// The partition.
        partition: usize,
        /// The node.
        node: String,
        /// At least the epoch the node holds.
        epoch: u64,
        /// Drop it even if the node still claims to lead it: a stray old primary at an epoch
        /// below the map's (sent at that epoch, so a node promoted since refuses it).
        force: bool,
    },
    /// Delete a pod so that the StatefulSet controller recreates it from the new template.
    DeletePod {
        /// The pod.
        pod: String,
    },
    /// Send the recorded map to a node whose topology is older.
    PushTopology {
        /// The node.
        node: String,
    },
}

/// Why a primary is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// First placement of the partition.
    Placement,
    /// The primary was lost.
    Failover,
    /// A planned change of primary (requested, rebalance, drain or rollout).
    Switchover,
    /// The map names a primary the nodes have not caught up with.
    Repair,
}

/// What the plan says of a requested switchover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchoverState {
    /// Recorded; the new primary has not taken over yet.
    Pending,
    /// The target is primary.
    Done,
    /// It cannot be done; why.
    Refused(String),
}

/// A change of primary the plan makes, for Events and `status.lastFailover`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The partition.
    pub partition: usize,
    /// The old primary.
    pub from: Option<String>,
    /// The new one.
    pub to: String,
    /// The new epoch.
    pub epoch: u64,
    /// Whether it was planned (a switchover) rather than a failover.
    pub planned: bool,
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The map to record before acting.
    pub map: Vec<Entry>,
    /// Its version: bumped when primaries, replicas, epochs or moves changed.
    pub version: u64,
    /// Node calls, in order, made after the map is recorded.
    pub actions: Vec<Action>,
    /// Changes of primary this plan starts.
    pub takeovers: Vec<Takeover>,
    /// Moves started and finished by this plan, as (partition, from, to, started).
    pub moves: Vec<(usize, String, String, bool)>,
    /// Replicas the StatefulSet should have: `nodes`, or more while higher pods still hold
    /// copies (they are drained first).
    pub statefulset_replicas: usize,
    /// The outcome of a requested switchover, if one was asked for.
    pub switchover: Option<SwitchoverState>,
    /// Partitions failing over (primary lost, not yet replaced).
    pub failing_over: Vec<usize>,
    /// Pods of an older revision still to restart.
    pub rolling: Vec<String>,
    /// Why nothing is placed yet, while nothing is.
    pub unplaced: Option<String>,
    /// The map, once the moves in flight are done, is the balanced one (every copy where
    /// placement wants it, every primary too unless a user chose it): a rebalance request is
    /// handled. False whenever the planner did not look (rebalancing off, a rollout going on,
    /// a partition without a primary).
    pub balanced: bool,
    /// The map is not yet where placement wants it and the planner is moving it there
    /// (rebalancing, a drain or a copy count repaired), even if no move is in flight at this
    /// instant (between two batches, or while an added copy catches up): the set is not Ready.
    pub unbalanced: bool,
}

impl Plan {
    /// Whether the plan changes nothing: the nodes match the recorded map.
    pub fn is_quiet(&self) -> bool {
        self.actions.is_empty()
    }
}

/// What the Follow calls carried out so far in a plan mean for a promotion that comes after
/// them in the same plan.
///
/// A failover (or a repair) moves the partition's replicas to the new epoch before it promotes:
/// from then on they refuse the old primary, which may only be cut off from the operator and
/// still take writes. Until its Follow lands, though, a replica acknowledges the old primary's
/// writes, and the planner chose the new primary from reports taken before that. The new
/// primary must hold everything such a replica acknowledged, or the replica truncates it when
/// it follows and a QUORUM-acknowledged write is lost (invariant 3). So:
/// - the promotion waits until the new primary holds the highest offset a repointed replica
///   held once it moved (a Follow answers with it): the promotion's `min_offset`;
/// - a promotion after a Follow that failed is not made in this plan: that replica may still
///   be acknowledging the old primary's writes. The next plan decides again from fresh reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repointed {
    moved: BTreeMap<(usize, u64), Result<u64, String>>,
}

impl Repointed {
    /// Records how `action` went, if it is a Follow: the offset of the copy's last entry once
    /// it followed, or why it failed.
    pub fn record(&mut self, action: &Action, outcome: Result<u64, String>) {
        let Action::Follow {
            partition,
            node,
            epoch,
            ..
        } = action
        else {
            return;
        };
        let outcome = outcome.map_err(|why| format!("{node} did not move to epoch {epoch}: {why}"));
        let merged = match (self.moved.remove(&(*partition, *epoch)), outcome) {
            (Some(Err(first)), _) => Err(first),
            (_, Err(why)) => Err(why),
            (Some(Ok(a)), Ok(b)) => Ok(a.max(b)),
            (None, Ok(b)) => Ok(b),
        };
        self.moved.insert((*partition, *epoch), merged);
    }

    /// For a promotion of `partition` at `epoch`: the offset the new primary must hold before it
    /// takes over (0 when no replica was moved first), or why it must wait for the next plan.
    pub fn before_promotion(&self, partition: usize, epoch: u64) -> Result<u64, String> {
        self.moved
            .get(&(partition, epoch))
            .cloned()
            .unwrap_or(Ok(0))
    }
}

/// The ordinal in a pod name `<set>-<ordinal>`.
pub fn ordinal(name: &str) -> Option<usize> {
    name.rsplit_once('-')?.1.parse().ok()
}

struct View<'a> {
    nodes: BTreeMap<&'a str, &'a Node>,
    now_ms: u64,
    window_ms: u64,
}

impl View<'_> {
    fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name).copied()
    }

    fn reachable(&self, name: &str) -> bool {
        self.node(name).is_some_and(|n| n.reachable)
    }

    fn report(&self, name: &str, partition: usize) -> Option<&CopyReport> {
        self.node(name)
            .filter(|n| n.reachable)
            .and_then(|n| n.copies.get(&partition))
    }

    /// A node that has stopped answering long enough, or whose pod is gone or unready while
    /// it does not answer.
    fn failed(&self, name: &str) -> bool {
        match self.node(name) {
            None => true,
            Some(n) if n.reachable => false,
            Some(n) if !n.pod || !n.ready => true,
            Some(n) => n
                .down_since_ms
                .is_none_or(|since| self.now_ms.saturating_sub(since) >= self.window_ms),
        }
    }

    fn primary_ok(&self, e: &Entry, partition: usize) -> bool {
        let Some(p) = &e.copies.primary else {
            return false;
        };
        self.report(p, partition)
            .is_some_and(|r| r.role == Role::Primary && r.epoch == e.copies.epoch)
    }

    fn follows(&self, node: &str, e: &Entry, partition: usize) -> bool {
        self.report(node, partition).is_some_and(|r| {
            r.role == Role::Replica
                && r.epoch == e.copies.epoch
                && r.following.as_deref() == e.copies.primary.as_deref()
        })
    }

    /// Whether `node` is an in-sync replica of the entry's live primary.
    fn in_sync(&self, node: &str, e: &Entry, partition: usize) -> bool {
        self.follows(node, e, partition)
            && self.report(node, partition).is_some_and(|r| r.streaming)
            && e.copies
                .primary
                .as_deref()
                .and_then(|p| self.report(p, partition))
                .is_some_and(|r| r.replicas.iter().any(|x| x.node == node && x.in_sync))
    }

    fn highest_epoch(&self, partition: usize) -> u64 {
        self.nodes
            .values()
            .filter_map(|n| n.copies.get(&partition))
            .map(|r| r.epoch.max(r.last.0))
            .max()
            .unwrap_or(0)
    }
}

/// Plans the next step for a set.
pub fn plan(desired: &Desired, observed: &[Node], current: &Current, now_ms: u64) -> Plan {
    let view = View {
        nodes: observed.iter().map(|n| (n.name.as_str(), n)).collect(),
        now_ms,
        window_ms: desired.detection_window_ms,
    };
    let set_nodes: Vec<String> = eligible(desired, observed);
    let mut plan = Plan {
        version: current.version,
        ..Plan::default()
    };
    let mut map = start(desired, observed, current);
    refresh_sync(&view, &mut map);

    place_new(desired, &view, &set_nodes, &mut map, &mut plan);
    // A partition placed by this plan has had its step; the nodes' reports predate it.
    let placed: BTreeSet<usize> = plan.actions.iter().filter_map(promoted).collect();
    for p in (0..map.len()).filter(|p| !placed.contains(p)) {
        heal(desired, &view, p, &mut map, &mut plan);
    }
    switchover(desired, &view, &mut map, &mut plan);
    moves(desired, &view, &set_nodes, &mut map, &mut plan);
    rollout(desired, &view, observed, &mut map, &mut plan);
    strays(&view, observed, &map, &mut plan);

    // A map with nothing placed is no map: it is neither recorded nor versioned.
    if current.map.is_empty() && map.iter().all(|e| e.copies.nodes().next().is_none()) {
        plan.unplaced = map.iter().find_map(|e| e.message.clone());
        map.clear();
    }
    let changed = map.len() != current.map.len()
        || map
            .iter()
            .zip(&current.map)
            .any(|(a, b)| a.copies != b.copies || a.moving != b.moving);
    if changed {
        // Above any topology a node holds too: after a lost status, the recorded version
        // starts again from nothing, and a lower one would never be pushed.
        let held = observed
            .iter()
            .map(|n| n.topology_version)
            .max()
            .unwrap_or(0);
        plan.version = current.version.max(held) + 1;
    }
    for n in observed {
        if n.reachable && n.topology_version < plan.version && map_complete(&map) {
            plan.actions.push(Action::PushTopology {
                node: n.name.clone(),
            });
        }
    }
    // While the map does not know where a partition lives (nothing placed yet, or a map
    // rebuilt after a lost status from the nodes that answered), no pod goes: one that has not
    // answered may hold it.
    let unknown = map.is_empty() || map.iter().any(|e| e.copies.primary.is_none());
    let highest = map
        .iter()
        .flat_map(|e| e.copies.nodes().filter_map(|n| ordinal(n)))
        .chain(
            observed
                .iter()
                .filter(|n| n.pod && unknown)
                .map(|n| n.ordinal),
        )
        .max();
    plan.statefulset_replicas = desired.nodes.max(highest.map_or(0, |h| h + 1));
    plan.map = map;
    plan
}

/// The partition an action promotes a node for, if it is a promotion.
fn promoted(action: &Action) -> Option<usize> {
    match action {
        Action::Promote { partition, .. } => Some(*partition),
        _ => None,
    }
}

/// Pod names of the nodes the map should use: ordinals below `nodes`.
fn eligible(desired: &Desired, observed: &[Node]) -> Vec<String> {
    let prefix = observed
        .iter()
        .find_map(|n| n.name.rsplit_once('-').map(|(p, _)| p.to_string()));
    match prefix {
        Some(prefix) => (0..desired.nodes)
            .map(|i| format!("{prefix}-{i}"))
            .collect(),
        None => Vec::new(),
    }
}

/// Whether every partition has a primary, so a topology can be built from the map.
fn map_complete(map: &[Entry]) -> bool {
    !map.is_empty() && map.iter().all(|e| e.copies.primary.is_some())
}

/// The map to start from: the recorded one, or, when there is none (a new set, or lost
/// status), one rebuilt from the nodes' own reports.
///
/// A recorded entry without a primary was itself rebuilt, from the nodes that answered then;
/// so was one that a node leads at an epoch above it (an epoch the map never recorded: the map
/// is older than what was acted on). Either is completed from the reports of the nodes that
/// answer now (a node that was away may hold the partition, even lead it), rather than placed
/// afresh over their data, left waiting, or left with two primaries.
fn start(desired: &Desired, observed: &[Node], current: &Current) -> Vec<Entry> {
    let mut map = if current.map.len() == desired.partitions {
        current.map.clone()
    } else {
        vec![Entry::default(); desired.partitions]
    };
    for (p, entry) in map.iter_mut().enumerate() {
        let holders: Vec<(&Node, &CopyReport)> = observed
            .iter()
            .filter_map(|n| n.copies.get(&p).map(|r| (n, r)))
            .collect();
        let Some(epoch) = holders.iter().map(|(_, r)| r.epoch).max() else {
            continue;
        };
        let led_above = holders
            .iter()
            .any(|(_, r)| r.role == Role::Primary && r.epoch > entry.copies.epoch);
        if entry.copies.primary.is_some() && !led_above {
            continue;
        }
        if let Some(old) = entry.copies.primary.take() {
            entry.copies.replicas.push(old);
            entry.in_sync.clear();
            entry.lag.clear();
            entry.moving = None;
        }
        let epoch = epoch.max(entry.copies.epoch);
        let primaries: Vec<&str> = holders
            .iter()
            .filter(|(_, r)| r.role == Role::Primary && r.epoch == epoch)
            .map(|(n, _)| n.name.as_str())
            .collect();
        entry.copies.epoch = epoch;
        if let [only] = primaries.as_slice() {
            entry.copies.primary = Some(only.to_string());
        }
        let mut replicas: Vec<String> = holders
            .iter()
            .map(|(n, _)| n.name.clone())
            .chain(entry.copies.replicas.iter().cloned())
            .filter(|n| Some(n) != entry.copies.primary.as_ref())
            .collect();
        sort_by_ordinal(&mut replicas);
        replicas.dedup();
        entry.copies.replicas = replicas;
        // Nothing is known to be in sync until the primary says so.
    }
    map
}

fn sort_by_ordinal(names: &mut [String]) {
    names.sort_by_key(|n| (ordinal(n), n.clone()));
}

/// Copies the live primaries' view of their replicas (in sync, lag) into the map.
fn refresh_sync(view: &View, map: &mut [Entry]) {
    for (p, e) in map.iter_mut().enumerate() {
        if !view.primary_ok(e, p) {
            continue;
        }
        let Some(report) = e.copies.primary.as_deref().and_then(|n| view.report(n, p)) else {
            continue;
        };
        let mut in_sync: Vec<String> = e
            .copies
            .replicas
            .iter()
            .filter(|r| report.replicas.iter().any(|x| &x.node == *r && x.in_sync))
            .cloned()
            .collect();
        sort_by_ordinal(&mut in_sync);
        e.in_sync = in_sync;
        e.lag = e
            .copies
            .replicas
            .iter()
            .filter_map(|r| {
                report
                    .replicas
                    .iter()
                    .find(|x| &x.node == r)
                    .map(|x| (r.clone(), x.lag_entries, x.lag_ms))
            })
            .collect();
        e.message = None;
    }
}

/// First placement: partitions with no copy at all get one, once every node of the set
/// answers (placing on a node still starting would unbalance the map for good).
fn place_new(desired: &Desired, view: &View, nodes: &[String], map: &mut [Entry], plan: &mut Plan) {
    let empty: Vec<usize> = (0..map.len())
        .filter(|&p| map[p].copies.nodes().next().is_none())
        .collect();
    if empty.is_empty() || nodes.is_empty() {
        return;
    }
    // Any other pod too: one that does not answer may hold the partition (a map rebuilt after
    // a lost status knows only what answered), and placing it afresh would reuse its epoch.
    let pods = view.nodes.values().filter(|n| n.pod).map(|n| &n.name);
    if let Some(missing) = nodes.iter().chain(pods).find(|n| !view.reachable(n)) {
        for &p in &empty {
            map[p].message = Some(format!("waiting for {missing} to answer before placing"));
        }
        return;
    }
    let copies: Vec<Copies> = map.iter().map(|e| e.copies.clone()).collect();
    let target = placement::target(nodes, &copies, desired.replication_factor);
    for p in empty {
        let Some(primary) = target[p].primary.clone() else {
            continue;
        };
        let epoch = map[p].copies.epoch.max(view.highest_epoch(p)) + 1;
        map[p].copies = Copies {
            primary: Some(primary.clone()),
            replicas: target[p].replicas.clone(),
            epoch,
        };
        map[p].message = None;
        plan.actions.push(Action::Promote {
            partition: p,
            node: primary.clone(),
            epoch,
            fence: Vec::new(),
            hosted: view.report(&primary, p).is_some(),
            reason: Reason::Placement,
        });
        for r in &target[p].replicas {
            plan.actions.push(Action::Follow {
                partition: p,
                node: r.clone(),
                primary: primary.clone(),
                epoch,
            });
        }
    }
}

/// Failover and repair of one partition: a primary that answers at the map's epoch, and every
/// replica following it.
fn heal(desired: &Desired, view: &View, p: usize, map: &mut [Entry], plan: &mut Plan) {
    let e = &map[p];
    let Some(primary) = e.copies.primary.clone() else {
        if e.copies.nodes().next().is_some() {
            lost_primary(desired, view, p, map, plan, None);
        }
        return;
    };
    let epoch = e.copies.epoch;
    match view.report(&primary, p) {
        Some(r) if r.role == Role::Primary && r.epoch == epoch => {}
        Some(r) if r.epoch > epoch => {
            // The node is ahead of the map (a map older than what was acted on): adopt its
            // epoch rather than fight it.
            map[p].copies.epoch = r.epoch;
            map[p].message = Some(format!(
                "{primary} holds epoch {} above the recorded {epoch}; adopted",
                r.epoch
            ));
            return;
        }
        report if view.reachable(&primary) => {
            // The map names a primary the node has not taken up: a crash between recording
            // and acting, or a pod that came back. Copies still claiming primary at an older
            // epoch are fenced first.
            let hosted = report.is_some();
            let has_data = e
                .copies
                .nodes()
                .any(|n| view.report(n, p).is_some_and(|r| r.last.1 > 0));
            if !hosted && has_data {
                // Promoting an empty copy over copies with data would lose them.
                lost_primary(desired, view, p, map, plan, Some(primary));
                return;
            }
            let mut fence = old_primaries(view, p, &map[p]);
            // An old primary that does not answer is waited for, unless it is lost (failed).
            // Lost, it is left out; if it was the latest one (not superseded by one that is
            // fenced now), this is a failover whose promotion did not happen, and the recorded
            // primary goes ahead only if a failover would still choose it.
            if fence
                .iter()
                .any(|(n, _)| !view.reachable(n) && !view.failed(n))
            {
                return;
            }
            let latest = |reachable: bool| {
                fence
                    .iter()
                    .filter(|(n, _)| view.reachable(n) == reachable)
                    .map(|(_, epoch)| *epoch)
                    .max()
            };
            let superseded = latest(false) <= latest(true);
            let lost: Vec<String> = fence
                .iter()
                .filter(|(n, _)| !view.reachable(n))
                .map(|(n, _)| n.clone())
                .collect();
            fence.retain(|(n, _)| view.reachable(n));
            // A promotion that fenced an old primary and then failed leaves it fenced. If the
            // new primary cannot catch up with it (a fenced primary serves no new stream: the
            // target restarted, say), no one would take writes ever again: the change is undone,
            // the fenced primary, which holds every write, leading again at a new epoch.
            let fenced = fence
                .iter()
                .filter_map(|(n, _)| view.report(n, p).map(|r| (r, n)))
                .filter(|(r, _)| r.role == Role::Fenced)
                .max_by_key(|(r, _)| r.last);
            if let (Some(mine), Some((theirs, back))) = (report, fenced)
                && !mine.streaming
                && mine.last < theirs.last
            {
                let back = back.clone();
                start_switchover(view, p, &back, &mut map[p], plan);
                return;
            }
            if let Some(gone) = lost.first().filter(|_| !superseded) {
                match still_chosen(desired, view, p, &map[p], &lost) {
                    Ok(true) => {}
                    Ok(false) => {
                        let gone = gone.clone();
                        lost_primary(desired, view, p, map, plan, Some(gone));
                        return;
                    }
                    Err(why) => {
                        plan.failing_over.push(p);
                        map[p].message = Some(no_candidate(&why, Some(gone)));
                        return;
                    }
                }
            }
            // The replicas move to the new epoch before the promotion, as in a failover: an
            // old primary that is only cut off from the operator (left out of `fence` above)
            // can then no longer gather a QUORUM of acknowledgements while the new one leads.
            follow_all(view, p, &map[p], plan);
            plan.actions.push(Action::Promote {
                partition: p,
                node: primary.clone(),
                epoch,
                fence,
                hosted,
                reason: Reason::Repair,
            });
            return;
        }
        _ if view.failed(&primary) => {
            lost_primary(desired, view, p, map, plan, Some(primary));
            return;
        }
        _ => {
            map[p].message = Some(format!(
                "primary {primary} is not answering; replaced if it stays so for the detection window"
            ));
            return;
        }
    }
    follow_all(view, p, &map[p], plan);
}

/// Whether a failover of partition `p`, with the copies in `lost` gone, would choose the
/// recorded primary of `e` (or one no better): the recorded primary counts as in sync, as it was
/// when it was chosen.
fn still_chosen(
    desired: &Desired,
    view: &View,
    p: usize,
    e: &Entry,
    lost: &[String],
) -> Result<bool, NoCandidate> {
    let mut candidates: Vec<failover::Replica> = e
        .copies
        .nodes()
        .filter(|n| !lost.contains(n))
        .map(|n| {
            let report = view.report(n, p);
            failover::Replica {
                node: n.clone(),
                reachable: report.is_some(),
                in_sync: e.in_sync.contains(n) || Some(n) == e.copies.primary.as_ref(),
                position: report.map_or((0, 0), |r| r.last),
            }
        })
        .collect();
    trust_ahead(&mut candidates, desired.require_quorum);
    let best = failover::choose(
        &candidates,
        desired.replication_factor,
        desired.require_quorum,
    )?;
    Ok(candidates
        .iter()
        .find(|c| Some(&c.node) == e.copies.primary.as_ref())
        .is_some_and(|c| c.reachable && c.position >= best.position))
}

/// The in-sync record is the primary's word at the last observation: a replica that caught up
/// since (a restarted one, say) may hold QUORUM-acknowledged writes no recorded one has. A
/// reachable replica ahead of every trusted one holds all they hold, so requireQuorum's
/// guarantee (the highest of enough reachable replicas) counts it.
fn trust_ahead(candidates: &mut [failover::Replica], require_quorum: bool) {
    let best = candidates
        .iter()
        .filter(|c| c.reachable && c.in_sync)
        .map(|c| c.position)
        .max();
    if let Some(best) = best.filter(|_| require_quorum) {
        for c in candidates
            .iter_mut()
            .filter(|c| c.reachable && c.position > best)
        {
            c.in_sync = true;
        }
    }
}

/// Copies of partition `p` other than the map's primary that claim primary at an older epoch.
fn old_primaries(view: &View, p: usize, e: &Entry) -> Vec<(String, u64)> {
    view.nodes
        .values()
        .filter(|n| Some(&n.name) != e.copies.primary.as_ref())
        .filter_map(|n| {
            let r = n.copies.get(&p)?;
            // A fenced one too: a promotion that fenced it and then failed (the target did not
            // catch up in time) must still wait for its tail.
            let led = matches!(r.role, Role::Primary | Role::Fenced);
            (led && r.epoch < e.copies.epoch).then(|| (n.name.clone(), r.epoch))
        })
        .collect()
}

/// Tells every reachable replica that does not follow the map's primary at its epoch to do so.
fn follow_all(view: &View, p: usize, e: &Entry, plan: &mut Plan) {
    let Some(primary) = &e.copies.primary else {
        return;
    };
    // Until the new primary has taken over, an old primary is left to the promotion, which
    // fences it, waits for its tail and only then repoints it: repointed before, it would no
    // longer count as an old primary, and a failed promotion would be retried without its tail.
    let taken_over = view.primary_ok(e, p);
    for r in &e.copies.replicas {
        if !view.reachable(r) || view.follows(r, e, p) {
            continue;
        }
        let report = view.report(r, p);
        if report.is_some_and(|x| x.epoch > e.copies.epoch) {
            continue;
        }
        let leads = report.is_some_and(|x| {
            matches!(x.role, Role::Primary | Role::Fenced) && x.epoch < e.copies.epoch
        });
        if leads && !taken_over {
            continue;
        }
        plan.actions.push(Action::Follow {
            partition: p,
            node: r.clone(),
            primary: primary.clone(),
            epoch: e.copies.epoch,
        });
    }
}

/// The primary is lost (or the map has none): promote the best replica, or say why not.
fn lost_primary(
    desired: &Desired,
    view: &View,
    p: usize,
    map: &mut [Entry],
    plan: &mut Plan,
    lost: Option<String>,
) {
    plan.failing_over.push(p);
    let e = &map[p];
    if !desired.failover {
        map[p].message = Some(format!(
            "primary {} is lost and failover.enabled is false; waiting",
            lost.as_deref().unwrap_or("(none)")
        ));
        return;
    }
    let mut candidates: Vec<failover::Replica> = e
        .copies
        .nodes()
        .filter(|n| Some(*n) != lost.as_ref())
        .map(|n| {
            let report = view.report(n, p);
            failover::Replica {
                node: n.clone(),
                reachable: report.is_some(),
                // Without a primary's word (a lost status), a copy is trusted as in sync when
                // the map has no record at all.
                in_sync: e.in_sync.contains(n) || (e.in_sync.is_empty() && lost.is_none()),
                position: report.map_or((0, 0), |r| r.last),
            }
        })
        .collect();
    trust_ahead(&mut candidates, desired.require_quorum);
    let chosen = match failover::choose(
        &candidates,
        desired.replication_factor,
        desired.require_quorum,
    ) {
        Ok(c) => c.node.clone(),
        Err(why) => {
            map[p].message = Some(no_candidate(&why, lost.as_deref()));
            return;
        }
    };
    let epoch = e.copies.epoch.max(view.highest_epoch(p)) + 1;
    let mut replicas: Vec<String> = e
        .copies
        .nodes()
        .filter(|n| **n != chosen)
        .cloned()
        .collect();
    sort_by_ordinal(&mut replicas);
    let entry = &mut map[p];
    entry.copies = Copies {
        primary: Some(chosen.clone()),
        replicas,
        epoch,
    };
    entry.in_sync.retain(|n| *n != chosen);
    entry.lag.clear();
    entry.message = None;
    // The replicas it can reach move to the new epoch first: from then on they refuse the lost
    // primary, which may only be cut off from the operator and come back, so it can no longer
    // gather a QUORUM of acknowledgements for writes the new primary never sees.
    follow_all(view, p, &map[p], plan);
    plan.actions.push(Action::Promote {
        partition: p,
        node: chosen.clone(),
        epoch,
        fence: Vec::new(),
        hosted: true,
        reason: Reason::Failover,
    });
    plan.takeovers.push(Takeover {
        partition: p,
        from: lost,
        to: chosen,
        epoch,
        planned: false,
    });
}

fn no_candidate(why: &NoCandidate, lost: Option<&str>) -> String {
    format!(
        "primary {} is lost and no replica can be promoted safely: {why}",
        lost.unwrap_or("(none)")
    )
}

/// A planned change of primary to `to`, recorded now and carried out by a fencing promote.
fn start_switchover(view: &View, p: usize, to: &str, e: &mut Entry, plan: &mut Plan) {
    let Some(from) = e.copies.primary.clone() else {
        return;
    };
    let epoch = e.copies.epoch.max(view.highest_epoch(p)) + 1;
    let old_epoch = e.copies.epoch;
    let mut replicas: Vec<String> = e.copies.nodes().filter(|n| *n != to).cloned().collect();
    sort_by_ordinal(&mut replicas);
    e.copies = Copies {
        primary: Some(to.to_string()),
        replicas,
        epoch,
    };
    e.in_sync.retain(|n| n != to);
    e.in_sync.push(from.clone());
    sort_by_ordinal(&mut e.in_sync);
    e.lag.clear();
    plan.actions.push(Action::Promote {
        partition: p,
        node: to.to_string(),
        epoch,
        fence: vec![(from.clone(), old_epoch)],
        hosted: true,
        reason: Reason::Switchover,
    });
    plan.takeovers.push(Takeover {
        partition: p,
        from: Some(from),
        to: to.to_string(),
        epoch,
        planned: true,
    });
}

/// Whether partition `p` is quiet: its primary answers at the map's epoch and every replica
/// is in sync with it.
fn healthy(view: &View, p: usize, e: &Entry) -> bool {
    view.primary_ok(e, p) && e.copies.replicas.iter().all(|r| view.in_sync(r, e, p))
}

/// A switchover asked for by annotation.
fn switchover(desired: &Desired, view: &View, map: &mut [Entry], plan: &mut Plan) {
    let Some((p, to)) = &desired.switchover else {
        return;
    };
    let (p, to) = (*p, to.as_str());
    let Some(e) = map.get_mut(p) else {
        plan.switchover = Some(SwitchoverState::Refused(format!(
            "partition {p} does not exist; the set has {} partitions",
            desired.partitions
        )));
        return;
    };
    if e.copies.primary.as_deref() == Some(to) {
        plan.switchover = Some(if view.primary_ok(e, p) {
            SwitchoverState::Done
        } else {
            SwitchoverState::Pending
        });
        return;
    }
    if !e.copies.replicas.iter().any(|r| r == to) {
        plan.switchover = Some(SwitchoverState::Refused(format!(
            "{to} holds no replica of partition {p}; its replicas are {}",
            e.copies.replicas.join(", ")
        )));
        return;
    }
    if e.moving.is_some() || !view.primary_ok(e, p) || !view.in_sync(to, e, p) {
        plan.switchover = Some(SwitchoverState::Pending);
        e.message = Some(format!(
            "switchover to {to} waits until the primary answers and {to} is in sync"
        ));
        return;
    }
    start_switchover(view, p, to, e, plan);
    plan.switchover = Some(SwitchoverState::Pending);
}

/// Moves: finish the ones in flight, then start new ones up to `maxConcurrentMoves`.
fn moves(desired: &Desired, view: &View, nodes: &[String], map: &mut [Entry], plan: &mut Plan) {
    if nodes.is_empty() || map.iter().any(|e| e.copies.primary.is_none()) {
        return;
    }
    // Progress moves in flight.
    for (p, entry) in map.iter_mut().enumerate() {
        let Some(m) = entry.moving.clone() else {
            continue;
        };
        let to_ready =
            entry.copies.primary.as_deref() == Some(m.to.as_str()) || view.in_sync(&m.to, entry, p);
        if !view.primary_ok(entry, p) || !to_ready {
            continue;
        }
        if entry.copies.primary.as_deref() == Some(m.from.as_str()) {
            start_switchover(view, p, &m.to, entry, plan);
            continue;
        }
        // The old copy goes only once every other replica is in sync with the primary: right
        // after a switchover they are still being repointed at the new primary, which would
        // otherwise be the only in-sync copy left (and a failover would find no candidate).
        if !rest_in_sync(view, p, entry, &m.from) {
            continue;
        }
        entry.moving = None;
        drop_replica(view, p, entry, &m.from, plan);
        plan.moves.push((p, m.from, m.to, false));
    }

    let draining = map
        .iter()
        .any(|e| e.copies.nodes().any(|n| !nodes.contains(n)));
    // A rolling update moves primaries off the pod it restarts next; rebalancing them back
    // meanwhile would undo it. Balance is restored once every pod runs the new template.
    let rolling = view.nodes.values().any(|n| n.pod && n.outdated);
    // A partition with a copy too few or too many (replicationFactor changed, or a map rebuilt
    // from the nodes while one was away) is repaired regardless, like a drain.
    let copies = desired.replication_factor.clamp(1, nodes.len());
    let misreplicated = map.iter().any(|e| e.copies.nodes().count() != copies);
    if (!desired.rebalance || rolling) && !draining && !misreplicated {
        return;
    }
    // The map as it will be once the moves in flight are done.
    let effective: Vec<Copies> = map.iter().map(settled).collect();
    let target = placement::target(nodes, &effective, desired.replication_factor);
    let pinned = |p: usize, primary: Option<&String>| {
        desired
            .pinned
            .iter()
            .any(|(q, n)| *q == p && primary == Some(n))
    };
    let settled_on_target = effective
        .iter()
        .zip(&target)
        .enumerate()
        .all(|(p, (e, t))| {
            let have: BTreeSet<&String> = e.nodes().collect();
            let want: BTreeSet<&String> = t.nodes().collect();
            have == want && (e.primary == t.primary || pinned(p, e.primary.as_ref()))
        });
    plan.balanced = desired.rebalance && !rolling && settled_on_target;
    plan.unbalanced =
        (desired.rebalance && !rolling && !settled_on_target) || draining || misreplicated;
    let mut in_flight = map.iter().filter(|e| e.moving.is_some()).count();
    // Copies being added without a move (below) are in flight until they are in sync.
    let catching_up = (0..map.len())
        .filter(|&p| {
            let e = &map[p];
            e.moving.is_none()
                && view.primary_ok(e, p)
                && e.copies
                    .replicas
                    .iter()
                    .any(|r| view.reachable(r) && !view.in_sync(r, e, p))
        })
        .count();
    // Drains first, then the rest, each in partition order.
    let mut order: Vec<usize> = (0..map.len()).collect();
    order.sort_by_key(|&p| !map[p].copies.nodes().any(|n| !nodes.contains(n)));
    for p in order {
        if in_flight >= desired.max_concurrent_moves {
            break;
        }
        if map[p].moving.is_some() {
            continue;
        }
        let want: BTreeSet<&String> = target[p].nodes().collect();
        let have: BTreeSet<&String> = map[p].copies.nodes().collect();
        let add = nodes.iter().find(|n| want.contains(n) && !have.contains(n));
        let remove = map[p].copies.nodes().find(|n| !want.contains(n)).cloned();
        match (add, remove) {
            (Some(to), Some(from)) => {
                // The copy that goes may be dead; every other must be in sync.
                let e = &map[p];
                let others_ok = view.primary_ok(e, p) && rest_in_sync(view, p, e, &from);
                if !view.reachable(to) || !others_ok {
                    continue;
                }
                let to = to.clone();
                let e = &mut map[p];
                add_replica(p, e, &to, plan);
                e.moving = Some(Move {
                    from: from.clone(),
                    to: to.clone(),
                });
                plan.moves.push((p, from, to, true));
                in_flight += 1;
            }
            (Some(to), None) => {
                // A copy missing: added, with nothing to drop once it is in sync.
                if !view.reachable(to)
                    || !view.primary_ok(&map[p], p)
                    || in_flight + catching_up >= desired.max_concurrent_moves
                {
                    continue;
                }
                add_replica(p, &mut map[p], to, plan);
                in_flight += 1;
            }
            (None, Some(from)) if map[p].copies.primary.as_ref() != Some(&from) => {
                // A copy too many: dropped once every other one is in sync.
                let e = &map[p];
                if !view.primary_ok(e, p) || !rest_in_sync(view, p, e, &from) {
                    continue;
                }
                drop_replica(view, p, &mut map[p], &from, plan);
            }
            _ if target[p].primary != map[p].copies.primary
                && desired.rebalance
                && !pinned(p, map[p].copies.primary.as_ref()) =>
            {
                let Some(to) = target[p].primary.clone() else {
                    continue;
                };
                if !healthy(view, p, &map[p]) {
                    continue;
                }
                start_switchover(view, p, &to, &mut map[p], plan);
                in_flight += 1;
            }
            _ => {}
        }
    }
}

/// Whether every replica of `e` but `except` is in sync with its primary.
fn rest_in_sync(view: &View, p: usize, e: &Entry, except: &str) -> bool {
    e.copies
        .replicas
        .iter()
        .filter(|r| *r != except)
        .all(|r| view.in_sync(r, e, p))
}

/// Adds `to` as a replica of partition `p` and tells it to follow the primary.
fn add_replica(p: usize, e: &mut Entry, to: &str, plan: &mut Plan) {
    e.copies.replicas.push(to.to_string());
    sort_by_ordinal(&mut e.copies.replicas);
    if let Some(primary) = e.copies.primary.clone() {
        plan.actions.push(Action::Follow {
            partition: p,
            node: to.to_string(),
            primary,
            epoch: e.copies.epoch,
        });
    }
}

/// Removes replica `from` of partition `p` from the map and drops its copy, at an epoch the
/// node accepts (never lower than the one it holds).
fn drop_replica(view: &View, p: usize, e: &mut Entry, from: &str, plan: &mut Plan) {
    let epoch = e
        .copies
        .epoch
        .max(view.report(from, p).map_or(0, |r| r.epoch));
    e.copies.replicas.retain(|r| r != from);
    e.in_sync.retain(|r| r != from);
    e.lag.retain(|(r, _, _)| r != from);
    plan.actions.push(Action::Drop {
        partition: p,
        node: from.to_string(),
        epoch,
        force: false,
    });
}

/// The copies of `e` once its move, if any, is done.
fn settled(e: &Entry) -> Copies {
    let Some(m) = &e.moving else {
        return e.copies.clone();
    };
    let primary = match &e.copies.primary {
        Some(p) if *p == m.from => Some(m.to.clone()),
        other => other.clone(),
    };
    let replicas = e
        .copies
        .nodes()
        .filter(|n| **n != m.from && Some(*n) != primary.as_ref())
        .cloned()
        .collect();
    Copies {
        primary,
        replicas,
        epoch: e.copies.epoch,
    }
}

/// Rolling update: one outdated pod at a time, replicas-only pods first; a pod that is primary
/// of something has its primaries switched over before it is deleted. Waits until every pod is
/// back, every partition quiet and no move is in flight.
fn rollout(desired: &Desired, view: &View, observed: &[Node], map: &mut [Entry], plan: &mut Plan) {
    let mut outdated: Vec<&Node> = observed
        .iter()
        .filter(|n| n.outdated && n.ordinal < desired.nodes.max(plan.statefulset_replicas))
        .collect();
    plan.rolling = outdated.iter().map(|n| n.name.clone()).collect();
    if outdated.is_empty() || !plan.actions.is_empty() {
        return;
    }
    let quiet = observed.iter().all(|n| n.pod && n.ready && n.reachable)
        && map.iter().all(|e| e.moving.is_none())
        && (0..map.len()).all(|p| healthy(view, p, &map[p]));
    if !quiet {
        return;
    }
    let primaries = |map: &[Entry], name: &str| {
        map.iter()
            .filter(|e| e.copies.primary.as_deref() == Some(name))
            .count()
    };
    outdated.sort_by_key(|n| (primaries(map, &n.name) > 0, std::cmp::Reverse(n.ordinal)));
    let Some(next) = outdated.first() else {
        return;
    };
    let name = next.name.clone();
    let mut switched = false;
    for (p, e) in map.iter_mut().enumerate() {
        if e.copies.primary.as_deref() != Some(name.as_str()) {
            continue;
        }
        // The best in-sync replica, preferring pods already updated.
        let to = e
            .copies
            .replicas
            .iter()
            .filter(|r| view.in_sync(r, e, p))
            .max_by_key(|r| {
                let updated = view.node(r).is_some_and(|n| !n.outdated);
                (updated, view.report(r, p).map(|x| x.last))
            })
            .cloned();
        if let Some(to) = to {
            start_switchover(view, p, &to, e, plan);
            switched = true;
        }
    }
    // A primary without any replica (replicationFactor 1) has nowhere to go: its pod restarts
    // with it, as it would on any restart, rather than never.
    let stays = |e: &Entry| {
        e.copies.primary.as_deref() == Some(name.as_str()) && !e.copies.replicas.is_empty()
    };
    if !switched && !map.iter().any(stays) {
        plan.actions.push(Action::DeletePod { pod: name });
    }
}

/// Copies the nodes hold that the map does not: a drop that did not happen (a crash after
/// recording it), or a copy from an older map. Dropped, unless the node is ahead of the map.
fn strays(view: &View, observed: &[Node], map: &[Entry], plan: &mut Plan) {
    for n in observed.iter().filter(|n| n.reachable) {
        for (&p, r) in &n.copies {
            let Some(e) = map.get(p) else {
                continue;
            };
            if e.copies.holds(&n.name) || e.copies.primary.is_none() || r.epoch > e.copies.epoch {
                continue;
            }
            if !view.primary_ok(e, p) {
                continue;
            }
            // A move finishing this plan drops it already.
            let dropped = plan.actions.iter().any(|a| {
                matches!(a, Action::Drop { partition, node, .. } if *partition == p && *node == n.name)
            });
            if dropped {
                continue;
            }
            // A copy that still leads (an old primary back after its copy left the map) is
            // dropped by force, at its own epoch. Told to follow the map's primary instead, it
            // would acknowledge writes as a replica the map does not name, and a failover,
            // which considers only the map's copies, could then lose a QUORUM-acknowledged
            // write that only it and the lost primary held.
            let drop = if r.role == Role::Primary {
                if r.epoch >= e.copies.epoch {
                    continue;
                }
                Action::Drop {
                    partition: p,
                    node: n.name.clone(),
                    epoch: r.epoch,
                    force: true,
                }
            } else {
                Action::Drop {
                    partition: p,
                    node: n.name.clone(),
                    epoch: e.copies.epoch.max(r.epoch),
                    force: false,
                }
            };
            plan.actions.push(drop);
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
