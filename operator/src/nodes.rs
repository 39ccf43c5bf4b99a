//! Talking to the nodes: the Admin gRPC calls the operator makes, each bounded by a short
//! timeout, and the translation of a node's status report into the planner's terms.
//!
//! Nothing here decides anything: the planner does ([`crate::planner::plan`]). A failed call is
//! an error the next reconcile recovers from, because it plans again from what is then true.

use crate::error::{Error, Result};
use crate::planner::plan::{CopyReport, ReplicaReport, Role};
use partita_node::proto::admin_client::AdminClient;
use partita_node::proto::{
    AssignRoleRequest, DropRequest, FenceRequest, FollowRequest, NodeAddress, NodeStatus,
    PartitionSelector, PrimaryRole, PromoteRequest, RoleChangeResponse, SetTopologyRequest,
    StatusRequest, Topology, assign_role_request,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long a status call may take before the node counts as not answering.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a role change may take; a promotion that waits for a catch-up gets more.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a switchover's promotion waits for the new primary to catch up. The target was in
/// sync when chosen, so it needs only the last few entries; kept short because the fenced
/// primary refuses writes meanwhile, and a reconcile waits on it.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// A node reached at its gRPC address.
pub struct NodeConn {
    name: String,
    channel: Channel,
    client: AdminClient<Channel>,
}

impl NodeConn {
    /// Connects to `addr` (host:port), bounded by `timeout`.
    pub async fn connect(name: &str, addr: &str, timeout: Duration) -> Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| node_error(name, format!("bad address {addr}: {e}")))?
            .connect_timeout(timeout)
            .timeout(CATCH_UP_TIMEOUT + CALL_TIMEOUT);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| node_error(name, format!("connecting to {addr} timed out")))?
            .map_err(|e| node_error(name, format!("connecting to {addr}: {e}")))?;
        Ok(Self::from_channel(name, channel))
    }

    /// A node reached over a channel connected earlier (see [`NodeConn::channel`]).
    pub fn from_channel(name: &str, channel: Channel) -> Self {
        Self {
            name: name.to_string(),
            client: AdminClient::new(channel.clone()),
            channel,
        }
    }

    /// The channel, to reuse for the next calls to the same node rather than connect again.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    async fn call<T, F>(&mut self, what: &str, timeout: Duration, f: F) -> Result<T>
    where
        F: AsyncFnOnce(&mut AdminClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    {
        match tokio::time::timeout(timeout, f(&mut self.client)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(node_error(
                &self.name,
                format!("{what}: {}", status.message()),
            )),
            Err(_) => Err(node_error(
                &self.name,
                format!("{what} timed out after {} ms", timeout.as_millis()),
            )),
        }
    }

    /// The node's status.
    pub async fn status(&mut self) -> Result<NodeStatus> {
        self.call("status", STATUS_TIMEOUT, async |c| {
            c.status(StatusRequest { partitions: None }).await
        })
        .await
    }

    /// Makes the node primary of `partition` at `epoch`: a promotion keeping its log when it
    /// hosts the partition, waiting until it holds `min_offset`; an assignment otherwise.
    pub async fn primary(
        &mut self,
        partition: u32,
        epoch: u64,
        role: PrimaryRole,
        hosted: bool,
        min_offset: u64,
    ) -> Result<()> {
        let partitions = Some(one(partition));
        if hosted {
            let req = PromoteRequest {
                partitions,
                epoch,
                primary: Some(role),
                min_offset,
                catch_up_timeout_ms: CATCH_UP_TIMEOUT.as_millis() as u32,
            };
            self.call("promote", CATCH_UP_TIMEOUT + CALL_TIMEOUT, async |c| {
                c.promote(req).await
            })
            .await?;
        } else {
            let req = AssignRoleRequest {
                partitions,
                epoch,
                role: Some(assign_role_request::Role::Primary(role)),
            };
            self.call("assign primary", CALL_TIMEOUT, async |c| {
                c.assign_role(req).await
            })
            .await?;
        }
        Ok(())
    }

    /// Follows `primary` for `partition` at `epoch`; creates the copy when the node has none.
    /// Returns the offset of the copy's last entry once it follows: from then on it takes no
    /// entry of an older epoch, so everything it ever acknowledged to an old primary is at or
    /// below that offset.
    pub async fn follow(
        &mut self,
        partition: u32,
        epoch: u64,
        primary: NodeAddress,
    ) -> Result<u64> {
        let req = FollowRequest {
            partitions: Some(one(partition)),
            epoch,
            primary: Some(primary.clone()),
        };
        let followed = self
            .call("follow", CALL_TIMEOUT, async |c| c.follow(req).await)
            .await;
        if let Ok(r) = followed {
            return Ok(last_offset(&r, partition));
        }
        // A node that does not host the partition yet gets it by assignment.
        let req = AssignRoleRequest {
            partitions: Some(one(partition)),
            epoch,
            role: Some(assign_role_request::Role::Replica(
                partita_node::proto::ReplicaRole {
                    primary: Some(primary),
                },
            )),
        };
        self.call("assign replica", CALL_TIMEOUT, async |c| {
            c.assign_role(req).await
        })
        .await
        .map(|r| last_offset(&r, partition))
    }

    /// Fences `partition` at `epoch` and returns the offset of its last entry.
    pub async fn fence(&mut self, partition: u32, epoch: u64) -> Result<u64> {
        let req = FenceRequest {
            partitions: Some(one(partition)),
            epoch,
        };
        let r = self
            .call("fence", CALL_TIMEOUT, async |c| c.fence(req).await)
            .await?;
        Ok(last_offset(&r, partition))
    }

    /// Drops the node's copy of `partition`; with `force`, even one it leads.
    pub async fn drop_copy(&mut self, partition: u32, epoch: u64, force: bool) -> Result<()> {
        let req = DropRequest {
            partitions: Some(one(partition)),
            epoch,
            force,
        };
        self.call("drop", CALL_TIMEOUT, async |c| c.drop(req).await)
            .await
            .map(|_| ())
    }

    /// Sends the partition map.
    pub async fn set_topology(&mut self, topology: Topology) -> Result<()> {
        let req = SetTopologyRequest {
            topology: Some(topology),
        };
        self.call("set topology", CALL_TIMEOUT, async |c| {
            c.set_topology(req).await
        })
        .await
        .map(|_| ())
    }
}

