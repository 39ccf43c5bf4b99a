//! Routing and the verbs: what each request does to the store, with the real server's
//! validation, preconditions and answers.
//!
//! Every request either does what kube-apiserver would do or fails with the error it would
//! give; what is not implemented (dry runs, strategic merge patch, strict field validation,
//! subresources such as `scale` or `eviction`) fails loudly, so code that needs it cannot pass
//! here by accident. Unknown query parameters are refused for the same reason.

use super::Shared;
use super::apply::{self, Writer};
use super::gc::{self, CRD_CLEANUP, DeleteOptions, Policy};
use super::registry::{self, CRD_GROUP, CRD_PLURAL, Kind};
use super::schema;
use super::selector::{
    FieldSelector, LabelSelector, valid_label_key, valid_label_value, valid_subdomain,
};
use super::status::{self, ApiError, ApiResult};
use super::store::{
    Key, State, View, deleting, finalizers, meta_str, remove_meta, set_meta, timestamp,
};
use super::watch::{self, Filter, Start, WatchBody};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A request, read whole (the body within `MAX_BODY`).
pub(crate) struct Request {
    /// The HTTP method.
    pub method: http::Method,
    /// The path.
    pub path: String,
    /// The query parameters.
    pub query: Query,
    /// `Content-Type`, without parameters.
    pub content_type: String,
    /// `Accept`.
    pub accept: String,
    /// `User-Agent`, for the default field manager.
    pub user_agent: String,
    /// The body.
    pub body: Bytes,
}

/// What to answer.
pub(crate) enum Reply {
    /// A JSON document with this status code.
    Json(u16, Value),
    /// A watch stream.
    Watch(WatchBody),
}

/// Decoded query parameters.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    /// Parses a query string.
    pub fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses parameters outside `allowed` (and every dry run, which is not implemented).
    fn allow(&self, allowed: &[&str]) -> ApiResult<()> {
        for (k, _) in &self.0 {
            if k == "dryRun" {
                return Err(ApiError::bad_request(
                    "dryRun is not supported by the in-memory API",
                ));
            }
            if k != "pretty" && !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {k:?} is not supported by the in-memory API for this request"
                )));
            }
        }
        if self.get("fieldValidation") == Some("Strict") {
            return Err(ApiError::bad_request(
                "fieldValidation=Strict is not supported by the in-memory API (no schema validation)",
            ));
        }
        Ok(())
    }

    fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key}: invalid boolean {other:?}"
            ))),
        }
    }

    fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("{key}: invalid integer {v:?}")))
            })
            .transpose()
    }
}

/// A request on one resource.
struct Ctx {
    kind: Arc<Kind>,
    api_version: String,
    namespace: Option<String>,
    view: View,
    manager: String,
}

impl Ctx {
    fn key(&self, name: &str) -> Key {
        (
            self.kind.group.clone(),
            self.kind.plural.clone(),
            self.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    }

    fn writer<'a>(&'a self, subresource: &'a str, now: &'a str) -> Writer<'a> {
        Writer {
            manager: &self.manager,
            subresource,
            api_version: &self.api_version,
            has_status: self.kind.status,
            now,
        }
    }

    fn resource(&self) -> String {
        self.kind.qualified()
    }

    fn filter(&self, query: &Query) -> ApiResult<Filter> {
        Ok(Filter {
            group: self.kind.group.clone(),
            plural: self.kind.plural.clone(),
            namespace: self.namespace.clone(),
            labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(
                query.get("fieldSelector").unwrap_or(""),
                &self.kind.group,
                &self.kind.plural,
            )?,
        })
    }
}

