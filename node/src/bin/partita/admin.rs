//! `partita admin`: the Admin service from a shell. An operator reads a node's state (status,
//! digest), changes partition roles by hand (assign, promote, follow, fence, drop) and reads or
//! pushes its partition map (topology get, topology set) with the same calls the Kubernetes
//! operator makes, so a switchover or a repair can be done, or rehearsed, without the operator.
//! Every subcommand prints either a table or, with `--json`, the response converted field by
//! field (snake_case names as in `partita.proto`, enums as lower-case strings), so scripts need
//! no protobuf tooling. The partition map is JSON either way, in the file format `topology set`
//! reads (see [`crate::topology`]).

use crate::connect::{self, describe};
use crate::topology;
use clap::{ArgGroup, Args, Subcommand};
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::kv_client::KvClient;
use partita_node::proto::{
    AssignRoleRequest, DigestRequest, DigestResponse, DropRequest, EpochStart, FenceRequest,
    FencedRole, FollowRequest, GetTopologyRequest, LinkState, NodeAddress, NodeStatus,
    PartitionDigest, PartitionRoleState, PartitionSelector, PartitionStatus, Position, PrimaryRole,
    PromoteRequest, ReplicaLink, ReplicaProgress, ReplicaRole, Role, RoleChangeResponse,
    SetTopologyRequest, SetTopologyResponse, StatusRequest, SyncKind, assign_role_request,
};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `partita admin [--timeout-ms T] [--json] <subcommand>`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// How long to wait for the connection, and then for the answer to the call, in
    /// milliseconds. A promote waits its --catch-up-timeout-ms on top.
    #[arg(
        long,
        global = true,
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout_ms: u64,
    /// Print the response as one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCmd,
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Show the node's state: every partition's role, epoch, offsets, keys and replication.
    Status {
        /// Partitions to show: an id, a comma-separated list, or `all` (the default).
        #[arg(long, value_parser = parse_partitions, value_name = "N|N,N,...|all")]
        partition: Option<Partitions>,
    },
    /// Set a role at an epoch (AssignRole): primary, replica of a primary, or fenced.
    #[command(group(ArgGroup::new("role").required(true).args(["primary", "follow", "fenced"])))]
    Assign(AssignArgs),
    /// Make a replica or fenced copy primary at a newer epoch, keeping its log (Promote).
    Promote(PromoteArgs),
    /// Follow a primary at an epoch; the copy resyncs, truncating a divergent tail (Follow).
    Follow(FollowArgs),
    /// Stop accepting writes at an epoch and show the final positions (Fence).
    Fence {
        #[command(flatten)]
        target: Target,
    },
    /// Remove the node's copy of partitions, data included (Drop).
    Drop {
        #[command(flatten)]
        target: Target,
        /// Also drop partitions the node is primary of.
        #[arg(long)]
        force: bool,
    },
    /// Show the order-independent digest of the data, in total and per partition (Digest).
    Digest {
        /// Partitions to digest: an id, a comma-separated list, or `all` (the default).
        #[arg(long, value_parser = parse_partitions, value_name = "N|N,N,...|all")]
        partition: Option<Partitions>,
    },
    /// Show or replace the node's partition map (GetTopology, SetTopology).
    #[command(subcommand)]
    Topology(TopologyCmd),
}

/// `partita admin topology`.
#[derive(Debug, Subcommand)]
enum TopologyCmd {
    /// Print the node's partition map as JSON, in the format `set` reads.
    ///
    /// Indented, or on one line with --json. Version 0 means no map was pushed: the node then
    /// names only itself.
    Get,
    /// Push a partition map from a JSON file, and print the version the node holds.
    ///
    /// The node refuses a map older than the one it holds, the same version with other contents
    /// (pushing the map it holds again is a harmless retry), and a map that does not fit it:
    /// slots overlapping or left uncovered, a route naming a node the map does not list,
    /// another number of partitions. A --standalone node takes no map.
    Set {
        /// The map, as `topology get` prints it; `-` reads standard input. At most 16 MiB.
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
    },
}

/// The partitions and epoch every role change names.
#[derive(Debug, Args)]
struct Target {
    /// Partitions to change: an id, a comma-separated list, or `all`.
    #[arg(long, value_parser = parse_partitions, value_name = "N|N,N,...|all")]
    partition: Partitions,
    /// The epoch of the change; the node refuses one lower than it holds.
    #[arg(long)]
    epoch: u64,
}

