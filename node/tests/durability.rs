//! Durability and limits of a real node process: fsync policies, graceful shutdown, damaged
//! files, and the errors past each configured limit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{Reply, http_get, metric, start, try_start};
use std::time::Duration;

fn fill(node: &common::Node, prefix: &str, n: usize) {
    let mut c = node.client();
    for i in 0..n {
        c.send(&["SET", &format!("{prefix}{i:06}"), &"v".repeat(100)])
            .unwrap();
    }
    for _ in 0..n {
        assert_eq!(c.read().unwrap(), Reply::Simple("OK".into()));
    }
}

#[test]
fn fsync_always_syncs_before_acknowledging_and_never_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("always"),
        &["--fsync", "always", "--partitions", "4"],
    );
    fill(&node, "k", 500);
    let (_, m) = http_get(node.http, "/metrics");
    assert!(metric(&m, "partita_fsync_seconds_count") > 0.0, "{m}");
    let mut c = node.client();
    let info = c.cmd(&["INFO", "replication"]).text();
    let mut partitions = 0;
    for line in info.lines().filter(|l| l.starts_with("partition")) {
        let field = |name: &str| {
            line.split(&[',', ':'][..])
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        assert_eq!(field("offset"), field("durable_offset"), "{line}");
        partitions += 1;
    }
    assert_eq!(partitions, 4);
    node.kill();

    let node = start(
        &dir.path().join("never"),
        &["--fsync", "never", "--partitions", "4"],
    );
    fill(&node, "k", 500);
    let (_, m) = http_get(node.http, "/metrics");
    assert_eq!(
        metric(&m, "partita_fsync_seconds_count"),
        0.0,
        "no fsync while serving"
    );
    assert!(node.terminate(Duration::from_secs(20)), "clean exit");
}

#[test]
fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = start(&data, &["--fsync", "everysec"]);
    let addr = node.resp;
    let writer = std::thread::spawn(move || {
        let mut c = common::Client::connect(addr);
        let mut acked = Vec::new();
        for i in 0..200_000 {
            let key = format!("k{i}");
            match c.call(&["SET", &key, "v"]) {
                Ok(Reply::Simple(ok)) if ok == "OK" => acked.push(key),
                _ => break,
            }
        }
        acked
    });
    common::wait_until(
        Duration::from_secs(20),
        "writes to flow",
        || matches!(node.client().cmd(&["DBSIZE"]), Reply::Int(n) if n > 1000),
    );
    assert!(
        node.terminate(Duration::from_secs(20)),
        "SIGTERM should end the node with status 0"
    );
    let acked = writer.join().unwrap();
    assert!(acked.len() > 1000);
    let node = start(&data, &[]);
    let mut c = node.client();
    for key in acked.iter().step_by(7).chain(acked.last()) {
        assert_eq!(
            c.cmd(&["EXISTS", key]),
            Reply::Int(1),
            "{key} was acknowledged"
        );
    }
    assert!(
        node.stderr().contains("warnings=0"),
        "a clean shutdown leaves nothing to repair:\n{}",
        node.stderr()
    );
}

#[test]
fn a_damaged_log_tail_is_cut_with_a_warning_and_the_node_serves_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = start(&data, &["--partitions", "1"]);
    fill(&node, "k", 100);
    assert!(node.terminate(Duration::from_secs(20)));
    let seg = std::fs::read_dir(data.join("p00000/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    // Flip a byte in the last record: everything before it must come back.
    bytes[len - 20] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let node = start(&data, &["--partitions", "1"]);
    let mut c = node.client();
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(99));
    assert_eq!(c.cmd(&["EXISTS", "k000098"]), Reply::Int(1));
    assert_eq!(c.cmd(&["EXISTS", "k000099"]), Reply::Int(0));
    let log = node.stderr();
    assert!(log.contains("log damaged") && log.contains("WARN"), "{log}");
    let info = c.cmd(&["INFO", "persistence"]).text();
    assert!(info.contains("partita_recovery_warnings:1"), "{info}");
}

