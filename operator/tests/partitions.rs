//! The operator's partition work end to end: the real controller (in-process, the same code as
//! the binary) against the in-memory API served over HTTP, with a real `partita-node` process
//! behind every pod. Faults are real: SIGKILL, SIGSTOP, the operator's task aborted mid-way.
//!
//! What each test proves is in its name; what it measured is printed as one `SCENARIO` line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::FakeApi;
use common::nodes::Nodes;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use partita_api::{Phase, ReplicatedPartitionSet, ReplicatedPartitionSetStatus};
use partita_node::client::{Client, Config};
use partita_node::proto::{GetRequest, PutRequest, WriteConcern, WriteOptions};
use partita_operator::controller::{self, Context, Settings};
use partita_operator::metrics::Metrics;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NS: &str = "shop";
const NAME: &str = "orders";
const DEADLINE: Duration = Duration::from_secs(60);

/// A set, its nodes, and the operator running against them.
struct Cluster {
    api: FakeApi,
    url: String,
    nodes: Nodes,
    count: usize,
    operator: Option<(Arc<Context>, watch::Sender<bool>, JoinHandle<()>)>,
}

impl Cluster {
    /// `count` pods with real nodes, the set `spec` (YAML), and a running operator.
    async fn new(count: usize, spec: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("partita_operator=info"))
            .with_test_writer()
            .try_init();
        let api = FakeApi::new();
        let addr = api.serve().await;
        let set_spec: partita_api::ReplicatedPartitionSetSpec = serde_yaml::from_str(spec).unwrap();
        let mut nodes = Nodes::new(NAME, NS, set_spec.partitions as u32);
        for i in 0..count {
            nodes.start(i).await;
            api.insert(&nodes.pod(i));
        }
        let mut set = ReplicatedPartitionSet::new(NAME, set_spec);
        set.metadata.namespace = Some(NS.into());
        api.insert(&set);
        let mut c = Self {
            api,
            url: format!("http://{addr}"),
            nodes,
            count,
            operator: None,
        };
        c.start_operator();
        c
    }

    fn start_operator(&mut self) {
        let config = kube::Config::new(self.url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let settings = Settings {
            namespace: Some(NS.into()),
            node_grpc_port: self.nodes.grpc_port,
            node_resp_port: self.nodes.resp_port,
            poll_interval: Duration::from_millis(100),
            ..Settings::default()
        };
        let ctx = Context::new(client, settings, Metrics::default());
        let (stop_tx, mut stop) = watch::channel(false);
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                controller::run(ctx, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
            }
        });
        self.operator = Some((ctx, stop_tx, task));
    }

    /// Kills the operator where it stands: its task and pollers are aborted, nothing is
    /// finished or released, as when its process is killed.
    fn kill_operator(&mut self) {
        if let Some((ctx, _, task)) = self.operator.take() {
            task.abort();
            ctx.health.stop_all();
        }
    }

    fn status(&self) -> ReplicatedPartitionSetStatus {
        self.api
            .get::<ReplicatedPartitionSet>(NS, NAME)
            .and_then(|s| s.status)
            .unwrap_or_default()
    }

    /// Waits until `check` holds for the status, acting meanwhile as the StatefulSet
    /// controller (starting or stopping pods to match its replicas).
    async fn until(&mut self, what: &str, check: impl Fn(&ReplicatedPartitionSetStatus) -> bool) {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            self.follow_statefulset().await;
            let status = self.status();
            if check(&status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&mut self) {
        self.until("Ready", |s| s.phase == Some(Phase::Ready)).await;
    }

    /// Starts pods (and their nodes) up to the StatefulSet's replicas, and removes the ones
    /// above it, as the StatefulSet controller and kubelet would.
    async fn follow_statefulset(&mut self) {
        let Some(want) = self
            .api
            .get::<StatefulSet>(NS, NAME)
            .and_then(|s| s.spec.replicas)
        else {
            return;
        };
        let want = want as usize;
        while self.count < want {
            let i = self.count;
            self.nodes.start(i).await;
            self.api.insert(&self.nodes.pod(i));
            self.count += 1;
        }
        while self.count > want {
            let i = self.count - 1;
            self.nodes.kill(i);
            let pods: kube::Api<Pod> = kube::Api::namespaced(self.api.client(), NS);
            pods.delete(&self.nodes.name(i), &Default::default())
                .await
                .unwrap();
            self.count -= 1;
        }
    }

    /// The reasons of the Events recorded on the set.
    async fn event_reasons(&self) -> Vec<String> {
        let events: kube::Api<k8s_openapi::api::events::v1::Event> =
            kube::Api::namespaced(self.api.client(), NS);
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// The running operator's metrics, as Prometheus text.
    fn metrics_text(&self) -> String {
        let (ctx, _, _) = self.operator.as_ref().expect("an operator runs");
        let mut registry = prometheus_client::registry::Registry::default();
        ctx.metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// A topology-aware client of the set.
    async fn client(&self) -> Client {
        let seeds: Vec<String> = (0..self.count)
            .map(|i| format!("{}:{}", self.nodes.ip(i), self.nodes.grpc_port))
            .collect();
        let mut cfg = Config::new(seeds);
        cfg.call_timeout = Duration::from_secs(5);
        cfg.max_attempts = 10;
        Client::connect(cfg).await.unwrap()
    }

    /// The partition map as (primary, replicas, epoch) per partition.
    fn map(&self) -> Vec<(String, Vec<String>, i64)> {
        self.status()
            .partitions
            .iter()
            .map(|p| {
                (
                    p.primary.clone().unwrap_or_default(),
                    p.replicas.clone(),
                    p.epoch,
                )
            })
            .collect()
    }

    /// Every copy of every partition holds the same data: digests compared over Admin.
    async fn assert_copies_agree(&self) {
        let mut digests: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
        for (p, (primary, replicas, _)) in self.map().iter().enumerate() {
            for node in std::iter::once(primary).chain(replicas) {
                let i = self.nodes.ordinal(node);
                let mut admin = self.nodes.admin(i).await.unwrap();
                let d = admin
                    .digest(partita_node::proto::DigestRequest {
                        partitions: Some(partita_node::proto::PartitionSelector {
                            all: false,
                            ids: vec![p as u32],
                        }),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                digests.entry(p as u32).or_default().insert(d.digest);
            }
        }
        for (p, d) in digests {
            assert_eq!(d.len(), 1, "copies of partition {p} differ: {d:?}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_operator();
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        write: Some(WriteOptions {
            concern: WriteConcern::Quorum as i32,
            timeout_ms: 2000,
        }),
        ..PutRequest::default()
    }
}

async fn read(client: &Client, key: &str) -> Option<Vec<u8>> {
    let r = client
        .get(GetRequest {
            key: key.into(),
            read: None,
        })
        .await
        .unwrap();
    r.found.then_some(r.value)
}

fn primaries_per_node(map: &[(String, Vec<String>, i64)]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (p, _, _) in map {
        *n.entry(p.clone()).or_insert(0) += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_is_replaced_without_losing_a_quorum_write_and_rejoins_as_a_replica() {
    // Without automatic rebalancing the returning node stays a replica, which the test checks.
    let spec = "nodes: 3\npartitions: 4\nfailover: {detectionWindow: 1s}\nrebalance: {auto: false}";
    let mut c = Cluster::new(3, spec).await;
    let began = Instant::now();
    c.ready().await;
    let ready_ms = began.elapsed().as_millis();
    let map = c.map();
    let spread = primaries_per_node(&map);
    assert!(
        spread.values().max().unwrap() - spread.values().min().unwrap() <= 1 && spread.len() == 3,
        "primaries are not spread: {spread:?}"
    );
    for (primary, replicas, epoch) in &map {
        assert_eq!((replicas.len(), *epoch), (2, 1), "{map:?}");
        assert!(!replicas.contains(primary));
    }

    // QUORUM writes, every one acknowledged and recorded.
    let client = c.client().await;
    let mut acked = Vec::new();
    for k in 0..200 {
        let key = format!("key:{k:04}");
        client.put(put(&key, &format!("v{k}"))).await.unwrap();
        acked.push(key);
    }
    let victim = map[0].0.clone();
    let victim_ordinal = c.nodes.ordinal(&victim);
    let led: Vec<usize> = (0..map.len()).filter(|p| map[*p].0 == victim).collect();

    let killed = Instant::now();
    c.nodes.kill(victim_ordinal);
    // Writes keep going; the first acknowledged write to a partition the victim led, after
    // the kill, marks the end of the outage.
    let probe = format!("{{{}}}:after", first_key_of(&client, led[0]).await);
    let end = Instant::now() + DEADLINE;
    loop {
        if client.put(put(&probe, "after")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < end, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover_ms = killed.elapsed().as_millis();
    acked.push(probe.clone());

    c.until(
        "every partition the victim led to have a new primary",
        |s| {
            led.iter().all(|p| {
                let e = &s.partitions[*p];
                e.primary.as_deref().is_some_and(|x| x != victim) && e.epoch == 2
            })
        },
    )
    .await;
    let status = c.status();
    let last = status.last_failover.clone().unwrap();
    assert_eq!((last.from.as_str(), last.planned), (victim.as_str(), false));
    // Events and the failover-duration histogram, one sample per partition failed over.
    let reasons = c.event_reasons().await;
    for r in ["FailoverStarted", "FailoverCompleted"] {
        assert!(reasons.iter().any(|x| x == r), "no {r} Event: {reasons:?}");
    }
    let metrics = c.metrics_text();
    let samples = format!(
        "partita_operator_failover_duration_seconds_count{{kind=\"failover\"}} {}",
        led.len()
    );
    assert!(
        metrics.lines().any(|l| l == samples),
        "no {samples:?} in:\n{metrics}"
    );
    for p in &led {
        assert!(
            status.partitions[*p].replicas.contains(&victim),
            "the old primary stays a replica of partition {p}"
        );
    }
    // No acknowledged write is lost.
    for key in &acked {
        assert!(
            read(&client, key).await.is_some(),
            "{key} was acknowledged and is gone"
        );
    }

    // The old primary comes back: it follows at the new epoch and refuses writes.
    c.nodes.start(victim_ordinal).await;
    c.ready().await;
    let node = c.nodes.status(victim_ordinal).await.unwrap();
    for p in &led {
        let s = node
            .partitions
            .iter()
            .find(|x| x.partition == *p as u32)
            .unwrap();
        assert_eq!(
            (s.role, s.epoch),
            (partita_node::proto::Role::Replica as i32, 2),
            "partition {p} on the returning node"
        );
    }
    let mut kv = c.nodes.kv(victim_ordinal).await.unwrap();
    let refused = kv.put(put(&probe, "stale")).await;
    assert!(refused.is_err(), "the old primary accepted a write");
    assert_eq!(read(&client, &probe).await.unwrap(), b"after");
    c.assert_copies_agree().await;
    println!("SCENARIO failover ok ready_ms={ready_ms} failover_ms={failover_ms} lost_acked=0");
}

/// Writes `key:0` to `key:<n-1>`, each with value `v<k>`, at QUORUM.
async fn write_keys(client: &Client, n: usize) {
    for k in 0..n {
        client
            .put(put(&format!("key:{k}"), &format!("v{k}")))
            .await
            .unwrap();
    }
}

/// Every key `write_keys` wrote is there, with its value.
async fn assert_keys(client: &Client, n: usize) {
    for k in 0..n {
        assert_eq!(
            read(client, &format!("key:{k}")).await,
            Some(format!("v{k}").into_bytes()),
            "key:{k} was acknowledged and is not as written"
        );
    }
}

/// A key of partition `p`, found by asking the client's map.
async fn first_key_of(client: &Client, p: usize) -> String {
    let slots = partita_node::slot::SlotMap::new(client.partitions()).unwrap();
    (0..100_000)
        .map(|k| format!("probe{k}"))
        .find(|k| slots.partition_of_key(k.as_bytes()) as usize == p)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_by_annotation_moves_the_primary_with_nothing_lost() {
    let mut c = Cluster::new(3, "nodes: 3\npartitions: 3").await;
    c.ready().await;
    let client = c.client().await;
    write_keys(&client, 100).await;
    let (primary, replicas, epoch) = c.map()[1].clone();
    let to = replicas[0].clone();

    // Refused: a partition the set does not have.
    let refused = format!("9={to}@1");
    c.api.edit::<ReplicatedPartitionSet>(NS, NAME, |o| {
        o["metadata"]["annotations"] = json!({"partita.dev/switchover": refused})
    });
    c.until("the refusal", |s| {
        s.switchover
            .as_ref()
            .is_some_and(|x| x.request == refused && x.state == "Refused")
    })
    .await;

    let request = format!("1={to}@2");
    let began = Instant::now();
    c.api.edit::<ReplicatedPartitionSet>(NS, NAME, |o| {
        o["metadata"]["annotations"] = json!({"partita.dev/switchover": request})
    });
    c.until("the switchover", |s| {
        s.switchover
            .as_ref()
            .is_some_and(|x| x.request == request && x.state == "Done")
    })
    .await;
    let took = began.elapsed().as_millis();
    let (new_primary, new_replicas, new_epoch) = c.map()[1].clone();
    assert_eq!(new_primary, to);
    assert!(new_replicas.contains(&primary));
    assert_eq!(new_epoch, epoch + 1);
    // The rebalancer may then restore the balance of primaries with another partition, but
    // leaves the one the user chose where it is.
    c.ready().await;
    assert_eq!(c.map()[1].0, to, "the requested primary was undone");
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(c.api.client(), NS);
    let notes: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SwitchoverCompleted"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with(&format!(
            "partition 1: {to} is primary at epoch {}",
            epoch + 1
        ))),
        "{notes:?}"
    );
    assert_keys(&client, 100).await;
    c.ready().await;
    c.assert_copies_agree().await;
    assert_status_never_wiped(&c);
    println!("SCENARIO switchover ok switchover_ms={took} lost_acked=0");
}

/// Recording a new map never wipes the rest of the status: once written, the phase, the
/// conditions and a switchover's outcome stay in every later version of the set (a map recorded
/// alone, by server-side apply, would drop them until the status write after the node calls).
fn assert_status_never_wiped(c: &Cluster) {
    let versions = c.api.history("replicatedpartitionsets", NS, NAME);
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        let status = &v["status"];
        for field in ["phase", "conditions", "switchover"] {
            if !status[field].is_null() {
                seen.insert(field);
            } else {
                assert!(
                    !seen.contains(field),
                    "version {i} of the set lost status.{field}: {status:#}"
                );
            }
        }
    }
    assert!(seen.contains("switchover"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_moves_partitions_onto_new_nodes_and_scaling_down_drains_first() {
    let spec = "nodes: 3\npartitions: 6\nreplicationFactor: 2\nrebalance: {maxConcurrentMoves: 2}";
    let mut c = Cluster::new(3, spec).await;
    c.ready().await;
    let client = c.client().await;
    write_keys(&client, 300).await;

    let began = Instant::now();
    c.api
        .edit::<ReplicatedPartitionSet>(NS, NAME, |o| o["spec"]["nodes"] = json!(5));
    c.until("the set rebalanced over 5 nodes", |s| {
        let moving = s.partitions.iter().filter(|p| p.moving.is_some()).count();
        assert!(moving <= 2, "{moving} moves at once");
        s.phase == Some(Phase::Ready)
            && s.partitions.iter().any(|p| {
                p.primary.as_deref() == Some("orders-4")
                    || p.replicas.iter().any(|r| r == "orders-4")
            })
    })
    .await;
    let up_ms = began.elapsed().as_millis();
    let map = c.map();
    let spread = primaries_per_node(&map);
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for (p, rs, _) in &map {
        for n in std::iter::once(p).chain(rs) {
            *copies.entry(n.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(copies.len(), 5, "every node holds copies: {copies:?}");
    assert!(
        copies.values().max().unwrap() - copies.values().min().unwrap() <= 1,
        "{copies:?}"
    );
    assert!(
        spread.values().max().unwrap() - spread.values().min().unwrap() <= 1,
        "{spread:?}"
    );
    c.assert_copies_agree().await;

    let began = Instant::now();
    c.api
        .edit::<ReplicatedPartitionSet>(NS, NAME, |o| o["spec"]["nodes"] = json!(3));
    c.until("the set drained to 3 nodes", |s| {
        s.phase == Some(Phase::Ready)
            && s.partitions.iter().all(|p| {
                std::iter::once(p.primary.as_deref().unwrap_or_default())
                    .chain(p.replicas.iter().map(String::as_str))
                    .all(|n| n != "orders-3" && n != "orders-4")
            })
    })
    .await;
    // The StatefulSet shrinks only after the drain, and then the pods go.
    let end = tokio::time::Instant::now() + DEADLINE;
    while c.count > 3 {
        c.follow_statefulset().await;
        assert!(
            tokio::time::Instant::now() < end,
            "the StatefulSet did not shrink"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down_ms = began.elapsed().as_millis();
    assert_keys(&client, 300).await;
    c.assert_copies_agree().await;
    println!("SCENARIO scale ok up_ms={up_ms} down_ms={down_ms} lost_acked=0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_anywhere_in_a_failover_converges_to_one_primary_per_partition() {
    let spec = "nodes: 3\npartitions: 4\nfailover: {detectionWindow: 1s}";
    let mut c = Cluster::new(3, spec).await;
    c.ready().await;
    let client = c.client().await;
    write_keys(&client, 100).await;
    let victim = c.map()[0].0.clone();
    c.nodes.kill(c.nodes.ordinal(&victim));

    // Kill the operator again and again at moments spread over the failover.
    for round in 0..12u64 {
        c.kill_operator();
        c.start_operator();
        tokio::time::sleep(Duration::from_millis(150 + 37 * round)).await;
        assert_single_primaries(&c).await;
    }
    c.until("every partition to have a live primary", |s| {
        s.partitions.len() == 4
            && s.partitions
                .iter()
                .all(|p| p.primary.as_deref().is_some_and(|x| x != victim))
    })
    .await;
    c.nodes.start(c.nodes.ordinal(&victim)).await;
    c.ready().await;
    assert_single_primaries(&c).await;
    assert_keys(&client, 100).await;
    c.assert_copies_agree().await;
    println!("SCENARIO operator-restart ok restarts=12 lost_acked=0");
}

/// No partition has two nodes that accept writes. The nodes are read one after another, so a
/// primary read before a switchover fenced it and its successor read after look like two; a
/// real second writer is one that still claims primary at its older epoch when read again
/// after the newer primary was seen.
async fn assert_single_primaries(c: &Cluster) {
    let claims_of = |s: &partita_node::proto::NodeStatus| -> Vec<(u32, u64)> {
        s.partitions
            .iter()
            .filter(|p| p.role == partita_node::proto::Role::Primary as i32)
            .map(|p| (p.partition, p.epoch))
            .collect()
    };
    let mut claims: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    for i in 0..c.count {
        let Some(s) = c.nodes.status(i).await else {
            continue;
        };
        for (p, epoch) in claims_of(&s) {
            claims.entry(p).or_default().push((epoch, i));
        }
    }
    for (p, cs) in claims {
        let Some(&(newest, _)) = cs.iter().max() else {
            continue;
        };
        for &(epoch, i) in cs.iter().filter(|(e, _)| *e < newest) {
            let again = c.nodes.status(i).await;
            let still = again
                .as_ref()
                .is_some_and(|s| claims_of(s).contains(&(p, epoch)));
            assert!(
                !still,
                "partition {p}: node {i} still leads epoch {epoch} after epoch {newest} began: {cs:?}; recorded: {:#?}",
                c.status()
            );
        }
        let at_newest = cs.iter().filter(|(e, _)| *e == newest).count();
        assert!(
            at_newest <= 1,
            "partition {p} has two primaries at epoch {newest}: {cs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_quorum_a_failover_that_could_lose_writes_waits_and_says_why() {
    let spec = "nodes: 3\npartitions: 2\nfailover: {detectionWindow: 1s, requireQuorum: true}";
    let mut c = Cluster::new(3, spec).await;
    c.ready().await;
    let (primary, replicas, epoch) = c.map()[0].clone();
    // The primary and one replica go: the last replica may lack a QUORUM write.
    c.nodes.kill(c.nodes.ordinal(&primary));
    c.nodes.kill(c.nodes.ordinal(&replicas[0]));
    c.until("the reason", |s| {
        s.partitions[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no replica can be promoted safely"))
    })
    .await;
    let status = c.status();
    assert_eq!(
        status.partitions[0].primary.as_deref(),
        Some(primary.as_str())
    );
    assert_eq!(status.partitions[0].epoch, epoch, "nothing was promoted");
    let failing = status
        .conditions
        .iter()
        .find(|x| x.type_ == "FailingOver")
        .unwrap();
    assert_eq!(failing.status, "True", "{failing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_anywhere_in_a_scale_up_converges_with_every_copy_kept() {
    let spec = "nodes: 3\npartitions: 6\nreplicationFactor: 2\nrebalance: {maxConcurrentMoves: 2}";
    let mut c = Cluster::new(3, spec).await;
    c.ready().await;
    let client = c.client().await;
    write_keys(&client, 200).await;
    c.api
        .edit::<ReplicatedPartitionSet>(NS, NAME, |o| o["spec"]["nodes"] = json!(4));
    for round in 0..12u64 {
        c.kill_operator();
        c.start_operator();
        let until = tokio::time::Instant::now() + Duration::from_millis(100 + 41 * round);
        while tokio::time::Instant::now() < until {
            c.follow_statefulset().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_single_primaries(&c).await;
        for p in &c.status().partitions {
            let copies = p.replicas.len() + usize::from(p.primary.is_some());
            let want = if p.moving.is_some() { 3 } else { 2 };
            assert_eq!(copies, want, "partition {}: {p:?}", p.id);
        }
    }
    c.until("the set rebalanced over 4 nodes", |s| {
        s.phase == Some(Phase::Ready)
            && s.partitions.iter().any(|p| {
                p.primary.as_deref() == Some("orders-3")
                    || p.replicas.iter().any(|r| r == "orders-3")
            })
    })
    .await;
    for p in &c.status().partitions {
        assert_eq!(p.replicas.len(), 1, "partition {}: {p:?}", p.id);
    }
    assert_keys(&client, 200).await;
    c.assert_copies_agree().await;
    println!("SCENARIO operator-restart-scale ok restarts=12 lost_acked=0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_anywhere_in_a_rolling_update_converges_with_writes_kept() {
    let mut c = Cluster::new(3, "nodes: 3\npartitions: 4").await;
    c.ready().await;
    let client = c.client().await;
    write_keys(&client, 100).await;
    // The template moves on; the pods stay on the old revision (OnDelete).
    let label = |api: &FakeApi, i: usize, rev: &str| {
        let rev = rev.to_string();
        api.edit::<Pod>(NS, &format!("{NAME}-{i}"), move |pod| {
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(rev)
        });
    };
    for i in 0..3 {
        label(&c.api, i, "rev-old");
    }
    c.api.edit::<StatefulSet>(NS, NAME, |sts| {
        sts["status"] = json!({"replicas": 3, "observedGeneration": sts["metadata"]["generation"],
            "currentRevision": "rev-old", "updateRevision": "rev-new"});
    });
    let mut restarted = Vec::new();
    let mut restarts = 0;
    let end = tokio::time::Instant::now() + DEADLINE;
    let mut next_kill = tokio::time::Instant::now();
    loop {
        // Kill the operator every 60 to 210 ms while the rollout goes on.
        if tokio::time::Instant::now() >= next_kill && restarted.len() < 3 {
            c.kill_operator();
            c.start_operator();
            restarts += 1;
            next_kill =
                tokio::time::Instant::now() + Duration::from_millis(60 + 37 * (restarts % 5));
        }
        let missing: Vec<usize> = (0..3)
            .filter(|i| c.api.get::<Pod>(NS, &format!("{NAME}-{i}")).is_none())
            .collect();
        assert!(missing.len() <= 1, "more than one pod down: {missing:?}");
        for i in missing {
            let name = format!("{NAME}-{i}");
            let status = c.status();
            assert!(
                status
                    .partitions
                    .iter()
                    .all(|p| p.primary.as_deref() != Some(name.as_str())),
                "{name} deleted while primary: {:?}",
                status.partitions
            );
            c.nodes.kill(i);
            c.nodes.start(i).await;
            c.api.insert(&c.nodes.pod(i));
            label(&c.api, i, "rev-new");
            restarted.push(i);
        }
        assert_single_primaries(&c).await;
        if restarted.len() >= 3 && c.status().phase == Some(Phase::Ready) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the rolling update did not finish: restarted {restarted:?}, {:#?}",
            c.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut once = restarted.clone();
    once.sort_unstable();
    assert_eq!(once, [0, 1, 2], "each pod restarted once: {restarted:?}");
    assert_keys(&client, 100).await;
    c.assert_copies_agree().await;
    println!("SCENARIO operator-restart-rollout ok restarts={restarts} lost_acked=0");
}
