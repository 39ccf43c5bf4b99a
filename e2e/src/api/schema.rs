//! Pruning and defaulting of custom resources by their CRD's structural schema, as
//! kube-apiserver does on every write: unknown fields are dropped (unless
//! `x-kubernetes-preserve-unknown-fields`), `null` in a field that is not `nullable` is dropped,
//! and absent fields with a `default` get it. The operator reads back what it wrote and what
//! users wrote, so it must see the defaulted, pruned object a real server would store.
//!
//! Not implemented: OpenAPI type/format validation and CEL rules (`x-kubernetes-validations`).
//! A custom resource the real server would reject with 422 is stored here; the CRD's own tests
//! in `partita-api` check those rules.

use serde_json::Value;

/// Prunes and defaults the custom resource `obj` by its version's `openAPIV3Schema`.
pub(crate) fn apply(obj: &mut Value, schema: &Value) {
    walk(obj, schema, true);
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn walk(v: &mut Value, schema: &Value, resource: bool) {
    match v {
        Value::Object(map) => {
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
            let is_meta = |k: &str| resource && matches!(k, "apiVersion" | "kind" | "metadata");
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                if !preserve {
                    map.retain(|k, _| props.contains_key(k) || is_meta(k));
                }
                for (k, prop) in props {
                    if is_meta(k) {
                        continue;
                    }
                    if map.get(k).is_some_and(Value::is_null) && !flag(prop, "nullable") {
                        map.remove(k);
                    }
                    if !map.contains_key(k)
                        && let Some(default) = prop.get("default")
                    {
                        map.insert(k.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        walk(child, prop, false);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties") {
                if additional.is_object() {
                    for child in map.values_mut() {
                        walk(child, additional, false);
                    }
                }
            } else if !preserve
                && !resource
                && schema.get("type").and_then(Value::as_str) == Some("object")
            {
                map.clear();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    walk(item, item_schema, false);
                }
            }
        }
        _ => {}
    }
}
