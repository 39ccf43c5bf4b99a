//! The node pollers against real node processes: what they see, and the reconcile triggers
//! they send when something that matters changes — a node going silent, the detection window
//! passing, a node coming back — and only then.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::nodes::Nodes;
use kube::runtime::reflector::ObjectRef;
use partita_api::ReplicatedPartitionSet;
use partita_operator::health::{Health, Targets};
use std::collections::BTreeMap;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_triggers_a_reconcile_at_once_and_again_when_the_window_passes() {
    let mut nodes = Nodes::new("orders", "shop", 4);
    nodes.start(0).await;
    nodes.start(1).await;
    let (health, mut triggers) = Health::new();
    let set = ObjectRef::<ReplicatedPartitionSet>::new("orders").within("shop");
    let addresses: BTreeMap<String, String> = (0..2)
        .map(|i| {
            (
                nodes.name(i),
                format!("{}:{}", nodes.ip(i), nodes.grpc_port),
            )
        })
        .collect();
    let window = Duration::from_millis(600);
    health.watch(
        set.clone(),
        Targets {
            addresses,
            interval: Duration::from_millis(50),
            window,
        },
    );

    // The first poll sees both nodes: that is a change from knowing nothing.
    let first = tokio::time::timeout(DEADLINE, triggers.recv()).await;
    assert_eq!(first.unwrap(), Some(set.clone()));
    let seen = health.poll_now(&set).await;
    assert!(seen.values().all(|h| h.reachable && h.status.is_some()));

    // Nothing changes: no trigger for several poll intervals.
    while triggers.try_recv().is_ok() {}
    let quiet = tokio::time::timeout(Duration::from_millis(400), triggers.recv()).await;
    assert!(quiet.is_err(), "a trigger without a change: {quiet:?}");

    // SIGKILL: a trigger within a few poll intervals, the node marked silent since then.
    nodes.kill(1);
    let killed = tokio::time::Instant::now();
    let got = tokio::time::timeout(DEADLINE, triggers.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(set.clone()));
    let detected = killed.elapsed();
    let h = health.snapshot(&set)[&nodes.name(1)].clone();
    assert!(
        !h.reachable && h.down_since_ms.is_some() && h.status.is_some(),
        "{h:?}"
    );
    assert!(detected < window, "took {detected:?}");

    // The detection window passing is a change too: the planner may now fail over.
    let got = tokio::time::timeout(DEADLINE, triggers.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(set.clone()));
    let down = health.now_ms() - h.down_since_ms.unwrap();
    assert!(down >= window.as_millis() as u64, "{down} ms");

    // It comes back: another trigger, and it answers again.
    nodes.start(1).await;
    let got = tokio::time::timeout(DEADLINE, triggers.recv()).await;
    let got = got.unwrap_or_else(|_| panic!("no trigger; {:?}", health.snapshot(&set)));
    assert_eq!(got, Some(set.clone()));
    let h = health.poll_now(&set).await[&nodes.name(1)].clone();
    assert!(h.reachable && h.down_since_ms.is_none());

    // Forgotten sets are polled no more.
    health.forget(&set);
    assert!(health.snapshot(&set).is_empty());
    println!(
        "SCENARIO health-trigger ok detected_ms={}",
        detected.as_millis()
    );
}
