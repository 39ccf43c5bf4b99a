//! failover: QUORUM writes run while a primary's node is SIGKILLed and stays down. A replica
//! takes over at a newer epoch and writes resume; `failover_ms` runs from the kill to the first
//! acknowledged write, sent after the kill, on every partition the victim led. When the victim
//! comes back it follows at the new epoch, a write sent to it directly is refused, and every
//! write the client saw acknowledged is there (`lost_acked`).

use super::Outcome;
use super::set::{SETTLE, Set, led_by, primary_of};
use super::writer::{Writer, quorum_put, settle};
use crate::cluster::{Cluster, wait_for};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long the victim stays down: past the default 3 s detection window, so it is replaced.
pub const DOWN_FOR: Duration = Duration::from_secs(8);

/// The failover goal with default settings.
pub const GOAL: Duration = Duration::from_secs(5);

/// Runs the scenario.
pub async fn run(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(
        cluster,
        "failover",
        "nodes: 3\npartitions: 8\nreplicationFactor: 3",
    )
    .await?;
    let before = set.until_ready(SETTLE).await?;
    let client = Arc::new(set.client().await?);
    let writer = Writer::start(client.clone(), 4, "failover")?;
    wait_for("writes to be acknowledged", SETTLE, || async {
        Ok((writer.record().acks.len() >= 50).then_some(()))
    })
    .await?;

    let victim = primary_of(&before, 0)?;
    let led: Vec<u32> = led_by(&before, &victim).iter().map(|&p| p as u32).collect();
    let killed = Instant::now();
    cluster.kill(&victim, DOWN_FOR).await?;
    let resumed = wait_for(
        "writes to resume on every partition the victim led",
        SETTLE,
        || {
            let record = writer.record();
            let led = &led;
            async move {
                let firsts: Option<Vec<Instant>> = led
                    .iter()
                    .map(|p| record.first_ack_after(killed, &[*p]))
                    .collect();
                Ok(firsts.and_then(|f| f.into_iter().max()))
            }
        },
    )
    .await?;
    let failover = resumed - killed;
    let after = set
        .until(
            "a new primary for every partition the victim led",
            SETTLE,
            |s| {
                led.iter().all(|&p| {
                    s.partitions.iter().any(|x| {
                        x.id as u32 == p && x.primary.as_deref().is_some_and(|pr| pr != victim)
                    })
                })
            },
        )
        .await?;

    // The victim comes back and must follow: never a second writer.
    let (status, refused) = refused_elsewhere(&set, client.partitions(), &victim).await?;
    let settled = settle(&set, &client, writer).await?;
    let epoch_before = epoch_of(&before, led[0]);
    let epoch_after = epoch_of(&after, led[0]);
    super::ensure(epoch_after > epoch_before, || {
        format!("partition {} stayed at epoch {epoch_before}", led[0])
    })?;
    let outcome = Outcome::new("failover")
        .millis("failover_ms", failover)
        .with("goal_5s", if failover < GOAL { "met" } else { "missed" })
        .with("failed_writes", settled.record.failures)
        .with("partitions_moved", led.len())
        .with("stale_write", refused)
        .with("epoch", epoch_of(&status, led[0]));
    Ok(settled.report(outcome))
}

/// The epoch of partition `id` in `s` (0 when it is not there).
pub fn epoch_of(s: &partita_api::ReplicatedPartitionSetStatus, id: u32) -> i64 {
    s.partitions
        .iter()
        .find(|p| p.id as u32 == id)
        .map_or(0, |p| p.epoch)
}

/// Once the set is Ready again with one primary per partition: sends `victim` a write for a
/// partition it does not lead now (rebalancing may have given it primaries back, at newer
/// epochs), which it must refuse ([`refused_on`]). Returns that status and the outcome.
pub async fn refused_elsewhere(
    set: &Set,
    partitions: u32,
    victim: &str,
) -> Result<(partita_api::ReplicatedPartitionSetStatus, &'static str)> {
    let status = set.until_ready(SETTLE).await?;
    set.check_single_primaries().await?;
    let other = not_led_by(&status, victim)?;
    let key = key_of(partitions, other)?;
    let refused = refused_on(set, victim, other, &key, epoch_of(&status, other)).await?;
    Ok((status, refused))
}

/// A partition `pod` does not lead in `s`.
fn not_led_by(s: &partita_api::ReplicatedPartitionSetStatus, pod: &str) -> Result<u32> {
    s.partitions
        .iter()
        .find(|p| p.primary.as_deref() != Some(pod))
        .map(|p| p.id as u32)
        .ok_or_else(|| Error::Check(format!("{pod} leads every partition")))
}

/// A key of `partition` among `partitions`.
pub fn key_of(partitions: u32, partition: u32) -> Result<String> {
    let slots =
        partita_node::slot::SlotMap::new(partitions).map_err(|e| Error::Node(e.to_string()))?;
    (0..100_000)
        .map(|k| format!("stale:{k}"))
        .find(|k| slots.partition_of_key(k.as_bytes()) == partition)
        .ok_or_else(|| Error::Check(format!("no key of partition {partition}")))
}

/// Sends a QUORUM write for `key` (of `partition`) straight to `pod` (no routing), where `pod`
/// did not lead `partition` at `epoch`. Fails if `pod` acknowledges it at `epoch` or before: a
/// second writer. Returns `refused`, or `led_again` when `pod` legitimately leads the partition
/// again at a newer epoch (rebalancing can hand a recovered node its primaries back quickly).
pub async fn refused_on(
    set: &Set,
    pod: &str,
    partition: u32,
    key: &str,
    epoch: i64,
) -> Result<&'static str> {
    let mut kv = set.kv(pod).await?;
    match kv.put(quorum_put(key, "from-the-past")).await {
        Ok(r) => match r.into_inner().ack {
            Some(ack) if ack.epoch as i64 > epoch => Ok("led_again"),
            ack => Err(Error::Check(format!(
                "{pod} acknowledged a write for partition {partition}, which another node leads at epoch {epoch}: {ack:?}"
            ))),
        },
        Err(_) => Ok("refused"),
    }
}
