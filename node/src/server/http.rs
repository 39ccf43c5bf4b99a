//! HTTP endpoints for Kubernetes and Prometheus: `/healthz` (the process serves), `/readyz`
//! (storage recovered and listeners up; false while shutting down) and `/metrics`.

use crate::engine::Engine;
use crate::metrics::{self, PartitionLabel};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves the endpoints on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(engine);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|&down| down).await;
        })
        .await
}

async fn readyz(State(engine): State<Arc<Engine>>) -> (StatusCode, &'static str) {
    if engine.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text(State(engine): State<Arc<Engine>>) -> String {
    let m = metrics::get();
    for p in engine.partitions() {
        let label = PartitionLabel {
            partition: p.id().to_string(),
        };
        m.keys.get_or_create(&label).set(p.read(|s| s.len()) as i64);
        m.log_bytes.get_or_create(&label).set(p.log_info().0 as i64);
        m.snapshot_age_seconds
            .get_or_create(&label)
            .set(metrics::snapshot_age_seconds(p.id()));
    }
    metrics::encode()
}
