//! The in-memory API server, driven through `kube::Client`, `kube::Api` and kube-runtime as the
//! box's components drive it. Each test states one behaviour of kube-apiserver the box relies
//! on. Nothing sleeps and hopes: every wait is on a condition or a stream, under a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use partita_api::ReplicatedPartitionSet;
use partita_e2e::api::{MAX_BODY, MemoryApi, WATCH_QUEUE};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(5);

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

fn setup() -> (MemoryApi, Client, Api<ConfigMap>) {
    let mem = MemoryApi::new();
    let client = mem.client();
    let cms = Api::default_namespaced(client.clone());
    (mem, client, cms)
}

/// The API error of a failed call, checked to have `code`.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>, code: u16) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, code, "unexpected status: {status:?}");
            *status
        }
        other => panic!("expected an API error {code}, got {other:?}"),
    }
}

/// Waits for `check` to hold, polling, under the deadline.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(DEADLINE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// The next item of a stream, under the deadline.
async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("timed out waiting for a stream item")
}

/// A raw request, for what `kube::Api` has no method for.
async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> kube::Result<Value> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .unwrap();
    client.request::<Value>(request).await
}

async fn install_crd(client: &Client) -> Api<ReplicatedPartitionSet> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &ReplicatedPartitionSet::crd())
        .await
        .unwrap();
    Api::default_namespaced(client.clone())
}

fn rps(name: &str) -> ReplicatedPartitionSet {
    serde_json::from_value(json!({
        "apiVersion": "partita.dev/v1alpha1", "kind": "ReplicatedPartitionSet",
        "metadata": {"name": name}, "spec": {"nodes": 3},
    }))
    .unwrap()
}

fn owner_ref(owner: &impl Resource<DynamicType = ()>, block: bool) -> Value {
    json!({
        "apiVersion": owner_api_version(owner), "kind": kind_of(owner),
        "name": owner.meta().name, "uid": owner.meta().uid,
        "controller": true, "blockOwnerDeletion": block,
    })
}

fn owner_api_version<K: Resource<DynamicType = ()>>(_: &K) -> String {
    K::api_version(&()).into_owned()
}

fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> String {
    K::kind(&()).into_owned()
}

fn statefulset(name: &str, owner: Option<Value>) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "spec": {
            "replicas": 1, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "node", "image": "partita:1"}]}},
        },
    }))
    .unwrap()
}

