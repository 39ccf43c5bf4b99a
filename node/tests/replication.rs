//! Replication between real `partita-node` processes on loopback (DESIGN.md, invariants 1–4):
//! three nodes, roles given through the Admin service, replicas killed with SIGKILL, paused with
//! SIGSTOP and restarted from their data directories.
//!
//! - basic: replicas converge to the primary's offsets and digest; replicas refuse writes
//!   (READONLY naming the primary) and serve reads; WAIT and WRITECONCERN ALL count replicas.
//! - partial resync: a replica back from SIGKILL (or SIGSTOP) resumes from its own log.
//! - full resync: a replica whose offset fell out of the primary's log gets a snapshot.
//! - snapshot under load: a new replica attaches through a snapshot while writes go on.
//! - failover and rejoin: the best replica is promoted, the other follows it without a full
//!   sync, and the old primary comes back, truncates its divergent tail and refuses writes.
//! - no acknowledged loss: randomized SIGKILL of the primary under QUORUM writes; every
//!   acknowledged key survives the promotion of the best replica.
//! - slow replica: a stopped replica holds at most the send buffer of the primary's memory and
//!   is cut off, then comes back through a full sync.
//!
//! Every wait polls a condition with a deadline; every load is bounded in count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::Reply;
use common::cluster::{
    Admin, Member, Rng, SETTLE, all, assert_same_data, error_info, form, ids, load, positions,
    value_of, wait_caught_up, wait_in_sync,
};
use partita_node::proto::kv_client::KvClient;
use partita_node::proto::replication_client::ReplicationClient;
use partita_node::proto::{
    ErrorCode, GetRequest, Hello, LinkState, NodeStatus, PartitionStatus, Position, PutRequest,
    ReplicaLink, ReplicaMessage, ReplicaProgress, Role, SyncKind, WriteConcern, WriteOptions,
    replica_message,
};
use partita_node::slot::SlotMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn link(p: &PartitionStatus) -> ReplicaLink {
    p.link.clone().unwrap_or_default()
}

fn sync_kind(v: i32) -> SyncKind {
    SyncKind::try_from(v).unwrap_or(SyncKind::Unspecified)
}

fn replica<'a>(p: &'a PartitionStatus, id: &str) -> Option<&'a ReplicaProgress> {
    p.replicas.iter().find(|r| r.node_id == id)
}

/// Polls `f` every 20 ms until it returns true; panics with `what` after `deadline`.
fn wait_for(deadline: Duration, what: &str, f: impl FnMut() -> bool) {
    common::wait_until(deadline, what, f);
}

/// Waits until every partition of `m` is a streaming replica whose link last synced with a
/// kind in `kinds`.
fn wait_synced(m: &Member, kinds: &[SyncKind]) -> NodeStatus {
    let mut admin = m.admin();
    let mut st = admin.status();
    wait_for(SETTLE, &format!("{} to stream", m.id), || {
        st = admin.status();
        st.partitions.iter().all(|p| {
            let l = link(p);
            l.state == LinkState::Streaming as i32 && kinds.contains(&sync_kind(l.last_sync))
        })
    });
    st
}