/// `partita admin assign`.
#[derive(Debug, Args)]
struct AssignArgs {
    #[command(flatten)]
    target: Target,
    /// Become primary.
    #[arg(long)]
    primary: bool,
    /// As primary: node ids of the replicas expected to follow, comma-separated.
    #[arg(long, conflicts_with_all = ["follow", "fenced"], value_delimiter = ',', value_parser = parse_node_id)]
    replicas: Vec<String>,
    /// As primary: copies the partition is configured with, the primary included
    /// [default: 1 + the number of replicas].
    #[arg(long, conflicts_with_all = ["follow", "fenced"])]
    copies: Option<u32>,
    /// As primary: refuse writes while fewer replicas than this are in sync [default: 0].
    #[arg(long, conflicts_with_all = ["follow", "fenced"])]
    min_in_sync: Option<u32>,
    /// Become a replica of the primary at this gRPC address.
    #[arg(long, value_name = "GRPC_ADDR")]
    follow: Option<String>,
    /// As replica: the primary's node id [default: its gRPC address].
    #[arg(long, conflicts_with_all = ["primary", "fenced"], value_parser = parse_node_id)]
    primary_id: Option<String>,
    /// As replica: the primary's RESP address.
    #[arg(long, conflicts_with_all = ["primary", "fenced"], value_name = "HOST:PORT")]
    primary_resp: Option<String>,
    /// Stop accepting writes and follow nobody.
    #[arg(long)]
    fenced: bool,
}

/// `partita admin promote`.
#[derive(Debug, Args)]
struct PromoteArgs {
    #[command(flatten)]
    target: Target,
    /// Node ids of the replicas expected to follow, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_node_id)]
    replicas: Vec<String>,
    /// Copies the partition is configured with, the primary included
    /// [default: 1 + the number of replicas].
    #[arg(long)]
    copies: Option<u32>,
    /// Refuse writes while fewer replicas than this are in sync.
    #[arg(long, default_value_t = 0)]
    min_in_sync: u32,
    /// Promote only once the copy holds at least this offset (a switchover passes the fenced
    /// primary's end offset); 0 skips the check.
    #[arg(long, default_value_t = 0)]
    min_offset: u64,
    /// How long the node may wait for --min-offset, in milliseconds.
    #[arg(long, default_value_t = 0)]
    catch_up_timeout_ms: u32,
}

/// `partita admin follow`.
#[derive(Debug, Args)]
struct FollowArgs {
    #[command(flatten)]
    target: Target,
    /// The gRPC address of the primary to follow.
    #[arg(long, value_name = "GRPC_ADDR")]
    primary: String,
    /// The primary's node id [default: its gRPC address].
    #[arg(long, value_parser = parse_node_id)]
    primary_id: Option<String>,
    /// The primary's RESP address.
    #[arg(long, value_name = "HOST:PORT")]
    primary_resp: Option<String>,
}

/// The partitions a subcommand applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Partitions {
    /// Every partition the node hosts.
    All,
    /// These ids, sorted, without duplicates, never empty.
    Ids(Vec<u32>),
}

impl Partitions {
    fn selector(&self) -> PartitionSelector {
        match self {
            Partitions::All => PartitionSelector {
                all: true,
                ids: Vec::new(),
            },
            Partitions::Ids(ids) => PartitionSelector {
                all: false,
                ids: ids.clone(),
            },
        }
    }
}