/// Serves one request.
pub(crate) fn route(shared: &Arc<Shared>, r: &Request) -> ApiResult<Reply> {
    let segments: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery = |doc: Option<Value>| -> ApiResult<Reply> {
        if r.method != http::Method::GET {
            return Err(ApiError::method_not_allowed(
                "discovery documents can only be read",
            ));
        }
        doc.map(|d| Reply::Json(200, d))
            .ok_or_else(ApiError::no_route)
    };
    let state = shared.lock();
    match segments.as_slice() {
        ["version"] => discovery(Some(registry::version_info())),
        ["api"] => discovery(Some(registry::core_versions())),
        ["apis"] => discovery(Some(registry::group_list(&state.registry))),
        ["apis", g] => discovery(registry::group(&state.registry, g)),
        ["api", v] => discovery(registry::resource_list(&state.registry, "", v)),
        ["apis", g, v] => discovery(registry::resource_list(&state.registry, g, v)),
        ["api", v, rest @ ..] => {
            drop(state);
            resource(shared, r, "", v, rest)
        }
        ["apis", g, v, rest @ ..] => {
            drop(state);
            resource(shared, r, g, v, rest)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Subresources the real server has that are not implemented here.
const UNIMPLEMENTED_SUBRESOURCES: &[&str] = &[
    "scale",
    "eviction",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "ephemeralcontainers",
    "resize",
    "finalize",
];

fn resource(
    shared: &Arc<Shared>,
    r: &Request,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<Reply> {
    let namespace_sub = |p: &str, tail: &[&str]| {
        group.is_empty() && tail.is_empty() && matches!(p, "status" | "finalize")
    };
    let (namespace, rest): (Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..] if !namespace_sub(plural, tail) => {
            (Some((*ns).to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(ApiError::no_route()),
    };
    let mut state = shared.lock();
    let kind =
        registry::find(&state.registry, group, version, plural).ok_or_else(ApiError::no_route)?;
    if (!kind.namespaced && namespace.is_some())
        || (kind.namespaced && namespace.is_none() && name.is_some())
    {
        return Err(ApiError::no_route());
    }
    if r.accept.contains("as=Table") {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "Table output is not supported by the in-memory API",
        ));
    }
    let api_version = kind.api_version(version);
    let manager = r.query.get("fieldManager").map_or_else(
        || {
            let prefix = r.user_agent.split('/').next().unwrap_or("");
            if prefix.is_empty() {
                "unknown".to_string()
            } else {
                prefix.to_string()
            }
        },
        str::to_string,
    );
    let ctx = Ctx {
        view: View {
            api_version: api_version.clone(),
            kind: kind.kind.clone(),
            metadata_only: r.accept.contains("as=PartialObjectMetadata"),
        },
        kind: Arc::clone(&kind),
        api_version,
        namespace,
        manager,
    };
    let st = &mut *state;
    use http::Method;
    let result = match (&r.method, name, sub) {
        (&Method::GET, None, None) if r.query.flag("watch")? => {
            return watch(shared, st, &ctx, r);
        }
        (&Method::GET, None, None) => list(st, &ctx, r),
        (&Method::POST, None, None) => create(st, &ctx, r),
        (&Method::DELETE, None, None) => delete_collection(st, &ctx, r),
        (&Method::GET, Some(n), None) => get(st, &ctx, r, n),
        (&Method::GET, Some(n), Some("status")) if kind.status => get(st, &ctx, r, n),
        (&Method::PUT, Some(n), None) => replace(st, &ctx, r, n, ""),
        (&Method::PUT, Some(n), Some("status")) if kind.status => replace(st, &ctx, r, n, "status"),
        (&Method::PATCH, Some(n), None) => patch(st, &ctx, r, n, ""),
        (&Method::PATCH, Some(n), Some("status")) if kind.status => patch(st, &ctx, r, n, "status"),
        (&Method::DELETE, Some(n), None) => delete(st, &ctx, r, n),
        (&Method::POST, Some(n), Some("binding"))
            if kind.group.is_empty() && kind.plural == "pods" =>
        {
            binding(st, &ctx, r, n)
        }
        (_, Some(_), Some(s)) if UNIMPLEMENTED_SUBRESOURCES.contains(&s) => {
            Err(ApiError::method_not_allowed(format!(
                "the {s} subresource of {} is not implemented by the in-memory API",
                kind.qualified()
            )))
        }
        (_, Some(_), Some("status")) if kind.status => Err(not_allowed(r, &kind)),
        (_, Some(_), Some("binding")) if kind.group.is_empty() && kind.plural == "pods" => {
            Err(not_allowed(r, &kind))
        }
        (_, _, None) => Err(not_allowed(r, &kind)),
        (_, _, Some(_)) => Err(ApiError::no_route()),
    };
    if r.method != Method::GET {
        // Also after a failure: a collection delete may have deleted some objects first.
        gc::collect(st);
    }
    result
}

fn not_allowed(r: &Request, kind: &Kind) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on this path of {}",
        r.method,
        kind.qualified()
    ))
}

/// The body as a JSON object (YAML too, for apply).
fn body_object(r: &Request, yaml: bool) -> ApiResult<Value> {
    let parsed: Result<Value, String> = serde_json::from_slice(&r.body).or_else(|e| {
        if yaml {
            serde_yaml::from_slice::<Value>(&r.body).map_err(|y| y.to_string())
        } else {
            Err(e.to_string())
        }
    });
    let value =
        parsed.map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    if value
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(value)
}

/// Checks `kind` and `apiVersion` of a body (required for apply, as on the real server).
fn check_type(ctx: &Ctx, obj: &Value, required: bool) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str);
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    if required && (kind.is_none() || api_version.is_none()) {
        return Err(ApiError::bad_request(
            "apiVersion and kind must be set in an apply configuration",
        ));
    }
    if let Some(k) = kind
        && k != ctx.kind.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the resource ({}, kind {})",
            ctx.resource(),
            ctx.kind.kind
        )));
    }
    if let Some(v) = api_version
        && v != ctx.api_version
    {
        return Err(ApiError::bad_request(format!(
            "the apiVersion of the object ({v}) does not match the request ({})",
            ctx.api_version
        )));
    }
    Ok(())
}