#[test]
fn basic_replicas_converge_refuse_writes_and_count_for_wait() {
    let root = tempfile::tempdir().unwrap();
    let flags = ["--partitions", "4", "--fsync", "never"];
    let n1 = Member::start(root.path(), "n1", &flags);
    let n2 = Member::start(root.path(), "n2", &flags);
    let n3 = Member::start(root.path(), "n3", &flags);
    form(&n1, &[&n2, &n3], 1);

    load(n1.node().resp, "basic", 20_000, 5_000, 32);
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);
    let keys = assert_same_data(&[&n1, &n2, &n3]);
    assert_eq!(keys, 5_000);
    let st = n1.status();
    assert!(
        positions(&st).iter().all(|&(e, o)| e == 1 && o > 0),
        "every partition written at epoch 1: {:?}",
        positions(&st)
    );

    // A replica refuses writes, naming the primary, and serves reads.
    let mut c2 = n2.client();
    match c2.cmd(&["SET", "basic:1", "x"]) {
        Reply::Error(e) => {
            assert!(e.starts_with("READONLY"), "{e}");
            assert!(
                e.contains("n1") && e.contains(&n1.node().grpc.to_string()),
                "{e}"
            );
        }
        other => panic!("a write to a replica answered {other:?}"),
    }
    // The last SET of key basic:1 was the one at i = 15001.
    assert_eq!(c2.cmd(&["GET", "basic:1"]).text(), value_of(15_001, 32));
    let info = c2.cmd(&["INFO", "replication"]).text();
    assert_eq!(
        info.matches(":role=replica,epoch=1,").count(),
        4,
        "one replica line per partition: {info}"
    );

    // WAIT counts the replicas that hold this connection's writes.
    let mut c1 = n1.client();
    assert_eq!(
        c1.cmd(&["SET", "basic:wait", "1"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c1.cmd(&["WAIT", "2", "5000"]), Reply::Int(2));
    // WRITECONCERN ALL: the write is on every in-sync copy when it is acknowledged.
    assert_eq!(
        c1.cmd(&["WRITECONCERN", "ALL", "TIMEOUT", "5000"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c1.cmd(&["SET", "basic:all", "1"]),
        Reply::Simple("OK".into())
    );
    let mut c3 = n3.client();
    assert_eq!(c3.cmd(&["GET", "basic:all"]).text(), "1");
}

#[test]
fn a_replica_back_from_sigkill_or_sigstop_resumes_with_a_partial_sync() {
    let root = tempfile::tempdir().unwrap();
    let flags = ["--partitions", "4", "--fsync", "everysec"];
    let n1 = Member::start(root.path(), "n1", &flags);
    let n2 = Member::start(root.path(), "n2", &flags);
    let mut n3 = Member::start(root.path(), "n3", &flags);
    form(&n1, &[&n2, &n3], 1);
    load(n1.node().resp, "a", 4_000, 4_000, 32);
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);

    n3.kill();
    // Far less than the 64 MiB default backlog.
    load(n1.node().resp, "b", 3_000, 3_000, 32);
    // Its role file keeps it a replica of n1 at epoch 1: it reconnects by itself.
    n3.restart();
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);
    let st = wait_synced(&n3, &[SyncKind::Partial]);
    for p in &st.partitions {
        let l = link(p);
        assert_eq!(p.role, Role::Replica as i32, "p{} role", p.partition);
        assert_eq!(
            (l.full_syncs, l.partial_syncs >= 1),
            (0, true),
            "p{}: (full syncs, any partial sync)",
            p.partition
        );
    }
    assert_eq!(assert_same_data(&[&n1, &n2, &n3]), 7_000);
    let full = common::metric(&n1.metrics(), "partita_replica_syncs_total{kind=\"full\"}");
    assert_eq!(full, 0.0, "the primary sent no snapshot");

    // Cut off without a restart: SIGSTOP n2 while writes go on, until the primary sees it lag.
    n2.pause();
    let mut admin = n1.admin();
    let mut c1 = n1.client();
    let mut i = 0u64;
    wait_for(SETTLE, "n2 to lag behind while stopped", || {
        for _ in 0..50 {
            assert_eq!(
                c1.cmd(&["SET", &format!("c:{i}"), "v"]),
                Reply::Simple("OK".into())
            );
            i += 1;
        }
        admin.status().partitions.iter().all(|p| {
            let end = p.last.unwrap_or_default().offset;
            replica(p, "n2").is_some_and(|r| r.acked_offset < end)
        })
    });
    n2.resume();
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);
    for p in &n2.status().partitions {
        assert_eq!(link(p).full_syncs, 0, "p{}: n2 full syncs", p.partition);
    }
    assert_eq!(assert_same_data(&[&n1, &n2, &n3]), 7_000 + i);
}

/// Small logs: 4 KiB segments, a 16 KiB backlog and a snapshot every 32 KiB of log, so a
/// replica away for a while falls out of the primary's log.
const SMALL_LOG: [&str; 6] = [
    "--backlog-bytes",
    "16384",
    "--segment-bytes",
    "4096",
    "--snapshot-log-bytes",
    "32768",
];

#[test]
fn a_replica_that_fell_out_of_the_log_comes_back_through_a_full_sync() {
    let root = tempfile::tempdir().unwrap();
    let flags: Vec<&str> = ["--partitions", "2", "--fsync", "never"]
        .into_iter()
        .chain(SMALL_LOG)
        .collect();
    let n1 = Member::start(root.path(), "n1", &flags);
    let n2 = Member::start(root.path(), "n2", &flags);
    let mut n3 = Member::start(root.path(), "n3", &flags);
    form(&n1, &[&n2, &n3], 1);
    load(n1.node().resp, "a", 2_000, 2_000, 64);
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);
    let held: Vec<u64> = positions(&n3.status()).iter().map(|p| p.1).collect();

    n3.kill();
    // Write until the primary's log starts past what n3 holds, on every partition.
    let mut admin = n1.admin();
    let mut round = 0u64;
    wait_for(
        SETTLE,
        "the primary's log to start past n3's offsets",
        || {
            load(n1.node().resp, &format!("b{round}"), 2_000, 2_000, 64);
            round += 1;
            assert!(round <= 50, "50 rounds of writes did not trim the log");
            admin
                .status()
                .partitions
                .iter()
                .zip(&held)
                .all(|(p, &h)| p.log_start_offset > h + 1)
        },
    );

    n3.restart();
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);
    let st = wait_synced(&n3, &[SyncKind::Full]);
    for p in &st.partitions {
        assert!(link(p).full_syncs >= 1, "p{}: n3 full syncs", p.partition);
    }
    assert_eq!(
        assert_same_data(&[&n1, &n2, &n3]),
        2_000 + 2_000 * round,
        "every key on every copy"
    );
    let full = common::metric(&n1.metrics(), "partita_replica_syncs_total{kind=\"full\"}");
    assert!(full >= 2.0, "the primary counted {full} full syncs");
}
