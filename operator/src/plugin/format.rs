//! What `kubectl partita status` prints, as pure functions of the resource: a summary line, the
//! last failover, the partition map and the conditions, in kubectl's plain column style.

use partita_api::{
    FailoverRecord, PartitionStatus, Phase, ReplicaLag, ReplicatedPartitionSet,
    ReplicatedPartitionSetStatus, SwitchoverStatus, format_duration,
};
use std::time::Duration;

/// Lays `rows` out under `headers` in columns three spaces apart, as `kubectl get` does. The
/// last column is not padded and no line ends in spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or_default();
            line.push_str(cell);
            if i + 1 < columns {
                let pad = width.saturating_sub(cell.chars().count()) + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The word for a phase, or `Unknown` when status has none yet.
pub fn phase_name(phase: Option<Phase>) -> &'static str {
    match phase {
        None => "Unknown",
        Some(Phase::Pending) => "Pending",
        Some(Phase::Provisioning) => "Provisioning",
        Some(Phase::Ready) => "Ready",
        Some(Phase::Updating) => "Updating",
        Some(Phase::Degraded) => "Degraded",
        Some(Phase::Paused) => "Paused",
        Some(Phase::Invalid) => "Invalid",
    }
}

/// The replica furthest behind, as `N entries / M ms`, or `-` when no lag is reported. The
/// worst is the one with the most unapplied entries, then the oldest unapplied entry.
pub fn worst_lag(lag: &[ReplicaLag]) -> String {
    lag.iter()
        .max_by_key(|l| (l.entries, l.millis))
        .map_or_else(
            || "-".to_string(),
            |l| format!("{} entries / {} ms", l.entries, l.millis),
        )
}

/// How many of the partition's replicas are in sync, over how many replicas it has: `2/2`.
pub fn in_sync(partition: &PartitionStatus) -> String {
    let in_sync = partition
        .replicas
        .iter()
        .filter(|r| partition.in_sync_replicas.contains(r))
        .count();
    format!("{in_sync}/{}", partition.replicas.len())
}

/// One row of the partition table.
pub fn partition_row(p: &PartitionStatus) -> Vec<String> {
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    vec![
        p.id.to_string(),
        dash(p.primary.clone().unwrap_or_default()),
        dash(p.replicas.join(",")),
        p.epoch.to_string(),
        in_sync(p),
        worst_lag(&p.lag),
        p.moving
            .as_ref()
            .map_or_else(|| "-".to_string(), |m| format!("{}->{}", m.from, m.to)),
        p.message.clone().unwrap_or_default(),
    ]
}

/// The partition map as a table, one row per partition in id order.
pub fn partition_table(partitions: &[PartitionStatus]) -> String {
    let mut sorted: Vec<&PartitionStatus> = partitions.iter().collect();
    sorted.sort_by_key(|p| p.id);
    let rows: Vec<Vec<String>> = sorted.into_iter().map(partition_row).collect();
    table(
        &[
            "PARTITION",
            "PRIMARY",
            "REPLICAS",
            "EPOCH",
            "IN-SYNC",
            "LAG",
            "MOVING",
            "MESSAGE",
        ],
        &rows,
    )
}

/// The conditions as a table, in the order the operator wrote them.
pub fn condition_table(status: &ReplicatedPartitionSetStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    table(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows)
}

/// `Last failover: partition 1, orders-0 -> orders-1, epoch 3, took 850ms, automatic, at ...`.
pub fn failover_line(f: &FailoverRecord) -> String {
    let took = format_duration(Duration::from_millis(
        u64::try_from(f.duration_millis).unwrap_or(0),
    ));
    let kind = if f.planned {
        "planned switchover"
    } else {
        "automatic failover"
    };
    format!(
        "Last failover: partition {}, {} -> {}, epoch {}, took {took}, {kind}, at {}",
        f.partition, f.from, f.to, f.epoch, f.time.0
    )
}

/// `Last switchover request: 1=orders-2@... Done: message`.
pub fn switchover_line(s: &SwitchoverStatus) -> String {
    match &s.message {
        Some(m) if !m.is_empty() => {
            format!("Last switchover request: {} {}: {m}", s.request, s.state)
        }
        _ => format!("Last switchover request: {} {}", s.request, s.state),
    }
}

