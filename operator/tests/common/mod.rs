//! An in-memory Kubernetes API server for the operator's tests, reached through tower-test's
//! mock transport as controller-rs does, so the real `kube::Client` code runs against it.
//!
//! There is no kube-apiserver on CI machines. This stand-in behaves like the real one in every
//! way the operator relies on:
//! - GET, LIST with label selectors, POST (409 AlreadyExists), PUT (409 Conflict on a stale
//!   `resourceVersion`), DELETE and DELETE of a collection;
//! - PATCH as server-side apply (create or merge; the `status` subresource only touches
//!   status), as JSON patch (with `test` operations, as the finalizer helper sends) and as JSON
//!   merge patch (as Event series updates send); a `resourceVersion` in a patch is a
//!   precondition (409 Conflict when stale), as for the operator's guarded status writes;
//! - every write bumps `resourceVersion`; a spec change bumps `metadata.generation`;
//! - DELETE of an object with finalizers only sets `deletionTimestamp`; the object goes when a
//!   patch removes its last finalizer;
//! - errors are `Status` objects with the real reasons and codes.
//!
//! Every request is logged, so tests can assert exactly which writes a reconcile made. A client
//! can be cut off (`set_down`): its requests then fail with 503, as through a partition.
//!
//! Served over HTTP ([`FakeApi::serve`]), it can also enforce RBAC rules ([`FakeApi::enforce`])
//! as kube-apiserver's RBAC authorizer does: each request is authorized as a verb (get, list,
//! watch, create, update, patch, delete, deletecollection) on a resource (with its subresource,
//! `replicatedpartitionsets/status`) in a namespace, with `resourceNames` matching only requests
//! that name an object; a server-side apply that creates its object must be allowed `create` as
//! well as `patch`. A refused request gets 403 Forbidden with the real message, and every
//! decision is recorded ([`FakeApi::accesses`]).

#![allow(dead_code)]

pub mod nodes;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// One request the API server received.
#[derive(Clone, Debug)]
pub struct Call {
    /// Which client sent it.
    pub client: usize,
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// The path, such as `/apis/apps/v1/namespaces/default/statefulsets/orders`.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The content type of a PATCH.
    pub content_type: String,
    /// The body, if JSON.
    pub body: Option<Value>,
}

impl Call {
    /// Whether the call changes anything.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// A short description: `APPLY statefulsets/orders`, `POST events`, `JSONPATCH ...`.
    pub fn summary(&self) -> String {
        let verb = match (self.method.as_str(), self.content_type.as_str()) {
            ("PATCH", "application/apply-patch+yaml") => "APPLY",
            ("PATCH", "application/json-patch+json") => "JSONPATCH",
            ("PATCH", "application/merge-patch+json") => "MERGEPATCH",
            (m, _) => m,
        };
        let route = Route::parse(&self.path);
        let mut what = route.plural.clone();
        if let Some(n) = &route.name
            && route.plural != "events"
        {
            what = format!("{what}/{n}");
        }
        if let Some(s) = &route.sub {
            what = format!("{what}/{s}");
        }
        format!("{verb} {what}")
    }
}

type Key = (String, String, String, String);

/// One RBAC policy rule, bound where it applies: `namespace` is `None` for a rule bound by a
/// ClusterRoleBinding (every namespace, and cluster-scoped requests), or the namespace of the
/// RoleBinding that binds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Where the rule applies.
    pub namespace: Option<String>,
    /// API groups; `""` is the core group, `"*"` any.
    pub groups: Vec<String>,
    /// Resources, with subresources as `resource/sub`; `"*"` any.
    pub resources: Vec<String>,
    /// Object names; empty means any, and a non-empty list never matches a request without a
    /// name (create, list, watch, deletecollection).
    pub names: Vec<String>,
    /// Verbs; `"*"` any.
    pub verbs: Vec<String>,
}

impl Rule {
    /// Whether the rule allows `access`.
    pub fn allows(&self, access: &Access) -> bool {
        let any = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        self.namespace
            .as_ref()
            .is_none_or(|ns| !access.namespace.is_empty() && *ns == access.namespace)
            && any(&self.groups, &access.group)
            && any(&self.resources, &access.resource)
            && any(&self.verbs, &access.verb)
            && (self.names.is_empty()
                || (!access.name.is_empty() && self.names.contains(&access.name)))
    }
}

