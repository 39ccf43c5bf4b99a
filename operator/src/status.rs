//! The status a set should show, computed purely from what the reconcile saw and did, and the
//! Events worth recording for the change from the previous status.
//!
//! Conditions follow the Kubernetes API conventions: `Ready` summarizes; `Progressing`,
//! `Degraded`, `FailingOver` and `Rebalancing` are true while that is going on. Every condition
//! carries the generation it was computed from, and keeps its `lastTransitionTime` until its
//! status actually flips, so an unchanged set computes an identical status and the controller
//! writes nothing.

use crate::validate::Problem;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;
use partita_api::{ConditionType, Phase, ReplicatedPartitionSetStatus};

/// What the reconcile saw and did, as input to [`compute`].
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The set's `metadata.generation`.
    pub generation: Option<i64>,
    /// Node pods wanted (`spec.nodes`).
    pub nodes: i32,
    /// `spec.paused`.
    pub paused: bool,
    /// Why the spec cannot be acted on, if it cannot.
    pub problems: Vec<Problem>,
    /// Node pods that exist (ordinals below `nodes`), ready or not.
    pub pods: i32,
    /// Of those, the ready ones.
    pub ready: i32,
    /// Names of wanted pods that are missing or not ready, for messages.
    pub not_ready: Vec<String>,
    /// Names of pods that run an older revision of the pod template than the StatefulSet's
    /// current one: with `updateStrategy: OnDelete` they change only when restarted.
    pub outdated: Vec<String>,
    /// The StatefulSet controller has not caught up with the StatefulSet's latest spec yet.
    pub statefulset_behind: bool,
    /// What was applied this reconcile.
    pub applied: Applied,
    /// The partition map and what the planner made of it; `None` when nothing was planned
    /// (an invalid or paused spec), which keeps the recorded map as it was.
    pub partitions: Option<Partitions>,
}

/// The partition side of the status, from the planner.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partitions {
    /// The map, as it is to be recorded.
    pub entries: Vec<partita_api::PartitionStatus>,
    /// Its version.
    pub map_version: i64,
    /// Partitions whose primary is lost and not yet replaced.
    pub failing_over: Vec<usize>,
    /// Moves are still to be made (the planner's `unbalanced`), even if none is in flight now.
    pub unbalanced: bool,
    /// Partitions that are not quiet (no primary answering at the map's epoch, or a replica not
    /// in sync), with why when known.
    pub unhealthy: Vec<(usize, String)>,
    /// Pods still to restart for a template change.
    pub rolling: Vec<String>,
    /// The most recent change of primary, if this reconcile made one.
    pub last_failover: Option<partita_api::FailoverRecord>,
    /// A requested switchover's outcome.
    pub switchover: Option<partita_api::SwitchoverStatus>,
    /// The rebalance request acted on.
    pub rebalance_handled: Option<String>,
}

impl Partitions {
    /// Whether no move is in flight.
    pub fn moves_done(&self) -> bool {
        self.moving() == 0
    }

    fn moving(&self) -> usize {
        self.entries.iter().filter(|e| e.moving.is_some()).count()
    }

    fn quiet(&self) -> bool {
        !self.entries.is_empty()
            && self.unhealthy.is_empty()
            && self.moving() == 0
            && !self.unbalanced
    }
}

/// What the reconcile created or changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects created, by kind.
    pub created: Vec<&'static str>,
    /// Objects changed, by kind.
    pub updated: Vec<&'static str>,
    /// The StatefulSet's replicas went from the first to the second.
    pub scaled: Option<(i32, i32)>,
    /// Objects that exist under an owned object's name but belong to something else, as
    /// `Kind name`; nothing was applied.
    pub foreign: Vec<String>,
}

impl Applied {
    /// Whether anything was written.
    pub fn any(&self) -> bool {
        !self.created.is_empty() || !self.updated.is_empty()
    }
}

