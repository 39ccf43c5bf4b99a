//! Tests of the planner: a table test per decision, then property tests that run the planner
//! against a small simulated cluster (nodes that apply the plan's calls as real nodes would,
//! with writes, crashes, freezes, scale changes, template changes, switchover requests and
//! operator crashes in between) and check the invariants of DESIGN.md at every step.
//!
//! The simulated nodes follow `node/src/replication`: the epoch rules of `check_change`, a
//! promotion that waits for the fenced primaries' end offset (fed only by a stream established
//! before the fence), a drop refused on a primary, QUORUM as a majority of the copies a primary
//! was told at its promotion. Logs are exact (entry ids), so a lost write is seen as lost, not
//! guessed from offsets. The operator is simulated as the controller runs: plan, record the map
//! (`plan.map`, `plan.version`), act (all calls, or the first few when it dies), with a health
//! cache that keeps a silent node's last report and forgets a pod that is gone.
//!
//! Notes on what the simulation leaves out, because it cannot hold by design:
//! - A lost status is rebuilt only from the nodes that answer. When it is lost while a node is
//!   away (or in the middle of a promotion), the epochs that node holds are known to no one, and
//!   a new epoch may repeat one of them: the status is the only durable record of epochs beside
//!   the nodes. The simulation loses the status only while every pod answers and every primary
//!   leads; the planner's handling of partial rebuilds is covered by table tests.
//! - Raising `replicationFactor` does not re-tell a primary its copies: it keeps acknowledging
//!   QUORUM with the old majority while a failover counts the new one. With `requireQuorum`, the
//!   simulation only lowers it.
//! - A slow replica is slow, not stuck: a switchover to one waits with the old primary fenced,
//!   so "left alone" the simulation lets slow replicas catch up.

use super::*;
use proptest::prelude::*;

const WINDOW: u64 = 1_000;

fn name(i: usize) -> String {
    format!("db-{i}")
}

fn names(is: &[usize]) -> Vec<String> {
    is.iter().map(|&i| name(i)).collect()
}

fn desired(nodes: usize, partitions: usize, rf: usize) -> Desired {
    Desired {
        nodes,
        partitions,
        replication_factor: rf,
        failover: true,
        require_quorum: false,
        detection_window_ms: WINDOW,
        max_concurrent_moves: 1,
        rebalance: true,
        min_in_sync_replicas: 0,
        switchover: None,
        pinned: Vec::new(),
    }
}

/// A map entry with every replica counted in sync.
fn entry(primary: usize, replicas: &[usize], epoch: u64) -> Entry {
    Entry {
        copies: Copies {
            primary: Some(name(primary)),
            replicas: names(replicas),
            epoch,
        },
        in_sync: names(replicas),
        lag: names(replicas).into_iter().map(|r| (r, 0, 0)).collect(),
        moving: None,
        message: None,
    }
}

fn current(map: Vec<Entry>, version: u64) -> Current {
    Current { map, version }
}

/// A node that answers and holds nothing.
fn node(i: usize) -> Node {
    Node {
        name: name(i),
        ordinal: i,
        pod: true,
        ready: true,
        outdated: false,
        reachable: true,
        down_since_ms: None,
        copies: BTreeMap::new(),
        topology_version: 0,
    }
}

fn primary_report(epoch: u64, offset: u64, replicas: &[String]) -> CopyReport {
    CopyReport {
        role: Role::Primary,
        epoch,
        last: (epoch, offset),
        following: None,
        streaming: false,
        replicas: replicas
            .iter()
            .map(|r| ReplicaReport {
                node: r.clone(),
                in_sync: true,
                lag_entries: 0,
                lag_ms: 0,
            })
            .collect(),
    }
}

fn replica_report(epoch: u64, offset: u64, primary: &str) -> CopyReport {
    CopyReport {
        role: Role::Replica,
        epoch,
        last: (epoch, offset),
        following: Some(primary.to_string()),
        streaming: true,
        replicas: Vec::new(),
    }
}

/// Nodes `0..n` reporting exactly what `map` says, every replica in sync at `offset`, and
/// holding topology `version`.
fn matching(n: usize, map: &[Entry], offset: u64, version: u64) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..n).map(node).collect();
    for (p, e) in map.iter().enumerate() {
        let Some(primary) = &e.copies.primary else {
            continue;
        };
        let epoch = e.copies.epoch;
        for r in &e.copies.replicas {
            if let Some(i) = ordinal(r).filter(|&i| i < n) {
                nodes[i]
                    .copies
                    .insert(p, replica_report(epoch, offset, primary));
            }
        }
        if let Some(i) = ordinal(primary).filter(|&i| i < n) {
            nodes[i]
                .copies
                .insert(p, primary_report(epoch, offset, &e.copies.replicas));
        }
    }
    for n in &mut nodes {
        n.topology_version = version;
    }
    nodes
}

fn report(nodes: &mut [Node], i: usize, p: usize) -> &mut CopyReport {
    nodes[i].copies.get_mut(&p).unwrap()
}

/// The node stops answering at `since`; its last report stays (the health cache keeps it).
fn down(nodes: &mut [Node], i: usize, since: u64) {
    nodes[i].reachable = false;
    nodes[i].down_since_ms = Some(since);
}

fn promotes(plan: &Plan) -> Vec<&Action> {
    plan.actions
        .iter()
        .filter(|a| matches!(a, Action::Promote { .. }))
        .collect()
}

fn without_topology(plan: &Plan) -> Vec<&Action> {
    plan.actions
        .iter()
        .filter(|a| !matches!(a, Action::PushTopology { .. }))
        .collect()
}

/// A balanced three-node set with one partition per node at `rf` 3, epoch 1, healthy.
fn three_by_three() -> (Desired, Vec<Entry>) {
    let d = desired(3, 3, 3);
    let map = vec![
        entry(0, &[1, 2], 1),
        entry(1, &[0, 2], 1),
        entry(2, &[0, 1], 1),
    ];
    (d, map)
}

// ---------------------------------------------------------------------------------------------
// Table tests, one per decision.
// ---------------------------------------------------------------------------------------------

#[test]
fn first_placement_waits_until_every_node_answers() {
    let d = desired(3, 4, 3);
    let mut nodes: Vec<Node> = (0..3).map(node).collect();
    nodes[2].reachable = false;
    nodes[2].ready = false;
    nodes[2].down_since_ms = Some(0);
    let plan = plan(&d, &nodes, &Current::default(), 10);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.map.is_empty(), "an unplaced map is not recorded");
    assert_eq!(plan.version, 0);
    assert!(plan.unplaced.as_deref().unwrap().contains("db-2"));
    assert_eq!(plan.statefulset_replicas, 3);
}

#[test]
fn first_placement_promotes_once_per_partition_at_epoch_one_and_replicas_follow() {
    let d = desired(3, 4, 3);
    let nodes: Vec<Node> = (0..3).map(node).collect();
    let plan = plan(&d, &nodes, &Current::default(), 10);
    assert_eq!(plan.version, 1);
    assert_eq!(plan.map.len(), 4);
    assert_eq!(plan.unplaced, None);
    let mut led = [0usize; 3];
    for (p, e) in plan.map.iter().enumerate() {
        let primary = e.copies.primary.clone().unwrap();
        led[ordinal(&primary).unwrap()] += 1;
        assert_eq!(e.copies.epoch, 1);
        assert_eq!(e.copies.replicas.len(), 2);
        let ps: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Promote { partition, .. } if *partition == p))
            .collect();
        assert_eq!(
            ps,
            vec![&Action::Promote {
                partition: p,
                node: primary.clone(),
                epoch: 1,
                fence: vec![],
                hosted: false,
                reason: Reason::Placement,
            }]
        );
        for r in &e.copies.replicas {
            assert!(plan.actions.contains(&Action::Follow {
                partition: p,
                node: r.clone(),
                primary: primary.clone(),
                epoch: 1,
            }));
        }
    }
    let (lo, hi) = (led.iter().min().unwrap(), led.iter().max().unwrap());
    assert!(hi - lo <= 1, "primaries per node {led:?}");
    // The map is complete: every node gets it.
    for i in 0..3 {
        assert!(
            plan.actions
                .contains(&Action::PushTopology { node: name(i) })
        );
    }
    // Recorded and carried out, the next plan has nothing to do.
    let nodes = matching(3, &plan.map, 0, plan.version);
    let again = super::plan(&d, &nodes, &current(plan.map.clone(), plan.version), 20);
    assert!(again.is_quiet(), "{:?}", again.actions);
    let copies = |m: &[Entry]| m.iter().map(|e| e.copies.clone()).collect::<Vec<_>>();
    assert_eq!(copies(&again.map), copies(&plan.map));
    assert_eq!(again.version, plan.version);
}

#[test]
fn a_healthy_set_is_quiet() {
    let (d, map) = three_by_three();
    let nodes = matching(3, &map, 7, 1);
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 1_000);
    assert!(plan.is_quiet(), "{:?}", plan.actions);
    assert_eq!(plan.map, map);
    assert_eq!(plan.version, 1);
    assert_eq!(plan.statefulset_replicas, 3);
    assert!(plan.failing_over.is_empty());
}

#[test]
fn failover_waits_for_the_detection_window() {
    let d = desired(3, 1, 3);
    let map = vec![entry(0, &[1, 2], 1)];
    let mut nodes = matching(3, &map, 10, 1);
    report(&mut nodes, 1, 0).last = (1, 12);
    report(&mut nodes, 2, 0).last = (1, 11);
    down(&mut nodes, 0, 5_000);
    let cur = current(map.clone(), 1);

    let early = plan(&d, &nodes, &cur, 5_000 + WINDOW - 1);
    assert!(promotes(&early).is_empty(), "{:?}", early.actions);
    assert_eq!(early.map[0].copies, map[0].copies);
    assert_eq!(early.version, 1);
    assert!(early.failing_over.is_empty());
    assert!(
        early.map[0]
            .message
            .as_deref()
            .unwrap()
            .contains("not answering")
    );

    let late = plan(&d, &nodes, &cur, 5_000 + WINDOW);
    // The replica it can reach moves to the new epoch first, so that the old primary, if it is
    // only cut off from the operator, can no longer have writes acknowledged by it.
    assert_eq!(
        without_topology(&late),
        vec![
            &Action::Follow {
                partition: 0,
                node: name(2),
                primary: name(1),
                epoch: 2,
            },
            &Action::Promote {
                partition: 0,
                node: name(1),
                epoch: 2,
                fence: vec![],
                hosted: true,
                reason: Reason::Failover,
            }
        ]
    );
    // The old primary stays, as a replica, so that it follows when it returns.
    assert_eq!(
        late.map[0].copies,
        Copies {
            primary: Some(name(1)),
            replicas: names(&[0, 2]),
            epoch: 2,
        }
    );
    assert_eq!(late.version, 2);
    assert_eq!(late.failing_over, vec![0]);
    assert_eq!(
        late.takeovers,
        vec![Takeover {
            partition: 0,
            from: Some(name(0)),
            to: name(1),
            epoch: 2,
            planned: false,
        }]
    );
}

