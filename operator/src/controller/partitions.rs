//! The partition side of a reconcile: observe the nodes, ask the planner, record its map, carry
//! out its node calls.
//!
//! The order is what makes it safe to kill the operator anywhere (DESIGN.md, invariant 6):
//! the planner's map is written to status first, guarded by the resourceVersion the plan was
//! computed from, so two operators (or a stale cache) cannot both record a change of primary;
//! only then are nodes called. A call that fails is retried by the next plan, which starts from
//! what the nodes then report.

use super::Context;
use crate::error::{Error, Result};
use crate::health::{NodeHealth, Targets};
use crate::nodes::{self, NodeConn, STATUS_TIMEOUT};
use crate::planner::Copies;
use crate::planner::plan::{self, Action, Current, Desired, Entry, Move, Plan, Reason};
use crate::requests;
use crate::resources::FIELD_MANAGER;
use crate::status::Partitions;
use crate::validate::Valid;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use partita_api::{
    FailoverRecord, PartitionMove, PartitionStatus, REBALANCE_ANNOTATION, ReplicaLag,
    ReplicatedPartitionSet, SWITCHOVER_ANNOTATION, SwitchoverStatus,
};
use partita_node::proto::{NodeAddress, PartitionRoute, PrimaryRole, Topology};
use partita_node::slot::SlotMap;
use std::collections::BTreeMap;
use std::time::Instant;

/// What the partition step hands to the status.
pub(super) struct Outcome {
    /// The partition side of the status.
    pub partitions: Partitions,
    /// The resourceVersion after the map was recorded, for the status write that follows.
    pub resource_version: Option<String>,
    /// Whether to look again soon (something is in flight).
    pub busy: bool,
}

/// The StatefulSet size the recorded map needs: `nodes`, or more while higher pods still hold
/// copies that are being drained, and never fewer than `live` (the StatefulSet's current size)
/// while the map is missing or some partition has no primary (a pod that does not answer may
/// hold it).
pub(super) fn statefulset_replicas(rps: &ReplicatedPartitionSet, live: Option<i32>) -> i32 {
    let partitions = rps.status.iter().flat_map(|s| s.partitions.iter());
    let highest = partitions
        .clone()
        .flat_map(|p| p.primary.iter().chain(p.replicas.iter()))
        .filter_map(|n| plan::ordinal(n))
        .max();
    let needed = highest.map_or(0, |h| h as i32 + 1);
    // A map with a partition lacking a primary, or no map at all while pods exist (a lost
    // status), cannot say which pods hold data: none is removed until it can.
    let mut entries = partitions.clone().peekable();
    let incomplete = entries.peek().is_none() || partitions.clone().any(|p| p.primary.is_none());
    let keep = if incomplete { live.unwrap_or(0) } else { 0 };
    rps.spec.nodes.max(needed).max(keep)
}

