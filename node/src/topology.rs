//! The partition map: which node leads and which follow each partition, with a version. The
//! operator pushes it to every node (`Admin.SetTopology`), and so does `partita admin topology
//! set` without one. Nodes use it to route what they do not lead: to answer `-MOVED`, to proxy,
//! and to tell clients where each partition is (`KV.GetTopology`, `CLUSTER SLOTS`).
//!
//! Why a version, not just "the newest push wins": pushes from two operator replicas, or a
//! retried push, can arrive out of order. A node refuses a map older than the one it holds, so
//! an old map never undoes a failover. A push of the version it already holds is accepted only
//! when identical (a retry); the same version with other contents means two writers disagree,
//! and that is refused too.
//!
//! [`check`] and [`decide`] are pure. [`Held`] keeps the map in memory, and on disk beside the
//! partitions (checksummed, written to a temporary file, fsynced and renamed), so a restarted
//! node routes at once instead of waiting for the next push. The map is derived state: a damaged
//! file is set aside with a warning, and the next push replaces it.

use crate::Error;
use crate::proto::{NodeAddress, PartitionRoute, Topology};
use crate::slot::{SLOTS, SlotMap};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Most nodes a map may name: `spec.nodes` is at most 1000.
pub const MAX_NODES: usize = 1000;
/// Longest node id or address accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 253;
/// The file the map is kept in, in the data directory.
pub const FILE: &str = "topology.pb";
const MAGIC: &[u8; 4] = b"PTOP";

/// A checked partition map.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    topology: Topology,
    nodes: BTreeMap<String, NodeAddress>,
}

impl Map {
    /// The version.
    pub fn version(&self) -> u64 {
        self.topology.version
    }

    /// The map as the wire message, routes in partition order.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The route of partition `p`.
    pub fn route(&self, p: u32) -> Option<&PartitionRoute> {
        self.topology.routes.get(p as usize)
    }

    /// The node named `id`.
    pub fn node(&self, id: &str) -> Option<&NodeAddress> {
        self.nodes.get(id)
    }

    /// The primary of partition `p`, if it has one.
    pub fn primary(&self, p: u32) -> Option<&NodeAddress> {
        let id = &self.route(p)?.primary;
        if id.is_empty() { None } else { self.node(id) }
    }
}

/// Whether `addr` is `host:port` with a port number.
fn host_port(addr: &str) -> bool {
    addr.len() <= MAX_NAME_BYTES
        && addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
}

