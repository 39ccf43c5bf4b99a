//! Write concerns, read-only replicas and the epoch rules of admin calls, on real node
//! processes on loopback: what a client sees when a QUORUM write cannot be met, when too few
//! replicas are in sync, when it writes to a replica, and what an admin call with an old epoch
//! gets. Replicas are frozen with SIGSTOP to make acknowledgements stop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Reply;
use common::cluster::{
    Member, SETTLE, all, error_info, form, positions, wait_caught_up, wait_in_sync,
};
use partita_node::proto::kv_client::KvClient;
use partita_node::proto::{
    ErrorCode, GetRequest, NodeAddress, PutRequest, ReadOptions, ReadPreference, Role,
    WriteConcern, WriteOptions,
};
use partita_node::slot::SlotMap;
use std::time::Duration;

const FLAGS: &[&str] = &["--in-memory", "--partitions", "2", "--heartbeat-ms", "50"];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn kv(rt: &tokio::runtime::Runtime, m: &Member) -> KvClient<tonic::transport::Channel> {
    rt.block_on(KvClient::connect(format!("http://{}", m.node().grpc)))
        .unwrap()
}

fn put(key: &str, concern: WriteConcern, timeout_ms: u32) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        write: Some(WriteOptions {
            concern: concern as i32,
            timeout_ms,
        }),
        ..Default::default()
    }
}

/// Three nodes in a temporary directory, n1 primary of every partition at epoch 1 with n2 and
/// n3 following it. The directory must outlive the nodes.
fn formed_three() -> (tempfile::TempDir, Member, Member, Member) {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Member::start(dir.path(), "n1", FLAGS);
    let n2 = Member::start(dir.path(), "n2", FLAGS);
    let n3 = Member::start(dir.path(), "n3", FLAGS);
    form(&n1, &[&n2, &n3], 1);
    (dir, n1, n2, n3)
}

fn error_text(r: &Reply) -> String {
    match r {
        Reply::Error(e) => e.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_write_concern_that_cannot_be_met_times_out_saying_how_many_copies_have_it() {
    let (_dir, n1, n2, n3) = formed_three();
    let rt = rt();
    let mut kv1 = kv(&rt, &n1);

    // With both replicas streaming, QUORUM and ALL are met.
    let ack = rt
        .block_on(kv1.put(put("a", WriteConcern::All, 5000)))
        .unwrap()
        .into_inner()
        .ack
        .unwrap();
    assert_eq!((ack.acked_copies, ack.required_copies), (3, 3));

    // Frozen replicas acknowledge nothing: the write is applied, the concern is not met.
    n2.pause();
    n3.pause();
    let err = rt
        .block_on(kv1.put(put("b", WriteConcern::Quorum, 300)))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err}");
    let info = error_info(&err);
    assert_eq!(info.code, ErrorCode::WriteConcernTimeout as i32);
    assert_eq!((info.acked_copies, info.required_copies), (1, 2));
    assert!(err.message().contains("1 of 2 copies"), "{}", err.message());

    let mut c = n1.client();
    assert_eq!(
        c.cmd(&["WRITECONCERN", "QUORUM", "TIMEOUT", "300"]),
        Reply::Simple("OK".into())
    );
    let e = error_text(&c.cmd(&["SET", "c", "1"]));
    assert!(
        e.starts_with("TIMEOUT") && e.contains("1 of 2 copies"),
        "{e}"
    );
    // Not rolled back: the primary holds both writes.
    assert_eq!(c.cmd(&["GET", "b"]), Reply::Bulk(Some(b"v".to_vec())));
    assert_eq!(c.cmd(&["GET", "c"]), Reply::Bulk(Some(b"1".to_vec())));
    // WAIT counts what has arrived: nothing while both are frozen.
    assert_eq!(c.cmd(&["WAIT", "1", "200"]), Reply::Int(0));

    // Thawed, they catch up, and the same connection's writes are met again.
    n2.resume();
    n3.resume();
    assert_eq!(c.cmd(&["WAIT", "2", "20000"]), Reply::Int(2));
    assert_eq!(c.cmd(&["SET", "d", "1"]), Reply::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["WRITECONCERN"]),
        Reply::Bulk(Some(b"QUORUM 300".to_vec()))
    );
    wait_caught_up(&n1, &[&n2, &n3], Duration::from_secs(30));
}

