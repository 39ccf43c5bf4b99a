//! Three real nodes with partitions spread over all three and a pushed partition map, reached
//! with the tools users already have:
//! - `redis-cli -c` follows `-MOVED` to read and write keys of every partition through any node;
//! - plain `redis-cli` does the same through any node of a proxying cluster (the default);
//! - `redis-benchmark --cluster` finds every slot's primary from CLUSTER NODES and runs clean;
//! - after a manual promote and a new map, a `-c` client recovers by itself.
//!
//! Every key is checked on its partition's primary directly, so "it worked" means "it landed
//! where the map says".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, with a message saying what broke"
)]

mod common;

use common::cluster::{Member, ids, wait_in_sync_on};
use common::{Reply, tool, wait_until};
use partita_node::client::{Client, Config};
use partita_node::proto::{
    GetRequest, PartitionRoute, PutRequest, ReadOptions, ReadPreference, Topology,
};
use partita_node::slot::{SlotMap, key_slot};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const PARTITIONS: u32 = 6;
const DEADLINE: Duration = Duration::from_secs(60);

/// Nodes a, b, c; partition p led by node p % 3 with the other two as replicas, epoch 1.
struct Three {
    members: Vec<Member>,
    slots: SlotMap,
    primaries: Vec<usize>,
    version: u64,
    _dir: tempfile::TempDir,
}

impl Three {
    fn start(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["--partitions", "6"];
        all.extend_from_slice(flags);
        let members: Vec<Member> = ["a", "b", "c"]
            .iter()
            .map(|id| Member::start(dir.path(), id, &all))
            .collect();
        let mut three = Self {
            members,
            slots: SlotMap::new(PARTITIONS).unwrap(),
            primaries: (0..PARTITIONS as usize).map(|p| p % 3).collect(),
            version: 0,
            _dir: dir,
        };
        for p in 0..PARTITIONS {
            three.lead(p, three.primaries[p as usize], 1);
        }
        three.push();
        three
    }

    fn others(&self, n: usize) -> Vec<usize> {
        (0..3).filter(|i| *i != n).collect()
    }

    /// Makes node `n` primary of partition `p` at `epoch`, the others its replicas.
    fn lead(&mut self, p: u32, n: usize, epoch: u64) {
        self.primaries[p as usize] = n;
        let replicas: Vec<&str> = self
            .others(n)
            .iter()
            .map(|i| self.members[*i].id.as_str())
            .collect();
        self.members[n]
            .admin()
            .assign_primary(ids(&[p]), epoch, &replicas, 3)
            .unwrap();
        for r in self.others(n) {
            self.members[r]
                .admin()
                .assign_replica(ids(&[p]), epoch, self.members[n].address())
                .unwrap();
        }
    }

    /// Moves the lead of partition `p` from its primary to node `to` at `epoch`, as a manual
    /// switchover does: wait until the replicas are in sync, promote `to`, make the others
    /// follow it. The map is not pushed.
    fn move_lead(&self, p: u32, to: usize, epoch: u64) {
        let from = self.primaries[p as usize];
        let ids_of: Vec<&str> = self.members.iter().map(|m| m.id.as_str()).collect();
        let of = |n: usize| -> Vec<&str> { self.others(n).iter().map(|i| ids_of[*i]).collect() };
        wait_in_sync_on(&self.members[from], Some(&[p]), &of(from), DEADLINE);
        self.members[to]
            .admin()
            .promote(ids(&[p]), epoch, &of(to), 3)
            .unwrap();
        for n in self.others(to) {
            self.members[n]
                .admin()
                .follow(ids(&[p]), epoch, self.members[to].address())
                .unwrap();
        }
    }

    /// Pushes the next version of the map to every node.
    fn push(&mut self) {
        self.version += 1;
        self.push_to(&[0, 1, 2]);
    }