/// `all`, `3` or `0,3,5`.
fn parse_partitions(text: &str) -> Result<Partitions, String> {
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(Partitions::All);
    }
    let mut ids = text
        .split(',')
        .map(|id| {
            id.trim().parse::<u32>().map_err(|_| {
                format!("{id:?} is not a partition id: expected `all`, N or a list like 0,3,5")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(Partitions::Ids(ids))
}

fn parse_node_id(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("a node id cannot be empty".to_string())
    } else {
        Ok(text.trim().to_string())
    }
}

fn primary_role(replicas: &[String], copies: Option<u32>, min_in_sync: u32) -> PrimaryRole {
    PrimaryRole {
        replicas: replicas.to_vec(),
        copies: copies.unwrap_or(1 + replicas.len() as u32),
        min_in_sync_replicas: min_in_sync,
    }
}

/// The primary a replica follows: named by its id, or by its gRPC address when unnamed.
fn primary_address(grpc: &str, id: Option<&str>, resp: Option<&str>) -> NodeAddress {
    NodeAddress {
        node_id: id.unwrap_or(grpc).to_string(),
        grpc_addr: grpc.to_string(),
        resp_addr: resp.unwrap_or_default().to_string(),
    }
}

impl AssignArgs {
    fn request(&self) -> AssignRoleRequest {
        let role = if let Some(grpc) = &self.follow {
            assign_role_request::Role::Replica(ReplicaRole {
                primary: Some(primary_address(
                    grpc,
                    self.primary_id.as_deref(),
                    self.primary_resp.as_deref(),
                )),
            })
        } else if self.fenced {
            assign_role_request::Role::Fenced(FencedRole {})
        } else {
            assign_role_request::Role::Primary(primary_role(
                &self.replicas,
                self.copies,
                self.min_in_sync.unwrap_or(0),
            ))
        };
        AssignRoleRequest {
            partitions: Some(self.target.partition.selector()),
            epoch: self.target.epoch,
            role: Some(role),
        }
    }
}

impl PromoteArgs {
    fn request(&self) -> PromoteRequest {
        PromoteRequest {
            partitions: Some(self.target.partition.selector()),
            epoch: self.target.epoch,
            primary: Some(primary_role(&self.replicas, self.copies, self.min_in_sync)),
            min_offset: self.min_offset,
            catch_up_timeout_ms: self.catch_up_timeout_ms,
        }
    }
}

impl FollowArgs {
    fn request(&self) -> FollowRequest {
        FollowRequest {
            partitions: Some(self.target.partition.selector()),
            epoch: self.target.epoch,
            primary: Some(primary_address(
                &self.primary,
                self.primary_id.as_deref(),
                self.primary_resp.as_deref(),
            )),
        }
    }
}

/// Runs one admin subcommand against the node at `addr`; Err is a one-line message for stderr.
pub async fn run(addr: &str, args: AdminArgs) -> Result<ExitCode, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    // A map to push is read and checked first: a bad file needs no node to be refused.
    let mut pushed = match &args.command {
        AdminCmd::Topology(TopologyCmd::Set { file }) => Some(topology::read_file(file)?),
        _ => None,
    };
    let channel = connect::channel(addr, timeout).await?;
    let mut admin = AdminClient::new(channel.clone());
    let call = Call { addr };
    let json = args.json;
    let text = match args.command {
        AdminCmd::Status { partition } => {
            let request = StatusRequest {
                partitions: partition.map(|p| p.selector()),
            };
            let s = call.run(timeout, admin.status(request)).await?;
            if json {
                node_status_json(&s).to_string()
            } else {
                status_text(&s)
            }
        }
        AdminCmd::Digest { partition } => {
            let request = DigestRequest {
                partitions: partition.map(|p| p.selector()),
            };
            let d = call.run(timeout, admin.digest(request)).await?;
            if json {
                digest_json(&d).to_string()
            } else {
                digest_text(&d)
            }
        }
        AdminCmd::Assign(a) => role_change(
            json,
            call.run(timeout, admin.assign_role(a.request())).await?,
        ),
        AdminCmd::Promote(p) => {
            // The node may wait for the catch-up before it answers.
            let wait = timeout + Duration::from_millis(u64::from(p.catch_up_timeout_ms));
            role_change(json, call.run(wait, admin.promote(p.request())).await?)
        }
        AdminCmd::Follow(f) => {
            role_change(json, call.run(timeout, admin.follow(f.request())).await?)
        }
        AdminCmd::Fence { target } => {
            let request = FenceRequest {
                partitions: Some(target.partition.selector()),
                epoch: target.epoch,
            };
            role_change(json, call.run(timeout, admin.fence(request)).await?)
        }
        AdminCmd::Drop { target, force } => {
            let request = DropRequest {
                partitions: Some(target.partition.selector()),
                epoch: target.epoch,
                force,
            };
            role_change(json, call.run(timeout, admin.drop(request)).await?)
        }
        AdminCmd::Topology(TopologyCmd::Get) => {
            // The node's answer is bounded like the file `set` reads.
            let mut kv =
                KvClient::new(channel).max_decoding_message_size(topology::MAX_FILE_BYTES as usize);
            let t = call
                .run(timeout, kv.get_topology(GetTopologyRequest {}))
                .await?;
            let map = topology::to_json(&t);
            if json {
                map.to_string()
            } else {
                serde_json::to_string_pretty(&map).map_err(|e| format!("printing the map: {e}"))?
            }
        }
        AdminCmd::Topology(TopologyCmd::Set { file }) => {
            let map = match pushed.take() {
                Some(map) => map,
                None => topology::read_file(&file)?,
            };
            let request = SetTopologyRequest {
                topology: Some(map),
            };
            let r = call.run(timeout, admin.set_topology(request)).await?;
            if json {
                set_topology_json(&r).to_string()
            } else {
                format!("topology version {}", r.version)
            }
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the output: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The node called, for error messages.
struct Call<'a> {
    addr: &'a str,
}

impl Call<'_> {
    /// Awaits a call for at most `wait`; Err is the failure in one line.
    async fn run<T>(
        &self,
        wait: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(wait, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // Without an ErrorInfo the failure came from the transport, a proxy or a node
            // that lacks the call: say which address answered.
            Ok(Err(status)) if connect::error_info(&status).is_none() => {
                Err(format!("{} (node {})", describe(&status), self.addr))
            }
            Ok(Err(status)) => Err(describe(&status)),
            Err(_) => Err(format!(
                "DEADLINE_EXCEEDED: no answer from {} within {} ms",
                self.addr,
                wait.as_millis()
            )),
        }
    }
}

fn role_change(json: bool, r: RoleChangeResponse) -> String {
    if json {
        role_change_json(&r).to_string()
    } else {
        role_change_text(&r)
    }
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// Lays out a header and rows in columns two spaces apart; `right[i]` right-aligns column i.
/// Returns one line per row, the header first, without trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                text.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                text.push_str(&format!("{cell:>w$}"));
            } else {
                text.push_str(&format!("{cell:<w$}"));
            }
        }
        text.trim_end().to_string()
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    lines.extend(rows.iter().map(|r| line(&mut r.iter().map(String::as_str))));
    lines
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn position_text(p: Option<&Position>) -> String {
    p.map_or_else(|| "-".to_string(), |p| format!("{}:{}", p.epoch, p.offset))
}

/// The role for a table: "primary", "replica", "fenced", or "-" when unset.
fn role_cell(role: i32) -> String {
    match Role::try_from(role) {
        Ok(Role::Unspecified) => "-".to_string(),
        _ => role_name(role),
    }
}

fn status_text(s: &NodeStatus) -> String {
    let node = s.node.clone().unwrap_or_default();
    let mut lines = vec![
        format!(
            "node {}  grpc {}  resp {}",
            or_dash(&node.node_id),
            or_dash(&node.grpc_addr),
            or_dash(&node.resp_addr)
        ),
        format!(
            "version {}  standalone {}  fsync {}  topology {}  ready {}  uptime {}s  \
             partitions {}",
            or_dash(&s.version),
            yes(s.standalone),
            or_dash(&s.fsync),
            s.topology_version,
            yes(s.ready),
            s.uptime_ms / 1000,
            s.partitions_total
        ),
        String::new(),
    ];
    let header = [
        "PARTITION",
        "ROLE",
        "EPOCH",
        "LAST",
        "COMMIT",
        "LOG-START",
        "SNAPSHOT",
        "KEYS",
        "PRIMARY",
        "LINK",
        "SYNC",
        "LAG-ENTRIES",
        "LAG-MS",
    ];
    let right = [
        true, false, true, true, true, true, true, true, false, false, false, true, true,
    ];
    let rows: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            let mut row = vec![
                p.partition.to_string(),
                role_cell(p.role),
                p.epoch.to_string(),
                position_text(p.last.as_ref()),
                p.commit_offset.to_string(),
                p.log_start_offset.to_string(),
                p.snapshot_offset.to_string(),
                p.keys.to_string(),
            ];
            if p.role == Role::Replica as i32 {
                let link = p.link.clone().unwrap_or_default();
                row.extend([
                    p.primary
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |a| or_dash(&a.node_id).to_string()),
                    link_state_name(link.state),
                    sync_kind_name(link.last_sync),
                    link.lag_entries.to_string(),
                    link.lag_ms.to_string(),
                ]);
            } else {
                row.extend(std::iter::repeat_n("-".to_string(), 5));
            }
            row
        })
        .collect();
    let mut table = table(&header, &rows, &right).into_iter();
    lines.extend(table.next());
    for (p, row) in s.partitions.iter().zip(table) {
        lines.push(row);
        if let Some(error) = p.link.as_ref().map(|l| &l.error).filter(|e| !e.is_empty()) {
            lines.push(format!("    link error: {error}"));
        }
        for r in &p.replicas {
            lines.push(format!(
                "    replica {}  connected {}  in_sync {}  acked {}  lag {} entries {} ms  \
                 last sync {}  send buffer {} B",
                or_dash(&r.node_id),
                yes(r.connected),
                yes(r.in_sync),
                r.acked_offset,
                r.lag_entries,
                r.lag_ms,
                sync_kind_name(r.last_sync),
                r.send_buffer_bytes
            ));
        }
    }
    lines.join("\n")
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn digest_text(d: &DigestResponse) -> String {
    let mut lines = vec![
        format!("digest {}  keys {}", d.digest, d.keys),
        String::new(),
    ];
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                p.digest.clone(),
                p.keys.to_string(),
                position_text(p.at.as_ref()),
            ]
        })
        .collect();
    lines.extend(table(
        &["PARTITION", "DIGEST", "KEYS", "AT"],
        &rows,
        &[true, false, true, true],
    ));
    lines.join("\n")
}

