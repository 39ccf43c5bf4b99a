//! The contract between the operator's pod spec and `partita-node`: a real node started with
//! exactly the environment a pod of the StatefulSet gets (the ConfigMap's variables plus the
//! downward-API ones) comes up ready, with the configured partitions, unassigned until the
//! operator gives them roles. The only substitutions are the ones a pod's own network
//! namespace and volume make unnecessary: loopback ports instead of `0.0.0.0`, a temporary
//! directory instead of `/data`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::wait_until;
use partita_api::ReplicatedPartitionSet;
use partita_operator::resources::{self, ports};
use partita_operator::validate::{Existing, validate};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// `target/<profile>/partita-node`, built first if this run did not build it.
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("partita-node");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "partita-node", "--bin", "partita-node"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building partita-node failed"
        );
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request(port: u16, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(bytes).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n\r\n")
            || (out.starts_with(b"$") && out.ends_with(b"\r\n") && out.len() > 4)
        {
            break;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_node_started_with_the_pods_environment_comes_up_with_the_sets_configuration() {
    let mut rps = ReplicatedPartitionSet::new(
        "orders",
        serde_yaml::from_str("nodes: 3\npartitions: 24\nwriteConcern: All").unwrap(),
    );
    rps.metadata.namespace = Some("shop".into());
    rps.metadata.uid = Some("uid".into());
    let valid = validate(&rps.spec, "partita/partita-node:test", &Existing::default()).unwrap();
    let desired = resources::desired(&rps, &valid).unwrap();
    let container = desired
        .statefulset
        .spec
        .template
        .spec
        .clone()
        .unwrap()
        .containers[0]
        .clone();
    assert_eq!(
        container.command.as_deref(),
        Some(&["partita-node".to_string()][..])
    );
    assert!(
        container.args.is_none(),
        "the node is configured by environment only"
    );

    let data = tempfile::tempdir().unwrap();
    let (resp, grpc, http) = (free_port(), free_port(), free_port());
    let mut env = desired.config_map.data.clone().unwrap();
    let swap = |v: &mut String, from: i32, to: u16| {
        assert_eq!(*v, format!("0.0.0.0:{from}"));
        *v = format!("127.0.0.1:{to}");
    };
    swap(
        env.get_mut("PARTITA_RESP_LISTEN").unwrap(),
        ports::RESP,
        resp,
    );
    swap(
        env.get_mut("PARTITA_GRPC_LISTEN").unwrap(),
        ports::GRPC,
        grpc,
    );
    swap(
        env.get_mut("PARTITA_HTTP_LISTEN").unwrap(),
        ports::HTTP,
        http,
    );
    assert_eq!(env["PARTITA_DATA_DIR"], "/data");
    env.insert("PARTITA_DATA_DIR".into(), data.path().display().to_string());
    // The downward API: the pod's name and IP.
    for var in container.env.unwrap() {
        let value = match var
            .value_from
            .unwrap()
            .field_ref
            .unwrap()
            .field_path
            .as_str()
        {
            "metadata.name" => "orders-0",
            "status.podIP" => "127.0.0.1",
            other => panic!("unexpected field {other}"),
        };
        env.insert(var.name, value.into());
    }

    let node = Node(
        Command::new(node_binary())
            .env_clear()
            .envs(&env)
            .spawn()
            .unwrap(),
    );
    let ready = || {
        request(
            http,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };
    wait_until("the node to be ready", Duration::from_secs(30), || {
        ready().is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    let health = request(
        http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let info = request(resp, b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n").unwrap();
    let partitions: Vec<&str> = info
        .lines()
        .filter(|l| l.starts_with("partition"))
        .collect();
    assert_eq!(partitions.len(), 24, "{info}");
    assert!(
        partitions.iter().all(|l| l.contains("role=unassigned")),
        "{info}"
    );
    // Unassigned, the node refuses writes rather than accepting them as a primary.
    let set = request(resp, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
    assert!(
        set.starts_with('-'),
        "an unassigned node accepted a write: {set}"
    );
    drop(node);
}