    /// Pushes the current version of the map to the nodes `to`.
    fn push_to(&self, to: &[usize]) {
        let routes = (0..PARTITIONS)
            .map(|p| {
                let (start, end) = self.slots.slot_range(p).unwrap();
                let n = self.primaries[p as usize];
                PartitionRoute {
                    partition: p,
                    slot_start: start.into(),
                    slot_end: end.into(),
                    primary: self.members[n].id.clone(),
                    replicas: self
                        .others(n)
                        .iter()
                        .map(|i| self.members[*i].id.clone())
                        .collect(),
                    epoch: 1,
                }
            })
            .collect();
        let topology = Topology {
            version: self.version,
            partitions: PARTITIONS,
            nodes: self.members.iter().map(Member::address).collect(),
            routes,
        };
        for n in to {
            assert_eq!(
                self.members[*n]
                    .admin()
                    .set_topology(topology.clone())
                    .unwrap(),
                self.version
            );
        }
    }

    /// The member leading `key`'s partition.
    fn primary_of(&self, key: &str) -> &Member {
        let p = self.slots.partition_of_slot(key_slot(key.as_bytes()));
        &self.members[self.primaries[p as usize]]
    }

    fn port(&self, n: usize) -> String {
        self.members[n].node().resp.port().to_string()
    }
}

/// Runs redis-cli with `args`, feeding `input` (one command per line) on stdin; its replies,
/// without the "-> Redirected to slot" notes `-c` prints.
fn redis_cli(port: &str, args: &[&str], input: &str) -> String {
    let mut child = Command::new(tool("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-> Redirected to slot"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Keys of every partition: `per` keys per partition, named after `prefix`.
fn keys(three: &Three, prefix: &str, per: usize) -> Vec<String> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    let mut i = 0;
    while found.iter().any(|f| f.len() < per) {
        let key = format!("{prefix}:{i}");
        let p = three.slots.partition_of_slot(key_slot(key.as_bytes())) as usize;
        if found[p].len() < per {
            found[p].push(key);
        }
        i += 1;
    }
    found.into_iter().flatten().collect()
}

/// Each key holds `value(key)` on its partition's primary, read directly.
fn assert_on_primaries(three: &Three, keys: &[String], value: impl Fn(&str) -> String) {
    for key in keys {
        let primary = three.primary_of(key);
        let got = primary.client().cmd(&["GET", key]);
        assert_eq!(
            got,
            Reply::Bulk(Some(value(key).into_bytes())),
            "{key} on its primary {}",
            primary.id
        );
    }
}

/// Through each node in turn, redis-cli (with `args`) sets every key, then reads them all back
/// through another node; each key must be on its partition's primary.
fn every_key_through_every_node(three: &Three, keys: &[String], args: &[&str]) {
    for n in 0..3 {
        let value = |k: &str| format!("{k}-via-{n}");
        let input: String = keys
            .iter()
            .map(|k| format!("SET {k} {}\n", value(k)))
            .collect();
        let out = redis_cli(&three.port(n), args, &input);
        assert_eq!(
            out.lines().filter(|l| *l == "OK").count(),
            keys.len(),
            "{out}"
        );
        assert_on_primaries(three, keys, value);
        let input: String = keys.iter().map(|k| format!("GET {k}\n")).collect();
        let out = redis_cli(&three.port((n + 1) % 3), args, &input);
        let want: Vec<String> = keys.iter().map(|k| value(k)).collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), want);
    }
}

#[test]
fn redis_cli_in_cluster_mode_writes_and_reads_every_partition_through_every_node() {
    let three = Three::start(&["--redirect", "moved"]);
    every_key_through_every_node(&three, &keys(&three, "cli", 4), &["-c"]);
}

