//! The box's kubelet: runs every pod bound to its node as a real `partita-node` process.
//!
//! The machines that run the suite have no kubelet or container runtime, yet the operator's
//! behaviour only means something against real nodes that crash, stall and lose their network.
//! So this kubelet does, through `kube::Client` only (it works against a real kube-apiserver
//! too, given a kubeconfig), what a kubelet and the default scheduler do for the pods the
//! operator makes:
//! - registers its Node (Ready, heartbeat) and binds pending pods to it via `pods/binding`,
//!   since the box has no scheduler (see [`should_bind`]);
//! - runs each pod's container as a `partita-node` process (see [`spec`] for what it honours),
//!   in an emulated network namespace: a pod IP of its own on loopback with a proxy in front of
//!   the process (see [`net`] for the address scheme and [`proxy`] for the proxy);
//! - probes readiness, restarts exited processes with backoff, writes pod status through the
//!   status subresource (see [`status`]) only when it changed;
//! - deletes pods gracefully (SIGTERM, grace period, SIGKILL, final delete);
//! - injects faults on request: [`Kubelet::kill`], [`Kubelet::freeze`]/[`Kubelet::thaw`],
//!   [`Kubelet::cut`]/[`Kubelet::heal`].
//!
//! Not done, on purpose or for now: liveness probes (a frozen node stays frozen until thawed,
//! so scenarios decide what a hang means), the node Lease, init and multiple containers, volume
//! types other than persistentVolumeClaim and emptyDir, and ports not declared as container
//! ports (only those are proxied from the pod IP). Such pods fail with a message saying so.
//!
//! Every child process is killed when the kubelet is dropped, so none outlives a test; unsafe
//! code is forbidden here, so signals other than SIGKILL go through the `kill` command, and only
//! ever to processes this kubelet started and has not yet reaped.

pub mod net;
mod pod;
pub mod probe;
pub mod proxy;
pub mod spec;
pub mod status;

pub use net::{PodAddresses, free_net};

use crate::{Error, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, ObjectReference, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// The field manager name of the kubelet's writes.
pub const FIELD_MANAGER: &str = "partita-box-kubelet";
/// Most pods a kubelet tracks at once, counting finished ones waiting for deletion.
const MAX_TRACKED: usize = 4 * net::MAX_PODS;
/// Uids of finished pods remembered, so late watch events do not start them again.
const MAX_FINISHED: usize = 4096;

/// How an exited container is restarted: the delay starts at `initial`, doubles on every
/// restart up to `max`, and starts over once a process ran for `reset_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// How long a process must run for the delay to start over.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before the next restart, given the `previous` delay (none before the first
    /// restart) and how long the process `ran`.
    pub fn next(&self, previous: Option<Duration>, ran: Duration) -> Duration {
        let delay = match previous {
            Some(previous) if ran < self.reset_after => previous.saturating_mul(2),
            _ => self.initial,
        };
        delay.min(self.max)
    }
}

/// What the kubelet runs and how.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node's name, e.g. `partita-box`.
    pub node_name: String,
    /// The `partita-node` binary that stands for every `partita-node` image.
    pub node_binary: PathBuf,
    /// Root of volumes (`volumes/<ns>/<claim>`), pod directories (`pods/<ns>/<pod>-<uid>`) and
    /// logs (`logs/<ns>_<pod>_<restart>.log`).
    pub root: PathBuf,
    /// The loopback net `(A, B)`: pods get addresses in `127.A.B.0/24` (see [`net`]). Must not
    /// be shared with another kubelet; [`free_net`] finds a free one.
    pub net: (u8, u8),
    /// Only pods of this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Whether to bind pending pods to this node (the box has no scheduler; a real cluster
    /// does, and then this is off).
    pub schedule: bool,
    /// Most pods run at once (at most [`net::MAX_PODS`]).
    pub max_pods: usize,
    /// Most connections open through one pod's proxy.
    pub max_connections_per_pod: usize,
    /// How often probes run (in place of the probes' own `periodSeconds`, so the box notices a
    /// change within a fraction of a second).
    pub probe_period: Duration,
    /// The longest a probe waits (the probe's own `timeoutSeconds` if shorter).
    pub probe_timeout: Duration,
    /// How often the Node's Ready condition is renewed.
    pub heartbeat: Duration,
    /// How long [`Kubelet::stop`] waits for processes after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Container restart backoff.
    pub backoff: Backoff,
    /// The environment every container starts with, as an image's `ENV` (the host's own
    /// environment is not passed on). The pod's `env` overrides it.
    pub image_env: BTreeMap<String, String>,
}