#[test]
fn pipelined_writes_under_a_write_concern_share_one_wait_and_each_get_their_own_answer() {
    let (_dir, n1, n2, n3) = formed_three();
    let mut c = n1.client();
    assert_eq!(
        c.cmd(&["WRITECONCERN", "QUORUM", "TIMEOUT", "1000"]),
        Reply::Simple("OK".into())
    );

    // Replicas streaming: a pipeline of 16 writes over both partitions is met, every reply OK.
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let sets: Vec<[&str; 3]> = keys.iter().map(|k| ["SET", k.as_str(), "v"]).collect();
    let commands: Vec<&[&str]> = sets.iter().map(|c| &c[..]).collect();
    let replies = c.pipeline(&commands);
    assert!(
        replies.iter().all(|r| *r == Reply::Simple("OK".into())),
        "{replies:?}"
    );
    // QUORUM is 2 of 3 copies: every write is on at least one replica already.
    let waited = c.cmd(&["WAIT", "1", "1"]);
    assert!(matches!(waited, Reply::Int(n) if n >= 1), "{waited:?}");

    // Frozen replicas: each write's reply becomes its own TIMEOUT, in place; the replies of the
    // commands between them (a read, a change of concern, a write under ONE) are kept.
    n2.pause();
    n3.pause();
    let started = std::time::Instant::now();
    let replies = c.pipeline(&[
        &["SET", "x1", "1"],
        &["GET", "x1"],
        &["SET", "x2", "2"],
        &["WRITECONCERN", "ONE"],
        &["SET", "x3", "3"],
        &["WRITECONCERN", "QUORUM", "TIMEOUT", "1000"],
        &["SET", "x4", "4"],
        &["MSET", "x5", "5", "x6", "6"],
        &["SET", "x7", "7"],
    ]);
    let took = started.elapsed();
    for i in [0, 2, 6, 7, 8] {
        let e = error_text(&replies[i]);
        assert!(
            e.starts_with("TIMEOUT") && e.contains("1 of 2 copies") && e.contains("1000 ms"),
            "reply {i}: {e}"
        );
    }
    assert_eq!(replies[1], Reply::Bulk(Some(b"1".to_vec())));
    for i in [3, 4, 5] {
        assert_eq!(replies[i], Reply::Simple("OK".into()), "reply {i}");
    }
    // Each write waited from when it ran, all at once: five waits of 1 s one after the other
    // would take 5 s.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Not rolled back: the primary holds every write.
    for k in ["x1", "x2", "x3", "x4", "x5", "x6", "x7"] {
        assert_eq!(c.cmd(&["EXISTS", k]), Reply::Int(1), "{k}");
    }

    // Thawed, the replicas catch up and the same pipeline is met.
    n2.resume();
    n3.resume();
    assert_eq!(c.cmd(&["WAIT", "2", "20000"]), Reply::Int(2));
    let replies = c.pipeline(&commands);
    assert!(
        replies.iter().all(|r| *r == Reply::Simple("OK".into())),
        "{replies:?}"
    );
    wait_caught_up(&n1, &[&n2, &n3], Duration::from_secs(30));
}

#[test]
fn min_in_sync_replicas_refuses_writes_until_enough_replicas_stream() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Member::start(dir.path(), "n1", FLAGS);
    let n2 = Member::start(dir.path(), "n2", FLAGS);
    // Through the CLI, as an operator would by hand.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_partita"))
        .args(["admin", "--addr", &n1.node().grpc.to_string(), "assign"])
        .args(["--partition", "all", "--epoch", "1", "--primary"])
        .args(["--replicas", "n2", "--min-in-sync", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut c = n1.client();
    let e = error_text(&c.cmd(&["SET", "k", "v"]));
    assert!(e.starts_with("NOREPLICAS"), "{e}");
    let rt = rt();
    let mut kv1 = kv(&rt, &n1);
    let err = rt
        .block_on(kv1.put(put("k", WriteConcern::One, 0)))
        .unwrap_err();
    assert_eq!(
        error_info(&err).code,
        ErrorCode::NotEnoughInSync as i32,
        "{err}"
    );
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Reply::Bulk(None),
        "a refused write is not applied"
    );

    n2.admin().assign_replica(all(), 1, n1.address()).unwrap();
    common::wait_until(Duration::from_secs(30), "writes accepted", || {
        c.cmd(&["SET", "k", "v"]) == Reply::Simple("OK".into())
    });
}