/// Checks the body's namespace and name against the path's, filling in what is missing.
fn check_identity(ctx: &Ctx, obj: &mut Value, name: Option<&str>) -> ApiResult<()> {
    if ctx.kind.namespaced {
        let ns = ctx.namespace.clone().unwrap_or_default();
        match meta_str(obj, "namespace") {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                )));
            }
            _ => set_meta(obj, "namespace", json!(ns)),
        }
    } else {
        remove_meta(obj, "namespace");
    }
    if let Some(name) = name {
        match meta_str(obj, "name") {
            Some(body_name) if body_name != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            _ => set_meta(obj, "name", json!(name)),
        }
    }
    Ok(())
}

/// A `metadata.resourceVersion` or `metadata.uid` in a write is a precondition.
fn check_preconditions(ctx: &Ctx, live: &Value, candidate: &Value, name: &str) -> ApiResult<()> {
    if let Some(rv) = meta_str(candidate, "resourceVersion")
        && !rv.is_empty()
        && Some(rv) != meta_str(live, "resourceVersion")
    {
        return Err(ApiError::stale(&ctx.resource(), name));
    }
    if let Some(uid) = meta_str(candidate, "uid")
        && !uid.is_empty()
        && Some(uid) != meta_str(live, "uid")
    {
        return Err(ApiError::conflict(
            &ctx.resource(),
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(live, "uid").unwrap_or("")
            ),
        ));
    }
    Ok(())
}

/// Validates metadata as the real server does for every kind.
fn validate_meta(ctx: &Ctx, obj: &Value) -> ApiResult<()> {
    let name = meta_str(obj, "name").unwrap_or("");
    let invalid = |msg: String| ApiError::invalid(&ctx.kind.kind, name, msg);
    for (field, check_value) in [("labels", true), ("annotations", false)] {
        match obj.pointer(&format!("/metadata/{field}")) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !valid_label_key(k) {
                        return Err(invalid(format!(
                            "metadata.{field}: Invalid value: {k:?}: must be a qualified name"
                        )));
                    }
                    let Some(v) = v.as_str() else {
                        return Err(invalid(format!(
                            "metadata.{field}.{k}: Invalid value: must be a string"
                        )));
                    };
                    if check_value && !valid_label_value(v) {
                        return Err(invalid(format!(
                            "metadata.labels: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                        )));
                    }
                }
            }
            Some(_) => {
                return Err(invalid(format!(
                    "metadata.{field}: Invalid value: must be a map of strings"
                )));
            }
        }
    }
    if let Some(f) = obj.pointer("/metadata/finalizers")
        && !f.is_null()
        && !f.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(invalid(
            "metadata.finalizers: Invalid value: must be a list of strings".into(),
        ));
    }
    if let Some(refs) = obj
        .pointer("/metadata/ownerReferences")
        .filter(|v| !v.is_null())
    {
        let ok = refs.as_array().is_some_and(|a| {
            a.iter().all(|r| {
                ["apiVersion", "kind", "name", "uid"].iter().all(|f| {
                    r.get(*f)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                })
            })
        });
        if !ok {
            return Err(invalid("metadata.ownerReferences: Invalid value: each needs apiVersion, kind, name and uid".into()));
        }
    }
    Ok(())
}

