//! The objects, the global resourceVersion counter, the bounded watch history and the open
//! watches, all behind one lock.
//!
//! One lock and one counter make every write a single step in one total order, as etcd's
//! revision does for a real server: a list's resourceVersion names exactly the writes it
//! includes, and a watch started from it misses none and repeats none. Watch events are queued
//! to every open watch while the lock is held, so they reach each watch in that same order; a
//! watch whose bounded queue is full is closed, as the real server closes a watch that cannot
//! keep up (its client resumes from the last resourceVersion it saw, or relists after 410).

use super::registry::{self, CRD_GROUP, CRD_PLURAL, Kind, Registry};
use super::status::{ApiError, ApiResult};
use super::watch::{Filter, WatchItem};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where an object is stored: group, plural, namespace (`""` when cluster-scoped), name.
pub(crate) type Key = (String, String, String, String);

/// Most objects stored, all kinds together; past it creates fail, as a full etcd refuses them.
pub(crate) const MAX_OBJECTS: usize = 100_000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed from the store.
    Deleted,
}

/// One change, as kept in the watch history.
#[derive(Debug)]
pub(crate) struct Event {
    /// The resourceVersion the change made.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (its last state, for a deletion).
    pub object: Arc<Value>,
    /// The object before a modification, so selector-filtered watches can tell an object that
    /// started or stopped matching.
    pub previous: Option<Arc<Value>>,
}

/// One open watch: what it selects, and its bounded queue.
pub(crate) struct Watcher {
    /// What it selects.
    pub filter: Filter,
    /// Its queue.
    pub tx: mpsc::Sender<WatchItem>,
}

/// The whole state of the API server.
pub(crate) struct State {
    /// The served resources.
    pub registry: Registry,
    /// The objects.
    pub objects: BTreeMap<Key, Arc<Value>>,
    /// Where each uid's object is, for owner references.
    pub uids: HashMap<String, Key>,
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Events newer than `compacted`, oldest first.
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The newest resourceVersion no longer in the history: a watch from an older one is 410.
    pub compacted: u64,
    watchers: Vec<Watcher>,
    hasher: RandomState,
    serial: u64,
}

impl State {
    /// An empty store with the built-in kinds, keeping `history_limit` watch events.
    pub fn new(history_limit: usize) -> Self {
        let registry = registry::builtins()
            .into_iter()
            .map(|k| (k.key(), Arc::new(k)))
            .collect();
        Self {
            registry,
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            watchers: Vec::new(),
            hasher: RandomState::new(),
            serial: 0,
        }
    }

    /// The served kind an object key belongs to.
    pub fn kind_of(&self, key: &Key) -> Option<Arc<Kind>> {
        self.registry.get(&(key.0.clone(), key.1.clone())).cloned()
    }