#[test]
fn a_pod_gone_or_unready_counts_as_failed_at_once() {
    let d = desired(3, 1, 3);
    let map = vec![entry(0, &[1, 2], 1)];
    for gone in [true, false] {
        let mut nodes = matching(3, &map, 10, 1);
        down(&mut nodes, 0, 5_000);
        if gone {
            nodes[0].pod = false;
        } else {
            nodes[0].ready = false;
        }
        let plan = plan(&d, &nodes, &current(map.clone(), 1), 5_001);
        assert_eq!(promotes(&plan).len(), 1, "gone {gone}: {:?}", plan.actions);
        assert_eq!(plan.map[0].copies.epoch, 2);
    }
    // A node that never answered counts as failed too.
    let mut nodes = matching(3, &map, 10, 1);
    nodes[0].reachable = false;
    nodes[0].down_since_ms = None;
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 5_001);
    assert_eq!(promotes(&plan).len(), 1, "{:?}", plan.actions);
}

#[test]
fn failover_picks_the_reachable_in_sync_replica_with_the_highest_position() {
    let d = desired(5, 1, 5);
    let mut map = vec![entry(0, &[1, 2, 3, 4], 3)];
    // db-4 is far ahead but was not in sync: not a candidate.
    map[0].in_sync = names(&[1, 2, 3]);
    let mut nodes = matching(5, &map, 10, 1);
    report(&mut nodes, 1, 0).last = (2, 50); // an older epoch: behind whatever its offset
    report(&mut nodes, 2, 0).last = (3, 11);
    report(&mut nodes, 3, 0).last = (3, 40); // the best, but unreachable
    report(&mut nodes, 4, 0).last = (3, 90);
    down(&mut nodes, 0, 0);
    down(&mut nodes, 3, 0);
    nodes[3].down_since_ms = Some(WINDOW * 10);
    let plan = plan(&d, &nodes, &current(map, 1), WINDOW * 10);
    assert_eq!(
        promotes(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(2),
            epoch: 4,
            fence: vec![],
            hosted: true,
            reason: Reason::Failover,
        }]
    );
}

#[test]
fn a_failover_promotes_after_the_replicas_moved_and_holding_what_they_held() {
    // The failover's replicas move to the new epoch before the promotion (so they stop
    // acknowledging the lost primary, which may only be cut off from the operator). What one
    // held once it moved may be more than the reports the plan chose from: the promotion waits
    // until the new primary holds it, and is not made at all after a Follow that failed.
    let (d, map) = three_by_three();
    let mut nodes = matching(3, &map, 10, 1);
    down(&mut nodes, 0, 0);
    let plan = plan(&d, &nodes, &current(map, 1), WINDOW);
    let calls: Vec<&Action> = without_topology(&plan)
        .into_iter()
        .filter(|a| {
            matches!(
                a,
                Action::Promote { partition: 0, .. } | Action::Follow { partition: 0, .. }
            )
        })
        .collect();
    let [
        follow @ Action::Follow { epoch, .. },
        Action::Promote {
            epoch: promoted, ..
        },
    ] = calls[..]
    else {
        panic!("a Follow, then the promotion: {calls:?}");
    };
    assert_eq!(epoch, promoted);

    let mut moved = Repointed::default();
    assert_eq!(
        moved.before_promotion(0, *epoch),
        Ok(0),
        "nothing moved first"
    );
    // The replica held 12 once it followed, 2 more than reported when the plan was made.
    moved.record(follow, Ok(12));
    assert_eq!(moved.before_promotion(0, *epoch), Ok(12));
    assert_eq!(
        moved.before_promotion(1, *epoch),
        Ok(0),
        "another partition"
    );
    assert_eq!(moved.before_promotion(0, epoch + 1), Ok(0), "another epoch");
    moved.record(follow, Ok(11));
    assert_eq!(
        moved.before_promotion(0, *epoch),
        Ok(12),
        "the highest counts"
    );
    // Other calls say nothing of it.
    moved.record(&Action::PushTopology { node: name(1) }, Err("down".into()));
    assert_eq!(moved.before_promotion(0, *epoch), Ok(12));
    // A replica that did not move may still acknowledge the lost primary's writes.
    moved.record(follow, Err("timed out".into()));
    let refused = moved.before_promotion(0, *epoch);
    assert!(
        refused.as_ref().is_err_and(|why| why.contains("timed out")),
        "{refused:?}"
    );
    moved.record(follow, Ok(13));
    assert!(
        moved.before_promotion(0, *epoch).is_err(),
        "a failure sticks"
    );
}

#[test]
fn the_new_epoch_is_one_above_the_highest_any_node_reports() {
    let d = desired(4, 1, 3);
    let map = vec![entry(0, &[1, 2], 3)];
    let mut nodes = matching(4, &map, 10, 1);
    // A copy the map does not know (an older map's, say) claims epoch 6.
    nodes[3].copies.insert(0, replica_report(6, 2, "db-9"));
    down(&mut nodes, 0, 0);
    let plan = plan(&d, &nodes, &current(map, 1), WINDOW);
    let [Action::Promote { epoch, node, .. }] = promotes(&plan)[..] else {
        panic!("{:?}", plan.actions);
    };
    assert_eq!(*epoch, 7);
    assert_eq!(plan.map[0].copies.epoch, 7);
    assert!(node == "db-1" || node == "db-2");
}

#[test]
fn with_failover_disabled_a_lost_primary_is_reported_not_replaced() {
    let mut d = desired(3, 1, 3);
    d.failover = false;
    let map = vec![entry(0, &[1, 2], 1)];
    let mut nodes = matching(3, &map, 10, 1);
    down(&mut nodes, 0, 0);
    let plan = plan(&d, &nodes, &current(map.clone(), 1), WINDOW * 5);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.map[0].copies, map[0].copies);
    assert_eq!(plan.version, 1);
    assert_eq!(plan.failing_over, vec![0]);
    assert!(
        plan.map[0]
            .message
            .as_deref()
            .unwrap()
            .contains("failover.enabled is false")
    );
}

#[test]
fn require_quorum_with_too_few_reachable_replicas_promotes_no_one() {
    let mut d = desired(3, 2, 3);
    d.require_quorum = true;
    let map = vec![entry(0, &[1, 2], 1), entry(0, &[1, 2], 1)];
    let mut nodes = matching(3, &map, 10, 1);
    down(&mut nodes, 0, 0);
    down(&mut nodes, 2, 0);
    let plan = plan(&d, &nodes, &current(map.clone(), 1), WINDOW * 5);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.failing_over, vec![0, 1]);
    assert_eq!(plan.version, 1);
    for e in &plan.map {
        let m = e.message.as_deref().unwrap();
        assert!(m.contains("no replica can be promoted safely"), "{m}");
        assert!(m.contains("requireQuorum"), "{m}");
    }
    // Without requireQuorum, the one reachable replica is promoted.
    d.require_quorum = false;
    let plan = super::plan(&d, &nodes, &current(map, 1), WINDOW * 5);
    assert_eq!(promotes(&plan).len(), 2);
    assert!(
        plan.map
            .iter()
            .all(|e| e.copies.primary.as_deref() == Some("db-1"))
    );
}

#[test]
fn without_an_in_sync_replica_no_one_is_promoted() {
    let d = desired(3, 1, 3);
    let mut map = vec![entry(0, &[1, 2], 1)];
    map[0].in_sync.clear();
    let mut nodes = matching(3, &map, 10, 1);
    down(&mut nodes, 0, 0);
    let plan = plan(&d, &nodes, &current(map, 1), WINDOW);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
    let m = plan.map[0].message.as_deref().unwrap();
    assert!(m.contains("no reachable replica was in sync"), "{m}");
}

#[test]
fn a_returning_old_primary_is_told_to_follow() {
    let d = desired(3, 1, 3);
    let map = vec![entry(1, &[0, 2], 2)];
    let mut nodes = matching(3, &map, 10, 1);
    // db-0 comes back still claiming primary at epoch 1, with a tail the others never saw.
    nodes[0].copies.insert(0, primary_report(1, 14, &[]));
    report(&mut nodes, 1, 0)
        .replicas
        .retain(|r| r.node != "db-0");
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 10);
    assert_eq!(
        plan.actions,
        vec![Action::Follow {
            partition: 0,
            node: name(0),
            primary: name(1),
            epoch: 2,
        }]
    );
    assert_eq!(plan.map[0].copies, map[0].copies);
    assert_eq!(plan.version, 1);
}

#[test]
fn a_recorded_primary_the_node_has_not_taken_up_is_repaired_with_a_fence() {
    // A switchover from db-0 to db-1 was recorded at epoch 2; the operator died before acting.
    let d = desired(3, 1, 3);
    let old = vec![entry(0, &[1, 2], 1)];
    let nodes = matching(3, &old, 10, 1);
    let recorded = vec![entry(1, &[0, 2], 2)];
    let plan = plan(&d, &nodes, &current(recorded.clone(), 2), 10);
    assert_eq!(
        without_topology(&plan),
        vec![
            // db-0 is repointed by the promotion itself, once fenced and caught up with; the
            // other replica moves to the new epoch before the promotion.
            &Action::Follow {
                partition: 0,
                node: name(2),
                primary: name(1),
                epoch: 2,
            },
            &Action::Promote {
                partition: 0,
                node: name(1),
                epoch: 2,
                fence: vec![(name(0), 1)],
                hosted: true,
                reason: Reason::Repair,
            },
        ]
    );
    assert_eq!(plan.map[0].copies, recorded[0].copies);
    assert_eq!(plan.version, 2);

    // While the old primary cannot be reached (but is not known to be lost), nothing is done.
    let mut nodes = nodes;
    down(&mut nodes, 0, 0);
    let plan = super::plan(&d, &nodes, &current(recorded.clone(), 2), WINDOW / 2);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
}

