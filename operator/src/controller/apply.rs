//! Applying an owned object only when it differs from what exists.
//!
//! Server-side apply is idempotent, but the operator promises more: an unchanged set causes no
//! writes at all. So each object is compared with the live one first. It is applied when the
//! live one is missing, when the hash of what the operator last applied (an annotation) differs
//! from the hash of what it would apply now (which catches fields the operator stopped setting),
//! or when a field the operator sets was changed by someone else (drift). Quantities compare by
//! value, since the API server rewrites `1000m` as `1`.

use crate::error::{Error, Result};
use crate::resources::FIELD_MANAGER;
use crate::validate::quantity;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::fmt::Debug;

/// The annotation holding the hash of what the operator last applied to an object.
pub const APPLIED_HASH_ANNOTATION: &str = "partita.dev/applied-hash";

/// What [`ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The live object already matched; nothing was written.
    Unchanged,
    /// The object did not exist and was created.
    Created,
    /// The object existed and was changed.
    Updated,
}

/// Stamps `desired` with the hash of its content.
pub fn stamp<K: Resource + Serialize>(desired: &mut K) -> Result<()> {
    let json = serde_json::to_vec(desired).map_err(|source| Error::Serialize {
        what: "an owned object",
        source,
    })?;
    let hash: String = Sha1::digest(&json)[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_string(), hash);
    Ok(())
}

/// Whether `live` already holds everything `desired` (stamped) sets.
pub fn up_to_date<K: Resource + Serialize>(desired: &K, live: &K) -> Result<bool> {
    let hash = |k: &K| k.annotations().get(APPLIED_HASH_ANNOTATION).cloned();
    if hash(desired) != hash(live) {
        return Ok(false);
    }
    let to_json = |k: &K| {
        serde_json::to_value(k).map_err(|source| Error::Serialize {
            what: "an owned object",
            source,
        })
    };
    Ok(contains(&to_json(live)?, &to_json(desired)?))
}

/// Whether `live` holds every field of `want` with the same value. A field `want` leaves empty
/// may be missing (the API server drops empty maps and lists). Lists hold `want`'s elements in
/// order, perhaps among others (server-side apply keeps other managers' entries of keyed lists,
/// such as ownerReferences).
fn contains(live: &Value, want: &Value) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match (live, want) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| l.get(k).map_or(empty(wv), |lv| contains(lv, wv))),
        (Value::Array(l), Value::Array(w)) => {
            let mut rest = l.iter();
            w.iter().all(|wv| rest.any(|lv| contains(lv, wv)))
        }
        (Value::String(l), Value::String(w)) => {
            l == w
                || matches!((quantity::milli_units(l), quantity::milli_units(w)), (Ok(a), Ok(b)) if a == b)
        }
        (l, w) => l == w,
    }
}

/// Applies `desired` (stamped by [`stamp`]) unless `live` already matches it.
pub async fn ensure<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<Change>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    if let Some(live) = live
        && up_to_date(desired, live)?
    {
        return Ok(Change::Unchanged);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let after = api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await?;
    Ok(match live {
        None => Change::Created,
        // The API server normalizes some fields (dropping empty ones, for one), so an object
        // can look different and still be unchanged by the apply: its resourceVersion tells.
        Some(live)
            if live.resource_version().is_some()
                && live.resource_version() == after.resource_version() =>
        {
            Change::Unchanged
        }
        Some(_) => Change::Updated,
    })
}

/// Whether `live` belongs to the owner `desired` names (by uid). An object of the same name
/// that does not is someone else's, and is never taken over.
pub fn owned_by_same<K: Resource>(desired: &K, live: &K) -> bool {
    let uids = |k: &K| -> Vec<String> {
        k.owner_references()
            .iter()
            .filter(|r| r.controller == Some(true))
            .map(|r| r.uid.clone())
            .collect()
    };
    let want = uids(desired);
    !want.is_empty() && uids(live) == want
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_objects_may_add_fields_but_not_change_or_drop_them() {
        let want = json!({"spec": {"replicas": 3, "ports": [{"port": 1}], "cpu": "1"}});
        let live = json!({"spec": {"replicas": 3, "ports": [{"port": 1, "protocol": "TCP"}], "cpu": "1000m", "extra": 1}, "status": {}});
        assert!(contains(&live, &want));
        assert!(!contains(
            &json!({"spec": {"replicas": 4, "ports": [{"port": 1}], "cpu": "1"}}),
            &want
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [], "cpu": "1"}}),
            &want
        ));
        // Empty fields the server dropped, and other managers' list entries, are no drift.
        let want = json!({"metadata": {"ownerReferences": [{"uid": "a"}], "labels": {}}, "spec": {"args": []}});
        let live =
            json!({"metadata": {"ownerReferences": [{"uid": "b"}, {"uid": "a"}]}, "spec": {}});
        assert!(contains(&live, &want));
        assert!(!contains(
            &json!({"metadata": {"ownerReferences": [{"uid": "b"}]}}),
            &want
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 1}]}}),
            &want
        ));
        assert!(!contains(
            &json!({"spec": {"replicas": 3, "ports": [{"port": 1}], "cpu": "2"}}),
            &want
        ));
    }
}
