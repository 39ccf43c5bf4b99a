//! CLUSTER KEYSLOT | MYID | INFO | SLOTS | SHARDS | NODES: the partition map in the forms Redis
//! Cluster clients read, so `redis-cli -c` and `redis-benchmark --cluster` find every slot's
//! primary.
//!
//! Redis Cluster has one role per node, and Partita has one per partition copy, so the forms
//! differ in what they can say:
//! - SLOTS and SHARDS are per partition: its slot range, primary and replicas.
//! - NODES lists every node as a master that owns the slots of the partitions it leads. There,
//!   a Redis replica serves one master's slots, which a Partita node that follows many
//!   partitions does not match.
//!
//! A standalone node answers as Redis without cluster support does. A node that has not been
//! given a map yet reports `cluster_state:fail` and no slots.

use super::{Ctx, Flow};
use crate::server::resp::codec::{Reply, encode, write_bulk, write_error, write_integer};
use crate::slot::{SLOTS, key_slot};
use crate::topology::Map;
use bytes::Bytes;

/// Runs CLUSTER.
pub fn run(args: &[Bytes], ctx: &mut Ctx<'_>) -> Flow {
    let sub = args[1].to_ascii_lowercase();
    if ctx.cluster.standalone {
        write_error(ctx.out, "ERR This instance has cluster support disabled");
        return Flow::Continue;
    }
    let map = ctx.cluster.topology.get();
    let here = ctx.cluster.node.node_id.clone();
    match (sub.as_slice(), args.len()) {
        (b"keyslot", 3) => write_integer(ctx.out, i64::from(key_slot(&args[2]))),
        (b"myid", 2) => write_bulk(ctx.out, &here),
        (b"info", 2) => write_bulk(ctx.out, info(map.as_deref(), &here)),
        (b"slots", 2) => encode(&slots(map.as_deref()), ctx.out),
        (b"shards", 2) => encode(&shards(map.as_deref()), ctx.out),
        (b"nodes", 2) => write_bulk(ctx.out, nodes(map.as_deref(), &here)),
        (b"keyslot" | b"myid" | b"info" | b"slots" | b"shards" | b"nodes", _) => write_error(
            ctx.out,
            format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                String::from_utf8_lossy(&sub)
            ),
        ),
        _ => write_error(
            ctx.out,
            format!(
                "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(&args[1])
            ),
        ),
    }
    Flow::Continue
}

/// `host` and `port` of a `host:port` address.
fn split(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(0),
        ),
        None => (addr.to_string(), 0),
    }
}

fn bulk(s: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(s.into()))
}

/// The slots whose partition has a primary.
fn served(map: &Map) -> u32 {
    map.topology()
        .routes
        .iter()
        .filter(|r| !r.primary.is_empty())
        .map(|r| r.slot_end - r.slot_start + 1)
        .sum()
}

fn info(map: Option<&Map>, here: &str) -> String {
    let (state, assigned, known, size, epoch, mine) = match map {
        None => ("fail", 0, 1, 0, 0, 0),
        Some(m) => {
            let routes = &m.topology().routes;
            let leaders: std::collections::BTreeSet<&str> = routes
                .iter()
                .filter(|r| !r.primary.is_empty())
                .map(|r| r.primary.as_str())
                .collect();
            let epoch = routes.iter().map(|r| r.epoch).max().unwrap_or(0);
            let mine = routes
                .iter()
                .filter(|r| r.primary == here)
                .map(|r| r.epoch)
                .max()
                .unwrap_or(0);
            let assigned = served(m);
            let state = if assigned == SLOTS { "ok" } else { "fail" };
            (
                state,
                assigned,
                m.topology().nodes.len(),
                leaders.len(),
                epoch,
                mine,
            )
        }
    };
    format!(
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
         cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
         cluster_known_nodes:{known}\r\ncluster_size:{size}\r\ncluster_current_epoch:{epoch}\r\n\
         cluster_my_epoch:{mine}\r\ncluster_topology_version:{}\r\n",
        map.map_or(0, Map::version)
    )
}

/// One `[host, port, id]` entry of CLUSTER SLOTS.
fn slot_node(map: &Map, id: &str) -> Option<Reply> {
    let n = map.node(id)?;
    let (host, port) = split(&n.resp_addr);
    Some(Reply::Array(vec![
        bulk(host),
        Reply::Integer(port),
        bulk(id),
    ]))
}

fn slots(map: Option<&Map>) -> Reply {
    let Some(map) = map else {
        return Reply::Array(Vec::new());
    };
    let entries = map
        .topology()
        .routes
        .iter()
        .filter(|r| !r.primary.is_empty())
        .filter_map(|r| {
            let mut entry = vec![
                Reply::Integer(i64::from(r.slot_start)),
                Reply::Integer(i64::from(r.slot_end)),
                slot_node(map, &r.primary)?,
            ];
            entry.extend(r.replicas.iter().filter_map(|id| slot_node(map, id)));
            Some(Reply::Array(entry))
        })
        .collect();
    Reply::Array(entries)
}

