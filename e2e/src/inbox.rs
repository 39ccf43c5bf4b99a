//! The cluster in a box: an API server (the in-memory one, or a real kube-apiserver given by a
//! kubeconfig), the box's StatefulSet controller and kubelet, and the real operator, all in
//! this process, with a real `partita-node` process per pod.
//!
//! The operator runs on a tokio runtime of its own, so killing it is what killing its process
//! would be: the runtime is torn down with every task on it (its reconciles, node pollers,
//! lease renewals and watches) stopped wherever they stood, nothing finished or released. The
//! next operator must wait for the dead one's lease to expire, as on a cluster.

use crate::api::MemoryApi;
use crate::cluster::{Cluster, wait_for};
use crate::kubelet::{Kubelet, KubeletConfig};
use crate::{Error, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, PostParams};
use partita_api::ReplicatedPartitionSet;
use partita_operator::controller::Settings;
use partita_operator::leader::{self, Timing};
use partita_operator::metrics::Metrics;
use partita_operator::run::{self, Options};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a box is made.
#[derive(Clone, Debug)]
pub struct BoxConfig {
    /// The namespace sets are created in; the operator watches only it.
    pub namespace: String,
    /// The `partita-node` binary; found beside this executable when `None`.
    pub node_binary: Option<PathBuf>,
    /// A real kube-apiserver to use instead of the in-memory API
    /// (`PARTITA_E2E_APISERVER_KUBECONFIG`).
    pub apiserver_kubeconfig: Option<PathBuf>,
    /// Whether to run the box's StatefulSet controller: `Some(false)` never
    /// (`PARTITA_E2E_STATEFULSET_CONTROLLER=off`), `Some(true)` always (`on`), `None` unless a
    /// kube-controller-manager holds its leader lease (which a real API server may have).
    pub statefulset_controller: Option<bool>,
    /// The operator's leader election timings: short, so a killed operator's successor takes
    /// over within seconds.
    pub lease: Timing,
    /// Where volumes, pod directories and logs go; a temporary directory when `None`.
    pub root: Option<PathBuf>,
}

impl Default for BoxConfig {
    fn default() -> Self {
        Self {
            namespace: "partita".into(),
            node_binary: None,
            apiserver_kubeconfig: None,
            statefulset_controller: None,
            lease: Timing {
                lease_duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(500),
            },
            root: None,
        }
    }
}

impl BoxConfig {
    /// The defaults, with `PARTITA_E2E_APISERVER_KUBECONFIG`, `PARTITA_E2E_STATEFULSET_CONTROLLER`
    /// (`on` or `off`), `PARTITA_NODE_BINARY` and `PARTITA_E2E_ROOT` (kept after the run, with
    /// the nodes' logs in `logs/`) from the environment.
    pub fn from_env() -> Self {
        Self {
            apiserver_kubeconfig: std::env::var_os("PARTITA_E2E_APISERVER_KUBECONFIG")
                .map(Into::into),
            statefulset_controller: match std::env::var("PARTITA_E2E_STATEFULSET_CONTROLLER")
                .as_deref()
            {
                Ok("off") => Some(false),
                Ok("on") => Some(true),
                _ => None,
            },
            node_binary: std::env::var_os("PARTITA_NODE_BINARY").map(Into::into),
            root: std::env::var_os("PARTITA_E2E_ROOT").map(Into::into),
            ..Self::default()
        }
    }
}

/// The `partita-node` binary: beside the running executable (`target/<profile>/`), or one
/// level up from a test's `target/<profile>/deps/`.
pub fn node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "finding this executable".into(),
        source,
    })?;
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("partita-node"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Invalid(format!(
        "no partita-node binary beside {}: build it (cargo build -p partita-node) or set PARTITA_NODE_BINARY",
        exe.display()
    )))
}

/// The operator, on its own runtime.
struct Operator {
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    task: JoinHandle<partita_operator::Result<()>>,
}