/// Fields of a spec that may change after creation, for kinds whose spec is otherwise
/// immutable; `None` for kinds whose spec is freely mutable.
fn mutable_spec(kind: &Kind) -> Option<&'static [&'static str]> {
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("apps", "statefulsets") => Some(&[
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ]),
        ("", "persistentvolumeclaims") => Some(&["resources", "volumeAttributesClassName"]),
        ("", "pods") => Some(&["activeDeadlineSeconds", "tolerations"]),
        _ => None,
    }
}

/// The 422 the real server gives for a change to an immutable part of a spec.
fn check_immutable(kind: &Kind, old: &Value, new: &Value) -> ApiResult<()> {
    let Some(allowed) = mutable_spec(kind) else {
        return Ok(());
    };
    // A claim's volumeName may be set once, when it binds.
    let unbound_claim = kind.plural == "persistentvolumeclaims"
        && old
            .pointer("/spec/volumeName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
    let strip = |obj: &Value| {
        let mut spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(map) = spec.as_object_mut() {
            for f in allowed {
                map.remove(*f);
            }
            if unbound_claim {
                map.remove("volumeName");
            }
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = map.get_mut(list) {
                    for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("image");
                    }
                }
            }
        }
        spec
    };
    if strip(old) == strip(new) {
        return Ok(());
    }
    let name = meta_str(old, "name").unwrap_or("");
    let what = match kind.plural.as_str() {
        "pods" => "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)".to_string(),
        "statefulsets" => "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".to_string(),
        _ => "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".to_string(),
    };
    Err(ApiError::invalid(
        &kind.kind,
        name,
        format!("spec: Forbidden: {what}"),
    ))
}

/// Checks a new CustomResourceDefinition as the real server does, enough that a served
/// resource is a well-formed one.
fn check_crd(obj: &Value) -> ApiResult<()> {
    let name = meta_str(obj, "name").unwrap_or("");
    let invalid = |m: &str| ApiError::invalid("CustomResourceDefinition", name, m.to_string());
    let kind = registry::from_crd(obj).ok_or_else(|| {
        invalid(
            "spec: Required value: group, names.plural, names.kind and at least one served version",
        )
    })?;
    if name != format!("{}.{}", kind.plural, kind.group) {
        return Err(invalid(
            "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let storage = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map_or(0, |vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .count()
        });
    if storage != 1 {
        return Err(invalid(
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(())
}

/// Server-side fields of a new object, and what each kind starts with.
fn prepare_create(st: &mut State, ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(ctx.api_version));
        map.insert("kind".into(), json!(ctx.kind.kind));
        if ctx.kind.status && ctx.kind.plural != "nodes" {
            map.remove("status");
        }
    }
    for f in [
        "uid",
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        remove_meta(obj, f);
    }
    let uid = st.uid();
    set_meta(obj, "uid", json!(uid));
    set_meta(obj, "creationTimestamp", json!(timestamp(0)));
    set_meta(obj, "generation", json!(1));
    let name = meta_str(obj, "name").unwrap_or("").to_string();
    if !valid_subdomain(&name) {
        return Err(ApiError::invalid(
            &ctx.kind.kind,
            &name,
            format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    let set = |obj: &mut Value, field: &str, value: Value| {
        if let Some(map) = obj.as_object_mut() {
            map.insert(field.into(), value);
        }
    };
    match (ctx.kind.group.as_str(), ctx.kind.plural.as_str()) {
        ("", "pods") | ("", "persistentvolumeclaims") => {
            set(obj, "status", json!({"phase": "Pending"}))
        }
        ("", "namespaces") => {
            set(obj, "status", json!({"phase": "Active"}));
            set(obj, "spec", json!({"finalizers": ["kubernetes"]}));
        }
        (CRD_GROUP, CRD_PLURAL) => {
            check_crd(obj)?;
            let mut list = finalizers(obj);
            if !list.iter().any(|f| f == CRD_CLEANUP) {
                list.push(CRD_CLEANUP.into());
            }
            set_meta(obj, "finalizers", json!(list));
            let storage: Vec<Value> = obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                        .filter_map(|v| v.get("name").cloned())
                        .collect()
                })
                .unwrap_or_default();
            let names = obj.pointer("/spec/names").cloned().unwrap_or(Value::Null);
            let now = timestamp(0);
            set(
                obj,
                "status",
                json!({
                    "acceptedNames": names,
                    "storedVersions": storage,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                }),
            );
        }
        _ => {}
    }
    if let Some(schema) = ctx.kind.schemas.get(version_of(&ctx.api_version)) {
        schema::apply(obj, schema);
    }
    validate_meta(ctx, obj)
}

fn version_of(api_version: &str) -> &str {
    api_version.rsplit('/').next().unwrap_or(api_version)
}

/// The object an update of `live` through `subresource` stores, before managed fields: the
/// status subresource changes only `status`, the main resource everything but `status` (for
/// kinds that have the subresource) and server-owned metadata.
fn prepare_update(
    ctx: &Ctx,
    live: &Value,
    candidate: Value,
    subresource: &str,
) -> ApiResult<Value> {
    let mut obj = if subresource == "status" {
        let mut obj = live.clone();
        if let Some(map) = obj.as_object_mut() {
            match candidate.get("status") {
                Some(s) if !s.is_null() => {
                    map.insert("status".into(), s.clone());
                }
                _ => {
                    map.remove("status");
                }
            }
        }
        obj
    } else {
        let mut obj = candidate;
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            match live.get("metadata").and_then(|m| m.get(f)) {
                Some(v) => set_meta(&mut obj, f, v.clone()),
                None => {
                    remove_meta(&mut obj, f);
                }
            }
        }
        if ctx.kind.status
            && let Some(map) = obj.as_object_mut()
        {
            match live.get("status") {
                Some(s) => {
                    map.insert("status".into(), s.clone());
                }
                None => {
                    map.remove("status");
                }
            }
        }
        if deleting(live) {
            let before = finalizers(live);
            let added: Vec<String> = finalizers(&obj)
                .into_iter()
                .filter(|f| !before.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &ctx.kind.kind,
                    meta_str(live, "name").unwrap_or(""),
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                ));
            }
        }
        check_immutable(&ctx.kind, live, &obj)?;
        obj
    };
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(ctx.api_version));
        map.insert("kind".into(), json!(ctx.kind.kind));
    }
    if let Some(schema) = ctx.kind.schemas.get(version_of(&ctx.api_version)) {
        schema::apply(&mut obj, schema);
    }
    validate_meta(ctx, &obj)?;
    Ok(obj)
}