fn role_change_text(r: &RoleChangeResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition.to_string(),
                role_cell(p.role),
                p.epoch.to_string(),
                position_text(p.last.as_ref()),
            ]
        })
        .collect();
    table(
        &["PARTITION", "ROLE", "EPOCH", "LAST"],
        &rows,
        &[true, false, true, true],
    )
    .join("\n")
}

// ---------------------------------------------------------------------------------------------
// JSON: every message converted field by field, names as in the proto. Each conversion
// destructures its message without `..`, so a field added to the proto fails to compile here
// until it is converted too.
// ---------------------------------------------------------------------------------------------

/// A proto enum value as a lower-case name without its prefix ("ROLE_PRIMARY" -> "primary");
/// a value this binary does not know becomes "unknown_<n>".
fn enum_name(name: Option<&str>, prefix: &str, value: i32) -> String {
    name.map_or_else(
        || format!("unknown_{value}"),
        |n| n.trim_start_matches(prefix).to_ascii_lowercase(),
    )
}

fn role_name(v: i32) -> String {
    enum_name(Role::try_from(v).ok().map(|e| e.as_str_name()), "ROLE_", v)
}

fn link_state_name(v: i32) -> String {
    enum_name(
        LinkState::try_from(v).ok().map(|e| e.as_str_name()),
        "LINK_STATE_",
        v,
    )
}

