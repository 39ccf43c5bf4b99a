//! Real `partita-node` processes standing in for a set's pods: what a kubelet would run for
//! each pod, so the operator's health checks, failovers and moves act on real nodes over real
//! gRPC.
//!
//! Each pod gets its own loopback address (127.a.b.ordinal+1, with a.b unique to the test
//! process), so every node listens on the same ports, as pods do, and the operator reaches a
//! pod at its pod IP. The pods themselves are objects the test puts into the fake API, with
//! that IP and a Ready condition, as a kubelet would report them.

use super::Process;
use k8s_openapi::api::core::v1::Pod;
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::kv_client::KvClient;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tonic::transport::Channel;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The `partita-node` binary: the one cargo built beside this test (the workspace test command
/// builds every binary), built now if it is missing.
pub fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/partita-node
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps");
    let bin = dir.join("partita-node");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-q", "-p", "partita-node", "--bin", "partita-node"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "building partita-node failed");
    }
    bin
}

/// A set's pods, run as real node processes.
pub struct Nodes {
    /// The set's name.
    pub set: String,
    /// Its namespace.
    pub namespace: String,
    /// Partitions of the set.
    pub partitions: u32,
    /// The gRPC port every node listens on (at its own address).
    pub grpc_port: u16,
    /// The RESP port.
    pub resp_port: u16,
    /// The HTTP port.
    pub http_port: u16,
    net: (u8, u8),
    dir: tempfile::TempDir,
    procs: BTreeMap<usize, Process>,
}

impl Nodes {
    /// Nodes for set `set` in `namespace` with `partitions` partitions; none started yet.
    pub fn new(set: &str, namespace: &str, partitions: u32) -> Self {
        let n = std::process::id()
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
        // 127.a.b.x with a in 100..=249 and b in 1..=254: away from 127.0.0.x, which other tests use.
        let net = (100 + (n % 150) as u8, 1 + ((n / 150) % 254) as u8);
        Self {
            set: set.into(),
            namespace: namespace.into(),
            partitions,
            grpc_port: super::free_port(),
            resp_port: super::free_port(),
            http_port: super::free_port(),
            net,
            dir: tempfile::tempdir().expect("a temporary directory"),
            procs: BTreeMap::new(),
        }
    }

    /// Pod `ordinal`'s IP.
    pub fn ip(&self, ordinal: usize) -> String {
        format!("127.{}.{}.{}", self.net.0, self.net.1, ordinal + 1)
    }

    /// Pod `ordinal`'s name.
    pub fn name(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", self.set)
    }

    /// The ordinal of pod `name`.
    pub fn ordinal(&self, name: &str) -> usize {
        name.rsplit_once('-')
            .and_then(|(_, o)| o.parse().ok())
            .expect("a pod name ends in its ordinal")
    }