/// A write that is not an apply (replace, merge or JSON patch): `candidate` prepared, the
/// fields it changed owned by the writer as an Update, and the result stored.
fn update(
    st: &mut State,
    ctx: &Ctx,
    key: &Key,
    live: &Arc<Value>,
    candidate: Value,
    subresource: &str,
) -> ApiResult<Reply> {
    let obj = prepare_update(ctx, live, candidate, subresource)?;
    let now = timestamp(0);
    let entries = apply::after_update(live, &obj, &ctx.writer(subresource, &now));
    let stored = finish_update(st, ctx, key, live, obj, &entries);
    Ok(Reply::Json(200, ctx.view.object(&stored)))
}

/// Stores an update: managed fields written, generation bumped when anything but metadata
/// and status changed, nothing at all when nothing changed.
fn finish_update(
    st: &mut State,
    ctx: &Ctx,
    key: &Key,
    live: &Arc<Value>,
    mut obj: Value,
    entries: &[apply::Entry],
) -> Arc<Value> {
    apply::write(&mut obj, live, entries);
    if obj == **live {
        return Arc::clone(live);
    }
    let significant = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("apiVersion");
            map.remove("kind");
            if ctx.kind.status {
                map.remove("status");
            }
        }
        v
    };
    let has_spec = obj.get("spec").is_some() || live.get("spec").is_some();
    if has_spec && significant(&obj) != significant(live) {
        let generation = live
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        set_meta(&mut obj, "generation", json!(generation + 1));
    }
    st.commit(key, obj)
}

fn get(st: &mut State, ctx: &Ctx, r: &Request, name: &str) -> ApiResult<Reply> {
    r.query.allow(&["resourceVersion"])?;
    let obj = st
        .objects
        .get(&ctx.key(name))
        .ok_or_else(|| ApiError::not_found(&ctx.resource(), name))?;
    Ok(Reply::Json(200, ctx.view.object(obj)))
}

