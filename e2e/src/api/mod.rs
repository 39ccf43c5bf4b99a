//! An in-memory Kubernetes API server, called by `kube::Client` directly as a tower service.
//!
//! No machine that runs the suite has a kube-apiserver, yet the box runs the real operator
//! (kube-runtime's controller, watcher, finalizer helper, event recorder, server-side apply),
//! a StatefulSet controller and a kubelet, all through `kube::Client`. What they rely on must
//! behave as on a real server, or the box proves nothing; so this is not a mock that agrees
//! with whatever it is told. It keeps:
//! - one global resourceVersion counter, bumped only by real changes (an identical apply is a
//!   no-op and wakes no watch), and a bounded watch history (older resourceVersions get 410);
//! - watches with replay, bookmarks, timeouts, selector-aware ADDED/MODIFIED/DELETED, and a
//!   bounded queue per watch (a watch that falls behind is closed);
//! - create, replace, merge and JSON patch, server-side apply with managed fields and
//!   conflicts, status subresources, generation, preconditions, label and field selectors;
//! - finalizers, graceful pod deletion, the pod binding subresource, owner-reference garbage
//!   collection (background, foreground, orphan), namespace and CRD cleanup;
//! - CRDs: creating one serves its resource, with its schema's pruning and defaulting.
//!
//! What it does not implement fails loudly instead of succeeding quietly: dry runs, strategic
//! merge patch (415), strict field validation, list pagination tokens, Table output, and
//! subresources other than `status` and `pods/binding` (405). Request bodies over
//! [`MAX_BODY`] get 413. Schema validation (OpenAPI types, CEL rules) and admission are not
//! performed.

mod apply;
mod gc;
mod handlers;
mod patch;
mod registry;
mod schema;
mod selector;
mod status;
mod store;
mod watch;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

pub use watch::{BOOKMARK_INTERVAL, WATCH_QUEUE};

/// The largest request body accepted (3 MiB, kube-apiserver's limit); larger ones get 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Watch events kept by [`MemoryApi::new`] for watches that resume from a resourceVersion.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The response body type of [`ApiService`].
pub type ApiBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// State shared by every clone of the API and its watches.
pub(crate) struct Shared {
    state: Mutex<store::State>,
}

impl Shared {
    /// The state, locked. A panic while it was held cannot leave it half-written in a way
    /// later requests could not cope with, so a poisoned lock is taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, store::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-memory API server. Clones share one state.
#[derive(Clone)]
pub struct MemoryApi {
    shared: Arc<Shared>,
}

impl Default for MemoryApi {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryApi")
            .field("objects", &state.objects.len())
            .field("resource_version", &state.rv)
            .finish()
    }
}

impl MemoryApi {
    /// An empty API serving the built-in kinds, keeping [`DEFAULT_HISTORY`] watch events.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty API keeping `limit` watch events: a watch from a resourceVersion older than
    /// the oldest kept event gets a 410 `Expired` event, as from a real server whose watch
    /// cache has moved on.
    pub fn with_history(limit: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(store::State::new(limit)),
            }),
        }
    }

    /// A client of this API, with `default` as its default namespace.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// The tower service that serves requests, for `kube::Client::new` or any other caller.
    pub fn service(&self) -> ApiService {
        ApiService {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The current resourceVersion: the number of changes made so far.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

/// The API as a `tower_service::Service` of HTTP requests. Clones share one state.
#[derive(Clone)]
pub struct ApiService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService").finish_non_exhaustive()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> tower_service::Service<http::Request<B>> for ApiService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<ApiBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(serve(shared, request).await) })
    }
}

fn json_response(code: u16, body: &serde_json::Value) -> http::Response<ApiBody> {
    let code = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// Reads the body, refusing one over [`MAX_BODY`] with 413.
async fn read_body<B>(headers: &http::HeaderMap, body: B) -> status::ApiResult<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        status::ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(status::ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

async fn serve<B>(shared: Arc<Shared>, request: http::Request<B>) -> http::Response<ApiBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return json_response(e.code, &e.body()),
    };
    let header = |name: http::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let request = handlers::Request {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: handlers::Query::parse(parts.uri.query().unwrap_or("")),
        content_type: content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        accept: header(http::header::ACCEPT),
        user_agent: header(http::header::USER_AGENT),
        body,
    };
    match handlers::route(&shared, &request) {
        Ok(handlers::Reply::Json(code, value)) => json_response(code, &value),
        Ok(handlers::Reply::Watch(stream)) => {
            let frames = stream.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
            http::Response::builder()
                .status(http::StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(StreamBody::new(frames).boxed_unsync())
                .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
        }
        Err(e) => json_response(e.code, &e.body()),
    }
}
