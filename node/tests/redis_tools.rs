//! Debian's own `redis-cli` and `redis-benchmark`, unchanged, against a standalone node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::{start, tool};
use std::process::Command;

fn cli(node: &common::Node, args: &[&str]) -> String {
    let out = Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim_end()
        .to_string()
}

#[test]
fn redis_cli_reads_and_writes_with_the_commands_users_type() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &[]);
    assert_eq!(cli(&node, &["PING"]), "PONG");
    assert_eq!(cli(&node, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&node, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(&node, &["SET", "greeting", "x", "NX"]), "");
    assert_eq!(cli(&node, &["SET", "counter", "41"]), "OK");
    assert_eq!(cli(&node, &["INCR", "counter"]), "42");
    assert_eq!(cli(&node, &["DECR", "counter"]), "41");
    assert_eq!(cli(&node, &["SET", "session", "s", "EX", "100"]), "OK");
    let ttl: i64 = cli(&node, &["TTL", "session"]).parse().unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(cli(&node, &["PERSIST", "session"]), "1");
    assert_eq!(cli(&node, &["TTL", "session"]), "-1");
    assert_eq!(cli(&node, &["PEXPIRE", "session", "100000"]), "1");
    assert_eq!(cli(&node, &["EXISTS", "greeting", "nope", "counter"]), "2");
    assert_eq!(cli(&node, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(
        cli(&node, &["MGET", "a", "b", "zz"]),
        "1\n2",
        "the nil prints as an empty line"
    );
    assert_eq!(cli(&node, &["DBSIZE"]), "5");
    assert_eq!(cli(&node, &["DEL", "a", "b", "zz"]), "2");
    let mut keys: Vec<String> = cli(&node, &["KEYS", "*"])
        .lines()
        .map(String::from)
        .collect();
    keys.sort();
    assert_eq!(keys, ["counter", "greeting", "session"]);
    assert_eq!(cli(&node, &["KEYS", "g*"]), "greeting");
    let digest = cli(&node, &["DEBUG", "DIGEST"]);
    assert_eq!(digest.len(), 40, "{digest}");
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    let info = cli(&node, &["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Persistence",
        "# Replication",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("db0:keys=3,expires=1"), "{info}");
    assert!(info.contains("role:master"));
    // Errors are Redis's, word for word.
    assert_eq!(
        cli(&node, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        cli(&node, &["FROB", "x"]),
        "ERR unknown command 'FROB', with args beginning with: 'x'"
    );
    assert_eq!(
        cli(&node, &["INCR", "greeting"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(cli(&node, &["SELECT", "0"]), "OK");
    assert_eq!(cli(&node, &["WAIT", "0", "0"]), "0");
    assert_eq!(cli(&node, &["FLUSHALL"]), "OK");
    assert_eq!(cli(&node, &["DBSIZE"]), "0");
    assert_eq!(cli(&node, &["DEBUG", "DIGEST"]), "0".repeat(40));
}

#[test]
fn redis_cli_scan_visits_every_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &[]);
    let mut c = node.client();
    for i in 0..2500 {
        c.send(&["SET", &format!("user:{i:05}"), "v"]).unwrap();
    }
    for _ in 0..2500 {
        c.read().unwrap();
    }
    c.cmd(&["SET", "other", "v"]);
    let out = cli(&node, &["--scan", "--pattern", "user:*"]);
    let mut seen: Vec<&str> = out.lines().collect();
    let total = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(total, 2500, "every matching key, and only those");
    assert_eq!(seen.len(), 2500, "no key twice");
}

#[test]
fn redis_benchmark_runs_unchanged_and_its_writes_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("data"), &[]);
    let out = Command::new(tool("redis-benchmark"))
        .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
        .args([
            "-t",
            "set,get,incr,mset",
            "-n",
            "20000",
            "-r",
            "1000",
            "-d",
            "100",
        ])
        .args(["-P", "16", "-c", "20", "--csv"])
        .output()
        .expect("redis-benchmark runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-benchmark failed: {out:?}");
    for test in ["\"SET\"", "\"GET\"", "\"INCR\"", "\"MSET (10 keys)\""] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(test))
            .unwrap_or_else(|| panic!("no {test} result in:\n{stdout}"));
        let rps: f64 = line
            .split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{line}");
    }
    let mut c = node.client();
    let common::Reply::Int(keys) = c.cmd(&["DBSIZE"]) else {
        panic!("DBSIZE")
    };
    // -r 1000 draws keys from 1000 random ones for SET, plus counter and MSET keys.
    assert!(keys > 500, "only {keys} keys after the benchmark");
    let stderr = node.stderr();
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn an_in_memory_node_serves_writes_expiry_and_scans_without_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("unused"), &["--in-memory"]);
    let mut c = node.client();
    for i in 0..300 {
        c.send(&["SET", &format!("k{i:03}"), "v"]).unwrap();
    }
    for _ in 0..300 {
        assert_eq!(c.read().unwrap(), common::Reply::Simple("OK".into()));
    }
    assert_eq!(c.cmd(&["INCR", "n"]), common::Reply::Int(1));
    assert_eq!(c.cmd(&["PEXPIRE", "k000", "50"]), common::Reply::Int(1));
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the active expiry",
        || c.cmd(&["DBSIZE"]) == common::Reply::Int(300),
    );
    assert_eq!(
        cli(&node, &["--scan", "--pattern", "k*"]).lines().count(),
        299
    );
    let info = cli(&node, &["INFO", "persistence"]);
    assert!(info.contains("aof_enabled:0"), "{info}");
    assert!(
        !dir.path().join("unused").exists(),
        "nothing is written to disk"
    );
}
