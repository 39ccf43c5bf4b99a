//! The scenarios on a real cluster (`PARTITA_E2E_KUBECONFIG`, or in-cluster as `e2e/kind.sh`
//! runs them), where faults are made with what Kubernetes offers:
//! - **kill** and **freeze**: an ephemeral debug container that shares the node container's
//!   process namespace sends the signal to its PID 1 (the node image is distroless and has no
//!   `kill` of its own). A kill that must keep the pod down for a while stops the process
//!   first, waits, then kills it, so the pod is unreachable for that long and the kubelet then
//!   restarts it, as after a lost machine;
//! - **cut**: a NetworkPolicy that selects the pod and allows nothing in or out (the CNI must
//!   enforce NetworkPolicy; kind's default kindnet does since kind 0.24);
//! - **operator restart**: its pods are deleted with no grace period; the Deployment starts a
//!   new one, which must win the lease before it acts.
//!
//! The scenarios reach node pods at their pod IPs, so they must run where pod IPs are
//! routable: inside the cluster (`e2e/kind.sh` runs `partita-e2e` as a Job) or on a host
//! routed to the pod network.

use crate::cluster::{Cluster, wait_for};
use crate::{Error, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Where a real cluster is, and what to use in it.
#[derive(Clone, Debug)]
pub struct RealConfig {
    /// The kubeconfig to use; in-cluster configuration when `None`.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The node image the sets use.
    pub node_image: String,
    /// The image of the ephemeral containers that send signals (needs `sh`, `kill`, `sleep`).
    pub debug_image: String,
    /// Where the operator runs.
    pub operator_namespace: String,
    /// The label selector of the operator's pods.
    pub operator_selector: String,
}

impl RealConfig {
    /// The configuration from the environment: `PARTITA_E2E_KUBECONFIG`,
    /// `PARTITA_E2E_NODE_IMAGE` (default `partita/partita-node:e2e`), `PARTITA_E2E_DEBUG_IMAGE`
    /// (default `busybox:1.36`), `PARTITA_E2E_OPERATOR_NAMESPACE` (default `partita-system`).
    pub fn from_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Self {
            kubeconfig: std::env::var_os("PARTITA_E2E_KUBECONFIG").map(Into::into),
            node_image: var("PARTITA_E2E_NODE_IMAGE", "partita/partita-node:e2e"),
            debug_image: var("PARTITA_E2E_DEBUG_IMAGE", "busybox:1.36"),
            operator_namespace: var("PARTITA_E2E_OPERATOR_NAMESPACE", "partita-system"),
            operator_selector: "app.kubernetes.io/name=partita-operator".into(),
        }
    }
}

/// A real cluster, with a namespace of its own for the scenarios.
pub struct RealCluster {
    client: kube::Client,
    namespace: String,
    config: RealConfig,
    debug: AtomicU32,
}

/// Builds a client from a kubeconfig file, or in-cluster configuration when `None`.
pub async fn client_for(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                Error::Invalid(format!("reading kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Invalid(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::incluster()
            .map_err(|e| Error::Invalid(format!("in-cluster configuration: {e}")))?,
    };
    Ok(kube::Client::try_from(config)?)
}

impl RealCluster {
    /// Connects and creates the namespace `namespace` for the scenarios.
    pub async fn connect(config: RealConfig, namespace: &str) -> Result<Self> {
        let client = client_for(config.kubeconfig.as_deref()).await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted"}}
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            client,
            namespace: namespace.into(),
            config,
            debug: AtomicU32::new(0),
        })
    }

    /// Deletes the scenarios' namespace, and with it everything they created.
    pub async fn cleanup(&self) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await?;
        Ok(())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Runs `script` in an ephemeral container beside `pod`'s node container, sharing its
    /// process namespace, and waits until it has started.
    async fn signal(&self, pod: &str, script: &str) -> Result<()> {
        let name = format!("fault-{}", self.debug.fetch_add(1, Ordering::SeqCst));
        let patch = json!({"spec": {"ephemeralContainers": [{
            "name": name,
            "image": self.config.debug_image,
            "targetContainerName": partita_operator::resources::CONTAINER_NAME,
            "command": ["sh", "-c", script],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": partita_operator::resources::RUN_AS,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        }]}});
        self.pods()
            .patch_subresource(
                "ephemeralcontainers",
                pod,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        let pods = self.pods();
        wait_for(
            &format!("the fault container {name} in {pod} to run"),
            Duration::from_secs(60),
            || {
                let (pods, name) = (pods.clone(), name.clone());
                async move {
                    let p = pods.get(pod).await?;
                    let started = p
                        .status
                        .and_then(|s| s.ephemeral_container_statuses)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| {
                            c.name == name
                                && c.state
                                    .as_ref()
                                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                        });
                    Ok(started.then_some(()))
                }
            },
        )
        .await
    }
}

impl Cluster for RealCluster {
    fn client(&self) -> kube::Client {
        self.client.clone()
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn node_image(&self) -> Option<String> {
        Some(self.config.node_image.clone())
    }

    async fn kill(&self, pod: &str, down_for: Duration) -> Result<()> {
        let secs = down_for.as_secs().max(1);
        self.signal(pod, &format!("kill -STOP 1; sleep {secs}; kill -KILL 1"))
            .await
    }

    async fn freeze(&self, pod: &str) -> Result<()> {
        self.signal(pod, "kill -STOP 1").await
    }

    async fn thaw(&self, pod: &str) -> Result<()> {
        self.signal(pod, "kill -CONT 1").await
    }

    async fn cut(&self, pod: &str) -> Result<()> {
        let policy: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": format!("cut-{pod}")},
            "spec": {
                "podSelector": {"matchLabels": {"statefulset.kubernetes.io/pod-name": pod}},
                "policyTypes": ["Ingress", "Egress"]
            }
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &policy).await?;
        Ok(())
    }

    async fn heal(&self, pod: &str) -> Result<()> {
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        api.delete(&format!("cut-{pod}"), &DeleteParams::default())
            .await?;
        Ok(())
    }

    async fn kill_operator(&mut self) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.operator_namespace);
        let pods = api
            .list(&ListParams::default().labels(&self.config.operator_selector))
            .await?;
        for p in pods.items {
            if let Some(name) = p.metadata.name {
                api.delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn start_operator(&mut self) -> Result<()> {
        // The Deployment starts a new pod on its own; wait until one is ready.
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.operator_namespace);
        let selector = self.config.operator_selector.clone();
        wait_for(
            "an operator pod to be ready",
            Duration::from_secs(120),
            || {
                let (api, selector) = (api.clone(), selector.clone());
                async move {
                    let pods = api.list(&ListParams::default().labels(&selector)).await?;
                    let ready = pods.items.iter().any(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    });
                    Ok(ready.then_some(()))
                }
            },
        )
        .await
    }
}