#[test]
fn moved_mode_redirects_refuses_cross_slot_and_lets_readonly_connections_read_replicas() {
    let three = Three::start(&["--redirect", "moved"]);
    let key = keys(&three, "m", 1).remove(0);
    let primary = three.primary_of(&key);
    let other = three.members.iter().find(|m| m.id != primary.id).unwrap();
    let mut c = other.client();
    let slot = key_slot(key.as_bytes());
    assert_eq!(
        c.cmd(&["SET", &key, "v"]),
        Reply::Error(format!("MOVED {slot} {}", primary.node().resp))
    );
    assert_eq!(
        primary.client().cmd(&["SET", &key, "v"]),
        Reply::Simple("OK".into())
    );
    let Reply::Error(e) = c.cmd(&["MSET", "{a}x", "1", "{b}y", "2"]) else {
        panic!("MSET across slots was accepted")
    };
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    assert_eq!(c.cmd(&["READONLY"]), Reply::Simple("OK".into()));
    wait_until(DEADLINE, "the replica to apply the write", || {
        c.cmd(&["GET", &key]) == Reply::Bulk(Some(b"v".to_vec()))
    });
    let Reply::Error(e) = c.cmd(&["SET", &key, "w"]) else {
        panic!("a READONLY connection wrote on a replica")
    };
    assert!(e.starts_with("MOVED"), "{e}");
    assert_eq!(
        c.cmd(&["CLUSTER", "KEYSLOT", &key]),
        Reply::Int(i64::from(slot))
    );
    assert_eq!(
        c.cmd(&["CLUSTER", "MYID"]),
        Reply::Bulk(Some(other.id.clone().into_bytes()))
    );
    let info = c.cmd(&["CLUSTER", "INFO"]).text();
    assert!(
        info.contains("cluster_state:ok") && info.contains("cluster_topology_version:1"),
        "{info}"
    );
}

#[test]
fn plain_redis_cli_reaches_every_key_through_any_node_of_a_proxying_cluster() {
    let three = Three::start(&[]);
    every_key_through_every_node(&three, &keys(&three, "proxy", 3), &[]);
}

