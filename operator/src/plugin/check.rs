//! The plugin's decisions, as pure functions of the resource: whether a switchover can be asked
//! for, and whether the operator has finished with a request.

use super::Error;
use partita_api::{ConditionType, ReplicatedPartitionSet};

/// What a wait learned from one look at the set: finished (with what to print), or not yet
/// (with what it is waiting for, for the timeout message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The operator is done with the request.
    Done(String),
    /// Not yet; why.
    Waiting(String),
}

/// The set's name, for messages.
fn name(set: &ReplicatedPartitionSet) -> &str {
    set.metadata.name.as_deref().unwrap_or("<unnamed>")
}

/// Checks that `pod` can be asked to become primary of `partition`: the partition exists and
/// `pod` holds one of its replicas in the partition map.
pub fn check_switchover(
    set: &ReplicatedPartitionSet,
    partition: u32,
    pod: &str,
) -> Result<(), Error> {
    let partitions = set.spec.partitions;
    if i64::from(partition) >= i64::from(partitions) {
        return Err(Error::PartitionOutOfRange {
            partition,
            set: name(set).into(),
            partitions,
        });
    }
    let placed = set.status.as_ref().and_then(|s| {
        s.partitions
            .iter()
            .find(|p| i64::from(p.id) == i64::from(partition))
    });
    let Some(placed) = placed else {
        return Err(Error::NotPlaced {
            partition,
            set: name(set).into(),
        });
    };
    if placed.replicas.iter().any(|r| r == pod) {
        return Ok(());
    }
    if placed.primary.as_deref() == Some(pod) {
        return Err(Error::AlreadyPrimary {
            partition,
            pod: pod.into(),
            replicas: placed.replicas.clone(),
        });
    }
    Err(Error::NotAReplica {
        partition,
        pod: pod.into(),
        replicas: placed.replicas.clone(),
    })
}

/// Where the operator is with switchover `request` (the exact annotation value): done, refused
/// (an error) or not yet.
pub fn switchover_progress(set: &ReplicatedPartitionSet, request: &str) -> Result<Progress, Error> {
    let seen = set.status.as_ref().and_then(|s| s.switchover.as_ref());
    let Some(seen) = seen.filter(|s| s.request == request) else {
        return Ok(Progress::Waiting(
            "the operator has not picked the request up yet (is partita-operator running?)".into(),
        ));
    };
    let message = seen.message.clone().filter(|m| !m.is_empty());
    match seen.state.as_str() {
        "Done" => Ok(Progress::Done(match message {
            Some(m) => format!("switchover {request} done: {m}"),
            None => format!("switchover {request} done"),
        })),
        "Refused" => Err(Error::Refused {
            request: request.into(),
            message: message.unwrap_or_else(|| "no reason given".into()),
        }),
        state => Ok(Progress::Waiting(match message {
            Some(m) => format!("switchover {request} is {state}: {m}"),
            None => format!("switchover {request} is {state}"),
        })),
    }
}

