//! The scenarios in a cluster in a box: the in-memory API (or the kube-apiserver named by
//! `PARTITA_E2E_APISERVER_KUBECONFIG`), the box's StatefulSet controller and kubelet running a
//! real `partita-node` process per pod, and the real operator in-process. Every fault is
//! injected on a real process: SIGKILL, SIGSTOP, a network cut in the pod's proxy, the
//! operator's runtime torn down.
//!
//! Each test prints its `SCENARIO` line (nextest shows it; see `.config/nextest.toml`) and
//! checks what it measured is there.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use partita_e2e::inbox::{BoxConfig, InBox};
use partita_e2e::scenarios::{self, Outcome};

async fn scenario(name: &str) -> Outcome {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "partita_operator=info,partita_e2e=info",
        ))
        .with_test_writer()
        .try_init();
    let mut cluster = InBox::start(BoxConfig::from_env()).await.unwrap();
    let outcome = scenarios::run(name, &mut cluster).await;
    cluster.stop().await;
    let outcome = outcome.unwrap_or_else(|e| panic!("scenario {name} failed: {e}"));
    println!("{outcome}");
    assert_eq!(outcome.name, name);
    outcome
}

fn millis(outcome: &Outcome, metric: &str) -> u128 {
    outcome
        .get(metric)
        .unwrap_or_else(|| panic!("{metric} was not measured: {outcome}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ready() {
    let o = scenario("create-ready").await;
    assert!(millis(&o, "ready_ms") > 0);
    assert_eq!(o.get("partitions"), Some("8"));
    assert_eq!(
        o.get("copies"),
        Some("24"),
        "8 partitions x 3 copies compared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover() {
    let o = scenario("failover").await;
    assert!(millis(&o, "failover_ms") > 0);
    assert_eq!(o.get("lost_acked"), Some("0"));
    assert!(
        matches!(o.get("stale_write"), Some("refused" | "led_again")),
        "{o}"
    );
}

/// A primary stalled by `name`'s fault is replaced, and is never a second writer.
async fn replaced(name: &str) {
    let o = scenario(name).await;
    assert!(millis(&o, "replaced_ms") > 0);
    assert!(
        matches!(o.get("stale_write"), Some("refused" | "led_again")),
        "{o}"
    );
    assert_eq!(o.get("non_primary_write"), Some("refused"));
    assert_eq!(o.get("lost_acked"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze() {
    replaced("freeze").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut() {
    replaced("network-cut").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up() {
    let o = scenario("scale-up").await;
    assert!(millis(&o, "rebalanced_ms") > 0);
    assert_eq!(o.get("lost_acked"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down() {
    let o = scenario("scale-down").await;
    assert_eq!(o.get("pods_drained"), Some("2"));
    assert_eq!(o.get("lost_acked"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout() {
    let o = scenario("rollout").await;
    assert!(millis(&o, "rollout_ms") > 0);
    assert_eq!(o.get("lost_acked"), Some("0"));
    assert_eq!(o.get("order").map(|s| s.split(',').count()), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart() {
    let o = scenario("operator-restart").await;
    assert_eq!(o.get("lost_acked"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spec() {
    let o = scenario("bad-spec").await;
    assert_eq!(o.get("reason"), Some("InvalidImage"));
    assert_eq!(o.get("recovered"), Some("ready"));
}
