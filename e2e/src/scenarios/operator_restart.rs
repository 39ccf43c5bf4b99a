//! operator-restart: the operator is killed again and again in the middle of a failover
//! (nothing finished, nothing released; the next one must first win the lease). The set still
//! converges to one primary per partition, and no acknowledged write is lost.

use super::Outcome;
use super::set::{SETTLE, Set, primary_of};
use super::writer::{Writer, settle};
use crate::Result;
use crate::cluster::{Cluster, wait_for};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How many times the operator is killed.
pub const KILLS: u32 = 4;

/// Runs the scenario.
pub async fn run(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(
        cluster,
        "operator-restart",
        "nodes: 3\npartitions: 4\nreplicationFactor: 3\nfailover: {detectionWindow: 1s}",
    )
    .await?;
    let before = set.until_ready(SETTLE).await?;
    let client = Arc::new(set.client().await?);
    let writer = Writer::start(client.clone(), 2, "operator-restart")?;
    let victim = primary_of(&before, 0)?;
    let start = Instant::now();
    cluster.kill(&victim, Duration::from_secs(25)).await?;
    // Kill the operator at moments spread over the failover, each time after it had a little
    // while to act.
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700 + 450 * u64::from(round))).await;
        cluster.kill_operator().await?;
        set.check_single_primaries().await?;
        cluster.start_operator().await?;
    }
    let replaced = set
        .until(
            "every partition to have a primary other than the victim",
            SETTLE,
            |s| {
                s.partitions
                    .iter()
                    .all(|p| p.primary.as_deref().is_some_and(|x| x != victim))
            },
        )
        .await?;
    let failover = start.elapsed();
    set.check_single_primaries().await?;
    wait_for(
        "the victim to be back and the set Ready",
        SETTLE,
        || async {
            let s = set.until_ready(Duration::from_secs(1)).await;
            Ok(s.ok())
        },
    )
    .await?;
    set.check_single_primaries().await?;
    let settled = settle(&set, &client, writer).await?;
    Ok(settled.report(
        Outcome::new("operator-restart")
            .with("operator_kills", KILLS)
            .millis("failover_ms", failover)
            .with("map_version", replaced.map_version),
    ))
}