fn pod(name: &str, owner: Option<Value>, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
        "spec": {"nodeName": node, "containers": [{"name": "node", "image": "partita:1"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_list_and_replace_with_stale_version() {
    let (_, _, cms) = setup();
    let created = cms
        .create(&PostParams::default(), &cm("a", &[], &[("k", "1")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    api_error(
        cms.create(&PostParams::default(), &cm("a", &[], &[])).await,
        409,
    );
    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "1");

    let mut generated = cm("", &[], &[]);
    generated.metadata.generate_name = Some("gen-".into());
    let generated = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv > rv1);

    let mut stale = created.clone();
    let mut fresh = cms.get("a").await.unwrap();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > list_rv);
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let conflict = api_error(cms.replace("a", &PostParams::default(), &stale).await, 409);
    assert_eq!(conflict.reason, "Conflict");

    // Without a resourceVersion, a replace is unconditional.
    stale.metadata.resource_version = None;
    let replaced = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(replaced.data.unwrap()["k"], "3");
    api_error(
        cms.replace("missing", &PostParams::default(), &cm("missing", &[], &[]))
            .await,
        404,
    );
}

#[tokio::test]
async fn namespace_in_body_must_match_the_path() {
    let (_, client, cms) = setup();
    let mut other = cm("x", &[], &[]);
    other.metadata.namespace = Some("elsewhere".into());
    api_error(cms.create(&PostParams::default(), &other).await, 400);
    // Namespaces need not exist.
    let scoped: Api<ConfigMap> = Api::namespaced(client, "never-created");
    scoped
        .create(&PostParams::default(), &cm("x", &[], &[]))
        .await
        .unwrap();
}

#[tokio::test]
async fn merge_and_json_patches_with_preconditions() {
    let (_, _, cms) = setup();
    let created = cms
        .create(&PostParams::default(), &cm("p", &[], &[("a", "1")]))
        .await
        .unwrap();
    let patched = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"b": "2", "a": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data.clone().unwrap(),
        [("b".to_string(), "2".to_string())].into()
    );

    // A failing test operation refuses the whole patch.
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "wrong"},
        {"op": "replace", "path": "/data/b", "value": "3"},
    ]))
    .unwrap();
    api_error(
        cms.patch("p", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
        422,
    );
    let passing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "replace", "path": "/data/b", "value": "3"},
    ]))
    .unwrap();
    let patched = cms
        .patch("p", &PatchParams::default(), &Patch::Json::<()>(passing))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["b"], "3");

    // A resourceVersion in a patch is a precondition.
    let stale =
        json!({"metadata": {"resourceVersion": created.resource_version()}, "data": {"c": "4"}});
    let status = api_error(
        cms.patch("p", &PatchParams::default(), &Patch::Merge(stale))
            .await,
        409,
    );
    assert_eq!(status.reason, "Conflict");
    let current = cms.get("p").await.unwrap().resource_version();
    let fresh = json!({"metadata": {"resourceVersion": current}, "data": {"c": "4"}});
    cms.patch("p", &PatchParams::default(), &Patch::Merge(fresh))
        .await
        .unwrap();

    api_error(
        cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({})))
            .await,
        404,
    );
    let strategic = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"d": "5"}})),
        )
        .await;
    assert_eq!(api_error(strategic, 415).reason, "UnsupportedMediaType");
    // Nothing above that failed changed anything.
    let data = cms.get("p").await.unwrap().data.unwrap();
    assert_eq!(
        data,
        [("b".into(), "3".into()), ("c".into(), "4".into())].into()
    );
}

fn managed(obj: &impl Resource, manager: &str, subresource: Option<&str>) -> Option<Value> {
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some(manager) && m.subresource.as_deref() == subresource)
        .map(|m| serde_json::to_value(m).unwrap())
}