fn shards(map: Option<&Map>) -> Reply {
    let Some(map) = map else {
        return Reply::Array(Vec::new());
    };
    let node = |id: &str, role: &str| -> Option<Reply> {
        let n = map.node(id)?;
        let (host, port) = split(&n.resp_addr);
        Some(Reply::Array(vec![
            bulk("id"),
            bulk(id),
            bulk("port"),
            Reply::Integer(port),
            bulk("ip"),
            bulk(host.clone()),
            bulk("endpoint"),
            bulk(host),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Reply::Integer(0),
            bulk("health"),
            bulk("online"),
        ]))
    };
    let shards = map
        .topology()
        .routes
        .iter()
        .map(|r| {
            let nodes = std::iter::once(node(&r.primary, "master"))
                .chain(r.replicas.iter().map(|id| node(id, "replica")))
                .flatten()
                .collect();
            Reply::Array(vec![
                bulk("slots"),
                Reply::Array(vec![
                    Reply::Integer(i64::from(r.slot_start)),
                    Reply::Integer(i64::from(r.slot_end)),
                ]),
                bulk("nodes"),
                Reply::Array(nodes),
            ])
        })
        .collect();
    Reply::Array(shards)
}

fn nodes(map: Option<&Map>, here: &str) -> String {
    let Some(map) = map else {
        return format!("{here} :0@0 myself,master - 0 0 0 connected\n");
    };
    let mut out = String::new();
    for n in &map.topology().nodes {
        let led: Vec<_> = map
            .topology()
            .routes
            .iter()
            .filter(|r| r.primary == n.node_id)
            .collect();
        let epoch = led.iter().map(|r| r.epoch).max().unwrap_or(0);
        let (host, port) = split(&n.resp_addr);
        let (_, bus) = split(&n.grpc_addr);
        let flags = if n.node_id == here {
            "myself,master"
        } else {
            "master"
        };
        out.push_str(&format!(
            "{} {host}:{port}@{bus} {flags} - 0 0 {epoch} connected",
            n.node_id
        ));
        for r in led {
            if r.slot_start == r.slot_end {
                out.push_str(&format!(" {}", r.slot_start));
            } else {
                out.push_str(&format!(" {}-{}", r.slot_start, r.slot_end));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::fixture::two_partitions;

    fn map() -> Map {
        two_partitions("127.0.0.2", &["a", "b"], "b", (3, 5), 4)
    }

    #[test]
    fn slots_name_each_partitions_primary_first_then_its_replicas() {
        let Reply::Array(entries) = slots(Some(&map())) else {
            panic!("not an array")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1],
            Reply::Array(vec![
                Reply::Integer(8192),
                Reply::Integer(16383),
                Reply::Array(vec![bulk("127.0.0.2"), Reply::Integer(6002), bulk("b")]),
                Reply::Array(vec![bulk("127.0.0.2"), Reply::Integer(6001), bulk("a")]),
            ])
        );
    }

    #[test]
    fn nodes_lists_every_node_as_master_of_what_it_leads() {
        let text = nodes(Some(&map()), "b");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "a 127.0.0.2:6001@7001 master - 0 0 3 connected 0-8191",
                "b 127.0.0.2:6002@7002 myself,master - 0 0 5 connected 8192-16383",
            ]
        );
    }

    #[test]
    fn info_is_ok_only_when_every_slot_has_a_primary() {
        let text = info(Some(&map()), "a");
        assert!(text.contains("cluster_state:ok\r\n"), "{text}");
        assert!(text.contains("cluster_slots_assigned:16384\r\n"));
        assert!(text.contains("cluster_size:2\r\ncluster_current_epoch:5\r\ncluster_my_epoch:3"));
        let none = info(None, "a");
        assert!(none.contains("cluster_state:fail\r\ncluster_slots_assigned:0"));
    }

    #[test]
    fn shards_are_partitions_with_their_slots_and_copies() {
        let Reply::Array(shards) = shards(Some(&map())) else {
            panic!("not an array")
        };
        let Reply::Array(first) = &shards[0] else {
            panic!("not an array")
        };
        assert_eq!(first[0], bulk("slots"));
        assert_eq!(
            first[1],
            Reply::Array(vec![Reply::Integer(0), Reply::Integer(8191)])
        );
        let Reply::Array(nodes) = &first[3] else {
            panic!("not an array")
        };
        assert_eq!(nodes.len(), 2);
    }
}