/// Everything `kubectl partita status` prints for `set` in table form.
pub fn status_report(set: &ReplicatedPartitionSet) -> String {
    let name = set.metadata.name.as_deref().unwrap_or("<unnamed>");
    let spec = &set.spec;
    let Some(status) = &set.status else {
        return format!(
            "{name}: no status yet: the operator has not reported on this set (is partita-operator running and watching its namespace?)\n\
             Wanted: {} nodes, {} partitions, replicationFactor {}\n",
            spec.nodes, spec.partitions, spec.replication_factor
        );
    };
    let mut out = format!(
        "{name}: {}, {}/{} nodes ready, {} partitions, replicationFactor {}, mapVersion {}\n",
        phase_name(status.phase),
        status.ready_nodes,
        spec.nodes,
        spec.partitions,
        spec.replication_factor,
        status.map_version,
    );
    if let (Some(observed), Some(generation)) =
        (status.observed_generation, set.metadata.generation)
        && observed < generation
    {
        out.push_str(&format!(
            "Status is for generation {observed}; the spec is at generation {generation}: the operator has not caught up yet\n"
        ));
    }
    if let Some(f) = &status.last_failover {
        out.push_str(&failover_line(f));
        out.push('\n');
    }
    if let Some(s) = &status.switchover {
        out.push_str(&switchover_line(s));
        out.push('\n');
    }
    out.push('\n');
    if status.partitions.is_empty() {
        out.push_str("No partitions placed yet.\n");
    } else {
        out.push_str(&partition_table(&status.partitions));
    }
    out.push('\n');
    if status.conditions.is_empty() {
        out.push_str("No conditions yet.\n");
    } else {
        out.push_str(&condition_table(status));
    }
    out
}