#[tokio::test]
async fn apply_creates_updates_and_removes_omitted_fields() {
    let (_, _, cms) = setup();
    let pp = PatchParams::apply("alice");
    let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s", "labels": {"team": "a"}}, "data": {"x": "1", "y": "2"}});
    let created = cms.patch("s", &pp, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let entry = managed(&created, "alice", None).unwrap();
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:data": {"f:x": {}, "f:y": {}}, "f:metadata": {"f:labels": {"f:team": {}}}})
    );

    // Identical apply: nothing changes, not even the resourceVersion.
    let again = cms.patch("s", &pp, &Patch::Apply(&desired)).await.unwrap();
    assert_eq!(again.resource_version(), created.resource_version());
    assert_eq!(
        again.metadata.managed_fields,
        created.metadata.managed_fields
    );

    // A field alice applied before and omits now is removed, the label too.
    let smaller = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}});
    let updated = cms.patch("s", &pp, &Patch::Apply(&smaller)).await.unwrap();
    assert_eq!(
        updated.data.unwrap(),
        [("x".to_string(), "1".to_string())].into()
    );
    assert!(updated.metadata.labels.unwrap_or_default().is_empty());

    // Apply needs a field manager, and a kind.
    let no_manager = cms
        .patch("s", &PatchParams::default(), &Patch::Apply(&smaller))
        .await;
    api_error(no_manager, 400);
    let no_kind = cms
        .patch("s", &pp, &Patch::Apply(json!({"metadata": {"name": "s"}})))
        .await;
    api_error(no_kind, 400);
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let (_, _, cms) = setup();
    let body = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": v}});
    cms.patch("c", &PatchParams::apply("alice"), &Patch::Apply(body("1")))
        .await
        .unwrap();

    let conflict = api_error(
        cms.patch("c", &PatchParams::apply("bob"), &Patch::Apply(body("2")))
            .await,
        409,
    );
    assert_eq!(conflict.reason, "Conflict");
    assert!(
        conflict
            .message
            .contains("Apply failed with 1 conflict: conflict with \"alice\"")
            && conflict.message.contains(".data.x"),
        "{}",
        conflict.message
    );

    // The same value is shared ownership, not a conflict.
    let shared = cms
        .patch("c", &PatchParams::apply("bob"), &Patch::Apply(body("1")))
        .await
        .unwrap();
    assert!(managed(&shared, "alice", None).is_some() && managed(&shared, "bob", None).is_some());

    // Force takes the field over: alice no longer owns it, and now conflicts with bob.
    let forced = cms
        .patch(
            "c",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(body("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");
    let conflict = api_error(
        cms.patch("c", &PatchParams::apply("alice"), &Patch::Apply(body("1")))
            .await,
        409,
    );
    assert!(conflict.message.contains("\"bob\""), "{}", conflict.message);
}

#[tokio::test]
async fn an_update_takes_ownership_and_a_later_apply_conflicts() {
    let (_, _, cms) = setup();
    let body = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "data": {"x": v}});
    cms.patch(
        "u",
        &PatchParams::apply("operator"),
        &Patch::Apply(body("1")),
    )
    .await
    .unwrap();
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    let edited = cms
        .patch("u", &edit, &Patch::Merge(json!({"data": {"x": "9"}})))
        .await
        .unwrap();
    let entry = managed(&edited, "kubectl-edit", None).unwrap();
    assert_eq!(entry["operation"], "Update");
    assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:x": {}}}));
    assert!(
        managed(&edited, "operator", None).is_none(),
        "the operator lost its only field"
    );

    let conflict = api_error(
        cms.patch(
            "u",
            &PatchParams::apply("operator"),
            &Patch::Apply(body("1")),
        )
        .await,
        409,
    );
    assert!(
        conflict
            .message
            .contains("conflict with \"kubectl-edit\" using v1: .data.x"),
        "{}",
        conflict.message
    );
    // An update without a field manager is recorded as "unknown".
    let anonymous = cms
        .patch(
            "u",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"y": "1"}})),
        )
        .await
        .unwrap();
    assert!(managed(&anonymous, "unknown", None).is_some());
}