fn sync_kind_name(v: i32) -> String {
    enum_name(
        SyncKind::try_from(v).ok().map(|e| e.as_str_name()),
        "SYNC_KIND_",
        v,
    )
}

fn position_json(p: Option<&Position>) -> Value {
    match p {
        None => Value::Null,
        Some(Position { epoch, offset }) => json!({ "epoch": epoch, "offset": offset }),
    }
}

fn node_address_json(a: Option<&NodeAddress>) -> Value {
    match a {
        None => Value::Null,
        Some(NodeAddress {
            node_id,
            grpc_addr,
            resp_addr,
        }) => json!({ "node_id": node_id, "grpc_addr": grpc_addr, "resp_addr": resp_addr }),
    }
}

fn epoch_start_json(e: &EpochStart) -> Value {
    let EpochStart {
        epoch,
        start_offset,
    } = e;
    json!({ "epoch": epoch, "start_offset": start_offset })
}

fn replica_link_json(l: Option<&ReplicaLink>) -> Value {
    let Some(ReplicaLink {
        state,
        last_sync,
        lag_entries,
        lag_ms,
        full_syncs,
        partial_syncs,
        error,
    }) = l
    else {
        return Value::Null;
    };
    json!({
        "state": link_state_name(*state),
        "last_sync": sync_kind_name(*last_sync),
        "lag_entries": lag_entries,
        "lag_ms": lag_ms,
        "full_syncs": full_syncs,
        "partial_syncs": partial_syncs,
        "error": error,
    })
}

fn replica_progress_json(r: &ReplicaProgress) -> Value {
    let ReplicaProgress {
        node_id,
        connected,
        in_sync,
        acked_offset,
        lag_entries,
        lag_ms,
        last_sync,
        send_buffer_bytes,
    } = r;
    json!({
        "node_id": node_id,
        "connected": connected,
        "in_sync": in_sync,
        "acked_offset": acked_offset,
        "lag_entries": lag_entries,
        "lag_ms": lag_ms,
        "last_sync": sync_kind_name(*last_sync),
        "send_buffer_bytes": send_buffer_bytes,
    })
}

