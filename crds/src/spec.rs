//! The desired state of a `ReplicatedPartitionSet`.
//!
//! Every field has a default where a sensible one exists, so the smallest useful resource is a
//! name and `nodes: 3`. CEL rules reject bad input at admission with a message that names the
//! field and the fix; range checks are CEL rules rather than bare OpenAPI bounds for that reason.

use crate::duration::DURATION_PATTERN;
use crate::status::ReplicatedPartitionSetStatus;
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Defaults of the spec, named so the operator and the docs use the same values.
pub mod defaults {
    /// Partitions when not given.
    pub const PARTITIONS: i32 = 16;
    /// Copies of each partition (the primary included) when not given.
    pub const REPLICATION_FACTOR: i32 = 3;
    /// Volume size per node.
    pub const STORAGE_SIZE: &str = "1Gi";
    /// How long a primary must be unreachable before it is replaced.
    pub const DETECTION_WINDOW: &str = "3s";
    /// Moves in flight during a rebalance.
    pub const MAX_CONCURRENT_MOVES: i32 = 1;
    /// Bytes of log kept for partial resync, per partition: 64 MiB.
    pub const BACKLOG_BYTES: i64 = 64 * 1024 * 1024;
    /// How often an idle primary tells its replicas its end offset.
    pub const HEARTBEAT_INTERVAL: &str = "500ms";
    /// The node label whose value is "one place" for pod anti-affinity.
    pub const TOPOLOGY_KEY: &str = "kubernetes.io/hostname";
}

/// How many copies acknowledge a write before the client is told it succeeded.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum WriteConcern {
    /// The primary alone. Fastest; a failover can lose the writes not yet replicated.
    One,
    /// A majority of the partition's copies. Survives a failover: the default.
    #[default]
    Quorum,
    /// Every in-sync copy.
    All,
}

/// A replicated, partitioned key-value cluster: `nodes` pods, each hosting copies of many of the
/// `partitions`, every partition kept on `replicationFactor` pods, one of them its primary.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(
    clippy::duplicated_attributes,
    reason = "printcolumn entries legitimately repeat `type_ = \"integer\"`"
)]
#[kube(
    group = "partita.dev",
    version = "v1alpha1",
    kind = "ReplicatedPartitionSet",
    plural = "replicatedpartitionsets",
    singular = "replicatedpartitionset",
    shortname = "rps",
    category = "partita",
    namespaced,
    doc = "A replicated, partitioned key-value cluster run by the Partita operator. See spec for the desired shape and status for the partition map.",
    status = "ReplicatedPartitionSetStatus",
    scale(
        spec_replicas_path = ".spec.nodes",
        status_replicas_path = ".status.readyNodes"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".spec.nodes",
        description = "Node pods wanted"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".spec.partitions",
        description = "Number of partitions"
    ),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "Copies of each partition"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyNodes",
        description = "Node pods ready"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Summary of the set's state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.nodes < 1 || self.replicationFactor <= self.nodes").message(Message::Expression(
        "'replicationFactor (' + string(self.replicationFactor) + ') must not be greater than nodes (' + string(self.nodes) + '): every copy of a partition needs its own node'".into()
    )),
    validation = Rule::new("self.replicationFactor < 1 || self.replication.minInSyncReplicas < self.replicationFactor").message(Message::Expression(
        "'replication.minInSyncReplicas (' + string(self.replication.minInSyncReplicas) + ') must be less than replicationFactor (' + string(self.replicationFactor) + '): a partition has replicationFactor - 1 replicas'".into()
    )),
    validation = Rule::new(format!(
        "!self.replication.heartbeatInterval.matches('{p}') || !self.failover.detectionWindow.matches('{p}') || duration(self.replication.heartbeatInterval) < duration(self.failover.detectionWindow)",
        p = DURATION_PATTERN.replace('\\', "\\\\")
    ))
        .message("replication.heartbeatInterval must be shorter than failover.detectionWindow, or every idle primary would look dead")
)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedPartitionSetSpec {
    /// Number of node pods. Raising it adds pods and moves partitions onto them; lowering it
    /// drains the highest-numbered pods first. Between 1 and 1000.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("nodes must be between 1 and 1000"))]
    pub nodes: i32,

    /// Number of partitions the 16384 hash slots are divided into. Fixed at creation: it cannot
    /// be changed until resharding exists. Between 1 and 16384.
    #[serde(default = "default_partitions")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 16384").message("partitions must be between 1 and 16384 (the number of hash slots)"),
        validation = Rule::new("self == oldSelf").message("partitions cannot be changed after creation: resharding is not supported yet; create a new set instead")
    )]
    pub partitions: i32,

    /// Copies of each partition, the primary included. At most `nodes`.
    #[serde(default = "default_replication_factor")]
    #[x_kube(validation = Rule::new("self >= 1").message("replicationFactor must be at least 1"))]
    pub replication_factor: i32,

    /// Container image of the node pods. When unset, the operator's configured node image
    /// (normally the same release as the operator) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("image must be a container image reference without spaces, such as partita/partita-node:0.1.0"))]
    pub image: Option<String>,

    /// The persistent volume each node pod gets.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Write concern used by requests that do not ask for one.
    #[serde(default)]
    pub write_concern: WriteConcern,

    /// Automatic failover.
    #[serde(default)]
    pub failover: FailoverSpec,

    /// Moving partitions when nodes come or go.
    #[serde(default)]
    pub rebalance: RebalanceSpec,

    /// Replication between the copies of a partition.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// Where the node pods run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// Stop every action of the operator except writing status. Nothing is created, deleted,
    /// promoted or moved while paused.
    #[serde(default)]
    pub paused: bool,
}

