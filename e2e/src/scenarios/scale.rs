//! scale-up and scale-down: the set grows from 3 to 5 nodes and ends balanced (primaries per
//! node differ by at most one), and shrinks from 5 to 3 with the leaving pods drained before
//! they go. Data written before is all there, and every copy agrees (digests).

use super::Outcome;
use super::set::{SETTLE, Set, check_balanced};
use super::writer::{Settled, Writer, settle};
use crate::cluster::{Cluster, POLL};
use crate::{Error, Result};
use partita_api::ReplicatedPartitionSetStatus;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::time::Instant;

const SPEC: &str = "partitions: 8\nreplicationFactor: 2\nrebalance: {maxConcurrentMoves: 2}";

/// Writes a little data, so moves have something to copy.
async fn some_writes(set: &Set) -> Result<(Arc<partita_node::client::Client>, Writer)> {
    let client = Arc::new(set.client().await?);
    let writer = Writer::start(client.clone(), 2, &set.name)?;
    crate::cluster::wait_for("writes to be acknowledged", SETTLE, || async {
        Ok((writer.record().acks.len() >= 100).then_some(()))
    })
    .await?;
    Ok((client, writer))
}

/// Checks the set after a scale: `nodes` pods, balanced, one writer per partition, nothing
/// lost, copies equal.
async fn settled(
    set: &Set,
    status: &ReplicatedPartitionSetStatus,
    nodes: usize,
    client: &partita_node::client::Client,
    writer: Writer,
) -> Result<Settled> {
    let pods = set.pods().await?;
    super::ensure(pods.len() == nodes, || {
        format!("{} pods, not {nodes}: {:?}", pods.len(), pods.keys())
    })?;
    check_balanced(status, pods.keys())?;
    set.check_single_primaries().await?;
    settle(set, client, writer).await
}

/// 3 → 5 nodes.
pub async fn up(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(cluster, "scale-up", &format!("nodes: 3\n{SPEC}")).await?;
    set.until_ready(SETTLE).await?;
    let (client, writer) = some_writes(&set).await?;
    let start = Instant::now();
    set.patch(serde_json::json!({"spec": {"nodes": 5}})).await?;
    let status = set.until_ready(SETTLE).await?;
    let took = start.elapsed();
    let settled = settled(&set, &status, 5, &client, writer).await?;
    let on_new: usize = status
        .partitions
        .iter()
        .flat_map(|p| p.primary.iter().chain(&p.replicas))
        .filter(|pod| pod.ends_with("-3") || pod.ends_with("-4"))
        .count();
    super::ensure(on_new > 0, || "no copy moved to the new pods".into())?;
    Ok(settled.report(
        Outcome::new("scale-up")
            .millis("rebalanced_ms", took)
            .with("copies_on_new_pods", on_new),
    ))
}

/// 5 → 3 nodes: no pod goes while the map still places a copy on it.
pub async fn down(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(cluster, "scale-down", &format!("nodes: 5\n{SPEC}")).await?;
    set.until_ready(SETTLE).await?;
    let (client, writer) = some_writes(&set).await?;
    let leaving: BTreeSet<String> = ["scale-down-3", "scale-down-4"].map(String::from).into();
    let start = Instant::now();
    set.patch(serde_json::json!({"spec": {"nodes": 3}})).await?;

    // Watch the pods and the map together until both leaving pods are gone: each pod must
    // hold nothing in the map by the time it starts terminating.
    let end = Instant::now() + SETTLE;
    let drained_before_deleted = loop {
        let pods = set.pods().await?;
        let status = set.status().await?;
        let placed: BTreeSet<&String> = status
            .partitions
            .iter()
            .flat_map(|p| p.primary.iter().chain(&p.replicas))
            .collect();
        for pod in &leaving {
            let going = pods
                .get(pod)
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            if going && placed.contains(pod) {
                return Err(Error::Check(format!(
                    "{pod} is going while the map still places copies on it"
                )));
            }
        }
        if leaving.iter().all(|p| !pods.contains_key(p)) {
            break leaving.len();
        }
        if Instant::now() >= end {
            return Err(Error::Timeout {
                what: format!("the pods {leaving:?} to go"),
                after: SETTLE,
            });
        }
        tokio::time::sleep(POLL).await;
    };
    let status = set.until_ready(SETTLE).await?;
    let took = start.elapsed();
    let settled = settled(&set, &status, 3, &client, writer).await?;
    Ok(settled.report(
        Outcome::new("scale-down")
            .millis("drained_ms", took)
            .with("pods_drained", drained_before_deleted),
    ))
}