/// Observes, plans, records and acts for one set.
pub(super) async fn manage(
    rps: &ReplicatedPartitionSet,
    ctx: &Context,
    namespace: &str,
    valid: &Valid,
    pods: &[Pod],
    outdated: &[String],
) -> Result<Outcome> {
    let set = ObjectRef::from_obj(rps);
    let name = rps.name_any();
    let addresses: BTreeMap<String, String> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?;
            Some((
                p.name_any(),
                format!("{ip}:{}", ctx.settings.node_grpc_port),
            ))
        })
        .collect();
    ctx.health.watch(
        set.clone(),
        Targets {
            addresses: addresses.clone(),
            interval: ctx.settings.poll_interval,
            window: valid.detection_window,
        },
    );
    let health = ctx.health.poll_now(&set).await;
    let now = ctx.health.now_ms();

    let status = rps.status.clone().unwrap_or_default();
    let current = current(&status.partitions, status.map_version);
    let switchover_value = rps.annotations().get(SWITCHOVER_ANNOTATION).cloned();
    let switchover_open = switchover_value.as_ref().filter(|v| {
        status
            .switchover
            .as_ref()
            .is_none_or(|s| s.request != **v || s.state == "Pending")
    });
    let mut refused = None;
    let switchover = match switchover_open.map(|v| requests::parse_switchover(v)) {
        Some(Ok((partition, pod))) => Some((partition as usize, pod)),
        Some(Err(e)) => {
            refused = Some(e.to_string());
            None
        }
        None => None,
    };
    let rebalance_request = rps.annotations().get(REBALANCE_ANNOTATION).cloned();
    let rebalance_asked = rebalance_request
        .as_ref()
        .is_some_and(|r| status.rebalance_handled.as_ref() != Some(r));
    let desired = Desired {
        nodes: rps.spec.nodes.max(0) as usize,
        partitions: rps.spec.partitions.max(0) as usize,
        replication_factor: rps.spec.replication_factor.max(1) as usize,
        failover: rps.spec.failover.enabled,
        require_quorum: rps.spec.failover.require_quorum,
        detection_window_ms: valid.detection_window.as_millis() as u64,
        max_concurrent_moves: rps.spec.rebalance.max_concurrent_moves.max(1) as usize,
        rebalance: rps.spec.rebalance.auto || rebalance_asked,
        min_in_sync_replicas: rps.spec.replication.min_in_sync_replicas.max(0) as u32,
        switchover,
        pinned: status
            .switchover
            .as_ref()
            .filter(|s| s.state == "Done")
            .and_then(|s| requests::parse_switchover(&s.request).ok())
            .map(|(p, pod)| (p as usize, pod))
            .into_iter()
            .collect(),
    };
    let observed = observe(&name, pods, outdated, &current, &health);
    let plan = plan::plan(&desired, &observed, &current, now);

    let mut parts = partitions(&plan, &observed);
    parts.rebalance_handled = match rebalance_request {
        // Handled once the map is balanced, not merely between two batches of moves (the
        // primaries' switchovers that finish a rebalance are not moves).
        Some(r) if rebalance_asked && parts.moves_done() && plan.balanced => Some(r),
        _ => status.rebalance_handled.clone(),
    };
    parts.switchover = switchover_status(switchover_open, refused, &plan);

    // Record first. The whole status goes with the map: a server-side apply removes the fields
    // this manager set before and leaves out now, so a map alone would wipe the phase, the
    // conditions, `lastFailover`, `rebalanceHandled` and a finished switchover's outcome (whose
    // request would then be carried out again) until the status write that follows, and for
    // good if that write fails or the operator dies before it.
    let mut resource_version = rps.resource_version();
    if plan.version != current.version {
        let mut recorded = status.clone();
        recorded.partitions = parts.entries.clone();
        recorded.map_version = parts.map_version;
        if parts.switchover.is_some() {
            recorded.switchover = parts.switchover.clone();
        }
        let patch = serde_json::json!({
            "apiVersion": format!("{}/{}", partita_api::GROUP, partita_api::VERSION),
            "kind": "ReplicatedPartitionSet",
            "metadata": {"resourceVersion": resource_version},
            "status": recorded,
        });
        let sets: Api<ReplicatedPartitionSet> = Api::namespaced(ctx.client.clone(), namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let written = sets
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await?;
        resource_version = written.resource_version();
    }

    // Then act.
    let addresses = node_addresses(&health, &addresses, ctx.settings.node_resp_port);
    let started = Instant::now();
    for t in &plan.takeovers {
        let (reason, note) = if t.planned {
            ("SwitchoverStarted", "switching over")
        } else {
            ("FailoverStarted", "failing over")
        };
        super::reconcile::publish(
            rps,
            ctx,
            if t.planned {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason,
            "Promote",
            format!(
                "partition {}: {note} from {} to {} at epoch {}",
                t.partition,
                t.from.as_deref().unwrap_or("(none)"),
                t.to,
                t.epoch
            ),
        )
        .await;
    }
    for (p, from, to, started) in &plan.moves {
        let (reason, verb) = if *started {
            ("MoveStarted", "moving")
        } else {
            ("MoveCompleted", "moved")
        };
        super::reconcile::publish(
            rps,
            ctx,
            EventType::Normal,
            reason,
            "Move",
            format!("partition {p}: {verb} a copy from {from} to {to}"),
        )
        .await;
    }
    let mut errors = Vec::new();
    let mut promoted = Vec::new();
    // What the replicas moved to a new epoch held then: a promotion after them waits for it.
    let mut repointed = plan::Repointed::default();
    for action in &plan.actions {
        let min_offset = match action {
            Action::Promote {
                partition,
                node,
                epoch,
                ..
            } => match repointed.before_promotion(*partition, *epoch) {
                Ok(offset) => offset,
                Err(why) => {
                    tracing::warn!(set = %name, ?action, "promotion left to the next plan: {why}");
                    errors.push(Error::Node {
                        node: node.clone(),
                        message: format!("not promoted yet: {why}"),
                    });
                    continue;
                }
            },
            _ => 0,
        };
        tracing::info!(set = %name, map_version = plan.version, ?action, min_offset, "node call");
        let outcome = act(
            ctx, rps, namespace, &desired, &plan, &addresses, action, min_offset,
        )
        .await;
        repointed.record(
            action,
            outcome.as_ref().copied().map_err(ToString::to_string),
        );
        match outcome {
            Ok(_) => {
                if let Action::Promote {
                    partition, node, ..
                } = action
                {
                    promoted.push((*partition, node.clone(), started.elapsed()));
                }
            }
            Err(e) => {
                tracing::warn!(set = %name, error = %e, ?action, "node call failed");
                ctx.metrics.node_call_failed(action_label(action));
                errors.push(e);
            }
        }
    }
    for t in &plan.takeovers {
        let Some((_, _, took)) = promoted
            .iter()
            .find(|(p, n, _)| *p == t.partition && *n == t.to)
        else {
            continue;
        };
        let kind = if t.planned { "switchover" } else { "failover" };
        ctx.metrics.failover(kind, took.as_secs_f64());
        parts.last_failover = Some(FailoverRecord {
            partition: t.partition as i32,
            from: t.from.clone().unwrap_or_default(),
            to: t.to.clone(),
            epoch: t.epoch as i64,
            duration_millis: took.as_millis() as i64,
            time: Time(jiff::Timestamp::now()),
            planned: t.planned,
        });
        super::reconcile::publish(
            rps,
            ctx,
            EventType::Normal,
            if t.planned {
                "SwitchoverCompleted"
            } else {
                "FailoverCompleted"
            },
            "Promote",
            format!(
                "partition {}: {} is primary at epoch {} after {} ms",
                t.partition,
                t.to,
                t.epoch,
                took.as_millis()
            ),
        )
        .await;
    }
    let busy = !plan.actions.is_empty()
        || !plan.failing_over.is_empty()
        || !parts.unhealthy.is_empty()
        || !errors.is_empty();
    Ok(Outcome {
        partitions: parts,
        resource_version,
        busy,
    })
}

fn action_label(action: &Action) -> &'static str {
    match action {
        Action::Promote { .. } => "promote",
        Action::Follow { .. } => "follow",
        Action::Drop { .. } => "drop",
        Action::DeletePod { .. } => "delete_pod",
        Action::PushTopology { .. } => "set_topology",
    }
}