impl KubeletConfig {
    /// A configuration with the defaults: all namespaces, scheduling on, 126 pods, probes every
    /// 300 ms with a 1 s timeout, heartbeat every 10 s, 5 s to stop.
    pub fn new(
        node_name: impl Into<String>,
        node_binary: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        net: (u8, u8),
    ) -> Self {
        Self {
            node_name: node_name.into(),
            node_binary: node_binary.into(),
            root: root.into(),
            net,
            namespace: None,
            schedule: true,
            max_pods: net::MAX_PODS,
            max_connections_per_pod: 1024,
            probe_period: Duration::from_millis(300),
            probe_timeout: Duration::from_secs(1),
            heartbeat: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            image_env: BTreeMap::new(),
        }
    }

    /// The node's labels, which `nodeSelector`s are matched against.
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.node_name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
        ])
    }
}

/// A fault the kubelet injects into a running pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the process (the kubelet then restarts it as usual).
    Kill,
    /// SIGKILL the process and restart it no sooner than this: a machine lost for a while
    /// rather than a crash the kubelet recovers from at once.
    KillFor(Duration),
    /// SIGSTOP the process.
    Freeze,
    /// SIGCONT the process.
    Thaw,
    /// Cut the pod's network at its proxy.
    Cut,
    /// Restore the pod's network.
    Heal,
}

/// A fault request to a pod's worker, answered once applied.
pub(crate) struct FaultRequest {
    fault: Fault,
    reply: oneshot::Sender<Result<()>>,
}

/// What the handle knows of a pod the kubelet runs.
#[derive(Debug)]
struct PodEntry {
    namespace: String,
    name: String,
    /// Creation order: of two entries for one name, the later is the live pod.
    seq: u64,
    addresses: Option<PodAddresses>,
    pid: Option<u32>,
    faults: mpsc::Sender<FaultRequest>,
}

/// State shared by the handle, the main loop and the pod workers.
struct Shared {
    client: Client,
    config: KubeletConfig,
    host_ip: Ipv4Addr,
    started: jiff::Timestamp,
    slots: Mutex<net::SlotPool>,
    pods: Mutex<BTreeMap<String, PodEntry>>,
    seq: AtomicU64,
}

impl Shared {
    fn pods_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The uid of the live entry for `namespace/name`.
    fn find(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .lock()
            .iter()
            .filter(|(_, e)| e.namespace == namespace && e.name == name)
            .max_by_key(|(_, e)| e.seq)
            .map(|(uid, _)| uid.clone())
    }

    fn update(&self, uid: &str, f: impl FnOnce(&mut PodEntry)) {
        if let Some(entry) = self.pods.lock().get_mut(uid) {
            f(entry);
        }
    }
}