#[test]
fn redis_benchmark_in_cluster_mode_completes_without_errors() {
    // MOVED mode: a wrong CLUSTER NODES would show up as errors, not be hidden by the proxy.
    let three = Three::start(&["--redirect", "moved"]);
    let out = Command::new(tool("redis-benchmark"))
        .args(["--cluster", "-h", "127.0.0.1", "-p", &three.port(1)])
        .args([
            "-t", "set,get", "-n", "6000", "-r", "1000", "-c", "6", "-d", "32",
        ])
        .args(["--csv"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark --cluster: {out:?}");
    assert!(
        !stdout.contains("Error") && !stderr.contains("Error") && !stdout.contains("MOVED"),
        "{stdout}\n{stderr}"
    );
    for test in ["\"SET\"", "\"GET\""] {
        assert!(
            stdout.lines().any(|l| l.starts_with(test)),
            "no {test} result:\n{stdout}\n{stderr}"
        );
    }
    // The keys it wrote are on the partitions' primaries, spread over all three nodes (DBSIZE
    // counts the partitions a node leads).
    for m in &three.members {
        let Reply::Int(keys) = m.client().cmd(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        assert!(keys > 0, "{} holds no keys", m.id);
    }
}

#[test]
fn a_cluster_client_recovers_by_itself_after_a_promote_and_a_new_map() {
    let mut three = Three::start(&["--redirect", "moved"]);
    let keys = keys(&three, "move", 2);
    let input: String = keys.iter().map(|k| format!("SET {k} before\n")).collect();
    redis_cli(&three.port(0), &["-c"], &input);
    // Partition 0 moves from a to b at epoch 2.
    three.move_lead(0, 1, 2);
    three.primaries[0] = 1;
    three.push();
    // A client that learned the old map from node c follows the redirects to the new primary.
    let input: String = keys.iter().map(|k| format!("SET {k} after\n")).collect();
    let out = redis_cli(&three.port(2), &["-c"], &input);
    assert_eq!(
        out.lines().filter(|l| *l == "OK").count(),
        keys.len(),
        "{out}"
    );
    assert_on_primaries(&three, &keys, |_| "after".to_string());
}

/// A runtime for the async client; the cluster helpers block on their own runtimes, so they are
/// called outside it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    }
}

#[test]
fn the_rust_client_writes_ten_thousand_keys_each_straight_to_its_partitions_primary() {
    let three = Three::start(&[]);
    let seed = three.members[2].node().grpc.to_string();
    let rt = runtime();
    let client = Arc::new(rt.block_on(Client::connect(Config::new([seed]))).unwrap());
    assert_eq!(client.topology().unwrap().version, 1);
    let keys: Vec<String> = (0..10_000).map(|i| format!("rust:{i}")).collect();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in keys.chunks(625) {
            let client = Arc::clone(&client);
            let chunk = chunk.to_vec();
            tasks.spawn(async move {
                for key in chunk {
                    let r = client.put(put(&key, &format!("{key}!"))).await.unwrap();
                    assert!(r.applied, "{key}");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    // Every request went to the right node the first time.
    assert_eq!(client.redirects(), 0);
    let sample: Vec<String> = keys.iter().step_by(97).cloned().collect();
    assert_on_primaries(&three, &sample, |k| format!("{k}!"));
    // Reads that allow any copy are served by a replica the map names.
    let key = &keys[0];
    let got = rt
        .block_on(client.get(GetRequest {
            key: key.as_bytes().to_vec(),
            read: Some(ReadOptions {
                preference: ReadPreference::Any as i32,
                max_lag_ms: 0,
            }),
        }))
        .unwrap();
    let served_by = got.info.unwrap().node_id;
    assert_ne!(served_by, three.primary_of(key).id, "a replica served it");
}

#[test]
fn a_rust_client_holding_an_old_map_recovers_within_two_redirects() {
    let mut three = Three::start(&[]);
    let seed = three.members[0].node().grpc.to_string();
    let rt = runtime();
    let client = rt.block_on(Client::connect(Config::new([seed]))).unwrap();
    let key = keys(&three, "old", 1).remove(0);
    rt.block_on(client.put(put(&key, "before"))).unwrap();
    let p = three.slots.partition_of_slot(key_slot(key.as_bytes()));
    let to = (three.primaries[p as usize] + 1) % 3;
    three.move_lead(p, to, 2);
    three.primaries[p as usize] = to;
    three.push();

    let before = client.redirects();
    let r = rt.block_on(client.put(put(&key, "after"))).unwrap();
    assert!(r.applied);
    let followed = client.redirects() - before;
    assert!((1..=2).contains(&followed), "{followed} redirects");
    assert_eq!(client.topology().unwrap().version, 2, "it read the new map");
    assert_on_primaries(&three, std::slice::from_ref(&key), |_| "after".into());
    // The next request goes straight to the new primary.
    rt.block_on(client.put(put(&key, "again"))).unwrap();
    assert_eq!(client.redirects() - before, followed);
}

/// Runs the `partita` CLI against `addr`; its exit success and stdout.
fn partita(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_partita"))
        .args(["--addr", addr])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_partita_cli_reaches_every_partition_through_any_node() {
    let three = Three::start(&["--redirect", "moved"]);
    let keys = keys(&three, "cli-grpc", 1);
    let through = three.members[0].node().grpc.to_string();
    for key in &keys {
        let (ok, out) = partita(&through, &["put", key, &format!("{key}=v")]);
        assert!(ok && out.starts_with("OK partition="), "{out}");
    }
    assert_on_primaries(&three, &keys, |k| format!("{k}=v"));
    let other = three.members[1].node().grpc.to_string();
    for key in &keys {
        assert_eq!(partita(&other, &["get", key]), (true, format!("{key}=v\n")));
    }
    let (ok, out) = partita(&other, &["scan", "--match", "cli-grpc:*"]);
    assert!(ok);
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "scan visits every partition's primary");
}

#[test]
fn a_proxied_command_makes_one_hop_at_most_even_when_maps_disagree() {
    let mut three = Three::start(&[]);
    let key = keys(&three, "hop", 1).remove(0);
    let p = three.slots.partition_of_slot(key_slot(key.as_bytes())) as usize;
    let (a, b) = (three.primaries[p], (three.primaries[p] + 1) % 3);
    // Node a is told b leads the partition, and b is told a does.
    three.version += 1;
    three.primaries[p] = b;
    three.push_to(&[a]);
    three.primaries[p] = a;
    three.push_to(&[b]);
    let reply = three.members[a].client().cmd(&["SET", &key, "v"]);
    let slot = key_slot(key.as_bytes());
    assert_eq!(
        reply,
        Reply::Error(format!("MOVED {slot} {}", three.members[a].node().resp)),
        "b answered the proxied command with MOVED instead of sending it back"
    );
}

#[test]
fn grpc_calls_to_the_wrong_node_are_refused_with_where_to_go() {
    use partita_node::proto::kv_client::KvClient;
    use partita_node::proto::{ErrorCode, ErrorInfo};
    use prost::Message;
    let three = Three::start(&[]);
    let key = keys(&three, "grpc", 1).remove(0);
    let primary = three.primary_of(&key);
    let other = three.members.iter().find(|m| m.id != primary.id).unwrap();
    let rt = runtime();
    let status = rt
        .block_on(async {
            let mut kv = KvClient::connect(format!("http://{}", other.node().grpc))
                .await
                .unwrap();
            kv.put(put(&key, "v")).await
        })
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let info = ErrorInfo::decode(status.details()).unwrap();
    assert_eq!(info.code, ErrorCode::Moved as i32);
    assert_eq!(info.primary.unwrap(), primary.address());
    assert_eq!(info.slot, u32::from(key_slot(key.as_bytes())));
    assert_eq!(info.topology_version, 1);
}

#[test]
fn a_proxied_write_keeps_the_clients_write_concern_and_wait_never_overstates() {
    let three = Three::start(&[]);
    let key = keys(&three, "wc", 1).remove(0);
    let p = three.slots.partition_of_slot(key_slot(key.as_bytes())) as usize;
    let primary = three.primaries[p];
    let (via, paused) = (three.others(primary)[0], three.others(primary)[1]);
    let ids_of: Vec<String> = three.members.iter().map(|m| m.id.clone()).collect();
    wait_in_sync_on(
        &three.members[primary],
        Some(&[p as u32]),
        &[&ids_of[via], &ids_of[paused]],
        DEADLINE,
    );
    three.members[paused].pause();
    let mut c = three.members[via].client();
    assert_eq!(
        c.cmd(&["WRITECONCERN", "ALL", "TIMEOUT", "300"]),
        Reply::Simple("OK".into())
    );
    let Reply::Error(e) = c.cmd(&["SET", &key, "v"]) else {
        panic!("a proxied write met ALL with a copy paused")
    };
    assert!(e.starts_with("TIMEOUT"), "{e}");
    let mut fresh = three.members[via].client();
    assert_eq!(fresh.cmd(&["SET", &key, "w"]), Reply::Simple("OK".into()));
    assert_eq!(
        fresh.cmd(&["WAIT", "1", "200"]),
        Reply::Int(0),
        "WAIT cannot vouch for a proxied write"
    );
    three.members[paused].resume();
}

#[test]
fn a_promote_not_yet_in_the_map_is_honoured_by_routing() {
    let three = Three::start(&["--redirect", "moved"]);
    let key = keys(&three, "late", 1).remove(0);
    let p = three.slots.partition_of_slot(key_slot(key.as_bytes()));
    let old = three.primaries[p as usize];
    let new = (old + 1) % 3;
    three.move_lead(p, new, 2);
    // No new map was pushed: the map still names the old primary at epoch 1.
    assert_eq!(
        three.members[new].client().cmd(&["SET", &key, "v"]),
        Reply::Simple("OK".into()),
        "the new primary serves its partition"
    );
    let slot = key_slot(key.as_bytes());
    assert_eq!(
        three.members[old].client().cmd(&["SET", &key, "w"]),
        Reply::Error(format!("MOVED {slot} {}", three.members[new].node().resp)),
        "the old primary sends clients to the new one"
    );
    let seed = three.members[old].node().grpc.to_string();
    let rt = runtime();
    let client = rt.block_on(Client::connect(Config::new([seed]))).unwrap();
    assert!(rt.block_on(client.put(put(&key, "x"))).unwrap().applied);
}

#[test]
fn without_a_map_the_client_follows_the_roles_from_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let a = Member::start(dir.path(), "a", &["--partitions", "2"]);
    let b = Member::start(dir.path(), "b", &["--partitions", "2"]);
    common::cluster::form(&a, &[&b], 1);
    // Through the replica, with no map pushed anywhere.
    let through = b.node().grpc.to_string();
    let (ok, out) = partita(&through, &["put", "nomap", "v"]);
    assert!(ok && out.starts_with("OK partition="), "{out}");
    assert_eq!(
        partita(&through, &["get", "nomap"]),
        (true, "v\n".to_string())
    );
}

#[test]
fn keyless_commands_cover_only_the_partitions_a_node_leads() {
    let three = Three::start(&["--redirect", "moved"]);
    let keys = keys(&three, "own", 3);
    for key in &keys {
        assert_eq!(
            three.primary_of(key).client().cmd(&["SET", key, "v"]),
            Reply::Simple("OK".into())
        );
    }
    // Every node holds a copy of every partition, yet the counts add up to the keys once.
    let mut total = 0;
    let mut listed = Vec::new();
    for m in &three.members {
        let mut c = m.client();
        let Reply::Int(n) = c.cmd(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        total += n;
        let Reply::Array(Some(found)) = c.cmd(&["KEYS", "own:*"]) else {
            panic!("KEYS")
        };
        listed.extend(found.iter().map(Reply::text));
    }
    assert_eq!(total, keys.len() as i64);
    listed.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed, want);
    // FLUSHALL on one node clears what it leads, and only that.
    let a = &three.members[0];
    assert_eq!(a.client().cmd(&["FLUSHALL"]), Reply::Simple("OK".into()));
    for key in &keys {
        let got = three.primary_of(key).client().cmd(&["GET", key]);
        if three.primary_of(key).id == a.id {
            assert_eq!(got, Reply::Bulk(None), "{key}");
        } else {
            assert_eq!(got, Reply::Bulk(Some(b"v".to_vec())), "{key}");
        }
    }
}

#[test]
fn a_fenced_copy_newer_than_the_map_serves_nothing() {
    let three = Three::start(&["--redirect", "moved"]);
    let key = keys(&three, "fenced", 1).remove(0);
    let p = three.slots.partition_of_slot(key_slot(key.as_bytes()));
    let primary = &three.members[three.primaries[p as usize]];
    assert_eq!(
        primary.client().cmd(&["SET", &key, "v"]),
        Reply::Simple("OK".into())
    );
    // Fenced at epoch 2, as at the start of a switchover; the map still says epoch 1.
    primary.admin().fence(ids(&[p]), 2).unwrap();
    let mut c = primary.client();
    for cmd in [vec!["GET", key.as_str()], vec!["SET", key.as_str(), "w"]] {
        let Reply::Error(e) = c.cmd(&cmd) else {
            panic!("a fenced copy answered {cmd:?}")
        };
        assert!(e.starts_with("CLUSTERDOWN"), "{cmd:?}: {e}");
    }
}

#[test]
fn whole_data_set_commands_are_refused_where_they_would_silently_cover_one_node() {
    let three = Three::start(&[]);
    let mut plain = three.members[0].client();
    for cmd in [
        vec!["DBSIZE"],
        vec!["KEYS", "*"],
        vec!["SCAN", "0"],
        vec!["FLUSHALL"],
    ] {
        let Reply::Error(e) = plain.cmd(&cmd) else {
            panic!("{cmd:?} answered for one node of a proxying cluster")
        };
        assert!(e.contains("only the partitions this node leads"), "{e}");
    }
    // A cluster-aware (READONLY) connection gets the node's own answer.
    let mut aware = three.members[0].client();
    assert_eq!(aware.cmd(&["READONLY"]), Reply::Simple("OK".into()));
    assert!(matches!(aware.cmd(&["DBSIZE"]), Reply::Int(_)));
}