/// The offset of `partition`'s last entry in a role change's answer (0 when it has none).
fn last_offset(r: &RoleChangeResponse, partition: u32) -> u64 {
    r.partitions
        .iter()
        .filter(|s| s.partition == partition)
        .filter_map(|s| s.last.as_ref())
        .map(|l| l.offset)
        .max()
        .unwrap_or(0)
}

fn one(partition: u32) -> PartitionSelector {
    PartitionSelector {
        all: false,
        ids: vec![partition],
    }
}

fn node_error(node: &str, message: String) -> Error {
    Error::Node {
        node: node.to_string(),
        message,
    }
}

/// A node's report, in the planner's terms, by partition.
pub fn copies(status: &NodeStatus) -> BTreeMap<usize, CopyReport> {
    use partita_node::proto::{LinkState, Role as P};
    status
        .partitions
        .iter()
        .filter_map(|p| {
            let role = match P::try_from(p.role).ok()? {
                P::Primary => Role::Primary,
                P::Replica => Role::Replica,
                P::Fenced => Role::Fenced,
                P::Unspecified => return None,
            };
            let last = p.last.as_ref().map_or((0, 0), |l| (l.epoch, l.offset));
            Some((
                p.partition as usize,
                CopyReport {
                    role,
                    epoch: p.epoch,
                    last,
                    following: p
                        .primary
                        .as_ref()
                        .map(|a| a.node_id.clone())
                        .filter(|_| role == Role::Replica),
                    streaming: p
                        .link
                        .as_ref()
                        .is_some_and(|l| l.state == LinkState::Streaming as i32),
                    replicas: p
                        .replicas
                        .iter()
                        .map(|r| ReplicaReport {
                            node: r.node_id.clone(),
                            in_sync: r.connected && r.in_sync,
                            lag_entries: r.lag_entries,
                            lag_ms: r.lag_ms,
                        })
                        .collect(),
                },
            ))
        })
        .collect()
}