#[test]
fn a_recorded_failover_is_carried_out_after_a_crash_although_the_old_primary_is_lost() {
    // A failover from db-0 to db-1 was recorded at epoch 2; the operator died before the
    // promotion. db-0 is still down: it cannot be fenced, and it need not be.
    let d = desired(3, 1, 3);
    let old = vec![entry(0, &[1, 2], 1)];
    let mut nodes = matching(3, &old, 10, 1);
    down(&mut nodes, 0, 0);
    let before = plan(&d, &nodes, &current(old, 1), WINDOW);
    assert_eq!(promotes(&before).len(), 1);
    let recorded = current(before.map.clone(), before.version);
    let plan = plan(&d, &nodes, &recorded, WINDOW + 10);
    let [
        Action::Promote {
            node, epoch, fence, ..
        },
    ] = promotes(&plan)[..]
    else {
        panic!("a recorded failover must still happen: {:?}", plan);
    };
    assert_eq!(node, "db-1");
    assert_eq!(*epoch, 2);
    assert!(fence.is_empty(), "{fence:?}");
    assert_eq!(plan.map, before.map);
    assert_eq!(plan.version, before.version);
    // As in the failover itself, db-2 moves to epoch 2 before db-1 leads: db-0 may only be cut
    // off from the operator, and must not gather a QUORUM with db-2 while db-1 takes writes.
    let follow = Action::Follow {
        partition: 0,
        node: name(2),
        primary: name(1),
        epoch: 2,
    };
    let at = |a: &Action| plan.actions.iter().position(|x| x == a);
    assert!(
        at(&follow) < at(promotes(&plan)[0]) && at(&follow).is_some(),
        "{:?}",
        plan.actions
    );
}

#[test]
fn a_requested_switchover_is_refused_for_a_non_replica_or_a_bad_partition() {
    let (mut d, map) = three_by_three();
    let nodes = matching(3, &map, 10, 1);
    d.switchover = Some((0, "db-7".into()));
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 10);
    assert!(matches!(plan.switchover, Some(SwitchoverState::Refused(_))));
    assert!(plan.is_quiet());
    d.switchover = Some((3, "db-1".into()));
    let plan = super::plan(&d, &nodes, &current(map.clone(), 1), 10);
    assert!(
        matches!(&plan.switchover, Some(SwitchoverState::Refused(m)) if m.contains("does not exist"))
    );
    assert!(plan.is_quiet());
    // Asking for the current primary is done already.
    d.switchover = Some((0, "db-0".into()));
    let plan = super::plan(&d, &nodes, &current(map, 1), 10);
    assert_eq!(plan.switchover, Some(SwitchoverState::Done));
}

#[test]
fn a_requested_switchover_waits_for_the_target_then_fences_and_is_done() {
    let (mut d, map) = three_by_three();
    d.switchover = Some((0, "db-2".into()));
    // Rebalancing would move the primary back to where balance wants it.
    d.rebalance = false;
    let cur = current(map.clone(), 1);

    // The target is not in sync: pending, nothing done.
    let mut nodes = matching(3, &map, 10, 1);
    report(&mut nodes, 2, 0).streaming = false;
    let plan = plan(&d, &nodes, &cur, 10);
    assert_eq!(plan.switchover, Some(SwitchoverState::Pending));
    assert!(promotes(&plan).is_empty());
    assert_eq!(plan.version, 1);
    assert!(plan.map[0].message.as_deref().unwrap().contains("db-2"));

    // In sync: recorded at epoch 2 and carried out by a fencing promotion.
    let nodes = matching(3, &map, 10, 1);
    let plan = super::plan(&d, &nodes, &cur, 20);
    assert_eq!(plan.switchover, Some(SwitchoverState::Pending));
    assert_eq!(
        promotes(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(2),
            epoch: 2,
            fence: vec![(name(0), 1)],
            hosted: true,
            reason: Reason::Switchover,
        }]
    );
    assert_eq!(
        plan.map[0].copies,
        Copies {
            primary: Some(name(2)),
            replicas: names(&[0, 1]),
            epoch: 2,
        }
    );
    assert_eq!(plan.version, 2);
    assert!(plan.takeovers.iter().all(|t| t.planned));

    // Once the target reports primary, the request is done and nothing more happens.
    let nodes = matching(3, &plan.map, 10, 2);
    let done = super::plan(&d, &nodes, &current(plan.map.clone(), 2), 30);
    assert_eq!(done.switchover, Some(SwitchoverState::Done));
    assert!(done.is_quiet(), "{:?}", done.actions);
}

/// Runs plan after plan, the nodes doing exactly what each map says (every copy in sync at
/// once), until a plan is quiet; returns every plan.
fn drive(d: &Desired, n: usize, start: Current, limit: usize) -> Vec<Plan> {
    let mut cur = start;
    let mut plans = Vec::new();
    let mut nodes = matching(n, &cur.map, 5, cur.version);
    for step in 0..limit {
        let plan = plan(d, &nodes, &cur, 10 * step as u64);
        let quiet = plan.is_quiet();
        cur = current(plan.map.clone(), plan.version);
        let deleted: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeletePod { pod } => Some(pod.clone()),
                _ => None,
            })
            .collect();
        let outdated: Vec<bool> = nodes.iter().map(|n| n.outdated).collect();
        plans.push(plan);
        if quiet {
            return plans;
        }
        nodes = matching(n, &cur.map, 5, cur.version);
        for (node, was) in nodes.iter_mut().zip(outdated) {
            node.outdated = was && !deleted.contains(&node.name);
        }
    }
    panic!("no quiet plan after {limit} steps");
}

#[test]
fn a_rebalance_is_balanced_only_once_the_last_primary_has_moved() {
    // Copies are where they should be, but db-0 leads all three partitions: two switchovers,
    // one at a time. Neither batch boundary may read as "balanced" (a rebalance request would
    // be marked handled, and with rebalance.auto off the rest would never happen).
    let mut d = desired(3, 3, 3);
    let map = vec![
        entry(0, &[1, 2], 1),
        entry(0, &[1, 2], 1),
        entry(0, &[1, 2], 1),
    ];
    let plans = drive(&d, 3, current(map.clone(), 1), 20);
    let switched: usize = plans.iter().map(|p| p.takeovers.len()).sum();
    assert_eq!(
        switched,
        2,
        "{:?}",
        plans.iter().map(|p| &p.takeovers).collect::<Vec<_>>()
    );
    let last = plans.last().unwrap();
    assert!(last.balanced);
    for p in &plans[..plans.len() - 1] {
        if !p.takeovers.is_empty() {
            assert!(
                !p.balanced,
                "balanced while switching over: {:?}",
                p.takeovers
            );
        }
    }
    assert!(!plans[0].balanced);
    // Not looked at, not balanced: rebalancing off.
    d.rebalance = false;
    let off = plan(&d, &matching(3, &map, 5, 1), &current(map, 1), 0);
    assert!(!off.balanced);
}

#[test]
fn scale_up_moves_at_most_max_concurrent_moves_at_a_time() {
    let mut d = desired(3, 6, 2);
    d.max_concurrent_moves = 2;
    let first = plan(
        &d,
        &(0..3).map(node).collect::<Vec<_>>(),
        &Current::default(),
        0,
    );
    d.nodes = 4;
    let start = current(first.map.clone(), first.version);
    let first_step = plan(&d, &matching(4, &first.map, 5, 1), &start, 0);
    // The first step adds copies on db-3, records the moves, and drops nothing yet.
    let started: Vec<_> = first_step.moves.iter().filter(|m| m.3).collect();
    assert_eq!(started.len(), 2, "{:?}", first_step.moves);
    for (p, from, to, _) in &started {
        assert_eq!(to, "db-3");
        let e = &first_step.map[*p];
        assert_eq!(
            e.moving,
            Some(Move {
                from: from.clone(),
                to: to.clone()
            })
        );
        assert!(e.copies.holds(from) && e.copies.holds(to));
        assert!(first_step.actions.contains(&Action::Follow {
            partition: *p,
            node: to.clone(),
            primary: e.copies.primary.clone().unwrap(),
            epoch: e.copies.epoch,
        }));
    }
    assert!(
        !first_step
            .actions
            .iter()
            .any(|a| matches!(a, Action::Drop { .. }))
    );
    // The new copy not in sync yet: the old one stays.
    let mut nodes = matching(4, &first_step.map, 5, first_step.version);
    for (p, _, _, _) in &started {
        report(&mut nodes, 3, *p).streaming = false;
    }
    let waiting = plan(
        &d,
        &nodes,
        &current(first_step.map.clone(), first_step.version),
        10,
    );
    assert!(
        !waiting
            .actions
            .iter()
            .any(|a| matches!(a, Action::Drop { .. }))
    );
    assert_eq!(waiting.map.iter().filter(|e| e.moving.is_some()).count(), 2);

    let plans = drive(
        &d,
        4,
        current(first_step.map.clone(), first_step.version),
        60,
    );
    for plan in &plans {
        assert!(plan.map.iter().filter(|e| e.moving.is_some()).count() <= 2);
        for a in &plan.actions {
            // A copy is dropped only once its move's new copy was in sync, and never the
            // primary's: a primary leaving is switched over first.
            if let Action::Drop {
                partition, node, ..
            } = a
            {
                let e = &plan.map[*partition];
                assert!(!e.copies.holds(node));
                assert!(plan.moves.iter().any(|m| m.0 == *partition && !m.3));
            }
        }
    }
    assert_balanced(&d, &plans.last().unwrap().map);
}

#[test]
fn a_move_off_a_primary_switches_over_before_dropping() {
    let d = desired(3, 1, 2);
    // Target for one partition on three nodes is db-0 + db-1; the map has db-2 + db-1, with
    // db-2 leaving as primary, moving to db-0.
    let mut e = entry(2, &[0, 1], 1);
    e.moving = Some(Move {
        from: name(2),
        to: name(0),
    });
    let map = vec![e];
    let nodes = matching(3, &map, 5, 1);
    let plan = plan(&d, &nodes, &current(map, 1), 0);
    assert_eq!(
        without_topology(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(0),
            epoch: 2,
            fence: vec![(name(2), 1)],
            hosted: true,
            reason: Reason::Switchover,
        }]
    );
    assert_eq!(plan.map[0].copies.primary.as_deref(), Some("db-0"));
    assert!(plan.map[0].moving.is_some(), "the drop comes next");
    let nodes = matching(3, &plan.map, 5, plan.version);
    let next = super::plan(&d, &nodes, &current(plan.map.clone(), plan.version), 10);
    assert!(next.actions.contains(&Action::Drop {
        partition: 0,
        node: name(2),
        epoch: 2,
        force: false,
    }));
    assert_eq!(next.map[0].moving, None);
    assert!(!next.map[0].copies.holds("db-2"));
}