#[test]
fn damaged_snapshots_over_a_trimmed_log_stop_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = [
        "--partitions",
        "1",
        "--segment-bytes",
        "8192",
        "--backlog-bytes",
        "8192",
        "--snapshot-log-bytes",
        "20000",
    ];
    let node = start(&data, &flags);
    let snaps = || {
        std::fs::read_dir(data.join("p00000/snap"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap"))
            })
            .count()
    };
    let log_first = || {
        std::fs::read_dir(data.join("p00000/log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .min()
            .unwrap()
    };
    // Enough writes for several snapshots (taken by the once-a-second cycle) and a trimmed log.
    // The count is taken before each fill: under load the snapshot may land during it.
    for round in 0..4 {
        let before = snaps();
        fill(&node, &format!("r{round}-"), 400);
        common::wait_until(Duration::from_secs(30), "a snapshot", || {
            snaps() > before || snaps() >= 2
        });
    }
    common::wait_until(Duration::from_secs(30), "the log to be trimmed", || {
        !log_first().ends_with("00000000000000000001.log")
    });
    assert!(node.terminate(Duration::from_secs(20)));
    for snap in std::fs::read_dir(data.join("p00000/snap")).unwrap() {
        let path = snap.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
    }
    let Err(stderr) = try_start(&data, &flags) else {
        panic!("the node started from damaged snapshots and a trimmed log");
    };
    assert!(
        stderr.contains("every snapshot is damaged") && stderr.contains("resync"),
        "the error should say what happened and what to do:\n{stderr}"
    );
}

#[test]
fn a_changed_partition_count_is_refused_instead_of_remapping_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = start(&data, &["--partitions", "8"]);
    fill(&node, "k", 10);
    assert!(node.terminate(Duration::from_secs(20)));
    let Err(stderr) = try_start(&data, &["--partitions", "16"]) else {
        panic!("started with another partition count");
    };
    assert!(
        stderr.contains("partitions=8") && stderr.contains("16 partitions"),
        "{stderr}"
    );
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("data"),
        &[
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "64",
            "--max-connections",
            "2",
        ],
    );
    let mut c = node.client();
    assert_eq!(
        c.cmd(&["SET", &"k".repeat(17), "v"]),
        Reply::Error("ERR key too large (17 bytes; max-key-bytes is 16)".into())
    );
    assert_eq!(
        c.cmd(&["SET", "k", &"v".repeat(65)]),
        Reply::Error("ERR value too large (65 bytes; max-value-bytes is 64)".into())
    );
    assert_eq!(
        c.cmd(&["SET", "k", &"v".repeat(64)]),
        Reply::Simple("OK".into())
    );
    let _second = node.client();
    let mut third = node.client();
    assert_eq!(
        third.read().unwrap(),
        Reply::Error("ERR max number of clients reached".into())
    );
    assert_eq!(
        c.cmd(&["PING"]),
        Reply::Simple("PONG".into()),
        "the others keep working"
    );
}

#[test]
fn health_and_readiness_endpoints_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &[]);
    assert_eq!(http_get(node.http, "/healthz").0, 200);
    assert_eq!(http_get(node.http, "/readyz"), (200, "ready\n".into()));
    fill(&node, "k", 10);
    let (status, m) = http_get(node.http, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "partita_commands_total",
        "partita_net_bytes_total",
        "partita_log_bytes",
        "partita_keys",
        "partita_snapshot_age_seconds",
        "partita_fsync_seconds",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}:\n{m}");
    }
    assert_eq!(metric(&m, "partita_keys"), 10.0);
}

#[test]
fn replies_past_max_reply_bytes_are_refused_and_contradictory_limits_stop_startup() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("data"),
        &["--max-value-bytes", "1000", "--max-reply-bytes", "2500"],
    );
    let mut c = node.client();
    assert_eq!(
        c.cmd(&["SET", "big", &"v".repeat(1000)]),
        Reply::Simple("OK".into())
    );
    assert!(matches!(c.cmd(&["MGET", "big", "big"]), Reply::Array(Some(v)) if v.len() == 2));
    assert_eq!(
        c.cmd(&["MGET", "big", "big", "big"]),
        Reply::Error("ERR reply of 3000 bytes exceeds max-reply-bytes (2500)".into())
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let Err(stderr) = try_start(
        &dir.path().join("other"),
        &["--max-request-bytes", "600000000"],
    ) else {
        panic!("started with a request limit larger than a log record");
    };
    assert!(
        stderr.contains("--max-request-bytes must be at most"),
        "{stderr}"
    );
}