fn partition_status_json(p: &PartitionStatus) -> Value {
    let PartitionStatus {
        partition,
        role,
        epoch,
        last,
        commit_offset,
        log_start_offset,
        snapshot_offset,
        keys,
        bytes,
        epoch_history,
        primary,
        link,
        replicas,
        copies,
        min_in_sync_replicas,
    } = p;
    json!({
        "partition": partition,
        "role": role_name(*role),
        "epoch": epoch,
        "last": position_json(last.as_ref()),
        "commit_offset": commit_offset,
        "log_start_offset": log_start_offset,
        "snapshot_offset": snapshot_offset,
        "keys": keys,
        "bytes": bytes,
        "epoch_history": epoch_history.iter().map(epoch_start_json).collect::<Vec<_>>(),
        "primary": node_address_json(primary.as_ref()),
        "link": replica_link_json(link.as_ref()),
        "replicas": replicas.iter().map(replica_progress_json).collect::<Vec<_>>(),
        "copies": copies,
        "min_in_sync_replicas": min_in_sync_replicas,
    })
}

/// NodeStatus as JSON, every field included, names as in the proto.
fn node_status_json(s: &NodeStatus) -> Value {
    let NodeStatus {
        node,
        version,
        ready,
        uptime_ms,
        standalone,
        partitions_total,
        topology_version,
        fsync,
        partitions,
    } = s;
    json!({
        "node": node_address_json(node.as_ref()),
        "version": version,
        "ready": ready,
        "uptime_ms": uptime_ms,
        "standalone": standalone,
        "partitions_total": partitions_total,
        "topology_version": topology_version,
        "fsync": fsync,
        "partitions": partitions.iter().map(partition_status_json).collect::<Vec<_>>(),
    })
}

fn role_change_json(r: &RoleChangeResponse) -> Value {
    let RoleChangeResponse { partitions } = r;
    let partitions: Vec<Value> = partitions
        .iter()
        .map(|p| {
            let PartitionRoleState {
                partition,
                role,
                epoch,
                last,
            } = p;
            json!({
                "partition": partition,
                "role": role_name(*role),
                "epoch": epoch,
                "last": position_json(last.as_ref()),
            })
        })
        .collect();
    json!({ "partitions": partitions })
}

fn set_topology_json(r: &SetTopologyResponse) -> Value {
    let SetTopologyResponse { version } = r;
    json!({ "version": version })
}

