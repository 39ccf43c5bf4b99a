//! create-ready: a new set of 3 nodes, 8 partitions and 3 copies of each becomes Ready, every
//! partition with a primary and 2 in-sync replicas; the time from creation to Ready is the
//! measure.

use super::Outcome;
use super::set::{SETTLE, Set, check_balanced};
use crate::Result;
use crate::cluster::Cluster;
use tokio::time::Instant;

/// Runs the scenario.
pub async fn run(cluster: &mut impl Cluster) -> Result<Outcome> {
    let start = Instant::now();
    let set = Set::create(
        cluster,
        "create-ready",
        "nodes: 3\npartitions: 8\nreplicationFactor: 3",
    )
    .await?;
    let status = set.until_ready(SETTLE).await?;
    let ready = start.elapsed();
    let pods = set.pods().await?;
    super::ensure(pods.len() == 3, || format!("{} pods, not 3", pods.len()))?;
    check_balanced(&status, pods.keys())?;
    set.check_single_primaries().await?;
    let copies = set.check_copies_agree().await?;
    Ok(Outcome::new("create-ready")
        .millis("ready_ms", ready)
        .with("partitions", status.partitions.len())
        .with("copies", copies))
}