fn list(st: &mut State, ctx: &Ctx, r: &Request) -> ApiResult<Reply> {
    let q = &r.query;
    q.allow(&[
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "timeoutSeconds",
        "watch",
        "allowWatchBookmarks",
    ])?;
    if q.get("continue").is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::bad_request(
            "continue key is not valid: the in-memory API returns whole lists and issues no continue tokens",
        ));
    }
    q.int("limit")?;
    q.int("timeoutSeconds")?;
    let rv = match q.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {v:?}")))?,
        ),
        None => None,
    };
    match (q.get("resourceVersionMatch"), rv) {
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        (Some("Exact"), Some(v)) if v != st.rv => {
            return Err(if v < st.rv {
                ApiError::expired(format!("too old resource version: {v} ({})", st.rv))
            } else {
                ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {v}, current: {}", st.rv),
                )
            });
        }
        (None | Some("NotOlderThan" | "Exact"), Some(v)) if v > st.rv => {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {v}, current: {}", st.rv),
            ));
        }
        (None | Some("NotOlderThan" | "Exact"), _) => {}
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: unsupported value {other:?}"
            )));
        }
    }
    let filter = ctx.filter(q)?;
    let items: Vec<Value> = st
        .list(&filter.group, &filter.plural, filter.namespace.as_deref())
        .into_iter()
        .filter(|(k, o)| filter.matches(k, o))
        .map(|(_, o)| ctx.view.object(&o))
        .collect();
    Ok(Reply::Json(200, ctx.view.list(items, st.rv)))
}

fn watch(shared: &Arc<Shared>, st: &mut State, ctx: &Ctx, r: &Request) -> ApiResult<Reply> {
    let q = &r.query;
    q.allow(&[
        "watch",
        "resourceVersion",
        "resourceVersionMatch",
        "timeoutSeconds",
        "labelSelector",
        "fieldSelector",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "limit",
    ])?;
    let bookmarks = q.flag("allowWatchBookmarks")?;
    let rv = q.get("resourceVersion").unwrap_or("");
    let start = if q.flag("sendInitialEvents")? {
        if q.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks {
            return Err(ApiError::bad_request(
                "sendInitialEvents requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
            ));
        }
        Start::InitialEvents
    } else if q.get("resourceVersionMatch").is_some() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    } else if rv.is_empty() || rv == "0" {
        Start::Current
    } else {
        Start::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        )
    };
    // As on the real server, 0 (or none) means the default timeout.
    let timeout = match q.int("timeoutSeconds")? {
        Some(t) if t > 0 => t.unsigned_abs(),
        _ => 1800,
    };
    let filter = ctx.filter(q)?;
    let options = watch::Options {
        bookmarks,
        timeout: Duration::from_secs(timeout),
    };
    Ok(Reply::Watch(watch::open(
        Arc::clone(shared),
        st,
        filter,
        start,
        ctx.view.clone(),
        &options,
    )))
}

fn create(st: &mut State, ctx: &Ctx, r: &Request) -> ApiResult<Reply> {
    r.query.allow(&["fieldManager", "fieldValidation"])?;
    if ctx.kind.namespaced && ctx.namespace.is_none() {
        return Err(ApiError::method_not_allowed(format!(
            "create of {} needs a namespace in the path",
            ctx.resource()
        )));
    }
    let mut obj = body_object(r, false)?;
    check_type(ctx, &obj, false)?;
    check_identity(ctx, &mut obj, None)?;
    if meta_str(&obj, "resourceVersion").is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    st.check_capacity()?;
    let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => {
            let prefix = meta_str(&obj, "generateName")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        &ctx.kind.kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    )
                })?
                .to_string();
            let mut name = format!("{prefix}{}", st.suffix());
            for _ in 0..16 {
                if !st.objects.contains_key(&ctx.key(&name)) {
                    break;
                }
                name = format!("{prefix}{}", st.suffix());
            }
            set_meta(&mut obj, "name", json!(name));
            name
        }
    };
    let key = ctx.key(&name);
    check_namespace_open(st, ctx, &name)?;
    if st.objects.contains_key(&key) {
        return Err(ApiError::already_exists(&ctx.resource(), &name));
    }
    prepare_create(st, ctx, &mut obj)?;
    let now = timestamp(0);
    let empty = json!({});
    let entries = apply::after_update(&empty, &obj, &ctx.writer("", &now));
    apply::write(&mut obj, &empty, &entries);
    let stored = st.insert(key, obj);
    Ok(Reply::Json(201, ctx.view.object(&stored)))
}

/// New objects cannot be created in a namespace being deleted.
fn check_namespace_open(st: &State, ctx: &Ctx, name: &str) -> ApiResult<()> {
    let Some(ns) = ctx.namespace.as_deref() else {
        return Ok(());
    };
    let key: Key = (
        String::new(),
        "namespaces".into(),
        String::new(),
        ns.to_string(),
    );
    if st.objects.get(&key).is_some_and(|n| deleting(n)) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                ctx.resource()
            ),
        ));
    }
    Ok(())
}