#[test]
fn replicas_refuse_writes_naming_the_primary_and_serve_reads_with_their_lag() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Member::start(dir.path(), "n1", FLAGS);
    let n2 = Member::start(dir.path(), "n2", FLAGS);
    form(&n1, &[&n2], 1);
    assert_eq!(
        n1.client().cmd(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    wait_caught_up(&n1, &[&n2], Duration::from_secs(30));

    let mut c = n2.client();
    let e = error_text(&c.cmd(&["SET", "k", "w"]));
    assert!(e.starts_with("READONLY"), "{e}");
    assert!(
        e.contains(&n1.node().resp.to_string()),
        "names the primary: {e}"
    );
    assert_eq!(c.cmd(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    let info = c.cmd(&["INFO", "replication"]).text();
    assert!(info.contains("role:slave"), "{info}");
    assert!(info.contains("master_link_status:up"), "{info}");
    assert!(info.contains("link=streaming"), "{info}");

    let rt = rt();
    let mut kv2 = kv(&rt, &n2);
    let err = rt
        .block_on(kv2.put(put("k", WriteConcern::One, 0)))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let info = error_info(&err);
    assert_eq!(info.code, ErrorCode::NotPrimary as i32);
    let primary = info.primary.unwrap();
    assert_eq!(primary.grpc_addr, n1.node().grpc.to_string());

    // A read that insists on the primary is refused; one that accepts any copy is served and
    // says which copy served it.
    let get = |preference: ReadPreference| GetRequest {
        key: b"k".to_vec(),
        read: Some(ReadOptions {
            preference: preference as i32,
            max_lag_ms: 0,
        }),
    };
    let err = rt
        .block_on(kv2.get(get(ReadPreference::Primary)))
        .unwrap_err();
    assert_eq!(error_info(&err).code, ErrorCode::NotPrimary as i32);
    let got = rt
        .block_on(kv2.get(get(ReadPreference::Any)))
        .unwrap()
        .into_inner();
    assert!(got.found);
    let read = got.info.unwrap();
    assert_eq!(read.role, Role::Replica as i32);
    assert_eq!(read.node_id, "n2");
}

#[test]
fn admin_calls_with_an_older_epoch_are_refused_and_roles_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut n1 = Member::start(dir.path(), "n1", &["--partitions", "2"]);
    let mut admin = n1.admin();
    admin.assign_primary(all(), 5, &[], 1).unwrap();
    let err = admin.fence(all(), 4).unwrap_err();
    assert_eq!(error_info(&err).code, ErrorCode::StaleEpoch as i32, "{err}");
    // A different role at the same epoch would give one epoch two leaders: refused.
    let elsewhere = NodeAddress {
        node_id: "n9".into(),
        grpc_addr: "127.0.0.1:9".into(),
        resp_addr: String::new(),
    };
    let err = admin.assign_replica(all(), 5, elsewhere).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    // Nor may a node follow itself.
    let err = admin.follow(all(), 6, n1.address()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    // An identical retry is accepted.
    admin.assign_primary(all(), 5, &[], 1).unwrap();
    // All or nothing: partition 1 at a higher epoch cannot make a mixed call succeed halfway.
    admin.fence(common::cluster::ids(&[1]), 7).unwrap();
    let err = admin.fence(all(), 6).unwrap_err();
    assert_eq!(error_info(&err).code, ErrorCode::StaleEpoch as i32);
    let st = admin.status();
    let roles: Vec<(i32, u64)> = st.partitions.iter().map(|p| (p.role, p.epoch)).collect();
    assert_eq!(
        roles,
        vec![(Role::Primary as i32, 5), (Role::Fenced as i32, 7)]
    );
    // The key's partition answers according to its role: OK on 0, FENCED on 1.
    let r = n1.client().cmd(&["SET", "{a}", "v"]);
    assert!(
        r == Reply::Simple("OK".into()) || matches!(&r, Reply::Error(e) if e.starts_with("FENCED")),
        "{r:?}"
    );

    n1.kill();
    n1.restart();
    let st = n1.status();
    let after: Vec<(i32, u64)> = st.partitions.iter().map(|p| (p.role, p.epoch)).collect();
    assert_eq!(after, roles, "roles and epochs are kept on disk");
}

#[test]
fn a_primary_with_replicas_attached_shuts_down_without_waiting_for_them() {
    let dir = tempfile::tempdir().unwrap();
    // The shutdown timeout is far above the deadline below: a primary that waited for its
    // replication streams to end would miss it.
    let flags = [
        "--in-memory",
        "--partitions",
        "2",
        "--shutdown-timeout",
        "30",
    ];
    let mut n1 = Member::start(dir.path(), "n1", &flags);
    let mut n2 = Member::start(dir.path(), "n2", &flags);
    form(&n1, &[&n2], 1);
    let started = std::time::Instant::now();
    assert!(n1.terminate(Duration::from_secs(5)), "the primary exits 0");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(n2.terminate(Duration::from_secs(5)), "the replica exits 0");
}

#[test]
fn an_identical_role_retry_leaves_a_healthy_link_alone() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Member::start(dir.path(), "n1", FLAGS);
    let n2 = Member::start(dir.path(), "n2", FLAGS);
    form(&n1, &[&n2], 1);
    let syncs = |m: &Member| -> Vec<u64> {
        m.status()
            .partitions
            .iter()
            .map(|p| p.link.as_ref().map_or(0, |l| l.partial_syncs))
            .collect()
    };
    // The primary counts a replica in sync once it has queued its answer; the replica counts
    // the sync once it has read it.
    common::wait_until(
        Duration::from_secs(30),
        "n2 streams every partition",
        || {
            n2.status().partitions.iter().all(|p| {
                p.link
                    .as_ref()
                    .is_some_and(|l| l.state == partita_node::proto::LinkState::Streaming as i32)
            })
        },
    );
    let before = syncs(&n2);
    assert!(before.iter().all(|&n| n == 1), "{before:?}");
    // The operator re-applies its plan on every reconcile: the same role at the same epoch.
    n2.admin().assign_replica(all(), 1, n1.address()).unwrap();
    n2.admin().follow(all(), 1, n1.address()).unwrap();
    n1.admin().assign_primary(all(), 1, &["n2"], 2).unwrap();
    // A restarted link would have said hello again (a new partial sync) before streaming this.
    assert_eq!(
        n1.client().cmd(&["SET", "k", "v"]),
        Reply::Simple("OK".into())
    );
    wait_caught_up(&n1, &[&n2], Duration::from_secs(30));
    assert_eq!(syncs(&n2), before, "the link was not restarted");
}

#[test]
fn a_switchover_under_writes_loses_nothing_even_at_write_concern_one() {
    let (_dir, n1, n2, n3) = formed_three();
    // One writer keeps writing unique keys at ONE until the primary refuses.
    let writer = {
        let addr = n1.node().resp;
        std::thread::spawn(move || {
            let mut c = common::Client::connect(addr);
            let mut acked = Vec::new();
            for i in 0..200_000u32 {
                let key = format!("sw:{i}");
                match c.cmd(&["SET", key.as_str(), "v"]) {
                    Reply::Simple(_) => acked.push(key),
                    Reply::Error(e) => {
                        assert!(e.starts_with("FENCED"), "{e}");
                        return acked;
                    }
                    other => panic!("{other:?}"),
                }
            }
            acked
        })
    };
    common::wait_until(Duration::from_secs(30), "writes flowing", || {
        n1.status()
            .partitions
            .iter()
            .all(|p| p.last.unwrap().offset > 200)
    });
    // Fence: the primary stops accepting writes and says where each partition ends.
    let fenced = n1.admin().fence(all(), 2).unwrap();
    let acked = writer.join().unwrap();
    assert!(!acked.is_empty());
    for p in &fenced.partitions {
        let end = p.last.unwrap().offset;
        // The target catches up from the fenced primary's stream, then takes over.
        n2.admin()
            .promote_after(
                common::cluster::ids(&[p.partition]),
                2,
                &["n1", "n3"],
                3,
                end,
                20_000,
            )
            .unwrap_or_else(|e| panic!("promote partition {}: {e}", p.partition));
    }
    for m in [&n3, &n1] {
        m.admin().follow(all(), 2, n2.address()).unwrap();
    }
    wait_caught_up(&n2, &[&n1, &n3], Duration::from_secs(30));
    common::cluster::assert_same_data(&[&n1, &n2, &n3]);
    let mut c = n2.client();
    for key in &acked {
        assert_eq!(
            c.cmd(&["GET", key.as_str()]),
            Reply::Bulk(Some(b"v".to_vec())),
            "{key} was acknowledged before the switchover"
        );
    }
    // The old primary followed without a full sync.
    for p in n1.status().partitions {
        assert_ne!(
            p.link.unwrap().last_sync,
            partita_node::proto::SyncKind::Full as i32
        );
    }
}

#[test]
fn a_deposed_primary_never_acknowledges_a_write_it_took_at_its_old_epoch() {
    // The e2e freeze scenario, step by step. n1 leads at epoch 1 and stalls; the operator
    // fails over without it (n3 moves to epoch 2 first, then n2 is promoted), so no replica
    // acknowledges epoch 1 any more. A QUORUM write n1 takes then waits in vain. n1 is told to
    // follow n2 (its copy of that write is truncated: n2 never had it), and later leads again
    // at epoch 3, where both replicas acknowledge offsets past the write's. Those
    // acknowledgements are of epoch 3's entries, not of the write: it must fail, never be
    // acknowledged (it is gone).
    let (_dir, n1, n2, n3) = formed_three();
    let rt = rt();
    let mut kv1 = kv(&rt, &n1);
    for i in 0..10 {
        let key = format!("before:{i}");
        rt.block_on(kv1.put(put(&key, WriteConcern::Quorum, 5_000)))
            .unwrap();
    }
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);

    n3.admin().follow(all(), 2, n2.address()).unwrap();
    n2.admin().promote(all(), 2, &["n1", "n3"], 3).unwrap();

    let key = "stale";
    let p = SlotMap::new(2).unwrap().partition_of_key(key.as_bytes()) as usize;
    let held = |m: &Member| positions(&m.status())[p];
    let before = held(&n1);
    let addr = n1.node().grpc;
    let writer = std::thread::spawn(move || {
        let own = crate::rt();
        let mut kv = own
            .block_on(KvClient::connect(format!("http://{addr}")))
            .unwrap();
        own.block_on(kv.put(put(key, WriteConcern::Quorum, 60_000)))
    });
    common::wait_until(SETTLE, "n1 to apply the write at epoch 1", || {
        held(&n1) > before
    });
    assert_eq!(held(&n1).0, 1, "n1 took it at its old epoch");

    n1.admin().follow(all(), 2, n2.address()).unwrap();
    wait_caught_up(&n2, &[&n1, &n3], SETTLE);
    n2.admin().fence(all(), 2).unwrap();
    n1.admin().promote(all(), 3, &["n2", "n3"], 3).unwrap();
    n2.admin().follow(all(), 3, n1.address()).unwrap();
    n3.admin().follow(all(), 3, n1.address()).unwrap();
    wait_in_sync(&n1, &["n2", "n3"], SETTLE);
    wait_caught_up(&n1, &[&n2, &n3], SETTLE);

    match writer.join().unwrap() {
        Ok(r) => panic!(
            "n1 acknowledged a write it took at epoch 1 after n2 had taken over at epoch 2 \
             (and n1's copy of it was truncated since): {:?}",
            r.into_inner().ack
        ),
        Err(s) => {
            assert_eq!(
                error_info(&s).code,
                ErrorCode::WriteConcernTimeout as i32,
                "not acknowledged, outcome unknown to the client: {s:?}"
            );
            assert!(s.message().contains("stopped leading epoch 1"), "{s:?}");
        }
    }
    let got = rt
        .block_on(kv(&rt, &n1).get(GetRequest {
            key: key.into(),
            read: None,
        }))
        .unwrap()
        .into_inner();
    assert!(!got.found, "the truncated write is gone");
}
