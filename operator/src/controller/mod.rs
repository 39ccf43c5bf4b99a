//! The controller: a kube-runtime `Controller` over ReplicatedPartitionSets whose reconcile,
//! wrapped in a finalizer, validates the spec, applies the owned objects, observes the pods and
//! writes status by server-side apply.
//!
//! The order follows DESIGN.md ("Operator"): validate, apply, observe, plan, act, status. The
//! node pollers of [`crate::health`] trigger reconciles when a node changes. Every step reads the world afresh, so running a reconcile twice changes
//! nothing and killing the operator anywhere is safe (invariant 6). An unchanged set causes no
//! writes at all: objects and status are compared before they are applied.

mod apply;
mod partitions;
mod reconcile;

pub use apply::{APPLIED_HASH_ANNOTATION, Change};
pub use reconcile::{error_policy, reconcile};

use crate::error::Result;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::resources::SET_LABEL;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use partita_api::ReplicatedPartitionSet;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The node image used when a set names none.
    pub default_image: String,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// This operator replica's name, shown as the reporting instance of Events.
    pub instance: String,
    /// The gRPC port the operator reaches node pods on (at their pod IP).
    pub node_grpc_port: u16,
    /// The RESP port of node pods, advertised in the partition map.
    pub node_resp_port: u16,
    /// How often every node's Admin status is polled.
    pub poll_interval: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_image: format!("partita/partita-node:{}", env!("CARGO_PKG_VERSION")),
            namespace: None,
            instance: "partita-operator".into(),
            node_grpc_port: crate::resources::ports::GRPC as u16,
            node_resp_port: crate::resources::ports::RESP as u16,
            poll_interval: std::time::Duration::from_millis(500),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Records Events on sets.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    /// Consecutive failures per set, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ReplicatedPartitionSet>, u32>>,
    /// What the node pollers have seen.
    pub health: Arc<Health>,
    /// The pollers' reconcile triggers, taken once by [`run`].
    triggers: Mutex<Option<tokio::sync::mpsc::Receiver<ObjectRef<ReplicatedPartitionSet>>>>,
}

impl Context {
    /// A context over `client`.
    pub fn new(client: Client, settings: Settings, metrics: Metrics) -> Arc<Self> {
        let reporter = Reporter {
            controller: crate::resources::FIELD_MANAGER.into(),
            instance: Some(settings.instance.clone()),
        };
        let (health, triggers) = Health::new();
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            failures: Mutex::new(HashMap::new()),
            health,
            triggers: Mutex::new(Some(triggers)),
        })
    }

    /// Records a failure of `set` and returns how many in a row it has had.
    pub(crate) fn failed(&self, set: ObjectRef<ReplicatedPartitionSet>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(set).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of `set` after a successful reconcile.
    pub(crate) fn succeeded(&self, set: &ObjectRef<ReplicatedPartitionSet>) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(set);
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` completes; reconciles in flight then finish first.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.as_deref();
    let sets = api::<ReplicatedPartitionSet>(&client, ns);
    // Everything the operator owns carries the managed-by label, so the watches of owned
    // objects see only those, not every StatefulSet in the cluster.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=partita-operator");
    let pods = watcher::Config::default()
        .labels(&format!("{SET_LABEL},app.kubernetes.io/name=partita-node"));
    let triggers = ctx
        .triggers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let triggers = futures::stream::unfold(triggers, |rx| async move {
        let mut rx = rx?;
        let set = rx.recv().await?;
        Some((set, Some(rx)))
    });
    Controller::new(sets, watcher::Config::default().any_semantic())
        .reconcile_on(triggers)
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned)
        .watches(api::<Pod>(&client, ns), pods, |pod: Pod| {
            let set = pod.labels().get(SET_LABEL)?.clone();
            Some(ObjectRef::new(&set).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            match result {
                Ok((set, _)) => tracing::debug!(set = %set, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    ctx.health.stop_all();
    Ok(())
}