/// A running kubelet. Dropping it kills every process it started; [`Kubelet::stop`] stops them
/// gracefully first.
pub struct Kubelet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node", &self.shared.config.node_name)
            .field("net", &self.shared.config.net)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// Reserves the net, registers the Node and starts running pods. Fails if the net is taken,
    /// the binary is missing or the Node cannot be registered.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Self> {
        if !config.node_binary.is_file() {
            return Err(Error::Invalid(format!(
                "the node binary {} does not exist",
                config.node_binary.display()
            )));
        }
        let reservation = net::reserve(config.net)?;
        for dir in ["volumes", "pods", "logs"] {
            let path = config.root.join(dir);
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|source| Error::Io {
                    what: format!("creating {}", path.display()),
                    source,
                })?;
        }
        let shared = Arc::new(Shared {
            client,
            host_ip: net::host_ip(config.net),
            started: jiff::Timestamp::now(),
            slots: Mutex::new(net::SlotPool::new(config.max_pods)),
            pods: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            config,
        });
        register_node(&shared).await?;
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(main_loop(shared.clone(), stopping, reservation));
        Ok(Self {
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    /// The node's IP (`hostIP` of its pods).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.shared.host_ip
    }

    /// The configuration the kubelet runs with.
    pub fn config(&self) -> &KubeletConfig {
        &self.shared.config
    }

    /// The pod IP of pod `namespace/name`, if the kubelet runs it.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        self.addresses(namespace, name).map(|a| a.ip)
    }

    /// The pod IP and inner address of pod `namespace/name`, if the kubelet runs it.
    pub fn addresses(&self, namespace: &str, name: &str) -> Option<PodAddresses> {
        let uid = self.shared.find(namespace, name)?;
        self.shared.pods.lock().get(&uid)?.addresses
    }

    /// The process id of pod `namespace/name`'s running process.
    pub fn pid(&self, namespace: &str, name: &str) -> Option<u32> {
        let uid = self.shared.find(namespace, name)?;
        self.shared.pods.lock().get(&uid)?.pid
    }

    /// The pods the kubelet runs, as `(namespace, name)`.
    pub fn pods(&self) -> Vec<(String, String)> {
        let pods = self.shared.pods.lock();
        let names: BTreeSet<(String, String)> = pods
            .values()
            .map(|e| (e.namespace.clone(), e.name.clone()))
            .collect();
        names.into_iter().collect()
    }

    /// The log file of run `restart` (0 for the first) of pod `namespace/name`'s container.
    pub fn log_path(&self, namespace: &str, name: &str, restart: i32) -> PathBuf {
        pod::log_path(&self.shared.config.root, namespace, name, restart)
    }

    /// Injects `fault` into pod `namespace/name`. Fails if the kubelet does not run the pod, or
    /// (for kill, freeze and thaw) the pod has no running process.
    pub async fn inject(&self, namespace: &str, name: &str, fault: Fault) -> Result<()> {
        let missing = || Error::Invalid(format!("the kubelet runs no pod {namespace}/{name}"));
        let uid = self.shared.find(namespace, name).ok_or_else(missing)?;
        let sender = self
            .shared
            .pods
            .lock()
            .get(&uid)
            .map(|e| e.faults.clone())
            .ok_or_else(missing)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(FaultRequest { fault, reply })
            .await
            .map_err(|_| missing())?;
        answer.await.map_err(|_| missing())?
    }

    /// SIGKILLs pod `namespace/name`'s process; the kubelet restarts it as after a crash.
    pub async fn kill(&self, namespace: &str, name: &str) -> Result<()> {
        self.inject(namespace, name, Fault::Kill).await
    }

    /// SIGKILLs pod `namespace/name`'s process and keeps it down for at least `down_for`
    /// before the usual restart, with its address and volumes kept.
    pub async fn kill_for(&self, namespace: &str, name: &str, down_for: Duration) -> Result<()> {
        self.inject(namespace, name, Fault::KillFor(down_for)).await
    }

    /// SIGSTOPs pod `namespace/name`'s process.
    pub async fn freeze(&self, namespace: &str, name: &str) -> Result<()> {
        self.inject(namespace, name, Fault::Freeze).await
    }

    /// SIGCONTs pod `namespace/name`'s process.
    pub async fn thaw(&self, namespace: &str, name: &str) -> Result<()> {
        self.inject(namespace, name, Fault::Thaw).await
    }

    /// Cuts pod `namespace/name` off: every connection to its pod IP is reset, new ones too,
    /// until [`Kubelet::heal`]. The process keeps running and stays Ready (probes do not cross
    /// the pod network).
    pub async fn cut(&self, namespace: &str, name: &str) -> Result<()> {
        self.inject(namespace, name, Fault::Cut).await
    }

    /// Reconnects pod `namespace/name`.
    pub async fn heal(&self, namespace: &str, name: &str) -> Result<()> {
        self.inject(namespace, name, Fault::Heal).await
    }

    /// Stops the kubelet: SIGTERM to every process, SIGKILL to those still running after
    /// `stop_timeout`, proxies closed, the net released. Pods stay in the API, as when a real
    /// kubelet stops.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::Check(format!("the kubelet task failed: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Whether the box's scheduler binds `pod` to the node `node` with labels `labels`: the pod is
/// not bound yet, not being deleted, not finished, asks for the default scheduler, and its
/// `nodeSelector` matches. (Affinity and topology spread are preferences or, for a single-node
/// box, unsatisfiable rules the box ignores.)
pub fn should_bind(pod: &Pod, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s == "default-scheduler")
        && spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
}

