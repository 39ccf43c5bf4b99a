//! `partita admin topology get|set` as an operator runs them: the real CLI against real
//! `partita-node` processes on loopback. A node without `--standalone` takes a pushed map, serves
//! it back in the file format (so `get > f.json; set f.json` round-trips), refuses older,
//! conflicting and inconsistent maps with the node's reason, and keeps the map across a restart.
//! A `--standalone` node takes none. Every assertion reads the CLI's stdout, stderr and exit
//! code; every process is bounded by a deadline and only this test's own children are killed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::Node;
use common::cluster::start_node;
use partita_node::slot::SlotMap;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a `partita` run may take: its own call timeout is 5 s.
const CLI_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a node may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
const PARTITIONS: u32 = 4;

/// Runs `partita admin --addr ADDR ARGS...`, killing it (this child only) if it outlives
/// [`CLI_DEADLINE`].
fn admin(addr: &str, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_partita"))
        .args(["admin", "--addr", addr])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn partita");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let until = Instant::now() + CLI_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("partita admin {args:?} did not finish within {CLI_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a subcommand that must succeed silently on stderr; its stdout.
fn admin_ok(node: &Node, args: &[&str]) -> String {
    let out = admin(&node.grpc.to_string(), args);
    assert!(
        out.status.success(),
        "partita admin {args:?} failed: {}",
        text(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs a subcommand that must fail with exit code 1 and one `error: ` line; that line.
fn admin_err(addr: &str, args: &[&str]) -> String {
    let out = admin(addr, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "partita admin {args:?} should fail: stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// `topology get`, parsed.
fn get(node: &Node) -> Value {
    let out = admin_ok(node, &["topology", "get"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("topology get is not JSON ({e}): {out}"))
}

/// `topology set FILE` of `map` written to `dir/name`; the output.
fn set(node: &Node, dir: &Path, name: &str, map: &Value) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(map).unwrap()).unwrap();
    admin(
        &node.grpc.to_string(),
        &["topology", "set", path.to_str().unwrap()],
    )
}

/// A map of [`PARTITIONS`] partitions at `version` over `this` node and two others that do not
/// exist (well-formed addresses nothing listens on), primaries round-robin, in the file format.
fn map(version: u64, this: &Node) -> Value {
    let slots = SlotMap::new(PARTITIONS).unwrap();
    let ids = ["n1", "n2", "n3"];
    let routes: Vec<Value> = (0..PARTITIONS)
        .map(|p| {
            let (start, end) = slots.slot_range(p).unwrap();
            let i = p as usize % 3;
            json!({
                "partition": p,
                "slot_start": start,
                "slot_end": end,
                "primary": ids[i],
                "replicas": [ids[(i + 1) % 3], ids[(i + 2) % 3]],
                "epoch": 1 + u64::from(p),
            })
        })
        .collect();
    json!({
        "version": version,
        "partitions": PARTITIONS,
        "nodes": [
            {"node_id": "n1", "grpc_addr": this.grpc.to_string(), "resp_addr": this.resp.to_string()},
            {"node_id": "n2", "grpc_addr": "127.0.0.1:17002", "resp_addr": "127.0.0.1:16002"},
            {"node_id": "n3", "grpc_addr": "127.0.0.1:17003", "resp_addr": "127.0.0.1:16003"},
        ],
        "routes": routes,
    })
}

/// A non-standalone node `n1` with [`PARTITIONS`] partitions, its data in `dir`.
fn start(dir: &Path) -> Node {
    start_node(dir, "n1", &["--partitions", &PARTITIONS.to_string()])
}

#[test]
fn a_pushed_map_is_served_in_the_file_format_and_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("n1");
    let node = start(&data);

    // Before any push: version 0, the node naming only itself and leading nothing.
    let before = get(&node);
    assert_eq!(before["version"], 0, "{before}");
    assert_eq!(before["partitions"], PARTITIONS, "{before}");
    assert_eq!(
        before["nodes"],
        json!([{"node_id": "n1", "grpc_addr": node.grpc.to_string(), "resp_addr": node.resp.to_string()}])
    );
    let routes = before["routes"].as_array().unwrap();
    assert_eq!(routes.len(), PARTITIONS as usize, "{before}");
    assert_eq!(routes[0]["slot_start"], 0, "{before}");
    assert_eq!(routes[3]["slot_end"], 16383, "{before}");
    assert!(routes.iter().all(|r| r["primary"] == ""), "{before}");
    let status = admin_ok(&node, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["topology_version"], 0);
    assert_eq!(status["standalone"], false);

    // A push prints the version held, and `get` gives back exactly what was pushed.
    let v2 = map(2, &node);
    let out = set(&node, root.path(), "v2.json", &v2);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "topology version 2\n");
    assert_eq!(get(&node), v2);
    let compact = admin_ok(&node, &["topology", "get", "--json"]);
    assert_eq!(compact.lines().count(), 1, "--json is one line: {compact}");
    assert_eq!(serde_json::from_str::<Value>(&compact).unwrap(), v2);

    let status = admin_ok(&node, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["topology_version"], 2, "{status}");
    let table = admin_ok(&node, &["status"]);
    assert!(table.contains("topology 2 "), "{table}");

    // `get > f.json; set f.json` round-trips: the same version, the same contents, a retry.
    let printed = admin_ok(&node, &["topology", "get"]);
    let file = root.path().join("got.json");
    std::fs::write(&file, &printed).unwrap();
    let again = admin_ok(
        &node,
        &["topology", "set", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap(),
        json!({"version": 2})
    );
    assert_eq!(get(&node), v2);

    // SIGTERM, a clean exit, and a start on the same data: the map is still held.
    assert!(
        node.terminate(STOP_DEADLINE),
        "n1 did not exit cleanly on SIGTERM"
    );
    let node = start(&data);
    assert_eq!(get(&node), v2, "the map did not survive a restart");
    let status = admin_ok(&node, &["status", "--json"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["topology_version"], 2, "{status}");
    // And it still guards against an older map.
    let err = text(&set(&node, root.path(), "v1.json", &map(1, &node)).stderr);
    assert!(err.contains("older than version 2"), "{err}");
}

#[test]
fn stale_conflicting_and_inconsistent_maps_are_refused_with_the_nodes_reason() {
    let root = tempfile::tempdir().unwrap();
    let node = start(&root.path().join("n1"));
    let addr = node.grpc.to_string();
    let dir = root.path();
    let v2 = map(2, &node);
    let out = set(&node, dir, "v2.json", &v2);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The identical map again is a retry, accepted.
    let out = set(&node, dir, "v2-again.json", &v2);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "topology version 2\n");

    // Each refusal is one line: the node's code, its reason, the version it holds, the gRPC
    // code; and exit status 1.
    let refused = |name: &str, m: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, m.to_string()).unwrap();
        let err = admin_err(&addr, &["topology", "set", path.to_str().unwrap()]);
        assert!(err.starts_with("error: BAD_TOPOLOGY: "), "{err}");
        assert!(err.contains("topology version 2"), "{err}");
        assert!(err.contains("grpc FAILED_PRECONDITION"), "{err}");
        err
    };

    let err = refused("v1.json", &map(1, &node));
    assert!(
        err.contains("version 1 is older than version 2 held by this node"),
        "{err}"
    );

    let mut other = v2.clone();
    other["routes"][0]["primary"] = json!("n2");
    other["routes"][0]["replicas"] = json!(["n1", "n3"]);
    let err = refused("v2-other.json", &other);
    assert!(
        err.contains("version 2 is already held with other contents"),
        "{err}"
    );

    let mut overlap = map(3, &node);
    overlap["routes"][1]["slot_start"] = json!(4000);
    let err = refused("overlap.json", &overlap);
    assert!(
        err.contains("slot ranges overlap: slot 4000 is in partitions 0 and 1"),
        "{err}"
    );

    let mut gap = map(3, &node);
    gap["routes"].as_array_mut().unwrap().pop();
    let err = refused("gap.json", &gap);
    assert!(
        err.contains("slots 12288-16383 are not covered by any route"),
        "{err}"
    );

    let mut unknown = map(3, &node);
    unknown["routes"][2]["replicas"] = json!(["n1", "n9"]);
    let err = refused("unknown.json", &unknown);
    assert!(
        err.contains("partition 2 names node n9, which is not in the map's nodes"),
        "{err}"
    );

    // A map for 8 partitions, consistent in itself, does not fit a node with 4.
    let slots = SlotMap::new(8).unwrap();
    let mut eight = map(3, &node);
    eight["partitions"] = json!(8);
    eight["routes"] = (0..8u32)
        .map(|p| {
            let (start, end) = slots.slot_range(p).unwrap();
            json!({"partition": p, "slot_start": start, "slot_end": end, "primary": "n1"})
        })
        .collect();
    let err = refused("eight.json", &eight);
    assert!(
        err.contains("the map is for 8 partitions, and this node has 4"),
        "{err}"
    );

    // None of them changed what the node holds.
    assert_eq!(get(&node), v2);
}

#[test]
fn a_standalone_node_refuses_a_map() {
    let root = tempfile::tempdir().unwrap();
    let node = common::start(
        &root.path().join("solo"),
        &["--partitions", &PARTITIONS.to_string()],
    );
    let path = root.path().join("v2.json");
    std::fs::write(&path, map(2, &node).to_string()).unwrap();
    let err = admin_err(
        &node.grpc.to_string(),
        &["topology", "set", path.to_str().unwrap()],
    );
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    assert!(err.contains("this node runs --standalone"), "{err}");
    assert!(
        err.contains(&node.grpc.to_string()),
        "names the node: {err}"
    );

    // It still serves the map it derives: itself, leading every partition.
    let held = get(&node);
    assert_eq!(held["version"], 0, "{held}");
    let routes = held["routes"].as_array().unwrap();
    assert_eq!(routes.len(), PARTITIONS as usize, "{held}");
    let me = &held["nodes"][0]["node_id"];
    assert_eq!(
        held["nodes"][0]["grpc_addr"],
        node.grpc.to_string(),
        "{held}"
    );
    assert!(me.as_str().is_some_and(|id| !id.is_empty()), "{held}");
    assert!(routes.iter().all(|r| r["primary"] == *me), "{held}");
}

#[test]
fn a_bad_file_is_refused_by_name_before_any_node_is_called() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    // Nothing listens here: every error below comes from the file, not the node.
    let addr = "127.0.0.1:1";
    let good = json!({
        "version": 2, "partitions": 4,
        "nodes": [{"node_id": "a", "grpc_addr": "127.0.0.1:7001", "resp_addr": "127.0.0.1:6001"}],
        "routes": [{"partition": 0, "slot_start": 0, "slot_end": 16383, "primary": "a"}],
    });
    let refused = |name: &str, body: &[u8]| {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(body)
            .unwrap();
        let err = admin_err(addr, &["topology", "set", path.to_str().unwrap()]);
        assert!(
            !err.contains("cannot reach"),
            "the file is checked first: {err}"
        );
        assert!(err.contains(name), "names the file: {err}");
        err
    };

    let mut m = good.clone();
    m["routes"][0]["primry"] = json!("a");
    let err = refused("typo.json", m.to_string().as_bytes());
    assert!(err.contains("routes[0]: unknown field \"primry\""), "{err}");

    let mut m = good.clone();
    m.as_object_mut().unwrap().remove("version");
    let err = refused("no-version.json", m.to_string().as_bytes());
    assert!(err.contains("missing field \"version\""), "{err}");

    let mut m = good.clone();
    m["nodes"][0].as_object_mut().unwrap().remove("grpc_addr");
    let err = refused("no-addr.json", m.to_string().as_bytes());
    assert!(
        err.contains("nodes[0]: missing field \"grpc_addr\""),
        "{err}"
    );

    let err = refused("broken.json", b"{\"version\": 2,");
    assert!(err.contains("not valid JSON"), "{err}");

    // Over 16 MiB is refused by its size, unread (the file is sparse).
    let big = dir.join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let err = admin_err(addr, &["topology", "set", big.to_str().unwrap()]);
    assert!(
        err.contains("big.json: the file is 16777217 bytes; a topology file may be at most 16 MiB"),
        "{err}"
    );

    let err = admin_err(
        addr,
        &["topology", "set", dir.join("absent.json").to_str().unwrap()],
    );
    assert!(err.contains("absent.json: No such file"), "{err}");

    // A missing FILE is a usage error: exit 2.
    let out = admin(addr, &["topology", "set"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("FILE.json"),
        "{}",
        text(&out.stderr)
    );
}
