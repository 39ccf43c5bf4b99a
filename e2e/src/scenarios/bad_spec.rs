//! bad-spec: a running set is changed to a spec the operator cannot act on. The Ready
//! condition says why, nothing it owns changes, and the operator keeps running: the set goes
//! back to Ready once the spec is fixed, and another set created meanwhile is served.
//!
//! The spec passes the CRD's own validation (which a real API server enforces and the box does
//! not), so the operator's validation is what refuses it on both.

use super::Outcome;
use super::set::{SETTLE, Set};
use crate::Result;
use crate::cluster::Cluster;
use partita_api::Phase;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// An image reference the operator refuses (upper case is not allowed in a repository).
pub const BAD_IMAGE: &str = "Partita/Node:not:a:reference";

/// Runs the scenario.
pub async fn run(cluster: &mut impl Cluster) -> Result<Outcome> {
    let set = Set::create(
        cluster,
        "bad-spec",
        "nodes: 3\npartitions: 4\nreplicationFactor: 2",
    )
    .await?;
    set.until_ready(SETTLE).await?;
    let image = set.get().await?.spec.image;
    let sts_before = set.statefulset().await?;
    let pods_before: BTreeMap<String, Option<String>> = set
        .pods()
        .await?
        .into_iter()
        .map(|(n, p)| (n, p.metadata.uid))
        .collect();

    let start = Instant::now();
    set.patch(serde_json::json!({"spec": {"image": BAD_IMAGE}}))
        .await?;
    let invalid = set
        .until(
            "the Ready condition to say why the spec is refused",
            SETTLE,
            |s| {
                s.phase == Some(Phase::Invalid)
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == "False" && c.message.contains("image")
                    })
            },
        )
        .await?;
    let reported = start.elapsed();
    let reason = invalid
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default();

    // The operator keeps running: a second set is served meanwhile.
    let other = Set::create(
        cluster,
        "bad-spec-other",
        "nodes: 1\npartitions: 2\nreplicationFactor: 1",
    )
    .await?;
    other.until_ready(SETTLE).await?;

    // Nothing the bad set owns changed.
    let sts_after = set.statefulset().await?;
    super::ensure(sts_after.spec == sts_before.spec, || {
        "the StatefulSet changed although the spec was refused".into()
    })?;
    let pods_after: BTreeMap<String, Option<String>> = set
        .pods()
        .await?
        .into_iter()
        .map(|(n, p)| (n, p.metadata.uid))
        .collect();
    super::ensure(pods_after == pods_before, || {
        format!("pods changed although the spec was refused: {pods_before:?} -> {pods_after:?}")
    })?;

    // Fixed, it is Ready again.
    set.patch(serde_json::json!({"spec": {"image": image}}))
        .await?;
    set.until_ready(SETTLE).await?;
    Ok(Outcome::new("bad-spec")
        .millis("reported_ms", reported)
        .with("reason", reason)
        .with("other_set", "ready")
        .with("recovered", "ready"))
}