async fn bind(shared: &Shared, pod: &Pod) -> Result<()> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(shared.config.node_name.clone()),
            ..ObjectReference::default()
        },
    };
    let api = shared.pods_api(&namespace);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already bound (by us or another kubelet) or gone: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn register_node(shared: &Shared) -> Result<()> {
    let config = &shared.config;
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(config.node_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!("127.{}.{}.0/24", config.net.0, config.net.1)),
            ..NodeSpec::default()
        }),
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    heartbeat(shared).await
}

async fn heartbeat(shared: &Shared) -> Result<()> {
    let config = &shared.config;
    let now = Time(jiff::Timestamp::now());
    let since = Time(shared.started);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since.clone()),
    };
    let pods = Quantity(config.max_pods.min(net::MAX_PODS).to_string());
    let capacity = BTreeMap::from([("pods".to_string(), pods)]);
    let status = NodeStatus {
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "the box kubelet is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: shared.host_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.node_name.clone(),
            },
        ]),
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        ..NodeStatus::default()
    };
    let nodes: Api<Node> = Api::all(shared.client.clone());
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// What woke the main loop.
enum Wake {
    /// A pod watch event (`None`: the watch ended).
    Watch(Box<Option<Result<watcher::Event<Pod>, watcher::Error>>>),
    /// Time for a heartbeat.
    Beat,
    /// A pod worker finished.
    Finished(Result<String, tokio::task::JoinError>),
    /// The kubelet stops.
    Stop,
}

/// The pods the main loop has handed to workers, and the uids of finished ones.
struct Workers {
    live: BTreeMap<String, watch::Sender<Option<Arc<Pod>>>>,
    tasks: JoinSet<String>,
    finished: BTreeSet<String>,
    finished_order: VecDeque<String>,
}