    /// The objects of `group`/`plural`, in `namespace` if given, ordered by namespace and name.
    pub fn list(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<(Key, Arc<Value>)> {
        let start = (
            group.to_string(),
            plural.to_string(),
            String::new(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.0 == group && k.1 == plural)
            .filter(|(k, _)| namespace.is_none_or(|ns| k.2 == ns))
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// A new uid.
    pub fn uid(&mut self) -> String {
        self.serial += 1;
        let a = self.hasher.hash_one((self.serial, 1u8));
        let b = self.hasher.hash_one((self.serial, 2u8));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Five random characters, as `generateName` appends.
    pub fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.serial += 1;
        let mut n = self.hasher.hash_one((self.serial, 3u8));
        let mut out = String::new();
        for _ in 0..5 {
            let i = (n % ALPHABET.len() as u64) as usize;
            out.push(ALPHABET.get(i).map_or('x', |c| *c as char));
            n /= ALPHABET.len() as u64;
        }
        out
    }

    /// Refuses a create when the store is full.
    pub fn check_capacity(&self) -> ApiResult<()> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(ApiError::new(
                507,
                "InternalError",
                format!(
                    "database space exceeded: the in-memory API holds at most {MAX_OBJECTS} objects"
                ),
            ));
        }
        Ok(())
    }

    fn next_rv(&mut self, obj: &mut Value) -> u64 {
        self.rv += 1;
        set_meta(obj, "resourceVersion", json!(self.rv.to_string()));
        self.rv
    }

    /// Stores a new object, stamping its resourceVersion.
    pub fn insert(&mut self, key: Key, mut obj: Value) -> Arc<Value> {
        let rv = self.next_rv(&mut obj);
        let obj = Arc::new(obj);
        if let Some(uid) = meta_str(&obj, "uid") {
            self.uids.insert(uid.to_string(), key.clone());
        }
        self.objects.insert(key.clone(), Arc::clone(&obj));
        self.crd_changed(&key, Some(&obj));
        self.record(Event {
            rv,
            kind: EventType::Added,
            key,
            object: Arc::clone(&obj),
            previous: None,
        });
        obj
    }

    /// Stores a changed object (or removes it, when that change completed its deletion).
    pub fn commit(&mut self, key: &Key, mut obj: Value) -> Arc<Value> {
        if removable(key, &obj) {
            return self.remove(key, Some(obj));
        }
        let rv = self.next_rv(&mut obj);
        let obj = Arc::new(obj);
        let previous = self.objects.insert(key.clone(), Arc::clone(&obj));
        self.crd_changed(key, Some(&obj));
        self.record(Event {
            rv,
            kind: EventType::Modified,
            key: key.clone(),
            object: Arc::clone(&obj),
            previous,
        });
        obj
    }

    /// Removes an object; `last` is its final state if it changed on the way out. The DELETED
    /// event carries that state with a new resourceVersion.
    pub fn remove(&mut self, key: &Key, last: Option<Value>) -> Arc<Value> {
        let stored = self.objects.remove(key);
        let mut obj = match (last, stored) {
            (Some(v), _) => v,
            (None, Some(v)) => (*v).clone(),
            (None, None) => return Arc::new(Value::Null),
        };
        let rv = self.next_rv(&mut obj);
        let obj = Arc::new(obj);
        if let Some(uid) = meta_str(&obj, "uid") {
            self.uids.remove(uid);
        }
        self.crd_changed(key, None);
        self.record(Event {
            rv,
            kind: EventType::Deleted,
            key: key.clone(),
            object: Arc::clone(&obj),
            previous: None,
        });
        obj
    }

    /// Serves, or stops serving, the resource of a CustomResourceDefinition that changed.
    fn crd_changed(&mut self, key: &Key, crd: Option<&Value>) {
        if key.0 != CRD_GROUP || key.1 != CRD_PLURAL {
            return;
        }
        let own = |registry: &Registry, k: &(String, String)| {
            registry.get(k).is_none_or(|existing| existing.is_custom())
        };
        match crd.and_then(registry::from_crd) {
            Some(kind) => {
                let k = kind.key();
                if own(&self.registry, &k) {
                    self.registry.insert(k, Arc::new(kind));
                }
            }
            None => {
                // Removed (or no longer served): stop serving what its name said it served.
                if let Some((plural, group)) = key.3.split_once('.') {
                    let k = (group.to_string(), plural.to_string());
                    if self.registry.get(&k).is_some_and(|e| e.is_custom()) {
                        self.registry.remove(&k);
                    }
                }
            }
        }
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            match w.filter.translate(&event) {
                None => true,
                // A full queue closes the watch: its client resumes or relists.
                Some(item) => w.tx.try_send(item).is_ok(),
            }
        });
        self.history.push_back(event);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// The kept events after `after` that `filter` selects, as its watch would have seen them.
    pub fn replay(&self, filter: &Filter, after: u64) -> Vec<WatchItem> {
        self.history
            .iter()
            .filter(|e| e.rv > after)
            .filter_map(|e| filter.translate(e))
            .collect()
    }

    /// Opens a watch: from now on, events `filter` selects are queued for it, at most
    /// `capacity` at a time.
    pub fn subscribe(&mut self, filter: Filter, capacity: usize) -> mpsc::Receiver<WatchItem> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.watchers.push(Watcher { filter, tx });
        rx
    }
}

/// Whether an object whose deletion began has nothing left holding it: no finalizers (and for
/// a namespace, no `spec.finalizers`) and no grace period still running.
pub(crate) fn removable(key: &Key, obj: &Value) -> bool {
    let namespace_finalizers = key.0.is_empty()
        && key.1 == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
    deleting(obj)
        && finalizers(obj).is_empty()
        && !namespace_finalizers
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            <= 0
}

/// `metadata.<field>` as a string.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Sets `metadata.<field>`.
pub(crate) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(field.to_string(), value);
        }
    }
}

/// Removes `metadata.<field>`.
pub(crate) fn remove_meta(obj: &mut Value, field: &str) -> Option<Value> {
    obj.get_mut("metadata")?.as_object_mut()?.remove(field)
}

/// `metadata.finalizers`.
pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.finalizers` (removing the field when empty, as the real server stores it).
pub(crate) fn set_finalizers(obj: &mut Value, list: &[String]) {
    if list.is_empty() {
        remove_meta(obj, "finalizers");
    } else {
        set_meta(obj, "finalizers", json!(list));
    }
}

/// Whether the object's deletion has begun.
pub(crate) fn deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// The uids of the object's owners.
pub(crate) fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The current time as the API writes timestamps (RFC 3339, whole seconds), `plus` seconds
/// from now.
pub(crate) fn timestamp(plus: i64) -> String {
    let now = jiff::Timestamp::now().as_second().saturating_add(plus);
    jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// How a client sees stored objects: in the version it asked for, whole or (for
/// `Accept: ...;as=PartialObjectMetadata`) only their metadata.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The `apiVersion` of the request.
    pub api_version: String,
    /// The object kind.
    pub kind: String,
    /// Whether only metadata is wanted.
    pub metadata_only: bool,
}

impl View {
    /// The object as this client sees it.
    pub fn object(&self, obj: &Value) -> Value {
        if self.metadata_only {
            return json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        let mut out = obj.clone();
        if let Some(map) = out.as_object_mut() {
            map.insert("apiVersion".into(), json!(self.api_version));
            map.insert("kind".into(), json!(self.kind));
        }
        out
    }

    /// A list of objects at resourceVersion `rv`.
    pub fn list(&self, items: Vec<Value>, rv: u64) -> Value {
        let (api_version, kind) = if self.metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (self.api_version.clone(), format!("{}List", self.kind))
        };
        json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        })
    }
}