#[test]
fn a_move_drops_the_old_copy_only_once_every_other_replica_is_in_sync_again() {
    // Three copies on four nodes: db-0 leads, db-1 and db-2 follow, and the move of db-0's copy
    // to db-3 has switched over: db-3 leads at epoch 2. db-1 and db-2 are still being repointed
    // at it (neither is in sync with db-3 yet): dropping db-0 now would leave db-3 the only
    // in-sync copy.
    let d = desired(4, 1, 3);
    let mut e = entry(3, &[0, 1, 2], 2);
    e.moving = Some(Move {
        from: name(0),
        to: name(3),
    });
    let map = vec![e];
    let mut nodes = matching(4, &map, 5, 1);
    for i in [1, 2] {
        nodes[i].copies.insert(0, replica_report(1, 5, "db-0"));
    }
    report(&mut nodes, 3, 0)
        .replicas
        .retain(|r| r.node == "db-0");
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 0);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Drop { .. })),
        "{:?}",
        plan.actions
    );
    assert!(plan.map[0].moving.is_some(), "the move waits");
    assert!(plan.map[0].copies.holds("db-0"));
    // Once they follow db-3 in sync, db-0's copy goes.
    let nodes = matching(4, &map, 5, 1);
    let plan = super::plan(&d, &nodes, &current(map, 1), 10);
    assert!(plan.actions.contains(&Action::Drop {
        partition: 0,
        node: name(0),
        epoch: 2,
        force: false,
    }));
    assert_eq!(plan.map[0].moving, None);
}

#[test]
fn scale_down_drains_the_highest_nodes_before_the_statefulset_shrinks() {
    let mut d = desired(4, 6, 2);
    d.rebalance = false; // draining happens regardless
    let first = plan(
        &d,
        &(0..4).map(node).collect::<Vec<_>>(),
        &Current::default(),
        0,
    );
    assert!(first.map.iter().any(|e| e.copies.holds("db-3")));
    d.nodes = 3;
    let plans = drive(&d, 4, current(first.map.clone(), first.version), 80);
    for plan in &plans {
        let on_3 = plan.map.iter().any(|e| e.copies.holds("db-3"));
        assert!(
            plan.statefulset_replicas == if on_3 { 4 } else { 3 },
            "replicas {} while db-3 holds copies: {on_3}",
            plan.statefulset_replicas
        );
        for (_, from, _, started) in &plan.moves {
            if *started && on_3 {
                assert_eq!(from, "db-3", "drains go first: {:?}", plan.moves);
            }
        }
        assert!(plan.map.iter().filter(|e| e.moving.is_some()).count() <= 1);
    }
    let last = plans.last().unwrap();
    assert!(!last.map.iter().any(|e| e.copies.holds("db-3")));
    assert_eq!(last.statefulset_replicas, 3);
}

#[test]
fn a_rolling_update_waits_until_quiet_and_restarts_one_pod_at_a_time_highest_first() {
    let (d, map) = three_by_three();
    // Not quiet (a replica is behind): nothing restarts.
    let mut nodes = matching(3, &map, 10, 1);
    for n in &mut nodes {
        n.outdated = true;
    }
    report(&mut nodes, 1, 0).streaming = false;
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 0);
    assert_eq!(plan.rolling, names(&[0, 1, 2]));
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { .. } | Action::Promote { .. })),
        "{:?}",
        plan.actions
    );

    // Quiet: the highest pod first has its primary switched over, then is deleted; one at a time.
    let mut cur = current(map, 1);
    let mut nodes = matching(3, &cur.map, 10, 1);
    for n in &mut nodes {
        n.outdated = true;
    }
    let mut deleted = Vec::new();
    for step in 0..40 {
        let plan = super::plan(&d, &nodes, &cur, step * 10);
        let deletes: Vec<&String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::DeletePod { pod } => Some(pod),
                _ => None,
            })
            .collect();
        assert!(deletes.len() <= 1, "{:?}", plan.actions);
        let rolling = nodes.iter().any(|n| n.outdated);
        if rolling {
            // No rebalancing meanwhile: the only change of primary moves one off the pod
            // restarted next.
            assert!(plan.moves.is_empty(), "{:?}", plan.moves);
            for a in &plan.actions {
                if let Action::Promote { fence, node, .. } = a {
                    assert_eq!(fence.len(), 1);
                    let from = &nodes[ordinal(&fence[0].0).unwrap()];
                    assert!(from.outdated, "{a:?}");
                    assert!(!deletes.is_empty() || node != &from.name);
                }
            }
        }
        for pod in &deletes {
            // The pod deleted leads nothing.
            assert!(
                !plan
                    .map
                    .iter()
                    .any(|e| e.copies.primary.as_deref() == Some(pod.as_str()))
            );
            deleted.push((*pod).clone());
        }
        let quiet = plan.is_quiet();
        cur = current(plan.map.clone(), plan.version);
        let outdated: Vec<bool> = nodes
            .iter()
            .map(|n| n.outdated && !deleted.contains(&n.name))
            .collect();
        nodes = matching(3, &cur.map, 10, cur.version);
        for (n, o) in nodes.iter_mut().zip(outdated) {
            n.outdated = o;
        }
        if quiet {
            break;
        }
    }
    assert_eq!(deleted, names(&[2, 1, 0]));
    assert!(nodes.iter().all(|n| !n.outdated));
}

#[test]
fn stray_copies_are_dropped() {
    let (mut d, map) = three_by_three();
    d.nodes = 4;
    d.rebalance = false;
    let mut nodes = matching(4, &map, 10, 1);
    // db-3 still holds partition 0: a drop that never happened.
    nodes[3].copies.insert(0, replica_report(1, 10, "db-0"));
    let plan = plan(&d, &nodes, &current(map.clone(), 1), 0);
    assert_eq!(
        plan.actions,
        vec![Action::Drop {
            partition: 0,
            node: name(3),
            epoch: 1,
            force: false,
        }]
    );
    // A stray that still leads at an older epoch (an old primary back after its copy left the
    // map) is dropped by force at its own epoch: told to follow, it would acknowledge writes
    // as a replica the map does not name, which a failover would not consider.
    let mut later = map.clone();
    later[0].copies.epoch = 3;
    let nodes_later = matching(4, &later, 10, 1);
    let mut nodes = nodes_later;
    nodes[3].copies.insert(0, primary_report(2, 12, &[]));
    let plan = super::plan(&d, &nodes, &current(later.clone(), 1), 0);
    assert_eq!(
        plan.actions,
        vec![Action::Drop {
            partition: 0,
            node: name(3),
            epoch: 2,
            force: true,
        }]
    );
    // One that leads at the map's epoch is left alone: nothing is dropped by force that a
    // newer plan may have made primary.
    nodes[3].copies.insert(0, primary_report(3, 12, &[]));
    let plan = super::plan(&d, &nodes, &current(later, 1), 0);
    assert!(plan.is_quiet(), "{:?}", plan.actions);
    let mut nodes = matching(4, &map, 10, 1);
    // Not when the node is ahead of the map, nor while the primary is not answering.
    nodes[3].copies.insert(0, replica_report(2, 10, "db-0"));
    let plan = super::plan(&d, &nodes, &current(map.clone(), 1), 0);
    assert!(plan.is_quiet(), "{:?}", plan.actions);
    nodes[3].copies.insert(0, replica_report(1, 10, "db-0"));
    down(&mut nodes, 0, 0);
    let plan = super::plan(&d, &nodes, &current(map, 1), 1);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Drop { .. }))
    );
}

#[test]
fn a_lost_map_is_rebuilt_from_the_nodes_reports() {
    let (d, mut map) = three_by_three();
    map[1].copies.epoch = 4;
    let nodes = matching(3, &map, 10, 9);
    let plan = plan(&d, &nodes, &Current::default(), 0);
    let copies: Vec<&Copies> = plan.map.iter().map(|e| &e.copies).collect();
    let want: Vec<&Copies> = map.iter().map(|e| &e.copies).collect();
    assert_eq!(copies, want);
    assert!(promotes(&plan).is_empty());
    // The nodes hold topology 9 from before: the rebuilt map goes above it, so it is pushed.
    assert_eq!(plan.version, 10);
    assert_eq!(
        plan.actions,
        (0..3)
            .map(|i| Action::PushTopology { node: name(i) })
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_recorded_switchover_whose_old_primary_is_then_lost_goes_to_the_best_replica() {
    // A switchover from db-0 to db-1 was recorded at epoch 2; before it was carried out db-0
    // died, and db-2 holds more than db-1. Promoting db-1 would lose that: it is a failover.
    let d = desired(3, 1, 3);
    let mut recorded = entry(1, &[0, 2], 2);
    recorded.in_sync = names(&[0, 2]);
    let mut nodes = matching(3, &[entry(0, &[1, 2], 1)], 15, 1);
    report(&mut nodes, 2, 0).last = (1, 18);
    down(&mut nodes, 0, 0);
    nodes[0].ready = false;
    let plan = plan(&d, &nodes, &current(vec![recorded.clone()], 2), 10);
    let [
        Action::Promote {
            node,
            epoch,
            reason,
            ..
        },
    ] = promotes(&plan)[..]
    else {
        panic!("{:?}", plan.actions);
    };
    assert_eq!(
        (node.as_str(), *epoch, *reason),
        ("db-2", 3, Reason::Failover)
    );
    assert_eq!(plan.map[0].copies.primary.as_deref(), Some("db-2"));
    assert_eq!(plan.takeovers[0].from.as_deref(), Some("db-0"));

    // With db-1 as good as any, the recorded promotion goes ahead, without the lost db-0.
    report(&mut nodes, 2, 0).last = (1, 15);
    let plan = super::plan(&d, &nodes, &current(vec![recorded], 2), 10);
    assert_eq!(
        promotes(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(1),
            epoch: 2,
            fence: vec![],
            hosted: true,
            reason: Reason::Repair,
        }]
    );
}

#[test]
fn an_old_primary_lost_long_ago_does_not_hold_up_a_repair() {
    // db-2 led epoch 1 and froze; db-0 took over at 2; a switchover to db-1 at 3 was recorded
    // and not carried out. db-0 is fenced, db-2 (superseded) is left out.
    let d = desired(3, 1, 3);
    let recorded = vec![entry(1, &[0, 2], 3)];
    let mut nodes = matching(3, &[entry(0, &[1], 2)], 10, 1);
    nodes[2].copies.insert(0, primary_report(1, 4, &[]));
    down(&mut nodes, 2, 0);
    let plan = plan(&d, &nodes, &current(recorded, 3), WINDOW * 3);
    assert_eq!(
        promotes(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(1),
            epoch: 3,
            fence: vec![(name(0), 2)],
            hosted: true,
            reason: Reason::Repair,
        }]
    );
}