/// What `kubectl partita status -o json` prints: the status, pretty-printed, or `null` when the
/// set has none yet.
pub fn status_json(set: &ReplicatedPartitionSet) -> Result<String, serde_json::Error> {
    let mut out = serde_json::to_string_pretty(&set.status)?;
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use partita_api::PartitionMove;

    fn partition(id: i32, primary: &str, replicas: &[&str], epoch: i64) -> PartitionStatus {
        PartitionStatus {
            id,
            primary: Some(primary.into()),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            epoch,
            in_sync_replicas: replicas.iter().map(|r| r.to_string()).collect(),
            ..PartitionStatus::default()
        }
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn set(status: Option<ReplicatedPartitionSetStatus>) -> ReplicatedPartitionSet {
        let spec = serde_json::from_value(serde_json::json!({
            "nodes": 3, "partitions": 3, "replicationFactor": 3
        }))
        .unwrap();
        let mut set = ReplicatedPartitionSet::new("orders", spec);
        set.metadata.generation = Some(2);
        set.status = status;
        set
    }

    #[test]
    fn a_table_pads_every_column_but_the_last() {
        let out = table(
            &["A", "LONGER", "C"],
            &[
                vec!["wide-cell".into(), "x".into(), "".into()],
                vec!["y".into(), "z".into(), "end".into()],
            ],
        );
        assert_eq!(
            out,
            "A           LONGER   C\nwide-cell   x\ny           z        end\n"
        );
    }

    #[test]
    fn the_worst_lag_is_the_most_entries_behind() {
        assert_eq!(worst_lag(&[]), "-");
        let lag = |node: &str, entries, millis| ReplicaLag {
            node: node.into(),
            entries,
            millis,
        };
        assert_eq!(
            worst_lag(&[lag("a", 3, 900), lag("b", 120, 350), lag("c", 120, 20)]),
            "120 entries / 350 ms"
        );
        assert_eq!(worst_lag(&[lag("a", 0, 0)]), "0 entries / 0 ms");
    }

    #[test]
    fn in_sync_counts_only_replicas() {
        let mut p = partition(0, "a", &["b", "c"], 1);
        assert_eq!(in_sync(&p), "2/2");
        p.in_sync_replicas = vec!["c".into(), "a".into()];
        assert_eq!(in_sync(&p), "1/2");
        p.replicas.clear();
        assert_eq!(in_sync(&p), "0/0");
    }

    #[test]
    fn a_partition_row_shows_moves_lag_and_a_missing_primary() {
        let mut p = partition(2, "orders-2", &["orders-0", "orders-1"], 4);
        p.moving = Some(PartitionMove {
            from: "orders-0".into(),
            to: "orders-3".into(),
        });
        p.lag = vec![ReplicaLag {
            node: "orders-0".into(),
            entries: 5,
            millis: 40,
        }];
        assert_eq!(
            partition_row(&p),
            [
                "2",
                "orders-2",
                "orders-0,orders-1",
                "4",
                "2/2",
                "5 entries / 40 ms",
                "orders-0->orders-3",
                ""
            ]
        );
        let orphan = PartitionStatus {
            id: 1,
            message: Some("no replica can be promoted safely".into()),
            ..PartitionStatus::default()
        };
        assert_eq!(
            partition_row(&orphan),
            [
                "1",
                "-",
                "-",
                "0",
                "0/0",
                "-",
                "-",
                "no replica can be promoted safely"
            ]
        );
    }

    #[test]
    fn the_report_has_a_summary_the_last_failover_and_both_tables() {
        let status = ReplicatedPartitionSetStatus {
            phase: Some(Phase::Updating),
            observed_generation: Some(2),
            ready_nodes: 2,
            conditions: vec![
                condition("Ready", "False", "Rebalancing", "moving 1 partition"),
                condition("Rebalancing", "True", "Moving", "orders-0->orders-3"),
            ],
            partitions: vec![
                partition(1, "orders-1", &["orders-0", "orders-2"], 3),
                partition(0, "orders-0", &["orders-1", "orders-2"], 2),
            ],
            last_failover: Some(FailoverRecord {
                partition: 1,
                from: "orders-0".into(),
                to: "orders-1".into(),
                epoch: 3,
                duration_millis: 850,
                time: Time("2026-11-22T00:00:05Z".parse().unwrap()),
                planned: true,
            }),
            map_version: 7,
            ..ReplicatedPartitionSetStatus::default()
        };
        let out = status_report(&set(Some(status)));
        let expected = "\
orders: Updating, 2/3 nodes ready, 3 partitions, replicationFactor 3, mapVersion 7
Last failover: partition 1, orders-0 -> orders-1, epoch 3, took 850ms, planned switchover, at 2026-11-22T00:00:05Z

PARTITION   PRIMARY    REPLICAS            EPOCH   IN-SYNC   LAG   MOVING   MESSAGE
0           orders-0   orders-1,orders-2   2       2/2       -     -
1           orders-1   orders-0,orders-2   3       2/2       -     -

TYPE          STATUS   REASON        MESSAGE
Ready         False    Rebalancing   moving 1 partition
Rebalancing   True     Moving        orders-0->orders-3
";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_report_says_when_status_is_missing_stale_or_empty() {
        let out = status_report(&set(None));
        assert!(out.starts_with("orders: no status yet"), "{out}");
        assert!(out.contains("3 nodes, 3 partitions"), "{out}");

        let status = ReplicatedPartitionSetStatus {
            observed_generation: Some(1),
            switchover: Some(SwitchoverStatus {
                request: "1=orders-2@5".into(),
                state: "Refused".into(),
                message: Some("orders-2 is not in sync".into()),
            }),
            ..ReplicatedPartitionSetStatus::default()
        };
        let out = status_report(&set(Some(status)));
        assert!(out.starts_with("orders: Unknown, 0/3 nodes ready"), "{out}");
        assert!(out.contains("Status is for generation 1; the spec is at generation 2"));
        assert!(
            out.contains("Last switchover request: 1=orders-2@5 Refused: orders-2 is not in sync")
        );
        assert!(out.contains("No partitions placed yet."), "{out}");
        assert!(out.contains("No conditions yet."), "{out}");
    }

    #[test]
    fn json_is_the_status_or_null() {
        assert_eq!(status_json(&set(None)).unwrap(), "null\n");
        let status = ReplicatedPartitionSetStatus {
            map_version: 3,
            ..ReplicatedPartitionSetStatus::default()
        };
        let out = status_json(&set(Some(status))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mapVersion"], 3);
        assert_eq!(v["readyNodes"], 0);
    }
}
