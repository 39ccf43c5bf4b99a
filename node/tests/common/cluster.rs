//! Helpers for tests that form a replicated cluster of real `partita-node` processes on
//! loopback: start nodes without `--standalone`, give them roles through the Admin gRPC service
//! (blocking wrappers, each with its own small tokio runtime), wait until replicas have caught
//! up, compare digests, load a node with pipelined RESP writes, and read a process's RSS.
//!
//! Every wait polls a condition with a deadline; nothing sleeps blindly. A [`Member`] owns its
//! process: dropping it SIGKILLs it (a SIGSTOPped process dies as well).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail by panicking, with a message saying what broke"
)]

use super::{Client, Node, Reply, send_signal, try_start_with};
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::{
    self, AssignRoleRequest, DigestRequest, ErrorInfo, FenceRequest, FollowRequest, NodeAddress,
    NodeStatus, PartitionSelector, PrimaryRole, PromoteRequest, ReplicaRole, RoleChangeResponse,
    StatusRequest, assign_role_request,
};
use prost::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a cluster test waits for replication to settle before failing.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Starts `partita-node` WITHOUT `--standalone` as `node_id`, on ephemeral loopback ports, with
/// `extra` flags; waits (at most 60 s) for its ready line. Its role comes from its role files
/// (after a restart) or from admin calls.
pub fn start_node(data_dir: &Path, node_id: &str, extra: &[&str]) -> Node {
    let args: Vec<&str> = ["--node-id", node_id]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    try_start_with(data_dir, false, &args).unwrap_or_else(|e| panic!("{node_id}: {e}"))
}

/// One node of a test cluster: its identity, data directory and flags, so it can be killed and
/// started again with the same data.
pub struct Member {
    /// The node id.
    pub id: String,
    /// The data directory (unused with `--in-memory`).
    pub dir: PathBuf,
    /// The flags it is started with, besides the listeners and `--node-id`.
    pub flags: Vec<String>,
    node: Option<Node>,
}

impl Member {
    /// Starts node `id` with its data in `root/id`.
    pub fn start(root: &Path, id: &str, flags: &[&str]) -> Self {
        let mut m = Self {
            id: id.to_string(),
            dir: root.join(id),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            node: None,
        };
        m.restart();
        m
    }

    /// Starts the process again with the same data directory and flags (new ports).
    pub fn restart(&mut self) {
        assert!(self.node.is_none(), "{} is still running", self.id);
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.node = Some(start_node(&self.dir, &self.id, &flags));
    }

    /// The running process.
    pub fn node(&self) -> &Node {
        self.node
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.id))
    }

    /// Whether the process is running (not killed).
    pub fn running(&self) -> bool {
        self.node.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.node().pid() as i32
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(n) = self.node.take() {
            n.kill();
        }
    }

    /// SIGTERM, and wait (at most `deadline`) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, deadline: Duration) -> bool {
        self.node.take().is_some_and(|n| n.terminate(deadline))
    }

    /// SIGSTOP: the process keeps its sockets but does nothing. Returns once every thread of
    /// it is stopped: the signal is delivered asynchronously, and a thread running on another
    /// core can still act for a moment after kill(2) returns.
    pub fn pause(&self) {
        let pid = self.pid();
        send_signal(pid, libc::SIGSTOP);
        super::wait_until(Duration::from_secs(10), "every thread stopped", || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // The state follows the command name in parentheses.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                })
            })
        });
    }

    /// SIGCONT after [`Member::pause`].
    pub fn resume(&self) {
        send_signal(self.pid(), libc::SIGCONT);
    }

    /// Where the node can be reached, as replicas and admin calls name it.
    pub fn address(&self) -> NodeAddress {
        NodeAddress {
            node_id: self.id.clone(),
            grpc_addr: self.node().grpc.to_string(),
            resp_addr: self.node().resp.to_string(),
        }
    }

    /// A blocking Admin client.
    pub fn admin(&self) -> Admin {
        Admin::connect(self.node().grpc)
    }

    /// A RESP connection.
    pub fn client(&self) -> Client {
        self.node().client()
    }

    /// The node's status.
    pub fn status(&self) -> NodeStatus {
        self.admin().status()
    }

    /// The node's `/metrics` text.
    pub fn metrics(&self) -> String {
        let (code, body) = super::http_get(self.node().http, "/metrics");
        assert_eq!(code, 200, "{}: /metrics", self.id);
        body
    }

    /// The node's resident set size in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// What the node logged.
    pub fn stderr(&self) -> String {
        self.node().stderr()
    }
}

/// Every partition.
pub fn all() -> Option<PartitionSelector> {
    Some(PartitionSelector {
        all: true,
        ids: Vec::new(),
    })
}