#[test]
fn a_promotion_that_failed_after_the_fence_still_waits_for_the_old_primarys_tail() {
    // The recorded switchover to db-1 fenced db-0, then timed out: db-0 is fenced, not primary.
    let d = desired(3, 1, 3);
    let recorded = vec![entry(1, &[0, 2], 2)];
    let mut nodes = matching(3, &[entry(0, &[1, 2], 1)], 18, 1);
    let old = report(&mut nodes, 0, 0);
    old.role = Role::Fenced;
    old.last = (1, 20);
    old.replicas.clear();
    let plan = plan(&d, &nodes, &current(recorded.clone(), 2), 10);
    // Fenced again (a retry), so that the promotion waits for its end offset; it is repointed
    // by the promotion, once caught up with, not before. The other replica moves to the new
    // epoch first, as in a failover.
    assert_eq!(
        without_topology(&plan),
        vec![
            &Action::Follow {
                partition: 0,
                node: name(2),
                primary: name(1),
                epoch: 2,
            },
            &Action::Promote {
                partition: 0,
                node: name(1),
                epoch: 2,
                fence: vec![(name(0), 1)],
                hosted: true,
                reason: Reason::Repair,
            },
        ]
    );

    // The target lost its stream (it restarted): a fenced primary serves no new one, so it
    // would never catch up. The switchover is undone: db-0, which holds every write, leads
    // again at a new epoch.
    report(&mut nodes, 1, 0).streaming = false;
    let plan = super::plan(&d, &nodes, &current(recorded, 2), 10);
    assert_eq!(
        promotes(&plan),
        vec![&Action::Promote {
            partition: 0,
            node: name(0),
            epoch: 3,
            fence: vec![(name(1), 2)],
            hosted: true,
            reason: Reason::Switchover,
        }]
    );
    assert_eq!(plan.map[0].copies.primary.as_deref(), Some("db-0"));
    assert_eq!(plan.map[0].copies.epoch, 3);
}

#[test]
fn with_require_quorum_a_replica_ahead_of_the_in_sync_record_counts() {
    // The record (the primary's word at the last observation) has db-1 in sync only; db-2
    // caught up since and holds writes db-1 lacks, perhaps QUORUM-acknowledged ones.
    let mut d = desired(3, 1, 3);
    let mut map = vec![entry(0, &[1, 2], 1)];
    map[0].in_sync = names(&[1]);
    let mut nodes = matching(3, &map, 10, 1);
    report(&mut nodes, 2, 0).last = (1, 12);
    down(&mut nodes, 0, 0);
    nodes[0].ready = false;
    let chosen = |d: &Desired| {
        let plan = plan(d, &nodes, &current(map.clone(), 1), 10);
        match promotes(&plan)[..] {
            [Action::Promote { node, .. }] => node.clone(),
            _ => panic!("{:?}", plan.actions),
        }
    };
    d.require_quorum = true;
    assert_eq!(chosen(&d), "db-2");
    // Without requireQuorum the record decides, as designed.
    d.require_quorum = false;
    assert_eq!(chosen(&d), "db-1");
}

#[test]
fn a_rolling_update_restarts_a_primary_that_has_no_replica() {
    // replicationFactor 1: nowhere to switch over to; the pod restarts with its partitions
    // rather than never.
    let d = desired(2, 2, 1);
    let map = vec![entry(0, &[], 1), entry(1, &[], 1)];
    let mut nodes = matching(2, &map, 10, 1);
    for n in &mut nodes {
        n.outdated = true;
    }
    let plan = plan(&d, &nodes, &current(map, 1), 0);
    assert_eq!(plan.actions, vec![Action::DeletePod { pod: name(1) }]);
}

#[test]
fn a_changed_replication_factor_adds_or_drops_copies() {
    let mut d = desired(3, 3, 2);
    d.max_concurrent_moves = 1;
    let first = plan(
        &d,
        &(0..3).map(node).collect::<Vec<_>>(),
        &Current::default(),
        0,
    );
    // Raised: every partition gets its third copy, one copy in flight at a time.
    d.replication_factor = 3;
    let plans = drive(&d, 3, current(first.map.clone(), first.version), 40);
    for plan in &plans {
        let follows = plan
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Follow { .. }))
            .count();
        assert!(follows <= 1, "{:?}", plan.actions);
    }
    let raised = &plans.last().unwrap().map;
    assert_balanced(&d, raised);
    // Lowered: a replica of each goes, never a primary.
    d.replication_factor = 2;
    let version = plans.last().unwrap().version;
    let plans = drive(&d, 3, current(raised.clone(), version), 40);
    for plan in &plans {
        for a in &plan.actions {
            if let Action::Drop {
                partition, node, ..
            } = a
            {
                assert_ne!(raised[*partition].copies.primary.as_ref(), Some(node));
            }
        }
    }
    assert_balanced(&d, &plans.last().unwrap().map);
}

#[test]
fn a_move_finishing_drops_the_old_copy_once() {
    let d = desired(3, 1, 2);
    let mut e = entry(1, &[0, 2], 1);
    e.moving = Some(Move {
        from: name(2),
        to: name(0),
    });
    let map = vec![e];
    let nodes = matching(3, &map, 5, 1);
    let plan = plan(&d, &nodes, &current(map, 1), 0);
    let drops: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Drop { .. }))
        .collect();
    assert_eq!(
        drops,
        vec![&Action::Drop {
            partition: 0,
            node: name(2),
            epoch: 1,
            force: false,
        }]
    );
}

#[test]
fn a_rebuilt_entry_without_a_primary_is_completed_when_the_primary_answers() {
    // Rebuilt after a lost status while db-0, the primary, did not answer: only db-1 was seen.
    let d = desired(2, 1, 2);
    let rebuilt = vec![Entry {
        copies: Copies {
            primary: None,
            replicas: names(&[1]),
            epoch: 1,
        },
        ..Entry::default()
    }];
    let nodes = matching(2, &[entry(0, &[1], 1)], 10, 1);
    let plan = plan(&d, &nodes, &current(rebuilt, 1), 0);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
    assert_eq!(
        plan.map[0].copies,
        Copies {
            primary: Some(name(0)),
            replicas: names(&[1]),
            epoch: 1,
        }
    );
}

#[test]
fn a_node_leading_above_the_recorded_epoch_is_adopted() {
    // A map older than what was acted on (restored, or rebuilt while db-0 was away): db-0
    // leads epoch 2, which the map never recorded, while db-1 still leads epoch 1.
    let d = desired(2, 1, 2);
    let recorded = vec![entry(1, &[0], 1)];
    let mut nodes = matching(2, &[entry(0, &[], 2)], 10, 1);
    nodes[1].copies.insert(0, primary_report(1, 8, &[]));
    let plan = plan(&d, &nodes, &current(recorded, 1), 0);
    assert!(promotes(&plan).is_empty(), "{:?}", plan.actions);
    assert_eq!(
        plan.map[0].copies,
        Copies {
            primary: Some(name(0)),
            replicas: names(&[1]),
            epoch: 2,
        }
    );
    assert!(plan.actions.contains(&Action::Follow {
        partition: 0,
        node: name(1),
        primary: name(0),
        epoch: 2,
    }));
}

#[test]
fn nothing_is_placed_or_scaled_away_while_a_pod_that_may_hold_data_is_silent() {
    // The set was scaled to one node while its status was lost; db-1 does not answer, and may
    // hold the partition.
    let d = desired(1, 1, 1);
    let mut nodes: Vec<Node> = (0..2).map(node).collect();
    down(&mut nodes, 1, 0);
    nodes[1].ready = false;
    let plan = plan(&d, &nodes, &Current::default(), 10);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.unplaced.as_deref().unwrap().contains("db-1"));
    assert_eq!(plan.statefulset_replicas, 2);
}

/// Primaries and copies per node differ by at most one, every copy on a node of the set.
fn assert_balanced(d: &Desired, map: &[Entry]) {
    if let Err(e) = balanced(d, map) {
        panic!("{e}: {map:#?}");
    }
}

