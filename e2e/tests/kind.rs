//! What runs the scenarios on a real cluster cannot run here (no container engine), so these
//! check that it at least holds together: the script parses, the workflow runs it, and the
//! script asks `partita-e2e` and the chart only for what they accept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn kind_sh_is_valid_bash_and_uses_what_exists() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(repo().join("e2e/kind.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = read("e2e/kind.sh");
    for dockerfile in ["node/Dockerfile", "operator/Dockerfile", "e2e/Dockerfile"] {
        assert!(
            script.contains(&format!("-f {dockerfile}")),
            "{dockerfile} is not built"
        );
        assert!(repo().join(dockerfile).is_file());
    }
    assert!(script.contains("helm upgrade --install partita charts/partita-operator"));
    // The chart values it sets exist.
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/partita-operator/values.yaml")).unwrap();
    for (key, sub) in [("image", "tag"), ("nodeImage", "tag")] {
        assert!(script.contains(&format!("--set {key}.{sub}=")));
        assert!(
            values[key][sub].is_string(),
            "values.yaml has no {key}.{sub}"
        );
    }
    // The environment it gives the Job is what RealConfig reads.
    let real = read("e2e/src/real.rs");
    for var in [
        "PARTITA_E2E_NODE_IMAGE",
        "PARTITA_E2E_DEBUG_IMAGE",
        "PARTITA_E2E_OPERATOR_NAMESPACE",
    ] {
        assert!(script.contains(var) && real.contains(var), "{var}");
    }
}

#[test]
fn the_job_passes_flags_partita_e2e_accepts() {
    let help = Command::new(env!("CARGO_BIN_EXE_partita-e2e"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--in-cluster", "--scenario", "--namespace"] {
        assert!(help.contains(flag), "partita-e2e has no {flag}:\n{help}");
    }
    let script = read("e2e/kind.sh");
    assert!(script.contains(r#"args: ["--in-cluster""#));
    // A scenario that does not exist is refused before anything runs.
    let refused = Command::new(env!("CARGO_BIN_EXE_partita-e2e"))
        .args(["--scenario", "no-such"])
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn the_workflow_runs_kind_sh_with_helm_and_kind() {
    let workflow: serde_yaml::Value =
        serde_yaml::from_str(&read(".github/workflows/e2e.yml")).unwrap();
    let steps = workflow["jobs"]["kind"]["steps"]
        .as_sequence()
        .expect("jobs.kind.steps");
    let uses: Vec<&str> = steps.iter().filter_map(|s| s["uses"].as_str()).collect();
    assert!(uses.iter().any(|u| u.starts_with("actions/checkout@")));
    assert!(uses.iter().any(|u| u.starts_with("azure/setup-helm@")));
    assert!(uses.iter().any(|u| u.starts_with("helm/kind-action@")));
    assert!(
        steps
            .iter()
            .any(|s| s["run"].as_str() == Some("e2e/kind.sh"))
    );
    assert!(
        workflow["jobs"]["kind"]["timeout-minutes"]
            .as_u64()
            .is_some_and(|m| m <= 90)
    );
}
