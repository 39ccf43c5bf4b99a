//! The real `partita-operator` process against the in-memory API server served over HTTP on
//! loopback (with watches): it leads, reconciles a set as its pods come up and as it is scaled,
//! serves its endpoints, logs JSON, and on SIGTERM finishes and releases its lease.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::nodes::Nodes;
use common::{FakeApi, Process, free_port, http_get, wait_until};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use partita_api::{Phase, ReplicatedPartitionSet};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_process_leads_reconciles_and_shuts_down_gracefully() {
    let api = FakeApi::new();
    let addr = api.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = FakeApi::kubeconfig(addr, dir.path());
    let port = free_port();
    let log_path = dir.path().join("operator.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut nodes = Nodes::new("orders", "shop", 16);
    let child = Command::new(env!("CARGO_BIN_EXE_partita-operator"))
        .args([
            "--identity",
            "operator-0",
            "--lease-namespace",
            "partita-system",
        ])
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--node-grpc-port", &nodes.grpc_port.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("PARTITA_LOG", "info")
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut operator = Process(child);

    wait_until("/readyz", DEADLINE, || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    })
    .await;
    let holder = || {
        api.get::<Lease>("partita-system", "partita-operator-leader")?
            .spec?
            .holder_identity
    };
    wait_until("the lease", DEADLINE, || {
        holder().as_deref() == Some("operator-0")
    })
    .await;

    let mut set = ReplicatedPartitionSet::new("orders", serde_yaml::from_str("nodes: 3").unwrap());
    set.metadata.namespace = Some("shop".into());
    api.insert(&set);
    let phase = || {
        api.get::<ReplicatedPartitionSet>("shop", "orders")?
            .status?
            .phase
    };
    wait_until("the set to provision", DEADLINE, || {
        phase() == Some(Phase::Provisioning)
    })
    .await;
    assert!(api.get::<StatefulSet>("shop", "orders").is_some());

    // Pods becoming ready reach the operator through its Pod watch; their nodes are real.
    for i in 0..3 {
        nodes.start(i).await;
        api.insert(&nodes.pod(i));
    }
    wait_until("the set to be ready", DEADLINE, || {
        phase() == Some(Phase::Ready)
    })
    .await;

    // A spec change reaches it through the set's watch.
    api.edit::<ReplicatedPartitionSet>("shop", "orders", |o| o["spec"]["nodes"] = json!(4));
    let replicas = || {
        api.get::<StatefulSet>("shop", "orders")
            .and_then(|s| s.spec.replicas)
    };
    wait_until("the scale-up", DEADLINE, || replicas() == Some(4)).await;

    let (code, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l == "partita_operator_leader 1"),
        "{metrics}"
    );
    let reconciles: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("partita_operator_reconciliations_total "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(reconciles >= 3, "{reconciles} reconciles");

    // SIGTERM: a clean exit that releases the lease.
    let status = operator.terminate(DEADLINE).await;
    assert!(status.success(), "exit status {status}");
    assert_eq!(holder(), None, "the lease was not released");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        logs.contains("became the leader") && logs.contains("released the leader lease"),
        "{logs}"
    );
}