impl Operator {
    /// Tears the runtime down at once: every task stops where it stands.
    fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Asks it to stop, waits up to `deadline` for it to finish, then tears down what is left.
    async fn stop(mut self, deadline: Duration) {
        self.stop.send_replace(true);
        let task = &mut self.task;
        if let Ok(Ok(Err(e))) = tokio::time::timeout(deadline, task).await {
            tracing::warn!(error = %e, "the operator stopped with an error");
        }
        self.kill();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A running box.
pub struct InBox {
    api: Option<MemoryApi>,
    client: kube::Client,
    config: BoxConfig,
    kubelet: Option<Kubelet>,
    statefulsets: Option<(watch::Sender<bool>, JoinHandle<Result<()>>)>,
    operator: Option<Operator>,
    operators_started: u32,
    _dir: Option<tempfile::TempDir>,
}

impl InBox {
    /// Starts the API (or connects to the real one), installs the CRD, and starts the
    /// StatefulSet controller, the kubelet and the operator.
    pub async fn start(config: BoxConfig) -> Result<Self> {
        let (api, client) = match &config.apiserver_kubeconfig {
            Some(path) => (None, crate::real::client_for(Some(path)).await?),
            None => {
                let api = MemoryApi::new();
                let client = api.client();
                (Some(api), client)
            }
        };
        let (dir, root) = match &config.root {
            Some(root) => (None, root.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("partita-box-")
                    .tempdir()
                    .map_err(|source| Error::Io {
                        what: "creating the box's directory".into(),
                        source,
                    })?;
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        install(&client, &config.namespace).await?;

        let run_statefulsets = match config.statefulset_controller {
            Some(on) => on,
            None => !controller_manager_leads(&client).await,
        };
        let statefulsets = run_statefulsets.then(|| {
            let (stop, mut stopped) = watch::channel(false);
            let task = tokio::spawn(crate::statefulset::run(
                client.clone(),
                Some(config.namespace.clone()),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            ));
            (stop, task)
        });
        let binary = match &config.node_binary {
            Some(b) => b.clone(),
            None => node_binary()?,
        };
        let net = crate::kubelet::net::free_net(200)?;
        let mut kubelet_config = KubeletConfig::new("partita-box", binary, root, net);
        kubelet_config.namespace = Some(config.namespace.clone());
        let kubelet = Kubelet::start(client.clone(), kubelet_config).await?;

        let mut this = Self {
            api,
            client,
            config,
            kubelet: Some(kubelet),
            statefulsets,
            operator: None,
            operators_started: 0,
            _dir: dir,
        };
        this.start_operator().await?;
        Ok(this)
    }

    /// The in-memory API, unless the box uses a real API server.
    pub fn memory_api(&self) -> Option<&MemoryApi> {
        self.api.as_ref()
    }

    /// The kubelet.
    pub fn kubelet(&self) -> Result<&Kubelet> {
        self.kubelet
            .as_ref()
            .ok_or_else(|| Error::Invalid("the box's kubelet has stopped".into()))
    }

    /// Stops everything cleanly: the operator (releasing its lease), the StatefulSet
    /// controller, then the kubelet (SIGTERM to every node, SIGKILL after its timeout).
    pub async fn stop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.stop(Duration::from_secs(10)).await;
        }
        if let Some((stop, task)) = self.statefulsets.take() {
            stop.send_replace(true);
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), task).await {
                tracing::warn!(error = %e, "the StatefulSet controller stopped with an error");
            }
        }
        if let Some(kubelet) = self.kubelet.take()
            && let Err(e) = kubelet.stop().await
        {
            tracing::warn!(error = %e, "the kubelet stopped with an error");
        }
    }
}

