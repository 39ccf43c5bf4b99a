//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! The operator writes everything with forced applies and relies on their semantics: a field it
//! applied before and leaves out now is removed, an identical re-apply changes nothing (so it
//! does not wake its own watch), and another writer's fields are left alone. Without ownership
//! tracking none of that can be checked, so this module keeps it in the real format:
//! one entry per (manager, operation, subresource) with `fieldsV1` such as
//! `{"f:spec":{"f:replicas":{}}}`.
//!
//! Simplification, deliberately: a list is one atomic field (the real server merges lists
//! marked `listType=map`/`set`, such as containers by name, element by element). Two managers
//! applying different elements of one list therefore conflict here, where they might not on a
//! real server; this errs on the side of reporting a conflict, never hiding one.

use super::status::{ApiError, ApiResult};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// A path of field names from the object's root.
pub(crate) type Path = Vec<String>;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The field manager.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// The API version the manager wrote with.
    pub api_version: String,
    /// `""` for the main resource, or `status`.
    pub subresource: String,
    /// When it last changed what it owns.
    pub time: String,
    /// The leaf fields it owns.
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn same_content(&self, other: &Entry) -> bool {
        Entry {
            time: String::new(),
            ..self.clone()
        } == Entry {
            time: String::new(),
            ..other.clone()
        }
    }
}

/// Who writes, and where: the identity managed fields are recorded under.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// `""` for the main resource, or the subresource (`status`).
    pub subresource: &'a str,
    /// The API version of the request.
    pub api_version: &'a str,
    /// Whether the resource has a status subresource (so `status` is not the main resource's).
    pub has_status: bool,
    /// The time to record.
    pub now: &'a str,
}

/// The part of `obj` a write through `subresource` owns: no server-set metadata, and only
/// `status` for the status subresource, everything but `status` for the main resource of a
/// kind that has one.
fn tracked(obj: &Value, subresource: &str, has_status: bool) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for f in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(f);
            }
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
        if subresource == "status" {
            map.retain(|k, _| k == "status");
        } else if has_status {
            map.remove("status");
        }
    }
    out
}

/// The leaf paths of `v`: every value that is not a non-empty object. Nulls are left out (an
/// apply's `null` means "not specified").
fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Null => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn leaf_set(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(v, &mut Vec::new(), &mut out);
    out
}

/// The value at `path`.
pub(crate) fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |at, p| at.get(p))
}

/// Sets `path` to `value`, creating objects on the way. An empty object is set only where
/// there is no object yet, so applying `labels: {}` does not wipe others' labels.
fn set(v: &mut Value, path: &[String], value: &Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(m) = at else { return };
        at = m
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    if let Value::Object(m) = at {
        let empty_object = value.as_object().is_some_and(Map::is_empty);
        match m.get(last) {
            Some(Value::Object(_)) if empty_object => {}
            _ => {
                m.insert(last.clone(), value.clone());
            }
        }
    }
}

/// Removes `path`, then every object on the way that it left empty (top-level fields such as
/// `spec` stay).
fn remove(v: &mut Value, path: &[String]) {
    fn go(at: &mut Value, path: &[String], depth: usize) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Value::Object(m) = at else { return };
        if rest.is_empty() {
            m.remove(first);
            return;
        }
        if let Some(child) = m.get_mut(first) {
            go(child, rest, depth + 1);
            if depth > 0 && child.as_object().is_some_and(Map::is_empty) {
                m.remove(first);
            }
        }
    }
    go(v, path, 0);
}