/// Carries out one node call. A promotion first waits until the new primary holds
/// `min_offset` (see [`plan::Repointed`]); a Follow returns the offset the copy held once it
/// followed; other calls return 0.
#[allow(
    clippy::too_many_arguments,
    reason = "the reconcile's context, passed through as the call needs it"
)]
async fn act(
    ctx: &Context,
    rps: &ReplicatedPartitionSet,
    namespace: &str,
    desired: &Desired,
    plan: &Plan,
    addresses: &BTreeMap<String, NodeAddress>,
    action: &Action,
    min_offset: u64,
) -> Result<u64> {
    let connect = async |node: &str| {
        let addr = addresses.get(node).ok_or_else(|| Error::Node {
            node: node.to_string(),
            message: "no address known (pod without an IP)".into(),
        })?;
        NodeConn::connect(node, &addr.grpc_addr, STATUS_TIMEOUT).await
    };
    match action {
        Action::Promote {
            partition,
            node,
            epoch,
            fence,
            hosted,
            reason,
        } => {
            let p = *partition as u32;
            let mut min_offset = min_offset;
            for (old, old_epoch) in fence {
                let mut conn = connect(old).await?;
                min_offset = min_offset.max(conn.fence(p, *old_epoch).await?);
            }
            let role = PrimaryRole {
                replicas: Vec::new(),
                copies: desired.replication_factor as u32,
                min_in_sync_replicas: desired.min_in_sync_replicas,
            };
            connect(node)
                .await?
                .primary(p, *epoch, role, *hosted, min_offset)
                .await?;
            if *reason == Reason::Switchover || !fence.is_empty() {
                // The fenced old primary follows at once rather than at the next plan.
                if let Some(primary) = addresses.get(node) {
                    for (old, _) in fence {
                        connect(old)
                            .await?
                            .follow(p, *epoch, primary.clone())
                            .await?;
                    }
                }
            }
            Ok(0)
        }
        Action::Follow {
            partition,
            node,
            primary,
            epoch,
        } => {
            let primary = addresses.get(primary).cloned().ok_or_else(|| Error::Node {
                node: primary.clone(),
                message: "no address known for the primary".into(),
            })?;
            connect(node)
                .await?
                .follow(*partition as u32, *epoch, primary)
                .await
        }
        Action::Drop {
            partition,
            node,
            epoch,
            force,
        } => connect(node)
            .await?
            .drop_copy(*partition as u32, *epoch, *force)
            .await
            .map(|()| 0),
        Action::DeletePod { pod } => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            pods.delete(pod, &DeleteParams::default()).await?;
            super::reconcile::publish(
                rps,
                ctx,
                EventType::Normal,
                "RollingUpdate",
                "Restart",
                format!("deleted {pod} so that it restarts with the new pod template"),
            )
            .await;
            Ok(0)
        }
        Action::PushTopology { node } => {
            // A node the map names whose pod has no IP (deleted, stuck terminating on a lost
            // machine, not scheduled yet: often the very primary a failover just replaced) is
            // named by its stable DNS name under the headless Service. Without an address the
            // map could not be pushed at all, and every node would go on sending clients to
            // the old primary until that pod came back.
            let peers = crate::resources::Names::of(&rps.name_any()).peer_service;
            let (grpc_port, resp_port) = (ctx.settings.node_grpc_port, ctx.settings.node_resp_port);
            let fallback = |n: &str| {
                let host = format!("{n}.{peers}.{namespace}.svc");
                NodeAddress {
                    node_id: n.to_string(),
                    grpc_addr: format!("{host}:{grpc_port}"),
                    resp_addr: format!("{host}:{resp_port}"),
                }
            };
            let topology =
                topology(desired, plan, addresses, &fallback).map_err(|message| Error::Node {
                    node: node.clone(),
                    message,
                })?;
            connect(node)
                .await?
                .set_topology(topology)
                .await
                .map(|()| 0)
        }
    }
}

