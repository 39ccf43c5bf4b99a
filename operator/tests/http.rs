//! The operator's HTTP endpoints on a real loopback socket: health, readiness, and the metrics a
//! reconcile leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::FakeApi;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use partita_api::ReplicatedPartitionSet;
use partita_operator::controller::{Context, Settings, reconcile};
use partita_operator::http::{self, Shared};
use partita_operator::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn health_readiness_and_reconcile_metrics_are_served() {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let (ready_tx, ready) = watch::channel(true);
    let (stop_tx, mut stop) = watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared {
        registry: Arc::new(registry),
        ready,
    };
    let server = tokio::spawn(http::serve(listener, shared, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(addr, "/readyz").await.0, 200);
    ready_tx.send(false).unwrap();
    assert_eq!(get(addr, "/readyz").await.0, 503);

    // One reconcile that succeeds (it adds the finalizer) and one that fails.
    let api = FakeApi::new();
    let mut set = ReplicatedPartitionSet::new("orders", serde_yaml::from_str("nodes: 3").unwrap());
    set.metadata = ObjectMeta {
        name: Some("orders".into()),
        namespace: Some("shop".into()),
        ..ObjectMeta::default()
    };
    api.insert(&set);
    let (client, id) = api.client_with_id();
    let ctx = Context::new(client, Settings::default(), metrics.clone());
    let stored: ReplicatedPartitionSet = api.get("shop", "orders").unwrap();
    reconcile(Arc::new(stored), ctx.clone()).await.unwrap();
    let stored: ReplicatedPartitionSet = api.get("shop", "orders").unwrap();
    api.set_down(id, true);
    let error = reconcile(Arc::new(stored.clone()), ctx.clone())
        .await
        .unwrap_err();
    partita_operator::controller::error_policy(Arc::new(stored), &error, ctx);
    metrics.leader.set(1);

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "partita_operator_reconciliations_total 2",
        "partita_operator_reconcile_duration_seconds_count 2",
        "partita_operator_reconcile_errors_total{reason=\"kube\"} 1",
        "partita_operator_leader 1",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in:\n{body}");
    }

    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
