//! The observed state of a `ReplicatedPartitionSet`, written by the operator through the status
//! subresource with server-side apply.
//!
//! The partition map (primary, replicas and epoch of every partition) lives here. It is the
//! operator's record of who may write: a failover writes the new epoch and primary here first,
//! guarded by resourceVersion, and only then promotes (DESIGN.md, invariant 6). If status is
//! lost, the map is rebuilt from the nodes' own reports.
//!
//! Lists that server-side apply merges are declared as map lists (`x-kubernetes-list-type: map`)
//! keyed by their identity, so two writers touching different entries do not clobber each other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::{Deserialize, Serialize};

/// One-word summary of a set's state, for `kubectl get rps`. Conditions carry the detail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted, nothing created yet.
    Pending,
    /// Pods are being created and partitions placed.
    Provisioning,
    /// Every partition has a primary and its full set of in-sync replicas.
    Ready,
    /// A rolling update, scale or rebalance is in progress; the set serves throughout.
    Updating,
    /// Serving, but some partition lacks a primary or in-sync replicas.
    Degraded,
    /// `spec.paused` is set: the operator only writes status.
    Paused,
    /// The spec cannot be acted on; the Ready condition says why.
    Invalid,
}

/// The condition types the operator sets, following the Kubernetes API conventions:
/// `Ready` is the summary; the others are true while something is going on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Every partition has a primary and its in-sync replicas, and every node is ready.
    Ready,
    /// The operator is creating, updating or scaling the set.
    Progressing,
    /// The set serves with reduced redundancy or availability.
    Degraded,
    /// A failover is in progress for at least one partition.
    FailingOver,
    /// Partitions are being moved between nodes.
    Rebalancing,
}

impl ConditionType {
    /// Every condition type, in the order the operator writes them.
    pub const ALL: [ConditionType; 5] = [
        ConditionType::Ready,
        ConditionType::Progressing,
        ConditionType::Degraded,
        ConditionType::FailingOver,
        ConditionType::Rebalancing,
    ];

    /// The `type` string of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::FailingOver => "FailingOver",
            ConditionType::Rebalancing => "Rebalancing",
        }
    }
}

/// Observed state of a ReplicatedPartitionSet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedPartitionSetStatus {
    /// One-word summary of the set's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Node pods that are ready.
    #[serde(default)]
    pub ready_nodes: i32,

    /// Standard conditions: Ready, Progressing, Degraded, FailingOver, Rebalancing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The partition map: primary, replicas and epoch of every partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    #[schemars(length(max = 16384))]
    pub partitions: Vec<PartitionStatus>,

    /// The most recent automatic failover or switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,

    /// Version of the partition map, bumped on every change of it; the nodes' topology carries
    /// it, and a node refuses a map older than the one it holds.
    #[serde(default)]
    pub map_version: i64,

    /// The last `partita.dev/rebalance` request the operator acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance_handled: Option<String>,

    /// The last `partita.dev/switchover` request the operator acted on, and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
}

/// The outcome of a switchover requested with the `partita.dev/switchover` annotation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverStatus {
    /// The annotation's value this is about.
    pub request: String,
    /// Pending, Done or Refused.
    pub state: String,
    /// What happened, or why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A copy on its way from one node to another: the new copy is added and synced, the old one
/// dropped after (and the primary switched over first, if the old copy was primary).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMove {
    /// The node losing its copy.
    pub from: String,
    /// The node gaining one.
    pub to: String,
}

/// Where one partition lives.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// The partition id, from 0 to partitions - 1.
    pub id: i32,

    /// The node (pod name) that is primary; unset while the partition has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,

    /// The nodes holding replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub replicas: Vec<String>,

    /// The epoch, bumped on every change of primary. Writes carrying a lower epoch are refused.
    #[serde(default)]
    pub epoch: i64,

    /// The replicas currently in sync with the primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub in_sync_replicas: Vec<String>,

    /// How far each replica is behind the primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub lag: Vec<ReplicaLag>,

    /// A move in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<PartitionMove>,

    /// Why the partition is not healthy, when it is not (for example why no replica could be
    /// promoted safely).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How far one replica is behind its primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaLag {
    /// The replica's node (pod name).
    pub node: String,
    /// Log entries the replica has not yet applied.
    #[serde(default)]
    pub entries: i64,
    /// Age in milliseconds of the oldest entry the replica has not yet applied.
    #[serde(default)]
    pub millis: i64,
}

/// A change of primary: an automatic failover or a planned switchover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// The partition whose primary changed.
    pub partition: i32,
    /// The previous primary.
    pub from: String,
    /// The new primary.
    pub to: String,
    /// The partition's new epoch.
    pub epoch: i64,
    /// Milliseconds from the decision to fail over to the new primary accepting writes.
    pub duration_millis: i64,
    /// When the new primary took over.
    pub time: Time,
    /// Whether it was a planned switchover rather than a failover.
    #[serde(default)]
    pub planned: bool,
}
