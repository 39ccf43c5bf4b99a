//! The example resources are admitted by the CRD, and bad input is refused with the message a
//! user would see from `kubectl apply`.
//!
//! Invalid cases live in `crds/tests/invalid/`, one file each, headed by what must be refused:
//! `# expect: FIELD: MESSAGE` for a CEL rule (the exact message), `# expect-schema: FIELD` for a
//! structural schema error (wrong type, unknown enum value or field, missing required field).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{Rejection, admit, open_api_schema, repo_root, yaml_documents};
use partita_api::{ReplicatedPartitionSet, WriteConcern};
use serde_json::{Value, json};
use std::path::PathBuf;

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn example_sets() -> Vec<(String, Value)> {
    example_files()
        .into_iter()
        .flat_map(|path| {
            let name = path.display().to_string();
            yaml_documents(&path)
                .into_iter()
                .filter(|d| d["kind"] == "ReplicatedPartitionSet")
                .map(move |d| (name.clone(), d))
        })
        .collect()
}

#[test]
fn every_example_set_is_admitted_and_reads_back_as_the_rust_type() {
    let sets = example_sets();
    assert!(
        sets.len() >= 2,
        "expected the minimal and full examples, found {}",
        sets.len()
    );
    for (file, doc) in sets {
        if let Err(rejections) = admit(&doc, None) {
            panic!("{file} was refused:\n  {}", join(&rejections));
        }
        let typed: ReplicatedPartitionSet = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{file} does not read as the Rust type: {e}"));
        assert!(typed.spec.nodes >= typed.spec.replication_factor, "{file}");
    }
}

#[test]
fn the_minimal_example_takes_the_documented_defaults() {
    let doc = yaml_documents(&repo_root().join("examples/minimal.yaml"))
        .pop()
        .expect("one document");
    let set: ReplicatedPartitionSet = serde_json::from_value(doc).expect("typed");
    assert_eq!(set.spec.nodes, 3);
    assert_eq!(set.spec.partitions, partita_api::defaults::PARTITIONS);
    assert_eq!(
        set.spec.replication_factor,
        partita_api::defaults::REPLICATION_FACTOR
    );
    assert_eq!(set.spec.write_concern, WriteConcern::Quorum);
    assert!(set.spec.failover.enabled && set.spec.failover.require_quorum);
    assert_eq!(
        partita_api::parse_duration(&set.spec.failover.detection_window).ok(),
        Some(std::time::Duration::from_secs(3))
    );
    assert!(!set.spec.paused);
}

/// `examples/full.yaml` sets every field of the spec, so it shows users the whole API. A new
/// field fails this test until the example shows it too.
#[test]
fn the_full_example_sets_every_spec_field() {
    fn missing(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (name, sub) in props {
            let here = format!("{path}.{name}");
            match value.get(name) {
                None => out.push(here),
                // Kubernetes' own types (resources) are shown, not exhausted.
                Some(v) if name != "resources" => missing(sub, v, &here, out),
                Some(_) => {}
            }
        }
    }
    let doc = yaml_documents(&repo_root().join("examples/full.yaml"))
        .pop()
        .expect("one document");
    let mut out = Vec::new();
    missing(
        &open_api_schema()["properties"]["spec"],
        &doc["spec"],
        "spec",
        &mut out,
    );
    assert!(
        out.is_empty(),
        "examples/full.yaml does not set: {}",
        out.join(", ")
    );
}

#[test]
fn every_invalid_case_is_refused_with_its_expected_message() {
    let dir = repo_root().join("crds/tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("crds/tests/invalid exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} invalid cases", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let expected_cel: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(str::to_string)
            .collect();
        let expected_schema: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect-schema: "))
            .collect();
        assert!(
            !expected_cel.is_empty() || !expected_schema.is_empty(),
            "{} says nothing about what must be refused",
            path.display()
        );
        let doc = yaml_documents(&path).pop().expect("one document");
        let rejections = match admit(&doc, None) {
            Ok(()) => panic!("{} was admitted", path.display()),
            Err(r) => r,
        };
        if !expected_cel.is_empty() {
            let mut got: Vec<String> = rejections.iter().map(ToString::to_string).collect();
            let mut want = expected_cel.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", path.display());
        }
        for field in expected_schema {
            assert!(
                rejections.iter().any(|r| r.field == field),
                "{}: expected a schema error at {field}, got:\n  {}",
                path.display(),
                join(&rejections)
            );
        }
    }
}

#[test]
fn partitions_cannot_change_after_creation_but_nodes_can() {
    let old = json!({
        "apiVersion": "partita.dev/v1alpha1",
        "kind": "ReplicatedPartitionSet",
        "metadata": {"name": "demo"},
        "spec": {"nodes": 3, "partitions": 8}
    });
    let mut resharded = old.clone();
    resharded["spec"]["partitions"] = json!(16);
    assert_eq!(
        admit(&resharded, Some(&old)).err(),
        Some(vec![Rejection {
            field: "spec.partitions".into(),
            message: "partitions cannot be changed after creation: resharding is not supported \
                      yet; create a new set instead"
                .into(),
        }])
    );
    // The same object is fine as a creation: the rule is a transition rule.
    assert_eq!(admit(&resharded, None), Ok(()));

    let mut scaled = old.clone();
    scaled["spec"]["nodes"] = json!(5);
    assert_eq!(admit(&scaled, Some(&old)), Ok(()));

    // Leaving partitions out of an update keeps the default, which must equal what was
    // defaulted at creation.
    let old_defaulted = json!({
        "apiVersion": "partita.dev/v1alpha1",
        "kind": "ReplicatedPartitionSet",
        "metadata": {"name": "demo"},
        "spec": {"nodes": 3}
    });
    let mut update = old_defaulted.clone();
    update["spec"]["nodes"] = json!(4);
    assert_eq!(admit(&update, Some(&old_defaulted)), Ok(()));
}

fn join(rejections: &[Rejection]) -> String {
    rejections
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn the_shortest_detection_window_is_admitted_with_the_default_heartbeat() {
    let set = json!({
        "apiVersion": "partita.dev/v1alpha1",
        "kind": "ReplicatedPartitionSet",
        "metadata": {"name": "fast"},
        "spec": {"nodes": 3, "failover": {"detectionWindow": "1s"}}
    });
    assert_eq!(admit(&set, None), Ok(()));
}
