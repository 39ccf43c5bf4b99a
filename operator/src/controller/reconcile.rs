//! One reconcile of one set, and what happens when it fails.

use super::Context;
use super::apply::{Change, ensure, owned_by_same, stamp};
use super::partitions;
use crate::backoff;
use crate::error::{Error, Result};
use crate::resources::{self, FIELD_MANAGER, FINALIZER, Names, SET_LABEL};
use crate::status::{self, Applied, Observed};
use crate::validate;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::runtime::finalizer::{Error as FinalizerError, Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use partita_api::{Phase, ReplicatedPartitionSet, ReplicatedPartitionSetStatus};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

/// How soon a set that is not ready is looked at again.
/// The reason of a problem where an owned object's name is taken by something else.
const NAME_CONFLICT: &str = "NameConflict";
const REQUEUE_UNHEALTHY: Duration = Duration::from_secs(5);
/// How soon a set with partition work in flight (a failover, a move, a node call that failed)
/// is looked at again; the node pollers usually trigger sooner.
const REQUEUE_BUSY: Duration = Duration::from_secs(1);
/// How often a healthy set is looked at anyway (watches normally trigger sooner).
const REQUEUE_HEALTHY: Duration = Duration::from_secs(300);

/// Reconciles one set: adds the finalizer first, then applies or cleans up.
pub async fn reconcile(rps: Arc<ReplicatedPartitionSet>, ctx: Arc<Context>) -> Result<Action> {
    let _measure = ctx.metrics.reconcile();
    let namespace = rps.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let sets: Api<ReplicatedPartitionSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&sets, FINALIZER, rps, |event| async {
        match event {
            Finalizer::Apply(rps) => apply(&rps, &ctx, &namespace).await,
            Finalizer::Cleanup(rps) => cleanup(&rps, &ctx, &namespace).await,
        }
    })
    .await
    .map_err(|e| match e {
        // The reconcile's own errors keep their kind, for the metric and the log.
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })?;
    Ok(action)
}