/// The persistent volume of each node pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, as a Kubernetes quantity such as 10Gi.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage.size must be a positive quantity, such as 1Gi or 500Mi"))]
    pub size: String,

    /// StorageClass of the volumes; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,

    /// Delete the node volumes (PersistentVolumeClaims) when the set is deleted. Off by
    /// default: the data outlives the set, and a set created again with the same name picks
    /// it up.
    #[serde(default)]
    pub delete_with_set: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_with_set: false,
        }
    }
}

/// How strictly node pods keep apart.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AntiAffinity {
    /// Spread the pods over different places when the scheduler can, and share one when it
    /// cannot: the default, which never leaves a pod Pending for want of room.
    #[default]
    Preferred,
    /// Never put two pods of the set in one place: losing a machine then loses at most one
    /// copy of each partition, but a set needs at least `nodes` places, or pods stay Pending.
    Required,
}

/// Where the node pods run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// How strictly the pods keep to different places: Preferred or Required.
    #[serde(default)]
    pub pod_anti_affinity: AntiAffinity,

    /// The node label whose value is one place for the anti-affinity: kubernetes.io/hostname
    /// (one machine, the default) or topology.kubernetes.io/zone (one zone).
    #[serde(default = "default_topology_key")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')").message("scheduling.topologyKey must be a node label key, such as kubernetes.io/hostname or topology.kubernetes.io/zone"))]
    pub topology_key: String,

    /// Run only on nodes with these labels. At most 32 entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 32").message("scheduling.nodeSelector may hold at most 32 labels"))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// PriorityClass of the pods; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
}

impl Default for SchedulingSpec {
    fn default() -> Self {
        Self {
            pod_anti_affinity: AntiAffinity::default(),
            topology_key: default_topology_key(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            priority_class_name: None,
        }
    }
}

/// Automatic failover of a partition whose primary is lost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// Promote a replica when a primary is lost. When false, the operator reports the lost
    /// primary and waits.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How long a primary must be unreachable before it is replaced, as a duration such as 5s.
    /// Between 1s and 5m.
    #[serde(default = "default_detection_window")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\"))).message("failover.detectionWindow must be a duration such as 500ms, 5s or 1m"),
        validation = Rule::new(format!("!self.matches('{}') || (duration(self) >= duration('1s') && duration(self) <= duration('5m'))", DURATION_PATTERN.replace('\\', "\\\\"))).message("failover.detectionWindow must be between 1s and 5m")
    )]
    pub detection_window: String,

    /// Promote only when enough replicas are reachable to be sure the chosen one holds every
    /// write acknowledged at QUORUM. When false, availability wins over that guarantee.
    #[serde(default = "default_true")]
    pub require_quorum: bool,
}

impl Default for FailoverSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            detection_window: default_detection_window(),
            require_quorum: true,
        }
    }
}

/// Moving partitions between nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// Rebalance on its own when nodes are added or removed. When false, only a `rebalance`
    /// request (kubectl partita rebalance) starts one; draining before scale-down still happens.
    #[serde(default = "default_true")]
    pub auto: bool,

    /// Most partition moves in flight at once. Between 1 and 64.
    #[serde(default = "default_max_concurrent_moves")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("rebalance.maxConcurrentMoves must be between 1 and 64"))]
    pub max_concurrent_moves: i32,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            auto: true,
            max_concurrent_moves: defaults::MAX_CONCURRENT_MOVES,
        }
    }
}

/// Replication between the copies of a partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Bytes of log each primary keeps per partition so that a replica that was briefly away
    /// resumes with a partial sync; one further behind gets a full snapshot. At least 1 MiB, at
    /// most 64 GiB.
    #[serde(default = "default_backlog_bytes")]
    #[x_kube(validation = Rule::new("self >= 1048576 && self <= 68719476736").message("replication.backlogBytes must be between 1048576 (1 MiB) and 68719476736 (64 GiB)"))]
    pub backlog_bytes: i64,

    /// How often an idle primary sends its end offset to its replicas, as a duration such as 1s.
    /// Between 50ms and 10s.
    #[serde(default = "default_heartbeat_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\"))).message("replication.heartbeatInterval must be a duration such as 200ms or 1s"),
        validation = Rule::new(format!("!self.matches('{}') || (duration(self) >= duration('50ms') && duration(self) <= duration('10s'))", DURATION_PATTERN.replace('\\', "\\\\"))).message("replication.heartbeatInterval must be between 50ms and 10s")
    )]
    pub heartbeat_interval: String,

    /// A primary refuses writes while fewer than this many replicas are in sync. 0 never
    /// refuses. Less than replicationFactor.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("replication.minInSyncReplicas must not be negative"))]
    pub min_in_sync_replicas: i32,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            backlog_bytes: defaults::BACKLOG_BYTES,
            heartbeat_interval: default_heartbeat_interval(),
            min_in_sync_replicas: 0,
        }
    }
}

fn default_partitions() -> i32 {
    defaults::PARTITIONS
}
fn default_replication_factor() -> i32 {
    defaults::REPLICATION_FACTOR
}
fn default_storage_size() -> String {
    defaults::STORAGE_SIZE.to_string()
}
fn default_true() -> bool {
    true
}
fn default_detection_window() -> String {
    defaults::DETECTION_WINDOW.to_string()
}
fn default_max_concurrent_moves() -> i32 {
    defaults::MAX_CONCURRENT_MOVES
}
fn default_backlog_bytes() -> i64 {
    defaults::BACKLOG_BYTES
}
fn default_topology_key() -> String {
    defaults::TOPOLOGY_KEY.to_string()
}
fn default_heartbeat_interval() -> String {
    defaults::HEARTBEAT_INTERVAL.to_string()
}