/// The status for `observed`, given the `previous` one, at time `now`.
pub fn compute(
    previous: Option<&ReplicatedPartitionSetStatus>,
    observed: &Observed,
    now: &Time,
) -> ReplicatedPartitionSetStatus {
    let before = previous.and_then(|s| s.phase);
    let all_ready = observed.ready >= observed.nodes && observed.pods >= observed.nodes;
    let current = observed.outdated.is_empty() && !observed.statefulset_behind;
    let parts = observed.partitions.as_ref();
    let placed = parts.is_none_or(Partitions::quiet);
    let all_ready = all_ready && placed;
    let phase = if !observed.problems.is_empty() {
        Phase::Invalid
    } else if observed.paused {
        Phase::Paused
    } else if all_ready && !observed.applied.any() && current {
        Phase::Ready
    } else if matches!(
        before,
        None | Some(Phase::Pending) | Some(Phase::Provisioning)
    ) {
        Phase::Provisioning
    } else if observed.applied.any()
        || observed.pods != observed.nodes
        || !current
        || parts.is_some_and(|p| (p.moving() > 0 || p.unbalanced) && p.failing_over.is_empty())
    {
        Phase::Updating
    } else {
        Phase::Degraded
    };

    let mut ready_msg = format!("{} of {} nodes ready", observed.ready, observed.nodes);
    if let Some(parts) = parts {
        ready_msg = format!("{ready_msg}; {}", partitions_summary(parts));
    }
    let waiting = if observed.not_ready.is_empty() {
        ready_msg.clone()
    } else {
        format!("{ready_msg}; waiting for {}", list(&observed.not_ready))
    };
    let (ready, progressing, degraded) = match phase {
        Phase::Invalid => {
            let (reason, message) = invalid_reason(&observed.problems);
            (
                (false, reason, message.clone()),
                (
                    false,
                    "InvalidSpec",
                    "the spec cannot be acted on; see the Ready condition".into(),
                ),
                (
                    false,
                    "InvalidSpec",
                    "the running objects are left as they were".into(),
                ),
            )
        }
        Phase::Paused => (
            (
                all_ready,
                "Paused",
                format!("spec.paused is set; {ready_msg}"),
            ),
            (
                false,
                "Paused",
                "spec.paused is set: the operator only writes status".into(),
            ),
            (
                !all_ready,
                if all_ready {
                    "AsExpected"
                } else {
                    "NodesNotReady"
                },
                waiting.clone(),
            ),
        ),
        Phase::Ready => (
            (true, "AllNodesReady", ready_msg.clone()),
            (false, "Stable", "nothing to do".into()),
            (false, "AsExpected", ready_msg.clone()),
        ),
        Phase::Provisioning => (
            (false, "Provisioning", waiting.clone()),
            (true, "Provisioning", waiting.clone()),
            (false, "Provisioning", "not serving yet".into()),
        ),
        Phase::Updating => (
            (all_ready, "Updating", waiting.clone()),
            (
                true,
                "Updating",
                changes(&observed.applied)
                    .or_else(|| outdated(observed))
                    .unwrap_or(waiting.clone()),
            ),
            (
                !all_ready,
                if all_ready {
                    "AsExpected"
                } else {
                    "NodesNotReady"
                },
                waiting.clone(),
            ),
        ),
        Phase::Degraded | Phase::Pending => (
            (false, "NodesNotReady", waiting.clone()),
            (
                false,
                "Stable",
                "nothing to do but wait for the nodes".into(),
            ),
            (true, "NodesNotReady", waiting.clone()),
        ),
    };
    let values = [
        (ConditionType::Ready, ready),
        (ConditionType::Progressing, progressing),
        (ConditionType::Degraded, degraded),
        (ConditionType::FailingOver, failing_over(parts)),
        (ConditionType::Rebalancing, rebalancing(parts)),
    ];
    let old = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = values
        .into_iter()
        .map(|(kind, (status, reason, message))| {
            condition(old, kind, status, reason, message, observed.generation, now)
        })
        .collect();

    ReplicatedPartitionSetStatus {
        phase: Some(phase),
        observed_generation: observed.generation,
        ready_nodes: observed.ready,
        conditions,
        partitions: match parts {
            Some(p) => p.entries.clone(),
            None => previous.map(|s| s.partitions.clone()).unwrap_or_default(),
        },
        last_failover: parts
            .and_then(|p| p.last_failover.clone())
            .or_else(|| previous.and_then(|s| s.last_failover.clone())),
        map_version: match parts {
            Some(p) => p.map_version,
            None => previous.map(|s| s.map_version).unwrap_or_default(),
        },
        rebalance_handled: parts
            .and_then(|p| p.rebalance_handled.clone())
            .or_else(|| previous.and_then(|s| s.rebalance_handled.clone())),
        switchover: parts
            .and_then(|p| p.switchover.clone())
            .or_else(|| previous.and_then(|s| s.switchover.clone())),
    }
}

