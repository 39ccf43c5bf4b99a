//! Deletion as kube-apiserver and kube-controller-manager carry it out: finalizers, graceful
//! deletion of pods, owner-reference garbage collection (background, foreground and orphan
//! propagation), and the namespace and CRD cleanups that empty a namespace or a CRD's
//! resource before it goes.
//!
//! The operator's cleanup relies on all of it: its finalizer holds a set while it tidies up,
//! and what it created goes with the set because of owner references, not because it deletes
//! it. The garbage collector runs synchronously after every write, to a fixed point, which is
//! one valid order in which the real, asynchronous collector could have acted; observers
//! still see each step as a separate watch event.

use super::apply::{self, Writer};
use super::registry::{self, CRD_GROUP, CRD_PLURAL};
use super::status::{ApiError, ApiResult};
use super::store::{
    Key, State, deleting, finalizers, meta_str, owner_uids, removable, set_finalizers, set_meta,
    timestamp,
};
use serde_json::{Value, json};
use std::sync::Arc;

/// The finalizer that orphans an object's dependents before it goes.
pub(crate) const ORPHAN: &str = "orphan";
/// The finalizer that keeps an object until its blocking dependents are gone.
pub(crate) const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer that keeps a CRD until its custom resources are gone.
pub(crate) const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The field manager of the collector's own writes.
const MANAGER: &str = "generic-garbage-collector";
/// Grace period of a pod that does not set `terminationGracePeriodSeconds`.
const DEFAULT_POD_GRACE: i64 = 30;
/// Most garbage-collection rounds after one write (each round makes progress or stops).
const MAX_ROUNDS: usize = 10_000;

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Deleted after the owner is gone.
    Background,
    /// Deleted before the owner goes.
    Foreground,
    /// Kept, with the owner reference removed.
    Orphan,
}

/// What a DELETE asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `propagationPolicy` (or `orphanDependents`).
    pub policy: Option<Policy>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// `plural` or `plural.group` of the object at `key`.
pub(crate) fn qualified(key: &Key) -> String {
    if key.0.is_empty() {
        key.1.clone()
    } else {
        format!("{}.{}", key.1, key.0)
    }
}

/// The grace period a pod's deletion gets: none when it was never bound to a node or has
/// finished, else the request's, else its own `terminationGracePeriodSeconds`, else 30s.
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_POD_GRACE)
        .max(0)
}

/// Deletes the object at `key` by the real server's rules and returns it as it is now: marked
/// with `deletionTimestamp` while finalizers or a pod's grace period hold it, else its last
/// state. The caller runs [`collect`] afterwards.
pub(crate) fn delete(st: &mut State, key: &Key, opts: &DeleteOptions) -> ApiResult<Arc<Value>> {
    let resource = qualified(key);
    let live = st
        .objects
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&resource, &key.3))?;
    if let Some(uid) = &opts.uid
        && meta_str(&live, "uid") != Some(uid.as_str())
    {
        return Err(ApiError::conflict(
            &resource,
            &key.3,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&live, "uid").unwrap_or("")
            ),
        ));
    }
    if let Some(rv) = &opts.resource_version
        && meta_str(&live, "resourceVersion") != Some(rv.as_str())
    {
        return Err(ApiError::conflict(
            &resource,
            &key.3,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(&live, "resourceVersion").unwrap_or("")
            ),
        ));
    }
    let mut obj = (*live).clone();
    let mut list = finalizers(&obj);
    let wanted = match opts.policy {
        Some(Policy::Orphan) => Some(ORPHAN),
        Some(Policy::Foreground) => Some(FOREGROUND),
        _ => None,
    };
    if let Some(f) = wanted
        && !list.iter().any(|x| x == f)
    {
        list.push(f.to_string());
    }
    set_finalizers(&mut obj, &list);
    let grace = if key.0.is_empty() && key.1 == "pods" {
        pod_grace(&obj, opts.grace)
    } else {
        0
    };
    if deleting(&live) {
        let current = live
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace < current {
            set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
            set_meta(&mut obj, "deletionTimestamp", json!(timestamp(grace)));
        }
    } else {
        set_meta(&mut obj, "deletionTimestamp", json!(timestamp(grace)));
        set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
        if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
            set_meta(&mut obj, "generation", json!(g + 1));
        }
        if key.0.is_empty()
            && key.1 == "namespaces"
            && let Some(map) = obj.as_object_mut()
        {
            map.insert("status".into(), json!({"phase": "Terminating"}));
        }
        if removable(key, &obj) {
            // Nothing holds it: it goes at once, as it was.
            return Ok(st.remove(key, None));
        }
    }
    if obj == *live {
        return Ok(live);
    }
    Ok(st.commit(key, obj))
}

/// Changes the object at `key` with `change` as the collector, recording it as the
/// collector's update in managed fields. Returns whether anything changed.
fn modify(st: &mut State, key: &Key, change: impl FnOnce(&mut Value)) -> bool {
    let Some(live) = st.objects.get(key).cloned() else {
        return false;
    };
    let mut obj = (*live).clone();
    change(&mut obj);
    if obj == *live {
        return false;
    }
    if let Some(kind) = st.kind_of(key) {
        let version = kind.versions.first().cloned().unwrap_or_default();
        let now = timestamp(0);
        let writer = Writer {
            manager: MANAGER,
            subresource: "",
            api_version: &kind.api_version(&version),
            has_status: kind.status,
            now: &now,
        };
        let entries = apply::after_update(&live, &obj, &writer);
        apply::write(&mut obj, &live, &entries);
    }
    st.commit(key, obj);
    true
}