/// The listed partitions.
pub fn ids(ids: &[u32]) -> Option<PartitionSelector> {
    Some(PartitionSelector {
        all: false,
        ids: ids.to_vec(),
    })
}

/// The ErrorInfo carried by a failed call (default when there is none).
pub fn error_info(s: &tonic::Status) -> ErrorInfo {
    ErrorInfo::decode(s.details()).unwrap_or_default()
}

/// A blocking client of a node's Admin service.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: AdminClient<tonic::transport::Channel>,
}

impl Admin {
    /// Connects to the gRPC listener at `addr` (at most 10 s).
    pub fn connect(addr: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .unwrap_or_else(|e| panic!("connect admin {addr}: {e}"));
            AdminClient::new(ch)
        });
        Self { rt, client }
    }

    /// Status of every partition.
    pub fn try_status(&mut self) -> Result<NodeStatus, tonic::Status> {
        let c = &mut self.client;
        self.rt
            .block_on(c.status(StatusRequest { partitions: all() }))
            .map(tonic::Response::into_inner)
    }

    /// Pushes a partition map; the version held afterwards.
    pub fn set_topology(&mut self, topology: proto::Topology) -> Result<u64, tonic::Status> {
        let req = proto::SetTopologyRequest {
            topology: Some(topology),
        };
        let c = &mut self.client;
        self.rt
            .block_on(c.set_topology(req))
            .map(|r| r.into_inner().version)
    }

    /// Status of every partition, or panics.
    pub fn status(&mut self) -> NodeStatus {
        self.try_status().unwrap_or_else(|e| panic!("status: {e}"))
    }

    /// AssignRole primary of `partitions` at `epoch`, expecting `replicas`.
    pub fn assign_primary(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
        replicas: &[&str],
        copies: u32,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        let req = AssignRoleRequest {
            partitions,
            epoch,
            role: Some(assign_role_request::Role::Primary(primary_role(
                replicas, copies,
            ))),
        };
        let c = &mut self.client;
        self.rt
            .block_on(c.assign_role(req))
            .map(tonic::Response::into_inner)
    }

    /// AssignRole replica of `primary` at `epoch`.
    pub fn assign_replica(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
        primary: NodeAddress,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        let req = AssignRoleRequest {
            partitions,
            epoch,
            role: Some(assign_role_request::Role::Replica(ReplicaRole {
                primary: Some(primary),
            })),
        };
        let c = &mut self.client;
        self.rt
            .block_on(c.assign_role(req))
            .map(tonic::Response::into_inner)
    }

    /// Follow `primary` at `epoch`.
    pub fn follow(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
        primary: NodeAddress,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        let req = FollowRequest {
            partitions,
            epoch,
            primary: Some(primary),
        };
        let c = &mut self.client;
        self.rt
            .block_on(c.follow(req))
            .map(tonic::Response::into_inner)
    }

    /// Promote to primary at `epoch`, expecting `replicas`.
    pub fn promote(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
        replicas: &[&str],
        copies: u32,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        self.promote_after(partitions, epoch, replicas, copies, 0, 0)
    }

    /// Promote once the copy holds `min_offset`, waiting at most `timeout_ms` for it (a
    /// switchover passes the fenced primary's final offset).
    pub fn promote_after(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
        replicas: &[&str],
        copies: u32,
        min_offset: u64,
        timeout_ms: u32,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        let req = PromoteRequest {
            partitions,
            epoch,
            primary: Some(primary_role(replicas, copies)),
            min_offset,
            catch_up_timeout_ms: timeout_ms,
        };
        let c = &mut self.client;
        self.rt
            .block_on(c.promote(req))
            .map(tonic::Response::into_inner)
    }

    /// Fence at `epoch`.
    pub fn fence(
        &mut self,
        partitions: Option<PartitionSelector>,
        epoch: u64,
    ) -> Result<RoleChangeResponse, tonic::Status> {
        let c = &mut self.client;
        self.rt
            .block_on(c.fence(FenceRequest { partitions, epoch }))
            .map(tonic::Response::into_inner)
    }

    /// The digest of every partition and the total key count.
    pub fn digest(&mut self) -> proto::DigestResponse {
        let c = &mut self.client;
        self.rt
            .block_on(c.digest(DigestRequest { partitions: all() }))
            .unwrap_or_else(|e| panic!("digest: {e}"))
            .into_inner()
    }
}

fn primary_role(replicas: &[&str], copies: u32) -> PrimaryRole {
    PrimaryRole {
        replicas: replicas.iter().map(|s| s.to_string()).collect(),
        copies,
        min_in_sync_replicas: 0,
    }
}