/// Checks a pushed map against this node's slot map: every partition routed once, each owning
/// exactly the slots this node's map gives it (so slot ranges neither overlap nor leave a slot
/// uncovered), and every node a route names described in `nodes`. The reason is for people.
pub fn check(topology: &Topology, slots: &SlotMap) -> Result<Map, String> {
    if topology.version == 0 {
        return Err("version must be at least 1 (0 means no map)".into());
    }
    if topology.partitions != slots.partitions() {
        return Err(format!(
            "the map is for {} partitions, and this node has {}",
            topology.partitions,
            slots.partitions()
        ));
    }
    if topology.nodes.is_empty() || topology.nodes.len() > MAX_NODES {
        return Err(format!(
            "the map names {} nodes; it must name between 1 and {MAX_NODES}",
            topology.nodes.len()
        ));
    }
    let mut nodes = BTreeMap::new();
    for n in &topology.nodes {
        if n.node_id.is_empty() || n.node_id.len() > MAX_NAME_BYTES {
            return Err(format!(
                "node id {:?} must be 1 to {MAX_NAME_BYTES} bytes",
                n.node_id
            ));
        }
        for (what, addr) in [("grpc_addr", &n.grpc_addr), ("resp_addr", &n.resp_addr)] {
            if !host_port(addr) {
                return Err(format!(
                    "node {}: {what} {addr:?} is not host:port",
                    n.node_id
                ));
            }
        }
        if nodes.insert(n.node_id.clone(), n.clone()).is_some() {
            return Err(format!("node {} is listed twice", n.node_id));
        }
    }
    if topology.routes.len() > SLOTS as usize {
        return Err(format!("the map has {} routes", topology.routes.len()));
    }

    // Coverage first, so overlaps and gaps are named as such.
    let mut owner: Vec<Option<u32>> = vec![None; SLOTS as usize];
    let mut seen = BTreeSet::new();
    for r in &topology.routes {
        if r.partition >= topology.partitions {
            return Err(format!(
                "a route names partition {}, and the map has {} (ids 0 to {})",
                r.partition,
                topology.partitions,
                topology.partitions - 1
            ));
        }
        if !seen.insert(r.partition) {
            return Err(format!("partition {} has two routes", r.partition));
        }
        if r.slot_start > r.slot_end || r.slot_end >= SLOTS {
            return Err(format!(
                "partition {}: slots {}-{} are not a range within 0-{}",
                r.partition,
                r.slot_start,
                r.slot_end,
                SLOTS - 1
            ));
        }
        for slot in r.slot_start..=r.slot_end {
            if let Some(other) = owner[slot as usize].replace(r.partition) {
                return Err(format!(
                    "slot ranges overlap: slot {slot} is in partitions {other} and {}",
                    r.partition
                ));
            }
        }
    }
    if let Some(slot) = owner.iter().position(Option::is_none) {
        let end = owner[slot..]
            .iter()
            .position(Option::is_some)
            .map_or(SLOTS as usize - 1, |n| slot + n - 1);
        return Err(format!("slots {slot}-{end} are not covered by any route"));
    }
    let mut routes = topology.routes.clone();
    routes.sort_by_key(|r| r.partition);
    for r in &routes {
        let (start, end) = slots
            .slot_range(r.partition)
            .ok_or_else(|| format!("partition {} is not on this node", r.partition))?;
        if (r.slot_start, r.slot_end) != (u32::from(start), u32::from(end)) {
            return Err(format!(
                "partition {} owns slots {start}-{end} with {} partitions, not {}-{}",
                r.partition,
                slots.partitions(),
                r.slot_start,
                r.slot_end
            ));
        }
        if !r.primary.is_empty() && r.epoch == 0 {
            return Err(format!(
                "partition {}: epoch must be at least 1 when it has a primary (the epoch the primary leads at)",
                r.partition
            ));
        }
        let mut copies = BTreeSet::new();
        for id in std::iter::once(&r.primary)
            .filter(|p| !p.is_empty())
            .chain(&r.replicas)
        {
            if !nodes.contains_key(id) {
                return Err(format!(
                    "partition {} names node {id}, which is not in the map's nodes",
                    r.partition
                ));
            }
            if !copies.insert(id) {
                return Err(format!(
                    "partition {} names node {id} twice: a node holds at most one copy",
                    r.partition
                ));
            }
        }
    }
    Ok(Map {
        topology: Topology {
            routes,
            ..topology.clone()
        },
        nodes,
    })
}

/// Whether to take `new` while holding `held`: `Ok(true)` to take it, `Ok(false)` for a retry of
/// the map already held, or why it is refused.
pub fn decide(held: Option<&Map>, new: &Map) -> Result<bool, String> {
    let Some(held) = held else {
        return Ok(true);
    };
    match new.version().cmp(&held.version()) {
        std::cmp::Ordering::Greater => Ok(true),
        std::cmp::Ordering::Less => Err(format!(
            "version {} is older than version {} held by this node",
            new.version(),
            held.version()
        )),
        std::cmp::Ordering::Equal if normalized(new) == normalized(held) => Ok(false),
        std::cmp::Ordering::Equal => Err(format!(
            "version {} is already held with other contents; push a higher version",
            new.version()
        )),
    }
}

/// `map`'s contents in a canonical order: nodes by id, replicas by id. The order of either
/// means nothing, so a retry that lists them otherwise is the same map.
fn normalized(map: &Map) -> Topology {
    let mut t = map.topology().clone();
    t.nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    for r in &mut t.routes {
        r.replicas.sort();
    }
    t
}

/// The map a node holds, kept on disk when the node has a data directory.
pub struct Held {
    slots: SlotMap,
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<Map>>>,
    /// Serializes pushes, so check, write and swap happen as one.
    pushing: Mutex<()>,
}