/// One authorization decision's input: what a request does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    /// The RBAC verb.
    pub verb: String,
    /// The API group, `""` for the core group.
    pub group: String,
    /// The resource, with its subresource as `resource/sub`.
    pub resource: String,
    /// The namespace, empty for a cluster-wide request.
    pub namespace: String,
    /// The object's name, empty when the request names none.
    pub name: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let ns = if self.namespace.is_empty() {
            "(cluster)"
        } else {
            &self.namespace
        };
        write!(f, "{} {}/{} in {ns}", self.verb, group, self.resource)?;
        if !self.name.is_empty() {
            write!(f, " named {}", self.name)?;
        }
        Ok(())
    }
}

/// Most watch events kept; a watch from an older resourceVersion gets 410 Gone, as from a real
/// API server whose watch cache has moved on.
const HISTORY: usize = 10_000;

struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    calls: Vec<Call>,
    down: HashSet<usize>,
    clients: usize,
    /// Watch events: (resourceVersion, ADDED/MODIFIED/DELETED, key, object).
    history: std::collections::VecDeque<(u64, &'static str, Key, Value)>,
    /// Ticks on every event, waking watches.
    tick: tokio::sync::watch::Sender<u64>,
    /// The RBAC rules served requests must satisfy; `None` allows everything.
    rbac: Option<Vec<Rule>>,
    /// Every authorization decision on a served request: what it asked, and whether it was allowed.
    accesses: Vec<(Access, bool)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            version: 0,
            calls: Vec::new(),
            down: HashSet::new(),
            clients: 0,
            history: std::collections::VecDeque::new(),
            tick: tokio::sync::watch::Sender::new(0),
            rbac: None,
            accesses: Vec::new(),
        }
    }
}

impl State {
    /// Records a watch event for `key`, whose object is `obj` (the last state, for DELETED).
    fn record(&mut self, kind: &'static str, key: &Key, obj: &Value) {
        let version = self.version;
        self.history
            .push_back((version, kind, key.clone(), obj.clone()));
        if self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.tick.send_replace(version);
    }
}

