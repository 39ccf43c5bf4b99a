//! The committed CRD file is what the Rust types generate, is a valid CustomResourceDefinition,
//! and follows the API server's rules for structural schemas and CEL cost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{open_api_schema, repo_root, schema_nodes};
use serde_json::{Value, json};
use std::process::Command;

const CRD_FILE: &str = "crds/partita.dev_replicatedpartitionsets.yaml";
const REGENERATE: &str =
    "cargo run -p partita-api --bin crdgen > crds/partita.dev_replicatedpartitionsets.yaml";

fn committed() -> String {
    std::fs::read_to_string(repo_root().join(CRD_FILE)).expect("the committed CRD file")
}

#[test]
fn committed_crd_matches_the_types() {
    let generated = partita_api::crd_yaml().expect("the CRD serializes");
    assert!(
        generated == committed(),
        "{CRD_FILE} drifted from the types in crds/src; regenerate it with:\n  {REGENERATE}"
    );
}

#[test]
fn crdgen_prints_exactly_the_committed_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .output()
        .expect("crdgen runs");
    assert!(
        out.status.success(),
        "crdgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        committed(),
        "crdgen output differs from {CRD_FILE}; regenerate with:\n  {REGENERATE}"
    );
}

/// Runs `kubernetes-validate --strict` (PyPI) on a file; its exit status and output.
fn kubernetes_validate(path: &std::path::Path) -> (bool, String) {
    let result = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .arg(path)
        .output();
    let out = match result {
        Ok(out) => out,
        Err(e) => panic!("python3 could not be run: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: run `.ci/setup` (or `pip install kubernetes-validate`)"
    );
    (out.status.success(), text)
}

#[test]
fn kubernetes_validate_strict_accepts_the_crd() {
    let (ok, text) = kubernetes_validate(&repo_root().join(CRD_FILE));
    assert!(
        ok && text.contains("passed"),
        "kubernetes-validate --strict refused the CRD:\n{text}"
    );
}

#[test]
fn kubernetes_validate_strict_would_catch_a_broken_crd() {
    // The control for the test above: the same file with a field the CRD API does not have.
    let broken = committed().replacen(
        "  scope: Namespaced\n",
        "  scope: Namespaced\n  replicas: 3\n",
        1,
    );
    assert_ne!(broken, committed(), "the edit applied");
    let dir = std::env::temp_dir().join(format!("partita-crd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.yaml");
    std::fs::write(&path, broken).expect("write");
    let (ok, text) = kubernetes_validate(&path);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        !ok,
        "kubernetes-validate accepted an unknown field:\n{text}"
    );
    assert!(text.contains("replicas"), "{text}");
}

#[test]
fn crd_has_the_names_columns_and_subresources_users_rely_on() {
    let crd: Value = serde_yaml::from_str(&committed()).expect("YAML");
    let spec = &crd["spec"];
    assert_eq!(
        crd["metadata"]["name"],
        "replicatedpartitionsets.partita.dev"
    );
    assert_eq!(spec["names"]["shortNames"], json!(["rps"]));
    assert_eq!(spec["scope"], "Namespaced");
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"],
        ".spec.nodes"
    );
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["jsonPath"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        vec![
            ("Nodes", ".spec.nodes"),
            ("Partitions", ".spec.partitions"),
            ("RF", ".spec.replicationFactor"),
            ("Ready", ".status.readyNodes"),
            ("Phase", ".status.phase"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

/// The rules the API server applies to a v1 CRD's schema before accepting it ("structural
/// schema"), which kubernetes-validate does not check: every node has a type (or is an
/// int-or-string), no references, map lists keyed by fields that are required or defaulted.
#[test]
fn schema_is_structural() {
    let mut problems = Vec::new();
    for (path, node) in schema_nodes(&open_api_schema()) {
        let path = if path.is_empty() {
            "<root>".into()
        } else {
            path
        };
        let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&json!(true));
        if node.get("type").is_none() && !int_or_string {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in [
            "$ref",
            "definitions",
            "$defs",
            "oneOf",
            "anyOf",
            "allOf",
            "not",
        ] {
            if node.get(forbidden).is_some() {
                problems.push(format!("{path}: uses {forbidden}"));
            }
        }
        if node.get("properties").is_some() && node["type"] != "object" {
            problems.push(format!("{path}: properties on a non-object"));
        }
        if node.get("x-kubernetes-list-type") == Some(&json!("map")) {
            let item = &node["items"];
            let required: Vec<&str> = item["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in node["x-kubernetes-list-map-keys"]
                .as_array()
                .expect("map lists name their keys")
            {
                let key = key.as_str().expect("key is a string");
                let defaulted = item["properties"][key].get("default").is_some();
                if !required.contains(&key) && !defaulted {
                    problems.push(format!(
                        "{path}: map-list key {key} is neither required nor defaulted"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "non-structural schema:\n  {}",
        problems.join("\n  ")
    );
}

/// Every CEL rule compiles, uses only the variables a CRD rule may use, and stays inside the
/// API server's cost budget (kube-cel's estimate; strings the rules scan carry a maxLength).
#[test]
fn cel_rules_compile_and_stay_within_budget() {
    use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
    let mut rules = 0;
    let mut problems = Vec::new();
    for (path, node) in schema_nodes(&open_api_schema()) {
        let Some(validations) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        else {
            continue;
        };
        let compiled = compile_schema(&node);
        for e in compiled.compilation_errors() {
            problems.push(format!("{path}: {e}"));
        }
        for v in validations {
            rules += 1;
            let rule = v["rule"].as_str().expect("rule is a string");
            assert!(
                v.get("message").is_some() || v.get("messageExpression").is_some(),
                "{path}: rule {rule:?} has no message for users"
            );
            for w in analyze_rule(rule, &compiled, ScopeContext::CrdValidation) {
                problems.push(format!("{path}: {rule}: {}", w.message));
            }
        }
    }
    assert!(
        rules >= 12,
        "only {rules} CEL rules found; is the schema being walked?"
    );
    assert!(
        problems.is_empty(),
        "CEL problems:\n  {}",
        problems.join("\n  ")
    );
}
