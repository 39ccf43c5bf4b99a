//! One set under test, seen only through the Kubernetes API and the nodes' own ports: its
//! status, its pods, their addresses, and checks that read the nodes themselves (who claims to
//! be primary, what every copy holds).

use crate::cluster::{Cluster, wait_for};
use crate::{Error, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use partita_api::{
    PartitionStatus, Phase, ReplicatedPartitionSet, ReplicatedPartitionSetSpec,
    ReplicatedPartitionSetStatus,
};
use partita_node::client::{Client, Config};
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::kv_client::KvClient;
use partita_node::proto::{DigestRequest, PartitionSelector, Role, StatusRequest};
use partita_operator::resources::{SET_LABEL, ports};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tonic::transport::Channel;

/// How long a scenario waits for the set to settle after a change.
pub const SETTLE: Duration = Duration::from_secs(90);

/// A set of the scenario's cluster.
pub struct Set {
    /// The set's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    client: kube::Client,
}

impl Set {
    /// Creates set `name` from `spec` (YAML) in the cluster's namespace.
    pub async fn create(cluster: &impl Cluster, name: &str, spec: &str) -> Result<Self> {
        let mut spec: ReplicatedPartitionSetSpec = serde_yaml::from_str(spec)
            .map_err(|e| Error::Invalid(format!("the scenario's spec: {e}")))?;
        if spec.image.is_none() {
            spec.image = cluster.node_image();
        }
        let mut set = ReplicatedPartitionSet::new(name, spec);
        set.metadata.namespace = Some(cluster.namespace().to_string());
        let this = Self {
            name: name.into(),
            namespace: cluster.namespace().into(),
            client: cluster.client(),
        };
        this.sets().create(&PostParams::default(), &set).await?;
        Ok(this)
    }

    fn sets(&self) -> Api<ReplicatedPartitionSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The set as it is now.
    pub async fn get(&self) -> Result<ReplicatedPartitionSet> {
        Ok(self.sets().get(&self.name).await?)
    }

    /// Its status now (empty before the operator wrote one).
    pub async fn status(&self) -> Result<ReplicatedPartitionSetStatus> {
        Ok(self.get().await?.status.unwrap_or_default())
    }

    /// Merges `patch` (JSON) into the set, as `kubectl patch --type merge` does.
    pub async fn patch(&self, patch: serde_json::Value) -> Result<()> {
        self.sets()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Waits until `check` holds for the status, and returns that status.
    pub async fn until(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&ReplicatedPartitionSetStatus) -> bool,
    ) -> Result<ReplicatedPartitionSetStatus> {
        let check = &check;
        wait_for(
            &format!("set {}: {what}", self.name),
            deadline,
            || async move {
                let status = self.status().await?;
                Ok(check(&status).then_some(status))
            },
        )
        .await
    }

    /// Waits until the set is Ready with every partition fully placed and in sync, for the
    /// current spec (`observedGeneration` caught up).
    pub async fn until_ready(&self, deadline: Duration) -> Result<ReplicatedPartitionSetStatus> {
        let set = self.get().await?;
        let generation = set.metadata.generation;
        let (partitions, rf) = (set.spec.partitions, set.spec.replication_factor);
        self.until("Ready, every partition in sync", deadline, |s| {
            s.phase == Some(Phase::Ready)
                && s.observed_generation >= generation
                && fully_placed(s, partitions, rf)
        })
        .await
    }

    /// The set's pods, by name.
    pub async fn pods(&self) -> Result<BTreeMap<String, Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!("{SET_LABEL}={}", self.name)))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, p)))
            .collect())
    }

    /// The set's StatefulSet.
    pub async fn statefulset(&self) -> Result<StatefulSet> {
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(api.get(&self.name).await?)
    }

    /// Pod `pod`'s IP.
    pub async fn pod_ip(&self, pod: &str) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.get(pod)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .ok_or_else(|| Error::Check(format!("pod {pod} has no IP")))
    }

    async fn channel(&self, pod: &str) -> Result<Channel> {
        let ip = self.pod_ip(pod).await?;
        let endpoint = Channel::from_shared(format!("http://{ip}:{}", ports::GRPC))
            .map_err(|e| Error::Node(e.to_string()))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3));
        endpoint
            .connect()
            .await
            .map_err(|e| Error::Node(format!("connecting to {pod}: {e}")))
    }

    /// An Admin client of pod `pod`'s node.
    pub async fn admin(&self, pod: &str) -> Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel(pod).await?))
    }

    /// A KV client of pod `pod`'s node, talking to it alone.
    pub async fn kv(&self, pod: &str) -> Result<KvClient<Channel>> {
        Ok(KvClient::new(self.channel(pod).await?))
    }

    /// A cluster-aware client of the set, seeded with every pod's gRPC address.
    pub async fn client(&self) -> Result<Client> {
        let seeds: Vec<String> = self
            .pods()
            .await?
            .values()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .map(|ip| format!("{ip}:{}", ports::GRPC))
            .collect();
        let mut cfg = Config::new(seeds);
        cfg.connect_timeout = Duration::from_secs(1);
        cfg.call_timeout = Duration::from_secs(3);
        cfg.max_attempts = 10;
        Client::connect(cfg)
            .await
            .map_err(|e| Error::Node(format!("connecting to set {}: {e}", self.name)))
    }

    /// The partitions pod `pod`'s node says it leads, with their epochs; `None` when it does not
    /// answer.
    pub async fn claims(&self, pod: &str) -> Option<BTreeMap<u32, u64>> {
        let mut admin = self.admin(pod).await.ok()?;
        let status = admin
            .status(StatusRequest::default())
            .await
            .ok()?
            .into_inner();
        Some(
            status
                .partitions
                .iter()
                .filter(|p| p.role == Role::Primary as i32)
                .map(|p| (p.partition, p.epoch))
                .collect(),
        )
    }

    /// No partition has two nodes that accept writes. The nodes are read one after another,
    /// so a primary read before a switchover fenced it and its successor read after can look
    /// like two; a real second writer is one that still claims the partition at an older
    /// epoch when read again after the newer claim was seen.
    pub async fn check_single_primaries(&self) -> Result<()> {
        let pods: Vec<String> = self.pods().await?.into_keys().collect();
        let mut claims: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
        for pod in &pods {
            for (p, epoch) in self.claims(pod).await.unwrap_or_default() {
                claims.entry(p).or_default().push((pod.clone(), epoch));
            }
        }
        for (p, mut holders) in claims {
            if holders.len() < 2 {
                continue;
            }
            holders.sort_by_key(|(_, e)| std::cmp::Reverse(*e));
            let newest = holders[0].1;
            for (pod, epoch) in &holders[1..] {
                let again = self.claims(pod).await.unwrap_or_default();
                if again.get(&p) == Some(epoch) && *epoch <= newest {
                    return Err(Error::Check(format!(
                        "partition {p} has two writers: {pod} at epoch {epoch} and {} at {newest}",
                        holders[0].0
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every copy of every partition, as the status maps them, holds the same data (digests
    /// compared over Admin). Returns how many copies were compared.
    pub async fn check_copies_agree(&self) -> Result<usize> {
        let status = self.status().await?;
        let mut compared = 0;
        for p in &status.partitions {
            let mut digests = BTreeSet::new();
            for pod in p.primary.iter().chain(&p.replicas) {
                let mut admin = self.admin(pod).await?;
                let digest = admin
                    .digest(DigestRequest {
                        partitions: Some(PartitionSelector {
                            all: false,
                            ids: vec![p.id as u32],
                        }),
                    })
                    .await
                    .map_err(|e| Error::Node(format!("digest of {pod}: {e}")))?
                    .into_inner()
                    .digest;
                digests.insert(digest);
                compared += 1;
            }
            if digests.len() != 1 {
                return Err(Error::Check(format!(
                    "the copies of partition {} differ: {digests:?}",
                    p.id
                )));
            }
        }
        Ok(compared)
    }
}

/// Whether every one of `partitions` partitions has a primary and `rf - 1` in-sync replicas,
/// with no move going on.
pub fn fully_placed(s: &ReplicatedPartitionSetStatus, partitions: i32, rf: i32) -> bool {
    s.partitions.len() == partitions as usize
        && s.partitions.iter().all(|p: &PartitionStatus| {
            p.primary.is_some()
                && p.replicas.len() + 1 == rf as usize
                && p.in_sync_replicas.len() + 1 == rf as usize
                && p.moving.is_none()
        })
}

/// Primaries per pod, counting pods that lead nothing.
pub fn primaries_per_pod<'a>(
    s: &ReplicatedPartitionSetStatus,
    pods: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, usize> {
    let mut count: BTreeMap<String, usize> = pods.into_iter().map(|p| (p.clone(), 0)).collect();
    for p in &s.partitions {
        if let Some(primary) = &p.primary {
            *count.entry(primary.clone()).or_default() += 1;
        }
    }
    count
}

/// Fails unless primaries per pod (over `pods`, counting those that lead nothing) differ by
/// at most one.
pub fn check_balanced<'a>(
    s: &ReplicatedPartitionSetStatus,
    pods: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let per_pod = primaries_per_pod(s, pods);
    let (min, max) = (
        per_pod.values().min().copied().unwrap_or(0),
        per_pod.values().max().copied().unwrap_or(0),
    );
    super::ensure(max - min <= 1, || {
        format!("primaries are not balanced: {per_pod:?}")
    })
}

/// The primary of partition `id` in `s`.
pub fn primary_of(s: &ReplicatedPartitionSetStatus, id: i32) -> Result<String> {
    s.partitions
        .iter()
        .find(|p| p.id == id)
        .and_then(|p| p.primary.clone())
        .ok_or_else(|| Error::Check(format!("partition {id} has no primary")))
}

/// The partitions `pod` leads in `s`.
pub fn led_by(s: &ReplicatedPartitionSetStatus, pod: &str) -> Vec<i32> {
    s.partitions
        .iter()
        .filter(|p| p.primary.as_deref() == Some(pod))
        .map(|p| p.id)
        .collect()
}
