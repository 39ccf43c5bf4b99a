//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process
//! serves) and `/readyz` (it has reached the API server and is not shutting down). A standby
//! replica is ready too: it is ready to take over.

use crate::error::{Error, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the endpoints read.
#[derive(Clone)]
pub struct Shared {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Whether the operator is ready.
    pub ready: watch::Receiver<bool>,
}

/// The router.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if *shared.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(shared): State<Shared>) -> (StatusCode, String) {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
        Ok(()) => (StatusCode::OK, body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        ),
    }
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            what: "serving HTTP",
            source,
        })
}