/// Where the operator is with rebalance request `request`: done once `status.rebalanceHandled`
/// echoes it and the Rebalancing condition is False.
pub fn rebalance_progress(set: &ReplicatedPartitionSet, request: &str) -> Progress {
    let status = set.status.as_ref();
    if status.and_then(|s| s.rebalance_handled.as_deref()) != Some(request) {
        return Progress::Waiting(
            "the operator has not picked the request up yet (is partita-operator running?)".into(),
        );
    }
    let rebalancing = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Rebalancing.as_str())
    });
    match rebalancing {
        Some(c) if c.status == "False" => Progress::Done(if c.message.is_empty() {
            "rebalance done".into()
        } else {
            format!("rebalance done: {}", c.message)
        }),
        Some(c) => Progress::Waiting(format!(
            "partitions are still moving (Rebalancing={}, {}: {})",
            c.status, c.reason, c.message
        )),
        None => Progress::Waiting("the set has no Rebalancing condition yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use partita_api::{PartitionStatus, ReplicatedPartitionSetStatus, SwitchoverStatus};

    fn set() -> ReplicatedPartitionSet {
        let spec =
            serde_json::from_value(serde_json::json!({"nodes": 3, "partitions": 4})).unwrap();
        let mut set = ReplicatedPartitionSet::new("orders", spec);
        set.status = Some(ReplicatedPartitionSetStatus {
            partitions: vec![
                PartitionStatus {
                    id: 0,
                    primary: Some("orders-0".into()),
                    replicas: vec!["orders-1".into(), "orders-2".into()],
                    ..PartitionStatus::default()
                },
                PartitionStatus {
                    id: 1,
                    primary: Some("orders-1".into()),
                    replicas: vec!["orders-2".into()],
                    ..PartitionStatus::default()
                },
            ],
            ..ReplicatedPartitionSetStatus::default()
        });
        set
    }

    #[test]
    fn a_replica_may_be_switched_to() {
        check_switchover(&set(), 0, "orders-2").unwrap();
        check_switchover(&set(), 1, "orders-2").unwrap();
    }

    #[test]
    fn a_partition_out_of_range_is_refused_with_the_range() {
        let e = check_switchover(&set(), 4, "orders-1").unwrap_err();
        assert!(matches!(e, Error::PartitionOutOfRange { .. }));
        assert_eq!(
            e.to_string(),
            "partition 4 does not exist: orders has 4 partitions (0 to 3)"
        );
    }

    #[test]
    fn a_pod_without_a_replica_is_refused_with_the_choices() {
        let e = check_switchover(&set(), 0, "orders-7").unwrap_err();
        assert_eq!(
            e.to_string(),
            "orders-7 holds no replica of partition 0; choose one of: orders-1, orders-2"
        );
        let e = check_switchover(&set(), 1, "orders-1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "orders-1 is already the primary of partition 1; choose one of its replicas: orders-2"
        );
        let e = check_switchover(&set(), 2, "orders-1").unwrap_err();
        assert!(matches!(e, Error::NotPlaced { partition: 2, .. }), "{e}");
    }

    fn with_switchover(state: &str, request: &str) -> ReplicatedPartitionSet {
        let mut s = set();
        if let Some(status) = s.status.as_mut() {
            status.switchover = Some(SwitchoverStatus {
                request: request.into(),
                state: state.into(),
                message: Some("why".into()),
            });
        }
        s
    }

    #[test]
    fn a_switchover_is_done_only_for_this_request() {
        let r = "0=orders-2@5";
        assert!(matches!(
            switchover_progress(&set(), r),
            Ok(Progress::Waiting(_))
        ));
        assert!(matches!(
            switchover_progress(&with_switchover("Done", "0=orders-2@4"), r),
            Ok(Progress::Waiting(_))
        ));
        assert!(matches!(
            switchover_progress(&with_switchover("Pending", r), r),
            Ok(Progress::Waiting(m)) if m.contains("Pending")
        ));
        assert_eq!(
            switchover_progress(&with_switchover("Done", r), r).unwrap(),
            Progress::Done("switchover 0=orders-2@5 done: why".into())
        );
        let e = switchover_progress(&with_switchover("Refused", r), r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the operator refused switchover 0=orders-2@5: why"
        );
    }

    #[test]
    fn a_rebalance_is_done_when_echoed_and_not_rebalancing() {
        let r = "2026-11-22T00:00:00Z";
        let mut s = set();
        assert!(matches!(rebalance_progress(&s, r), Progress::Waiting(_)));
        let condition = |status: &str| Condition {
            type_: "Rebalancing".into(),
            status: status.into(),
            reason: "Balanced".into(),
            message: "no partition moves in progress".into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        if let Some(status) = s.status.as_mut() {
            status.rebalance_handled = Some(r.into());
            status.conditions = vec![condition("True")];
        }
        assert!(
            matches!(rebalance_progress(&s, r), Progress::Waiting(m) if m.contains("still moving"))
        );
        if let Some(status) = s.status.as_mut() {
            status.conditions = vec![condition("False")];
        }
        assert_eq!(
            rebalance_progress(&s, r),
            Progress::Done("rebalance done: no partition moves in progress".into())
        );
        assert!(matches!(
            rebalance_progress(&s, "2026-11-22T00:00:01Z"),
            Progress::Waiting(_)
        ));
    }
}
