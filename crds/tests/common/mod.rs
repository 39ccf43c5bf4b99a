//! Shared helpers for the CRD tests: loading YAML, and an admission check that stands in for
//! the Kubernetes API server when a ReplicatedPartitionSet is created or updated.
//!
//! The API server admits a custom resource in this order: apply schema defaults, validate the
//! object against the structural OpenAPI schema (types, enums, required fields, and, as kubectl
//! asks by default, no unknown fields), then evaluate the `x-kubernetes-validations` CEL rules,
//! transition rules only on update. `admit` does the same with the generated CRD: the schema
//! check with the `jsonschema` crate, the CEL rules with kube's client-side evaluator (kube-cel,
//! which implements the Kubernetes CEL libraries and fails closed on anything it cannot run).

#![allow(dead_code)]

use kube::CustomResourceExt;
use partita_api::ReplicatedPartitionSet;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .to_path_buf()
}

/// Every YAML document of a file, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The CRD's openAPIV3Schema, as JSON.
pub fn open_api_schema() -> Value {
    let crd = serde_json::to_value(ReplicatedPartitionSet::crd()).expect("CRD to JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// One rejection, as the API server words it: the field path and the message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rejection {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Admit `object` as the API server would on create (`old` = None) or update.
pub fn admit(object: &Value, old: Option<&Value>) -> Result<(), Vec<Rejection>> {
    let mut rejections = Vec::new();
    if object["apiVersion"] != json!("partita.dev/v1alpha1") {
        rejections.push(Rejection {
            field: "apiVersion".into(),
            message: format!("must be partita.dev/v1alpha1, got {}", object["apiVersion"]),
        });
    }
    if object["kind"] != json!("ReplicatedPartitionSet") {
        rejections.push(Rejection {
            field: "kind".into(),
            message: format!("must be ReplicatedPartitionSet, got {}", object["kind"]),
        });
    }
    match object["metadata"]["name"].as_str() {
        Some(name) if is_dns_label(name) => {}
        other => rejections.push(Rejection {
            field: "metadata.name".into(),
            message: format!("must be a lowercase RFC 1123 label, got {other:?}"),
        }),
    }

    let schema = open_api_schema();
    let structural = to_json_schema(&schema["properties"]["spec"]);
    let validator = jsonschema::validator_for(&structural).expect("the spec schema compiles");
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    for error in validator.iter_errors(&spec) {
        rejections.push(Rejection {
            field: format!(
                "spec{}",
                error.instance_path().to_string().replace('/', ".")
            ),
            message: error.to_string(),
        });
    }
    // The API server runs CEL rules only on objects whose schema validation passed.
    if rejections.is_empty()
        && let Err(errors) = kube::core::cel::Validator::new().validate(&schema, object, old)
    {
        for e in errors.into_vec() {
            rejections.push(Rejection {
                field: e.field_path.clone(),
                message: e.message.clone(),
            });
        }
    }
    if rejections.is_empty() {
        Ok(())
    } else {
        rejections.sort();
        Err(rejections)
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Turns a structural OpenAPI v3 schema into a JSON Schema with the same meaning:
/// `nullable` becomes a null type, int-or-string accepts both, and objects with declared
/// properties refuse unknown ones (strict field validation, kubectl's default).
pub fn to_json_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                let props = value
                    .as_object()
                    .expect("properties is an object")
                    .iter()
                    .map(|(k, v)| (k.clone(), to_json_schema(v)))
                    .collect();
                out.insert(key.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if value.is_object() => {
                out.insert(key.clone(), to_json_schema(value));
            }
            k if k.starts_with("x-kubernetes-") || k == "nullable" || k == "format" => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        out.remove("type");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if map.get("nullable") == Some(&json!(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
        if let Some(Value::Array(values)) = out.get_mut("enum") {
            values.push(Value::Null);
        }
    }
    if map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && map.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
    {
        out.insert("additionalProperties".into(), json!(false));
    }
    Value::Object(out)
}

/// Every schema node with its path, depth first.
pub fn schema_nodes(schema: &Value) -> Vec<(String, Value)> {
    fn walk(path: String, node: &Value, out: &mut Vec<(String, Value)>) {
        out.push((path.clone(), node.clone()));
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(format!("{path}.{k}"), v, out);
            }
        }
        if let Some(items) = node.get("items") {
            walk(format!("{path}[]"), items, out);
        }
        if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
            walk(format!("{path}{{}}"), extra, out);
        }
    }
    let mut out = Vec::new();
    walk(String::new(), schema, &mut out);
    out
}