#[tokio::test]
async fn status_subresource_is_separate_and_generation_follows_spec() {
    let (_, client, _) = setup();
    let sets: Api<StatefulSet> = Api::default_namespaced(client);
    let mut sts = statefulset("db", None);
    sts.status = Some(serde_json::from_value(json!({"replicas": 7})).unwrap());
    let created = sets.create(&PostParams::default(), &sts).await.unwrap();
    assert!(created.status.is_none(), "status is not set by a create");
    assert_eq!(created.metadata.generation, Some(1));

    // The main resource ignores status; a spec change bumps generation.
    let patched = sets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}, "status": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert!(patched.status.is_none());

    // A label change is metadata: no generation bump.
    let labelled = sets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    // The status subresource changes status only.
    let status = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"replicas": 9}, "status": {"replicas": 3, "readyReplicas": 2}});
    let written = sets
        .patch_status(
            "db",
            &PatchParams::apply("sts-controller"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(written.status.as_ref().unwrap().ready_replicas, Some(2));
    assert_eq!(written.spec.replicas, Some(3));
    assert_eq!(written.metadata.generation, Some(2));
    let entry = managed(&written, "sts-controller", Some("status")).unwrap();
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}})
    );

    // An immutable part of a StatefulSet's spec cannot change.
    let immutable = sets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceName": "other"}})),
        )
        .await;
    assert_eq!(api_error(immutable, 422).reason, "Invalid");
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_, _, cms) = setup();
    for (name, labels) in [
        ("a", vec![("app", "db"), ("tier", "1")]),
        ("b", vec![("app", "db"), ("tier", "2")]),
        ("c", vec![("app", "web")]),
        ("d", vec![]),
    ] {
        cms.create(&PostParams::default(), &cm(name, &labels, &[]))
            .await
            .unwrap();
    }
    let names = |selector: &'static str| {
        let cms = cms.clone();
        async move {
            let list = cms
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap();
            list.items
                .iter()
                .map(|o| o.name_any())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    assert_eq!(names("app=db").await, "a,b");
    assert_eq!(names("app==db,tier=2").await, "b");
    assert_eq!(names("app!=db").await, "c,d");
    assert_eq!(names("tier in (1, 3)").await, "a");
    assert_eq!(names("app notin (db)").await, "c,d");
    assert_eq!(names("tier").await, "a,b");
    assert_eq!(names("!tier").await, "c,d");
    assert_eq!(names("tier>1").await, "b");
    for bad in ["app=(db", "in (x)", "tier in x", "a b", "app=not valid"] {
        let status = api_error(cms.list(&ListParams::default().labels(bad)).await, 400);
        assert_eq!(status.reason, "BadRequest");
    }
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = cms
        .list(&ListParams::default().fields("metadata.name!=c,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(not_name.items.len(), 3);
    api_error(
        cms.list(&ListParams::default().fields("data.x=1")).await,
        400,
    );
}

#[tokio::test]
async fn watcher_and_reflector_see_added_modified_deleted() {
    let (_, _, cms) = setup();
    cms.create(&PostParams::default(), &cm("before", &[], &[]))
        .await
        .unwrap();
    let mut events = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut events).await, Some(Ok(Event::Init))));
    assert!(
        matches!(next(&mut events).await, Some(Ok(Event::InitApply(o))) if o.name_any() == "before")
    );
    assert!(matches!(next(&mut events).await, Some(Ok(Event::InitDone))));

    let (reader, writer) = kube::runtime::reflector::store();
    let reflected = kube::runtime::reflector(
        writer,
        watcher::watcher(cms.clone(), watcher::Config::default()),
    );
    tokio::spawn(reflected.for_each(|_| async {}));
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    cms.create(&PostParams::default(), &cm("w", &[], &[]))
        .await
        .unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();

    assert!(
        matches!(next(&mut events).await, Some(Ok(Event::Apply(o))) if o.name_any() == "w" && o.data.as_ref().is_none_or(|d| d.is_empty()))
    );
    assert!(matches!(next(&mut events).await, Some(Ok(Event::Apply(o))) if o.data.is_some()));
    match next(&mut events).await {
        Some(Ok(Event::Delete(o))) => {
            // The last state, with a resourceVersion newer than the last change.
            assert_eq!(o.data.unwrap()["k"], "v");
        }
        other => panic!("expected a deletion, got {other:?}"),
    }
    until("the reflector to see the deletion", || {
        let reader = reader.clone();
        async move {
            reader
                .state()
                .iter()
                .map(|o| o.name_any())
                .collect::<Vec<_>>()
                == ["before"]
        }
    })
    .await;
}

#[tokio::test]
async fn watch_from_a_version_replays_and_selector_changes_are_added_or_deleted() {
    let (_, _, cms) = setup();
    let created = cms
        .create(&PostParams::default(), &cm("r", &[("sel", "yes")], &[]))
        .await
        .unwrap();
    let from = created.resource_version().unwrap();
    cms.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "1"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await
    .unwrap();

    let mut all = cms
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    for _ in 0..3 {
        assert!(matches!(
            next(&mut all).await,
            Some(Ok(WatchEvent::Modified(_)))
        ));
    }
    let selected = WatchParams::default().labels("sel=yes");
    let mut some = cms.watch(&selected, &from).await.unwrap().boxed();
    assert!(matches!(
        next(&mut some).await,
        Some(Ok(WatchEvent::Modified(_)))
    ));
    assert!(matches!(
        next(&mut some).await,
        Some(Ok(WatchEvent::Deleted(_)))
    ));
    assert!(matches!(
        next(&mut some).await,
        Some(Ok(WatchEvent::Added(_)))
    ));

    // From "0": ADDED for everything there now.
    let mut current = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next(&mut current).await, Some(Ok(WatchEvent::Added(o))) if o.name_any() == "r")
    );
    cms.delete("r", &DeleteParams::default()).await.unwrap();
    assert!(matches!(
        next(&mut current).await,
        Some(Ok(WatchEvent::Deleted(_)))
    ));

    // Watches across all namespaces.
    let all_ns: Api<ConfigMap> = Api::all(cms.clone().into_client());
    let mut everywhere = all_ns
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let other: Api<ConfigMap> = Api::namespaced(all_ns.clone().into_client(), "other");
    other
        .create(&PostParams::default(), &cm("o", &[], &[]))
        .await
        .unwrap();
    assert!(
        matches!(next(&mut everywhere).await, Some(Ok(WatchEvent::Added(o))) if o.namespace().as_deref() == Some("other"))
    );
}

