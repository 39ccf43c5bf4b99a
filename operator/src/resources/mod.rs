//! The objects a `ReplicatedPartitionSet` owns, built by pure functions from the set and its
//! validated spec: a ConfigMap with the node configuration, a headless Service for peers, a
//! client Service, a PodDisruptionBudget and the StatefulSet of node pods.
//!
//! Building is pure so that tests can check every field without an API server, and so that the
//! controller can compare what it would apply with what exists and write nothing when they
//! agree. Every object carries the same labels, an owner reference to the set (so deleting the
//! set garbage-collects them) and is applied by server-side apply under one field manager.
//!
//! Addresses: nodes advertise their pod IP (from the downward API), and the operator reads pod
//! IPs from Pod status. A pod IP works the same on a real cluster and in the e2e harness, where
//! each simulated pod gets its own loopback address; DNS names would need a resolver the harness
//! does not have.

mod config;
mod pdb;
mod services;
mod statefulset;

pub use config::{DATA_DIR, config_hash, config_map, node_config};
pub use pdb::pod_disruption_budget;
pub use services::{client_service, peer_service};
pub use statefulset::{CONTAINER_NAME, RUN_AS, claim_template_of, statefulset};

use crate::error::{Error, Result};
use crate::validate::{Existing, Valid};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use partita_api::ReplicatedPartitionSet;
use std::collections::BTreeMap;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "partita-operator";
/// The finalizer that lets the operator clean up before a set is gone.
pub const FINALIZER: &str = "partita.dev/cleanup";
/// The annotation carrying the hash of the node configuration on the pod template, so that a
/// configuration change changes the StatefulSet's update revision.
pub const CONFIG_HASH_ANNOTATION: &str = "partita.dev/config-hash";
/// The label naming the set an object belongs to.
pub const SET_LABEL: &str = "partita.dev/set";

/// Ports the node listens on.
pub mod ports {
    /// Redis protocol.
    pub const RESP: i32 = 6379;
    /// gRPC: KV, Replication and Admin.
    pub const GRPC: i32 = 7379;
    /// HTTP: /healthz, /readyz, /metrics.
    pub const HTTP: i32 = 8379;
}

/// Names of the owned objects of a set called `set`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The StatefulSet; its pods are `<set>-0`, `<set>-1`, ...
    pub statefulset: String,
    /// The headless Service for peers.
    pub peer_service: String,
    /// The client Service.
    pub client_service: String,
    /// The PodDisruptionBudget.
    pub pod_disruption_budget: String,
    /// The ConfigMap with the node configuration.
    pub config_map: String,
}

impl Names {
    /// The names for the set called `set`.
    pub fn of(set: &str) -> Self {
        Self {
            statefulset: set.to_string(),
            peer_service: format!("{set}-peers"),
            client_service: set.to_string(),
            pod_disruption_budget: set.to_string(),
            config_map: format!("{set}-config"),
        }
    }
}

/// The labels that select a set's pods. Never changed once a StatefulSet exists (its selector
/// is immutable), so nothing that can change goes in here.
pub fn selector_labels(set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "partita-node".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), set.to_string()),
    ])
}

