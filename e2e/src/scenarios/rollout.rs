//! rollout: a configuration change restarts every pod, one at a time, while QUORUM writes go
//! on. A pod never goes while it leads a partition (its primaries are switched over first), so
//! writes to a partition stall only for a bounded switchover window, which is measured.

use super::Outcome;
use super::set::{SETTLE, Set};
use super::writer::{Writer, settle};
use crate::cluster::{Cluster, POLL};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a partition may go without an acknowledged write during the rollout: a
/// correctness bound (the window must end), far above what it takes.
pub const STALL_BOUND: Duration = Duration::from_secs(30);

/// Runs the scenario.
pub async fn run(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(
        cluster,
        "rollout",
        "nodes: 3\npartitions: 6\nreplicationFactor: 3",
    )
    .await?;
    set.until_ready(SETTLE).await?;
    let uids_before: BTreeMap<String, Option<String>> = set
        .pods()
        .await?
        .into_iter()
        .map(|(n, p)| (n, p.metadata.uid))
        .collect();
    let client = Arc::new(set.client().await?);
    let writer = Writer::start(client.clone(), 4, "rollout")?;
    let partitions = client.partitions();

    let old_revision = set
        .statefulset()
        .await?
        .status
        .and_then(|s| s.update_revision);
    let start = Instant::now();
    set.patch(serde_json::json!({"spec": {"replication": {"heartbeatInterval": "150ms"}}}))
        .await?;
    let end = start + SETTLE * 2;
    let mut order = Vec::new();
    loop {
        let pods = set.pods().await?;
        let status = set.status().await?;
        for (name, before) in &uids_before {
            let replaced = pods.get(name).is_none_or(|p| {
                p.metadata.deletion_timestamp.is_some() || p.metadata.uid != *before
            });
            if replaced && !order.contains(name) {
                order.push(name.clone());
            }
        }
        for (name, pod) in &pods {
            let going = pod.metadata.deletion_timestamp.is_some();
            if going
                && status
                    .partitions
                    .iter()
                    .any(|p| p.primary.as_deref() == Some(name.as_str()))
            {
                return Err(Error::Check(format!(
                    "{name} is being restarted while it leads a partition"
                )));
            }
        }
        let sts = set.statefulset().await?;
        let revision = sts.status.as_ref().and_then(|s| s.update_revision.clone());
        let all_new = pods.len() == 3
            && revision.is_some()
            && revision != old_revision
            && pods.values().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("controller-revision-hash"))
                        .is_some_and(|r| Some(r) == revision.as_ref())
            });
        if all_new && status.phase == Some(partita_api::Phase::Ready) {
            let fresh = set.until_ready(SETTLE).await?;
            if fresh.phase == Some(partita_api::Phase::Ready) {
                break;
            }
        }
        if Instant::now() >= end {
            return Err(Error::Timeout {
                what: format!("the rolling update to finish (restarted so far: {order:?})"),
                after: SETTLE * 2,
            });
        }
        tokio::time::sleep(POLL).await;
    }
    let took = start.elapsed();
    let settled = settle(&set, &client, writer).await?;
    let stall = settled
        .record
        .longest_stall(start, start + took, partitions);
    super::ensure(stall < STALL_BOUND, || {
        format!("writes to a partition stalled for {stall:?} during the rollout")
    })?;
    let uids_after: BTreeMap<String, Option<String>> = set
        .pods()
        .await?
        .into_iter()
        .map(|(n, p)| (n, p.metadata.uid))
        .collect();
    let restarted = uids_before
        .iter()
        .filter(|(n, uid)| uids_after.get(*n) != Some(uid))
        .count();
    super::ensure(restarted == 3, || {
        format!("{restarted} of 3 pods were restarted: {uids_before:?} -> {uids_after:?}")
    })?;
    set.check_single_primaries().await?;
    Ok(settled.report(
        Outcome::new("rollout")
            .millis("rollout_ms", took)
            .millis("max_write_stall_ms", stall)
            .with("order", order.join(",")),
    ))
}