#[tokio::test]
async fn a_watch_older_than_the_history_gets_410_and_the_watcher_relists() {
    let mem = MemoryApi::with_history(3);
    let cms: Api<ConfigMap> = Api::default_namespaced(mem.client());
    let created = cms
        .create(&PostParams::default(), &cm("old", &[], &[]))
        .await
        .unwrap();
    let mut watcher = watcher::watcher(cms.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next(&mut watcher).await, Some(Ok(Event::Init))));
    assert!(matches!(
        next(&mut watcher).await,
        Some(Ok(Event::InitApply(_)))
    ));
    assert!(matches!(
        next(&mut watcher).await,
        Some(Ok(Event::InitDone))
    ));
    // The watcher watches from its list's resourceVersion only when polled next; by then the
    // history has moved past it.
    for i in 0..5 {
        let n = i.to_string();
        cms.patch(
            "old",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": n}})),
        )
        .await
        .unwrap();
    }

    let mut raw = cms
        .watch(
            &WatchParams::default(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match next(&mut raw).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 event, got {other:?}"),
    }
    assert!(
        next(&mut raw).await.is_none(),
        "the watch ends after the 410"
    );

    match next(&mut watcher).await {
        Some(Err(watcher::Error::WatchError(status))) => assert_eq!(status.code, 410),
        other => panic!("expected the watcher's 410, got {other:?}"),
    }
    assert!(
        matches!(next(&mut watcher).await, Some(Ok(Event::Init))),
        "the watcher relists"
    );
    assert!(
        matches!(next(&mut watcher).await, Some(Ok(Event::InitApply(o))) if o.data.as_ref().unwrap()["n"] == "4")
    );
    assert!(matches!(
        next(&mut watcher).await,
        Some(Ok(Event::InitDone))
    ));
}

#[tokio::test]
async fn a_watch_that_falls_behind_is_closed() {
    let (_, _, cms) = setup();
    cms.create(&PostParams::default(), &cm("busy", &[], &[]))
        .await
        .unwrap();
    let from = cms.get("busy").await.unwrap().resource_version().unwrap();
    let mut slow = cms
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    let writes = WATCH_QUEUE + 10;
    for i in 0..writes {
        let n = i.to_string();
        cms.patch(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"n": n}})),
        )
        .await
        .unwrap();
    }
    let mut seen = 0;
    while let Some(event) = next(&mut slow).await {
        assert!(matches!(event, Ok(WatchEvent::Modified(_))));
        seen += 1;
    }
    assert!(
        seen < writes,
        "the watch was closed after {seen} events instead of growing"
    );
}

#[tokio::test(start_paused = true)]
async fn bookmarks_come_at_the_end_of_a_watch() {
    let (_, _, cms) = setup();
    cms.create(&PostParams::default(), &cm("b", &[], &[]))
        .await
        .unwrap();
    let params = WatchParams::default().timeout(2);
    let mut stream = cms.watch(&params, "0").await.unwrap().boxed();
    assert!(matches!(
        next(&mut stream).await,
        Some(Ok(WatchEvent::Added(_)))
    ));
    let current = cms.get("b").await.unwrap().resource_version().unwrap();
    match next(&mut stream).await {
        Some(Ok(WatchEvent::Bookmark(b))) => assert_eq!(b.metadata.resource_version, current),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    assert!(
        next(&mut stream).await.is_none(),
        "the watch ends at its timeout"
    );
}

#[tokio::test]
async fn streaming_lists_send_initial_events_and_a_marked_bookmark() {
    let (_, _, cms) = setup();
    cms.create(&PostParams::default(), &cm("s", &[], &[]))
        .await
        .unwrap();
    let mut events =
        watcher::watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(next(&mut events).await, Some(Ok(Event::Init))));
    assert!(
        matches!(next(&mut events).await, Some(Ok(Event::InitApply(o))) if o.name_any() == "s")
    );
    assert!(matches!(next(&mut events).await, Some(Ok(Event::InitDone))));
}

