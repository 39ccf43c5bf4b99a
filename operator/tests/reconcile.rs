//! Reconcile tests: the real reconcile against the in-memory API server, checking exactly which
//! writes each reconcile makes (the way controller-rs checks its API calls with tower-test).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::FakeApi;
use common::nodes::Nodes;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use partita_api::{Phase, ReplicatedPartitionSet};
use partita_operator::controller::{Context, Settings, error_policy, reconcile};
use partita_operator::metrics::Metrics;
use partita_operator::resources;
use serde_json::{Value, json};
use std::sync::Arc;

const NS: &str = "shop";
const NAME: &str = "orders";

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    client_id: usize,
    /// The pods' nodes: real `partita-node` processes, started by `add_pods`.
    nodes: tokio::sync::Mutex<Nodes>,
}

impl Harness {
    /// A server holding the set described by `spec_yaml`, and a context talking to it.
    fn new(spec_yaml: &str) -> Self {
        let api = FakeApi::new();
        let set = ReplicatedPartitionSet {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            spec: serde_yaml::from_str(spec_yaml).unwrap(),
            status: None,
        };
        api.insert(&set);
        let partitions = set.spec.partitions as u32;
        let nodes = Nodes::new(NAME, NS, partitions);
        let settings = Settings {
            default_image: "partita/partita-node:test".into(),
            namespace: None,
            instance: "operator-0".into(),
            node_grpc_port: nodes.grpc_port,
            node_resp_port: nodes.resp_port,
            ..Settings::default()
        };
        let (client, client_id) = api.client_with_id();
        let ctx = Context::new(client, settings, Metrics::default());
        Self {
            api,
            ctx,
            client_id,
            nodes: tokio::sync::Mutex::new(nodes),
        }
    }

    fn set(&self) -> ReplicatedPartitionSet {
        self.api.get(NS, NAME).unwrap()
    }

    /// One reconcile of the stored set; returns its action and the writes it made.
    async fn reconcile(&self) -> (Action, Vec<String>) {
        self.api.take_calls();
        let action = reconcile(Arc::new(self.set()), self.ctx.clone())
            .await
            .unwrap();
        (action, self.api.take_writes())
    }

    /// Adds the finalizer and creates everything, as the first two reconciles of a new set do.
    async fn created(spec_yaml: &str) -> Self {
        let h = Self::new(spec_yaml);
        let (_, writes) = h.reconcile().await;
        assert_eq!(writes, ["JSONPATCH replicatedpartitionsets/orders"]);
        let (_, writes) = h.reconcile().await;
        assert!(
            writes.iter().any(|w| w == "APPLY statefulsets/orders"),
            "{writes:?}"
        );
        h
    }

    fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        self.api
            .edit::<ReplicatedPartitionSet>(NS, NAME, |obj| edit(&mut obj["spec"]));
    }

    /// Pods `0..ready.len()`; a ready one runs a real node at its pod IP, as a kubelet would.
    async fn add_pods(&self, ready: &[bool]) {
        let mut nodes = self.nodes.lock().await;
        for (i, r) in ready.iter().enumerate() {
            let mut pod = nodes.pod(i);
            if *r {
                nodes.start(i).await;
            } else if let Some(status) = pod.status.as_mut() {
                status.pod_ip = None;
                status.conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    ..PodCondition::default()
                }]);
            }
            self.api.insert(&pod);
        }
    }

    /// Reconciles until the set is Ready (placement and replica sync take a few rounds),
    /// waiting for the nodes between rounds; panics after 30 s.
    async fn until_ready(&self) {
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            self.reconcile().await;
            if self.set().status.and_then(|s| s.phase) == Some(Phase::Ready) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "not Ready in time: {:?}",
                self.set().status
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn events(&self) -> Vec<(String, String)> {
        let calls = self.api.take_calls();
        calls
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
            .map(|c| {
                let b = c.body.clone().unwrap_or_default();
                (
                    b["type"].as_str().unwrap_or_default().into(),
                    b["reason"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }

    fn condition(&self, kind: &str) -> (String, String, String) {
        let status = self.set().status.unwrap();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
            .clone();
        (c.status, c.reason, c.message)
    }

    fn replicas(&self) -> i32 {
        self.api
            .get::<StatefulSet>(NS, NAME)
            .unwrap()
            .spec
            .replicas
            .unwrap()
    }
}

const OWNED: [&str; 5] = [
    "APPLY configmaps/orders-config",
    "APPLY services/orders-peers",
    "APPLY services/orders",
    "APPLY poddisruptionbudgets/orders",
    "APPLY statefulsets/orders",
];

#[tokio::test]
async fn create_adds_the_finalizer_then_applies_every_owned_object_and_status() {
    let h = Harness::new("nodes: 3");
    let (action, writes) = h.reconcile().await;
    assert_eq!(writes, ["JSONPATCH replicatedpartitionsets/orders"]);
    assert_eq!(action, Action::await_change());
    assert_eq!(h.set().metadata.finalizers.unwrap(), [resources::FINALIZER]);

    h.api.take_calls();
    let action = reconcile(Arc::new(h.set()), h.ctx.clone()).await.unwrap();
    let calls = h.api.take_calls();
    let writes: Vec<_> = calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| c.summary())
        .collect();
    let mut expected: Vec<String> = OWNED.iter().map(|s| s.to_string()).collect();
    expected.push("APPLY replicatedpartitionsets/orders/status".into());
    expected.push("POST events".into());
    assert_eq!(writes, expected);
    // Every apply is server-side apply under the operator's field manager, forced.
    for c in calls
        .iter()
        .filter(|c| c.content_type == "application/apply-patch+yaml")
    {
        assert!(
            c.query.contains("fieldManager=partita-operator") && c.query.contains("force=true"),
            "{}",
            c.query
        );
    }
    // No partition is placed before the nodes answer: it looks again soon.
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(1)));

    let sts: StatefulSet = h.api.get(NS, NAME).unwrap();
    let owner = &sts.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ReplicatedPartitionSet", NAME, Some(true))
    );
    assert_eq!(sts.spec.replicas, Some(3));
    let cm: ConfigMap = h.api.get(NS, "orders-config").unwrap();
    assert_eq!(cm.data.unwrap()["PARTITA_PARTITIONS"], "16");

    let status = h.set().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(h.condition("Progressing").0, "True");
    let (ready, reason, message) = h.condition("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Provisioning"));
    assert!(message.contains("0 of 3 nodes ready"), "{message}");
}

#[tokio::test]
async fn an_unchanged_set_causes_no_writes_at_all() {
    let h = Harness::created("nodes: 3").await;
    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "a second look at an unchanged set wrote"
    );

    h.add_pods(&[true, true, true]).await;
    h.until_ready().await;
    let status = h.set().status.unwrap();
    assert_eq!(status.ready_nodes, 3);
    assert_eq!(status.partitions.len(), 16, "every partition is placed");

    for _ in 0..3 {
        let (action, writes) = h.reconcile().await;
        assert_eq!(writes, Vec::<String>::new(), "a ready, unchanged set wrote");
        assert_eq!(action, Action::requeue(std::time::Duration::from_secs(300)));
    }
}

#[tokio::test]
async fn a_spec_change_applies_only_what_it_changes_and_records_it() {
    let h = Harness::created("nodes: 3").await;
    h.add_pods(&[true, true, true]).await;
    h.until_ready().await;

    h.edit_spec(|s| s["nodes"] = json!(5));
    h.api.take_calls();
    reconcile(Arc::new(h.set()), h.ctx.clone()).await.unwrap();
    let calls = h.api.take_calls();
    let writes: Vec<_> = calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| c.summary())
        .collect();
    assert_eq!(
        writes[..2],
        [
            "APPLY statefulsets/orders",
            "APPLY replicatedpartitionsets/orders/status"
        ]
    );
    let reasons: Vec<_> = calls
        .iter()
        .filter(|c| c.path.ends_with("/events"))
        .map(|c| c.body.clone().unwrap()["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("Scaled")]);
    assert_eq!(h.replicas(), 5);
    let status = h.set().status.unwrap();
    assert_eq!(
        (status.phase, status.observed_generation),
        (Some(Phase::Updating), Some(2))
    );
    assert!(
        h.condition("Progressing")
            .2
            .contains("scaling from 3 to 5 nodes")
    );

    // A configuration change rewrites the ConfigMap and, through the config hash, the pods'
    // template.
    h.edit_spec(|s| s["writeConcern"] = json!("All"));
    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes[..2],
        [
            "APPLY configmaps/orders-config",
            "APPLY statefulsets/orders"
        ]
    );
    let cm: ConfigMap = h.api.get(NS, "orders-config").unwrap();
    assert_eq!(cm.data.unwrap()["PARTITA_WRITE_CONCERN"], "all");
}

