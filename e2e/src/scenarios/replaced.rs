//! freeze and network-cut: a primary stops answering without dying, either frozen (SIGSTOP:
//! it holds its connections and answers nothing) or cut off the network (its connections drop
//! and new ones fail). It is replaced at a newer epoch; when it thaws or its network heals it
//! follows the new primary, and is never a second writer: a write sent to it is refused.

use super::Outcome;
use super::failover::{epoch_of, key_of, refused_elsewhere, refused_on};
use super::set::{SETTLE, Set, led_by, primary_of};
use super::writer::{Writer, settle};
use crate::Result;
use crate::cluster::{Cluster, wait_for};
use partita_api::ReplicatedPartitionSetStatus;
use std::sync::Arc;
use tokio::time::Instant;

/// How the primary stops answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGSTOP, then SIGCONT.
    Freeze,
    /// Its network cut, then healed.
    Cut,
}

/// Runs the scenario with `fault`.
pub async fn run(cluster: &mut impl Cluster, fault: Fault) -> Result<Outcome> {
    let name = match fault {
        Fault::Freeze => "freeze",
        Fault::Cut => "network-cut",
    };
    let set = Set::create(
        cluster,
        name,
        "nodes: 3\npartitions: 4\nreplicationFactor: 3",
    )
    .await?;
    let before = set.until_ready(SETTLE).await?;
    let client = Arc::new(set.client().await?);
    let writer = Writer::start(client.clone(), 2, name)?;
    let victim = primary_of(&before, 0)?;
    let led = led_by(&before, &victim);

    let start = Instant::now();
    match fault {
        Fault::Freeze => cluster.freeze(&victim).await?,
        Fault::Cut => cluster.cut(&victim).await?,
    }
    // Ready before the fault is undone, so the write that probes for a second writer goes
    // out at once.
    let stale_key = key_of(client.partitions(), led[0] as u32)?;
    let replaced = set
        .until("the stalled primary to be replaced", SETTLE, |s| {
            led.iter().all(|&p| {
                s.partitions
                    .iter()
                    .any(|x| x.id == p && x.primary.as_deref().is_some_and(|pr| pr != victim))
            })
        })
        .await;
    // The status names the new primary before any node has been told: the operator records
    // the map first and calls the nodes after it (DESIGN.md: "bump the epoch in status first,
    // then promote, then repoint the other replicas"). Until those calls land, a replica not
    // moved yet may still acknowledge a write of the old primary at the old epoch: one writer
    // per epoch still, and the promotion keeps that write. The probe is for a second writer,
    // so the fault is undone once the successor leads at the new epoch.
    let replaced = match replaced {
        Ok(_) => successor_in_place(&set, led[0], &victim).await,
        Err(e) => Err(e),
    };
    // Undo the fault whatever happened, so the victim never outlives the scenario frozen.
    let undone = match fault {
        Fault::Freeze => cluster.thaw(&victim).await,
        Fault::Cut => cluster.heal(&victim).await,
    };
    let replaced_after = start.elapsed();
    let replaced = replaced?;
    undone?;
    // At once, before the operator tells it: it may still believe it leads at its old epoch,
    // but a write sent to it must not be acknowledged.
    let partition = led[0] as u32;
    let stale = refused_on(
        &set,
        &victim,
        partition,
        &stale_key,
        epoch_of(&replaced, partition),
    )
    .await?;

    // Later, it refuses writes for a partition it does not lead.
    let (_, refused) = refused_elsewhere(&set, client.partitions(), &victim).await?;
    let settled = settle(&set, &client, writer).await?;
    Ok(settled.report(
        Outcome::new(name)
            .millis("replaced_ms", replaced_after)
            .with("stale_write", stale)
            .with("non_primary_write", refused),
    ))
}

/// Waits until the primary the status names for `partition` (not `victim`) says itself that it
/// leads the partition at the status's epoch; returns that status.
async fn successor_in_place(
    set: &Set,
    partition: i32,
    victim: &str,
) -> Result<ReplicatedPartitionSetStatus> {
    wait_for(
        &format!(
            "set {}: the new primary of partition {partition} to take over",
            set.name
        ),
        SETTLE,
        || async move {
            let status = set.status().await?;
            let Some((primary, epoch)) = status
                .partitions
                .iter()
                .find(|p| p.id == partition)
                .and_then(|p| Some((p.primary.clone()?, p.epoch)))
                .filter(|(primary, _)| primary != victim)
            else {
                return Ok(None);
            };
            let claims = set.claims(&primary).await.unwrap_or_default();
            let leads = claims.get(&(partition as u32)).map(|&e| e as i64) == Some(epoch);
            Ok(leads.then_some(status))
        },
    )
    .await
}
