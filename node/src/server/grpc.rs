//! The gRPC front end: the KV service and the Admin service. Writes go through the partition's
//! role check (only the primary at its epoch writes) and then wait for their write concern;
//! role changes go to [`Replication`], which applies the epoch rules and starts or stops the
//! replica links. Topology pushes answer UNIMPLEMENTED until cluster routing exists.
//!
//! Every failed call carries an [`ErrorInfo`] in its status details, so clients act on a code
//! and addresses rather than on message text.

use crate::engine::{Engine, Partition, now_ms};
use crate::proto::admin_server::{Admin, AdminServer};
use crate::proto::kv_server::{Kv, KvServer};
use crate::proto::*;
use crate::replication::Replication;
use crate::replication::role::{Change, PrimarySettings, Role, RoleState};
use crate::server::Limits;
use crate::storage::{SetCondition, SetExpiry, Ttl};
use crate::topology::Held;
use bytes::Bytes;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A gRPC connection holding one of the node's connection slots while it is open.
pub struct Limited {
    stream: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The listener's connections, at most `max` open at once. gRPC has no way to send an error
/// before the HTTP/2 handshake, so a connection past the limit is closed at once, with a
/// warning in the node's log, and the client sees the connection refused.
pub fn limited_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl tokio_stream::Stream<Item = std::io::Result<Limited>> {
    use tokio_stream::StreamExt;
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |accepted| {
        match accepted {
            Ok(stream) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    Some(Ok(Limited {
                        stream,
                        _slot: slot,
                    }))
                }
                Err(_) => {
                    tracing::warn!("refusing a gRPC connection: max-connections ({max}) are open");
                    None
                }
            },
            Err(e) => Some(Err(e)),
        }
    })
}

/// How writes are acknowledged when a request does not say.
#[derive(Debug, Clone, Copy)]
pub struct WriteDefaults {
    /// The write concern for requests that leave it unspecified.
    pub concern: WriteConcern,
    /// How long a write waits for its concern when the request gives no timeout.
    pub timeout: Duration,
}