/// Whether one path is a prefix of the other (they name overlapping values).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `.spec.replicas`, as conflict messages name fields.
fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// The `fieldsV1` tree of a set of leaves.
fn fields_v1(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut at = &mut root;
        for (i, p) in path.iter().enumerate() {
            let node = at
                .entry(format!("f:{p}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(m) = node else { break };
            let is_last = i + 1 == path.len();
            // A field that is owned itself and has owned fields inside is marked with ".".
            let also_inner = is_last && !m.is_empty();
            let also_self = !is_last && m.is_empty() && fields.contains(&path[..=i].to_vec());
            if also_inner || also_self {
                m.insert(".".into(), json!({}));
            }
            at = m;
        }
    }
    Value::Object(root)
}

/// The leaves a `fieldsV1` tree names. Keys other than `f:` (list element keys, which this
/// server does not write) make their parent a leaf.
fn parse_fields_v1(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    let mut leaf = m.is_empty() || m.contains_key(".");
    for (k, child) in m {
        if let Some(name) = k.strip_prefix("f:") {
            prefix.push(name.to_string());
            parse_fields_v1(child, prefix, out);
            prefix.pop();
        } else if k != "." {
            leaf = true;
        }
    }
    if leaf && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

/// The entries of `obj`'s `metadata.managedFields`.
pub(crate) fn read(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    list.iter()
        .map(|e| {
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields_v1(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                api_version: s(e, "apiVersion"),
                subresource: s(e, "subresource"),
                time: s(e, "time"),
                fields,
            }
        })
        .collect()
}

/// Writes `entries` as `obj`'s `metadata.managedFields`, keeping the stored list (and its
/// times) when nothing but times would change, so that a no-op write stays a no-op.
pub(crate) fn write(obj: &mut Value, old: &Value, entries: &[Entry]) {
    let before = read(old);
    let unchanged =
        before.len() == entries.len() && before.iter().zip(entries).all(|(a, b)| a.same_content(b));
    let rendered = if unchanged {
        old.pointer("/metadata/managedFields").cloned()
    } else if entries.is_empty() {
        None
    } else {
        Some(Value::Array(
            entries
                .iter()
                .map(|e| {
                    let mut v = json!({
                        "manager": e.manager, "operation": e.operation,
                        "apiVersion": e.api_version, "time": e.time,
                        "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.fields),
                    });
                    if !e.subresource.is_empty()
                        && let Some(m) = v.as_object_mut()
                    {
                        m.insert("subresource".into(), json!(e.subresource));
                    }
                    v
                })
                .collect(),
        ))
    };
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        match rendered {
            Some(list) => {
                meta.insert("managedFields".into(), list);
            }
            None => {
                meta.remove("managedFields");
            }
        }
    }
}

/// The entries after a non-apply write (create, update, merge or JSON patch) by `w` changed
/// `old` into `new`: `w` takes the fields whose values it changed (operation `Update`), and
/// every other entry loses them; removed fields leave every entry.
pub(crate) fn after_update(old: &Value, new: &Value, w: &Writer<'_>) -> Vec<Entry> {
    let mut entries = read(old);
    let old_t = tracked(old, w.subresource, w.has_status);
    let new_t = tracked(new, w.subresource, w.has_status);
    let old_leaves = leaf_set(&old_t);
    let new_leaves = leaf_set(&new_t);
    let changed: BTreeSet<Path> = new_leaves
        .iter()
        .chain(old_leaves.iter())
        .filter(|p| get(&old_t, p) != get(&new_t, p))
        .cloned()
        .collect();
    if changed.is_empty() {
        return entries;
    }
    for e in entries
        .iter_mut()
        .filter(|e| e.subresource == w.subresource)
    {
        e.fields.retain(|f| !changed.iter().any(|c| overlaps(f, c)));
    }
    let taken: BTreeSet<Path> = changed.intersection(&new_leaves).cloned().collect();
    if !taken.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(w.manager, "Update", w.subresource))
        {
            Some(e) => {
                e.fields.extend(taken);
                e.time = w.now.to_string();
                e.api_version = w.api_version.to_string();
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                subresource: w.subresource.to_string(),
                time: w.now.to_string(),
                fields: taken,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    entries
}

/// The outcome of an apply: the object before server-side normalization, and its entries.
pub(crate) struct Applied {
    /// `live` with the applied configuration merged in and dropped fields removed.
    pub object: Value,
    /// The managed fields after the apply.
    pub entries: Vec<Entry>,
}

/// Server-side apply of `config` by `w` to `live` (`base` when creating: an object with just
/// its identity). A field `config` sets to a value other than the live one, owned by another
/// entry, is a conflict (409) unless `force`, which takes it over. Fields `w` applied before
/// and omits now are removed unless another entry owns them too.
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    w: &Writer<'_>,
    force: bool,
    resource: &str,
    name: &str,
) -> ApiResult<Applied> {
    let mut entries = read(live);
    let config_t = tracked(config, w.subresource, w.has_status);
    let applied = leaf_set(&config_t);
    let live_t = tracked(live, w.subresource, w.has_status);

    let mine = |e: &Entry| e.same_owner(w.manager, "Apply", w.subresource);
    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for p in &applied {
        if get(&live_t, p) == get(&config_t, p) {
            continue;
        }
        for (i, e) in entries.iter().enumerate() {
            if !mine(e) && e.subresource == w.subresource && e.fields.iter().any(|f| overlaps(f, p))
            {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&entries, &conflicts, resource, name));
    }
    for (i, p) in &conflicts {
        if let Some(e) = entries.get_mut(*i) {
            e.fields.retain(|f| !overlaps(f, p));
        }
    }

    let previous: BTreeSet<Path> = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut object = live.clone();
    for dropped in previous.difference(&applied) {
        let shared = entries
            .iter()
            .any(|e| !mine(e) && e.fields.iter().any(|f| overlaps(f, dropped)));
        if !shared {
            remove(&mut object, dropped);
        }
    }
    for p in &applied {
        if let Some(value) = get(&config_t, p) {
            set(&mut object, p, value);
        }
    }

    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => {
            if e.fields != applied {
                e.time = w.now.to_string();
            }
            e.fields = applied;
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(Entry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            subresource: w.subresource.to_string(),
            time: w.now.to_string(),
            fields: applied,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Applied { object, entries })
}

/// The real server's conflict message and details:
/// `Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .spec.replicas`.
fn conflict_error(
    entries: &[Entry],
    conflicts: &[(usize, Path)],
    resource: &str,
    name: &str,
) -> ApiError {
    let who = |i: usize| {
        entries.get(i).map_or_else(String::new, |e| {
            if e.operation == "Update" {
                format!("conflict with {:?} using {}", e.manager, e.api_version)
            } else {
                format!("conflict with {:?}", e.manager)
            }
        })
    };
    let message = match conflicts {
        [(i, p)] => format!("Apply failed with 1 conflict: {}: {}", who(*i), dotted(p)),
        many => {
            let lines: Vec<String> = many
                .iter()
                .map(|(i, p)| format!("{}: {}", who(*i), dotted(p)))
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| json!({"type": "FieldManagerConflict", "message": who(*i), "field": dotted(p)}))
        .collect();
    ApiError::new(409, "Conflict", message)
        .with_details(json!({"name": name, "kind": resource, "causes": causes}))
}