/// Retries a failed reconcile with exponential backoff per set.
pub fn error_policy(rps: Arc<ReplicatedPartitionSet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    let set = ObjectRef::from_obj(&*rps);
    let failures = ctx.failed(set.clone());
    let jitter = RandomState::new().hash_one(&set);
    let delay = backoff::delay(failures, jitter);
    tracing::warn!(set = %set, %error, failures, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// The live objects a set owns, read fresh.
#[derive(Default)]
struct Live {
    config_map: Option<ConfigMap>,
    peer_service: Option<Service>,
    client_service: Option<Service>,
    pod_disruption_budget: Option<PodDisruptionBudget>,
    statefulset: Option<StatefulSet>,
}

async fn read(ctx: &Context, namespace: &str, names: &Names) -> Result<Live> {
    let c = &ctx.client;
    Ok(Live {
        config_map: Api::namespaced(c.clone(), namespace)
            .get_opt(&names.config_map)
            .await?,
        peer_service: Api::namespaced(c.clone(), namespace)
            .get_opt(&names.peer_service)
            .await?,
        client_service: Api::namespaced(c.clone(), namespace)
            .get_opt(&names.client_service)
            .await?,
        pod_disruption_budget: Api::namespaced(c.clone(), namespace)
            .get_opt(&names.pod_disruption_budget)
            .await?,
        statefulset: Api::namespaced(c.clone(), namespace)
            .get_opt(&names.statefulset)
            .await?,
    })
}

async fn apply(rps: &ReplicatedPartitionSet, ctx: &Context, namespace: &str) -> Result<Action> {
    let name = rps.name_any();
    let names = Names::of(&name);
    // A name no Service or pod can carry is refused before anything is read or applied: the
    // API server would refuse every object, and the set would retry forever without a word.
    let bad_name = validate::name_problem(&name);
    let name_ok = bad_name.is_none();
    // The cache may lag behind this operator's own last status write; the partition map must
    // be planned from the latest one (its writes are guarded by resourceVersion anyway).
    let fresh = match name_ok {
        true => {
            Api::<ReplicatedPartitionSet>::namespaced(ctx.client.clone(), namespace)
                .get_opt(&name)
                .await?
        }
        false => Some(rps.clone()),
    };
    let Some(fresh) = fresh else {
        return Ok(Action::await_change());
    };
    let rps = &fresh;
    let live = match bad_name {
        None => read(ctx, namespace, &names).await?,
        Some(_) => Live::default(),
    };
    let existing = resources::existing(live.statefulset.as_ref(), live.config_map.as_ref());
    let checked = match (
        bad_name,
        validate::validate(&rps.spec, &ctx.settings.default_image, &existing),
    ) {
        (None, checked) => checked,
        (Some(p), Ok(_)) => Err(vec![p]),
        (Some(p), Err(mut problems)) => {
            problems.insert(0, p);
            Err(problems)
        }
    };

    let mut applied = Applied::default();
    let checked_valid = checked.as_ref().ok().cloned();
    let problems = match checked {
        Ok(valid) if !rps.spec.paused => {
            applied = apply_owned(rps, ctx, namespace, &valid, &live).await?;
            applied
                .foreign
                .iter()
                .map(|what| validate::Problem {
                    reason: NAME_CONFLICT,
                    message: format!(
                        "{what} already exists and does not belong to this set, so the operator leaves it alone; delete or rename it, or give the set another name"
                    ),
                })
                .collect()
        }
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    };

    // A bad name may not even be a label value, which a selector would need.
    let pods = if name_ok {
        Api::<Pod>::namespaced(ctx.client.clone(), namespace)
            .list(&ListParams::default().labels(&resources::selector_string(&name)))
            .await?
            .items
    } else {
        Vec::new()
    };
    let observed_conflict = problems.iter().any(|p| p.reason == NAME_CONFLICT);
    let act_on = match &checked_valid {
        Some(valid) if problems.is_empty() && !rps.spec.paused => Some(valid),
        _ => None,
    };
    let mut observed = observe(rps, problems, applied, &pods, live.statefulset.as_ref());
    let mut resource_version = rps.resource_version();
    let mut busy = false;
    if let Some(valid) = act_on {
        let outcome =
            partitions::manage(rps, ctx, namespace, valid, &pods, &observed.outdated).await?;
        observed.partitions = Some(outcome.partitions);
        resource_version = outcome.resource_version;
        busy = outcome.busy;
    }
    let next = write_status(rps, ctx, namespace, &observed, resource_version).await?;

    let set = ObjectRef::from_obj(rps);
    ctx.succeeded(&set);
    Ok(match next.phase {
        _ if busy => Action::requeue(REQUEUE_BUSY),
        Some(Phase::Ready) => Action::requeue(REQUEUE_HEALTHY),
        // Nothing to do until the user changes the spec.
        // A conflicting object can go without the set changing: look again.
        Some(Phase::Invalid) if observed_conflict => Action::requeue(REQUEUE_UNHEALTHY),
        Some(Phase::Invalid) => Action::await_change(),
        _ => Action::requeue(REQUEUE_UNHEALTHY),
    })
}

/// `Kind name` of `live` when it exists but is not the set's: an object the operator must not
/// take over (a user's Service of the same name, say).
fn foreign<K>(desired: &K, live: Option<&K>) -> Option<String>
where
    K: Resource<DynamicType = ()>,
{
    let live = live?;
    (!owned_by_same(desired, live)).then(|| format!("{} {}", K::kind(&()), live.name_any()))
}

/// Applies every owned object that differs from the live one, in dependency order: the
/// configuration and Services before the pods that use them.
async fn apply_owned(
    rps: &ReplicatedPartitionSet,
    ctx: &Context,
    namespace: &str,
    valid: &validate::Valid,
    live: &Live,
) -> Result<Applied> {
    let mut desired = resources::desired(rps, valid)?;
    // Scale-down drains first: the StatefulSet keeps the pods that still hold copies.
    let live_replicas = live.statefulset.as_ref().and_then(|s| s.spec.replicas);
    desired.statefulset.spec.replicas = Some(partitions::statefulset_replicas(rps, live_replicas));
    stamp(&mut desired.config_map)?;
    stamp(&mut desired.peer_service)?;
    stamp(&mut desired.client_service)?;
    stamp(&mut desired.pod_disruption_budget)?;
    stamp(&mut desired.statefulset)?;

    let foreign: Vec<String> = [
        foreign(&desired.config_map, live.config_map.as_ref()),
        foreign(&desired.peer_service, live.peer_service.as_ref()),
        foreign(&desired.client_service, live.client_service.as_ref()),
        foreign(
            &desired.pod_disruption_budget,
            live.pod_disruption_budget.as_ref(),
        ),
        foreign(&desired.statefulset, live.statefulset.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !foreign.is_empty() {
        return Ok(Applied {
            foreign,
            ..Applied::default()
        });
    }

    let c = &ctx.client;
    let mut applied = Applied::default();
    let mut note = |kind: &'static str, change: Change| match change {
        Change::Created => applied.created.push(kind),
        Change::Updated => applied.updated.push(kind),
        Change::Unchanged => {}
    };
    note(
        "ConfigMap",
        ensure(
            &Api::namespaced(c.clone(), namespace),
            &desired.config_map,
            live.config_map.as_ref(),
        )
        .await?,
    );
    note(
        "Service",
        ensure(
            &Api::namespaced(c.clone(), namespace),
            &desired.peer_service,
            live.peer_service.as_ref(),
        )
        .await?,
    );
    note(
        "Service",
        ensure(
            &Api::namespaced(c.clone(), namespace),
            &desired.client_service,
            live.client_service.as_ref(),
        )
        .await?,
    );
    note(
        "PodDisruptionBudget",
        ensure(
            &Api::namespaced(c.clone(), namespace),
            &desired.pod_disruption_budget,
            live.pod_disruption_budget.as_ref(),
        )
        .await?,
    );
    let sts_change = ensure(
        &Api::namespaced(c.clone(), namespace),
        &desired.statefulset,
        live.statefulset.as_ref(),
    )
    .await?;
    note("StatefulSet", sts_change);
    applied.created.dedup();
    applied.updated.dedup();
    let replicas = |s: &StatefulSet| s.spec.replicas.unwrap_or(1);
    if let (Change::Updated, Some(old)) = (sts_change, &live.statefulset) {
        let (from, to) = (replicas(old), rps.spec.nodes);
        if from != to {
            applied.scaled = Some((from, to));
        }
    }
    Ok(applied)
}

/// Counts the set's pods: those below `nodes`, and of them the ready ones.
fn observe(
    rps: &ReplicatedPartitionSet,
    problems: Vec<validate::Problem>,
    applied: Applied,
    pods: &[Pod],
    statefulset: Option<&StatefulSet>,
) -> Observed {
    let name = rps.name_any();
    // Bounded even when the spec is invalid (CEL may be off): nodes is at most 1000 when valid.
    let nodes = rps.spec.nodes.clamp(0, 1000);
    let mut observed = Observed {
        generation: rps.meta().generation,
        nodes,
        paused: rps.spec.paused,
        problems,
        applied,
        statefulset_behind: statefulset_behind(statefulset),
        ..Observed::default()
    };
    for ordinal in 0..nodes {
        let pod_name = format!("{name}-{ordinal}");
        let pod = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str()));
        let alive = pod.filter(|p| p.metadata.deletion_timestamp.is_none());
        if alive.is_some() {
            observed.pods += 1;
        }
        if alive.is_some_and(|p| outdated(p, statefulset)) {
            observed.outdated.push(pod_name.clone());
        }
        if alive.is_some_and(is_ready) {
            observed.ready += 1;
        } else {
            observed.not_ready.push(pod_name);
        }
    }
    observed
}

/// Whether the StatefulSet controller has not yet acted on the StatefulSet's latest spec.
fn statefulset_behind(statefulset: Option<&StatefulSet>) -> bool {
    let Some(sts) = statefulset else {
        return false;
    };
    let seen = sts.status.as_ref().and_then(|s| s.observed_generation);
    matches!((seen, sts.metadata.generation), (Some(seen), Some(wanted)) if seen < wanted)
}

/// Whether `pod` runs an older pod template than the StatefulSet's current revision.
fn outdated(pod: &Pod, statefulset: Option<&StatefulSet>) -> bool {
    let current = statefulset
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.update_revision.as_deref());
    let running = pod
        .labels()
        .get("controller-revision-hash")
        .map(String::as_str);
    matches!((current, running), (Some(c), Some(r)) if c != r)
}