/// The in-memory API server. Clones share one state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct Route {
    group: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Route {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match parts.first() {
            Some(&"api") => (String::new(), &parts[2..]),
            _ => (
                parts.get(1).copied().unwrap_or_default().to_string(),
                &parts[3.min(parts.len())..],
            ),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
            _ => (String::new(), rest),
        };
        Route {
            group,
            namespace,
            plural: rest.first().map(|s| s.to_string()).unwrap_or_default(),
            name: rest.get(1).map(|s| s.to_string()),
            sub: rest.get(2).map(|s| s.to_string()),
        }
    }
    fn key(&self, name: &str) -> (String, String, String, String) {
        (
            self.group.clone(),
            self.plural.clone(),
            self.namespace.clone(),
            name.to_string(),
        )
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches_selector(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k].as_str() != Some(v)
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k].as_str() == Some(v.trim_start_matches('='))
        } else {
            !labels[term].is_null()
        }
    })
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn pointer_parts(path: &str) -> Vec<String> {
    path.split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// RFC 6902 JSON patch: test, add, remove, replace.
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is a list")? {
        let path = op["path"].as_str().ok_or("no path")?;
        let parts = pointer_parts(path);
        let (last, parents) = parts.split_last().ok_or("empty path")?;
        match op["op"].as_str() {
            Some("test") => {
                let at = target.pointer(path).cloned().unwrap_or(Value::Null);
                if at != op["value"] {
                    return Err(format!("test of {path} failed"));
                }
            }
            Some(kind @ ("add" | "replace" | "remove")) => {
                let mut parent = &mut *target;
                for p in parents {
                    parent = match parent {
                        Value::Object(m) => m.get_mut(p).ok_or(format!("{path}: missing"))?,
                        Value::Array(a) => a
                            .get_mut(p.parse::<usize>().map_err(|_| "bad index")?)
                            .ok_or(format!("{path}: missing"))?,
                        _ => return Err(format!("{path}: not a container")),
                    };
                }
                match parent {
                    Value::Object(m) => {
                        if kind == "remove" {
                            m.remove(last).ok_or(format!("{path}: missing"))?;
                        } else {
                            m.insert(last.clone(), op["value"].clone());
                        }
                    }
                    Value::Array(a) => {
                        let index = if last == "-" {
                            a.len()
                        } else {
                            last.parse().map_err(|_| "bad index")?
                        };
                        match kind {
                            "add" if index <= a.len() => a.insert(index, op["value"].clone()),
                            "replace" if index < a.len() => a[index] = op["value"].clone(),
                            "remove" if index < a.len() => {
                                a.remove(index);
                            }
                            _ => return Err(format!("{path}: index out of range")),
                        }
                    }
                    _ => return Err(format!("{path}: not a container")),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_client_id(&self) -> usize {
        let mut s = self.lock();
        s.clients += 1;
        s.clients - 1
    }

    /// A new client of this server, with its own id (0, 1, ...), through tower-test's mock.
    pub fn client_with_id(&self) -> (Client, usize) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let id = self.next_client_id();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let (code, value) = api.handle(id, &parts, &bytes);
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), id)
    }

    /// A new client of this server.
    pub fn client(&self) -> Client {
        self.client_with_id().0
    }

    /// Makes every request of client `id` fail (true) or work again (false).
    pub fn set_down(&self, id: usize, down: bool) {
        let mut s = self.lock();
        if down {
            s.down.insert(id);
        } else {
            s.down.remove(&id);
        }
    }

    /// Stores `obj` as if created, returning it with server fields filled in.
    pub fn insert<K>(&self, obj: &K) -> Value
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize,
    {
        let mut value = serde_json::to_value(obj).unwrap_or_default();
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let key = (
            K::group(&()).to_string(),
            K::plural(&()).to_string(),
            value["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        let mut s = self.lock();
        Self::created(&mut s, &mut value);
        s.objects.insert(key.clone(), value.clone());
        s.record("ADDED", &key, &value);
        value
    }

    /// The stored object of type `K` called `name` in `namespace`.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let key = (
            K::group(&()).to_string(),
            K::plural(&()).to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        let value = self.lock().objects.get(&key).cloned()?;
        serde_json::from_value(value).ok()
    }

    /// Names of the stored objects of `plural`.
    pub fn names(&self, plural: &str) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(_, p, _, _)| p == plural)
            .map(|(_, _, _, n)| n.clone())
            .collect()
    }

    /// Every version of `plural` `namespace/name` still in the watch history, oldest first.
    pub fn history(&self, plural: &str, namespace: &str, name: &str) -> Vec<Value> {
        self.lock()
            .history
            .iter()
            .filter(|(_, _, k, _)| k.1 == plural && k.2 == namespace && k.3 == name)
            .map(|(_, _, _, obj)| obj.clone())
            .collect()
    }

    /// Changes a stored object with `edit`, as another client would (bumps resourceVersion).
    pub fn edit<K>(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value))
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let key = (
            K::group(&()).to_string(),
            K::plural(&()).to_string(),
            namespace.to_string(),
            name.to_string(),
        );
        let mut s = self.lock();
        s.version += 1;
        let version = s.version;
        if let Some(obj) = s.objects.get_mut(&key) {
            let spec_before = obj["spec"].clone();
            edit(obj);
            obj["metadata"]["resourceVersion"] = json!(version.to_string());
            if obj["spec"] != spec_before {
                let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                obj["metadata"]["generation"] = json!(generation);
            }
            let obj = obj.clone();
            s.record("MODIFIED", &key, &obj);
        }
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The summaries of the writes so far, forgetting every call.
    pub fn take_writes(&self) -> Vec<String> {
        self.take_calls()
            .iter()
            .filter(|c| c.is_write())
            .map(Call::summary)
            .collect()
    }

    fn created(s: &mut State, value: &mut Value) {
        s.version += 1;
        let meta = &mut value["metadata"];
        meta["resourceVersion"] = json!(s.version.to_string());
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("uid-{}", s.version));
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
        }
        if meta["generation"].is_null() {
            meta["generation"] = json!(1);
        }
    }

    fn handle(
        &self,
        client: usize,
        parts: &http::request::Parts,
        bytes: &[u8],
    ) -> (StatusCode, Value) {
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body: Option<Value> = serde_json::from_slice(bytes).ok();
        let mut s = self.lock();
        s.calls.push(Call {
            client,
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if s.down.contains(&client) {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "cut off".into(),
            );
        }
        let route = Route::parse(&path);
        let method = parts.method.as_str();
        match (method, &route.name) {
            ("GET", None) => Self::list(&s, &route, &query),
            ("GET", Some(name)) => match s.objects.get(&route.key(name)) {
                Some(obj) => (StatusCode::OK, obj.clone()),
                None => not_found(&route, name),
            },
            ("POST", None) => {
                let mut obj = body.unwrap_or_default();
                let name = match obj["metadata"]["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => {
                        let prefix = obj["metadata"]["generateName"]
                            .as_str()
                            .unwrap_or("x-")
                            .to_string();
                        let n = format!("{prefix}{}", s.version + 1);
                        obj["metadata"]["name"] = json!(n.clone());
                        n
                    }
                };
                obj["metadata"]["namespace"] = json!(route.namespace.clone());
                let key = route.key(&name);
                if s.objects.contains_key(&key) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{} {name:?} already exists", route.plural),
                    );
                }
                Self::created(&mut s, &mut obj);
                s.objects.insert(key.clone(), obj.clone());
                s.record("ADDED", &key, &obj);
                (StatusCode::CREATED, obj)
            }
            ("PUT", Some(name)) => {
                let key = route.key(name);
                let Some(old) = s.objects.get(&key).cloned() else {
                    return not_found(&route, name);
                };
                let mut obj = body.unwrap_or_default();
                let sent = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                if sent.is_some() && sent.as_deref() != old["metadata"]["resourceVersion"].as_str()
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                            route.plural
                        ),
                    );
                }
                for keep in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                ] {
                    obj["metadata"][keep] = old["metadata"][keep].clone();
                }
                s.version += 1;
                obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
                if obj["spec"] != old["spec"] {
                    obj["metadata"]["generation"] =
                        json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
                }
                s.objects.insert(key.clone(), obj.clone());
                s.record("MODIFIED", &key, &obj);
                (StatusCode::OK, obj)
            }
            ("PATCH", Some(name)) => Self::patch(
                &mut s,
                &route,
                name,
                &content_type,
                body.unwrap_or_default(),
            ),
            ("DELETE", Some(name)) => {
                let key = route.key(name);
                let Some(obj) = s.objects.get_mut(&key) else {
                    return not_found(&route, name);
                };
                let has_finalizers = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    if obj["metadata"]["deletionTimestamp"].is_null() {
                        obj["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:01Z");
                    }
                    s.version += 1;
                    let version = s.version;
                    let obj = s.objects.get_mut(&key).map(|o| {
                        o["metadata"]["resourceVersion"] = json!(version.to_string());
                        o.clone()
                    });
                    let obj = obj.unwrap_or_default();
                    s.record("MODIFIED", &key, &obj);
                    (StatusCode::OK, obj)
                } else {
                    let obj = s.objects.remove(&key).unwrap_or_default();
                    s.version += 1;
                    s.record("DELETED", &key, &obj);
                    (StatusCode::OK, obj)
                }
            }
            ("DELETE", None) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let keys: Vec<_> = s
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.0 == route.group
                            && k.1 == route.plural
                            && k.2 == route.namespace
                            && matches_selector(v, &selector)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut items = Vec::new();
                for k in &keys {
                    if let Some(obj) = s.objects.remove(k) {
                        s.version += 1;
                        s.record("DELETED", k, &obj);
                        items.push(obj);
                    }
                }
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": s.version.to_string()}, "items": items}),
                )
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {path}"),
            ),
        }
    }

    fn list(s: &State, route: &Route, query: &str) -> (StatusCode, Value) {
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let items: Vec<Value> = s
            .objects
            .iter()
            .filter(|(k, v)| {
                k.0 == route.group
                    && k.1 == route.plural
                    && (route.namespace.is_empty() || k.2 == route.namespace)
                    && matches_selector(v, &selector)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": s.version.to_string()}, "items": items}),
        )
    }

    fn patch(
        s: &mut State,
        route: &Route,
        name: &str,
        content_type: &str,
        patch: Value,
    ) -> (StatusCode, Value) {
        let key = route.key(name);
        let existing = s.objects.get(&key).cloned();
        let subresource = route.sub.as_deref();
        let mut obj = match (existing, content_type, subresource) {
            (Some(obj), _, _) => obj,
            (None, "application/apply-patch+yaml", None) => {
                let mut obj = patch.clone();
                obj["metadata"]["namespace"] = json!(route.namespace.clone());
                Self::created(s, &mut obj);
                obj.as_object_mut().map(|o| o.remove("status"));
                s.objects.insert(key.clone(), obj.clone());
                s.record("ADDED", &key, &obj);
                return (StatusCode::CREATED, obj);
            }
            (None, _, _) => return not_found(route, name),
        };
        // A resourceVersion in a patch is a precondition, as on the real API server.
        if let Some(sent) = patch["metadata"]["resourceVersion"].as_str()
            && Some(sent) != obj["metadata"]["resourceVersion"].as_str()
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                    route.plural
                ),
            );
        }
        let before = obj.clone();
        match (content_type, subresource) {
            ("application/apply-patch+yaml", Some("status")) => {
                obj["status"] = patch["status"].clone();
            }
            ("application/apply-patch+yaml", _) => {
                let mut incoming = patch.clone();
                if let Some(meta) = incoming["metadata"].as_object_mut() {
                    for server in [
                        "uid",
                        "resourceVersion",
                        "generation",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "finalizers",
                    ] {
                        meta.remove(server);
                    }
                }
                incoming.as_object_mut().map(|o| o.remove("status"));
                deep_merge(&mut obj, &incoming);
            }
            ("application/json-patch+json", _) => {
                if let Err(e) = json_patch(&mut obj, &patch) {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e);
                }
            }
            ("application/merge-patch+json", _) => merge_patch(&mut obj, &patch),
            (other, _) => {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    other.to_string(),
                );
            }
        }
        // Only metadata and spec changes count for a generation; status does not.
        if obj != before {
            s.version += 1;
            obj["metadata"]["resourceVersion"] = json!(s.version.to_string());
            if obj["spec"] != before["spec"] {
                obj["metadata"]["generation"] =
                    json!(before["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
            }
        }
        let deleting = !obj["metadata"]["deletionTimestamp"].is_null();
        let finalized = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if deleting && finalized {
            s.objects.remove(&key);
            s.record("DELETED", &key, &obj);
        } else if obj != before {
            s.objects.insert(key.clone(), obj.clone());
            s.record("MODIFIED", &key, &obj);
        }
        (StatusCode::OK, obj)
    }
}