fn replace(
    st: &mut State,
    ctx: &Ctx,
    r: &Request,
    name: &str,
    subresource: &str,
) -> ApiResult<Reply> {
    r.query.allow(&["fieldManager", "fieldValidation"])?;
    let mut candidate = body_object(r, false)?;
    check_type(ctx, &candidate, false)?;
    check_identity(ctx, &mut candidate, Some(name))?;
    let key = ctx.key(name);
    let Some(live) = st.objects.get(&key).cloned() else {
        if ctx.kind.plural == "events" && subresource.is_empty() {
            return create(st, ctx, r);
        }
        return Err(ApiError::not_found(&ctx.resource(), name));
    };
    check_preconditions(ctx, &live, &candidate, name)?;
    update(st, ctx, &key, &live, candidate, subresource)
}

fn patch(
    st: &mut State,
    ctx: &Ctx,
    r: &Request,
    name: &str,
    subresource: &str,
) -> ApiResult<Reply> {
    r.query
        .allow(&["fieldManager", "fieldValidation", "force"])?;
    let force = r.query.flag("force")?;
    let kind = match r.content_type.as_str() {
        "application/apply-patch+yaml" => return apply_patch(st, ctx, r, name, subresource, force),
        "application/merge-patch+json" | "application/json-patch+json" if force => {
            return Err(ApiError::bad_request(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        "application/merge-patch+json" => "merge",
        "application/json-patch+json" => "json",
        "application/strategic-merge-patch+json" => {
            return Err(ApiError::unsupported_media_type(
                "strategic merge patch is not supported by the in-memory API; use a JSON merge patch, a JSON patch or server-side apply",
            ));
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            )));
        }
    };
    let key = ctx.key(name);
    let live = st
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&ctx.resource(), name))?;
    let body: Value = serde_json::from_slice(&r.body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let mut candidate = (*live).clone();
    if kind == "merge" {
        if !body.is_object() {
            return Err(ApiError::bad_request("a merge patch must be an object"));
        }
        super::patch::merge(&mut candidate, &body);
    } else {
        if !body.is_array() {
            return Err(ApiError::bad_request(
                "a JSON patch must be a list of operations",
            ));
        }
        super::patch::json_patch(&mut candidate, &body)
            .map_err(|e| ApiError::new(422, "Invalid", e))?;
    }
    if !candidate.is_object() || candidate.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "the patched object must be an object with object metadata",
        ));
    }
    check_type(ctx, &candidate, false)?;
    check_preconditions(ctx, &live, &candidate, name)?;
    check_identity(ctx, &mut candidate, Some(name))?;
    update(st, ctx, &key, &live, candidate, subresource)
}

fn apply_patch(
    st: &mut State,
    ctx: &Ctx,
    r: &Request,
    name: &str,
    subresource: &str,
    force: bool,
) -> ApiResult<Reply> {
    if r.query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let mut config = body_object(r, true)?;
    check_type(ctx, &config, true)?;
    check_identity(ctx, &mut config, Some(name))?;
    let key = ctx.key(name);
    let now = timestamp(0);
    let writer = ctx.writer(subresource, &now);
    let Some(live) = st.objects.get(&key).cloned() else {
        if !subresource.is_empty() {
            return Err(ApiError::not_found(&ctx.resource(), name));
        }
        if meta_str(&config, "resourceVersion").is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::stale(&ctx.resource(), name));
        }
        st.check_capacity()?;
        check_namespace_open(st, ctx, name)?;
        let mut base = json!({"apiVersion": ctx.api_version, "kind": ctx.kind.kind, "metadata": {"name": name}});
        if let Some(ns) = &ctx.namespace {
            set_meta(&mut base, "namespace", json!(ns));
        }
        let applied = apply::apply(&base, &config, &writer, force, &ctx.resource(), name)?;
        let mut obj = applied.object;
        prepare_create(st, ctx, &mut obj)?;
        apply::write(&mut obj, &json!({}), &applied.entries);
        let stored = st.insert(key, obj);
        return Ok(Reply::Json(201, ctx.view.object(&stored)));
    };
    check_preconditions(ctx, &live, &config, name)?;
    let applied = apply::apply(&live, &config, &writer, force, &ctx.resource(), name)?;
    let obj = prepare_update(ctx, &live, applied.object, subresource)?;
    let stored = finish_update(st, ctx, &key, &live, obj, &applied.entries);
    Ok(Reply::Json(200, ctx.view.object(&stored)))
}

