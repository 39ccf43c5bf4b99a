//! The box's StatefulSet controller and kubelet, with real `partita-node` processes and real
//! sockets, against the in-memory API: the operator's own StatefulSet becomes pods that run,
//! answer at their pod IPs, restart, freeze, lose their network, go away gracefully and come
//! back on their data.
//!
//! Each test takes its own loopback net (127.A.B.0/24 with A fixed per test and B free at the
//! time), so tests run in parallel, in one process or many.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use partita_api::{ReplicatedPartitionSet, ReplicatedPartitionSetSpec};
use partita_e2e::api::MemoryApi;
use partita_e2e::kubelet::proxy::Proxy;
use partita_e2e::kubelet::{Kubelet, KubeletConfig, free_net};
use partita_e2e::statefulset;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "partita";
const RESP: u16 = 6379;
const WAIT: Duration = Duration::from_secs(30);

/// The `partita-node` binary the box finds, built first if it is missing.
fn node_binary() -> PathBuf {
    if let Ok(bin) = partita_e2e::inbox::node_binary() {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "partita-node", "--bin", "partita-node"])
        .status()
        .unwrap();
    assert!(built.success(), "building partita-node failed");
    partita_e2e::inbox::node_binary().unwrap()
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `probe` every 50 ms until it yields a value; panics after `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a RESP PING to `addr`: `true` on `+PONG` within a second.
async fn ping(addr: SocketAddr) -> bool {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(got.starts_with(b"+PONG"))
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

fn revision_label(pod: &Pod) -> String {
    pod.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

/// An environment variable of process `pid`, read from /proc.
fn process_env(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}="))
            .map(ToString::to_string)
    })
}

/// Whether process `pid` is gone (or a zombie).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The operator's own ConfigMap and StatefulSet for a set of `nodes` nodes, without the owner
/// reference to a ReplicatedPartitionSet (there is none here, and the garbage collector would
/// take objects whose owner is missing).
fn operator_objects(set: &str, nodes: i32) -> (ConfigMap, StatefulSet) {
    let spec: ReplicatedPartitionSetSpec = serde_json::from_value(serde_json::json!({
        "nodes": nodes,
        "partitions": 4,
        "replicationFactor": 1,
    }))
    .unwrap();
    let mut rps = ReplicatedPartitionSet::new(set, spec.clone());
    rps.metadata.namespace = Some(NS.into());
    rps.metadata.uid = Some(format!("{set}-rps-uid"));
    let valid = partita_operator::validate::validate(
        &spec,
        "partita/partita-node:dev",
        &partita_operator::validate::Existing::default(),
    )
    .unwrap();
    let desired = partita_operator::resources::desired(&rps, &valid).unwrap();
    let mut cm = desired.config_map;
    let mut sts = desired.statefulset;
    cm.metadata.owner_references = None;
    sts.metadata.owner_references = None;
    (cm, sts)
}

/// A box with the StatefulSet controller and a kubelet on net 127.`a`.x.
struct Fixture {
    _api: MemoryApi,
    client: Client,
    kubelet: Option<Kubelet>,
    root: tempfile::TempDir,
    stop_controller: Option<oneshot::Sender<()>>,
    controller: Option<JoinHandle<partita_e2e::Result<()>>>,
}

impl Fixture {
    async fn start(a: u8) -> Self {
        init_tracing();
        let api = MemoryApi::new();
        let client = api.client();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        let net = free_net(a).unwrap();
        let mut config = KubeletConfig::new("partita-box", node_binary(), root.path(), net);
        config.namespace = Some(NS.into());
        config.stop_timeout = Duration::from_secs(3);
        let kubelet = Kubelet::start(client.clone(), config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let controller = tokio::spawn(statefulset::run(
            client.clone(),
            Some(NS.into()),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            _api: api,
            client,
            kubelet: Some(kubelet),
            root,
            stop_controller: Some(stop),
            controller: Some(controller),
        }
    }

    fn kubelet(&self) -> &Kubelet {
        self.kubelet.as_ref().unwrap()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn apply_set(&self, set: &str, nodes: i32) -> StatefulSet {
        let (cm, sts) = operator_objects(set, nodes);
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), NS);
        maps.create(&PostParams::default(), &cm).await.unwrap();
        self.sets()
            .create(&PostParams::default(), &sts)
            .await
            .unwrap()
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.unwrap()
    }

    /// Waits until pod `name` is Ready (and not being deleted), and returns it.
    async fn ready_pod(&self, name: &str) -> Pod {
        eventually(&format!("pod {name} Ready"), || async {
            self.pod(name)
                .await
                .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
        })
        .await
    }

    /// Waits until pods `set-0 .. set-(n-1)` are Ready and answer PING at their pod IPs.
    async fn serving(&self, set: &str, n: i32) -> Vec<Pod> {
        let mut pods = Vec::new();
        for i in 0..n {
            let pod = self.ready_pod(&format!("{set}-{i}")).await;
            let ip = pod_ip(&pod).expect("a ready pod has an IP");
            eventually(&format!("{set}-{i} answering PING"), || async {
                ping(SocketAddr::from((ip, RESP))).await.then_some(())
            })
            .await;
            pods.push(pod);
        }
        pods
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop_controller.take() {
            let _ = stop.send(());
        }
        if let Some(controller) = self.controller.take() {
            controller.await.unwrap().unwrap();
        }
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_forwards_cuts_heals_and_caps_connections() {
    init_tracing();
    let (a, b) = free_net(40).unwrap();
    let outer = Ipv4Addr::new(127, a, b, 1);
    let inner = Ipv4Addr::new(127, a, b, 129);
    // An echo server at the inner address.
    let server = TcpListener::bind((inner, 0)).await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = server.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = Proxy::start(outer, inner, &[port], 2).await.unwrap();
    assert_eq!(proxy.listening(), &[SocketAddr::from((outer, port))]);
    let at = SocketAddr::from((outer, port));
    async fn echo(s: &mut TcpStream) -> bool {
        let exchange = async {
            s.write_all(b"hello").await.ok()?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.ok()?;
            Some(&buf == b"hello")
        };
        tokio::time::timeout(Duration::from_secs(1), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
    let mut first = TcpStream::connect(at).await.unwrap();
    assert!(echo(&mut first).await, "the proxy forwards");

    // At most two connections: a third is closed at once.
    let mut second = TcpStream::connect(at).await.unwrap();
    assert!(echo(&mut second).await);
    // A connection past the cap is reset: at connect, or at its first exchange.
    if let Ok(mut third) = TcpStream::connect(at).await {
        assert!(
            !echo(&mut third).await,
            "a connection past the cap is closed"
        );
    }
    drop(second);

    proxy.cut().await;
    assert!(proxy.is_cut());
    assert!(!echo(&mut first).await, "a cut drops open connections");
    // A new connection is reset: at connect, or at its first exchange.
    if let Ok(mut during) = TcpStream::connect(at).await {
        assert!(!echo(&mut during).await, "a cut refuses new connections");
    }

    proxy.heal();
    let mut after = eventually("a connection after heal", || async {
        let mut s = TcpStream::connect(at).await.ok()?;
        echo(&mut s).await.then_some(s)
    })
    .await;
    assert!(echo(&mut after).await);

    proxy.close().await;
    assert!(
        TcpListener::bind(at).await.is_ok(),
        "a closed proxy frees its address at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statefulset_pods_run_ready_and_answer_at_their_pod_ips() {
    let fx = Fixture::start(41).await;
    let sts = fx.apply_set("s", 3).await;
    let pods = fx.serving("s", 3).await;

    let ips: std::collections::BTreeSet<Ipv4Addr> =
        pods.iter().map(|p| pod_ip(p).unwrap()).collect();
    assert_eq!(ips.len(), 3, "distinct pod IPs");
    let net = fx.kubelet().config().net;
    for pod in &pods {
        let name = pod.name_any();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("partita-box"), "bound");
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        let ip = pod_ip(pod).unwrap();
        assert_eq!(ip.octets()[..3], [127, net.0, net.1]);
        assert_eq!(fx.kubelet().pod_ip(NS, &name), Some(ip));
        let owner = &pod.owner_references()[0];
        assert_eq!(owner.kind, "StatefulSet");
        assert_eq!(owner.controller, Some(true));
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(
            status.host_ip.as_deref(),
            Some(fx.kubelet().host_ip().to_string().as_str())
        );
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert!(container.ready && container.started == Some(true));
        assert!(container.state.as_ref().unwrap().running.is_some());
        // The node listens on the inner address and advertises the pod IP.
        let pid = fx.kubelet().pid(NS, &name).unwrap();
        let inner = fx.kubelet().addresses(NS, &name).unwrap().inner;
        assert_eq!(
            process_env(pid, "PARTITA_RESP_LISTEN"),
            Some(format!("{inner}:{RESP}"))
        );
        assert_eq!(
            process_env(pid, "PARTITA_ADVERTISE_HOST"),
            Some(ip.to_string())
        );
        assert_eq!(process_env(pid, "PARTITA_NODE_ID"), Some(name.clone()));
        let data = fx
            .root
            .path()
            .join("volumes")
            .join(NS)
            .join(format!("data-{name}"));
        assert_eq!(
            process_env(pid, "PARTITA_DATA_DIR").map(PathBuf::from),
            Some(data)
        );
    }

    // Claims exist, are Bound and carry the set's labels.
    for i in 0..3 {
        let claim = fx.claims().get(&format!("data-s-{i}")).await.unwrap();
        assert_eq!(
            claim.status.as_ref().unwrap().phase.as_deref(),
            Some("Bound")
        );
        assert_eq!(
            claim.labels().get("partita.dev/set").map(String::as_str),
            Some("s")
        );
    }
    // The node is registered and Ready.
    let nodes: Api<Node> = Api::all(fx.client.clone());
    let node = nodes.get("partita-box").await.unwrap();
    let conditions = node.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    // The set's status.
    let status = eventually("the set's status", || async {
        let s = fx.sets().get("s").await.ok()?.status?;
        (s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.available_replicas, Some(3));
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.observed_generation, sts.metadata.generation);
    let revision = status.update_revision.unwrap();
    assert!(pods.iter().all(|p| revision_label(p) == revision));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_container_is_restarted_at_the_same_address() {
    let fx = Fixture::start(42).await;
    fx.apply_set("k", 1).await;
    let pod = fx.serving("k", 1).await.remove(0);
    let ip = pod_ip(&pod).unwrap();
    let pid = fx.kubelet().pid(NS, "k-0").unwrap();

    fx.kubelet().kill(NS, "k-0").await.unwrap();
    let restarted = eventually("k-0 restarted and Ready", || async {
        fx.pod("k-0").await.filter(|p| restarts(p) == 1 && ready(p))
    })
    .await;
    assert_eq!(pod_ip(&restarted), Some(ip), "same pod IP");
    let container = &restarted.status.unwrap().container_statuses.unwrap()[0];
    let last = container
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 137, "SIGKILLed");
    assert_ne!(fx.kubelet().pid(NS, "k-0"), Some(pid), "a new process");
    assert!(process_gone(pid));
    eventually("the restarted node answering", || async {
        ping(SocketAddr::from((ip, RESP))).await.then_some(())
    })
    .await;
    assert!(fx.kubelet().log_path(NS, "k-0", 0).exists());
    assert!(fx.kubelet().log_path(NS, "k-0", 1).exists());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_killed_for_a_while_stays_down_that_long_then_returns() {
    let fx = Fixture::start(60).await;
    fx.apply_set("h", 1).await;
    let pod = fx.serving("h", 1).await.remove(0);
    let at = SocketAddr::from((pod_ip(&pod).unwrap(), RESP));
    let down_for = std::time::Duration::from_secs(2);

    let killed = std::time::Instant::now();
    fx.kubelet().kill_for(NS, "h-0", down_for).await.unwrap();
    eventually("h-0 not answering", || async {
        (!ping(at).await).then_some(())
    })
    .await;
    eventually("h-0 restarted, Ready and answering", || async {
        let p = fx
            .pod("h-0")
            .await
            .filter(|p| restarts(p) == 1 && ready(p))?;
        ping(at).await.then_some(p)
    })
    .await;
    assert!(
        killed.elapsed() >= down_for,
        "back after {:?}, before the {down_for:?} it was to stay down",
        killed.elapsed()
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_node_stops_answering_until_thawed() {
    let fx = Fixture::start(43).await;
    fx.apply_set("f", 1).await;
    let pod = fx.serving("f", 1).await.remove(0);
    let at = SocketAddr::from((pod_ip(&pod).unwrap(), RESP));

    fx.kubelet().freeze(NS, "f-0").await.unwrap();
    assert!(!ping(at).await, "a frozen node does not answer");
    eventually("f-0 not Ready while frozen", || async {
        fx.pod("f-0").await.filter(|p| !ready(p))
    })
    .await;
    fx.kubelet().thaw(NS, "f-0").await.unwrap();
    // A thawed process first works off what piled up while it was stopped: wait for its
    // answer with the test's deadline rather than one 1 s try.
    eventually("the thawed node answering", || async {
        ping(at).await.then_some(())
    })
    .await;
    let pod = fx.ready_pod("f-0").await;
    assert_eq!(restarts(&pod), 0, "freezing is not a restart");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_pod_is_unreachable_until_healed() {
    let fx = Fixture::start(44).await;
    fx.apply_set("c", 1).await;
    let pod = fx.serving("c", 1).await.remove(0);
    let at = SocketAddr::from((pod_ip(&pod).unwrap(), RESP));
    let mut open = TcpStream::connect(at).await.unwrap();

    fx.kubelet().cut(NS, "c-0").await.unwrap();
    assert!(!ping(at).await, "new connections fail");
    let mut buf = [0u8; 16];
    let _ = open.write_all(b"*1\r\n$4\r\nPING\r\n").await;
    let read = tokio::time::timeout(Duration::from_secs(1), open.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "open connections are dropped: {read:?}"
    );
    // The process runs on: the kubelet's probes do not cross the pod network.
    let pod = fx.pod("c-0").await.unwrap();
    assert!(ready(&pod));

    fx.kubelet().heal(NS, "c-0").await.unwrap();
    assert!(ping(at).await, "healed");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_pod_stops_gracefully_and_returns_on_its_data() {
    let fx = Fixture::start(45).await;
    fx.apply_set("d", 1).await;
    let pod = fx.serving("d", 1).await.remove(0);
    let old_uid = pod.uid().unwrap();
    let pid = fx.kubelet().pid(NS, "d-0").unwrap();
    let data = PathBuf::from(process_env(pid, "PARTITA_DATA_DIR").unwrap());
    std::fs::write(data.join("marker"), "kept").unwrap();
    let tmp = fx
        .root
        .path()
        .join("pods")
        .join(NS)
        .join(format!("d-0-{old_uid}"))
        .join("tmp");
    assert!(tmp.is_dir(), "the emptyDir exists while the pod runs");

    let started = Instant::now();
    fx.pods()
        .delete("d-0", &DeleteParams::default())
        .await
        .unwrap();
    let back = eventually("d-0 recreated and Ready", || async {
        fx.pod("d-0")
            .await
            .filter(|p| p.uid().as_deref() != Some(old_uid.as_str()) && ready(p))
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "SIGTERM stopped the node well within its 60 s grace period"
    );
    assert!(process_gone(pid));
    assert!(!tmp.exists(), "the old pod's emptyDir is removed");
    let new_pid = fx.kubelet().pid(NS, "d-0").unwrap();
    assert_eq!(
        process_env(new_pid, "PARTITA_DATA_DIR").map(PathBuf::from),
        Some(data.clone()),
        "the same volume"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("marker")).unwrap(),
        "kept"
    );
    assert_eq!(restarts(&back), 0);
    eventually("the new d-0 answering", || async {
        ping(SocketAddr::from((pod_ip(&back)?, RESP)))
            .await
            .then_some(())
    })
    .await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_removes_the_highest_pods_and_honours_claim_retention() {
    let fx = Fixture::start(46).await;
    fx.apply_set("r", 3).await;
    fx.serving("r", 3).await;
    let pid2 = fx.kubelet().pid(NS, "r-2").unwrap();
    let patch = PatchParams::default();

    // Retain (the operator's choice): the pod goes, its claim stays.
    let body = serde_json::json!({ "spec": { "replicas": 2 } });
    fx.sets()
        .patch("r", &patch, &Patch::Merge(&body))
        .await
        .unwrap();
    eventually("r-2 gone", || async {
        fx.pod("r-2").await.is_none().then_some(())
    })
    .await;
    assert!(process_gone(pid2));
    assert!(fx.claims().get_opt("data-r-2").await.unwrap().is_some());
    assert!(fx.pod("r-0").await.is_some() && fx.pod("r-1").await.is_some());

    // Delete on scale-down: claims past the new size go once their pods have.
    let body = serde_json::json!({ "spec": {
        "replicas": 1,
        "persistentVolumeClaimRetentionPolicy": { "whenScaled": "Delete", "whenDeleted": "Retain" },
    } });
    fx.sets()
        .patch("r", &patch, &Patch::Merge(&body))
        .await
        .unwrap();
    eventually("r-1 and its claims gone", || async {
        let pod_gone = fx.pod("r-1").await.is_none();
        let claims_gone = fx.claims().get_opt("data-r-1").await.unwrap().is_none()
            && fx.claims().get_opt("data-r-2").await.unwrap().is_none();
        (pod_gone && claims_gone).then_some(())
    })
    .await;
    assert!(fx.claims().get_opt("data-r-0").await.unwrap().is_some());
    let status = eventually("the set's status at one replica", || async {
        let s = fx.sets().get("r").await.ok()?.status?;
        (s.replicas == 1 && s.ready_replicas == Some(1)).then_some(s)
    })
    .await;
    assert_eq!(status.current_revision, status.update_revision);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_delete_updates_only_pods_that_are_deleted() {
    let fx = Fixture::start(47).await;
    fx.apply_set("u", 2).await;
    fx.serving("u", 2).await;
    let old = eventually("the first revision", || async {
        let s = fx.sets().get("u").await.ok()?.status?;
        (s.ready_replicas == Some(2)).then_some(s.update_revision?)
    })
    .await;
    let pids: Vec<u32> = (0..2)
        .map(|i| fx.kubelet().pid(NS, &format!("u-{i}")).unwrap())
        .collect();

    let body = serde_json::json!({ "spec": { "template": { "metadata": {
        "annotations": { "partita.dev/config-hash": "changed" } } } } });
    let changed = fx
        .sets()
        .patch("u", &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap();
    let status = eventually("a new update revision", || async {
        let s = fx.sets().get("u").await.ok()?.status?;
        (s.observed_generation == changed.metadata.generation).then_some(s)
    })
    .await;
    let new = status.update_revision.clone().unwrap();
    assert_ne!(new, old);
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    assert_eq!(status.updated_replicas, Some(0));
    for (i, pid) in pids.iter().enumerate() {
        let name = format!("u-{i}");
        let pod = fx.pod(&name).await.unwrap();
        assert_eq!(revision_label(&pod), old, "OnDelete leaves {name} alone");
        assert_eq!(
            fx.kubelet().pid(NS, &name),
            Some(*pid),
            "{name} not restarted"
        );
    }

    // The operator deletes u-1: it comes back at the new revision.
    fx.pods()
        .delete("u-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("u-1 at the new revision", || async {
        fx.pod("u-1")
            .await
            .filter(|p| revision_label(p) == new && ready(p))
    })
    .await;
    let status = eventually("one pod updated", || async {
        let s = fx.sets().get("u").await.ok()?.status?;
        (s.updated_replicas == Some(1) && s.ready_replicas == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(status.current_revision.as_deref(), Some(old.as_str()));
    assert_eq!(revision_label(&fx.pod("u-0").await.unwrap()), old);

    fx.pods()
        .delete("u-0", &DeleteParams::default())
        .await
        .unwrap();
    let status = eventually("every pod updated", || async {
        let s = fx.sets().get("u").await.ok()?.status?;
        (s.updated_replicas == Some(2) && s.ready_replicas == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(status.current_revision.as_deref(), Some(new.as_str()));
    assert_eq!(status.current_replicas, Some(2));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_config_map_holds_the_container_until_it_exists() {
    let fx = Fixture::start(48).await;
    let (cm, sts) = operator_objects("m", 1);
    fx.sets()
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let waiting = eventually("m-0 waiting on its ConfigMap", || async {
        let pod = fx.pod("m-0").await?;
        let status = pod.status?.container_statuses?.into_iter().next()?;
        let waiting = status.state?.waiting?;
        (waiting.reason.as_deref() == Some("CreateContainerConfigError")).then_some(waiting)
    })
    .await;
    assert!(waiting.message.unwrap().contains("m-config"));
    let maps: Api<ConfigMap> = Api::namespaced(fx.client.clone(), NS);
    maps.create(&PostParams::default(), &cm).await.unwrap();
    fx.serving("m", 1).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsupported_image_fails_the_pod_with_a_reason() {
    let fx = Fixture::start(49).await;
    let (_, sts) = operator_objects("x", 1);
    let mut pod = statefulset::new_pod(&sts, 0, "x-rev");
    pod.metadata.owner_references = None;
    pod.metadata.namespace = Some(NS.into());
    pod.spec.as_mut().unwrap().containers[0].image = Some("nginx:1.27".into());
    fx.pods()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let failed = eventually("x-0 Failed", || async {
        let pod = fx.pod("x-0").await?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Failed")).then_some(status)
    })
    .await;
    let message = failed.message.unwrap();
    assert!(
        message.contains("nginx") && message.contains("partita-node"),
        "{message}"
    );
    assert!(failed.pod_ip.is_none());
    assert!(
        fx.kubelet().kill(NS, "x-0").await.is_err(),
        "no process to kill"
    );

    // Deleting it is still handled: the kubelet has nothing to stop and deletes it for good.
    fx.pods()
        .delete("x-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually("x-0 gone", || async {
        fx.pod("x-0").await.is_none().then_some(())
    })
    .await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_kubelet_stops_every_process() {
    let fx = Fixture::start(50).await;
    fx.apply_set("z", 2).await;
    fx.serving("z", 2).await;
    let pids: Vec<u32> = (0..2)
        .map(|i| fx.kubelet().pid(NS, &format!("z-{i}")).unwrap())
        .collect();
    let net = fx.kubelet().config().net;
    // One process frozen: stop must still end it.
    fx.kubelet().freeze(NS, "z-1").await.unwrap();
    let started = Instant::now();
    fx.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in pids {
        assert!(process_gone(pid), "process {pid} outlived the kubelet");
    }
    // The net is free again.
    assert!(partita_e2e::kubelet::net::reserve(net).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_kubelet_kills_every_process() {
    let mut fx = Fixture::start(51).await;
    fx.apply_set("y", 1).await;
    fx.serving("y", 1).await;
    let pid = fx.kubelet().pid(NS, "y-0").unwrap();
    drop(fx.kubelet.take());
    eventually("the process killed with its kubelet", || async {
        process_gone(pid).then_some(())
    })
    .await;
    fx.stop().await;
}