/// The recorded map as the nodes' topology; `fallback` addresses a named node with no known
/// address.
fn topology(
    desired: &Desired,
    plan: &Plan,
    addresses: &BTreeMap<String, NodeAddress>,
    fallback: &dyn Fn(&str) -> NodeAddress,
) -> std::result::Result<Topology, String> {
    let slots = SlotMap::new(desired.partitions as u32).map_err(|e| e.to_string())?;
    let mut routes = Vec::with_capacity(plan.map.len());
    for (p, e) in plan.map.iter().enumerate() {
        let (start, end) = slots
            .slot_range(p as u32)
            .ok_or_else(|| format!("partition {p} has no slots"))?;
        routes.push(PartitionRoute {
            partition: p as u32,
            slot_start: u32::from(start),
            slot_end: u32::from(end),
            primary: e.copies.primary.clone().unwrap_or_default(),
            replicas: e.copies.replicas.clone(),
            epoch: e.copies.epoch,
        });
    }
    let named: std::collections::BTreeSet<&String> =
        plan.map.iter().flat_map(|e| e.copies.nodes()).collect();
    let nodes = named
        .into_iter()
        .map(|n| addresses.get(n).cloned().unwrap_or_else(|| fallback(n)))
        .collect();
    Ok(Topology {
        version: plan.version,
        partitions: desired.partitions as u32,
        nodes,
        routes,
    })
}

