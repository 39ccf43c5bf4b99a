//! The Helm chart in `charts/partita-operator`, checked without a cluster: it renders and lints
//! clean with its default values and every value set in its `ci/` directory (through PyPI's
//! helm-python-sdk, which is Helm's own Go code), every rendered manifest passes
//! `kubernetes-validate --strict`, it ships the generated CRD unchanged, its values schema
//! refuses bad values with Helm's message, and its README documents every value.
//!
//! The RBAC it grants is checked against what the operator really does, in both directions: the
//! real `partita-operator` binary runs with the rendered Deployment's arguments and environment
//! against an API server that enforces the rendered Roles and bindings, through a set's whole
//! life (create, pods ready, scale twice, delete with its volumes). A request the rules refuse
//! fails the test, and so does a rule the operator never needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::nodes::{Nodes, roll_out};
use common::{Access, FakeApi, Process, Rule, free_port, wait_until};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams};
use partita_api::{Phase, ReplicatedPartitionSet};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);
/// The namespace the chart is installed in by these tests.
const RELEASE_NAMESPACE: &str = "partita-system";
/// What the downward API gives the operator pod as its name.
const POD_NAME: &str = "partita-operator-5d8f7c9b4-x2x7q";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/partita-operator")
}

/// `python3 charts/helm.py ARGS`, failing clearly when the Python tools are missing.
fn helm(args: &[&str]) -> Output {
    let out = Command::new("python3")
        .arg(repo_root().join("charts/helm.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "the chart tools are not installed: run .ci/setup\n{stderr}"
    );
    out
}

/// The value sets CI checks: the defaults, and each file of the chart's `ci/` directory.
fn value_sets() -> Vec<(String, Option<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "ci/ holds at least two value sets");
    let mut sets = vec![("defaults".to_string(), None)];
    sets.extend(files.into_iter().map(|f| {
        (
            f.file_name().unwrap().to_string_lossy().into_owned(),
            Some(f),
        )
    }));
    sets
}

/// `charts/helm.py COMMAND` on the chart with `values`, in the release namespace, with `extra`.
fn helm_on(command: &str, values: Option<&Path>, extra: &[&str]) -> Output {
    let chart = chart_dir().display().to_string();
    let values = values.map(|v| v.display().to_string());
    let mut args = vec![command, chart.as_str()];
    if let Some(v) = &values {
        args.extend(["-f", v.as_str()]);
    }
    args.extend(["--namespace", RELEASE_NAMESPACE]);
    args.extend_from_slice(extra);
    helm(&args)
}