/// Whether a kube-controller-manager holds its leader Lease now (renewed within its duration),
/// so that it runs the StatefulSet controller and the box must not run a second one.
pub async fn controller_manager_leads(client: &kube::Client) -> bool {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let Ok(Some(lease)) = leases.get_opt("kube-controller-manager").await else {
        return false;
    };
    let Some(spec) = lease.spec else { return false };
    let (Some(renewed), Some(duration)) = (spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let age = jiff::Timestamp::now().duration_since(renewed.0);
    spec.holder_identity.is_some() && age < jiff::SignedDuration::from_secs(i64::from(duration))
}

/// Creates the namespace and the CRD, and waits until the CRD is served.
async fn install(client: &kube::Client, namespace: &str) -> Result<()> {
    let ignore_exists = |r: std::result::Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other,
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(namespace.into());
    ignore_exists(
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map(|_| ()),
    )?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ignore_exists(
        crds.create(&PostParams::default(), &ReplicatedPartitionSet::crd())
            .await
            .map(|_| ()),
    )?;
    let sets: Api<ReplicatedPartitionSet> = Api::namespaced(client.clone(), namespace);
    wait_for(
        "the ReplicatedPartitionSet CRD to be served",
        Duration::from_secs(30),
        || async { Ok(sets.list(&ListParams::default()).await.ok().map(|_| ())) },
    )
    .await
}

impl Cluster for InBox {
    fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn node_image(&self) -> Option<String> {
        None
    }

    async fn kill(&self, pod: &str, down_for: Duration) -> Result<()> {
        self.kubelet()?
            .kill_for(&self.config.namespace, pod, down_for)
            .await
    }

    async fn freeze(&self, pod: &str) -> Result<()> {
        self.kubelet()?.freeze(&self.config.namespace, pod).await
    }

    async fn thaw(&self, pod: &str) -> Result<()> {
        self.kubelet()?.thaw(&self.config.namespace, pod).await
    }

    async fn cut(&self, pod: &str) -> Result<()> {
        self.kubelet()?.cut(&self.config.namespace, pod).await
    }

    async fn heal(&self, pod: &str) -> Result<()> {
        self.kubelet()?.heal(&self.config.namespace, pod).await
    }

    async fn kill_operator(&mut self) -> Result<()> {
        match self.operator.take() {
            Some(op) => {
                op.kill();
                Ok(())
            }
            None => Err(Error::Invalid("the operator is not running".into())),
        }
    }

    async fn start_operator(&mut self) -> Result<()> {
        if self.operator.is_some() {
            return Err(Error::Invalid("the operator is already running".into()));
        }
        self.operators_started += 1;
        let identity = format!("box-operator-{}", self.operators_started);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("box-operator")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "starting the operator's runtime".into(),
                source,
            })?;
        let options = Options {
            settings: Settings {
                namespace: Some(self.config.namespace.clone()),
                instance: identity.clone(),
                ..Settings::default()
            },
            election: leader::Config {
                name: "partita-operator-leader".into(),
                namespace: self.config.namespace.clone(),
                identity,
                timing: self.config.lease,
            },
            http: None,
        };
        let (stop, mut stopped) = watch::channel(false);
        let memory = self.api.clone();
        let kubeconfig = self.config.apiserver_kubeconfig.clone();
        // The client is made on the operator's runtime, so its connection tasks die with it.
        let task = runtime.spawn(async move {
            let client = match memory {
                Some(api) => api.client(),
                None => crate::real::client_for(kubeconfig.as_deref())
                    .await
                    .map_err(|e| partita_operator::Error::Config(e.to_string()))?,
            };
            run::run(client, options, Metrics::default(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        self.operator = Some(Operator {
            runtime: Some(runtime),
            stop,
            task,
        });
        Ok(())
    }
}

impl Drop for InBox {
    fn drop(&mut self) {
        // Not stopped cleanly: the operator's runtime goes (its Drop), the kubelet kills its
        // processes (its Drop), and the StatefulSet controller's task is aborted.
        if let Some((_, task)) = self.statefulsets.take() {
            task.abort();
        }
    }
}
