//! Watches: a streaming response of newline-delimited watch events, as kube-apiserver sends.
//!
//! kube-runtime's watcher lists, then watches from the list's resourceVersion, resumes from the
//! last resourceVersion it saw when a watch ends, and relists when told 410. Each of those
//! paths is real here: a watch from a resourceVersion replays the kept history after it; one
//! older than the history gets a single `ERROR` event with a 410 `Expired` status (with HTTP
//! 200, as the real server answers); a watch ends at its `timeoutSeconds`; bookmarks (when
//! asked for) come periodically and at the end, never ahead of an event still queued.

use super::Shared;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventType, Key, State, View};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::time::Instant;

/// Most events queued for one watch; a watch that falls further behind is closed.
pub const WATCH_QUEUE: usize = 1024;
/// How often a watch that asked for bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a watch stays open.
pub(crate) const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a list or watch selects.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// The resource's group.
    pub group: String,
    /// The resource's plural.
    pub plural: String,
    /// The namespace, or all.
    pub namespace: Option<String>,
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
}

/// One event queued for a watch.
#[derive(Debug, Clone)]
pub(crate) struct WatchItem {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`, as this watch sees it.
    pub kind: &'static str,
    /// The object.
    pub object: Arc<Value>,
}

impl Filter {
    fn covers(&self, key: &Key) -> bool {
        key.0 == self.group
            && key.1 == self.plural
            && self.namespace.as_ref().is_none_or(|ns| *ns == key.2)
    }

    fn selects(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// Whether the object stored at `key` is selected.
    pub fn matches(&self, key: &Key, obj: &Value) -> bool {
        self.covers(key) && self.selects(obj)
    }

    /// The event as this watch sees it: a modification that makes an object start matching
    /// is `ADDED`, one that makes it stop is `DELETED`, as from the real watch cache.
    pub fn translate(&self, e: &Event) -> Option<WatchItem> {
        if !self.covers(&e.key) {
            return None;
        }
        let now = self.selects(&e.object);
        let kind = match e.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = e.previous.as_ref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        Some(WatchItem {
            rv: e.rv,
            kind,
            object: Arc::clone(&e.object),
        })
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// With `ADDED` for every object selected now (no resourceVersion, or `0`).
    Current,
    /// With `ADDED` for every object selected now, then a bookmark marking the end of the
    /// initial events (`sendInitialEvents=true`).
    InitialEvents,
    /// With the kept events after this resourceVersion.
    After(u64),
}

/// How a watch behaves.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Whether bookmarks were asked for.
    pub bookmarks: bool,
    /// When the watch ends.
    pub timeout: Duration,
}

fn line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

fn bookmark(view: &View, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end && let Some(m) = meta.as_object_mut() {
        m.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    line(
        "BOOKMARK",
        &json!({"apiVersion": view.api_version, "kind": view.kind, "metadata": meta}),
    )
}

/// The stream of one watch.
struct Watch {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WatchItem>,
    pending: VecDeque<Bytes>,
    view: View,
    after: u64,
    bookmarks: bool,
    deadline: Instant,
    next_bookmark: Instant,
    done: bool,
}

impl Watch {
    fn push(&mut self, item: WatchItem) {
        if item.rv > self.after {
            self.after = item.rv;
            self.pending
                .push_back(line(item.kind, &self.view.object(&item.object)));
        }
    }

    /// Queues a bookmark at the current resourceVersion after every event queued before it.
    /// Events reach the queue while the store's lock is held, so draining it under the lock
    /// leaves none older than the bookmark behind. A watch closed for falling behind gets no
    /// bookmark: it lost events, and a bookmark would skip them.
    fn bookmark(&mut self) {
        let shared = Arc::clone(&self.shared);
        let current = {
            let state = shared.lock();
            loop {
                match self.rx.try_recv() {
                    Ok(item) => self.push(item),
                    Err(TryRecvError::Empty) => break Some(state.rv),
                    Err(TryRecvError::Disconnected) => break None,
                }
            }
        };
        match current {
            Some(rv) if self.bookmarks => {
                self.after = self.after.max(rv);
                self.pending
                    .push_back(bookmark(&self.view, self.after, false));
            }
            Some(_) => {}
            None => self.done = true,
        }
    }

    async fn next(mut self) -> Option<(Bytes, Self)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((b, self));
            }
            if self.done {
                return None;
            }
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(item) => self.push(item),
                    None => self.done = true,
                },
                () = tokio::time::sleep_until(self.deadline) => {
                    self.bookmark();
                    self.done = true;
                }
                () = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => {
                    self.bookmark();
                    self.next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
                }
            }
        }
    }
}

/// The body of a watch.
pub(crate) type WatchBody = futures::stream::BoxStream<'static, Bytes>;

/// A watch body with the single 410 `ERROR` event the real server sends for a resourceVersion
/// older than its history.
fn expired(since: u64, oldest: u64) -> WatchBody {
    let status = ApiError::expired(format!("too old resource version: {since} ({oldest})")).body();
    Box::pin(futures::stream::iter([line("ERROR", &status)]))
}

/// Opens a watch on `state` (locked by the caller, so nothing happens between the snapshot of
/// the initial events and the subscription).
pub(crate) fn open(
    shared: Arc<Shared>,
    state: &mut State,
    filter: Filter,
    start: Start,
    view: View,
    options: &Options,
) -> WatchBody {
    let mut pending = VecDeque::new();
    let after = match start {
        Start::Current | Start::InitialEvents => {
            for (key, obj) in state.list(&filter.group, &filter.plural, filter.namespace.as_deref())
            {
                if filter.matches(&key, &obj) {
                    pending.push_back(line("ADDED", &view.object(&obj)));
                }
            }
            if matches!(start, Start::InitialEvents) {
                pending.push_back(bookmark(&view, state.rv, true));
            }
            state.rv
        }
        Start::After(since) => {
            if since < state.compacted {
                return expired(since, state.compacted + 1);
            }
            for item in state.replay(&filter, since) {
                pending.push_back(line(item.kind, &view.object(&item.object)));
            }
            since.max(state.rv)
        }
    };
    let rx = state.subscribe(filter, WATCH_QUEUE);
    let now = Instant::now();
    let watch = Watch {
        shared,
        rx,
        pending,
        view,
        after,
        bookmarks: options.bookmarks,
        deadline: now + options.timeout.min(MAX_WATCH_TIMEOUT),
        next_bookmark: now + BOOKMARK_INTERVAL,
        done: false,
    };
    Box::pin(futures::stream::unfold(watch, Watch::next))
}