#[tokio::test]
async fn finalizers_hold_deletion_and_none_can_be_added_meanwhile() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let (_, _, cms) = setup();
    let name = "partita.dev/test-cleanup";
    let obj = cms
        .create(&PostParams::default(), &cm("f", &[], &[]))
        .await
        .unwrap();
    let run = |obj: ConfigMap| {
        let cms = cms.clone();
        async move {
            finalizer(&cms, name, Arc::new(obj), |event| async move {
                match event {
                    Fin::Apply(_) | Fin::Cleanup(_) => {
                        Ok::<_, std::io::Error>(Action::await_change())
                    }
                }
            })
            .await
            .unwrap();
        }
    };
    // kube-runtime's helper adds its finalizer with a JSON patch guarded by a test of null.
    run(obj).await;
    assert_eq!(cms.get("f").await.unwrap().finalizers(), [name]);

    let deleted = cms
        .delete("f", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleted.metadata.deletion_timestamp.is_some());
    let held = cms.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());

    let added = cms
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [name, "another/one"]}})),
        )
        .await;
    let status = api_error(added, 422);
    assert!(
        status
            .message
            .contains("no new finalizers can be added if the object is being deleted"),
        "{}",
        status.message
    );

    // Cleanup: the helper removes its finalizer (test + remove) and the object goes.
    run(held).await;
    assert!(cms.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_preconditions_must_match() {
    use kube::api::Preconditions;
    let (_, _, cms) = setup();
    let obj = cms
        .create(&PostParams::default(), &cm("d", &[], &[]))
        .await
        .unwrap();
    let wrong_rv = DeleteParams::default().preconditions(Preconditions {
        resource_version: Some("1".into()),
        uid: None,
    });
    cms.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "b"}})),
    )
    .await
    .unwrap();
    api_error(cms.delete("d", &wrong_rv).await, 409);
    let wrong_uid = DeleteParams::default().preconditions(Preconditions {
        uid: Some("nope".into()),
        resource_version: None,
    });
    api_error(cms.delete("d", &wrong_uid).await, 409);
    let right = DeleteParams::default().preconditions(Preconditions {
        uid: obj.uid(),
        resource_version: None,
    });
    cms.delete("d", &right).await.unwrap();
    api_error(cms.delete("d", &right).await, 404);
}

#[tokio::test]
async fn bound_pods_are_deleted_gracefully_and_binding_happens_once() {
    let (_, client, _) = setup();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let created = pods
        .create(&PostParams::default(), &pod("p", None, None))
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node-1"}});
    let status: kube::core::Status = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await
        .unwrap();
    assert_eq!(status.code, 201);
    let bound = pods.get("p").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let again: kube::Result<kube::core::Status> = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await;
    assert_eq!(api_error(again, 409).reason, "Conflict");
    // A pod's node cannot be changed by an update.
    let moved = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": "node-2"}})),
        )
        .await;
    api_error(moved, 422);

    let deleting = pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(30));
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert!(
        pods.get_opt("p").await.unwrap().is_some(),
        "a bound pod waits for its kubelet"
    );
    pods.delete("p", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());

    // An unbound pod goes at once.
    pods.create(&PostParams::default(), &pod("q", None, None))
        .await
        .unwrap();
    pods.delete("q", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("q").await.unwrap().is_none());
}