#[tokio::test]
async fn a_paused_set_gets_status_but_no_other_writes() {
    let h = Harness::created("nodes: 3").await;
    h.edit_spec(|s| {
        s["paused"] = json!(true);
        s["nodes"] = json!(4);
    });
    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        ["APPLY replicatedpartitionsets/orders/status", "POST events"]
    );
    assert_eq!(h.replicas(), 3, "paused, yet the StatefulSet was scaled");
    assert_eq!(h.set().status.unwrap().phase, Some(Phase::Paused));
    assert_eq!(h.condition("Progressing").1, "Paused");
    let (_, writes) = h.reconcile().await;
    assert_eq!(writes, Vec::<String>::new());

    h.edit_spec(|s| s["paused"] = json!(false));
    h.reconcile().await;
    assert_eq!(h.replicas(), 4, "resumed, the pending change is applied");
}

#[tokio::test]
async fn an_invalid_spec_ends_in_a_condition_not_a_crash_loop() {
    let h = Harness::created("nodes: 3").await;
    h.api.take_calls();
    h.edit_spec(|s| s["image"] = json!("Partita/Node:"));
    let (action, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        ["APPLY replicatedpartitionsets/orders/status", "POST events"]
    );
    assert_eq!(
        action,
        Action::await_change(),
        "an invalid spec waits for the user"
    );
    let (ready, reason, message) = h.condition("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidImage"));
    assert!(
        message.contains("\"Partita/Node:\" cannot be pulled"),
        "{message}"
    );
    assert_eq!(h.set().status.unwrap().phase, Some(Phase::Invalid));
    let sts: StatefulSet = h.api.get(NS, NAME).unwrap();
    let image = sts.spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(
        image, "partita/partita-node:test",
        "the running objects are left alone"
    );
    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "the same invalid spec wrote again"
    );

    // Shrinking storage is caught against the existing StatefulSet.
    h.edit_spec(|s| {
        s["image"] = Value::Null;
        s["storage"] = json!({"size": "512Mi"});
    });
    h.reconcile().await;
    let (_, reason, message) = h.condition("Ready");
    assert_eq!(reason, "StorageShrunk");
    assert!(
        message.contains("cannot shrink from 1Gi to 512Mi"),
        "{message}"
    );
    h.api.take_calls();
    h.edit_spec(|s| s["storage"] = json!({"size": "1Gi"}));
    reconcile(Arc::new(h.set()), h.ctx.clone()).await.unwrap();
    let events = h.events();
    assert!(
        events.contains(&("Normal".into(), "SpecValid".into())),
        "{events:?}"
    );
    assert_eq!(h.set().status.unwrap().phase, Some(Phase::Updating));
    assert_eq!(h.condition("Ready").1, "Updating");
}

fn claim(set: &str, ordinal: usize) -> PersistentVolumeClaim {
    let mut labels = resources::labels(set);
    labels.insert(resources::SET_LABEL.into(), set.into());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("data-{set}-{ordinal}")),
            namespace: Some(NS.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..PersistentVolumeClaim::default()
    }
}