    /// Starts pod `ordinal`'s node (its data directory survives restarts) and waits until it
    /// answers its readiness probe.
    pub async fn start(&mut self, ordinal: usize) {
        let ip = self.ip(ordinal);
        let data = self.dir.path().join(self.name(ordinal));
        let child = Command::new(node_binary())
            .args([
                "--node-id",
                &self.name(ordinal),
                "--data-dir",
                data.to_str().expect("a UTF-8 path"),
                "--grpc-listen",
                &format!("{ip}:{}", self.grpc_port),
                "--resp-listen",
                &format!("{ip}:{}", self.resp_port),
                "--http-listen",
                &format!("{ip}:{}", self.http_port),
                "--partitions",
                &self.partitions.to_string(),
                "--advertise-host",
                &ip,
                "--heartbeat-ms",
                "100",
                "--fsync",
                "always",
            ])
            .env("PARTITA_LOG_FORMAT", "text")
            .env("PARTITA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("partita-node starts");
        self.procs.insert(ordinal, Process(child));
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.ready(ordinal) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "node {ordinal} did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether node `ordinal` answers `/readyz` with 200.
    pub fn ready(&self, ordinal: usize) -> bool {
        use std::io::{Read, Write};
        let addr = format!("{}:{}", self.ip(ordinal), self.http_port);
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(
            s,
            "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }

    /// SIGKILLs node `ordinal`.
    pub fn kill(&mut self, ordinal: usize) {
        if let Some(mut p) = self.procs.remove(&ordinal) {
            p.0.kill().expect("kill");
            p.0.wait().expect("wait");
        }
    }

    /// SIGSTOPs or SIGCONTs node `ordinal`.
    pub fn freeze(&self, ordinal: usize, frozen: bool) {
        let pid = self.procs[&ordinal].0.id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Pod `ordinal` as the kubelet reports it: the set's labels, its IP, Ready.
    pub fn pod(&self, ordinal: usize) -> Pod {
        let mut pod = super::ready_pod(&self.set, &self.namespace, ordinal);
        if let Some(status) = pod.status.as_mut() {
            status.pod_ip = Some(self.ip(ordinal));
        }
        pod
    }

    /// An Admin client of node `ordinal`.
    pub async fn admin(&self, ordinal: usize) -> Option<AdminClient<Channel>> {
        let ch = self.channel(ordinal).await?;
        Some(AdminClient::new(ch))
    }

    /// A KV client of node `ordinal`.
    pub async fn kv(&self, ordinal: usize) -> Option<KvClient<Channel>> {
        let ch = self.channel(ordinal).await?;
        Some(KvClient::new(ch))
    }

    async fn channel(&self, ordinal: usize) -> Option<Channel> {
        let uri = format!("http://{}:{}", self.ip(ordinal), self.grpc_port);
        let endpoint = Channel::from_shared(uri)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10));
        tokio::time::timeout(Duration::from_secs(2), endpoint.connect())
            .await
            .ok()?
            .ok()
    }

    /// The status of node `ordinal`, or `None` if it does not answer.
    pub async fn status(&self, ordinal: usize) -> Option<partita_node::proto::NodeStatus> {
        let mut admin = self.admin(ordinal).await?;
        let req = partita_node::proto::StatusRequest { partitions: None };
        tokio::time::timeout(Duration::from_secs(2), admin.status(req))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }
}

/// Plays the StatefulSet controller and the kubelets through a rolling update of pods
/// `0..count` of the set, while a running operator drives it: the StatefulSet's
/// `updateRevision` moves on, the pods stay on the old one (OnDelete), and every pod the
/// operator deletes is recreated from the new revision with its node restarted on its own data.
/// Returns the ordinals in the order they were restarted, once every pod runs the new revision
/// and the set is Ready again. Panics if more than one pod is down at once, or past `deadline`.
pub async fn roll_out(
    api: &super::FakeApi,
    nodes: &mut Nodes,
    count: usize,
    deadline: Duration,
) -> Vec<usize> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use partita_api::{Phase, ReplicatedPartitionSet};
    use serde_json::json;
    let (ns, set) = (nodes.namespace.clone(), nodes.set.clone());
    let label = |api: &super::FakeApi, i: usize, rev: &str| {
        let rev = rev.to_string();
        api.edit::<Pod>(&ns, &format!("{set}-{i}"), move |pod| {
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(rev)
        });
    };
    for i in 0..count {
        label(api, i, "rev-old");
    }
    api.edit::<StatefulSet>(&ns, &set, move |sts| {
        sts["status"] = json!({"replicas": count, "observedGeneration": sts["metadata"]["generation"],
            "currentRevision": "rev-old", "updateRevision": "rev-new"});
    });
    let mut restarted = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let missing: Vec<usize> = (0..count)
            .filter(|i| api.get::<Pod>(&ns, &format!("{set}-{i}")).is_none())
            .collect();
        assert!(
            missing.len() <= 1,
            "more than one pod down at once: {missing:?}"
        );
        for i in missing {
            nodes.kill(i);
            nodes.start(i).await;
            api.insert(&nodes.pod(i));
            label(api, i, "rev-new");
            restarted.push(i);
        }
        let phase = api
            .get::<ReplicatedPartitionSet>(&ns, &set)
            .and_then(|s| s.status)
            .and_then(|s| s.phase);
        if restarted.len() >= count && phase == Some(Phase::Ready) {
            return restarted;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the rolling update did not finish: restarted {restarted:?}, phase {phase:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