/// The labels of every owned object and pod: the selector labels plus descriptive ones.
pub fn labels(set: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(set);
    labels.insert("app.kubernetes.io/component".into(), "node".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels.insert("app.kubernetes.io/part-of".into(), "partita".into());
    labels.insert(SET_LABEL.into(), set.to_string());
    labels
}

/// A label selector string (`k=v,k=v`) for the set's pods.
pub fn selector_string(set: &str) -> String {
    selector_labels(set)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The set's name, namespace and controller owner reference, which every builder needs.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The set's name.
    pub name: String,
    /// The set's namespace.
    pub namespace: String,
    /// The owner reference every owned object carries.
    pub reference: OwnerReference,
}

impl Owner {
    /// Reads the owner fields of `rps`.
    pub fn of(rps: &ReplicatedPartitionSet) -> Result<Self> {
        let namespace = rps.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let mut reference = rps
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?;
        // No blockOwnerDeletion: setting it needs `update` on the set's finalizers subresource
        // where the OwnerReferencesPermissionEnforcement admission plugin runs, and the
        // operator's own finalizer already orders its cleanup before the set goes.
        reference.block_owner_deletion = None;
        Ok(Self {
            name: rps.name_any(),
            namespace,
            reference,
        })
    }

    /// Metadata for an owned object called `name`.
    pub fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Everything a set owns, as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The node configuration.
    pub config_map: ConfigMap,
    /// The headless Service for peers.
    pub peer_service: Service,
    /// The client Service.
    pub client_service: Service,
    /// The PodDisruptionBudget.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// The StatefulSet of node pods.
    pub statefulset: StatefulSet,
}

/// Builds every owned object of `rps`, whose spec has been validated into `valid`.
pub fn desired(rps: &ReplicatedPartitionSet, valid: &Valid) -> Result<Desired> {
    let owner = Owner::of(rps)?;
    let names = Names::of(&owner.name);
    let config = node_config(&rps.spec, valid);
    Ok(Desired {
        config_map: config_map(&owner, &names, &config),
        peer_service: peer_service(&owner, &names),
        client_service: client_service(&owner, &names),
        pod_disruption_budget: pod_disruption_budget(&owner, &names),
        statefulset: statefulset(&owner, &names, &rps.spec, valid, &config_hash(&config)),
    })
}

/// What the existing objects fix in place, for [`crate::validate::validate`].
pub fn existing(statefulset: Option<&StatefulSet>, config_map: Option<&ConfigMap>) -> Existing {
    let claim = statefulset.and_then(claim_template_of);
    Existing {
        claim_size: claim.as_ref().and_then(|(size, _)| size.clone()),
        claim_class: claim.map(|(_, class)| class),
        partitions: config_map
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get(config::PARTITIONS_KEY))
            .and_then(|p| p.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Existing, validate};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn set(spec: &str) -> ReplicatedPartitionSet {
        let mut rps = ReplicatedPartitionSet::new("orders", serde_yaml::from_str(spec).unwrap());
        rps.metadata.namespace = Some("shop".into());
        rps.metadata.uid = Some("0b6c-uid".into());
        rps
    }
    fn build(spec: &str) -> Desired {
        let rps = set(spec);
        let valid = validate(
            &rps.spec,
            "partita/partita-node:0.1.0",
            &Existing::default(),
        )
        .unwrap();
        desired(&rps, &valid).unwrap()
    }
    fn pod(d: &Desired) -> PodSpec {
        d.statefulset.spec.template.spec.clone().unwrap()
    }
    fn node(d: &Desired) -> Container {
        pod(d).containers[0].clone()
    }
    fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    #[test]
    fn every_selector_matches_the_pod_labels_and_only_this_sets_pods() {
        let d = build("nodes: 3");
        let pod_labels = d
            .statefulset
            .spec
            .template
            .metadata
            .clone()
            .unwrap()
            .labels
            .unwrap();
        let sts_selector = d.statefulset.spec.selector.match_labels.clone().unwrap();
        assert!(selects(&sts_selector, &pod_labels));
        for svc in [&d.peer_service, &d.client_service] {
            assert!(selects(
                svc.spec.as_ref().unwrap().selector.as_ref().unwrap(),
                &pod_labels
            ));
        }
        let pdb = d.pod_disruption_budget.spec.clone().unwrap();
        assert!(selects(
            &pdb.selector.unwrap().match_labels.unwrap(),
            &pod_labels
        ));
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        let other = labels("payments");
        assert!(
            !selects(&sts_selector, &other),
            "one set's selector picks another's pods"
        );
        let affinity = pod(&d).affinity.unwrap().pod_anti_affinity.unwrap();
        let term = &affinity
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert!(selects(
            term.pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &pod_labels
        ));
        let spread = pod(&d).topology_spread_constraints.unwrap();
        assert!(
            spread
                .iter()
                .all(|c| c.when_unsatisfiable == "ScheduleAnyway")
        );
        assert_eq!(spread.len(), 2);
    }

    #[test]
    fn every_object_is_owned_by_the_set_and_labelled() {
        let d = build("nodes: 3");
        let metas = [
            &d.config_map.metadata,
            &d.peer_service.metadata,
            &d.client_service.metadata,
            &d.pod_disruption_budget.metadata,
            &d.statefulset.metadata,
        ];
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.uid, "0b6c-uid");
            assert_eq!(
                (owner.controller, owner.block_owner_deletion),
                (Some(true), None)
            );
            assert_eq!(m.namespace.as_deref(), Some("shop"));
            assert_eq!(m.labels.as_ref().unwrap()[SET_LABEL], "orders");
        }
    }

    #[test]
    fn the_statefulset_is_ordered_by_the_operator_and_started_in_parallel() {
        let d = build("nodes: 5");
        let s = &d.statefulset.spec;
        assert_eq!(s.replicas, Some(5));
        assert_eq!(
            s.update_strategy.as_ref().unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        assert_eq!(s.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(s.service_name.as_deref(), Some("orders-peers"));
        let peers = d.peer_service.spec.clone().unwrap();
        assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
        assert_eq!(peers.publish_not_ready_addresses, Some(true));
        let client_ports: Vec<_> = d
            .client_service
            .spec
            .clone()
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(client_ports, [ports::RESP, ports::GRPC]);
        assert!(pod(&d).termination_grace_period_seconds.unwrap() >= 30);
    }

    #[test]
    fn probes_hit_the_nodes_health_endpoints_on_its_http_port() {
        let c = node(&build("nodes: 3"));
        let path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
            let get = p.unwrap().http_get.clone().unwrap();
            assert_eq!(get.port, IntOrString::String("http".into()));
            get.path.unwrap()
        };
        assert_eq!(path(c.readiness_probe.as_ref()), "/readyz");
        assert_eq!(path(c.liveness_probe.as_ref()), "/healthz");
        assert_eq!(path(c.startup_probe.as_ref()), "/healthz");
        let http = c
            .ports
            .unwrap()
            .into_iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .unwrap();
        assert_eq!(http.container_port, ports::HTTP);
    }

    #[test]
    fn the_pod_meets_the_restricted_security_standard() {
        let d = build("nodes: 3");
        let p = pod(&d).security_context.unwrap();
        assert_eq!(p.run_as_non_root, Some(true));
        assert_ne!(p.run_as_user, Some(0));
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = node(&d).security_context.unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.run_as_non_root, Some(true));
        assert_eq!(c.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(pod(&d).automount_service_account_token, Some(false));
        // With a read-only root, everything the node writes goes to mounted volumes.
        let mounts: Vec<_> = node(&d)
            .volume_mounts
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert_eq!(mounts, ["/data", "/tmp"]);
    }

    #[test]
    fn the_claim_template_follows_spec_storage() {
        let d = build("nodes: 3\nstorage: {size: 20Gi, storageClassName: fast-ssd}");
        let (size, class) = claim_template_of(&d.statefulset).unwrap();
        assert_eq!(
            (size.as_deref(), class.as_deref()),
            (Some("20Gi"), Some("fast-ssd"))
        );
        let claim = &d.statefulset.spec.volume_claim_templates.as_ref().unwrap()[0];
        let spec = claim.spec.clone().unwrap();
        assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
        assert_eq!(claim.metadata.labels.as_ref().unwrap()[SET_LABEL], "orders");
        let retention = d
            .statefulset
            .spec
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap();
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        // What was built reads back as what exists, for the next validation.
        let e = existing(Some(&d.statefulset), Some(&d.config_map));
        assert_eq!(e.claim_size.as_deref(), Some("20Gi"));
        assert_eq!(e.partitions, Some(16));
    }

    #[test]
    fn the_node_is_configured_from_the_spec_and_its_pod() {
        let d = build(
            "nodes: 3\npartitions: 64\nwriteConcern: All\nimage: ghcr.io/acme/node:1\nreplication: {backlogBytes: 2097152, heartbeatInterval: 250ms}",
        );
        let data = d.config_map.data.clone().unwrap();
        assert_eq!(data["PARTITA_PARTITIONS"], "64");
        assert_eq!(data["PARTITA_WRITE_CONCERN"], "all");
        assert_eq!(data["PARTITA_BACKLOG_BYTES"], "2097152");
        assert_eq!(data["PARTITA_HEARTBEAT_MS"], "250");
        assert_eq!(data["PARTITA_DATA_DIR"], "/data");
        let c = node(&d);
        assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/node:1"));
        assert_eq!(
            c.env_from.unwrap()[0].config_map_ref.as_ref().unwrap().name,
            "orders-config"
        );
        let env: BTreeMap<_, _> = c
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value_from.unwrap().field_ref.unwrap().field_path))
            .collect();
        assert_eq!(env["PARTITA_NODE_ID"], "metadata.name");
        assert_eq!(env["PARTITA_ADVERTISE_HOST"], "status.podIP");
        // A configuration change changes the pod template, and so the update revision.
        let other = build("nodes: 3\npartitions: 64\nwriteConcern: One");
        let hash = |d: &Desired| {
            d.statefulset
                .spec
                .template
                .metadata
                .clone()
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&d), hash(&other));
        assert_eq!(
            hash(&d),
            hash(&build(
                "nodes: 5\npartitions: 64\nwriteConcern: All\nimage: ghcr.io/acme/node:1\nreplication: {backlogBytes: 2097152, heartbeatInterval: 250ms}"
            ))
        );
    }

    #[test]
    fn scheduling_prefers_spread_by_default_and_follows_spec_scheduling() {
        let default = pod(&build("nodes: 3"));
        let anti = default.affinity.unwrap().pod_anti_affinity.unwrap();
        let preferred = anti
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            preferred[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        assert!(default.node_selector.is_none() && default.tolerations.is_none());
        assert!(default.priority_class_name.is_none());

        let spec = "nodes: 3\nscheduling:\n  podAntiAffinity: Required\n  topologyKey: topology.kubernetes.io/zone\n  nodeSelector: {disk: ssd}\n  tolerations: [{key: dedicated, operator: Equal, value: partita, effect: NoSchedule}]\n  priorityClassName: partita-critical\n";
        let p = pod(&build(spec));
        let anti = p.affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(
            anti.preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        let required = anti
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(required[0].topology_key, "topology.kubernetes.io/zone");
        let term_selector = required[0]
            .label_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert!(selects(&term_selector, &labels("orders")));
        assert!(!selects(&term_selector, &labels("other")));
        assert_eq!(p.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(p.tolerations.unwrap()[0].value.as_deref(), Some("partita"));
        assert_eq!(p.priority_class_name.as_deref(), Some("partita-critical"));
    }

    #[test]
    fn kubernetes_validate_strict_accepts_every_object_built() {
        let d = build(
            "nodes: 3\nresources: {requests: {cpu: 500m, memory: 1Gi}}\nscheduling: {podAntiAffinity: Required, nodeSelector: {disk: ssd}, tolerations: [{key: dedicated, operator: Exists}], priorityClassName: high}",
        );
        let docs = [
            serde_yaml::to_string(&d.config_map).unwrap(),
            serde_yaml::to_string(&d.peer_service).unwrap(),
            serde_yaml::to_string(&d.client_service).unwrap(),
            serde_yaml::to_string(&d.pod_disruption_budget).unwrap(),
            serde_yaml::to_string(&d.statefulset).unwrap(),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owned.yaml");
        std::fs::write(&path, docs.join("---\n")).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("No module named"),
            "kubernetes-validate is not installed: run .ci/setup"
        );
        assert!(
            out.status.success() && text.matches("passed").count() == 5,
            "{text}"
        );
    }
}
