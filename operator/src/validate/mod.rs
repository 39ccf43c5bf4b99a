//! Checks a spec before anything is built from it: the rules CEL enforces at admission (again,
//! since CEL is off on older clusters and objects can predate a rule), plus what CEL cannot see:
//! an image reference a kubelet would refuse, quantities the API server would refuse, and
//! changes that contradict what already exists (a shrunk or re-classed volume, a changed
//! partition count).
//!
//! An invalid spec is never an error of the reconcile. It becomes the `Ready=False` condition
//! with a reason and a message that says what to change, and the operator leaves the running
//! objects as they were. Pure: the caller passes what it observed.

pub mod image;
pub mod quantity;

use partita_api::{HASH_SLOTS, ReplicatedPartitionSetSpec, parse_duration};
use std::time::Duration;

/// One thing wrong with a spec, for a status condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// A CamelCase reason, the condition's `reason`.
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

/// What already exists and constrains the spec: the StatefulSet's volume claim template (which
/// the API server never lets change) and the partition count the nodes were started with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    /// `storage` request of the existing claim template.
    pub claim_size: Option<String>,
    /// StorageClass of the existing claim template (`Some(None)`: the default class).
    pub claim_class: Option<Option<String>>,
    /// Partition count in the existing node configuration.
    pub partitions: Option<i32>,
}

/// A spec that can be acted on, with its strings parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Valid {
    /// The node image: the spec's, or the operator's default.
    pub image: String,
    /// How often an idle primary heartbeats.
    pub heartbeat: Duration,
    /// How long a primary may be unreachable before it is replaced.
    pub detection_window: Duration,
}

/// Checks `spec` against the rules and against `existing`. `default_image` is used when the
/// spec names none. Every problem found is returned, not just the first.
pub fn validate(
    spec: &ReplicatedPartitionSetSpec,
    default_image: &str,
    existing: &Existing,
) -> Result<Valid, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem =
        |reason: &'static str, message: String| problems.push(Problem { reason, message });

    if !(1..=1000).contains(&spec.nodes) {
        problem(
            "InvalidNodes",
            format!("nodes is {}; it must be between 1 and 1000", spec.nodes),
        );
    }
    if !(1..=HASH_SLOTS).contains(&spec.partitions) {
        problem(
            "InvalidPartitions",
            format!(
                "partitions is {}; it must be between 1 and {HASH_SLOTS}",
                spec.partitions
            ),
        );
    }
    if spec.replication_factor < 1 || spec.replication_factor > spec.nodes.max(1) {
        problem(
            "InvalidReplicationFactor",
            format!(
                "replicationFactor is {} with {} nodes; it must be at least 1 and at most nodes, since every copy needs its own node",
                spec.replication_factor, spec.nodes
            ),
        );
    }
    let min_in_sync = spec.replication.min_in_sync_replicas;
    if min_in_sync < 0 || min_in_sync >= spec.replication_factor.max(1) {
        problem(
            "InvalidMinInSyncReplicas",
            format!(
                "replication.minInSyncReplicas is {min_in_sync}; it must be at least 0 and less than replicationFactor ({})",
                spec.replication_factor
            ),
        );
    }
    if !(1 << 20..=64 << 30).contains(&spec.replication.backlog_bytes) {
        problem(
            "InvalidBacklog",
            format!(
                "replication.backlogBytes is {}; it must be between 1048576 (1 MiB) and 68719476736 (64 GiB)",
                spec.replication.backlog_bytes
            ),
        );
    }
    if !(1..=64).contains(&spec.rebalance.max_concurrent_moves) {
        problem(
            "InvalidMaxConcurrentMoves",
            format!(
                "rebalance.maxConcurrentMoves is {}; it must be between 1 and 64",
                spec.rebalance.max_concurrent_moves
            ),
        );
    }

    let heartbeat = duration_in(
        &spec.replication.heartbeat_interval,
        "replication.heartbeatInterval",
        Duration::from_millis(50),
        Duration::from_secs(10),
    );
    let window = duration_in(
        &spec.failover.detection_window,
        "failover.detectionWindow",
        Duration::from_secs(1),
        Duration::from_secs(300),
    );
    match (&heartbeat, &window) {
        (Ok(h), Ok(w)) if h >= w => problem(
            "InvalidHeartbeat",
            format!(
                "replication.heartbeatInterval ({}) must be shorter than failover.detectionWindow ({}), or every idle primary would look dead",
                spec.replication.heartbeat_interval, spec.failover.detection_window
            ),
        ),
        _ => {}
    }
    if let Err(m) = &heartbeat {
        problem("InvalidHeartbeat", m.clone());
    }
    if let Err(m) = &window {
        problem("InvalidDetectionWindow", m.clone());
    }

    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| default_image.to_string());
    if let Some(why) = image::problem(&image) {
        problem(
            "InvalidImage",
            format!("image {image:?} cannot be pulled: {why}"),
        );
    }

    storage_problems(spec, existing, &mut problem);
    scheduling_problems(spec, &mut problem);

    if let Some(resources) = &spec.resources {
        let quantities = resources
            .requests
            .iter()
            .chain(resources.limits.iter())
            .flatten();
        for (name, q) in quantities {
            if let Err(why) = quantity::milli_units(&q.0) {
                problem("InvalidResources", format!("resources {name}: {why}"));
            }
        }
    }

    if let Some(before) = existing.partitions
        && before != spec.partitions
    {
        problem(
            "PartitionsChanged",
            format!(
                "partitions cannot change after creation (from {before} to {}): resharding is not supported; set it back to {before}, or create a new set",
                spec.partitions
            ),
        );
    }

    match (heartbeat, window) {
        (Ok(heartbeat), Ok(detection_window)) if problems.is_empty() => Ok(Valid {
            image,
            heartbeat,
            detection_window,
        }),
        _ => Err(problems),
    }
}