/// "8 partitions, all with a primary and in-sync replicas", or what is wrong.
fn partitions_summary(parts: &Partitions) -> String {
    let n = parts.entries.len();
    if n == 0 {
        return parts
            .unhealthy
            .first()
            .map_or("no partition placed yet".into(), |(_, why)| {
                format!("no partition placed yet: {why}")
            });
    }
    if parts.unhealthy.is_empty() {
        return format!("{n} partitions, each with a primary and in-sync replicas");
    }
    let first: Vec<String> = parts
        .unhealthy
        .iter()
        .take(3)
        .map(|(p, why)| format!("partition {p}: {why}"))
        .collect();
    format!(
        "{} of {n} partitions not in sync ({}{})",
        parts.unhealthy.len(),
        first.join("; "),
        if parts.unhealthy.len() > 3 {
            "; …"
        } else {
            ""
        }
    )
}

fn failing_over(parts: Option<&Partitions>) -> (bool, &'static str, String) {
    match parts {
        Some(p) if !p.failing_over.is_empty() => {
            let whys: Vec<String> = p
                .failing_over
                .iter()
                .take(5)
                .map(|id| {
                    let why = p
                        .unhealthy
                        .iter()
                        .find(|(q, _)| q == id)
                        .map_or("primary lost", |(_, w)| w.as_str());
                    format!("partition {id}: {why}")
                })
                .collect();
            (true, "PrimaryLost", whys.join("; "))
        }
        _ => (false, "NoFailover", "no failover in progress".into()),
    }
}

fn rebalancing(parts: Option<&Partitions>) -> (bool, &'static str, String) {
    let moving: Vec<String> = parts
        .map(|p| {
            p.entries
                .iter()
                .filter_map(|e| {
                    e.moving
                        .as_ref()
                        .map(|m| format!("partition {}: {} -> {}", e.id, m.from, m.to))
                })
                .collect()
        })
        .unwrap_or_default();
    if moving.is_empty() && parts.is_some_and(|p| p.unbalanced) {
        (
            true,
            "MovesPending",
            "partitions are still to move (between two batches of moves, or a copy catching up)"
                .into(),
        )
    } else if moving.is_empty() {
        (false, "Balanced", "no partition moves in progress".into())
    } else {
        (
            true,
            "MovingPartitions",
            format!("{} moves in progress: {}", moving.len(), moving.join(", ")),
        )
    }
}

/// What the Progressing condition says of pods on an older revision, if any.
fn outdated(observed: &Observed) -> Option<String> {
    if !observed.outdated.is_empty() {
        Some(format!(
            "{} of {} pods run an older revision of the pod template: {}; they take the change when restarted, one at a time",
            observed.outdated.len(),
            observed.nodes,
            list(&observed.outdated)
        ))
    } else if observed.statefulset_behind {
        Some("waiting for the StatefulSet controller to take the change".into())
    } else {
        None
    }
}