/// Each node's addresses: what it advertises when it answered, else its pod IP and the set's
/// ports.
fn node_addresses(
    health: &BTreeMap<String, NodeHealth>,
    grpc: &BTreeMap<String, String>,
    resp_port: u16,
) -> BTreeMap<String, NodeAddress> {
    grpc.iter()
        .map(|(name, grpc_addr)| {
            let advertised = health
                .get(name)
                .and_then(|h| h.status.as_ref())
                .and_then(|s| s.node.clone())
                .filter(|a| !a.grpc_addr.is_empty() && a.node_id == *name);
            let fallback = || {
                let host = grpc_addr.rsplit_once(':').map_or("", |(h, _)| h);
                NodeAddress {
                    node_id: name.clone(),
                    grpc_addr: grpc_addr.clone(),
                    resp_addr: format!("{host}:{resp_port}"),
                }
            };
            (name.clone(), advertised.unwrap_or_else(fallback))
        })
        .collect()
}

/// The planner's view of the set's pods and nodes.
fn observe(
    name: &str,
    pods: &[Pod],
    outdated: &[String],
    current: &Current,
    health: &BTreeMap<String, NodeHealth>,
) -> Vec<plan::Node> {
    let mut names: BTreeMap<usize, String> = BTreeMap::new();
    for p in pods {
        let n = p.name_any();
        if let Some(o) = plan::ordinal(&n).filter(|_| n.starts_with(name)) {
            names.insert(o, n);
        }
    }
    for e in &current.map {
        for n in e.copies.nodes() {
            if let Some(o) = plan::ordinal(n) {
                names.entry(o).or_insert_with(|| n.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|(ordinal, n)| {
            let pod = pods.iter().find(|p| p.name_any() == n);
            let alive = pod.filter(|p| p.metadata.deletion_timestamp.is_none());
            let h = health.get(&n).cloned().unwrap_or_default();
            plan::Node {
                ordinal,
                pod: alive.is_some(),
                ready: alive.is_some_and(super::reconcile::is_ready),
                outdated: alive.is_some() && outdated.contains(&n),
                reachable: h.reachable,
                down_since_ms: h.down_since_ms,
                copies: h.status.as_ref().map(nodes::copies).unwrap_or_default(),
                topology_version: h.status.as_ref().map_or(0, |s| s.topology_version),
                name: n,
            }
        })
        .collect()
}

/// The recorded map in the planner's terms.
fn current(partitions: &[PartitionStatus], version: i64) -> Current {
    let mut map: Vec<Entry> = partitions
        .iter()
        .map(|p| Entry {
            copies: Copies {
                primary: p.primary.clone(),
                replicas: p.replicas.clone(),
                epoch: p.epoch.max(0) as u64,
            },
            in_sync: p.in_sync_replicas.clone(),
            lag: p
                .lag
                .iter()
                .map(|l| {
                    (
                        l.node.clone(),
                        l.entries.max(0) as u64,
                        l.millis.max(0) as u64,
                    )
                })
                .collect(),
            moving: p.moving.as_ref().map(|m| Move {
                from: m.from.clone(),
                to: m.to.clone(),
            }),
            message: p.message.clone(),
        })
        .collect();
    // The map is indexed by partition id; a map with holes or out of order is not trusted.
    if partitions.iter().enumerate().any(|(i, p)| p.id != i as i32) {
        map.clear();
    }
    Current {
        map,
        version: version.max(0) as u64,
    }
}

/// The planner's map as status entries, and what is not quiet.
fn partitions(plan: &Plan, observed: &[plan::Node]) -> Partitions {
    let entries: Vec<PartitionStatus> = plan
        .map
        .iter()
        .enumerate()
        .map(|(i, e)| PartitionStatus {
            id: i as i32,
            primary: e.copies.primary.clone(),
            replicas: e.copies.replicas.clone(),
            epoch: e.copies.epoch as i64,
            in_sync_replicas: e.in_sync.clone(),
            lag: e
                .lag
                .iter()
                .map(|(node, entries, millis)| ReplicaLag {
                    node: node.clone(),
                    entries: *entries as i64,
                    millis: *millis as i64,
                })
                .collect(),
            moving: e.moving.as_ref().map(|m| PartitionMove {
                from: m.from.clone(),
                to: m.to.clone(),
            }),
            message: e.message.clone(),
        })
        .collect();
    let reachable = |n: &str| observed.iter().any(|o| o.name == n && o.reachable);
    let unplaced = plan.map.is_empty().then(|| {
        (
            0,
            plan.unplaced
                .clone()
                .unwrap_or_else(|| "no partition placed yet".into()),
        )
    });
    let unhealthy = plan
        .map
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let why = if let Some(m) = &e.message {
                m.clone()
            } else if e.copies.primary.is_none() {
                "no primary".into()
            } else if e.copies.primary.as_deref().is_some_and(|p| !reachable(p)) {
                "primary not answering".into()
            } else if e.in_sync.len() < e.copies.replicas.len() {
                let behind: Vec<&str> = e
                    .copies
                    .replicas
                    .iter()
                    .filter(|r| !e.in_sync.contains(r))
                    .map(String::as_str)
                    .collect();
                format!("not in sync: {}", behind.join(", "))
            } else {
                return None;
            };
            Some((i, why))
        })
        .chain(unplaced)
        .collect();
    Partitions {
        entries,
        map_version: plan.version as i64,
        failing_over: plan.failing_over.clone(),
        unbalanced: plan.unbalanced,
        unhealthy,
        rolling: plan.rolling.clone(),
        ..Partitions::default()
    }
}

fn switchover_status(
    open: Option<&String>,
    refused: Option<String>,
    plan: &Plan,
) -> Option<SwitchoverStatus> {
    let request = open?.clone();
    let (state, message) = match (refused, &plan.switchover) {
        (Some(why), _) => ("Refused", Some(why)),
        (None, Some(plan::SwitchoverState::Done)) => ("Done", None),
        (None, Some(plan::SwitchoverState::Refused(why))) => ("Refused", Some(why.clone())),
        (None, _) => ("Pending", None),
    };
    Some(SwitchoverStatus {
        request,
        state: state.into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: &str, host: &str) -> NodeAddress {
        NodeAddress {
            node_id: n.into(),
            grpc_addr: format!("{host}:7000"),
            resp_addr: format!("{host}:6379"),
        }
    }

    #[test]
    fn a_map_naming_a_pod_without_an_ip_is_still_pushed() {
        // db-0 led partition 0 and its pod is gone (stuck terminating, say); db-1 took over.
        // The map keeps db-0 as a replica, and the new map must still reach the nodes.
        let desired = Desired {
            nodes: 2,
            partitions: 1,
            replication_factor: 2,
            failover: true,
            require_quorum: false,
            detection_window_ms: 3000,
            max_concurrent_moves: 1,
            rebalance: true,
            min_in_sync_replicas: 0,
            switchover: None,
            pinned: Vec::new(),
        };
        let plan = Plan {
            map: vec![Entry {
                copies: Copies {
                    primary: Some("db-1".into()),
                    replicas: vec!["db-0".into()],
                    epoch: 2,
                },
                ..Entry::default()
            }],
            version: 3,
            ..Plan::default()
        };
        let addresses = BTreeMap::from([("db-1".to_string(), addr("db-1", "10.0.0.2"))]);
        let fallback = |n: &str| addr(n, &format!("{n}.db-peers.shop.svc"));
        let t = topology(&desired, &plan, &addresses, &fallback).unwrap();
        assert_eq!(
            t.nodes,
            vec![
                addr("db-0", "db-0.db-peers.shop.svc"),
                addr("db-1", "10.0.0.2")
            ]
        );
        assert_eq!(t.routes[0].primary, "db-1");
        assert_eq!(t.version, 3);
        // What the node checks of a pushed map holds for it.
        let slots = SlotMap::new(1).unwrap();
        partita_node::topology::check(&t, &slots).unwrap();
    }
}
