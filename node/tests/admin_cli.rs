//! `partita admin` as an operator runs it: the real binary against a real standalone node.
//! Status and digest are checked against what the node itself says (its RESP `DEBUG DIGEST`);
//! usage errors must exit 2 and call errors 1, each with a one-line message naming the cause.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{Node, start};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};

/// Runs `partita admin --addr ADDR ARGS...`.
fn admin(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_partita"))
        .args(["admin", "--addr", addr])
        .args(args)
        .output()
        .unwrap()
}

fn admin_ok(node: &Node, args: &[&str]) -> String {
    let out = admin(&node.grpc.to_string(), args);
    assert!(out.status.success(), "partita admin {args:?}: {out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn admin_json(node: &Node, args: &[&str]) -> Value {
    let text = admin_ok(node, &[args, &["--json"]].concat());
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn status_shows_every_partition_as_primary_in_the_table_and_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        &dir.path().join("node"),
        &["--in-memory", "--partitions", "3"],
    );
    let mut resp = node.client();
    for i in 0..10 {
        assert_eq!(
            resp.cmd(&["SET", &format!("key:{i}"), "v"]),
            common::Reply::Simple("OK".into())
        );
    }

    let text = admin_ok(&node, &["status"]);
    assert!(text.contains(&format!("grpc {}", node.grpc)), "{text}");
    assert!(text.contains(&format!("resp {}", node.resp)), "{text}");
    assert!(text.contains("standalone yes"), "{text}");
    assert!(text.contains("ready yes"), "{text}");
    assert!(text.contains("PARTITION  ROLE"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|p| p.parse::<u32>().is_ok()))
        .collect();
    assert_eq!(rows.len(), 3, "one row per partition: {text}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], i.to_string(), "{text}");
        assert_eq!(row[1], "primary", "{text}");
    }

    let json = admin_json(&node, &["status"]);
    assert_eq!(
        keys(&json),
        BTreeSet::from([
            "node",
            "version",
            "ready",
            "uptime_ms",
            "standalone",
            "partitions_total",
            "topology_version",
            "fsync",
            "partitions",
        ])
    );
    assert_eq!(json["node"]["grpc_addr"], node.grpc.to_string());
    assert_eq!(json["node"]["resp_addr"], node.resp.to_string());
    assert_eq!(json["ready"], true);
    assert_eq!(json["standalone"], true);
    assert_eq!(json["partitions_total"], 3);
    assert!(json["fsync"].as_str().is_some_and(|f| !f.is_empty()));
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    let mut total_keys = 0;
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(
            keys(p),
            BTreeSet::from([
                "partition",
                "role",
                "epoch",
                "last",
                "commit_offset",
                "log_start_offset",
                "snapshot_offset",
                "keys",
                "bytes",
                "epoch_history",
                "primary",
                "link",
                "replicas",
                "copies",
                "min_in_sync_replicas",
            ])
        );
        assert_eq!(p["partition"], i);
        assert_eq!(p["role"], "primary");
        assert!(p["epoch"].as_u64().unwrap() >= 1, "{p}");
        assert_eq!(keys(&p["last"]), BTreeSet::from(["epoch", "offset"]));
        assert_eq!(p["link"], Value::Null, "a primary has no link");
        total_keys += p["keys"].as_u64().unwrap();
    }
    assert_eq!(total_keys, 10);

    let some = admin_json(&node, &["status", "--partition", "2,0"]);
    let ids: Vec<u64> = some["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partition"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 2]);
}

#[test]
fn digest_equals_the_nodes_debug_digest() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("node"), &["--partitions", "4"]);
    let mut resp = node.client();
    for i in 0..50 {
        resp.cmd(&["SET", &format!("user:{i}"), &format!("value {i}")]);
    }
    resp.cmd(&["SET", "session", "s", "PX", "3600000"]);
    resp.cmd(&["DEL", "user:7"]);
    let expected = resp.cmd(&["DEBUG", "DIGEST"]).text();
    assert_eq!(expected.len(), 40);
    assert_ne!(expected, "0".repeat(40));

    let json = admin_json(&node, &["digest"]);
    assert_eq!(json["digest"], expected);
    assert_eq!(json["keys"], 50);
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4);
    let per_partition: u64 = partitions.iter().map(|p| p["keys"].as_u64().unwrap()).sum();
    assert_eq!(per_partition, 50);
    for p in partitions {
        assert_eq!(
            keys(p),
            BTreeSet::from(["partition", "digest", "keys", "at"])
        );
    }

    let text = admin_ok(&node, &["digest"]);
    assert_eq!(
        text.lines().next(),
        Some(format!("digest {expected}  keys 50").as_str()),
        "{text}"
    );
    for p in partitions {
        let digest = p["digest"].as_str().unwrap();
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(digest)),
            "partition {} missing from {text}",
            p["partition"]
        );
    }

    let one = admin_json(&node, &["digest", "--partition", "1"]);
    assert_eq!(one["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(one["digest"], partitions[1]["digest"]);
    assert_eq!(one["keys"], partitions[1]["keys"]);
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let addr = "127.0.0.1:1";
    let out = admin(addr, &["fence", "--epoch", "1"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--partition"), "{}", stderr(&out));

    let out = admin(
        addr,
        &[
            "assign",
            "--partition",
            "0",
            "--epoch",
            "2",
            "--primary",
            "--follow",
            "127.0.0.1:7001",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("'--primary' cannot be used with '--follow"),
        "{}",
        stderr(&out)
    );

    let out = admin(addr, &["assign", "--partition", "0", "--epoch", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--fenced"), "{}", stderr(&out));

    let out = admin(addr, &["drop", "--partition", "0,x", "--epoch", "2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("\"x\" is not a partition id"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreachable_node_fails_with_exit_1_naming_its_address() {
    // A port that was just free: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = admin(&addr, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(&format!("cannot reach {addr}")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_node_that_never_answers_fails_after_the_timeout_naming_its_address() {
    // Accepts TCP connections (the kernel does, from the backlog) but never speaks HTTP/2.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = admin(&addr, &["--timeout-ms", "300", "digest"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("300 ms"), "{err}");
    drop(silent);
}

#[test]
fn a_refused_role_change_prints_the_grpc_code_and_message_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("node"), &["--in-memory"]);
    // A standalone node is primary of every partition at epoch 1 or higher: however the
    // server handles role changes, a fence at epoch 0 must fail.
    let out = admin(
        &node.grpc.to_string(),
        &["fence", "--partition", "0", "--epoch", "0"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let rest = err
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("no `error: ` prefix: {err}"));
    // CODE[ partition N]: message
    let (head, message) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("no code: message in {err}"));
    let code = head.split_whitespace().next().unwrap_or_default();
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
        "no upper-case code first: {err}"
    );
    assert!(!message.trim().is_empty(), "no message: {err}");
    // Still serving, untouched.
    let json = admin_json(&node, &["status", "--partition", "0"]);
    assert_eq!(json["partitions"][0]["role"], "primary");
}