impl Held {
    /// The map kept in `dir` (none when `dir` is `None`, or when no map was pushed yet). A file
    /// that fails its checksum or its check is renamed aside with a warning.
    pub fn load(dir: Option<&Path>, slots: SlotMap) -> Result<Self, Error> {
        let path = dir.map(|d| d.join(FILE));
        let mut current = None;
        if let Some(path) = &path {
            match std::fs::read(path) {
                Ok(bytes) => match decode(&bytes).and_then(|t| check(&t, &slots)) {
                    Ok(map) => current = Some(Arc::new(map)),
                    Err(why) => {
                        let aside = path.with_extension("pb.damaged");
                        tracing::warn!(path = %path.display(), %why, "ignoring the stored topology; the next push replaces it");
                        std::fs::rename(path, &aside).map_err(|source| Error::Io {
                            context: "setting a damaged topology file aside",
                            path: aside,
                            source,
                        })?;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        context: "reading the topology",
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(Self {
            slots,
            path,
            current: RwLock::new(current),
            pushing: Mutex::new(()),
        })
    }

    /// The map held, if any.
    pub fn get(&self) -> Option<Arc<Map>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The version held; 0 when none.
    pub fn version(&self) -> u64 {
        self.get().map_or(0, |m| m.version())
    }

    /// Checks `topology`, and takes it if it is newer than the map held (stored on disk first).
    /// Returns the version held afterwards. Blocks on the file write: call it off the async
    /// workers.
    pub fn push(&self, topology: &Topology) -> Result<u64, Error> {
        let _one_at_a_time = self.pushing.lock().unwrap_or_else(|e| e.into_inner());
        let held = self.get();
        let refuse = |reason: String| Error::BadTopology {
            reason,
            held: held.as_ref().map_or(0, |m| m.version()),
        };
        let map = check(topology, &self.slots).map_err(refuse)?;
        if !decide(held.as_deref(), &map).map_err(refuse)? {
            return Ok(map.version());
        }
        if let Some(path) = &self.path {
            store(path, map.topology())?;
        }
        let version = map.version();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(map));
        Ok(version)
    }
}

fn decode(bytes: &[u8]) -> Result<Topology, String> {
    let (magic, rest) = bytes.split_at_checked(4).ok_or("too short")?;
    let (crc, body) = rest.split_at_checked(4).ok_or("too short")?;
    if magic != MAGIC {
        return Err("not a topology file".into());
    }
    let want = u32::from_le_bytes(crc.try_into().map_err(|_| "too short")?);
    if crc32c::crc32c(body) != want {
        return Err("checksum mismatch".into());
    }
    Topology::decode(body).map_err(|e| e.to_string())
}

fn store(path: &Path, topology: &Topology) -> Result<(), Error> {
    use std::io::Write;
    let body = topology.encode_to_vec();
    let mut bytes = Vec::with_capacity(body.len() + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let tmp = path.with_extension("pb.tmp");
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io("writing the topology", &tmp))?;
    file.write_all(&bytes)
        .map_err(io("writing the topology", &tmp))?;
    file.sync_all().map_err(io("syncing the topology", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("replacing the topology", path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the data directory", dir))?;
    }
    Ok(())
}

/// Maps for the tests of the modules that route by them.
#[cfg(test)]
pub(crate) mod fixture {
    use super::{Map, check};
    use crate::proto::{NodeAddress, PartitionRoute, Topology};
    use crate::slot::SlotMap;

    /// Version `version` of a map of nodes `ids` on `host` (RESP ports 6001, 6002, ..., gRPC
    /// 1000 above) and two partitions: 0 led by a with replica b at `epochs.0`, and 1 led by
    /// `primary_of_1` (none when empty) with replica a at `epochs.1`.
    pub fn two_partitions(
        host: &str,
        ids: &[&str],
        primary_of_1: &str,
        epochs: (u64, u64),
        version: u64,
    ) -> Map {
        let route =
            |partition, slots: (u32, u32), primary: &str, replica: &str, epoch| PartitionRoute {
                partition,
                slot_start: slots.0,
                slot_end: slots.1,
                primary: primary.into(),
                replicas: vec![replica.into()],
                epoch,
            };
        let t = Topology {
            version,
            partitions: 2,
            nodes: (6001..)
                .zip(ids)
                .map(|(port, id)| NodeAddress {
                    node_id: (*id).into(),
                    grpc_addr: format!("{host}:{}", port + 1000),
                    resp_addr: format!("{host}:{port}"),
                })
                .collect(),
            routes: vec![
                route(0, (0, 8191), "a", "b", epochs.0),
                route(1, (8192, 16383), primary_of_1, "a", epochs.1),
            ],
        };
        check(&t, &SlotMap::new(2).unwrap()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, port: u16) -> NodeAddress {
        NodeAddress {
            node_id: id.into(),
            grpc_addr: format!("127.0.0.1:{port}"),
            resp_addr: format!("127.0.0.1:{}", port + 1),
        }
    }

    /// A valid map of `partitions` over nodes a, b, c, primaries round-robin.
    fn map(version: u64, partitions: u32) -> Topology {
        let slots = SlotMap::new(partitions).unwrap();
        let ids = ["a", "b", "c"];
        Topology {
            version,
            partitions,
            nodes: vec![node("a", 7000), node("b", 7010), node("c", 7020)],
            routes: (0..partitions)
                .map(|p| {
                    let (s, e) = slots.slot_range(p).unwrap();
                    let i = p as usize % 3;
                    PartitionRoute {
                        partition: p,
                        slot_start: s.into(),
                        slot_end: e.into(),
                        primary: ids[i].into(),
                        replicas: vec![ids[(i + 1) % 3].into(), ids[(i + 2) % 3].into()],
                        epoch: 1,
                    }
                })
                .collect(),
        }
    }

    fn refused(t: &Topology) -> String {
        check(t, &SlotMap::new(t.partitions.max(1)).unwrap()).unwrap_err()
    }

    #[test]
    fn a_good_map_is_taken_and_routes_each_partition() {
        let m = check(&map(3, 8), &SlotMap::new(8).unwrap()).unwrap();
        assert_eq!(m.version(), 3);
        assert_eq!(m.primary(0).unwrap().node_id, "a");
        assert_eq!(m.primary(4).unwrap().node_id, "b");
        assert_eq!(m.route(7).unwrap().slot_end, 16383);
    }

    #[test]
    fn overlapping_missing_or_misplaced_slots_are_refused_by_name() {
        let mut t = map(1, 4);
        t.routes[1].slot_start -= 1;
        assert!(refused(&t).contains("slot ranges overlap: slot 4095 is in partitions 0 and 1"));

        let mut t = map(1, 4);
        t.routes[1].slot_start += 10;
        assert!(
            refused(&t).contains("slots 4096-4105 are not covered"),
            "{}",
            refused(&t)
        );

        let mut t = map(1, 4);
        t.routes.pop();
        assert!(refused(&t).contains("slots 12288-16383 are not covered"));

        let mut t = map(1, 4);
        t.routes[0].slot_end = 100;
        t.routes[1].slot_start = 101;
        assert!(refused(&t).contains("partition 0 owns slots 0-4095 with 4 partitions"));
    }

    #[test]
    fn unknown_nodes_bad_addresses_and_counts_are_refused() {
        let mut t = map(1, 4);
        t.routes[2].replicas[0] = "zed".into();
        assert!(
            refused(&t).contains("partition 2 names node zed, which is not in the map's nodes")
        );

        let mut t = map(1, 4);
        t.routes[2].replicas[0] = t.routes[2].primary.clone();
        assert!(refused(&t).contains("names node c twice"));

        let mut t = map(1, 4);
        t.nodes[1].resp_addr = "nowhere".into();
        assert!(refused(&t).contains("node b: resp_addr \"nowhere\" is not host:port"));

        let mut t = map(1, 4);
        t.nodes.push(node("a", 9000));
        assert!(refused(&t).contains("node a is listed twice"));

        let t = map(1, 4);
        let why = check(&t, &SlotMap::new(8).unwrap()).unwrap_err();
        assert!(why.contains("the map is for 4 partitions, and this node has 8"));

        assert!(refused(&map(0, 4)).contains("version must be at least 1"));
    }

    #[test]
    fn older_maps_are_refused_and_retries_are_idempotent() {
        let slots = SlotMap::new(4).unwrap();
        let v2 = check(&map(2, 4), &slots).unwrap();
        let v1 = check(&map(1, 4), &slots).unwrap();
        let v3 = check(&map(3, 4), &slots).unwrap();
        assert_eq!(decide(None, &v1), Ok(true));
        assert_eq!(decide(Some(&v2), &v3), Ok(true));
        assert_eq!(decide(Some(&v2), &v2.clone()), Ok(false));
        assert!(
            decide(Some(&v2), &v1)
                .unwrap_err()
                .contains("older than version 2")
        );
        let mut reordered = map(2, 4);
        reordered.nodes.reverse();
        reordered.routes[1].replicas.reverse();
        let reordered = check(&reordered, &slots).unwrap();
        assert_eq!(
            decide(Some(&v2), &reordered),
            Ok(false),
            "order means nothing"
        );
        let mut other = map(2, 4);
        other.routes[0].primary = "b".into();
        other.routes[0].replicas = vec!["a".into(), "c".into()];
        let other = check(&other, &slots).unwrap();
        assert!(
            decide(Some(&v2), &other)
                .unwrap_err()
                .contains("other contents")
        );
    }

    #[test]
    fn the_map_survives_a_restart_and_a_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let held = Held::load(Some(dir.path()), SlotMap::new(4).unwrap()).unwrap();
        assert_eq!(held.version(), 0);
        assert_eq!(held.push(&map(5, 4)).unwrap(), 5);
        let err = held.push(&map(4, 4)).unwrap_err();
        assert!(matches!(err, Error::BadTopology { held: 5, .. }), "{err}");

        let again = Held::load(Some(dir.path()), SlotMap::new(4).unwrap()).unwrap();
        assert_eq!(again.get().unwrap().topology(), &map(5, 4));

        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        let damaged = Held::load(Some(dir.path()), SlotMap::new(4).unwrap()).unwrap();
        assert_eq!(damaged.version(), 0);
        assert!(dir.path().join("topology.pb.damaged").exists());
    }
}