impl Workers {
    fn finish(&mut self, uid: String) {
        self.live.remove(&uid);
        if self.finished.insert(uid.clone()) {
            self.finished_order.push_back(uid);
        }
        while self.finished_order.len() > MAX_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Tells the worker of `uid` that its pod is gone from the API.
    fn gone(&mut self, uid: &str) {
        if let Some(tx) = self.live.get(uid) {
            tx.send_replace(None);
        }
    }
}

async fn main_loop(
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
    reservation: std::net::TcpListener,
) {
    let api: Api<Pod> = match &shared.config.namespace {
        Some(ns) => Api::namespaced(shared.client.clone(), ns),
        None => Api::all(shared.client.clone()),
    };
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut beat = tokio::time::interval(shared.config.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let labels = shared.config.node_labels();
    let mut workers = Workers {
        live: BTreeMap::new(),
        tasks: JoinSet::new(),
        finished: BTreeSet::new(),
        finished_order: VecDeque::new(),
    };
    let worker_stop = stopping.clone();
    let mut listed: Option<BTreeSet<String>> = None;
    let mut watch_failures = 0u32;
    loop {
        let wake = tokio::select! {
            event = events.next() => Wake::Watch(Box::new(event)),
            _ = beat.tick() => Wake::Beat,
            Some(done) = workers.tasks.join_next() => Wake::Finished(done),
            _ = stopping.wait_for(|s| *s) => Wake::Stop,
        };
        match wake {
            Wake::Stop => break,
            Wake::Watch(event) => match *event {
                None => break,
                Some(Ok(watcher::Event::Init)) => listed = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.uid()) {
                        seen.insert(uid);
                    }
                    on_pod(&shared, &labels, &mut workers, &worker_stop, pod).await;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(seen) = listed.take() {
                        let vanished: Vec<String> = workers
                            .live
                            .keys()
                            .filter(|uid| !seen.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in vanished {
                            workers.gone(&uid);
                        }
                    }
                    watch_failures = 0;
                }
                Some(Ok(watcher::Event::Apply(pod))) => {
                    on_pod(&shared, &labels, &mut workers, &worker_stop, pod).await;
                    watch_failures = 0;
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(uid) = pod.uid() {
                        workers.gone(&uid);
                    }
                }
                Some(Err(e)) => {
                    // The watcher relists on its own; pause so a broken API is not spun on.
                    watch_failures = watch_failures.saturating_add(1);
                    tracing::warn!(error = %e, "kubelet pod watch failed");
                    let pause = 50u64.saturating_mul(1 << watch_failures.min(5));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            },
            Wake::Beat => {
                if let Err(e) = heartbeat(&shared).await {
                    tracing::warn!(error = %e, "kubelet heartbeat failed");
                }
            }
            Wake::Finished(Ok(uid)) => workers.finish(uid),
            Wake::Finished(Err(e)) => tracing::warn!(error = %e, "a pod worker failed"),
        }
    }
    // Stopping: every worker stops its process (SIGTERM, then SIGKILL after stop_timeout).
    let deadline = shared.config.stop_timeout + Duration::from_secs(5);
    let drained = tokio::time::timeout(deadline, async {
        while workers.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("pod workers did not stop in time; killing them");
        workers.tasks.shutdown().await;
    }
    drop(reservation);
}

async fn on_pod(
    shared: &Arc<Shared>,
    labels: &BTreeMap<String, String>,
    workers: &mut Workers,
    stopping: &watch::Receiver<bool>,
    pod: Pod,
) {
    let Some(uid) = pod.uid() else {
        return;
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    if node.is_none_or(str::is_empty) {
        let room = workers.live.len() < MAX_TRACKED
            && shared.pods.lock().len() < shared.config.max_pods.min(net::MAX_PODS);
        if shared.config.schedule
            && room
            && should_bind(&pod, labels)
            && let Err(e) = bind(shared, &pod).await
        {
            tracing::warn!(pod = %pod.name_any(), error = %e, "binding failed");
        }
        return;
    }
    if node != Some(shared.config.node_name.as_str()) {
        return;
    }
    if let Some(tx) = workers.live.get(&uid) {
        tx.send_replace(Some(Arc::new(pod)));
        return;
    }
    if workers.finished.contains(&uid) {
        return;
    }
    if workers.live.len() >= MAX_TRACKED {
        tracing::warn!(pod = %pod.name_any(), "the kubelet tracks too many pods; ignoring one");
        return;
    }
    let (tx, rx) = watch::channel(Some(Arc::new(pod.clone())));
    let (faults, fault_rx) = mpsc::channel(16);
    shared.pods.lock().insert(
        uid.clone(),
        PodEntry {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            seq: shared.seq.fetch_add(1, Ordering::SeqCst),
            addresses: None,
            pid: None,
            faults,
        },
    );
    workers.live.insert(uid.clone(), tx);
    let worker = pod::Worker::new(shared.clone(), &pod, rx, fault_rx, stopping.clone());
    workers.tasks.spawn(worker.run());
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b = Backoff::default();
        let short = Duration::from_millis(10);
        assert_eq!(b.next(None, short), Duration::from_millis(100));
        assert_eq!(
            b.next(Some(Duration::from_millis(100)), short),
            Duration::from_millis(200)
        );
        assert_eq!(b.next(Some(Duration::from_secs(4)), short), b.max);
        assert_eq!(
            b.next(Some(Duration::from_secs(4)), Duration::from_secs(11)),
            b.initial
        );
    }

    #[test]
    fn binds_only_pending_pods_that_fit() {
        let labels = KubeletConfig::new("box", "/bin/true", "/tmp", (1, 1)).node_labels();
        let mut pod = Pod {
            spec: Some(PodSpec::default()),
            ..Pod::default()
        };
        assert!(should_bind(&pod, &labels));
        let spec = pod.spec.as_mut().unwrap();
        spec.node_selector = Some(BTreeMap::from([(
            "kubernetes.io/os".to_string(),
            "linux".to_string(),
        )]));
        assert!(should_bind(&pod, &labels));
        let spec = pod.spec.as_mut().unwrap();
        spec.node_selector = Some(BTreeMap::from([("zone".to_string(), "a".to_string())]));
        assert!(!should_bind(&pod, &labels));
        let mut bound = Pod {
            spec: Some(PodSpec {
                node_name: Some("other".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert!(!should_bind(&bound, &labels));
        bound.spec.as_mut().unwrap().node_name = None;
        bound.spec.as_mut().unwrap().scheduler_name = Some("custom".into());
        assert!(!should_bind(&bound, &labels));
    }
}