#[tokio::test]
async fn owner_references_cascade_and_orphans_keep_dependents() {
    let (_, client, _) = setup();
    let sets = install_crd(&client).await;
    let statefulsets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    let owner = sets
        .create(&PostParams::default(), &rps("db"))
        .await
        .unwrap();
    let sts = statefulsets
        .create(
            &PostParams::default(),
            &statefulset("db", Some(owner_ref(&owner, true))),
        )
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("db-0", Some(owner_ref(&sts, true)), None),
    )
    .await
    .unwrap();
    sets.delete("db", &DeleteParams::default()).await.unwrap();
    until("the dependents to be collected", || {
        let (statefulsets, pods) = (statefulsets.clone(), pods.clone());
        async move {
            statefulsets.get_opt("db").await.unwrap().is_none()
                && pods.get_opt("db-0").await.unwrap().is_none()
        }
    })
    .await;

    let owner = sets
        .create(&PostParams::default(), &rps("kept"))
        .await
        .unwrap();
    statefulsets
        .create(
            &PostParams::default(),
            &statefulset("kept", Some(owner_ref(&owner, true))),
        )
        .await
        .unwrap();
    sets.delete("kept", &DeleteParams::orphan()).await.unwrap();
    until("the owner to go", || {
        let sets = sets.clone();
        async move { sets.get_opt("kept").await.unwrap().is_none() }
    })
    .await;
    let orphan = statefulsets.get("kept").await.unwrap();
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let (_, client, cms) = setup();
    let sets = install_crd(&client).await;
    let owner = sets
        .create(&PostParams::default(), &rps("fg"))
        .await
        .unwrap();
    let mut dependent = cm("fg-config", &[], &[]);
    dependent.metadata.owner_references = Some(vec![
        serde_json::from_value(owner_ref(&owner, true)).unwrap(),
    ]);
    dependent.metadata.finalizers = Some(vec!["partita.dev/hold".into()]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();

    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    sets.delete("fg", &params).await.unwrap();
    let waiting = sets.get("fg").await.unwrap();
    assert!(
        waiting
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    assert!(
        cms.get("fg-config")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    cms.patch(
        "fg-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    until("owner and dependent to go", || {
        let (sets, cms) = (sets.clone(), cms.clone());
        async move {
            sets.get_opt("fg").await.unwrap().is_none()
                && cms.get_opt("fg-config").await.unwrap().is_none()
        }
    })
    .await;
}

#[tokio::test]
async fn delete_collection_deletes_what_the_selector_selects() {
    let (_, _, cms) = setup();
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        cms.create(&PostParams::default(), &cm(name, &[("app", app)], &[]))
            .await
            .unwrap();
    }
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=x"),
        )
        .await
        .unwrap();
    assert_eq!(deleted.left().unwrap().items.len(), 2);
    let left = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        left.items.iter().map(|o| o.name_any()).collect::<Vec<_>>(),
        ["c"]
    );
}