impl Default for WriteDefaults {
    fn default() -> Self {
        Self {
            concern: WriteConcern::Quorum,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Both services over one engine.
#[derive(Clone)]
pub struct Service {
    engine: Arc<Engine>,
    limits: Limits,
    node: NodeAddress,
    repl: Arc<Replication>,
    writes: WriteDefaults,
    topology: Arc<Held>,
}

impl Service {
    /// Services for `engine`, known to clients as `node`, routing by `topology`.
    pub fn new(
        engine: Arc<Engine>,
        limits: Limits,
        node: NodeAddress,
        repl: Arc<Replication>,
        writes: WriteDefaults,
        topology: Arc<Held>,
    ) -> Self {
        Self {
            engine,
            limits,
            node,
            repl,
            writes,
            topology,
        }
    }

    /// The partitions a role change applies to; refused on a standalone node.
    fn role_targets(&self, sel: Option<&PartitionSelector>) -> Result<Vec<Arc<Partition>>, Status> {
        self.check_not_standalone()?;
        self.selected(sel)
    }

    /// Gives `partitions` `role` at `epoch`, all or nothing, and says where each now stands.
    fn change_roles(
        &self,
        partitions: &[Arc<Partition>],
        change: Change,
        epoch: u64,
        role: Role,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let out = self
            .repl
            .change(partitions, change, &RoleState { epoch, role })
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(RoleChangeResponse { partitions: out }))
    }

    /// A primary to follow must be reachable and must not be this node.
    fn check_primary_address(&self, primary: &NodeAddress) -> Result<(), Status> {
        if primary.grpc_addr.is_empty() {
            return Err(Status::invalid_argument("the primary's grpc_addr is empty"));
        }
        if primary.grpc_addr == self.node.grpc_addr
            || (!primary.node_id.is_empty() && primary.node_id == self.node.node_id)
        {
            return Err(Status::invalid_argument(format!(
                "{} ({}) is this node: a node cannot follow itself",
                primary.node_id, primary.grpc_addr
            )));
        }
        Ok(())
    }

    fn standalone(&self) -> bool {
        !self.engine.config().replicated
    }

    /// Refuses role changes on a standalone node: it leads every partition by definition.
    fn check_not_standalone(&self) -> Result<(), Status> {
        if self.standalone() {
            return Err(Status::failed_precondition(
                "this node runs --standalone: it is primary of every partition and takes no \
                 role changes; start it without --standalone to manage roles",
            ));
        }
        Ok(())
    }

    /// Refuses a request for partition `p` that the partition map sends elsewhere: `MOVED` with
    /// the primary's address, the key's slot and the map's version, so a client can go there and
    /// refresh its map. A read that allows any copy is served by a replica the map names. Without
    /// a map (a standalone node, or one not yet told), the roles alone decide.
    fn check_route(
        &self,
        p: &Partition,
        key: Option<&[u8]>,
        write: bool,
        read: Option<&ReadOptions>,
    ) -> Result<(), Status> {
        if self.standalone() {
            return Ok(());
        }
        let Some(map) = self.topology.get() else {
            return Ok(());
        };
        let slot = match key {
            Some(k) => crate::slot::key_slot(k),
            None => self.engine.slots().slot_range(p.id()).map_or(0, |(s, _)| s),
        };
        let any = read.is_some_and(|o| o.preference == ReadPreference::Any as i32);
        let route = crate::routing::route(
            Some(&map),
            &self.engine.slots(),
            &self.node.node_id,
            &[slot],
            write,
            any,
            |_| p.local(),
        );
        let info = ErrorInfo {
            partition: p.id(),
            epoch: map.route(p.id()).map_or(0, |r| r.epoch),
            slot: u32::from(slot),
            topology_version: map.version(),
            ..Default::default()
        };
        match route {
            crate::routing::Route::Here => Ok(()),
            crate::routing::Route::Moved { primary, .. } => Err(error(
                tonic::Code::FailedPrecondition,
                format!(
                    "partition {} (slot {slot}) is led by {} at {}",
                    p.id(),
                    primary.node_id,
                    primary.grpc_addr
                ),
                ErrorInfo {
                    code: ErrorCode::Moved as i32,
                    primary: Some(primary),
                    ..info
                },
            )),
            _ => Err(error(
                tonic::Code::Unavailable,
                format!("partition {} has no primary in the partition map", p.id()),
                ErrorInfo {
                    code: ErrorCode::NotPrimary as i32,
                    ..info
                },
            )),
        }
    }

    /// Checks that `p` may serve a read with `opts`: the primary always; another copy only
    /// with READ_PREFERENCE_ANY and within the lag bound.
    fn check_read(&self, p: &Partition, opts: Option<&ReadOptions>) -> Result<(), Status> {
        let role = p.role();
        if matches!(role.role, Role::Primary(_)) {
            return Ok(());
        }
        let any = opts.is_some_and(|o| o.preference == ReadPreference::Any as i32);
        if !any {
            let primary = match role.role {
                Role::Replica(a) => Some(a),
                _ => None,
            };
            return Err(status_of(&crate::Error::NotPrimary {
                partition: p.id(),
                epoch: role.epoch,
                primary,
            }));
        }
        if !matches!(role.role, Role::Replica(_)) {
            // A fenced or unassigned copy may hold writes a failover discarded.
            return Err(status_of(&crate::Error::NotPrimary {
                partition: p.id(),
                epoch: role.epoch,
                primary: None,
            }));
        }
        let bound = opts.map_or(0, |o| o.max_lag_ms);
        let lag = p.link().lag_ms;
        if bound > 0 && lag > bound {
            return Err(error(
                tonic::Code::FailedPrecondition,
                format!(
                    "partition {}: this copy lags {lag} ms, more than the {bound} ms allowed",
                    p.id()
                ),
                ErrorInfo {
                    code: ErrorCode::TooStale as i32,
                    partition: p.id(),
                    epoch: role.epoch,
                    ..Default::default()
                },
            ));
        }
        Ok(())
    }

    /// The KV service, with the request size limit applied.
    pub fn kv(&self) -> KvServer<Self> {
        KvServer::new(self.clone())
            .max_decoding_message_size(self.limits.max_request_bytes)
            .max_encoding_message_size(self.limits.max_request_bytes)
    }

    /// The Admin service.
    pub fn admin(&self) -> AdminServer<Self> {
        AdminServer::new(self.clone()).max_decoding_message_size(self.limits.max_request_bytes)
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("the key is empty"));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(limit(
                format!("key of {} bytes", key.len()),
                "max-key-bytes",
                self.limits.max_key_bytes,
            ));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.limits.max_value_bytes {
            return Err(limit(
                format!("value of {} bytes", value.len()),
                "max-value-bytes",
                self.limits.max_value_bytes,
            ));
        }
        Ok(())
    }

    fn read_info(&self, p: &Partition) -> ReadInfo {
        let last = p.last();
        let role = p.role();
        let (lag_entries, lag_ms) = match role.role {
            Role::Primary(_) => (0, 0),
            _ => {
                let link = p.link();
                (link.lag_entries, link.lag_ms)
            }
        };
        ReadInfo {
            node_id: self.node.node_id.clone(),
            partition: p.id(),
            role: role.role.proto() as i32,
            position: Some(last.proto()),
            lag_entries,
            lag_ms,
        }
    }

    /// Makes a write durable as the fsync policy asks, waits for its write concern, and
    /// describes it.
    async fn commit(
        &self,
        p: &Arc<Partition>,
        at: Option<crate::storage::Position>,
        opts: Option<&WriteOptions>,
    ) -> Result<Option<WriteAck>, Status> {
        let Some(at) = at else {
            return Ok(None);
        };
        p.flush().map_err(internal)?;
        p.wait_durable(at.offset).await.map_err(internal)?;
        let concern = match opts.map(|o| WriteConcern::try_from(o.concern)) {
            None | Some(Ok(WriteConcern::Unspecified)) => self.writes.concern,
            Some(Ok(c)) => c,
            Some(Err(_)) => return Err(Status::invalid_argument("unknown write concern")),
        };
        let timeout = match opts.map_or(0, |o| o.timeout_ms) {
            0 => self.writes.timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let (acked, required) = p
            .wait_acked(at, concern, timeout)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Some(WriteAck {
            partition: p.id(),
            epoch: at.epoch,
            offset: at.offset,
            acked_copies: acked,
            required_copies: required,
        }))
    }

    fn partition_status(&self, p: &Partition) -> PartitionStatus {
        let last = p.last();
        let role = p.role();
        let (_, first, snapshot) = p.log_info();
        let (keys, bytes, history) = p.read(|s| (s.len(), s.bytes(), s.epoch_history().to_vec()));
        let now = now_ms();
        let (commit_offset, replicas, copies, min_in_sync) = match &role.role {
            Role::Primary(settings) => {
                let t = p.tracker();
                let replicas = t
                    .replicas
                    .iter()
                    .map(|r| ReplicaProgress {
                        node_id: r.node_id.clone(),
                        connected: r.session.is_some(),
                        in_sync: t.in_sync(r, now),
                        acked_offset: r.acked,
                        lag_entries: last.offset.saturating_sub(r.acked),
                        lag_ms: t.lag_ms(r.acked, now),
                        last_sync: r.last_sync as i32,
                        send_buffer_bytes: r.send_buffer_bytes,
                    })
                    .collect();
                (
                    t.commit_offset().min(last.offset),
                    replicas,
                    settings.copies,
                    settings.min_in_sync,
                )
            }
            _ => (p.link().commit_offset, Vec::new(), 0, 0),
        };
        let (primary, link) = match &role.role {
            Role::Replica(a) => (Some(a.clone()), Some(p.link().proto())),
            _ => (None, None),
        };
        PartitionStatus {
            partition: p.id(),
            role: role.role.proto() as i32,
            epoch: role.epoch,
            last: Some(last.proto()),
            commit_offset,
            log_start_offset: first,
            snapshot_offset: snapshot,
            keys: keys as u64,
            bytes,
            epoch_history: crate::storage::epoch_history_proto(&history),
            primary,
            link,
            replicas,
            copies,
            min_in_sync_replicas: min_in_sync,
        }
    }

    fn selected(&self, sel: Option<&PartitionSelector>) -> Result<Vec<Arc<Partition>>, Status> {
        let all = self.engine.partitions();
        match sel {
            None => Ok(all.to_vec()),
            Some(s) if s.all && s.ids.is_empty() => Ok(all.to_vec()),
            Some(s) if s.all => Err(Status::invalid_argument(
                "a partition selector has either all or ids, not both",
            )),
            Some(s) if s.ids.is_empty() => Ok(all.to_vec()),
            Some(s) => s
                .ids
                .iter()
                .map(|&id| {
                    all.get(id as usize).cloned().ok_or_else(|| {
                        error(
                            tonic::Code::NotFound,
                            format!("partition {id} does not exist (the node has {})", all.len()),
                            ErrorInfo {
                                code: ErrorCode::UnknownPartition as i32,
                                partition: id,
                                ..Default::default()
                            },
                        )
                    })
                })
                .collect(),
        }
    }
}

/// A status with an ErrorInfo in its details.
pub fn error(code: tonic::Code, message: String, info: ErrorInfo) -> Status {
    Status::with_details(code, message, Bytes::from(info.encode_to_vec()))
}

fn limit(what: String, setting: &str, value: usize) -> Status {
    error(
        tonic::Code::InvalidArgument,
        format!("{what} exceeds {setting} ({value})"),
        ErrorInfo {
            code: ErrorCode::LimitExceeded as i32,
            limit: format!("{setting}={value}"),
            ..Default::default()
        },
    )
}

fn internal(e: crate::Error) -> Status {
    status_of(&e)
}

/// The status for a node error, with the ErrorInfo a client acts on.
pub fn status_of(e: &crate::Error) -> Status {
    use crate::Error as E;
    let info = |code: ErrorCode, partition: u32, epoch: u64| ErrorInfo {
        code: code as i32,
        partition,
        epoch,
        ..Default::default()
    };
    let (code, info) = match e {
        E::NotPrimary {
            partition,
            epoch,
            primary,
        } => (
            tonic::Code::FailedPrecondition,
            ErrorInfo {
                primary: primary.clone(),
                ..info(ErrorCode::NotPrimary, *partition, *epoch)
            },
        ),
        E::StaleEpoch {
            partition, held, ..
        } => (
            tonic::Code::FailedPrecondition,
            info(ErrorCode::StaleEpoch, *partition, *held),
        ),
        E::Fenced { partition, epoch } => (
            tonic::Code::FailedPrecondition,
            info(ErrorCode::Fenced, *partition, *epoch),
        ),
        E::NotEnoughInSync { partition, min, .. } => (
            tonic::Code::Unavailable,
            ErrorInfo {
                required_copies: *min + 1,
                ..info(ErrorCode::NotEnoughInSync, *partition, 0)
            },
        ),
        E::WriteConcernTimeout {
            partition,
            acked,
            required,
            ..
        } => (
            tonic::Code::DeadlineExceeded,
            ErrorInfo {
                acked_copies: *acked,
                required_copies: *required,
                ..info(ErrorCode::WriteConcernTimeout, *partition, 0)
            },
        ),
        // Not acknowledged and not known to be lost: a client must not retry it blindly, just
        // as after a write concern timeout.
        E::Deposed {
            partition,
            epoch,
            acked,
            required,
            ..
        } => (
            tonic::Code::Aborted,
            ErrorInfo {
                acked_copies: *acked,
                required_copies: *required,
                ..info(ErrorCode::WriteConcernTimeout, *partition, *epoch)
            },
        ),
        E::NotCaughtUp { partition, .. } => (
            tonic::Code::DeadlineExceeded,
            info(ErrorCode::NotCaughtUp, *partition, 0),
        ),
        E::BadRole { .. } => (tonic::Code::FailedPrecondition, ErrorInfo::default()),
        E::BadTopology { held, .. } => (
            tonic::Code::FailedPrecondition,
            ErrorInfo {
                code: ErrorCode::BadTopology as i32,
                topology_version: *held,
                ..Default::default()
            },
        ),
        E::LimitExceeded { limit, setting, .. } => (
            tonic::Code::InvalidArgument,
            ErrorInfo {
                code: ErrorCode::LimitExceeded as i32,
                limit: format!("{setting}={limit}"),
                ..Default::default()
            },
        ),
        E::Trimmed { partition, .. }
        | E::Replication { partition, .. }
        | E::OffsetGap { partition, .. }
        | E::CorruptEntry { partition, .. } => (
            tonic::Code::Aborted,
            info(ErrorCode::ReplicationProtocol, *partition, 0),
        ),
        _ => return Status::internal(e.to_string()),
    };
    error(code, e.to_string(), info)
}

/// Partition ids a selector names, checked against the node's partitions.
fn role_settings(p: &PrimaryRole) -> Role {
    Role::Primary(PrimarySettings {
        replicas: p.replicas.clone(),
        copies: if p.copies == 0 {
            1 + p.replicas.len() as u32
        } else {
            p.copies
        },
        min_in_sync: p.min_in_sync_replicas,
    })
}

#[tonic::async_trait]
impl Kv for Service {
    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        self.check_key(&req.key)?;
        let p = self.engine.partition_of(&req.key);
        self.check_route(p, Some(&req.key), false, req.read.as_ref())?;
        self.check_read(p, req.read.as_ref())?;
        let now = now_ms();
        let (item, ttl) = p.read(|s| (s.get(&req.key, now).cloned(), s.ttl(&req.key, now)));
        Ok(Response::new(GetResponse {
            found: item.is_some(),
            value: item.map(|i| i.value.to_vec()).unwrap_or_default(),
            ttl_ms: match ttl {
                Ttl::Millis(ms) => ms,
                _ => -1,
            },
            info: Some(self.read_info(p)),
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        self.check_key(&req.key)?;
        self.check_value(&req.value)?;
        if req.keep_ttl && req.ttl_ms > 0 {
            return Err(Status::invalid_argument(
                "keep_ttl and ttl_ms exclude each other",
            ));
        }
        let condition = match PutCondition::try_from(req.condition) {
            Ok(PutCondition::Always) => SetCondition::Always,
            Ok(PutCondition::IfAbsent) => SetCondition::IfAbsent,
            Ok(PutCondition::IfPresent) => SetCondition::IfPresent,
            Err(_) => return Err(Status::invalid_argument("unknown put condition")),
        };
        let now = now_ms();
        let expiry = if req.keep_ttl {
            SetExpiry::Keep
        } else if req.ttl_ms > 0 {
            let at = i64::try_from(req.ttl_ms)
                .ok()
                .and_then(|t| t.checked_add(now))
                .ok_or_else(|| Status::invalid_argument("ttl_ms is too large"))?;
            SetExpiry::At(at)
        } else {
            SetExpiry::Clear
        };
        let p = Arc::clone(self.engine.partition_of(&req.key));
        self.check_route(&p, Some(&req.key), true, None)?;
        let key = Bytes::from(req.key);
        let value = Bytes::from(req.value);
        let (applied, offset) = p
            .write(now, |s| {
                let o = s.decide_set(key, value, condition, expiry, false, now);
                (o.applied, o.command)
            })
            .map_err(internal)?;
        let ack = self.commit(&p, offset, req.write.as_ref()).await?;
        Ok(Response::new(PutResponse { applied, ack }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = req.into_inner();
        self.check_key(&req.key)?;
        let p = Arc::clone(self.engine.partition_of(&req.key));
        self.check_route(&p, Some(&req.key), true, None)?;
        let now = now_ms();
        let (existed, offset) = p
            .write(now, |s| s.decide_delete(&req.key, now))
            .map_err(internal)?;
        let ack = self.commit(&p, offset, req.write.as_ref()).await?;
        Ok(Response::new(DeleteResponse { existed, ack }))
    }

    async fn scan(&self, req: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        let req = req.into_inner();
        let p = self.selected(Some(&PartitionSelector {
            all: false,
            ids: vec![req.partition],
        }))?;
        let p = p
            .first()
            .ok_or_else(|| Status::not_found("no such partition"))?;
        self.check_route(p, None, false, req.read.as_ref())?;
        self.check_read(p, req.read.as_ref())?;
        let limit = match req.limit {
            0 => 100,
            n if n as usize > self.limits.max_keys_per_call => {
                return Err(limit(
                    format!("a scan page of {n} keys"),
                    "max-keys-per-call",
                    self.limits.max_keys_per_call,
                ));
            }
            n => n as usize,
        };
        let now = now_ms();
        let budget = self.limits.max_reply_bytes;
        let (entries, next) = p.read(|s| {
            s.scan_page(
                &req.start_key,
                &req.end_key,
                limit,
                budget,
                !req.keys_only,
                now,
                |k| req.r#match.is_empty() || crate::glob::key_matches(&req.r#match, k),
            )
        });
        Ok(Response::new(ScanResponse {
            entries,
            next_start_key: next.map(|k| k.to_vec()).unwrap_or_default(),
            info: Some(self.read_info(p)),
        }))
    }

    async fn batch(&self, req: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        let req = req.into_inner();
        if req.ops.len() > self.limits.max_keys_per_call {
            return Err(limit(
                format!("a batch of {} operations", req.ops.len()),
                "max-keys-per-call",
                self.limits.max_keys_per_call,
            ));
        }
        let key_of = |op: &BatchOp| -> Option<Vec<u8>> {
            match &op.op {
                Some(batch_op::Op::Get(g)) => Some(g.key.clone()),
                Some(batch_op::Op::Put(p)) => Some(p.key.clone()),
                Some(batch_op::Op::Delete(d)) => Some(d.key.clone()),
                None => None,
            }
        };
        let mut partition = None;
        for op in &req.ops {
            let key = key_of(op).ok_or_else(|| Status::invalid_argument("an empty batch op"))?;
            self.check_key(&key)?;
            let id = self.engine.slots().partition_of_key(&key);
            if partition.is_some_and(|p| p != id) {
                return Err(error(
                    tonic::Code::InvalidArgument,
                    "the keys of one batch must map to one partition; use hash tags".into(),
                    ErrorInfo {
                        code: ErrorCode::CrossPartition as i32,
                        ..Default::default()
                    },
                ));
            }
            partition = Some(id);
            if let Some(batch_op::Op::Put(p)) = &op.op {
                self.check_value(&p.value)?;
            }
        }
        let Some(id) = partition else {
            return Ok(Response::new(BatchResponse::default()));
        };
        let p = self.selected(Some(&PartitionSelector {
            all: false,
            ids: vec![id],
        }))?;
        let p = p
            .first()
            .cloned()
            .ok_or_else(|| Status::not_found("no partition"))?;
        let first_key = req.ops.first().and_then(key_of);
        self.check_route(&p, first_key.as_deref(), true, None)?;
        let now = now_ms();
        let ops = req.ops;
        let write = req.write;
        let budget = self.limits.max_reply_bytes;
        let (results, offset) = p
            .write(now, |s| match s.decide_batch(&ops, budget, now) {
                Ok((results, command)) => (Ok(results), command),
                Err(bytes) => (Err(bytes), None),
            })
            .map_err(internal)?;
        let results = results.map_err(|bytes| {
            limit(
                format!("a batch reply of more than {bytes} bytes"),
                "max-reply-bytes",
                budget,
            )
        })?;
        let ack = self.commit(&p, offset, write.as_ref()).await?;
        Ok(Response::new(BatchResponse { results, ack }))
    }

    async fn get_topology(
        &self,
        _req: Request<GetTopologyRequest>,
    ) -> Result<Response<Topology>, Status> {
        if let Some(map) = self.topology.get() {
            return Ok(Response::new(map.topology().clone()));
        }
        // No map pushed: a standalone node leads every partition; another node names itself
        // for the partitions it leads, and no one for the rest.
        let slots = self.engine.slots();
        let routes = (0..slots.partitions())
            .filter_map(|p| {
                let (start, end) = slots.slot_range(p)?;
                Some(PartitionRoute {
                    partition: p,
                    slot_start: u32::from(start),
                    slot_end: u32::from(end),
                    // Without a pushed map, a node vouches only for what it leads.
                    primary: if self.standalone()
                        || self
                            .engine
                            .partitions()
                            .get(p as usize)
                            .is_some_and(|x| x.is_primary())
                    {
                        self.node.node_id.clone()
                    } else {
                        String::new()
                    },
                    replicas: Vec::new(),
                    epoch: self
                        .engine
                        .partitions()
                        .get(p as usize)
                        .map_or(0, |x| x.epoch()),
                })
            })
            .collect();
        Ok(Response::new(Topology {
            version: 0,
            partitions: slots.partitions(),
            nodes: vec![self.node.clone()],
            routes,
        }))
    }
}

#[tonic::async_trait]
impl Admin for Service {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<NodeStatus>, Status> {
        let req = req.into_inner();
        let partitions = self.selected(req.partitions.as_ref())?;
        Ok(Response::new(NodeStatus {
            node: Some(self.node.clone()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: self.engine.is_ready(),
            uptime_ms: self.engine.uptime().as_millis() as u64,
            standalone: self.standalone(),
            partitions_total: self.engine.slots().partitions(),
            topology_version: self.topology.version(),
            fsync: self.engine.config().fsync.to_string(),
            partitions: partitions
                .iter()
                .map(|p| self.partition_status(p))
                .collect(),
        }))
    }

    async fn assign_role(
        &self,
        req: Request<AssignRoleRequest>,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.role_targets(req.partitions.as_ref())?;
        let role = match req.role {
            Some(assign_role_request::Role::Primary(p)) => role_settings(&p),
            Some(assign_role_request::Role::Replica(r)) => {
                let primary = r
                    .primary
                    .ok_or_else(|| Status::invalid_argument("a replica role needs a primary"))?;
                self.check_primary_address(&primary)?;
                Role::Replica(primary)
            }
            Some(assign_role_request::Role::Fenced(_)) => Role::Fenced,
            None => return Err(Status::invalid_argument("no role given")),
        };
        self.change_roles(&partitions, Change::Assign, req.epoch, role)
    }

    async fn promote(
        &self,
        req: Request<PromoteRequest>,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.role_targets(req.partitions.as_ref())?;
        let next = RoleState {
            epoch: req.epoch,
            role: role_settings(&req.primary.unwrap_or_default()),
        };
        let timeout = Duration::from_millis(u64::from(req.catch_up_timeout_ms.max(1)));
        let out = self
            .repl
            .promote(&partitions, &next, req.min_offset, timeout)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(RoleChangeResponse { partitions: out }))
    }

    async fn follow(
        &self,
        req: Request<FollowRequest>,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.role_targets(req.partitions.as_ref())?;
        let primary = req
            .primary
            .ok_or_else(|| Status::invalid_argument("follow needs a primary"))?;
        self.check_primary_address(&primary)?;
        self.change_roles(
            &partitions,
            Change::Follow,
            req.epoch,
            Role::Replica(primary),
        )
    }

    async fn fence(
        &self,
        req: Request<FenceRequest>,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.role_targets(req.partitions.as_ref())?;
        self.change_roles(&partitions, Change::Fence, req.epoch, Role::Fenced)
    }

    async fn drop(
        &self,
        req: Request<DropRequest>,
    ) -> Result<Response<RoleChangeResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.role_targets(req.partitions.as_ref())?;
        if !req.force
            && let Some(p) = partitions.iter().find(|p| p.is_primary())
        {
            return Err(Status::failed_precondition(format!(
                "this node is primary of partition {}; move the primary first, or pass force",
                p.id()
            )));
        }
        let response = self.change_roles(&partitions, Change::Drop, req.epoch, Role::Unassigned)?;
        for p in &partitions {
            let p = Arc::clone(p);
            tokio::task::spawn_blocking(move || {
                p.install_snapshot(None, crate::storage::SnapshotData::default())
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_of(&e))?;
        }
        Ok(response)
    }

    async fn digest(
        &self,
        req: Request<DigestRequest>,
    ) -> Result<Response<DigestResponse>, Status> {
        let req = req.into_inner();
        let partitions = self.selected(req.partitions.as_ref())?;
        let mut acc = [0u8; 20];
        let mut total = 0;
        let mut out = Vec::new();
        for p in &partitions {
            let (d, keys, last) = p.read(|s| (s.digest(), s.len() as u64, s.last()));
            crate::storage::xor_digest(&mut acc, &d);
            total += keys;
            out.push(PartitionDigest {
                partition: p.id(),
                digest: crate::storage::digest_hex(&d),
                keys,
                at: Some(last.proto()),
            });
        }
        Ok(Response::new(DigestResponse {
            digest: crate::storage::digest_hex(&acc),
            keys: total,
            partitions: out,
        }))
    }

    async fn set_topology(
        &self,
        req: Request<SetTopologyRequest>,
    ) -> Result<Response<SetTopologyResponse>, Status> {
        self.check_not_standalone()?;
        let topology = req
            .into_inner()
            .topology
            .ok_or_else(|| Status::invalid_argument("topology is required"))?;
        let held = Arc::clone(&self.topology);
        // The map is fsynced before it is taken: off the async workers.
        let version = tokio::task::spawn_blocking(move || held.push(&topology))
            .await
            .map_err(|e| Status::internal(format!("the topology push failed: {e}")))?
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(SetTopologyResponse { version }))
    }
}