/// The objects the chart renders with `values`.
fn render(values: Option<&Path>) -> Vec<Value> {
    let out = helm_on("render", values, &[]);
    assert!(
        out.status.success(),
        "rendering failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    docs.into_iter().map(|d| d["object"].clone()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn the_chart_lints_clean_with_every_value_set() {
    for (name, values) in value_sets() {
        let out = helm_on("lint", values.as_deref(), &[]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "helm lint --strict ({name}):\n{report}"
        );
        assert!(
            report.contains("1 chart(s) linted, 0 problem(s)"),
            "{report}"
        );

        let notes = String::from_utf8(helm_on("notes", values.as_deref(), &[]).stdout).unwrap();
        assert!(
            notes.contains("kubectl get rps"),
            "NOTES.txt ({name}): {notes}"
        );
    }
}

/// Runs `kubernetes-validate --strict` on each object, one file each; its output.
fn kubernetes_validate(objects: &[&Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let path = dir.path().join(format!("{i:02}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(object).unwrap()).unwrap();
        files.push(path);
    }
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: run .ci/setup"
    );
    (out.status.success(), text)
}

#[test]
fn every_rendered_manifest_passes_kubernetes_validate_strict() {
    for (name, values) in value_sets() {
        let objects = render(values.as_deref());
        // ServiceMonitor is the Prometheus Operator's kind, for which kubernetes-validate has no
        // schema; the_service_monitor_scrapes_the_metrics_service checks it instead.
        let kinds: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] != "ServiceMonitor")
            .collect();
        let (ok, text) = kubernetes_validate(&kinds);
        assert!(ok, "{name}:\n{text}");
        let passed = text.lines().filter(|l| l.contains(" passed for ")).count();
        assert_eq!(passed, kinds.len(), "{name}: every object passes:\n{text}");
        assert!(!text.contains("WARN"), "{name}:\n{text}");
    }
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let mut seen = 0;
    for (name, values) in value_sets() {
        let objects = render(values.as_deref());
        for monitor in find(&objects, "ServiceMonitor") {
            seen += 1;
            assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1", "{name}");
            let services = find(&objects, "Service");
            let service = services
                .iter()
                .find(|s| {
                    monitor["spec"]["selector"]["matchLabels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| s["metadata"]["labels"][k] == *v)
                })
                .unwrap_or_else(|| panic!("{name}: no Service matches the ServiceMonitor"));
            let ns = &monitor["spec"]["namespaceSelector"]["matchNames"];
            assert_eq!(ns, &json!([service["metadata"]["namespace"]]), "{name}");
            let endpoint = &monitor["spec"]["endpoints"][0];
            let ports = service["spec"]["ports"].as_array().unwrap();
            assert!(
                ports.iter().any(|p| p["name"] == endpoint["port"]),
                "{name}: the endpoint's port {} is one of the Service's",
                endpoint["port"]
            );
            assert_eq!(endpoint["path"], "/metrics");
            let seconds = |v: &Value| -> u64 {
                let s = v.as_str().unwrap();
                s.strip_suffix('s').unwrap().parse().unwrap()
            };
            assert!(seconds(&endpoint["scrapeTimeout"]) <= seconds(&endpoint["interval"]));
        }
    }
    assert!(seen >= 1, "a ci/ value set enables the ServiceMonitor");
}

#[test]
fn names_fit_their_limits_for_the_longest_release_name() {
    // Helm allows release names of up to 53 characters.
    let release = "storage-platform-production-kv-eu-west1-a-b-c-d-e-f-g";
    assert_eq!(release.len(), 53);
    let production = chart_dir().join("ci/production-values.yaml");
    let out = helm_on("render", Some(&production), &["--name", release]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let dns_label = |s: &str| {
        s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    for doc in docs.iter().map(|d| &d["object"]) {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let kind = doc["kind"].as_str().unwrap();
        // Services need DNS-1035 labels; label values and Deployment-made pod names need 63.
        assert!(
            dns_label(name),
            "{kind} {name:?} ({} characters)",
            name.len()
        );
        if kind == "Deployment" {
            for arg in doc["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
            {
                if let Some(lease) = arg.as_str().unwrap().strip_prefix("--lease-name=") {
                    assert!(dns_label(lease), "lease {lease:?}");
                }
            }
        }
        for (k, v) in doc["metadata"]["labels"].as_object().unwrap() {
            assert!(v.as_str().unwrap().len() <= 63, "{kind} label {k}={v}");
        }
    }
}

#[test]
fn the_chart_ships_the_generated_crd_unchanged() {
    let generated =
        std::fs::read_to_string(repo_root().join("crds/partita.dev_replicatedpartitionsets.yaml"))
            .unwrap();
    let shipped =
        std::fs::read_to_string(chart_dir().join("crds/partita.dev_replicatedpartitionsets.yaml"))
            .unwrap();
    assert!(
        generated == shipped,
        "charts/partita-operator/crds/ differs from crds/: copy it after regenerating \
         (cp crds/partita.dev_replicatedpartitionsets.yaml charts/partita-operator/crds/)"
    );
    let files = std::fs::read_dir(chart_dir().join("crds")).unwrap().count();
    assert_eq!(files, 1, "the chart's crds/ holds the one CRD");
}

#[test]
fn the_values_schema_refuses_bad_values_with_the_offending_key() {
    let cases = [
        ("replicaCount: two\n", "/replicaCount"),
        ("replicaCount: 0\n", "/replicaCount"),
        ("logFormat: xml\n", "/logFormat"),
        ("watchNamespace: Not_A_Namespace\n", "/watchNamespace"),
        ("image:\n  pullPolicy: Sometimes\n", "/image/pullPolicy"),
        (
            "metrics:\n  serviceMonitor:\n    interval: often\n",
            "/metrics/serviceMonitor/interval",
        ),
        (
            "resources:\n  requests:\n    memory: lots\n",
            "/resources/requests/memory",
        ),
        ("replicaCont: 2\n", "replicaCont"),
        (
            "podLabels:\n  app.kubernetes.io/component: x\n",
            "/podLabels",
        ),
        ("image:\n  digest: latest\n", "/image/digest"),
        (
            "leaderElection:\n  retryPeriodSeconds: 4\n",
            "more than 3 x leaderElection.retryPeriodSeconds",
        ),
        (
            "metrics:\n  serviceMonitor:\n    enabled: true\n    interval: 10s\n    scrapeTimeout: 20s\n",
            "scrapeTimeout must not be longer",
        ),
        (
            "leaderElection:\n  leaseDurationSeconds: 10\n  renewDeadlineSeconds: 10\n",
            "renewDeadlineSeconds must be below",
        ),
        (
            "metrics:\n  service:\n    enabled: false\n  serviceMonitor:\n    enabled: true\n",
            "needs metrics.service.enabled",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (values, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        let out = helm_on("render", Some(&file), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{values:?} was accepted");
        assert!(stderr.contains(expected), "{values:?}: {stderr}");
    }
}

/// Every leaf of `values` as a dotted path (an empty map or a list is a leaf).
fn leaves(prefix: &str, values: &serde_yaml::Value, out: &mut Vec<String>) {
    match values {
        serde_yaml::Value::Mapping(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                // resources is one value: its requests and limits are examples, not keys.
                if path == "resources" {
                    out.push(path);
                } else {
                    leaves(&path, v, out);
                }
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn the_chart_readme_documents_every_value() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let mut keys = Vec::new();
    leaves("", &values, &mut keys);
    assert!(keys.len() > 20, "{keys:?}");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's values table lacks {missing:?}"
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    for key in &keys {
        let top = key.split('.').next().unwrap();
        assert!(
            schema["properties"][top].is_object(),
            "values.schema.json describes {top}"
        );
    }
}

/// The rules bound to the chart's ServiceAccount, scoped as their bindings scope them.
fn bound_rules(objects: &[Value]) -> Vec<Rule> {
    let deployment = find(objects, "Deployment")[0];
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let ours = binding["subjects"].as_array().unwrap().iter().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == account
                && s["namespace"] == RELEASE_NAMESPACE
        });
        if !ours {
            continue;
        }
        let scope = binding["metadata"]["namespace"].as_str().map(String::from);
        let role_ref = &binding["roleRef"];
        let role = objects
            .iter()
            .find(|o| {
                o["kind"] == role_ref["kind"]
                    && o["metadata"]["name"] == role_ref["name"]
                    && (role_ref["kind"] == "ClusterRole"
                        || o["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| panic!("the chart renders the role {role_ref} it binds"));
        for rule in role["rules"].as_array().unwrap() {
            let verbs = strings(&rule["verbs"]);
            let resources = strings(&rule["resources"]);
            let groups = strings(&rule["apiGroups"]);
            for wild in [&verbs, &resources, &groups] {
                assert!(
                    !wild.iter().any(|x| x == "*"),
                    "no wildcards in the chart's RBAC: {rule}"
                );
            }
            rules.push(Rule {
                namespace: scope.clone(),
                groups,
                resources,
                names: strings(&rule["resourceNames"]),
                verbs,
            });
        }
    }
    assert!(!rules.is_empty(), "the chart binds rules to {account}");
    rules
}

/// The operator command of the rendered Deployment: its args, and its env with the downward
/// API resolved as the kubelet would; the HTTP listener moves to a free loopback port.
fn operator_command(objects: &[Value], kubeconfig: &Path, port: u16) -> Command {
    let deployment = find(objects, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut command = Command::new(env!("CARGO_BIN_EXE_partita-operator"));
    for arg in container["args"].as_array().unwrap() {
        command.arg(arg.as_str().unwrap());
    }
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        let value = match var["value"].as_str() {
            Some(v) => v.to_string(),
            None => match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => POD_NAME.to_string(),
                Some("metadata.namespace") => RELEASE_NAMESPACE.to_string(),
                other => panic!("unexpected env source for {name}: {other:?}"),
            },
        };
        command.env(name, value);
    }
    command
        .env("PARTITA_OPERATOR_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// A volume claim of the set's pod `ordinal`, as the StatefulSet controller creates it from the
/// claim template (whose labels it copies).
fn claim(set: &str, namespace: &str, ordinal: usize) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("data-{set}-{ordinal}")),
            namespace: Some(namespace.into()),
            labels: Some(partita_operator::resources::labels(set)),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    }
}

/// Installs the chart rendered with `values` (its RBAC enforced, its Deployment run as a real
/// process), takes a set in `namespace` through its life, and returns every authorization
/// decision with the rules. A set in `ignored`, when given, is outside the operator's watch.
async fn a_sets_life_under_the_charts_rbac(
    values: Option<&Path>,
    namespace: &str,
    ignored: Option<&str>,
) -> (Vec<(Access, bool)>, Vec<Rule>) {
    let objects = render(values);
    let rules = bound_rules(&objects);
    let api = FakeApi::new();
    api.enforce(rules.clone());
    let addr = api.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = FakeApi::kubeconfig(addr, dir.path());
    let port = free_port();
    let mut nodes = Nodes::new("orders", namespace, 16);
    let mut operator = Process(
        operator_command(&objects, &kubeconfig, port)
            .args(["--node-grpc-port", &nodes.grpc_port.to_string()])
            .spawn()
            .unwrap(),
    );
    let holder = || {
        api.get::<Lease>(RELEASE_NAMESPACE, "partita-operator-leader")?
            .spec?
            .holder_identity
    };
    wait_until("the operator to lead", DEADLINE, || {
        no_refusals(&api);
        holder().as_deref() == Some(POD_NAME)
    })
    .await;

    if let Some(elsewhere) = ignored {
        let mut set =
            ReplicatedPartitionSet::new("elsewhere", serde_yaml::from_str("nodes: 3").unwrap());
        set.metadata.namespace = Some(elsewhere.into());
        api.insert(&set);
    }
    let spec = "nodes: 3\nstorage:\n  deleteWithSet: true\n";
    let mut set = ReplicatedPartitionSet::new("orders", serde_yaml::from_str(spec).unwrap());
    set.metadata.namespace = Some(namespace.into());
    api.insert(&set);
    let phase = || {
        api.get::<ReplicatedPartitionSet>(namespace, "orders")?
            .status?
            .phase
    };
    wait_until("the set to provision", DEADLINE, || {
        no_refusals(&api);
        phase() == Some(Phase::Provisioning)
    })
    .await;
    for i in 0..3 {
        nodes.start(i).await;
        api.insert(&nodes.pod(i));
        api.insert(&claim("orders", namespace, i));
    }
    wait_until("the set to be ready", DEADLINE, || {
        no_refusals(&api);
        phase() == Some(Phase::Ready)
    })
    .await;
    // Two scale-ups: the second "Scaled" Event repeats the first, and is recorded by patching
    // it into a series.
    for count in [4, 5] {
        api.edit::<ReplicatedPartitionSet>(namespace, "orders", |o| {
            o["spec"]["nodes"] = json!(count)
        });
        wait_until("the scale-up", DEADLINE, || {
            no_refusals(&api);
            api.get::<StatefulSet>(namespace, "orders")
                .and_then(|s| s.spec.replicas)
                == Some(count)
        })
        .await;
        for i in 3..count as usize {
            if nodes.status(i).await.is_none() {
                nodes.start(i).await;
                api.insert(&nodes.pod(i));
            }
        }
        wait_until("the set to be ready again", DEADLINE, || {
            no_refusals(&api);
            phase() == Some(Phase::Ready)
        })
        .await;
    }
    // A template change: the operator restarts the pods one at a time (deleting them).
    let restarted = roll_out(&api, &mut nodes, 5, DEADLINE).await;
    assert_eq!(restarted.len(), 5, "{restarted:?}");
    no_refusals(&api);
    let sets: Api<ReplicatedPartitionSet> = Api::namespaced(api.client(), namespace);
    sets.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the set and its volumes to go", DEADLINE, || {
        no_refusals(&api);
        api.get::<ReplicatedPartitionSet>(namespace, "orders")
            .is_none()
            && api
                .get::<PersistentVolumeClaim>(namespace, "data-orders-0")
                .is_none()
    })
    .await;

    let status = operator.terminate(DEADLINE).await;
    assert!(status.success(), "the operator exited with {status}");
    assert_eq!(holder(), None, "the lease was released");
    if let Some(elsewhere) = ignored {
        let untouched = api
            .get::<ReplicatedPartitionSet>(elsewhere, "elsewhere")
            .unwrap();
        assert!(untouched.status.is_none() && untouched.metadata.finalizers.is_none());
    }
    (api.accesses(), rules)
}

/// Fails, naming them, if the rules refused any of `accesses`.
fn assert_none_refused(accesses: &[(Access, bool)]) {
    let refused: BTreeSet<String> = accesses
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's RBAC refused what the operator needs:\n  {}",
        refused.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

/// Fails at once if the rules refused any request: the operator would otherwise retry until a
/// wait timed out, saying only what it waited for.
fn no_refusals(api: &FakeApi) -> bool {
    assert_none_refused(&api.accesses());
    true
}

/// Fails on any request the rules refused, and on any rule, resource or verb never used.
fn assert_exactly_what_is_used(accesses: &[(Access, bool)], rules: &[Rule]) {
    assert_none_refused(accesses);
    let mut unused = Vec::new();
    for rule in rules {
        for group in &rule.groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let one = Rule {
                        groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        verbs: vec![verb.clone()],
                        ..rule.clone()
                    };
                    if !accesses.iter().any(|(a, ok)| *ok && one.allows(a)) {
                        unused.push(format!(
                            "{verb} {group:?}/{resource} (bound in {:?})",
                            rule.namespace
                        ));
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never used:\n  {}",
        unused.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_wide_rbac_is_exactly_what_the_operator_uses() {
    let (accesses, rules) = a_sets_life_under_the_charts_rbac(None, "shop", None).await;
    assert!(
        rules.iter().any(|r| r.namespace.is_none()),
        "the default install binds a ClusterRole"
    );
    assert_exactly_what_is_used(&accesses, &rules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_rbac_is_exactly_what_the_operator_uses() {
    let values = chart_dir().join("ci/namespaced-values.yaml");
    let (accesses, rules) =
        a_sets_life_under_the_charts_rbac(Some(&values), "apps", Some("shop")).await;
    assert!(
        rules.iter().all(|r| r.namespace.is_some()),
        "watchNamespace binds no cluster-wide rules: {rules:?}"
    );
    assert_exactly_what_is_used(&accesses, &rules);
    let outside: BTreeSet<String> = accesses
        .iter()
        .filter(|(a, _)| a.namespace != "apps" && a.namespace != RELEASE_NAMESPACE)
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the watched namespace: {outside:?}"
    );
}

#[test]
fn the_examples_pass_kubernetes_validate_and_the_sets_are_left_to_the_crd() {
    let mut objects = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap();
                if !v.is_null() {
                    objects.push(v);
                }
            }
        }
    }
    // ReplicatedPartitionSets are checked against the CRD's schema and CEL rules by
    // crds/tests/examples.rs; kubernetes-validate knows only Kubernetes' own kinds.
    let (sets, others): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .partition(|o| o["kind"] == "ReplicatedPartitionSet");
    assert!(sets.len() >= 3, "minimal, full and production examples");
    if !others.is_empty() {
        let (ok, text) = kubernetes_validate(&others);
        assert!(ok && !text.contains("WARN"), "{text}");
    }
}

/// The hadolint that `.ci/setup` installs from PyPI: in Python's scripts directory, the user
/// scripts directory (a `pip --user` install), or on PATH.
fn hadolint() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import shutil, sysconfig\nfor p in (sysconfig.get_path('scripts'), sysconfig.get_path('scripts', sysconfig.get_preferred_scheme('user'))):\n    print(p + '/hadolint')\nprint(shutil.which('hadolint') or '')",
        ])
        .output()
        .unwrap();
    let found = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    found.expect("hadolint is not installed: run .ci/setup")
}

#[test]
fn the_dockerfiles_pass_hadolint_and_fit_what_the_operator_runs() {
    let files =
        ["node/Dockerfile", "operator/Dockerfile", "e2e/Dockerfile"].map(|f| repo_root().join(f));
    let out = Command::new(hadolint())
        .args(["--failure-threshold", "info"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Numeric, or Kubernetes' runAsNonRoot cannot verify it; the same uid the pods run as.
        assert!(text.contains("\nUSER 65532:65532\n"), "{}", file.display());
        assert!(
            text.contains("org.opencontainers.image.source"),
            "{}",
            file.display()
        );
    }
    // The StatefulSet runs `partita-node` from PATH, with the volume at the data directory the
    // node configuration names.
    let node = std::fs::read_to_string(&files[0]).unwrap();
    assert!(node.contains("/usr/local/bin/partita-node"));
    let data_dir = partita_operator::resources::DATA_DIR;
    assert!(
        node.contains(&format!("PARTITA_DATA_DIR={data_dir}"))
            && node.contains(&format!("VOLUME [\"{data_dir}\"]")),
        "the node image keeps its data in {data_dir}, where the operator mounts the volume"
    );
    let operator = std::fs::read_to_string(&files[1]).unwrap();
    assert!(operator.contains("ENTRYPOINT [\"/usr/local/bin/partita-operator\"]"));
    let deployment = render(None)
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert!(
        operator.contains(&format!("EXPOSE {port}")),
        "the image exposes the chart's metrics port"
    );
}