fn balanced(d: &Desired, map: &[Entry]) -> Result<(), String> {
    let mut copies = vec![0usize; d.nodes];
    let mut led = vec![0usize; d.nodes];
    let k = d.replication_factor.min(d.nodes);
    for (p, e) in map.iter().enumerate() {
        if e.copies.nodes().count() != k {
            return Err(format!("partition {p} has not {k} copies"));
        }
        for n in e.copies.nodes() {
            match ordinal(n).filter(|&i| i < d.nodes) {
                Some(i) => copies[i] += 1,
                None => return Err(format!("partition {p} has a copy on {n}")),
            }
        }
        match e.copies.primary.as_deref().and_then(ordinal) {
            Some(i) if i < d.nodes => led[i] += 1,
            _ => return Err(format!("partition {p} has no primary in the set")),
        }
    }
    for (what, counts) in [("copies", &copies), ("primaries", &led)] {
        let lo = counts.iter().min().copied().unwrap_or(0);
        let hi = counts.iter().max().copied().unwrap_or(0);
        if hi - lo > 1 {
            return Err(format!("{what} per node {counts:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The simulated cluster.
// ---------------------------------------------------------------------------------------------

const MAX_NODES: usize = 5;

/// A copy's role on a simulated node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SimRole {
    Primary,
    Replica(String),
    Fenced,
    /// Dropped (or never assigned): reported as nothing.
    Unassigned,
}

/// One partition on a simulated node.
#[derive(Clone, Debug)]
struct SimCopy {
    role: SimRole,
    epoch: u64,
    /// Every entry: (epoch, write id). The offset is the length.
    log: Vec<(u64, u64)>,
    /// As a replica: its stream is established (it caught up once since its last role change
    /// or restart).
    synced: bool,
    /// As a primary: the copies it was told the partition has (`replicationFactor` when it
    /// was promoted); QUORUM is a majority of them.
    copies: usize,
}

impl SimCopy {
    fn unassigned() -> Self {
        SimCopy {
            role: SimRole::Unassigned,
            epoch: 0,
            log: Vec::new(),
            synced: false,
            copies: 0,
        }
    }

    fn last(&self) -> (u64, u64) {
        (self.log.last().map_or(0, |e| e.0), self.log.len() as u64)
    }
}

/// Which admin call changes a role (the node's epoch rules differ between them).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Assign,
    Promote,
    Follow,
    Fence,
    Drop,
}

/// The node's epoch rules (node/src/replication/role.rs, `check_change`).
fn check_change(held: &SimCopy, change: Change, epoch: u64, role: &SimRole) -> Result<(), String> {
    if epoch < held.epoch {
        return Err(format!("stale epoch {epoch} < {}", held.epoch));
    }
    if *role == SimRole::Primary && epoch < held.last().0 {
        return Err("cannot lead below the log's last epoch".into());
    }
    if epoch > held.epoch || held.role == *role {
        return Ok(());
    }
    match change {
        Change::Follow | Change::Fence | Change::Drop => Ok(()),
        Change::Assign | Change::Promote => {
            Err(format!("epoch {epoch} already held as {:?}", held.role))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Up,
    /// Paused: answers nothing, but its pod looks fine and it still believes its roles.
    Frozen,
    /// Crashed: its pod is not ready.
    Killed,
    /// Deleted (a rolling update) or just created: no pod for `down_steps` more ticks.
    Restarting,
    /// A new pod, not answering yet.
    Starting,
}

#[derive(Clone, Debug)]
struct SimNode {
    life: Life,
    down_steps: u8,
    outdated: bool,
    /// Catches up with nothing and is not counted in sync.
    slow: bool,
    copies: BTreeMap<usize, SimCopy>,
    topology_version: u64,
}

/// What the operator's health cache holds of a node.
#[derive(Clone, Debug, Default)]
struct Health {
    copies: BTreeMap<usize, CopyReport>,
    topology_version: u64,
    down_since_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Sim {
    desired: Desired,
    nodes: Vec<SimNode>,
    /// StatefulSet replicas: pods exist for ordinals below.
    sts: usize,
    health: Vec<Option<Health>>,
    current: Current,
    now: u64,
    next_write: u64,
    /// QUORUM-acknowledged writes: (partition, write id).
    acked: BTreeSet<(usize, u64)>,
    /// Every (partition, epoch) a node was made primary at, and the node.
    promoted: BTreeMap<(usize, u64), usize>,
    violations: Vec<String>,
    /// What happened, for the failure message.
    trace: Vec<String>,
    /// Promotions in this step get no entry from their stream: one that has to wait for the
    /// fenced primary's tail times out (after the fence).
    stalled: bool,
    /// The status (and the operator with its health cache) is lost before the next reconcile.
    lose_status: bool,
}

impl Sim {
    fn new(desired: Desired) -> Self {
        let sts = desired.nodes;
        Sim {
            desired,
            nodes: (0..MAX_NODES)
                .map(|_| SimNode {
                    life: Life::Up,
                    down_steps: 0,
                    outdated: false,
                    slow: false,
                    copies: BTreeMap::new(),
                    topology_version: 0,
                })
                .collect(),
            sts,
            health: vec![None; MAX_NODES],
            current: Current::default(),
            now: 10_000,
            next_write: 1,
            acked: BTreeSet::new(),
            promoted: BTreeMap::new(),
            violations: Vec::new(),
            trace: Vec::new(),
            stalled: false,
            lose_status: false,
        }
    }

    fn has_pod(&self, i: usize) -> bool {
        i < self.sts && self.nodes[i].life != Life::Restarting
    }

    fn is_up(&self, i: usize) -> bool {
        i < self.sts && self.nodes[i].life == Life::Up
    }

    fn up(&self, node: &str) -> Result<usize, String> {
        match ordinal(node) {
            Some(i) if i < MAX_NODES && self.is_up(i) => Ok(i),
            _ => Err(format!("{node} does not answer")),
        }
    }

    /// Every pod answers and every partition's recorded primary leads at the recorded epoch.
    fn settled_now(&self) -> bool {
        (0..self.sts).all(|i| self.is_up(i))
            && self.current.map.iter().enumerate().all(|(p, e)| {
                e.copies
                    .primary
                    .as_deref()
                    .and_then(ordinal)
                    .is_some_and(|i| {
                        self.nodes[i].copies.get(&p).is_some_and(|c| {
                            c.role == SimRole::Primary && c.epoch == e.copies.epoch
                        })
                    })
            })
    }

    /// Whether replica copy `p` on node `i` streams from its primary now.
    fn streaming(&self, i: usize, p: usize) -> bool {
        let Some(c) = self.nodes[i].copies.get(&p) else {
            return false;
        };
        let SimRole::Replica(primary) = &c.role else {
            return false;
        };
        let Some(j) = ordinal(primary).filter(|&j| j < MAX_NODES) else {
            return false;
        };
        self.is_up(i)
            && self.is_up(j)
            && c.synced
            && self.nodes[j]
                .copies
                .get(&p)
                .is_some_and(|x| x.role == SimRole::Primary && x.epoch == c.epoch)
    }

    /// A node's Admin status, in the planner's terms.
    fn status(&self, i: usize) -> BTreeMap<usize, CopyReport> {
        let mut out = BTreeMap::new();
        for (&p, c) in &self.nodes[i].copies {
            let role = match c.role {
                SimRole::Primary => Role::Primary,
                SimRole::Replica(_) => Role::Replica,
                SimRole::Fenced => Role::Fenced,
                SimRole::Unassigned => continue,
            };
            let replicas = if role == Role::Primary {
                (0..MAX_NODES)
                    .filter(|&j| j != i && self.streaming(j, p))
                    .filter(|&j| self.nodes[j].copies[&p].role == SimRole::Replica(name(i)))
                    .map(|j| ReplicaReport {
                        node: name(j),
                        in_sync: !self.nodes[j].slow,
                        lag_entries: c
                            .log
                            .len()
                            .saturating_sub(self.nodes[j].copies[&p].log.len())
                            as u64,
                        lag_ms: 0,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            out.insert(
                p,
                CopyReport {
                    role,
                    epoch: c.epoch,
                    last: c.last(),
                    following: match &c.role {
                        SimRole::Replica(x) => Some(x.clone()),
                        _ => None,
                    },
                    streaming: self.streaming(i, p),
                    replicas,
                },
            );
        }
        out
    }

    /// What the controller observes: the pods, and every node's status through the health
    /// cache (a node that does not answer keeps its last report; one without a pod has none).
    fn observe(&mut self) -> Vec<Node> {
        let in_map: BTreeSet<usize> = self
            .current
            .map
            .iter()
            .flat_map(|e| e.copies.nodes().filter_map(|n| ordinal(n)))
            .collect();
        let mut out = Vec::new();
        for i in 0..MAX_NODES {
            if i >= self.sts && !in_map.contains(&i) {
                self.health[i] = None;
                continue;
            }
            let pod = self.has_pod(i);
            let reachable = self.is_up(i);
            if !pod {
                self.health[i] = None;
            }
            let h = if reachable {
                Health {
                    copies: self.status(i),
                    topology_version: self.nodes[i].topology_version,
                    down_since_ms: None,
                }
            } else {
                let mut h = self.health[i].clone().unwrap_or_default();
                h.down_since_ms = h.down_since_ms.or(Some(self.now));
                h
            };
            if pod {
                self.health[i] = Some(h.clone());
            }
            let n = &self.nodes[i];
            out.push(Node {
                name: name(i),
                ordinal: i,
                pod,
                ready: pod && matches!(n.life, Life::Up | Life::Frozen),
                outdated: pod && n.outdated,
                reachable,
                down_since_ms: if pod { h.down_since_ms } else { None },
                copies: if pod { h.copies } else { BTreeMap::new() },
                topology_version: if pod { h.topology_version } else { 0 },
            });
        }
        out
    }

    fn copy_mut(&mut self, i: usize, p: usize) -> &mut SimCopy {
        self.nodes[i]
            .copies
            .entry(p)
            .or_insert_with(SimCopy::unassigned)
    }

    /// A replica's stream delivers everything its primary holds (truncating a divergent tail
    /// first); a fenced primary still drains an established stream.
    fn catch_up(&mut self, i: usize, p: usize) {
        if !self.is_up(i) || self.nodes[i].slow {
            return;
        }
        let Some(c) = self.nodes[i].copies.get(&p) else {
            return;
        };
        let SimRole::Replica(primary) = &c.role else {
            return;
        };
        let Some(j) = ordinal(primary).filter(|&j| j < MAX_NODES && self.is_up(j)) else {
            return;
        };
        let Some(src) = self.nodes[j].copies.get(&p) else {
            return;
        };
        let serves = (src.role == SimRole::Primary || (src.role == SimRole::Fenced && c.synced))
            && src.epoch == c.epoch;
        if !serves {
            return;
        }
        let log = src.log.clone();
        let c = self.copy_mut(i, p);
        c.log = log;
        c.synced = true;
    }

    fn promote(
        &mut self,
        p: usize,
        node: &str,
        epoch: u64,
        fence: &[(String, u64)],
        hosted: bool,
        reason: Reason,
    ) -> Result<(), String> {
        let mut min_offset = 0;
        for (old, old_epoch) in fence {
            let j = self.up(old)?;
            let Some(c) = self.nodes[j].copies.get_mut(&p) else {
                continue;
            };
            check_change(c, Change::Fence, *old_epoch, &SimRole::Fenced)?;
            c.role = SimRole::Fenced;
            c.epoch = *old_epoch;
            min_offset = min_offset.max(c.log.len());
        }
        let i = self.up(node)?;
        if hosted {
            if !self.nodes[i].copies.contains_key(&p) {
                return Err(format!("{node} does not host partition {p}"));
            }
            if !self.stalled {
                self.catch_up(i, p);
            }
        }
        let copies = self.desired.replication_factor;
        let c = self.copy_mut(i, p);
        if c.log.len() < min_offset {
            return Err(format!(
                "{node} holds {} of the {min_offset} entries",
                c.log.len()
            ));
        }
        let change = if hosted {
            Change::Promote
        } else {
            Change::Assign
        };
        check_change(c, change, epoch, &SimRole::Primary)?;
        c.role = SimRole::Primary;
        c.epoch = epoch;
        c.synced = false;
        c.copies = copies;
        let log: BTreeSet<u64> = c.log.iter().map(|e| e.1).collect();
        if let Some(&other) = self.promoted.get(&(p, epoch))
            && other != i
        {
            self.violations.push(format!(
                "partition {p}: {} and {node} both made primary at epoch {epoch}",
                name(other)
            ));
        }
        self.promoted.insert((p, epoch), i);
        if self.desired.require_quorum {
            let lost: Vec<u64> = self
                .acked
                .iter()
                .filter(|(q, w)| *q == p && !log.contains(w))
                .map(|x| x.1)
                .collect();
            if !lost.is_empty() {
                self.violations.push(format!(
                    "partition {p}: {node} promoted ({reason:?}) at epoch {epoch} without the \
                     QUORUM-acknowledged writes {lost:?}"
                ));
            }
        }
        if reason == Reason::Switchover || !fence.is_empty() {
            for (old, _) in fence {
                self.follow(p, old, node, epoch)?;
            }
        }
        Ok(())
    }

    fn follow(&mut self, p: usize, node: &str, primary: &str, epoch: u64) -> Result<(), String> {
        let i = self.up(node)?;
        let role = SimRole::Replica(primary.to_string());
        let c = self.copy_mut(i, p);
        check_change(c, Change::Follow, epoch, &role)?;
        if c.role != role || c.epoch != epoch {
            c.synced = false;
        }
        c.role = role;
        c.epoch = epoch;
        Ok(())
    }

    fn drop_copy(&mut self, p: usize, node: &str, epoch: u64, force: bool) -> Result<(), String> {
        let i = self.up(node)?;
        let Some(c) = self.nodes[i].copies.get_mut(&p) else {
            return Ok(());
        };
        if c.role == SimRole::Primary && !force {
            return Err(format!("{node} is primary of {p}"));
        }
        check_change(c, Change::Drop, epoch, &SimRole::Unassigned)?;
        *c = SimCopy {
            epoch,
            ..SimCopy::unassigned()
        };
        Ok(())
    }

    fn apply(&mut self, action: &Action, version: u64) -> Result<(), String> {
        match action {
            Action::Promote {
                partition,
                node,
                epoch,
                fence,
                hosted,
                reason,
            } => self.promote(*partition, node, *epoch, fence, *hosted, *reason),
            Action::Follow {
                partition,
                node,
                primary,
                epoch,
            } => self.follow(*partition, node, primary, *epoch),
            Action::Drop {
                partition,
                node,
                epoch,
                force,
            } => self.drop_copy(*partition, node, *epoch, *force),
            Action::DeletePod { pod } => {
                let i = ordinal(pod).filter(|&i| i < self.sts && self.has_pod(i));
                let i = i.ok_or_else(|| format!("no pod {pod}"))?;
                let n = &mut self.nodes[i];
                n.life = Life::Restarting;
                n.down_steps = 2;
                Ok(())
            }
            Action::PushTopology { node } => {
                let i = self.up(node)?;
                self.nodes[i].topology_version = version;
                Ok(())
            }
        }
    }

    /// Resizes the StatefulSet: new pods start (keeping whatever data their volume holds),
    /// pods above go.
    fn resize(&mut self, replicas: usize) {
        let replicas = replicas.min(MAX_NODES);
        for i in self.sts..replicas {
            let n = &mut self.nodes[i];
            n.life = Life::Starting;
            n.down_steps = 1;
            n.outdated = false;
            n.slow = false;
            for c in n.copies.values_mut() {
                c.synced = false;
            }
        }
        self.sts = replicas;
    }

    /// Time passes: pods restart, replicas catch up.
    fn tick(&mut self, advance_ms: u64) {
        for n in &mut self.nodes {
            if matches!(n.life, Life::Restarting | Life::Starting) {
                n.down_steps = n.down_steps.saturating_sub(1);
                if n.down_steps == 0 {
                    if n.life == Life::Restarting {
                        n.outdated = false;
                    }
                    n.life = Life::Up;
                    for c in n.copies.values_mut() {
                        c.synced = false;
                    }
                }
            }
        }
        for i in 0..MAX_NODES {
            let ps: Vec<usize> = self.nodes[i].copies.keys().copied().collect();
            for p in ps {
                self.catch_up(i, p);
            }
        }
        self.now += advance_ms;
    }

    /// A client write to a node that believes it leads partition `p`; with QUORUM it is
    /// acknowledged once a majority of `replicationFactor` copies hold it.
    fn write(&mut self, p: usize, pick: usize, quorum: bool, acks: u8) {
        let leaders: Vec<usize> = (0..MAX_NODES)
            .filter(|&i| {
                self.is_up(i)
                    && self.nodes[i]
                        .copies
                        .get(&p)
                        .is_some_and(|c| c.role == SimRole::Primary)
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[pick % leaders.len()];
        let id = self.next_write;
        self.next_write += 1;
        let c = self.copy_mut(i, p);
        let (epoch, copies) = (c.epoch, c.copies);
        c.log.push((epoch, id));
        let log = c.log.clone();
        if !quorum {
            return;
        }
        let mut held = 1;
        for j in 0..MAX_NODES {
            let ok = j != i
                && self.streaming(j, p)
                && !self.nodes[j].slow
                && self.nodes[j].copies[&p].role == SimRole::Replica(name(i))
                && acks & (1 << j) != 0;
            if ok {
                self.copy_mut(j, p).log = log.clone();
                held += 1;
            }
        }
        if held > copies / 2 {
            self.acked.insert((p, id));
        }
    }

    fn event(&mut self, e: &Event) {
        match *e {
            Event::Write {
                p,
                pick,
                quorum,
                acks,
            } => self.write(p % self.desired.partitions, pick, quorum, acks),
            Event::Kill(i) if i < self.sts && self.nodes[i].life != Life::Restarting => {
                self.nodes[i].life = Life::Killed;
            }
            Event::Freeze(i) if i < self.sts && self.nodes[i].life == Life::Up => {
                self.nodes[i].life = Life::Frozen;
            }
            Event::Revive(i) if matches!(self.nodes[i].life, Life::Killed | Life::Frozen) => {
                let n = &mut self.nodes[i];
                if n.life == Life::Killed {
                    for c in n.copies.values_mut() {
                        c.synced = false;
                    }
                }
                n.life = Life::Up;
            }
            Event::Slow(i) => self.nodes[i].slow = !self.nodes[i].slow,
            // Validation refuses fewer nodes than replicationFactor: such a spec never
            // reaches the planner.
            Event::Scale(n) => self.desired.nodes = n.max(self.desired.replication_factor),
            Event::Template => {
                for i in 0..self.sts {
                    if self.has_pod(i) {
                        self.nodes[i].outdated = true;
                    }
                }
            }
            Event::Switchover(p, i) => {
                self.desired.switchover = Some((p % (self.desired.partitions + 1), name(i)));
            }
            Event::LoseStatus => self.lose_status = true,
            // Raised under requireQuorum, a failover would count a majority of the new factor
            // while a primary promoted before still acknowledges with the old one (see the
            // notes at the top): only lowered there.
            Event::ReplicationFactor(k)
                if !self.desired.require_quorum || k < self.desired.replication_factor =>
            {
                self.desired.replication_factor = k.min(self.desired.nodes);
            }
            _ => {}
        }
    }

    /// One reconcile: observe, plan, check (planning twice too, with `determinism`), record,
    /// act (all of it, or only the first `crash` calls: the operator died), then time passes.
    fn step(&mut self, crash: Option<usize>, advance_ms: u64, determinism: bool) -> Plan {
        self.step_stalled(crash, false, advance_ms, determinism)
    }

    /// [`Sim::step`], with promotions timing out on their catch-up when `stalled`.
    fn step_stalled(
        &mut self,
        crash: Option<usize>,
        stalled: bool,
        advance_ms: u64,
        determinism: bool,
    ) -> Plan {
        // Only while every pod answers and every partition's primary leads: the map rebuilt
        // from the reports is then complete. With a node away too, the epochs it holds are
        // known to no one and a new one may repeat them; with a promotion half done, the map
        // has no primary (see the notes at the top).
        if std::mem::take(&mut self.lose_status) && self.settled_now() {
            self.current = Current::default();
            self.health = vec![None; MAX_NODES];
        }
        let observed = self.observe();
        let plan = plan(&self.desired, &observed, &self.current, self.now);
        self.check(&observed, &plan, determinism);
        self.trace.push(format!(
            "t={} nodes={} sts={} observed:\n{}\n  map: {}\n  actions: {:?}{}",
            self.now,
            self.desired.nodes,
            self.sts,
            observed.iter().map(describe).collect::<Vec<_>>().join("\n"),
            plan.map
                .iter()
                .enumerate()
                .map(|(p, e)| format!(
                    "p{p}: {:?} {:?} e{} moving {:?} {}",
                    e.copies.primary,
                    e.copies.replicas,
                    e.copies.epoch,
                    e.moving.as_ref().map(|m| (&m.from, &m.to)),
                    e.message.as_deref().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join("; "),
            plan.actions,
            crash.map_or(String::new(), |k| format!(" (crash after {k})")),
        ));
        self.current = Current {
            map: plan.map.clone(),
            version: plan.version,
        };
        if matches!(
            plan.switchover,
            Some(SwitchoverState::Done | SwitchoverState::Refused(_))
        ) {
            self.desired.switchover = None;
        }
        self.resize(plan.statefulset_replicas);
        let n = crash.map_or(plan.actions.len(), |k| k.min(plan.actions.len()));
        self.stalled = stalled;
        for a in &plan.actions[..n] {
            let _ = self.apply(a, plan.version);
        }
        self.stalled = false;
        self.tick(advance_ms);
        plan
    }

    /// The checks on one plan, against what it was computed from.
    fn check(&mut self, observed: &[Node], plan: &Plan, determinism: bool) {
        let d = &self.desired;
        if determinism && super::plan(d, observed, &self.current, self.now) != *plan {
            self.violations
                .push("two plans from the same inputs differ".into());
        }
        // Copies: each node once per partition.
        for (p, e) in plan.map.iter().enumerate() {
            let all: Vec<&String> = e.copies.nodes().collect();
            let set: BTreeSet<&String> = all.iter().copied().collect();
            if set.len() != all.len() {
                self.violations
                    .push(format!("partition {p} has two copies on one node: {e:?}"));
            }
        }
        // Moves bounded.
        let moving = plan.map.iter().filter(|e| e.moving.is_some()).count();
        if moving > d.max_concurrent_moves {
            self.violations.push(format!(
                "{moving} moves in flight, more than {}",
                d.max_concurrent_moves
            ));
        }
        // The StatefulSet keeps every pod the map uses.
        let highest = plan
            .map
            .iter()
            .flat_map(|e| e.copies.nodes().filter_map(|n| ordinal(n)))
            .max();
        if plan.statefulset_replicas < d.nodes
            || highest.is_some_and(|h| plan.statefulset_replicas <= h)
        {
            self.violations.push(format!(
                "statefulset_replicas {} for nodes {} and copies up to {highest:?}",
                plan.statefulset_replicas, d.nodes
            ));
        }
        // A failover promotes the reachable in-sync replica with the highest position.
        let by_name: BTreeMap<&str, &Node> =
            observed.iter().map(|n| (n.name.as_str(), n)).collect();
        let last = |n: &str, p: usize| {
            by_name
                .get(n)
                .filter(|x| x.reachable)
                .and_then(|x| x.copies.get(&p))
                .map(|r| r.last)
        };
        for a in &plan.actions {
            let Action::Promote {
                partition: p,
                node,
                reason: Reason::Failover,
                ..
            } = a
            else {
                continue;
            };
            let Some(mine) = last(node, *p) else {
                self.violations
                    .push(format!("failover of {p} to {node}, which does not answer"));
                continue;
            };
            let lost = plan
                .takeovers
                .iter()
                .find(|t| t.partition == *p)
                .and_then(|t| t.from.clone());
            let prior = self
                .current
                .map
                .get(*p)
                .filter(|_| self.current.map.len() == d.partitions);
            let trusted = |n: &String| match prior {
                Some(e) => e.in_sync.contains(n),
                None => true,
            };
            for other in plan.map[*p].copies.nodes() {
                if other == node || Some(other) == lost.as_ref() || !trusted(other) {
                    continue;
                }
                if let Some(theirs) = last(other, *p)
                    && theirs > mine
                {
                    self.violations.push(format!(
                        "failover of {p} to {node} at {mine:?} while {other} in sync holds {theirs:?}"
                    ));
                }
            }
        }
        // The operator dying right after recording, before any node call, and reconciling
        // again: a change of primary this plan recorded is carried out, not replaced by
        // another (no second epoch, no second choice from the same observations).
        if plan.takeovers.is_empty() {
            return;
        }
        let recorded = Current {
            map: plan.map.clone(),
            version: plan.version,
        };
        let replan = super::plan(d, observed, &recorded, self.now);
        for t in &plan.takeovers {
            let (e, again) = (&plan.map[t.partition], &replan.map[t.partition]);
            if again.copies.primary != e.copies.primary || again.copies.epoch != e.copies.epoch {
                self.violations.push(format!(
                    "partition {}: planning again on the recorded map changes its primary \
                     again: {:?} -> {:?}",
                    t.partition, e.copies, again.copies
                ));
            }
        }
    }

    /// Every QUORUM-acknowledged write is on the primary of its partition, once it leads.
    fn check_acked(&mut self) {
        if !self.desired.require_quorum {
            return;
        }
        for (p, e) in self.current.map.iter().enumerate() {
            let Some(i) = e.copies.primary.as_deref().and_then(ordinal) else {
                continue;
            };
            // Only once it has taken over: until then the old primary still holds them.
            let Some(c) = self.nodes[i]
                .copies
                .get(&p)
                .filter(|c| c.role == SimRole::Primary && c.epoch == e.copies.epoch)
            else {
                continue;
            };
            let log: BTreeSet<u64> = c.log.iter().map(|x| x.1).collect();
            let lost: Vec<u64> = self
                .acked
                .iter()
                .filter(|(q, w)| *q == p && !log.contains(w))
                .map(|x| x.1)
                .collect();
            if !lost.is_empty() {
                self.violations.push(format!(
                    "partition {p}: its primary {} lacks the QUORUM-acknowledged writes {lost:?}",
                    name(i)
                ));
            }
        }
    }

    /// Runs quiet reconciles (no event, time passing) until `quiet` in a row do nothing (a pod
    /// restarting makes one plan without calls before the next step); the last plan, or `None`
    /// past `limit`.
    fn settle(&mut self, quiet: usize, limit: usize) -> Option<Plan> {
        let mut in_a_row = 0;
        for _ in 0..limit {
            let plan = self.step(None, WINDOW + 1, false);
            in_a_row = if plan.is_quiet() { in_a_row + 1 } else { 0 };
            if in_a_row == quiet {
                return Some(plan);
            }
        }
        None
    }
}

#[derive(Clone, Debug)]
enum Event {
    Write {
        p: usize,
        pick: usize,
        quorum: bool,
        acks: u8,
    },
    Kill(usize),
    Freeze(usize),
    Revive(usize),
    Slow(usize),
    Scale(usize),
    Template,
    Switchover(usize, usize),
    LoseStatus,
    /// `replicationFactor` changes (at most `nodes`, as validation demands).
    ReplicationFactor(usize),
}

#[derive(Clone, Debug)]
struct Step {
    events: Vec<Event>,
    /// The operator dies after this many node calls of the step's plan.
    crash: Option<usize>,
    /// Promotions time out waiting for a catch-up.
    stalled: bool,
    advance_ms: u64,
}

#[derive(Clone, Debug)]
struct Scenario {
    desired: Desired,
    steps: Vec<Step>,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0..8usize, 0..4usize, any::<bool>(), any::<u8>())
            .prop_map(|(p, pick, quorum, acks)| Event::Write { p, pick, quorum, acks }),
        1 => (0..MAX_NODES).prop_map(Event::Kill),
        1 => (0..MAX_NODES).prop_map(Event::Freeze),
        3 => (0..MAX_NODES).prop_map(Event::Revive),
        1 => (0..MAX_NODES).prop_map(Event::Slow),
        1 => (1..=MAX_NODES).prop_map(Event::Scale),
        1 => Just(Event::Template),
        1 => (0..8usize, 0..MAX_NODES).prop_map(|(p, n)| Event::Switchover(p, n)),
        1 => Just(Event::LoseStatus),
        1 => (1..=3usize).prop_map(Event::ReplicationFactor),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::collection::vec(event(), 0..4),
        prop_oneof![6 => Just(None), 1 => (0..4usize).prop_map(Some)],
        prop_oneof![6 => Just(false), 1 => Just(true)],
        prop_oneof![Just(300u64), Just(WINDOW + 200)],
    )
        .prop_map(|(events, crash, stalled, advance_ms)| Step {
            events,
            crash,
            stalled,
            advance_ms,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1..=4usize,
        1..=6usize,
        1..=3usize,
        prop_oneof![4 => Just(true), 1 => Just(false)],
        any::<bool>(),
        1..=3usize,
        prop_oneof![3 => Just(true), 1 => Just(false)],
        proptest::collection::vec(step(), 5..30),
    )
        .prop_map(
            |(nodes, partitions, rf, failover, require_quorum, moves, rebalance, steps)| {
                let mut d = desired(nodes.max(rf), partitions, rf);
                d.failover = failover;
                d.require_quorum = require_quorum;
                d.max_concurrent_moves = moves;
                d.rebalance = rebalance;
                Scenario { desired: d, steps }
            },
        )
}

/// Runs a scenario: the random steps, each followed by a check that quiet reconciles from
/// there converge, then the faults stop and the set must converge to a balanced map.
fn run(s: &Scenario) -> Result<(), String> {
    let mut sim = Sim::new(s.desired.clone());
    run_on(&mut sim, s).map_err(|e| format!("{e}\n{}", sim.trace.join("\n")))
}

fn describe(n: &Node) -> String {
    let copies: Vec<String> = n
        .copies
        .iter()
        .map(|(p, r)| {
            format!(
                "p{p}:{:?}@{} last{:?} f{:?} s{} r{:?}",
                r.role,
                r.epoch,
                r.last,
                r.following,
                r.streaming,
                r.replicas
                    .iter()
                    .map(|x| (&x.node, x.in_sync))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    format!(
        "    {} pod={} ready={} reach={} out={} down={:?} topo={} [{}]",
        n.name,
        n.pod,
        n.ready,
        n.reachable,
        n.outdated,
        n.down_since_ms,
        n.topology_version,
        copies.join(", ")
    )
}

fn run_on(sim: &mut Sim, s: &Scenario) -> Result<(), String> {
    for (k, st) in s.steps.iter().enumerate() {
        for e in &st.events {
            sim.trace.push(format!("event {e:?}"));
            sim.event(e);
        }
        sim.step_stalled(st.crash, st.stalled, st.advance_ms, true);
        sim.check_acked();
        if !sim.violations.is_empty() {
            return Err(format!("step {k}: {:?}", sim.violations));
        }
        // Idempotence: left alone from here, the reconciles converge to doing nothing.
        // Crashed and frozen nodes stay so; a slow replica is slow, not stuck: left alone, it
        // catches up (a switchover to one that never does waits for it with the old primary
        // fenced, by design).
        let mut quiet = sim.clone();
        for n in &mut quiet.nodes {
            n.slow = false;
        }
        let settled = quiet.settle(2, 60);
        if settled.is_none() || !quiet.violations.is_empty() {
            sim.trace = quiet.trace;
            return Err(format!(
                "step {k}, left alone: {:?}{}",
                quiet.violations,
                if settled.is_none() {
                    " and no quiet plan after 60 reconciles"
                } else {
                    ""
                }
            ));
        }
    }
    // The faults stop.
    for i in 0..MAX_NODES {
        sim.nodes[i].slow = false;
        if matches!(sim.nodes[i].life, Life::Killed | Life::Frozen) {
            sim.nodes[i].life = Life::Up;
        }
    }
    sim.desired.switchover = None;
    sim.desired.rebalance = true;
    sim.trace.push("the faults stop".into());
    let Some(last) = sim.settle(3, 400) else {
        return Err("no convergence once the faults stopped".into());
    };
    sim.check_acked();
    if !sim.violations.is_empty() {
        return Err(format!("after the faults: {:?}", sim.violations));
    }
    balanced(&sim.desired, &last.map).map_err(|e| format!("{e}: {:#?}", last.map))?;
    if last.statefulset_replicas != sim.desired.nodes {
        return Err(format!(
            "statefulset_replicas {} for {} nodes",
            last.statefulset_replicas, sim.desired.nodes
        ));
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_planner_keeps_the_invariants_on_a_simulated_cluster(s in scenario()) {
        if let Err(e) = run(&s) {
            prop_assert!(false, "{}", e);
        }
    }
}

fn quiet_step() -> Step {
    Step {
        events: Vec::new(),
        crash: None,
        stalled: false,
        advance_ms: WINDOW + 200,
    }
}

fn step_with(events: Vec<Event>) -> Step {
    Step {
        events,
        crash: None,
        stalled: false,
        advance_ms: WINDOW + 200,
    }
}

#[test]
fn an_old_primary_back_after_a_failover_cannot_gather_a_quorum() {
    let mut d = desired(3, 1, 3);
    d.require_quorum = true;
    let write = |pick| Event::Write {
        p: 0,
        pick,
        quorum: true,
        acks: 0xff,
    };
    let s = Scenario {
        desired: d,
        steps: vec![
            quiet_step(),
            step_with(vec![write(0)]),
            step_with(vec![Event::Freeze(0)]),
            quiet_step(),
            // db-0 wakes up before the operator repoints the replicas and takes a write.
            step_with(vec![Event::Revive(0), write(0), write(1)]),
            quiet_step(),
        ],
    };
    if let Err(e) = run(&s) {
        panic!("{e}");
    }
}