/// Merges `incoming` into `target`: objects field by field, anything else replaced. Server-side
/// apply by one manager that owns every field it sets behaves this way for additions and
/// changes.
fn deep_merge(target: &mut Value, incoming: &Value) {
    match (target, incoming) {
        (Value::Object(t), Value::Object(i)) => {
            for (k, v) in i {
                deep_merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, i) => *t = i.clone(),
    }
}

fn not_found(route: &Route, name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} {name:?} not found", route.plural),
    )
}

/// Waits until `check` holds, polling every 10 ms, or panics after `deadline`.
pub async fn wait_until(
    what: &str,
    deadline: std::time::Duration,
    mut check: impl FnMut() -> bool,
) {
    let end = tokio::time::Instant::now() + deadline;
    while !check() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The body of an HTTP response from [`FakeApi::serve`].
type HttpBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

impl FakeApi {
    /// Serves this API over HTTP on a loopback port, for a real `partita-operator` process, and
    /// returns its address. Besides every request [`FakeApi::client`] serves, it answers watches
    /// (`?watch=true`) as the real API server does: a stream of JSON lines `{"type", "object"}`,
    /// starting after the given resourceVersion (with every current object as ADDED when none
    /// is given), ending at `timeoutSeconds`.
    pub async fn serve(&self) -> std::net::SocketAddr {
        use hyper::server::conn::http1;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let id = self.next_client_id();
        let api = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(api.http(id, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// From now on, served requests must be allowed by `rules` (see the module docs).
    pub fn enforce(&self, rules: Vec<Rule>) {
        self.lock().rbac = Some(rules);
    }

    /// Every authorization decision so far: the access, and whether it was allowed.
    pub fn accesses(&self) -> Vec<(Access, bool)> {
        self.lock().accesses.clone()
    }

    /// What a served request asks of the authorizer: its verb on its resource, and `create` as
    /// well for a server-side apply of an object that does not exist yet.
    fn access(&self, parts: &http::request::Parts, query: &str) -> Vec<Access> {
        let route = Route::parse(parts.uri.path());
        let named = route.name.clone().unwrap_or_default();
        let watching = matches!(query_param(query, "watch").as_deref(), Some("true" | "1"));
        let verb = match (parts.method.as_str(), named.is_empty()) {
            ("GET", _) if watching => "watch",
            ("GET", true) => "list",
            ("GET", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            (other, _) => other,
        };
        let resource = match &route.sub {
            Some(sub) => format!("{}/{sub}", route.plural),
            None => route.plural.clone(),
        };
        let access = |verb: &str| Access {
            verb: verb.into(),
            group: route.group.clone(),
            resource: resource.clone(),
            namespace: route.namespace.clone(),
            name: named.clone(),
        };
        let mut asked = vec![access(verb)];
        let applying = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes() == b"application/apply-patch+yaml");
        if verb == "patch" && applying && !self.lock().objects.contains_key(&route.key(&named)) {
            asked.push(access("create"));
        }
        asked
    }

    /// Authorizes a served request; the 403 a real API server would answer, if refused.
    fn authorize(&self, parts: &http::request::Parts, query: &str) -> Option<Value> {
        let asked = self.access(parts, query);
        let mut s = self.lock();
        let rules = s.rbac.clone()?;
        let mut refused = None;
        for access in asked {
            let allowed = rules.iter().any(|r| r.allows(&access));
            if !allowed && refused.is_none() {
                refused = Some(access.clone());
            }
            s.accesses.push((access, allowed));
        }
        let a = refused?;
        let what = if a.name.is_empty() {
            a.resource.clone()
        } else if a.group.is_empty() {
            format!("{} {:?}", a.resource, a.name)
        } else {
            format!("{}.{} {:?}", a.resource, a.group, a.name)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        let message = format!(
            "{what} is forbidden: User \"system:serviceaccount:test:operator\" cannot {} resource {:?} in API group {:?} {scope}",
            a.verb, a.resource, a.group
        );
        Some(status(StatusCode::FORBIDDEN, "Forbidden", message).1)
    }

    async fn http(&self, id: usize, req: Request<hyper::body::Incoming>) -> Response<HttpBody> {
        use http_body_util::{BodyExt, Full};
        let (parts, body) = req.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let watching = matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"));
        let forbidden = if parts.uri.path() == "/version" {
            None
        } else {
            self.authorize(&parts, &query)
        };
        let (code, body) = if let Some(refusal) = forbidden {
            (
                StatusCode::FORBIDDEN,
                Full::new(bytes::Bytes::from(refusal.to_string())).boxed(),
            )
        } else if parts.uri.path() == "/version" {
            let version = json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-partita-fake",
                "gitCommit": "", "gitTreeState": "", "buildDate": "2026-11-22T00:00:00Z",
                "goVersion": "", "compiler": "", "platform": "linux/amd64"});
            (
                StatusCode::OK,
                Full::new(bytes::Bytes::from(version.to_string())).boxed(),
            )
        } else if watching && parts.method == http::Method::GET {
            match self.watch(&parts, &query) {
                Ok(stream) => (StatusCode::OK, stream),
                Err((code, v)) => (code, Full::new(bytes::Bytes::from(v.to_string())).boxed()),
            }
        } else {
            let (code, v) = self.handle(id, &parts, &bytes);
            (code, Full::new(bytes::Bytes::from(v.to_string())).boxed())
        };
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(body)
            .unwrap_or_else(|_| Response::new(Full::new(bytes::Bytes::new()).boxed()))
    }

    fn watch(
        &self,
        parts: &http::request::Parts,
        query: &str,
    ) -> Result<HttpBody, (StatusCode, Value)> {
        use http_body_util::{BodyExt, StreamBody};
        let route = Route::parse(parts.uri.path());
        let selector = query_param(query, "labelSelector").unwrap_or_default();
        let since: Option<u64> = query_param(query, "resourceVersion")
            .filter(|v| !v.is_empty() && v != "0")
            .and_then(|v| v.parse().ok());
        let timeout = query_param(query, "timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(60u64)
            .min(300);
        let matches = move |key: &Key, obj: &Value| {
            key.0 == route.group
                && key.1 == route.plural
                && (route.namespace.is_empty() || key.2 == route.namespace)
                && matches_selector(obj, &selector)
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
        let (mut last, mut tick, initial) = {
            let s = self.lock();
            if let Some(since) = since {
                let oldest = s.history.front().map_or(s.version, |(v, ..)| *v);
                if since + 1 < oldest && since < s.version {
                    return Err(status(
                        StatusCode::GONE,
                        "Expired",
                        format!("too old resource version: {since} ({oldest})"),
                    ));
                }
            }
            let initial: Vec<Value> = match since {
                None => s
                    .objects
                    .iter()
                    .filter(|(k, v)| matches(k, v))
                    .map(|(_, v)| json!({"type": "ADDED", "object": v}))
                    .collect(),
                Some(_) => Vec::new(),
            };
            (since.unwrap_or(s.version), s.tick.subscribe(), initial)
        };
        let api = self.clone();
        tokio::spawn(async move {
            let end = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
            for event in initial {
                if tx
                    .send(bytes::Bytes::from(format!("{event}\n")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let events: Vec<(u64, Value)> = {
                    let s = api.lock();
                    s.history
                        .iter()
                        .filter(|(v, _, k, o)| *v > last && matches(k, o))
                        .map(|(v, kind, _, o)| (*v, json!({"type": kind, "object": o})))
                        .collect()
                };
                for (version, event) in events {
                    last = version;
                    if tx
                        .send(bytes::Bytes::from(format!("{event}\n")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::select! {
                    changed = tick.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep_until(end) => return,
                    () = tx.closed() => return,
                }
            }
        });
        let frames = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| {
                (
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                    rx,
                )
            })
        });
        Ok(StreamBody::new(frames).boxed())
    }

    /// Writes a kubeconfig for [`FakeApi::serve`]'s address into `dir` and returns its path.
    pub fn kubeconfig(addr: std::net::SocketAddr, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        );
        std::fs::write(&path, config).unwrap();
        path
    }
}

impl FakeApi {
    /// Like [`FakeApi::kubeconfig`], but the context's namespace is `namespace`, and the file is
    /// `kubeconfig-<namespace>` in `dir`.
    pub fn kubeconfig_in_namespace(
        addr: std::net::SocketAddr,
        dir: &std::path::Path,
        namespace: &str,
    ) -> std::path::PathBuf {
        let path = dir.join(format!("kubeconfig-{namespace}"));
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        );
        std::fs::write(&path, config).unwrap();
        path
    }

    /// The value of annotation `key` on the stored object of type `K`, if both exist.
    pub fn annotation<K>(&self, namespace: &str, name: &str, key: &str) -> Option<String>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        let obj: K = self.get(namespace, name)?;
        obj.meta().annotations.as_ref()?.get(key).cloned()
    }
}

/// `GET path` on 127.0.0.1:`port`: the status code and body, or `None` if unreachable.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((code, out.split_once("\r\n\r\n")?.1.to_string()))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process the test started, killed (by its own PID) if the test ends first.
pub struct Process(pub std::process::Child);

impl Process {
    /// Sends SIGTERM and waits up to `deadline` for the exit status.
    pub async fn terminate(&mut self, deadline: std::time::Duration) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.exit_within(
            deadline,
            &format!("did not stop within {deadline:?} of SIGTERM"),
        )
        .await
    }

    /// Waits up to `deadline` for the process to exit by itself, and returns its exit status.
    pub async fn wait(&mut self, deadline: std::time::Duration) -> std::process::ExitStatus {
        self.exit_within(deadline, &format!("did not exit within {deadline:?}"))
            .await
    }

    /// Polls for the exit status until `deadline`; past it, panics with `process <pid> <what>`.
    async fn exit_within(
        &mut self,
        deadline: std::time::Duration,
        what: &str,
    ) -> std::process::ExitStatus {
        let pid = self.0.id();
        let end = std::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < end, "process {pid} {what}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pod `<set>-<ordinal>` of a set, as the StatefulSet controller would create it (the set's
/// labels), with the kubelet's Ready condition true.
pub fn ready_pod(set: &str, namespace: &str, ordinal: usize) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{set}-{ordinal}")),
            namespace: Some(namespace.into()),
            labels: Some(partita_operator::resources::labels(set)),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}
