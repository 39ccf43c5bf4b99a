//! The box's StatefulSet controller: turns the operator's StatefulSets into pods and volume
//! claims, as kube-controller-manager's StatefulSet controller would.
//!
//! The operator relies on its behaviour — stable pod names by ordinal, claims that outlive
//! pods, `OnDelete` updates that leave running pods alone, `currentRevision`/`updateRevision`
//! and the `controller-revision-hash` label telling old pods from new — so the box needs one,
//! and it talks to the API only through `kube::Client` so the same code runs against a real
//! kube-apiserver without a controller manager. Where one runs, leave this off: nothing else in
//! the box depends on it.
//!
//! Each reconcile lists the set's pods and claims, decides with the pure [`plan`], acts, and
//! writes status through the status subresource when it changed. What it honours:
//! - pods `<set>-<ordinal>` for `spec.ordinals.start ..` `+ replicas`, labelled
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash=<set>-<10 hex of sha1 of the template>` ([`revision`]), owned by
//!   the set, with `hostname` and `subdomain`, and a claim volume per `volumeClaimTemplates`;
//! - claims `<template>-<set>-<ordinal>`, created with their pod and marked Bound (the box has no
//!   volume provisioner); `persistentVolumeClaimRetentionPolicy`: `whenDeleted: Delete` puts an
//!   owner reference to the set on the claims (the garbage collector does the rest),
//!   `whenScaled: Delete` deletes claims of ordinals past `replicas` once their pod is gone;
//! - `podManagementPolicy`: `Parallel` creates and deletes all at once; `OrderedReady` creates
//!   the lowest missing ordinal only when every lower one is Running and Ready, and deletes the
//!   highest surplus pod only when the rest are, one at a time;
//! - `updateStrategy`: `OnDelete` never replaces a pod, a deleted one comes back at the update
//!   revision; `RollingUpdate` (simple) deletes the highest ordinal at or above `partition` not
//!   at the update revision, once every pod exists and is Ready, one at a time;
//! - status: `observedGeneration`, `replicas`, `readyReplicas`, `availableReplicas`
//!   (`minReadySeconds`), `currentReplicas`, `updatedReplicas`, `currentRevision` (which becomes
//!   `updateRevision` once every pod runs it), `updateRevision`, `collisionCount: 0`.
//!
//! Not done: ControllerRevision objects, adoption of orphaned pods (a pod of the right name
//! that the set does not own is left alone and counted as present), and replacing Failed pods
//! (the box's kubelet fails only pods it can never run, so replacing them would spin; delete
//! one to get a new one).

use crate::{Error, Result};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The field manager of the controller's writes.
pub const FIELD_MANAGER: &str = "partita-box-statefulset-controller";
/// The most replicas a set may have here; more are treated as this many.
pub const MAX_REPLICAS: i32 = 1000;
/// The label naming a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label naming a pod's own name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label naming a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// How often a set is looked at again when nothing happens.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed reconcile is retried.
const RETRY: Duration = Duration::from_secs(1);

/// Runs the controller over the StatefulSets of `namespace` (all when `None`) until `shutdown`
/// completes; then waits for running reconciles and returns.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let (sets, pods, claims) = match &namespace {
        Some(ns) => (
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .owns(claims, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "statefulset controller");
            }
        })
        .await;
    Ok(())
}

struct Context {
    client: Client,
}

fn error_policy(sts: Arc<StatefulSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(statefulset = %sts.name_any(), %error, "statefulset reconcile failed");
    Action::requeue(RETRY)
}

/// The revision name of the set's current template: `<set>-<first 10 hex digits of the SHA-1
/// of the template's JSON>`. Stable: the JSON of the typed template has a fixed field order.
pub fn revision(sts: &StatefulSet) -> String {
    let json = serde_json::to_vec(&sts.spec.template).unwrap_or_default();
    let digest = Sha1::digest(&json);
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", sts.name_any())
}

/// The ordinal of pod `pod` of set `set`, if it is named `<set>-<ordinal>`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// The name of claim template `template`'s claim for ordinal `ordinal` of set `set`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// Whether `labels` match `selector` (matchLabels and matchExpressions). An empty selector
/// matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let plain = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    plain && expressions
}

fn replicas(sts: &StatefulSet) -> i32 {
    sts.spec.replicas.unwrap_or(1).clamp(0, MAX_REPLICAS)
}

