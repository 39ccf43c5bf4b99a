//! Which resources are served: the built-in kinds the box needs, plus every resource a stored
//! CustomResourceDefinition defines. A path that names anything else is a 404, as on a real
//! server, so a client that forgot to install its CRD fails the same way here as there.
//!
//! The discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) are built
//! from the same table, so what discovery lists and what is served cannot drift apart.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One served resource.
#[derive(Debug, Clone)]
pub(crate) struct Kind {
    /// API group, `""` for the core group.
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<String>,
    /// Plural resource name, as in paths.
    pub plural: String,
    /// Singular name, for discovery.
    pub singular: String,
    /// `kind` of its objects.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether it has a `status` subresource.
    pub status: bool,
    /// Short names, for discovery.
    pub short_names: Vec<String>,
    /// The structural schema per version, for custom resources (pruning and defaulting).
    pub schemas: BTreeMap<String, Value>,
}

impl Kind {
    fn builtin(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status: bool,
    ) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status,
            short_names: Vec::new(),
            schemas: BTreeMap::new(),
        }
    }

    /// `apiVersion` of its objects in `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The name messages use: `configmaps`, `statefulsets.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The registry key: group and plural.
    pub fn key(&self) -> (String, String) {
        (self.group.clone(), self.plural.clone())
    }

    /// Whether this is a custom resource (served because of a CRD).
    pub fn is_custom(&self) -> bool {
        !self.schemas.is_empty()
    }
}

/// The group and plural of CustomResourceDefinitions.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";
/// The plural of CustomResourceDefinitions.
pub(crate) const CRD_PLURAL: &str = "customresourcedefinitions";

/// The built-in resources.
pub(crate) fn builtins() -> Vec<Kind> {
    vec![
        Kind::builtin("", "v1", "pods", "Pod", true, true),
        Kind::builtin("", "v1", "services", "Service", true, true),
        Kind::builtin("", "v1", "configmaps", "ConfigMap", true, false),
        Kind::builtin(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
            true,
        ),
        Kind::builtin("", "v1", "events", "Event", true, false),
        Kind::builtin("", "v1", "nodes", "Node", false, true),
        Kind::builtin("", "v1", "namespaces", "Namespace", false, true),
        Kind::builtin("apps", "v1", "statefulsets", "StatefulSet", true, true),
        Kind::builtin(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            false,
        ),
        Kind::builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            true,
        ),
        Kind::builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
        Kind::builtin("events.k8s.io", "v1", "events", "Event", true, false),
        Kind::builtin(
            CRD_GROUP,
            "v1",
            CRD_PLURAL,
            "CustomResourceDefinition",
            false,
            true,
        ),
    ]
}

/// The resource a CRD object defines, if its spec is complete. Only served versions count; the
/// storage version goes first.
pub(crate) fn from_crd(crd: &Value) -> Option<Kind> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_string();
    let kind = names.get("kind")?.as_str()?.to_string();
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let short_names = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut versions: Vec<(bool, String)> = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status = false;
    for v in spec.get("versions")?.as_array()? {
        let name = v.get("name")?.as_str()?.to_string();
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let storage = v.get("storage").and_then(Value::as_bool) == Some(true);
        status |= v.pointer("/subresources/status").is_some();
        let schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schemas.insert(name.clone(), schema);
        versions.push((!storage, name));
    }
    if versions.is_empty() {
        return None;
    }
    versions.sort_by_key(|a| a.0);
    Some(Kind {
        group,
        versions: versions.into_iter().map(|(_, v)| v).collect(),
        plural,
        singular,
        kind,
        namespaced,
        status,
        short_names,
        schemas,
    })
}

/// The served resources, by group and plural.
pub(crate) type Registry = BTreeMap<(String, String), Arc<Kind>>;

/// The resource `plural` of `group` served at `version`.
pub(crate) fn find(
    registry: &Registry,
    group: &str,
    version: &str,
    plural: &str,
) -> Option<Arc<Kind>> {
    registry
        .get(&(group.to_string(), plural.to_string()))
        .filter(|k| k.versions.iter().any(|v| v == version))
        .cloned()
}

/// `/version`.
pub(crate) fn version_info() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.0-partita-memory",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "", "compiler": "rustc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "in-memory"}],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": list.clone(),
        "preferredVersion": list.first().cloned().unwrap_or(Value::Null),
    })
}

/// The named groups and their versions (the core group excluded).
fn groups(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in registry.values().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(kind.group.clone()).or_default();
        for v in &kind.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    groups
}

/// `/apis`.
pub(crate) fn group_list(registry: &Registry) -> Value {
    let list: Vec<Value> = groups(registry)
        .iter()
        .map(|(g, vs)| {
            let mut doc = group_doc(g, vs);
            if let Some(map) = doc.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            doc
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

/// `/apis/<group>`, if the group is served.
pub(crate) fn group(registry: &Registry, group: &str) -> Option<Value> {
    groups(registry).get(group).map(|vs| group_doc(group, vs))
}

/// `/api/v1` or `/apis/<group>/<version>`, if anything is served there.
pub(crate) fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources = Vec::new();
    for kind in registry
        .values()
        .filter(|k| k.group == group && k.versions.iter().any(|v| v == version))
    {
        let mut doc = json!({
            "name": kind.plural, "singularName": kind.singular, "namespaced": kind.namespaced,
            "kind": kind.kind, "verbs": verbs,
        });
        if !kind.short_names.is_empty()
            && let Some(map) = doc.as_object_mut()
        {
            map.insert("shortNames".into(), json!(kind.short_names));
        }
        resources.push(doc);
        if kind.status {
            resources.push(json!({
                "name": format!("{}/status", kind.plural), "singularName": "",
                "namespaced": kind.namespaced, "kind": kind.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if kind.group.is_empty() && kind.plural == "pods" {
            resources.push(json!({
                "name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": resources,
    }))
}