pub(super) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Writes the status for `observed` unless it equals the current one, and records the Events
/// the change deserves.
async fn write_status(
    rps: &ReplicatedPartitionSet,
    ctx: &Context,
    namespace: &str,
    observed: &Observed,
    resource_version: Option<String>,
) -> Result<ReplicatedPartitionSetStatus> {
    let now = Time(jiff::Timestamp::now());
    let previous = rps.status.as_ref();
    let next = status::compute(previous, observed, &now);
    if !previous.is_some_and(|p| status::same(p, &next)) {
        let sets: Api<ReplicatedPartitionSet> = Api::namespaced(ctx.client.clone(), namespace);
        // Guarded by the resourceVersion read at the start (or written by the map record): a
        // status computed from an older object must not overwrite a newer map.
        let patch = serde_json::json!({
            "apiVersion": partita_api::GROUP.to_string() + "/" + partita_api::VERSION,
            "kind": "ReplicatedPartitionSet",
            "metadata": {"resourceVersion": resource_version},
            "status": next,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        sets.patch_status(&rps.name_any(), &params, &Patch::Apply(&patch))
            .await?;
    }
    for note in status::notes(previous, &next, &observed.applied) {
        publish(
            rps,
            ctx,
            note.event_type(),
            note.reason,
            note.action,
            note.message,
        )
        .await;
    }
    Ok(next)
}

/// Records an Event on the set. A failure to record is logged, not fatal: Events are a
/// courtesy, and failing the reconcile over one would redo work that succeeded.
pub(super) async fn publish(
    rps: &ReplicatedPartitionSet,
    ctx: &Context,
    type_: kube::runtime::events::EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(status::truncate_note(note)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &rps.object_ref(&())).await {
        tracing::warn!(set = %rps.name_any(), reason, error = %e, "recording an event failed");
    }
}

/// Runs before the set is gone. Owned objects go by garbage collection (owner references);
/// volumes stay unless `storage.deleteWithSet` asks for them to go too.
async fn cleanup(rps: &ReplicatedPartitionSet, ctx: &Context, namespace: &str) -> Result<Action> {
    let name = rps.name_any();
    let message = if rps.spec.storage.delete_with_set && rps.spec.paused {
        format!(
            "deleting the set; it is paused, so its volumes (data-{name}-N) are kept although storage.deleteWithSet asks for them to go"
        )
    } else if rps.spec.storage.delete_with_set {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
        let selector = format!("{},{SET_LABEL}={name}", resources::selector_string(&name));
        claims
            .delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&selector),
            )
            .await?;
        "deleting the set and, as storage.deleteWithSet asks, its volumes".to_string()
    } else {
        format!("deleting the set; its volumes (data-{name}-N) are kept")
    };
    publish(
        rps,
        ctx,
        kube::runtime::events::EventType::Normal,
        "Deleting",
        "Delete",
        message,
    )
    .await;
    ctx.health.forget(&ObjectRef::from_obj(rps));
    ctx.succeeded(&ObjectRef::from_obj(rps));
    Ok(Action::await_change())
}