/// The longest set name. The StatefulSet's pods carry a `controller-revision-hash` label of the
/// set's name and 11 more characters, and a label value stops at 63.
pub const MAX_NAME: usize = 52;

/// What is wrong with a set's name, which becomes the name of its Services (DNS-1035 labels),
/// a label value on every object, and the prefix of its pods' names.
pub fn name_problem(name: &str) -> Option<Problem> {
    let dns_1035 = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!dns_1035).then(|| Problem {
        reason: "InvalidName",
        message: format!(
            "the name {name:?} cannot name the set's Services and pods: use at most {MAX_NAME} lowercase letters, digits and '-', starting with a letter and ending with a letter or digit; delete the set and create it under such a name"
        ),
    })
}

/// Whether `s` is a label name, or a label value when `value` (which may also be empty).
fn label_segment(s: &str, value: bool) -> bool {
    if s.is_empty() {
        return value;
    }
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(inner)
}

/// Whether `s` is a DNS subdomain (RFC 1123), as label prefixes and PriorityClass names are.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && !part.starts_with('-')
                && !part.ends_with('-')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Whether `s` is a label key: `[prefix/]name`.
fn label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && label_segment(name, false),
        None => label_segment(s, false),
    }
}

/// What the API server would refuse in the pod template's scheduling fields.
fn scheduling_problems(
    spec: &ReplicatedPartitionSetSpec,
    problem: &mut impl FnMut(&'static str, String),
) {
    let scheduling = &spec.scheduling;
    if !label_key(&scheduling.topology_key) {
        problem(
            "InvalidScheduling",
            format!(
                "scheduling.topologyKey {:?} is not a node label key, such as kubernetes.io/hostname",
                scheduling.topology_key
            ),
        );
    }
    if scheduling.node_selector.len() > 32 {
        problem(
            "InvalidScheduling",
            "scheduling.nodeSelector may hold at most 32 labels".into(),
        );
    }
    for (key, value) in &scheduling.node_selector {
        if !label_key(key) || !label_segment(value, true) {
            problem(
                "InvalidScheduling",
                format!("scheduling.nodeSelector {key:?}: {value:?} is not a valid label"),
            );
        }
    }
    if scheduling.tolerations.len() > 32 {
        problem(
            "InvalidScheduling",
            "scheduling.tolerations may hold at most 32 entries".into(),
        );
    }
    for (i, t) in scheduling.tolerations.iter().enumerate() {
        let operator = t.operator.as_deref().unwrap_or("Equal");
        let key = t.key.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let why = if !matches!(operator, "Equal" | "Exists") {
            Some(format!("operator {operator:?} must be Equal or Exists"))
        } else if !key.is_empty() && !label_key(key) {
            Some(format!("key {key:?} is not a label key"))
        } else if key.is_empty() && operator != "Exists" {
            Some("an empty key needs operator Exists".to_string())
        } else if operator == "Exists" && !value.is_empty() {
            Some("operator Exists takes no value".to_string())
        } else if !label_segment(value, true) {
            Some(format!("value {value:?} is not a label value"))
        } else if !matches!(
            t.effect.as_deref().unwrap_or_default(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            Some("effect must be NoSchedule, PreferNoSchedule or NoExecute".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            problem(
                "InvalidScheduling",
                format!("scheduling.tolerations[{i}]: {why}"),
            );
        }
    }
    if let Some(class) = &scheduling.priority_class_name
        && !dns_subdomain(class)
    {
        problem(
            "InvalidScheduling",
            format!("scheduling.priorityClassName {class:?} is not a valid PriorityClass name"),
        );
    }
}

fn storage_problems(
    spec: &ReplicatedPartitionSetSpec,
    existing: &Existing,
    problem: &mut impl FnMut(&'static str, String),
) {
    let size = &spec.storage.size;
    let wanted = match quantity::milli_units(size) {
        Ok(0) => {
            problem(
                "InvalidStorage",
                format!("storage.size {size:?} must be more than zero"),
            );
            return;
        }
        Ok(v) => v,
        Err(why) => {
            problem("InvalidStorage", format!("storage.size: {why}"));
            return;
        }
    };
    if let Some(before) = &existing.claim_size {
        let had = quantity::milli_units(before).unwrap_or(0);
        if wanted < had {
            problem(
                "StorageShrunk",
                format!(
                    "storage.size cannot shrink from {before} to {size}: volumes only grow; set it back to {before}"
                ),
            );
        } else if wanted > had {
            problem(
                "StorageResizeUnsupported",
                format!(
                    "storage.size cannot change from {before} to {size} yet: the operator does not expand volumes; expand the PersistentVolumeClaims yourself and set storage.size back to {before}"
                ),
            );
        }
    }
    if let Some(class) = &existing.claim_class
        && class != &spec.storage.storage_class_name
    {
        let show = |c: &Option<String>| c.clone().unwrap_or_else(|| "the default class".into());
        problem(
            "StorageClassChanged",
            format!(
                "storage.storageClassName cannot change from {} to {}: existing volumes keep their class; set it back",
                show(class),
                show(&spec.storage.storage_class_name)
            ),
        );
    }
}

fn duration_in(value: &str, field: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(value).map_err(|e| format!("{field}: {e}"))?;
    if d < min || d > max {
        return Err(format!(
            "{field} is {value}; it must be between {} and {}",
            partita_api::format_duration(min),
            partita_api::format_duration(max)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ReplicatedPartitionSetSpec {
        serde_yaml::from_str(yaml).unwrap()
    }
    fn reasons(r: Result<Valid, Vec<Problem>>) -> Vec<&'static str> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.reason)
            .collect()
    }

    #[test]
    fn a_minimal_spec_is_valid_with_the_default_image() {
        let v = validate(
            &spec("nodes: 3"),
            "partita/partita-node:0.1.0",
            &Existing::default(),
        );
        let v = v.unwrap();
        assert_eq!(v.image, "partita/partita-node:0.1.0");
        assert_eq!(v.heartbeat, Duration::from_millis(500));
        assert_eq!(v.detection_window, Duration::from_secs(3));
    }

    #[test]
    fn what_slips_past_cel_is_caught_with_every_problem_named() {
        let s = spec(
            "nodes: 2\nreplicationFactor: 3\nimage: 'Bad/Image:'\nstorage: {size: 1GB}\nreplication: {heartbeatInterval: 10s}\nfailover: {detectionWindow: 5s}",
        );
        assert_eq!(
            reasons(validate(&s, "x", &Existing::default())),
            [
                "InvalidReplicationFactor",
                "InvalidHeartbeat",
                "InvalidImage",
                "InvalidStorage"
            ]
        );
    }

    #[test]
    fn contradicting_what_exists_is_refused() {
        let existing = Existing {
            claim_size: Some("10Gi".into()),
            claim_class: Some(Some("fast".into())),
            partitions: Some(16),
        };
        let s = spec("nodes: 3\npartitions: 32\nstorage: {size: 5Gi}");
        assert_eq!(
            reasons(validate(&s, "x", &existing)),
            ["StorageShrunk", "StorageClassChanged", "PartitionsChanged"]
        );
        let same =
            spec("nodes: 3\npartitions: 16\nstorage: {size: 10240Mi, storageClassName: fast}");
        assert!(validate(&same, "x", &existing).is_ok());
        let grown = spec("nodes: 3\npartitions: 16\nstorage: {size: 20Gi, storageClassName: fast}");
        assert_eq!(
            reasons(validate(&grown, "x", &existing)),
            ["StorageResizeUnsupported"]
        );
    }

    #[test]
    fn bad_resource_quantities_are_named() {
        let s = spec("nodes: 1\nreplicationFactor: 1\nresources: {requests: {cpu: one}}");
        let problems = validate(&s, "x", &Existing::default()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("resources cpu"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn names_that_no_service_or_pod_can_carry_are_refused() {
        for good in ["orders", "a", "orders-2", &"a".repeat(MAX_NAME)] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in [
            "orders.v2",
            "1orders",
            "orders-",
            "Orders",
            &"a".repeat(MAX_NAME + 1),
        ] {
            let p = name_problem(bad).unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(p.reason, "InvalidName");
            assert!(p.message.contains("at most 52"), "{}", p.message);
        }
    }

    #[test]
    fn scheduling_the_api_server_would_refuse_is_named() {
        let good = spec(
            "nodes: 3\nscheduling: {topologyKey: topology.kubernetes.io/zone, nodeSelector: {disk: ssd, example.com/pool: ''}, tolerations: [{operator: Exists}, {key: a, value: b, effect: NoExecute}], priorityClassName: high}",
        );
        assert!(validate(&good, "x", &Existing::default()).is_ok());
        for (yaml, says) in [
            ("topologyKey: 'not a key'", "scheduling.topologyKey"),
            ("nodeSelector: {'bad key!': x}", "scheduling.nodeSelector"),
            (
                "nodeSelector: {disk: 'two words'}",
                "scheduling.nodeSelector",
            ),
            (
                "tolerations: [{key: a, operator: Sometimes}]",
                "tolerations[0]: operator",
            ),
            (
                "tolerations: [{value: b}]",
                "an empty key needs operator Exists",
            ),
            (
                "tolerations: [{key: a, operator: Exists, value: b}]",
                "takes no value",
            ),
            ("tolerations: [{key: a, effect: Never}]", "effect must be"),
            (
                "priorityClassName: Not_Valid",
                "scheduling.priorityClassName",
            ),
        ] {
            let s = spec(&format!("nodes: 3\nscheduling: {{{}}}", yaml));
            let problems = validate(&s, "x", &Existing::default()).unwrap_err();
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert_eq!(problems[0].reason, "InvalidScheduling");
            assert!(
                problems[0].message.contains(says),
                "{yaml}: {}",
                problems[0].message
            );
        }
    }
}