#[tokio::test]
async fn custom_resources_are_served_only_once_their_crd_exists() {
    let (_, client, _) = setup();
    let sets: Api<ReplicatedPartitionSet> = Api::default_namespaced(client.clone());
    assert_eq!(
        api_error(sets.list(&ListParams::default()).await, 404).reason,
        "NotFound"
    );
    install_crd(&client).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .get("replicatedpartitionsets.partita.dev")
        .await
        .unwrap();
    let established = crd.status.unwrap().conditions.unwrap_or_default();
    assert!(
        established
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    // The schema prunes unknown fields and applies defaults, as the real server does.
    let body = json!({"apiVersion": "partita.dev/v1alpha1", "kind": "ReplicatedPartitionSet", "metadata": {"name": "raw"}, "spec": {"nodes": 3, "bogus": true}});
    let stored = raw(
        &client,
        "POST",
        "/apis/partita.dev/v1alpha1/namespaces/default/replicatedpartitionsets",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    )
    .await
    .unwrap();
    assert!(stored["spec"].get("bogus").is_none());
    assert!(
        stored["spec"].get("partitions").is_some(),
        "defaulted: {}",
        stored["spec"]
    );

    // Its status subresource is honoured.
    let status = json!({"apiVersion": "partita.dev/v1alpha1", "kind": "ReplicatedPartitionSet", "status": {"observedGeneration": 1}});
    let written = sets
        .patch_status(
            "raw",
            &PatchParams::apply("partita-operator").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(written.status.unwrap().observed_generation, Some(1));
    let ignored = sets
        .patch(
            "raw",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().observed_generation, Some(1));

    // Deleting the CRD deletes its resources, then stops serving them.
    crds.delete(
        "replicatedpartitionsets.partita.dev",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    until("the resource to stop being served", || {
        let sets = sets.clone();
        async move { matches!(sets.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 404) }
    })
    .await;
}

#[tokio::test]
async fn unsupported_requests_fail_loudly() {
    let (_, client, cms) = setup();
    cms.create(&PostParams::default(), &cm("u", &[], &[]))
        .await
        .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api_error(cms.create(&dry, &cm("v", &[], &[])).await, 400);
    assert!(
        cms.get_opt("v").await.unwrap().is_none(),
        "a dry run did not create anything"
    );
    api_error(
        cms.delete("u", &DeleteParams::default().dry_run()).await,
        400,
    );
    api_error(
        cms.list(&ListParams::default().fields("spec.nodeName=x"))
            .await,
        400,
    );
    api_error(
        cms.list(&ListParams::default().continue_token("abc")).await,
        400,
    );
    let scale = raw(
        &client,
        "GET",
        "/apis/apps/v1/namespaces/default/statefulsets/x/scale",
        "application/json",
        vec![],
    )
    .await;
    api_error(scale, 405);
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    api_error(secrets.list(&ListParams::default()).await, 404);
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413() {
    let (_, client, cms) = setup();
    let path = "/api/v1/namespaces/default/configmaps";
    let status = api_error(
        raw(
            &client,
            "POST",
            path,
            "application/json",
            vec![b' '; MAX_BODY + 1],
        )
        .await,
        413,
    );
    assert_eq!(status.reason, "RequestEntityTooLarge");
    // Just under the limit is read (and then judged on its content).
    let padded = format!(
        "{}{{\"metadata\": {{\"name\": \"fits\"}}}}",
        " ".repeat(MAX_BODY - 100)
    );
    raw(
        &client,
        "POST",
        path,
        "application/json",
        padded.into_bytes(),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("fits").await.unwrap().is_some());
}

#[tokio::test]
async fn discovery_version_and_metadata_only_requests() {
    let (_, client, cms) = setup();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "apps"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(core.resources.iter().any(|r| r.name == "pods/binding"));
    cms.create(
        &PostParams::default(),
        &cm("m", &[("a", "b")], &[("k", "v")]),
    )
    .await
    .unwrap();
    let metadata = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(
        metadata.items[0].metadata.labels.as_ref().unwrap()["a"],
        "b"
    );
}

#[tokio::test]
async fn other_kinds_the_box_uses() {
    let (_, client, _) = setup();
    // Leases: leader election replaces with the resourceVersion it read.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let first = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = first.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    api_error(
        leases
            .replace("leader", &PostParams::default(), &mine)
            .await,
        409,
    );

    // Nodes are cluster-scoped and keep their status from a create.
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}})).unwrap();
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert!(created.status.is_some() && created.metadata.namespace.is_none());

    // Claims: only the requested size may change.
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .unwrap();
    api_error(
        claims
            .patch(
                "data",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storageClassName": "fast"}})),
            )
            .await,
        422,
    );

    // Events published by kube-runtime's recorder: a create, then a merge patch for the series.
    use kube::runtime::events::{Event as Ev, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test".into(),
            instance: None,
        },
    );
    let reference = created.object_ref(&());
    let event = Ev {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("twice".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().unwrap().count, 2);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_content_first() {
    let (_, client, _) = setup();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut held = cm("held", &[], &[]);
    held.metadata.finalizers = Some(vec!["partita.dev/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        api_error(
            cms.create(&PostParams::default(), &cm("new", &[], &[]))
                .await,
            403
        )
        .reason,
        "Forbidden"
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    until("the namespace to go", || {
        let namespaces = namespaces.clone();
        async move { namespaces.get_opt("doomed").await.unwrap().is_none() }
    })
    .await;
}