fn invalid_reason(problems: &[Problem]) -> (&'static str, String) {
    match problems {
        [one] => (one.reason, one.message.clone()),
        many => (
            "InvalidSpec",
            many.iter()
                .map(|p| format!("{}: {}", p.reason, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

fn changes(applied: &Applied) -> Option<String> {
    let mut parts = Vec::new();
    if !applied.created.is_empty() {
        parts.push(format!("created {}", applied.created.join(", ")));
    }
    if let Some((from, to)) = applied.scaled {
        parts.push(format!("scaling from {from} to {to} nodes"));
    }
    if !applied.updated.is_empty() {
        parts.push(format!("updated {}", applied.updated.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn condition(
    old: &[Condition],
    kind: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == kind.as_str() && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.as_str().to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// An Event to record on the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub warning: bool,
    /// CamelCase reason, shown by `kubectl describe`.
    pub reason: &'static str,
    /// CamelCase action.
    pub action: &'static str,
    /// The human-readable note.
    pub message: String,
}

impl Note {
    /// The Event type.
    pub fn event_type(&self) -> EventType {
        if self.warning {
            EventType::Warning
        } else {
            EventType::Normal
        }
    }
}

/// The longest Event note events.k8s.io accepts, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// `note` cut to [`MAX_NOTE_BYTES`] on a character boundary, ending in "..." when cut: the API
/// server refuses a longer note, and the Event would be lost.
pub fn truncate_note(mut note: String) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let mut end = MAX_NOTE_BYTES - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push_str("...");
    note
}

/// The Events that the change from `previous` to `next`, and what was `applied`, deserve.
/// Nothing when nothing changed, so an idle set records no Events.
pub fn notes(
    previous: Option<&ReplicatedPartitionSetStatus>,
    next: &ReplicatedPartitionSetStatus,
    applied: &Applied,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let note = |warning, reason, action, message: String| Note {
        warning,
        reason,
        action,
        message,
    };
    if !applied.created.is_empty() {
        notes.push(note(
            false,
            "Created",
            "Create",
            format!("created {}", applied.created.join(", ")),
        ));
    }
    if let Some((from, to)) = applied.scaled {
        notes.push(note(
            false,
            "Scaled",
            "Scale",
            format!("scaling from {from} to {to} nodes"),
        ));
    }
    let updated: Vec<_> = applied
        .updated
        .iter()
        .filter(|k| !(applied.scaled.is_some() && **k == "StatefulSet"))
        .copied()
        .collect();
    if !updated.is_empty() {
        notes.push(note(
            false,
            "Updated",
            "Update",
            format!("updated {}", updated.join(", ")),
        ));
    }
    let ready_of = |s: &ReplicatedPartitionSetStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = previous.and_then(|s| s.phase);
    match next.phase {
        Some(Phase::Invalid)
            if (before != Some(Phase::Invalid)
                || previous.and_then(ready_of) != ready_of(next)) =>
        {
            let message = ready_of(next).map(|(_, m)| m).unwrap_or_default();
            notes.push(note(true, "InvalidSpec", "Validate", message));
        }
        Some(Phase::Paused) if before != Some(Phase::Paused) => {
            notes.push(note(
                false,
                "Paused",
                "Pause",
                "spec.paused is set: no actions until it is cleared".into(),
            ));
        }
        Some(phase) if before == Some(Phase::Paused) && phase != Phase::Paused => {
            notes.push(note(
                false,
                "Resumed",
                "Resume",
                "spec.paused was cleared".into(),
            ));
        }
        _ => {}
    }
    if before == Some(Phase::Invalid) && next.phase != Some(Phase::Invalid) {
        notes.push(note(
            false,
            "SpecValid",
            "Validate",
            "the spec is valid again".into(),
        ));
    }
    if next.phase == Some(Phase::Ready) && before != Some(Phase::Ready) {
        notes.push(note(
            false,
            "Ready",
            "Reconcile",
            format!("all {} nodes ready", next.ready_nodes),
        ));
    }
    if next.phase == Some(Phase::Degraded) && before != Some(Phase::Degraded) {
        let message = ready_of(next).map(|(_, m)| m).unwrap_or_default();
        notes.push(note(true, "Degraded", "Reconcile", message));
    }
    notes
}

/// The two statuses agree in everything but the times conditions last changed.
pub fn same(a: &ReplicatedPartitionSetStatus, b: &ReplicatedPartitionSetStatus) -> bool {
    let strip = |s: &ReplicatedPartitionSetStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }
    fn observed(nodes: i32, ready: i32) -> Observed {
        Observed {
            generation: Some(1),
            nodes,
            pods: nodes,
            ready,
            ..Observed::default()
        }
    }
    fn cond<'a>(s: &'a ReplicatedPartitionSetStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn a_new_set_provisions_then_becomes_ready_and_stays_identical() {
        let mut o = observed(3, 0);
        o.applied.created = vec!["StatefulSet"];
        let first = compute(None, &o, &t(10));
        assert_eq!(first.phase, Some(Phase::Provisioning));
        assert_eq!(cond(&first, "Progressing").status, "True");
        assert_eq!(cond(&first, "Ready").status, "False");

        let ready = compute(Some(&first), &observed(3, 3), &t(20));
        assert_eq!(ready.phase, Some(Phase::Ready));
        assert_eq!(cond(&ready, "Ready").last_transition_time, t(20));
        assert_eq!(
            cond(&ready, "FailingOver").last_transition_time,
            t(10),
            "unchanged status keeps its time"
        );

        let again = compute(Some(&ready), &observed(3, 3), &t(30));
        assert_eq!(again, ready);
        assert!(notes(Some(&ready), &again, &Applied::default()).is_empty());
    }

    #[test]
    fn a_set_between_two_batches_of_moves_is_updating_not_ready() {
        let ready = compute(None, &observed(5, 5), &t(1));
        let mut between = observed(5, 5);
        between.partitions = Some(Partitions {
            entries: vec![partita_api::PartitionStatus {
                id: 0,
                primary: Some("s-0".into()),
                epoch: 1,
                ..Default::default()
            }],
            unbalanced: true,
            ..Partitions::default()
        });
        let s = compute(Some(&ready), &between, &t(2));
        assert_eq!(
            s.phase,
            Some(Phase::Updating),
            "no move in flight, but moves to make"
        );
        assert_eq!(cond(&s, "Rebalancing").status, "True");
        assert_eq!(cond(&s, "Rebalancing").reason, "MovesPending");

        if let Some(p) = between.partitions.as_mut() {
            p.unbalanced = false;
        }
        let done = compute(Some(&s), &between, &t(3));
        assert_eq!(done.phase, Some(Phase::Ready));
        assert_eq!(cond(&done, "Rebalancing").status, "False");
    }

    #[test]
    fn losing_a_ready_node_degrades_and_invalid_specs_say_why() {
        let ready = compute(None, &observed(3, 3), &t(1));
        let mut lost = observed(3, 2);
        lost.not_ready = vec!["s-1".into()];
        let degraded = compute(Some(&ready), &lost, &t(2));
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        assert_eq!(
            cond(&degraded, "Degraded").message,
            "2 of 3 nodes ready; waiting for s-1"
        );
        let kinds: Vec<_> = notes(Some(&ready), &degraded, &Applied::default())
            .iter()
            .map(|n| n.reason)
            .collect();
        assert_eq!(kinds, ["Degraded"]);

        let mut bad = observed(3, 3);
        bad.problems = vec![Problem {
            reason: "StorageShrunk",
            message: "set it back".into(),
        }];
        let invalid = compute(Some(&ready), &bad, &t(3));
        assert_eq!(invalid.phase, Some(Phase::Invalid));
        let r = cond(&invalid, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", "StorageShrunk", "set it back")
        );
        let n = notes(Some(&ready), &invalid, &Applied::default());
        assert!(n[0].warning && n[0].reason == "InvalidSpec", "{n:?}");
    }

    #[test]
    fn event_notes_are_cut_to_what_the_api_server_accepts() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(MAX_NOTE_BYTES);
        let cut = truncate_note(long);
        assert!(
            cut.len() <= MAX_NOTE_BYTES && cut.ends_with("..."),
            "{}",
            cut.len()
        );
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn pods_on_an_older_revision_keep_the_set_updating_not_ready() {
        let ready = compute(None, &observed(3, 3), &t(10));
        let mut o = observed(3, 3);
        o.outdated = vec!["orders-0".into(), "orders-2".into()];
        let updating = compute(Some(&ready), &o, &t(20));
        assert_eq!(updating.phase, Some(Phase::Updating));
        let progressing = cond(&updating, "Progressing");
        assert_eq!(progressing.status, "True");
        assert!(
            progressing
                .message
                .contains("2 of 3 pods run an older revision")
                && progressing.message.contains("orders-0, orders-2"),
            "{}",
            progressing.message
        );
        let mut behind = observed(3, 3);
        behind.statefulset_behind = true;
        let waiting = compute(Some(&ready), &behind, &t(30));
        assert_eq!(waiting.phase, Some(Phase::Updating));
        assert!(
            cond(&waiting, "Progressing")
                .message
                .contains("StatefulSet controller")
        );
        let back = compute(Some(&waiting), &observed(3, 3), &t(40));
        assert_eq!(back.phase, Some(Phase::Ready));
    }
}