#[tokio::test]
async fn a_name_no_service_can_carry_ends_in_a_condition_without_touching_anything() {
    let api = FakeApi::new();
    let name = "orders.v2";
    let mut set = ReplicatedPartitionSet::new(name, serde_yaml::from_str("nodes: 3").unwrap());
    set.metadata.namespace = Some(NS.into());
    api.insert(&set);
    let ctx = Context::new(api.client(), Settings::default(), Metrics::default());
    let get = || api.get::<ReplicatedPartitionSet>(NS, name).unwrap();
    reconcile(Arc::new(get()), ctx.clone()).await.unwrap();
    api.take_calls();
    let action = reconcile(Arc::new(get()), ctx.clone()).await.unwrap();
    let calls = api.take_calls();
    let summaries: Vec<String> = calls.iter().map(|c| c.summary()).collect();
    assert_eq!(
        summaries,
        [
            format!("APPLY replicatedpartitionsets/{name}/status"),
            "POST events".to_string()
        ],
        "nothing is read or applied under a bad name"
    );
    assert_eq!(action, Action::await_change());
    let status = get().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Invalid));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "InvalidName");
    assert!(
        ready.message.contains("at most 52 lowercase letters"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn an_object_of_the_same_name_that_is_not_the_sets_is_never_taken_over() {
    let h = Harness::new("nodes: 3");
    let theirs = k8s_openapi::api::core::v1::Service {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    h.api.insert(&theirs);
    h.reconcile().await;
    let (action, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        ["APPLY replicatedpartitionsets/orders/status", "POST events"],
        "nothing of the set is applied while a name is taken"
    );
    assert_eq!(
        action,
        Action::requeue(std::time::Duration::from_secs(5)),
        "it looks again"
    );
    let (ready, reason, message) = h.condition("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "NameConflict"));
    assert!(
        message.contains("Service orders already exists"),
        "{message}"
    );
    let service: k8s_openapi::api::core::v1::Service = h.api.get(NS, NAME).unwrap();
    assert!(service.metadata.owner_references.is_none() && service.spec.is_none());

    // Once it is gone, the set's own objects are created.
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(h.api.client(), NS);
    services
        .delete(NAME, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let (_, writes) = h.reconcile().await;
    for owned in OWNED {
        assert!(writes.contains(&owned.to_string()), "{writes:?}");
    }
}

#[tokio::test]
async fn a_template_change_rolls_one_pod_at_a_time_after_moving_its_primaries_away() {
    let h = Harness::created("nodes: 3\npartitions: 6").await;
    h.add_pods(&[true, true, true]).await;
    let revision = |rev: &str| {
        let rev = rev.to_string();
        h.api.edit::<StatefulSet>(NS, NAME, move |sts| {
            sts["status"] = json!({"replicas": 3, "observedGeneration": sts["metadata"]["generation"],
                "currentRevision": "orders-old", "updateRevision": rev});
        });
    };
    let pod_at = |i: usize, rev: &str| {
        let rev = rev.to_string();
        h.api.edit::<Pod>(NS, &format!("{NAME}-{i}"), move |pod| {
            pod["metadata"]["labels"]["controller-revision-hash"] = json!(rev)
        });
    };
    revision("orders-old");
    (0..3).for_each(|i| pod_at(i, "orders-old"));
    h.until_ready().await;

    // The image changed: the StatefulSet's template moved on, the pods did not (OnDelete).
    revision("orders-new");
    h.reconcile().await;
    let status = h.set().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Updating));
    let (_, _, message) = h.condition("Progressing");
    assert!(
        message.contains("3 of 3 pods run an older revision"),
        "{message}"
    );

    // The operator deletes one pod at a time; the test plays the StatefulSet controller and
    // the kubelet, recreating a deleted pod from the new revision with its node restarted on
    // its own data.
    let mut restarted = Vec::new();
    let mut rolling_events = 0;
    let end = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        h.api.take_calls();
        reconcile(Arc::new(h.set()), h.ctx.clone()).await.unwrap();
        rolling_events += h
            .events()
            .iter()
            .filter(|(_, reason)| reason == "RollingUpdate")
            .count();
        let status = h.set().status.unwrap();
        let missing: Vec<usize> = (0..3)
            .filter(|i| h.api.get::<Pod>(NS, &format!("{NAME}-{i}")).is_none())
            .collect();
        assert!(
            missing.len() <= 1,
            "more than one pod down at once: {missing:?}"
        );
        for &i in &missing {
            let name = format!("{NAME}-{i}");
            assert!(
                status
                    .partitions
                    .iter()
                    .all(|p| p.primary.as_deref() != Some(&name)),
                "{name} was deleted while primary of something: {:?}",
                status.partitions
            );
            let mut nodes = h.nodes.lock().await;
            nodes.kill(i);
            nodes.start(i).await;
            h.api.insert(&nodes.pod(i));
            drop(nodes);
            pod_at(i, "orders-new");
            restarted.push(i);
        }
        if status.phase == Some(Phase::Ready) && restarted.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the rollout did not finish: restarted {restarted:?}, status {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(restarted, [2, 1, 0], "highest ordinal first, each once");
    // Events of one reason are aggregated into a series after the first, as kube's recorder does.
    assert!(rolling_events >= 1, "no RollingUpdate event");
}

#[tokio::test]
async fn deletion_runs_the_finalizer_and_keeps_volumes_by_default() {
    let h = Harness::created("nodes: 2\nreplicationFactor: 2").await;
    h.api.insert(&claim(NAME, 0));
    h.api.insert(&claim(NAME, 1));
    let sets: kube::Api<ReplicatedPartitionSet> = kube::Api::namespaced(h.api.client(), NS);
    sets.delete(NAME, &Default::default()).await.unwrap();
    assert!(
        h.set().metadata.deletion_timestamp.is_some(),
        "the finalizer holds the set"
    );

    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        ["POST events", "JSONPATCH replicatedpartitionsets/orders"]
    );
    assert!(
        h.api.get::<ReplicatedPartitionSet>(NS, NAME).is_none(),
        "the set is gone"
    );
    assert_eq!(
        h.api.names("persistentvolumeclaims"),
        ["data-orders-0", "data-orders-1"]
    );
}

#[tokio::test]
async fn deletion_deletes_only_this_sets_volumes_when_asked() {
    let h =
        Harness::created("nodes: 2\nreplicationFactor: 2\nstorage: {deleteWithSet: true}").await;
    let sts: StatefulSet = h.api.get(NS, NAME).unwrap();
    let policy = sts.spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
    h.api.insert(&claim(NAME, 0));
    h.api.insert(&claim(NAME, 1));
    h.api.insert(&claim("other", 0));
    let sets: kube::Api<ReplicatedPartitionSet> = kube::Api::namespaced(h.api.client(), NS);
    sets.delete(NAME, &Default::default()).await.unwrap();

    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        [
            "DELETE persistentvolumeclaims",
            "POST events",
            "JSONPATCH replicatedpartitionsets/orders"
        ]
    );
    assert!(h.api.get::<ReplicatedPartitionSet>(NS, NAME).is_none());
    assert_eq!(h.api.names("persistentvolumeclaims"), ["data-other-0"]);
}

#[tokio::test]
async fn a_paused_set_keeps_its_volumes_when_deleted_even_if_asked_not_to() {
    let h =
        Harness::created("nodes: 2\nreplicationFactor: 2\nstorage: {deleteWithSet: true}").await;
    h.edit_spec(|s| s["paused"] = json!(true));
    h.api.insert(&claim(NAME, 0));
    let sets: kube::Api<ReplicatedPartitionSet> = kube::Api::namespaced(h.api.client(), NS);
    sets.delete(NAME, &Default::default()).await.unwrap();
    let (_, writes) = h.reconcile().await;
    assert_eq!(
        writes,
        ["POST events", "JSONPATCH replicatedpartitionsets/orders"],
        "no volume is deleted while paused"
    );
    assert!(h.api.get::<ReplicatedPartitionSet>(NS, NAME).is_none());
    assert_eq!(h.api.names("persistentvolumeclaims"), ["data-orders-0"]);
}

#[tokio::test]
async fn failures_retry_with_exponential_backoff_that_resets_on_success() {
    let h = Harness::created("nodes: 3").await;
    let set = Arc::new(h.set());
    h.api.set_down(h.client_id, true);
    let mut delays = Vec::new();
    for _ in 0..4 {
        let error = reconcile(set.clone(), h.ctx.clone()).await.unwrap_err();
        assert!(error.to_string().contains("kubernetes API"), "{error}");
        delays.push(error_policy(set.clone(), &error, h.ctx.clone()));
    }
    let expected = [500, 1000, 2000, 4000].map(|ms| {
        let base = std::time::Duration::from_millis(ms);
        (base, base + base / 10)
    });
    for (action, (low, high)) in delays.iter().zip(expected) {
        let ok = (0..=high.as_millis() as u64)
            .map(std::time::Duration::from_millis)
            .filter(|d| *d >= low)
            .any(|d| *action == Action::requeue(d));
        assert!(ok, "{action:?} is not between {low:?} and {high:?}");
    }
    h.api.set_down(h.client_id, false);
    reconcile(set.clone(), h.ctx.clone()).await.unwrap();
    h.api.set_down(h.client_id, true);
    let error = reconcile(set.clone(), h.ctx.clone()).await.unwrap_err();
    let after = error_policy(set, &error, h.ctx.clone());
    let first =
        (500..=550).any(|ms| after == Action::requeue(std::time::Duration::from_millis(ms)));
    assert!(first, "a success did not reset the backoff: {after:?}");
}