fn digest_json(d: &DigestResponse) -> Value {
    let DigestResponse {
        digest,
        keys,
        partitions,
    } = d;
    let partitions: Vec<Value> = partitions
        .iter()
        .map(|p| {
            let PartitionDigest {
                partition,
                digest,
                keys,
                at,
            } = p;
            json!({
                "partition": partition,
                "digest": digest,
                "keys": keys,
                "at": position_json(at.as_ref()),
            })
        })
        .collect();
    json!({ "digest": digest, "keys": keys, "partitions": partitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Cmd};
    use clap::Parser;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<AdminCmd, clap::Error> {
        let cli = Cli::try_parse_from(["partita", "admin"].iter().chain(args))?;
        match cli.command {
            Cmd::Admin(a) => Ok(a.command),
            other => panic!("not admin: {other:?}"),
        }
    }

    #[test]
    fn partitions_parse_as_all_one_id_or_a_list() {
        assert_eq!(parse_partitions("all"), Ok(Partitions::All));
        assert_eq!(parse_partitions("3"), Ok(Partitions::Ids(vec![3])));
        assert_eq!(
            parse_partitions("5, 0,3,0"),
            Ok(Partitions::Ids(vec![0, 3, 5]))
        );
        assert!(parse_partitions("").is_err());
        assert!(parse_partitions("1,,2").is_err());
        assert!(parse_partitions("-1").is_err());
    }

    #[test]
    fn assign_primary_defaults_copies_to_one_plus_the_replicas() {
        let Ok(AdminCmd::Assign(a)) = parse(&[
            "assign",
            "--partition",
            "0,2",
            "--epoch",
            "4",
            "--primary",
            "--replicas",
            "n2,n3",
            "--min-in-sync",
            "1",
        ]) else {
            panic!("assign did not parse");
        };
        assert_eq!(
            a.request(),
            AssignRoleRequest {
                partitions: Some(PartitionSelector {
                    all: false,
                    ids: vec![0, 2]
                }),
                epoch: 4,
                role: Some(assign_role_request::Role::Primary(PrimaryRole {
                    replicas: vec!["n2".into(), "n3".into()],
                    copies: 3,
                    min_in_sync_replicas: 1,
                })),
            }
        );
    }

    #[test]
    fn assign_follow_names_the_primary_by_its_address_unless_given_an_id() {
        let Ok(AdminCmd::Assign(a)) = parse(&[
            "assign",
            "--partition",
            "all",
            "--epoch",
            "2",
            "--follow",
            "10.0.0.1:7379",
        ]) else {
            panic!("assign did not parse");
        };
        let r = a.request();
        assert_eq!(
            r.partitions,
            Some(PartitionSelector {
                all: true,
                ids: vec![]
            })
        );
        assert_eq!(
            r.role,
            Some(assign_role_request::Role::Replica(ReplicaRole {
                primary: Some(NodeAddress {
                    node_id: "10.0.0.1:7379".into(),
                    grpc_addr: "10.0.0.1:7379".into(),
                    resp_addr: String::new(),
                })
            }))
        );
        let Ok(AdminCmd::Follow(f)) = parse(&[
            "follow",
            "--partition",
            "1",
            "--epoch",
            "2",
            "--primary",
            "10.0.0.1:7379",
            "--primary-id",
            "n1",
        ]) else {
            panic!("follow did not parse");
        };
        assert_eq!(f.request().primary.map(|p| p.node_id), Some("n1".into()));
    }

    #[test]
    fn assign_needs_exactly_one_role_and_role_options_need_their_role() {
        let base = ["assign", "--partition", "0", "--epoch", "1"];
        let with = |more: &[&str]| parse(&[&base[..], more].concat());
        assert!(with(&[]).is_err());
        assert!(with(&["--primary", "--fenced"]).is_err());
        assert!(with(&["--primary", "--follow", "h:1"]).is_err());
        assert!(with(&["--fenced", "--replicas", "n2"]).is_err());
        assert!(with(&["--primary", "--primary-id", "n1"]).is_err());
        assert!(with(&["--fenced"]).is_ok());
        assert!(parse(&["fence", "--epoch", "1"]).is_err());
    }

    #[test]
    fn status_json_converts_every_field_with_proto_names_and_lower_case_enums() {
        let s = NodeStatus {
            node: Some(NodeAddress {
                node_id: "n2".into(),
                grpc_addr: "h2:7379".into(),
                resp_addr: "h2:6379".into(),
            }),
            version: "0.1.0".into(),
            ready: true,
            uptime_ms: 1234,
            standalone: false,
            partitions_total: 2,
            topology_version: 7,
            fsync: "everysec".into(),
            partitions: vec![
                PartitionStatus {
                    partition: 0,
                    role: Role::Replica as i32,
                    epoch: 3,
                    last: Some(Position {
                        epoch: 3,
                        offset: 40,
                    }),
                    commit_offset: 39,
                    log_start_offset: 1,
                    snapshot_offset: 20,
                    keys: 10,
                    bytes: 100,
                    epoch_history: vec![EpochStart {
                        epoch: 3,
                        start_offset: 1,
                    }],
                    primary: Some(NodeAddress {
                        node_id: "n1".into(),
                        grpc_addr: "h1:7379".into(),
                        resp_addr: String::new(),
                    }),
                    link: Some(ReplicaLink {
                        state: LinkState::Streaming as i32,
                        last_sync: SyncKind::Truncate as i32,
                        lag_entries: 2,
                        lag_ms: 5,
                        full_syncs: 1,
                        partial_syncs: 4,
                        error: String::new(),
                    }),
                    replicas: vec![],
                    copies: 3,
                    min_in_sync_replicas: 1,
                },
                PartitionStatus {
                    partition: 1,
                    role: Role::Primary as i32,
                    replicas: vec![ReplicaProgress {
                        node_id: "n3".into(),
                        connected: true,
                        in_sync: false,
                        acked_offset: 8,
                        lag_entries: 1,
                        lag_ms: 12,
                        last_sync: SyncKind::Full as i32,
                        send_buffer_bytes: 64,
                    }],
                    ..Default::default()
                },
            ],
        };
        let j = node_status_json(&s);
        assert_eq!(j["node"]["resp_addr"], "h2:6379");
        assert_eq!(j["uptime_ms"], 1234);
        assert_eq!(j["partitions_total"], 2);
        assert_eq!(j["topology_version"], 7);
        let p0 = &j["partitions"][0];
        assert_eq!(p0["role"], "replica");
        assert_eq!(p0["last"], json!({"epoch": 3, "offset": 40}));
        assert_eq!(
            p0["epoch_history"],
            json!([{"epoch": 3, "start_offset": 1}])
        );
        assert_eq!(p0["primary"]["node_id"], "n1");
        assert_eq!(p0["link"]["state"], "streaming");
        assert_eq!(p0["link"]["last_sync"], "truncate");
        assert_eq!(p0["link"]["partial_syncs"], 4);
        assert_eq!(p0["min_in_sync_replicas"], 1);
        let p1 = &j["partitions"][1];
        assert_eq!(p1["role"], "primary");
        assert_eq!(p1["primary"], Value::Null);
        assert_eq!(p1["link"], Value::Null);
        assert_eq!(p1["last"], Value::Null);
        assert_eq!(
            p1["replicas"],
            json!([{
                "node_id": "n3", "connected": true, "in_sync": false, "acked_offset": 8,
                "lag_entries": 1, "lag_ms": 12, "last_sync": "full", "send_buffer_bytes": 64,
            }])
        );
        assert_eq!(role_name(99), "unknown_99");

        let text = status_text(&s);
        assert!(
            text.contains("node n2  grpc h2:7379  resp h2:6379"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("replica") && l.contains("n1") && l.contains("streaming")),
            "{text}"
        );
        assert!(
            text.contains(
                "    replica n3  connected yes  in_sync no  acked 8  lag 1 entries 12 ms  \
                 last sync full  send buffer 64 B"
            ),
            "{text}"
        );
    }

    #[test]
    fn topology_get_and_set_parse_and_set_needs_exactly_one_file() {
        assert!(matches!(
            parse(&["topology", "get"]),
            Ok(AdminCmd::Topology(TopologyCmd::Get))
        ));
        let Ok(AdminCmd::Topology(TopologyCmd::Set { file })) =
            parse(&["topology", "set", "map.json"])
        else {
            panic!("topology set did not parse");
        };
        assert_eq!(file, PathBuf::from("map.json"));
        assert!(matches!(
            parse(&["topology", "set", "-"]),
            Ok(AdminCmd::Topology(TopologyCmd::Set { file })) if file == Path::new("-")
        ));

        // --addr, --json and --timeout-ms are global: they may follow the subcommand.
        let cli = Cli::try_parse_from([
            "partita",
            "admin",
            "topology",
            "get",
            "--json",
            "--timeout-ms",
            "10",
            "--addr",
            "h:1",
        ])
        .unwrap();
        assert_eq!(cli.addr, "h:1");
        let Cmd::Admin(a) = cli.command else {
            panic!("not admin");
        };
        assert!(a.json);
        assert_eq!(a.timeout_ms, 10);

        let missing = parse(&["topology", "set"]).unwrap_err();
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(parse(&["topology"]).is_err());
        assert!(parse(&["topology", "put", "map.json"]).is_err());
        assert!(parse(&["topology", "get", "map.json"]).is_err());
        assert!(parse(&["topology", "set", "a.json", "b.json"]).is_err());
    }

    #[test]
    fn a_topology_push_prints_the_version_held() {
        assert_eq!(
            set_topology_json(&SetTopologyResponse { version: 7 }),
            json!({"version": 7})
        );
    }

    #[test]
    fn a_role_change_prints_each_partitions_role_epoch_and_last_position() {
        let r = RoleChangeResponse {
            partitions: vec![PartitionRoleState {
                partition: 3,
                role: Role::Fenced as i32,
                epoch: 5,
                last: Some(Position {
                    epoch: 4,
                    offset: 120,
                }),
            }],
        };
        assert_eq!(
            role_change_json(&r),
            json!({"partitions": [
                {"partition": 3, "role": "fenced", "epoch": 5, "last": {"epoch": 4, "offset": 120}}
            ]})
        );
        assert_eq!(
            role_change_text(&r),
            "PARTITION  ROLE    EPOCH   LAST\n        3  fenced      5  4:120"
        );
    }
}
