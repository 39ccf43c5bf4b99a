//! The StatefulSet of node pods.
//!
//! - `updateStrategy: OnDelete`: the StatefulSet controller never restarts a pod on its own; the
//!   operator decides the order (replicas first, each primary switched over before its pod goes).
//! - `podManagementPolicy: Parallel`: pods start together; partition placement, not pod order,
//!   decides who serves what.
//! - One volume per pod from `spec.storage`, kept when the StatefulSet is deleted or scaled down
//!   unless `storage.deleteWithSet` asks for them to go with the set.
//! - Probes against the node's `/healthz` (alive) and `/readyz` (recovered and serving), with a
//!   startup probe that allows a long log replay.
//! - The restricted pod security standard: non-root, read-only root filesystem, no privilege
//!   escalation, no capabilities, the runtime's seccomp profile.
//! - Anti-affinity and topology spread, so copies land on different machines and zones when the
//!   cluster has them. By default a preference, so pods still schedule when it has not;
//!   `scheduling.podAntiAffinity: Required` makes it a rule. `scheduling` also carries the
//!   node selector, tolerations and priority class.

use super::{
    CONFIG_HASH_ANNOTATION, Names, Owner, config::DATA_DIR, labels, ports, selector_labels,
};
use crate::validate::Valid;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, TopologySpreadConstraint, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use partita_api::{AntiAffinity, ReplicatedPartitionSetSpec, SchedulingSpec};
use std::collections::BTreeMap;

/// The name of the volume claim template, and so of the claims: `data-<set>-<ordinal>`.
pub const CLAIM_NAME: &str = "data";
/// The node container's name.
pub const CONTAINER_NAME: &str = "node";
/// The uid and gid the node runs as (the conventional "nonroot" user of distroless images).
pub const RUN_AS: i64 = 65532;
/// Seconds a pod has to stop: enough for the operator to switch its primaries over and for the
/// node to drain in-flight writes to its replicas.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// The size and class of the volume claim template of an existing StatefulSet.
pub fn claim_template_of(sts: &StatefulSet) -> Option<(Option<String>, Option<String>)> {
    let claim = sts
        .spec
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(CLAIM_NAME))?;
    let spec = claim.spec.as_ref()?;
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    Some((size, spec.storage_class_name.clone()))
}

/// The StatefulSet for the set `owner`, with pod template annotated by `config_hash`.
pub fn statefulset(
    owner: &Owner,
    names: &Names,
    spec: &ReplicatedPartitionSetSpec,
    valid: &Valid,
    config_hash: &str,
) -> StatefulSet {
    let pod_labels = labels(&owner.name);
    StatefulSet {
        metadata: owner.meta(&names.statefulset),
        spec: StatefulSetSpec {
            replicas: Some(spec.nodes),
            service_name: Some(names.peer_service.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&owner.name)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        if spec.storage.delete_with_set {
                            "Delete"
                        } else {
                            "Retain"
                        }
                        .into(),
                    ),
                    // Scale-down keeps volumes: a set scaled up again finds its data.
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(owner, names, spec, valid)),
            },
            volume_claim_templates: Some(vec![claim_template(owner, spec)]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn claim_template(owner: &Owner, spec: &ReplicatedPartitionSetSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CLAIM_NAME.into()),
            labels: Some(labels(&owner.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_spec(
    owner: &Owner,
    names: &Names,
    spec: &ReplicatedPartitionSetSpec,
    valid: &Valid,
) -> PodSpec {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(&owner.name)),
        ..LabelSelector::default()
    };
    let spread = |key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: key.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(selector.clone()),
        ..TopologySpreadConstraint::default()
    };
    PodSpec {
        containers: vec![container(names, spec, valid)],
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(Affinity {
            pod_anti_affinity: Some(anti_affinity(&spec.scheduling, &selector)),
            ..Affinity::default()
        }),
        node_selector: (!spec.scheduling.node_selector.is_empty())
            .then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!spec.scheduling.tolerations.is_empty())
            .then(|| spec.scheduling.tolerations.clone()),
        priority_class_name: spec.scheduling.priority_class_name.clone(),
        topology_spread_constraints: Some(vec![
            spread("kubernetes.io/hostname"),
            spread("topology.kubernetes.io/zone"),
        ]),
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}

/// Keeps the set's pods apart, one per place (`topologyKey`), as a preference or a rule.
fn anti_affinity(scheduling: &SchedulingSpec, selector: &LabelSelector) -> PodAntiAffinity {
    let term = PodAffinityTerm {
        topology_key: scheduling.topology_key.clone(),
        label_selector: Some(selector.clone()),
        ..PodAffinityTerm::default()
    };
    match scheduling.pod_anti_affinity {
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn container(names: &Names, spec: &ReplicatedPartitionSetSpec, valid: &Valid) -> Container {
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(valid.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["partita-node".into()]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config_map.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(vec![
            field_env("PARTITA_NODE_ID", "metadata.name"),
            field_env("PARTITA_ADVERTISE_HOST", "status.podIP"),
        ]),
        ports: Some(vec![
            port("resp", ports::RESP),
            port("grpc", ports::GRPC),
            port("http", ports::HTTP),
        ]),
        resources: spec.resources.clone(),
        // Started: at most 10 minutes to replay the log. Then alive while /healthz answers, and
        // ready (in the client Service) while /readyz does.
        startup_probe: Some(http_probe("/healthz", 5, 120)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 2, 2)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: super::statefulset::CLAIM_NAME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}