fn remove_finalizer(st: &mut State, key: &Key, name: &str) -> bool {
    modify(st, key, |obj| {
        let list: Vec<String> = finalizers(obj).into_iter().filter(|f| f != name).collect();
        set_finalizers(obj, &list);
    })
}

fn strip_owners(st: &mut State, key: &Key, gone: &[String]) -> bool {
    modify(st, key, |obj| {
        if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
            let keep: Vec<Value> = meta
                .get("ownerReferences")
                .and_then(Value::as_array)
                .map(|refs| {
                    refs.iter()
                        .filter(|r| {
                            r.get("uid")
                                .and_then(Value::as_str)
                                .is_none_or(|u| !gone.iter().any(|g| g == u))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if keep.is_empty() {
                meta.remove("ownerReferences");
            } else {
                meta.insert("ownerReferences".into(), Value::Array(keep));
            }
        }
    })
}

/// Deletes `key` as the collector does, unless its deletion already began.
fn collect_one(st: &mut State, key: &Key, policy: Policy) -> bool {
    let fresh = st.objects.get(key).is_some_and(|o| !deleting(o));
    fresh
        && delete(
            st,
            key,
            &DeleteOptions {
                policy: Some(policy),
                ..DeleteOptions::default()
            },
        )
        .is_ok()
}

/// Runs the garbage collector and the namespace and CRD cleanups until nothing changes.
pub(crate) fn collect(st: &mut State) {
    for _ in 0..MAX_ROUNDS {
        if !round(st) {
            return;
        }
    }
    tracing::warn!("in-memory API: garbage collection did not settle");
}

fn round(st: &mut State) -> bool {
    let snapshot: Vec<(Key, Arc<Value>)> = st
        .objects
        .iter()
        .map(|(k, v)| (k.clone(), Arc::clone(v)))
        .collect();
    let mut changed = false;
    let uid_of = |o: &Value| meta_str(o, "uid").unwrap_or("").to_string();
    let has = |o: &Value, f: &str| deleting(o) && finalizers(o).iter().any(|x| x == f);

    // Orphan: dependents lose their reference to the owner, then the owner may go.
    for (key, obj) in snapshot.iter().filter(|(_, o)| has(o, ORPHAN)) {
        let uid = uid_of(obj);
        for (dep, d) in &snapshot {
            if owner_uids(d).contains(&uid) {
                changed |= strip_owners(st, dep, std::slice::from_ref(&uid));
            }
        }
        changed |= remove_finalizer(st, key, ORPHAN);
    }

    // Dependents whose owners are gone (or going in the foreground).
    for (key, _) in &snapshot {
        // Earlier steps may have changed it: judge it as it is now.
        let Some(obj) = st.objects.get(key).cloned() else {
            continue;
        };
        let owners = owner_uids(&obj);
        if owners.is_empty() || deleting(&obj) {
            continue;
        }
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        let mut solid = 0;
        for uid in owners {
            match st.uids.get(&uid).and_then(|k| st.objects.get(k)) {
                None => dangling.push(uid),
                Some(owner) if has(owner, FOREGROUND) => waiting.push(uid),
                Some(_) => solid += 1,
            }
        }
        if dangling.is_empty() && waiting.is_empty() {
            continue;
        }
        if solid > 0 {
            dangling.extend(waiting);
            changed |= strip_owners(st, key, &dangling);
        } else {
            let policy = if waiting.is_empty() {
                Policy::Background
            } else {
                Policy::Foreground
            };
            changed |= collect_one(st, key, policy);
        }
    }

    // Foreground owners go once no dependent blocks them.
    for (key, obj) in snapshot.iter().filter(|(_, o)| has(o, FOREGROUND)) {
        let uid = uid_of(obj);
        let blocked = st.objects.values().any(|d| {
            d.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                            && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
                })
        });
        if !blocked {
            changed |= remove_finalizer(st, key, FOREGROUND);
        }
    }

    // Namespaces being deleted: their content goes, then they do.
    for (key, _) in snapshot
        .iter()
        .filter(|(k, o)| k.0.is_empty() && k.1 == "namespaces" && deleting(o))
    {
        let content: Vec<Key> = st
            .objects
            .keys()
            .filter(|k| k.2 == key.3 && !k.2.is_empty())
            .cloned()
            .collect();
        for k in &content {
            changed |= collect_one(st, k, Policy::Background);
        }
        if content.is_empty() {
            changed |= modify(st, key, |ns| {
                if let Some(spec) = ns.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            });
        }
    }

    // CRDs being deleted: their custom resources go, then they do.
    for (key, obj) in snapshot
        .iter()
        .filter(|(k, o)| k.0 == CRD_GROUP && k.1 == CRD_PLURAL && has(o, CRD_CLEANUP))
    {
        let instances: Vec<Key> = registry::from_crd(obj)
            .map(|kind| {
                st.list(&kind.group, &kind.plural, None)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        for k in &instances {
            changed |= collect_one(st, k, Policy::Background);
        }
        if instances.is_empty() {
            changed |= remove_finalizer(st, key, CRD_CLEANUP);
        }
    }
    changed
}