fn start_ordinal(sts: &StatefulSet) -> i32 {
    sts.spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn retention(sts: &StatefulSet) -> (bool, bool) {
    let policy = sts.spec.persistent_volume_claim_retention_policy.as_ref();
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        delete(policy.and_then(|p| p.when_deleted.as_ref())),
        delete(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn owner_ref(sts: &StatefulSet) -> Option<OwnerReference> {
    sts.controller_owner_ref(&())
}

/// Pod `ordinal` of `sts` from its template at `revision`.
pub fn new_pod(sts: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let set = sts.name_any();
    let name = format!("{set}-{ordinal}");
    let spec = sts.spec.clone();
    let template_meta = spec.template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut pod_spec = spec.template.spec.unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.service_name.filter(|s| !s.is_empty());
    let mut volumes = pod_spec.volumes.take().unwrap_or_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let template = claim.name_any();
        volumes.retain(|v| v.name != template);
        volumes.push(Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&template, &set, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    pod_spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: owner_ref(sts).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The claims of pod `ordinal` of `sts`, from its claim templates.
pub fn new_claims(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set = sts.name_any();
    let spec = &sts.spec;
    let (when_deleted, _) = retention(sts);
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template.name_any(), &set, ordinal)),
                    namespace: sts.namespace(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: when_deleted
                        .then(|| owner_ref(sts))
                        .flatten()
                        .map(|r| vec![r]),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The claim template and ordinal of claim `claim` of `sts`, if it is one of the set's.
fn claim_ordinal(sts: &StatefulSet, claim: &str) -> Option<i32> {
    let set = sts.name_any();
    sts.spec
        .volume_claim_templates
        .iter()
        .flatten()
        .find_map(|t| ordinal(&set, claim.strip_prefix(&t.name_any())?.strip_prefix('-')?))
}

fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When `pod` became Ready, if it is Running and Ready.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

/// What a reconcile does to one set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Claims to create (before the pods that mount them).
    pub create_claims: Vec<PersistentVolumeClaim>,
    /// Claims to mark Bound.
    pub bind_claims: Vec<String>,
    /// Claims whose owner references change with the retention policy: name and new list.
    pub claim_owners: Vec<(String, Vec<OwnerReference>)>,
    /// Pods to create.
    pub create_pods: Vec<Pod>,
    /// Pods to delete, as name and uid.
    pub delete_pods: Vec<(String, String)>,
    /// Claims to delete (scaled away under `whenScaled: Delete`).
    pub delete_claims: Vec<String>,
    /// The status to write.
    pub status: StatefulSetStatus,
    /// When to look again, if sooner than the resync (a pod about to become available).
    pub requeue: Option<Duration>,
}

/// Decides what to do for `sts`, given its `pods` (those it owns, plus unowned pods bearing
/// its pod names) and its `claims`, at `now`.
pub fn plan(
    sts: &StatefulSet,
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
    now: Timestamp,
) -> Plan {
    let set = sts.name_any();
    let spec = sts.spec.clone();
    let update_revision = revision(sts);
    let want = replicas(sts);
    let start = start_ordinal(sts);
    let wanted = start..start.saturating_add(want);
    let by_ordinal: BTreeMap<i32, &Pod> = pods
        .iter()
        .filter_map(|p| Some((ordinal(&set, &p.name_any())?, p)))
        .collect();
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy
        .type_
        .as_deref()
        .is_none_or(|t| t == "RollingUpdate");
    let (when_deleted, when_scaled) = retention(sts);
    let mut out = Plan::default();

    // Creation.
    let missing: Vec<i32> = wanted
        .clone()
        .filter(|o| !by_ordinal.contains_key(o))
        .collect();
    let create: Vec<i32> = if parallel {
        missing
    } else {
        // OrderedReady: the lowest missing, once every lower one is Running, Ready and staying.
        let mut next = Vec::new();
        for o in wanted.clone() {
            match by_ordinal.get(&o) {
                None => {
                    next.push(o);
                    break;
                }
                Some(p) if terminating(p) || !is_ready(p) => break,
                Some(_) => {}
            }
        }
        next
    };
    let existing_claims: BTreeMap<String, &PersistentVolumeClaim> =
        claims.iter().map(|c| (c.name_any(), c)).collect();
    for &o in &create {
        for claim in new_claims(sts, o) {
            if !existing_claims.contains_key(&claim.name_any()) {
                out.create_claims.push(claim);
            }
        }
        out.create_pods.push(new_pod(sts, o, &update_revision));
    }

    // Deletion: surplus pods, highest first.
    let live = |p: &&&Pod| !terminating(p);
    let mut surplus: Vec<(i32, &Pod)> = by_ordinal
        .iter()
        .filter(|(o, p)| !wanted.contains(o) && live(p))
        .map(|(o, p)| (*o, *p))
        .collect();
    surplus.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    let all_wanted_ready = wanted.clone().all(|o| {
        by_ordinal
            .get(&o)
            .is_some_and(|p| !terminating(p) && is_ready(p))
    });
    let any_terminating = by_ordinal.values().any(|p| terminating(p));
    if parallel {
        out.delete_pods.extend(
            surplus
                .iter()
                .map(|(_, p)| (p.name_any(), p.uid().unwrap_or_default())),
        );
    } else if all_wanted_ready
        && !any_terminating
        && let Some((_, p)) = surplus.first()
    {
        out.delete_pods
            .push((p.name_any(), p.uid().unwrap_or_default()));
    }

    // Rolling update: one outdated pod at a time, highest first, when all are up and ready.
    if rolling && out.create_pods.is_empty() && out.delete_pods.is_empty() {
        let partition = strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0);
        if all_wanted_ready && !any_terminating {
            let outdated = wanted
                .clone()
                .rev()
                .filter(|o| *o >= partition)
                .find_map(|o| {
                    let p = by_ordinal.get(&o)?;
                    (pod_revision(p) != Some(update_revision.as_str())).then_some(*p)
                });
            if let Some(p) = outdated {
                out.delete_pods
                    .push((p.name_any(), p.uid().unwrap_or_default()));
            }
        }
    }

    // Claims: bound, owned per policy, deleted when scaled away.
    let owner = owner_ref(sts);
    for claim in claims {
        let name = claim.name_any();
        let Some(o) = claim_ordinal(sts, &name) else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            out.bind_claims.push(name.clone());
        }
        let refs = claim.metadata.owner_references.clone().unwrap_or_default();
        let ours = |r: &OwnerReference| owner.as_ref().is_some_and(|w| w.uid == r.uid);
        let has = refs.iter().any(ours);
        if when_deleted != has {
            let mut next: Vec<OwnerReference> = refs.iter().filter(|r| !ours(r)).cloned().collect();
            if when_deleted && let Some(owner) = &owner {
                next.push(owner.clone());
            }
            out.claim_owners.push((name.clone(), next));
        }
        if when_scaled && !wanted.contains(&o) && !by_ordinal.contains_key(&o) {
            out.delete_claims.push(name);
        }
    }
    for claim in &out.create_claims {
        out.bind_claims.push(claim.name_any());
    }

    // Status.
    let live_pods: Vec<&Pod> = by_ordinal
        .values()
        .copied()
        .filter(|p| !terminating(p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(live_pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let previous = sts.status.as_ref();
    let mut current_revision = previous
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_else(|| update_revision.clone());
    let replicas_now = count(&|_| true);
    let updated = count(&|p| pod_revision(p) == Some(update_revision.as_str()));
    if updated == want && replicas_now == want {
        current_revision = update_revision.clone();
    }
    let current = count(&|p| pod_revision(p) == Some(current_revision.as_str()));
    let ready = count(&is_ready);
    let min_ready = Duration::from_secs(
        spec.min_ready_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    );
    let mut soonest: Option<Duration> = None;
    let available = count(&|p| {
        let Some(since) = ready_since(p) else {
            return false;
        };
        let ready_for = now
            .duration_since(since)
            .try_into()
            .unwrap_or(Duration::ZERO);
        ready_for >= min_ready
    });
    if min_ready > Duration::ZERO {
        for p in &live_pods {
            if let Some(since) = ready_since(p) {
                let ready_for: Duration = now
                    .duration_since(since)
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                if ready_for < min_ready {
                    let left = min_ready - ready_for;
                    soonest = Some(soonest.map_or(left, |s| s.min(left)));
                }
            }
        }
    }
    out.requeue = soonest;
    out.status = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas: replicas_now,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision),
        collision_count: Some(0),
        conditions: previous.and_then(|s| s.conditions.clone()),
    };
    out
}

fn ignore(result: Result<(), kube::Error>, codes: &[u16]) -> Result<()> {
    match result {
        Err(kube::Error::Api(e)) if codes.contains(&e.code) => Ok(()),
        other => Ok(other?),
    }
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(ns) = sts.namespace() else {
        return Ok(Action::await_change());
    };
    let set = sts.name_any();
    let uid = sts.uid();
    let client = ctx.client.clone();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let sets_api: Api<StatefulSet> = Api::namespaced(client, &ns);
    let selector = sts.spec.selector.clone();
    let match_labels = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let params = ListParams::default().labels(&match_labels);
    let pods: Vec<Pod> = pods_api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|p| ordinal(&set, &p.name_any()).is_some())
        .filter(|p| {
            let controller = p
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true));
            match controller {
                Some(r) => Some(&r.uid) == uid.as_ref(),
                None => selector_matches(&selector, p.labels()),
            }
        })
        .collect();
    let claims: Vec<PersistentVolumeClaim> = claims_api
        .list(&params)
        .await?
        .items
        .into_iter()
        .filter(|c| claim_ordinal(&sts, &c.name_any()).is_some())
        .collect();
    let plan = plan(&sts, &pods, &claims, Timestamp::now());
    let post = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let patch = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };

    for claim in &plan.create_claims {
        ignore(claims_api.create(&post, claim).await.map(drop), &[409])?;
    }
    for name in &plan.bind_claims {
        let claim = claims
            .iter()
            .chain(plan.create_claims.iter())
            .find(|c| c.name_any() == *name);
        let spec = claim.and_then(|c| c.spec.as_ref());
        let body = serde_json::json!({
            "status": {
                "phase": "Bound",
                "accessModes": spec.and_then(|s| s.access_modes.clone()),
                "capacity": spec.and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.clone()),
            }
        });
        ignore(
            claims_api
                .patch_status(name, &patch, &Patch::Merge(&body))
                .await
                .map(drop),
            &[404],
        )?;
    }
    for (name, refs) in &plan.claim_owners {
        let body = serde_json::json!({ "metadata": { "ownerReferences": refs } });
        ignore(
            claims_api
                .patch(name, &patch, &Patch::Merge(&body))
                .await
                .map(drop),
            &[404],
        )?;
    }
    for pod in &plan.create_pods {
        ignore(pods_api.create(&post, pod).await.map(drop), &[409])?;
    }
    for (name, pod_uid) in &plan.delete_pods {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod_uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        ignore(pods_api.delete(name, &params).await.map(drop), &[404, 409])?;
    }
    for name in &plan.delete_claims {
        ignore(
            claims_api
                .delete(name, &DeleteParams::default())
                .await
                .map(drop),
            &[404, 409],
        )?;
    }
    if sts.status.as_ref() != Some(&plan.status) {
        let body = serde_json::json!({ "status": plan.status });
        ignore(
            sets_api
                .patch_status(&set, &patch, &Patch::Merge(&body))
                .await
                .map(drop),
            &[404],
        )?;
    }
    Ok(Action::requeue(plan.requeue.unwrap_or(RESYNC).min(RESYNC)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{
        Container, PersistentVolumeClaimStatus, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn sts(replicas: i32, policy: &str, strategy: &str) -> StatefulSet {
        let labels = BTreeMap::from([("app".to_string(), "s".to_string())]);
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                uid: Some("set-uid".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: StatefulSetSpec {
                replicas: Some(replicas),
                service_name: Some("s-peers".into()),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                pod_management_policy: Some(policy.into()),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some(strategy.into()),
                    ..StatefulSetUpdateStrategy::default()
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "node".into(),
                            image: Some("partita-node:1".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        labels: Some(BTreeMap::from([("tier".into(), "data".into())])),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                }]),
                ..StatefulSetSpec::default()
            },
            status: None,
        }
    }

    /// Pod `ordinal` as the kubelet would have it: Running, Ready when `ready`.
    fn running(sts: &StatefulSet, ordinal: i32, rev: &str, ready: bool) -> Pod {
        let mut pod = new_pod(sts, ordinal, rev);
        pod.metadata.uid = Some(format!("pod-{ordinal}"));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(now())),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn bound_claims(
        sts: &StatefulSet,
        ordinals: std::ops::Range<i32>,
    ) -> Vec<PersistentVolumeClaim> {
        ordinals
            .flat_map(|o| new_claims(sts, o))
            .map(|mut c| {
                c.status = Some(PersistentVolumeClaimStatus {
                    phase: Some("Bound".into()),
                    ..PersistentVolumeClaimStatus::default()
                });
                c
            })
            .collect()
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn revision_is_stable_and_follows_the_template() {
        let a = sts(3, "Parallel", "OnDelete");
        let rev = revision(&a);
        assert!(rev.starts_with("s-"));
        assert_eq!(rev.len(), "s-".len() + 10);
        let mut b = a.clone();
        b.spec.replicas = Some(5);
        assert_eq!(revision(&b), rev, "replicas are not part of the template");
        b.spec.template.spec.as_mut().unwrap().containers[0].image = Some("partita-node:2".into());
        assert_ne!(revision(&b), rev);
    }

    #[test]
    fn ordinals_parse_only_the_set_s_names() {
        assert_eq!(ordinal("s", "s-0"), Some(0));
        assert_eq!(ordinal("s", "s-12"), Some(12));
        assert_eq!(ordinal("s", "s-01"), None);
        assert_eq!(ordinal("s", "s-x"), None);
        assert_eq!(ordinal("s", "st-1"), None);
        assert_eq!(ordinal("s", "s-"), None);
        assert_eq!(ordinal("my-set", "my-set-3"), Some(3));
    }

    #[test]
    fn pods_carry_identity_revision_owner_and_claims() {
        let s = sts(1, "Parallel", "OnDelete");
        let pod = new_pod(&s, 2, "s-abc");
        let labels = pod.labels();
        assert_eq!(labels[POD_NAME_LABEL], "s-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "s-abc");
        assert_eq!(labels["app"], "s");
        let owner = &pod.owner_references()[0];
        assert_eq!(owner.uid, "set-uid");
        assert_eq!(owner.controller, Some(true));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("s-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("s-peers"));
        let volume = &spec.volumes.unwrap()[0];
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-s-2"
        );
        let claim = &new_claims(&s, 2)[0];
        assert_eq!(claim.name_any(), "data-s-2");
        assert_eq!(claim.labels()["tier"], "data");
        assert_eq!(claim.labels()["app"], "s");
        assert!(claim.owner_references().is_empty(), "retained by default");
    }

    #[test]
    fn parallel_creates_everything_missing_with_claims_first() {
        let s = sts(3, "Parallel", "OnDelete");
        let rev = revision(&s);
        let existing = vec![running(&s, 1, &rev, true)];
        let p = plan(&s, &existing, &bound_claims(&s, 1..2), now());
        assert_eq!(names(&p.create_pods), vec!["s-0", "s-2"]);
        let claims: Vec<String> = p.create_claims.iter().map(|c| c.name_any()).collect();
        assert_eq!(claims, vec!["data-s-0", "data-s-2"]);
        assert_eq!(p.bind_claims, vec!["data-s-0", "data-s-2"]);
        assert!(p.delete_pods.is_empty());
        assert_eq!(p.status.replicas, 1);
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.observed_generation, Some(3));
        assert_eq!(p.status.collision_count, Some(0));
    }

    #[test]
    fn ordered_ready_waits_for_each_pod() {
        let s = sts(3, "OrderedReady", "OnDelete");
        let rev = revision(&s);
        let p = plan(&s, &[], &[], now());
        assert_eq!(names(&p.create_pods), vec!["s-0"]);
        let p = plan(&s, &[running(&s, 0, &rev, false)], &[], now());
        assert!(p.create_pods.is_empty(), "s-0 is not ready yet");
        let p = plan(&s, &[running(&s, 0, &rev, true)], &[], now());
        assert_eq!(names(&p.create_pods), vec!["s-1"]);
    }

    #[test]
    fn scale_down_deletes_the_highest_and_claims_per_policy() {
        let mut s = sts(1, "Parallel", "OnDelete");
        let rev = revision(&s);
        let pods: Vec<Pod> = (0..3).map(|o| running(&s, o, &rev, true)).collect();
        let p = plan(&s, &pods, &bound_claims(&s, 0..3), now());
        let deleted: Vec<&str> = p.delete_pods.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(deleted, vec!["s-2", "s-1"]);
        assert!(p.delete_claims.is_empty(), "whenScaled defaults to Retain");

        s.spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_scaled: Some("Delete".into()),
                when_deleted: Some("Retain".into()),
            });
        let p = plan(&s, &pods, &bound_claims(&s, 0..3), now());
        assert!(
            p.delete_claims.is_empty(),
            "claims go only after their pods"
        );
        let p = plan(&s, &pods[..1], &bound_claims(&s, 0..3), now());
        assert_eq!(p.delete_claims, vec!["data-s-1", "data-s-2"]);

        let mut ordered = sts(1, "OrderedReady", "OnDelete");
        ordered.spec.replicas = Some(1);
        let p = plan(&ordered, &pods, &[], now());
        let deleted: Vec<&str> = p.delete_pods.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(deleted, vec!["s-2"], "one at a time, highest first");
    }

    #[test]
    fn when_deleted_delete_owns_the_claims() {
        let mut s = sts(1, "Parallel", "OnDelete");
        s.spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".into()),
                when_scaled: Some("Retain".into()),
            });
        assert_eq!(new_claims(&s, 0)[0].owner_references()[0].uid, "set-uid");
        let retained = bound_claims(&sts(1, "Parallel", "OnDelete"), 0..1);
        let p = plan(&s, &[], &retained, now());
        assert_eq!(p.claim_owners.len(), 1);
        assert_eq!(p.claim_owners[0].1[0].uid, "set-uid");
    }

    #[test]
    fn on_delete_leaves_old_pods_and_moves_current_revision_when_all_are_new() {
        let old = sts(2, "Parallel", "OnDelete");
        let old_rev = revision(&old);
        let mut new = old.clone();
        new.spec.template.spec.as_mut().unwrap().containers[0].image =
            Some("partita-node:2".into());
        new.status = Some(StatefulSetStatus {
            current_revision: Some(old_rev.clone()),
            ..StatefulSetStatus::default()
        });
        let new_rev = revision(&new);
        let pods = vec![
            running(&new, 0, &old_rev, true),
            running(&new, 1, &old_rev, true),
        ];
        let p = plan(&new, &pods, &[], now());
        assert!(p.delete_pods.is_empty() && p.create_pods.is_empty());
        assert_eq!(p.status.current_revision.as_deref(), Some(old_rev.as_str()));
        assert_eq!(p.status.update_revision.as_deref(), Some(new_rev.as_str()));
        assert_eq!(p.status.current_replicas, Some(2));
        assert_eq!(p.status.updated_replicas, Some(0));

        // s-1 deleted by the operator: recreated at the new revision.
        let p = plan(&new, &pods[..1], &[], now());
        assert_eq!(p.create_pods[0].labels()[REVISION_LABEL], new_rev);

        let pods = vec![
            running(&new, 0, &new_rev, true),
            running(&new, 1, &new_rev, true),
        ];
        let p = plan(&new, &pods, &[], now());
        assert_eq!(p.status.current_revision.as_deref(), Some(new_rev.as_str()));
        assert_eq!(p.status.current_replicas, Some(2));
    }

    #[test]
    fn rolling_update_replaces_one_pod_at_a_time_from_the_top() {
        let old = sts(3, "Parallel", "RollingUpdate");
        let old_rev = revision(&old);
        let mut new = old.clone();
        new.spec.template.spec.as_mut().unwrap().containers[0].image =
            Some("partita-node:2".into());
        let pods: Vec<Pod> = (0..3).map(|o| running(&new, o, &old_rev, true)).collect();
        let p = plan(&new, &pods, &[], now());
        assert_eq!(
            p.delete_pods,
            vec![("s-2".to_string(), "pod-2".to_string())]
        );
        let mut waiting = pods.clone();
        waiting[2] = running(&new, 2, &revision(&new), false);
        let p = plan(&new, &waiting, &[], now());
        assert!(
            p.delete_pods.is_empty(),
            "waits for the new pod to be ready"
        );
    }

    #[test]
    fn min_ready_seconds_delays_availability() {
        let mut s = sts(1, "Parallel", "OnDelete");
        s.spec.min_ready_seconds = Some(10);
        let rev = revision(&s);
        let pods = vec![running(&s, 0, &rev, true)];
        let p = plan(&s, &pods, &[], now());
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.available_replicas, Some(0));
        assert_eq!(p.requeue, Some(Duration::from_secs(10)));
        let later = Timestamp::from_second(1_700_000_011).unwrap();
        assert_eq!(
            plan(&s, &pods, &[], later).status.available_replicas,
            Some(1)
        );
    }

    #[test]
    fn selectors() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selector_matches(&LabelSelector::default(), &labels));
        assert!(selector_matches(&expr("In", &["1", "2"]), &labels));
        assert!(!selector_matches(&expr("NotIn", &["1"]), &labels));
        assert!(selector_matches(&expr("Exists", &[]), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
    }
}