/// Makes `primary` the primary of every partition at `epoch` and every one of `replicas` its
/// replica, then waits until the primary reports every replica connected and streaming (in
/// sync) on every partition.
pub fn form(primary: &Member, replicas: &[&Member], epoch: u64) {
    let ids: Vec<&str> = replicas.iter().map(|m| m.id.as_str()).collect();
    primary
        .admin()
        .assign_primary(all(), epoch, &ids, 1 + ids.len() as u32)
        .unwrap_or_else(|e| panic!("assign primary {}: {e}", primary.id));
    for r in replicas {
        r.admin()
            .assign_replica(all(), epoch, primary.address())
            .unwrap_or_else(|e| panic!("assign replica {}: {e}", r.id));
    }
    wait_in_sync(primary, &ids, SETTLE);
}

/// Waits until `primary` reports each of `replicas` connected and in sync on every partition.
pub fn wait_in_sync(primary: &Member, replicas: &[&str], deadline: Duration) {
    wait_in_sync_on(primary, None, replicas, deadline);
}

/// Waits until `primary` reports each of `replicas` connected and in sync on `partitions`
/// (every partition when `None`).
pub fn wait_in_sync_on(
    primary: &Member,
    partitions: Option<&[u32]>,
    replicas: &[&str],
    deadline: Duration,
) {
    let mut admin = primary.admin();
    let until = Instant::now() + deadline;
    loop {
        let st = admin.status();
        let missing: Vec<String> = st
            .partitions
            .iter()
            .filter(|p| partitions.is_none_or(|ids| ids.contains(&p.partition)))
            .flat_map(|p| {
                replicas.iter().filter_map(move |id| {
                    let ok = p
                        .replicas
                        .iter()
                        .any(|r| r.node_id == *id && r.connected && r.in_sync);
                    (!ok).then(|| format!("{id}@p{}", p.partition))
                })
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{}: replicas not in sync: {missing:?}",
            primary.id
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last offset of every partition, as `(epoch, offset)`, in partition order.
pub fn positions(st: &NodeStatus) -> Vec<(u64, u64)> {
    st.partitions
        .iter()
        .map(|p| p.last.map_or((0, 0), |l| (l.epoch, l.offset)))
        .collect()
}

/// Waits until every one of `replicas` holds the primary's last position on every partition.
/// Call it once writes have stopped.
pub fn wait_caught_up(primary: &Member, replicas: &[&Member], deadline: Duration) {
    let mut admins: Vec<Admin> = std::iter::once(primary)
        .chain(replicas.iter().copied())
        .map(Member::admin)
        .collect();
    let until = Instant::now() + deadline;
    loop {
        let all: Vec<Vec<(u64, u64)>> = admins.iter_mut().map(|a| positions(&a.status())).collect();
        if all.iter().all(|p| *p == all[0]) {
            return;
        }
        if Instant::now() > until {
            let names: Vec<&str> = std::iter::once(primary)
                .chain(replicas.iter().copied())
                .map(|m| m.id.as_str())
                .collect();
            panic!("replicas did not catch up: {names:?} hold {all:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that every member holds the same data (digest and key count); returns the count.
pub fn assert_same_data(members: &[&Member]) -> u64 {
    let digests: Vec<(String, u64)> = members
        .iter()
        .map(|m| {
            let d = m.admin().digest();
            (d.digest, d.keys)
        })
        .collect();
    for (m, d) in members.iter().zip(&digests).skip(1) {
        assert_eq!(
            d, &digests[0],
            "{} differs from {} (digest, keys)",
            m.id, members[0].id
        );
    }
    digests[0].1
}

/// Writes `n` SETs to the RESP listener at `addr`, pipelined 256 at a time, on keys
/// `prefix:{i % keyspace}` with `value_len`-byte values, and asserts every reply is OK. Returns
/// the bytes of keys and values written.
pub fn load(addr: SocketAddr, prefix: &str, n: u64, keyspace: u64, value_len: usize) -> u64 {
    let mut c = Client::connect(addr);
    let mut bytes = 0u64;
    let mut i = 0u64;
    while i < n {
        let batch = (n - i).min(256);
        for j in i..i + batch {
            let key = format!("{prefix}:{}", j % keyspace);
            let value = value_of(j, value_len);
            bytes += (key.len() + value.len()) as u64;
            c.send(&[b"SET".as_slice(), key.as_bytes(), value.as_bytes()])
                .unwrap();
        }
        for _ in 0..batch {
            let r = c.read().unwrap();
            assert_eq!(r, Reply::Simple("OK".into()), "SET at {addr}");
        }
        i += batch;
    }
    bytes
}

/// The value [`load`] writes for its `i`-th SET.
pub fn value_of(i: u64, len: usize) -> String {
    let head = format!("v{i}-");
    let mut v = head.repeat(len / head.len() + 1);
    v.truncate(len.max(head.len()));
    v
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// A small deterministic random number generator (SplitMix64), so a failing randomized test
/// can be replayed from the seed it prints.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}