/// DeleteOptions from the body and the query.
fn delete_options(r: &Request) -> ApiResult<DeleteOptions> {
    let body: Value = if r.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if body
        .get("dryRun")
        .is_some_and(|d| d.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the in-memory API",
        ));
    }
    let grace = match body.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
        Some(g) => Some(
            g.as_i64()
                .ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
        ),
        None => r.query.int("gracePeriodSeconds")?,
    };
    if grace.is_some_and(|g| g < 0) {
        return Err(ApiError::bad_request(
            "gracePeriodSeconds must not be negative",
        ));
    }
    let policy_name = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| r.query.get("propagationPolicy"));
    let orphan = body.get("orphanDependents").and_then(Value::as_bool).or(r
        .query
        .flag("orphanDependents")
        .ok()
        .filter(|_| r.query.get("orphanDependents").is_some()));
    let policy = match (policy_name, orphan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "orphanDependents and propagationPolicy cannot both be set",
            ));
        }
        (Some("Background"), None) => Some(Policy::Background),
        (Some("Foreground"), None) => Some(Policy::Foreground),
        (Some("Orphan"), None) | (None, Some(true)) => Some(Policy::Orphan),
        (None, Some(false)) => Some(Policy::Background),
        (None, None) => None,
        (Some(other), None) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let pre = |f: &str| {
        body.pointer(&format!("/preconditions/{f}"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Ok(DeleteOptions {
        grace,
        policy,
        uid: pre("uid"),
        resource_version: pre("resourceVersion"),
    })
}

const DELETE_PARAMS: &[&str] = &[
    "gracePeriodSeconds",
    "propagationPolicy",
    "orphanDependents",
];

fn delete(st: &mut State, ctx: &Ctx, r: &Request, name: &str) -> ApiResult<Reply> {
    r.query.allow(DELETE_PARAMS)?;
    let opts = delete_options(r)?;
    let obj = gc::delete(st, &ctx.key(name), &opts)?;
    Ok(Reply::Json(200, ctx.view.object(&obj)))
}

fn delete_collection(st: &mut State, ctx: &Ctx, r: &Request) -> ApiResult<Reply> {
    let mut allowed = DELETE_PARAMS.to_vec();
    allowed.extend(["labelSelector", "fieldSelector"]);
    r.query.allow(&allowed)?;
    let opts = delete_options(r)?;
    let filter = ctx.filter(&r.query)?;
    let keys: Vec<Key> = st
        .list(&filter.group, &filter.plural, filter.namespace.as_deref())
        .into_iter()
        .filter(|(k, o)| filter.matches(k, o))
        .map(|(k, _)| k)
        .collect();
    let mut items = Vec::new();
    for key in keys {
        match gc::delete(st, &key, &opts) {
            Ok(obj) => items.push(ctx.view.object(&obj)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Reply::Json(200, ctx.view.list(items, st.rv)))
}

/// `POST pods/<name>/binding`: assigns a pod to a node, once.
fn binding(st: &mut State, ctx: &Ctx, r: &Request, name: &str) -> ApiResult<Reply> {
    r.query.allow(&["fieldManager"])?;
    let body = body_object(r, false)?;
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && k != "Binding"
    {
        return Err(ApiError::bad_request(format!(
            "expected a Binding, got {k}"
        )));
    }
    if let Some(n) = meta_str(&body, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL ({name}) does not match name in Binding object ({n})"
        )));
    }
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", name, "target.name: Required value"))?
        .to_string();
    let key = ctx.key(name);
    let live = st
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&ctx.resource(), name))?;
    if deleting(&live) {
        return Err(ApiError::conflict(
            &ctx.resource(),
            name,
            &format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    if let Some(bound) = live
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            &ctx.resource(),
            name,
            &format!("pod {name} is already assigned to node {bound:?}"),
        ));
    }
    let mut obj = (*live).clone();
    let now = timestamp(0);
    if let Some(map) = obj.as_object_mut() {
        let spec = map
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("nodeName".into(), json!(node));
        }
        let status = map
            .entry("status")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(status) = status.as_object_mut() {
            let conditions = status.entry("conditions").or_insert_with(|| json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.push(
                    json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
                );
            }
        }
    }
    let entries = apply::after_update(&live, &obj, &ctx.writer("binding", &now));
    finish_update(st, ctx, &key, &live, obj, &entries);
    Ok(Reply::Json(201, status::success(201)))
}
